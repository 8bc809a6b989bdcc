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

/// One cache's part of a [`CacheBudget`]: the limits it is built with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    /// Most bytes of block data the cache may hold.
    pub cache_size: u64,
    /// Most dirty bytes before its writers wait.
    pub max_dirty: u64,
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

/// A memory budget and upload slots shared by several [`BlockCache`]s.
/// See the module docs for the policy.
pub struct CacheBudget {
    cache_size: u64,
    max_dirty: u64,
    upload_slots: usize,
    slots: Arc<Semaphore>,
    members: Mutex<Vec<Weak<dyn Member>>>,
    /// How many members joined and have not left.
    count: AtomicUsize,
    /// Held while the shares change, so two joins never interleave.
    changing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for CacheBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheBudget")
            .field("cache_size", &self.cache_size)
            .field("max_dirty", &self.max_dirty)
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
            upload_slots,
            slots: Arc::new(Semaphore::new(upload_slots)),
            members: Mutex::default(),
            count: AtomicUsize::new(0),
            changing: tokio::sync::Mutex::new(()),
        })
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
    pub fn share_of(&self, n: usize, block_size: u64) -> Result<Share> {
        let n = n.max(1) as u64;
        let share = Share { cache_size: self.cache_size / n, max_dirty: self.max_dirty / n };
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
        Ok(share)
    }

    /// The members still alive (a dropped cache is forgotten).
    fn live(&self) -> Vec<Arc<dyn Member>> {
        let mut members = self.lock_members();
        members.retain(|m| m.strong_count() > 0);
        members.iter().filter_map(Weak::upgrade).collect()
    }

    fn lock_members(&self) -> MutexGuard<'_, Vec<Weak<dyn Member>>> {
        self.members.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self, member: Weak<dyn Member>) {
        self.lock_members().push(member);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Forgets member `id`, then gives the others their larger share.
    fn remove(&self, id: usize) {
        self.lock_members().retain(|m| m.upgrade().is_some_and(|m| m.id() != id));
        let members = self.live();
        self.count.store(members.len(), Ordering::Relaxed);
        let largest = members.iter().map(|m| m.block_size()).max().unwrap_or(0);
        if let Ok(share) = self.share_of(members.len(), largest) {
            for member in members {
                // Growing: always fits.
                member.apply(share);
            }
        }
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
    }
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
            st.evict_to(share.cache_size);
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
        let shared = self.shared();
        let _ = shared.budget.set(budget.clone());
        let member: Arc<dyn Member> = shared.clone();
        budget.add(Arc::downgrade(&member));
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
