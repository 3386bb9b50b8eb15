//! [`CowDisk`]: a RAM copy-on-write overlay per block over a read-only
//! [`Base`], so a client can write to an image nobody may change (the client's
//! verified cache, an image being learnt) and see its writes until it
//! disconnects, while the base stays exactly as it was.
//!
//! The overlay maps a block number to either a block of data or a "zero" marker
//! (a trimmed or write-zeroed block, which costs no data memory and reads as
//! zeros). Blocks not in the map read from the base.
//!
//! Two rules shape the code. First, the base may be slow: in the client loader
//! a read of a block that has not arrived yet waits for a network fetch. So no
//! lock is ever held across [`Base::read_base`], and a read asks the base for
//! each run of consecutive non-overlaid blocks in one call, not one call per
//! block. Second, entries are never removed from the map, only changed between
//! data and zero. That makes the copy-on-write of a partial block safe without
//! holding the lock across the base read: a block found absent is read from the
//! base first, and if another writer got there in between, its entry (newer
//! than the base) wins and the base copy is dropped.

use crate::{Base, Error, Export};
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fmt;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// One overlaid block.
enum Slot {
    /// Written data, a whole block long (the last block's tail past the export's
    /// end is never read).
    Data(Box<[u8]>),
    /// Reads as zeros; holds no data.
    Zero,
}

struct Overlay {
    blocks: HashMap<u64, Slot>,
    /// How many `blocks` are `Slot::Data`.
    data_blocks: usize,
}

/// Base copies of (at most) a write's head and tail blocks, taken before the
/// lock: block number and bytes.
type Copies = [Option<(u64, Box<[u8]>)>; 2];

/// What a write-like call does to each block in its range.
#[derive(Clone, Copy)]
enum Op<'a> {
    Write(&'a [u8]),
    Zeroes { may_trim: bool },
    Trim,
}

/// A block size [`CowDisk::try_new`] refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidBlockSize(pub u32);

impl fmt::Display for InvalidBlockSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "overlay block size {} is not a power of two from 512 to 1048576 bytes",
            self.0
        )
    }
}

impl std::error::Error for InvalidBlockSize {}

/// A RAM copy-on-write overlay per block over a [`Base`]: writes never reach
/// the base. See the module documentation.
///
/// Thread safe: one `RwLock` around the map, never held across a base read.
/// Flush and FUA succeed at once: the overlay is volatile by design (it
/// disappears with the process), so there is nothing more stable to reach.
pub struct CowDisk<B: Base> {
    base: B,
    size: u64,
    shift: u32,
    /// Most data blocks the overlay may hold (`usize::MAX`: no limit).
    limit_blocks: usize,
    overlay: RwLock<Overlay>,
}

impl<B: Base> fmt::Debug for CowDisk<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CowDisk")
            .field("size", &self.size)
            .field("block_size", &self.block_size())
            .field("overlay_blocks", &self.overlay_blocks())
            .field("overlay_bytes", &self.overlay_bytes())
            .finish_non_exhaustive()
    }
}

impl<B: Base> CowDisk<B> {
    /// Smallest block size.
    pub const MIN_BLOCK: u32 = 512;
    /// Largest block size.
    pub const MAX_BLOCK: u32 = 1 << 20;

    /// An empty overlay over `base` with blocks of `block_size` bytes (a power
    /// of two from 512 to 1 MiB). The base's size is read once, here.
    pub fn try_new(base: B, block_size: u32) -> Result<Self, InvalidBlockSize> {
        if !block_size.is_power_of_two()
            || !(Self::MIN_BLOCK..=Self::MAX_BLOCK).contains(&block_size)
        {
            return Err(InvalidBlockSize(block_size));
        }
        Ok(CowDisk {
            size: base.size(),
            base,
            shift: block_size.trailing_zeros(),
            limit_blocks: usize::MAX,
            overlay: RwLock::new(Overlay {
                blocks: HashMap::new(),
                data_blocks: 0,
            }),
        })
    }

    /// [`Self::try_new`] for a block size the caller chose.
    ///
    /// # Panics
    /// If `block_size` is not a power of two from 512 to 1 MiB.
    pub fn new(base: B, block_size: u32) -> Self {
        match Self::try_new(base, block_size) {
            Ok(d) => d,
            Err(e) => panic!("{e}"),
        }
    }

    /// Caps the overlay's data at `bytes` (rounded down to whole blocks):
    /// a write that would need more fails with [`Error::NoSpace`] and changes
    /// nothing. Zero markers do not count.
    pub fn with_memory_limit(mut self, bytes: u64) -> Self {
        self.limit_blocks = usize::try_from(bytes >> self.shift).unwrap_or(usize::MAX);
        self
    }

    /// The data under the overlay.
    pub fn base(&self) -> &B {
        &self.base
    }

    /// The overlay's block size.
    pub fn block_size(&self) -> u32 {
        1 << self.shift
    }

    /// Blocks that no longer read from the base (written or zeroed).
    pub fn overlay_blocks(&self) -> usize {
        self.lock_read().blocks.len()
    }

    /// Bytes of data the overlay holds (written blocks × block size).
    pub fn overlay_bytes(&self) -> u64 {
        (self.lock_read().data_blocks as u64) << self.shift
    }

    // A writer that panicked mid-copy leaves at worst a block with part of its
    // write, which is what a failed write may leave anyway: use the data.
    fn lock_read(&self) -> RwLockReadGuard<'_, Overlay> {
        self.overlay.read().unwrap_or_else(PoisonError::into_inner)
    }
    fn lock_write(&self) -> RwLockWriteGuard<'_, Overlay> {
        self.overlay.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The export's bytes that block `b` holds: `start..end`, `end` clipped to
    /// the size.
    fn span(&self, b: u64) -> (u64, u64) {
        let start = b << self.shift;
        (start, start.saturating_add(1 << self.shift).min(self.size))
    }

    /// `offset + len`, if within the size.
    fn end_of(&self, offset: u64, len: u64) -> Result<u64, Error> {
        offset
            .checked_add(len)
            .filter(|&end| end <= self.size)
            .ok_or(Error::Invalid)
    }

    fn alloc_block(&self) -> Result<Box<[u8]>, Error> {
        let len = 1usize << self.shift;
        let mut v = Vec::new();
        v.try_reserve_exact(len).map_err(|_| Error::NoMem)?;
        v.resize(len, 0);
        Ok(v.into_boxed_slice())
    }

    /// Block `b` as the base has it (the copy in copy-on-write).
    fn base_block(&self, b: u64) -> Result<Box<[u8]>, Error> {
        let (start, end) = self.span(b);
        let mut blk = self.alloc_block()?;
        // A block's span is at most the block size, so this fits.
        self.base
            .read_base(start, &mut blk[..(end - start) as usize])?;
        Ok(blk)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        let end = self.end_of(offset, buf.len() as u64)?;
        let mut pos = offset;
        while pos < end {
            // Under the lock: copy overlaid blocks until the first one that is
            // not, then find where that run of base blocks ends.
            let run_end = {
                let ov = self.lock_read();
                let mut run = None;
                while pos < end {
                    let b = pos >> self.shift;
                    let (start, stop) = self.span(b);
                    let stop = stop.min(end);
                    let dst = &mut buf[(pos - offset) as usize..(stop - offset) as usize];
                    match ov.blocks.get(&b) {
                        Some(Slot::Data(d)) => {
                            let at = (pos - start) as usize;
                            dst.copy_from_slice(&d[at..at + dst.len()]);
                        }
                        Some(Slot::Zero) => dst.fill(0),
                        None => {
                            let mut e = stop;
                            while e < end && !ov.blocks.contains_key(&(e >> self.shift)) {
                                e = self.span(e >> self.shift).1.min(end);
                            }
                            run = Some(e);
                            break;
                        }
                    }
                    pos = stop;
                }
                run
            };
            if let Some(e) = run_end {
                // The lock is released: the base may take its time.
                self.base.read_base(
                    pos,
                    &mut buf[(pos - offset) as usize..(e - offset) as usize],
                )?;
                pos = e;
            }
        }
        Ok(())
    }

    /// Applies `op` to `len` bytes at `offset`.
    fn modify(&self, offset: u64, len: u64, op: Op<'_>) -> Result<(), Error> {
        let end = self.end_of(offset, len)?;
        if len == 0 {
            return Ok(());
        }
        let (first, last) = (offset >> self.shift, (end - 1) >> self.shift);
        let whole = |b: u64| {
            let (s, e) = self.span(b);
            offset <= s && end >= e
        };
        loop {
            // Copy on write: the base's bytes of each partial block not yet in
            // the overlay, read before taking the lock.
            let mut copies: Copies = [None, None];
            if !matches!(op, Op::Trim) {
                // The head and the tail block; one block if they are the same.
                let ends = [Some(first), (last != first).then_some(last)];
                for (slot, b) in copies.iter_mut().zip(ends) {
                    let Some(b) = b else { continue };
                    if !whole(b) && !self.lock_read().blocks.contains_key(&b) {
                        *slot = Some((b, self.base_block(b)?));
                    }
                }
            }
            let mut ov = self.lock_write();
            let Overlay {
                blocks,
                data_blocks,
            } = &mut *ov;
            // Check before changing anything: a partial block that appeared
            // absent must have its copy (entries are never removed, so a block
            // present when the copies were taken is still present; the retry
            // only guards that invariant), and the memory limit must hold.
            let mut need = 0usize;
            let mut missing = false;
            for b in first..=last {
                let slot = blocks.get(&b);
                let partial_absent = !whole(b) && slot.is_none();
                if partial_absent && !matches!(op, Op::Trim) && !has_copy(&copies, b) {
                    missing = true;
                }
                need += usize::from(match (op, slot) {
                    (_, Some(Slot::Data(_))) | (Op::Trim, _) => false,
                    (Op::Zeroes { may_trim: true }, _) => !whole(b),
                    _ => true,
                });
            }
            if missing {
                continue;
            }
            if data_blocks.saturating_add(need) > self.limit_blocks {
                return Err(Error::NoSpace);
            }
            for b in first..=last {
                let (s, e) = self.span(b);
                let (lo, hi) = (offset.max(s), end.min(e));
                let marker = match op {
                    Op::Trim => true,
                    Op::Zeroes { may_trim } => may_trim,
                    Op::Write(_) => false,
                };
                if marker {
                    // Trim leaves partial blocks alone (the protocol allows a
                    // trim to do nothing); write-zeroes zeroes them below.
                    if whole(b) {
                        if let Some(Slot::Data(_)) = blocks.insert(b, Slot::Zero) {
                            *data_blocks -= 1;
                        }
                        continue;
                    }
                    if matches!(op, Op::Trim) {
                        continue;
                    }
                }
                let data = match blocks.entry(b) {
                    Entry::Occupied(o) => {
                        let slot = o.into_mut();
                        if let Slot::Zero = slot {
                            *slot = Slot::Data(self.alloc_block()?);
                            *data_blocks += 1;
                        }
                        match slot {
                            Slot::Data(d) => d,
                            Slot::Zero => unreachable!("just replaced"),
                        }
                    }
                    Entry::Vacant(v) => {
                        let blk = match take_copy(&mut copies, b) {
                            Some(c) => c,
                            None => self.alloc_block()?,
                        };
                        *data_blocks += 1;
                        match v.insert(Slot::Data(blk)) {
                            Slot::Data(d) => d,
                            Slot::Zero => unreachable!("just inserted"),
                        }
                    }
                };
                let dst = &mut data[(lo - s) as usize..(hi - s) as usize];
                match op {
                    Op::Write(src) => {
                        let at = (lo - offset) as usize;
                        dst.copy_from_slice(&src[at..at + dst.len()]);
                    }
                    Op::Zeroes { .. } | Op::Trim => dst.fill(0),
                }
            }
            return Ok(());
        }
    }
}

fn has_copy(copies: &Copies, b: u64) -> bool {
    copies.iter().flatten().any(|(c, _)| *c == b)
}
fn take_copy(copies: &mut Copies, b: u64) -> Option<Box<[u8]>> {
    copies
        .iter_mut()
        .find(|c| matches!(c, Some((cb, _)) if *cb == b))
        .and_then(Option::take)
        .map(|(_, blk)| blk)
}

impl<B: Base> Export for CowDisk<B> {
    fn size(&self) -> u64 {
        self.size
    }

    /// Per block: the overlay if written or zeroed, else the base, asking the
    /// base once per run of consecutive non-overlaid blocks.
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        self.read_at(offset, buf)
    }

    /// Whole blocks are copied in; a partial block not yet overlaid is first
    /// read from the base. `fua` needs nothing more (see the type).
    fn write(&self, offset: u64, data: &[u8], _fua: bool) -> Result<(), Error> {
        self.modify(offset, data.len() as u64, Op::Write(data))
    }

    fn flush(&self) -> Result<(), Error> {
        Ok(())
    }

    /// Blocks wholly inside the range become zero markers (freeing their data);
    /// partial blocks are left as they are.
    fn trim(&self, offset: u64, len: u64) -> Result<(), Error> {
        self.modify(offset, len, Op::Trim)
    }

    /// Whole blocks become zero markers with `may_trim`, zero-filled data
    /// blocks without it (the client asked for the range to stay allocated, so
    /// a later write there cannot fail for lack of memory); partial blocks are
    /// zeroed through the copy-on-write path.
    fn write_zeroes(&self, offset: u64, len: u64, may_trim: bool) -> Result<(), Error> {
        self.modify(offset, len, Op::Zeroes { may_trim })
    }
}

#[cfg(test)]
#[path = "cow_tests.rs"]
mod tests;
