//! `cargo xtask per-source [--reconnect] [ATTACK] [LIMIT] [SECONDS]`: one source tries to
//! take every slot; --max-connections-per-source keeps it to its share, and another source
//! loses nothing (docs/PROTOCOL.md, "Connections per source"). Defaults 19000 1000 40.
//!
//! - The server: release `tabecho serve --threads 2 --max-connections-per-source LIMIT
//!   --metrics` on loopback, with the default 2 s idle timeout.
//! - The attacker (examples/per_source_attack.rs), from 127.0.0.2: tries to hold ATTACK
//!   connections for SECONDS, each sending an empty frame every 1.5 s; it counts every
//!   refusal line it reads and every reply. With --reconnect each refused slot connects
//!   again every 1.5 s (about 12,000 refusals a second).
//! - The victim, once the attacker holds its share: `tabecho load --source 127.0.0.3`, 100
//!   connections at 5,000 frames/s for 20 s, every reply verified.
//!
//! Checks: the victim loses nothing and is never refused; the attacker never holds more
//! than LIMIT at once; the refusals it read equal tabecho_rejected_total{reason=
//! "per_source"}; no refusal is global. And, if the attacker kept its schedule (no frame
//! 0.5 s late): it is served exactly LIMIT connections, all kept to the end, nothing owed
//! lost. On a busy machine its frames can leave late; the server then rightly reaps those
//! connections as idle, and this is reported instead of checked.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use harness::report::{metric_total, Summary};
use harness::ServerProcess;

use crate::machine::{self, Outcome, Verdict};
use crate::{http, report};

/// How long the victim runs, inside the attack.
const VICTIM_SECS: u64 = 20;

#[derive(Args)]
pub struct PerSourceArgs {
    /// Each refused slot of the attacker connects again every 1.5 s.
    #[arg(long)]
    reconnect: bool,
    /// Connections the attacker tries to hold.
    #[arg(default_value_t = 19_000)]
    attack: u64,
    /// The server's --max-connections-per-source.
    #[arg(default_value_t = 1_000)]
    limit: u64,
    /// Seconds of attack (at least 28: the victim runs 20 s inside it).
    #[arg(default_value_t = 40, value_parser = clap::value_parser!(u64).range(28..))]
    seconds: u64,
}

/// The attacker's `key=value ...` line, by key.
fn fields(text: &str) -> BTreeMap<String, String> {
    text.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn run(a: PerSourceArgs) -> Outcome {
    if let Err(e) = machine::raise_fd_limit(a.attack + 64) {
        return Outcome::CannotRun(format!("the attacker: {e}"));
    }
    let bin = match machine::release_binary() {
        Ok(b) => b,
        Err(e) => return Outcome::CannotRun(e),
    };
    let attacker_bin = match machine::release_example("per_source_attack") {
        Ok(b) => b,
        Err(e) => return Outcome::CannotRun(e),
    };
    let out = match machine::out_dir("per-source") {
        Ok(o) => o,
        Err(e) => return Outcome::CannotRun(e),
    };
    let summary_path = out.join("summary.json");
    let mut c = Command::new(&bin);
    c.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--threads",
        "2",
        "--metrics",
        "127.0.0.1:0",
    ])
    .args([
        "--max-connections-per-source",
        &a.limit.to_string(),
        "--summary-json",
    ])
    .arg(&summary_path);
    let server = match ServerProcess::start_ready(c, "info") {
        Ok(s) => s,
        Err(e) => return Outcome::CannotRun(e.to_string()),
    };
    let metrics = server.metrics_addr();
    let metric = |series: &str| -> u64 {
        http::get(metrics, "/metrics")
            .ok()
            .and_then(|(_, page)| metric_total(&page, series))
            .unwrap_or(0.0) as u64
    };
    println!(
        "server on {} (2 reactors, --max-connections-per-source {}), metrics on {metrics}",
        server.addr, a.limit
    );
    let mut attacker = Command::new(&attacker_bin);
    attacker
        .args(["--addr", &server.addr, "--source", "127.0.0.2"])
        .args(["--connections", &a.attack.to_string(), "--period", "1.5s"])
        .args(["--duration", &format!("{}s", a.seconds)])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if a.reconnect {
        attacker.arg("--reconnect");
    }
    let attacker = match attacker.spawn() {
        Ok(c) => c,
        Err(e) => return Outcome::CannotRun(format!("the attacker: {e}")),
    };
    println!(
        "attacker from 127.0.0.2: {} connections, an empty frame every 1.5 s, {} s{}",
        a.attack,
        a.seconds,
        if a.reconnect { ", reconnecting" } else { "" }
    );
    // The victim starts once the attacker holds its share (10 s bound).
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric("tabecho_connections_open") < a.limit && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "attacker holds {} connections; victim from 127.0.0.3: 100 connections, 5000 frames/s, {VICTIM_SECS} s",
        metric("tabecho_connections_open")
    );
    let victim = Command::new(&bin)
        .args([
            "load",
            "--addr",
            &server.addr,
            "--source",
            "127.0.0.3",
            "--connections",
            "100",
        ])
        .args(["--threads", "1", "--pipeline", "4", "--rate", "5000"])
        .args(["--duration", &format!("{VICTIM_SECS}s"), "--json"])
        .stderr(Stdio::null())
        .output();
    let attacker = attacker.wait_with_output();
    let per_source = metric("tabecho_rejected_total{reason=\"per_source\"}");
    let global = metric("tabecho_rejected_total{reason=\"global\"}");
    server.signal("TERM");
    let log = server
        .wait_exit_within(Duration::from_secs(30))
        .map(|(_, log)| log)
        .unwrap_or_default();

    let mut v = Verdict::default();
    let (attacker_ok, att) = match &attacker {
        Ok(o) => (
            o.status.success(),
            fields(&String::from_utf8_lossy(&o.stdout)),
        ),
        Err(_) => (false, BTreeMap::new()),
    };
    let f = |k: &str| att.get(k).and_then(|v| v.parse::<u64>().ok());
    println!(
        "attacker: {}",
        att.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let victim = victim.map_err(|e| e.to_string()).and_then(|o| {
        Ok((
            o.status.code(),
            report::parse(&String::from_utf8_lossy(&o.stdout))?,
        ))
    });
    match &victim {
        Ok((status, r)) => {
            println!("victim:   exit {status:?}; {}", report::line(r));
            v.check(
                *status == Some(0) && r.verified(),
                format!(
                    "victim verified, nothing lost (frames_answered {} of {}, lost {})",
                    r.frames_answered, r.frames_sent, r.lost
                ),
            );
            v.check(
                r.error_replies == 0 && r.server_closes == 0 && r.established == 100,
                format!(
                    "victim never refused (established {} of 100, error replies {}, server closes {})",
                    r.established, r.error_replies, r.server_closes
                ),
            );
        }
        Err(e) => v.check(false, format!("victim: {e}")),
    }
    if let Ok(s) = Summary::read(&summary_path) {
        println!(
            "server:   accepted {}, rejected per source {}, rejected {}, reaped idle {}, frames {}",
            s.get("accepted").unwrap_or(0),
            s.get("rejected_per_source").unwrap_or(0),
            s.get("rejected").unwrap_or(0),
            s.get("reaped_idle").unwrap_or(0),
            s.get("frames").unwrap_or(0)
        );
    }
    v.check(
        f("held_max") == Some(a.limit),
        format!(
            "attacker held at most {} at once (held at most {:?})",
            a.limit,
            f("held_max")
        ),
    );
    let clean = format!(
        "lost {:?}, unsettled {:?}, closed unexpectedly {:?}, frames late by 500 ms or more {:?}",
        f("lost"),
        f("unsettled"),
        f("closed_unexpectedly"),
        f("late_frames")
    );
    let served = format!(
        "served {:?}, held at the end {:?}",
        f("served"),
        f("held_end")
    );
    if f("late_frames") == Some(0) {
        v.check(
            attacker_ok,
            format!("attacker's run clean, nothing owed lost, no unexpected close ({clean})"),
        );
        v.check(
            f("served") == Some(a.limit) && f("held_end") == Some(a.limit),
            format!(
                "attacker served exactly {}, all held to the end ({served})",
                a.limit
            ),
        );
    } else {
        println!(
            "      attacker (not checked: some of its frames left 0.5 s or more late, this machine \
             being busy, and the server may rightly reap such connections as idle): {clean}; {served}"
        );
    }
    v.check(
        f("refused").is_some_and(|r| r == per_source),
        format!(
            "refusals counted exactly (attacker read {:?} refusal lines; tabecho_rejected_total{{reason=\"per_source\"}} = {per_source})",
            f("refused")
        ),
    );
    v.check(
        global == 0,
        format!("no global refusal (tabecho_rejected_total{{reason=\"global\"}} = {global})"),
    );
    let warned = log
        .iter()
        .filter(|l| l.contains("refusing connections from 127.0.0.2"))
        .count();
    println!("      log: {warned} 'refusing connections from 127.0.0.2' lines in {} s (at most one per 10 s)", a.seconds);
    v.outcome()
}
