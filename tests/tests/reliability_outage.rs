//! Store outage: the S3 server becomes unreachable in the middle of an
//! ext4 workload on the mount, then comes back. Store requests of a mount
//! retry without limit by default, so I/O stalls, then resumes, however
//! long the outage: for 20 seconds and for 3 minutes, no fsync fails, ext4
//! stays writable, blocks the cache holds are still read during the outage
//! (past the page cache), closing a handle opened read-only does not wait,
//! and the mount's log (without `--debug`) says once that the store is
//! unreachable, then once a minute how long it has been, then that it
//! answers again. After a clean unmount and a remount, `e2fsck -fn` is
//! clean and every file's checksum matches. With `--io-timeout 5`, an
//! fsync during an outage fails with EIO after about 5 seconds instead,
//! and the data is stored once the server is back.
//!
//! The outage: the mount talks to the shared test server through a TCP
//! proxy of the test's own ([`Proxy`]). Cutting it closes its listening
//! socket, so new connections are refused, and resets every open
//! connection: what the mount meets when the server crashed or is
//! restarting, or its host is down. Restoring it listens again on the same
//! port. (A stopped server, SIGSTOP, would be another fault: the kernel
//! still accepts its connections and requests hang until the client's
//! timeout.)
//!
//! Why not kill the server itself: the shared server serves the other
//! tests, and a server of each test's own, killed and started again on its
//! data, did not listen again within 60 s in 4 restarts of 6 on a loaded
//! 2-core machine (started by hand on the same data it listened in 2 s), so
//! the test failed for the test server's sake, not s3block's. Seen from the
//! mount, a kill and the proxy's cut are the same thing: refused
//! connections and reset ones; that a server comes back with what it
//! stored is the server's business.

#![allow(clippy::unwrap_used)] // a failed step should stop the test loudly

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use s3block_testkit::kernel::{
    FsMount, Loop, Mount, checksum, fuse_command, kernel_available, mkfs_ext4, pattern, run, run_output,
    seeded_rng,
};
use s3block_testkit::proxy::Proxy;
use s3block_testkit::{S3Env, s3_env, unique_prefix};

const FUSE: &str = env!("CARGO_BIN_EXE_rel-s3block-fuse");
const TOOLS: &[&str] = &["losetup", "mkfs.ext4", "e2fsck", "filefrag", "mount", "umount"];

/// The shared S3 test server behind a proxy of this test's own: the mount
/// talks to the proxy, which the test cuts and restores. `None` (after
/// saying why) when no server is configured and not under CI.
fn behind_a_proxy() -> Option<(S3Env, Proxy)> {
    let env = s3_env()?;
    let proxy = Proxy::start(&env.endpoint);
    let env = S3Env { endpoint: proxy.endpoint(), ..env };
    Some((env, proxy))
}

/// Mounts `url` of the server `env` (the proxy's endpoint).
fn mount(env: &S3Env, url: &str, args: &[&str]) -> Mount {
    mount_within(env, url, args, Duration::from_secs(180))
}

/// [`mount`] whose program must exit within `exit_limit` once asked.
fn mount_within(env: &S3Env, url: &str, args: &[&str], exit_limit: Duration) -> Mount {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = fuse_command(FUSE, url, dir.path(), args);
    cmd.arg(format!("--endpoint={}", env.endpoint))
        .env("AWS_ACCESS_KEY_ID", &env.access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", &env.secret_access_key)
        .env("AWS_REGION", &env.region);
    Mount::spawn_within(cmd, dir, Duration::from_secs(60), exit_limit)
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
    read_only_close: Duration,
    /// Connections open when the outage began, reset by it.
    resets: u64,
    log_lines: usize,
    reports: usize,
    bytes: usize,
}

/// Cuts the store off for `outage` seconds under the fsync'ing ext4
/// workload of a mount with no `--io-timeout`, restores it, and checks
/// everything the module docs say; returns the figures.
fn ext4_through_an_outage(name: &str, outage: u64) -> Option<Figures> {
    if !kernel_available(TOOLS) {
        return None;
    }
    let (env, proxy) = behind_a_proxy()?;
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

    proxy.cut();
    let down = Instant::now();
    let resets = proxy.resets();
    std::thread::sleep(Duration::from_secs(3));
    let started = Instant::now();
    let read = read_direct(&direct, offset, len);
    let cached_read = started.elapsed();
    assert_eq!(read, &expected[..len as usize], "a cached read differs during the outage");
    assert!(cached_read < Duration::from_secs(5), "a cached read took {cached_read:?} during the outage");
    // Closing a handle opened read-only does not wait for the store.
    let started = Instant::now();
    drop(direct);
    let read_only_close = started.elapsed();
    assert!(
        read_only_close < Duration::from_secs(2),
        "a read-only close took {read_only_close:?} in the outage"
    );
    std::thread::sleep(Duration::from_secs(outage).saturating_sub(down.elapsed()));
    assert!(!handle.is_finished(), "the writer stopped during the outage (see its panic above)");
    let during = done.lock().unwrap().iter().filter(|d| d.2 > down + Duration::from_secs(3)).count();
    proxy.restore();
    let up = Instant::now();
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
        read_only_close,
        resets,
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
        "FIGURES outage: server unreachable {outage}s ({} connections reset as it began); {} files \
         fsync'd ({} before it came back), none during it, no EIO; longest fsync stall {:.1}s; a cached \
         read took {:.3}s during it, a read-only close {:.3}s; I/O resumed {:.1}s after it came back; \
         {} log lines from unreachable to back ({} minute reports); ext4 rw; e2fsck -fn clean; {} files \
         ({} MiB) verified",
        f.resets,
        f.files,
        f.before,
        f.longest_stall.as_secs_f32(),
        f.cached_read.as_secs_f32(),
        f.read_only_close.as_secs_f32(),
        f.resumed_after.as_secs_f32(),
        f.log_lines,
        f.reports,
        f.files,
        f.bytes >> 20
    );
}

#[test]
fn store_unreachable_for_20_seconds_stalls_then_resumes() {
    let outage: u64 = std::env::var("S3BLOCK_OUTAGE_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    if let Some(f) = ext4_through_an_outage("outage", outage) {
        report(outage, &f);
    }
}

#[test]
fn store_unreachable_for_3_minutes_no_eio_ext4_stays_writable() {
    let outage: u64 =
        std::env::var("S3BLOCK_LONG_OUTAGE_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(180);
    if let Some(f) = ext4_through_an_outage("outage3m", outage) {
        report(outage, &f);
    }
}

/// Writes 64 KiB of `seed` at `offset` of the device file and fsyncs
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
    let Some((env, proxy)) = behind_a_proxy() else { return };
    let url = format!("s3://{}/{}", env.bucket, unique_prefix("iotimeout"));
    let fuse = mount(&env, &url, &["--size=64M", "--block-size=64K", "--io-timeout=5"]);
    let file = fuse.file();
    write_and_fsync(&file, 0, 1).1.unwrap();

    proxy.cut();
    let (took, r) = write_and_fsync(&file, 1 << 20, 2);
    let err = r.expect_err("an fsync past the I/O timeout must fail");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "EIO expected: {err}");
    assert!(
        took >= Duration::from_secs(4) && took <= Duration::from_secs(15),
        "EIO after {took:?}, not about 5 s"
    );
    let log = fuse.log();
    assert!(log.contains("retrying each request for up to 5.0s") && log.contains("gave up after"), "{log}");

    // Back: the block failed, not dropped; the next fsync (through a
    // handle opened read-only: fsync still stores) stores it.
    proxy.restore();
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
        "FIGURES io-timeout: --io-timeout 5, store unreachable: fsync returned EIO after {:.1}s; once \
         it was back the next fsync stored the block in {:.1}s; {} log lines say unreachable",
        took.as_secs_f32(),
        stored_after.as_secs_f32(),
        log.lines().filter(|l| l.contains("unreachable")).count()
    );
}

/// The fusectl file that aborts the FUSE connection of the mount at `dir`
/// (`/sys/fs/fuse/connections/MINOR/abort`). fusectl is mounted there when
/// it is not (as systemd does at boot); `None` (after saying why) when that
/// fails and not under CI.
fn abort_file(dir: &Path) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let connections = Path::new("/sys/fs/fuse/connections");
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    if !mounts.lines().any(|l| l.split_whitespace().nth(2) == Some("fusectl")) {
        let _ = run_output("mount", &["-t", "fusectl", "fusectl", connections.to_str().unwrap()]);
    }
    let dev = std::fs::metadata(dir).unwrap().dev();
    let minor = (dev & 0xff) | ((dev >> 12) & 0xfff_ff00);
    let file = connections.join(minor.to_string()).join("abort");
    if file.exists() {
        return Some(file);
    }
    let message = format!(
        "cannot run this kernel test: {} is missing (fusectl could not be mounted: mount -t fusectl \
         fusectl {})",
        file.display(),
        connections.display()
    );
    assert!(!s3block_testkit::in_ci(), "CI=true and {message}");
    eprintln!("SKIPPED (not under CI): {message}");
    None
}

/// A second SIGINT abandons even while the program waits for the requests
/// still in flight after the FUSE session ended. The connection is aborted
/// (fusectl) in the middle of an fsync that waits for the unreachable
/// store: the kernel ends the session, the program waits for that fsync,
/// and two SIGINTs make it exit at once (code 5, saying what is lost)
/// rather than when the store answers again.
#[test]
fn a_second_sigint_abandons_the_wait_for_requests_in_flight() {
    if !kernel_available(&["mount"]) {
        return;
    }
    let Some((env, proxy)) = behind_a_proxy() else { return };
    let url = format!("s3://{}/{}", env.bucket, unique_prefix("drain"));
    let mut fuse = mount_within(&env, &url, &["--size=64M", "--block-size=64K"], Duration::from_secs(10));
    let Some(abort) = abort_file(fuse.path()) else { return };
    write_and_fsync(&fuse.file(), 0, 1).1.unwrap();

    proxy.cut();
    let file = fuse.file();
    let fsync = std::thread::spawn(move || write_and_fsync(&file, 1 << 20, 2).1);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !fuse.log().contains("is unreachable: ") {
        assert!(Instant::now() < deadline, "the fsync never met the outage:\n{}", fuse.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::write(&abort, b"1").unwrap();
    let aborted = fsync.join().unwrap();
    assert!(aborted.is_err(), "the fsync of an aborted connection succeeded");
    std::thread::sleep(Duration::from_secs(1));
    let log = fuse.log();
    assert!(!log.contains("storing every written block"), "not waiting for the fsync in flight:\n{log}");

    fuse.signal("INT");
    std::thread::sleep(Duration::from_millis(300));
    fuse.signal("INT");
    let asked = Instant::now();
    let status = fuse.wait_exit();
    let took = asked.elapsed();
    let log = fuse.log();
    assert_eq!(status.code(), Some(5), "{log}");
    assert!(log.contains("a second SIGINT") && log.contains("abandoned at the user's request"), "{log}");
    eprintln!("FIGURES drain: a second SIGINT while an fsync waited for the store: exit 5 after {took:.1?}");
}
