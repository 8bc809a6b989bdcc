//! What the cache asks of the store: the requests users pay for.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{block_data, config, geometry, pattern, settle};
use s3block_cache::BlockCache;
use s3block_cache::testing::{CountingDevice, FlakyDevice};
use s3block_core::{BlockDevice, BlockDeviceExt, BlockId, MemoryDevice};
use tokio::time::Instant;

type Counted = Arc<CountingDevice<Arc<MemoryDevice>>>;

fn counted(blocks: u64) -> (Counted, Arc<MemoryDevice>) {
    let mem = Arc::new(MemoryDevice::new(geometry(blocks)));
    (Arc::new(CountingDevice::new(Arc::clone(&mem))), mem)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_whole_block_writes_make_n_puts_and_no_gets() {
    let (below, mem) = counted(64);
    let g = below.geometry();
    let cache = BlockCache::new(Arc::clone(&below), config(&g, 16, 8)).unwrap();
    let n = 40u32;
    let mut all = Vec::new();
    for b in 0..n {
        let data = block_data(&g, b, 1);
        all.extend_from_slice(&data);
        cache.write_block(BlockId(b), data).await.unwrap();
    }
    cache.flush().await.unwrap();
    let c = below.counts();
    assert_eq!((c.writes, c.reads, c.zero_writes), (u64::from(n), 0, 0), "{c:?}");
    assert_eq!(&mem.read_at(0, all.len()).await.unwrap()[..], &all[..]);
    // The same through byte-range writes spanning blocks.
    below.reset();
    cache.write_at(0, pattern(g.block_len() * 10, 9)).await.unwrap();
    cache.flush().await.unwrap();
    assert_eq!((below.counts().writes, below.counts().reads), (10, 0));
    cache.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn rewrites_within_the_write_delay_are_uploaded_once() {
    let (below, mem) = counted(8);
    let g = below.geometry();
    // Every block waits for the delay, also the first one written whole.
    let cfg =
        config(&g, 8, 4).to_builder().write_delay(Duration::from_secs(60)).prompt_uploads(false).build();
    let cache = BlockCache::new(Arc::clone(&below), cfg).unwrap();
    let dirtied = Instant::now();
    for fill in 1..=5 {
        cache.write_block(BlockId(2), block_data(&g, 2, fill)).await.unwrap();
        cache.write_partial(BlockId(2), 7, Bytes::from_static(b"xyz")).await.unwrap();
        // Rewrites later on do not push the upload back.
        tokio::time::advance(Duration::from_secs(10)).await;
    }
    tokio::time::advance(Duration::from_secs(60) - dirtied.elapsed() - Duration::from_millis(1)).await;
    settle().await;
    assert_eq!(below.counts().writes, 0, "nothing uploaded before the write delay");
    // The upload starts exactly at the write delay, without a flush.
    tokio::time::advance(Duration::from_millis(1)).await;
    settle().await;
    assert_eq!(dirtied.elapsed(), Duration::from_secs(60));
    assert_eq!(below.counts().writes, 1, "uploaded at the write delay");
    assert_eq!(cache.stats().dirty_blocks, 0);
    cache.flush().await.unwrap();
    assert_eq!(below.counts().writes, 1);
    assert_eq!(&mem.read_partial(BlockId(2), 7, 3).await.unwrap()[..], b"xyz");
    cache.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_block_written_whole_is_uploaded_at_once_and_its_rewrites_wait_for_the_delay() {
    let (below, mem) = counted(8);
    let g = below.geometry();
    let delay = Duration::from_secs(60);
    let cfg = config(&g, 8, 4).to_builder().write_delay(delay).build();
    assert!(cfg.prompt_uploads(), "on by default");
    let cache = BlockCache::new(Arc::clone(&below), cfg).unwrap();
    // Never uploaded, written whole: stored at this very instant.
    let first = Instant::now();
    cache.write_block(BlockId(2), block_data(&g, 2, 1)).await.unwrap();
    settle().await;
    assert_eq!(Instant::now(), first);
    assert_eq!(below.counts().writes, 1, "a block written whole has nothing left to gather");
    assert_eq!(cache.stats().dirty_blocks, 0);
    // Rewritten less than the delay after its upload: the rewrites wait
    // for the delay from the first of them, and make one upload.
    tokio::time::advance(Duration::from_secs(10)).await;
    let rewritten = Instant::now();
    for fill in 2..=4 {
        cache.write_block(BlockId(2), block_data(&g, 2, fill)).await.unwrap();
        tokio::time::advance(Duration::from_secs(5)).await;
    }
    tokio::time::advance(rewritten + delay - Instant::now() - Duration::from_millis(1)).await;
    settle().await;
    assert_eq!(below.counts().writes, 1, "a rewrite waits for the write delay");
    tokio::time::advance(Duration::from_millis(1)).await;
    settle().await;
    assert_eq!(below.counts().writes, 2, "the rewrites made one upload, at the delay");
    assert_eq!(mem.read_block(BlockId(2)).await.unwrap(), block_data(&g, 2, 4));
    // A whole write the delay after the last upload started goes at once.
    tokio::time::advance(delay).await;
    cache.write_block(BlockId(2), block_data(&g, 2, 5)).await.unwrap();
    settle().await;
    assert_eq!(below.counts().writes, 3, "after a quiet spell of the delay, no wait");
    assert_eq!(mem.read_block(BlockId(2)).await.unwrap(), block_data(&g, 2, 5));
    // Part of a block waits for the delay; a block written whole after it
    // is queued ahead of it and stored at once.
    let partial = Instant::now();
    cache.write_partial(BlockId(5), 7, Bytes::from_static(b"xyz")).await.unwrap();
    cache.write_block(BlockId(6), block_data(&g, 6, 1)).await.unwrap();
    settle().await;
    assert_eq!(below.counts().writes, 4, "the whole block passes the part waiting");
    assert_eq!(mem.read_block(BlockId(6)).await.unwrap(), block_data(&g, 6, 1));
    tokio::time::advance(partial + delay - Instant::now() - Duration::from_millis(1)).await;
    settle().await;
    assert_eq!(below.counts().writes, 4, "a part waits for the delay");
    tokio::time::advance(Duration::from_millis(1)).await;
    settle().await;
    assert_eq!(below.counts().writes, 5);
    assert_eq!(&mem.read_partial(BlockId(5), 7, 3).await.unwrap()[..], b"xyz");
    assert_eq!(cache.stats().dirty_blocks, 0);
    cache.close().await.unwrap();
}

/// Each upload is counted under why it started when it did: what a user
/// reads to tell which PUTs the write delay, the fsyncs or the dirty limit
/// cost.
#[tokio::test(start_paused = true)]
async fn each_upload_is_counted_under_why_it_started() {
    let (below, _mem) = counted(16);
    let g = below.geometry();
    let delay = Duration::from_secs(60);
    // 4 uploads at once; above 4 dirty blocks (half the limit of 8) the
    // delay is skipped.
    let cache =
        BlockCache::new(Arc::clone(&below), config(&g, 16, 8).to_builder().write_delay(delay).build())
            .unwrap();
    let started = || cache.stats().upload_starts;
    // Five blocks written whole: due at once, also the one above the mark.
    for b in 0..5 {
        cache.write_block(BlockId(b), block_data(&g, b, 1)).await.unwrap();
    }
    settle().await;
    assert_eq!(below.counts().writes, 5);
    assert_eq!((started().written_whole, started().total()), (5, 5), "{}", cache.stats());
    // Four of them rewritten within the delay wait for it; part of a fifth
    // block puts dirty data above the mark, so the four go before their
    // delay, and the part (under the mark again) waits.
    tokio::time::advance(Duration::from_secs(10)).await;
    for b in 0..4 {
        cache.write_block(BlockId(b), block_data(&g, b, 2)).await.unwrap();
    }
    settle().await;
    assert_eq!(below.counts().writes, 5, "at half the limit the delay holds");
    cache.write_partial(BlockId(8), 3, Bytes::from_static(b"ab")).await.unwrap();
    settle().await;
    assert_eq!(below.counts().writes, 9);
    assert_eq!((started().dirty_limit, started().total()), (4, 9), "{}", cache.stats());
    // The part goes before its delay when a flush waits for it.
    cache.flush().await.unwrap();
    assert_eq!((started().flush, started().total()), (1, 10), "{}", cache.stats());
    // Another part waits for its delay.
    cache.write_partial(BlockId(9), 3, Bytes::from_static(b"cd")).await.unwrap();
    tokio::time::advance(delay).await;
    settle().await;
    let s = cache.stats();
    assert_eq!(s.dirty_blocks, 0);
    let u = s.upload_starts;
    assert_eq!((u.written_whole, u.dirty_limit, u.flush, u.delay), (5, 4, 1, 1), "{s}");
    assert_eq!(u.total(), below.counts().writes, "one start per upload, none failed");
    assert!(
        s.to_string().contains("11 started, retries aside: 5 written whole, 1 after the write delay"),
        "{s}"
    );
    cache.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn with_prompt_uploads_off_a_block_written_whole_waits_for_the_delay() {
    let (below, mem) = counted(8);
    let g = below.geometry();
    let delay = Duration::from_secs(60);
    let cfg = config(&g, 8, 4).to_builder().write_delay(delay).prompt_uploads(false).build();
    let cache = BlockCache::new(Arc::clone(&below), cfg).unwrap();
    let written = Instant::now();
    cache.write_block(BlockId(3), block_data(&g, 3, 1)).await.unwrap();
    tokio::time::advance(delay - Duration::from_millis(1)).await;
    settle().await;
    assert_eq!(below.counts().writes, 0, "off: a block written whole waits like any other");
    tokio::time::advance(Duration::from_millis(1)).await;
    settle().await;
    assert_eq!(written.elapsed(), delay);
    assert_eq!(below.counts().writes, 1);
    assert_eq!(mem.read_block(BlockId(3)).await.unwrap(), block_data(&g, 3, 1));
    cache.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_write_is_uploaded_at_its_write_delay_while_a_later_clean_timeout_waits() {
    let (below, mem) = counted(8);
    let g = below.geometry();
    let cfg = config(&g, 8, 4)
        .to_builder()
        .write_delay(Duration::from_secs(1))
        .clean_timeout(Duration::from_secs(600))
        .prompt_uploads(false)
        .build();
    let cache = BlockCache::new(Arc::clone(&below), cfg).unwrap();
    // A clean block: the scheduler sleeps until its timeout, ten minutes on.
    mem.write_block(BlockId(5), block_data(&g, 5, 1)).await.unwrap();
    cache.read_block(BlockId(5)).await.unwrap();
    settle().await;
    // Each write below is due before that, so the scheduler is woken for
    // it; the second is due after the first, so it is not.
    let written = Instant::now();
    cache.write_block(BlockId(2), block_data(&g, 2, 1)).await.unwrap();
    tokio::time::advance(Duration::from_millis(500)).await;
    cache.write_block(BlockId(3), block_data(&g, 3, 1)).await.unwrap();
    tokio::time::advance(written + Duration::from_secs(1) - Instant::now()).await;
    settle().await;
    assert_eq!(below.counts().writes, 1, "the first block at its write delay, not at the clean timeout");
    tokio::time::advance(Duration::from_millis(500)).await;
    settle().await;
    assert_eq!(below.counts().writes, 2, "the second at its own");
    assert_eq!(cache.stats().dirty_blocks, 0);
    assert_eq!(mem.read_block(BlockId(3)).await.unwrap(), block_data(&g, 3, 1));
    cache.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn dirty_data_above_half_the_limit_is_uploaded_without_the_write_delay() {
    let (below, mem) = counted(32);
    let g = below.geometry();
    let cfg =
        config(&g, 16, 8).to_builder().write_delay(Duration::from_secs(60)).prompt_uploads(false).build();
    let cache = BlockCache::new(Arc::clone(&below), cfg).unwrap();
    // Half the dirty limit (4 of 8 blocks) keeps the write delay (every
    // block waits for it, also those written whole).
    let first = Instant::now();
    for b in 0..4 {
        cache.write_block(BlockId(b), block_data(&g, b, 1)).await.unwrap();
    }
    tokio::time::advance(Duration::from_secs(30)).await;
    settle().await;
    assert_eq!(below.counts().writes, 0, "at half the limit the write delay still holds");
    // Past the mark a streaming writer's blocks go out at once, with no
    // flush and no writer waiting: at this very instant, every upload slot
    // (4) busy.
    let fifth = Instant::now();
    cache.write_block(BlockId(4), block_data(&g, 4, 1)).await.unwrap();
    settle().await;
    assert_eq!(Instant::now(), fifth);
    let uploaded = below.counts().writes;
    assert_eq!(uploaded, 4, "the oldest blocks fill the upload slots");
    assert_eq!(cache.stats().write_waits, 0, "no writer had to wait");
    assert_eq!(cache.stats().dirty_blocks, 1);
    // The rest waits for its write delay again: not a moment less.
    tokio::time::advance(first + Duration::from_secs(60) - Instant::now() - Duration::from_millis(1)).await;
    settle().await;
    assert_eq!(below.counts().writes, uploaded, "below the mark, the write delay holds again");
    tokio::time::advance(fifth + Duration::from_secs(60) - Instant::now()).await;
    settle().await;
    assert_eq!(below.counts().writes, 5, "each block uploaded once, the last ones at their write delay");
    assert_eq!(cache.stats().dirty_blocks, 0);
    assert_eq!(mem.read_block(BlockId(4)).await.unwrap(), block_data(&g, 4, 1));
    cache.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zeros_over_a_fresh_volume_make_no_requests() {
    let (below, _mem) = counted(32);
    let g = below.geometry();
    // A listing at open found no stored block.
    let cache = BlockCache::with_known_blocks(Arc::clone(&below), config(&g, 8, 4), []).unwrap();
    cache.write_at(0, Bytes::from(vec![0; g.size() as usize])).await.unwrap();
    cache.write_partial(BlockId(3), 10, Bytes::from(vec![0; 20])).await.unwrap();
    cache.zero_range(100, 5000).await.unwrap();
    cache.discard(4..20).await.unwrap();
    assert!(cache.read_at(0, g.size() as usize).await.unwrap().iter().all(|&b| b == 0));
    cache.flush().await.unwrap();
    let c = below.counts();
    assert_eq!(c.requests(), 0, "{c:?}");
    assert!(cache.stats().zero_hits >= g.block_count());
    assert_eq!(cache.stats().resident_bytes, 0, "zero blocks cost no buffer");
    cache.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zeros_over_a_stored_block_delete_it_once() {
    let (below, mem) = counted(8);
    let g = below.geometry();
    let cache = BlockCache::new(Arc::clone(&below), config(&g, 8, 4)).unwrap();
    cache.write_block(BlockId(1), block_data(&g, 1, 1)).await.unwrap();
    cache.flush().await.unwrap();
    assert_eq!(mem.stored_blocks(), 1);
    for _ in 0..3 {
        cache.write_block(BlockId(1), Bytes::from(vec![0; g.block_len()])).await.unwrap();
        cache.flush().await.unwrap();
    }
    let c = below.counts();
    assert_eq!((c.writes, c.zero_writes), (1, 1), "{c:?}");
    assert_eq!(mem.stored_blocks(), 0);
    // Now known zero: reading makes no request, and the block costs no buffer.
    assert!(cache.read_block(BlockId(1)).await.unwrap().iter().all(|&b| b == 0));
    assert_eq!(below.counts().reads, 0);
    assert_eq!(cache.stats().resident_bytes, 0);
    // A block found absent is known zero afterwards.
    assert!(cache.read_block(BlockId(5)).await.unwrap().iter().all(|&b| b == 0));
    assert!(cache.read_block(BlockId(5)).await.unwrap().iter().all(|&b| b == 0));
    assert_eq!(below.reads_of(BlockId(5)), 1);
    cache.close().await.unwrap();
}

/// A write of bytes a cached block holds already changes nothing: no
/// upload for a clean block, nothing more for a dirty one, counted in the
/// stats. A write that changes one byte is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_of_the_bytes_a_block_holds_are_not_uploaded() {
    let (below, mem) = counted(8);
    let g = below.geometry();
    let bl = g.block_len();
    // Writes stay dirty until a flush.
    let cfg = config(&g, 8, 4).to_builder().write_delay(Duration::from_secs(600)).build();
    let cache = BlockCache::new(Arc::clone(&below), cfg).unwrap();
    let data = block_data(&g, 1, 1);
    cache.write_block(BlockId(1), data.clone()).await.unwrap();
    cache.flush().await.unwrap();
    assert_eq!(below.counts().writes, 1);
    // Clean and cached: the whole block again, a part, bytes through the
    // volume's offsets.
    cache.write_block(BlockId(1), data.clone()).await.unwrap();
    cache.write_partial(BlockId(1), 100, data.slice(100..200)).await.unwrap();
    cache.write_at(bl as u64 + 7, data.slice(7..50)).await.unwrap();
    assert_eq!(cache.stats().dirty_blocks, 0);
    cache.flush().await.unwrap();
    assert_eq!(below.counts().writes, 1, "nothing new to store");
    assert_eq!(cache.stats().unchanged_writes, 3);
    // One byte changed: dirty, then the same bytes again add nothing.
    let mut changed = data.to_vec();
    changed[300] ^= 0xff;
    cache.write_partial(BlockId(1), 300, Bytes::copy_from_slice(&changed[300..301])).await.unwrap();
    assert_eq!(cache.stats().dirty_blocks, 1);
    cache.write_partial(BlockId(1), 200, Bytes::copy_from_slice(&changed[200..400])).await.unwrap();
    assert_eq!(cache.stats().unchanged_writes, 4);
    cache.flush().await.unwrap();
    assert_eq!(below.counts().writes, 2);
    assert_eq!(&mem.read_block(BlockId(1)).await.unwrap()[..], &changed[..]);
    // A block written in places, never read: its pages again change
    // nothing; bytes reaching past them, even zeros, are a write.
    let part = Bytes::from(vec![5u8; 40]);
    cache.write_partial(BlockId(3), 60, part.clone()).await.unwrap();
    cache.write_partial(BlockId(3), 60, part.slice(..20)).await.unwrap();
    assert_eq!(cache.stats().unchanged_writes, 5);
    cache.write_partial(BlockId(3), 100, Bytes::from(vec![0u8; 4])).await.unwrap();
    assert_eq!(cache.stats().unchanged_writes, 5);
    cache.flush().await.unwrap();
    let stored = mem.read_block(BlockId(3)).await.unwrap();
    assert_eq!(&stored[60..100], &[5; 40]);
    assert!(stored[..60].iter().chain(&stored[100..]).all(|&b| b == 0));
    let text = cache.stats().to_string();
    assert!(text.contains("unchanged       5 "), "{text}");
    cache.reset_stats();
    assert_eq!(cache.stats().unchanged_writes, 0);
    cache.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_read_ahead_reads_each_block_once() {
    let (below, mem) = counted(256);
    let g = below.geometry();
    let all = pattern(g.size() as usize, 3);
    mem.write_at(0, all.clone()).await.unwrap();
    let cfg = config(&g, 64, 8).to_builder().read_ahead(16 * u64::from(g.block_size())).build();
    let cache = BlockCache::new(Arc::clone(&below), cfg).unwrap();
    // Reads smaller than a block, in order, as a filesystem does.
    let step = 128;
    for at in (0..g.size()).step_by(step) {
        let got = cache.read_at(at, step).await.unwrap();
        assert_eq!(&got[..], &all[at as usize..at as usize + step], "at {at}");
    }
    for b in 0..g.block_count() {
        assert_eq!(below.reads_of(BlockId(b as u32)), 1, "block {b}");
    }
    let s = cache.stats();
    assert!(s.read_ahead_issued > 200, "{s}");
    assert_eq!(s.read_ahead_used, s.read_ahead_issued, "{s}");
    assert!(s.resident_bytes <= s.cache_size, "{s}");
    cache.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_stored_blocks_spare_gets_of_the_others() {
    let (below, mem) = counted(64);
    let g = below.geometry();
    mem.write_block(BlockId(3), block_data(&g, 3, 1)).await.unwrap();
    let cache = BlockCache::with_known_blocks(Arc::clone(&below), config(&g, 8, 4), [BlockId(3)]).unwrap();
    for b in 0..64 {
        cache.read_block(BlockId(b)).await.unwrap();
    }
    assert_eq!(below.counts().reads, 1);
    assert_eq!(below.reads_of(BlockId(3)), 1);
    cache.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discard_drops_cached_blocks_and_discards_below_in_one_call() {
    let (below, mem) = counted(32);
    let g = below.geometry();
    // A write delay far beyond the test, so that the rewrite of block 2 is
    // still dirty when the discard comes (with none, its upload could land
    // before the discard and count as a write).
    let bs = u64::from(g.block_size());
    let delayed = s3block_cache::CacheConfig::builder()
        .cache_size(32 * bs)
        .max_dirty(16 * bs)
        .write_delay(Duration::from_secs(3600))
        .read_ahead(0)
        .upload_concurrency(4)
        .build();
    let cache = BlockCache::new(Arc::clone(&below), delayed).unwrap();
    for b in 0..10 {
        cache.write_block(BlockId(b), block_data(&g, b, 1)).await.unwrap();
    }
    cache.flush().await.unwrap();
    // Block 2 dirty again when the discard comes: the new data is dropped too.
    cache.write_block(BlockId(2), block_data(&g, 2, 2)).await.unwrap();
    below.reset();
    cache.discard(2..8).await.unwrap();
    assert_eq!(below.counts().discards, 1);
    for b in 2..8 {
        assert!(cache.read_block(BlockId(b)).await.unwrap().iter().all(|&x| x == 0), "block {b}");
    }
    cache.flush().await.unwrap();
    assert_eq!(below.counts().reads, 0);
    assert_eq!(below.counts().writes, 0);
    assert_eq!(mem.stored_blocks(), 4);
    cache.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn uploads_run_in_parallel_within_the_pool_size() {
    let mem = Arc::new(MemoryDevice::new(geometry(64)));
    let slow = FlakyDevice::new(Arc::clone(&mem), 0.0, 1).with_latency(
        Duration::from_millis(10),
        0.0,
        Duration::ZERO,
    );
    let below = Arc::new(CountingDevice::new(slow));
    let g = below.geometry();
    let cfg = config(&g, 64, 64).to_builder().upload_concurrency(3).build();
    let cache = BlockCache::new(Arc::clone(&below), cfg).unwrap();
    for b in 0..30 {
        cache.write_block(BlockId(b), block_data(&g, b, 1)).await.unwrap();
    }
    cache.flush().await.unwrap();
    let c = below.counts();
    assert_eq!(c.writes, 30);
    assert_eq!(c.max_concurrent_writes, 3, "{c:?}");
    cache.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn fetches_stay_within_the_fetch_concurrency_and_the_waits_are_counted() {
    let mem = Arc::new(MemoryDevice::new(geometry(64)));
    let g = mem.geometry();
    for b in 0..40 {
        mem.write_block(BlockId(b), block_data(&g, b, 3)).await.unwrap();
    }
    let slow = FlakyDevice::new(Arc::clone(&mem), 0.0, 1).with_latency(
        Duration::from_millis(10),
        0.0,
        Duration::ZERO,
    );
    let below = Arc::new(CountingDevice::new(slow));
    let cfg = config(&g, 64, 32).to_builder().fetch_concurrency(3).build();
    let cache = BlockCache::new(Arc::clone(&below), cfg).unwrap();
    // One read of 30 missing blocks, and 10 single-block reads beside it.
    let bs = u64::from(g.block_size());
    let (wide, singles) = tokio::join!(cache.read_at(0, 30 * g.block_len()), async {
        let reads = (30..40).map(|b| cache.read_block(BlockId(b)));
        futures::future::join_all(reads).await
    });
    let wide = wide.unwrap();
    for b in 0..30u32 {
        let at = (u64::from(b) * bs) as usize;
        assert_eq!(&wide[at..at + g.block_len()], &block_data(&g, b, 3)[..], "block {b}");
    }
    for (b, data) in (30..40).zip(singles) {
        assert_eq!(data.unwrap(), block_data(&g, b, 3), "block {b}");
    }
    let c = below.counts();
    assert_eq!(c.reads, 40, "{c:?}");
    assert_eq!(c.max_concurrent_reads, 3, "{c:?}");
    let s = cache.stats();
    assert_eq!((s.misses, s.fetch_waits), (40, 37), "{s}");
    assert!(s.to_string().contains("fetch waits"), "{s}");
    cache.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_hits_misses_and_store_requests_and_reset() {
    let (below, _mem) = counted(16);
    let g = below.geometry();
    let requests = Arc::new(s3block_core::RequestCounters::default());
    let cfg = config(&g, 8, 4).to_builder().counters(Arc::clone(&requests)).build();
    let cache = BlockCache::new(Arc::clone(&below), cfg).unwrap();
    cache.write_block(BlockId(1), block_data(&g, 1, 1)).await.unwrap();
    cache.read_block(BlockId(1)).await.unwrap();
    cache.read_block(BlockId(1)).await.unwrap();
    cache.read_block(BlockId(2)).await.unwrap(); // a miss, found absent
    cache.read_block(BlockId(2)).await.unwrap(); // now a zero hit
    requests.add_gets(1);
    requests.add_puts(1);
    cache.flush().await.unwrap();
    let s = cache.stats();
    assert_eq!((s.hits, s.misses, s.zero_hits, s.uploads), (2, 1, 1, 1), "{s}");
    assert_eq!(s.upload_starts.total(), 1, "{s}");
    assert_eq!((s.dirty_blocks, s.resident_blocks, s.resident_bytes), (0, 1, 512), "{s}");
    assert_eq!(s.requests.map(|r| (r.gets, r.puts)), Some((1, 1)));
    let text = s.to_string();
    assert!(text.contains("  hits          2 ") && text.contains("  misses        1 "), "{text}");
    assert!(text.contains("  zero blocks   1 "), "{text}");
    assert!(text.contains("1 GET, 1 PUT"), "{text}");
    cache.reset_stats();
    let s = cache.stats();
    assert_eq!((s.hits, s.misses, s.uploads), (0, 0, 0));
    assert_eq!(s.upload_starts, Default::default(), "{s}");
    assert_eq!(s.requests.map(|r| r.gets), Some(0));
    assert_eq!(s.resident_bytes, 512, "a reset keeps the cache's contents");
    cache.close().await.unwrap();
}
