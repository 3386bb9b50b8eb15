//! The stream order: a sequence of 512-byte sectors mapped to the image's blocks.
//!
//! Each sequence extent covers the blocks its sectors touch (rounding out). A block
//! already placed by an earlier extent is skipped (the first occurrence wins: a
//! reader that reads a sector twice needs it only once, the first time), adjacent
//! runs merge into one extent, and unless the file is sequence-only every block the
//! sequence did not name follows, in image order (JP4199677B2, step 428: the
//! requested data stored sequentially, in the order it was requested).

use streamer_common::sequence::{SectorExtent, SECTOR_SIZE};
use streamer_common::stream_file::{
    Extent, FileFlags, LayoutError, StreamHeader, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE,
};

use super::PlanError;

/// Where every block goes: the header's shape and the extents in stream order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// `SEQUENCE_ONLY` and `LEARNED` as asked.
    pub flags: FileFlags,
    /// Bytes per block.
    pub block_size: u32,
    /// The image's true size.
    pub image_size: u64,
    /// Blocks in the image (the last may be partial).
    pub block_count: u64,
    /// The extents in stream order: disjoint, non-empty, adjacent runs merged.
    pub extents: Vec<Extent>,
    /// Blocks placed by the sequence (the stream's learned prefix).
    pub sequence_blocks: u64,
    /// Blocks in the stream (the sum of the extents).
    pub stream_blocks: u64,
}

impl Plan {
    /// The header for this plan, hash fields zero.
    pub fn header(&self) -> Result<StreamHeader, LayoutError> {
        StreamHeader::new(
            self.flags,
            self.block_size,
            self.image_size,
            self.extents.len() as u64,
            self.stream_blocks,
        )
    }
}

/// Maps `sequence` onto an image of `image_size` bytes cut into `block_size`
/// blocks. With `sequence_only`, the stream holds only the sequence's blocks.
///
/// # Errors
/// An empty image, a bad block size, a sequence extent that is empty or reaches
/// past the image's end, `sequence_only` without a (non-empty) sequence.
pub fn plan(
    image_size: u64,
    block_size: u32,
    sequence: Option<&[SectorExtent]>,
    sequence_only: bool,
) -> Result<Plan, PlanError> {
    if !block_size.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size) {
        return Err(PlanError::BadBlockSize(block_size));
    }
    if image_size == 0 {
        return Err(PlanError::EmptyImage);
    }
    if sequence_only && sequence.is_none() {
        return Err(PlanError::SequenceOnlyWithoutSequence);
    }
    let bs = u64::from(block_size);
    let block_count = image_size.div_ceil(bs);
    let image_sectors = image_size.div_ceil(u64::from(SECTOR_SIZE));
    let sectors_per_block = bs / u64::from(SECTOR_SIZE);
    let mut placed = Bitmap::new(block_count);
    let mut extents = Runs::default();

    for (index, se) in sequence.unwrap_or(&[]).iter().enumerate() {
        let index = index as u64;
        if se.count == 0 {
            return Err(PlanError::EmptyExtent { index });
        }
        let end = match se.lba.checked_add(se.count) {
            Some(end) if end <= image_sectors => end,
            _ => {
                return Err(PlanError::SequencePastEnd {
                    index,
                    lba: se.lba,
                    end: se.lba.saturating_add(se.count),
                    image_sectors,
                })
            }
        };
        // end <= image_sectors, so end_block <= block_count.
        place(
            &mut placed,
            &mut extents,
            se.lba / sectors_per_block,
            end.div_ceil(sectors_per_block),
        );
    }
    let sequence_blocks = extents.blocks;
    if sequence_only {
        if sequence_blocks == 0 {
            return Err(PlanError::EmptySequence);
        }
    } else {
        place(&mut placed, &mut extents, 0, block_count);
    }

    let mut flags = FileFlags::empty();
    if sequence_only {
        flags = flags.with(FileFlags::SEQUENCE_ONLY);
    }
    if sequence.is_some() {
        flags = flags.with(FileFlags::LEARNED);
    }
    let plan = Plan {
        flags,
        block_size,
        image_size,
        block_count,
        stream_blocks: extents.blocks,
        extents: extents.list,
        sequence_blocks,
    };
    plan.header().map_err(PlanError::Layout)?;
    Ok(plan)
}

/// Appends the blocks of `start..end` not yet placed, marking them placed.
fn place(placed: &mut Bitmap, runs: &mut Runs, start: u64, end: u64) {
    let mut at = start;
    while let Some(first) = placed.next_clear(at, end) {
        let stop = placed.next_set(first, end).unwrap_or(end);
        placed.set_range(first, stop);
        runs.push(first, stop - first);
        at = stop;
    }
}

/// Extents in stream order, merging a run into the previous one when adjacent.
#[derive(Default)]
struct Runs {
    list: Vec<Extent>,
    blocks: u64,
}

impl Runs {
    fn push(&mut self, first: u64, count: u64) {
        self.blocks += count;
        if let Some(last) = self.list.last_mut() {
            if last.first + last.count == first {
                last.count += count;
                return;
            }
        }
        self.list.push(Extent { first, count });
    }
}

/// One bit per image block.
struct Bitmap {
    words: Vec<u64>,
}

impl Bitmap {
    fn new(bits: u64) -> Self {
        Bitmap {
            words: vec![0; bits.div_ceil(64) as usize],
        }
    }

    fn word(&self, bit: u64) -> u64 {
        self.words[(bit / 64) as usize]
    }

    /// The first bit in `from..end` whose value is `want`.
    fn next(&self, from: u64, end: u64, want: bool) -> Option<u64> {
        let mut at = from;
        while at < end {
            let w = if want { self.word(at) } else { !self.word(at) };
            let w = w >> (at % 64);
            if w != 0 {
                let found = at + u64::from(w.trailing_zeros());
                return (found < end).then_some(found);
            }
            at = (at / 64 + 1) * 64;
        }
        None
    }

    fn next_clear(&self, from: u64, end: u64) -> Option<u64> {
        self.next(from, end, false)
    }

    fn next_set(&self, from: u64, end: u64) -> Option<u64> {
        self.next(from, end, true)
    }

    fn set_range(&mut self, start: u64, end: u64) {
        let mut at = start;
        while at < end {
            let (w, lo) = ((at / 64) as usize, at % 64);
            let hi = (end - at + lo).min(64);
            let mask = if hi - lo == 64 {
                u64::MAX
            } else {
                ((1u64 << (hi - lo)) - 1) << lo
            };
            self.words[w] |= mask;
            at += hi - lo;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn se(lba: u64, count: u64) -> SectorExtent {
        SectorExtent { lba, count }
    }

    fn ex(first: u64, count: u64) -> Extent {
        Extent { first, count }
    }

    #[test]
    fn image_order_without_sequence() {
        let p = plan(10_000, 4096, None, false).unwrap();
        assert_eq!(p.block_count, 3);
        assert_eq!(p.extents, vec![ex(0, 3)]);
        assert_eq!(p.flags, FileFlags::empty());
        assert_eq!(p.sequence_blocks, 0);
    }

    #[test]
    fn sectors_round_out_dedupe_and_merge() {
        // 8 sectors per block; 16 blocks.
        let seq = [se(9, 1), se(17, 8), se(0, 1), se(8, 8), se(120, 8)];
        let p = plan(16 * 4096, 4096, Some(&seq), false).unwrap();
        // 9 → block 1; 17..25 → blocks 2..4 (merged with 1); 0 → block 0; 8..16 →
        // block 1 again (skipped); 120..128 → block 15; then the rest in order.
        assert_eq!(p.extents, vec![ex(1, 3), ex(0, 1), ex(15, 1), ex(4, 11)]);
        assert_eq!(p.sequence_blocks, 5);
        assert_eq!(p.stream_blocks, 16);
        assert!(p.flags.contains(FileFlags::LEARNED));
        assert!(!p.flags.contains(FileFlags::SEQUENCE_ONLY));

        let p = plan(16 * 4096, 4096, Some(&seq), true).unwrap();
        assert_eq!(p.extents, vec![ex(1, 3), ex(0, 1), ex(15, 1)]);
        assert_eq!(p.stream_blocks, 5);
        assert!(p.flags.contains(FileFlags::SEQUENCE_ONLY));
    }

    #[test]
    fn tail_merges_with_sequence_end() {
        let p = plan(4 * 512, 512, Some(&[se(0, 2)]), false).unwrap();
        assert_eq!(p.extents, vec![ex(0, 4)]);
    }

    #[test]
    fn rejects_bad_input() {
        assert!(matches!(
            plan(0, 4096, None, false),
            Err(PlanError::EmptyImage)
        ));
        assert!(matches!(
            plan(1, 4095, None, false),
            Err(PlanError::BadBlockSize(4095))
        ));
        assert!(matches!(
            plan(1, 256, None, false),
            Err(PlanError::BadBlockSize(256))
        ));
        assert!(matches!(
            plan(1, 1 << 21, None, false),
            Err(PlanError::BadBlockSize(_))
        ));
        assert!(matches!(
            plan(4096, 4096, None, true),
            Err(PlanError::SequenceOnlyWithoutSequence)
        ));
        assert!(matches!(
            plan(4096, 4096, Some(&[]), true),
            Err(PlanError::EmptySequence)
        ));
        // 1000 bytes are two sectors: sector 1 is in, sector 2 is past the end.
        assert!(plan(1000, 512, Some(&[se(1, 1)]), false).is_ok());
        assert!(matches!(
            plan(1000, 512, Some(&[se(1, 2)]), false),
            Err(PlanError::SequencePastEnd {
                index: 0,
                lba: 1,
                end: 3,
                image_sectors: 2
            })
        ));
        assert!(matches!(
            plan(1000, 512, Some(&[se(0, 1), se(u64::MAX, 2)]), false),
            Err(PlanError::SequencePastEnd { index: 1, .. })
        ));
        assert!(matches!(
            plan(1000, 512, Some(&[se(0, 0)]), false),
            Err(PlanError::EmptyExtent { index: 0 })
        ));
    }

    #[test]
    fn bitmap_scans_across_words() {
        let mut b = Bitmap::new(200);
        b.set_range(3, 130);
        assert_eq!(b.next_clear(0, 200), Some(0));
        assert_eq!(b.next_clear(3, 200), Some(130));
        assert_eq!(b.next_clear(3, 130), None);
        assert_eq!(b.next_set(0, 200), Some(3));
        assert_eq!(b.next_set(130, 200), None);
        assert_eq!(b.next_set(0, 3), None);
    }
}
