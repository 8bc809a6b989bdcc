//! Sequential-read detection and the read-ahead window.

use std::ops::Range;

/// Watches the order blocks are read in and says what to fetch ahead.
///
/// After `trigger` sequential reads in a row (each of the block after the
/// last, or inside one block from the byte where the last read ended), the
/// window starts at 2 blocks and doubles with each further sequential read
/// up to the maximum. Reads inside the first block count, so a reader
/// starting on a large block need not wait for it and the next one before
/// read-ahead begins.
///
/// Blocks already asked for are not asked for again while the run lasts;
/// the caller says how far it asked ([`ReadAhead::issued_to`]), as it may
/// stop short of the window's end (see `Shared::fetch_ahead`).
#[derive(Debug, Default)]
pub(crate) struct ReadAhead {
    last: Option<u64>,
    run: u32,
    /// Blocks below this were already asked for in the current run.
    issued_to: u64,
}

impl ReadAhead {
    /// Records a read of `block` (`follows`: it starts where the last read
    /// ended, in the same block). True when the read may ask for blocks
    /// ahead ([`ReadAhead::ahead`]); false for a read again, or elsewhere,
    /// in the block last read, which is no sign either way.
    pub(crate) fn on_read(&mut self, block: u64, follows: bool) -> bool {
        if self.last == Some(block) {
            if follows {
                self.run = self.run.saturating_add(1);
            }
            return follows;
        }
        if self.last.is_some_and(|last| last + 1 == block) {
            self.run = self.run.saturating_add(1);
        } else {
            self.run = 0;
            self.issued_to = 0;
        }
        self.last = Some(block);
        true
    }

    /// The blocks that may be fetched ahead of the last read and were not
    /// asked for yet, given a largest window of `max` blocks, a volume of
    /// `count` blocks and `trigger` reads in a row before read-ahead
    /// starts. Asked after a read, and when a fetch ends, so that as many
    /// stay in flight.
    pub(crate) fn ahead(&self, max: u64, count: u64, trigger: u32) -> Range<u64> {
        let Some(block) = self.last else { return 0..0 };
        if max == 0 || self.run < trigger {
            return 0..0;
        }
        let grow = (self.run - trigger + 1).min(32);
        let window = (1u64 << grow).min(max);
        let end = (block + 1 + window).min(count);
        let start = (block + 1).max(self.issued_to);
        start..end.max(start)
    }

    /// Records that the blocks below `end` of the current run were asked
    /// for (or needed no request): they are not returned again.
    pub(crate) fn issued_to(&mut self, end: u64) {
        self.issued_to = self.issued_to.max(end);
    }

    /// The sequential reads in a row up to the last one: 0 after a jump,
    /// 1 after a read of the block after the one read before it (or a read
    /// inside a block from where the last one ended), and so on.
    pub(crate) fn run(&self) -> u32 {
        self.run
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `block` (`follows` as for [`ReadAhead::on_read`]); the blocks
    /// it may ask for ahead.
    fn offered(
        ra: &mut ReadAhead,
        block: u64,
        follows: bool,
        max: u64,
        count: u64,
        trigger: u32,
    ) -> Range<u64> {
        if ra.on_read(block, follows) { ra.ahead(max, count, trigger) } else { 0..0 }
    }

    /// Reads `block` and asks for every block offered, as a caller with
    /// room and free requests does.
    fn read(ra: &mut ReadAhead, block: u64, max: u64, count: u64, trigger: u32) -> Range<u64> {
        let ahead = offered(ra, block, false, max, count, trigger);
        ra.issued_to(ahead.end);
        ahead
    }

    #[test]
    fn window_starts_after_a_run_and_grows_to_the_max() {
        let mut ra = ReadAhead::default();
        assert!(read(&mut ra, 10, 8, 100, 2).is_empty());
        assert!(read(&mut ra, 11, 8, 100, 2).is_empty());
        assert_eq!(read(&mut ra, 12, 8, 100, 2), 13..15);
        assert_eq!(read(&mut ra, 13, 8, 100, 2), 15..18);
        assert_eq!(read(&mut ra, 14, 8, 100, 2), 18..23);
        assert_eq!(read(&mut ra, 15, 8, 100, 2), 23..24);
        assert_eq!(read(&mut ra, 15, 8, 100, 2), 0..0);
        // A jump ends the run.
        assert!(ra.run() > 0);
        assert!(read(&mut ra, 50, 8, 100, 2).is_empty());
        assert_eq!(ra.run(), 0, "the jump ended it");
        assert!(read(&mut ra, 51, 8, 100, 2).is_empty());
        assert!(ra.run() > 0);
        // The end of the volume bounds the window.
        assert_eq!(read(&mut ra, 52, 8, 54, 2), 53..54);
        let mut off = ReadAhead::default();
        for b in 0..10 {
            assert!(read(&mut off, b, 0, 100, 2).is_empty());
        }
    }

    #[test]
    fn the_trigger_sets_the_reads_in_a_row_before_read_ahead() {
        let mut at_once = ReadAhead::default();
        assert_eq!(read(&mut at_once, 10, 8, 100, 0), 11..13, "from the first read");
        let mut late = ReadAhead::default();
        for b in 10..14 {
            assert!(read(&mut late, b, 8, 100, 4).is_empty(), "block {b}");
        }
        assert_eq!(read(&mut late, 14, 8, 100, 4), 15..17, "after four reads in a row");
    }

    #[test]
    fn blocks_not_asked_for_are_offered_again_by_the_next_read() {
        let mut ra = ReadAhead::default();
        assert!(offered(&mut ra, 0, false, 8, 100, 1).is_empty());
        assert_eq!(offered(&mut ra, 1, false, 8, 100, 1), 2..4);
        // The caller asked for block 2 only (say, its requests were busy).
        ra.issued_to(3);
        assert_eq!(offered(&mut ra, 2, false, 8, 100, 1), 3..7, "block 3 is offered again");
        ra.issued_to(5);
        assert_eq!(ra.ahead(8, 100, 1), 5..7, "what a fetch that ends may ask for");
        ra.issued_to(7);
        assert!(ra.ahead(8, 100, 1).is_empty());
        assert_eq!(offered(&mut ra, 3, false, 8, 100, 1), 7..12);
        assert!(ReadAhead::default().ahead(8, 100, 0).is_empty(), "nothing read yet");
    }

    #[test]
    fn reads_that_follow_each_other_inside_a_block_count_as_sequential() {
        let mut ra = ReadAhead::default();
        assert!(offered(&mut ra, 7, false, 8, 100, 2).is_empty());
        assert!(offered(&mut ra, 7, false, 8, 100, 2).is_empty(), "read again: no sign");
        assert_eq!(ra.run(), 0);
        assert!(offered(&mut ra, 7, true, 8, 100, 2).is_empty());
        assert!(ra.run() > 0);
        assert_eq!(offered(&mut ra, 7, true, 8, 100, 2), 8..10, "the third read in a row");
        ra.issued_to(10);
        assert_eq!(offered(&mut ra, 8, false, 8, 100, 2), 10..13, "the next block goes on with the run");
        // A read elsewhere in another block ends the run.
        assert!(offered(&mut ra, 40, false, 8, 100, 2).is_empty());
        assert_eq!(ra.run(), 0);
    }
}
