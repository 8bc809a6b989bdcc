//! Cache settings, with defaults sized for a small host.

use std::sync::Arc;
use std::time::Duration;

use s3block_core::{Backoff, Error, Geometry, RequestCounters, Result, format_size};

/// Default cache size: 64 MiB, half the RAM of the smallest host s3block targets.
pub const DEFAULT_CACHE_SIZE: u64 = 64 << 20;

/// Default number of uploads in flight at once.
///
/// A PUT spends most of its time waiting on round trips, so flush time falls
/// almost linearly with concurrency until bandwidth is the limit: the bench
/// `flush 64 blocks, 2 ms per request` measures 210 ms with 1 upload, 51 ms
/// with 4, 27 ms with 8 and 15 ms with 16. Eight keeps most of that gain
/// while holding at most eight blocks in upload buffers (8 MiB at 1 MiB
/// blocks, affordable on a 128 MB host) and eight connections to the store.
/// (s3backer runs 20 threads, sized for hosts with more memory.)
pub const DEFAULT_UPLOAD_CONCURRENCY: usize = 8;

/// Default write delay: rewrites of a block within this time are uploaded
/// once. The same as s3backer's default, so migrating users see the same
/// request pattern.
pub const DEFAULT_WRITE_DELAY: Duration = Duration::from_millis(250);

/// Default largest read-ahead window: 4 MiB.
pub const DEFAULT_READ_AHEAD: u64 = 4 << 20;

/// Default number of reads in a row (each of the block after the last)
/// before read-ahead starts.
pub const DEFAULT_READ_AHEAD_TRIGGER: u32 = 2;

/// Default schedule of upload retries: waits of up to half a second after
/// the first failure, doubling to at most 30 seconds, with full jitter so
/// the blocks of one outage do not all retry at once.
pub fn default_upload_retry() -> Backoff {
    Backoff::new(Duration::from_millis(500), Duration::from_secs(30))
}

/// How a [`BlockCache`](crate::BlockCache) behaves. Build with
/// [`CacheConfig::builder`] or take [`CacheConfig::default`].
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Most bytes of block data held in memory.
    pub(crate) cache_size: u64,
    /// Most bytes of dirty (not yet uploaded) block data; writers wait beyond it.
    /// `None` means half the cache size.
    pub(crate) max_dirty: Option<u64>,
    /// Uploads in flight at once.
    pub(crate) upload_concurrency: usize,
    /// How long a dirty block waits before it is uploaded, so rewrites coalesce.
    /// Not applied while dirty data is above half of the dirty limit.
    pub(crate) write_delay: Duration,
    /// Largest read-ahead window in bytes; 0 turns read-ahead off.
    pub(crate) read_ahead: u64,
    /// Reads in a row before read-ahead starts.
    pub(crate) read_ahead_trigger: u32,
    /// The store's request counters, reported in [`CacheStats`](crate::CacheStats).
    pub(crate) counters: Option<Arc<RequestCounters>>,
    /// When a failed upload is tried again (a flush tries at once). Only
    /// the delays are used: the cache never gives up a dirty block, so the
    /// schedule's attempt and time budgets do not apply.
    pub(crate) upload_retry: Backoff,
    /// How long a clean block stays after it was read or stored; `None`:
    /// until the cache needs its room.
    pub(crate) clean_timeout: Option<Duration>,
    /// Blocks `0..protected_blocks` are evicted only when no other clean
    /// block is left.
    pub(crate) protected_blocks: u64,
    /// A read miss of a few pages of a large block fetches only those pages
    /// (see [`CacheConfigBuilder::ranged_reads`]).
    pub(crate) ranged_reads: bool,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            cache_size: DEFAULT_CACHE_SIZE,
            max_dirty: None,
            upload_concurrency: DEFAULT_UPLOAD_CONCURRENCY,
            write_delay: DEFAULT_WRITE_DELAY,
            read_ahead: DEFAULT_READ_AHEAD,
            read_ahead_trigger: DEFAULT_READ_AHEAD_TRIGGER,
            counters: None,
            upload_retry: default_upload_retry(),
            clean_timeout: None,
            protected_blocks: 0,
            ranged_reads: true,
        }
    }
}

impl CacheConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> CacheConfigBuilder {
        CacheConfigBuilder { config: CacheConfig::default() }
    }

    /// A builder starting from these settings, to change some of them.
    pub fn to_builder(&self) -> CacheConfigBuilder {
        CacheConfigBuilder { config: self.clone() }
    }

    /// Most bytes of block data held in memory.
    pub fn cache_size(&self) -> u64 {
        self.cache_size
    }

    /// Most bytes of dirty data, when set (else half the cache size).
    pub fn max_dirty(&self) -> Option<u64> {
        self.max_dirty
    }

    /// Uploads in flight at once.
    pub fn upload_concurrency(&self) -> usize {
        self.upload_concurrency
    }

    /// How long a dirty block waits before it is uploaded.
    pub fn write_delay(&self) -> Duration {
        self.write_delay
    }

    /// Largest read-ahead window in bytes.
    pub fn read_ahead(&self) -> u64 {
        self.read_ahead
    }

    /// Reads in a row before read-ahead starts.
    pub fn read_ahead_trigger(&self) -> u32 {
        self.read_ahead_trigger
    }

    /// How long a clean block stays after it was read or stored (`None`:
    /// until the cache needs its room).
    pub fn clean_timeout(&self) -> Option<Duration> {
        self.clean_timeout
    }

    /// The number of blocks, from block 0, kept in preference to others.
    pub fn protected_blocks(&self) -> u64 {
        self.protected_blocks
    }

    /// Whether a read miss of a few pages of a large block fetches only
    /// those pages.
    pub fn ranged_reads(&self) -> bool {
        self.ranged_reads
    }

    /// Checks the settings against the volume's block size and returns the
    /// limits in blocks and bytes the cache enforces.
    pub(crate) fn limits(&self, geometry: &Geometry) -> Result<Limits> {
        let block = geometry.block_size() as u64;
        if self.cache_size < block {
            return Err(Error::Config(format!(
                "cache size {} is smaller than one block ({}); give at least the block size",
                format_size(self.cache_size),
                format_size(block)
            )));
        }
        let max_dirty = self.max_dirty.unwrap_or((self.cache_size / 2).max(block));
        if max_dirty < block {
            return Err(Error::Config(format!(
                "max dirty {} is smaller than one block ({}); give at least the block size",
                format_size(max_dirty),
                format_size(block)
            )));
        }
        if max_dirty > self.cache_size {
            return Err(Error::Config(format!(
                "max dirty {} is larger than the cache size {}; dirty data lives in the cache",
                format_size(max_dirty),
                format_size(self.cache_size)
            )));
        }
        if self.upload_concurrency == 0 {
            return Err(Error::Config("upload concurrency must be at least 1".into()));
        }
        // Read-ahead may take at most a quarter of the cache, so it does not
        // evict what it fetched before the reader gets there.
        let read_ahead_blocks = (self.read_ahead / block).min(self.cache_size / block / 4);
        // Protected blocks count against the cache size like any other: at
        // most as many as the cache holds are protected, so the protection
        // never asks for more memory than the budget.
        let protected_blocks = self.protected_blocks.min(self.cache_size / block).min(geometry.block_count());
        Ok(Limits {
            cache_size: self.cache_size,
            max_dirty,
            read_ahead_blocks,
            read_ahead_trigger: self.read_ahead_trigger,
            protected_blocks,
        })
    }
}

/// Validated limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) cache_size: u64,
    pub(crate) max_dirty: u64,
    pub(crate) read_ahead_blocks: u64,
    pub(crate) read_ahead_trigger: u32,
    /// Blocks `0..protected_blocks` are evicted last (at most the blocks
    /// the cache holds).
    pub(crate) protected_blocks: u64,
}

/// Builds a [`CacheConfig`].
#[derive(Debug, Clone)]
pub struct CacheConfigBuilder {
    config: CacheConfig,
}

impl CacheConfigBuilder {
    /// Most bytes of block data held in memory.
    pub fn cache_size(mut self, bytes: u64) -> Self {
        self.config.cache_size = bytes;
        self
    }

    /// Most bytes of dirty data before writers wait.
    pub fn max_dirty(mut self, bytes: u64) -> Self {
        self.config.max_dirty = Some(bytes);
        self
    }

    /// Uploads in flight at once.
    pub fn upload_concurrency(mut self, n: usize) -> Self {
        self.config.upload_concurrency = n;
        self
    }

    /// How long a dirty block waits before upload.
    pub fn write_delay(mut self, delay: Duration) -> Self {
        self.config.write_delay = delay;
        self
    }

    /// Largest read-ahead window in bytes (0: off).
    pub fn read_ahead(mut self, bytes: u64) -> Self {
        self.config.read_ahead = bytes;
        self
    }

    /// Reads in a row, each of the block after the last, before read-ahead
    /// starts (0: from the first read).
    pub fn read_ahead_trigger(mut self, reads: u32) -> Self {
        self.config.read_ahead_trigger = reads;
        self
    }

    /// The store's request counters, to include in the stats.
    pub fn counters(mut self, counters: Arc<RequestCounters>) -> Self {
        self.config.counters = Some(counters);
        self
    }

    /// When a failed upload is tried again (the delays of `schedule`).
    pub fn upload_retry(mut self, schedule: Backoff) -> Self {
        self.config.upload_retry = schedule;
        self
    }

    /// Drops a clean block `timeout` after it was read or stored, even when
    /// the cache has room (so an idle mount gives its memory back). Zero,
    /// the default, keeps clean blocks until the cache needs their room.
    /// Dirty blocks are never dropped.
    pub fn clean_timeout(mut self, timeout: Duration) -> Self {
        self.config.clean_timeout = (!timeout.is_zero()).then_some(timeout);
        self
    }

    /// Keeps blocks `0..n` (where a filesystem keeps its superblock and
    /// journal) in preference to others: every other clean block is evicted
    /// before one of them. They count against the cache size, and at most
    /// as many as the cache holds are protected.
    pub fn protected_blocks(mut self, n: u64) -> Self {
        self.config.protected_blocks = n;
        self
    }

    /// Lets a read miss fetch only the part of the block it asks for,
    /// widened to aligned 64 KiB (on by default): one ranged GET, when the
    /// block below can be read in part (a raw object; an encoded one is read
    /// whole anyway). A miss fetches the whole block when that part is more
    /// than a quarter of the block (so blocks under 256 KiB are always
    /// fetched whole),
    /// when part of the block is cached or being fetched already (a second
    /// miss on it), or when it continues a sequential run (the block after
    /// the last one read). Pages fetched are kept as such, never taken for
    /// the whole block.
    pub fn ranged_reads(mut self, on: bool) -> Self {
        self.config.ranged_reads = on;
        self
    }

    /// The finished configuration.
    pub fn build(self) -> CacheConfig {
        self.config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_checked_against_the_block_size() {
        let g = Geometry::new(1 << 30, 1 << 20).unwrap();
        let err = CacheConfig::builder().cache_size(4096).build().limits(&g).unwrap_err();
        assert!(err.to_string().contains("cache size 4"), "{err}");
        let err =
            CacheConfig::builder().cache_size(8 << 20).max_dirty(16 << 20).build().limits(&g).unwrap_err();
        assert!(err.to_string().contains("max dirty"), "{err}");
        let l = CacheConfig::builder().cache_size(16 << 20).read_ahead(3 << 20).build().limits(&g).unwrap();
        assert_eq!((l.max_dirty, l.read_ahead_blocks), (8 << 20, 3));
        let l = CacheConfig::builder().cache_size(8 << 20).read_ahead(64 << 20).build().limits(&g).unwrap();
        assert_eq!(l.read_ahead_blocks, 2, "a quarter of the cache at most");
        assert!(CacheConfig::builder().upload_concurrency(0).build().limits(&g).is_err());
        let l = CacheConfig::builder().cache_size(8 << 20).protected_blocks(3).build().limits(&g).unwrap();
        assert_eq!(l.protected_blocks, 3);
        let l = CacheConfig::builder().cache_size(8 << 20).protected_blocks(100).build().limits(&g).unwrap();
        assert_eq!(l.protected_blocks, 8, "no more than the cache holds");
        let c = CacheConfig::builder().clean_timeout(Duration::ZERO).build();
        assert_eq!(c.clean_timeout(), None, "0 is no timeout");
    }
}
