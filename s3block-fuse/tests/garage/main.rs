//! Real-kernel tests of the mount program on a real S3 server (Garage):
//! ext4 on a loop device end to end, fstrim freeing objects, the mount lock,
//! read-only mounts, parallel writers, a block-size mismatch and SIGTERM.
//!
//! They need Garage (`scripts/garage.sh start`, then `. "$(scripts/garage.sh
//! env)"`), /dev/fuse, fusermount3, losetup, mkfs.ext4, e2fsck, fstrim and
//! root. Without them each test says what is missing and passes, except
//! under `CI=true`, where it fails naming what is missing.

#![allow(clippy::unwrap_used)] // a failed step should stop the test loudly

mod harness;

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harness::{
    FsMount, Loop, checksum, mkfs_ext4, mount, mount_fails, pattern, run, setup, stored_objects, volume_url,
};

const EXT4_TOOLS: &[&str] = &["losetup", "mkfs.ext4", "e2fsck", "mount", "umount"];

/// Writes `count` files of varied sizes into `root` (100 per directory);
/// returns each relative path with its checksum.
fn make_tree(root: &Path, count: usize) -> BTreeMap<String, u64> {
    let mut sums = BTreeMap::new();
    for i in 0..count {
        let dir = format!("d{:02}", i / 100);
        std::fs::create_dir_all(root.join(&dir)).unwrap();
        let name = format!("{dir}/f{i:04}");
        let len = 1 + (i * 7919) % 24_000;
        let data = pattern(i as u64 + 1, len);
        std::fs::write(root.join(&name), &data).unwrap();
        sums.insert(name, checksum(&data));
    }
    sums
}

#[test]
fn ext4_end_to_end() {
    let Some(env) = setup(EXT4_TOOLS) else { return };
    let (url, prefix) = volume_url(&env, "ext4_end_to_end");
    let args = ["--size=512M", "--block-size=128K", "--cache-size=32M"];

    let source = tempfile::tempdir().unwrap();
    let sums = make_tree(source.path(), 2000);
    let started = Instant::now();
    {
        let fuse = mount(&env, &url, &args);
        let lo = Loop::attach(&fuse.file());
        mkfs_ext4(&lo.device);
        let fs = FsMount::mount(&lo.device);
        let target = fs.path().join("tree");
        run("cp", &["-a", &format!("{}/.", source.path().display()), target.to_str().unwrap()]);
        fs.unmount();
        lo.detach();
        let log = fuse.unmount();
        assert!(log.contains("created a new volume"), "{log}");
    }
    let (blocks, locked) = stored_objects(&env, &prefix);
    assert!(blocks > 10, "only {blocks} block objects after filling ext4");
    assert!(!locked, "the mount lock is left after a clean unmount");
    eprintln!("ext4 filled in {:.1}s: {blocks} block objects", started.elapsed().as_secs_f32());

    // Everything again, from the bucket alone: geometry detected, fsck clean, every file intact.
    let fuse = mount(&env, &url, &["--list-blocks"]);
    let lo = Loop::attach(&fuse.file());
    let fsck = run("e2fsck", &["-fn", &lo.device]);
    assert!(fsck.contains("files"), "{fsck}");
    let fs = FsMount::mount(&lo.device);
    let mut bad = Vec::new();
    for (name, sum) in &sums {
        let data = std::fs::read(fs.path().join("tree").join(name)).unwrap();
        if checksum(&data) != *sum {
            bad.push(name.clone());
        }
    }
    assert!(bad.is_empty(), "{} files differ, e.g. {:?}", bad.len(), &bad[..bad.len().min(5)]);
    fs.unmount();
    lo.detach();
    fuse.unmount();
}

#[test]
fn fstrim_deletes_objects() {
    let Some(env) = setup(&["losetup", "mkfs.ext4", "mount", "umount", "fstrim"]) else { return };
    let (url, prefix) = volume_url(&env, "fstrim_deletes_objects");
    let fuse = mount(&env, &url, &["--size=256M", "--block-size=64K", "--cache-size=16M"]);
    let lo = Loop::attach(&fuse.file());
    mkfs_ext4(&lo.device);
    let fs = FsMount::mount(&lo.device);
    for i in 0..16u64 {
        std::fs::write(fs.path().join(format!("big{i}")), pattern(i + 100, 1 << 20)).unwrap();
    }
    run("sync", &[]);
    std::fs::File::open(fuse.file()).unwrap().sync_all().unwrap();
    let (full, _) = stored_objects(&env, &prefix);
    assert!(full >= 256, "16 MiB of files in 64K blocks, yet only {full} objects");

    for i in 0..16u64 {
        std::fs::remove_file(fs.path().join(format!("big{i}"))).unwrap();
    }
    run("sync", &[]);
    run("fstrim", &[fs.path().to_str().unwrap()]);
    std::fs::File::open(fuse.file()).unwrap().sync_all().unwrap();
    let (trimmed, _) = stored_objects(&env, &prefix);
    assert!(
        full - trimmed.min(full) >= 200,
        "fstrim freed too little: {full} objects before, {trimmed} after"
    );
    fs.unmount();
    lo.detach();
    fuse.unmount();
}

#[test]
fn second_mount_is_refused_naming_the_holder() {
    let Some(env) = setup(&[]) else { return };
    let (url, _) = volume_url(&env, "second_mount_is_refused");
    let first = mount(&env, &url, &["--size=64M"]);
    // Garage ignores conditional creates: the mount says its lock is
    // advisory once (a warning), not again in the "mounted" line.
    let log = first.log();
    assert!(log.matches("advisory").count() <= 1, "{log}");
    let out = mount_fails(&env, &url, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert!(stderr.contains("already mounted by") && stderr.contains(host.trim()), "{stderr}");
    assert!(stderr.contains("s3block unlock"), "{stderr}");
    first.unmount();
    // Released at exit: the next mount gets it.
    mount(&env, &url, &[]).unmount();
}

#[test]
fn read_only_mount_refuses_writes_and_takes_no_lock() {
    let Some(env) = setup(&[]) else { return };
    let (url, _) = volume_url(&env, "read_only_mount");
    let data = pattern(7, 300_000);
    let rw = mount(&env, &url, &["--size=64M", "--block-size=64K"]);
    let f = OpenOptions::new().write(true).open(rw.file()).unwrap();
    f.write_all_at(&data, 1_000_000).unwrap();
    f.sync_data().unwrap();
    drop(f);

    // Beside the read-write mount: it starts, reads what was fsync'd, refuses writes.
    let ro = mount(&env, &url, &["-o", "ro"]);
    let err = OpenOptions::new().write(true).open(ro.file()).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    let mut back = vec![0; data.len()];
    std::fs::File::open(ro.file()).unwrap().read_exact_at(&mut back, 1_000_000).unwrap();
    assert!(back == data, "the read-only mount reads other bytes");
    assert!(ro.log().contains("takes no lock"), "{}", ro.log());
    ro.unmount();
    rw.unmount();
}

#[test]
fn parallel_writers_get_exact_bytes_after_remount() {
    let Some(env) = setup(&[]) else { return };
    let (url, _) = volume_url(&env, "parallel_writers");
    let region = 300_000u64;
    let fuse = mount(&env, &url, &["--size=64M", "--block-size=64K", "--upload-concurrency=4"]);
    let file = fuse.file();
    std::thread::scope(|s| {
        for w in 0..8u64 {
            let file = &file;
            s.spawn(move || {
                let data = pattern(w + 1, region as usize);
                let f = OpenOptions::new().write(true).open(file).unwrap();
                for at in (0..region as usize).step_by(30_000) {
                    f.write_all_at(&data[at..at + 30_000], w * region + at as u64).unwrap();
                }
                f.sync_data().unwrap();
            });
        }
    });
    fuse.unmount();
    let fuse = mount(&env, &url, &[]);
    let mut all = vec![0; (8 * region) as usize];
    std::fs::File::open(fuse.file()).unwrap().read_exact_at(&mut all, 0).unwrap();
    for w in 0..8u64 {
        let part = &all[(w * region) as usize..((w + 1) * region) as usize];
        assert!(part == pattern(w + 1, region as usize).as_slice(), "writer {w}'s bytes differ");
    }
    fuse.unmount();
}

#[test]
fn mismatched_block_size_fails_before_mounting() {
    let Some(env) = setup(&[]) else { return };
    let (url, _) = volume_url(&env, "mismatched_block_size");
    mount(&env, &url, &["--size=64M", "--block-size=64K"]).unmount();
    let out = mount_fails(&env, &url, &["--block-size=128K"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("64K") && stderr.contains("128K") && stderr.contains("--block-size"), "{stderr}");
    // The refused start left the volume unlocked.
    mount(&env, &url, &[]).unmount();
}

#[test]
fn sigterm_during_writes_keeps_every_fsynced_byte() {
    let Some(env) = setup(&[]) else { return };
    let (url, _) = volume_url(&env, "sigterm_during_writes");
    const CHUNK: usize = 100_000;
    let mut fuse = mount(&env, &url, &["--size=64M", "--block-size=64K"]);
    let durable = Arc::new(Mutex::new(Vec::<u64>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (file, durable, stop) = (fuse.file(), durable.clone(), stop.clone());
        std::thread::spawn(move || {
            let f = OpenOptions::new().write(true).open(&file).unwrap();
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) && i < 600 {
                f.write_all_at(&pattern(i + 1000, CHUNK), i * CHUNK as u64).unwrap();
                f.sync_data().unwrap();
                durable.lock().unwrap().push(i);
                i += 1;
            }
        })
    };
    let wait_for = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while durable.lock().unwrap().len() < n {
            assert!(Instant::now() < deadline, "the writer stalled at {}", durable.lock().unwrap().len());
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for(10);
    // The device is open, so the unmount SIGTERM asks for is refused: the
    // program stores what is written and keeps serving the writer.
    fuse.signal("TERM");
    let at_signal = durable.lock().unwrap().len();
    wait_for(at_signal + 10);
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    assert!(fuse.log().contains("cannot unmount"), "{}", fuse.log());
    // Closed: now SIGTERM unmounts, stores everything and exits 0.
    fuse.signal("TERM");
    let status = fuse.wait_exit();
    assert!(status.success(), "exit {status}:\n{}", fuse.log());

    let fuse = mount(&env, &url, &[]);
    let f = std::fs::File::open(fuse.file()).unwrap();
    let chunks = durable.lock().unwrap().clone();
    let mut buf = vec![0; CHUNK];
    for i in &chunks {
        f.read_exact_at(&mut buf, i * CHUNK as u64).unwrap();
        assert!(buf == pattern(i + 1000, CHUNK), "chunk {i} was fsync'd but differs after remount");
    }
    drop(f);
    fuse.unmount();
}
