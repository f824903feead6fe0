//! `cargo xtask upgrade`: ten upgrades in a row (SIGUSR2) under a mixed load, with 1 and
//! with 2 reactors side by side, and who noticed (docs/PROTOCOL.md "Upgrade in place").
//!
//! Against a release `tabecho serve --metrics 127.0.0.1:PORT` (a fixed port):
//! - long-lived connections pipelining (`tabecho load -c 200 -p 16 --rate`) that never
//!   reconnect: every frame answered, none corrupt, none closed by the server;
//! - short connections, one frame each (`tabecho load --churn 300`): none refused, reset,
//!   wrong or timed out;
//! - idle connections (`tabecho load --idle -c 1000`): each reaped once, at its idle
//!   timeout from its connect, whichever process holds it then (deadlines move along);
//! - flooders that never read (`tabecho load --faults flood`, 500): each its documented
//!   outcome;
//! - a scrape of `/metrics` every 100 ms: every one answered;
//! - each old process exits 0 within 5 s of its SIGUSR2 (`--shutdown-grace 30s`).
//!
//! This process becomes a child subreaper (`PR_SET_CHILD_SUBREAPER`), so each new server
//! process, reparented to it when its parent exits, is its child: its exit status is read
//! with `waitpid`, not guessed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use clap::Args;
use harness::ServerProcess;
use rustix::process::{Pid, WaitOptions};
use tabecho::load::LoadReport;

use crate::machine::{self, Outcome, Verdict};
use crate::report;

/// The sizes of an upgrade run.
#[derive(Args)]
pub struct UpgradeArgs {
    /// Upgrades in a row; each waits for the last old process to exit.
    #[arg(long, default_value_t = 10)]
    upgrades: u32,
    /// Milliseconds between an old process's exit and the next SIGUSR2.
    #[arg(long, default_value_t = 500)]
    every_ms: u64,
    /// Long-lived connections (they never reconnect).
    #[arg(long, default_value_t = 200)]
    long: u64,
    /// Frames in flight per long-lived connection.
    #[arg(long, default_value_t = 16)]
    pipeline: u64,
    /// Frames per second over the long-lived connections.
    #[arg(long, default_value_t = 20_000)]
    long_rate: u64,
    /// Short connections (one frame each) per second.
    #[arg(long, default_value_t = 300)]
    short_rate: u64,
    /// Idle connections, reaped by the server's idle timeout.
    #[arg(long, default_value_t = 1_000)]
    idle: u64,
    /// Flooders (send, never read).
    #[arg(long, default_value_t = 500)]
    flooders: u64,
    /// The server's --idle-timeout, in seconds.
    #[arg(long, default_value_t = 4)]
    idle_timeout: u64,
    /// Reactors (--threads) of each run, side by side.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    threads: Vec<usize>,
}

/// What one run saw.
struct Run {
    threads: usize,
    /// Per upgrade: ms from SIGUSR2 to the old process's exit, and its exit code.
    exits: Vec<(u128, Option<i32>)>,
    long: Result<LoadReport, String>,
    short: Result<LoadReport, String>,
    idle: Result<LoadReport, String>,
    flood: Result<LoadReport, String>,
    scrapes_ok: u64,
    scrapes_failed: Vec<String>,
    last_exit: Option<i32>,
}

pub fn run(a: UpgradeArgs) -> Outcome {
    let bin = match machine::release_binary() {
        Ok(bin) => bin,
        Err(e) => return Outcome::CannotRun(e),
    };
    let need = 2 * (a.long + a.idle + a.flooders + 2 * a.short_rate) + 1_000;
    if let Err(e) = machine::raise_fd_limit(need) {
        return Outcome::CannotRun(e);
    }
    if let Err(e) = rustix::process::set_child_subreaper(Some(rustix::process::getpid())) {
        return Outcome::CannotRun(format!("PR_SET_CHILD_SUBREAPER: {e}"));
    }
    let mut runs = Vec::new();
    for &threads in &a.threads {
        match one_run(&a, &bin, threads) {
            Ok(run) => runs.push(run),
            Err(e) => return Outcome::CannotRun(e),
        }
    }
    judge(&a, &runs)
}

/// One server, its loads, and `a.upgrades` upgrades.
fn one_run(a: &UpgradeArgs, bin: &std::path::Path, threads: usize) -> Result<Run, String> {
    // A fixed metrics port: chosen free now, then named on the command line as an operator
    // would (every new process must serve this very port).
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("a free port: {e}"))?
        .port();
    let metrics: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut command = Command::new(bin);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--threads"])
        .arg(threads.to_string())
        .args(["--idle-timeout", &format!("{}s", a.idle_timeout)])
        .args(["--shutdown-grace", "30s", "--metrics", &metrics.to_string()]);
    let server = ServerProcess::start_ready(command, "warn").map_err(|e| e.to_string())?;
    let addr = server.addr.clone();
    println!(
        "upgrade ({threads} reactor(s)): server PID {} on {addr}, metrics on {metrics}",
        server.pid()
    );
    // Long enough for every upgrade, with time before and after.
    let duration = 3 + u64::from(a.upgrades) * (a.every_ms + 500) / 1000 + 3;
    let d = format!("{duration}s");
    let load = |extra: &[&str]| -> Result<Child, String> {
        Command::new(bin)
            .args(["load", "--addr", &addr, "-d", &d, "--json"])
            .args(extra)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("tabecho load: {e}"))
    };
    let idle_timeout = format!("{}s", a.idle_timeout);
    let long = load(&[
        "-c",
        &a.long.to_string(),
        "-p",
        &a.pipeline.to_string(),
        "--rate",
        &a.long_rate.to_string(),
        "--connect-rate",
        "1000",
    ])?;
    let short = load(&[
        "-c",
        "0",
        "--churn",
        &a.short_rate.to_string(),
        "--connect-timeout",
        "2s",
    ])?;
    let idle = load(&[
        "--idle",
        "-c",
        &a.idle.to_string(),
        "--connect-rate",
        "2000",
    ])?;
    let flood = load(&[
        "-c",
        &a.flooders.to_string(),
        "--faults",
        "flood",
        "--fault-share",
        "1",
        "--socket-buffer",
        "16384",
        "--idle-timeout",
        &idle_timeout,
    ])?;
    let stop = Arc::new(AtomicBool::new(false));
    let scraper = {
        let stop = stop.clone();
        thread::spawn(move || scrape_every_100ms(metrics, &stop))
    };

    thread::sleep(Duration::from_secs(2));
    let mut exits = Vec::new();
    let mut current: u32 = server.pid();
    let mut first = Some(server);
    for n in 1..=a.upgrades {
        let usr2 = Instant::now();
        harness::process::signal(current, "USR2").map_err(|e| e.to_string())?;
        let mut new = None;
        while new.is_none() && usr2.elapsed() < Duration::from_secs(10) {
            new = harness::proc::children(current).first().copied();
            thread::sleep(Duration::from_millis(2));
        }
        let Some(new) = new else {
            return Err(format!(
                "upgrade {n}: no new process within 10 s of SIGUSR2"
            ));
        };
        let (code, took) = match first.take() {
            Some(server) => {
                // Timed by /proc: the server's reader of stderr waits for the pipe, which
                // the new process holds, to go quiet before it returns the status.
                harness::proc::wait_exited(current, Duration::from_secs(5));
                let took = usr2.elapsed().as_millis();
                let code = match server.wait_exit_within(Duration::from_secs(5)) {
                    Ok((status, _)) => status.code(),
                    Err(_) => None,
                };
                (code, took)
            }
            None => {
                let code = wait_exit_code(current, Duration::from_secs(5));
                (code, usr2.elapsed().as_millis())
            }
        };
        println!(
            "upgrade {n}: PID {current} -> {new}: old exited {code:?} {took} ms after SIGUSR2"
        );
        exits.push((took, code));
        current = new;
        thread::sleep(Duration::from_millis(a.every_ms));
    }
    let reports: Vec<Result<LoadReport, String>> = [long, short, idle, flood]
        .into_iter()
        .map(|child| {
            child
                .wait_with_output()
                .map_err(|e| e.to_string())
                .and_then(|o| report::parse(&String::from_utf8_lossy(&o.stdout)))
        })
        .collect();
    stop.store(true, Ordering::Release);
    let (scrapes_ok, scrapes_failed) = scraper.join().unwrap_or((0, vec!["panicked".into()]));
    harness::process::signal(current, "TERM").map_err(|e| e.to_string())?;
    let last_exit = wait_exit_code(current, Duration::from_secs(35));
    let mut reports = reports.into_iter();
    let mut next = || reports.next().unwrap_or_else(|| Err("missing".into()));
    Ok(Run {
        threads,
        exits,
        long: next(),
        short: next(),
        idle: next(),
        flood: next(),
        scrapes_ok,
        scrapes_failed,
        last_exit,
    })
}

/// GET /metrics every 100 ms until `stop`; (answered, failures).
fn scrape_every_100ms(metrics: SocketAddr, stop: &AtomicBool) -> (u64, Vec<String>) {
    let (mut ok, mut failed) = (0, Vec::new());
    while !stop.load(Ordering::Acquire) {
        let at = Instant::now();
        match scrape(metrics) {
            Ok(()) => ok += 1,
            Err(e) => failed.push(e),
        }
        thread::sleep(Duration::from_millis(100).saturating_sub(at.elapsed()));
    }
    (ok, failed)
}

/// One `GET /metrics` on a connection of its own: a 200 with a page, within 2 s.
fn scrape(metrics: SocketAddr) -> Result<(), String> {
    let mut s = TcpStream::connect_timeout(&metrics, Duration::from_secs(2))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut page = String::new();
    s.read_to_string(&mut page)
        .map_err(|e| format!("read: {e}"))?;
    if !page.starts_with("HTTP/1.1 200") || !page.contains("tabecho_frames_total") {
        return Err(format!("answer: {:?}", page.lines().next()));
    }
    Ok(())
}

/// The exit code of `pid`, a child of this process (a subreaper), within `within`;
/// `None` if it did not exit (or was killed by a signal).
fn wait_exit_code(pid: u32, within: Duration) -> Option<i32> {
    let pid = Pid::from_raw(i32::try_from(pid).ok()?)?;
    let deadline = Instant::now() + within;
    loop {
        match rustix::process::waitpid(Some(pid), WaitOptions::NOHANG) {
            Ok(Some((_, status))) => return status.exit_status(),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
            _ => return None,
        }
    }
}

/// The verdict over every run.
fn judge(a: &UpgradeArgs, runs: &[Run]) -> Outcome {
    let mut v = Verdict::default();
    for run in runs {
        let t = run.threads;
        println!();
        println!(
            "== {t} reactor(s): {} upgrades; {} long-lived at {} frames/s (pipeline {}), \
             {} short/s, {} idle, {} flooders, a scrape every 100 ms",
            a.upgrades, a.long, a.long_rate, a.pipeline, a.short_rate, a.idle, a.flooders
        );
        let slowest = run.exits.iter().map(|(ms, _)| *ms).max().unwrap_or(0);
        v.check(
            run.exits.len() == a.upgrades as usize
                && run
                    .exits
                    .iter()
                    .all(|(ms, code)| *code == Some(0) && *ms < 5_000),
            format!(
                "[{t}] every old process exits 0 within 5 s of its SIGUSR2 (slowest {slowest} ms)"
            ),
        );
        v.check(
            run.last_exit == Some(0),
            format!(
                "[{t}] the last process stops on SIGTERM with 0 ({:?})",
                run.last_exit
            ),
        );
        match &run.long {
            Ok(r) => {
                println!("[{t}] long-lived: {}", report::line(r));
                v.check(
                    r.established == a.long
                        && r.lost == 0
                        && r.corrupt == 0
                        && r.unexpected == 0
                        && r.server_closes == 0,
                    format!(
                        "[{t}] long-lived: {} of {} established, {} lost, {} corrupt, {} closed by the server",
                        r.established, a.long, r.lost, r.corrupt, r.server_closes
                    ),
                );
            }
            Err(e) => v.check(false, format!("[{t}] long-lived: {e}")),
        }
        match run.short.as_ref().map(|r| r.churn.clone()) {
            Ok(Some(c)) => v.check(
                c.ok > 0 && c.failed() == 0,
                format!(
                    "[{t}] short: ok={} refused={} reset={} wrong={} timed_out={} other={}",
                    c.ok, c.refused, c.reset, c.wrong, c.timed_out, c.other
                ),
            ),
            Ok(None) => v.check(false, format!("[{t}] short: no churn counts")),
            Err(e) => v.check(false, format!("[{t}] short: {e}")),
        }
        let timeout_ms = a.idle_timeout * 1_000;
        match &run.idle {
            // One tick (timeout / 20) late at most, plus a loaded machine's slack.
            Ok(r) => v.check(
                r.server_closes == a.idle
                    && r.close_after_min_ms + 50 >= timeout_ms
                    && r.close_after_max_ms <= timeout_ms + timeout_ms / 20 + 500,
                format!(
                    "[{t}] idle: {} of {} reaped, {}..{} ms after connect (timeout {timeout_ms} ms)",
                    r.server_closes, a.idle, r.close_after_min_ms, r.close_after_max_ms
                ),
            ),
            Err(e) => v.check(false, format!("[{t}] idle: {e}")),
        }
        match &run.flood {
            Ok(r) => {
                let (conns, runs, expected, unexpected, evicted) =
                    r.faults
                        .iter()
                        .fold((0, 0, 0, 0, 0), |(c, n, e, u, v), (_, f)| {
                            (
                                c + f.connections,
                                n + f.runs,
                                e + f.expected,
                                u + f.unexpected,
                                v + f.evicted,
                            )
                        });
                v.check(
                    r.faults_ok() && conns == a.flooders && runs > 0 && unexpected == 0,
                    format!(
                        "[{t}] flooders: {conns} connections, {runs} cycles, {expected} with the \
                         documented outcome ({evicted} closed for the memory budget), {unexpected} not"
                    ),
                );
            }
            Err(e) => v.check(false, format!("[{t}] flooders: {e}")),
        }
        v.check(
            run.scrapes_failed.is_empty() && run.scrapes_ok > 0,
            format!(
                "[{t}] scrapes: {} answered, {} failed {:?}",
                run.scrapes_ok,
                run.scrapes_failed.len(),
                run.scrapes_failed.iter().take(3).collect::<Vec<_>>()
            ),
        );
    }
    v.outcome()
}
