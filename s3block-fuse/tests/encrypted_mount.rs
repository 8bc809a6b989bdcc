//! Real-kernel test of an encrypted volume in a local directory: mount it
//! in the background with a password file, write, unmount; a wrong password
//! then fails before anything is mounted; the right one reads the data back.
//!
//! Needs /dev/fuse and fusermount3; without them the test says so and
//! passes, except under `CI=true`, where it fails.

#![allow(clippy::unwrap_used)] // test code: a failed step should stop the test loudly

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use s3block_testkit::kernel::{is_mounted, kernel_available};

const BIN: &str = env!("CARGO_BIN_EXE_s3block-fuse");

/// Mounts in the background (the program returns once mounted or failed);
/// its exit status and what it wrote to standard error (a file: the
/// background process keeps it open).
fn mount(store: &str, mnt: &Path, extra: &[&str]) -> (ExitStatus, String) {
    let log = mnt.with_extension(format!("log{}", extra.len()));
    let status = Command::new(BIN)
        .args(extra)
        .arg(store)
        .arg(mnt)
        .env_remove("S3BLOCK_PASSWORD")
        .env_remove("S3BLOCK_PASSWORD_FILE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .status()
        .expect("s3block-fuse runs");
    (status, std::fs::read_to_string(&log).unwrap_or_default())
}

/// Unmounts and waits until the background process has stored everything
/// and released the lock.
fn unmount(mnt: &Path, volume: &Path) {
    let status = Command::new("fusermount3").arg("-u").arg(mnt).status().unwrap();
    assert!(status.success(), "fusermount3 -u {}", mnt.display());
    let lock = volume.join("s3backer-mounted");
    let deadline = Instant::now() + Duration::from_secs(30);
    while lock.exists() {
        assert!(Instant::now() < deadline, "the mount lock was not released after unmount");
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Unmount<'a>(&'a Path);

impl Drop for Unmount<'_> {
    fn drop(&mut self) {
        if is_mounted(self.0) {
            let _ = Command::new("fusermount3").arg("-uz").arg(self.0).status();
        }
    }
}

#[test]
fn encrypted_volume_mounts_with_its_password_only() {
    if !kernel_available(&[]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (volume, mnt) = (tmp.path().join("volume"), tmp.path().join("mnt"));
    std::fs::create_dir(&volume).unwrap();
    std::fs::create_dir(&mnt).unwrap();
    let _guard = Unmount(&mnt);
    let (right, wrong) = (tmp.path().join("right"), tmp.path().join("wrong"));
    std::fs::write(&right, "tr0ub4dor&3\n").unwrap();
    std::fs::write(&wrong, "Tr0ub4dor&3\n").unwrap();
    let pw = |p: &Path| format!("--password-file={}", p.display());
    let store = format!("file://{}", volume.display());
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8 | 1).collect();

    let (status, log) = mount(&store, &mnt, &["--size=4M", "--block-size=64K", "--encrypt", &pw(&right)]);
    assert!(status.success(), "mount failed: {log}");
    assert!(is_mounted(&mnt));
    {
        let mut f = std::fs::OpenOptions::new().write(true).open(mnt.join("file")).unwrap();
        f.write_all_at(&data, 300_000).unwrap();
        f.flush().unwrap();
        f.sync_all().unwrap();
    }
    unmount(&mnt, &volume);
    // What was stored is ciphertext.
    let object = std::fs::read(volume.join("00000005")).unwrap();
    assert!(!object.windows(32).any(|w| w == &data[27_680..27_712]));

    // The wrong password fails at start, saying so, and nothing is mounted.
    let (status, err) = mount(&store, &mnt, &[&pw(&wrong)]);
    assert_eq!(status.code(), Some(7), "{err}");
    assert!(err.contains("wrong password"), "{err}");
    assert!(!is_mounted(&mnt));
    assert!(!volume.join("s3backer-mounted").exists(), "a refused start left the lock behind");

    // The right one (no --encrypt needed: the descriptor says) reads it back.
    let (status, log) = mount(&store, &mnt, &["--read-only", &pw(&right)]);
    assert!(status.success(), "remount failed: {log}");
    let mut back = vec![0u8; data.len()];
    std::fs::File::open(mnt.join("file")).unwrap().read_exact_at(&mut back, 300_000).unwrap();
    assert!(back == data, "the data read back differs");
    drop(back);
    unmount(&mnt, &volume);
    assert!(!is_mounted(&mnt));
}
