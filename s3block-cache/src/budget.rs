//! [`CacheBudget`]: one memory budget and one set of upload slots shared by
//! the caches of several volumes served by one process.
//!
//! The policy is equal shares. With `n` caches in the budget, each may hold
//! `cache_size / n` bytes, of which `max_dirty / n` dirty, and every cache
//! enforces its share exactly as it enforces its own [`CacheConfig`]
//! limits (clean blocks evicted, writers waiting for room). A cache only
//! ever waits for room in its own share, which its own uploads free, so a
//! volume never waits on another one, whatever the others hold.
//!
//! The shares change when a cache joins or leaves. A cache joins in two
//! steps: [`CacheBudget::make_room`] first shrinks every member to the
//! smaller share (its dirty limit at once, its cached bytes as soon as its
//! uploads let it evict them; the call waits for that), and only then is the
//! new cache built with the share it returns and added with
//! [`BlockCache::join_budget`]. A cache leaves with
//! [`BlockCache::leave_budget`] once closed; the others then grow to the
//! larger share. So the sum of the shares in force, and with it the bytes
//! the caches hold, never exceeds the budget, even while it changes.
//!
//! Uploads take a slot from one semaphore of `upload_slots` permits as well
//! as from their own cache's [`CacheConfig::upload_concurrency`]; a slot
//! freed by one cache wakes the others' schedulers.
//!
//! **Disk tiers.** A budget made with [`CacheBudget::with_disk`] also has a
//! disk total: each volume's [`Share`] then has `disk_size` (the total over
//! `n`) and `disk_dirty` (the dirty total over `n`, when one was given),
//! which its [`DiskCache`](crate::DiskCache) is opened with before it joins
//! with [`DiskCache::join_budget`](crate::DiskCache::join_budget).
//! [`CacheBudget::make_room`] shrinks the memory caches first, then the
//! disk tiers ([`DiskCache::resize`](crate::DiskCache::resize): the dirty
//! limit at once, the bytes on disk once uploads let the oldest segments be
//! reclaimed), so the bytes on disk too stay within the total; a volume
//! leaving lets the tiers grow back. A share below four segments of any
//! tier (their segment size is fixed when they open) is refused. In such a
//! stack the uploads to the store are the disk tiers', so they take the
//! slots, and the memory caches over them join with
//! [`BlockCache::join_budget_over_disk`] and take none (their uploads go to
//! the local disk).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> s3block_core::Result<()> {
//! use std::sync::Arc;
//! use s3block_cache::{BlockCache, CacheBudget, CacheConfig};
//! use s3block_core::{Geometry, MemoryDevice};
//!
//! let budget = CacheBudget::new(4 << 20, 2 << 20, 4);
//! let mut caches = Vec::new();
//! for block_size in [64 << 10, 256 << 10] {
//!     let share = budget.make_room(block_size).await?;
//!     let config = CacheConfig::builder().cache_size(share.cache_size).max_dirty(share.max_dirty).build();
//!     let cache = Arc::new(BlockCache::new(MemoryDevice::new(Geometry::new(8 << 20, block_size)?), config)?);
//!     cache.join_budget(&budget);
//!     caches.push(cache);
//! }
//! assert_eq!(budget.members(), 2);
//! assert_eq!(caches[0].stats().cache_size, 2 << 20);
//! # Ok(()) }
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use s3block_core::{BlockDevice, Error, Result, format_size};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::BlockCache;
use crate::cache::Shared;

/// One volume's part of a [`CacheBudget`]: the limits its caches are
/// built with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    /// Most bytes of block data the memory cache may hold.
    pub cache_size: u64,
    /// Most dirty bytes before its writers wait.
    pub max_dirty: u64,
    /// Most bytes on disk of its disk tier, when the budget has a disk
    /// total ([`CacheBudget::with_disk`]).
    pub disk_size: Option<u64>,
    /// Most bytes of its disk tier not yet stored, when the budget's disk
    /// total has a dirty limit (else the tier's default: half its size).
    pub disk_dirty: Option<u64>,
}

/// What the budget needs of a member cache, whatever its device type.
pub(crate) trait Member: Send + Sync {
    /// A unique id (the address of the cache's shared state).
    fn id(&self) -> usize;
    /// Lowers or raises the cache's limits; true once it holds no more
    /// than `share.cache_size` bytes (else uploads must free some first).
    fn apply(&self, share: Share) -> bool;
    /// Waits until an upload ended or room was freed.
    fn progress(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>>;
    /// Wakes the cache's upload scheduler (an upload slot came free).
    fn wake(&self);
    /// The largest block the cache holds.
    fn block_size(&self) -> u64;
}

/// What the budget needs of a member disk tier, whatever its device type.
pub(crate) trait DiskMember: Send + Sync {
    /// A unique id (the address of the tier's shared state).
    fn id(&self) -> usize;
    /// Bytes of one of its segments: it holds four at least.
    fn segment_size(&self) -> u64;
    /// Shrinks (or grows) the tier to `size` bytes, `dirty_limit` dirty,
    /// waiting for its uploads when it shrinks.
    fn resize(
        &self,
        size: u64,
        dirty_limit: Option<u64>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + '_>>;
    /// Grows the tier to `size` bytes, `dirty_limit` dirty (never waits).
    fn grow(&self, size: u64, dirty_limit: Option<u64>);
    /// Wakes the tier's uploader (an upload slot came free).
    fn wake(&self);
}

/// A memory budget and upload slots shared by several [`BlockCache`]s.
/// See the module docs for the policy.
pub struct CacheBudget {
    cache_size: u64,
    max_dirty: u64,
    /// The disk tiers' total size and dirty limit, when they share one.
    disk: Option<(u64, Option<u64>)>,
    upload_slots: usize,
    slots: Arc<Semaphore>,
    members: Mutex<Vec<Weak<dyn Member>>>,
    /// The memory caches whose uploads take no slot (they go to a disk
    /// tier, whose own uploads take them), by id.
    local: Mutex<Vec<usize>>,
    disks: Mutex<Vec<Weak<dyn DiskMember>>>,
    /// How many members that take upload slots joined and have not left.
    count: AtomicUsize,
    /// Held while the shares change, so two joins never interleave.
    changing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for CacheBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheBudget")
            .field("cache_size", &self.cache_size)
            .field("max_dirty", &self.max_dirty)
            .field("disk", &self.disk)
            .field("upload_slots", &self.upload_slots)
            .field("members", &self.members())
            .finish()
    }
}

impl CacheBudget {
    /// A budget of `cache_size` bytes of cached blocks, `max_dirty` of them
    /// dirty (at most `cache_size`), and `upload_slots` uploads at once
    /// (at least 1), for all its caches together.
    pub fn new(cache_size: u64, max_dirty: u64, upload_slots: usize) -> Arc<Self> {
        let upload_slots = upload_slots.max(1);
        Arc::new(CacheBudget {
            cache_size,
            max_dirty: max_dirty.min(cache_size),
            disk: None,
            upload_slots,
            slots: Arc::new(Semaphore::new(upload_slots)),
            members: Mutex::default(),
            local: Mutex::default(),
            disks: Mutex::default(),
            count: AtomicUsize::new(0),
            changing: tokio::sync::Mutex::new(()),
        })
    }

    /// [`CacheBudget::new`] with a disk total as well: the volumes' disk
    /// tiers share `disk_size` bytes on disk, `disk_dirty` of them not yet
    /// stored (`None`: each tier's default, half its share). Each volume's
    /// [`Share`] then has `disk_size` (and `disk_dirty`) set, and a tier
    /// joined with [`DiskCache::join_budget`](crate::DiskCache::join_budget)
    /// follows its share and takes the budget's upload slots.
    pub fn with_disk(
        cache_size: u64,
        max_dirty: u64,
        upload_slots: usize,
        disk_size: u64,
        disk_dirty: Option<u64>,
    ) -> Arc<Self> {
        let mut budget = Arc::into_inner(Self::new(cache_size, max_dirty, upload_slots))
            .unwrap_or_else(|| unreachable!("a new budget has one reference"));
        budget.disk = Some((disk_size, disk_dirty));
        Arc::new(budget)
    }

    /// The disk tiers' total size in bytes, when the budget has one.
    pub fn disk_size(&self) -> Option<u64> {
        self.disk.map(|(size, _)| size)
    }

    /// The disk tiers' total dirty limit in bytes, when one was given.
    pub fn disk_dirty(&self) -> Option<u64> {
        self.disk.and_then(|(_, dirty)| dirty)
    }

    /// The whole budget's cache size in bytes.
    pub fn cache_size(&self) -> u64 {
        self.cache_size
    }

    /// The whole budget's dirty limit in bytes.
    pub fn max_dirty(&self) -> u64 {
        self.max_dirty
    }

    /// The shared upload slots.
    pub fn upload_slots(&self) -> usize {
        self.upload_slots
    }

    /// How many caches are in the budget now.
    pub fn members(&self) -> usize {
        self.live().len()
    }

    /// The share of each of `n` caches whose largest block is `block_size`
    /// bytes; an error naming the figures when a share could not hold one
    /// block.
    /// With a disk total, the disk share must hold four segments of each
    /// disk tier in the budget (their segment size is the one they were
    /// opened with) and of a new tier of `block_size`-byte blocks, and one
    /// block dirty; else an error naming `--disk-cache-size` and `n`.
    pub fn share_of(&self, n: usize, block_size: u64) -> Result<Share> {
        let n = n.max(1) as u64;
        let share = Share {
            cache_size: self.cache_size / n,
            max_dirty: self.max_dirty / n,
            disk_size: self.disk.map(|(size, _)| size / n),
            disk_dirty: self.disk.and_then(|(_, dirty)| dirty).map(|d| d / n),
        };
        if let Some((total, dirty)) = self.disk {
            let size = total / n;
            let bs = u32::try_from(block_size).unwrap_or(u32::MAX);
            let new_tier = 4 * crate::DiskCacheConfig::builder("", size).build().segment_size(bs);
            let smallest = self.live_disks().iter().map(|d| 4 * d.segment_size()).fold(new_tier, u64::max);
            if size < smallest {
                return Err(Error::Config(format!(
                    "the disk cache budget (--disk-cache-size {}) shared by {n} volume(s) leaves {} each, less \
                     than a disk cache's minimum of 4 segments ({}): give a larger --disk-cache-size, or serve \
                     fewer volumes",
                    format_size(total),
                    format_size(size),
                    // Whole KiB, rounded up (a segment holds four blocks and their headers).
                    format_size(smallest.div_ceil(1 << 10) << 10)
                )));
            }
            let dirty_share = share.disk_dirty.unwrap_or(size / 2);
            if dirty_share < block_size + crate::disk::ENTRY_HEADER {
                return Err(Error::Config(format!(
                    "the disk cache's dirty budget (--disk-max-dirty {}) shared by {n} volume(s) leaves {} each, \
                     less than one block of {}: give a larger --disk-max-dirty, or serve fewer volumes",
                    format_size(dirty.unwrap_or(total / 2)),
                    format_size(dirty_share),
                    format_size(block_size)
                )));
            }
        }
        if share.max_dirty < block_size {
            return Err(Error::Config(format!(
                "the cache budget ({} cached, {} dirty) shared by {n} volume(s) leaves {} dirty each, less \
                 than one block of {}: give a larger --cache-size / --max-dirty, or serve fewer volumes",
                format_size(self.cache_size),
                format_size(self.max_dirty),
                format_size(share.max_dirty),
                format_size(block_size)
            )));
        }
        Ok(share)
    }

    /// Makes room for one more cache of `block_size`-byte blocks: shrinks
    /// every member to the share of one more cache, waiting until each
    /// holds no more than that, and returns the share to build the new
    /// cache with. Joins and leaves are serialised: call
    /// [`BlockCache::join_budget`] right after building the cache.
    pub async fn make_room(&self, block_size: u64) -> Result<Share> {
        let _changing = self.changing.lock().await;
        let members = self.live();
        let largest = members.iter().map(|m| m.block_size()).max().unwrap_or(0).max(block_size);
        let share = self.share_of(members.len() + 1, largest)?;
        for member in &members {
            loop {
                let progress = member.progress();
                if member.apply(share) {
                    break;
                }
                member.wake();
                progress.await;
            }
        }
        // Then the disk tiers, which the memory caches' uploads go to.
        if let Some(size) = share.disk_size {
            for disk in self.live_disks() {
                if let Err(e) = disk.resize(size, share.disk_dirty).await {
                    // No room made: the members grow back.
                    self.remove(usize::MAX);
                    return Err(e);
                }
            }
        }
        Ok(share)
    }

    fn live_disks(&self) -> Vec<Arc<dyn DiskMember>> {
        let mut disks = lock_list(&self.disks);
        disks.retain(|m| m.strong_count() > 0);
        disks.iter().filter_map(Weak::upgrade).collect()
    }

    /// How many members take upload slots: the disk tiers and the memory
    /// caches not over one.
    fn recount(&self) {
        let local = lock_list(&self.local).clone();
        let memory = self.live().iter().filter(|m| !local.contains(&m.id())).count();
        self.count.store(memory + self.live_disks().len(), Ordering::Relaxed);
    }

    pub(crate) fn add_disk(&self, disk: Weak<dyn DiskMember>) {
        lock_list(&self.disks).push(disk);
        self.recount();
    }

    pub(crate) fn remove_disk(&self, id: usize) {
        lock_list(&self.disks).retain(|m| m.upgrade().is_some_and(|m| m.id() != id));
        self.recount();
    }

    /// The members still alive (a dropped cache is forgotten).
    fn live(&self) -> Vec<Arc<dyn Member>> {
        let mut members = self.lock_members();
        members.retain(|m| m.strong_count() > 0);
        members.iter().filter_map(Weak::upgrade).collect()
    }

    fn lock_members(&self) -> MutexGuard<'_, Vec<Weak<dyn Member>>> {
        lock_list(&self.members)
    }

    /// Adds a memory cache; `local` when its uploads go to a disk tier
    /// (they take no slot).
    fn add(&self, member: Weak<dyn Member>, local: bool) {
        if local && let Some(m) = member.upgrade() {
            lock_list(&self.local).push(m.id());
        }
        self.lock_members().push(member);
        self.recount();
    }

    /// Forgets member `id`, then gives the others their larger share.
    fn remove(&self, id: usize) {
        self.lock_members().retain(|m| m.upgrade().is_some_and(|m| m.id() != id));
        lock_list(&self.local).retain(|&m| m != id);
        self.recount();
        let members = self.live();
        let largest = members.iter().map(|m| m.block_size()).max().unwrap_or(0);
        if let Ok(share) = self.share_of(members.len(), largest) {
            for member in members {
                // Growing: always fits.
                member.apply(share);
            }
            if let Some(size) = share.disk_size {
                for disk in self.live_disks() {
                    disk.grow(size, share.disk_dirty);
                }
            }
        }
    }

    /// After a volume that made room failed to start: the members grow
    /// back to the share of those there are.
    #[cfg(feature = "frontend")]
    pub(crate) fn give_back(&self) {
        self.remove(usize::MAX);
    }

    /// Whether memory cache `id` uploads to a disk tier (taking no slot).
    pub(crate) fn is_local(&self, id: usize) -> bool {
        lock_list(&self.local).contains(&id)
    }

    /// An upload slot for a cache with `in_flight` uploads, if one is free
    /// and the cache may take it: a cache never holds the slots the other
    /// members need for one upload each, so a volume whose uploads hang
    /// (an unreachable store, a fenced mount) never stops the others.
    /// Dropping the slot wakes every member.
    pub(crate) fn try_slot(self: &Arc<Self>, in_flight: usize) -> Option<UploadSlot> {
        let others = self.count.load(Ordering::Relaxed).saturating_sub(1);
        if in_flight >= self.upload_slots.saturating_sub(others).max(1) {
            return None;
        }
        let permit = self.slots.clone().try_acquire_owned().ok()?;
        Some(UploadSlot { permit: Some(permit), budget: Arc::downgrade(self) })
    }

    fn wake_all(&self) {
        for member in self.live() {
            member.wake();
        }
        for disk in self.live_disks() {
            disk.wake();
        }
    }
}

fn lock_list<T>(list: &Mutex<T>) -> MutexGuard<'_, T> {
    list.lock().unwrap_or_else(|e| e.into_inner())
}

/// One of the budget's upload slots, held by one upload.
#[derive(Debug)]
pub(crate) struct UploadSlot {
    permit: Option<OwnedSemaphorePermit>,
    budget: Weak<CacheBudget>,
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        // The permit goes back first, so a scheduler woken finds it.
        drop(self.permit.take());
        if let Some(budget) = self.budget.upgrade() {
            budget.wake_all();
        }
    }
}

impl<D: BlockDevice + 'static> Member for Shared<D> {
    fn id(&self) -> usize {
        std::ptr::from_ref(self) as usize
    }

    fn apply(&self, share: Share) -> bool {
        let fits = {
            let mut st = self.lock();
            st.max_dirty = share.max_dirty;
            st.cache_size = share.cache_size;
            st.evict_for(0);
            st.resident <= share.cache_size
        };
        // Writers see the new dirty limit; the scheduler uploads at once
        // above half of it.
        self.room.notify_waiters();
        self.work.notify_one();
        fits
    }

    fn progress(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        let mut notified = Box::pin(self.progress.notified());
        notified.as_mut().enable();
        notified
    }

    fn wake(&self) {
        self.work.notify_one();
    }

    fn block_size(&self) -> u64 {
        u64::from(self.geometry.get().block_size())
    }
}

impl<D: BlockDevice + 'static> BlockCache<D> {
    /// Adds this cache to `budget`: from now on its uploads take the
    /// budget's slots too, and its limits follow the budget's shares. Build
    /// it with the [`Share`] that [`CacheBudget::make_room`] returned.
    pub fn join_budget(&self, budget: &Arc<CacheBudget>) {
        self.join(budget, false);
    }

    /// [`join_budget`](Self::join_budget) for a cache over a disk tier
    /// that is in the same budget ([`DiskCache::join_budget`]): its
    /// uploads go to the local disk and take no upload slot (the tier's
    /// uploads to the store take them).
    ///
    /// [`DiskCache::join_budget`]: crate::DiskCache::join_budget
    pub fn join_budget_over_disk(&self, budget: &Arc<CacheBudget>) {
        self.join(budget, true);
    }

    fn join(&self, budget: &Arc<CacheBudget>, local: bool) {
        let shared = self.shared();
        let _ = shared.budget.set(budget.clone());
        let member: Arc<dyn Member> = shared.clone();
        budget.add(Arc::downgrade(&member), local);
    }

    /// Takes this cache out of its budget (call it once the cache is
    /// closed): the others grow to their larger share.
    pub fn leave_budget(&self) {
        let shared = self.shared();
        if let Some(budget) = shared.budget.get() {
            budget.remove(Member::id(shared.as_ref()));
        }
    }
}

#[cfg(test)]
#[path = "budget_tests.rs"]
mod tests;
