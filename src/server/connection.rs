//! Connection: one peer's state and its I/O: read, answer the frames, write the replies.
//!
//! The reactor (`reactor.rs` and its parts in `reactor/`) owns the registry, the timers,
//! the slab and the buffer-memory budget; a `Connection` only moves bytes and tells the
//! reactor what should happen next ([`Next`]), including when it begins closing
//! ([`Next::Linger`]). Its fields are private: the reactor reads them, and sets only the
//! timer it armed, through methods.
//!
//! # Memory a peer can make it hold
//! Replies are written straight to the socket; only what the socket refuses is kept, in
//! `output`. A read takes at most the room left under the high-water mark `H`, and frames
//! are answered only while the replies of this round fit in that room (one reply may
//! cross it). When the socket refuses replies and room runs out, the rest of the input is
//! left unanswered with the decoder (1 byte in can be 12 bytes out, so input is the cheap
//! form to keep), reading stops, and the input is answered once the peer has read enough.
//! So, always: pending output <= `H` + the largest reply + an error line, and unanswered
//! input <= `H` (it comes from one read); a partial frame (<= `max_frame`) exists only when
//! nothing is unanswered. Under a flood of empty frames that is at most 2 x `H` + 12.
//!
//! # Invariants
//! - `output[sent..]` is always the reply bytes the socket has not taken yet, whole replies
//!   in arrival order; when it is empty it owns no heap memory (`output` is `Vec::new()`).
//! - Replies are written in frame order: new replies go straight to the socket only when
//!   nothing is pending, else behind the pending bytes; unanswered input is answered
//!   before anything more is read.
//! - Once `closing` is set no frame read afterwards is answered: input is read and
//!   discarded until EOF (unanswered input received before is still answered).
//! - The write side is shut only when `output` is empty and nothing is unanswered, so
//!   output ends on a reply boundary.

use std::io::{self, Read, Write};
use std::ops::ControlFlow;

use log::trace;

use super::handover::{ConnState, Kind};
use crate::counters::CloseReason;
use crate::counters::Stats;
use crate::frame::FrameDecoder;
use crate::protocol;
use crate::stream::Stream;
use crate::timer_wheel::TimerId;

use super::turn_budget::TurnBudget;

/// Reads per readiness event before yielding to the other connections (fairness). With
/// reads of at most the high-water mark (32 KiB by default) that is 128 KiB per turn; the
/// rest is read on the next turn of the loop, from the reactor's ready list
/// (edge-triggered: no new event would come for it).
pub const READS_PER_EVENT: usize = 4;

/// What the reactor should do with a connection after its I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Wait for the next readiness event.
    Wait,
    /// Input may be left unread: read again on the next turn, before polling.
    ReadAgain,
    /// The connection has just begun a lingering close, for this reason: the reactor arms
    /// its linger deadline, and reads it again on the next turn (input left unread while
    /// reading was paused raises no new edge; from now on it is read and discarded).
    /// Returned once per connection, by the call in which closing began.
    Linger(CloseReason),
    /// Close it now, for this reason.
    Close(CloseReason),
}

/// Limits the reactor applies to every connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest frame answered.
    pub max_frame: usize,
    /// Pending output past which nothing more is answered or read (`--high-water`); also
    /// the largest read.
    pub high_water: usize,
    /// Pending output below which answering and reading resume (half of high water).
    pub low_water: usize,
    /// What a connection whose socket refuses replies is charged for its kernel queues
    /// (`ServerConfig::kernel_held_when_stalled`).
    pub kernel_held: usize,
}

/// The reactor-wide state a connection works with: one read buffer and one reply buffer
/// for all connections, the limits, the counters, and the time of this loop turn.
pub struct Context {
    /// The reactor's one read buffer, whose length is the most one read takes: the whole
    /// buffer, or [`super::turn_budget::PRESSED_READ_LEN`] bytes while the turn is
    /// pressed (swapped with `spare_buf` until the next turn).
    pub read_buf: Box<[u8]>,
    /// The other read buffer: the short one while reads are whole, the whole one while
    /// they are short.
    pub spare_buf: Box<[u8]>,
    /// This turn's work budget.
    pub turn: TurnBudget,
    /// The reactor's one reply buffer: the replies to one round of frames, sent with one
    /// write.
    pub replies: Vec<u8>,
    /// The limits in force.
    pub limits: Limits,
    /// The counters.
    pub stats: Stats,
    /// Microseconds on the reactor's clock (`reactor/clock.rs`: it starts one idle
    /// timeout before the reactor), the turn's time: set only by `Reactor::refresh_now`,
    /// when the poll returns, before the timers are judged (so the wheel and the idle
    /// checks share one reading), and where connections arrive.
    pub now_us: u64,
}

impl Context {
    /// A new loop turn: whole reads again ([`TurnBudget::start`]).
    #[inline]
    pub fn start_turn(&mut self) {
        if self.turn.pressed() {
            std::mem::swap(&mut self.read_buf, &mut self.spare_buf);
        }
        self.turn.start(self.stats.frames, self.stats.bytes_in);
    }

    /// Looks at the turn's work when enough was read since the last look: the reactor
    /// calls this before a connection's reads (one comparison when nothing is due).
    #[inline(always)]
    pub fn check_turn(&mut self) {
        if self.turn.check_due(self.stats.bytes_in) {
            self.look_at_turn();
        }
    }

    /// [`Context::check_turn`]'s look, out of the common path.
    #[cold]
    #[inline(never)]
    fn look_at_turn(&mut self) {
        self.turn.check(self.stats.frames, self.stats.bytes_in);
        if self.turn.pressed() {
            // Short reads until the next turn.
            std::mem::swap(&mut self.read_buf, &mut self.spare_buf);
        }
    }
}

/// One peer. 88 bytes when idle, and no heap memory.
#[derive(Debug)]
pub struct Connection {
    /// The socket.
    stream: Stream,
    /// The unfinished frame, or the input not answered yet.
    decoder: FrameDecoder,
    /// Replies not yet taken by the socket, from `sent` on.
    output: Vec<u8>,
    /// How much of `output` the socket has taken. Always below 4 GiB, so a `u32` (the
    /// connection stays 88 bytes): `output` holds at most the high-water mark plus one
    /// reply (the frame limit plus 12 bytes) plus an error line, and the reactor honours
    /// neither limit past `config::MAX_CONNECTION_BYTES`, 1 GiB.
    sent: u32,
    /// When the connection last made progress (a frame received or reply bytes written),
    /// in microseconds on the reactor's clock.
    last_progress_us: u64,
    /// The connection's one armed timer: its idle check, or its linger deadline once closing.
    timer: TimerId,
    /// Set when the connection is closing (frame too long, shutdown, memory budget); the
    /// reason it closes with.
    closing: Option<CloseReason>,
    /// The peer has shut its write side (read returned 0).
    peer_eof: bool,
    /// Reading paused: pending output passed high water, or input is left unanswered.
    read_paused: bool,
    /// Our write side is shut.
    write_shut: bool,
    /// The poller reported the peer's FIN (EPOLLRDHUP / EV_EOF): read to EOF, do not stop
    /// at a short read, since the FIN raises no further edge.
    hangup_seen: bool,
}

impl Connection {
    /// A new connection, its timer not armed yet: the reactor arms it once the connection
    /// has its key ([`Connection::set_timer`]).
    pub fn new(stream: Stream, now_us: u64) -> Self {
        Connection {
            stream,
            decoder: FrameDecoder::new(),
            output: Vec::new(),
            sent: 0,
            last_progress_us: now_us,
            timer: TimerId::NONE,
            closing: None,
            peer_eof: false,
            read_paused: false,
            write_shut: false,
            hangup_seen: false,
        }
    }

    /// A new connection whose first bytes, `first`, were read before it was one (the
    /// client's bytes that came after a PROXY header): held as unanswered input, with
    /// reading paused, so the next writable turn answers them first and then reads on
    /// (`on_writable`), exactly as input left unanswered at high water.
    pub fn with_first_input(stream: Stream, now_us: u64, first: Vec<u8>) -> Self {
        let mut conn = Connection::new(stream, now_us);
        if !first.is_empty() {
            conn.decoder = FrameDecoder::from_parts(first, true);
            conn.read_paused = true;
        }
        conn
    }

    /// The socket.
    pub fn stream(&self) -> &Stream {
        &self.stream
    }

    /// The socket, to deregister it.
    pub fn stream_mut(&mut self) -> &mut Stream {
        &mut self.stream
    }

    /// The connection's armed timer (`TimerId::NONE` while the expiry of its last one is
    /// handled).
    pub fn timer(&self) -> TimerId {
        self.timer
    }

    /// Records the timer the reactor armed for it, or `TimerId::NONE` once it fired.
    pub fn set_timer(&mut self, timer: TimerId) {
        self.timer = timer;
    }

    /// Why it is closing, once a lingering close has begun.
    pub fn closing(&self) -> Option<CloseReason> {
        self.closing
    }

    /// When it last made progress (a frame received or reply bytes written), in
    /// microseconds on the reactor's clock.
    pub fn last_progress_us(&self) -> u64 {
        self.last_progress_us
    }

    /// Takes the connection apart for an upgrade's hand-over: its socket, untouched (not
    /// shut, not reset), and its state, idle for the time since its last progress at
    /// `now_us`, with the `id` and `age_us` the reactor's table keeps for it. The caller
    /// has taken its timer and its charges back.
    pub fn export(self, now_us: u64, id: u64, age_us: u64) -> (Stream, ConnState) {
        let pending = self.output[self.sent as usize..].to_vec();
        let (decoder, decoder_held) = self.decoder.into_parts();
        let kind = match self.stream {
            Stream::Tcp(_) => Kind::Tcp,
            Stream::Unix(_) => Kind::Unix,
        };
        let state = ConnState {
            kind,
            decoder,
            decoder_held,
            output: pending,
            idle_for_us: now_us.saturating_sub(self.last_progress_us),
            closing: self.closing,
            peer_eof: self.peer_eof,
            read_paused: self.read_paused,
            write_shut: self.write_shut,
            hangup_seen: self.hangup_seen,
            // The reactor's connection table knows it, not the connection.
            client: None,
            id,
            age_us,
        };
        (self.stream, state)
    }

    /// A connection moved in by an upgrade's hand-over, going on where [`Connection::export`]
    /// stopped: its last progress was `idle_for_us` before `now_us` (or at the clock's
    /// start, if that is earlier). Its timer is not armed yet: the reactor arms it once the
    /// connection has its key ([`Connection::set_timer`]), and charges its buffers (and its
    /// kernel queues, if it [`is_stalled`](Self::is_stalled)); its id and age are the
    /// table's.
    pub fn adopt(stream: Stream, state: ConnState, now_us: u64) -> Self {
        let ConnState {
            kind: _,
            decoder,
            decoder_held,
            output,
            idle_for_us,
            closing,
            peer_eof,
            read_paused,
            write_shut,
            hangup_seen,
            client: _,
            id: _,
            age_us: _,
        } = state;
        Connection {
            stream,
            decoder: FrameDecoder::from_parts(decoder, decoder_held),
            // The first invariant: no pending output, no heap memory.
            output: if output.is_empty() {
                Vec::new()
            } else {
                output
            },
            sent: 0,
            last_progress_us: now_us.saturating_sub(idle_for_us),
            timer: TimerId::NONE,
            closing,
            peer_eof,
            read_paused,
            write_shut,
            hangup_seen,
        }
    }

    /// Input bytes held: a frame's unfinished head, or input read and not answered yet
    /// (what the admin listing shows as `input_held`).
    pub fn input_held(&self) -> usize {
        self.decoder.pending()
    }

    /// Reading is paused: its pending replies reached the high-water mark (or input is
    /// left unanswered behind them).
    pub fn read_paused(&self) -> bool {
        self.read_paused
    }

    /// Reply bytes waiting for the socket.
    pub fn pending_output(&self) -> usize {
        self.output.len() - self.sent as usize
    }

    /// Heap bytes this connection holds in its buffers (capacities, not lengths): what it
    /// costs the reactor's buffer-memory budget.
    pub fn held_bytes(&self) -> usize {
        self.decoder.capacity() + self.output.capacity()
    }

    /// What this connection costs the buffer budget: its heap bytes, plus `kernel_held`
    /// while its socket refuses replies. Pending output means the kernel's send queue
    /// is full, and reading pauses soon after, so its receive queue fills too: the bytes
    /// a peer that does not read pins in the kernel are counted until it reads again.
    /// (The reactor's `Budget` holds the sum, told of each change around the I/O.)
    pub fn charged_bytes(&self, kernel_held: usize) -> usize {
        let stalled = if self.is_stalled() { kernel_held } else { 0 };
        self.held_bytes() + stalled
    }

    /// The socket refuses replies: `output` owns memory exactly while replies are pending
    /// (the first invariant).
    pub fn is_stalled(&self) -> bool {
        self.output.capacity() > 0
    }

    /// Gives `output` back (replies sent or dropped): the socket no longer refuses replies,
    /// and its kernel queues are no longer charged (`charged_bytes`).
    fn give_back_output(&mut self) {
        self.output = Vec::new();
        self.sent = 0;
    }

    /// Replies are owed that were never handed to the kernel: pending output, or frames
    /// received and not answered yet. Closing such a connection loses them, so it is reset.
    pub fn owes_replies(&self) -> bool {
        self.pending_output() > 0 || self.decoder.has_unanswered()
    }

    /// Starts a lingering close: answer nothing more that arrives, send what is owed, shut
    /// the write side, discard input until EOF. Returns [`Next::Linger`] if closing began
    /// now (the reactor arms the linger deadline), `Close` if it is over already.
    pub fn begin_closing(&mut self, reason: CloseReason) -> Next {
        let began = self.closing.is_none();
        self.closing = Some(reason);
        self.decoder.discard_unfinished();
        if !self.decoder.has_unanswered() {
            // Reading only discards from now on: it may go on whatever is pending.
            self.read_paused = false;
        }
        match self.after_output() {
            Next::Wait if began => Next::Linger(reason),
            next => next,
        }
    }

    /// Drops every buffer (unanswered input, pending replies, the unfinished frame) and
    /// closes for `reason`: with `line` and a lingering close when nothing was pending and
    /// the socket takes the whole line in one write; else with a reset at once (returns
    /// `Close`), so the peer cannot take a cut reply for a clean end and the kernel frees
    /// the socket's buffers now.
    pub fn abandon(&mut self, line: &[u8], reason: CloseReason, cx: &mut Context) -> Next {
        let clean_boundary = self.pending_output() == 0 && !self.write_shut;
        self.decoder.clear();
        self.give_back_output();
        if clean_boundary {
            if let Ok(n) = self.stream.write(line) {
                if n == line.len() {
                    cx.stats.bytes_out += n as u64;
                    return self.begin_closing(reason);
                }
            }
        }
        self.stream.reset_on_close();
        Next::Close(reason)
    }

    /// The server reads this connection when input comes: it has not paused reading (for
    /// backpressure or unanswered input) and has not seen EOF.
    pub fn reads_input(&self) -> bool {
        !self.read_paused && !self.peer_eof
    }

    /// Records that the poller reported the peer's FIN (or an error) for this connection.
    pub fn note_hangup(&mut self) {
        self.hangup_seen = true;
    }

    /// Reads what the socket has (at most [`READS_PER_EVENT`] reads, each at most the room
    /// under high water and the read buffer's length), answers complete frames, and writes
    /// the replies.
    pub fn on_readable(&mut self, cx: &mut Context) -> Next {
        if self.read_paused || self.peer_eof {
            return Next::Wait;
        }
        for _ in 0..READS_PER_EVENT {
            let len = if self.closing.is_some() {
                cx.read_buf.len() // discarded: no replies, no room needed
            } else {
                let room = cx.limits.high_water.saturating_sub(self.pending_output());
                room.min(cx.read_buf.len())
            };
            if len == 0 || self.decoder.has_unanswered() {
                return self.pause_reading(cx);
            }
            let n = match self.stream.read(&mut cx.read_buf[..len]) {
                Ok(0) => {
                    self.peer_eof = true;
                    self.decoder.discard_unfinished();
                    return self.after_output();
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Wait,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Next::Close(CloseReason::from_error(&e)),
            };
            cx.stats.bytes_in += n as u64;
            if self.closing.is_none() {
                let read_buf = std::mem::take(&mut cx.read_buf);
                let answered = self.answer(&read_buf[..n], cx);
                cx.read_buf = read_buf;
                if let Err(reason) = answered {
                    return Next::Close(reason);
                }
                if let Some(reason) = self.closing {
                    // Frame too long: the error is queued; what follows is read and
                    // discarded from the next turn on (`Linger` puts it on the ready list),
                    // and the write side is shut once the error is out.
                    return self.began_closing(reason);
                } else if self.decoder.has_unanswered()
                    || self.pending_output() >= cx.limits.high_water
                {
                    return self.pause_reading(cx);
                }
            }
            if n < len && !self.hangup_seen {
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

    /// Writes pending output; below low water answers the unanswered input and resumes
    /// reading; finishes closes.
    // Inlined: nearly every event is writable (each ACK frees send-buffer space), and a
    // connection almost never owes anything then; the check in the caller saves a call
    // of ~25 instructions per event (callgrind, BENCHMARKS.md section 3).
    #[inline(always)]
    pub fn on_writable(&mut self, cx: &mut Context) -> Next {
        // `output` is empty exactly when no reply is pending (the first invariant).
        if self.output.is_empty() && !self.decoder.has_unanswered() {
            return Next::Wait;
        }
        self.write_owed(cx)
    }

    /// [`Connection::on_writable`] when something is owed.
    #[inline(never)]
    fn write_owed(&mut self, cx: &mut Context) -> Next {
        if let Err(e) = self.flush(cx) {
            return Next::Close(CloseReason::from_error(&e));
        }
        if self.pending_output() >= cx.limits.low_water {
            return self.after_output();
        }
        if self.decoder.has_unanswered() {
            let was_closing = self.closing.is_some();
            let held = self.decoder.take_unanswered();
            if let Err(reason) = self.answer(&held, cx) {
                return Next::Close(reason);
            }
            if let (false, Some(reason)) = (was_closing, self.closing) {
                return self.began_closing(reason); // a frame too long in the held input
            }
            if self.decoder.has_unanswered() {
                // Room ran out again: no reading yet.
                return self.after_output();
            }
        }
        if self.read_paused {
            self.read_paused = false;
            // Input may have piled up while paused and no new edge will announce it.
            if let Next::Close(reason) = self.after_output() {
                return Next::Close(reason);
            }
            return Next::ReadAgain;
        }
        self.after_output()
    }

    fn pause_reading(&mut self, cx: &mut Context) -> Next {
        // Stop reading a peer that does not read; `on_writable` resumes below low water.
        self.read_paused = true;
        cx.stats.backpressure_stalls += 1;
        Next::Wait
    }

    /// Answers the frames in `input` while their replies fit under high water, writing
    /// each round's replies; leaves the rest unanswered with the decoder when the socket
    /// refuses and room runs out. Sets `closing` after a frame too long.
    fn answer(&mut self, input: &[u8], cx: &mut Context) -> Result<(), CloseReason> {
        let tracing = log::log_enabled!(log::Level::Trace);
        let peer = if tracing {
            use std::os::fd::{AsFd, AsRawFd};
            match super::client_names::get(self.stream.as_fd().as_raw_fd()) {
                Some(client) => format!("{client} via {}", self.stream.peer_name()),
                None => self.stream.peer_name(),
            }
        } else {
            String::new()
        };
        let mut rest = input;
        let mut frames = 0;
        loop {
            let room = cx.limits.high_water.saturating_sub(self.pending_output());
            let replies = &mut cx.replies;
            replies.clear();
            let result = self
                .decoder
                .decode_until(rest, cx.limits.max_frame, |head, tail| {
                    frames += 1;
                    protocol::encode_reply(replies, head, tail);
                    if tracing {
                        let frame = [head, tail].concat();
                        trace!("client: {peer} {}", String::from_utf8_lossy(&frame));
                    }
                    if replies.len() >= room {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                });
            let consumed = match result {
                Ok(decoded) => decoded.consumed,
                Err(too_long) => {
                    // The frames before the long one were encoded; the error follows them.
                    replies.extend_from_slice(&protocol::frame_too_long(too_long.limit));
                    self.closing = Some(CloseReason::FrameTooLong);
                    rest.len()
                }
            };
            if frames > 0 {
                cx.stats.frames += frames as u64;
                self.last_progress_us = cx.now_us;
                frames = 0;
            }
            if !cx.replies.is_empty() {
                if let Err(e) = self.send(cx) {
                    return Err(CloseReason::from_error(&e));
                }
            }
            rest = &rest[consumed..];
            if rest.is_empty() || self.closing == Some(CloseReason::FrameTooLong) {
                return Ok(());
            }
            if self.pending_output() > 0 {
                // The socket is full and the room is spent: keep the input, not its replies.
                self.decoder.hold(rest);
                return Ok(());
            }
            // The socket took every reply: the next round has the whole room again.
        }
    }

    /// Sends the reactor's reply buffer: straight to the socket when nothing is pending
    /// (one write for all the replies of a round), keeping only what the socket refused.
    fn send(&mut self, cx: &mut Context) -> io::Result<()> {
        if self.pending_output() > 0 {
            // Behind bytes the socket refused: a writable event will come for them.
            self.queue(&cx.replies);
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
            // The socket refuses replies: its kernel queues are charged from now on.
            self.output = cx.replies[written..].to_vec();
            self.sent = 0;
            debug_assert!(u32::try_from(self.output.len()).is_ok());
        }
        Ok(())
    }

    /// Appends `bytes` behind the pending output, first moving the pending bytes to the
    /// front, so the buffer never grows past what is pending.
    fn queue(&mut self, bytes: &[u8]) {
        if self.sent > 0 {
            self.output.drain(..self.sent as usize);
            self.sent = 0;
        }
        self.output.reserve_exact(bytes.len());
        self.output.extend_from_slice(bytes);
        debug_assert!(
            u32::try_from(self.output.len()).is_ok(),
            "pending output {} past what `sent` can count",
            self.output.len()
        );
    }

    /// Writes `output[sent..]` until done or the socket is full.
    fn flush(&mut self, cx: &mut Context) -> io::Result<()> {
        let mut written = 0;
        while (self.sent as usize) < self.output.len() {
            match self.stream.write(&self.output[self.sent as usize..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    // Bound: n <= output.len() - sent < 4 GiB (see `sent`).
                    #[allow(clippy::cast_possible_truncation)]
                    let n32 = n as u32;
                    self.sent += n32;
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
            self.give_back_output();
        }
        Ok(())
    }

    fn wrote(&mut self, n: usize, cx: &mut Context) {
        if n > 0 {
            cx.stats.bytes_out += n as u64;
            self.last_progress_us = cx.now_us;
        }
    }

    /// Closing has just begun (a frame too long): `Linger`, unless the close is over
    /// already.
    fn began_closing(&mut self, reason: CloseReason) -> Next {
        match self.after_output() {
            Next::Close(reason) => Next::Close(reason),
            _ => Next::Linger(reason),
        }
    }

    /// What follows once output may have drained: close after EOF, shut the write side of
    /// a closing connection.
    fn after_output(&mut self) -> Next {
        if self.owes_replies() {
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
        // 88 bytes in release builds (at most 80 besides the 8-byte stream), 112 with the
        // 24-byte timer node: within the 128 bytes per connection, the slab entry included.
        let size = std::mem::size_of::<Connection>();
        let stream = std::mem::size_of::<Stream>();
        // mio adds a selector id to each source in debug builds; release streams are an fd.
        if !cfg!(debug_assertions) {
            assert_eq!(stream, 8);
        }
        assert!(
            size - stream <= 80,
            "Connection is {size} bytes, {stream} of them the stream"
        );
    }
}
