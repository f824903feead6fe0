//! `tabecho send` and the library's blocking `Client`: replies, stdin, and each error path
//! with its exit code.

use std::io::{self, Read};
use std::net::TcpListener;

use tabecho::addr::ListenAddr;
use tabecho::client::{Client, ClientError};

use crate::util::*;

#[test]
fn client_pipelines_frames_and_reads_replies_in_order() {
    let server = TestServer::start();
    let mut client = Client::connect(&server.addr, Some(WAIT)).unwrap();
    for frame in [&b"one"[..], b"", b"three \x00\xff"] {
        client.send_frame(frame).unwrap();
    }
    assert_eq!(client.read_reply().unwrap(), b"server got:one");
    assert_eq!(client.read_reply().unwrap(), b"server got:");
    assert_eq!(client.read_reply().unwrap(), b"server got:three \x00\xff");
    assert!(!client.server_closed().unwrap());
}

#[test]
fn client_refuses_a_frame_holding_a_tab() {
    let server = TestServer::start();
    let mut client = Client::connect(&server.addr, Some(WAIT)).unwrap();
    let err = client.send_frame(b"a\tb").unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert_eq!(ClientError::of(&err), Some(&ClientError::TabInFrame(1)));
    // Nothing was sent: the connection still answers the next frame alone.
    assert_eq!(client.request(b"c").unwrap(), b"server got:c");
}

#[test]
fn client_reports_an_error_reply() {
    let server = TestServer::start_with(|c| c.max_frame = 4);
    let mut client = Client::connect(&server.addr, Some(WAIT)).unwrap();
    let err = client.request(b"too long").unwrap_err();
    assert_eq!(
        ClientError::of(&err),
        Some(&ClientError::ErrorReply(
            "error: frame exceeds 4 bytes".into()
        ))
    );
}

#[test]
fn client_over_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("send.sock");
    let _server = TestServer::start_with(|c| c.listen = ListenAddr::Unix(path.clone()));
    let mut client = Client::connect(&ListenAddr::Unix(path), Some(WAIT)).unwrap();
    assert_eq!(client.request(b"unix").unwrap(), b"server got:unix");
}

#[test]
fn send_with_no_message_sends_aaaa() {
    let server = TestServer::start();
    let (code, out, err) = tabecho(&["send", "--addr", &server.addr.to_string()], b"");
    assert_eq!((code, out.as_str()), (0, "server got:aaaa\n"), "{err}");
}

#[test]
fn send_prints_each_reply_on_its_own_line() {
    let server = TestServer::start();
    let addr = server.addr.to_string();
    let (code, out, err) = tabecho(&["send", "--addr", &addr, "hello", "two words", ""], b"");
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "server got:hello\nserver got:two words\nserver got:\n");
}

#[test]
fn send_dash_reads_lines_from_stdin() {
    let server = TestServer::start();
    let addr = server.addr.to_string();
    let (code, out, err) = tabecho(&["send", "--addr", &addr, "-"], b"first\nsecond\r\nthird");
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "server got:first\nserver got:second\nserver got:third\n"
    );
}

#[test]
fn send_over_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cli.sock");
    let _server = TestServer::start_with(|c| c.listen = ListenAddr::Unix(path.clone()));
    let addr = format!("unix:{}", path.display());
    let (code, out, err) = tabecho(&["send", "--addr", &addr, "u"], b"");
    assert_eq!((code, out.as_str()), (0, "server got:u\n"), "{err}");
}

#[test]
fn send_tab_in_message_exits_2_before_connecting() {
    // Nothing listens: a TAB must be refused before any connect is tried.
    let addr = refused_addr().to_string();
    let (code, out, err) = tabecho(&["send", "--addr", &addr, "ok", "a\tb"], b"");
    assert_eq!(code, 2, "{err}");
    assert_eq!(out, "");
    assert!(err.contains("TAB"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn send_tab_in_stdin_line_exits_2() {
    let server = TestServer::start();
    let addr = server.addr.to_string();
    let (code, out, err) = tabecho(&["send", "--addr", &addr, "-"], b"fine\nnot\tfine\n");
    assert_eq!(code, 2, "{err}");
    assert_eq!(out, "server got:fine\n");
}

#[test]
fn send_connection_refused_exits_3() {
    let addr = refused_addr().to_string();
    let (code, _, err) = tabecho(&["send", "--addr", &addr], b"");
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("could not connect"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn send_missing_unix_socket_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("unix:{}", dir.path().join("nobody.sock").display());
    let (code, _, err) = tabecho(&["send", "--addr", &addr], b"");
    assert_eq!(code, 3, "{err}");
}

#[test]
fn send_no_reply_within_timeout_exits_4() {
    let server = FaultyServer::start(Fault::Silent);
    let addr = server.addr.to_string();
    let (code, _, err) = tabecho(&["send", "--addr", &addr, "--timeout", "200ms"], b"");
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("timeout"), "{err}");
}

#[test]
fn send_server_closing_early_exits_5() {
    let server = FaultyServer::start(Fault::CloseAtOnce);
    let addr = server.addr.to_string();
    let (code, _, err) = tabecho(&["send", "--addr", &addr], b"");
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("closed"), "{err}");
}

#[test]
fn send_error_reply_exits_6() {
    let server = TestServer::start_with(|c| c.max_frame = 4);
    let addr = server.addr.to_string();
    let (code, out, err) = tabecho(&["send", "--addr", &addr, "12345"], b"");
    assert_eq!(code, 6, "{err}");
    assert_eq!(out, "");
    assert!(err.contains("error: frame exceeds 4 bytes"), "{err}");
}

#[test]
fn send_help_documents_the_exit_codes() {
    let (code, out, _) = tabecho(&["send", "--help"], b"");
    assert_eq!(code, 0);
    for line in [
        "2  bad command line",
        "3  could not connect",
        "4  no complete reply",
        "5  the server closed",
        "6  the server answered",
    ] {
        assert!(out.contains(line), "missing {line:?} in\n{out}");
    }
}

/// What `send -` relies on to reconnect: `server_closed` sees an idle connection reaped.
#[test]
fn client_sees_the_server_reap_an_idle_connection() {
    let server = TestServer::start_with(|c| c.idle_timeout = std::time::Duration::from_millis(100));
    let mut client = Client::connect(&server.addr, Some(WAIT)).unwrap();
    assert_eq!(client.request(b"x").unwrap(), b"server got:x");
    // Wait for the reap as an event: server_closed turns true (bounded by WAIT).
    let deadline = std::time::Instant::now() + WAIT;
    while !client.server_closed().unwrap() {
        assert!(std::time::Instant::now() < deadline, "server never reaped");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let err = client.request(b"y").unwrap_err();
    assert!(
        matches!(
            err.kind(),
            io::ErrorKind::UnexpectedEof
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::ConnectionReset
        ),
        "{err:?}"
    );
}

/// A listener that is never accepted from still completes TCP connects (backlog), so the
/// client's timeout is about replies, not the handshake.
#[test]
fn client_times_out_waiting_for_a_reply() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = ListenAddr::Tcp(listener.local_addr().unwrap());
    let mut client = Client::connect(&addr, Some(std::time::Duration::from_millis(100))).unwrap();
    client.send_frame(b"hello?").unwrap();
    let err = client.read_reply().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    let (mut accepted, _) = listener.accept().unwrap();
    let mut got = [0u8; 7];
    accepted.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hello?\t");
}
