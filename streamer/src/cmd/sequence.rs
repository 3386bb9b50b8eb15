//! `streamer sequence import|export`: sequence files to and from text.

use std::path::PathBuf;

use streamer::stream_file::sequence;

/// `streamer sequence ...`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Convert a text list of `lba count` lines (512-byte sectors; `#` comments)
    /// into a binary sequence file.
    #[command(after_help = super::EXIT_STATUS_HELP)]
    Import {
        /// The text file.
        #[arg(value_name = "TXT")]
        text: PathBuf,
        /// The sequence file to write.
        #[arg(short, long, value_name = "SEQ")]
        output: PathBuf,
    },
    /// Print a binary sequence file as `lba count` lines.
    #[command(after_help = super::EXIT_STATUS_HELP)]
    Export {
        /// The sequence file.
        #[arg(value_name = "SEQ")]
        sequence: PathBuf,
        /// Write the text here instead of standard output.
        #[arg(short, long, value_name = "TXT")]
        output: Option<PathBuf>,
    },
}

pub(crate) fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Import { text, output } => {
            let extents = sequence::read_text(&text)?;
            sequence::write(&output, &extents)?;
            let sectors: u64 = extents.iter().map(|e| e.count).fold(0, u64::saturating_add);
            eprintln!(
                "wrote {}: {} extents, {sectors} sectors",
                output.display(),
                extents.len()
            );
        }
        Command::Export {
            sequence: path,
            output,
        } => {
            let extents = sequence::read(&path)?;
            match output {
                Some(out) => sequence::write_text(&out, &extents)?,
                None => {
                    use std::io::Write;
                    let mut stdout = std::io::stdout().lock();
                    stdout.write_all(sequence::to_text(&extents).as_bytes())?;
                    stdout.flush()?;
                }
            }
        }
    }
    Ok(())
}
