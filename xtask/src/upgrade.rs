//! `cargo xtask upgrade`: a loaded release server upgraded in place (SIGUSR2), and who
//! noticed. Short connections (one frame each, `tabecho load --churn`) at a steady rate
//! and long-lived ones under `tabecho load --rate`; SIGUSR2 in the middle. Every short connection must be served:
//! none refused, reset, wrong or timed out. The old process must exit 0 after its drain;
//! the new one (its child, found in /proc) serves on and stops on SIGTERM.
//! The long-lived connections' report is printed: the old process's busy connections end
//! at --shutdown-grace with the shutdown's lingering close (server_closes), by design.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use harness::report::Summary;

use crate::report;
use harness::ServerProcess;

use crate::machine::{self, Outcome, Verdict};

/// The sizes of an upgrade run.
#[derive(Args)]
pub struct UpgradeArgs {
    /// Seconds of traffic.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Seconds in when SIGUSR2 is sent.
    #[arg(long, default_value_t = 3)]
    upgrade_at: u64,
    /// Short connections (one frame each) per second.
    #[arg(long, default_value_t = 300)]
    short_rate: u64,
    /// Long-lived connections (tabecho load).
    #[arg(long, default_value_t = 200)]
    long: u64,
    /// Frames per second over the long-lived connections.
    #[arg(long, default_value_t = 2000)]
    long_rate: u64,
    /// The server's --shutdown-grace.
    #[arg(long, default_value = "3s")]
    grace: String,
    /// The server's --idle-timeout.
    #[arg(long, default_value = "2s")]
    idle: String,
    /// The server's --threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

/// A process that is not our child (the upgrade's new process, reparented when the old
/// one exits): SIGTERM on drop, then SIGKILL if it is still there after 5 s.
struct Orphan(Option<u32>);

impl Drop for Orphan {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = harness::process::signal(pid, "TERM");
            if !wait_gone(pid, Duration::from_secs(5)) {
                let _ = harness::process::signal(pid, "KILL");
            }
        }
    }
}

/// Waits at most `within` for process `pid` to be gone; whether it is.
fn wait_gone(pid: u32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        // A zombie is gone for our purpose: it serves nothing.
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if state
            .rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'))
        {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

pub fn run(a: UpgradeArgs) -> Outcome {
    let bin = match machine::release_binary() {
        Ok(bin) => bin,
        Err(e) => return Outcome::CannotRun(e),
    };
    let out = match machine::out_dir("upgrade") {
        Ok(out) => out,
        Err(e) => return Outcome::CannotRun(e),
    };
    let summary_path = out.join("summary.json");
    let mut command = Command::new(&bin);
    command
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--threads",
            &a.threads.to_string(),
        ])
        .args(["--idle-timeout", &a.idle, "--shutdown-grace", &a.grace])
        .arg("--summary-json")
        .arg(&summary_path);
    let server = match ServerProcess::start_ready(command, "info") {
        Ok(s) => s,
        Err(e) => return Outcome::CannotRun(e.to_string()),
    };
    let addr: SocketAddr = match server.addr.parse() {
        Ok(a) => a,
        Err(e) => return Outcome::CannotRun(format!("{}: {e}", server.addr)),
    };
    let old_pid = server.pid();
    println!("upgrade: server PID {old_pid} on {addr}");

    let short = Command::new(&bin)
        .arg("load")
        .args([
            "--addr",
            &addr.to_string(),
            "-c",
            "0",
            "--churn",
            &a.short_rate.to_string(),
        ])
        .args([
            "-d",
            &format!("{}s", a.duration),
            "--connect-timeout",
            "2s",
            "--json",
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .stdout(Stdio::piped())
        .spawn();
    let short = match short {
        Ok(s) => s,
        Err(e) => return Outcome::CannotRun(format!("tabecho load --churn: {e}")),
    };
    let load = Command::new(&bin)
        .arg("load")
        .args(["--addr", &addr.to_string(), "-c", &a.long.to_string()])
        .args([
            "--rate",
            &a.long_rate.to_string(),
            "-d",
            &format!("{}s", a.duration),
        ])
        .args(["--connect-rate", "1000", "--json"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .stdout(Stdio::piped())
        .spawn();
    let load = match load {
        Ok(l) => l,
        Err(e) => return Outcome::CannotRun(format!("tabecho load: {e}")),
    };

    std::thread::sleep(Duration::from_secs(a.upgrade_at));
    let usr2 = Instant::now();
    println!("upgrade: SIGUSR2 to PID {old_pid} at {} s", a.upgrade_at);
    server.signal("USR2");
    // The new process is the old one's child; found before the old one exits.
    let mut new = Orphan(None);
    while new.0.is_none() && usr2.elapsed() < Duration::from_secs(10) {
        new.0 = harness::proc::children(old_pid).first().copied();
        std::thread::sleep(Duration::from_millis(5));
    }
    let started_after = usr2.elapsed();
    let old_exit = server.wait_exit_within(Duration::from_secs(30));
    let old_exited_after = usr2.elapsed();
    let old_summary = Summary::read(&summary_path);
    let short = short
        .wait_with_output()
        .map_err(|e| e.to_string())
        .and_then(|o| report::parse(&String::from_utf8_lossy(&o.stdout)));
    let load = load.wait_with_output();

    println!();
    println!(
        "== upgrade in place: {} long-lived connections at {} frames/s, short connections at \
         {}/s, {} s, SIGUSR2 at {} s (--threads {} --idle-timeout {} --shutdown-grace {})",
        a.long, a.long_rate, a.short_rate, a.duration, a.upgrade_at, a.threads, a.idle, a.grace
    );
    let mut v = Verdict::default();
    match new.0 {
        Some(pid) => println!(
            "new process PID {pid} started {} ms after SIGUSR2",
            started_after.as_millis()
        ),
        None => v.check(false, "a new process started within 10 s of SIGUSR2"),
    }
    match old_exit {
        Ok((status, log)) => {
            println!(
                "old process exited ({:?}) {} ms after SIGUSR2",
                status.code(),
                old_exited_after.as_millis()
            );
            let _ = std::fs::write(out.join("server.log"), log.join("\n"));
            v.check(
                status.code() == Some(0),
                "the old process exits 0 after its drain",
            );
        }
        Err(e) => v.check(false, format!("the old process exits: {e}")),
    }
    if let Ok(s) = &old_summary {
        println!(
            "old process's summary: accepted {}, frames {}, closed: eof {}, idle {}, shutdown {}, reset {}",
            s.get("accepted").unwrap_or(0),
            s.get("frames").unwrap_or(0),
            s.get("closed_eof").unwrap_or(0),
            s.get("reaped_idle").unwrap_or(0),
            s.get("closed_shutdown").unwrap_or(0),
            s.get("closed_reset").unwrap_or(0),
        );
    }
    let counts = short.as_ref().ok().and_then(|r| r.churn.clone());
    match (&short, &counts) {
        (Ok(_), Some(c)) => println!(
            "short connections (tabecho load --churn): ok={} refused={} reset={} wrong={} \
             timed_out={} other={}",
            c.ok, c.refused, c.reset, c.wrong, c.timed_out, c.other
        ),
        (Ok(_), None) => println!("short connections: the report has no churn counts"),
        (Err(e), _) => println!("short connections: {e}"),
    }
    match load {
        Ok(output) => match report::parse(&String::from_utf8_lossy(&output.stdout)) {
            Ok(r) => println!(
                "long-lived connections (tabecho load, exit {:?}): {}",
                output.status.code(),
                report::line(&r)
            ),
            Err(e) => println!("long-lived connections: {e}"),
        },
        Err(e) => println!("long-lived connections: {e}"),
    }
    // The new process serves after the old one is gone.
    let still = machine::answers(&bin, addr);
    v.check(
        still.is_ok(),
        format!(
            "the new process serves after the old one exited ({})",
            still.unwrap_or_else(|e| e)
        ),
    );
    v.check(
        counts.as_ref().is_some_and(|c| c.ok > 0 && c.failed() == 0),
        "every short connection served",
    );
    if let Some(pid) = new.0.take() {
        let _ = harness::process::signal(pid, "TERM");
        v.check(
            wait_gone(pid, Duration::from_secs(10)),
            format!("the new process (PID {pid}) stops on SIGTERM"),
        );
        if let Ok(s) = Summary::read(&summary_path) {
            println!(
                "new process's summary: accepted {}, frames {}",
                s.get("accepted").unwrap_or(0),
                s.get("frames").unwrap_or(0)
            );
        }
    }
    v.outcome()
}
