//! Short connections as the original Go client makes them: connect, one frame, read the
//! reply, close; at a fixed rate, every outcome counted. (To be `tabecho load --churn RATE`
//! once the load generator has it.)

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// How each short connection ended.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ChurnCounts {
    pub ok: u64,
    pub refused: u64,
    /// Reset, or EOF before the whole reply: as bad as a reset.
    pub reset: u64,
    pub wrong: u64,
    pub timed_out: u64,
    pub other: u64,
}

impl ChurnCounts {
    /// Every connection served.
    pub fn all_ok(&self) -> bool {
        self.refused + self.reset + self.wrong + self.timed_out + self.other == 0
    }
}

impl std::fmt::Display for ChurnCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ok={} refused={} reset={} wrong={} timed_out={} other={}",
            self.ok, self.refused, self.reset, self.wrong, self.timed_out, self.other
        )
    }
}

/// Runs short connections to `addr` at `rate` per second for `duration` (one thread,
/// paced by the clock; a slow connection delays the next ones, not the count).
pub fn run(addr: SocketAddr, rate: u64, duration: Duration) -> ChurnCounts {
    let mut counts = ChurnCounts::default();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < duration {
        let due = start + Duration::from_secs_f64(n as f64 / rate as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let frame = format!("short {n}");
        n += 1;
        match one(addr, &frame) {
            Ok(got) if got == format!("server got:{frame}\t").as_bytes() => counts.ok += 1,
            Ok(got)
                if got.is_empty()
                    || format!("server got:{frame}\t").as_bytes().starts_with(&got) =>
            {
                counts.reset += 1
            }
            Ok(_) => counts.wrong += 1,
            Err(e) => match e.kind() {
                io::ErrorKind::ConnectionRefused => counts.refused += 1,
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => counts.reset += 1,
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => counts.timed_out += 1,
                _ => {
                    eprintln!("short connection: {e}");
                    counts.other += 1
                }
            },
        }
    }
    counts
}

/// One short connection: what it read before EOF or the whole reply (2 s timeouts).
fn one(addr: SocketAddr, frame: &str) -> io::Result<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(format!("{frame}\t").as_bytes())?;
    let want = "server got:".len() + frame.len() + 1;
    let mut got = Vec::with_capacity(want);
    let mut buf = [0u8; 256];
    while got.len() < want {
        match s.read(&mut buf[..want - got.len()])? {
            0 => break,
            n => got.extend_from_slice(&buf[..n]),
        }
    }
    Ok(got)
}
