//! Socket activation for real: `systemd-socket-activate` (package `systemd`) binds, and
//! passes the socket to `tabecho serve` as systemd does (LISTEN_FDS, LISTEN_PID, fd 3).

use std::io::Write;
use std::os::unix::net::UnixStream;

use crate::util::*;

/// Attempts at a free port: one bound and released may be taken by someone else before
/// `systemd-socket-activate` binds it.
const PORT_ATTEMPTS: usize = 5;

/// `systemd-socket-activate` on free loopback ports (`ports` of them), serving tabecho.
#[track_caller]
fn activated(ports: usize, args: &[&str]) -> (ServerProcess, Vec<String>) {
    for _ in 0..PORT_ATTEMPTS {
        let listen: Vec<String> = (0..ports).map(|_| refused_addr().to_string()).collect();
        if let Some(p) = ServerProcess::spawn_socket_activated(&listen, args) {
            return (p, listen);
        }
    }
    panic!("systemd-socket-activate could not bind a free port in {PORT_ATTEMPTS} attempts");
}

#[test]
fn socket_activation_serves_the_inherited_socket_then_sigterm_exits_0() {
    let (mut server, listen) = activated(1, &[]);
    // The socket listens already; tabecho starts on this first connection and serves it.
    let mut c = connect(listen[0].parse().unwrap());
    c.write_all(b"aaaa\t").unwrap();
    assert_eq!(read_n(&mut c, 16), b"server got:aaaa\t");
    let line = server.wait_for_line(|l| l.contains("listening on "));
    assert!(
        line.ends_with(&format!("listening on {} (from systemd)", listen[0])),
        "{line}"
    );
    drop(c);
    server.signal("TERM");
    let (status, log) = server.wait_exit();
    assert_eq!(status.code(), Some(0), "{log:?}");
}

#[test]
fn socket_activation_with_two_sockets_serves_the_first_and_warns() {
    let (mut server, listen) = activated(2, &[]);
    let mut c = connect(listen[0].parse().unwrap());
    round_trip(&mut c, b"first");
    server.wait_for_line(|l| l.contains("systemd passed 2 sockets; serving the first"));
    drop(c);
    server.signal("TERM");
    assert_eq!(server.wait_exit().0.code(), Some(0));
}

#[test]
fn socket_activation_leaves_an_inherited_unix_socket_file_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("activated.sock");
    let listen = [path.display().to_string()];
    let mut server = ServerProcess::spawn_socket_activated(&listen, &[]).expect("activate");
    let mut c = UnixStream::connect(&path).unwrap();
    c.set_read_timeout(Some(WAIT)).unwrap();
    c.write_all(b"over unix\t").unwrap();
    assert_eq!(read_n(&mut c, 21), reply(b"over unix"));
    server.wait_for_line(|l| l.contains("(from systemd)"));
    drop(c);
    server.signal("TERM");
    assert_eq!(server.wait_exit().0.code(), Some(0));
    assert!(path.exists(), "systemd's socket file was removed");
}

#[test]
fn listen_given_ignores_the_inherited_socket() {
    // --listen wins: the activated socket is closed unserved, the address given is served.
    let (mut server, listen) = activated(1, &["--listen", "127.0.0.1:0"]);
    let first = connect(listen[0].parse().unwrap()); // starts tabecho
    server.wait_for_listening();
    assert!(
        server
            .log
            .iter()
            .any(|l| l.contains("--listen given: closing the 1 socket(s) systemd passed")),
        "{:?}",
        server.log
    );
    assert!(!server.log.iter().any(|l| l.contains("(from systemd)")));
    drop(first);
    let mut c = connect(server.tcp());
    round_trip(&mut c, b"given");
    drop(c);
    server.signal("TERM");
    assert_eq!(server.wait_exit().0.code(), Some(0));
}

#[test]
fn notify_socket_gets_ready_once_serving_then_stopping_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let notify = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    notify.set_read_timeout(Some(WAIT)).unwrap();
    let prefix = format!("NOTIFY_SOCKET='{}'", path.display());
    let server = ServerProcess::spawn_with_shell_prefix(&prefix, &["--listen", "127.0.0.1:0"]);
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("READY=1");
    assert_eq!(String::from_utf8_lossy(&buf[..n]).trim_end(), "READY=1");
    let mut c = connect(server.tcp());
    round_trip(&mut c, b"ready means serving");
    drop(c);
    server.signal("TERM");
    let n = notify.recv(&mut buf).expect("STOPPING=1");
    assert_eq!(String::from_utf8_lossy(&buf[..n]).trim_end(), "STOPPING=1");
    assert_eq!(server.wait_exit().0.code(), Some(0));
}
