//! `cargo xtask c100k [CONNECTIONS]`: CONNECTIONS concurrent connections on one machine,
//! past one process's descriptor limit: several `tabecho serve --reuseport` processes
//! share one port (the kernel spreads connections over them) and several `tabecho load`
//! processes connect from distinct source addresses (127.N.0.2, 127.N.0.3, ...). Default
//! 100,000; develop with 12,000.
//!
//! SERVERS = ceil(CONNECTIONS / 16,700) (at least 2), each holding about 16,700
//! connections under its 20,000 descriptors. LOADS = ceil(CONNECTIONS / (90% of half the
//! ephemeral ports)), at least 2: a load binds its source address with port 0 before
//! connecting, and Linux gives bind() the odd ports of ip_local_port_range first; past
//! that half every bind scans all the odd ones (7 ms instead of 10-16 µs, measured),
//! which stalls a load's only thread. `--servers N` and `--loads N` override the counts.
//! 1. Trickle: servers with --idle-timeout 30s; the loads ramp every connection up in
//!    ~20 s, warm up 25 s, then send CONNECTIONS/10 frames/s in total (each connection one
//!    frame per ~10 s) for 20 s measured. Every load must be verified: 0 lost, 0 corrupt,
//!    0 connect failures, no close by the servers.
//! 2. Idle: fresh servers with --idle-timeout 30s; the loads hold CONNECTIONS idle
//!    connections (`load --idle`, same ramp, 60 s) and report when the servers closed
//!    them: every close 30 s - 50 ms to 30 s + 5% + 1 s after its connect, as the load
//!    sees it (50 ms: the load's clock starts when it sees the connect complete, and its
//!    histogram keeps 3 significant digits), every one reaped by the idle timer.
//!
//! In both, a sampler reads each server's /proc/PID/fd (connections = descriptors less
//! those held before), VmRSS, /proc/net/sockstat and Slab in /proc/meminfo every 0.5 s:
//! the servers must hold all CONNECTIONS at once, accept them all and reject none (their
//! counters from --summary-json). RSS per connection = (sum of VmHWM - sum of VmRSS
//! before) / CONNECTIONS: user-space memory only. Loopback only; exit 2 when the machine
//! lacks descriptors, ports or fs.file-max for the count.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use harness::proc::{open_fds, status_kb};
use harness::report::Summary;
use harness::ServerProcess;

use crate::machine::{self, Outcome};
use crate::report::{self, LoadReport};

/// Connections a server is given: its 19,968-connection limit (20,000 descriptors less
/// 32) with margin for the kernel's uneven spread (about 1%).
const PER_SERVER: u64 = 16_700;
/// Seconds over which the loads open every connection.
const RAMP: u64 = 20;
/// The trickle's measured seconds.
const WINDOW: u64 = 20;
/// The servers' --idle-timeout, seconds, both phases.
const IDLE_TIMEOUT: u64 = 30;
/// The idle phase's -d: ramp + idle timeout + slack.
const IDLE_HOLD: u64 = 60;

#[derive(Args)]
pub struct C100kArgs {
    /// Connections held at once (at least 100).
    #[arg(default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(100..))]
    connections: u64,
    /// Server processes [default: ceil(CONNECTIONS / 16,700), at least 2].
    #[arg(long)]
    servers: Option<u64>,
    /// Load processes [default: from the ephemeral ports, at least 2].
    #[arg(long)]
    loads: Option<u64>,
}

/// A number from a /proc or /proc/sys file: the `index`th whitespace-separated field.
fn proc_number(path: &str, index: usize) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.split_whitespace().nth(index)?.parse().ok())
        .unwrap_or(0)
}

/// The last field of the line of `path` that starts with `prefix` (`TCP:` of sockstat,
/// `Slab:` of meminfo: its second field).
fn proc_field(path: &str, prefix: &str, last: bool) -> i64 {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let line = text.lines().find(|l| l.starts_with(prefix)).unwrap_or("");
    let mut fields = line.split_whitespace();
    let v = if last {
        fields.next_back()
    } else {
        fields.nth(1)
    };
    v.and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// A load process, killed on drop.
struct Load(Child);

impl Drop for Load {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One sample: ms since the loads started, connections held by each server, the sum of
/// their VmRSS (kB), sockstat's TCP mem (pages), Slab (kB).
#[derive(Clone, Default)]
struct Sample {
    ms: u128,
    held: Vec<u64>,
    rss_kb: u64,
    tcp_mem: i64,
    slab_kb: i64,
}

impl Sample {
    fn total(&self) -> u64 {
        self.held.iter().sum()
    }
}

struct Plan {
    conns: u64,
    servers: u64,
    loads: u64,
    bin: PathBuf,
    out: PathBuf,
}

impl Plan {
    /// Load `i`'s connections (the last takes the remainder).
    fn share(&self, i: u64) -> u64 {
        let per = self.conns / self.loads;
        if i == self.loads - 1 {
            self.conns - per * (self.loads - 1)
        } else {
            per
        }
    }
}

pub fn run(a: C100kArgs) -> Outcome {
    let conns = a.connections;
    let (lo, hi) = (
        proc_number("/proc/sys/net/ipv4/ip_local_port_range", 0),
        proc_number("/proc/sys/net/ipv4/ip_local_port_range", 1),
    );
    let ports = hi.saturating_sub(lo) + 1;
    let servers = a.servers.unwrap_or(conns.div_ceil(PER_SERVER)).max(2);
    let per_source = ports * 9 / 20;
    let loads = a.loads.unwrap_or(conns.div_ceil(per_source.max(1))).max(2);
    let server_share = conns.div_ceil(servers);
    let biggest = conns - conns / loads * (loads - 1);
    let file_max = proc_number("/proc/sys/fs/file-max", 0);
    let somaxconn = proc_number("/proc/sys/net/core/somaxconn", 0);
    let orphans = proc_number("/proc/sys/net/ipv4/tcp_max_orphans", 0);
    let need = (server_share * 102 / 100 + 64).max(biggest + 64);
    println!(
        "c100k: {conns} connections: {servers} servers (~{server_share} each) + {loads} loads \
         (~{biggest} each), fd limit {}",
        machine::fd_limit()
    );
    println!(
        "sysctl: ip_local_port_range {lo}-{hi} ({ports} ports per source), somaxconn {somaxconn}, \
         fs.file-max {file_max}, tcp_max_orphans {orphans}"
    );
    if let Err(e) = machine::raise_fd_limit(need) {
        return Outcome::CannotRun(format!(
            "~{server_share} per server, {biggest} per load: {e}"
        ));
    }
    if file_max < 2 * conns + 10_000 {
        return Outcome::CannotRun(format!("fs.file-max {file_max} < 2 x {conns} + 10000"));
    }
    if biggest > ports / 2 {
        println!("note: {biggest} connections per source address is past the odd half of the ports: binds will be slow");
    }
    if orphans < conns {
        println!("note: tcp_max_orphans {orphans} < {conns}: closing loads may see resets");
    }
    let bin = match machine::release_binary() {
        Ok(b) => b,
        Err(e) => return Outcome::CannotRun(e),
    };
    let out = match machine::out_dir("c100k") {
        Ok(o) => o,
        Err(e) => return Outcome::CannotRun(e),
    };
    let plan = Plan {
        conns,
        servers,
        loads,
        bin,
        out,
    };
    let mut rows = Vec::new();
    let mut failed = false;
    for phase in ["trickle", "idle"] {
        match run_phase(&plan, phase) {
            Ok((row, ok)) => {
                rows.push(row);
                failed |= !ok;
            }
            Err(e) => return Outcome::CannotRun(format!("{phase}: {e}")),
        }
    }
    println!();
    println!(
        "{:<8} {:>11} {:<24} {:>13} {:<28} {:>9} result",
        "phase",
        "connections",
        "per server (min-max)",
        "lost/corrupt",
        "close after connect",
        "RSS/conn"
    );
    for r in &rows {
        println!("{r}");
    }
    if failed {
        Outcome::Fail
    } else {
        Outcome::Pass
    }
}

/// A /24 of loopback (127.N.0, N from 10) with no socket on it, so a rerun within the
/// TIME-WAIT of the last one still finds free ports.
fn pick_sources() -> Result<String, String> {
    let out = Command::new("ss")
        .args(["-Htan"])
        .output()
        .map_err(|e| format!("ss: {e}"))?;
    let sockets = String::from_utf8_lossy(&out.stdout).into_owned();
    (10..=250)
        .map(|n| format!("127.{n}.0"))
        .find(|prefix| !sockets.contains(&format!("{prefix}.")))
        .ok_or_else(|| "no free 127.N.0.0/24 for the loads' sources".to_string())
}

/// One phase: servers, loads, samples, checks. The summary row and whether it passed.
fn run_phase(plan: &Plan, phase: &str) -> Result<(String, bool), String> {
    let mut fails: Vec<String> = Vec::new();
    // The servers, on one port.
    let mut servers: Vec<ServerProcess> = Vec::new();
    let mut port = 0u16;
    for i in 0..plan.servers {
        let summary = plan.out.join(format!("{phase}-server{i}.json"));
        let _ = std::fs::remove_file(&summary);
        let mut c = Command::new(&plan.bin);
        c.args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--reuseport",
        ])
        .args([
            "--idle-timeout",
            &format!("{IDLE_TIMEOUT}s"),
            "--summary-json",
        ])
        .arg(&summary);
        let p = ServerProcess::start_ready(c, "info").map_err(|e| format!("server {i}: {e}"))?;
        port = p.tcp().port();
        servers.push(p);
    }
    std::thread::sleep(Duration::from_millis(300));
    let pids: Vec<u32> = servers.iter().map(ServerProcess::pid).collect();
    let base: Vec<usize> = pids.iter().map(|&p| open_fds(p)).collect();
    let rss0: u64 = pids.iter().map(|&p| status_kb(p, "VmRSS")).sum();
    let src = pick_sources()?;
    println!();
    println!(
        "== {phase}: {} servers on 127.0.0.1:{port}, {} loads from {src}.2..{}, servers' RSS before: {rss0} kB",
        plan.servers,
        plan.loads,
        plan.loads + 1
    );
    let slab0 = proc_field("/proc/meminfo", "Slab:", false);
    let mem0 = proc_field("/proc/net/sockstat", "TCP:", true);

    // The sampler.
    let sampling = Arc::new(AtomicBool::new(true));
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let sampler = {
        let (sampling, samples, pids, base) = (
            sampling.clone(),
            samples.clone(),
            pids.clone(),
            base.clone(),
        );
        std::thread::spawn(move || {
            let t0 = Instant::now();
            while sampling.load(Ordering::SeqCst) {
                let held = pids
                    .iter()
                    .zip(&base)
                    .map(|(&p, &b)| open_fds(p).saturating_sub(b) as u64)
                    .collect();
                let s = Sample {
                    ms: t0.elapsed().as_millis(),
                    held,
                    rss_kb: pids.iter().map(|&p| status_kb(p, "VmRSS")).sum(),
                    tcp_mem: proc_field("/proc/net/sockstat", "TCP:", true),
                    slab_kb: proc_field("/proc/meminfo", "Slab:", false),
                };
                samples.lock().unwrap().push(s);
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };

    // The loads.
    let t0 = Instant::now();
    let rate = plan.conns / 10;
    let mut loads = Vec::new();
    for i in 0..plan.loads {
        let n = plan.share(i);
        let crate_ = n.div_ceil(RAMP);
        let file = |ext: &str| -> Result<std::fs::File, String> {
            std::fs::File::create(plan.out.join(format!("{phase}-load{i}.{ext}")))
                .map_err(|e| e.to_string())
        };
        let mut c = Command::new(&plan.bin);
        c.args([
            "load",
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--source",
            &format!("{src}.{}", i + 2),
        ])
        .args([
            "-c",
            &n.to_string(),
            "-t",
            "1",
            "--connect-rate",
            &crate_.to_string(),
            "--json",
        ]);
        if phase == "trickle" {
            c.args(["--warmup", &format!("{}s", RAMP + 5)])
                .args(["--rate", &(rate * n / plan.conns).max(1).to_string()])
                .args(["-d", &format!("{WINDOW}s")]);
        } else {
            c.args(["--idle", "-d", &format!("{IDLE_HOLD}s")]);
        }
        let child = c
            .stdin(Stdio::null())
            .stdout(file("json")?)
            .stderr(file("err")?)
            .spawn()
            .map_err(|e| format!("tabecho load: {e}"))?;
        loads.push(Load(child));
    }
    // Bounded: the longest phase (idle, 60 s) and two minutes to spare.
    let deadline = Instant::now() + Duration::from_secs(IDLE_HOLD + RAMP + 5 + WINDOW + 120);
    for (i, load) in loads.iter_mut().enumerate() {
        let status = loop {
            match load.0.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                _ => break None,
            }
        };
        if status.is_none_or(|s| !s.success()) {
            fails.push(format!("load {i} exited {status:?}"));
        }
    }
    println!("   loads done after {} s", t0.elapsed().as_secs());
    sampling.store(false, Ordering::SeqCst);
    let _ = sampler.join();

    // The servers' peaks and counters.
    let mut hwm = 0;
    for (i, &p) in pids.iter().enumerate() {
        let rss = status_kb(p, "VmRSS");
        if rss == 0 {
            fails.push(format!("server {i} died before the end"));
        }
        hwm += status_kb(p, "VmHWM");
    }
    let (mut accepted, mut rejected, mut reaped) = (0, 0, 0);
    for (i, p) in servers.into_iter().enumerate() {
        p.signal("TERM");
        let _ = p.wait_exit_within(Duration::from_secs(30));
        match Summary::read(&plan.out.join(format!("{phase}-server{i}.json"))) {
            Ok(s) => {
                accepted += s.get("accepted").unwrap_or(0);
                rejected +=
                    s.get("rejected").unwrap_or(0) + s.get("rejected_per_source").unwrap_or(0);
                reaped += s.get("reaped_idle").unwrap_or(0);
            }
            Err(e) => fails.push(format!("server {i}: no shutdown summary ({e})")),
        }
    }

    // The loads' reports.
    let (mut sent, mut answered, mut lost, mut corrupt, mut connect_failed, mut est, mut closes) =
        (0, 0, 0, 0, 0, 0, 0);
    let (mut cmin, mut cmax, mut cp50s) = (u64::MAX, 0, Vec::new());
    for i in 0..plan.loads {
        let text = std::fs::read_to_string(plan.out.join(format!("{phase}-load{i}.json")))
            .unwrap_or_default();
        let r: LoadReport = match report::parse(&text) {
            Ok(r) => r,
            Err(e) => {
                fails.push(format!("load {i}: no report ({e})"));
                continue;
            }
        };
        sent += r.frames_sent;
        answered += r.frames_answered;
        lost += r.lost;
        corrupt += r.corrupt;
        connect_failed += r.connect_failed;
        est += r.established;
        closes += r.server_closes;
        let mut line = format!(
            "   load {i}: {}/{} established, {} failed, verified {}",
            r.established,
            r.connections,
            r.connect_failed,
            r.verified()
        );
        if r.idle {
            line += &format!(
                ", {} server closes {} ms (p50 {}) to {} ms after connect",
                r.server_closes, r.close_after_min_ms, r.close_after_p50_ms, r.close_after_max_ms
            );
            if r.server_closes > 0 {
                cmin = cmin.min(r.close_after_min_ms);
                cmax = cmax.max(r.close_after_max_ms);
                cp50s.push(r.close_after_p50_ms);
            }
        } else {
            line += &format!(
                ", {} sent, {} answered, {} lost, {} corrupt, p99 {:.1} ms",
                r.frames_sent,
                r.frames_answered,
                r.lost,
                r.corrupt,
                r.p99_us as f64 / 1000.0
            );
        }
        if !r.errors.is_empty() {
            line += &format!(", errors {:?}", r.errors);
        }
        if let Some(note) = &r.limit_note {
            line += &format!(", note: {note}");
        }
        println!("{line}");
        if !r.verified() || r.connect_failed > 0 || r.established != r.connections {
            fails.push(format!("load {i} not verified or short of connections"));
        }
    }
    cp50s.sort_unstable();
    let cp50 = cp50s.get(cp50s.len() / 2).copied().unwrap_or(0);

    // The peak: the first sample with the most connections held.
    let samples = samples.lock().unwrap().clone();
    let peak = samples
        .iter()
        .fold(None::<&Sample>, |best, s| match best {
            Some(b) if b.total() >= s.total() => Some(b),
            _ => Some(s),
        })
        .cloned()
        .unwrap_or_default();
    let held = peak.total();
    let (lo, hi) = (
        peak.held.iter().min().copied().unwrap_or(0),
        peak.held.iter().max().copied().unwrap_or(0),
    );
    let split: Vec<String> = peak.held.iter().map(u64::to_string).collect();
    let per_conn = hwm.saturating_sub(rss0) * 1024 / plan.conns;
    println!(
        "   peak: servers held {held} connections at once, {:.1} s after the loads started; per server {}",
        peak.ms as f64 / 1000.0,
        split.join("/")
    );
    println!(
        "   servers: accepted {accepted}, rejected {rejected}, reaped idle {reaped}; RSS {rss0} kB \
         before, {hwm} kB peak (sum of VmHWM): {per_conn} B per connection"
    );
    println!(
        "   kernel at the peak: Slab +{} B per connection (both ends, whole machine), sockstat \
         TCP mem {} pages more than before; samples' RSS at the peak {} kB",
        (peak.slab_kb - slab0).max(0) * 1024 / plan.conns as i64,
        (peak.tcp_mem - mem0).max(0),
        peak.rss_kb
    );
    let conns = plan.conns;
    let mut check = |ok: bool, what: String| {
        if !ok {
            fails.push(what);
        }
    };
    check(
        held == conns,
        format!("servers held at most {held} of {conns} connections at once"),
    );
    check(est == conns, format!("loads established {est} of {conns}"));
    check(
        connect_failed == 0,
        format!("{connect_failed} connect failures"),
    );
    check(
        rejected == 0,
        format!("servers rejected {rejected} connections"),
    );
    check(
        accepted == conns,
        format!("servers accepted {accepted}, not {conns}"),
    );
    let mut timing = "-".to_string();
    if phase == "trickle" {
        check(
            lost == 0 && corrupt == 0,
            format!("{lost} lost, {corrupt} corrupt"),
        );
        check(
            answered == sent && sent > 0,
            format!("{answered} answered of {sent} sent"),
        );
        check(
            closes == 0,
            format!("servers closed {closes} connections during the trickle"),
        );
    } else {
        let (close_min, close_max) = (
            IDLE_TIMEOUT * 1000 - 50,
            IDLE_TIMEOUT * 1000 * 105 / 100 + 1000,
        );
        check(
            closes == conns && reaped == conns,
            format!("servers closed {closes} (reaped {reaped}) of {conns} idle connections"),
        );
        check(
            cmin >= close_min && cmax <= close_max,
            format!("closes {cmin} to {cmax} ms after connect, outside {close_min} to {close_max}"),
        );
        timing = format!("{cmin}-{cmax} ms (p50 {cp50})");
    }
    for f in &fails {
        println!("   FAIL: {f}");
    }
    let ok = fails.is_empty();
    let row = format!(
        "{phase:<8} {:>11} {:<24} {:>13} {timing:<28} {:>9} {}",
        format!("{held}/{conns}"),
        format!("{lo}-{hi}"),
        format!("{lost}/{corrupt}"),
        format!("{per_conn} B"),
        if ok { "PASS" } else { "FAIL" }
    );
    Ok((row, ok))
}
