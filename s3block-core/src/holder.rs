//! Who holds a mount lock, seen from here: whether the host the lock names
//! is this machine, and whether a mount program runs here that could hold
//! it. The "already mounted" error says so, since a lock naming this very
//! host and no mount program running is a lock a crash left behind.
//!
//! A lock records its holder's process ([`HolderProcess`]); for a lock of
//! this host, [`holder_liveness`] tells whether that process still runs, so
//! a mount can take over the lock of one that crashed.

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

/// What identifies a process on its host, as a mount lock records it: its
/// process id, the kernel's boot id (`/proc/sys/kernel/random/boot_id`,
/// new at every boot), its start time (clock ticks after boot, so a pid
/// used again by a later process is told apart), the machine id
/// (`/etc/machine-id`, so two machines that share a host name are told
/// apart) and its pid namespace. Any of them may be unknown: a lock written
/// by s3backer or an older s3block records none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HolderProcess {
    /// Process id.
    pub pid: Option<u32>,
    /// Boot id of the kernel it ran under.
    pub boot_id: Option<String>,
    /// Start time, in clock ticks after boot (`/proc/PID/stat`, field 22).
    pub start: Option<u64>,
    /// Machine id (`/etc/machine-id`).
    pub machine_id: Option<String>,
    /// Pid namespace (the inode number of `/proc/PID/ns/pid`).
    pub pid_ns: Option<u64>,
}

impl HolderProcess {
    /// A process given by its pid and boot id (nothing else known).
    pub fn new(pid: Option<u32>, boot_id: Option<String>) -> Self {
        HolderProcess { pid, boot_id, ..Default::default() }
    }

    /// This process, as far as this machine tells (fields it cannot read
    /// are `None`).
    pub fn current() -> Self {
        let pid = std::process::id();
        HolderProcess {
            pid: Some(pid),
            boot_id: boot_id(),
            start: process_state(pid).map(|s| s.start),
            machine_id: read_id("/etc/machine-id"),
            pid_ns: pid_namespace("self"),
        }
    }

    /// This process with `start`, as read elsewhere.
    pub fn with_start(mut self, start: Option<u64>) -> Self {
        self.start = start;
        self
    }

    /// This process with `machine_id`.
    pub fn with_machine_id(mut self, machine_id: Option<String>) -> Self {
        self.machine_id = machine_id;
        self
    }

    /// This process with `pid_ns`.
    pub fn with_pid_ns(mut self, pid_ns: Option<u64>) -> Self {
        self.pid_ns = pid_ns;
        self
    }

    /// Whether anything identifies the process (a pid or a boot id).
    pub fn is_known(&self) -> bool {
        self.pid.is_some() || self.boot_id.is_some()
    }
}

/// One id read from a file: trimmed, non-empty, at most 64 characters.
fn read_id(path: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let id = text.trim();
    (!id.is_empty() && id.len() <= 64).then(|| id.to_owned())
}

/// This machine's boot id (`/proc/sys/kernel/random/boot_id`), if it has one.
pub fn boot_id() -> Option<String> {
    read_id("/proc/sys/kernel/random/boot_id")
}

/// The pid namespace of `/proc/{which}` (`self` or a pid), as its inode number.
fn pid_namespace(which: &str) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/{which}/ns/pid")).ok()?;
    let text = link.to_str()?;
    text.strip_prefix("pid:[")?.strip_suffix(']')?.parse().ok()
}

/// A running process, as `/proc/PID/stat` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProcessState {
    /// Its command name (at most 15 characters, as the kernel keeps it).
    pub name: String,
    /// Start time, in clock ticks after boot.
    pub start: u64,
    /// Whether it has exited and waits to be reaped (a zombie).
    pub exited: bool,
}

impl ProcessState {
    /// A process state as given.
    pub fn new(name: impl Into<String>, start: u64, exited: bool) -> Self {
        ProcessState { name: name.into(), start, exited }
    }

    /// Parses a `/proc/PID/stat` line; `None` when it is not one.
    pub fn parse(stat: &str) -> Option<ProcessState> {
        // "PID (NAME) STATE ...": the name may hold spaces and parentheses,
        // so it ends at the last ')'.
        let open = stat.find('(')?;
        let close = stat.rfind(')')?;
        let name = stat.get(open + 1..close)?.to_owned();
        let mut fields = stat.get(close + 1..)?.split_whitespace();
        let state = fields.next()?;
        // Field 22 of the line is the 20th after the name.
        let start = fields.nth(18)?.parse().ok()?;
        Some(ProcessState { name, start, exited: matches!(state, "Z" | "X" | "x") })
    }
}

/// The process `pid` of this machine, `None` when none runs.
pub fn process_state(pid: u32) -> Option<ProcessState> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    ProcessState::parse(&stat)
}

/// Whether the holder of a lock naming this host still runs, and why it is
/// judged so.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Liveness {
    /// The holder runs here.
    Alive(String),
    /// The holder is gone (this machine rebooted, or its process ended).
    Gone(String),
    /// Nothing proves it gone (the lock records no process, or one this
    /// machine cannot see).
    Unknown(String),
}

impl Liveness {
    /// The reason given.
    pub fn reason(&self) -> &str {
        match self {
            Liveness::Alive(r) | Liveness::Gone(r) | Liveness::Unknown(r) => r,
        }
    }
}

/// Whether `holder`, recorded in a lock naming this host, still runs here.
pub fn holder_liveness(holder: &HolderProcess) -> Liveness {
    let this = HolderProcess::current();
    let own_name = process_state(std::process::id()).map(|s| s.name);
    holder_liveness_with(holder, &this, own_name.as_deref(), &process_state)
}

/// [`holder_liveness`] with this process (`this`, its command name
/// `own_name`) and the process table (`lookup`) given.
///
/// The holder is gone when this machine has rebooted since (the boot ids
/// differ), when no process with its pid runs (or only a zombie), or when
/// the process with its pid is a later one: it started at another time, or,
/// for a lock that records no start time, it is no mount program and not
/// the same program as this one. A lock written on another machine (the
/// machine ids differ) or in another pid namespace proves nothing.
pub fn holder_liveness_with(
    holder: &HolderProcess,
    this: &HolderProcess,
    own_name: Option<&str>,
    lookup: &dyn Fn(u32) -> Option<ProcessState>,
) -> Liveness {
    if !holder.is_known() {
        return Liveness::Unknown(
            "the lock records no process id or boot id (s3backer and older s3block write none), so \
             nothing proves its holder gone"
                .into(),
        );
    }
    if let (Some(theirs), Some(ours)) = (&holder.machine_id, &this.machine_id)
        && theirs != ours
    {
        return Liveness::Unknown(format!(
            "the lock was written on another machine with the same host name (machine id {theirs}, this \
             one is {ours})"
        ));
    }
    match (&holder.boot_id, &this.boot_id) {
        (Some(theirs), Some(ours)) if theirs != ours => {
            return Liveness::Gone(format!(
                "this machine has restarted since the lock was taken (boot id {theirs} then, {ours} now)"
            ));
        }
        (Some(_), None) => {
            return Liveness::Unknown("this machine's boot id cannot be read".into());
        }
        _ => {}
    }
    let Some(pid) = holder.pid else {
        return Liveness::Unknown("the lock records no process id".into());
    };
    if let (Some(theirs), Some(ours)) = (holder.pid_ns, this.pid_ns)
        && theirs != ours
    {
        return Liveness::Unknown(format!(
            "the lock was taken in another pid namespace ({theirs}, this process is in {ours}), whose \
             processes cannot be seen from here"
        ));
    }
    let Some(state) = lookup(pid) else {
        return Liveness::Gone(format!("process {pid} is not running"));
    };
    if state.exited {
        return Liveness::Gone(format!("process {pid} ({}) has exited", state.name));
    }
    let reused = match holder.start {
        Some(start) => start != state.start,
        None => !MOUNT_PROGRAMS.contains(&state.name.as_str()) && own_name != Some(state.name.as_str()),
    };
    if reused {
        return Liveness::Gone(format!(
            "process {pid} is not the lock's holder but a later process ({}) that got the same pid",
            state.name
        ));
    }
    Liveness::Alive(format!("process {pid} ({}) is running", state.name))
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
    fn here() -> HolderProcess {
        HolderProcess::new(Some(100), Some("boot-now".into()))
            .with_machine_id(Some("machine-a".into()))
            .with_pid_ns(Some(7))
    }

    fn table(pid: u32) -> Option<ProcessState> {
        match pid {
            42 => Some(ProcessState::new("s3block-fuse", 5000, false)),
            43 => Some(ProcessState::new("bash", 9000, false)),
            44 => Some(ProcessState::new("s3block-fuse", 5000, true)),
            45 => Some(ProcessState::new("my-tests", 300, false)),
            _ => None,
        }
    }

    fn judge(holder: &HolderProcess) -> Liveness {
        holder_liveness_with(holder, &here(), Some("my-tests"), &table)
    }

    #[test]
    fn a_holder_is_gone_after_a_reboot_or_when_its_process_ended() {
        let boot = |pid| HolderProcess::new(Some(pid), Some("boot-now".into()));
        let rebooted = judge(&HolderProcess::new(Some(42), Some("boot-then".into())));
        assert!(matches!(&rebooted, Liveness::Gone(r) if r.contains("restarted") && r.contains("boot-then")));
        let dead = judge(&boot(41));
        assert!(matches!(&dead, Liveness::Gone(r) if r.contains("process 41 is not running")), "{dead:?}");
        let zombie = judge(&boot(44));
        assert!(matches!(&zombie, Liveness::Gone(r) if r.contains("has exited")), "{zombie:?}");
        // Same pid, another start time: the pid was given to a later process.
        let reused = judge(&boot(42).with_start(Some(4000)));
        assert!(matches!(&reused, Liveness::Gone(r) if r.contains("same pid")), "{reused:?}");
        // Without a start time, a running process that is no mount program.
        assert!(matches!(judge(&boot(43)), Liveness::Gone(_)));
    }

    #[test]
    fn a_running_holder_is_alive() {
        let boot = |pid| HolderProcess::new(Some(pid), Some("boot-now".into()));
        assert!(matches!(judge(&boot(42).with_start(Some(5000))), Liveness::Alive(r) if r.contains("42")));
        assert!(matches!(judge(&boot(42)), Liveness::Alive(_)));
        // The same program as the one asking (a library user's, a test's).
        assert!(matches!(judge(&boot(45)), Liveness::Alive(_)));
        assert!(matches!(judge(&HolderProcess::new(Some(42), None)), Liveness::Alive(_)));
    }

    #[test]
    fn nothing_proves_an_unknown_holder_gone() {
        assert!(matches!(judge(&HolderProcess::default()), Liveness::Unknown(_)));
        let other_machine =
            HolderProcess::new(Some(41), Some("boot-x".into())).with_machine_id(Some("machine-b".into()));
        assert!(matches!(judge(&other_machine), Liveness::Unknown(r) if r.contains("another machine")));
        let other_ns = HolderProcess::new(Some(41), Some("boot-now".into())).with_pid_ns(Some(8));
        assert!(matches!(judge(&other_ns), Liveness::Unknown(r) if r.contains("namespace")));
        assert!(matches!(judge(&HolderProcess::new(None, Some("boot-now".into()))), Liveness::Unknown(_)));
        let blind = holder_liveness_with(
            &HolderProcess::new(Some(41), Some("boot-now".into())),
            &HolderProcess::new(Some(100), None),
            None,
            &table,
        );
        assert!(matches!(blind, Liveness::Unknown(_)));
    }

    #[test]
    fn stat_lines_parse_and_garbage_does_not() {
        let line =
            "26323 (cat) R 26318 26318 22417 0 -1 4194304 99 0 0 0 0 0 0 0 20 0 1 0 440894 3133440 407";
        assert_eq!(ProcessState::parse(line), Some(ProcessState::new("cat", 440_894, false)));
        let odd = "7 (a) b (c)) Z 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 12 0 0";
        assert_eq!(ProcessState::parse(odd), Some(ProcessState::new("a) b (c)", 12, true)));
        for bad in [
            "",
            "12",
            "1 (x",
            "1 x) R",
            ")(",
            "1 (x) R 1 2",
            "1 (x) R 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 z",
        ] {
            assert_eq!(ProcessState::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn this_process_is_known_and_alive() {
        let me = HolderProcess::current();
        assert_eq!(me.pid, Some(std::process::id()));
        if me.boot_id.is_some() && me.start.is_some() {
            assert!(matches!(holder_liveness(&me), Liveness::Alive(_)), "{me:?}");
        }
    }
}
