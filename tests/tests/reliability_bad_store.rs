//! Store errors at start, on a real S3 server (Garage): wrong credentials,
//! an unreachable endpoint, a missing bucket. The mount program and the
//! `s3block` command refuse with one line naming the endpoint or bucket and
//! what to check, quickly, and without a panic.
//!
//! They need the shared test Garage (`scripts/garage.sh start`, then
//! `. "$(scripts/garage.sh env)"`); without it they skip, except under CI.

#![allow(clippy::unwrap_used)] // a failed step should stop the test loudly

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use s3block_testkit::kernel::{assert_no_panic, is_mounted, kernel_available};
use s3block_testkit::{S3Env, s3_env, unique_prefix};

const FUSE: &str = env!("CARGO_BIN_EXE_rel-s3block-fuse");
const CLI: &str = env!("CARGO_BIN_EXE_rel-s3block");

fn with_env(mut cmd: Command, env: &S3Env, endpoint: &str) -> Command {
    cmd.env("AWS_ACCESS_KEY_ID", &env.access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", &env.secret_access_key)
        .env("AWS_REGION", &env.region)
        .env("S3BLOCK_ENDPOINT", endpoint)
        .env_remove("S3BLOCK_INJECT_FAULTS")
        .env_remove("S3BLOCK_PREFIX")
        .stdin(Stdio::null());
    cmd
}

/// A mount that must be refused with exit 3 (a store error); its standard error and how long it took.
fn mount_refused(env: &S3Env, endpoint: &str, url: &str) -> (String, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(FUSE);
    cmd.args(["-f", "--size=64M"]).arg(url).arg(dir.path());
    let started = Instant::now();
    let out: Output = with_env(cmd, env, endpoint).output().unwrap();
    let took = started.elapsed();
    assert!(!is_mounted(dir.path()), "mounted against a bad store");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert_no_panic("the refused mount", &stderr);
    eprintln!("mount ({took:.1?}): {}", stderr.lines().last().unwrap_or_default());
    (stderr, took)
}

/// `s3block info URL` that must fail with exit 3 (a store error); its standard error.
fn info_refused(env: &S3Env, endpoint: &str, url: &str) -> String {
    let mut cmd = Command::new(CLI);
    cmd.args(["info", url]);
    let out = with_env(cmd, env, endpoint).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert_no_panic("s3block info", &stderr);
    eprintln!("info: {}", stderr.lines().last().unwrap_or_default());
    stderr
}

fn setup() -> Option<S3Env> {
    if !kernel_available(&[]) {
        return None;
    }
    s3_env()
}

#[test]
fn wrong_credentials_are_refused_naming_what_to_check() {
    let Some(env) = setup() else { return };
    let mut bad = env.clone();
    bad.secret_access_key = format!("{}x", env.secret_access_key);
    let url = format!("s3://{}/{}", env.bucket, unique_prefix("wrong_credentials"));
    let expect = format!("{} refused the credentials for bucket {:?}", env.endpoint, env.bucket);
    let (stderr, took) = mount_refused(&bad, &env.endpoint, &url);
    assert!(stderr.contains(&expect) && stderr.contains("AWS_SECRET_ACCESS_KEY"), "{stderr}");
    assert!(took < Duration::from_secs(10), "refused only after {took:?}");
    let stderr = info_refused(&bad, &env.endpoint, &url);
    assert!(stderr.contains(&expect), "{stderr}");
}

/// With no credentials anywhere the refusal says so, and where s3block
/// looked, in a few lines and without the server's XML.
#[test]
fn no_credentials_at_all_says_where_it_looked() {
    let Some(env) = setup() else { return };
    let home = tempfile::tempdir().unwrap();
    let url = format!("s3://{}/{}", env.bucket, unique_prefix("no_credentials"));
    let mut cmd = Command::new(CLI);
    cmd.args(["info", &url]);
    let mut cmd = with_env(cmd, &env, &env.endpoint);
    cmd.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("S3BLOCK_ACCESS_FILE")
        .env("HOME", home.path());
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert_no_panic("s3block info", &stderr);
    assert!(stderr.contains("no credentials found, tried: AWS_ACCESS_KEY_ID"), "{stderr}");
    assert!(stderr.contains(&home.path().join(".s3backer_passwd").display().to_string()), "{stderr}");
    assert!(
        !stderr.contains("<?xml") && !stderr.contains("<Error>"),
        "the server's XML is left out: {stderr}"
    );
    assert!(stderr.len() < 500, "{} characters: {stderr}", stderr.len());
}

#[test]
fn missing_bucket_is_refused_naming_it() {
    let Some(env) = setup() else { return };
    let url = format!("s3://s3block-no-such-bucket/{}", unique_prefix("missing_bucket"));
    let expect = format!("bucket \"s3block-no-such-bucket\" does not exist at {}", env.endpoint);
    let (stderr, _) = mount_refused(&env, &env.endpoint, &url);
    assert!(stderr.contains(&expect), "{stderr}");
    let stderr = info_refused(&env, &env.endpoint, &url);
    assert!(stderr.contains(&expect), "{stderr}");
}

#[test]
fn unreachable_endpoint_is_refused_after_a_short_retry() {
    let Some(env) = setup() else { return };
    // Port 9 (discard) on loopback: nothing listens, connections are refused.
    let endpoint = "http://127.0.0.1:9";
    let url = format!("s3://{}/{}", env.bucket, unique_prefix("unreachable"));
    let (stderr, took) = mount_refused(&env, endpoint, &url);
    assert!(
        stderr.contains(&format!("cannot reach {endpoint}")) && stderr.contains("check the endpoint"),
        "{stderr}"
    );
    assert!(took < Duration::from_secs(30), "refused only after {took:?}");
}
