//! Reading a cache directory back: the segment scan after a crash (every
//! entry's CRC checked), the index checkpoint after a clean close, and the
//! rules that turn the log into an index and a list of dirty entries.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::format::{FLAG_CLEAN, HEADER_LEN, Kind, Reader, Writer, crc_ok, decode_header};

/// Name of the state file.
pub(crate) const STATE_FILE: &str = "state";
/// Name of the index checkpoint written at a clean close.
pub(crate) const CHECKPOINT_FILE: &str = "checkpoint";
/// Name of the lock file (holds the pid of the process using the directory).
pub(crate) const LOCK_FILE: &str = "lock";
/// Name of the trust file: log entries older than the sequence number it
/// holds are not used after a crash (a block was written past the log).
pub(crate) const TRUST_FILE: &str = "trust";
const CHECKPOINT_MAGIC: &[u8; 8] = b"S3BCCKPT";

/// The file name of segment `id`.
pub(crate) fn segment_name(id: u32) -> String {
    format!("seg-{id:08x}.log")
}

fn segment_id(name: &str) -> Option<u32> {
    let hex = name.strip_prefix("seg-")?.strip_suffix(".log")?;
    if hex.len() != 8 {
        return None;
    }
    u32::from_str_radix(hex, 16).ok()
}

/// The segment files of `dir`, oldest first.
pub(crate) fn list_segments(dir: &Path) -> io::Result<Vec<(u32, PathBuf)>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        if let Some(id) = e.file_name().to_str().and_then(segment_id) {
            out.push((id, e.path()));
        }
    }
    out.sort_by_key(|(id, _)| *id);
    Ok(out)
}

/// A log entry that failed its checks: torn (cut short by a crash) or
/// corrupt (bytes changed on disk).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CorruptEntry {
    /// The segment file.
    pub file: PathBuf,
    /// Byte offset of the entry in it.
    pub offset: u64,
    /// The block its header names, when the header could be read (it may
    /// itself be damaged: the CRC covers header and data together).
    pub block: Option<u64>,
    /// What is wrong.
    pub reason: String,
}

/// Where a data or zero entry lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Scanned {
    pub(crate) block: u32,
    pub(crate) seg: u32,
    pub(crate) off: u32,
    pub(crate) zero: bool,
    pub(crate) clean: bool,
    pub(crate) seq: u64,
    pub(crate) epoch: u64,
}

/// The log read back.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    /// Segments: id and the bytes holding entries (a torn tail excluded).
    pub(crate) segments: Vec<(u32, u64)>,
    /// The newest usable entry of each block.
    pub(crate) index: HashMap<u32, Scanned>,
    /// Entries not known to be stored below, oldest first.
    pub(crate) pending: Vec<Scanned>,
    /// Entries that failed their checks.
    pub(crate) corrupt: Vec<CorruptEntry>,
    /// Blocks whose newest version was in a damaged entry not known to be
    /// stored below: lost with the damage.
    pub(crate) lost_dirty: Vec<u64>,
    pub(crate) max_seq: u64,
    pub(crate) max_epoch: u64,
}

/// Reads every segment of `dir`, checks every entry and builds the index
/// and the dirty list. Entries older than `trust_from` are left out.
pub(crate) fn scan(dir: &Path, block_len: usize, block_count: u64, trust_from: u64) -> io::Result<Recovered> {
    let mut entries: Vec<Scanned> = Vec::new();
    let mut uploaded: HashSet<(u32, u64)> = HashSet::new();
    let mut discards: Vec<(u64, u64, u64)> = Vec::new();
    // Damaged entries whose header names a block: (block, seq, index in `corrupt`).
    let mut damaged: Vec<(u32, u64, usize)> = Vec::new();
    let mut rec = Recovered::default();
    for (id, path) in list_segments(dir)? {
        let file = File::open(&path)?;
        let file_len = file.metadata()?.len();
        let mut off = 0u64;
        let mut valid_len = file_len;
        let mut head = [0u8; HEADER_LEN];
        let mut data = vec![0u8; block_len];
        while off < file_len {
            if file_len - off < HEADER_LEN as u64 {
                rec.corrupt.push(CorruptEntry {
                    file: path.clone(),
                    offset: off,
                    block: None,
                    reason: format!(
                        "torn entry: {} bytes at the end, a header is {HEADER_LEN}",
                        file_len - off
                    ),
                });
                valid_len = off;
                break;
            }
            file.read_exact_at(&mut head, off)?;
            let Some(h) = decode_header(&head, block_len) else {
                rec.corrupt.push(CorruptEntry {
                    file: path.clone(),
                    offset: off,
                    block: None,
                    reason: format!(
                        "no valid entry header; the rest of the segment ({} bytes) is skipped",
                        file_len - off
                    ),
                });
                valid_len = off;
                break;
            };
            let end = off + h.entry_len();
            let named = u32::try_from(h.block).ok().filter(|b| u64::from(*b) < block_count);
            if end > file_len {
                rec.corrupt.push(CorruptEntry {
                    file: path.clone(),
                    offset: off,
                    block: Some(h.block),
                    reason: format!("torn entry: {} of {} bytes", file_len - off, h.entry_len()),
                });
                if let (Some(b), Kind::Data | Kind::Zero) = (named, h.kind) {
                    damaged.push((b, h.seq, rec.corrupt.len() - 1));
                }
                valid_len = off;
                break;
            }
            let body = &mut data[..h.len as usize];
            file.read_exact_at(body, off + HEADER_LEN as u64)?;
            let valid = crc_ok(&head, body)
                && match h.kind {
                    Kind::Data | Kind::Zero | Kind::Uploaded => named.is_some(),
                    Kind::Discard => h.block <= h.extra && h.extra <= block_count,
                };
            if !valid {
                rec.corrupt.push(CorruptEntry {
                    file: path.clone(),
                    offset: off,
                    block: Some(h.block),
                    reason: "CRC mismatch".into(),
                });
                if let (Some(b), Kind::Data | Kind::Zero) = (named, h.kind) {
                    damaged.push((b, h.seq, rec.corrupt.len() - 1));
                }
                off = end;
                continue;
            }
            rec.max_seq = rec.max_seq.max(h.seq);
            rec.max_epoch = rec.max_epoch.max(h.epoch);
            match (h.kind, named) {
                (Kind::Data | Kind::Zero, Some(block)) if h.seq >= trust_from => entries.push(Scanned {
                    block,
                    seg: id,
                    off: off as u32,
                    zero: h.kind == Kind::Zero,
                    clean: h.flags & FLAG_CLEAN != 0,
                    seq: h.seq,
                    epoch: h.epoch,
                }),
                (Kind::Uploaded, Some(block)) => {
                    uploaded.insert((block, h.extra));
                }
                (Kind::Discard, _) => discards.push((h.block, h.extra, h.seq)),
                _ => {}
            }
            off = end;
        }
        rec.segments.push((id, valid_len));
    }
    resolve(rec, entries, uploaded, discards, damaged)
}

/// Applies the rules: a discard hides older entries of its blocks; the
/// newest entry of a block is served; entries not known stored are dirty,
/// except those replaced in the same epoch or older than a known-stored one.
fn resolve(
    mut rec: Recovered,
    mut entries: Vec<Scanned>,
    uploaded: HashSet<(u32, u64)>,
    discards: Vec<(u64, u64, u64)>,
    damaged: Vec<(u32, u64, usize)>,
) -> io::Result<Recovered> {
    entries.sort_by_key(|e| e.seq);
    // The newest discard covering each block that has entries.
    let mut blocks: Vec<u32> = entries.iter().map(|e| e.block).chain(damaged.iter().map(|d| d.0)).collect();
    blocks.sort_unstable();
    blocks.dedup();
    let mut discarded: HashMap<u32, u64> = HashMap::new();
    for (start, end, seq) in discards {
        let from = blocks.partition_point(|b| u64::from(*b) < start);
        for b in blocks[from..].iter().take_while(|b| u64::from(**b) < end) {
            let e = discarded.entry(*b).or_default();
            *e = (*e).max(seq);
        }
    }
    let hidden = |b: u32, seq: u64| discarded.get(&b).is_some_and(|d| *d > seq);
    // Per block: newest entry, newest entry known stored below.
    let mut newest: HashMap<u32, Scanned> = HashMap::new();
    let mut newest_stored: HashMap<u32, u64> = HashMap::new();
    for e in &entries {
        if hidden(e.block, e.seq) {
            continue;
        }
        newest.insert(e.block, *e);
        if e.clean || uploaded.contains(&(e.block, e.seq)) {
            newest_stored.insert(e.block, e.seq);
        }
    }
    // Dirty: not stored, not hidden, not older than a stored version, and
    // not replaced by a newer entry of the same block in the same epoch.
    let mut next_in_epoch: HashMap<u32, (u64, u64)> = HashMap::new();
    let mut pending_rev = Vec::new();
    for e in entries.iter().rev() {
        if hidden(e.block, e.seq) {
            continue;
        }
        let replaced = next_in_epoch.get(&e.block).is_some_and(|(_, epoch)| *epoch == e.epoch);
        next_in_epoch.insert(e.block, (e.seq, e.epoch));
        let stored = e.clean
            || uploaded.contains(&(e.block, e.seq))
            || newest_stored.get(&e.block).is_some_and(|s| *s > e.seq);
        if !stored && !replaced {
            pending_rev.push(*e);
        }
    }
    pending_rev.reverse();
    let pending_newest: HashMap<u32, u64> = pending_rev.iter().map(|e| (e.block, e.seq)).collect();
    // A damaged entry newer than the block's newest good one.
    for (block, seq, i) in damaged {
        if hidden(block, seq) {
            continue;
        }
        let good = newest.get(&block).copied();
        if good.is_some_and(|g| g.seq > seq) {
            continue;
        }
        if !uploaded.contains(&(block, seq)) {
            rec.lost_dirty.push(u64::from(block));
            rec.corrupt[i].reason.push_str(" (dirty: its data is lost)");
        }
        // The good older version is served only while it is still to be
        // uploaded (then it is what the store will hold); else the store's
        // copy is read.
        if good.is_some_and(|g| pending_newest.get(&block) != Some(&g.seq)) {
            newest.remove(&block);
        }
    }
    rec.lost_dirty.sort_unstable();
    rec.lost_dirty.dedup();
    rec.index = newest;
    rec.pending = pending_rev;
    Ok(rec)
}

/// The index checkpoint written at a clean close: segments and index.
pub(crate) struct Checkpoint {
    pub(crate) segments: Vec<(u32, u64)>,
    /// Block, segment, offset and flag word (see `Slot`).
    pub(crate) index: Vec<(u32, u32, u32)>,
}

impl Checkpoint {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.0.extend_from_slice(CHECKPOINT_MAGIC);
        w.u64(self.segments.len() as u64);
        for (id, len) in &self.segments {
            w.u32(*id);
            w.u64(*len);
        }
        w.u64(self.index.len() as u64);
        for (b, s, o) in &self.index {
            w.u32(*b);
            w.u32(*s);
            w.u32(*o);
        }
        w.finish()
    }

    pub(crate) fn decode(buf: &[u8]) -> Result<Checkpoint, String> {
        let mut r = Reader::checked(buf, "checkpoint")?;
        let mut magic = [0u8; 8];
        for m in &mut magic {
            *m = r.u8()?;
        }
        if &magic != CHECKPOINT_MAGIC {
            return Err("checkpoint: wrong magic".into());
        }
        let n = r.u64()? as usize;
        if n > r.remaining() / 12 {
            return Err(format!("checkpoint: {n} segments do not fit its length"));
        }
        let mut segments = Vec::with_capacity(n);
        for _ in 0..n {
            segments.push((r.u32()?, r.u64()?));
        }
        let n = r.u64()? as usize;
        if n != r.remaining() / 12 || r.remaining() % 12 != 0 {
            return Err(format!("checkpoint: {n} entries do not match its length"));
        }
        let mut index = Vec::with_capacity(n);
        for _ in 0..n {
            index.push((r.u32()?, r.u32()?, r.u32()?));
        }
        Ok(Checkpoint { segments, index })
    }
}

/// Reads the trust file: 0 when absent or damaged.
pub(crate) fn read_trust(dir: &Path) -> u64 {
    let Ok(buf) = fs::read(dir.join(TRUST_FILE)) else { return 0 };
    Reader::checked(&buf, "trust file").and_then(|mut r| r.u64()).unwrap_or(0)
}

/// The bytes of a trust file holding `seq`.
pub(crate) fn trust_bytes(seq: u64) -> Vec<u8> {
    let mut w = Writer::default();
    w.u64(seq);
    w.finish()
}
