//! Which block slots of a pool are still unclaimed, as a set of free ranges
//! of slot indexes, so that finding a free block costs O(log ranges) however
//! large the pool (an IPv6 /48 has 2^74 slots of /122).

use std::collections::BTreeMap;

/// Unclaimed slot indexes of one pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreeSlots {
    // start -> end (exclusive) of each free range; ranges never touch.
    ranges: BTreeMap<u128, u128>,
    total: u128,
}

impl FreeSlots {
    /// Every slot of a pool with `total` slots is free.
    pub fn new(total: u128) -> Self {
        let mut ranges = BTreeMap::new();
        if total > 0 {
            ranges.insert(0, total);
        }
        FreeSlots { ranges, total }
    }

    /// Whether a slot is free.
    pub fn is_free(&self, index: u128) -> bool {
        self.range_holding(index).is_some()
    }

    /// Marks a slot claimed (no-op when it already is).
    pub fn take(&mut self, index: u128) {
        let Some((start, end)) = self.range_holding(index) else {
            return;
        };
        self.ranges.remove(&start);
        if start < index {
            self.ranges.insert(start, index);
        }
        if index + 1 < end {
            self.ranges.insert(index + 1, end);
        }
    }

    /// Marks a slot free again (no-op when it already is), merging neighbours.
    pub fn give_back(&mut self, index: u128) {
        if index >= self.total || self.is_free(index) {
            return;
        }
        let mut start = index;
        let mut end = index + 1;
        if let Some((&s, &e)) = self.ranges.range(..index).next_back() {
            if e == index {
                start = s;
                self.ranges.remove(&s);
            }
        }
        if let Some(e) = self.ranges.remove(&(index + 1)) {
            end = e;
        }
        self.ranges.insert(start, end);
    }

    /// Free slots from `start` upwards, then from 0, each once.
    pub fn iter_from(&self, start: u128) -> impl Iterator<Item = u128> + '_ {
        let start = if self.total == 0 {
            0
        } else {
            start % self.total
        };
        let first_part = self
            .range_holding(start)
            .map(|(_, end)| start..end)
            .into_iter()
            .flatten();
        let after = self.ranges.range(start + 1..).flat_map(|(&s, &e)| s..e);
        let before = self
            .ranges
            .range(..start)
            .flat_map(move |(&s, &e)| s..e.min(start));
        first_part.chain(after).chain(before)
    }

    fn range_holding(&self, index: u128) -> Option<(u128, u128)> {
        self.ranges
            .range(..=index)
            .next_back()
            .filter(|(_, &end)| index < end)
            .map(|(&s, &e)| (s, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn iteration_starts_at_the_offset_and_wraps() {
        let mut slots = FreeSlots::new(8);
        slots.take(5);
        slots.take(1);
        assert_eq!(
            slots.iter_from(4).collect::<Vec<_>>(),
            vec![4, 6, 7, 0, 2, 3]
        );
        assert_eq!(
            slots.iter_from(13).collect::<Vec<_>>(),
            vec![6, 7, 0, 2, 3, 4]
        );
    }

    #[test]
    fn huge_pools_yield_the_first_free_slot_at_once() {
        let mut slots = FreeSlots::new(1u128 << 74);
        slots.take(7);
        assert_eq!(slots.iter_from(7).next(), Some(8));
    }

    proptest! {
        #[test]
        fn free_slots_agree_with_a_plain_set(ops in prop::collection::vec((any::<bool>(), 0u128..40), 0..200), start in 0u128..40) {
            let mut slots = FreeSlots::new(40);
            let mut model: std::collections::BTreeSet<u128> = (0..40).collect();
            for (take, index) in ops {
                if take { slots.take(index); model.remove(&index); } else { slots.give_back(index); model.insert(index); }
            }
            let expected: Vec<u128> = model.range(start..).chain(model.range(..start)).copied().collect();
            prop_assert_eq!(slots.iter_from(start).collect::<Vec<_>>(), expected);
            // Ranges stay merged: no two ranges touch.
            let mut previous_end = None;
            for (&s, &e) in &slots.ranges {
                prop_assert!(s < e);
                prop_assert!(previous_end.is_none_or(|p| p < s));
                previous_end = Some(e);
            }
        }
    }
}
