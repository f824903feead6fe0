//! What one reactor reports at an instant ([`Snapshot`]) and how long its loop turns take
//! ([`TurnHistogram`]): plain values, written by the reactor only. How a copy reaches a
//! reader on another thread is the server's business (`server::snapshot`).

use super::stats::Stats;

/// Upper bounds of the turn-duration buckets, in microseconds: 10 µs to 1 s in 1-2.5-5
/// steps, as Prometheus' default buckets go. A turn that answers one frame takes a few
/// microseconds; one that accepts a burst or reaps thousands of idle connections takes
/// milliseconds; a second means the reactor stalled. Longer turns land in `+Inf`.
pub const TURN_BUCKET_BOUNDS_US: [u64; 16] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
    500_000, 1_000_000,
];

/// How long each reactor turn took (from the poll's return to the next poll), as bucket
/// counts: plain integers, written by the reactor only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TurnHistogram {
    /// `counts[i]` is always the number of turns that took more than bound `i - 1` and at
    /// most bound `i` of [`TURN_BUCKET_BOUNDS_US`]; the last entry counts the longer ones.
    counts: [u64; TURN_BUCKET_BOUNDS_US.len() + 1],
    /// The sum of all observed durations, in microseconds.
    sum_us: u64,
}

impl TurnHistogram {
    /// Records one turn of `us` microseconds. At most 16 comparisons; short turns, the
    /// common case, stop at the first.
    pub fn observe(&mut self, us: u64) {
        let bucket = TURN_BUCKET_BOUNDS_US
            .iter()
            .position(|&bound| us <= bound)
            .unwrap_or(TURN_BUCKET_BOUNDS_US.len());
        self.counts[bucket] += 1;
        self.sum_us += us;
    }

    /// Each bucket's upper bound in microseconds (`None` for `+Inf`) and its own count
    /// (not cumulative).
    pub fn buckets(&self) -> impl Iterator<Item = (Option<u64>, u64)> + '_ {
        TURN_BUCKET_BOUNDS_US
            .iter()
            .map(|&bound| Some(bound))
            .chain(std::iter::once(None))
            .zip(self.counts.iter().copied())
    }

    /// Turns observed.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Total time of the turns observed, in microseconds.
    pub fn sum_us(&self) -> u64 {
        self.sum_us
    }
}

/// What one reactor reports: its counters, gauges and turn histogram at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The counters since start.
    pub stats: Stats,
    /// Connections open.
    pub connections_open: u64,
    /// Bytes charged to connections: their buffers (unfinished frames, unanswered input,
    /// unsent replies; capacities) and the kernel queues of those whose sockets refuse
    /// replies. The reactor's exact running total (`Budget::charged`).
    pub buffered_bytes: u64,
    /// The buffer-memory budget in force (`--max-buffer-memory`).
    pub max_buffer_memory: u64,
    /// How long the reactor's turns took.
    pub turns: TurnHistogram,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_inclusive_and_longer_turns_go_to_inf() {
        let mut h = TurnHistogram::default();
        for us in [0, 10, 11, 25, 1_000_000, 1_000_001, u64::MAX / 2] {
            h.observe(us);
        }
        let counts: Vec<(Option<u64>, u64)> = h.buckets().filter(|&(_, n)| n > 0).collect();
        assert_eq!(
            counts,
            vec![
                (Some(10), 2),
                (Some(25), 2),
                (Some(1_000_000), 1),
                (None, 2)
            ]
        );
        assert_eq!(h.count(), 7);
        assert_eq!(h.buckets().count(), TURN_BUCKET_BOUNDS_US.len() + 1);
    }

    #[test]
    fn bounds_ascend() {
        assert!(TURN_BUCKET_BOUNDS_US.windows(2).all(|w| w[0] < w[1]));
    }
}
