//! `verify`, `erase` and `copy` on a real S3 server (Garage, started by
//! `scripts/garage.sh start`; see the `s3block-testkit` helpers). Without its
//! environment these tests skip, except under `CI=true`, where they fail.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::{fill, plant_bad_blocks_and_verify, put};
use futures::TryStreamExt;
use object_store::ObjectStore;
use object_store::path::Path;
use s3block_cli::copy::{CopyOptions, copy};
use s3block_cli::exit::{OK, PROBLEMS};
use s3block_cli::maint::{erase, verify};
use s3block_cli::target::{Target, open as open_url};
use s3block_cli::volume::{create, open};
use s3block_cli::{LayoutArgs, StoreArgs};
use s3block_core::{BlockDevice, BlockDeviceExt, BlockId};
use s3block_testkit::{S3Env, s3_env, unique_prefix};

/// The volume at a fresh prefix of the test bucket, opened as the CLI opens
/// it: the shared store options, credentials from the `AWS_*` environment.
fn target(env: &S3Env, name: &str) -> Target {
    let args = StoreArgs {
        endpoint: Some(env.endpoint.clone()),
        region: Some(env.region.clone()),
        force_path_style: true,
        ..Default::default()
    };
    open_url(&format!("s3://{}/{}", env.bucket, unique_prefix(name)), &args).unwrap()
}

fn layout(size: u64, block_size: u64) -> LayoutArgs {
    LayoutArgs { size: Some(size), block_size: Some(block_size), ..Default::default() }
}

async fn keys_under(env: &S3Env, prefix: &str) -> Vec<String> {
    let store = env.store();
    let listed: Vec<_> = store.list(Some(&Path::from(prefix))).try_collect().await.unwrap();
    listed.into_iter().map(|m| m.location.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_truncated_garbage_and_wrongly_encoded_objects_on_garage() {
    let Some(env) = s3_env() else { return };
    let t = target(&env, "cli-verify");
    create(&t, &layout(1 << 20, 4096), false, false, &mut Vec::new()).await.unwrap();
    let keys = plant_bad_blocks_and_verify(&t, &[0, 4]).await;
    let mut out = Vec::new();
    assert_eq!(verify(&t, &LayoutArgs::default(), 4, true, false, &mut out).await.unwrap(), PROBLEMS);
    let text = String::from_utf8(out).unwrap();
    for key in &keys {
        assert!(text.contains(key), "verify does not name {key}: {text}");
    }
    erase(&t, &LayoutArgs::default(), true, true, &mut |_| true, &mut Vec::new()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erase_leaves_no_object_of_the_volume_on_garage() {
    let Some(env) = s3_env() else { return };
    let t = target(&env, "cli-erase");
    let neighbour = target(&env, "cli-erase-neighbour");
    for v in [&t, &neighbour] {
        create(v, &layout(4 << 20, 4096), false, false, &mut Vec::new()).await.unwrap();
    }
    let v = open(&t, &LayoutArgs::default()).await.unwrap();
    for b in (0..1024).step_by(5) {
        v.device.write_block(BlockId(b), Bytes::from(fill(4096, b as u8))).await.unwrap();
    }
    put(
        t.store.as_ref(),
        &format!("{}s3backer-mounted", t.prefix),
        b"vps\n20250101T000000Z\n".to_vec(),
        None,
    )
    .await;
    assert_eq!(keys_under(&env, &t.prefix).await.len(), 205 + 2);
    let mut asked = 0;
    let mut out = Vec::new();
    let code = erase(
        &t,
        &LayoutArgs::default(),
        true,
        true,
        &mut |n| {
            asked = n;
            true
        },
        &mut out,
    )
    .await
    .unwrap();
    assert_eq!(code, OK);
    assert_eq!(asked, 0, "--force asks nothing");
    let left = keys_under(&env, &t.prefix).await;
    assert!(left.is_empty(), "erase left objects behind: {left:?}");
    // Another volume in the same bucket is untouched.
    assert_eq!(keys_under(&env, &neighbour.prefix).await.len(), 1);
    erase(&neighbour, &LayoutArgs::default(), true, true, &mut |_| true, &mut Vec::new()).await.unwrap();
}

async fn copy_and_compare(env: &S3Env, from: u64, to: u64) {
    let (src, dst) = (target(env, "cli-copy-src"), target(env, "cli-copy-dst"));
    create(&src, &layout(4 << 20, from), false, false, &mut Vec::new()).await.unwrap();
    let s = open(&src, &LayoutArgs::default()).await.unwrap();
    // Data across block boundaries of both sizes, and zero gaps.
    s.device.write_at(100, Bytes::from(fill(200_000, 7))).await.unwrap();
    s.device.write_at(3 << 20, Bytes::from(fill(70_000, 9))).await.unwrap();
    let opts = CopyOptions { block_size: Some(to), parallel: 4, quiet: true, ..Default::default() };
    let mut out = Vec::new();
    assert_eq!(copy(&src, &dst, &opts, true, &mut out).await.unwrap(), OK);
    let report: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(report["mismatched_chunks"].as_array().unwrap().len(), 0, "{report}");
    let d = open(&dst, &LayoutArgs::default()).await.unwrap();
    assert_eq!(u64::from(d.volume.geometry.block_size()), to);
    let whole_src = s.device.read_at(0, 4 << 20).await.unwrap();
    let whole_dst = d.device.read_at(0, 4 << 20).await.unwrap();
    assert!(whole_src == whole_dst, "copy {from} -> {to} differs");
    // Zero blocks were skipped: the copy stores only blocks holding data.
    let stored = d.device.list_blocks().await.unwrap().len();
    let nonzero = whole_dst.chunks(to as usize).filter(|c| c.iter().any(|&x| x != 0)).count();
    assert_eq!(stored, nonzero);
    for v in [&src, &dst] {
        erase(v, &LayoutArgs::default(), true, true, &mut |_| true, &mut Vec::new()).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_reblocks_64k_to_1m_and_back_byte_identical_on_garage() {
    let Some(env) = s3_env() else { return };
    copy_and_compare(&env, 64 << 10, 1 << 20).await;
    copy_and_compare(&env, 1 << 20, 64 << 10).await;
}
