//! Crashes with a disk cache (`--cache-dir`), on Garage, through the kernel:
//! `kill -9` of the mount program during an ext4 workload that fsyncs each
//! file it writes and logs its checksum once the fsync returned.
//!
//! - With `--durability remote` and with `--durability local`, five seeded
//!   kill points on one volume and one cache directory: after each kill the
//!   test reads, from a copy of the directory, the blocks the disk held that
//!   the bucket did not have yet. The next mount takes over the stale lock
//!   by itself, says it recovered the directory, and uploads them: once its
//!   stats say nothing is left to upload, the bucket holds exactly those
//!   bytes. ext4 then needs no more than its journal replay (`e2fsck -fn`
//!   is clean after it), and every file fsync'd in any run is intact.
//! - With `--durability local` and the cache directory deleted after the
//!   kill (the local disk lost for good): the bucket alone mounts, `e2fsck
//!   -fn` is clean after the journal replay, and every file fsync'd before
//!   a point where the stats said everything was uploaded is intact.
//!
//! The mounts with the cache get 40 ms of latency on every store request
//! and 2% of failed requests (`S3BLOCK_INJECT_FAULTS`), so uploads lag the
//! writes and a kill leaves many blocks on the disk only.
//!
//! `S3BLOCK_CRASH_RUNS` sets the number of kills per volume (default 5).

#![allow(clippy::unwrap_used)] // a failed step should stop the test loudly

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use rand::Rng;
use s3block_cache::{DiskCache, DiskCacheConfig, Marks, VolumeIdentity};
use s3block_core::{BlockDevice, BlockId, Geometry, MemoryDevice};
use s3block_store::{StoreConfig, Volume};
use s3block_testkit::kernel::{
    FsMount, Loop, Mount, assert_no_panic, check_files, fsync_writer, fuse_command, kernel_available,
    mkfs_ext4, seeded_rng,
};
use s3block_testkit::{S3Env, s3_env, unique_prefix};

const FUSE: &str = env!("CARGO_BIN_EXE_rel-s3block-fuse");
const TOOLS: &[&str] = &["losetup", "mkfs.ext4", "e2fsck", "mount", "umount"];

/// The volume under test and how to mount it.
struct Setup {
    env: S3Env,
    url: String,
    cache: PathBuf,
    durability: &'static str,
}

impl Setup {
    fn new(name: &str, durability: &'static str, cache: &Path) -> Option<Setup> {
        let env = s3_env()?;
        let url = format!("s3://{}/{}", env.bucket, unique_prefix(name));
        Some(Setup { env, url, cache: cache.to_owned(), durability })
    }

    /// Starts the mount program; `with_cache` adds the disk cache options,
    /// `list_blocks` the listing of the stored blocks.
    fn mount(&self, first: bool, with_cache: bool, list_blocks: bool) -> Mount {
        let dir = tempfile::tempdir().unwrap();
        let cache_dir = format!("--cache-dir={}", self.cache.display());
        let durability = format!("--durability={}", self.durability);
        let mut args = vec!["--cache-size=8M"];
        if first {
            args.extend(["--size=256M", "--block-size=64K"]);
        }
        if with_cache {
            args.extend([cache_dir.as_str(), "--disk-cache-size=256M", durability.as_str()]);
        }
        if list_blocks {
            args.push("--list-blocks");
        }
        let mut cmd = fuse_command(FUSE, &self.url, dir.path(), &args);
        cmd.env("S3BLOCK_ENDPOINT", &self.env.endpoint);
        if with_cache {
            // Slow, flaky uploads (40 ms each, 2% failing and retried), so
            // that a kill finds many blocks on the disk only.
            cmd.env("S3BLOCK_INJECT_FAULTS", "seed=3,latency_ms=40,error_rate=0.02");
        }
        Mount::spawn(cmd, dir)
    }

    /// Mounts after a kill: the stale lock of this host is taken over by
    /// itself, and with the cache the directory is recovered. With
    /// `list_blocks`, the listing made in the background runs while the
    /// disk cache stores what the kill left unstored: none of those blocks
    /// may be taken for zero.
    fn mount_after_crash(&self, with_cache: bool, list_blocks: bool) -> Mount {
        let mount = self.mount(false, with_cache, list_blocks);
        let log = mount.log();
        assert!(log.contains("took over the stale mount lock"), "no takeover of the stale lock:\n{log}");
        if with_cache {
            assert!(log.contains("recovered after a crash"), "the disk cache was not recovered:\n{log}");
        }
        assert_no_panic("the mount after the crash", &log);
        mount
    }

    /// The blocks `blocks` as the bucket holds them now.
    fn bucket_blocks(&self, blocks: &[u64]) -> BTreeMap<u64, Vec<u8>> {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let opened = StoreConfig::new(&self.url).endpoint(&self.env.endpoint).open().unwrap();
            let volume = Volume::builder(opened).read_only(true).open().await.unwrap();
            let mut out = BTreeMap::new();
            for &b in blocks {
                out.insert(b, volume.device().read_block(BlockId(b as u32)).await.unwrap().to_vec());
            }
            out
        })
    }
}

/// The blocks a killed mount's cache directory held that were not in the
/// bucket yet, with their bytes: read from a copy of the directory (the
/// copy recovered over a memory device; the original is left for the next
/// mount).
fn unstored_in(cache: &Path) -> BTreeMap<u64, Vec<u8>> {
    let copy = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(cache).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, copy.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    let report = s3block_cache::inspect(copy.path()).unwrap();
    let geometry =
        Geometry::new(report.block_count * u64::from(report.block_size), report.block_size.into()).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let config = DiskCacheConfig::builder(copy.path(), 256 << 20).build();
        let identity = VolumeIdentity { volume: report.volume.clone(), geometry };
        let marks = Marks {
            found: report.pending_marker.clone().or(report.marker.clone()),
            new: "reading a copy".into(),
        };
        let memory = Arc::new(MemoryDevice::new(geometry));
        let (disk, opened) = DiskCache::open(memory, config, identity, marks).await.unwrap();
        assert!(opened.lost_dirty.is_empty(), "dirty blocks were damaged: {opened}");
        let mut out = BTreeMap::new();
        for &b in &report.dirty_blocks {
            out.insert(b, disk.read_block(BlockId(b as u32)).await.unwrap().to_vec());
        }
        disk.simulate_crash();
        out
    })
}

/// Waits until the mount's stats say the disk cache holds nothing the
/// bucket does not (two minutes at most).
fn wait_uploaded(mount: &Mount) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let text = std::fs::read_to_string(mount.path().join("stats")).unwrap_or_default();
        if text.contains("[disk cache]") && mount.stat("not in bucket") == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "uploads did not finish in 2 minutes:\n{text}\n{}", mount.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `e2fsck -fn`: must find nothing (exit 0).
fn fsck_clean(device: &str, when: &str) {
    let out = Command::new("e2fsck").args(["-fn", device]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "e2fsck -fn {when} is not clean:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Mounts ext4 (the kernel replays its journal), unmounts it, and checks
/// that `e2fsck -fn` then finds nothing.
fn replay_then_fsck(device: &str, when: &str) {
    FsMount::mount(device).unmount();
    fsck_clean(device, when);
}

/// The writer's log until it stops (the mount died), into `files`.
fn drain(rx: &mpsc::Receiver<(String, u64)>, files: &mut BTreeMap<String, u64>) -> usize {
    let mut n = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Ok((name, sum)) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        files.insert(name, sum);
        n += 1;
    }
    n
}

fn crash_runs(durability: &'static str) {
    if !kernel_available(TOOLS) {
        return;
    }
    let cache = tempfile::tempdir().unwrap();
    let Some(setup) = Setup::new(&format!("disk_cache_crash_{durability}"), durability, cache.path()) else {
        return;
    };
    let runs: u64 = std::env::var("S3BLOCK_CRASH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let mut rng = seeded_rng(if durability == "local" { 77 } else { 76 });
    let mut files = BTreeMap::new();
    let mut expected: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut recovered_total = 0;
    let started = Instant::now();
    for run in 0..=runs {
        let fuse = if run == 0 {
            setup.mount(true, true, false)
        } else {
            setup.mount_after_crash(true, run % 2 == 1)
        };
        if !expected.is_empty() {
            wait_uploaded(&fuse);
            let blocks: Vec<u64> = expected.keys().copied().collect();
            let stored = setup.bucket_blocks(&blocks);
            for (b, bytes) in &expected {
                assert!(
                    stored[b] == *bytes,
                    "run {run}: block {b} held by the disk cache at the kill is not in the bucket after recovery"
                );
            }
            recovered_total += expected.len();
        }
        let lo = Loop::attach(&fuse.file());
        if run == 0 {
            mkfs_ext4(&lo.device);
        } else {
            replay_then_fsck(&lo.device, &format!("after crash {run}"));
        }
        let fs = FsMount::mount(&lo.device);
        check_files(fs.path(), &files);
        if run == runs {
            fs.unmount();
            lo.detach();
            fuse.unmount();
            break;
        }
        let mut fuse = fuse;
        let (tx, rx) = mpsc::channel();
        let root = fs.path().to_owned();
        let writer = std::thread::spawn(move || {
            let (pause, paused) = (AtomicBool::new(false), AtomicBool::new(false));
            fsync_writer(&root, run, tx, &pause, &paused)
        });
        let kill_after = Duration::from_millis(1500 + rng.random_range(0..3500));
        std::thread::sleep(kill_after);
        fuse.kill9();
        let logged = drain(&rx, &mut files);
        writer.join().unwrap();
        fs.unmount_lazy();
        drop(lo);
        drop(fuse);
        expected = unstored_in(cache.path());
        eprintln!(
            "{durability} run {run}: killed after {kill_after:?}, {logged} files fsync'd, {} blocks on the disk only",
            expected.len()
        );
        assert!(run > 0 || logged > 0, "the workload fsync'd nothing before the kill");
    }
    eprintln!(
        "FIGURES disk cache crash ({durability}): {runs} kill -9 runs in {:.0}s, {} files fsync'd, all intact; \
         {recovered_total} blocks held only by the disk at a kill, all in the bucket after the next mount; \
         e2fsck -fn clean after each journal replay",
        started.elapsed().as_secs_f32(),
        files.len()
    );
}

#[test]
fn kill_9_with_a_disk_cache_and_remote_durability_recovers_the_disk() {
    crash_runs("remote");
}

#[test]
fn kill_9_with_a_disk_cache_and_local_durability_recovers_the_disk() {
    crash_runs("local");
}

#[test]
fn local_durability_keeps_the_bucket_consistent_when_the_disk_is_lost() {
    if !kernel_available(TOOLS) {
        return;
    }
    let started = Instant::now();
    for seed in 0..2u64 {
        let cache = tempfile::tempdir().unwrap();
        let Some(setup) = Setup::new("disk_cache_lost", "local", cache.path()) else { return };
        let mut rng = seeded_rng(500 + seed);
        let mut fuse = setup.mount(true, true, false);
        let lo = Loop::attach(&fuse.file());
        mkfs_ext4(&lo.device);
        let fs = FsMount::mount(&lo.device);
        let (tx, rx) = mpsc::channel();
        let root = fs.path().to_owned();
        let pause = Arc::new(AtomicBool::new(false));
        let paused = Arc::new(AtomicBool::new(false));
        let (p, q) = (pause.clone(), paused.clone());
        let writer = std::thread::spawn(move || fsync_writer(&root, 0, tx, &p, &q));
        std::thread::sleep(Duration::from_millis(1000 + rng.random_range(0..2000)));
        // A point where everything fsync'd is in the bucket.
        pause.store(true, Ordering::SeqCst);
        while !paused.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut safe = BTreeMap::new();
        while let Ok((name, sum)) = rx.try_recv() {
            safe.insert(name, sum);
        }
        wait_uploaded(&fuse);
        pause.store(false, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(500 + rng.random_range(0..2500)));
        fuse.kill9();
        let mut later = BTreeMap::new();
        let after = drain(&rx, &mut later);
        writer.join().unwrap();
        fs.unmount_lazy();
        drop(lo);
        drop(fuse);
        assert!(!safe.is_empty(), "nothing was fsync'd before the upload point");

        // The local disk is gone: the bucket alone.
        std::fs::remove_dir_all(cache.path()).unwrap();
        let fuse = setup.mount_after_crash(false, true);
        let lo = Loop::attach(&fuse.file());
        replay_then_fsck(&lo.device, "on the bucket alone");
        let fs = FsMount::mount(&lo.device);
        let bytes = check_files(fs.path(), &safe);
        let kept_later = later.iter().filter(|(name, sum)| {
            std::fs::read(fs.path().join(name)).is_ok_and(|d| s3block_testkit::kernel::checksum(&d) == **sum)
        });
        let kept_later = kept_later.count();
        fs.unmount();
        lo.detach();
        fuse.unmount();
        eprintln!(
            "FIGURES disk lost (local durability, seed {seed}): {} files fsync'd before the upload point all \
             intact ({} KiB); of {after} fsync'd after it, {kept_later} reached the bucket before the kill",
            safe.len(),
            bytes >> 10
        );
    }
    eprintln!("disk-loss runs took {:.0}s", started.elapsed().as_secs_f32());
}
