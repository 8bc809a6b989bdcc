//! Ranged reads: a read miss of a small part of a large block fetches that
//! part, not the block.
//!
//! A 4 KiB read that misses a 1 MiB block would otherwise wait for (and
//! pay the egress of) the whole megabyte. With
//! [`CacheConfigBuilder::ranged_reads`](crate::CacheConfigBuilder::ranged_reads)
//! on, a miss fetches the range asked for, widened to whole aligned 64 KiB
//! granules ([`align_to_granules`], [`RANGE_ALIGN`] says why not 4 KiB
//! pages), with [`BlockDevice::read_partial`] (one ranged GET
//! on a volume that writes raw blocks; the object device reads an encoded
//! object whole and decodes it). The pages are kept as a clean
//! [`Content::Partial`] entry: they answer later reads inside them, and are
//! never taken for the whole block. The rule ([`Shared::start_range_load`]):
//! the whole block is fetched instead when
//!
//! - the pages are more than a quarter of the block ([`is_small_part`]),
//! - the block's reads turn sequential: the read starts on the byte where
//!   the last read ended, in the same block (a random 4 KiB read starts on
//!   the end of some fetched granule one time in 16 times the share of the
//!   block fetched, so that alone is no sign),
//! - the block's reads turn dense: the pages already fetched plus these
//!   would be more than half the block ([`covers_half`]), unless the cache
//!   is thrashing ([`Evicted`]: many of its misses are of blocks it
//!   evicted for room lately), where the rest of the block would be
//!   evicted before it is read,
//! - the block is written in places (dirty), wholly cached, or being
//!   fetched already (whole or in part),
//! - the read continues a sequential run, where read-ahead fetches whole
//!   blocks anyway: it starts its block, the one after the block the last
//!   read ended at the end of, or at least the two reads before it went on
//!   in sequence (each on the block after the last, or from where the last
//!   ended; [`ReadAhead::run`](crate::readahead::ReadAhead::run)). A random
//!   read lands on the block after the last one read once in as many reads
//!   as the volume has blocks, so that alone is no sign.
//!
//! A later miss of other bytes of a block with pages fetched earlier
//! fetches its granules too and adds them to the same entry, until the
//! reads turn dense or sequential; then the whole block comes and the pages are merged
//! in (as for a partly written one). An upload of a partly written block
//! fetches the whole block to complete it, so nothing is ever stored from
//! pages alone.
//!
//! The stats count each miss that waited for the whole block by the first of
//! these rules that held ([`Whole`]; `reads.whole_block` in the stats
//! files), so a user can see what the egress paid for.
//!
//! So a cold random 4 KiB read of a 1 MiB block downloads one 64 KiB
//! granule, however often the reads come back to the block, until half of
//! it has been asked for while the cache keeps what it reads.

use std::num::NonZeroUsize;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use lru::LruCache;
use s3block_core::{BlockDevice, BlockId, Error, FetchReason, with_fetch_reason};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::cache::Shared;
use crate::entry::{Content, Entry};
use crate::incident::Say;
use crate::state::{LoadOutcome, ReadOrder, State};

/// The granule of a ranged read: 64 KiB, aligned. Smaller ranges would
/// save little more egress and meet a stall on some servers: Garage 2.5
/// writes a response of about 3 to 40 KB in two parts and then waits for the
/// client's delayed ACK (Nagle's algorithm), so a 4 KiB range takes about
/// 34 ms where 64 KiB takes under 2 ms (docs/BENCHMARKS.md, "Ranged reads").
/// It is a multiple of the 4 KiB pages the entry holds.
pub(crate) const RANGE_ALIGN: usize = 64 << 10;

/// Why a read miss that could have fetched part of its block fetched the
/// whole block: the rules of this module, in the order they are told
/// apart (a miss counts under the first that holds, see
/// [`WholeBlockFigures`](crate::WholeBlockFigures)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Whole {
    /// The block is written in places (dirty).
    Written,
    /// A fetch of the block, whole or in part, is in flight.
    InFlight,
    /// The pages are more than a quarter of the block.
    Large,
    /// The read starts where the last read ended, in the same block.
    Sequential,
    /// The read continues a sequential run: it starts the block after the
    /// one the last read ended at the end of, or at least two reads in
    /// sequence came before it.
    NextBlock,
    /// With the pages fetched before, more than half the block.
    Dense,
}

impl Whole {
    /// How many there are: the last one's index, plus one.
    pub(crate) const COUNT: usize = Whole::Dense as usize + 1;
}

/// A fetch of part of a block in flight; only the reader that started it
/// waits on it (another miss on the block meanwhile fetches the whole block).
#[derive(Debug)]
pub(crate) struct RangeLoad {
    pub(crate) id: u64,
    pub(crate) tx: watch::Sender<LoadOutcome>,
    /// Bytes of the cache it holds until it ends: the part's length (see
    /// [`State::reserved`]).
    pub(crate) bytes: u64,
}

/// `range` of a block of `block_len` bytes widened to whole
/// [`RANGE_ALIGN`] granules (the last one cut at the end of the block).
pub(crate) fn align_to_granules(range: &Range<usize>, block_len: usize) -> Range<usize> {
    let start = range.start / RANGE_ALIGN * RANGE_ALIGN;
    let end = range.end.div_ceil(RANGE_ALIGN).saturating_mul(RANGE_ALIGN).min(block_len);
    start.min(end)..end
}

/// True when fetching `pages` alone beats fetching the block: they are at
/// most a quarter of it (so never for blocks under 256 KiB, where one
/// granule is more).
pub(crate) fn is_small_part(pages: &Range<usize>, block_len: usize) -> bool {
    !pages.is_empty() && pages.len() <= block_len / 4
}

/// True when the reads of a block whose pages `fetched` came from ranged
/// reads earlier turn dense with a read that needs `pages` more: together
/// they would be more than half of its `block_len` bytes.
pub(crate) fn covers_half(fetched: &[Range<u32>], pages: &Range<usize>, block_len: usize) -> bool {
    let known: usize = fetched.iter().map(|r| (r.end - r.start) as usize).sum();
    known.saturating_add(pages.len()) > block_len / 2
}

/// The blocks the cache evicted for room lately, and how many of its
/// recent misses were of one of them.
///
/// A cache whose misses keep coming back for blocks it evicted holds less
/// than its readers' working set. There, fetching a densely read block
/// whole buys nothing: the rest of the block is evicted again before it is
/// read, after it pushed other blocks out, and the refetch of the pages
/// already held is paid in egress. A model of the bench's random reads
/// (256 MiB read at random in 4 KiB, a 64 MiB cache, 1 MiB blocks) made
/// 6,462 GETs and 67 KiB of egress per read with whole-block fetches past
/// half a block, 6,445 GETs and 49 KiB with granules only; where the
/// region fits in the cache, the whole-block fetches took 288 GETs against
/// 512. So the dense rule holds only while this says the cache is not
/// thrashing.
///
/// The list holds a bounded number of block numbers (see [`Evicted::new`];
/// at most 16,384, about 1 MiB, outside the cache's budget like the rest
/// of its bookkeeping); the share is a moving average over about the last
/// 32 misses.
#[derive(Debug)]
pub(crate) struct Evicted {
    recent: LruCache<BlockId, ()>,
    /// Of the recent misses, the share that were of evicted blocks, in
    /// 1/[`SHARE_ONE`].
    share: u32,
}

/// A share of 1 in [`Evicted`]'s fixed point.
const SHARE_ONE: u32 = 1 << 12;

impl Evicted {
    /// Remembers the last `cache_size` / 256 KiB evicted blocks (the most
    /// blocks a cache of that size holds at a block size with ranged
    /// reads), at least 16 and at most 16,384.
    pub(crate) fn new(cache_size: u64) -> Self {
        let n = (cache_size / (256 << 10)).clamp(16, 16_384) as usize;
        Evicted { recent: LruCache::new(NonZeroUsize::new(n).expect("at least 16")), share: 0 }
    }

    /// `block` was evicted for room.
    pub(crate) fn evicted(&mut self, block: BlockId) {
        self.recent.put(block, ());
    }

    /// A read missed `block`; `cached`: part of it is in the cache.
    pub(crate) fn missed(&mut self, block: BlockId, cached: bool) {
        let again = !cached && self.recent.pop(&block).is_some();
        self.share = self.share - self.share / 32 + if again { SHARE_ONE / 32 } else { 0 };
    }

    /// True when more than one in 16 of the recent misses were of blocks
    /// evicted lately. The same model, at 20,000 reads over regions of 1.25
    /// to 8 times the cache, made as many GETs with this rule as without
    /// it and 10 to 37% less egress; a quarter, or an average over 16
    /// misses, left more than half of those savings.
    pub(crate) fn thrashing(&self) -> bool {
        self.share > SHARE_ONE / 16
    }
}

/// The ranges of a clean entry holding only pages fetched by ranged reads;
/// `None` for any other entry (dirty, whole, zero).
fn fetched_pages(e: &Entry) -> Option<&[Range<u32>]> {
    match &e.content {
        Content::Partial(known) if !e.is_dirty() => Some(&known.written),
        _ => None,
    }
}

impl<D: BlockDevice + 'static> Shared<D> {
    /// On a read miss of `range` in `block`, starts a fetch of its pages
    /// alone when the rule of this module says so; returns the receiver and
    /// where the pages start in the block. `None`: fetch the whole block.
    /// `order`: where the read starts against the last one.
    pub(crate) fn start_range_load(
        self: &Arc<Self>,
        st: &mut State,
        block: BlockId,
        range: &Range<usize>,
        order: ReadOrder,
    ) -> Option<(watch::Receiver<LoadOutcome>, usize)> {
        // A device whose partial reads fetch the whole block anyway (blocks
        // stored compressed or encrypted, a disk tier) gets whole-block
        // fetches: the cache then keeps all it paid for.
        if !self.config.ranged_reads || !self.lower.ranged_reads() {
            return None;
        }
        // Under 256 KiB a granule is more than a quarter of the block, so
        // no read fetches a part: not a rule's choice, and not counted.
        let block_len = self.geometry.get().block_len();
        if block_len / 4 < RANGE_ALIGN {
            return None;
        }
        let pages = align_to_granules(range, block_len);
        let entry = st.entries.get(&block);
        let thrashing = st.evicted.as_mut().is_some_and(|evicted| {
            evicted.missed(block, entry.is_some());
            evicted.thrashing()
        });
        let fetched = match entry {
            None => Ok(&[][..]),
            Some(e) => fetched_pages(e).ok_or(Whole::Written),
        };
        let whole = fetched.and_then(|fetched| {
            if st.loads.contains_key(&block) || st.range_loads.contains_key(&block) {
                Err(Whole::InFlight)
            } else if !is_small_part(&pages, block_len) {
                Err(Whole::Large)
            } else if order.follows {
                Err(Whole::Sequential)
            } else if order.next_block || st.read_ahead.run() >= 2 {
                Err(Whole::NextBlock)
            } else if covers_half(fetched, &pages, block_len) && !thrashing {
                Err(Whole::Dense)
            } else {
                Ok(())
            }
        });
        if let Err(why) = whole {
            // A read joining a fetch read-ahead started is no miss.
            if st.loads.get(&block).is_none_or(|load| !load.prefetch) {
                self.counters.whole(why);
            }
            return None;
        }
        st.next_load_id += 1;
        let id = st.next_load_id;
        let (tx, rx) = watch::channel(LoadOutcome::Pending);
        st.add_range_load(block, RangeLoad { id, tx, bytes: pages.len() as u64 });
        let shared = Arc::clone(self);
        let at = pages.start;
        self.runtime.spawn(with_fetch_reason(FetchReason::Demand, async move {
            shared.run_range_load(block, id, pages).await;
        }));
        Some((rx, at))
    }

    async fn run_range_load(self: Arc<Self>, block: BlockId, id: u64, pages: Range<usize>) {
        let len = pages.len();
        let slot = self.fetch_slot().await;
        if self.lock().range_loads.get(&block).is_none_or(|l| l.id != id) {
            // Marked stale while it waited for its slot: its reader retried.
            return;
        }
        let result = match self.lower.read_partial(block, pages.start as u32, len).await {
            Ok(data) if data.len() == len => Ok(data),
            Ok(data) => Err(Error::WrongLength { block, expected: len as u64, actual: data.len() as u64 }),
            Err(e) => Err(e),
        };
        drop(slot);
        let block_len = self.geometry.get().block_len();
        let wake = {
            let mut st = self.lock();
            if st.range_loads.get(&block).is_none_or(|l| l.id != id) {
                // Marked stale while in flight; its reader already retried.
                return;
            }
            let Some(load) = st.remove_range_load(block) else { return };
            let now = Instant::now();
            let outcome = match result {
                Ok(data) => {
                    let _ = st.fetch_failures.succeeded(now);
                    LoadOutcome::Done(st.install_range(block, pages.start, data, block_len, now))
                }
                Err(e) => {
                    match st.fetch_failures.failed(now) {
                        Say::First => tracing::warn!(
                            block = block.0,
                            error = %e,
                            "block read failed (further read failures are counted and said once a minute)"
                        ),
                        _ => tracing::debug!(block = block.0, error = %e, "block read failed"),
                    }
                    LoadOutcome::Failed(Arc::new(e))
                }
            };
            load.tx.send_replace(outcome);
            std::mem::take(&mut st.expiry_wake)
        };
        if wake {
            // The pages' clean timeout is the only one running.
            self.work.notify_one();
        }
    }
}

impl State {
    /// Puts pages read from below (`data`, from `start` in the block) into
    /// the cache. With no entry for the block, they become a clean partial
    /// entry when room can be made without touching dirty data; with a
    /// clean one holding pages fetched earlier, they are added to it (both
    /// are the stored bytes: an upload of the block since would have marked
    /// this fetch stale). Any other entry that appeared meanwhile (a write,
    /// or the whole block) is left alone: it knows newer bytes, laid over
    /// `data` in what is returned.
    pub(crate) fn install_range(
        &mut self,
        block: BlockId,
        start: usize,
        data: Bytes,
        block_len: usize,
        now: Instant,
    ) -> Bytes {
        let mut content = match self.entries.get(&block) {
            None => Content::over_stored(block_len),
            Some(e) if fetched_pages(e).is_some() => match self.take_entry(block) {
                Some(e) => e.content,
                None => Content::over_stored(block_len),
            },
            Some(e) => return e.content.overlay(start, data),
        };
        content.write_at(start as u32, &data, block_len);
        let size = content.size();
        if self.evict_for(size) {
            let mut e = Entry::clean(Bytes::new());
            e.content = content;
            self.entries.insert(block, e);
            self.make_evictable(block, now);
            self.resident += size;
        }
        data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: usize = 1 << 20;

    #[test]
    fn ranges_widen_to_whole_granules_inside_the_block() {
        const G: usize = 64 << 10;
        assert_eq!(RANGE_ALIGN, G);
        assert_eq!(align_to_granules(&(0..4096), M), 0..G);
        assert_eq!(align_to_granules(&(1..2), M), 0..G);
        assert_eq!(align_to_granules(&(G - 1..G + 1), M), 0..2 * G);
        assert_eq!(align_to_granules(&(G * 7 + 10..G * 9), M), G * 7..G * 9);
        assert_eq!(align_to_granules(&(G * 3..G * 4), M), G * 3..G * 4);
        assert_eq!(align_to_granules(&(300_000..304_096), M), 4 * G..5 * G);
        assert_eq!(align_to_granules(&(M - 1..M), M), M - G..M);
        // The end of the block cuts the last granule.
        assert_eq!(align_to_granules(&(70_000..70_001), 100_000), G..100_000);
        assert_eq!(align_to_granules(&(100..200), 512), 0..512);
        assert_eq!(align_to_granules(&(10..10), M), 0..G, "empty: the granule it is in");
    }

    #[test]
    fn only_a_quarter_of_the_block_or_less_is_fetched_in_part() {
        assert!(is_small_part(&(0..64 << 10), M));
        assert!(is_small_part(&(0..M / 4), M));
        assert!(!is_small_part(&(0..M / 4 + 4096), M));
        assert!(is_small_part(&(0..64 << 10), 256 << 10), "a quarter");
        assert!(!is_small_part(&(0..64 << 10), 128 << 10), "a half");
        assert!(!is_small_part(&(0..512), 512));
        assert!(!is_small_part(&(0..0), M));
    }

    #[test]
    // One fetched range, as a slice of ranges: the lint takes it for a
    // mistyped range of numbers.
    #[allow(clippy::single_range_in_vec_init)]
    fn reads_turn_dense_past_half_the_block() {
        const G: u32 = 64 << 10;
        let g = G as usize;
        assert!(!covers_half(&[], &(0..g), M));
        assert!(!covers_half(&[0..G], &(2 * g..3 * g), M));
        assert!(!covers_half(&[0..7 * G], &(9 * g..10 * g), M), "exactly half");
        assert!(covers_half(&[0..7 * G, 9 * G..10 * G], &(12 * g..13 * g), M), "more than half");
        assert!(covers_half(&[0..G], &(2 * g..4 * g), 4 * g));
    }

    #[test]
    fn a_read_follows_the_last_one_when_it_starts_where_that_ended_or_starts_the_next_block() {
        use rand::SeedableRng;
        let mut st = State::new(1 << 20, 1 << 19, rand::rngs::StdRng::seed_from_u64(0));
        let mut read = |block: u32, range: Range<usize>| {
            let o = st.note_read(BlockId(block), &range, M);
            (o.follows, o.next_block)
        };
        assert_eq!(read(3, 0..4096), (false, false), "no read before");
        assert_eq!(read(3, 4096..8192), (true, false));
        assert_eq!(read(3, 65536..69632), (false, false), "a gap");
        assert_eq!(read(4, 69632..73728), (false, false), "another block");
        assert_eq!(read(3, 69632..73728), (false, false), "another read came between");
        assert_eq!(read(3, 73728..M), (true, false));
        assert_eq!(read(4, 0..4096), (false, true), "the next block, from its start");
        assert_eq!(read(4, 8192..12288), (false, false));
        assert_eq!(read(5, 0..4096), (false, false), "the last read did not end block 4");
        assert_eq!(read(7, M - 4096..M), (false, false));
        assert_eq!(read(8, 4096..8192), (false, false), "not from the block's start");
        assert_eq!(read(8, 8192..M), (true, false));
        assert_eq!(read(10, 0..4096), (false, false), "not the next block");
    }

    #[test]
    fn the_cache_thrashes_while_its_misses_come_back_for_blocks_it_evicted() {
        let mut ev = Evicted::new(64 << 20);
        assert_eq!(ev.recent.cap().get(), 256);
        assert!(!ev.thrashing(), "no miss yet");
        // Misses of blocks never evicted, or with part of them cached: no.
        for b in 0..100 {
            ev.missed(BlockId(b), false);
            ev.evicted(BlockId(b));
        }
        for b in 0..100 {
            ev.missed(BlockId(b), true);
        }
        assert!(!ev.thrashing());
        // One miss in thirty of an evicted block: no.
        for b in 0..300 {
            ev.missed(BlockId(if b % 30 == 0 { b / 30 } else { 1000 + b }), false);
            assert!(!ev.thrashing(), "share {} after {b}", ev.share);
        }
        assert!(!ev.thrashing(), "share {}", ev.share);
        // Most misses of evicted blocks: yes, within a few misses.
        for b in 0..200 {
            ev.evicted(BlockId(b));
        }
        let mut n = 0;
        while !ev.thrashing() {
            ev.missed(BlockId(n), false);
            n += 1;
        }
        assert!(n <= 6, "{n} misses");
        // A block is counted once: its miss takes it off the list.
        assert!(!ev.recent.contains(&BlockId(0)));
        while n < 150 {
            ev.missed(BlockId(n), false);
            n += 1;
        }
        assert!(ev.share > SHARE_ONE * 9 / 10, "share {}", ev.share);
        // Misses of other blocks again: the state fades within about 87.
        let mut n = 0;
        while ev.thrashing() {
            ev.missed(BlockId(5000 + n), false);
            n += 1;
        }
        assert!((60..=120).contains(&n), "{n} misses");
        // The list is bounded: the oldest evicted blocks are forgotten.
        for b in 10_000..10_300 {
            ev.evicted(BlockId(b));
        }
        assert_eq!(ev.recent.len(), 256);
        assert!(!ev.recent.contains(&BlockId(10_000)) && ev.recent.contains(&BlockId(10_299)));
        assert_eq!(Evicted::new(1 << 20).recent.cap().get(), 16);
        assert_eq!(Evicted::new(1 << 40).recent.cap().get(), 16_384);
    }

    #[test]
    fn pages_fetched_into_a_block_with_pages_join_the_same_clean_entry() {
        use rand::SeedableRng;
        let mut st = State::new(1 << 20, 1 << 19, rand::rngs::StdRng::seed_from_u64(0));
        let now = Instant::now();
        let block = 65536;
        st.install_range(BlockId(3), 8192, Bytes::from(vec![5; 4096]), block, now);
        st.install_range(BlockId(3), 32768, Bytes::from(vec![6; 8192]), block, now);
        let e = st.entries.get(&BlockId(3)).expect("kept");
        assert!(!e.is_dirty());
        assert_eq!(fetched_pages(e), Some(&[8192..12288, 32768..40960][..]));
        assert_eq!(e.content.read(8192..12288).as_deref(), Some(&[5; 4096][..]));
        assert_eq!(e.content.read(32768..40960).as_deref(), Some(&[6; 8192][..]));
        assert_eq!(e.content.read(12000..12400), None);
        assert_eq!(st.check_invariants(1), Ok(()));
        // Pages filling the gaps make it whole.
        st.install_range(BlockId(3), 0, Bytes::from(vec![1; 8192]), block, now);
        st.install_range(BlockId(3), 12288, Bytes::from(vec![2; 20480]), block, now);
        st.install_range(BlockId(3), 40960, Bytes::from(vec![3; 24576]), block, now);
        let e = st.entries.get(&BlockId(3)).expect("kept");
        assert!(matches!(e.content, Content::Full(_)), "{:?}", e.content.size());
        assert_eq!(st.check_invariants(1), Ok(()));
        assert_eq!(st.resident, block as u64);
    }

    #[test]
    fn pages_fetched_become_a_clean_partial_entry_that_writes_win_over() {
        use rand::SeedableRng;
        let mut st = State::new(1 << 20, 1 << 19, rand::rngs::StdRng::seed_from_u64(0));
        let now = Instant::now();
        let block = 65536;
        let got = st.install_range(BlockId(3), 8192, Bytes::from(vec![5; 4096]), block, now);
        assert_eq!(&got[..], &[5; 4096]);
        let e = st.entries.get(&BlockId(3)).expect("kept");
        assert!(!e.is_dirty());
        assert_eq!(e.content.read(8192..12288).as_deref(), Some(&[5; 4096][..]));
        assert_eq!(e.content.read(8000..8200), None, "bytes outside the pages are not known");
        assert_eq!(st.check_invariants(1), Ok(()));
        // A write that landed while pages were in flight wins over them.
        st.commit_write(
            BlockId(4),
            |_| Content::Full(Bytes::from(vec![9; block])),
            now,
            std::time::Duration::ZERO,
            false,
        );
        let got = st.install_range(BlockId(4), 0, Bytes::from(vec![1; 4096]), block, now);
        assert_eq!(&got[..], &[9; 4096]);
        let mut partial = Content::over_stored(block);
        partial.write_at(100, &[7; 10], block);
        st.commit_write(BlockId(5), |_| partial, now, std::time::Duration::ZERO, false);
        let got = st.install_range(BlockId(5), 0, Bytes::from(vec![1; 4096]), block, now);
        assert_eq!((&got[..100], &got[100..110], &got[110..]), (&[1; 100][..], &[7; 10][..], &[1; 3986][..]));
        let Some(Content::Partial(known)) = st.entries.get(&BlockId(5)).map(|e| &e.content) else {
            panic!("block 5 is no longer partial");
        };
        let written = &known.written;
        assert_eq!(
            (written.len(), written.first()),
            (1, Some(&(100..110))),
            "the pages fetched were not added to a dirty entry"
        );
        assert_eq!(st.check_invariants(1), Ok(()));
    }
}
