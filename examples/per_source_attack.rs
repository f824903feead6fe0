//! The attacker of `scripts/per-source.sh`: from one source address, tries to hold
//! `--connections` connections to a tabecho server, each sending an empty frame every
//! `--period` (inside the 2 s idle timeout), and counts exactly what the server does with
//! them: served (a reply came back), or refused with
//! `error: too many connections from your address`.
//!
//! Each of the connections is a slot acting once per period, the slots spread evenly over
//! it: an open slot sends an empty frame; a closed one (refused, or never opened) connects
//! again with `--reconnect`, so the attacker keeps knocking (by default it tries each once).
//! A connection's first frame goes out one period after it opens, by when a refusal line
//! has long arrived.
//! Replies are counted, never a payload checked beyond `server got:` + TAB, since an empty
//! frame has no payload.
//!
//! At the end (`--duration`) it stops acting, sends one more empty frame on every open
//! connection the server has not yet answered, waits (at most 5 s) until every one of them
//! is answered or refused, and prints one line of `key=value` counts (`unsettled`: open
//! connections neither served nor refused when that wait ended, 0 in a clean run):
//! - `attempts`: connects tried; `connect_errors`: those that failed;
//! - `refused`: error lines received (each one refusal the server must have counted);
//! - `served`: connections that got at least one reply; `held_max`: the most of them open at
//!   once; `held_end`: open at the end;
//! - `frames`, `replies`: empty frames sent and their replies; `frames_on_refused`: sent
//!   on a connection before its refusal line was read (never answered, by rule); `lost`:
//!   frames without a reply on a connection not refused;
//! - `closed_unexpectedly`: connections the server closed without the line (an idle
//!   close, a reset), `unexpected_bytes`: anything but replies and the line;
//! - `late_frames`: frames sent 500 ms or more after their due time (this process short
//!   of CPU: its connection may then idle out, by its own fault), `late_max_ms`.
//!
//! Exit 0 when `lost`, `unsettled`, `closed_unexpectedly` and `unexpected_bytes` are 0,
//! else 1.
//!
//! Descriptors: one per open connection; it raises its soft RLIMIT_NOFILE to the hard
//! limit and refuses to start if that is below `--connections` + 64.
//!
//! Run: `cargo run --release --example per_source_attack -- --addr 127.0.0.1:PORT
//! --source 127.0.0.2 --connections 19000 --period 1.5s --duration 30s`.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

/// The reply to an empty frame.
const REPLY: &[u8] = b"server got:\t";
/// The per-source refusal.
const LINE: &[u8] = b"error: too many connections from your address\t";
/// Connects per loop turn, after the frames due and the events: the rest wait for the next
/// turn (which then polls without blocking).
const CONNECTS_PER_TURN: usize = 64;
/// A frame this late after its due time leaves less than 2 s - 1.5 s - this, nothing, of
/// the idle timeout: its connection may be reaped for the attacker's own delay.
const LATE: Duration = Duration::from_millis(500);
/// How long the end waits for the last replies and refusals.
const DRAIN: Duration = Duration::from_secs(5);

/// One connection the attacker holds or tries to.
struct Conn {
    stream: TcpStream,
    /// Bytes received that do not yet make a whole reply or line.
    partial: Vec<u8>,
    /// A reply has come back on it.
    served: bool,
    /// Frames sent and not yet answered.
    owed: u64,
    /// The non-blocking connect has completed.
    established: bool,
}

/// The counts printed at the end.
#[derive(Default)]
struct Counts {
    attempts: u64,
    connect_errors: u64,
    refused: u64,
    served: u64,
    held: u64,
    held_max: u64,
    frames: u64,
    replies: u64,
    /// Frames sent on connections that then turned out refused (never answered, by rule).
    frames_on_refused: u64,
    /// Frames owed on connections the server closed without the line.
    lost: u64,
    closed_unexpectedly: u64,
    unexpected_bytes: u64,
    /// The latest a frame went out after its due time (this process starved of CPU).
    late_max: Duration,
    /// Frames that went out [`LATE`] or more after their due time.
    late_frames: u64,
}

/// The command line.
struct Options {
    addr: SocketAddr,
    source: IpAddr,
    connections: usize,
    period: Duration,
    duration: Duration,
    reconnect: bool,
}

fn main() -> ExitCode {
    let options = match parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("per_source_attack: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("per_source_attack: {e}");
            ExitCode::from(3)
        }
    }
}

fn run(o: &Options) -> io::Result<bool> {
    let limit = rlimit::increase_nofile_limit(u64::MAX)?;
    if limit < o.connections as u64 + 64 {
        return Err(io::Error::other(format!(
            "the descriptor limit is {limit}: raise it above {} (ulimit -n)",
            o.connections + 64
        )));
    }
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(4096);
    let mut slots: Vec<Option<Conn>> = (0..o.connections).map(|_| None).collect();
    let mut tried = vec![false; o.connections];
    // Slots waiting to connect, each at most once (`queued`): connects come after the
    // frames due, so a busy attacker keeps what it holds alive first.
    let mut to_connect = std::collections::VecDeque::new();
    let mut queued = vec![false; o.connections];
    let mut c = Counts::default();
    let start = Instant::now();
    let end = start + o.duration;
    let step = o.period / o.connections as u32;
    // The next action: slot `next` of round `round`, due at start + round x period + next x step.
    let (mut round, mut next) = (0u32, 0usize);
    let due = |round: u32, next: usize| start + o.period * round + step * next as u32;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        // Every action due by now (bounded: one round at most, then the events).
        let mut acted = 0;
        while due(round, next) <= now && acted < o.connections {
            match &mut slots[next] {
                Some(conn) => {
                    let late = now.saturating_duration_since(due(round, next));
                    c.late_max = c.late_max.max(late);
                    if late >= LATE {
                        c.late_frames += 1;
                    }
                    send_frame(conn, &mut c)
                }
                None if (!tried[next] || o.reconnect) && !queued[next] => {
                    queued[next] = true;
                    to_connect.push_back(next);
                }
                None => {}
            }
            acted += 1;
            next += 1;
            if next == o.connections {
                next = 0;
                round += 1;
            }
        }
        for _ in 0..CONNECTS_PER_TURN {
            let Some(i) = to_connect.pop_front() else {
                break;
            };
            queued[i] = false;
            tried[i] = true;
            slots[i] = connect_slot(o, &poll, i, &mut c);
        }
        let timeout = if to_connect.is_empty() {
            due(round, next)
                .saturating_duration_since(Instant::now())
                .min(end.saturating_duration_since(Instant::now()))
        } else {
            Duration::ZERO
        };
        poll.poll(&mut events, Some(timeout))?;
        for event in events.iter() {
            on_event(&mut slots, event.token().0, event.is_writable(), &mut c);
        }
    }
    // The end: every open connection not yet known to be served gets a frame (once its
    // connect completes), so each is answered or refused; then every frame owed is waited
    // for, at most DRAIN.
    let drain_end = Instant::now() + DRAIN;
    loop {
        for conn in slots.iter_mut().flatten() {
            if conn.established && !conn.served && conn.owed == 0 {
                send_frame(conn, &mut c);
            }
        }
        let unsettled = slots.iter().flatten().any(|c| !c.served || c.owed > 0);
        if !unsettled || Instant::now() >= drain_end {
            break;
        }
        poll.poll(&mut events, Some(Duration::from_millis(50)))?;
        for event in events.iter() {
            on_event(&mut slots, event.token().0, event.is_writable(), &mut c);
        }
    }
    let lost = c.lost + slots.iter().flatten().map(|c| c.owed).sum::<u64>();
    let unsettled = slots.iter().flatten().filter(|c| !c.served).count();
    println!(
        "attempts={} connect_errors={} refused={} unsettled={} served={} held_max={} held_end={} \
         frames={} replies={} frames_on_refused={} lost={} closed_unexpectedly={} \
         unexpected_bytes={} late_frames={} late_max_ms={} seconds={:.1}",
        c.attempts,
        c.connect_errors,
        c.refused,
        unsettled,
        c.served,
        c.held_max,
        c.held,
        c.frames,
        c.replies,
        c.frames_on_refused,
        lost,
        c.closed_unexpectedly,
        c.unexpected_bytes,
        c.late_frames,
        c.late_max.as_millis(),
        start.elapsed().as_secs_f64()
    );
    Ok(lost == 0 && unsettled == 0 && c.closed_unexpectedly == 0 && c.unexpected_bytes == 0)
}

/// A new connection for slot `i`, registered; `None` if the connect failed (counted).
fn connect_slot(o: &Options, poll: &Poll, i: usize, c: &mut Counts) -> Option<Conn> {
    c.attempts += 1;
    let registered = connect(o.source, o.addr).and_then(|mut stream| {
        poll.registry()
            .register(
                &mut stream,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map(|()| stream)
    });
    match registered {
        Ok(stream) => Some(Conn {
            stream,
            partial: Vec::new(),
            served: false,
            owed: 0,
            established: false,
        }),
        Err(_) => {
            c.connect_errors += 1;
            None
        }
    }
}

/// Sends one empty frame (a TAB); a failed write means the server closed it, which the
/// read side reports.
fn send_frame(conn: &mut Conn, c: &mut Counts) {
    if let Ok(1) = conn.stream.write(b"\t") {
        conn.owed += 1;
        c.frames += 1;
    }
}

/// Slot `i`'s event: its connect's outcome (the first writable event), then what it
/// received: replies, the refusal line, EOF or an error.
fn on_event(slots: &mut [Option<Conn>], i: usize, writable: bool, c: &mut Counts) {
    let Some(conn) = slots.get_mut(i).and_then(Option::as_mut) else {
        return; // closed earlier in this batch
    };
    if !conn.established {
        if !writable {
            return; // nothing to read before the connect completes
        }
        // mio's TcpStream::connect: on writable, take_error, then peer_addr.
        match conn.stream.take_error() {
            Ok(None) if conn.stream.peer_addr().is_ok() => conn.established = true,
            Ok(None) => return, // spurious: still in progress
            Ok(Some(_)) | Err(_) => {
                c.connect_errors += 1;
                slots[i] = None;
                return;
            }
        }
    }
    let mut buf = [0u8; 4096];
    let close = loop {
        match conn.stream.read(&mut buf) {
            Ok(0) => break Some(false),
            Ok(n) => conn.partial.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break None,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break Some(false),
        }
        // Whole replies off the front; the line, if that is what came.
        let replies = conn
            .partial
            .chunks_exact(REPLY.len())
            .take_while(|r| *r == REPLY)
            .count();
        if replies > 0 {
            conn.partial.drain(..replies * REPLY.len());
            c.replies += replies as u64;
            conn.owed = conn.owed.saturating_sub(replies as u64);
            if !conn.served {
                conn.served = true;
                c.served += 1;
                c.held += 1;
                c.held_max = c.held_max.max(c.held);
            }
        }
        if conn.partial.starts_with(LINE) {
            break Some(true);
        }
    };
    let Some(refused) = close else {
        if !conn.partial.is_empty()
            && !REPLY.starts_with(&conn.partial)
            && !LINE.starts_with(&conn.partial)
        {
            c.unexpected_bytes += conn.partial.len() as u64;
            conn.partial.clear();
        }
        return;
    };
    if refused {
        c.refused += 1;
        c.frames_on_refused += conn.owed;
        if conn.partial.len() > LINE.len() {
            c.unexpected_bytes += (conn.partial.len() - LINE.len()) as u64;
        }
    } else {
        c.closed_unexpectedly += 1;
        c.lost += conn.owed;
        c.unexpected_bytes += conn.partial.len() as u64;
    }
    if conn.served {
        c.held -= 1;
    }
    slots[i] = None;
}

/// A non-blocking connect from `source` to `addr`, under way. Not a blocking one: when the
/// server's listen backlog is full the kernel drops the SYN and a blocking connect waits
/// a second for its retry, which would hold every frame of this thread back that long.
fn connect(source: IpAddr, addr: SocketAddr) -> io::Result<TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    bind_address_no_port(&socket)?;
    socket.bind(&SocketAddr::new(source, 0).into())?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let _ = socket.set_nodelay(true);
    Ok(TcpStream::from_std(socket.into()))
}

/// IP_BIND_ADDRESS_NO_PORT (Linux 4.2, ip(7)): the port is chosen at connect, for the whole
/// address pair, instead of at bind for the source alone. Binding with port 0 past half
/// the ephemeral range scans every odd port first (BENCHMARKS.md, c100k), which makes
/// 19,000 connections from one address, and reconnecting ones, crawl.
fn bind_address_no_port(socket: &socket2::Socket) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: the descriptor is a live socket owned by `socket` for the whole call; the
    // option value is a valid c_int local whose size is the length passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `--addr A --source IP --connections N --period DUR --duration DUR [--reconnect]`.
fn parse(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut o = Options {
        addr: "127.0.0.1:8085".parse().expect("a literal address"),
        source: "127.0.0.2".parse().expect("a literal address"),
        connections: 19_000,
        period: Duration::from_millis(1500),
        duration: Duration::from_secs(30),
        reconnect: false,
    };
    while let Some(flag) = args.next() {
        if flag == "--reconnect" {
            o.reconnect = true;
            continue;
        }
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |e: String| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--addr" => o.addr = value.parse().map_err(|e| bad(format!("{e}")))?,
            "--source" => o.source = value.parse().map_err(|e| bad(format!("{e}")))?,
            "--connections" => o.connections = value.parse().map_err(|e| bad(format!("{e}")))?,
            "--period" => o.period = tabecho::addr::parse_duration(&value).map_err(bad)?,
            "--duration" => o.duration = tabecho::addr::parse_duration(&value).map_err(bad)?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if o.connections == 0 || o.period.is_zero() {
        return Err("--connections and --period must be above zero".to_string());
    }
    Ok(o)
}
