//! Conn: the connect plumbing both kinds of load session share (healthy ones in
//! session.rs, faulty ones in fault/session.rs): a non-blocking connect registered on the
//! worker's poll, its completion, errno names, and the worker's context lent to each call.
//!
//! It knows nothing of either session kind; both depend on it, neither on the other.

use std::io;

use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Registry, Token};

use crate::addr::ListenAddr;
use crate::load::payload::PayloadSource;
use crate::load::plan::Plan;
use crate::load::stats::{LimitHit, WorkerStats};
use crate::stream::Stream;

/// Why a connect could not even be issued (a session then has no stream).
#[derive(Debug)]
pub enum ConnectError {
    /// A resource ran out; opening more connections is pointless.
    Limit(LimitHit, String),
    /// The Unix socket's backlog is full (EAGAIN, unix(7)): try again shortly.
    Retry,
    /// Nothing listens there (ECONNREFUSED), described.
    Refused(String),
    /// This connection failed otherwise (no such socket...), described.
    Failed(String),
}

/// Counters the worker keeps across its sessions, lent to each call.
pub struct Ctx<'a> {
    /// This worker's statistics.
    pub stats: &'a mut WorkerStats,
    /// Scratch buffer for reads, shared by the worker's sessions.
    pub read_buf: &'a mut [u8],
    /// The run's timeline and shape.
    pub plan: &'a Plan,
    /// Where sessions deregister when they close.
    pub registry: &'a Registry,
    /// Frames in flight over all the worker's sessions.
    pub in_flight: &'a mut u64,
    /// Sessions open now.
    pub open: &'a mut u64,
    /// Faulty sessions in the middle of a cycle (connecting or running).
    pub busy_faults: &'a mut u64,
    /// The run's payloads (faulty sessions make a checker per cycle).
    pub source: &'a PayloadSource,
    /// The payloads of `noread`'s larger frames.
    pub noread_source: &'a PayloadSource,
    /// The payloads of `flood`'s frames: empty.
    pub flood_source: &'a PayloadSource,
}

/// Describes an I/O error by the errno that matters to a load test.
pub fn describe(e: &io::Error) -> String {
    let name = match e.raw_os_error() {
        Some(libc::EMFILE) => "too many open files (EMFILE)",
        Some(libc::ENFILE) => "too many open files in the system (ENFILE)",
        Some(libc::EADDRNOTAVAIL) => "no free local port (EADDRNOTAVAIL)",
        Some(libc::ECONNREFUSED) => "connection refused",
        Some(libc::ECONNRESET) => "connection reset",
        Some(libc::EPIPE) => "broken pipe",
        Some(libc::ETIMEDOUT) => "timed out",
        Some(libc::ENOENT) => "no such socket file",
        _ => return e.to_string(),
    };
    name.to_string()
}

/// Issues a non-blocking connect to `addr` and registers the stream as `token` for
/// reading and writing (healthy and faulty sessions alike).
pub fn open_stream(
    addr: &ListenAddr,
    source: Option<std::net::IpAddr>,
    socket_buffer: Option<usize>,
    registry: &Registry,
    token: Token,
) -> Result<Stream, ConnectError> {
    let connected = match (addr, source, socket_buffer) {
        (ListenAddr::Tcp(sock), None, None) => TcpStream::connect(*sock).map(Stream::Tcp),
        (ListenAddr::Tcp(sock), source, socket_buffer) => {
            connect_from(source, socket_buffer, *sock).map(Stream::Tcp)
        }
        (ListenAddr::Unix(path), _, _) => UnixStream::connect(path).map(Stream::Unix),
    };
    let mut stream = match connected {
        Ok(stream) => stream,
        Err(e) => {
            return Err(match e.raw_os_error() {
                Some(libc::EMFILE | libc::ENFILE) => {
                    ConnectError::Limit(LimitHit::FileDescriptors, describe(&e))
                }
                Some(libc::EADDRNOTAVAIL) => {
                    ConnectError::Limit(LimitHit::EphemeralPorts, describe(&e))
                }
                Some(libc::EAGAIN) if matches!(addr, ListenAddr::Unix(_)) => ConnectError::Retry,
                Some(libc::ECONNREFUSED) => ConnectError::Refused(describe(&e)),
                _ => ConnectError::Failed(describe(&e)),
            })
        }
    };
    if let Err(e) = registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE) {
        return Err(ConnectError::Failed(format!("register: {}", describe(&e))));
    }
    Ok(stream)
}

/// A non-blocking TCP connect to `to`, from `source` if given (the kernel picks the
/// port), with both socket buffers capped at `socket_buffer` bytes if given.
fn connect_from(
    source: Option<std::net::IpAddr>,
    socket_buffer: Option<usize>,
    to: std::net::SocketAddr,
) -> io::Result<TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    if let Some(bytes) = socket_buffer {
        // Before the connect, so the window scale offered in the SYN fits the cap.
        socket.set_send_buffer_size(bytes)?;
        socket.set_recv_buffer_size(bytes)?;
    }
    if let Some(source) = source {
        // Port 0: the kernel picks a port at bind time, unique for this source address
        // (about 28,000 of them), whatever the destination.
        socket.bind(&std::net::SocketAddr::new(source, 0).into())?;
    }
    match socket.connect(&to.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

/// Whether a non-blocking connect has completed, asked on an event of its stream:
/// `Ok(true)` established (and Nagle turned off), `Ok(false)` still in progress (the
/// event was spurious), `Err` the connect failed.
pub fn connect_done(stream: &Stream) -> io::Result<bool> {
    // mio's TcpStream::connect docs: on writable, take_error, then peer_addr;
    // NotConnected means the event was spurious and the connect still runs.
    let outcome = match stream.take_error() {
        Ok(Some(e)) | Err(e) => Err(e),
        Ok(None) => stream.check_connected(),
    };
    match outcome {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(false),
        Err(e) => return Err(e),
    }
    if let Stream::Tcp(tcp) = stream {
        // Frames are small and pipelined: no Nagle delay on the client side either.
        if let Err(e) = tcp.set_nodelay(true) {
            log::debug!("set_nodelay: {e}");
        }
    }
    Ok(true)
}
