//! `s3block stats` against the statistics a real mount stack produces (made
//! by the mount program's own code over the memory store, not typed here):
//! the JSON is data, and its numbers add up after a workload.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use s3block_cache::MountStats;
use s3block_cli::exit::OK;
use s3block_cli::stats::{STATS_FILE, run};
use s3block_core::{BlockDevice, BlockDeviceExt, BlockId, Bytes};
use s3block_fuse::{Options, build_stack};
use serde_json::Value;

/// Every leaf of `v` with its path; objects and arrays are walked.
fn leaves(v: &Value, path: String, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                leaves(child, format!("{path}.{k}"), out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                leaves(child, format!("{path}[{i}]"), out);
            }
        }
        leaf => out.push((path, leaf.clone())),
    }
}

/// Writes, reads back sequentially (read-ahead), writes part of an
/// unread stored block (an upload fetch), zeroes a block (a delete), and
/// returns the stats JSON and text.
async fn workload() -> (String, String) {
    let opts = Options::parse_from_args([
        "s3block-fuse",
        "--size=4M",
        "--block-size=64K",
        "--cache-size=256K",
        "memory://",
        "/m",
    ])
    .unwrap();
    let stack = build_stack(&opts.volume).await.unwrap();
    let dev = &stack.device;
    let block = 65_536usize;
    dev.write_at(0, Bytes::from(vec![7u8; 40 * block])).await.unwrap();
    dev.flush().await.unwrap();
    // A sequential read of 40 blocks through a 4-block cache: misses at the
    // start, then blocks fetched ahead.
    for at in (0..40 * block).step_by(16 << 10) {
        dev.read_at(at as u64, 16 << 10).await.unwrap();
    }
    // Part of block 1 (evicted by now): its upload fetches the stored block.
    dev.write_at(block as u64 + 100, Bytes::from_static(b"partial")).await.unwrap();
    // Block 39 all zeros: its upload is a DELETE.
    dev.write_block(BlockId(39), Bytes::from(vec![0u8; block])).await.unwrap();
    dev.flush().await.unwrap();
    let json = stack.stats.render_json();
    let text = stack.stats.render();
    (stack.release)().await.unwrap();
    (json, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_json_is_numbers_that_add_up() {
    let (json, text) = workload().await;
    let v: Value = serde_json::from_str(&json).unwrap();

    // Every field is a number: counts and bytes integers, ratios and dollars
    // the only fractions. Keys are snake_case.
    let mut all = Vec::new();
    leaves(&v, String::new(), &mut all);
    assert!(all.len() > 30, "{json}");
    for (path, leaf) in &all {
        // How the stored figure was counted, and when: words and a time.
        if path == ".stored.source" || path == ".stored.baseline_at" {
            assert!(leaf.is_string(), "{path} is {leaf}");
            continue;
        }
        assert!(leaf.is_number(), "{path} is {leaf}, not a number");
        let fraction = path.ends_with("hit_ratio") || path.starts_with(".cost.");
        assert!(fraction || leaf.is_u64(), "{path} is {leaf}, not an integer");
        // Array elements are named `[i]` (the latency histograms' buckets).
        assert!(
            path.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.[]".contains(c)),
            "{path} is not snake_case"
        );
    }

    let s: MountStats = serde_json::from_str(&json).unwrap();
    let r = &s.reads;
    assert_eq!(r.total, r.hits + r.read_ahead_hits + r.zero_hits + r.misses, "{text}");
    assert!(r.read_ahead_hits > 0 && r.misses > 0, "{text}");
    let hit_ratio = (r.hits + r.zero_hits) as f64 / r.total as f64;
    assert!((r.hit_ratio - hit_ratio).abs() < 1e-9, "{text}");

    // Every request in exactly one line by purpose, and again by method.
    let q = &s.requests;
    let by_purpose = q.block_fetches
        + q.read_ahead_fetches
        + q.upload_fetches
        + q.block_uploads
        + q.block_deletes
        + q.metadata_gets
        + q.metadata_puts
        + q.metadata_deletes
        + q.lists;
    assert_eq!(by_purpose, q.total, "{text}");
    assert_eq!(q.gets + q.puts + q.deletes + q.lists, q.total, "{text}");
    assert_eq!(q.gets, q.block_fetches + q.read_ahead_fetches + q.upload_fetches + q.metadata_gets);
    assert_eq!(q.puts, q.block_uploads + q.metadata_puts, "{text}");
    assert_eq!(q.deletes, q.block_deletes + q.metadata_deletes, "{text}");
    // Each kind happened: the workload was built for it.
    assert!(q.read_ahead_fetches > 0 && q.block_fetches > 0 && q.upload_fetches > 0, "{text}");
    assert!(q.block_deletes > 0 && q.metadata_puts > 0 && q.block_uploads >= 40, "{text}");
    // Read-ahead reads each cost a request: they are not hits.
    assert!(s.read_ahead.issued >= r.read_ahead_hits, "{text}");
    // The cache's stored blocks are the block PUTs and the block DELETE.
    assert_eq!(s.write_back.blocks_stored, q.block_uploads + q.block_deletes, "{text}");
    // Every upload started once, retries aside, under why it started: the
    // 40 blocks written whole went at once (above half the dirty limit,
    // but whole blocks are due anyway), the part waited for the flush, and
    // so did the zeroed block if it came within the write delay of its
    // first upload (otherwise it went at once).
    let w = &s.write_back;
    assert_eq!(w.started.total() + w.retries, w.blocks_stored + w.errors, "{text}");
    assert_eq!(w.started.written_whole + w.started.flush, 42, "{text}");
    assert!(w.started.written_whole >= 40 && w.started.flush >= 1, "{text}");
    assert!(text.contains("\nuploads         42 started, retries aside: "), "{text}");

    // The stored figure: the volume was created by the mount, then 40
    // blocks stored and one of them zeroed, each object a whole block.
    let stored = s.stored.as_ref().unwrap();
    assert_eq!(
        (stored.source.as_str(), stored.objects, stored.bytes),
        ("created", 39, 39 * 65_536),
        "{text}"
    );
    let dollars = s.cost.storage_dollars_per_month.unwrap();
    assert!((dollars - 39.0 * 65_536.0 / (1u64 << 30) as f64 * 0.023).abs() < 1e-12, "{text}");
    assert!(text.contains("\n[stored]\nobjects         39 blocks, 2,555,904 bytes"), "{text}");

    // The text shows the same numbers with their units.
    assert!(text.contains(&format!("PUT             {}\n", q.puts)), "{text}");
    assert!(text.contains("lock/descriptor "), "{text}");
    assert!(text.contains(" bytes"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_prints_the_mounts_json_and_text() {
    let (json, text) = workload().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("stats.json"), &json).unwrap();
    let mut out = Vec::new();
    assert_eq!(run(dir.path(), STATS_FILE, false, &mut out).unwrap(), OK);
    // The mount's text, from the same figures (read-ahead may have moved
    // the live counters since).
    let shown = String::from_utf8(out).unwrap();
    assert_eq!(shown, serde_json::from_str::<MountStats>(&json).unwrap().render_text());
    assert!(shown.lines().count() == text.lines().count(), "{shown}\n{text}");
    let mut out = Vec::new();
    run(dir.path(), STATS_FILE, true, &mut out).unwrap();
    let printed: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(printed, serde_json::from_str::<Value>(&json).unwrap());
}
