//! Listener: binding, accepting, and refusing connections over the limit.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use mio::event::Source;
use mio::net::{TcpListener, UnixListener};
use mio::{Interest, Registry, Token};
use socket2::{Domain, Protocol, Socket, Type};

use crate::addr::ListenAddr;
use crate::stream::Stream;

/// The listen backlog asked of the kernel (it caps it at net.core.somaxconn, 4096 on
/// current Linux). mio's default of 1024 drops SYNs when 10,000 clients connect at once.
const BACKLOG: i32 = 4096;

/// Where a listening Unix socket came from: whose its file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// We bound it (`--listen`); a Unix socket file is ours to remove.
    Bound,
    /// systemd passed it (socket activation), or the process this one upgraded (SIGUSR2);
    /// a Unix socket file is left alone: it is systemd's, or served by another process.
    Systemd,
}

/// A listening TCP or Unix socket. A Unix socket file it created is removed on drop; one
/// systemd passed is systemd's and left alone.
#[derive(Debug)]
pub enum Listener {
    /// TCP.
    Tcp(TcpListener),
    /// Unix stream socket, with its path (removed on drop when we bound it).
    Unix(UnixListener, PathBuf, Origin),
}

impl Listener {
    /// Binds `addr`. A Unix socket path left behind by a dead server (nothing accepts on
    /// it) is replaced; a live one is "address in use". With `reuse_port`, a TCP socket
    /// sets SO_REUSEPORT before binding, so that several listeners (of this process's
    /// reactors, or of other processes that set it too) share the port and the kernel
    /// spreads new connections over them by a hash of their addresses.
    pub fn bind(addr: &ListenAddr, reuse_port: bool) -> io::Result<Listener> {
        match addr {
            ListenAddr::Tcp(sa) => {
                let socket =
                    Socket::new(Domain::for_address(*sa), Type::STREAM, Some(Protocol::TCP))?;
                socket.set_reuse_address(true)?;
                if reuse_port {
                    socket.set_reuse_port(true)?;
                }
                socket.set_nonblocking(true)?;
                socket.bind(&(*sa).into())?;
                socket.listen(BACKLOG)?;
                Ok(Listener::Tcp(TcpListener::from_std(socket.into())))
            }
            ListenAddr::Unix(path) => match UnixListener::bind(path) {
                Ok(l) => Ok(Listener::Unix(l, path.clone(), Origin::Bound)),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                    if !is_stale_socket(path) {
                        return Err(e);
                    }
                    std::fs::remove_file(path)?;
                    Ok(Listener::Unix(
                        UnixListener::bind(path)?,
                        path.clone(),
                        Origin::Bound,
                    ))
                }
                Err(e) => Err(e),
            },
        }
    }

    /// Binds a Unix socket at `path` that only this process's user (and root) can
    /// connect to: its file is mode 0600 from the moment it appears at `path`. It is bound
    /// in a fresh directory of mode 0700 beside `path` (so no one else can reach it while
    /// its mode is set), made 0600 there, then renamed into place (one atomic step; no
    /// umask change, which would be the whole process's, its other threads' files too).
    /// A socket left behind at `path` by a dead server is replaced, as [`Listener::bind`]
    /// does; a live one, or a file that is not a socket, is "address in use".
    pub fn bind_private_unix(path: &Path) -> io::Result<Listener> {
        use std::os::unix::fs::PermissionsExt;
        let in_use = || {
            io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{} exists: a live socket, or not a socket", path.display()),
            )
        };
        if std::fs::symlink_metadata(path).is_ok() && !is_stale_socket(path) {
            return Err(in_use());
        }
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        // tempfile creates the directory with mode 0700.
        let private = tempfile::Builder::new()
            .prefix(".tabecho-bind-")
            .tempdir_in(parent)?;
        let bound = private.path().join("s");
        let listener = UnixListener::bind(&bound)?;
        std::fs::set_permissions(&bound, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&bound, path)?;
        Ok(Listener::Unix(listener, path.to_path_buf(), Origin::Bound))
    }

    /// A listening stream socket passed by systemd (socket activation), TCP or Unix as
    /// `getsockname` says; made non-blocking. Anything else (a datagram socket, a socket
    /// that does not listen, a FIFO) is refused with `InvalidInput`.
    pub fn from_systemd(fd: OwnedFd) -> io::Result<Listener> {
        let socket = Socket::from(fd);
        let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_string());
        if socket.r#type()? != Type::STREAM {
            return Err(invalid("the inherited socket is not a stream socket"));
        }
        if !socket.is_listener()? {
            return Err(invalid("the inherited socket does not listen"));
        }
        socket.set_nonblocking(true)?;
        let addr = socket.local_addr()?;
        if addr.is_unix() {
            // An abstract or unnamed socket has no path; show it as such in the logs.
            let path = addr
                .as_pathname()
                .map_or_else(|| PathBuf::from("(unnamed)"), PathBuf::from);
            let l = std::os::unix::net::UnixListener::from(OwnedFd::from(socket));
            return Ok(Listener::Unix(
                UnixListener::from_std(l),
                path,
                Origin::Systemd,
            ));
        }
        if addr.as_socket().is_none() {
            return Err(invalid("the inherited socket is neither TCP nor Unix"));
        }
        let l = std::net::TcpListener::from(OwnedFd::from(socket));
        Ok(Listener::Tcp(TcpListener::from_std(l)))
    }

    /// The address actually bound (port 0 resolved).
    pub fn local_addr(&self) -> io::Result<ListenAddr> {
        match self {
            Listener::Tcp(l) => l.local_addr().map(ListenAddr::Tcp),
            Listener::Unix(_, path, _) => Ok(ListenAddr::Unix(path.clone())),
        }
    }

    /// Leaves a Unix socket file in place when this listener is dropped: another process
    /// (an upgrade's new one) serves the same socket.
    pub fn leave_file(&mut self) {
        if let Listener::Unix(_, _, origin) = self {
            *origin = Origin::Systemd;
        }
    }

    /// Caps the kernel socket buffers of the TCP connections this listener accepts:
    /// SO_SNDBUF and SO_RCVBUF set on the listening socket are inherited by every accepted
    /// socket (Linux copies them, with their lock against autotuning, in `sk_clone_lock`;
    /// BSD in `sonewconn`), so accepting costs no extra system call, and the window scale
    /// offered in the SYN-ACK already fits the cap (as nginx's `listen ... rcvbuf= sndbuf=`).
    /// 0 leaves that buffer alone. Unix sockets are left alone: their buffers are fixed
    /// (`net.core.wmem_default`), never autotuned.
    pub fn cap_socket_buffers(&self, send: usize, recv: usize) -> io::Result<()> {
        let Listener::Tcp(l) = self else {
            return Ok(());
        };
        let socket = socket2::SockRef::from(l);
        if send > 0 {
            socket.set_send_buffer_size(send)?;
        }
        if recv > 0 {
            socket.set_recv_buffer_size(recv)?;
        }
        Ok(())
    }

    /// A duplicate of the listening socket's descriptor (to hand it to another process).
    pub fn try_clone_fd(&self) -> io::Result<OwnedFd> {
        use std::os::fd::AsFd;
        match self {
            Listener::Tcp(l) => l.as_fd().try_clone_to_owned(),
            Listener::Unix(l, _, _) => l.as_fd().try_clone_to_owned(),
        }
    }

    /// Accepts one connection, non-blocking, with TCP_NODELAY set (replies are small and
    /// must not wait for Nagle); with a TCP peer's address (a Unix peer has none worth
    /// keeping).
    pub fn accept(&self) -> io::Result<(Stream, Option<SocketAddr>)> {
        match self {
            Listener::Tcp(l) => {
                let (s, peer) = l.accept()?;
                // A failure here only costs latency; the connection is still served.
                let _ = s.set_nodelay(true);
                Ok((Stream::Tcp(s), Some(peer)))
            }
            Listener::Unix(l, _, _) => l.accept().map(|(s, _)| (Stream::Unix(s), None)),
        }
    }
}

/// Refuses a connection over a limit: sends `line` (an error line of `protocol`), shuts
/// the write side and closes. Best effort and non-blocking: a fresh socket's send buffer
/// takes the line.
pub fn refuse(mut stream: Stream, line: &[u8]) {
    let _ = stream.write(line);
    let _ = stream.shutdown_write();
    // Read what the client may already have sent, so the close sends FIN, not a reset
    // that would erase the error line before the client reads it.
    // Bounded: a client that floods is not worth more than a few reads.
    let mut sink = [0u8; 4096];
    for _ in 0..16 {
        match io::Read::read(&mut stream, &mut sink) {
            Ok(n) if n > 0 => continue,
            _ => break,
        }
    }
}

/// Whether `path` is a Unix socket nothing listens on: what a server that died left
/// behind, which a new bind may replace. Only a refused connection says so: one we may
/// not connect to (EACCES) may still be served, and is not ours to replace.
fn is_stale_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    let is_socket = std::fs::symlink_metadata(path)
        .map(|m| m.file_type().is_socket())
        .unwrap_or(false);
    is_socket
        && matches!(
            std::os::unix::net::UnixStream::connect(path),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused
        )
}

/// True for accept errors that mean "out of descriptors or kernel memory": retrying at
/// once would spin, since the pending connection stays in the backlog.
pub fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, path, Origin::Bound) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Source for Listener {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.register(registry, token, interests),
            Listener::Unix(l, _, _) => l.register(registry, token, interests),
        }
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.reregister(registry, token, interests),
            Listener::Unix(l, _, _) => l.reregister(registry, token, interests),
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.deregister(registry),
            Listener::Unix(l, _, _) => l.deregister(registry),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Accepts one connection from `listener`, made by a client to `addr`.
    fn accept_one(listener: &Listener, addr: std::net::SocketAddr) -> Stream {
        let _client = std::net::TcpStream::connect(addr).expect("connect");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match listener.accept() {
                Ok((stream, _)) => return stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(std::time::Instant::now() < deadline, "no connection came");
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
    }

    #[test]
    fn accepted_sockets_inherit_the_listeners_buffer_caps() {
        let listener = Listener::bind(&"127.0.0.1:0".parse().unwrap(), false).unwrap();
        listener.cap_socket_buffers(48 * 1024, 40 * 1024).unwrap();
        let ListenAddr::Tcp(addr) = listener.local_addr().unwrap() else {
            panic!("a TCP listener");
        };
        let Stream::Tcp(stream) = accept_one(&listener, addr) else {
            panic!("a TCP stream");
        };
        let socket = socket2::SockRef::from(&stream);
        let (send, recv) = (
            socket.send_buffer_size().unwrap(),
            socket.recv_buffer_size().unwrap(),
        );
        // Linux reports twice what was set (its bookkeeping, socket(7)); BSDs the value.
        let factor = if cfg!(target_os = "linux") { 2 } else { 1 };
        assert_eq!((send, recv), (factor * 48 * 1024, factor * 40 * 1024));
    }

    #[test]
    fn zero_leaves_the_buffers_to_the_kernel() {
        let listener = Listener::bind(&"127.0.0.1:0".parse().unwrap(), false).unwrap();
        let ListenAddr::Tcp(addr) = listener.local_addr().unwrap() else {
            panic!("a TCP listener");
        };
        let before = socket2::SockRef::from(&listener_socket(&listener))
            .send_buffer_size()
            .unwrap();
        listener.cap_socket_buffers(0, 0).unwrap();
        let after = socket2::SockRef::from(&listener_socket(&listener))
            .send_buffer_size()
            .unwrap();
        assert_eq!(before, after);
        let _ = accept_one(&listener, addr);
    }

    #[test]
    fn a_private_unix_socket_is_mode_0600_replaces_a_stale_one_and_refuses_a_live_one() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let listener = Listener::bind_private_unix(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
        let _client = std::os::unix::net::UnixStream::connect(&path).expect("connect");
        // Nothing else is left in the directory: the private one is gone.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // Live: refused, and left alone.
        let err = Listener::bind_private_unix(&path).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
        // Stale (its server gone, the file kept): replaced.
        let mut stale = listener;
        stale.leave_file();
        drop(stale);
        assert!(path.exists());
        let again = Listener::bind_private_unix(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
        drop(again);
        assert!(
            !path.exists(),
            "a socket we bound is removed with its listener"
        );
        // Not a socket: refused, and left alone.
        std::fs::write(&path, "data").unwrap();
        let err = Listener::bind_private_unix(&path).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "data");
    }

    fn listener_socket(listener: &Listener) -> &TcpListener {
        match listener {
            Listener::Tcp(l) => l,
            Listener::Unix(..) => panic!("a TCP listener"),
        }
    }
}
