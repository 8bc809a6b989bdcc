//! What the cache has done: the figures behind the FUSE stats file and
//! `s3block info`.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use s3block_core::{RequestCounts, format_size};

/// A snapshot of a [`BlockCache`](crate::BlockCache)'s activity and state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Block reads served from memory.
    pub hits: u64,
    /// Block reads that had to read the block below.
    pub misses: u64,
    /// Reads of blocks known to be zero, answered without a request.
    pub zero_hits: u64,
    /// Blocks fetched ahead of the reader.
    pub read_ahead_issued: u64,
    /// Blocks fetched ahead that were then read.
    pub read_ahead_used: u64,
    /// Blocks written to the layer below (uploads that succeeded).
    pub uploads: u64,
    /// Uploads tried again after a failure.
    pub retries: u64,
    /// Uploads that failed.
    pub upload_errors: u64,
    /// Writers that had to wait for the dirty limit.
    pub write_waits: u64,
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
    /// The store's request counters, when the cache was given them.
    pub requests: Option<RequestCounts>,
}

impl CacheStats {
    /// Fraction of block reads served without a request (hits and zero hits).
    pub fn hit_ratio(&self) -> f64 {
        let served = self.hits + self.zero_hits;
        let total = served + self.misses;
        if total == 0 { 0.0 } else { served as f64 / total as f64 }
    }
}

impl fmt::Display for CacheStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "cache:       {} of {} resident in {} blocks",
            format_size(self.resident_bytes),
            format_size(self.cache_size),
            self.resident_blocks
        )?;
        writeln!(
            f,
            "reads:       {} hits, {} misses, {} zero-block hits ({:.1}% without a request)",
            self.hits,
            self.misses,
            self.zero_hits,
            self.hit_ratio() * 100.0
        )?;
        writeln!(f, "read-ahead:  {} issued, {} used", self.read_ahead_issued, self.read_ahead_used)?;
        writeln!(
            f,
            "dirty:       {} blocks, {}; {} uploads in flight",
            self.dirty_blocks,
            format_size(self.dirty_bytes),
            self.uploads_in_flight
        )?;
        writeln!(
            f,
            "write-back:  {} uploads, {} retries, {} errors, {} writer waits",
            self.uploads, self.retries, self.upload_errors, self.write_waits
        )?;
        writeln!(f, "zero blocks: {} known", self.known_zero_blocks)?;
        if let Some(r) = &self.requests {
            writeln!(
                f,
                "requests:    {} GET, {} PUT, {} DELETE ({} bulk), {} LIST",
                r.gets, r.puts, r.deletes, r.bulk_deletes, r.lists
            )?;
            writeln!(
                f,
                "transfer:    {} sent, {} received; {} retries, {} errors",
                format_size(r.bytes_sent),
                format_size(r.bytes_received),
                r.retries,
                r.errors
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
    pub(crate) uploads: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) upload_errors: AtomicU64,
    pub(crate) write_waits: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Fills the cumulative fields of `stats`.
    pub(crate) fn fill(&self, stats: &mut CacheStats) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        stats.hits = get(&self.hits);
        stats.misses = get(&self.misses);
        stats.zero_hits = get(&self.zero_hits);
        stats.read_ahead_issued = get(&self.read_ahead_issued);
        stats.read_ahead_used = get(&self.read_ahead_used);
        stats.uploads = get(&self.uploads);
        stats.retries = get(&self.retries);
        stats.upload_errors = get(&self.upload_errors);
        stats.write_waits = get(&self.write_waits);
    }

    pub(crate) fn reset(&self) {
        for c in [
            &self.hits,
            &self.misses,
            &self.zero_hits,
            &self.read_ahead_issued,
            &self.read_ahead_used,
            &self.uploads,
            &self.retries,
            &self.upload_errors,
            &self.write_waits,
        ] {
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
        assert!(text.contains("30 hits, 10 misses"), "{text}");
        assert!(text.contains("75.0%"), "{text}");
        assert!(text.contains("7 blocks"), "{text}");
        assert!(text.contains("12 GET, 11 PUT"), "{text}");
        assert!(!CacheStats::default().to_string().contains("GET"));
    }
}
