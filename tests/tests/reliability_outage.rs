//! Server outage: the S3 server (a Garage of each test's own, on ports of
//! its own, so no other test is disturbed) is killed in the middle of an
//! ext4 workload on the mount, then started again on the same ports and
//! data. Store requests of a mount retry without limit by default, so I/O
//! stalls, then resumes, however long the outage: for 20 seconds and for 3
//! minutes, no fsync fails, ext4 stays writable, blocks the cache holds are
//! still read during the outage, and the mount's log (without `--debug`)
//! says once that the store is unreachable, then once a minute how long it
//! has been, then that it answers again. After a clean unmount and a
//! remount, `e2fsck -fn` is clean and every file's checksum matches. With
//! `--io-timeout 5`, an fsync during an outage fails with EIO after about
//! 5 seconds instead, and the data is stored once the server is back.
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
    fn start(name: &str) -> Option<OwnGarage> {
        let mut attempt = 0;
        let (state, out) = loop {
            attempt += 1;
            let state = std::env::temp_dir()
                .join(format!("s3block-rel-outage-{name}-{}-{attempt}", std::process::id()));
            let out =
                Command::new(script()).arg("start").env("S3BLOCK_GARAGE_STATE", &state).output().unwrap();
            // A start that crashed (a port taken meanwhile, on a busy machine) is tried again.
            if out.status.success()
                || attempt == 3
                || !String::from_utf8_lossy(&out.stderr).contains("exited during start")
            {
                break (state, out);
            }
            let _ = Command::new(script()).arg("stop").env("S3BLOCK_GARAGE_STATE", &state).output();
        };
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

    /// Starts the server again with the same configuration (ports, data);
    /// a start that crashes (seen on a busy machine) is tried again.
    fn restart(&mut self, exe: &Path) {
        let addr = self.env.endpoint.trim_start_matches("http://").to_owned();
        for attempt in 1..=3 {
            let log = std::fs::OpenOptions::new().append(true).open(self.state.join("garage.log")).unwrap();
            let mut child = Command::new(exe)
                .arg("-c")
                .arg(self.state.join("garage.toml"))
                .arg("server")
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(60);
            while std::net::TcpStream::connect(&addr).is_err() && child.try_wait().unwrap().is_none() {
                assert!(Instant::now() < deadline, "the restarted Garage does not listen on {addr}");
                std::thread::sleep(Duration::from_millis(100));
            }
            if let Some(status) = child.try_wait().unwrap() {
                let log = std::fs::read_to_string(self.state.join("garage.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                eprintln!("restart {attempt} of Garage exited ({status}):\n{}", tail.join("\n"));
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
            std::fs::write(self.state.join("garage.pid"), format!("{}\n", child.id())).unwrap();
            self.restarted = Some(child);
            return;
        }
        panic!("Garage did not start again on {addr}");
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

/// What one outage under ext4 showed.
struct Figures {
    files: usize,
    before: usize,
    resumed_after: Duration,
    longest_stall: Duration,
    cached_read: Duration,
    log_lines: usize,
    reports: usize,
    bytes: usize,
}

/// Kills the server for `outage` seconds under the fsync'ing ext4 workload
/// of a mount with no `--io-timeout`, restarts it, and checks everything
/// the module docs say; returns the figures.
fn ext4_through_an_outage(name: &str, outage: u64) -> Option<Figures> {
    if !kernel_available(TOOLS) {
        return None;
    }
    let mut garage = OwnGarage::start(name)?;
    let env = garage.env.clone();
    let url = format!("s3://{}/{}", env.bucket, unique_prefix(name));

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
    // The blocks of the last file fsync'd, read from the device past the
    // page cache: in the block cache, they must still be read in the outage.
    let last = fs.path().join(&done.lock().unwrap().last().unwrap().0);
    let expected = std::fs::read(&last).unwrap();
    let (offset, len) = first_extent(&last);
    let len = len.min(expected.len() as u64);
    let direct = open_direct(&fuse.file());
    assert_eq!(read_direct(&direct, offset, len), &expected[..len as usize], "the device holds another file");

    let exe = garage.kill();
    let down = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let started = Instant::now();
    let read = read_direct(&direct, offset, len);
    let cached_read = started.elapsed();
    assert_eq!(read, &expected[..len as usize], "a cached read differs during the outage");
    assert!(cached_read < Duration::from_secs(5), "a cached read took {cached_read:?} during the outage");
    std::thread::sleep(Duration::from_secs(outage).saturating_sub(down.elapsed()));
    assert!(!handle.is_finished(), "the writer stopped during the outage (see its panic above)");
    let during = done.lock().unwrap().iter().filter(|d| d.2 > down + Duration::from_secs(3)).count();
    garage.restart(&exe);
    let up = Instant::now();
    // Closed only now: a close of the device file flushes it, which waits for the store.
    drop(direct);
    let before = count();
    wait_for(before + 30, 120);
    let resumed_after = done.lock().unwrap().iter().find(|d| d.2 > up).map(|d| d.2 - up).unwrap();
    stop.store(true, Ordering::SeqCst);
    handle.join().unwrap();
    // ext4 met no I/O error: still mounted read-write, and takes a new file.
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let options = mounts
        .lines()
        .find(|l| l.split_whitespace().nth(1) == fs.path().to_str())
        .and_then(|l| l.split_whitespace().nth(3))
        .unwrap()
        .to_owned();
    assert!(options.split(',').any(|o| o == "rw"), "ext4 is mounted {options} after the outage");
    std::fs::write(fs.path().join("after"), b"still writable").unwrap();
    std::fs::File::open(fs.path().join("after")).unwrap().sync_all().unwrap();

    let times: Vec<Instant> = done.lock().unwrap().iter().map(|d| d.2).collect();
    let longest_stall = times.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    let log = fuse.log();
    assert_eq!(during, 0, "{during} files were fsync'd while the server was down");
    assert!(longest_stall >= Duration::from_secs(outage - 3), "fsync stalled at most {longest_stall:?}");
    // Said once, then once a minute, then back: no flood.
    let lines: Vec<&str> = log.lines().collect();
    let first = lines.iter().position(|l| l.contains("is unreachable: ")).unwrap_or_else(|| panic!("{log}"));
    let back = lines.iter().rposition(|l| l.contains("answers again")).unwrap_or_else(|| panic!("{log}"));
    assert!(
        lines[first].contains(&env.endpoint) && lines[first].contains("retrying without limit"),
        "{}",
        lines[first]
    );
    assert!(lines[back].contains("unreachable"), "{}", lines[back]);
    let reports = lines.iter().filter(|l| l.contains("has been unreachable for")).count();
    let minutes = outage as usize / 60;
    assert!(
        (minutes.saturating_sub(1)..=minutes + 1).contains(&reports),
        "{reports} reports for {outage}s:\n{log}"
    );
    let log_lines = back - first + 1;
    assert!(log_lines <= minutes + 6, "{log_lines} log lines during the outage:\n{log}");
    assert!(!log.contains("gave up") && !log.contains(" ERROR "), "{log}");
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
    assert_eq!(std::fs::read(fs.path().join("after")).unwrap(), b"still writable");
    fs.unmount();
    lo.detach();
    fuse.unmount();
    eprintln!("outage lines:\n  {}\n  {}", lines[first], lines[back]);
    Some(Figures {
        files: files.len(),
        before,
        resumed_after,
        longest_stall,
        cached_read,
        log_lines,
        reports,
        bytes,
    })
}

/// The first extent of `path` on its ext4 device: byte offset and length
/// (at most 64 KiB), from `filefrag -v` (which counts in filesystem blocks,
/// 1 KiB on a small ext4).
fn first_extent(path: &Path) -> (u64, u64) {
    let out = run("filefrag", &["-v", path.to_str().unwrap()]);
    // "File size of F is 243 (1 block of 1024 bytes)"
    let block: u64 = out
        .lines()
        .find(|l| l.starts_with("File size of"))
        .and_then(|l| l.rsplit(" of ").next())
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    let line = out.lines().find(|l| l.trim_start().starts_with("0:")).unwrap_or_else(|| panic!("{out}"));
    let fields: Vec<&str> = line.split(':').map(str::trim).collect();
    let start: u64 = fields[2].split("..").next().unwrap().trim().parse().unwrap();
    let blocks: u64 = fields[3].parse().unwrap();
    (start * block, (blocks * block).min(64 << 10))
}

/// The device file opened for reads that bypass the page cache.
fn open_direct(file: &Path) -> std::fs::File {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(file).unwrap()
}

/// `len` bytes at `offset`, read with O_DIRECT (in whole aligned pages).
fn read_direct(f: &std::fs::File, offset: u64, len: u64) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let first = offset / 4096 * 4096;
    let whole = ((offset + len).next_multiple_of(4096) - first) as usize;
    let mut buf = vec![0u8; whole + 4096];
    let at = buf.as_ptr().align_offset(4096);
    f.read_exact_at(&mut buf[at..at + whole], first).unwrap();
    let skip = at + (offset - first) as usize;
    buf[skip..skip + len as usize].to_vec()
}

fn report(outage: u64, f: &Figures) {
    eprintln!(
        "FIGURES outage: server down {outage}s; {} files fsync'd ({} before it came back), none during \
         it, no EIO; longest fsync stall {:.1}s; a cached read took {:.3}s during it; I/O resumed \
         {:.1}s after restart; {} log lines from unreachable to back ({} minute reports); ext4 rw; \
         e2fsck -fn clean; {} files ({} MiB) verified",
        f.files,
        f.before,
        f.longest_stall.as_secs_f32(),
        f.cached_read.as_secs_f32(),
        f.resumed_after.as_secs_f32(),
        f.log_lines,
        f.reports,
        f.files,
        f.bytes >> 20
    );
}

#[test]
fn garage_down_for_20_seconds_stalls_then_resumes() {
    let outage: u64 = std::env::var("S3BLOCK_OUTAGE_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    if let Some(f) = ext4_through_an_outage("outage", outage) {
        report(outage, &f);
    }
}

#[test]
fn garage_down_for_3_minutes_no_eio_ext4_stays_writable() {
    let outage: u64 =
        std::env::var("S3BLOCK_LONG_OUTAGE_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(180);
    if let Some(f) = ext4_through_an_outage("outage3m", outage) {
        report(outage, &f);
    }
}

/// Writes `len` bytes of `seed` at `offset` of the device file and fsyncs
/// them; returns how long the fsync took and its result.
fn write_and_fsync(file: &Path, offset: u64, seed: u64) -> (Duration, std::io::Result<()>) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    f.write_all_at(&pattern(seed, 64 << 10), offset).unwrap();
    let started = Instant::now();
    let r = f.sync_all();
    (started.elapsed(), r)
}

#[test]
fn with_io_timeout_5_an_outage_fails_fsync_with_eio_in_time() {
    if !kernel_available(&[]) {
        return;
    }
    let Some(mut garage) = OwnGarage::start("iotimeout") else { return };
    let env = garage.env.clone();
    let url = format!("s3://{}/{}", env.bucket, unique_prefix("iotimeout"));
    let fuse = mount(&env, &url, &["--size=64M", "--block-size=64K", "--io-timeout=5"]);
    let file = fuse.file();
    write_and_fsync(&file, 0, 1).1.unwrap();

    let exe = garage.kill();
    let (took, r) = write_and_fsync(&file, 1 << 20, 2);
    let err = r.expect_err("an fsync past the I/O timeout must fail");
    assert_eq!(err.raw_os_error(), Some(5), "EIO expected: {err}");
    assert!(
        took >= Duration::from_secs(4) && took <= Duration::from_secs(15),
        "EIO after {took:?}, not about 5 s"
    );
    let log = fuse.log();
    assert!(log.contains("retrying each request for up to 5.0s") && log.contains("gave up after"), "{log}");

    // Back: the block failed, not dropped; the next fsync stores it.
    garage.restart(&exe);
    let started = Instant::now();
    let f = std::fs::File::open(&file).unwrap();
    f.sync_all().unwrap();
    let stored_after = started.elapsed();
    drop(f);
    let log = fuse.unmount();
    let fuse = mount(&env, &url, &[]);
    let data = std::fs::read(fuse.file()).unwrap();
    assert_eq!(checksum(&data[1 << 20..(1 << 20) + (64 << 10)]), checksum(&pattern(2, 64 << 10)));
    fuse.unmount();
    eprintln!(
        "FIGURES io-timeout: --io-timeout 5, server killed: fsync returned EIO after {:.1}s; after the \
         restart the next fsync stored the block in {:.1}s; {} log lines say unreachable",
        took.as_secs_f32(),
        stored_after.as_secs_f32(),
        log.lines().filter(|l| l.contains("unreachable")).count()
    );
}
