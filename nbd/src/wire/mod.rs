//! The NBD wire format, as pure functions on byte slices: nothing here reads a
//! socket, so every parser can be fuzzed and property-tested on its own.
//!
//! Each message is a `Repr`-style struct with `parse` (untrusted bytes in, a
//! validated value or a typed error out; never a panic) and `emit` (the exact
//! bytes). The names and numbers follow the protocol document, proto.md in
//! <https://github.com/NetworkBlockDevice/nbd>; the section each type implements
//! is named on it. All integers are big-endian.
//!
//! - [`option`]: the fixed-newstyle handshake (greeting, client flags, option
//!   headers, option replies, `NBD_OPT_INFO`/`NBD_OPT_GO` data and the
//!   `NBD_REP_INFO` items).
//! - [`request`]: the transmission phase (the 28-byte request header, its
//!   validation against the export, the simple reply, the structured reply
//!   chunk header).

pub mod option;
pub mod request;

pub use option::{
    ClientFlags, ExportEntry, Greeting, Info, InfoError, InfoRequest, OptionHeader,
    OptionHeaderError, OptionReplyHeader,
};
pub use request::{ChunkHeader, CmdFlags, Command, Limits, Request, RequestError, SimpleReply};

/// `NBDMAGIC`: the first eight bytes the server sends.
pub const NBD_MAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`: the newstyle magic, sent after [`NBD_MAGIC`] and before every
/// option.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Magic of every option reply.
pub const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// `NBD_REQUEST_MAGIC`: the first four bytes of every request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// `NBD_SIMPLE_REPLY_MAGIC`: the first four bytes of every simple reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// `NBD_STRUCTURED_REPLY_MAGIC`: the first four bytes of every structured
/// reply chunk.
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

/// Handshake flags the server sends (proto.md, "Handshake flags").
pub mod handshake_flags {
    /// `NBD_FLAG_FIXED_NEWSTYLE`.
    pub const FIXED_NEWSTYLE: u16 = 1 << 0;
    /// `NBD_FLAG_NO_ZEROES`.
    pub const NO_ZEROES: u16 = 1 << 1;
}

/// Client flags (proto.md, "Client flags").
pub mod client_flags {
    /// `NBD_FLAG_C_FIXED_NEWSTYLE`.
    pub const FIXED_NEWSTYLE: u32 = 1 << 0;
    /// `NBD_FLAG_C_NO_ZEROES`.
    pub const NO_ZEROES: u32 = 1 << 1;
}

/// Transmission flags (proto.md, "Transmission flags").
pub mod transmission_flags {
    /// `NBD_FLAG_HAS_FLAGS`: always set.
    pub const HAS_FLAGS: u16 = 1 << 0;
    /// `NBD_FLAG_READ_ONLY`.
    pub const READ_ONLY: u16 = 1 << 1;
    /// `NBD_FLAG_SEND_FLUSH`.
    pub const SEND_FLUSH: u16 = 1 << 2;
    /// `NBD_FLAG_SEND_FUA`.
    pub const SEND_FUA: u16 = 1 << 3;
    /// `NBD_FLAG_ROTATIONAL`.
    pub const ROTATIONAL: u16 = 1 << 4;
    /// `NBD_FLAG_SEND_TRIM`.
    pub const SEND_TRIM: u16 = 1 << 5;
    /// `NBD_FLAG_SEND_WRITE_ZEROES`.
    pub const SEND_WRITE_ZEROES: u16 = 1 << 6;
    /// `NBD_FLAG_SEND_DF`.
    pub const SEND_DF: u16 = 1 << 7;
    /// `NBD_FLAG_CAN_MULTI_CONN`.
    pub const CAN_MULTI_CONN: u16 = 1 << 8;
    /// `NBD_FLAG_SEND_RESIZE`.
    pub const SEND_RESIZE: u16 = 1 << 9;
    /// `NBD_FLAG_SEND_CACHE`.
    pub const SEND_CACHE: u16 = 1 << 10;
    /// `NBD_FLAG_SEND_FAST_ZERO`.
    pub const SEND_FAST_ZERO: u16 = 1 << 11;
}

/// Option types (proto.md, "Option types").
pub mod opt {
    /// `NBD_OPT_EXPORT_NAME`: choose an export and start transmission; no reply
    /// header, and no way to report an error but closing.
    pub const EXPORT_NAME: u32 = 1;
    /// `NBD_OPT_ABORT`.
    pub const ABORT: u32 = 2;
    /// `NBD_OPT_LIST`.
    pub const LIST: u32 = 3;
    /// `NBD_OPT_STARTTLS`.
    pub const STARTTLS: u32 = 5;
    /// `NBD_OPT_INFO`.
    pub const INFO: u32 = 6;
    /// `NBD_OPT_GO`.
    pub const GO: u32 = 7;
    /// `NBD_OPT_STRUCTURED_REPLY`.
    pub const STRUCTURED_REPLY: u32 = 8;
    /// `NBD_OPT_LIST_META_CONTEXT`.
    pub const LIST_META_CONTEXT: u32 = 9;
    /// `NBD_OPT_SET_META_CONTEXT`.
    pub const SET_META_CONTEXT: u32 = 10;
}

/// Option reply types (proto.md, "Option reply types"). Errors have bit 31 set.
pub mod rep {
    /// `NBD_REP_ACK`.
    pub const ACK: u32 = 1;
    /// `NBD_REP_SERVER`: one export, in reply to `NBD_OPT_LIST`.
    pub const SERVER: u32 = 2;
    /// `NBD_REP_INFO`: one item about an export.
    pub const INFO: u32 = 3;
    /// `NBD_REP_ERR_UNSUP`: unknown option.
    pub const ERR_UNSUP: u32 = (1 << 31) + 1;
    /// `NBD_REP_ERR_POLICY`.
    pub const ERR_POLICY: u32 = (1 << 31) + 2;
    /// `NBD_REP_ERR_INVALID`: a known option with malformed data.
    pub const ERR_INVALID: u32 = (1 << 31) + 3;
    /// `NBD_REP_ERR_UNKNOWN`: no export of that name.
    pub const ERR_UNKNOWN: u32 = (1 << 31) + 6;
    /// `NBD_REP_ERR_SHUTDOWN`.
    pub const ERR_SHUTDOWN: u32 = (1 << 31) + 7;
    /// `NBD_REP_ERR_TOO_BIG`: the option is too large to process.
    pub const ERR_TOO_BIG: u32 = (1 << 31) + 9;

    /// Whether a reply type is an error.
    pub const fn is_error(reply: u32) -> bool {
        reply & (1 << 31) != 0
    }
}

/// Information types in `NBD_REP_INFO` and in `NBD_OPT_INFO`/`NBD_OPT_GO`
/// requests (proto.md, under `NBD_REP_INFO`).
pub mod info {
    /// `NBD_INFO_EXPORT`: size and transmission flags; always sent.
    pub const EXPORT: u16 = 0;
    /// `NBD_INFO_NAME`.
    pub const NAME: u16 = 1;
    /// `NBD_INFO_DESCRIPTION`.
    pub const DESCRIPTION: u16 = 2;
    /// `NBD_INFO_BLOCK_SIZE`.
    pub const BLOCK_SIZE: u16 = 3;
}

/// The longest string the protocol allows (export names, messages).
pub const MAX_STRING: usize = 4096;

// Big-endian field access. Every caller has checked the slice's length first;
// the `get` keeps a wrong caller from panicking (it reads zeros instead), which
// the unit tests would catch.
fn be<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut a = [0u8; N];
    if let Some(src) = b.get(at..at + N) {
        a.copy_from_slice(src);
    }
    a
}
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(be(b, at))
}
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(be(b, at))
}
pub(crate) fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(be(b, at))
}
fn put(b: &mut [u8], at: usize, v: &[u8]) {
    b[at..at + v.len()].copy_from_slice(v);
}
pub(crate) fn put16(b: &mut [u8], at: usize, v: u16) {
    put(b, at, &v.to_be_bytes());
}
pub(crate) fn put32(b: &mut [u8], at: usize, v: u32) {
    put(b, at, &v.to_be_bytes());
}
pub(crate) fn put64(b: &mut [u8], at: usize, v: u64) {
    put(b, at, &v.to_be_bytes());
}
