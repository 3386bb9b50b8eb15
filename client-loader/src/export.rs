//! `--export nbd:…`: the image as a local disk, served while it streams
//! (patent steps 534–544).
//!
//! Reads are answered from the cache for blocks already received and
//! verified; a block not there yet is fetched at once from the appliance by
//! unicast READ, ahead of the stream, verified against the manifest and kept
//! in memory (the stream's copy, when it lands, is the one read afterwards).
//! Writes never leave the machine: they go to a RAM overlay, copy-on-write per
//! block ([`streamer_nbd::CowDisk`]), so the shared image is never written.
//!
//! Threads: the NBD server's connection threads call [`ClientBase::read_base`];
//! a block it must fetch becomes a [`FetchQueue`] request, the receiver's
//! thread (the driver) turns it into a READ, and hands the verified blocks
//! back through the request's slot. The receiver stays single-threaded and
//! sans-IO; the driver is woken through a socket pair.

use crate::image::CacheView;
use std::collections::HashMap;
use std::io;
use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use streamer_common::wire::MAX_READ_BLOCKS;
use streamer_nbd::{Base, Error};

/// Where a fetch's answer lands.
#[derive(Debug, Default)]
pub struct Slot {
    answer: Mutex<Option<Result<Vec<u8>, String>>>,
    ready: Condvar,
}

impl Slot {
    /// Delivers the answer and wakes the waiter.
    pub fn fill(&self, answer: Result<Vec<u8>, String>) {
        if let Ok(mut a) = self.answer.lock() {
            *a = Some(answer);
        }
        self.ready.notify_all();
    }

    /// Waits for the answer, at most `limit`.
    fn wait(&self, limit: Duration) -> Result<Vec<u8>, String> {
        let Ok(guard) = self.answer.lock() else {
            return Err("the receiver's thread failed".into());
        };
        let (mut guard, _) = self
            .ready
            .wait_timeout_while(guard, limit, |a| a.is_none())
            .map_err(|_| "the receiver's thread failed".to_string())?;
        guard
            .take()
            .unwrap_or_else(|| Err(format!("no answer within {limit:?}")))
    }
}

/// One fetch: `count` image blocks from `block`.
#[derive(Debug)]
pub struct FetchRequest {
    /// First image block.
    pub block: u64,
    /// Blocks (at most one READ's worth).
    pub count: u64,
    /// Where the answer goes.
    pub slot: Arc<Slot>,
}

/// Fetch requests from the export's threads to the receiver's.
#[derive(Debug)]
pub struct FetchQueue {
    queue: Mutex<Vec<FetchRequest>>,
    wake: UnixDatagram,
}

impl FetchQueue {
    /// A queue, and the socket the receiver's thread polls to learn of new
    /// requests.
    pub fn new() -> io::Result<(Arc<FetchQueue>, UnixDatagram)> {
        let (wake, waker) = UnixDatagram::pair()?;
        wake.set_nonblocking(true)?;
        waker.set_nonblocking(true)?;
        Ok((
            Arc::new(FetchQueue {
                queue: Mutex::new(Vec::new()),
                wake,
            }),
            waker,
        ))
    }

    fn submit(&self, req: FetchRequest) {
        if let Ok(mut q) = self.queue.lock() {
            q.push(req);
        }
        // A full socket buffer means a wake-up is already pending.
        let _ = self.wake.send(&[1]);
    }

    /// Every request waiting (the receiver's thread calls this when woken).
    pub fn take(&self) -> Vec<FetchRequest> {
        self.queue
            .lock()
            .map(|mut q| std::mem::take(&mut *q))
            .unwrap_or_default()
    }
}

/// Counters of the export's base (what the overlay does not answer).
#[derive(Debug, Default)]
pub struct BaseStats {
    /// Blocks read from the cache.
    pub from_cache: std::sync::atomic::AtomicU64,
    /// Blocks fetched from the appliance.
    pub fetched: std::sync::atomic::AtomicU64,
}

/// The image under the export's write overlay: the cache, or the appliance.
#[derive(Debug)]
pub struct ClientBase {
    view: CacheView,
    fetched: Mutex<HashMap<u64, Arc<[u8]>>>,
    queue: Arc<FetchQueue>,
    fetch_timeout: Duration,
    /// Counters.
    pub stats: BaseStats,
}

impl ClientBase {
    /// A base over `view` that fetches through `queue`, giving up on a fetch
    /// after `fetch_timeout`.
    pub fn new(view: CacheView, queue: Arc<FetchQueue>, fetch_timeout: Duration) -> Self {
        ClientBase {
            view,
            fetched: Mutex::new(HashMap::new()),
            queue,
            fetch_timeout,
            stats: BaseStats::default(),
        }
    }

    /// Copies part of block `b` from memory (the cache, else a fetched copy).
    fn copy(&self, b: u64, within: u64, dst: &mut [u8]) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        if self.view.read(b, within, dst) {
            self.stats.from_cache.fetch_add(1, Relaxed);
            // The stream brought it: a fetched copy is no longer needed.
            if let Ok(mut f) = self.fetched.lock() {
                if !f.is_empty() {
                    f.remove(&b);
                }
            }
            return true;
        }
        let Ok(f) = self.fetched.lock() else {
            return false;
        };
        match f.get(&b) {
            Some(blk) => {
                let w = within as usize;
                dst.copy_from_slice(&blk[w..w + dst.len()]);
                true
            }
            None => false,
        }
    }

    /// Fetches `blocks` (sorted, distinct) from the appliance, in runs of
    /// consecutive blocks, all asked at once, then waited for.
    fn fetch(&self, blocks: &[u64]) -> Result<(), Error> {
        let mut asked = Vec::new();
        let mut i = 0;
        while i < blocks.len() {
            let mut j = i + 1;
            while j < blocks.len()
                && blocks[j] == blocks[j - 1] + 1
                && ((j - i) as u64) < u64::from(MAX_READ_BLOCKS)
            {
                j += 1;
            }
            let slot = Arc::new(Slot::default());
            self.queue.submit(FetchRequest {
                block: blocks[i],
                count: (j - i) as u64,
                slot: slot.clone(),
            });
            asked.push((blocks[i], slot));
            i = j;
        }
        let bs = self.view.block_size() as usize;
        let mut failed = None;
        for (first, slot) in asked {
            match slot.wait(self.fetch_timeout) {
                Ok(data) => {
                    self.stats.fetched.fetch_add(
                        (data.len() / bs) as u64,
                        std::sync::atomic::Ordering::Relaxed,
                    );
                    if let Ok(mut f) = self.fetched.lock() {
                        for (k, blk) in data.chunks(bs).enumerate() {
                            f.insert(first + k as u64, Arc::from(blk));
                        }
                    }
                }
                Err(e) => failed = Some(e),
            }
        }
        match failed {
            Some(e) => {
                eprintln!("client-loader: export: a read from the appliance failed: {e}");
                Err(Error::Io)
            }
            None => Ok(()),
        }
    }
}

impl Base for ClientBase {
    fn size(&self) -> u64 {
        self.view.image_size()
    }

    fn read_base(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        let bs = self.view.block_size();
        let end = offset + buf.len() as u64;
        // Each piece: (block, byte within it, range of `buf`).
        let pieces = || {
            (offset / bs..end.div_ceil(bs)).map(move |b| {
                let a = (b * bs).max(offset);
                let z = ((b + 1) * bs).min(end);
                (b, a - b * bs, (a - offset) as usize..(z - offset) as usize)
            })
        };
        let mut missing = Vec::new();
        for (b, within, r) in pieces() {
            if !self.copy(b, within, &mut buf[r]) {
                missing.push(b);
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        self.fetch(&missing)?;
        for (b, within, r) in pieces().filter(|p| missing.binary_search(&p.0).is_ok()) {
            if !self.copy(b, within, &mut buf[r]) {
                return Err(Error::Io);
            }
        }
        Ok(())
    }
}
