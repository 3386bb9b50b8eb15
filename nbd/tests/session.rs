//! `serve_connection` over an in-memory stream: the client's whole side is a
//! script of bytes (the server is sequential, so a script needs no replies to
//! go on), and the server's answers are read back message by message.

mod common;

use common::{info_data, option, pattern, raw_request, Peer};
use std::io::{self, Cursor, Read, Write};
use std::sync::atomic::AtomicBool;
use streamer_nbd::wire::{
    client_flags, info, opt, rep, transmission_flags as tf, ChunkHeader, CmdFlags,
};
use streamer_nbd::{
    serve_connection, Config, ConnEnd, ConnError, ConnErrorKind, ConnStats, CowDisk, Error, Export,
};

/// Reads from a script, writes into a buffer.
struct Duplex {
    input: Cursor<Vec<u8>>,
    output: Vec<u8>,
}

impl Read for Duplex {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for Duplex {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

const SIZE: usize = 64 * 1024 + 123;

/// A read-only export over bytes.
struct ReadOnly(Vec<u8>);

impl Export for ReadOnly {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }
    fn read_only(&self) -> bool {
        true
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        let at = offset as usize;
        buf.copy_from_slice(&self.0[at..at + buf.len()]);
        Ok(())
    }
    fn write(&self, _: u64, _: &[u8], _: bool) -> Result<(), Error> {
        panic!("the server must not write to a read-only export")
    }
    fn flush(&self) -> Result<(), Error> {
        Ok(())
    }
    fn trim(&self, _: u64, _: u64) -> Result<(), Error> {
        panic!("the server must not trim a read-only export")
    }
    fn write_zeroes(&self, _: u64, _: u64, _: bool) -> Result<(), Error> {
        panic!("the server must not zero a read-only export")
    }
}

fn cfg() -> Config {
    Config {
        name: "disk".into(),
        description: "a test disk".into(),
        max_request: 16 * 1024,
        block_size: 4096,
    }
}

/// How a scripted connection ended, and a reader over what the server sent.
type Outcome = (Result<ConnStats, ConnError>, Server);
/// The server's side of a scripted connection, as the client reads it.
type Server = Peer<Cursor<Vec<u8>>>;

/// Runs `script` against `export`.
fn run_on(export: &dyn Export, cfg: &Config, script: Vec<u8>, stop: bool) -> Outcome {
    let mut d = Duplex {
        input: Cursor::new(script),
        output: Vec::new(),
    };
    let r = serve_connection(&mut d, export, cfg, &AtomicBool::new(stop));
    (
        r,
        Peer {
            s: Cursor::new(d.output),
        },
    )
}

/// Runs `script` against a `CowDisk` over a pseudo-random base; also returns
/// the base.
fn run(script: Vec<u8>) -> (Result<ConnStats, ConnError>, Server, Vec<u8>) {
    let base = pattern(SIZE, 3);
    let disk = CowDisk::new(base.clone(), 4096);
    let (r, p) = run_on(&disk, &cfg(), script, false);
    (r, p, base)
}

fn flags(bits: u32) -> Vec<u8> {
    bits.to_be_bytes().to_vec()
}

fn go_script() -> Vec<u8> {
    let mut s = flags(client_flags::FIXED_NEWSTYLE);
    s.extend(option(opt::GO, &info_data(b"", &[])));
    s
}

fn read_go(p: &mut Server) {
    p.greeting().unwrap();
    assert_eq!(p.info_replies(opt::GO).unwrap().last, rep::ACK);
}

#[test]
fn every_supported_option_is_answered() {
    let mut s = flags(client_flags::FIXED_NEWSTYLE);
    s.extend(option(opt::LIST, &[]));
    s.extend(option(opt::LIST, b"x"));
    s.extend(option(opt::INFO, &info_data(b"other", &[])));
    s.extend(option(
        opt::INFO,
        &info_data(b"disk", &[info::NAME, info::DESCRIPTION, 77]),
    ));
    s.extend(option(opt::STRUCTURED_REPLY, b"x"));
    s.extend(option(opt::STARTTLS, &[]));
    s.extend(option(opt::SET_META_CONTEXT, &[0; 8]));
    s.extend(option(0xdead, b"whatever"));
    s.extend(option(opt::GO, &[0, 0, 0, 9, 0, 0]));
    s.extend(option(opt::GO, &info_data(b"", &[info::BLOCK_SIZE])));
    s.extend(raw_request(0, 0, 42, 4093, 10));
    s.extend(raw_request(0, 2, 0, 0, 0));
    let (r, mut p, base) = run(s);

    let g = p.greeting().unwrap();
    assert_eq!(g.flags, 3, "FIXED_NEWSTYLE | NO_ZEROES");
    let (h, data) = p.opt_reply().unwrap();
    assert_eq!((h.option, h.reply), (opt::LIST, rep::SERVER));
    assert_eq!(data, b"\0\0\0\x04diska test disk");
    assert_eq!(p.opt_reply().unwrap().0.reply, rep::ACK);
    assert_eq!(p.opt_reply().unwrap().0.reply, rep::ERR_INVALID);

    let unknown = p.info_replies(opt::INFO).unwrap();
    assert_eq!(unknown.last, rep::ERR_UNKNOWN);
    assert!(unknown.export.is_none());
    assert!(unknown.message.contains("\"other\""), "{}", unknown.message);

    let i = p.info_replies(opt::INFO).unwrap();
    assert_eq!(i.last, rep::ACK);
    let want_flags =
        tf::HAS_FLAGS | tf::SEND_FLUSH | tf::SEND_FUA | tf::SEND_TRIM | tf::SEND_WRITE_ZEROES;
    assert_eq!(i.export, Some((SIZE as u64, want_flags)));
    assert_eq!(i.block, Some((1, 4096, 16 * 1024)));
    assert_eq!(i.name.as_deref(), Some(&b"disk"[..]));
    assert_eq!(i.description.as_deref(), Some(&b"a test disk"[..]));

    let (h, _) = p.opt_reply().unwrap();
    assert_eq!(
        (h.option, h.reply),
        (opt::STRUCTURED_REPLY, rep::ERR_INVALID)
    );
    for want in [opt::STARTTLS, opt::SET_META_CONTEXT, 0xdead] {
        let (h, _) = p.opt_reply().unwrap();
        assert_eq!((h.option, h.reply), (want, rep::ERR_UNSUP));
    }
    assert_eq!(p.info_replies(opt::GO).unwrap().last, rep::ERR_INVALID);
    let go = p.info_replies(opt::GO).unwrap();
    assert_eq!(go.last, rep::ACK);
    assert!(
        go.name.is_none() && go.description.is_none(),
        "not asked for"
    );

    let (err, handle, data) = p.reply(10).unwrap();
    assert_eq!((err, handle), (0, 42));
    assert_eq!(data, base[4093..4103]);
    assert_eq!(
        p.s.position() as usize,
        p.s.get_ref().len(),
        "nothing after"
    );
    let stats = r.unwrap();
    assert_eq!(
        (stats.requests, stats.errors, stats.end),
        (2, 0, ConnEnd::Disconnect)
    );
    assert_eq!(stats.bytes_read, 10);
}

#[test]
fn export_name_honours_no_zeroes() {
    for (cf, tail) in [
        (client_flags::NO_ZEROES, 10),
        (client_flags::FIXED_NEWSTYLE, 134),
    ] {
        let mut s = flags(cf);
        s.extend(option(opt::EXPORT_NAME, b"disk"));
        s.extend(raw_request(0, 0, 1, 0, 4));
        let (r, mut p, base) = run(s);
        p.greeting().unwrap();
        let mut b = vec![0u8; tail];
        p.s.read_exact(&mut b).unwrap();
        assert_eq!(u64::from_be_bytes(b[..8].try_into().unwrap()), SIZE as u64);
        assert!(b[10..].iter().all(|&x| x == 0));
        assert_eq!(p.reply(4).unwrap().2, base[..4]);
        assert_eq!(r.unwrap().end, ConnEnd::Eof);
    }
}

#[test]
fn handshake_violations_close_the_connection() {
    // Unknown client flags.
    let (r, ..) = run(flags(4));
    assert!(matches!(r.unwrap_err().kind, ConnErrorKind::ClientFlags(4)));

    // EXPORT_NAME for another export: no error reply exists, so close.
    let mut s = flags(1);
    s.extend(option(opt::EXPORT_NAME, b"nope"));
    let (r, mut p, _) = run(s);
    assert!(matches!(&r.unwrap_err().kind, ConnErrorKind::UnknownExport(n) if n == "nope"));
    p.greeting().unwrap();
    assert!(p.closed());

    // A bad option magic.
    let mut s = flags(1);
    s.extend(b"IHAVEOPX\0\0\0\x03\0\0\0\0");
    let (r, ..) = run(s);
    assert!(matches!(r.unwrap_err().kind, ConnErrorKind::OptionMagic(_)));

    // Too long an option: TOO_BIG, then close, without reading the data.
    let mut s = flags(1);
    s.extend(
        streamer_nbd::wire::OptionHeader {
            option: opt::INFO,
            length: streamer_nbd::MAX_OPTION_LEN + 1,
        }
        .emit(),
    );
    let (r, mut p, _) = run(s);
    assert!(matches!(
        r.unwrap_err().kind,
        ConnErrorKind::OptionTooLong { .. }
    ));
    p.greeting().unwrap();
    assert_eq!(p.opt_reply().unwrap().0.reply, rep::ERR_TOO_BIG);
    assert!(p.closed());

    // A truncated option.
    let mut s = flags(1);
    s.extend(&option(opt::GO, &info_data(b"", &[]))[..20]);
    let (r, ..) = run(s);
    assert!(matches!(
        r.unwrap_err().kind,
        ConnErrorKind::Truncated { .. }
    ));
}

#[test]
fn clean_endings() {
    let mut s = flags(1);
    s.extend(option(opt::ABORT, b"ignored"));
    let (r, mut p, _) = run(s);
    assert_eq!(r.unwrap().end, ConnEnd::Abort);
    p.greeting().unwrap();
    assert_eq!(p.opt_reply().unwrap().0.reply, rep::ACK);

    for script in [vec![], flags(1), go_script()] {
        assert_eq!(run(script).0.unwrap().end, ConnEnd::Eof);
    }
    let disk = CowDisk::new(vec![0u8; 4096], 4096);
    let (r, _) = run_on(&disk, &cfg(), go_script(), true);
    assert_eq!(r.unwrap().end, ConnEnd::Stopped);
}

#[test]
fn bad_requests_get_the_protocols_errors_and_the_connection_goes_on() {
    let max = cfg().max_request;
    let mut s = go_script();
    let cases: Vec<([u8; 28], Vec<u8>, u32)> = vec![
        // Read past the end; straddling the end; offset overflow.
        (raw_request(0, 0, 1, SIZE as u64, 1), vec![], 22),
        (raw_request(0, 0, 2, SIZE as u64 - 1, 2), vec![], 22),
        (raw_request(0, 0, 3, u64::MAX, 2), vec![], 22),
        // A read longer than max_request.
        (raw_request(0, 0, 4, 0, max + 1), vec![], 22),
        // A write past the end: ENOSPC, payload read past.
        (raw_request(0, 1, 5, SIZE as u64 - 2, 4), vec![9; 4], 28),
        // An oversized write: EINVAL, payload read past.
        (
            raw_request(0, 1, 6, 0, max + 1),
            vec![9; max as usize + 1],
            22,
        ),
        // Unknown command types.
        (raw_request(0, 7, 7, 0, 1), vec![], 22),
        (raw_request(0, 0x1234, 8, 0, 1), vec![], 22),
        // Unknown or misplaced flags, including on a write (payload read past).
        (raw_request(CmdFlags::DF, 0, 9, 0, 1), vec![], 22),
        (
            raw_request(CmdFlags::NO_HOLE, 1, 10, 0, 3),
            vec![1, 2, 3],
            22,
        ),
        (raw_request(0x8000, 3, 11, 0, 0), vec![], 22),
        (raw_request(CmdFlags::FAST_ZERO, 6, 12, 0, 512), vec![], 22),
        // Trim (not capped by max_request) and write-zeroes past the end.
        (raw_request(0, 4, 13, 1, SIZE as u32), vec![], 22),
        (raw_request(0, 6, 14, SIZE as u64 - 100, 200), vec![], 28),
        // Cache past the end.
        (raw_request(0, 5, 15, SIZE as u64, 1), vec![], 22),
        // Allowed: zero lengths, cache, flush with junk in reserved fields,
        // FUA everywhere, NO_HOLE on write-zeroes, unaligned I/O.
        (raw_request(0, 0, 20, SIZE as u64, 0), vec![], 0),
        (raw_request(0, 1, 21, 5, 0), vec![], 0),
        (raw_request(0, 4, 22, 0, 0), vec![], 0),
        (raw_request(0, 5, 23, 0, 4096), vec![], 0),
        (raw_request(CmdFlags::FUA, 3, 24, 77, 88), vec![], 0),
        (raw_request(CmdFlags::FUA, 1, 25, 3, 5), vec![0xab; 5], 0),
        (
            raw_request(CmdFlags::FUA | CmdFlags::NO_HOLE, 6, 26, 4000, 200),
            vec![],
            0,
        ),
        (raw_request(CmdFlags::FUA, 4, 27, 8192, 8192), vec![], 0),
    ];
    for (h, payload, _) in &cases {
        s.extend(h);
        s.extend(payload);
    }
    // Then a good read of what the writes left.
    s.extend(raw_request(0, 0, 99, 0, 16));
    let (r, mut p, base) = run(s);
    read_go(&mut p);
    for (h, _, want) in &cases {
        let handle = u64::from_be_bytes(h[8..16].try_into().unwrap());
        let len = u32::from_be_bytes(h[24..28].try_into().unwrap()) as usize;
        let is_read = h[7] == 0;
        let (err, got, _) = p.reply(if is_read { len } else { 0 }).unwrap();
        assert_eq!((got, err), (handle, *want), "request {handle}");
    }
    let (err, _, data) = p.reply(16).unwrap();
    assert_eq!(err, 0);
    let mut want = base[..16].to_vec();
    want[3..8].fill(0xab);
    assert_eq!(data, want);
    let stats = r.unwrap();
    assert_eq!(stats.requests, cases.len() as u64 + 1);
    assert_eq!(stats.errors, 15);
    assert_eq!(stats.end, ConnEnd::Eof);
}

#[test]
fn a_read_only_export_refuses_writes_with_eperm() {
    let base = pattern(SIZE, 5);
    let export = ReadOnly(base.clone());
    let mut s = go_script();
    s.extend(raw_request(0, 1, 1, 0, 4));
    s.extend([1, 2, 3, 4]);
    s.extend(raw_request(0, 4, 2, 0, 4096));
    s.extend(raw_request(0, 6, 3, 0, 4096));
    s.extend(raw_request(0, 0, 4, 0, 4));
    let (r, mut p) = run_on(&export, &cfg(), s, false);
    p.greeting().unwrap();
    let go = p.info_replies(opt::GO).unwrap();
    assert_ne!(go.export.unwrap().1 & tf::READ_ONLY, 0);
    for h in 1..=3 {
        assert_eq!(p.reply(0).unwrap().0, 1, "EPERM for request {h}");
    }
    assert_eq!(p.reply(4).unwrap().2, base[..4]);
    assert_eq!(r.unwrap().errors, 3);
}

#[test]
fn connection_closing_errors() {
    // A bad request magic: earlier replies stand, then the connection closes.
    let mut s = go_script();
    s.extend(raw_request(0, 0, 1, 0, 1));
    let mut bad = raw_request(0, 0, 2, 0, 1);
    bad[0] = 0x26;
    s.extend(bad);
    s.extend(raw_request(0, 0, 3, 0, 1));
    let (r, mut p, _) = run(s);
    read_go(&mut p);
    assert_eq!(p.reply(1).unwrap().0, 0);
    assert!(p.closed(), "nothing is answered after a bad magic");
    let e = r.unwrap_err();
    assert!(matches!(e.kind, ConnErrorKind::RequestMagic(0x2660_9513)));
    assert_eq!((e.stats.requests, e.stats.end), (2, ConnEnd::Failed));
    assert!(e.to_string().contains("out of step"), "{e}");

    // A write far beyond the discard limit: EINVAL, then close.
    let mut s = go_script();
    s.extend(raw_request(0, 1, 7, 0, u32::MAX));
    s.extend([0u8; 1000]);
    let (r, mut p, _) = run(s);
    read_go(&mut p);
    assert_eq!(p.reply(0).unwrap().0, 22);
    assert!(p.closed());
    assert!(matches!(
        r.unwrap_err().kind,
        ConnErrorKind::PayloadTooLarge { length: u32::MAX }
    ));

    // A write whose payload never comes.
    let mut s = go_script();
    s.extend(raw_request(0, 1, 8, 0, 100));
    s.extend([0u8; 10]);
    assert!(matches!(
        run(s).0.unwrap_err().kind,
        ConnErrorKind::Truncated { .. }
    ));

    // A bad configuration is refused before anything is sent.
    let disk = CowDisk::new(vec![0u8; 4096], 4096);
    let bad = Config {
        block_size: 100,
        ..cfg()
    };
    let (r, mut p) = run_on(&disk, &bad, go_script(), false);
    assert!(matches!(r.unwrap_err().kind, ConnErrorKind::Config(_)));
    assert!(p.closed());
}

#[test]
fn writes_trims_and_zeroes_reach_the_export() {
    let mut s = go_script();
    s.extend(raw_request(0, 1, 1, 4096, 8192));
    s.extend(vec![0xab; 8192]);
    s.extend(raw_request(0, 4, 2, 4096, 4096));
    s.extend(raw_request(0, 6, 3, 100, 50));
    s.extend(raw_request(0, 0, 4, 0, 3 * 4096));
    s.extend(raw_request(0, 2, 5, 0, 0));
    let base = pattern(SIZE, 3);
    let disk = CowDisk::new(base.clone(), 4096);
    let (r, mut p) = run_on(&disk, &cfg(), s, false);
    read_go(&mut p);
    for _ in 0..3 {
        assert_eq!(p.reply(0).unwrap().0, 0);
    }
    let (_, _, data) = p.reply(3 * 4096).unwrap();
    let mut want = base[..3 * 4096].to_vec();
    want[100..150].fill(0);
    want[4096..8192].fill(0);
    want[8192..].fill(0xab);
    assert_eq!(data, want);
    let stats = r.unwrap();
    assert_eq!(
        (stats.bytes_written, stats.end),
        (8192, ConnEnd::Disconnect)
    );
    assert_eq!(disk.base(), &base);
}

#[test]
fn structured_replies_carry_reads_once_negotiated() {
    let mut s = flags(client_flags::FIXED_NEWSTYLE);
    s.extend(option(opt::STRUCTURED_REPLY, &[]));
    s.extend(option(opt::GO, &info_data(b"", &[])));
    s.extend(raw_request(0, 0, 1, 4093, 10));
    s.extend(raw_request(0, 0, 2, 77, 0));
    s.extend(raw_request(0, 0, 3, SIZE as u64 - 1, 2));
    s.extend(raw_request(CmdFlags::DF, 0, 4, 0, 1));
    // Not reads: simple replies, success and error alike.
    s.extend(raw_request(0, 1, 5, 0, 2));
    s.extend([1, 2]);
    s.extend(raw_request(0, 1, 6, SIZE as u64, 1));
    s.extend([1]);
    let (r, mut p, base) = run(s);
    p.greeting().unwrap();
    assert_eq!(p.opt_reply().unwrap().0.reply, rep::ACK);
    assert_eq!(p.info_replies(opt::GO).unwrap().last, rep::ACK);

    let (h, payload) = p.chunk().unwrap();
    assert_eq!(
        (h.flags, h.kind, h.handle),
        (ChunkHeader::DONE, ChunkHeader::OFFSET_DATA, 1)
    );
    assert_eq!(payload[..8], 4093u64.to_be_bytes());
    assert_eq!(payload[8..], base[4093..4103]);

    let (h, payload) = p.chunk().unwrap();
    assert_eq!(
        (h.flags, h.kind, h.handle),
        (ChunkHeader::DONE, ChunkHeader::NONE, 2)
    );
    assert!(payload.is_empty());

    for handle in [3, 4] {
        let (h, payload) = p.chunk().unwrap();
        assert_eq!(
            (h.flags, h.kind, h.handle),
            (ChunkHeader::DONE, ChunkHeader::ERROR, handle)
        );
        assert_eq!(payload[..4], 22u32.to_be_bytes());
        let n = u16::from_be_bytes([payload[4], payload[5]]) as usize;
        assert_eq!(n, payload.len() - 6);
        assert_eq!(&payload[6..], b"invalid request");
    }
    assert_eq!(p.reply(0).unwrap(), (0, 5, vec![]));
    assert_eq!(p.reply(0).unwrap(), (28, 6, vec![]));
    let stats = r.unwrap();
    assert_eq!((stats.requests, stats.errors), (6, 3));
}
