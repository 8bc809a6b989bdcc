//! Several volumes in one mount program (`--all-volumes`, `--volume NAME`):
//! three volumes of 64K, 256K and 1M blocks written in parallel within one
//! cache budget (the program's peak RSS measured against it), then each
//! mounted alone and checked; three volumes with `--cache-dir` sharing one
//! disk cache budget (the bytes in the cache directory sampled against it),
//! killed with blocks on the local disk only, remounted, and each then
//! checked alone; and volumes created, grown and erased through a running
//! mount (`s3block create|resize|erase MOUNTPOINT/NAME`), the erase of an
//! open file refused; and volumes made in the store while mounted
//! (`s3block create STORE/NAME`) served by the control file's `rescan`
//! (`s3block rescan MOUNTPOINT`) at once, one locked by another mount left
//! saying why, and by the periodic rescan within its interval.
//!
//! Needs /dev/fuse and fusermount3; without them it says so and passes,
//! except under `CI=true`.

#![allow(clippy::unwrap_used)] // test code: a failed step should stop the test loudly

#[allow(unused_imports)] // the helpers re-export tools this test does not use
mod nbd_support;

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use s3block_testkit::kernel::{Mount, checksum, fuse_command, kernel_available, pattern};

use nbd_support::{FUSE, Store};

const CLI: &str = env!("CARGO_BIN_EXE_rel-s3block");
const MIB: u64 = 1 << 20;
/// The one cache budget of the three volumes.
const BUDGET: u64 = 24 * MIB;
/// What the program may use besides the budget: its baseline (20 MiB,
/// `frontend::memory::BASELINE`), 4 MiB a volume
/// (`frontend::volumes::VOLUME_OVERHEAD`), and the blocks of the uploads
/// in flight (4 slots of at most 1 MiB, each encoded once more).
const OVERHEAD: u64 = 20 * MIB + 3 * 4 * MIB + 4 * 2 * MIB;

/// `s3block ARGS...` with the variables `env` (a Garage endpoint): exit
/// code, standard output and error together.
fn cli_in(env: &[(String, String)], args: &[&str]) -> (i32, String) {
    let out = Command::new(CLI).args(args).envs(env.iter().cloned()).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// The peak resident set of process `pid` so far (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// Writes `len` bytes of pattern `seed` over `file` in 1 MiB writes, then
/// fsyncs; returns their checksum.
fn fill(file: &Path, seed: u64, len: u64) -> u64 {
    let data = pattern(seed, len as usize);
    let mut f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    for chunk in data.chunks(MIB as usize) {
        f.write_all(chunk).unwrap();
    }
    f.sync_all().unwrap();
    checksum(&data)
}

/// Creates the volumes `(name, block size, _)` of 64 MiB under `store`.
fn create_volumes(at: &Store, store: &str, volumes: &[(&str, &str, u64)]) {
    for (name, block, _) in volumes {
        let (code, out) =
            cli_in(&at.env, &["create", &format!("{store}/{name}"), "--size", "64M", "--block-size", block]);
        assert_eq!(code, 0, "{out}");
    }
}

#[test]
fn three_volumes_in_one_daemon_stay_within_one_budget_and_remount_alone() {
    if !kernel_available(&[]) {
        return;
    }
    for store in Store::local_and_garage("multivol-rss") {
        three_volumes_in_one_budget(&store);
    }
}

/// Three volumes of `store` in one mount, then each alone.
fn three_volumes_in_one_budget(at: &Store) {
    let started = Instant::now();
    let kind = at.kind().to_owned();
    let store = at.url.trim_end_matches('/').to_owned();
    let cli = |args: &[&str]| cli_in(&at.env, args);
    let volumes = [("v64k", "64K", 1u64), ("v256k", "256K", 2), ("v1m", "1M", 3)];
    create_volumes(at, &store, &volumes);
    let mnt = tempfile::tempdir().unwrap();
    let budget = format!("--cache-size={BUDGET}");
    let args = ["--all-volumes", budget.as_str(), "--upload-concurrency=4", "--write-delay=0"];
    let mut cmd = fuse_command(FUSE, &store, mnt.path(), &args);
    cmd.envs(at.env.iter().cloned());
    let mount = Mount::spawn(cmd, mnt);
    let mut shown: Vec<String> = std::fs::read_dir(mount.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    shown.sort();
    assert_eq!(
        shown,
        [
            "control",
            "stats",
            "stats.json",
            "v1m",
            "v1m.stats",
            "v1m.stats.json",
            "v256k",
            "v256k.stats",
            "v256k.stats.json",
            "v64k",
            "v64k.stats",
            "v64k.stats.json"
        ]
    );
    // Written in parallel, 32 MiB each: four times a volume's share.
    let writers: Vec<_> = volumes
        .iter()
        .map(|&(name, _, seed)| {
            let file = mount.path().join(name);
            std::thread::spawn(move || fill(&file, seed, 32 * MIB))
        })
        .collect();
    let sums: Vec<u64> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    let peak = peak_rss(mount.pid());
    eprintln!(
        "{kind}: peak RSS {:.1} MiB with a budget of {} MiB (limit {} MiB) after {:.1}s",
        peak as f64 / MIB as f64,
        BUDGET / MIB,
        (BUDGET + OVERHEAD) / MIB,
        started.elapsed().as_secs_f32()
    );
    assert!(peak <= BUDGET + OVERHEAD, "peak RSS {peak} above the budget {BUDGET} + overhead {OVERHEAD}");

    // The stats: each volume and the total within the budget.
    let text = std::fs::read_to_string(mount.path().join("stats")).unwrap();
    assert!(text.contains("[total] 3 volume(s)") && text.contains("24M cache"), "{text}");
    for (name, _, _) in volumes {
        assert!(text.contains(&format!("[volume {name}]")), "{text}");
        assert!(!std::fs::read_to_string(mount.path().join(format!("{name}.stats"))).unwrap().is_empty());
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(mount.path().join("stats.json")).unwrap()).unwrap();
    assert_eq!(json["volumes"].as_object().unwrap().len(), 3, "{json:#}");
    assert_eq!(json["budget"]["cache_bytes"], BUDGET);
    let resident = json["total"]["cache"]["resident_bytes"].as_u64().unwrap();
    let sizes: u64 =
        volumes.iter().map(|v| json["volumes"][v.0]["cache"]["size_bytes"].as_u64().unwrap()).sum();
    assert!(resident <= BUDGET && sizes <= BUDGET, "resident {resident}, shares {sizes}: {json:#}");
    // `s3block stats` shows one volume; the mount itself is named as several.
    let (code, out) = cli(&["stats", mount.path().join("v1m").to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("[cache]"), "{out}");
    let (code, out) = cli(&["stats", mount.path().to_str().unwrap()]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("several volumes") && out.contains("/NAME"), "{out}");
    let log = mount.unmount();
    for (name, _, _) in volumes {
        assert!(log.contains(&format!("volume {name}: stored and released")), "{log}");
    }

    // Each alone, as an ordinary one-volume mount: every byte is there.
    for ((name, _, _), sum) in volumes.iter().zip(sums) {
        let mnt = tempfile::tempdir().unwrap();
        let one = format!("{store}/{name}");
        let mut cmd = fuse_command(FUSE, &one, mnt.path(), &["--read-only"]);
        cmd.envs(at.env.iter().cloned());
        let mount = Mount::spawn(cmd, mnt);
        let data = std::fs::read(mount.file()).unwrap();
        assert_eq!(data.len() as u64, 64 * MIB);
        assert_eq!(checksum(&data[..(32 * MIB) as usize]), sum, "volume {name}");
        assert!(data[(32 * MIB) as usize..].iter().all(|&b| b == 0), "volume {name}: its tail");
        mount.unmount();
    }
    eprintln!("{kind}: done in {:.1}s", started.elapsed().as_secs_f32());
}

/// The disk cache budget of the three volumes (`--disk-cache-size`):
/// 17 MiB a volume, four segments of 4 MiB (of four 1 MiB blocks and their
/// headers for the volume of 1M blocks) and some to spare.
const DISK_BUDGET: u64 = 51 * MIB;
/// Bytes each volume is written: half again its disk share.
const WRITTEN: u64 = 24 * MIB;
/// One segment per volume of slack: a tier starts its next segment before
/// it reclaims its oldest.
const DISK_SLACK: u64 = 3 * 4 * MIB + 3 * 1024;

/// Where the rewrite of round `round` starts: the 2 MiB regions of a
/// volume's last 8 MiB written, in turn.
fn rewritten_at(round: u64) -> usize {
    (WRITTEN - 8 * MIB + round % 4 * 2 * MIB) as usize
}

/// Checks a volume's first [`WRITTEN`] bytes after the rewrites, of which
/// `done` returned: the bytes filled with `seed` (checksum `sum`), except
/// that the region of the rewrite the kill cut short may hold, page by
/// page, the complement it wrote first.
fn check_rewritten(data: &[u8], seed: u64, sum: u64, done: u64, what: &str) {
    let data = &data[..WRITTEN as usize];
    if checksum(data) == sum {
        return;
    }
    let filled = pattern(seed, WRITTEN as usize);
    let cut = rewritten_at(done)..rewritten_at(done) + 2 * MIB as usize;
    for (page, (got, want)) in data.chunks(4096).zip(filled.chunks(4096)).enumerate() {
        let at = page * 4096;
        let flipped = cut.contains(&at) && got.iter().zip(want).all(|(g, w)| *g == !*w);
        assert!(
            got == want || flipped,
            "{what}: the page at {at} is neither as filled nor as the cut rewrite left it"
        );
    }
}

/// Bytes of the files under `dir`, its subdirectories included (files
/// removed while it is read count as gone).
fn bytes_under(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => bytes_under(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

#[test]
fn three_volumes_share_one_disk_cache_budget_and_survive_a_kill() {
    if !kernel_available(&[]) {
        return;
    }
    for store in Store::local_and_garage("multivol-disk") {
        three_volumes_in_one_disk_budget(&store);
    }
}

/// Three volumes of `store` in one mount with `--cache-dir` and
/// `--durability local` over a slow store: written in parallel, the cache
/// directory never holds more than the disk budget (plus a segment a
/// volume); killed with blocks on the local disk only; remounted with
/// `--all-volumes --cache-dir`, which uploads them; then each volume alone,
/// with its `DIR/NAME` and from the bucket alone, has every byte.
fn three_volumes_in_one_disk_budget(at: &Store) {
    let started = Instant::now();
    let kind = at.kind().to_owned();
    let store = at.url.trim_end_matches('/').to_owned();
    let volumes = [("d128k", "128K", 11u64), ("d256k", "256K", 12), ("d1m", "1M", 13)];
    create_volumes(at, &store, &volumes);
    let caches = tempfile::tempdir().unwrap();
    let dir = caches.path().join("cache");
    let cache_dir = format!("--cache-dir={}", dir.display());
    let disk_size = format!("--disk-cache-size={DISK_BUDGET}");
    let mount_all = |extra: &[&str], faults: Option<&str>| {
        let mnt = tempfile::tempdir().unwrap();
        let mut args = vec![
            "--all-volumes",
            "--cache-size=24M",
            "--write-delay=0",
            cache_dir.as_str(),
            disk_size.as_str(),
        ];
        args.extend_from_slice(extra);
        let mut cmd = fuse_command(FUSE, &store, mnt.path(), &args);
        cmd.envs(at.env.iter().cloned());
        if let Some(faults) = faults {
            cmd.env("S3BLOCK_INJECT_FAULTS", faults);
        }
        Mount::spawn(cmd, mnt)
    };
    // Every store request 20 ms late, and three upload slots (one upload
    // at a time a volume while the three upload): the uploads lag the
    // writes.
    let mut mount =
        mount_all(&["--durability=local", "--upload-concurrency=3"], Some("seed=5,latency_ms=20"));
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (dir, sampling) = (dir.clone(), sampling.clone());
        std::thread::spawn(move || {
            let (mut most, mut samples) = (0u64, 0u32);
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                most = most.max(bytes_under(&dir));
                samples += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            (most, samples)
        })
    };
    let writers: Vec<_> = volumes
        .iter()
        .map(|&(name, _, seed)| {
            let file = mount.path().join(name);
            std::thread::spawn(move || fill(&file, seed, WRITTEN))
        })
        .collect();
    let sums: Vec<u64> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    // Then each volume rewrites its last 8 MiB, 2 MiB at a time: with the
    // complement of its bytes, then with its bytes again, each fsync'd (a
    // flush epoch each, uploaded one after the other), until the kill:
    // every disk tier sits at its dirty limit. (The same bytes alone would
    // change nothing: the cache stores no write of what a block holds.)
    // Every rewrite that returned leaves the bytes as filled; the one the
    // kill cuts short may leave complemented pages in its region.
    let rounds: std::sync::Arc<Vec<std::sync::atomic::AtomicU64>> =
        std::sync::Arc::new((0..3).map(|_| std::sync::atomic::AtomicU64::new(0)).collect());
    let writers: Vec<_> = volumes
        .iter()
        .enumerate()
        .map(|(i, &(name, _, seed))| {
            let file = mount.path().join(name);
            let rounds = rounds.clone();
            std::thread::spawn(move || {
                use std::os::unix::fs::FileExt;
                let data = pattern(seed, WRITTEN as usize);
                let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
                for round in 0.. {
                    let at = rewritten_at(round);
                    let bytes = &data[at..at + 2 * MIB as usize];
                    let flipped: Vec<u8> = bytes.iter().map(|b| !b).collect();
                    let rewrite = f
                        .write_all_at(&flipped, at as u64)
                        .and_then(|()| f.sync_all())
                        .and_then(|()| f.write_all_at(bytes, at as u64))
                        .and_then(|()| f.sync_all());
                    if rewrite.is_err() {
                        // Killed.
                        return;
                    }
                    rounds[i].store(round + 1, std::sync::atomic::Ordering::SeqCst);
                }
            })
        })
        .collect();
    let rewriting = Instant::now();
    while rounds.iter().any(|r| r.load(std::sync::atomic::Ordering::SeqCst) < 4) {
        assert!(rewriting.elapsed().as_secs() < 60, "the rewrites are stuck");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Their fsyncs returned with the blocks on the local disk: many are
    // not in the bucket yet.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(mount.path().join("stats.json")).unwrap()).unwrap();
    let unstored: Vec<u64> =
        volumes.iter().map(|v| json["volumes"][v.0]["disk"]["unstored_blocks"].as_u64().unwrap()).collect();
    let peak = peak_rss(mount.pid());
    mount.kill9();
    for w in writers {
        w.join().unwrap();
    }
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let (most, samples) = sampler.join().unwrap();
    eprintln!(
        "{kind}: the cache directory held at most {:.1} MiB ({samples} samples) under a disk budget of {} MiB; \
         killed after {:.1}s with {unstored:?} blocks on the local disk only; peak RSS {:.1} MiB",
        most as f64 / MIB as f64,
        DISK_BUDGET / MIB,
        started.elapsed().as_secs_f32(),
        peak as f64 / MIB as f64
    );
    assert!(most <= DISK_BUDGET + DISK_SLACK, "{most} bytes under {}", dir.display());
    assert!(most > DISK_BUDGET / 2, "{most} bytes: the tiers were never filled");
    assert!(unstored.iter().all(|&n| n > 0), "{kind}: nothing was left to upload at the kill: {json:#}");
    for (name, _, _) in volumes {
        assert!(dir.join(name).join("state").is_file(), "{name}: no disk cache in {}", dir.display());
    }

    // Remounted: the directories are recovered and their blocks uploaded.
    let mount = mount_all(&[], None);
    let cut: Vec<u64> = rounds.iter().map(|r| r.load(std::sync::atomic::Ordering::SeqCst)).collect();
    for (((name, _, seed), sum), &cut) in volumes.iter().zip(&sums).zip(&cut) {
        let data = std::fs::read(mount.path().join(name)).unwrap();
        check_rewritten(&data, *seed, *sum, cut, &format!("{kind}: volume {name} after the kill"));
    }
    let log = mount.unmount();
    assert!(log.contains("recovered after a crash"), "{log}");

    // Each alone: with its own DIR/NAME (of another size), then from the
    // bucket alone.
    for (((name, _, seed), sum), &cut) in volumes.iter().zip(&sums).zip(&cut) {
        let one = format!("{store}/{name}");
        let alone = format!("--cache-dir={}", dir.join(name).display());
        for args in [&[alone.as_str(), "--disk-cache-size=64M"][..], &["--read-only"]] {
            let mnt = tempfile::tempdir().unwrap();
            let mut cmd = fuse_command(FUSE, &one, mnt.path(), args);
            cmd.envs(at.env.iter().cloned());
            let mount = Mount::spawn(cmd, mnt);
            let data = std::fs::read(mount.file()).unwrap();
            check_rewritten(&data, *seed, *sum, cut, &format!("{kind}: volume {name} alone, {args:?}"));
            mount.unmount();
        }
    }
    eprintln!("{kind}: done in {:.1}s", started.elapsed().as_secs_f32());
}

#[test]
fn volumes_appear_grow_and_go_through_a_running_mount() {
    if !kernel_available(&[]) {
        return;
    }
    for store in Store::local_and_garage("multivol") {
        appear_grow_and_go(&store);
    }
}

/// Create, grow, erase (refused while open) of a volume through a mount of
/// every volume under `store`.
fn appear_grow_and_go(store: &Store) {
    let kind = store.kind().to_owned();
    let local = store.url.strip_prefix("file://").map(std::path::PathBuf::from);
    let mnt = tempfile::tempdir().unwrap();
    let mut cmd = fuse_command(FUSE, &store.url, mnt.path(), &["--all-volumes", "--cache-size=8M"]);
    cmd.envs(store.env.iter().cloned());
    let mount = Mount::spawn(cmd, mnt);
    let names = |dir: &Path| {
        let mut all: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        all.sort();
        all
    };
    assert_eq!(names(mount.path()), ["control", "stats", "stats.json"], "{kind}");
    let alpha = mount.path().join("alpha");
    let target = alpha.to_str().unwrap();
    let cli = |args: &[&str]| cli_in(&store.env, args);

    let (code, out) = cli(&["create", target, "--size", "8M", "--block-size", "64K"]);
    assert_eq!(code, 0, "{kind}: {out}");
    assert!(out.contains("Created the volume alpha (8M, 64K blocks)"), "{out}");
    assert_eq!(std::fs::metadata(&alpha).unwrap().len(), 8 * MIB);
    let sum = fill(&alpha, 7, 4 * MIB);
    // Made in the store as an ordinary volume, with its own lock.
    let (code, out) = cli(&["info", &format!("{}/alpha", store.url.trim_end_matches('/'))]);
    assert_eq!(code, 0, "{kind}: {out}");
    assert!(out.contains("64K"), "{kind}: {out}");
    if let Some(bucket) = &local {
        assert!(bucket.join("alpha/s3block-volume.json").is_file());
        assert!(bucket.join("alpha/s3backer-mounted").is_file());
    }
    let (code, out) = cli(&["create", target, "--size", "8M"]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("alpha") && out.contains("already"), "{out}");
    let (code, out) = cli(&["create", mount.path().join(".hidden").to_str().unwrap(), "--size", "8M"]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains(".hidden") && out.contains("dot"), "{out}");

    let (code, out) = cli(&["resize", target, "--size", "+8M"]);
    assert_eq!(code, 0, "{kind}: {out}");
    assert!(out.contains("from 8M to 16M"), "{out}");
    assert_eq!(std::fs::metadata(&alpha).unwrap().len(), 16 * MIB);
    let data = std::fs::read(&alpha).unwrap();
    assert_eq!(checksum(&data[..(4 * MIB) as usize]), sum);

    let stats = std::fs::read_to_string(mount.path().join("stats")).unwrap();
    assert!(stats.contains("[total] 1 volume(s)") && stats.contains("[volume alpha]"), "{stats}");

    // Open: the erase is refused, and the file stays.
    let open = std::fs::File::open(&alpha).unwrap();
    let (code, out) = cli(&["erase", "--force", target]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("in use") && out.contains("open"), "{out}");
    assert!(alpha.exists());
    drop(open);
    let (code, out) = cli(&["erase", "--force", target]);
    assert_eq!(code, 0, "{kind}: {out}");
    assert!(out.contains("Erased the volume alpha"), "{out}");
    assert!(!alpha.exists(), "the file is still there after the erase");
    assert_eq!(names(mount.path()), ["control", "stats", "stats.json"]);
    let (code, out) = cli(&["info", &format!("{}/alpha", store.url.trim_end_matches('/'))]);
    assert_ne!(code, 0, "{kind}: the volume is still in the store: {out}");
    if let Some(bucket) = &local {
        let left: Vec<_> = std::fs::read_dir(bucket.join("alpha"))
            .map(|d| d.map(|e| e.unwrap().file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "left in the bucket: {left:?}");
    }
    let (code, out) = cli(&["erase", "--force", target]);
    assert_ne!(code, 0, "{out}");
    mount.unmount();
}

/// One request to the control file of the mount at `dir`; its answer.
fn ask(dir: &Path, request: &str) -> String {
    use std::os::unix::fs::FileExt;
    let control = std::fs::OpenOptions::new().read(true).write(true).open(dir.join("control")).unwrap();
    control.write_at(format!("{request}\n").as_bytes(), 0).unwrap();
    let mut answer = vec![0u8; 4096];
    let n = control.read_at(&mut answer, 0).unwrap();
    String::from_utf8_lossy(&answer[..n]).trim_end().to_owned()
}

#[test]
fn volumes_made_in_the_store_appear_in_a_running_mount() {
    if !kernel_available(&[]) {
        return;
    }
    for store in Store::local_and_garage("multivol-rescan") {
        found_while_mounted(&store);
    }
}

/// Volumes made in `store` while it is mounted with `--all-volumes`: by
/// `rescan` at once (one locked by a mount of its own left), and by the
/// periodic rescan.
fn found_while_mounted(store: &Store) {
    let started = Instant::now();
    let kind = store.kind().to_owned();
    let url = store.url.trim_end_matches('/').to_owned();
    let cli = |args: &[&str]| cli_in(&store.env, args);
    let mount_in = |target: &str, mnt: tempfile::TempDir, args: &[&str]| {
        let mut cmd = fuse_command(FUSE, target, mnt.path(), args);
        cmd.envs(store.env.iter().cloned());
        Mount::spawn(cmd, mnt)
    };
    let create = |name: &str| {
        let (code, out) = cli(&["create", &format!("{url}/{name}"), "--size", "64M", "--block-size", "256K"]);
        assert_eq!(code, 0, "{out}");
    };
    create_volumes(store, &url, &[("first", "64K", 0)]);
    let mount_all = |interval: &str| {
        let every = format!("--rescan-interval={interval}");
        let args = ["--all-volumes", "--cache-size=8M", "--write-delay=0", every.as_str()];
        mount_in(&url, tempfile::tempdir().unwrap(), &args)
    };

    // Asked: `rescan` serves the new volume at once; one locked by a mount
    // of its own is left, saying why, and logged once.
    let mount = mount_all("3600");
    assert_eq!(ask(mount.path(), "rescan"), "ok no new volumes");
    create("asked");
    create("held");
    let held = mount_in(&format!("{url}/held"), tempfile::tempdir().unwrap(), &[]);
    let answer = ask(mount.path(), "rescan");
    assert!(answer.starts_with("ok asked; not opened: held (") && answer.contains("lock"), "{answer}");
    let asked = mount.path().join("asked");
    assert_eq!(std::fs::metadata(&asked).unwrap().len(), 64 * MIB);
    let sum = fill(&asked, 31, 4 * MIB);
    let (code, out) = cli(&["rescan", mount.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("No new volumes in the store") && out.contains("\nNot opened: held ("), "{out}");
    assert!(!mount.path().join("held").exists());
    held.unmount();
    let (code, out) = cli(&["rescan", mount.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.trim_end(), format!("Added the volume held: {}", mount.path().join("held").display()));
    assert_eq!(ask(mount.path(), "list"), "ok asked first held");
    let log = mount.unmount();
    assert_eq!(log.matches("volume held: found in the store but not served").count(), 1, "{log}");
    for name in ["asked", "first", "held"] {
        assert!(log.contains(&format!("volume {name}: stored and released")), "{log}");
    }

    // Periodic: a volume made in the store appears within the interval.
    let mount = mount_all("1");
    let data = std::fs::read(mount.path().join("asked")).unwrap();
    assert_eq!(checksum(&data[..(4 * MIB) as usize]), sum);
    create("later");
    let later = mount.path().join("later");
    let made = Instant::now();
    while !later.exists() {
        assert!(made.elapsed().as_secs() < 20, "{kind}: {} did not appear: {}", later.display(), mount.log());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let appeared = made.elapsed();
    let sum = fill(&later, 32, 8 * MIB);
    let data = std::fs::read(&later).unwrap();
    assert_eq!(data.len() as u64, 64 * MIB);
    assert_eq!(checksum(&data[..(8 * MIB) as usize]), sum);
    assert!(data[(8 * MIB) as usize..].iter().all(|&b| b == 0));
    assert_eq!(ask(mount.path(), "list"), "ok asked first held later");
    let log = mount.unmount();
    assert!(log.contains("volume later: found in the store"), "{log}");
    assert!(log.contains("volume later: stored and released"), "{log}");
    eprintln!(
        "{kind}: the new volume appeared {:.1}s after its create; done in {:.1}s",
        appeared.as_secs_f32(),
        started.elapsed().as_secs_f32()
    );
}
