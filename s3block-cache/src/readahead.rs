//! Sequential-read detection and the read-ahead window.

use std::ops::Range;

/// Watches the order blocks are read in and says what to fetch ahead.
///
/// After `trigger` reads of consecutive blocks, the window starts at
/// 2 blocks and doubles with each further sequential read up to the maximum.
/// Blocks already asked for are not asked for again while the run lasts.
#[derive(Debug, Default)]
pub(crate) struct ReadAhead {
    last: Option<u64>,
    run: u32,
    /// Blocks below this were already asked for in the current run.
    issued_to: u64,
}

impl ReadAhead {
    /// Records a read of `block`; returns the blocks to fetch ahead, given a
    /// largest window of `max` blocks, a volume of `count` blocks and
    /// `trigger` reads in a row before read-ahead starts.
    pub(crate) fn on_read(&mut self, block: u64, max: u64, count: u64, trigger: u32) -> Range<u64> {
        if self.last == Some(block) {
            // Several reads inside one block (4K reads of a large block).
            return 0..0;
        }
        if self.last.is_some_and(|last| last + 1 == block) {
            self.run = self.run.saturating_add(1);
        } else {
            self.run = 0;
            self.issued_to = 0;
        }
        self.last = Some(block);
        if max == 0 || self.run < trigger {
            return 0..0;
        }
        let grow = (self.run - trigger + 1).min(32);
        let window = (1u64 << grow).min(max);
        let end = (block + 1 + window).min(count);
        let start = (block + 1).max(self.issued_to);
        self.issued_to = self.issued_to.max(end);
        start..end.max(start)
    }

    /// True when the block last read continued a sequential run (it is
    /// the block after the one read before it).
    pub(crate) fn in_run(&self) -> bool {
        self.run > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_starts_after_a_run_and_grows_to_the_max() {
        let mut ra = ReadAhead::default();
        assert!(ra.on_read(10, 8, 100, 2).is_empty());
        assert!(ra.on_read(11, 8, 100, 2).is_empty());
        assert_eq!(ra.on_read(12, 8, 100, 2), 13..15);
        assert_eq!(ra.on_read(13, 8, 100, 2), 15..18);
        assert_eq!(ra.on_read(14, 8, 100, 2), 18..23);
        assert_eq!(ra.on_read(15, 8, 100, 2), 23..24);
        assert_eq!(ra.on_read(15, 8, 100, 2), 0..0);
        // A jump ends the run.
        assert!(ra.in_run());
        assert!(ra.on_read(50, 8, 100, 2).is_empty());
        assert!(!ra.in_run(), "the jump ended it");
        assert!(ra.on_read(51, 8, 100, 2).is_empty());
        assert!(ra.in_run());
        // The end of the volume bounds the window.
        assert_eq!(ra.on_read(52, 8, 54, 2), 53..54);
        let mut off = ReadAhead::default();
        for b in 0..10 {
            assert!(off.on_read(b, 0, 100, 2).is_empty());
        }
    }

    #[test]
    fn the_trigger_sets_the_reads_in_a_row_before_read_ahead() {
        let mut at_once = ReadAhead::default();
        assert_eq!(at_once.on_read(10, 8, 100, 0), 11..13, "from the first read");
        let mut late = ReadAhead::default();
        for b in 10..14 {
            assert!(late.on_read(b, 8, 100, 4).is_empty(), "block {b}");
        }
        assert_eq!(late.on_read(14, 8, 100, 4), 15..17, "after four reads in a row");
    }
}
