//! `boot_steer` on a real interface: a veth pair between two network namespaces
//! of the test's own, the program attached to one end, known UDP datagrams sent
//! from the other. The counters must count exactly the datagrams to the control
//! port, at least every datagram in total, and the datagrams must still reach
//! their sockets (the program passes everything).
//!
//! Privileged: needs root, `/sys/fs/bpf` and `ip` (iproute2), and says why it
//! skips without them. Everything it sends stays on the veth, inside
//! 10.77.250.0/24; its namespaces are deleted even when it fails.

use std::{
    fs::File,
    io,
    net::{Ipv4Addr, UdpSocket},
    os::fd::AsRawFd as _,
    path::Path,
    process::Command,
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use streamer::xdp::{AttachMode, BootSteer, Counters};
use streamer_common::wire::CONTROL_PORT;

/// The end `boot_steer` is attached to, in the first namespace.
const STEER_IF: &str = "xdpt0";
const STEER_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 250, 1);
const STEER_MAC: &str = "02:77:fa:00:00:01";
/// The sending end, in the second namespace.
const PEER_IF: &str = "xdpt1";
const PEER_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 250, 2);
const PEER_MAC: &str = "02:77:fa:00:00:02";
const PREFIX_LEN: u8 = 24;

/// A UDP port that is not the control port.
const OTHER_PORT: u16 = CONTROL_PORT + 100;
const TO_CONTROL: u64 = 40;
const TO_OTHER: u64 = 25;
const PAYLOAD: usize = 100;
/// Ethernet, IPv4 (no options) and UDP headers around each payload.
const FRAME_OVERHEAD: u64 = 14 + 20 + 8;

/// How long any one wait in the test may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the receiving sockets wait for the datagrams.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(5);

#[test]
fn boot_steer_counts_control_datagrams_on_veth() {
    if let Some(reason) = missing_requirement() {
        println!("skipping: {reason}");
        return;
    }
    let netns = Namespaces::create().unwrap_or_else(|e| panic!("setting up the veth pair: {e}"));

    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let steer_ns = netns.steer.clone();
    let steer = thread::spawn(move || steer_side(&steer_ns, &ready_tx));
    let peer_ns = netns.peer.clone();
    let peer = thread::spawn(move || peer_side(&peer_ns, &ready_rx));

    let peer = peer.join().expect("the sending thread panicked");
    let steer = steer.join().expect("the steering thread panicked");
    let report = match (steer, peer) {
        (Ok(report), Ok(())) => report,
        (Err(e), _) => panic!("steering side: {e}"),
        (Ok(_), Err(e)) => panic!("sending side: {e}"),
    };

    let Report {
        mode,
        before,
        after,
        received_control,
        received_other,
    } = report;
    println!(
        "boot_steer on {STEER_IF} in {mode} mode: sent {TO_CONTROL} to port {CONTROL_PORT} and \
         {TO_OTHER} to port {OTHER_PORT}; counted before {before:?}, after {after:?}; \
         received {received_control} + {received_other}"
    );
    let sent = TO_CONTROL + TO_OTHER;
    assert_eq!(
        before.control, 0,
        "control packets before anything was sent"
    );
    assert_eq!(after.control, TO_CONTROL, "control packets counted");
    // Other traffic (IPv6 neighbour discovery, MLD) may reach the interface too.
    assert!(
        after.packets - before.packets >= sent,
        "packets counted: {} < {sent} sent",
        after.packets - before.packets
    );
    let min_bytes = sent * (FRAME_OVERHEAD + PAYLOAD as u64);
    assert!(
        after.bytes - before.bytes >= min_bytes,
        "bytes counted: {} < {min_bytes} sent",
        after.bytes - before.bytes
    );
    // XDP_PASS: every datagram still reached its socket.
    assert_eq!(
        received_control, TO_CONTROL,
        "datagrams received on the control port"
    );
    assert_eq!(
        received_other, TO_OTHER,
        "datagrams received on the other port"
    );
}

/// What the steering side saw.
#[derive(Debug)]
struct Report {
    mode: AttachMode,
    before: Counters,
    after: Counters,
    received_control: u64,
    received_other: u64,
}

/// In the steering namespace: attach `boot_steer`, bind receivers on both ports,
/// say ready, receive while the peer sends (so no socket buffer overflows) until
/// every datagram is in or time is up, read the counters, detach.
fn steer_side(ns: &str, ready: &mpsc::Sender<()>) -> Result<Report, String> {
    enter_namespace(ns).map_err(|e| format!("entering namespace {ns}: {e}"))?;
    let steer = BootSteer::attach(STEER_IF).map_err(|e| chain(&e))?;
    let bind = |port| {
        let socket = UdpSocket::bind((STEER_ADDR, port))
            .map_err(|e| format!("binding {STEER_ADDR}:{port}: {e}"))?;
        socket
            .set_nonblocking(true)
            .map_err(|e| format!("setting {STEER_ADDR}:{port} non-blocking: {e}"))?;
        Ok::<_, String>(socket)
    };
    let control = bind(CONTROL_PORT)?;
    let other = bind(OTHER_PORT)?;
    let before = steer.counters().map_err(|e| chain(&e))?;

    ready.send(()).map_err(|_| "the sending thread is gone")?;
    let (mut received_control, mut received_other) = (0, 0);
    let deadline = Instant::now() + RECEIVE_TIMEOUT;
    while (received_control < TO_CONTROL || received_other < TO_OTHER) && Instant::now() < deadline
    {
        let got_control = drain(&control).map_err(|e| format!("receiving: {e}"))?;
        let got_other = drain(&other).map_err(|e| format!("receiving: {e}"))?;
        received_control += got_control;
        received_other += got_other;
        if got_control + got_other == 0 {
            thread::sleep(Duration::from_millis(10));
        }
    }

    let after = steer.counters().map_err(|e| chain(&e))?;
    let mode = steer.mode();
    steer.detach().map_err(|e| chain(&e))?;
    Ok(Report {
        mode,
        before,
        after,
        received_control,
        received_other,
    })
}

/// An error and its causes on one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}

/// Receives what is queued on a non-blocking socket; returns the datagram count.
fn drain(socket: &UdpSocket) -> io::Result<u64> {
    let mut buf = [0u8; 2 * PAYLOAD];
    let mut n = 0;
    loop {
        match socket.recv(&mut buf) {
            Ok(_) => n += 1,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(n),
            Err(e) => return Err(e),
        }
    }
}

/// In the peer namespace: once the steering side is ready, send the datagrams,
/// interleaving the two ports.
fn peer_side(ns: &str, ready: &mpsc::Receiver<()>) -> Result<(), String> {
    enter_namespace(ns).map_err(|e| format!("entering namespace {ns}: {e}"))?;
    let socket =
        UdpSocket::bind((PEER_ADDR, 0)).map_err(|e| format!("binding {PEER_ADDR}: {e}"))?;
    ready
        .recv_timeout(STEP_TIMEOUT)
        .map_err(|e| format!("waiting for boot_steer to be attached: {e}"))?;
    let payload = [0x5a_u8; PAYLOAD];
    let (mut to_control, mut to_other) = (0, 0);
    while to_control < TO_CONTROL || to_other < TO_OTHER {
        let port = if to_control < TO_CONTROL && (to_control <= to_other || to_other == TO_OTHER) {
            to_control += 1;
            CONTROL_PORT
        } else {
            to_other += 1;
            OTHER_PORT
        };
        socket
            .send_to(&payload, (STEER_ADDR, port))
            .map_err(|e| format!("sending to {STEER_ADDR}:{port}: {e}"))?;
    }
    Ok(())
}

/// Moves the calling thread (only) into the named network namespace.
fn enter_namespace(name: &str) -> io::Result<()> {
    let ns = File::open(Path::new("/run/netns").join(name))?;
    // SAFETY: `ns` is an open namespace file for the duration of the call, and
    // CLONE_NEWNET only switches this thread's network namespace, which the
    // threads of this test own for their whole life.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Why this test cannot run here, if it cannot.
fn missing_requirement() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (loading XDP programs and creating namespaces)".into());
    }
    if !Path::new("/sys/fs/bpf").is_dir() {
        return Some("/sys/fs/bpf is missing: this kernel has no BPF filesystem".into());
    }
    match Command::new("ip").arg("-V").output() {
        Ok(out) if out.status.success() => None,
        Ok(_) | Err(_) => {
            Some("`ip` (iproute2) is not installed; scripts/setup installs it".into())
        }
    }
}

/// The test's two namespaces and the veth between them; dropping deletes them
/// (and with them the veth), also when the test panics.
struct Namespaces {
    steer: String,
    peer: String,
}

impl Namespaces {
    fn create() -> Result<Self, String> {
        let pid = std::process::id();
        let netns = Namespaces {
            steer: format!("strm-xdpt-{pid}-s"),
            peer: format!("strm-xdpt-{pid}-p"),
        };
        // Left over from an earlier process with this pid, if any.
        for ns in [&netns.steer, &netns.peer] {
            let _ignored = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let (s, p) = (netns.steer.as_str(), netns.peer.as_str());
        let steer_addr = format!("{STEER_ADDR}/{PREFIX_LEN}");
        let peer_addr = format!("{PEER_ADDR}/{PREFIX_LEN}");
        let steer_ip = STEER_ADDR.to_string();
        let peer_ip = PEER_ADDR.to_string();
        let steps: [&[&str]; 9] = [
            &["netns", "add", s],
            &["netns", "add", p],
            &[
                "link", "add", STEER_IF, "netns", s, "address", STEER_MAC, "type", "veth", "peer",
                "name", PEER_IF, "netns", p, "address", PEER_MAC,
            ],
            &["-n", s, "addr", "add", &steer_addr, "dev", STEER_IF],
            &["-n", p, "addr", "add", &peer_addr, "dev", PEER_IF],
            // Static neighbours: no ARP on the wire, and no datagram waits for it.
            &[
                "-n",
                s,
                "neigh",
                "replace",
                &peer_ip,
                "lladdr",
                PEER_MAC,
                "dev",
                STEER_IF,
                "nud",
                "permanent",
            ],
            &[
                "-n",
                p,
                "neigh",
                "replace",
                &steer_ip,
                "lladdr",
                STEER_MAC,
                "dev",
                PEER_IF,
                "nud",
                "permanent",
            ],
            &["-n", s, "link", "set", STEER_IF, "up"],
            &["-n", p, "link", "set", PEER_IF, "up"],
        ];
        for args in steps {
            ip(args)?;
        }
        Ok(netns)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in [&self.steer, &self.peer] {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("cleanup: {e}");
            }
        }
    }
}

/// Runs `ip` with `args`; an error names the command and what it printed.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("running ip {}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}
