//! Unix stream sockets: served like TCP; the socket file is managed by the server.

use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};

use tabecho::addr::ListenAddr;

use crate::util::*;

#[test]
fn unix_socket_is_served_and_removed_on_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tabecho.sock");
    let server = TestServer::start_with(|c| c.listen = ListenAddr::Unix(path.clone()));
    let mut c = UnixStream::connect(&path).unwrap();
    c.set_read_timeout(Some(WAIT)).unwrap();
    c.write_all(b"over unix\t\t").unwrap();
    let want = [reply(b"over unix"), reply(b"")].concat();
    assert_eq!(read_n(&mut c, want.len()), want);
    drop(c);
    server.stop();
    assert!(!path.exists(), "socket file removed");
}

#[test]
fn stale_unix_socket_file_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stale.sock");
    drop(UnixListener::bind(&path).unwrap()); // leaves the file, nobody listening
    assert!(path.exists());
    let server = TestServer::start_with(|c| c.listen = ListenAddr::Unix(path.clone()));
    let mut c = UnixStream::connect(&path).unwrap();
    c.set_read_timeout(Some(WAIT)).unwrap();
    c.write_all(b"x\t").unwrap();
    assert_eq!(read_n(&mut c, 13), reply(b"x"));
    drop(server);
}

#[test]
fn live_unix_socket_is_address_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("live.sock");
    let _live = UnixListener::bind(&path).unwrap();
    let mut config = tabecho::config::ServerConfig::new(ListenAddr::Unix(path.clone()));
    config.idle_timeout = std::time::Duration::from_secs(1);
    let err = tabecho::server::Server::bind(config)
        .err()
        .expect("bind must fail");
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    assert!(path.exists(), "the live socket's file is left alone");
}

#[test]
fn regular_file_at_the_path_is_not_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("precious.txt");
    std::fs::write(&path, b"data").unwrap();
    let config = tabecho::config::ServerConfig::new(ListenAddr::Unix(path.clone()));
    assert!(tabecho::server::Server::bind(config).is_err());
    assert_eq!(std::fs::read(&path).unwrap(), b"data");
}
