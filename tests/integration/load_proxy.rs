//! `tabecho load --proxy-header v1|v2 --proxy-source IP[/PREFIX]`: every connection begins
//! with a whole, valid PROXY header naming its own source and the server's address, and
//! the load after it is verified as ever. The server is the test's own: it parses each
//! connection's first bytes with `tabecho::proxy_protocol::parse`, reports the header,
//! then answers the bytes after it as tabecho does.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

use tabecho::addr::ListenAddr;
use tabecho::load::{LoadOptions, ProxyHeaders, ProxyVersion};
use tabecho::proxy_protocol::{parse, Parsed, ProxyHeader};

use crate::util::*;

/// What the test's server saw first on one connection: the header's version (`'1'` or
/// `'2'`) and what it says, or why there was none.
type Seen = Result<(char, ProxyHeader), String>;

/// A tab-echo server on 127.0.0.1:0 for `connections` connections, each of which must
/// begin with a PROXY header; each connection's header is sent on `seen`.
struct ProxyEcho {
    addr: SocketAddr,
    seen: Receiver<Seen>,
}

impl ProxyEcho {
    fn start(connections: usize) -> ProxyEcho {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap();
        let (tx, seen) = mpsc::channel();
        std::thread::spawn(move || {
            for _ in 0..connections {
                let Ok((conn, _)) = listener.accept() else {
                    return;
                };
                let tx = tx.clone();
                std::thread::spawn(move || serve(conn, &tx));
            }
        });
        ProxyEcho { addr, seen }
    }

    /// The headers of `n` connections, sorted; fails the test on a connection without
    /// one, or if they do not all come within [`WAIT`].
    #[track_caller]
    fn headers(&self, n: usize) -> Vec<(char, ProxyHeader)> {
        let mut all: Vec<(char, ProxyHeader)> = (0..n)
            .map(|i| match self.seen.recv_timeout(WAIT) {
                Ok(Ok(seen)) => seen,
                Ok(Err(why)) => panic!("connection {i}: {why}"),
                Err(e) => panic!("connection {i}: no header within {WAIT:?}: {e}"),
            })
            .collect();
        all.sort_by_key(|(v, h)| (*v, format!("{h:?}")));
        all
    }
}

/// One connection: its header, then tab-echo on the bytes after it, until EOF.
fn serve(mut conn: TcpStream, seen: &Sender<Seen>) {
    let _ = conn.set_read_timeout(Some(WAIT));
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending = Vec::new();
    let header = loop {
        match parse(&pending) {
            Parsed::Incomplete => {}
            Parsed::Complete { header, len } => {
                let version = if pending[0] == b'P' { '1' } else { '2' };
                pending.drain(..len);
                break (version, header);
            }
            Parsed::Invalid(why) => {
                let _ = seen.send(Err(format!("invalid header ({why}): {pending:?}")));
                return;
            }
        }
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => {
                let _ = seen.send(Err(format!("ended before a whole header: {pending:?}")));
                return;
            }
            Ok(n) => pending.extend_from_slice(&buf[..n]),
        }
    };
    let _ = seen.send(Ok(header));
    loop {
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(at) = pending[start..].iter().position(|&b| b == b'\t') {
            out.extend_from_slice(&reply(&pending[start..start + at]));
            start += at + 1;
        }
        pending.drain(..start);
        if conn.write_all(&out).is_err() {
            return;
        }
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
        }
    }
}

fn proxied(source: &str, destination: SocketAddr) -> ProxyHeader {
    ProxyHeader::Proxied {
        source: source.parse().unwrap(),
        destination,
    }
}

#[test]
fn load_v2_headers_deal_the_prefix_round_robin_and_the_frames_follow_intact() {
    let server = ProxyEcho::start(6);
    let mut options = LoadOptions::new(ListenAddr::Tcp(server.addr));
    options.connections = 6;
    options.threads = 2;
    options.pipeline = 8;
    options.frames_per_connection = Some(50);
    options.duration = WAIT;
    options.drain = Duration::from_secs(2);
    // Two hosts: 10.7.0.1 and 10.7.0.2 (not the network's .0, nor its broadcast .3).
    options.proxy = Some(ProxyHeaders::new(
        ProxyVersion::V2,
        "10.7.0.0/30".parse().unwrap(),
    ));
    let report = run_load(&options);
    assert!(report.verified(), "{}", report.to_text());
    assert_eq!(report.frames_answered, 300);
    let mut want: Vec<(char, ProxyHeader)> = [
        "10.7.0.1:1024",
        "10.7.0.2:1024",
        "10.7.0.1:1025",
        "10.7.0.2:1025",
        "10.7.0.1:1026",
        "10.7.0.2:1026",
    ]
    .iter()
    .map(|s| ('2', proxied(s, server.addr)))
    .collect();
    want.sort_by_key(|(v, h)| (*v, format!("{h:?}")));
    assert_eq!(server.headers(6), want);
}

#[test]
fn load_binary_sends_v1_headers_from_one_source() {
    let server = ProxyEcho::start(3);
    let addr = server.addr.to_string();
    let (code, out, err) = tabecho(
        &[
            "load",
            "--addr",
            &addr,
            "-c",
            "3",
            "-t",
            "1",
            "--frames",
            "20",
            "-d",
            "10s",
            "--proxy-header",
            "v1",
            "--proxy-source",
            "127.0.0.9",
        ],
        b"",
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("60 sent, 60 answered, 0 lost, 0 corrupt"),
        "{out}"
    );
    assert!(
        out.contains("PROXY v1 headers from 127.0.0.9/32 (1 source)"),
        "{out}"
    );
    let want: Vec<(char, ProxyHeader)> = ["127.0.0.9:1024", "127.0.0.9:1025", "127.0.0.9:1026"]
        .iter()
        .map(|s| ('1', proxied(s, server.addr)))
        .collect();
    assert_eq!(server.headers(3), want);
}

#[test]
fn load_binary_refuses_a_proxy_header_without_its_source_and_bad_values() {
    for args in [
        &["--proxy-header", "v2"][..],
        &["--proxy-source", "10.0.0.0/8"],
        &["--proxy-header", "v3", "--proxy-source", "10.0.0.1"],
        &["--proxy-header", "v1", "--proxy-source", "10.0.0.0/33"],
        &["--proxy-header", "v1", "--proxy-source", "localhost"],
    ] {
        let mut all = vec!["load", "--addr", "127.0.0.1:1", "-d", "100ms"];
        all.extend_from_slice(args);
        let (code, _, err) = tabecho(&all, b"");
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains("--proxy-"), "{args:?}: {err}");
    }
}
