//! Helpers shared by the cache's integration tests, generic over the device
//! below so they can run over any store.

#![allow(dead_code, unreachable_pub)]

pub mod disk;
pub mod model;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use s3block_cache::{BlockCache, CacheConfig};
use s3block_core::{BlockDevice, BlockDeviceExt, BlockId, Geometry};

/// Bytes of one block, all non-zero, different per block and per `fill`.
pub fn block_data(geometry: &Geometry, block: u32, fill: u8) -> Bytes {
    pattern(geometry.block_len(), u64::from(block) * 7 + u64::from(fill))
}

/// `len` non-zero bytes derived from `seed`.
pub fn pattern(len: usize, seed: u64) -> Bytes {
    (0..len).map(|i| ((seed as usize).wrapping_mul(31).wrapping_add(i * 13) % 251) as u8 + 1).collect()
}

/// A small geometry: `blocks` blocks of 512 bytes.
pub fn geometry(blocks: u64) -> Geometry {
    Geometry::with_blocks(blocks, 512).expect("valid test geometry")
}

/// A config for tests: no write delay unless asked, small sizes in blocks.
pub fn config(geometry: &Geometry, cache_blocks: u64, dirty_blocks: u64) -> CacheConfig {
    let bs = u64::from(geometry.block_size());
    CacheConfig::builder()
        .cache_size(cache_blocks * bs)
        .max_dirty(dirty_blocks * bs)
        .write_delay(Duration::ZERO)
        .read_ahead(0)
        .upload_concurrency(4)
        .build()
}

/// Flushes until a flush succeeds (the store fails some requests).
pub async fn flush_until_ok<D: BlockDevice + 'static>(cache: &BlockCache<D>) {
    for attempt in 0..1000 {
        match cache.flush().await {
            Ok(()) => return,
            Err(e) if attempt < 999 => {
                assert!(e.is_transient(), "only injected transient errors expected: {e}");
            }
            Err(e) => panic!("flush kept failing: {e}"),
        }
    }
}

/// Reads the whole device (without any cache) and compares with `model`.
pub async fn assert_device_equals(device: &dyn BlockDevice, model: &[u8]) {
    let g = device.geometry();
    for b in 0..g.block_count() {
        let data = device.read_block(BlockId(b as u32)).await.expect("read below");
        let start = (b * u64::from(g.block_size())) as usize;
        let want = &model[start..start + g.block_len()];
        if &data[..] != want {
            let at = data.iter().zip(want).position(|(a, b)| a != b).unwrap_or(0);
            panic!("block {b} differs from the model at byte {at}: {} != {}", data[at], want[at]);
        }
    }
}

/// Reads `len` bytes at `offset` through any device, retrying injected failures.
pub async fn read_retrying<D: BlockDevice + ?Sized>(device: &D, offset: u64, len: usize) -> Bytes {
    for _ in 0..1000 {
        if let Ok(data) = device.read_at(offset, len).await {
            return data;
        }
    }
    panic!("read at {offset} kept failing");
}

/// Lets every task that can run (uploads, fetches, the write-back
/// scheduler) run, without moving the clock: on paused time, what a test
/// sees after it is what the cache does at this very instant.
pub async fn settle() {
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
}

/// The cache and its lower device, shared between tasks.
pub type Shared<D> = Arc<BlockCache<D>>;
