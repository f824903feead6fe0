//! LoadConn: one load connection's socket and its I/O loop, the same for every kind of
//! load connection: healthy sessions (session.rs), faulty ones (fault/session.rs) and the
//! one-frame connections of `--churn` (churn.rs).
//!
//! It issues the non-blocking connect and registers it (queueing the PROXY header first
//! when the load sends one), completes it on its first event, writes what its owner queued until all is written or `WouldBlock`, reads until
//! `WouldBlock` handing every byte to its owner, names how the stream ended ([`Ended`]),
//! and deregisters before it closes. What to send, when to read, and what the bytes
//! received mean belong to its owner.
//!
//! # Invariants
//! - `out[out_pos..]` always holds the bytes queued and not yet written, in the order they
//!   were queued; a write never reorders them, and `out` is emptied once all is written.
//! - The stream is always registered on the worker's poll, for reading and writing, from
//!   [`LoadConn::open`] until [`LoadConn::close`].

use std::io::{self, Read, Write};
use std::ops::ControlFlow;
use std::time::Instant;

use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Registry, Token};

use crate::addr::ListenAddr;
use crate::load::plan::Plan;
use crate::load::stats::LimitHit;
use crate::stream::Stream;

/// Why a connect could not even be issued (there is then no connection).
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

/// How a connection's stream ended, as a read or a write found it.
#[derive(Debug)]
pub enum Ended {
    /// The peer ended its stream (a read returned 0).
    Eof,
    /// The peer reset the connection, or a write found it gone (ECONNRESET, EPIPE).
    Reset(io::Error),
    /// Any other error of the named call (`"read"` or `"write"`).
    Failed(&'static str, io::Error),
}

impl Ended {
    /// One line for the report's errors: `connection reset`, `read: timed out`, ...
    pub fn describe(&self) -> String {
        match self {
            Ended::Eof => "end of stream".to_string(),
            Ended::Reset(e) => describe(e),
            Ended::Failed(call, e) => format!("{call}: {}", describe(e)),
        }
    }
}

/// One load connection: its socket, the bytes queued for it, and its connect times.
#[derive(Debug)]
pub struct LoadConn {
    /// The socket, registered on the worker's poll.
    stream: Stream,
    /// Bytes queued; `out[out_pos..]` is not yet written.
    out: Vec<u8>,
    /// How much of `out` is written.
    out_pos: usize,
    /// When the connect was issued: always before the server accepted it.
    connect_at: Instant,
    /// When the connect completed; `None` while it is in progress.
    established: Option<Instant>,
}

impl LoadConn {
    /// Issues a non-blocking connect to the plan's address (from its source address, with
    /// its socket buffers, if given) and registers it as `token`. With the plan's PROXY
    /// headers (`--proxy-header`), client `client`'s header is queued first, so it is
    /// written before anything its owner queues.
    pub fn open(
        plan: &Plan,
        registry: &Registry,
        token: Token,
        now: Instant,
        client: u64,
    ) -> Result<LoadConn, ConnectError> {
        let stream = open_stream(&plan.addr, plan.source, plan.socket_buffer, registry, token)?;
        let out = match &plan.proxy {
            Some(proxy) => proxy.header(client, &plan.addr),
            None => Vec::new(),
        };
        Ok(LoadConn {
            stream,
            out,
            out_pos: 0,
            connect_at: now,
            established: None,
        })
    }

    /// When the connect was issued.
    pub fn connect_at(&self) -> Instant {
        self.connect_at
    }

    /// When the connect completed, once it has.
    pub fn established(&self) -> Option<Instant> {
        self.established
    }

    /// Asked on an event while connecting: `Ok(true)` established now (and Nagle turned
    /// off), `Ok(false)` still in progress (the event was spurious), `Err` the connect
    /// failed.
    pub fn finish_connect(&mut self, now: Instant) -> io::Result<bool> {
        if self.established.is_some() {
            return Ok(true);
        }
        // mio's TcpStream::connect docs: on writable, take_error, then peer_addr;
        // NotConnected means the event was spurious and the connect still runs.
        let outcome = match self.stream.take_error() {
            Ok(Some(e)) | Err(e) => Err(e),
            Ok(None) => self.stream.check_connected(),
        };
        match outcome {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(false),
            Err(e) => return Err(e),
        }
        if let Stream::Tcp(tcp) = &self.stream {
            // Frames are small and pipelined: no Nagle delay on the client side either.
            if let Err(e) = tcp.set_nodelay(true) {
                log::debug!("set_nodelay: {e}");
            }
        }
        self.established = Some(now);
        Ok(true)
    }

    /// The bytes queued and not yet written; append to it to queue more.
    pub fn out(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    /// How many queued bytes are not yet written.
    pub fn unwritten(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// Drops whatever is queued and frees the buffer (nothing more will be written).
    pub fn discard_output(&mut self) {
        self.out = Vec::new();
        self.out_pos = 0;
    }

    /// Writes what is queued until all is written (`Ok(true)`, the buffer emptied) or the
    /// socket takes no more (`Ok(false)`: a writable event resumes it).
    pub fn flush(&mut self) -> Result<bool, Ended> {
        while self.out_pos < self.out.len() {
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(0) => {
                    let e = io::Error::new(io::ErrorKind::WriteZero, "wrote nothing");
                    return Err(Ended::Failed("write", e));
                }
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ended("write", e)),
            }
        }
        self.out.clear();
        self.out_pos = 0;
        Ok(true)
    }

    /// Reads until `WouldBlock` into `buf`, handing each read's bytes to `take`, which may
    /// stop the reading with a value of its own. `Ok(None)`: nothing more to read now;
    /// `Ok(Some(b))`: `take` stopped with `b`; `Err`: the stream ended.
    ///
    /// Bounded by what the peer sends, which each owner bounds by what it sent: replies to
    /// the frames in flight, an error line, or (a faulty connection) what its cycle sent.
    pub fn read<B>(
        &mut self,
        buf: &mut [u8],
        mut take: impl FnMut(&[u8]) -> ControlFlow<B>,
    ) -> Result<Option<B>, Ended> {
        loop {
            match self.stream.read(buf) {
                Ok(0) => return Err(Ended::Eof),
                Ok(n) => {
                    if let ControlFlow::Break(b) = take(&buf[..n]) {
                        return Ok(Some(b));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ended("read", e)),
            }
        }
    }

    /// Shuts the write side: the peer reads EOF after the bytes already written.
    pub fn shutdown_write(&self) -> io::Result<()> {
        self.stream.shutdown_write()
    }

    /// Deregisters and closes the socket; with `reset`, the close sends a TCP reset.
    pub fn close(mut self, registry: &Registry, reset: bool) {
        if reset {
            self.stream.reset_on_close();
        }
        // Closing the descriptor would remove it from the epoll set too; deregister first
        // so the same holds on kqueue. Errors are of no consequence: it closes anyway.
        let _ = registry.deregister(&mut self.stream);
    }
}

/// How an I/O error of `call` ends the stream: a reset or a broken pipe, or a failure.
fn ended(call: &'static str, e: io::Error) -> Ended {
    match e.kind() {
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => Ended::Reset(e),
        _ => Ended::Failed(call, e),
    }
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
/// reading and writing.
fn open_stream(
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
