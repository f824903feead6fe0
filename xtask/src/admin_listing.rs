//! `cargo xtask admin-listing`: what listing the connections costs (issue 28). tabecho
//! (1 and 2 reactors) with `--admin` holds N idle connections (`tabecho load --idle`,
//! default 10,000) while an open-loop healthy load runs (20 connections, 2,000 frames/s,
//! latency from each frame's scheduled send time, 12 s): first alone, then with `tabecho
//! conns --limit 100` run every 250 ms from 2 s in. Printed per run: each listing's wall
//! time (the command's, connect to exit), the longest reactor turn while the listings ran
//! (the `tabecho_reactor_turn_seconds` bucket it fell in: the buckets' counts before and
//! after the listings, compared), and the healthy load's p50/p99/max; the same load
//! without listings beside it, for comparison.
//!
//! PASS when every listing printed 100 rows within 2 s, and the healthy load with
//! listings lost nothing and kept its max latency under 50 ms (the "done when").
//! Those are latencies: a machine busy with other work can miss them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use clap::Args;
use harness::ServerProcess;

use crate::machine::{self, Outcome, Verdict};
use crate::report::{self, LoadReport};

#[derive(Args)]
pub struct AdminListingArgs {
    /// Idle connections the server holds.
    #[arg(long, default_value_t = 10_000)]
    idle: u64,
    /// Reactors (--threads) of each run.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    threads: Vec<usize>,
}

/// The healthy load: open loop, so a stall shows as latency.
const HEALTHY: [&str; 10] = [
    "-c", "20", "-t", "1", "-p", "4", "--rate", "2000", "-d", "12s",
];
/// How often a listing runs while the healthy load does.
const EVERY: Duration = Duration::from_millis(250);
/// How long into the healthy load the listings start, and stop before its end.
const MARGIN: Duration = Duration::from_secs(2);

pub fn run(a: AdminListingArgs) -> Outcome {
    let bin = match machine::release_binary() {
        Ok(bin) => bin,
        Err(e) => return Outcome::CannotRun(e),
    };
    // The idle load holds them (the server does too, in its own process).
    if let Err(e) = machine::raise_fd_limit(a.idle + 1_000) {
        return Outcome::CannotRun(e);
    }
    let mut v = Verdict::default();
    for &threads in &a.threads {
        match one(&bin, a.idle, threads) {
            Ok(run) => {
                let slowest = run
                    .listings
                    .iter()
                    .copied()
                    .fold(Duration::ZERO, Duration::max);
                let mut sorted = run.listings.clone();
                sorted.sort();
                let median = sorted.get(sorted.len() / 2).copied().unwrap_or_default();
                println!(
                    "{threads} reactor(s), {} idle: {} listings of 100 rows, median {:.1} ms, \
                     slowest {:.1} ms; the longest turn meanwhile {}",
                    a.idle,
                    run.listings.len(),
                    median.as_secs_f64() * 1e3,
                    slowest.as_secs_f64() * 1e3,
                    run.longest_turn
                );
                for (name, r) in [("alone", &run.alone), ("with listings", &run.listed)] {
                    println!(
                        "  healthy load {name}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {}",
                        r.p50_us as f64 / 1e3,
                        r.p99_us as f64 / 1e3,
                        r.max_us as f64 / 1e3,
                        report::line(r)
                    );
                }
                v.check(
                    run.rows_ok && !run.listings.is_empty() && slowest < Duration::from_secs(2),
                    format!("{threads} reactor(s): every listing 100 rows within 2 s"),
                );
                v.check(
                    run.listed.verified() && run.listed.max_us < 50_000,
                    format!(
                        "{threads} reactor(s): the healthy load beside the listings lost nothing, \
                         max {:.2} ms (target < 50 ms)",
                        run.listed.max_us as f64 / 1e3
                    ),
                );
            }
            Err(e) => v.check(false, format!("{threads} reactor(s): {e}")),
        }
    }
    v.outcome()
}

/// What one server's runs measured.
struct Run {
    /// Each listing's wall time.
    listings: Vec<Duration>,
    /// Every listing printed 100 rows.
    rows_ok: bool,
    /// The longest reactor turn while the listings ran, as its histogram bucket.
    longest_turn: String,
    /// The healthy load without listings.
    alone: LoadReport,
    /// The healthy load with them.
    listed: LoadReport,
}

fn one(bin: &Path, idle: u64, threads: usize) -> Result<Run, String> {
    let dir = machine::out_dir("admin-listing")?;
    let socket = format!(
        "unix:{}",
        dir.join(format!("admin-{threads}.sock")).display()
    );
    let mut command = Command::new(bin);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--threads"])
        .arg(threads.to_string())
        .args(["--idle-timeout", "600s", "--admin", &socket])
        .args(["--metrics", "127.0.0.1:0"]);
    let server = ServerProcess::start_ready(command, "warn").map_err(|e| e.to_string())?;
    let mut idle_load = Command::new(bin)
        .args(["load", "--addr", &server.addr, "--idle", "-d", "120s"])
        .args(["-c", &idle.to_string(), "--connect-rate", "20000"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("tabecho load --idle: {e}"))?;
    let held = harness::proc::wait_for_fds(server.pid(), Duration::from_secs(60), |fds| {
        fds as u64 >= idle
    });
    let result = if (held as u64) < idle {
        Err(format!("only {held} descriptors open after 60 s"))
    } else {
        match server.metrics {
            Some(metrics) => measure(bin, &server.addr, &socket, metrics),
            None => Err("no metrics address in the server's readiness".to_string()),
        }
    };
    let _ = idle_load.kill();
    let _ = idle_load.wait();
    result
}

fn measure(bin: &Path, addr: &str, socket: &str, metrics: SocketAddr) -> Result<Run, String> {
    let alone = report::run(bin, addr, &HEALTHY)?;
    let turns_before = turn_buckets(metrics)?;
    let (bin2, addr2) = (bin.to_path_buf(), addr.to_string());
    let healthy = thread::spawn(move || report::run(&bin2, &addr2, &HEALTHY));
    thread::sleep(MARGIN);
    let mut listings = Vec::new();
    let mut rows_ok = true;
    let stop = Instant::now() + Duration::from_secs(12) - 2 * MARGIN;
    while Instant::now() < stop {
        let started = Instant::now();
        let out = Command::new(bin)
            .args(["conns", "--admin", socket, "--limit", "100"])
            .stderr(Stdio::null())
            .output()
            .map_err(|e| format!("tabecho conns: {e}"))?;
        listings.push(started.elapsed());
        // The header and 100 rows.
        rows_ok &= out.status.success() && out.stdout.split(|&b| b == b'\n').count() == 102;
        thread::sleep(EVERY);
    }
    let turns_after = turn_buckets(metrics)?;
    let listed = healthy
        .join()
        .map_err(|_| "the healthy load's thread panicked".to_string())??;
    Ok(Run {
        listings,
        rows_ok,
        longest_turn: longest_new_turn(&turns_before, &turns_after),
        alone,
        listed,
    })
}

/// The `tabecho_reactor_turn_seconds` buckets of the server's metrics: count by (reactor,
/// upper bound in seconds).
fn turn_buckets(metrics: SocketAddr) -> Result<BTreeMap<(String, String), u64>, String> {
    let (_, page) = crate::http::get(metrics, "/metrics").map_err(|e| format!("/metrics: {e}"))?;
    Ok(page
        .lines()
        .filter_map(|l| l.strip_prefix("tabecho_reactor_turn_seconds_bucket{"))
        .filter_map(|rest| {
            let (labels, count) = rest.rsplit_once(' ')?;
            let label = |name: &str| {
                let value = labels.split(&format!("{name}=\"")).nth(1)?;
                Some(value.split('"').next()?.to_string())
            };
            Some(((label("reactor")?, label("le")?), count.parse().ok()?))
        })
        .collect())
}

/// The bucket of the longest turn counted between `before` and `after` (cumulative
/// buckets: a turn is in the lowest whose count grew as much as `+Inf`'s did), over the
/// reactors: `0.5-1 ms`.
fn longest_new_turn(
    before: &BTreeMap<(String, String), u64>,
    after: &BTreeMap<(String, String), u64>,
) -> String {
    let bound = |le: &str| match le {
        "+Inf" => f64::INFINITY,
        le => le.parse().unwrap_or(f64::NAN),
    };
    let mut longest: Option<(f64, f64)> = None;
    let reactors: std::collections::BTreeSet<&String> = after.keys().map(|(r, _)| r).collect();
    for reactor in reactors {
        let mut grown: Vec<(f64, u64)> = after
            .iter()
            .filter(|((r, _), _)| r == reactor)
            .map(|((r, le), count)| {
                let was = before.get(&(r.clone(), le.clone())).copied().unwrap_or(0);
                (bound(le), count - was.min(*count))
            })
            .collect();
        grown.sort_by(|a, b| a.0.total_cmp(&b.0));
        let Some(&(_, total)) = grown.last() else {
            continue;
        };
        if let Some(i) = grown.iter().position(|&(_, n)| n == total && total > 0) {
            let below = if i == 0 { 0.0 } else { grown[i - 1].0 };
            if longest.is_none_or(|(_, at_most)| grown[i].0 > at_most) {
                longest = Some((below, grown[i].0));
            }
        }
    }
    match longest {
        Some((below, at_most)) => format!("{:.2}-{:.2} ms", below * 1e3, at_most * 1e3),
        None => "none".to_string(),
    }
}
