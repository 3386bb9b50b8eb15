//! What a server serves: the [`Export`] trait the transmission phase calls, the
//! [`Base`] trait under a copy-on-write overlay, and the [`Error`] values a
//! request can fail with.
//!
//! The server checks every request against the export's size and its own limits
//! before it calls the export, so an implementation only has to do the I/O. The
//! errors are the protocol's own set (proto.md, "Error values"), not `io::Error`:
//! a client only ever sees one of these numbers, so an export decides which one
//! fits rather than the server guessing from an errno.

use std::fmt;
use std::sync::Arc;

/// NBD error numbers a request can fail with (proto.md, "Error values"; the
/// numbers are the common Linux errno values, fixed by the protocol).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Error {
    /// `NBD_EPERM` (1): a write to a read-only export.
    Perm,
    /// `NBD_EIO` (5): the data could not be read or written.
    Io,
    /// `NBD_ENOMEM` (12): out of memory. The protocol asks servers to avoid it.
    NoMem,
    /// `NBD_EINVAL` (22): a malformed request (unknown command or flag, out of
    /// range, too long).
    Invalid,
    /// `NBD_ENOSPC` (28): a write past the end, or no room left for the data.
    NoSpace,
    /// `NBD_EOVERFLOW` (75): reserved by the protocol for unfragmented
    /// structured reads; this server never sends it itself.
    Overflow,
    /// `NBD_ENOTSUP` (95): reserved by the protocol for fast-zero requests; this
    /// server never sends it itself.
    NotSupported,
    /// `NBD_ESHUTDOWN` (108): the server is going away; the client must
    /// disconnect.
    Shutdown,
}

impl Error {
    /// The value sent in a reply's error field.
    pub const fn code(self) -> u32 {
        match self {
            Error::Perm => 1,
            Error::Io => 5,
            Error::NoMem => 12,
            Error::Invalid => 22,
            Error::NoSpace => 28,
            Error::Overflow => 75,
            Error::NotSupported => 95,
            Error::Shutdown => 108,
        }
    }

    /// The error a reply's error field names; `None` for 0 (success) and for
    /// values the protocol does not define.
    pub const fn from_code(code: u32) -> Option<Error> {
        Some(match code {
            1 => Error::Perm,
            5 => Error::Io,
            12 => Error::NoMem,
            22 => Error::Invalid,
            28 => Error::NoSpace,
            75 => Error::Overflow,
            95 => Error::NotSupported,
            108 => Error::Shutdown,
            _ => return None,
        })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::Perm => "operation not permitted (read-only export)",
            Error::Io => "input/output error",
            Error::NoMem => "out of memory",
            Error::Invalid => "invalid request",
            Error::NoSpace => "no space left (past the end, or the overlay is full)",
            Error::Overflow => "value too large",
            Error::NotSupported => "operation not supported",
            Error::Shutdown => "server is shutting down",
        })
    }
}

impl std::error::Error for Error {}

/// What an export serves.
///
/// The server calls these from one thread per connection, so an export shared
/// by several connections sees concurrent calls. Offsets and lengths are
/// already checked: `offset + len <= size()` always holds, and reads, writes and
/// write-zeroes are at most the server's `max_request` bytes. Trim lengths are
/// not capped by `max_request` (the protocol does not bound them), only by the
/// size. Zero-length requests never reach the export.
pub trait Export: Send + Sync {
    /// The export's size in bytes. Must not change while a server serves it.
    fn size(&self) -> u64;
    /// Whether writes are refused. The server then advertises the export as
    /// read-only and answers writes, trims and write-zeroes with
    /// [`Error::Perm`] without calling the export.
    fn read_only(&self) -> bool {
        false
    }
    /// Fills `buf` with the bytes at `offset`. May block (the server's
    /// connection thread waits).
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error>;
    /// Writes `data` at `offset`. With `fua` (force unit access), the data must
    /// be on stable storage before this returns.
    fn write(&self, offset: u64, data: &[u8], fua: bool) -> Result<(), Error>;
    /// Puts every write this export has acknowledged on stable storage.
    fn flush(&self) -> Result<(), Error>;
    /// A hint that `len` bytes at `offset` are no longer needed; their contents
    /// are undefined afterwards. Doing nothing is a valid implementation.
    fn trim(&self, offset: u64, len: u64) -> Result<(), Error>;
    /// Makes `len` bytes at `offset` read back as zeros. With `may_trim` the
    /// export may deallocate the range to do so; without it the range must stay
    /// allocated (the client asked for no holes).
    fn write_zeroes(&self, offset: u64, len: u64, may_trim: bool) -> Result<(), Error>;
}

/// The data under a copy-on-write overlay ([`crate::CowDisk`]): read-only.
///
/// Reads are checked against `size()` before they get here and may block for a
/// long time (a network fetch); the overlay never holds a lock across one.
pub trait Base: Send + Sync {
    /// The data's size in bytes. Must not change.
    fn size(&self) -> u64;
    /// Fills `buf` with the bytes at `offset`.
    fn read_base(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error>;
}

/// A caller can keep a handle to the base it hands to an overlay.
impl<B: Base + ?Sized> Base for Arc<B> {
    fn size(&self) -> u64 {
        (**self).size()
    }
    fn read_base(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        (**self).read_base(offset, buf)
    }
}

/// Bytes in memory: tests, fuzzing and small images.
impl Base for Vec<u8> {
    fn size(&self) -> u64 {
        self.len() as u64
    }
    fn read_base(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        let src = usize::try_from(offset)
            .ok()
            .and_then(|at| self.get(at..at.checked_add(buf.len())?))
            .ok_or(Error::Invalid)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for e in [
            Error::Perm,
            Error::Io,
            Error::NoMem,
            Error::Invalid,
            Error::NoSpace,
            Error::Overflow,
            Error::NotSupported,
            Error::Shutdown,
        ] {
            assert_eq!(Error::from_code(e.code()), Some(e));
        }
        assert_eq!(Error::from_code(0), None);
        assert_eq!(Error::from_code(2), None);
    }

    #[test]
    fn a_vec_base_refuses_reads_past_its_end() {
        let v = vec![1u8, 2, 3];
        let mut b = [0u8; 2];
        v.read_base(1, &mut b).unwrap();
        assert_eq!(b, [2, 3]);
        assert_eq!(v.read_base(2, &mut b), Err(Error::Invalid));
        assert_eq!(v.read_base(u64::MAX, &mut b), Err(Error::Invalid));
    }
}
