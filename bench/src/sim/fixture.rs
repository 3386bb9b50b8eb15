//! Test images: deterministic pseudo-random bytes packed into a stream file in
//! memory.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use streamer_common::stream_file::{
    Extent, FileFlags, StreamHeader, HEADER_HASHED_LEN, HEADER_LEN,
};

/// `len` pseudo-random bytes from `seed`.
pub fn image(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// Packs `image` into a stream file with `block_size` blocks, streamed in image
/// order. Mirrors what `streamer pack` writes.
pub fn stream_file(image: &[u8], block_size: u32) -> Vec<u8> {
    let bs = block_size as usize;
    let blocks = image.len().div_ceil(bs) as u64;
    let mut h = StreamHeader::new(
        FileFlags::empty(),
        block_size,
        image.len() as u64,
        1,
        blocks,
    )
    .expect("fixture geometry is valid");
    let mut out = vec![0u8; h.file_len() as usize];
    let mut manifest = vec![0u8; h.manifest_len as usize];
    Extent {
        first: 0,
        count: blocks,
    }
    .emit(&mut manifest[..16]);
    for b in 0..blocks as usize {
        let mut block = vec![0u8; bs];
        let end = ((b + 1) * bs).min(image.len());
        block[..end - b * bs].copy_from_slice(&image[b * bs..end]);
        manifest[16 + 32 * b..16 + 32 * (b + 1)].copy_from_slice(blake3::hash(&block).as_bytes());
        let at = h.data_offset as usize + b * bs;
        out[at..at + bs].copy_from_slice(&block);
    }
    h.image_hash = *blake3::hash(image).as_bytes();
    h.manifest_hash = *blake3::hash(&manifest).as_bytes();
    let mo = h.manifest_offset as usize;
    out[mo..mo + manifest.len()].copy_from_slice(&manifest);
    let mut hb = [0u8; HEADER_LEN];
    h.emit(&mut hb);
    h.header_hash = *blake3::hash(&hb[..HEADER_HASHED_LEN]).as_bytes();
    h.emit(&mut hb);
    out[..HEADER_LEN].copy_from_slice(&hb);
    out
}
