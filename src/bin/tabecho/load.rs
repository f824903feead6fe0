//! `tabecho load`: the verifying load generator's command line, and `tabecho load merge`,
//! which merges several runs' JSON reports; the work is in `tabecho::load`.

use std::fs::File;
use std::io::{IsTerminal, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use tabecho::addr::{DurationArg, ListenAddr};
use tabecho::cidr::Cidr;
use tabecho::config::{parse_connection_bytes, DEFAULT_LISTEN};
use tabecho::load::{self, FaultKind, LoadOptions, LoadReport, ProxyHeaders, ProxyVersion};
use tabecho::size::Size;

/// Every frame got exactly its reply (every fault its documented outcome, every churn
/// connection its reply).
const EXIT_OK: u8 = 0;
/// Frames lost or corrupt, replies nobody asked for, a fault's unexpected outcome, or a
/// churn connection without its reply.
const EXIT_VERIFY_FAILED: u8 = 1;
/// Could not run: no connection established, the run could not start, or an output file
/// (--histogram, --plot) could not be written; for `merge`, a report could not be read or
/// merged.
const EXIT_NO_RUN: u8 = 3;
/// A bad command line, as clap's own errors (here: an output file that cannot be created).
const EXIT_USAGE: u8 = 2;

/// Flags of `tabecho load`.
#[derive(Args)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "\
Every reply is checked byte for byte, in order; frames without a reply when the drain
ends are lost. The clock starts when the first connection opens: use --warmup to leave
the connection ramp out of the numbers. With --rate, latency is measured from each
frame's scheduled send time, so a stalled server cannot hide (coordinated omission).

On a terminal, stderr shows a live line each second: elapsed of the total, the frames
answered in the last second, their p99 latency, the connections open, and the lost,
corrupt and error counts so far. Nothing is drawn when stderr is not a terminal.

Intervals (--interval, default 1s) cut the measured window; each holds the frames
scheduled in it (answered, with p50, p99 and max latency; lost; corrupt), the errors
counted while it ran and the connections open at its end. Their frames add up to the
report's measured replies. --json prints them as `intervals`, --plot draws them (SVG:
frames/s above, latency below, intervals with failures shaded), and --histogram writes
the whole latency distribution as HdrHistogram's percentile table (milliseconds, as
wrk2 prints it and HdrHistogram's plotter reads it).

Merge (tabecho load merge A.json B.json ... [--json] [--histogram FILE] [--plot FILE]):
one report from several runs' --json reports, say from several machines against one
cluster at the same time. Counts and rates add; percentiles come from the runs'
histograms added together (each report carries them losslessly, in HdrHistogram's
compressed V2 base64, `HISTFAAA...`), so one report merged alone gives back its own;
intervals line up by each run's window start on its machine's clock (keep the clocks
in sync and start the runs together), rounded to the nearest whole interval. Every run
must have the same --interval. Exit 0 if the merged report is verified, 1 if not, 3 if
a report cannot be read or merged.

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

PROXY headers (--proxy-header v1|v2 --proxy-source IP[/PREFIX]): every connection
(healthy, faulty or churn) begins with a PROXY protocol header, as a balancer writes
it, so one machine stands for many clients behind a balancer. The headers name one
source address, or a prefix's host addresses in turn (not an IPv4 prefix's network and
broadcast addresses, not an IPv6 prefix's all-zero one; a faulty connection keeps its
address across its cycles); ports are made up, from 1024; the destination is --addr
(0.0.0.0:0 or [::]:0 on a Unix socket). Only a server that expects a header from this
machine reads it: any other takes it for frame bytes, and the checks find every reply
corrupt.

Exit codes:
  0  every frame sent got exactly its reply, every fault its documented outcome
  1  frames lost or corrupt, unexpected replies, an unexpected fault outcome, or a
     churn connection without its reply
  2  bad command line (an output file that cannot be created included)
  3  could not run (no connection established, no thread, no poll), or an output
     file could not be written"
)]
pub struct LoadArgs {
    /// `merge`, or none: a run.
    #[command(subcommand)]
    command: Option<LoadCommand>,
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
    /// Begin every connection with a PROXY protocol header, v1 (text) or v2 (binary), as a
    /// balancer's send-proxy does, naming a source from --proxy-source: for a server that
    /// expects one from this client's address [default: none].
    #[arg(long, value_name = "v1|v2", requires = "proxy_source", value_parser = proxy_versions(),
          hide_possible_values = true)]
    proxy_header: Option<ProxyVersion>,
    /// The sources the headers name: one address, or the host addresses of a prefix dealt
    /// round-robin over the connections (10.9.0.0/16: 65,534 clients); ports made up,
    /// destination the server's address.
    #[arg(long, value_name = "IP[/PREFIX]", requires = "proxy_header")]
    proxy_source: Option<Cidr>,
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
    /// The width of the report's intervals (--json's `intervals`, --plot's points).
    #[arg(long, value_name = "DUR", default_value_t = DurationArg(defaults().interval))]
    interval: DurationArg,
    /// Write the latency distribution to FILE as HdrHistogram's percentile table (ms).
    #[arg(long, value_name = "FILE")]
    histogram: Option<PathBuf>,
    /// Draw frames/s and p50, p99 and max latency over time to FILE, an SVG page.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
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

/// `--proxy-header`'s values, listed for clap's errors, the completions and the man page.
fn proxy_versions() -> impl clap::builder::TypedValueParser<Value = ProxyVersion> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new([ProxyVersion::V1.name(), ProxyVersion::V2.name()])
        .map(|name| {
            name.parse()
                .expect("each possible value is a version's name")
        })
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

/// What `tabecho load` writes besides the summary.
struct Outputs {
    /// One JSON object on stdout instead of the summary.
    json: bool,
    /// The percentile table's file.
    histogram: Option<PathBuf>,
    /// The plot's file.
    plot: Option<PathBuf>,
}

impl LoadArgs {
    /// The run's options, and what to write. Both structs are written out field by field
    /// (no `..`), so a flag added to `LoadArgs`, or an option added to `LoadOptions`,
    /// fails to compile here until it is wired.
    fn options(self) -> (LoadOptions, Outputs) {
        let LoadArgs {
            command: _,
            addr,
            source,
            socket_buffer,
            proxy_header,
            proxy_source,
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
            interval,
            histogram,
            plot,
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
            // clap requires each flag with the other.
            proxy: proxy_header
                .zip(proxy_source)
                .map(|(version, prefix)| ProxyHeaders::new(version, prefix)),
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
            interval: interval.0,
            faults,
            fault_share,
            fault_pause: fault_pause.0,
            fault_cycles,
            max_frame: max_frame.0,
            idle_timeout: idle_timeout.0,
        };
        let outputs = Outputs {
            json,
            histogram,
            plot,
        };
        (options, outputs)
    }
}

/// `tabecho load`'s subcommands.
#[derive(Subcommand)]
enum LoadCommand {
    /// Merge several runs' `--json` reports into one (see `tabecho load --help`).
    // Boxed: a run's flags are what `tabecho`'s `Command::Load` holds, kept small.
    Merge(Box<MergeArgs>),
}

/// Flags of `tabecho load merge`.
#[derive(Args)]
struct MergeArgs {
    /// The reports, each the output of `tabecho load --json`.
    #[arg(required = true, value_name = "REPORT.json")]
    reports: Vec<PathBuf>,
    /// Print the merged report as one JSON object on stdout instead of the summary.
    #[arg(long)]
    json: bool,
    /// Write the merged latency distribution to FILE as HdrHistogram's percentile table.
    #[arg(long, value_name = "FILE")]
    histogram: Option<PathBuf>,
    /// Draw the merged intervals to FILE, an SVG page.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
}

pub fn run(mut args: LoadArgs) -> ExitCode {
    if let Some(LoadCommand::Merge(merge)) = args.command.take() {
        return run_merge(*merge);
    }
    let (options, outputs) = args.options();
    if options.connections == 0 && options.churn.is_none() {
        eprintln!("error: --connections 0 needs --churn: nothing would run");
        return ExitCode::from(EXIT_USAGE);
    }
    if let Err(e) = load::check_interval(options.duration, options.interval) {
        eprintln!("error: {e}");
        return ExitCode::from(EXIT_USAGE);
    }
    // Refused before the run, not after it: a path that cannot be written.
    for (flag, path) in [
        ("--histogram", &outputs.histogram),
        ("--plot", &outputs.plot),
    ] {
        if let Some(path) = path {
            if let Err(e) = File::create(path) {
                eprintln!("error: {flag} {}: {e}", path.display());
                return ExitCode::from(EXIT_USAGE);
            }
        }
    }
    let title = describe(&options);
    if !outputs.json {
        println!("{title}");
        if let Some(rate) = options.churn {
            println!(
                "churn: {rate} one-frame connections/s, each with --connect-timeout {}",
                human(options.connect_timeout)
            );
        }
        if let Some(proxy) = &options.proxy {
            println!("{}", describe_proxy(proxy));
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
            for path in [&outputs.histogram, &outputs.plot].into_iter().flatten() {
                let _ = std::fs::remove_file(path);
            }
            return ExitCode::from(EXIT_NO_RUN);
        }
    };
    let mut title = title;
    if let Some(rate) = options.churn {
        title.push_str(&format!(", churn {rate}/s"));
    }
    if let Some(proxy) = &options.proxy {
        title.push_str(&format!(
            ", PROXY {} from {}",
            proxy.version(),
            proxy.prefix()
        ));
    }
    if !options.faults.is_empty() {
        let kinds: Vec<&str> = options.faults.iter().map(|k| k.name()).collect();
        title.push_str(&format!(
            ", faults {} on {:.0}%",
            kinds.join(","),
            options.fault_share * 100.0
        ));
    }
    let written = write_outputs(&report, &outputs, &title);
    print_report(&report, outputs.json);
    if !report.ran() {
        eprintln!(
            "tabecho load: no connection could be established to {}",
            options.addr
        );
        ExitCode::from(EXIT_NO_RUN)
    } else if let Err(e) = written {
        eprintln!("tabecho load: {e}");
        ExitCode::from(EXIT_NO_RUN)
    } else {
        verdict(&report)
    }
}

/// `tabecho load merge`: reads the reports, merges them, writes what was asked.
fn run_merge(args: MergeArgs) -> ExitCode {
    let MergeArgs {
        reports: paths,
        json,
        histogram,
        plot,
    } = args;
    let mut reports = Vec::with_capacity(paths.len());
    for path in &paths {
        let read = std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|text| LoadReport::from_json(text.trim()).map_err(|e| e.to_string()));
        match read {
            Ok(report) => reports.push(report),
            Err(e) => {
                eprintln!("tabecho load merge: {}: {e}", path.display());
                return ExitCode::from(EXIT_NO_RUN);
            }
        }
    }
    let merged = match load::merge(&reports) {
        Ok(merged) => merged,
        Err((i, why)) => {
            eprintln!("tabecho load merge: {}: {why}", paths[i].display());
            return ExitCode::from(EXIT_NO_RUN);
        }
    };
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    let report = &merged.report;
    let title = format!(
        "tabecho load merge: {} runs ({}), {} connections, {:.0} replies/s",
        paths.len(),
        names.join(", "),
        report.connections,
        report.replies_per_sec
    );
    let outputs = Outputs {
        json,
        histogram,
        plot,
    };
    let written = write_outputs(report, &outputs, &title);
    if !json {
        println!("{title}");
        for (name, (shift, off_ms)) in names.iter().zip(&merged.shifts) {
            println!(
                "  {name}: its first interval is the merged one at {} s ({off_ms:+} ms off it)",
                *shift as f64 * report.interval_secs
            );
        }
    }
    print_report(report, json);
    match written {
        Err(e) => {
            eprintln!("tabecho load merge: {e}");
            ExitCode::from(EXIT_NO_RUN)
        }
        Ok(()) => verdict(report),
    }
}

/// The run's parameters in one line: the summary's first line and the plot's title.
fn describe(options: &LoadOptions) -> String {
    format!(
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
    )
}

/// `--proxy-header`'s line under the first: the version, the prefix and how many sources.
fn describe_proxy(proxy: &ProxyHeaders) -> String {
    let hosts = proxy.hosts();
    format!(
        "PROXY {} headers from {} ({hosts} source{}{})",
        proxy.version(),
        proxy.prefix(),
        if hosts == 1 { "" } else { "s" },
        if hosts == 1 { "" } else { ", round-robin" },
    )
}

/// Writes the percentile table and the plot asked for.
fn write_outputs(report: &LoadReport, outputs: &Outputs, title: &str) -> Result<(), String> {
    if let Some(path) = &outputs.histogram {
        let table = report
            .percentile_table()
            .map_err(|e| format!("--histogram {}: {e}", path.display()))?;
        write_file(path, table.as_bytes()).map_err(|e| format!("--histogram {e}"))?;
    }
    if let Some(path) = &outputs.plot {
        load::write_svg(report, title, path)
            .map_err(|e| format!("--plot {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Writes `bytes` to `path`; the error names the path.
fn write_file(path: &Path, bytes: &[u8]) -> Result<(), String> {
    File::create(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The report on stdout: one JSON line, or the summary.
fn print_report(report: &LoadReport, json: bool) {
    if json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
}

/// The exit code of a report that ran: verified or not.
fn verdict(report: &LoadReport) -> ExitCode {
    if report.verified() {
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
