//! The buffer-memory budget of one reactor: [`Budget`], the accounting (the bytes held,
//! this reactor's lease of `--max-buffer-memory`, the choice of whom to close), and the
//! reactor's side of it: every connection's I/O runs through [`Reactor::drive`], which
//! keeps one connection's worst case free in the lease (growing it from `Shared` a
//! mebibyte at a time) or closes the connections charged the most, and accounts the
//! change in that connection's charge: its buffers, and its kernel queues while its
//! socket refuses replies.
//!
//! # Invariants
//! - `Budget::charged` is always the sum of every connection's `charged_bytes()`: its
//!   buffers, and its kernel queues while its socket refuses replies (told of each change
//!   around the I/O, by `drive` and `drive_without_budget`); never more than the lease.
//!   The leases of all reactors, the HTTP endpoints' reserve and what the endpoints'
//!   connections leased past it ([`Reactor::lease_for_http`]) never sum past the budget.
//! - At most [`EVICTIONS_PER_TURN`] connections are closed for the budget in one loop
//!   turn; I/O that finds no room after them does not run ([`Driven::NoRoom`]).
//! - A memory-pressure episode is logged twice: when it starts and once it has been
//!   quiet for [`PRESSURE_QUIET`].
//! - The account never wraps, in release builds too: a subtraction that would (a bug)
//!   marks it out of sync instead, and the next turn recomputes it from the connections
//!   ([`Reactor::new_budget_turn`]), with an error logged the first time (debug builds
//!   panic there, so tests catch the bug). A wrapped account would make every later
//!   `drive` evict.

use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, error, warn};

use super::{Reactor, TimerKey};
use crate::counters::CloseReason;
use crate::protocol;
use crate::server::connection::{Connection, Context, Next};
use crate::server::shared::Shared;

/// Buffer budget a reactor leases from [`Shared`] at a time, and the surplus past which
/// it gives some back: the shared counter is touched once per mebibyte of growth.
const LEASE_CHUNK: usize = 1 << 20;

/// A memory-pressure episode ends after this long without a close for the budget; its
/// summary is logged then (one line per episode, not one per connection).
const PRESSURE_QUIET: Duration = Duration::from_secs(1);

/// Connections closed for the budget per loop turn, at most; I/O that needs room past
/// them waits for the next turn. A close for the budget frees the connection's kernel
/// queues in this thread (up to 512 KiB at the default socket buffers): 126 such closes
/// in one turn made it last 30-50 ms, which every other connection waited out
/// (scripts/attack.sh mix, BENCHMARKS.md section 13). Redis bounds its eviction per
/// command the same way (`maxmemory-eviction-tenacity`).
const EVICTIONS_PER_TURN: usize = 32;
/// The part of the budget set aside for the HTTP endpoints once one is served: room for
/// a few heads, a scrape's page and a listing of the default 100 rows, when the echo
/// connections hold all the rest. At most a sixteenth of the budget.
const HTTP_RESERVE: usize = 256 * 1024;

/// One reactor's account of the buffer budget: what its connections hold, what it has
/// leased from [`Shared`], and the closes it may still make this turn. It knows nothing
/// of connections: the reactor tells it their charges.
pub(super) struct Budget {
    /// Where leases come from and go back to.
    shared: Arc<Shared>,
    /// What is charged: always the sum of the connections' `charged_bytes()`, their
    /// buffers and the kernel queues of those whose sockets refuse replies.
    charged: usize,
    /// Budget bytes this reactor holds from [`Shared`]: what is charged never exceeds it.
    lease: usize,
    /// The part of the lease kept for good: one connection's worst case at least.
    lease_floor: usize,
    /// `--max-buffer-memory`, for the metrics and the logs.
    total: usize,
    /// The most one connection can hold, kept free under the lease before any I/O.
    headroom: usize,
    /// Closes for the budget left in this turn ([`EVICTIONS_PER_TURN`] each turn).
    evictions_left: usize,
    /// The memory-pressure episode in progress, if any.
    pressure: Option<Pressure>,
    /// A subtraction from `charged` found less than it took back: `buffered` is not the
    /// connections' sum until [`Budget::resync`].
    out_of_sync: bool,
    /// The account has been resynchronised before (its error is logged once).
    resynced: bool,
    /// Budget bytes set aside for the HTTP endpoints ([`Budget::reserve_for_http`]), out
    /// of the pool the echo connections lease from; 0 without an endpoint.
    http_reserve: usize,
    /// The part of `http_reserve` no endpoint connection holds now.
    http_reserve_free: usize,
}

impl Budget {
    /// The account of a reactor holding `lease_floor` of a `total` budget for good, whose
    /// connections may each hold up to `headroom`.
    pub(super) fn new(
        shared: Arc<Shared>,
        lease_floor: usize,
        total: usize,
        headroom: usize,
    ) -> Budget {
        Budget {
            shared,
            charged: 0,
            lease: lease_floor,
            lease_floor,
            total,
            headroom,
            evictions_left: 0,
            pressure: None,
            out_of_sync: false,
            resynced: false,
            http_reserve: 0,
            http_reserve_free: 0,
        }
    }

    /// What is charged: the connections' buffers, and the kernel queues of those whose
    /// sockets refuse replies.
    #[inline]
    pub(super) fn charged(&self) -> usize {
        self.charged
    }

    /// `--max-buffer-memory`.
    pub(super) fn total(&self) -> usize {
        self.total
    }

    /// A new loop turn: its share of closes for the budget.
    pub(super) fn new_turn(&mut self) {
        self.evictions_left = EVICTIONS_PER_TURN;
    }

    /// One connection's worst case fits under the lease on top of what is charged,
    /// growing the lease if need be; false if it does not and cannot.
    #[inline]
    pub(super) fn make_room(&mut self) -> bool {
        self.has_room() || self.grow_lease()
    }

    /// One connection's worst case fits under the lease as it is.
    #[inline]
    pub(super) fn has_room(&self) -> bool {
        self.charged() + self.headroom <= self.lease
    }

    /// Leases enough more of the budget for one connection's worst case past what is
    /// charged, at least a chunk; false if that much is not unleased.
    fn grow_lease(&mut self) -> bool {
        let short = (self.charged() + self.headroom).saturating_sub(self.lease);
        let want = short.max(LEASE_CHUNK);
        for bytes in [want, short] {
            if bytes > 0 && self.shared.lease(bytes) {
                self.lease += bytes;
                return true;
            }
        }
        short == 0
    }

    /// A connection's charge went from `before` to `after` bytes.
    #[inline]
    pub(super) fn account(&mut self, before: usize, after: usize) {
        match (self.charged + after).checked_sub(before) {
            Some(charged) => self.charged = charged,
            None => self.slipped(),
        }
    }

    /// A connection charged `charge` bytes is gone.
    pub(super) fn release(&mut self, charge: usize) {
        match self.charged.checked_sub(charge) {
            Some(charged) => self.charged = charged,
            None => self.slipped(),
        }
    }

    /// A subtraction would have wrapped: hold nothing rather than almost `usize::MAX`
    /// until the reactor recomputes the account.
    #[cold]
    #[inline(never)]
    fn slipped(&mut self) {
        self.charged = 0;
        self.out_of_sync = true;
    }

    /// The account must be recomputed from the connections ([`Budget::resync`]).
    #[inline]
    pub(super) fn out_of_sync(&self) -> bool {
        self.out_of_sync
    }

    /// Sets `charged` to `charged`, the connections' sum recomputed; what it was, and
    /// whether this is the first time (the error to log once).
    pub(super) fn resync(&mut self, charged: usize) -> (usize, bool) {
        let was = self.charged;
        let first = !self.resynced;
        self.charged = charged;
        self.out_of_sync = false;
        self.resynced = true;
        (was, first)
    }

    /// After a connection's I/O, with `charged` now charged: gives a chunk back to the
    /// other reactors when far more is leased than charged.
    #[inline]
    pub(super) fn settle_lease(&mut self, charged: usize) {
        debug_assert!(
            charged <= self.lease,
            "charged {charged} > lease {}",
            self.lease
        );
        self.settle_lease_unchecked(charged);
    }

    /// [`Budget::settle_lease`] where the charge may be past the lease for a while (a
    /// close or a shrink after an upgrade adopted connections over it): no check.
    #[inline]
    pub(super) fn settle_lease_unchecked(&mut self, charged: usize) {
        // Saturating: were `charged` past the lease (a bug), nothing would be given back.
        if self.lease.saturating_sub(charged) > self.lease_floor + 2 * LEASE_CHUNK + self.headroom {
            self.lease -= LEASE_CHUNK;
            self.shared.give_back(LEASE_CHUNK);
        }
    }

    /// What a pass of closes aims for: an eighth of the lease and one connection's worst
    /// case free again, so a pass frees megabytes and passes are rare.
    pub(super) fn eviction_target(&self) -> usize {
        (self.lease - self.lease / 8).saturating_sub(self.headroom)
    }

    /// Closes for the budget this turn may still make.
    pub(super) fn evictions_left(&self) -> usize {
        self.evictions_left
    }

    /// Counts one close for the budget against this turn's share.
    pub(super) fn spend_eviction(&mut self) {
        self.evictions_left = self.evictions_left.saturating_sub(1);
    }

    /// No close is worth trying again this turn (nothing holds anything).
    pub(super) fn spend_every_eviction(&mut self) {
        self.evictions_left = 0;
    }

    /// Sets [`HTTP_RESERVE`] (at most a sixteenth of the budget) aside for the HTTP
    /// endpoints, once: an endpoint is served. Taken from the unleased pool at start, when
    /// it is all there; if it is not, the endpoints lease as the echo connections do.
    pub(super) fn reserve_for_http(&mut self) {
        let want = HTTP_RESERVE.min(self.total / 16);
        if self.http_reserve == 0 && self.shared.lease(want) {
            self.http_reserve = want;
            self.http_reserve_free = want;
        }
    }

    /// Leases `bytes` for the HTTP endpoints' connections: from their reserve, else from
    /// the unleased pool, else from this lease where it is not needed (one connection's
    /// worst case stays free). False if none has them.
    pub(super) fn lease_for_http(&mut self, bytes: usize) -> bool {
        if let Some(free) = self.http_reserve_free.checked_sub(bytes) {
            self.http_reserve_free = free;
            return true;
        }
        if self.shared.lease(bytes) {
            return true;
        }
        let needed = self.charged() + self.headroom;
        if self.lease.saturating_sub(needed) >= bytes {
            // Moved from this reactor's lease; given back to the pool when released.
            self.lease -= bytes;
            return true;
        }
        false
    }

    /// Gives back `bytes` leased by [`Budget::lease_for_http`]: to the endpoints' reserve
    /// first, the rest to the pool. (What the endpoints hold is their reserve's used part
    /// plus what they leased past it, so refilling the reserve first gives back exactly.)
    pub(super) fn release_for_http(&mut self, bytes: usize) {
        let refill = bytes.min(self.http_reserve - self.http_reserve_free);
        self.http_reserve_free += refill;
        if bytes > refill {
            self.shared.give_back(bytes - refill);
        }
    }

    /// The reactor is done: gives back what it leased past its floor, and the
    /// endpoints' reserve (their connections are closed).
    pub(super) fn give_back_surplus(&mut self) {
        if let Some(surplus) = self.lease.checked_sub(self.lease_floor) {
            self.shared.give_back(surplus);
            self.lease = self.lease_floor;
        }
        self.shared.give_back(self.http_reserve_free);
        self.http_reserve -= self.http_reserve_free;
        self.http_reserve_free = 0;
    }

    /// A close for the budget at `now`. True if it starts a
    /// memory-pressure episode (the reactor logs it and arms the quiet check).
    pub(super) fn note_pressure(&mut self, now: Instant) -> bool {
        if self.pressure.is_some() {
            return false;
        }
        self.pressure = Some(Pressure {
            since: now,
            last: now,
            closed: 0,
            freed: 0,
        });
        true
    }

    /// Counts a close for the budget, at `now`, that freed `held` bytes.
    pub(super) fn note_eviction(&mut self, now: Instant, held: usize) {
        if let Some(pressure) = &mut self.pressure {
            pressure.last = now;
            pressure.closed += 1;
            pressure.freed += held as u64;
        }
    }

    /// How long the episode in progress has been quiet, if there is one.
    pub(super) fn pressure_quiet_for(&self) -> Option<Duration> {
        self.pressure
            .as_ref()
            .map(|pressure| pressure.last.elapsed())
    }

    /// Ends the episode in progress.
    pub(super) fn end_pressure(&mut self) -> Option<Pressure> {
        self.pressure.take()
    }
}

/// The connections to close first for the budget: of `holders` (`(charge, key)`), the
/// `at_most` charged the most, largest first, without sorting them all
/// (`select_nth_unstable`); those charged nothing are never chosen.
pub(super) fn choose_evictions(
    mut holders: Vec<(usize, usize)>,
    at_most: usize,
) -> Vec<(usize, usize)> {
    holders.retain(|&(held, _)| held > 0);
    let candidates = at_most.min(holders.len());
    if candidates < holders.len() {
        holders.select_nth_unstable_by(candidates, |a, b| b.cmp(a));
        holders.truncate(candidates);
    }
    holders.sort_unstable_by(|a, b| b.cmp(a));
    holders
}

/// What became of a connection's I/O under the budget ([`Reactor::drive`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Driven {
    /// It ran: the connection's `Next`.
    Ran(Next),
    /// The connection is gone (closed earlier in this turn, or for the budget just now).
    Gone,
    /// No room under the budget, and this turn's closes are spent: it did not run.
    NoRoom,
}

/// A memory-pressure episode: connections are being closed to keep the budget.
pub(super) struct Pressure {
    /// When the first close of the episode happened.
    since: Instant,
    /// When the last one did.
    last: Instant,
    /// Connections closed in this episode.
    closed: u64,
    /// Buffer bytes those closes freed.
    freed: u64,
}

impl Reactor {
    /// Runs `io` on connection `key` within the buffer budget: first keeps room for the
    /// most one connection can hold (closing the largest holders if need be, perhaps this
    /// one), then accounts the change in its buffers. When this turn's evictions are spent
    /// and there is no room, `io` does not run: the connection waits for the next turn.
    // Always inlined into `on_connection_event`: the event path of every frame (as a
    // call it costs about 30 instructions per frame at pipeline 1, BENCHMARKS.md 13).
    #[inline(always)]
    pub(super) fn drive(
        &mut self,
        key: usize,
        io: impl FnOnce(&mut Connection, &mut Context) -> Next,
    ) -> Driven {
        if !self.budget.make_room() {
            self.evict_largest();
            if !self.budget.has_room() {
                return Driven::NoRoom;
            }
        }
        let Some(conn) = self.table.get_mut(key) else {
            return Driven::Gone;
        };
        // Compared as buffers and stall, the charge computed only when it changed: the
        // common event holds nothing before and after.
        let (held_before, stalled_before) = (conn.held_bytes(), conn.is_stalled());
        let next = io(conn, &mut self.cx);
        let (held_after, stalled_after) = (conn.held_bytes(), conn.is_stalled());
        if held_after != held_before || stalled_after != stalled_before {
            let kernel_held = self.cx.limits.kernel_held;
            let before = held_before + usize::from(stalled_before) * kernel_held;
            let after = held_after + usize::from(stalled_after) * kernel_held;
            // The charge changed (its buffers, or its kernel queues, charged while its
            // socket refuses replies): most events, answered straight to the socket and
            // holding nothing, skip this. (Every other way a charge falls, a close or
            // `drive_without_budget`, settles the lease too, so a surplus never stays.)
            self.budget.account(before, after);
            let charged = self.charged();
            self.cx.stats.buffered_peak = self.cx.stats.buffered_peak.max(charged as u64);
            self.budget.settle_lease(charged);
        }
        Driven::Ran(next)
    }

    /// What is charged to the budget: the connections' buffers and the kernel queues of
    /// those whose sockets refuse replies.
    pub(in crate::server) fn charged(&self) -> usize {
        self.budget.charged()
    }

    /// A new loop turn: its share of closes for the budget; first, if an accounting
    /// subtraction found less than it took back since the last turn, the account
    /// recomputed from the connections (one branch per turn, none per frame).
    pub(super) fn new_budget_turn(&mut self) {
        if self.budget.out_of_sync() {
            self.resync_budget();
        }
        self.budget.new_turn();
    }

    /// Recomputes the account from the connections: their buffers, and the kernel
    /// queues of those whose sockets refuse replies. Logged as an error the first time.
    #[cold]
    #[inline(never)]
    fn resync_budget(&mut self) {
        let kernel_held = self.cx.limits.kernel_held;
        let charged: usize = self
            .table
            .iter()
            .map(|(_, conn)| conn.charged_bytes(kernel_held))
            .sum::<usize>()
            + self.acceptor.intake.held_bytes();
        let (was, first) = self.budget.resync(charged);
        let line = format!(
            "buffer accounting out of step with the connections{}: {was} bytes accounted, \
             {charged} held; recomputed",
            self.of_reactor()
        );
        if first {
            error!("{line} (a bug; further ones are logged at debug)");
        } else {
            debug!("{line}");
        }
        // Debug builds stop here, so the tests find the bug; release builds go on, exact.
        if cfg!(debug_assertions) {
            panic!("{line}");
        }
    }

    /// Closes the connections that hold the most buffer memory, largest first, until
    /// [`Budget::eviction_target`] is reached, at most this turn's share of closes
    /// ([`EVICTIONS_PER_TURN`]). Each gets `error: server buffer memory exhausted` where it
    /// can still read it (see [`Connection::abandon`]). One scan of the slab per pass
    /// ([`choose_evictions`]); passes happen only at the budget.
    #[inline(never)]
    fn evict_largest(&mut self) {
        if self.budget.evictions_left() == 0 {
            return; // the next turn closes more; meanwhile I/O that needs room waits
        }
        let target = self.budget.eviction_target();
        let kernel_held = self.cx.limits.kernel_held;
        let holders = choose_evictions(
            self.table
                .iter()
                .map(|(key, conn)| (conn.charged_bytes(kernel_held), key))
                .collect(),
            self.budget.evictions_left(),
        );
        let now = Instant::now();
        if self.budget.note_pressure(now) {
            warn!(
                "buffer memory budget reached: {} bytes held by {} connections{} (budget {}); \
                 closing the largest holders",
                self.charged(),
                holders.len(),
                self.of_reactor(),
                self.budget.total()
            );
            self.arm_server_timer(PRESSURE_QUIET, TimerKey::Pressure);
        }
        if holders.is_empty() {
            self.budget.spend_every_eviction(); // nothing to close: no scan again this turn
        }
        for (held, key) in holders {
            if self.charged() <= target {
                break;
            }
            self.budget.spend_eviction();
            let Some(next) = self.drive_without_budget(key, |conn, cx| {
                conn.abandon(
                    protocol::MEMORY_BUDGET_EXCEEDED,
                    CloseReason::MemoryBudget,
                    cx,
                )
            }) else {
                continue;
            };
            self.budget.note_eviction(now, held);
            if next == Next::Wait {
                // Lingering already: input may be waiting with no new edge to announce it
                // (`Linger`, a close that begins now, goes on the ready list in `settle`).
                self.table.ready.push(key);
            }
            self.settle(key, next);
        }
    }

    /// Leases `bytes` of the budget for the HTTP endpoints' connections
    /// ([`Budget::lease_for_http`]). An endpoint never closes an echo connection to make
    /// room. Not on the frame path: once per endpoint read or answer.
    pub(super) fn lease_for_http(&mut self, bytes: usize) -> bool {
        self.budget.lease_for_http(bytes)
    }

    /// Gives back `bytes` leased by [`Reactor::lease_for_http`], to the pool.
    pub(super) fn release_for_http(&mut self, bytes: usize) {
        self.budget.release_for_http(bytes);
    }

    /// [`Reactor::drive`] for I/O that only shrinks buffers (no budget check first).
    pub(super) fn drive_without_budget(
        &mut self,
        key: usize,
        io: impl FnOnce(&mut Connection, &mut Context) -> Next,
    ) -> Option<Next> {
        let before = self.charged();
        let result = self.run_accounted(key, io);
        let charged = self.charged();
        debug_assert!(charged <= before, "buffers grew: {before} to {charged}");
        self.budget.settle_lease_unchecked(charged);
        result
    }

    /// Runs `io` on connection `key` and accounts the change in its buffers; returns
    /// `io`'s `Next`, or `None` if the connection is gone.
    #[inline(always)]
    fn run_accounted(
        &mut self,
        key: usize,
        io: impl FnOnce(&mut Connection, &mut Context) -> Next,
    ) -> Option<Next> {
        let kernel_held = self.cx.limits.kernel_held;
        let conn = self.table.get_mut(key)?;
        let before = conn.charged_bytes(kernel_held);
        let next = io(conn, &mut self.cx);
        self.budget.account(before, conn.charged_bytes(kernel_held));
        Some(next)
    }

    /// Ends the memory-pressure episode with one summary line once no connection has
    /// been closed for the budget for [`PRESSURE_QUIET`]; else checks again later.
    pub(super) fn check_pressure_over(&mut self) {
        let Some(quiet_for) = self.budget.pressure_quiet_for() else {
            return;
        };
        if quiet_for < PRESSURE_QUIET {
            self.arm_server_timer(PRESSURE_QUIET - quiet_for, TimerKey::Pressure);
            return;
        }
        let Some(pressure) = self.budget.end_pressure() else {
            return;
        };
        warn!(
            "buffer memory pressure over after {} ms: closed {} connections holding the most \
             ({} bytes freed); {} bytes held now{}",
            (pressure.last - pressure.since).as_millis(),
            pressure.closed,
            pressure.freed,
            self.charged(),
            self.of_reactor()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;
    const HEADROOM: usize = 64 * 1024;

    /// A budget with `floor` leased for good and `unleased` in the pool.
    fn budget(floor: usize, unleased: usize) -> (Budget, Arc<Shared>) {
        let shared = Shared::new(100, None, unleased);
        let budget = Budget::new(shared.clone(), floor, floor + unleased, HEADROOM);
        (budget, shared)
    }

    /// The pool holds exactly `bytes`.
    #[track_caller]
    fn assert_unleased(shared: &Shared, bytes: usize) {
        assert!(shared.lease(bytes), "fewer than {bytes} bytes unleased");
        let more = shared.lease(1);
        shared.give_back(bytes + usize::from(more));
        assert!(!more, "more than {bytes} bytes unleased");
    }

    #[test]
    fn room_is_exactly_one_connections_worst_case_under_the_lease() {
        let (mut b, _) = budget(MIB, 0);
        b.account(0, MIB - HEADROOM);
        assert!(b.has_room(), "charged + headroom == lease fits");
        b.account(MIB - HEADROOM, MIB - HEADROOM + 1);
        assert!(!b.has_room());
        assert!(!b.make_room(), "nothing unleased: no growth");
    }

    #[test]
    fn a_charge_counts_against_the_lease_until_released() {
        let (mut b, _) = budget(MIB, 0);
        b.account(0, 1000);
        assert_eq!(b.charged(), 1000);
        // A connection whose socket stalls: its kernel queues are charged too.
        b.account(1000, 1000 + 200 * 1024);
        assert_eq!(b.charged(), 1000 + 200 * 1024);
        b.account(1000 + 200 * 1024, MIB - HEADROOM);
        assert!(b.has_room());
        b.account(MIB - HEADROOM, MIB - HEADROOM + 1);
        assert!(!b.has_room());
        b.release(MIB - HEADROOM + 1);
        assert_eq!(b.charged(), 0);
    }

    #[test]
    fn the_lease_grows_a_chunk_at_a_time_from_the_pool() {
        let (mut b, shared) = budget(MIB, 10 * MIB);
        b.account(0, MIB);
        assert!(b.make_room());
        assert_eq!(b.lease, 2 * MIB);
        assert_unleased(&shared, 9 * MIB);
        assert!(b.has_room());
    }

    #[test]
    fn the_lease_grows_by_the_shortfall_when_less_than_a_chunk_is_left() {
        let (mut b, shared) = budget(MIB, 100 * 1024);
        b.account(0, MIB);
        // Short by the headroom: a chunk is not there, the shortfall is.
        assert!(b.make_room());
        assert_eq!(b.lease, MIB + HEADROOM);
        assert_unleased(&shared, 100 * 1024 - HEADROOM);
        b.account(MIB, MIB + 100 * 1024);
        assert!(!b.make_room(), "the shortfall is no longer there");
        assert_eq!(b.lease, MIB + HEADROOM);
    }

    #[test]
    fn a_surplus_past_two_chunks_is_given_back_a_chunk_at_a_time() {
        let (mut b, shared) = budget(MIB, 10 * MIB);
        b.account(0, 4 * MIB);
        assert!(b.make_room(), "grows by the shortfall, more than a chunk");
        assert_eq!(b.lease, 4 * MIB + HEADROOM);
        b.release(4 * MIB);
        // lease - charged > floor + 2 chunks + headroom: a chunk back per call, down to it.
        b.settle_lease(0);
        assert_eq!(b.lease, 3 * MIB + HEADROOM);
        b.settle_lease(0);
        assert_eq!(
            b.lease,
            3 * MIB + HEADROOM,
            "floor + 2 chunks + headroom is kept"
        );
        assert_unleased(&shared, 8 * MIB - HEADROOM);
        b.give_back_surplus();
        assert_eq!(b.lease, MIB);
        assert_unleased(&shared, 10 * MIB);
    }

    #[test]
    fn the_metrics_lease_comes_from_the_pool_then_from_unneeded_lease() {
        let (mut b, shared) = budget(MIB, 4096);
        assert!(b.lease_for_http(0));
        assert!(b.lease_for_http(4096), "from the pool");
        assert_unleased(&shared, 0);
        assert!(
            b.lease_for_http(MIB - HEADROOM),
            "from the lease, headroom kept"
        );
        assert_eq!(b.lease, HEADROOM);
        assert!(!b.lease_for_http(1), "only the headroom is left");
        // Both go back to the pool, which the lease does not take back by itself.
        b.release_for_http(MIB - HEADROOM + 4096);
        assert_unleased(&shared, MIB - HEADROOM + 4096);
    }

    #[test]
    fn the_endpoints_reserve_is_used_first_refilled_first_and_given_back_at_the_end() {
        // A 16 MiB budget: the whole reserve (256 KiB, a sixteenth would be 1 MiB).
        let (mut b, shared) = budget(MIB, 15 * MIB);
        b.reserve_for_http();
        b.reserve_for_http(); // once
        let reserve = HTTP_RESERVE;
        assert_unleased(&shared, 15 * MIB - reserve);
        // With the pool taken by the echo connections' leases, the reserve still serves.
        assert!(shared.lease(15 * MIB - reserve));
        assert!(b.lease_for_http(8193), "a head, from the reserve");
        assert!(
            b.lease_for_http(reserve - 8193),
            "an answer, from the reserve"
        );
        assert!(
            !b.lease_for_http(MIB),
            "nothing is left: the lease keeps its floor"
        );
        shared.give_back(15 * MIB - reserve);
        assert!(b.lease_for_http(4096), "past the reserve, from the pool");
        assert_unleased(&shared, 15 * MIB - reserve - 4096);
        // Releases refill the reserve first, then the pool.
        b.release_for_http(8193);
        assert_eq!(b.http_reserve_free, 8193);
        assert_unleased(&shared, 15 * MIB - reserve - 4096);
        b.release_for_http(reserve - 8193 + 4096);
        assert_eq!(b.http_reserve_free, reserve);
        assert_unleased(&shared, 15 * MIB - reserve);
        b.give_back_surplus();
        assert_unleased(&shared, 15 * MIB);
    }

    #[test]
    fn a_small_budget_sets_a_sixteenth_aside() {
        let (mut b, shared) = budget(MIB, MIB);
        b.reserve_for_http();
        assert_eq!(b.http_reserve, 2 * MIB / 16);
        assert_unleased(&shared, MIB - 2 * MIB / 16);
    }

    #[test]
    fn a_subtraction_past_zero_marks_the_account_out_of_sync_instead_of_wrapping() {
        let (mut b, _) = budget(MIB, 0);
        b.account(0, 100);
        b.account(100, 40);
        assert_eq!((b.charged(), b.out_of_sync()), (40, false));
        b.account(41, 0);
        assert_eq!(
            (b.charged(), b.out_of_sync()),
            (0, true),
            "held nothing, not wrapped"
        );
        assert!(
            b.has_room(),
            "a slipped account does not make every I/O evict"
        );
        assert_eq!(
            b.resync(40),
            (0, true),
            "the first resync is the one logged"
        );
        assert_eq!((b.charged(), b.out_of_sync()), (40, false));
        b.release(41);
        assert!(b.out_of_sync());
        assert_eq!(b.resync(0), (0, false));
        b.release(0);
        assert!(!b.out_of_sync());
    }

    #[test]
    fn charged_past_the_lease_gives_nothing_back() {
        let (mut b, shared) = budget(MIB, 0);
        b.settle_lease_unchecked(2 * MIB);
        assert_eq!(b.lease, MIB);
        assert_unleased(&shared, 0);
    }

    #[test]
    fn evictions_are_bounded_per_turn() {
        let (mut b, _) = budget(MIB, 0);
        assert_eq!(b.evictions_left(), 0, "none before the first turn");
        b.new_turn();
        assert_eq!(b.evictions_left(), EVICTIONS_PER_TURN);
        b.spend_eviction();
        assert_eq!(b.evictions_left(), EVICTIONS_PER_TURN - 1);
        b.spend_every_eviction();
        b.spend_eviction();
        assert_eq!(b.evictions_left(), 0);
        b.new_turn();
        assert_eq!(b.evictions_left(), EVICTIONS_PER_TURN);
    }

    #[test]
    fn the_eviction_target_frees_an_eighth_and_the_headroom() {
        let (b, _) = budget(8 * MIB, 0);
        assert_eq!(b.eviction_target(), 7 * MIB - HEADROOM);
        let (b, _) = budget(HEADROOM, 0);
        assert_eq!(b.eviction_target(), 0);
    }

    #[test]
    fn the_largest_holders_are_chosen_largest_first_and_empty_ones_never() {
        let holders = vec![(5, 0), (0, 1), (9, 2), (1, 3), (9, 4), (7, 5), (0, 6)];
        assert_eq!(
            choose_evictions(holders.clone(), 3),
            vec![(9, 4), (9, 2), (7, 5)]
        );
        assert_eq!(
            choose_evictions(holders.clone(), 100),
            vec![(9, 4), (9, 2), (7, 5), (5, 0), (1, 3)]
        );
        assert_eq!(choose_evictions(holders.clone(), 5).len(), 5);
        assert_eq!(choose_evictions(holders, 0), vec![]);
        assert_eq!(choose_evictions(vec![(0, 1), (0, 2)], 1), vec![]);
        assert_eq!(choose_evictions(Vec::new(), 32), vec![]);
    }

    #[test]
    fn the_choice_matches_sorting_them_all() {
        // The naive model: sort every holder, largest first, and take the first n.
        let mut seed = 0x2545_f491_u64;
        for n in 0..40 {
            let holders: Vec<(usize, usize)> = (0..50)
                .map(|key| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    (usize::from(seed.to_le_bytes()[0] % 8), key)
                })
                .collect();
            let mut model: Vec<_> = holders.iter().copied().filter(|h| h.0 > 0).collect();
            model.sort_unstable_by(|a, b| b.cmp(a));
            model.truncate(n);
            assert_eq!(choose_evictions(holders, n), model, "n = {n}");
        }
    }

    #[test]
    fn a_pressure_episode_starts_once_and_counts_its_closes() {
        let (mut b, _) = budget(MIB, 0);
        let now = Instant::now();
        assert!(b.pressure_quiet_for().is_none());
        assert!(b.note_pressure(now));
        assert!(!b.note_pressure(now), "one episode at a time");
        b.note_eviction(now, 100);
        b.note_eviction(now, 23);
        assert!(b.pressure_quiet_for().is_some());
        let pressure = b.end_pressure().expect("an episode");
        assert_eq!((pressure.closed, pressure.freed), (2, 123));
        assert!(b.end_pressure().is_none());
    }
}
