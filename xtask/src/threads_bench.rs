//! `cargo xtask threads-bench [ROUNDS]`: one reactor against two (`serve --threads 2`),
//! side by side, alternating, ROUNDS times (default 3); prints medians.
//!
//! 1. Server CPU per frame (utime + stime of every thread, /proc/PID/stat, over a verified
//!    `tabecho load --frames`), at 100 and 10,000 connections, pipeline 1 and 16, nothing
//!    pinned: the load generator (one thread) and the server share the CPUs.
//! 2. Balance at 1,000 connections over TCP and over a Unix socket: each reactor's share
//!    of the connections accepted and the frames answered (from `--metrics`).
//! 3. Throughput, closed loop, 100 connections, pipeline 16, 5 s (the load generator uses
//!    one thread: on two CPUs a second reactor competes with it).
//!
//! PASS when every load was verified (nothing lost or corrupt) and both reactors served
//! some of the connections in part 2; the figures themselves are for BENCHMARKS.md.

use std::path::Path;
use std::process::Command;

use clap::Args;
use harness::proc::cpu_seconds;
use harness::report::metric_by_reactor;

use crate::report;
use harness::ServerProcess;

use crate::http;
use crate::machine::{self, Outcome, Verdict};

#[derive(Args)]
pub struct ThreadsBenchArgs {
    /// Rounds of each measurement (the median is printed).
    #[arg(default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    rounds: u64,
}

/// A server with `threads` reactors on `listen` (and metrics when asked).
fn start(bin: &Path, threads: u32, listen: &str, metrics: bool) -> Result<ServerProcess, String> {
    let mut c = Command::new(bin);
    c.args([
        "serve",
        "--listen",
        listen,
        "--idle-timeout",
        "60s",
        "--threads",
    ])
    .arg(threads.to_string());
    if metrics {
        c.args(["--metrics", "127.0.0.1:0"]);
    }
    ServerProcess::start_ready(c, "info").map_err(|e| e.to_string())
}

pub fn run(a: ThreadsBenchArgs) -> Outcome {
    if let Err(e) = machine::raise_fd_limit(10_100) {
        return Outcome::CannotRun(e);
    }
    let bin = match machine::release_binary() {
        Ok(b) => b,
        Err(e) => return Outcome::CannotRun(e),
    };
    let out = match machine::out_dir("threads-bench") {
        Ok(o) => o,
        Err(e) => return Outcome::CannotRun(e),
    };
    let mut v = Verdict::default();
    let mut unverified = Vec::new();

    println!(
        "== 1. server CPU per frame (us), median of {}, 1 reactor vs 2",
        a.rounds
    );
    println!(
        "{:>6} {:>4} {:>10} {:>10} {:>7}",
        "conns", "pipe", "1 reactor", "2 reactors", "ratio"
    );
    for conns in [100u64, 10_000] {
        for pipe in [1u64, 16] {
            let frames = if pipe == 1 { 200_000 } else { 1_000_000 };
            let per_conn = frames / conns;
            let mut cpu = [Vec::new(), Vec::new()];
            for _ in 0..a.rounds {
                for threads in [1u32, 2] {
                    let server = match start(&bin, threads, "127.0.0.1:0", false) {
                        Ok(s) => s,
                        Err(e) => return Outcome::CannotRun(e),
                    };
                    let t0 = cpu_seconds(server.pid());
                    let r = report::run(
                        &bin,
                        &server.addr,
                        &[
                            "-c",
                            &conns.to_string(),
                            "-p",
                            &pipe.to_string(),
                            "--frames",
                            &per_conn.to_string(),
                            "-t",
                            "1",
                            "--connect-rate",
                            "20000",
                            "-d",
                            "120s",
                        ],
                    );
                    let t1 = cpu_seconds(server.pid());
                    drop(server);
                    match r {
                        Ok(r) if r.verified() => {}
                        Ok(r) => unverified.push(format!(
                            "{conns} x p{pipe}, {threads}r: {}",
                            report::line(&r)
                        )),
                        Err(e) => unverified.push(format!("{conns} x p{pipe}, {threads}r: {e}")),
                    }
                    cpu[threads as usize - 1].push((t1 - t0) * 1e6 / (per_conn * conns) as f64);
                }
            }
            let (one, two) = (
                report::median(cpu[0].clone()),
                report::median(cpu[1].clone()),
            );
            println!(
                "{conns:>6} {pipe:>4} {one:>10.3} {two:>10.3} {:>7.3}",
                two / one
            );
        }
    }

    println!();
    println!("== 2. balance over 2 reactors at 1,000 connections (reactor 0's share)");
    let unix = format!("unix:{}", out.join("threads.sock").display());
    for (what, listen) in [
        ("TCP (SO_REUSEPORT)", "127.0.0.1:0"),
        ("Unix (handoff)", unix.as_str()),
    ] {
        println!("-- {what}");
        let server = match start(&bin, 2, listen, true) {
            Ok(s) => s,
            Err(e) => return Outcome::CannotRun(e),
        };
        match report::run(
            &bin,
            &server.addr,
            &[
                "-c", "1000", "-p", "1", "--frames", "50", "-t", "1", "-d", "60s",
            ],
        ) {
            Ok(r) if r.verified() => {}
            Ok(r) => unverified.push(format!("balance {what}: {}", report::line(&r))),
            Err(e) => unverified.push(format!("balance {what}: {e}")),
        }
        let page = http::get(server.metrics_addr(), "/metrics")
            .map(|(_, p)| p)
            .unwrap_or_default();
        for name in ["tabecho_accepted_total", "tabecho_frames_total"] {
            let by = metric_by_reactor(&page, name);
            let (r0, r1) = (
                by.get("0").copied().unwrap_or(0.0),
                by.get("1").copied().unwrap_or(0.0),
            );
            println!(
                "   {name}: reactor 0 {r0:.0}, reactor 1 {r1:.0}: {:.1}%",
                100.0 * r0 / (r0 + r1)
            );
            if name == "tabecho_accepted_total" {
                v.check(
                    r0 > 0.0 && r1 > 0.0,
                    format!("{what}: both reactors accepted connections"),
                );
            }
        }
    }

    println!();
    println!("== 3. replies/s, closed loop, 100 connections, pipeline 16, 5 s");
    for threads in [1u32, 2, 1, 2] {
        let server = match start(&bin, threads, "127.0.0.1:0", false) {
            Ok(s) => s,
            Err(e) => return Outcome::CannotRun(e),
        };
        match report::run(&bin, &server.addr, &["-c", "100", "-p", "16", "-d", "5s"]) {
            Ok(r) => {
                println!(
                    "   {threads} reactor(s): {:.0} replies/s, p99 {:.2} ms, verified {}",
                    r.replies_per_sec,
                    r.p99_us as f64 / 1000.0,
                    r.verified()
                );
                if !r.verified() {
                    unverified.push(format!("throughput {threads}r: {}", report::line(&r)));
                }
            }
            Err(e) => unverified.push(format!("throughput {threads}r: {e}")),
        }
    }
    println!();
    for u in &unverified {
        println!("   not verified: {u}");
    }
    v.check(
        unverified.is_empty(),
        "every load verified (nothing lost, nothing corrupt)",
    );
    v.outcome()
}
