//! `tabecho load`: the verifying load generator's command line; the work is in
//! `tabecho::load`.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use tabecho::addr::{DurationArg, ListenAddr};
use tabecho::config::{parse_connection_bytes, DEFAULT_LISTEN};
use tabecho::load::{self, FaultKind, LoadOptions};
use tabecho::size::Size;

/// Every frame got exactly its reply (every fault its documented outcome, every churn
/// connection its reply).
const EXIT_OK: u8 = 0;
/// Frames lost or corrupt, replies nobody asked for, a fault's unexpected outcome, or a
/// churn connection without its reply.
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

Faults (--faults KIND,...): a share of the connections (--fault-share, default 0.1 =
10%, at least one per kind, spread evenly over the kinds given) misbehave instead of
sending healthy load. Each cycles: connect, misbehave, check what it receives against
docs/PROTOCOL.md, pause (--fault-pause), reconnect, until sending stops. The checks
assume the server's --max-frame and --idle-timeout: give the same values here.
  reset      a burst of frames, then a reset (SO_LINGER 0) as soon as replies flow;
             the reply bytes before it must be correct
  halfclose  a burst and an unfinished fragment, then shuts its write side: every
             reply, none to the fragment, then EOF
  slowread   a burst, then reads nothing for half the idle timeout: every reply in
             order, then EOF
  noread     sends frames (up to 4 MiB) and never reads: the server throttles it and
             reaps it (EOF or reset); whatever arrived is a correct prefix
  flood      empty frames (each a 12-byte reply) as fast as the socket takes them,
             never read: as noread; the server holds at most 2 x --high-water for it
  trickle    an unfinished frame, one byte at a time: no byte back, and a close no
             sooner than the idle timeout
  oversize   8 frames, then more than --max-frame bytes without a TAB: their replies,
             exactly `error: frame exceeds N bytes` + TAB, then EOF
  garbage    4 KiB of random bytes with TABs (NUL, 0xFF...): the replies to the frames
             they make, byte for byte, then EOF
  partial    all of a frame but its TAB (--max-frame - 1 bytes), held: no byte back
             and a close no sooner than the idle timeout, or, evicted by the
             server's memory budget (its --max-buffer-memory), exactly its error
             line (counted as evicted); held to the end of the run, it is cut short
Durations (DUR) are a number and a unit (250ms, 2s, 1.5s, 1m, 1h), at most 365 days.
Sizes (SIZE) are a number of bytes with an optional K, M or G, no space, in any case
(32, 64K, 1MiB); units are binary however written: K = KB = KiB = 1024.
Every outcome must come within 2 idle timeouts + 5 s of the connect. The healthy
connections are verified as without faults and must lose nothing.

Churn (--churn RATE): besides the -c connections (which may then be 0), RATE one-frame
connections a second, as the original Go client makes them: connect, send one frame,
read its reply, close; from the start until sending stops. Each one is counted as ok,
refused, reset (or closed before the whole reply), wrong (another reply, or an error
line), timed out (no reply within --connect-timeout of the connect) or other; any but
ok fails the run (exit 1).

Exit codes:
  0  every frame sent got exactly its reply, every fault its documented outcome
  1  frames lost or corrupt, unexpected replies, an unexpected fault outcome, or a
     churn connection without its reply
  2  bad command line
  3  could not run (no connection established, no thread, no poll)")]
pub struct LoadArgs {
    /// Server address: host:port or unix:/path.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    addr: ListenAddr,
    /// Connect from this local address (TCP), e.g. 127.0.0.2: each source address has its
    /// own ~28,000 ephemeral ports, but binding gets slow past half of them (Linux hands
    /// out the odd ports to bind first): keep under ~14,000 per source [default: the
    /// kernel's choice].
    #[arg(long, value_name = "IP")]
    source: Option<std::net::IpAddr>,
    /// Cap both kernel socket buffers (SO_SNDBUF, SO_RCVBUF) of every TCP connection at
    /// this size, as an attacker on its own machine would not count against the server's
    /// (scripts/attack.sh) [default: the kernel's autotuning].
    #[arg(long, value_name = "SIZE")]
    socket_buffer: Option<Size>,
    /// Connections to open (at most 16,777,216; 0 with --churn: only churn).
    #[arg(short, long, default_value_t = defaults().connections,
          value_parser = parse_connections)]
    connections: usize,
    /// Worker threads, each with its own poll [default: the number of cores].
    #[arg(short, long)]
    threads: Option<usize>,
    /// Frames in flight per connection, at most.
    #[arg(short, long, default_value_t = default_pipeline(),
          value_parser = clap::value_parser!(u32).range(1..))]
    pipeline: u32,
    /// Payload size of every frame (payloads vary, never hold a TAB; at most 1GiB).
    #[arg(short, long, value_name = "SIZE", default_value_t = Size(defaults().size),
          value_parser = parse_connection_bytes)]
    size: Size,
    /// The measured window (as in 10s, 500ms).
    #[arg(short, long, value_name = "DUR", default_value_t = DurationArg(defaults().duration))]
    duration: DurationArg,
    /// Load before the measured window, not recorded.
    #[arg(long, value_name = "DUR", default_value_t = DurationArg(defaults().warmup))]
    warmup: DurationArg,
    /// Frames per second over all connections (open loop), at least one per 365 days
    /// [default: closed loop].
    #[arg(long, value_parser = parse_rate)]
    rate: Option<f64>,
    /// New connections per second, at least one per 365 days [default: all at once].
    #[arg(long, value_parser = parse_rate)]
    connect_rate: Option<f64>,
    /// One-frame connections per second besides -c (connect, one frame, its reply, close;
    /// see below) [default: none].
    #[arg(long, value_name = "RATE")]
    churn: Option<f64>,
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
    #[arg(long, value_name = "DUR", default_value_t = DurationArg(defaults().drain))]
    drain: DurationArg,
    /// The longest a connection may take to be established (a --churn connection: its
    /// whole exchange, connect to reply).
    #[arg(long, value_name = "DUR", default_value_t = DurationArg(defaults().connect_timeout))]
    connect_timeout: DurationArg,
    /// Send at most this many frames per connection, then end once all are answered.
    #[arg(long)]
    frames: Option<u64>,
    /// Mix in misbehaving connections: reset, halfclose, slowread, noread, flood, trickle,
    /// oversize, garbage, partial (comma-separated; see below).
    #[arg(long, value_delimiter = ',', value_name = "KIND,...")]
    faults: Vec<FaultKind>,
    /// The share of connections that misbehave with --faults (0.1 = 10%).
    #[arg(long, default_value_t = defaults().fault_share, value_name = "FRACTION")]
    fault_share: f64,
    /// Mean pause between two cycles of a faulty connection.
    #[arg(long, value_name = "DUR", default_value_t = DurationArg(defaults().fault_pause))]
    fault_pause: DurationArg,
    /// Cycles per faulty connection, at most [default: until sending stops].
    #[arg(long)]
    fault_cycles: Option<u64>,
    /// The server's --max-frame, which the oversize, garbage and partial faults assume (at most
    /// 1GiB, as the server's).
    #[arg(long, default_value_t = Size(defaults().max_frame), value_name = "SIZE",
          value_parser = parse_connection_bytes)]
    max_frame: Size,
    /// The server's --idle-timeout, which the trickle, slowread and partial faults assume.
    #[arg(long, value_name = "DUR", default_value_t = DurationArg(defaults().idle_timeout))]
    idle_timeout: DurationArg,
}

/// The most connections one load opens: 16 Mi, past what one process can hold (Linux's
/// `fs.nr_open` is 1,048,576 by default), and few enough that the load's tables of them,
/// and the pacing intervals computed from them (`--connections` / `--rate` seconds at
/// most), stay far from overflowing.
const MAX_CONNECTIONS: usize = 1 << 24;

/// `--connections`: 0 (with `--churn`) to [`MAX_CONNECTIONS`].
fn parse_connections(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n <= MAX_CONNECTIONS => Ok(n),
        Ok(n) => Err(format!("{n}: at most {MAX_CONNECTIONS} connections")),
        Err(e) => Err(format!("{s:?}: not a number of connections ({e})")),
    }
}

/// `--rate`, `--connect-rate`: a finite rate of at least one per 365 days (so that the
/// interval between two events is at most a year per connection, which a `Duration`
/// holds).
fn parse_rate(s: &str) -> Result<f64, String> {
    let rate: f64 = s
        .parse()
        .map_err(|e| format!("{s:?}: not a number per second ({e})"))?;
    let slowest = 1.0 / tabecho::addr::MAX_DURATION.as_secs_f64();
    if !(rate.is_finite() && rate >= slowest) {
        return Err(format!(
            "{s}: a finite rate per second, at least one per 365 days ({slowest:.3e})"
        ));
    }
    Ok(rate)
}

/// `tabecho load`'s defaults: those of [`LoadOptions::new`], the one place they are written
/// (clap shows them in `--help` from here).
fn defaults() -> LoadOptions {
    LoadOptions::new(DEFAULT_LISTEN.parse().expect("the default address parses"))
}

/// The default `--pipeline`, as the flag's type.
fn default_pipeline() -> u32 {
    u32::try_from(defaults().pipeline).expect("the default pipeline fits a u32")
}

impl LoadArgs {
    /// The run's options, and whether to print JSON. Both structs are written out field by
    /// field (no `..`), so a flag added to `LoadArgs`, or an option added to `LoadOptions`,
    /// fails to compile here until it is wired.
    fn options(self) -> (LoadOptions, bool) {
        let LoadArgs {
            addr,
            source,
            socket_buffer,
            connections,
            threads,
            pipeline,
            size,
            duration,
            warmup,
            rate,
            connect_rate,
            churn,
            idle,
            raw,
            json,
            drain,
            connect_timeout,
            frames,
            faults,
            fault_share,
            fault_pause,
            fault_cycles,
            max_frame,
            idle_timeout,
        } = self;
        let options = LoadOptions {
            addr,
            source,
            socket_buffer: socket_buffer.map(usize::from),
            connections,
            threads: threads.unwrap_or_else(|| defaults().threads),
            pipeline: pipeline as usize,
            size: size.0,
            duration: duration.0,
            warmup: warmup.0,
            rate,
            connect_rate,
            churn,
            idle,
            raw,
            drain: drain.0,
            connect_timeout: connect_timeout.0,
            frames_per_connection: frames,
            progress: std::io::stderr().is_terminal(),
            faults,
            fault_share,
            fault_pause: fault_pause.0,
            fault_cycles,
            max_frame: max_frame.0,
            idle_timeout: idle_timeout.0,
        };
        (options, json)
    }
}

pub fn run(args: LoadArgs) -> ExitCode {
    let (options, json) = args.options();
    if options.connections == 0 && options.churn.is_none() {
        eprintln!("error: --connections 0 needs --churn: nothing would run");
        return ExitCode::from(2);
    }
    if !json {
        println!(
            "tabecho load: {}, {} connections, {} threads, {}{} frames of {}{}, {} (+{} warmup)",
            options.addr,
            options.connections,
            options.threads.min(options.connections.max(1)),
            if options.idle {
                "idle, no ".to_string()
            } else {
                format!("pipeline {}, ", options.pipeline)
            },
            if options.raw { "raw" } else { "tab-echo" },
            Size(options.size),
            options
                .rate
                .map_or(String::new(), |r| format!(", {r} frames/s")),
            human(options.duration),
            human(options.warmup),
        );
        if let Some(rate) = options.churn {
            println!(
                "churn: {rate} one-frame connections/s, each with --connect-timeout {}",
                human(options.connect_timeout)
            );
        }
        if !options.faults.is_empty() {
            let kinds: Vec<&str> = options.faults.iter().map(|k| k.name()).collect();
            println!(
                "faults: {} on {:.0}% of the connections, pause {}, assuming the server's \
                 --max-frame {} and --idle-timeout {}",
                kinds.join(","),
                options.fault_share * 100.0,
                human(options.fault_pause),
                Size(options.max_frame),
                human(options.idle_timeout),
            );
        }
    }
    let report = match load::run(&options) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("tabecho load: {e}");
            return ExitCode::from(EXIT_NO_RUN);
        }
    };
    if json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    if !report.ran() {
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
