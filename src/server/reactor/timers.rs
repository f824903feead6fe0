//! Timers: a reactor's clock, its wheel of deadlines, and the durations the deadlines are
//! set by (idle, linger, the shutdown's linger). Every timer the reactor arms goes through
//! here, named by a [`TimerKey`].
//!
//! # Invariants
//! - Deadlines are rounded up to the wheel's next tick ([`Clock::tick_after`]): a timer
//!   never fires early, and at most one tick late.
//! - The wheel is polled with the tick of the same clock reading the expiries are judged
//!   by, so an idle check never re-arms a deadline the wheel considers passed.

use std::time::Duration;

use super::clock::{micros, Clock};
use super::timer_key::TimerKey;
use crate::counters::CloseReason;
use crate::timer_wheel::{TimerId, TimerWheel};

/// A reactor's clock and deadlines.
pub(super) struct Timers {
    clock: Clock,
    wheel: TimerWheel,
    /// `--idle-timeout`: a connection without progress for this long is closed.
    idle_us: u64,
    /// `--linger`: how long a lingering close waits for the peer's EOF.
    linger_us: u64,
    /// How long a shutdown's lingering closes may last: the grace period, or the ordinary
    /// linger when an upgrade's drain has had the grace already.
    shutdown_linger: Duration,
}

impl Timers {
    /// Timers for `timers` entries at most, whose wheel turns once per `idle` (so polls
    /// touch only entries that expire).
    pub(super) fn new(idle: Duration, linger: Duration, grace: Duration, timers: usize) -> Timers {
        let clock = Clock::new(idle);
        let idle_us = micros(idle);
        let slots = usize::try_from((idle_us / clock.tick_us()).saturating_add(2).min(1 << 16))
            .unwrap_or(1 << 16);
        Timers {
            wheel: TimerWheel::with_capacity(slots, timers),
            clock,
            idle_us,
            linger_us: micros(linger),
            shutdown_linger: grace,
        }
    }

    /// Microseconds since the clock's start: read only where a turn's time is taken.
    pub(super) fn now_us(&self) -> u64 {
        self.clock.now_us()
    }

    /// One tick, in microseconds: the finest a deadline can be.
    pub(super) fn tick_us(&self) -> u64 {
        self.clock.tick_us()
    }

    /// Arms `key` for the first tick at or after `deadline_us`.
    pub(super) fn arm_at(&mut self, deadline_us: u64, key: TimerKey) -> TimerId {
        self.wheel
            .arm(self.clock.tick_after(deadline_us), key.to_value())
    }

    /// Arms `key` for `after` from now (a fresh clock reading: the server's own timers).
    pub(super) fn arm_after(&mut self, after: Duration, key: TimerKey) -> TimerId {
        let at = self.clock.now_us().saturating_add(micros(after));
        self.arm_at(at, key)
    }

    /// Cancels an armed timer (never `TimerId::NONE`, never one that fired).
    pub(super) fn cancel(&mut self, id: TimerId) {
        self.wheel.cancel(id);
    }

    /// Moves every timer due at `now_us` into `expired`, as wheel values.
    pub(super) fn expire(&mut self, now_us: u64, expired: &mut Vec<u32>) {
        self.wheel.poll(self.clock.tick_at(now_us), expired);
    }

    /// How long from `now_us` until the next timer is due; `None` with none armed.
    pub(super) fn until_next(&self, now_us: u64) -> Option<Duration> {
        self.wheel
            .next_expiration()
            .map(|tick| self.clock.until_tick(tick, now_us))
    }

    /// When a connection whose last progress was at `last_progress_us` goes idle.
    pub(super) fn idle_deadline(&self, last_progress_us: u64) -> u64 {
        last_progress_us.saturating_add(self.idle_us)
    }

    /// When a lingering close begun at `now_us` for `reason` gives up waiting: a
    /// shutdown's lasts the shutdown's linger (replies owed may take that long).
    pub(super) fn linger_deadline(&self, now_us: u64, reason: CloseReason) -> u64 {
        let linger_us = if reason == CloseReason::Shutdown {
            micros(self.shutdown_linger)
        } else {
            self.linger_us
        };
        now_us.saturating_add(linger_us)
    }

    /// A shutdown begins: its lingering closes last at most `linger`.
    pub(super) fn set_shutdown_linger(&mut self, linger: Duration) {
        self.shutdown_linger = linger;
    }

    /// How long a shutdown's lingering closes may last.
    pub(super) fn shutdown_linger(&self) -> Duration {
        self.shutdown_linger
    }
}
