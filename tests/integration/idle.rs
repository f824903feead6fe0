//! Idle reaping: docs/PROTOCOL.md "Idle timeout". Time is the subject here, so these tests
//! measure it, with bounds: never before the timeout, at most a tick plus slack after.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::util::*;

const TIMEOUT: Duration = Duration::from_secs(1);
/// A tick is timeout / 20 (50 ms here); the slack covers scheduling on a busy machine
/// (load average 8 on 2 cores), and the bound stays under two timeouts, so a reap a whole
/// timeout late still fails.
const LATE_BOUND: Duration = Duration::from_millis(1000 + 50 + 900);

#[test]
fn idle_connection_is_reaped_not_before_the_timeout() {
    let server = TestServer::start_with(|c| c.idle_timeout = TIMEOUT);
    let start = Instant::now();
    let mut c = connect(server.tcp());
    let (got, _) = read_to_end(&mut c);
    let waited = start.elapsed();
    assert!(got.is_empty());
    assert!(waited >= TIMEOUT, "reaped early, after {waited:?}");
    assert!(waited <= LATE_BOUND, "reaped late, after {waited:?}");
    let stats = server.stop();
    assert_eq!(stats.reaped_idle, 1);
}

#[test]
fn timeout_counts_from_the_last_frame() {
    let server = TestServer::start_with(|c| c.idle_timeout = TIMEOUT);
    let mut c = connect(server.tcp());
    std::thread::sleep(TIMEOUT / 2);
    // From before the frame is sent: the server's progress comes after this instant
    // however long the round trip takes, so "not before the timeout" holds exactly.
    let before_send = Instant::now();
    round_trip(&mut c, b"progress");
    let round_trip_took = before_send.elapsed();
    let (_, _) = read_to_end(&mut c);
    let waited = before_send.elapsed();
    assert!(
        waited >= TIMEOUT,
        "reaped early: {waited:?} after the last frame was sent"
    );
    assert!(
        waited <= LATE_BOUND + round_trip_took,
        "reaped late: {waited:?} (round trip {round_trip_took:?})"
    );
}

#[test]
fn trickled_partial_frame_is_reaped() {
    // Bytes of an unfinished frame are not progress (as the original's read deadline).
    let server = TestServer::start_with(|c| c.idle_timeout = TIMEOUT);
    let mut c = connect(server.tcp());
    let start = Instant::now();
    let mut sent = 0;
    let closed = loop {
        if c.write_all(b"x").is_err() {
            break start.elapsed();
        }
        sent += 1;
        let mut buf = [0u8; 16];
        c.set_read_timeout(Some(Duration::from_millis(40))).unwrap();
        match std::io::Read::read(&mut c, &mut buf) {
            Ok(0) => break start.elapsed(),
            Ok(n) => panic!("unexpected reply {:?}", &buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break start.elapsed(),
        }
        assert!(start.elapsed() < WAIT, "never reaped after {sent} bytes");
    };
    assert!(closed >= TIMEOUT, "reaped early: {closed:?}");
    assert!(
        closed <= LATE_BOUND + Duration::from_millis(40),
        "reaped late: {closed:?}"
    );
    let stats = server.stop();
    assert_eq!(stats.reaped_idle, 1);
}

#[test]
fn client_sending_frames_is_never_reaped() {
    let server = TestServer::start_with(|c| c.idle_timeout = TIMEOUT);
    let mut c = connect(server.tcp());
    let start = Instant::now();
    let mut i = 0;
    while start.elapsed() < TIMEOUT * 4 {
        round_trip(&mut c, format!("keepalive {i}").as_bytes());
        std::thread::sleep(TIMEOUT / 4);
        i += 1;
    }
    let stats = server.stop();
    assert_eq!(stats.reaped_idle, 0);
    assert_eq!(stats.frames, i);
}

#[test]
fn client_reading_a_long_run_of_replies_is_never_reaped() {
    // Reply bytes written are progress: a slow reader of a big backlog is kept for as long
    // as the server still has replies to write, many timeouts. An early reap would cut the
    // run short. (Once the server has handed the last bytes to the kernel it makes no more
    // progress, so it may reap the connection while the client drains kernel buffers.)
    // A client stalled longer than this (scheduling on a busy machine) is reaped, as
    // documented: 500 ms is far past any stall of a runnable thread at load average 8.
    let timeout = Duration::from_millis(500);
    let server = TestServer::start_with(|c| c.idle_timeout = timeout);
    let frame = [b'r'; 1000];
    let count = 8000; // about 8 MB of replies, more than the socket buffers hold
                      // Built before connecting: building it takes longer than the idle timeout in debug.
    let input: Vec<u8> = (0..count)
        .flat_map(|_| [frame.as_slice(), b"\t"].concat())
        .collect();
    let mut c = connect(server.tcp());
    // Small client buffers so that the reply run cannot hide in the kernel.
    socket2::SockRef::from(&c)
        .set_recv_buffer_size(64 * 1024)
        .unwrap();
    let mut writer = c.try_clone().unwrap();
    let w = std::thread::spawn(move || {
        let _ = writer.write_all(&input);
    });
    let want = reply(&frame);
    let start = Instant::now();
    let mut got = 0;
    // Small reads, slowly: the whole run (about 250 reads) takes many idle timeouts.
    let mut buf = vec![0u8; 32 * 1024];
    while got < count * want.len() {
        let n = std::io::Read::read(&mut c, &mut buf).expect("read");
        assert!(n > 0, "closed after {got} bytes at {:?}", start.elapsed());
        got += n;
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        start.elapsed() > timeout * 4,
        "the run must outlast the timeout to mean anything"
    );
    w.join().unwrap();
}
