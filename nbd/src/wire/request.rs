//! The transmission phase (proto.md, "Request message", "Simple reply message",
//! "Request types", "Error values").
//!
//! ```text
//! C: 0x25609513 u32 | flags u16 | type u16 | handle u64 | offset u64 | length u32
//!    (then `length` bytes if the type is NBD_CMD_WRITE)
//! S: 0x67446698 u32 | error u32 | handle u64
//!    (then `length` bytes if the request was a successful NBD_CMD_READ)
//! ```
//!
//! Checking a request is two pure steps. [`Request::parse`] is strict about the
//! header itself: a wrong magic means the stream is out of step (the only error
//! that must close the connection), while an unknown command type or a flag
//! not valid for the command is answered with `EINVAL` (proto.md: the server
//! SHOULD return `EINVAL` for an unknown command and for a flag not documented
//! for the command). [`Request::check`] then applies the export: read-only,
//! bounds and the maximum length, each with the error the protocol names.

use super::{
    be16, be32, be64, put16, put32, put64, REQUEST_MAGIC, SIMPLE_REPLY_MAGIC,
    STRUCTURED_REPLY_MAGIC,
};
use crate::Error;

/// A command type (proto.md, "Request types") this server implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// `NBD_CMD_READ` (0).
    Read,
    /// `NBD_CMD_WRITE` (1): `length` bytes of data follow the header.
    Write,
    /// `NBD_CMD_DISC` (2): the client is done; no reply.
    Disc,
    /// `NBD_CMD_FLUSH` (3).
    Flush,
    /// `NBD_CMD_TRIM` (4).
    Trim,
    /// `NBD_CMD_CACHE` (5): a prefetch hint.
    Cache,
    /// `NBD_CMD_WRITE_ZEROES` (6).
    WriteZeroes,
}

impl Command {
    /// The type field's value.
    pub const fn code(self) -> u16 {
        match self {
            Command::Read => 0,
            Command::Write => 1,
            Command::Disc => 2,
            Command::Flush => 3,
            Command::Trim => 4,
            Command::Cache => 5,
            Command::WriteZeroes => 6,
        }
    }

    /// The command a type field names; `None` for `NBD_CMD_BLOCK_STATUS` (7,
    /// needs structured replies, which this server does not offer), the
    /// experimental resize (8) and anything unknown.
    pub const fn from_code(code: u16) -> Option<Command> {
        Some(match code {
            0 => Command::Read,
            1 => Command::Write,
            2 => Command::Disc,
            3 => Command::Flush,
            4 => Command::Trim,
            5 => Command::Cache,
            6 => Command::WriteZeroes,
            _ => return None,
        })
    }

    /// The command flags valid on this command, given what the server
    /// advertises: `FUA` on every command (the server advertises
    /// `NBD_FLAG_SEND_FUA`, and must then accept it everywhere), `NO_HOLE` on
    /// `WRITE_ZEROES` only. `DF`, `REQ_ONE` and `FAST_ZERO` belong to features
    /// this server does not advertise, so they are never valid.
    pub const fn valid_flags(self) -> u16 {
        match self {
            Command::WriteZeroes => CmdFlags::FUA | CmdFlags::NO_HOLE,
            _ => CmdFlags::FUA,
        }
    }
}

/// The command flags this server accepts (proto.md, "Command flags").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct CmdFlags {
    /// `NBD_CMD_FLAG_FUA`: persist before replying.
    pub fua: bool,
    /// `NBD_CMD_FLAG_NO_HOLE`: a write-zeroes must leave the range allocated.
    pub no_hole: bool,
}

impl CmdFlags {
    /// `NBD_CMD_FLAG_FUA`.
    pub const FUA: u16 = 1 << 0;
    /// `NBD_CMD_FLAG_NO_HOLE`.
    pub const NO_HOLE: u16 = 1 << 1;
    /// `NBD_CMD_FLAG_DF` (structured replies only).
    pub const DF: u16 = 1 << 2;
    /// `NBD_CMD_FLAG_REQ_ONE` (block status only).
    pub const REQ_ONE: u16 = 1 << 3;
    /// `NBD_CMD_FLAG_FAST_ZERO` (only if advertised).
    pub const FAST_ZERO: u16 = 1 << 4;

    /// The flags field.
    pub const fn bits(self) -> u16 {
        (if self.fua { Self::FUA } else { 0 }) | (if self.no_hole { Self::NO_HOLE } else { 0 })
    }
}

/// A request header that passed [`Request::parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Request {
    /// What to do.
    pub command: Command,
    /// Its flags (only those valid for `command`).
    pub flags: CmdFlags,
    /// Echoed in the reply.
    pub handle: u64,
    /// Byte offset into the export.
    pub offset: u64,
    /// Bytes to act on (and, for a write, the payload's length).
    pub length: u32,
}

/// Why a request header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestError {
    /// Not a request: the stream is out of step and nothing after this can be
    /// trusted, so the connection must close.
    BadMagic {
        /// The first four bytes found.
        magic: u32,
    },
    /// A type this server does not implement; answer `EINVAL`. No payload is
    /// assumed to follow (only `NBD_CMD_WRITE` has one).
    UnknownCommand {
        /// The request's handle.
        handle: u64,
        /// The type field.
        command: u16,
    },
    /// A flag not valid on this command; answer `EINVAL` (and skip a write's
    /// payload first).
    BadFlags {
        /// The request's handle.
        handle: u64,
        /// The command.
        command: Command,
        /// The whole flags field.
        flags: u16,
        /// The length field (a write's payload length).
        length: u32,
    },
}

impl RequestError {
    /// The handle to answer, or `None` if the stream is out of step.
    pub const fn handle(&self) -> Option<u64> {
        match *self {
            RequestError::BadMagic { .. } => None,
            RequestError::UnknownCommand { handle, .. } | RequestError::BadFlags { handle, .. } => {
                Some(handle)
            }
        }
    }

    /// Bytes of payload that follow this header and must be read past before
    /// the next request: a write's length, else 0.
    pub const fn payload_len(&self) -> u32 {
        match *self {
            RequestError::BadFlags {
                command: Command::Write,
                length,
                ..
            } => length,
            _ => 0,
        }
    }
}

/// What a request is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The export's size in bytes.
    pub size: u64,
    /// The longest read, write, write-zeroes or cache the server accepts (the
    /// maximum block size it advertises).
    pub max_request: u32,
    /// Whether the export refuses writes.
    pub read_only: bool,
}

impl Request {
    /// Its exact length.
    pub const LEN: usize = 28;

    /// Parses a request header strictly. See [`RequestError`] for what each
    /// failure means for the connection.
    pub fn parse(b: &[u8; Self::LEN]) -> Result<Request, RequestError> {
        let magic = be32(b, 0);
        if magic != REQUEST_MAGIC {
            return Err(RequestError::BadMagic { magic });
        }
        let flags = be16(b, 4);
        let code = be16(b, 6);
        let handle = be64(b, 8);
        let offset = be64(b, 16);
        let length = be32(b, 24);
        let Some(command) = Command::from_code(code) else {
            return Err(RequestError::UnknownCommand {
                handle,
                command: code,
            });
        };
        if flags & !command.valid_flags() != 0 {
            return Err(RequestError::BadFlags {
                handle,
                command,
                flags,
                length,
            });
        }
        Ok(Request {
            command,
            flags: CmdFlags {
                fua: flags & CmdFlags::FUA != 0,
                no_hole: flags & CmdFlags::NO_HOLE != 0,
            },
            handle,
            offset,
            length,
        })
    }

    /// The header's bytes (a client's side; tests).
    pub fn emit(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        put32(&mut b, 0, REQUEST_MAGIC);
        put16(&mut b, 4, self.flags.bits());
        put16(&mut b, 6, self.command.code());
        put64(&mut b, 8, self.handle);
        put64(&mut b, 16, self.offset);
        put32(&mut b, 24, self.length);
        b
    }

    /// Whether `offset + length` stays within `size` (no overflow).
    pub fn in_bounds(&self, size: u64) -> bool {
        self.offset
            .checked_add(u64::from(self.length))
            .is_some_and(|end| end <= size)
    }

    /// Checks the request against the export, in this order, with the error
    /// the protocol names for each (proto.md, "Error values" and the request
    /// types):
    ///
    /// | command | read-only | length > max | past the end |
    /// | --- | --- | --- | --- |
    /// | READ, CACHE | — | `EINVAL` | `EINVAL` |
    /// | WRITE | `EPERM` | `EINVAL` | `ENOSPC` |
    /// | WRITE_ZEROES | `EPERM` | `EINVAL` | `ENOSPC` (its own SHOULD) |
    /// | TRIM | `EPERM` | not limited | `EINVAL` |
    /// | FLUSH, DISC | — | — | — |
    ///
    /// Trim lengths are not capped: the protocol's maximum block size binds
    /// only reads, writes, cache and write-zeroes, and a trim carries no
    /// payload. FLUSH's and DISC's offset and length are reserved (the client
    /// must send zeros); they are ignored, not refused. A zero length is in
    /// bounds at any offset up to the size (the protocol leaves it unspecified;
    /// the server treats it as a successful no-op).
    pub fn check(&self, limits: &Limits) -> Result<(), Error> {
        let too_long = self.length > limits.max_request;
        let inside = self.in_bounds(limits.size);
        let writes = matches!(
            self.command,
            Command::Write | Command::WriteZeroes | Command::Trim
        );
        if writes && limits.read_only {
            return Err(Error::Perm);
        }
        match self.command {
            Command::Disc | Command::Flush => Ok(()),
            Command::Read | Command::Cache => match (too_long, inside) {
                (false, true) => Ok(()),
                _ => Err(Error::Invalid),
            },
            Command::Write | Command::WriteZeroes => match (too_long, inside) {
                (true, _) => Err(Error::Invalid),
                (false, false) => Err(Error::NoSpace),
                (false, true) => Ok(()),
            },
            Command::Trim if inside => Ok(()),
            Command::Trim => Err(Error::Invalid),
        }
    }
}

/// A simple reply's header (proto.md, "Simple reply message").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimpleReply {
    /// 0 for success, else an [`Error::code`].
    pub error: u32,
    /// The request's handle.
    pub handle: u64,
}

impl SimpleReply {
    /// Its exact length.
    pub const LEN: usize = 16;

    /// A reply to `handle` with `result`.
    pub fn new(handle: u64, result: Result<(), Error>) -> Self {
        SimpleReply {
            error: result.err().map_or(0, Error::code),
            handle,
        }
    }

    /// Parses a reply header (a client's side; tests). `Err` holds the wrong
    /// magic.
    pub fn parse(b: &[u8; Self::LEN]) -> Result<Self, u32> {
        let magic = be32(b, 0);
        if magic != SIMPLE_REPLY_MAGIC {
            return Err(magic);
        }
        Ok(SimpleReply {
            error: be32(b, 4),
            handle: be64(b, 8),
        })
    }

    /// The header's bytes.
    pub fn emit(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        put32(&mut b, 0, SIMPLE_REPLY_MAGIC);
        put32(&mut b, 4, self.error);
        put64(&mut b, 8, self.handle);
        b
    }
}

/// A structured reply chunk's header (proto.md, "Structured reply chunk
/// message"); `length` bytes of payload follow. This server sends them only
/// for reads, and only to a client that negotiated `NBD_OPT_STRUCTURED_REPLY`.
///
/// ```text
/// 0x668e33ef u32 | flags u16 | type u16 | handle u64 | length u32
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHeader {
    /// Reply flags: [`ChunkHeader::DONE`] on the last chunk of a reply.
    pub flags: u16,
    /// The chunk type ([`ChunkHeader::NONE`], [`ChunkHeader::OFFSET_DATA`],
    /// [`ChunkHeader::ERROR`], …).
    pub kind: u16,
    /// The request's handle.
    pub handle: u64,
    /// Payload bytes that follow.
    pub length: u32,
}

impl ChunkHeader {
    /// Its exact length.
    pub const LEN: usize = 20;
    /// `NBD_REPLY_FLAG_DONE`: the reply's last chunk.
    pub const DONE: u16 = 1;
    /// `NBD_REPLY_TYPE_NONE`: no payload; success unless an error chunk came.
    pub const NONE: u16 = 0;
    /// `NBD_REPLY_TYPE_OFFSET_DATA`: offset u64, then data.
    pub const OFFSET_DATA: u16 = 1;
    /// `NBD_REPLY_TYPE_OFFSET_HOLE`: offset u64, hole size u32.
    pub const OFFSET_HOLE: u16 = 2;
    /// `NBD_REPLY_TYPE_ERROR`: error u32, message length u16, message.
    pub const ERROR: u16 = (1 << 15) + 1;
    /// `NBD_REPLY_TYPE_ERROR_OFFSET`: as `ERROR`, then offset u64.
    pub const ERROR_OFFSET: u16 = (1 << 15) + 2;

    /// Parses a chunk header (a client's side; tests). `Err` holds the wrong
    /// magic.
    pub fn parse(b: &[u8; Self::LEN]) -> Result<Self, u32> {
        let magic = be32(b, 0);
        if magic != STRUCTURED_REPLY_MAGIC {
            return Err(magic);
        }
        Ok(ChunkHeader {
            flags: be16(b, 4),
            kind: be16(b, 6),
            handle: be64(b, 8),
            length: be32(b, 16),
        })
    }

    /// The header's bytes.
    pub fn emit(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        put32(&mut b, 0, STRUCTURED_REPLY_MAGIC);
        put16(&mut b, 4, self.flags);
        put16(&mut b, 6, self.kind);
        put64(&mut b, 8, self.handle);
        put32(&mut b, 16, self.length);
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(flags: u16, command: u16, offset: u64, length: u32) -> [u8; 28] {
        let mut b = [0u8; 28];
        put32(&mut b, 0, REQUEST_MAGIC);
        put16(&mut b, 4, flags);
        put16(&mut b, 6, command);
        put64(&mut b, 8, 0x1122_3344_5566_7788);
        put64(&mut b, 16, offset);
        put32(&mut b, 24, length);
        b
    }

    #[test]
    fn golden_bytes() {
        let r = Request {
            command: Command::Write,
            flags: CmdFlags {
                fua: true,
                no_hole: false,
            },
            handle: 0x1122_3344_5566_7788,
            offset: 0x1000,
            length: 0x200,
        };
        let b = r.emit();
        assert_eq!(
            b,
            [
                0x25, 0x60, 0x95, 0x13, 0, 1, 0, 1, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88,
                0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 2, 0
            ]
        );
        assert_eq!(Request::parse(&b), Ok(r));
        let reply = SimpleReply::new(7, Err(Error::Invalid)).emit();
        assert_eq!(
            reply,
            [0x67, 0x44, 0x66, 0x98, 0, 0, 0, 22, 0, 0, 0, 0, 0, 0, 0, 7]
        );
        assert_eq!(
            SimpleReply::parse(&reply),
            Ok(SimpleReply {
                error: 22,
                handle: 7
            })
        );
        assert_eq!(SimpleReply::parse(&[0; 16]), Err(0));
        let chunk = ChunkHeader {
            flags: ChunkHeader::DONE,
            kind: ChunkHeader::ERROR,
            handle: 7,
            length: 6,
        };
        let b = chunk.emit();
        assert_eq!(
            b,
            [0x66, 0x8e, 0x33, 0xef, 0, 1, 0x80, 1, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 6]
        );
        assert_eq!(ChunkHeader::parse(&b), Ok(chunk));
        assert_eq!(ChunkHeader::parse(&[0; 20]), Err(0));
    }

    #[test]
    fn bad_magic_is_out_of_step() {
        let mut b = header(0, 0, 0, 512);
        b[3] ^= 0xff;
        let e = Request::parse(&b).unwrap_err();
        assert!(matches!(e, RequestError::BadMagic { magic: 0x2560_95ec }));
        assert_eq!(e.handle(), None);
        assert_eq!(e.payload_len(), 0);
    }

    #[test]
    fn unknown_commands_are_answerable() {
        for code in [7u16, 8, 9, 0x100, u16::MAX] {
            let e = Request::parse(&header(0, code, 0, 512)).unwrap_err();
            assert_eq!(
                e,
                RequestError::UnknownCommand {
                    handle: 0x1122_3344_5566_7788,
                    command: code
                }
            );
            assert_eq!(e.handle(), Some(0x1122_3344_5566_7788));
            assert_eq!(e.payload_len(), 0);
        }
    }

    #[test]
    fn flags_are_strict_per_command() {
        let all = [
            Command::Read,
            Command::Write,
            Command::Disc,
            Command::Flush,
            Command::Trim,
            Command::Cache,
            Command::WriteZeroes,
        ];
        for c in all {
            assert_eq!(Command::from_code(c.code()), Some(c));
            // FUA is valid everywhere.
            let r = Request::parse(&header(CmdFlags::FUA, c.code(), 0, 9)).unwrap();
            assert!(r.flags.fua);
            for bit in 1..16 {
                let flag = 1u16 << bit;
                let got = Request::parse(&header(flag, c.code(), 0, 9));
                let valid = c == Command::WriteZeroes && flag == CmdFlags::NO_HOLE;
                assert_eq!(got.is_ok(), valid, "{c:?} flag {flag:#x}");
                if let Err(e) = got {
                    assert_eq!(e.handle(), Some(0x1122_3344_5566_7788));
                    let payload = if c == Command::Write { 9 } else { 0 };
                    assert_eq!(e.payload_len(), payload);
                }
            }
        }
    }

    fn req(command: Command, offset: u64, length: u32) -> Request {
        Request {
            command,
            flags: CmdFlags::default(),
            handle: 1,
            offset,
            length,
        }
    }

    #[test]
    fn check_names_the_protocols_error() {
        use Command::*;
        let rw = Limits {
            size: 10_000,
            max_request: 4096,
            read_only: false,
        };
        let ro = Limits {
            read_only: true,
            ..rw
        };
        let cases = [
            // (command, offset, length, limits, expected)
            (Read, 0, 4096, rw, Ok(())),
            (Read, 3, 5, rw, Ok(())),
            (Read, 9_999, 1, rw, Ok(())),
            (Read, 9_999, 2, rw, Err(Error::Invalid)),
            (Read, u64::MAX, 1, rw, Err(Error::Invalid)),
            (Read, 0, 4097, rw, Err(Error::Invalid)),
            (Read, 10_000, 0, rw, Ok(())),
            (Read, 10_001, 0, rw, Err(Error::Invalid)),
            (Read, 0, 10, ro, Ok(())),
            (Cache, 9_000, 1_001, rw, Err(Error::Invalid)),
            (Cache, 0, 4097, rw, Err(Error::Invalid)),
            (Write, 9_999, 2, rw, Err(Error::NoSpace)),
            (Write, u64::MAX - 1, 4, rw, Err(Error::NoSpace)),
            (Write, 0, 4097, rw, Err(Error::Invalid)),
            (Write, 0, 1, ro, Err(Error::Perm)),
            (Write, 0, 0, rw, Ok(())),
            (WriteZeroes, 9_000, 1_001, rw, Err(Error::NoSpace)),
            (WriteZeroes, 0, 4097, rw, Err(Error::Invalid)),
            (WriteZeroes, 0, 1, ro, Err(Error::Perm)),
            (Trim, 0, 10_000, rw, Ok(())),
            (Trim, 1, 10_000, rw, Err(Error::Invalid)),
            (Trim, 0, 1, ro, Err(Error::Perm)),
            (Flush, 77, 88, rw, Ok(())),
            (Flush, 0, 0, ro, Ok(())),
            (Disc, 0, 0, rw, Ok(())),
        ];
        for (c, off, len, lim, want) in cases {
            assert_eq!(
                req(c, off, len).check(&lim),
                want,
                "{c:?} {off} {len} {lim:?}"
            );
        }
        // Trim is not capped by max_request.
        let big = Limits {
            size: u64::MAX,
            ..rw
        };
        assert_eq!(req(Trim, 0, u32::MAX).check(&big), Ok(()));
    }
}
