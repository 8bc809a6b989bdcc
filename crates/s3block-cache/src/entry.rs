//! One cached block: its content and where it stands in write-back.

use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use s3block_core::Error;

/// What the cache knows of a block's bytes.
#[derive(Debug)]
pub(crate) enum Content {
    /// The whole block.
    Full(Bytes),
    /// All zeros; costs no buffer.
    Zero,
    /// Only the byte ranges written since the block entered the cache; the rest
    /// is whatever is stored below, fetched and merged before upload or on read.
    Partial { buf: BytesMut, written: Vec<Range<u32>> },
}

impl Content {
    /// Bytes of memory this content holds.
    pub(crate) fn size(&self) -> u64 {
        match self {
            Content::Full(b) => b.len() as u64,
            Content::Zero => 0,
            Content::Partial { buf, .. } => buf.len() as u64,
        }
    }

    /// Writes `data` at `offset`, in place when the buffer is not shared.
    /// `block_len` is the block size; a Partial becomes Full once covered.
    pub(crate) fn write_at(&mut self, offset: u32, data: &[u8], block_len: usize) {
        let start = offset as usize;
        let end = start + data.len();
        match std::mem::replace(self, Content::Zero) {
            Content::Full(bytes) => {
                let mut m = bytes.try_into_mut().unwrap_or_else(|shared| BytesMut::from(&shared[..]));
                m[start..end].copy_from_slice(data);
                *self = Content::Full(m.freeze());
            }
            Content::Zero => {
                let mut m = BytesMut::zeroed(block_len);
                m[start..end].copy_from_slice(data);
                *self = Content::Full(m.freeze());
            }
            Content::Partial { mut buf, mut written } => {
                buf[start..end].copy_from_slice(data);
                add_range(&mut written, offset..end as u32);
                *self = if written.len() == 1 && written[0] == (0..block_len as u32) {
                    Content::Full(buf.freeze())
                } else {
                    Content::Partial { buf, written }
                };
            }
        }
    }
}

/// Adds `r` to a sorted list of disjoint ranges, merging neighbours.
pub(crate) fn add_range(ranges: &mut Vec<Range<u32>>, r: Range<u32>) {
    if r.is_empty() {
        return;
    }
    let mut merged = r;
    ranges.retain(|x| {
        if x.end < merged.start || x.start > merged.end {
            true
        } else {
            merged = merged.start.min(x.start)..merged.end.max(x.end);
            false
        }
    });
    let at = ranges.partition_point(|x| x.start < merged.start);
    ranges.insert(at, merged);
}

/// True when `r` lies inside one of `ranges`.
pub(crate) fn covers(ranges: &[Range<u32>], r: &Range<u32>) -> bool {
    ranges.iter().any(|x| x.start <= r.start && r.end <= x.end)
}

/// Overlays the written ranges of a partial block on the stored block.
pub(crate) fn merge(stored: &[u8], buf: &[u8], written: &[Range<u32>]) -> Bytes {
    let mut out = BytesMut::from(stored);
    for r in written {
        let (s, e) = (r.start as usize, r.end as usize);
        out[s..e].copy_from_slice(&buf[s..e]);
    }
    out.freeze()
}

/// Where a block stands in write-back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wb {
    /// Same as below; evictable.
    Clean,
    /// Dirty, waiting in the upload queue.
    Queued,
    /// Dirty, last upload failed; waiting to be retried.
    Failed,
    /// An upload is in flight.
    Uploading,
}

/// A block held by the cache.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) content: Content,
    /// Generation of the latest write (a cache-wide sequence).
    pub(crate) generation: u64,
    /// Generation of the oldest write not stored below; `None` when clean.
    pub(crate) dirty_since: Option<u64>,
    /// The first write made after the snapshot of the upload in flight.
    pub(crate) rewritten_since: Option<u64>,
    pub(crate) wb: Wb,
    /// When the block became dirty (the write delay counts from here).
    pub(crate) dirtied_at: Instant,
    /// Earliest time a failed upload is tried again.
    pub(crate) retry_at: Instant,
    /// Failed uploads in a row.
    pub(crate) failures: u32,
    /// The flush sequence number current when the last upload started.
    pub(crate) attempt_seq: u64,
    /// The last upload error.
    pub(crate) error: Option<Arc<Error>>,
    /// Fetched by read-ahead and not read yet.
    pub(crate) prefetched: bool,
}

impl Entry {
    /// A clean block read from below.
    pub(crate) fn clean(data: Bytes, now: Instant) -> Self {
        Entry {
            content: Content::Full(data),
            generation: 0,
            dirty_since: None,
            rewritten_since: None,
            wb: Wb::Clean,
            dirtied_at: now,
            retry_at: now,
            failures: 0,
            attempt_seq: 0,
            error: None,
            prefetched: false,
        }
    }

    /// True when not yet stored below.
    pub(crate) fn is_dirty(&self) -> bool {
        self.dirty_since.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge() {
        let mut v = Vec::new();
        add_range(&mut v, 10..20);
        add_range(&mut v, 30..40);
        add_range(&mut v, 0..5);
        assert_eq!(v, vec![0..5, 10..20, 30..40]);
        add_range(&mut v, 20..30);
        assert_eq!(v, vec![0..5, 10..40]);
        add_range(&mut v, 3..12);
        assert_eq!(v, vec![0..40]);
        assert!(covers(&v, &(5..40)) && !covers(&v, &(5..41)));
    }

    #[test]
    fn partial_becomes_full_when_covered() {
        let mut c = Content::Partial { buf: BytesMut::zeroed(8), written: vec![] };
        c.write_at(0, &[1, 2, 3, 4], 8);
        assert!(matches!(c, Content::Partial { .. }));
        if let Content::Partial { buf, written } = &c {
            assert_eq!(&merge(&[9; 8], buf, written)[..], &[1, 2, 3, 4, 9, 9, 9, 9]);
        }
        c.write_at(4, &[5, 6, 7, 8], 8);
        match c {
            Content::Full(b) => assert_eq!(&b[..], &[1, 2, 3, 4, 5, 6, 7, 8]),
            other => panic!("still partial: {other:?}"),
        }
    }

    #[test]
    fn shared_full_block_is_copied_not_changed() {
        let original = Bytes::from(vec![1u8; 4]);
        let mut c = Content::Full(original.clone());
        c.write_at(1, &[7], 4);
        assert_eq!(&original[..], &[1, 1, 1, 1]);
        match c {
            Content::Full(b) => assert_eq!(&b[..], &[1, 7, 1, 1]),
            other => panic!("{other:?}"),
        }
    }
}
