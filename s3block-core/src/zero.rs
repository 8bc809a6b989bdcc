//! Zero blocks: testing whether a block is all zeros, and handing out
//! zeros without allocating them.

use std::sync::OnceLock;

use bytes::Bytes;

use crate::MAX_BLOCK_SIZE;

/// True when every byte of `data` is zero.
///
/// Works sixteen bytes at a time, which the compiler turns into vector
/// compares; a 1 MiB block is checked in tens of microseconds. Bytes from
/// [`zeros`] are known to be zero and are not read at all.
pub fn is_zero(data: &[u8]) -> bool {
    if is_shared_zeros(data) {
        return true;
    }
    let mut chunks = data.chunks_exact(64);
    for chunk in &mut chunks {
        let mut acc = 0u128;
        for word in chunk.chunks_exact(16) {
            acc |= u128::from_ne_bytes(word.try_into().expect("chunks_exact(16) yields 16 bytes"));
        }
        if acc != 0 {
            return false;
        }
    }
    chunks.remainder().iter().all(|&b| b == 0)
}

/// `len` zero bytes: a block that was never written, a block known to be
/// zero, the zeros of a discard.
///
/// Up to [`MAX_BLOCK_SIZE`] bytes, the bytes are a slice of one zeroed
/// region the process shares, which nothing ever writes: its pages are the
/// kernel's shared zero page, so handing out zeros costs no memory, no
/// page fault after the first use of each page, and no zero-filling. A
/// fresh buffer of zeros per read (as before) cost a mapping, a fault per
/// 4 KiB when read and, at 1 MiB blocks, a quarter of the page faults of a
/// cold sequential read whose read-ahead ran past the written part of the
/// volume. The region is reserved once, on first use; it is address space
/// only. Longer runs (no block is) get a buffer of their own.
///
/// ```
/// use s3block_core::zeros;
///
/// let z = zeros(1 << 20);
/// assert_eq!(z.len(), 1 << 20);
/// assert!(z.iter().all(|&b| b == 0));
/// assert_eq!(zeros(4096).as_ptr(), z.as_ptr(), "one region serves every length");
/// ```
pub fn zeros(len: usize) -> Bytes {
    if len > SHARED_LEN {
        return Bytes::from(vec![0u8; len]);
    }
    Bytes::from_static(&shared()[..len])
}

/// The length of the region [`zeros`] hands out: the largest block.
const SHARED_LEN: usize = MAX_BLOCK_SIZE as usize;

/// The region [`zeros`] hands out, once made.
static SHARED: OnceLock<&'static [u8]> = OnceLock::new();

fn shared() -> &'static [u8] {
    // A zeroed allocation this large is a fresh anonymous mapping (malloc
    // asks the system for it, and the system's pages start zeroed), never
    // written, so it holds no memory of its own. A `static` array would
    // not do: an immutable one is stored in the program file, all 64 MiB.
    SHARED.get_or_init(|| Vec::leak(vec![0u8; SHARED_LEN]))
}

/// True when `data` lies inside the region [`zeros`] hands out (once it
/// exists).
fn is_shared_zeros(data: &[u8]) -> bool {
    let Some(region) = SHARED.get() else { return false };
    let (start, end) = (region.as_ptr() as usize, region.as_ptr() as usize + region.len());
    let at = data.as_ptr() as usize;
    !data.is_empty() && at >= start && at + data.len() <= end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_any_nonzero_byte() {
        assert!(is_zero(&[]));
        for len in [1usize, 15, 16, 63, 64, 65, 4096, 4099] {
            let mut v = vec![0u8; len];
            assert!(is_zero(&v));
            for i in [0, len / 2, len - 1] {
                v[i] = 1;
                assert!(!is_zero(&v), "len {len} byte {i}");
                v[i] = 0;
            }
        }
        // Unaligned slices.
        let v = [0u8; 200];
        assert!(is_zero(&v[3..177]));
    }

    #[test]
    fn zeros_are_zero_at_every_length_and_known_without_reading() {
        for len in [0usize, 1, 4096, 1 << 20, SHARED_LEN] {
            let z = zeros(len);
            assert_eq!(z.len(), len);
            assert!(z.iter().all(|&b| b == 0), "len {len}");
            assert!(is_zero(&z));
            assert!(is_zero(&z.slice(len / 3..len / 2)));
        }
        let first = zeros(4096);
        assert_eq!(zeros(1 << 20).as_ptr(), first.as_ptr(), "the region is shared");
        assert!(is_shared_zeros(&first));
        // Other memory is read, even when it happens to be zero.
        let own = vec![0u8; 4096];
        assert!(!is_shared_zeros(&own));
        assert!(is_zero(&own));
        assert!(!is_zero(&[0, 0, 1]));
        // Longer than any block: a buffer of its own, still zero.
        let long = zeros(SHARED_LEN + 1);
        assert_eq!(long.len(), SHARED_LEN + 1);
        assert!(!is_shared_zeros(&long));
        assert!(long.iter().all(|&b| b == 0));
        // Bytes that cannot be written in place: a writer gets a copy.
        let mut copy = bytes::BytesMut::from(&zeros(8)[..]);
        copy[0] = 1;
        assert_eq!(zeros(8)[0], 0);
    }

    /// Resident anonymous memory of this process, in bytes (Linux).
    #[cfg(target_os = "linux")]
    fn resident_anonymous() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("RssAnon:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("RssAnon in /proc/self/status");
        kib * 1024
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reading_every_shared_zero_holds_no_memory() {
        let before = resident_anonymous();
        let z = zeros(SHARED_LEN);
        // Read every page the slow way (not through the region check).
        let sum: u64 = z.chunks(4096).map(|page| u64::from(page[page.len() / 2])).sum();
        assert_eq!(sum, 0);
        let grown = resident_anonymous().saturating_sub(before);
        // 64 MiB were read; other tests in this process allocate a little
        // meanwhile. Written zeros would be all 64 MiB.
        assert!(grown < 16 << 20, "reading {SHARED_LEN} zero bytes grew resident memory by {grown} bytes");
    }
}
