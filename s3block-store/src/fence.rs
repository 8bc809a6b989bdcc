//! The fence: a mount whose lock was taken stops writing to the store.
//!
//! A person may break the lock of a mount that still runs (`s3block unlock
//! --force`, or s3backer's `--force`) and start another mount. From then on
//! two programs would write the same blocks, and the old one, whose cache
//! holds blocks written before the new mount started, would overwrite the
//! new mount's data. The [`Fence`] of a mount notices, and stops it:
//!
//! - it reads the lock object and compares its token with the mount's own
//!   ([`LockProbe::check`]): once a minute ([`LOCK_CHECK_EVERY`], by
//!   [`Fence::watch`]), before each flush (fsync, FUSE flush, NBD
//!   `FLUSH`) is let through, and before an upload when the lock was last
//!   found held more than [`UPLOAD_RECHECK`] ago. Callers that arrive
//!   while a check is in flight wait for it rather than send their own: a
//!   burst of fsyncs costs one GET, and uploading costs at most one GET
//!   every five seconds;
//! - once the lock holds another token, or is gone, the fence trips, for
//!   good: it logs at error level who holds the lock now, and every
//!   [`FencedDevice`] refuses writes, discards and flushes with
//!   [`Error::Fenced`] (EIO to the kernel, to an NBD client). The one below
//!   the caches refuses uploads, so dirty blocks stay in the caches (and
//!   in the disk cache, on the local disk, for a person to recover).
//!
//! A lock that cannot be read trips nothing; the next check decides. A
//! hard mount's read waits for the store like any request (so a flush
//! waits through an outage, as its uploads would); with `--io-timeout`
//! the read gives up, and the flush fails with the store's error (EIO)
//! instead of uploading without knowing, while an upload goes on (it
//! meets the same store). A fenced error is never an outage: the retry
//! layers and the exit never retry it.
//!
//! What the fence cannot do: an upload already sent when the lock was
//! taken still lands, and so do those that start within [`UPLOAD_RECHECK`]
//! of the old mount's last check. It makes the window short, not empty:
//! object stores offer no write conditional on another object (the lock),
//! so no block upload can be. A lock written with conditional writes (see
//! [`MountLock`](crate::MountLock)) is what keeps two mounts from both
//! believing they hold it.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use s3block_core::{Allocation, BlockDevice, BlockId, Error, Geometry, Result};

use crate::lock::{LockCheck, LockProbe};

/// How often a mount checks its lock when nothing else makes it.
pub const LOCK_CHECK_EVERY: Duration = Duration::from_secs(60);

/// An upload waits for a check of the lock when it was last found held
/// longer ago than this.
pub const UPLOAD_RECHECK: Duration = Duration::from_secs(5);

/// A mount's watch on its lock: once the lock names another holder, or is
/// gone, every write and upload of the mount fails with [`Error::Fenced`](s3block_core::Error::Fenced).
#[derive(Debug)]
pub struct Fence {
    probe: LockProbe,
    key: String,
    /// Who holds the lock now, once this mount is fenced.
    tripped: OnceLock<String>,
    /// One check at a time; callers that waited use its answer.
    gate: tokio::sync::Mutex<()>,
    /// Checks completed (for the callers that waited).
    done: AtomicU64,
    /// Lock reads sent (the GETs, for the figures).
    reads: AtomicU64,
    /// When the last check that did not find the lock lost was sent
    /// (found held, or could not read it).
    looked: std::sync::Mutex<tokio::time::Instant>,
}

impl Fence {
    /// The fence of the mount holding the lock `probe` checks, taken a
    /// moment ago.
    pub fn new(probe: LockProbe) -> Fence {
        let key = probe.key();
        Fence {
            probe,
            key,
            tripped: OnceLock::new(),
            gate: tokio::sync::Mutex::new(()),
            done: AtomicU64::new(0),
            reads: AtomicU64::new(0),
            looked: std::sync::Mutex::new(tokio::time::Instant::now()),
        }
    }

    /// [`Error::Fenced`] once the fence has tripped, else `None`.
    pub fn fenced(&self) -> Option<Error> {
        self.tripped.get().map(|now| Error::Fenced { key: self.key.clone(), now: now.clone() })
    }

    /// Whether the fence has tripped.
    pub fn is_tripped(&self) -> bool {
        self.tripped.get().is_some()
    }

    /// Who holds the lock now, once the fence has tripped.
    pub fn holder(&self) -> Option<&str> {
        self.tripped.get().map(String::as_str)
    }

    /// How many times the lock was read.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// The lock object's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Checks the lock: `Ok` while it is this mount's, [`Error::Fenced`]
    /// once it is not (the fence trips), the store's error when the lock
    /// could not be read (nothing trips). A caller that arrives while a
    /// check is in flight waits for it and takes its answer.
    pub async fn check(&self) -> Result<()> {
        if let Some(e) = self.fenced() {
            return Err(e);
        }
        let seen = self.done.load(Ordering::Acquire);
        let _turn = self.gate.lock().await;
        if self.done.load(Ordering::Acquire) != seen {
            // A check ran while this caller waited: its answer is this one's.
            return self.fenced().map_or(Ok(()), Err);
        }
        if let Some(e) = self.fenced() {
            return Err(e);
        }
        self.reads.fetch_add(1, Ordering::Relaxed);
        let sent = tokio::time::Instant::now();
        let found = self.probe.check().await;
        self.done.fetch_add(1, Ordering::Release);
        if matches!(found, Ok(LockCheck::Held) | Err(_)) {
            // Unreadable counts too: uploads then meet the same store, and
            // each must not wait for a read of its own first.
            *self.looked.lock().unwrap_or_else(|e| e.into_inner()) = sent;
        }
        match found? {
            LockCheck::Held => Ok(()),
            other => {
                self.trip(other.describe());
                self.fenced().map_or(Ok(()), Err)
            }
        }
    }

    /// [`check`](Self::check), unless the lock was looked at less than
    /// `within` ago (and found held, or could not be read).
    pub async fn check_recent(&self, within: Duration) -> Result<()> {
        if let Some(e) = self.fenced() {
            return Err(e);
        }
        let looked = *self.looked.lock().unwrap_or_else(|e| e.into_inner());
        if looked.elapsed() < within {
            return Ok(());
        }
        self.check().await
    }

    /// Trips the fence (once), saying so loudly.
    fn trip(&self, now: String) {
        if self.tripped.set(now.clone()).is_ok() {
            tracing::error!(
                "FENCED: the mount lock {} is no longer this mount's: {now}. Another mount may be writing \
                 this volume: this mount stores nothing more; its writes and fsyncs fail with EIO and the \
                 blocks it has not stored stay where they are (counted at exit). Unmount it.",
                self.key
            );
        }
    }

    /// Checks the lock every `every` until the fence trips (a failed read
    /// is logged and tried again at the next tick). The task ends when the
    /// fence trips; abort it at exit.
    pub fn watch(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let fence = Arc::clone(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                match fence.check().await {
                    Ok(()) => {}
                    Err(e) if e.is_fenced() => return,
                    Err(e) => tracing::warn!("could not check the mount lock {}: {e}", fence.key),
                }
            }
        })
    }
}

/// Where a [`FencedDevice`] sits, which decides what its flush does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Over the caches: a flush checks the lock first.
    Top,
    /// Under the caches, over the store: uploads pass here.
    Uploads,
}

/// A device that refuses writes, discards and flushes once its [`Fence`]
/// has tripped ([`Error::Fenced`]); reads pass. [`FencedDevice::top`] goes
/// over the caches (each flush checks the lock before anything is
/// uploaded), [`FencedDevice::uploads`] under them (the uploads the caches
/// make are refused once fenced, so their dirty blocks stay theirs).
#[derive(Debug)]
pub struct FencedDevice<D> {
    inner: D,
    fence: Arc<Fence>,
    place: Place,
}

impl<D: BlockDevice> FencedDevice<D> {
    /// Over the caches: a flush checks the lock (see [`Fence::check`]) and
    /// then flushes `inner`.
    pub fn top(inner: D, fence: Arc<Fence>) -> Self {
        FencedDevice { inner, fence, place: Place::Top }
    }

    /// Under the caches, over the store.
    pub fn uploads(inner: D, fence: Arc<Fence>) -> Self {
        FencedDevice { inner, fence, place: Place::Uploads }
    }

    /// The fence.
    pub fn fence(&self) -> &Arc<Fence> {
        &self.fence
    }

    /// The device below.
    pub fn inner(&self) -> &D {
        &self.inner
    }

    fn open(&self) -> Result<()> {
        self.fence.fenced().map_or(Ok(()), Err)
    }

    /// Before a write: under the caches (an upload, a delete), a check of
    /// the lock when it was last found held more than [`UPLOAD_RECHECK`]
    /// ago; over them, only whether the fence has tripped.
    async fn before_write(&self) -> Result<()> {
        if self.place == Place::Top {
            return self.open();
        }
        match self.fence.check_recent(UPLOAD_RECHECK).await {
            Err(e) if e.is_fenced() => Err(e),
            // Unreadable: the upload meets the same store and says so.
            Err(e) => {
                tracing::debug!("could not check the mount lock {} before an upload: {e}", self.fence.key);
                Ok(())
            }
            Ok(()) => Ok(()),
        }
    }

    /// `result`, or [`Error::Fenced`] when the fence tripped meanwhile
    /// (the layer below reports the refused upload in its own words).
    fn fenced_or(&self, result: Result<()>) -> Result<()> {
        match (result, self.fence.fenced()) {
            (Err(_), Some(fenced)) => Err(fenced),
            (result, _) => result,
        }
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl<D: BlockDevice> BlockDevice for FencedDevice<D> {
    fn geometry(&self) -> Geometry {
        self.inner.geometry()
    }

    async fn read_block(&self, block: BlockId) -> Result<Bytes> {
        self.inner.read_block(block).await
    }

    async fn write_block(&self, block: BlockId, data: Bytes) -> Result<()> {
        self.before_write().await?;
        let result = self.inner.write_block(block, data).await;
        self.fenced_or(result)
    }

    async fn read_partial(&self, block: BlockId, offset: u32, len: usize) -> Result<Bytes> {
        self.inner.read_partial(block, offset, len).await
    }
    fn ranged_reads(&self) -> bool {
        self.inner.ranged_reads()
    }

    async fn write_partial(&self, block: BlockId, offset: u32, data: Bytes) -> Result<()> {
        self.before_write().await?;
        let result = self.inner.write_partial(block, offset, data).await;
        self.fenced_or(result)
    }

    async fn discard(&self, blocks: Range<u64>) -> Result<()> {
        self.before_write().await?;
        let result = self.inner.discard(blocks).await;
        self.fenced_or(result)
    }

    async fn flush(&self) -> Result<()> {
        self.open()?;
        if self.place == Place::Top {
            // Unreadable (only with --io-timeout): the flush fails rather
            // than upload without knowing whose the volume is.
            self.fence.check().await?;
        }
        let result = self.inner.flush().await;
        self.fenced_or(result)
    }

    async fn block_status(&self, blocks: Range<u64>) -> Result<Vec<(Range<u64>, Allocation)>> {
        self.inner.block_status(blocks).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::lock::{LockOptions, MountLock, break_lock};
    use object_store::ObjectStore;
    use object_store::memory::InMemory;
    use s3block_core::MemoryDevice;

    fn opts(host: &str) -> LockOptions {
        LockOptions { host: host.into(), now: std::time::SystemTime::now(), enforced: Some(true) }
    }

    async fn locked() -> (Arc<dyn ObjectStore>, MountLock, Arc<Fence>) {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let lock = MountLock::acquire(store.clone(), "v/", opts("host-a")).await.unwrap();
        let fence = Arc::new(Fence::new(lock.probe()));
        (store, lock, fence)
    }

    fn geometry() -> Geometry {
        Geometry::new(1 << 20, 4096).unwrap()
    }

    fn block(byte: u8) -> Bytes {
        Bytes::from(vec![byte; 4096])
    }

    #[tokio::test]
    async fn a_held_lock_lets_everything_through() {
        let (_store, lock, fence) = locked().await;
        let dev = FencedDevice::top(MemoryDevice::new(geometry()), fence.clone());
        dev.write_block(BlockId(1), block(1)).await.unwrap();
        dev.write_partial(BlockId(2), 10, Bytes::from_static(b"x")).await.unwrap();
        dev.discard(3..4).await.unwrap();
        dev.flush().await.unwrap();
        assert_eq!(dev.read_block(BlockId(1)).await.unwrap(), block(1));
        assert!(!fence.is_tripped());
        assert_eq!(fence.reads(), 1, "one flush, one read of the lock");
        assert!(lock.release().await.unwrap());
    }

    #[tokio::test]
    async fn a_broken_then_taken_lock_fences_writes_uploads_and_flushes() {
        let (store, lock, fence) = locked().await;
        let top = FencedDevice::top(MemoryDevice::new(geometry()), fence.clone());
        let below = FencedDevice::uploads(MemoryDevice::new(geometry()), fence.clone());
        below.write_block(BlockId(0), block(7)).await.unwrap();
        // `s3block unlock --force`, then another mount.
        break_lock(store.as_ref(), "v/").await.unwrap().unwrap();
        let other = MountLock::acquire(store.clone(), "v/", opts("host-b")).await.unwrap();
        let err = top.flush().await.unwrap_err();
        assert!(err.is_fenced(), "{err}");
        let text = err.to_string();
        assert!(text.contains("host-b") && text.contains("s3backer-mounted"), "{text}");
        assert!(matches!(top.write_block(BlockId(1), block(1)).await, Err(Error::Fenced { .. })));
        assert!(matches!(
            top.write_partial(BlockId(1), 0, block(1).slice(..8)).await,
            Err(Error::Fenced { .. })
        ));
        assert!(matches!(top.discard(0..1).await, Err(Error::Fenced { .. })));
        // Below the caches: uploads and deletes refused, nothing changes there.
        assert!(matches!(below.write_block(BlockId(0), block(9)).await, Err(Error::Fenced { .. })));
        assert!(matches!(below.discard(0..1).await, Err(Error::Fenced { .. })));
        assert!(matches!(below.flush().await, Err(Error::Fenced { .. })));
        assert_eq!(below.read_block(BlockId(0)).await.unwrap(), block(7), "reads still pass");
        // Tripped for good: no more reads of the lock.
        let reads = fence.reads();
        assert!(top.flush().await.unwrap_err().is_fenced());
        assert_eq!(fence.reads(), reads);
        // The fenced mount's release leaves the new holder's lock alone.
        assert!(!lock.release().await.unwrap());
        assert!(other.release().await.unwrap());
    }

    #[tokio::test]
    async fn a_removed_lock_fences_too() {
        let (store, lock, fence) = locked().await;
        break_lock(store.as_ref(), "v/").await.unwrap();
        let err = fence.check().await.unwrap_err();
        assert!(err.is_fenced() && err.to_string().contains("removed"), "{err}");
        assert!(fence.holder().unwrap().contains("unlock --force"));
        assert!(!lock.release().await.unwrap());
    }

    /// Flushes that arrive while a check is in flight take its answer:
    /// a burst of 64 costs no read of its own.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_of_flushes_shares_its_checks() {
        let (_store, lock, fence) = locked().await;
        let dev = Arc::new(FencedDevice::top(MemoryDevice::new(geometry()), fence.clone()));
        // A check in flight: the burst arrives while it runs.
        let in_flight = fence.gate.lock().await;
        let flushes: Vec<_> = (0..64)
            .map(|_| {
                let dev = dev.clone();
                tokio::spawn(async move { dev.flush().await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
        fence.done.fetch_add(1, Ordering::Release);
        drop(in_flight);
        for f in flushes {
            f.await.unwrap().unwrap();
        }
        assert_eq!(fence.reads(), 0, "64 flushes that came during a check read the lock themselves");
        dev.flush().await.unwrap();
        assert_eq!(fence.reads(), 1, "a flush after the burst reads the lock");
        assert!(lock.release().await.unwrap());
    }

    /// Under the caches, an upload rechecks a lock last found held more
    /// than five seconds ago (once for uploads arriving together), and is
    /// refused once it is another mount's.
    #[tokio::test(start_paused = true)]
    async fn uploads_recheck_a_lock_not_confirmed_lately() {
        let (store, lock, fence) = locked().await;
        let below = FencedDevice::uploads(MemoryDevice::new(geometry()), fence.clone());
        below.write_block(BlockId(0), block(1)).await.unwrap();
        assert_eq!(fence.reads(), 0, "a lock taken a moment ago is not read again");
        tokio::time::sleep(UPLOAD_RECHECK + Duration::from_millis(1)).await;
        below.write_block(BlockId(1), block(1)).await.unwrap();
        below.discard(2..3).await.unwrap();
        assert_eq!(fence.reads(), 1);
        break_lock(store.as_ref(), "v/").await.unwrap();
        let _b = MountLock::acquire(store.clone(), "v/", opts("host-b")).await.unwrap();
        below.write_block(BlockId(3), block(3)).await.unwrap();
        assert_eq!(fence.reads(), 1, "within the recheck time the upload goes through unchecked");
        tokio::time::sleep(UPLOAD_RECHECK).await;
        let err = below.write_block(BlockId(4), block(4)).await.unwrap_err();
        assert!(err.is_fenced(), "{err}");
        assert_eq!(below.read_block(BlockId(4)).await.unwrap(), block(0), "the refused upload was stored");
        assert!(!lock.release().await.unwrap());
    }

    /// A lock that cannot be read trips nothing: the flush fails with the
    /// store's error, the uploads go on without a read of their own for
    /// the recheck time, and once the store answers a flush succeeds.
    #[tokio::test(start_paused = true)]
    async fn an_unreadable_lock_fails_the_flush_and_trips_nothing() {
        use crate::{FaultConfig, FaultStore};
        let refusing = FaultConfig { permanent_rate: 1.0, ..Default::default() };
        let faulty = Arc::new(FaultStore::new(InMemory::new(), refusing, 7));
        faulty.set_enabled(false);
        let store: Arc<dyn ObjectStore> = faulty.clone();
        let lock = MountLock::acquire(store, "v/", opts("host-a")).await.unwrap();
        let fence = Arc::new(Fence::new(lock.probe()));
        let top = FencedDevice::top(MemoryDevice::new(geometry()), fence.clone());
        let below = FencedDevice::uploads(MemoryDevice::new(geometry()), fence.clone());
        faulty.set_enabled(true);
        tokio::time::sleep(UPLOAD_RECHECK * 2).await;
        let err = top.flush().await.unwrap_err();
        assert!(!err.is_fenced() && err.to_string().contains("s3backer-mounted"), "{err}");
        assert!(!fence.is_tripped());
        let reads = fence.reads();
        below.write_block(BlockId(1), block(1)).await.unwrap();
        assert_eq!(fence.reads(), reads, "an upload read the lock again right after a failed read");
        faulty.set_enabled(false);
        top.flush().await.unwrap();
        assert!(lock.release().await.unwrap());
    }

    /// The watch reads the lock once a period and trips by itself, with no
    /// flush; it then stops reading.
    #[tokio::test(start_paused = true)]
    async fn the_watch_trips_the_fence_within_a_period() {
        let (store, lock, fence) = locked().await;
        let watch = fence.watch(LOCK_CHECK_EVERY);
        tokio::time::sleep(LOCK_CHECK_EVERY * 3 + Duration::from_secs(1)).await;
        assert_eq!(fence.reads(), 3, "one read a period");
        assert!(!fence.is_tripped());
        break_lock(store.as_ref(), "v/").await.unwrap();
        let _b = MountLock::acquire(store.clone(), "v/", opts("host-b")).await.unwrap();
        tokio::time::sleep(LOCK_CHECK_EVERY).await;
        assert!(fence.is_tripped(), "not fenced a period after the lock was taken");
        assert!(fence.holder().unwrap().contains("host-b"));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(watch.is_finished(), "the watch goes on after the fence tripped");
        assert_eq!(fence.reads(), 4);
        assert!(!lock.release().await.unwrap());
    }
}
