//! s3backer's maintenance and monitoring options on the mount program, run
//! as a user runs them, on local directory volumes (`file://`):
//! `--erase` (with and without `--force`), `--reset-mounted-flag`, and
//! `--statsFileMirror` with `--statsFileMirrorInterval`.

#![allow(clippy::unwrap_used)] // a failed step should stop the test loudly

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use s3block_testkit::kernel::{Mount, assert_no_panic, fuse_command, kernel_available, pattern};

const FUSE: &str = env!("CARGO_BIN_EXE_rel-s3block-fuse");
const LOCK: &str = "s3backer-mounted";
const DESCRIPTOR: &str = "s3block-volume.json";

fn mount(url: &str, args: &[&str]) -> Mount {
    let dir = tempfile::tempdir().unwrap();
    Mount::spawn(fuse_command(FUSE, url, dir.path(), args), dir)
}

/// A 4M volume in 64K blocks with data in blocks 1 to 4, unmounted.
fn volume_with_data() -> (tempfile::TempDir, String) {
    let store = tempfile::tempdir().unwrap();
    let url = format!("file://{}", store.path().display());
    let fuse = mount(&url, &["--size=4M", "--block-size=64K"]);
    let f = std::fs::OpenOptions::new().write(true).open(fuse.file()).unwrap();
    f.write_all_at(&pattern(1, 4 << 16), 1 << 16).unwrap();
    f.sync_all().unwrap();
    drop(f);
    fuse.unmount();
    (store, url)
}

/// The block objects in a volume's directory (their sidecars left out).
fn block_objects(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 8 && n.chars().all(|c| c.is_ascii_hexdigit()))
        .collect();
    names.sort();
    names
}

/// The mount program run without a mount point (`--erase`,
/// `--reset-mounted-flag`), `stdin` on its standard input.
fn maintenance(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(FUSE)
        .args(args)
        .env_remove("S3BLOCK_PREFIX")
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_no_panic(&format!("s3block-fuse {args:?}"), &String::from_utf8_lossy(&out.stderr));
    out
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn erase_asks_then_empties_the_volume_and_force_does_not_ask() {
    if !kernel_available(&[]) {
        return;
    }
    let (store, url) = volume_with_data();
    let blocks = block_objects(store.path());
    assert_eq!(blocks, ["00000001", "00000002", "00000003", "00000004"]);
    // Asked, and not confirmed (a "no", or nothing): nothing is deleted.
    for answer in ["n\n", ""] {
        let out = maintenance(&["--erase", &url], answer);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(5), "{stderr}");
        assert!(stderr.contains("delete all 4 stored blocks of") && stderr.contains("[y/N]"), "{stderr}");
        assert!(stderr.contains("not confirmed; nothing was deleted"), "{stderr}");
        assert_eq!(block_objects(store.path()), blocks);
    }
    // A mount point is refused: --erase does not mount.
    let out = maintenance(&["--erase", "--force", &url, "/mnt"], "");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--erase does not mount: give no MOUNTPOINT"),
        "{}",
        text(&out.stderr)
    );
    // s3backer's way to confirm on standard input.
    let out = maintenance(&["--erase", &url], "y\n");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), format!("Erased 4 blocks, the descriptor and the lock of {url}."));
    assert!(block_objects(store.path()).is_empty());
    assert!(!store.path().join(DESCRIPTOR).exists());

    // --force: no question, even with nothing on standard input, and a
    // volume left locked by a crash is erased too.
    let (store, url) = volume_with_data();
    let mut crashed = mount(&url, &[]);
    crashed.kill9();
    drop(crashed);
    assert!(store.path().join(LOCK).exists(), "the crash left the lock");
    let out = maintenance(&["--erase", &url], "y\n");
    assert_eq!(out.status.code(), Some(4), "locked: {}", text(&out.stderr));
    assert!(text(&out.stderr).contains("give --force to erase it anyway"), "{}", text(&out.stderr));
    let out = maintenance(&["--erase", "--force", &url], "");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("[y/N]"), "no question with --force");
    assert!(block_objects(store.path()).is_empty());
    for gone in [LOCK, DESCRIPTOR] {
        assert!(!store.path().join(gone).exists(), "{gone} is left");
    }
    // The prefix holds no volume now: a mount needs --size to make one,
    // and the new volume reads zeros where the data was.
    let fuse = mount(&url, &["--size=4M", "--block-size=64K"]);
    let mut buf = vec![1u8; 4096];
    std::fs::File::open(fuse.file()).unwrap().read_exact_at(&mut buf, 1 << 16).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
    fuse.unmount();
}

#[test]
fn reset_mounted_flag_removes_a_stale_lock_and_keeps_a_live_one() {
    if !kernel_available(&[]) {
        return;
    }
    let (store, url) = volume_with_data();
    let lock = store.path().join(LOCK);
    let out = maintenance(&["--reset-mounted-flag", &url], "");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), format!("{url} is not locked."));
    // Held by a running mount on this machine: kept.
    let mut running = mount(&url, &[]);
    let out = maintenance(&["--reset-mounted-flag", &url], "");
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("the holder still runs on this machine") && stderr.contains("--force"),
        "{stderr}"
    );
    assert!(lock.exists());
    // The mount crashes: its lock stays, and a second mount is refused ...
    running.kill9();
    drop(running);
    assert!(lock.exists(), "the crash left the lock");
    // ... until the flag is reset.
    let out = maintenance(&["--reset-mounted-flag", &url], "");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with(&format!("Removed the lock of {url}, held by ")), "{stdout}");
    assert!(!lock.exists(), "the lock is gone");
    // The volume mounts again, its data intact.
    let fuse = mount(&url, &[]);
    let mut buf = vec![0u8; 4 << 16];
    std::fs::File::open(fuse.file()).unwrap().read_exact_at(&mut buf, 1 << 16).unwrap();
    assert!(buf == pattern(1, 4 << 16), "the volume's data changed");
    fuse.unmount();
    // s3backer's --force alone is refused, saying what it is for.
    let out = maintenance(&["--force", &url, "/mnt"], "");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--force goes with --erase or --reset-mounted-flag"));
}

#[test]
fn stats_file_mirror_is_rewritten_while_mounted_and_at_exit() {
    if !kernel_available(&[]) {
        return;
    }
    let store = tempfile::tempdir().unwrap();
    let url = format!("file://{}", store.path().display());
    let out = tempfile::tempdir().unwrap();
    let mirror = out.path().join("s3block.stats");
    let json = out.path().join("s3block.stats.json");
    let fuse = mount(
        &url,
        &[
            "--size=4M",
            "--block-size=64K",
            &format!("--statsFileMirror={}", mirror.display()),
            "--statsFileMirrorInterval=200",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !json.exists() {
        assert!(Instant::now() < deadline, "no stats file:\n{}", fuse.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let first = std::fs::read_to_string(&mirror).unwrap();
    assert!(first.contains("[cache]") && first.contains("[store requests]"), "{first}");
    // Written again while mounted: the mirror follows the mount's stats file.
    let f = std::fs::OpenOptions::new().write(true).open(fuse.file()).unwrap();
    f.write_all_at(&pattern(2, 1 << 16), 0).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = std::fs::read_to_string(&mirror).unwrap_or_default();
        if now != first {
            break;
        }
        assert!(Instant::now() < deadline, "the stats file was not rewritten:\n{now}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let shown = std::fs::read_to_string(fuse.path().join("stats")).unwrap();
    fuse.unmount();
    // After exit: the final figures, the same sections as the mount showed.
    let last = std::fs::read_to_string(&mirror).unwrap();
    let sections = |t: &str| t.lines().filter(|l| l.starts_with('[')).map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(sections(&last), sections(&shown), "{last}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(v.is_object(), "{v}");
    assert!(!out.path().join("s3block.stats.tmp").exists());
}
