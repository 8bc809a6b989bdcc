//! Examples live in this package's `[[example]]` targets; this library holds
//! what several of them and the benches share.

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

/// `len` bytes no compressor can shrink, the same for the same `seed`.
pub fn incompressible(len: usize, seed: u64) -> Bytes {
    let mut v = vec![0; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v.into()
}
