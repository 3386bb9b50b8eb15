//! Copying the image's blocks into the stream file's data region, in stream order.
//!
//! Three ways, best first, each falling back to the next where the file system or
//! the alignment refuses it:
//!
//! 1. `O_DIRECT` writes straight from the image's mapping: no copy through the page
//!    cache, almost no CPU (the CPU is busy hashing), and the data is on the disk
//!    when the write returns, so the final `fsync` has little left to do. Two
//!    writers keep the device busy.
//! 2. `copy_file_range`: the kernel copies page cache to page cache.
//! 3. `pwrite` from the mapping.
//!
//! The last two start write-back of each piece as it is written, for the same
//! reason. The output was sized first, so the zero tail of a short last block
//! needs no writing.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use streamer_common::stream_file::StreamHeader;

use super::Plan;

/// Bytes per piece: the unit of work, of progress and of write-back.
const PIECE_LEN: u64 = 32 << 20;
/// `O_DIRECT` offsets and lengths are multiples of this (the smallest logical
/// block size; a device that needs more refuses, and the copy falls back).
const DIRECT_ALIGN: u64 = 512;

/// Why a copy failed.
#[derive(Debug)]
pub(crate) enum CopyError {
    /// Writing (or reading, for `copy_file_range`) failed.
    Io(io::Error),
    /// The image ended before the blocks did: it shrank.
    SourceEnded,
}

impl From<io::Error> for CopyError {
    fn from(e: io::Error) -> Self {
        CopyError::Io(e)
    }
}

/// A run of bytes to copy.
#[derive(Debug, Clone, Copy)]
struct Piece {
    /// Image offset.
    src: u64,
    /// Output offset.
    dst: u64,
    len: u64,
}

/// How the copy may be done; the copier turns a way off when it is refused.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ways {
    pub(crate) direct: bool,
    pub(crate) kernel: bool,
}

impl Ways {
    pub(crate) const ALL: Ways = Ways {
        direct: true,
        kernel: true,
    };
}

/// The copy of one plan's blocks, shared by its writer threads.
pub(crate) struct Copier<'a> {
    image_file: &'a File,
    image: &'a [u8],
    out: &'a File,
    direct: Option<File>,
    pieces: Vec<Piece>,
    next: AtomicUsize,
    copied: AtomicU64,
    stop: AtomicBool,
    use_direct: AtomicBool,
    use_kernel: AtomicBool,
}

impl<'a> Copier<'a> {
    /// Plans the pieces of `plan` for the output `out` (at `out_path`), which is
    /// already sized to `header.file_len()`.
    pub(crate) fn new(
        image_file: &'a File,
        image: &'a [u8],
        out: &'a File,
        out_path: &Path,
        plan: &Plan,
        header: &StreamHeader,
        ways: Ways,
    ) -> Self {
        let bs = u64::from(plan.block_size);
        let mut pieces = Vec::new();
        let mut dst = header.data_offset;
        for e in &plan.extents {
            let end = ((e.first + e.count) * bs).min(plan.image_size);
            let mut src = e.first * bs;
            while src < end {
                let len = (end - src).min(PIECE_LEN);
                pieces.push(Piece { src, dst, len });
                src += len;
                dst += len;
            }
            // A short last block leaves its zero tail unwritten.
            dst = header.data_offset + (dst - header.data_offset).next_multiple_of(bs);
        }
        let direct = if ways.direct {
            std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_DIRECT)
                .open(out_path)
                .ok()
        } else {
            None
        };
        Copier {
            image_file,
            image,
            out,
            use_direct: AtomicBool::new(direct.is_some()),
            direct,
            pieces,
            next: AtomicUsize::new(0),
            copied: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            use_kernel: AtomicBool::new(ways.kernel),
        }
    }

    /// Writer threads worth running: two keep a device busy with direct writes;
    /// a copy through the page cache is CPU work, which the hashers need.
    pub(crate) fn writers(&self) -> usize {
        if self.direct.is_some() {
            2
        } else {
            1
        }
    }

    /// Bytes copied so far.
    pub(crate) fn copied(&self) -> u64 {
        self.copied.load(Ordering::Relaxed)
    }

    /// Copies pieces until none is left, calling `after_piece` after each; any
    /// number of threads may run this at once. On failure the other writers stop
    /// after their current piece.
    pub(crate) fn run(&self, after_piece: &dyn Fn()) -> Result<(), CopyError> {
        while !self.stop.load(Ordering::Relaxed) {
            let Some(&p) = self.pieces.get(self.next.fetch_add(1, Ordering::Relaxed)) else {
                return Ok(());
            };
            if let Err(e) = self.copy(p) {
                self.stop.store(true, Ordering::Relaxed);
                return Err(e);
            }
            self.copied.fetch_add(p.len, Ordering::Relaxed);
            after_piece();
        }
        Ok(())
    }

    fn copy(&self, p: Piece) -> Result<(), CopyError> {
        let src = |from: u64, to: u64| {
            self.image
                .get(from as usize..to as usize)
                .ok_or(CopyError::SourceEnded)
        };
        let mut done = 0;
        if let Some(direct) = self
            .direct
            .as_ref()
            .filter(|_| self.use_direct.load(Ordering::Relaxed))
        {
            let aligned = p.len / DIRECT_ALIGN * DIRECT_ALIGN;
            match direct.write_all_at(src(p.src, p.src + aligned)?, p.dst) {
                Ok(()) => done = aligned,
                // The device wants a larger alignment (or the file system changed
                // its mind): copy through the page cache from here on.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    self.use_direct.store(false, Ordering::Relaxed)
                }
                Err(e) => return Err(e.into()),
            }
        }
        let buffered_from = done;
        if done < p.len && self.use_kernel.load(Ordering::Relaxed) {
            match copy_range(
                self.image_file,
                p.src + done,
                self.out,
                p.dst + done,
                p.len - done,
            ) {
                Ok(()) => done = p.len,
                Err((n, e)) if unsupported(&e) => {
                    self.use_kernel.store(false, Ordering::Relaxed);
                    done += n;
                }
                Err((_, e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Err(CopyError::SourceEnded)
                }
                Err((_, e)) => return Err(e.into()),
            }
        }
        if done < p.len {
            self.out
                .write_all_at(src(p.src + done, p.src + p.len)?, p.dst + done)?;
        }
        if buffered_from < p.len {
            start_writeback(self.out, p.dst + buffered_from, p.len - buffered_from);
        }
        Ok(())
    }
}

/// Whether a `copy_file_range` failure means "not supported here" (another file
/// system, a block device, an old kernel) rather than a real I/O error.
fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOSYS | libc::EXDEV | libc::EINVAL | libc::EOPNOTSUPP | libc::EBADF)
    )
}

/// Copies `len` bytes in the kernel; on failure, returns the bytes copied before it.
fn copy_range(
    src: &File,
    src_at: u64,
    dst: &File,
    dst_at: u64,
    len: u64,
) -> Result<(), (u64, io::Error)> {
    let mut done = 0u64;
    while done < len {
        let mut off_in = (src_at + done) as libc::loff_t;
        let mut off_out = (dst_at + done) as libc::loff_t;
        let want = (len - done) as usize;
        // SAFETY: both descriptors are open for the duration of the call, and the
        // offset pointers point at live locals that the kernel reads and updates.
        let n = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                &mut off_in,
                dst.as_raw_fd(),
                &mut off_out,
                want,
                0,
            )
        };
        match n {
            n if n > 0 => done += n as u64,
            0 => return Err((done, io::Error::from(io::ErrorKind::UnexpectedEof))),
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err((done, e));
                }
            }
        }
    }
    Ok(())
}

/// Asks the kernel to start writing `len` bytes at `offset` back to disk, without
/// waiting. Advisory: a real error shows up again at `fsync`.
fn start_writeback(f: &File, offset: u64, len: u64) {
    // SAFETY: a plain syscall on an open descriptor; no memory is passed.
    let _ = unsafe {
        libc::sync_file_range(
            f.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        )
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream_file::plan;
    use streamer_common::sequence::SectorExtent;

    /// Every way, alone, writes the same bytes as the obvious copy.
    #[test]
    fn every_way_copies_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let image: Vec<u8> = (0..(5 * PIECE_LEN as usize / 2 + 700))
            .map(|i| (i / 7 + i % 251) as u8)
            .collect();
        let img_path = dir.path().join("img");
        std::fs::write(&img_path, &image).unwrap();
        let img = File::open(&img_path).unwrap();
        let seq = [
            SectorExtent {
                lba: 40_000,
                count: 3,
            },
            SectorExtent { lba: 8, count: 1 },
        ];
        let plan = plan(image.len() as u64, 4096, Some(&seq), false).unwrap();
        let header = plan.header().unwrap();

        let mut want = vec![0u8; header.file_len() as usize];
        let mut at = header.data_offset as usize;
        for e in &plan.extents {
            for b in e.first..e.first + e.count {
                let s = b as usize * 4096;
                let chunk = &image[s..(s + 4096).min(image.len())];
                want[at..at + chunk.len()].copy_from_slice(chunk);
                at += 4096;
            }
        }

        for ways in [
            Ways::ALL,
            Ways {
                direct: false,
                kernel: true,
            },
            Ways {
                direct: false,
                kernel: false,
            },
        ] {
            let out_path = dir.path().join("out");
            let out = File::create(&out_path).unwrap();
            out.set_len(header.file_len()).unwrap();
            let c = Copier::new(&img, &image, &out, &out_path, &plan, &header, ways);
            std::thread::scope(|s| {
                let other = s.spawn(|| c.run(&|| {}));
                c.run(&|| {}).map_err(|e| format!("{e:?}")).unwrap();
                other.join().unwrap().map_err(|e| format!("{e:?}")).unwrap();
            });
            assert_eq!(c.copied(), plan.image_size, "{ways:?}");
            drop(c);
            assert!(
                std::fs::read(&out_path).unwrap() == want,
                "{ways:?} wrote different bytes"
            );
        }
    }
}
