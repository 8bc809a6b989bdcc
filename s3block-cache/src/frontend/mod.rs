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
//! - [`log`]: the log on standard error, in a `--log-file`, or in syslog.
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
pub mod log;
mod shutdown;
mod signals;
mod stack;
mod stats;

pub use args::{DEFAULT_BLOCK_SIZE, DEFAULT_DISK_CACHE_SIZE, DurabilityArg, VolumeArgs, size_arg};
pub use shutdown::{Backoff, ShutdownOutcome, report, shutdown};
pub use signals::{Received, Signals, second_sigint};
pub use stack::{ReleaseHook, Stack, build_stack, build_stack_with, terminal_prompt};
pub use stats::{
    GET_PRICE_PER_1000, PUT_PRICE_PER_1000, Stats, StatsSource, render_requests, write_stats_files,
};

use std::process::ExitCode;

/// The multi-threaded tokio runtime a frontend serves on: two to four
/// workers (a small host has one or two cores; more buys nothing waiting
/// on the network), named `s3block-io`.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 4)))
        .thread_name("s3block-io")
        .enable_all()
        .build()
}

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
