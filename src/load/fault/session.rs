//! FaultSession: one faulty load connection's cycles and timers, cycle after cycle:
//! pausing, connecting, running (misbehaving while [`Expect`] judges what arrives), and
//! done once sending stops or its cycles are spent. Each cycle's socket and I/O are a
//! [`LoadConn`]'s.
//!
//! # Invariants
//! - `conn` is always `Some` while `Connecting` or `Running`, `None` while `Pausing` or
//!   `Done`; `ctx.busy_faults` always counts the sessions with a connection.
//! - Every cycle started ends exactly once: expected, unexpected, connect failed, or cut
//!   short by the end of the run.
//! - A new cycle starts only from a timer, never while an event is handled, so no event
//!   of the previous socket (same token) can reach the new one: the old socket was
//!   deregistered and closed before the poll that the timer follows.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use mio::Token;

use super::expect::{garbage, End, Expect};
use super::{FaultKind, SAMPLES};
use crate::load::conn::{describe, ConnectError, Ended, LoadConn};
use crate::load::ctx::Ctx;
use crate::load::payload::{splitmix64, PayloadSource};
use crate::load::verify::ReplyChecker;

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
    /// Established at this instant; misbehaving and checking.
    Running(Instant),
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
    /// The connection of the cycle in progress.
    conn: Option<LoadConn>,
    /// Where the cycle is.
    phase: Phase,
    /// What the cycle must receive.
    expect: Expect,
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
            conn: None,
            phase: Phase::Pausing(first),
            expect: Expect::new(kind, ReplyChecker::new(id, source.clone(), false), 0),
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
            Phase::Running(established) => {
                let deadline = established + ctx.plan.faults.outcome_within();
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
            Phase::Running(established) => {
                let within = ctx.plan.faults.outcome_within();
                if now >= established + within {
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
                let Some(conn) = self.conn.as_mut() else {
                    return;
                };
                match conn.finish_connect(now) {
                    Ok(true) => self.begin(now, ctx),
                    Ok(false) => {}
                    Err(e) => self.connect_failed(&describe(&e), now, ctx),
                }
            }
            Phase::Running(_) => {
                if closed && self.kind.never_reads() {
                    // The server reaped it: now read what it sent, to check it.
                    self.reading = true;
                }
                if writable || readable || closed {
                    self.pump(now, ctx);
                }
                if self.running() && self.reading && (readable || closed) {
                    self.read_available(now, ctx);
                }
            }
            Phase::Pausing(_) | Phase::Done => {}
        }
    }

    /// Whether a cycle is established and has no outcome yet.
    fn running(&self) -> bool {
        matches!(self.phase, Phase::Running(_))
    }

    /// The run is over: a cycle in progress is cut short, with no outcome.
    pub fn end_of_run(&mut self, ctx: &mut Ctx) {
        if let Phase::Connecting(_) | Phase::Running(_) = self.phase {
            ctx.stats.faults[self.kind.index()].cut_short += 1;
            self.close_conn(false, ctx);
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
        match LoadConn::open(plan, &ctx.registry, self.token, now, self.id) {
            Ok(conn) => {
                self.cycle += 1;
                self.conn = Some(conn);
                self.phase = Phase::Connecting(now);
                ctx.busy_faults += 1;
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
        self.close_conn(false, ctx);
        self.pause(now, ctx);
    }

    /// Established: set up this cycle's misbehaviour and its expectations, and start.
    fn begin(&mut self, now: Instant, ctx: &mut Ctx) {
        let plan = ctx.plan;
        let faults = &plan.faults;
        self.phase = Phase::Running(now);
        // A fresh payload stream per cycle: connection id and cycle mixed.
        let conn_seed = splitmix64(self.id) ^ self.cycle;
        let source = match self.kind {
            FaultKind::NoRead => &plan.noread_payloads,
            FaultKind::Flood => &plan.flood_payloads,
            _ => &plan.payloads,
        };
        self.expect = Expect::new(
            self.kind,
            ReplyChecker::new(conn_seed, source.clone(), false),
            faults.max_frame,
        );
        self.queued = 0;
        self.write_shut = false;
        self.write_done = false;
        self.reading = true;
        self.next_at = None;
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let out = conn.out();
        let burst = (BURST_BYTES / plan.frame_len).max(1);
        match self.kind {
            FaultKind::Reset => queue_frames(&mut self.expect, out, burst),
            FaultKind::HalfClose => {
                queue_frames(&mut self.expect, out, burst);
                // An unfinished fragment: it must get no reply.
                out.extend_from_slice(b"no TAB follows");
            }
            FaultKind::SlowRead => {
                queue_frames(&mut self.expect, out, burst);
                self.reading = false;
                self.next_at = Some(now + faults.idle_timeout / 2);
            }
            FaultKind::NoRead | FaultKind::Flood => self.reading = false,
            FaultKind::Trickle => self.next_at = Some(now),
            FaultKind::Oversize => {
                queue_frames(&mut self.expect, out, OVERSIZE_FRAMES_BEFORE);
                let over = faults.max_frame + 1 + OVERSIZE_EXTRA;
                out.extend((0..over).map(|i| b'a' + (i % 26) as u8));
            }
            FaultKind::Partial => {
                // All of a frame but its TAB: the most a server must hold for it.
                let len = faults.max_frame.saturating_sub(1).max(1);
                out.extend((0..len).map(|i| b'a' + (i % 26) as u8));
            }
            FaultKind::Garbage => {
                let seed = splitmix64(conn_seed ^ u64::from_be_bytes(*b"garbage!"));
                let (bytes, replies) = garbage(seed, GARBAGE_BYTES, faults.max_frame);
                out.extend_from_slice(&bytes);
                self.expect.owe_replies(replies);
            }
        }
        if self.kind == FaultKind::Trickle {
            self.on_due(now, ctx);
        } else {
            self.pump(now, ctx);
        }
        if self.running() && self.reading {
            // Just established: whatever is readable was signalled by this very event.
            self.read_available(now, ctx);
        }
    }

    /// A timed step: trickle's next byte, or the end of slowread's pause.
    fn on_due(&mut self, now: Instant, ctx: &mut Ctx) {
        let faults = &ctx.plan.faults;
        match self.kind {
            FaultKind::Trickle => {
                // Never a TAB; never more than the limit (that would be an oversize).
                if self.queued < faults.max_frame {
                    if let Some(conn) = self.conn.as_mut() {
                        conn.out().push(b'a' + (self.queued % 26) as u8);
                    }
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

    /// Writes what is queued (noread and flood: refilling, up to their budget), then takes
    /// the kind's next step once everything is written.
    fn pump(&mut self, now: Instant, ctx: &mut Ctx) {
        let plan = ctx.plan;
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return;
            };
            let refill = self.kind.never_reads() && !self.write_done && conn.unwritten() == 0;
            if refill {
                let budget = match self.kind {
                    FaultKind::Flood => FLOOD_MAX_BYTES,
                    _ => NOREAD_MAX_BYTES,
                };
                if self.queued >= budget {
                    self.write_done = true;
                    break;
                }
                let out = conn.out();
                if self.kind == FaultKind::Flood {
                    self.expect.queue_empty_frames(NOREAD_CHUNK, out);
                } else {
                    let frames = (NOREAD_CHUNK / (plan.noread_payloads.size() + 1)).max(1);
                    queue_frames(&mut self.expect, out, frames);
                }
                self.queued += conn.unwritten();
            }
            match conn.flush() {
                // Bounded by NOREAD_MAX_BYTES.
                Ok(true) if self.kind.never_reads() && !self.write_done => continue,
                Ok(true) => break,
                Ok(false) => return,
                Err(Ended::Reset(_)) => {
                    // The server closed: stop writing, read what it sent to judge it.
                    self.write_done = true;
                    conn.discard_output();
                    self.reading = true;
                    return self.read_available(now, ctx);
                }
                Err(end) => return self.finish(Err(end.describe()), now, ctx),
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
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        conn.discard_output();
        if let Err(e) = conn.shutdown_write() {
            self.finish(Err(format!("shutdown: {}", describe(&e))), now, ctx);
        }
    }

    /// Reads what arrived, checking every byte. Bounded: what the server sends is bounded
    /// by what this cycle sent (a few MB at most).
    fn read_available(&mut self, now: Instant, ctx: &mut Ctx) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let kind = self.kind;
        let expect = &mut self.expect;
        let read = conn.read(&mut ctx.read_buf, |bytes| match expect.take(bytes) {
            Err(why) => ControlFlow::Break(Err(why)),
            // Replies are flowing: reset now, with more in flight.
            Ok(()) if kind == FaultKind::Reset => ControlFlow::Break(Ok(())),
            Ok(()) => ControlFlow::Continue(()),
        });
        match read {
            Ok(None) => {}
            Ok(Some(outcome)) => return self.finish(outcome, now, ctx),
            Err(Ended::Eof) => return self.on_end(End::Eof, now, ctx),
            Err(end @ Ended::Reset(_)) => return self.on_end(End::Reset(end.describe()), now, ctx),
            Err(end) => return self.finish(Err(end.describe()), now, ctx),
        }
        if self.kind == FaultKind::SlowRead && self.expect.all_answered() && !self.write_shut {
            // Every reply is in: shut our side, the server closes after us.
            self.shut_write(now, ctx);
        }
    }

    /// The stream ended (EOF, reset): the cycle's outcome.
    fn on_end(&mut self, end: End, now: Instant, ctx: &mut Ctx) {
        let Some(conn) = self.conn.as_ref() else {
            return;
        };
        // Timed from the connect's issue, always before the server accepted it: a
        // late-scheduled client cannot make the server's idle timeout look short.
        let after = now.saturating_duration_since(conn.connect_at());
        let outcome =
            self.expect
                .at_end(&end, self.write_shut, after, ctx.plan.faults.idle_timeout);
        self.finish(outcome, now, ctx);
    }

    /// Ends the cycle with its outcome (`Err`: unexpected, described), closes, pauses.
    fn finish(&mut self, outcome: Result<(), String>, now: Instant, ctx: &mut Ctx) {
        if !self.running() {
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
        self.close_conn(self.kind == FaultKind::Reset, ctx);
        self.pause(now, ctx);
    }

    /// Closes the connection (with a reset if asked) and frees its buffers.
    fn close_conn(&mut self, reset: bool, ctx: &mut Ctx) {
        if let Some(conn) = self.conn.take() {
            conn.close(&ctx.registry, reset);
            ctx.busy_faults -= 1;
        }
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

/// Queues `n` frames on `out`, each owed its reply.
fn queue_frames(expect: &mut Expect, out: &mut Vec<u8>, n: usize) {
    for _ in 0..n {
        expect.queue_frame(out);
    }
}
