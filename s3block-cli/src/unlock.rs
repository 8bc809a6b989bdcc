//! `s3block unlock`: removes a mount lock after showing who held it, and
//! whether that is this very machine (where a lock with no mount program
//! running is one a crash left behind).

use std::io::Write;

use serde::Serialize;

use s3block_core::{local_hostname, local_mount_processes};
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
    /// Whether that host is this machine.
    pub this_host: bool,
    /// Mount programs running on this machine (`name (pid N)`), when the
    /// lock names this machine.
    pub local_mount_processes: Vec<String>,
    /// Whether the lock was removed.
    pub removed: bool,
}

/// What the holder of a lock is, seen from this machine: `None` for another
/// host, else a sentence saying this is the machine and what runs here.
pub fn holder_here(info: &LockInfo, this_host: &str, processes: &[String]) -> Option<String> {
    if info.host != this_host {
        return None;
    }
    Some(if processes.is_empty() {
        format!(
            "{} is this machine, and no s3block-fuse or s3backer process runs here: the lock is stale.",
            info.host
        )
    } else {
        format!(
            "{} is this machine, where {} runs: if it mounts this volume, unmount it instead.",
            info.host,
            processes.join(", ")
        )
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
        this_host: false,
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
    report.host = Some(info.host.clone());
    report.since = Some(info.since.clone());
    if !json {
        writeln!(out, "Locked by {} since {}.", info.host, info.since)?;
        if let Some(here) = holder_here(&info, &this_host, &report.local_mount_processes) {
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
        assert_eq!(holder_here(&info, "laptop", &[]), None);
        let stale = holder_here(&info, "vps", &[]).unwrap();
        assert!(stale.contains("vps is this machine") && stale.contains("stale"), "{stale}");
        let running = holder_here(&info, "vps", &["s3block-fuse (pid 7)".into()]).unwrap();
        assert!(running.contains("s3block-fuse (pid 7) runs"), "{running}");
    }
}
