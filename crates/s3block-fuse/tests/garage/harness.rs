//! Guards and helpers for the Garage tests: a mounted s3block-fuse, a loop
//! device, a mounted filesystem, each undone on drop (so a failing test
//! leaves nothing mounted or attached), and a count of the bucket's blocks.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use object_store::ObjectStore;
use s3block_tests::S3Env;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_s3block-fuse");

/// Everything these tests need, or `None` (after saying why) when not under
/// CI; under `CI=true` a missing piece fails the test, naming it.
pub(crate) fn setup(tools: &[&str]) -> Option<S3Env> {
    let mut missing = Vec::new();
    if !Path::new("/dev/fuse").exists() {
        missing.push("/dev/fuse".to_string());
    }
    for tool in ["fusermount3"].iter().chain(tools) {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            missing.push(format!("{tool} (not on PATH)"));
        }
    }
    if !missing.is_empty() {
        let message = format!("cannot run this FUSE test: missing {}", missing.join(", "));
        assert!(!s3block_tests::in_ci(), "CI=true and {message}");
        eprintln!("SKIPPED (not under CI): {message}");
        return None;
    }
    s3block_tests::s3_env()
}

/// A new volume URL in the test bucket, under a prefix of its own.
pub(crate) fn volume_url(env: &S3Env, name: &str) -> (String, String) {
    let prefix = s3block_tests::unique_prefix(name);
    (format!("s3://{}/{}", env.bucket, prefix), prefix)
}

pub(crate) fn is_mounted(dir: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let dir = dir.to_str().expect("temp dir path is UTF-8");
    mounts.lines().any(|l| l.split(' ').nth(4) == Some(dir))
}

fn command(env: &S3Env, url: &str, dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("-f")
        .arg(format!("--endpoint={}", env.endpoint))
        .args(args)
        .arg(url)
        .arg(dir)
        .env("AWS_ACCESS_KEY_ID", &env.access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", &env.secret_access_key)
        .env("AWS_REGION", &env.region)
        .env_remove("S3BLOCK_PREFIX")
        .stdin(Stdio::null());
    cmd
}

/// A mount that must fail: its exit status and standard error.
pub(crate) fn mount_fails(env: &S3Env, url: &str, args: &[&str]) -> Output {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = command(env, url, dir.path(), args).output().expect("run s3block-fuse");
    if is_mounted(dir.path()) {
        let _ = Command::new("fusermount3").arg("-uz").arg(dir.path()).status();
        panic!("the mount was expected to fail but is up");
    }
    out
}

/// A running s3block-fuse; unmounts and kills whatever is left on drop.
pub(crate) struct Mount {
    dir: tempfile::TempDir,
    child: Option<Child>,
    log: PathBuf,
}

impl Mount {
    pub(crate) fn start(env: &S3Env, url: &str, args: &[&str]) -> Mount {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().with_extension("log");
        let child = command(env, url, dir.path(), args)
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start s3block-fuse");
        let mut mount = Mount { dir, child: Some(child), log };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !is_mounted(mount.path()) {
            if let Some(status) = mount.child().try_wait().expect("poll child") {
                panic!("s3block-fuse exited with {status} before mounting:\n{}", mount.log());
            }
            assert!(Instant::now() < deadline, "not mounted after 60s:\n{}", mount.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        mount
    }

    fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("the process is still running")
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn file(&self) -> PathBuf {
        self.dir.path().join("file")
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().expect("the process is still running").id()
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) fn signal(&self, name: &str) {
        let ok = Command::new("kill").arg(format!("-{name}")).arg(self.pid().to_string()).status();
        assert!(ok.is_ok_and(|s| s.success()), "kill -{name} failed");
    }

    /// Waits for the process to exit (up to two minutes).
    pub(crate) fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = self.child().try_wait().expect("poll child") {
                self.child = None;
                return status;
            }
            assert!(Instant::now() < deadline, "s3block-fuse did not exit:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Unmounts with fusermount3 and waits for a clean exit.
    pub(crate) fn unmount(mut self) -> String {
        let out = Command::new("fusermount3").arg("-u").arg(self.path()).output().expect("fusermount3");
        assert!(out.status.success(), "fusermount3 -u: {}", String::from_utf8_lossy(&out.stderr));
        let status = self.wait_exit();
        let log = self.log();
        assert!(status.success(), "exit {status}:\n{log}");
        assert!(log.contains("every block is stored"), "{log}");
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
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Runs a command that must succeed; returns its standard output.
pub(crate) fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A loop device over a file; detached on drop.
pub(crate) struct Loop {
    pub(crate) device: String,
}

impl Loop {
    pub(crate) fn attach(file: &Path) -> Loop {
        let file = file.to_str().expect("UTF-8 path");
        Loop { device: run("losetup", &["-f", "--show", file]).trim().to_owned() }
    }

    pub(crate) fn detach(mut self) {
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

/// A filesystem mounted on a device; unmounted on drop.
pub(crate) struct FsMount {
    pub(crate) dir: tempfile::TempDir,
    mounted: bool,
}

impl FsMount {
    pub(crate) fn mount(device: &str) -> FsMount {
        let dir = tempfile::tempdir().expect("temp dir");
        run("mount", &["-t", "ext4", device, dir.path().to_str().expect("UTF-8 path")]);
        FsMount { dir, mounted: true }
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn unmount(mut self) {
        run("umount", &[self.dir.path().to_str().expect("UTF-8 path")]);
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

/// The block objects stored under `prefix` (keys ending in 8 hex digits),
/// and whether the mount lock object is there.
pub(crate) fn stored_objects(env: &S3Env, prefix: &str) -> (usize, bool) {
    let store = env.store();
    let root = object_store::path::Path::from(prefix.trim_end_matches('/'));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let keys: Vec<String> = runtime
        .block_on(async { store.list(Some(&root)).map_ok(|m| m.location.to_string()).try_collect().await })
        .expect("list the test prefix");
    let blocks = keys
        .iter()
        .filter(|k| {
            let name = k.rsplit('/').next().unwrap_or("");
            name.len() == 8 && name.bytes().all(|b| b.is_ascii_hexdigit())
        })
        .count();
    (blocks, keys.iter().any(|k| k.ends_with("s3backer-mounted")))
}

/// Deterministic bytes, different for each `seed`; never all zero.
pub(crate) fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A 64-bit FNV-1a checksum.
pub(crate) fn checksum(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}
