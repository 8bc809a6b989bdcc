//! Real-kernel tests: the built binary mounts `memory://` and std::fs uses it.
//!
//! They need /dev/fuse and fusermount3 (Debian package `fuse3`). Without
//! them the tests say so and pass, except under `CI=true`, where a missing
//! device fails the test: CI must not report a mount test it did not run.

#![allow(clippy::unwrap_used)] // test helpers: a failed step should stop the test loudly

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use s3block_testkit::kernel::{Mount, fuse_command, is_mounted, kernel_available};

const BIN: &str = env!("CARGO_BIN_EXE_s3block-fuse");
const SIZE: u64 = 16 << 20;

/// s3block-fuse in the foreground on a 16M `memory://` volume of 64K blocks:
/// up within 15 s, and given 30 s to exit once told to.
fn start(extra: &[&str]) -> Mount {
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<&str> =
        ["--size=16M", "--block-size=64K"].into_iter().chain(extra.iter().copied()).collect();
    let cmd = fuse_command(BIN, "memory://", dir.path(), &args);
    Mount::spawn_within(cmd, dir, Duration::from_secs(15), Duration::from_secs(30))
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8 | 1).collect()
}

#[test]
fn mount_write_fsync_read_unmount() {
    if !kernel_available(&[]) {
        return;
    }
    let mut mount = start(&[]);
    let file = mount.path().join("file");
    assert_eq!(std::fs::metadata(&file).unwrap().len(), SIZE);

    // A write across block boundaries, made durable, then read back.
    let data = pattern(300_000);
    let mut f = OpenOptions::new().read(true).write(true).open(&file).unwrap();
    f.seek(SeekFrom::Start(100_000)).unwrap();
    f.write_all(&data).unwrap();
    f.sync_all().unwrap();
    f.sync_data().unwrap();
    let mut back = vec![0; data.len()];
    f.read_exact_at(&mut back, 100_000).unwrap();
    assert_eq!(back, data);
    // Bytes around it are zeros.
    let mut edge = [9u8; 16];
    f.read_exact_at(&mut edge, 100_000 - 16).unwrap();
    assert_eq!(edge, [0; 16]);

    // End of the device: short read, ENOSPC write; truncate refused.
    let mut tail = vec![0; 100];
    assert_eq!(f.read_at(&mut tail, SIZE - 10).unwrap(), 10);
    assert_eq!(f.read_at(&mut tail, SIZE).unwrap(), 0);
    let err = f.write_at(b"x", SIZE).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    let err = f.set_len(0).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{err}");
    drop(f);

    // A fresh open sees the same bytes (not just the page cache of one fd).
    let mut g = std::fs::File::open(&file).unwrap();
    g.seek(SeekFrom::Start(100_000)).unwrap();
    let mut again = vec![0; data.len()];
    g.read_exact(&mut again).unwrap();
    assert_eq!(again, data);
    drop(g);

    // The stats file shows the writes; unlinking it is allowed.
    let stats = std::fs::read_to_string(mount.path().join("stats")).unwrap();
    assert!(stats.contains("[cache]") && stats.contains("[store requests]"), "{stats}");
    assert!(!stats.contains("PUT             0\n"), "fsync stored blocks, yet: {stats}");
    std::fs::remove_file(mount.path().join("stats")).unwrap();
    let stats = std::fs::read_to_string(mount.path().join("stats")).unwrap();
    assert!(stats.contains("PUT             0\n"), "unlinking did not reset: {stats}");

    let out = Command::new("fusermount3").arg("-u").arg(mount.path()).output().unwrap();
    assert!(out.status.success(), "fusermount3 -u: {}", String::from_utf8_lossy(&out.stderr));
    let status = mount.wait_exit();
    assert!(status.success(), "exit {status}:\n{}", mount.log());
    assert!(mount.log().contains("every block is stored"), "{}", mount.log());
}

#[test]
fn parallel_writers_get_their_bytes_back() {
    if !kernel_available(&[]) {
        return;
    }
    let mut mount = start(&[]);
    let file = mount.path().join("file");
    // Eight writers, each on its own region, regions sharing blocks at their edges.
    let region = 200_000u64;
    let bytes_of = |w: u64| -> Vec<u8> { (0..region).map(|i| ((i as u8) ^ (w as u8 + 1)) | 1).collect() };
    std::thread::scope(|s| {
        for w in 0..8u64 {
            let (file, data) = (&file, bytes_of(w));
            s.spawn(move || {
                let f = OpenOptions::new().write(true).open(file).unwrap();
                for at in (0..region as usize).step_by(20_000) {
                    f.write_all_at(&data[at..at + 20_000], w * region + at as u64).unwrap();
                }
                f.sync_data().unwrap();
            });
        }
    });
    let mut all = vec![0; (8 * region) as usize];
    std::fs::File::open(&file).unwrap().read_exact_at(&mut all, 0).unwrap();
    for w in 0..8u64 {
        let part = &all[(w * region) as usize..((w + 1) * region) as usize];
        assert!(part == bytes_of(w).as_slice(), "writer {w}'s bytes differ");
    }
    assert!(Command::new("fusermount3").arg("-u").arg(mount.path()).status().unwrap().success());
    assert!(mount.wait_exit().success(), "{}", mount.log());
}

/// The kernel's largest write request follows the block size (32 blocks,
/// from 128 KiB to 1 MiB): a 2 MiB `write` reaches a 4K volume as requests
/// of 128 KiB, an 8K one as 256 KiB, a 256K one as 1 MiB, and the bytes
/// read back.
#[test]
fn the_largest_write_request_follows_the_block_size() {
    if !kernel_available(&[]) {
        return;
    }
    for (block_size, largest) in [("4K", 128 << 10), ("8K", 256 << 10), ("256K", 1 << 20)] {
        let dir = tempfile::tempdir().unwrap();
        let size = format!("--block-size={block_size}");
        let mut cmd = fuse_command(BIN, "memory://", dir.path(), &["--size=16M", &size]);
        cmd.env("RUST_LOG", "info,s3block_fuse::session=debug");
        let mount = Mount::spawn_within(cmd, dir, Duration::from_secs(15), Duration::from_secs(30));
        let data = pattern(2 << 20);
        let f = OpenOptions::new().read(true).write(true).open(mount.file()).unwrap();
        f.write_all_at(&data, 0).unwrap();
        let mut back = vec![0; data.len()];
        f.read_exact_at(&mut back, 0).unwrap();
        assert!(back == data, "{block_size}: the bytes read back differ");
        drop(f);
        let log = mount.unmount();
        let sizes: Vec<u64> = log
            .lines()
            .filter(|l| l.contains(" write "))
            .filter_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("size=")))
            .map(|n| n.parse().unwrap())
            .collect();
        assert_eq!(
            sizes.iter().sum::<u64>(),
            data.len() as u64,
            "{block_size}: write requests in the log:\n{log}"
        );
        assert_eq!(
            sizes.iter().max(),
            Some(&largest),
            "{block_size}: the largest write request; log:\n{log}"
        );
    }
}

#[test]
fn sigterm_unmounts_and_exits_zero() {
    if !kernel_available(&[]) {
        return;
    }
    let mut mount = start(&[]);
    std::fs::OpenOptions::new()
        .write(true)
        .open(mount.path().join("file"))
        .unwrap()
        .write_all(b"hello")
        .unwrap();
    let pid = mount.pid().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = mount.wait_exit();
    assert!(status.success(), "exit {status}:\n{}", mount.log());
    assert!(!is_mounted(mount.path()), "still mounted after exit");
}

#[test]
fn read_only_mount_refuses_writes() {
    if !kernel_available(&[]) {
        return;
    }
    let mut mount = start(&["-o", "ro,stats_filename="]);
    let file = mount.path().join("file");
    let err = OpenOptions::new().write(true).open(&file).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    assert!(!mount.path().join("stats").exists());
    let mut buf = [1u8; 10];
    std::fs::File::open(&file).unwrap().read_exact(&mut buf).unwrap();
    assert_eq!(buf, [0; 10]);
    assert!(Command::new("fusermount3").arg("-u").arg(mount.path()).status().unwrap().success());
    assert!(mount.wait_exit().success(), "{}", mount.log());
}

#[test]
fn background_mode_returns_once_mounted_and_reports_errors() {
    if !kernel_available(&[]) {
        return;
    }
    // A mount error is reported by the waiting parent, with the child's exit code.
    let out =
        Command::new(BIN).args(["--size=16M", "memory://", "/nonexistent/s3block/mnt"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/s3block/mnt"));

    let dir = tempfile::tempdir().unwrap();
    let status = Command::new(BIN)
        .args(["--size=16M", "memory://"])
        .arg(dir.path())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    // The parent returned only after the mount was up.
    let mounted = is_mounted(dir.path());
    let size = std::fs::metadata(dir.path().join("file")).map(|m| m.len()).ok();
    let _ = Command::new("fusermount3").arg("-u").arg(dir.path()).status();
    assert!(mounted, "the parent exited before the mount was up");
    assert_eq!(size, Some(SIZE));
}

#[test]
fn attributes_are_per_file_and_entries_are_fixed() {
    if !kernel_available(&[]) {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let mount = start(&[]);
    let (root, file, stats) = (mount.path().to_owned(), mount.file(), mount.path().join("stats"));
    std::os::unix::fs::chown(&file, Some(1000), Some(1000)).unwrap();
    // Past the kernel's attribute cache (1 s), the owners are still each inode's own.
    std::thread::sleep(Duration::from_millis(1200));
    let owner = |p: &std::path::Path| {
        let m = std::fs::metadata(p).unwrap();
        (m.uid(), m.gid())
    };
    assert_eq!(owner(&file), (1000, 1000));
    assert_eq!(owner(&root), (0, 0), "chown of the file changed the mount root");
    assert_eq!(owner(&stats), (0, 0), "chown of the file changed the stats file");

    // touch -d sets both times, on the file and on the root, and they stay.
    for path in [&file, &root] {
        let out = Command::new("touch").args(["-d", "2020-01-02 03:04:05Z"]).arg(path).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    std::thread::sleep(Duration::from_millis(1200));
    for path in [&file, &root] {
        let m = std::fs::metadata(path).unwrap();
        assert_eq!((m.mtime(), m.atime()), (1_577_934_245, 1_577_934_245), "{}", path.display());
    }

    // Every change of the directory's entries gets the same errno.
    let eperm = |what: &str, result: std::io::Result<()>| {
        let err = result.expect_err(what);
        assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{what}: {err}");
    };
    eperm("rename", std::fs::rename(&file, root.join("moved")));
    eperm("create", std::fs::File::create(root.join("new")).map(drop));
    eperm("mkdir", std::fs::create_dir(root.join("dir")));
    eperm("link", std::fs::hard_link(&file, root.join("link")));
    eperm("symlink", std::os::unix::fs::symlink("file", root.join("sym")));
    eperm("unlink", std::fs::remove_file(&file));
    mount.unmount();
}

/// Unmounts lazily on drop, so a failing test leaves nothing mounted.
struct Unmounted<'a>(&'a std::path::Path);

impl Drop for Unmounted<'_> {
    fn drop(&mut self) {
        if is_mounted(self.0) {
            let _ = Command::new("fusermount3").arg("-uz").arg(self.0).status();
        }
    }
}

#[test]
fn background_mount_lets_go_of_its_callers_pipes() {
    if !kernel_available(&[]) {
        return;
    }
    use std::time::Instant;
    let dir = tempfile::tempdir().unwrap();
    let _guard = Unmounted(dir.path());
    // As `out=$(s3block-fuse ... 2>&1)` would run it: stdout and stderr pipes.
    let mut child = Command::new(BIN)
        .args(["--size=16M", "memory://"])
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let eof_of = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = pipe.read_to_end(&mut text);
            (Instant::now(), String::from_utf8_lossy(&text).into_owned())
        })
    };
    let out = eof_of(Box::new(child.stdout.take().unwrap()));
    let err = eof_of(Box::new(child.stderr.take().unwrap()));
    let status = child.wait().unwrap();
    let exited = Instant::now();
    assert!(status.success(), "{status}");
    assert!(is_mounted(dir.path()), "the parent exited before the mount was up");
    for (name, reader) in [("stdout", out), ("stderr", err)] {
        let (eof, text) = reader.join().unwrap();
        let late = eof.saturating_duration_since(exited);
        assert!(late < Duration::from_secs(1), "{name} reached EOF {late:?} after the mount was up:\n{text}");
    }
    let out = s3block_testkit::kernel::fusermount_u(dir.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn background_log_goes_to_the_log_file_after_detaching() {
    if !kernel_available(&[]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let _guard = Unmounted(dir.path());
    let log = dir.path().with_extension("s3block.log");
    let status = Command::new(BIN)
        .args(["--size=16M", "memory://", "--log-file"])
        .arg(&log)
        .arg(dir.path())
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::OpenOptions::new().write(true).open(dir.path().join("file")).unwrap().write_all(b"x").unwrap();
    let out = s3block_testkit::kernel::fusermount_u(dir.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The daemon logs its exit, after detaching from the caller, to the file.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("every block is stored") || std::time::Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = std::fs::remove_file(&log);
    assert!(text.contains("mounted memory://") && text.contains("every block is stored"), "{text}");
}

#[test]
fn a_stop_while_the_file_is_open_unmounts_once_it_is_closed() {
    if !kernel_available(&[]) {
        return;
    }
    let mut mount = start(&[]);
    // A writer holds the file open (as `dd` would), with data written.
    let mut writer = OpenOptions::new().write(true).open(mount.file()).unwrap();
    writer.write_all(&pattern(100_000)).unwrap();
    mount.signal("TERM");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(is_mounted(mount.path()), "unmounted under an open file:\n{}", mount.log());
    assert!(mount.log().contains("cannot unmount"), "{}", mount.log());
    // The writer still works, then closes: the retried unmount goes through.
    writer.write_all(b"more").unwrap();
    drop(writer);
    let closed = std::time::Instant::now();
    let status = mount.wait_exit();
    let took = closed.elapsed();
    assert!(status.success(), "exit {status}:\n{}", mount.log());
    assert!(took < Duration::from_secs(5), "exited {took:?} after the file was closed:\n{}", mount.log());
    assert!(!is_mounted(mount.path()));
    assert!(mount.log().contains("every block is stored"), "{}", mount.log());
}

#[test]
fn a_second_sigint_abandons_a_busy_mount() {
    if !kernel_available(&[]) {
        return;
    }
    let mut mount = start(&[]);
    let mut writer = OpenOptions::new().write(true).open(mount.file()).unwrap();
    writer.write_all(&pattern(100_000)).unwrap();
    mount.signal("INT");
    std::thread::sleep(Duration::from_millis(300));
    mount.signal("INT");
    let status = mount.wait_exit();
    assert_eq!(status.code(), Some(i32::from(s3block_core::exit::CANCELLED)), "{}", mount.log());
    assert!(mount.log().contains("abandoned at the user's request"), "{}", mount.log());
    assert!(!is_mounted(mount.path()), "the abandoned mount is still mounted");
    // The writer's file is gone with the program.
    let err = writer.write_all(b"late").and_then(|()| writer.sync_all()).unwrap_err();
    assert!(matches!(err.raw_os_error(), Some(libc::ENOTCONN | libc::EIO)), "{err}");
}
