//! Write-back: the upload scheduler, uploads, flush and discard.
//!
//! Each write takes a generation from a cache-wide sequence. An upload sends
//! a snapshot of the block and, when it succeeds, marks the block clean only
//! if no write came after the snapshot; otherwise the block stays dirty and
//! is queued again. So a write that lands while its block is uploading is
//! never lost, and a block rewritten many times before its upload starts is
//! uploaded once.
//!
//! Dirty blocks wait in two queues, each in the order the blocks turned
//! dirty: a block written whole and not uploaded within the write delay is
//! due at once and goes to the prompt queue, uploaded first; the others are
//! due the write delay after they turned dirty.

use std::ops::Range;
use std::pin::pin;
use std::sync::Arc;

use bytes::Bytes;
use s3block_core::{BlockDevice, BlockId, Error, Result, zeros};
use tokio::time::Instant;

use crate::budget::UploadSlot;
use crate::cache::Shared;
use crate::entry::{Content, Dirty, Entry, Wb, merge};
use crate::incident::{Ended, Say, span};
use crate::load::{share_error, wait};
use crate::state::{LoadOutcome, SchedulerWake, State};
use crate::stats::{Counters, Start};

/// What an upload sends.
enum Snapshot {
    /// The block is zero below already: nothing to send.
    Nothing(u64),
    /// The bytes to write and the generation they hold.
    Data(Bytes, u64, bool),
}

impl<D: BlockDevice + 'static> Shared<D> {
    /// The scheduler: starts uploads of dirty blocks whose write delay has
    /// passed (at once when a flush or a writer is waiting), and retries of
    /// failed ones, keeping at most `upload_concurrency` in flight.
    pub(crate) async fn run_scheduler(self: Arc<Self>) {
        loop {
            let deadline = {
                let mut st = self.lock();
                if st.stopped {
                    return;
                }
                let now = Instant::now();
                let (uploads, full) = self.start_uploads(&mut st, now);
                // Clean blocks past `--cache-timeout` go, and the next one
                // due is a deadline too.
                st.expiry_wake = false;
                let deadline = match (uploads, st.expire_clean(now)) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                st.scheduler = match deadline {
                    _ if full => SchedulerWake::Full,
                    Some(at) => SchedulerWake::At(at),
                    None => SchedulerWake::Idle,
                };
                deadline
            };
            match deadline {
                Some(at) => {
                    tokio::select! {
                        () = self.work.notified() => {}
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
                None => self.work.notified().await,
            }
        }
    }

    /// Starts what can start now; returns when to look again, and whether
    /// every upload slot is taken (an upload ending is then the wake-up).
    ///
    /// A block written whole (a prompt one) is due at once. The write delay
    /// is skipped when a flush or a writer waits, and while
    /// dirty data is above half the dirty limit: a streaming writer then
    /// keeps every upload slot busy instead of filling the limit, stalling,
    /// and leaving the slots idle while it refills. A rewrite-heavy writer
    /// stays below the mark and keeps its coalescing.
    fn start_uploads(self: &Arc<Self>, st: &mut State, now: Instant) -> (Option<Instant>, bool) {
        let max = self.limits.upload_concurrency;
        let mut full = false;
        let force = st.flushers > 0 || st.waiting_writers > 0 || st.under_pressure();
        let mut deadline: Option<Instant> = None;
        // The blocks due at once first, then those waiting for the delay.
        for prompt in [true, false] {
            let mut deferred = Vec::new();
            while st.in_flight < max && !full {
                let Some(&block) = st.queue_mut(prompt).front() else { break };
                // A stale item: the block left the queue's state since (a
                // discard), and may be queued again in the other queue.
                let stale = |e: &&Entry| e.wb != Wb::Queued || (prompt && !e.due_at_once());
                let Some(e) = st.entries.get(&block).filter(|e| !stale(e)) else {
                    st.queue_mut(prompt).pop_front();
                    continue;
                };
                if st.is_discarding(block) {
                    st.queue_mut(prompt).pop_front();
                    deferred.push(block);
                    continue;
                }
                let ready = e.dirty.as_deref().map_or(now, |d| d.due(self.config.write_delay));
                let why = if ready <= now {
                    if prompt { Start::WrittenWhole } else { Start::Delay }
                } else if st.flushers > 0 {
                    Start::Flush
                } else if force {
                    Start::DirtyLimit
                } else {
                    deadline = Some(ready);
                    break;
                };
                let Some(slot) = self.budget_slot(st.in_flight) else {
                    full = true;
                    break;
                };
                st.queue_mut(prompt).pop_front();
                self.counters.start(why);
                self.start_upload(st, block, slot, now);
            }
            let queue = st.queue_mut(prompt);
            for block in deferred.into_iter().rev() {
                queue.push_front(block);
            }
        }
        full |= st.in_flight >= max;
        let failed: Vec<BlockId> = st.failed.iter().copied().collect();
        for block in failed {
            if st.in_flight >= max {
                break;
            }
            let Some(e) = st.entries.get(&block).filter(|e| e.wb == Wb::Failed) else {
                st.failed.remove(&block);
                continue;
            };
            if st.is_discarding(block) {
                continue;
            }
            let (retry_at, attempt_seq) = e.dirty.as_ref().map_or((now, 0), |d| (d.retry_at, d.attempt_seq));
            if now >= retry_at || (st.flushers > 0 && attempt_seq < st.flush_seq) {
                let Some(slot) = self.budget_slot(st.in_flight) else {
                    full = true;
                    break;
                };
                st.failed.remove(&block);
                Counters::bump(&self.counters.retries);
                self.start_upload(st, block, slot, now);
            } else {
                deadline = Some(deadline.map_or(retry_at, |d| d.min(retry_at)));
            }
        }
        (deadline, full)
    }

    /// A slot of the budget shared with other caches, when in one: `None`
    /// when all are taken (a slot freed wakes this scheduler);
    /// `Some(None)` when the cache has no budget.
    /// A cache over a disk tier in the budget takes none: its uploads go
    /// to the local disk.
    fn budget_slot(&self, in_flight: usize) -> Option<Option<UploadSlot>> {
        match self.budget.get() {
            Some(budget) if budget.is_local(std::ptr::from_ref(self) as usize) => Some(None),
            Some(budget) => budget.try_slot(in_flight).map(Some),
            None => Some(None),
        }
    }

    fn start_upload(
        self: &Arc<Self>,
        st: &mut State,
        block: BlockId,
        slot: Option<UploadSlot>,
        now: Instant,
    ) {
        let seq = st.flush_seq;
        let now_ms = st.millis(now);
        let Some(e) = st.entries.get_mut(&block) else { return };
        e.wb = Wb::Uploading;
        e.uploaded_ms = now_ms;
        if let Some(d) = &mut e.dirty {
            d.attempt_seq = seq;
        }
        st.in_flight += 1;
        let shared = Arc::clone(self);
        self.runtime.spawn(async move {
            shared.upload(block).await;
            drop(slot);
        });
    }

    /// Makes a snapshot of the block to upload, fetching and merging the rest
    /// of a partially written block first.
    async fn snapshot(self: &Arc<Self>, block: BlockId) -> Result<Snapshot> {
        let mut below: Option<Bytes> = None;
        loop {
            let rx = {
                let mut st = self.lock();
                let zero_below = st.zeros.contains(block.0.into());
                let Some(e) = st.entries.get_mut(&block) else {
                    return Ok(Snapshot::Nothing(0));
                };
                if let Some(d) = &mut e.dirty {
                    d.rewritten_since = None;
                }
                let generation = e.generation;
                match &e.content {
                    Content::Full(data) => return Ok(Snapshot::Data(data.clone(), generation, false)),
                    Content::Zero if zero_below => return Ok(Snapshot::Nothing(generation)),
                    Content::Zero => {
                        return Ok(Snapshot::Data(zeros(self.geometry.get().block_len()), generation, true));
                    }
                    Content::Sparse(pages) => {
                        let data = pages.to_block(self.geometry.get().block_len());
                        return Ok(Snapshot::Data(data, generation, false));
                    }
                    // The bytes fetched hold the block as it was then, older
                    // writes merged in; the pages hold every write since.
                    Content::Partial(known) => match below.take() {
                        Some(fetched) => {
                            return Ok(Snapshot::Data(
                                merge(fetched, &known.pages, &known.written),
                                generation,
                                false,
                            ));
                        }
                        None => self.load_for_upload(&mut st, block),
                    },
                }
            };
            match wait(rx).await {
                LoadOutcome::Failed(e) => return Err(share_error(block, &e)),
                LoadOutcome::Done(data) => below = Some(data),
                LoadOutcome::Stale | LoadOutcome::Pending => below = None,
            }
        }
    }

    async fn upload(self: Arc<Self>, block: BlockId) {
        let (generation, zero, result) = match self.snapshot(block).await {
            Ok(Snapshot::Nothing(generation)) => (generation, true, Ok(())),
            Ok(Snapshot::Data(data, generation, zero)) => {
                (generation, zero, self.lower.write_block(block, data).await)
            }
            Err(e) => (0, false, Err(e)),
        };
        self.finish_upload(block, generation, zero, result);
        self.progress.notify_waiters();
        self.room.notify_one();
        self.work.notify_one();
    }

    fn finish_upload(&self, block: BlockId, generation: u64, zero: bool, result: Result<()>) {
        let mut st = self.lock();
        st.in_flight -= 1;
        let now = Instant::now();
        let Some(e) = st.entries.get_mut(&block) else { return };
        match result {
            Ok(()) => {
                Counters::bump(&self.counters.uploads);
                if let Some(Ended { total, lasted }) = st.upload_failures.succeeded(now) {
                    tracing::info!(
                        "block uploads succeed again, after {total} failures over {}",
                        span(lasted)
                    );
                }
                let Some(e) = st.entries.get_mut(&block) else { return };
                let since = e.dirty_since();
                let size = e.content.size();
                if e.generation == generation {
                    e.dirty = None;
                    e.wb = Wb::Clean;
                    let is_zero = matches!(e.content, Content::Zero);
                    if let Some(since) = since {
                        st.dirty_index.remove(&(since, block));
                        st.dirty_bytes -= size;
                    }
                    if is_zero {
                        st.entries.remove(&block);
                    } else {
                        st.make_evictable(block, now);
                    }
                } else {
                    // Rewritten while uploading: it waits for the delay.
                    let d = e.dirty.get_or_insert_with(|| Dirty::new(generation + 1, now, false));
                    let next = d.rewritten_since.unwrap_or(generation + 1);
                    d.since = next;
                    d.dirtied_at = now;
                    d.prompt = false;
                    d.failures = 0;
                    d.error = None;
                    e.wb = Wb::Queued;
                    if let Some(since) = since {
                        st.dirty_index.remove(&(since, block));
                    }
                    st.dirty_index.insert((next, block));
                    st.queue.push_back(block);
                }
                let n = u64::from(block.0);
                st.set_zero(n..n + 1, zero);
                // A fetch that started before this upload may hold old bytes.
                st.mark_stale(block);
            }
            Err(err) => {
                Counters::bump(&self.counters.upload_errors);
                let failures = match &mut e.dirty {
                    Some(d) => {
                        d.failures = d.failures.saturating_add(1);
                        d.failures
                    }
                    None => 1,
                };
                // The schedule's delays only: a dirty block is never given up.
                match st.upload_failures.failed(now) {
                    Say::First => tracing::warn!(
                        block = block.0,
                        error = %err,
                        "block upload failed; it stays dirty and is retried (further upload failures are \
                         counted and said once a minute)"
                    ),
                    Say::Summary { count, total, lasted } => tracing::warn!(
                        "block uploads keep failing: {count} more since the last line, {total} in {}; the last: \
                         {err}; the blocks stay dirty and are retried",
                        span(lasted)
                    ),
                    Say::Counted => tracing::debug!(block = block.0, error = %err, "block upload failed"),
                }
                let backoff = self.config.upload_retry.delay(failures, &mut st.retry_rng);
                let Some(e) = st.entries.get_mut(&block) else { return };
                if let Some(d) = &mut e.dirty {
                    d.retry_at = now + backoff;
                    d.error = Some(Arc::new(err));
                }
                e.wb = Wb::Failed;
                st.failed.insert(block);
                // A failed PUT may still have stored the block (the answer
                // was lost, not the request), so the block is no longer
                // known to be zero below: zeros written over it later must
                // reach the store as a DELETE, not be skipped.
                let n = u64::from(block.0);
                st.set_zero(n..n + 1, false);
            }
        }
    }

    /// Waits until every block dirty now is stored below (or failed during
    /// this call), then flushes the device below.
    pub(crate) async fn flush(&self) -> Result<()> {
        let (my_seq, target) = {
            let mut st = self.lock();
            st.flush_seq += 1;
            st.flushers += 1;
            (st.flush_seq, st.last_gen)
        };
        let guard = FlushGuard(self);
        self.work.notify_one();
        loop {
            let mut notified = pin!(self.progress.notified());
            notified.as_mut().enable();
            {
                let st = self.lock();
                let mut waiting = false;
                let mut failed: Vec<BlockId> = Vec::new();
                for &(_, block) in st.dirty_index.range(..=(target, BlockId(u32::MAX))) {
                    match st.entries.get(&block) {
                        Some(e)
                            if e.wb == Wb::Failed
                                && e.dirty.as_ref().is_some_and(|d| d.attempt_seq >= my_seq) =>
                        {
                            failed.push(block)
                        }
                        Some(_) => {
                            waiting = true;
                            break;
                        }
                        None => {}
                    }
                }
                if !waiting {
                    if let Some(&first) = failed.first() {
                        let source = st.entries.get(&first).and_then(|e| e.dirty.as_ref()?.error.clone());
                        let source = match source {
                            Some(e) => share_error(first, &e),
                            None => Error::Config(format!("block {first} could not be written")),
                        };
                        return Err(Error::WriteBack {
                            count: failed.len(),
                            first,
                            source: Box::new(source),
                        });
                    }
                    break;
                }
            }
            notified.await;
        }
        drop(guard);
        self.lower.flush().await
    }

    /// Drops the cached blocks of `blocks` and discards them below. Uploads of
    /// those blocks in flight finish first; writes arriving meanwhile are kept
    /// and uploaded after the discard.
    pub(crate) async fn discard(&self, blocks: Range<u64>) -> Result<()> {
        {
            let mut st = self.lock();
            st.discarding.push(blocks.clone());
            let loads: Vec<BlockId> =
                st.loads.keys().copied().filter(|b| blocks.contains(&u64::from(b.0))).collect();
            for b in loads {
                st.mark_stale(b);
            }
        }
        loop {
            let mut notified = pin!(self.progress.notified());
            notified.as_mut().enable();
            {
                let mut st = self.lock();
                let inside = st.entries_in(&blocks);
                if inside.iter().all(|b| st.entries.get(b).is_none_or(|e| e.wb != Wb::Uploading)) {
                    for b in inside {
                        st.forget(b);
                    }
                    if st.zeros.contains_range(&blocks) {
                        // Nothing is stored there: no request.
                        if let Some(i) = st.discarding.iter().position(|r| *r == blocks) {
                            st.discarding.swap_remove(i);
                        }
                        drop(st);
                        self.progress.notify_waiters();
                        self.room.notify_one();
                        self.work.notify_one();
                        return Ok(());
                    }
                    break;
                }
            }
            notified.await;
        }
        let result = self.lower.discard(blocks.clone()).await;
        {
            let mut st = self.lock();
            if let Some(i) = st.discarding.iter().position(|r| *r == blocks) {
                st.discarding.swap_remove(i);
            }
            st.set_zero(blocks, result.is_ok());
        }
        self.progress.notify_waiters();
        self.room.notify_one();
        self.work.notify_one();
        result
    }
}

/// Ends a flush's claim to urgent uploads, however the flush ends.
struct FlushGuard<'a, D>(&'a Shared<D>);

impl<D> Drop for FlushGuard<'_, D> {
    fn drop(&mut self) {
        self.0.lock().flushers -= 1;
    }
}
