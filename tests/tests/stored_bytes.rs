//! The stats files show what the volume holds in the bucket (objects, bytes,
//! the monthly storage cost) and keep it equal to the bucket as blocks are
//! written, zeroed and discarded: counted from nothing for a volume the
//! mount created, by one listing in the background for one it found.
//!
//! The mount test needs /dev/fuse and fusermount3; without them it says so
//! and passes, except under `CI=true`, where it fails naming what is missing.

#![allow(clippy::unwrap_used)] // test code: a failed step should stop the test loudly

mod nbd_support;

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use nbd_support::{FUSE, Server, Store, output};
use s3block_testkit::kernel::{Mount, fuse_command, kernel_available, pattern};
use serde_json::Value;

const BLOCK: usize = 64 << 10;

/// The block objects in the local bucket `dir` (names of eight hex
/// digits): how many, and their bytes.
fn bucket(dir: &Path) -> (u64, u64) {
    let mut objects = 0;
    let mut bytes = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        if name.len() == 8 && u32::from_str_radix(&name, 16).is_ok() {
            objects += 1;
            bytes += entry.metadata().unwrap().len();
        }
    }
    (objects, bytes)
}

/// The mount's `stats.json`.
fn stats(mount: &Mount) -> Value {
    serde_json::from_str(&std::fs::read_to_string(mount.path().join("stats.json")).unwrap()).unwrap()
}

/// The stored figure of `stats`: source, objects, bytes.
fn stored(stats: &Value) -> (String, u64, u64) {
    let s = &stats["stored"];
    (
        s["source"].as_str().unwrap_or("none").to_owned(),
        s["objects"].as_u64().unwrap(),
        s["bytes"].as_u64().unwrap(),
    )
}

/// Block `i` of `seed`: `noise` KiB of noise, the rest one byte repeated,
/// so each compresses to a size of its own.
fn block(seed: u64, noise: usize) -> Vec<u8> {
    let mut data = vec![0x5a; BLOCK];
    data[..noise << 10].copy_from_slice(&pattern(seed, noise << 10));
    data
}

/// Writes `data` at block `n` of the device file.
fn write_block(file: &std::fs::File, n: u64, data: &[u8]) {
    file.write_all_at(data, n * BLOCK as u64).unwrap();
}

#[test]
fn the_stats_follow_the_bucket_through_writes_zero_blocks_and_discards() {
    if !kernel_available(&["fallocate"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());

    // A new compressed volume: counted from nothing, every object its own size.
    let mnt = tempfile::tempdir().unwrap();
    let args = ["--size=8M", "--block-size=64K", "--compress"];
    let mount = Mount::spawn(fuse_command(FUSE, &url, mnt.path(), &args), mnt);
    let file = std::fs::OpenOptions::new().read(true).write(true).open(mount.file()).unwrap();
    for n in 0..24u64 {
        write_block(&file, n, &block(n, (n as usize % 7) * 4));
    }
    file.sync_all().unwrap();
    let s = stats(&mount);
    let (objects, bytes) = bucket(dir.path());
    assert_eq!(objects, 24);
    assert_eq!(stored(&s), ("created".into(), objects, bytes), "{s}");
    let dollars = s["cost"]["storage_dollars_per_month"].as_f64().unwrap();
    assert!((dollars - bytes as f64 / (1u64 << 30) as f64 * 0.023).abs() < 1e-12, "{s}");
    drop(file);
    mount.unmount();

    // Found again: one listing in the background gives the baseline.
    let mnt = tempfile::tempdir().unwrap();
    let mount = Mount::spawn(fuse_command(FUSE, &url, mnt.path(), &[]), mnt);
    let deadline = Instant::now() + Duration::from_secs(30);
    while stored(&stats(&mount)).0 != "listed" {
        assert!(Instant::now() < deadline, "not listed after 30 s: {}", stats(&mount));
        std::thread::sleep(Duration::from_millis(50));
    }
    let s = stats(&mount);
    assert_eq!(stored(&s), ("listed".into(), objects, bytes), "{s}");
    assert_eq!(s["stored"]["listing_requests"], 1, "{s}");
    assert!(s["requests"]["lists"].as_u64().unwrap() >= 1, "the listing is in the request counts: {s}");
    assert!(s["stored"]["baseline_at"].as_str().unwrap().ends_with('Z'), "{s}");

    // Overwrites with other sizes, new blocks, a zero block, a discard.
    let file = std::fs::OpenOptions::new().read(true).write(true).open(mount.file()).unwrap();
    for n in 2..6u64 {
        write_block(&file, n, &block(n + 100, 40));
    }
    for n in 40..44u64 {
        write_block(&file, n, &block(n, 8));
    }
    write_block(&file, 10, &vec![0u8; BLOCK]);
    // Blocks 12 to 19, and 4K of block 20 (which stays, zeroed in part).
    let device = mount.file();
    let (offset, length) = ((12 * BLOCK).to_string(), (8 * BLOCK + 4096).to_string());
    let punched = output(
        "fallocate",
        &["--punch-hole", "--offset", &offset, "--length", &length, device.to_str().unwrap()],
    );
    assert!(punched.status.success(), "{punched:?}");
    file.sync_all().unwrap();
    let (objects, bytes) = bucket(dir.path());
    assert_eq!(objects, 24 + 4 - 1 - 8);
    let s = stats(&mount);
    assert_eq!(stored(&s), ("listed".into(), objects, bytes), "{s}");
    let text = std::fs::read_to_string(mount.path().join("stats")).unwrap();
    assert!(text.contains(&format!("\n[stored]\nobjects         {objects} blocks, ")), "{text}");
    assert!(text.contains("storage cost    $"), "{text}");
    assert!(text.contains("every block stored or deleted since is counted"), "{text}");
    drop(file);
    mount.unmount();
}

#[test]
fn the_nbd_servers_stats_file_shows_the_stored_bytes() {
    let store = Store::local();
    let server = Server::start(&store, &["--size=1M"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let text = std::fs::read_to_string(server.stats_file()).unwrap_or_default();
        if text.contains("[stored]") {
            break text;
        }
        assert!(Instant::now() < deadline, "no [stored] section after 30 s: {text}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(text.contains("objects         0 blocks, 0 bytes"), "{text}");
    assert!(text.contains("the volume was created empty at "), "{text}");
    server.stop();
}
