//! ListenAddr: where a server listens or a client connects, TCP `host:port` or `unix:/path`.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// The prefix that marks a Unix stream socket path.
pub const UNIX_PREFIX: &str = "unix:";

/// A TCP socket address or a Unix stream socket path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// `host:port`, IPv4 or `[v6]:port`; a host name is resolved once, first address wins.
    Tcp(SocketAddr),
    /// `unix:/path/to/socket`.
    Unix(PathBuf),
}

impl FromStr for ListenAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix(UNIX_PREFIX) {
            if path.is_empty() {
                return Err("unix: needs a path, as in unix:/tmp/tabecho.sock".into());
            }
            return Ok(ListenAddr::Unix(PathBuf::from(path)));
        }
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(ListenAddr::Tcp(addr));
        }
        match s.to_socket_addrs() {
            Ok(mut addrs) => addrs
                .next()
                .map(ListenAddr::Tcp)
                .ok_or_else(|| format!("{s}: the name has no address")),
            Err(e) => Err(format!("{s}: not host:port, [v6]:port or unix:/path ({e})")),
        }
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(addr) => write!(f, "{addr}"),
            ListenAddr::Unix(path) => write!(f, "{UNIX_PREFIX}{}", path.display()),
        }
    }
}

/// Parses a duration written as a number and a unit: `250ms`, `2s`, `1.5s`, `5m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("{s:?}: needs a unit (ms, s, m or h), as in 2s or 250ms"))?;
    let (number, unit) = s.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{s:?}: {number:?} is not a number"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tcp_v4_v6_and_unix() {
        assert_eq!(
            "127.0.0.1:8085".parse::<ListenAddr>().unwrap(),
            ListenAddr::Tcp("127.0.0.1:8085".parse().unwrap())
        );
        assert_eq!(
            "[::1]:0".parse::<ListenAddr>().unwrap(),
            ListenAddr::Tcp("[::1]:0".parse().unwrap())
        );
        assert_eq!(
            "unix:/tmp/x.sock".parse::<ListenAddr>().unwrap(),
            ListenAddr::Unix("/tmp/x.sock".into())
        );
        assert_eq!(
            "unix:/tmp/x.sock"
                .parse::<ListenAddr>()
                .unwrap()
                .to_string(),
            "unix:/tmp/x.sock"
        );
    }

    #[test]
    fn rejects_garbage() {
        assert!("unix:".parse::<ListenAddr>().is_err());
        assert!("no-port".parse::<ListenAddr>().is_err());
        assert!("127.0.0.1:99999".parse::<ListenAddr>().is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("2").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("2 weeks").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
