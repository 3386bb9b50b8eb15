//! One connection: [`serve_connection`] runs the handshake
//! ([`crate::handshake`]) and then the transmission phase
//! ([`crate::transmission`]) over any blocking `Read + Write` stream.
//!
//! The stream is read through a `BufReader` and written through a `BufWriter`
//! (flushed after every reply), both over one [`Half`] wrapper around the same
//! stream. The wrapper is also where shutdown is seen: it retries reads and
//! writes that time out (the server gives its sockets a 100 ms timeout for
//! this) and fails them once the stop flag is set, so a connection blocked on
//! an idle client notices a stop within one timeout.

use crate::{Config, Export};
use std::cell::RefCell;
use std::fmt;
use std::io::{self, BufReader, BufWriter, ErrorKind, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConnEnd {
    /// The client sent `NBD_CMD_DISC`.
    Disconnect,
    /// The client closed the connection between messages.
    #[default]
    Eof,
    /// The client sent `NBD_OPT_ABORT` during the handshake.
    Abort,
    /// The server was stopped.
    Stopped,
    /// A protocol or I/O error ended it (see [`ConnError`]).
    Failed,
}

/// What one connection did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnStats {
    /// Requests received in the transmission phase (answered or not).
    pub requests: u64,
    /// Requests answered with an error.
    pub errors: u64,
    /// Bytes sent to the client by successful reads.
    pub bytes_read: u64,
    /// Bytes written by successful writes.
    pub bytes_written: u64,
    /// How it ended.
    pub end: ConnEnd,
}

/// Why a connection was closed by the server, or broke.
#[derive(Debug)]
pub enum ConnErrorKind {
    /// The stream failed.
    Io(io::Error),
    /// The client closed the connection in the middle of a message.
    Truncated {
        /// Which message.
        what: &'static str,
    },
    /// The server's [`Config`] is invalid (see [`Config::validate`]).
    Config(String),
    /// The client set handshake flags this server does not know; the protocol
    /// requires closing.
    ClientFlags(u32),
    /// An option did not start with `IHAVEOPT`.
    OptionMagic(u64),
    /// An option's data was longer than this server accepts.
    OptionTooLong {
        /// The option.
        option: u32,
        /// Its declared length.
        length: u32,
    },
    /// `NBD_OPT_EXPORT_NAME` named an export this server does not have (that
    /// option has no error reply, so the protocol requires closing).
    UnknownExport(String),
    /// A request did not start with the request magic: the stream is out of
    /// step.
    RequestMagic(u32),
    /// A refused write's payload was too large to read and discard.
    PayloadTooLarge {
        /// Its declared length.
        length: u32,
    },
}

impl fmt::Display for ConnErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnErrorKind::Io(e) => write!(f, "connection I/O failed: {e}"),
            ConnErrorKind::Truncated { what } => {
                write!(
                    f,
                    "the client closed the connection in the middle of a {what}"
                )
            }
            ConnErrorKind::Config(e) => write!(f, "invalid NBD server configuration: {e}"),
            ConnErrorKind::ClientFlags(bits) => write!(
                f,
                "the client sent unknown handshake flags {bits:#x}; is it an NBD client?"
            ),
            ConnErrorKind::OptionMagic(m) => write!(
                f,
                "the client's option header has magic {m:#018x}, not IHAVEOPT; \
                 it does not speak fixed-newstyle NBD"
            ),
            ConnErrorKind::OptionTooLong { option, length } => write!(
                f,
                "the client sent option {option} with {length} bytes of data, more than \
                 the {} accepted",
                crate::handshake::MAX_OPTION_LEN
            ),
            ConnErrorKind::UnknownExport(name) => write!(
                f,
                "the client asked for export {name:?}, which this server does not have"
            ),
            ConnErrorKind::RequestMagic(m) => write!(
                f,
                "a request has magic {m:#010x}, not 0x25609513: the stream is out of step"
            ),
            ConnErrorKind::PayloadTooLarge { length } => write!(
                f,
                "the client sent a {length}-byte write, too large to read past; closed"
            ),
        }
    }
}

impl From<io::Error> for ConnErrorKind {
    fn from(e: io::Error) -> Self {
        ConnErrorKind::Io(e)
    }
}

/// A connection that ended on an error, with what it did before.
#[derive(Debug)]
pub struct ConnError {
    /// What went wrong.
    pub kind: ConnErrorKind,
    /// The connection's counts up to then (`end` is [`ConnEnd::Failed`]).
    pub stats: ConnStats,
}

impl fmt::Display for ConnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (after {} requests)", self.kind, self.stats.requests)
    }
}

impl std::error::Error for ConnError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            ConnErrorKind::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// One direction's view of the shared stream: retries timeouts, fails once
/// `stop` is set.
pub(crate) struct Half<'a, S> {
    cell: &'a RefCell<S>,
    stop: &'a AtomicBool,
}

fn stopping() -> io::Error {
    io::Error::other("the NBD server is stopping")
}

fn retry(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}

// `borrow_mut` cannot fail: a session makes one call at a time on one thread,
// and no call on the stream re-enters the other half.
impl<S: Read> Read for Half<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Err(stopping());
            }
            let r = self.cell.borrow_mut().read(buf);
            match r {
                Err(e) if retry(e.kind()) => continue,
                r => return r,
            }
        }
    }
}

impl<S: Write> Write for Half<'_, S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Err(stopping());
            }
            let r = self.cell.borrow_mut().write(buf);
            match r {
                Err(e) if retry(e.kind()) => continue,
                r => return r,
            }
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        self.cell.borrow_mut().flush()
    }
}

/// Where a handshake leads.
pub(crate) enum Flow {
    Transmit,
    End(ConnEnd),
}

/// A connection's state, shared by the handshake and transmission code.
pub(crate) struct Session<'a, S: Read + Write> {
    pub(crate) r: BufReader<Half<'a, S>>,
    pub(crate) w: BufWriter<Half<'a, S>>,
    pub(crate) export: &'a dyn Export,
    pub(crate) cfg: &'a Config,
    stop: &'a AtomicBool,
    /// Option data, request payloads and read data: grown to the largest
    /// request seen, never shrunk, never allocated per request.
    pub(crate) buf: Vec<u8>,
    pub(crate) stats: ConnStats,
    /// The client negotiated `NBD_OPT_STRUCTURED_REPLY`: reads are answered
    /// with structured chunks.
    pub(crate) structured: bool,
}

impl<S: Read + Write> Session<'_, S> {
    pub(crate) fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Fills `msg`. `Ok(false)` if the client closed the connection before
    /// its first byte (a clean end between messages).
    pub(crate) fn read_message(
        &mut self,
        msg: &mut [u8],
        what: &'static str,
    ) -> Result<bool, ConnErrorKind> {
        let mut filled = 0;
        while filled < msg.len() {
            match self.r.read(&mut msg[filled..]) {
                Ok(0) if filled == 0 => return Ok(false),
                Ok(0) => return Err(ConnErrorKind::Truncated { what }),
                Ok(n) => filled += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(true)
    }

    /// Reads exactly `n` bytes into the front of `buf` (grown to fit).
    pub(crate) fn read_payload(
        &mut self,
        n: usize,
        what: &'static str,
    ) -> Result<(), ConnErrorKind> {
        if self.buf.len() < n {
            self.buf.resize(n, 0);
        }
        self.r
            .read_exact(&mut self.buf[..n])
            .map_err(|e| match e.kind() {
                ErrorKind::UnexpectedEof => ConnErrorKind::Truncated { what },
                _ => e.into(),
            })
    }

    /// Reads past `n` bytes without keeping them (in the reader's own
    /// bounded chunks).
    pub(crate) fn discard(&mut self, n: u64, what: &'static str) -> Result<(), ConnErrorKind> {
        let got = io::copy(&mut (&mut self.r).take(n), &mut io::sink())?;
        if got < n {
            return Err(ConnErrorKind::Truncated { what });
        }
        Ok(())
    }
}

/// Serves one connection: the fixed-newstyle handshake, then requests until
/// `NBD_CMD_DISC`, the client closing, or `stop` (checked between messages, and
/// whenever a read or write on the stream times out).
///
/// `stream` should be blocking; a read timeout on it (as [`crate::Server`]
/// sets) lets a stop be seen while the client is idle. Returns the
/// connection's counts, or why the server closed it (a protocol violation
/// that leaves no other choice, or an I/O error).
pub fn serve_connection<S: Read + Write>(
    stream: S,
    export: &dyn Export,
    cfg: &Config,
    stop: &AtomicBool,
) -> Result<ConnStats, ConnError> {
    let cell = RefCell::new(stream);
    let mut s = Session {
        r: BufReader::with_capacity(128 << 10, Half { cell: &cell, stop }),
        w: BufWriter::with_capacity(128 << 10, Half { cell: &cell, stop }),
        export,
        cfg,
        stop,
        buf: Vec::new(),
        stats: ConnStats::default(),
        structured: false,
    };
    let outcome = match cfg.validate() {
        Err(e) => Err(ConnErrorKind::Config(e)),
        Ok(()) => s.handshake().and_then(|flow| match flow {
            Flow::Transmit => s.transmit(),
            Flow::End(end) => Ok(end),
        }),
    };
    // Every reply was flushed when sent; this only matters after an error.
    let _ = s.w.flush();
    let mut stats = s.stats;
    match outcome {
        Ok(end) => {
            stats.end = end;
            Ok(stats)
        }
        Err(_) if stop.load(Ordering::Relaxed) => {
            stats.end = ConnEnd::Stopped;
            Ok(stats)
        }
        Err(kind) => {
            stats.end = ConnEnd::Failed;
            Err(ConnError { kind, stats })
        }
    }
}
