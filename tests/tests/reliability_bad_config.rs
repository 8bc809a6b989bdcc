//! Bad input at start and at the edges of the device: a missing or corrupt
//! descriptor, options that contradict the volume, impossible geometry, a
//! lock held by another host, a bad mount point, and requests beyond the end
//! of the device. Each gives the user a clear message naming what is at
//! fault (checked here word for word where it matters), never a panic, and
//! no earlier data is lost: after each refusal the volume's bytes are
//! checked again. The volumes are local directories (`file://`).

#![allow(clippy::unwrap_used)] // a failed step should stop the test loudly

use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload};
use s3block_testkit::kernel::{
    Loop, Mount, assert_no_panic, fuse_command, is_mounted, kernel_available, pattern, run, run_output,
};

const FUSE: &str = env!("CARGO_BIN_EXE_rel-s3block-fuse");
const CLI: &str = env!("CARGO_BIN_EXE_rel-s3block");
const SIZE: u64 = 4 << 20;
const DATA_AT: u64 = 70_000;
const DATA_LEN: usize = 200_000;

/// A 4M volume in 64K blocks holding `DATA_LEN` bytes at `DATA_AT`.
fn volume_with_data() -> (tempfile::TempDir, String) {
    let store = tempfile::tempdir().unwrap();
    let url = format!("file://{}", store.path().display());
    let fuse = mount(&url, &["--size=4M", "--block-size=64K"]);
    let f = std::fs::OpenOptions::new().write(true).open(fuse.file()).unwrap();
    f.write_all_at(&pattern(1, DATA_LEN), DATA_AT).unwrap();
    f.sync_all().unwrap();
    drop(f);
    fuse.unmount();
    (store, url)
}

fn mount(url: &str, args: &[&str]) -> Mount {
    let dir = tempfile::tempdir().unwrap();
    Mount::spawn(fuse_command(FUSE, url, dir.path(), args), dir)
}

/// The volume still holds its data: mounted again, read, unmounted.
fn assert_data_intact(url: &str) {
    let fuse = mount(url, &[]);
    let mut buf = vec![0; DATA_LEN];
    std::fs::File::open(fuse.file()).unwrap().read_exact_at(&mut buf, DATA_AT).unwrap();
    assert!(buf == pattern(1, DATA_LEN), "the volume's data changed after a refused start");
    fuse.unmount();
}

/// A start that must fail with exit `code`; returns its standard error.
fn refused(url: &str, args: &[&str], code: i32) -> String {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().with_extension("log");
    let mut cmd = fuse_command(FUSE, url, dir.path(), args);
    let mut child = cmd.stderr(std::fs::File::create(&log).unwrap()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if is_mounted(dir.path()) || Instant::now() > deadline {
            let _ = run_output("fusermount3", &["-u", dir.path().to_str().unwrap()]);
            let _ = child.kill();
            let _ = child.wait();
            panic!("{args:?} was not refused:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    assert_eq!(status.code(), Some(code), "{args:?} must exit {code}:\n{stderr}");
    assert_no_panic("the refused mount", &stderr);
    eprintln!("{args:?}: {}", stderr.lines().last().unwrap_or_default());
    stderr
}

fn put(url: &str, name: &str, body: &'static [u8]) {
    let opened = s3block_store::StoreConfig::new(url).open().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let path = ObjectPath::from(format!("{}{name}", opened.prefix));
    runtime.block_on(opened.store.put(&path, PutPayload::from_static(body))).unwrap();
}

fn delete(url: &str, name: &str) {
    let opened = s3block_store::StoreConfig::new(url).open().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let path = ObjectPath::from(format!("{}{name}", opened.prefix));
    runtime.block_on(opened.store.delete(&path)).unwrap();
}

#[test]
fn missing_descriptor_is_refused_naming_the_volume() {
    if !kernel_available(&[]) {
        return;
    }
    let (_store, url) = volume_with_data();
    delete(&url, "s3block-volume.json");
    let stderr = refused(&url, &[], 2);
    assert!(
        stderr.contains(&format!("no volume at {url}")) && stderr.contains("no s3block descriptor"),
        "{stderr}"
    );
}

/// Known gap: with the descriptor gone (and no block 0), `--size` creates a
/// new volume over the block objects still stored, which then read as
/// zeros, and a partial write would replace them. Creation should refuse
/// while block objects exist under the prefix.
#[test]
fn missing_descriptor_with_size_does_not_hide_stored_blocks() {
    if !kernel_available(&[]) {
        return;
    }
    let (_store, url) = volume_with_data();
    delete(&url, "s3block-volume.json");
    let stderr = refused(&url, &["--size=4M", "--block-size=64K"], 2);
    assert!(
        stderr.contains("block objects are already stored") && stderr.contains("s3block create --adopt"),
        "{stderr}"
    );
    // Adopting the blocks with their geometry makes the data readable again.
    let out = run_output(CLI, &["create", &url, "--adopt", "--size=4M", "--block-size=64K"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_data_intact(&url);
}

#[test]
fn corrupt_descriptor_is_refused_naming_its_key() {
    if !kernel_available(&[]) {
        return;
    }
    let (_store, url) = volume_with_data();
    put(&url, "s3block-volume.json", b"{not json");
    let stderr = refused(&url, &[], 1);
    assert!(stderr.contains("s3block-volume.json"), "{stderr}");
    let out = run_output(CLI, &["info", &url]);
    let cli = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && cli.contains("s3block-volume.json"), "{cli}");
    assert_no_panic("s3block info", &cli);
}

#[test]
fn mismatched_block_size_and_size_are_refused_naming_both_values() {
    if !kernel_available(&[]) {
        return;
    }
    let (_store, url) = volume_with_data();
    let stderr = refused(&url, &["--block-size=128K"], 2);
    assert!(
        stderr.contains("block size mismatch")
            && stderr.contains("64K (65536 bytes)")
            && stderr.contains("128K (131072 bytes) was requested (--block-size)"),
        "{stderr}"
    );
    let stderr = refused(&url, &["--size=8M"], 2);
    assert!(
        stderr.contains("size mismatch")
            && stderr.contains("4M (4194304 bytes)")
            && stderr.contains("8M (8388608 bytes) was requested (--size)"),
        "{stderr}"
    );
    assert_data_intact(&url);
}

#[test]
fn impossible_geometry_is_refused_naming_the_value() {
    if !kernel_available(&[]) {
        return;
    }
    let store = tempfile::tempdir().unwrap();
    let url = format!("file://{}", store.path().display());
    let stderr = refused(&url, &["--size=32M", "--block-size=100K"], 2);
    assert!(stderr.contains("--block-size 102400: must be a power of two"), "{stderr}");
    let stderr = refused(&url, &["--size=1000000", "--block-size=64K"], 2);
    assert!(stderr.contains("the size 1000000 is not a multiple of the block size 64K"), "{stderr}");
    let stderr = refused(&url, &["--size=0"], 2);
    assert!(stderr.contains("the size must not be zero"), "{stderr}");
    let stderr = refused(&url, &["--size=64T", "--block-size=4K"], 2);
    assert!(
        stderr.contains("17179869184 blocks of 4K is more than the 4294967296 blocks a volume can have"),
        "{stderr}"
    );
    // None of them created anything.
    assert_eq!(std::fs::read_dir(store.path()).unwrap().count(), 0, "a refused start stored objects");
}

#[test]
fn lock_held_by_another_host_is_refused_naming_it() {
    if !kernel_available(&[]) {
        return;
    }
    let (_store, url) = volume_with_data();
    put(&url, "s3backer-mounted", b"otherhost.example\n20250101T000000Z\n");
    let stderr = refused(&url, &[], 4);
    assert!(
        stderr.contains("volume is already mounted by otherhost.example since 20250101T000000Z")
            && stderr.contains("break the lock with `s3block unlock`"),
        "{stderr}"
    );
    // A read-only mount beside it works and names the holder.
    let ro = mount(&url, &["--read-only"]);
    assert!(ro.log().contains("otherhost.example"), "{}", ro.log());
    ro.unmount();
    let out = run_output(CLI, &["unlock", "--force", &url]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Locked by otherhost.example") && stdout.contains("Lock removed"), "{stdout}");
    assert_data_intact(&url);
}

#[test]
fn missing_mount_point_is_refused_naming_it() {
    if !kernel_available(&[]) {
        return;
    }
    let (_store, url) = volume_with_data();
    let out =
        std::process::Command::new(FUSE).args(["-f", &url, "/nonexistent/s3block-rel"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("cannot mount on /nonexistent/s3block-rel: No such file or directory"),
        "{stderr}"
    );
    assert_no_panic("the refused mount", &stderr);
    // The failed start released the lock.
    assert_data_intact(&url);
}

/// A mount point that is not empty is refused, naming it, before the
/// volume is opened (s3backer's fuse2 refused it too); with `--nonempty`
/// the files underneath are hidden while mounted and untouched afterwards.
#[test]
fn non_empty_mount_point_is_refused_unless_asked() {
    if !kernel_available(&[]) {
        return;
    }
    let (_store, url) = volume_with_data();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("keep.txt"), b"underneath").unwrap();
    let kept = dir.path().to_owned();
    let out = std::process::Command::new(FUSE).args(["-f", &url, kept.to_str().unwrap()]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot mount on {}: the directory is not empty", kept.display()))
            && stderr.contains("--nonempty"),
        "{stderr}"
    );
    assert_no_panic("the refused mount", &stderr);
    let mut cmd = fuse_command(FUSE, &url, &kept, &["--nonempty"]);
    cmd.stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    while !is_mounted(&kept) {
        assert!(child.try_wait().unwrap().is_none(), "the mount exited");
        std::thread::sleep(Duration::from_millis(50));
    }
    let hidden = !kept.join("keep.txt").exists();
    run("fusermount3", &["-u", kept.to_str().unwrap()]);
    assert!(hidden, "the mount does not cover the directory");
    assert!(child.wait().unwrap().success());
    assert_eq!(std::fs::read(kept.join("keep.txt")).unwrap(), b"underneath");
    assert_data_intact(&url);
}

#[test]
fn requests_beyond_the_end_fail_cleanly_and_lose_nothing() {
    if !kernel_available(&["losetup", "dd"]) {
        return;
    }
    let (_store, url) = volume_with_data();
    let fuse = mount(&url, &[]);
    let f = std::fs::OpenOptions::new().read(true).write(true).open(fuse.file()).unwrap();
    let err = f.write_at(b"past", SIZE).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    let err = f.write_at(b"far past", SIZE * 1000).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    assert_eq!(f.write_at(&[7u8; 100], SIZE - 10).unwrap(), 10, "a write across the end is short");
    let mut buf = [0u8; 100];
    assert_eq!(f.read_at(&mut buf, SIZE - 10).unwrap(), 10, "a read across the end is short");
    assert_eq!(&buf[..10], &[7u8; 10]);
    assert_eq!(f.read_at(&mut buf, SIZE).unwrap(), 0);
    assert_eq!(f.read_at(&mut buf, SIZE * 1000).unwrap(), 0);
    // Resizing is EINVAL, as truncate(2) gives on a block device node.
    let err = f.set_len(SIZE * 2).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{err}");
    f.sync_all().unwrap();
    drop(f);

    // Through a loop device, the kernel itself refuses I/O past the end.
    let lo = Loop::attach(&fuse.file());
    let seek = format!("seek={}", SIZE / 512);
    let out = run_output(
        "dd",
        &["if=/dev/zero", &format!("of={}", lo.device), "bs=512", "count=8", &seek, "oflag=direct"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("No space left on device"), "{stderr}");
    lo.detach();
    let log = fuse.unmount();
    assert_no_panic("the mount", &log);
    assert_data_intact(&url);
}
