//! The bytes of the disk tier's files: log entries, the state file, the
//! index checkpoint and the trust file. Every decoder checks lengths and
//! checksums and returns an error naming what is wrong; none panics on bad
//! input.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// First bytes of every log entry ("S3BC", little endian).
pub(crate) const ENTRY_MAGIC: u32 = u32::from_le_bytes(*b"S3BC");
/// Version of the entry and file formats; a directory of another version is
/// discarded (clean) or refused (dirty) at open.
pub(crate) const FORMAT_VERSION: u16 = 1;
/// Bytes of an entry header.
pub(crate) const HEADER_LEN: usize = 48;

/// Entry flag: the entry's data is known to be stored below (fetched from
/// the store, or copied forward after its upload).
pub(crate) const FLAG_CLEAN: u8 = 1;

/// What a log entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A whole block of data.
    Data = 1,
    /// A block of zeros, without data.
    Zero = 2,
    /// The entry `(block, extra)` (block number, sequence number) is stored below.
    Uploaded = 3,
    /// Blocks `block..extra` were discarded.
    Discard = 4,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            1 => Kind::Data,
            2 => Kind::Zero,
            3 => Kind::Uploaded,
            4 => Kind::Discard,
            _ => return None,
        })
    }
}

/// A decoded entry header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) kind: Kind,
    pub(crate) flags: u8,
    pub(crate) block: u64,
    pub(crate) seq: u64,
    pub(crate) epoch: u64,
    pub(crate) extra: u64,
    pub(crate) len: u32,
    pub(crate) crc: u32,
}

impl Header {
    /// A header for `data_len` bytes of data (its CRC is set by [`encode`]).
    pub(crate) fn new(
        kind: Kind,
        flags: u8,
        block: u64,
        seq: u64,
        epoch: u64,
        extra: u64,
        len: u32,
    ) -> Header {
        Header { kind, flags, block, seq, epoch, extra, len, crc: 0 }
    }

    /// Bytes of the whole entry.
    pub(crate) fn entry_len(&self) -> u64 {
        HEADER_LEN as u64 + u64::from(self.len)
    }

    fn bytes_without_crc(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&ENTRY_MAGIC.to_le_bytes());
        b[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[6] = self.kind as u8;
        b[7] = self.flags;
        b[8..16].copy_from_slice(&self.block.to_le_bytes());
        b[16..24].copy_from_slice(&self.seq.to_le_bytes());
        b[24..32].copy_from_slice(&self.epoch.to_le_bytes());
        b[32..40].copy_from_slice(&self.extra.to_le_bytes());
        b[40..44].copy_from_slice(&self.len.to_le_bytes());
        b
    }
}

/// The CRC-32 of a header's first 44 bytes followed by the data.
fn entry_crc(header44: &[u8], data: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(header44);
    h.update(data);
    h.finalize()
}

/// The bytes of a whole entry: header (with its CRC) then data.
pub(crate) fn encode(header: &Header, data: &[u8]) -> Vec<u8> {
    let mut b = header.bytes_without_crc();
    let crc = entry_crc(&b[..44], data);
    b[44..48].copy_from_slice(&crc.to_le_bytes());
    let mut out = Vec::with_capacity(HEADER_LEN + data.len());
    out.extend_from_slice(&b);
    out.extend_from_slice(data);
    out
}

/// Decodes a header; `None` when the bytes are not one (wrong magic or
/// version, unknown kind, a length that is neither 0 nor `block_len`).
pub(crate) fn decode_header(b: &[u8], block_len: usize) -> Option<Header> {
    if b.len() < HEADER_LEN {
        return None;
    }
    let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let u64_at = |i: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[i..i + 8]);
        u64::from_le_bytes(a)
    };
    if u32_at(0) != ENTRY_MAGIC || u16::from_le_bytes([b[4], b[5]]) != FORMAT_VERSION {
        return None;
    }
    let kind = Kind::from_u8(b[6])?;
    let len = u32_at(40);
    let len_ok = match kind {
        Kind::Data => len as usize == block_len,
        Kind::Zero | Kind::Uploaded | Kind::Discard => len == 0,
    };
    if !len_ok {
        return None;
    }
    Some(Header {
        kind,
        flags: b[7],
        block: u64_at(8),
        seq: u64_at(16),
        epoch: u64_at(24),
        extra: u64_at(32),
        len,
        crc: u32_at(44),
    })
}

/// True when the entry's CRC matches its header and data.
pub(crate) fn crc_ok(header_bytes: &[u8], data: &[u8]) -> bool {
    if header_bytes.len() < HEADER_LEN {
        return false;
    }
    let want = u32::from_le_bytes([header_bytes[44], header_bytes[45], header_bytes[46], header_bytes[47]]);
    entry_crc(&header_bytes[..44], data) == want
}

/// Why an entry read back from a segment cannot be served.
#[derive(Debug)]
pub(crate) enum ReadFault {
    Io(io::Error),
    Bad(String),
}

impl std::fmt::Display for ReadFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadFault::Io(e) => write!(f, "read error: {e}"),
            ReadFault::Bad(why) => f.write_str(why),
        }
    }
}

/// Reads the entry at `off` of `file` and checks it: header, CRC, kind and
/// block. Returns the header and the data (empty for a zero entry).
pub(crate) fn read_entry(
    file: &File,
    off: u64,
    block_len: usize,
    want_block: u64,
) -> Result<(Header, Vec<u8>), ReadFault> {
    let mut head = [0u8; HEADER_LEN];
    file.read_exact_at(&mut head, off).map_err(ReadFault::Io)?;
    let header = decode_header(&head, block_len)
        .ok_or_else(|| ReadFault::Bad(format!("no valid entry header at offset {off}")))?;
    if header.block != want_block || !matches!(header.kind, Kind::Data | Kind::Zero) {
        return Err(ReadFault::Bad(format!(
            "the entry at offset {off} is for block {} ({:?}), not block {want_block}",
            header.block, header.kind
        )));
    }
    let mut data = vec![0u8; header.len as usize];
    file.read_exact_at(&mut data, off + HEADER_LEN as u64).map_err(ReadFault::Io)?;
    if !crc_ok(&head, &data) {
        return Err(ReadFault::Bad(format!(
            "CRC mismatch in the entry at offset {off} (block {want_block})"
        )));
    }
    Ok((header, data))
}

/// Little-endian writer of the small binary files.
#[derive(Default)]
pub(crate) struct Writer(pub(crate) Vec<u8>);

impl Writer {
    pub(crate) fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn str(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.0.extend_from_slice(s.as_bytes());
    }
    pub(crate) fn opt_str(&mut self, s: Option<&str>) {
        match s {
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
            None => self.u8(0),
        }
    }
    /// Appends the CRC-32 of everything so far and returns the bytes.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        let crc = crc32fast::hash(&self.0);
        self.u32(crc);
        self.0
    }
}

/// Little-endian reader of the small binary files; errors name the file.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'a str,
}

impl<'a> Reader<'a> {
    /// Checks the trailing CRC-32 and reads the rest.
    pub(crate) fn checked(buf: &'a [u8], what: &'a str) -> Result<Reader<'a>, String> {
        if buf.len() < 4 {
            return Err(format!("{what}: {} bytes, too short", buf.len()));
        }
        let (body, crc) = buf.split_at(buf.len() - 4);
        let want = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
        if crc32fast::hash(body) != want {
            return Err(format!("{what}: checksum mismatch"));
        }
        Ok(Reader { buf: body, pos: 0, what })
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.buf.len() - self.pos < n {
            return Err(format!("{}: truncated at byte {}", self.what, self.pos));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, String> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    pub(crate) fn str(&mut self) -> Result<String, String> {
        let n = self.u32()? as usize;
        if n > 4096 {
            return Err(format!("{}: string of {n} bytes at byte {}", self.what, self.pos));
        }
        let at = self.pos;
        String::from_utf8(self.take(n)?.to_vec())
            .map_err(|_| format!("{}: invalid UTF-8 at byte {at}", self.what))
    }
    pub(crate) fn opt_str(&mut self) -> Result<Option<String>, String> {
        Ok(match self.u8()? {
            0 => None,
            _ => Some(self.str()?),
        })
    }
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
}

/// Magic of the state file.
const STATE_MAGIC: &[u8; 8] = b"S3BCSTAT";

/// The state file (`state`): what the directory is valid for and whether
/// it was closed cleanly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StateFile {
    pub(crate) volume: String,
    pub(crate) block_size: u32,
    pub(crate) block_count: u64,
    /// The bucket marker the directory is valid against.
    pub(crate) marker: Option<String>,
    /// A marker written by a mount that may not have reached the bucket.
    pub(crate) pending_marker: Option<String>,
    /// Closed cleanly: the checkpoint holds the index and nothing is dirty.
    pub(crate) clean: bool,
    /// The next sequence number and flush epoch (valid when clean).
    pub(crate) next_seq: u64,
    pub(crate) epoch: u64,
    /// CRC-32 of the checkpoint file this clean state goes with.
    pub(crate) checkpoint_crc: u32,
}

impl StateFile {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.0.extend_from_slice(STATE_MAGIC);
        w.u32(u32::from(FORMAT_VERSION));
        w.str(&self.volume);
        w.u32(self.block_size);
        w.u64(self.block_count);
        w.opt_str(self.marker.as_deref());
        w.opt_str(self.pending_marker.as_deref());
        w.u8(u8::from(self.clean));
        w.u64(self.next_seq);
        w.u64(self.epoch);
        w.u32(self.checkpoint_crc);
        w.finish()
    }

    /// Decodes a state file; `Err(reason)` when it is not one of this version.
    pub(crate) fn decode(buf: &[u8]) -> Result<StateFile, String> {
        let mut r = Reader::checked(buf, "state file")?;
        if r.take(8)? != STATE_MAGIC {
            return Err("state file: not an s3block disk cache state file".into());
        }
        let version = r.u32()?;
        if version != u32::from(FORMAT_VERSION) {
            return Err(format!("state file: format version {version}, this program reads {FORMAT_VERSION}"));
        }
        Ok(StateFile {
            volume: r.str()?,
            block_size: r.u32()?,
            block_count: r.u64()?,
            marker: r.opt_str()?,
            pending_marker: r.opt_str()?,
            clean: r.u8()? != 0,
            next_seq: r.u64()?,
            epoch: r.u64()?,
            checkpoint_crc: r.u32()?,
        })
    }
}

/// Writes `bytes` to `dir/name` atomically: a temporary file, fsync,
/// rename, fsync of the directory.
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let f = File::create(&tmp)?;
        f.write_all_at(bytes, 0)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(name))?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_every_flipped_bit_is_caught() {
        let h = Header::new(Kind::Data, 0, 7, 9, 2, 0, 16);
        let data = [5u8; 16];
        let bytes = encode(&h, &data);
        let d = decode_header(&bytes, 16).expect("valid header");
        assert_eq!((d.kind, d.block, d.seq, d.epoch, d.len), (Kind::Data, 7, 9, 2, 16));
        assert!(crc_ok(&bytes[..HEADER_LEN], &bytes[HEADER_LEN..]));
        for i in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[i / 8] ^= 1 << (i % 8);
            let ok = decode_header(&b, 16).is_some() && crc_ok(&b[..HEADER_LEN], &b[HEADER_LEN..]);
            assert!(!ok, "bit {i} flipped went unnoticed");
        }
    }

    #[test]
    fn state_round_trips_and_rejects_garbage() {
        let s = StateFile {
            volume: "vol".into(),
            block_size: 4096,
            block_count: 10,
            marker: Some("m1".into()),
            pending_marker: None,
            clean: true,
            next_seq: 5,
            epoch: 3,
            checkpoint_crc: 77,
        };
        let b = s.encode();
        assert_eq!(StateFile::decode(&b), Ok(s));
        for n in 0..b.len() {
            assert!(StateFile::decode(&b[..n]).is_err());
        }
        assert!(StateFile::decode(b"garbage garbage garbage").is_err());
    }
}
