//! Telling systemd what a frontend is doing: the notification protocol of
//! `Type=notify` units, over the `NOTIFY_SOCKET` systemd gives its service.
//!
//! - `READY=1` once the volume serves (the mount's file is there, the NBD
//!   socket accepts), so units ordered after the service (a loop device, a
//!   filesystem, `nbd-client`) start against a working device;
//! - a `STATUS=` line, kept up to date every [`STATUS_EVERY`], that `systemctl
//!   status` shows: what is served where, how much written data is not in
//!   the store yet and whether uploads run, and, while the store does not
//!   answer, since when (from the retry layer's
//!   [`StoreHealth`](s3block_core::StoreHealth));
//! - `STOPPING=1` when a stop is asked for (SIGTERM, SIGINT);
//! - `EXTEND_TIMEOUT_USEC=` every [`STATUS_EVERY`] while data waits to be stored
//!   or the final flush runs, each giving [`STOP_EXTENSION`] more: however long
//!   the store takes to come back, systemd's `TimeoutStopSec` never runs
//!   out while the program is storing, so a stop during an outage is never
//!   cut short with data not stored. (Outside a start or a stop systemd has
//!   no timeout running and ignores the message.)
//!
//! Without `NOTIFY_SOCKET` (not run by systemd) nothing is sent and no task
//! runs: a plain run is unchanged. A message that cannot be sent is logged
//! once, never fatal.
//!
//! The datagrams are sent by the `sd-notify` crate: a small, maintained,
//! dependency-light implementation of exactly this protocol.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use s3block_core::StoreHealth;
use sd_notify::NotifyState;

use super::StatsSource;
use crate::incident::span;

/// How often the status line is refreshed (and the stop timeout extended
/// while data waits).
pub const STATUS_EVERY: Duration = Duration::from_secs(2);

/// How much each `EXTEND_TIMEOUT_USEC` gives: many ticks, so a late tick on
/// a busy machine never lets the timeout run out.
pub const STOP_EXTENSION: Duration = Duration::from_secs(30);

/// The variable systemd sets for a `Type=notify` service.
pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";

/// What a status line needs to know of the volume.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusFigures {
    /// Blocks written and not yet stored below the memory cache.
    pub dirty_blocks: u64,
    /// Their bytes.
    pub dirty_bytes: u64,
    /// Uploads running now.
    pub uploads_in_flight: u64,
    /// Blocks in the disk cache not yet in the bucket (0 without one).
    pub disk_unstored_blocks: u64,
    /// Their bytes.
    pub disk_unstored_bytes: u64,
    /// Whether the store answers.
    pub health: StoreHealth,
}

impl StatusFigures {
    /// Whether written data waits to be stored.
    pub fn data_waits(&self) -> bool {
        self.dirty_blocks > 0 || self.uploads_in_flight > 0 || self.disk_unstored_blocks > 0
    }
}

/// Where the frontend is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    Serving = 0,
    Stopping = 1,
    Storing = 2,
}

impl Phase {
    fn from_u8(n: u8) -> Phase {
        match n {
            0 => Phase::Serving,
            1 => Phase::Stopping,
            _ => Phase::Storing,
        }
    }
}

struct Shared {
    /// What is served where ("mounted s3://b/v on /mnt/s3block"), or what
    /// the stop is doing.
    doing: Mutex<String>,
    phase: AtomicU8,
    stats: Arc<dyn StatsSource>,
    /// A failure to send was logged.
    warned: AtomicBool,
}

/// The service manager's view of a frontend: see the module docs. Dropping
/// it stops the status updates.
pub struct Service {
    shared: Option<Arc<Shared>>,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service").field("notifying", &self.shared.is_some()).finish()
    }
}

impl Service {
    /// The volume serves: sends `READY=1` with the first status line
    /// (`doing` says what is served where; `stats` gives the figures), and
    /// keeps the line up to date on `runtime`. With `main_pid`, also
    /// `MAINPID=` this process (a program that forked: systemd then watches
    /// this process, given `NotifyAccess=all`). Without `NOTIFY_SOCKET`, an
    /// inert handle.
    pub fn ready(
        runtime: &tokio::runtime::Handle,
        doing: String,
        stats: Arc<dyn StatsSource>,
        main_pid: bool,
    ) -> Service {
        if std::env::var_os(NOTIFY_SOCKET_ENV).is_none() {
            return Service { shared: None, ticker: None };
        }
        let shared = Arc::new(Shared {
            doing: Mutex::new(doing),
            phase: AtomicU8::new(Phase::Serving as u8),
            stats,
            warned: AtomicBool::new(false),
        });
        let line = shared.line(SystemTime::now());
        let pid = std::process::id();
        let mut states = vec![NotifyState::Ready, NotifyState::Status(&line)];
        if main_pid {
            states.push(NotifyState::MainPid(pid));
        }
        shared.send(&states);
        let ticking = shared.clone();
        let ticker = runtime.spawn(async move {
            let mut tick = tokio::time::interval(STATUS_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last = line;
            loop {
                tick.tick().await;
                last = ticking.update(last);
            }
        });
        Service { shared: Some(shared), ticker: Some(ticker) }
    }

    /// A stop was asked for: sends `STOPPING=1` (the first time) and a
    /// status line saying what the stop does now (`doing`).
    pub fn stopping(&self, doing: String) {
        let Some(shared) = &self.shared else { return };
        *shared.doing.lock().unwrap_or_else(|e| e.into_inner()) = doing;
        let first = shared.phase.fetch_max(Phase::Stopping as u8, Ordering::SeqCst) == Phase::Serving as u8;
        let line = shared.line(SystemTime::now());
        if first {
            shared.send(&[NotifyState::Stopping, NotifyState::Status(&line)]);
        } else {
            shared.send(&[NotifyState::Status(&line)]);
        }
    }

    /// The final flush begins: from now on every tick extends the stop
    /// timeout and says how much is left to store.
    pub fn storing(&self) {
        let Some(shared) = &self.shared else { return };
        *shared.doing.lock().unwrap_or_else(|e| e.into_inner()) =
            "stopping: storing the written data".to_owned();
        if shared.phase.swap(Phase::Storing as u8, Ordering::SeqCst) == Phase::Serving as u8 {
            shared.send(&[NotifyState::Stopping]);
        }
        shared.update(String::new());
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(ticker) = self.ticker.take() {
            ticker.abort();
        }
    }
}

impl Shared {
    fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::SeqCst))
    }

    fn line(&self, now: SystemTime) -> String {
        let doing = self.doing.lock().unwrap_or_else(|e| e.into_inner()).clone();
        status_line(&doing, self.phase(), &self.stats.status(), now)
    }

    /// One tick: the status line when it changed since `last`, and the
    /// timeout extension while storing; returns the line now.
    fn update(&self, last: String) -> String {
        let figures = self.stats.status();
        let doing = self.doing.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let phase = self.phase();
        let line = status_line(&doing, phase, &figures, SystemTime::now());
        let extend = phase == Phase::Storing || figures.data_waits();
        let usec = u32::try_from(STOP_EXTENSION.as_micros()).unwrap_or(u32::MAX);
        match (line != last, extend) {
            (true, true) => self.send(&[NotifyState::ExtendTimeoutUsec(usec), NotifyState::Status(&line)]),
            (true, false) => self.send(&[NotifyState::Status(&line)]),
            (false, true) => self.send(&[NotifyState::ExtendTimeoutUsec(usec)]),
            (false, false) => {}
        }
        line
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if let Err(e) = sd_notify::notify(states)
            && !self.warned.swap(true, Ordering::Relaxed)
        {
            let socket = std::env::var_os(NOTIFY_SOCKET_ENV).unwrap_or_default();
            tracing::warn!(
                "cannot tell systemd the service's state on {} ({NOTIFY_SOCKET_ENV}): {e}; \
                 the service keeps running, its status is not updated",
                socket.to_string_lossy()
            );
        }
    }
}

/// The status line: `doing`, then the data not stored yet, then the
/// store's health.
fn status_line(doing: &str, phase: Phase, f: &StatusFigures, now: SystemTime) -> String {
    let mut line = String::from(doing);
    let unstored = f.dirty_bytes + f.disk_unstored_bytes;
    let blocks = f.dirty_blocks + f.disk_unstored_blocks;
    match phase {
        Phase::Storing if blocks == 0 && f.uploads_in_flight == 0 => {
            line.push_str("; everything is stored, closing")
        }
        Phase::Storing => {
            line.push_str(&format!("; {} left to store ({})", amount(unstored), blocks_of(blocks)));
        }
        _ if blocks > 0 => {
            line.push_str(&format!("; {} written, not yet stored ({})", amount(unstored), blocks_of(blocks)));
        }
        _ => line.push_str("; all written data is stored"),
    }
    if f.uploads_in_flight > 0 {
        line.push_str(&format!(", {} uploading", f.uploads_in_flight));
    }
    if f.disk_unstored_blocks > 0 {
        line.push_str(&format!(", {} of it in the disk cache only", amount(f.disk_unstored_bytes)));
    }
    if let Some(since) = f.health.unreachable_since {
        let long = now.duration_since(since).unwrap_or_default();
        line.push_str(&format!(
            "; store unreachable since {} ({}) and retrying, {} request(s) waiting",
            clock(since),
            span(long),
            f.health.waiting
        ));
    }
    line
}

/// `1 block`, `5 blocks`.
fn blocks_of(n: u64) -> String {
    if n == 1 { "1 block".to_owned() } else { format!("{n} blocks") }
}

/// Bytes for a status line: `0 B`, `768 KiB`, `12.5 MiB`, `3.2 GiB`.
fn amount(bytes: u64) -> String {
    const KIB: f64 = 1024.0;
    let b = bytes as f64;
    if bytes < 1024 {
        format!("{bytes} B")
    } else if b < KIB * KIB {
        format!("{:.0} KiB", b / KIB)
    } else if b < KIB * KIB * KIB {
        format!("{:.1} MiB", b / (KIB * KIB))
    } else {
        format!("{:.1} GiB", b / (KIB * KIB * KIB))
    }
}

/// `t` as `2026-11-30 18:40:12 UTC`.
fn clock(t: SystemTime) -> String {
    let s = s3block_store::utc_stamp(t);
    // YYYYMMDDTHHMMSSZ
    if s.len() < 15 {
        return s;
    }
    format!("{}-{}-{} {}:{}:{} UTC", &s[0..4], &s[4..6], &s[6..8], &s[9..11], &s[11..13], &s[13..15])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::time::UNIX_EPOCH;

    const DOING: &str = "mounted file:///v on /mnt/s3block";

    #[test]
    fn the_line_says_what_waits_and_since_when_the_store_is_unreachable() {
        let now = UNIX_EPOCH + Duration::from_secs(1_796_000_000);
        let clean = StatusFigures::default();
        assert_eq!(
            status_line(DOING, Phase::Serving, &clean, now),
            "mounted file:///v on /mnt/s3block; all written data is stored"
        );
        assert!(!clean.data_waits());
        let dirty = StatusFigures {
            dirty_blocks: 5,
            dirty_bytes: 5 << 18,
            uploads_in_flight: 2,
            ..Default::default()
        };
        assert!(dirty.data_waits());
        assert_eq!(
            status_line(DOING, Phase::Serving, &dirty, now),
            "mounted file:///v on /mnt/s3block; 1.2 MiB written, not yet stored (5 blocks), 2 uploading"
        );
        let outage = StatusFigures {
            health: StoreHealth { unreachable_since: Some(now - Duration::from_secs(184)), waiting: 3 },
            disk_unstored_blocks: 1,
            disk_unstored_bytes: 256 << 10,
            ..dirty
        };
        let line = status_line("stopping", Phase::Storing, &outage, now);
        assert_eq!(
            line,
            "stopping; 1.5 MiB left to store (6 blocks), 2 uploading, 256 KiB of it in the disk cache only; \
             store unreachable since 2026-11-30 00:50:16 UTC (3m04s) and retrying, 3 request(s) waiting"
        );
        assert_eq!(
            status_line("stopping", Phase::Storing, &clean, now),
            "stopping; everything is stored, closing"
        );
    }

    #[test]
    fn amounts_and_spans_read_well() {
        assert_eq!((blocks_of(1), blocks_of(2)), ("1 block".to_owned(), "2 blocks".to_owned()));
        assert_eq!(amount(0), "0 B");
        assert_eq!(amount(1023), "1023 B");
        assert_eq!(amount(768 << 10), "768 KiB");
        assert_eq!(amount(12_800 << 10), "12.5 MiB");
        assert_eq!(amount(3 << 30), "3.0 GiB");
        assert_eq!(span(Duration::from_secs(42)), "42s");
        assert_eq!(span(Duration::from_secs(7620)), "2h07m");
    }

    #[test]
    fn without_a_notify_socket_nothing_runs() {
        // The test process has no NOTIFY_SOCKET (no test sets it).
        assert!(
            std::env::var_os(NOTIFY_SOCKET_ENV).is_none(),
            "run the tests without {NOTIFY_SOCKET_ENV} in the environment"
        );
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let stats: Arc<dyn StatsSource> = Arc::new(super::super::Stats::new());
        let service = Service::ready(rt.handle(), DOING.into(), stats, false);
        assert!(service.shared.is_none() && service.ticker.is_none());
        service.stopping("stopping".into());
        service.storing();
    }
}
