//! Buckets shared with s3backer, checked against s3backer itself.
//!
//! Each case runs against two s3backer versions, as two tests:
//!
//! - `s3backer_1_5_4::*`: Debian's s3backer 1.5.4 (`s3backer` on PATH;
//!   `apt-get install s3backer`, which `scripts/test.sh` does);
//! - `s3backer_2::*`: s3backer 2.x, the binary `S3BLOCK_S3BACKER2` names
//!   (`scripts/test.sh` builds 2.1.6 with `../shared/peers/build-s3backer.sh`
//!   and sets it; without it these tests skip, saying so). By hand:
//!   `S3BLOCK_S3BACKER2=$(../shared/peers/build-s3backer.sh) cargo test -p
//!   s3block-tests --test interop_s3backer` (Garage started, its env loaded).
//!
//! s3backer mounts a volume on the test Garage; what it writes, s3block
//! reads, and what s3block writes, s3backer reads, for:
//!
//! - a prefix with non-ASCII characters (`ünï-a/`): s3backer puts the prefix's
//!   bytes in the key as given, and s3block must use the same bytes;
//! - hash-prefixed keys with deflate compression;
//! - s3backer's AES-128-CBC encryption (`--encrypt`, `--passwordFile`;
//!   s3block's `--encrypt=aes-128-cbc`), whose key depends on the bucket and
//!   prefix;
//! - writes that do not cover whole blocks: blocks with zero runs inside, a
//!   last block written only in part, and zero blocks (never written, or
//!   written and zeroed again, whole or in part) between written ones, which
//!   neither stores as an object;
//! - zstd compression (`Content-Encoding: zstd`), with s3backer 2.x only.
//!
//! And each refuses a volume the other holds mounted: s3backer refuses to
//! mount read-write a volume s3block's mount holds (both versions read the
//! `s3backer-mounted` object's mount-token header), and s3block's mount
//! refuses a volume s3backer holds.
//!
//! Garage signs for us-east-1 here (`scripts/garage.sh`), the region s3backer
//! signs for when it is given `--baseURL` and no `--region` (its `--region`
//! switches to virtual-host URLs, which do not resolve on loopback).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use bytes::Bytes;
use s3block_cli::target::{Target, open as open_target};
use s3block_cli::volume::{Opened, create, open};
use s3block_cli::{LayoutArgs, StoreArgs};
use s3block_core::{BlockDevice, BlockDeviceExt, BlockId};
use s3block_store::conformance::object_attributes;
use s3block_store::{CompressArgs, Compression, EncryptionScheme};
use s3block_testkit::kernel::{Mount, fuse_command, fusermount_u, is_mounted, kernel_available, pattern};
use s3block_testkit::{S3Env, s3_env, unique_prefix};

/// s3block's mount program, built from this tree.
const FUSE: &str = env!("CARGO_BIN_EXE_rel-s3block-fuse");
const BLOCK: usize = 4096;
const SIZE: usize = 1 << 20;
const SIZE_ARG: &str = "1M";
/// The variable naming an s3backer 2.x binary.
const S3BACKER2_VAR: &str = "S3BLOCK_S3BACKER2";

/// The s3backer binary a test runs against.
struct Peer {
    bin: String,
}

/// Garage's settings, checked for the region s3backer signs for.
fn garage() -> Option<S3Env> {
    let env = s3_env()?;
    assert_eq!(
        env.region, "us-east-1",
        "s3backer signs for us-east-1 with --baseURL: start Garage with scripts/garage.sh (region us-east-1)"
    );
    Some(env)
}

/// Debian's s3backer 1.5.4, `s3backer` on PATH.
fn s3backer_1_5_4() -> Option<(Peer, S3Env)> {
    if !kernel_available(&["s3backer"]) {
        return None;
    }
    Some((Peer { bin: "s3backer".to_owned() }, garage()?))
}

/// s3backer 2.x, the binary [`S3BACKER2_VAR`] names; `None` (with a
/// message) when it is unset.
fn s3backer_2() -> Option<(Peer, S3Env)> {
    let Some(bin) = std::env::var(S3BACKER2_VAR).ok().filter(|v| !v.is_empty()) else {
        eprintln!(
            "SKIPPED: {S3BACKER2_VAR} is not set; scripts/test.sh sets it to the s3backer 2.1.6 that ../shared/peers/build-s3backer.sh builds"
        );
        return None;
    };
    assert!(Path::new(&bin).is_file(), "{S3BACKER2_VAR}={bin} is not a file");
    if !kernel_available(&[]) {
        return None;
    }
    Some((Peer { bin }, garage()?))
}

/// A private file holding `text`, in `dir`.
fn private_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// s3backer's command line: foreground, the connection options, `args`,
/// the bucket and the mount point `dir`.
fn s3backer_command(
    peer: &Peer,
    env: &S3Env,
    prefix: &str,
    args: &[String],
    scratch: &Path,
    dir: &Path,
) -> Command {
    let access =
        private_file(scratch, "passwd", &format!("{}:{}\n", env.access_key_id, env.secret_access_key));
    let mut cmd = Command::new(&peer.bin);
    cmd.arg("-f")
        .arg(format!("--accessFile={}", access.display()))
        .arg(format!("--baseURL={}/", env.endpoint.trim_end_matches('/')))
        .arg(format!("--prefix={prefix}"))
        .arg("--blockSize=4k")
        .arg(format!("--size={SIZE_ARG}"))
        .args(args)
        .arg(&env.bucket)
        .arg(dir)
        .stdin(std::process::Stdio::null());
    cmd
}

/// s3backer in the foreground on a new mount point.
fn mount_s3backer(peer: &Peer, env: &S3Env, prefix: &str, args: &[String], scratch: &Path) -> Mount {
    let dir = tempfile::tempdir().unwrap();
    let cmd = s3backer_command(peer, env, prefix, args, scratch, dir.path());
    Mount::spawn(cmd, dir)
}

/// Unmounts s3backer and waits until it has stored everything and exited.
fn unmount_s3backer(mut m: Mount) {
    let out = fusermount_u(m.path());
    assert!(out.status.success(), "fusermount -u: {}", String::from_utf8_lossy(&out.stderr));
    let status = m.wait_exit();
    assert!(status.success(), "s3backer exited with {status}:\n{}", m.log());
}

/// s3block's mount program on a new mount point, creating the volume
/// (1M of 4K blocks) when the prefix holds none.
fn s3block_command(env: &S3Env, prefix: &str, dir: &Path) -> Command {
    let mut cmd = fuse_command(
        FUSE,
        &format!("s3://{}", env.bucket),
        dir,
        &[&format!("--prefix={prefix}"), &format!("--size={SIZE_ARG}"), "--block-size=4k"],
    );
    cmd.env("S3BLOCK_ENDPOINT", &env.endpoint).stdout(std::process::Stdio::null());
    cmd
}

/// Runs a mount program that must refuse to mount `dir`: waits (at most
/// 60 s) for it to exit; returns its exit status and standard error.
fn refused(mut cmd: Command, dir: &Path, what: &str) -> (ExitStatus, String) {
    let log = dir.with_extension("refused.log");
    let mut child = cmd.stderr(std::fs::File::create(&log).unwrap()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if is_mounted(dir) || Instant::now() > deadline {
            let mounted = is_mounted(dir);
            let _ = fusermount_u(dir);
            let _ = child.kill();
            let _ = child.wait();
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("{what} {} instead of refusing:\n{text}", if mounted { "mounted" } else { "hung" });
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    (status, text)
}

/// s3block's view of the volume: its store options plus Garage's.
fn target(env: &S3Env, prefix: &str, store: &StoreArgs) -> Target {
    let args = StoreArgs {
        prefix: Some(prefix.to_owned()),
        endpoint: Some(env.endpoint.clone()),
        region: Some(env.region.clone()),
        ..store.clone()
    };
    open_target(&format!("s3://{}", env.bucket), &args).unwrap()
}

/// Writes at byte offsets, in order; a later one overwrites an earlier one.
type Writes = Vec<(usize, Vec<u8>)>;

/// Whole blocks 0, 1, 5 and the last one; the rest never written.
fn whole_blocks(seed: u64) -> Writes {
    [0, 1, 5, SIZE / BLOCK - 1].into_iter().map(|b| (b * BLOCK, pattern(seed + b as u64, BLOCK))).collect()
}

/// Writes that do not cover whole blocks: zero runs inside blocks, a last
/// block written only in part, blocks zeroed again (whole and in part) and
/// blocks never written between the written ones.
fn partial_blocks(seed: u64) -> Writes {
    let b = BLOCK;
    vec![
        (512, pattern(seed, 1024)),               // block 0: zeros, data, zeros
        (2 * b + 100, pattern(seed + 2, 200)),    // block 2: a small island
        (3 * b + 3000, pattern(seed + 3, 2 * b)), // end of 3, all of 4, start of 5
        (7 * b, pattern(seed + 7, b)),            // block 7 whole, then
        (7 * b + 1000, vec![0; 1500]),            // a zero run written inside it
        (9 * b, pattern(seed + 9, b)),            // block 9 written, then
        (9 * b, vec![0; b]),                      // zeroed whole: no object
        (10 * b + 10, pattern(seed + 10, 100)),   // block 10 written in part, then
        (10 * b + 10, vec![0; 100]),              // zeroed in part: no object
        (SIZE - 1500, pattern(seed + 255, 1499)), // the last block, up to its last byte
    ]
}

/// The volume after `writes`.
fn apply(writes: &Writes) -> Vec<u8> {
    let mut data = vec![0u8; SIZE];
    for (at, bytes) in writes {
        data[*at..at + bytes.len()].copy_from_slice(bytes);
    }
    data
}

/// The blocks of `data` that hold a non-zero byte.
fn nonzero_blocks(data: &[u8]) -> Vec<u32> {
    data.chunks(BLOCK).enumerate().filter(|(_, c)| c.iter().any(|&b| b != 0)).map(|(i, _)| i as u32).collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// How a case is stored: s3backer's options (both ways), and s3block's
/// store options and layout (its layout only when it creates the volume).
#[derive(Default)]
struct Case {
    s3backer: Vec<String>,
    store: StoreArgs,
    layout: LayoutArgs,
    /// What block 0's `Content-Encoding` must hold, written either way.
    encoding: Option<&'static str>,
}

/// Checks block 0's `Content-Encoding` against what the case expects.
async fn check_encoding(v: &Opened, case: &Case, writer: &str) {
    let Some(want) = case.encoding else { return };
    let key = v.device.key(BlockId(0));
    let (_, attrs) = object_attributes(v.target.store.as_ref(), &key).await.unwrap();
    let got = attrs.get(&object_store::Attribute::ContentEncoding).map(|e| e.as_ref().to_owned());
    assert!(
        got.as_deref().is_some_and(|e| e.contains(want)),
        "{writer} stored block 0 as {got:?}, not {want}"
    );
}

/// s3backer writes the volume through its device file; s3block then reads
/// every block equal, and lists exactly the non-zero blocks, under the
/// prefix's own bytes.
fn s3backer_writes_s3block_reads(peer: &Peer, env: &S3Env, prefix: &str, case: &Case, writes: &Writes) {
    use std::os::unix::fs::FileExt;
    let scratch = tempfile::tempdir().unwrap();
    let data = apply(writes);
    let m = mount_s3backer(peer, env, prefix, &case.s3backer, scratch.path());
    {
        let f = std::fs::OpenOptions::new().write(true).open(m.file()).unwrap();
        for (at, bytes) in writes {
            f.write_all_at(bytes, *at as u64).unwrap();
        }
        f.sync_all().unwrap();
    }
    unmount_s3backer(m);

    let t = target(env, prefix, &case.store);
    runtime().block_on(async {
        let v = open(&t, &LayoutArgs::default()).await.unwrap();
        assert_eq!(u64::from(v.volume.geometry.block_size()), BLOCK as u64, "block size from block 0");
        assert_eq!(v.volume.geometry.size(), SIZE as u64, "size from block 0");
        let listed: Vec<u32> = v.device.list_blocks().await.unwrap().iter().map(|s| s.block.0).collect();
        assert_eq!(listed, nonzero_blocks(&data), "the blocks s3backer stored, listed by s3block");
        check_encoding(&v, case, "s3backer").await;
        for (i, chunk) in data.chunks(BLOCK).enumerate() {
            let got = v.device.read_block(BlockId(i as u32)).await.unwrap();
            assert!(got[..] == chunk[..], "block {i} differs from what s3backer wrote");
        }
    });
}

/// s3block creates and writes the volume (partial writes read, merge and
/// store whole blocks); s3backer mounts it read-only and reads every byte
/// equal.
fn s3block_writes_s3backer_reads(peer: &Peer, env: &S3Env, prefix: &str, case: &Case, writes: &Writes) {
    let data = apply(writes);
    let t = target(env, prefix, &case.store);
    runtime().block_on(async {
        let layout =
            LayoutArgs { size: Some(SIZE as u64), block_size: Some(BLOCK as u64), ..case.layout.clone() };
        create(&t, &layout, false, false, &mut Vec::new()).await.unwrap();
        let v = open(&t, &LayoutArgs::default()).await.unwrap();
        for (at, bytes) in writes {
            v.device.write_at(*at as u64, Bytes::copy_from_slice(bytes)).await.unwrap();
        }
        let listed: Vec<u32> = v.device.list_blocks().await.unwrap().iter().map(|s| s.block.0).collect();
        assert_eq!(listed, nonzero_blocks(&data), "the blocks s3block stored");
        check_encoding(&v, case, "s3block").await;
    });
    let scratch = tempfile::tempdir().unwrap();
    let mut args = vec!["--readOnly".to_owned()];
    args.extend_from_slice(&case.s3backer);
    let m = mount_s3backer(peer, env, prefix, &args, scratch.path());
    let read = std::fs::read(m.file()).unwrap();
    unmount_s3backer(m);
    assert_eq!(read.len(), data.len());
    for (i, (a, b)) in read.chunks(BLOCK).zip(data.chunks(BLOCK)).enumerate() {
        assert!(a == b, "s3backer reads block {i} differently from what s3block wrote");
    }
}

/// Both ways, each on its own prefix under `base`.
fn both_ways(peer: &Peer, env: &S3Env, base: &str, case: &Case, writes: fn(u64) -> Writes) {
    s3backer_writes_s3block_reads(peer, env, &format!("{base}a/"), case, &writes(1));
    s3block_writes_s3backer_reads(peer, env, &format!("{base}b/"), case, &writes(2));
}

fn unicode_prefix_is_shared_both_ways(peer: &Peer, env: &S3Env) {
    let base = format!("{}ünï-", unique_prefix("interop_unicode"));
    both_ways(peer, env, &base, &Case::default(), whole_blocks);
}

fn hash_prefix_and_deflate_are_shared_both_ways(peer: &Peer, env: &S3Env) {
    let compression = CompressArgs::from_compression(Some(Compression::deflate(6).unwrap()));
    let case = Case {
        s3backer: vec!["--blockHashPrefix".into(), "--compress".into()],
        layout: LayoutArgs { hash_prefix: true, compression, ..Default::default() },
        encoding: Some("deflate"),
        ..Default::default()
    };
    both_ways(peer, env, &unique_prefix("interop_hashed"), &case, whole_blocks);
}

fn aes_128_cbc_encryption_is_shared_both_ways(peer: &Peer, env: &S3Env) {
    let scratch = tempfile::tempdir().unwrap();
    let password = private_file(scratch.path(), "password", "correct horse battery staple\n");
    let case = Case {
        s3backer: vec!["--encrypt".into(), format!("--passwordFile={}", password.display())],
        store: StoreArgs {
            encrypt: Some(Some(EncryptionScheme::Aes128Cbc)),
            password_file: Some(password.clone()),
            ..Default::default()
        },
        encoding: Some("encrypt-AES-128-CBC"),
        ..Default::default()
    };
    both_ways(peer, env, &unique_prefix("interop_aes"), &case, whole_blocks);
}

fn partial_blocks_and_zero_gaps_are_shared_both_ways(peer: &Peer, env: &S3Env) {
    both_ways(peer, env, &unique_prefix("interop_partial"), &Case::default(), partial_blocks);
}

/// Whether `{prefix}s3backer-mounted`, the mount lock both programs use,
/// is stored.
fn lock_held(env: &S3Env, prefix: &str) -> bool {
    let store = env.store();
    runtime().block_on(object_attributes(store.as_ref(), &format!("{prefix}s3backer-mounted"))).is_some()
}

/// s3backer refuses to mount read-write a volume s3block's mount holds, and
/// s3block's mount refuses one s3backer holds (exit 4, naming the holder).
/// A refusal leaves the holder's lock in place; each holder removes it when
/// it unmounts.
fn each_refuses_a_volume_the_other_holds(peer: &Peer, env: &S3Env) {
    let base = unique_prefix("interop_lock");
    let scratch = tempfile::tempdir().unwrap();

    let prefix = format!("{base}a/");
    let dir = tempfile::tempdir().unwrap();
    let held = Mount::spawn(s3block_command(env, &prefix, dir.path()), dir);
    let dir = tempfile::tempdir().unwrap();
    let cmd = s3backer_command(peer, env, &prefix, &[], scratch.path(), dir.path());
    let (status, log) = refused(cmd, dir.path(), "s3backer");
    assert!(!status.success(), "s3backer exited with {status}:\n{log}");
    assert!(log.contains("appears to be already mounted"), "s3backer must say the volume is mounted:\n{log}");
    assert!(lock_held(env, &prefix), "s3backer's refusal removed s3block's lock");
    held.unmount();
    assert!(!lock_held(env, &prefix), "s3block's unmount left its lock");

    let prefix = format!("{base}b/");
    let held = mount_s3backer(peer, env, &prefix, &[], scratch.path());
    let dir = tempfile::tempdir().unwrap();
    let (status, log) = refused(s3block_command(env, &prefix, dir.path()), dir.path(), "s3block's mount");
    assert_eq!(status.code(), Some(4), "s3block's mount must exit 4 (locked):\n{log}");
    assert!(log.contains("already mounted by"), "{log}");
    assert!(lock_held(env, &prefix), "s3block's refusal removed s3backer's lock");
    unmount_s3backer(held);
    assert!(!lock_held(env, &prefix), "s3backer's unmount left its lock");
}

fn zstd_is_shared_both_ways(peer: &Peer, env: &S3Env) {
    let base = unique_prefix("interop_zstd");
    let case =
        Case { s3backer: vec!["--compress=zstd".into(), "--compress-level=5".into()], ..Default::default() };
    s3backer_writes_s3block_reads(peer, env, &format!("{base}a/"), &case, &whole_blocks(1));
    let compression = CompressArgs::from_compression(Some(Compression::zstd(3).unwrap()));
    let case = Case {
        layout: LayoutArgs { compression, ..Default::default() },
        encoding: Some("zstd"),
        ..Default::default()
    };
    s3block_writes_s3backer_reads(peer, env, &format!("{base}b/"), &case, &whole_blocks(2));
}

/// One test per case in the module `$module`, against the peer `$peer` gives.
macro_rules! against {
    ($module:ident, $peer:ident, [$($case:ident),* $(,)?]) => {
        mod $module {
            $(
                #[test]
                fn $case() {
                    if let Some((peer, env)) = super::$peer() {
                        super::$case(&peer, &env);
                    }
                }
            )*
        }
    };
}

against!(
    s3backer_1_5_4,
    s3backer_1_5_4,
    [
        unicode_prefix_is_shared_both_ways,
        hash_prefix_and_deflate_are_shared_both_ways,
        aes_128_cbc_encryption_is_shared_both_ways,
        partial_blocks_and_zero_gaps_are_shared_both_ways,
        each_refuses_a_volume_the_other_holds,
    ]
);

against!(
    s3backer_2,
    s3backer_2,
    [
        unicode_prefix_is_shared_both_ways,
        hash_prefix_and_deflate_are_shared_both_ways,
        aes_128_cbc_encryption_is_shared_both_ways,
        partial_blocks_and_zero_gaps_are_shared_both_ways,
        each_refuses_a_volume_the_other_holds,
        zstd_is_shared_both_ways,
    ]
);
