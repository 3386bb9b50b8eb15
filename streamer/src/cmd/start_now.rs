//! `streamer start-now`: end the invitation period of waiting sessions at once.

use anyhow::Context;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Only sessions of this image (default: every waiting session).
    image: Option<String>,
    /// The appliance's local control socket.
    #[arg(long, default_value = "/run/streamer.sock")]
    control: PathBuf,
}

/// Sends one command to a running `streamer serve` and returns its answer.
pub(crate) fn ask(control: &Path, command: &str) -> anyhow::Result<String> {
    let dir = std::env::temp_dir().join(format!("streamer-ctl-{}", std::process::id()));
    let _ = std::fs::remove_file(&dir);
    let sock = UnixDatagram::bind(&dir).context("cannot create a reply socket")?;
    let _guard = scopeguard(dir.clone());
    sock.set_read_timeout(Some(Duration::from_secs(2)))?;
    sock.send_to(command.as_bytes(), control).with_context(|| {
        format!(
            "no streamer at {} (is `streamer serve` running? see --control)",
            control.display()
        )
    })?;
    let mut buf = vec![0u8; 1 << 20];
    let n = sock
        .recv(&mut buf)
        .context("the appliance did not answer within 2 s")?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

struct Cleanup(PathBuf);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
fn scopeguard(p: PathBuf) -> Cleanup {
    Cleanup(p)
}

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let cmd = match &args.image {
        Some(i) => format!("start {i}"),
        None => "start".into(),
    };
    println!("{}", ask(&args.control, &cmd)?);
    Ok(())
}
