//! What a reactor tells readers of its counters: a [`Snapshot`] on request (through its
//! [`Publisher`]), and how long its loop turns take.
//!
//! # Invariants
//! - Nothing here runs per frame: a snapshot is copied once per request, and a turn is
//!   timed with the clock read the turn makes anyway (its timer expiry), one bucket
//!   increment, and only once a handle was taken.

use super::Reactor;
use crate::counters::{Snapshot, TurnHistogram};
use crate::server::snapshot::{Publisher, SnapshotHandle};

impl Reactor {
    /// A handle for reading snapshots of this reactor from elsewhere (another reactor's
    /// metrics endpoint, a test). The first call also starts timing the reactor's turns.
    pub fn snapshot_handle(&mut self) -> SnapshotHandle {
        let waker = self.waker.clone();
        self.endpoints
            .publisher
            .get_or_insert_with(|| Box::new(Publisher::new(waker)))
            .handle()
    }

    /// The waker's event: publishes a snapshot if a reader asked for one since the last,
    /// and answers the admin parts asked of this reactor. O(connections) at most; once per
    /// request, never per frame.
    pub(super) fn on_wake(&mut self) {
        if let Some(mut publisher) = self.endpoints.publisher.take() {
            publisher.serve(|turns| self.snapshot_now(turns));
            self.endpoints.publisher = Some(publisher);
        }
        self.serve_admin_asks();
    }

    /// This reactor's snapshot now, with its turn histogram so far (empty if turns are not
    /// timed).
    pub(super) fn own_snapshot(&self) -> Snapshot {
        match &self.endpoints.publisher {
            Some(publisher) => self.snapshot_now(publisher.turns()),
            None => self.snapshot_now(&TurnHistogram::default()),
        }
    }

    /// The loop has ended: publishes this reactor's last state for the metrics endpoint
    /// (a page during a drain shows a finished reactor's final counters).
    pub(super) fn publish_last(&mut self) {
        if let Some(publisher) = self.endpoints.publisher.take() {
            let last = self.snapshot_now(publisher.turns());
            publisher.finish(last);
        }
    }

    fn snapshot_now(&self, turns: &TurnHistogram) -> Snapshot {
        Snapshot {
            stats: self.cx.stats.clone(),
            connections_open: self.table.len() as u64,
            buffered_bytes: self.charged() as u64,
            max_buffer_memory: self.budget.total() as u64,
            turns: turns.clone(),
        }
    }

    /// The end of a loop turn begun at `start_us`, when turns are timed: its end is the
    /// clock read of the turn's timer expiry (`cx.now_us`), so timing costs no clock read
    /// of its own.
    pub(super) fn end_turn(&mut self, start_us: u64) {
        if let Some(publisher) = self.endpoints.publisher.as_deref_mut() {
            publisher.observe_turn(self.cx.now_us.saturating_sub(start_us));
        }
    }
}
