//! A mount from start to exit: open, mount, serve, unmount, store, release.
//!
//! 1. Check the mount point and that a `file://` store is not under it,
//!    then build the device stack (this takes the mount lock). A failure
//!    prints one plain line, `s3block-fuse: cannot open ...`, and exits with
//!    the code of the shared table ([`s3block_core::exit`]).
//! 2. Mount; on failure release the lock and exit. Only then tell systemd
//!    (`READY=1`, see [`Service`]) and a waiting parent that the mount is
//!    up (and, in the background, let go of the caller's terminal and
//!    pipes).
//! 3. Serve until the kernel ends the session (`umount`, `fusermount3 -u`);
//!    SIGTERM and SIGINT unmount as a user would, retrying while the mount
//!    is busy (see `stop`).
//! 4. Wait for requests still running, then [`shutdown`]: flush until
//!    stored, then release the lock, exit 0. A second SIGINT, during either
//!    wait, abandons unstored data (exit 5, saying how many blocks).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use s3block_cache::frontend::{
    Backoff, FUSE_IO_WORKERS, Service, ShutdownOutcome, build_stack_with, report, runtime_with_workers,
    second_sigint, shutdown, terminal_prompt,
};
use s3block_core::exit::{self, LOCAL_IO, PROBLEMS, USAGE};
use s3block_core::format_size;

use crate::daemon;
use crate::fs::{BlockFs, FsConfig};
use crate::options::Options;
use crate::session::{FuseFs, InFlight, mount_config};
use crate::stats_file::StatsFile;
use crate::stop::{Served, serve_until_stopped};
use s3block_store::{Password, VolumeOptions, open_volume, with_hint};

/// Effective user and group ids of this process.
pub(crate) fn effective_ids() -> (u32, u32) {
    (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw())
}

/// A start that failed: one plain line on standard error (also logged when
/// the log goes elsewhere), and the exit code `code`.
pub(crate) use s3block_cache::frontend::fail;

/// Before going to the background: asks for the password on the terminal
/// when the volume needs one that neither `--password-file` nor
/// `S3BLOCK_PASSWORD` gives (the background child cannot ask). Errors in
/// finding out are left to the child, which reports them.
pub(crate) fn ask_before_background(opts: &Options) -> Result<Option<Password>, ExitCode> {
    // Opening the store may create its directory: not inside the mount point.
    check_places(opts)?;
    let volume = &opts.volume;
    // Several volumes: each is asked for in the foreground only (give
    // --password-file or S3BLOCK_PASSWORD in the background).
    if volume.store_args.password_source().is_some() || opts.several() {
        return Ok(None);
    }
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
        return Ok(None);
    };
    let need = runtime.block_on(async {
        let opened = volume.store_args.to_config(&volume.store).open().ok()?;
        if volume.store_args.encrypt.is_some() {
            // Asking twice when the volume is about to be created.
            let exists = open_volume(opened.store.as_ref(), &opened.prefix, &VolumeOptions::default()).await;
            return Some(exists.is_err());
        }
        volume.store_args.needs_password(&opened).await.ok()?.then_some(false)
    });
    let Some(confirm) = need else { return Ok(None) };
    let what = format!("the volume at {}", volume.store);
    match volume.store_args.password(&what, confirm, &mut terminal_prompt) {
        Ok(password) => Ok(Some(password)),
        Err(e) => Err(fail(
            exit::exit_code(&e),
            with_hint(&e, format!("cannot open the volume {}: {e}", volume.store)),
        )),
    }
}

/// Runs a mount in this process, in the foreground.
pub(crate) fn run_mount(opts: Options) -> ExitCode {
    if opts.several() {
        return crate::multi_mount::run_multi_mount(opts);
    }
    let runtime = match runtime_with_workers(FUSE_IO_WORKERS) {
        Ok(rt) => rt,
        Err(e) => return fail(LOCAL_IO, format!("cannot start the I/O runtime: {e}")),
    };
    let from_parent = daemon::password_from_parent();
    let prompt = move |text: &str| match &from_parent {
        Some(p) => Ok(String::from_utf8_lossy(p.as_bytes()).into_owned()),
        None => terminal_prompt(text),
    };
    if let Err(code) = check_places(&opts) {
        return code;
    }
    let stack = match runtime.block_on(build_stack_with(&opts.volume, prompt)) {
        Ok(stack) => stack,
        Err(e) => {
            return fail(
                exit::exit_code(&e),
                with_hint(&e, format!("cannot open the volume {}: {e}", opts.volume.store)),
            );
        }
    };
    let (euid, egid) = effective_ids();
    let (uid, gid) = (opts.uid.unwrap_or(euid), opts.gid.unwrap_or(egid));
    let geometry = stack.device.geometry();
    let fs = Arc::new(
        BlockFs::new(
            stack.device.clone(),
            stack.stats.clone(),
            FsConfig {
                filename: opts.filename.clone(),
                stats_filename: opts.stats_name().map(str::to_owned),
                file_mode: opts.effective_file_mode(),
                read_only: opts.volume.read_only,
                direct_io: opts.direct_io,
                uid,
                gid,
            },
        )
        .with_grow(stack.grow.clone()),
    );
    let notified = fs.clone();
    let in_flight = InFlight::default();
    let adapter = FuseFs::new(fs, runtime.handle().clone(), in_flight.clone());
    let config = mount_config(opts.volume.read_only, &opts.kernel_flags, euid == 0 || opts.allow_other);
    // Absolute, so the unmount and the mount table check name the same path.
    let mountpoint = opts.mountpoint().canonicalize().unwrap_or_else(|_| opts.mountpoint().to_owned());
    let session = match fuser::Session::new(adapter, opts.mountpoint(), &config) {
        Ok(session) => session,
        Err(e) => {
            let code = fail(LOCAL_IO, format!("cannot mount on {}: {e}", opts.mountpoint().display()));
            if let Err(e) = runtime.block_on((stack.release)()) {
                tracing::warn!("could not release the mount lock: {e}");
            }
            return code;
        }
    };
    notified.set_notifier(session.notifier());
    tracing::info!("{}", mounted_line(&opts, &stack.description));
    tracing::debug!("{} blocks of {}", geometry.block_count(), format_size(geometry.block_size().into()));

    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let serving = std::thread::Builder::new().name("fuse-session".into()).spawn(move || {
        let _ = done_tx.send(session.run());
    });
    if let Err(e) = serving {
        // The session was moved into the closure and is dropped, which unmounts.
        return fail(LOCAL_IO, format!("cannot start the FUSE session thread: {e}"));
    }
    // The file serves: tell systemd (Type=notify; a background child also
    // names itself the main process), then a waiting parent.
    let doing = format!("mounted {} on {}", opts.volume.store, mountpoint.display());
    let service = Service::ready(runtime.handle(), doing, stack.stats.clone(), daemon::is_child());
    daemon::mounted();
    let stats_file = opts
        .stats_file
        .clone()
        .map(|path| StatsFile::start(runtime.handle(), stack.stats.clone(), path, opts.stats_every()));

    let device = stack.device.clone();
    let release = stack.release;
    let outcome = runtime.block_on(async move {
        let (served, sigints) =
            match serve_until_stopped(&mountpoint, vec![device.clone()], done_rx, &service).await {
                Ok(served) => served,
                Err(message) => {
                    tracing::error!("{message}");
                    return None;
                }
            };
        if served == Served::Abandoned {
            return Some(ShutdownOutcome::Abandoned { lost_blocks: None, attempts: 0 });
        }
        service.storing();
        // A request in flight may wait for an unreachable store without
        // limit: a second SIGINT stops waiting for it, as for the final flush.
        tokio::select! {
            () = in_flight.drain() => {}
            () = second_sigint(sigints.clone()) => {
                tracing::warn!("a second SIGINT: not waiting for the requests in flight");
            }
        }
        tracing::info!("unmounted; storing every written block before exit");
        Some(shutdown(device.as_ref(), Backoff::default(), second_sigint(sigints), release).await)
    });
    if let Some(stats_file) = stats_file {
        runtime.block_on(stats_file.finish());
    }
    match outcome {
        Some(outcome) => ExitCode::from(report(
            &outcome,
            "while the mount was busy (it is detached; programs still using the file get I/O errors)",
        )),
        None => ExitCode::from(PROBLEMS),
    }
}

/// The log line saying what is mounted where; `description` (the stack's)
/// already says read-only, and that no lock is taken, once.
fn mounted_line(opts: &Options, description: &str) -> String {
    format!(
        "mounted {} on {}: {} is {description}",
        opts.volume.store,
        opts.mountpoint().display(),
        opts.filename
    )
}

/// Checks the mount point, and that a `file://` store is not under it,
/// before the store is opened, so a typo creates nothing in the bucket and
/// takes no lock.
pub(crate) fn check_places(opts: &Options) -> Result<(), ExitCode> {
    check_mountpoint(opts.mountpoint(), opts.nonempty)
        .and_then(|()| check_store_outside(&opts.volume.store, opts.mountpoint()))
        .map_err(|e| fail(USAGE, e))
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

/// Refuses a `file://` store whose directory is the mount point or lies
/// under it: the mount would hide its own store. Paths are compared
/// canonicalized (symbolic links, `..`); a store directory not created yet
/// is resolved through its nearest existing parent.
fn check_store_outside(store: &str, mountpoint: &Path) -> Result<(), String> {
    let Some(dir) =
        url::Url::parse(store).ok().filter(|u| u.scheme() == "file").and_then(|u| u.to_file_path().ok())
    else {
        return Ok(());
    };
    let Ok(mount) = mountpoint.canonicalize() else { return Ok(()) };
    let dir = resolve(&dir);
    if dir.starts_with(&mount) {
        return Err(format!(
            "the store directory {} is {} the mount point {}: the mount would hide its own store; keep the \
             volume's directory outside the mount point",
            dir.display(),
            if dir == mount { "the same directory as" } else { "inside" },
            mount.display()
        ));
    }
    Ok(())
}

/// `path` canonicalized through its nearest existing ancestor.
fn resolve(path: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut existing = path;
    loop {
        if let Ok(base) = existing.canonicalize() {
            return rest.iter().rev().fold(base, |p, c| p.join(c));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                existing = parent;
            }
            _ => return path.to_owned(),
        }
    }
}

#[cfg(test)]
mod mountpoint_tests {
    use super::{check_mountpoint, check_store_outside, mounted_line};
    use crate::options::Options;

    #[tokio::test]
    async fn a_read_only_mount_says_so_once() {
        let store = tempfile::tempdir().unwrap();
        let url = format!("file://{}", store.path().display());
        let parse = |args: &[&str]| {
            let mut full = vec!["s3block-fuse"];
            full.extend_from_slice(args);
            full.extend_from_slice(&[url.as_str(), "/m"]);
            Options::parse_from_args(full).unwrap()
        };
        let rw = crate::build_stack(&parse(&["--size=1M", "--block-size=64K"]).volume).await.unwrap();
        (rw.release)().await.unwrap();
        for args in [&["--read-only"][..], &["-o", "ro"]] {
            let opts = parse(args);
            let stack = crate::build_stack(&opts.volume).await.unwrap();
            let line = mounted_line(&opts, &stack.description);
            assert_eq!(line.matches("read-only").count(), 1, "{line}");
            assert!(line.contains("no lock"), "{line}");
            (stack.release)().await.unwrap();
        }
    }

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

    #[test]
    fn a_store_in_its_own_mount_point_is_refused_naming_both() {
        let top = tempfile::tempdir().unwrap();
        let mnt = top.path().join("mnt");
        std::fs::create_dir_all(mnt.join("sub")).unwrap();
        let shown = mnt.canonicalize().unwrap().display().to_string();
        // The mount point itself, a directory under it (existing or not),
        // and the same reached through `..` or a symbolic link.
        std::os::unix::fs::symlink(&mnt, top.path().join("link")).unwrap();
        for store in [
            format!("file://{}", mnt.display()),
            format!("file://{}/sub", mnt.display()),
            format!("file://{}/new/deeper", mnt.display()),
            format!("file://{}/other/../mnt/sub", top.path().display()),
            format!("file://{}/link/sub", top.path().display()),
        ] {
            std::fs::create_dir_all(top.path().join("other")).unwrap();
            let err = check_store_outside(&store, &mnt).expect_err(&store);
            assert!(err.contains(&shown) && err.contains("store directory"), "{store}: {err}");
        }
        let err = check_store_outside(&format!("file://{}", mnt.display()), &mnt).unwrap_err();
        assert!(err.contains("the same directory as"), "{err}");
        // Beside it, above it, or not a directory store: fine.
        for store in [
            format!("file://{}/store", top.path().display()),
            format!("file://{}", top.path().display()),
            format!("file://{}/mnt-store", top.path().display()),
            "memory://".to_owned(),
            "s3://bucket/mnt".to_owned(),
        ] {
            assert!(check_store_outside(&store, &mnt).is_ok(), "{store}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn effective_ids_own_the_files_this_process_makes() {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        let meta = file.as_file().metadata().expect("metadata");
        assert_eq!(super::effective_ids(), (meta.uid(), meta.gid()));
    }
}
