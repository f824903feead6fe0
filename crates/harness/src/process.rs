//! `ServerProcess`: a `tabecho serve` child process whose addresses come from its readiness
//! descriptor (`--ready-fd`), its stderr read line by line on a thread of its own.
//!
//! # Invariants
//! - The child is always killed and reaped when the `ServerProcess` drops, however the
//!   test or check that started it ends.
//! - [`ServerProcess::addr`] is always the address the server wrote to its readiness
//!   descriptor once [`ServerProcess::start_ready`] returned (or the "listening on" line's,
//!   for the tests that ask [`ServerProcess::wait_for_listening`] after an upgrade).

use std::io::{self, Read};
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How long any single wait (readiness, a log line, an exit) may take before it fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// The descriptor number the readiness pipe gets in the child (`--ready-fd 3`): the first
/// after the standard streams. Never used together with socket activation, whose sockets
/// start at 3 too.
pub const READY_FD: RawFd = 3;

/// What a server wrote to its readiness descriptor: one address per line, the listening
/// address first (as `--listen` takes it: `host:port` or `unix:/path`), then, with
/// `--metrics`, `http://ADDR/metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    /// The listening address.
    pub addr: String,
    /// The metrics endpoint, when the server serves one.
    pub metrics: Option<SocketAddr>,
}

impl Ready {
    /// Parses what the server wrote; `Err` says what was wrong with it.
    pub fn parse(text: &str) -> Result<Ready, String> {
        let mut lines = text.lines();
        let addr = lines
            .next()
            .filter(|l| !l.is_empty())
            .ok_or_else(|| format!("no address in the readiness text {text:?}"))?
            .to_string();
        let mut metrics = None;
        for line in lines {
            let m = line
                .strip_prefix("http://")
                .and_then(|l| l.strip_suffix("/metrics"))
                .and_then(|a| a.parse().ok())
                .ok_or_else(|| format!("unexpected readiness line {line:?}"))?;
            metrics = Some(m);
        }
        Ok(Ready { addr, metrics })
    }
}

/// A running `tabecho serve`, killed on drop.
pub struct ServerProcess {
    pub child: Child,
    /// The listening address (see the module's invariants).
    pub addr: String,
    /// The metrics endpoint's address, when started with `--metrics`.
    pub metrics: Option<SocketAddr>,
    lines: Receiver<String>,
    /// Every stderr line read so far.
    pub log: Vec<String>,
}

impl ServerProcess {
    /// Runs `command` (a `tabecho serve ...`, perhaps behind `sh -c` or `ip netns exec`)
    /// with `--ready-fd 3` appended and `RUST_LOG=<level>`, and waits (at most [`WAIT`])
    /// until it wrote its addresses there and closed it. `Err` if it exited first or
    /// wrote something else, with its stderr in the message.
    pub fn start_ready(mut command: Command, level: &str) -> io::Result<ServerProcess> {
        use command_fds::{CommandFdExt, FdMapping};
        let (mut reader, writer) = io::pipe()?;
        command
            .arg("--ready-fd")
            .arg(READY_FD.to_string())
            .fd_mappings(vec![FdMapping {
                parent_fd: writer.into(),
                child_fd: READY_FD,
            }])
            .map_err(|_| io::Error::other("descriptor mapping collision"))?;
        let mut p = Self::start(command, level)?;
        // The parent's write end went with the command: EOF comes when the child closes
        // its copy (after writing), or exits.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = tx.send(reader.read_to_string(&mut text).map(|_| text));
        });
        let text = match rx.recv_timeout(WAIT) {
            Ok(Ok(text)) => text,
            Ok(Err(e)) => return Err(p.failure(&format!("reading its readiness pipe: {e}"))),
            Err(_) => return Err(p.failure("not ready within 10 s")),
        };
        match Ready::parse(&text) {
            Ok(ready) => {
                p.addr = ready.addr;
                p.metrics = ready.metrics;
                Ok(p)
            }
            Err(e) => Err(p.failure(&e)),
        }
    }

    /// Starts `command` with `RUST_LOG=<level>` and a thread reading its stderr; waits for
    /// nothing ([`ServerProcess::addr`] stays empty).
    pub fn start(mut command: Command, level: &str) -> io::Result<ServerProcess> {
        let mut child = command
            .env("RUST_LOG", level)
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(ServerProcess {
            child,
            addr: String::new(),
            metrics: None,
            lines,
            log: Vec::new(),
        })
    }

    /// Runs `sh -c "<prefix> exec BIN serve ARGS"` (the prefix sets limits or the
    /// environment) and waits for its readiness as [`ServerProcess::start_ready`].
    pub fn start_program(
        bin: &Path,
        level: &str,
        prefix: &str,
        args: &[&str],
    ) -> io::Result<ServerProcess> {
        let script = format!("{prefix} exec \"$0\" serve \"$@\"");
        let mut command = Command::new("sh");
        command.arg("-c").arg(script).arg(bin).args(args);
        Self::start_ready(command, level)
    }

    /// Kills the child and makes an error of `what` with its stderr so far.
    fn failure(&mut self, what: &str) -> io::Error {
        let _ = self.child.kill();
        let _ = self.child.wait();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
            self.log.push(line);
        }
        io::Error::other(format!(
            "tabecho serve: {what}; its stderr:\n{}",
            self.log.join("\n")
        ))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the "listening on ADDR" line and records ADDR: for the tests that watch
    /// the log itself (a process that an upgrade started, socket activation).
    #[track_caller]
    pub fn wait_for_listening(&mut self) {
        let line = self.wait_for_line(|l| l.contains("listening on "));
        self.addr = line
            .rsplit("listening on ")
            .next()
            .unwrap()
            .trim()
            .split(" (")
            .next()
            .unwrap()
            .to_string();
    }

    /// The next stderr line (at most [`WAIT`]); `None` once stderr is closed.
    #[track_caller]
    pub fn next_line(&mut self) -> Option<String> {
        match self.lines.recv_timeout(WAIT) {
            Ok(line) => {
                self.log.push(line.clone());
                Some(line)
            }
            Err(RecvTimeoutError::Disconnected) => None,
            Err(e) => panic!("{e}; stderr so far:\n{}", self.log.join("\n")),
        }
    }

    /// Waits (at most [`WAIT`]) for a stderr line matching `pred`; returns it.
    #[track_caller]
    pub fn wait_for_line(&mut self, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(_) => panic!("no such line; stderr so far:\n{}", self.log.join("\n")),
            }
        }
    }

    /// Moves the stderr lines read so far into [`ServerProcess::log`] without waiting.
    pub fn drain_log(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.log.push(line);
        }
    }

    /// The TCP address it listens on.
    #[track_caller]
    pub fn tcp(&self) -> SocketAddr {
        self.addr.parse().expect("a TCP address")
    }

    /// The metrics endpoint's address (from readiness).
    #[track_caller]
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics.expect("started with --metrics")
    }

    /// Sends a signal by name (TERM, INT, USR2, STOP, KILL) with kill(1).
    #[track_caller]
    pub fn signal(&self, name: &str) {
        signal(self.child.id(), name).expect("kill");
    }

    /// Waits for the exit (at most [`WAIT`]); returns the status and the rest of stderr.
    #[track_caller]
    pub fn wait_exit(self) -> (ExitStatus, Vec<String>) {
        self.wait_exit_within(WAIT).expect("server did not exit")
    }

    /// Waits for the exit at most `within`; returns the status and the whole of stderr.
    /// `Err` (and the child killed on drop) if it is still running.
    pub fn wait_exit_within(mut self, within: Duration) -> io::Result<(ExitStatus, Vec<String>)> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait()? {
                while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(1)) {
                    self.log.push(line);
                }
                return Ok((status, std::mem::take(&mut self.log)));
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("PID {} did not exit within {within:?}", self.child.id()),
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends signal `name` (TERM, USR2, STOP, ...) to `pid` with kill(1).
pub fn signal(pid: u32, name: &str) -> io::Result<()> {
    let status = Command::new("kill")
        .arg("-s")
        .arg(name)
        .arg(pid.to_string())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("kill -s {name} {pid}: {status}")))
    }
}

#[cfg(test)]
mod tests {
    use super::Ready;

    #[test]
    fn readiness_with_and_without_metrics() {
        let r = Ready::parse("127.0.0.1:5000\n").unwrap();
        assert_eq!((r.addr.as_str(), r.metrics), ("127.0.0.1:5000", None));
        let r = Ready::parse("unix:/tmp/s\nhttp://127.0.0.1:9/metrics\n").unwrap();
        assert_eq!(r.addr, "unix:/tmp/s");
        assert_eq!(r.metrics, Some("127.0.0.1:9".parse().unwrap()));
    }

    #[test]
    fn readiness_empty_or_garbled_is_an_error() {
        assert!(Ready::parse("").is_err());
        assert!(Ready::parse("127.0.0.1:1\nlistening\n").is_err());
    }
}
