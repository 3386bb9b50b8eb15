//! Hashing an image on every core: the BLAKE3 of the whole image and one BLAKE3 per
//! block, in one pass over the bytes.
//!
//! The image is cut into leaves of [`LEAF_LEN`] bytes, each a complete subtree of
//! BLAKE3's tree (the leaves are powers of two, aligned, and a multiple of every
//! block size), so workers can take leaves in any order: a worker hashes the leaf's
//! subtree (`blake3::hazmat`) and its blocks piece by piece while the piece is in
//! cache, and [`HashJob::image_hash`] merges the leaves' chaining values into the
//! root exactly as BLAKE3 builds its tree.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use blake3::hazmat::{
    left_subtree_len, merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt, Mode,
};

/// Bytes per leaf: a unit of parallel work.
pub(crate) const LEAF_LEN: u64 = 16 << 20;
/// Bytes hashed for the image and then for its blocks while in cache.
const PIECE_LEN: usize = 1 << 20;

/// One image, hashed by any number of workers calling [`HashJob::work`].
pub(crate) struct HashJob<'a> {
    image: &'a [u8],
    block_size: usize,
    next_leaf: AtomicUsize,
    /// Bytes hashed so far (for progress).
    done: AtomicU64,
    abort: AtomicBool,
    /// Per leaf: its subtree's chaining value (the root hash if there is one leaf).
    cvs: Vec<OnceLock<ChainingValue>>,
    /// Per leaf: where its blocks' hashes go.
    hashes: Vec<Mutex<&'a mut [[u8; 32]]>>,
}

impl<'a> HashJob<'a> {
    /// A job for `image`, writing block hashes into `hashes` (one per block,
    /// `image.len().div_ceil(block_size)` of them). `block_size` is a power of two
    /// no larger than [`PIECE_LEN`].
    pub(crate) fn new(image: &'a [u8], block_size: u32, hashes: &'a mut [[u8; 32]]) -> Self {
        let block_size = block_size as usize;
        debug_assert!(block_size.is_power_of_two() && block_size <= PIECE_LEN);
        debug_assert_eq!(hashes.len(), image.len().div_ceil(block_size));
        let leaves = (image.len() as u64).div_ceil(LEAF_LEN) as usize;
        let per_leaf = LEAF_LEN as usize / block_size;
        HashJob {
            image,
            block_size,
            next_leaf: AtomicUsize::new(0),
            done: AtomicU64::new(0),
            abort: AtomicBool::new(false),
            cvs: (0..leaves).map(|_| OnceLock::new()).collect(),
            hashes: hashes.chunks_mut(per_leaf).map(Mutex::new).collect(),
        }
    }

    /// Hashes leaves until none is left or [`Self::abort`] was called.
    pub(crate) fn work(&self) {
        while !self.abort.load(Ordering::Relaxed) {
            let leaf = self.next_leaf.fetch_add(1, Ordering::Relaxed);
            if leaf >= self.cvs.len() {
                return;
            }
            self.hash_leaf(leaf);
        }
    }

    /// Makes the workers stop after their current piece.
    pub(crate) fn abort(&self) {
        self.abort.store(true, Ordering::Relaxed);
    }

    /// Bytes hashed so far.
    pub(crate) fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    fn hash_leaf(&self, leaf: usize) {
        let start = leaf * LEAF_LEN as usize;
        let end = (start + LEAF_LEN as usize).min(self.image.len());
        let one_leaf = self.cvs.len() == 1;
        let mut tree = blake3::Hasher::new();
        if !one_leaf {
            tree.set_input_offset(start as u64);
        }
        // Each leaf's slot is locked once, by the one worker that took the leaf.
        let mut slot = match self.hashes[leaf].lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut out = slot.iter_mut();
        for piece in self.image[start..end].chunks(PIECE_LEN) {
            if self.abort.load(Ordering::Relaxed) {
                return;
            }
            tree.update(piece);
            for (block, h) in piece.chunks(self.block_size).zip(&mut out) {
                *h = hash_block(block, self.block_size);
            }
            self.done.fetch_add(piece.len() as u64, Ordering::Relaxed);
        }
        let cv = if one_leaf {
            *tree.finalize().as_bytes()
        } else {
            tree.finalize_non_root()
        };
        // Each leaf is taken by exactly one worker (`fetch_add`), so the cell is empty.
        let _ = self.cvs[leaf].set(cv);
    }

    /// The BLAKE3 of the whole image, once every leaf is hashed; `None` if the job
    /// was aborted before it finished.
    pub(crate) fn image_hash(&self) -> Option<[u8; 32]> {
        if self.cvs.iter().any(|c| c.get().is_none()) {
            return None;
        }
        if self.cvs.len() == 1 {
            return self.cvs[0].get().copied();
        }
        let len = self.image.len() as u64;
        let left = left_subtree_len(len);
        let l = self.subtree(0, left)?;
        let r = self.subtree(left, len - left)?;
        Some(*merge_subtrees_root(&l, &r, Mode::Hash).as_bytes())
    }

    /// The chaining value of the subtree of `len` bytes at `offset` (a leaf
    /// boundary; `len` reaches a leaf boundary or the image's end).
    fn subtree(&self, offset: u64, len: u64) -> Option<ChainingValue> {
        if len <= LEAF_LEN {
            return self.cvs.get((offset / LEAF_LEN) as usize)?.get().copied();
        }
        // More than one leaf: BLAKE3's left subtree is the largest power-of-two
        // number of chunks below `len`, a multiple of LEAF_LEN.
        let left = left_subtree_len(len);
        let l = self.subtree(offset, left)?;
        let r = self.subtree(offset + left, len - left)?;
        Some(merge_subtrees_non_root(&l, &r, Mode::Hash))
    }
}

/// The BLAKE3 of one block; a short (last) block is hashed zero-padded to
/// `block_size`.
pub(crate) fn hash_block(block: &[u8], block_size: usize) -> [u8; 32] {
    if block.len() == block_size {
        *blake3::hash(block).as_bytes()
    } else {
        let mut padded = vec![0u8; block_size];
        padded[..block.len()].copy_from_slice(block);
        *blake3::hash(&padded).as_bytes()
    }
}

/// Runs `work` on `threads` scoped threads and `main` on the calling thread, and
/// returns `main`'s result once every worker has returned. `tick` is called on the
/// calling thread about ten times a second while it waits for the workers, and
/// once at the end.
pub(crate) fn run_with<R>(
    threads: usize,
    work: impl Fn() + Sync,
    main: impl FnOnce() -> R,
    tick: impl Fn(),
) -> R {
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        for _ in 0..threads.max(1) {
            let tx = tx.clone();
            let work = &work;
            s.spawn(move || {
                work();
                drop(tx);
            });
        }
        drop(tx);
        let r = main();
        // Each worker drops its sender when done: the channel disconnects when the
        // last one is.
        loop {
            tick();
            match rx.recv_timeout(std::time::Duration::from_millis(100)) {
                Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        tick();
        r
    })
}

/// Worker threads to use: every core.
pub(crate) fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(len: usize, block_size: u32, threads: usize) {
        let image: Vec<u8> = (0..len)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let mut hashes = vec![[0u8; 32]; len.div_ceil(block_size as usize)];
        let job = HashJob::new(&image, block_size, &mut hashes);
        run_with(threads, || job.work(), || (), || {});
        assert_eq!(
            job.image_hash(),
            Some(*blake3::hash(&image).as_bytes()),
            "len {len}"
        );
        drop(job);
        for (i, h) in hashes.iter().enumerate() {
            let bs = block_size as usize;
            let mut b = image[i * bs..((i + 1) * bs).min(len)].to_vec();
            b.resize(bs, 0);
            assert_eq!(h, blake3::hash(&b).as_bytes(), "block {i} of len {len}");
        }
    }

    #[test]
    fn matches_plain_blake3_across_leaf_counts() {
        let leaf = LEAF_LEN as usize;
        for len in [
            1,
            1000,
            4096,
            leaf - 1,
            leaf,
            leaf + 1,
            2 * leaf + 4097,
            3 * leaf,
            5 * leaf - 512,
        ] {
            check(len, 4096, 2);
        }
        check(leaf + 700, 512, 3);
        check(2 * leaf + 1, 1 << 20, 1);
    }
}
