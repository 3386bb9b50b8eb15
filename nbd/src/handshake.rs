//! The fixed-newstyle handshake, server side (proto.md, "Fixed newstyle
//! negotiation", "Option types", and `NBD_OPT_INFO`/`NBD_OPT_GO`).
//!
//! The server greets, reads the client's flags (unknown flags close the
//! connection, as the protocol requires), then answers options until one
//! starts transmission:
//!
//! | option | answer |
//! | --- | --- |
//! | `EXPORT_NAME` | size, flags, and 124 zeros unless the client set `NO_ZEROES`; transmission. An unknown name closes (this option has no error reply). |
//! | `INFO`, `GO` | `NBD_INFO_EXPORT` and `NBD_INFO_BLOCK_SIZE` always, `NBD_INFO_NAME`/`DESCRIPTION` if asked, `ACK` (`GO`: transmission); `ERR_UNKNOWN` for another name, `ERR_INVALID` for malformed data |
//! | `LIST` | one `SERVER` entry, `ACK`; `ERR_INVALID` if it has data |
//! | `STRUCTURED_REPLY` | `ACK`: reads are then answered with structured chunks (see below); `ERR_INVALID` if it has data |
//! | `ABORT` | `ACK`, then close |
//! | anything else (`STARTTLS`, `EXTENDED_HEADERS`, meta contexts, …) | `ERR_UNSUP` (no TLS, no block status) |
//!
//! Structured replies are accepted for one reason: QEMU's NBD client cannot
//! read the last bytes of an export whose size is not a multiple of 512 over
//! simple replies. Its block layer rounds the size up to a whole sector, and
//! for a read past the true end it sends a shortened request and zero-fills the
//! rest itself, but then waits for the *unshortened* length of data when the
//! reply is simple, and hangs. A structured reply carries its own length, so
//! the same read works. Clients that do not ask (the Linux kernel) get simple
//! replies to everything.
//!
//! Option data longer than [`MAX_OPTION_LEN`] is answered with `ERR_TOO_BIG`
//! and the connection is closed: nothing this server understands is that long
//! (names are at most 4096 bytes), and reading past up to 4 GiB of junk only
//! serves a client that is broken or hostile (the protocol allows a hard
//! disconnect for denial of service).

use crate::conn::{ConnErrorKind, Flow, Session};
use crate::wire::{
    handshake_flags, info, opt, rep, ClientFlags, ExportEntry, Greeting, Info, InfoRequest,
    OptionHeader, OptionHeaderError, OptionReplyHeader,
};
use crate::{Config, ConnEnd};
use std::io::{Read, Write};

/// The longest option data accepted, in bytes.
pub const MAX_OPTION_LEN: u32 = 64 << 10;

/// How much of a client-supplied name an error message quotes.
const QUOTE_LEN: usize = 256;

impl<S: Read + Write> Session<'_, S> {
    /// Runs the handshake until transmission starts or the connection ends.
    pub(crate) fn handshake(&mut self) -> Result<Flow, ConnErrorKind> {
        let greeting = Greeting {
            flags: handshake_flags::FIXED_NEWSTYLE | handshake_flags::NO_ZEROES,
        };
        self.w.write_all(&greeting.emit())?;
        self.w.flush()?;
        let mut word = [0u8; 4];
        if !self.read_message(&mut word, "client flags word")? {
            return Ok(Flow::End(ConnEnd::Eof));
        }
        // A client without FIXED_NEWSTYLE gets the same answers: the protocol
        // lets a server honour fixed newstyle anyway.
        let client =
            ClientFlags::parse(u32::from_be_bytes(word)).map_err(ConnErrorKind::ClientFlags)?;
        loop {
            if self.stopping() {
                return Ok(Flow::End(ConnEnd::Stopped));
            }
            let mut h = [0u8; OptionHeader::LEN];
            if !self.read_message(&mut h, "option header")? {
                return Ok(Flow::End(ConnEnd::Eof));
            }
            let h = OptionHeader::parse(&h).map_err(|OptionHeaderError::BadMagic { magic }| {
                ConnErrorKind::OptionMagic(magic)
            })?;
            if h.length > MAX_OPTION_LEN {
                if h.option != opt::EXPORT_NAME {
                    let msg = format!("option data is limited to {MAX_OPTION_LEN} bytes");
                    self.reply(h.option, rep::ERR_TOO_BIG, msg.as_bytes())?;
                    self.w.flush()?;
                }
                return Err(ConnErrorKind::OptionTooLong {
                    option: h.option,
                    length: h.length,
                });
            }
            let len = h.length as usize;
            self.read_payload(len, "option's data")?;
            let flow = match h.option {
                opt::EXPORT_NAME => self.export_name(len, client)?,
                opt::ABORT => {
                    // The client may close without waiting for this (proto.md
                    // asks servers to cope), so a failed send is no error.
                    let _ = self
                        .reply(h.option, rep::ACK, &[])
                        .and_then(|()| self.w.flush());
                    Some(Flow::End(ConnEnd::Abort))
                }
                opt::LIST if len != 0 => {
                    self.reply(h.option, rep::ERR_INVALID, b"NBD_OPT_LIST takes no data")?;
                    None
                }
                opt::LIST => {
                    let entry = ExportEntry {
                        name: self.cfg.name.as_bytes(),
                        description: self.cfg.description.as_bytes(),
                    };
                    let mut data = vec![0u8; entry.buffer_len()];
                    entry.emit(&mut data);
                    self.reply(h.option, rep::SERVER, &data)?;
                    self.reply(h.option, rep::ACK, &[])?;
                    None
                }
                opt::STRUCTURED_REPLY if len != 0 => {
                    let msg = b"NBD_OPT_STRUCTURED_REPLY takes no data";
                    self.reply(h.option, rep::ERR_INVALID, msg)?;
                    None
                }
                opt::STRUCTURED_REPLY => {
                    self.structured = true;
                    self.reply(h.option, rep::ACK, &[])?;
                    None
                }
                opt::INFO | opt::GO => {
                    let accepted = self.info(h.option, len)?;
                    (accepted && h.option == opt::GO).then_some(Flow::Transmit)
                }
                other => {
                    let msg = format!("option {other} is not supported by this server");
                    self.reply(other, rep::ERR_UNSUP, msg.as_bytes())?;
                    None
                }
            };
            self.w.flush()?;
            if let Some(flow) = flow {
                return Ok(flow);
            }
        }
    }

    fn is_ours(cfg: &Config, name: &[u8]) -> bool {
        name.is_empty() || name == cfg.name.as_bytes()
    }

    fn quote(name: &[u8]) -> String {
        String::from_utf8_lossy(&name[..name.len().min(QUOTE_LEN)]).into_owned()
    }

    fn reply(&mut self, option: u32, reply: u32, data: &[u8]) -> std::io::Result<()> {
        // Every reply this server sends is far below 4 GiB.
        let h = OptionReplyHeader {
            option,
            reply,
            length: data.len() as u32,
        };
        self.w.write_all(&h.emit())?;
        self.w.write_all(data)
    }

    fn send_info(&mut self, option: u32, item: Info<'_>) -> std::io::Result<()> {
        let mut data = vec![0u8; item.buffer_len()];
        item.emit(&mut data);
        self.reply(option, rep::INFO, &data)
    }

    /// `NBD_OPT_EXPORT_NAME`: the name is the whole data.
    fn export_name(
        &mut self,
        len: usize,
        client: ClientFlags,
    ) -> Result<Option<Flow>, ConnErrorKind> {
        let name = &self.buf[..len];
        if !Self::is_ours(self.cfg, name) {
            return Err(ConnErrorKind::UnknownExport(Self::quote(name)));
        }
        let mut b = [0u8; 8 + 2 + 124];
        b[..8].copy_from_slice(&self.export.size().to_be_bytes());
        b[8..10]
            .copy_from_slice(&Config::transmission_flags(self.export.read_only()).to_be_bytes());
        let n = if client.no_zeroes { 10 } else { b.len() };
        self.w.write_all(&b[..n])?;
        Ok(Some(Flow::Transmit))
    }

    /// `NBD_OPT_INFO` and `NBD_OPT_GO`: whether the export was accepted.
    fn info(&mut self, option: u32, len: usize) -> Result<bool, ConnErrorKind> {
        let parsed = InfoRequest::parse(&self.buf[..len]).map(|r| {
            (
                Self::is_ours(self.cfg, r.name),
                Self::quote(r.name),
                r.wants(info::NAME),
                r.wants(info::DESCRIPTION),
            )
        });
        let (want_name, want_description) = match parsed {
            Err(e) => {
                let msg = format!("malformed NBD_OPT_INFO/GO data: {e:?}");
                self.reply(option, rep::ERR_INVALID, msg.as_bytes())?;
                return Ok(false);
            }
            Ok((false, name, ..)) => {
                let msg = format!(
                    "no export named {name:?}; this server has {:?} (the empty name also works)",
                    self.cfg.name
                );
                self.reply(option, rep::ERR_UNKNOWN, msg.as_bytes())?;
                return Ok(false);
            }
            Ok((true, _, name, description)) => (name, description),
        };
        let (cfg, export) = (self.cfg, self.export);
        self.send_info(
            option,
            Info::Export {
                size: export.size(),
                flags: Config::transmission_flags(export.read_only()),
            },
        )?;
        // Sent unasked too (the protocol allows it): the values are the
        // defaults a client assumes anyway, apart from the real maximum.
        self.send_info(
            option,
            Info::BlockSize {
                min: 1,
                preferred: cfg.block_size,
                max: cfg.max_request,
            },
        )?;
        if want_name {
            self.send_info(option, Info::Name(cfg.name.as_bytes()))?;
        }
        if want_description && !cfg.description.is_empty() {
            self.send_info(option, Info::Description(cfg.description.as_bytes()))?;
        }
        self.reply(option, rep::ACK, &[])?;
        Ok(true)
    }
}
