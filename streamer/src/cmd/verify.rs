//! `streamer verify`: every structural rule and every block hash, and optionally a
//! comparison with the image.

use std::path::PathBuf;

use streamer::stream_file::StreamFile;

use super::Bar;

/// `streamer verify FILE [--image IMG]`
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The stream file.
    file: PathBuf,
    /// Also compare with the image it was packed from (size, every block, hash).
    #[arg(long, value_name = "IMG")]
    image: Option<PathBuf>,
}

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let file = StreamFile::open(&args.file)?;
    file.verify(&Bar::new("verifying"))?;
    let h = file.header();
    let mut msg = format!(
        "{}: ok: {} blocks of {} bytes match their hashes",
        args.file.display(),
        h.stream_blocks,
        h.block_size
    );
    if let Some(image) = &args.image {
        file.verify_image(image, &Bar::new("comparing"))?;
        msg.push_str(&format!("; matches image {}", image.display()));
    }
    println!("{msg}");
    Ok(())
}
