//! A mount from start to exit: open, mount, serve, unmount, store, release.
//!
//! 1. Build the device stack (this takes the mount lock); on failure exit 1.
//! 2. Mount; on failure release the lock and exit 1. Only then tell a
//!    waiting parent that the mount is up.
//! 3. Serve until the kernel ends the session (`umount`, `fusermount3 -u`).
//!    SIGTERM and SIGINT ask the kernel to unmount, exactly as a user would;
//!    if the mount is busy (a loop device is still attached), the program
//!    says so, stores what is written so far and keeps serving.
//! 4. Wait for requests still running, then [`shutdown`]: flush until
//!    stored, then release the lock, exit 0. A second SIGINT abandons
//!    unstored data (exit 3, saying how many blocks).

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use s3block_core::format_size;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::daemon;
use crate::fs::{BlockFs, FsConfig};
use crate::options::Options;
use crate::session::{FuseFs, InFlight, mount_config, unmount};
use crate::shutdown::{Backoff, ShutdownOutcome, shutdown};
use crate::stack::{build_stack_with, terminal_prompt};
use s3block_store::{Password, VolumeOptions, open_volume};

/// Exit code: the volume could not be opened or mounted.
pub const EXIT_FAILED: u8 = 1;
/// Exit code: bad options.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: the user abandoned data that was not stored.
pub const EXIT_DATA_LOST: u8 = 3;

/// Logs to standard error; `--debug` or `RUST_LOG` for more.
pub(crate) fn init_logging(debug: bool) {
    let default = if debug { "debug" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// True while `dir` is a mount point, from /proc/self/mountinfo.
fn is_mounted(dir: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    // Field 5 is the mount point; spaces in it are written as \040.
    let wanted = dir.to_string_lossy().replace(' ', "\\040");
    mounts.lines().any(|l| l.split(' ').nth(4) == Some(wanted.as_str()))
}

/// Effective user and group ids, from /proc/self/status.
fn effective_ids() -> (u32, u32) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    (field("Uid:").unwrap_or(0), field("Gid:").unwrap_or(0))
}

fn fail(message: String) -> ExitCode {
    tracing::error!("{message}");
    if !tracing::enabled!(tracing::Level::ERROR) {
        eprintln!("s3block-fuse: {message}");
    }
    ExitCode::from(EXIT_FAILED)
}

/// Before going to the background: asks for the password on the terminal
/// when the volume needs one that neither `--password-file` nor
/// `S3BLOCK_PASSWORD` gives (the background child cannot ask). Errors in
/// finding out are left to the child, which reports them.
pub(crate) fn ask_before_background(opts: &Options) -> Result<Option<Password>, ExitCode> {
    if opts.store_args.password_source().is_some() {
        return Ok(None);
    }
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
        return Ok(None);
    };
    let need = runtime.block_on(async {
        let opened = opts.store_args.to_config(&opts.store).open().ok()?;
        if opts.store_args.encrypt.is_some() {
            // Asking twice when the volume is about to be created.
            let exists = open_volume(opened.store.as_ref(), &opened.prefix, &VolumeOptions::default()).await;
            return Some(exists.is_err());
        }
        opts.store_args.needs_password(&opened).await.ok()?.then_some(false)
    });
    let Some(confirm) = need else { return Ok(None) };
    let what = format!("the volume at {}", opts.store);
    match opts.store_args.password(&what, confirm, &mut terminal_prompt) {
        Ok(password) => Ok(Some(password)),
        Err(e) => Err(fail(format!("cannot open the volume {}: {e}", opts.store))),
    }
}

/// Runs a mount in this process, in the foreground.
pub(crate) fn run_mount(opts: Options) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 4)))
        .thread_name("s3block-io")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the I/O runtime: {e}")),
    };
    let from_parent = daemon::password_from_parent();
    let mut prompt = |text: &str| match &from_parent {
        Some(p) => Ok(String::from_utf8_lossy(p.as_bytes()).into_owned()),
        None => terminal_prompt(text),
    };
    // Checked before the volume is opened, so a typo creates nothing in the
    // bucket and takes no lock.
    if let Err(e) = check_mountpoint(&opts.mountpoint, opts.nonempty) {
        return fail(e);
    }
    let stack = match runtime.block_on(build_stack_with(&opts, &mut prompt)) {
        Ok(stack) => stack,
        Err(e) => return fail(format!("cannot open the volume {}: {e}", opts.store)),
    };
    let (uid, gid) = effective_ids();
    let geometry = stack.device.geometry();
    let fs = Arc::new(BlockFs::new(
        stack.device.clone(),
        stack.stats.clone(),
        FsConfig {
            filename: opts.filename.clone(),
            stats_filename: opts.stats_name().map(str::to_owned),
            file_mode: opts.effective_file_mode(),
            read_only: opts.read_only,
            direct_io: opts.direct_io,
            uid,
            gid,
        },
    ));
    let in_flight = InFlight::default();
    let adapter = FuseFs::new(fs, runtime.handle().clone(), in_flight.clone());
    let config = mount_config(opts.read_only, &opts.kernel_flags, uid == 0);
    // Absolute, so the unmount and the mount table check name the same path.
    let mountpoint = opts.mountpoint.canonicalize().unwrap_or_else(|_| opts.mountpoint.clone());
    let session = match fuser::Session::new(adapter, &opts.mountpoint, &config) {
        Ok(session) => session,
        Err(e) => {
            let code = fail(format!("cannot mount on {}: {e}", opts.mountpoint.display()));
            if let Err(e) = runtime.block_on((stack.release)()) {
                tracing::warn!("could not release the mount lock: {e}");
            }
            return code;
        }
    };
    tracing::info!(
        "mounted {} on {}: {} is {}{}",
        opts.store,
        opts.mountpoint.display(),
        opts.filename,
        stack.description,
        if opts.read_only { ", read-only" } else { "" }
    );
    tracing::debug!("{} blocks of {}", geometry.block_count(), format_size(geometry.block_size().into()));
    daemon::notify_ready();

    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let serving = std::thread::Builder::new().name("fuse-session".into()).spawn(move || {
        let _ = done_tx.send(session.run());
    });
    if let Err(e) = serving {
        // The session was moved into the closure and is dropped, which unmounts.
        return fail(format!("cannot start the FUSE session thread: {e}"));
    }

    let device = stack.device.clone();
    let release = stack.release;
    let outcome = runtime.block_on(async move {
        let sigints = match watch_signals(&mountpoint, device.as_ref(), done_rx).await {
            Ok(sigints) => sigints,
            Err(message) => {
                tracing::error!("{message}");
                return None;
            }
        };
        in_flight.drain().await;
        tracing::info!("unmounted; storing every written block before exit");
        let mut abandon_rx = sigints.clone();
        let abandon = async move {
            let _ = abandon_rx.wait_for(|n| *n >= 2).await;
        };
        Some(shutdown(device.as_ref(), Backoff::default(), abandon, release).await)
    });
    match outcome {
        Some(ShutdownOutcome::Stored { lock_released, attempts }) => {
            tracing::info!(
                "every block is stored{}{}; exiting",
                if attempts > 1 { format!(" after {attempts} attempts") } else { String::new() },
                if lock_released { "" } else { " (the mount lock was left behind)" }
            );
            ExitCode::SUCCESS
        }
        Some(ShutdownOutcome::Abandoned { lost_blocks, attempts }) => {
            let lost = lost_blocks.map_or_else(|| "an unknown number of".to_string(), |n| n.to_string());
            tracing::error!(
                "abandoned at the user's request after {attempts} attempts: {lost} written block(s) were NOT \
                 stored and are lost; the mount lock is kept to mark the volume as not cleanly unmounted"
            );
            ExitCode::from(EXIT_DATA_LOST)
        }
        None => ExitCode::from(EXIT_FAILED),
    }
}

/// Waits for the session to end, turning SIGTERM/SIGINT into an unmount
/// request. Returns the SIGINT counter, which keeps counting afterwards.
async fn watch_signals(
    mountpoint: &Path,
    device: &dyn s3block_core::BlockDevice,
    mut done: tokio::sync::oneshot::Receiver<std::io::Result<()>>,
) -> Result<watch::Receiver<u32>, String> {
    let register = |kind: SignalKind| signal(kind).map_err(|e| format!("cannot watch for signals: {e}"));
    let (mut term, mut int, mut hup) = (
        register(SignalKind::terminate())?,
        register(SignalKind::interrupt())?,
        register(SignalKind::hangup())?,
    );
    let (sigint_tx, sigint_rx) = watch::channel(0u32);
    loop {
        tokio::select! {
            result = &mut done => {
                match result {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!("the FUSE session ended with an error: {e}"),
                    Err(_) => tracing::error!("the FUSE session thread ended unexpectedly"),
                }
                break;
            }
            _ = term.recv() => request_unmount("SIGTERM", mountpoint, device).await,
            _ = int.recv() => {
                sigint_tx.send_modify(|n| *n += 1);
                request_unmount("SIGINT", mountpoint, device).await;
            }
            _ = hup.recv() => tracing::info!("SIGHUP ignored; unmount with fusermount3 -u or SIGTERM"),
        }
    }
    // Keep counting SIGINTs during the final flush: the second one abandons.
    tokio::spawn(async move {
        while int.recv().await.is_some() {
            sigint_tx.send_modify(|n| *n += 1);
            tracing::warn!("SIGINT received while storing data; a second SIGINT abandons what is not stored");
        }
    });
    Ok(sigint_rx)
}

async fn request_unmount(signal: &str, mountpoint: &Path, device: &dyn s3block_core::BlockDevice) {
    tracing::info!("{signal}: unmounting {}", mountpoint.display());
    let path = mountpoint.to_owned();
    let result =
        tokio::task::spawn_blocking(move || unmount(&path)).await.unwrap_or_else(|e| Err(e.to_string()));
    if let Err(e) = result {
        if !is_mounted(mountpoint) {
            // Unmounted by someone else a moment ago; the session is ending.
            tracing::info!("{} is already unmounted", mountpoint.display());
            return;
        }
        tracing::error!(
            "cannot unmount {} ({e}); still serving it. Detach the loop device and unmount what is on it, \
             then unmount again. Storing what is written so far.",
            mountpoint.display()
        );
        match device.flush().await {
            Ok(()) => tracing::info!("everything written so far is stored"),
            Err(e) => tracing::error!("could not store everything written so far: {e}"),
        }
    }
}

/// Refuses a mount point that is missing, not a directory, or not empty
/// (unless `nonempty`), naming it.
fn check_mountpoint(path: &Path, nonempty: bool) -> Result<(), String> {
    let shown = path.display();
    let mut entries = std::fs::read_dir(path).map_err(|e| format!("cannot mount on {shown}: {e}"))?;
    if !nonempty && entries.next().is_some() {
        return Err(format!(
            "cannot mount on {shown}: the directory is not empty (its files would be hidden); \
             use an empty directory, or --nonempty (-o nonempty) to mount over it"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod mountpoint_tests {
    use super::check_mountpoint;

    #[test]
    fn mount_points_are_checked_and_named() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check_mountpoint(dir.path(), false).is_ok());
        std::fs::write(dir.path().join("x"), b"x").unwrap();
        let err = check_mountpoint(dir.path(), false).unwrap_err();
        assert!(err.contains("not empty") && err.contains(&dir.path().display().to_string()), "{err}");
        assert!(check_mountpoint(dir.path(), true).is_ok());
        let err = check_mountpoint(&dir.path().join("missing"), false).unwrap_err();
        assert!(err.contains("No such file or directory"), "{err}");
        let err = check_mountpoint(&dir.path().join("x"), true).unwrap_err();
        assert!(err.contains("Not a directory"), "{err}");
    }
}
