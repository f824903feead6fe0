//! `cargo xtask haproxy-bench [ROUNDS]`: what HAProxy in front costs per frame: one
//! tabecho driven directly, then through HAProxy (deploy/haproxy.cfg, its three server
//! lines pointed at that one instance, so both paths end in the same process), side by
//! side in one run, same load, on loopback. For pipeline 1 and 16, ROUNDS times (default
//! 2), alternating direct and through HAProxy:
//! - a verified closed-loop load of known size (`tabecho load -t 1 -c 100 -p P --frames
//!   N`, N = 1,000 per connection at pipeline 1, 10,000 at 16); the CPU of the server and
//!   of HAProxy from /proc/PID/stat before and after, divided by the frames answered;
//! - an open loop at 10,000 frames/s for 5 s: latency p50/p99 at the same offered load.
//!
//! Prints one line per run and the medians' ratios; PASS when every load was verified.
//! HAProxy is installed with apt-get if missing.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::report::{self, LoadReport};
use clap::Args;
use harness::proc::cpu_seconds;

use crate::echo_server::EchoServer;
use crate::machine::{self, Outcome, Verdict};
use crate::{haproxy, http};

/// Connections of every load.
const CONNS: u64 = 100;

#[derive(Args)]
pub struct HaproxyBenchArgs {
    /// Rounds of each closed-loop measurement (the median is printed).
    #[arg(default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
    rounds: u64,
}

/// HAProxy, killed on drop, with its stats socket's directory.
struct Proxy(Child, std::path::PathBuf);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

/// One closed-loop run: CPU µs per frame of the server and of HAProxy, and the report.
struct Closed {
    server_us: f64,
    proxy_us: f64,
    report: LoadReport,
}

fn load(bin: &Path, addr: SocketAddr, args: &[&str]) -> Result<LoadReport, String> {
    let conns = CONNS.to_string();
    // The server trusts 127.0.0.1, HAProxy's address, to send PROXY headers
    // (deploy/haproxy.cfg's send-proxy-v2); the load comes from another address, so its
    // direct connections are plain clients.
    let all: Vec<&str> = ["-t", "1", "-c", conns.as_str(), "--source", "127.0.0.2"]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
    report::run(bin, &addr.to_string(), &all)
}

pub fn run(a: HaproxyBenchArgs) -> Outcome {
    if let Err(e) = machine::need_tool("haproxy", "haproxy") {
        return Outcome::CannotRun(e);
    }
    let bin = match machine::release_binary() {
        Ok(b) => b,
        Err(e) => return Outcome::CannotRun(e),
    };
    let out = match machine::out_dir("haproxy-bench") {
        Ok(o) => o,
        Err(e) => return Outcome::CannotRun(e),
    };
    let server = match EchoServer::tabecho(
        &[],
        &bin,
        &[
            "--idle-timeout",
            "60s",
            "--proxy-protocol-from",
            "127.0.0.1",
        ],
    ) {
        Ok(s) => s,
        Err(e) => return Outcome::CannotRun(e),
    };
    let direct = server.addr;
    let port = match http::free_port() {
        Ok(p) => p,
        Err(e) => return Outcome::CannotRun(e.to_string()),
    };
    let proxied: SocketAddr = ([127, 0, 0, 1], port).into();
    let run_dir = std::env::temp_dir().join(format!("tbx-haproxy-bench-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&run_dir);
    let log = std::fs::File::create(out.join("haproxy.log"));
    let Ok(log) = log else {
        return Outcome::CannotRun("cannot write haproxy.log".into());
    };
    let mut command = Command::new("haproxy");
    command
        .args(["-db", "-f"])
        .arg(haproxy::config(&machine::workspace_root()))
        .env("CLUSTER_RUN", &run_dir)
        .env("CLUSTER_PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(log);
    for i in 1..=3 {
        command.env(format!("TABECHO_PORT{i}"), direct.port().to_string());
    }
    let proxy = match command.spawn() {
        Ok(c) => Proxy(c, run_dir),
        Err(e) => return Outcome::CannotRun(format!("haproxy: {e}")),
    };
    let stats = haproxy::Stats {
        socket: proxy.1.join("haproxy.sock"),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(TcpStream::connect(proxied).is_ok()
        && stats.get("tabecho1", "status").starts_with("UP"))
    {
        if Instant::now() > deadline {
            return Outcome::CannotRun(format!(
                "HAProxy does not answer on {proxied} with its servers UP"
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let proxy_pid = proxy.0.id();
    println!("tabecho {direct}, HAProxy {proxied} -> {direct}; {CONNS} connections, 32-byte frames, load -t 1");
    let mut v = Verdict::default();
    let mut unverified = Vec::new();
    let mut rows: Vec<(&str, u64, Closed)> = Vec::new();
    let mut opens: Vec<(&str, u64, LoadReport)> = Vec::new();
    for p in [1u64, 16] {
        let n = if p == 1 { 1_000 } else { 10_000 };
        for _ in 0..a.rounds {
            for (name, addr) in [("direct", direct), ("haproxy", proxied)] {
                let (s0, h0) = (cpu_seconds(server.pid), cpu_seconds(proxy_pid));
                let r = load(
                    &bin,
                    addr,
                    &[
                        "-p",
                        &p.to_string(),
                        "--frames",
                        &n.to_string(),
                        "-d",
                        "120s",
                    ],
                );
                let (s1, h1) = (cpu_seconds(server.pid), cpu_seconds(proxy_pid));
                match r {
                    Ok(r)
                        if r.frames_answered == CONNS * n
                            && r.lost + r.corrupt + r.unexpected == 0 =>
                    {
                        let per = |t: f64| t * 1e6 / r.frames_answered as f64;
                        let c = Closed {
                            server_us: per(s1 - s0),
                            proxy_us: per(h1 - h0),
                            report: r,
                        };
                        println!(
                            "{name} p{p}: {} frames, server {:.3} µs, haproxy {:.3} µs, total {:.3} µs per frame; p50 {:.3} ms, p99 {:.3} ms",
                            c.report.frames_answered,
                            c.server_us,
                            c.proxy_us,
                            c.server_us + c.proxy_us,
                            c.report.p50_us as f64 / 1000.0,
                            c.report.p99_us as f64 / 1000.0
                        );
                        rows.push((name, p, c));
                    }
                    Ok(r) => unverified.push(format!("{name} p{p}: {}", report::line(&r))),
                    Err(e) => unverified.push(format!("{name} p{p}: {e}")),
                }
            }
        }
        for (name, addr) in [("direct", direct), ("haproxy", proxied)] {
            match load(
                &bin,
                addr,
                &["-p", &p.to_string(), "--rate", "10000", "-d", "5s"],
            ) {
                Ok(r) => {
                    if r.lost + r.corrupt > 0 {
                        unverified.push(format!("open loop {name} p{p}: {}", report::line(&r)));
                    }
                    opens.push((name, p, r));
                }
                Err(e) => unverified.push(format!("open loop {name} p{p}: {e}")),
            }
        }
    }

    println!();
    println!(
        "CPU per frame, µs (median of {}), closed loop --frames; latency p50/p99 in ms",
        a.rounds
    );
    println!(
        "{:8} {:>3} {:>8} {:>8} {:>8} {:>16} {:>20}",
        "path", "p", "server", "haproxy", "total", "closed p50/p99", "open 10k/s p50/p99"
    );
    let mut total = std::collections::BTreeMap::new();
    for name in ["direct", "haproxy"] {
        for p in [1u64, 16] {
            let rs: Vec<&Closed> = rows
                .iter()
                .filter(|r| r.0 == name && r.1 == p)
                .map(|r| &r.2)
                .collect();
            if rs.is_empty() {
                continue;
            }
            let s = report::median(rs.iter().map(|c| c.server_us).collect());
            let h = report::median(rs.iter().map(|c| c.proxy_us).collect());
            let t = report::median(rs.iter().map(|c| c.server_us + c.proxy_us).collect());
            let p50 = report::median(rs.iter().map(|c| c.report.p50_us as f64).collect());
            let p99 = report::median(rs.iter().map(|c| c.report.p99_us as f64).collect());
            let open =
                opens
                    .iter()
                    .find(|o| o.0 == name && o.1 == p)
                    .map_or("-".to_string(), |o| {
                        format!(
                            "{:.3}/{:.3}",
                            o.2.p50_us as f64 / 1000.0,
                            o.2.p99_us as f64 / 1000.0
                        )
                    });
            total.insert((name, p), t);
            println!(
                "{name:8} {p:>3} {s:8.3} {h:8.3} {t:8.3} {:>16} {open:>20}",
                format!("{:.3}/{:.3}", p50 / 1000.0, p99 / 1000.0)
            );
        }
    }
    for p in [1u64, 16] {
        if let (Some(d), Some(h)) = (total.get(&("direct", p)), total.get(&("haproxy", p))) {
            println!(
                "pipeline {p}: through HAProxy / direct, CPU per frame (server + haproxy): {:.2}",
                h / d
            );
        }
    }
    for u in &unverified {
        println!("   not verified: {u}");
    }
    v.check(
        unverified.is_empty(),
        "every load verified (all frames answered, none lost or corrupt)",
    );
    drop(proxy);
    server.stop(Duration::from_secs(10));
    v.outcome()
}
