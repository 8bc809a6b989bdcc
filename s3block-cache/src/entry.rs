//! One cached block: its content and where it stands in write-back.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use s3block_core::{Error, is_zero, zeros};
use tokio::time::Instant;

/// Largest granule of a partly written block's buffer: the kernel's page.
const PAGE: u32 = 4096;
/// A page is at most this share of a block, so small blocks gain too.
const PAGES_PER_BLOCK_AT_LEAST: u32 = 8;
/// Smallest granule, where the bookkeeping would outweigh the bytes.
const PAGE_MIN: u32 = 64;
/// Bookkeeping counted with each page held (its box and its slot).
const PAGE_OVERHEAD: u64 = 32;

/// The written bytes of a block, held a page at a time: a block written in a
/// few small places costs those pages, not a whole block. That is what lets
/// random small writes at a large block size keep many blocks dirty (and
/// gather many writes per upload) within the same dirty limit in bytes.
#[derive(Debug)]
pub(crate) struct Pages {
    page_len: u32,
    /// `(page index, bytes)`, sorted by index; a page not held reads as zeros.
    held: Vec<(u32, Box<[u8]>)>,
}

impl Pages {
    /// No page held yet, for a block of `block_len` bytes.
    pub(crate) fn new(block_len: usize) -> Self {
        // Block sizes are powers of two, so the page length divides them.
        let block_len = block_len as u32;
        let page_len = (block_len / PAGES_PER_BLOCK_AT_LEAST).clamp(PAGE_MIN.min(block_len), PAGE);
        Pages { page_len, held: Vec::new() }
    }

    /// Bytes of memory the pages take.
    pub(crate) fn size(&self) -> u64 {
        Self::bytes_for(self.page_len, self.held.len())
    }

    fn bytes_for(page_len: u32, pages: usize) -> u64 {
        pages as u64 * (u64::from(page_len) + PAGE_OVERHEAD)
    }

    fn span(&self, offset: u32, len: usize) -> Range<u32> {
        let end = offset as usize + len;
        offset / self.page_len..end.div_ceil(self.page_len as usize) as u32
    }

    fn slot(&self, index: u32) -> std::result::Result<usize, usize> {
        self.held.binary_search_by_key(&index, |(i, _)| *i)
    }

    /// Bytes of memory the pages would take after a write of `len` bytes at
    /// `offset`.
    pub(crate) fn size_after(&self, offset: u32, len: usize) -> u64 {
        let new = self.span(offset, len).filter(|&i| self.slot(i).is_err()).count();
        Self::bytes_for(self.page_len, self.held.len() + new)
    }

    /// True when every page of the block is held.
    fn all_held(&self, block_len: usize) -> bool {
        self.held.len() * self.page_len as usize == block_len
    }

    /// Copies `data` in at `offset`, taking zeroed pages as needed.
    pub(crate) fn write(&mut self, offset: u32, data: &[u8]) {
        let page_len = self.page_len as usize;
        for piece in pieces(page_len, offset as usize, data.len()) {
            let slot = match self.slot(piece.index) {
                Ok(slot) => slot,
                Err(slot) => {
                    self.held.insert(slot, (piece.index, vec![0; page_len].into_boxed_slice()));
                    slot
                }
            };
            self.held[slot].1[piece.in_page].copy_from_slice(&data[piece.in_span]);
        }
    }

    /// Copies the block's bytes from `start` into `out`; pages not held give
    /// zeros.
    pub(crate) fn read(&self, start: usize, out: &mut [u8]) {
        for piece in pieces(self.page_len as usize, start, out.len()) {
            let dst = &mut out[piece.in_span];
            match self.slot(piece.index) {
                Ok(slot) => dst.copy_from_slice(&self.held[slot].1[piece.in_page]),
                Err(_) => dst.fill(0),
            }
        }
    }

    /// True when the block's bytes from `start` are `data` (pages not held
    /// being zeros).
    fn equals(&self, start: usize, data: &[u8]) -> bool {
        pieces(self.page_len as usize, start, data.len()).all(|piece| {
            let want = &data[piece.in_span];
            match self.slot(piece.index) {
                Ok(slot) => &self.held[slot].1[piece.in_page] == want,
                Err(_) => is_zero(want),
            }
        })
    }

    /// The block's bytes in `range`, in a buffer of their own.
    fn copy(&self, range: Range<usize>) -> Bytes {
        let mut out = vec![0; range.len()];
        self.read(range.start, &mut out);
        Bytes::from(out)
    }

    /// The whole block, zeros where no page is held.
    pub(crate) fn to_block(&self, block_len: usize) -> Bytes {
        let mut out = BytesMut::zeroed(block_len);
        for (index, page) in &self.held {
            let at = *index as usize * self.page_len as usize;
            out[at..at + page.len()].copy_from_slice(page);
        }
        out.freeze()
    }
}

/// The part of a byte span that falls in one page.
struct Piece {
    index: u32,
    /// Where it lies in the page.
    in_page: Range<usize>,
    /// Where it lies in the span.
    in_span: Range<usize>,
}

/// Splits the span of `len` bytes from `start` at page boundaries.
fn pieces(page_len: usize, start: usize, len: usize) -> impl Iterator<Item = Piece> {
    let end = start + len;
    let mut pos = start;
    std::iter::from_fn(move || {
        (pos < end).then(|| {
            let index = pos / page_len;
            let within = pos - index * page_len;
            let n = (page_len - within).min(end - pos);
            let piece = Piece {
                index: index as u32,
                in_page: within..within + n,
                in_span: pos - start..pos - start + n,
            };
            pos += n;
            piece
        })
    })
}

/// What the cache knows of a block's bytes.
#[derive(Debug)]
pub(crate) enum Content {
    /// The whole block.
    Full(Bytes),
    /// All zeros; costs no buffer.
    Zero,
    /// The whole block, known to be zero outside the pages held: a block
    /// absent below (or zeroed) and then written in places. Uploading it
    /// needs no read. (Boxed, as is [`Content::Partial`]'s: a content then
    /// takes a [`Bytes`] and its tag, 40 bytes, in every cached block's
    /// entry.)
    Sparse(Box<Pages>),
    /// Only the byte ranges known: written since the block entered the
    /// cache, or fetched in part from below by a ranged read (the stored
    /// bytes, so laying them over the stored block changes nothing). The
    /// rest is whatever is stored below, fetched and merged before upload or
    /// on read.
    Partial(Box<Known>),
}

/// What a [`Content::Partial`] block knows: its pages, and the byte ranges
/// of them that hold the block's bytes.
#[derive(Debug)]
pub(crate) struct Known {
    pub(crate) pages: Pages,
    /// Sorted, disjoint, merged with their neighbours.
    pub(crate) written: Vec<Range<u32>>,
}

impl Content {
    /// A block nothing is known of yet, to be written in places over what is
    /// stored below.
    pub(crate) fn over_stored(block_len: usize) -> Self {
        Content::Partial(Box::new(Known { pages: Pages::new(block_len), written: Vec::new() }))
    }

    /// Bytes of memory this content holds.
    pub(crate) fn size(&self) -> u64 {
        match self {
            Content::Full(b) => b.len() as u64,
            Content::Zero => 0,
            Content::Sparse(pages) => pages.size(),
            Content::Partial(known) => known.pages.size(),
        }
    }

    /// At most the bytes of memory this content would hold after a write of
    /// `len` bytes at `offset`.
    pub(crate) fn size_after_write(&self, offset: u32, len: usize, block_len: usize) -> u64 {
        match self {
            Content::Full(_) => block_len as u64,
            Content::Zero => Pages::new(block_len).size_after(offset, len),
            Content::Sparse(pages) => pages.size_after(offset, len),
            Content::Partial(known) => known.pages.size_after(offset, len),
        }
    }

    /// `range` of the block, when this content knows those bytes.
    pub(crate) fn read(&self, range: Range<usize>) -> Option<Bytes> {
        match self {
            Content::Full(b) => Some(b.slice(range)),
            Content::Zero => Some(zeros(range.len())),
            Content::Sparse(pages) => Some(pages.copy(range)),
            Content::Partial(known) => covers(&known.written, &(range.start as u32..range.end as u32))
                .then(|| known.pages.copy(range)),
        }
    }

    /// True when this content knows the bytes from `start` and they are
    /// `data`: writing `data` there would change nothing.
    pub(crate) fn holds(&self, start: usize, data: &[u8]) -> bool {
        match self {
            Content::Full(b) => b.get(start..start + data.len()).is_some_and(|held| held == data),
            Content::Zero => is_zero(data),
            Content::Sparse(pages) => pages.equals(start, data),
            Content::Partial(known) => {
                covers(&known.written, &(start as u32..(start + data.len()) as u32))
                    && known.pages.equals(start, data)
            }
        }
    }

    /// `data`, bytes of the block from `start` as read from below, with
    /// what this content knows of them laid over: it is newer.
    pub(crate) fn overlay(&self, start: usize, data: Bytes) -> Bytes {
        let range = start..start + data.len();
        match self {
            Content::Partial(known) => {
                let mut out = writable(data);
                for r in &known.written {
                    let (s, e) = ((r.start as usize).max(range.start), (r.end as usize).min(range.end));
                    if s < e {
                        known.pages.read(s, &mut out[s - start..e - start]);
                    }
                }
                out.freeze()
            }
            known => known.read(range).unwrap_or(data),
        }
    }

    /// Writes `data` at `offset`, in place when the buffer is not shared.
    /// `block_len` is the block size; a Sparse or Partial block becomes Full
    /// once all of it is held.
    pub(crate) fn write_at(&mut self, offset: u32, data: &[u8], block_len: usize) {
        let end = offset as usize + data.len();
        match std::mem::replace(self, Content::Zero) {
            Content::Full(bytes) => {
                let mut m = writable(bytes);
                m[offset as usize..end].copy_from_slice(data);
                *self = Content::Full(m.freeze());
            }
            Content::Zero => {
                let mut pages = Pages::new(block_len);
                pages.write(offset, data);
                *self = Content::Sparse(Box::new(pages));
                self.fill_up(block_len);
            }
            Content::Sparse(mut pages) => {
                pages.write(offset, data);
                *self = Content::Sparse(pages);
                self.fill_up(block_len);
            }
            Content::Partial(mut known) => {
                known.pages.write(offset, data);
                add_range(&mut known.written, offset..end as u32);
                *self = if known.written.len() == 1 && known.written[0] == (0..block_len as u32) {
                    Content::Full(known.pages.to_block(block_len))
                } else {
                    Content::Partial(known)
                };
            }
        }
    }

    /// Turns a Sparse block holding every page into one buffer.
    fn fill_up(&mut self, block_len: usize) {
        if let Content::Sparse(pages) = self
            && pages.all_held(block_len)
        {
            *self = Content::Full(pages.to_block(block_len));
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

/// `data` as a buffer to write into: its own buffer when nothing else
/// shares it, else a copy. Shared zeros (a block absent below, from
/// [`zeros`]) become a fresh zeroed buffer instead of a copy: the system
/// hands it out zeroed, so only the pages written into it take memory, as
/// with the buffer of zeros an absent block was before.
fn writable(data: Bytes) -> BytesMut {
    data.try_into_mut().unwrap_or_else(|shared| {
        if is_zero(&shared) { BytesMut::zeroed(shared.len()) } else { BytesMut::from(&shared[..]) }
    })
}

/// Overlays the written ranges of a partial block on the stored block, in
/// the stored block's own buffer when nothing else shares it.
pub(crate) fn merge(stored: Bytes, pages: &Pages, written: &[Range<u32>]) -> Bytes {
    let mut out = writable(stored);
    for r in written {
        let (s, e) = (r.start as usize, r.end as usize);
        pages.read(s, &mut out[s..e]);
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
///
/// One of these per block in the cache, so its size counts at small
/// blocks: 80 bytes a slot of the index with its key, where a 4 KiB block
/// is 4,096, and the index keeps up to twice the slots it fills (what
/// write-back keeps of a dirty block is boxed in [`Dirty`], held only while
/// the block is dirty; what a block known in parts holds is boxed in its
/// [`Content`]).
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) content: Content,
    /// Generation of the latest write (a cache-wide sequence).
    pub(crate) generation: u64,
    /// What write-back keeps while the block is not stored below; `None`
    /// when clean.
    pub(crate) dirty: Option<Box<Dirty>>,
    pub(crate) wb: Wb,
    /// Fetched by read-ahead and not read yet.
    pub(crate) prefetched: bool,
    /// When its last upload started, in milliseconds of the cache's clock
    /// (see [`State::millis`](crate::state::State::millis)), wrapping; 0:
    /// none since the block came into the cache. A block written whole
    /// that was uploaded less than the write delay ago is being rewritten,
    /// and waits for the delay.
    pub(crate) uploaded_ms: u32,
    /// The mark the block got when it last became clean while a clean
    /// timeout is set (0: none yet): its item in the expiry queue is the
    /// one with this mark (see [`State::make_evictable`](crate::state::State::make_evictable)).
    pub(crate) clean_mark: u64,
}

/// What write-back keeps of a dirty block.
#[derive(Debug)]
pub(crate) struct Dirty {
    /// Generation of the oldest write not stored below.
    pub(crate) since: u64,
    /// The first write made after the snapshot of the upload in flight.
    pub(crate) rewritten_since: Option<u64>,
    /// When the block became dirty (the write delay counts from here).
    pub(crate) dirtied_at: Instant,
    /// Written whole, and not uploaded within the write delay before: due
    /// at once, queued ahead of the blocks that wait for the delay.
    pub(crate) prompt: bool,
    /// Earliest time a failed upload is tried again.
    pub(crate) retry_at: Instant,
    /// Failed uploads in a row.
    pub(crate) failures: u32,
    /// The flush sequence number current when the last upload started.
    pub(crate) attempt_seq: u64,
    /// The last upload error.
    pub(crate) error: Option<Arc<Error>>,
}

impl Dirty {
    /// A block dirty from generation `since`, made dirty `now`; `prompt`:
    /// due at once.
    pub(crate) fn new(since: u64, now: Instant, prompt: bool) -> Box<Self> {
        Box::new(Dirty {
            since,
            rewritten_since: None,
            dirtied_at: now,
            prompt,
            retry_at: now,
            failures: 0,
            attempt_seq: 0,
            error: None,
        })
    }

    /// When its upload is due: at once when prompt, else the write delay
    /// after it turned dirty.
    pub(crate) fn due(&self, delay: Duration) -> Instant {
        if self.prompt { self.dirtied_at } else { self.dirtied_at + delay }
    }
}

impl Entry {
    /// A clean block read from below.
    pub(crate) fn clean(data: Bytes) -> Self {
        Entry {
            content: Content::Full(data),
            generation: 0,
            dirty: None,
            wb: Wb::Clean,
            prefetched: false,
            uploaded_ms: 0,
            clean_mark: 0,
        }
    }

    /// True when not yet stored below.
    pub(crate) fn is_dirty(&self) -> bool {
        self.dirty.is_some()
    }

    /// Generation of the oldest write not stored below; `None` when clean.
    pub(crate) fn dirty_since(&self) -> Option<u64> {
        self.dirty.as_ref().map(|d| d.since)
    }

    /// Dirty and due at once (see [`Dirty::prompt`]).
    pub(crate) fn due_at_once(&self) -> bool {
        self.dirty.as_ref().is_some_and(|d| d.prompt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_slot_stays_small() {
        // One slot per cached block: at 4 KiB blocks the index is a tenth
        // of the cache's memory (frontend::memory counts it per block).
        let slot = size_of::<(s3block_core::BlockId, Entry)>();
        assert!(slot <= 104, "a slot of the cache's index grew to {slot} bytes");
        assert!(size_of::<Dirty>() <= 80, "Dirty is {} bytes", size_of::<Dirty>());
    }

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

    /// The index holds one entry per cached block, up to twice the slots
    /// it fills: at 4K blocks each byte of an entry is a byte per 2 KiB of
    /// cache. Sparse and partial contents are boxed, so a content is no
    /// larger than a whole block's buffer and its tag.
    #[test]
    fn an_entry_takes_80_bytes_of_the_index_with_its_key() {
        assert!(std::mem::size_of::<Content>() <= std::mem::size_of::<Bytes>() + 8);
        assert!(std::mem::size_of::<(s3block_core::BlockId, Entry)>() <= 80);
    }

    #[test]
    fn partial_becomes_full_when_covered() {
        let mut c = Content::over_stored(8);
        c.write_at(0, &[1, 2, 3, 4], 8);
        assert!(matches!(c, Content::Partial(_)));
        assert_eq!(c.read(0..4).as_deref(), Some(&[1, 2, 3, 4][..]));
        assert_eq!(c.read(2..6), None, "bytes 4..6 are stored below, not known here");
        if let Content::Partial(known) = &c {
            assert_eq!(
                &merge(Bytes::from(vec![9; 8]), &known.pages, &known.written)[..],
                &[1, 2, 3, 4, 9, 9, 9, 9]
            );
        }
        c.write_at(4, &[5, 6, 7, 8], 8);
        match c {
            Content::Full(b) => assert_eq!(&b[..], &[1, 2, 3, 4, 5, 6, 7, 8]),
            other => panic!("still partial: {other:?}"),
        }
    }

    #[test]
    fn content_holds_the_bytes_it_knows_and_nothing_else() {
        let block = 65536;
        let full = Content::Full((0..block).map(|i| (i % 251) as u8).collect());
        let bytes = |r: Range<usize>| r.map(|i| (i % 251) as u8).collect::<Vec<u8>>();
        assert!(full.holds(0, &bytes(0..block)));
        assert!(full.holds(1000, &bytes(1000..9000)));
        let mut other = bytes(1000..9000);
        other[7999] ^= 1;
        assert!(!full.holds(1000, &other), "the last byte differs");
        assert!(!full.holds(block - 10, &[0; 20]), "past the block's end");
        assert!(Content::Zero.holds(300, &[0; 5000]));
        assert!(!Content::Zero.holds(300, &[0, 0, 1]));
        // Sparse: the pages written, zeros elsewhere, across page borders.
        let mut sparse = Content::Zero;
        sparse.write_at(5000, &[3; 100], block);
        assert!(sparse.holds(5000, &[3; 100]));
        assert!(sparse.holds(4990, &[[0; 10], [3; 10]].concat()));
        assert!(sparse.holds(20_000, &[0; 8192]), "pages not held are zeros");
        assert!(!sparse.holds(5090, &[3; 20]), "bytes 5100.. are zeros");
        // Partial: only the ranges known; what is stored below is not.
        let mut partial = Content::over_stored(block);
        partial.write_at(4096, &[7; 4096], block);
        partial.write_at(8192, &[8; 100], block);
        assert!(partial.holds(4096, &[7; 4096]));
        assert!(partial.holds(8000, &[&[7; 192][..], &[8; 100][..]].concat()));
        assert!(!partial.holds(8192, &[8; 101]), "byte 8292 is stored below, not known");
        assert!(!partial.holds(0, &[0; 10]), "unknown bytes are not zeros");
    }

    #[test]
    fn small_writes_to_a_large_block_cost_their_pages() {
        let block = 1 << 20;
        let mut c = Content::over_stored(block);
        assert_eq!(c.size_after_write(4096 * 3 + 100, 10, block), 4096 + PAGE_OVERHEAD);
        c.write_at(4096 * 3 + 100, &[7; 10], block);
        c.write_at(4096 * 200, &[8; 8192], block);
        assert_eq!(c.size(), 3 * (4096 + PAGE_OVERHEAD));
        // A write across a page boundary takes both pages; one already held costs nothing more.
        assert_eq!(c.size_after_write(4096 * 4 - 2, 4, block), 4 * (4096 + PAGE_OVERHEAD));
        assert_eq!(c.size_after_write(4096 * 3, 4096, block), c.size());
        let Content::Partial(known) = &c else { panic!("{c:?}") };
        let merged = merge(Bytes::from(vec![1; block]), &known.pages, &known.written);
        assert_eq!(merged.iter().filter(|&&b| b == 7).count(), 10);
        assert_eq!(merged.iter().filter(|&&b| b == 8).count(), 8192);
        assert_eq!(merged.iter().filter(|&&b| b == 1).count(), block - 10 - 8192);
        assert_eq!(&merged[4096 * 3 + 100..4096 * 3 + 110], &[7; 10]);
    }

    #[test]
    fn sparse_block_reads_zeros_between_pages_and_fills_up() {
        let block = 65536;
        let mut c = Content::Zero;
        c.write_at(5000, &[3; 100], block);
        assert!(matches!(c, Content::Sparse(_)), "{c:?}");
        assert_eq!(c.size(), 4096 + PAGE_OVERHEAD);
        let all = c.read(0..block).expect("a sparse block knows all its bytes");
        assert_eq!(all.iter().filter(|&&b| b == 3).count(), 100);
        assert_eq!(&all[5000..5100], &[3; 100]);
        assert_eq!(c.read(4990..5010).as_deref(), Some(&[[0; 10], [3; 10]].concat()[..]));
        c.write_at(0, &vec![4; block], block);
        match c {
            Content::Full(b) => assert!(b.iter().all(|&x| x == 4)),
            other => panic!("still sparse: {other:?}"),
        }
    }

    #[test]
    fn small_blocks_are_held_in_eighths() {
        let mut c = Content::over_stored(512);
        assert_eq!(c.size_after_write(60, 8, 512), 2 * (64 + PAGE_OVERHEAD));
        c.write_at(60, &[1; 8], 512);
        assert_eq!(c.read(56..72), None);
        assert_eq!(c.read(60..68).as_deref(), Some(&[1; 8][..]));
        let mut z = Content::Zero;
        z.write_at(60, &[1; 8], 512);
        assert_eq!(z.read(56..72).as_deref(), Some(&[0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0][..]));
        z.write_at(0, &[2; 448], 512);
        assert!(matches!(z, Content::Sparse(_)));
        z.write_at(448, &[3; 64], 512);
        assert!(matches!(z, Content::Full(ref b) if b.len() == 512 && b[447..449] == [2, 3]));
    }

    #[test]
    fn what_is_known_lies_over_bytes_read_from_below() {
        let mut c = Content::over_stored(32);
        c.write_at(6, &[7; 4], 32);
        c.write_at(20, &[8; 2], 32);
        let below = Bytes::from(vec![1u8; 16]);
        assert_eq!(&c.overlay(4, below.clone())[..], &[1, 1, 7, 7, 7, 7, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]);
        assert_eq!(&c.overlay(12, below.clone())[..], &[1, 1, 1, 1, 1, 1, 1, 1, 8, 8, 1, 1, 1, 1, 1, 1]);
        assert_eq!(&Content::Zero.overlay(3, below.clone())[..], &[0; 16]);
        let full = Content::Full(Bytes::from((0..32).collect::<Vec<u8>>()));
        assert_eq!(&full.overlay(16, below)[..], &(16..32).collect::<Vec<u8>>()[..]);
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

    #[test]
    fn pages_merged_over_shared_zeros_leave_the_zeros_alone() {
        let block = 1 << 20;
        let mut c = Content::over_stored(block);
        c.write_at(4096 * 5, &[9; 4096], block);
        let Content::Partial(known) = &c else { panic!("{c:?}") };
        let below = zeros(block);
        let merged = merge(below.clone(), &known.pages, &known.written);
        assert_eq!(merged.len(), block);
        assert_eq!(&merged[4096 * 5..4096 * 6], &[9; 4096][..]);
        assert_eq!(merged.iter().filter(|&&b| b != 0).count(), 4096);
        assert!(below.iter().all(|&b| b == 0), "the shared zeros were written");
        assert!(zeros(block).iter().all(|&b| b == 0));
        assert_ne!(merged.as_ptr(), below.as_ptr());
        let over = c.overlay(4096 * 4, zeros(8192));
        assert_eq!(&over[..4096], &[0; 4096][..]);
        assert_eq!(&over[4096..], &[9; 4096][..]);
        assert!(zeros(block).iter().all(|&b| b == 0));
    }
}
