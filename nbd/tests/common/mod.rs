//! A minimal NBD client and fixtures shared by the integration tests. Built on
//! the crate's own wire types, so what it sends is what the server parses; raw
//! bytes only where a test needs a header the types refuse to build.
#![allow(dead_code, reason = "each test binary uses a different part")]
#![expect(unreachable_pub, reason = "a test helper module, not an API")]

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use streamer_nbd::wire::{
    client_flags, info, opt, rep, ChunkHeader, Greeting, Info, InfoRequest, OptionHeader,
    OptionReplyHeader, SimpleReply, REQUEST_MAGIC,
};
use streamer_nbd::{Config, CowDisk, Export, Listen, ServeReport, Server};

/// Deterministic pseudo-random bytes (xorshift64).
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A raw request header: any command type and flags.
pub fn raw_request(flags: u16, command: u16, handle: u64, offset: u64, length: u32) -> [u8; 28] {
    let mut b = [0u8; 28];
    b[..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
    b[4..6].copy_from_slice(&flags.to_be_bytes());
    b[6..8].copy_from_slice(&command.to_be_bytes());
    b[8..16].copy_from_slice(&handle.to_be_bytes());
    b[16..24].copy_from_slice(&offset.to_be_bytes());
    b[24..28].copy_from_slice(&length.to_be_bytes());
    b
}

/// An option with its data.
pub fn option(option: u32, data: &[u8]) -> Vec<u8> {
    let mut v = OptionHeader {
        option,
        length: data.len() as u32,
    }
    .emit()
    .to_vec();
    v.extend_from_slice(data);
    v
}

/// `NBD_OPT_INFO`/`NBD_OPT_GO` data.
pub fn info_data(name: &[u8], requests: &[u16]) -> Vec<u8> {
    let reqs: Vec<u8> = requests.iter().flat_map(|r| r.to_be_bytes()).collect();
    let r = InfoRequest::new(name, &reqs).expect("a valid info request");
    let mut v = vec![0u8; r.buffer_len()];
    r.emit(&mut v);
    v
}

/// Reads what a server sent, message by message.
pub struct Peer<S> {
    pub s: S,
}

impl<S: Read + Write> Peer<S> {
    pub fn greeting(&mut self) -> io::Result<Greeting> {
        let mut b = [0u8; Greeting::LEN];
        self.s.read_exact(&mut b)?;
        Greeting::parse(&b).map_err(|e| io::Error::other(format!("{e:?}")))
    }

    pub fn opt_reply(&mut self) -> io::Result<(OptionReplyHeader, Vec<u8>)> {
        let mut b = [0u8; OptionReplyHeader::LEN];
        self.s.read_exact(&mut b)?;
        let h = OptionReplyHeader::parse(&b).map_err(|e| io::Error::other(format!("{e:?}")))?;
        let mut data = vec![0u8; h.length as usize];
        self.s.read_exact(&mut data)?;
        Ok((h, data))
    }

    /// Reads `NBD_REP_INFO`s until the final reply; the export's size and
    /// flags, the block sizes and the final reply type.
    pub fn info_replies(&mut self, option: u32) -> io::Result<InfoReplies> {
        let mut out = InfoReplies::default();
        loop {
            let (h, data) = self.opt_reply()?;
            assert_eq!(h.option, option);
            if h.reply != rep::INFO {
                out.last = h.reply;
                out.message = String::from_utf8_lossy(&data).into_owned();
                return Ok(out);
            }
            match Info::parse(&data).expect("server info items parse") {
                Info::Export { size, flags } => out.export = Some((size, flags)),
                Info::BlockSize {
                    min,
                    preferred,
                    max,
                } => out.block = Some((min, preferred, max)),
                Info::Name(n) => out.name = Some(n.to_vec()),
                Info::Description(d) => out.description = Some(d.to_vec()),
            }
        }
    }

    /// A simple reply: its error and handle; then `data_len` bytes if the error
    /// is 0.
    pub fn reply(&mut self, data_len: usize) -> io::Result<(u32, u64, Vec<u8>)> {
        let mut b = [0u8; SimpleReply::LEN];
        self.s.read_exact(&mut b)?;
        let r = SimpleReply::parse(&b)
            .map_err(|m| io::Error::other(format!("bad reply magic {m:#x}")))?;
        let mut data = Vec::new();
        if r.error == 0 {
            data.resize(data_len, 0);
            self.s.read_exact(&mut data)?;
        }
        Ok((r.error, r.handle, data))
    }

    /// A structured reply chunk: its header and payload.
    pub fn chunk(&mut self) -> io::Result<(ChunkHeader, Vec<u8>)> {
        let mut b = [0u8; ChunkHeader::LEN];
        self.s.read_exact(&mut b)?;
        let h = ChunkHeader::parse(&b)
            .map_err(|m| io::Error::other(format!("bad chunk magic {m:#x}")))?;
        let mut payload = vec![0u8; h.length as usize];
        self.s.read_exact(&mut payload)?;
        Ok((h, payload))
    }

    /// True if the server closed the connection (reads EOF).
    pub fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.s.read(&mut b), Ok(0))
    }
}

#[derive(Debug, Default)]
pub struct InfoReplies {
    pub export: Option<(u64, u16)>,
    pub block: Option<(u32, u32, u32)>,
    pub name: Option<Vec<u8>>,
    pub description: Option<Vec<u8>>,
    pub last: u32,
    pub message: String,
}

/// A client connected and past `NBD_OPT_GO`.
pub struct Client<S> {
    pub peer: Peer<S>,
    pub size: u64,
    pub flags: u16,
}

impl<S: Read + Write> Client<S> {
    pub fn go(s: S) -> io::Result<Self> {
        let mut peer = Peer { s };
        peer.greeting()?;
        let cf = client_flags::FIXED_NEWSTYLE | client_flags::NO_ZEROES;
        peer.s.write_all(&cf.to_be_bytes())?;
        peer.s
            .write_all(&option(opt::GO, &info_data(b"", &[info::BLOCK_SIZE])))?;
        let r = peer.info_replies(opt::GO)?;
        if r.last != rep::ACK {
            return Err(io::Error::other(format!(
                "GO refused: {:#x} {}",
                r.last, r.message
            )));
        }
        let (size, flags) = r.export.expect("NBD_INFO_EXPORT before ACK");
        Ok(Client { peer, size, flags })
    }

    pub fn send(&mut self, header: [u8; 28], payload: &[u8]) -> io::Result<()> {
        self.peer.s.write_all(&header)?;
        self.peer.s.write_all(payload)?;
        self.peer.s.flush()
    }

    /// A read: the error and the data.
    pub fn read(&mut self, handle: u64, offset: u64, len: u32) -> io::Result<(u32, Vec<u8>)> {
        self.send(raw_request(0, 0, handle, offset, len), &[])?;
        let (err, h, data) = self.peer.reply(len as usize)?;
        assert_eq!(h, handle);
        Ok((err, data))
    }

    /// A write: the error.
    pub fn write(&mut self, handle: u64, offset: u64, data: &[u8]) -> io::Result<u32> {
        self.send(raw_request(0, 1, handle, offset, data.len() as u32), data)?;
        let (err, h, _) = self.peer.reply(0)?;
        assert_eq!(h, handle);
        Ok(err)
    }

    pub fn disconnect(mut self) -> io::Result<()> {
        self.send(raw_request(0, 2, 0, 0, 0), &[])
    }
}

/// A server on a unix socket in a temporary directory, serving a `CowDisk`
/// over a pseudo-random base, on its own thread.
pub struct Running {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    pub base: Vec<u8>,
    pub disk: Arc<CowDisk<Vec<u8>>>,
    pub stop: Arc<AtomicBool>,
    pub thread: Option<JoinHandle<io::Result<ServeReport>>>,
}

impl Running {
    pub fn start(size: usize, cfg: Config) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nbd.sock");
        let base = pattern(size, 0xb10c);
        let disk = Arc::new(CowDisk::new(base.clone(), 4096));
        let export: Arc<dyn Export> = disk.clone();
        let server = Server::bind(&Listen::Unix(path.clone()), export, cfg).unwrap();
        assert_eq!(server.local_addr(), path.display().to_string());
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let thread = Some(std::thread::spawn(move || server.serve(s)));
        Running {
            dir,
            path,
            base,
            disk,
            stop,
            thread,
        }
    }

    pub fn connect(&self) -> std::os::unix::net::UnixStream {
        let s = std::os::unix::net::UnixStream::connect(&self.path).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        s
    }

    pub fn client(&self) -> Client<std::os::unix::net::UnixStream> {
        Client::go(self.connect()).unwrap()
    }

    /// Stops the server and returns its report.
    pub fn stop(mut self) -> ServeReport {
        self.stop.store(true, Ordering::Relaxed);
        let report = self.thread.take().unwrap().join().unwrap().unwrap();
        assert!(!self.path.exists(), "serve removes its socket file");
        report
    }

    pub fn socket(&self) -> &Path {
        &self.path
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
