//! The filesystem s3block shows through FUSE, as a type tests drive directly.
//!
//! A root directory holds the device file, whose bytes are the volume, the
//! stats file (and its JSON twin), and the control file through which a
//! running mount grows its volume (see [`control`](crate::control)). [`BlockFs`] answers every request with plain
//! values or an [`FsError`]; the FUSE glue in `session` only moves these
//! into fuser's replies, and [`errno`](crate::errno()) is the one place errors
//! become errno values.
//!
//! Semantics chosen for a file that is a disk:
//! - its size is the volume's and changes only when the volume grows
//!   (`s3block resize MOUNTPOINT`, through the control file), as for a
//!   block device:
//!   opening it with `O_TRUNC` succeeds and changes nothing (the kernel
//!   ignores `O_TRUNC` on a block device too), so `dd of=file`, `cp img file`
//!   and `> file` write over the volume without wiping it first; setting the
//!   size it already has succeeds; any other size ([`FsError::Resize`]) is
//!   refused with EINVAL, what truncate(2) gives on a block device node;
//! - since `O_TRUNC` does not empty it, a copy tool that skips the holes of a
//!   sparse source (`cp` does, by default) leaves the volume's old bytes
//!   there: `cp --sparse=never`, `dd` and `qemu-img convert -n` write every
//!   byte;
//! - reads at or past the end are empty or short, as for any file;
//! - writes that start at or past the end fail with ENOSPC, like a block
//!   device; a write that crosses the end is short;
//! - `fallocate(PUNCH_HOLE)` and `fallocate(ZERO_RANGE)` zero the range,
//!   deleting the objects of whole blocks; plain allocation inside the size
//!   succeeds and does nothing, since a block exists as soon as it is written;
//!   allocation that would grow the file is a resize, refused as truncate is;
//! - fsync and fdatasync wait until every block written before them is in
//!   the object store, and so does the close of a handle opened for
//!   writing; closing a handle opened read-only waits for nothing, so
//!   readers (and `losetup -d` of a read-only loop device) are not held
//!   while the store is unreachable;
//! - each of the three inodes keeps its own owner, mode and times, which
//!   `chown`, `chmod` and `touch` change for this mount only (they are held
//!   in memory, not stored);
//! - the directory's entries are fixed: creating, renaming, linking or
//!   removing a file is refused with one error, [`FsError::Namespace`]
//!   (removing the stats file only resets its counters).

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::SystemTime;

use bytes::Bytes;
use fuser::{FileAttr, FileType, FopenFlags, INodeNo};

use crate::control::{self, CONTROL_FILE};
use s3block_cache::frontend::{StatsSource, VolumeGrow};
use s3block_core::{BlockDevice, BlockDeviceExt, Geometry};

/// Inode of the root directory.
pub const ROOT_INO: u64 = 1;
/// Inode of the device file.
pub const DEVICE_INO: u64 = 2;
/// Inode of the stats file.
pub const STATS_INO: u64 = 3;
/// Inode of the stats file's JSON twin, `{stats file}.json`: the same
/// figures for scripts (it shares the stats file's owner, mode and times).
pub(crate) const STATS_JSON_INO: u64 = 4;
/// Inode of the control file (see [`control`](crate::control)).
pub(crate) const CONTROL_INO: u64 = 5;

/// What the filesystem shows and how.
#[derive(Debug, Clone)]
pub struct FsConfig {
    /// Name of the device file.
    pub filename: String,
    /// Name of the stats file; `None` hides it.
    pub stats_filename: Option<String>,
    /// Permission bits of the device file.
    pub file_mode: u16,
    /// Refuse writes with EROFS.
    pub read_only: bool,
    /// Open the device file with FOPEN_DIRECT_IO (no kernel page cache).
    pub direct_io: bool,
    /// Owner of every inode at start (`-o uid=`, else the mounting user).
    pub uid: u32,
    /// Group of every inode at start (`-o gid=`, else the mounting user's).
    pub gid: u32,
}

/// Why a request failed; [`errno`](crate::errno()) maps each to an errno.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FsError {
    /// The device below failed.
    #[error(transparent)]
    Device(#[from] s3block_core::Error),
    /// No entry of that name.
    #[error("no file named {0:?}")]
    NotFound(String),
    /// No such inode.
    #[error("no inode {0}")]
    NoInode(u64),
    /// A file operation on the directory.
    #[error("is a directory")]
    IsDir,
    /// A directory operation on a file.
    #[error("not a directory")]
    NotDir,
    /// A write on a read-only mount.
    #[error("{0}: the volume is mounted read-only")]
    ReadOnly(&'static str),
    /// A write or allocation at or past the end of the volume.
    #[error("{what} at byte {offset} is past the end of the volume ({size} bytes)")]
    NoSpace {
        /// The operation.
        what: &'static str,
        /// Where it started.
        offset: u64,
        /// The volume's size.
        size: u64,
    },
    /// A change of the device file's size (truncate, or fallocate past the
    /// end): the size is the volume's, fixed when it was created.
    #[error(
        "cannot resize the device file to {requested} bytes: its size is the volume's, fixed at {size} bytes \
         until the volume grows: `s3block resize MOUNTPOINT --size NEW` grows it while mounted (or create a \
         larger volume with `s3block create --size` and copy the data onto it)"
    )]
    Resize {
        /// The size asked for.
        requested: u64,
        /// The volume's size.
        size: u64,
    },
    /// A fallocate mode that would move data (collapse, insert).
    #[error("fallocate mode {0:#x} is not supported on the device file")]
    FallocateMode(i32),
    /// An operation the stats file or the directory does not allow.
    #[error("{0} is not permitted here")]
    NotPermitted(&'static str),
    /// A change to the directory's fixed entries: create, mknod, mkdir,
    /// rmdir, rename, link, symlink, or removing the device file.
    #[error("{0}: the mount shows a fixed set of files")]
    Namespace(&'static str),
}

/// Result of a filesystem request.
pub type FsResult<T> = Result<T, FsError>;

/// Attribute changes asked by `setattr`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SetAttr {
    /// New permission bits.
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New size (refused unless equal to the volume's).
    pub size: Option<u64>,
    /// New access time.
    pub atime: Option<SystemTime>,
    /// New modification time.
    pub mtime: Option<SystemTime>,
    /// New change time (else the time of the change).
    pub ctime: Option<SystemTime>,
}

/// One directory entry from [`BlockFs::readdir`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// Its inode.
    pub ino: u64,
    /// The offset that continues after it.
    pub next_offset: u64,
    /// Directory or regular file.
    pub kind: FileType,
    /// Its name.
    pub name: String,
}

/// What `chown`, `chmod` and `touch` change: one per inode.
#[derive(Debug, Clone, Copy)]
struct Meta {
    mode: u16,
    uid: u32,
    gid: u32,
    atime: SystemTime,
    mtime: SystemTime,
    ctime: SystemTime,
}

impl Meta {
    fn new(mode: u16, config: &FsConfig, now: SystemTime) -> Meta {
        Meta { mode, uid: config.uid, gid: config.gid, atime: now, mtime: now, ctime: now }
    }
}

/// Index of an inode's [`Meta`] (the inode numbers are 1, 2, 3).
fn slot(ino: u64) -> usize {
    (ino.min(STATS_INO) - ROOT_INO) as usize
}

/// The filesystem over a block device: see the module docs.
pub struct BlockFs {
    device: Arc<dyn BlockDevice>,
    stats: Arc<dyn StatsSource>,
    config: FsConfig,
    started: SystemTime,
    /// Root, device file, stats file.
    meta: Mutex<[Meta; 3]>,
    /// Snapshots of the stats text, one per open handle, so a reader sees
    /// one consistent text however it splits its reads.
    stats_handles: Mutex<HashMap<u64, Bytes>>,
    /// The device file's handles opened for writing: their close flushes.
    writers: Mutex<HashSet<u64>>,
    next_fh: AtomicU64,
    /// Grows the volume: shown as the control file when set.
    grow: Option<Arc<VolumeGrow>>,
    /// The control file's answers, one per open handle.
    control: Mutex<HashMap<u64, Bytes>>,
    /// Tells the kernel the device file's size changed.
    notifier: OnceLock<fuser::Notifier>,
}

impl std::fmt::Debug for BlockFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockFs").field("device", &self.device).field("config", &self.config).finish()
    }
}

impl BlockFs {
    /// A filesystem showing `device` as `config.filename`.
    pub fn new(device: Arc<dyn BlockDevice>, stats: Arc<dyn StatsSource>, config: FsConfig) -> Self {
        let now = SystemTime::now();
        let meta = [
            Meta::new(0o755, &config, now),
            Meta::new(config.file_mode, &config, now),
            Meta::new(0o444, &config, now),
        ];
        BlockFs {
            device,
            stats,
            config,
            started: now,
            meta: Mutex::new(meta),
            stats_handles: Mutex::default(),
            writers: Mutex::default(),
            next_fh: AtomicU64::new(1),
            grow: None,
            control: Mutex::default(),
            notifier: OnceLock::new(),
        }
    }

    /// Shows the control file, through which `grow` grows the volume.
    pub fn with_grow(mut self, grow: Arc<VolumeGrow>) -> Self {
        self.grow = Some(grow);
        self
    }

    /// The kernel session's notifier: after a grow, the kernel is told the
    /// device file's attributes changed, so its new size shows at once.
    pub fn set_notifier(&self, notifier: fuser::Notifier) {
        let _ = self.notifier.set(notifier);
    }

    /// The volume's geometry now (it grows while mounted).
    fn geometry(&self) -> Geometry {
        self.device.geometry()
    }

    fn control_answers(&self) -> MutexGuard<'_, HashMap<u64, Bytes>> {
        self.control.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The device underneath.
    pub fn device(&self) -> &Arc<dyn BlockDevice> {
        &self.device
    }

    /// The configuration.
    pub fn config(&self) -> &FsConfig {
        &self.config
    }

    fn meta(&self) -> MutexGuard<'_, [Meta; 3]> {
        // Meta is plain values, each write complete: a poisoned lock is still consistent.
        self.meta.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn handles(&self) -> MutexGuard<'_, HashMap<u64, Bytes>> {
        self.stats_handles.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn writers(&self) -> MutexGuard<'_, HashSet<u64>> {
        self.writers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn ino_of(&self, name: &OsStr) -> Option<u64> {
        let name = name.to_str()?;
        if name == self.config.filename {
            Some(DEVICE_INO)
        } else if self.config.stats_filename.as_deref() == Some(name) {
            Some(STATS_INO)
        } else if self.stats_json_name().as_deref() == Some(name) {
            Some(STATS_JSON_INO)
        } else if self.grow.is_some() && name == CONTROL_FILE {
            Some(CONTROL_INO)
        } else {
            None
        }
    }

    /// The JSON stats file's name: the stats file's, plus `.json`.
    fn stats_json_name(&self) -> Option<String> {
        self.config.stats_filename.as_ref().map(|name| format!("{name}.json"))
    }

    /// The contents of the stats file or of its JSON twin, now.
    fn stats_bytes(&self, ino: u64) -> Bytes {
        Bytes::from(if ino == STATS_JSON_INO { self.stats.render_json() } else { self.stats.render() })
    }

    fn check_ino(&self, ino: u64) -> FsResult<()> {
        match ino {
            ROOT_INO | DEVICE_INO => Ok(()),
            STATS_INO | STATS_JSON_INO if self.config.stats_filename.is_some() => Ok(()),
            CONTROL_INO if self.grow.is_some() => Ok(()),
            _ => Err(FsError::NoInode(ino)),
        }
    }

    /// Attributes of an inode.
    pub fn getattr(&self, ino: u64) -> FsResult<FileAttr> {
        self.check_ino(ino)?;
        let geometry = self.geometry();
        let mut meta = self.meta()[slot(ino)];
        let (kind, size, nlink) = match ino {
            ROOT_INO => (FileType::Directory, 0, 2),
            DEVICE_INO => (FileType::RegularFile, geometry.size(), 1),
            CONTROL_INO => {
                // Its owner's alone, whatever chmod did to the others.
                meta = Meta::new(0o600, &self.config, self.started);
                (FileType::RegularFile, 0, 1)
            }
            _ => (FileType::RegularFile, self.stats_bytes(ino).len() as u64, 1),
        };
        Ok(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: meta.atime,
            mtime: meta.mtime,
            ctime: meta.ctime,
            crtime: self.started,
            kind,
            perm: meta.mode,
            nlink,
            uid: meta.uid,
            gid: meta.gid,
            rdev: 0,
            blksize: geometry.block_size(),
            flags: 0,
        })
    }

    /// Looks up `name` in the root directory.
    pub fn lookup(&self, parent: u64, name: &OsStr) -> FsResult<FileAttr> {
        if parent != ROOT_INO {
            return Err(FsError::NotDir);
        }
        let ino = self.ino_of(name).ok_or_else(|| FsError::NotFound(name.to_string_lossy().into_owned()))?;
        self.getattr(ino)
    }

    /// Changes attributes of one inode. Mode, owner and times are kept in
    /// memory for this mount; the size cannot change.
    pub fn setattr(&self, ino: u64, set: SetAttr) -> FsResult<FileAttr> {
        self.check_ino(ino)?;
        if let Some(size) = set.size {
            if ino != DEVICE_INO {
                return Err(FsError::NotPermitted("changing the size of this file"));
            }
            let now = self.geometry().size();
            if size != now {
                if self.config.read_only {
                    return Err(FsError::ReadOnly("truncate"));
                }
                return Err(FsError::Resize { requested: size, size: now });
            }
        }
        if ino == CONTROL_INO {
            return Err(FsError::NotPermitted("changing the control file"));
        }
        {
            let mut all = self.meta();
            let meta = &mut all[slot(ino)];
            if let Some(mode) = set.mode {
                meta.mode = (mode & 0o7777) as u16;
            }
            if let Some(uid) = set.uid {
                meta.uid = uid;
            }
            if let Some(gid) = set.gid {
                meta.gid = gid;
            }
            if let Some(atime) = set.atime {
                meta.atime = atime;
            }
            if let Some(mtime) = set.mtime {
                meta.mtime = mtime;
            }
            meta.ctime = set.ctime.unwrap_or_else(SystemTime::now);
        }
        self.getattr(ino)
    }

    /// The root directory's entries from `offset` on.
    pub fn readdir(&self, ino: u64, offset: u64) -> FsResult<Vec<DirEntry>> {
        self.check_ino(ino)?;
        if ino != ROOT_INO {
            return Err(FsError::NotDir);
        }
        let mut all = vec![(ROOT_INO, FileType::Directory, "."), (ROOT_INO, FileType::Directory, "..")];
        all.push((DEVICE_INO, FileType::RegularFile, self.config.filename.as_str()));
        let json = self.stats_json_name();
        if let (Some(stats), Some(json)) = (&self.config.stats_filename, &json) {
            all.push((STATS_INO, FileType::RegularFile, stats.as_str()));
            all.push((STATS_JSON_INO, FileType::RegularFile, json.as_str()));
        }
        if self.grow.is_some() {
            all.push((CONTROL_INO, FileType::RegularFile, CONTROL_FILE));
        }
        Ok(all
            .into_iter()
            .enumerate()
            .skip(offset as usize)
            .map(|(i, (ino, kind, name))| DirEntry {
                ino,
                next_offset: i as u64 + 1,
                kind,
                name: name.to_owned(),
            })
            .collect())
    }

    /// Opens a file; returns the handle and the open flags for the kernel.
    pub fn open(&self, ino: u64, write: bool) -> FsResult<(u64, FopenFlags)> {
        self.check_ino(ino)?;
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        match ino {
            ROOT_INO => Err(FsError::IsDir),
            DEVICE_INO => {
                if write && self.config.read_only {
                    return Err(FsError::ReadOnly("open for writing"));
                }
                // Without FOPEN_KEEP_CACHE the kernel drops the file's cached
                // pages at each open; every write goes through this process, so
                // the pages it keeps while open are never stale.
                let flags =
                    if self.config.direct_io { FopenFlags::FOPEN_DIRECT_IO } else { FopenFlags::empty() };
                if write {
                    self.writers().insert(fh);
                }
                Ok((fh, flags))
            }
            CONTROL_INO => Err(FsError::NotPermitted("opening the control file without naming the user")),
            _ => {
                if write {
                    return Err(FsError::NotPermitted("writing the stats file"));
                }
                self.handles().insert(fh, self.stats_bytes(ino));
                Ok((fh, FopenFlags::FOPEN_DIRECT_IO))
            }
        }
    }

    /// Forgets a handle.
    pub fn release(&self, ino: u64, fh: u64) {
        match ino {
            DEVICE_INO => {
                self.writers().remove(&fh);
            }
            STATS_INO | STATS_JSON_INO => {
                self.handles().remove(&fh);
            }
            CONTROL_INO => {
                self.control_answers().remove(&fh);
            }
            _ => {}
        }
    }

    /// Reads up to `size` bytes at `offset`: short at the end, empty past it.
    pub async fn read(&self, ino: u64, fh: u64, offset: u64, size: u32) -> FsResult<Bytes> {
        self.check_ino(ino)?;
        match ino {
            ROOT_INO => Err(FsError::IsDir),
            DEVICE_INO => {
                let end = self.geometry().size();
                if offset >= end {
                    return Ok(Bytes::new());
                }
                let len = u64::from(size).min(end - offset) as usize;
                Ok(self.device.read_at(offset, len).await?)
            }
            CONTROL_INO => {
                let answer = self.control_answers().get(&fh).cloned().unwrap_or_default();
                let start = (offset.min(answer.len() as u64)) as usize;
                let end = (start + size as usize).min(answer.len());
                Ok(answer.slice(start..end))
            }
            _ => {
                let text = match self.handles().get(&fh) {
                    Some(text) => text.clone(),
                    None => self.stats_bytes(ino),
                };
                let start = (offset.min(text.len() as u64)) as usize;
                let end = (start + size as usize).min(text.len());
                Ok(text.slice(start..end))
            }
        }
    }

    /// Writes `data` at `offset`; returns how many bytes were written.
    pub async fn write(&self, ino: u64, offset: u64, data: Bytes) -> FsResult<u32> {
        self.check_ino(ino)?;
        match ino {
            ROOT_INO => return Err(FsError::IsDir),
            STATS_INO | STATS_JSON_INO => return Err(FsError::NotPermitted("writing the stats file")),
            CONTROL_INO => return Err(FsError::NotPermitted("writing the control file without a handle")),
            _ => {}
        }
        if self.config.read_only {
            return Err(FsError::ReadOnly("write"));
        }
        let size = self.geometry().size();
        if offset >= size && !data.is_empty() {
            return Err(FsError::NoSpace { what: "write", offset, size });
        }
        let len = (data.len() as u64).min(size.saturating_sub(offset)) as usize;
        self.device.write_at(offset, data.slice(..len)).await?;
        self.touch_device();
        Ok(len as u32)
    }

    /// A write changed the volume: its modification time is now.
    fn touch_device(&self) {
        let now = SystemTime::now();
        let meta = &mut self.meta()[slot(DEVICE_INO)];
        (meta.mtime, meta.ctime) = (now, now);
    }

    /// A close of handle `fh` (FUSE flush): waits until everything written
    /// before is stored when the handle was opened for writing; a read-only
    /// handle's close returns at once, even while the store is unreachable.
    pub async fn flush(&self, ino: u64, fh: u64) -> FsResult<()> {
        self.check_ino(ino)?;
        if ino == DEVICE_INO && self.writers().contains(&fh) {
            return self.sync(ino).await;
        }
        Ok(())
    }

    /// Waits until everything written before is stored (fsync, fdatasync,
    /// and [`flush`](Self::flush) of a handle opened for writing).
    pub async fn sync(&self, ino: u64) -> FsResult<()> {
        self.check_ino(ino)?;
        if ino == DEVICE_INO && !self.config.read_only {
            self.device.flush().await?;
        }
        Ok(())
    }

    /// `fallocate`: punching a hole or zeroing a range frees the blocks it
    /// covers whole and zeroes the partial ones; allocation inside the volume
    /// succeeds and does nothing; past the end without `KEEP_SIZE` it would
    /// grow the file, a [`FsError::Resize`].
    pub async fn fallocate(&self, ino: u64, offset: u64, len: u64, mode: i32) -> FsResult<()> {
        self.check_ino(ino)?;
        if ino != DEVICE_INO {
            return Err(FsError::NotPermitted("fallocate"));
        }
        if self.config.read_only {
            return Err(FsError::ReadOnly("fallocate"));
        }
        let zeroing = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_ZERO_RANGE;
        let known = zeroing | libc::FALLOC_FL_KEEP_SIZE | libc::FALLOC_FL_UNSHARE_RANGE;
        if mode & !known != 0 {
            return Err(FsError::FallocateMode(mode));
        }
        let size = self.geometry().size();
        let keep_size = mode & libc::FALLOC_FL_KEEP_SIZE != 0;
        let end = offset.saturating_add(len);
        if end > size && !keep_size {
            // Allocating past the end would grow the file: a resize.
            return Err(FsError::Resize { requested: end, size });
        }
        if mode & zeroing != 0 && offset < size {
            self.device.zero_range(offset, end.min(size) - offset).await?;
            self.touch_device();
        }
        Ok(())
    }

    /// Opens the control file for `uid`: its owner's (and root's) alone.
    pub fn open_control(&self, uid: u32) -> FsResult<(u64, FopenFlags)> {
        self.check_ino(CONTROL_INO)?;
        if uid != 0 && uid != self.config.uid {
            return Err(FsError::NotPermitted("opening another user's control file"));
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.control_answers().insert(fh, Bytes::new());
        Ok((fh, FopenFlags::FOPEN_DIRECT_IO))
    }

    /// A request written to the control file on handle `fh`: answered at
    /// once, the answer read back from the same handle. Returns the bytes
    /// taken (all of them).
    pub async fn control_write(&self, fh: u64, data: Bytes) -> FsResult<u32> {
        let grow = self.grow.clone().ok_or(FsError::NoInode(CONTROL_INO))?;
        if !self.control_answers().contains_key(&fh) {
            return Err(FsError::NotPermitted("writing the control file on a handle it did not open"));
        }
        let (answer, grew) = control::answer(&grow, &data).await;
        if grew {
            self.touch_device();
            if let Some(notifier) = self.notifier.get() {
                // Storing the volume's last byte sets the kernel's size of the
                // file at once (a loop device reads that one when `losetup -c`
                // asks); then its other attributes are asked for again.
                let size = self.geometry().size();
                let last = self.device.read_at(size - 1, 1).await?;
                let told = notifier
                    .store(INodeNo(DEVICE_INO), size - 1, &last)
                    .and_then(|()| notifier.inval_inode(INodeNo(DEVICE_INO), -1, 0));
                if let Err(e) = told {
                    tracing::warn!("could not tell the kernel the device file grew to {size} bytes: {e}");
                }
            }
        }
        self.control_answers().insert(fh, Bytes::from(answer));
        Ok(data.len() as u32)
    }

    /// Unlinking the stats file resets the counters; the file stays.
    /// Removing the device file is a [`FsError::Namespace`] error.
    pub fn unlink(&self, parent: u64, name: &OsStr) -> FsResult<()> {
        if parent != ROOT_INO {
            return Err(FsError::NotDir);
        }
        match self.ino_of(name) {
            Some(STATS_INO | STATS_JSON_INO) => {
                self.stats.reset();
                let now = SystemTime::now();
                let meta = &mut self.meta()[slot(STATS_INO)];
                (meta.mtime, meta.ctime) = (now, now);
                Ok(())
            }
            Some(_) => Err(FsError::Namespace("removing the device file")),
            None => Err(FsError::NotFound(name.to_string_lossy().into_owned())),
        }
    }

    /// Creating, renaming, linking or removing an entry (`what`): always
    /// refused, since the mount shows a fixed set of files.
    pub fn change_entries(&self, what: &'static str) -> FsResult<()> {
        Err(FsError::Namespace(what))
    }

    /// `statfs`: (total blocks, free blocks, block size) in units of the
    /// volume's block size. Free space is not tracked, so it is shown as 0.
    pub fn statfs(&self) -> (u64, u64, u32) {
        let g = self.geometry();
        (g.block_count(), 0, g.block_size())
    }
}

#[cfg(test)]
#[path = "fs_tests.rs"]
mod tests;
