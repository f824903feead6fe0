//! The admin endpoint (`serve --admin unix:PATH`) end to end: the built server, `tabecho
//! conns` and `conns close` against it, flooders from one loopback address beside a
//! verified load from another, the socket's mode and who may use it, ids across an
//! upgrade, and the endpoint's refusals (docs/PROTOCOL.md, "Admin").

use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use tabecho::admin::row::decode_rows;
use tabecho::admin::ConnectionRow;
use tabecho::load::LoadOptions;

use crate::upgrade::wait_handover;
use crate::util::*;

/// Where the flooders connect from.
const FLOODERS: &str = "127.0.0.5";
/// Where the healthy load connects from.
const HEALTHY: &str = "127.0.0.6";

/// A server with `--metrics` and `--admin` on a socket in a temporary directory.
struct AdminServer {
    server: ServerProcess,
    /// Holds the socket's directory.
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl AdminServer {
    /// `tabecho serve --listen 127.0.0.1:0 --metrics 127.0.0.1:0 --admin unix:DIR/admin.sock
    /// ARGS`, in a fresh directory (`dir`, or a private temporary one).
    #[track_caller]
    fn start_in(dir: tempfile::TempDir, args: &[&str]) -> AdminServer {
        let path = dir.path().join("admin.sock");
        let admin = format!("unix:{}", path.display());
        let mut all = vec![
            "--listen",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
            "--admin",
            &admin,
        ];
        all.extend_from_slice(args);
        let server = ServerProcess::spawn(&all);
        AdminServer {
            server,
            _dir: dir,
            path,
        }
    }

    #[track_caller]
    fn start(args: &[&str]) -> AdminServer {
        Self::start_in(tempfile::tempdir().unwrap(), args)
    }

    /// `--admin unix:PATH`, as `tabecho conns` takes it.
    fn admin(&self) -> String {
        format!("unix:{}", self.path.display())
    }

    /// `tabecho conns --admin unix:PATH ARGS`: exit code, stdout, stderr.
    #[track_caller]
    fn conns(&self, args: &[&str]) -> (i32, String, String) {
        let admin = self.admin();
        let mut all = vec!["conns"];
        let close = args.first() == Some(&"close");
        if close {
            all.push("close");
        }
        all.extend_from_slice(&["--admin", &admin]);
        all.extend_from_slice(if close { &args[1..] } else { args });
        tabecho(&all, b"")
    }

    /// The listing `tabecho conns --json ARGS` prints, parsed.
    #[track_caller]
    fn rows(&self, args: &[&str]) -> Vec<ConnectionRow> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let (code, out, err) = self.conns(&all);
        assert_eq!(code, 0, "{err}");
        decode_rows(out.as_bytes()).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    /// The listing `tabecho conns --json` prints, once it has `n` rows.
    #[track_caller]
    fn rows_once(&self, n: usize) -> Vec<ConnectionRow> {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let rows = self.rows(&[]);
            if rows.len() == n {
                return rows;
            }
            assert!(std::time::Instant::now() < deadline, "{rows:?}");
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The address a row's client is, without its port.
fn client_ip(row: &ConnectionRow) -> IpAddr {
    row.client
        .parse::<SocketAddr>()
        .unwrap_or_else(|e| panic!("{}: {e}", row.client))
        .ip()
}

/// A client from `source` with a small receive buffer (so a few replies fill it) that
/// floods frames and never reads, until the server stops reading it.
fn flooder(source: IpAddr, addr: SocketAddr) -> thread::JoinHandle<TcpStream> {
    thread::spawn(move || {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        socket
            .bind(&SocketAddr::new(source, 0).into())
            .expect("bind the flooder's source");
        socket.connect(&addr.into()).expect("connect");
        let mut s = TcpStream::from(socket);
        // Frames of 4 KiB: few frames to answer before the replies stall.
        let mut frame = vec![b'f'; 4095];
        frame.push(b'\t');
        write_until_server_stops_reading(&mut s, &frame);
        s
    })
}

/// 30 flooders from 127.0.0.5 that never read, beside a verified load from 127.0.0.6:
/// the listing by memory names only flooders, largest first; a close by source closes all
/// 30 and only them (counted as `admin`); the load loses nothing.
fn flooders_are_listed_and_closed_by_source(threads: &str) {
    // Stalled flooders make no progress: a long idle timeout keeps them for the test.
    let s = AdminServer::start(&["--threads", threads, "--idle-timeout", "60s"]);
    let addr = s.server.tcp();
    let flooders: Vec<TcpStream> = (0..30)
        .map(|_| flooder(FLOODERS.parse().unwrap(), addr))
        .collect::<Vec<_>>()
        .into_iter()
        .map(|f| f.join().expect("a flooder"))
        .collect();
    // The healthy load runs while the listing and the close happen.
    let mut options = LoadOptions::new(s.server.addr.parse().unwrap());
    options.source = Some(HEALTHY.parse().unwrap());
    options.connections = 4;
    options.threads = 1;
    options.pipeline = 4;
    options.duration = Duration::from_secs(4);
    let load = thread::spawn(move || run_load(&options));
    let healthy: IpAddr = HEALTHY.parse().unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while s.rows(&["--source", HEALTHY]).len() < 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "the load never connected"
        );
        thread::sleep(Duration::from_millis(20));
    }

    let top = s.rows(&["--sort", "memory", "--limit", "10"]);
    assert_eq!(top.len(), 10, "{top:?}");
    let flooders_ip: IpAddr = FLOODERS.parse().unwrap();
    for row in &top {
        assert_eq!(client_ip(row), flooders_ip, "{row:?}");
        assert!(row.memory > 0, "{row:?}");
        // Buffers are charged by capacity: at least what they hold.
        assert!(
            row.memory >= row.input_held + row.output_pending + row.kernel_charge,
            "{row:?}"
        );
    }
    assert!(
        top.windows(2).all(|w| w[0].memory >= w[1].memory),
        "memory descending: {top:?}"
    );

    let (code, out, err) = s.conns(&["close", "--source", FLOODERS]);
    assert_eq!(
        (code, out.as_str()),
        (0, "closed 30 connections\n"),
        "{err}"
    );
    let after = s.rows(&["--limit", "1000"]);
    assert!(
        after.iter().all(|r| client_ip(r) != flooders_ip),
        "{after:?}"
    );
    assert!(after.iter().all(|r| client_ip(r) == healthy), "{after:?}");
    let page = metrics_until(s.server.metrics_addr(), |page| {
        total(page, "tabecho_closed_total{reason=\"admin\"}") >= 30.0
    });
    assert_eq!(total(&page, "tabecho_closed_total{reason=\"admin\"}"), 30.0);

    let report = load.join().expect("the load");
    assert!(report.verified(), "{}", report.to_text());
    assert_eq!(report.established, 4, "{}", report.to_text());
    assert!(report.frames_answered > 0, "{}", report.to_text());
    // Each flooder was reset (its replies owed are dropped): its reads end in the reset,
    // not in the timeout.
    for mut f in flooders {
        f.set_read_timeout(Some(WAIT)).unwrap();
        let (_, ended) = read_to_end(&mut f);
        assert_eq!(ended, Some(std::io::ErrorKind::ConnectionReset));
    }
}

/// Partial frames that hold all the buffer budget the echo connections may lease (one
/// connection's worst case kept free) leave the operator room: a listing and a scrape
/// are answered, from the part of the budget set aside for the endpoints.
#[test]
fn a_budget_full_of_partial_frames_still_answers_a_listing_and_a_scrape() {
    const PARTIAL: usize = 4096;
    const HOLDERS: usize = 400;
    let headroom = tabecho::config::ServerConfig::new("127.0.0.1:0".parse().unwrap())
        .max_held_per_connection();
    // Room for at most 256 of them besides the worst case kept free.
    let budget = headroom + 1024 * 1024;
    let s = AdminServer::start(&[
        "--threads",
        "1",
        "--idle-timeout",
        "60s",
        "--max-buffer-memory",
        &budget.to_string(),
    ]);
    let addr = s.server.tcp();
    // Each sends all of a small frame but its TAB, and holds it.
    let _partials: Vec<TcpStream> = (0..HOLDERS)
        .map(|_| {
            let mut c = connect(addr);
            c.write_all(&[b'p'; PARTIAL - 1]).expect("write");
            c
        })
        .collect();
    // Every holder's bytes have been read, and the budget holds what it can of them.
    let page = metrics_until(s.server.metrics_addr(), |page| {
        total(page, "tabecho_bytes_received_total") >= (HOLDERS * (PARTIAL - 1)) as f64
    });
    let held = total(&page, "tabecho_buffered_bytes");
    assert!(held >= (200 * (PARTIAL - 1)) as f64, "{held} bytes held");
    let rows = s.rows(&["--sort", "memory", "--limit", "100"]);
    assert_eq!(rows.len(), 100);
    assert!(
        rows.iter().all(|r| r.input_held as usize == PARTIAL - 1),
        "{rows:?}"
    );
}

#[test]
fn flooders_are_listed_by_memory_and_closed_by_source_beside_a_healthy_load() {
    flooders_are_listed_and_closed_by_source("1");
}

#[test]
fn flooders_are_listed_and_closed_over_two_reactors() {
    flooders_are_listed_and_closed_by_source("2");
}

#[test]
fn the_socket_is_mode_0600_and_another_uid_gets_nothing() {
    use std::os::unix::fs::PermissionsExt;
    // World-enterable, so that nobody can reach the socket: only its own mode keeps them
    // out.
    let s = AdminServer::start_in(world_enterable_tempdir(), &[]);
    let mode = std::fs::metadata(&s.path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let (code, out, err) = s.conns(&[]);
    assert_eq!(code, 0, "our own uid is served: {err}");
    assert!(out.starts_with("ID "), "{out}");
    if !is_root() {
        eprintln!("skipped: a client of another uid needs root to run as nobody");
        return;
    }
    let dir = s.path.parent().unwrap();
    let admin = s.admin();
    // The file's mode refuses the connect.
    let refused = tabecho_as_nobody(dir, &["conns", "--admin", &admin]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(4), "{err}");
    assert!(err.contains("not allowed"), "{err}");
    assert!(refused.stdout.is_empty());
    // With the mode loosened, the server refuses: 403, by the peer's uid.
    std::fs::set_permissions(&s.path, std::fs::Permissions::from_mode(0o666)).unwrap();
    for args in [
        &["conns", "--admin", &admin][..],
        &["conns", "close", "--admin", &admin, "--age-over", "0s"],
    ] {
        let refused = tabecho_as_nobody(dir, args);
        let err = String::from_utf8_lossy(&refused.stderr);
        assert_eq!(refused.status.code(), Some(4), "{args:?}: {err}");
        assert!(err.contains("403"), "{err}");
        assert!(refused.stdout.is_empty());
    }
}

/// The ids of the rows, ascending.
/// Behind a balancer that sends the PROXY protocol (the test, from the trusted
/// 127.0.0.1), a row's client is the real one the header named, its peer the proxy, and
/// a close by source closes by the real client, over 2 reactors.
#[test]
fn proxied_connections_are_listed_and_closed_by_their_real_client() {
    let s = AdminServer::start(&[
        "--threads",
        "2",
        "--proxy-protocol-from",
        "127.0.0.1",
        "--idle-timeout",
        "60s",
    ]);
    let addr = s.server.tcp();
    let real = |n: u8| SocketAddr::from(([192, 0, 2, n], 40_000 + u16::from(n)));
    let mut clients: Vec<TcpStream> = [real(1), real(1), real(2)]
        .into_iter()
        .enumerate()
        .map(|(i, client)| {
            let mut c = connect_from("127.0.0.1".parse().unwrap(), addr);
            // Distinct ports, so each row names its own client.
            let client = SocketAddr::new(client.ip(), client.port() + i as u16);
            c.write_all(&tabecho::proxy_protocol::encode_v2(client, addr))
                .unwrap();
            round_trip(&mut c, b"through the balancer");
            c
        })
        .collect();
    let rows = s.rows(&["--sort", "age"]);
    assert_eq!(rows.len(), 3, "{rows:?}");
    let mut named: Vec<&str> = rows.iter().map(|r| r.client.as_str()).collect();
    named.sort_unstable();
    assert_eq!(
        named,
        ["192.0.2.1:40001", "192.0.2.1:40002", "192.0.2.2:40004"],
        "{rows:?}"
    );
    for row in &rows {
        assert!(row.peer.starts_with("127.0.0.1:"), "{row:?}");
    }
    assert_eq!(s.rows(&["--source", "192.0.2.2/32"]).len(), 1);

    let (code, out, err) = s.conns(&["close", "--source", "192.0.2.1"]);
    assert_eq!((code, out.as_str()), (0, "closed 2 connections\n"), "{err}");
    // Lingering now, until their clients close: not closed or counted again.
    let (code, out, err) = s.conns(&["close", "--source", "192.0.2.1"]);
    assert_eq!((code, out.as_str()), (0, "closed 0 connections\n"), "{err}");
    for c in &mut clients[..2] {
        let (got, _) = read_to_end(c);
        assert_eq!(got, tabecho::protocol::CLOSED_BY_ADMIN, "{got:?}");
    }
    round_trip(&mut clients[2], b"still served");
    // The closed ones linger until their clients close.
    drop(clients.drain(..2));
    let left = s.rows_once(1);
    assert_eq!(left[0].client, "192.0.2.2:40004");
}

fn ids(rows: &[ConnectionRow]) -> Vec<u64> {
    let mut ids: Vec<u64> = rows.iter().map(|r| r.id).collect();
    ids.sort_unstable();
    ids
}

#[test]
fn a_dry_run_closes_nothing_and_ids_and_ages_are_kept_across_an_upgrade() {
    let mut s = AdminServer::start(&["--shutdown-grace", "30s", "--idle-timeout", "60s"]);
    let addr = s.server.tcp();
    let mut clients: Vec<TcpStream> = (0..3).map(|_| connect(addr)).collect();
    for c in &mut clients {
        round_trip(c, b"before");
    }
    // Old enough that an age restarted by the move would show: at least 1 s.
    let deadline = std::time::Instant::now() + WAIT;
    let before = loop {
        let rows = s.rows(&["--sort", "age"]);
        if rows.iter().all(|r| r.age >= Duration::from_secs(1)) {
            break rows;
        }
        assert!(std::time::Instant::now() < deadline, "{rows:?}");
        thread::sleep(Duration::from_millis(50));
    };
    let listed_before = std::time::Instant::now();
    assert_eq!(before.len(), 3, "{before:?}");
    let (code, out, err) = s.conns(&["close", "--age-over", "0s", "--dry-run"]);
    assert_eq!(
        (code, out.as_str()),
        (
            0,
            "would close 3 connections
"
        ),
        "{err}"
    );
    assert_eq!(ids(&s.rows(&[])), ids(&before), "a dry run closes nothing");
    for c in &mut clients {
        round_trip(c, b"after the dry run");
    }

    s.server.signal("USR2");
    let _new = wait_handover(&mut s.server);
    s.server.wait_for_line(|l| l.contains("upgrade: moved 3 "));
    // The new process serves the same socket: the same connections, the same ids, older
    // by the time between the listings, less the hand-over's transit (not counted; up to
    // 500 ms allowed on a loaded machine, less than the 1 s an age restarted would lose).
    let between = listed_before.elapsed();
    let after = s.rows(&["--sort", "age"]);
    assert_eq!(ids(&after), ids(&before), "{before:?}\n{after:?}");
    for row in &after {
        let old = before.iter().find(|b| b.id == row.id).unwrap();
        assert!(
            row.age + Duration::from_millis(500) >= old.age + between,
            "{between:?} between\n{old:?}\n{row:?}"
        );
        assert_eq!(row.client, old.client);
    }
    for c in &mut clients {
        round_trip(c, b"after the upgrade");
    }
    // A connection the new process accepts gets an id no process of the lineage gave.
    let _fresh = connect(addr);
    let all = s.rows_once(4);
    let fresh = all.iter().find(|r| !ids(&before).contains(&r.id)).unwrap();
    assert!(fresh.id > ids(&before)[2], "{all:?}");
}

/// One request on the admin socket at `path`, and the answer (status, body).
#[track_caller]
fn request(path: &Path, text: &str) -> (u16, String) {
    let mut c = UnixStream::connect(path).expect("connect");
    c.set_read_timeout(Some(WAIT)).unwrap();
    c.write_all(text.as_bytes()).unwrap();
    let mut r = std::io::BufReader::new(c);
    let answer = read_response(&mut r).expect("an answer");
    (answer.status, String::from_utf8(answer.body).unwrap())
}

#[test]
fn the_endpoint_refuses_what_it_does_not_take_with_a_line_saying_why() {
    let s = AdminServer::start(&[]);
    let cases = [
        ("GET /connections/close HTTP/1.1\r\nHost: x\r\n\r\n", 405, "takes POST"),
        ("DELETE /connections HTTP/1.1\r\nHost: x\r\n\r\n", 405, "takes GET, HEAD"),
        ("GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n", 404, "no such path"),
        ("GET /connections?limit=0 HTTP/1.1\r\nHost: x\r\n\r\n", 400, "limit"),
        ("GET /connections?reactor=9 HTTP/1.1\r\nHost: x\r\n\r\n", 400, "reactor"),
        ("GET /connections?min_mem=1 HTTP/1.1\r\nHost: x\r\n\r\n", 400, "unknown parameter"),
        ("POST /connections/close HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 400, "needs a filter"),
        ("POST /connections/close HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\r\nid=1", 415, "must be"),
        ("POST /connections/close HTTP/1.1\r\nHost: x\r\nContent-Length: 1025\r\n\r\n", 413, "over 1024 bytes"),
    ];
    for (text, status, says) in cases {
        let (got, body) = request(&s.path, text);
        assert_eq!(got, status, "{text:?}: {body}");
        assert!(body.contains(says), "{text:?}: {body}");
    }
    // And what it takes, as curl --unix-socket sends it.
    let (status, body) = request(
        &s.path,
        "POST /connections/close HTTP/1.1\r\nHost: x\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 19\r\n\r\n\
         age_over=0s&dry_run",
    );
    assert_eq!(
        (status, body.as_str()),
        (200, "{\"matched\":0,\"dry_run\":true}\n")
    );
}

/// Admin requests pipelined on one connection are all answered, in order, one per loop
/// turn (each is a pass over every connection).
#[test]
fn pipelined_admin_requests_are_each_answered_in_order() {
    let s = AdminServer::start(&["--threads", "2"]);
    let _client = connect(s.server.tcp());
    let mut c = UnixStream::connect(&s.path).expect("connect");
    c.set_read_timeout(Some(WAIT)).unwrap();
    let list = "GET /connections?limit=1 HTTP/1.1\r\nHost: x\r\n\r\n";
    let close = "POST /connections/close?id=999999&dry_run HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n";
    c.write_all([list, close, list, close, list].concat().as_bytes())
        .unwrap();
    let mut r = std::io::BufReader::new(c);
    for i in 0..5 {
        let answer = read_response(&mut r).expect("an answer");
        assert_eq!(answer.status, 200, "answer {i}");
        let body = String::from_utf8(answer.body).unwrap();
        if i % 2 == 1 {
            assert_eq!(body, "{\"matched\":0,\"dry_run\":true}\n", "answer {i}");
        } else {
            assert!(
                body.is_empty() || body.contains("\"id\":"),
                "answer {i}: {body}"
            );
        }
    }
}
