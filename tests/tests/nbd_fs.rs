//! End to end through a kernel filesystem: `nbdfuse` shows the export of
//! `s3block-nbd` as a file, a loop device and ext4 go on it, a tree of 2,000
//! files is copied in, everything is torn down and the server stopped; a new
//! server, a clean `e2fsck -fn`, every checksum equal; then the same volume
//! mounted with `s3block-fuse` reads the same bytes as the NBD server gave
//! (the two frontends agree). On a local directory and on Garage.

#![allow(clippy::unwrap_used)] // a failed step should stop the test loudly

mod nbd_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nbd_support::{FUSE, Server, Store, output, run, sha256, tools};
use rand::Rng;
use s3block_testkit::kernel::{
    FsMount, Loop, Mount, checksum, fuse_command, fusermount_u, is_mounted, kernel_available, mkfs_ext4,
    pattern, seeded_rng,
};

/// `nbdfuse DIR URI`: the export as the file `DIR/nbd`; unmounted on drop.
struct NbdFuse {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl NbdFuse {
    fn attach(server: &Server) -> NbdFuse {
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("nbdfuse")
            .arg(dir.path())
            .arg(server.uri())
            .stdin(Stdio::null())
            .spawn()
            .expect("start nbdfuse");
        let mut fuse = NbdFuse { dir, child: Some(child) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !is_mounted(fuse.dir.path()) {
            if let Some(status) = fuse.child.as_mut().unwrap().try_wait().unwrap() {
                fuse.child = None;
                panic!("nbdfuse exited with {status} before mounting:\n{}", server.log());
            }
            assert!(Instant::now() < deadline, "nbdfuse did not mount in 30 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        fuse
    }

    fn file(&self) -> PathBuf {
        self.dir.path().join("nbd")
    }

    /// `fusermount3 -u`, and nbdfuse exits 0.
    fn detach(mut self) {
        let out = fusermount_u(self.dir.path());
        assert!(out.status.success(), "fusermount3 -u: {}", String::from_utf8_lossy(&out.stderr));
        let status = self.child.take().unwrap().wait().unwrap();
        assert!(status.success(), "nbdfuse exited with {status}");
    }
}

impl Drop for NbdFuse {
    fn drop(&mut self) {
        if is_mounted(self.dir.path()) {
            let _ = Command::new("fusermount3").arg("-uz").arg(self.dir.path()).status();
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Writes `count` files of 0 to 12 KiB of seeded bytes under `root`, in 40
/// directories; returns each file's path (relative) and checksum.
fn make_tree(root: &Path, count: usize) -> BTreeMap<PathBuf, u64> {
    let mut rng = seeded_rng(2000);
    let mut sums = BTreeMap::new();
    for n in 0..count {
        let relative = PathBuf::from(format!("d{:02}/f{n:04}", n % 40));
        let data = pattern(n as u64, rng.random_range(0..12 << 10));
        std::fs::create_dir_all(root.join(&relative).parent().unwrap()).unwrap();
        std::fs::write(root.join(&relative), &data).unwrap();
        sums.insert(relative, checksum(&data));
    }
    sums
}

/// Every regular file under `root` (but lost+found) with its checksum.
fn checksums(root: &Path) -> BTreeMap<PathBuf, u64> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, u64>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "lost+found") {
                    walk(root, &path, out);
                }
            } else {
                out.insert(
                    path.strip_prefix(root).unwrap().to_owned(),
                    checksum(&std::fs::read(&path).unwrap()),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

#[test]
fn ext4_over_nbdfuse_survives_a_restart_and_the_mount_reads_the_same_bytes() {
    if !tools(&["nbdfuse", "sha256sum"]) || !kernel_available(&["losetup", "mkfs.ext4", "e2fsck"]) {
        return;
    }
    let source = tempfile::tempdir().unwrap();
    let tree = make_tree(source.path(), 2000);
    for store in Store::local_and_garage("nbd_ext4") {
        let started = Instant::now();
        let server = Server::start(&store, &["--size=256M", "--block-size=64K", "--cache-size=32M"]);
        let nbd = NbdFuse::attach(&server);
        let dev = Loop::attach(&nbd.file());
        mkfs_ext4(&dev.device);
        let fs = FsMount::mount(&dev.device);
        let into = format!("{}/", fs.path().display());
        run("cp", &["-a", &format!("{}/.", source.path().display()), &into]);
        fs.unmount();
        dev.detach();
        nbd.detach();
        server.stop();

        // A new server: the filesystem is clean and holds the same files.
        let server = Server::start(&store, &[]);
        let nbd = NbdFuse::attach(&server);
        let dev = Loop::attach(&nbd.file());
        let fsck = output("e2fsck", &["-fn", &dev.device]);
        assert!(
            fsck.status.success(),
            "{}: e2fsck -fn found problems:\n{}{}",
            store.kind(),
            String::from_utf8_lossy(&fsck.stdout),
            String::from_utf8_lossy(&fsck.stderr)
        );
        let fs = FsMount::mount(&dev.device);
        assert_eq!(checksums(fs.path()), tree, "{}: the files read back differ", store.kind());
        fs.unmount();
        dev.detach();
        let through_nbd = sha256(&nbd.file());
        nbd.detach();
        server.stop();

        // The mount program reads the same bytes from the same volume.
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = fuse_command(FUSE, &store.url, dir.path(), &["--read-only"]);
        cmd.envs(store.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let mount = Mount::spawn(cmd, dir);
        assert_eq!(sha256(&mount.file()), through_nbd, "{}: s3block-fuse reads other bytes", store.kind());
        mount.unmount();
        eprintln!(
            "{}: 2,000 files through nbdfuse and ext4 in {:.1}s",
            store.kind(),
            started.elapsed().as_secs_f64()
        );
    }
}
