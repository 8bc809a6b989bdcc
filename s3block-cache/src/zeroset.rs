//! The set of blocks known to be zero below the cache, as disjoint ranges.
//!
//! A volume can have 2^32 blocks, so a dense bitmap could cost 512 MiB. Zero
//! blocks come in runs (a fresh volume, a discarded extent, a listing that
//! found few stored blocks), so a map of ranges stays small: a fresh volume
//! is one range, a listed one is at most one range per stored block plus one.

use std::collections::BTreeMap;
use std::ops::Range;

/// Disjoint, non-adjacent half-open ranges of block numbers.
#[derive(Debug, Default, Clone)]
pub(crate) struct RangeSet {
    /// start -> end, ranges never touch or overlap.
    ranges: BTreeMap<u64, u64>,
}

impl RangeSet {
    /// True when `n` is in the set.
    pub(crate) fn contains(&self, n: u64) -> bool {
        self.ranges.range(..=n).next_back().is_some_and(|(_, &end)| n < end)
    }

    /// True when every number of `r` is in the set.
    pub(crate) fn contains_range(&self, r: &Range<u64>) -> bool {
        r.is_empty() || self.ranges.range(..=r.start).next_back().is_some_and(|(_, &end)| r.end <= end)
    }

    /// Adds `r` to the set.
    pub(crate) fn insert(&mut self, r: Range<u64>) {
        if r.is_empty() {
            return;
        }
        let (mut start, mut end) = (r.start, r.end);
        // Merge with a range that starts before and reaches `start`.
        if let Some((&s, &e)) = self.ranges.range(..=start).next_back()
            && e >= start
        {
            start = s;
            end = end.max(e);
            self.ranges.remove(&s);
        }
        // Swallow ranges starting inside or right after.
        while let Some((&s, &e)) = self.ranges.range(start..=end).next() {
            end = end.max(e);
            self.ranges.remove(&s);
        }
        self.ranges.insert(start, end);
    }

    /// Removes `r` from the set.
    pub(crate) fn remove(&mut self, r: Range<u64>) {
        if r.is_empty() {
            return;
        }
        if let Some((&s, &e)) = self.ranges.range(..r.start).next_back()
            && e > r.start
        {
            self.ranges.insert(s, r.start);
            if e > r.end {
                self.ranges.insert(r.end, e);
            }
        }
        while let Some((&s, &e)) = self.ranges.range(r.start..r.end).next() {
            self.ranges.remove(&s);
            if e > r.end {
                self.ranges.insert(r.end, e);
            }
        }
    }

    /// The parts of `r` in the set, in order.
    pub(crate) fn ranges_in(&self, r: &Range<u64>) -> Vec<Range<u64>> {
        let mut out = Vec::new();
        if r.is_empty() {
            return out;
        }
        if let Some((_, &e)) = self.ranges.range(..r.start).next_back()
            && e > r.start
        {
            out.push(r.start..e.min(r.end));
        }
        for (&s, &e) in self.ranges.range(r.start..r.end) {
            out.push(s..e.min(r.end));
        }
        out
    }

    /// Number of ranges held (the memory cost).
    #[cfg(any(test, feature = "frontend"))]
    pub(crate) fn range_count(&self) -> usize {
        self.ranges.len()
    }

    /// The ranges of the set, in order.
    pub(crate) fn into_ranges(self) -> impl Iterator<Item = Range<u64>> {
        self.ranges.into_iter().map(|(s, e)| s..e)
    }

    /// Number of blocks in the set.
    pub(crate) fn len(&self) -> u64 {
        self.ranges.iter().map(|(s, e)| e - s).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    proptest! {
        #[test]
        fn behaves_like_a_set(ops in prop::collection::vec((any::<bool>(), 0u64..200, 0u64..20), 1..60)) {
            let mut set = RangeSet::default();
            let mut model = BTreeSet::new();
            for (add, start, len) in ops {
                let r = start..start + len;
                if add {
                    set.insert(r.clone());
                    model.extend(r);
                } else {
                    set.remove(r.clone());
                    for n in r { model.remove(&n); }
                }
                prop_assert_eq!(set.contains_range(&(start..start + 5)), (start..start + 5).all(|n| model.contains(&n)));
                for n in 0..230 {
                    prop_assert_eq!(set.contains(n), model.contains(&n), "block {}", n);
                }
                prop_assert_eq!(set.len(), model.len() as u64);
                let window = start..start + 2 * len + 1;
                let parts: Vec<u64> = set.ranges_in(&window).into_iter().flatten().collect();
                prop_assert_eq!(parts, window.filter(|n| model.contains(n)).collect::<Vec<_>>());
                // Ranges never touch: the representation is minimal.
                let v: Vec<_> = set.ranges.iter().map(|(&s, &e)| (s, e)).collect();
                for w in v.windows(2) {
                    prop_assert!(w[0].1 < w[1].0);
                }
            }
        }
    }

    #[test]
    fn a_whole_volume_is_one_range() {
        let mut set = RangeSet::default();
        set.insert(0..1 << 32);
        set.remove(5..6);
        assert!(set.contains(4) && !set.contains(5) && set.contains(6));
        assert_eq!(set.range_count(), 2);
        set.insert(5..6);
        assert_eq!(set.range_count(), 1);
    }
}
