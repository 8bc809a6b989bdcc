//! Who holds a mount lock, seen from here: whether the host the lock names
//! is this machine, and whether a mount program runs here that could hold
//! it. The "already mounted" error says so, since a lock naming this very
//! host and no mount program running is a lock a crash left behind.

/// Names of the programs that take the mount lock (s3backer takes the same one).
const MOUNT_PROGRAMS: [&str; 2] = ["s3block-fuse", "s3backer"];

/// This machine's host name, as mount locks record it (`gethostname`, else
/// `HOSTNAME`, else `unknown-host`).
pub fn local_hostname() -> String {
    #[cfg(unix)]
    let name = nix::unistd::gethostname().ok().and_then(|n| n.into_string().ok());
    #[cfg(not(unix))]
    let name: Option<String> = None;
    name.map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unknown-host".to_owned())
}

/// Processes of a mount program running here, other than this one, with
/// their names.
pub fn local_mount_processes() -> Vec<(u32, String)> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut found: Vec<(u32, String)> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|&pid| pid != me)
        .filter_map(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            let comm = comm.trim();
            MOUNT_PROGRAMS.contains(&comm).then(|| (pid, comm.to_owned()))
        })
        .collect();
    found.sort();
    found
}

/// What this machine knows of a lock held by `host`, for the "already
/// mounted" message: whether `host` is this machine and which mount
/// programs run here; `None` for another host.
pub fn lock_facts(host: &str) -> Option<String> {
    lock_facts_for(host, &local_hostname(), &local_mount_processes())
}

/// [`lock_facts`] with this machine's name and mount processes given.
pub fn lock_facts_for(host: &str, this_host: &str, processes: &[(u32, String)]) -> Option<String> {
    if host != this_host {
        return None;
    }
    if processes.is_empty() {
        return Some(format!(
            "{host} is this machine, and no s3block-fuse or s3backer process runs here: the lock was \
             left by a mount that did not stop cleanly"
        ));
    }
    let running: Vec<String> = processes.iter().map(|(pid, name)| format!("{name} (pid {pid})")).collect();
    Some(format!("{host} is this machine, where {} runs", running.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_facts_name_this_host_and_its_mount_processes() {
        assert_eq!(lock_facts_for("vps", "laptop", &[]), None);
        let stale = lock_facts_for("laptop", "laptop", &[]).expect("this host");
        assert!(stale.contains("laptop is this machine") && stale.contains("no s3block-fuse"), "{stale}");
        assert!(!stale.contains("s3block unlock"), "the library names no command: {stale}");
        let running = lock_facts_for("laptop", "laptop", &[(42, "s3block-fuse".into())]).expect("this host");
        assert!(running.contains("s3block-fuse (pid 42) runs"), "{running}");
        assert!(!local_hostname().is_empty());
    }

    #[test]
    fn the_host_name_is_the_kernels() {
        if let Ok(name) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
            assert_eq!(local_hostname(), name.trim());
        }
    }
}
