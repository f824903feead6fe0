//! `cargo xtask syscalls [CONNECTIONS] [PIPELINE] [SECONDS]`: syscalls per frame, tabecho
//! beside the byte-echo ceiling, for the same load. The server's syscalls are counted with
//! perf's syscall tracepoints (`perf stat -e 'syscalls:sys_enter_*' -p PID`: low overhead,
//! unlike strace) while `tabecho load` drives it, and divided by the frames answered.
//! PASS when both loads were verified and perf counted. Installs linux-perf if missing.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::report;
use clap::Args;

use crate::echo_server::EchoServer;
use crate::machine::{self, Outcome, Verdict};

/// The syscalls counted.
const EVENTS: &[&str] = &[
    "epoll_wait",
    "epoll_pwait",
    "read",
    "recvfrom",
    "write",
    "sendto",
    "writev",
    "accept4",
    "epoll_ctl",
    "close",
    "clock_gettime",
];

#[derive(Args)]
pub struct SyscallsArgs {
    /// Connections of the load.
    #[arg(default_value_t = 100)]
    connections: u64,
    /// Frames in flight per connection.
    #[arg(default_value_t = 1)]
    pipeline: u64,
    /// Seconds of load.
    #[arg(default_value_t = 5)]
    seconds: u64,
}

pub fn run(a: SyscallsArgs) -> Outcome {
    if let Err(e) = machine::need_tool("perf", "linux-perf") {
        return Outcome::CannotRun(e);
    }
    let bins = match (machine::release_binary(), machine::ceiling_binary()) {
        (Ok(t), Ok(c)) => (t, c),
        (Err(e), _) | (_, Err(e)) => return Outcome::CannotRun(e),
    };
    let out = match machine::out_dir("syscalls") {
        Ok(o) => o,
        Err(e) => return Outcome::CannotRun(e),
    };
    let events: Vec<String> = EVENTS
        .iter()
        .map(|e| format!("syscalls:sys_enter_{e}"))
        .collect();
    println!(
        "connections {}, pipeline {}, {} s, 32-byte frames",
        a.connections, a.pipeline, a.seconds
    );
    let mut v = Verdict::default();
    for name in ["tabecho", "ceiling"] {
        let server = if name == "tabecho" {
            EchoServer::tabecho(&[], &bins.0, &["--idle-timeout", "60s"])
        } else {
            EchoServer::other(&[], &bins.1, &[], Duration::from_secs(10))
        };
        let server = match server {
            Ok(s) => s,
            Err(e) => return Outcome::CannotRun(e),
        };
        let counts = out.join(format!("{name}.perf"));
        let perf = Command::new("perf")
            .args([
                "stat",
                "-x,",
                "-e",
                &events.join(","),
                "-p",
                &server.pid.to_string(),
                "-o",
            ])
            .arg(&counts)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(perf) = perf else {
            return Outcome::CannotRun("cannot start perf".into());
        };
        let mut load = Command::new(&bins.0);
        load.args([
            "load",
            "--addr",
            &server.addr.to_string(),
            "-c",
            &a.connections.to_string(),
        ])
        .args([
            "-p",
            &a.pipeline.to_string(),
            "-d",
            &format!("{}s", a.seconds),
        ])
        .args(["--threads", "1", "--json"])
        .stderr(Stdio::null());
        if name == "ceiling" {
            load.arg("--raw");
        }
        let report = load.output().map_err(|e| e.to_string()).and_then(|o| {
            report::parse(&String::from_utf8_lossy(&o.stdout)).map_err(|e| e.to_string())
        });
        let _ = harness::process::signal(perf.id(), "INT");
        let _ = perf.wait_with_output();
        server.stop(Duration::from_secs(10));
        let frames = match &report {
            Ok(r) => {
                v.check(
                    r.verified(),
                    format!("{name}: load verified ({})", report::line(r)),
                );
                r.frames_answered
            }
            Err(e) => {
                v.check(false, format!("{name}: load: {e}"));
                continue;
            }
        };
        // perf stat -x,: "count,unit,event,..." per line.
        let text = std::fs::read_to_string(&counts).unwrap_or_default();
        let by: BTreeMap<String, u64> = text
            .lines()
            .filter_map(|l| {
                let mut f = l.split(',');
                let count = f.next()?.parse().ok()?;
                let event = f.nth(1)?.strip_prefix("syscalls:sys_enter_")?;
                Some((event.to_string(), count))
            })
            .collect();
        let total: u64 = by.values().sum();
        let parts: Vec<String> = by
            .iter()
            .filter(|(_, &n)| n > 0)
            .map(|(k, &n)| format!("{k} {:.3}", n as f64 / frames.max(1) as f64))
            .collect();
        println!(
            "{name:<8} frames {frames:<9} syscalls/frame {:.3}  ( {} )",
            total as f64 / frames.max(1) as f64,
            parts.join(" ")
        );
        v.check(
            total > 0,
            format!("{name}: perf counted its syscalls ({total})"),
        );
    }
    v.outcome()
}
