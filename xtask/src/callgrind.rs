//! `cargo xtask callgrind [--pipeline N] [--metrics] [FRAMES]`: instructions per frame at
//! 10 and at 1,000 connections, counted by callgrind, for tabecho and, beside it, the
//! byte-echo ceiling (benches/ceiling); with `--metrics`, tabecho with `--metrics
//! 127.0.0.1:0` against tabecho without it (the metrics' cost on the frame path).
//!
//! Instructions are repeatable where wall time is not. For each connection count the
//! server runs under `valgrind --tool=callgrind` twice, answering FRAMES and then 2 x
//! FRAMES frames (32-byte payloads, driven by `tabecho load --frames`); the difference of
//! the two totals divided by FRAMES is the marginal cost of a frame, start-up, accepts and
//! shutdown cancelled out. User-space instructions only (`cargo xtask syscalls` shows the
//! kernel's part). PASS when tabecho's cost per frame does not grow with connections
//! (1000/10 at most 1.1: the timer wheel does not scan), and with `--metrics` when the
//! metrics add at most 3%. Installs valgrind with apt-get if missing.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use clap::Args;

use crate::echo_server::EchoServer;
use crate::machine::{self, Outcome, Verdict};

#[derive(Args)]
pub struct CallgrindArgs {
    /// Frames in flight per connection.
    #[arg(long, default_value_t = 1)]
    pipeline: u64,
    /// Compare tabecho --metrics with tabecho (instead of with the ceiling).
    #[arg(long)]
    metrics: bool,
    /// Frames of the shorter run (the longer answers twice as many).
    #[arg(default_value_t = 100_000)]
    frames: u64,
}

/// One server under callgrind answering `total` frames over `conns` connections; its
/// instruction total (Ir).
fn measure(
    server: &str,
    bins: &(std::path::PathBuf, std::path::PathBuf),
    conns: u64,
    total: u64,
    pipeline: u64,
    out: &Path,
) -> Result<u64, String> {
    let file = out.join(format!("callgrind.{server}.{conns}.{total}.out"));
    let _ = std::fs::remove_file(&file);
    let out_arg = format!("--callgrind-out-file={}", file.display());
    let wrapper = ["valgrind", "--tool=callgrind", out_arg.as_str()];
    let s = match server {
        "ceiling" => EchoServer::other(&wrapper, &bins.1, &[], Duration::from_secs(60))?,
        "metrics" => EchoServer::tabecho(
            &wrapper,
            &bins.0,
            &["--idle-timeout", "600s", "--metrics", "127.0.0.1:0"],
        )?,
        _ => EchoServer::tabecho(&wrapper, &bins.0, &["--idle-timeout", "600s"])?,
    };
    let mut load = Command::new(&bins.0);
    load.args([
        "load",
        "--addr",
        &s.addr.to_string(),
        "--connections",
        &conns.to_string(),
    ])
    .args([
        "--threads",
        "1",
        "--pipeline",
        &pipeline.to_string(),
        "--size",
        "32",
    ])
    .args([
        "--frames",
        &(total / conns).to_string(),
        "--duration",
        "600s",
    ])
    .args(["--connect-timeout", "60s", "--drain", "60s"])
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    if server == "ceiling" {
        load.arg("--raw");
    }
    let status = load.status().map_err(|e| format!("tabecho load: {e}"))?;
    if !status.success() {
        return Err(format!(
            "load failed: {server}, {conns} connections ({status})"
        ));
    }
    // SIGTERM: tabecho shuts down cleanly, the ceiling dies; callgrind writes its totals.
    s.stop(Duration::from_secs(120));
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    text.lines()
        .find_map(|l| l.strip_prefix("summary: "))
        .and_then(|n| n.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("no summary line in {}", file.display()))
}

pub fn run(a: CallgrindArgs) -> Outcome {
    if let Err(e) = machine::need_tool("valgrind", "valgrind") {
        return Outcome::CannotRun(e);
    }
    let bins = match (machine::release_binary(), machine::ceiling_binary()) {
        (Ok(t), Ok(c)) => (t, c),
        (Err(e), _) | (_, Err(e)) => return Outcome::CannotRun(e),
    };
    let out = match machine::out_dir("callgrind") {
        Ok(o) => o,
        Err(e) => return Outcome::CannotRun(e),
    };
    let servers = if a.metrics {
        ["tabecho", "metrics"]
    } else {
        ["tabecho", "ceiling"]
    };
    println!("pipeline {}, 32-byte frames", a.pipeline);
    println!(
        "{:<8} {:<12} {:<14} {:<14} instructions/frame",
        "server",
        "connections",
        format!("Ir({})", a.frames),
        format!("Ir({})", 2 * a.frames)
    );
    let mut per_frame = BTreeMap::new();
    for server in servers {
        for conns in [10u64, 1000] {
            let one = measure(server, &bins, conns, a.frames, a.pipeline, &out);
            let two = measure(server, &bins, conns, 2 * a.frames, a.pipeline, &out);
            let (one, two) = match (one, two) {
                (Ok(one), Ok(two)) => (one, two),
                (Err(e), _) | (_, Err(e)) => return Outcome::CannotRun(e),
            };
            let per = (two.saturating_sub(one)) as f64 / a.frames as f64;
            per_frame.insert((server, conns), per);
            println!("{server:<8} {conns:<12} {one:<14} {two:<14} {per:.0}");
        }
    }
    let mut v = Verdict::default();
    let t = |s, c| per_frame[&(s, c)];
    let growth = t("tabecho", 1000) / t("tabecho", 10);
    v.check(
        growth <= 1.1,
        format!("tabecho 1000/10 connections: {growth:.3} (target <= 1.1)"),
    );
    if a.metrics {
        let (r10, r1000) = (
            t("metrics", 10) / t("tabecho", 10),
            t("metrics", 1000) / t("tabecho", 1000),
        );
        v.check(
            r10 <= 1.03 && r1000 <= 1.03,
            format!("--metrics on / off: {r10:.4} at 10 connections, {r1000:.4} at 1000 (target <= 1.03)"),
        );
    } else {
        println!(
            "tabecho / ceiling: {:.3} at 10 connections, {:.3} at 1000",
            t("tabecho", 10) / t("ceiling", 10),
            t("tabecho", 1000) / t("ceiling", 1000)
        );
    }
    v.outcome()
}
