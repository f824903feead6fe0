//! Hand-over: an upgrade moves every open connection to the new process, socket and
//! state, so that no client can tell (docs/PROTOCOL.md "Upgrade in place"). MOSN does the
//! same; nginx, HAProxy and Envoy pass only their listeners and drain.
//!
//! ```text
//!   old process                                   new process
//!   upgrade thread: spawn, with the listeners,    serve.rs: adopt the listeners and the
//!     the metrics listener and one end of a         metrics listener; Adopter::start
//!     socketpair                                    sends the hello, then READY=1
//!   READY=1 and a hello of our VERSION? ─ no ─→ the old drain (an older binary)
//!     yes: Shared::begin_move wakes the reactors
//!   each reactor: drop its listener, take every   adopt thread, per batch:
//!     connection out of its poll and slab,          receive header + descriptors + records
//!     state exported (Connection::export), to       "ack N" (all N intact) or "nack"
//!     the mover (MoveMsg)                           wait for the commit, then deal each
//!   mover (the upgrade thread): batches of          connection to a reactor
//!     <= 253 descriptors; ack? commit, close      each reactor: Connection::adopt, register,
//!     our copies; else send the batch back to       the idle deadline continues
//!     its reactors (Shared::deliver), serve on
//!   every reactor Done and the end sent: the reactors end, the process exits 0
//! ```
//!
//! # Invariants
//! - A connection is always served by exactly one process: the old one keeps its copy of
//!   the descriptor, out of its poll, until the new one has acknowledged the batch and the
//!   commit is written; the new one serves nothing before it reads the commit. So a new
//!   process that dies or errs before the commit leaves the batch with the old one, whose
//!   state is exact (nothing was read or written meanwhile).
//! - The old process never shuts a moved socket down and never resets it: it deregisters
//!   it, then closes its descriptor, and bytes still in the kernel travel with the socket.
//! - Replies come in order, each exactly once: pending output moves ahead of anything the
//!   new process answers.

mod adopt;
mod mover;
pub mod wire;

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

pub use adopt::Adopter;
pub use mover::{MoveMsg, Mover};
pub use wire::{ConnState, Kind};

use crate::stream::Stream;

/// The environment variable naming a fault the adopting side injects, for the tests of
/// the fallbacks (the way fail points work): `exit-before-ack` (the new process dies with
/// a batch received and not acknowledged), `stall-before-ack` (it never acknowledges).
/// Only in builds with the `fault-injection` feature, which the tests enable (Cargo.toml):
/// a release binary has no way to be made to exit or stall mid-upgrade.
#[cfg(feature = "fault-injection")]
pub const FAULT_ENV: &str = "TABECHO_HANDOVER_FAULT";

/// One connection on its way between processes (or back to its reactor): its socket and
/// its state.
#[derive(Debug)]
pub struct Moved {
    pub fd: OwnedFd,
    pub state: ConnState,
    /// The reactor that held it in the old process: where it goes back if the move fails.
    pub reactor: usize,
}

impl Moved {
    /// A stream's descriptor, without closing, shutting or resetting it (its kind travels
    /// in the state, [`ConnState::kind`], which `Connection::export` sets).
    pub fn socket_of(stream: Stream) -> OwnedFd {
        match stream {
            Stream::Tcp(s) => OwnedFd::from(s),
            Stream::Unix(s) => OwnedFd::from(s),
        }
    }

    /// The stream again, non-blocking (the flag is the open file's, so it is already set
    /// when the descriptor came from a reactor; set again for safety).
    pub fn into_stream(self) -> io::Result<(Stream, ConnState)> {
        let stream = match self.state.kind {
            Kind::Tcp => {
                let s = std::net::TcpStream::from(self.fd);
                s.set_nonblocking(true)?;
                Stream::Tcp(mio::net::TcpStream::from_std(s))
            }
            Kind::Unix => {
                let s = std::os::unix::net::UnixStream::from(self.fd);
                s.set_nonblocking(true)?;
                Stream::Unix(mio::net::UnixStream::from_std(s))
            }
        };
        Ok((stream, self.state))
    }
}

/// Sends one batch: the header with every descriptor attached, then the records.
fn send_batch(channel: &mut UnixStream, fds: &[OwnedFd], payload: &[u8]) -> io::Result<()> {
    let header = wire::header(fds.len(), payload.len());
    let borrowed: Vec<_> = fds.iter().map(|fd| fd.as_fd()).collect();
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(borrowed.len()))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !borrowed.is_empty() && !control.push(SendAncillaryMessage::ScmRights(&borrowed)) {
        return Err(io::Error::other(
            "hand-over: the descriptors do not fit a message",
        ));
    }
    let sent = loop {
        match rustix::net::sendmsg(
            &*channel,
            &[IoSlice::new(&header)],
            &mut control,
            SendFlags::NOSIGNAL,
        ) {
            Err(rustix::io::Errno::INTR) => continue,
            result => break result?,
        }
    };
    // The descriptors went with the first byte; the rest of the header follows as plain
    // bytes if the socket took it in parts.
    channel.write_all(&header[sent..])?;
    channel.write_all(payload)
}

/// Receives one batch: its descriptors (close-on-exec) and its records. `Ok(None)` is the
/// end of the hand-over.
fn recv_batch(channel: &mut UnixStream) -> io::Result<Option<(Vec<OwnedFd>, Vec<ConnState>)>> {
    let mut header = [0u8; wire::HEADER_LEN];
    let mut space =
        vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(wire::MAX_FDS_PER_BATCH))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received = loop {
        match rustix::net::recvmsg(
            &*channel,
            &mut [IoSliceMut::new(&mut header)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Err(rustix::io::Errno::INTR) => continue,
            result => break result?,
        }
    };
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = message {
            fds.extend(rights);
        }
    }
    if received.bytes == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    if received.flags.contains(ReturnFlags::CTRUNC) {
        // Descriptors were lost (our limit, most likely): the batch stays with the old
        // process; the ones that came are closed as `fds` drops.
        return Err(io::Error::other(
            "hand-over: descriptors truncated (MSG_CTRUNC); out of descriptors?",
        ));
    }
    channel.read_exact(&mut header[received.bytes..])?;
    let (count, payload_len) = wire::parse_header(&header)?;
    if count == 0 {
        return Ok(None);
    }
    if fds.len() != count {
        return Err(io::Error::other(format!(
            "hand-over: {} descriptors for {count} connections",
            fds.len()
        )));
    }
    let len = usize::try_from(payload_len)
        .map_err(|_| io::Error::other("hand-over: payload larger than memory"))?;
    let mut payload = vec![0; len];
    channel.read_exact(&mut payload)?;
    let states = wire::decode_all(&payload, count)?;
    Ok(Some((fds, states)))
}

/// Reads the new process's hello line (with the channel's read timeout).
pub fn read_hello_line(channel: &mut UnixStream) -> io::Result<String> {
    read_line(channel, &mut Vec::new())
}

/// Reads one `\n`-terminated line of at most 128 bytes (the hello, an ack), a byte at a
/// time so nothing after it is consumed. `partial` keeps what came before a timeout
/// (`WouldBlock` or `TimedOut`, with a read timeout set), for the next call.
fn read_line(channel: &mut UnixStream, partial: &mut Vec<u8>) -> io::Result<String> {
    let mut byte = [0u8];
    while partial.len() < 128 {
        match channel.read(&mut byte) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(_) if byte[0] == b'\n' => {
                let line = String::from_utf8_lossy(partial).into_owned();
                partial.clear();
                return Ok(line);
            }
            Ok(_) => partial.push(byte[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("hand-over: line too long"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn state(n: usize) -> ConnState {
        ConnState {
            kind: Kind::Unix,
            decoder: vec![b'a'; n],
            decoder_held: false,
            output: vec![b'b'; 2 * n],
            idle_for_us: n as u64,
            closing: None,
            peer_eof: false,
            read_paused: false,
            write_shut: false,
            hangup_seen: false,
            client: None,
            id: n as u64 + 1,
            age_us: 10 * n as u64,
        }
    }

    #[test]
    fn a_full_batch_of_descriptors_and_states_crosses_a_socketpair() {
        let (mut old, mut new) = UnixStream::pair().unwrap();
        // 253 live sockets: one end of a pair each, the other end kept to check them.
        let pairs: Vec<_> = (0..wire::MAX_FDS_PER_BATCH)
            .map(|_| UnixStream::pair().unwrap())
            .collect();
        let states: Vec<ConnState> = (0..pairs.len()).map(state).collect();
        let mut payload = Vec::new();
        for s in &states {
            wire::encode(s, &mut payload);
        }
        let fds: Vec<OwnedFd> = pairs
            .iter()
            .map(|(a, _)| OwnedFd::from(a.try_clone().unwrap()))
            .collect();
        let sender = std::thread::spawn(move || {
            send_batch(&mut old, &fds, &payload).unwrap();
            send_batch(&mut old, &[], &[]).unwrap();
        });
        let (received, got) = recv_batch(&mut new).unwrap().unwrap();
        assert_eq!(got, states);
        assert_eq!(received.len(), pairs.len());
        // Each descriptor is the socket sent: a byte written through it reaches its peer.
        for (fd, (_, peer)) in received.into_iter().zip(&pairs) {
            assert!(fd.as_raw_fd() >= 0);
            let mut s = UnixStream::from(fd);
            s.write_all(b"x").unwrap();
            let mut b = [0u8];
            (&*peer).read_exact(&mut b).unwrap();
        }
        assert!(recv_batch(&mut new).unwrap().is_none());
        sender.join().unwrap();
    }

    #[test]
    fn a_channel_closed_mid_batch_is_an_error() {
        let (mut old, mut new) = UnixStream::pair().unwrap();
        let (a, _b) = UnixStream::pair().unwrap();
        let header = wire::header(1, 100);
        let fd = OwnedFd::from(a);
        let borrowed = [fd.as_fd()];
        let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        assert!(control.push(SendAncillaryMessage::ScmRights(&borrowed)));
        rustix::net::sendmsg(
            &old,
            &[IoSlice::new(&header)],
            &mut control,
            SendFlags::empty(),
        )
        .unwrap();
        old.write_all(b"short").unwrap();
        drop(old);
        assert!(recv_batch(&mut new).is_err());
    }
}
