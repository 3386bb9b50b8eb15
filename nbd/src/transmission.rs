//! The transmission phase, server side: one request at a time, one simple
//! reply each (proto.md, "Transmission", "Request types").
//!
//! Every request header is parsed strictly ([`Request::parse`]) and checked
//! against the export ([`Request::check`]) before the export is called. A
//! refused request is answered with the protocol's error and the connection
//! goes on, with two exceptions that close it:
//!
//! - a wrong request magic: the stream is out of step, and whatever follows
//!   cannot be parsed as requests;
//! - a refused write whose payload is longer than [`crate::Config`]'s discard limit
//!   (twice `max_request`, at least 32 MiB): the payload must be read past to
//!   reach the next request, and reading up to 4 GiB the client was told not to
//!   send only serves a broken or hostile client. The error reply is sent
//!   first. Shorter refused payloads are read and discarded.
//!
//! Length 0 is answered with success and does nothing (the protocol leaves it
//! unspecified but asks the server not to disconnect). `NBD_CMD_CACHE` is
//! checked like a read and answered with success without doing anything: the
//! protocol's hint needs no action, `NBD_FLAG_SEND_CACHE` is not advertised,
//! and the protocol asks servers not to answer `ENOTSUP` outside fast zeroes.
//! FUA on a write is passed to the export; on trim and write-zeroes the export
//! is flushed before the reply.
//!
//! Replies are simple, except to reads from a client that negotiated
//! structured replies (see [`crate::handshake`] for why): data comes as one
//! `OFFSET_DATA` chunk (a zero-length read as one `NONE` chunk) and an error as
//! one `ERROR` chunk with a short message, each marked as the last chunk. The
//! protocol forbids simple replies to reads once structured replies are
//! negotiated, refused reads included.

use crate::conn::{ConnErrorKind, Session};
use crate::wire::{ChunkHeader, Command, Limits, Request, RequestError, SimpleReply};
use crate::{ConnEnd, Error};
use std::io::{Read, Write};

impl<S: Read + Write> Session<'_, S> {
    /// Serves requests until the client disconnects or the server stops.
    pub(crate) fn transmit(&mut self) -> Result<ConnEnd, ConnErrorKind> {
        let limits = Limits {
            size: self.export.size(),
            max_request: self.cfg.max_request,
            read_only: self.export.read_only(),
        };
        loop {
            if self.stopping() {
                return Ok(ConnEnd::Stopped);
            }
            let mut h = [0u8; Request::LEN];
            if !self.read_message(&mut h, "request header")? {
                return Ok(ConnEnd::Eof);
            }
            self.stats.requests += 1;
            let req = match Request::parse(&h) {
                Ok(req) => req,
                Err(RequestError::BadMagic { magic }) => {
                    return Err(ConnErrorKind::RequestMagic(magic));
                }
                Err(RequestError::UnknownCommand { handle, .. }) => {
                    self.refuse(handle, false, Error::Invalid, 0)?;
                    continue;
                }
                Err(
                    e @ RequestError::BadFlags {
                        handle, command, ..
                    },
                ) => {
                    let read = command == Command::Read;
                    self.refuse(handle, read, Error::Invalid, e.payload_len())?;
                    continue;
                }
            };
            if req.command == Command::Disc {
                return Ok(ConnEnd::Disconnect);
            }
            if let Err(e) = req.check(&limits) {
                let payload = if req.command == Command::Write {
                    req.length
                } else {
                    0
                };
                self.refuse(req.handle, req.command == Command::Read, e, payload)?;
                continue;
            }
            self.execute(&req)?;
        }
    }

    /// Answers `handle` (a read if `read`) with `err`, after reading past
    /// `payload` bytes of a refused write (or, if that is too long, answers
    /// and closes).
    fn refuse(
        &mut self,
        handle: u64,
        read: bool,
        err: Error,
        payload: u32,
    ) -> Result<(), ConnErrorKind> {
        let too_long = u64::from(payload) > self.cfg.discard_limit();
        if !too_long {
            self.discard(u64::from(payload), "refused write's payload")?;
        }
        self.send(handle, read, Err(err))?;
        if too_long {
            return Err(ConnErrorKind::PayloadTooLarge { length: payload });
        }
        Ok(())
    }

    /// Sends a reply without data (to a read if `read`): any success but a
    /// read's, or an error.
    fn send(&mut self, handle: u64, read: bool, result: Result<(), Error>) -> std::io::Result<()> {
        match result {
            Err(e) if self.structured && read => {
                self.stats.errors += 1;
                let msg = e.to_string();
                let mut payload = [0u8; 6];
                payload[..4].copy_from_slice(&e.code().to_be_bytes());
                // Display texts are short constants, far below the 4096 limit.
                payload[4..].copy_from_slice(&(msg.len() as u16).to_be_bytes());
                let h = ChunkHeader {
                    flags: ChunkHeader::DONE,
                    kind: ChunkHeader::ERROR,
                    handle,
                    length: (payload.len() + msg.len()) as u32,
                };
                self.w.write_all(&h.emit())?;
                self.w.write_all(&payload)?;
                self.w.write_all(msg.as_bytes())?;
            }
            _ => {
                if result.is_err() {
                    self.stats.errors += 1;
                }
                self.w.write_all(&SimpleReply::new(handle, result).emit())?;
            }
        }
        self.w.flush()
    }

    /// Sends a successful read's data, the first `len` bytes of `buf`.
    fn send_data(&mut self, handle: u64, offset: u64, len: usize) -> std::io::Result<()> {
        let Self {
            w, buf, structured, ..
        } = self;
        if *structured {
            // `len` is at most `max_request`, which `Config::validate` keeps
            // far enough below 4 GiB for the offset to fit too.
            let h = if len == 0 {
                ChunkHeader {
                    flags: ChunkHeader::DONE,
                    kind: ChunkHeader::NONE,
                    handle,
                    length: 0,
                }
            } else {
                ChunkHeader {
                    flags: ChunkHeader::DONE,
                    kind: ChunkHeader::OFFSET_DATA,
                    handle,
                    length: 8 + len as u32,
                }
            };
            w.write_all(&h.emit())?;
            if len != 0 {
                w.write_all(&offset.to_be_bytes())?;
            }
        } else {
            w.write_all(&SimpleReply::new(handle, Ok(())).emit())?;
        }
        w.write_all(&buf[..len])?;
        w.flush()
    }

    /// Runs a checked request and replies.
    fn execute(&mut self, req: &Request) -> Result<(), ConnErrorKind> {
        let (offset, len) = (req.offset, req.length as usize);
        let export = self.export;
        let result = match req.command {
            Command::Read => {
                if self.buf.len() < len {
                    self.buf.resize(len, 0);
                }
                let result = if len == 0 {
                    Ok(())
                } else {
                    export.read(offset, &mut self.buf[..len])
                };
                if result.is_ok() {
                    self.stats.bytes_read += len as u64;
                    self.send_data(req.handle, offset, len)?;
                    return Ok(());
                }
                result
            }
            Command::Write => {
                self.read_payload(len, "write payload")?;
                let result = if len == 0 {
                    Ok(())
                } else {
                    export.write(offset, &self.buf[..len], req.flags.fua)
                };
                if result.is_ok() {
                    self.stats.bytes_written += len as u64;
                }
                result
            }
            Command::Flush => export.flush(),
            Command::Trim if len == 0 => Ok(()),
            Command::Trim => export
                .trim(offset, u64::from(req.length))
                .and_then(|()| fua(export, req)),
            Command::WriteZeroes if len == 0 => Ok(()),
            Command::WriteZeroes => export
                .write_zeroes(offset, u64::from(req.length), !req.flags.no_hole)
                .and_then(|()| fua(export, req)),
            // Checked like a read; nothing to do (see the module docs).
            Command::Cache => Ok(()),
            // Handled by the caller; no reply is ever sent to a disconnect.
            Command::Disc => return Ok(()),
        };
        self.send(req.handle, req.command == Command::Read, result)?;
        Ok(())
    }
}

/// Flushes after a trim or write-zeroes with FUA set.
fn fua(export: &dyn crate::Export, req: &Request) -> Result<(), Error> {
    if req.flags.fua {
        export.flush()
    } else {
        Ok(())
    }
}
