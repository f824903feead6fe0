//! The verifying load generator behind `tabecho load`: options in, a [`LoadReport`] out.
//!
//! ```text
//!   run(&LoadOptions)
//!     ├─ raise RLIMIT_NOFILE to the hard limit
//!     ├─ Plan (plan.rs): the timeline and shape, shared read-only by the workers
//!     ├─ worker thread × T  (worker.rs: one mio Poll each, C/T connections; owns the loop,
//!     │     │                lends each connection its Ctx: counters, read buffer, registry)
//!     │     ├─ Session × C/T  (session.rs: one connection: send frames, check replies)
//!     │     │     └─ ReplyChecker (verify.rs) ← PayloadSource (payload.rs)
//!     │     ├─ FaultSession  (fault/: --faults; misbehave, check the outcome, reconnect)
//!     │     ├─ Churn  (churn.rs: --churn; connect, one frame, its reply, close)
//!     │     └─ each one's socket is a LoadConn (conn.rs: connect, write, read, close;
//!     │                     first the PROXY header of proxy.rs, with --proxy-header)
//!     ├─ live line each second (live.rs; stderr, when asked)
//!     └─ merge WorkerStats (stats.rs) → LoadReport (report.rs prints it)
//!           ├─ intervals (intervals.rs: the measured window, interval by interval)
//!           └─ histograms (histogram.rs: lossless base64, the percentile table)
//!   merge(reports) (merge.rs: several runs' reports in one)    plot (plot.rs: an SVG)
//! ```
//!
//! The timeline of a run, from the moment the workers start:
//! `[0, warmup)` connect and send, nothing recorded; `[warmup, warmup + duration)` the
//! measured window (latency and throughput count frames *scheduled* in it); then no new
//! frames, and a drain of at most `drain` for the replies still in flight. Frames without
//! a reply after the drain are lost. In `idle` mode nothing is sent: connections are held
//! for `duration` and the server's closes are timed.
//!
//! With `faults`, a share of the connections misbehave instead (fault/): each cycles
//! connect, misbehave, check, pause, until sending stops; a cycle in progress then has
//! until the end of the drain to reach its outcome, else it is counted as cut short.
//!
//! With `churn`, one-frame connections (the original Go client's pattern) are opened at
//! that rate from the start until sending stops, beside the others (`connections` may
//! then be 0); each one's outcome is counted ([`ChurnCounts`]), and each opened keeps
//! its whole `connect_timeout`, the run waiting for it past the drain if need be.

mod churn;
mod conn;
mod ctx;
mod fault;
mod histogram;
mod intervals;
mod live;
mod merge;
mod payload;
mod plan;
mod plot;
mod proxy;
mod report;
mod session;
mod stats;
mod verify;
mod worker;

use std::io::{self, Write as _};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime};

use crate::addr::ListenAddr;
use crate::config::{DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_FRAME};

pub use fault::{FaultCounts, FaultKind};
pub use intervals::MAX_INTERVALS;
pub use merge::{merge, Merged};
pub use payload::PayloadSource;
pub use plot::write_svg;
pub use proxy::{ProxyHeaders, ProxyVersion};
pub use report::{IntervalReport, LoadReport};
pub use stats::ChurnCounts;
pub use verify::{Desync, ReplyChecker, Verdict};

use live::LiveLine;
use plan::Plan;
use stats::{Progress, WorkerStats};
use worker::WorkerConfig;

/// How long the drain phase waits for replies by default.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(3);
/// How long a connection may take to be established before it counts as failed.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The share of connections that misbehave with `--faults`: enough to keep every kind
/// busy, few enough that the healthy load still dominates.
pub const DEFAULT_FAULT_SHARE: f64 = 0.1;
/// The mean pause between two cycles of a faulty connection: 1,000 faulty connections
/// then open about 1,000 connections a second, which a 2-core machine sustains for hours.
pub const DEFAULT_FAULT_PAUSE: Duration = Duration::from_secs(1);
/// The width of the report's intervals: the live line's second, and a few hundred points
/// in a plot of a few minutes.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

/// What to run. [`LoadOptions::new`] gives the defaults of `tabecho load`.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The server.
    pub addr: ListenAddr,
    /// The local address TCP connections are made from (port chosen by the kernel): one
    /// source address gives about 28,000 ephemeral ports per server address, so several
    /// loads with distinct sources (127.0.0.2, 127.0.0.3, ...) reach past that.
    pub source: Option<std::net::IpAddr>,
    /// Cap both kernel socket buffers (SO_SNDBUF, SO_RCVBUF) of every TCP connection at
    /// this many bytes; `None` leaves the kernel's autotuning. An attacker's buffers are
    /// on its own machine: capping them here keeps, on one machine, the kernel memory
    /// measured mostly the server's.
    pub socket_buffer: Option<usize>,
    /// Begin every connection with a PROXY protocol header naming a source of its own
    /// (`--proxy-header`, `--proxy-source`), as a balancer does; `None`: no header.
    pub proxy: Option<ProxyHeaders>,
    /// Connections to open, spread over the threads.
    pub connections: usize,
    /// Worker threads, each with its own `Poll`.
    pub threads: usize,
    /// Frames in flight per connection, at most (at least 1).
    pub pipeline: usize,
    /// Payload bytes per frame.
    pub size: usize,
    /// The measured window.
    pub duration: Duration,
    /// Sending before the measured window, not recorded.
    pub warmup: Duration,
    /// Frames per second over all connections (open loop); `None` sends as fast as
    /// replies come back (closed loop, `pipeline` in flight).
    pub rate: Option<f64>,
    /// New connections per second over all threads; `None` opens them all at once.
    pub connect_rate: Option<f64>,
    /// One-frame connections per second over all threads (connect, send one frame, read
    /// its reply, close), from the start until sending stops; `None`: none.
    pub churn: Option<f64>,
    /// Hold connections without sending, for `duration`, and time the server's closes.
    pub idle: bool,
    /// Expect each payload back verbatim (payload + TAB), not `server got:` + payload + TAB.
    pub raw: bool,
    /// The longest wait for replies in flight after sending stops.
    pub drain: Duration,
    /// The longest a connection may take to be established.
    pub connect_timeout: Duration,
    /// Frames per connection, at most; the run ends early once all are answered (tests).
    pub frames_per_connection: Option<u64>,
    /// Print the live line on stderr each second (rewritten in place: for a terminal).
    pub progress: bool,
    /// The width of the intervals the measured window is cut into in the report.
    pub interval: Duration,
    /// Fault kinds mixed into the load; empty: every connection is healthy.
    pub faults: Vec<FaultKind>,
    /// The share of connections that misbehave when `faults` is not empty (at least one
    /// per kind given).
    pub fault_share: f64,
    /// The mean pause between two cycles of a faulty connection.
    pub fault_pause: Duration,
    /// Cycles per faulty connection, at most; `None`: until sending stops.
    pub fault_cycles: Option<u64>,
    /// The server's `--max-frame`, which the `oversize` and `garbage` checks assume.
    pub max_frame: usize,
    /// The server's `--idle-timeout`, which the `trickle` and `slowread` checks assume.
    pub idle_timeout: Duration,
}

impl LoadOptions {
    /// The defaults: 100 connections, pipeline 16, 32-byte frames, 10 s, one thread per
    /// core, no faults (and the server's defaults assumed for them).
    pub fn new(addr: ListenAddr) -> Self {
        LoadOptions {
            addr,
            source: None,
            socket_buffer: None,
            proxy: None,
            connections: 100,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            pipeline: 16,
            size: 32,
            duration: Duration::from_secs(10),
            warmup: Duration::ZERO,
            rate: None,
            connect_rate: None,
            churn: None,
            idle: false,
            raw: false,
            drain: DEFAULT_DRAIN,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            frames_per_connection: None,
            progress: false,
            interval: DEFAULT_INTERVAL,
            faults: Vec::new(),
            fault_share: DEFAULT_FAULT_SHARE,
            fault_pause: DEFAULT_FAULT_PAUSE,
            fault_cycles: None,
            max_frame: DEFAULT_MAX_FRAME,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// Runs the load described by `options` and reports what happened.
///
/// Fails only when the run cannot start (bad options, no thread, no `Poll`); connection
/// failures, losses and corruption are counted in the report.
pub fn run(options: &LoadOptions) -> io::Result<LoadReport> {
    if (options.connections == 0 && options.churn.is_none()) || options.threads == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "connections (unless --churn) and threads must be at least 1",
        ));
    }
    let bad_rate = |rate: Option<f64>| rate.is_some_and(|r| !(r > 0.0 && r.is_finite()));
    if bad_rate(options.rate) || bad_rate(options.connect_rate) || bad_rate(options.churn) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "--rate, --connect-rate and --churn must be positive",
        ));
    }
    if !options.faults.is_empty() {
        check_fault_options(options)?;
    }
    check_interval(options.duration, options.interval)?;
    let fd_limit = crate::fd_limit::raise().unwrap_or(0);
    // At least one worker, which may have only churn to do.
    let threads = options.threads.min(options.connections.max(1));
    let start = Instant::now();
    let start_unix = SystemTime::now();
    let plan = Arc::new(Plan::new(options, start));
    let healthy = options.connections as u64 - plan.faults.faulty;

    let (done_tx, done_rx) = mpsc::channel();
    let mut progress = Vec::with_capacity(threads);
    let mut handles = Vec::with_capacity(threads);
    let mut first_id = 0;
    for w in 0..threads {
        let count = options.connections / threads + usize::from(w < options.connections % threads);
        let config = WorkerConfig {
            first_id: first_id as u64,
            count,
            connect_rate: options.connect_rate.map(|r| r / threads as f64),
            // --rate is the healthy load: faulty connections send no paced frames.
            rate_per_connection: options.rate.map(|r| r / healthy.max(1) as f64),
            churn_rate: options.churn.map(|r| r / threads as f64),
            // Far from the sessions' ids (which seed their payloads too).
            churn_id: (1 << 63) | ((w as u64) << 40),
            plan: Arc::clone(&plan),
        };
        first_id += count;
        let shared = Arc::new(Progress::default());
        progress.push(Arc::clone(&shared));
        let done = done_tx.clone();
        let handle = std::thread::Builder::new()
            .name(format!("load-{w}"))
            .spawn(move || {
                let outcome = worker::run(config, &shared);
                // The receiver outlives every worker; a send error cannot happen.
                let _ = done.send(outcome);
            })?;
        handles.push(handle);
    }
    drop(done_tx);

    let mut merged = WorkerStats::new(plan.window(), plan.interval, false);
    let mut finished = 0;
    let mut failure = None;
    let mut live = options.progress.then(|| {
        LiveLine::new(
            start,
            plan.measure_start,
            plan.send_end,
            options.connections as u64,
        )
    });
    let mut printed = false;
    // The live line's seconds are the run's: 1 s, 2 s, ... after the start.
    let mut next_line = start + LIVE_EVERY;
    while finished < threads {
        match done_rx.recv_timeout(next_line.saturating_duration_since(Instant::now())) {
            Ok(Ok(stats)) => {
                merged.merge(&stats);
                finished += 1;
            }
            Ok(Err(e)) => {
                failure.get_or_insert(e);
                finished += 1;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                next_line += LIVE_EVERY;
                if let Some(line) = live.as_mut() {
                    let sample = line.sample(&progress, Instant::now());
                    // On a terminal: back to the start of the line, the line, then erase
                    // what a longer line before left.
                    let mut err = io::stderr().lock();
                    let _ = write!(err, "\r{sample}\x1b[K");
                    let _ = err.flush();
                    printed = true;
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    for handle in handles {
        if handle.join().is_err() {
            failure.get_or_insert(io::Error::other("a load worker panicked"));
        }
    }
    if printed {
        eprintln!();
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let window_start = start_unix + options.warmup;
    let window_start_unix_ms = window_start
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    Ok(LoadReport::new(
        options,
        &merged,
        fd_limit,
        start.elapsed(),
        window_start_unix_ms,
    ))
}

/// How often the live line is drawn.
const LIVE_EVERY: Duration = Duration::from_secs(1);

/// Rejects an interval that is zero or cuts the window into more than [`MAX_INTERVALS`].
pub fn check_interval(window: Duration, interval: Duration) -> io::Result<()> {
    let bad = |why: String| Err(io::Error::new(io::ErrorKind::InvalidInput, why));
    if interval.is_zero() {
        return bad("--interval must be above zero".into());
    }
    let count = window.as_nanos().div_ceil(interval.as_nanos());
    if count > u128::from(MAX_INTERVALS) {
        return bad(format!(
            "--interval {interval:?} cuts --duration {window:?} into {count} intervals: at \
             most {MAX_INTERVALS}"
        ));
    }
    Ok(())
}

/// Rejects fault options the checks cannot work with.
fn check_fault_options(options: &LoadOptions) -> io::Result<()> {
    let bad = |what: &str| {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            what.to_string(),
        ))
    };
    if options.idle || options.raw {
        return bad(
            "--faults needs the tab-echo protocol and frames to send (not --idle or --raw)",
        );
    }
    if !(options.fault_share > 0.0 && options.fault_share <= 1.0) {
        return bad("--fault-share must be above 0 and at most 1");
    }
    if options.max_frame == 0 || options.size > options.max_frame {
        return bad("--size must not exceed --max-frame, which must be at least 1");
    }
    if options.idle_timeout.is_zero() {
        return bad("--idle-timeout must be above zero");
    }
    Ok(())
}
