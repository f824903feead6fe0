//! Limits: frame limit, connection limit, backpressure. Descriptor exhaustion is in `process`.

use std::io::{self, Write};
use std::thread;
use std::time::Duration;

use crate::util::*;

#[test]
fn frame_of_exactly_the_default_limit_is_answered() {
    let server = TestServer::start();
    let mut c = connect(server.tcp());
    let frame = vec![b'x'; 65536];
    let mut writer = c.try_clone().unwrap();
    let input = [frame.as_slice(), b"\t"].concat();
    let w = thread::spawn(move || writer.write_all(&input).unwrap());
    let want = reply(&frame);
    assert!(read_n(&mut c, want.len()) == want);
    w.join().unwrap();
}

#[test]
fn frame_over_the_limit_gets_replies_owed_then_error_then_close() {
    let server = TestServer::start_with(|c| c.max_frame = 8);
    let mut c = connect(server.tcp());
    c.write_all(b"ok\t12345678\t123456789").unwrap();
    let (got, reset) = read_to_end(&mut c);
    let want = [
        reply(b"ok"),
        reply(b"12345678"),
        b"error: frame exceeds 8 bytes\t".to_vec(),
    ]
    .concat();
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&want)
    );
    assert_eq!(reset, None, "clean EOF after the error");
    let stats = server.stop();
    assert_eq!(stats.closed_frame_too_long, 1);
}

#[test]
fn frame_over_the_limit_error_survives_a_client_that_keeps_sending() {
    // Without the lingering close the server's close would reset the connection while
    // the client is still sending, and the error line would be lost.
    let server = TestServer::start_with(|c| c.max_frame = 1024);
    let mut c = connect(server.tcp());
    let mut writer = c.try_clone().unwrap();
    let w = thread::spawn(move || {
        let chunk = vec![b'y'; 16 * 1024];
        // Keep sending until the server shuts us out (bounded: 64 MiB).
        for _ in 0..4096 {
            if writer.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = writer.shutdown(std::net::Shutdown::Write);
    });
    let (got, _) = read_to_end(&mut c);
    assert_eq!(got, b"error: frame exceeds 1024 bytes\t");
    w.join().unwrap();
}

#[test]
fn connection_over_the_limit_gets_error_and_close_others_unaffected() {
    let server = TestServer::start_with(|c| c.max_connections = Some(2));
    let mut a = connect(server.tcp());
    let mut b = connect(server.tcp());
    round_trip(&mut a, b"a");
    round_trip(&mut b, b"b");
    let mut over = connect(server.tcp());
    let (got, _) = read_to_end(&mut over);
    assert_eq!(got, b"error: too many connections\t");
    round_trip(&mut a, b"still a");
    round_trip(&mut b, b"still b");
    // Once one closes, new connections are served again.
    drop(a);
    let mut served = None;
    for _ in 0..100 {
        let mut c = connect(server.tcp());
        c.write_all(b"new\t").unwrap();
        let mut buf = [0u8; 64];
        let n = io::Read::read(&mut c, &mut buf).unwrap();
        if &buf[..n] == reply(b"new").as_slice() {
            served = Some(c);
            break;
        }
        // Refused: the close of `a` has not been processed yet. Try again.
        assert_eq!(&buf[..n], b"error: too many connections\t");
    }
    assert!(served.is_some(), "a slot freed by a close is reused");
    let stats = server.stop();
    assert!(stats.rejected >= 1);
}

#[test]
fn peer_that_does_not_read_is_throttled_and_loses_nothing() {
    let high_water = 64 * 1024;
    // Idle reaping is not the subject: noticing that the server stopped reading takes 1 s.
    let server = TestServer::start_with(|c| {
        c.high_water = high_water;
        c.idle_timeout = Duration::from_secs(60);
    });
    let mut c = connect(server.tcp());
    let frame = [b'z'; 100];
    let pattern: Vec<u8> = (0..1000)
        .flat_map(|_| [frame.as_slice(), b"\t"].concat())
        .collect();
    let written = write_until_server_stops_reading(&mut c, &pattern);
    // Now read everything: every complete frame written is answered, in order; the
    // unfinished frame at the end gets nothing.
    let frames = written / (frame.len() + 1);
    let want_len = frames * reply(&frame).len();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let (got, reset) = read_to_end(&mut c);
    assert_eq!(reset, None);
    assert_eq!(
        got.len(),
        want_len,
        "{frames} frames in {written} bytes written"
    );
    assert!(got.chunks(reply(&frame).len()).all(|r| r == reply(&frame)));
    let stats = server.stop();
    assert!(stats.backpressure_stalls >= 1);
}
