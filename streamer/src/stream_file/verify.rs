//! Checking every block of an open [`StreamFile`] against its hash, and the whole
//! file against the image it was packed from. Both run on every core and report
//! the first problem in stream (or image) order.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::MmapOptions;

use super::hash::{self, HashJob};
use super::{Progress, StreamFile, VerifyError};

/// Bytes of blocks per unit of parallel work.
const TASK_BYTES: u64 = 4 << 20;

impl StreamFile {
    /// Hashes every block in the data region and compares it with the manifest.
    ///
    /// # Errors
    /// [`VerifyError::BlockHash`] for the first block, in stream order, whose data
    /// does not match its hash.
    pub fn verify(&self, progress: &dyn Progress) -> Result<(), VerifyError> {
        let n = self.stream_blocks();
        let bs = u64::from(self.block_size());
        let per_task = (TASK_BYTES / bs).max(1);
        let tasks = n.div_ceil(per_task);
        let next = AtomicU64::new(0);
        let first_bad = AtomicU64::new(u64::MAX);
        let done = AtomicU64::new(0);
        let manifest = self.manifest();
        let work = || loop {
            let t = next.fetch_add(1, Ordering::Relaxed);
            let start = t.saturating_mul(per_task);
            // Tasks are handed out in order, so once a bad block is known no later
            // task can hold an earlier one.
            if t >= tasks || start > first_bad.load(Ordering::Relaxed) {
                return;
            }
            // Read ahead this task and the next (the file may not be cached).
            if let Some(at) = self.block_offset(start) {
                self.will_need(at as usize, (2 * per_task * bs) as usize);
            }
            for i in start..(start + per_task).min(n) {
                let good = match (
                    self.block(i),
                    self.image_block(i).and_then(|b| manifest.hash(b)),
                ) {
                    (Some(data), Some(want)) => blake3::hash(data).as_bytes() == want,
                    _ => false,
                };
                if !good {
                    first_bad.fetch_min(i, Ordering::Relaxed);
                    break;
                }
            }
            done.fetch_add(per_task * bs, Ordering::Relaxed);
        };
        progress.start(n * bs);
        hash::run_with(
            hash::threads(),
            work,
            || (),
            || progress.set(done.load(Ordering::Relaxed).min(n * bs)),
        );
        progress.finish();
        match first_bad.into_inner() {
            u64::MAX => Ok(()),
            i => Err(VerifyError::BlockHash {
                path: self.path().to_owned(),
                block: self.image_block(i).unwrap_or(u64::MAX),
                stream_index: i,
                offset: self.block_offset(i).unwrap_or(u64::MAX),
            }),
        }
    }

    /// Compares the file with the image it was packed from: the image's size, each
    /// of its blocks against the manifest's hash (and so against the stream's copy,
    /// which [`StreamFile::verify`] checks against the same hash), then its BLAKE3
    /// against `image_hash`.
    ///
    /// # Errors
    /// [`VerifyError::Io`] if the image cannot be read; [`VerifyError::ImageSize`],
    /// [`VerifyError::ImageBlock`] (the first block that differs) or
    /// [`VerifyError::ImageHash`].
    pub fn verify_image(&self, image: &Path, progress: &dyn Progress) -> Result<(), VerifyError> {
        let io_err = |source| VerifyError::Io {
            path: image.to_owned(),
            source,
        };
        let mut file = File::open(image).map_err(io_err)?;
        let size = file.seek(SeekFrom::End(0)).map_err(io_err)?;
        let h = self.header();
        if size != h.image_size {
            return Err(VerifyError::ImageSize {
                image: image.to_owned(),
                expected: h.image_size,
                actual: size,
            });
        }
        // SAFETY: read-only mapping of an image nobody should be writing; a
        // concurrent writer can make the comparison fail, not read out of bounds.
        let map = unsafe { MmapOptions::new().len(size as usize).map(&file) }.map_err(io_err)?;
        if map.len() as u64 != size {
            return Err(VerifyError::ImageSize {
                image: image.to_owned(),
                expected: h.image_size,
                actual: map.len() as u64,
            });
        }
        let _ = map.advise(memmap2::Advice::Sequential);
        let mut hashes = vec![[0u8; 32]; h.block_count as usize];
        let job = HashJob::new(&map, h.block_size, &mut hashes);
        progress.start(size);
        hash::run_with(
            hash::threads(),
            || job.work(),
            || (),
            || progress.set(job.done()),
        );
        progress.finish();
        let image_hash = job.image_hash();
        drop(job);
        let manifest = self.manifest();
        for (block, got) in (0u64..).zip(&hashes) {
            if manifest.hash(block) != Some(got) {
                return Err(VerifyError::ImageBlock {
                    path: self.path().to_owned(),
                    image: image.to_owned(),
                    block,
                });
            }
        }
        if image_hash != Some(h.image_hash) {
            return Err(VerifyError::ImageHash {
                image: image.to_owned(),
            });
        }
        Ok(())
    }
}
