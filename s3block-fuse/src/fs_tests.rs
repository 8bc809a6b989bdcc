//! The filesystem driven directly over a `MemoryDevice`, without the kernel.

use std::sync::atomic::AtomicUsize;

use s3block_core::MemoryDevice;

use super::*;
use crate::errno::errno;

const BS: u64 = 4096;
const BLOCKS: u64 = 16;
const SIZE: u64 = BS * BLOCKS;

#[derive(Default)]
struct FakeStats {
    resets: AtomicUsize,
}

impl StatsSource for FakeStats {
    fn render(&self) -> String {
        format!("resets {}\n", self.resets.load(Ordering::Relaxed))
    }
    fn reset(&self) {
        self.resets.fetch_add(1, Ordering::Relaxed);
    }
}

fn config(read_only: bool) -> FsConfig {
    FsConfig {
        filename: "file".into(),
        stats_filename: Some("stats".into()),
        file_mode: 0o600,
        read_only,
        direct_io: false,
        uid: 0,
        gid: 0,
    }
}

fn setup(read_only: bool) -> (BlockFs, Arc<MemoryDevice>, Arc<FakeStats>) {
    let dev = Arc::new(MemoryDevice::new(Geometry::new(SIZE, BS).unwrap()));
    let stats = Arc::new(FakeStats::default());
    let fs = BlockFs::new(dev.clone(), stats.clone(), config(read_only));
    (fs, dev, stats)
}

fn pattern(len: usize, seed: u8) -> Bytes {
    Bytes::from((0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1).collect::<Vec<u8>>())
}

fn code<T: std::fmt::Debug>(r: FsResult<T>) -> i32 {
    errno(&r.expect_err("expected an error")).code()
}

#[test]
fn directory_shows_the_two_files() {
    let (fs, _, _) = setup(false);
    let attr = fs.lookup(ROOT_INO, OsStr::new("file")).unwrap();
    assert_eq!(
        (attr.ino, attr.size, attr.perm, attr.kind),
        (INodeNo(DEVICE_INO), SIZE, 0o600, FileType::RegularFile)
    );
    assert_eq!(fs.lookup(ROOT_INO, OsStr::new("stats")).unwrap().ino, INodeNo(STATS_INO));
    assert_eq!(code(fs.lookup(ROOT_INO, OsStr::new("nope"))), libc::ENOENT);
    let names: Vec<String> = fs.readdir(ROOT_INO, 0).unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(names, [".", "..", "file", "stats", "stats.json"]);
    let rest = fs.readdir(ROOT_INO, 3).unwrap();
    assert_eq!(rest.len(), 2);
    assert_eq!((rest[0].name.as_str(), rest[0].next_offset), ("stats", 4));
    let json = fs.lookup(ROOT_INO, OsStr::new("stats.json")).unwrap();
    assert_eq!((json.ino, json.size), (INodeNo(STATS_JSON_INO), 3), "the fake source's empty object");
    assert_eq!(fs.getattr(ROOT_INO).unwrap().kind, FileType::Directory);
}

#[test]
fn hidden_stats_file() {
    let dev = Arc::new(MemoryDevice::new(Geometry::new(SIZE, BS).unwrap()));
    let fs =
        BlockFs::new(dev, Arc::new(FakeStats::default()), FsConfig { stats_filename: None, ..config(false) });
    assert_eq!(code(fs.lookup(ROOT_INO, OsStr::new("stats"))), libc::ENOENT);
    assert_eq!(code(fs.getattr(STATS_INO)), libc::ENOENT);
    assert_eq!(fs.readdir(ROOT_INO, 0).unwrap().len(), 3);
}

#[tokio::test]
async fn write_then_read_across_blocks() {
    let (fs, dev, _) = setup(false);
    let data = pattern(3 * BS as usize + 100, 5);
    let at = BS - 50;
    assert_eq!(fs.write(DEVICE_INO, at, data.clone()).await.unwrap(), data.len() as u32);
    assert_eq!(fs.read(DEVICE_INO, 0, at, data.len() as u32).await.unwrap(), data);
    assert_eq!(dev.stored_blocks(), 5);
    // Untouched bytes read as zeros.
    assert!(fs.read(DEVICE_INO, 0, 0, 10).await.unwrap().iter().all(|&b| b == 0));
}

#[tokio::test]
async fn end_of_device() {
    let (fs, _, _) = setup(false);
    // Reads: short at the end, empty past it.
    assert_eq!(fs.read(DEVICE_INO, 0, SIZE - 10, 100).await.unwrap().len(), 10);
    assert!(fs.read(DEVICE_INO, 0, SIZE, 100).await.unwrap().is_empty());
    assert!(fs.read(DEVICE_INO, 0, SIZE + BS, 100).await.unwrap().is_empty());
    // Writes: short across the end, ENOSPC at or past it.
    let data = pattern(100, 9);
    assert_eq!(fs.write(DEVICE_INO, SIZE - 30, data.clone()).await.unwrap(), 30);
    assert_eq!(fs.read(DEVICE_INO, 0, SIZE - 30, 30).await.unwrap(), data.slice(..30));
    assert_eq!(code(fs.write(DEVICE_INO, SIZE, data.clone()).await), libc::ENOSPC);
    assert_eq!(code(fs.write(DEVICE_INO, u64::MAX - 5, data).await), libc::ENOSPC);
}

#[tokio::test]
async fn punch_hole_frees_whole_blocks_and_zeroes_partial_ones() {
    let (fs, dev, _) = setup(false);
    let data = pattern(4 * BS as usize, 3);
    fs.write(DEVICE_INO, 0, data.clone()).await.unwrap();
    assert_eq!(dev.stored_blocks(), 4);
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    // From the middle of block 0 to the middle of block 3: blocks 1 and 2 go.
    fs.fallocate(DEVICE_INO, BS / 2, 3 * BS, mode).await.unwrap();
    assert_eq!(dev.stored_blocks(), 2);
    assert!(dev.counts().discards >= 1);
    let back = fs.read(DEVICE_INO, 0, 0, 4 * BS as u32).await.unwrap();
    let half = (BS / 2) as usize;
    assert_eq!(back[..half], data[..half]);
    assert!(back[half..half + 3 * BS as usize].iter().all(|&b| b == 0));
    assert_eq!(back[half + 3 * BS as usize..], data[half + 3 * BS as usize..]);
    // A hole reaching past the end is clipped with KEEP_SIZE.
    fs.write(DEVICE_INO, SIZE - BS, pattern(BS as usize, 1)).await.unwrap();
    fs.fallocate(DEVICE_INO, SIZE - BS, 10 * BS, mode).await.unwrap();
    assert!(fs.read(DEVICE_INO, 0, SIZE - BS, BS as u32).await.unwrap().iter().all(|&b| b == 0));
}

#[tokio::test]
async fn fallocate_modes() {
    let (fs, dev, _) = setup(false);
    fs.write(DEVICE_INO, 0, pattern(BS as usize, 2)).await.unwrap();
    // Plain allocation inside the volume: nothing to do.
    fs.fallocate(DEVICE_INO, 0, SIZE, 0).await.unwrap();
    fs.fallocate(DEVICE_INO, 0, BS, libc::FALLOC_FL_KEEP_SIZE).await.unwrap();
    assert_eq!(dev.stored_blocks(), 1);
    // Growing the file: a resize, refused as truncate is; with KEEP_SIZE fine.
    let err = fs.fallocate(DEVICE_INO, SIZE - 1, 2, 0).await.unwrap_err();
    assert!(matches!(err, FsError::Resize { requested, size: SIZE } if requested == SIZE + 1), "{err}");
    assert_eq!(errno(&err).code(), libc::EINVAL);
    fs.fallocate(DEVICE_INO, SIZE - 1, 2, libc::FALLOC_FL_KEEP_SIZE).await.unwrap();
    assert_eq!(fs.getattr(DEVICE_INO).unwrap().size, SIZE);
    // Moving data: not supported.
    assert_eq!(code(fs.fallocate(DEVICE_INO, 0, BS, libc::FALLOC_FL_COLLAPSE_RANGE).await), libc::EOPNOTSUPP);
    // ZERO_RANGE zeroes like a hole.
    fs.fallocate(DEVICE_INO, 0, BS, libc::FALLOC_FL_ZERO_RANGE).await.unwrap();
    assert_eq!(dev.stored_blocks(), 0);
    assert_eq!(code(fs.fallocate(STATS_INO, 0, 1, 0).await), libc::EPERM);
}

#[tokio::test]
async fn truncate_is_refused_but_same_size_is_fine() {
    let (fs, _, _) = setup(false);
    let set = |size| SetAttr { size: Some(size), ..SetAttr::default() };
    // EINVAL, as truncate(2) on a block device; the message says how to grow.
    let err = fs.setattr(DEVICE_INO, set(0)).unwrap_err();
    assert_eq!(errno(&err).code(), libc::EINVAL);
    let text = err.to_string();
    assert!(
        text.contains("fixed at") && text.contains("s3block resize") && text.contains("s3block create"),
        "{text}"
    );
    assert_eq!(code(fs.setattr(DEVICE_INO, set(SIZE * 2))), libc::EINVAL);
    assert_eq!(fs.setattr(DEVICE_INO, set(SIZE)).unwrap().size, SIZE);
    // Mode changes are kept for the mount.
    let attr = fs.setattr(DEVICE_INO, SetAttr { mode: Some(0o100640), ..SetAttr::default() }).unwrap();
    assert_eq!(attr.perm, 0o640);
    assert_eq!(fs.getattr(DEVICE_INO).unwrap().perm, 0o640);
    let err = fs.setattr(DEVICE_INO, set(1)).unwrap_err();
    assert!(err.to_string().contains("1 bytes") && err.to_string().contains(&SIZE.to_string()), "{err}");
}

#[tokio::test]
async fn read_only_gives_erofs() {
    let (fs, dev, _) = setup(true);
    assert_eq!(code(fs.open(DEVICE_INO, true)), libc::EROFS);
    assert!(fs.open(DEVICE_INO, false).is_ok());
    assert_eq!(code(fs.write(DEVICE_INO, 0, pattern(10, 1)).await), libc::EROFS);
    let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    assert_eq!(code(fs.fallocate(DEVICE_INO, 0, BS, punch).await), libc::EROFS);
    let trunc = SetAttr { size: Some(0), ..SetAttr::default() };
    assert_eq!(code(fs.setattr(DEVICE_INO, trunc)), libc::EROFS);
    assert_eq!(dev.counts().writes + dev.counts().discards, 0);
    assert!(fs.read(DEVICE_INO, 0, 0, 10).await.is_ok());
}

#[tokio::test]
async fn sync_flushes_the_device() {
    let (fs, dev, _) = setup(false);
    fs.sync(DEVICE_INO).await.unwrap();
    fs.sync(DEVICE_INO).await.unwrap();
    assert_eq!(dev.counts().flushes, 2);
    fs.sync(STATS_INO).await.unwrap();
    assert_eq!(dev.counts().flushes, 2);
}

#[tokio::test]
async fn a_close_flushes_only_a_handle_opened_for_writing() {
    let (fs, dev, _) = setup(false);
    let (reader, _) = fs.open(DEVICE_INO, false).unwrap();
    let (writer, _) = fs.open(DEVICE_INO, true).unwrap();
    fs.write(DEVICE_INO, 0, pattern(100, 1)).await.unwrap();
    // A read-only handle's close does not wait for the store.
    fs.flush(DEVICE_INO, reader).await.unwrap();
    assert_eq!(dev.counts().flushes, 0);
    // fsync through it still does.
    fs.sync(DEVICE_INO).await.unwrap();
    assert_eq!(dev.counts().flushes, 1);
    // A written handle's close stores what was written.
    fs.flush(DEVICE_INO, writer).await.unwrap();
    assert_eq!(dev.counts().flushes, 2);
    fs.release(DEVICE_INO, reader);
    fs.release(DEVICE_INO, writer);
    // A released handle number is forgotten, whatever it was.
    fs.flush(DEVICE_INO, writer).await.unwrap();
    assert_eq!(dev.counts().flushes, 2);
    let (stats, _) = fs.open(STATS_INO, false).unwrap();
    fs.flush(STATS_INO, stats).await.unwrap();
    assert_eq!(dev.counts().flushes, 2);
}

#[tokio::test]
async fn stats_file_reads_snapshot_and_unlink_resets() {
    let (fs, _, stats) = setup(false);
    let (fh, flags) = fs.open(STATS_INO, false).unwrap();
    assert!(flags.contains(FopenFlags::FOPEN_DIRECT_IO));
    assert_eq!(&fs.read(STATS_INO, fh, 0, 4096).await.unwrap()[..], b"resets 0\n");
    fs.unlink(ROOT_INO, OsStr::new("stats")).unwrap();
    assert_eq!(stats.resets.load(Ordering::Relaxed), 1);
    // The open handle keeps its snapshot; a new open sees the reset.
    assert_eq!(&fs.read(STATS_INO, fh, 7, 4096).await.unwrap()[..], b"0\n");
    assert!(fs.read(STATS_INO, fh, 100, 4096).await.unwrap().is_empty());
    fs.release(STATS_INO, fh);
    let (fh2, _) = fs.open(STATS_INO, false).unwrap();
    assert_eq!(&fs.read(STATS_INO, fh2, 0, 4096).await.unwrap()[..], b"resets 1\n");
    assert_eq!(fs.lookup(ROOT_INO, OsStr::new("stats")).unwrap().size, 9);
    // The stats file cannot be written; the device file cannot be removed.
    assert_eq!(code(fs.open(STATS_INO, true)), libc::EPERM);
    assert_eq!(code(fs.write(STATS_INO, 0, pattern(3, 0)).await), libc::EPERM);
    assert_eq!(code(fs.unlink(ROOT_INO, OsStr::new("file"))), libc::EPERM);
    assert_eq!(code(fs.unlink(ROOT_INO, OsStr::new("zzz"))), libc::ENOENT);
}

#[tokio::test]
async fn directory_operations_on_files_fail() {
    let (fs, _, _) = setup(false);
    assert_eq!(code(fs.readdir(DEVICE_INO, 0)), libc::ENOTDIR);
    assert_eq!(code(fs.open(ROOT_INO, false)), libc::EISDIR);
    assert_eq!(code(fs.read(ROOT_INO, 0, 0, 1).await), libc::EISDIR);
    assert_eq!(code(fs.read(42, 0, 0, 1).await), libc::ENOENT);
    assert_eq!(fs.statfs(), (BLOCKS, 0, BS as u32));
}

#[tokio::test]
async fn direct_io_flag_follows_the_option() {
    let dev = Arc::new(MemoryDevice::new(Geometry::new(SIZE, BS).unwrap()));
    let fs = BlockFs::new(dev, Arc::new(FakeStats::default()), FsConfig { direct_io: true, ..config(false) });
    assert!(fs.open(DEVICE_INO, true).unwrap().1.contains(FopenFlags::FOPEN_DIRECT_IO));
    let (fs, _, _) = setup(false);
    assert!(!fs.open(DEVICE_INO, true).unwrap().1.contains(FopenFlags::FOPEN_DIRECT_IO));
}

#[test]
fn each_inode_keeps_its_own_owner_mode_and_times() {
    let (fs, _, _) = setup(false);
    let chown = SetAttr { uid: Some(1000), gid: Some(100), ..SetAttr::default() };
    let attr = fs.setattr(DEVICE_INO, chown).unwrap();
    assert_eq!((attr.uid, attr.gid), (1000, 100));
    for ino in [ROOT_INO, STATS_INO] {
        let other = fs.getattr(ino).unwrap();
        assert_eq!((other.uid, other.gid), (0, 0), "chown of the file changed inode {ino}");
    }
    // The root keeps its own mode; a chmod of it stays its own.
    assert_eq!(fs.getattr(ROOT_INO).unwrap().perm, 0o755);
    fs.setattr(ROOT_INO, SetAttr { mode: Some(0o40700), ..SetAttr::default() }).unwrap();
    assert_eq!(fs.getattr(ROOT_INO).unwrap().perm, 0o700);
    assert_eq!(fs.getattr(DEVICE_INO).unwrap().perm, 0o600);
    // touch -d: both times are set, on any inode, and stay set.
    let then = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_577_934_245);
    let earlier = then - std::time::Duration::from_secs(3600);
    for ino in [DEVICE_INO, ROOT_INO, STATS_INO] {
        let set = SetAttr { atime: Some(earlier), mtime: Some(then), ..SetAttr::default() };
        fs.setattr(ino, set).unwrap();
        let attr = fs.getattr(ino).unwrap();
        assert_eq!((attr.atime, attr.mtime), (earlier, then), "inode {ino}");
        assert!(attr.ctime > then, "the change time is the time of the change");
    }
}

#[tokio::test]
async fn a_write_moves_only_the_device_file_times() {
    let (fs, _, _) = setup(false);
    let then = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
    for ino in [DEVICE_INO, ROOT_INO] {
        fs.setattr(ino, SetAttr { mtime: Some(then), ..SetAttr::default() }).unwrap();
    }
    fs.write(DEVICE_INO, 0, pattern(10, 1)).await.unwrap();
    assert!(fs.getattr(DEVICE_INO).unwrap().mtime > then);
    assert_eq!(fs.getattr(ROOT_INO).unwrap().mtime, then);
}

#[test]
fn every_change_of_entries_gets_one_errno() {
    let (fs, _, _) = setup(false);
    for what in ["create", "mknod", "mkdir", "rmdir", "rename", "link", "symlink"] {
        let err = fs.change_entries(what).unwrap_err();
        assert_eq!(errno(&err).code(), libc::EPERM, "{what}");
        assert!(err.to_string().contains(what), "{err}");
    }
    assert_eq!(code(fs.unlink(ROOT_INO, OsStr::new("file"))), libc::EPERM);
}

/// The filesystem over a real stack of a new `memory://` volume of 1M in
/// 64K blocks, owned by uid 1000, with its control file.
async fn grown_fs() -> (BlockFs, s3block_cache::frontend::Stack) {
    let opts =
        crate::Options::parse_from_args(["s3block-fuse", "--size=1M", "--block-size=64K", "memory://", "/m"])
            .unwrap();
    let stack = crate::build_stack(&opts.volume).await.unwrap();
    let fs = BlockFs::new(
        stack.device.clone(),
        stack.stats.clone(),
        FsConfig { uid: 1000, gid: 1000, ..config(false) },
    )
    .with_grow(stack.grow.clone());
    (fs, stack)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_file_grows_the_device_file_for_its_owner_only() {
    let (fs, stack) = grown_fs().await;
    let names: Vec<String> = fs.readdir(ROOT_INO, 0).unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(names, [".", "..", "file", "stats", "stats.json", "control"]);
    let attr = fs.lookup(ROOT_INO, OsStr::new("control")).unwrap();
    assert_eq!((attr.ino, attr.perm, attr.uid, attr.size), (INodeNo(CONTROL_INO), 0o600, 1000, 0));
    // Its owner's and root's alone; chmod does not open it to others.
    assert_eq!(code(fs.open_control(1001)), libc::EPERM);
    assert_eq!(
        code(fs.setattr(CONTROL_INO, SetAttr { mode: Some(0o666), ..Default::default() })),
        libc::EPERM
    );
    assert_eq!(code(fs.open(CONTROL_INO, true)), libc::EPERM);
    assert!(fs.open_control(0).is_ok());
    let (fh, _) = fs.open_control(1000).unwrap();
    assert!(
        code(fs.control_write(fh + 100, Bytes::from_static(b"size\n")).await) != 0,
        "a handle it did not open"
    );

    let ask = |request: &'static str| {
        let fs = &fs;
        async move {
            assert_eq!(
                fs.control_write(fh, Bytes::from_static(request.as_bytes())).await.unwrap() as usize,
                request.len()
            );
            String::from_utf8(fs.read(CONTROL_INO, fh, 0, 4096).await.unwrap().to_vec()).unwrap()
        }
    };
    assert_eq!(ask("size\n").await, "ok 1048576 65536\n");
    assert_eq!(ask("resize 2097152\n").await, "ok 1048576 2097152\n");
    assert_eq!(fs.getattr(DEVICE_INO).unwrap().size, 2 << 20);
    assert_eq!(fs.statfs().0, 32);
    // Past the old end: written and read back through the file.
    assert_eq!(fs.write(DEVICE_INO, 1 << 20, Bytes::from_static(b"grown")).await.unwrap(), 5);
    assert_eq!(fs.read(DEVICE_INO, 0, 1 << 20, 5).await.unwrap(), b"grown"[..]);
    assert!(ask("resize 1048576\n").await.starts_with("error cannot shrink a mounted volume"));
    assert!(
        ask("resize 4194304 4096\n").await.starts_with("error a resize keeps the block size (64K, 4K asked)")
    );
    assert!(ask("shrink\n").await.starts_with("error unknown request \"shrink\""));
    assert_eq!(fs.getattr(DEVICE_INO).unwrap().size, 2 << 20);
    // The device file's size is still fixed against truncate.
    let e = fs.setattr(DEVICE_INO, SetAttr { size: Some(4 << 20), ..Default::default() }).unwrap_err();
    assert!(e.to_string().contains("s3block resize MOUNTPOINT"), "{e}");
    fs.release(CONTROL_INO, fh);
    (stack.release)().await.unwrap();
}
