//! The 128 MB host: the mount program alone in a memory cgroup, under ext4
//! taking a copy of `/usr/share/doc` and `/usr/share/man` (about 29,000
//! files, 230 MB here) on a Garage volume of 256 KiB blocks.
//!
//! - `--cache-size 16M` in a 40 MiB cgroup and `--cache-size 32M` in a
//!   64 MiB one: no OOM kill, the unmount stores every block, and after a
//!   remount `e2fsck -fn` is clean and `diff -r` finds every file equal.
//!   Each run prints its peak (`memory.max_usage_in_bytes`, which counts
//!   everything the kernel charges to the group, code pages included).
//! - A volume of 4 KiB blocks (s3backer's default, the migrating user's)
//!   with `--cache-size 16M` in a 40 MiB cgroup: 32 MiB written, then read
//!   back cold through a new mount, twice the cache, and found equal. At
//!   that block size a cached block that kept a slice of a bigger buffer
//!   (the write it came in, the HTTP client's read buffer) held memory the
//!   cache did not count.
//! - `--cache-size 16M` in a 28 MiB cgroup: the program refuses to start,
//!   naming the limit, where it read it and the cache size that would fit,
//!   instead of being killed mid-copy with dirty blocks in memory.
//!
//! cgroup v1's memory controller is used where it is mounted, else v2's.

#![allow(clippy::unwrap_used)] // a failed step should stop the test loudly

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use s3block_testkit::kernel::{
    FsMount, Loop, Mount, fuse_command, kernel_available, mkfs_ext4, run, run_output,
};
use s3block_testkit::{in_ci, s3_env, unique_prefix};

const FUSE: &str = env!("CARGO_BIN_EXE_rel-s3block-fuse");
const TOOLS: &[&str] = &["losetup", "mkfs.ext4", "e2fsck", "mount", "umount", "cp", "diff"];
const TREES: &[&str] = &["/usr/share/doc", "/usr/share/man"];

/// A memory cgroup of its own, removed on drop (its processes killed).
struct Cgroup {
    dir: PathBuf,
    v1: bool,
}

impl Cgroup {
    /// A new group limited to `mib` MiB; `None` (or a panic under CI) when
    /// no memory controller can be used here.
    fn new(name: &str, mib: u64) -> Option<Cgroup> {
        let v1_root = Path::new("/sys/fs/cgroup/memory");
        let v2_root = Path::new("/sys/fs/cgroup");
        let v2 = std::fs::read_to_string(v2_root.join("cgroup.controllers"))
            .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"));
        let (root, v1) = if v1_root.join("memory.limit_in_bytes").exists() {
            (v1_root, true)
        } else if v2 {
            (v2_root, false)
        } else {
            let message =
                "no memory cgroup controller (neither /sys/fs/cgroup/memory nor cgroup v2 with memory)";
            assert!(!in_ci(), "CI=true and {message}");
            eprintln!("SKIPPED (not under CI): {message}");
            return None;
        };
        let dir = root.join(format!("s3block-test-{name}-{}", std::process::id()));
        if let Err(e) = std::fs::create_dir(&dir) {
            let message = format!("cannot create the memory cgroup {}: {e}", dir.display());
            assert!(!in_ci(), "CI=true and {message}");
            eprintln!("SKIPPED (not under CI): {message}");
            return None;
        }
        let group = Cgroup { dir, v1 };
        let bytes = (mib << 20).to_string();
        if v1 {
            std::fs::write(group.dir.join("memory.limit_in_bytes"), &bytes).unwrap();
            // No swap: a process over its limit is reclaimed or killed, as
            // on a small VPS without swap.
            let _ = std::fs::write(group.dir.join("memory.swappiness"), "0");
        } else {
            std::fs::write(group.dir.join("memory.max"), &bytes).unwrap();
            let _ = std::fs::write(group.dir.join("memory.swap.max"), "0");
        }
        Some(group)
    }

    /// `cmd` run inside the group: a shell moves itself in, then execs it.
    fn wrap(&self, cmd: &Command) -> Command {
        let mut wrapped = Command::new("sh");
        wrapped
            .arg("-c")
            .arg("echo $$ > \"$0\" && exec \"$@\"")
            .arg(self.dir.join("cgroup.procs"))
            .arg(cmd.get_program())
            .args(cmd.get_args())
            .stdin(Stdio::null());
        for (key, value) in cmd.get_envs() {
            match value {
                Some(v) => wrapped.env(key, v),
                None => wrapped.env_remove(key),
            };
        }
        wrapped
    }

    /// The most memory the group has been charged, in bytes.
    fn peak(&self) -> u64 {
        let file = if self.v1 { "memory.max_usage_in_bytes" } else { "memory.peak" };
        std::fs::read_to_string(self.dir.join(file)).unwrap().trim().parse().unwrap()
    }

    /// How many processes the kernel killed for memory in the group.
    fn oom_kills(&self) -> u64 {
        let file = if self.v1 { "memory.oom_control" } else { "memory.events" };
        let text = std::fs::read_to_string(self.dir.join(file)).unwrap();
        text.lines().find_map(|l| l.strip_prefix("oom_kill ")).map_or(0, |n| n.trim().parse().unwrap())
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let procs = std::fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.split_whitespace() {
            let _ = Command::new("kill").args(["-9", pid]).status();
        }
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        eprintln!("could not remove the cgroup {}", self.dir.display());
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

/// Copies the trees onto a new ext4 volume with the mount program in a
/// `limit`-MiB group with `--cache-size cache`, then checks everything
/// after a remount outside it. Returns the group's peak in bytes.
fn copy_within(name: &str, limit: u64, cache: &str) -> Option<u64> {
    if !kernel_available(TOOLS) {
        return None;
    }
    let env = s3_env()?;
    let group = Cgroup::new(name, limit)?;
    let url = format!("s3://{}/{}", env.bucket, unique_prefix(name));
    let cache_arg = format!("--cache-size={cache}");
    let started = Instant::now();

    let dir = tempfile::tempdir().unwrap();
    let mut cmd = fuse_command(FUSE, &url, dir.path(), &["--size=2G", "--block-size=256K", &cache_arg]);
    cmd.env("S3BLOCK_ENDPOINT", &env.endpoint);
    let fuse = Mount::spawn(group.wrap(&cmd), dir);
    let lo = Loop::attach(&fuse.file());
    mkfs_ext4(&lo.device);
    let fs = FsMount::mount(&lo.device);
    let mut args: Vec<&str> = vec!["-a"];
    args.extend(TREES);
    args.push(fs.path().to_str().unwrap());
    run("cp", &args);
    run("sync", &[]);
    fs.unmount();
    lo.detach();
    let log = fuse.unmount();
    let peak = group.peak();
    assert_eq!(group.oom_kills(), 0, "the mount program was killed for memory:\n{log}");
    eprintln!(
        "{name}: --cache-size {cache} in {limit} MiB: copied and stored in {:.0} s, peak {:.1} MiB",
        started.elapsed().as_secs_f64(),
        mib(peak)
    );
    drop(group);

    // Everything is in the bucket: remount (outside any group), check.
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = fuse_command(FUSE, &url, dir.path(), &[]);
    cmd.env("S3BLOCK_ENDPOINT", &env.endpoint);
    let fuse = Mount::spawn(cmd, dir);
    let lo = Loop::attach(&fuse.file());
    let fsck = run_output("e2fsck", &["-fn", &lo.device]);
    assert!(
        fsck.status.success(),
        "e2fsck -fn after the remount:\n{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let fs = FsMount::mount(&lo.device);
    for tree in TREES {
        let copy = fs.path().join(Path::new(tree).file_name().unwrap());
        let diff = run_output("diff", &["-rq", "--no-dereference", tree, copy.to_str().unwrap()]);
        assert!(
            diff.status.success(),
            "{tree} differs after the remount:\n{}{}",
            String::from_utf8_lossy(&diff.stdout),
            String::from_utf8_lossy(&diff.stderr)
        );
    }
    fs.unmount();
    lo.detach();
    fuse.unmount();
    Some(peak)
}

#[test]
fn a_16m_cache_copies_a_tree_within_40_mib() {
    if let Some(peak) = copy_within("mem16", 40, "16M") {
        assert!(peak <= 40 << 20, "peak {:.1} MiB", mib(peak));
    }
}

#[test]
fn a_32m_cache_copies_a_tree_within_64_mib() {
    if let Some(peak) = copy_within("mem32", 64, "32M") {
        assert!(peak <= 64 << 20, "peak {:.1} MiB", mib(peak));
    }
}

/// Writes 32 MiB of fresh bytes to a volume of 4 KiB blocks with a 16 MiB
/// cache, then reads them back through a new mount, both in a `limit`-MiB
/// group. Returns the group's peak in bytes.
fn small_blocks_within(name: &str, limit: u64) -> Option<u64> {
    if !kernel_available(&[]) {
        return None;
    }
    let env = s3_env()?;
    let group = Cgroup::new(name, limit)?;
    let url = format!("s3://{}/{}", env.bucket, unique_prefix(name));
    let data: Vec<u8> = {
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        (0..32 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    };
    let started = Instant::now();
    let mount = |args: &[&str]| {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = fuse_command(FUSE, &url, dir.path(), args);
        cmd.env("S3BLOCK_ENDPOINT", &env.endpoint);
        Mount::spawn(group.wrap(&cmd), dir)
    };
    let fuse = mount(&["--size=256M", "--block-size=4K", "--cache-size=16M"]);
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().write(true).open(fuse.file()).unwrap();
        for chunk in data.chunks(1 << 20) {
            f.write_all(chunk).unwrap();
        }
        f.sync_all().unwrap();
    }
    let mut log = fuse.unmount();
    let fuse = mount(&["--cache-size=16M"]);
    let mut read = vec![0u8; data.len()];
    let got = {
        use std::io::Read;
        std::fs::File::open(fuse.file()).and_then(|mut f| f.read_exact(&mut read))
    };
    if let Err(e) = got {
        panic!(
            "reading the 32 MiB back failed: {e}; OOM kills in the group: {}, peak {:.1} MiB\n{log}{}",
            group.oom_kills(),
            mib(group.peak()),
            fuse.log()
        );
    }
    log.push_str(&fuse.unmount());
    let peak = group.peak();
    assert_eq!(group.oom_kills(), 0, "the mount program was killed for memory:\n{log}");
    assert!(read == data, "the 32 MiB read back differ");
    eprintln!(
        "{name}: 4K blocks, --cache-size 16M in {limit} MiB: 32 MiB written and read back in {:.0} s, peak {:.1} MiB",
        started.elapsed().as_secs_f64(),
        mib(peak)
    );
    Some(peak)
}

#[test]
fn a_4k_volume_read_past_its_16m_cache_stays_within_40_mib() {
    if let Some(peak) = small_blocks_within("mem4k", 40) {
        assert!(peak <= 40 << 20, "peak {:.1} MiB", mib(peak));
    }
}

#[test]
fn a_cache_that_cannot_fit_is_refused_at_start() {
    if !kernel_available(TOOLS) {
        return;
    }
    let Some(env) = s3_env() else { return };
    let Some(group) = Cgroup::new("mem-refused", 28) else { return };
    let url = format!("s3://{}/{}", env.bucket, unique_prefix("mem-refused"));
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = fuse_command(FUSE, &url, dir.path(), &["--size=1G", "--cache-size=16M"]);
    cmd.env("S3BLOCK_ENDPOINT", &env.endpoint);
    let out = group.wrap(&cmd).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started in 28 MiB with a 16M cache:\n{stderr}");
    assert!(!s3block_testkit::kernel::is_mounted(dir.path()));
    let limit_file = if group.v1 { "memory.limit_in_bytes" } else { "memory.max" };
    assert!(
        stderr.contains("not enough memory: this process may use 28M")
            && stderr.contains(limit_file)
            && stderr.contains("--cache-size 4M or less would fit"),
        "{stderr}"
    );
    assert_eq!(group.oom_kills(), 0);
}
