//! What every program that serves a volume shares: the mount program
//! (`s3block-fuse`) and the NBD server (`s3block-nbd`). Compiled with the
//! `frontend` feature.
//!
//! A frontend is a translation of requests (FUSE's, NBD's) into calls on one
//! [`BlockDevice`](s3block_core::BlockDevice). Everything before and after
//! that is the same for all of them, and lives here once:
//!
//! - [`VolumeArgs`]: the options that say which volume and how to cache it
//!   (the store URL, geometry, compression, the store's own options,
//!   `--list-blocks`, the cache sizes, `--read-only`), as one clap argument
//!   group each program flattens, with their s3backer spellings. An option
//!   added here is an option of every frontend;
//! - [`build_stack`]: the one function that knows the layers: it opens the
//!   [`Volume`](s3block_store::Volume) (geometry, encryption, the lock) and
//!   puts a [`BlockCache`](crate::BlockCache) over it, returning a [`Stack`]:
//!   the device to serve, its [`StatsSource`] and the [`ReleaseHook`];
//! - [`Stats`]: the stats files' text and JSON, from the cache and the
//!   store's request counters ([`write_stats_files`] for a frontend that
//!   has no file system of its own to show them in);
//! - the exit: [`shutdown`] flushes until every block is stored, then runs
//!   the release hook (close the cache, release the lock last);
//!   [`Signals`] counts SIGTERM and SIGINT (a second SIGINT abandons);
//!   [`report`] logs how it ended and gives the exit code;
//! - [`log`]: the log on standard error, in a `--log-file`, or in syslog;
//! - [`Service`]: systemd's `Type=notify` protocol: ready, a status line
//!   with the data not stored yet, stopping, and the stop timeout extended
//!   while data is being stored.
//!
//! Why here, in the cache crate behind a feature: the stack is a cache over
//! a store, so this code sits right above the cache (which the feature
//! lets depend on the store crate; that is the direction of the layers, the
//! store never depends on the cache), and below every frontend. A crate of
//! its own would hold a few hundred lines and one more manifest; the
//! feature keeps the cache crate, used alone, free of clap, signals and the
//! store.
//!
//! What stays in each frontend: how it is reached (a mount point and its
//! fstab `-o` form, a socket), how it goes to the background, and its own
//! options.

mod args;
pub mod control;
mod grow;
pub mod log;
pub mod memory;
pub mod metrics;
mod service;
mod shutdown;
mod signals;
mod stack;
mod stats;
pub mod volumes;

pub use args::{DEFAULT_BLOCK_SIZE, DEFAULT_DISK_CACHE_SIZE, DurabilityArg, VolumeArgs, size_arg};
pub use grow::{Grown, VolumeGrow};
pub use service::{NOTIFY_SOCKET_ENV, STATUS_EVERY, STOP_EXTENSION, Service, StatusFigures};
pub use shutdown::{Backoff, ShutdownOutcome, report, shutdown};
pub use signals::{Received, Signals, second_sigint};
pub use stack::{ReleaseHook, Stack, build_stack, build_stack_in, build_stack_with, terminal_prompt};
pub use stats::{
    GET_PRICE_PER_1000, PUT_PRICE_PER_1000, Stats, StatsSource, render_requests, write_stats_files,
};

use std::process::ExitCode;

/// The multi-threaded tokio runtime a frontend serves on: two to four
/// workers (a small host has one or two cores; more buys nothing waiting
/// on the network), named `s3block-io`. The NBD server serves its
/// connections (and their TLS) on it.
///
/// Before it starts, glibc's malloc is told to give buffers of 512 KiB and
/// more straight back to the system when freed, and to keep one arena (see
/// [`bound_malloc`]).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    runtime_with_workers(std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 4)))
}

/// The runtime workers of the mount program: one.
///
/// The mount's FUSE threads answer what needs no waiting themselves (cache
/// hits, writes with room; see `s3block-fuse`'s session), and a block's
/// compression and encryption run on blocking threads beside the runtime,
/// as many at once as there are cores. What is left for the runtime is
/// waiting on the network. Each request handed between two workers cost
/// wake-ups: on Garage on two cores, cold random 4 KiB reads of a 256 MiB
/// file (256 KiB blocks, 64 MiB cache, one at a time, 20 s, two
/// alternating pairs) switched threads about 9 times per fetch with two
/// workers and 4 with one; the mount's CPU fell from 5.41–5.52 s to
/// 4.32–4.36 s, and the reads rose from 1,143–1,242 to 1,276–1,308 a
/// second. Sequential reads and writes at 4K, 256K and 1M kept their rates
/// within the machine's spread, with less CPU at 4K.
pub const FUSE_IO_WORKERS: usize = 1;

/// A runtime like [`runtime`]'s, with `workers` workers (at least one).
pub fn runtime_with_workers(workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    bound_malloc();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .thread_name("s3block-io")
        .enable_all()
        .build()
}

/// Keeps freed block buffers from piling up in glibc's malloc, without a
/// fresh mapping for every buffer the HTTP client reads into.
///
/// glibc serves large allocations with their own mappings, but raises that
/// threshold each time such a mapping is freed, so after a while block
/// buffers come from its per-thread arenas and are kept there once freed.
/// Measured on a mount with a disk cache: 122 MiB of resident memory for
/// 32 MiB of cache, 53 MiB with the threshold fixed at 64 KiB. A small host
/// cannot give that memory away, so the threshold is fixed.
///
/// It is fixed at 512 KiB, above the largest buffer the HTTP client reads a
/// response into (about 408 KiB), with a single arena. A mapping's pages
/// are new to the process, so each one costs a page fault when first
/// written: at 64 KiB, every page of every GET body the client read was a
/// fault. Measured on Garage, cold sequential reads of 512 MiB, 64 MiB
/// cache, four and three alternating mounts: at 256 KiB blocks 1.08–1.24
/// CPU seconds and 120K minor faults became 0.93–1.02 s and 21K; at 1 MiB
/// blocks 0.79–0.86 s and 112K became 0.71–0.77 s and 45K. Writes were
/// unchanged. One arena keeps the buffers under 512 KiB (block buffers of
/// 256 KiB and less) from being spread and stranded over one arena per
/// thread: with the default arenas, a copy of 230 MB of files under ext4
/// ran out of a 40 MiB memory cgroup with a 16 MiB cache; with one arena
/// it peaked at 36.9 MiB (34.3–35.5 MiB at 64 KiB), and at 57.8 MiB with
/// a 32 MiB cache (54.2–55.2 MiB). `MALLOC_MMAP_THRESHOLD_` and
/// `MALLOC_ARENA_MAX`, when set, are the user's own choice and win. Other C
/// libraries are left alone.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn bound_malloc() {
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        // SAFETY: mallopt only changes malloc's tuning parameters, with a
        // valid parameter and value; it is called before the runtime's
        // threads start.
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
    }
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: as above.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    }
}

/// Allocations of this many bytes and more get mappings of their own (see
/// [`bound_malloc`]); the store's buffer pool keeps buffers from that size.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: i32 = s3block_store::BufferPool::POOLED_FROM as i32;

/// Keeps freed block buffers from piling up in malloc: nothing to do
/// outside glibc.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn bound_malloc() {}

/// A start that failed: one plain line on standard error, `PROGRAM:
/// message` (also logged when the log goes elsewhere), and the exit code
/// `code`. `PROGRAM` is the name given to [`log::init`].
pub fn fail(code: u8, message: String) -> ExitCode {
    eprintln!("{}: {message}", log::program());
    if log::away_from_stderr() {
        tracing::error!("{message}");
    }
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runtimes_have_the_workers_asked_for() {
        let fuse = runtime_with_workers(FUSE_IO_WORKERS).expect("runtime");
        assert_eq!(fuse.metrics().num_workers(), 1);
        assert_eq!(runtime_with_workers(0).expect("runtime").metrics().num_workers(), 1, "at least one");
        let shared = runtime().expect("runtime").metrics().num_workers();
        assert!((2..=4).contains(&shared), "{shared} workers");
    }
}
