//! Volume geometry: block size, block count and the size they make.

use std::fmt;

use crate::{BlockId, Error, Result};

/// The block size of a new volume when none is given (`--block-size`), for
/// every frontend: 256 KiB.
///
/// Chosen for cost. Every block written is one PUT, and S3 bills PUTs by the
/// thousand ($0.005 per 1,000 at list price; some providers charge $0.01):
///
/// | block size | PUTs to fill 30 GiB | cost at $0.005 / 1,000 | at $0.01 / 1,000 |
/// |---|---|---|---|
/// | 4 KiB   | 7,864,320 | $39.32 | $78.64 |
/// | 64 KiB  | 491,520   | $2.46  | $4.92  |
/// | 256 KiB | 122,880   | $0.61  | $1.23  |
/// | 1 MiB   | 30,720    | $0.15  | $0.31  |
///
/// 4 KiB blocks are ruinous: users moving from s3backer saw a 16 GB upload
/// cost over $100 in requests. 256 KiB writes 100 GB for about $2 of PUTs.
/// Going bigger saves little more money but costs memory and bandwidth: the
/// cache holds whole blocks (a 32 MiB cache holds 128 blocks of 256 KiB but
/// only 32 of 1 MiB, which matters on a 128 MB machine), and a 4 KiB write
/// by ext4 re-uploads the whole block it falls in.
pub const DEFAULT_BLOCK_SIZE: u32 = 256 * 1024;

/// Smallest block size s3block accepts.
pub const MIN_BLOCK_SIZE: u32 = 512;
/// Largest block size s3block accepts.
pub const MAX_BLOCK_SIZE: u32 = 64 << 20;
/// Most blocks a volume may have: block numbers are eight hex digits in keys.
pub const MAX_BLOCK_COUNT: u64 = 1 << 32;

/// The shape of a volume: `block_count` blocks of `block_size` bytes.
///
/// Always valid: the block size is a power of two between 512 B and 64 MiB,
/// and there are between 1 and 2^32 blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Geometry {
    block_size: u32,
    block_count: u64,
}

impl Geometry {
    /// A geometry from a total size in bytes, which must be a positive multiple
    /// of the block size.
    pub fn new(size: u64, block_size: u64) -> Result<Self> {
        let block_size = check_block_size(block_size)?;
        if size == 0 {
            return Err(Error::InvalidGeometry("the size must not be zero".into()));
        }
        if !size.is_multiple_of(u64::from(block_size)) {
            return Err(Error::InvalidGeometry(format!(
                "the size {} is not a multiple of the block size {}",
                format_size(size),
                format_size(block_size.into())
            )));
        }
        Self::with_blocks(size / u64::from(block_size), block_size.into())
    }

    /// A geometry from a block count and block size.
    pub fn with_blocks(block_count: u64, block_size: u64) -> Result<Self> {
        let block_size = check_block_size(block_size)?;
        if block_count == 0 {
            return Err(Error::InvalidGeometry("the volume must have at least one block".into()));
        }
        if block_count > MAX_BLOCK_COUNT {
            return Err(Error::InvalidGeometry(format!(
                "{block_count} blocks of {} is more than the {MAX_BLOCK_COUNT} blocks a volume can have; use a larger block size",
                format_size(block_size.into())
            )));
        }
        Ok(Geometry { block_size, block_count })
    }

    /// Bytes per block.
    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// Bytes per block, as `usize`.
    pub fn block_len(&self) -> usize {
        self.block_size as usize
    }

    /// Number of blocks.
    pub fn block_count(&self) -> u64 {
        self.block_count
    }

    /// Total size in bytes.
    pub fn size(&self) -> u64 {
        self.block_count * u64::from(self.block_size)
    }

    /// Checks that `block` is inside the volume.
    pub fn check_block(&self, block: BlockId) -> Result<()> {
        if u64::from(block.0) < self.block_count {
            Ok(())
        } else {
            Err(Error::BlockOutOfRange { block: block.0.into(), count: self.block_count })
        }
    }

    /// Checks that the byte range `offset..offset+len` is inside the volume.
    pub fn check_range(&self, offset: u64, len: u64) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size() => Ok(()),
            _ => Err(Error::RangeOutOfBounds { offset, len, what: "the volume", size: self.size() }),
        }
    }

    /// Checks that `offset..offset+len` lies inside one block.
    pub fn check_in_block(&self, offset: u32, len: usize) -> Result<()> {
        let end = u64::from(offset) + len as u64;
        if end <= u64::from(self.block_size) {
            Ok(())
        } else {
            Err(Error::RangeOutOfBounds {
                offset: offset.into(),
                len: len as u64,
                what: "the block",
                size: self.block_size.into(),
            })
        }
    }

    /// All blocks of the volume.
    pub fn blocks(&self) -> impl Iterator<Item = BlockId> + use<> {
        (0..self.block_count).map(|b| BlockId(b as u32))
    }
}

/// A geometry that can grow while the volume is in use: the block size is
/// fixed, the block count only ever rises. Every layer of a mounted volume
/// that checks block numbers reads it, so a grow reaches them all at once.
#[derive(Debug)]
pub struct GeometryCell {
    block_size: u32,
    block_count: std::sync::atomic::AtomicU64,
}

impl GeometryCell {
    /// A cell holding `geometry`.
    pub fn new(geometry: Geometry) -> Self {
        GeometryCell {
            block_size: geometry.block_size,
            block_count: std::sync::atomic::AtomicU64::new(geometry.block_count),
        }
    }

    /// The geometry now.
    pub fn get(&self) -> Geometry {
        Geometry {
            block_size: self.block_size,
            block_count: self.block_count.load(std::sync::atomic::Ordering::Acquire),
        }
    }

    /// Grows to `geometry`. Refused, naming both values, when its block
    /// size differs or it has fewer blocks than now.
    pub fn grow(&self, geometry: Geometry) -> Result<()> {
        if geometry.block_size != self.block_size {
            return Err(Error::Mismatch {
                what: "block size",
                stored: format_size(self.block_size.into()),
                requested: format_size(geometry.block_size.into()),
            });
        }
        let now = self.block_count.fetch_max(geometry.block_count, std::sync::atomic::Ordering::AcqRel);
        if geometry.block_count < now {
            return Err(Error::InvalidGeometry(format!(
                "{} is smaller than the volume's {}: a mounted volume only grows",
                format_size(geometry.size()),
                format_size(now * u64::from(self.block_size))
            )));
        }
        Ok(())
    }

    /// Goes back to `geometry` after a grow that could not be completed.
    /// Only for the one who grew it, before any block past `geometry`'s end
    /// was accepted.
    pub fn undo_grow(&self, geometry: Geometry) {
        if geometry.block_size == self.block_size {
            self.block_count.store(geometry.block_count, std::sync::atomic::Ordering::Release);
        }
    }
}

impl fmt::Display for Geometry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} in {} blocks of {}",
            format_size(self.size()),
            self.block_count,
            format_size(self.block_size.into())
        )
    }
}

fn check_block_size(block_size: u64) -> Result<u32> {
    if !block_size.is_power_of_two() {
        return Err(Error::InvalidGeometry(format!("the block size {block_size} is not a power of two")));
    }
    if block_size < u64::from(MIN_BLOCK_SIZE) || block_size > u64::from(MAX_BLOCK_SIZE) {
        return Err(Error::InvalidGeometry(format!(
            "the block size {} is outside 512 to 64M",
            format_size(block_size)
        )));
    }
    Ok(block_size as u32)
}

const SUFFIXES: [char; 6] = ['K', 'M', 'G', 'T', 'P', 'E'];

/// Parses a size such as `4096`, `256K`, `30G` or `1.5T` (binary units, as
/// s3backer reads them; a trailing `B` or `iB` is accepted).
///
/// ```
/// assert_eq!(s3block_core::parse_size("30G").unwrap(), 30 << 30);
/// assert_eq!(s3block_core::parse_size("256k").unwrap(), 256 << 10);
/// assert!(s3block_core::parse_size("12Q").is_err());
/// ```
pub fn parse_size(input: &str) -> Result<u64> {
    let err = |reason: &str| Error::InvalidSize { input: input.to_owned(), reason: reason.to_owned() };
    let text = input.trim();
    let text = text
        .strip_suffix("iB")
        .or_else(|| text.strip_suffix("ib"))
        .or_else(|| text.strip_suffix(['B', 'b']).filter(|t| t.ends_with(|c: char| c.is_ascii_alphabetic())))
        .unwrap_or(text);
    let (number, shift) = match text.chars().last() {
        None => return Err(err("it is empty")),
        Some(c) if c.is_ascii_alphabetic() => {
            let upper = c.to_ascii_uppercase();
            let Some(pos) = SUFFIXES.iter().position(|&s| s == upper) else {
                return Err(err("the unit must be one of K, M, G, T, P, E"));
            };
            (&text[..text.len() - 1], 10 * (pos as u32 + 1))
        }
        Some(_) => (text, 0),
    };
    let number = number.trim();
    if number.is_empty() {
        return Err(err("there is no number"));
    }
    let too_big = || err("it does not fit in 64 bits");
    if let Some((whole, frac)) = number.split_once('.') {
        let whole: u64 =
            if whole.is_empty() { 0 } else { whole.parse().map_err(|_| err("it is not a number"))? };
        if frac.is_empty() || !frac.bytes().all(|b| b.is_ascii_digit()) || frac.len() > 18 {
            return Err(err("it is not a number"));
        }
        let denom = 10u128.pow(frac.len() as u32);
        let frac: u128 = frac.parse().map_err(|_| err("it is not a number"))?;
        // Under 2^124 before the unit; the unit's shift can carry it past
        // 2^128, where `<<` would drop the high bits.
        let scaled = (u128::from(whole) * denom + frac).checked_mul(1u128 << shift).ok_or_else(too_big)?;
        if !scaled.is_multiple_of(denom) {
            return Err(err("it is not a whole number of bytes"));
        }
        u64::try_from(scaled / denom).map_err(|_| too_big())
    } else {
        let n: u64 = number.parse().map_err(|_| err("it is not a number"))?;
        n.checked_mul(1u64 << shift).ok_or_else(too_big)
    }
}

/// A count with thousands separators, as people read it: `7864320` as
/// `7,864,320`.
pub fn format_count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Formats a byte count the way [`parse_size`] reads it: exact when possible
/// (`256K`, `30G`), otherwise in bytes.
pub fn format_size(bytes: u64) -> String {
    if bytes == 0 {
        return "0".into();
    }
    for (i, suffix) in SUFFIXES.iter().enumerate().rev() {
        let unit = 1u64 << (10 * (i as u32 + 1));
        if bytes.is_multiple_of(unit) {
            return format!("{}{suffix}", bytes / unit);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_like_s3backer() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("4K").unwrap(), 4096);
        assert_eq!(parse_size("30G").unwrap(), 30 * 1024 * 1024 * 1024);
        assert_eq!(parse_size("1t").unwrap(), 1 << 40);
        assert_eq!(parse_size("2P").unwrap(), 2 << 50);
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("64MB").unwrap(), 64 << 20);
        assert_eq!(parse_size("1.5K").unwrap(), 1536);
        assert!(parse_size("").is_err());
        assert!(parse_size("K").is_err());
        assert!(parse_size("1.1").is_err());
        assert!(parse_size("-4K").is_err());
        assert!(parse_size("16E").is_err());
        assert!(parse_size("4X").unwrap_err().to_string().contains("4X"));
        // 295147905179352825856 << 60 is 2^128, which a plain shift made 0.
        assert!(parse_size("2951479051793528258.56E").unwrap_err().to_string().contains("64 bits"));
    }

    #[test]
    fn format_round_trips() {
        for s in ["512", "4K", "256K", "1M", "30G", "3T", "1000"] {
            assert_eq!(format_size(parse_size(s).unwrap()), s);
        }
        assert_eq!(format_size(1536), "1536");
    }

    #[test]
    fn geometry_is_validated() {
        let g = Geometry::new(30 << 30, 4096).unwrap();
        assert_eq!(g.block_count(), 7_864_320);
        assert_eq!(g.size(), 30 << 30);
        assert_eq!(g.to_string(), "30G in 7864320 blocks of 4K");
        assert!(Geometry::new(1 << 20, 1000).unwrap_err().to_string().contains("not a power of two"));
        assert!(Geometry::new(1 << 20, 256).is_err());
        assert!(Geometry::new(1 << 30, 128 << 20).is_err());
        assert!(Geometry::new(0, 4096).unwrap_err().to_string().contains("zero"));
        assert!(Geometry::new(4097, 4096).unwrap_err().to_string().contains("multiple"));
        assert!(Geometry::with_blocks(MAX_BLOCK_COUNT, 512).is_ok());
        assert!(
            Geometry::with_blocks(MAX_BLOCK_COUNT + 1, 512)
                .unwrap_err()
                .to_string()
                .contains("larger block size")
        );
    }

    #[test]
    fn ranges_are_checked() {
        let g = Geometry::new(1 << 20, 4096).unwrap();
        assert!(g.check_range(0, 1 << 20).is_ok());
        assert!(g.check_range(1, 1 << 20).is_err());
        assert!(g.check_range(u64::MAX, 2).is_err());
        assert!(g.check_block(BlockId(255)).is_ok());
        assert!(g.check_block(BlockId(256)).is_err());
        assert!(g.check_in_block(4095, 1).is_ok());
        assert!(g.check_in_block(4095, 2).is_err());
    }

    #[test]
    fn a_geometry_cell_only_grows_and_keeps_its_block_size() {
        let g = |size| Geometry::new(size, 4096).unwrap();
        let cell = GeometryCell::new(g(1 << 20));
        cell.grow(g(2 << 20)).unwrap();
        assert_eq!(cell.get(), g(2 << 20));
        let e = cell.grow(g(1 << 20)).unwrap_err().to_string();
        assert!(e.contains("1M is smaller than the volume's 2M"), "{e}");
        let e = cell.grow(Geometry::new(4 << 20, 8192).unwrap()).unwrap_err().to_string();
        assert!(e.contains("4K") && e.contains("8K"), "{e}");
        assert_eq!(cell.get(), g(2 << 20), "refusals change nothing");
        cell.undo_grow(g(1 << 20));
        assert_eq!(cell.get(), g(1 << 20));
    }
}
