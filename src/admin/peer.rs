//! Who may use the admin socket: the server's own uid and root, as the peer's credentials
//! say (SO_PEERCRED, or getpeereid on the BSDs: [`crate::unix_peer`]). The socket file's
//! mode 0600 keeps others out already; this check holds even if the file's mode or its
//! directory's is loosened, and tells the one refused why (403).

use std::io;
use std::os::fd::AsFd;

use crate::unix_peer::{own_euid, peer_uid};

/// Whether the peer of the Unix stream socket `stream` may use the admin endpoint: its uid
/// (as it was when it connected) is this process's effective uid, or 0. An error if the
/// kernel cannot say (not a Unix socket): refuse then.
pub fn peer_allowed(stream: impl AsFd) -> io::Result<bool> {
    Ok(uid_allowed(peer_uid(stream)?, own_euid()))
}

/// The rule itself: `peer` is `ours`, or root.
fn uid_allowed(peer: u32, ours: u32) -> bool {
    peer == ours || peer == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::{UnixListener, UnixStream};

    #[test]
    fn our_own_uid_and_root_are_allowed_and_no_other() {
        assert!(uid_allowed(1000, 1000));
        assert!(uid_allowed(0, 1000));
        assert!(uid_allowed(0, 0));
        assert!(!uid_allowed(1001, 1000));
        assert!(!uid_allowed(1000, 0), "root's server takes root only");
        // The overflow uid, what an unmapped user reads as inside a user namespace.
        assert!(!uid_allowed(65534, 1000));
    }

    #[test]
    fn a_client_of_this_process_on_a_socket_in_a_temp_dir_is_allowed() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("admin.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let _client = UnixStream::connect(&path).expect("connect");
        let (accepted, _) = listener.accept().expect("accept");
        assert!(peer_allowed(&accepted).expect("peer credentials"));
        let (a, _b) = UnixStream::pair().expect("socketpair");
        assert!(peer_allowed(&a).expect("peer credentials"));
    }

    #[test]
    fn a_tcp_peer_is_never_allowed() {
        // No process's credentials stand behind a TCP socket: SO_PEERCRED answers an
        // error (EPERM on the machine these tests were written on) or a uid that is no
        // one's. Refused either way.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let tcp =
            std::net::TcpStream::connect(listener.local_addr().expect("address")).expect("connect");
        assert!(!peer_allowed(&tcp).unwrap_or(false));
    }
}
