//! `s3block cache inspect` and `s3block cache discard` on real cache
//! directories: one closed cleanly, one a crash left with blocks not yet in
//! the bucket, one in use, one damaged, and a directory that is not one.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use clap::Parser;
use s3block_cache::testing::GatedDevice;
use s3block_cache::{DiskCache, DiskCacheConfig, Durability, Marks, VolumeIdentity};
use s3block_cli::Cli;
use s3block_cli::exit::{OK, PROBLEMS};
use s3block_core::{BlockDevice, BlockId, Bytes, Geometry, MemoryDevice};
use serde_json::Value;

const BS: u64 = 4096;

/// Runs `s3block ARGS`; returns the exit code, stdout and stderr.
fn s3block(args: &[&str]) -> (u8, String, String) {
    let mut full = vec!["s3block"];
    full.extend_from_slice(args);
    let cli = Cli::try_parse_from(full).unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = s3block_cli::run(cli, &mut out, &mut err);
    (code, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
}

type Lower = Arc<GatedDevice<MemoryDevice>>;

/// Opens a disk cache in `dir` over a memory volume of 64 blocks, whose
/// writes of `held` blocks wait until released (so they stay unstored).
async fn open(dir: &Path, held: &[u32]) -> DiskCache<Lower> {
    let geometry = Geometry::new(64 * BS, BS).unwrap();
    let lower = Arc::new(GatedDevice::new(MemoryDevice::new(geometry)));
    for &b in held {
        lower.hold(BlockId(b));
    }
    let config = DiskCacheConfig::builder(dir, 16 << 20).durability(Durability::Local).build();
    let id = VolumeIdentity { volume: "volume test-cli".into(), geometry };
    let marks = Marks { found: None, new: "m1".into() };
    let (cache, _) = DiskCache::open(lower, config, id, marks).await.unwrap();
    cache.confirm_marker().unwrap();
    cache
}

fn block(n: u8) -> Bytes {
    Bytes::from(vec![n; BS as usize])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_names_the_volume_and_the_blocks_not_in_the_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), &[3, 7, 9]).await;
    for b in [3u32, 7, 9] {
        cache.write_block(BlockId(b), block(b as u8)).await.unwrap();
    }
    // Local durability: the flush makes them durable on disk, not in the bucket.
    cache.flush().await.unwrap();
    let d = dir.path().to_str().unwrap();

    // In use: refused, naming the directory.
    let (code, _, err) = s3block(&["cache", "inspect", d]);
    assert_ne!(code, OK, "a cache in use must be refused");
    assert!(err.contains(d), "{err}");

    // A crash: the blocks are still there, and inspect lists them.
    cache.simulate_crash();
    drop(cache);
    let (code, out, err) = s3block(&["cache", "inspect", d]);
    assert_eq!(code, OK, "{out}{err}");
    assert!(out.contains("volume test-cli") && out.contains("not closed cleanly"), "{out}");
    assert!(out.contains("not in bucket") && out.contains("3, 7, 9"), "{out}");
    let (code, out, _) = s3block(&["cache", "inspect", "--json", d]);
    assert_eq!(code, OK);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["dirty_blocks"], serde_json::json!([3, 7, 9]), "{out}");
    assert_eq!(v["block_size"], BS);

    // Discard asks for --force while blocks exist nowhere else.
    let (code, _, err) = s3block(&["cache", "discard", d]);
    assert_ne!(code, OK);
    assert!(err.contains("--force") && err.contains("3, 7, 9"), "{err}");
    assert!(s3block(&["cache", "inspect", d]).0 == OK, "the refused discard deleted something");
    let (code, out, err) = s3block(&["cache", "discard", "--force", d]);
    assert_eq!(code, OK, "{err}");
    assert!(out.contains("Discarded") && out.contains("3 blocks that were not in the bucket"), "{out}");
    let (code, _, err) = s3block(&["cache", "inspect", d]);
    assert_ne!(code, OK, "nothing is left to inspect");
    assert!(err.contains(d), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_directory_is_discarded_without_force_and_damage_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), &[]).await;
    for b in 0..8u32 {
        cache.write_block(BlockId(b), block(b as u8 + 1)).await.unwrap();
    }
    cache.close().await.unwrap();
    drop(cache);
    let d = dir.path().to_str().unwrap();
    let (code, out, _) = s3block(&["cache", "inspect", d]);
    assert_eq!(code, OK, "{out}");
    assert!(out.contains("closed cleanly") && out.contains("not in bucket    0 blocks"), "{out}");

    // Bytes flipped in the middle of every segment file: found and reported, exit 1.
    let mut damaged = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let Ok(mut bytes) = std::fs::read(&path) else { continue };
        if bytes.len() > 2 * BS as usize {
            let at = bytes.len() / 2;
            bytes[at] ^= 0xff;
            std::fs::write(&path, bytes).unwrap();
            damaged += 1;
        }
    }
    assert!(damaged > 0, "no segment file found to damage");
    let (code, out, _) = s3block(&["cache", "inspect", d]);
    assert_eq!(code, PROBLEMS, "damage must be reported:\n{out}");
    assert!(out.contains("damaged entries  1") || out.contains("damaged entries"), "{out}");

    let (code, out, err) = s3block(&["cache", "discard", d]);
    assert_eq!(code, OK, "{err}");
    assert!(out.contains("Discarded"), "{out}");
}

#[test]
fn a_directory_that_is_not_a_cache_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("precious.txt"), "keep me").unwrap();
    let d = dir.path().to_str().unwrap();
    let (code, _, err) = s3block(&["cache", "discard", "--force", d]);
    assert_ne!(code, OK);
    assert!(err.contains(d), "{err}");
    assert_eq!(std::fs::read_to_string(dir.path().join("precious.txt")).unwrap(), "keep me");
    let (code, _, err) = s3block(&["cache", "inspect", "/nonexistent/s3block-cache"]);
    assert_ne!(code, OK);
    assert!(err.contains("/nonexistent/s3block-cache"), "{err}");
}
