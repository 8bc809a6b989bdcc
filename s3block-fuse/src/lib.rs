//! The s3block mount program: an object-store volume as one file.
//!
//! `s3block-fuse [OPTIONS] <STORE> <MOUNTPOINT>` mounts a directory holding
//! the device file (its bytes are the volume; attach it to a loop device and
//! put ext4, XFS or LVM on it) and a stats file (requests made and what they
//! cost; unlink it to reset the counters).
//!
//! The crate is a library with a thin binary, so the parts worth testing are
//! tested without a kernel:
//! - [`Options`]: the command line, its fstab `-o` form and s3backer's names;
//! - [`BlockFs`]: the filesystem as plain calls returning values or
//!   [`FsError`]; [`errno()`] is the one place errors become errno values;
//! - [`FuseFs`]: the fuser glue, which moves every I/O request onto the
//!   tokio runtime so FUSE threads never wait on the store;
//! - [`shutdown()`]: store everything, then release the lock, at exit;
//! - [`build_stack`]: the one function that knows the device layers.
//!
//! The options of the volume and its cache ([`VolumeArgs`], flattened into
//! [`Options`]), the stack, the stats, the exit sequence, signals and the
//! log are shared with every frontend (the NBD server too): they live in
//! [`s3block_cache::frontend`] and are re-exported here. This crate keeps
//! what is the mount's own: the mount point and `-o`, the files, FUSE, and
//! going to the background.
//!
//! It is not the place for caching, retries or the on-bucket format: those
//! are in the cache and store crates, reached through
//! [`BlockDevice`](s3block_core::BlockDevice).
//!
//! # Exit codes
//! The table of [`s3block_core::exit`], shared with the `s3block` command
//! and shown at the end of `--help`: 0 unmounted with every block stored
//! (or `--help`); 2 bad options or configuration (the message names the
//! option); 3 the store failed; 4 the volume is locked; 5 the user abandoned
//! unstored data with a second SIGINT (the message says how many blocks);
//! 6 a local file or device (a password file, /dev/fuse, the kernel mount);
//! 7 a wrong password; 1 the FUSE session ended with an error.

mod compat;
mod config_file;
mod control;
mod daemon;
mod errno;
mod fs;
mod lifecycle;
mod maint;
pub mod multi;
mod multi_mount;
pub mod multi_stats;
mod options;
mod session;
mod stats_file;
mod stop;
pub mod tree;

pub use errno::errno;
pub use fs::{BlockFs, DEVICE_INO, DirEntry, FsConfig, FsError, FsResult, ROOT_INO, STATS_INO, SetAttr};
pub use options::{DEFAULT_BLOCK_SIZE, DEFAULT_FILE_MODE, Options, OptionsError, expand_mount_options};
pub use s3block_cache::frontend::{
    Backoff, GET_PRICE_PER_1000, PUT_PRICE_PER_1000, ReleaseHook, ShutdownOutcome, Stack, Stats, StatsSource,
    VolumeArgs, build_stack, build_stack_with, render_requests, shutdown, terminal_prompt,
};
pub use session::{FuseFs, InFlight, MAX_READAHEAD, MAX_WRITE, detach, max_write_for, mount_config, unmount};

use std::ffi::OsString;
use std::process::ExitCode;

use s3block_cache::frontend::log;

/// Runs the program with these arguments (program name first); returns
/// the process exit code. `main` only calls this.
pub fn run<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let options = match Options::parse_from_args(args) {
        Ok(options) => options,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(s3block_core::exit::USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    // The background child's log leaves the terminal once mounted: no colours.
    if let Err(message) = log::init("s3block-fuse", &options.log, !daemon::is_child()) {
        return lifecycle::fail(s3block_core::exit::LOCAL_IO, message);
    }
    // --erase and --reset-mounted-flag work on the volume and exit, in the
    // foreground, without mounting.
    if options.erase || options.reset_mounted_flag {
        return maint::run(&options);
    }
    if !options.foreground && !daemon::is_child() {
        // The background child cannot ask on the terminal: ask here.
        let password = match lifecycle::ask_before_background(&options) {
            Ok(password) => password,
            Err(code) => return code,
        };
        return daemon::spawn_and_wait(password);
    }
    lifecycle::run_mount(options)
}
