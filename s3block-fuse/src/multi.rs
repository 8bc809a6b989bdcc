//! Several volumes in one mount (`--volume NAME`, `--all-volumes`).
//!
//! The root directory shows, for each volume NAME, the device file `NAME`
//! and its stats `NAME.stats` and `NAME.stats.json` (each volume's figures,
//! as a one-volume mount's `stats` shows them); then `stats` and
//! `stats.json` with every volume and the total, and one `control` file for
//! the mount. Each volume is a [`BlockFs`] of its own, reached through
//! inode numbers `8 × slot + n` (`n` its device file 2, stats 3, JSON 4;
//! slots are never reused, so an inode the kernel still knows never names
//! another volume's file). The mount's own inodes are those of a one-volume
//! mount: root 1, stats 3, its JSON twin 4, control 5.
//!
//! The control file answers, besides nothing a one-volume mount answers:
//!
//! | request | answer |
//! |---|---|
//! | `list` | `ok NAME...` |
//! | `size NAME` | `ok SIZE BLOCK_SIZE` |
//! | `resize NAME SIZE [BLOCK_SIZE]` | `ok OLD NEW` (grows it, as a one-volume mount does) |
//! | `create NAME SIZE [BLOCK_SIZE]` | `ok SIZE BLOCK_SIZE`: the volume is made at STORE/NAME with the mount's options, and its file appears |
//! | `erase NAME` | `ok BLOCKS`: refused while its device file is open; else its blocks are stored, its lock released, its objects deleted, and its file goes |
//! | `rescan` | `ok NAME...` (the volumes found in the store and now served) or `ok no new volumes`, then `; not opened: NAME (WHY), ...` for those that could not be (`--all-volumes` only) |
//!
//! With `--all-volumes` the store is also rescanned every
//! [`RESCAN_EVERY`] ([`MultiFs::rescan`]): a volume made in the store
//! while mounted (`s3block create STORE/NAME`, another host) is opened as
//! `create` opens one, and its file appears. One that cannot be opened
//! (locked by another mount, encrypted without a password) is logged once
//! with the reason, and tried again by the periodic rescans every
//! [`RETRY_NOT_OPENED`] (by `rescan` at once); the volumes served are
//! never disturbed. A served volume the store no longer lists is logged,
//! and served on.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use fuser::{FileAttr, FileType, FopenFlags, INodeNo};
use s3block_cache::frontend::{ReleaseHook, Stack, StatsSource, VolumeGrow, control::MAX_REQUEST};
use s3block_core::{BlockDevice, BlockDeviceExt, Result};

use crate::control::CONTROL_FILE;
use crate::fs::{
    BlockFs, CONTROL_INO, DEVICE_INO, DirEntry, FsConfig, FsError, FsResult, ROOT_INO, STATS_INO,
    STATS_JSON_INO, SetAttr,
};
use crate::multi_stats::Totals;

/// Opens (or, given a size and block size, creates) the volume of a name.
pub type Opener = Arc<
    dyn Fn(String, Option<(u64, Option<u64>)>) -> Pin<Box<dyn Future<Output = Result<Stack>> + Send>>
        + Send
        + Sync,
>;
/// Deletes every object of the volume of a name (unlocked by then).
pub type Eraser = Arc<dyn Fn(String) -> Pin<Box<dyn Future<Output = Result<u64>> + Send>> + Send + Sync>;
/// Lists the names of the volumes in the store (`--all-volumes`).
pub type Discoverer =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<Vec<String>>> + Send>> + Send + Sync>;

/// How often `--all-volumes` rescans the store for volumes made elsewhere.
pub const RESCAN_EVERY: Duration = Duration::from_secs(30);
/// How long the periodic rescans leave a volume that could not be opened
/// before trying it again (a `rescan` request tries it at once).
pub const RETRY_NOT_OPENED: Duration = Duration::from_secs(300);

/// Why a rescan runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rescan {
    /// The periodic one: volumes not opened before wait [`RETRY_NOT_OPENED`].
    Periodic,
    /// The control file's `rescan`: every volume not served is tried.
    Asked,
}

/// A volume of the store this rescan could not open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotOpened {
    /// Its name.
    pub name: String,
    /// Why (the open's error).
    pub why: String,
    /// Whether this rescan logged it: the first time, or when what keeps
    /// it changed (another lock holder, another error).
    pub logged: bool,
}

/// What a rescan did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rescanned {
    /// The volumes found and now served, by name.
    pub added: Vec<String>,
    /// The volumes found that this rescan tried and could not open.
    pub not_opened: Vec<NotOpened>,
    /// The served volumes the store no longer lists (served on).
    pub gone: Vec<String>,
}

impl Rescanned {
    /// The control file's answer, after `ok `.
    pub fn answer(&self) -> String {
        let mut text = if self.added.is_empty() { "no new volumes".to_owned() } else { self.added.join(" ") };
        if !self.not_opened.is_empty() {
            let each: Vec<String> = self
                .not_opened
                .iter()
                .map(|n| format!("{} ({})", n.name, n.why.replace('\n', " ")))
                .collect();
            text.push_str(&format!("; not opened: {}", each.join(", ")));
        }
        if !self.gone.is_empty() {
            text.push_str(&format!("; no longer in the store, served on: {}", self.gone.join(" ")));
        }
        text
    }
}

/// What keeps a volume from opening, for telling whether it changed: a
/// lock by its holder and time (its message also says what runs on this
/// host now, which may change while the lock does not), else the message.
fn open_state(e: &s3block_core::Error) -> String {
    match e {
        s3block_core::Error::Locked { key, host, since } => format!("{key} held by {host} since {since}"),
        other => other.to_string(),
    }
}

/// What the rescans remember between runs.
#[derive(Default)]
struct RescanState {
    /// The volumes that could not be opened: why ([`open_state`]), and
    /// when last tried.
    not_opened: BTreeMap<String, (String, Instant)>,
    /// The served volumes the store no longer lists, logged once.
    gone: BTreeSet<String>,
}

/// One volume served.
pub struct Served {
    /// Its name: its device file's.
    pub name: String,
    slot: u64,
    /// Its filesystem (device file and stats).
    pub fs: Arc<BlockFs>,
    /// Its figures.
    pub stats: Arc<dyn StatsSource>,
    grow: Arc<VolumeGrow>,
    /// Closes its cache and releases its lock (taken once).
    release: Mutex<Option<ReleaseHook>>,
    /// Open handles of its device file.
    open: AtomicU64,
}

impl Served {
    /// The volume's device (the top of its stack).
    pub fn device(&self) -> &Arc<dyn BlockDevice> {
        self.fs.device()
    }

    /// Its release hook, once.
    pub fn take_release(&self) -> Option<ReleaseHook> {
        self.release.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// The filesystem of a mount of several volumes: see the module docs.
pub struct MultiFs {
    /// Owner, mode and flags the volumes' files take.
    config: FsConfig,
    /// The name of the total stats file, if shown.
    stats_name: Option<String>,
    volumes: RwLock<BTreeMap<u64, Arc<Served>>>,
    next_slot: AtomicU64,
    opener: Opener,
    eraser: Eraser,
    totals: Totals,
    started: SystemTime,
    next_fh: AtomicU64,
    /// Answers of the control file and snapshots of the total stats, per handle.
    handles: Mutex<BTreeMap<u64, Bytes>>,
    /// Serialises create, erase, resize and rescan requests.
    changing: tokio::sync::Mutex<()>,
    notifier: OnceLock<fuser::Notifier>,
    /// Lists the store's volumes for the rescans (`--all-volumes` only).
    discover: Option<Discoverer>,
    rescans: Mutex<RescanState>,
    /// Set at unmount: no volume is added any more.
    closed: AtomicBool,
}

impl std::fmt::Debug for MultiFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MultiFs").field("volumes", &self.names()).finish()
    }
}

const SLOT_INODES: u64 = 8;

impl MultiFs {
    /// A filesystem serving the `stacks` by name; `opener` and `eraser`
    /// serve the control file's `create` and `erase`. `config` gives the
    /// owner, mode and flags of every file (its names are unused);
    /// `stats_name` names the total stats file (`None` hides every stats file).
    pub fn new(
        stacks: Vec<(String, Stack)>,
        config: FsConfig,
        stats_name: Option<String>,
        totals: Totals,
        opener: Opener,
        eraser: Eraser,
    ) -> Self {
        let fs = MultiFs {
            config,
            stats_name,
            volumes: RwLock::default(),
            next_slot: AtomicU64::new(1),
            opener,
            eraser,
            totals,
            started: SystemTime::now(),
            next_fh: AtomicU64::new(1),
            handles: Mutex::default(),
            changing: tokio::sync::Mutex::new(()),
            notifier: OnceLock::new(),
            discover: None,
            rescans: Mutex::default(),
            closed: AtomicBool::new(false),
        };
        for (name, stack) in stacks {
            fs.add(name, stack);
        }
        fs
    }

    /// With `--all-volumes`: the store is rescanned with `discover`
    /// ([`MultiFs::rescan`]); without, the control file's `rescan` is refused.
    pub fn with_discoverer(mut self, discover: Discoverer) -> Self {
        self.discover = Some(discover);
        self
    }

    /// Ends the rescans before the volumes are stored at exit: waits for
    /// one under way, and no volume is added after.
    pub async fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        drop(self.changing.lock().await);
    }

    /// The kernel session's notifier: files that appear, grow or go are
    /// told to the kernel at once.
    pub fn set_notifier(&self, notifier: fuser::Notifier) {
        let _ = self.notifier.set(notifier);
    }

    fn read_volumes(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<u64, Arc<Served>>> {
        self.volumes.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_volumes(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<u64, Arc<Served>>> {
        self.volumes.write().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_handles(&self) -> MutexGuard<'_, BTreeMap<u64, Bytes>> {
        self.handles.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The volumes served now, by name.
    pub fn served(&self) -> Vec<Arc<Served>> {
        let mut all: Vec<_> = self.read_volumes().values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// The names of the volumes served now.
    pub fn names(&self) -> Vec<String> {
        self.served().iter().map(|v| v.name.clone()).collect()
    }

    fn add(&self, name: String, stack: Stack) -> Arc<Served> {
        let slot = self.next_slot.fetch_add(1, Ordering::Relaxed);
        let config = FsConfig {
            filename: name.clone(),
            stats_filename: self.stats_name.as_ref().map(|_| format!("{name}.stats")),
            ..self.config.clone()
        };
        let fs = Arc::new(BlockFs::new(stack.device.clone(), stack.stats.clone(), config));
        let served = Arc::new(Served {
            name,
            slot,
            fs,
            stats: stack.stats,
            grow: stack.grow,
            release: Mutex::new(Some(stack.release)),
            open: AtomicU64::new(0),
        });
        self.write_volumes().insert(slot, served.clone());
        served
    }

    fn by_slot(&self, slot: u64) -> FsResult<Arc<Served>> {
        self.read_volumes().get(&slot).cloned().ok_or(FsError::NoInode(slot * SLOT_INODES))
    }

    fn by_name(&self, name: &str) -> Option<Arc<Served>> {
        self.read_volumes().values().find(|v| v.name == name).cloned()
    }

    /// The volume and its own inode behind a global inode of a volume.
    fn split(&self, ino: u64) -> FsResult<(Arc<Served>, u64)> {
        if ino < SLOT_INODES {
            return Err(FsError::NoInode(ino));
        }
        Ok((self.by_slot(ino / SLOT_INODES)?, ino % SLOT_INODES))
    }

    fn global(served: &Served, local: u64) -> u64 {
        served.slot * SLOT_INODES + local
    }

    fn with_ino(mut attr: FileAttr, ino: u64) -> FileAttr {
        attr.ino = INodeNo(ino);
        attr
    }

    fn total_json_name(&self) -> Option<String> {
        self.stats_name.as_ref().map(|n| format!("{n}.json"))
    }

    fn total_bytes(&self, ino: u64) -> Bytes {
        let served = self.served();
        Bytes::from(if ino == STATS_JSON_INO {
            self.totals.render_json(&served)
        } else {
            self.totals.render(&served)
        })
    }

    fn own_attr(&self, ino: u64) -> FsResult<FileAttr> {
        let (kind, size, perm) = match ino {
            ROOT_INO => (FileType::Directory, 0, 0o755),
            STATS_INO | STATS_JSON_INO if self.stats_name.is_some() => {
                (FileType::RegularFile, self.total_bytes(ino).len() as u64, 0o444)
            }
            CONTROL_INO => (FileType::RegularFile, 0, 0o600),
            _ => return Err(FsError::NoInode(ino)),
        };
        Ok(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: 0,
            atime: self.started,
            mtime: self.started,
            ctime: self.started,
            crtime: self.started,
            kind,
            perm,
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            uid: self.config.uid,
            gid: self.config.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    /// Attributes of an inode.
    pub fn getattr(&self, ino: u64) -> FsResult<FileAttr> {
        if ino < SLOT_INODES {
            return self.own_attr(ino);
        }
        let (served, local) = self.split(ino)?;
        Ok(Self::with_ino(served.fs.getattr(local)?, ino))
    }

    /// Looks up `name` in the root directory.
    pub fn lookup(&self, parent: u64, name: &OsStr) -> FsResult<FileAttr> {
        if parent != ROOT_INO {
            return Err(FsError::NotDir);
        }
        let text = name.to_str().ok_or_else(|| FsError::NotFound(name.to_string_lossy().into_owned()))?;
        if text == CONTROL_FILE {
            return self.own_attr(CONTROL_INO);
        }
        if self.stats_name.as_deref() == Some(text) {
            return self.own_attr(STATS_INO);
        }
        if self.total_json_name().as_deref() == Some(text) {
            return self.own_attr(STATS_JSON_INO);
        }
        for served in self.served() {
            let local = if text == served.name {
                DEVICE_INO
            } else if self.stats_name.is_some() && text == format!("{}.stats", served.name) {
                STATS_INO
            } else if self.stats_name.is_some() && text == format!("{}.stats.json", served.name) {
                STATS_JSON_INO
            } else {
                continue;
            };
            return Ok(Self::with_ino(served.fs.getattr(local)?, Self::global(&served, local)));
        }
        Err(FsError::NotFound(text.to_owned()))
    }

    /// Changes attributes: the volumes' files as a one-volume mount does;
    /// the mount's own files keep theirs.
    pub fn setattr(&self, ino: u64, set: SetAttr) -> FsResult<FileAttr> {
        if ino < SLOT_INODES {
            self.own_attr(ino)?;
            return Err(FsError::NotPermitted("changing this file"));
        }
        let (served, local) = self.split(ino)?;
        Ok(Self::with_ino(served.fs.setattr(local, set)?, ino))
    }

    /// The root directory's entries from `offset` on.
    pub fn readdir(&self, ino: u64, offset: u64) -> FsResult<Vec<DirEntry>> {
        if ino != ROOT_INO {
            self.getattr(ino)?;
            return Err(FsError::NotDir);
        }
        let mut all = vec![
            (ROOT_INO, FileType::Directory, ".".to_owned()),
            (ROOT_INO, FileType::Directory, "..".to_owned()),
        ];
        for served in self.served() {
            all.push((Self::global(&served, DEVICE_INO), FileType::RegularFile, served.name.clone()));
            if self.stats_name.is_some() {
                let (stats, json) = (format!("{}.stats", served.name), format!("{}.stats.json", served.name));
                all.push((Self::global(&served, STATS_INO), FileType::RegularFile, stats));
                all.push((Self::global(&served, STATS_JSON_INO), FileType::RegularFile, json));
            }
        }
        if let (Some(stats), Some(json)) = (self.stats_name.clone(), self.total_json_name()) {
            all.push((STATS_INO, FileType::RegularFile, stats));
            all.push((STATS_JSON_INO, FileType::RegularFile, json));
        }
        all.push((CONTROL_INO, FileType::RegularFile, CONTROL_FILE.to_owned()));
        Ok(all
            .into_iter()
            .enumerate()
            .skip(offset as usize)
            .map(|(i, (ino, kind, name))| DirEntry { ino, next_offset: i as u64 + 1, kind, name })
            .collect())
    }

    /// Opens a file.
    pub fn open(&self, ino: u64, write: bool) -> FsResult<(u64, FopenFlags)> {
        match ino {
            ROOT_INO => Err(FsError::IsDir),
            CONTROL_INO => Err(FsError::NotPermitted("opening the control file without naming the user")),
            STATS_INO | STATS_JSON_INO => {
                self.own_attr(ino)?;
                if write {
                    return Err(FsError::NotPermitted("writing the stats file"));
                }
                let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
                self.lock_handles().insert(fh, self.total_bytes(ino));
                Ok((fh, FopenFlags::FOPEN_DIRECT_IO))
            }
            _ => {
                // Counted under the read lock, so an erase (under the
                // write lock) sees every open.
                let volumes = self.read_volumes();
                let served = volumes.get(&(ino / SLOT_INODES)).ok_or(FsError::NoInode(ino))?;
                let opened = served.fs.open(ino % SLOT_INODES, write)?;
                if ino % SLOT_INODES == DEVICE_INO {
                    served.open.fetch_add(1, Ordering::SeqCst);
                }
                Ok(opened)
            }
        }
    }

    /// Opens the control file for `uid`: the mount owner's (and root's) alone.
    pub fn open_control(&self, uid: u32) -> FsResult<(u64, FopenFlags)> {
        if uid != 0 && uid != self.config.uid {
            return Err(FsError::NotPermitted("opening another user's control file"));
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.lock_handles().insert(fh, Bytes::new());
        Ok((fh, FopenFlags::FOPEN_DIRECT_IO))
    }

    /// Forgets a handle.
    pub fn release(&self, ino: u64, fh: u64) {
        if ino < SLOT_INODES {
            self.lock_handles().remove(&fh);
            return;
        }
        if let Ok((served, local)) = self.split(ino) {
            served.fs.release(local, fh);
            if local == DEVICE_INO {
                let _ = served.open.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
            }
        }
    }

    /// Reads a file.
    pub async fn read(&self, ino: u64, fh: u64, offset: u64, size: u32) -> FsResult<Bytes> {
        if ino < SLOT_INODES {
            self.own_attr(ino)?;
            if ino == ROOT_INO {
                return Err(FsError::IsDir);
            }
            let text = self.lock_handles().get(&fh).cloned();
            let text = match text {
                Some(text) => text,
                None if ino == CONTROL_INO => Bytes::new(),
                None => self.total_bytes(ino),
            };
            let start = offset.min(text.len() as u64) as usize;
            let end = (start + size as usize).min(text.len());
            return Ok(text.slice(start..end));
        }
        let (served, local) = self.split(ino)?;
        served.fs.read(local, fh, offset, size).await
    }

    /// Writes a volume's device file.
    pub async fn write(&self, ino: u64, offset: u64, data: Bytes) -> FsResult<u32> {
        if ino < SLOT_INODES {
            self.own_attr(ino)?;
            return Err(match ino {
                ROOT_INO => FsError::IsDir,
                CONTROL_INO => FsError::NotPermitted("writing the control file without a handle"),
                _ => FsError::NotPermitted("writing the stats file"),
            });
        }
        let (served, local) = self.split(ino)?;
        served.fs.write(local, offset, data).await
    }

    /// A close: a handle opened for writing waits until stored.
    pub async fn flush(&self, ino: u64, fh: u64) -> FsResult<()> {
        if ino < SLOT_INODES {
            return self.own_attr(ino).map(|_| ());
        }
        let (served, local) = self.split(ino)?;
        served.fs.flush(local, fh).await
    }

    /// fsync.
    pub async fn sync(&self, ino: u64) -> FsResult<()> {
        if ino < SLOT_INODES {
            return self.own_attr(ino).map(|_| ());
        }
        let (served, local) = self.split(ino)?;
        served.fs.sync(local).await
    }

    /// fallocate on a volume's device file.
    pub async fn fallocate(&self, ino: u64, offset: u64, len: u64, mode: i32) -> FsResult<()> {
        if ino < SLOT_INODES {
            self.own_attr(ino)?;
            return Err(FsError::NotPermitted("fallocate"));
        }
        let (served, local) = self.split(ino)?;
        served.fs.fallocate(local, offset, len, mode).await
    }

    /// Unlinking a stats file resets its counters (the total's: every
    /// volume's); a device file is erased through the control file instead.
    pub fn unlink(&self, parent: u64, name: &OsStr) -> FsResult<()> {
        if parent != ROOT_INO {
            return Err(FsError::NotDir);
        }
        let attr = self.lookup(parent, name)?;
        match attr.ino.0 {
            STATS_INO | STATS_JSON_INO => {
                for served in self.served() {
                    served.stats.reset();
                }
                Ok(())
            }
            CONTROL_INO => Err(FsError::Namespace("removing the control file")),
            ino => {
                let (served, _) = self.split(ino)?;
                if ino % SLOT_INODES == DEVICE_INO {
                    return Err(FsError::Namespace(
                        "removing a volume's file (`s3block erase MOUNTPOINT/NAME` erases the volume)",
                    ));
                }
                served.fs.unlink(ROOT_INO, name)
            }
        }
    }

    /// `statfs`: every volume's bytes, in 4 KiB units.
    pub fn statfs(&self) -> (u64, u64, u32) {
        let bytes: u64 = self.served().iter().map(|v| v.device().geometry().size()).sum();
        (bytes / 4096, 0, 4096)
    }

    /// A request written to the control file on handle `fh`.
    pub async fn control_write(&self, fh: u64, data: Bytes) -> FsResult<u32> {
        if !self.lock_handles().contains_key(&fh) {
            return Err(FsError::NotPermitted("writing the control file on a handle it did not open"));
        }
        let answer = match self.answer(&data).await {
            Ok(ok) => format!("ok {ok}\n"),
            Err(why) => format!("error {}\n", why.replace('\n', " ")),
        };
        self.lock_handles().insert(fh, Bytes::from(answer));
        Ok(data.len() as u32)
    }

    async fn answer(&self, raw: &[u8]) -> std::result::Result<String, String> {
        const EXPECTED: &str = "expected `list`, `size NAME`, `resize NAME BYTES [BLOCK_SIZE]`, `create NAME \
                                BYTES [BLOCK_SIZE]`, `erase NAME` or `rescan` (decimal bytes)";
        if raw.len() > MAX_REQUEST {
            return Err(format!("the request is {} bytes, more than {MAX_REQUEST}; {EXPECTED}", raw.len()));
        }
        let text = std::str::from_utf8(raw).map_err(|_| format!("the request is not text; {EXPECTED}"))?;
        let text = text.strip_suffix('\n').unwrap_or(text);
        let words: Vec<&str> = text.split_whitespace().collect();
        let number = |w: &str, what: &str| {
            w.parse::<u64>().map_err(|_| format!("{what} {w:?} is not a number of bytes; {EXPECTED}"))
        };
        let volume = |name: &str| {
            self.by_name(name)
                .ok_or_else(|| format!("no volume named {name:?} is mounted here (`list` names them)"))
        };
        match words.as_slice() {
            ["list"] => Ok(self.names().join(" ")),
            ["size", name] => {
                let g = volume(name)?.device().geometry();
                Ok(format!("{} {}", g.size(), g.block_size()))
            }
            ["resize", name, rest @ ..] if !rest.is_empty() && rest.len() <= 2 => {
                let served = volume(name)?;
                let _changing = self.changing.lock().await;
                let (answer, grew) = s3block_cache::frontend::control::answer(
                    &served.grow,
                    format!("resize {}", rest.join(" ")).as_bytes(),
                )
                .await;
                if grew {
                    self.tell_grown(&served).await;
                }
                match answer.trim_end().split_once(' ') {
                    Some(("ok", rest)) => Ok(rest.to_owned()),
                    Some((_, why)) => Err(why.to_owned()),
                    None => Err(answer),
                }
            }
            ["create", name, size, rest @ ..] if rest.len() <= 1 => {
                let size = number(size, "the size")?;
                let block_size = rest.first().map(|b| number(b, "the block size")).transpose()?;
                self.create(name, size, block_size).await
            }
            ["erase", name] => self.erase(name).await,
            ["rescan"] => self.rescan(Rescan::Asked).await.map(|done| done.answer()),
            _ => Err(format!("unknown request {text:?}; {EXPECTED}")),
        }
    }

    async fn create(
        &self,
        name: &str,
        size: u64,
        block_size: Option<u64>,
    ) -> std::result::Result<String, String> {
        s3block_cache::frontend::volumes::check_volume_name(name)?;
        let _changing = self.changing.lock().await;
        if self.by_name(name).is_some() {
            return Err(format!("a volume named {name:?} is mounted here already"));
        }
        let stack =
            (self.opener)(name.to_owned(), Some((size, block_size))).await.map_err(|e| e.to_string())?;
        tracing::info!("volume {name}: {}", stack.description);
        let g = stack.device.geometry();
        self.show(name, stack);
        Ok(format!("{} {}", g.size(), g.block_size()))
    }

    /// Serves a volume just opened: its file appears.
    fn show(&self, name: &str, stack: Stack) {
        self.add(name.to_owned(), stack);
        if let Some(notifier) = self.notifier.get()
            && let Err(e) = notifier.inval_entry(INodeNo(ROOT_INO), OsStr::new(name))
        {
            tracing::debug!("could not tell the kernel of the new file {name}: {e}");
        }
    }

    fn lock_rescans(&self) -> MutexGuard<'_, RescanState> {
        self.rescans.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lists the store's volumes and serves those not served yet, each
    /// opened as `create` opens one (its lock taken, its share of the
    /// budget made by shrinking the others'). A volume that cannot be
    /// opened is logged (once for one reason) and left; the periodic
    /// rescans try it again after [`RETRY_NOT_OPENED`]. A served volume the
    /// store no longer lists is logged once and served on. Refused without
    /// `--all-volumes` ([`MultiFs::with_discoverer`]).
    pub async fn rescan(&self, why: Rescan) -> std::result::Result<Rescanned, String> {
        let Some(discover) = &self.discover else {
            return Err(
                "`rescan` goes with --all-volumes; this mount serves the volumes of its --volume".into()
            );
        };
        let _changing = self.changing.lock().await;
        let mut done = Rescanned::default();
        if self.closed.load(Ordering::SeqCst) {
            return Ok(done);
        }
        let found = discover().await.map_err(|e| format!("cannot list the volumes in the store: {e}"))?;
        let served = self.names();
        {
            let mut state = self.lock_rescans();
            state.not_opened.retain(|name, _| found.contains(name));
            for name in &served {
                if found.contains(name) {
                    state.gone.remove(name);
                } else {
                    if state.gone.insert(name.clone()) {
                        tracing::warn!(
                            "volume {name}: the store no longer lists it (erased elsewhere despite its \
                             lock?); served on until the unmount"
                        );
                    }
                    done.gone.push(name.clone());
                }
            }
        }
        for name in found.iter().filter(|name| !served.contains(name)) {
            let last = self.lock_rescans().not_opened.get(name).cloned();
            if why == Rescan::Periodic
                && last.as_ref().is_some_and(|(_, tried)| tried.elapsed() < RETRY_NOT_OPENED)
            {
                continue;
            }
            match (self.opener)(name.clone(), None).await {
                Ok(stack) => {
                    self.lock_rescans().not_opened.remove(name);
                    tracing::info!("volume {name}: found in the store; {}", stack.description);
                    self.show(name, stack);
                    done.added.push(name.clone());
                }
                Err(e) => {
                    let reason = e.to_string();
                    let state = open_state(&e);
                    let logged = last.is_none_or(|(before, _)| before != state);
                    if logged {
                        tracing::warn!(
                            "volume {name}: found in the store but not served: {reason} (tried again every {} \
                             minutes, or at once by the control file's `rescan`)",
                            RETRY_NOT_OPENED.as_secs() / 60
                        );
                    } else {
                        tracing::debug!("volume {name}: still not served: {reason}");
                    }
                    self.lock_rescans().not_opened.insert(name.clone(), (state, Instant::now()));
                    done.not_opened.push(NotOpened { name: name.clone(), why: reason, logged });
                }
            }
        }
        Ok(done)
    }

    async fn erase(&self, name: &str) -> std::result::Result<String, String> {
        let _changing = self.changing.lock().await;
        let served = {
            let mut volumes = self.write_volumes();
            let Some((&slot, served)) = volumes.iter().find(|(_, v)| v.name == name) else {
                return Err(format!("no volume named {name:?} is mounted here (`list` names them)"));
            };
            let open = served.open.load(Ordering::SeqCst);
            if open > 0 {
                return Err(format!(
                    "the volume {name:?} is in use: its file is open {open} time(s) (a loop device, a program); \
                     close it (`losetup -d`) and erase again"
                ));
            }
            let served = served.clone();
            volumes.remove(&slot);
            served
        };
        self.forget_file(&served);
        // Stored, unlocked, then deleted; on a failure before the delete
        // the volume is served again, nothing lost.
        let closed = match served.device().flush().await {
            Ok(()) => match served.take_release() {
                Some(release) => release().await,
                None => Ok(()),
            },
            Err(e) => Err(e),
        };
        if let Err(e) = closed {
            if served.release.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
                self.write_volumes().insert(served.slot, served.clone());
            }
            return Err(format!(
                "the volume {name:?} could not be stored and unlocked, so nothing was erased: {e}"
            ));
        }
        let blocks = (self.eraser)(name.to_owned()).await.map_err(|e| format!("erasing {name:?}: {e}"))?;
        tracing::info!("volume {name}: erased ({blocks} blocks deleted)");
        Ok(blocks.to_string())
    }

    /// Tells the kernel a volume's files are gone.
    fn forget_file(&self, served: &Served) {
        let Some(notifier) = self.notifier.get() else { return };
        for name in
            [served.name.clone(), format!("{}.stats", served.name), format!("{}.stats.json", served.name)]
        {
            let _ = notifier.inval_entry(INodeNo(ROOT_INO), OsStr::new(&name));
        }
    }

    /// Tells the kernel a volume's device file grew (as a one-volume mount does).
    async fn tell_grown(&self, served: &Served) {
        let Some(notifier) = self.notifier.get() else { return };
        let ino = INodeNo(Self::global(served, DEVICE_INO));
        let size = served.device().geometry().size();
        let told = match served.device().read_at(size - 1, 1).await {
            Ok(last) => notifier.store(ino, size - 1, &last).and_then(|()| notifier.inval_inode(ino, -1, 0)),
            Err(e) => Err(std::io::Error::other(e.to_string())),
        };
        if let Err(e) = told {
            tracing::warn!("could not tell the kernel {} grew to {size} bytes: {e}", served.name);
        }
    }
}

#[cfg(test)]
#[path = "multi_tests.rs"]
mod tests;
