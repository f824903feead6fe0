//! Stream: a non-blocking TCP or Unix stream, one type for the server's reactor and the
//! load generator's workers.

use std::io::{self, Read, Write};
use std::net::Shutdown;

use mio::event::Source;
use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Registry, Token};

/// A non-blocking connected stream. 8 bytes: a tag and a file descriptor.
#[derive(Debug)]
pub enum Stream {
    /// A TCP connection.
    Tcp(TcpStream),
    /// A Unix stream socket connection.
    Unix(UnixStream),
}

impl Stream {
    /// The pending socket error (SO_ERROR), as after a non-blocking connect.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        match self {
            Stream::Tcp(s) => s.take_error(),
            Stream::Unix(s) => s.take_error(),
        }
    }

    /// Ok once connected; `NotConnected` while a non-blocking connect is in progress.
    pub fn check_connected(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.peer_addr().map(drop),
            Stream::Unix(s) => s.peer_addr().map(drop),
        }
    }

    /// Shuts the write side: the peer reads EOF after the bytes already written.
    pub fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(Shutdown::Write),
            Stream::Unix(s) => s.shutdown(Shutdown::Write),
        }
    }

    /// Makes the coming close send a TCP reset instead of a FIN (SO_LINGER of zero), so that
    /// a peer cannot mistake output cut short for a clean end. No effect on Unix sockets.
    pub fn reset_on_close(&self) {
        if let Stream::Tcp(s) = self {
            // Best effort: if it fails, the close is a plain FIN.
            let _ = socket2::SockRef::from(s).set_linger(Some(std::time::Duration::ZERO));
        }
    }

    /// Whether input is waiting to be read (a one-byte peek; EOF is not input).
    pub fn has_input(&self) -> bool {
        let mut byte = [std::mem::MaybeUninit::<u8>::uninit()];
        let peeked = match self {
            Stream::Tcp(s) => socket2::SockRef::from(s).peek(&mut byte),
            Stream::Unix(s) => socket2::SockRef::from(s).peek(&mut byte),
        };
        matches!(peeked, Ok(n) if n > 0)
    }

    /// The peer's address, for logs ("client: ADDR FRAME").
    pub fn peer_name(&self) -> String {
        match self {
            Stream::Tcp(s) => s
                .peer_addr()
                .map_or_else(|_| "?".to_string(), |a| a.to_string()),
            Stream::Unix(_) => "unix".to_string(),
        }
    }
}

/// Where a Unix socket is, as the admin listing writes it: `unix:/run/tabecho.sock`, or
/// `unix:` for an unnamed one (a client's, as a rule).
fn unix_name(addr: &std::os::unix::net::SocketAddr) -> String {
    match addr.as_pathname() {
        Some(path) => format!("{}{}", crate::addr::UNIX_PREFIX, path.display()),
        None => crate::addr::UNIX_PREFIX.to_string(),
    }
}

impl Stream {
    /// The peer's address as the admin listing writes it: `127.0.0.5:40123`,
    /// `[::1]:40123`, `unix:` (an unnamed Unix client); `?` if the kernel cannot say (the
    /// peer has gone).
    pub fn peer_addr_name(&self) -> String {
        let name = match self {
            Stream::Tcp(s) => s.peer_addr().map(|a| a.to_string()),
            Stream::Unix(s) => s.peer_addr().map(|a| unix_name(&a)),
        };
        name.unwrap_or_else(|_| "?".to_string())
    }

    /// The socket's own address as the admin listing writes it: `127.0.0.1:8085`,
    /// `unix:/run/tabecho.sock`; `?` if the kernel cannot say.
    pub fn local_addr_name(&self) -> String {
        let name = match self {
            Stream::Tcp(s) => s.local_addr().map(|a| a.to_string()),
            Stream::Unix(s) => s.local_addr().map(|a| unix_name(&a)),
        };
        name.unwrap_or_else(|_| "?".to_string())
    }

    /// The TCP peer's address (`None` for a Unix peer, or if the peer has gone).
    pub fn tcp_peer_addr(&self) -> Option<std::net::SocketAddr> {
        match self {
            Stream::Tcp(s) => s.peer_addr().ok(),
            Stream::Unix(_) => None,
        }
    }

    /// The bytes the kernel has counted on a TCP connection: received, and acknowledged by
    /// the peer ([`crate::tcp_info::byte_counts`]). `None` for a Unix socket, or where the
    /// kernel does not count them.
    pub fn tcp_byte_counts(&self) -> Option<crate::tcp_info::ByteCounts> {
        match self {
            Stream::Tcp(s) => crate::tcp_info::byte_counts(s),
            Stream::Unix(_) => None,
        }
    }
}

impl std::os::fd::AsFd for Stream {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Stream::Tcp(s) => s.as_fd(),
            Stream::Unix(s) => s.as_fd(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Source for Stream {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.register(registry, token, interests),
            Stream::Unix(s) => s.register(registry, token, interests),
        }
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.reregister(registry, token, interests),
            Stream::Unix(s) => s.reregister(registry, token, interests),
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.deregister(registry),
            Stream::Unix(s) => s.deregister(registry),
        }
    }
}
