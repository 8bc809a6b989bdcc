//! The block-device abstraction at the bottom of s3block.
//!
//! s3block turns an object store into a block device: a volume of `size`
//! bytes cut into fixed-size blocks, each non-zero block one object. This
//! crate holds what every layer shares and nothing that knows about objects,
//! HTTP or FUSE:
//!
//! - [`Geometry`]: block size and count, validated once, and [`parse_size`]
//!   for sizes written as `30G` or `256K`;
//! - [`BlockDevice`]: the object-safe async trait every layer implements
//!   (the object store adapter, the cache, test doubles);
//! - [`BlockDeviceExt`]: byte-range reads and writes over any device, with
//!   the block arithmetic written once in [`segments`];
//! - [`KeyLayout`]: the s3backer-compatible object key of each block;
//! - [`is_zero`]: the fast all-zeros test behind zero-block elision, and
//!   [`zeros`]: zero blocks that take no memory;
//! - [`is_mount_point`]: whether a directory is mounted, from the kernel's
//!   mount table, with its octal escapes decoded;
//! - [`Error`]: the one error type, carrying the block or key concerned;
//! - [`exit`]: the exit codes every s3block program follows;
//! - [`Backoff`]: the one retry schedule (exponential, full jitter, budgets)
//!   of the store's requests, the cache's uploads and a mount's final flush.
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use s3block_core::{BlockDevice, BlockDeviceExt, Geometry, MemoryDevice};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> s3block_core::Result<()> {
//! let dev = MemoryDevice::new(Geometry::new(1 << 20, 4096)?);
//! // A write across a block boundary touches two blocks.
//! dev.write_at(4090, Bytes::from_static(b"hello, world")).await?;
//! assert_eq!(&dev.read_at(4090, 12).await?[..], b"hello, world");
//! assert_eq!(dev.stored_blocks(), 2);
//! // Zeroing the range frees both blocks again.
//! dev.zero_range(4090, 12).await?;
//! assert_eq!(dev.stored_blocks(), 0);
//! # Ok(()) }
//! ```
//!
//! # Why blocks and not files
//!
//! A filesystem over objects pays a request per file operation; a block
//! device pays one per block touched, and the filesystem on top (ext4, XFS,
//! LVM) keeps its own metadata in those blocks. Listing a directory of a
//! million files costs nothing extra.

mod backoff;
mod counters;
mod device;
mod error;
pub mod exit;
mod geometry;
mod holder;
mod key;
mod mem;
#[cfg(unix)]
mod mountinfo;
mod range;
mod zero;

pub use backoff::{Backoff, Retries};
pub use counters::{
    BandwidthCounts, FetchReason, LATENCY_BUCKETS_MS, LatencyHistogram, MethodCounts, RequestClass,
    RequestCounters, RequestCounts, RequestLatencies, RequestMethod, StoreHealth, WithFetchReason,
    fetch_reason, with_fetch_reason,
};
pub use device::{Allocation, BlockDevice, allocation_runs, check_block_len, check_block_range, push_run};
pub use error::{BoxError, Error, Result, StoreErrorKind};
pub use geometry::{
    DEFAULT_BLOCK_SIZE, Geometry, GeometryCell, MAX_BLOCK_COUNT, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE,
    format_count, format_size, parse_size,
};
pub use holder::{
    HolderProcess, Liveness, ProcessState, boot_id, holder_liveness, holder_liveness_with, local_hostname,
    local_mount_processes, lock_facts, lock_facts_for, process_state,
};
pub use key::{BlockId, KeyLayout, block_hash};
pub use mem::{MemoryDevice, MemoryDeviceCounts};
#[cfg(unix)]
pub use mountinfo::{MOUNTINFO_PATH, is_mount_point, mount_points};
pub use range::{BlockDeviceExt, Segment, segments};
pub use zero::{is_zero, zeros};

/// Re-exported so implementors use the same `Bytes` and `async_trait`.
pub use async_trait::async_trait;
pub use bytes::Bytes;
