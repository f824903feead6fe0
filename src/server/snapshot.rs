//! Snapshot: the reactor's counters, gauges and turn-duration histogram, copied on request
//! for a reader elsewhere (reactor 0's metrics endpoint gathering its siblings', a test,
//! the stats logger), at no cost per frame. It knows nothing of the reactor: the reactor
//! holds a [`Publisher`] and hands it the copy.
//!
//! The reactor keeps plain integers ([`Stats`](crate::counters::Stats),
//! [`TurnHistogram`]) that only it writes. A reader asks for a copy through a [`SnapshotHandle`]: it takes a ticket
//! (one atomic increment per request) and wakes the reactor with the `mio::Waker`. On the
//! waker's event the reactor sees tickets it has not served, copies its state into the
//! shared slot under a mutex, and notifies. A thread waits on a condition variable,
//! bounded by a timeout ([`SnapshotHandle::snapshot`]); a reactor never waits: it gives its
//! own waker with the request and collects the copy when woken
//! ([`SnapshotHandle::request`], [`SnapshotHandle::try_take`]). So counters are exact,
//! nothing is shared per frame (no atomic, no lock), and when nobody scrapes the only cost
//! is the turn histogram: one bucket increment per loop turn, and only when a handle was
//! ever taken (`--metrics`).
//!
//! ```text
//!   reader                                 reactor N
//!   ticket = requests += 1; wake() ──────▶ WAKER event: requests > served?
//!   thread: wait(served >= ticket, timeout) copy Stats, gauges, histogram → slot
//!   reactor 0: back to its loop            served = requests; notify_all;
//!                         ◀────────────── wake the reactor that asked
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

use crate::counters::{Snapshot, TurnHistogram};

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
    /// A reactor that asked without waiting ([`SnapshotHandle::request`]): woken, once,
    /// when a snapshot is published or the reactor is gone.
    notify: Option<Arc<Waker>>,
    /// The reactor's last state, published as its loop ended ([`Publisher::finish`]):
    /// what a request without waiting gets once it is gone (nothing changes after).
    last: Option<Snapshot>,
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

/// What became of a request made with [`SnapshotHandle::request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    /// The snapshot, taken after the request.
    Ready(Box<Snapshot>),
    /// Not served yet: the requester's waker is woken when it is.
    Pending,
    /// The reactor is gone: no snapshot will come.
    Gone,
}

impl SnapshotHandle {
    /// A snapshot taken after this call began, or `None` if the server did not answer
    /// within `timeout` (stalled) or is no longer running. Blocks: for other threads
    /// (tests, the stats logger), never for a reactor (see [`SnapshotHandle::request`]).
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

    /// Asks for a snapshot without waiting: returns the ticket to collect it with
    /// [`SnapshotHandle::try_take`], and `notify` is woken once it is published (or the
    /// reactor is gone). For a reactor gathering its siblings' snapshots: it never blocks
    /// on them. Once the reactor has ended, ticket 0, for its last state at once; `None`
    /// if it ended without one (a panic).
    pub fn request(&self, notify: &Arc<Waker>) -> Option<u64> {
        let mut slot = self.exchange.lock();
        if slot.closed {
            return slot.last.is_some().then_some(0);
        }
        slot.notify = Some(notify.clone());
        let ticket = self.exchange.requests.fetch_add(1, Ordering::SeqCst) + 1;
        drop(slot);
        self.waker.wake().ok()?;
        Some(ticket)
    }

    /// The snapshot for `ticket` (from [`SnapshotHandle::request`]), if published; once
    /// the reactor has ended, its last state.
    pub fn try_take(&self, ticket: u64) -> Taken {
        let slot = self.exchange.lock();
        match (&slot.snapshot, slot.served >= ticket, &slot.last) {
            (Some(snapshot), true, _) => Taken::Ready(Box::new(snapshot.clone())),
            (_, _, Some(last)) if slot.closed => Taken::Ready(Box::new(last.clone())),
            _ if slot.closed => Taken::Gone,
            _ => Taken::Pending,
        }
    }
}

/// The reactor's side: serves tickets and keeps the turn histogram. Dropped with the
/// reactor, which tells waiting readers the server is gone.
pub(super) struct Publisher {
    exchange: Arc<Exchange>,
    /// The reactor's waker, which readers wake with their tickets.
    waker: Arc<Waker>,
    /// Tickets answered so far (the reactor's copy of `Slot::served`).
    served: u64,
    /// The turn-duration histogram.
    turns: TurnHistogram,
}

impl Publisher {
    /// The publisher of a reactor woken by `waker`.
    pub(super) fn new(waker: Arc<Waker>) -> Publisher {
        Publisher {
            exchange: Arc::new(Exchange {
                requests: AtomicU64::new(0),
                slot: Mutex::new(Slot {
                    served: 0,
                    snapshot: None,
                    closed: false,
                    notify: None,
                    last: None,
                }),
                published: Condvar::new(),
            }),
            waker,
            served: 0,
            turns: TurnHistogram::default(),
        }
    }

    /// A handle for readers on other threads.
    pub(super) fn handle(&self) -> SnapshotHandle {
        SnapshotHandle {
            exchange: self.exchange.clone(),
            waker: self.waker.clone(),
        }
    }

    /// Publishes `take(turns)` if a reader asked since the last time (one atomic load
    /// otherwise), and wakes a reactor waiting for it.
    pub(super) fn serve(&mut self, take: impl FnOnce(&TurnHistogram) -> Snapshot) {
        let wanted = self.exchange.requests.load(Ordering::SeqCst);
        if wanted == self.served {
            return; // a shutdown's wake-up, or tickets already served
        }
        let snapshot = take(&self.turns);
        self.served = wanted;
        let mut slot = self.exchange.lock();
        slot.snapshot = Some(snapshot);
        slot.served = wanted;
        // Tickets are taken under this lock: if one came after `wanted` was read, its
        // waker stays for the publication its own wake-up brings (woken now, its asker
        // would find it unserved and never be woken again).
        let all_served = self.exchange.requests.load(Ordering::SeqCst) == wanted;
        let notify = if all_served { slot.notify.take() } else { None };
        drop(slot);
        self.exchange.published.notify_all();
        if let Some(notify) = notify {
            // A failed wake: that reactor's poll is gone, and so is its request.
            let _ = notify.wake();
        }
    }

    /// Records one loop turn of `us` microseconds.
    pub(super) fn observe_turn(&mut self, us: u64) {
        self.turns.observe(us);
    }

    /// The turn histogram so far.
    pub(super) fn turns(&self) -> &TurnHistogram {
        &self.turns
    }
}

impl Publisher {
    /// The reactor's loop has ended: `last` is its final state, for requests without
    /// waiting from now on (blocking readers get `None`, as from any ended reactor).
    pub(super) fn finish(self, last: Snapshot) {
        self.exchange.lock().last = Some(last);
        // Dropped: closed, and whoever waits is woken.
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let mut slot = self.exchange.lock();
        slot.closed = true;
        let notify = slot.notify.take();
        drop(slot);
        self.exchange.published.notify_all();
        if let Some(notify) = notify {
            let _ = notify.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A publisher on a poll of its own, and a second poll's waker for the asker.
    fn pair() -> (Publisher, mio::Poll, Arc<Waker>, mio::Poll) {
        let reactor = mio::Poll::new().unwrap();
        let waker = Arc::new(Waker::new(reactor.registry(), mio::Token(0)).unwrap());
        let asker = mio::Poll::new().unwrap();
        let notify = Arc::new(Waker::new(asker.registry(), mio::Token(1)).unwrap());
        (Publisher::new(waker), reactor, notify, asker)
    }

    /// Whether `poll` has an event within 1 s (a waker's wake-up is immediate).
    fn woken(poll: &mut mio::Poll) -> bool {
        let mut events = mio::Events::with_capacity(4);
        poll.poll(&mut events, Some(Duration::from_secs(1)))
            .unwrap();
        !events.is_empty()
    }

    #[test]
    fn a_request_without_waiting_is_collected_once_published_and_its_asker_woken() {
        let (mut publisher, mut reactor, notify, mut asker) = pair();
        let handle = publisher.handle();
        let ticket = handle.request(&notify).unwrap();
        assert_eq!(handle.try_take(ticket), Taken::Pending);
        assert!(woken(&mut reactor), "the reactor is woken by the request");
        publisher.serve(|_| Snapshot {
            connections_open: 3,
            ..Snapshot::default()
        });
        assert!(woken(&mut asker), "the asker is woken by the publication");
        let Taken::Ready(snapshot) = handle.try_take(ticket) else {
            panic!("not published")
        };
        assert_eq!(snapshot.connections_open, 3);
        // A later ticket is not served by the earlier copy.
        let later = handle.request(&notify).unwrap();
        assert_eq!(handle.try_take(later), Taken::Pending);
    }

    #[test]
    fn a_request_to_a_finished_reactor_gets_its_last_state() {
        let (publisher, _reactor, notify, mut asker) = pair();
        let handle = publisher.handle();
        let ticket = handle.request(&notify).unwrap();
        let last = Snapshot {
            connections_open: 7,
            ..Snapshot::default()
        };
        publisher.finish(last.clone());
        assert!(woken(&mut asker));
        assert_eq!(
            handle.try_take(ticket),
            Taken::Ready(Box::new(last.clone()))
        );
        let later = handle.request(&notify).unwrap();
        assert_eq!(handle.try_take(later), Taken::Ready(Box::new(last)));
        assert_eq!(
            handle.snapshot(Duration::from_secs(1)),
            None,
            "blocking: gone"
        );
    }

    #[test]
    fn a_request_to_a_gone_reactor_is_gone_and_its_asker_woken() {
        let (publisher, _reactor, notify, mut asker) = pair();
        let handle = publisher.handle();
        let ticket = handle.request(&notify).unwrap();
        drop(publisher);
        assert!(woken(&mut asker));
        assert_eq!(handle.try_take(ticket), Taken::Gone);
        assert_eq!(handle.request(&notify), None);
    }
}
