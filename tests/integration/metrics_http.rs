//! The metrics endpoint on reactor 0's own loop (docs/PROTOCOL.md "Metrics"): keep-alive,
//! `/ready` through a shutdown, each HTTP limit with its documented outcome, and the
//! thread count (no thread of its own).

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use tabecho::http::{HEAD_TIMEOUT, MAX_HEAD};
use tabecho::metrics::MAX_CONNECTIONS;

use crate::util::*;

const GET_METRICS: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n";
const GET_READY: &[u8] = b"GET /ready HTTP/1.1\r\nHost: t\r\n\r\n";

/// Sends `request` on `s` and reads its response.
#[track_caller]
fn ask(s: &mut BufReader<TcpStream>, request: &[u8]) -> HttpResponse {
    s.get_mut().write_all(request).expect("write a request");
    read_response(s).expect("a response")
}

#[test]
fn keep_alive_serves_requests_one_after_another_on_one_connection() {
    let server = TestServer::start_with_metrics();
    let mut s = BufReader::new(connect(server.metrics_addr()));
    for _ in 0..3 {
        let page = ask(&mut s, GET_METRICS);
        assert_eq!(page.status, 200, "{}", page.head);
        let body = String::from_utf8(page.body).unwrap();
        assert!(
            body.contains("tabecho_frames_total{reactor=\"0\"}"),
            "{body}"
        );
        assert!(
            body.contains(&format!("reactor=\"{}\"", test_threads() - 1)),
            "every reactor's series: {body}"
        );
        assert_eq!(ask(&mut s, GET_READY).status, 200);
    }
    // HEAD: the same head, no body.
    s.get_mut()
        .write_all(b"HEAD /ready HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut head = String::new();
    while !head.ends_with("\r\n\r\n") {
        let mut byte = [0];
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0] as char);
    }
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("Content-Length: 6\r\n"), "{head}");
    // Then a 404 and a 405 keep the connection too.
    assert_eq!(
        ask(&mut s, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n").status,
        404
    );
    assert_eq!(
        ask(&mut s, b"DELETE /metrics HTTP/1.1\r\nHost: x\r\n\r\n").status,
        405
    );
    assert_eq!(ask(&mut s, GET_READY).status, 200);
}

#[test]
fn absolute_form_is_served_and_a_post_with_a_body_is_405_then_closed() {
    let server = TestServer::start_with_metrics();
    let addr = server.metrics_addr();
    let mut s = BufReader::new(connect(addr));
    // RFC 9112 §3.2.2: a server accepts the absolute form.
    let absolute = format!("GET http://{addr}/metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let page = ask(&mut s, absolute.as_bytes());
    assert_eq!(page.status, 200, "{}", page.head);
    // HTTP/1.1 without Host: 400 and a close.
    assert_eq!(ask(&mut s, b"GET /metrics HTTP/1.1\r\n\r\n").status, 400);
    // A POST with a body: 405 with Allow, then the close (its body is never read).
    let mut s = BufReader::new(connect(addr));
    let post = ask(
        &mut s,
        b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi",
    );
    assert_eq!(post.status, 405, "{}", post.head);
    assert!(post.head.contains("Allow: GET, HEAD\r\n"), "{}", post.head);
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).expect("EOF after the 405");
    assert!(rest.is_empty(), "{rest:?}");
}

#[test]
fn ready_turns_503_at_sigterm_while_a_connection_keeps_the_server_draining() {
    let mut server = ServerProcess::spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
        "--shutdown-grace",
        "30s",
    ]);
    let metrics = server.metrics_addr();
    let mut scraper = BufReader::new(connect(metrics));
    assert_eq!(ask(&mut scraper, GET_READY).status, 200);
    // A client that keeps its connection open holds the server in its drain.
    let mut client = connect(server.tcp());
    round_trip(&mut client, b"hold");
    server.signal("TERM");
    server.wait_for_line(|l| l.contains("shutting down"));
    // The phase changes on reactor 0's next turn after the signal: ask until it has.
    let deadline = Instant::now() + WAIT;
    loop {
        let ready = ask(&mut scraper, GET_READY);
        if ready.status == 503 {
            assert_eq!(ready.body, b"draining\n");
            break;
        }
        assert_eq!(ready.status, 200);
        assert!(Instant::now() < deadline, "/ready never turned 503");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Still draining: new scrapers are served, and the page is still there.
    assert_eq!(server.child.try_wait().unwrap(), None, "exited early");
    let (status, page) = http_get(metrics, "/metrics");
    assert_eq!(status, 200);
    assert_eq!(total(&page, "tabecho_frames_total"), 1.0);
    assert_eq!(http_get(metrics, "/ready").0, 503);
    // The client's EOF ends the drain.
    drop(client);
    let (status, _) = server.wait_exit();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_head_trickled_a_byte_at_a_time_is_closed_at_the_head_timeout() {
    let server = TestServer::start_with_metrics();
    let mut s = connect(server.metrics_addr());
    let start = Instant::now();
    let mut writer = s.try_clone().unwrap();
    // One byte every 100 ms of a head that never ends: the deadline counts from the
    // head's start, so bytes do not move it.
    let trickle = std::thread::spawn(move || {
        let head = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ";
        for i in 0.. {
            let byte = head.get(i).copied().unwrap_or(b'a');
            if writer.write_all(&[byte]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let (got, _) = read_to_end(&mut s);
    let took = start.elapsed();
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    assert!(took >= HEAD_TIMEOUT, "closed after {took:?}");
    assert!(
        took < HEAD_TIMEOUT + Duration::from_secs(3),
        "closed after {took:?}"
    );
    drop(s);
    trickle.join().unwrap();
}

#[test]
fn a_silent_connection_is_closed_at_the_head_timeout() {
    let server = TestServer::start_with_metrics();
    let mut s = connect(server.metrics_addr());
    let start = Instant::now();
    let (got, reset) = read_to_end(&mut s);
    let took = start.elapsed();
    assert!(got.is_empty());
    assert_eq!(reset, None);
    assert!(took >= HEAD_TIMEOUT, "closed after {took:?}");
    assert!(
        took < HEAD_TIMEOUT + Duration::from_secs(3),
        "closed after {took:?}"
    );
}

#[test]
fn a_garbage_head_gets_400_and_a_close() {
    let server = TestServer::start_with_metrics();
    let mut s = connect(server.metrics_addr());
    s.write_all(b"\x16\x03\x01\x02\x00 not http\r\n\r\n")
        .unwrap();
    let (got, reset) = read_to_end(&mut s);
    let got = String::from_utf8(got).unwrap();
    assert!(got.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{got}");
    assert!(got.contains("Connection: close\r\n"));
    assert_eq!(reset, None);
}

#[test]
fn a_head_over_8_kib_gets_431_and_a_close() {
    let server = TestServer::start_with_metrics();
    let mut s = connect(server.metrics_addr());
    let mut head = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    head.resize(MAX_HEAD + 1024, b'a');
    s.write_all(&head).unwrap();
    let (got, reset) = read_to_end(&mut s);
    let got = String::from_utf8(got).unwrap();
    assert!(
        got.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
        "{got}"
    );
    assert_eq!(reset, None, "the close lingers: no reset erases the answer");
}

#[test]
fn the_connection_past_the_limit_gets_503_and_a_close() {
    let server = TestServer::start_with_metrics();
    let addr = server.metrics_addr();
    // Each answered once: the server holds all of them.
    let mut held: Vec<_> = (0..MAX_CONNECTIONS)
        .map(|_| {
            let mut s = BufReader::new(connect(addr));
            assert_eq!(ask(&mut s, GET_READY).status, 200);
            s
        })
        .collect();
    let mut extra = connect(addr);
    let (got, reset) = read_to_end(&mut extra);
    let got = String::from_utf8(got).unwrap();
    assert!(
        got.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{got}"
    );
    assert_eq!(reset, None);
    // The held ones are still served.
    assert_eq!(ask(&mut held[0], GET_METRICS).status, 200);
    // One closes: its slot serves a new scraper (once the server has read the EOF).
    drop(held.pop());
    let deadline = Instant::now() + WAIT;
    loop {
        let mut s = connect(addr);
        s.write_all(GET_READY).unwrap();
        let mut s = BufReader::new(s);
        if read_response(&mut s).expect("an answer").status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the slot was never freed");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_scraper_that_does_not_read_is_not_read_either_and_others_are_served() {
    let server = TestServer::start_with_metrics();
    let addr = server.metrics_addr();
    // Small client buffers, so the stall comes after a few responses.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.set_send_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    let mut stuck: TcpStream = socket.into();
    stuck.set_nonblocking(true).unwrap();
    // Requests until the server stops reading them: then the writes block. A server that
    // kept reading (and buffering answers) would take all 64 MiB.
    let limit = 64 << 20;
    let mut written = 0;
    let mut partial = 0;
    let deadline = Instant::now() + WAIT;
    loop {
        match stuck.write(&GET_METRICS[partial..]) {
            Ok(n) => {
                written += n;
                partial = (partial + n) % GET_METRICS.len();
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                // Blocked: confirm it stays blocked (not a momentary full buffer).
                std::thread::sleep(Duration::from_millis(200));
                match stuck.write(&GET_METRICS[partial..]) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Ok(n) => {
                        written += n;
                        partial = (partial + n) % GET_METRICS.len();
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            Err(e) => panic!("{e}"),
        }
        assert!(
            written < limit,
            "the server read {written} bytes of requests"
        );
        assert!(Instant::now() < deadline, "the writes never blocked");
    }
    // Meanwhile another scraper is served.
    let (status, _) = http_get(addr, "/metrics");
    assert_eq!(status, 200);
    // Reading again, every request sent whole is answered, in order.
    stuck.set_nonblocking(false).unwrap();
    stuck.set_read_timeout(Some(WAIT)).unwrap();
    let mut rest = stuck.try_clone().unwrap();
    rest.set_nonblocking(false).unwrap();
    let tail = GET_METRICS[partial..].to_vec();
    let finisher = std::thread::spawn(move || {
        if partial != 0 {
            rest.write_all(&tail).unwrap();
        }
        rest.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let requests = written.div_ceil(GET_METRICS.len());
    let mut reader = BufReader::new(stuck);
    for i in 0..requests {
        let response =
            read_response(&mut reader).unwrap_or_else(|| panic!("answer {i} of {requests}"));
        assert_eq!(response.status, 200);
    }
    assert!(
        read_response(&mut reader).is_none(),
        "more answers than requests"
    );
    finisher.join().unwrap();
}

#[test]
fn one_reactor_is_one_thread_with_or_without_metrics() {
    for args in [
        &["--listen", "127.0.0.1:0", "--threads", "1"][..],
        &[
            "--listen",
            "127.0.0.1:0",
            "--threads",
            "1",
            "--metrics",
            "127.0.0.1:0",
        ],
    ] {
        let server = ServerProcess::spawn(args);
        let mut c = connect(server.tcp());
        round_trip(&mut c, b"x");
        if args.contains(&"--metrics") {
            assert_eq!(http_get(server.metrics_addr(), "/metrics").0, 200);
        }
        assert_eq!(thread_count(server.child.id()), 1, "{args:?}");
    }
}

#[test]
fn n_reactors_are_n_threads_with_metrics() {
    let server = ServerProcess::spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--threads",
        "3",
        "--metrics",
        "127.0.0.1:0",
    ]);
    let (status, page) = http_get(server.metrics_addr(), "/metrics");
    assert_eq!(status, 200);
    assert!(
        page.contains("tabecho_frames_total{reactor=\"2\"} 0"),
        "{page}"
    );
    assert_eq!(thread_count(server.child.id()), 3);
}

#[test]
fn hostile_scrapers_cost_a_verified_load_nothing_and_a_scrape_after_is_quick() {
    let server = TestServer::start_with_metrics();
    let metrics = server.metrics_addr();
    // 20 garbage heads, each answered 400 (and closed).
    for _ in 0..20 {
        let mut s = connect(metrics);
        s.write_all(b"\x00\x01garbage\r\n\r\n").unwrap();
        let (got, _) = read_to_end(&mut s);
        assert!(got.starts_with(b"HTTP/1.1 400 "), "{got:?}");
    }
    // 100 heads trickled a byte every 0.5 s, and 100 silent connections: 64 take the
    // slots, the rest are answered 503; the slots free at the head timeout.
    let slow: Vec<TcpStream> = (0..100).map(|_| connect(metrics)).collect();
    let silent: Vec<TcpStream> = (0..100).map(|_| connect(metrics)).collect();
    let trickler = std::thread::spawn(move || {
        let mut slow = slow;
        let head = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ";
        let until = Instant::now() + HEAD_TIMEOUT + Duration::from_secs(3);
        let mut i = 0;
        while Instant::now() < until && !slow.is_empty() {
            let byte = head.get(i).copied().unwrap_or(b'a');
            slow.retain_mut(|s| s.write_all(&[byte]).is_ok());
            i += 1;
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    // Meanwhile a verified load on the echo port, lasting past the head timeout.
    let mut options = tabecho::load::LoadOptions::new(server.addr.clone());
    options.connections = 8;
    options.threads = 1;
    options.rate = Some(1000.0);
    options.duration = HEAD_TIMEOUT + Duration::from_secs(1);
    options.drain = Duration::from_secs(2);
    let report = run_load(&options);
    assert!(report.verified(), "{}", report.to_text());
    assert_eq!(report.lost, 0);
    assert!(report.frames_answered > 0);
    // Right after, a scrape is answered at once.
    let start = Instant::now();
    let (status, page) = http_get(metrics, "/metrics");
    let took = start.elapsed();
    assert_eq!(status, 200, "{page}");
    assert!(took < Duration::from_secs(1), "the scrape took {took:?}");
    trickler.join().unwrap();
    drop(silent);
}
