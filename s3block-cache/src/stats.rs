//! What the cache has done: the figures behind the FUSE stats file and
//! `s3block info`.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use s3block_core::{RequestCounts, format_size};

use crate::ranged::Whole;
use crate::report::{MountStats, UploadStartFigures, WholeBlockFigures};

/// A snapshot of a [`BlockCache`](crate::BlockCache)'s activity and state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Block reads served from memory, the block already there (read or
    /// written before; not the first read of a block read-ahead fetched).
    pub hits: u64,
    /// Block reads that waited for a fetch of their block.
    pub misses: u64,
    /// Reads of blocks known to be zero, answered without a request.
    pub zero_hits: u64,
    /// Blocks fetched ahead of the reader.
    pub read_ahead_issued: u64,
    /// Blocks fetched ahead that were then read: each one's first read
    /// (neither a hit nor a miss: a request was made for it, ahead).
    pub read_ahead_used: u64,
    /// Fetches from below that waited for a fetch slot
    /// ([`CacheConfig::fetch_concurrency`](crate::CacheConfig::fetch_concurrency)).
    pub fetch_waits: u64,
    /// Blocks written to the layer below (uploads that succeeded).
    pub uploads: u64,
    /// Uploads tried again after a failure.
    pub retries: u64,
    /// Uploads that failed.
    pub upload_errors: u64,
    /// Writers that had to wait for the dirty limit.
    pub write_waits: u64,
    /// Writes of bytes the block held already: nothing to upload.
    pub unchanged_writes: u64,
    /// The uploads the write-back started, retries aside, by why each
    /// started when it did.
    pub upload_starts: UploadStartFigures,
    /// Blocks not yet stored below.
    pub dirty_blocks: u64,
    /// Bytes of block data not yet stored below.
    pub dirty_bytes: u64,
    /// Uploads in flight now.
    pub uploads_in_flight: u64,
    /// Blocks held in memory (clean or dirty).
    pub resident_blocks: u64,
    /// Bytes of block data held in memory.
    pub resident_bytes: u64,
    /// The cache's capacity in bytes.
    pub cache_size: u64,
    /// Blocks known to be zero below (costing no memory per block).
    pub known_zero_blocks: u64,
    /// Misses that could have fetched part of their block and waited for
    /// the whole block, by the rule that chose it.
    pub whole_block: WholeBlockFigures,
    /// The store's request counters, when the cache was given them.
    pub requests: Option<RequestCounts>,
}

impl CacheStats {
    /// Every block read: hits, read-ahead reads, zero hits and misses.
    pub fn reads(&self) -> u64 {
        self.hits + self.read_ahead_used + self.zero_hits + self.misses
    }

    /// Fraction of block reads that needed no request at all (hits and zero
    /// hits); a read of a block read-ahead fetched is not one.
    pub fn hit_ratio(&self) -> f64 {
        let total = self.reads();
        if total == 0 { 0.0 } else { (self.hits + self.zero_hits) as f64 / total as f64 }
    }
}

impl fmt::Display for CacheStats {
    /// The `[cache]` lines of the stats file (see [`MountStats`]), then,
    /// when the cache was given the store's counters, the requests by method.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let requests = self.requests.unwrap_or_default();
        f.write_str(&MountStats::new(self, &requests, 0.0, 0.0).render_cache())?;
        if let Some(r) = &self.requests {
            writeln!(
                f,
                "requests        {} GET, {} PUT, {} DELETE ({} keys), {} LIST; {} retries, {} errors",
                r.gets, r.puts, r.bulk_deletes, r.deletes, r.lists, r.retries, r.errors
            )?;
            writeln!(
                f,
                "transfer        {} sent, {} received",
                format_size(r.bytes_sent),
                format_size(r.bytes_received)
            )?;
        }
        Ok(())
    }
}

/// The cumulative counters (the gauges live in the cache state).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) zero_hits: AtomicU64,
    pub(crate) read_ahead_issued: AtomicU64,
    pub(crate) read_ahead_used: AtomicU64,
    pub(crate) fetch_waits: AtomicU64,
    pub(crate) uploads: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) upload_errors: AtomicU64,
    pub(crate) write_waits: AtomicU64,
    pub(crate) unchanged_writes: AtomicU64,
    /// Whole-block misses by [`Whole`], in its order.
    pub(crate) whole: [AtomicU64; Whole::COUNT],
    /// Uploads started by [`Start`], in its order.
    pub(crate) starts: [AtomicU64; Start::COUNT],
}

/// Why the write-back started an upload when it did (retries aside): the
/// first that holds, in this order (see [`UploadStartFigures`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    /// The block was written whole and is due at once (prompt uploads).
    WrittenWhole,
    /// Its write delay had passed.
    Delay,
    /// Before its delay: a flush (fsync, sync, unmount) waited for it.
    Flush,
    /// Before its delay: dirty data above half the dirty limit, or a
    /// writer waiting for room under it.
    DirtyLimit,
}

impl Start {
    /// How many there are: the last one's index, plus one.
    pub(crate) const COUNT: usize = Start::DirtyLimit as usize + 1;
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a miss that waited for the whole block, for `why`.
    pub(crate) fn whole(&self, why: Whole) {
        Self::bump(&self.whole[why as usize]);
    }

    /// Counts an upload started, for `why`.
    pub(crate) fn start(&self, why: Start) {
        Self::bump(&self.starts[why as usize]);
    }

    /// Fills the cumulative fields of `stats`.
    pub(crate) fn fill(&self, stats: &mut CacheStats) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        stats.hits = get(&self.hits);
        stats.misses = get(&self.misses);
        stats.zero_hits = get(&self.zero_hits);
        stats.read_ahead_issued = get(&self.read_ahead_issued);
        stats.read_ahead_used = get(&self.read_ahead_used);
        stats.fetch_waits = get(&self.fetch_waits);
        stats.uploads = get(&self.uploads);
        stats.retries = get(&self.retries);
        stats.upload_errors = get(&self.upload_errors);
        stats.write_waits = get(&self.write_waits);
        stats.unchanged_writes = get(&self.unchanged_writes);
        let whole = |why: Whole| get(&self.whole[why as usize]);
        stats.whole_block = WholeBlockFigures {
            written: whole(Whole::Written),
            in_flight: whole(Whole::InFlight),
            large: whole(Whole::Large),
            sequential: whole(Whole::Sequential),
            next_block: whole(Whole::NextBlock),
            dense: whole(Whole::Dense),
        };
        let start = |why: Start| get(&self.starts[why as usize]);
        stats.upload_starts = UploadStartFigures {
            written_whole: start(Start::WrittenWhole),
            delay: start(Start::Delay),
            flush: start(Start::Flush),
            dirty_limit: start(Start::DirtyLimit),
        };
    }

    pub(crate) fn reset(&self) {
        for c in [
            &self.hits,
            &self.misses,
            &self.zero_hits,
            &self.read_ahead_issued,
            &self.read_ahead_used,
            &self.fetch_waits,
            &self.uploads,
            &self.retries,
            &self.upload_errors,
            &self.write_waits,
            &self.unchanged_writes,
        ]
        .into_iter()
        .chain(&self.whole)
        .chain(&self.starts)
        {
            c.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_every_figure() {
        let s = CacheStats {
            hits: 30,
            misses: 10,
            zero_hits: 0,
            dirty_blocks: 7,
            resident_bytes: 3 << 20,
            cache_size: 64 << 20,
            requests: Some(RequestCounts { puts: 11, gets: 12, ..Default::default() }),
            ..Default::default()
        };
        let text = s.to_string();
        assert!(text.contains("  hits          30 "), "{text}");
        assert!(text.contains("  misses        10 "), "{text}");
        assert!(text.contains("75.0%"), "{text}");
        assert!(text.contains("7 blocks"), "{text}");
        assert!(text.contains("12 GET, 11 PUT"), "{text}");
        assert!(!CacheStats::default().to_string().contains("GET"));
    }
}
