//! Behind a real HAProxy (Debian package `haproxy`; `.ci/run` installs it): with
//! `send-proxy-v2` or `send-proxy` and `--proxy-protocol-from`, the per-source limit counts
//! each real client; without them every client is HAProxy, and one abusive host shuts
//! everyone out. HAProxy's health checks (v2 `LOCAL`; v1, a header naming HAProxy's own
//! addresses) keep the backend up.
//!
//! Clients are distinct loopback addresses, bound before they connect to HAProxy's front.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tabecho::counters::HeaderResult;
use tabecho::server::Stats;

use crate::util::*;

const ABUSIVE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
const LIMIT: u32 = 100;
const PER_SOURCE_LINE: &[u8] = b"error: too many connections from your address\t";
/// Free-port races: another test may take the port between our probe and HAProxy's bind.
const PORT_ATTEMPTS: usize = 5;

/// HAProxy in front of one tabecho backend, killed on drop.
struct Haproxy {
    child: Child,
    front: SocketAddr,
    stats: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port, probed by binding it.
fn free_port() -> u16 {
    let probe = TcpListener::bind("127.0.0.1:0").expect("bind a probe");
    probe.local_addr().expect("its address").port()
}

impl Haproxy {
    /// HAProxy on a free loopback port, relaying to `backend` with `send_proxy` on its
    /// server line (`send-proxy-v2`, `send-proxy`, or nothing), health-checking it with the
    /// protocol every 200 ms; returns once the backend is UP.
    #[track_caller]
    fn start(backend: SocketAddr, send_proxy: &str) -> Haproxy {
        for _ in 0..PORT_ATTEMPTS {
            let dir = tempfile::tempdir().expect("a temp dir");
            let stats = dir.path().join("stats.sock");
            let port = free_port();
            let config = format!(
                "global\n\
                 \x20   stats socket {stats} mode 600 level admin\n\
                 defaults\n\
                 \x20   mode tcp\n\
                 \x20   timeout connect 1s\n\
                 \x20   timeout client 30s\n\
                 \x20   timeout server 30s\n\
                 \x20   timeout check 1s\n\
                 frontend front\n\
                 \x20   bind 127.0.0.1:{port}\n\
                 \x20   default_backend back\n\
                 backend back\n\
                 \x20   option tcp-check\n\
                 \x20   tcp-check connect default\n\
                 \x20   tcp-check send \"health\\t\"\n\
                 \x20   tcp-check expect string \"server got:health\\t\"\n\
                 \x20   server s1 {backend} {send_proxy} check inter 200ms fall 2 rise 1\n",
                stats = stats.display(),
            );
            let path = dir.path().join("haproxy.cfg");
            std::fs::write(&path, config).expect("write the config");
            let child = Command::new("haproxy")
                .args(["-db", "-f"])
                .arg(&path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("haproxy (Debian package `haproxy`; .ci/run installs it)");
            let mut haproxy = Haproxy {
                child,
                front: SocketAddr::from(([127, 0, 0, 1], port)),
                stats,
                _dir: dir,
            };
            if haproxy.until_up() {
                return haproxy;
            }
        }
        panic!("HAProxy never came up in {PORT_ATTEMPTS} attempts");
    }

    /// Waits until the backend's server is UP; false if HAProxy exited (its port taken).
    fn until_up(&mut self) -> bool {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return false;
            }
            if self.status().as_deref() == Some("UP") {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the backend never came UP: {:?}", self.status());
    }

    /// The backend server's status (`UP`, `DOWN`, ...), from the stats socket.
    fn status(&self) -> Option<String> {
        let text = ask(&self.stats, "show stat\n")?;
        let header: Vec<&str> = text
            .lines()
            .next()?
            .trim_start_matches("# ")
            .split(',')
            .collect();
        let column = header.iter().position(|h| *h == "status")?;
        let row = text.lines().find(|l| l.starts_with("back,s1,"))?;
        row.split(',').nth(column).map(str::to_string)
    }
}

/// One command to HAProxy's stats socket; its whole answer.
fn ask(socket: &Path, command: &str) -> Option<String> {
    let mut s = UnixStream::connect(socket).ok()?;
    s.set_read_timeout(Some(WAIT)).ok()?;
    s.write_all(command.as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// What a client through HAProxy got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Got {
    /// The reply: served.
    Reply,
    /// The per-source line: refused by tabecho.
    Refused,
    /// Closed without a byte: HAProxy had no backend up (its checks were refused).
    Dropped,
}

/// A connection from `source` through HAProxy, one frame sent; kept open in `held` if
/// served.
fn try_client(front: SocketAddr, source: IpAddr, held: &mut Vec<TcpStream>) -> Got {
    let mut c = connect_from(source, front);
    c.write_all(b"p\t").expect("write");
    let want = reply(b"p");
    let mut got = Vec::new();
    let mut buf = [0u8; 128];
    while got.len() < want.len().max(PER_SOURCE_LINE.len()) && got != want {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    if got == want {
        held.push(c);
        return Got::Reply;
    }
    if got.is_empty() {
        return Got::Dropped;
    }
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(PER_SOURCE_LINE),
        "neither the reply nor the per-source line"
    );
    Got::Refused
}

/// What each source got: (served, refused by tabecho, dropped by HAProxy).
struct Outcome {
    abusive: (u32, u32, u32),
    other: (u32, u32, u32),
    /// The backend's status once the clients were held.
    status: Option<String>,
    stats: Stats,
}

/// tabecho (`threads` reactors, `--max-connections-per-source 100`, trusting HAProxy's
/// address if `trust`) behind HAProxy (`send_proxy` on its server line): 150 clients from
/// 127.0.0.2, then 20 from 127.0.0.3, all held open; the backend stays UP throughout.
fn through_haproxy(threads: usize, send_proxy: &str, trust: bool) -> Outcome {
    let server = TestServer::start_with(|c| {
        c.threads = threads;
        c.max_connections_per_source = Some(LIMIT);
        if trust {
            c.proxy_protocol_from = Some("127.0.0.1".parse().expect("trust list"));
        }
    });
    let haproxy = Haproxy::start(server.tcp(), send_proxy);
    let mut held = Vec::new();
    let mut count = |source, n| {
        let mut outcome = (0, 0, 0);
        for _ in 0..n {
            match try_client(haproxy.front, source, &mut held) {
                Got::Reply => outcome.0 += 1,
                Got::Refused => outcome.1 += 1,
                Got::Dropped => outcome.2 += 1,
            }
        }
        outcome
    };
    let abusive = count(ABUSIVE, 150);
    let other = count(OTHER, 20);
    // Three more health checks reach the server (each a connection, served or refused),
    // two of which decide a status (`fall 2`, `rise 1`): then look.
    let checks = || -> u64 {
        server
            .per_reactor()
            .iter()
            .map(|r| r.stats.accepted + r.stats.rejected + r.stats.rejected_per_source)
            .sum()
    };
    let before = checks();
    let deadline = Instant::now() + WAIT;
    while checks() < before + 3 {
        assert!(Instant::now() < deadline, "HAProxy stopped checking");
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = haproxy.status();
    drop(held);
    drop(haproxy);
    Outcome {
        abusive,
        other,
        status,
        stats: server.stop(),
    }
}

#[track_caller]
fn each_real_client_counts(threads: usize, send_proxy: &str) {
    let outcome = through_haproxy(threads, send_proxy, true);
    assert_eq!(
        outcome.abusive,
        (LIMIT, 50, 0),
        "150 from 127.0.0.2: exactly the limit"
    );
    assert_eq!(outcome.other, (20, 0, 0), "20 from 127.0.0.3: all served");
    assert_eq!(
        outcome.status.as_deref(),
        Some("UP"),
        "the health checks pass"
    );
    let headers = &outcome.stats.proxy_headers;
    if send_proxy == "send-proxy-v2" {
        // Its health checks send v2 `LOCAL`: served as HAProxy itself.
        assert_eq!(headers.get(HeaderResult::Proxied), 170, "{headers:?}");
        assert!(headers.get(HeaderResult::Local) > 0, "{headers:?}");
    } else {
        // HAProxy 2.6's v1 checks name the check's own addresses (HAProxy's): proxied.
        assert!(headers.get(HeaderResult::Proxied) > 170, "{headers:?}");
    }
}

#[test]
fn behind_haproxy_send_proxy_v2_each_real_client_counts_one_reactor() {
    each_real_client_counts(1, "send-proxy-v2");
}

#[test]
fn behind_haproxy_send_proxy_v2_each_real_client_counts_two_reactors() {
    each_real_client_counts(2, "send-proxy-v2");
}

#[test]
fn behind_haproxy_send_proxy_v1_each_real_client_counts_one_reactor() {
    each_real_client_counts(1, "send-proxy");
}

#[test]
fn behind_haproxy_send_proxy_v1_each_real_client_counts_two_reactors() {
    each_real_client_counts(2, "send-proxy");
}

/// Why the PROXY protocol: without it every client is HAProxy, the limit is global, and
/// one abusive host shuts everyone else out (HAProxy's own health checks included).
#[test]
fn behind_haproxy_without_the_proxy_protocol_one_host_shuts_everyone_out() {
    let outcome = through_haproxy(1, "", false);
    let (served, refused, dropped) = outcome.abusive;
    // The limit, less a slot one of HAProxy's checks (also counted as HAProxy) may hold
    // at the moment a client comes.
    assert!(
        (LIMIT - 2..=LIMIT).contains(&served),
        "{:?}",
        outcome.abusive
    );
    assert_eq!(served + refused + dropped, 150, "{:?}", outcome.abusive);
    // Every client counts as HAProxy: refused by tabecho, or dropped by HAProxy once its
    // own checks, refused the same way, have marked the backend down.
    assert_eq!(outcome.other.0, 0, "{:?}", outcome.other);
    assert_eq!(
        outcome.status.as_deref(),
        Some("DOWN"),
        "its checks are refused too"
    );
}
