//! Refused starts, run as a user would: the exit code of the shared table
//! (`s3block_core::exit`), one plain line on standard error, and nothing
//! created. None of them reaches the kernel, so they need no /dev/fuse.

#![allow(clippy::unwrap_used)] // test helpers: a failed step should stop the test loudly

use std::path::Path;
use std::process::{Command, Stdio};

use s3block_core::exit::{LOCKED, USAGE};

const BIN: &str = env!("CARGO_BIN_EXE_s3block-fuse");

/// Runs the program (in the foreground when `foreground`) with `args`;
/// returns its exit code and standard error.
fn run(foreground: bool, args: &[&str]) -> (Option<i32>, String) {
    let mut cmd = Command::new(BIN);
    if foreground {
        cmd.arg("-f");
    }
    let out = cmd
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("S3BLOCK_PREFIX")
        .env_remove("S3BLOCK_INJECT_FAULTS")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A start refused with `code` and one plain line containing `needle`.
fn refused(args: &[&str], code: u8, needle: &str) -> String {
    let mut last = String::new();
    for foreground in [true, false] {
        let (status, stderr) = run(foreground, args);
        assert_eq!(status, Some(i32::from(code)), "{args:?} (foreground {foreground}):\n{stderr}");
        assert!(stderr.contains(needle), "{args:?}: no {needle:?} in:\n{stderr}");
        // A start-up error is one plain line, not a timestamped log line; a
        // bad option is clap's `error: ...`, then its pointer to --help.
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.is_empty()).collect();
        if stderr.starts_with("error: ") {
            assert!(lines.len() == 1 || lines[1..] == ["For more information, try '--help'."], "{stderr}");
        } else {
            assert_eq!(lines.len(), 1, "{args:?}: not one line:\n{stderr}");
            assert!(stderr.starts_with("s3block-fuse: "), "{args:?}: not a plain line:\n{stderr}");
        }
        last = stderr;
    }
    last
}

fn empty_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn bad_sizes_exit_2_like_every_bad_option_value() {
    let mnt = empty_dir();
    let m = path(mnt.path());
    let err = refused(&["--size=0", "memory://", m], USAGE, "the size must not be zero");
    assert!(err.starts_with("s3block-fuse: cannot open the volume memory://: "), "{err}");
    refused(&["--size=1000", "memory://", m], USAGE, "not a multiple of the block size");
    refused(&["--size=1M", "--block-size=3K", "memory://", m], USAGE, "--block-size");
    refused(&["--size=30X", "memory://", m], USAGE, "--size");
    refused(&["--size=1M", "--compress=12", "memory://", m], USAGE, "--compress");
    refused(&["--size=1M", "--upload-concurrency=0", "memory://", m], USAGE, "--upload-concurrency");
    refused(&["--size=1M", "--fetch-concurrency=0", "memory://", m], USAGE, "--fetch-concurrency");
}

#[test]
fn start_errors_are_one_plain_line_with_the_table_code() {
    let mnt = empty_dir();
    let m = path(mnt.path());
    // A missing mount point and a missing volume are configuration errors.
    let err =
        refused(&["--size=1M", "memory://", "/nonexistent/s3block/mnt"], USAGE, "/nonexistent/s3block/mnt");
    assert!(err.starts_with("s3block-fuse: cannot mount on "), "{err}");
    let store = empty_dir();
    let url = format!("file://{}", path(store.path()));
    refused(&[&url, m], USAGE, "give --size");
    // A volume mounted elsewhere: 4.
    std::fs::write(store.path().join("s3backer-mounted"), "otherhost.example\n20250101T000000Z\n").unwrap();
    refused(&["--size=1M", &url, m], LOCKED, "otherhost.example");
}

#[test]
fn a_store_inside_its_mount_point_is_refused_naming_both() {
    let mnt = empty_dir();
    let shown = mnt.path().canonicalize().unwrap().display().to_string();
    for url in [format!("file://{}", path(mnt.path())), format!("file://{}/vol", path(mnt.path()))] {
        let err =
            refused(&["--size=1M", &url, path(mnt.path())], USAGE, "the mount would hide its own store");
        assert!(err.contains(&shown) && err.contains("store directory"), "{err}");
        assert_eq!(
            std::fs::read_dir(mnt.path()).unwrap().count(),
            0,
            "the refused start created a directory"
        );
    }
}

#[test]
fn unimplemented_s3backer_options_are_named_plainly() {
    let mnt = empty_dir();
    let m = path(mnt.path());
    for (arg, name) in [
        ("--ssl", "--ssl"),
        ("--md5CacheSize=30", "--md5CacheSize"),
        ("--sharedDiskMode", "--sharedDiskMode"),
        ("--http11", "--http11"),
        ("--blockCacheFile=/var/cache/x", "--blockCacheFile"),
        ("-o", "--md5CacheTime"),
    ] {
        let args: Vec<&str> = if arg == "-o" {
            vec!["-o", "md5CacheTime=16", "memory://", m]
        } else {
            vec![arg, "memory://", m]
        };
        let (status, stderr) = run(true, &args);
        assert_eq!(status, Some(i32::from(USAGE)), "{args:?}:\n{stderr}");
        let expected = format!("s3backer option {name} is not supported by s3block (yet)");
        assert!(stderr.contains(&expected), "{args:?}:\n{stderr}");
        assert!(!stderr.contains("similar") && !stderr.contains("tip:"), "{args:?}:\n{stderr}");
    }
}

#[test]
fn an_unknown_o_option_is_named_without_a_dash_dash_tip() {
    let mnt = empty_dir();
    let (status, stderr) = run(true, &["-o", "size=1M,garbage", "memory://", path(mnt.path())]);
    assert_eq!(status, Some(i32::from(USAGE)), "{stderr}");
    assert!(stderr.contains("-o garbage: unknown option"), "{stderr}");
    assert!(!stderr.contains("-- --garbage"), "{stderr}");
}

#[test]
fn help_shows_the_cache_defaults_and_the_exit_codes() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "Memory for cached blocks, in bytes [default: 64M]",
        "[default: half the cache size]",
        "Blocks uploaded at once [default: 8M over the block size, at least 16 and at most 64, at most an eighth \
         of the cache's blocks above 16: 64 at 4K, 32 at 256K, 16 at 1M with a 64M cache]",
        "so 8M at 256K blocks, 256K at 4K, 16M at 1M with a 64M cache; at most a quarter of the cache]",
        s3block_core::exit::EXIT_CODES_HELP,
    ] {
        assert!(help.contains(expected), "--help lacks {expected:?}:\n{help}");
    }
}
