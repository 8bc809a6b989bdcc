//! Examples live in this package's `[[example]]` targets; this library holds
//! what several of them and the benches share.

use bytes::Bytes;

/// `len` bytes no compressor can shrink, the same for the same `seed`
/// (xorshift64; `seed` must not be zero).
pub fn incompressible(len: usize, seed: u64) -> Bytes {
    let mut x = seed;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v.into()
}
