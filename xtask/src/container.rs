//! `cargo xtask container`: tabecho at its default buffer budget inside a memory cgroup
//! (200 MiB by default), as a container or a systemd unit with `MemoryMax=` runs it, under
//! the mix of `cargo xtask attack` (5,000 flooders + 5,000 partial-frame holders, from 3 s
//! to 15 s) beside its healthy verified load (100 connections, 100,000 frames/s for 20 s),
//! with 1 and with 2 reactors.
//!
//! The cgroup is made with the cgroup filesystem: on cgroup v2 if its hierarchy has the
//! memory controller, else on the v1 memory hierarchy; one fresh cgroup per run, removed
//! after it (and any left by an earlier run that was killed, before). Only the server runs
//! in it; the loads run outside. The server runs with `--idle-timeout 30s` (the attackers
//! stay the whole attack, as in `cargo xtask attack`) and `--metrics`; every memory flag is
//! left at its default.
//!
//! Printed per run: the budget the server chose and where from, the healthy load's
//! latency and lost frames, the cgroup's peak memory (`memory.peak`, v1
//! `memory.max_usage_in_bytes`, with the kernel objects' part of it), the peak of its
//! sockets' memory, and its OOM kills.
//! Sockets: cgroup v2 charges socket buffers to the same limit (`memory.stat`: `sock`,
//! sampled every 50 ms); v1 counts them apart (`memory.kmem.tcp`, switched on by writing
//! its limit, left at "unlimited", before the server starts), so on v1 peak + sockets is
//! what v2 would have charged at most.
//!
//! PASS when, in every run, the server sized its budget from the cgroup (unless
//! `--tabecho-args` gives one), is alive and answers after the attack, the healthy load
//! reported and lost nothing, and the cgroup's OOM-kill count (`memory.events` on v2,
//! `memory.oom_control` on v1) did not move. Exit 2 where the machine cannot make a
//! memory cgroup (no memory controller, not root, a read-only cgroup filesystem).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use harness::ServerProcess;

use crate::attack;
use crate::machine::{self, Outcome, Verdict};
use crate::{http, report};

#[derive(Args)]
pub struct ContainerArgs {
    /// The cgroup's memory limit, MiB.
    #[arg(long, default_value_t = 200)]
    limit_mib: u64,
    /// The reactor counts, one run each.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    reactors: Vec<usize>,
    /// More `serve` flags: "--max-buffer-memory 268435456" serves with the budget of
    /// before, to see what the check prevents.
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    tabecho_args: String,
}

/// The start of the name of every cgroup this check makes.
const PREFIX: &str = "tabecho-container-";

/// A memory cgroup made for one run; removed on drop (once its process is gone).
struct Cgroup {
    /// Its directory.
    dir: PathBuf,
    /// On the cgroup v2 hierarchy (else v1's memory hierarchy).
    v2: bool,
}

impl Cgroup {
    /// Makes `PREFIX<pid>-<run>` limited to `limit` bytes under the hierarchy with the
    /// memory controller; `Err` says why the machine cannot.
    fn make(run: usize, limit: u64) -> Result<Cgroup, String> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("/proc/self/mountinfo: {e}"))?;
        let (top, v2) = tabecho::cgroup::hierarchy_of(Path::new("/"), &mountinfo, "memory")
            .ok_or("no cgroup hierarchy here has the memory controller")?;
        remove_leftovers(&top);
        if v2 {
            // Children get memory files only if their parent hands the controller down.
            let control = top.join("cgroup.subtree_control");
            let enabled = std::fs::read_to_string(&control).unwrap_or_default();
            if !enabled.split_whitespace().any(|c| c == "memory") {
                write(&control, "+memory")?;
            }
        }
        let dir = top.join(format!("{PREFIX}{}-{run}", std::process::id()));
        std::fs::create_dir(&dir).map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
        let cgroup = Cgroup { dir, v2 };
        if v2 {
            cgroup.write("memory.max", &limit.to_string())?;
            // No swap to escape into, where there is swap.
            let _ = cgroup.write("memory.swap.max", "0");
        } else {
            cgroup.write("memory.limit_in_bytes", &limit.to_string())?;
            let _ = cgroup.write("memory.memsw.limit_in_bytes", &limit.to_string());
            // v1 counts socket memory only once this is written (its value stays
            // unlimited); without it the sockets' peak is not shown.
            let _ = cgroup.write("memory.kmem.tcp.limit_in_bytes", "-1");
        }
        Ok(cgroup)
    }

    /// Writes `value` to the cgroup's file `name`.
    fn write(&self, name: &str, value: &str) -> Result<(), String> {
        write(&self.dir.join(name), value)
    }

    /// The cgroup's file `name`, read.
    fn read(&self, name: &str) -> Result<String, String> {
        let file = self.dir.join(name);
        std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))
    }

    /// The file the server writes its PID to, to move itself in.
    fn procs(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    /// The processes in it.
    fn pids(&self) -> Vec<u32> {
        self.read("cgroup.procs")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Processes the kernel's OOM killer killed in it.
    fn oom_kills(&self) -> Result<u64, String> {
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        key_value(&self.read(file)?, "oom_kill").ok_or_else(|| format!("no oom_kill in {file}"))
    }

    /// The most memory charged to it so far, bytes.
    fn peak(&self) -> Option<u64> {
        let file = if self.v2 {
            "memory.peak"
        } else {
            "memory.max_usage_in_bytes"
        };
        self.read(file).ok()?.trim().parse().ok()
    }

    /// The peak of the kernel's objects charged to it (v1: `memory.kmem.max_usage_in_bytes`,
    /// within the cgroup's peak); v2 keeps no peak of them (`None`).
    fn kernel_peak(&self) -> Option<u64> {
        if self.v2 {
            return None;
        }
        self.read("memory.kmem.max_usage_in_bytes")
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// v1: the peak of its socket memory so far (`memory.kmem.tcp.max_usage_in_bytes`),
    /// bytes. (v2 has no peak of it: the run samples `memory.stat`.)
    fn v1_sockets_peak(&self) -> Option<u64> {
        self.read("memory.kmem.tcp.max_usage_in_bytes")
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // The server's exit is reaped before this; the kernel may take a moment to let go.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("could not remove {}", self.dir.display());
    }
}

/// Writes `value` to a cgroup file; `Err` names it.
fn write(file: &Path, value: &str) -> Result<(), String> {
    std::fs::write(file, value)
        .map_err(|e| format!("cannot write {value:?} to {}: {e}", file.display()))
}

/// The number after `key` in a `key value` file (memory.events, memory.stat, oom_control).
fn key_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Removes the cgroups left under `top` by an earlier run that was killed: those named
/// for a process that is gone (a cgroup with a process in it is not removed anyway).
fn remove_leftovers(top: &Path) {
    let Ok(entries) = std::fs::read_dir(top) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir(entry.path());
        }
    }
}

/// MiB, one decimal.
fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / 1_048_576.0)
}

pub fn run(a: ContainerArgs) -> Outcome {
    if let Err(e) = machine::raise_fd_limit(10_300) {
        return Outcome::CannotRun(e);
    }
    let limit = a.limit_mib << 20;
    // Can this machine make one at all? Before the build.
    if let Err(e) = Cgroup::make(0, limit) {
        return Outcome::CannotRun(e);
    }
    let bin = match machine::release_binary() {
        Ok(b) => b,
        Err(e) => return Outcome::CannotRun(e),
    };
    let out = match machine::out_dir("container") {
        Ok(o) => o,
        Err(e) => return Outcome::CannotRun(e),
    };
    let extra: Vec<&str> = a.tabecho_args.split_whitespace().collect();
    let budget_given = extra.iter().any(|f| f.starts_with("--max-buffer-memory"));
    let mut v = Verdict::default();
    for (run, &reactors) in a.reactors.iter().enumerate() {
        let cgroup = match Cgroup::make(run + 1, limit) {
            Ok(c) => c,
            Err(e) => return Outcome::CannotRun(e),
        };
        let version = if cgroup.v2 { "v2" } else { "v1" };
        println!(
            "{reactors} reactor(s) in {} (cgroup {version}, limit {} MiB)",
            cgroup.dir.display(),
            a.limit_mib
        );
        let threads = reactors.to_string();
        let mut args = vec![
            "--listen",
            "127.0.0.1:0",
            "--threads",
            &threads,
            "--idle-timeout",
            "30s",
            "--metrics",
            "127.0.0.1:0",
        ];
        args.extend(&extra);
        let prefix = format!("echo $$ > {} &&", cgroup.procs().display());
        let mut server = match ServerProcess::start_program(&bin, "info", &prefix, &args) {
            Ok(s) => s,
            Err(e) => return Outcome::CannotRun(e.to_string()),
        };
        let pid = server.pid();
        // Logged before readiness: at once.
        let budget_line = server.wait_for_line(|l| l.contains("buffer memory budget"));
        println!("  {}", budget_line.split("] ").last().unwrap_or(""));
        v.check(
            cgroup.pids().contains(&pid),
            format!("the server (PID {pid}) runs in the cgroup"),
        );
        if !budget_given {
            v.check(
                budget_line.contains(&format!("in {})", cgroup.dir.display())),
                "the server sized its budget from the cgroup's limit",
            );
        }
        let oom_before = cgroup.oom_kills().unwrap_or(u64::MAX);
        let sock_peak = Arc::new(AtomicU64::new(0));
        let sampling = Arc::new(AtomicBool::new(true));
        let sampler = cgroup.v2.then(|| {
            let (peak, sampling) = (sock_peak.clone(), sampling.clone());
            let stat = cgroup.dir.join("memory.stat");
            std::thread::spawn(move || {
                while sampling.load(Ordering::SeqCst) {
                    let sock = std::fs::read_to_string(&stat)
                        .ok()
                        .and_then(|t| key_value(&t, "sock"));
                    peak.fetch_max(sock.unwrap_or(0), Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        });
        let addr = server.addr.clone();
        let healthy = match attack::healthy(&bin, &addr) {
            Ok(h) => h,
            Err(e) => return Outcome::CannotRun(format!("the healthy load: {e}")),
        };
        std::thread::sleep(Duration::from_secs(3));
        let partial = out.join(format!("partial-{reactors}.json"));
        let flood = out.join(format!("flood-{reactors}.json"));
        match attack::mix(&bin, &addr, &partial, &flood) {
            Ok(attackers) => {
                for mut g in attackers {
                    let _ = g.0.wait();
                }
            }
            Err(e) => return Outcome::CannotRun(format!("an attacker: {e}")),
        }
        let healthy = healthy.wait_with_output();
        sampling.store(false, Ordering::SeqCst);
        if let Some(s) = sampler {
            let _ = s.join();
        }
        let alive = matches!(server.child.try_wait(), Ok(None));
        let answers = if alive {
            machine::answers(&bin, server.tcp())
        } else {
            Err("exited".into())
        };
        let gauge = server
            .metrics
            .filter(|_| alive)
            .and_then(|m| http::get(m, "/metrics").ok())
            .and_then(|(_, page)| {
                page.lines()
                    .find_map(|l| l.strip_prefix("tabecho_max_buffer_memory_bytes{reactor=\"0\"} "))
                    .and_then(|v| v.trim().parse::<u64>().ok())
            });
        let oom_after = cgroup.oom_kills();
        let peak = cgroup.peak();
        let kernel = cgroup.kernel_peak();
        let sockets = if cgroup.v2 {
            Some(sock_peak.load(Ordering::SeqCst))
        } else {
            cgroup.v1_sockets_peak()
        };
        let exit = if alive {
            server.signal("TERM");
            server
                .wait_exit_within(Duration::from_secs(10))
                .map(|(status, _)| status.to_string())
                .unwrap_or_else(|e| e.to_string())
        } else {
            let status = server.child.try_wait().ok().flatten();
            drop(server);
            format!("died before the end: {status:?}")
        };
        let r = healthy
            .map_err(|e| e.to_string())
            .and_then(|o| report::parse(&String::from_utf8_lossy(&o.stdout)));
        match &r {
            Ok(r) => println!(
                "  healthy: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, {} answered, {} lost, {} corrupt",
                r.p50_us as f64 / 1000.0,
                r.p99_us as f64 / 1000.0,
                r.max_us as f64 / 1000.0,
                r.frames_answered,
                r.lost,
                r.corrupt
            ),
            Err(e) => println!("  healthy: no report ({e})"),
        }
        if let Some(line) = attack::partial_outcome(&partial) {
            println!("  {line}");
        }
        let show = |b: Option<u64>| b.map_or("-".to_string(), mib);
        let sockets_note = if cgroup.v2 {
            "charged to the limit".to_string()
        } else {
            // v1 counts the sockets apart: v2 would have charged them on top, at most
            // the two peaks' sum.
            format!(
                "v1: counted apart; peak + sockets {} MiB",
                show(peak.zip(sockets).map(|(p, s)| p + s))
            )
        };
        println!(
            "  budget gauge {} MiB; cgroup peak {} MiB (kernel objects {} MiB), sockets' peak {} MiB ({sockets_note}); OOM kills {}; server exit: {exit}",
            show(gauge),
            show(peak),
            show(kernel),
            show(sockets),
            oom_after.as_ref().map_or_else(|e| e.clone(), u64::to_string),
        );
        v.check(
            alive && answers.is_ok(),
            format!("{reactors} reactor(s): the server is alive and answers after the attack"),
        );
        v.check(
            r.as_ref().is_ok_and(|r| r.lost == 0 && r.corrupt == 0),
            format!("{reactors} reactor(s): the healthy load reported, nothing lost or corrupt"),
        );
        v.check(
            oom_after.as_ref().is_ok_and(|&n| n == oom_before),
            format!(
                "{reactors} reactor(s): no OOM kill in the cgroup ({} before, {} after)",
                oom_before,
                oom_after
                    .as_ref()
                    .map_or_else(|e| e.clone(), u64::to_string)
            ),
        );
    }
    v.outcome()
}

#[cfg(test)]
mod tests {
    use super::key_value;

    #[test]
    fn oom_kills_and_socket_memory_read_from_the_kernels_files() {
        let oom_control = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(key_value(oom_control, "oom_kill"), Some(3));
        let events = "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(key_value(events, "oom_kill"), Some(1));
        let stat = "anon 1000\nfile 0\nkernel 300\nsock 4096\nshmem 0\n";
        assert_eq!(key_value(stat, "sock"), Some(4096));
        assert_eq!(key_value(stat, "socks"), None);
    }
}
