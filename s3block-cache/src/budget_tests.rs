#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use s3block_core::{BlockDevice, BlockDeviceExt, BlockId, Geometry, MemoryDevice};

use super::*;
use crate::CacheConfig;
use crate::testing::GatedDevice;

type Gated = Arc<GatedDevice<MemoryDevice>>;

/// A cache of `block_size`-byte blocks over a gated 8 MiB memory device,
/// joined to `budget` with the share it makes room for.
async fn member(budget: &Arc<CacheBudget>, block_size: u32) -> (Arc<BlockCache<Gated>>, Gated) {
    let share = budget.make_room(u64::from(block_size)).await.unwrap();
    let device =
        Arc::new(GatedDevice::new(MemoryDevice::new(Geometry::new(8 << 20, u64::from(block_size)).unwrap())));
    let config = CacheConfig::builder()
        .cache_size(share.cache_size)
        .max_dirty(share.max_dirty)
        .write_delay(Duration::ZERO)
        .upload_concurrency(4)
        .build();
    let cache = Arc::new(BlockCache::new(device.clone(), config).unwrap());
    cache.join_budget(budget);
    (cache, device)
}

fn resident<D: BlockDevice + 'static>(cache: &BlockCache<D>) -> u64 {
    cache.shared().lock().resident
}

/// Several caches written and read at once, one joining and one leaving
/// meanwhile: the bytes they hold together never exceed the budget, and
/// every cache reads back what was written to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caches_together_never_hold_more_than_the_budget() {
    let budget = CacheBudget::new(1 << 20, 512 << 10, 4);
    let mut caches = Vec::new();
    for block_size in [16 << 10, 32 << 10, 64 << 10] {
        caches.push(member(&budget, block_size).await.0);
    }
    assert_eq!(budget.members(), 3);
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let all: Arc<std::sync::Mutex<Vec<Arc<BlockCache<Gated>>>>> = Arc::new(std::sync::Mutex::new(caches));
    let watcher = {
        let (all, peak) = (all.clone(), peak.clone());
        tokio::spawn(async move {
            loop {
                let sum: u64 = all.lock().unwrap().iter().map(|c| resident(c)).sum();
                peak.fetch_max(sum, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        })
    };
    let writers: Vec<_> = all
        .lock()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, cache)| {
            let cache = cache.clone();
            tokio::spawn(async move {
                for round in 0..3u8 {
                    for n in 0..64u64 {
                        let data = Bytes::from(vec![i as u8 * 16 + round + 1; 24 << 10]);
                        cache.write_at((n * 96) << 10, data).await.unwrap();
                    }
                }
                cache.flush().await.unwrap();
                for n in 0..64u64 {
                    let got = cache.read_at((n * 96) << 10, 24 << 10).await.unwrap();
                    assert!(got.iter().all(|&b| b == i as u8 * 16 + 3), "cache {i} at {n}");
                }
                cache.check_invariants().unwrap();
            })
        })
        .collect();
    // A fourth joins while they write: the others shrink first.
    let (fourth, _) = member(&budget, 128 << 10).await;
    assert_eq!(budget.members(), 4);
    for cache in all.lock().unwrap().iter() {
        assert!(cache.stats().cache_size <= 256 << 10, "{:?}", cache.stats().cache_size);
    }
    all.lock().unwrap().push(fourth.clone());
    fourth.write_at(0, Bytes::from(vec![9u8; 1 << 20])).await.unwrap();
    for w in writers {
        w.await.unwrap();
    }
    // It leaves: the others grow again.
    fourth.close().await.unwrap();
    fourth.leave_budget();
    assert_eq!(budget.members(), 3);
    assert_eq!(all.lock().unwrap()[0].stats().cache_size, (1 << 20) / 3);
    watcher.abort();
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    assert!(peak <= 1 << 20, "the caches held {peak} bytes together, above the 1 MiB budget");
    assert!(peak > 0);
}

/// One cache whose uploads hang holds all its dirty bytes and as many
/// upload slots as it may: another cache still writes, flushes and reads,
/// and a new one can still join (the stuck one's share shrinks once its
/// uploads end).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_holding_all_its_dirty_bytes_stalls_no_other() {
    // Shares of 512K, all of it dirty if need be.
    let budget = CacheBudget::new(1 << 20, 1 << 20, 4);
    let (stuck, gate) = member(&budget, 64 << 10).await;
    let (free, _) = member(&budget, 64 << 10).await;
    for n in 0..9 {
        gate.hold(BlockId(n));
    }
    // Eight blocks fill its 512K dirty share; the ninth writer waits.
    let writer = {
        let stuck = stuck.clone();
        tokio::spawn(async move {
            for n in 0..9u64 {
                stuck.write_at(n << 16, Bytes::from(vec![7u8; 64 << 10])).await.unwrap();
            }
        })
    };
    for n in 0..3 {
        gate.wait_arrived(BlockId(n), 1).await;
    }
    assert!(!writer.is_finished());
    assert_eq!(stuck.stats().uploads_in_flight, 3, "it may take all the slots but one");
    tokio::time::timeout(Duration::from_secs(10), async {
        for n in 0..16u64 {
            free.write_at(n << 16, Bytes::from(vec![n as u8 + 1; 64 << 10])).await.unwrap();
        }
        free.flush().await.unwrap();
        for n in 0..16u64 {
            assert!(free.read_at(n << 16, 64 << 10).await.unwrap().iter().all(|&b| b == n as u8 + 1));
        }
    })
    .await
    .expect("the free cache waited on the stuck one");
    // A third joins only once the stuck cache fits its smaller share.
    let joining = tokio::spawn({
        let budget = budget.clone();
        async move { member(&budget, 64 << 10).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!joining.is_finished(), "joined while the stuck cache held more than its new share");
    for n in 0..9 {
        gate.release(BlockId(n));
    }
    writer.await.unwrap();
    let (third, _) = tokio::time::timeout(Duration::from_secs(10), joining).await.unwrap().unwrap();
    stuck.flush().await.unwrap();
    let sum = resident(&stuck) + resident(&free) + resident(&third);
    assert!(sum <= 1 << 20, "{sum}");
    assert!(resident(&stuck) <= (1 << 20) / 3);
}

#[test]
fn a_share_smaller_than_a_block_is_refused_naming_the_figures() {
    let budget = CacheBudget::new(1 << 20, 512 << 10, 4);
    let err = budget.share_of(3, 256 << 10).unwrap_err().to_string();
    assert!(err.contains("3 volume(s)") && err.contains("256K") && err.contains("--cache-size"), "{err}");
    assert_eq!(
        budget.share_of(2, 256 << 10).unwrap(),
        Share { cache_size: 512 << 10, max_dirty: 256 << 10, disk_size: None, disk_dirty: None }
    );
}

#[test]
fn a_disk_total_is_shared_equally_and_a_share_below_four_segments_is_refused() {
    let budget = CacheBudget::with_disk(4 << 20, 2 << 20, 4, 96 << 20, Some(30 << 20));
    let share = budget.share_of(3, 64 << 10).unwrap();
    assert_eq!(
        share,
        Share {
            cache_size: (4 << 20) / 3,
            max_dirty: (2 << 20) / 3,
            disk_size: Some(32 << 20),
            disk_dirty: Some(10 << 20)
        }
    );
    // Without --disk-max-dirty each tier keeps its default (half its share).
    let budget = CacheBudget::with_disk(4 << 20, 2 << 20, 4, 64 << 20, None);
    assert_eq!(budget.share_of(4, 64 << 10).unwrap().disk_size, Some(16 << 20));
    assert_eq!(budget.share_of(4, 64 << 10).unwrap().disk_dirty, None);
    // 64M in five is 12.8M, less than four 4M segments.
    let err = budget.share_of(5, 64 << 10).unwrap_err().to_string();
    assert!(
        err.contains("--disk-cache-size 64M") && err.contains("5 volume(s)") && err.contains("16M"),
        "{err}"
    );
    // A dirty total too small for one block each.
    let budget = CacheBudget::with_disk(4 << 20, 2 << 20, 4, 64 << 20, Some(100 << 10));
    let err = budget.share_of(2, 64 << 10).unwrap_err().to_string();
    assert!(err.contains("--disk-max-dirty") && err.contains("2 volume(s)"), "{err}");
}
