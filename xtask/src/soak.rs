//! `cargo xtask soak [MINUTES]`: a long run of healthy and misbehaving clients against a
//! release server, then the checks that matter after hours: nothing lost, every fault got
//! its documented outcome, no descriptor or memory leak, the server still answers and
//! exits cleanly.
//!
//! The server: `tabecho serve` on a free loopback port, `--idle-timeout IDLE` (1 s), its
//! metrics endpoint on loopback. The load: `tabecho load --connections 10000
//! --connect-rate 2000 --rate 30000 --faults reset,halfclose,slowread,noread,trickle,
//! oversize,garbage --fault-pause 2s --idle-timeout IDLE --duration MINUTES`: 9,000
//! healthy connections each send a frame every 300 ms; 1,000 faulty ones (10%) cycle
//! connect, misbehave, check, pause. Every few seconds the server is sampled: RSS and
//! open descriptors (/proc), connections open (its metrics). At the end:
//!  1. load exit 0: no loss, no corruption, every fault cycle as documented;
//!  2. once the clients are gone and the idle timeout passed, the open descriptors are
//!     back to their number before the run;
//!  3. RSS at most the warm-up's peak (the first third of the run, at most 60 s) plus 10%
//!     or 1 MiB, whichever is larger (no leak). The peak, not one sample: RSS swings by
//!     tens of MB with the noread clients' backlogs, by design;
//!  4. it still answers a frame;
//!  5. SIGTERM stops it with exit status 0 (its summary from --summary-json).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use harness::proc;
use harness::report::{metric_total, Summary};

use crate::report;
use harness::ServerProcess;

use crate::http;
use crate::machine::{self, Outcome, Verdict};

/// The faults the misbehaving tenth of the connections cycle through.
const FAULTS: &str = "reset,halfclose,slowread,noread,trickle,oversize,garbage";

#[derive(Args)]
pub struct SoakArgs {
    /// Minutes of load.
    #[arg(default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    minutes: u64,
    /// Connections of the load (a tenth of them faulty).
    #[arg(long, default_value_t = 10_000)]
    connections: u64,
    /// Frames per second over the healthy connections.
    #[arg(long, default_value_t = 30_000)]
    rate: u64,
    /// New connections per second while ramping up.
    #[arg(long, default_value_t = 2_000)]
    connect_rate: u64,
    /// A faulty connection's pause between cycles.
    #[arg(long, default_value = "2s")]
    fault_pause: String,
    /// The server's --idle-timeout (and the load's): 1s, 500ms, 1m.
    #[arg(long, default_value = "1s", value_parser = tabecho::addr::parse_duration)]
    idle: Duration,
    /// Seconds between samples.
    #[arg(long, default_value_t = 5)]
    sample_secs: u64,
}

/// One sample of the server.
struct Sample {
    secs: u64,
    phase: &'static str,
    rss_kb: u64,
    fds: usize,
    open: Option<f64>,
}

pub fn run(a: SoakArgs) -> Outcome {
    if let Err(e) = machine::raise_fd_limit(a.connections + 64) {
        return Outcome::CannotRun(e);
    }
    let bin = match machine::release_binary() {
        Ok(b) => b,
        Err(e) => return Outcome::CannotRun(e),
    };
    let out = match machine::out_dir("soak") {
        Ok(o) => o,
        Err(e) => return Outcome::CannotRun(e),
    };
    let idle = format!("{}ms", a.idle.as_millis());
    let summary_path = out.join("summary.json");
    let mut command = Command::new(&bin);
    command
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
        ])
        .args(["--idle-timeout", &idle])
        .arg("--summary-json")
        .arg(&summary_path);
    let server = match ServerProcess::start_ready(command, "info") {
        Ok(s) => s,
        Err(e) => return Outcome::CannotRun(e.to_string()),
    };
    let pid = server.pid();
    let metrics = server.metrics_addr();
    let start = Instant::now();
    let sample = |phase: &'static str| Sample {
        secs: start.elapsed().as_secs(),
        phase,
        rss_kb: proc::status_kb(pid, "VmRSS"),
        fds: proc::open_fds(pid),
        open: http::get(metrics, "/metrics")
            .ok()
            .and_then(|(_, page)| metric_total(&page, "tabecho_connections_open")),
    };
    let mut samples = vec![sample("before")];
    let (fds_start, rss_start) = (samples[0].fds, samples[0].rss_kb);
    println!(
        "soak: server PID {pid} on {} (idle timeout {idle}): {fds_start} fds, RSS {rss_start} kB; files in {}",
        server.addr,
        out.display()
    );
    let warmup = Duration::from_secs((a.minutes * 60 / 3).min(60));
    let load_out = std::fs::File::create(out.join("load.json"));
    let load_err = std::fs::File::create(out.join("load.log"));
    let (Ok(load_out), Ok(load_err)) = (load_out, load_err) else {
        return Outcome::CannotRun("cannot write the load's files".into());
    };
    let load = Command::new(&bin)
        .arg("load")
        .args(["--addr", &server.addr])
        .args(["--connections", &a.connections.to_string()])
        .args([
            "--connect-rate",
            &a.connect_rate.to_string(),
            "--rate",
            &a.rate.to_string(),
        ])
        .args([
            "--faults",
            FAULTS,
            "--fault-pause",
            &a.fault_pause,
            "--idle-timeout",
            &idle,
        ])
        .args(["--duration", &format!("{}m", a.minutes), "--json"])
        .stdin(Stdio::null())
        .stdout(load_out)
        .stderr(load_err)
        .spawn();
    let mut load = match load {
        Ok(l) => l,
        Err(e) => return Outcome::CannotRun(format!("tabecho load: {e}")),
    };
    // Bounded: the run, its drain, and two minutes to spare.
    let deadline = start + Duration::from_secs(a.minutes * 60 + 120);
    let load_status = loop {
        std::thread::sleep(Duration::from_secs(a.sample_secs));
        let phase = if start.elapsed() <= warmup {
            "warmup"
        } else {
            "run"
        };
        match load.try_wait() {
            Ok(Some(status)) => break status.code(),
            Ok(None) if Instant::now() > deadline => {
                let _ = load.kill();
                let _ = load.wait();
                break None;
            }
            _ => samples.push(sample(phase)),
        }
    };
    // The clients are gone: wait out the idle timeout (rounded up) and a sample interval.
    std::thread::sleep(a.idle + Duration::from_secs(a.sample_secs + 1));
    samples.push(sample("after"));
    let last = samples.last().expect("a sample");
    let (fds_end, rss_end) = (last.fds, last.rss_kb);
    let rss_warm = samples
        .iter()
        .filter(|s| s.phase == "warmup")
        .map(|s| s.rss_kb)
        .max()
        .unwrap_or(rss_start);
    let margin = (rss_warm / 10).max(1024);
    let addr = server.addr.parse().expect("a TCP address");
    let still = machine::answers(&bin, addr);
    server.signal("TERM");
    let exit = server.wait_exit_within(Duration::from_secs(30));

    println!();
    println!(
        "samples (every {} s; server RSS, open fds, connections open from /metrics)",
        a.sample_secs
    );
    println!(
        "{:>8}  {:<7} {:>10} {:>8} {:>12}",
        "t (s)", "phase", "RSS (kB)", "fds", "conns open"
    );
    for s in &samples {
        let open = s.open.map_or("-".to_string(), |o| o.to_string());
        println!(
            "{:>8}  {:<7} {:>10} {:>8} {:>12}",
            s.secs, s.phase, s.rss_kb, s.fds, open
        );
    }
    println!();
    let report = std::fs::read_to_string(out.join("load.json"))
        .map_err(|e| e.to_string())
        .and_then(|t| report::parse(&t).map_err(|e| e.to_string()));
    match &report {
        Ok(r) => println!("load: {}", report::line(r)),
        Err(e) => println!("load: no report: {e}"),
    }
    if let Ok(s) = Summary::read(&summary_path) {
        let fields: Vec<String> = s.0.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!("server's summary: {}", fields.join(", "));
    }
    println!();
    let mut v = Verdict::default();
    v.check(
        load_status == Some(0),
        format!("load exit status {load_status:?} (0: no loss, no corruption, every fault as documented)"),
    );
    v.check(
        fds_end == fds_start,
        format!("open fds after the clients left and the idle timeout passed: {fds_end} (before: {fds_start})"),
    );
    v.check(
        rss_end <= rss_warm + margin,
        format!("RSS after: {rss_end} kB <= warm-up peak {rss_warm} kB + margin {margin} kB (started at {rss_start} kB)"),
    );
    v.check(
        still.is_ok(),
        format!("still answering ({})", still.unwrap_or_else(|e| e)),
    );
    match exit {
        Ok((status, log)) => {
            let _ = std::fs::write(out.join("server.log"), log.join("\n"));
            v.check(
                status.code() == Some(0),
                format!("SIGTERM: exit status {:?}", status.code()),
            );
        }
        Err(e) => v.check(false, format!("SIGTERM: {e}")),
    }
    println!(
        "(soak of {} min, {} connections, files in {})",
        a.minutes,
        a.connections,
        out.display()
    );
    v.outcome()
}
