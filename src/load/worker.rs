//! One load worker: a thread with its own mio `Poll`, driving its share of the sessions.
//!
//! The loop: open the connections that are due; poll (timeout: the nearest of the next
//! connect, the next paced frame, a connect deadline, the end of a phase); dispatch each
//! event to its session; send the paced frames that came due; publish progress; stop when
//! the drain is over or nothing is in flight after sending stopped.
//!
//! Faulty sessions (fault/session.rs) share the loop: their timers go in the same heap, and
//! the drain also waits for their cycles in progress (`busy_faults`). So do the one-frame
//! connections of `--churn` (churn.rs), on tokens of their own from `CHURN_TOKENS` up; the
//! run also waits for each of them to reach its outcome.
//!
//! # Invariants
//! - `sessions[i]` is always registered as `Token(i)`; sessions are never removed during
//!   a run, so a token always names the session it was given to. A faulty session
//!   registers each cycle's socket under its same token, only from a timer (see fault/session.rs).
//! - `in_flight` always equals the sum of the healthy sessions' frames in flight.
//! - Each healthy session has at most one entry in the pacing heap (`Session::in_heap`).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};

use crate::load::churn::{Churn, CHURN_TOKENS};
use crate::load::conn::{ConnectError, Ctx};
use crate::load::fault::{FaultSession, NOREAD_FRAME};
use crate::load::payload::PayloadSource;
use crate::load::plan::Plan;
use crate::load::session::{Session, State};
use crate::load::stats::{Progress, WorkerStats};

/// Connections opened per loop turn at most, so that events of the open ones are served
/// between batches; the rest wait for the next turn (poll timeout zero).
const CONNECTS_PER_TURN: usize = 256;
/// Events handled per `poll`; more wait for the next turn (mio keeps them pending).
const EVENTS_CAPACITY: usize = 1024;
/// Bytes read at once: several whole replies to 64 KiB frames.
const READ_BUF: usize = 256 * 1024;
/// Delay before retrying a Unix connect refused with EAGAIN (backlog full).
const UNIX_RETRY: Duration = Duration::from_millis(10);

/// One worker's share of the run.
pub struct WorkerConfig {
    /// The id of this worker's first connection; it has `count` consecutive ids.
    pub first_id: u64,
    /// Connections this worker opens.
    pub count: usize,
    /// This worker's share of `--connect-rate`, per second.
    pub connect_rate: Option<f64>,
    /// Frames per second per connection in open loop.
    pub rate_per_connection: Option<f64>,
    /// This worker's share of `--churn`, one-frame connections per second.
    pub churn_rate: Option<f64>,
    /// Mixed into this worker's churn payloads (unique per worker).
    pub churn_id: u64,
    /// Payload generator.
    pub source: PayloadSource,
    /// The shared timeline.
    pub plan: Arc<Plan>,
}

/// A worker's connection: healthy (every reply verified) or faulty (cycling).
enum Slot {
    /// A healthy session.
    Healthy(Session),
    /// A faulty session, reconnecting on the same token each cycle.
    Faulty(FaultSession),
}

/// Runs one worker to the end of the drain and returns what it counted.
pub fn run(config: WorkerConfig, progress: &Progress) -> io::Result<WorkerStats> {
    let plan = &*config.plan;
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(EVENTS_CAPACITY);
    let mut stats = WorkerStats::new();
    let mut read_buf = vec![0u8; READ_BUF];
    let noread_source = PayloadSource::new(NOREAD_FRAME.min(plan.faults.max_frame));
    let flood_source = PayloadSource::new(0);
    let mut sessions: Vec<Slot> = Vec::with_capacity(config.count);
    let interval = config
        .rate_per_connection
        .map(|r| Duration::from_secs_f64(1.0 / r));

    // Connections not yet opened: (id, not before).
    let mut to_open: VecDeque<(u64, Instant)> = (0..config.count as u64)
        .map(|k| {
            let due = match config.connect_rate {
                Some(rate) => plan.start + Duration::from_secs_f64(k as f64 / rate),
                None => plan.start,
            };
            (config.first_id + k, due)
        })
        .collect();
    // Connects in progress, by deadline (deadlines grow: connects start in order).
    let mut connect_deadlines: VecDeque<(Instant, usize)> = VecDeque::new();
    // Open-loop pacing and the faulty sessions' timers: (due, session index).
    let mut paced: BinaryHeap<Reverse<(Instant, usize)>> = BinaryHeap::new();
    let mut in_flight: u64 = 0;
    let mut open: u64 = 0;
    let mut busy_faults: u64 = 0;
    let mut limit_logged = false;
    let mut churn = Churn::new(config.churn_rate, plan.start, config.churn_id);
    // A registry of its own, so the sessions' context can live across `poll.poll`.
    let registry = poll.registry().try_clone()?;
    let mut ctx = Ctx {
        stats: &mut stats,
        read_buf: &mut read_buf,
        plan,
        registry: &registry,
        in_flight: &mut in_flight,
        open: &mut open,
        busy_faults: &mut busy_faults,
        source: &config.source,
        noread_source: &noread_source,
        flood_source: &flood_source,
    };

    loop {
        let now = Instant::now();

        // Open the connections that are due, a bounded batch per turn.
        let mut opened = 0;
        while let Some(&(id, due)) = to_open.front() {
            if due > now || opened == CONNECTS_PER_TURN {
                break;
            }
            if now >= plan.send_end {
                // Too late to be of use: count the rest as not opened.
                ctx.stats.failed += to_open.len() as u64;
                ctx.stats
                    .error("connect: not attempted before the end of the run");
                to_open.clear();
                break;
            }
            to_open.pop_front();
            opened += 1;
            let index = sessions.len();
            let token = Token(index);
            if let Some(kind) = plan.faults.kind_of(id) {
                // A faulty connection always keeps its slot: a failed connect is retried.
                ctx.stats.faults[kind.index()].connections += 1;
                let mut fault = FaultSession::new(kind, id, token, &config.source, now);
                fault.on_timer(now, &mut ctx);
                let mut slot = Slot::Faulty(fault);
                schedule(&mut slot, index, &ctx, now, &mut paced);
                sessions.push(slot);
                continue;
            }
            match Session::start(id, &config.source, plan, interval, ctx.registry, token, now) {
                Ok(session) => {
                    connect_deadlines.push_back((now + plan.connect_timeout, index));
                    sessions.push(Slot::Healthy(session));
                }
                Err(ConnectError::Retry) => {
                    ctx.stats
                        .error("connect: unix socket backlog full (EAGAIN), retried");
                    to_open.push_front((id, now + UNIX_RETRY));
                    break;
                }
                Err(ConnectError::Refused(why) | ConnectError::Failed(why)) => {
                    ctx.stats.failed += 1;
                    ctx.stats.error(format!("connect: {why}"));
                }
                Err(ConnectError::Limit(hit, why)) => {
                    // Every later connect would fail the same way: stop opening.
                    ctx.stats.limit = Some(hit);
                    ctx.stats.failed += 1 + to_open.len() as u64;
                    ctx.stats.error(format!("connect: {why}"));
                    to_open.clear();
                    if !limit_logged {
                        log::warn!("stopped opening connections: {why}");
                        limit_logged = true;
                    }
                }
            }
        }

        // One-frame connections that are due, in what is left of the batch; then the
        // ones past their deadline.
        opened += churn.open_due(now, CONNECTS_PER_TURN - opened, &mut ctx);
        churn.expire(now, &mut ctx);

        // Connects past their deadline fail.
        while let Some(&(deadline, index)) = connect_deadlines.front() {
            if deadline > now {
                break;
            }
            connect_deadlines.pop_front();
            if let Slot::Healthy(session) = &mut sessions[index] {
                session.expire_connect(&mut ctx);
            }
        }

        // Paced frames and faulty sessions' timers that came due.
        while let Some(&Reverse((due, index))) = paced.peek() {
            if due > now {
                break;
            }
            paced.pop();
            let slot = &mut sessions[index];
            match slot {
                Slot::Healthy(session) => {
                    session.in_heap = false;
                    session.pump(now, &mut ctx);
                }
                Slot::Faulty(fault) => {
                    if fault.armed == Some(due) {
                        fault.armed = None;
                    }
                    fault.on_timer(now, &mut ctx);
                }
            }
            schedule(slot, index, &ctx, now, &mut paced);
        }

        publish(progress, ctx.stats, *ctx.open);

        // The end: the drain is over, or nothing is left to wait for.
        // A churn connection is never cut short: it keeps its whole deadline.
        let idle = *ctx.in_flight == 0 && *ctx.busy_faults == 0;
        if now >= plan.send_end
            && to_open.is_empty()
            && (idle || now >= plan.drain_end)
            && churn.is_idle()
        {
            break;
        }
        if plan.frames_per_connection.is_some()
            && to_open.is_empty()
            && idle
            && churn.is_idle()
            && !churn.scheduled(&ctx, now)
            && sessions.iter().all(|slot| match slot {
                Slot::Healthy(session) => session.is_done(plan),
                Slot::Faulty(fault) => fault.is_done(),
            })
        {
            break;
        }

        // Sleep until the nearest thing to do.
        let mut wake = if now < plan.send_end {
            plan.send_end
        } else {
            plan.drain_end
        };
        if let Some(&(_, due)) = to_open.front() {
            wake = wake.min(if opened == CONNECTS_PER_TURN {
                now
            } else {
                due
            });
        }
        if let Some(&(deadline, _)) = connect_deadlines.front() {
            wake = wake.min(deadline);
        }
        if let Some(&Reverse((due, _))) = paced.peek() {
            wake = wake.min(due);
        }
        if let Some(due) = churn.next_wake(&ctx, now) {
            wake = wake.min(if opened == CONNECTS_PER_TURN {
                now
            } else {
                due
            });
        }
        // Wake at least once a second so the progress counters stay fresh.
        let timeout = wake
            .saturating_duration_since(now)
            .min(Duration::from_secs(1));
        match poll.poll(&mut events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }

        let now = Instant::now();
        for event in events.iter() {
            let index = event.token().0;
            if index >= CHURN_TOKENS {
                churn.on_event(index - CHURN_TOKENS, &mut ctx);
                continue;
            }
            // A token always names its own slot (never removed, never reused by another).
            let Some(slot) = sessions.get_mut(index) else {
                continue;
            };
            match slot {
                Slot::Healthy(session) => session.on_event(
                    event.is_readable() || event.is_read_closed() || event.is_error(),
                    event.is_writable() || event.is_write_closed(),
                    now,
                    &mut ctx,
                ),
                Slot::Faulty(fault) => fault.on_event(
                    event.is_readable(),
                    event.is_writable() || event.is_write_closed(),
                    event.is_read_closed() || event.is_error(),
                    now,
                    &mut ctx,
                ),
            }
            schedule(slot, index, &ctx, now, &mut paced);
        }
    }

    // The end: whatever is still in flight is lost; close everything.
    let now = Instant::now();
    for slot in &mut sessions {
        match slot {
            Slot::Healthy(session) => {
                if let State::Connecting(_) = session.state() {
                    session.fail_connect("timed out (still connecting at the end)", &mut ctx);
                }
                session.give_up(now, &mut ctx);
                session.shut(&mut ctx);
            }
            Slot::Faulty(fault) => fault.end_of_run(&mut ctx),
        }
    }
    churn.end_of_run(&mut ctx);
    publish(progress, &stats, open);
    debug_assert_eq!(
        stats.frames_sent,
        stats.frames_answered + stats.frames_corrupt + stats.frames_lost,
        "every frame sent is settled once"
    );
    debug_assert_eq!(busy_faults, 0, "every faulty cycle ended");
    debug_assert_eq!(
        stats.churn.attempted,
        stats.churn.ok + stats.churn.failed(),
        "every churn connection has one outcome: {:?}",
        stats.churn
    );
    Ok(stats)
}

/// Puts a slot in the timer heap if it waits for a due time it has no entry for yet:
/// a healthy session's next paced frame (one entry at most, `in_heap`), or a faulty
/// session's next wake (an entry earlier than any it has, `armed`; later entries it
/// has become spurious wakes, which it ignores).
fn schedule(
    slot: &mut Slot,
    index: usize,
    ctx: &Ctx,
    now: Instant,
    paced: &mut BinaryHeap<Reverse<(Instant, usize)>>,
) {
    match slot {
        Slot::Healthy(session) => {
            if session.in_heap {
                return;
            }
            if let Some(due) = session.next_due(ctx.plan, now) {
                paced.push(Reverse((due, index)));
                session.in_heap = true;
            }
        }
        Slot::Faulty(fault) => {
            if let Some(wake) = fault.next_wake(ctx) {
                let earlier = match fault.armed {
                    Some(armed) => wake < armed,
                    None => true,
                };
                if earlier {
                    paced.push(Reverse((wake, index)));
                    fault.armed = Some(wake);
                }
            }
        }
    }
}

/// Stores this worker's counters for the progress line.
fn publish(progress: &Progress, stats: &WorkerStats, open: u64) {
    progress.open.store(open, Ordering::Relaxed);
    progress.failed.store(stats.failed, Ordering::Relaxed);
    progress.sent.store(stats.frames_sent, Ordering::Relaxed);
    progress
        .answered
        .store(stats.frames_answered, Ordering::Relaxed);
}
