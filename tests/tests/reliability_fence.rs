//! A forced mount fences the old writer.
//!
//! Mount A, used through a loop device as a filesystem would use it,
//! writes two blocks and keeps them dirty (a write delay of ten minutes);
//! someone runs `s3block unlock --force` and mounts B, which writes one of
//! those blocks and fsyncs. Then A's fsync must fail with EIO (A checks its
//! lock before a flush lets anything through), so must a further write;
//! A's two dirty blocks must never reach the bucket; A's unmount must end
//! (exit 4, no retrying) saying how many dirty blocks it dropped, or kept
//! in its disk cache; B's data must be intact, read by B and by a mount
//! after both.
//!
//! Why a loop device: every close of a descriptor of A's file sends the
//! mount a flush, and a program that starts another (this test starting
//! `s3block unlock` and B) closes its copies of its descriptors at the
//! `exec`: holding A's file open here would store A's blocks before the
//! unlock. The loop device holds the file in the kernel instead, as it
//! does under ext4.
//!
//! On a local directory (`file://`) and on Garage, each without and with a
//! disk cache (`--cache-dir`). Garage ignores conditional writes, so its
//! lock is advisory; the fence works the same way there (it only reads the
//! lock).

#![allow(clippy::unwrap_used)] // a failed step should stop the test loudly

use std::os::unix::fs::FileExt;
use std::process::Command;
use std::time::{Duration, Instant};

use s3block_testkit::kernel::{
    Loop, Mount, assert_no_panic, fuse_command, fusermount_u, kernel_available, pattern,
};
use s3block_testkit::{s3_env, unique_prefix};

const FUSE: &str = env!("CARGO_BIN_EXE_rel-s3block-fuse");
const CLI: &str = env!("CARGO_BIN_EXE_rel-s3block");
const BLOCK: usize = 64 * 1024;

/// Where the volume is: its URL and, for S3, the endpoint.
struct Place {
    url: String,
    endpoint: Option<String>,
}

impl Place {
    fn mount(&self, extra: &[&str]) -> Mount {
        let dir = tempfile::tempdir().unwrap();
        let mut args = vec!["--size=64M", "--block-size=64K"];
        args.extend_from_slice(extra);
        let mut cmd = fuse_command(FUSE, &self.url, dir.path(), &args);
        if let Some(ep) = &self.endpoint {
            cmd.env("S3BLOCK_ENDPOINT", ep);
        }
        Mount::spawn(cmd, dir)
    }

    fn force_unlock(&self) -> String {
        let mut cmd = Command::new(CLI);
        cmd.args(["unlock", "--force", &self.url]).env_remove("S3BLOCK_PREFIX");
        if let Some(ep) = &self.endpoint {
            cmd.env("S3BLOCK_ENDPOINT", ep);
        }
        let out = cmd.output().unwrap();
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "s3block unlock --force: {text}");
        text
    }
}

fn read_block(file: &std::fs::File, block: usize) -> Vec<u8> {
    let mut buf = vec![0u8; BLOCK];
    file.read_exact_at(&mut buf, (block * BLOCK) as u64).unwrap();
    buf
}

fn open_rw(mount: &Mount) -> std::fs::File {
    std::fs::OpenOptions::new().read(true).write(true).open(mount.file()).unwrap()
}

fn is_eio(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::EIO)
}

/// Writes block `block` of `device` (a loop device) with `pattern(seed)`,
/// bypassing the device's page cache (`dd oflag=direct`), so the write
/// reaches the mount at once; returns dd's status and message.
fn dd_block(device: &str, block: usize, seed: u64) -> (bool, String) {
    let input = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(input.path(), pattern(seed, BLOCK)).unwrap();
    let out = Command::new("dd")
        .arg(format!("if={}", input.path().display()))
        .arg(format!("of={device}"))
        .args(["bs=64K", "count=1", "oflag=direct", "status=none"])
        .arg(format!("seek={block}"))
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The whole scenario on `place`; returns the figures line.
fn fenced_writer(place: &Place, with_disk: bool) -> String {
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = format!("--cache-dir={}", cache.path().join("a").display());
    // Whole blocks written wait for the delay too: they stay dirty.
    let mut a_args = vec!["--write-delay=600000", "--prompt-uploads=off"];
    if with_disk {
        a_args.push(&cache_dir);
    }
    let a = place.mount(&a_args);
    let lo = Loop::attach(&a.file());
    // Block 5 is written again by B; block 9 by A only.
    for (block, seed) in [(5, 1), (9, 2)] {
        let (ok, said) = dd_block(&lo.device, block, seed);
        assert!(ok, "dd to A's loop device: {said}");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while a.stat("dirty") < 2 {
        assert!(Instant::now() < deadline, "A's two blocks never became dirty:\n{}", a.log());
        std::thread::sleep(Duration::from_millis(50));
    }

    let forced = Instant::now();
    let said = place.force_unlock();
    assert!(said.contains("Lock removed"), "{said}");
    let b = place.mount(&[]);
    let fb = open_rw(&b);
    fb.write_all_at(&pattern(3, BLOCK), 5 * BLOCK as u64).unwrap();
    fb.sync_all().unwrap();

    // A's fsync (the loop device's flush reaches the mount as an fsync):
    // EIO, at its first look at the lock.
    let fa = std::fs::OpenOptions::new().read(true).write(true).open(&lo.device).unwrap();
    let err = fa.sync_all().expect_err("A's fsync succeeded after its lock was taken");
    let noticed = forced.elapsed();
    assert!(is_eio(&err), "A's fsync failed with {err}, not EIO");
    drop(fa);
    let (ok, said) = dd_block(&lo.device, 12, 4);
    assert!(!ok && said.contains("Input/output error"), "A's further write: {said}");
    let log = a.log();
    let Some(line) = log.lines().find(|l| l.contains("FENCED")) else {
        panic!("A's log does not say it was fenced:\n{log}");
    };
    assert!(line.contains("removed") || line.contains(&s3block_store::hostname()), "{line}");

    // A's unmount ends by itself, saying what it kept or dropped.
    lo.detach();
    let mut a = a;
    let stopping = Instant::now();
    // The detached loop device lets go of the file a moment later.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = fusermount_u(a.path());
        if out.status.success() {
            break;
        }
        let why = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(Instant::now() < deadline && why.contains("busy"), "fusermount3 -u A: {why}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = a.wait_exit();
    let stopped = stopping.elapsed();
    let log = a.log();
    assert_eq!(status.code(), Some(4), "A's exit after being fenced:\n{log}");
    let counted = if with_disk { "2 dirty block(s) KEPT" } else { "2 dirty block(s) DROPPED" };
    assert!(log.contains(counted), "A's exit does not say {counted:?}:\n{log}");
    assert!(!log.contains("every block is stored"), "{log}");
    assert_no_panic("the fenced mount", &log);
    let reads = log
        .split("the lock was read ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("A's exit does not say how often it read the lock:\n{log}"));
    drop(a);

    // B is intact, and still holds its lock.
    assert_eq!(read_block(&fb, 5), pattern(3, BLOCK), "B's block changed under it");
    drop(fb);
    b.unmount();

    // After both: B's block, and nothing of A's.
    let c = place.mount(&[]);
    let fc = open_rw(&c);
    assert_eq!(read_block(&fc, 5), pattern(3, BLOCK), "B's block was overwritten");
    assert_eq!(read_block(&fc, 9), vec![0u8; BLOCK], "A's dirty block reached the bucket");
    assert_eq!(read_block(&fc, 12), vec![0u8; BLOCK], "A's refused write reached the bucket");
    drop(fc);
    c.unmount();
    if with_disk {
        // The kept blocks are still there for a person: the directory is refused.
        let inspect = Command::new(CLI)
            .args(["cache", "inspect", &cache.path().join("a").display().to_string()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&inspect.stdout);
        assert!(text.contains('5') && text.contains('9'), "s3block cache inspect:\n{text}");
    }
    format!(
        "{}: A's fsync failed with EIO {:.2}s after the forced unlock; A exited (code 4) {:.2}s after \
         fusermount -u; {} lock reads by A; {counted}",
        if with_disk { "with a disk cache" } else { "memory only" },
        noticed.as_secs_f32(),
        stopped.as_secs_f32(),
        reads
    )
}

#[test]
fn a_forced_mount_fences_the_old_writer_on_a_local_directory() {
    if !kernel_available(&["losetup", "dd"]) {
        return;
    }
    for with_disk in [false, true] {
        let store = tempfile::tempdir().unwrap();
        let place = Place { url: format!("file://{}", store.path().display()), endpoint: None };
        let figures = fenced_writer(&place, with_disk);
        eprintln!("FIGURES fence (file://) {figures}");
    }
}

#[test]
fn a_forced_mount_fences_the_old_writer_on_garage() {
    if !kernel_available(&["losetup", "dd"]) {
        return;
    }
    let Some(env) = s3_env() else { return };
    for with_disk in [false, true] {
        let url = format!("s3://{}/{}", env.bucket, unique_prefix("fence"));
        let place = Place { url, endpoint: Some(env.endpoint.clone()) };
        let figures = fenced_writer(&place, with_disk);
        eprintln!("FIGURES fence (Garage) {figures}");
    }
}

/// A mount that keeps writing (the default write delay, no fsync) after
/// its lock was broken and taken: its next upload more than five seconds
/// after its last check reads the lock and is refused, and from then on
/// its writes get EIO. Whatever it wrote before that, B's block is intact.
#[test]
fn a_writing_mount_is_fenced_by_its_uploads_without_an_fsync() {
    if !kernel_available(&["losetup", "dd"]) {
        return;
    }
    let store = tempfile::tempdir().unwrap();
    let place = Place { url: format!("file://{}", store.path().display()), endpoint: None };
    let a = place.mount(&[]);
    let lo = Loop::attach(&a.file());
    let (ok, said) = dd_block(&lo.device, 20, 1);
    assert!(ok, "dd to A: {said}");
    let forced = Instant::now();
    place.force_unlock();
    let b = place.mount(&[]);
    let fb = open_rw(&b);
    fb.write_all_at(&pattern(3, BLOCK), 5 * BLOCK as u64).unwrap();
    fb.sync_all().unwrap();
    // A writes a block every 100 ms until a write fails.
    let mut written = 0;
    let refused = loop {
        let (ok, said) = dd_block(&lo.device, 21 + written % 40, 10 + written as u64);
        if !ok {
            assert!(said.contains("Input/output error"), "A's write failed otherwise: {said}");
            break forced.elapsed();
        }
        written += 1;
        assert!(forced.elapsed() < Duration::from_secs(30), "A still writes 30 s after the forced unlock");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(a.log().contains("FENCED"), "{}", a.log());
    lo.detach();
    let mut a = a;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !fusermount_u(a.path()).status.success() {
        assert!(Instant::now() < deadline, "A stays busy");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(a.wait_exit().code(), Some(4), "{}", a.log());
    assert_eq!(read_block(&fb, 5), pattern(3, BLOCK), "B's block changed under it");
    drop(fb);
    b.unmount();
    eprintln!(
        "FIGURES fence (file://) without fsync: A's writes failed with EIO {:.2}s after the forced unlock, \
         after {written} more blocks written",
        refused.as_secs_f32()
    );
}
