//! The client's cache is the output file itself: [`FileCache`] receives the
//! stream straight into a shared mapping of the image, each stream block at its
//! image offset, so finishing is a sync and a rename, not a second copy of the
//! whole image (that copy, and zeroing a separate cache, were ~40 % of the
//! client's CPU).
//!
//! The file is created under a temporary name in the output's directory, its
//! whole size reserved up front (`fallocate`: a full disk fails at the start, not
//! as a fault in the middle of the stream), and renamed over the output name only
//! once every block verified; on failure it is removed. The stream file's
//! metadata (header, manifest) is kept in memory. Data blocks that arrive before
//! the manifest says where they belong wait in memory and move into the file
//! when it does (in order, the manifest comes first, so that is rare).

use crate::receiver::Cache;
use memmap2::MmapRaw;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use streamer_common::stream_file::StreamHeader;

/// The image's mapping as other threads (the NBD export) see it: only blocks
/// marked verified are read, and the receiver never writes a verified block
/// again, so readers and the writer never touch the same bytes at once.
#[derive(Debug, Clone)]
pub struct CacheView {
    map: Arc<MmapRaw>,
    /// One bit per image block: verified and final.
    verified: Arc<[AtomicU64]>,
    block_size: u64,
    image_size: u64,
}

impl CacheView {
    /// Bytes per block.
    pub fn block_size(&self) -> u64 {
        self.block_size
    }

    /// The image's size in bytes.
    pub fn image_size(&self) -> u64 {
        self.image_size
    }

    /// Whether image block `block` is verified in the cache.
    pub fn has(&self, block: u64) -> bool {
        let Some(w) = self.verified.get((block / 64) as usize) else {
            return false;
        };
        w.load(Ordering::Acquire) & (1 << (block % 64)) != 0
    }

    fn mark(&self, block: u64) {
        if let Some(w) = self.verified.get((block / 64) as usize) {
            w.fetch_or(1 << (block % 64), Ordering::Release);
        }
    }

    /// Copies `dst.len()` bytes of image block `block` from `within` into `dst`,
    /// if the block is verified. `within + dst.len()` must not pass the block.
    pub fn read(&self, block: u64, within: u64, dst: &mut [u8]) -> bool {
        if !self.has(block) || within + dst.len() as u64 > self.block_size {
            return false;
        }
        let at = block * self.block_size + within;
        if at + dst.len() as u64 > self.map.len() as u64 {
            return false;
        }
        // SAFETY: in bounds of the mapping (checked above), which the Arc keeps
        // alive; the block is verified, so the receiver no longer writes it (the
        // Acquire load in `has` pairs with the Release after its last write).
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.map.as_ptr().add(at as usize),
                dst.as_mut_ptr(),
                dst.len(),
            );
        }
        true
    }
}

/// Why the image could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// An I/O step failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Which file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The cache was never laid out (no WELCOME), so there is nothing to write.
    #[error("no image was received")]
    Empty,
}

/// The temporary name `output` is written under.
pub fn temp_path(output: &Path) -> PathBuf {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    output.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

/// The cache over the output file. See the module documentation.
#[derive(Debug)]
pub struct FileCache {
    output: PathBuf,
    tmp: PathBuf,
    file: Option<File>,
    map: Option<Arc<MmapRaw>>,
    view: Option<CacheView>,
    /// Stream bytes before the data region.
    head: Vec<u8>,
    data_offset: u64,
    block_size: u64,
    image_size: u64,
    /// Image block of each stream block, once the manifest verified.
    order: Vec<u64>,
    /// Stream blocks written before `order` was known.
    early: HashMap<u64, Box<[u8]>>,
    /// Set once renamed into place (the temporary file is then not removed).
    done: bool,
}

impl FileCache {
    /// A cache that will write `output`.
    pub fn new(output: &Path) -> Self {
        FileCache {
            output: output.to_path_buf(),
            tmp: temp_path(output),
            file: None,
            map: None,
            view: None,
            head: Vec::new(),
            data_offset: 0,
            block_size: 1,
            image_size: 0,
            order: Vec::new(),
            early: HashMap::new(),
            done: false,
        }
    }

    /// Where stream block `b` lives in the mapping, if known.
    fn slot(&self, b: u64) -> Option<usize> {
        let image_block = *self.order.get(usize::try_from(b).ok()?)?;
        usize::try_from(image_block * self.block_size).ok()
    }

    /// The mapping as other threads may read it (after the stream header came).
    pub fn view(&self) -> Option<CacheView> {
        self.view.clone()
    }

    /// Copies `data` into the mapping at `at`, if in bounds.
    fn put(&mut self, at: usize, data: &[u8]) {
        let Some(map) = &self.map else { return };
        if at.checked_add(data.len()).is_none_or(|e| e > map.len()) {
            return;
        }
        // SAFETY: in bounds (checked above) of a mapping this cache owns; only
        // this thread writes, and never to a verified block (the verifier skips
        // them), which is all other threads read.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), map.as_mut_ptr().add(at), data.len());
        }
    }

    /// The mapping's bytes `at..at + len`, if in bounds.
    fn get(&self, at: usize, len: usize) -> Option<&[u8]> {
        let map = self.map.as_ref()?;
        if at.checked_add(len)? > map.len() {
            return None;
        }
        // SAFETY: in bounds; the bytes are written only by this cache through
        // `&mut self`, so none change while this borrow of `self` lives.
        Some(unsafe { std::slice::from_raw_parts(map.as_ptr().add(at), len) })
    }

    /// Syncs the image, cuts it to its true size and renames it over the output
    /// name. Call once every block verified.
    pub fn finish(&mut self) -> Result<(), WriteError> {
        let io = |what: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| WriteError::Io { what, path, source }
        };
        let (Some(map), Some(file)) = (self.map.take(), self.file.as_ref()) else {
            return Err(WriteError::Empty);
        };
        map.flush().map_err(io("cannot write", &self.tmp))?;
        // The export's view must be gone (the file is cut below): only this
        // cache's own two references may remain.
        if Arc::strong_count(&map) > 1 + usize::from(self.view.is_some()) {
            self.map = Some(map);
            return Err(WriteError::Io {
                what: "still exported, cannot finish",
                path: self.tmp.clone(),
                source: io::Error::from(io::ErrorKind::ResourceBusy),
            });
        }
        self.view = None;
        drop(map);
        file.set_len(self.image_size)
            .map_err(io("cannot size", &self.tmp))?;
        file.sync_all().map_err(io("cannot sync", &self.tmp))?;
        std::fs::rename(&self.tmp, &self.output)
            .map_err(io("cannot rename into place", &self.output))?;
        self.done = true;
        Ok(())
    }
}

impl Drop for FileCache {
    fn drop(&mut self) {
        if self.file.is_some() && !self.done {
            self.map.take();
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

impl Cache for FileCache {
    fn allocate(&mut self, _len: u64) -> Result<(), String> {
        Ok(())
    }

    fn layout(&mut self, h: &StreamHeader) -> Result<(), String> {
        let bs = u64::from(h.block_size).max(1);
        let blocks = h.block_count.max(h.image_size.div_ceil(bs));
        let len = blocks
            .checked_mul(bs)
            .filter(|&l| usize::try_from(l).is_ok() && l > 0)
            .ok_or_else(|| format!("an image of {blocks} blocks of {bs} bytes does not fit"))?;
        let head = usize::try_from(h.data_offset)
            .map_err(|_| "the stream file's metadata does not fit in memory".to_string())?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&self.tmp)
            .map_err(|e| format!("cannot create {}: {e}", self.tmp.display()))?;
        self.file = Some(file);
        let file = self.file.as_ref().expect("just set");
        // Reserve the space now: a full disk must fail here, not as SIGBUS on a
        // write to the mapping mid-stream.
        // SAFETY: a valid descriptor and a length checked to fit off_t above.
        let r = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len as libc::off_t) };
        if r != 0 {
            return Err(format!(
                "cannot reserve {len} bytes for {}: {}",
                self.tmp.display(),
                io::Error::from_raw_os_error(r)
            ));
        }
        // SAFETY: the file is ours (created exclusively above, under a name no
        // one else uses), sized to `len`, and is neither truncated nor resized
        // while mapped; `finish` drops the mapping before cutting it.
        let map = Arc::new(
            MmapRaw::map_raw(file)
                .map_err(|e| format!("cannot map {}: {e}", self.tmp.display()))?,
        );
        self.view = Some(CacheView {
            map: map.clone(),
            verified: (0..blocks.div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
            block_size: bs,
            image_size: h.image_size,
        });
        self.map = Some(map);
        self.head = vec![0; head];
        self.data_offset = h.data_offset;
        self.block_size = bs;
        self.image_size = h.image_size;
        Ok(())
    }

    fn set_order(&mut self, order: &[u64]) {
        self.order = order.to_vec();
        for (b, bytes) in std::mem::take(&mut self.early) {
            if let Some(at) = self.slot(b) {
                self.put(at, &bytes);
            }
        }
    }

    fn verified(&mut self, block: u64) {
        if let (Some(v), Some(&image_block)) = (&self.view, self.order.get(block as usize)) {
            v.mark(image_block);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset < self.data_offset {
            let at = offset as usize;
            if let Some(dst) = self.head.get_mut(at..at + data.len()) {
                dst.copy_from_slice(data);
            }
            return;
        }
        // The verifier writes within one block at a time.
        let rel = offset - self.data_offset;
        let (b, within) = (rel / self.block_size, (rel % self.block_size) as usize);
        let bs = self.block_size as usize;
        if within + data.len() > bs {
            return;
        }
        match self.slot(b).filter(|_| self.map.is_some()) {
            Some(at) => self.put(at + within, data),
            None => {
                let block = self
                    .early
                    .entry(b)
                    .or_insert_with(|| vec![0u8; bs].into_boxed_slice());
                block[within..within + data.len()].copy_from_slice(data);
            }
        }
    }

    fn read(&self, offset: u64, len: usize) -> &[u8] {
        if offset < self.data_offset {
            let at = offset as usize;
            return self.head.get(at..at + len).unwrap_or(&[]);
        }
        let rel = offset - self.data_offset;
        let (b, within) = (rel / self.block_size, (rel % self.block_size) as usize);
        if within + len > self.block_size as usize {
            return &[];
        }
        match self.slot(b).filter(|_| self.map.is_some()) {
            Some(at) => self.get(at + within, len).unwrap_or(&[]),
            None => self
                .early
                .get(&b)
                .and_then(|blk| blk.get(within..within + len))
                .unwrap_or(&[]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(image_size: u64, block_size: u32, data_offset: u64) -> StreamHeader {
        let blocks = image_size.div_ceil(u64::from(block_size));
        let mut h = StreamHeader::new(
            streamer_common::stream_file::FileFlags::empty(),
            block_size,
            image_size,
            1,
            blocks,
        )
        .unwrap();
        h.data_offset = data_offset;
        h
    }

    #[test]
    fn blocks_land_at_their_image_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("disk.img");
        let h = header(10_000, 4096, 8192);
        let mut c = FileCache::new(&out);
        c.layout(&h).unwrap();
        c.write(0, b"meta");
        // Stream block 0 arrives before the order is known.
        c.write(8192, &[1u8; 4096]);
        c.set_order(&[2, 0, 1]);
        c.write(8192 + 4096, &[2u8; 100]);
        c.write(8192 + 4096 + 100, &[2u8; 3996]);
        c.write(8192 + 2 * 4096, &[3u8; 4096]);
        assert_eq!(c.read(0, 4), b"meta");
        assert_eq!(c.read(8192, 4096), &[1u8; 4096][..]);
        // A read across blocks is refused, not answered wrongly.
        assert!(c.read(8192 + 4000, 200).is_empty());
        c.finish().unwrap();
        let img = std::fs::read(&out).unwrap();
        assert_eq!(img.len(), 10_000);
        assert!(img[..4096].iter().all(|&x| x == 2));
        assert!(img[4096..8192].iter().all(|&x| x == 3));
        assert!(img[8192..].iter().all(|&x| x == 1));
        assert!(!temp_path(&out).exists());
    }

    #[test]
    fn an_unfinished_cache_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("disk.img");
        {
            let mut c = FileCache::new(&out);
            c.layout(&header(5000, 4096, 4096)).unwrap();
            c.write(4096, &[7u8; 10]);
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(matches!(
            FileCache::new(&out).finish(),
            Err(WriteError::Empty)
        ));
    }
}
