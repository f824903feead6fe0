//! Connection: one peer's state and its I/O: read, answer the frames, write the replies.
//!
//! The reactor (`mod.rs`) owns the registry, the timers and the slab; a `Connection` only
//! moves bytes and tells the reactor what should happen next ([`Next`]).
//!
//! # Invariants
//! - `output[sent..]` is always the reply bytes the socket has not taken yet, whole replies
//!   in arrival order; when it is empty it owns no heap memory (`output` is `Vec::new()`).
//! - Replies are written in frame order: new replies go straight to the socket only when
//!   nothing is pending, else behind the pending bytes.
//! - Once `closing` is set no frame is answered: input is read and discarded until EOF.
//! - The write side is shut only when `output` is empty, so output ends on a reply boundary.

use std::io::{self, Read, Write};

use log::trace;

use super::close::CloseReason;
use super::stats::Stats;
use crate::frame::FrameDecoder;
use crate::protocol;
use crate::stream::Stream;
use crate::timer_wheel::TimerId;

/// Reads per readiness event before yielding to the other connections (fairness). With the
/// 64 KiB read buffer that is 256 KiB per turn; the rest is read on the next turn of the
/// loop, from the reactor's ready list (edge-triggered: no new event would come for it).
pub const READS_PER_EVENT: usize = 4;

/// What the reactor should do with a connection after its I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Wait for the next readiness event.
    Wait,
    /// Input may be left unread: read again on the next turn, before polling.
    ReadAgain,
    /// Close it now, for this reason.
    Close(CloseReason),
}

/// Limits the reactor applies to every connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest frame answered.
    pub max_frame: usize,
    /// Pending output at which reading pauses.
    pub high_water: usize,
    /// Pending output below which reading resumes (half of high water).
    pub low_water: usize,
}

/// The reactor-wide state a connection works with: one read buffer and one reply buffer
/// for all connections, the limits, the counters, and the time of this loop turn.
pub struct Context {
    /// The reactor's one read buffer.
    pub read_buf: Box<[u8]>,
    /// The reactor's one reply buffer: the replies to one read, sent with one write.
    pub replies: Vec<u8>,
    /// The limits in force.
    pub limits: Limits,
    /// The counters.
    pub stats: Stats,
    /// Microseconds since the server started: read when the poll returns, and again
    /// before the timers are judged, so the wheel and the idle checks share one clock.
    pub now_us: u64,
}

/// One peer. About 80 bytes when idle, and no heap memory.
#[derive(Debug)]
pub struct Connection {
    /// The socket.
    pub stream: Stream,
    /// The unfinished frame.
    decoder: FrameDecoder,
    /// Replies not yet taken by the socket, from `sent` on.
    output: Vec<u8>,
    /// How much of `output` the socket has taken. `output` stays below 4 GiB: reading
    /// pauses at high water (at most 1 GiB) and one read adds at most 64 KiB x 12 of replies.
    sent: u32,
    /// When the connection last made progress (a frame received or reply bytes written),
    /// in microseconds since the server started.
    pub last_progress_us: u64,
    /// The connection's one armed timer: its idle check, or its linger deadline once closing.
    pub timer: TimerId,
    /// Set when the connection is closing (frame too long, shutdown); the reason it closes with.
    pub closing: Option<CloseReason>,
    /// The peer has shut its write side (read returned 0).
    peer_eof: bool,
    /// Reading paused: pending output passed high water.
    read_paused: bool,
    /// Our write side is shut.
    write_shut: bool,
    /// The poller reported the peer's FIN (EPOLLRDHUP / EV_EOF): read to EOF, do not stop
    /// at a short read, since the FIN raises no further edge.
    hangup_seen: bool,
}

impl Connection {
    /// A new connection, with its timer already armed by the reactor.
    pub fn new(stream: Stream, now_us: u64, timer: TimerId) -> Self {
        Connection {
            stream,
            decoder: FrameDecoder::new(),
            output: Vec::new(),
            sent: 0,
            last_progress_us: now_us,
            timer,
            closing: None,
            peer_eof: false,
            read_paused: false,
            write_shut: false,
            hangup_seen: false,
        }
    }

    /// Reply bytes waiting for the socket.
    pub fn pending_output(&self) -> usize {
        self.output.len() - self.sent as usize
    }

    /// Bytes held in buffers: the unfinished frame and the replies not yet sent.
    pub fn buffered_bytes(&self) -> usize {
        self.decoder.pending() + self.pending_output()
    }

    /// Starts a lingering close: answer nothing more, send what is owed, shut the write
    /// side, discard input until EOF. The reactor arms the linger deadline.
    pub fn begin_closing(&mut self, reason: CloseReason) -> Next {
        self.closing = Some(reason);
        self.decoder.clear();
        self.read_paused = false;
        self.after_output()
    }

    /// Records that the poller reported the peer's FIN (or an error) for this connection.
    pub fn note_hangup(&mut self) {
        self.hangup_seen = true;
    }

    /// Reads what the socket has (at most [`READS_PER_EVENT`] reads), answers complete
    /// frames, and writes the replies.
    pub fn on_readable(&mut self, cx: &mut Context) -> Next {
        if self.read_paused || self.peer_eof {
            return Next::Wait;
        }
        for _ in 0..READS_PER_EVENT {
            let n = match self.stream.read(&mut cx.read_buf) {
                Ok(0) => {
                    self.peer_eof = true;
                    self.decoder.clear();
                    return self.after_output();
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Wait,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Next::Close(CloseReason::from_error(&e)),
            };
            cx.stats.bytes_in += n as u64;
            if self.closing.is_none() {
                if let Next::Close(reason) = self.answer(n, cx) {
                    return Next::Close(reason);
                }
            }
            if self.pending_output() >= cx.limits.high_water {
                // Stop reading a peer that does not read; `on_writable` resumes below low water.
                self.read_paused = true;
                cx.stats.backpressure_stalls += 1;
                return Next::Wait;
            }
            if n < cx.read_buf.len() && !self.hangup_seen {
                // A short read drained the socket's receive queue: any byte arriving later
                // raises a new edge (epoll EPOLLET / kqueue EV_CLEAR), so the read that would
                // return WouldBlock is skipped, one syscall per turn saved (tokio does the
                // same in PollEvented::poll_read). Not after a hang-up was reported: a FIN
                // already queued behind the data raises no new edge, and only the next
                // read (returning 0) sees it.
                return Next::Wait;
            }
        }
        cx.stats.read_yields += 1;
        Next::ReadAgain
    }

    /// Writes pending output; resumes reading below low water; finishes closes.
    pub fn on_writable(&mut self, cx: &mut Context) -> Next {
        if self.pending_output() == 0 {
            return Next::Wait;
        }
        if let Err(e) = self.flush(cx) {
            return Next::Close(CloseReason::from_error(&e));
        }
        if self.read_paused && self.pending_output() < cx.limits.low_water {
            self.read_paused = false;
            // Input may have piled up while paused and no new edge will announce it.
            if let Next::Close(reason) = self.after_output() {
                return Next::Close(reason);
            }
            return Next::ReadAgain;
        }
        self.after_output()
    }

    /// Answers the frames in the first `n` bytes of the read buffer.
    fn answer(&mut self, n: usize, cx: &mut Context) -> Next {
        let input = &cx.read_buf[..n];
        let replies = &mut cx.replies;
        replies.clear();
        let tracing = log::log_enabled!(log::Level::Trace);
        let peer = if tracing {
            self.stream.peer_name()
        } else {
            String::new()
        };
        let mut frames = 0;
        let result = self
            .decoder
            .decode(input, cx.limits.max_frame, |head, tail| {
                frames += 1;
                protocol::encode_reply(replies, head, tail);
                if tracing {
                    let frame = [head, tail].concat();
                    trace!("client: {peer} {}", String::from_utf8_lossy(&frame));
                }
            });
        if let Err(too_long) = result {
            // The frames before the long one were encoded; the error follows them.
            replies.extend_from_slice(&protocol::frame_too_long(too_long.limit));
            self.closing = Some(CloseReason::FrameTooLong);
        }
        if frames > 0 {
            cx.stats.frames += frames as u64;
            self.last_progress_us = cx.now_us;
        }
        if replies.is_empty() {
            return Next::Wait;
        }
        if let Err(e) = self.send(cx) {
            return Next::Close(CloseReason::from_error(&e));
        }
        self.after_output()
    }

    /// Sends the reactor's reply buffer: straight to the socket when nothing is pending
    /// (one write for all the replies of a read), keeping only what the socket refused.
    fn send(&mut self, cx: &mut Context) -> io::Result<()> {
        if self.pending_output() > 0 {
            // Behind bytes the socket refused: a writable event will come for them.
            self.output.extend_from_slice(&cx.replies);
            return Ok(());
        }
        let mut written = 0;
        while written < cx.replies.len() {
            match self.stream.write(&cx.replies[written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        self.wrote(written, cx);
        if written < cx.replies.len() {
            self.output = cx.replies[written..].to_vec();
            self.sent = 0;
        }
        Ok(())
    }

    /// Writes `output[sent..]` until done or the socket is full.
    fn flush(&mut self, cx: &mut Context) -> io::Result<()> {
        let mut written = 0;
        while (self.sent as usize) < self.output.len() {
            match self.stream.write(&self.output[self.sent as usize..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.sent += n as u32;
                    written += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        self.wrote(written, cx);
        if self.sent as usize == self.output.len() {
            // Give the buffer back: an idle connection owns no heap memory.
            self.output = Vec::new();
            self.sent = 0;
        }
        Ok(())
    }

    fn wrote(&mut self, n: usize, cx: &mut Context) {
        if n > 0 {
            cx.stats.bytes_out += n as u64;
            self.last_progress_us = cx.now_us;
        }
    }

    /// What follows once output may have drained: close after EOF, shut the write side of
    /// a closing connection.
    fn after_output(&mut self) -> Next {
        if self.pending_output() > 0 {
            return Next::Wait;
        }
        if self.peer_eof {
            return Next::Close(self.closing.unwrap_or(CloseReason::Eof));
        }
        if self.closing.is_some() && !self.write_shut {
            self.write_shut = true;
            if let Err(e) = self.stream.shutdown_write() {
                return Next::Close(CloseReason::from_error(&e));
            }
        }
        Next::Wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_connection_is_small() {
        // The per-connection budget is 128 bytes with the slab entry and the timer node.
        let size = std::mem::size_of::<Connection>();
        let stream = std::mem::size_of::<Stream>();
        // mio adds a selector id to each source in debug builds; release streams are an fd.
        if !cfg!(debug_assertions) {
            assert_eq!(stream, 8);
        }
        assert!(
            size - stream <= 72,
            "Connection is {size} bytes, {stream} of them the stream"
        );
    }
}
