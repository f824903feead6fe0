//! FaultSession: one faulty load connection's sockets and timers, cycle after cycle:
//! pausing, connecting, running (misbehaving while [`Expect`] judges what arrives), and
//! done once sending stops or its cycles are spent.
//!
//! # Invariants
//! - `stream` is always `Some` while `Connecting` or `Running`, `None` while `Pausing`
//!   or `Done`; `ctx.busy_faults` always counts the sessions with a stream.
//! - Every cycle started ends exactly once: expected, unexpected, connect failed, or cut
//!   short by the end of the run.
//! - A new cycle starts only from a timer, never while an event is handled, so no event
//!   of the previous socket (same token) can reach the new one: the old socket was
//!   deregistered and closed before the poll that the timer follows.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use mio::Token;

use super::expect::{garbage, End, Expect};
use super::{FaultKind, SAMPLES};
use crate::load::conn::{connect_done, describe, open_stream, ConnectError, Ctx};
use crate::load::payload::{splitmix64, PayloadSource};
use crate::load::verify::ReplyChecker;
use crate::stream::Stream;

/// Trickled bytes per idle timeout: several, so the server sees bytes that are not
/// progress, few enough to stay far below any frame limit.
const TRICKLES_PER_TIMEOUT: u32 = 8;
/// Bytes of frames in a burst (reset, halfclose, slowread): replies in flight, more
/// than one read's worth, cheap enough to repeat thousands of times.
const BURST_BYTES: usize = 32 * 1024;
/// Frames sent before the oversized one.
const OVERSIZE_FRAMES_BEFORE: usize = 8;
/// Bytes sent past the limit: the server must keep its error readable while they arrive.
const OVERSIZE_EXTRA: usize = 4096;
/// Bytes of garbage per cycle.
const GARBAGE_BYTES: usize = 4096;
/// Frame bytes queued at once by `noread` as its socket takes them.
const NOREAD_CHUNK: usize = 64 * 1024;
/// The most `noread` sends per cycle, a safety bound: it stops when its socket stops
/// taking bytes, after a few MB on Linux loopback (the server's autotuned send buffer,
/// up to 4 MiB, then its high-water mark, at which it stops reading).
const NOREAD_MAX_BYTES: usize = 8 * 1024 * 1024;
/// The most `flood` sends per cycle: 2 Mi empty frames, 24 MiB of replies, far more than
/// the kernel's buffers on the way hold, so the server must stop reading it; and few
/// enough that queueing them stays cheap in a debug build.
const FLOOD_MAX_BYTES: usize = 2 * 1024 * 1024;
/// Delay before retrying a Unix connect refused with EAGAIN (backlog full).
const UNIX_RETRY: Duration = Duration::from_millis(10);

/// Where a faulty connection is in its cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Between cycles: the next one starts at this instant.
    Pausing(Instant),
    /// `connect` issued at this instant.
    Connecting(Instant),
    /// Established; misbehaving and checking.
    Running,
    /// No more cycles.
    Done,
}

/// One faulty load connection, cycling.
#[derive(Debug)]
pub struct FaultSession {
    /// How it misbehaves.
    kind: FaultKind,
    /// The connection id (unique over the run).
    id: u64,
    /// Its token in the worker's poll, the same for every cycle.
    token: Token,
    /// Cycles started.
    cycle: u64,
    /// The socket of the cycle in progress.
    stream: Option<Stream>,
    /// Where the cycle is.
    phase: Phase,
    /// When the cycle's connect was issued: always before the server accepted it, so
    /// the trickle's close is timed from here (a late-scheduled client cannot make the
    /// server's idle timeout look short).
    connect_at: Instant,
    /// When the cycle's connect completed.
    established: Instant,
    /// What the cycle must receive.
    expect: Expect,
    /// Bytes queued to send; `out[out_pos..]` is not yet written.
    out: Vec<u8>,
    /// How much of `out` is written.
    out_pos: usize,
    /// Bytes queued over the cycle (noread's budget, trickle's count).
    queued: usize,
    /// Our write side is shut (halfclose, slowread, garbage).
    write_shut: bool,
    /// Nothing more to write: all sent and shut, noread's budget spent, or the server gone.
    write_done: bool,
    /// Whether received bytes are read now (slowread pauses, noread waits for the close).
    reading: bool,
    /// Trickle's next byte, or slowread's end of pause.
    next_at: Option<Instant>,
    /// The earliest entry this session has in the worker's timer heap.
    pub armed: Option<Instant>,
}

impl FaultSession {
    /// A faulty connection whose first cycle starts at `first`.
    pub fn new(
        kind: FaultKind,
        id: u64,
        token: Token,
        source: &PayloadSource,
        first: Instant,
    ) -> Self {
        FaultSession {
            kind,
            id,
            token,
            cycle: 0,
            stream: None,
            phase: Phase::Pausing(first),
            connect_at: first,
            established: first,
            expect: Expect::new(kind, ReplyChecker::new(id, source.clone(), false), 0),
            out: Vec::new(),
            out_pos: 0,
            queued: 0,
            write_shut: false,
            write_done: false,
            reading: true,
            next_at: None,
            armed: None,
        }
    }

    /// No cycle in progress and none to come.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// The next instant something is due: a cycle start, a connect or outcome deadline,
    /// a trickled byte, the end of a slow read's pause.
    pub fn next_wake(&self, ctx: &Ctx) -> Option<Instant> {
        match self.phase {
            Phase::Pausing(at) => Some(at),
            Phase::Connecting(since) => Some(since + ctx.plan.connect_timeout),
            Phase::Running => {
                let deadline = self.established + ctx.plan.faults.outcome_within();
                Some(self.next_at.map_or(deadline, |at| at.min(deadline)))
            }
            Phase::Done => None,
        }
    }

    /// Does what is due at `now` (spurious calls are harmless).
    pub fn on_timer(&mut self, now: Instant, ctx: &mut Ctx) {
        match self.phase {
            Phase::Pausing(at) if now >= at => self.start_cycle(now, ctx),
            Phase::Connecting(since) if now >= since + ctx.plan.connect_timeout => {
                self.connect_failed("timed out", now, ctx)
            }
            Phase::Running => {
                let within = ctx.plan.faults.outcome_within();
                if now >= self.established + within {
                    let why = self.expect.no_outcome(within);
                    return self.finish(Err(why), now, ctx);
                }
                if self.next_at.is_some_and(|at| now >= at) {
                    self.on_due(now, ctx);
                }
            }
            _ => {}
        }
    }

    /// Handles a readiness event; `closed` is a hang-up or error the poller reported.
    pub fn on_event(
        &mut self,
        readable: bool,
        writable: bool,
        closed: bool,
        now: Instant,
        ctx: &mut Ctx,
    ) {
        match self.phase {
            Phase::Connecting(_) => {
                let Some(stream) = self.stream.as_ref() else {
                    return;
                };
                match connect_done(stream) {
                    Ok(true) => self.begin(now, ctx),
                    Ok(false) => {}
                    Err(e) => self.connect_failed(&describe(&e), now, ctx),
                }
            }
            Phase::Running => {
                if closed && self.kind.never_reads() {
                    // The server reaped it: now read what it sent, to check it.
                    self.reading = true;
                }
                if writable || readable || closed {
                    self.pump(now, ctx);
                }
                if self.phase == Phase::Running && self.reading && (readable || closed) {
                    self.read_available(now, ctx);
                }
            }
            Phase::Pausing(_) | Phase::Done => {}
        }
    }

    /// The run is over: a cycle in progress is cut short, with no outcome.
    pub fn end_of_run(&mut self, ctx: &mut Ctx) {
        if let Phase::Connecting(_) | Phase::Running = self.phase {
            ctx.stats.faults[self.kind.index()].cut_short += 1;
            self.close_stream(false, ctx);
        }
        self.phase = Phase::Done;
    }

    /// Starts a cycle: connect, unless the run stopped sending or the cycles are spent.
    fn start_cycle(&mut self, now: Instant, ctx: &mut Ctx) {
        let plan = ctx.plan;
        if !plan.sending(now) || plan.faults.cycles.is_some_and(|n| self.cycle >= n) {
            self.phase = Phase::Done;
            return;
        }
        match open_stream(
            &plan.addr,
            plan.source,
            plan.socket_buffer,
            ctx.registry,
            self.token,
        ) {
            Ok(stream) => {
                self.cycle += 1;
                self.stream = Some(stream);
                self.phase = Phase::Connecting(now);
                self.connect_at = now;
                *ctx.busy_faults += 1;
            }
            // The Unix backlog is full: try again shortly, not counted.
            Err(ConnectError::Retry) => self.phase = Phase::Pausing(now + UNIX_RETRY),
            Err(
                ConnectError::Limit(_, why)
                | ConnectError::Refused(why)
                | ConnectError::Failed(why),
            ) => {
                self.cycle += 1;
                self.connect_failed(&why, now, ctx);
            }
        }
    }

    /// Counts a failed connect; the next cycle tries again after the pause.
    fn connect_failed(&mut self, why: &str, now: Instant, ctx: &mut Ctx) {
        ctx.stats.faults[self.kind.index()].connect_failed += 1;
        ctx.stats
            .error(format!("connect ({} fault): {why}", self.kind));
        self.close_stream(false, ctx);
        self.pause(now, ctx);
    }

    /// Established: set up this cycle's misbehaviour and its expectations, and start.
    fn begin(&mut self, now: Instant, ctx: &mut Ctx) {
        let faults = &ctx.plan.faults;
        self.phase = Phase::Running;
        self.established = now;
        // A fresh payload stream per cycle: connection id and cycle mixed.
        let conn = splitmix64(self.id) ^ self.cycle;
        let source = match self.kind {
            FaultKind::NoRead => ctx.noread_source,
            FaultKind::Flood => ctx.flood_source,
            _ => ctx.source,
        };
        self.expect = Expect::new(
            self.kind,
            ReplyChecker::new(conn, source.clone(), false),
            faults.max_frame,
        );
        self.out.clear();
        self.out_pos = 0;
        self.queued = 0;
        self.write_shut = false;
        self.write_done = false;
        self.reading = true;
        self.next_at = None;
        let burst = (BURST_BYTES / ctx.plan.frame_len).max(1);
        match self.kind {
            FaultKind::Reset => self.queue_frames(burst),
            FaultKind::HalfClose => {
                self.queue_frames(burst);
                // An unfinished fragment: it must get no reply.
                self.out.extend_from_slice(b"no TAB follows");
            }
            FaultKind::SlowRead => {
                self.queue_frames(burst);
                self.reading = false;
                self.next_at = Some(now + faults.idle_timeout / 2);
            }
            FaultKind::NoRead | FaultKind::Flood => self.reading = false,
            FaultKind::Trickle => self.next_at = Some(now),
            FaultKind::Oversize => {
                self.queue_frames(OVERSIZE_FRAMES_BEFORE);
                let over = faults.max_frame + 1 + OVERSIZE_EXTRA;
                self.out.extend((0..over).map(|i| b'a' + (i % 26) as u8));
            }
            FaultKind::Partial => {
                // All of a frame but its TAB: the most a server must hold for it.
                let len = faults.max_frame.saturating_sub(1).max(1);
                self.out.extend((0..len).map(|i| b'a' + (i % 26) as u8));
            }
            FaultKind::Garbage => {
                let seed = splitmix64(conn ^ u64::from_be_bytes(*b"garbage!"));
                let (bytes, replies) = garbage(seed, GARBAGE_BYTES, faults.max_frame);
                self.out = bytes;
                self.expect.owe_replies(replies);
            }
        }
        if self.kind == FaultKind::Trickle {
            self.on_due(now, ctx);
        } else {
            self.pump(now, ctx);
        }
        if self.phase == Phase::Running && self.reading {
            // Just established: whatever is readable was signalled by this very event.
            self.read_available(now, ctx);
        }
    }

    /// Queues `n` frames, each owed its reply.
    fn queue_frames(&mut self, n: usize) {
        for _ in 0..n {
            self.expect.queue_frame(&mut self.out);
        }
    }

    /// A timed step: trickle's next byte, or the end of slowread's pause.
    fn on_due(&mut self, now: Instant, ctx: &mut Ctx) {
        let faults = &ctx.plan.faults;
        match self.kind {
            FaultKind::Trickle => {
                // Never a TAB; never more than the limit (that would be an oversize).
                if self.queued < faults.max_frame {
                    self.out.push(b'a' + (self.queued % 26) as u8);
                    self.queued += 1;
                }
                let every =
                    (faults.idle_timeout / TRICKLES_PER_TIMEOUT).max(Duration::from_millis(1));
                self.next_at = Some(now + every);
                self.pump(now, ctx);
            }
            FaultKind::SlowRead => {
                self.next_at = None;
                self.reading = true;
                self.read_available(now, ctx);
            }
            _ => self.next_at = None,
        }
    }

    /// Writes what is queued (noread: refilling, up to its budget), then takes the
    /// kind's next step once everything is written.
    fn pump(&mut self, now: Instant, ctx: &mut Ctx) {
        loop {
            let refill =
                self.kind.never_reads() && !self.write_done && self.out_pos == self.out.len();
            if refill {
                let budget = match self.kind {
                    FaultKind::Flood => FLOOD_MAX_BYTES,
                    _ => NOREAD_MAX_BYTES,
                };
                if self.queued >= budget {
                    self.write_done = true;
                    break;
                }
                self.out.clear();
                self.out_pos = 0;
                if self.kind == FaultKind::Flood {
                    self.expect.queue_empty_frames(NOREAD_CHUNK, &mut self.out);
                } else {
                    let frames = (NOREAD_CHUNK / (ctx.noread_source.size() + 1)).max(1);
                    self.queue_frames(frames);
                }
                self.queued += self.out.len();
            }
            match self.write_out() {
                // Bounded by NOREAD_MAX_BYTES.
                Ok(true) if self.kind.never_reads() && !self.write_done => continue,
                Ok(true) => break,
                Ok(false) => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                    ) =>
                {
                    // The server closed: stop writing, read what it sent to judge it.
                    self.write_done = true;
                    self.out = Vec::new();
                    self.out_pos = 0;
                    self.reading = true;
                    return self.read_available(now, ctx);
                }
                Err(e) => return self.finish(Err(format!("write: {}", describe(&e))), now, ctx),
            }
        }
        // Everything queued is written.
        let shut = match self.kind {
            FaultKind::HalfClose | FaultKind::Garbage => true,
            FaultKind::SlowRead => self.reading && self.expect.all_answered(),
            _ => false,
        };
        if shut && !self.write_shut {
            self.shut_write(now, ctx);
        }
    }

    /// Shuts our write side: the server answers what it has, then closes.
    fn shut_write(&mut self, now: Instant, ctx: &mut Ctx) {
        self.write_shut = true;
        self.write_done = true;
        self.out = Vec::new();
        self.out_pos = 0;
        if let Some(stream) = self.stream.as_ref() {
            if let Err(e) = stream.shutdown_write() {
                self.finish(Err(format!("shutdown: {}", describe(&e))), now, ctx);
            }
        }
    }

    /// Writes `out[out_pos..]`: `Ok(true)` all written, `Ok(false)` the socket is full
    /// (a writable event resumes).
    fn write_out(&mut self) -> io::Result<bool> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(true);
        };
        while self.out_pos < self.out.len() {
            match stream.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Reads until `WouldBlock` or the end, checking every byte. Bounded: what the
    /// server sends is bounded by what this cycle sent (a few MB at most).
    fn read_available(&mut self, now: Instant, ctx: &mut Ctx) {
        loop {
            let Some(stream) = self.stream.as_mut() else {
                return;
            };
            match stream.read(ctx.read_buf) {
                Ok(0) => return self.on_end(End::Eof, now, ctx),
                Ok(n) => {
                    if let Err(why) = self.expect.take(&ctx.read_buf[..n]) {
                        return self.finish(Err(why), now, ctx);
                    }
                    if self.kind == FaultKind::Reset {
                        // Replies are flowing: reset now, with more in flight.
                        return self.finish(Ok(()), now, ctx);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                    ) =>
                {
                    return self.on_end(End::Reset(describe(&e)), now, ctx)
                }
                Err(e) => return self.finish(Err(format!("read: {}", describe(&e))), now, ctx),
            }
        }
        if self.kind == FaultKind::SlowRead && self.expect.all_answered() && !self.write_shut {
            // Every reply is in: shut our side, the server closes after us.
            self.shut_write(now, ctx);
        }
    }

    /// The stream ended (EOF, reset): the cycle's outcome.
    fn on_end(&mut self, end: End, now: Instant, ctx: &mut Ctx) {
        let after = now.saturating_duration_since(self.connect_at);
        let outcome =
            self.expect
                .at_end(&end, self.write_shut, after, ctx.plan.faults.idle_timeout);
        self.finish(outcome, now, ctx);
    }

    /// Ends the cycle with its outcome (`Err`: unexpected, described), closes, pauses.
    fn finish(&mut self, outcome: Result<(), String>, now: Instant, ctx: &mut Ctx) {
        if self.phase != Phase::Running {
            return;
        }
        let counts = &mut ctx.stats.faults[self.kind.index()];
        counts.runs += 1;
        match outcome {
            Ok(()) => {
                counts.expected += 1;
                if self.expect.evicted() {
                    counts.evicted += 1;
                }
            }
            Err(why) => {
                counts.unexpected += 1;
                if counts.samples.len() < SAMPLES {
                    counts.samples.push(format!(
                        "connection {} cycle {}: {why}",
                        self.id, self.cycle
                    ));
                }
            }
        }
        self.close_stream(self.kind == FaultKind::Reset, ctx);
        self.pause(now, ctx);
    }

    /// Closes the socket (with a reset if asked) and frees the cycle's buffers.
    fn close_stream(&mut self, reset: bool, ctx: &mut Ctx) {
        if let Some(mut stream) = self.stream.take() {
            if reset {
                stream.reset_on_close();
            }
            // Deregister before the close, as on kqueue; errors are of no consequence.
            let _ = ctx.registry.deregister(&mut stream);
            *ctx.busy_faults -= 1;
        }
        self.out = Vec::new();
        self.out_pos = 0;
        self.next_at = None;
    }

    /// Waits before the next cycle: the mean pause, spread over [0.5, 1.5) of it so the
    /// connections' cycles drift apart. Done if the cycles are spent.
    fn pause(&mut self, now: Instant, ctx: &Ctx) {
        if ctx.plan.faults.cycles.is_some_and(|n| self.cycle >= n) {
            self.phase = Phase::Done;
            return;
        }
        let spread = (splitmix64(self.id ^ self.cycle.rotate_left(32)) % 1000) as f64 / 1000.0;
        self.phase = Phase::Pausing(now + ctx.plan.faults.pause.mul_f64(0.5 + spread));
    }
}
