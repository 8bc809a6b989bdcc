//! Crash: `kill -9` of the mount program during an ext4 workload that
//! fsyncs each file it writes and logs the file's checksum once the fsync
//! returned. The next mount takes over the stale lock by itself (its holder,
//! on this host, no longer runs) and says so in its log; no one runs
//! `s3block unlock`. The test runs `e2fsck -y`, and every file logged
//! before the kill must be intact.
//!
//! Five crashes (`S3BLOCK_CRASH_RUNS` for more) at seeded kill points, on
//! one volume: each run also re-checks every file of the runs before it.
//! The volume is a local directory (`file://`), so only the kernel is needed.

#![allow(clippy::unwrap_used)] // a failed step should stop the test loudly

use std::collections::BTreeMap;
use std::io::Write;
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rand::Rng;
use s3block_testkit::kernel::{
    FsMount, Loop, Mount, assert_no_panic, check_files, fsync_writer, fuse_command, kernel_available,
    mkfs_ext4, seeded_rng,
};

const FUSE: &str = env!("CARGO_BIN_EXE_rel-s3block-fuse");
const TOOLS: &[&str] = &["losetup", "mkfs.ext4", "e2fsck", "mount", "umount"];

/// Mounts the crashed volume: the killed mount's lock names this host and
/// a process that no longer runs, so the new mount takes it over by itself
/// (no `s3block unlock`), and its log says whose lock it took and why.
fn mount_after_crash(url: &str) -> Mount {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mount = Mount::spawn(fuse_command(FUSE, url, dir.path(), &[]), dir);
    let log = mount.log();
    let Some(line) = log.lines().find(|l| l.contains("took over the stale mount lock")) else {
        panic!("the mount after the crash does not say it took over the stale lock:\n{log}");
    };
    assert!(line.contains("is not running"), "the takeover does not say why: {line}");
    assert_no_panic("the mount after the crash", &log);
    eprintln!("mounted in {:.1}s: {line}", started.elapsed().as_secs_f32());
    mount
}

/// `e2fsck -y`: repairs what the crash left; fails the test only when
/// errors are left uncorrected (exit status 4 or more).
fn fsck_repair(device: &str) -> i32 {
    let out = Command::new("e2fsck").args(["-fy", device]).output().unwrap();
    let code = out.status.code().unwrap_or(8);
    assert!(code < 4, "e2fsck -fy left errors ({code}):\n{}", String::from_utf8_lossy(&out.stdout));
    code
}

#[test]
fn kill_9_during_ext4_loses_no_fsynced_file() {
    if !kernel_available(TOOLS) {
        return;
    }
    let runs: u64 = std::env::var("S3BLOCK_CRASH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let store = tempfile::tempdir().unwrap();
    let url = format!("file://{}", store.path().display());
    let log_path = store.path().with_extension("fsynced.log");
    let mut log = std::fs::File::create(&log_path).unwrap();
    let mut files = BTreeMap::new();
    let mut rng = seeded_rng(2024);
    let started = Instant::now();
    let mut repaired = 0;

    for run in 0..runs {
        let mut fuse = if run == 0 {
            let dir = tempfile::tempdir().unwrap();
            let args = ["--size=256M", "--block-size=64K", "--cache-size=8M"];
            Mount::spawn(fuse_command(FUSE, &url, dir.path(), &args), dir)
        } else {
            mount_after_crash(&url)
        };
        let lo = Loop::attach(&fuse.file());
        if run == 0 {
            mkfs_ext4(&lo.device);
        } else if fsck_repair(&lo.device) > 0 {
            repaired += 1;
        }
        let fs = FsMount::mount(&lo.device);
        check_files(fs.path(), &files);

        let (tx, rx) = mpsc::channel();
        let root = fs.path().to_owned();
        let handle = std::thread::spawn(move || {
            let (pause, paused) = (AtomicBool::new(false), AtomicBool::new(false));
            fsync_writer(&root, run, tx, &pause, &paused)
        });
        let kill_after = Duration::from_millis(1500 + rng.random_range(0..3500));
        std::thread::sleep(kill_after);
        fuse.kill9();
        let mut logged = 0;
        // What the writer sent before the kill, and until its next write fails.
        let deadline = Instant::now() + Duration::from_secs(60);
        while let Ok(entry) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            writeln!(log, "{} {:016x}", entry.0, entry.1).unwrap();
            files.insert(entry.0, entry.1);
            logged += 1;
        }
        log.sync_all().unwrap();
        assert!(handle.is_finished(), "the writer did not stop after the mount died");
        handle.join().unwrap();
        fs.unmount_lazy();
        drop(lo);
        drop(fuse);
        eprintln!("crash run {run}: killed after {kill_after:?}, {logged} files fsync'd in this run");
        assert!(run > 0 || logged > 0, "the workload fsync'd nothing before the kill");
    }

    // After the last crash: mount (taking over the lock), repair, and every
    // file of every run intact.
    let fuse = mount_after_crash(&url);
    let lo = Loop::attach(&fuse.file());
    if fsck_repair(&lo.device) > 0 {
        repaired += 1;
    }
    let fs = FsMount::mount(&lo.device);
    let bytes = check_files(fs.path(), &files);
    fs.unmount();
    lo.detach();
    fuse.unmount();
    let _ = std::fs::remove_file(&log_path);
    eprintln!(
        "FIGURES crash: {runs} kill -9 runs in {:.0}s, {} files fsync'd and logged, all intact \
         ({} MiB checked); e2fsck -y repaired something after {repaired} of {runs} crashes",
        started.elapsed().as_secs_f32(),
        files.len(),
        bytes >> 20
    );
}
