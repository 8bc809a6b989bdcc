//! `s3block resize` on Garage, checked by mounting the result with s3block's
//! mount program and with s3backer (1.5.4 on PATH, and 2.x when
//! `S3BLOCK_S3BACKER2` names it, as in `interop_s3backer.rs`), s3backer
//! given no `--size` or `--blockSize` so that it auto-detects them from
//! block 0:
//!
//! - grow, a shrink refused while a block past the new end holds data and
//!   one forced with `--discard-tail`: each mount sees the new size and the
//!   data;
//! - kill -9 of the resize between its writes (the store's test-only
//!   `S3BLOCK_RESIZE_STOP` stops it there): every mount still works, at the
//!   size its program reads (s3block the descriptor's, s3backer block 0's),
//!   the old or the new one; running the resize again finishes it.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use s3block_cli::target::{Target, open as open_target};
use s3block_cli::volume::{create, open};
use s3block_cli::{LayoutArgs, StoreArgs};
use s3block_core::BlockDeviceExt;
use s3block_store::RESIZE_STOP_ENV;
use s3block_testkit::kernel::{Mount, fuse_command, fusermount_u, kernel_available, pattern};
use s3block_testkit::{S3Env, s3_env, unique_prefix};

const FUSE: &str = env!("CARGO_BIN_EXE_rel-s3block-fuse");
const CLI: &str = env!("CARGO_BIN_EXE_rel-s3block");
const BLOCK: usize = 4096;
const MIB: u64 = 1 << 20;
/// Blocks written before each resize; 200 lies past a shrink to 512K.
const WRITTEN: [usize; 3] = [0, 3, 200];

/// Garage, the kernel, and the s3backer binaries found (none is fine: the
/// s3block side still runs).
fn setup() -> Option<(S3Env, Vec<String>)> {
    let env = s3_env()?;
    if !kernel_available(&[]) {
        return None;
    }
    let mut peers = Vec::new();
    if s3block_testkit::kernel::on_path("s3backer") {
        peers.push("s3backer".to_owned());
    } else {
        eprintln!("s3backer 1.5.4 is not on PATH (apt-get install s3backer): its checks are skipped");
    }
    match std::env::var("S3BLOCK_S3BACKER2").ok().filter(|v| !v.is_empty()) {
        Some(bin) => {
            assert!(Path::new(&bin).is_file(), "S3BLOCK_S3BACKER2={bin} is not a file");
            peers.push(bin);
        }
        None => eprintln!(
            "S3BLOCK_S3BACKER2 is not set (../shared/peers/build-s3backer.sh builds s3backer 2.1.6): its checks are skipped"
        ),
    }
    Some((env, peers))
}

fn with_env(cmd: &mut Command, env: &S3Env) {
    cmd.env("AWS_ACCESS_KEY_ID", &env.access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", &env.secret_access_key)
        .env("AWS_REGION", &env.region)
        .env("S3BLOCK_ENDPOINT", &env.endpoint)
        .env_remove("S3BLOCK_INJECT_FAULTS")
        .env_remove("S3BLOCK_PREFIX")
        .env_remove(RESIZE_STOP_ENV)
        .stdin(Stdio::null());
}

fn target(env: &S3Env, prefix: &str) -> Target {
    let args = StoreArgs {
        prefix: Some(prefix.to_owned()),
        endpoint: Some(env.endpoint.clone()),
        region: Some(env.region.clone()),
        ..Default::default()
    };
    open_target(&format!("s3://{}", env.bucket), &args).unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// A new 1M volume of 4K blocks under `prefix`, with the blocks `WRITTEN`.
fn new_volume(env: &S3Env, prefix: &str) {
    let t = target(env, prefix);
    runtime().block_on(async {
        let layout = LayoutArgs { size: Some(MIB), block_size: Some(BLOCK as u64), ..Default::default() };
        create(&t, &layout, false, false, &mut Vec::new()).await.unwrap();
        let v = open(&t, &LayoutArgs::default()).await.unwrap();
        for b in WRITTEN {
            v.device.write_at((b * BLOCK) as u64, Bytes::from(pattern(b as u64, BLOCK))).await.unwrap();
        }
    });
}

/// `s3block resize` with `args`, to completion.
fn resize(env: &S3Env, prefix: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(CLI);
    cmd.args(["resize", &format!("s3://{}", env.bucket), "--prefix", prefix]).args(args);
    with_env(&mut cmd, env);
    cmd.output().unwrap()
}

/// Checks the device file a mount shows: `size` bytes, the blocks written
/// (those below `gone` only; the rest read as zeros).
fn check_file(file: &Path, size: u64, gone: usize, who: &str) {
    let data = std::fs::read(file).unwrap();
    assert_eq!(data.len() as u64, size, "{who} shows a volume of {} bytes, not {size}", data.len());
    for (i, chunk) in data.chunks(BLOCK).enumerate() {
        let want = if WRITTEN.contains(&i) && i < gone { pattern(i as u64, BLOCK) } else { vec![0; BLOCK] };
        assert!(chunk == want.as_slice(), "{who} reads block {i} wrong");
    }
}

/// The size s3block's mount program shows (no `--size`: read from the
/// volume), its data checked.
fn s3block_mount_size(env: &S3Env, prefix: &str, gone: usize) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd =
        fuse_command(FUSE, &format!("s3://{}", env.bucket), dir.path(), &[&format!("--prefix={prefix}")]);
    with_env(&mut cmd, env);
    cmd.stdout(Stdio::null());
    let m = Mount::spawn(cmd, dir);
    let size = std::fs::metadata(m.file()).unwrap().len();
    check_file(&m.file(), size, gone, "s3block's mount");
    m.unmount();
    size
}

/// The size s3backer (`bin`, read-only, no `--size`: auto-detected from
/// block 0) shows, its data checked.
fn s3backer_size(bin: &str, env: &S3Env, prefix: &str, gone: usize) -> u64 {
    use std::os::unix::fs::PermissionsExt;
    let scratch = tempfile::tempdir().unwrap();
    let access = scratch.path().join("passwd");
    std::fs::write(&access, format!("{}:{}\n", env.access_key_id, env.secret_access_key)).unwrap();
    std::fs::set_permissions(&access, std::fs::Permissions::from_mode(0o600)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(bin);
    cmd.arg("-f")
        .arg(format!("--accessFile={}", access.display()))
        .arg(format!("--baseURL={}/", env.endpoint.trim_end_matches('/')))
        .arg(format!("--prefix={prefix}"))
        .arg("--readOnly")
        .arg(&env.bucket)
        .arg(dir.path())
        .stdin(Stdio::null());
    let mut m = Mount::spawn(cmd, dir);
    let size = std::fs::metadata(m.file()).unwrap().len();
    check_file(&m.file(), size, gone, bin);
    let out = fusermount_u(m.path());
    assert!(out.status.success(), "fusermount -u: {}", String::from_utf8_lossy(&out.stderr));
    let status = m.wait_exit();
    assert!(status.success(), "{bin} exited with {status}:\n{}", m.log());
    size
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn offline_grow_refused_and_forced_shrink_read_by_s3backer() {
    let Some((env, peers)) = setup() else { return };
    let prefix = unique_prefix("resize_grow");
    new_volume(&env, &prefix);
    for bin in &peers {
        assert_eq!(s3backer_size(bin, &env, &prefix, usize::MAX), MIB, "{bin} before the resize");
    }

    let o = resize(&env, &prefix, &["--size", "+1M"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(s3block_mount_size(&env, &prefix, usize::MAX), 2 * MIB);
    for bin in &peers {
        assert_eq!(s3backer_size(bin, &env, &prefix, usize::MAX), 2 * MIB, "{bin} after growing");
    }

    // Block 200 lies past 512K: refused, naming it.
    let o = resize(&env, &prefix, &["--size", "512K"]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(
        stderr(&o).contains("1 block past the new end") && stderr(&o).contains("block 200"),
        "{}",
        stderr(&o)
    );
    assert_eq!(s3block_mount_size(&env, &prefix, usize::MAX), 2 * MIB, "nothing changed");

    let o = resize(&env, &prefix, &["--size", "512K", "--discard-tail", "--force", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((j["discarded_blocks"].as_u64(), j["new_size"].as_u64()), (Some(1), Some(512 << 10)));
    assert_eq!(s3block_mount_size(&env, &prefix, 200), 512 << 10);
    for bin in &peers {
        assert_eq!(s3backer_size(bin, &env, &prefix, 200), 512 << 10, "{bin} after shrinking");
    }
}

/// Runs the resize with `args` until it stops after `step`, then kills it
/// with SIGKILL.
fn kill_after(env: &S3Env, prefix: &str, args: &[&str], step: &str) {
    let mut cmd = Command::new(CLI);
    cmd.args(["resize", &format!("s3://{}", env.bucket), "--prefix", prefix]).args(args);
    with_env(&mut cmd, env);
    cmd.env(RESIZE_STOP_ENV, step).stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let lines = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) if line.contains(&format!("stopped after {step}")) => break,
            Ok(line) => seen.push(line),
            Err(_) => {
                if let Some(status) = child.try_wait().unwrap() {
                    panic!(
                        "the resize exited with {status} before stopping after {step}:\n{}",
                        seen.join("\n")
                    );
                }
                assert!(
                    Instant::now() < deadline,
                    "the resize never stopped after {step}:\n{}",
                    seen.join("\n")
                );
            }
        }
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success(), "killed: {status}");
}

/// A resize killed between its writes, and what each program then shows.
struct Case {
    what: &'static str,
    /// The resize's options.
    args: &'static [&'static str],
    /// The write it is killed after (`S3BLOCK_RESIZE_STOP`).
    step: &'static str,
    /// The size s3block's mount and s3backer show after the kill.
    killed: (u64, u64),
    /// The size once the resize is run again.
    done: u64,
    /// Blocks from this one on are deleted by the resize.
    gone: usize,
}

const SHRINK: &[&str] = &["--size", "512K", "--discard-tail", "--force"];

#[test]
fn kill_9_between_the_resize_writes_leaves_a_volume_that_mounts() {
    let Some((env, peers)) = setup() else { return };
    let base = unique_prefix("resize_kill");
    let cases = [
        Case {
            what: "grow",
            args: &["--size", "2M"],
            step: "block0",
            killed: (MIB, 2 * MIB),
            done: 2 * MIB,
            gone: usize::MAX,
        },
        Case { what: "shrink", args: SHRINK, step: "tail", killed: (MIB, MIB), done: 512 << 10, gone: 200 },
        Case {
            what: "shrink",
            args: SHRINK,
            step: "block0",
            killed: (MIB, 512 << 10),
            done: 512 << 10,
            gone: 200,
        },
    ];
    for (i, Case { what, args, step, killed: (by_s3block, by_s3backer), done, gone }) in
        cases.into_iter().enumerate()
    {
        let prefix = format!("{base}{i}/");
        new_volume(&env, &prefix);
        kill_after(&env, &prefix, args, step);
        eprintln!("{what} killed after {step}");
        // The mount takes over the dead resize's lock (this host, its process gone).
        assert_eq!(
            s3block_mount_size(&env, &prefix, gone),
            by_s3block,
            "{what} killed after {step}: s3block"
        );
        for bin in &peers {
            assert_eq!(
                s3backer_size(bin, &env, &prefix, gone),
                by_s3backer,
                "{what} killed after {step}: {bin}"
            );
        }
        // Run again, it finishes.
        let o = resize(&env, &prefix, args);
        assert_eq!(o.status.code(), Some(0), "{o:?}");
        assert_eq!(s3block_mount_size(&env, &prefix, gone), done);
        for bin in &peers {
            assert_eq!(s3backer_size(bin, &env, &prefix, gone), done, "{what} finished: {bin}");
        }
    }
}
