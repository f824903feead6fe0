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

/// Parses a TCP `host:port` (or `[v6]:port`): a name is resolved, the first address wins.
/// For the flags that take only TCP (`serve --metrics`, `tabecho stats`).
pub fn parse_tcp_addr(s: &str) -> Result<SocketAddr, String> {
    s.to_socket_addrs()
        .map_err(|e| format!("{s}: not host:port ({e})"))?
        .next()
        .ok_or_else(|| format!("{s}: the name has no address"))
}

/// The longest duration any flag takes: 365 days. Longer ones are typing mistakes, and
/// the server counts its deadlines in `u64` microseconds from its start, which
/// [`Duration::MAX`] would overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Parses a duration written as a number and a unit: `250ms`, `2s`, `1.5s`, `5m`, `1h`;
/// at most [`MAX_DURATION`].
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
    let too_long = || format!("{s:?}: longer than 365 days (8760h), the longest accepted");
    if seconds > MAX_DURATION.as_secs_f64() {
        return Err(too_long());
    }
    match Duration::try_from_secs_f64(seconds) {
        Ok(d) if d > MAX_DURATION => Err(too_long()),
        Ok(d) => Ok(d),
        Err(e) => Err(format!("{s:?}: {e}")),
    }
}

/// A duration as the command line writes it: parsed by [`parse_duration`], and displayed
/// so that it parses back (`2s`, `250ms`, `1.5s`), which lets clap show a default taken
/// from a `Duration` constant (`default_value_t`) instead of a second spelling of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DurationArg(pub Duration);

impl FromStr for DurationArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        parse_duration(s).map(DurationArg)
    }
}

impl fmt::Display for DurationArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.subsec_nanos() == 0 {
            write!(f, "{}s", d.as_secs())
        } else if d.subsec_nanos().is_multiple_of(1_000_000) {
            write!(f, "{}ms", d.as_millis())
        } else {
            // f64's shortest round-trip form: parses back to within a nanosecond.
            write!(f, "{}s", d.as_secs_f64())
        }
    }
}

impl From<DurationArg> for Duration {
    fn from(d: DurationArg) -> Duration {
        d.0
    }
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

    #[test]
    fn durations_stop_at_365_days() {
        assert_eq!(parse_duration("8760h").unwrap(), MAX_DURATION);
        assert_eq!(parse_duration("525600m").unwrap(), MAX_DURATION);
        let over = parse_duration("8760.001h").unwrap_err();
        assert!(over.contains("365 days"), "{over}");
        assert!(parse_duration("1000000000s").is_err());
        assert!(parse_duration("1e400s").is_err());
        assert!(parse_duration("99999999999999999999999h").is_err());
    }

    #[test]
    fn duration_args_display_as_they_parse() {
        for s in ["2s", "3s", "0s", "250ms", "1500ms", "8760h"] {
            let d: DurationArg = s.parse().unwrap();
            assert_eq!(d.to_string().parse::<DurationArg>().unwrap(), d, "{s}");
        }
        assert_eq!(DurationArg(Duration::from_secs(2)).to_string(), "2s");
        assert_eq!(DurationArg(Duration::from_millis(250)).to_string(), "250ms");
        assert_eq!(
            DurationArg(Duration::from_millis(1500)).to_string(),
            "1500ms"
        );
        let odd = DurationArg(Duration::new(1, 500));
        let back: DurationArg = odd.to_string().parse().unwrap();
        assert!(
            back.0.abs_diff(odd.0) <= Duration::from_nanos(1),
            "{back:?}"
        );
    }
}
