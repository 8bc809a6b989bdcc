//! `s3block copy` between two Garage buckets, each side with its own store
//! options and credentials: the source signed by the `AWS_*` environment,
//! the copy by its `--dst-access-file` alone. A wrong key on either side
//! fails naming that side; an interrupted copy is resumed on S3. Runs the
//! built binary, so the flags and environment are the user's. Without the
//! Garage environment (`scripts/garage.sh start`) it skips, except under
//! `CI=true`, where it fails.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use bytes::Bytes;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use s3block_cli::maint::erase;
use s3block_cli::target::{Target, open as open_url};
use s3block_cli::volume::{create, open};
use s3block_cli::{LayoutArgs, StoreArgs};
use s3block_core::{BlockDevice, BlockId};
use s3block_testkit::{S3Env, s3_env, unique_prefix};

/// The second bucket, made for the test key by `scripts/garage.sh bucket`.
const DST_BUCKET: &str = "s3block-copy-dst";

fn make_dst_bucket() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/garage.sh");
    let o = Command::new("bash").arg(script).args(["bucket", DST_BUCKET]).output().unwrap();
    assert!(o.status.success(), "scripts/garage.sh bucket {DST_BUCKET} failed: {o:?}");
}

fn store_args(env: &S3Env) -> StoreArgs {
    StoreArgs {
        endpoint: Some(env.endpoint.clone()),
        region: Some(env.region.clone()),
        force_path_style: true,
        ..Default::default()
    }
}

fn target(env: &S3Env, url: &str) -> Target {
    open_url(url, &store_args(env)).unwrap()
}

fn access_file(dir: &tempfile::TempDir, name: &str, id: &str, secret: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, format!("{id}:{secret}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path.display().to_string()
}

/// `s3block copy SRC DST` with the source reached by `--endpoint` and the
/// copy by `--dst-*`, `dst_file` its access file; `secret` is the
/// `AWS_SECRET_ACCESS_KEY` of the environment.
fn s3block_copy(env: &S3Env, src: &str, dst: &str, dst_file: &str, secret: &str, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_s3block"))
        .args(["copy", src, dst, "--endpoint", &env.endpoint, "--region", &env.region, "--force-path-style"])
        .args(["--dst-endpoint", &env.endpoint, "--dst-region", &env.region, "--dst-force-path-style"])
        .args(["--dst-access-file", dst_file, "--quiet", "--json"])
        .args(extra)
        .env("AWS_ACCESS_KEY_ID", &env.access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env_remove("S3BLOCK_ENDPOINT")
        .env_remove("S3BLOCK_ACCESS_FILE")
        .output()
        .unwrap()
}

fn report(o: &Output) -> serde_json::Value {
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    serde_json::from_slice(&o.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_between_two_buckets_with_their_own_credentials_and_resume_on_garage() {
    let Some(env) = s3_env() else { return };
    make_dst_bucket();
    let dir = tempfile::tempdir().unwrap();
    let good = access_file(&dir, "dst-good", &env.access_key_id, &env.secret_access_key);
    let bad = access_file(&dir, "dst-bad", &env.access_key_id, "not-the-secret");

    let src_url = format!("s3://{}/{}", env.bucket, unique_prefix("cli-xcopy-src"));
    let dst_url = format!("s3://{DST_BUCKET}/{}", unique_prefix("cli-xcopy-dst"));
    let src = target(&env, &src_url);
    let layout = LayoutArgs { size: Some(4 << 20), block_size: Some(64 << 10), ..Default::default() };
    create(&src, &layout, false, false, &mut Vec::new()).await.unwrap();
    let s = open(&src, &LayoutArgs::default()).await.unwrap();
    for b in (0..64u32).step_by(3) {
        let data: Vec<u8> = (0..64 << 10).map(|i: u32| (i / 11) as u8 ^ b as u8 | 1).collect();
        s.device.write_block(BlockId(b), Bytes::from(data)).await.unwrap();
    }

    // The copy's access file holds a wrong secret while the environment's
    // is right: the copy is signed with its file alone, and the error names it.
    let o = s3block_copy(&env, &src_url, &dst_url, &bad, &env.secret_access_key, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_ne!(o.status.code(), Some(0), "{o:?}");
    assert!(err.contains(&format!("the copy at {dst_url}")) && err.contains("dst-bad"), "{err}");
    assert!(
        err.contains("--dst-access-file (else --access-file) names"),
        "the hint names the copy's option: {err}"
    );
    // A wrong secret in the environment fails on the source, named as such,
    // even though the copy's own file is right.
    let o = s3block_copy(&env, &src_url, &dst_url, &good, "not-the-secret", &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_ne!(o.status.code(), Some(0), "{o:?}");
    assert!(err.contains(&format!("the source at {src_url}")), "{err}");
    assert!(!err.contains("the copy at"), "{err}");

    // Both right: the volume moves to the other bucket, verified.
    let first = report(&s3block_copy(&env, &src_url, &dst_url, &good, &env.secret_access_key, &[]));
    assert_eq!(first["blocks_written"], 22, "{first}");
    assert!(first["chunks_verified"].as_u64().unwrap() >= 22, "{first}");
    assert_eq!(first["mismatched_chunks"].as_array().unwrap().len(), 0, "{first}");

    // Interrupted: two blocks missing, one torn. Resumed: those three are
    // written, the others skipped as equal, and the read-back passes.
    let dst_store = env.with_bucket(DST_BUCKET).store();
    let dst = target(&env, &dst_url);
    for b in [0u32, 30] {
        dst_store.delete(&Path::from(format!("{}{b:08x}", dst.prefix))).await.unwrap();
    }
    dst_store
        .put(&Path::from(format!("{}{:08x}", dst.prefix, 9)), Bytes::from_static(b"torn").into())
        .await
        .unwrap();
    let o = s3block_copy(&env, &src_url, &dst_url, &good, &env.secret_access_key, &[]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("--resume"), "{o:?}");
    let again = report(&s3block_copy(&env, &src_url, &dst_url, &good, &env.secret_access_key, &["--resume"]));
    assert_eq!(again["resumed"], true, "{again}");
    assert_eq!(
        (again["blocks_written"].as_u64(), again["blocks_skipped"].as_u64()),
        (Some(3), Some(19)),
        "{again}"
    );
    assert_eq!(again["mismatched_chunks"].as_array().unwrap().len(), 0, "{again}");

    for t in [&src, &dst] {
        erase(t, &LayoutArgs::default(), true, true, &mut |_| true, &mut Vec::new()).await.unwrap();
    }
}

#[test]
fn copy_help_names_the_options_of_each_side_and_resume() {
    let o = Command::new(env!("CARGO_BIN_EXE_s3block")).args(["copy", "--help"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let help = String::from_utf8_lossy(&o.stdout);
    for flag in [
        "--dst-endpoint",
        "--dst-region",
        "--dst-access-file",
        "--dst-force-path-style",
        "--dst-prefix",
        "--resume",
        "S3BLOCK_DST_ENDPOINT",
        "S3BLOCK_DST_ACCESS_FILE",
    ] {
        assert!(help.contains(flag), "{flag} missing from copy --help: {help}");
    }
    assert!(help.contains("not with the AWS_* environment"), "{help}");
}

#[test]
fn the_copys_store_options_default_to_the_sources() {
    let src = StoreArgs {
        endpoint: Some("http://src:3900".into()),
        region: Some("garage".into()),
        access_file: Some("/etc/src.passwd".into()),
        prefix: Some("p-".into()),
        password_file: Some("/etc/pw".into()),
        ..Default::default()
    };
    let none = s3block_cli::DstStoreArgs::default();
    let d = none.store_args(&src, Some("q-".into()));
    assert_eq!((d.endpoint.as_deref(), d.region.as_deref()), (Some("http://src:3900"), Some("garage")));
    assert_eq!(d.access_file.as_deref(), Some(std::path::Path::new("/etc/src.passwd")));
    assert_eq!((d.prefix.as_deref(), d.password_file), (Some("q-"), None));
    assert!(!none.own_credentials());
    let own = s3block_cli::DstStoreArgs {
        dst_endpoint: Some("https://s3.eu-central-003.backblazeb2.com".into()),
        dst_region: Some("eu-central-003".into()),
        dst_access_file: Some("/etc/b2.passwd".into()),
        dst_force_path_style: false,
    };
    let d = own.store_args(&src, None);
    assert_eq!(d.endpoint.as_deref(), Some("https://s3.eu-central-003.backblazeb2.com"));
    assert_eq!(d.region.as_deref(), Some("eu-central-003"));
    assert_eq!(d.access_file.as_deref(), Some(std::path::Path::new("/etc/b2.passwd")));
    assert!(own.own_credentials());
}
