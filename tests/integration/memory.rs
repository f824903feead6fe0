//! Memory: what a peer can make the server hold, and the buffer-memory budget.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use tabecho::config::DEFAULT_HIGH_WATER;

use crate::util::*;

/// A server of `threads` reactors and a buffer budget of `budget` bytes, with 4 KiB high
/// water and an 8 KiB frame limit: one connection's worst case is 20,556 bytes (4096 +
/// (8192 + 12) + 64 + 8192). Idle reaping is not the subject, nor the kernel's queues:
/// the socket buffers are left to the kernel, so nothing is charged for them.
fn budget_server(threads: usize, budget: usize) -> TestServer {
    TestServer::start_with(|c| {
        c.threads = threads;
        c.high_water = 4096;
        c.max_frame = 8192;
        c.max_buffer_memory = budget;
        c.idle_timeout = Duration::from_secs(60);
        c.send_buffer = 0;
        c.recv_buffer = 0;
    })
}

/// Round trips on `healthy` until some of `holders` have been closed for the budget (the
/// budget is checked before a connection's I/O: the round trips keep the server turning
/// until the holders' bytes are in); checks that each closed one reads exactly the error
/// line, then a clean EOF (a lingering close, not a reset); returns which were closed.
#[track_caller]
fn wait_for_budget_closes(healthy: &mut TcpStream, holders: &mut [TcpStream]) -> Vec<bool> {
    let deadline = Instant::now() + WAIT;
    let mut evicted = vec![false; holders.len()];
    while !evicted.iter().any(|&e| e) {
        round_trip(healthy, b"still served");
        for (i, c) in holders.iter_mut().enumerate() {
            c.set_nonblocking(true).unwrap();
            let mut first = [0u8; 1];
            match c.peek(&mut first) {
                Ok(1) => evicted[i] = true,
                Ok(_) => panic!("holder {i} closed without the error line"),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("holder {i}: {e}"),
            }
            c.set_nonblocking(false).unwrap();
        }
        assert!(Instant::now() < deadline, "the budget never closed anyone");
    }
    for (i, c) in holders.iter_mut().enumerate().filter(|(i, _)| evicted[*i]) {
        let (got, reset) = read_to_end(c);
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(BUDGET_LINE),
            "holder {i}"
        );
        assert_eq!(reset, None, "holder {i}: a lingering close, not a reset");
    }
    evicted
}

/// Reads up to and including the first TAB (or to EOF); returns the bytes and whether the
/// stream ended first.
#[track_caller]
fn read_until_tab(c: &mut TcpStream) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match c.read(&mut byte) {
            Ok(0) => return (got, true),
            Ok(_) => {
                got.push(byte[0]);
                if byte[0] == b'\t' {
                    return (got, false);
                }
            }
            Err(e) => panic!("read after {} bytes: {e}", got.len()),
        }
    }
}

/// The error line of a connection closed for the budget.
const BUDGET_LINE: &[u8] = b"error: server buffer memory exhausted\t";

#[test]
fn flood_of_empty_frames_that_never_reads_holds_at_most_two_high_water_marks() {
    // Idle reaping is not the subject: noticing that the server stopped reading takes 1 s.
    let server = TestServer::start_with(|c| c.idle_timeout = Duration::from_secs(60));
    let mut c = connect(server.tcp());
    // Each 1-byte frame is a 12-byte reply: the worst amplification there is.
    let written = write_until_server_stops_reading(&mut c, &[b'\t'; 4096]);
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let (got, reset) = read_to_end(&mut c);
    assert_eq!(reset, None);
    assert_eq!(got.len(), written * 12, "every empty frame answered");
    assert!(got.chunks(12).all(|r| r == b"server got:\t"));
    let stats = server.stop();
    // Replies up to high water plus the one that crosses it, and at most one read of
    // input left unanswered (at most high water), plus the charge for its kernel queues
    // while its socket refuses replies: see docs/PROTOCOL.md.
    let bound = 2 * DEFAULT_HIGH_WATER as u64 + 12 + default_kernel_charge();
    assert!(
        stats.buffered_peak <= bound,
        "held {} bytes, bound {bound}",
        stats.buffered_peak
    );
    assert!(stats.backpressure_stalls >= 1);
}

#[test]
fn slow_reader_of_a_long_flood_keeps_its_buffer_bounded_and_loses_nothing() {
    // The client reads in small sips while it floods: the server's pending output is
    // written from its middle again and again; it must not grow with everything sent.
    let server = TestServer::start_with(|c| c.idle_timeout = Duration::from_secs(60));
    let c = connect(server.tcp());
    let mut reader = c.try_clone().unwrap();
    let mut writer = c;
    let frames = 2_000_000usize;
    let w = std::thread::spawn(move || {
        let chunk = [b'\t'; 8192];
        let mut left = frames;
        while left > 0 {
            let n = left.min(chunk.len());
            writer.write_all(&chunk[..n]).unwrap();
            left -= n;
        }
        writer.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut buf = [0u8; 1000];
    let mut got = 0usize;
    loop {
        let n = reader.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        assert!(buf[..n].iter().enumerate().all(|(i, &b)| {
            let at = (got + i) % 12;
            b == b"server got:\t"[at]
        }));
        got += n;
    }
    w.join().unwrap();
    assert_eq!(got, frames * 12);
    let stats = server.stop();
    let bound = 2 * DEFAULT_HIGH_WATER as u64 + 12 + default_kernel_charge();
    assert!(
        stats.buffered_peak <= bound,
        "held {} bytes, bound {bound}",
        stats.buffered_peak
    );
}

#[test]
fn budget_reached_closes_the_largest_holders_with_an_error_line_and_serves_the_rest() {
    // One connection's worst case here is 4096 + (8192 + 12) + 64 + 8192 = 20,556 bytes;
    // the budget of 64 KiB is reached by about six partial frames of 8,000 bytes.
    // One reactor: which connections pay is decided per reactor (see
    // `budget_holds_over_two_reactors` for what holds with several).
    let budget = 64 * 1024;
    let server = budget_server(1, budget);
    let mut healthy = connect(server.tcp());
    let big_frame = vec![b'B'; 8000];
    let small_frame = vec![b's'; 100];
    let mut big: Vec<TcpStream> = (0..8).map(|_| connect(server.tcp())).collect();
    let mut small: Vec<TcpStream> = (0..20).map(|_| connect(server.tcp())).collect();
    for c in &mut big {
        c.write_all(&big_frame).unwrap();
    }
    for c in &mut small {
        c.write_all(&small_frame).unwrap();
    }
    let evicted = wait_for_budget_closes(&mut healthy, &mut big);
    // Everyone else loses nothing: their frame, finished now, is answered.
    for (i, c) in big.iter_mut().enumerate().filter(|(i, _)| !evicted[*i]) {
        c.write_all(b"\t").unwrap();
        let want = reply(&big_frame);
        assert!(read_n(c, want.len()) == want, "big holder {i} kept");
    }
    for c in &mut small {
        c.write_all(b"\t").unwrap();
        assert_eq!(read_n(c, reply(&small_frame).len()), reply(&small_frame));
    }
    round_trip(&mut healthy, b"still served");
    let stats = server.stop();
    let closed = evicted.iter().filter(|&&e| e).count() as u64;
    assert_eq!(stats.closed_memory_budget, closed);
    assert!(
        stats.buffered_peak <= budget as u64,
        "peak {} over the budget {budget}",
        stats.buffered_peak
    );
}

#[test]
fn budget_holds_over_two_reactors_and_every_closed_holder_reads_the_line() {
    // Two reactors, each with a share of half the budget (32 KiB, above one connection's
    // worst case of 20,556 bytes) and a pool of 64 KiB between them; 16 partial frames of
    // 8,000 bytes (131,072 bytes of buffers) cannot all be held, wherever the kernel puts
    // them. Which ones pay is decided by the reactor that runs out: its largest.
    let budget = 128 * 1024;
    let server = budget_server(2, budget);
    let mut healthy = connect(server.tcp());
    let big_frame = vec![b'B'; 8000];
    let mut big: Vec<TcpStream> = (0..16).map(|_| connect(server.tcp())).collect();
    for c in &mut big {
        c.write_all(&big_frame).unwrap();
    }
    let evicted = wait_for_budget_closes(&mut healthy, &mut big);
    // A holder not closed yet may still be closed when its frame grows; each one either
    // gets its reply or the line, never anything else.
    for (i, c) in big.iter_mut().enumerate().filter(|(i, _)| !evicted[*i]) {
        c.write_all(b"\t").unwrap();
        let (got, _) = read_until_tab(c);
        assert!(
            got == reply(&big_frame) || got == BUDGET_LINE,
            "holder {i}: {:?}",
            String::from_utf8_lossy(&got[..got.len().min(40)])
        );
    }
    round_trip(&mut healthy, b"still served");
    let stats = server.stop();
    assert!(stats.closed_memory_budget >= 1);
    // Each reactor's peak is at most its lease; their sum at most the budget.
    assert!(
        stats.buffered_peak <= budget as u64,
        "{}",
        stats.buffered_peak
    );
}

#[test]
fn non_reading_peers_are_charged_their_kernel_queues_and_closed_at_the_budget() {
    // 16 KiB socket buffers: a connection whose socket refuses replies is charged
    // 2 x (16 + 16) KiB = 64 KiB for its kernel queues, beside at most 2 x 4 KiB + 12 bytes
    // of its own buffers. Twelve flooders that never read hold 12 x 8 KiB = 96 KiB in
    // user space, far under the 512 KiB budget, but are charged 12 x 72 KiB = 864 KiB:
    // without the charge nobody would be closed, and the kernel would hold the rest.
    let budget = 512 * 1024;
    let server = TestServer::start_with(|c| {
        c.high_water = 4096;
        c.max_frame = 8192;
        c.max_buffer_memory = budget;
        c.send_buffer = 16 * 1024;
        c.recv_buffer = 16 * 1024;
        c.idle_timeout = Duration::from_secs(60);
    });
    let mut healthy = connect(server.tcp());
    let mut flooders: Vec<TcpStream> = (0..12).map(|_| connect(server.tcp())).collect();
    for c in &mut flooders {
        c.set_nonblocking(true).unwrap();
    }
    let chunk = [b'\t'; 16 * 1024];
    let deadline = Instant::now() + WAIT;
    let mut closed = vec![false; flooders.len()];
    // Empty frames until the kernel takes no more, over and over, the server turning
    // between rounds; a flooder the budget closed (a reset: its replies were owed) fails
    // its next write.
    while !closed.iter().any(|&c| c) {
        for (i, c) in flooders.iter_mut().enumerate() {
            loop {
                match c.write(&chunk) {
                    Ok(_) => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        closed[i] = true;
                        break;
                    }
                }
            }
        }
        round_trip(&mut healthy, b"still served");
        assert!(
            Instant::now() < deadline,
            "the budget never closed a flooder"
        );
    }
    round_trip(&mut healthy, b"still served");
    let stats = server.stop();
    assert!(stats.closed_memory_budget >= 1, "{stats:?}");
    assert!(
        stats.buffered_peak <= budget as u64,
        "charged {} bytes at the peak, over the budget {budget}",
        stats.buffered_peak
    );
}

#[test]
fn budget_below_two_connections_worst_case_is_refused() {
    let mut config = tabecho::config::ServerConfig::new("127.0.0.1:0".parse().unwrap());
    config.max_buffer_memory = 1000;
    let err = config.validate().unwrap_err();
    assert!(err.contains("--max-buffer-memory 1000"), "{err}");
    let (code, _, stderr) = tabecho(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--max-buffer-memory",
            "1000",
        ],
        b"",
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--max-buffer-memory"), "{stderr}");
}

/// The start-up log names the budget and where it came from; a budget given is used as
/// given, cgroup or not.
#[test]
fn a_budget_given_is_used_as_given_and_logged() {
    let mut server =
        ServerProcess::spawn(&["--listen", "127.0.0.1:0", "--max-buffer-memory", "10000000"]);
    let line = server.wait_for_line(|l| l.contains("buffer memory budget"));
    assert!(
        line.ends_with("buffer memory budget 9.5 MiB (--max-buffer-memory)"),
        "{line}"
    );
}

/// Not given, the budget is sized from the memory limit of the cgroup the server runs in
/// (this test's): the plain default outside any limit. The log line and the metrics gauge
/// say the same value. (`cargo xtask container` runs the server in a 200 MiB cgroup.)
#[test]
fn the_default_budget_is_sized_from_the_cgroup_and_logged() {
    use tabecho::sizing;
    let mut config = tabecho::config::ServerConfig::new("127.0.0.1:0".parse().unwrap());
    config.threads = test_threads();
    let limits = tabecho::cgroup::Limits::of_this_process();
    let want = sizing::buffer_budget(None, &limits.memory, config.least_buffer_memory().unwrap());
    let mut server = ServerProcess::spawn(&["--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0"]);
    let line = server.wait_for_line(|l| l.contains("buffer memory budget"));
    let logged = format!(
        "buffer memory budget {} ({})",
        sizing::size(want.value as u64),
        want.from
    );
    assert!(
        line.ends_with(&logged),
        "{line:?} does not end with {logged:?}"
    );
    let (_, page) = http_get(server.metrics_addr(), "/metrics");
    let gauge = format!(
        "tabecho_max_buffer_memory_bytes{{reactor=\"0\"}} {}",
        want.value
    );
    assert!(page.lines().any(|l| l == gauge), "{gauge} not in {page}");
}
