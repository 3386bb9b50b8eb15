//! `bench readlat`: the latency a booting machine sees for a block the stream
//! has not brought yet (patent step 534).
//!
//! The real `streamer serve` streams an image at a modest rate to one
//! `client-loader --export nbd:…`; this benchmark connects to the export as an
//! NBD client and reads blocks from the image's second half, each once, in a
//! seeded random order, while the stream is still on its first half: every read
//! is an on-demand READ to the appliance and back, verified against the
//! manifest, then answered over NBD. Each read's data is compared with the
//! image. Two paths: the client on the appliance's own host (unicast over the
//! loopback path) and the client across the namespace bridge (veth, bridge,
//! veth). Percentiles are exact, from every sample.

use crate::netns::{Testbed, APP_ADDR};
use crate::proc::Proc;
use anyhow::{bail, Context as _};
use rand::seq::SliceRandom;
use rand::{Rng as _, SeedableRng};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where `streamer` and `client-loader` are.
    pub bin_dir: PathBuf,
    /// Image size in bytes.
    pub size: u64,
    /// Reads per path.
    pub reads: usize,
    /// Bytes per read.
    pub read_size: u32,
    /// Reads per path done first and kept out of the percentiles.
    pub warmup: usize,
    /// The stream's rate (`streamer serve --rate`).
    pub rate: String,
    /// Seed of the image and of the read order.
    pub seed: u64,
    /// `streamer pack --block-size`.
    pub block_size: u32,
}

impl Options {
    /// Defaults: 256 MiB at 200 Mbit/s (about 11 s of stream), 2000 reads of 4 KiB.
    pub fn new(bin_dir: PathBuf) -> Options {
        Options {
            bin_dir,
            size: 256 << 20,
            reads: 2000,
            read_size: 4096,
            warmup: 200,
            rate: "200M".into(),
            seed: 1,
            block_size: streamer::stream_file::DEFAULT_BLOCK_SIZE,
        }
    }
}

/// One path's figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    /// "loopback" or "bridge".
    pub path: &'static str,
    /// Reads timed.
    pub reads: usize,
    /// Median, seconds.
    pub p50: f64,
    /// 99th percentile, seconds.
    pub p99: f64,
    /// 99.9th percentile, seconds.
    pub p999: f64,
    /// Slowest, seconds.
    pub max: f64,
    /// Whether the stream was still on its first pass when the last read ended
    /// (so every read raced a running stream).
    pub stream_running: bool,
    /// The client's closing line about its export (connections, requests, errors).
    pub client_log_tail: String,
    /// The appliance's own histogram (READ received → last reply sent): p50,
    /// p99, p99.9 in seconds, from `streamer stats --json` (warm-up included).
    pub appliance: [Option<f64>; 3],
    /// Reads before the timed ones (also of blocks not yet streamed).
    pub warmup: usize,
    /// The slowest of them, seconds.
    pub warmup_max: f64,
}

/// The `q` quantile of sorted samples.
fn quantile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize].as_secs_f64()
}

/// A minimal NBD client (fixed newstyle, NBD_OPT_EXPORT_NAME, simple replies),
/// over streamer-nbd's own wire definitions: enough to time reads.
struct Nbd {
    s: UnixStream,
    size: u64,
    cookie: u64,
}

impl Nbd {
    fn connect(path: &Path, name: &str) -> anyhow::Result<Nbd> {
        use streamer_nbd::wire::{handshake_flags, opt, ClientFlags, Greeting, OptionHeader};
        let mut s = UnixStream::connect(path)
            .with_context(|| format!("connecting to the export at {}", path.display()))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut g = [0u8; Greeting::LEN];
        s.read_exact(&mut g)?;
        let greeting = Greeting::parse(&g)
            .map_err(|e| anyhow::anyhow!("not an NBD newstyle server: {e:?}"))?;
        let flags = ClientFlags {
            fixed_newstyle: greeting.flags & handshake_flags::FIXED_NEWSTYLE != 0,
            no_zeroes: greeting.flags & handshake_flags::NO_ZEROES != 0,
        };
        s.write_all(&flags.bits().to_be_bytes())?;
        let header = OptionHeader {
            option: opt::EXPORT_NAME,
            length: u32::try_from(name.len())?,
        };
        s.write_all(&header.emit())?;
        s.write_all(name.as_bytes())?;
        // Size, transmission flags, and 124 zero bytes unless NO_ZEROES.
        let mut r = [0u8; 10];
        s.read_exact(&mut r)?;
        if !flags.no_zeroes {
            let mut zeroes = [0u8; 124];
            s.read_exact(&mut zeroes)?;
        }
        Ok(Nbd {
            s,
            size: u64::from_be_bytes(r[0..8].try_into()?),
            cookie: 0,
        })
    }

    fn request(
        &mut self,
        command: streamer_nbd::wire::Command,
        offset: u64,
        length: u32,
    ) -> anyhow::Result<()> {
        use streamer_nbd::wire::{CmdFlags, Request};
        self.cookie += 1;
        let q = Request {
            command,
            flags: CmdFlags::default(),
            handle: self.cookie,
            offset,
            length,
        };
        self.s.write_all(&q.emit())?;
        Ok(())
    }

    fn read(&mut self, offset: u64, buf: &mut [u8]) -> anyhow::Result<()> {
        use streamer_nbd::wire::{Command, SimpleReply};
        self.request(Command::Read, offset, u32::try_from(buf.len())?)?;
        let mut r = [0u8; SimpleReply::LEN];
        self.s.read_exact(&mut r)?;
        let reply = SimpleReply::parse(&r)
            .map_err(|magic| anyhow::anyhow!("a malformed NBD reply (magic {magic:#x})"))?;
        if reply.handle != self.cookie {
            bail!("an NBD reply for another request");
        }
        if reply.error != 0 {
            bail!(
                "the export answered a read at {offset} with error {}",
                reply.error
            );
        }
        self.s.read_exact(buf)?;
        Ok(())
    }

    fn disconnect(mut self) {
        let _ = self.request(streamer_nbd::wire::Command::Disc, 0, 0);
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Runs both paths.
pub fn run(o: &Options, log: &mut dyn FnMut(&str)) -> anyhow::Result<Vec<Row>> {
    if let Some(why) = crate::netns::unavailable() {
        bail!("cannot build the testbed: {why}");
    }
    let (streamer, client) = crate::netns::binaries(&o.bin_dir)?;
    let dir = tempfile::Builder::new()
        .prefix("bench-readlat-")
        .tempdir()?;
    let (image, stream) =
        crate::netns::packed_image(&streamer, dir.path(), o.size, o.seed, Some(o.block_size))?;
    let tb = Testbed::new("strm-readlat", 1)?;
    let mut rows = Vec::new();
    for (k, path) in ["loopback", "bridge"].into_iter().enumerate() {
        log(&format!(
            "{path}: streaming {} MiB at {}",
            o.size >> 20,
            o.rate
        ));
        let client_ns = if path == "loopback" {
            tb.app()
        } else {
            tb.client(1)
        };
        let mut args = strings(&["serve", "--image"]);
        args.push(format!("img={}", stream.display()));
        args.extend(strings(&[
            "--bind",
            &APP_ADDR.to_string(),
            "--group",
            &format!("239.77.50.{}", k + 1),
            "--min-clients",
            "1",
            "--max-wait",
            "30",
            "--rate",
            &o.rate,
        ]));
        let control = dir.path().join(format!("{path}.ctl"));
        args.push("--control".into());
        args.push(control.display().to_string());
        let mut app = Proc::spawn("streamer serve", Some(&tb.app()), &streamer, &args)?;
        if !app.wait_for_output("listening on", Duration::from_secs(10))? {
            bail!("streamer serve did not start:\n{}", app.log());
        }
        let sock = dir.path().join(format!("{path}.sock"));
        let out = dir.path().join(format!("{path}.img"));
        let cargs = vec![
            "--server".to_string(),
            APP_ADDR.to_string(),
            "-o".into(),
            out.display().to_string(),
            "--export".into(),
            format!("nbd:{}", sock.display()),
        ];
        let mut c = Proc::spawn("client-loader", Some(&client_ns), &client, &cargs)?;
        if !c.wait_for_output("exporting the image over NBD", Duration::from_secs(20))? {
            bail!("the client did not export:\n{}", c.log());
        }
        let mut nbd = Nbd::connect(&sock, "streamer")?;
        if nbd.size != o.size {
            bail!("the export is {} bytes, the image {}", nbd.size, o.size);
        }
        // One read per block (or per read, where reads are larger), at a
        // read-aligned place within it: a second read of a fetched block would
        // be a cache hit, not an on-demand read.
        let rs = u64::from(o.read_size);
        let step = rs.max(u64::from(o.block_size));
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(o.seed ^ k as u64);
        let half = o.size.div_ceil(2 * step);
        let mut offsets: Vec<u64> = (half..o.size / step)
            .map(|i| i * step + rng.gen_range(0..step / rs) * rs)
            .collect();
        offsets.shuffle(&mut rng);
        if offsets.len() < o.warmup + o.reads {
            bail!(
                "{} reads and {} warm-up reads need that many blocks in the image's second half, which has {}: a larger --size",
                o.reads,
                o.warmup,
                offsets.len()
            );
        }
        offsets.truncate(o.warmup + o.reads);
        let mut buf = vec![0u8; o.read_size as usize];
        let mut lat = Vec::with_capacity(offsets.len());
        for &off in &offsets {
            crate::proc::check_interrupted()?;
            let t = Instant::now();
            nbd.read(off, &mut buf)?;
            lat.push(t.elapsed());
            if buf[..] != image[off as usize..off as usize + buf.len()] {
                bail!("{path}: the read at {off} differs from the image");
            }
        }
        // The first reads of a run are timed too, but kept apart: on this VM
        // the first ~0.1 s of the first run is slow whichever path runs first.
        let warm: Vec<Duration> = lat.drain(..o.warmup.min(lat.len())).collect();
        let warmup_max = warm.iter().max().map_or(0.0, Duration::as_secs_f64);
        nbd.disconnect();
        let running = !c.log().contains("every block received");
        let stats = crate::proc::run(
            &[
                "ip",
                "netns",
                "exec",
                &tb.app(),
                &streamer.display().to_string(),
                "stats",
                "--json",
                "--control",
                &control.display().to_string(),
            ],
            Duration::from_secs(10),
        )
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(t.trim()).ok());
        let read = stats.as_ref().map(|v| &v["latency"]["read"]);
        let appliance = ["p50", "p99", "p999"].map(|q| read.and_then(|r| r[q].as_f64()));
        c.stop(libc::SIGTERM, Duration::from_secs(10));
        app.stop(libc::SIGTERM, Duration::from_secs(10));
        lat.sort_unstable();
        let tail = c
            .log()
            .lines()
            .rev()
            .find(|l| l.contains("export stopped"))
            .unwrap_or("")
            .to_string();
        rows.push(Row {
            path,
            reads: lat.len(),
            p50: quantile(&lat, 0.5),
            p99: quantile(&lat, 0.99),
            p999: quantile(&lat, 0.999),
            max: quantile(&lat, 1.0),
            stream_running: running,
            client_log_tail: tail,
            appliance,
            warmup: warm.len(),
            warmup_max,
        });
    }
    Ok(rows)
}

/// The table.
pub fn table(o: &Options, rows: &[Row]) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "on-demand reads: {} B NBD reads of {} B blocks not yet streamed, each block once, while {} MiB stream at {}",
        o.read_size,
        o.block_size,
        o.size >> 20,
        o.rate
    );
    let _ = writeln!(
        s,
        "{:<9} {:>6} {:>9} {:>9} {:>9} {:>9}  {:>26}  stream running throughout",
        "path", "reads", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "appliance p50/p99/p99.9 ms"
    );
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.3}", v * 1e3));
    for r in rows {
        let appliance = format!(
            "{}/{}/{}",
            ms(r.appliance[0]),
            ms(r.appliance[1]),
            ms(r.appliance[2])
        );
        let _ = writeln!(
            s,
            "{:<9} {:>6} {:>9.3} {:>9.3} {:>9.3} {:>9.3}  {:>26}  {}",
            r.path,
            r.reads,
            r.p50 * 1e3,
            r.p99 * 1e3,
            r.p999 * 1e3,
            r.max * 1e3,
            appliance,
            if r.stream_running {
                "yes"
            } else {
                "NO (the stream finished first)"
            }
        );
    }
    let _ = writeln!(
        s,
        "client columns: the NBD read as the booting OS sees it, after {} warm-up reads per path (slowest: {}); appliance: its histogram, READ in to last reply out",
        o.warmup,
        rows.iter()
            .map(|r| format!("{} {:.3} ms", r.path, r.warmup_max * 1e3))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(l) = rows.iter().find(|r| r.path == "loopback") {
        let _ = writeln!(
            s,
            "target p99 <= 1 ms on loopback: {} ({:.3} ms)",
            if l.p99 <= 1e-3 { "PASS" } else { "FAIL" },
            l.p99 * 1e3
        );
    }
    s
}

/// Saves the rows as JSON under `dir`; returns the path.
pub fn save(o: &Options, rows: &[Row], dir: &Path, command: &str) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let stamp = crate::throughput::utc_stamp(std::time::SystemTime::now());
    let path = dir.join(format!("readlat-{stamp}.json"));
    let doc = serde_json::json!({
        "command": command,
        "image_bytes": o.size,
        "read_size": o.read_size,
        "warmup": o.warmup,
        "rate": o.rate,
        "seed": o.seed,
        "block_size": o.block_size,
        "rows": rows,
    });
    std::fs::write(&path, serde_json::to_string_pretty(&doc)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
