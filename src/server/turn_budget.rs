//! The turn's work budget: how much one loop turn reads and answers before every read
//! shrinks and the ready list waits for the next turn. Pure: it is handed the reactor's
//! frame and byte counters, never a socket or a clock, so the same input always gives
//! the same turns (under callgrind too).
//!
//! A turn's work is counted in frames answered plus bytes read / [`BYTES_PER_FRAME_COST`]:
//! an empty frame costs its reply, its scan and its share of a write, where a byte of a
//! large frame costs a copy in and a copy out. A flood of empty frames (one frame per byte)
//! and a healthy load of megabyte frames both reach [`TURN_WORK_BUDGET`] after a few
//! milliseconds of answering, where a budget of bytes alone would either let the first
//! run long or throttle the second.
//!
//! # Invariants
//! - The work is looked at only when `bytes_in` reaches `check_at`: every
//!   [`CHECK_EVERY_BYTES`], so a turn of short reads (the common path) never looks, and a
//!   connection event pays one comparison ([`TurnBudget::check_due`]).
//! - Once the budget is spent, the turn is pressed (`check_at` is `u64::MAX`) until
//!   [`TurnBudget::start`]: a turn is pressed at most once, and never looked at again.

/// The work one turn may do before it is pressed, in frame-equivalents. Under 500 flooders
/// of empty frames the longest turns with it were 10-50 ms, against 100-250 ms without
/// (BENCHMARKS.md section 13); a healthy turn of 1,000 connections at pipeline 32 (32 Ki
/// frames of 33 bytes) does under a fifth of it, so it is never pressed.
pub const TURN_WORK_BUDGET: u64 = 256 * 1024;

/// Bytes read that count as much as answering one frame: 64, an estimate (a frame's fixed
/// cost, its reply and its share of a write, against a byte's copy in and out), so 16 MiB
/// of large frames fill the budget as 256 Ki empty ones do.
pub const BYTES_PER_FRAME_COST: u64 = 64;

/// Bytes read between two looks at the work done: 64 KiB, at most 64 Ki frames, a
/// quarter of the budget.
pub const CHECK_EVERY_BYTES: u64 = 64 * 1024;

/// The most one read takes once the turn is pressed: with four reads an event, 512 bytes,
/// room for a healthy client's pipelined frames, and at most 512 empty frames of a
/// flooder's before it yields to the ready list.
pub const PRESSED_READ_LEN: usize = 128;

/// One turn's budget: see the module docs.
#[derive(Debug, Clone, Default)]
pub struct TurnBudget {
    /// `bytes_in` at which the work is next looked at; `u64::MAX` once pressed.
    check_at: u64,
    /// The frame and byte counters at the turn's start.
    frames_at_start: u64,
    bytes_at_start: u64,
}

impl TurnBudget {
    /// A new turn, at these counters.
    #[inline]
    pub fn start(&mut self, frames: u64, bytes_in: u64) {
        self.check_at = bytes_in + CHECK_EVERY_BYTES;
        self.frames_at_start = frames;
        self.bytes_at_start = bytes_in;
    }

    /// Whether enough was read since the last look to look again
    /// ([`TurnBudget::check`]).
    #[inline(always)]
    pub fn check_due(&self, bytes_in: u64) -> bool {
        bytes_in >= self.check_at
    }

    /// Looks at the work done this turn: past [`TURN_WORK_BUDGET`], the turn is pressed.
    #[cold]
    #[inline(never)]
    pub fn check(&mut self, frames: u64, bytes_in: u64) {
        let work = (frames - self.frames_at_start)
            + (bytes_in - self.bytes_at_start) / BYTES_PER_FRAME_COST;
        if work >= TURN_WORK_BUDGET {
            self.check_at = u64::MAX;
        } else {
            self.check_at = bytes_in + CHECK_EVERY_BYTES;
        }
    }

    /// Whether the turn has done its work: reads are to be short ([`PRESSED_READ_LEN`]),
    /// and the ready list waits.
    #[inline]
    pub fn pressed(&self) -> bool {
        self.check_at == u64::MAX
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `reads` of (bytes, frames) through a turn as the reactor does: a look when
    /// due before each; returns after how many reads the turn was pressed.
    fn pressed_after(reads: impl Iterator<Item = (u64, u64)>) -> Option<usize> {
        let mut budget = TurnBudget::default();
        let (mut frames, mut bytes) = (1_000, 5_000); // counters run across turns
        budget.start(frames, bytes);
        for (i, (b, f)) in reads.enumerate() {
            if budget.check_due(bytes) {
                budget.check(frames, bytes);
            }
            if budget.pressed() {
                return Some(i);
            }
            bytes += b;
            frames += f;
        }
        None
    }

    #[test]
    fn short_reads_never_look_and_never_press() {
        let mut budget = TurnBudget::default();
        budget.start(0, 0);
        assert!(!budget.check_due(CHECK_EVERY_BYTES - 1));
        assert!(budget.check_due(CHECK_EVERY_BYTES));
        // 10,000 events of 40-byte frames: 400 KB, 10,000 frames: far under the budget.
        assert_eq!(pressed_after((0..10_000).map(|_| (40, 1))), None);
    }

    #[test]
    fn a_flood_of_empty_frames_is_pressed_once_it_has_done_the_budget() {
        // 32 KiB reads of TABs: 32 Ki frames each.
        let reads = (0..100).map(|_| (32 * 1024, 32 * 1024));
        let after = pressed_after(reads).expect("pressed");
        // Looked at every 64 KiB: pressed at the first look at or past the budget.
        let read = after as u64 * 32 * 1024;
        assert!(read >= TURN_WORK_BUDGET * 64 / 65, "{read}");
        assert!(read <= TURN_WORK_BUDGET + CHECK_EVERY_BYTES, "{read}");
    }

    #[test]
    fn large_frames_press_after_16_mib() {
        let reads = (0..10_000).map(|_| (64 * 1024, 1));
        let after = pressed_after(reads).expect("pressed");
        let read = after as u64 * 64 * 1024;
        let mib = 1024 * 1024;
        assert!((15 * mib..=17 * mib).contains(&read), "{read}");
    }

    #[test]
    fn a_turn_is_pressed_until_the_next_turn() {
        let mut budget = TurnBudget::default();
        budget.start(0, 0);
        budget.check(TURN_WORK_BUDGET, 0);
        assert!(budget.pressed());
        assert!(
            !budget.check_due(u64::MAX - 1),
            "pressed once: no more looks"
        );
        budget.start(TURN_WORK_BUDGET, 0);
        assert!(!budget.pressed());
    }

    #[test]
    fn the_budget_counts_this_turn_only() {
        let mut budget = TurnBudget::default();
        budget.start(0, 0);
        budget.check(TURN_WORK_BUDGET - 1, 0);
        assert!(!budget.pressed());
        // The next turn starts where this one ended: its work begins at zero.
        budget.start(TURN_WORK_BUDGET - 1, 0);
        budget.check(TURN_WORK_BUDGET, 0);
        assert!(!budget.pressed());
        budget.check(2 * TURN_WORK_BUDGET - 1, 0);
        assert!(budget.pressed(), "exactly the budget presses");
    }
}
