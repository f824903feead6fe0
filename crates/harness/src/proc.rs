//! Readings of a process from /proc (Linux): memory, CPU time, descriptors, threads.
//! Each returns 0 (or `None`) when the process is gone, so a reading never panics.

use std::fs;
use std::time::{Duration, Instant};

/// A field of /proc/PID/status in kB (`VmRSS`, `VmHWM`, with or without the colon); 0 if
/// absent.
pub fn status_kb(pid: u32, field: &str) -> u64 {
    let field = field.trim_end_matches(':');
    let text = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find(|l| l.split(':').next() == Some(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// utime + stime of a process, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = text.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); utime is field 14, stime field 15.
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    ticks as f64 / clock_ticks_per_second()
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`; 100 if it cannot say).
pub fn clock_ticks_per_second() -> f64 {
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output();
    out.ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// The open descriptors of a process (`/proc/PID/fd`).
pub fn open_fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// The threads of a process (`/proc/PID/task`).
pub fn thread_count(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}

/// The children of a process (`/proc/PID/task/*/children`, every thread's).
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for task in tasks.flatten() {
        let text = fs::read_to_string(task.path().join("children")).unwrap_or_default();
        out.extend(
            text.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
    }
    out
}

/// Waits at most `within` until the open descriptor count satisfies `done`; returns the
/// last count read.
pub fn wait_for_fds(pid: u32, within: Duration, done: impl Fn(usize) -> bool) -> usize {
    let deadline = Instant::now() + within;
    loop {
        let n = open_fds(pid);
        if done(n) || Instant::now() >= deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits at most `within` for process `pid` to have exited (a zombie, or gone); whether
/// it has. For timing an exit: a `ServerProcess`'s own wait also waits for its stderr to
/// go quiet, which a process it started may hold open.
pub fn wait_exited(pid: u32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit(')').next().unwrap_or("").trim_start();
        if stat.is_empty() || state.starts_with('Z') {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_process_reads() {
        let me = std::process::id();
        assert!(super::status_kb(me, "VmRSS") > 0);
        assert!(super::open_fds(me) >= 3);
        assert!(super::thread_count(me) >= 1);
        assert_eq!(super::status_kb(u32::MAX, "VmRSS"), 0);
    }
}
