//! A real `Server` on a unix socket (and one on TCP), driven by the minimal
//! client in `common`: the bad inputs a hostile or broken client can send each
//! get the protocol's answer, and the server keeps serving the next connection.

mod common;

use common::{raw_request, Client, Running};
use std::net::TcpStream;
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use streamer_nbd::wire::CmdFlags;
use streamer_nbd::{Config, CowDisk, Event, Export, Listen, Server};

const SIZE: usize = 4 * 1024 * 1024 + 1234;
const MAX: u32 = 1 << 20;

fn cfg() -> Config {
    Config {
        max_request: MAX,
        ..Config::default()
    }
}

#[test]
fn bad_input_gets_the_protocols_answer_and_the_server_goes_on() {
    let r = Running::start(SIZE, cfg());
    let base = r.base.clone();

    // Past the end, then a good read on the same connection.
    let mut c = r.client();
    assert_eq!(c.size, SIZE as u64);
    assert_eq!(c.read(1, SIZE as u64 - 4, 8).unwrap().0, 22, "EINVAL");
    assert_eq!(
        c.read(2, u64::MAX - 1, 8).unwrap().0,
        22,
        "EINVAL, no overflow"
    );
    assert_eq!(c.write(3, SIZE as u64 - 1, &[1, 2]).unwrap(), 28, "ENOSPC");
    let (err, data) = c.read(4, SIZE as u64 - 4, 4).unwrap();
    assert_eq!((err, &data[..]), (0, &base[SIZE - 4..]));
    c.disconnect().unwrap();

    // Unaligned I/O works: the advertised minimum block size is 1.
    let mut c = r.client();
    let (err, data) = c.read(5, 3, 5).unwrap();
    assert_eq!((err, &data[..]), (0, &base[3..8]));
    assert_eq!(c.write(6, 4095, &[7, 7, 7]).unwrap(), 0);
    assert_eq!(
        c.read(7, 4094, 5).unwrap().1,
        [base[4094], 7, 7, 7, base[4098]]
    );

    // Oversized: a read is refused; a write too, its payload read past.
    assert_eq!(c.read(8, 0, MAX + 1).unwrap().0, 22);
    assert_eq!(c.write(9, 0, &vec![0xee; MAX as usize + 1]).unwrap(), 22);
    assert_eq!(c.read(10, 0, 4).unwrap().1, base[..4]);

    // An unknown command type and unknown or misplaced flags.
    for (handle, flags, command) in [
        (11, 0, 9),
        (12, 0, 0xffff),
        (13, 0x4000, 0),
        (14, CmdFlags::NO_HOLE, 3),
        (15, CmdFlags::FAST_ZERO, 6),
    ] {
        c.send(raw_request(flags, command, handle, 0, 512), &[])
            .unwrap();
        let (err, h, _) = c.peer.reply(0).unwrap();
        assert_eq!((err, h), (22, handle));
    }
    assert_eq!(c.read(16, 0, 4).unwrap().0, 0, "still in step");
    c.disconnect().unwrap();

    // A write too large to read past: EINVAL, then the server closes (without
    // waiting for the payload, so none is sent: writing it could fail on the
    // closed socket).
    let mut c = r.client();
    c.send(raw_request(0, 1, 17, 0, 64 << 20), &[]).unwrap();
    assert_eq!(c.peer.reply(0).unwrap().0, 22);
    assert!(c.peer.closed());

    // A bad magic: the server closes without a reply.
    let mut c = r.client();
    let mut bad = raw_request(0, 0, 18, 0, 1);
    bad[0] ^= 0xff;
    c.send(bad, &[]).unwrap();
    assert!(c.peer.closed());

    // And the next connection is served as usual.
    let mut c = r.client();
    assert_eq!(c.read(19, 0, 16).unwrap().1, base[..16]);
    c.disconnect().unwrap();
    assert_eq!(r.disk.base(), &base, "the base never changes");

    let report = r.stop();
    assert_eq!(report.connections, 5);
    assert_eq!(
        report.failed_connections, 2,
        "the too-large write and the bad magic"
    );
    assert_eq!(report.errors, 11);
}

#[test]
fn a_stop_ends_idle_connections_promptly() {
    let r = Running::start(64 * 1024, cfg());
    let mut c = r.client();
    assert_eq!(c.read(1, 0, 1).unwrap().0, 0);
    // A second client stuck in the middle of the handshake (once greeted, the
    // server has accepted it and waits for its flags).
    let mut half = common::Peer { s: r.connect() };
    half.greeting().unwrap();
    let started = Instant::now();
    r.stop.store(true, Ordering::Relaxed);
    let mut r = r;
    let report = r.thread.take().unwrap().join().unwrap().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "serve took {:?} to stop",
        started.elapsed()
    );
    assert!(c.peer.closed(), "the idle connection was closed");
    assert!(half.closed(), "so was the one in its handshake");
    assert_eq!(report.connections, 2);
    assert_eq!(report.failed_connections, 0, "a stop is not a failure");
    assert!(!r.path.exists(), "the socket file is removed");
}

#[test]
fn bind_replaces_stale_sockets_and_refuses_live_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");
    let listen = Listen::Unix(path.clone());
    let export = || -> Arc<dyn Export> { Arc::new(CowDisk::new(vec![0u8; 4096], 4096)) };

    // A socket file left by a listener that is gone: replaced.
    drop(UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let server = Server::bind(&listen, export(), Config::default()).unwrap();

    // While it listens, a second bind is refused and says why.
    let e = Server::bind(&listen, export(), Config::default()).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
    assert!(e.to_string().contains("another server is listening"), "{e}");

    // Dropping a server that never served also removes its file.
    drop(server);
    assert!(!path.exists());

    // A file that is not a socket is never removed.
    std::fs::write(&path, b"precious").unwrap();
    let e = Server::bind(&listen, export(), Config::default()).unwrap_err();
    assert!(e.to_string().contains("is not a socket"), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");

    // A bad configuration is refused at bind.
    let bad = Config {
        block_size: 3,
        ..Config::default()
    };
    let other = Listen::Unix(dir.path().join("t.sock"));
    let e = Server::bind(&other, export(), bad).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
}

#[test]
fn tcp_works_and_events_are_reported() {
    let disk = Arc::new(CowDisk::new(common::pattern(100_000, 9), 4096));
    let listen = Listen::parse("nbd:127.0.0.1:0").unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&log);
    let server = Server::bind(&listen, disk.clone(), Config::default())
        .unwrap()
        .on_event(move |e| {
            let line = match e {
                Event::Connected { .. } => "connected".to_string(),
                Event::Ended { result, .. } => {
                    format!("ended {:?}", result.as_ref().map(|s| s.end))
                }
                Event::Panicked { .. } => "panicked".to_string(),
                Event::AcceptFailed { error } => format!("accept failed: {error}"),
            };
            sink.lock().unwrap().push(line);
        });
    let addr = server.local_addr();
    assert!(
        addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"),
        "{addr}"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let s = Arc::clone(&stop);
    let t = std::thread::spawn(move || server.serve(s));

    // Two connections share the export: a write on one is read on the other.
    let mut a = Client::go(TcpStream::connect(&addr).unwrap()).unwrap();
    let mut b = Client::go(TcpStream::connect(&addr).unwrap()).unwrap();
    assert_eq!(a.write(1, 99_990, &[5; 10]).unwrap(), 0);
    assert_eq!(b.read(2, 99_990, 10).unwrap().1, [5; 10]);
    a.disconnect().unwrap();
    b.disconnect().unwrap();
    // Give the connection threads a moment to end on their own.
    let deadline = Instant::now() + Duration::from_secs(5);
    while log.lock().unwrap().len() < 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    let report = t.join().unwrap().unwrap();
    assert_eq!(
        (report.connections, report.requests, report.errors),
        (2, 4, 0)
    );
    let mut log = log.lock().unwrap().clone();
    log.sort();
    assert_eq!(
        log,
        [
            "connected",
            "connected",
            "ended Ok(Disconnect)",
            "ended Ok(Disconnect)"
        ]
    );
}
