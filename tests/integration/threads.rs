//! Several reactors (`--threads`): the kernel's spread over SO_REUSEPORT listeners, the
//! Unix handoff, the limits that stay global, a shutdown that drains every reactor. (The
//! rest of the suite runs against two reactors too: `TABECHO_TEST_THREADS=2`.)

use std::io::Write;
use std::os::unix::net::UnixStream;

use tabecho::addr::ListenAddr;

use crate::util::*;

/// `share` of `total` lies within 40% to 60%.
#[track_caller]
fn assert_balanced(what: &str, share: u64, total: u64) {
    assert!(
        share * 10 >= total * 4 && share * 10 <= total * 6,
        "{what}: reactor 0 has {share} of {total}"
    );
}

#[test]
fn go_client_exchange_through_the_binary_with_two_reactors() {
    let mut server = ServerProcess::spawn(&["--listen", "127.0.0.1:0", "--threads", "2"]);
    server.wait_for_line(|l| l.contains("serving with 2 reactors"));
    let mut c = connect(server.tcp());
    round_trip(&mut c, b"aaaa");
    drop(c);
    server.signal("TERM");
    let (status, log) = server.wait_exit();
    assert_eq!(status.code(), Some(0), "{log:?}");
    assert_eq!(
        log.iter()
            .filter(|l| l.contains("shutdown: accepted"))
            .count(),
        1,
        "one summary line: {log:?}"
    );
}

#[test]
fn tcp_connections_and_frames_spread_over_two_reactors() {
    // The kernel picks a listener by a hash of the connection's addresses: over 1,000
    // connections each reactor's share is 50% +- 1.6% (one standard deviation), so the
    // 40..60% bound is six deviations away.
    let server = TestServer::start_with(|c| c.threads = 2);
    let total = 1000;
    let mut clients: Vec<_> = (0..total).map(|_| connect(server.tcp())).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        round_trip(c, format!("spread {i}").as_bytes());
    }
    let reactors = server.per_reactor();
    assert_eq!(reactors.len(), 2);
    let accepted: u64 = reactors.iter().map(|r| r.stats.accepted).sum();
    assert_eq!(accepted, total as u64);
    assert_balanced("connections", reactors[0].stats.accepted, total as u64);
    assert_balanced("frames", reactors[0].stats.frames, total as u64);
    drop(clients);
    let stats = server.stop();
    assert_eq!(stats.frames, total as u64);
}

#[test]
fn unix_connections_are_dealt_round_robin() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("threads.sock");
    let server = TestServer::start_with(|c| {
        c.listen = ListenAddr::Unix(path.clone());
        c.threads = 2;
    });
    let total = 200;
    let mut clients = Vec::new();
    for i in 0..total {
        let mut c = UnixStream::connect(&path).unwrap();
        c.set_read_timeout(Some(WAIT)).unwrap();
        let frame = format!("unix {i}");
        c.write_all(format!("{frame}\t").as_bytes()).unwrap();
        let want = reply(frame.as_bytes());
        assert_eq!(read_n(&mut c, want.len()), want);
        clients.push(c);
    }
    let reactors = server.per_reactor();
    let accepted: Vec<u64> = reactors.iter().map(|r| r.stats.accepted).collect();
    assert_eq!(accepted, vec![100, 100], "dealt in turn");
    let open: Vec<u64> = reactors.iter().map(|r| r.connections_open).collect();
    assert_eq!(open, vec![100, 100]);
    drop(clients);
    server.stop();
}

#[test]
fn connection_limit_holds_for_the_whole_server_not_per_reactor() {
    let server = TestServer::start_with(|c| {
        c.threads = 2;
        c.max_connections = Some(100);
    });
    let mut served: Vec<_> = (0..100).map(|_| connect(server.tcp())).collect();
    for (i, c) in served.iter_mut().enumerate() {
        round_trip(c, format!("in {i}").as_bytes());
    }
    for _ in 0..50 {
        let mut over = connect(server.tcp());
        let (got, _) = read_to_end(&mut over);
        assert_eq!(got, b"error: too many connections\t");
    }
    for c in &mut served {
        round_trip(c, b"still served");
    }
    let reactors = server.per_reactor();
    assert!(
        reactors.iter().all(|r| r.connections_open > 0),
        "both reactors serve some of the 100"
    );
    drop(served);
    let stats = server.stop();
    assert_eq!((stats.accepted, stats.rejected), (100, 50));
}

#[test]
fn shutdown_drains_every_reactor() {
    let server = TestServer::start_with(|c| c.threads = 2);
    // 40 connections: the chance that all land on one reactor is 2^-39.
    let mut clients: Vec<_> = (0..40).map(|_| connect(server.tcp())).collect();
    for c in &mut clients {
        round_trip(c, b"before");
    }
    let reactors = server.per_reactor();
    assert!(
        reactors.iter().all(|r| r.connections_open > 0),
        "connections on every reactor: {:?}",
        reactors
            .iter()
            .map(|r| r.connections_open)
            .collect::<Vec<_>>()
    );
    // A frame owed on every connection, then the shutdown: every reply, then EOF.
    for c in &mut clients {
        c.write_all(b"owed\t").unwrap();
    }
    for c in &mut clients {
        let want = reply(b"owed");
        assert_eq!(read_n(c, want.len()), want);
    }
    let stopping = std::thread::spawn(move || server.stop());
    for c in &mut clients {
        let (rest, reset) = read_to_end(c);
        assert_eq!((rest.len(), reset), (0, None), "EOF after the replies");
    }
    drop(clients);
    let stats = stopping.join().unwrap();
    assert_eq!(stats.frames, 80);
    assert_eq!(stats.closed_shutdown + stats.closed_eof, 40);
}

/// `--threads auto` counts the CPUs in the affinity mask (here one, set by taskset before
/// the server starts), never more than the cgroup's CPU quota, and says so at start.
#[test]
fn threads_auto_counts_the_affinity_mask_and_says_so() {
    let mut server = ServerProcess::spawn_with_shell_prefix(
        "taskset -p -c 0 $$ >/dev/null &&",
        &["--listen", "127.0.0.1:0", "--threads", "auto"],
    );
    let line = server.wait_for_line(|l| l.contains("--threads auto"));
    assert!(
        line.contains("] 1 reactor (--threads auto: 1 CPU in the affinity mask"),
        "{line}"
    );
    let mut c = connect(server.tcp());
    round_trip(&mut c, b"one reactor");
}
