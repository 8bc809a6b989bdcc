//! Real-kernel helpers for the reliability tests: a running mount program,
//! a loop device and a mounted filesystem, each undone on drop (so a failing
//! or crashing test leaves nothing mounted or attached), plus the checks
//! every test makes on what the user sees.
//!
//! The program paths are passed in (`env!("CARGO_BIN_EXE_rel-s3block-fuse")`
//! in the integration tests): this package builds the mount program and the
//! `s3block` command as its own binaries, so the tests always run this tree.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

use crate::in_ci;

/// True when the kernel tests can run here: /dev/fuse and every tool in
/// `tools` (plus fusermount3) exist. Otherwise prints what is missing and
/// returns false, except under `CI=true`, where it panics naming it.
pub fn kernel_available(tools: &[&str]) -> bool {
    let mut missing = Vec::new();
    if !Path::new("/dev/fuse").exists() {
        missing.push("/dev/fuse".to_owned());
    }
    for tool in ["fusermount3"].iter().chain(tools) {
        if !on_path(tool) {
            missing.push(format!("{tool} (not on PATH)"));
        }
    }
    if missing.is_empty() {
        return true;
    }
    let message = format!("cannot run this kernel test: missing {}", missing.join(", "));
    assert!(!in_ci(), "CI=true and {message}");
    eprintln!("SKIPPED (not under CI): {message}");
    false
}

/// Whether `program` is found on `PATH`.
pub fn on_path(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether `dir` is a mount point (from /proc/self/mountinfo, read by the
/// same parser as the mount program's: [`s3block_core::is_mount_point`]).
pub fn is_mounted(dir: &Path) -> bool {
    s3block_core::is_mount_point(dir)
}

/// Asserts that a program's standard error shows no panic.
pub fn assert_no_panic(what: &str, stderr: &str) {
    assert!(!stderr.contains("panicked"), "{what} panicked:\n{stderr}");
}

/// The mount program's command line: foreground, `args`, `url`, `dir`; the
/// fault-injection, prefix, log and systemd variables of the test's own
/// environment removed (a test sets what it means to test).
pub fn fuse_command(bin: &str, url: &str, dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg("-f")
        .args(args)
        .arg(url)
        .arg(dir)
        .env_remove("S3BLOCK_INJECT_FAULTS")
        .env_remove("S3BLOCK_PREFIX")
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null());
    cmd
}

/// A running mount program; on drop, unmounts lazily and kills what is left.
#[derive(Debug)]
pub struct Mount {
    dir: tempfile::TempDir,
    child: Option<Child>,
    log: PathBuf,
    exit_limit: Duration,
}

impl Mount {
    /// Starts `cmd` (made by [`fuse_command`] with `dir`), its standard error
    /// going to a log file, and waits until `dir` is mounted.
    ///
    /// # Panics
    /// When the program exits first or is not mounted in 60 s (with its log).
    pub fn spawn(cmd: Command, dir: tempfile::TempDir) -> Mount {
        Mount::spawn_within(cmd, dir, Duration::from_secs(60), Duration::from_secs(180))
    }

    /// [`Mount::spawn`] with the time the program has to mount and, in
    /// [`Mount::wait_exit`], to exit.
    ///
    /// # Panics
    /// When the program exits first or is not mounted within `mount_limit`.
    pub fn spawn_within(
        mut cmd: Command,
        dir: tempfile::TempDir,
        mount_limit: Duration,
        exit_limit: Duration,
    ) -> Mount {
        let log = dir.path().with_extension("log");
        let file = std::fs::File::create(&log).expect("create the mount log");
        let child = cmd.stderr(file).spawn().expect("start the mount program");
        let mut mount = Mount { dir, child: Some(child), log, exit_limit };
        let deadline = Instant::now() + mount_limit;
        while !is_mounted(mount.path()) {
            if let Some(status) = mount.child_mut().try_wait().expect("poll the mount program") {
                mount.child = None;
                panic!("the mount program exited with {status} before mounting:\n{}", mount.log());
            }
            assert!(Instant::now() < deadline, "not mounted after {mount_limit:?}:\n{}", mount.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        mount
    }

    fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("the mount program is still running")
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The device file.
    pub fn file(&self) -> PathBuf {
        self.dir.path().join("file")
    }

    /// The process id of the mount program.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the mount program is still running").id()
    }

    /// What the program wrote to standard error so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The stats file's value of the line starting with `name` (0 if absent).
    pub fn stat(&self, name: &str) -> u64 {
        let text = std::fs::read_to_string(self.path().join("stats")).unwrap_or_default();
        text.lines()
            .filter_map(|l| l.trim().strip_prefix(name))
            .filter_map(|rest| rest.split_whitespace().next())
            .find_map(|n| n.replace(',', "").parse().ok())
            .unwrap_or(0)
    }

    /// Sends the signal `name` (`TERM`, `INT`, ...) to the mount program.
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill").arg(format!("-{name}")).arg(self.pid().to_string()).status();
        assert!(ok.is_ok_and(|s| s.success()), "kill -{name} failed");
    }

    /// `kill -9`: the process dies at once, with whatever it had not stored.
    pub fn kill9(&mut self) {
        let child = self.child_mut();
        child.kill().expect("SIGKILL the mount program");
        let _ = child.wait();
        self.child = None;
    }

    /// Waits for the process to exit (up to three minutes, or the exit limit
    /// given to [`Mount::spawn_within`]).
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + self.exit_limit;
        loop {
            if let Some(status) = self.child_mut().try_wait().expect("poll the mount program") {
                self.child = None;
                return status;
            }
            assert!(Instant::now() < deadline, "the mount program did not exit:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Unmounts with `fusermount3 -u`, waits for exit 0 with every block
    /// stored and no panic; returns the log.
    pub fn unmount(mut self) -> String {
        let out = fusermount_u(self.path());
        assert!(out.status.success(), "fusermount3 -u: {}", String::from_utf8_lossy(&out.stderr));
        let status = self.wait_exit();
        let log = self.log();
        assert!(status.success(), "exit {status}:\n{log}");
        assert!(log.contains("every block is stored"), "{log}");
        assert_no_panic("the mount program", &log);
        log
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if is_mounted(self.dir.path()) {
            let _ = Command::new("fusermount3").arg("-uz").arg(self.dir.path()).status();
        }
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("mount log {}:\n{}", self.log.display(), self.log());
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Runs a program that must succeed; returns its standard output.
///
/// # Panics
/// When it cannot start or fails, with its output.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = run_output(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a program, whatever its exit status.
pub fn run_output(program: &str, args: &[&str]) -> Output {
    Command::new(program).args(args).output().unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

/// A loop device over a file; detached on drop.
#[derive(Debug)]
pub struct Loop {
    /// `/dev/loopN`.
    pub device: String,
}

impl Loop {
    /// `losetup -f --show file`.
    pub fn attach(file: &Path) -> Loop {
        let file = file.to_str().expect("UTF-8 path");
        Loop { device: run("losetup", &["-f", "--show", file]).trim().to_owned() }
    }

    /// `losetup -d`, which must succeed.
    pub fn detach(mut self) {
        run("losetup", &["-d", &self.device]);
        self.device.clear();
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        if !self.device.is_empty() {
            let _ = Command::new("losetup").args(["-d", &self.device]).status();
        }
    }
}

/// An ext4 filesystem mounted on a device; unmounted on drop (lazily if busy).
#[derive(Debug)]
pub struct FsMount {
    dir: tempfile::TempDir,
    mounted: bool,
}

impl FsMount {
    /// Mounts the ext4 filesystem on `device`.
    pub fn mount(device: &str) -> FsMount {
        let dir = tempfile::tempdir().expect("temp dir");
        run("mount", &["-t", "ext4", device, dir.path().to_str().expect("UTF-8 path")]);
        FsMount { dir, mounted: true }
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `umount`, which must succeed.
    pub fn unmount(mut self) {
        run("umount", &[self.dir.path().to_str().expect("UTF-8 path")]);
        self.mounted = false;
    }

    /// `umount -l`: detaches at once even when the device below is dead.
    pub fn unmount_lazy(mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
        self.mounted = false;
    }
}

impl Drop for FsMount {
    fn drop(&mut self) {
        if self.mounted {
            let path = self.dir.path().to_owned();
            if Command::new("umount").arg(&path).status().map_or(true, |s| !s.success()) {
                let _ = Command::new("umount").arg("-l").arg(&path).status();
            }
        }
    }
}

/// `mkfs.ext4` with every table written now (no lazy init behind the test's back).
pub fn mkfs_ext4(device: &str) {
    run("mkfs.ext4", &["-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", device]);
}

/// Deterministic bytes, different for each `seed`.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut data = vec![0; len];
    seeded_rng(seed).fill_bytes(&mut data);
    data
}

/// A 64-bit FNV-1a checksum.
pub fn checksum(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// A random number generator seeded with `seed`, so a workload replays from
/// its seed (use it through [`rand::Rng`]: `random`, `random_range`).
pub fn seeded_rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// An ext4 workload for crash tests: writes files of random sizes (up to
/// 100 KB) under `root/run{run}/`, fsyncs each one and its directory, and
/// only then sends its name and [`checksum`] on `sent`, until a write fails
/// (the mount died) or `sent` is closed. While `pause` is set it stops
/// between two files and sets `paused`.
pub fn fsync_writer(
    root: &Path,
    run: u64,
    sent: std::sync::mpsc::Sender<(String, u64)>,
    pause: &std::sync::atomic::AtomicBool,
    paused: &std::sync::atomic::AtomicBool,
) {
    use std::io::Write as _;
    use std::sync::atomic::Ordering;
    let dir = root.join(format!("run{run}"));
    if std::fs::create_dir(&dir).is_err() {
        return;
    }
    let mut rng = seeded_rng(run * 1000 + 1);
    for i in 0.. {
        while pause.load(Ordering::SeqCst) {
            paused.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(10));
        }
        paused.store(false, Ordering::SeqCst);
        let name = format!("run{run}/f{i:05}");
        let data = pattern(rng.random(), 1 + rng.random_range(0..100_000) as usize);
        let durable = (|| -> std::io::Result<()> {
            let mut f = std::fs::File::create(root.join(&name))?;
            f.write_all(&data)?;
            f.sync_all()?;
            std::fs::File::open(&dir)?.sync_all()
        })();
        if durable.is_err() || sent.send((name, checksum(&data))).is_err() {
            return;
        }
    }
}

/// Every file in `files` (name → [`checksum`], relative to `root`) is
/// there with its bytes; returns how many bytes were checked.
///
/// # Panics
/// Naming the first file missing or different.
pub fn check_files<'a>(root: &Path, files: impl IntoIterator<Item = (&'a String, &'a u64)>) -> u64 {
    let mut bytes = 0;
    for (name, sum) in files {
        let data = std::fs::read(root.join(name))
            .unwrap_or_else(|e| panic!("{name} was fsync'd before the crash but cannot be read: {e}"));
        assert_eq!(checksum(&data), *sum, "{name} was fsync'd before the crash but its bytes differ");
        bytes += data.len() as u64;
    }
    bytes
}

/// Seconds a bounded workload runs: `S3BLOCK_RELIABILITY_SECS`, else `default`.
pub fn workload_secs(default: u64) -> u64 {
    std::env::var("S3BLOCK_RELIABILITY_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// `fusermount3 -u`, tried again for up to five seconds while the kernel
/// says the mount is busy: the tests of one binary run in parallel threads,
/// and a child process another test starts holds a copy of every open
/// descriptor between its fork and its exec, an instant in which a file this
/// test has just closed still pins the mount.
pub fn fusermount_u(path: &Path) -> Output {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = Command::new("fusermount3").arg("-u").arg(path).output().expect("run fusermount3");
        let busy = String::from_utf8_lossy(&out.stderr).contains("Device or resource busy");
        if out.status.success() || !busy || Instant::now() >= deadline {
            return out;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
