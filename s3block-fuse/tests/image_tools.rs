//! Real-kernel tests: the tools a user copies a disk image with, run onto the
//! device file of a mount, each checked byte for byte.
//!
//! The device file behaves as a block device does: `O_TRUNC` changes
//! nothing, truncate to its own size succeeds, any other size is refused
//! with EINVAL and a log line that says how to get a larger volume. Every
//! copy lands on a volume that already holds other bytes, so a tool that
//! leaves a range unwritten shows up as a difference.
//!
//! They need /dev/fuse, fusermount3 and qemu-img (Debian `qemu-utils`):
//! without them they say so and pass, except under `CI=true`.

#![allow(clippy::unwrap_used)] // test helpers: a failed step should stop the test loudly

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use s3block_testkit::kernel::{Mount, fuse_command, kernel_available, pattern};

const BIN: &str = env!("CARGO_BIN_EXE_s3block-fuse");
const SIZE: u64 = 16 << 20;
const MB: usize = 1 << 20;

/// s3block-fuse in the foreground on a 16M `memory://` volume of 64K blocks.
fn start() -> Mount {
    let dir = tempfile::tempdir().unwrap();
    let cmd = fuse_command(BIN, "memory://", dir.path(), &["--size=16M", "--block-size=64K"]);
    Mount::spawn_within(cmd, dir, Duration::from_secs(15), Duration::from_secs(30))
}

fn sh(program: &str, args: &[&str]) -> Output {
    Command::new(program).args(args).output().unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

fn ok(program: &str, args: &[&str]) {
    let out = sh(program, args);
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A disk image of the volume's size, every byte written (no holes): data,
/// with whole blocks and a partial block of zeros in between.
fn image(dir: &Path, name: &str, seed: u64) -> (String, Vec<u8>) {
    let mut bytes = pattern(seed, SIZE as usize);
    bytes[4 * MB..9 * MB].fill(0);
    bytes[12 * MB + 100..13 * MB].fill(0);
    let path = dir.join(name);
    std::fs::write(&path, &bytes).unwrap();
    (path.to_str().unwrap().to_owned(), bytes)
}

/// The whole device file, read through a fresh open.
fn contents(file: &Path) -> Vec<u8> {
    let mut all = vec![0; SIZE as usize];
    std::fs::File::open(file).unwrap().read_exact_at(&mut all, 0).unwrap();
    all
}

fn assert_same(file: &Path, want: &[u8], what: &str) {
    assert_eq!(std::fs::metadata(file).unwrap().len(), SIZE, "{what}: the size changed");
    let got = contents(file);
    if let Some(at) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!("{what}: the device file differs from the image at byte {at}");
    }
}

/// Fills the volume with bytes no image has, so a skipped range shows.
fn scribble(file: &Path, seed: u64) {
    let f = OpenOptions::new().write(true).open(file).unwrap();
    f.write_all_at(&pattern(seed, SIZE as usize), 0).unwrap();
    f.sync_all().unwrap();
}

#[test]
fn disk_images_copy_onto_the_device_file() {
    if !kernel_available(&["qemu-img", "fallocate", "truncate"]) {
        return;
    }
    let mount = start();
    let file = mount.file();
    let target = file.to_str().unwrap();
    let work = tempfile::tempdir().unwrap();

    // dd without conv=notrunc opens with O_TRUNC: it succeeds and writes over.
    scribble(&file, 1);
    let (img, bytes) = image(work.path(), "dd.img", 2);
    ok("dd", &[&format!("if={img}"), &format!("of={target}"), "bs=1M", "status=none"]);
    assert_same(&file, &bytes, "dd");

    // cp opens the existing file with O_TRUNC too.
    scribble(&file, 3);
    let (img, bytes) = image(work.path(), "cp.img", 4);
    ok("cp", &[&img, target]);
    assert_same(&file, &bytes, "cp");

    // A sparse image: cp skips its holes (the volume keeps its old bytes
    // there, as documented), so the documented copy is --sparse=never.
    scribble(&file, 5);
    let (img, bytes) = image(work.path(), "plain.img", 6);
    let sparse = work.path().join("sparse.img");
    ok("cp", &["--sparse=always", &img, sparse.to_str().unwrap()]);
    ok("cp", &["--sparse=never", sparse.to_str().unwrap(), target]);
    assert_same(&file, &bytes, "cp --sparse=never of a sparse image");

    // qemu-img convert onto an existing file: with -n it writes the data
    // and punches the zero ranges (fallocate PUNCH_HOLE) over the old bytes.
    scribble(&file, 7);
    let (img, bytes) = image(work.path(), "q.img", 8);
    let qcow = work.path().join("q.qcow2");
    ok("qemu-img", &["convert", "-f", "raw", "-O", "qcow2", &img, qcow.to_str().unwrap()]);
    ok("qemu-img", &["convert", "-n", "-O", "raw", qcow.to_str().unwrap(), target]);
    assert_same(&file, &bytes, "qemu-img convert -n -O raw");

    // Without -n, qemu-img first truncates the file to 0 bytes (then counts
    // on it reading as zeros): refused before any byte is written.
    let out = sh("qemu-img", &["convert", "-O", "raw", qcow.to_str().unwrap(), target]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("Invalid argument"), "{stderr}");
    assert_same(&file, &bytes, "a refused qemu-img convert");

    // Opening with O_TRUNC from a program: the size and the bytes stay.
    let mut f = OpenOptions::new().write(true).truncate(true).open(&file).unwrap();
    f.write_all(b"head").unwrap();
    drop(f);
    let mut want = bytes.clone();
    want[..4].copy_from_slice(b"head");
    assert_same(&file, &want, "open with O_TRUNC");
    mount.unmount();
}

#[test]
fn fallocate_keeps_the_size_and_truncate_is_refused() {
    if !kernel_available(&["fallocate", "truncate"]) {
        return;
    }
    let mount = start();
    let file = mount.file();
    let target = file.to_str().unwrap();
    scribble(&file, 11);
    let mut want = pattern(11, SIZE as usize);

    // Plain allocation of the whole file, or part of it: nothing changes.
    ok("fallocate", &["-l", "16MiB", target]);
    ok("fallocate", &["-o", "1MiB", "-l", "2MiB", target]);
    assert_same(&file, &want, "fallocate inside the volume");
    // Punching a hole and zeroing a range read back as zeros.
    ok("fallocate", &["-p", "-o", "1000", "-l", "300000", target]);
    want[1000..301_000].fill(0);
    ok("fallocate", &["-z", "-o", "8MiB", "-l", "1MiB", target]);
    want[8 * MB..9 * MB].fill(0);
    assert_same(&file, &want, "fallocate -p and -z");
    // Digging holes (finding zero ranges and punching them) keeps the bytes.
    ok("fallocate", &["-d", target]);
    assert_same(&file, &want, "fallocate -d");

    // Growing, by fallocate or truncate: EINVAL, as for a block device,
    // with a log line that says how to get a larger volume.
    for args in [&["-l", "32MiB", target][..], &["-o", "16MiB", "-l", "1", target][..]] {
        let out = sh("fallocate", args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains("Invalid argument"), "fallocate {args:?}: {stderr}");
    }
    for size in ["0", "15M", "17M"] {
        let out = sh("truncate", &["-s", size, target]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains("Invalid argument"), "truncate -s {size}: {stderr}");
    }
    let f = OpenOptions::new().write(true).open(&file).unwrap();
    assert_eq!(f.set_len(SIZE - 1).unwrap_err().raw_os_error(), Some(libc::EINVAL));
    f.set_len(SIZE).unwrap();
    drop(f);
    ok("truncate", &["-s", "16M", target]);
    assert_same(&file, &want, "refused resizes");
    let log = mount.unmount();
    assert!(
        log.contains("cannot resize the device file to 33554432 bytes")
            && log.contains("fixed at 16777216 bytes")
            && log.contains("s3block resize"),
        "{log}"
    );
}
