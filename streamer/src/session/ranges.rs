//! A set of `u32` sequence numbers kept as sorted, disjoint, non-touching ranges.

use std::collections::BTreeMap;

/// Sorted disjoint half-open ranges `start..end`, keyed by start.
#[derive(Debug, Clone, Default)]
pub struct RangeSet {
    map: BTreeMap<u32, u32>,
    len: u64,
}

impl RangeSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }
    /// Number of sequence numbers in the set.
    pub fn len(&self) -> u64 {
        self.len
    }
    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
    /// Adds `start..end`, merging with neighbours.
    pub fn insert(&mut self, mut start: u32, mut end: u32) {
        if start >= end {
            return;
        }
        // Merge a range that starts before and reaches `start`.
        if let Some((&s, &e)) = self.map.range(..=start).next_back() {
            if e >= start {
                if e >= end {
                    return;
                }
                start = s;
                self.len -= u64::from(e - s);
                self.map.remove(&s);
            }
        }
        // Swallow ranges that start inside `start..=end`.
        while let Some((&s, &e)) = self.map.range(start..=end).next() {
            self.len -= u64::from(e - s);
            self.map.remove(&s);
            end = end.max(e);
        }
        self.len += u64::from(end - start);
        self.map.insert(start, end);
    }
    /// Removes one sequence number.
    pub fn remove(&mut self, seq: u32) {
        if let Some((&s, &e)) = self.map.range(..=seq).next_back() {
            if seq < e {
                self.map.remove(&s);
                self.len -= 1;
                if s < seq {
                    self.map.insert(s, seq);
                }
                if seq + 1 < e {
                    self.map.insert(seq + 1, e);
                }
            }
        }
    }
    /// Whether `seq` is in the set.
    pub fn contains(&self, seq: u32) -> bool {
        self.map
            .range(..=seq)
            .next_back()
            .is_some_and(|(_, &e)| seq < e)
    }
    /// Removes and returns the smallest member.
    pub fn pop_first(&mut self) -> Option<u32> {
        let (&s, _) = self.map.iter().next()?;
        self.remove(s);
        Some(s)
    }
    /// The ranges, ascending.
    pub fn iter(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.map.iter().map(|(&s, &e)| (s, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    proptest! {
        #[test]
        fn behaves_like_a_set(ops in proptest::collection::vec((0u32..200, 0u32..20, any::<bool>()), 0..80)) {
            let mut rs = RangeSet::new();
            let mut model = BTreeSet::new();
            for (a, n, ins) in ops {
                if ins {
                    rs.insert(a, a + n);
                    model.extend(a..a + n);
                } else {
                    rs.remove(a);
                    model.remove(&a);
                }
                prop_assert_eq!(rs.len(), model.len() as u64);
                let mut prev_end = None;
                for (s, e) in rs.iter() {
                    prop_assert!(s < e);
                    if let Some(p) = prev_end { prop_assert!(s > p, "touching or overlapping"); }
                    prev_end = Some(e);
                }
            }
            for x in 0..230 {
                prop_assert_eq!(rs.contains(x), model.contains(&x));
            }
        }
    }
}
