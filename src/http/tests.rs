//! `HttpConn` without sockets: a scripted transport, every limit at its boundary.

use std::collections::VecDeque;

use super::message::{BAD_REQUEST, HEAD_TOO_LARGE};
use super::*;

const S: u64 = 1_000_000;

/// A scripted non-blocking socket: reads return `chunks` one by one, then WouldBlock (or
/// EOF once `eof`); writes take at most `room` bytes, then WouldBlock.
#[derive(Default)]
struct Script {
    chunks: VecDeque<Vec<u8>>,
    eof: bool,
    room: usize,
    sent: Vec<u8>,
    shut: bool,
    reads: usize,
}

impl Script {
    fn new(room: usize) -> Script {
        Script {
            room,
            ..Script::default()
        }
    }
    fn push(&mut self, bytes: &[u8]) {
        self.chunks.push_back(bytes.to_vec());
    }
    fn sent_text(&self) -> String {
        String::from_utf8(self.sent.clone()).unwrap()
    }
}

impl Read for Script {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reads += 1;
        let Some(mut chunk) = self.chunks.pop_front() else {
            return if self.eof {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        };
        let n = chunk.len().min(buf.len());
        buf[..n].copy_from_slice(&chunk[..n]);
        if n < chunk.len() {
            self.chunks.push_front(chunk.split_off(n));
        }
        Ok(n)
    }
}

impl Write for Script {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.room);
        self.room -= n;
        self.sent.extend_from_slice(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Transport for Script {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shut = true;
        Ok(())
    }
}

const GET_METRICS: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";

fn metrics_request(keep_alive: bool, http10: bool) -> Request {
    Request {
        route: Route::Metrics,
        head_only: false,
        keep_alive,
        http10,
    }
}

/// Drives `head` through a fresh connection; returns what `drive` said and the connection.
fn after(head: &[u8]) -> (Next, HttpConn, Script) {
    let mut s = Script::new(usize::MAX);
    s.push(head);
    let mut conn = HttpConn::new(Site::Metrics, 0);
    let next = conn.drive(&mut s, 1);
    (next, conn, s)
}

#[test]
fn get_metrics_is_answered_and_the_connection_kept() {
    let (next, mut conn, mut s) = after(GET_METRICS);
    assert_eq!(next, Next::Answer(metrics_request(true, false)));
    conn.respond(Status::Ok, TEXT, b"page\n", 2);
    assert_eq!(conn.drive(&mut s, 3), Next::Wait);
    assert_eq!(
        s.sent_text(),
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 5\r\n\r\npage\n"
    );
    assert!(!s.shut);
    assert_eq!(conn.held_bytes(), 0, "nothing held between requests");
    assert_eq!(conn.deadline_us(), 3 + IDLE_TIMEOUT.as_micros() as u64);
}

#[test]
fn http10_gets_its_answer_then_the_close() {
    let (next, mut conn, mut s) = after(b"GET /metrics HTTP/1.0\r\n\r\n");
    assert_eq!(next, Next::Answer(metrics_request(false, true)));
    conn.respond(Status::Ok, TEXT, b"x", 2);
    assert_eq!(conn.drive(&mut s, 3), Next::Wait);
    assert!(s.sent_text().contains("Connection: close\r\n"));
    assert!(s.shut, "write side shut after the answer");
    assert_eq!(
        conn.expired(3 + LINGER.as_micros() as u64),
        Some(Expired::Close(HttpClose::Done))
    );
    s.eof = true;
    assert_eq!(conn.drive(&mut s, 4), Next::Close(HttpClose::Done));
}

#[test]
fn http10_keep_alive_is_announced() {
    let (next, mut conn, mut s) = after(b"GET /ready HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
    let Next::Answer(request) = next else {
        panic!("{next:?}")
    };
    assert_eq!(request.route, Route::Ready);
    assert!(request.keep_alive);
    conn.respond(Status::Ok, TEXT, b"ready\n", 2);
    conn.drive(&mut s, 3);
    assert!(s.sent_text().contains("Connection: keep-alive\r\n"));
    assert!(!s.shut);
}

#[test]
fn http11_connection_close_is_honoured() {
    let (next, ..) = after(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: TE, close\r\n\r\n");
    assert_eq!(next, Next::Answer(metrics_request(false, false)));
}

#[test]
fn head_gets_the_head_only() {
    let (next, mut conn, mut s) = after(b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(matches!(next, Next::Answer(r) if r.head_only));
    conn.respond(Status::Ok, TEXT, b"12345", 2);
    conn.drive(&mut s, 3);
    assert!(
        s.sent_text().ends_with("Content-Length: 5\r\n\r\n"),
        "{}",
        s.sent_text()
    );
}

#[test]
fn query_string_is_ignored() {
    let (next, ..) = after(b"GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(next, Next::Answer(metrics_request(true, false)));
}

#[test]
fn unknown_path_is_404_and_kept() {
    let (next, conn, s) = after(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(next, Next::Wait);
    assert!(s.sent_text().starts_with("HTTP/1.1 404 Not Found\r\n"));
    assert!(!s.shut);
    assert_eq!(conn.answering(), None);
}

#[test]
fn other_method_is_405_with_allow() {
    let (next, _, s) = after(b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(next, Next::Wait);
    let sent = s.sent_text();
    assert!(
        sent.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
        "{sent}"
    );
    assert!(sent.contains("Allow: GET, HEAD\r\n"));
    assert!(sent.ends_with("\r\n\r\nonly GET and HEAD\n"), "{sent}");
    assert!(!s.shut);
}

#[test]
fn other_method_with_a_body_is_405_and_a_close() {
    // The body is never read, so it would be taken for the next head: the answer closes.
    let (next, _, s) = after(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc");
    assert_eq!(next, Next::Wait);
    let sent = s.sent_text();
    assert!(
        sent.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
        "{sent}"
    );
    assert!(
        sent.contains("Allow: GET, HEAD\r\nConnection: close\r\n"),
        "{sent}"
    );
    assert!(s.shut);
}

#[test]
fn options_asterisk_and_connect_authority_are_405() {
    for head in [
        &b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n",
    ] {
        let (_, _, s) = after(head);
        let sent = s.sent_text();
        assert!(sent.starts_with("HTTP/1.1 405 "), "{sent}");
    }
}

#[test]
fn absolute_form_is_served_by_its_path() {
    for head in [
        &b"GET http://127.0.0.1:9100/metrics HTTP/1.1\r\nHost: 127.0.0.1:9100\r\n\r\n"[..],
        b"GET HTTP://x/metrics?y=1 HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        let (next, ..) = after(head);
        assert_eq!(next, Next::Answer(metrics_request(true, false)), "{head:?}");
    }
    // An empty path is `/`: not found, kept.
    let (_, _, s) = after(b"GET http://x HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(s.sent_text().starts_with("HTTP/1.1 404 "));
    assert!(!s.shut);
}

#[test]
fn a_target_that_is_no_path_is_400() {
    for head in [
        &b"GET * HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"GET metrics HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET ftp://x/metrics HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET http:///metrics HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        let (_, _, s) = after(head);
        assert_eq!(s.sent, BAD_REQUEST, "{head:?}");
    }
}

#[test]
fn http11_without_host_or_any_with_two_is_400() {
    for head in [
        &b"GET /metrics HTTP/1.1\r\n\r\n"[..],
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
        b"GET /metrics HTTP/1.0\r\nHost: x\r\nhost: y\r\n\r\n",
    ] {
        let (_, _, s) = after(head);
        assert_eq!(s.sent, BAD_REQUEST, "{head:?}");
        assert!(s.shut);
    }
    // HTTP/1.0 predates Host: served without one.
    let (next, ..) = after(b"GET /metrics HTTP/1.0\r\n\r\n");
    assert!(matches!(next, Next::Answer(_)));
}

#[test]
fn garbage_is_400_and_a_close() {
    let (next, _, s) = after(b"\x16\x03\x01 hello\r\n\r\n");
    assert_eq!(next, Next::Wait);
    assert_eq!(s.sent, BAD_REQUEST);
    assert!(s.shut);
}

#[test]
fn a_request_body_is_400() {
    for head in [
        &b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"[..],
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
    ] {
        let (_, _, s) = after(head);
        assert_eq!(s.sent, BAD_REQUEST);
    }
    let (next, ..) = after(b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    assert!(matches!(next, Next::Answer(_)));
}

/// A GET /metrics head of exactly `len` bytes (one padded header).
fn head_of(len: usize) -> Vec<u8> {
    let start = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: ";
    let end = b"\r\n\r\n";
    let mut head = start.to_vec();
    head.resize(len - end.len(), b'a');
    head.extend_from_slice(end);
    assert_eq!(head.len(), len);
    head
}

#[test]
fn head_of_exactly_the_limit_is_served() {
    let (next, ..) = after(&head_of(MAX_HEAD));
    assert_eq!(next, Next::Answer(metrics_request(true, false)));
}

#[test]
fn head_one_byte_over_the_limit_is_431_and_a_close() {
    let (next, conn, s) = after(&head_of(MAX_HEAD + 1));
    assert_eq!(next, Next::Wait);
    assert_eq!(s.sent, HEAD_TOO_LARGE);
    assert!(s.shut);
    assert_eq!(conn.held_bytes(), 0);
    // An unfinished head past the limit too, however it arrives.
    let mut s = Script::new(usize::MAX);
    for _ in 0..=MAX_HEAD {
        s.push(b"a");
    }
    let mut conn = HttpConn::new(Site::Metrics, 0);
    conn.drive(&mut s, 1);
    assert_eq!(s.sent, HEAD_TOO_LARGE);
}

#[test]
fn too_many_headers_is_431() {
    let mut head = b"GET /metrics HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..=MAX_HEADERS {
        head.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    let (_, _, s) = after(&head);
    assert_eq!(s.sent, HEAD_TOO_LARGE);
}

#[test]
fn a_head_split_at_every_point_is_one_request() {
    for split in 1..GET_METRICS.len() {
        let mut s = Script::new(usize::MAX);
        let mut conn = HttpConn::new(Site::Metrics, 0);
        s.push(&GET_METRICS[..split]);
        assert_eq!(conn.drive(&mut s, 1), Next::Wait, "split at {split}");
        assert_eq!(conn.held_bytes(), MAX_HEAD + 1);
        s.push(&GET_METRICS[split..]);
        assert_eq!(
            conn.drive(&mut s, 2),
            Next::Answer(metrics_request(true, false)),
            "split at {split}"
        );
    }
}

#[test]
fn pipelined_requests_are_answered_one_at_a_time() {
    let mut two = GET_METRICS.to_vec();
    two.extend_from_slice(b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n");
    let (next, mut conn, mut s) = after(&two);
    assert_eq!(next, Next::Answer(metrics_request(true, false)));
    // The second is not looked at until the first is answered and sent.
    assert_eq!(conn.drive(&mut s, 2), Next::Wait);
    conn.respond(Status::Ok, TEXT, b"1", 2);
    let Next::Answer(second) = conn.drive(&mut s, 3) else {
        panic!()
    };
    assert_eq!(second.route, Route::Ready);
}

#[test]
fn a_scraper_that_does_not_read_is_not_read_either() {
    let mut s = Script::new(10);
    s.push(GET_METRICS);
    let mut conn = HttpConn::new(Site::Metrics, 0);
    assert!(matches!(conn.drive(&mut s, 1), Next::Answer(_)));
    conn.respond(Status::Ok, TEXT, &[b'x'; 1000], 2);
    s.push(GET_METRICS);
    s.push(GET_METRICS);
    let reads = s.reads;
    for now in 3..10 {
        assert_eq!(conn.drive(&mut s, now), Next::Wait);
    }
    assert_eq!(s.reads, reads, "no read while a response is unsent");
    assert_eq!(s.chunks.len(), 2);
    // One response held, nothing else.
    assert!(conn.held_bytes() <= 1000 + MAX_RESPONSE_HEAD + MAX_HEAD + 1);
    // Without a byte written for the idle timeout, it is closed.
    let deadline = 3 + IDLE_TIMEOUT.as_micros() as u64;
    assert_eq!(conn.expired(deadline - 1), None);
    assert_eq!(
        conn.expired(deadline),
        Some(Expired::Close(HttpClose::Idle))
    );
}

#[test]
fn the_first_head_is_due_5_s_after_the_accept() {
    let conn = HttpConn::new(Site::Metrics, 7);
    let due = 7 + HEAD_TIMEOUT.as_micros() as u64;
    assert_eq!(conn.expired(due - 1), None);
    assert_eq!(
        conn.expired(due),
        Some(Expired::Close(HttpClose::HeadTimeout))
    );
}

#[test]
fn between_requests_idle_30_s_then_a_head_has_5_s_from_its_first_byte() {
    let (_, mut conn, mut s) = after(GET_METRICS);
    conn.respond(Status::Ok, TEXT, b"", 2);
    conn.drive(&mut s, 10);
    assert_eq!(conn.deadline_us(), 10 + IDLE_TIMEOUT.as_micros() as u64);
    assert_eq!(
        conn.expired(10 + IDLE_TIMEOUT.as_micros() as u64),
        Some(Expired::Close(HttpClose::Idle))
    );
    s.push(b"GET /met");
    let first_byte = 20 * S;
    conn.drive(&mut s, first_byte);
    assert_eq!(
        conn.expired(first_byte + HEAD_TIMEOUT.as_micros() as u64),
        Some(Expired::Close(HttpClose::HeadTimeout))
    );
    // More bytes do not move the deadline: the whole head is due.
    s.push(b"ri");
    conn.drive(&mut s, first_byte + S);
    assert_eq!(
        conn.deadline_us(),
        first_byte + HEAD_TIMEOUT.as_micros() as u64
    );
}

#[test]
fn an_answer_not_given_within_2_s_is_late() {
    let (_, mut conn, mut s) = after(GET_METRICS);
    let due = 1 + ANSWER_TIMEOUT.as_micros() as u64;
    assert_eq!(conn.expired(due - 1), None);
    assert_eq!(conn.expired(due), Some(Expired::AnswerLate));
    conn.respond_unavailable(due);
    assert_eq!(conn.drive(&mut s, due), Next::Wait);
    assert_eq!(s.sent, UNAVAILABLE);
    assert!(s.shut);
}

#[test]
fn eof_between_requests_is_an_end_and_mid_head_an_error() {
    let mut s = Script::new(usize::MAX);
    s.eof = true;
    assert_eq!(
        HttpConn::new(Site::Metrics, 0).drive(&mut s, 1),
        Next::Close(HttpClose::Eof)
    );
    let mut s = Script::new(usize::MAX);
    s.push(b"GET /");
    s.eof = true;
    assert_eq!(
        HttpConn::new(Site::Metrics, 0).drive(&mut s, 1),
        Next::Close(HttpClose::Error)
    );
}

#[test]
fn lingering_drops_input_in_bounded_steps() {
    let (_, mut conn, mut s) = after(b"x\r\n\r\n");
    assert!(s.shut);
    for _ in 0..(LINGER_READ_PER_DRIVE / 4096 + 1) {
        s.push(&[0; 4096]);
    }
    assert_eq!(conn.drive(&mut s, 2), Next::Again);
    assert_eq!(conn.drive(&mut s, 3), Next::Wait);
}

#[test]
fn drive_grows_held_bytes_by_at_most_its_bound() {
    // A 404 (a 413 at the admin site) that cannot be sent, and a head begun behind it.
    for (site, input) in [
        (
            Site::Metrics,
            &b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\nGET /m"[..],
        ),
        (
            Site::Admin,
            b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\nGET /m",
        ),
    ] {
        let conn = HttpConn::new(site, 0);
        assert_eq!(conn.growth_bound(), site.drive_growth());
        assert!(site.drive_growth() <= MAX_DRIVE_GROWTH);
        let mut s = Script::new(0);
        s.push(input);
        let mut conn = HttpConn::new(site, 0);
        conn.drive(&mut s, 1);
        assert!(
            conn.held_bytes() <= site.drive_growth(),
            "{site:?}: {}",
            conn.held_bytes()
        );
    }
    // Waiting for the reactor's answer, nothing is read: no growth.
    let (_, conn, _) = after(GET_METRICS);
    assert_eq!(conn.growth_bound(), 0);
}

#[test]
fn fixed_answers_carry_their_body_length() {
    for answer in [BAD_REQUEST, HEAD_TOO_LARGE, UNAVAILABLE] {
        let text = std::str::from_utf8(answer).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(length, body.len(), "{text:?}");
    }
}

/// Drives `input` through a fresh admin-site connection.
fn admin_after(input: &[u8]) -> (Next, HttpConn, Script) {
    let mut s = Script::new(usize::MAX);
    s.push(input);
    let mut conn = HttpConn::new(Site::Admin, 0);
    let next = conn.drive(&mut s, 1);
    (next, conn, s)
}

fn admin_request(keep_alive: bool) -> Request {
    Request {
        route: Route::Admin,
        head_only: false,
        keep_alive,
        http10: false,
    }
}

const CLOSE_HEAD: &str = "POST /connections/close HTTP/1.1\r\nHost: x\r\n\
                          Content-Type: application/x-www-form-urlencoded\r\n";

#[test]
fn an_admin_request_is_handed_over_whole_with_its_body() {
    let body = "source=127.0.0.5&dry_run";
    let input = format!("{CLOSE_HEAD}Content-Length: {}\r\n\r\n{body}", body.len());
    let (next, mut conn, mut s) = admin_after(input.as_bytes());
    assert_eq!(next, Next::Answer(admin_request(true)));
    let message = conn.message().expect("the request");
    assert_eq!(message.method, "POST");
    assert_eq!(message.target, "/connections/close");
    assert_eq!(
        message.content_type,
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(message.body, body.as_bytes());
    conn.respond(Status::Ok, TEXT, b"{}\n", 2);
    assert!(conn.message().is_none(), "answered");
    assert_eq!(conn.drive(&mut s, 3), Next::Wait);
    assert!(s.sent_text().starts_with("HTTP/1.1 200 OK\r\n"));
}

#[test]
fn a_403_closes_the_connection_a_kept_request_asked_to_keep() {
    let (next, mut conn, mut s) = admin_after(b"GET /connections HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(next, Next::Answer(admin_request(true)));
    conn.respond(Status::Forbidden, TEXT, b"not you\n", 2);
    assert_eq!(conn.drive(&mut s, 3), Next::Wait);
    let sent = s.sent_text();
    assert!(sent.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{sent}");
    assert!(sent.contains("Connection: close\r\n"), "{sent}");
    assert!(s.shut, "write side shut after the answer");
}

#[test]
fn an_admin_body_split_at_every_point_is_one_request_and_the_next_follows() {
    let body = "id=7";
    let first = format!("{CLOSE_HEAD}Content-Length: {}\r\n\r\n{body}", body.len());
    let input = format!("{first}GET /connections HTTP/1.1\r\nHost: x\r\n\r\n");
    for cut in 1..first.len() {
        let mut s = Script::new(usize::MAX);
        s.push(&input.as_bytes()[..cut]);
        let mut conn = HttpConn::new(Site::Admin, 0);
        assert_eq!(conn.drive(&mut s, 1), Next::Wait, "cut at {cut}");
        s.push(&input.as_bytes()[cut..]);
        assert_eq!(conn.drive(&mut s, 1), Next::Answer(admin_request(true)));
        assert_eq!(
            conn.message().unwrap().body,
            body.as_bytes(),
            "cut at {cut}"
        );
        conn.respond(Status::Ok, TEXT, b"", 2);
        assert_eq!(conn.drive(&mut s, 3), Next::Answer(admin_request(true)));
        let next = conn.message().unwrap();
        assert_eq!(
            (next.method, next.target, next.body),
            ("GET", "/connections", &b""[..])
        );
    }
}

#[test]
fn an_admin_body_of_exactly_max_body_is_taken_and_one_byte_more_is_413_unread() {
    let max = crate::admin::MAX_BODY;
    let exact = format!(
        "{CLOSE_HEAD}Content-Length: {max}\r\n\r\n{}",
        "a".repeat(max)
    );
    let (next, conn, _) = admin_after(exact.as_bytes());
    assert_eq!(next, Next::Answer(admin_request(true)));
    assert_eq!(conn.message().unwrap().body.len(), max);
    // The 413 comes before a byte of the body is sent: nothing of it is waited for.
    let over = format!("{CLOSE_HEAD}Content-Length: {}\r\n\r\n", max + 1);
    let (next, _, s) = admin_after(over.as_bytes());
    assert_eq!(next, Next::Wait);
    let sent = s.sent_text();
    assert!(
        sent.starts_with("HTTP/1.1 413 Content Too Large\r\n"),
        "{sent}"
    );
    assert!(sent.contains("Connection: close\r\n"), "{sent}");
    assert!(
        sent.ends_with(&format!("the body is over {max} bytes\n")),
        "{sent}"
    );
    assert!(s.shut, "closing: the body cannot be framed unread");
}

#[test]
fn an_admin_body_not_framed_by_one_content_length_is_400() {
    for framing in [
        "Transfer-Encoding: chunked\r\n",
        "Content-Length: 4\r\nContent-Length: 5\r\n",
        "Content-Length: -4\r\n",
        "Content-Length: 4x\r\n",
        "Content-Length: \r\n",
    ] {
        let input = format!("{CLOSE_HEAD}{framing}\r\nid=7");
        let (next, _, s) = admin_after(input.as_bytes());
        assert_eq!(next, Next::Wait, "{framing:?}");
        assert_eq!(s.sent, BAD_REQUEST, "{framing:?}");
    }
    // The same length twice is one length (RFC 9112 §6.3).
    let input = format!("{CLOSE_HEAD}Content-Length: 4\r\nContent-Length: 4\r\n\r\nid=7");
    assert_eq!(
        admin_after(input.as_bytes()).0,
        Next::Answer(admin_request(true))
    );
}

#[test]
fn any_method_and_path_goes_to_the_admin_reactor_which_answers_405_with_its_allow() {
    for (method, target) in [
        ("DELETE", "/connections"),
        ("GET", "/nowhere?x=1"),
        ("GET", "http://h/connections?limit=1"),
    ] {
        let (next, mut conn, mut s) =
            admin_after(format!("{method} {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        assert_eq!(next, Next::Answer(admin_request(true)), "{method} {target}");
        assert_eq!(conn.message().unwrap().method, method);
        assert!(conn.message().unwrap().target.starts_with('/'));
        conn.respond(Status::MethodNotAllowed { allow: "POST" }, TEXT, b"no\n", 2);
        conn.drive(&mut s, 3);
        assert!(
            s.sent_text().contains("\r\nAllow: POST\r\n"),
            "{}",
            s.sent_text()
        );
    }
}
