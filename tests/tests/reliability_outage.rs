//! Server outage: the S3 server (a Garage of this test's own, so no other
//! test is disturbed) is killed for 20 seconds in the middle of an ext4
//! workload on the mount, then started again on the same ports and data.
//! I/O stalls, then resumes; the mount's log (without `--debug`) says the
//! store is unreachable and that it is retrying; after a clean unmount and
//! a remount, `e2fsck -fn` is clean and every file's checksum matches.
//!
//! Why kill and restart rather than SIGSTOP: a stopped process keeps its
//! listening socket, so the kernel still accepts connections and requests
//! just hang until the client's timeout: that is a hung server. A crashed
//! or restarting server, or one whose host is down, refuses connections,
//! which is the outage users meet; restarting on the same data directory
//! also checks that the server comes back with what it had stored.

#![allow(clippy::unwrap_used)] // a failed step should stop the test loudly

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use s3block_testkit::kernel::{
    FsMount, Loop, Mount, checksum, fuse_command, kernel_available, mkfs_ext4, pattern, run, run_output,
    seeded_rng,
};
use s3block_testkit::{S3Env, in_ci, unique_prefix};

const FUSE: &str = env!("CARGO_BIN_EXE_rel-s3block-fuse");
const TOOLS: &[&str] = &["losetup", "mkfs.ext4", "e2fsck", "mount", "umount"];

/// A Garage server of this test's own (`scripts/garage.sh` with a private
/// state directory); stopped and its data deleted on drop.
struct OwnGarage {
    state: PathBuf,
    env: S3Env,
    restarted: Option<Child>,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/garage.sh")
}

impl OwnGarage {
    /// Starts it, or returns `None` (after saying why) when Garage is not
    /// installed and not under CI.
    fn start() -> Option<OwnGarage> {
        let state = std::env::temp_dir().join(format!("s3block-rel-outage-{}", std::process::id()));
        let out = Command::new(script()).arg("start").env("S3BLOCK_GARAGE_STATE", &state).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            let message = format!("cannot start a Garage of this test's own: {stderr}");
            assert!(!in_ci() && stderr.contains("not installed"), "{message}");
            eprintln!("SKIPPED (not under CI): {message}");
            return None;
        }
        let text = std::fs::read_to_string(state.join("env")).unwrap();
        let vars: BTreeMap<String, String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("export ")?.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let env = S3Env::from_lookup(|name| vars.get(name).cloned()).expect("the env file has every setting");
        Some(OwnGarage { state, env, restarted: None })
    }

    fn pid(&self) -> u32 {
        std::fs::read_to_string(self.state.join("garage.pid")).unwrap().trim().parse().unwrap()
    }

    /// `kill -9` of the server; returns the program path, to start it again.
    fn kill(&mut self) -> PathBuf {
        let pid = self.pid();
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
        run("kill", &["-9", &pid.to_string()]);
        if let Some(mut child) = self.restarted.take() {
            let _ = child.wait();
        }
        while Path::new(&format!("/proc/{pid}")).exists() {
            std::thread::sleep(Duration::from_millis(50));
        }
        exe
    }

    /// Starts the server again with the same configuration (ports, data).
    fn restart(&mut self, exe: &Path) {
        let log = std::fs::OpenOptions::new().append(true).open(self.state.join("garage.log")).unwrap();
        let child = Command::new(exe)
            .arg("-c")
            .arg(self.state.join("garage.toml"))
            .arg("server")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        std::fs::write(self.state.join("garage.pid"), format!("{}\n", child.id())).unwrap();
        self.restarted = Some(child);
        let addr = self.env.endpoint.trim_start_matches("http://").to_owned();
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "the restarted Garage does not listen on {addr}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for OwnGarage {
    fn drop(&mut self) {
        let _ = Command::new(script()).arg("stop").env("S3BLOCK_GARAGE_STATE", &self.state).output();
        if let Some(mut child) = self.restarted.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn mount(env: &S3Env, url: &str, args: &[&str]) -> Mount {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = fuse_command(FUSE, url, dir.path(), args);
    cmd.arg(format!("--endpoint={}", env.endpoint))
        .env("AWS_ACCESS_KEY_ID", &env.access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", &env.secret_access_key)
        .env("AWS_REGION", &env.region);
    Mount::spawn(cmd, dir)
}

/// A file written and fsync'd: its name, checksum, and when the fsync returned.
type Done = (String, u64, Instant);

/// Writes and fsyncs files until `stop`; records each one once durable.
fn writer(root: &Path, stop: &AtomicBool, done: &Mutex<Vec<Done>>) {
    let mut rng = seeded_rng(99);
    let mut i = 0;
    while !stop.load(Ordering::SeqCst) {
        let name = format!("d{:02}/f{i:05}", i / 100);
        std::fs::create_dir_all(root.join(format!("d{:02}", i / 100))).unwrap();
        let data = pattern(rng.random(), 1 + rng.random_range(0..200_000) as usize);
        let mut f = std::fs::File::create(root.join(&name)).unwrap();
        f.write_all(&data).unwrap();
        f.sync_all().unwrap_or_else(|e| panic!("fsync of {name} failed during the outage: {e}"));
        done.lock().unwrap().push((name, checksum(&data), Instant::now()));
        i += 1;
    }
}

#[test]
fn garage_down_for_20_seconds_stalls_then_resumes() {
    if !kernel_available(TOOLS) {
        return;
    }
    let Some(mut garage) = OwnGarage::start() else { return };
    let env = garage.env.clone();
    let outage: u64 = std::env::var("S3BLOCK_OUTAGE_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let url = format!("s3://{}/{}", env.bucket, unique_prefix("outage"));

    let fuse = mount(&env, &url, &["--size=256M", "--block-size=64K", "--cache-size=16M"]);
    let lo = Loop::attach(&fuse.file());
    mkfs_ext4(&lo.device);
    let fs = FsMount::mount(&lo.device);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(Mutex::new(Vec::<Done>::new()));
    let handle = {
        let (root, stop, done) = (fs.path().to_owned(), stop.clone(), done.clone());
        std::thread::spawn(move || writer(&root, &stop, &done))
    };
    let count = || done.lock().unwrap().len();
    let wait_for = |n: usize, limit: u64| {
        let deadline = Instant::now() + Duration::from_secs(limit);
        while count() < n {
            assert!(!handle.is_finished(), "the writer stopped (see its panic above)");
            assert!(Instant::now() < deadline, "the workload stalled at {} files", count());
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for(30, 60);

    let exe = garage.kill();
    let down = Instant::now();
    std::thread::sleep(Duration::from_secs(outage));
    let during = done.lock().unwrap().iter().filter(|d| d.2 > down + Duration::from_secs(3)).count();
    garage.restart(&exe);
    let up = Instant::now();
    let before = count();
    wait_for(before + 30, 120);
    let resumed_after = done.lock().unwrap().iter().find(|d| d.2 > up).map(|d| d.2 - up).unwrap();
    stop.store(true, Ordering::SeqCst);
    handle.join().unwrap();

    let log = fuse.log();
    assert_eq!(during, 0, "{during} files were fsync'd while the server was down");
    assert!(
        log.contains("unreachable") && log.contains("retrying"),
        "the log does not say the store is unreachable and retrying:\n{log}"
    );
    fs.unmount();
    lo.detach();
    fuse.unmount();

    // From the bucket alone: fsck clean, every file intact.
    let fuse = mount(&env, &url, &[]);
    let lo = Loop::attach(&fuse.file());
    let fsck = run_output("e2fsck", &["-fn", &lo.device]);
    assert!(fsck.status.success(), "e2fsck -fn:\n{}", String::from_utf8_lossy(&fsck.stdout));
    let fs = FsMount::mount(&lo.device);
    let files = done.lock().unwrap().clone();
    let mut bytes = 0;
    for (name, sum, _) in &files {
        let data = std::fs::read(fs.path().join(name)).unwrap();
        assert_eq!(checksum(&data), *sum, "{name} differs after the outage");
        bytes += data.len();
    }
    fs.unmount();
    lo.detach();
    fuse.unmount();
    let warnings = log.lines().filter(|l| l.contains("unreachable")).count();
    eprintln!("first outage line: {}", log.lines().find(|l| l.contains("unreachable")).unwrap_or_default());
    eprintln!(
        "FIGURES outage: server down {outage}s; {} files fsync'd ({before} before it came back), none \
         during it; I/O resumed {:.1}s after restart; {warnings} unreachable/retrying log lines; \
         e2fsck -fn clean; {} files ({} MiB) verified",
        files.len(),
        resumed_after.as_secs_f32(),
        files.len(),
        bytes >> 20
    );
}
