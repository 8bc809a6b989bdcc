//! The Garage tests' side of the kernel harness: starting this tree's
//! s3block-fuse against the test bucket, and counting the bucket's blocks.
//! The guards (mount, loop device, filesystem) and the checks are the
//! test kit's `s3block_testkit::kernel`, shared with the
//! reliability tests.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use futures::TryStreamExt;
use object_store::ObjectStore;
use s3block_testkit::S3Env;
use s3block_testkit::kernel::{Mount, fuse_command, is_mounted, kernel_available};

pub(crate) use s3block_testkit::kernel::{FsMount, Loop, checksum, mkfs_ext4, pattern, run};

const BIN: &str = env!("CARGO_BIN_EXE_s3block-fuse");

/// Everything these tests need, or `None` (after saying why) when not under
/// CI; under `CI=true` a missing piece fails the test, naming it.
pub(crate) fn setup(tools: &[&str]) -> Option<S3Env> {
    if !kernel_available(tools) {
        return None;
    }
    s3block_testkit::s3_env()
}

/// A new volume URL in the test bucket, under a prefix of its own.
pub(crate) fn volume_url(env: &S3Env, name: &str) -> (String, String) {
    let prefix = s3block_testkit::unique_prefix(name);
    (format!("s3://{}/{}", env.bucket, prefix), prefix)
}

fn command(env: &S3Env, url: &str, dir: &Path, args: &[&str]) -> Command {
    let endpoint = format!("--endpoint={}", env.endpoint);
    let args: Vec<&str> = std::iter::once(endpoint.as_str()).chain(args.iter().copied()).collect();
    let mut cmd = fuse_command(BIN, url, dir, &args);
    cmd.env("AWS_ACCESS_KEY_ID", &env.access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", &env.secret_access_key)
        .env("AWS_REGION", &env.region);
    cmd
}

/// A mount that must fail: its exit status and standard error.
pub(crate) fn mount_fails(env: &S3Env, url: &str, args: &[&str]) -> Output {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = command(env, url, dir.path(), args).output().expect("run s3block-fuse");
    if is_mounted(dir.path()) {
        let _ = Command::new("fusermount3").arg("-uz").arg(dir.path()).status();
        panic!("the mount was expected to fail but is up");
    }
    out
}

/// s3block-fuse mounted on the test bucket: up within 60 s, and given two
/// minutes to exit once told to.
pub(crate) fn mount(env: &S3Env, url: &str, args: &[&str]) -> Mount {
    let dir = tempfile::tempdir().expect("temp dir");
    let cmd = command(env, url, dir.path(), args);
    Mount::spawn_within(cmd, dir, Duration::from_secs(60), Duration::from_secs(120))
}

/// The block objects stored under `prefix` (keys ending in 8 hex digits),
/// and whether the mount lock object is there.
pub(crate) fn stored_objects(env: &S3Env, prefix: &str) -> (usize, bool) {
    let store = env.store();
    let root = object_store::path::Path::from(prefix.trim_end_matches('/'));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let keys: Vec<String> = runtime
        .block_on(async { store.list(Some(&root)).map_ok(|m| m.location.to_string()).try_collect().await })
        .expect("list the test prefix");
    let blocks = keys
        .iter()
        .filter(|k| {
            let name = k.rsplit('/').next().unwrap_or("");
            name.len() == 8 && name.bytes().all(|b| b.is_ascii_hexdigit())
        })
        .count();
    (blocks, keys.iter().any(|k| k.ends_with("s3backer-mounted")))
}
