//! Fixed-width integer access on slices whose length the caller has already
//! checked. Every caller validates lengths first (`new_checked`), so the range
//! indexing here cannot go out of bounds for a validated buffer.

use core::ops::Range;

#[inline]
pub(crate) fn be16(b: &[u8], r: Range<usize>) -> u16 {
    let mut a = [0u8; 2];
    a.copy_from_slice(&b[r]);
    u16::from_be_bytes(a)
}
#[inline]
pub(crate) fn be32(b: &[u8], r: Range<usize>) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[r]);
    u32::from_be_bytes(a)
}
#[inline]
pub(crate) fn be64(b: &[u8], r: Range<usize>) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[r]);
    u64::from_be_bytes(a)
}
#[inline]
pub(crate) fn le16(b: &[u8], r: Range<usize>) -> u16 {
    let mut a = [0u8; 2];
    a.copy_from_slice(&b[r]);
    u16::from_le_bytes(a)
}
#[inline]
pub(crate) fn le32(b: &[u8], r: Range<usize>) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[r]);
    u32::from_le_bytes(a)
}
#[inline]
pub(crate) fn le64(b: &[u8], r: Range<usize>) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[r]);
    u64::from_le_bytes(a)
}
#[inline]
pub(crate) fn put_be16(b: &mut [u8], r: Range<usize>, v: u16) {
    b[r].copy_from_slice(&v.to_be_bytes());
}
#[inline]
pub(crate) fn put_be32(b: &mut [u8], r: Range<usize>, v: u32) {
    b[r].copy_from_slice(&v.to_be_bytes());
}
#[inline]
pub(crate) fn put_be64(b: &mut [u8], r: Range<usize>, v: u64) {
    b[r].copy_from_slice(&v.to_be_bytes());
}
#[inline]
pub(crate) fn put_le16(b: &mut [u8], r: Range<usize>, v: u16) {
    b[r].copy_from_slice(&v.to_le_bytes());
}
#[inline]
pub(crate) fn put_le32(b: &mut [u8], r: Range<usize>, v: u32) {
    b[r].copy_from_slice(&v.to_le_bytes());
}
#[inline]
pub(crate) fn put_le64(b: &mut [u8], r: Range<usize>, v: u64) {
    b[r].copy_from_slice(&v.to_le_bytes());
}
