//! The PROXY protocol (`--proxy-protocol-from`): a trusted peer's v1 and v2 headers, whole,
//! split one byte at a time, or followed by frames in the same write; every invalid header
//! closed unanswered; a header too slow closed; `LOCAL` served as the proxy; an untrusted
//! peer's forged header answered as frame bytes; and the real source counted by the
//! per-source limit.
//!
//! The proxy is the test itself, on 127.0.0.1 (trusted); 127.0.0.4 is an untrusted peer.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use tabecho::counters::HeaderResult;
use tabecho::proxy_protocol::{encode_v1, encode_v2, encode_v2_local, Invalid};
use tabecho::server::Stats;

use crate::util::*;

const PROXY: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const UNTRUSTED: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4));
/// The line a connection over its source's limit gets.
const PER_SOURCE_LINE: &[u8] = b"error: too many connections from your address\t";

fn client(n: u8) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, n], 40_000 + u16::from(n)))
}

/// A server trusting 127.0.0.1 for PROXY headers, with `per_source` connections per
/// source if given, and a header timeout of `timeout`.
fn server(per_source: Option<u32>, timeout: Duration) -> TestServer {
    TestServer::start_with(|c| {
        c.proxy_protocol_from = Some("127.0.0.1".parse().expect("trust list"));
        c.proxy_protocol_timeout = timeout;
        c.max_connections_per_source = per_source;
    })
}

/// Connects from the trusted proxy and writes `bytes` in one write.
fn proxied(server: &TestServer, bytes: &[u8]) -> TcpStream {
    let mut c = connect_from(PROXY, server.tcp());
    c.write_all(bytes).expect("write");
    c
}

/// The connection is closed without a byte of answer.
#[track_caller]
fn closed_unanswered(c: &mut TcpStream) {
    let (got, _) = read_to_end(c);
    assert!(
        got.is_empty(),
        "answered: {:?}",
        String::from_utf8_lossy(&got)
    );
}

#[test]
fn a_v1_header_and_frames_in_one_write_are_answered() {
    let server = server(None, Duration::from_secs(3));
    let header = encode_v1(client(1), server.tcp());
    let mut c = proxied(&server, &[header.as_slice(), b"one\ttwo\t"].concat());
    let want = [reply(b"one"), reply(b"two")].concat();
    assert_eq!(read_n(&mut c, want.len()), want);
    round_trip(&mut c, b"three");
    drop(c);
    let stats = server.stop();
    assert_eq!(stats.proxy_headers.get(HeaderResult::Proxied), 1);
    assert_eq!(stats.accepted, 1);
}

#[test]
fn v2_headers_for_ipv4_and_ipv6_clients_and_frames_in_one_write_are_answered() {
    let server = server(None, Duration::from_secs(3));
    let v6 = SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, 7], 5000));
    for source in [client(2), v6] {
        let destination = match source {
            SocketAddr::V4(_) => server.tcp(),
            SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 8085)),
        };
        let header = encode_v2(source, destination);
        let mut c = proxied(&server, &[header.as_slice(), b"hello\t"].concat());
        assert_eq!(read_n(&mut c, reply(b"hello").len()), reply(b"hello"));
    }
    let stats = server.stop();
    assert_eq!(stats.proxy_headers.get(HeaderResult::Proxied), 2);
}

#[test]
fn a_header_sent_one_byte_at_a_time_is_assembled() {
    let server = server(None, Duration::from_secs(3));
    for header in [
        encode_v1(client(3), server.tcp()),
        encode_v2(client(3), server.tcp()),
    ] {
        let mut c = connect_from(PROXY, server.tcp());
        for byte in &header {
            c.write_all(std::slice::from_ref(byte)).expect("write");
            c.flush().expect("flush");
        }
        round_trip(&mut c, b"after");
    }
    assert_eq!(server.stop().proxy_headers.get(HeaderResult::Proxied), 2);
}

#[test]
fn a_v1_line_of_108_bytes_without_crlf_is_closed_unanswered() {
    let server = server(None, Duration::from_secs(3));
    let mut line = b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2".to_vec();
    line.resize(108, b' ');
    let mut c = proxied(&server, &line);
    closed_unanswered(&mut c);
    let stats = server.stop();
    let invalid = stats
        .proxy_headers
        .get(HeaderResult::Invalid(Invalid::V1TooLong))
        + stats
            .proxy_headers
            .get(HeaderResult::Invalid(Invalid::V1Malformed));
    assert_eq!(invalid, 1, "{:?}", stats.proxy_headers);
    assert_eq!(stats.accepted, 0, "never served");
}

#[test]
fn a_v2_header_with_an_oversized_len_is_closed_unanswered() {
    let server = server(None, Duration::from_secs(3));
    let mut header = encode_v2(client(4), server.tcp());
    header[14..16].copy_from_slice(&60_000u16.to_be_bytes());
    let mut c = proxied(&server, &header[..16]);
    closed_unanswered(&mut c);
    let stats = server.stop();
    assert_eq!(
        stats
            .proxy_headers
            .get(HeaderResult::Invalid(Invalid::V2TooLong)),
        1
    );
}

#[test]
fn a_bad_signature_is_closed_unanswered() {
    let server = server(None, Duration::from_secs(3));
    let mut c = proxied(&server, b"hello\t");
    closed_unanswered(&mut c);
    let stats = server.stop();
    assert_eq!(
        stats
            .proxy_headers
            .get(HeaderResult::Invalid(Invalid::BadSignature)),
        1
    );
}

#[test]
fn no_header_before_the_timeout_is_closed_unanswered() {
    let server = server(None, Duration::from_millis(300));
    let mut c = proxied(&server, b"PROXY TCP4 ");
    closed_unanswered(&mut c);
    let mut silent = connect_from(PROXY, server.tcp());
    closed_unanswered(&mut silent);
    let stats = server.stop();
    assert_eq!(stats.proxy_headers.get(HeaderResult::Timeout), 2);
}

#[test]
fn local_is_served_as_the_proxy_itself() {
    let server = server(Some(1), Duration::from_secs(3));
    let mut c = proxied(&server, &encode_v2_local());
    round_trip(&mut c, b"health");
    // It counts as the proxy: a second LOCAL from the same proxy is over the limit of 1.
    let mut second = proxied(&server, &[encode_v2_local().as_slice(), b"x\t"].concat());
    assert_eq!(read_n(&mut second, PER_SOURCE_LINE.len()), PER_SOURCE_LINE);
    let stats = server.stop();
    assert_eq!(stats.proxy_headers.get(HeaderResult::Local), 2);
}

#[test]
fn an_untrusted_peers_forged_header_is_answered_as_frame_bytes() {
    let server = server(None, Duration::from_secs(3));
    let forged = b"PROXY TCP4 192.0.2.9 192.0.2.10 1 2\r\n";
    let mut c = connect_from(UNTRUSTED, server.tcp());
    c.write_all(&[forged.as_slice(), b"hi\t"].concat())
        .expect("write");
    let want = reply(&[forged.as_slice(), b"hi"].concat());
    assert_eq!(read_n(&mut c, want.len()), want);
    let stats = server.stop();
    assert_eq!(stats.proxy_headers.total(), 0, "no header was read");
}

/// Per-source limit 2, every connection through the one proxy: each real source gets
/// exactly 2, the third from one is refused with its line, and another source is served.
fn the_real_source_is_what_the_limit_counts(threads: usize) -> Stats {
    let server = TestServer::start_with(|c| {
        c.threads = threads;
        c.proxy_protocol_from = Some("127.0.0.1".parse().expect("trust list"));
        c.max_connections_per_source = Some(2);
    });
    let addr = server.tcp();
    let open = |n: u8| {
        let mut c = proxied(
            &server,
            &[encode_v2(client(n), addr).as_slice(), b"p\t"].concat(),
        );
        let mut got = vec![0u8; reply(b"p").len().max(PER_SOURCE_LINE.len())];
        let mut have = 0;
        while have < reply(b"p").len() {
            match c.read(&mut got[have..]) {
                Ok(0) | Err(_) => break,
                Ok(k) => have += k,
            }
        }
        got.truncate(have);
        (c, got)
    };
    let mut held = Vec::new();
    for _ in 0..2 {
        let (c, got) = open(5);
        assert_eq!(got, reply(b"p"), "served");
        held.push(c);
    }
    let (_refused, got) = open(5);
    assert!(
        PER_SOURCE_LINE.starts_with(&got) && !got.is_empty(),
        "the third from one source is refused: {:?}",
        String::from_utf8_lossy(&got)
    );
    for _ in 0..2 {
        let (c, got) = open(6);
        assert_eq!(got, reply(b"p"), "another source is served");
        held.push(c);
    }
    drop(held);
    server.stop()
}

#[test]
fn the_real_source_is_what_the_per_source_limit_counts_one_reactor() {
    let stats = the_real_source_is_what_the_limit_counts(1);
    assert_eq!(stats.rejected_per_source, 1);
    assert_eq!(stats.proxy_headers.get(HeaderResult::Proxied), 5);
}

#[test]
fn the_real_source_is_what_the_per_source_limit_counts_two_reactors() {
    let stats = the_real_source_is_what_the_limit_counts(2);
    assert_eq!(stats.rejected_per_source, 1);
    assert_eq!(stats.proxy_headers.get(HeaderResult::Proxied), 5);
}

/// A connection through the trusted proxy (this test) for `client`, with one frame
/// answered or refused: the reply, or the refusal line.
fn open_for(addr: SocketAddr, client: SocketAddr) -> (TcpStream, Vec<u8>) {
    let mut c = connect_from(PROXY, addr);
    c.write_all(&[encode_v2(client, addr).as_slice(), b"p\t"].concat())
        .expect("write");
    let want = reply(b"p");
    let mut got = Vec::new();
    let mut buf = [0u8; 128];
    while got.len() < want.len() {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    (c, got)
}

#[test]
fn after_an_upgrade_the_moved_connections_keep_their_real_source() {
    let mut server = ServerProcess::spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--proxy-protocol-from",
        "127.0.0.1",
        "--max-connections-per-source",
        "2",
        "--idle-timeout",
        "30s",
    ]);
    let addr = server.tcp();
    let mut held = Vec::new();
    for _ in 0..2 {
        let (c, got) = open_for(addr, client(7));
        assert_eq!(got, reply(b"p"), "served before the upgrade");
        held.push(c);
    }
    server.signal("USR2");
    let _new = crate::upgrade::wait_handover(&mut server);
    assert_eq!(crate::handover::wait_moved(&mut server), 2);
    // The old process is gone once what it held has moved.
    assert_eq!(server.wait_exit().0.code(), Some(0));
    for c in &mut held {
        round_trip(c, b"moved");
    }
    // The new process counts the moved ones under their real source: the limit holds...
    let (_third, got) = open_for(addr, client(7));
    assert!(
        !got.is_empty() && PER_SOURCE_LINE.starts_with(&got),
        "a third from the same client is refused: {:?}",
        String::from_utf8_lossy(&got)
    );
    // ...and another client, through the same proxy, is served.
    let (_other, got) = open_for(addr, client(8));
    assert_eq!(got, reply(b"p"), "another client is served");
}

#[test]
fn logs_name_the_real_client_and_the_proxy_it_came_through() {
    let mut server = ServerProcess::spawn_logging(
        "trace",
        "",
        &[
            "--listen",
            "127.0.0.1:0",
            "--proxy-protocol-from",
            "127.0.0.1",
        ],
    );
    let addr = server.tcp();
    let (mut c, got) = open_for(addr, client(9));
    assert_eq!(got, reply(b"p"));
    round_trip(&mut c, b"traced");
    let header = server.wait_for_line(|l| l.contains("PROXY header: 192.0.2.9:40009 via"));
    assert!(header.contains("127.0.0.1:"), "{header}");
    let trace = server.wait_for_line(|l| l.contains("client: ") && l.contains("traced"));
    assert!(
        trace.contains("client: 192.0.2.9:40009 via 127.0.0.1:"),
        "the trace line names the client and the proxy: {trace}"
    );
}

/// `tabecho load --proxy-header v2 --proxy-source 10.9.0.0/24` acts as 50 clients behind
/// one balancer: with a limit of one connection per source, every one is served and
/// verified; named as one source, all but one would be refused.
#[test]
fn the_load_generator_acts_as_many_clients_behind_a_balancer() {
    use tabecho::addr::ListenAddr;
    use tabecho::load::{LoadOptions, ProxyHeaders, ProxyVersion};
    let server = server(Some(1), Duration::from_secs(3));
    let mut options = LoadOptions::new(ListenAddr::Tcp(server.tcp()));
    options.connections = 50;
    options.threads = 2;
    options.pipeline = 4;
    options.frames_per_connection = Some(40);
    options.duration = WAIT;
    options.drain = Duration::from_secs(2);
    options.proxy = Some(ProxyHeaders::new(
        ProxyVersion::V2,
        "10.9.0.0/24".parse().unwrap(),
    ));
    let report = run_load(&options);
    assert!(report.verified(), "{}", report.to_text());
    assert_eq!(report.frames_answered, 50 * 40);
    let stats = server.stop();
    assert_eq!(stats.rejected_per_source, 0);
    assert_eq!(stats.proxy_headers.get(HeaderResult::Proxied), 50);
}

/// An IPv6 client a header names is keyed by `--source-prefix-v6` (default 64), as a
/// direct one is: two hosts of one /64 share a source, another /64 is another.
#[test]
fn an_ipv6_client_through_the_proxy_is_keyed_by_its_prefix() {
    let server = server(Some(1), Duration::from_secs(3));
    let addr = server.tcp();
    let host = |net: u16, host: u16| SocketAddr::from(([0x2001, 0xdb8, 0, net, 0, 0, 0, host], 1));
    let (_first, got) = open_for(addr, host(1, 1));
    assert_eq!(got, reply(b"p"), "served");
    let (_same_net, got) = open_for(addr, host(1, 2));
    assert!(
        !got.is_empty() && PER_SOURCE_LINE.starts_with(&got),
        "another host of the same /64 counts as the same source: {:?}",
        String::from_utf8_lossy(&got)
    );
    let (_other_net, got) = open_for(addr, host(2, 1));
    assert_eq!(got, reply(b"p"), "another /64 is served");
}

/// `unix` trusts every peer on a Unix socket (HAProxy's `server ... unix@PATH
/// send-proxy-v2`); without it, a Unix peer's header is frame bytes.
#[test]
fn unix_trusts_peers_on_a_unix_socket() {
    use std::os::unix::net::UnixStream;
    use tabecho::addr::ListenAddr;
    for trusted in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tabecho.sock");
        let server = TestServer::start_with(|c| {
            c.listen = ListenAddr::Unix(path.clone());
            let list = if trusted { "unix" } else { "127.0.0.1" };
            c.proxy_protocol_from = Some(list.parse().expect("trust list"));
        });
        let mut c = UnixStream::connect(&path).unwrap();
        c.set_read_timeout(Some(WAIT)).unwrap();
        let header = encode_v1(client(10), SocketAddr::from(([192, 0, 2, 1], 8085)));
        c.write_all(&[header.as_slice(), b"hi\t"].concat()).unwrap();
        let want = if trusted {
            reply(b"hi")
        } else {
            reply(&[header.as_slice(), b"hi"].concat())
        };
        assert_eq!(read_n(&mut c, want.len()), want, "trusted: {trusted}");
        drop(c);
        let stats = server.stop();
        assert_eq!(
            stats.proxy_headers.get(HeaderResult::Proxied),
            u64::from(trusted)
        );
    }
}
