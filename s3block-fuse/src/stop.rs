//! Stopping a mount on SIGTERM or SIGINT, as a user would: by unmounting.
//!
//! SIGTERM and SIGINT ask the kernel to unmount (`fusermount3 -u`); the
//! FUSE session then ends and the program stores everything and exits.
//! When the mount is busy (a loop device is attached, or a program such as
//! `dd` holds the file open), the program says so once, stores what is
//! written so far, keeps serving, and asks again every second
//! ([`RETRY_EVERY`]) until the unmount succeeds: right after the last user
//! closes the file.
//!
//! A second SIGINT (Ctrl-C twice), however soon after the first, abandons:
//! a busy mount is detached at once (`fusermount3 -uz`) and the program
//! exits without storing what is not stored yet; once unmounted, it stops
//! the final flush (see [`shutdown`](crate::shutdown())). SIGHUP is ignored.
//! The signals are watched and counted by the frontends' shared
//! [`Signals`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use s3block_cache::frontend::{Received, Service, Signals};
use s3block_core::BlockDevice;
use tokio::sync::{oneshot, watch};

use crate::session::{detach, unmount};

/// How often a refused unmount is tried again.
pub(crate) const RETRY_EVERY: Duration = Duration::from_secs(1);

/// How serving ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Served {
    /// The kernel ended the session: unmounted.
    Unmounted,
    /// A second SIGINT while the mount was busy: detached, data abandoned.
    Abandoned,
}

/// True while `dir` is a mount point, from /proc/self/mountinfo.
pub(crate) fn is_mounted(dir: &Path) -> bool {
    s3block_core::is_mount_point(dir)
}

/// Serves until the FUSE session ends (`done`), turning SIGTERM and SIGINT
/// into unmount requests as the module docs say. Returns how it ended and
/// the SIGINT counter, which keeps counting afterwards (a second SIGINT
/// abandons the final flush).
pub(crate) async fn serve_until_stopped(
    mountpoint: &Path,
    devices: Vec<Arc<dyn BlockDevice>>,
    mut done: oneshot::Receiver<std::io::Result<()>>,
    service: &Service,
) -> Result<(Served, watch::Receiver<u32>), String> {
    let mut signals = Signals::new()?;
    let mut stopper = Stopper { mountpoint: mountpoint.to_owned(), devices, busy: false, service };
    let mut retry = tokio::time::interval(RETRY_EVERY);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let served = loop {
        tokio::select! {
            result = &mut done => {
                match result {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!("the FUSE session ended with an error: {e}"),
                    Err(_) => tracing::error!("the FUSE session thread ended unexpectedly"),
                }
                break Served::Unmounted;
            }
            received = signals.recv() => match received {
                Received::Term => stopper.request("SIGTERM").await,
                Received::Int(n) => {
                    if n >= 2 && stopper.busy {
                        stopper.abandon().await;
                        break Served::Abandoned;
                    }
                    stopper.request("SIGINT").await;
                }
                Received::Hup => tracing::info!("SIGHUP ignored; unmount with fusermount3 -u or SIGTERM"),
            },
            _ = retry.tick(), if stopper.busy => stopper.retry().await,
        }
    };
    if served == Served::Abandoned {
        return Ok((served, signals.sigints()));
    }
    // Keep counting SIGINTs during the final flush: the second one abandons.
    Ok((served, signals.keep_counting()))
}

/// The unmount requests of one mount.
struct Stopper<'a> {
    mountpoint: PathBuf,
    /// The volumes served (one, or each of several).
    devices: Vec<Arc<dyn BlockDevice>>,
    /// An unmount was asked for and refused; it is tried again.
    busy: bool,
    /// systemd hears of the stop (`STOPPING=1`) and of a busy mount.
    service: &'a Service,
}

impl Stopper<'_> {
    /// A signal asks for the unmount.
    async fn request(&mut self, signal: &str) {
        tracing::info!("{signal}: unmounting {}", self.mountpoint.display());
        self.service.stopping(format!("stopping ({signal}): unmounting {}", self.mountpoint.display()));
        let Err(e) = self.unmount().await else { return };
        let shown = self.mountpoint.display();
        self.service.stopping(format!(
            "stopping ({signal}): {shown} is busy (a loop device or a program holds the file); unmounting once \
             it is closed"
        ));
        if self.busy {
            tracing::info!("{shown} is still busy; it is unmounted once the file is closed");
            return;
        }
        self.busy = true;
        tracing::warn!(
            "cannot unmount {shown} yet ({e}): a loop device is attached or a program holds the file open. \
             Storing what is written so far; the unmount is tried again every {}s and happens once the file \
             is closed (detach the loop device, stop the writer). A second SIGINT (Ctrl-C) abandons what is \
             not stored and exits.",
            RETRY_EVERY.as_secs()
        );
        let devices = self.devices.clone();
        tokio::spawn(async move {
            let mut flushed = Ok(());
            for device in devices {
                flushed = flushed.and(device.flush().await);
            }
            match flushed {
                Ok(()) => tracing::info!("everything written so far is stored"),
                Err(e) => tracing::error!("could not store everything written so far: {e}"),
            }
        });
    }

    /// The timer asks again.
    async fn retry(&mut self) {
        match self.unmount().await {
            Ok(()) => tracing::info!("{} is no longer busy: unmounted", self.mountpoint.display()),
            Err(e) => tracing::debug!("{} still busy: {e}", self.mountpoint.display()),
        }
    }

    /// Asks the kernel to unmount; `Ok` when it did, or the mount point is
    /// no longer mounted (unmounted by someone else a moment ago). Records
    /// whether the mount is still busy.
    async fn unmount(&mut self) -> Result<(), String> {
        let path = self.mountpoint.clone();
        let result =
            tokio::task::spawn_blocking(move || unmount(&path)).await.unwrap_or_else(|e| Err(e.to_string()));
        match result {
            Ok(()) => {
                self.busy = false;
                Ok(())
            }
            Err(_) if !is_mounted(&self.mountpoint) => {
                tracing::info!("{} is already unmounted", self.mountpoint.display());
                self.busy = false;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// The second SIGINT while busy: detach the mount lazily, so the mount
    /// point is free and the file's users get errors once the program exits.
    async fn abandon(&mut self) {
        let path = self.mountpoint.clone();
        let result =
            tokio::task::spawn_blocking(move || detach(&path)).await.unwrap_or_else(|e| Err(e.to_string()));
        if let Err(e) = result {
            tracing::error!("could not detach {}: {e}", self.mountpoint.display());
        }
    }
}
