//! Client: a blocking tab-echo client over TCP or a Unix socket, with timeouts.
//!
//! One frame out ([`Client::send_frame`]), one reply in ([`Client::read_reply`]). Replies
//! come back in order, so a caller may pipeline: send several frames, then read as many
//! replies. This is the client behind `tabecho send`, and the one tests and embedders use.
//!
//! # Errors, and how to tell them apart
//! Every failure is an [`io::Error`] whose kind names it:
//! - `ConnectionRefused`: nothing listens at the address;
//! - `TimedOut`: no connection, or no complete reply, within the timeout;
//! - `UnexpectedEof`: the server closed the connection before the reply was complete
//!   ([`ClientError::ServerClosed`] is the inner error);
//! - `InvalidInput`: the frame holds a TAB, so it would be two frames
//!   ([`ClientError::TabInFrame`]);
//! - `Other` wrapping [`ClientError::ErrorReply`]: the server answered `error: ...`
//!   (too many connections, frame too long) and will close the connection.
//!
//! [`ClientError::of`] recovers the typed cause from an `io::Error`.
//!
//! # Invariants
//! - `unread[unread_start..unread_start + scanned]` always holds no TAB, so each byte is
//!   scanned for the delimiter once however the replies are split across reads.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::addr::ListenAddr;
use crate::protocol::DELIMITER;
/// What an error line from the server starts with; spelled in [`crate::protocol`], kept
/// here for the users of this module.
pub use crate::protocol::ERROR_REPLY_PREFIX;

/// How many bytes one `read` asks for: a whole reply to a 64 KiB frame in one call.
const READ_CHUNK: usize = 64 * 1024 + 64;

/// The causes a [`Client`] reports that are not plain socket errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// The frame to send holds a TAB (at this byte offset); it would arrive as two frames.
    TabInFrame(usize),
    /// The server closed the connection before a complete reply arrived.
    ServerClosed,
    /// The server answered with an error line (without its TAB), then closes.
    ErrorReply(String),
}

impl ClientError {
    /// The `ClientError` inside `err`, if `err` was made from one.
    pub fn of(err: &io::Error) -> Option<&ClientError> {
        err.get_ref().and_then(|inner| inner.downcast_ref())
    }

    /// This error as an `io::Error` of the kind the module docs promise.
    pub fn into_io(self) -> io::Error {
        let kind = match self {
            ClientError::TabInFrame(_) => io::ErrorKind::InvalidInput,
            ClientError::ServerClosed => io::ErrorKind::UnexpectedEof,
            ClientError::ErrorReply(_) => io::ErrorKind::Other,
        };
        io::Error::new(kind, self)
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::TabInFrame(at) => write!(
                f,
                "the message holds a TAB at byte {at}: a TAB ends a frame, so it would be two"
            ),
            ClientError::ServerClosed => {
                write!(f, "the server closed the connection before replying")
            }
            ClientError::ErrorReply(line) => write!(f, "the server answered {line:?}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// The connected socket, TCP or Unix.
#[derive(Debug)]
enum Stream {
    /// `host:port`.
    Tcp(TcpStream),
    /// `unix:/path`.
    Unix(UnixStream),
}

impl Stream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(timeout),
            Stream::Unix(s) => s.set_read_timeout(timeout),
        }
    }

    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_write_timeout(timeout),
            Stream::Unix(s) => s.set_write_timeout(timeout),
        }
    }

    fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_nonblocking(nonblocking),
            Stream::Unix(s) => s.set_nonblocking(nonblocking),
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.write_all(buf),
            Stream::Unix(s) => s.write_all(buf),
        }
    }
}

/// A blocking connection to a tab-echo server.
#[derive(Debug)]
pub struct Client {
    /// The socket.
    stream: Stream,
    /// Bytes read but not yet returned as a reply (from `unread_start` on).
    unread: Vec<u8>,
    /// Where the first unreturned byte of `unread` is.
    unread_start: usize,
    /// How far past `unread_start` the buffer is known to hold no TAB.
    scanned: usize,
    /// Whether the server has closed its side (a read returned 0).
    peer_closed: bool,
}

impl Client {
    /// Connects to `addr`; `timeout` bounds the connect and, later, each write and each
    /// wait for a reply (`None`: wait forever).
    pub fn connect(addr: &ListenAddr, timeout: Option<Duration>) -> io::Result<Client> {
        let stream = match addr {
            ListenAddr::Tcp(sock) => {
                let stream = match timeout {
                    Some(t) => TcpStream::connect_timeout(sock, t)?,
                    None => TcpStream::connect(sock)?,
                };
                // Frames are small and the user waits for each reply: no Nagle delay.
                stream.set_nodelay(true)?;
                Stream::Tcp(stream)
            }
            // A Unix connect either succeeds or fails at once (a full backlog is EAGAIN
            // on Linux, see unix(7)), so it needs no timeout of its own.
            ListenAddr::Unix(path) => Stream::Unix(UnixStream::connect(path)?),
        };
        stream.set_read_timeout(timeout)?;
        stream.set_write_timeout(timeout)?;
        Ok(Client {
            stream,
            unread: Vec::new(),
            unread_start: 0,
            scanned: 0,
            peer_closed: false,
        })
    }

    /// Sends `frame` followed by the TAB that ends it. Refuses a frame holding a TAB
    /// ([`ClientError::TabInFrame`]), since the server would see two frames.
    pub fn send_frame(&mut self, frame: &[u8]) -> io::Result<()> {
        if let Some(at) = memchr::memchr(DELIMITER, frame) {
            return Err(ClientError::TabInFrame(at).into_io());
        }
        let mut wire = Vec::with_capacity(frame.len() + 1);
        wire.extend_from_slice(frame);
        wire.push(DELIMITER);
        self.stream.write_all(&wire).map_err(timeout_kind)
    }

    /// Waits for the next reply and returns it without its TAB (`server got:...`).
    ///
    /// An `error: ...` line from the server is returned as [`ClientError::ErrorReply`];
    /// a close before a complete reply as [`ClientError::ServerClosed`].
    pub fn read_reply(&mut self) -> io::Result<Vec<u8>> {
        loop {
            let pending = &self.unread[self.unread_start + self.scanned..];
            if let Some(at) = memchr::memchr(DELIMITER, pending) {
                let end = self.unread_start + self.scanned + at;
                let reply = self.unread[self.unread_start..end].to_vec();
                self.unread_start = end + 1;
                self.scanned = 0;
                if self.unread_start == self.unread.len() {
                    self.unread.clear();
                    self.unread_start = 0;
                }
                if reply.starts_with(ERROR_REPLY_PREFIX) {
                    let line = String::from_utf8_lossy(&reply).into_owned();
                    return Err(ClientError::ErrorReply(line).into_io());
                }
                return Ok(reply);
            }
            self.scanned = self.unread.len() - self.unread_start;
            if self.peer_closed {
                return Err(ClientError::ServerClosed.into_io());
            }
            self.fill()?;
        }
    }

    /// Sends `frame` and waits for its reply: one round trip.
    pub fn request(&mut self, frame: &[u8]) -> io::Result<Vec<u8>> {
        self.send_frame(frame)?;
        self.read_reply()
    }

    /// Whether the server has closed the connection while no reply was awaited (an idle
    /// connection reaped by the server, for instance). Does not block, consumes nothing
    /// that a later [`Client::read_reply`] would miss.
    pub fn server_closed(&mut self) -> io::Result<bool> {
        if self.peer_closed {
            return Ok(true);
        }
        self.stream.set_nonblocking(true)?;
        let outcome = self.fill();
        self.stream.set_nonblocking(false)?;
        match outcome {
            Ok(()) => Ok(self.peer_closed),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Reads once more into `unread`; sets `peer_closed` on end of stream.
    fn fill(&mut self) -> io::Result<()> {
        if self.unread_start > 0 && self.unread_start * 2 >= self.unread.len() {
            self.unread.drain(..self.unread_start);
            self.unread_start = 0;
        }
        let old_len = self.unread.len();
        self.unread.resize(old_len + READ_CHUNK, 0);
        let outcome = loop {
            match self.stream.read(&mut self.unread[old_len..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        match outcome {
            Ok(n) => {
                self.unread.truncate(old_len + n);
                if n == 0 {
                    self.peer_closed = true;
                }
                Ok(())
            }
            Err(e) => {
                self.unread.truncate(old_len);
                Err(timeout_kind(e))
            }
        }
    }
}

/// A socket timeout shows as `WouldBlock` (Linux, SO_RCVTIMEO per socket(7)) or
/// `TimedOut` depending on the platform; callers see `TimedOut` always.
fn timeout_kind(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::WouldBlock {
        io::Error::new(io::ErrorKind::TimedOut, "timed out waiting for the server")
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_error_round_trips_through_io_error() {
        let err = ClientError::TabInFrame(3).into_io();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(ClientError::of(&err), Some(&ClientError::TabInFrame(3)));
        let err = ClientError::ServerClosed.into_io();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let plain = io::Error::other("x");
        assert_eq!(ClientError::of(&plain), None);
    }
}
