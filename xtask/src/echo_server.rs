//! The servers the benchmark checks measure side by side: tabecho (its address from
//! `--ready-fd`) and a comparison server (the ceiling, tokio-echo) given a free port and
//! waited for by connecting, optionally under a wrapper (valgrind, perf). Killed on drop.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use harness::ServerProcess;

/// A server under measurement.
pub struct EchoServer {
    pub addr: SocketAddr,
    pub pid: u32,
    /// tabecho's metrics endpoint, when started with `--metrics` (from readiness).
    pub metrics: Option<SocketAddr>,
    tabecho: Option<ServerProcess>,
    other: Option<Child>,
}

impl EchoServer {
    /// `WRAPPER... BIN serve --listen 127.0.0.1:0 ARGS` (wrapper may be empty), its address
    /// from readiness (at most `within`).
    pub fn tabecho(wrapper: &[&str], bin: &Path, args: &[&str]) -> Result<EchoServer, String> {
        let mut c = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        c.args(["serve", "--listen", "127.0.0.1:0"]).args(args);
        let p = ServerProcess::start_ready(c, "info").map_err(|e| e.to_string())?;
        Ok(EchoServer {
            addr: p.tcp(),
            pid: p.pid(),
            metrics: p.metrics,
            tabecho: Some(p),
            other: None,
        })
    }

    /// `WRAPPER... BIN 127.0.0.1:PORT ARGS` on a free port, waited for by connecting (at
    /// most `within`).
    pub fn other(
        wrapper: &[&str],
        bin: &Path,
        args: &[&str],
        within: Duration,
    ) -> Result<EchoServer, String> {
        let port = crate::http::free_port().map_err(|e| e.to_string())?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut c = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let child = c
            .arg(addr.to_string())
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("{}: {e}", bin.display()))?;
        let mut server = EchoServer {
            addr,
            pid: child.id(),
            metrics: None,
            tabecho: None,
            other: Some(child),
        };
        let deadline = Instant::now() + within;
        while TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline {
                return Err(format!(
                    "{} did not listen within {within:?}",
                    bin.display()
                ));
            }
            if let Some(Ok(Some(status))) = server.other.as_mut().map(|c| c.try_wait()) {
                return Err(format!("{} exited: {status}", bin.display()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }

    /// SIGTERM, then waits (at most `within`) for the exit.
    pub fn stop(mut self, within: Duration) {
        let _ = harness::process::signal(self.pid, "TERM");
        if let Some(p) = self.tabecho.take() {
            let _ = p.wait_exit_within(within);
        }
        if let Some(c) = self.other.as_mut() {
            let deadline = Instant::now() + within;
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        if let Some(c) = self.other.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
