//! `cargo xtask hostile [FLOODERS] [MIX]`: what hostile clients make a server hold, tabecho
//! beside the tokio bench server (benches/tokio-echo), one after the other, same clients.
//!
//! 1. FLOODERS connections that pipeline empty frames as fast as the socket takes them and
//!    never read (`tabecho load --faults flood`), 8 s: the server's peak RSS growth per
//!    flooder. tabecho's must stay under its bound, 2 x --high-water (32 KiB) + 12 bytes.
//! 2. The mix: MIX flooders, MIX partial-frame holders (65,535 bytes without a TAB, held)
//!    and 100 healthy connections (`tabecho load`, pipeline 16, 20 s). tabecho's RSS growth
//!    must stay within its 256 MiB buffer budget + 10%, its buffered peak (from its
//!    summary) at most the budget, the healthy load lose nothing and see no corruption, and
//!    every holder it closed get the budget's error line.
//!
//! Both servers run with a 30 s idle timeout, so the hostile connections stay the whole
//! run. Loopback only; each process holds at most MIX + 164 descriptors.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use harness::proc::status_kb;
use harness::report::Summary;

use crate::report;
use harness::ServerProcess;

use crate::machine::{self, Outcome, Verdict};

/// tabecho's default --max-buffer-memory (256 MiB).
const BUDGET: u64 = 256 * 1024 * 1024;
/// tabecho's per-flooder bound: 2 x --high-water (32 KiB) + one 12-byte reply.
const PER_FLOODER_BOUND: u64 = 2 * 32 * 1024 + 12;

#[derive(Args)]
pub struct HostileArgs {
    /// Flooding connections of part 1.
    #[arg(default_value_t = 500)]
    flooders: usize,
    /// Flooders, and as many partial-frame holders, of the mix (part 2).
    #[arg(default_value_t = 5000)]
    mix: usize,
}

/// A server under test: tabecho (with its summary file) or tokio-echo.
struct Server {
    pid: u32,
    addr: SocketAddr,
    /// tabecho's process (None for tokio's, in `tokio`).
    tabecho: Option<ServerProcess>,
    tokio: Option<std::process::Child>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(c) = self.tokio.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn start(name: &str, bins: &(PathBuf, PathBuf), summary: &Path) -> Result<Server, String> {
    if name == "tabecho" {
        let mut c = Command::new(&bins.0);
        c.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--idle-timeout",
            "30s",
            "--summary-json",
        ])
        .arg(summary);
        let p = ServerProcess::start_ready(c, "info").map_err(|e| e.to_string())?;
        Ok(Server {
            pid: p.pid(),
            addr: p.addr.parse().map_err(|e| format!("{e}"))?,
            tabecho: Some(p),
            tokio: None,
        })
    } else {
        // tokio-echo has no readiness descriptor: a port chosen here, then connect until
        // it answers (at most 10 s).
        let port = crate::http::free_port().map_err(|e| e.to_string())?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let child = Command::new(&bins.1)
            .args([addr.to_string(), "30".into()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("tokio-echo: {e}"))?;
        let server = Server {
            pid: child.id(),
            addr,
            tabecho: None,
            tokio: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline {
                return Err("tokio-echo did not listen within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }
}

/// `tabecho load --faults partial`: `n` connections holding a partial frame (65,535
/// bytes, no TAB) for `secs`; their report on stdout.
fn partial(
    bin: &Path,
    addr: SocketAddr,
    n: usize,
    secs: u64,
) -> std::io::Result<std::process::Child> {
    faulty(bin, addr, n, secs, "partial", Stdio::piped())
}

/// `tabecho load` flooding `n` connections for `secs`.
fn flood(
    bin: &Path,
    addr: SocketAddr,
    n: usize,
    secs: u64,
) -> std::io::Result<std::process::Child> {
    faulty(bin, addr, n, secs, "flood", Stdio::null())
}

/// `tabecho load` with `n` connections of fault `kind`, one cycle each, for `secs`; its
/// JSON report to `stdout`.
fn faulty(
    bin: &Path,
    addr: SocketAddr,
    n: usize,
    secs: u64,
    kind: &str,
    stdout: Stdio,
) -> std::io::Result<std::process::Child> {
    Command::new(bin)
        .arg("load")
        .args([
            "--addr",
            &addr.to_string(),
            "-c",
            &n.to_string(),
            "--connect-rate",
            "5000",
        ])
        .args([
            "--faults",
            kind,
            "--fault-share",
            "1",
            "--fault-cycles",
            "1",
        ])
        .args([
            "-d",
            &format!("{secs}s"),
            "--drain",
            "0s",
            "--idle-timeout",
            "30s",
            "--json",
        ])
        .stdout(stdout)
        .stderr(Stdio::null())
        .spawn()
}

pub fn run(a: HostileArgs) -> Outcome {
    let need = (a.mix + 164) as u64;
    if let Err(e) = machine::raise_fd_limit(need) {
        return Outcome::CannotRun(e);
    }
    let bins = match (machine::release_binary(), machine::tokio_echo_binary()) {
        (Ok(t), Ok(k)) => (t, k),
        (Err(e), _) | (_, Err(e)) => return Outcome::CannotRun(e),
    };
    let out = match machine::out_dir("hostile") {
        Ok(o) => o,
        Err(e) => return Outcome::CannotRun(e),
    };
    let mut v = Verdict::default();

    println!(
        "== 1. {} flooding connections that never read, 8 s",
        a.flooders
    );
    println!(
        "{:<8} {:>12} {:>12} {:>14}",
        "server", "rss before", "rss peak", "per flooder"
    );
    for name in ["tabecho", "tokio"] {
        let server = match start(name, &bins, &out.join(format!("flood-{name}.json"))) {
            Ok(s) => s,
            Err(e) => return Outcome::CannotRun(e),
        };
        let before = status_kb(server.pid, "VmRSS");
        let _ = flood(&bins.0, server.addr, a.flooders, 8).and_then(|c| c.wait_with_output());
        let peak = status_kb(server.pid, "VmHWM");
        let per = peak.saturating_sub(before) * 1024 / a.flooders.max(1) as u64;
        println!("{name:<8} {before:>9} kB {peak:>9} kB {per:>11} B");
        if name == "tabecho" {
            v.check(
                per <= PER_FLOODER_BOUND,
                format!("tabecho: {per} B per flooder <= 2 x 32 KiB + 12 = {PER_FLOODER_BOUND} B"),
            );
        }
    }

    println!();
    println!(
        "== 2. {} flooders + {} partial-frame holders + 100 healthy connections (pipeline 16), 20 s",
        a.mix, a.mix
    );
    for name in ["tabecho", "tokio"] {
        let summary = out.join(format!("mix-{name}.json"));
        let mut server = match start(name, &bins, &summary) {
            Ok(s) => s,
            Err(e) => return Outcome::CannotRun(e),
        };
        let before = status_kb(server.pid, "VmRSS");
        let holders = partial(&bins.0, server.addr, a.mix, 22);
        let flooders = flood(&bins.0, server.addr, a.mix, 22);
        std::thread::sleep(Duration::from_secs(2));
        let healthy = Command::new(&bins.0)
            .arg("load")
            .args([
                "--addr",
                &server.addr.to_string(),
                "-c",
                "100",
                "-p",
                "16",
                "-d",
                "20s",
                "--json",
            ])
            .stderr(Stdio::null())
            .output();
        let peak = status_kb(server.pid, "VmHWM");
        let held = holders
            .and_then(|c| c.wait_with_output())
            .map_err(|e| e.to_string())
            .and_then(|o| report::parse(&String::from_utf8_lossy(&o.stdout)))
            .and_then(|r| {
                r.faults
                    .iter()
                    .find(|(k, _)| k.name() == "partial")
                    .map(|(_, c)| c.clone())
                    .ok_or_else(|| "no partial counts in the report".to_string())
            });
        if let Ok(f) = flooders {
            let _ = f.wait_with_output();
        }
        let growth_mib = peak.saturating_sub(before) / 1024;
        println!("-- {name}: rss {before} kB before, {peak} kB peak: growth {growth_mib} MiB");
        let report = healthy.map_err(|e| e.to_string()).and_then(|o| {
            report::parse(&String::from_utf8_lossy(&o.stdout)).map_err(|e| e.to_string())
        });
        match &report {
            Ok(r) => println!(
                "   healthy: {:.0} replies/s, {} sent, {} lost, {} corrupt, p99 {:.1} ms",
                r.replies_per_sec,
                r.frames_sent,
                r.lost,
                r.corrupt,
                r.p99_us as f64 / 1000.0
            ),
            Err(e) => println!("   healthy: no report: {e}"),
        }
        match &held {
            Ok(c) => println!(
                "   partial holders: {} held, {} closed with the budget's error line, {} closed \
                 without it, {} could not connect",
                c.cut_short, c.evicted, c.unexpected, c.connect_failed
            ),
            Err(e) => println!("   partial holders: {e}"),
        }
        if let Some(p) = server.tabecho.take() {
            p.signal("TERM");
            let _ = p.wait_exit_within(Duration::from_secs(30));
            let limit = BUDGET / 1024 / 1024 * 110 / 100;
            v.check(
                growth_mib <= limit,
                format!(
                    "tabecho: RSS growth {growth_mib} MiB <= budget 256 MiB + 10% = {limit} MiB"
                ),
            );
            match Summary::read(&summary) {
                Ok(s) => {
                    let peak = s.get("buffered_peak").unwrap_or(u64::MAX);
                    println!(
                        "   summary: buffered peak {peak} bytes, closed for the budget {}",
                        s.get("closed_memory_budget").unwrap_or(0)
                    );
                    v.check(
                        peak <= BUDGET,
                        format!("tabecho: buffered peak {peak} <= budget {BUDGET}"),
                    );
                }
                Err(e) => v.check(false, format!("tabecho's summary: {e}")),
            }
            v.check(
                report
                    .as_ref()
                    .is_ok_and(|r| r.lost == 0 && r.corrupt == 0 && r.frames_sent > 0),
                "tabecho: the healthy load lost nothing, 0 corrupt",
            );
            v.check(
                held.as_ref().is_ok_and(|c| c.unexpected == 0),
                "tabecho: every holder it closed got the budget's error line",
            );
        }
    }
    v.outcome()
}
