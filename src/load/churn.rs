//! Churn: one worker's one-frame connections (`tabecho load --churn RATE`), the original
//! Go client's pattern: connect, send one frame, read its reply, close. Each ends in one
//! outcome, counted in [`ChurnCounts`]: ok, refused, reset, wrong, timed out or other.
//!
//! They are opened at this worker's share of the rate from the start of the run until
//! sending stops, beside the long-lived sessions, on the same poll. A connection opened
//! before sending stops keeps its whole `--connect-timeout` (which bounds the whole
//! exchange, connect to reply): the worker waits for it even past the drain.
//!
//! # Invariants
//! - `conns[key]` is always registered as `Token(CHURN_TOKENS + key)`; a connection is
//!   removed (deregistered and closed) the moment it has its outcome, and new ones are
//!   inserted only by [`Churn::open_due`], never while events are handled, so an event
//!   of a batch names either its own connection or a vacant key (skipped).
//! - Every connection opened gets exactly one outcome: `attempted` always equals the
//!   sum of the outcomes once `conns` is empty.
//! - `deadlines` is always in the order of its instants (connections open in order);
//!   an entry whose connection already ended (another `seq` in its key, or none) is stale.

use std::collections::VecDeque;
use std::io;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use mio::Token;
use slab::Slab;

use crate::load::conn::{describe, ConnectError, Ended, LoadConn};
use crate::load::ctx::Ctx;
use crate::load::stats::ChurnCounts;
use crate::load::verify::{ReplyChecker, Verdict};
use crate::protocol::DELIMITER;

/// Tokens from here up are churn connections (`CHURN_TOKENS + slab key`); the worker's
/// sessions use the tokens below, one per session, far fewer.
pub const CHURN_TOKENS: usize = usize::MAX / 2 + 1;

/// What became of one churn connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The exact reply arrived.
    Ok,
    /// The connect was refused (ECONNREFUSED; a full Unix backlog, EAGAIN, too).
    Refused,
    /// Reset or broken, or closed by the server before the whole reply.
    Reset,
    /// A reply other than the one expected (an error line included).
    Wrong,
    /// No reply within `--connect-timeout` of the connect.
    TimedOut,
    /// Any other failure (no descriptor, no local port, ...).
    Other,
}

/// One churn connection.
#[derive(Debug)]
struct ChurnConn {
    /// Its number in this worker's churn (identifies it across key reuse).
    seq: u64,
    /// The connection, its one frame (payload + TAB) queued from the start.
    conn: LoadConn,
    /// The expected reply.
    checker: ReplyChecker<()>,
}

/// One worker's churn: the schedule, the connections in progress, their deadlines.
#[derive(Debug)]
pub struct Churn {
    /// Time between two connections of this worker; `None`: no churn.
    interval: Option<Duration>,
    /// When connection 0 is due.
    start: Instant,
    /// The next connection's number.
    next: u64,
    /// Mixed into every connection's payload seed (unique per worker).
    id_base: u64,
    /// The connections in progress.
    conns: Slab<ChurnConn>,
    /// (deadline, key, seq) of the connections opened, oldest first.
    deadlines: VecDeque<(Instant, usize, u64)>,
}

impl Churn {
    /// A worker's churn at `rate` connections per second from `start` (`None`: none);
    /// `id_base` makes its payloads differ from other workers'.
    pub fn new(rate: Option<f64>, start: Instant, id_base: u64) -> Self {
        Churn {
            interval: rate.map(|r| Duration::from_secs_f64(1.0 / r)),
            start,
            next: 0,
            id_base,
            conns: Slab::new(),
            deadlines: VecDeque::new(),
        }
    }

    /// When connection `seq` is due.
    fn due(&self, interval: Duration, seq: u64) -> Instant {
        self.start + interval.mul_f64(seq as f64)
    }

    /// Whether more connections will be opened after `now`.
    pub fn scheduled(&self, ctx: &Ctx, now: Instant) -> bool {
        self.interval.is_some() && now < ctx.plan.send_end
    }

    /// No connection in progress.
    pub fn is_idle(&self) -> bool {
        self.conns.is_empty()
    }

    /// The next instant something is due after `now`'s turn: a connection to open (none
    /// once sending stopped: a due time left behind then must not wake the loop at once,
    /// turn after turn, through the drain) or a deadline.
    pub fn next_wake(&self, ctx: &Ctx, now: Instant) -> Option<Instant> {
        let send_end = ctx.plan.send_end;
        let open = self.interval.and_then(|interval| {
            let due = self.due(interval, self.next);
            (now < send_end && due < send_end).then_some(due)
        });
        let deadline = self.deadlines.front().map(|&(at, _, _)| at);
        match (open, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Opens the connections due at `now`, at most `budget` (the rest wait for the next
    /// turn); returns how many were opened.
    pub fn open_due(&mut self, now: Instant, budget: usize, ctx: &mut Ctx) -> usize {
        let Some(interval) = self.interval else {
            return 0;
        };
        let plan = ctx.plan;
        let mut opened = 0;
        while opened < budget && now < plan.send_end && self.due(interval, self.next) <= now {
            let seq = self.next;
            self.next += 1;
            opened += 1;
            ctx.stats.churn.attempted += 1;
            let entry = self.conns.vacant_entry();
            let key = entry.key();
            let token = Token(CHURN_TOKENS + key);
            let mut conn = match LoadConn::open(plan, &ctx.registry, token, now, self.id_base ^ seq)
            {
                Ok(conn) => conn,
                Err(e) => {
                    let (outcome, why) = match e {
                        ConnectError::Refused(why) => (Outcome::Refused, why),
                        ConnectError::Retry => (
                            Outcome::Refused,
                            "unix socket backlog full (EAGAIN)".to_string(),
                        ),
                        ConnectError::Limit(_, why) | ConnectError::Failed(why) => {
                            (Outcome::Other, why)
                        }
                    };
                    count(outcome, &why, ctx);
                    continue;
                }
            };
            let mut checker =
                ReplyChecker::new(self.id_base ^ seq, plan.payloads.clone(), plan.raw);
            let out = conn.out();
            out.extend_from_slice(checker.next_payload());
            out.push(DELIMITER);
            checker.sent(());
            entry.insert(ChurnConn { seq, conn, checker });
            self.deadlines
                .push_back((now + plan.connect_timeout, key, seq));
        }
        opened
    }

    /// Ends the connections whose deadline is past: timed out.
    pub fn expire(&mut self, now: Instant, ctx: &mut Ctx) {
        while let Some(&(deadline, key, seq)) = self.deadlines.front() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_front();
            if self.conns.get(key).is_some_and(|c| c.seq == seq) {
                let how = if self.conns[key].conn.established().is_some() {
                    "no reply in time"
                } else {
                    "connect timed out"
                };
                self.finish(key, Outcome::TimedOut, how, ctx);
            }
        }
    }

    /// Handles a readiness event of the connection with slab key `key` (a vacant key:
    /// its connection ended earlier in this batch; nothing to do).
    pub fn on_event(&mut self, key: usize, now: Instant, ctx: &mut Ctx) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if let Some((outcome, why)) = step(conn, now, ctx) {
            self.finish(key, outcome, &why, ctx);
        }
    }

    /// The run is over: a connection still in progress (only when the worker stopped
    /// early, on a failure) is counted as timed out.
    pub fn end_of_run(&mut self, ctx: &mut Ctx) {
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.finish(key, Outcome::TimedOut, "still in progress at the end", ctx);
        }
        self.deadlines.clear();
    }

    /// Counts the outcome of connection `key`, deregisters and closes it.
    fn finish(&mut self, key: usize, outcome: Outcome, why: &str, ctx: &mut Ctx) {
        self.conns.remove(key).conn.close(&ctx.registry, false);
        count(outcome, why, ctx);
    }
}

/// Moves one connection on after an event: completes its connect, writes its frame,
/// reads its reply. `Some` is its outcome (and why, for a failure); `None`: it waits.
fn step(churn: &mut ChurnConn, now: Instant, ctx: &mut Ctx) -> Option<(Outcome, String)> {
    let conn = &mut churn.conn;
    match conn.finish_connect(now) {
        Ok(true) => {}
        Ok(false) => return None,
        Err(e) => {
            let outcome = match e.raw_os_error() {
                Some(libc::ECONNREFUSED) => Outcome::Refused,
                Some(libc::ECONNRESET | libc::EPIPE) => Outcome::Reset,
                Some(libc::ETIMEDOUT) => Outcome::TimedOut,
                _ => Outcome::Other,
            };
            return Some((outcome, describe(&e)));
        }
    }
    // Write what is left of the frame (one frame: a few writes at most).
    match conn.flush() {
        Ok(true) => {}
        Ok(false) => return None,
        Err(end) => return Some(ended_outcome(end)),
    }
    // Read the reply. Bounded: one reply is owed, and its verdict (or a desync, past the
    // longest reply) ends the connection.
    let checker = &mut churn.checker;
    let read = conn.read(&mut ctx.read_buf, |bytes| {
        let mut verdict: Option<Result<(), String>> = None;
        let fed = checker.feed(bytes, &mut |v| match v {
            Verdict::Answered(()) if verdict.is_none() => verdict = Some(Ok(())),
            Verdict::ErrorReply(line) => {
                verdict.get_or_insert(Err(format!("server: {}", String::from_utf8_lossy(&line))));
            }
            _ => {
                verdict.get_or_insert(Err("wrong reply".into()));
            }
        });
        match (verdict, fed) {
            (Some(Ok(())), Ok(())) if checker.pending_bytes() == 0 => {
                ControlFlow::Break((Outcome::Ok, String::new()))
            }
            (Some(Ok(())), _) => {
                ControlFlow::Break((Outcome::Wrong, "bytes after the reply".into()))
            }
            (Some(Err(why)), _) => ControlFlow::Break((Outcome::Wrong, why)),
            (None, Err(_)) => {
                ControlFlow::Break((Outcome::Wrong, "no TAB within the longest reply".into()))
            }
            (None, Ok(())) => ControlFlow::Continue(()),
        }
    });
    match read {
        Ok(outcome) => outcome,
        Err(Ended::Eof) => Some((Outcome::Reset, "closed before the whole reply".into())),
        Err(end) => Some(ended_outcome(end)),
    }
}

/// The outcome of a stream that ended (reset, broken, or another I/O error) before the
/// whole reply, and why.
fn ended_outcome(end: Ended) -> (Outcome, String) {
    let why = end.describe();
    let outcome = match &end {
        Ended::Eof | Ended::Reset(_) => Outcome::Reset,
        Ended::Failed(_, e) => io_outcome(e),
    };
    (outcome, why)
}

/// The outcome an I/O error on an established churn connection means.
fn io_outcome(e: &io::Error) -> Outcome {
    match e.kind() {
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => Outcome::Reset,
        io::ErrorKind::ConnectionRefused => Outcome::Refused,
        io::ErrorKind::TimedOut => Outcome::TimedOut,
        _ => Outcome::Other,
    }
}

/// Counts one outcome; a failure is also counted in the errors by its description.
fn count(outcome: Outcome, why: &str, ctx: &mut Ctx) {
    let counts: &mut ChurnCounts = &mut ctx.stats.churn;
    let n = match outcome {
        Outcome::Ok => &mut counts.ok,
        Outcome::Refused => &mut counts.refused,
        Outcome::Reset => &mut counts.reset,
        Outcome::Wrong => &mut counts.wrong,
        Outcome::TimedOut => &mut counts.timed_out,
        Outcome::Other => &mut counts.other,
    };
    *n += 1;
    if outcome != Outcome::Ok {
        ctx.stats.error(format!("churn: {why}"));
    }
}
