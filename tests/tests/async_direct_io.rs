//! Direct I/O submitted asynchronously (a loop device with `--direct-io=on`,
//! a database's O_DIRECT with native AIO, `qemu-img` with `aio=native`)
//! reaches the mount as that many requests at once, so cold reads of
//! different blocks wait for their GETs together, not one after the other.
//!
//! The volume is a local directory (`file://`) whose requests the mount
//! program holds 300 ms each (`S3BLOCK_INJECT_FAULTS`); the reads are made
//! by `qemu-img bench` (Debian package `qemu-utils`).

#![allow(clippy::unwrap_used)] // a failed step should stop the test loudly

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::process::Command;
use std::time::{Duration, Instant};

use s3block_testkit::kernel::{Mount, fuse_command, kernel_available, pattern};

const BIN: &str = env!("CARGO_BIN_EXE_rel-s3block-fuse");
/// The reads are this far apart: two blocks of 64 KiB between each, so
/// read-ahead (which follows reads of consecutive blocks) does not start.
const STEP: u64 = 3 * 65536;
const READS: u64 = 16;
const LATENCY_MS: u64 = 300;

fn mount_on(url: &str, faults: Option<&str>) -> Mount {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = fuse_command(BIN, url, dir.path(), &["--size=16M", "--block-size=64K"]);
    if let Some(f) = faults {
        cmd.env("S3BLOCK_INJECT_FAULTS", f);
    }
    Mount::spawn_within(cmd, dir, Duration::from_secs(15), Duration::from_secs(30))
}

/// Sixteen cold 4 KiB reads of sixteen blocks, all submitted at once, end
/// in about one GET's time; one at a time they would take sixteen (4.8 s).
/// The bytes read after the remount are those written before it.
#[test]
fn asynchronous_direct_reads_are_served_at_once() {
    if !kernel_available(&["qemu-img"]) {
        return;
    }
    let store = tempfile::tempdir().unwrap();
    let url = format!("file://{}", store.path().display());
    let data = pattern(7, (READS * STEP) as usize);
    let mount = mount_on(&url, None);
    let f = OpenOptions::new().write(true).open(mount.file()).unwrap();
    f.write_all_at(&data, 0).unwrap();
    f.sync_all().unwrap();
    drop(f);
    mount.unmount();

    let mount = mount_on(&url, Some(&format!("latency_ms={LATENCY_MS}")));
    let started = Instant::now();
    let out = Command::new("qemu-img")
        .args(["bench", "-U", "-f", "raw", "-t", "none", "-i", "native"])
        .args(["-d", &READS.to_string(), "-c", &READS.to_string(), "-s", "4096", "-S", &STEP.to_string()])
        .arg(mount.file())
        .output()
        .unwrap();
    let took = started.elapsed();
    assert!(out.status.success(), "qemu-img bench: {}", String::from_utf8_lossy(&out.stderr));
    let one_at_a_time = Duration::from_millis(READS * LATENCY_MS);
    assert!(
        took >= Duration::from_millis(LATENCY_MS),
        "{READS} cold reads took {took:?}, less than one GET's {LATENCY_MS} ms: the store's delay was not applied"
    );
    assert!(
        took < one_at_a_time / 2,
        "{READS} asynchronous direct reads took {took:?} ({one_at_a_time:?} one at a time): \
         the mount served them one after the other\n{}",
        mount.log()
    );
    let mut back = vec![0; data.len()];
    std::fs::File::open(mount.file()).unwrap().read_exact_at(&mut back, 0).unwrap();
    assert!(back == data, "the volume's bytes differ after the remount");
    mount.unmount();
}
