//! The admin endpoint's exchange with the other reactors: reactor 0, which serves the
//! endpoint, asks each sibling for its part of a listing or a close ([`Ask`]) and never
//! waits for it; the sibling answers ([`Part`]) on its own loop, when the ask's wake-up
//! reaches it. The same shape as the metrics snapshots' (`server::snapshot`), with a
//! question in each request: it knows nothing of the reactor, which holds an [`AdminDesk`]
//! and hands it the answers.
//!
//! ```text
//!   reactor 0 (an admin request)              reactor N
//!   ticket = ask(Ask, own waker) ───────────▶ WAKER event: asked > served?
//!     (asks += 1 under the lock; wake N)        take the asks; answer each (no lock held:
//!   back to its loop                             a scan, a close); store the parts;
//!                                  ◀───────────  wake each asker
//!   WAKER event: try_take(ticket) → Ready(Part), Pending, or Gone (N has ended)
//! ```
//!
//! # Invariants
//! - Only the desk's reactor answers, and each ask exactly once: the asks are taken out
//!   under the lock, so a ticket is answered by at most one `serve`.
//! - A ticket's part is taken at most once, and none is kept for an asker that left:
//!   [`AdminHandle::forget`] drops an ask not served yet or a part not taken yet, and one
//!   being answered right then is dropped as it is stored. So the exchange holds nothing
//!   for long: at most one part per admin connection per sibling.
//! - Once the desk is gone (its reactor ended), `closed` is set and every waiting or later
//!   ask is [`Taken::Gone`] (or refused), and its asker woken.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use mio::Waker;

use crate::admin::{CloseFilter, ConnectionRow, ListQuery};

/// What reactor 0 asks a sibling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// Its best `limit` connections for the listing (its own top N).
    List(ListQuery),
    /// Close the connections the filter matches (or count them, on a dry run).
    Close(CloseFilter),
}

/// A sibling's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Its rows, best first, at most the listing's limit.
    Rows(Vec<ConnectionRow>),
    /// How many of its connections the close matched.
    Matched(u64),
}

impl Part {
    /// How many connections a close's part matched (0 for a listing's).
    pub fn matched(&self) -> u64 {
        match self {
            Part::Matched(n) => *n,
            Part::Rows(_) => 0,
        }
    }
}

/// What became of an ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    /// Its part.
    Ready(Part),
    /// Not answered yet: the asker is woken when it is.
    Pending,
    /// The sibling has ended: no part will come.
    Gone,
}

/// What an asker and the answering reactor share.
struct Exchange {
    /// Tickets taken so far; only written under the lock (read without it to see that
    /// nothing was asked).
    asked: AtomicU64,
    slot: Mutex<Slot>,
}

/// Asks waiting, parts not taken yet.
#[derive(Default)]
struct Slot {
    /// Asks not taken by the reactor yet, in order.
    asks: Vec<Waiting>,
    /// Parts not taken by their askers yet, by ticket.
    parts: Vec<(u64, Part)>,
    /// Tickets forgotten while the reactor answered them: their parts are dropped as they
    /// are stored.
    forgotten: Vec<u64>,
    /// The reactor is gone: no part will come.
    closed: bool,
}

/// One ask waiting for the reactor.
struct Waiting {
    ticket: u64,
    ask: Ask,
    /// Woken once the part is stored (or the reactor is gone).
    notify: Arc<Waker>,
}

impl Exchange {
    fn lock(&self) -> MutexGuard<'_, Slot> {
        // Nothing that holds the lock can panic half-way through an update, so a poisoned
        // lock still guards a consistent slot.
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Asks one reactor for its part, from another reactor (reactor 0's admin endpoint).
#[derive(Clone)]
pub struct AdminHandle {
    exchange: Arc<Exchange>,
    /// The answering reactor's waker.
    waker: Arc<Waker>,
}

impl AdminHandle {
    /// Asks `ask` without waiting: the ticket to collect the part with
    /// [`AdminHandle::try_take`]; `notify` is woken once it is stored. `None` if the
    /// reactor has ended.
    pub fn ask(&self, ask: Ask, notify: &Arc<Waker>) -> Option<u64> {
        let mut slot = self.exchange.lock();
        if slot.closed {
            return None;
        }
        let ticket = self.exchange.asked.fetch_add(1, Ordering::SeqCst) + 1;
        slot.asks.push(Waiting {
            ticket,
            ask,
            notify: notify.clone(),
        });
        drop(slot);
        // A failed wake means the reactor's poll is gone: its desk's drop answers Gone.
        let _ = self.waker.wake();
        Some(ticket)
    }

    /// The part of `ticket`, once stored (taken: a second call finds it pending, or gone).
    pub fn try_take(&self, ticket: u64) -> Taken {
        let mut slot = self.exchange.lock();
        if let Some(at) = slot.parts.iter().position(|(t, _)| *t == ticket) {
            return Taken::Ready(slot.parts.swap_remove(at).1);
        }
        if slot.closed {
            Taken::Gone
        } else {
            Taken::Pending
        }
    }

    /// The asker of `ticket` has left (its connection closed, or it answered without this
    /// part): its ask or its part is dropped. Only for a ticket whose part was not taken.
    pub fn forget(&self, ticket: u64) {
        let mut slot = self.exchange.lock();
        if let Some(at) = slot.asks.iter().position(|w| w.ticket == ticket) {
            slot.asks.remove(at);
        } else if let Some(at) = slot.parts.iter().position(|(t, _)| *t == ticket) {
            slot.parts.swap_remove(at);
        } else if !slot.closed {
            // Being answered right now.
            slot.forgotten.push(ticket);
        }
    }
}

/// The answering reactor's side. Dropped with the reactor, which tells its askers it is
/// gone.
pub(super) struct AdminDesk {
    exchange: Arc<Exchange>,
    /// Tickets taken into answering so far (the fast check's copy of `asked`).
    served: u64,
}

impl AdminDesk {
    pub(super) fn new() -> AdminDesk {
        AdminDesk {
            exchange: Arc::new(Exchange {
                asked: AtomicU64::new(0),
                slot: Mutex::new(Slot::default()),
            }),
            served: 0,
        }
    }

    /// A handle for askers, which wake `waker` (this desk's reactor's).
    pub(super) fn handle(&self, waker: Arc<Waker>) -> AdminHandle {
        AdminHandle {
            exchange: self.exchange.clone(),
            waker,
        }
    }

    /// Answers every ask waiting (one atomic load when there is none), by `answer`, with
    /// no lock held meanwhile; stores the parts and wakes their askers.
    pub(super) fn serve(&mut self, mut answer: impl FnMut(Ask) -> Part) {
        if self.exchange.asked.load(Ordering::SeqCst) == self.served {
            return;
        }
        let asks = {
            let mut slot = self.exchange.lock();
            // Tickets are taken under this lock: every one counted here is in `asks`.
            self.served = self.exchange.asked.load(Ordering::SeqCst);
            std::mem::take(&mut slot.asks)
        };
        let answered: Vec<(u64, Part, Arc<Waker>)> = asks
            .into_iter()
            .map(|w| (w.ticket, answer(w.ask), w.notify))
            .collect();
        let mut notify: Vec<Arc<Waker>> = Vec::new();
        {
            let mut slot = self.exchange.lock();
            for (ticket, part, waker) in answered {
                if let Some(at) = slot.forgotten.iter().position(|t| *t == ticket) {
                    slot.forgotten.swap_remove(at);
                    continue;
                }
                slot.parts.push((ticket, part));
                if !notify.iter().any(|w| Arc::ptr_eq(w, &waker)) {
                    notify.push(waker);
                }
            }
        }
        for waker in notify {
            // A failed wake: that reactor's poll is gone, and its ask with it.
            let _ = waker.wake();
        }
    }
}

impl Drop for AdminDesk {
    fn drop(&mut self) {
        let mut slot = self.exchange.lock();
        slot.closed = true;
        slot.forgotten.clear();
        let waiting = std::mem::take(&mut slot.asks);
        drop(slot);
        for w in waiting {
            let _ = w.notify.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A desk on a poll of its own, its handle, and a second poll's waker for the asker.
    fn setup() -> (AdminDesk, AdminHandle, mio::Poll, Arc<Waker>, mio::Poll) {
        let reactor = mio::Poll::new().unwrap();
        let waker = Arc::new(Waker::new(reactor.registry(), mio::Token(0)).unwrap());
        let asker = mio::Poll::new().unwrap();
        let notify = Arc::new(Waker::new(asker.registry(), mio::Token(1)).unwrap());
        let desk = AdminDesk::new();
        let handle = desk.handle(waker);
        (desk, handle, reactor, notify, asker)
    }

    /// Whether `poll` has an event within 1 s (a waker's wake-up is immediate).
    fn woken(poll: &mut mio::Poll) -> bool {
        let mut events = mio::Events::with_capacity(4);
        poll.poll(&mut events, Some(Duration::from_secs(1)))
            .unwrap();
        !events.is_empty()
    }

    fn close(id: u64) -> Ask {
        Ask::Close(CloseFilter {
            id: Some(id),
            ..CloseFilter::default()
        })
    }

    #[test]
    fn an_ask_is_answered_on_the_reactors_turn_and_taken_once() {
        let (mut desk, handle, mut reactor, notify, mut asker) = setup();
        let ticket = handle.ask(close(7), &notify).unwrap();
        assert_eq!(handle.try_take(ticket), Taken::Pending);
        assert!(woken(&mut reactor), "the ask wakes the reactor");
        let mut seen = Vec::new();
        desk.serve(|ask| {
            seen.push(ask);
            Part::Matched(3)
        });
        assert_eq!(seen, [close(7)]);
        assert!(woken(&mut asker), "the part wakes the asker");
        assert_eq!(handle.try_take(ticket), Taken::Ready(Part::Matched(3)));
        assert_eq!(handle.try_take(ticket), Taken::Pending, "taken once");
        desk.serve(|_| panic!("nothing asked: nothing answered"));
    }

    #[test]
    fn each_ask_gets_its_own_part() {
        let (mut desk, handle, _reactor, notify, _asker) = setup();
        let tickets: Vec<u64> = (1..=3)
            .map(|id| handle.ask(close(id), &notify).unwrap())
            .collect();
        desk.serve(|ask| match ask {
            Ask::Close(f) => Part::Matched(f.id.unwrap() * 10),
            Ask::List(_) => Part::Rows(Vec::new()),
        });
        for (ticket, want) in tickets.into_iter().zip([10, 20, 30]).rev() {
            assert_eq!(handle.try_take(ticket), Taken::Ready(Part::Matched(want)));
        }
    }

    #[test]
    fn a_forgotten_ask_is_not_answered_and_a_forgotten_part_not_kept() {
        let (mut desk, handle, _reactor, notify, _asker) = setup();
        let early = handle.ask(close(1), &notify).unwrap();
        handle.forget(early);
        desk.serve(|_| panic!("a forgotten ask is answered"));
        let late = handle.ask(close(2), &notify).unwrap();
        desk.serve(|_| Part::Matched(1));
        handle.forget(late);
        assert_eq!(handle.try_take(late), Taken::Pending, "dropped");
        assert!(desk.exchange.lock().parts.is_empty());
    }

    #[test]
    fn an_ask_forgotten_while_it_is_answered_is_dropped_as_it_is_stored() {
        let (mut desk, handle, _reactor, notify, _asker) = setup();
        let ticket = handle.ask(close(1), &notify).unwrap();
        desk.serve(|_| {
            handle.forget(ticket);
            Part::Matched(1)
        });
        let slot = desk.exchange.lock();
        assert!(slot.parts.is_empty() && slot.forgotten.is_empty());
    }

    #[test]
    fn once_the_reactor_is_gone_asks_are_refused_and_waiting_ones_gone() {
        let (desk, handle, _reactor, notify, mut asker) = setup();
        let ticket = handle.ask(close(1), &notify).unwrap();
        drop(desk);
        assert!(woken(&mut asker), "the asker is told");
        assert_eq!(handle.try_take(ticket), Taken::Gone);
        assert_eq!(handle.ask(close(2), &notify), None);
    }
}
