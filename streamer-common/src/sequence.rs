//! The sequence file: the boot order, as ordered extents of 512-byte sectors (the
//! patent's sector sequence file, steps 406 and 428), independent of any stream
//! file's block size.
//!
//! ```text
//! 0   magic "STRMSEQ\0"      8   version u16 (1)   10 flags u16 (0)
//! 12  sector_size u32 (512)  16  extent_count u64
//! 24  crc32c u32 (of bytes 0..24 and every extent)  28 reserved u32 (0)
//! 32  extent_count × (first sector u64, sectors u64)
//! ```
//! Little-endian. Extents are non-empty; they may repeat or overlap (a reader may
//! read a sector twice): `streamer pack` keeps the first occurrence.

use crate::bytes::{le16, le32, le64, put_le16, put_le32, put_le64};
use crate::crc32c::Crc32c;

/// The first eight bytes of a sequence file.
pub const MAGIC: [u8; 8] = *b"STRMSEQ\0";
/// The one sequence-file version this build reads and writes.
pub const VERSION: u16 = 1;
/// The sector size every sequence is counted in.
pub const SECTOR_SIZE: u32 = 512;
/// Bytes before the extents.
pub const HEADER_LEN: usize = 32;
/// Bytes per extent record.
pub const EXTENT_LEN: usize = 16;

/// Why a sequence file is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceError {
    /// Shorter than its header or its extents.
    Truncated,
    /// Longer than its extents.
    TrailingBytes,
    /// Not a sequence file.
    BadMagic,
    /// A version this build does not read.
    UnsupportedVersion(u16),
    /// A reserved field or flag is set, or the sector size is not 512.
    Reserved,
    /// The checksum does not match the contents.
    BadChecksum,
    /// An extent is empty or its end overflows.
    BadExtent {
        /// Its index.
        index: u64,
    },
}

impl core::fmt::Display for SequenceError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::Truncated => f.write_str("sequence file truncated"),
            Self::TrailingBytes => f.write_str("sequence file has trailing bytes"),
            Self::BadMagic => f.write_str("not a sequence file (bad magic)"),
            Self::UnsupportedVersion(v) => write!(
                f,
                "sequence-file version {v} is not supported (this build reads {VERSION})"
            ),
            Self::Reserved => f.write_str("reserved field set or sector size not 512"),
            Self::BadChecksum => f.write_str("sequence file checksum mismatch (corrupted)"),
            Self::BadExtent { index } => write!(f, "sequence extent {index} is empty or overflows"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for SequenceError {}

/// One run of sectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SectorExtent {
    /// First sector (LBA).
    pub lba: u64,
    /// Sectors.
    pub count: u64,
}

/// A validated, zero-copy view of a sequence file.
#[derive(Debug, Clone, Copy)]
pub struct SequenceView<'a> {
    extents: &'a [u8],
}

impl<'a> SequenceView<'a> {
    /// Checks every rule and the checksum.
    pub fn parse(b: &'a [u8]) -> Result<Self, SequenceError> {
        if b.len() < HEADER_LEN {
            return Err(SequenceError::Truncated);
        }
        if b[0..8] != MAGIC {
            return Err(SequenceError::BadMagic);
        }
        let v = le16(b, 8..10);
        if v != VERSION {
            return Err(SequenceError::UnsupportedVersion(v));
        }
        if le16(b, 10..12) != 0 || le32(b, 12..16) != SECTOR_SIZE || le32(b, 28..32) != 0 {
            return Err(SequenceError::Reserved);
        }
        let n = le64(b, 16..24);
        let need = n
            .checked_mul(EXTENT_LEN as u64)
            .and_then(|x| x.checked_add(HEADER_LEN as u64))
            .ok_or(SequenceError::Truncated)?;
        let have = b.len() as u64;
        if have < need {
            return Err(SequenceError::Truncated);
        }
        if have > need {
            return Err(SequenceError::TrailingBytes);
        }
        let extents = &b[HEADER_LEN..];
        if checksum(&b[..24], extents) != le32(b, 24..28) {
            return Err(SequenceError::BadChecksum);
        }
        let view = SequenceView { extents };
        for (index, e) in view.extents().enumerate() {
            if e.count == 0 || e.lba.checked_add(e.count).is_none() {
                return Err(SequenceError::BadExtent {
                    index: index as u64,
                });
            }
        }
        Ok(view)
    }

    /// The extents, in order.
    pub fn extents(&self) -> impl ExactSizeIterator<Item = SectorExtent> + 'a {
        self.extents.chunks_exact(EXTENT_LEN).map(|c| SectorExtent {
            lba: le64(c, 0..8),
            count: le64(c, 8..16),
        })
    }
}

fn checksum(head: &[u8], extents: &[u8]) -> u32 {
    let mut c = Crc32c::new();
    c.update(head);
    c.update(extents);
    c.finish()
}

/// Bytes a sequence file of `n` extents takes.
pub const fn encoded_len(n: usize) -> usize {
    HEADER_LEN + n * EXTENT_LEN
}

/// Writes a sequence file into `out`, which must be exactly [`encoded_len`] bytes.
///
/// # Errors
/// [`SequenceError::Truncated`] if `out` has the wrong length,
/// [`SequenceError::BadExtent`] for an empty or overflowing extent.
pub fn encode(extents: &[SectorExtent], out: &mut [u8]) -> Result<(), SequenceError> {
    if out.len() != encoded_len(extents.len()) {
        return Err(SequenceError::Truncated);
    }
    out[0..8].copy_from_slice(&MAGIC);
    put_le16(out, 8..10, VERSION);
    put_le16(out, 10..12, 0);
    put_le32(out, 12..16, SECTOR_SIZE);
    put_le64(out, 16..24, extents.len() as u64);
    put_le32(out, 28..32, 0);
    for (i, e) in extents.iter().enumerate() {
        if e.count == 0 || e.lba.checked_add(e.count).is_none() {
            return Err(SequenceError::BadExtent { index: i as u64 });
        }
        let at = HEADER_LEN + i * EXTENT_LEN;
        put_le64(out, at..at + 8, e.lba);
        put_le64(out, at + 8..at + 16, e.count);
    }
    let (head, rest) = out.split_at_mut(HEADER_LEN);
    let c = checksum(&head[..24], rest);
    put_le32(head, 24..28, c);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let ex = [
            SectorExtent { lba: 8, count: 16 },
            SectorExtent { lba: 0, count: 1 },
        ];
        let mut b = [0u8; encoded_len(2)];
        encode(&ex, &mut b).unwrap();
        let v = SequenceView::parse(&b).unwrap();
        assert!(v.extents().eq(ex.iter().copied()));
        for i in 0..b.len() {
            for bit in 0..8 {
                let mut c = b;
                c[i] ^= 1 << bit;
                assert!(
                    SequenceView::parse(&c).is_err(),
                    "flip at byte {i} bit {bit} accepted"
                );
            }
        }
        assert_eq!(
            SequenceView::parse(&b[..40]).unwrap_err(),
            SequenceError::Truncated
        );
    }
}
