//! The uid of the process at the other end of a Unix stream socket, as the kernel recorded
//! it when that process connected: what `--max-connections-per-source` counts a Unix
//! client by, and what the admin socket lets in (only the server's own uid and root).
//!
//! One function for every socket type (std's, mio's): it takes any descriptor. On Linux
//! and Android, SO_PEERCRED (unix(7)) through rustix's safe wrapper; on the BSDs and
//! macOS, which have no SO_PEERCRED, getpeereid(3), which rustix does not wrap.
//!
//! # Invariants
//! - The uid is always the peer's at `connect()` time (or `socketpair()`): a process that
//!   changes its uid afterwards does not change what this returns, so a check made here
//!   holds for the connection's whole life.
//! - The uid is as seen from this process's user namespace (a uid the namespace does not
//!   map reads as the overflow uid, 65534), so comparing it with our own euid is sound.

use std::io;
use std::os::fd::AsFd;

/// The uid of the peer of the Unix stream socket `socket`: SO_PEERCRED (unix(7)).
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn peer_uid(socket: impl AsFd) -> io::Result<u32> {
    let cred = rustix::net::sockopt::socket_peercred(socket)?;
    Ok(cred.uid.as_raw())
}

/// The uid of the peer of the Unix stream socket `socket`: getpeereid(3) on the BSDs and
/// macOS (they have no SO_PEERCRED; rustix does not wrap getpeereid).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
#[allow(unsafe_code)] // one of the crate's exceptions: see the SAFETY comment below
pub fn peer_uid(socket: impl AsFd) -> io::Result<u32> {
    use std::os::fd::AsRawFd;
    let fd = socket.as_fd();
    let mut uid: libc::uid_t = 0;
    let mut gid: libc::gid_t = 0;
    // SAFETY: `fd` borrows a live descriptor for the whole call, and `uid` and `gid` are
    // valid, writable, properly aligned locals of the types getpeereid(3) writes.
    let rc = unsafe { libc::getpeereid(fd.as_raw_fd(), &mut uid, &mut gid) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(uid)
}

/// The effective uid of this process: whose files it creates, whom its peers are checked
/// against.
pub fn own_euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::{UnixListener, UnixStream};

    #[test]
    fn a_socketpair_peer_is_this_process_uid() {
        let (a, b) = UnixStream::pair().expect("socketpair");
        assert_eq!(peer_uid(&a).expect("peer uid"), own_euid());
        assert_eq!(peer_uid(&b).expect("peer uid"), own_euid());
    }

    #[test]
    fn an_accepted_peer_and_a_connected_client_see_this_process_uid() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("peer.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let client = UnixStream::connect(&path).expect("connect");
        let (accepted, _) = listener.accept().expect("accept");
        assert_eq!(peer_uid(&accepted).expect("server side"), own_euid());
        assert_eq!(peer_uid(&client).expect("client side"), own_euid());
        // mio's stream too: the reactors hold those.
        let mio_stream = mio::net::UnixStream::from_std(accepted);
        assert_eq!(peer_uid(&mio_stream).expect("mio stream"), own_euid());
    }
}
