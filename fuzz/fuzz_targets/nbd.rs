//! A whole NBD server connection on arbitrary bytes: the input is everything
//! the client sends (handshake, options, requests, payloads), the server's
//! replies are discarded. Never a panic, never a hang (the input runs out), and
//! the overlay never holds more than its limit.
//!
//! Seeds (`corpus/nbd/seed-*`) are whole sessions, written by
//! `STREAMER_WRITE_FUZZ_SEEDS=1 cargo test -p streamer-nbd --test fuzz_seeds`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::{self, Read, Write};
use std::sync::atomic::AtomicBool;
use streamer_nbd::{serve_connection, Config, CowDisk};

/// The export: unaligned, small, with a memory limit so that ENOSPC is
/// reachable. Keep in step with `nbd/tests/fuzz_seeds.rs`.
const SIZE: usize = 64 * 1024 + 777;
const LIMIT: u64 = 32 * 1024;

/// Reads the fuzz input, discards whatever the server writes.
struct Duplex<'a> {
    input: &'a [u8],
}

impl Read for Duplex<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for Duplex<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let disk = CowDisk::new(vec![0u8; SIZE], 512).with_memory_limit(LIMIT);
    let cfg = Config {
        max_request: 16 * 1024,
        ..Config::default()
    };
    let _ = serve_connection(Duplex { input: data }, &disk, &cfg, &AtomicBool::new(false));
    assert!(disk.overlay_bytes() <= LIMIT);
    assert!(disk.base().iter().all(|&b| b == 0), "the base was written");
});
