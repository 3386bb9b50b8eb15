//! The fixed-newstyle handshake (proto.md, "Fixed newstyle negotiation" and
//! "Option types"): the server's greeting, the client's flags, option headers,
//! option replies and the data of `NBD_OPT_INFO`/`NBD_OPT_GO`.
//!
//! ```text
//! S: NBDMAGIC u64 | IHAVEOPT u64 | handshake flags u16          (Greeting)
//! C: client flags u32                                            (ClientFlags)
//! C: IHAVEOPT u64 | option u32 | length u32 | data               (OptionHeader)
//! S: 0x3e889045565a9 u64 | option u32 | reply u32 | length u32 | data
//!                                                                (OptionReplyHeader)
//! ```

use super::{be16, be32, be64, client_flags, put16, put32, put64, IHAVEOPT, MAX_STRING};
use super::{info, NBD_MAGIC, OPTION_REPLY_MAGIC};

/// A handshake message did not start with its magic: the peer does not speak
/// newstyle NBD, or the stream is out of step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionHeaderError {
    /// The magic found instead.
    BadMagic {
        /// What the first eight bytes were.
        magic: u64,
    },
}

/// The server's first message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Greeting {
    /// Handshake flags ([`super::handshake_flags`]).
    pub flags: u16,
}

impl Greeting {
    /// Its exact length.
    pub const LEN: usize = 18;
    /// Parses a greeting (a client's side; tests).
    pub fn parse(b: &[u8; Self::LEN]) -> Result<Self, OptionHeaderError> {
        for (at, want) in [(0, NBD_MAGIC), (8, IHAVEOPT)] {
            let magic = be64(b, at);
            if magic != want {
                return Err(OptionHeaderError::BadMagic { magic });
            }
        }
        Ok(Greeting { flags: be16(b, 16) })
    }
    /// The greeting's bytes.
    pub fn emit(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        put64(&mut b, 0, NBD_MAGIC);
        put64(&mut b, 8, IHAVEOPT);
        put16(&mut b, 16, self.flags);
        b
    }
}

/// The client's flags, in reply to the greeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClientFlags {
    /// `NBD_FLAG_C_FIXED_NEWSTYLE`.
    pub fixed_newstyle: bool,
    /// `NBD_FLAG_C_NO_ZEROES`: no 124 zero bytes after `NBD_OPT_EXPORT_NAME`.
    pub no_zeroes: bool,
}

impl ClientFlags {
    /// Parses the flags word. Unknown bits are refused (the server must then
    /// drop the connection); the error holds them.
    pub fn parse(bits: u32) -> Result<Self, u32> {
        let known = client_flags::FIXED_NEWSTYLE | client_flags::NO_ZEROES;
        if bits & !known != 0 {
            return Err(bits & !known);
        }
        Ok(ClientFlags {
            fixed_newstyle: bits & client_flags::FIXED_NEWSTYLE != 0,
            no_zeroes: bits & client_flags::NO_ZEROES != 0,
        })
    }
    /// The flags word.
    pub const fn bits(self) -> u32 {
        let mut b = 0;
        if self.fixed_newstyle {
            b |= client_flags::FIXED_NEWSTYLE;
        }
        if self.no_zeroes {
            b |= client_flags::NO_ZEROES;
        }
        b
    }
}

/// An option's header; `length` bytes of data follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionHeader {
    /// The option ([`super::opt`]).
    pub option: u32,
    /// Bytes of data that follow.
    pub length: u32,
}

impl OptionHeader {
    /// Its exact length.
    pub const LEN: usize = 16;
    /// Parses an option header.
    pub fn parse(b: &[u8; Self::LEN]) -> Result<Self, OptionHeaderError> {
        let magic = be64(b, 0);
        if magic != IHAVEOPT {
            return Err(OptionHeaderError::BadMagic { magic });
        }
        Ok(OptionHeader {
            option: be32(b, 8),
            length: be32(b, 12),
        })
    }
    /// The header's bytes.
    pub fn emit(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        put64(&mut b, 0, IHAVEOPT);
        put32(&mut b, 8, self.option);
        put32(&mut b, 12, self.length);
        b
    }
}

/// An option reply's header; `length` bytes of data follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionReplyHeader {
    /// The option this answers.
    pub option: u32,
    /// The reply type ([`super::rep`]).
    pub reply: u32,
    /// Bytes of data that follow.
    pub length: u32,
}

impl OptionReplyHeader {
    /// Its exact length.
    pub const LEN: usize = 20;
    /// Parses a reply header (a client's side; tests).
    pub fn parse(b: &[u8; Self::LEN]) -> Result<Self, OptionHeaderError> {
        let magic = be64(b, 0);
        if magic != OPTION_REPLY_MAGIC {
            return Err(OptionHeaderError::BadMagic { magic });
        }
        Ok(OptionReplyHeader {
            option: be32(b, 8),
            reply: be32(b, 12),
            length: be32(b, 16),
        })
    }
    /// The header's bytes.
    pub fn emit(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        put64(&mut b, 0, OPTION_REPLY_MAGIC);
        put32(&mut b, 8, self.option);
        put32(&mut b, 12, self.reply);
        put32(&mut b, 16, self.length);
        b
    }
}

/// Why option data (or an info item) did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InfoError {
    /// Shorter than its fixed fields.
    Truncated,
    /// The lengths inside do not add up to the data's length.
    LengthMismatch,
    /// A string longer than the protocol's 4096 bytes.
    NameTooLong,
    /// An `NBD_REP_INFO` item of a type this crate does not know (a client
    /// ignores these).
    UnknownType(u16),
}

/// The data of `NBD_OPT_INFO` and `NBD_OPT_GO` (proto.md, under those options).
///
/// ```text
/// name length u32 | name | request count u16 | count × info type u16
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InfoRequest<'a> {
    /// The export's name; empty for the default export.
    pub name: &'a [u8],
    /// The requested information types, two bytes each.
    requests: &'a [u8],
}

impl<'a> InfoRequest<'a> {
    /// A request for `name` and the info types in `requests` (two big-endian
    /// bytes each). `None` if `requests` has an odd length or more than 65535
    /// entries, or `name` is longer than the protocol allows.
    pub fn new(name: &'a [u8], requests: &'a [u8]) -> Option<Self> {
        let fits = requests.len() % 2 == 0
            && requests.len() / 2 <= usize::from(u16::MAX)
            && name.len() <= MAX_STRING;
        fits.then_some(InfoRequest { name, requests })
    }

    /// Parses option data strictly: every length must add up exactly.
    pub fn parse(data: &'a [u8]) -> Result<Self, InfoError> {
        if data.len() < 6 {
            return Err(InfoError::Truncated);
        }
        let name_len = usize::try_from(be32(data, 0)).map_err(|_| InfoError::LengthMismatch)?;
        if name_len > data.len() - 6 {
            return Err(InfoError::LengthMismatch);
        }
        if name_len > MAX_STRING {
            return Err(InfoError::NameTooLong);
        }
        let name = &data[4..4 + name_len];
        let count = usize::from(be16(data, 4 + name_len));
        let requests = &data[6 + name_len..];
        if requests.len() != 2 * count {
            return Err(InfoError::LengthMismatch);
        }
        Ok(InfoRequest { name, requests })
    }

    /// The requested information types, in the client's order.
    pub fn requests(&self) -> impl Iterator<Item = u16> + 'a {
        self.requests
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
    }

    /// Whether the client asked for `info_type`.
    pub fn wants(&self, info_type: u16) -> bool {
        self.requests().any(|t| t == info_type)
    }

    /// Length when emitted.
    pub fn buffer_len(&self) -> usize {
        6 + self.name.len() + self.requests.len()
    }

    /// Writes the data into `out`, which must be [`Self::buffer_len`] bytes
    /// (panics otherwise: a caller's bug, not input).
    pub fn emit(&self, out: &mut [u8]) {
        let n = self.name.len();
        // Both fit: `new` and `parse` bound them.
        put32(out, 0, n as u32);
        out[4..4 + n].copy_from_slice(self.name);
        put16(out, 4 + n, (self.requests.len() / 2) as u16);
        out[6 + n..].copy_from_slice(self.requests);
    }
}

/// One `NBD_REP_INFO` item (its data: type, then payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Info<'a> {
    /// `NBD_INFO_EXPORT`: size and transmission flags.
    Export {
        /// Size in bytes.
        size: u64,
        /// Transmission flags ([`super::transmission_flags`]).
        flags: u16,
    },
    /// `NBD_INFO_NAME`: the export's canonical name.
    Name(&'a [u8]),
    /// `NBD_INFO_DESCRIPTION`: text for a human.
    Description(&'a [u8]),
    /// `NBD_INFO_BLOCK_SIZE`: block size constraints (proto.md, "Block size
    /// constraints").
    BlockSize {
        /// Smallest length and alignment a request may use.
        min: u32,
        /// The size at which requests are efficient.
        preferred: u32,
        /// The longest read or write the server accepts.
        max: u32,
    },
}

impl<'a> Info<'a> {
    /// Parses an item's data.
    pub fn parse(data: &'a [u8]) -> Result<Self, InfoError> {
        if data.len() < 2 {
            return Err(InfoError::Truncated);
        }
        let exact = |n: usize| {
            if data.len() == n {
                Ok(())
            } else {
                Err(InfoError::LengthMismatch)
            }
        };
        let string = || {
            let s = &data[2..];
            if s.len() > MAX_STRING {
                Err(InfoError::NameTooLong)
            } else {
                Ok(s)
            }
        };
        Ok(match be16(data, 0) {
            info::EXPORT => {
                exact(12)?;
                Info::Export {
                    size: be64(data, 2),
                    flags: be16(data, 10),
                }
            }
            info::NAME => Info::Name(string()?),
            info::DESCRIPTION => Info::Description(string()?),
            info::BLOCK_SIZE => {
                exact(14)?;
                Info::BlockSize {
                    min: be32(data, 2),
                    preferred: be32(data, 6),
                    max: be32(data, 10),
                }
            }
            t => return Err(InfoError::UnknownType(t)),
        })
    }

    /// Length when emitted.
    pub fn buffer_len(&self) -> usize {
        match self {
            Info::Export { .. } => 12,
            Info::Name(s) | Info::Description(s) => 2 + s.len(),
            Info::BlockSize { .. } => 14,
        }
    }

    /// Writes the item into `out`, which must be [`Self::buffer_len`] bytes
    /// (panics otherwise: a caller's bug, not input).
    pub fn emit(&self, out: &mut [u8]) {
        match *self {
            Info::Export { size, flags } => {
                put16(out, 0, info::EXPORT);
                put64(out, 2, size);
                put16(out, 10, flags);
            }
            Info::Name(s) | Info::Description(s) => {
                let t = if matches!(self, Info::Name(_)) {
                    info::NAME
                } else {
                    info::DESCRIPTION
                };
                put16(out, 0, t);
                out[2..].copy_from_slice(s);
            }
            Info::BlockSize {
                min,
                preferred,
                max,
            } => {
                put16(out, 0, info::BLOCK_SIZE);
                put32(out, 2, min);
                put32(out, 6, preferred);
                put32(out, 10, max);
            }
        }
    }
}

/// The data of one `NBD_REP_SERVER` reply to `NBD_OPT_LIST`.
///
/// ```text
/// name length u32 | name | description (the rest)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportEntry<'a> {
    /// The export's name.
    pub name: &'a [u8],
    /// Free text for a human; may be empty.
    pub description: &'a [u8],
}

impl<'a> ExportEntry<'a> {
    /// Parses the reply's data.
    pub fn parse(data: &'a [u8]) -> Result<Self, InfoError> {
        if data.len() < 4 {
            return Err(InfoError::Truncated);
        }
        let n = usize::try_from(be32(data, 0)).map_err(|_| InfoError::LengthMismatch)?;
        if n > data.len() - 4 {
            return Err(InfoError::LengthMismatch);
        }
        Ok(ExportEntry {
            name: &data[4..4 + n],
            description: &data[4 + n..],
        })
    }
    /// Length when emitted.
    pub fn buffer_len(&self) -> usize {
        4 + self.name.len() + self.description.len()
    }
    /// Writes the data into `out`, which must be [`Self::buffer_len`] bytes.
    pub fn emit(&self, out: &mut [u8]) {
        let n = self.name.len();
        // Names are bounded by the server's configuration check (4096 bytes).
        put32(out, 0, n as u32);
        out[4..4 + n].copy_from_slice(self.name);
        out[4 + n..].copy_from_slice(self.description);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{handshake_flags, opt, rep};

    #[test]
    fn greeting_golden_bytes() {
        let g = Greeting {
            flags: handshake_flags::FIXED_NEWSTYLE | handshake_flags::NO_ZEROES,
        };
        let b = g.emit();
        assert_eq!(&b[..8], b"NBDMAGIC");
        assert_eq!(&b[8..16], b"IHAVEOPT");
        assert_eq!(&b[16..], &[0, 3]);
        assert_eq!(Greeting::parse(&b), Ok(g));
        let mut bad = b;
        bad[0] = b'X';
        assert!(matches!(
            Greeting::parse(&bad),
            Err(OptionHeaderError::BadMagic { .. })
        ));
        let mut bad = b;
        bad[15] = b'X';
        assert!(Greeting::parse(&bad).is_err());
    }

    #[test]
    fn client_flags_refuse_unknown_bits() {
        assert_eq!(ClientFlags::parse(0), Ok(ClientFlags::default()));
        let both = ClientFlags::parse(3).unwrap();
        assert!(both.fixed_newstyle && both.no_zeroes);
        assert_eq!(both.bits(), 3);
        assert_eq!(ClientFlags::parse(4), Err(4));
        assert_eq!(ClientFlags::parse(0x8000_0001), Err(0x8000_0000));
    }

    #[test]
    fn option_header_golden_bytes_and_bad_magic() {
        let h = OptionHeader {
            option: opt::GO,
            length: 0x0102_0304,
        };
        let b = h.emit();
        assert_eq!(&b[..8], b"IHAVEOPT");
        assert_eq!(&b[8..], &[0, 0, 0, 7, 1, 2, 3, 4]);
        assert_eq!(OptionHeader::parse(&b), Ok(h));
        let mut bad = b;
        bad[7] ^= 1;
        assert_eq!(
            OptionHeader::parse(&bad),
            Err(OptionHeaderError::BadMagic {
                magic: u64::from_be_bytes(*b"IHAVEOPU")
            })
        );
    }

    #[test]
    fn option_reply_header_round_trips() {
        let h = OptionReplyHeader {
            option: opt::LIST,
            reply: rep::ERR_UNSUP,
            length: 9,
        };
        let b = h.emit();
        assert_eq!(&b[..8], &[0, 3, 0xe8, 0x89, 0x04, 0x55, 0x65, 0xa9]);
        assert_eq!(OptionReplyHeader::parse(&b), Ok(h));
        assert!(rep::is_error(h.reply) && !rep::is_error(rep::ACK));
        let mut bad = b;
        bad[0] = 1;
        assert!(OptionReplyHeader::parse(&bad).is_err());
    }

    #[test]
    fn info_request_parses_exactly() {
        // name "ab", two requests: NAME and BLOCK_SIZE.
        let data = [0, 0, 0, 2, b'a', b'b', 0, 2, 0, 1, 0, 3];
        let r = InfoRequest::parse(&data).unwrap();
        assert_eq!(r.name, b"ab");
        assert_eq!(r.requests().collect::<Vec<_>>(), vec![1, 3]);
        assert!(r.wants(info::BLOCK_SIZE) && !r.wants(info::DESCRIPTION));
        let mut again = vec![0u8; r.buffer_len()];
        r.emit(&mut again);
        assert_eq!(again, data);

        // The default export, no requests.
        let r = InfoRequest::parse(&[0, 0, 0, 0, 0, 0]).unwrap();
        assert!(r.name.is_empty() && r.requests().next().is_none());
    }

    #[test]
    fn info_request_refuses_every_malformed_shape() {
        use InfoError::*;
        let cases: &[(&[u8], InfoError)] = &[
            (&[], Truncated),
            (&[0, 0, 0, 0, 0], Truncated),
            // Name length past the end.
            (&[0, 0, 0, 1, 0, 0], LengthMismatch),
            (&[0xff, 0xff, 0xff, 0xff, 0, 0], LengthMismatch),
            // Count says one request, none follow.
            (&[0, 0, 0, 0, 0, 1], LengthMismatch),
            // Count says none, one follows.
            (&[0, 0, 0, 0, 0, 0, 0, 1], LengthMismatch),
            // A trailing odd byte.
            (&[0, 0, 0, 0, 0, 1, 0, 1, 9], LengthMismatch),
        ];
        for (data, want) in cases {
            assert_eq!(InfoRequest::parse(data), Err(*want), "{data:?}");
        }
        let mut long = vec![0u8; 4 + 4097 + 2];
        long[..4].copy_from_slice(&4097u32.to_be_bytes());
        assert_eq!(InfoRequest::parse(&long), Err(NameTooLong));
        assert!(InfoRequest::new(b"", &[0]).is_none());
        assert!(InfoRequest::new(&[b'x'; 4097], &[]).is_none());
    }

    #[test]
    fn info_items_round_trip_and_refuse_bad_lengths() {
        let items = [
            Info::Export {
                size: 4 << 20,
                flags: 0x6d,
            },
            Info::Name(b"disk"),
            Info::Description(b""),
            Info::BlockSize {
                min: 1,
                preferred: 4096,
                max: 32 << 20,
            },
        ];
        for i in items {
            let mut b = vec![0u8; i.buffer_len()];
            i.emit(&mut b);
            assert_eq!(Info::parse(&b), Ok(i));
            if matches!(i, Info::Export { .. } | Info::BlockSize { .. }) {
                assert_eq!(
                    Info::parse(&b[..b.len() - 1]),
                    Err(InfoError::LengthMismatch)
                );
                b.push(0);
                assert_eq!(Info::parse(&b), Err(InfoError::LengthMismatch));
            }
        }
        assert_eq!(Info::parse(&[0]), Err(InfoError::Truncated));
        assert_eq!(Info::parse(&[0, 9]), Err(InfoError::UnknownType(9)));
    }

    #[test]
    fn export_entry_round_trips() {
        let e = ExportEntry {
            name: b"img",
            description: b"a disk",
        };
        let mut b = vec![0u8; e.buffer_len()];
        e.emit(&mut b);
        assert_eq!(ExportEntry::parse(&b), Ok(e));
        assert_eq!(ExportEntry::parse(&[0, 0, 0]), Err(InfoError::Truncated));
        assert_eq!(
            ExportEntry::parse(&[0, 0, 0, 1]),
            Err(InfoError::LengthMismatch)
        );
    }
}
