//! A cache for large simulations: instead of keeping a copy of the stream per
//! client, it compares every write with the source bytes (counting mismatches) and
//! answers reads and hashes from the source, whose block hashes are computed once
//! for all clients. Since every byte written was checked equal to the source,
//! answering from the source is the same as answering from a private copy.

use client_loader::receiver::Cache;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// Shared by every shadow cache of one stream file.
#[derive(Debug)]
pub struct ShadowSource {
    bytes: Rc<[u8]>,
    hashes: RefCell<HashMap<(u64, usize), [u8; 32]>>,
}

impl ShadowSource {
    /// Wraps the stream file.
    pub fn new(bytes: Rc<[u8]>) -> Rc<Self> {
        Rc::new(ShadowSource {
            bytes,
            hashes: RefCell::new(HashMap::new()),
        })
    }
}

/// One client's shadow cache.
#[derive(Debug)]
pub struct ShadowCache {
    src: Rc<ShadowSource>,
    /// Writes whose bytes differed from the source.
    pub mismatches: u64,
}

impl ShadowCache {
    /// A cache over `src`.
    pub fn new(src: Rc<ShadowSource>) -> Self {
        ShadowCache { src, mismatches: 0 }
    }
}

impl Cache for ShadowCache {
    fn allocate(&mut self, len: u64) -> Result<(), String> {
        if len == self.src.bytes.len() as u64 {
            Ok(())
        } else {
            Err(format!(
                "stream of {len} bytes, shadow source has {}",
                self.src.bytes.len()
            ))
        }
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        let at = offset as usize;
        if self.src.bytes.get(at..at + data.len()) != Some(data) {
            self.mismatches += 1;
        }
    }
    fn read(&self, offset: u64, len: usize) -> &[u8] {
        &self.src.bytes[offset as usize..offset as usize + len]
    }
    fn hash(&mut self, offset: u64, len: usize) -> [u8; 32] {
        if self.mismatches > 0 {
            // A wrong write poisons this client: never vouch for its bytes.
            return [0; 32];
        }
        *self
            .src
            .hashes
            .borrow_mut()
            .entry((offset, len))
            .or_insert_with(|| {
                *blake3::hash(&self.src.bytes[offset as usize..offset as usize + len]).as_bytes()
            })
    }
}
