//! Sequence files on disk: the binary form ([`streamer_common::sequence`]) and a
//! plain-text form for people and scripts.
//!
//! The text form is one extent per line, `lba count`, in 512-byte sectors, decimal,
//! separated by spaces or tabs. `#` starts a comment; blank lines are ignored:
//!
//! ```text
//! # boot order of rootfs.img
//! 0 8        # the boot sector and the superblock
//! 2048 16
//! ```

use std::io;
use std::path::{Path, PathBuf};

use streamer_common::sequence::{self as layout, SectorExtent, SequenceError, SequenceView};

/// Why a sequence could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SequenceFileError {
    /// The file could not be read or written.
    #[error("cannot {action} {path}")]
    Io {
        /// "read" or "write".
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The binary file is not a valid sequence file.
    #[error("{path} is not a valid sequence file")]
    Format {
        /// The file.
        path: PathBuf,
        /// The rule broken.
        source: SequenceError,
    },
    /// A line of the text form is not `lba count`.
    #[error("{path}:{line}: {reason} (expected `lba count`, two decimal numbers of 512-byte sectors): {text:?}")]
    Line {
        /// The file.
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
        /// The line.
        text: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Why a line of the text form was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}: {text:?}")]
pub struct TextError {
    /// The line number, from 1.
    pub line: usize,
    /// The line.
    pub text: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Parses the text form.
///
/// # Errors
/// The first bad line: not two numbers, a number that is not decimal or too large,
/// an empty extent, or one whose end overflows.
pub fn parse_text(text: &str) -> Result<Vec<SectorExtent>, TextError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let content = raw.split_once('#').map_or(raw, |(before, _)| before);
        let mut fields = content.split_whitespace();
        let Some(first) = fields.next() else { continue };
        let err = |reason| TextError {
            line: i + 1,
            text: raw.to_owned(),
            reason,
        };
        let second = fields
            .next()
            .ok_or_else(|| err("missing the sector count"))?;
        if fields.next().is_some() {
            return Err(err("more than two fields"));
        }
        let number = |s: &str| {
            if !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err("not a decimal number"));
            }
            s.parse::<u64>().map_err(|_| err("number too large"))
        };
        let (lba, count) = (number(first)?, number(second)?);
        if count == 0 {
            return Err(err("empty extent (count 0)"));
        }
        if lba.checked_add(count).is_none() {
            return Err(err("extent end overflows"));
        }
        out.push(SectorExtent { lba, count });
    }
    Ok(out)
}

/// Writes the text form, with a comment line saying what it is.
pub fn to_text(extents: &[SectorExtent]) -> String {
    let sectors: u64 = extents.iter().map(|e| e.count).fold(0, u64::saturating_add);
    let mut s = format!(
        "# streamer sequence: {} extents, {sectors} sectors of {} bytes; `lba count` per line\n",
        extents.len(),
        layout::SECTOR_SIZE
    );
    for e in extents {
        s.push_str(&format!("{} {}\n", e.lba, e.count));
    }
    s
}

/// Encodes the binary form.
///
/// # Errors
/// [`SequenceError::BadExtent`] for an empty or overflowing extent.
pub fn encode(extents: &[SectorExtent]) -> Result<Vec<u8>, SequenceError> {
    let mut out = vec![0u8; layout::encoded_len(extents.len())];
    layout::encode(extents, &mut out)?;
    Ok(out)
}

/// Decodes the binary form.
///
/// # Errors
/// As [`SequenceView::parse`].
pub fn decode(bytes: &[u8]) -> Result<Vec<SectorExtent>, SequenceError> {
    Ok(SequenceView::parse(bytes)?.extents().collect())
}

/// Reads a binary sequence file.
///
/// # Errors
/// [`SequenceFileError::Io`] or [`SequenceFileError::Format`].
pub fn read(path: &Path) -> Result<Vec<SectorExtent>, SequenceFileError> {
    let bytes = std::fs::read(path).map_err(|source| SequenceFileError::Io {
        action: "read",
        path: path.to_owned(),
        source,
    })?;
    decode(&bytes).map_err(|source| SequenceFileError::Format {
        path: path.to_owned(),
        source,
    })
}

/// Writes a binary sequence file (atomically: a temporary file, then a rename).
///
/// # Errors
/// [`SequenceFileError::Format`] for an invalid extent, [`SequenceFileError::Io`]
/// if the file cannot be written.
pub fn write(path: &Path, extents: &[SectorExtent]) -> Result<(), SequenceFileError> {
    let bytes = encode(extents).map_err(|source| SequenceFileError::Format {
        path: path.to_owned(),
        source,
    })?;
    write_atomic(path, &bytes)
}

/// Reads the text form from a file.
///
/// # Errors
/// [`SequenceFileError::Io`] or [`SequenceFileError::Line`].
pub fn read_text(path: &Path) -> Result<Vec<SectorExtent>, SequenceFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| SequenceFileError::Io {
        action: "read",
        path: path.to_owned(),
        source,
    })?;
    parse_text(&text).map_err(|e| SequenceFileError::Line {
        path: path.to_owned(),
        line: e.line,
        text: e.text,
        reason: e.reason,
    })
}

/// Writes the text form to a file (atomically).
///
/// # Errors
/// [`SequenceFileError::Io`] if the file cannot be written.
pub fn write_text(path: &Path, extents: &[SectorExtent]) -> Result<(), SequenceFileError> {
    write_atomic(path, to_text(extents).as_bytes())
}

/// Writes `bytes` to a temporary file next to `path`, syncs it and renames it over
/// `path`.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SequenceFileError> {
    use std::io::Write;
    let err = |source| SequenceFileError::Io {
        action: "write",
        path: path.to_owned(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".sequence.")
        .suffix(".partial")
        .tempfile_in(dir)
        .map_err(err)?;
    tmp.write_all(bytes).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip_with_comments() {
        let text = "# boot order\n\n0 8   # boot sector\n\t2048\t16\n  \n5 1\n";
        let ex = parse_text(text).unwrap();
        assert_eq!(
            ex,
            vec![
                SectorExtent { lba: 0, count: 8 },
                SectorExtent {
                    lba: 2048,
                    count: 16
                },
                SectorExtent { lba: 5, count: 1 }
            ]
        );
        assert_eq!(parse_text(&to_text(&ex)).unwrap(), ex);
        assert_eq!(decode(&encode(&ex).unwrap()).unwrap(), ex);
    }

    #[test]
    fn bad_lines_name_the_line() {
        for (text, line, reason) in [
            ("0 8\n12\n", 2, "missing the sector count"),
            ("0 8 9\n", 1, "more than two fields"),
            ("# x\n\n0x10 8\n", 3, "not a decimal number"),
            ("-1 8\n", 1, "not a decimal number"),
            ("1 99999999999999999999\n", 1, "number too large"),
            ("4 0\n", 1, "empty extent (count 0)"),
            ("18446744073709551615 1\n", 1, "extent end overflows"),
        ] {
            let e = parse_text(text).unwrap_err();
            assert_eq!((e.line, e.reason), (line, reason), "{text:?}");
        }
    }
}
