//! `cargo xtask idle-memory [N]`: the server's memory per idle connection, RSS with N idle
//! connections less RSS before them. A release server with a long idle timeout (nothing
//! reaped while we look), warmed by one round trip; N idle connections from `tabecho load
//! --idle`; once the server holds them all (/proc/PID/fd), RSS again. User-space memory
//! only: the kernel's socket buffers are not in RSS. PASS when the server held all N and
//! each costs at most 1 KiB (the bench's B/idle column measures ~111 B).

use std::process::{Command, Stdio};
use std::time::Duration;

use clap::Args;
use harness::proc;
use harness::ServerProcess;

use crate::machine::{self, Outcome, Verdict};

/// The most bytes an idle connection may cost before this check fails.
const PER_CONNECTION_LIMIT: f64 = 1024.0;

#[derive(Args)]
pub struct IdleMemoryArgs {
    /// Idle connections (at most the descriptor limit less 100).
    #[arg(default_value_t = 10_000)]
    n: u64,
}

pub fn run(a: IdleMemoryArgs) -> Outcome {
    if let Err(e) = machine::raise_fd_limit(a.n + 100) {
        return Outcome::CannotRun(e);
    }
    let bin = match machine::release_binary() {
        Ok(b) => b,
        Err(e) => return Outcome::CannotRun(e),
    };
    let mut command = Command::new(&bin);
    command.args(["serve", "--listen", "127.0.0.1:0", "--idle-timeout", "120s"]);
    command.args(["--max-connections", &(a.n + 50).to_string()]);
    let server = match ServerProcess::start_ready(command, "info") {
        Ok(s) => s,
        Err(e) => return Outcome::CannotRun(e.to_string()),
    };
    let pid = server.pid();
    let addr = server.tcp();
    let warm = machine::answers(&bin, addr);
    std::thread::sleep(Duration::from_millis(200));
    let (before, fds0) = (proc::status_kb(pid, "VmRSS"), proc::open_fds(pid));
    let load = Command::new(&bin)
        .arg("load")
        .args([
            "--addr",
            &server.addr,
            "--idle",
            "-c",
            &a.n.to_string(),
            "-d",
            "20s",
            "--threads",
            "1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut load) = load else {
        return Outcome::CannotRun("cannot start tabecho load".into());
    };
    let fds = proc::wait_for_fds(pid, Duration::from_secs(20), |n| n >= fds0 + a.n as usize);
    let held = fds.saturating_sub(fds0) as u64;
    std::thread::sleep(Duration::from_millis(500));
    let after = proc::status_kb(pid, "VmRSS");
    let _ = load.kill();
    let _ = load.wait();
    let per = after.saturating_sub(before) as f64 * 1024.0 / held.max(1) as f64;
    println!(
        "server RSS {before} kB before, {after} kB with {held} idle connections: {per:.1} bytes per connection"
    );
    let mut v = Verdict::default();
    v.check(
        warm.is_ok(),
        format!("warm-up round trip ({})", warm.unwrap_or_else(|e| e)),
    );
    v.check(
        held == a.n,
        format!("the server held all {} idle connections ({held})", a.n),
    );
    v.check(
        per <= PER_CONNECTION_LIMIT,
        format!("{per:.1} B per idle connection <= {PER_CONNECTION_LIMIT} B"),
    );
    v.outcome()
}
