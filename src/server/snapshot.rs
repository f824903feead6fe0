//! Snapshot: the reactor's counters, gauges and turn-duration histogram, copied on request
//! for a reader on another thread (the metrics endpoint), at no cost per frame.
//!
//! The reactor keeps plain integers ([`Stats`], [`TurnHistogram`]) that only it writes, as
//! it always did. A reader asks for a copy through a [`SnapshotHandle`]: it takes a ticket
//! (one atomic increment per request), wakes the reactor with the `mio::Waker`, and waits
//! on a condition variable, bounded by a timeout. On the waker's event the reactor sees
//! tickets it has not served, copies its state into the shared slot under a mutex, and
//! notifies. So counters are exact, nothing is shared per frame (no atomic, no lock), and
//! when nobody scrapes the only cost is the turn histogram: one clock read per loop turn,
//! and only when a handle was ever taken (`--metrics`).
//!
//! ```text
//!   reader thread                         reactor thread
//!   ticket = requests += 1; wake() ──────▶ WAKER event: requests > served?
//!   wait(slot.served >= ticket, timeout)   copy Stats, gauges, histogram → slot
//!                         ◀────────────── served = requests; notify_all
//! ```
//!
//! # Invariants
//! - Only the reactor writes the slot's snapshot and `served`, and `served` only grows.
//! - A snapshot published with `served >= n` was copied after ticket `n` was taken, so it
//!   holds every frame counted before the request was made (what "exact" means here).
//! - Once the reactor is gone (the [`Publisher`] dropped), `closed` is set and every
//!   waiting or later request returns `None` at once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use mio::Waker;

use super::reactor::Reactor;
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
    /// Bytes held in connection buffers (unfinished frames, unanswered input, unsent
    /// replies; capacities): the reactor's exact running total.
    pub buffered_bytes: u64,
    /// The buffer-memory budget in force (`--max-buffer-memory`).
    pub max_buffer_memory: u64,
    /// How long the reactor's turns took.
    pub turns: TurnHistogram,
}

/// What a reader and the reactor share.
struct Exchange {
    /// Tickets taken by readers so far.
    requests: AtomicU64,
    /// The latest snapshot, guarded.
    slot: Mutex<Slot>,
    /// Notified when a snapshot is published or the reactor is gone.
    published: Condvar,
}

/// The latest snapshot and how far the reactor has served.
struct Slot {
    /// Every ticket up to this one has been answered by `snapshot`.
    served: u64,
    /// The latest snapshot published; `None` before the first.
    snapshot: Option<Snapshot>,
    /// The reactor is gone: no snapshot will come.
    closed: bool,
}

impl Exchange {
    fn lock(&self) -> MutexGuard<'_, Slot> {
        // Nothing that holds the lock can panic half-way through an update, so a poisoned
        // lock still guards a consistent slot.
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Asks a running server for a [`Snapshot`], from any thread.
#[derive(Clone)]
pub struct SnapshotHandle {
    exchange: Arc<Exchange>,
    waker: Arc<Waker>,
}

impl SnapshotHandle {
    /// A snapshot taken after this call began, or `None` if the server did not answer
    /// within `timeout` (stalled) or is no longer running.
    pub fn snapshot(&self, timeout: Duration) -> Option<Snapshot> {
        let deadline = Instant::now() + timeout;
        let mut slot = self.exchange.lock();
        if slot.closed {
            return None;
        }
        let ticket = self.exchange.requests.fetch_add(1, Ordering::SeqCst) + 1;
        // A failed wake means the poll is gone with the server.
        self.waker.wake().ok()?;
        while slot.served < ticket && !slot.closed {
            let left = deadline.checked_duration_since(Instant::now())?;
            slot = self
                .exchange
                .published
                .wait_timeout(slot, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        if slot.served < ticket {
            return None;
        }
        slot.snapshot.clone()
    }
}

/// The reactor's side: serves tickets and keeps the turn histogram. Dropped with the
/// server, which tells waiting readers the server is gone.
pub(super) struct Publisher {
    exchange: Arc<Exchange>,
    /// Tickets answered so far (the reactor's copy of `Slot::served`).
    served: u64,
    /// The turn-duration histogram.
    turns: TurnHistogram,
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.exchange.lock().closed = true;
        self.exchange.published.notify_all();
    }
}

impl Reactor {
    /// A handle for reading snapshots of this server from other threads (the metrics
    /// endpoint). The first call also starts timing the reactor's turns.
    pub fn snapshot_handle(&mut self) -> SnapshotHandle {
        let publisher = self.metrics.get_or_insert_with(|| {
            Box::new(Publisher {
                exchange: Arc::new(Exchange {
                    requests: AtomicU64::new(0),
                    slot: Mutex::new(Slot {
                        served: 0,
                        snapshot: None,
                        closed: false,
                    }),
                    published: Condvar::new(),
                }),
                served: 0,
                turns: TurnHistogram::default(),
            })
        });
        SnapshotHandle {
            exchange: publisher.exchange.clone(),
            waker: self.waker.clone(),
        }
    }

    /// The waker's event: publishes a snapshot if a reader asked for one since the last.
    /// O(connections), for the buffered-bytes sum; once per request, never per frame.
    pub(super) fn on_wake(&mut self) {
        let charged = self.charged();
        let Some(publisher) = self.metrics.as_deref_mut() else {
            return;
        };
        let wanted = publisher.exchange.requests.load(Ordering::SeqCst);
        if wanted == publisher.served {
            return; // a shutdown request, or tickets already served
        }
        let snapshot = Snapshot {
            stats: self.cx.stats.clone(),
            connections_open: self.connections.len() as u64,
            buffered_bytes: charged as u64,
            max_buffer_memory: self.buffer_budget as u64,
            turns: publisher.turns.clone(),
        };
        publisher.served = wanted;
        let mut slot = publisher.exchange.lock();
        slot.snapshot = Some(snapshot);
        slot.served = wanted;
        drop(slot);
        publisher.exchange.published.notify_all();
    }

    /// The end of a loop turn begun at `start_us`: records its duration when metrics are
    /// on (one clock read), nothing otherwise.
    pub(super) fn end_turn(&mut self, start_us: u64) {
        if let Some(publisher) = self.metrics.as_deref_mut() {
            let now_us = self.clock.now_us();
            publisher.turns.observe(now_us.saturating_sub(start_us));
        }
    }
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
