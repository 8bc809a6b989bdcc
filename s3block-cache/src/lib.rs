//! The block cache of s3block: what makes a volume in an object store fast
//! enough to run a filesystem on, in the memory of a small host.
//!
//! [`BlockCache`] wraps any [`BlockDevice`](s3block_core::BlockDevice) (the
//! object store adapter, in a mount) and is one itself:
//!
//! - **bounded in bytes**, not blocks: a 64 MiB cache stays 64 MiB whatever
//!   the block size; only clean blocks are evicted (LRU);
//! - **write-back**: writes return once in memory; a bounded pool of uploads
//!   stores dirty blocks, a block written whole at once and one written in
//!   part or rewritten after a short delay that coalesces its writes, and
//!   writers wait (never fail) when the dirty limit is reached;
//! - **no read-modify-write on the writer's path**: a 4K write into an
//!   uncached 1M block keeps the 4K; the rest is fetched and merged when the
//!   block is uploaded or read;
//! - **one fetch per block** however many readers miss on it, and
//!   **read-ahead** in parallel once reads are sequential;
//! - **zero blocks cost a bit**: blocks known absent below are kept as ranges
//!   of block numbers, read without a request, and zeros written over them
//!   make no request at all;
//! - **flush** returns once every block dirty at its call is stored below, or
//!   says which blocks could not be written (they stay dirty).
//!
//! Below it, [`DiskCache`] is an optional second tier on the local disk
//! (`BlockCache<DiskCache<ObjectBlockDevice>>`): bounded in bytes, warm
//! after a restart, dirty blocks recovered after a crash, and with
//! [`Durability::Local`] a flush at local-disk speed whose uploads keep
//! flush order.
//!
//! What it is not: it does not retry store requests (the store layer does,
//! with backoff; the cache only tries failed uploads again later), and it
//! does not list the bucket (pass the stored blocks to
//! [`BlockCache::with_known_blocks`]).
//!
//! # Example
//!
//! ```
//! use s3block_cache::{BlockCache, CacheConfig};
//! use s3block_core::{BlockDevice, BlockDeviceExt, Bytes, Geometry, MemoryDevice};
//! use std::sync::Arc;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> s3block_core::Result<()> {
//! let store = Arc::new(MemoryDevice::new(Geometry::new(1 << 20, 4096)?));
//! let cache = BlockCache::new(Arc::clone(&store), CacheConfig::builder().cache_size(64 << 10).build())?;
//! cache.write_at(100, Bytes::from_static(b"hello")).await?;
//! assert_eq!(&cache.read_at(100, 5).await?[..], b"hello");
//! cache.flush().await?;
//! assert_eq!(&store.read_at(100, 5).await?[..], b"hello");
//! cache.close().await?;
//! # Ok(()) }
//! ```

mod budget;
mod cache;
mod config;
mod disk;
mod entry;
#[cfg(feature = "frontend")]
pub mod frontend;
mod incident;
mod load;
mod ranged;
mod readahead;
pub mod report;
mod state;
mod stats;
#[cfg(feature = "testing")]
pub mod testing;
mod writeback;
mod zeroset;

pub use budget::{CacheBudget, Share};
pub use cache::BlockCache;
pub use config::{
    CacheConfig, CacheConfigBuilder, DEFAULT_CACHE_SIZE, DEFAULT_READ_AHEAD, DEFAULT_READ_AHEAD_TRIGGER,
    DEFAULT_UPLOAD_CONCURRENCY, DEFAULT_WRITE_DELAY, MAX_REQUESTS_IN_FLIGHT, MIN_REQUESTS_IN_FLIGHT,
    TARGET_BYTES_IN_FLIGHT, default_requests_in_flight, default_upload_retry,
};
pub use disk::{
    CacheDirReport, CorruptEntry, DEFAULT_DISK_UPLOAD_CONCURRENCY, DiscardReport, DiskCache, DiskCacheConfig,
    DiskCacheConfigBuilder, DiskCacheStats, Durability, Marks, OpenReport, OpenState, VolumeIdentity,
    discard, inspect,
};
pub use report::{
    CacheFigures, CostFigures, DiskFigures, MountStats, ReadAheadFigures, ReadFigures, RequestFigures,
    STATS_FORMAT, StoredFigures, UploadStartFigures, WholeBlockFigures, WriteBackFigures,
};
pub use stats::CacheStats;
