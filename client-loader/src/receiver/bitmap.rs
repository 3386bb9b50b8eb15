//! A fixed-size bitmap of received packets, with range scans by machine word.

/// One bit per packet.
#[derive(Debug, Clone, Default)]
pub struct Bitmap {
    words: Vec<u64>,
    len: u32,
    ones: u32,
}

impl Bitmap {
    /// `len` clear bits.
    pub fn new(len: u32) -> Self {
        Bitmap {
            words: vec![0; (len as usize).div_ceil(64)],
            len,
            ones: 0,
        }
    }
    /// Bits in all.
    pub fn len(&self) -> u32 {
        self.len
    }
    /// Whether there are no bits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Set bits.
    pub fn count(&self) -> u32 {
        self.ones
    }
    /// Whether bit `i` is set (false past the end).
    pub fn get(&self, i: u32) -> bool {
        i < self.len && self.words[(i / 64) as usize] & (1 << (i % 64)) != 0
    }
    /// Sets bit `i`; returns whether it was clear.
    pub fn set(&mut self, i: u32) -> bool {
        if i >= self.len {
            return false;
        }
        let w = &mut self.words[(i / 64) as usize];
        let was_clear = *w & (1 << (i % 64)) == 0;
        *w |= 1 << (i % 64);
        self.ones += u32::from(was_clear);
        was_clear
    }
    /// Clears bit `i`.
    pub fn clear(&mut self, i: u32) {
        if i < self.len {
            let w = &mut self.words[(i / 64) as usize];
            if *w & (1 << (i % 64)) != 0 {
                *w &= !(1 << (i % 64));
                self.ones -= 1;
            }
        }
    }
    /// Whether every bit in `start..end` is set.
    pub fn all_set(&self, start: u32, end: u32) -> bool {
        self.next_clear(start, end).is_none()
    }
    /// The first clear bit in `start..end`.
    pub fn next_clear(&self, start: u32, end: u32) -> Option<u32> {
        let end = end.min(self.len);
        let mut i = start;
        while i < end {
            let w = self.words[(i / 64) as usize] | ((1u64 << (i % 64)) - 1);
            if w != u64::MAX {
                let bit = (i / 64) * 64 + (!w).trailing_zeros();
                return (bit < end).then_some(bit);
            }
            i = (i / 64 + 1) * 64;
        }
        None
    }
    /// The first set bit in `start..end`.
    pub fn next_set(&self, start: u32, end: u32) -> Option<u32> {
        let end = end.min(self.len);
        let mut i = start;
        while i < end {
            let w = self.words[(i / 64) as usize] & !((1u64 << (i % 64)) - 1);
            if w != 0 {
                let bit = (i / 64) * 64 + w.trailing_zeros();
                return (bit < end).then_some(bit);
            }
            i = (i / 64 + 1) * 64;
        }
        None
    }
    /// Ranges of clear bits in `start..end`, ascending, as `(first, count)`.
    pub fn clear_ranges(&self, start: u32, end: u32) -> impl Iterator<Item = (u32, u32)> + '_ {
        let end = end.min(self.len);
        let mut at = start;
        core::iter::from_fn(move || {
            let first = self.next_clear(at, end)?;
            let stop = self.next_set(first, end).unwrap_or(end);
            at = stop;
            Some((first, stop - first))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn ranges_match_a_model(len in 1u32..400, sets in proptest::collection::vec(0u32..400, 0..300), a in 0u32..400, b in 0u32..400) {
            let mut bm = Bitmap::new(len);
            let mut model = vec![false; len as usize];
            for s in sets {
                bm.set(s);
                if s < len { model[s as usize] = true; }
            }
            let (a, b) = (a.min(b), a.max(b));
            let mut expect = Vec::new();
            let mut i = a;
            while i < b.min(len) {
                if !model[i as usize] {
                    let f = i;
                    while i < b.min(len) && !model[i as usize] { i += 1; }
                    expect.push((f, i - f));
                } else { i += 1; }
            }
            prop_assert_eq!(bm.clear_ranges(a, b).collect::<Vec<_>>(), expect);
            prop_assert_eq!(bm.count() as usize, model.iter().filter(|&&x| x).count());
        }
    }
}
