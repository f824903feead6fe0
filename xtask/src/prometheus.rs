//! `cargo xtask prometheus`: a real Prometheus scrapes tabecho; the counter it stores must
//! equal a verified load's frames, and `promtool check metrics` must find nothing.
//!
//! A release `tabecho serve --metrics` on loopback and a Prometheus of this check's own (a
//! temporary config scraping every second, its TSDB in a temporary directory, its web port
//! on 127.0.0.1; the Debian service is not used). `tabecho load --frames` sends FRAMES
//! frames in all (10 connections, pipeline 32, every reply verified); after a scrape,
//! tabecho_frames_total is read back through the HTTP query API. Debian's prometheus
//! package (which brings promtool) is installed if missing.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use harness::ServerProcess;

use crate::http;
use crate::machine::{self, Outcome, Verdict};

/// Connections of the load (FRAMES is split evenly over them).
const CONNECTIONS: u64 = 10;

#[derive(Args)]
pub struct PrometheusArgs {
    /// Frames in all (a multiple of 10).
    #[arg(default_value_t = 100_000)]
    frames: u64,
}

/// A child killed on drop.
struct Guard(std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn run(a: PrometheusArgs) -> Outcome {
    if !a.frames.is_multiple_of(CONNECTIONS) || a.frames == 0 {
        return Outcome::CannotRun(format!(
            "FRAMES must be a positive multiple of {CONNECTIONS}"
        ));
    }
    for tool in ["prometheus", "promtool"] {
        if let Err(e) = machine::need_tool(tool, "prometheus") {
            return Outcome::CannotRun(e);
        }
    }
    let bin = match machine::release_binary() {
        Ok(b) => b,
        Err(e) => return Outcome::CannotRun(e),
    };
    let out = match machine::out_dir("prometheus") {
        Ok(o) => o,
        Err(e) => return Outcome::CannotRun(e),
    };
    let mut command = Command::new(&bin);
    command.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
    ]);
    let server = match ServerProcess::start_ready(command, "info") {
        Ok(s) => s,
        Err(e) => return Outcome::CannotRun(e.to_string()),
    };
    let metrics = server.metrics_addr();
    println!(
        "tabecho on {}, metrics on http://{metrics}/metrics",
        server.addr
    );

    let port = match http::free_port() {
        Ok(p) => p,
        Err(e) => return Outcome::CannotRun(e.to_string()),
    };
    let config = out.join("prometheus.yml");
    let yaml = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: \
         tabecho\n    static_configs:\n      - targets: ['{metrics}']\n"
    );
    if let Err(e) = std::fs::write(&config, yaml) {
        return Outcome::CannotRun(e.to_string());
    }
    let log = match std::fs::File::create(out.join("prometheus.log")) {
        Ok(l) => l,
        Err(e) => return Outcome::CannotRun(e.to_string()),
    };
    let prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            out.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn();
    let _prometheus = match prometheus {
        Ok(p) => Guard(p),
        Err(e) => return Outcome::CannotRun(format!("prometheus: {e}")),
    };
    let api: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !matches!(http::get(api, "/-/ready"), Ok((200, _))) {
        if Instant::now() > deadline {
            return Outcome::CannotRun(format!(
                "Prometheus did not start (see {})",
                out.join("prometheus.log").display()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("Prometheus on http://{api}, scraping every second");

    let mut v = Verdict::default();
    let load = Command::new(&bin)
        .arg("load")
        .args([
            "--addr",
            &server.addr,
            "--connections",
            &CONNECTIONS.to_string(),
        ])
        .args(["--threads", "1", "--pipeline", "32", "--size", "32"])
        .args([
            "--frames",
            &(a.frames / CONNECTIONS).to_string(),
            "--duration",
            "600s",
            "--json",
        ])
        .stderr(Stdio::null())
        .output();
    match load {
        Ok(o) => {
            let report = crate::report::parse(&String::from_utf8_lossy(&o.stdout));
            let line = report
                .as_ref()
                .map_or_else(|e| e.to_string(), crate::report::line);
            v.check(
                o.status.success() && report.is_ok_and(|r| r.frames_answered == a.frames),
                format!(
                    "tabecho load: {} frames verified (exit {:?}; {line})",
                    a.frames,
                    o.status.code()
                ),
            );
        }
        Err(e) => return Outcome::CannotRun(format!("tabecho load: {e}")),
    }

    // A scrape after the load: the stored value reaches the final count within a few
    // scrape intervals (bounded: 20 s).
    let query = |expr: &str| -> Option<String> {
        let (_, body) =
            http::get(api, &format!("/api/v1/query?query={}", http::encode(expr))).ok()?;
        let json: serde_json::Value = serde_json::from_str(&body).ok()?;
        json["data"]["result"][0]["value"][1]
            .as_str()
            .map(str::to_string)
    };
    let want = a.frames.to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut value = None;
    while Instant::now() < deadline {
        value = query("sum(tabecho_frames_total{job=\"tabecho\"})");
        if value.as_deref() == Some(want.as_str()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    v.check(
        value.as_deref() == Some(want.as_str()),
        format!(
            "Prometheus stored tabecho_frames_total = {want} (read back {} via its query API)",
            value.as_deref().unwrap_or("nothing")
        ),
    );
    let up = query("up{job=\"tabecho\"}");
    v.check(
        up.as_deref() == Some("1"),
        format!("scrape target up (up = {up:?})"),
    );
    let eof = query("sum(tabecho_closed_total{job=\"tabecho\",reason=\"eof\"})");
    println!("      tabecho_closed_total{{reason=\"eof\"}} = {eof:?} (the load's {CONNECTIONS} connections)");
    let p99 = query(
        "histogram_quantile(0.99, sum by (le) (tabecho_reactor_turn_seconds_bucket{job=\"tabecho\"}))",
    );
    println!("      reactor turn p99 (histogram_quantile over all turns) = {p99:?} s");

    match http::get(metrics, "/metrics") {
        Ok((200, page)) => {
            let lint = Command::new("promtool")
                .args(["check", "metrics"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .and_then(|mut c| {
                    c.stdin.take().expect("piped").write_all(page.as_bytes())?;
                    c.wait_with_output()
                });
            match lint {
                Ok(o) => {
                    let said = String::from_utf8_lossy(&o.stdout).to_string()
                        + &String::from_utf8_lossy(&o.stderr);
                    let said = if said.trim().is_empty() {
                        "no findings".into()
                    } else {
                        said.trim().to_string()
                    };
                    v.check(
                        o.status.success(),
                        format!("promtool check metrics ({said})"),
                    );
                }
                Err(e) => v.check(false, format!("promtool check metrics: {e}")),
            }
        }
        other => v.check(false, format!("GET /metrics: {other:?}")),
    }
    v.outcome()
}
