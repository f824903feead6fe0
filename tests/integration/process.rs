//! The built binary: signals, the shutdown summary, CLI errors, descriptor exhaustion.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::*;

fn frames_in(line: &str) -> u64 {
    let after = line.split("frames ").nth(1).unwrap_or("0");
    after
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap_or(0)
}

#[test]
fn sigterm_drains_replies_then_exits_0_with_a_summary() {
    let mut server = ServerProcess::spawn(&["--listen", "127.0.0.1:0", "--stats-interval", "20ms"]);
    let mut busy = connect(server.tcp());
    let idle = connect(server.tcp());
    // 2,000 frames, not read yet: their replies are owed when the signal arrives.
    let count = 2000;
    let input: Vec<u8> = (0..count)
        .flat_map(|i| format!("f{i}\t").into_bytes())
        .collect();
    busy.write_all(&input).unwrap();
    server.wait_for_line(|l| l.contains("stats:") && frames_in(l) >= count);
    let signalled = Instant::now();
    server.signal("TERM");
    server.wait_for_line(|l| l.contains("shutting down"));
    // A connection that arrives after the signal is not served.
    match TcpStream::connect(server.tcp()) {
        Err(_) => {}
        Ok(mut late) => {
            late.set_read_timeout(Some(WAIT)).unwrap();
            let _ = late.write_all(b"late\t");
            let mut buf = [0u8; 64];
            assert!(
                !matches!(late.read(&mut buf), Ok(n) if n > 0),
                "late connection served"
            );
        }
    }
    let (got, reset) = read_to_end(&mut busy);
    let want: Vec<u8> = (0..count)
        .flat_map(|i| reply(format!("f{i}").as_bytes()))
        .collect();
    assert_eq!(reset, None);
    assert!(
        got == want,
        "all {count} replies, then EOF ({} bytes of {})",
        got.len(),
        want.len()
    );
    drop(busy); // its close ends the server's linger for it
    let mut idle = idle;
    assert_eq!(
        read_to_end(&mut idle).0,
        b"",
        "idle connection shut at once"
    );
    drop(idle); // its close ends the server's linger for it
    let (status, log) = server.wait_exit();
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "exit within 5 s"
    );
    assert_eq!(status.code(), Some(0));
    let summary = log
        .iter()
        .find(|l| l.contains("shutdown: "))
        .expect("summary line");
    assert!(summary.contains("accepted 2,"), "{summary}");
    assert!(summary.contains(&format!("frames {count},")), "{summary}");
}

#[test]
fn sigint_with_a_client_still_sending_exits_0_within_5_s() {
    let server = ServerProcess::spawn(&["--listen", "127.0.0.1:0"]);
    let mut c = connect(server.tcp());
    let mut writer = c.try_clone().unwrap();
    let w = std::thread::spawn(move || {
        for _ in 0..100_000 {
            if writer.write_all(b"still sending\t").is_err() {
                break;
            }
        }
    });
    round_trip_prefix(&mut c);
    let signalled = Instant::now();
    server.signal("INT");
    // Everything read ends on a reply boundary, with a clean EOF: the default grace
    // period (3 s) leaves ample time to read what is owed.
    let (got, reset) = read_to_end(&mut c);
    assert_eq!(reset, None, "reset after {} bytes", got.len());
    let one = reply(b"still sending");
    assert_eq!(got.len() % one.len(), 0, "output cut inside a reply");
    assert!(got.chunks(one.len()).all(|r| r == one));
    // Closing our side ends the server's linger (it would otherwise wait out the grace).
    c.shutdown(std::net::Shutdown::Both).unwrap();
    let (status, _) = server.wait_exit();
    assert!(signalled.elapsed() < Duration::from_secs(5));
    assert_eq!(status.code(), Some(0));
    w.join().unwrap();
}

/// Reads one reply of the "still sending" stream, so the server is surely serving it.
fn round_trip_prefix(c: &mut TcpStream) {
    let one = reply(b"still sending");
    assert_eq!(read_n(c, one.len()), one);
}

#[test]
fn sigterm_removes_the_unix_socket_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");
    let listen = format!("unix:{}", path.display());
    let server = ServerProcess::spawn(&["--listen", &listen]);
    assert!(path.exists());
    server.signal("TERM");
    let (status, _) = server.wait_exit();
    assert_eq!(status.code(), Some(0));
    assert!(!path.exists());
}

#[test]
fn bad_flag_is_a_usage_error_exit_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_tabecho"))
        .args(["serve", "--idle-timeout", "soon"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--idle-timeout"));
}

#[test]
fn zero_idle_timeout_is_a_usage_error_exit_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_tabecho"))
        .args(["serve", "--idle-timeout", "0s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("more than zero"));
}

#[test]
fn address_in_use_is_one_line_exit_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_tabecho"))
        .args(["serve", "--listen", &addr])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("in use"), "{stderr}");
}

#[test]
fn descriptor_exhaustion_pauses_accepts_and_serves_the_backlog_after_closes() {
    // 32 descriptors in all; --max-connections above that, so EMFILE holds the line.
    let mut server = ServerProcess::spawn_with_shell_prefix(
        "ulimit -n 32 &&",
        &["--listen", "127.0.0.1:0", "--max-connections", "1000"],
    );
    let total = 60;
    let mut clients: Vec<Option<TcpStream>> = (0..total)
        .map(|i| {
            let mut c = connect(server.tcp());
            c.write_all(format!("c{i}\t").as_bytes()).unwrap();
            Some(c)
        })
        .collect();
    server.wait_for_line(|l| l.contains("pausing accepts"));
    // Served clients get their reply; close them to free descriptors for the backlog.
    let deadline = Instant::now() + WAIT;
    let mut answered = 0;
    while answered < total {
        assert!(
            Instant::now() < deadline,
            "only {answered} of {total} served"
        );
        for (i, slot) in clients.iter_mut().enumerate() {
            let Some(c) = slot else { continue };
            c.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
            let want = reply(format!("c{i}").as_bytes());
            let mut buf = vec![0u8; want.len()];
            if c.read_exact(&mut buf).is_ok() {
                assert_eq!(buf, want);
                answered += 1;
                *slot = None; // close
            }
        }
    }
    server.signal("TERM");
    let (status, log) = server.wait_exit();
    assert_eq!(status.code(), Some(0));
    let warnings = log.iter().filter(|l| l.contains("pausing accepts")).count();
    assert!(warnings >= 1);
    // One warning per pause, not one per failed accept: pauses are 100 ms apart at most
    // once per close, so far fewer than the clients.
    assert!(warnings <= total, "{warnings} warnings");
    let summary = log.iter().find(|l| l.contains("shutdown: ")).unwrap();
    assert!(summary.contains(&format!("accepted {total},")), "{summary}");
}

#[test]
fn trace_logs_each_frame_and_debug_logs_closes_with_their_reason() {
    let mut server = ServerProcess::spawn_logging("trace", "", &["--listen", "127.0.0.1:0"]);
    let mut c = connect(server.tcp());
    let local = c.local_addr().unwrap();
    round_trip(&mut c, b"hello");
    server.wait_for_line(|l| l.contains(&format!("client: {local} hello")));
    c.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mut c).0, b"");
    server.wait_for_line(|l| l.contains("close") && l.contains(": eof"));
}

#[test]
fn summary_json_holds_the_shutdown_summary_counters() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("summary.json");
    let server = ServerProcess::spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--summary-json",
        path.to_str().unwrap(),
    ]);
    let mut c = connect(server.tcp());
    round_trip(&mut c, b"one");
    round_trip(&mut c, b"two");
    drop(c);
    server.signal("TERM");
    let (status, log) = server.wait_exit();
    assert_eq!(status.code(), Some(0), "{log:?}");
    let summary = harness::report::Summary::read(&path).expect("the summary file");
    assert_eq!(summary.get("frames").unwrap(), 2, "{summary:?}");
    assert_eq!(summary.get("accepted").unwrap(), 1, "{summary:?}");
    let line = log
        .iter()
        .find(|l| l.contains("shutdown: "))
        .expect("a summary line");
    assert_eq!(frames_in(line), 2, "{line}");
}

#[test]
fn ready_fd_that_is_a_standard_stream_or_not_open_is_a_usage_error_exit_2() {
    for fd in ["2", "987"] {
        let (code, _, err) = tabecho(&["serve", "--listen", "127.0.0.1:0", "--ready-fd", fd], b"");
        assert_eq!(code, 2, "--ready-fd {fd}: {err}");
        assert!(err.contains("--ready-fd"), "{err}");
    }
}
