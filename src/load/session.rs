//! Session: one load connection's state machine: connecting, open (send frames, check
//! replies), closed.
//!
//! A session sends frames while the plan allows (closed loop: as replies free pipeline
//! slots; open loop: when each frame's scheduled time comes), and hands every received
//! byte to its [`ReplyChecker`]. Every frame it sends is settled exactly once, through a
//! [`Verdict`]: answered, corrupt or lost (in flight when the connection closed).
//!
//! # Invariants
//! - `stream` is always `Some` while the state is `Connecting` or `Open`, `None` once `Closed`.
//! - `out[out_pos..]` always holds the bytes of frames already counted as sent and not
//!   yet written; a write never reorders them.
//! - A closed session always has no frame in flight.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use mio::{Registry, Token};

use crate::load::conn::{connect_done, describe, open_stream, ConnectError, Ctx};
use crate::load::payload::PayloadSource;
use crate::load::plan::Plan;
use crate::load::stats::WorkerStats;
use crate::load::verify::{ReplyChecker, Verdict};
use crate::protocol::DELIMITER;
use crate::stream::Stream;

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// `connect` was issued at this instant; waiting for writable.
    Connecting(Instant),
    /// Established at this instant.
    Open(Instant),
    /// Closed (by us or by the server); nothing more happens.
    Closed,
}

/// Why a session closes.
#[derive(Debug)]
enum Close {
    /// The server ended the stream or reset it (`how` says which, `None` for a clean end).
    ByServer(Option<String>),
    /// A local failure or an unrecoverable reply stream, described.
    Error(String),
}

/// Open-loop pacing: frame `k` is due at `start + interval * (k + phase)`.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    /// When the connection was established.
    start: Instant,
    /// Time between two frames of this connection.
    interval: Duration,
    /// A fraction in `[0, 1)` that spreads connections' sends over the interval.
    phase: f64,
}

impl Schedule {
    fn due(&self, seq: u64) -> Instant {
        self.start + self.interval.mul_f64(seq as f64 + self.phase)
    }
}

/// One load connection.
#[derive(Debug)]
pub struct Session {
    /// The connection id (seeds payloads; unique over the run).
    id: u64,
    /// The socket; `None` once closed.
    stream: Option<Stream>,
    /// Where the session is.
    state: State,
    /// Expected replies of the frames in flight.
    checker: ReplyChecker<Instant>,
    /// Frames counted as sent, not yet fully written.
    out: Vec<u8>,
    /// How much of `out` has been written.
    out_pos: usize,
    /// Time between frames in open loop (`None`: closed loop).
    interval: Option<Duration>,
    /// The pacing, set when the connection is established in open loop.
    schedule: Option<Schedule>,
    /// Whether the worker's timer heap holds an entry for this session.
    pub in_heap: bool,
}

impl Session {
    /// Issues a non-blocking connect for connection `id` to the plan's address and
    /// registers it as `token`.
    pub fn start(
        id: u64,
        source: &PayloadSource,
        plan: &Plan,
        interval: Option<Duration>,
        registry: &Registry,
        token: Token,
        now: Instant,
    ) -> Result<Session, ConnectError> {
        let stream = open_stream(&plan.addr, plan.source, plan.socket_buffer, registry, token)?;
        Ok(Session {
            id,
            stream: Some(stream),
            state: State::Connecting(now),
            checker: ReplyChecker::new(id, source.clone(), plan.raw),
            out: Vec::new(),
            out_pos: 0,
            interval,
            schedule: None,
            in_heap: false,
        })
    }

    /// Where the session is.
    pub fn state(&self) -> State {
        self.state
    }

    /// Whether this session will do nothing more in a run with a per-connection frame
    /// count: closed, or every frame sent and settled.
    pub fn is_done(&self, plan: &Plan) -> bool {
        match self.state {
            State::Closed => true,
            State::Connecting(_) => false,
            State::Open(_) => {
                self.checker.in_flight() == 0
                    && plan
                        .frames_per_connection
                        .is_some_and(|n| self.checker.next_seq() >= n)
            }
        }
    }

    /// When the next frame is due, if the session waits for nothing but time (and
    /// sending has not stopped at `now`).
    pub fn next_due(&self, plan: &Plan, now: Instant) -> Option<Instant> {
        let schedule = self.schedule?;
        if !matches!(self.state, State::Open(_))
            || self.checker.in_flight() >= plan.pipeline
            || !plan.sending(now)
        {
            return None;
        }
        let seq = self.checker.next_seq();
        if plan.frames_per_connection.is_some_and(|n| seq >= n) {
            return None;
        }
        let due = schedule.due(seq);
        (due < plan.send_end).then_some(due)
    }

    /// Handles a readiness event.
    pub fn on_event(&mut self, readable: bool, writable: bool, now: Instant, ctx: &mut Ctx) {
        if let State::Connecting(since) = self.state {
            if !self.finish_connect(since, now, ctx) {
                return;
            }
            // Just established: whatever is readable was signalled by this very event.
            self.on_readable(now, ctx);
            self.pump(now, ctx);
            return;
        }
        if self.state == State::Closed {
            return;
        }
        if readable {
            self.on_readable(now, ctx);
        }
        if writable || readable {
            self.pump(now, ctx);
        }
    }

    /// Completes a connect on its first event; false while still connecting or failed.
    fn finish_connect(&mut self, since: Instant, now: Instant, ctx: &mut Ctx) -> bool {
        let Some(stream) = self.stream.as_ref() else {
            return false;
        };
        match connect_done(stream) {
            Ok(true) => {}
            Ok(false) => return false,
            Err(e) => {
                self.fail_connect(&describe(&e), ctx);
                return false;
            }
        }
        self.state = State::Open(now);
        ctx.stats.established += 1;
        *ctx.open += 1;
        ctx.stats
            .record_connect(now.saturating_duration_since(since).as_micros() as u64);
        if let Some(interval) = self.interval {
            self.schedule = Some(Schedule {
                start: now,
                interval,
                // The golden ratio spreads ids evenly over [0, 1).
                phase: (self.id as f64 * 0.618_033_988_749_895).fract(),
            });
        }
        true
    }

    /// Counts a failed connect and drops the socket.
    pub fn fail_connect(&mut self, why: &str, ctx: &mut Ctx) {
        ctx.stats.failed += 1;
        ctx.stats.error(format!("connect: {why}"));
        self.drop_stream(ctx);
    }

    /// Fails the connect if it is still in progress (its deadline has passed).
    pub fn expire_connect(&mut self, ctx: &mut Ctx) {
        if matches!(self.state, State::Connecting(_)) {
            self.fail_connect("timed out", ctx);
        }
    }

    /// Reads until `WouldBlock`, checking every byte. Bounded: the server can only owe
    /// replies to frames in flight, at most `pipeline` of them (more means a broken
    /// server, which the checker stops at `Desync`).
    fn on_readable(&mut self, now: Instant, ctx: &mut Ctx) {
        loop {
            let Some(stream) = self.stream.as_mut() else {
                return;
            };
            match stream.read(ctx.read_buf) {
                Ok(0) => return self.close(Close::ByServer(None), now, ctx),
                Ok(n) => {
                    let plan = ctx.plan;
                    let stats = &mut *ctx.stats;
                    let in_flight = &mut *ctx.in_flight;
                    let outcome = self.checker.feed(&ctx.read_buf[..n], &mut |v| {
                        settle(v, now, plan, stats, in_flight)
                    });
                    if outcome.is_err() {
                        ctx.stats.desyncs += 1;
                        ctx.stats
                            .error("reply stream unreadable: no TAB in the longest reply");
                        return self.close(Close::Error("desync".into()), now, ctx);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    return self.close(Close::ByServer(Some(describe(&e))), now, ctx)
                }
                Err(e) => {
                    return self.close(Close::Error(format!("read: {}", describe(&e))), now, ctx)
                }
            }
        }
    }

    /// Sends the frames the plan allows now, then writes what it can.
    pub fn pump(&mut self, now: Instant, ctx: &mut Ctx) {
        if !matches!(self.state, State::Open(_)) {
            return;
        }
        let plan = ctx.plan;
        if plan.sending(now) {
            while self.checker.in_flight() < plan.pipeline {
                let seq = self.checker.next_seq();
                if plan.frames_per_connection.is_some_and(|n| seq >= n) {
                    break;
                }
                let stamp = match self.schedule {
                    Some(schedule) => {
                        let due = schedule.due(seq);
                        if due > now || due >= plan.send_end {
                            break;
                        }
                        due
                    }
                    None => now,
                };
                self.out.extend_from_slice(self.checker.next_payload());
                self.out.push(DELIMITER);
                self.checker.sent(stamp);
                ctx.stats.frames_sent += 1;
                *ctx.in_flight += 1;
                if plan.measured(stamp) {
                    ctx.stats.measured_tx_bytes += plan.frame_len as u64;
                }
            }
        }
        if let Err(close) = self.write_out() {
            self.close(close, now, ctx);
        }
    }

    /// Writes `out` until done or `WouldBlock` (a writable event resumes it).
    fn write_out(&mut self) -> Result<(), Close> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(());
        };
        while self.out_pos < self.out.len() {
            match stream.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(Close::Error("write: wrote nothing".into())),
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                    ) =>
                {
                    return Err(Close::ByServer(Some(describe(&e))))
                }
                Err(e) => return Err(Close::Error(format!("write: {}", describe(&e)))),
            }
        }
        self.out.clear();
        self.out_pos = 0;
        Ok(())
    }

    /// Closes the session, settling its frames in flight as lost.
    fn close(&mut self, why: Close, now: Instant, ctx: &mut Ctx) {
        let State::Open(since) = self.state else {
            return self.drop_stream(ctx);
        };
        match why {
            Close::ByServer(how) => {
                let millis = now.saturating_duration_since(since).as_millis() as u64;
                ctx.stats.record_server_close(millis);
                if let Some(how) = how {
                    ctx.stats.error(format!("server: {how}"));
                }
            }
            Close::Error(what) => ctx.stats.error(what),
        }
        *ctx.open -= 1;
        self.give_up(now, ctx);
        self.drop_stream(ctx);
    }

    /// Settles every frame in flight as lost (the end of the drain, or a close).
    pub fn give_up(&mut self, now: Instant, ctx: &mut Ctx) {
        let plan = ctx.plan;
        let stats = &mut *ctx.stats;
        let in_flight = &mut *ctx.in_flight;
        self.checker
            .give_up(&mut |v| settle(v, now, plan, stats, in_flight));
    }

    /// Closes the socket (end of run); frames in flight must have been settled.
    pub fn shut(&mut self, ctx: &mut Ctx) {
        if matches!(self.state, State::Open(_)) {
            *ctx.open -= 1;
        }
        self.drop_stream(ctx);
    }

    fn drop_stream(&mut self, ctx: &mut Ctx) {
        if let Some(mut stream) = self.stream.take() {
            // Closing the descriptor would remove it from the epoll set too; deregister
            // first so the same holds on kqueue, and errors are of no consequence.
            let _ = ctx.registry.deregister(&mut stream);
        }
        self.state = State::Closed;
    }
}

/// Counts one verdict of a session's checker.
fn settle(
    v: Verdict<Instant>,
    now: Instant,
    plan: &Plan,
    stats: &mut WorkerStats,
    in_flight: &mut u64,
) {
    match v {
        Verdict::Answered(stamp) => {
            stats.frames_answered += 1;
            *in_flight -= 1;
            if plan.measured(stamp) {
                stats.measured_replies += 1;
                stats.measured_rx_bytes += plan.reply_len as u64;
                stats.record_latency(now.saturating_duration_since(stamp).as_micros() as u64);
            }
        }
        Verdict::Corrupt(_) => {
            stats.frames_corrupt += 1;
            *in_flight -= 1;
            stats.error("corrupt reply");
        }
        Verdict::Lost(_) => {
            stats.frames_lost += 1;
            *in_flight -= 1;
        }
        Verdict::ErrorReply(line) => {
            stats.error_replies += 1;
            stats.error(format!("server: {}", String::from_utf8_lossy(&line)));
        }
        Verdict::Unsolicited(_) => {
            stats.unsolicited += 1;
            stats.error("reply with no frame in flight");
        }
    }
}
