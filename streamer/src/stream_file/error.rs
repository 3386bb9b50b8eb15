//! The errors of packing, opening and verifying stream files. Each variant names
//! what went wrong, where, and what to do next.
//!
//! `Display` gives the context (which file, which block); the underlying cause (an
//! OS error, the layout rule broken) is the error's `source()`. Print the whole
//! chain (`{:#}` with `anyhow`) to show both.

use std::io;
use std::path::PathBuf;

use streamer_common::stream_file::LayoutError;

/// Why a sequence cannot be turned into stream extents.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The image is empty: there is nothing to stream.
    #[error("the image is empty; there is nothing to pack")]
    EmptyImage,
    /// The block size is not a power of two in 512 ..= 1 MiB.
    #[error("block size {0} is not a power of two between 512 and 1048576")]
    BadBlockSize(u32),
    /// A sequence extent reaches past the image's last sector.
    #[error(
        "sequence extent {index} (sectors {lba}..{end}) reaches past the end of the image \
         ({image_sectors} sectors of 512 bytes); was the sequence recorded on another image?"
    )]
    SequencePastEnd {
        /// The extent's index in the sequence.
        index: u64,
        /// Its first sector.
        lba: u64,
        /// One past its last sector (saturating).
        end: u64,
        /// Sectors in the image (the last may be partial).
        image_sectors: u64,
    },
    /// A sequence extent has no sectors.
    #[error("sequence extent {index} is empty")]
    EmptyExtent {
        /// The extent's index in the sequence.
        index: u64,
    },
    /// `--sequence-only` without a sequence.
    #[error("sequence-only packing needs a sequence (--sequence SEQ)")]
    SequenceOnlyWithoutSequence,
    /// `--sequence-only` with a sequence that names no sectors.
    #[error("the sequence is empty, so a sequence-only stream file would hold no data")]
    EmptySequence,
    /// The sizes do not fit the stream-file layout (an image too large to describe).
    #[error("the image does not fit the stream-file layout")]
    Layout(#[source] LayoutError),
}

/// Why [`pack`](super::pack()) failed. No file is left under the output name.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// The image could not be opened, measured, mapped or read.
    #[error("cannot read image {path}")]
    ReadImage {
        /// The image.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The image changed size while it was being packed.
    #[error("image {path} changed size while packing (was {expected} bytes); pack it when nothing writes to it")]
    ImageChanged {
        /// The image.
        path: PathBuf,
        /// The size it had when packing started.
        expected: u64,
    },
    /// The image and sequence do not make a stream (see [`PlanError`]).
    #[error("cannot pack image {path}")]
    Plan {
        /// The image.
        path: PathBuf,
        /// Why.
        source: PlanError,
    },
    /// A temporary file could not be created next to the output.
    #[error("cannot create a temporary file in {dir} (is the directory there and writable?)")]
    CreateTemp {
        /// The output's directory.
        dir: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// Writing, syncing or renaming the output failed (a full disk, say).
    #[error("cannot write {path}")]
    Write {
        /// The output file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
}

/// Why a stream file was refused: the first problem found, in the order the file is
/// checked (header, header hash, length, manifest hash, extents, padding, blocks,
/// then the image).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The stream file (or the image) could not be opened or read.
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// A structural rule is broken: truncated, bad magic, overlapping extents, an
    /// extent past the image end, non-zero padding, ... (see [`LayoutError`]).
    #[error("{path} is not a valid stream file")]
    Layout {
        /// The stream file.
        path: PathBuf,
        /// The rule broken.
        source: LayoutError,
    },
    /// The header does not match its hash.
    #[error("{path}: header hash mismatch: the header is corrupted")]
    HeaderHash {
        /// The stream file.
        path: PathBuf,
    },
    /// The manifest does not match the header's `manifest_hash`.
    #[error("{path}: manifest hash mismatch: the extent list or block hashes are corrupted")]
    ManifestHash {
        /// The stream file.
        path: PathBuf,
    },
    /// A block's data does not match its hash in the manifest.
    #[error(
        "{path}: hash mismatch in image block {block} (stream position {stream_index}, \
         file offset {offset}): the data is corrupted"
    )]
    BlockHash {
        /// The stream file.
        path: PathBuf,
        /// The image block.
        block: u64,
        /// Its position in the stream.
        stream_index: u64,
        /// Where its data starts in the file.
        offset: u64,
    },
    /// The image is not the size the stream file was packed from.
    #[error(
        "image {image} is {actual} bytes, but the stream file was packed from {expected} bytes"
    )]
    ImageSize {
        /// The image.
        image: PathBuf,
        /// `image_size` in the header.
        expected: u64,
        /// The image's size.
        actual: u64,
    },
    /// The image's BLAKE3 differs from the header's `image_hash`.
    #[error("image {image} does not match: its BLAKE3 differs from the stream file's image hash")]
    ImageHash {
        /// The image.
        image: PathBuf,
    },
    /// A block of the image differs from the stream file's copy (or, for a block
    /// not in a sequence-only stream, from its hash).
    #[error("{path}: image block {block} differs from the image {image}")]
    ImageBlock {
        /// The stream file.
        path: PathBuf,
        /// The image.
        image: PathBuf,
        /// The image block.
        block: u64,
    },
}

impl VerifyError {
    /// Whether the failure is an I/O error (the file could not be read) rather than
    /// a verdict on the file's contents.
    pub fn is_io(&self) -> bool {
        matches!(self, Self::Io { .. })
    }
}
