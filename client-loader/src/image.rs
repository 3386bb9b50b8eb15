//! Writes a verified stream out as the image it holds: each stream block to its
//! image offset, the last block cut to the image's true size. The file is written
//! under a temporary name in the output's directory, synced, and renamed, so the
//! final name only ever holds a complete, verified image.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use streamer_common::stream_file::StreamHeader;

/// Why the image could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// An I/O step failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Which file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// The temporary name `output` is written under.
pub fn temp_path(output: &Path) -> PathBuf {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    output.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

/// Writes the image held by `stream` (the whole stream file) in `order` (image
/// block of each stream position) to `output`.
pub fn write_image(
    stream: &[u8],
    header: &StreamHeader,
    order: &[u64],
    output: &Path,
) -> Result<(), WriteError> {
    let tmp = temp_path(output);
    let io = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| WriteError::Io { what, path, source }
    };
    let result = (|| {
        let f: File = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io("cannot create", &tmp))?;
        f.set_len(header.image_size)
            .map_err(io("cannot size", &tmp))?;
        let bs = u64::from(header.block_size);
        for (pos, &block) in order.iter().enumerate() {
            let src = header.data_offset + pos as u64 * bs;
            let at = block * bs;
            let len = bs.min(header.image_size - at) as usize;
            f.write_all_at(&stream[src as usize..src as usize + len], at)
                .map_err(io("cannot write", &tmp))?;
        }
        (&f).flush().map_err(io("cannot flush", &tmp))?;
        f.sync_all().map_err(io("cannot sync", &tmp))?;
        std::fs::rename(&tmp, output).map_err(io("cannot rename into place", output))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
