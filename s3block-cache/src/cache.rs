//! [`BlockCache`]: the block device users mount, over the store.

use std::ops::Range;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use async_trait::async_trait;
use bytes::Bytes;
use s3block_core::{
    Allocation, BlockDevice, BlockId, Error, FetchReason, Geometry, GeometryCell, Result, check_block_len,
    check_block_range, is_zero, push_run, zeros,
};
use tokio::runtime::Handle;
use tokio::sync::{Notify, Semaphore, SemaphorePermit};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::budget::CacheBudget;
use crate::config::{CacheConfig, Limits};
use crate::entry::Content;
use crate::load::{share_error, wait};
use crate::state::{LoadOutcome, ReadOrder, State};
use crate::stats::{CacheStats, Counters};
use crate::zeroset::RangeSet;

/// What the cache, its uploads and its fetches share.
#[derive(Debug)]
pub(crate) struct Shared<D> {
    pub(crate) lower: D,
    /// The volume's geometry; [`BlockCache::grow`] raises its block count.
    pub(crate) geometry: GeometryCell,
    pub(crate) limits: Limits,
    pub(crate) config: CacheConfig,
    state: Mutex<State>,
    /// Woken whenever an upload ends or room frees up: flushes and
    /// discards recheck.
    pub(crate) progress: Notify,
    /// Writers waiting for room under the dirty limit, woken one at a time:
    /// once per upload that ends, and by each writer that got room while
    /// others still wait (so a freed block wakes one writer, not all of
    /// them, each to find the room taken).
    pub(crate) room: Notify,
    /// Wakes the write-back scheduler.
    pub(crate) work: Notify,
    pub(crate) counters: Counters,
    pub(crate) runtime: Handle,
    /// The budget shared with other volumes' caches, once joined.
    pub(crate) budget: OnceLock<Arc<CacheBudget>>,
    /// One permit per fetch from below in flight
    /// ([`Limits::fetch_concurrency`]); handed out in the order asked.
    fetch_slots: Semaphore,
}

impl<D> Shared<D> {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // Every change to the state is completed before the lock is released,
        // so a panic elsewhere leaves it consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a fetch slot, counting the fetches that had to wait. The
    /// fetch holds it until its request ends.
    pub(crate) async fn fetch_slot(&self) -> SemaphorePermit<'_> {
        if let Ok(permit) = self.fetch_slots.try_acquire() {
            return permit;
        }
        Counters::bump(&self.counters.fetch_waits);
        loop {
            // The semaphore is never closed, so this only returns a permit.
            if let Ok(permit) = self.fetch_slots.acquire().await {
                return permit;
            }
        }
    }
}

/// A [`BlockDevice`] that keeps blocks of the device below in memory.
///
/// - Memory is bounded in bytes ([`CacheConfig::cache_size`]); only clean
///   blocks are evicted, least recently used first, the first
///   [`CacheConfig::protected_blocks`] only when no other clean block is
///   left. With a [`CacheConfig::clean_timeout`], a clean block also goes
///   that long after it was read or stored.
/// - Writes are stored in memory and uploaded in the background by at most
///   [`CacheConfig::upload_concurrency`] uploads at once, after
///   [`CacheConfig::write_delay`], so rewrites are uploaded once; a block
///   written whole goes at once unless it was uploaded less than the delay
///   ago ([`CacheConfigBuilder::prompt_uploads`](crate::CacheConfigBuilder::prompt_uploads));
///   above half of [`CacheConfig::max_dirty`] uploads start without the
///   delay, and beyond it writers wait.
/// - A partial write to a block not in memory keeps only the bytes written,
///   in 4 KiB pages (an eighth of the block for blocks under 32 KiB), and
///   costs those pages against the limits, not a whole block; the rest of
///   the block is fetched and merged when it is uploaded or read. Scattered
///   small writes at a large block size thus keep many blocks dirty and
///   gather many writes per upload. A flush then uploads more blocks: up to
///   `max_dirty` / 4 KiB of them, each a fetch and an upload. Above half of
///   `max_dirty`, a partial write to a clean block stored below drops what
///   the cache holds of it (the whole block, or pages stored by its last
///   upload) and keeps only the pages written: the dirty limit then holds
///   new writes, not bytes already stored.
/// - Blocks known to be zero below cost no memory and no requests.
/// - A write of bytes the cache knows the block holds already (its cached
///   copy, clean or dirty, or zeros over a block known zero) changes
///   nothing: no upload, counted as an unchanged write. Rewriting a file
///   with what it holds costs a comparison, not a PUT.
/// - [`flush`](BlockDevice::flush) returns once every block dirty at its call
///   is stored below.
///
/// Background work runs on the tokio runtime the cache was created in. Call
/// [`close`](BlockCache::close) before dropping it: dropping a cache with
/// dirty blocks loses them.
#[derive(Debug)]
pub struct BlockCache<D: BlockDevice + 'static> {
    shared: Arc<Shared<D>>,
    scheduler: Mutex<Option<JoinHandle<()>>>,
}

impl<D: BlockDevice + 'static> BlockCache<D> {
    /// A cache over `lower`. Must be called inside a tokio runtime, which runs
    /// the uploads and fetches.
    pub fn new(lower: D, config: CacheConfig) -> Result<Self> {
        let geometry = lower.geometry();
        let limits = config.limits(&geometry)?;
        let runtime = Handle::try_current()
            .map_err(|_| Error::Config("the block cache must be created inside a tokio runtime".into()))?;
        let retry_rng = config.upload_retry.rng();
        let clean_timeout = config.clean_timeout;
        // Where a miss may fetch part of a block, the cache watches whether
        // its misses come back for blocks it evicted (see `ranged`).
        let evicted = (config.ranged_reads
            && lower.ranged_reads()
            && crate::ranged::is_small_part(&(0..crate::ranged::RANGE_ALIGN), geometry.block_len()))
        .then(|| crate::ranged::Evicted::new(limits.cache_size));
        let shared = Arc::new(Shared {
            lower,
            geometry: GeometryCell::new(geometry),
            limits,
            config,
            state: Mutex::new(
                State::new(limits.cache_size, limits.max_dirty, retry_rng)
                    .with_eviction(limits.protected_blocks, clean_timeout)
                    .with_evicted(evicted),
            ),
            progress: Notify::new(),
            room: Notify::new(),
            work: Notify::new(),
            counters: Counters::default(),
            runtime,
            budget: OnceLock::new(),
            fetch_slots: Semaphore::new(limits.fetch_concurrency),
        });
        let scheduler = shared.runtime.spawn(Arc::clone(&shared).run_scheduler());
        Ok(BlockCache { shared, scheduler: Mutex::new(Some(scheduler)) })
    }

    /// A cache over `lower` that knows which blocks are stored below (from a
    /// listing at open): every other block reads as zeros without a request.
    pub fn with_known_blocks(
        lower: D,
        config: CacheConfig,
        stored: impl IntoIterator<Item = BlockId>,
    ) -> Result<Self> {
        let cache = Self::new(lower, config)?;
        cache.learn_stored_blocks(stored);
        Ok(cache)
    }

    /// Tells the cache that exactly the blocks in `stored` are stored below,
    /// the others being absent (zero). Call it at open, before any I/O.
    pub fn learn_stored_blocks(&self, stored: impl IntoIterator<Item = BlockId>) {
        let mut blocks: Vec<u64> = stored.into_iter().map(|b| u64::from(b.0)).collect();
        blocks.sort_unstable();
        blocks.dedup();
        let mut st = self.shared.lock();
        let mut at = 0;
        for b in blocks {
            st.zeros.insert(at..b);
            st.zeros.remove(b..b + 1);
            at = b + 1;
        }
        st.zeros.insert(at..self.shared.geometry.get().block_count());
    }

    /// Starts learning which blocks are stored below from a listing made
    /// while the cache serves: until [`end_listing`](Self::end_listing) (or
    /// [`abandon_listing`](Self::abandon_listing)), the cache notes every
    /// block whose state below it changes or learns (an upload, a delete, a
    /// fetch), since the listing may have passed that block's key before.
    /// Call it before the listing starts.
    pub fn begin_listing(&self) {
        self.shared.lock().survey = Some(RangeSet::default());
    }

    /// Ends the listing [`begin_listing`](Self::begin_listing) started: it
    /// covered the blocks of `listed` and found exactly the blocks of the
    /// ranges `stored` among them. Every other block of `listed` becomes
    /// known to be zero below (read without a request), except the blocks
    /// noted since it began and the blocks the cache holds now. Returns how
    /// many blocks that is (0 without a listing begun).
    pub fn end_listing(&self, stored: impl IntoIterator<Item = Range<u64>>, listed: Range<u64>) -> u64 {
        let mut st = self.shared.lock();
        let Some(noted) = st.survey.take() else { return 0 };
        let listed = listed.start..listed.end.min(self.shared.geometry.get().block_count());
        let mut absent = RangeSet::default();
        absent.insert(listed.clone());
        for r in stored {
            absent.remove(r);
        }
        for r in noted.ranges_in(&listed) {
            absent.remove(r);
        }
        for b in st.entries.keys() {
            let b = u64::from(b.0);
            absent.remove(b..b + 1);
        }
        let learned = absent.len();
        for r in absent.into_ranges() {
            st.zeros.insert(r);
        }
        learned
    }

    /// Drops the listing [`begin_listing`](Self::begin_listing) started
    /// (it failed): nothing is learned from it.
    pub fn abandon_listing(&self) {
        self.shared.lock().survey = None;
    }

    /// The device below.
    pub fn lower(&self) -> &D {
        &self.shared.lower
    }

    /// The configuration in use.
    pub fn config(&self) -> &CacheConfig {
        &self.shared.config
    }

    /// What the cache's background work shares (for the budget).
    pub(crate) fn shared(&self) -> &Arc<Shared<D>> {
        &self.shared
    }

    /// A snapshot of the counters and the current state.
    pub fn stats(&self) -> CacheStats {
        let mut s = CacheStats::default();
        self.shared.counters.fill(&mut s);
        {
            let st = self.shared.lock();
            s.dirty_blocks = st.dirty_index.len() as u64;
            s.dirty_bytes = st.dirty_bytes;
            s.uploads_in_flight = st.in_flight as u64;
            s.resident_blocks = st.entries.values().filter(|e| e.content.size() > 0).count() as u64;
            s.resident_bytes = st.resident;
            s.known_zero_blocks = st.zeros.len();
            // The configured size, or the budget's share of it.
            s.cache_size = st.cache_size;
        }
        s.requests = self.shared.config.counters.as_ref().map(|c| c.snapshot());
        s
    }

    /// Checks the cache's bookkeeping: the bytes accounted as resident are
    /// the bytes its blocks hold, the dirty bytes those of its dirty blocks
    /// (no more than the resident bytes and the dirty limit), the resident
    /// bytes within the cache size, the bytes held for fetches in flight
    /// those of the fetches, and the dirty index, the eviction list, the
    /// upload queue and the uploads in flight consistent with the blocks.
    /// Returns the first broken invariant, described.
    ///
    /// It costs a pass over the cached blocks under the cache's lock: for
    /// tests (the model test calls it after every operation) and debugging.
    pub fn check_invariants(&self) -> std::result::Result<(), String> {
        self.shared.lock().check_invariants(self.shared.limits.upload_concurrency)
    }

    /// Sets the cumulative counters (and the store's request counters, when
    /// given) back to zero.
    pub fn reset_stats(&self) {
        self.shared.counters.reset();
        if let Some(c) = &self.shared.config.counters {
            c.reset();
        }
    }

    /// Refuses further writes, flushes every dirty block and stops the
    /// background work. Reads still work afterwards. On error the failed
    /// blocks stay dirty and the uploads keep running; call again.
    pub async fn close(&self) -> Result<()> {
        self.shared.lock().closed = true;
        loop {
            self.shared.flush().await?;
            // A write that was already past its check when the cache closed
            // may have landed after the flush began: flush again for it.
            let mut st = self.shared.lock();
            if st.dirty_index.is_empty() {
                st.stopped = true;
                break;
            }
        }
        self.shared.work.notify_one();
        let handle = self.scheduler.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(handle) = handle {
            // The scheduler only ends by returning; a join error means the
            // runtime is shutting down, when there is nothing left to stop.
            let _ = handle.await;
        }
        Ok(())
    }

    fn check_open(&self) -> Result<()> {
        if self.shared.lock().closed {
            Err(Error::Config("the block cache is closed".into()))
        } else {
            Ok(())
        }
    }

    /// Reads `range` of `block`.
    async fn read_range(&self, block: BlockId, range: Range<usize>) -> Result<Bytes> {
        let shared = &self.shared;
        let len = range.len();
        let mut read_ahead_pending = true;
        let mut first_try = true;
        // Where the pages a ranged fetch brings start in the block; `None`
        // while waiting for the whole block.
        let mut pages_at: Option<usize> = None;
        let mut order = ReadOrder::default();
        loop {
            let rx = {
                let mut st = shared.lock();
                if read_ahead_pending {
                    read_ahead_pending = false;
                    order = st.note_read(block, &range, shared.geometry.get().block_len());
                    self.read_ahead(&mut st, block, order.follows);
                }
                let hit = st.entries.get_mut(&block).and_then(|e| {
                    let prefetched = std::mem::take(&mut e.prefetched);
                    let data = e.content.read(range.clone());
                    if data.is_none() {
                        e.prefetched = prefetched;
                    }
                    data.map(|d| (d, prefetched))
                });
                if let Some((data, prefetched)) = hit {
                    st.touch(block);
                    // The first read of a block read-ahead brought in is not
                    // a hit: a request was made for it.
                    if first_try && prefetched {
                        Counters::bump(&shared.counters.read_ahead_used);
                    } else if first_try {
                        Counters::bump(&shared.counters.hits);
                    }
                    return Ok(data);
                }
                if !st.entries.contains_key(&block) && st.known_zero(block) {
                    if first_try {
                        Counters::bump(&shared.counters.zero_hits);
                    }
                    return Ok(zeros(len));
                }
                if !first_try {
                    pages_at = None;
                    // Counted as a miss already: join or start the fetch quietly.
                    if let Some(load) = st.loads.get_mut(&block) {
                        load.for_upload = false;
                        load.tx.subscribe()
                    } else {
                        shared.start_load(&mut st, block, FetchReason::Demand)
                    }
                } else {
                    first_try = false;
                    match shared.start_range_load(&mut st, block, &range, order) {
                        Some((rx, at)) => {
                            Counters::bump(&shared.counters.misses);
                            pages_at = Some(at);
                            rx
                        }
                        None => shared.load(&mut st, block),
                    }
                }
            };
            match wait(rx).await {
                LoadOutcome::Failed(e) => return Err(share_error(block, &e)),
                // What the block held when the fetch ended: the stored bytes,
                // or the cache's newer ones merged over them. It may not have
                // been kept (no room, or a dirty block the dirty limit has no
                // room to hold whole), so it is read from here.
                LoadOutcome::Done(data) => {
                    return Ok(match pages_at {
                        // The pages asked for, from where they start.
                        Some(at) => data.slice(range.start - at..range.end - at),
                        None => data.slice(range),
                    });
                }
                _ => {}
            }
        }
    }

    /// Starts fetches ahead of a sequential reader (see
    /// [`Shared::fetch_ahead`]).
    fn read_ahead(&self, st: &mut State, block: BlockId, follows: bool) {
        if st.read_ahead.on_read(block.0.into(), follows) {
            self.shared.fetch_ahead(st);
        }
    }

    /// Applies a write once the dirty limit has room for it. `plan` says
    /// what the write leaves in the block: `None` when it changes nothing,
    /// else the size of the new content; `apply` builds the new content from
    /// the old (if cached) and whether the block is known zero below.
    /// `partial` marks a write of part of a block: above the high-water mark
    /// a clean cached copy then gives way to the pages written (`apply` gets
    /// no old content), as `plan` must reckon with.
    async fn write_with(
        &self,
        block: BlockId,
        plan: impl Fn(&State) -> Option<u64>,
        apply: impl FnOnce(Option<Content>, bool) -> Content,
        partial: bool,
    ) -> Result<()> {
        self.check_open()?;
        let shared = &self.shared;
        let mut apply = Some(apply);
        let mut waiting = false;
        loop {
            let mut notified = pin!(shared.room.notified());
            notified.as_mut().enable();
            {
                let mut st = shared.lock();
                let Some(new_size) = plan(&st) else {
                    if waiting {
                        st.waiting_writers -= 1;
                    }
                    Counters::bump(&shared.counters.unchanged_writes);
                    return Ok(());
                };
                let growth = st.dirty_growth(block, new_size);
                if growth == 0 || st.dirty_bytes + growth <= st.max_dirty {
                    if waiting {
                        st.waiting_writers -= 1;
                    }
                    let mut wake = false;
                    if let Some(apply) = apply.take() {
                        let known_zero = st.known_zero(block);
                        let drop_clean = partial && st.keeps_only_pages(block);
                        let config = &shared.config;
                        let due = st.commit_write(
                            block,
                            |old| apply(if drop_clean { None } else { old }, known_zero),
                            Instant::now(),
                            config.write_delay,
                            config.prompt_uploads && !partial,
                        );
                        wake = st.wakes_scheduler(due);
                    }
                    // The wake-up this writer had may have freed room for
                    // more: the next waiting writer looks.
                    let others = st.waiting_writers > 0;
                    drop(st);
                    if others {
                        shared.room.notify_one();
                    }
                    if wake {
                        shared.work.notify_one();
                    }
                    return Ok(());
                }
                if !waiting {
                    waiting = true;
                    st.waiting_writers += 1;
                    Counters::bump(&shared.counters.write_waits);
                }
            }
            shared.work.notify_one();
            let guard = WaitGuard { shared, armed: true };
            notified.await;
            guard.disarm();
        }
    }
}

/// Undoes a writer's wait count if its future is dropped while waiting.
struct WaitGuard<'a, D> {
    shared: &'a Shared<D>,
    armed: bool,
}

impl<D> WaitGuard<'_, D> {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl<D> Drop for WaitGuard<'_, D> {
    fn drop(&mut self) {
        if self.armed {
            self.shared.lock().waiting_writers -= 1;
            // A writer given up while waiting may have taken the wake-up
            // meant for room: it goes to the next one.
            self.shared.room.notify_one();
        }
    }
}

impl<D: BlockDevice + 'static> Drop for BlockCache<D> {
    fn drop(&mut self) {
        if let Some(handle) = self.scheduler.lock().unwrap_or_else(|e| e.into_inner()).take() {
            handle.abort();
        }
    }
}

impl<D: BlockDevice + 'static> BlockCache<D> {
    /// Grows the volume the cache serves to `geometry` (the same block
    /// size, more blocks) once the device below has grown: blocks past the
    /// old end are accepted from now on, and read from below until written.
    pub fn grow(&self, geometry: Geometry) -> Result<()> {
        self.shared.geometry.grow(geometry)
    }
}

#[async_trait]
impl<D: BlockDevice + 'static> BlockDevice for BlockCache<D> {
    fn geometry(&self) -> Geometry {
        self.shared.geometry.get()
    }

    async fn read_block(&self, block: BlockId) -> Result<Bytes> {
        self.shared.geometry.get().check_block(block)?;
        self.read_range(block, 0..self.shared.geometry.get().block_len()).await
    }

    async fn write_block(&self, block: BlockId, data: Bytes) -> Result<()> {
        let g = self.shared.geometry.get();
        g.check_block(block)?;
        check_block_len(&g, block, &data)?;
        let zero = is_zero(&data);
        let size = if zero { 0 } else { data.len() as u64 };
        // The bytes the block holds already change nothing: zeros over a
        // block known zero below, or what its cached copy holds.
        let written = data.clone();
        let no_op = |st: &State| match st.entries.get(&block) {
            Some(e) => e.content.holds(0, &written),
            None => zero && st.known_zero(block),
        };
        self.write_with(
            block,
            |st| (!no_op(st)).then_some(size),
            |_, _| if zero { Content::Zero } else { Content::Full(data) },
            false,
        )
        .await
    }

    async fn read_partial(&self, block: BlockId, offset: u32, len: usize) -> Result<Bytes> {
        let g = self.shared.geometry.get();
        g.check_block(block)?;
        g.check_in_block(offset, len)?;
        let start = offset as usize;
        self.read_range(block, start..start + len).await
    }

    /// A part of a block is a read of the cache, which fetches only parts
    /// of blocks when it may and the device below can.
    fn ranged_reads(&self) -> bool {
        self.shared.config.ranged_reads && self.shared.lower.ranged_reads()
    }

    async fn write_partial(&self, block: BlockId, offset: u32, data: Bytes) -> Result<()> {
        let g = self.shared.geometry.get();
        g.check_block(block)?;
        g.check_in_block(offset, data.len())?;
        let block_len = g.block_len();
        let zero = is_zero(&data);
        // Bytes the block holds already (zeros over a block that is zero
        // among them) change nothing. An empty write changes nothing only
        // in a zero block: elsewhere it makes the block dirty, to be stored
        // again (a mounted volume's grow stores block 0 again this way, for
        // the new size in its metadata).
        let no_op = |st: &State| match st.entries.get(&block) {
            Some(e) if data.is_empty() => matches!(e.content, Content::Zero),
            Some(e) => e.content.holds(offset as usize, &data),
            None => zero && st.known_zero(block),
        };
        // The dirty limit counts what the block will hold: the pages written
        // for a block not cached whole, so scattered small writes cost their
        // pages and not a block each.
        let new_size = |st: &State| match st.entries.get(&block) {
            Some(e) if !st.keeps_only_pages(block) => {
                e.content.size_after_write(offset, data.len(), block_len)
            }
            _ => Content::over_stored(block_len).size_after_write(offset, data.len(), block_len),
        };
        self.write_with(
            block,
            |st| (!no_op(st)).then(|| new_size(st)),
            |old, known_zero| {
                let mut c = match old {
                    Some(c) => c,
                    None if known_zero => Content::Zero,
                    None => Content::over_stored(block_len),
                };
                c.write_at(offset, &data, block_len);
                c
            },
            true,
        )
        .await
    }

    async fn discard(&self, blocks: Range<u64>) -> Result<()> {
        check_block_range(&self.shared.geometry.get(), &blocks)?;
        self.check_open()?;
        if blocks.is_empty() {
            return Ok(());
        }
        self.shared.discard(blocks).await
    }

    async fn flush(&self) -> Result<()> {
        self.check_open()?;
        self.shared.flush().await
    }

    /// Holes are the blocks known to be zero below (the zero set: a new
    /// volume, the listing at open, discards and zero blocks stored) with
    /// nothing else cached for them, and the cached blocks whose content is
    /// zeros (clean or waiting for their delete). Every other block is data,
    /// including one cached only in part.
    async fn block_status(&self, blocks: Range<u64>) -> Result<Vec<(Range<u64>, Allocation)>> {
        check_block_range(&self.shared.geometry.get(), &blocks)?;
        let st = self.shared.lock();
        // Zero below: the zero set and the discards in progress, merged.
        let mut zero = st.zeros.ranges_in(&blocks);
        zero.extend(
            st.discarding
                .iter()
                .map(|r| r.start.max(blocks.start)..r.end.min(blocks.end))
                .filter(|r| !r.is_empty()),
        );
        zero.sort_unstable_by_key(|r| r.start);
        // Cached blocks decide for themselves.
        let mut cached: Vec<(u64, Allocation)> = st
            .entries_in(&blocks)
            .into_iter()
            .filter_map(|b| {
                let hole = matches!(st.entries.get(&b)?.content, Content::Zero);
                Some((u64::from(b.0), if hole { Allocation::Hole } else { Allocation::Data }))
            })
            .collect();
        drop(st);
        cached.sort_unstable_by_key(|&(n, _)| n);
        let mut runs = Vec::new();
        let mut next_zero = 0;
        // Runs of `from..to`, which holds no cached block, from the zero ranges.
        let mut uncached = |runs: &mut Vec<(Range<u64>, Allocation)>, from: u64, to: u64| {
            let mut at = from;
            while at < to {
                while next_zero < zero.len() && zero[next_zero].end <= at {
                    next_zero += 1;
                }
                match zero.get(next_zero) {
                    Some(z) if z.start <= at => {
                        let end = z.end.min(to);
                        push_run(runs, at..end, Allocation::Hole);
                        at = end;
                    }
                    Some(z) => {
                        let end = z.start.min(to);
                        push_run(runs, at..end, Allocation::Data);
                        at = end;
                    }
                    None => {
                        push_run(runs, at..to, Allocation::Data);
                        at = to;
                    }
                }
            }
        };
        let mut at = blocks.start;
        for (n, allocation) in cached {
            uncached(&mut runs, at, n);
            push_run(&mut runs, n..n + 1, allocation);
            at = n + 1;
        }
        uncached(&mut runs, at, blocks.end);
        Ok(runs)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use s3block_core::{BlockDeviceExt, MemoryDevice};

    use super::*;

    fn geometry() -> Geometry {
        Geometry::new(32 * 4096, 4096).expect("valid geometry")
    }

    fn config() -> CacheConfig {
        CacheConfig::builder().cache_size(1 << 20).write_delay(Duration::from_secs(1)).build()
    }

    #[tokio::test(start_paused = true)]
    async fn block_status_follows_writes_discards_and_the_listing() {
        let mem = Arc::new(MemoryDevice::new(geometry()));
        mem.write_block(BlockId(20), Bytes::from(vec![7u8; 4096])).await.expect("write");
        // Stored: block 20 only.
        let cache = BlockCache::with_known_blocks(Arc::clone(&mem), config(), [BlockId(20)]).expect("cache");
        use Allocation::{Data, Hole};
        assert_eq!(
            cache.block_status(0..32).await.expect("status"),
            vec![(0..20, Hole), (20..21, Data), (21..32, Hole)]
        );
        // A partial write makes a hole data at once, dirty and not uploaded.
        cache.write_at(4096 * 3 + 100, Bytes::from_static(b"hello")).await.expect("write");
        cache.write_block(BlockId(4), Bytes::from(vec![1u8; 4096])).await.expect("write");
        // Zeros written over a stored block make it a hole before its delete.
        cache.write_block(BlockId(20), Bytes::from(vec![0u8; 4096])).await.expect("write");
        assert_eq!(
            cache.block_status(0..32).await.expect("status"),
            vec![(0..3, Hole), (3..5, Data), (5..32, Hole)]
        );
        assert_eq!(cache.block_status(4..4).await.expect("status"), vec![]);
        assert_eq!(cache.block_status(4..6).await.expect("status"), vec![(4..5, Data), (5..6, Hole)]);
        cache.flush().await.expect("flush");
        assert_eq!(mem.stored_blocks(), 2);
        // A discard makes holes again.
        cache.discard(3..4).await.expect("discard");
        assert_eq!(
            cache.block_status(0..32).await.expect("status"),
            vec![(0..4, Hole), (4..5, Data), (5..32, Hole)]
        );
        assert!(cache.block_status(30..33).await.is_err());
        cache.close().await.expect("close");
    }

    #[tokio::test(start_paused = true)]
    async fn block_status_without_a_listing_says_data() {
        let mem = Arc::new(MemoryDevice::new(geometry()));
        let cache = BlockCache::new(Arc::clone(&mem), config()).expect("cache");
        // Nothing is known of the blocks below: data, except what was zeroed.
        cache.discard(8..10).await.expect("discard");
        assert_eq!(
            cache.block_status(0..32).await.expect("status"),
            vec![(0..8, Allocation::Data), (8..10, Allocation::Hole), (10..32, Allocation::Data)]
        );
        cache.close().await.expect("close");
    }

    /// A listing made while the cache serves: a block uploaded after the
    /// listing passed it (and evicted since), one written and not yet
    /// uploaded, and those the listing found are never taken for zero; the
    /// blocks the listing did not find and the cache did not touch read as
    /// zeros without a request.
    #[tokio::test(start_paused = true)]
    async fn a_listing_made_while_serving_never_zeroes_what_was_written_meanwhile() {
        let mem = Arc::new(MemoryDevice::new(geometry()));
        for b in [1u32, 2] {
            mem.write_block(BlockId(b), Bytes::from(vec![b as u8; 4096])).await.expect("write");
        }
        // Room for four blocks, so that what is written is evicted.
        let small = CacheConfig::builder().cache_size(4 * 4096).write_delay(Duration::from_secs(1)).build();
        let cache = BlockCache::new(Arc::clone(&mem), small).expect("cache");
        cache.begin_listing();
        // The listing's answer, taken before the writes below reached the store.
        let listed = vec![1..2, 2..3];
        cache.write_block(BlockId(5), Bytes::from(vec![5u8; 4096])).await.expect("write 5");
        cache.flush().await.expect("flush");
        for b in [10u32, 11, 12, 13] {
            cache.write_block(BlockId(b), Bytes::from(vec![b as u8; 4096])).await.expect("write");
        }
        cache.flush().await.expect("flush");
        assert!(
            !cache.shared.lock().entries.contains_key(&BlockId(5)),
            "block 5 is evicted before the listing ends"
        );
        cache.write_block(BlockId(6), Bytes::from(vec![6u8; 4096])).await.expect("write 6");
        cache.discard(2..3).await.expect("discard 2");
        let learned = cache.end_listing(listed.clone(), 0..32);
        assert_eq!(learned, 32 - 8, "all but 1, 2, 5, 6 and 10 to 13 learned zero");
        assert_eq!(cache.end_listing(listed, 0..32), 0, "a listing ends once");

        // Reads of blocks learned zero make no request.
        let reads = mem.counts().reads;
        for b in [0u32, 3, 9, 31] {
            assert!(cache.read_block(BlockId(b)).await.expect("read").iter().all(|&x| x == 0));
        }
        assert_eq!(mem.counts().reads, reads);
        // What was written keeps its bytes, read again from below.
        for b in [5u32, 6, 1, 10] {
            let data = cache.read_block(BlockId(b)).await.expect("read");
            assert!(data.iter().all(|&x| x == b as u8), "block {b} read as {:?}", &data[..4]);
        }
        assert!(mem.counts().reads > reads, "the blocks written were read from below");
        assert!(cache.read_block(BlockId(2)).await.expect("read").iter().all(|&x| x == 0), "2 was discarded");
        cache.close().await.expect("close");
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_listing_teaches_nothing() {
        let mem = Arc::new(MemoryDevice::new(geometry()));
        let cache = BlockCache::new(Arc::clone(&mem), config()).expect("cache");
        cache.begin_listing();
        cache.abandon_listing();
        assert_eq!(cache.end_listing(std::iter::empty(), 0..32), 0);
        assert_eq!(cache.stats().known_zero_blocks, 0);
        cache.close().await.expect("close");
    }
}
