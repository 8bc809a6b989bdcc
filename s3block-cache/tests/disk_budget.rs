//! Disk tiers in a [`CacheBudget`]: a tier resized at run time (its bytes
//! on disk drop, its dirty blocks kept), volumes joining and leaving a
//! budget with a disk total, and the disk tiers' uploads bounded by the
//! budget's shared upload slots.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use common::disk::{TempDir, disk_config, identity, marks, segments, wait_clean};
use s3block_cache::testing::GatedDevice;
use s3block_cache::{BlockCache, CacheBudget, CacheConfig, DiskCache, DiskCacheConfig, Durability, Share};
use s3block_core::{Allocation, BlockDevice, BlockDeviceExt, BlockId, Geometry, MemoryDevice, Result};

const BLOCK: u64 = 64 << 10;
const MIB: u64 = 1 << 20;

/// 128 MiB of 64 KiB blocks.
fn volume() -> MemoryDevice {
    MemoryDevice::new(Geometry::new(128 * MIB, BLOCK).expect("geometry"))
}

fn data(block: u32, fill: u8) -> Bytes {
    let mut v = vec![fill; BLOCK as usize];
    v[..4].copy_from_slice(&block.to_le_bytes());
    Bytes::from(v)
}

/// Bytes of the segment files in `dir`, measured on disk.
fn segment_bytes(dir: &std::path::Path) -> u64 {
    segments(dir).iter().map(|p| std::fs::metadata(p).expect("segment").len()).sum()
}

async fn open<D: BlockDevice + 'static>(lower: D, config: DiskCacheConfig) -> DiskCache<D> {
    let id = identity(&lower);
    DiskCache::open(lower, config, id, marks(None, "m")).await.expect("the disk tier opens").0
}

/// A tier of 64 MiB (4 MiB segments) written past 16 MiB, some of its
/// blocks dirty and their uploads held, is shrunk to 16 MiB: the resize
/// waits until the dirty bytes fit the new limit, then the segment files
/// on disk hold at most 16 MiB, the held blocks still read back from the
/// disk, and every one reaches the store once let through. Then it grows
/// back, and a size below four segments is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tier_shrunk_at_run_time_drops_its_bytes_and_keeps_its_dirty_blocks() {
    let dir = TempDir::new("shrink");
    let store = Arc::new(GatedDevice::new(volume()));
    let tier = Arc::new(open(Arc::clone(&store), disk_config(dir.path(), 64 * MIB, Durability::Local)).await);
    for b in 0..600u32 {
        tier.write_block(BlockId(b), data(b, 1)).await.expect("write");
    }
    wait_clean(&tier).await;
    let before = segment_bytes(dir.path());
    assert!(before > 32 * MIB, "the tier holds {before} bytes before it shrinks");
    // 100 blocks (6.3 MiB) dirty, their uploads held.
    for b in 600..700u32 {
        store.hold(BlockId(b));
        tier.write_block(BlockId(b), data(b, 2)).await.expect("write");
    }
    let resize = tokio::spawn({
        let tier = Arc::clone(&tier);
        async move { tier.resize(16 * MIB, None).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!resize.is_finished(), "shrank while 6 MiB were dirty, above the new 4 MiB dirty limit");
    // Half go through: 3.1 MiB stay dirty, under the new limit.
    for b in 600..650u32 {
        store.release(BlockId(b));
    }
    tokio::time::timeout(Duration::from_secs(20), resize).await.expect("the resize ended").unwrap().unwrap();
    let after = segment_bytes(dir.path());
    let s = tier.stats();
    println!("shrunk from {before} to {after} bytes on disk; {} dirty blocks kept", s.dirty_blocks);
    assert!(after <= 16 * MIB, "{after} bytes on disk after shrinking to 16 MiB");
    // The resize went on once the dirty bytes fit: 50 held, a few more
    // whose uploads had not ended yet.
    assert!(s.size == 16 * MIB && s.dirty_blocks >= 50, "{s:?}");
    for b in 650..700u32 {
        assert_eq!(tier.read_block(BlockId(b)).await.expect("read"), data(b, 2), "dirty block {b}");
    }
    for b in 650..700u32 {
        store.release(BlockId(b));
    }
    tier.flush().await.expect("flush");
    wait_clean(&tier).await;
    for b in 0..700u32 {
        let want = data(b, if b < 600 { 1 } else { 2 });
        assert_eq!(store.inner().read_block(BlockId(b)).await.expect("store"), want, "block {b}");
    }
    // Grows back: it holds more than 16 MiB again.
    tier.resize(64 * MIB, None).await.expect("grow");
    for b in 700..1300u32 {
        tier.write_block(BlockId(b), data(b, 3)).await.expect("write");
    }
    wait_clean(&tier).await;
    let grown = segment_bytes(dir.path());
    assert!(grown > 32 * MIB && grown <= 64 * MIB, "{grown} bytes after growing back to 64 MiB");
    // Four 4 MiB segments at least: the segment size stays.
    let err = tier.resize(12 * MIB, None).await.unwrap_err().to_string();
    assert!(err.contains("--disk-cache-size") && err.contains("16M"), "{err}");
    tier.close().await.expect("close");
}

/// A directory that holds more than the size it is opened with (a volume
/// of a multi-volume mount's share, mounted alone, or the other way round)
/// after a crash with dirty blocks opens, is reclaimed down, and uploads
/// every dirty block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_opened_smaller_than_it_holds_is_reclaimed_down() {
    let dir = TempDir::new("smaller");
    let store = Arc::new(GatedDevice::new(volume()));
    let tier = open(Arc::clone(&store), disk_config(dir.path(), 256 * MIB, Durability::Local)).await;
    for b in 0..640u32 {
        store.hold(BlockId(b));
        tier.write_block(BlockId(b), data(b, 4)).await.expect("write");
    }
    tier.flush().await.expect("flush (local)");
    // Killed: 40 MiB dirty in segments of 4 MiB.
    drop(tier);
    assert!(segment_bytes(dir.path()) > 40 * MIB);
    let store = Arc::new(GatedDevice::new(volume()));
    for b in 0..640u32 {
        store.hold(BlockId(b));
    }
    let tier = open(Arc::clone(&store), disk_config(dir.path(), 24 * MIB, Durability::Local)).await;
    assert_eq!(tier.stats().dirty_blocks, 640);
    for b in 0..640u32 {
        store.release(BlockId(b));
    }
    tier.flush().await.expect("flush");
    wait_clean(&tier).await;
    for b in 0..640u32 {
        assert_eq!(store.inner().read_block(BlockId(b)).await.expect("store"), data(b, 4), "block {b}");
    }
    // The next segment change reclaims what the dirty blocks pinned.
    for b in 640..740u32 {
        tier.write_block(BlockId(b), data(b, 5)).await.expect("write");
    }
    wait_clean(&tier).await;
    let bytes = segment_bytes(dir.path());
    assert!(bytes <= 24 * MIB, "{bytes} bytes on disk in a tier of 24 MiB");
    tier.close().await.expect("close");
}

type Tier = Arc<DiskCache<Arc<dyn BlockDevice>>>;

/// One volume of a budget with a disk total: its share, its disk tier in
/// `dir`, and the memory cache over it.
async fn join(
    budget: &Arc<CacheBudget>,
    dir: &std::path::Path,
    store: Arc<dyn BlockDevice>,
) -> Result<(Arc<BlockCache<Tier>>, Tier)> {
    let share: Share = budget.make_room(BLOCK).await?;
    let config = DiskCacheConfig::builder(dir, share.disk_size.expect("a disk share"))
        .durability(Durability::Local)
        .upload_concurrency(4)
        .build();
    let tier = Arc::new(open(store, config).await);
    let cache_config = CacheConfig::builder()
        .cache_size(share.cache_size)
        .max_dirty(share.max_dirty)
        .write_delay(Duration::ZERO)
        .build();
    let cache = Arc::new(BlockCache::new(Arc::clone(&tier), cache_config)?);
    tier.join_budget(budget);
    cache.join_budget_over_disk(budget);
    Ok((cache, tier))
}

/// Volumes join a budget of 64 MiB of disk one by one: each join shrinks
/// the first volume's tier (its bytes on disk drop to its share), a fifth
/// is refused (12.8 MiB is less than four 4 MiB segments), and one leaving
/// lets the first grow back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_shrink_the_disk_shares_and_leaves_let_them_grow_back() {
    let root = TempDir::new("joins");
    let budget = CacheBudget::with_disk(8 * MIB, 4 * MIB, 4, 64 * MIB, None);
    let store = || -> Arc<dyn BlockDevice> { Arc::new(volume()) };
    let (first, first_tier) = join(&budget, &root.join("a"), store()).await.unwrap();
    for b in 0..800u32 {
        first.write_at(u64::from(b) * BLOCK, data(b, 6)).await.expect("write");
    }
    first.flush().await.expect("flush");
    wait_clean(&first_tier).await;
    let full = segment_bytes(&root.join("a"));
    assert!(full > 32 * MIB, "{full}");
    let mut others = Vec::new();
    for (i, name) in ["b", "c", "d"].into_iter().enumerate() {
        others.push(join(&budget, &root.join(name), store()).await.unwrap());
        let share = 64 * MIB / (i as u64 + 2);
        let bytes = segment_bytes(&root.join("a"));
        println!("{} volumes: the first tier holds {bytes} bytes, its share {share}", i + 2);
        assert_eq!(first_tier.stats().size, share);
        assert!(bytes <= share, "{bytes} bytes on disk, above the share of {share}");
    }
    let err = join(&budget, &root.join("e"), store()).await.err().unwrap().to_string();
    assert!(err.contains("--disk-cache-size 64M") && err.contains("5 volume(s)"), "{err}");
    assert_eq!(budget.members(), 4);
    let (leaving, leaving_tier) = others.pop().unwrap();
    leaving.close().await.unwrap();
    leaving_tier.close().await.unwrap();
    leaving_tier.leave_budget();
    leaving.leave_budget();
    assert_eq!(first_tier.stats().size, 64 * MIB / 3);
    for b in 0..800u32 {
        assert_eq!(first.read_at(u64::from(b) * BLOCK, 8).await.unwrap()[..4], b.to_le_bytes(), "block {b}");
    }
    first.close().await.unwrap();
    first_tier.close().await.unwrap();
}

/// A slow store that counts the writes in flight at once.
#[derive(Debug)]
struct Slow {
    inner: MemoryDevice,
    now: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

#[async_trait]
impl BlockDevice for Slow {
    fn geometry(&self) -> Geometry {
        self.inner.geometry()
    }
    async fn read_block(&self, block: BlockId) -> Result<Bytes> {
        self.inner.read_block(block).await
    }
    async fn write_block(&self, block: BlockId, data: Bytes) -> Result<()> {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(n, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(10)).await;
        self.now.fetch_sub(1, Ordering::SeqCst);
        self.inner.write_block(block, data).await
    }
    async fn discard(&self, blocks: std::ops::Range<u64>) -> Result<()> {
        self.inner.discard(blocks).await
    }
    async fn flush(&self) -> Result<()> {
        self.inner.flush().await
    }
    async fn block_status(
        &self,
        blocks: std::ops::Range<u64>,
    ) -> Result<Vec<(std::ops::Range<u64>, Allocation)>> {
        self.inner.block_status(blocks).await
    }
}

/// Two volumes' disk tiers (four uploads at once each) over one slow store
/// share a budget of two upload slots: never more than two writes reach
/// the store at once, and every block is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disk_tiers_uploads_take_the_budgets_slots() {
    let root = TempDir::new("slots");
    let budget = CacheBudget::with_disk(8 * MIB, 4 * MIB, 2, 64 * MIB, None);
    let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut volumes = Vec::new();
    for name in ["a", "b"] {
        let store: Arc<dyn BlockDevice> =
            Arc::new(Slow { inner: volume(), now: Arc::clone(&now), peak: Arc::clone(&peak) });
        volumes.push((join(&budget, &root.join(name), Arc::clone(&store)).await.unwrap(), store));
    }
    let writers: Vec<_> = volumes
        .iter()
        .map(|((cache, _), _)| {
            let cache = Arc::clone(cache);
            tokio::spawn(async move {
                for b in 0..60u32 {
                    cache.write_at(u64::from(b) * BLOCK, data(b, 7)).await.expect("write");
                }
                cache.flush().await.expect("flush");
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    for ((cache, tier), store) in &volumes {
        wait_clean(tier).await;
        for b in 0..60u32 {
            assert_eq!(store.read_block(BlockId(b)).await.unwrap(), data(b, 7));
        }
        cache.close().await.unwrap();
        tier.close().await.unwrap();
    }
    let peak = peak.load(Ordering::SeqCst);
    println!("at most {peak} writes in flight to the store");
    assert_eq!(peak, 2, "two upload slots, two tiers of four uploads each");
}
