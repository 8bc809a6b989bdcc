//! The disk tier (`DiskCache`): round trips, warm restarts, crash recovery,
//! damaged entries, validity of a directory, flush order, a full disk,
//! bounded size, inspect and discard.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use common::disk::{SMALL, TempDir, copy_dir, disk_config, identity, marks, open_tier, segments, wait_clean};
use common::{block_data, geometry};
use s3block_cache::testing::{CountingDevice, GatedDevice};
use s3block_cache::{DiskCache, DiskCacheConfig, Durability, OpenState, discard, inspect};
use s3block_core::{Allocation, BlockDevice, BlockId, Geometry, MemoryDevice, Result};

const ENTRY: u64 = 48 + 512;

fn mem(blocks: u64) -> Arc<MemoryDevice> {
    Arc::new(MemoryDevice::new(geometry(blocks)))
}

#[tokio::test]
async fn writes_read_back_and_reach_the_store_on_flush() {
    let dir = TempDir::new("roundtrip");
    let store = mem(64);
    let counting = Arc::new(CountingDevice::new(Arc::clone(&store)));
    let (cache, report) = open_tier(Arc::clone(&counting), dir.path(), SMALL, Durability::Remote).await;
    assert_eq!(report.state, OpenState::Fresh);
    let g = cache.geometry();
    for b in 0..10u32 {
        cache.write_block(BlockId(b), block_data(&g, b, 1)).await.expect("write");
    }
    cache.write_block(BlockId(10), Bytes::from(vec![0u8; 512])).await.expect("zero write");
    for b in 0..10u32 {
        assert_eq!(cache.read_block(BlockId(b)).await.expect("read"), block_data(&g, b, 1));
    }
    assert!(cache.read_block(BlockId(10)).await.expect("read").iter().all(|x| *x == 0));
    assert_eq!(counting.counts().reads, 0, "reads of written blocks are served from disk");
    cache.flush().await.expect("flush");
    for b in 0..10u32 {
        assert_eq!(store.read_block(BlockId(b)).await.expect("store"), block_data(&g, b, 1));
    }
    assert_eq!(counting.counts().zero_writes, 1, "a zero entry is uploaded as zeros");
    let s = cache.stats();
    assert_eq!((s.dirty_blocks, s.dirty_bytes, s.cached_blocks), (0, 0, 11), "{s:?}");
    assert!(s.hits >= 11 && s.index_bytes > 0, "{s:?}");
    // A miss is fetched once, then served from disk.
    store.write_block(BlockId(20), block_data(&g, 20, 9)).await.expect("store write");
    counting.reset();
    for _ in 0..3 {
        assert_eq!(cache.read_block(BlockId(20)).await.expect("read"), block_data(&g, 20, 9));
    }
    assert_eq!(counting.counts().reads, 1);
    // Partial I/O and block status.
    cache.write_partial(BlockId(20), 100, Bytes::from_static(b"abc")).await.expect("partial write");
    assert_eq!(&cache.read_partial(BlockId(20), 100, 3).await.expect("partial read")[..], b"abc");
    let status = cache.block_status(9..12).await.expect("status");
    // Block 11 was never written: a hole below.
    assert_eq!(status, vec![(9..10, Allocation::Data), (10..12, Allocation::Hole)]);
    cache.close().await.expect("close");
    assert!(cache.read_block(BlockId(0)).await.is_err(), "closed");
}

#[tokio::test]
async fn a_clean_restart_is_warm_and_makes_no_request() {
    let dir = TempDir::new("warm");
    let store = mem(64);
    let g = store.geometry();
    {
        let (cache, _) = open_tier(Arc::clone(&store), dir.path(), SMALL, Durability::Remote).await;
        for b in 0..32u32 {
            cache.write_block(BlockId(b), block_data(&g, b, 2)).await.expect("write");
        }
        cache.close().await.expect("close");
    }
    let counting = Arc::new(CountingDevice::new(Arc::clone(&store)));
    let (cache, report) = open_tier(Arc::clone(&counting), dir.path(), SMALL, Durability::Remote).await;
    assert_eq!(
        (report.state.clone(), report.blocks, report.dirty_blocks),
        (OpenState::Warm, 32, 0),
        "{report}"
    );
    for b in 0..32u32 {
        assert_eq!(cache.read_block(BlockId(b)).await.expect("read"), block_data(&g, b, 2));
    }
    assert_eq!(counting.counts().requests(), 0, "a warm restart reads from disk");
    cache.close().await.expect("close");
}

/// Writes blocks 0..n (fill 3) with every upload held, then drops the tier
/// without closing it: a crash with n dirty blocks.
async fn crash_with_dirty(dir: &std::path::Path, store: &Arc<MemoryDevice>, n: u32, durability: Durability) {
    let gated = Arc::new(GatedDevice::new(Arc::clone(store)));
    for b in 0..n {
        gated.hold(BlockId(b));
    }
    let (cache, _) = open_tier(Arc::clone(&gated), dir, SMALL, durability).await;
    let g = cache.geometry();
    for b in 0..n {
        cache.write_block(BlockId(b), block_data(&g, b, 3)).await.expect("write");
    }
    if durability == Durability::Local {
        cache.flush().await.expect("a local flush does not wait for the store");
    }
    assert_eq!(cache.stats().dirty_blocks, u64::from(n));
    drop(cache);
}

#[tokio::test]
async fn dirty_blocks_survive_a_crash_and_are_uploaded() {
    for durability in [Durability::Remote, Durability::Local] {
        let dir = TempDir::new("crash");
        let store = mem(64);
        crash_with_dirty(dir.path(), &store, 8, durability).await;
        let g = store.geometry();
        assert!(store.read_block(BlockId(0)).await.expect("store").iter().all(|x| *x == 0), "held");
        // Reads see the dirty blocks at once, without the store.
        let gated = Arc::new(GatedDevice::new(Arc::clone(&store)));
        for b in 0..8 {
            gated.hold(BlockId(b));
        }
        let counting = Arc::new(CountingDevice::new(Arc::clone(&gated)));
        let (cache, report) = open_tier(Arc::clone(&counting), dir.path(), SMALL, durability).await;
        assert_eq!((report.state.clone(), report.dirty_blocks), (OpenState::Recovered, 8), "{report}");
        for b in 0..8u32 {
            assert_eq!(cache.read_block(BlockId(b)).await.expect("read"), block_data(&g, b, 3));
        }
        assert_eq!(counting.counts().reads, 0);
        for b in 0..8 {
            gated.release(BlockId(b));
        }
        cache.flush().await.expect("flush");
        wait_clean(&cache).await;
        for b in 0..8u32 {
            assert_eq!(store.read_block(BlockId(b)).await.expect("store"), block_data(&g, b, 3));
        }
        cache.close().await.expect("close");
    }
}

#[tokio::test]
async fn a_copy_of_the_directory_taken_mid_flight_recovers() {
    let dir = TempDir::new("copy");
    let store = mem(256);
    let g = store.geometry();
    let gated = Arc::new(GatedDevice::new(Arc::clone(&store)));
    for b in 100..110 {
        gated.hold(BlockId(b));
    }
    let (cache, _) = open_tier(Arc::clone(&gated), dir.path(), SMALL, Durability::Remote).await;
    for b in 0..110u32 {
        cache.write_block(BlockId(b), block_data(&g, b, 4)).await.expect("write");
    }
    for b in 0..100u32 {
        // Stored below once its upload is done.
        while cache.stats().dirty_blocks > 10 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let _ = b;
    }
    let image = TempDir::new("copy-image");
    copy_dir(dir.path(), image.path());
    let (copy, report) = open_tier(Arc::clone(&store), image.path(), SMALL, Durability::Remote).await;
    assert_eq!(report.state, OpenState::Recovered);
    assert!(report.dirty_blocks >= 10, "{report}");
    for b in 0..110u32 {
        assert_eq!(copy.read_block(BlockId(b)).await.expect("read"), block_data(&g, b, 4));
    }
    copy.flush().await.expect("flush");
    for b in 100..110u32 {
        assert_eq!(store.read_block(BlockId(b)).await.expect("store"), block_data(&g, b, 4));
    }
    copy.close().await.expect("close");
    drop(cache);
}

/// Crashes with block 5 at version 1 (epoch 1, flushed locally) and
/// version 2 as the last entry of the log, both not uploaded.
async fn crash_with_two_versions(dir: &std::path::Path, store: &Arc<MemoryDevice>) -> Geometry {
    let gated = Arc::new(GatedDevice::new(Arc::clone(store)));
    for b in 0..8 {
        gated.hold(BlockId(b));
    }
    let (cache, _) = open_tier(Arc::clone(&gated), dir, SMALL, Durability::Local).await;
    let g = cache.geometry();
    cache.write_block(BlockId(5), block_data(&g, 5, 1)).await.expect("write");
    cache.write_block(BlockId(6), block_data(&g, 6, 1)).await.expect("write");
    cache.flush().await.expect("flush");
    cache.write_block(BlockId(5), block_data(&g, 5, 2)).await.expect("write");
    drop(cache);
    g
}

fn last_segment_with_data(dir: &std::path::Path) -> std::path::PathBuf {
    segments(dir)
        .into_iter()
        .rev()
        .find(|p| std::fs::metadata(p).expect("metadata").len() > 0)
        .expect("a segment with entries")
}

#[tokio::test]
async fn a_torn_last_entry_is_detected_at_every_offset() {
    let dir = TempDir::new("torn");
    let store = mem(64);
    let g = crash_with_two_versions(dir.path(), &store).await;
    let seg = last_segment_with_data(dir.path());
    let len = std::fs::metadata(&seg).expect("metadata").len();
    let last = len - ENTRY;
    for cut in last..len {
        let image = TempDir::new("torn-image");
        copy_dir(dir.path(), image.path());
        let name = seg.file_name().expect("name");
        let f = std::fs::OpenOptions::new().write(true).open(image.path().join(name)).expect("open");
        f.set_len(cut).expect("truncate");
        drop(f);
        let (cache, report) = open_tier(Arc::clone(&store), image.path(), SMALL, Durability::Local).await;
        if cut > last {
            assert_eq!(report.corrupt.len(), 1, "cut at {cut}: {report}");
        }
        if cut >= last + 48 {
            assert_eq!(report.lost_dirty, vec![5], "cut at {cut}: the header names the block: {report}");
        }
        // Never the torn version: the older one, still to upload, is served.
        assert_eq!(cache.read_block(BlockId(5)).await.expect("read"), block_data(&g, 5, 1), "cut at {cut}");
        assert_eq!(cache.read_block(BlockId(6)).await.expect("read"), block_data(&g, 6, 1), "cut at {cut}");
        drop(cache);
    }
}

#[tokio::test]
async fn flipped_bytes_are_detected_and_never_served() {
    let dir = TempDir::new("flip");
    let store = mem(64);
    let g = crash_with_two_versions(dir.path(), &store).await;
    let seg = last_segment_with_data(dir.path());
    let len = std::fs::metadata(&seg).expect("metadata").len();
    // Every 7th byte of the last entry (the header's block number included).
    for at in (len - ENTRY..len).step_by(7) {
        let image = TempDir::new("flip-image");
        copy_dir(dir.path(), image.path());
        let path = image.path().join(seg.file_name().expect("name"));
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[at as usize] ^= 0x40;
        std::fs::write(&path, &bytes).expect("write");
        let (cache, report) = open_tier(Arc::clone(&store), image.path(), SMALL, Durability::Local).await;
        assert!(!report.corrupt.is_empty(), "flip at {at}: {report}");
        let got = cache.read_block(BlockId(5)).await.expect("read");
        assert_ne!(got, block_data(&g, 5, 2), "flip at {at}: the damaged version is never served");
        assert_eq!(cache.read_block(BlockId(6)).await.expect("read"), block_data(&g, 6, 1));
        drop(cache);
    }
    // A flip in the data names the block as lost.
    let image = TempDir::new("flip-data");
    copy_dir(dir.path(), image.path());
    let path = image.path().join(seg.file_name().expect("name"));
    let mut bytes = std::fs::read(&path).expect("read");
    let at = bytes.len() - 10;
    bytes[at] ^= 1;
    std::fs::write(&path, &bytes).expect("write");
    let (_cache, report) = open_tier(Arc::clone(&store), image.path(), SMALL, Durability::Local).await;
    assert_eq!(report.lost_dirty, vec![5], "{report}");
    assert!(report.to_string().contains("LOST"), "{report}");
}

#[tokio::test]
async fn a_damaged_entry_read_while_mounted_falls_back_or_fails() {
    let dir = TempDir::new("readcrc");
    let store = mem(64);
    let g = store.geometry();
    store.write_block(BlockId(1), block_data(&g, 1, 7)).await.expect("store");
    let counting = Arc::new(CountingDevice::new(Arc::clone(&store)));
    let (cache, _) = open_tier(Arc::clone(&counting), dir.path(), SMALL, Durability::Remote).await;
    // Block 1: fetched and kept (clean, first entry of the new segment).
    assert_eq!(cache.read_block(BlockId(1)).await.expect("read"), block_data(&g, 1, 7));
    let seg = last_segment_with_data(dir.path());
    let mut bytes = std::fs::read(&seg).expect("read");
    bytes[100] ^= 0xff;
    std::fs::write(&seg, &bytes).expect("write");
    counting.reset();
    assert_eq!(cache.read_block(BlockId(1)).await.expect("read"), block_data(&g, 1, 7));
    assert_eq!(counting.counts().reads, 1, "a damaged clean entry is fetched again");
    assert_eq!(cache.stats().corrupt_entries, 1);
    drop(cache);
    // A damaged dirty entry is an error naming the block.
    let dir = TempDir::new("readcrc-dirty");
    let gated = Arc::new(GatedDevice::new(Arc::clone(&store)));
    gated.hold(BlockId(3));
    let (cache, _) = open_tier(Arc::clone(&gated), dir.path(), SMALL, Durability::Remote).await;
    cache.write_block(BlockId(3), block_data(&g, 3, 1)).await.expect("write");
    let seg = last_segment_with_data(dir.path());
    let mut bytes = std::fs::read(&seg).expect("read");
    bytes[200] ^= 0xff;
    std::fs::write(&seg, &bytes).expect("write");
    let err = cache.read_block(BlockId(3)).await.expect_err("damaged dirty entry");
    assert!(err.to_string().contains("block 3") || err.to_string().contains("00000003"), "{err}");
}

#[tokio::test]
async fn another_volume_or_a_changed_bucket_is_discarded_or_refused() {
    let store = mem(64);
    let g = store.geometry();
    let open = |dir: std::path::PathBuf, volume: &str, found: Option<&str>, new: &str| {
        let store = Arc::clone(&store);
        let id = s3block_cache::VolumeIdentity { volume: volume.into(), geometry: g };
        let m = marks(found, new);
        async move { DiskCache::open(store, disk_config(&dir, SMALL, Durability::Remote), id, m).await }
    };
    // Clean directory of volume a, marker m1.
    let dir = TempDir::new("valid");
    let (cache, _) = open(dir.path().into(), "a", None, "m1").await.expect("open");
    cache.write_block(BlockId(1), block_data(&g, 1, 1)).await.expect("write");
    cache.confirm_marker().expect("confirm");
    cache.close().await.expect("close");
    drop(cache);
    // Same volume, bucket marker m1: warm.
    let (cache, report) = open(dir.path().into(), "a", Some("m1"), "m2").await.expect("open");
    assert_eq!(report.state, OpenState::Warm);
    // Closed without confirming m2: both m1 and m2 are accepted.
    cache.close().await.expect("close");
    drop(cache);
    let (cache, report) = open(dir.path().into(), "a", Some("m2"), "m3").await.expect("open");
    assert_eq!(report.state, OpenState::Warm, "{report}");
    cache.close().await.expect("close");
    drop(cache);
    // Another volume: discarded with the reason.
    let (cache, report) = open(dir.path().into(), "b", Some("m2"), "m4").await.expect("open");
    match &report.state {
        OpenState::Discarded { reason } => assert!(reason.contains("volume"), "{reason}"),
        s => panic!("expected discarded, got {s:?}"),
    }
    assert_eq!(cache.stats().cached_blocks, 0);
    cache.close().await.expect("close");
    drop(cache);
    // The bucket marker moved on (mounted elsewhere): discarded.
    let (cache, report) = open(dir.path().into(), "b", Some("elsewhere"), "m5").await.expect("open");
    match &report.state {
        OpenState::Discarded { reason } => assert!(reason.contains("mounted elsewhere"), "{reason}"),
        s => panic!("expected discarded, got {s:?}"),
    }
    drop(cache);
    // Dirty entries of another state are refused, naming how to proceed.
    let dir = TempDir::new("refuse");
    crash_with_dirty(dir.path(), &store, 3, Durability::Remote).await;
    for (volume, found) in [("other", None), ("vol", Some("elsewhere"))] {
        let err = open(dir.path().into(), volume, found, "m9").await.expect_err("refused");
        let msg = err.to_string();
        assert!(msg.contains("s3block cache discard") && msg.contains("3 dirty"), "{msg}");
        assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
    }
    // A crash before the caller wrote its marker: the old marker still works.
    let (cache, report) = open(dir.path().into(), "vol", None, "m10").await.expect("open");
    assert_eq!(report.dirty_blocks, 3);
    drop(cache);
}

#[tokio::test]
async fn one_directory_serves_one_process() {
    let dir = TempDir::new("lock");
    let store = mem(64);
    let (cache, _) = open_tier(Arc::clone(&store), dir.path(), SMALL, Durability::Remote).await;
    let id = identity(&store);
    let err = DiskCache::open(
        Arc::clone(&store),
        disk_config(dir.path(), SMALL, Durability::Remote),
        id,
        marks(None, "x"),
    )
    .await
    .expect_err("locked");
    let msg = err.to_string();
    assert!(msg.contains("in use") && msg.contains(&format!("pid {}", std::process::id())), "{msg}");
    assert!(inspect(dir.path()).is_err() && discard(dir.path()).is_err(), "refused while locked");
    cache.close().await.expect("close");
    drop(cache);
    assert!(inspect(dir.path()).expect("inspect").clean);
}

#[tokio::test]
async fn bad_directories_are_clear_errors() {
    let store = mem(64);
    let id = identity(&store);
    let missing = std::path::Path::new("/nonexistent-parent-s3block/cache");
    let err = DiskCache::open(
        Arc::clone(&store),
        disk_config(missing, SMALL, Durability::Remote),
        id.clone(),
        marks(None, "x"),
    )
    .await
    .expect_err("no parent");
    assert!(err.to_string().contains("/nonexistent-parent-s3block/cache"), "{err}");
    // A missing directory whose parent exists is created.
    let parent = TempDir::new("parent");
    let (cache, _) = open_tier(Arc::clone(&store), &parent.join("new"), SMALL, Durability::Remote).await;
    drop(cache);
    // A file, not a directory.
    let file = parent.join("file");
    std::fs::write(&file, b"x").expect("write");
    let err = DiskCache::open(
        Arc::clone(&store),
        disk_config(&file, SMALL, Durability::Remote),
        id.clone(),
        marks(None, "x"),
    )
    .await
    .expect_err("not a dir");
    assert!(err.to_string().contains("not a directory"), "{err}");
    let err = DiskCache::open(
        Arc::clone(&store),
        DiskCacheConfig::builder(parent.path(), 1 << 20).build(),
        id,
        marks(None, "x"),
    )
    .await
    .expect_err("too small");
    assert!(err.to_string().contains("--disk-cache-size"), "{err}");
}

/// Records the order in which writes start and finish below, with a small
/// random delay between, so uploads in flight overlap.
#[derive(Debug)]
struct Recorder {
    inner: Arc<MemoryDevice>,
    log: Mutex<Vec<(bool, u32, u8)>>,
}

#[async_trait]
impl BlockDevice for Recorder {
    fn geometry(&self) -> Geometry {
        self.inner.geometry()
    }
    async fn read_block(&self, block: BlockId) -> Result<Bytes> {
        self.inner.read_block(block).await
    }
    async fn write_block(&self, block: BlockId, data: Bytes) -> Result<()> {
        self.log.lock().expect("log").push((true, block.0, data[0]));
        tokio::time::sleep(Duration::from_micros(u64::from(data[0]) * 37 % 900 + 100)).await;
        let r = self.inner.write_block(block, data.clone()).await;
        self.log.lock().expect("log").push((false, block.0, data[0]));
        r
    }
    async fn discard(&self, blocks: std::ops::Range<u64>) -> Result<()> {
        self.inner.discard(blocks).await
    }
    async fn flush(&self) -> Result<()> {
        self.inner.flush().await
    }
}

#[tokio::test]
async fn local_durability_uploads_in_flush_order() {
    let dir = TempDir::new("epochs");
    let store = mem(64);
    let rec = Arc::new(Recorder { inner: Arc::clone(&store), log: Mutex::default() });
    let gated = Arc::new(GatedDevice::new(Arc::clone(&rec)));
    gated.hold(BlockId(0));
    let (cache, _) = open_tier(Arc::clone(&gated), dir.path(), SMALL, Durability::Local).await;
    // Epoch e (first byte = 10 * e + k) writes blocks; block 0 is held in
    // epoch 1, so nothing of epoch 2 may start before it is released.
    let bytes = |tag: u8| Bytes::from(vec![tag; 512]);
    let mut epochs = Vec::new();
    for e in 1..=4u8 {
        let mut tags = Vec::new();
        for k in 0..6u8 {
            let block = u32::from((e * 3 + k) % 12);
            let tag = e * 10 + k;
            cache.write_block(BlockId(block), bytes(tag)).await.expect("write");
            tags.push(tag);
        }
        // Block 0 rewritten in every epoch: each older version stays.
        cache.write_block(BlockId(0), bytes(e * 10 + 9)).await.expect("write");
        tags.push(e * 10 + 9);
        cache.flush().await.expect("a local flush returns without the store");
        epochs.push(tags);
    }
    tokio::time::sleep(Duration::from_millis(30)).await;
    let started: Vec<u8> = rec.log.lock().expect("log").iter().filter(|l| l.0).map(|l| l.2).collect();
    assert!(
        started.iter().all(|t| *t / 10 == 1),
        "only epoch 1 may start while block 0 is held: {started:?}"
    );
    gated.release(BlockId(0));
    wait_clean(&cache).await;
    let log = rec.log.lock().expect("log").clone();
    // Every write of epoch N finishes before any of epoch N+1 starts.
    for (i, (start, _, tag)) in log.iter().enumerate() {
        if !start {
            continue;
        }
        let epoch = tag / 10;
        for (_, _, later) in log[i..].iter().filter(|l| !l.0) {
            assert!(
                later / 10 >= epoch,
                "epoch {} finished after epoch {epoch} started: {log:?}",
                later / 10
            );
        }
    }
    // Block 0's versions were stored in order, every one of them.
    let zero: Vec<u8> = log.iter().filter(|l| !l.0 && l.1 == 0).map(|l| l.2).collect();
    assert_eq!(
        zero.iter().filter(|t| *t % 10 == 9).copied().collect::<Vec<_>>(),
        vec![19, 29, 39, 49],
        "{log:?}"
    );
    assert_eq!(store.read_block(BlockId(0)).await.expect("store"), bytes(49));
    // A rewrite within an epoch replaces the older version.
    let before = log.len();
    cache.write_block(BlockId(40), bytes(1)).await.expect("write");
    cache.write_block(BlockId(40), bytes(2)).await.expect("write");
    cache.flush().await.expect("flush");
    wait_clean(&cache).await;
    let log = rec.log.lock().expect("log").clone();
    let forty: Vec<u8> = log[before..].iter().filter(|l| !l.0 && l.1 == 40).map(|l| l.2).collect();
    assert!(forty == vec![2] || forty == vec![1, 2], "{forty:?}");
    assert_eq!(epochs.len(), 4);
    cache.close().await.expect("close");
}

#[tokio::test]
async fn remote_flush_waits_for_the_store() {
    let dir = TempDir::new("remote");
    let store = mem(64);
    let gated = Arc::new(GatedDevice::new(Arc::clone(&store)));
    gated.hold(BlockId(2));
    let (cache, _) = open_tier(Arc::clone(&gated), dir.path(), SMALL, Durability::Remote).await;
    let cache = Arc::new(cache);
    let g = cache.geometry();
    cache.write_block(BlockId(2), block_data(&g, 2, 1)).await.expect("write");
    let c = Arc::clone(&cache);
    let flush = tokio::spawn(async move { c.flush().await });
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert!(!flush.is_finished(), "a remote flush waits for the upload");
    gated.release(BlockId(2));
    flush.await.expect("task").expect("flush");
    assert_eq!(store.read_block(BlockId(2)).await.expect("store"), block_data(&g, 2, 1));
}

#[tokio::test]
async fn a_full_disk_sends_writes_to_the_store_and_loses_nothing() {
    for durability in [Durability::Remote, Durability::Local] {
        let dir = TempDir::new("enospc");
        let store = mem(64);
        let g = store.geometry();
        let (cache, _) = open_tier(Arc::clone(&store), dir.path(), SMALL, durability).await;
        cache.write_block(BlockId(1), block_data(&g, 1, 1)).await.expect("write");
        cache.flush().await.expect("flush");
        wait_clean(&cache).await;
        cache.fail_next_disk_writes(3);
        cache.write_block(BlockId(1), block_data(&g, 1, 2)).await.expect("write goes to the store");
        cache.write_block(BlockId(2), block_data(&g, 2, 2)).await.expect("write goes to the store");
        assert_eq!(store.read_block(BlockId(1)).await.expect("store"), block_data(&g, 1, 2));
        assert_eq!(cache.stats().spills, 2);
        assert_eq!(cache.read_block(BlockId(1)).await.expect("read"), block_data(&g, 1, 2));
        cache.write_block(BlockId(3), block_data(&g, 3, 2)).await.expect("the disk works again");
        cache.flush().await.expect("flush");
        // A crash now: the log's older version of block 1 must not come back.
        drop(cache);
        let (cache, report) = open_tier(Arc::clone(&store), dir.path(), SMALL, durability).await;
        assert_eq!(report.state, OpenState::Recovered);
        for b in 1..=3u32 {
            assert_eq!(cache.read_block(BlockId(b)).await.expect("read"), block_data(&g, b, 2), "block {b}");
        }
        cache.close().await.expect("close");
    }
}

#[tokio::test]
async fn discard_keeps_its_order_with_writes() {
    let dir = TempDir::new("discard");
    let store = mem(64);
    let g = store.geometry();
    let (cache, _) = open_tier(Arc::clone(&store), dir.path(), SMALL, Durability::Local).await;
    for b in 0..8u32 {
        cache.write_block(BlockId(b), block_data(&g, b, 1)).await.expect("write");
    }
    cache.discard(2..6).await.expect("discard");
    cache.write_block(BlockId(3), block_data(&g, 3, 2)).await.expect("write");
    for b in 2..6u32 {
        let want = if b == 3 { block_data(&g, 3, 2) } else { Bytes::from(vec![0u8; 512]) };
        assert_eq!(cache.read_block(BlockId(b)).await.expect("read"), want, "block {b}");
    }
    cache.flush().await.expect("flush");
    wait_clean(&cache).await;
    drop(cache);
    // After a crash the discarded blocks stay discarded.
    let (cache, _) = open_tier(Arc::clone(&store), dir.path(), SMALL, Durability::Local).await;
    for b in 0..8u32 {
        let want = match b {
            3 => block_data(&g, 3, 2),
            2..=5 => Bytes::from(vec![0u8; 512]),
            _ => block_data(&g, b, 1),
        };
        assert_eq!(cache.read_block(BlockId(b)).await.expect("read"), want, "block {b}");
        assert_eq!(store.read_block(BlockId(b)).await.expect("store"), want, "stored block {b}");
    }
    cache.close().await.expect("close");
}

#[tokio::test]
async fn the_tier_stays_within_its_size_and_keeps_a_hot_set_through_a_scan() {
    let dir = TempDir::new("bounded");
    let blocks = 100_000u64;
    const SCAN: u32 = 100_000;
    let store = mem(200_000);
    let g = store.geometry();
    for b in SCAN..SCAN + 80_000 {
        store.write_block(BlockId(b), block_data(&g, b, 9)).await.expect("store");
    }
    let counting = Arc::new(CountingDevice::new(Arc::clone(&store)));
    let (cache, _) = open_tier(Arc::clone(&counting), dir.path(), SMALL, Durability::Remote).await;
    // A random workload of writes and reads, checked against a model.
    let mut model: std::collections::HashMap<u32, u8> = std::collections::HashMap::new();
    let mut x = 12345u64;
    for i in 0..60_000u32 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = (x % blocks) as u32;
        if x.is_multiple_of(3) {
            let fill = (i % 250) as u8 + 1;
            cache.write_block(BlockId(b), block_data(&g, b, fill)).await.expect("write");
            model.insert(b, fill);
        } else {
            let got = cache.read_block(BlockId(b)).await.expect("read");
            match model.get(&b) {
                Some(f) => assert_eq!(got, block_data(&g, b, *f), "block {b}"),
                None => assert!(got.iter().all(|x| *x == 0)),
            }
        }
        if i.is_multiple_of(1000) {
            let s = cache.stats();
            assert!(s.used_bytes <= s.size, "{s:?}");
            let on_disk: u64 =
                segments(dir.path()).iter().map(|p| std::fs::metadata(p).expect("m").len()).sum();
            assert!(on_disk <= SMALL, "{on_disk} bytes on disk");
        }
    }
    cache.flush().await.expect("flush");
    // Hot set: written, read twice (referenced), then a long scan of data
    // blocks (four times the tier) with the hot set read now and then.
    for b in 0..200u32 {
        cache.write_block(BlockId(b), block_data(&g, b, 251)).await.expect("write");
    }
    cache.flush().await.expect("flush");
    for _ in 0..2 {
        for b in 0..200u32 {
            cache.read_block(BlockId(b)).await.expect("read");
        }
    }
    counting.reset();
    for b in SCAN..SCAN + 80_000 {
        assert_eq!(cache.read_block(BlockId(b)).await.expect("scan"), block_data(&g, b, 9));
        if b.is_multiple_of(5000) {
            for h in 0..200u32 {
                assert_eq!(cache.read_block(BlockId(h)).await.expect("read"), block_data(&g, h, 251));
            }
        }
    }
    let hot_misses: u64 = (0..200u32).map(|h| counting.reads_of(BlockId(h))).sum();
    let s = cache.stats();
    assert!(s.evictions > 50_000, "{s:?}");
    assert!(hot_misses < 20, "the hot set survives the scan: {hot_misses} misses of it; {s:?}");
    assert!(s.used_bytes <= s.size);
    cache.close().await.expect("close");
}

#[tokio::test]
async fn inspect_and_discard_a_directory() {
    let dir = TempDir::new("inspect");
    let store = mem(64);
    crash_with_dirty(dir.path(), &store, 5, Durability::Remote).await;
    let r = inspect(dir.path()).expect("inspect");
    assert_eq!((r.volume.as_str(), r.block_size, r.block_count, r.clean), ("vol", 512, 64, false));
    assert_eq!(r.dirty_blocks, vec![0, 1, 2, 3, 4]);
    assert_eq!(r.blocks, 5);
    assert!(r.bytes >= 5 * ENTRY && r.segments >= 1, "{r:?}");
    let d = discard(dir.path()).expect("discard");
    assert!(d.files >= 2, "{d:?}");
    assert!(inspect(dir.path()).is_err(), "nothing left to inspect");
    let (_cache, report) = open_tier(Arc::clone(&store), dir.path(), SMALL, Durability::Remote).await;
    assert_eq!(report.state, OpenState::Fresh);
}

/// Figures, printed: writes and reads per second through the tier (debug
/// builds are much slower than release).
#[tokio::test]
async fn throughput_figures() {
    let dir = TempDir::new("speed");
    let blocks = 20_000u32;
    let store = mem(u64::from(blocks));
    let g = store.geometry();
    for durability in [Durability::Remote, Durability::Local] {
        let (cache, _) = open_tier(Arc::clone(&store), dir.path(), 64 << 20, durability).await;
        let t = std::time::Instant::now();
        for b in 0..blocks {
            cache.write_block(BlockId(b), block_data(&g, b, 5)).await.expect("write");
        }
        let w = t.elapsed();
        let t = std::time::Instant::now();
        cache.flush().await.expect("flush");
        let f = t.elapsed();
        let t = std::time::Instant::now();
        for b in 0..blocks {
            cache.read_block(BlockId(b)).await.expect("read");
        }
        let r = t.elapsed();
        eprintln!(
            "{durability:?}: {blocks} writes of 512 B in {w:?} ({:.0}/s), flush {f:?}, {blocks} reads in {r:?} ({:.0}/s)",
            f64::from(blocks) / w.as_secs_f64(),
            f64::from(blocks) / r.as_secs_f64()
        );
        cache.close().await.expect("close");
    }
}

#[tokio::test]
async fn entries_still_to_upload_are_copied_forward_and_recovered() {
    let dir = TempDir::new("forward");
    let store = mem(40_000);
    let g = store.geometry();
    let gated = Arc::new(GatedDevice::new(Arc::clone(&store)));
    gated.hold(BlockId(0));
    gated.hold(BlockId(1));
    let (cache, _) = open_tier(Arc::clone(&gated), dir.path(), SMALL, Durability::Remote).await;
    cache.write_block(BlockId(0), block_data(&g, 0, 1)).await.expect("write");
    cache.write_block(BlockId(1), block_data(&g, 1, 1)).await.expect("write");
    // Three times the tier: the segment holding blocks 0 and 1 is reclaimed
    // (more than once) while their uploads are held.
    for b in 100..40_000u32 {
        cache.write_block(BlockId(b), block_data(&g, b, 2)).await.expect("write");
    }
    let s = cache.stats();
    assert!(s.copied_forward >= 2 && s.evictions > 0 && s.used_bytes <= SMALL, "{s:?}");
    assert_eq!(cache.read_block(BlockId(0)).await.expect("read"), block_data(&g, 0, 1));
    drop(cache);
    let (cache, report) = open_tier(Arc::clone(&store), dir.path(), SMALL, Durability::Remote).await;
    assert!(report.dirty_blocks >= 2 && report.corrupt.is_empty(), "{report}");
    for b in [0u32, 1] {
        assert_eq!(cache.read_block(BlockId(b)).await.expect("read"), block_data(&g, b, 1));
    }
    cache.flush().await.expect("flush");
    for b in [0u32, 1, 100, 39_999] {
        let fill = if b < 2 { 1 } else { 2 };
        assert_eq!(store.read_block(BlockId(b)).await.expect("store"), block_data(&g, b, fill), "block {b}");
    }
    cache.close().await.expect("close");
}
