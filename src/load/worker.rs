//! One load worker: a thread with its own mio `Poll`, driving its share of the connections.
//!
//! One turn of the loop ([`Worker::run`]), top to bottom:
//! 1. [`Worker::open_due`]: open the connections that are due, a bounded batch, and the
//!    churn connections that are due in what is left of it;
//! 2. [`Worker::expire`]: connects, and churn exchanges, past their deadline fail;
//! 3. [`Worker::fire_timers`]: paced frames and faulty sessions' timers that came due;
//! 4. [`Worker::end_intervals`]: sample the intervals that ended, close those no frame can
//!    reach any more; [`Worker::publish`] for the live line; stop when [`Worker::is_over`];
//! 5. poll, with the timeout of [`Worker::next_wake`];
//! 6. [`Worker::dispatch`] each event to its connection.
//!
//! Then [`Worker::end_of_run`] settles what is still in flight as lost and closes all.
//!
//! Faulty sessions (fault/session.rs) share the loop: their timers go in the same heap, and
//! the drain also waits for their cycles in progress (`busy_faults`). So do the one-frame
//! connections of `--churn` (churn.rs), on tokens of their own from `CHURN_TOKENS` up; the
//! run also waits for each of them to reach its outcome.
//!
//! # Invariants
//! - `slots[i]` is always registered as `Token(i)`; slots are never removed during a run,
//!   so a token always names the slot it was given to. A faulty session registers each
//!   cycle's socket under its same token, only from a timer (see fault/session.rs).
//! - Each healthy session has at most one entry in the timer heap (`Session::in_heap`).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};

use crate::load::churn::{Churn, CHURN_TOKENS};
use crate::load::conn::ConnectError;
use crate::load::ctx::Ctx;
use crate::load::fault::FaultSession;
use crate::load::plan::Plan;
use crate::load::session::{Session, State};
use crate::load::stats::{Progress, WorkerStats};

/// Connections opened per loop turn at most, so that events of the open ones are served
/// between batches; the rest wait for the next turn (poll timeout zero).
const CONNECTS_PER_TURN: usize = 256;
/// Events handled per `poll`; more wait for the next turn (mio keeps them pending).
const EVENTS_CAPACITY: usize = 1024;
/// Delay before retrying a Unix connect refused with EAGAIN (backlog full).
const UNIX_RETRY: Duration = Duration::from_millis(10);
/// The longest poll: a worker wakes at least this often.
const MAX_SLEEP: Duration = Duration::from_secs(1);
/// How often a worker hands its reply latencies to the live line (and so its longest
/// poll with one): the line shows each second's, so a tenth of one late at most.
const LIVE_EVERY: Duration = Duration::from_millis(100);
/// The least time between two looks for intervals to close (each looks at every healthy
/// session): intervals shorter than this close a few at a time.
const CLOSE_EVERY: Duration = Duration::from_millis(100);

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
    /// The shared timeline.
    pub plan: Arc<Plan>,
}

/// Runs one worker to the end of the drain and returns what it counted.
pub fn run(config: WorkerConfig, progress: &Progress) -> io::Result<WorkerStats> {
    let mut worker = Worker::new(&config)?;
    worker.run(progress)?;
    Ok(worker.end_of_run(progress))
}

/// A worker's connection: healthy (every reply verified) or faulty (cycling).
enum Slot {
    /// A healthy session.
    Healthy(Session),
    /// A faulty session, reconnecting on the same token each cycle.
    Faulty(FaultSession),
}

/// One worker's loop and everything it drives.
struct Worker<'a> {
    /// The worker's own poll.
    poll: Poll,
    /// The events of one poll.
    events: Events,
    /// What the connections share: counters, read buffer, plan, registry.
    ctx: Ctx<'a>,
    /// The healthy and faulty connections opened, by token.
    slots: Vec<Slot>,
    /// Connections not yet opened: (id, not before), in order.
    to_open: VecDeque<(u64, Instant)>,
    /// Connects in progress, by deadline (deadlines grow: connects start in order).
    connect_deadlines: VecDeque<(Instant, usize)>,
    /// Open-loop pacing and the faulty sessions' timers: (due, slot index).
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    /// The one-frame connections of `--churn`.
    churn: Churn,
    /// Time between two frames of a healthy connection in open loop.
    interval: Option<Duration>,
    /// Whether the stop at a resource limit was logged (once per worker).
    limit_logged: bool,
    /// Whether the measured window has begun (its intervals know the errors before it).
    window_begun: bool,
    /// When the worker last looked for intervals to close.
    closed_at: Instant,
    /// When the worker last handed its latencies to the live line.
    published_at: Instant,
}

impl<'a> Worker<'a> {
    /// A worker with its poll, its connections all still to open.
    fn new(config: &'a WorkerConfig) -> io::Result<Self> {
        let plan = &*config.plan;
        let poll = Poll::new()?;
        // A registry of its own, so the connections' context lives across `poll.poll`.
        let registry = poll.registry().try_clone()?;
        let to_open = (0..config.count as u64)
            .map(|k| {
                let due = match config.connect_rate {
                    Some(rate) => plan.start + Duration::from_secs_f64(k as f64 / rate),
                    None => plan.start,
                };
                (config.first_id + k, due)
            })
            .collect();
        Ok(Worker {
            poll,
            events: Events::with_capacity(EVENTS_CAPACITY),
            ctx: Ctx::new(plan, registry),
            slots: Vec::with_capacity(config.count),
            to_open,
            connect_deadlines: VecDeque::new(),
            timers: BinaryHeap::new(),
            churn: Churn::new(config.churn_rate, plan.start, config.churn_id),
            interval: config
                .rate_per_connection
                .map(|r| Duration::from_secs_f64(1.0 / r)),
            limit_logged: false,
            window_begun: false,
            closed_at: plan.start,
            published_at: plan.start,
        })
    }

    /// The loop, turn after turn, until the run is over.
    fn run(&mut self, progress: &Progress) -> io::Result<()> {
        loop {
            let now = Instant::now();
            let batch_full = self.open_due(now);
            self.expire(now);
            self.fire_timers(now);
            self.end_intervals(now);
            self.publish(progress, now);
            if self.is_over(now) {
                return Ok(());
            }
            let timeout = self.next_wake(now, batch_full);
            match self.poll.poll(&mut self.events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            self.dispatch(Instant::now());
        }
    }

    /// Opens the connections due at `now`, then the churn connections due, at most
    /// [`CONNECTS_PER_TURN`] in all; true when that bound stopped it (more are due now).
    fn open_due(&mut self, now: Instant) -> bool {
        let mut opened = 0;
        while let Some(&(id, due)) = self.to_open.front() {
            if due > now || opened == CONNECTS_PER_TURN {
                break;
            }
            if now >= self.ctx.plan.send_end {
                // Too late to be of use: count the rest as not opened.
                self.ctx.stats.failed += self.to_open.len() as u64;
                self.ctx
                    .stats
                    .error("connect: not attempted before the end of the run");
                self.to_open.clear();
                break;
            }
            self.to_open.pop_front();
            opened += 1;
            if !self.open(id, now) {
                break;
            }
        }
        opened += self
            .churn
            .open_due(now, CONNECTS_PER_TURN - opened, &mut self.ctx);
        opened == CONNECTS_PER_TURN
    }

    /// Opens connection `id`, healthy or faulty, in the next slot; false when the rest of
    /// this turn's batch must wait (a full Unix backlog: `id` is retried shortly).
    fn open(&mut self, id: u64, now: Instant) -> bool {
        let plan = self.ctx.plan;
        let index = self.slots.len();
        let token = Token(index);
        if let Some(kind) = plan.faults.kind_of(id) {
            // A faulty connection always keeps its slot: a failed connect is retried.
            self.ctx.stats.faults[kind.index()].connections += 1;
            let mut fault = FaultSession::new(kind, id, token, &plan.payloads, now);
            fault.on_timer(now, &mut self.ctx);
            let mut slot = Slot::Faulty(fault);
            schedule(&mut slot, index, &self.ctx, now, &mut self.timers);
            self.slots.push(slot);
            return true;
        }
        match Session::start(id, self.interval, token, now, &self.ctx) {
            Ok(session) => {
                self.connect_deadlines
                    .push_back((now + plan.connect_timeout, index));
                self.slots.push(Slot::Healthy(session));
            }
            Err(ConnectError::Retry) => {
                self.ctx
                    .stats
                    .error("connect: unix socket backlog full (EAGAIN), retried");
                self.to_open.push_front((id, now + UNIX_RETRY));
                return false;
            }
            Err(ConnectError::Refused(why) | ConnectError::Failed(why)) => {
                self.ctx.stats.failed += 1;
                self.ctx.stats.error(format!("connect: {why}"));
            }
            Err(ConnectError::Limit(hit, why)) => {
                // Every later connect would fail the same way: stop opening.
                let stats = &mut self.ctx.stats;
                stats.limit = Some(hit);
                stats.failed += 1 + self.to_open.len() as u64;
                stats.error(format!("connect: {why}"));
                self.to_open.clear();
                if !self.limit_logged {
                    log::warn!("stopped opening connections: {why}");
                    self.limit_logged = true;
                }
            }
        }
        true
    }

    /// Fails the churn exchanges and the healthy connects past their deadline.
    fn expire(&mut self, now: Instant) {
        self.churn.expire(now, &mut self.ctx);
        while let Some(&(deadline, index)) = self.connect_deadlines.front() {
            if deadline > now {
                break;
            }
            self.connect_deadlines.pop_front();
            if let Slot::Healthy(session) = &mut self.slots[index] {
                session.expire_connect(&mut self.ctx);
            }
        }
    }

    /// Sends the paced frames, and runs the faulty sessions' timers, that came due.
    fn fire_timers(&mut self, now: Instant) {
        while let Some(&Reverse((due, index))) = self.timers.peek() {
            if due > now {
                break;
            }
            self.timers.pop();
            let slot = &mut self.slots[index];
            match slot {
                Slot::Healthy(session) => {
                    session.in_heap = false;
                    session.pump(now, &mut self.ctx);
                }
                Slot::Faulty(fault) => {
                    if fault.armed == Some(due) {
                        fault.armed = None;
                    }
                    fault.on_timer(now, &mut self.ctx);
                }
            }
            schedule(slot, index, &self.ctx, now, &mut self.timers);
        }
    }

    /// Samples the intervals whose end has come (errors counted, connections open), and
    /// closes those no frame still to settle was scheduled in.
    fn end_intervals(&mut self, now: Instant) {
        let plan = self.ctx.plan;
        if now < plan.measure_start {
            return;
        }
        let errors = || self.ctx.stats.errors.values().sum::<u64>();
        if !self.window_begun {
            self.window_begun = true;
            let errors = errors();
            self.ctx.stats.intervals.begin(errors);
        }
        let elapsed = plan.offset(now);
        if self
            .ctx
            .stats
            .intervals
            .next_end()
            .is_none_or(|end| elapsed < end)
        {
            return;
        }
        let errors = errors();
        let open = self.ctx.open;
        self.ctx.stats.intervals.end_through(elapsed, errors, open);
        if now >= self.closed_at + CLOSE_EVERY {
            self.closed_at = now;
            let low = self
                .slots
                .iter()
                .filter_map(|slot| match slot {
                    Slot::Healthy(session) => session.earliest_unsettled(),
                    Slot::Faulty(_) => None,
                })
                .fold(now, Instant::min);
            self.ctx.stats.intervals.close_before(plan.offset(low));
        }
    }

    /// Stores this worker's counters for the live line, and hands it the latencies of the
    /// replies since the last time (a few times a second); nothing without a live line.
    fn publish(&mut self, progress: &Progress, now: Instant) {
        let stats = &mut self.ctx.stats;
        let Some(latency) = stats.live.as_mut() else {
            return;
        };
        progress.open.store(self.ctx.open, Ordering::Relaxed);
        progress
            .answered
            .store(stats.frames_answered, Ordering::Relaxed);
        progress.lost.store(stats.frames_lost, Ordering::Relaxed);
        progress
            .corrupt
            .store(stats.frames_corrupt, Ordering::Relaxed);
        if now < self.published_at + LIVE_EVERY {
            return;
        }
        self.published_at = now;
        progress
            .errors
            .store(stats.errors.values().sum(), Ordering::Relaxed);
        if latency.is_empty() {
            return;
        }
        // The lock is the live line's only other user, once a second.
        let mut shared = progress
            .latency
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match shared.as_mut() {
            // Same bounds on both sides: `add` cannot fail.
            Some(h) => drop(h.add(&*latency)),
            None => *shared = Some(latency.clone()),
        }
        latency.reset();
    }

    /// Whether the run is over for this worker: the drain is over, or nothing is left to
    /// wait for. A churn connection is never cut short: it keeps its whole deadline.
    fn is_over(&self, now: Instant) -> bool {
        let plan = self.ctx.plan;
        let idle = self.ctx.in_flight == 0 && self.ctx.busy_faults == 0;
        let nothing_to_open = self.to_open.is_empty() && self.churn.is_idle();
        if now >= plan.send_end && nothing_to_open && (idle || now >= plan.drain_end) {
            return true;
        }
        plan.frames_per_connection.is_some()
            && nothing_to_open
            && idle
            && !self.churn.scheduled(&self.ctx, now)
            && self.slots.iter().all(|slot| match slot {
                Slot::Healthy(session) => session.is_done(plan),
                Slot::Faulty(fault) => fault.is_done(),
            })
    }

    /// How long to sleep: until the nearest thing to do (at once if this turn's batch of
    /// connects was full), and at most [`MAX_SLEEP`].
    fn next_wake(&self, now: Instant, batch_full: bool) -> Duration {
        let plan = self.ctx.plan;
        let mut wake = if now < plan.send_end {
            plan.send_end
        } else {
            plan.drain_end
        };
        let opening = self.to_open.front().map(|&(_, due)| due);
        let deadline = self.connect_deadlines.front().map(|&(at, _)| at);
        let timer = self.timers.peek().map(|&Reverse((due, _))| due);
        let churn = self.churn.next_wake(&self.ctx, now);
        let interval_end =
            (self.ctx.stats.intervals.next_end()).map(|end| plan.measure_start + end);
        for at in [opening, deadline, timer, churn, interval_end]
            .into_iter()
            .flatten()
        {
            wake = wake.min(at);
        }
        if batch_full && (opening.is_some() || churn.is_some()) {
            wake = now;
        }
        let longest = if plan.live { LIVE_EVERY } else { MAX_SLEEP };
        wake.saturating_duration_since(now).min(longest)
    }

    /// Hands each event of the last poll to its connection.
    fn dispatch(&mut self, now: Instant) {
        for event in self.events.iter() {
            let index = event.token().0;
            if index >= CHURN_TOKENS {
                self.churn
                    .on_event(index - CHURN_TOKENS, now, &mut self.ctx);
                continue;
            }
            // A token always names its own slot (never removed, never reused by another).
            let Some(slot) = self.slots.get_mut(index) else {
                continue;
            };
            match slot {
                Slot::Healthy(session) => session.on_event(
                    event.is_readable() || event.is_read_closed() || event.is_error(),
                    event.is_writable() || event.is_write_closed(),
                    now,
                    &mut self.ctx,
                ),
                Slot::Faulty(fault) => fault.on_event(
                    event.is_readable(),
                    event.is_writable() || event.is_write_closed(),
                    event.is_read_closed() || event.is_error(),
                    now,
                    &mut self.ctx,
                ),
            }
            schedule(slot, index, &self.ctx, now, &mut self.timers);
        }
    }

    /// The end: whatever is still in flight is lost; every connection is closed.
    fn end_of_run(mut self, progress: &Progress) -> WorkerStats {
        let now = Instant::now();
        // The last interval's samples are of now, before the closes below.
        let errors: u64 = self.ctx.stats.errors.values().sum();
        let open = self.ctx.open;
        let ctx = &mut self.ctx;
        for slot in &mut self.slots {
            match slot {
                Slot::Healthy(session) => {
                    if let State::Connecting(_) = session.state() {
                        session.fail_connect("timed out (still connecting at the end)", ctx);
                    }
                    session.give_up(now, ctx);
                    session.shut(ctx);
                }
                Slot::Faulty(fault) => fault.end_of_run(ctx),
            }
        }
        self.churn.end_of_run(ctx);
        let plan = ctx.plan;
        // Every frame is settled now: no interval can receive another.
        if now >= plan.measure_start {
            ctx.stats.intervals.begin(errors);
        }
        ctx.stats.intervals.finish(plan.offset(now), errors, open);
        // The live line's last second: published at once, however recent the last time.
        self.published_at = plan.start;
        self.publish(progress, now);
        let stats = &self.ctx.stats;
        debug_assert_eq!(
            stats.frames_sent,
            stats.frames_answered + stats.frames_corrupt + stats.frames_lost,
            "every frame sent is settled once"
        );
        debug_assert_eq!(self.ctx.in_flight, 0, "every frame in flight is settled");
        debug_assert_eq!(self.ctx.busy_faults, 0, "every faulty cycle ended");
        debug_assert_eq!(
            stats.measured_replies,
            stats
                .intervals
                .slots()
                .iter()
                .map(|s| s.frames)
                .sum::<u64>(),
            "the intervals' frames add up to the measured replies"
        );
        debug_assert_eq!(
            stats.churn.attempted,
            stats.churn.ok + stats.churn.failed(),
            "every churn connection has one outcome: {:?}",
            stats.churn
        );
        self.ctx.stats
    }
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
    timers: &mut BinaryHeap<Reverse<(Instant, usize)>>,
) {
    match slot {
        Slot::Healthy(session) => {
            if session.in_heap {
                return;
            }
            if let Some(due) = session.next_due(ctx.plan, now) {
                timers.push(Reverse((due, index)));
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
                    timers.push(Reverse((wake, index)));
                    fault.armed = Some(wake);
                }
            }
        }
    }
}
