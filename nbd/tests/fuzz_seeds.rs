//! The seed corpus of the `nbd` fuzz target (`fuzz/corpus/nbd/seed-*`): whole
//! client sessions, built here from the wire types. Each must run to a clean
//! disconnect, and the committed files must match what is built here.
//!
//! Regenerate with:
//!   STREAMER_WRITE_FUZZ_SEEDS=1 cargo test -p streamer-nbd --test fuzz_seeds

mod common;

use common::{info_data, option, raw_request};
use std::io::{self, Cursor, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use streamer_nbd::wire::{client_flags, info, opt, CmdFlags};
use streamer_nbd::{serve_connection, Config, ConnEnd, CowDisk};

/// The export and settings the fuzz target uses (keep in step with
/// `fuzz/fuzz_targets/nbd.rs`).
const SIZE: usize = 64 * 1024 + 777;

fn config() -> Config {
    Config {
        max_request: 16 * 1024,
        ..Config::default()
    }
}

fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let both = client_flags::FIXED_NEWSTYLE | client_flags::NO_ZEROES;

    // NBD_OPT_GO asking for block sizes, one read, disconnect.
    let mut go_read = both.to_be_bytes().to_vec();
    go_read.extend(option(opt::GO, &info_data(b"", &[info::BLOCK_SIZE])));
    go_read.extend(raw_request(0, 0, 1, 0, 512));
    go_read.extend(raw_request(0, 2, 2, 0, 0));

    // The old way in, then every write-like command.
    let mut export_name = client_flags::FIXED_NEWSTYLE.to_be_bytes().to_vec();
    export_name.extend(option(opt::EXPORT_NAME, b""));
    export_name.extend(raw_request(CmdFlags::FUA, 1, 1, 1000, 100));
    export_name.extend([0xab; 100]);
    export_name.extend(raw_request(0, 0, 2, 990, 120));
    export_name.extend(raw_request(0, 4, 3, 4096, 8192));
    export_name.extend(raw_request(CmdFlags::NO_HOLE, 6, 4, 700, 3000));
    export_name.extend(raw_request(0, 3, 5, 0, 0));
    export_name.extend(raw_request(0, 5, 6, 0, 4096));
    export_name.extend(raw_request(0, 2, 7, 0, 0));

    // Option haggling, structured replies, reads at the unaligned end.
    let mut structured = both.to_be_bytes().to_vec();
    structured.extend(option(opt::LIST, &[]));
    structured.extend(option(opt::STRUCTURED_REPLY, &[]));
    structured.extend(option(opt::INFO, &info_data(b"x", &[info::NAME])));
    structured.extend(option(
        opt::GO,
        &info_data(b"", &[info::NAME, info::DESCRIPTION]),
    ));
    structured.extend(raw_request(0, 0, 1, SIZE as u64 - 10, 10));
    structured.extend(raw_request(0, 0, 2, SIZE as u64 - 10, 11));
    structured.extend(raw_request(0, 0, 3, 5, 0));
    structured.extend(raw_request(0, 2, 4, 0, 0));

    vec![
        ("seed-go-read", go_read),
        ("seed-export-name-writes", export_name),
        ("seed-structured", structured),
    ]
}

struct Script(Cursor<Vec<u8>>);

impl Read for Script {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}
impl Write for Script {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn seeds_are_whole_sessions_and_match_the_corpus() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/nbd");
    let write = std::env::var_os("STREAMER_WRITE_FUZZ_SEEDS").is_some();
    if write {
        std::fs::create_dir_all(&dir).unwrap();
    }
    for (name, bytes) in seeds() {
        let disk = CowDisk::new(vec![0u8; SIZE], 512).with_memory_limit(32 * 1024);
        let stats = serve_connection(
            Script(Cursor::new(bytes.clone())),
            &disk,
            &config(),
            &AtomicBool::new(false),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(stats.end, ConnEnd::Disconnect, "{name}");
        let path = dir.join(name);
        if write {
            std::fs::write(&path, &bytes).unwrap();
        } else if dir.exists() {
            let on_disk = std::fs::read(&path).unwrap_or_default();
            assert!(
                on_disk == bytes,
                "{} is stale; regenerate with STREAMER_WRITE_FUZZ_SEEDS=1",
                path.display()
            );
        }
    }
}
