//! Bad peers: half-close, resets. Each closes that connection only.

use std::io::Write;
use std::net::Shutdown;
use std::time::Duration;

use crate::util::*;

#[test]
fn half_close_still_gets_every_reply_then_eof() {
    let server = TestServer::start();
    let mut c = connect(server.tcp());
    c.write_all(b"one\ttwo\tunfinished").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let (got, reset) = read_to_end(&mut c);
    assert_eq!(
        got,
        [reply(b"one"), reply(b"two")].concat(),
        "no reply to the fragment"
    );
    assert_eq!(reset, None);
    let stats = server.stop();
    assert_eq!(stats.closed_eof, 1, "{stats:?}");
}

#[test]
fn half_close_with_a_large_backlog_gets_it_all() {
    let server = TestServer::start();
    let mut c = connect(server.tcp());
    let frame = [b'h'; 500];
    let count = 4000; // 2 MB of replies: more than the socket buffers, past high water
    let input: Vec<u8> = (0..count)
        .flat_map(|_| [frame.as_slice(), b"\t"].concat())
        .collect();
    let mut writer = c.try_clone().unwrap();
    let w = std::thread::spawn(move || {
        writer.write_all(&input).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let (got, reset) = read_to_end(&mut c);
    w.join().unwrap();
    assert_eq!(reset, None);
    assert_eq!(got.len(), count * reply(&frame).len());
}

#[test]
fn reset_storm_closes_only_those_connections() {
    let server = TestServer::start();
    let mut healthy = connect(server.tcp());
    round_trip(&mut healthy, b"before");
    for i in 0..200 {
        let mut c = connect(server.tcp());
        // Replies are in flight when the reset arrives.
        c.write_all(&b"boom\t".repeat(100)).unwrap();
        if i % 2 == 0 {
            // Half of them wait for their replies to be flowing before the reset.
            let want = reply(b"boom").repeat(100);
            assert_eq!(read_n(&mut c, want.len()), want);
        }
        socket2::SockRef::from(&c)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(c); // RST
    }
    round_trip(&mut healthy, b"after");
    drop(healthy);
    // With several reactors the healthy round trip says nothing of the other reactor's
    // backlog: wait until every connection has been accepted (a reset one is accepted
    // too, and read as reset) before the stop closes the listeners.
    let deadline = std::time::Instant::now() + WAIT;
    while server
        .per_reactor()
        .iter()
        .map(|s| s.stats.accepted)
        .sum::<u64>()
        < 201
    {
        assert!(std::time::Instant::now() < deadline, "not all accepted");
        std::thread::sleep(Duration::from_millis(5));
    }
    let stats = server.stop();
    assert_eq!(stats.accepted, 201);
    let closed = stats.closed_eof + stats.closed_reset + stats.closed_error + stats.closed_shutdown;
    assert_eq!(
        closed, 201,
        "every connection closed exactly once: {stats:?}"
    );
    assert!(stats.closed_reset > 0, "{stats:?}");
}
