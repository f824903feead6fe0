//! `cargo xtask handover-time`: how long an upgrade takes to move N open connections, and
//! the whole of it, SIGUSR2 to the old process's exit, for each N and reactor count.
//! Idle connections (`tabecho load --idle`, the idle timeout far away): the cost measured
//! is the hand-over's, descriptors and states, not the traffic's.

use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use clap::Args;
use harness::report::Summary;
use harness::ServerProcess;

use crate::machine::{self, Outcome, Verdict};

/// The sizes measured.
#[derive(Args)]
pub struct HandoverTimeArgs {
    /// Connections open at the upgrade, one run each.
    #[arg(value_delimiter = ',', default_value = "1000,10000")]
    connections: Vec<u64>,
    /// Reactors (--threads) of each run.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    threads: Vec<usize>,
}

pub fn run(a: HandoverTimeArgs) -> Outcome {
    let bin = match machine::release_binary() {
        Ok(bin) => bin,
        Err(e) => return Outcome::CannotRun(e),
    };
    let most = a.connections.iter().copied().max().unwrap_or(0);
    // The load holds them, and both servers do during the move.
    if let Err(e) = machine::raise_fd_limit(most + 1_000) {
        return Outcome::CannotRun(e);
    }
    let out = match machine::out_dir("handover-time") {
        Ok(out) => out,
        Err(e) => return Outcome::CannotRun(e),
    };
    let mut v = Verdict::default();
    println!("connections  reactors  moved  SIGUSR2 to old exit");
    for &n in &a.connections {
        for &threads in &a.threads {
            match one(&bin, &out, n, threads) {
                Ok((moved, took)) => {
                    println!(
                        "{n:>11}  {threads:>8}  {moved:>5}  {:>10} ms",
                        took.as_millis()
                    );
                    v.check(
                        moved == n && took < Duration::from_secs(1),
                        format!("{n} connections, {threads} reactor(s): all moved, within 1 s"),
                    );
                }
                Err(e) => v.check(false, format!("{n} connections, {threads} reactor(s): {e}")),
            }
        }
    }
    v.outcome()
}

/// One server holding `n` idle connections, upgraded once: (moved, SIGUSR2 to exit).
fn one(
    bin: &std::path::Path,
    out: &std::path::Path,
    n: u64,
    threads: usize,
) -> Result<(u64, Duration), String> {
    let summary = out.join(format!("summary-{n}-{threads}.json"));
    let _ = std::fs::remove_file(&summary);
    let mut command = Command::new(bin);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--threads"])
        .arg(threads.to_string())
        .args(["--idle-timeout", "600s", "--shutdown-grace", "30s"])
        .arg("--summary-json")
        .arg(&summary);
    let server = ServerProcess::start_ready(command, "warn").map_err(|e| e.to_string())?;
    let old = server.pid();
    let mut load = Command::new(bin)
        .args(["load", "--addr", &server.addr, "--idle", "-d", "60s"])
        .args(["-c", &n.to_string(), "--connect-rate", "20000"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("tabecho load: {e}"))?;
    // Until the server holds them all (its descriptors: n connections and a few more).
    let held = harness::proc::wait_for_fds(old, Duration::from_secs(30), |fds| fds as u64 >= n);
    if (held as u64) < n {
        let _ = load.kill();
        return Err(format!("only {held} descriptors open after 30 s"));
    }
    let usr2 = Instant::now();
    server.signal("USR2");
    harness::proc::wait_exited(old, Duration::from_secs(30));
    let took = usr2.elapsed();
    let exited = server.wait_exit_within(Duration::from_secs(30));
    let new = harness::proc::children(old).first().copied();
    let moved = Summary::read(&summary)
        .and_then(|s| s.get("moved_out"))
        .map_err(|e| format!("the old process's summary: {e}"));
    let _ = load.kill();
    let _ = load.wait();
    // The new process (reparented when the old one exited) holds the port: stop it.
    if let Some(pid) = new.or_else(|| find_new(old)) {
        let _ = harness::process::signal(pid, "TERM");
    }
    thread::sleep(Duration::from_millis(200));
    let (status, _) = exited.map_err(|e| e.to_string())?;
    if status.code() != Some(0) {
        return Err(format!("the old process exited {status}"));
    }
    Ok((moved?, took))
}

/// The process started by `old`'s upgrade, once `old` is gone: it names `old` in its
/// environment (`TABECHO_UPGRADED_FROM`).
fn find_new(old: u32) -> Option<u32> {
    let want = format!("{}={old}", tabecho::server::UPGRADED_FROM_ENV);
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
            environ
                .split(|&b| b == 0)
                .any(|var| var == want.as_bytes())
                .then_some(pid)
        })
}
