//! Cache settings, with defaults sized for a small host.

use std::sync::Arc;
use std::time::Duration;

use s3block_core::{Backoff, Error, Geometry, RequestCounters, Result, format_size};

/// Default cache size: 64 MiB, half the RAM of the smallest host s3block targets.
pub const DEFAULT_CACHE_SIZE: u64 = 64 << 20;

/// Bytes the default request counts aim to keep in flight: 8 MiB.
///
/// A request spends most of its time waiting on a round trip, so what a
/// mount moves per round trip is the bytes it has in flight. A fixed count
/// of requests gives small blocks too few bytes in flight (8 uploads of 4K
/// blocks are 32 KiB per round trip) and large blocks plenty; a fixed
/// budget of bytes, within [`MIN_REQUESTS_IN_FLIGHT`] and
/// [`MAX_REQUESTS_IN_FLIGHT`], gives each block size what it needs. See
/// [`default_requests_in_flight`].
///
/// Through a 50 ms round trip to Garage (the bench's latency proxy),
/// 128 MiB written in 256 KiB blocks until fsync and the file closed went
/// at 58 and 59 MB/s with 16 uploads in flight (4 MiB) and at 90 and 91
/// with 32 (8 MiB); s3backer 2.1.6 made 41. A cold read of 128 MiB went at
/// 71 MB/s with 4 MiB read ahead and at 108 to 123 with 8 MiB (165 with
/// 16 MiB, for 16 MiB more peak RSS; s3backer 2.1.6: 27). On loopback,
/// where Garage's CPU binds, 8 MiB changed neither (writes of 126 to
/// 147 MB/s, reads of 188 to 216 either way) and added about 5 MiB to the
/// peak RSS.
pub const TARGET_BYTES_IN_FLIGHT: u64 = 8 << 20;

/// Fewest requests the defaults keep in flight (blocks of 512K and up).
///
/// Sixteen uploads hold sixteen blocks in upload buffers (16 MiB at 1 MiB
/// blocks, affordable on a 128 MB host beside a 64 MiB cache). Fewer lose
/// throughput on the round trips a small server has to its store: through
/// a 50 ms round trip to Garage, 256 MiB written in 1 MiB blocks until
/// fsync went at 85 and 94 MB/s with 8 uploads in flight, 135 and 132 with
/// 16, 126 and 128 with 24; the bench `flush 64 blocks, 2 ms per request`
/// measures 210 ms with 1 upload, 51 ms with 4, 27 ms with 8 and 15 ms with
/// 16.
pub const MIN_REQUESTS_IN_FLIGHT: usize = 16;

/// Most requests the defaults keep in flight (blocks of 128K and down):
/// more connections than this to one store cost more CPU per byte than
/// they save in waiting. (s3backer runs 20 upload threads at any block
/// size.)
pub const MAX_REQUESTS_IN_FLIGHT: usize = 64;

/// Uploads in flight by default for blocks of 1 MiB and larger: the floor,
/// [`MIN_REQUESTS_IN_FLIGHT`]. Smaller blocks get more; see
/// [`default_requests_in_flight`].
pub const DEFAULT_UPLOAD_CONCURRENCY: usize = MIN_REQUESTS_IN_FLIGHT;

/// The default number of requests in flight at a block size, with a cache
/// of `cache_size` bytes: the uploads at once, and the blocks read ahead of
/// a sequential reader.
///
/// [`TARGET_BYTES_IN_FLIGHT`] over the block size, kept between
/// [`MIN_REQUESTS_IN_FLIGHT`] and [`MAX_REQUESTS_IN_FLIGHT`]: 64 at 4K to
/// 128K, 32 at 256K, 16 at 512K and above. Above the floor, no more than
/// an eighth of the cache's blocks (8 MiB of the default 64 MiB cache):
/// every upload may hold a copy of its block beside the cache, so a
/// smaller cache keeps the memory of the floor (16 at 256K with a 32 MiB
/// cache). The bytes in flight are thus at most 8 MiB, or sixteen blocks
/// when sixteen blocks are more.
///
/// ```
/// use s3block_cache::{DEFAULT_CACHE_SIZE, default_requests_in_flight};
///
/// assert_eq!(default_requests_in_flight(4 << 10, DEFAULT_CACHE_SIZE), 64);
/// assert_eq!(default_requests_in_flight(256 << 10, DEFAULT_CACHE_SIZE), 32);
/// assert_eq!(default_requests_in_flight(256 << 10, 32 << 20), 16);
/// assert_eq!(default_requests_in_flight(1 << 20, DEFAULT_CACHE_SIZE), 16);
/// ```
pub fn default_requests_in_flight(block_size: u32, cache_size: u64) -> usize {
    let block = u64::from(block_size.max(1));
    let eighth = usize::try_from(cache_size / block / 8).unwrap_or(usize::MAX);
    let n = usize::try_from(TARGET_BYTES_IN_FLIGHT / block).unwrap_or(usize::MAX);
    n.clamp(MIN_REQUESTS_IN_FLIGHT, MAX_REQUESTS_IN_FLIGHT).min(eighth.max(MIN_REQUESTS_IN_FLIGHT))
}

/// Default write delay: rewrites of a block within this time are uploaded
/// once. The same as s3backer's default, so migrating users see the same
/// request pattern.
pub const DEFAULT_WRITE_DELAY: Duration = Duration::from_millis(250);

/// Largest read-ahead window by default at 256K blocks (s3block's default
/// block size) with the default cache: 8 MiB. At other block sizes the
/// default window is [`default_requests_in_flight`] blocks, so that many
/// fetches are in flight ahead of a sequential reader: 256 KiB at 4K
/// blocks, 16 MiB at 1M.
pub const DEFAULT_READ_AHEAD: u64 = 8 << 20;

/// How far ahead of a sequential reader read-ahead goes, as a multiple of
/// its fetches in flight: a fetch that arrives early makes room for the
/// next one instead of holding its place, so the requests in flight stay
/// at the window while the reader is slower for a moment.
const READ_AHEAD_DISTANCE: u64 = 2;

/// Default number of sequential reads in a row (each of the block after the
/// last, or from where the last one ended in the same block) before
/// read-ahead starts.
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
    /// Uploads in flight at once; `None`: [`default_requests_in_flight`]
    /// at the volume's block size and the cache size.
    pub(crate) upload_concurrency: Option<usize>,
    /// Fetches from below in flight at once; `None`: twice the read-ahead
    /// window, at least [`default_requests_in_flight`] at the volume's
    /// block size, at most half the cache.
    pub(crate) fetch_concurrency: Option<usize>,
    /// How long a dirty block waits before it is uploaded, so rewrites coalesce.
    /// Not applied while dirty data is above half of the dirty limit.
    pub(crate) write_delay: Duration,
    /// A block written whole is uploaded without the write delay unless it
    /// was uploaded less than the delay ago (see
    /// [`CacheConfigBuilder::prompt_uploads`]).
    pub(crate) prompt_uploads: bool,
    /// Largest read-ahead window in bytes: the blocks fetched at once ahead
    /// of a sequential reader (blocks fetched and not yet read may reach
    /// twice that); 0 turns read-ahead off. `None`:
    /// [`default_requests_in_flight`] blocks at the volume's block size.
    pub(crate) read_ahead: Option<u64>,
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
            upload_concurrency: None,
            fetch_concurrency: None,
            write_delay: DEFAULT_WRITE_DELAY,
            prompt_uploads: true,
            read_ahead: None,
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

    /// Uploads in flight at once, when set (else
    /// [`default_requests_in_flight`] at the volume's block size).
    pub fn upload_concurrency(&self) -> Option<usize> {
        self.upload_concurrency
    }

    /// Fetches from below in flight at once, when set (else twice the
    /// read-ahead window in blocks, at least [`default_requests_in_flight`]
    /// at the volume's block size, at most half the cache).
    pub fn fetch_concurrency(&self) -> Option<usize> {
        self.fetch_concurrency
    }

    /// How long a dirty block waits before it is uploaded.
    pub fn write_delay(&self) -> Duration {
        self.write_delay
    }

    /// Largest read-ahead window in bytes (the blocks fetched at once ahead
    /// of a sequential reader), when set (else
    /// [`default_requests_in_flight`] blocks at the volume's block size).
    pub fn read_ahead(&self) -> Option<u64> {
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

    /// Whether a block written whole skips the write delay when it was not
    /// uploaded within it.
    pub fn prompt_uploads(&self) -> bool {
        self.prompt_uploads
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
        let in_flight = default_requests_in_flight(geometry.block_size(), self.cache_size);
        let upload_concurrency = self.upload_concurrency.unwrap_or(in_flight);
        if upload_concurrency == 0 {
            return Err(Error::Config("upload concurrency must be at least 1".into()));
        }
        // Read-ahead keeps at most a quarter of the cache in flight, and
        // holds at most half of it ahead of the reader (in flight, or
        // fetched and not yet read), so it does not evict what it fetched
        // before the reader gets there.
        let read_ahead = self.read_ahead.map_or(in_flight as u64, |bytes| bytes / block);
        let read_ahead_blocks = read_ahead.min(self.cache_size / block / 4);
        let read_ahead_distance =
            read_ahead.saturating_mul(READ_AHEAD_DISTANCE).min(self.cache_size / block / 2);
        // Every fetch holds its block's buffer until the block is in the
        // cache, and a connection to the store: without a cap, a reader's
        // large reads of small blocks would open one of each per missing
        // block. By default as many as read-ahead may hold ahead of the
        // reader (twice its window: a long round trip keeps them all in
        // flight), with the buffers at most half the cache.
        let fetch_concurrency = self.fetch_concurrency.unwrap_or_else(|| {
            let half = usize::try_from(self.cache_size / block / 2).unwrap_or(usize::MAX).max(1);
            in_flight.max(usize::try_from(read_ahead_distance).unwrap_or(usize::MAX)).min(half)
        });
        if fetch_concurrency == 0 {
            return Err(Error::Config("fetch concurrency must be at least 1".into()));
        }
        // Protected blocks count against the cache size like any other: at
        // most as many as the cache holds are protected, so the protection
        // never asks for more memory than the budget.
        let protected_blocks = self.protected_blocks.min(self.cache_size / block).min(geometry.block_count());
        Ok(Limits {
            cache_size: self.cache_size,
            max_dirty,
            upload_concurrency,
            fetch_concurrency,
            read_ahead_blocks,
            read_ahead_distance,
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
    /// Uploads in flight at once.
    pub(crate) upload_concurrency: usize,
    /// Fetches from below in flight at once.
    pub(crate) fetch_concurrency: usize,
    /// Read-ahead fetches in flight at once, at most.
    pub(crate) read_ahead_blocks: u64,
    /// How far ahead of the reader read-ahead goes, in blocks: fetches in
    /// flight and blocks fetched but not yet read.
    pub(crate) read_ahead_distance: u64,
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

    /// Uploads in flight at once (default: [`default_requests_in_flight`]
    /// at the volume's block size).
    pub fn upload_concurrency(mut self, n: usize) -> Self {
        self.config.upload_concurrency = Some(n);
        self
    }

    /// Fetches from below in flight at once: whole blocks and parts of
    /// blocks, for readers, read-ahead and the uploads of partly written
    /// blocks alike; more wait their turn, in order. Each holds a block's
    /// buffer and a connection to the store. The default is twice the
    /// read-ahead window in blocks (as far as read-ahead goes ahead of the
    /// reader), at least [`default_requests_in_flight`] at the volume's
    /// block size, and at most half the cache's blocks: 128 at 4K, 64 at
    /// 256K and 32 at 1M with the default 64 MiB cache.
    pub fn fetch_concurrency(mut self, n: usize) -> Self {
        self.config.fetch_concurrency = Some(n);
        self
    }

    /// How long a dirty block waits before upload.
    pub fn write_delay(mut self, delay: Duration) -> Self {
        self.config.write_delay = delay;
        self
    }

    /// Largest read-ahead window in bytes: the blocks fetched at once ahead
    /// of a sequential reader, which go on up to twice as far while the
    /// reader is slower than the fetches (0: off; default:
    /// [`default_requests_in_flight`] blocks at the volume's block size).
    /// At most a quarter of the cache is fetched at once, and at most half
    /// of it held ahead of the reader.
    pub fn read_ahead(mut self, bytes: u64) -> Self {
        self.config.read_ahead = Some(bytes);
        self
    }

    /// Sequential reads in a row (each of the block after the last, or from
    /// where the last one ended in the same block) before read-ahead starts
    /// (0: from the first read).
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
    /// fetched whole), when the pages held and asked for would pass half of
    /// it (unless more than one in 16 of the recent misses were of blocks
    /// the cache evicted lately: the rest would be evicted again before it
    /// is read), when the read starts right where the last read of the
    /// block ended, when the block is written in places or being fetched
    /// already, or when it continues a sequential run (the block after the
    /// last one read). Pages fetched are kept as such, never taken for the
    /// whole block.
    pub fn ranged_reads(mut self, on: bool) -> Self {
        self.config.ranged_reads = on;
        self
    }

    /// Uploads a block written whole at once, without the write delay,
    /// unless its last upload started less than the delay ago (on by
    /// default). A block written whole has nothing left to gather; one
    /// uploaded lately is being rewritten, and waits for the delay like a
    /// block written in part, so the delay still makes the rewrites of a
    /// block one upload per delay. Turned off, every block waits for the
    /// delay after it turns dirty, as a long delay set to gather rewrites
    /// into fewer PUTs may want: a block written twice in a row, after a
    /// quiet spell, is then one PUT instead of two.
    ///
    /// The delay exists to gather writes; its cost is time with nothing
    /// uploading. A writer that waits for its data to be stored (an
    /// `fsync` every few hundred writes, as a filesystem's journal does)
    /// would otherwise leave the uploads idle for the delay after each.
    pub fn prompt_uploads(mut self, on: bool) -> Self {
        self.config.prompt_uploads = on;
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
        assert_eq!(l.read_ahead_distance, 6, "twice the fetches in flight ahead of the reader");
        let l = CacheConfig::builder().cache_size(8 << 20).read_ahead(64 << 20).build().limits(&g).unwrap();
        assert_eq!(l.read_ahead_blocks, 2, "a quarter of the cache at most");
        assert_eq!(l.read_ahead_distance, 4, "half the cache ahead at most");
        assert!(CacheConfig::builder().upload_concurrency(0).build().limits(&g).is_err());
        let l = CacheConfig::builder().cache_size(8 << 20).protected_blocks(3).build().limits(&g).unwrap();
        assert_eq!(l.protected_blocks, 3);
        let l = CacheConfig::builder().cache_size(8 << 20).protected_blocks(100).build().limits(&g).unwrap();
        assert_eq!(l.protected_blocks, 8, "no more than the cache holds");
        let c = CacheConfig::builder().clean_timeout(Duration::ZERO).build();
        assert_eq!(c.clean_timeout(), None, "0 is no timeout");
    }

    #[test]
    fn requests_in_flight_scale_with_the_block_size_within_bounds() {
        let n = |bs: u32| default_requests_in_flight(bs, DEFAULT_CACHE_SIZE);
        assert_eq!((n(512), n(4 << 10), n(128 << 10)), (64, 64, 64), "the ceiling for small blocks");
        assert_eq!(n(256 << 10), 32, "8 MiB in flight");
        assert_eq!((n(512 << 10), n(1 << 20), n(64 << 20)), (16, 16, 16), "the floor for large blocks");
        assert_eq!(n(0), 64, "no division by zero");
        for cache in [1 << 20, 16 << 20, DEFAULT_CACHE_SIZE, 1 << 30] {
            let n = |bs: u32| default_requests_in_flight(bs, cache);
            for shift in 9..=26 {
                let bs = 1u32 << shift;
                let bytes = n(bs) as u64 * u64::from(bs);
                assert!(
                    bytes <= TARGET_BYTES_IN_FLIGHT.max(MIN_REQUESTS_IN_FLIGHT as u64 * u64::from(bs)),
                    "{bs}: {bytes} bytes in flight"
                );
                assert!(
                    bytes <= (cache / 8).max(MIN_REQUESTS_IN_FLIGHT as u64 * u64::from(bs)),
                    "{bs}, cache {cache}: {bytes} bytes in flight, above an eighth of the cache"
                );
                assert!(n(bs) >= MIN_REQUESTS_IN_FLIGHT, "{bs}, cache {cache}: below the floor");
                assert!(n(bs) >= n(bs << 1), "{bs}: fewer requests for smaller blocks");
            }
        }
        // A small cache keeps the floor's memory: 16 uploads of 256 KiB
        // with 32 MiB, as many as an eighth of the cache allows above it.
        assert_eq!(default_requests_in_flight(256 << 10, 32 << 20), 16);
        assert_eq!(default_requests_in_flight(256 << 10, 48 << 20), 24);
        assert_eq!(default_requests_in_flight(4 << 10, 1 << 20), 32, "an eighth of 256 blocks");
    }

    #[test]
    fn defaults_follow_the_block_size_and_explicit_settings_win() {
        let at = |bs: u64| Geometry::new(1 << 30, bs).unwrap();
        let d = CacheConfig::default();
        assert_eq!((d.upload_concurrency(), d.read_ahead()), (None, None));
        let l = d.limits(&at(4 << 10)).unwrap();
        assert_eq!((l.upload_concurrency, l.read_ahead_blocks), (64, 64));
        let l = d.limits(&at(256 << 10)).unwrap();
        assert_eq!((l.upload_concurrency, l.read_ahead_blocks), (32, 32));
        assert_eq!(l.read_ahead_blocks * (256 << 10), DEFAULT_READ_AHEAD);
        assert_eq!(l.read_ahead_distance, 64);
        // With a 32 MiB cache, the 256K defaults of the floor.
        let l = CacheConfig::builder().cache_size(32 << 20).build().limits(&at(256 << 10)).unwrap();
        assert_eq!((l.upload_concurrency, l.read_ahead_blocks, l.fetch_concurrency), (16, 16, 32));
        let l = d.limits(&at(1 << 20)).unwrap();
        assert_eq!((l.upload_concurrency, l.read_ahead_blocks), (DEFAULT_UPLOAD_CONCURRENCY, 16));
        assert_eq!(l.read_ahead_distance, 32, "half the default cache");
        // A small cache still bounds read-ahead to a quarter of it.
        let l = CacheConfig::builder().cache_size(8 << 20).build().limits(&at(1 << 20)).unwrap();
        assert_eq!(l.read_ahead_blocks, 2);
        let set = CacheConfig::builder().upload_concurrency(3).read_ahead(1 << 20).build();
        let l = set.limits(&at(4 << 10)).unwrap();
        assert_eq!((l.upload_concurrency, l.read_ahead_blocks), (3, 256), "explicit settings win");
        let l = CacheConfig::builder().read_ahead(0).build().limits(&at(4 << 10)).unwrap();
        assert_eq!((l.read_ahead_blocks, l.read_ahead_distance), (0, 0), "0 turns read-ahead off");
    }

    #[test]
    fn fetches_in_flight_follow_the_read_ahead_window_within_half_the_cache() {
        let at = |bs: u64| Geometry::new(1 << 30, bs).unwrap();
        let fetches = |c: CacheConfig, bs: u64| c.limits(&at(bs)).unwrap().fetch_concurrency;
        assert_eq!(CacheConfig::default().fetch_concurrency(), None);
        assert_eq!(fetches(CacheConfig::default(), 4 << 10), 128, "twice the read-ahead window");
        assert_eq!(fetches(CacheConfig::default(), 256 << 10), 64);
        assert_eq!(fetches(CacheConfig::default(), 1 << 20), 32, "half the 64 MiB cache");
        let wide = CacheConfig::builder().cache_size(256 << 20).read_ahead(20 << 20).build();
        assert_eq!(fetches(wide, 1 << 20), 40, "twice the read-ahead window");
        let off = CacheConfig::builder().read_ahead(0).build();
        assert_eq!(fetches(off, 4 << 10), 64, "without read-ahead, the uploads' default");
        let small = CacheConfig::builder().cache_size(8 << 20).build();
        assert_eq!(fetches(small.clone(), 1 << 20), 4, "half a small cache");
        assert_eq!(fetches(small.clone(), 4 << 10), 128);
        let tiny = CacheConfig::builder().cache_size(1 << 20).build();
        assert_eq!(fetches(tiny, 1 << 20), 1, "one at least");
        let two = CacheConfig::builder().cache_size(2 << 20).build();
        assert_eq!(fetches(two, 1 << 20), 1);
        let set = small.to_builder().fetch_concurrency(5).build();
        assert_eq!(fetches(set, 1 << 20), 5, "an explicit setting wins");
        let err = CacheConfig::builder().fetch_concurrency(0).build().limits(&at(4 << 10)).unwrap_err();
        assert!(err.to_string().contains("fetch concurrency"), "{err}");
    }
}
