//! `s3block resize MOUNTPOINT --size NEW`: a mounted volume grows under
//! ext4 on a loop device while a writer runs, without unmounting the
//! volume; and what a mounted volume refuses (shrinking, another block
//! size, a size that is not whole blocks, another user, a read-only mount,
//! a mount with a disk cache).
//!
//! Needs /dev/fuse, fusermount3, losetup, mkfs.ext4, resize2fs, e2fsck and
//! setpriv; without them it says so and passes, except under `CI=true`.
//!
//! ext4 grows a mounted filesystem only for a process with
//! CAP_SYS_RESOURCE. Where the test runs without it (a container that
//! drops it), `resize2fs` on the mounted filesystem is refused; the test
//! then unmounts ext4 alone (the s3block mount and the loop device stay)
//! and grows it offline, and says so.

#![allow(clippy::unwrap_used)] // test code: a failed step should stop the test loudly

mod nbd_support;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use s3block_testkit::kernel::{
    FsMount, Loop, Mount, check_files, checksum, fsync_writer, fuse_command, kernel_available, mkfs_ext4,
    pattern, run, run_output,
};

use nbd_support::{FUSE, Server, Store, output, tools};

const CLI: &str = env!("CARGO_BIN_EXE_rel-s3block");
const MIB: u64 = 1 << 20;

fn size_of(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

/// `s3block resize ARGS...`: exit code, standard output, standard error.
fn resize(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(CLI).arg("resize").args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Block 0's `s3backer-filesize`, as the local store keeps it (its newest
/// version first).
fn block0_filesize(bucket: &Path) -> u64 {
    let attrs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bucket.join("00000000.s3block-attrs")).unwrap())
            .unwrap();
    let newest = &attrs["versions"][0];
    newest["attributes"]["meta:s3backer-filesize"].as_str().unwrap().parse().unwrap()
}

#[test]
fn a_mounted_volume_grows_under_ext4_while_a_writer_runs() {
    if !kernel_available(&["losetup", "mkfs.ext4", "resize2fs", "e2fsck", "blockdev"]) {
        return;
    }
    let started = Instant::now();
    let bucket = tempfile::tempdir().unwrap();
    let url = format!("file://{}", bucket.path().display());
    let mnt = tempfile::tempdir().unwrap();
    let args = ["--size=64M", "--block-size=64K"];
    let mount = Mount::spawn(fuse_command(FUSE, &url, mnt.path(), &args), mnt);
    let lo = Loop::attach(&mount.file());
    mkfs_ext4(&lo.device);
    let mut fs = FsMount::mount(&lo.device);

    // Fill some: 16 files of 1 MiB.
    let mut files = std::collections::BTreeMap::new();
    for i in 0..16u64 {
        let data = pattern(i, MIB as usize);
        std::fs::write(fs.path().join(format!("fill{i}")), &data).unwrap();
        files.insert(format!("fill{i}"), checksum(&data));
    }

    // A writer runs through the grow.
    let (tx, rx) = std::sync::mpsc::channel();
    let pause = Arc::new(AtomicBool::new(false));
    let paused = Arc::new(AtomicBool::new(false));
    let writer = {
        let (root, pause, paused) = (fs.path().to_owned(), pause.clone(), paused.clone());
        std::thread::spawn(move || fsync_writer(&root, 1, tx, &pause, &paused))
    };
    let mut written: Vec<(String, u64)> = Vec::new();
    std::thread::sleep(Duration::from_millis(300));
    let (code, out, err) = resize(&[mount.path().to_str().unwrap(), "--size", "+64M"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("from 64M to 128M"), "{out}");
    // The device file's size changed at once (the kernel was told).
    assert_eq!(size_of(&mount.file()), 128 * MIB);
    // The bucket holds the new size twice: the descriptor and block 0.
    let descriptor: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bucket.path().join("s3block-volume.json")).unwrap())
            .unwrap();
    assert_eq!(descriptor["size"], 128 * MIB);
    assert_eq!(block0_filesize(bucket.path()), 128 * MIB);

    run("losetup", &["-c", &lo.device]);
    assert_eq!(run("blockdev", &["--getsize64", &lo.device]).trim(), (128 * MIB).to_string());
    let online = run_output("resize2fs", &[&lo.device]);
    if !online.status.success() {
        let why = String::from_utf8_lossy(&online.stderr).into_owned();
        assert!(why.contains("Permission denied"), "resize2fs failed: {why}");
        eprintln!("ext4 cannot grow while mounted here (no CAP_SYS_RESOURCE): growing it unmounted instead");
        pause.store(true, Ordering::SeqCst);
        while !paused.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(10));
        }
        fs.unmount();
        written.extend(rx.try_iter());
        // Its directory is gone with the unmount: the writer stops at its next file.
        pause.store(false, Ordering::SeqCst);
        run("e2fsck", &["-fy", &lo.device]);
        run("resize2fs", &[&lo.device]);
        fs = FsMount::mount(&lo.device);
    }
    // Past the old end: 80 MiB more than the old filesystem could hold.
    for i in 16..96u64 {
        let data = pattern(i, MIB as usize);
        std::fs::write(fs.path().join(format!("fill{i}")), &data).unwrap();
        files.insert(format!("fill{i}"), checksum(&data));
    }
    let sync = std::fs::File::open(fs.path()).unwrap();
    sync.sync_all().unwrap();
    drop(sync);
    // The writer stops at the unmount; what it fsync'd is checked.
    pause.store(true, Ordering::SeqCst);
    while !paused.load(Ordering::SeqCst) && !writer.is_finished() {
        std::thread::sleep(Duration::from_millis(10));
    }
    written.extend(rx.try_iter());
    assert!(!written.is_empty(), "the writer wrote during the grow");
    files.extend(written);
    check_files(fs.path(), &files);
    fs.unmount();
    pause.store(false, Ordering::SeqCst);
    drop(writer);
    lo.detach();
    mount.unmount();

    // Mounted again: 128M, a clean filesystem, every file as written.
    let mnt = tempfile::tempdir().unwrap();
    let mount = Mount::spawn(fuse_command(FUSE, &url, mnt.path(), &[]), mnt);
    assert_eq!(size_of(&mount.file()), 128 * MIB);
    let lo = Loop::attach(&mount.file());
    let check = run_output("e2fsck", &["-fn", &lo.device]);
    assert!(check.status.success(), "e2fsck -fn: {}", String::from_utf8_lossy(&check.stdout));
    let fs = FsMount::mount(&lo.device);
    let bytes = check_files(fs.path(), &files);
    assert!(bytes >= 96 * MIB);
    fs.unmount();
    lo.detach();
    mount.unmount();
    eprintln!(
        "grew 64M to 128M under ext4, {} files checked, in {:.1}s",
        files.len(),
        started.elapsed().as_secs_f32()
    );
}

#[test]
fn a_mounted_volume_refuses_to_shrink_change_blocks_or_serve_others() {
    if !kernel_available(&["setpriv"]) {
        return;
    }
    let bucket = tempfile::tempdir().unwrap();
    let url = format!("file://{}", bucket.path().display());
    let mnt = tempfile::tempdir().unwrap();
    let mount = Mount::spawn(fuse_command(FUSE, &url, mnt.path(), &["--size=16M", "--block-size=64K"]), mnt);
    let dir = mount.path().to_str().unwrap();
    for (args, says) in [
        (&["--size", "8M"][..], "cannot shrink a mounted volume (16M to 8M)"),
        (&["--size", "-1M"], "cannot shrink a mounted volume"),
        (&["--size", "32M", "--block-size", "4K"], "a resize keeps the block size (64K, 4K asked)"),
        (&["--size", "+1000"], "not a whole number of the volume's 64K blocks"),
        (&["--size", "+1M", "--discard-tail"], "a mounted volume only grows"),
    ] {
        let mut all = vec![dir];
        all.extend_from_slice(args);
        let (code, out, err) = resize(&all);
        assert_ne!(code, 0, "{args:?}: {out}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert_eq!(size_of(&mount.file()), 16 * MIB, "nothing changed");

    // The control file is the mount owner's: mode 0600, and another user
    // cannot use it even where the mount lets it in.
    let control = mount.path().join("control");
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&control).unwrap();
    assert_eq!((meta.mode() & 0o777, meta.uid()), (0o600, 0));
    let other = run_output(
        "setpriv",
        &[
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
            &format!("echo size > {}", control.display()),
        ],
    );
    assert!(!other.status.success(), "another user used the control file");
    // Bad requests are answered with what was expected; nothing panics.
    let file = std::fs::OpenOptions::new().read(true).write(true).open(&control).unwrap();
    use std::os::unix::fs::FileExt;
    for (request, says) in [
        (&b"grow 1\n"[..], "error unknown request \"grow 1\""),
        (b"resize x\n", "error the size \"x\" is not a number of bytes"),
        (&[b'9'; 1000][..], "error the request is 1000 bytes, more than 256"),
        (b"size\n", "ok 16777216 65536"),
    ] {
        file.write_at(request, 0).unwrap();
        let mut buf = [0u8; 512];
        let n = file.read_at(&mut buf, 0).unwrap();
        let answer = String::from_utf8_lossy(&buf[..n]);
        assert!(answer.starts_with(says), "{answer}");
    }
    drop(file);
    // The device file names its mount too, and growing to the same size changes nothing.
    let (code, out, err) = resize(&[mount.file().to_str().unwrap(), "--size", "16M"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("nothing changed"), "{out}");
    let log = mount.unmount();
    assert!(!log.contains("panicked"), "{log}");

    // A read-only mount and a mount with a disk cache say why they cannot grow.
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = format!("--cache-dir={}", cache.path().display());
    for (args, says) in
        [(&["--read-only"][..], "mounted read-only"), (&[cache_dir.as_str()][..], "disk cache")]
    {
        let mnt = tempfile::tempdir().unwrap();
        let mount = Mount::spawn(fuse_command(FUSE, &url, mnt.path(), args), mnt);
        let (code, _, err) = resize(&[mount.path().to_str().unwrap(), "--size", "32M"]);
        assert_ne!(code, 0);
        assert!(err.contains(says), "{args:?}: {err}");
        assert_eq!(size_of(&mount.file()), 16 * MIB);
        mount.unmount();
    }
}

#[test]
fn the_nbd_server_grows_for_the_clients_that_connect_next() {
    let store = Store::local();
    let server = Server::start(&store, &["--size=16M", "--block-size=64K"]);
    let socket = server.socket();
    let control = std::path::PathBuf::from(format!("{}.control", socket.display()));
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = std::fs::metadata(&control).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.mode() & 0o777, 0o600, "the control socket is its owner's");

    let (code, out, err) = resize(&[socket.to_str().unwrap(), "--size", "+16M"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("from 16M to 32M") && out.contains("connect again"), "{out}");
    let (code, _, err) = resize(&[control.to_str().unwrap(), "--size", "8M"]);
    assert_ne!(code, 0);
    assert!(err.contains("cannot shrink a mounted volume (32M to 8M)"), "{err}");
    // A client that connects now is given the new size.
    if tools(&["nbdinfo"]) {
        let info = output("nbdinfo", &["--size", &server.uri()]);
        assert_eq!(String::from_utf8_lossy(&info.stdout).trim(), (32 * MIB).to_string(), "{info:?}");
    }
    // A bad request is answered with what was expected.
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(&control).unwrap();
    stream.write_all(b"grow 1\n").unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("error unknown request \"grow 1\""), "{answer}");
    let log = server.stop();
    assert!(!control.exists(), "the control socket is removed at exit: {log}");
    let descriptor: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(store.url.strip_prefix("file://").unwrap()).join("s3block-volume.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(descriptor["size"], 32 * MIB);
}
