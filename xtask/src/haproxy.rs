//! HAProxy as the checks run it: deploy/haproxy.cfg, its addresses from the environment,
//! and its state read from the stats socket (`show stat`, `show sess`) without socat.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A stats socket (`stats socket` in deploy/haproxy.cfg).
pub struct Stats {
    pub socket: PathBuf,
}

/// One session HAProxy proxies: the client's address and the server it went to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub src: std::net::SocketAddr,
    pub server: String,
}

impl Stats {
    /// Sends `command` and reads the whole answer (HAProxy closes after one command).
    pub fn ask(&self, command: &str) -> std::io::Result<String> {
        let mut s = UnixStream::connect(&self.socket)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(format!("{command}\n").as_bytes())?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    }

    /// `show stat` as rows of column name to value (the CSV's header names them).
    pub fn rows(&self) -> std::io::Result<Vec<BTreeMap<String, String>>> {
        Ok(parse_stat(&self.ask("show stat")?))
    }

    /// Column `col` of server (or FRONTEND/BACKEND) `sv`'s row; "" if absent.
    pub fn get(&self, sv: &str, col: &str) -> String {
        self.rows()
            .ok()
            .and_then(|rows| {
                rows.into_iter()
                    .find(|r| r.get("svname").map(String::as_str) == Some(sv))
                    .and_then(|r| r.get(col).cloned())
            })
            .unwrap_or_default()
    }

    /// A numeric column (0 if absent or empty).
    pub fn num(&self, sv: &str, col: &str) -> u64 {
        self.get(sv, col).parse().unwrap_or(0)
    }

    /// Waits (polling every 50 ms, at most `within`) until server `sv`'s status starts
    /// with `want` (`UP`, `DOWN`); the time waited, or `Err` with the last status.
    pub fn until_status(&self, sv: &str, want: &str, within: Duration) -> Result<Duration, String> {
        let start = Instant::now();
        loop {
            let status = self.get(sv, "status");
            if status.starts_with(want) {
                return Ok(start.elapsed());
            }
            if start.elapsed() > within {
                return Err(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The sessions proxied to a server now (`show sess`).
    pub fn sessions(&self) -> std::io::Result<Vec<Session>> {
        Ok(parse_sessions(&self.ask("show sess")?))
    }
}

/// The sessions of a `show sess` answer: each line's `src=` and `srv=` (sessions without
/// a server, as the stats socket's own, are left out).
pub fn parse_sessions(text: &str) -> Vec<Session> {
    text.lines()
        .filter_map(|l| {
            let field = |name: &str| {
                l.split_whitespace()
                    .find_map(|t| t.strip_prefix(name))
                    .map(str::to_string)
            };
            let src = field("src=")?.parse().ok()?;
            let server = field("srv=")?;
            Some(Session { src, server })
        })
        .collect()
}

/// `show stat`'s CSV as rows of column name to value (the header names them).
pub fn parse_stat(text: &str) -> Vec<BTreeMap<String, String>> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or("")
        .trim_start_matches("# ")
        .split(',')
        .collect();
    lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            header
                .iter()
                .zip(l.split(','))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// deploy/haproxy.cfg in the workspace.
pub fn config(root: &Path) -> PathBuf {
    root.join("deploy/haproxy.cfg")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_name_their_server_and_source() {
        let text = "0x55d1: proto=tcpv4 src=10.231.77.1:45678 fe=tabecho be=tabecho srv=tabecho3 ts=00 age=3s\n\
                    0x55d2: proto=unix_stream src=unix:1 fe=GLOBAL be=<NONE> srv=<none> ts=00\n";
        let s = parse_sessions(text);
        assert_eq!(s.len(), 1, "{s:?}");
        assert_eq!(s[0].server, "tabecho3");
        assert_eq!(s[0].src, "10.231.77.1:45678".parse().unwrap());
    }

    #[test]
    fn stat_rows_are_keyed_by_the_header() {
        let text = "# pxname,svname,scur,status\ntabecho,FRONTEND,3,OPEN\ntabecho,tabecho1,2,UP\n";
        let rows = parse_stat(text);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1]["svname"], "tabecho1");
        assert_eq!(rows[1]["status"], "UP");
    }
}
