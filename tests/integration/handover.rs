//! An upgrade moves every open connection to the new process (docs/PROTOCOL.md "Upgrade
//! in place"): nothing closed, nothing lost, replies in order, idle deadlines kept; and
//! each way a hand-over can go wrong falls back to something a client cannot tell from
//! no upgrade at all.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use crate::upgrade::wait_handover;
use crate::util::*;

/// Waits for the old process's "moved N connections" line; returns N.
#[track_caller]
pub fn wait_moved(server: &mut ServerProcess) -> usize {
    let line = server.wait_for_line(|l| l.contains("upgrade: moved "));
    line.split("moved ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {line:?}"))
}

/// A client that pipelines `depth` frames at a time on `stream` until told to stop, and
/// checks every reply, in order; returns how many were answered, or what went wrong.
fn pipelining_client(
    mut stream: impl Read + Write + Send + 'static,
    depth: u64,
    stop: Arc<AtomicBool>,
    progress: mpsc::Sender<u64>,
) -> thread::JoinHandle<Result<u64, String>> {
    thread::spawn(move || {
        let mut sent = 0u64;
        let mut answered = 0u64;
        let mut pending = Vec::new();
        loop {
            if !stop.load(Ordering::Acquire) {
                let mut batch = Vec::new();
                while sent < answered + depth {
                    batch.extend_from_slice(format!("frame {sent}\t").as_bytes());
                    sent += 1;
                }
                stream
                    .write_all(&batch)
                    .map_err(|e| format!("write: {e}"))?;
            } else if answered == sent {
                return Ok(answered);
            }
            let mut buf = [0u8; 4096];
            let n = stream.read(&mut buf).map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err(format!("EOF after {answered} replies of {sent}"));
            }
            pending.extend_from_slice(&buf[..n]);
            while let Some(tab) = pending.iter().position(|&b| b == b'\t') {
                let want = reply(format!("frame {answered}").as_bytes());
                let got: Vec<u8> = pending.drain(..=tab).collect();
                if got != want {
                    return Err(format!(
                        "reply {answered}: {:?}, wanted {:?}",
                        String::from_utf8_lossy(&got),
                        String::from_utf8_lossy(&want)
                    ));
                }
                answered += 1;
                let _ = progress.send(answered);
            }
        }
    })
}

/// Upgrades `server` while a client pipelines on `stream` (and another holds half a
/// frame on `partial`); checks that the old process moves both and exits 0 at once, and
/// that the client loses nothing and the half frame is answered by the new process.
#[track_caller]
fn busy_connections_move_and_lose_nothing(
    mut server: ServerProcess,
    stream: impl Read + Write + Send + 'static,
    mut partial: impl Read + Write,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let (progress, answered) = mpsc::channel();
    let client = pipelining_client(stream, 16, stop.clone(), progress);
    let wait_for = |count: u64| {
        while answered
            .recv_timeout(WAIT)
            .expect("the client makes progress")
            < count
        {}
    };
    wait_for(1_000);
    partial.write_all(b"half a fr").unwrap();
    server.signal("USR2");
    let _new = wait_handover(&mut server);
    assert_eq!(wait_moved(&mut server), 2, "{:?}", server.log);
    let started = Instant::now();
    let (status, log) = server.wait_exit();
    assert_eq!(status.code(), Some(0), "{log:?}");
    // Well inside the grace period (30 s): the old process does not drain, it is done.
    assert!(started.elapsed() < Duration::from_secs(5), "{log:?}");
    let summary = log.iter().find(|l| l.contains("shutdown: ")).cloned();
    let summary = summary.unwrap_or_else(|| panic!("no summary in {log:?}"));
    assert!(summary.contains("moved out 2,"), "{summary}");
    // The new process goes on with both: the client's stream, and the half frame.
    let at_exit = answered.try_iter().last().unwrap_or(0);
    wait_for(at_exit + 1_000);
    stop.store(true, Ordering::Release);
    let total = client.join().unwrap().expect("every reply, in order");
    assert!(total >= 2_000, "{total}");
    partial.write_all(b"ame\t").unwrap();
    assert_eq!(
        read_n(&mut partial, reply(b"half a frame").len()),
        reply(b"half a frame")
    );
}

#[test]
fn busy_tcp_connections_move_to_the_new_process_and_lose_nothing() {
    let server = ServerProcess::spawn(&["--listen", "127.0.0.1:0", "--shutdown-grace", "30s"]);
    let stream = connect(server.tcp());
    let partial = connect(server.tcp());
    busy_connections_move_and_lose_nothing(server, stream, partial);
}

#[test]
fn busy_unix_connections_move_to_the_new_process_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("move.sock");
    let listen = format!("unix:{}", path.display());
    let server = ServerProcess::spawn(&["--listen", &listen, "--shutdown-grace", "30s"]);
    let unix = || {
        let c = UnixStream::connect(&path).expect("connect");
        c.set_read_timeout(Some(WAIT)).unwrap();
        c
    };
    busy_connections_move_and_lose_nothing(server, unix(), unix());
}

#[test]
fn a_moved_connection_keeps_its_idle_deadline() {
    // Idle 2 s when it moves, with a 4 s timeout: reaped about 2 s later by the new
    // process, not 4 s after the move.
    let mut server = ServerProcess::spawn(&["--listen", "127.0.0.1:0", "--idle-timeout", "4s"]);
    let mut idle = connect(server.tcp());
    round_trip(&mut idle, b"last progress");
    let last_progress = Instant::now();
    // Time is the subject here: let it be idle a while before the move.
    thread::sleep(Duration::from_secs(2));
    server.signal("USR2");
    let _new = wait_handover(&mut server);
    assert_eq!(wait_moved(&mut server), 1);
    assert_eq!(read_to_end(&mut idle), (Vec::new(), None));
    let reaped_after = last_progress.elapsed();
    // 4 s from its last progress, one 200 ms tick late at most; with a restarted
    // deadline it would be 6 s or more. The slack is for a loaded machine.
    assert!(
        reaped_after >= Duration::from_millis(3_900) && reaped_after < Duration::from_millis(5_500),
        "reaped {reaped_after:?} after its last progress"
    );
    assert_eq!(server.wait_exit().0.code(), Some(0));
}

#[test]
fn the_metrics_listener_moves_too_so_a_fixed_port_never_blocks_an_upgrade() {
    // Port 0 resolves to one port, as a fixed --metrics port would: the new process
    // serves the very socket, it never binds the port again.
    let mut server = ServerProcess::spawn(&["--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0"]);
    let metrics = server.metrics_addr();
    assert_eq!(http_get(metrics, "/ready").0, 200);
    let mut client = connect(server.tcp());
    round_trip(&mut client, b"before");
    server.signal("USR2");
    let new = wait_handover(&mut server);
    assert_eq!(wait_moved(&mut server), 1);
    let (status, log) = server.wait_exit();
    assert_eq!(status.code(), Some(0), "{log:?}");
    assert!(
        !log.iter().any(|l| l.contains("cannot serve metrics")),
        "{log:?}"
    );
    // The new process answers on the same address, and counts the moved connection.
    round_trip(&mut client, b"after");
    let (code, page) = http_get(metrics, "/metrics");
    assert_eq!(code, 200);
    assert_eq!(total(&page, "tabecho_connections_open"), 1.0, "{page}");
    assert_eq!(
        total(&page, "tabecho_connections_adopted_total"),
        1.0,
        "{page}"
    );
    assert_eq!(http_get(metrics, "/ready").0, 200);
    drop(new);
}

#[test]
fn a_new_process_that_dies_during_the_hand_over_leaves_every_connection_with_the_old_one() {
    let prefix = format!("{}=exit-before-ack", tabecho::server::HANDOVER_FAULT_ENV);
    let mut server = ServerProcess::spawn_with_shell_prefix(
        &prefix,
        &["--listen", "127.0.0.1:0", "--shutdown-grace", "30s"],
    );
    let mut held = connect(server.tcp());
    round_trip(&mut held, b"before");
    held.write_all(b"half").unwrap();
    server.signal("USR2");
    let _new = wait_handover(&mut server);
    server.wait_for_line(|l| l.contains("rolled back: accepting again"));
    // Nothing lost, nothing changed: the half frame is finished with the old process...
    held.write_all(b"\t").unwrap();
    assert_eq!(read_n(&mut held, reply(b"half").len()), reply(b"half"));
    // ...which accepts again on the same listener.
    let mut after = connect(server.tcp());
    round_trip(&mut after, b"new connection");
    drop((held, after));
    server.signal("TERM");
    let (status, log) = server.wait_exit();
    assert_eq!(status.code(), Some(0), "{log:?}");
    // It came back: not counted as moved, nor as adopted.
    assert!(
        log.iter().any(|l| l.contains("moved out 0, adopted 0)")),
        "{log:?}"
    );
}

/// SIGTERM while the new process never acknowledges the batch: the old process shuts
/// down what it holds as usual (`listen`: its address; `connect`: a client).
#[track_caller]
fn sigterm_during_a_stalled_hand_over<S: Read + Write>(
    listen: &str,
    connect: impl Fn(&ServerProcess) -> S,
) {
    let prefix = format!("{}=stall-before-ack", tabecho::server::HANDOVER_FAULT_ENV);
    let mut server = ServerProcess::spawn_with_shell_prefix(
        &prefix,
        &["--listen", listen, "--shutdown-grace", "30s"],
    );
    let mut held = connect(&server);
    held.write_all(b"before\t").unwrap();
    assert_eq!(read_n(&mut held, reply(b"before").len()), reply(b"before"));
    server.signal("USR2");
    let new = wait_handover(&mut server);
    // The batch is out, unacknowledged: the old process still owns the connection.
    server.wait_for_line(|l| l.contains("stall-before-ack"));
    server.signal("TERM");
    // The shutdown's lingering close, by the old process: EOF, not a reset.
    assert_eq!(read_to_end(&mut held), (Vec::new(), None));
    drop(held);
    let (status, log) = server.wait_exit();
    assert_eq!(status.code(), Some(0), "{log:?}");
    assert!(log.iter().any(|l| l.contains("shutdown 1,")), "{log:?}");
    drop(new);
}

#[test]
fn sigterm_during_a_stalled_hand_over_is_a_normal_shutdown_of_what_the_old_one_holds() {
    sigterm_during_a_stalled_hand_over("127.0.0.1:0", |server| connect(server.tcp()));
}

#[test]
fn sigterm_during_a_stalled_unix_hand_over_is_a_normal_shutdown_too() {
    // With several reactors, reactor 0 accepts a Unix socket and deals: the others wait
    // for the dealing to end before they move, and the shutdown must not leave them
    // waiting.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stall.sock");
    let listen = format!("unix:{}", path.display());
    sigterm_during_a_stalled_hand_over(&listen, |_| {
        let c = UnixStream::connect(&path).expect("connect");
        c.set_read_timeout(Some(WAIT)).unwrap();
        c
    });
}

#[test]
fn under_a_service_manager_the_new_process_reports_mainpid_and_ready_then_stopping() {
    // A real NOTIFY_SOCKET receiver, as systemd's with NotifyAccess=all: the old process
    // reports READY=1; after the upgrade the new one reports MAINPID=<its pid> and
    // READY=1, and its own STOPPING=1 at the end; the old one's exit says nothing.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let notify = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    notify.set_read_timeout(Some(WAIT)).unwrap();
    let recv = || {
        let mut buf = [0u8; 512];
        let n = notify.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let prefix = format!("NOTIFY_SOCKET='{}'", path.display());
    let mut server = ServerProcess::spawn_with_shell_prefix(&prefix, &["--listen", "127.0.0.1:0"]);
    assert_eq!(recv().trim_end(), "READY=1");
    let mut client = connect(server.tcp());
    round_trip(&mut client, b"before");
    server.signal("USR2");
    let new = wait_handover(&mut server);
    assert_eq!(recv(), format!("MAINPID={}\nREADY=1\n", new.0));
    let (status, log) = server.wait_exit();
    assert_eq!(status.code(), Some(0), "{log:?}");
    round_trip(&mut client, b"after");
    drop(client);
    // The old process sent nothing more (no STOPPING=1 for its exit): the next
    // notification is the new process's own shutdown.
    let killed = std::process::Command::new("kill")
        .args(["-s", "TERM", &new.0.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert_eq!(recv().trim_end(), "STOPPING=1");
}
