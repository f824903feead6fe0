//! `cargo xtask cluster`: HAProxy (deploy/haproxy.cfg) in front of three tabecho instances,
//! each on a host of its own: a network namespace with its own address, a veth pair into a
//! bridge. HAProxy runs in a fourth namespace; the clients (a verified `tabecho load` and
//! reconnecting clients of this process) in the root one. Everything stays on the private
//! bridge.
//!
//! The run, about 35 s:
//!  1. The three instances (`--idle-timeout 10s`) and HAProxy; every instance UP.
//!  2. Load A through HAProxy: 150 connections, an open loop of 4,500 frames/s (30 per
//!     connection per second), pipeline 4, 30 s, every reply verified; beside it 40
//!     reconnecting clients, one frame at a time, each reply verified, reconnecting at
//!     any close. Which instance holds which connection comes from HAProxy's `show sess`.
//!  3. Kill: tabecho2 is stopped (SIGSTOP), and SIGKILLed 0.4 s later. HAProxy must mark
//!     it DOWN within 3 s of the stop; its reconnecting clients reconnect.
//!  4. Load B (30 connections, 2 s) while it is down: verified, no session on tabecho2.
//!  5. Partition: tabecho3's link goes down; it sends nothing, not even a reset. HAProxy
//!     marks it DOWN, and (`on-marked-down shutdown-sessions`) closes its sessions: each
//!     reconnecting client that was on it must read EOF within 3 s of the cut, reconnect
//!     (to the live instance) and be served again. No client on a live instance sees a close.
//!  6. The link comes back: tabecho3 UP again. tabecho2 restarts: UP again. Load C (30
//!     connections, 2 s) verified, with sessions on both.
//!  7. Load A's report: every connection established; corrupt 0, unexpected 0; closed by
//!     the server exactly its connections on tabecho2 (at the kill) and tabecho3 (at the
//!     cut), A; lost exactly 4 x A. Both victims answered nothing for long enough that each
//!     of their connections had the pipeline's 4 frames in flight when it closed, so
//!     lost = 4 x A if and only if the connections on the live instances lost nothing.
//!  8. The instances stop (SIGTERM); their shutdown summaries (`--summary-json`) are read.
//!
//! Every namespace, veth and the bridge are removed at the end, whatever happened (the
//! `Net` guard), and leftovers of an earlier run before the start.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use harness::report::Summary;

use crate::report::{self, LoadReport};
use harness::ServerProcess;

use crate::haproxy;
use crate::machine::{self, Outcome, Verdict};
use crate::netns::{self, Net, SUBNET};

/// The port every instance and HAProxy listen on, each on its own address.
const PORT: u16 = 8085;
/// Load A: connections, frames per second over all of them, pipeline, duration.
const LOAD_CONNS: u64 = 150;
const LOAD_RATE: u64 = 4_500;
const PIPELINE: u64 = 4;
const LOAD_SECS: u64 = 30;
/// Reconnecting clients of this process.
const CLIENTS: usize = 40;
/// How long the kill's victim is stopped before the SIGKILL: long enough that each of its
/// load connections has the pipeline's frames in flight (a frame is due every 33 ms).
const STOP_FOR: Duration = Duration::from_millis(400);
/// The longest a victim may take to be marked DOWN, and its clients to read EOF.
const WITHIN: Duration = Duration::from_secs(3);
/// A pause between a reconnecting client's frames.
const CLIENT_PAUSE: Duration = Duration::from_millis(20);

/// Local ports by instance name (`tabecho1`): load A's connections, then the
/// reconnecting clients'.
type ByServer = BTreeMap<String, (Vec<u16>, Vec<u16>)>;

/// A process killed on drop (HAProxy, a load).
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn run() -> Outcome {
    if !machine::is_root() {
        // `ip netns add` needs CAP_SYS_ADMIN; say so before building anything.
        return Outcome::CannotRun(
            "network namespaces need root (ip netns add); run as root".into(),
        );
    }
    for (tool, package) in [("ip", "iproute2"), ("haproxy", "haproxy")] {
        if let Err(e) = machine::need_tool(tool, package) {
            return Outcome::CannotRun(e);
        }
    }
    let bin = match machine::release_binary() {
        Ok(bin) => bin,
        Err(e) => return Outcome::CannotRun(e),
    };
    let out = match machine::out_dir("cluster") {
        Ok(out) => out,
        Err(e) => return Outcome::CannotRun(e),
    };
    if let Err(e) = netns::clean_up_on_signal() {
        return Outcome::CannotRun(e);
    }
    let result = {
        // Declared first, dropped last: after every process that runs in its namespaces.
        let mut net = match Net::new() {
            Ok(net) => net,
            Err(e) => return Outcome::CannotRun(e),
        };
        match Cluster::start(&mut net, &bin, &out) {
            Ok(cluster) => cluster.run(&net, &out),
            Err(e) => Outcome::CannotRun(e),
        }
    };
    let left = netns::leftovers();
    if left.is_empty() {
        println!("cleanup: every namespace, veth and the bridge removed");
        result
    } else {
        println!("FAIL  cleanup: left behind: {}", left.join(" "));
        Outcome::Fail
    }
}

/// The hosts and processes of one run.
struct Cluster {
    bin: PathBuf,
    /// The instances' namespaces, tabecho1..3.
    hosts: Vec<String>,
    /// The instances (`None` once killed).
    instances: Vec<Option<ServerProcess>>,
    haproxy: Guard,
    stats: haproxy::Stats,
    /// HAProxy's front address.
    front: SocketAddr,
    /// The stats socket's directory, removed at the end.
    run_dir: PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

/// Instance `i`'s (0-based) address.
fn instance_addr(i: usize) -> String {
    format!("{SUBNET}.{}:{PORT}", 11 + i)
}

impl Cluster {
    fn start(net: &mut Net, bin: &Path, out: &Path) -> Result<Cluster, String> {
        let lb = net.add_host("lb", 10)?;
        let hosts = (1..=3)
            .map(|i| net.add_host(&format!("h{i}"), 10 + i as u8))
            .collect::<Result<Vec<_>, _>>()?;
        println!(
            "== cluster: HAProxy on {SUBNET}.10:{PORT} (namespace {lb}); tabecho1..3 on \
             {SUBNET}.11..13:{PORT} ({}); clients in the root namespace ({SUBNET}.1)",
            hosts.join(", ")
        );
        let mut instances = Vec::new();
        for (i, host) in hosts.iter().enumerate() {
            instances.push(Some(start_instance(bin, host, i, out)?));
        }
        let run_dir = std::env::temp_dir().join(format!("tbx-cluster-{}", std::process::id()));
        std::fs::create_dir_all(&run_dir).map_err(|e| e.to_string())?;
        let log = std::fs::File::create(out.join("haproxy.log")).map_err(|e| e.to_string())?;
        let mut command = Net::command(&lb, Path::new("haproxy"));
        command
            .args(["-db", "-f"])
            .arg(haproxy::config(&machine::workspace_root()))
            .env("CLUSTER_RUN", &run_dir)
            .env("CLUSTER_ADDR", format!("{SUBNET}.10"))
            .env("CLUSTER_PORT", PORT.to_string())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        for i in 1..=3 {
            command
                .env(format!("TABECHO_HOST{i}"), format!("{SUBNET}.{}", 10 + i))
                .env(format!("TABECHO_PORT{i}"), PORT.to_string());
        }
        let haproxy = Guard(command.spawn().map_err(|e| format!("haproxy: {e}"))?);
        let stats = haproxy::Stats {
            socket: run_dir.join("haproxy.sock"),
        };
        let mut cluster = Cluster {
            bin: bin.to_path_buf(),
            hosts,
            instances,
            haproxy,
            stats,
            front: format!("{SUBNET}.10:{PORT}").parse().unwrap(),
            run_dir,
        };
        let start = Instant::now();
        for i in 1..=3 {
            let left = Duration::from_secs(10).saturating_sub(start.elapsed());
            if let Err(status) = cluster
                .stats
                .until_status(&format!("tabecho{i}"), "UP", left)
            {
                let exited = cluster.haproxy.0.try_wait().ok().flatten();
                return Err(format!(
                    "tabecho{i} is not UP in HAProxy (status {status:?}, HAProxy exited: \
                     {exited:?}; see {})",
                    out.join("haproxy.log").display()
                ));
            }
        }
        println!(
            "HAProxy: tabecho1..3 UP {:.1} s after it started",
            start.elapsed().as_secs_f64()
        );
        Ok(cluster)
    }

    /// The instance names (`tabecho1`) by server, sessions counted: load A's (not one of
    /// `ours`) and the reconnecting clients' (`ours`).
    fn sessions(&self, ours: &BTreeSet<u16>) -> ByServer {
        let mut by_server = ByServer::new();
        for i in 1..=3 {
            by_server.entry(format!("tabecho{i}")).or_default();
        }
        for s in self.stats.sessions().unwrap_or_default() {
            let entry = by_server.entry(s.server).or_default();
            if ours.contains(&s.src.port()) {
                entry.1.push(s.src.port());
            } else {
                entry.0.push(s.src.port());
            }
        }
        by_server
    }

    fn run(mut self, net: &Net, out: &Path) -> Outcome {
        let mut v = Verdict::default();
        println!();
        println!(
            "== load A: {LOAD_CONNS} connections, {LOAD_RATE} frames/s, pipeline {PIPELINE}, \
             {LOAD_SECS} s; {CLIENTS} reconnecting clients (one frame at a time, verified)"
        );
        let load_a = match self.start_load(out, "load-a", LOAD_CONNS, LOAD_RATE, LOAD_SECS) {
            Ok(l) => l,
            Err(e) => return Outcome::CannotRun(e),
        };
        let load_a_started = Instant::now();
        let clients = Clients::start(self.front, CLIENTS);
        let expected = LOAD_CONNS as usize + CLIENTS;
        let deadline = Instant::now() + Duration::from_secs(10);
        while (self.stats.sessions().map_or(0, |s| s.len()) < expected
            || clients.ports().len() < CLIENTS)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_secs(1));
        let before_kill = self.sessions(&clients.ports());
        print_sessions("sessions", &before_kill);
        let total: usize = before_kill.values().map(|(a, c)| a.len() + c.len()).sum();
        v.check(
            total == expected,
            format!("all {expected} connections proxied ({total})"),
        );
        let (a2, c2) = before_kill["tabecho2"].clone();
        v.check(
            !a2.is_empty() && !c2.is_empty(),
            "tabecho2 holds some of each",
        );

        // The kill.
        println!();
        println!(
            "== kill: tabecho2 SIGSTOP, SIGKILL {} s later",
            STOP_FOR.as_secs_f64()
        );
        let victim = self.instances[1].take().expect("tabecho2 runs");
        let stopped = Instant::now();
        let _ = harness::process::signal(victim.pid(), "STOP");
        std::thread::sleep(STOP_FOR);
        let _ = harness::process::signal(victim.pid(), "KILL");
        let killed = Instant::now();
        let _ = victim.wait_exit_within(Duration::from_secs(5));
        match self
            .stats
            .until_status("tabecho2", "DOWN", Duration::from_secs(5))
        {
            Ok(after) => {
                let since_stop = killed - stopped + after;
                println!(
                    "kill: HAProxy marked tabecho2 DOWN {:.1} s after the SIGKILL, {:.1} s after \
                     it stopped answering",
                    after.as_secs_f64(),
                    since_stop.as_secs_f64()
                );
                v.check(
                    since_stop <= WITHIN,
                    "kill: marked DOWN within 3 s of the stop",
                );
            }
            Err(status) => v.check(false, format!("kill: marked DOWN (status still {status})")),
        }
        let kill_closes = clients.wait_closes(&c2, stopped, Duration::from_secs(3));
        report_closes(&mut v, "kill", "tabecho2", &c2, &kill_closes, None);

        // Load B while tabecho2 is down.
        println!();
        println!("== load B while tabecho2 is down: 30 connections, 2 s");
        let before = self.sessions_sent();
        let b = self.run_load(out, "load-b", 30, 1_500, 2);
        let after = self.sessions_sent();
        let new: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
        match &b {
            Ok((status, r)) => {
                println!(
                    "load B: {}; new sessions on tabecho1..3: {new:?}",
                    report::line(r)
                );
                v.check(
                    *status == Some(0) && r.established == 30 && r.verified(),
                    format!("load B verified (exit {status:?})"),
                );
            }
            Err(e) => v.check(false, format!("load B: {e}")),
        }
        v.check(
            new[1] == 0 && new[0] + new[2] == 30,
            "load B's sessions all on the live instances, none on tabecho2",
        );

        // The partition.
        std::thread::sleep(Duration::from_secs(1));
        let before_cut = self.sessions(&clients.ports());
        let (a3, c3) = before_cut["tabecho3"].clone();
        println!();
        println!(
            "== partition: tabecho3's link goes down (ip link set {}-v down): it sends nothing, \
             not even a reset",
            self.hosts[2]
        );
        print_sessions("partition: sessions before the cut", &before_cut);
        v.check(
            !a3.is_empty() && !c3.is_empty(),
            "partition: tabecho3 holds some of each",
        );
        let cut = Instant::now();
        if let Err(e) = net.set_link(&self.hosts[2], false) {
            println!("partition: {e}");
            return Outcome::CannotRun(e);
        }
        match self
            .stats
            .until_status("tabecho3", "DOWN", Duration::from_secs(6))
        {
            Ok(after) => {
                println!(
                    "partition: HAProxy marked tabecho3 DOWN {:.1} s after the cut",
                    after.as_secs_f64()
                );
                v.check(
                    after <= WITHIN,
                    "partition: marked DOWN within 3 s of the cut",
                );
            }
            Err(status) => v.check(
                false,
                format!("partition: marked DOWN (status still {status})"),
            ),
        }
        let cut_closes = clients.wait_closes(&c3, cut, Duration::from_secs(5));
        // Served again: a second of frames on their new connections.
        std::thread::sleep(Duration::from_secs(1));
        let after_cut = self.sessions(&clients.ports());
        report_closes(
            &mut v,
            "partition",
            "tabecho3",
            &c3,
            &cut_closes,
            Some(&after_cut),
        );
        let served = clients.served_since(&c3);
        v.check(
            served.iter().all(|&n| n > 0),
            format!(
                "partition: each reconnected client served again (replies since: {} to {})",
                served.iter().min().unwrap_or(&0),
                served.iter().max().unwrap_or(&0)
            ),
        );

        // The link comes back.
        println!();
        if let Err(e) = net.set_link(&self.hosts[2], true) {
            v.check(false, format!("partition healed: {e}"));
        }
        match self
            .stats
            .until_status("tabecho3", "UP", Duration::from_secs(10))
        {
            Ok(after) => {
                println!(
                    "partition healed: link up; HAProxy marked tabecho3 UP again {:.1} s later",
                    after.as_secs_f64()
                );
                v.check(true, "partition healed: tabecho3 UP again");
            }
            Err(status) => v.check(
                false,
                format!("partition healed: UP again (status {status})"),
            ),
        }
        println!("== tabecho2 restarts on {}", instance_addr(1));
        match start_instance(&self.bin, &self.hosts[1], 1, out) {
            Ok(p) => self.instances[1] = Some(p),
            Err(e) => v.check(false, format!("tabecho2 restarts: {e}")),
        }
        match self
            .stats
            .until_status("tabecho2", "UP", Duration::from_secs(10))
        {
            Ok(after) => {
                println!(
                    "HAProxy: tabecho2 UP {:.1} s after the restart",
                    after.as_secs_f64()
                );
                v.check(true, "tabecho2 UP again");
            }
            Err(status) => v.check(false, format!("tabecho2 UP again (status {status})")),
        }
        let before = self.sessions_sent();
        let c = self.run_load(out, "load-c", 30, 1_500, 2);
        let after = self.sessions_sent();
        let new: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
        match &c {
            Ok((status, r)) => {
                println!(
                    "load C: {}; new sessions on tabecho1..3: {new:?}",
                    report::line(r)
                );
                v.check(
                    *status == Some(0) && r.verified(),
                    format!("load C verified (exit {status:?})"),
                );
            }
            Err(e) => v.check(false, format!("load C: {e}")),
        }
        v.check(
            new[1] > 0 && new[2] > 0,
            "load C: tabecho2 and tabecho3 take connections again",
        );

        // Load A's report.
        println!();
        println!("== load A's report");
        let wait_for = Duration::from_secs(LOAD_SECS + 15).saturating_sub(load_a_started.elapsed());
        let a = finish_load(load_a, &out.join("load-a.json"), wait_for);
        let closed_victims = (a2.len() + a3.len()) as u64;
        match a {
            Ok((status, r)) => {
                println!("load A: {}", report::line(&r));
                println!("load A: errors {:?}", r.errors);
                v.check(
                    status == Some(1),
                    format!("load A exits 1 (frames lost on the victims): exit {status:?}"),
                );
                v.check(
                    r.established == LOAD_CONNS && r.connect_failed == 0,
                    format!("load A: all {LOAD_CONNS} established, none failed"),
                );
                v.check(
                    r.corrupt == 0 && r.unexpected == 0,
                    "load A: corrupt 0, unexpected 0",
                );
                v.check(
                    r.server_closes == closed_victims,
                    format!(
                        "load A: closed by the server = {} (on tabecho2 at the kill) + {} (on \
                         tabecho3 at the cut) = {closed_victims}: {}",
                        a2.len(),
                        a3.len(),
                        r.server_closes
                    ),
                );
                v.check(
                    r.lost == PIPELINE * closed_victims,
                    format!(
                        "load A: lost = {PIPELINE} x {closed_victims} = {} (the live instances \
                         lost nothing): {}",
                        PIPELINE * closed_victims,
                        r.lost
                    ),
                );
                v.check(
                    r.errors
                        .keys()
                        .all(|k| k == "server: connection reset" || k == "server: broken pipe"),
                    "load A: errors only the closes (connection reset / broken pipe), if any",
                );
            }
            Err(e) => v.check(false, format!("load A: {e}")),
        }

        // The reconnecting clients, over the whole run.
        let totals = clients.stop();
        let expected_closes: BTreeSet<u16> = c2.iter().chain(&c3).copied().collect();
        println!(
            "clients: {} replies verified, {} corrupt, {} timed out, {} connects failed; {} closes \
             ({} expected: the victims')",
            totals.ok,
            totals.corrupt,
            totals.timeouts,
            totals.connect_failed,
            totals.closes,
            expected_closes.len()
        );
        v.check(
            totals.corrupt == 0 && totals.timeouts == 0,
            "clients: corrupt 0, timed out 0",
        );
        v.check(
            totals.closes == expected_closes.len() as u64,
            "clients: no client on a live instance saw a close",
        );

        // The instances' own counters.
        println!();
        for (i, p) in self.instances.iter_mut().enumerate() {
            let Some(p) = p.take() else { continue };
            let _ = harness::process::signal(p.pid(), "TERM");
            let name = format!("tabecho{}", i + 1);
            match p.wait_exit_within(Duration::from_secs(10)) {
                Ok((status, log)) => {
                    let _ = std::fs::write(out.join(format!("{name}.log")), log.join("\n"));
                    let summary = Summary::read(&out.join(format!("{name}.json")));
                    match summary {
                        Ok(s) => println!(
                            "{name}: exit {:?}; accepted {}, frames {}, closed: eof {}, reset {}, \
                             idle {}, shutdown {}",
                            status.code(),
                            s.get("accepted").unwrap_or(0),
                            s.get("frames").unwrap_or(0),
                            s.get("closed_eof").unwrap_or(0),
                            s.get("closed_reset").unwrap_or(0),
                            s.get("reaped_idle").unwrap_or(0),
                            s.get("closed_shutdown").unwrap_or(0),
                        ),
                        Err(e) => println!("{name}: exit {:?}; no summary: {e}", status.code()),
                    }
                    v.check(
                        status.code() == Some(0),
                        format!("{name} exits 0 on SIGTERM"),
                    );
                }
                Err(e) => v.check(false, format!("{name}: {e}")),
            }
        }
        v.outcome()
    }

    /// Starts `tabecho load` against HAProxy, its JSON report to OUT/NAME.json.
    fn start_load(
        &self,
        out: &Path,
        name: &str,
        conns: u64,
        rate: u64,
        secs: u64,
    ) -> Result<Guard, String> {
        let report =
            std::fs::File::create(out.join(format!("{name}.json"))).map_err(|e| e.to_string())?;
        let log =
            std::fs::File::create(out.join(format!("{name}.log"))).map_err(|e| e.to_string())?;
        Command::new(&self.bin)
            .arg("load")
            .args(["--addr", &self.front.to_string()])
            .args(["-c", &conns.to_string(), "-p", &PIPELINE.to_string()])
            .args([
                "--rate",
                &rate.to_string(),
                "-d",
                &format!("{secs}s"),
                "--json",
            ])
            .stdin(Stdio::null())
            .stdout(report)
            .stderr(log)
            .spawn()
            .map(Guard)
            .map_err(|e| format!("tabecho load: {e}"))
    }

    /// Sessions HAProxy has sent to each instance so far (`stot`, tabecho1..3).
    fn sessions_sent(&self) -> Vec<u64> {
        (1..=3)
            .map(|i| self.stats.num(&format!("tabecho{i}"), "stot"))
            .collect()
    }

    /// A load run to its end: its exit code and report.
    fn run_load(
        &self,
        out: &Path,
        name: &str,
        conns: u64,
        rate: u64,
        secs: u64,
    ) -> Result<(Option<i32>, LoadReport), String> {
        let load = self.start_load(out, name, conns, rate, secs)?;
        finish_load(
            load,
            &out.join(format!("{name}.json")),
            Duration::from_secs(secs + 15),
        )
    }
}

/// Waits (at most `within`) for a load to exit; its exit code and parsed report.
fn finish_load(
    mut load: Guard,
    report: &Path,
    within: Duration,
) -> Result<(Option<i32>, LoadReport), String> {
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = load.0.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if Instant::now() > deadline {
            return Err(format!("did not end within {within:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(report).map_err(|e| e.to_string())?;
    let summary = report::parse(&text).map_err(|e| e.to_string())?;
    Ok((status.code(), summary))
}

/// Starts instance `i` (0-based) in namespace `ns`, its summary to OUT/tabecho{i+1}.json.
fn start_instance(bin: &Path, ns: &str, i: usize, out: &Path) -> Result<ServerProcess, String> {
    let mut command = Net::command(ns, bin);
    command
        .args([
            "serve",
            "--listen",
            &instance_addr(i),
            "--idle-timeout",
            "10s",
            // HAProxy (deploy/haproxy.cfg) sends a PROXY v2 header on each connection.
            "--proxy-protocol-from",
            &format!("{SUBNET}.10"),
        ])
        .arg("--summary-json")
        .arg(out.join(format!("tabecho{}.json", i + 1)));
    ServerProcess::start_ready(command, "info").map_err(|e| format!("tabecho{}: {e}", i + 1))
}

fn print_sessions(what: &str, by_server: &ByServer) {
    let parts: Vec<String> = by_server
        .iter()
        .map(|(s, (a, c))| {
            format!(
                "{s} {} (load A {}, clients {})",
                a.len() + c.len(),
                a.len(),
                c.len()
            )
        })
        .collect();
    println!("{what}: {}", parts.join(", "));
}

/// Prints and judges how the reconnecting clients that were on `victim` (local ports
/// `on_victim`) ended there: each closed within [`WITHIN`] of the event, and reconnected
/// elsewhere (`after`: the sessions once they did).
fn report_closes(
    v: &mut Verdict,
    step: &str,
    victim: &str,
    on_victim: &[u16],
    closes: &[(u16, Duration, &'static str)],
    after: Option<&ByServer>,
) {
    let kinds: BTreeMap<&str, usize> = closes.iter().fold(BTreeMap::new(), |mut m, c| {
        *m.entry(c.2).or_default() += 1;
        m
    });
    let (first, last) = (
        closes.iter().map(|c| c.1).min().unwrap_or_default(),
        closes.iter().map(|c| c.1).max().unwrap_or_default(),
    );
    println!(
        "{step}: {} clients were on {victim}; {} saw their connection close ({kinds:?}) {:.2} to \
         {:.2} s after it",
        on_victim.len(),
        closes.len(),
        first.as_secs_f64(),
        last.as_secs_f64()
    );
    v.check(
        closes.len() == on_victim.len() && last <= WITHIN,
        format!("{step}: every client on {victim} read its close within 3 s"),
    );
    if step == "partition" {
        v.check(
            closes.iter().all(|c| c.2 == "EOF"),
            "partition: the closes were EOF (HAProxy's shutdown-sessions), no reset",
        );
    }
    if let Some(after) = after {
        let where_now: Vec<String> = after
            .iter()
            .map(|(s, (_, c))| format!("{s} {}", c.len()))
            .collect();
        println!(
            "{step}: the clients reconnected; clients now on {}",
            where_now.join(", ")
        );
        v.check(
            after[victim].1.is_empty(),
            format!("{step}: no client on {victim} now"),
        );
    }
}

/// One reconnecting client's record.
#[derive(Default, Clone)]
struct ClientState {
    /// The local port of its connection now (`None` between connections).
    port: Option<u16>,
    /// Every local port it had, in order.
    ports: Vec<u16>,
    ok: u64,
    corrupt: u64,
    timeouts: u64,
    connect_failed: u64,
    /// Each close: the port it was on, when, and how it read (EOF, reset, ...).
    closes: Vec<(u16, Instant, &'static str)>,
    /// Replies verified since the last close.
    ok_since_close: u64,
}

/// The totals over every client.
#[derive(Default)]
struct Totals {
    ok: u64,
    corrupt: u64,
    timeouts: u64,
    connect_failed: u64,
    closes: u64,
}

/// Reconnecting clients: each a thread sending one frame at a time and verifying its
/// reply, reconnecting through HAProxy at any close.
struct Clients {
    stop: Arc<AtomicBool>,
    states: Arc<Mutex<Vec<ClientState>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Clients {
    fn start(front: SocketAddr, n: usize) -> Clients {
        let stop = Arc::new(AtomicBool::new(false));
        let states = Arc::new(Mutex::new(vec![ClientState::default(); n]));
        let threads = (0..n)
            .map(|id| {
                let (stop, states) = (Arc::clone(&stop), Arc::clone(&states));
                std::thread::spawn(move || client(id, front, &stop, &states))
            })
            .collect();
        Clients {
            stop,
            states,
            threads,
        }
    }

    /// The local ports of every client's connection now.
    fn ports(&self) -> BTreeSet<u16> {
        self.states
            .lock()
            .unwrap()
            .iter()
            .filter_map(|s| s.port)
            .collect()
    }

    /// Waits (at most `within`) until every connection of `ports` has closed; returns
    /// each close (its port, how long after `since`, how).
    fn wait_closes(
        &self,
        ports: &[u16],
        since: Instant,
        within: Duration,
    ) -> Vec<(u16, Duration, &'static str)> {
        let deadline = Instant::now() + within;
        loop {
            let closes: Vec<_> = self
                .states
                .lock()
                .unwrap()
                .iter()
                .flat_map(|s| s.closes.clone())
                .filter(|c| ports.contains(&c.0))
                .map(|(p, at, how)| (p, at.saturating_duration_since(since), how))
                .collect();
            if closes.len() >= ports.len() || Instant::now() > deadline {
                return closes;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Replies verified since their last close, of the clients once on `ports`.
    fn served_since(&self, ports: &[u16]) -> Vec<u64> {
        self.states
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.ports.iter().any(|p| ports.contains(p)))
            .map(|s| s.ok_since_close)
            .collect()
    }

    fn stop(self) -> Totals {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            let _ = t.join();
        }
        let states = self.states.lock().unwrap();
        let mut t = Totals::default();
        for s in states.iter() {
            t.ok += s.ok;
            t.corrupt += s.corrupt;
            t.timeouts += s.timeouts;
            t.connect_failed += s.connect_failed;
            t.closes += s.closes.len() as u64;
        }
        t
    }
}

/// One reconnecting client's loop, until `stop`.
fn client(id: usize, front: SocketAddr, stop: &AtomicBool, states: &Mutex<Vec<ClientState>>) {
    let mut conn: Option<TcpStream> = None;
    let mut seq = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let Some(s) = conn.as_mut() else {
            match connect(front) {
                Ok(s) => {
                    let port = s.local_addr().map(|a| a.port()).unwrap_or(0);
                    let mut st = states.lock().unwrap();
                    st[id].port = Some(port);
                    st[id].ports.push(port);
                    conn = Some(s);
                }
                Err(_) => {
                    states.lock().unwrap()[id].connect_failed += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            continue;
        };
        let frame = format!("client {id} frame {seq}");
        seq += 1;
        let want = format!("server got:{frame}\t");
        let mut got = vec![0; want.len()];
        let result = s
            .write_all(format!("{frame}\t").as_bytes())
            .and_then(|()| s.read_exact(&mut got));
        let mut st = states.lock().unwrap();
        let me = &mut st[id];
        match result {
            Ok(()) if got == want.as_bytes() => {
                me.ok += 1;
                me.ok_since_close += 1;
            }
            Ok(()) => {
                me.corrupt += 1;
                me.port = None;
                conn = None;
            }
            Err(e) => {
                let how = match e.kind() {
                    io::ErrorKind::UnexpectedEof => "EOF",
                    io::ErrorKind::ConnectionReset => "reset",
                    io::ErrorKind::BrokenPipe => "broken pipe",
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => "timeout",
                    _ => "other",
                };
                if how == "timeout" {
                    me.timeouts += 1;
                }
                let port = me.port.take().unwrap_or(0);
                me.closes.push((port, Instant::now(), how));
                me.ok_since_close = 0;
                conn = None;
            }
        }
        drop(st);
        std::thread::sleep(CLIENT_PAUSE);
    }
}

/// A client connection through HAProxy: 1 s to connect, 10 s for a reply.
fn connect(front: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&front, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    s.set_nodelay(true)?;
    Ok(s)
}
