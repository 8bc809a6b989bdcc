//! Write-back, fetch and memory behaviour, with requests held in flight.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{block_data, config, geometry, pattern, settle};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use s3block_cache::testing::{CountingDevice, FlakyDevice, GatedDevice};
use s3block_cache::{BlockCache, CacheStats};
use s3block_core::{Backoff, BlockDevice, BlockDeviceExt, BlockId, Error, MemoryDevice};
use tokio::time::{Instant, timeout};

type Stack = Arc<GatedDevice<Arc<CountingDevice<Arc<MemoryDevice>>>>>;

fn stack(blocks: u64) -> (Stack, Arc<CountingDevice<Arc<MemoryDevice>>>, Arc<MemoryDevice>) {
    let mem = Arc::new(MemoryDevice::new(geometry(blocks)));
    let counted = Arc::new(CountingDevice::new(Arc::clone(&mem)));
    (Arc::new(GatedDevice::new(Arc::clone(&counted))), counted, mem)
}

const SOON: Duration = Duration::from_secs(5);

#[tokio::test(start_paused = true)]
async fn concurrent_misses_on_one_block_make_one_get() {
    let (gated, counted, mem) = stack(16);
    let g = gated.geometry();
    mem.write_block(BlockId(3), block_data(&g, 3, 1)).await.unwrap();
    let cache = Arc::new(BlockCache::new(Arc::clone(&gated), config(&g, 8, 4)).unwrap());
    gated.hold(BlockId(3));
    let readers: Vec<_> = (0..10)
        .map(|i| {
            let cache = Arc::clone(&cache);
            tokio::spawn(async move {
                if i % 2 == 0 {
                    cache.read_block(BlockId(3)).await
                } else {
                    cache.read_partial(BlockId(3), 100, 50).await
                }
            })
        })
        .collect();
    timeout(SOON, gated.wait_arrived(BlockId(3), 1)).await.unwrap();
    settle().await;
    // Every reader is waiting, on the one fetch in flight.
    assert_eq!((cache.stats().misses, gated.arrived(BlockId(3))), (10, 1));
    gated.release(BlockId(3));
    let want = block_data(&g, 3, 1);
    for (i, r) in readers.into_iter().enumerate() {
        let got = r.await.unwrap().unwrap();
        let want = if i % 2 == 0 { want.clone() } else { want.slice(100..150) };
        assert_eq!(got, want, "reader {i}");
    }
    assert_eq!(counted.reads_of(BlockId(3)), 1);
    // One fetch; each of the ten reads waited for it, so each is a miss.
    let s = cache.stats();
    assert_eq!((s.misses, s.reads()), (10, 10), "{s}");
    cache.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_fetch_holds_its_room_in_the_cache_from_its_start() {
    let (gated, counted, mem) = stack(16);
    let g = gated.geometry();
    let bs = u64::from(g.block_size());
    for b in 0..16 {
        mem.write_block(BlockId(b), block_data(&g, b, 1)).await.unwrap();
    }
    let cache = Arc::new(BlockCache::new(Arc::clone(&gated), config(&g, 4, 2)).unwrap());
    for b in 0..4 {
        assert_eq!(cache.read_block(BlockId(b)).await.unwrap(), block_data(&g, b, 1), "block {b}");
    }
    assert_eq!(cache.stats().resident_bytes, 4 * bs);
    // Two fetches in flight: their buffers fill beside the cached blocks,
    // so the two blocks read longest ago leave as the fetches start.
    gated.hold(BlockId(8));
    gated.hold(BlockId(9));
    let readers: Vec<_> = [8, 9]
        .into_iter()
        .map(|b| {
            let cache = Arc::clone(&cache);
            tokio::spawn(async move { cache.read_block(BlockId(b)).await })
        })
        .collect();
    timeout(SOON, gated.wait_arrived(BlockId(8), 1)).await.unwrap();
    timeout(SOON, gated.wait_arrived(BlockId(9), 1)).await.unwrap();
    let s = cache.stats();
    assert_eq!((s.resident_blocks, s.resident_bytes), (2, 2 * bs), "{s}");
    cache.check_invariants().unwrap();
    // They land in the room they held: nothing else leaves.
    gated.release(BlockId(8));
    gated.release(BlockId(9));
    for (r, b) in readers.into_iter().zip([8, 9]) {
        assert_eq!(r.await.unwrap().unwrap(), block_data(&g, b, 1), "block {b}");
    }
    let s = cache.stats();
    assert_eq!((s.resident_blocks, s.resident_bytes), (4, 4 * bs), "{s}");
    cache.check_invariants().unwrap();
    for b in [2, 3, 8, 9, 0] {
        assert_eq!(cache.read_block(BlockId(b)).await.unwrap(), block_data(&g, b, 1), "block {b}");
    }
    let fetches = [0, 2, 3, 8, 9].map(|b| counted.reads_of(BlockId(b)));
    assert_eq!(fetches, [2, 1, 1, 1, 1], "blocks 0 and 1 left for the fetches, 2 and 3 stayed");
    cache.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_read_ahead_fetch_that_ends_asks_for_the_next_block_while_the_reader_waits() {
    let (gated, counted, mem) = stack(32);
    let g = gated.geometry();
    for b in 0..32 {
        mem.write_block(BlockId(b), block_data(&g, b, 1)).await.unwrap();
    }
    // Two read-ahead fetches in flight at once, four blocks ahead at most.
    let cfg = config(&g, 32, 8).to_builder().read_ahead(2 * u64::from(g.block_size())).build();
    let cache = Arc::new(BlockCache::new(Arc::clone(&gated), cfg).unwrap());
    for b in [4, 5, 6] {
        gated.hold(BlockId(b));
    }
    for b in 0..4 {
        assert_eq!(cache.read_block(BlockId(b)).await.unwrap(), block_data(&g, b, 1), "block {b}");
    }
    // Blocks 4 and 5 are in flight ahead of the reader, which now waits
    // for block 4: the window is full, nothing more is asked for.
    let reader = {
        let cache = Arc::clone(&cache);
        tokio::spawn(async move { cache.read_block(BlockId(4)).await })
    };
    timeout(SOON, gated.wait_arrived(BlockId(5), 1)).await.expect("block 5 fetched ahead");
    settle().await;
    assert_eq!(gated.arrived(BlockId(6)), 0, "two fetches in flight already");
    // Block 5's fetch ends while the reader still waits for block 4: its
    // request goes to the next blocks of the window, 6 (held) then 7.
    gated.release(BlockId(5));
    timeout(SOON, gated.wait_arrived(BlockId(6), 1)).await.expect("block 6 asked for when block 5 arrived");
    timeout(SOON, gated.wait_arrived(BlockId(7), 1)).await.expect("block 7 asked for when block 6 was held");
    settle().await;
    assert!(!reader.is_finished());
    // Four blocks ahead of block 4 at most: 5 to 8.
    assert_eq!((counted.reads_of(BlockId(8)), gated.arrived(BlockId(9))), (1, 0));
    gated.release(BlockId(4));
    gated.release(BlockId(6));
    assert_eq!(reader.await.unwrap().unwrap(), block_data(&g, 4, 1));
    for b in 5..9 {
        assert_eq!(cache.read_block(BlockId(b)).await.unwrap(), block_data(&g, b, 1), "block {b}");
        assert_eq!(counted.reads_of(BlockId(b)), 1, "block {b} fetched once");
    }
    cache.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_during_the_upload_of_its_block_is_not_lost() {
    let (gated, counted, mem) = stack(16);
    let g = gated.geometry();
    let cache = Arc::new(BlockCache::new(Arc::clone(&gated), config(&g, 8, 4)).unwrap());
    let (v1, v2) = (block_data(&g, 1, 1), block_data(&g, 1, 2));
    gated.hold(BlockId(1));
    cache.write_block(BlockId(1), v1.clone()).await.unwrap();
    let flusher = tokio::spawn({
        let cache = Arc::clone(&cache);
        async move { cache.flush().await }
    });
    timeout(SOON, gated.wait_arrived(BlockId(1), 1)).await.unwrap();
    // The upload of v1 is in flight; this write must not wait for it.
    timeout(SOON, cache.write_block(BlockId(1), v2.clone())).await.unwrap().unwrap();
    assert_eq!(cache.read_block(BlockId(1)).await.unwrap(), v2);
    gated.release(BlockId(1));
    // The flush waited for what was dirty at its call: v1.
    timeout(SOON, flusher).await.unwrap().unwrap().unwrap();
    cache.flush().await.unwrap();
    assert_eq!(mem.read_block(BlockId(1)).await.unwrap(), v2);
    assert_eq!(counted.counts().writes, 2);
    assert_eq!(cache.stats().dirty_blocks, 0);
    cache.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_dirty_limit_makes_writers_wait_not_fail() {
    let (gated, _counted, mem) = stack(16);
    let g = gated.geometry();
    let cache = Arc::new(BlockCache::new(Arc::clone(&gated), config(&g, 8, 2)).unwrap());
    gated.hold(BlockId(0));
    gated.hold(BlockId(1));
    cache.write_block(BlockId(0), block_data(&g, 0, 1)).await.unwrap();
    cache.write_block(BlockId(1), block_data(&g, 1, 1)).await.unwrap();
    let writer = tokio::spawn({
        let cache = Arc::clone(&cache);
        let data = block_data(&g, 2, 1);
        async move { cache.write_block(BlockId(2), data).await }
    });
    // However long it takes: nothing but room lets the writer on.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert!(!writer.is_finished(), "the third dirty block waits for room");
    assert_eq!(cache.stats().write_waits, 1);
    assert_eq!(cache.stats().dirty_bytes, 2 * u64::from(g.block_size()));
    // Rewriting a block already dirty needs no room.
    timeout(SOON, cache.write_block(BlockId(0), block_data(&g, 0, 2))).await.unwrap().unwrap();
    gated.release(BlockId(1));
    timeout(SOON, writer).await.unwrap().unwrap().unwrap();
    gated.release(BlockId(0));
    cache.flush().await.unwrap();
    for (b, fill) in [(0, 2), (1, 1), (2, 1)] {
        assert_eq!(mem.read_block(BlockId(b)).await.unwrap(), block_data(&g, b, fill), "block {b}");
    }
    cache.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_block_rewritten_while_its_prompt_upload_is_in_flight_waits_for_the_delay() {
    let (gated, counted, mem) = stack(16);
    let g = gated.geometry();
    let delay = Duration::from_secs(60);
    let cfg = config(&g, 8, 4).to_builder().write_delay(delay).build();
    let cache = Arc::new(BlockCache::new(Arc::clone(&gated), cfg).unwrap());
    gated.hold(BlockId(3));
    cache.write_block(BlockId(3), block_data(&g, 3, 1)).await.unwrap();
    // Written whole: its upload starts at once, and is held.
    timeout(SOON, gated.wait_arrived(BlockId(3), 1)).await.unwrap();
    cache.write_block(BlockId(3), block_data(&g, 3, 2)).await.unwrap();
    let released = Instant::now();
    gated.release(BlockId(3));
    settle().await;
    assert_eq!(counted.counts().writes, 1);
    assert_eq!(cache.stats().dirty_blocks, 1, "the rewrite came after the upload's snapshot");
    tokio::time::advance(delay - Duration::from_millis(1)).await;
    settle().await;
    assert_eq!(counted.counts().writes, 1, "a rewrite waits for the delay, from the end of the upload");
    tokio::time::advance(Duration::from_millis(1)).await;
    settle().await;
    assert_eq!(released.elapsed(), delay);
    assert_eq!(counted.counts().writes, 2);
    assert_eq!(mem.read_block(BlockId(3)).await.unwrap(), block_data(&g, 3, 2));
    cache.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_write_does_not_wait_for_the_block_to_be_fetched() {
    let (gated, counted, mem) = stack(16);
    let g = gated.geometry();
    let old = block_data(&g, 5, 1);
    mem.write_block(BlockId(5), old.clone()).await.unwrap();
    // A long write delay: no upload (which would fetch the block) starts by itself.
    let cfg = config(&g, 8, 4).to_builder().write_delay(Duration::from_secs(60)).build();
    let cache = Arc::new(BlockCache::new(Arc::clone(&gated), cfg).unwrap());
    gated.hold(BlockId(5));
    timeout(SOON, cache.write_partial(BlockId(5), 10, Bytes::from_static(b"hello"))).await.unwrap().unwrap();
    timeout(SOON, cache.write_partial(BlockId(5), 300, Bytes::from_static(b"world"))).await.unwrap().unwrap();
    // What was written reads back without a fetch.
    assert_eq!(&cache.read_partial(BlockId(5), 11, 3).await.unwrap()[..], b"ell");
    assert_eq!(gated.arrived(BlockId(5)), 0);
    // Reading the rest fetches the block once and merges.
    let reader = tokio::spawn({
        let cache = Arc::clone(&cache);
        async move { cache.read_block(BlockId(5)).await }
    });
    timeout(SOON, gated.wait_arrived(BlockId(5), 1)).await.unwrap();
    gated.release(BlockId(5));
    let mut want = old.to_vec();
    want[10..15].copy_from_slice(b"hello");
    want[300..305].copy_from_slice(b"world");
    assert_eq!(&timeout(SOON, reader).await.unwrap().unwrap().unwrap()[..], &want[..]);
    cache.flush().await.unwrap();
    assert_eq!(&mem.read_block(BlockId(5)).await.unwrap()[..], &want[..]);
    assert_eq!(counted.reads_of(BlockId(5)), 1);
    assert_eq!(counted.counts().writes, 1);
    cache.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_write_is_merged_at_upload_time() {
    let (gated, counted, mem) = stack(16);
    let g = gated.geometry();
    let old = block_data(&g, 7, 1);
    mem.write_block(BlockId(7), old.clone()).await.unwrap();
    let cache = BlockCache::new(Arc::clone(&gated), config(&g, 8, 4)).unwrap();
    cache.write_partial(BlockId(7), 0, Bytes::from_static(b"abc")).await.unwrap();
    cache.flush().await.unwrap();
    let mut want = old.to_vec();
    want[..3].copy_from_slice(b"abc");
    assert_eq!(&mem.read_block(BlockId(7)).await.unwrap()[..], &want[..]);
    assert_eq!(counted.counts().reads, 1);
    cache.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn flush_reports_failed_uploads_and_keeps_them_dirty() {
    let mem = Arc::new(MemoryDevice::new(geometry(16)));
    let flaky = Arc::new(FlakyDevice::new(Arc::clone(&mem), 1.0, 7));
    let g = flaky.geometry();
    let cache = BlockCache::new(Arc::clone(&flaky), config(&g, 8, 4)).unwrap();
    cache.write_block(BlockId(4), block_data(&g, 4, 1)).await.unwrap();
    cache.write_block(BlockId(6), block_data(&g, 6, 1)).await.unwrap();
    match timeout(SOON, cache.flush()).await.unwrap() {
        Err(Error::WriteBack { count, first, source }) => {
            assert_eq!(count, 2);
            assert!(first == BlockId(4) || first == BlockId(6), "{first}");
            assert!(source.is_transient(), "{source}");
            assert!(source.to_string().contains("injected write failure"), "{source}");
        }
        other => panic!("expected a write-back error, got {other:?}"),
    }
    let s = cache.stats();
    assert_eq!(s.dirty_blocks, 2, "{s}");
    assert!(s.upload_errors >= 2, "{s}");
    assert_eq!(mem.stored_blocks(), 0);
    // A second flush tries again at once: both blocks, the clock not moving.
    let (retries, at) = (cache.stats().retries, Instant::now());
    assert!(cache.flush().await.is_err());
    assert_eq!(cache.stats().retries, retries + 2, "{}", cache.stats());
    assert_eq!(Instant::now(), at, "the flush did not wait for the backoff");
    // Closing fails the same way, and refuses writes from then on.
    assert!(matches!(cache.close().await, Err(Error::WriteBack { count: 2, .. })));
    assert!(cache.write_block(BlockId(1), block_data(&g, 1, 1)).await.is_err(), "closed");
    assert_eq!(cache.stats().dirty_blocks, 2);
    flaky.set_error_rate(0.0);
    cache.close().await.unwrap();
    assert_eq!(mem.stored_blocks(), 2);
    assert_eq!(cache.stats().dirty_blocks, 0);
    // Reads still work after close.
    assert_eq!(cache.read_block(BlockId(4)).await.unwrap(), block_data(&g, 4, 1));
}

/// A failed upload waits out its backoff (the schedule's seeded delays,
/// exactly) before it is tried again, however often it fails.
#[tokio::test(start_paused = true)]
async fn a_failed_upload_is_tried_again_at_its_backoff_not_before() {
    let mem = Arc::new(MemoryDevice::new(geometry(16)));
    let flaky = Arc::new(FlakyDevice::new(Arc::clone(&mem), 1.0, 7));
    let g = flaky.geometry();
    let schedule = Backoff::new(Duration::from_millis(500), Duration::from_secs(30)).with_seed(5);
    let mut rng = schedule.rng();
    let waits: Vec<Duration> = (1..=3).map(|retry| schedule.delay(retry, &mut rng)).collect();
    let ms = Duration::from_millis(1);
    assert!(waits.iter().all(|w| *w > ms), "the seed draws waits to look inside: {waits:?}");
    let cfg = config(&g, 8, 4).to_builder().upload_retry(schedule).build();
    let cache = BlockCache::new(Arc::clone(&flaky), cfg).unwrap();
    cache.write_block(BlockId(4), block_data(&g, 4, 1)).await.unwrap();
    settle().await;
    assert_eq!((cache.stats().upload_errors, cache.stats().retries), (1, 0));
    for (i, wait) in waits.iter().enumerate() {
        if i == 2 {
            flaky.set_error_rate(0.0);
        }
        tokio::time::advance(*wait - ms).await;
        settle().await;
        assert_eq!(cache.stats().retries, i as u64, "retry {} not before its wait of {wait:?}", i + 1);
        tokio::time::advance(ms).await;
        settle().await;
        assert_eq!(cache.stats().retries, i as u64 + 1, "retry {} at its wait of {wait:?}", i + 1);
    }
    let s = cache.stats();
    assert_eq!((s.upload_errors, s.uploads, s.dirty_blocks), (3, 1, 0), "{s}");
    let started = s.upload_starts;
    assert_eq!((started.written_whole, started.total()), (1, 1), "a retry is not a start: {s}");
    assert_eq!(mem.read_block(BlockId(4)).await.unwrap(), block_data(&g, 4, 1));
    cache.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn resident_bytes_stay_within_the_cache_size() {
    let mem = Arc::new(MemoryDevice::new(geometry(256)));
    let slow = Arc::new(FlakyDevice::new(Arc::clone(&mem), 0.0, 3).with_latency(
        Duration::from_micros(300),
        0.01,
        Duration::from_millis(5),
    ));
    let g = slow.geometry();
    let cfg = config(&g, 16, 6).to_builder().read_ahead(8 * u64::from(g.block_size())).build();
    let cache = Arc::new(BlockCache::new(Arc::clone(&slow), cfg).unwrap());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = tokio::spawn({
        let (cache, stop) = (Arc::clone(&cache), Arc::clone(&stop));
        async move {
            let mut samples = 0u64;
            let mut peak = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let s = cache.stats();
                assert!(s.resident_bytes <= s.cache_size, "{s}");
                assert!(s.dirty_bytes <= 6 * 512, "{s}");
                if let Err(broken) = cache.check_invariants() {
                    panic!("the cache's bookkeeping is broken: {broken}\n{s}");
                }
                peak = peak.max(s.resident_bytes);
                samples += 1;
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            (samples, peak)
        }
    });
    let workers: Vec<_> = (0..4u64)
        .map(|seed| {
            let cache = Arc::clone(&cache);
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(seed);
                let size = cache.geometry().size();
                for _ in 0..300 {
                    let len = rng.random_range(1..2048u64);
                    let at = rng.random_range(0..size - len);
                    if rng.random_bool(0.5) {
                        cache.read_at(at, len as usize).await.unwrap();
                    } else if rng.random_bool(0.2) {
                        // A sequential stretch to trigger read-ahead.
                        let start = rng.random_range(0..200u64) * 512;
                        for b in 0..12 {
                            cache.read_at(start + b * 512, 512).await.unwrap();
                        }
                    } else {
                        cache.write_at(at, pattern(len as usize, at)).await.unwrap();
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (samples, peak) = sampler.await.unwrap();
    assert!(samples > 10);
    // The workload is larger than the cache: it filled up.
    assert!(peak > 8 * 512, "peak {peak}");
    cache.close().await.unwrap();
    let s = cache.stats();
    assert!(s.read_ahead_issued > 0, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_in_flight_blocks_no_read() {
    let (gated, _counted, mem) = stack(16);
    let g = gated.geometry();
    mem.write_block(BlockId(2), block_data(&g, 2, 1)).await.unwrap();
    let cache = Arc::new(BlockCache::new(Arc::clone(&gated), config(&g, 8, 4)).unwrap());
    gated.hold(BlockId(1));
    cache.write_block(BlockId(1), block_data(&g, 1, 1)).await.unwrap();
    timeout(SOON, gated.wait_arrived(BlockId(1), 1)).await.unwrap();
    // Block 1 is uploading: a miss on block 2 and a read of block 1 itself go on.
    assert_eq!(timeout(SOON, cache.read_block(BlockId(2))).await.unwrap().unwrap(), block_data(&g, 2, 1));
    assert_eq!(timeout(SOON, cache.read_block(BlockId(1))).await.unwrap().unwrap(), block_data(&g, 1, 1));
    assert_eq!(cache.stats().uploads_in_flight, 1);
    gated.release(BlockId(1));
    // close() flushes what is dirty.
    cache.write_block(BlockId(3), block_data(&g, 3, 1)).await.unwrap();
    cache.close().await.unwrap();
    assert_eq!(mem.read_block(BlockId(3)).await.unwrap(), block_data(&g, 3, 1));
    assert_eq!(mem.read_block(BlockId(1)).await.unwrap(), block_data(&g, 1, 1));
}

#[tokio::test(start_paused = true)]
async fn a_discard_waits_for_an_upload_in_its_range_so_nothing_comes_back() {
    let (gated, counted, mem) = stack(16);
    let g = gated.geometry();
    let cache = Arc::new(BlockCache::new(Arc::clone(&gated), config(&g, 8, 4)).unwrap());
    gated.hold(BlockId(4));
    cache.write_block(BlockId(4), block_data(&g, 4, 1)).await.unwrap();
    timeout(SOON, gated.wait_arrived(BlockId(4), 1)).await.unwrap();
    let discard = tokio::spawn({
        let cache = Arc::clone(&cache);
        async move { cache.discard(0..8).await }
    });
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert!(!discard.is_finished(), "the discard waits for the upload in flight");
    assert_eq!(counted.counts().discards, 0, "nothing discarded below while the upload is in flight");
    // Reads in the range during the discard see zeros.
    assert!(cache.read_block(BlockId(5)).await.unwrap().iter().all(|&b| b == 0));
    gated.release(BlockId(4));
    timeout(SOON, discard).await.unwrap().unwrap().unwrap();
    cache.flush().await.unwrap();
    assert_eq!(mem.stored_blocks(), 0, "the upload landed before the discard, not after");
    assert!(cache.read_block(BlockId(4)).await.unwrap().iter().all(|&b| b == 0));
    assert_eq!(counted.counts().discards, 1);
    cache.close().await.unwrap();
}

/// A volume of `blocks` 64 KiB blocks, each stored with non-zero bytes, and
/// the request counter over it.
async fn filled_64k_blocks(
    blocks: u32,
) -> (s3block_core::Geometry, Arc<MemoryDevice>, Arc<CountingDevice<Arc<MemoryDevice>>>) {
    let g = s3block_core::Geometry::with_blocks(blocks.into(), 64 * 1024).expect("valid test geometry");
    let mem = Arc::new(MemoryDevice::new(g));
    for b in 0..blocks {
        mem.write_block(BlockId(b), block_data(&g, b, 1)).await.expect("the memory device stores blocks");
    }
    let counted = Arc::new(CountingDevice::new(Arc::clone(&mem)));
    (g, mem, counted)
}

/// A 1 MiB cache with room for 8 whole 64 KiB blocks of dirty data, and a
/// write delay no test outlives.
fn pages_config() -> s3block_cache::CacheConfig {
    s3block_cache::CacheConfig::builder()
        .cache_size(1024 * 1024)
        .max_dirty(512 * 1024)
        .write_delay(Duration::from_secs(3600))
        .read_ahead(0)
        .upload_concurrency(4)
        .build()
}

/// Scattered small writes at a large block size: each dirty block costs the
/// pages written, so many blocks stay dirty within a dirty limit a few blocks
/// big, gathering writes; at the flush each is fetched once, merged and
/// uploaded once, and the dirty limit holds throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scattered_small_writes_cost_their_pages_not_whole_blocks() {
    let (g, mem, counted) = filled_64k_blocks(64).await;
    let cache = BlockCache::new(Arc::clone(&counted), pages_config()).unwrap();
    let mut want: Vec<Vec<u8>> = (0..64).map(|b| block_data(&g, b, 1).to_vec()).collect();
    // Two 4 KiB writes into each of 30 blocks: 60 pages, under half the
    // dirty limit, where uploads would start without the write delay.
    for round in 0..2u64 {
        for b in 0..30u64 {
            let at = (b * 7 + round * 5) % 16 * 4096;
            let data = pattern(4096, b * 10 + round);
            cache.write_at(b * 65536 + at, data.clone()).await.unwrap();
            want[b as usize][at as usize..at as usize + 4096].copy_from_slice(&data);
        }
    }
    let s = cache.stats();
    assert_eq!(s.dirty_blocks, 30, "{s}");
    assert!(s.dirty_bytes <= 256 * 1024, "{s}");
    assert_eq!((s.write_waits, s.uploads), (0, 0), "no writer waited, nothing was uploaded yet: {s}");
    assert_eq!(counted.counts().reads, 0, "a partial write does not fetch its block");
    // A read inside what was written is answered from the pages.
    let at = 3 * 65536 + (3 * 7 % 16) * 4096 + 100;
    let want3 = &want[3][at as usize - 3 * 65536..][..3996];
    assert_eq!(cache.read_at(at, 3996).await.unwrap(), want3);
    assert_eq!(counted.counts().reads, 0);
    cache.flush().await.unwrap();
    let s = cache.stats();
    assert_eq!((s.dirty_blocks, s.dirty_bytes, s.uploads), (0, 0, 30), "{s}");
    assert!(s.resident_bytes <= s.cache_size, "{s}");
    let c = counted.counts();
    assert_eq!((c.reads, c.writes), (30, 30), "one fetch and one upload per block: {c:?}");
    for b in 0..64u32 {
        assert_eq!(mem.read_block(BlockId(b)).await.unwrap(), want[b as usize], "block {b}");
    }
    cache.close().await.unwrap();
}

/// Writes one page into each of blocks 1..=70 with their uploads held at
/// the gate: dirty data passes half the dirty limit of [`pages_config`].
/// Returns the stats then.
async fn hold_past_the_high_water_mark(cache: &BlockCache<Stack>, gated: &Stack) -> CacheStats {
    for b in 1..=70u32 {
        gated.hold(BlockId(b));
        cache
            .write_partial(BlockId(b), 0, pattern(4096, b.into()))
            .await
            .expect("a write under the dirty limit");
    }
    let stats = cache.stats();
    assert!(stats.dirty_bytes > 256 * 1024, "{stats}");
    stats
}

/// Lets the uploads [`hold_past_the_high_water_mark`] held go.
fn release_held(gated: &Stack) {
    for b in 1..=70u32 {
        gated.release(BlockId(b));
    }
}

/// Above the high-water mark, a small write to a clean cached block keeps
/// only the page written instead of pinning the whole block as dirty; the
/// upload fetches the block again and stores the merge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_pressure_a_small_write_to_a_clean_block_costs_a_page() {
    let (g, mem, counted) = filled_64k_blocks(128).await;
    let gated = Arc::new(GatedDevice::new(Arc::clone(&counted)));
    let cache = BlockCache::new(Arc::clone(&gated), pages_config()).unwrap();
    // Block 0 cached whole and clean; then past half the dirty limit.
    assert_eq!(cache.read_block(BlockId(0)).await.unwrap(), block_data(&g, 0, 1));
    let before = hold_past_the_high_water_mark(&cache, &gated).await;
    cache.write_partial(BlockId(0), 8192, pattern(4096, 99)).await.unwrap();
    let after = cache.stats();
    assert_eq!(after.dirty_blocks, before.dirty_blocks + 1, "{after}");
    assert!(
        after.dirty_bytes - before.dirty_bytes < 8192,
        "one page, not the 64K block: {} more dirty bytes",
        after.dirty_bytes - before.dirty_bytes
    );
    assert!(after.resident_bytes < before.resident_bytes, "the clean copy was dropped: {after}");
    // Reads of the page hit; the rest of the block is fetched again.
    assert_eq!(cache.read_partial(BlockId(0), 8192, 4096).await.unwrap(), pattern(4096, 99));
    let mut want = block_data(&g, 0, 1).to_vec();
    want[8192..12288].copy_from_slice(&pattern(4096, 99));
    assert_eq!(cache.read_block(BlockId(0)).await.unwrap(), want);
    release_held(&gated);
    cache.flush().await.unwrap();
    assert_eq!(mem.read_block(BlockId(0)).await.unwrap(), want);
    for b in 1..=70u32 {
        let mut w = block_data(&g, b, 1).to_vec();
        w[..4096].copy_from_slice(&pattern(4096, b.into()));
        assert_eq!(mem.read_block(BlockId(b)).await.unwrap(), w, "block {b}");
    }
    cache.close().await.unwrap();
}

/// Above the high-water mark, the clean pages a block kept from its last
/// upload give way to a new write too: the dirty limit counts the new page
/// only, and the upload fetches the block, whose stored bytes hold the old
/// pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_pressure_a_write_to_a_block_with_clean_pages_costs_its_page() {
    let (g, mem, counted) = filled_64k_blocks(128).await;
    let gated = Arc::new(GatedDevice::new(Arc::clone(&counted)));
    let cache = BlockCache::new(Arc::clone(&gated), pages_config()).unwrap();
    let mut want = block_data(&g, 0, 1).to_vec();
    // Block 0: three pages written and uploaded; the entry keeps them, clean.
    for (at, seed) in [(0usize, 1u64), (4096, 2), (40960, 3)] {
        cache.write_partial(BlockId(0), at as u32, pattern(4096, seed)).await.unwrap();
        want[at..at + 4096].copy_from_slice(&pattern(4096, seed));
    }
    cache.flush().await.unwrap();
    let clean = cache.stats();
    assert_eq!(clean.dirty_blocks, 0, "{clean}");
    assert!(clean.resident_bytes >= 3 * 4096, "the pages stay cached: {clean}");
    let before = hold_past_the_high_water_mark(&cache, &gated).await;
    cache.write_partial(BlockId(0), 8192, pattern(4096, 99)).await.unwrap();
    want[8192..12288].copy_from_slice(&pattern(4096, 99));
    let after = cache.stats();
    assert_eq!(after.dirty_blocks, before.dirty_blocks + 1, "{after}");
    assert!(
        after.dirty_bytes - before.dirty_bytes < 8192,
        "one page, not the four the block would hold: {} more dirty bytes",
        after.dirty_bytes - before.dirty_bytes
    );
    // The block reads whole, old pages from below, the new from the cache.
    assert_eq!(cache.read_block(BlockId(0)).await.unwrap(), want);
    release_held(&gated);
    cache.flush().await.unwrap();
    assert_eq!(mem.read_block(BlockId(0)).await.unwrap(), want);
    cache.close().await.unwrap();
}

/// Writers waiting for room under the dirty limit are woken one at a time
/// (each upload that ends wakes one; a writer that got room wakes the next):
/// none is left asleep, also when some give up while waiting, whatever the
/// mix of whole blocks and single pages.
#[tokio::test(start_paused = true)]
async fn many_writers_waiting_for_room_all_finish() {
    let mem = Arc::new(MemoryDevice::new(geometry(256)));
    let slow = Arc::new(FlakyDevice::new(Arc::clone(&mem), 0.0, 7).with_latency(
        Duration::from_millis(20),
        0.1,
        SOON,
    ));
    let g = slow.geometry();
    let cache = Arc::new(BlockCache::new(Arc::clone(&slow), config(&g, 8, 2)).unwrap());
    let mut rng = StdRng::seed_from_u64(11);
    let mut writers = Vec::new();
    let mut expect = Vec::new();
    for w in 0..96u32 {
        let cache = Arc::clone(&cache);
        let block = w % 64;
        let whole = rng.random_bool(0.5);
        // A third of the page writers give up after a short wait, as an
        // interrupted request does; their write may or may not be applied.
        let give_up = !whole && w % 3 == 0;
        if !give_up {
            expect.push((block, whole, w));
        }
        writers.push(tokio::spawn(async move {
            let write = async {
                if whole {
                    cache.write_block(BlockId(block), block_data(&g, block, w as u8)).await
                } else {
                    cache.write_partial(BlockId(block), 128, pattern(128, w.into())).await
                }
            };
            if give_up {
                let _ = timeout(Duration::from_millis(30), write).await;
                Ok(())
            } else {
                write.await
            }
        }));
    }
    let started = Instant::now();
    for (i, w) in writers.into_iter().enumerate() {
        timeout(Duration::from_secs(600), w)
            .await
            .unwrap_or_else(|_| panic!("writer {i} never finished"))
            .unwrap()
            .unwrap();
    }
    let waits = cache.stats().write_waits;
    assert!(waits > 0, "the writers never had to wait: the test does not test the wake-ups");
    timeout(Duration::from_secs(600), cache.flush()).await.unwrap().unwrap();
    eprintln!("96 writers, {waits} waits, done in {:?} (paused time)", started.elapsed());
    // The last write of each block that did not give up is in it (writers
    // of one block run in spawn order only by chance, so only whole-block
    // writers alone on their block are checked exactly).
    for b in 0..64u32 {
        let writes: Vec<_> = expect.iter().filter(|(block, _, _)| *block == b).collect();
        if let [(_, true, w)] = writes.as_slice() {
            let got = mem.read_block(BlockId(b)).await.unwrap();
            assert_eq!(got, block_data(&g, b, *w as u8), "block {b}");
        }
    }
    cache.close().await.unwrap();
}
