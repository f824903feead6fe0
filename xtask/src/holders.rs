//! Partial-frame holders: connections that each send 65,535 bytes without a TAB and hold
//! them, what an attacker does to pin a server's buffers. (To be `tabecho load --faults
//! partial` once the load generator has it.)

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The bytes each holder sends: one short of the default 64 KiB frame limit, no TAB.
const HELD: usize = 65_535;

/// The error line tabecho sends a connection it closes for the buffer budget.
const BUDGET_ERROR: &[u8] = b"error: server buffer memory exhausted";

/// How the holders ended.
#[derive(Debug, Default)]
pub struct Held {
    /// Still open at the end.
    pub held: usize,
    /// Closed with the budget's error line.
    pub evicted: usize,
    /// Closed without it (or never connected).
    pub closed: usize,
}

impl std::fmt::Display for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "partial holders: {} held, {} closed with the budget's error line, {} closed without it",
            self.held, self.evicted, self.closed
        )
    }
}

/// Opens `n` holders to `addr`, holds them until `secs` from the start, and says how each
/// ended.
pub fn run(n: usize, hold: Duration, addr: SocketAddr) -> Held {
    let end = Instant::now() + hold;
    let payload = vec![b'p'; HELD];
    let mut out = Held::default();
    let mut socks = Vec::with_capacity(n);
    for _ in 0..n {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).and_then(|mut s| {
            s.set_write_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(&payload)?;
            s.set_nonblocking(true)?;
            Ok(s)
        });
        match s {
            Ok(s) => socks.push(s),
            Err(_) => out.closed += 1,
        }
    }
    if let Some(left) = end.checked_duration_since(Instant::now()) {
        std::thread::sleep(left);
    }
    let mut buf = [0u8; 256];
    for mut s in socks {
        match s.read(&mut buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => out.held += 1,
            Ok(n) if buf[..n].starts_with(BUDGET_ERROR) => out.evicted += 1,
            _ => out.closed += 1,
        }
    }
    out
}
