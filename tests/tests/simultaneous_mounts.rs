//! Two read-write mounts of one new volume started at the same moment on a
//! store that ignores conditional creates (Garage): exactly one of them
//! mounts, the other is refused naming the holder, for ten pairs in a row.
//! (The lock is written, left to settle and read back; see `MountLock`.)

#![allow(clippy::unwrap_used)] // a failed step should stop the test loudly

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use s3block_testkit::kernel::{assert_no_panic, fuse_command, fusermount_u, is_mounted, kernel_available};
use s3block_testkit::{s3_env, unique_prefix};

const FUSE: &str = env!("CARGO_BIN_EXE_rel-s3block-fuse");

struct Started {
    child: Child,
    dir: tempfile::TempDir,
    log: std::path::PathBuf,
}

impl Drop for Started {
    fn drop(&mut self) {
        if is_mounted(self.dir.path()) {
            let _ = std::process::Command::new("fusermount3").arg("-uz").arg(self.dir.path()).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

fn start(url: &str, endpoint: &str) -> Started {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().with_extension("log");
    let mut cmd = fuse_command(FUSE, url, dir.path(), &["--size=64M"]);
    cmd.env("S3BLOCK_ENDPOINT", endpoint).stdout(Stdio::null()).stderr(std::fs::File::create(&log).unwrap());
    Started { child: cmd.spawn().unwrap(), dir, log }
}

#[test]
fn ten_pairs_of_simultaneous_mounts_each_mount_exactly_one() {
    if !kernel_available(&[]) {
        return;
    }
    let Some(env) = s3_env() else { return };
    for pair in 0..10 {
        let url = format!("s3://{}/{}", env.bucket, unique_prefix(&format!("race_mount_{pair}")));
        let mut both = [start(&url, &env.endpoint), start(&url, &env.endpoint)];
        // Until one is mounted and the other has exited (or 60 s).
        let deadline = Instant::now() + Duration::from_secs(60);
        let (winner, loser) = loop {
            let mounted: Vec<bool> = both.iter().map(|s| is_mounted(s.dir.path())).collect();
            let exited: Vec<bool> = both.iter_mut().map(|s| s.child.try_wait().unwrap().is_some()).collect();
            match (mounted[0], mounted[1], exited[0], exited[1]) {
                (true, true, _, _) => panic!("pair {pair}: both mounts of {url} succeeded"),
                (true, false, _, true) => break (0, 1),
                (false, true, true, _) => break (1, 0),
                (false, false, true, true) => {
                    let logs: Vec<String> =
                        both.iter().map(|s| std::fs::read_to_string(&s.log).unwrap_or_default()).collect();
                    panic!("pair {pair}: neither mount of {url} succeeded:\n{}\n{}", logs[0], logs[1]);
                }
                _ => {}
            }
            assert!(Instant::now() < deadline, "pair {pair}: no outcome after 60 s");
            std::thread::sleep(Duration::from_millis(50));
        };
        let status = both[loser].child.wait().unwrap();
        let refused = std::fs::read_to_string(&both[loser].log).unwrap();
        assert_eq!(status.code(), Some(4), "pair {pair}: the loser must exit 4 (locked):\n{refused}");
        assert!(refused.contains("already mounted by"), "pair {pair}: {refused}");
        assert_no_panic("the refused mount", &refused);

        let out = fusermount_u(both[winner].dir.path());
        assert!(out.status.success(), "fusermount3 -u: {}", String::from_utf8_lossy(&out.stderr));
        let status = both[winner].child.wait().unwrap();
        let log = std::fs::read_to_string(&both[winner].log).unwrap();
        assert!(status.success(), "pair {pair}: the winner exited with {status}:\n{log}");
        assert!(log.contains("every block is stored"), "{log}");
    }
}
