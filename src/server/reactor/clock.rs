//! Clock: a reactor's time, in microseconds since its start, and the timer wheel's ticks.
//!
//! A tick is 1/20 of the idle timeout, between 1 ms and 100 ms: an idle close is at most
//! one tick late, so at most 5% late (and at most 100 ms late with a long timeout).
//! Deadlines round up to the next tick (never early); a poll sees every tick that has
//! fully begun.
//!
//! The clock starts one idle timeout before the reactor does (where the system's clock
//! allows), so that a connection an upgrade moved in, whose last progress was up to a
//! timeout ago in the old process, has a last progress this clock can say (its times are
//! unsigned), and its idle deadline continues.

use std::time::{Duration, Instant};

use crate::timer_wheel::Tick;

/// The coarsest tick: an idle close is at most one tick late, and 100 ms is 5% of the
/// default 2 s timeout.
const MAX_TICK: Duration = Duration::from_millis(100);
/// The finest tick.
const MIN_TICK: Duration = Duration::from_millis(1);
/// Ticks per idle timeout: one tick late is at most 1/20 = 5% late.
const TICKS_PER_TIMEOUT: u32 = 20;

/// `d` in microseconds, `u64::MAX` if longer (584,000 years: never, for a deadline).
pub(super) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Turns instants into wheel ticks.
pub(super) struct Clock {
    start: Instant,
    tick_us: u64,
}

impl Clock {
    /// A clock for a reactor whose connections go idle after `idle_timeout`.
    pub(super) fn new(idle_timeout: Duration) -> Clock {
        let tick = (idle_timeout / TICKS_PER_TIMEOUT).clamp(MIN_TICK, MAX_TICK);
        let now = Instant::now();
        Clock {
            start: now.checked_sub(idle_timeout).unwrap_or(now),
            tick_us: micros(tick),
        }
    }

    /// Microseconds since the clock's start.
    pub(super) fn now_us(&self) -> u64 {
        micros(self.start.elapsed())
    }

    /// One tick, in microseconds.
    pub(super) fn tick_us(&self) -> u64 {
        self.tick_us
    }

    /// The tick in progress at `us` (ticks that have fully begun).
    pub(super) fn tick_at(&self, us: u64) -> Tick {
        us / self.tick_us
    }

    /// The first tick that begins at or after `us`: a deadline rounded up, never early.
    pub(super) fn tick_after(&self, us: u64) -> Tick {
        us.div_ceil(self.tick_us)
    }

    /// From `now_us` until `tick` begins.
    pub(super) fn until_tick(&self, tick: Tick, now_us: u64) -> Duration {
        Duration::from_micros(tick.saturating_mul(self.tick_us).saturating_sub(now_us))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tick_is_a_twentieth_of_the_timeout_within_1_and_100_ms() {
        assert_eq!(Clock::new(Duration::from_secs(2)).tick_us(), 100_000);
        assert_eq!(Clock::new(Duration::from_millis(400)).tick_us(), 20_000);
        assert_eq!(Clock::new(Duration::from_secs(3600)).tick_us(), 100_000);
        assert_eq!(Clock::new(Duration::from_millis(5)).tick_us(), 1_000);
    }

    #[test]
    fn deadlines_round_up_and_polls_see_ticks_that_have_begun() {
        let clock = Clock::new(Duration::from_secs(2));
        assert_eq!(clock.tick_at(199_999), 1);
        assert_eq!(clock.tick_at(200_000), 2);
        assert_eq!(clock.tick_after(200_000), 2);
        assert_eq!(clock.tick_after(200_001), 3);
        assert_eq!(clock.until_tick(3, 250_000), Duration::from_millis(50));
        assert_eq!(clock.until_tick(2, 250_000), Duration::ZERO);
    }

    #[test]
    fn the_clock_starts_one_idle_timeout_back() {
        let clock = Clock::new(Duration::from_secs(2));
        assert!(clock.now_us() >= 2_000_000, "{}", clock.now_us());
    }

    #[test]
    fn a_duration_past_u64_micros_is_never() {
        assert_eq!(micros(Duration::MAX), u64::MAX);
        assert_eq!(micros(Duration::from_millis(3)), 3_000);
    }
}
