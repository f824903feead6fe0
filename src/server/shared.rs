//! Shared: the little the reactors of one server share, touched only where a connection
//! is admitted or closed (the connection count, and the count per source under
//! `--max-connections-per-source`), where a reactor's buffer lease grows or shrinks (a mebibyte at a
//! time), and at shutdown. Nothing here is on the path of a frame.
//!
//! # Invariants
//! - `open` is always the number of connections admitted and not yet released, over all
//!   reactors; it never exceeds `max_connections` for long: an admission that would pass
//!   it is undone at once (with a per-source limit, it is never raised past it at all).
//! - With a per-source limit, the [`SourceTable`] always counts exactly the connections
//!   admitted and not yet released, by source: an admission is counted in both or in
//!   neither, under the table's lock, and a release names the source its admission named.
//! - `unleased` plus every reactor's lease plus what reactor 0 leased for the HTTP
//!   endpoints (their reserve and past it) is always the buffer budget: those sums never
//!   exceed `--max-buffer-memory`, and each reactor's buffers stay within its lease (the
//!   endpoints' within theirs), so the whole process stays within the budget.
//! - The server's lifecycle (its upgrade and its shutdown) is one [`ServerState`], changed
//!   only by `super::lifecycle`'s pure transitions (which hold its invariants) with one
//!   compare-and-swap.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Instant;

use mio::Waker;

use super::handover::{MoveMsg, Moved};
use super::lifecycle::{ServerState, Shutdown, Upgrade};
use super::source::Source;
use super::source_table::SourceTable;

pub use super::lifecycle::UpgradeBusy;

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `--max-connections` connections are open.
    Global,
    /// Its source has `--max-connections-per-source` open. `log`: log this one (the first
    /// of its source in 10 s), with the refusals of that source left unlogged since.
    PerSource {
        /// `Some(unlogged)` when this refusal is to be logged.
        log: Option<u64>,
    },
}

/// What a server's reactors share.
#[derive(Debug)]
pub struct Shared {
    /// The most connections served at once, over all reactors.
    max_connections: usize,
    /// Connections admitted and not yet released, over all reactors.
    open: AtomicUsize,
    /// Connections open per source, if `--max-connections-per-source` is set; locked only
    /// to admit or release a connection.
    per_source: Option<Mutex<SourceTable>>,
    /// Buffer-budget bytes no reactor holds a lease on.
    unleased: AtomicUsize,
    /// The server's lifecycle, a [`ServerState`] in one byte: its upgrade (none, starting,
    /// moving, upgraded) and its shutdown (none, graceful, forced). Changed only by the
    /// pure transitions of `super::lifecycle`, with one compare-and-swap.
    state: AtomicU8,
    /// Every reactor's waker, by reactor index; set once all are built.
    wakers: OnceLock<Vec<Arc<Waker>>>,
    /// Reactors whose loop has not returned yet: reactor 0, which receives the signals,
    /// keeps polling them until it is the last.
    running: AtomicUsize,
    /// After an upgrade: the reactor that deals connections to the others has closed its
    /// listener and will send no more (they may end their drain once their inbox is empty).
    dealing_over: AtomicBool,
    /// Reactors that still hold a listener: a shutdown is announced once none does, so a
    /// connection made after the announcement is refused by every reactor alike.
    accepting: AtomicUsize,
    /// Per reactor, by index: where connections to adopt go (moved in by an upgrade, or
    /// back from a hand-over that failed); set once all are built.
    adoptions: OnceLock<Vec<Sender<Moved>>>,
    /// While moving: where the reactors send their connections (the upgrade thread).
    mover: Mutex<Option<Sender<MoveMsg>>>,
    /// This process is still taking connections over from the one it upgrades: no
    /// upgrade of its own may begin (it would move them on half taken).
    adopting: AtomicBool,
}

impl Shared {
    /// A server of at most `max_connections`, and at most `per_source` from one source if
    /// given, whose reactors lease from `unleased` bytes of buffer budget (what is left
    /// once each has its floor).
    pub fn new(max_connections: usize, per_source: Option<u32>, unleased: usize) -> Arc<Shared> {
        Arc::new(Shared {
            max_connections,
            open: AtomicUsize::new(0),
            per_source: per_source.map(|limit| Mutex::new(SourceTable::new(limit))),
            unleased: AtomicUsize::new(unleased),
            state: AtomicU8::new(ServerState::START.to_byte()),
            wakers: OnceLock::new(),
            running: AtomicUsize::new(0),
            dealing_over: AtomicBool::new(false),
            accepting: AtomicUsize::new(0),
            adoptions: OnceLock::new(),
            mover: Mutex::new(None),
            adopting: AtomicBool::new(false),
        })
    }

    /// Records how many reactors hold a listener.
    pub fn set_accepting(&self, reactors: usize) {
        self.accepting.store(reactors, Ordering::Release);
    }

    /// A reactor has closed its listener; true for the last one.
    pub fn stop_accepting(&self) -> bool {
        self.accepting.fetch_sub(1, Ordering::AcqRel) == 1
    }

    /// Records the reactors' wakers, so a shutdown reaches all of them.
    pub fn set_wakers(&self, wakers: Vec<Arc<Waker>>) {
        self.running.store(wakers.len(), Ordering::Release);
        let _ = self.wakers.set(wakers);
    }

    /// Records where each reactor takes connections to adopt.
    pub fn set_adoptions(&self, senders: Vec<Sender<Moved>>) {
        let _ = self.adoptions.set(senders);
    }

    /// The number of reactors.
    pub fn reactors(&self) -> usize {
        self.adoptions.get().map_or(0, Vec::len)
    }

    /// Gives `moved` to reactor `reactor` to adopt and wakes it; hands it back if that
    /// reactor is gone.
    // A `Moved` is over 128 bytes, handed back only when a reactor is gone: boxing it
    // would cost every moved connection an allocation to spare that rare error a copy.
    #[allow(clippy::result_large_err)]
    pub fn deliver(&self, reactor: usize, moved: Moved) -> Result<(), Moved> {
        let Some(sender) = self.adoptions.get().and_then(|s| s.get(reactor)) else {
            return Err(moved);
        };
        sender.send(moved).map_err(|e| e.0)?;
        if let Some(waker) = self.wakers.get().and_then(|w| w.get(reactor)) {
            // A failed wake means the reactor is gone; the connection drops with its channel.
            let _ = waker.wake();
        }
        Ok(())
    }

    /// Counts a connection moved to this process by an upgrade (or back from a hand-over
    /// that failed), from `source`, whatever the limits: it was admitted once already and
    /// its client must not notice the move. Released as any other.
    pub fn adopt(&self, source: Option<Source>) {
        self.open.fetch_add(1, Ordering::AcqRel);
        if let (Some(table), Some(source)) = (&self.per_source, source) {
            lock(table).adopt(source);
        }
    }

    /// A reactor's loop has returned (or panicked): wakes reactor 0, which may be
    /// waiting for the others to end.
    pub fn reactor_done(&self) {
        let _ = self
            .running
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        if let Some(first) = self.wakers.get().and_then(|w| w.first()) {
            // A failed wake means reactor 0 is already gone.
            let _ = first.wake();
        }
    }

    /// The dealing reactor has sent its last connection (after an upgrade); wakes every
    /// reactor.
    pub fn end_dealing(&self) {
        self.dealing_over.store(true, Ordering::Release);
        self.wake_all();
    }

    /// [`Shared::end_dealing`] has been called: every connection sent is in the channels.
    pub fn dealing_over(&self) -> bool {
        self.dealing_over.load(Ordering::Acquire)
    }

    /// Reactors still running, the caller included.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }

    /// The connection limit in force.
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// The per-source limit in force, if any.
    pub fn max_connections_per_source(&self) -> Option<u32> {
        self.per_source.as_ref().map(|t| lock(t).limit())
    }

    /// Admits one more connection, from `source` (`None` when no per-source limit is set),
    /// if the limits allow; then it must be [`Shared::release`]d with the same `source`.
    /// `now` dates a refusal, for its log line.
    pub fn admit(&self, source: Option<Source>, now: Instant) -> Result<(), Refusal> {
        let (Some(table), Some(source)) = (&self.per_source, source) else {
            debug_assert!(
                self.per_source.is_none() || source.is_some(),
                "a per-source limit is set but no source was given"
            );
            return self.take_slot_unlocked();
        };
        // With a per-source limit every admission holds the table's lock, so both limits
        // are checked and both counts taken in one step: no count raised for a moment by
        // an admission being undone refuses a connection that fits. Releases only lower
        // `open`, so it cannot pass the limit between the check and the increment.
        let mut table = lock(table);
        if self.open.load(Ordering::Acquire) >= self.max_connections {
            return Err(Refusal::Global);
        }
        if let Err(refused) = table.admit(source, now) {
            return Err(Refusal::PerSource { log: refused.log });
        }
        self.open.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Admits a connection whose source is not known yet (a trusted proxy's, before its
    /// PROXY header): the global limit only; [`Shared::admit_source`] counts its source
    /// once the header names it, and [`Shared::release`] releases both.
    pub fn admit_unsourced(&self) -> Result<(), Refusal> {
        if let Some(table) = &self.per_source {
            // As `admit` does with a per-source limit: checked and counted under the lock,
            // so no count raised for a moment refuses another admission that fits.
            let _table = lock(table);
            if self.open.load(Ordering::Acquire) >= self.max_connections {
                return Err(Refusal::Global);
            }
            self.open.fetch_add(1, Ordering::AcqRel);
            return Ok(());
        }
        self.take_slot_unlocked()
    }

    /// Takes a slot under `--max-connections` without a per-source limit: raised, and
    /// undone at once if that passed the limit (no admission checks the count under a lock
    /// then, so a raise undone misleads none).
    fn take_slot_unlocked(&self) -> Result<(), Refusal> {
        let before = self.open.fetch_add(1, Ordering::AcqRel);
        if before >= self.max_connections {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::Global);
        }
        Ok(())
    }

    /// Counts `source` for a connection [`Shared::admit_unsourced`] admitted, under the
    /// per-source limit. On a refusal the global admission stays, for the caller to
    /// release ([`Shared::release`] with no source).
    pub fn admit_source(&self, source: Option<Source>, now: Instant) -> Result<(), Refusal> {
        let (Some(table), Some(source)) = (&self.per_source, source) else {
            return Ok(());
        };
        lock(table)
            .admit(source, now)
            .map_err(|refused| Refusal::PerSource { log: refused.log })
    }

    /// A connection admitted earlier, from `source`, is closed.
    pub fn release(&self, source: Option<&Source>) {
        let before = self.open.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(before > 0, "released more connections than admitted");
        if let (Some(table), Some(source)) = (&self.per_source, source) {
            lock(table).release(source);
        }
    }

    /// Sources with connections open (0 without a per-source limit).
    pub fn sources_open(&self) -> usize {
        self.per_source.as_ref().map_or(0, |t| lock(t).sources())
    }

    /// Connections admitted and not yet released, over all reactors.
    pub fn connections_open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Takes `bytes` of budget for a reactor's lease, if that much is unleased.
    pub fn lease(&self, bytes: usize) -> bool {
        self.unleased
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |free| {
                free.checked_sub(bytes)
            })
            .is_ok()
    }

    /// Gives `bytes` of a reactor's lease back.
    pub fn give_back(&self, bytes: usize) {
        self.unleased.fetch_add(bytes, Ordering::AcqRel);
    }

    /// The server's lifecycle now.
    pub fn state(&self) -> ServerState {
        ServerState::from_byte(self.state.load(Ordering::Acquire))
    }

    /// Applies `transition` to the server's state, atomically; returns what it answered.
    fn transition<E>(
        &self,
        transition: impl Fn(ServerState) -> Result<ServerState, E>,
    ) -> Result<ServerState, E> {
        let mut current = self.state.load(Ordering::Acquire);
        loop {
            let next = transition(ServerState::from_byte(current))?;
            match self.state.compare_exchange_weak(
                current,
                next.to_byte(),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(next),
                Err(actual) => current = actual,
            }
        }
    }

    /// Applies a transition that always succeeds.
    fn change(&self, transition: impl Fn(ServerState) -> ServerState) {
        let _ = self.transition(|s| Ok::<_, std::convert::Infallible>(transition(s)));
    }

    /// Starts the graceful shutdown of every reactor (`force`: close everything at once,
    /// as a second signal does) and wakes them all.
    pub fn shut_down(&self, force: bool) {
        self.change(|s| s.shut_down(force));
        self.wake_all();
    }

    /// Marks an upgrade as begun, unless one is in progress or done.
    pub fn begin_upgrade(&self) -> Result<(), UpgradeBusy> {
        self.transition(ServerState::begin_upgrade).map(|_| ())
    }

    /// The upgrade in progress failed: a later SIGUSR2 may try again.
    pub fn upgrade_failed(&self) {
        self.change(ServerState::upgrade_failed);
    }

    /// The new process is ready: every reactor stops accepting and drains; wakes them all.
    pub fn begin_upgrade_drain(&self) {
        self.change(ServerState::upgrade_drain);
        self.wake_all();
    }

    /// The new process speaks the hand-over: every reactor stops accepting and sends its
    /// connections to `mover`; wakes them all.
    pub fn begin_move(&self, mover: Sender<MoveMsg>) {
        *self.mover.lock().unwrap_or_else(PoisonError::into_inner) = Some(mover);
        self.change(ServerState::begin_move);
        self.wake_all();
    }

    /// While the connections move: where a reactor sends them.
    pub fn mover(&self) -> Option<Sender<MoveMsg>> {
        if !self.moving() {
            return None;
        }
        self.mover
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Sends `msg` to the mover while the move is under way; hands it back once the mover
    /// takes nothing more ([`Shared::close_move`]) or has gone. Sent under the lock
    /// `close_move` takes, so a message is either in the mover's channel before it closes,
    /// where the mover reads it, or handed back: never left in a channel no one reads.
    pub fn send_to_mover(&self, msg: MoveMsg) -> Result<(), MoveMsg> {
        let mover = self.mover.lock().unwrap_or_else(PoisonError::into_inner);
        match mover.as_ref() {
            Some(sender) if self.moving() => sender.send(msg).map_err(|e| e.0),
            _ => Err(msg),
        }
    }

    /// The mover takes nothing more: from here on, [`Shared::send_to_mover`] hands every
    /// message back.
    pub fn close_move(&self) {
        self.mover
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }

    /// Every connection that could move has moved (the rest are back with their
    /// reactors): the reactors end once theirs are served. Or, `rolled_back`, the new
    /// process died during the move: the reactors serve on as before the upgrade, their
    /// listeners again included, and a later SIGUSR2 may try again. Wakes them all.
    pub fn end_move(&self, rolled_back: bool) {
        self.close_move();
        if rolled_back {
            self.dealing_over.store(false, Ordering::Release);
        }
        self.change(|s| s.end_move(rolled_back));
        self.wake_all();
    }

    /// Marks whether this process is taking connections over from the one it upgrades.
    pub fn set_adopting(&self, adopting: bool) {
        self.adopting.store(adopting, Ordering::Release);
    }

    /// This process is taking connections over from the one it upgrades.
    pub fn adopting(&self) -> bool {
        self.adopting.load(Ordering::Acquire)
    }

    /// A reactor accepts again (a move rolled back).
    pub fn resume_accepting(&self) {
        self.accepting.fetch_add(1, Ordering::AcqRel);
    }

    /// Connections are moving to the new process.
    pub fn moving(&self) -> bool {
        self.state().upgrade == Upgrade::Moving
    }

    /// Wakes every reactor, to look at what changed.
    fn wake_all(&self) {
        for waker in self.wakers.get().into_iter().flatten() {
            // A failed wake means that reactor is already gone.
            let _ = waker.wake();
        }
    }

    /// A new process serves the listening sockets (a committed move or the drain): stop accepting.
    pub fn upgraded(&self) -> bool {
        self.state().upgrade == Upgrade::Upgraded
    }

    /// A shutdown has begun.
    pub fn draining(&self) -> bool {
        self.state().shutdown != Shutdown::None
    }

    /// A forced shutdown has begun: close every connection now.
    pub fn forced(&self) -> bool {
        self.state().shutdown == Shutdown::Forced
    }
}

/// The table, even if a reactor panicked while holding it: its counts are whole (every
/// change is one integer store), and a panicking reactor ends the server anyway.
fn lock(table: &Mutex<SourceTable>) -> MutexGuard<'_, SourceTable> {
    table.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn admission_stops_exactly_at_the_limit_and_resumes_after_a_release() {
        let shared = Shared::new(2, None, 0);
        let now = Instant::now();
        assert_eq!(shared.admit(None, now), Ok(()));
        assert_eq!(shared.admit(None, now), Ok(()));
        assert_eq!(shared.admit(None, now), Err(Refusal::Global));
        shared.release(None);
        assert_eq!(shared.admit(None, now), Ok(()));
        assert_eq!(shared.admit(None, now), Err(Refusal::Global));
    }

    #[test]
    fn a_per_source_refusal_takes_no_global_slot_and_a_global_one_no_source_slot() {
        let a = Some(Source::V4(Ipv4Addr::new(127, 0, 0, 2)));
        let b = Some(Source::V4(Ipv4Addr::new(127, 0, 0, 3)));
        let now = Instant::now();
        let shared = Shared::new(3, Some(2), 0);
        assert_eq!(shared.admit(a, now), Ok(()));
        assert_eq!(shared.admit(a, now), Ok(()));
        assert_eq!(
            shared.admit(a, now),
            Err(Refusal::PerSource { log: Some(0) })
        );
        assert_eq!(shared.connections_open(), 2);
        assert_eq!(shared.admit(b, now), Ok(()));
        assert_eq!(shared.admit(b, now), Err(Refusal::Global));
        assert_eq!(shared.sources_open(), 2);
        shared.release(a.as_ref());
        shared.release(a.as_ref());
        shared.release(b.as_ref());
        assert_eq!((shared.connections_open(), shared.sources_open()), (0, 0));
    }

    #[test]
    fn a_proxied_admission_counts_globally_first_and_its_source_once_named() {
        let a = Some(Source::V4(Ipv4Addr::new(192, 0, 2, 1)));
        let now = Instant::now();
        let shared = Shared::new(3, Some(1), 0);
        // Two connections from a trusted proxy, their headers not read yet.
        assert_eq!(shared.admit_unsourced(), Ok(()));
        assert_eq!(shared.admit_unsourced(), Ok(()));
        assert_eq!((shared.connections_open(), shared.sources_open()), (2, 0));
        // Both headers name the same client: the second is over its limit, and its
        // global slot is the caller's to release.
        assert_eq!(shared.admit_source(a, now), Ok(()));
        assert!(matches!(
            shared.admit_source(a, now),
            Err(Refusal::PerSource { .. })
        ));
        shared.release(None);
        assert_eq!((shared.connections_open(), shared.sources_open()), (1, 1));
        // The global limit holds for unsourced admissions too.
        assert_eq!(shared.admit_unsourced(), Ok(()));
        assert_eq!(shared.admit_unsourced(), Ok(()));
        assert_eq!(shared.admit_unsourced(), Err(Refusal::Global));
        shared.release(None);
        shared.release(None);
        shared.release(a.as_ref());
        assert_eq!((shared.connections_open(), shared.sources_open()), (0, 0));
    }

    #[test]
    fn four_threads_never_pass_either_limit_and_leave_nothing_counted() {
        use std::sync::atomic::AtomicU32;
        let shared = Shared::new(10, Some(3), 0);
        let sources: Vec<Source> = (2..6)
            .map(|n| Source::V4(Ipv4Addr::new(127, 0, 0, n)))
            .collect();
        // Connections each thread sees open, by source and in all: raised after an
        // admission and lowered before its release, so never above what `shared` counts.
        let held: Vec<AtomicU32> = sources.iter().map(|_| AtomicU32::new(0)).collect();
        let total = AtomicU32::new(0);
        std::thread::scope(|scope| {
            for t in 0..4 {
                let (shared, sources, held, total) = (&shared, &sources, &held, &total);
                scope.spawn(move || {
                    let mut mine: Vec<usize> = Vec::new();
                    for i in 0..20_000usize {
                        let s = (i * 7 + t) % sources.len();
                        if i % 3 == 2 {
                            if let Some(s) = mine.pop() {
                                held[s].fetch_sub(1, Ordering::SeqCst);
                                total.fetch_sub(1, Ordering::SeqCst);
                                shared.release(Some(&sources[s]));
                            }
                        } else if shared.admit(Some(sources[s]), Instant::now()).is_ok() {
                            let h = held[s].fetch_add(1, Ordering::SeqCst) + 1;
                            let all = total.fetch_add(1, Ordering::SeqCst) + 1;
                            assert!(h <= 3 && all <= 10, "{h} from one source, {all} in all");
                            mine.push(s);
                        }
                    }
                    for s in mine {
                        held[s].fetch_sub(1, Ordering::SeqCst);
                        total.fetch_sub(1, Ordering::SeqCst);
                        shared.release(Some(&sources[s]));
                    }
                });
            }
        });
        assert_eq!((shared.connections_open(), shared.sources_open()), (0, 0));
    }

    #[test]
    fn leases_never_exceed_what_is_unleased() {
        let shared = Shared::new(1, None, 100);
        assert!(shared.lease(60));
        assert!(!shared.lease(41));
        assert!(shared.lease(40));
        assert!(!shared.lease(1));
        shared.give_back(30);
        assert!(shared.lease(30));
    }

    #[test]
    fn shutdown_only_moves_forward() {
        let shared = Shared::new(1, None, 0);
        assert!(!shared.draining());
        shared.shut_down(true);
        shared.shut_down(false);
        assert!(shared.draining() && shared.forced());
    }

    #[test]
    fn one_upgrade_at_a_time_a_failed_one_may_be_retried_an_upgrade_is_final() {
        let shared = Shared::new(1, None, 0);
        assert_eq!(shared.begin_upgrade(), Ok(()));
        assert_eq!(shared.begin_upgrade(), Err(UpgradeBusy::InProgress));
        shared.upgrade_failed();
        assert!(!shared.upgraded());
        assert_eq!(shared.begin_upgrade(), Ok(()));
        shared.begin_upgrade_drain();
        assert!(shared.upgraded());
        shared.upgrade_failed();
        assert!(shared.upgraded());
        assert_eq!(shared.begin_upgrade(), Err(UpgradeBusy::Upgraded));
    }
}
