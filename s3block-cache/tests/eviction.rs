//! Which clean blocks leave the memory cache, and when: the clean timeout
//! (`--cache-timeout`, s3backer's `--blockCacheTimeout`) and the protected
//! first blocks (`--protected-blocks`, s3backer's `--blockCacheNumProtected`).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{block_data, config, geometry, settle};
use s3block_cache::BlockCache;
use s3block_cache::testing::CountingDevice;
use s3block_core::{BlockDevice, BlockId, MemoryDevice};

type Counted = Arc<CountingDevice<Arc<MemoryDevice>>>;

/// `blocks` blocks of 512 bytes, each stored (non-zero), under a counter.
async fn stored(blocks: u64) -> Counted {
    let g = geometry(blocks);
    let mem = Arc::new(MemoryDevice::new(g));
    for b in 0..blocks as u32 {
        mem.write_block(BlockId(b), block_data(&g, b, 1)).await.expect("write below");
    }
    Arc::new(CountingDevice::new(mem))
}

#[tokio::test(start_paused = true)]
async fn a_clean_block_is_dropped_after_the_clean_timeout_and_a_dirty_one_is_kept() {
    let counted = stored(16).await;
    let g = counted.geometry();
    let timeout = Duration::from_millis(1500);
    // Block 2, written whole, stays dirty until the flush.
    let cfg = config(&g, 8, 4)
        .to_builder()
        .clean_timeout(timeout)
        .write_delay(Duration::from_secs(3600))
        .prompt_uploads(false)
        .build();
    let cache = BlockCache::new(Arc::clone(&counted), cfg).expect("cache");
    cache.read_block(BlockId(1)).await.expect("read");
    cache.write_block(BlockId(2), block_data(&g, 2, 9)).await.expect("write");
    assert_eq!(cache.stats().resident_bytes, 1024);
    // Before the timeout the clean block is served from memory.
    tokio::time::sleep(Duration::from_millis(1400)).await;
    settle().await;
    cache.read_block(BlockId(1)).await.expect("read");
    assert_eq!(counted.reads_of(BlockId(1)), 1, "a hit before the timeout");
    // Reading it does not extend its stay: the timeout counts from the fetch.
    tokio::time::sleep(Duration::from_millis(200)).await;
    settle().await;
    assert_eq!(cache.stats().resident_bytes, 512, "block 1 dropped, the dirty block 2 kept");
    cache.check_invariants().expect("invariants");
    cache.read_block(BlockId(1)).await.expect("read");
    assert_eq!(counted.reads_of(BlockId(1)), 2, "fetched again after the timeout");
    // The dirty block is never dropped: it is still unwritten below, and
    // once stored it is clean and times out like any other.
    assert_eq!(cache.read_block(BlockId(2)).await.expect("read"), block_data(&g, 2, 9));
    assert_eq!(counted.reads_of(BlockId(2)), 0);
    cache.flush().await.expect("flush");
    assert_eq!(counted.inner().read_block(BlockId(2)).await.expect("below"), block_data(&g, 2, 9));
    tokio::time::sleep(timeout + Duration::from_millis(10)).await;
    settle().await;
    assert_eq!(cache.stats().resident_bytes, 0, "everything clean has timed out");
    cache.check_invariants().expect("invariants");
    cache.close().await.expect("close");
}

#[tokio::test(start_paused = true)]
async fn without_a_clean_timeout_clean_blocks_stay() {
    let counted = stored(16).await;
    let g = counted.geometry();
    let cache = BlockCache::new(Arc::clone(&counted), config(&g, 8, 4)).expect("cache");
    cache.read_block(BlockId(1)).await.expect("read");
    tokio::time::sleep(Duration::from_secs(24 * 3600)).await;
    settle().await;
    cache.read_block(BlockId(1)).await.expect("read");
    assert_eq!(counted.reads_of(BlockId(1)), 1);
    cache.close().await.expect("close");
}

#[tokio::test(start_paused = true)]
async fn protected_blocks_survive_eviction_pressure_within_the_cache_size() {
    let counted = stored(64).await;
    let g = counted.geometry();
    // A cache of 8 blocks, the first 3 protected.
    let cfg = config(&g, 8, 4).to_builder().protected_blocks(3).build();
    let cache = BlockCache::new(Arc::clone(&counted), cfg).expect("cache");
    for b in 0..3 {
        cache.read_block(BlockId(b)).await.expect("read");
    }
    // A scan of 60 other blocks, more than seven times the cache.
    for b in 4..64 {
        cache.read_block(BlockId(b)).await.expect("read");
        assert!(cache.stats().resident_bytes <= 8 * 512, "the cache size holds");
    }
    cache.check_invariants().expect("invariants");
    for b in 0..3 {
        cache.read_block(BlockId(b)).await.expect("read");
        assert_eq!(counted.reads_of(BlockId(b)), 1, "protected block {b} stayed");
    }
    // The unprotected blocks went, least recently used first.
    cache.read_block(BlockId(4)).await.expect("read");
    assert_eq!(counted.reads_of(BlockId(4)), 2);
    // With no other clean block left, a protected one makes room too:
    // the cache never grows past its size for them.
    cache.close().await.expect("close");

    let cfg = config(&g, 4, 2).to_builder().protected_blocks(100).build();
    assert_eq!(cfg.protected_blocks(), 100);
    let cache = BlockCache::new(Arc::clone(&counted), cfg).expect("cache");
    for b in 0..10 {
        cache.read_block(BlockId(b)).await.expect("read");
    }
    assert_eq!(cache.stats().resident_bytes, 4 * 512, "at most the cache size, all protected or not");
    cache.check_invariants().expect("invariants");
    cache.close().await.expect("close");
}

#[tokio::test(start_paused = true)]
async fn without_protection_the_first_blocks_are_evicted_like_any_other() {
    let counted = stored(64).await;
    let g = counted.geometry();
    let cache = BlockCache::new(Arc::clone(&counted), config(&g, 8, 4)).expect("cache");
    for b in (0..3).chain(4..64) {
        cache.read_block(BlockId(b)).await.expect("read");
    }
    cache.read_block(BlockId(0)).await.expect("read");
    assert_eq!(counted.reads_of(BlockId(0)), 2, "block 0 was evicted by the scan");
    cache.close().await.expect("close");
}
