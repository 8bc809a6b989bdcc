//! `s3block unlock`: removes a mount lock after showing who held it (host,
//! time, and the process and boot id when the lock records them), and
//! whether that is this very machine, where it says whether the holder
//! still runs (a lock whose holder is gone is one a crash left behind; the
//! next mount takes it over by itself).

use std::io::Write;

use serde::Serialize;

use s3block_core::{Liveness, local_hostname, local_mount_processes};
use s3block_store::{LockInfo, break_lock, read_lock};

use crate::exit::{CliError, CliResult, OK};
use crate::format::write_json;
use crate::target::Target;

/// What `unlock` found and did.
#[derive(Debug, Clone, Serialize)]
pub struct UnlockReport {
    /// Whether the volume was locked.
    pub locked: bool,
    /// The host the lock names.
    pub host: Option<String>,
    /// When the lock was taken, `YYYYMMDDTHHMMSSZ`.
    pub since: Option<String>,
    /// The holder's process id, when the lock records it.
    pub pid: Option<u32>,
    /// The boot id of the holder's host when it took the lock, when the
    /// lock records it.
    pub boot_id: Option<String>,
    /// Whether that host is this machine.
    pub this_host: bool,
    /// For a lock of this machine that records its holder: whether the
    /// holder still runs (`None` when that cannot be told).
    pub holder_alive: Option<bool>,
    /// Why the holder is judged alive or gone, or why it cannot be told
    /// (for a lock of this machine).
    pub holder_state: Option<String>,
    /// Mount programs running on this machine (`name (pid N)`), when the
    /// lock names this machine.
    pub local_mount_processes: Vec<String>,
    /// Whether the lock was removed.
    pub removed: bool,
}

/// The holder as `unlock` and `info` name it: host, process and boot id
/// when recorded, and time.
pub fn describe_holder(info: &LockInfo) -> String {
    let process = match (info.process.pid, &info.process.boot_id) {
        (Some(pid), Some(boot)) => format!(" (process {pid}, boot id {boot})"),
        (Some(pid), None) => format!(" (process {pid})"),
        (None, Some(boot)) => format!(" (boot id {boot})"),
        (None, None) => String::new(),
    };
    format!("{}{process} since {}", info.host, info.since)
}

/// Whether the holder of a lock still runs, as far as this machine can
/// tell: `Some(true)` or `Some(false)` for a lock of this machine that
/// records its holder, `None` otherwise.
pub fn holder_alive(liveness: Option<&Liveness>) -> Option<bool> {
    match liveness? {
        Liveness::Alive(_) => Some(true),
        Liveness::Gone(_) => Some(false),
        _ => None,
    }
}

/// What the holder of a lock is, seen from this machine: `None` for another
/// host, else a sentence saying this is the machine and whether the holder
/// still runs (from `liveness`, when the lock records its process) or which
/// mount programs run here (`processes`, when it does not).
pub fn holder_here(
    info: &LockInfo,
    this_host: &str,
    liveness: Option<&Liveness>,
    processes: &[String],
) -> Option<String> {
    if info.host != this_host {
        return None;
    }
    Some(match liveness {
        Some(Liveness::Gone(why)) => format!(
            "{} is this machine, and the lock's holder is gone: {why}. The lock is stale; the next mount \
             takes it over by itself.",
            info.host
        ),
        Some(Liveness::Alive(why)) => format!(
            "{} is this machine, and the lock's holder still runs: {why}. Unmount it instead.",
            info.host
        ),
        _ if processes.is_empty() => format!(
            "{} is this machine, and no s3block-fuse or s3backer process runs here: the lock is stale.",
            info.host
        ),
        _ => format!(
            "{} is this machine, where {} runs: if it mounts this volume, unmount it instead.",
            info.host,
            processes.join(", ")
        ),
    })
}

/// `s3block unlock`: removes the mount lock after showing who held it.
/// `confirm` is asked first, with the holder; it returns false to cancel
/// (or an error when it cannot ask).
pub async fn unlock(
    target: &Target,
    confirm: &mut dyn FnMut(&LockInfo) -> Result<bool, CliError>,
    json: bool,
    out: &mut dyn Write,
) -> CliResult {
    let mut report = UnlockReport {
        locked: false,
        host: None,
        since: None,
        pid: None,
        boot_id: None,
        this_host: false,
        holder_alive: None,
        holder_state: None,
        local_mount_processes: Vec::new(),
        removed: false,
    };
    let Some(info) = read_lock(target.store.as_ref(), &target.prefix).await? else {
        if json {
            write_json(out, &report)?;
        } else {
            writeln!(out, "{} is not locked.", target.url)?;
        }
        return Ok(OK);
    };
    let this_host = local_hostname();
    report.locked = true;
    report.this_host = info.host == this_host;
    if report.this_host {
        report.local_mount_processes =
            local_mount_processes().into_iter().map(|(pid, name)| format!("{name} (pid {pid})")).collect();
    }
    let liveness = info.liveness(&this_host);
    report.host = Some(info.host.clone());
    report.since = Some(info.since.clone());
    report.pid = info.process.pid;
    report.boot_id = info.process.boot_id.clone();
    report.holder_alive = holder_alive(liveness.as_ref());
    report.holder_state = liveness.as_ref().map(|l| l.reason().to_owned());
    if !json {
        writeln!(out, "Locked by {}.", describe_holder(&info))?;
        if let Some(here) = holder_here(&info, &this_host, liveness.as_ref(), &report.local_mount_processes) {
            writeln!(out, "{here}")?;
        }
        out.flush()?;
    }
    if !confirm(&info)? {
        return Err(CliError::Cancelled("the lock was left in place".into()));
    }
    break_lock(target.store.as_ref(), &target.prefix).await?;
    report.removed = true;
    if json {
        write_json(out, &report)?;
    } else {
        writeln!(out, "Lock removed.")?;
    }
    Ok(OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_is_named_as_this_machine() {
        let info = LockInfo::new("vps", "20260101T000000Z", None);
        assert_eq!(holder_here(&info, "laptop", None, &[]), None);
        let stale = holder_here(&info, "vps", None, &[]).unwrap();
        assert!(stale.contains("vps is this machine") && stale.contains("stale"), "{stale}");
        let running = holder_here(&info, "vps", None, &["s3block-fuse (pid 7)".into()]).unwrap();
        assert!(running.contains("s3block-fuse (pid 7) runs"), "{running}");
    }

    #[test]
    fn a_recorded_holder_is_named_with_its_process_and_whether_it_runs() {
        let process = s3block_core::HolderProcess::new(Some(4520), Some("b9f3".into()));
        let info = LockInfo::new("vps", "20260101T000000Z", None).with_process(process);
        assert_eq!(describe_holder(&info), "vps (process 4520, boot id b9f3) since 20260101T000000Z");
        let gone = Liveness::Gone("process 4520 is not running".into());
        let text = holder_here(&info, "vps", Some(&gone), &[]).unwrap();
        assert!(
            text.contains("holder is gone: process 4520 is not running") && text.contains("takes it over")
        );
        let alive = Liveness::Alive("process 4520 (s3block-fuse) is running".into());
        let text = holder_here(&info, "vps", Some(&alive), &[]).unwrap();
        assert!(text.contains("still runs: process 4520 (s3block-fuse) is running"), "{text}");
        assert_eq!(
            (holder_alive(Some(&gone)), holder_alive(Some(&alive)), holder_alive(None)),
            (Some(false), Some(true), None)
        );
        let unknown = Liveness::Unknown("no process".into());
        assert_eq!(holder_alive(Some(&unknown)), None);
        assert_eq!(describe_holder(&LockInfo::new("vps", "t", None)), "vps since t");
    }
    /// `unlock` on a lock this process holds (alive) and on one of a
    /// process that has exited (gone): pid, boot id and liveness shown.
    #[test]
    fn unlock_shows_the_process_and_whether_it_runs() {
        use std::sync::Arc;

        use object_store::ObjectStore;
        use object_store::path::Path;

        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let target = Target::new(store.clone(), "v/", true);
        let here = local_hostname();
        let me = s3block_core::HolderProcess::current();
        let mut child = std::process::Command::new("true").spawn().expect("start `true`");
        child.wait().expect("reap `true`");
        let mut dead = me.clone();
        dead.pid = Some(child.id());
        for (process, alive) in [(&me, true), (&dead, false)] {
            let body =
                LockInfo::new(here.clone(), "20260101T000000Z", None).with_process(process.clone()).body();
            let key = Path::from("v/s3backer-mounted");
            let put = store.put_opts(&key, body.into_bytes().into(), Default::default());
            rt.block_on(put).expect("put the lock");
            let mut text = Vec::new();
            rt.block_on(unlock(&target, &mut |_| Ok(false), false, &mut text)).expect_err("declined");
            let text = String::from_utf8_lossy(&text).into_owned();
            let pid = process.pid.expect("a pid");
            assert!(text.contains(&format!("(process {pid}, boot id ")), "{text}");
            let state = if alive { "the lock's holder still runs" } else { "the lock's holder is gone" };
            assert!(text.contains(state), "{text}");
            let mut json = Vec::new();
            rt.block_on(unlock(&target, &mut |_| Ok(true), true, &mut json)).expect("unlock");
            let v: serde_json::Value = serde_json::from_slice(&json).expect("json");
            assert_eq!(v["pid"].as_u64(), Some(u64::from(pid)), "{v}");
            assert_eq!(v["boot_id"].as_str(), process.boot_id.as_deref(), "{v}");
            assert_eq!(
                (v["holder_alive"].as_bool(), v["removed"].as_bool()),
                (Some(alive), Some(true)),
                "{v}"
            );
        }
    }
}
