//! `cargo xtask admin-listing`: what listing the connections costs (issue 28). tabecho
//! (1 and 2 reactors) with `--admin` holds N idle connections (`tabecho load --idle`,
//! default 10,000) while an open-loop healthy load runs (20 connections, 2,000 frames/s,
//! latency from each frame's scheduled send time, 12 s): first alone, then with `tabecho
//! conns --limit 100` run every 250 ms from 2 s in. Printed per run: each listing's wall
//! time (the command's, connect to exit), and the healthy load's p50/p99/max; the same
//! load without listings beside it, for comparison.
//!
//! PASS when every listing printed 100 rows within 2 s, and the healthy load with
//! listings lost nothing and kept its max latency under 50 ms (the "done when").
//! Those are latencies: a machine busy with other work can miss them.

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
                     slowest {:.1} ms",
                    a.idle,
                    run.listings.len(),
                    median.as_secs_f64() * 1e3,
                    slowest.as_secs_f64() * 1e3
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
        .args(["--idle-timeout", "600s", "--admin", &socket]);
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
        measure(bin, &server.addr, &socket)
    };
    let _ = idle_load.kill();
    let _ = idle_load.wait();
    result
}

fn measure(bin: &Path, addr: &str, socket: &str) -> Result<Run, String> {
    let alone = report::run(bin, addr, &HEALTHY)?;
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
    let listed = healthy
        .join()
        .map_err(|_| "the healthy load's thread panicked".to_string())??;
    Ok(Run {
        listings,
        rows_ok,
        alone,
        listed,
    })
}
