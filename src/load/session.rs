//! Session: one load connection's state machine: connecting, open (send frames, check
//! replies), closed.
//!
//! A session sends frames while the plan allows (closed loop: as replies free pipeline
//! slots; open loop: when each frame's scheduled time comes), and hands every received
//! byte to its [`ReplyChecker`]. Every frame it sends is settled exactly once, through a
//! [`Verdict`]: answered, corrupt or lost (in flight when the connection closed).
//!
//! Its socket and I/O are a [`LoadConn`]'s; the bytes the connection has queued and not
//! yet written are always of frames already counted as sent.
//!
//! # Invariants
//! - A closed session (no connection) always has no frame in flight.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use mio::Token;

use crate::load::conn::{describe, ConnectError, Ended, LoadConn};
use crate::load::ctx::Ctx;
use crate::load::histogram::MAX_MICROS;
use crate::load::intervals::nanos;
use crate::load::plan::Plan;
use crate::load::stats::WorkerStats;
use crate::load::verify::{ReplyChecker, Verdict};
use crate::protocol::DELIMITER;

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

impl From<Ended> for Close {
    fn from(end: Ended) -> Close {
        match end {
            Ended::Eof => Close::ByServer(None),
            Ended::Reset(_) => Close::ByServer(Some(end.describe())),
            Ended::Failed(..) => Close::Error(end.describe()),
        }
    }
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
    /// The connection; `None` once closed.
    conn: Option<LoadConn>,
    /// Expected replies of the frames in flight.
    checker: ReplyChecker<Instant>,
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
        interval: Option<Duration>,
        token: Token,
        now: Instant,
        ctx: &Ctx,
    ) -> Result<Session, ConnectError> {
        let plan = ctx.plan;
        let conn = LoadConn::open(plan, &ctx.registry, token, now, id)?;
        Ok(Session {
            id,
            conn: Some(conn),
            checker: ReplyChecker::new(id, plan.payloads.clone(), plan.raw),
            interval,
            schedule: None,
            in_heap: false,
        })
    }

    /// Where the session is.
    pub fn state(&self) -> State {
        match &self.conn {
            None => State::Closed,
            Some(conn) => match conn.established() {
                Some(at) => State::Open(at),
                None => State::Connecting(conn.connect_at()),
            },
        }
    }

    /// Whether this session will do nothing more in a run with a per-connection frame
    /// count: closed, or every frame sent and settled.
    pub fn is_done(&self, plan: &Plan) -> bool {
        match self.state() {
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
        if !matches!(self.state(), State::Open(_))
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

    /// The earliest scheduled send time of a frame this session has yet to settle: its
    /// oldest frame in flight's, else (open loop) its next frame's due time. `None`: any
    /// frame it sends from now on is stamped `now` or later (closed loop, or closed).
    pub fn earliest_unsettled(&self) -> Option<Instant> {
        if let Some(&oldest) = self.checker.oldest() {
            return Some(oldest);
        }
        match self.state() {
            State::Open(_) => self
                .schedule
                .map(|schedule| schedule.due(self.checker.next_seq())),
            State::Connecting(_) | State::Closed => None,
        }
    }

    /// Handles a readiness event.
    pub fn on_event(&mut self, readable: bool, writable: bool, now: Instant, ctx: &mut Ctx) {
        match self.state() {
            State::Connecting(since) => {
                if !self.finish_connect(since, now, ctx) {
                    return;
                }
                // Just established: whatever is readable was signalled by this very event.
                self.on_readable(now, ctx);
                self.pump(now, ctx);
            }
            State::Open(_) => {
                if readable {
                    self.on_readable(now, ctx);
                }
                if writable || readable {
                    self.pump(now, ctx);
                }
            }
            State::Closed => {}
        }
    }

    /// Completes a connect on its first event; false while still connecting or failed.
    fn finish_connect(&mut self, since: Instant, now: Instant, ctx: &mut Ctx) -> bool {
        let Some(conn) = self.conn.as_mut() else {
            return false;
        };
        match conn.finish_connect(now) {
            Ok(true) => {}
            Ok(false) => return false,
            Err(e) => {
                self.fail_connect(&describe(&e), ctx);
                return false;
            }
        }
        ctx.stats.established += 1;
        ctx.open += 1;
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

    /// Counts a failed connect and closes the socket.
    pub fn fail_connect(&mut self, why: &str, ctx: &mut Ctx) {
        ctx.stats.failed += 1;
        ctx.stats.error(format!("connect: {why}"));
        self.drop_conn(ctx);
    }

    /// Fails the connect if it is still in progress (its deadline has passed).
    pub fn expire_connect(&mut self, ctx: &mut Ctx) {
        if matches!(self.state(), State::Connecting(_)) {
            self.fail_connect("timed out", ctx);
        }
    }

    /// Reads what arrived, checking every byte. Bounded: the server can only owe replies
    /// to frames in flight, at most `pipeline` of them (more means a broken server, which
    /// the checker stops at `Desync`).
    fn on_readable(&mut self, now: Instant, ctx: &mut Ctx) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let Ctx {
            stats,
            read_buf,
            plan,
            in_flight,
            ..
        } = ctx;
        let checker = &mut self.checker;
        let arrival = Arrival::new(now, plan);
        let read = conn.read(read_buf, |bytes| {
            match checker.feed(bytes, &mut |v| settle(v, arrival, plan, stats, in_flight)) {
                Ok(()) => ControlFlow::Continue(()),
                Err(desync) => ControlFlow::Break(desync),
            }
        });
        match read {
            Ok(None) => {}
            Ok(Some(_desync)) => {
                ctx.stats.desyncs += 1;
                ctx.stats
                    .error("reply stream unreadable: no TAB in the longest reply");
                self.close(Close::Error("desync".into()), now, ctx);
            }
            Err(end) => self.close(end.into(), now, ctx),
        }
    }

    /// Sends the frames the plan allows now, then writes what it can.
    pub fn pump(&mut self, now: Instant, ctx: &mut Ctx) {
        if !matches!(self.state(), State::Open(_)) {
            return;
        }
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let plan = ctx.plan;
        if plan.sending(now) {
            let out = conn.out();
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
                out.extend_from_slice(self.checker.next_payload());
                out.push(DELIMITER);
                self.checker.sent(stamp);
                ctx.stats.frames_sent += 1;
                ctx.in_flight += 1;
                if plan.measured(stamp) {
                    ctx.stats.measured_tx_bytes += plan.frame_len as u64;
                }
            }
        }
        if let Err(end) = conn.flush() {
            self.close(end.into(), now, ctx);
        }
    }

    /// Closes the session, settling its frames in flight as lost.
    fn close(&mut self, why: Close, now: Instant, ctx: &mut Ctx) {
        let State::Open(since) = self.state() else {
            return self.drop_conn(ctx);
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
        ctx.open -= 1;
        self.give_up(now, ctx);
        self.drop_conn(ctx);
    }

    /// Settles every frame in flight as lost (the end of the drain, or a close).
    pub fn give_up(&mut self, now: Instant, ctx: &mut Ctx) {
        let Ctx {
            stats,
            plan,
            in_flight,
            ..
        } = ctx;
        let arrival = Arrival::new(now, plan);
        self.checker
            .give_up(&mut |v| settle(v, arrival, plan, stats, in_flight));
    }

    /// Closes the socket (end of run); frames in flight must have been settled.
    pub fn shut(&mut self, ctx: &mut Ctx) {
        if matches!(self.state(), State::Open(_)) {
            ctx.open -= 1;
        }
        self.drop_conn(ctx);
    }

    fn drop_conn(&mut self, ctx: &mut Ctx) {
        if let Some(conn) = self.conn.take() {
            conn.close(&ctx.registry, false);
        }
    }
}

/// When verdicts come: the instant, and how far into the measured window it is (taken
/// once per read, not per frame: the offset of a frame's stamp is then one subtraction).
#[derive(Debug, Clone, Copy)]
struct Arrival {
    /// The instant of the read (or of the give-up).
    now: Instant,
    /// `now`, as an offset into the measured window, in nanoseconds.
    into_window_ns: u64,
}

impl Arrival {
    fn new(now: Instant, plan: &Plan) -> Self {
        Arrival {
            now,
            into_window_ns: nanos(plan.offset(now)),
        }
    }

    /// How long ago `stamp` was and its offset into the measured window, in nanoseconds
    /// (`stamp` is not after `now`: a frame is stamped when, or after, it was due; in the
    /// window: not before its start).
    #[inline]
    fn since(&self, stamp: Instant) -> (u64, u64) {
        let ago = self.now.saturating_duration_since(stamp);
        // A reply's age is far below the 584 years a u64 of nanoseconds holds.
        let ago = ago.as_secs() * 1_000_000_000 + u64::from(ago.subsec_nanos());
        (ago, self.into_window_ns.saturating_sub(ago))
    }
}

/// Counts one verdict of a session's checker: in the totals, and, for a frame scheduled in
/// the measured window, in its interval.
fn settle(
    v: Verdict<Instant>,
    at: Arrival,
    plan: &Plan,
    stats: &mut WorkerStats,
    in_flight: &mut u64,
) {
    match v {
        Verdict::Answered(stamp) => {
            stats.frames_answered += 1;
            *in_flight -= 1;
            let measured = plan.measured(stamp);
            if measured || stats.live.is_some() {
                let (latency_ns, offset_ns) = at.since(stamp);
                let micros = latency_ns / 1000;
                if let Some(live) = stats.live.as_mut() {
                    live.saturating_record(micros.clamp(1, MAX_MICROS));
                }
                if measured {
                    stats.measured_replies += 1;
                    stats.measured_rx_bytes += plan.reply_len as u64;
                    stats.intervals.answered_ns(offset_ns, micros);
                }
            }
        }
        Verdict::Corrupt(stamp) => {
            stats.frames_corrupt += 1;
            *in_flight -= 1;
            stats.error("corrupt reply");
            if plan.measured(stamp) {
                stats
                    .intervals
                    .corrupt(Duration::from_nanos(at.since(stamp).1));
            }
        }
        Verdict::Lost(stamp) => {
            stats.frames_lost += 1;
            *in_flight -= 1;
            if plan.measured(stamp) {
                stats
                    .intervals
                    .lost(Duration::from_nanos(at.since(stamp).1));
            }
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
