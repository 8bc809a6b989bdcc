//! Fetching blocks from below: one read per block however many wait for it.

use std::fmt;
use std::sync::Arc;

use s3block_core::{
    BlockDevice, BlockId, Error, FetchReason, StoreErrorKind, check_block_len, with_fetch_reason,
};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::cache::Shared;
use crate::incident::{Ended, Say, span};
use crate::state::{Load, LoadOutcome, State};
use crate::stats::Counters;

impl<D: BlockDevice + 'static> Shared<D> {
    /// Returns a receiver for the fetch of `block`, joining the one in flight
    /// or starting one. A reader joining a read-ahead counts it as used;
    /// any other reader that waits for a fetch is a miss.
    pub(crate) fn load(self: &Arc<Self>, st: &mut State, block: BlockId) -> watch::Receiver<LoadOutcome> {
        if let Some(load) = st.loads.get_mut(&block) {
            load.for_upload = false;
            if load.prefetch {
                load.prefetch = false;
                Counters::bump(&self.counters.read_ahead_used);
            } else {
                Counters::bump(&self.counters.misses);
            }
            return load.tx.subscribe();
        }
        Counters::bump(&self.counters.misses);
        self.start_load(st, block, FetchReason::Demand)
    }

    /// Returns a receiver for the fetch of `block` an upload of a partly
    /// written block needs, joining the one in flight or starting one.
    pub(crate) fn load_for_upload(
        self: &Arc<Self>,
        st: &mut State,
        block: BlockId,
    ) -> watch::Receiver<LoadOutcome> {
        if let Some(load) = st.loads.get(&block) {
            return load.tx.subscribe();
        }
        let rx = self.start_load(st, block, FetchReason::Upload);
        if let Some(load) = st.loads.get_mut(&block) {
            load.for_upload = true;
        }
        rx
    }

    /// Starts a fetch of `block` on the cache's runtime. The requests it
    /// makes are counted under `reason` (see [`with_fetch_reason`]).
    pub(crate) fn start_load(
        self: &Arc<Self>,
        st: &mut State,
        block: BlockId,
        reason: FetchReason,
    ) -> watch::Receiver<LoadOutcome> {
        st.next_load_id += 1;
        let id = st.next_load_id;
        let (tx, rx) = watch::channel(LoadOutcome::Pending);
        let prefetch = reason == FetchReason::ReadAhead;
        let bytes = u64::from(self.geometry.get().block_size());
        st.add_load(block, Load { id, tx, prefetch, for_upload: false, bytes });
        let shared = Arc::clone(self);
        self.runtime.spawn(with_fetch_reason(reason, async move { shared.run_load(block, id).await }));
        rx
    }

    /// Starts fetches of the blocks ahead of a sequential reader
    /// ([`ReadAhead::ahead`](crate::readahead::ReadAhead::ahead)), in
    /// order, while fewer read-ahead fetches than the window are in flight
    /// (those no reader waits on yet) and clean blocks could make room:
    /// read-ahead never competes with dirty data. The blocks it could not
    /// take now are offered again when the reader moves on or a fetch ends.
    pub(crate) fn fetch_ahead(self: &Arc<Self>, st: &mut State) {
        let ahead = st.read_ahead.ahead(
            self.limits.read_ahead_distance,
            self.geometry.get().block_count(),
            self.limits.read_ahead_trigger,
        );
        if ahead.is_empty() {
            return;
        }
        let block_len = u64::from(self.geometry.get().block_size());
        // The fetches in flight hold their room already (`State::room`).
        let mut room = st.room().saturating_sub(st.dirty_bytes);
        let mut in_flight = st.loads.values().filter(|l| l.prefetch).count() as u64;
        let mut asked_to = ahead.start;
        for n in ahead {
            let b = BlockId(n as u32);
            if !(st.entries.contains_key(&b) || st.loads.contains_key(&b) || st.known_zero(b)) {
                if room < block_len || in_flight >= self.limits.read_ahead_blocks {
                    break;
                }
                room -= block_len;
                in_flight += 1;
                Counters::bump(&self.counters.read_ahead_issued);
                drop(self.start_load(st, b, FetchReason::ReadAhead));
            }
            asked_to = n + 1;
        }
        st.read_ahead.issued_to(asked_to);
    }

    async fn run_load(self: Arc<Self>, block: BlockId, id: u64) {
        let slot = self.fetch_slot().await;
        if self.lock().loads.get(&block).is_none_or(|l| l.id != id) {
            // Marked stale while it waited for its slot: its readers retried.
            return;
        }
        let result = match self.lower.read_block(block).await {
            Ok(data) => check_block_len(&self.geometry.get(), block, &data).map(|()| data),
            Err(e) => Err(e),
        };
        drop(slot);
        let (load, outcome, wake_scheduler) = {
            let mut st = self.lock();
            if st.loads.get(&block).is_none_or(|l| l.id != id) {
                // Marked stale while in flight; its readers already retried.
                return;
            }
            let Some(load) = st.remove_load(block) else { return };
            let outcome = match result {
                // The block as the cache holds it, written parts merged in.
                Ok(data) => {
                    let now = Instant::now();
                    if let Some(Ended { total, lasted }) = st.fetch_failures.succeeded(now) {
                        tracing::info!(
                            "block reads succeed again, after {total} failures over {}",
                            span(lasted)
                        );
                    }
                    let outcome =
                        LoadOutcome::Done(st.install(block, data, load.prefetch, load.for_upload, now));
                    // The fetch's request is free: the reader's window may
                    // take the next block.
                    self.fetch_ahead(&mut st);
                    outcome
                }
                Err(e) => {
                    match st.fetch_failures.failed(Instant::now()) {
                        Say::First => tracing::warn!(
                            block = block.0,
                            error = %e,
                            "block read failed (further read failures are counted and said once a minute)"
                        ),
                        Say::Summary { count, total, lasted } => tracing::warn!(
                            "block reads keep failing: {count} more since the last line, {total} in {}; the \
                             last: {e}",
                            span(lasted)
                        ),
                        Say::Counted => tracing::debug!(block = block.0, error = %e, "block read failed"),
                    }
                    LoadOutcome::Failed(Arc::new(e))
                }
            };
            (load, outcome, std::mem::take(&mut st.expiry_wake))
        };
        if wake_scheduler {
            // The block's clean timeout is the only one running: the
            // scheduler times it.
            self.work.notify_one();
        }
        load.tx.send_replace(outcome);
    }
}

/// Waits for a fetch to end.
pub(crate) async fn wait(mut rx: watch::Receiver<LoadOutcome>) -> LoadOutcome {
    loop {
        let now = rx.borrow_and_update().clone();
        if !matches!(now, LoadOutcome::Pending) {
            return now;
        }
        if rx.changed().await.is_err() {
            let last = rx.borrow().clone();
            return match last {
                LoadOutcome::Pending => LoadOutcome::Stale,
                other => other,
            };
        }
    }
}

/// An error shared by every reader of one failed fetch or upload.
#[derive(Debug)]
struct SharedError(Arc<Error>);

impl fmt::Display for SharedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The outer error already names the block and key: show the cause.
        match std::error::Error::source(&*self.0) {
            Some(cause) => fmt::Display::fmt(cause, f),
            None => fmt::Display::fmt(&self.0, f),
        }
    }
}

impl std::error::Error for SharedError {}

/// A copy of a shared error for one caller, keeping the block, key and kind.
pub(crate) fn share_error(block: BlockId, e: &Arc<Error>) -> Error {
    match &**e {
        Error::Store { block: b, key, kind, .. } => Error::Store {
            block: *b,
            key: key.clone(),
            kind: *kind,
            source: Box::new(SharedError(Arc::clone(e))),
        },
        Error::Corrupt { block, key, reason } => {
            Error::Corrupt { block: *block, key: key.clone(), reason: reason.clone() }
        }
        Error::WrongLength { block, expected, actual } => {
            Error::WrongLength { block: *block, expected: *expected, actual: *actual }
        }
        Error::BlockOutOfRange { block, count } => Error::BlockOutOfRange { block: *block, count: *count },
        Error::ReadOnly => Error::ReadOnly,
        _ => Error::Store {
            block: Some(block),
            key: format!("(block {block})"),
            kind: if e.is_transient() { StoreErrorKind::Transient } else { StoreErrorKind::Permanent },
            source: Box::new(SharedError(Arc::clone(e))),
        },
    }
}
