//! Properties of the wire parsers: arbitrary bytes never panic them, whatever
//! parses emits back to the same bytes (every message has one encoding), and
//! every value emitted parses back equal.

use proptest::prelude::*;
use std::io::{self, Cursor, Read, Write};
use std::sync::atomic::AtomicBool;
use streamer_nbd::wire::{
    ChunkHeader, ClientFlags, CmdFlags, Command, ExportEntry, Greeting, Info, InfoRequest, Limits,
    OptionHeader, OptionReplyHeader, Request, RequestError, SimpleReply, REQUEST_MAGIC,
};
use streamer_nbd::{serve_connection, Config, CowDisk, Error};

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        Just(Command::Read),
        Just(Command::Write),
        Just(Command::Disc),
        Just(Command::Flush),
        Just(Command::Trim),
        Just(Command::Cache),
        Just(Command::WriteZeroes),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    (command(), any::<(bool, bool, u64, u64, u32)>()).prop_map(
        |(command, (fua, no_hole, handle, offset, length))| Request {
            command,
            flags: CmdFlags {
                fua,
                // Only valid on write-zeroes.
                no_hole: no_hole && command == Command::WriteZeroes,
            },
            handle,
            offset,
            length,
        },
    )
}

/// Request-shaped bytes: the right magic most of the time, so the deeper
/// branches are reached.
fn request_bytes() -> impl Strategy<Value = [u8; 28]> {
    (any::<[u8; 28]>(), any::<bool>()).prop_map(|(mut b, magic)| {
        if magic {
            b[..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        }
        b
    })
}

proptest! {
    #[test]
    fn request_parse_is_total_and_exact(b in request_bytes()) {
        match Request::parse(&b) {
            Ok(r) => prop_assert_eq!(r.emit(), b),
            Err(RequestError::BadMagic { magic }) => {
                prop_assert_ne!(magic, REQUEST_MAGIC);
                prop_assert_eq!(magic.to_be_bytes(), [b[0], b[1], b[2], b[3]]);
            }
            Err(e) => {
                prop_assert_eq!(e.handle(), Some(u64::from_be_bytes(b[8..16].try_into().unwrap())));
                let is_write = b[6..8] == [0, 1];
                prop_assert_eq!(e.payload_len() != 0, is_write && b[24..28] != [0; 4]);
            }
        }
    }

    #[test]
    fn requests_round_trip(r in request()) {
        prop_assert_eq!(Request::parse(&r.emit()), Ok(r));
    }

    #[test]
    fn check_never_panics_and_only_passes_what_fits(
        r in request(),
        size in prop_oneof![any::<u64>(), 0..1_000_000u64],
        max_request in 512..u32::MAX,
        read_only in any::<bool>(),
    ) {
        let limits = Limits { size, max_request, read_only };
        let result = r.check(&limits);
        let io = !matches!(r.command, Command::Disc | Command::Flush);
        if result.is_ok() && io {
            prop_assert!(r.in_bounds(size));
            if r.command != Command::Trim {
                prop_assert!(r.length <= max_request);
            }
            if read_only {
                prop_assert!(matches!(r.command, Command::Read | Command::Cache));
            }
        }
        if let Err(e) = result {
            prop_assert!(matches!(e, Error::Invalid | Error::NoSpace | Error::Perm));
        }
    }

    #[test]
    fn simple_replies_round_trip(error in any::<u32>(), handle in any::<u64>(), b in any::<[u8; 16]>()) {
        let r = SimpleReply { error, handle };
        prop_assert_eq!(SimpleReply::parse(&r.emit()), Ok(r));
        if let Ok(p) = SimpleReply::parse(&b) {
            prop_assert_eq!(p.emit(), b);
        }
    }

    #[test]
    fn chunk_headers_round_trip(flags in any::<u16>(), kind in any::<u16>(), handle in any::<u64>(), length in any::<u32>(), b in any::<[u8; 20]>()) {
        let h = ChunkHeader { flags, kind, handle, length };
        prop_assert_eq!(ChunkHeader::parse(&h.emit()), Ok(h));
        if let Ok(p) = ChunkHeader::parse(&b) {
            prop_assert_eq!(p.emit(), b);
        }
    }

    #[test]
    fn option_headers_are_total_and_exact(b in any::<[u8; 16]>(), option in any::<u32>(), length in any::<u32>()) {
        if let Ok(h) = OptionHeader::parse(&b) {
            prop_assert_eq!(h.emit(), b);
        }
        let h = OptionHeader { option, length };
        prop_assert_eq!(OptionHeader::parse(&h.emit()), Ok(h));
        let mut forced = b;
        forced[..8].copy_from_slice(b"IHAVEOPT");
        prop_assert_eq!(OptionHeader::parse(&forced).map(|h| h.emit()), Ok(forced));
    }

    #[test]
    fn option_replies_and_greetings_round_trip(
        option in any::<u32>(), reply in any::<u32>(), length in any::<u32>(), flags in any::<u16>(),
        b20 in any::<[u8; 20]>(), b18 in any::<[u8; 18]>(), word in any::<u32>(),
    ) {
        let h = OptionReplyHeader { option, reply, length };
        prop_assert_eq!(OptionReplyHeader::parse(&h.emit()), Ok(h));
        if let Ok(p) = OptionReplyHeader::parse(&b20) {
            prop_assert_eq!(p.emit(), b20);
        }
        let g = Greeting { flags };
        prop_assert_eq!(Greeting::parse(&g.emit()), Ok(g));
        if let Ok(p) = Greeting::parse(&b18) {
            prop_assert_eq!(p.emit(), b18);
        }
        if let Ok(f) = ClientFlags::parse(word) {
            prop_assert_eq!(f.bits(), word);
        }
    }

    #[test]
    fn option_data_is_total_and_exact(data in prop::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(r) = InfoRequest::parse(&data) {
            let mut again = vec![0u8; r.buffer_len()];
            r.emit(&mut again);
            prop_assert_eq!(&again, &data);
        }
        if let Ok(i) = Info::parse(&data) {
            let mut again = vec![0u8; i.buffer_len()];
            i.emit(&mut again);
            prop_assert_eq!(&again, &data);
        }
        if let Ok(e) = ExportEntry::parse(&data) {
            let mut again = vec![0u8; e.buffer_len()];
            e.emit(&mut again);
            prop_assert_eq!(&again, &data);
        }
    }

    #[test]
    fn info_requests_round_trip(
        name in prop::collection::vec(any::<u8>(), 0..40),
        reqs in prop::collection::vec(any::<u16>(), 0..20),
    ) {
        let raw: Vec<u8> = reqs.iter().flat_map(|r| r.to_be_bytes()).collect();
        let r = InfoRequest::new(&name, &raw).unwrap();
        let mut b = vec![0u8; r.buffer_len()];
        r.emit(&mut b);
        let p = InfoRequest::parse(&b).unwrap();
        prop_assert_eq!(p, r);
        prop_assert_eq!(p.requests().collect::<Vec<_>>(), reqs);
    }
}

/// Reads a script, discards output (as the fuzz target does).
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// A whole connection on arbitrary bytes after a valid handshake never
    /// panics and always ends.
    #[test]
    fn a_connection_survives_arbitrary_requests(
        reqs in prop::collection::vec((request(), any::<bool>(), prop::collection::vec(any::<u8>(), 0..64)), 0..12),
    ) {
        let mut s = vec![0, 0, 0, 3];
        s.extend(OptionHeader { option: 7, length: 6 }.emit());
        s.extend([0u8; 6]);
        for (mut r, raw, junk) in reqs {
            // Keep lengths small so the script stays in step most of the time.
            r.length %= 9000;
            r.offset %= 20_000;
            s.extend(r.emit());
            if raw {
                s.extend(&junk);
            } else if r.command == Command::Write {
                s.extend(std::iter::repeat_n(7u8, r.length as usize));
            }
        }
        let disk = CowDisk::new(vec![0u8; 16_384 + 5], 512);
        let cfg = Config { max_request: 8192, ..Config::default() };
        let _ = serve_connection(Script(Cursor::new(s)), &disk, &cfg, &AtomicBool::new(false));
        prop_assert!(disk.overlay_bytes() <= 16_384 + 512);
    }
}
