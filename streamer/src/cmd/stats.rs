//! `streamer stats`: what the running appliance's sessions are doing.

use super::start_now::ask;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Print the raw JSON snapshot.
    #[arg(long)]
    json: bool,
    /// Refresh every second until interrupted.
    #[arg(long)]
    watch: bool,
    /// The appliance's local control socket.
    #[arg(long, default_value = "/run/streamer.sock")]
    control: PathBuf,
}

fn render(json: &str) -> String {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else {
        return json.to_string();
    };
    let mut out = String::new();
    let sessions = v["sessions"].as_array().cloned().unwrap_or_default();
    if sessions.is_empty() {
        out.push_str("no sessions\n");
    }
    for s in sessions {
        let total = s["total_packets"].as_f64().unwrap_or(0.0).max(1.0);
        out.push_str(&format!(
            "session {} {:?} {}: {} member(s), {} active, sent {:.1}%, rate {:.1} Mbit/s, repair backlog {}, done {}, evicted {}\n",
            s["session"],
            s["image"].as_str().unwrap_or(""),
            s["phase"].as_str().unwrap_or(""),
            s["members"],
            s["active"],
            100.0 * s["next_seq"].as_f64().unwrap_or(0.0) / total,
            s["rate"].as_f64().unwrap_or(0.0) * 8.0 / 1e6,
            s["repair_backlog"],
            s["report"]["done"],
            s["report"]["evicted"].as_array().map_or(0, Vec::len),
        ));
    }
    out.push_str(&format!(
        "input: {} accepted, {} malformed, {} unknown session\n",
        v["input"]["accepted"],
        v["input"]["malformed"]
            .as_array()
            .map_or(0, |a| a.iter().filter_map(|x| x.as_u64()).sum::<u64>()),
        v["input"]["unknown_session"]
    ));
    out
}

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    loop {
        let answer = ask(&args.control, "stats")?;
        if args.json {
            println!("{answer}");
        } else {
            print!("{}", render(&answer));
        }
        if !args.watch {
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}
