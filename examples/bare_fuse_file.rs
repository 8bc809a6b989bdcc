//! A bare in-memory FUSE file: the yardstick for s3block's FUSE mount.
//!
//! ```text
//! bare_fuse_file MOUNTPOINT [SIZE]
//! ```
//!
//! Mounts a directory holding one file, `file`, of SIZE bytes (default
//! 2G; K, M, G suffixes), kept in one zero-filled buffer in memory, and
//! serves it until the mount point is unmounted (`fusermount -u`). It
//! speaks FUSE as s3block's mount does (fuser, two request threads, one
//! device descriptor each, 1 MiB writes and read-ahead, 64 background
//! requests) and does nothing else: a read is answered straight from the
//! buffer, a write copied into it. `bench/run.sh` runs the same direct 1 MiB
//! fio jobs on it and on s3block over its memory store, so the ratio of the
//! two is what s3block's own layers cost above FUSE itself.

use std::ffi::OsStr;
use std::sync::RwLock;
use std::time::{Duration, SystemTime};

use fuser::{
    FileAttr, FileHandle, FileType, Filesystem, Generation, INodeNo, KernelConfig, LockOwner, MountOption,
    OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, Request,
    SessionACL, TimeOrNow, WriteFlags,
};

const ROOT: u64 = 1;
const FILE: u64 = 2;
const TTL: Duration = Duration::from_secs(1);

/// The file's bytes.
struct Bytes {
    data: RwLock<Vec<u8>>,
    size: u64,
}

impl Bytes {
    /// `size` zero bytes; the memory is only touched where written.
    fn new(size: u64) -> Result<Self, String> {
        let len = usize::try_from(size).map_err(|_| format!("{size} bytes do not fit in memory here"))?;
        Ok(Bytes { data: RwLock::new(vec![0; len]), size })
    }

    /// The part of `offset..offset + len` inside the file.
    fn clamp(&self, offset: u64, len: usize) -> std::ops::Range<usize> {
        let start = offset.min(self.size) as usize;
        let end = offset.saturating_add(len as u64).min(self.size) as usize;
        start..end
    }

    /// Calls `f` with the bytes at `offset`, at most `len` of them.
    fn read<R>(&self, offset: u64, len: usize, f: impl FnOnce(&[u8]) -> R) -> R {
        let range = self.clamp(offset, len);
        let data = self.data.read().unwrap_or_else(|e| e.into_inner());
        f(&data[range])
    }

    /// Writes `buf` at `offset`; the bytes written (none past the end).
    fn write(&self, offset: u64, buf: &[u8]) -> usize {
        let range = self.clamp(offset, buf.len());
        let n = range.len();
        let mut data = self.data.write().unwrap_or_else(|e| e.into_inner());
        data[range].copy_from_slice(&buf[..n]);
        n
    }
}

struct BareFs {
    bytes: Bytes,
    started: SystemTime,
}

impl BareFs {
    fn attr(&self, ino: u64) -> FileAttr {
        let (kind, perm, size, nlink) = if ino == ROOT {
            (FileType::Directory, 0o755, 0, 2)
        } else {
            (FileType::RegularFile, 0o644, self.bytes.size, 1)
        };
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: self.started,
            mtime: self.started,
            ctime: self.started,
            crtime: self.started,
            kind,
            perm,
            nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }
}

impl Filesystem for BareFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        if let Err(nearest) = config.set_max_write(1 << 20) {
            let _ = config.set_max_write(nearest);
        }
        if let Err(nearest) = config.set_max_readahead(1 << 20) {
            let _ = config.set_max_readahead(nearest);
        }
        let _ = config.set_max_background(64);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if parent.0 == ROOT && name == "file" {
            reply.entry(&TTL, &self.attr(FILE), Generation(0));
        } else {
            reply.error(fuser::Errno::ENOENT);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match ino.0 {
            ROOT | FILE => reply.attr(&TTL, &self.attr(ino.0)),
            _ => reply.error(fuser::Errno::ENOENT),
        }
    }

    /// Times and modes are not kept; the size is fixed (a truncate to
    /// another size fails with EINVAL, as a block device's would).
    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        match (ino.0, size) {
            (FILE, Some(s)) if s != self.bytes.size => reply.error(fuser::Errno::EINVAL),
            (ROOT | FILE, _) => reply.attr(&TTL, &self.attr(ino.0)),
            _ => reply.error(fuser::Errno::ENOENT),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        if ino.0 != ROOT {
            reply.error(fuser::Errno::ENOTDIR);
            return;
        }
        let entries = [
            (ROOT, FileType::Directory, "."),
            (ROOT, FileType::Directory, ".."),
            (FILE, FileType::RegularFile, "file"),
        ];
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*ino), (i + 1) as u64, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match ino.0 {
            FILE => reply.opened(FileHandle(0), fuser::FopenFlags::empty()),
            _ => reply.error(fuser::Errno::EISDIR),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.bytes.read(offset, size as usize, |data| reply.data(data));
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let n = self.bytes.write(offset, data);
        reply.written(n as u32);
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        reply.ok();
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }
}

/// `2G`, `512M`, `64K` or a byte count.
fn parse_size(s: &str) -> Result<u64, String> {
    let (digits, unit) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s[..i], c.to_ascii_uppercase()),
        _ => (s, 'B'),
    };
    let n: u64 = digits.parse().map_err(|_| format!("size {s:?}: give bytes or a number with K, M or G"))?;
    let shift = match unit {
        'B' => 0,
        'K' => 10,
        'M' => 20,
        'G' => 30,
        _ => return Err(format!("size {s:?}: the unit must be K, M or G")),
    };
    n.checked_mul(1 << shift).filter(|&b| b > 0).ok_or_else(|| format!("size {s:?}: out of range"))
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mountpoint, size) = match args.as_slice() {
        [m] => (m.clone(), Ok(2 << 30)),
        [m, s] => (m.clone(), parse_size(s)),
        _ => {
            eprintln!("usage: bare_fuse_file MOUNTPOINT [SIZE]");
            return std::process::ExitCode::from(2);
        }
    };
    let bytes = match size.and_then(Bytes::new) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("bare_fuse_file: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let mut config = fuser::Config::default();
    config.mount_options = vec![MountOption::FSName("bare".into()), MountOption::RW];
    config.acl = SessionACL::All;
    config.n_threads = Some(2);
    config.clone_fd = true;
    let fs = BareFs { bytes, started: SystemTime::now() };
    match fuser::Session::new(fs, &mountpoint, &config).and_then(|s| s.run()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bare_fuse_file: cannot serve {mountpoint}: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_stop_at_the_end_of_the_file() {
        let b = Bytes::new(10).unwrap();
        assert_eq!(b.write(8, b"abcd"), 2);
        assert_eq!(b.write(20, b"x"), 0);
        assert_eq!(b.read(6, 100, |d| d.to_vec()), vec![0, 0, b'a', b'b']);
        assert_eq!(b.read(10, 4, |d| d.len()), 0);
        assert_eq!(b.read(u64::MAX, 4, |d| d.len()), 0);
        assert_eq!(b.write(u64::MAX - 1, b"xyz"), 0);
    }

    #[test]
    fn sizes_parse_and_bad_ones_are_named() {
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("2T").unwrap_err().contains("\"2T\""));
        assert!(parse_size("x").unwrap_err().contains("\"x\""));
        assert!(parse_size("0").is_err());
    }
}
