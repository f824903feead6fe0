//! `tabecho conns` and `tabecho conns close` against a stand-in admin endpoint: a test
//! HTTP server on a real Unix socket in a temporary directory, answering one request
//! with a canned answer and handing the test the request it read. The requests are read
//! back by the server's own parser (`tabecho::admin::parse_request`); the table, the
//! counts and every exit code are checked.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

use tabecho::admin::row::encode_rows;
use tabecho::admin::{
    parse_request, AdminRequest, CloseFilter, ConnState, ConnectionRow, ListQuery, SortKey,
};

use crate::util::*;

/// A request as the stand-in read it.
#[derive(Debug)]
struct SeenRequest {
    method: String,
    target: String,
    /// Names lowercased, values as sent.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl SeenRequest {
    #[track_caller]
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// What the server's parser makes of it.
    #[track_caller]
    fn parsed(&self) -> AdminRequest {
        parse_request(
            &self.method,
            &self.target,
            self.header("content-type"),
            &self.body,
        )
        .unwrap_or_else(|r| panic!("the server's parser refuses {self:?}: {r:?}"))
    }
}

/// What the stand-in does once it has read the request.
enum Then {
    /// Writes these bytes and closes.
    Answer(Vec<u8>),
    /// Answers nothing, and holds the connection until the test ends.
    Hold,
}

/// A stand-in admin endpoint on a Unix socket in its own temporary directory: it
/// accepts one connection, reads one request and does `then`.
struct StandIn {
    _dir: tempfile::TempDir,
    path: PathBuf,
    seen: Receiver<SeenRequest>,
    /// Dropped with the stand-in: a held connection is let go.
    _release: Sender<()>,
}

impl StandIn {
    fn start(then: Then) -> StandIn {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("admin.sock");
        let listener = UnixListener::bind(&path).expect("bind the stand-in");
        let (seen_tx, seen) = mpsc::channel();
        let (release, released) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            s.set_read_timeout(Some(WAIT)).expect("read timeout");
            let Some(request) = read_request(&mut s) else {
                return;
            };
            let _ = seen_tx.send(request);
            match then {
                Then::Answer(bytes) => {
                    let _ = s.write_all(&bytes);
                }
                Then::Hold => {
                    let _ = released.recv_timeout(WAIT * 3);
                }
            }
        });
        StandIn {
            _dir: dir,
            path,
            seen,
            _release: release,
        }
    }

    /// A 200 with `body` of `content_type`, framed by Content-Length.
    fn ok(content_type: &str, body: &[u8]) -> StandIn {
        StandIn::start(Then::Answer(answer("200 OK", content_type, body)))
    }

    /// `--admin`'s value.
    fn admin(&self) -> String {
        format!("unix:{}", self.path.display())
    }

    /// The request it read.
    #[track_caller]
    fn request(&self) -> SeenRequest {
        self.seen
            .recv_timeout(WAIT)
            .expect("the stand-in read a request")
    }
}

/// An answer with `Content-Length` and `Connection: close`, as the endpoint frames one.
fn answer(status: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut bytes = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// Reads one request, its body by `Content-Length`; `None` if the client went away.
fn read_request(s: &mut UnixStream) -> Option<SeenRequest> {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        if let Ok(httparse::Status::Complete(head_len)) = request.parse(&bytes) {
            let headers: Vec<(String, String)> = request
                .headers
                .iter()
                .map(|h| {
                    let value = String::from_utf8_lossy(h.value).into_owned();
                    (h.name.to_ascii_lowercase(), value)
                })
                .collect();
            let length: usize = headers
                .iter()
                .find(|(n, _)| n == "content-length")
                .map_or(0, |(_, v)| v.parse().expect("a Content-Length"));
            let (method, target) = (request.method?.to_string(), request.path?.to_string());
            while bytes.len() < head_len + length {
                let n = s.read(&mut buf).ok().filter(|&n| n > 0)?;
                bytes.extend_from_slice(&buf[..n]);
            }
            return Some(SeenRequest {
                method,
                target,
                headers,
                body: bytes[head_len..head_len + length].to_vec(),
            });
        }
        let n = s.read(&mut buf).ok().filter(|&n| n > 0)?;
        bytes.extend_from_slice(&buf[..n]);
    }
}

fn row(id: u64, memory: u64, state: ConnState) -> ConnectionRow {
    ConnectionRow {
        id,
        reactor: 1,
        client: format!("127.0.0.5:{}", 40000 + id),
        peer: format!("127.0.0.5:{}", 40000 + id),
        local: "127.0.0.1:8085".into(),
        age: Duration::from_secs(125),
        idle: Duration::from_millis(2500),
        state,
        input_held: 0,
        output_pending: memory / 2,
        kernel_charge: memory - memory / 2,
        memory,
        bytes_in: Some(1024),
        bytes_out: Some(2048),
    }
}

#[track_caller]
fn run(args: &[&str]) -> (i32, String, String) {
    tabecho(args, b"")
}

#[test]
fn conns_sends_its_query_and_prints_the_rows_as_an_aligned_table() {
    let rows = [
        row(31, 1024 * 1024, ConnState::Paused),
        row(7, 65536, ConnState::Writing),
    ];
    let server = StandIn::ok("application/x-ndjson", &encode_rows(&rows));
    let admin = server.admin();
    let (code, out, err) = run(&[
        "conns",
        "--admin",
        &admin,
        "--sort",
        "idle",
        "--limit",
        "5",
        "--source",
        "127.0.0.0/8",
        "--reactor",
        "1",
    ]);
    assert_eq!(code, 0, "{err}");
    let request = server.request();
    assert_eq!(request.method, "GET");
    assert_eq!(
        request.target,
        "/connections?sort=idle&limit=5&source=127.0.0.0%2F8&reactor=1"
    );
    assert_eq!(request.header("host"), Some("localhost"));
    assert_eq!(request.header("connection"), Some("close"));
    assert_eq!(
        request.parsed(),
        AdminRequest::List(ListQuery {
            sort: SortKey::Idle,
            limit: 5,
            source: Some("127.0.0.0/8".parse().unwrap()),
            reactor: Some(1),
        })
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "ID  R  STATE    CLIENT           LOCAL             AGE  IDLE  MEMORY  INPUT  OUTPUT  KERNEL    IN   OUT",
            "31  1  paused   127.0.0.5:40031  127.0.0.1:8085  2m05s  2.5s    1MiB     0B  512KiB  512KiB  1KiB  2KiB",
            " 7  1  writing  127.0.0.5:40007  127.0.0.1:8085  2m05s  2.5s   64KiB     0B   32KiB   32KiB  1KiB  2KiB",
        ],
        "{out}"
    );
}

#[test]
fn conns_with_defaults_asks_for_100_by_memory() {
    let server = StandIn::ok("application/x-ndjson", b"");
    let (code, out, err) = run(&["conns", "--admin", &server.admin()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        server.request().parsed(),
        AdminRequest::List(ListQuery::default())
    );
    assert_eq!(out.lines().count(), 1, "the header alone: {out}");
}

#[test]
fn conns_json_prints_the_json_lines_as_the_server_sent_them() {
    let body = encode_rows(&[
        row(1, 10, ConnState::Reading),
        row(2, 5, ConnState::Lingering),
    ]);
    let server = StandIn::ok("application/x-ndjson", &body);
    let (code, out, err) = run(&["conns", "--json", "--admin", &server.admin()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.as_bytes(), body.as_slice());
}

#[test]
fn conns_close_posts_its_filters_as_a_form_the_server_reads_back() {
    let server = StandIn::ok("application/json", b"{\"matched\":30,\"dry_run\":false}\n");
    let (code, out, err) = run(&[
        "conns",
        "close",
        "--admin",
        &server.admin(),
        "--source",
        "127.0.0.5",
        "--id",
        "12",
        "--min-memory",
        "64K",
        "--idle-over",
        "30s",
        "--age-over",
        "1500ms",
    ]);
    assert_eq!(
        (code, out.as_str()),
        (0, "closed 30 connections\n"),
        "{err}"
    );
    let request = server.request();
    assert_eq!(request.method, "POST");
    assert_eq!(request.target, "/connections/close");
    assert_eq!(
        request.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(request.header("host"), Some("localhost"));
    assert_eq!(
        request.parsed(),
        AdminRequest::Close(CloseFilter {
            id: Some(12),
            source: Some("127.0.0.5".parse().unwrap()),
            min_memory: Some(64 * 1024),
            idle_over: Some(Duration::from_secs(30)),
            age_over: Some(Duration::from_millis(1500)),
            dry_run: false,
        })
    );
}

#[test]
fn conns_close_dry_run_says_what_it_would_close() {
    let server = StandIn::ok("application/json", b"{\"matched\":1,\"dry_run\":true}\n");
    let (code, out, err) = run(&[
        "conns",
        "close",
        "--dry-run",
        "--idle-over",
        "1m",
        "--admin",
        &server.admin(),
    ]);
    assert_eq!(
        (code, out.as_str()),
        (0, "would close 1 connection\n"),
        "{err}"
    );
    let AdminRequest::Close(filter) = server.request().parsed() else {
        panic!("not a close");
    };
    assert!(filter.dry_run);
    assert_eq!(filter.idle_over, Some(Duration::from_secs(60)));
}

#[test]
fn conns_close_without_a_filter_is_a_usage_error_and_sends_nothing() {
    let server = StandIn::ok("application/json", b"{\"matched\":0,\"dry_run\":true}\n");
    let (code, out, err) = run(&["conns", "close", "--dry-run", "--admin", &server.admin()]);
    assert_eq!(code, 2, "{err}");
    assert!(out.is_empty());
    assert!(err.contains("--source"), "{err}");
    assert!(
        server
            .seen
            .recv_timeout(Duration::from_millis(100))
            .is_err(),
        "a request was sent"
    );
}

#[test]
fn no_such_socket_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let missing = format!("unix:{}", dir.path().join("none.sock").display());
    let (code, out, err) = run(&["conns", "--admin", &missing]);
    assert_eq!(code, 3, "{err}");
    assert!(out.is_empty());
    assert!(err.contains("no such socket"), "{err}");
    let (code, _, err) = run(&["conns", "close", "--id", "1", "--admin", &missing]);
    assert_eq!(code, 3, "{err}");
}

#[test]
fn a_socket_file_nothing_listens_on_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stale.sock");
    drop(UnixListener::bind(&path).unwrap()); // the file stays, nobody listens
    let (code, _, err) = run(&["conns", "--admin", &format!("unix:{}", path.display())]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("no server listens"), "{err}");
}

#[test]
fn a_403_exits_4_showing_the_servers_line() {
    let server = StandIn::start(Then::Answer(answer(
        "403 Forbidden",
        "text/plain; charset=utf-8",
        b"only the server's own user and root may use the admin socket\n",
    )));
    let (code, out, err) = run(&["conns", "--admin", &server.admin()]);
    assert_eq!(code, 4, "{err}");
    assert!(out.is_empty());
    assert!(
        err.contains("not allowed (403): only the server's own user"),
        "{err}"
    );
}

#[test]
fn a_socket_this_user_may_not_open_exits_4() {
    if !is_root() {
        eprintln!("skipped: running as another user (nobody) needs root");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    // Root's socket, mode 0600 as `serve --admin` makes it, in a directory nobody may
    // enter: connect(2) needs write permission on the socket file.
    let dir = world_enterable_tempdir();
    let path = dir.path().join("admin.sock");
    let _listener = UnixListener::bind(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let admin = format!("unix:{}", path.display());
    let out = tabecho_as_nobody(dir.path(), &["conns", "--admin", &admin]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("not allowed"), "{err}");
}

#[test]
fn another_error_status_exits_1_showing_the_servers_line() {
    let server = StandIn::start(Then::Answer(answer(
        "400 Bad Request",
        "text/plain; charset=utf-8",
        b"limit: \"5000\" is not 1 to 1000\n",
    )));
    let (code, _, err) = run(&["conns", "--admin", &server.admin()]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("the server answered 400: limit: \"5000\" is not 1 to 1000"),
        "{err}"
    );
}

#[test]
fn an_answer_missing_cut_short_or_not_json_exits_1() {
    for (bytes, says) in [
        (Vec::new(), "closed the connection without answering"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{}".to_vec(),
            "after 2 of its 100 bytes",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
            "sends Content-Length",
        ),
        (
            answer("200 OK", "application/x-ndjson", b"{\"id\":1}\n"),
            "missing field",
        ),
    ] {
        let server = StandIn::start(Then::Answer(bytes));
        let (code, _, err) = run(&["conns", "--admin", &server.admin()]);
        assert_eq!(code, 1, "{says}: {err}");
        assert!(
            err.contains("bad answer") && err.contains(says),
            "{says}: {err}"
        );
    }
    let server = StandIn::ok("application/json", b"30\n");
    let (code, _, err) = run(&["conns", "close", "--id", "1", "--admin", &server.admin()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not a close answer"), "{err}");
}

#[test]
fn no_whole_answer_within_the_timeout_exits_1() {
    let server = StandIn::start(Then::Hold);
    let (code, _, err) = run(&["conns", "--timeout", "300ms", "--admin", &server.admin()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no whole answer within 300ms"), "{err}");
    server.request(); // it was sent whole
}
