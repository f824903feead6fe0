//! `tabecho load`: the verifying load generator's command line; the work is in
//! `tabecho::load`.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use tabecho::addr::{parse_duration, ListenAddr};
use tabecho::config::DEFAULT_LISTEN;
use tabecho::load::{self, LoadOptions};

/// Every frame got exactly its reply.
const EXIT_OK: u8 = 0;
/// Frames lost or corrupt, or replies nobody asked for.
const EXIT_VERIFY_FAILED: u8 = 1;
/// Could not run: no connection established, or the run could not start.
const EXIT_NO_RUN: u8 = 3;

/// Flags of `tabecho load`.
#[derive(Args)]
#[command(after_help = "\
Every reply is checked byte for byte, in order; frames without a reply when the drain
ends are lost. The clock starts when the first connection opens: use --warmup to leave
the connection ramp out of the numbers. With --rate, latency is measured from each
frame's scheduled send time, so a stalled server cannot hide (coordinated omission).

Exit codes:
  0  every frame sent got exactly its reply
  1  frames lost or corrupt, or unexpected replies
  2  bad command line
  3  could not run (no connection established, no thread, no poll)")]
pub struct LoadArgs {
    /// Server address: host:port or unix:/path.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    addr: ListenAddr,
    /// Connections to open.
    #[arg(short, long, default_value_t = 100)]
    connections: usize,
    /// Worker threads, each with its own poll [default: the number of cores].
    #[arg(short, long)]
    threads: Option<usize>,
    /// Frames in flight per connection, at most.
    #[arg(short, long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    pipeline: u32,
    /// Payload bytes per frame (payloads vary, never hold a TAB).
    #[arg(short, long, default_value_t = 32)]
    size: usize,
    /// The measured window (as in 10s, 500ms).
    #[arg(short, long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Load before the measured window, not recorded.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    warmup: Duration,
    /// Frames per second over all connections (open loop) [default: closed loop].
    #[arg(long)]
    rate: Option<f64>,
    /// New connections per second [default: all at once].
    #[arg(long)]
    connect_rate: Option<f64>,
    /// Open the connections, send nothing, hold them for --duration; report the server's closes.
    #[arg(long)]
    idle: bool,
    /// Expect each payload echoed verbatim (a byte-echo server), not `server got:` + payload.
    #[arg(long)]
    raw: bool,
    /// Print one JSON object on stdout instead of the summary.
    #[arg(long)]
    json: bool,
    /// The longest wait for replies in flight after sending stops.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    drain: Duration,
    /// The longest a connection may take to be established.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    connect_timeout: Duration,
    /// Send at most this many frames per connection, then end once all are answered.
    #[arg(long)]
    frames: Option<u64>,
}

pub fn run(args: LoadArgs) -> ExitCode {
    let mut options = LoadOptions::new(args.addr);
    options.connections = args.connections;
    if let Some(threads) = args.threads {
        options.threads = threads;
    }
    options.pipeline = args.pipeline as usize;
    options.size = args.size;
    options.duration = args.duration;
    options.warmup = args.warmup;
    options.rate = args.rate;
    options.connect_rate = args.connect_rate;
    options.idle = args.idle;
    options.raw = args.raw;
    options.drain = args.drain;
    options.connect_timeout = args.connect_timeout;
    options.frames_per_connection = args.frames;
    options.progress = std::io::stderr().is_terminal();

    if !args.json {
        println!(
            "tabecho load: {}, {} connections, {} threads, {}{} {}-byte frames{}, {} (+{} warmup)",
            options.addr,
            options.connections,
            options.threads.min(options.connections),
            if options.idle {
                "idle, no ".to_string()
            } else {
                format!("pipeline {}, ", options.pipeline)
            },
            if options.raw { "raw" } else { "tab-echo" },
            options.size,
            options
                .rate
                .map_or(String::new(), |r| format!(", {r} frames/s")),
            human(options.duration),
            human(options.warmup),
        );
    }
    let report = match load::run(&options) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("tabecho load: {e}");
            return ExitCode::from(EXIT_NO_RUN);
        }
    };
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    if report.established == 0 {
        eprintln!(
            "tabecho load: no connection could be established to {}",
            options.addr
        );
        ExitCode::from(EXIT_NO_RUN)
    } else if report.verified() {
        ExitCode::from(EXIT_OK)
    } else {
        ExitCode::from(EXIT_VERIFY_FAILED)
    }
}

/// `1.5s`, `250ms`: a duration as it would be typed.
fn human(d: Duration) -> String {
    if d.subsec_millis() == 0 && d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.3}s", d.as_secs_f64())
    }
}
