//! Buckets shared with s3backer, checked against s3backer itself.
//!
//! Debian's s3backer (1.5.4, `apt-get install s3backer`; `scripts/test.sh`
//! installs it) mounts a volume on the test Garage; what it writes, s3block
//! reads, and what s3block writes, s3backer reads, for:
//!
//! - a prefix with non-ASCII characters (`ünï/`): s3backer puts the prefix's
//!   bytes in the key as given, and s3block must use the same bytes;
//! - hash-prefixed keys with deflate compression;
//! - zstd compression (`Content-Encoding: zstd`), only when the s3backer
//!   binary supports it: version 2.0.2 or later, built with libzstd (as
//!   `../shared/peers/build-s3backer.sh` builds 2.1.6). Run it with
//!   `S3BLOCK_S3BACKER=$(../shared/peers/build-s3backer.sh) cargo test -p
//!   s3block-tests --test interop_s3backer` (Garage started, its env loaded).
//!
//! Garage signs for us-east-1 here (`scripts/garage.sh`), the region s3backer
//! signs for when it is given `--baseURL` and no `--region` (its `--region`
//! switches to virtual-host URLs, which do not resolve on loopback).
//!
//! `S3BLOCK_S3BACKER` names another s3backer binary (2.x, say) to run the
//! same checks against.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use s3block_cli::target::{Target, open as open_target};
use s3block_cli::volume::{create, open};
use s3block_cli::{LayoutArgs, StoreArgs};
use s3block_core::{BlockDevice, BlockId};
use s3block_store::{CompressArgs, Compression};
use s3block_testkit::kernel::{Mount, fusermount_u, kernel_available, pattern};
use s3block_testkit::{S3Env, s3_env, unique_prefix};

const BLOCK: usize = 4096;
const SIZE: &str = "1M";

/// The s3backer binary to check against.
fn s3backer() -> String {
    std::env::var("S3BLOCK_S3BACKER").unwrap_or_else(|_| "s3backer".to_owned())
}

fn setup() -> Option<S3Env> {
    if !kernel_available(&[&s3backer()]) {
        return None;
    }
    let env = s3_env()?;
    assert_eq!(
        env.region, "us-east-1",
        "s3backer signs for us-east-1 with --baseURL: start Garage with scripts/garage.sh (region us-east-1)"
    );
    Some(env)
}

/// A private access file with the test key, s3backer's format.
fn access_file(env: &S3Env, dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("passwd");
    std::fs::write(&path, format!("{}:{}\n", env.access_key_id, env.secret_access_key)).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// s3backer in the foreground on a new mount point, with `args` after the
/// connection options.
fn mount_s3backer(env: &S3Env, prefix: &str, args: &[&str], scratch: &Path) -> Mount {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(s3backer());
    cmd.arg("-f")
        .arg(format!("--accessFile={}", access_file(env, scratch).display()))
        .arg(format!("--baseURL={}/", env.endpoint.trim_end_matches('/')))
        .arg(format!("--prefix={prefix}"))
        .arg("--blockSize=4k")
        .arg(format!("--size={SIZE}"))
        .args(args)
        .arg(&env.bucket)
        .arg(dir.path());
    Mount::spawn(cmd, dir)
}

/// Unmounts s3backer and waits until it has stored everything and exited.
fn unmount_s3backer(mut m: Mount) {
    let out = fusermount_u(m.path());
    assert!(out.status.success(), "fusermount -u: {}", String::from_utf8_lossy(&out.stderr));
    let status = m.wait_exit();
    assert!(status.success(), "s3backer exited with {status}:\n{}", m.log());
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

/// The volume's contents: a pattern in blocks 0, 1, 5 and the last one;
/// the rest zeros (absent).
fn contents(seed: u64) -> Vec<u8> {
    let size = s3block_core::parse_size(SIZE).unwrap() as usize;
    let mut data = vec![0u8; size];
    for b in [0, 1, 5, size / BLOCK - 1] {
        data[b * BLOCK..(b + 1) * BLOCK].copy_from_slice(&pattern(seed + b as u64, BLOCK));
    }
    data
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// s3backer writes the volume through its device file; s3block then reads
/// every block equal, and lists exactly the blocks written, under the
/// prefix's own bytes.
fn s3backer_writes_s3block_reads(env: &S3Env, prefix: &str, s3backer_args: &[&str]) {
    let scratch = tempfile::tempdir().unwrap();
    let data = contents(1);
    let m = mount_s3backer(env, prefix, s3backer_args, scratch.path());
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(m.file()).unwrap();
        for (i, chunk) in data.chunks(BLOCK).enumerate() {
            if chunk.iter().any(|&b| b != 0) {
                f.seek(SeekFrom::Start((i * BLOCK) as u64)).unwrap();
                f.write_all(chunk).unwrap();
            }
        }
        f.sync_all().unwrap();
    }
    unmount_s3backer(m);

    let t = target(env, prefix);
    runtime().block_on(async {
        let v = open(&t, &LayoutArgs::default()).await.unwrap();
        assert_eq!(u64::from(v.volume.geometry.block_size()), BLOCK as u64, "block size from block 0");
        assert_eq!(v.volume.geometry.size(), data.len() as u64, "size from block 0");
        let listed: Vec<u32> = v.device.list_blocks().await.unwrap().iter().map(|s| s.block.0).collect();
        assert_eq!(listed, vec![0, 1, 5, 255], "the blocks s3backer stored, listed by s3block");
        for (i, chunk) in data.chunks(BLOCK).enumerate() {
            let got = v.device.read_block(BlockId(i as u32)).await.unwrap();
            assert!(got[..] == chunk[..], "block {i} differs from what s3backer wrote");
        }
    });
}

/// s3block creates and writes the volume; s3backer mounts it read-only
/// (geometry from block 0's metadata) and reads every byte equal.
fn s3block_writes_s3backer_reads(env: &S3Env, prefix: &str, layout: LayoutArgs, s3backer_args: &[&str]) {
    let data = contents(2);
    let t = target(env, prefix);
    runtime().block_on(async {
        let layout = LayoutArgs { size: Some(data.len() as u64), block_size: Some(BLOCK as u64), ..layout };
        create(&t, &layout, false, false, &mut Vec::new()).await.unwrap();
        let v = open(&t, &LayoutArgs::default()).await.unwrap();
        for (i, chunk) in data.chunks(BLOCK).enumerate() {
            if chunk.iter().any(|&b| b != 0) {
                v.device.write_block(BlockId(i as u32), Bytes::copy_from_slice(chunk)).await.unwrap();
            }
        }
    });
    let scratch = tempfile::tempdir().unwrap();
    let mut args = vec!["--readOnly"];
    args.extend_from_slice(s3backer_args);
    let m = mount_s3backer(env, prefix, &args, scratch.path());
    let read = std::fs::read(m.file()).unwrap();
    unmount_s3backer(m);
    assert_eq!(read.len(), data.len());
    for (i, (a, b)) in read.chunks(BLOCK).zip(data.chunks(BLOCK)).enumerate() {
        assert!(a == b, "s3backer reads block {i} differently from what s3block wrote");
    }
}

#[test]
fn unicode_prefix_is_shared_both_ways() {
    let Some(env) = setup() else { return };
    let base = unique_prefix("interop_unicode");
    s3backer_writes_s3block_reads(&env, &format!("{base}ünï/"), &[]);
    s3block_writes_s3backer_reads(&env, &format!("{base}ünï-2/"), LayoutArgs::default(), &[]);
}

#[test]
fn hash_prefix_and_deflate_are_shared_both_ways() {
    let Some(env) = setup() else { return };
    let base = unique_prefix("interop_hashed");
    s3backer_writes_s3block_reads(&env, &format!("{base}a/"), &["--blockHashPrefix", "--compress"]);
    let compression = CompressArgs::from_compression(Some(Compression::deflate(6).unwrap()));
    let layout = LayoutArgs { hash_prefix: true, compression, ..Default::default() };
    s3block_writes_s3backer_reads(&env, &format!("{base}b/"), layout, &["--blockHashPrefix"]);
}

/// Whether the s3backer binary writes and reads zstd: 2.0.2 or later (from
/// `--version`) and linked with libzstd (from `ldd`; its `--help` does not
/// list the algorithms).
fn s3backer_has_zstd() -> bool {
    let bin = s3backer();
    let version = Command::new(&bin).arg("--version").output().map(|o| {
        let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        text.split_whitespace()
            .skip_while(|w| *w != "version")
            .nth(1)
            .map(|v| v.split('.').map(|n| n.parse::<u32>().unwrap_or(0)).collect::<Vec<_>>())
            .unwrap_or_default()
    });
    let new_enough = version.is_ok_and(|v| v >= vec![2, 0, 2]);
    let path = Command::new("sh").args(["-c", &format!("command -v {bin}")]).output();
    let linked = path.is_ok_and(|p| {
        let path = String::from_utf8_lossy(&p.stdout).trim().to_owned();
        Command::new("ldd")
            .arg(path)
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("libzstd"))
    });
    new_enough && linked
}

#[test]
fn zstd_is_shared_both_ways() {
    let Some(env) = setup() else { return };
    if !s3backer_has_zstd() {
        eprintln!(
            "SKIPPED: {} has no zstd (needs s3backer 2.0.2+ with libzstd; set S3BLOCK_S3BACKER to the binary ../shared/peers/build-s3backer.sh prints)",
            s3backer()
        );
        return;
    }
    let base = unique_prefix("interop_zstd");
    s3backer_writes_s3block_reads(&env, &format!("{base}a/"), &["--compress=zstd", "--compress-level=5"]);
    let compression = CompressArgs::from_compression(Some(Compression::zstd(3).unwrap()));
    s3block_writes_s3backer_reads(
        &env,
        &format!("{base}b/"),
        LayoutArgs { compression, ..Default::default() },
        &[],
    );
}
