//! The disk tier of the cache: a log of segment files on the local disk,
//! as a [`BlockDevice`] layer ([`DiskCache`], whose docs describe the design).

mod config;
mod format;
mod frontend_hooks;
mod recover;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use nix::fcntl::{Flock, FlockArg};
use s3block_core::{
    Allocation, BlockDevice, BlockId, Error, Geometry, Result, StoreErrorKind, check_block_len,
    check_block_range, format_size, is_zero, push_run, zeros,
};
use serde::Serialize;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

pub use config::{DEFAULT_DISK_UPLOAD_CONCURRENCY, DiskCacheConfig, DiskCacheConfigBuilder, Durability};
pub use recover::CorruptEntry;

use crate::CacheBudget;
use crate::budget::{DiskMember, UploadSlot};
use crate::incident::{Ended, Incident, Say, span};
use config::DiskLimits;
use format::{FLAG_CLEAN, HEADER_LEN, Header, Kind, ReadFault, StateFile, encode, read_entry, write_atomic};
use recover::{
    CHECKPOINT_FILE, Checkpoint, LOCK_FILE, STATE_FILE, TRUST_FILE, list_segments, read_trust, scan,
    segment_name, trust_bytes,
};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn io_err(path: &Path, source: io::Error) -> Error {
    Error::Io { path: path.display().to_string(), source }
}

/// What volume a cache directory belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeIdentity {
    /// A string that names the volume for good (its id, or bucket and prefix).
    pub volume: String,
    /// The volume's geometry.
    pub geometry: Geometry,
}

/// The bucket's "last mount" markers, for [`DiskCache::open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marks {
    /// The marker the bucket holds now (read by the caller), if any.
    pub found: Option<String>,
    /// This mount's marker, which the caller writes to the bucket after the
    /// open and then confirms with [`DiskCache::confirm_marker`].
    pub new: String,
}

/// What [`DiskCache::open`] found in the directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub enum OpenState {
    /// Nothing usable was there: an empty tier.
    Fresh,
    /// A clean close: the index was loaded from the checkpoint.
    Warm,
    /// Not closed cleanly: the log was scanned; dirty entries are uploaded.
    Recovered,
    /// The directory was for another volume or state; its clean entries
    /// were dropped.
    Discarded {
        /// Why.
        reason: String,
    },
}

/// What [`DiskCache::open`] found and did, for the frontend to log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct OpenReport {
    /// The directory.
    pub dir: PathBuf,
    /// Fresh, warm, recovered or discarded.
    pub state: OpenState,
    /// Blocks cached.
    pub blocks: u64,
    /// Blocks with data not yet stored below (uploaded in the background).
    pub dirty_blocks: u64,
    /// Entries that failed their checks (never served).
    pub corrupt: Vec<CorruptEntry>,
    /// Blocks whose newest data was in a damaged entry not yet stored below.
    pub lost_dirty: Vec<u64>,
}

impl std::fmt::Display for OpenReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "disk cache {}: ", self.dir.display())?;
        match &self.state {
            OpenState::Fresh => write!(f, "fresh")?,
            OpenState::Warm => write!(f, "warm, {} blocks", self.blocks)?,
            OpenState::Recovered => write!(
                f,
                "recovered after a crash: {} blocks, {} dirty to upload",
                self.blocks, self.dirty_blocks
            )?,
            OpenState::Discarded { reason } => write!(f, "discarded ({reason})")?,
        }
        if !self.corrupt.is_empty() {
            write!(f, "; {} damaged entries dropped", self.corrupt.len())?;
        }
        if !self.lost_dirty.is_empty() {
            write!(f, "; dirty data LOST for blocks {:?}", self.lost_dirty)?;
        }
        Ok(())
    }
}

/// Figures of a [`DiskCache`], for the stats file.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct DiskCacheStats {
    /// Most bytes on disk.
    pub size: u64,
    /// Bytes of segment files now.
    pub used_bytes: u64,
    /// Segment files.
    pub segments: u64,
    /// Blocks cached.
    pub cached_blocks: u64,
    /// Blocks whose newest data is not yet stored below.
    pub dirty_blocks: u64,
    /// Bytes of entries not yet stored below (what losing the disk would cost).
    pub dirty_bytes: u64,
    /// Entries (versions) not yet stored below.
    pub dirty_entries: u64,
    /// Age of the oldest entry not yet stored below, in seconds.
    pub oldest_dirty_secs: Option<f64>,
    /// Reads served from disk.
    pub hits: u64,
    /// Reads that went to the store.
    pub misses: u64,
    /// Blocks fetched from the store and kept.
    pub admissions: u64,
    /// Clean entries dropped when their segment was reclaimed.
    pub evictions: u64,
    /// Entries copied forward when their segment was reclaimed.
    pub copied_forward: u64,
    /// Entries stored below.
    pub uploads: u64,
    /// Writes that went straight to the store (the local disk failed).
    pub spills: u64,
    /// Writes that waited for the dirty budget.
    pub waits: u64,
    /// Damaged entries found (at open, on read, on upload, on reclaim).
    pub corrupt_entries: u64,
    /// Bytes of RAM of the index and the dirty list.
    pub index_bytes: u64,
    /// The current flush epoch.
    pub epoch: u64,
}

/// A cache directory read without opening it ([`inspect`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct CacheDirReport {
    /// The directory.
    pub dir: PathBuf,
    /// The volume id it belongs to.
    pub volume: String,
    /// Block size of that volume.
    pub block_size: u32,
    /// Blocks of that volume.
    pub block_count: u64,
    /// The bucket marker it is valid against.
    pub marker: Option<String>,
    /// A marker a mount wrote (or was about to write) since.
    pub pending_marker: Option<String>,
    /// Closed cleanly.
    pub clean: bool,
    /// Blocks cached.
    pub blocks: u64,
    /// Blocks with data not yet in the bucket, by number.
    pub dirty_blocks: Vec<u64>,
    /// Bytes of segment files.
    pub bytes: u64,
    /// Segment files.
    pub segments: u64,
    /// Damaged entries.
    pub corrupt: Vec<CorruptEntry>,
}

/// What [`discard`] removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct DiscardReport {
    /// Files removed.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// Bytes of an entry's header in the log (an entry is the header and one block).
pub(crate) const ENTRY_HEADER: u64 = HEADER_LEN as u64;

/// Index flag: the entry is a zero block (no data on disk).
const S_ZERO: u32 = 1 << 31;
/// Index flag: read since admitted or copied forward (second chance).
const S_REF: u32 = 1 << 30;
/// Index flag: this version is not yet stored below.
const S_DIRTY: u32 = 1 << 29;
const OFF_MASK: u32 = (1 << 28) - 1;

/// Where a block's newest entry is: 8 bytes (segment, offset | flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    seg: u32,
    word: u32,
}

impl Slot {
    fn new(seg: u32, off: u32, flags: u32) -> Slot {
        Slot { seg, word: (off & OFF_MASK) | flags }
    }
    fn off(self) -> u32 {
        self.word & OFF_MASK
    }
    fn has(self, flag: u32) -> bool {
        self.word & flag != 0
    }
    fn at(self, seg: u32, off: u32) -> bool {
        self.seg == seg && self.off() == off
    }
}

/// An entry not yet stored below.
#[derive(Debug, Clone)]
struct Pending {
    block: u32,
    epoch: u64,
    seg: u32,
    off: u32,
    zero: bool,
    since: Instant,
    inflight: bool,
    attempts: u32,
    retry_at: Option<Instant>,
}

#[derive(Debug)]
struct Segment {
    file: Arc<File>,
    path: PathBuf,
    len: u64,
    synced: u64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    hits: u64,
    misses: u64,
    admissions: u64,
    evictions: u64,
    copied_forward: u64,
    uploads: u64,
    spills: u64,
    waits: u64,
    corrupt: u64,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    block_len: usize,
    limits: DiskLimits,
    index: HashMap<u32, Slot>,
    pending: BTreeMap<u64, Pending>,
    newest_pending: HashMap<u32, u64>,
    inflight_blocks: HashSet<u32>,
    /// Sequence numbers of discards and direct writes in progress: uploads
    /// of entries at or after the smallest wait.
    barriers: BTreeSet<u64>,
    /// Discards in progress: their blocks read as zeros (the store may
    /// still hold the old data until the discard reaches it).
    discarding: Vec<Range<u64>>,
    segments: BTreeMap<u32, Segment>,
    active: u32,
    next_seq: u64,
    epoch: u64,
    dirty_bytes: u64,
    last_discard_seq: u64,
    max_evicted_seq: u64,
    counters: Counters,
    disk_warned: bool,
    /// Upload failures going on, logged once per incident.
    upload_failures: Incident,
    /// fdatasync failures going on, logged once per incident.
    sync_failures: Incident,
    failures: u64,
    last_failure: Option<(u64, u32, StoreErrorKind, String)>,
    fail_next_writes: u32,
    /// The file system refused to extend the active segment.
    active_full: bool,
    closed: bool,
    stop: bool,
}

#[derive(Debug)]
struct Shared<D> {
    lower: D,
    geometry: Geometry,
    config: DiskCacheConfig,
    dir: PathBuf,
    inner: Mutex<Inner>,
    /// Uploads finished, entries added, barriers lifted.
    changed: Notify,
    /// Work for the uploader.
    work: Notify,
    lock: Mutex<Option<Flock<File>>>,
    state: Mutex<StateFile>,
    /// The budget shared with other volumes, once joined: uploads take
    /// one of its slots each.
    budget: OnceLock<Arc<CacheBudget>>,
}

///
/// The disk tier: a [`BlockDevice`] layer that keeps blocks in a log on the
/// local disk, between the RAM cache and the store.
///
/// # Where it sits
///
/// A mount with a cache directory stacks `BlockCache<DiskCache<ObjectBlockDevice>>`:
///
/// - the RAM cache's uploads land in [`DiskCache`]'s `write_block`, at
///   local-disk speed, so the RAM dirty pool drains fast; writers wait only
///   when the disk tier's own dirty budget is full;
/// - a RAM miss reads `DiskCache::read_block`: a hit on disk makes no store
///   request; a miss fetches from the store and keeps the block (admission);
/// - `BlockCache::flush` ends with `lower.flush()`, which is where the disk
///   tier applies its [`Durability`]: with `Remote` it returns once every
///   block written before it is stored below; with `Local` once it is on the
///   local disk (fdatasync), the uploads following in flush order.
///
/// # On disk
///
/// The directory holds a log of segment files (`seg-XXXXXXXX.log`, each at
/// most the segment size: a 64th of the tier, 4 MiB to 256 MiB), a state
/// file (`state`), an index checkpoint (`checkpoint`), a trust file (`trust`)
/// and a lock file (`lock`, flocked, holding the pid).
///
/// Every log entry is a 48-byte header — magic, format version, kind (data,
/// zero block, uploaded marker, discard), flags, block number, sequence
/// number, flush epoch, an extra word, data length, and a CRC-32 over header
/// and data — followed by the data (one whole block, or nothing). A log was
/// chosen over a file of fixed slots because appending is the cheapest write
/// a disk does, a crash can only tear the tail, the order of writes (which
/// `Local` durability must keep to the store) is the order of the log, and
/// older versions of a block stay readable until they are uploaded without
/// any slot bookkeeping.
///
/// The state file (binary, CRC-32) names the format version, the volume id
/// and geometry, the bucket marker the directory is valid against (and the
/// marker a mount may have written since), whether it was closed cleanly,
/// and the CRC of the checkpoint that goes with a clean close. It is
/// replaced atomically (write, fsync, rename, fsync of the directory). A
/// clean open loads the checkpoint instead of scanning the log; any other
/// open scans every segment and checks every entry's CRC.
///
/// # Rules
///
/// - **Write-ahead.** An entry is fdatasync'd before the store receives it,
///   so after a power cut the log never holds a version older than the
///   store's (which a later read would serve as current).
/// - **Dirty entries survive a crash**, in both durability modes: after
///   `kill -9` every entry written is in the page cache; at the next open the
///   scan finds the entries with no uploaded marker and uploads them again,
///   oldest first, while reads see them at once.
/// - **Epoch order** (`Local`): a flush starts a new epoch; every entry of
///   epoch N is stored below before any entry of epoch N+1 starts uploading
///   (parallel within an epoch). A block rewritten in a later epoch keeps its
///   older pending version (the log holds both); a rewrite within the epoch
///   replaces it. The bucket thus always holds the volume as of some flush.
///   `Remote` keeps the same bookkeeping but uploads in any order (one
///   version of a block at a time, oldest first).
/// - **Discard** is recorded in the log (durably), then waits until every
///   older entry is stored, then discards below, holding newer uploads back
///   and reading its blocks as zeros meanwhile: its order with writes is
///   never lost, at the cost of a wait
///   for uploads (discards are rare next to writes, and recording a range
///   needs one entry however large it is, where a zero entry per block would
///   not bound the log).
/// - **Corrupt entries are never served**: every read from disk checks the
///   CRC; a bad clean entry is forgotten and fetched again, a bad dirty one
///   is an error naming the block (and is reported at open).
/// - **Eviction** reclaims the oldest segment: entries still to upload are
///   copied forward (keeping their sequence number and epoch), clean entries
///   read since they were admitted get a second chance (copied forward once,
///   their referenced bit cleared), the rest is dropped. A sequential scan
///   reads each block once, so it never sets the bit and cannot push out a
///   working set that is read again.
/// - **A full or failing local disk**: a write the log cannot take waits
///   until every older entry is stored, records in the trust file that older
///   entries are not to be used after a crash, and goes straight to the
///   store. Nothing is lost; the first failure is logged.
///
/// # Memory
///
/// The index is a hash map from block number to an 8-byte location
/// (segment; offset and flags), 12 bytes a bucket plus a control byte,
/// preallocated for the most blocks the tier can hold so it never grows (a
/// growing hash map holds two tables at once). The unit test
/// `index_bytes_per_block` measures 23.0 bytes per block for a full 2 GiB
/// tier of 4K blocks (518,215 blocks of 4096 + 48 bytes, 11.4 MiB), and
/// 22.8 with 64K blocks. Entries still to upload cost about 100 bytes more
/// each, bounded by the dirty budget; a recovery scan holds about 40 bytes
/// per log entry while it runs. [`DiskCacheStats::index_bytes`] reports the
/// total. A tier grown at run time ([`DiskCache::resize`]) past the size it
/// was opened with grows its index as it fills.
///
/// # Size at run time
///
/// [`DiskCache::resize`] changes the size (a tier in a
/// [`CacheBudget`] is resized by it as volumes join and leave): the segment
/// size stays, the dirty limit changes at once, and a smaller tier
/// reclaims its oldest segments once its dirty bytes fit. A directory
/// opened with a smaller size than it holds is reclaimed down at open, as
/// far as its entries still to upload allow, the rest at the next rolls.
#[derive(Debug)]
pub struct DiskCache<D: BlockDevice + 'static> {
    shared: Arc<Shared<D>>,
    uploader: Mutex<Option<JoinHandle<()>>>,
}

/// How long a failed upload waits before it is tried again (doubling).
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(10);

impl Inner {
    fn closed_err(&self) -> Error {
        io_err(&self.dir, io::Error::other("the disk cache is closed"))
    }

    fn entry_bytes(&self, zero: bool) -> u64 {
        HEADER_LEN as u64 + if zero { 0 } else { self.block_len as u64 }
    }

    /// Appends an entry to the active segment (rolling to a new one when it
    /// is full) and returns where it went.
    fn append(&mut self, header: &Header, data: &[u8]) -> io::Result<(u32, u32)> {
        if self.fail_next_writes > 0 {
            self.fail_next_writes -= 1;
            return Err(io::Error::from_raw_os_error(libc_enospc()));
        }
        let need = (HEADER_LEN + data.len()) as u64;
        let full = self.active_full
            || self.segments.get(&self.active).is_none_or(|s| s.len + need > self.limits.segment_size);
        if full {
            self.roll()?;
        }
        let active = self.active;
        let seg = self.segments.get_mut(&active).ok_or_else(|| io::Error::other("no active segment"))?;
        let off = seg.len;
        let bytes = encode(header, data);
        if let Err(e) = seg.file.write_all_at(&bytes, off) {
            let _ = seg.file.set_len(off);
            if e.raw_os_error() == Some(libc_enospc()) {
                self.disk_full();
            }
            return Err(e);
        }
        seg.len += need;
        Ok((active, off as u32))
    }

    /// The file system is full before the tier is: keep to the segments
    /// there are (less one), so the next write rolls to a new segment and
    /// reclaims the oldest, freeing its space.
    fn disk_full(&mut self) {
        let n = self.segments.len().saturating_sub(1).max(3);
        if n < self.limits.max_segments {
            self.limits.max_segments = n;
            self.limits.dirty_limit = self.limits.dirty_limit.min((n as u64 - 2) * self.limits.segment_size);
            tracing::warn!(dir = %self.dir.display(), segments = n,
                "disk cache: the file system is full; the tier shrinks to the segments it has");
        }
        self.active_full = true;
    }

    /// Starts a new segment, reclaiming the oldest ones while there are too many.
    fn roll(&mut self) -> io::Result<()> {
        self.start_segment()?;
        while self.segments.len() > self.limits.max_segments {
            let Some(oldest) = self.segments.keys().next().copied() else { break };
            if oldest == self.active {
                break;
            }
            self.reclaim(oldest)?;
        }
        Ok(())
    }

    /// Starts a new, empty active segment (reclaiming nothing).
    fn start_segment(&mut self) -> io::Result<()> {
        let id = self.active.checked_add(1).ok_or_else(|| io::Error::other("segment numbers exhausted"))?;
        let path = self.dir.join(segment_name(id));
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path)?;
        File::open(&self.dir)?.sync_all()?;
        self.segments.insert(id, Segment { file: Arc::new(file), path, len: 0, synced: 0 });
        self.active = id;
        self.active_full = false;
        Ok(())
    }

    /// Whether the log keeps to its limits: no more segments than
    /// `max_segments`, and no more bytes than they may hold (segments of a
    /// larger size, written before the tier was opened smaller, count by
    /// their bytes).
    fn fits(&self) -> bool {
        self.segments.len() <= self.limits.max_segments
            && self.used_bytes() <= self.limits.max_segments as u64 * self.limits.segment_size
    }

    /// Reclaims the oldest segments now, until the log keeps to its limits
    /// (after the tier was made smaller, or opened smaller than the
    /// directory holds). Entries still to upload are copied forward into
    /// new segments, which are not reclaimed again. Returns whether the log
    /// fits; when it does not (the entries still to upload fill it), the
    /// next roll tries again, and that is logged.
    fn shrink(&mut self) -> bool {
        if self.fits() {
            return true;
        }
        if self.dirty_bytes > self.limits.dirty_limit {
            // Copying entries still to upload forward would not make room:
            // the rolls reclaim once uploads have stored them.
            tracing::warn!(
                dir = %self.dir.display(),
                used = self.used_bytes(),
                size = self.limits.size,
                dirty = self.dirty_bytes,
                "disk cache: holds more than its size, most of it still to upload; reclaimed as uploads go on"
            );
            return false;
        }
        let started = self.segments.get(&self.active).is_none_or(|a| a.len > 0);
        if started && let Err(e) = self.start_segment() {
            tracing::warn!(dir = %self.dir.display(), error = %e, "disk cache: cannot start a segment to shrink the tier");
            return false;
        }
        let first_new = self.active;
        while !self.fits() {
            let Some(oldest) = self.segments.keys().next().copied().filter(|&id| id < first_new) else {
                break;
            };
            match self.reclaim(oldest) {
                Ok(()) => {}
                // The segment copied into is full: copy on into a new one.
                Err(e) if e.kind() == io::ErrorKind::StorageFull => {
                    if let Err(e) = self.start_segment() {
                        tracing::warn!(dir = %self.dir.display(), error = %e, "disk cache: cannot start a segment to shrink the tier");
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(dir = %self.dir.display(), error = %e, "disk cache: cannot reclaim a segment to shrink the tier");
                    break;
                }
            }
        }
        let fits = self.fits();
        if !fits {
            tracing::warn!(
                dir = %self.dir.display(),
                used = self.used_bytes(),
                size = self.limits.size,
                dirty = self.dirty_bytes,
                "disk cache: could not reclaim down to its size now (entries still to upload fill it); \
                 the next segment change reclaims again"
            );
        }
        fits
    }

    /// Reclaims segment `id`: copies forward what must or may stay, drops
    /// the rest, deletes the file.
    fn reclaim(&mut self, id: u32) -> io::Result<()> {
        let Some(seg) = self.segments.get(&id) else { return Ok(()) };
        let (file, len, path) = (Arc::clone(&seg.file), seg.len, seg.path.clone());
        let mut off = 0u64;
        let mut head = [0u8; HEADER_LEN];
        let mut copied = false;
        while off + HEADER_LEN as u64 <= len {
            file.read_exact_at(&mut head, off)?;
            let Some(h) = format::decode_header(&head, self.block_len) else { break };
            let here = off as u32;
            off += h.entry_len();
            if !matches!(h.kind, Kind::Data | Kind::Zero) {
                continue;
            }
            let Ok(block) = u32::try_from(h.block) else { continue };
            let pending_here = self.pending.get(&h.seq).is_some_and(|p| p.seg == id && p.off == here);
            let slot = self.index.get(&block).copied().filter(|s| s.at(id, here));
            let keep_clean = slot.is_some_and(|s| s.has(S_REF))
                && !pending_here
                && self
                    .segments
                    .get(&self.active)
                    .is_some_and(|a| a.len + h.entry_len() <= self.limits.segment_size / 2);
            if !pending_here && !keep_clean {
                if slot.is_some() {
                    self.index.remove(&block);
                    self.counters.evictions += 1;
                    self.max_evicted_seq = self.max_evicted_seq.max(h.seq);
                }
                continue;
            }
            let data = match read_entry(&file, u64::from(here), self.block_len, h.block) {
                Ok((_, data)) => data,
                Err(fault) => {
                    self.counters.corrupt += 1;
                    tracing::error!(dir = %self.dir.display(), block, %fault, "disk cache: damaged entry found while reclaiming its segment");
                    if slot.is_some() {
                        self.index.remove(&block);
                    }
                    if pending_here {
                        self.drop_pending(h.seq);
                    }
                    continue;
                }
            };
            let flags = if pending_here { h.flags } else { h.flags | FLAG_CLEAN };
            let copy = Header::new(h.kind, flags, h.block, h.seq, h.epoch, h.extra, h.len);
            let need = h.entry_len();
            if self.segments.get(&self.active).is_none_or(|a| a.len + need > self.limits.segment_size) {
                return Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    "disk cache: no room to copy entries still to upload forward",
                ));
            }
            let (nseg, noff) = self.append(&copy, &data)?;
            copied = true;
            self.counters.copied_forward += 1;
            if pending_here && let Some(p) = self.pending.get_mut(&h.seq) {
                p.seg = nseg;
                p.off = noff;
            }
            if let Some(s) = slot {
                let flags = s.word & (S_ZERO | S_DIRTY);
                self.index.insert(block, Slot::new(nseg, noff, flags));
            }
        }
        if copied && let Some(a) = self.segments.get_mut(&self.active) {
            a.file.sync_data()?;
            a.synced = a.len;
        }
        self.segments.remove(&id);
        if let Err(e) = fs::remove_file(&path) {
            tracing::warn!(file = %path.display(), error = %e, "disk cache: could not delete a reclaimed segment");
        }
        Ok(())
    }

    fn drop_pending(&mut self, seq: u64) {
        if let Some(p) = self.pending.remove(&seq) {
            self.dirty_bytes -= self.entry_bytes(p.zero);
            if self.newest_pending.get(&p.block) == Some(&seq) {
                self.newest_pending.remove(&p.block);
                if let Some(s) = self.index.get_mut(&p.block) {
                    s.word &= !S_DIRTY;
                }
            }
        }
    }

    /// Records a new version of `block` (its entry already appended).
    fn add_pending(&mut self, block: u32, seq: u64, seg: u32, off: u32, zero: bool) {
        let epoch = self.epoch;
        if let Some(old) = self.newest_pending.get(&block).copied()
            && self.pending.get(&old).is_some_and(|p| p.epoch == epoch && !p.inflight)
        {
            // A rewrite within the epoch replaces the older version.
            let since = self.pending.get(&old).map(|p| p.since);
            self.drop_pending(old);
            self.insert_pending(block, seq, seg, off, zero, since);
        } else {
            self.insert_pending(block, seq, seg, off, zero, None);
        }
        let flags = S_DIRTY | if zero { S_ZERO } else { 0 };
        self.index.insert(block, Slot::new(seg, off, flags));
    }

    fn insert_pending(
        &mut self,
        block: u32,
        seq: u64,
        seg: u32,
        off: u32,
        zero: bool,
        since: Option<Instant>,
    ) {
        let p = Pending {
            block,
            epoch: self.epoch,
            seg,
            off,
            zero,
            since: since.unwrap_or_else(Instant::now),
            inflight: false,
            attempts: 0,
            retry_at: None,
        };
        self.pending.insert(seq, p);
        self.newest_pending.insert(block, seq);
        self.dirty_bytes += self.entry_bytes(zero);
    }

    fn index_bytes(&self) -> u64 {
        let newest = std::mem::size_of::<(u32, u64)>() as u64 + 1;
        // A B-tree entry, with its share of node overhead.
        let pending = std::mem::size_of::<(u64, Pending)>() as u64 + 16;
        index_map_bytes(&self.index)
            + self.newest_pending.capacity() as u64 * newest
            + self.pending.len() as u64 * pending
            + self.segments.len() as u64 * (std::mem::size_of::<Segment>() as u64 + 64)
    }

    fn used_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.len).sum()
    }

    fn first_pending_epoch(&self) -> Option<u64> {
        self.pending.values().next().map(|p| p.epoch)
    }
}

/// The index of a tier of `size` bytes, preallocated for the most blocks it
/// can hold, so it never grows (a growing hash map holds two tables at once).
fn new_index(size: u64, block_len: usize) -> HashMap<u32, Slot> {
    HashMap::with_capacity((size / (block_len as u64 + HEADER_LEN as u64)) as usize)
}

/// RAM of an index: its buckets (key, slot, one control byte each).
fn index_map_bytes(index: &HashMap<u32, Slot>) -> u64 {
    index.capacity() as u64 * (std::mem::size_of::<(u32, Slot)>() as u64 + 1)
}

fn libc_enospc() -> i32 {
    nix::errno::Errno::ENOSPC as i32
}

/// One upload chosen by the uploader.
struct Pick {
    seq: u64,
    block: u32,
    zero: bool,
    file: Arc<File>,
    off: u32,
    /// fdatasync the segment up to this length first (write-ahead).
    sync_to: Option<(u32, u64)>,
    /// The budget's upload slot, when the tier is in one.
    slot: Option<UploadSlot>,
}

impl<D: BlockDevice + 'static> Shared<D> {
    fn inner(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// Chooses the entries to upload now; returns them and when to look
    /// again for entries waiting for a retry.
    fn pick(&self, room: usize) -> (Vec<Pick>, Option<Instant>) {
        let mut g = self.inner();
        let now = Instant::now();
        let local = self.config.durability() == Durability::Local;
        let barrier = g.barriers.iter().next().copied().unwrap_or(u64::MAX);
        let min_epoch = g.first_pending_epoch();
        let mut seen: HashSet<u32> = HashSet::new();
        let mut chosen = Vec::new();
        let mut slots = Vec::new();
        let mut wake: Option<Instant> = None;
        let budget = self.budget.get();
        for (&seq, p) in &g.pending {
            if chosen.len() >= room || seq >= barrier {
                break;
            }
            if local && Some(p.epoch) != min_epoch {
                break;
            }
            let first_of_block = seen.insert(p.block);
            if p.inflight || !first_of_block || g.inflight_blocks.contains(&p.block) {
                continue;
            }
            if let Some(t) = p.retry_at
                && t > now
            {
                wake = Some(wake.map_or(t, |w| w.min(t)));
                continue;
            }
            if let Some(budget) = budget {
                // None free: a slot freed by anyone wakes this uploader.
                let Some(slot) = budget.try_slot(g.inflight_blocks.len() + chosen.len()) else { break };
                slots.push(slot);
            }
            chosen.push(seq);
        }
        let mut picks = Vec::new();
        let mut slots = slots.into_iter();
        for seq in chosen {
            let slot = slots.next();
            let Some(p) = g.pending.get(&seq).cloned() else { continue };
            let Some(seg) = g.segments.get(&p.seg) else { continue };
            let end = u64::from(p.off) + g.entry_bytes(p.zero);
            let sync_to = (seg.synced < end).then_some((p.seg, seg.len));
            let file = Arc::clone(&seg.file);
            if let Some(pm) = g.pending.get_mut(&seq) {
                pm.inflight = true;
            }
            g.inflight_blocks.insert(p.block);
            picks.push(Pick { seq, block: p.block, zero: p.zero, file, off: p.off, sync_to, slot });
        }
        (picks, wake)
    }

    async fn upload(self: Arc<Self>, pick: Pick) {
        let bs = self.geometry.block_len();
        let data = if pick.zero {
            Ok(zeros(bs))
        } else {
            let f = Arc::clone(&pick.file);
            let (off, block) = (u64::from(pick.off), u64::from(pick.block));
            match tokio::task::spawn_blocking(move || read_entry(&f, off, bs, block)).await {
                Ok(Ok((_, data))) => Ok(Bytes::from(data)),
                Ok(Err(fault)) => Err(fault),
                Err(e) => Err(ReadFault::Io(io::Error::other(e.to_string()))),
            }
        };
        let data = match data {
            Ok(d) => d,
            Err(fault) => {
                let mut g = self.inner();
                g.counters.corrupt += 1;
                tracing::error!(dir = %self.dir.display(), block = pick.block, %fault,
                    "disk cache: a dirty entry is damaged on disk and cannot be uploaded; its data is lost");
                g.inflight_blocks.remove(&pick.block);
                g.drop_pending(pick.seq);
                drop(g);
                self.changed.notify_waiters();
                self.work.notify_one();
                return;
            }
        };
        let result = self.lower.write_block(BlockId(pick.block), data).await;
        // The slot goes back (waking the budget's members) before the lock.
        drop(pick.slot);
        let mut g = self.inner();
        g.inflight_blocks.remove(&pick.block);
        match result {
            Ok(()) => {
                g.counters.uploads += 1;
                if let Some(Ended { total, lasted }) =
                    g.upload_failures.succeeded(tokio::time::Instant::now())
                {
                    tracing::info!(
                        "disk cache: uploads succeed again, after {total} failures over {}",
                        span(lasted)
                    );
                }
                g.drop_pending(pick.seq);
                // Best effort: without the marker a crash uploads it again.
                let (seq, epoch) = (g.next_seq, g.epoch);
                g.next_seq += 1;
                let marker = Header::new(Kind::Uploaded, 0, u64::from(pick.block), seq, epoch, pick.seq, 0);
                if !g.closed {
                    let _ = g.append(&marker, &[]);
                }
            }
            Err(e) => {
                g.failures += 1;
                let epoch = g.pending.get(&pick.seq).map_or(0, |p| p.epoch);
                let kind = e.store_kind().unwrap_or(StoreErrorKind::Transient);
                g.last_failure = Some((epoch, pick.block, kind, e.to_string()));
                if let Some(p) = g.pending.get_mut(&pick.seq) {
                    p.inflight = false;
                    p.attempts += 1;
                    let delay = RETRY_FIRST.saturating_mul(1 << p.attempts.min(16)).min(RETRY_MAX);
                    p.retry_at = Some(Instant::now() + delay);
                }
                match g.upload_failures.failed(tokio::time::Instant::now()) {
                    Say::First => tracing::warn!(
                        block = pick.block,
                        error = %e,
                        "disk cache: upload failed; the block stays in the disk cache and is retried (further \
                         upload failures are counted and said once a minute)"
                    ),
                    Say::Summary { count, total, lasted } => tracing::warn!(
                        "disk cache: uploads keep failing: {count} more since the last line, {total} in {}; the \
                         last: {e}; the blocks stay in the disk cache and are retried",
                        span(lasted)
                    ),
                    Say::Counted => {
                        tracing::debug!(block = pick.block, error = %e, "disk cache: upload failed; will retry")
                    }
                }
            }
        }
        drop(g);
        self.changed.notify_waiters();
        self.work.notify_one();
    }

    /// The limits of this tier at `size` bytes, `dirty_limit` dirty, with
    /// the segment size it was opened with.
    fn limits_at(&self, size: u64, dirty_limit: Option<u64>) -> Result<DiskLimits> {
        let seg = self.inner().limits.segment_size;
        self.config.resized(size, dirty_limit).limits_with(&self.geometry, seg)
    }

    /// Sets `new`'s size and dirty limit now, and its segments when not
    /// fewer; true when the tier shrinks (its segments still to reclaim).
    fn apply_limits(&self, new: DiskLimits) -> bool {
        let shrinking = {
            let mut g = self.inner();
            g.limits.size = new.size;
            g.limits.dirty_limit = new.dirty_limit;
            let shrinking = new.max_segments < g.limits.max_segments;
            if !shrinking {
                g.limits.max_segments = new.max_segments;
            }
            shrinking
        };
        // Writers see a raised dirty limit; the uploader looks again.
        self.changed.notify_waiters();
        self.work.notify_one();
        shrinking
    }

    /// See [`DiskCache::resize`].
    async fn resize(&self, size: u64, dirty_limit: Option<u64>) -> Result<()> {
        let new = self.limits_at(size, dirty_limit)?;
        if !self.apply_limits(new) {
            return Ok(());
        }
        // Uploads bring the dirty bytes under the new limit (failed ones
        // are retried as usual: an unreachable store makes this wait).
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let g = self.inner();
                if g.closed {
                    return Ok(());
                }
                if g.dirty_bytes <= new.dirty_limit {
                    break;
                }
            }
            self.work.notify_one();
            changed.await;
        }
        let mut g = self.inner();
        if g.closed {
            return Ok(());
        }
        g.limits.max_segments = new.max_segments;
        g.shrink();
        Ok(())
    }

    /// Logs a failed fdatasync (`when`: what it was for), once per incident.
    fn sync_failed(&self, e: &io::Error, when: &str) {
        let dir = self.dir.display();
        match self.inner().sync_failures.failed(tokio::time::Instant::now()) {
            Say::First => tracing::warn!(
                "disk cache: fdatasync failed in {dir} {when}: {e} (further fdatasync failures are counted and \
                 said once a minute)"
            ),
            Say::Summary { count, total, lasted } => tracing::warn!(
                "disk cache: fdatasync keeps failing in {dir}: {count} more since the last line, {total} in {}; \
                 the last: {e}",
                span(lasted)
            ),
            Say::Counted => tracing::debug!("disk cache: fdatasync failed in {dir} {when}: {e}"),
        }
    }

    /// A fdatasync succeeded: a run of failures, if any, is over.
    fn sync_succeeded(&self) {
        if let Some(Ended { total, lasted }) =
            self.inner().sync_failures.succeeded(tokio::time::Instant::now())
        {
            tracing::info!(
                "disk cache: fdatasync succeeds again in {}, after {total} failures over {}",
                self.dir.display(),
                span(lasted)
            );
        }
    }

    /// The write-ahead rule: the entries about to be uploaded are made
    /// durable first, one fdatasync per segment for the whole batch.
    async fn sync_before_upload(&self, picks: &[Pick]) {
        let mut segs: Vec<(u32, u64, Arc<File>)> = Vec::new();
        for p in picks {
            if let Some((seg, len)) = p.sync_to {
                match segs.iter_mut().find(|s| s.0 == seg) {
                    Some(s) => s.1 = s.1.max(len),
                    None => segs.push((seg, len, Arc::clone(&p.file))),
                }
            }
        }
        for (seg, len, file) in segs {
            match tokio::task::spawn_blocking(move || file.sync_data()).await {
                Ok(Ok(())) => {
                    if let Some(s) = self.inner().segments.get_mut(&seg) {
                        s.synced = s.synced.max(len);
                    }
                    self.sync_succeeded();
                }
                Ok(Err(e)) => self.sync_failed(&e, "before an upload"),
                Err(_) => {}
            }
        }
    }

    async fn run_uploader(self: Arc<Self>) {
        let mut jobs = tokio::task::JoinSet::new();
        let concurrency = self.config.upload_concurrency();
        loop {
            let work = self.work.notified();
            tokio::pin!(work);
            work.as_mut().enable();
            let (picks, wake) = self.pick(concurrency.saturating_sub(jobs.len()));
            self.sync_before_upload(&picks).await;
            for p in picks {
                jobs.spawn(Arc::clone(&self).upload(p));
            }
            if self.inner().stop && jobs.is_empty() {
                return;
            }
            let sleep =
                wake.map_or(Duration::from_secs(3600), |w| w.saturating_duration_since(Instant::now()));
            tokio::select! {
                _ = &mut work => {}
                Some(_) = jobs.join_next(), if !jobs.is_empty() => {}
                _ = tokio::time::sleep(sleep) => {}
            }
        }
    }

    /// Waits until `done` holds, returning the upload failure that stops it
    /// (an entry for which `counts` holds failed since the wait began).
    async fn wait_uploads(
        &self,
        done: impl Fn(&Inner) -> bool,
        counts: impl Fn(&Pending) -> bool,
    ) -> Result<()> {
        let start_failures = {
            let mut g = self.inner();
            // Failed uploads the wait depends on are tried at once.
            for p in g.pending.values_mut() {
                if counts(p) {
                    p.retry_at = None;
                }
            }
            g.failures
        };
        self.work.notify_one();
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let g = self.inner();
                if done(&g) {
                    return Ok(());
                }
                if g.closed && g.stop {
                    return Err(g.closed_err());
                }
                if g.failures > start_failures
                    && let Some((_, block, kind, msg)) = &g.last_failure
                {
                    let failing: Vec<&Pending> =
                        g.pending.values().filter(|p| counts(p) && p.attempts > 0).collect();
                    if let Some(first) = failing.first() {
                        return Err(Error::WriteBack {
                            count: failing.len(),
                            first: BlockId(first.block),
                            source: Box::new(Error::Store {
                                block: Some(BlockId(*block)),
                                key: format!("{block:08x}"),
                                kind: *kind,
                                source: msg.clone().into(),
                            }),
                        });
                    }
                }
            }
            changed.await;
        }
    }

    /// Waits until every entry up to and including epoch `epoch` is stored.
    async fn wait_epoch(&self, epoch: u64) -> Result<()> {
        self.wait_uploads(|g| g.first_pending_epoch().is_none_or(|e| e > epoch), |p| p.epoch <= epoch).await
    }

    /// Waits until every entry older than `seq` is stored.
    async fn wait_before(&self, seq: u64) -> Result<()> {
        self.wait_uploads(|g| g.pending.keys().next().is_none_or(|s| *s >= seq), |_| true).await
    }

    /// Marks entries older than `seq` as not to be used after a crash.
    fn write_trust(&self, seq: u64) {
        let path = self.dir.join(TRUST_FILE);
        let r = OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.write_all_at(&trust_bytes(seq), 0).and_then(|()| f.sync_data()));
        if let Err(e) = r {
            tracing::error!(file = %path.display(), error = %e,
                "disk cache: could not record a write past the log; after a crash, discard the cache directory");
        }
    }

    /// Writes `block` straight to the store, the log having failed.
    async fn write_direct(&self, block: u32, data: Bytes, cause: io::Error) -> Result<()> {
        let seq = {
            let mut g = self.inner();
            if !g.disk_warned {
                g.disk_warned = true;
                tracing::warn!(dir = %self.dir.display(), error = %cause,
                    "disk cache: cannot write to the cache directory; writes go straight to the store until it can");
            }
            g.counters.spills += 1;
            let seq = g.next_seq;
            g.next_seq += 1;
            g.barriers.insert(seq);
            seq
        };
        let r = async {
            self.wait_before(seq).await?;
            self.write_trust(seq);
            self.lower.write_block(BlockId(block), data).await
        }
        .await;
        let mut g = self.inner();
        g.barriers.remove(&seq);
        if r.is_ok() && g.newest_pending.get(&block).is_none_or(|s| *s < seq) {
            g.index.remove(&block);
        }
        drop(g);
        self.work.notify_one();
        r
    }

    async fn put(&self, block: BlockId, data: Bytes) -> Result<()> {
        let zero = is_zero(&data);
        // The dirty budget.
        let mut waited = false;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut g = self.inner();
                if g.closed {
                    return Err(g.closed_err());
                }
                if g.dirty_bytes + g.entry_bytes(zero) <= g.limits.dirty_limit || g.pending.is_empty() {
                    break;
                }
                if !waited {
                    g.counters.waits += 1;
                    waited = true;
                }
            }
            changed.await;
        }
        let appended = {
            let mut g = self.inner();
            let (seq, epoch) = (g.next_seq, g.epoch);
            g.next_seq += 1;
            let (kind, body): (Kind, &[u8]) = if zero { (Kind::Zero, &[]) } else { (Kind::Data, &data) };
            let header = Header::new(kind, 0, u64::from(block.0), seq, epoch, 0, body.len() as u32);
            match g.append(&header, body) {
                Ok((seg, off)) => {
                    g.add_pending(block.0, seq, seg, off, zero);
                    Ok(())
                }
                Err(e) => Err(e),
            }
        };
        match appended {
            Ok(()) => {
                self.work.notify_one();
                // A rewrite may have replaced an entry a flush, a discard or
                // a direct write was waiting for.
                self.changed.notify_waiters();
                Ok(())
            }
            Err(e) => self.write_direct(block.0, data, e).await,
        }
    }

    async fn get(&self, block: BlockId) -> Result<Bytes> {
        let bs = self.geometry.block_len();
        let found = {
            let mut g = self.inner();
            if g.closed {
                return Err(g.closed_err());
            }
            match g.index.get_mut(&block.0) {
                Some(slot) => {
                    slot.word |= S_REF;
                    let s = *slot;
                    if s.has(S_ZERO) {
                        g.counters.hits += 1;
                        return Ok(zeros(bs));
                    }
                    g.segments.get(&s.seg).map(|seg| (s, Arc::clone(&seg.file), seg.path.clone()))
                }
                None => None,
            }
        };
        if let Some((slot, file, path)) = found {
            let off = u64::from(slot.off());
            let b = u64::from(block.0);
            let read = tokio::task::spawn_blocking(move || read_entry(&file, off, bs, b))
                .await
                .unwrap_or_else(|e| Err(ReadFault::Io(io::Error::other(e.to_string()))));
            match read {
                Ok((_, data)) => {
                    self.inner().counters.hits += 1;
                    return Ok(Bytes::from(data));
                }
                Err(fault) => {
                    let mut g = self.inner();
                    g.counters.corrupt += 1;
                    let current = g.index.get(&block.0).copied() == Some(slot);
                    if slot.has(S_DIRTY) && current {
                        tracing::error!(file = %path.display(), offset = off, block = block.0, %fault,
                            "disk cache: a dirty entry cannot be read back");
                        return Err(Error::Corrupt {
                            block,
                            key: format!("{} offset {off}", path.display()),
                            reason: format!("the disk cache entry is damaged and not yet uploaded: {fault}"),
                        });
                    }
                    tracing::warn!(file = %path.display(), offset = off, block = block.0, %fault,
                        "disk cache: damaged clean entry dropped; reading the store");
                    if current {
                        g.index.remove(&block.0);
                    }
                }
            }
        }
        // A miss: fetch, then keep it unless the block changed meanwhile.
        let start_seq = {
            let mut g = self.inner();
            if g.discarding.iter().any(|d| d.contains(&u64::from(block.0))) && !g.index.contains_key(&block.0)
            {
                // Being discarded: zeros, whatever the store still holds.
                g.counters.hits += 1;
                return Ok(zeros(bs));
            }
            g.counters.misses += 1;
            g.next_seq
        };
        let data = self.lower.read_block(block).await?;
        let mut g = self.inner();
        if !g.closed
            && !g.index.contains_key(&block.0)
            && g.last_discard_seq < start_seq
            && g.max_evicted_seq < start_seq
            && !g.newest_pending.contains_key(&block.0)
        {
            let zero = is_zero(&data);
            let (seq, epoch) = (g.next_seq, g.epoch);
            g.next_seq += 1;
            let (kind, body): (Kind, &[u8]) = if zero { (Kind::Zero, &[]) } else { (Kind::Data, &data) };
            let header = Header::new(kind, FLAG_CLEAN, u64::from(block.0), seq, epoch, 0, body.len() as u32);
            if let Ok((seg, off)) = g.append(&header, body) {
                g.counters.admissions += 1;
                g.index.insert(block.0, Slot::new(seg, off, if zero { S_ZERO } else { 0 }));
            }
            drop(g);
            // Reclaiming may have dropped a damaged entry someone waited for.
            self.changed.notify_waiters();
        }
        Ok(data)
    }

    async fn discard_range(&self, blocks: Range<u64>) -> Result<()> {
        let kept = blocks.clone();
        let (seq, sync) = {
            let mut g = self.inner();
            if g.closed {
                return Err(g.closed_err());
            }
            let (seq, epoch) = (g.next_seq, g.epoch);
            g.next_seq += 1;
            let header = Header::new(Kind::Discard, 0, blocks.start, seq, epoch, blocks.end, 0);
            let sync = match g.append(&header, &[]) {
                Ok((seg, _)) => g.segments.get(&seg).map(|s| (seg, Arc::clone(&s.file), s.len)),
                Err(e) => {
                    if !g.disk_warned {
                        g.disk_warned = true;
                        tracing::warn!(dir = %self.dir.display(), error = %e, "disk cache: cannot record a discard");
                    }
                    None
                }
            };
            g.barriers.insert(seq);
            g.discarding.push(blocks.clone());
            g.last_discard_seq = seq;
            let in_range = |b: &u32| blocks.contains(&u64::from(*b));
            if (blocks.end - blocks.start) < g.index.len() as u64 {
                for b in blocks.clone() {
                    g.index.remove(&(b as u32));
                }
            } else {
                g.index.retain(|b, _| !in_range(b));
            }
            (seq, sync)
        };
        let recorded = match sync {
            Some((seg, file, len)) => {
                let f = Arc::clone(&file);
                let ok = matches!(tokio::task::spawn_blocking(move || f.sync_data()).await, Ok(Ok(())));
                if ok && let Some(s) = self.inner().segments.get_mut(&seg) {
                    s.synced = s.synced.max(len);
                }
                ok
            }
            None => false,
        };
        let r = async {
            self.wait_before(seq).await?;
            if !recorded {
                self.write_trust(seq);
            }
            self.lower.discard(blocks).await
        }
        .await;
        let blocks_kept = kept;
        {
            let mut g = self.inner();
            g.barriers.remove(&seq);
            if let Some(i) = g.discarding.iter().position(|d| *d == blocks_kept) {
                g.discarding.swap_remove(i);
            }
        }
        self.work.notify_one();
        r
    }

    async fn flush_all(&self) -> Result<()> {
        let (epoch, files) = {
            let mut g = self.inner();
            if g.closed {
                return Err(g.closed_err());
            }
            let e = g.epoch;
            g.epoch += 1;
            let files: Vec<(u32, Arc<File>, u64)> = g
                .segments
                .iter()
                .filter(|(_, s)| s.synced < s.len)
                .map(|(id, s)| (*id, Arc::clone(&s.file), s.len))
                .collect();
            (e, files)
        };
        self.work.notify_one();
        if self.config.durability() == Durability::Local {
            let mut ok = true;
            for (id, file, len) in files {
                match tokio::task::spawn_blocking(move || file.sync_data()).await {
                    Ok(Ok(())) => {
                        if let Some(s) = self.inner().segments.get_mut(&id) {
                            s.synced = s.synced.max(len);
                        }
                        self.sync_succeeded();
                    }
                    Ok(Err(e)) => {
                        self.sync_failed(&e, "at a flush, which waits for the uploads instead");
                        ok = false;
                    }
                    Err(_) => ok = false,
                }
            }
            if ok {
                return Ok(());
            }
        }
        self.wait_epoch(epoch).await?;
        self.lower.flush().await
    }

    fn write_state(&self, state: &StateFile) -> Result<()> {
        write_atomic(&self.dir, STATE_FILE, &state.encode())
            .map_err(|e| io_err(&self.dir.join(STATE_FILE), e))
    }
}

/// The CRC-32 in the last four bytes of a checksummed file.
fn trailing_crc(b: &[u8]) -> Option<u32> {
    let n = b.len().checked_sub(4)?;
    Some(u32::from_le_bytes([b[n], b[n + 1], b[n + 2], b[n + 3]]))
}

/// Creates the cache directory `dir` when it is missing and its parent
/// exists; an error naming `--cache-dir` when it cannot be, or is not a
/// directory.
pub(crate) fn create_cache_dir(dir: &Path) -> Result<()> {
    if !dir.exists() {
        let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if !parent.is_dir() {
            return Err(Error::Config(format!(
                "--cache-dir {}: it does not exist and neither does its parent {}; create it first",
                dir.display(),
                parent.display()
            )));
        }
        match fs::create_dir(dir) {
            Ok(()) => tracing::info!(dir = %dir.display(), "disk cache: created the cache directory"),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
            Err(e) => {
                return Err(Error::Config(format!(
                    "--cache-dir {}: could not create it: {e}",
                    dir.display()
                )));
            }
        }
    } else if !dir.is_dir() {
        return Err(Error::Config(format!("--cache-dir {}: not a directory", dir.display())));
    }
    Ok(())
}

/// Opens (creating when its parent exists) the directory and takes its lock.
fn lock_dir(dir: &Path) -> Result<Flock<File>> {
    create_cache_dir(dir)?;
    let path = dir.join(LOCK_FILE);
    let file =
        OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(|e| {
            Error::Config(format!(
                "--cache-dir {}: cannot write in it ({}): {}",
                dir.display(),
                path.display(),
                describe(&e)
            ))
        })?;
    let locked = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        let holder = fs::read_to_string(&path).ok().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
        match errno {
            nix::errno::Errno::EWOULDBLOCK => Error::Config(format!(
                "--cache-dir {} is in use by another s3block process{}; one directory serves one mount",
                dir.display(),
                holder.map(|p| format!(" (pid {p})")).unwrap_or_default()
            )),
            e => Error::Config(format!("--cache-dir {}: cannot lock {}: {e}", dir.display(), path.display())),
        }
    })?;
    Ok(locked)
}

fn write_pid(lock: &Flock<File>, dir: &Path) -> Result<()> {
    let pid = format!("{}\n", std::process::id());
    lock.set_len(0).and_then(|()| lock.write_all_at(pid.as_bytes(), 0)).map_err(|e| {
        Error::Config(format!("--cache-dir {}: cannot write in it: {}", dir.display(), describe(&e)))
    })
}

/// An I/O error, saying so plainly when the file system is full or read-only.
fn describe(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(n) if n == libc_enospc() => format!("its file system is full ({e})"),
        Some(n) if n == nix::errno::Errno::EROFS as i32 => format!("its file system is read-only ({e})"),
        _ => e.to_string(),
    }
}

/// Reads the state file: `Ok(None)` when absent, `Err(reason)` when unreadable.
fn read_state(dir: &Path) -> std::result::Result<Option<StateFile>, String> {
    match fs::read(dir.join(STATE_FILE)) {
        Ok(b) => StateFile::decode(&b).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("state file: {e}")),
    }
}

/// Removes the files of the tier in `dir` (not the lock file).
fn remove_cache_files(dir: &Path) -> io::Result<DiscardReport> {
    let mut report = DiscardReport { files: 0, bytes: 0 };
    let mut names: Vec<PathBuf> = list_segments(dir)?.into_iter().map(|(_, p)| p).collect();
    for n in [STATE_FILE, CHECKPOINT_FILE, TRUST_FILE, "state.tmp", "checkpoint.tmp", "trust.tmp"] {
        names.push(dir.join(n));
    }
    for p in names {
        if let Ok(m) = fs::metadata(&p) {
            fs::remove_file(&p)?;
            report.files += 1;
            report.bytes += m.len();
        }
    }
    Ok(report)
}

/// Checks that the file system of `dir` has room for a segment.
fn check_space(dir: &Path, need: u64) -> Result<()> {
    match nix::sys::statvfs::statvfs(dir) {
        Ok(st) => {
            // The field types differ between platforms.
            #[allow(clippy::unnecessary_cast)]
            let free = (st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64);
            if free < need {
                return Err(Error::Config(format!(
                    "--cache-dir {}: its file system is full ({} free, the disk cache needs at least {} to work)",
                    dir.display(),
                    format_size(free),
                    format_size(need)
                )));
            }
            Ok(())
        }
        Err(e) => Err(Error::Config(format!(
            "--cache-dir {}: cannot read its file system's free space: {e}",
            dir.display()
        ))),
    }
}

impl<D: BlockDevice + 'static> DiskCache<D> {
    /// Opens the tier in the configured directory over `lower`.
    ///
    /// Takes the directory's lock, checks that it belongs to `identity` and
    /// to the bucket state `marks.found` (else drops its clean entries, or
    /// refuses when it holds dirty ones), loads the index (from the
    /// checkpoint after a clean close, else by scanning the log), records
    /// `marks.new` as pending, and starts uploading any dirty entries.
    pub async fn open(
        lower: D,
        config: DiskCacheConfig,
        identity: VolumeIdentity,
        marks: Marks,
    ) -> Result<(DiskCache<D>, OpenReport)> {
        let geometry = lower.geometry();
        if identity.geometry != geometry {
            return Err(Error::Config(format!(
                "disk cache: the volume identity's geometry ({} blocks of {}) differs from the device's ({} blocks of {})",
                identity.geometry.block_count(),
                identity.geometry.block_size(),
                geometry.block_count(),
                geometry.block_size()
            )));
        }
        let limits = config.limits(&geometry)?;
        let dir = config.dir().to_path_buf();
        let flock = lock_dir(&dir)?;
        write_pid(&flock, &dir)?;
        // Room for a few entries: a full tier reclaims its own segments.
        check_space(&dir, limits.segment_size.min(1 << 20))?;
        let block_len = geometry.block_len();
        let mut discarded: Option<String> = None;
        let old = match read_state(&dir) {
            Ok(s) => s,
            Err(reason) => {
                let segments = list_segments(&dir).map_err(|e| io_err(&dir, e))?;
                if !segments.is_empty() {
                    return Err(Error::Config(format!(
                        "--cache-dir {}: {reason}; it cannot be told which volume its blocks belong to. \
                         Inspect it, then drop it with `s3block cache discard {}`",
                        dir.display(),
                        dir.display()
                    )));
                }
                None
            }
        };
        // Validity: volume, geometry, bucket marker.
        if let Some(st) = &old {
            let why = if st.volume != identity.volume {
                Some(format!("it belongs to volume {:?}, not {:?}", st.volume, identity.volume))
            } else if st.block_size != geometry.block_size() || st.block_count != geometry.block_count() {
                Some(format!(
                    "it was written for {} blocks of {} bytes, the volume has {} of {}",
                    st.block_count,
                    st.block_size,
                    geometry.block_count(),
                    geometry.block_size()
                ))
            } else if marks.found != st.marker && (marks.found.is_none() || marks.found != st.pending_marker)
            {
                Some(format!(
                    "the volume was mounted elsewhere since (bucket marker {:?}, the directory is valid for {:?})",
                    marks.found.as_deref().unwrap_or("none"),
                    st.marker.as_deref().or(st.pending_marker.as_deref()).unwrap_or("none")
                ))
            } else {
                None
            };
            if let Some(why) = why {
                if !st.clean {
                    let trust = read_trust(&dir);
                    let rec = scan(&dir, st.block_size as usize, st.block_count, trust)
                        .map_err(|e| io_err(&dir, e))?;
                    if !rec.pending.is_empty() {
                        let mut blocks: Vec<u32> = rec.pending.iter().map(|p| p.block).collect();
                        blocks.sort_unstable();
                        blocks.dedup();
                        return Err(Error::Config(format!(
                            "--cache-dir {} holds {} dirty block(s) not yet in the bucket (first: {}), but {why}: \
                             uploading them could overwrite newer data. Keep the directory aside, or drop them with \
                             `s3block cache discard {}`",
                            dir.display(),
                            blocks.len(),
                            blocks[0],
                            dir.display()
                        )));
                    }
                }
                tracing::warn!(dir = %dir.display(), reason = %why, "disk cache: discarding the cache directory's blocks");
                remove_cache_files(&dir).map_err(|e| io_err(&dir, e))?;
                discarded = Some(why);
            }
        }
        let old = if discarded.is_some() { None } else { old };
        let mut inner = Inner {
            dir: dir.clone(),
            block_len,
            limits,
            index: new_index(config.size(), block_len),
            pending: BTreeMap::new(),
            newest_pending: HashMap::new(),
            inflight_blocks: HashSet::new(),
            barriers: BTreeSet::new(),
            discarding: Vec::new(),
            segments: BTreeMap::new(),
            active: 0,
            next_seq: 1,
            epoch: 1,
            dirty_bytes: 0,
            last_discard_seq: 0,
            max_evicted_seq: 0,
            counters: Counters::default(),
            disk_warned: false,
            upload_failures: Incident::default(),
            sync_failures: Incident::default(),
            failures: 0,
            last_failure: None,
            fail_next_writes: 0,
            active_full: false,
            closed: false,
            stop: false,
        };
        let mut report = OpenReport {
            dir: dir.clone(),
            state: match &discarded {
                Some(reason) => OpenState::Discarded { reason: reason.clone() },
                None => OpenState::Fresh,
            },
            blocks: 0,
            dirty_blocks: 0,
            corrupt: Vec::new(),
            lost_dirty: Vec::new(),
        };
        let open_segments = |inner: &mut Inner, ids: &[u32]| -> Result<()> {
            for &id in ids {
                let path = dir.join(segment_name(id));
                let file =
                    OpenOptions::new().read(true).write(true).open(&path).map_err(|e| io_err(&path, e))?;
                let len = file.metadata().map_err(|e| io_err(&path, e))?.len();
                inner.segments.insert(id, Segment { file: Arc::new(file), path, len, synced: len });
                inner.active = inner.active.max(id);
            }
            Ok(())
        };
        match &old {
            None => {
                // Stray files of an unknown state: nothing to trust.
                remove_cache_files(&dir).map_err(|e| io_err(&dir, e))?;
            }
            Some(st) => {
                let checkpoint = if st.clean {
                    fs::read(dir.join(CHECKPOINT_FILE))
                        .ok()
                        .filter(|b| trailing_crc(b) == Some(st.checkpoint_crc))
                        .and_then(|b| Checkpoint::decode(&b).ok())
                } else {
                    None
                };
                let on_disk: Vec<u32> =
                    list_segments(&dir).map_err(|e| io_err(&dir, e))?.iter().map(|s| s.0).collect();
                let usable =
                    checkpoint.filter(|c| c.segments.iter().map(|s| s.0).eq(on_disk.iter().copied()));
                if let Some(cp) = usable {
                    open_segments(&mut inner, &on_disk)?;
                    for (b, seg, word) in cp.index {
                        if u64::from(b) < geometry.block_count() && inner.segments.contains_key(&seg) {
                            inner.index.insert(b, Slot { seg, word: word & !(S_DIRTY | S_REF) });
                        }
                    }
                    inner.next_seq = st.next_seq.max(read_trust(&dir) + 1);
                    inner.epoch = st.epoch.max(1);
                    report.state = OpenState::Warm;
                } else {
                    let trust = read_trust(&dir);
                    let rec =
                        scan(&dir, block_len, geometry.block_count(), trust).map_err(|e| io_err(&dir, e))?;
                    let ids: Vec<u32> = rec.segments.iter().map(|s| s.0).collect();
                    open_segments(&mut inner, &ids)?;
                    inner.next_seq = rec.max_seq.max(trust).max(st.next_seq) + 1;
                    inner.epoch = rec.max_epoch.max(st.epoch) + 1;
                    for (b, e) in &rec.index {
                        let flags = if e.zero { S_ZERO } else { 0 };
                        inner.index.insert(*b, Slot::new(e.seg, e.off, flags));
                    }
                    for e in &rec.pending {
                        // Keep the entry's own epoch: recovered uploads keep their order.
                        let epoch = inner.epoch;
                        inner.epoch = e.epoch;
                        inner.insert_pending(e.block, e.seq, e.seg, e.off, e.zero, None);
                        inner.epoch = epoch;
                        if let Some(s) = inner.index.get_mut(&e.block)
                            && s.at(e.seg, e.off)
                        {
                            s.word |= S_DIRTY;
                        }
                    }
                    inner.counters.corrupt = rec.corrupt.len() as u64;
                    for c in &rec.corrupt {
                        tracing::warn!(file = %c.file.display(), offset = c.offset, block = ?c.block, reason = %c.reason,
                            "disk cache: damaged entry dropped");
                    }
                    if !rec.lost_dirty.is_empty() {
                        tracing::error!(dir = %dir.display(), blocks = ?rec.lost_dirty,
                            "disk cache: dirty data of these blocks was damaged on disk and is lost");
                    }
                    report.corrupt = rec.corrupt;
                    report.lost_dirty = rec.lost_dirty;
                    report.state = OpenState::Recovered;
                }
            }
        }
        let _ = fs::remove_file(dir.join(CHECKPOINT_FILE));
        // The trust file exists from now on, so that recording a write past
        // the log on a full disk rewrites it in place, needing no new space.
        write_atomic(&dir, TRUST_FILE, &trust_bytes(read_trust(&dir)))
            .map_err(|e| io_err(&dir.join(TRUST_FILE), e))?;
        report.blocks = inner.index.len() as u64;
        report.dirty_blocks = inner.newest_pending.len() as u64;
        // New entries go to a new segment, never after a torn tail. A
        // directory that holds more than this tier's size (it was larger
        // before) is reclaimed down now, as far as its entries still to
        // upload let it.
        inner.start_segment().map_err(|e| io_err(&dir, e))?;
        inner.shrink();
        let state = StateFile {
            volume: identity.volume.clone(),
            block_size: geometry.block_size(),
            block_count: geometry.block_count(),
            // Valid against what the bucket holds now; the new marker once written.
            marker: marks.found.clone(),
            pending_marker: Some(marks.new.clone()),
            clean: false,
            next_seq: inner.next_seq,
            epoch: inner.epoch,
            checkpoint_crc: 0,
        };
        let shared = Arc::new(Shared {
            lower,
            geometry,
            config,
            dir: dir.clone(),
            inner: Mutex::new(inner),
            changed: Notify::new(),
            work: Notify::new(),
            lock: Mutex::new(Some(flock)),
            state: Mutex::new(state.clone()),
            budget: OnceLock::new(),
        });
        shared.write_state(&state)?;
        let uploader = tokio::spawn(Arc::clone(&shared).run_uploader());
        Ok((DiskCache { shared, uploader: Mutex::new(Some(uploader)) }, report))
    }

    /// Records that the caller wrote this mount's marker to the bucket: the
    /// directory is now valid against it alone.
    pub fn confirm_marker(&self) -> Result<()> {
        let mut st = lock(&self.shared.state);
        if let Some(new) = st.pending_marker.take() {
            st.marker = Some(new);
        }
        self.shared.write_state(&st)
    }

    /// Changes the tier's size at run time to `size` bytes on disk, of
    /// which at most `dirty_limit` not yet stored below (`None`: half the
    /// size), with the rules of [`DiskCacheConfig`]'s limits; the segment
    /// size stays the one the tier was opened with, and a size below four
    /// segments is refused (an error naming the smallest).
    ///
    /// Raising takes effect at once. Lowering applies the new dirty limit
    /// at once (writers wait for room in it), waits for uploads until the
    /// dirty bytes fit it, then reclaims the oldest segments so the bytes
    /// on disk drop to the new size; entries still to upload are copied
    /// forward, never lost. When a reclaim cannot make room (the entries
    /// still to upload fill it), that is logged and left to the next
    /// change of segment. A closed tier is left as it is.
    pub async fn resize(&self, size: u64, dirty_limit: Option<u64>) -> Result<()> {
        self.shared.resize(size, dirty_limit).await
    }

    /// Adds this tier to `budget`: from now on each of its uploads to the
    /// layer below takes one of the budget's upload slots too (besides its
    /// own [`DiskCacheConfig::upload_concurrency`]), and its size follows
    /// the budget's disk shares ([`CacheBudget::make_room`] shrinks it,
    /// a volume leaving lets it grow back). Open it with the [`Share`]'s
    /// `disk_size` and `disk_dirty`.
    ///
    /// [`Share`]: crate::Share
    pub fn join_budget(&self, budget: &Arc<CacheBudget>) {
        let _ = self.shared.budget.set(budget.clone());
        let member: Arc<dyn DiskMember> = self.shared.clone();
        budget.add_disk(Arc::downgrade(&member));
    }

    /// Takes this tier out of its budget (call it once the tier is closed).
    pub fn leave_budget(&self) {
        if let Some(budget) = self.shared.budget.get() {
            budget.remove_disk(DiskMember::id(self.shared.as_ref()));
        }
    }

    /// The device below.
    pub fn lower(&self) -> &D {
        &self.shared.lower
    }

    /// The settings.
    pub fn config(&self) -> &DiskCacheConfig {
        &self.shared.config
    }

    /// The figures now.
    pub fn stats(&self) -> DiskCacheStats {
        let g = self.shared.inner();
        let c = g.counters;
        DiskCacheStats {
            size: g.limits.size,
            used_bytes: g.used_bytes(),
            segments: g.segments.len() as u64,
            cached_blocks: g.index.len() as u64,
            dirty_blocks: g.newest_pending.len() as u64,
            dirty_bytes: g.dirty_bytes,
            dirty_entries: g.pending.len() as u64,
            oldest_dirty_secs: g.pending.values().map(|p| p.since).min().map(|t| t.elapsed().as_secs_f64()),
            hits: c.hits,
            misses: c.misses,
            admissions: c.admissions,
            evictions: c.evictions,
            copied_forward: c.copied_forward,
            uploads: c.uploads,
            spills: c.spills,
            waits: c.waits,
            corrupt_entries: c.corrupt,
            index_bytes: g.index_bytes(),
            epoch: g.epoch,
        }
    }

    /// The bookkeeping of uploads, for a test that hangs to print.
    #[cfg(feature = "testing")]
    pub fn debug_state(&self) -> String {
        let g = self.shared.inner();
        format!(
            "pending {:?}\nbarriers {:?} inflight {:?} epoch {} next_seq {} closed {} stop {} failures {} last {:?} segments {:?}",
            g.pending,
            g.barriers,
            g.inflight_blocks,
            g.epoch,
            g.next_seq,
            g.closed,
            g.stop,
            g.failures,
            g.last_failure,
            g.segments.keys().collect::<Vec<_>>()
        )
    }

    /// Makes the next `n` writes to the log fail as if the disk were full
    /// (ENOSPC), to test the fallback.
    #[cfg(feature = "testing")]
    pub fn fail_next_disk_writes(&self, n: u32) {
        self.shared.inner().fail_next_writes = n;
    }

    /// Uploads every dirty entry, writes the checkpoint and the clean flag,
    /// and releases the directory. On an upload failure the directory stays
    /// as it is (dirty entries are recovered at the next open) and the
    /// error is returned.
    pub async fn close(&self) -> Result<()> {
        let s = &self.shared;
        if s.inner().closed {
            return Ok(());
        }
        s.wait_before(u64::MAX).await?;
        s.lower.flush().await?;
        let files = {
            let mut g = s.inner();
            g.closed = true;
            g.stop = true;
            g.segments.values().map(|s| Arc::clone(&s.file)).collect::<Vec<_>>()
        };
        s.work.notify_one();
        s.changed.notify_waiters();
        let handle = lock(&self.uploader).take();
        if let Some(h) = handle {
            let _ = h.await;
        }
        for f in files {
            f.sync_data().map_err(|e| io_err(&s.dir, e))?;
        }
        let (checkpoint, next_seq, epoch) = {
            let g = s.inner();
            let cp = Checkpoint {
                segments: g.segments.iter().map(|(id, seg)| (*id, seg.len)).collect(),
                index: g
                    .index
                    .iter()
                    .map(|(b, slot)| (*b, slot.seg, slot.word & !(S_REF | S_DIRTY)))
                    .collect(),
            };
            (cp, g.next_seq, g.epoch)
        };
        let bytes = checkpoint.encode();
        let crc = trailing_crc(&bytes).unwrap_or(0);
        write_atomic(&s.dir, CHECKPOINT_FILE, &bytes).map_err(|e| io_err(&s.dir.join(CHECKPOINT_FILE), e))?;
        {
            let mut st = lock(&s.state);
            st.clean = true;
            st.next_seq = next_seq;
            st.epoch = epoch;
            st.checkpoint_crc = crc;
            s.write_state(&st)?;
        }
        lock(&s.lock).take();
        Ok(())
    }
}

impl<D: BlockDevice + 'static> Drop for DiskCache<D> {
    fn drop(&mut self) {
        // Without close: like a crash. Uploads stop; the log stays as it is.
        self.abandon();
    }
}

impl<D: BlockDevice + 'static> DiskCache<D> {
    /// Stops at once as if the process died: uploads are abandoned, the
    /// log is left as it is (not clean), the directory's lock is released.
    /// Further calls fail. For tests that crash a tier shared by others.
    #[cfg(feature = "testing")]
    pub fn simulate_crash(&self) {
        self.abandon();
    }

    fn abandon(&self) {
        if let Some(h) = lock(&self.uploader).take() {
            h.abort();
        }
        {
            let mut g = self.shared.inner();
            g.closed = true;
            g.stop = true;
        }
        self.shared.changed.notify_waiters();
        lock(&self.shared.lock).take();
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl<D: BlockDevice + 'static> BlockDevice for DiskCache<D> {
    fn geometry(&self) -> Geometry {
        self.shared.geometry
    }

    async fn read_block(&self, block: BlockId) -> Result<Bytes> {
        self.shared.geometry.check_block(block)?;
        self.shared.get(block).await
    }

    async fn write_block(&self, block: BlockId, data: Bytes) -> Result<()> {
        self.shared.geometry.check_block(block)?;
        check_block_len(&self.shared.geometry, block, &data)?;
        self.shared.put(block, data).await
    }

    /// The tier keeps whole blocks: a part costs a whole block's read.
    fn ranged_reads(&self) -> bool {
        false
    }

    async fn read_partial(&self, block: BlockId, offset: u32, len: usize) -> Result<Bytes> {
        // The tier keeps whole blocks: read (and admit) the block, slice it.
        self.shared.geometry.check_in_block(offset, len)?;
        let data = self.read_block(block).await?;
        let start = offset as usize;
        Ok(data.slice(start..start + len))
    }

    async fn write_partial(&self, block: BlockId, offset: u32, data: Bytes) -> Result<()> {
        self.shared.geometry.check_in_block(offset, data.len())?;
        let old = self.read_block(block).await?;
        let mut merged = old.to_vec();
        let start = offset as usize;
        merged[start..start + data.len()].copy_from_slice(&data);
        self.write_block(block, Bytes::from(merged)).await
    }

    async fn discard(&self, blocks: Range<u64>) -> Result<()> {
        check_block_range(&self.shared.geometry, &blocks)?;
        if blocks.is_empty() {
            return Ok(());
        }
        self.shared.discard_range(blocks).await
    }

    async fn flush(&self) -> Result<()> {
        self.shared.flush_all().await
    }

    async fn block_status(&self, blocks: Range<u64>) -> Result<Vec<(Range<u64>, Allocation)>> {
        check_block_range(&self.shared.geometry, &blocks)?;
        let below = self.shared.lower.block_status(blocks.clone()).await?;
        let mut known: Vec<(u64, Allocation)> = {
            let g = self.shared.inner();
            let of = |s: &Slot| if s.has(S_ZERO) { Allocation::Hole } else { Allocation::Data };
            if (blocks.end - blocks.start) <= g.index.len() as u64 {
                blocks.clone().filter_map(|b| g.index.get(&(b as u32)).map(|s| (b, of(s)))).collect()
            } else {
                g.index
                    .iter()
                    .filter(|(b, _)| blocks.contains(&u64::from(**b)))
                    .map(|(b, s)| (u64::from(*b), of(s)))
                    .collect()
            }
        };
        known.sort_unstable_by_key(|k| k.0);
        let mut runs = Vec::new();
        let mut k = known.into_iter().peekable();
        for (range, alloc) in below {
            let mut at = range.start;
            while let Some(&(b, a)) = k.peek() {
                if b >= range.end {
                    break;
                }
                k.next();
                if b < at {
                    continue;
                }
                push_run(&mut runs, at..b, alloc);
                push_run(&mut runs, b..b + 1, a);
                at = b + 1;
            }
            push_run(&mut runs, at..range.end, alloc);
        }
        Ok(runs)
    }
}

/// Reads a cache directory without opening it: volume, state, blocks,
/// dirty blocks, damaged entries. Read-only; needs no store; refuses while
/// a process uses the directory.
pub fn inspect(dir: &Path) -> Result<CacheDirReport> {
    let _lock = lock_existing(dir)?;
    let st = read_state(dir)
        .map_err(|r| Error::Config(format!("{}: {r}", dir.display())))?
        .ok_or_else(|| Error::Config(format!("{}: no disk cache state file here", dir.display())))?;
    let segments = list_segments(dir).map_err(|e| io_err(dir, e))?;
    let mut bytes = 0;
    for (_, p) in &segments {
        bytes += fs::metadata(p).map_err(|e| io_err(p, e))?.len();
    }
    let rec =
        scan(dir, st.block_size as usize, st.block_count, read_trust(dir)).map_err(|e| io_err(dir, e))?;
    let mut dirty: Vec<u64> = rec.pending.iter().map(|p| u64::from(p.block)).collect();
    dirty.sort_unstable();
    dirty.dedup();
    Ok(CacheDirReport {
        dir: dir.to_path_buf(),
        volume: st.volume,
        block_size: st.block_size,
        block_count: st.block_count,
        marker: st.marker,
        pending_marker: st.pending_marker,
        clean: st.clean,
        blocks: rec.index.len() as u64,
        dirty_blocks: dirty,
        bytes,
        segments: segments.len() as u64,
        corrupt: rec.corrupt,
    })
}

/// Removes the disk cache files of `dir` (segments, state, checkpoint),
/// dirty entries included; refuses while a process uses the directory.
pub fn discard(dir: &Path) -> Result<DiscardReport> {
    let _lock = lock_existing(dir)?;
    remove_cache_files(dir).map_err(|e| io_err(dir, e))
}

/// Takes the lock of an existing directory, for [`inspect`] and [`discard`].
fn lock_existing(dir: &Path) -> Result<Flock<File>> {
    if !dir.is_dir() {
        return Err(Error::Config(format!("{}: not a directory", dir.display())));
    }
    lock_dir(dir)
}

impl<D: BlockDevice + 'static> DiskMember for Shared<D> {
    fn id(&self) -> usize {
        std::ptr::from_ref(self) as usize
    }

    fn segment_size(&self) -> u64 {
        self.inner().limits.segment_size
    }

    fn resize(
        &self,
        size: u64,
        dirty_limit: Option<u64>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + '_>> {
        Box::pin(Shared::resize(self, size, dirty_limit))
    }

    fn grow(&self, size: u64, dirty_limit: Option<u64>) {
        if let Ok(new) = self.limits_at(size, dirty_limit)
            && !self.inner().closed
        {
            self.apply_limits(new);
        }
    }

    fn wake(&self) {
        self.work.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RAM of the index per cached block, for a full 2 GiB tier of 4K
    /// blocks (the figure in the docs of [`DiskCache`]).
    #[test]
    fn index_bytes_per_block() {
        for (size, bs) in [(2u64 << 30, 4096usize), (2 << 30, 65536), (256 << 20, 4096)] {
            let mut index = new_index(size, bs);
            let before = index.capacity();
            let blocks = size / (bs as u64 + HEADER_LEN as u64);
            for b in 0..blocks as u32 {
                index.insert(b, Slot::new(b / 1000, b % 1000, 0));
            }
            assert_eq!(index.capacity(), before, "the index never grows");
            let per_block = index_map_bytes(&index) as f64 / blocks as f64;
            println!(
                "disk tier of {} with {} blocks: {blocks} blocks, index {} = {per_block:.1} bytes per block",
                format_size(size),
                format_size(bs as u64),
                format_size(index_map_bytes(&index))
            );
            assert!(per_block <= 32.0, "{per_block} bytes per block");
        }
        assert_eq!(std::mem::size_of::<(u32, Slot)>(), 12);
    }
}
