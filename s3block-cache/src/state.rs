//! The cache's bookkeeping, behind one mutex that is never held across I/O.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::ops::Range;
use std::time::Duration;

use bytes::Bytes;
use lru::LruCache;
use rand::rngs::StdRng;
use s3block_core::{BlockId, is_zero};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::entry::{Content, Dirty, Entry, Wb, merge};
use crate::incident::Incident;
use crate::ranged::{Evicted, RangeLoad};
use crate::readahead::ReadAhead;
use crate::zeroset::RangeSet;

/// How a fetch of a block from below ended.
#[derive(Debug, Clone)]
pub(crate) enum LoadOutcome {
    /// Still in flight.
    Pending,
    /// The block as read.
    Done(Bytes),
    /// The read failed.
    Failed(std::sync::Arc<s3block_core::Error>),
    /// The block changed below while it was read; read again.
    Stale,
}

/// A fetch in flight; every reader of the block waits on the same one.
#[derive(Debug)]
pub(crate) struct Load {
    pub(crate) id: u64,
    pub(crate) tx: watch::Sender<LoadOutcome>,
    /// Started by read-ahead and not yet waited on by a reader.
    pub(crate) prefetch: bool,
    /// Started by an upload of a partly written block and waited on by no
    /// reader: its bytes are merged for the upload, not kept whole.
    pub(crate) for_upload: bool,
    /// Bytes of the cache it holds until it ends: the block's length (see
    /// [`State::reserved`]).
    pub(crate) bytes: u64,
}

/// What will next wake the upload scheduler, as it left things at the end
/// of its last pass. A writer wakes it only when that would come too late
/// for the block it dirtied: most writes then cost no task switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SchedulerWake {
    /// It has been notified, or is running: it will look at the state again.
    Pending,
    /// Every upload slot is taken: an upload ending wakes it.
    Full,
    /// It sleeps until then (the write delay of the oldest queued block, a
    /// retry or a clean timeout), unless notified.
    At(Instant),
    /// It waits for a notification only.
    Idle,
}

/// Where a read starts against the read before it ([`State::note_read`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ReadOrder {
    /// It starts where the last read ended, in the same block.
    pub(crate) follows: bool,
    /// It starts its block, the one after the block the last read ended at
    /// the end of.
    pub(crate) next_block: bool,
}

/// Everything the cache knows, guarded by one mutex.
#[derive(Debug)]
pub(crate) struct State {
    /// What will next wake the upload scheduler.
    pub(crate) scheduler: SchedulerWake,
    pub(crate) entries: HashMap<BlockId, Entry>,
    /// Clean resident blocks in recency order: the only evictable ones
    /// (the protected ones excepted, which are in `protected`).
    pub(crate) lru: LruCache<BlockId, ()>,
    /// Clean resident blocks below `protected_blocks`, in recency order:
    /// evicted only when `lru` is empty.
    pub(crate) protected: LruCache<BlockId, ()>,
    /// Clean blocks read-ahead brought in that no reader has read yet, in
    /// the order they came: evicted after every block of `lru`. A
    /// sequential reader's blocks already read are touched after the ones
    /// fetched ahead of it landed, so in one list those would leave first,
    /// and be fetched again when the reader gets there.
    pub(crate) ahead: LruCache<BlockId, ()>,
    /// Blocks `0..protected_blocks` go to `protected`.
    pub(crate) protected_blocks: u64,
    /// How long a clean block stays after it was read or stored; `None`:
    /// until its room is needed.
    pub(crate) clean_timeout: Option<Duration>,
    /// Blocks in the order they became clean, with that time and the mark
    /// they got then, while a clean timeout is set (may hold stale items:
    /// an entry whose `clean_mark` differs has changed since).
    pub(crate) expiry: VecDeque<(Instant, BlockId, u64)>,
    /// The last mark given to a block that became clean (see `expiry`).
    pub(crate) clean_marks: u64,
    /// Set when `expiry` gains its first item: the scheduler, which may be
    /// asleep without a deadline, is to be woken to time it.
    pub(crate) expiry_wake: bool,
    /// Blocks known to be zero (absent) below.
    pub(crate) zeros: RangeSet,
    /// While a listing of the blocks stored below runs (see
    /// [`BlockCache::begin_listing`](crate::BlockCache::begin_listing)):
    /// the blocks whose state below this cache changed or learned since it
    /// began, whom the listing's word may be too old for.
    pub(crate) survey: Option<RangeSet>,
    /// Fetches of whole blocks in flight or waiting for a fetch slot
    /// (changed through [`State::add_load`] and [`State::remove_load`]).
    pub(crate) loads: HashMap<BlockId, Load>,
    /// Fetches of part of a block in flight (see [`crate::ranged`]; changed
    /// through [`State::add_range_load`] and [`State::remove_range_load`]).
    pub(crate) range_loads: HashMap<BlockId, RangeLoad>,
    /// Bytes of the cache held for the fetches of `loads` and
    /// `range_loads`: a fetch's buffer fills as its body arrives, beside
    /// the blocks already cached, so clean blocks make room for it when it
    /// starts, not when it lands. The cache's blocks and its fetches' bytes
    /// then stay within the cache size together (as far as clean blocks
    /// can be evicted), however many fetches are in flight.
    pub(crate) reserved: u64,
    /// Blocks evicted for room lately, kept where reads may fetch parts of
    /// blocks (see [`Evicted`]).
    pub(crate) evicted: Option<Evicted>,
    /// Dirty blocks waiting for the write delay, oldest first (may hold
    /// stale items).
    pub(crate) queue: VecDeque<BlockId>,
    /// Dirty blocks due at once (written whole, see
    /// [`State::commit_write`]), oldest first, uploaded before those of
    /// `queue` (may hold stale items).
    pub(crate) prompt: VecDeque<BlockId>,
    /// Dirty blocks whose last upload failed.
    pub(crate) failed: BTreeSet<BlockId>,
    /// Dirty blocks by the generation of their oldest unstored write.
    pub(crate) dirty_index: BTreeSet<(u64, BlockId)>,
    /// Block ranges being discarded below.
    pub(crate) discarding: Vec<Range<u64>>,
    pub(crate) resident: u64,
    pub(crate) dirty_bytes: u64,
    pub(crate) in_flight: usize,
    /// The last write generation handed out.
    pub(crate) last_gen: u64,
    /// Counts flush calls; an upload records the value current when it starts.
    pub(crate) flush_seq: u64,
    pub(crate) flushers: usize,
    pub(crate) waiting_writers: usize,
    pub(crate) next_load_id: u64,
    pub(crate) read_ahead: ReadAhead,
    /// The block and end of the last read: a read starting there, or at the
    /// start of the next block when it ended at its block's end, goes on
    /// from it (see [`crate::ranged`]).
    pub(crate) last_read: Option<(BlockId, usize)>,
    /// No more writes, discards or flushes are accepted.
    pub(crate) closed: bool,
    /// The scheduler stops.
    pub(crate) stopped: bool,
    pub(crate) cache_size: u64,
    pub(crate) max_dirty: u64,
    /// The jitter of upload retries (see [`CacheConfig::upload_retry`](crate::CacheConfig::upload_retry)).
    pub(crate) retry_rng: StdRng,
    /// Upload failures going on, logged once per incident.
    pub(crate) upload_failures: Incident,
    /// Fetch failures going on, logged once per incident.
    pub(crate) fetch_failures: Incident,
    /// The start of the cache's clock of milliseconds ([`State::millis`]).
    epoch: Instant,
}

impl State {
    pub(crate) fn new(cache_size: u64, max_dirty: u64, retry_rng: StdRng) -> Self {
        State {
            scheduler: SchedulerWake::Pending,
            entries: HashMap::new(),
            lru: LruCache::unbounded(),
            protected: LruCache::unbounded(),
            ahead: LruCache::unbounded(),
            protected_blocks: 0,
            clean_timeout: None,
            expiry: VecDeque::new(),
            clean_marks: 0,
            expiry_wake: false,
            zeros: RangeSet::default(),
            survey: None,
            loads: HashMap::new(),
            range_loads: HashMap::new(),
            reserved: 0,
            evicted: None,
            queue: VecDeque::new(),
            prompt: VecDeque::new(),
            failed: BTreeSet::new(),
            dirty_index: BTreeSet::new(),
            discarding: Vec::new(),
            resident: 0,
            dirty_bytes: 0,
            in_flight: 0,
            last_gen: 0,
            flush_seq: 0,
            flushers: 0,
            waiting_writers: 0,
            next_load_id: 0,
            read_ahead: ReadAhead::default(),
            last_read: None,
            closed: false,
            stopped: false,
            cache_size,
            max_dirty,
            retry_rng,
            upload_failures: Incident::default(),
            fetch_failures: Incident::default(),
            epoch: Instant::now(),
        }
    }

    /// This state with blocks `0..protected_blocks` evicted last and clean
    /// blocks dropped `clean_timeout` after they became clean.
    pub(crate) fn with_eviction(mut self, protected_blocks: u64, clean_timeout: Option<Duration>) -> Self {
        self.protected_blocks = protected_blocks;
        self.clean_timeout = clean_timeout;
        self
    }

    /// Notes a read of `range` of `block` (of `block_len` bytes); says
    /// where it starts against the last read.
    pub(crate) fn note_read(&mut self, block: BlockId, range: &Range<usize>, block_len: usize) -> ReadOrder {
        let order = ReadOrder {
            follows: self.last_read == Some((block, range.start)),
            next_block: range.start == 0
                && self
                    .last_read
                    .is_some_and(|(b, end)| end == block_len && b.0.checked_add(1) == Some(block.0)),
        };
        self.last_read = Some((block, range.end));
        order
    }

    /// Watches the blocks evicted for room (see [`Evicted`]), or not.
    pub(crate) fn with_evicted(mut self, evicted: Option<Evicted>) -> Self {
        self.evicted = evicted;
        self
    }

    /// The eviction list `block` belongs in while clean.
    fn clean_list(&mut self, block: BlockId) -> &mut LruCache<BlockId, ()> {
        if self.entries.get(&block).is_some_and(|e| e.prefetched) {
            &mut self.ahead
        } else if u64::from(block.0) < self.protected_blocks {
            &mut self.protected
        } else {
            &mut self.lru
        }
    }

    /// Makes the clean `block` evictable, the most recently used of its
    /// list, and starts its clean timeout at `now`.
    pub(crate) fn make_evictable(&mut self, block: BlockId, now: Instant) {
        self.clean_list(block).put(block, ());
        if self.clean_timeout.is_some()
            && let Some(e) = self.entries.get_mut(&block)
        {
            self.clean_marks += 1;
            e.clean_mark = self.clean_marks;
            self.expiry_wake |= self.expiry.is_empty();
            self.expiry.push_back((now, block, self.clean_marks));
            // Items of blocks evicted, rewritten or cleaned again since wait
            // for their time; a busy cache with a long timeout would pile
            // them up, so past twice the entries they are dropped (in order,
            // each clean entry keeping its one item): amortized O(1) a push.
            if self.expiry.len() > 2 * self.entries.len() + 64 {
                let entries = &self.entries;
                self.expiry.retain(|(_, b, mark)| {
                    entries.get(b).is_some_and(|e| !e.is_dirty() && e.clean_mark == *mark)
                });
            }
        }
    }

    /// Takes `block` off the eviction lists (it became dirty or is gone);
    /// a block written before it was read is no longer read-ahead's.
    fn make_unevictable(&mut self, block: BlockId) {
        self.lru.pop(&block);
        self.protected.pop(&block);
        self.ahead.pop(&block);
        if let Some(e) = self.entries.get_mut(&block) {
            e.prefetched = false;
        }
    }

    /// Marks a read of the clean `block`: the last of its list to be
    /// evicted. A block read-ahead brought in, read now for the first time
    /// (its entry no longer marked), joins the blocks read.
    pub(crate) fn touch(&mut self, block: BlockId) {
        if self.ahead.pop(&block).is_some() {
            self.clean_list(block).put(block, ());
        } else {
            self.clean_list(block).promote(&block);
        }
    }

    /// Drops the clean blocks whose clean timeout has passed at `now`;
    /// returns when the next one is due (`None` when none is waiting, or
    /// no timeout is set).
    pub(crate) fn expire_clean(&mut self, now: Instant) -> Option<Instant> {
        let timeout = self.clean_timeout?;
        while let Some(&(since, block, mark)) = self.expiry.front() {
            let due = since + timeout;
            if due > now {
                return Some(due);
            }
            self.expiry.pop_front();
            let expired = self.entries.get(&block).is_some_and(|e| !e.is_dirty() && e.clean_mark == mark);
            if expired && let Some(e) = self.entries.remove(&block) {
                self.resident -= e.content.size();
                self.make_unevictable(block);
            }
        }
        None
    }

    /// True when the block's range is being discarded below.
    pub(crate) fn is_discarding(&self, block: BlockId) -> bool {
        self.discarding.iter().any(|r| r.contains(&u64::from(block.0)))
    }

    /// Sets what is known to be zero below for `blocks`: zero, or not
    /// known to be. A listing running now leaves them as this says.
    pub(crate) fn set_zero(&mut self, blocks: Range<u64>, zero: bool) {
        if let Some(survey) = &mut self.survey {
            survey.insert(blocks.clone());
        }
        if zero {
            self.zeros.insert(blocks);
        } else {
            self.zeros.remove(blocks);
        }
    }

    /// True when the layer below holds (or is about to hold) zeros for `block`.
    pub(crate) fn known_zero(&self, block: BlockId) -> bool {
        self.zeros.contains(block.0.into()) || self.is_discarding(block)
    }

    /// The high-water mark: half the dirty limit.
    fn high_water(&self) -> u64 {
        self.max_dirty / 2
    }

    /// True above the high-water mark: uploads start without the write
    /// delay, and room for dirty data is scarce.
    pub(crate) fn under_pressure(&self) -> bool {
        self.dirty_bytes > self.high_water()
    }

    /// True when a write that left a block dirty, due for upload at `due`,
    /// must wake the upload scheduler: it sleeps past `due`, or waits for a
    /// notification, or dirty data is above the high-water mark (uploads
    /// then start without the write delay) and it is not waiting for a
    /// slot. Marks the scheduler as woken when so, so that the writers after
    /// this one do not wake it again before it looks.
    pub(crate) fn wakes_scheduler(&mut self, due: Instant) -> bool {
        let wake = match self.scheduler {
            SchedulerWake::Pending | SchedulerWake::Full => false,
            SchedulerWake::At(at) => due < at || self.under_pressure(),
            SchedulerWake::Idle => true,
        };
        if wake {
            self.scheduler = SchedulerWake::Pending;
        }
        wake
    }

    /// True when a partial write to `block` should drop its clean cached
    /// copy and keep only the pages written: above the high-water mark a
    /// clean whole block turned dirty would pin all its bytes against the
    /// dirty limit for one small write. The copy is stored below, so the
    /// upload fetches it again; a GET is far cheaper than the room.
    ///
    /// The same holds for the clean pages of a block stored below (those
    /// left by its last upload, or fetched by a ranged read): its upload
    /// fetches the block whatever pages it holds, so they would only take
    /// room. Under random small writes the dirty limit then holds new pages
    /// only, more of them gather in each block before it is uploaded, and
    /// each upload (a GET and a PUT) carries more writes. A block known zero
    /// outside its pages keeps them: uploading it needs no GET.
    pub(crate) fn keeps_only_pages(&self, block: BlockId) -> bool {
        self.under_pressure()
            && self
                .entries
                .get(&block)
                .is_some_and(|e| !e.is_dirty() && matches!(e.content, Content::Full(_) | Content::Partial(_)))
    }

    /// Dirty bytes a write leaving `new_size` bytes in `block` would add.
    pub(crate) fn dirty_growth(&self, block: BlockId, new_size: u64) -> u64 {
        match self.entries.get(&block) {
            Some(e) if e.is_dirty() => new_size.saturating_sub(e.content.size()),
            _ => new_size,
        }
    }

    /// The queue of blocks due at once (`prompt`) or of those waiting for
    /// the write delay.
    pub(crate) fn queue_mut(&mut self, prompt: bool) -> &mut VecDeque<BlockId> {
        if prompt { &mut self.prompt } else { &mut self.queue }
    }

    /// The cache's clock: milliseconds since it was made, wrapping after
    /// 49 days (a block then seen as uploaded lately only waits the delay).
    pub(crate) fn millis(&self, now: Instant) -> u32 {
        // Truncation wraps the count, as its readers expect.
        let ms = now.saturating_duration_since(self.epoch).as_millis() as u32;
        ms.max(1)
    }

    /// Records a write: `block` now holds what `apply` makes of its cached
    /// content (if any), dirty. Returns when its upload is due.
    ///
    /// A block that turns dirty is due `delay` later, unless `prompt` (a
    /// write of the whole block, where such writes may skip the delay) and
    /// its last upload started at least `delay` ago: then it is due at once
    /// and goes to the queue uploaded ahead of those waiting. A write to a
    /// block already dirty changes nothing of when it is due.
    pub(crate) fn commit_write(
        &mut self,
        block: BlockId,
        apply: impl FnOnce(Option<Content>) -> Content,
        now: Instant,
        delay: Duration,
        prompt: bool,
    ) -> Instant {
        self.last_gen += 1;
        let generation = self.last_gen;
        let now_ms = self.millis(now);
        let lately = |uploaded_ms: u32| {
            uploaded_ms != 0 && u128::from(now_ms.wrapping_sub(uploaded_ms)) < delay.as_millis()
        };
        let (new_size, prompt, due) = match self.entries.get_mut(&block) {
            Some(e) => {
                let old_size = e.content.size();
                e.content = apply(Some(std::mem::replace(&mut e.content, Content::Zero)));
                let new_size = e.content.size();
                e.generation = generation;
                self.resident = self.resident - old_size + new_size;
                if let Some(d) = &mut e.dirty {
                    self.dirty_bytes = self.dirty_bytes - old_size + new_size;
                    if e.wb == Wb::Uploading && d.rewritten_since.is_none() {
                        d.rewritten_since = Some(generation);
                    }
                    let due = d.due(delay);
                    self.evict_for(0);
                    return due;
                }
                let dirty = Dirty::new(generation, now, prompt && !lately(e.uploaded_ms));
                let (prompt, due) = (dirty.prompt, dirty.due(delay));
                e.dirty = Some(dirty);
                e.wb = Wb::Queued;
                self.make_unevictable(block);
                (new_size, prompt, due)
            }
            None => {
                let mut e = Entry::clean(Bytes::new());
                e.content = apply(None);
                let new_size = e.content.size();
                e.generation = generation;
                let dirty = Dirty::new(generation, now, prompt);
                let due = dirty.due(delay);
                e.dirty = Some(dirty);
                e.wb = Wb::Queued;
                self.entries.insert(block, e);
                self.resident += new_size;
                (new_size, prompt, due)
            }
        };
        self.dirty_bytes += new_size;
        self.dirty_index.insert((generation, block));
        self.queue_mut(prompt).push_back(block);
        self.evict_for(0);
        due
    }

    /// Evicts clean blocks, least recently used first (the protected ones
    /// only when no other is left), until at most `limit` bytes are
    /// resident or nothing clean is left.
    fn evict_to(&mut self, limit: u64) -> bool {
        while self.resident > limit {
            let Some((block, ())) =
                self.lru.pop_lru().or_else(|| self.ahead.pop_lru()).or_else(|| self.protected.pop_lru())
            else {
                return false;
            };
            if let Some(e) = self.entries.remove(&block) {
                self.resident -= e.content.size();
            }
            if let Some(evicted) = self.evicted.as_mut() {
                evicted.evicted(block);
            }
        }
        true
    }

    /// Puts what was read from below into the cache: merges it into a
    /// partially written block, records a zero block, or keeps a clean copy
    /// when room can be made without touching dirty data.
    ///
    /// Returns what the fetch's readers get: the block as the cache holds it
    /// when it has newer bytes than `data` (an entry written while the fetch
    /// was in flight, which may be uploaded and evicted before they look
    /// again), else `data`.
    pub(crate) fn install(
        &mut self,
        block: BlockId,
        data: Bytes,
        prefetch: bool,
        for_upload: bool,
        now: Instant,
    ) -> Bytes {
        let high_water = self.high_water();
        if let Some(e) = self.entries.get_mut(&block) {
            let Content::Partial(known) = &e.content else {
                return e.content.read(0..data.len()).unwrap_or(data);
            };
            let merged = merge(data, &known.pages, &known.written);
            // For a reader, the pages give way to the whole block (so later
            // reads of it hit) while dirty data stays under the high-water
            // mark, half the dirty limit, where uploads start without delay;
            // above it the entry keeps its pages and the merged bytes go only
            // to the fetch's readers and the upload waiting for them, so a
            // stream of scattered small writes keeps its room. A fetch only
            // an upload waits for keeps nothing whole: nobody read the block,
            // and turning many small entries into whole blocks at a flush
            // would grow memory in a burst.
            let old_size = e.content.size();
            let new_size = merged.len() as u64;
            let growth = new_size.saturating_sub(old_size);
            let room = !e.is_dirty() || self.dirty_bytes + growth <= high_water;
            if !for_upload && room {
                e.content = Content::Full(merged.clone());
                self.resident = self.resident - old_size + new_size;
                if e.is_dirty() {
                    self.dirty_bytes = self.dirty_bytes - old_size + new_size;
                }
                self.evict_for(0);
            }
            return merged;
        }
        let n = u64::from(block.0);
        if is_zero(&data) {
            self.set_zero(n..n + 1, true);
            return data;
        }
        self.set_zero(n..n + 1, false);
        let size = data.len() as u64;
        if self.evict_for(size) {
            let mut e = Entry::clean(data.clone());
            e.prefetched = prefetch;
            self.entries.insert(block, e);
            self.make_evictable(block, now);
            self.resident += size;
        }
        data
    }

    /// The bytes blocks may take in the cache now: its size less what its
    /// fetches in flight hold ([`State::reserved`]).
    pub(crate) fn room(&self) -> u64 {
        self.cache_size.saturating_sub(self.reserved)
    }

    /// Evicts clean blocks until `size` more bytes fit in the [`room`](Self::room)
    /// the fetches in flight leave; false when they cannot (too much is
    /// dirty or held).
    pub(crate) fn evict_for(&mut self, size: u64) -> bool {
        let room = self.room();
        size <= room && self.evict_to(room - size)
    }

    /// Records `load` of `block` in flight, holds its bytes of the cache and
    /// evicts clean blocks to keep within the cache size.
    pub(crate) fn add_load(&mut self, block: BlockId, load: Load) {
        hold(&mut self.loads, &mut self.reserved, block, load);
        self.evict_for(0);
    }

    /// Ends the fetch of `block` in flight, if any, giving back its bytes.
    pub(crate) fn remove_load(&mut self, block: BlockId) -> Option<Load> {
        release(&mut self.loads, &mut self.reserved, block)
    }

    /// As [`add_load`](Self::add_load), for a fetch of part of a block.
    pub(crate) fn add_range_load(&mut self, block: BlockId, load: RangeLoad) {
        hold(&mut self.range_loads, &mut self.reserved, block, load);
        self.evict_for(0);
    }

    /// As [`remove_load`](Self::remove_load), for a fetch of part of a block.
    pub(crate) fn remove_range_load(&mut self, block: BlockId) -> Option<RangeLoad> {
        release(&mut self.range_loads, &mut self.reserved, block)
    }

    /// Drops the cached copy of `block` and any fetch of it in flight; the
    /// caller makes sure no upload of it is in flight.
    pub(crate) fn forget(&mut self, block: BlockId) {
        self.mark_stale(block);
        self.take_entry(block);
    }

    /// Removes the entry of `block` with its accounting, leaving fetches of
    /// it in flight alone, and returns it.
    pub(crate) fn take_entry(&mut self, block: BlockId) -> Option<Entry> {
        let e = self.entries.remove(&block)?;
        let size = e.content.size();
        self.resident -= size;
        self.make_unevictable(block);
        if let Some(since) = e.dirty_since() {
            self.dirty_bytes -= size;
            self.dirty_index.remove(&(since, block));
        }
        self.failed.remove(&block);
        Some(e)
    }

    /// Tells the readers waiting on a fetch of `block` that the block changed
    /// below, so they read again.
    pub(crate) fn mark_stale(&mut self, block: BlockId) {
        if let Some(load) = self.remove_load(block) {
            load.tx.send_replace(LoadOutcome::Stale);
        }
        if let Some(load) = self.remove_range_load(block) {
            load.tx.send_replace(LoadOutcome::Stale);
        }
    }

    /// Checks what the bookkeeping keeps true between two changes: the
    /// bytes accounted are the bytes held, the dirty bytes those of the
    /// dirty entries, the indexes agree with the entries, and the limits
    /// hold. Returns the first broken invariant, described.
    pub(crate) fn check_invariants(&self, upload_concurrency: usize) -> Result<(), String> {
        let mut held = 0u64;
        let mut dirty = 0u64;
        let mut dirty_count = 0usize;
        let mut clean_count = 0usize;
        let mut uploading = 0usize;
        for (&block, e) in &self.entries {
            let size = e.content.size();
            held += size;
            if e.generation > self.last_gen {
                return Err(format!(
                    "block {block}: generation {} is past the last handed out ({})",
                    e.generation, self.last_gen
                ));
            }
            match e.dirty_since() {
                Some(since) => {
                    dirty += size;
                    dirty_count += 1;
                    if e.wb == Wb::Clean {
                        return Err(format!("block {block} is dirty since {since} but marked clean"));
                    }
                    if since > e.generation {
                        return Err(format!(
                            "block {block}: dirty since generation {since}, after its last write ({})",
                            e.generation
                        ));
                    }
                    if !self.dirty_index.contains(&(since, block)) {
                        return Err(format!(
                            "dirty block {block} (since {since}) is missing from the dirty index"
                        ));
                    }
                    if self.lru.contains(&block)
                        || self.protected.contains(&block)
                        || self.ahead.contains(&block)
                    {
                        return Err(format!("dirty block {block} is evictable (in the LRU list)"));
                    }
                }
                None => {
                    clean_count += 1;
                    if e.wb != Wb::Clean {
                        return Err(format!("clean block {block} is in write-back state {:?}", e.wb));
                    }
                    let lists = [&self.ahead, &self.protected, &self.lru];
                    let own = if e.prefetched {
                        0
                    } else if u64::from(block.0) < self.protected_blocks {
                        1
                    } else {
                        2
                    };
                    if !lists[own].contains(&block) {
                        return Err(format!(
                            "clean block {block} is not in the LRU list: it can never be evicted"
                        ));
                    }
                    if (0..3).any(|i| i != own && lists[i].contains(&block)) {
                        return Err(format!("clean block {block} is in two eviction lists"));
                    }
                }
            }
            match e.wb {
                Wb::Uploading => uploading += 1,
                Wb::Failed if !self.failed.contains(&block) => {
                    return Err(format!("block {block} failed to upload but is not in the retry set"));
                }
                Wb::Queued if e.due_at_once() && !self.prompt.contains(&block) => {
                    return Err(format!("block {block} is due at once but not in the queue of those"));
                }
                Wb::Queued if !e.due_at_once() && !self.queue.contains(&block) => {
                    return Err(format!("block {block} is queued for upload but not in the queue"));
                }
                _ => {}
            }
        }
        if held != self.resident {
            return Err(format!("{} bytes accounted as resident, {held} held by the entries", self.resident));
        }
        if dirty != self.dirty_bytes {
            return Err(format!(
                "{} bytes accounted as dirty, {dirty} held by dirty entries",
                self.dirty_bytes
            ));
        }
        if self.dirty_bytes > self.resident {
            return Err(format!("{} dirty bytes exceed the {} resident", self.dirty_bytes, self.resident));
        }
        if self.dirty_bytes > self.max_dirty {
            return Err(format!(
                "{} dirty bytes exceed the dirty limit {}",
                self.dirty_bytes, self.max_dirty
            ));
        }
        if self.resident > self.cache_size {
            return Err(format!(
                "{} resident bytes exceed the cache size {}",
                self.resident, self.cache_size
            ));
        }
        let held_by_fetches = self.loads.values().map(Holds::held).sum::<u64>()
            + self.range_loads.values().map(Holds::held).sum::<u64>();
        if held_by_fetches != self.reserved {
            return Err(format!(
                "{} bytes accounted as held by fetches, {held_by_fetches} held by the fetches in flight",
                self.reserved
            ));
        }
        if self.dirty_index.len() != dirty_count {
            return Err(format!(
                "the dirty index holds {} blocks, the entries {dirty_count} dirty ones",
                self.dirty_index.len()
            ));
        }
        if self.lru.len() + self.protected.len() + self.ahead.len() != clean_count {
            return Err(format!(
                "the LRU list holds {} blocks, the entries {clean_count} clean ones",
                self.lru.len() + self.protected.len() + self.ahead.len()
            ));
        }
        if uploading != self.in_flight {
            return Err(format!(
                "{uploading} blocks are uploading, {} uploads counted in flight",
                self.in_flight
            ));
        }
        if self.in_flight > upload_concurrency {
            return Err(format!(
                "{} uploads in flight, more than the {upload_concurrency} allowed",
                self.in_flight
            ));
        }
        Ok(())
    }

    /// Blocks of `range` that have entries (cheapest way round).
    pub(crate) fn entries_in(&self, range: &Range<u64>) -> Vec<BlockId> {
        if range.end - range.start <= self.entries.len() as u64 {
            range.clone().map(|n| BlockId(n as u32)).filter(|b| self.entries.contains_key(b)).collect()
        } else {
            self.entries.keys().copied().filter(|b| range.contains(&u64::from(b.0))).collect()
        }
    }
}

/// A fetch in flight, holding bytes of the cache until it ends (see
/// [`State::reserved`]).
trait Holds {
    fn held(&self) -> u64;
}

impl Holds for Load {
    fn held(&self) -> u64 {
        self.bytes
    }
}

impl Holds for RangeLoad {
    fn held(&self) -> u64 {
        self.bytes
    }
}

/// Records `load` of `block` in `fetches`, adding its bytes to `reserved`
/// (less those of a fetch of `block` it replaces).
fn hold<L: Holds>(fetches: &mut HashMap<BlockId, L>, reserved: &mut u64, block: BlockId, load: L) {
    *reserved += load.held();
    if let Some(old) = fetches.insert(block, load) {
        *reserved -= old.held();
    }
}

/// Removes the fetch of `block` from `fetches`, if any, taking its bytes
/// off `reserved`.
fn release<L: Holds>(fetches: &mut HashMap<BlockId, L>, reserved: &mut u64, block: BlockId) -> Option<L> {
    let load = fetches.remove(&block)?;
    *reserved -= load.held();
    Some(load)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn block(fill: u8) -> Bytes {
        Bytes::from(vec![fill; 512])
    }

    /// A state holding a dirty block 1 and a clean block 2, 512 bytes each.
    fn state() -> State {
        let mut st = State::new(4096, 2048, StdRng::seed_from_u64(0));
        let now = Instant::now();
        st.commit_write(BlockId(1), |_| Content::Full(block(1)), now, Duration::ZERO, false);
        st.install(BlockId(2), block(2), false, false, now);
        st
    }

    #[test]
    fn blocks_fetched_ahead_and_not_read_leave_after_the_blocks_read() {
        // Room for 8 blocks of 512 bytes.
        let mut st = State::new(4096, 2048, StdRng::seed_from_u64(0));
        let now = Instant::now();
        // Block 10 comes ahead of a reader, then the reader reads 0 to 6.
        st.install(BlockId(10), block(10), true, false, now);
        for n in 0..7 {
            st.install(BlockId(n), block(n as u8), false, false, now);
            st.touch(BlockId(n));
        }
        assert_eq!(st.check_invariants(1), Ok(()));
        // A fetch's room, then another block: blocks read leave first,
        // oldest first, and block 10 stays.
        st.add_load(
            BlockId(20),
            Load {
                id: 1,
                tx: watch::channel(LoadOutcome::Pending).0,
                prefetch: false,
                for_upload: false,
                bytes: 512,
            },
        );
        st.install(BlockId(7), block(7), false, false, now);
        assert!(st.entries.contains_key(&BlockId(10)));
        assert!(!st.entries.contains_key(&BlockId(0)) && !st.entries.contains_key(&BlockId(1)));
        assert_eq!((st.resident, st.reserved), (7 * 512, 512));
        assert_eq!(st.check_invariants(1), Ok(()));
        // Read at last, it joins the blocks read, the most recent of them.
        st.entries.get_mut(&BlockId(10)).expect("block 10 is cached").prefetched = false;
        st.touch(BlockId(10));
        assert_eq!(st.check_invariants(1), Ok(()));
        st.evict_to(512);
        assert_eq!(st.entries.keys().copied().collect::<Vec<_>>(), [BlockId(10)]);
        // The fetch ends: its room is given back.
        assert!(st.remove_load(BlockId(20)).is_some());
        assert_eq!((st.reserved, st.room()), (0, 4096));
        assert_eq!(st.check_invariants(1), Ok(()));
    }

    #[test]
    fn a_writer_wakes_the_scheduler_only_when_its_block_would_wait_too_long() {
        let now = Instant::now();
        let due = now + Duration::from_secs(1);
        let mut st = State::new(4096, 2048, StdRng::seed_from_u64(0));
        // Already woken, or every slot busy: no wake-up.
        for wake in [SchedulerWake::Pending, SchedulerWake::Full] {
            st.scheduler = wake;
            assert!(!st.wakes_scheduler(due), "{wake:?}");
            assert_eq!(st.scheduler, wake);
        }
        // Asleep until a block queued earlier is due: no wake-up.
        st.scheduler = SchedulerWake::At(due - Duration::from_millis(1));
        assert!(!st.wakes_scheduler(due));
        // Asleep past the block's due time (a clean timeout, a retry), or
        // with no deadline: one wake-up, then none until it looks again.
        for wake in [SchedulerWake::At(due + Duration::from_millis(1)), SchedulerWake::Idle] {
            st.scheduler = wake;
            assert!(st.wakes_scheduler(due), "{wake:?}");
            assert_eq!(st.scheduler, SchedulerWake::Pending);
            assert!(!st.wakes_scheduler(due));
        }
        // Above the high-water mark uploads start without the delay: a
        // scheduler asleep until a due time is woken, a full one is not.
        st.commit_write(
            BlockId(1),
            |_| Content::Full(Bytes::from(vec![1; 1536])),
            now,
            Duration::ZERO,
            false,
        );
        assert!(st.under_pressure());
        st.scheduler = SchedulerWake::At(due - Duration::from_millis(1));
        assert!(st.wakes_scheduler(due));
        st.scheduler = SchedulerWake::Full;
        assert!(!st.wakes_scheduler(due));
    }

    #[test]
    fn the_clean_timeout_queue_stays_bounded_by_the_entries() {
        let mut st = State::new(4096, 2048, StdRng::seed_from_u64(0))
            .with_eviction(0, Some(Duration::from_secs(3600)));
        let now = Instant::now();
        // A scan of 10,000 blocks through a cache of 8: each fetch queues a
        // timeout, and each is evicted long before it is due.
        for n in 0..10_000 {
            st.install(BlockId(n), block(1), false, false, now);
            assert!(st.expiry.len() <= 2 * st.entries.len() + 65, "{} items", st.expiry.len());
        }
        assert_eq!(st.entries.len(), 8);
        assert_eq!(st.check_invariants(1), Ok(()));
        // The live ones still time out.
        assert_eq!(st.expire_clean(now + Duration::from_secs(3600)), None);
        assert_eq!((st.entries.len(), st.resident), (0, 0));
    }

    #[test]
    fn the_invariant_check_passes_on_kept_books() {
        let mut st = state();
        assert_eq!(st.check_invariants(1), Ok(()));
        assert_eq!((st.resident, st.dirty_bytes), (1024, 512));
        st.forget(BlockId(1));
        st.forget(BlockId(2));
        assert_eq!(st.check_invariants(1), Ok(()));
        assert_eq!((st.resident, st.dirty_bytes), (0, 0));
    }

    #[test]
    fn the_invariant_check_catches_broken_books() {
        let broken = |breaks: &dyn Fn(&mut State), says: &str| {
            let mut st = state();
            breaks(&mut st);
            match st.check_invariants(1) {
                Err(e) => assert!(e.contains(says), "{says:?} not in {e:?}"),
                Ok(()) => panic!("not caught: {says}"),
            }
        };
        broken(&|st| st.resident += 1, "1025 bytes accounted as resident, 1024 held");
        broken(&|st| st.dirty_bytes -= 1, "511 bytes accounted as dirty, 512 held");
        broken(&|st| st.reserved += 4096, "4096 bytes accounted as held by fetches, 0 held by the fetches");
        broken(
            &|st| {
                let e = st.entries.get_mut(&BlockId(2)).expect("block 2 is cached");
                e.content = Content::Full(Bytes::from(vec![2; 1024]));
            },
            "1024 bytes accounted as resident, 1536 held",
        );
        broken(&|st| st.dirty_index.clear(), "dirty block 1 (since 1) is missing from the dirty index");
        broken(
            &|st| {
                st.lru.pop(&BlockId(2));
            },
            "clean block 2 is not in the LRU list",
        );
        broken(
            &|st| {
                st.lru.put(BlockId(1), ());
            },
            "dirty block 1 is evictable",
        );
        broken(&|st| st.in_flight = 2, "0 blocks are uploading, 2 uploads counted in flight");
        broken(
            &|st| {
                if let Some(e) = st.entries.get_mut(&BlockId(1)) {
                    e.wb = Wb::Uploading;
                }
            },
            "1 blocks are uploading, 0 uploads counted in flight",
        );
        broken(&|st| st.queue.clear(), "block 1 is queued for upload but not in the queue");
        broken(
            &|st| {
                if let Some(d) = st.entries.get_mut(&BlockId(1)).and_then(|e| e.dirty.as_mut()) {
                    d.prompt = true;
                }
            },
            "block 1 is due at once but not in the queue of those",
        );
        broken(&|st| st.cache_size = 1000, "1024 resident bytes exceed the cache size 1000");
        broken(&|st| st.max_dirty = 256, "512 dirty bytes exceed the dirty limit 256");
    }
}
