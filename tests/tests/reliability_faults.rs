//! Faults under load: a bounded random workload through a real FUSE mount
//! whose store fails 10% of its requests (server errors, timeouts, dropped
//! connections) with latency spikes (`S3BLOCK_INJECT_FAULTS`). Every read
//! during the run must equal a model, no request may fail to the user, and
//! after a clean unmount and a remount without faults every byte of the
//! volume must equal the model.
//!
//! Run with upload concurrency 1, the default (8) and the maximum (1024).
//! `S3BLOCK_RELIABILITY_SECS` lengthens each run for soaks (default 40 s).
//! The volume is a local directory (`file://`), so only the kernel is needed.

#![allow(clippy::unwrap_used)] // a failed step should stop the test loudly

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use rand::Rng;
use s3block_testkit::kernel::{
    Mount, fuse_command, kernel_available, pattern, run, seeded_rng, workload_secs,
};

const BIN: &str = env!("CARGO_BIN_EXE_rel-s3block-fuse");
const SIZE: usize = 32 << 20;
const FAULTS: &str =
    "error_rate=0.05,timeout_rate=0.02,reset_rate=0.03,spike_rate=0.05,spike_ms=300,latency_ms=1";

#[derive(Debug, Default)]
struct Figures {
    ops: u64,
    writes: u64,
    reads: u64,
    fsyncs: u64,
    punches: u64,
    bytes_written: u64,
    bytes_read: u64,
}

/// `fallocate --punch-hole` (util-linux): what `discard` through a loop device sends.
fn punch_hole(file: &Path, offset: u64, len: u64) {
    let (o, l) = (offset.to_string(), len.to_string());
    run("fallocate", &["--punch-hole", "--offset", &o, "--length", &l, file.to_str().unwrap()]);
}

/// Random writes, reads (checked against `model`), fsyncs and hole punches
/// until `deadline`.
fn workload(file: &Path, f: &std::fs::File, model: &mut [u8], seed: u64, deadline: Instant) -> Figures {
    let mut rng = seeded_rng(seed);
    let mut fig = Figures::default();
    while Instant::now() < deadline {
        fig.ops += 1;
        let choice = rng.random_range(0..100);
        // Mostly in a hot 4 MiB region, so blocks are rewritten while uploading.
        let span = if rng.random_range(0..4) == 0 { SIZE as u64 } else { 4 << 20 };
        let len = 1 + rng.random_range(0..256 << 10) as usize;
        let at = rng.random_range(0..span - len as u64) as usize;
        if choice < 50 {
            let data = pattern(rng.random(), len);
            f.write_all_at(&data, at as u64).unwrap_or_else(|e| panic!("write of {len} at {at}: {e}"));
            model[at..at + len].copy_from_slice(&data);
            fig.writes += 1;
            fig.bytes_written += len as u64;
        } else if choice < 85 {
            let mut buf = vec![0; len];
            f.read_exact_at(&mut buf, at as u64).unwrap_or_else(|e| panic!("read of {len} at {at}: {e}"));
            assert!(
                buf == model[at..at + len],
                "op {}: read of {len} bytes at {at} differs from the model",
                fig.ops
            );
            fig.reads += 1;
            fig.bytes_read += len as u64;
        } else if choice < 93 {
            f.sync_data().unwrap_or_else(|e| panic!("fsync: {e}"));
            fig.fsyncs += 1;
        } else if choice < 97 {
            punch_hole(file, at as u64, len as u64);
            model[at..at + len].fill(0);
            fig.punches += 1;
        } else {
            let zeros = vec![0; len];
            f.write_all_at(&zeros, at as u64).unwrap_or_else(|e| panic!("zero write at {at}: {e}"));
            model[at..at + len].fill(0);
            fig.writes += 1;
            fig.bytes_written += len as u64;
        }
    }
    fig
}

fn faults_under_load(name: &str, concurrency: Option<u32>, seed: u64) {
    if !kernel_available(&["fallocate"]) {
        return;
    }
    let store = tempfile::tempdir().unwrap();
    let url = format!("file://{}", store.path().display());
    let secs = workload_secs(40);
    let mut args = vec!["--size=32M".to_owned(), "--block-size=64K".to_owned(), "--cache-size=4M".to_owned()];
    args.push("--max-dirty=2M".to_owned());
    args.push("--direct-io".to_owned());
    if let Some(n) = concurrency {
        args.push(format!("--upload-concurrency={n}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let spec = format!("seed={seed},{FAULTS}");

    let dir = tempfile::tempdir().unwrap();
    let mut cmd = fuse_command(BIN, &url, dir.path(), &args);
    cmd.env("S3BLOCK_INJECT_FAULTS", &spec);
    let fuse = Mount::spawn(cmd, dir);
    assert!(fuse.log().contains("INJECTING FAULTS"), "no fault-injection warning:\n{}", fuse.log());

    let mut model = vec![0u8; SIZE];
    let started = Instant::now();
    let f = std::fs::OpenOptions::new().read(true).write(true).open(fuse.file()).unwrap();
    let fig = workload(&fuse.file(), &f, &mut model, seed, started + Duration::from_secs(secs));
    f.sync_all().unwrap();
    drop(f);
    let (retries, errors, puts, gets) =
        (fuse.stat("retries"), fuse.stat("errors"), fuse.stat("PUT"), fuse.stat("GET"));
    let log = fuse.unmount();
    assert!(retries > 0, "faults were injected but nothing was retried:\n{log}");

    // A clean remount without faults: the bucket alone must hold the model.
    let dir = tempfile::tempdir().unwrap();
    let fuse = Mount::spawn(fuse_command(BIN, &url, dir.path(), &[]), dir);
    assert!(!fuse.log().contains("INJECTING FAULTS"));
    let mut back = vec![0u8; SIZE];
    std::fs::File::open(fuse.file()).unwrap().read_exact_at(&mut back, 0).unwrap();
    if let Some(at) = back.iter().zip(&model).position(|(a, b)| a != b) {
        panic!("after remount, byte {at} (block {}) differs from the model", at / (64 << 10));
    }
    fuse.unmount();
    eprintln!(
        "FIGURES faults {name}: {:.0}s, {} ops ({} writes, {} reads checked, {} fsyncs, {} punches), \
         {} MiB written, {} MiB read and checked; store: {puts} PUTs, {gets} GETs, {retries} faults \
         retried, {errors} requests failed for good; {} MiB verified after remount",
        started.elapsed().as_secs_f32(),
        fig.ops,
        fig.writes,
        fig.reads,
        fig.fsyncs,
        fig.punches,
        fig.bytes_written >> 20,
        fig.bytes_read >> 20,
        SIZE >> 20
    );
}

#[test]
fn faults_under_load_default_concurrency() {
    faults_under_load("concurrency 8 (default)", None, 7);
}

#[test]
fn faults_under_load_one_upload_at_a_time() {
    faults_under_load("concurrency 1", Some(1), 11);
}

#[test]
fn faults_under_load_maximum_concurrency() {
    faults_under_load("concurrency 1024 (maximum)", Some(1024), 13);
}
