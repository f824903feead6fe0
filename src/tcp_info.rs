//! What the kernel counts on a TCP connection (`TCP_INFO`, tcp(7)): the bytes it received
//! and the bytes the peer acknowledged. The admin listing's `bytes_in` and `bytes_out`
//! come from here, read when a row is built, so the server counts nothing per connection
//! on a frame's path; and they survive an upgrade with the socket.
//!
//! Linux only (`tcpi_bytes_received` since 4.1, `tcpi_bytes_acked` since 4.2; an older
//! kernel fills less of the struct, and then there is no count). Elsewhere: none.
//!
//! # Invariants
//! - A count is returned only when the kernel wrote both fields: the length it returns
//!   reaches past them.

use std::os::fd::AsFd;

/// The bytes a TCP connection has carried, as its kernel counted them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteCounts {
    /// Bytes received in order (`tcpi_bytes_received`), read by the server or not yet.
    pub received: u64,
    /// Bytes sent that the peer acknowledged (`tcpi_bytes_acked`): sent and not yet
    /// acknowledged is not counted.
    pub acked: u64,
}

/// The counts of the TCP socket `socket`; `None` if it is not one, or the kernel does not
/// count them.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)] // one of the crate's exceptions: see the SAFETY comment below
pub fn byte_counts(socket: impl AsFd) -> Option<ByteCounts> {
    use std::os::fd::AsRawFd;
    let fd = socket.as_fd();
    let mut info = std::mem::MaybeUninit::<libc::tcp_info>::zeroed();
    let size = std::mem::size_of::<libc::tcp_info>();
    let mut len = libc::socklen_t::try_from(size).ok()?;
    // SAFETY: `fd` borrows a live descriptor for the whole call; `info` is a writable,
    // properly aligned buffer of `len` bytes (a zeroed `tcp_info`, whose fields are all
    // integers: any bytes are a valid value), and `len` a writable `socklen_t` the kernel
    // sets to the bytes it wrote (at most `len`).
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return None;
    }
    // SAFETY: zeroed, then (partly) written by the kernel: every bit pattern of its
    // integer fields is a valid `tcp_info`.
    let info = unsafe { info.assume_init() };
    // Both fields written: the kernel's struct reaches past the later of the two.
    let end = std::mem::offset_of!(libc::tcp_info, tcpi_bytes_received)
        .max(std::mem::offset_of!(libc::tcp_info, tcpi_bytes_acked))
        + 8;
    if (len as usize) < end {
        return None;
    }
    Some(ByteCounts {
        received: info.tcpi_bytes_received,
        acked: info.tcpi_bytes_acked,
    })
}

/// No such counts outside Linux.
#[cfg(not(target_os = "linux"))]
pub fn byte_counts(_socket: impl AsFd) -> Option<ByteCounts> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    #[test]
    #[cfg(target_os = "linux")]
    fn the_kernel_counts_what_a_connection_carried() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        client.write_all(&[7; 1000]).unwrap();
        let mut buf = [0; 1000];
        server.read_exact(&mut buf).unwrap();
        server.write_all(&[8; 300]).unwrap();
        client.read_exact(&mut buf[..300]).unwrap();
        // The client has read the 300 bytes: its kernel acknowledges them, and ours sees
        // the acknowledgement soon after (loopback; a short wait on a busy machine).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let counts = byte_counts(&server).expect("TCP_INFO on Linux");
            assert_eq!(counts.received, 1000);
            if counts.acked == 300 {
                break;
            }
            assert!(counts.acked < 300, "{counts:?}");
            assert!(std::time::Instant::now() < deadline, "{counts:?}");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn a_unix_socket_has_no_tcp_counts() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert_eq!(byte_counts(&a), None);
    }
}
