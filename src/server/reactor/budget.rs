//! The buffer-memory budget of one reactor: every connection's I/O runs through
//! [`Reactor::drive`], which keeps one connection's worst case free in this reactor's
//! lease of `--max-buffer-memory` (growing the lease from `Shared` a mebibyte at a time)
//! or closes the connections charged the most, and accounts the change in that
//! connection's charge: its buffers, and its kernel queues while its socket refuses
//! replies.
//!
//! # Invariants
//! - `buffered` is always the sum of every connection's `held_bytes()`, and
//!   `cx.kernel_charged` the charge for the kernel queues of those whose sockets refuse
//!   replies; their sum ([`Reactor::charged`]) is every connection's `charged_bytes()`, and
//!   never more than `lease`; the leases of all reactors and the metrics connections'
//!   bytes ([`Reactor::lease_for_http`]) never sum past the budget.
//! - At most [`EVICTIONS_PER_TURN`] connections are closed for the budget in one loop
//!   turn; I/O that finds no room after them does not run ([`Driven::NoRoom`]).
//! - A memory-pressure episode is logged twice: when it starts and once it has been
//!   quiet for [`PRESSURE_QUIET`].

use std::time::{Duration, Instant};

use log::warn;

use super::{Reactor, TimerKey};
use crate::protocol;
use crate::server::close::CloseReason;
use crate::server::connection::{Connection, Context, Next};

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
    pub(super) fn drive(
        &mut self,
        key: usize,
        io: impl FnOnce(&mut Connection, &mut Context) -> Next,
    ) -> Driven {
        if self.charged() + self.headroom > self.lease && !self.grow_lease() {
            self.evict_largest();
            if self.charged() + self.headroom > self.lease {
                return Driven::NoRoom;
            }
        }
        let Some(next) = self.run_accounted(key, io) else {
            return Driven::Gone;
        };
        let charged = self.charged();
        debug_assert!(
            charged <= self.lease,
            "charged {charged} > lease {} after connection {key}'s I/O",
            self.lease
        );
        self.cx.stats.buffered_peak = self.cx.stats.buffered_peak.max(charged as u64);
        if self.lease - charged > self.lease_floor + 2 * LEASE_CHUNK + self.headroom {
            // Far more leased than held: let the other reactors have a chunk.
            self.lease -= LEASE_CHUNK;
            self.shared.give_back(LEASE_CHUNK);
        }
        Driven::Ran(next)
    }

    /// What is charged to the budget: the connections' buffers and the kernel queues of
    /// those whose sockets refuse replies.
    pub(in crate::server) fn charged(&self) -> usize {
        self.buffered + self.cx.kernel_charged
    }

    /// A new loop turn: its share of closes for the budget.
    pub(super) fn new_budget_turn(&mut self) {
        self.evictions_left = EVICTIONS_PER_TURN;
    }

    /// Leases enough more of the budget for one connection's worst case past what is
    /// held, at least a chunk; false if that much is not unleased.
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

    /// Closes the connections that hold the most buffer memory, largest first, until an
    /// eighth of the budget and one connection's worst case are free again (so a pass
    /// frees megabytes and passes are rare), at most this turn's share of closes
    /// ([`EVICTIONS_PER_TURN`]). Each gets `error: server buffer memory exhausted` where it
    /// can still read it (see [`Connection::abandon`]). One scan of the slab per pass, and
    /// the largest picked without sorting them all (`select_nth_unstable`); passes happen
    /// only at the budget.
    fn evict_largest(&mut self) {
        if self.evictions_left == 0 {
            return; // the next turn closes more; meanwhile I/O that needs room waits
        }
        let target = (self.lease - self.lease / 8).saturating_sub(self.headroom);
        let mut holders: Vec<(usize, usize)> = self
            .connections
            .iter()
            .map(|(key, conn)| (conn.charged_bytes(self.cx.limits.kernel_held), key))
            .filter(|&(held, _)| held > 0)
            .collect();
        let candidates = self.evictions_left.min(holders.len());
        if candidates < holders.len() {
            holders.select_nth_unstable_by(candidates, |a, b| b.cmp(a));
            holders.truncate(candidates);
        }
        holders.sort_unstable_by(|a, b| b.cmp(a));
        let now = Instant::now();
        if self.pressure.is_none() {
            warn!(
                "buffer memory budget reached: {} bytes held by {} connections{} (budget {}); \
                 closing the largest holders",
                self.charged(),
                holders.len(),
                self.of_reactor(),
                self.buffer_budget
            );
            self.pressure = Some(Pressure {
                since: now,
                last: now,
                closed: 0,
                freed: 0,
            });
            self.arm_server_timer(PRESSURE_QUIET, TimerKey::Pressure);
        }
        if holders.is_empty() {
            self.evictions_left = 0; // nothing to close: do not scan again this turn
        }
        for (held, key) in holders {
            if self.charged() <= target {
                break;
            }
            self.evictions_left -= 1;
            let Some(next) = self.drive_without_budget(key, |conn, cx| {
                conn.abandon(
                    protocol::MEMORY_BUDGET_EXCEEDED,
                    CloseReason::MemoryBudget,
                    cx,
                )
            }) else {
                continue;
            };
            if let Some(pressure) = &mut self.pressure {
                pressure.last = now;
                pressure.closed += 1;
                pressure.freed += held as u64;
            }
            if next == Next::Wait {
                // Lingering already: input may be waiting with no new edge to announce it
                // (`Linger`, a close that begins now, goes on the ready list in `settle`).
                self.ready.push(key);
            }
            self.settle(key, next);
        }
    }

    /// Leases `bytes` of the budget for the metrics connections: from the unleased pool,
    /// else from this reactor's lease where it is not needed (one connection's worst case
    /// stays free). False if neither has them: the metrics endpoint never closes an echo
    /// connection to make room. Not on the frame path: once per metrics read or answer.
    pub(super) fn lease_for_http(&mut self, bytes: usize) -> bool {
        if bytes == 0 || self.shared.lease(bytes) {
            return true;
        }
        if self.lease.saturating_sub(self.charged() + self.headroom) >= bytes {
            // Moved from this reactor's lease; given back to the pool when released.
            self.lease -= bytes;
            return true;
        }
        false
    }

    /// Gives back `bytes` leased by [`Reactor::lease_for_http`], to the pool.
    pub(super) fn release_for_http(&mut self, bytes: usize) {
        if bytes > 0 {
            self.shared.give_back(bytes);
        }
    }

    /// [`Reactor::drive`] for I/O that only shrinks buffers (no budget check first).
    pub(super) fn drive_without_budget(
        &mut self,
        key: usize,
        io: impl FnOnce(&mut Connection, &mut Context) -> Next,
    ) -> Option<Next> {
        let before = self.charged();
        let result = self.run_accounted(key, io);
        debug_assert!(
            self.charged() <= before,
            "buffers grew: {before} to {}",
            self.charged()
        );
        result
    }

    /// Runs `io` on connection `key` and adds the change in its buffers to `buffered`;
    /// returns `io`'s `Next`, or `None` if the connection is gone.
    fn run_accounted(
        &mut self,
        key: usize,
        io: impl FnOnce(&mut Connection, &mut Context) -> Next,
    ) -> Option<Next> {
        let conn = self.connections.get_mut(key)?;
        let held_before = conn.held_bytes();
        let next = io(conn, &mut self.cx);
        self.buffered = self.buffered - held_before + conn.held_bytes();
        Some(next)
    }

    /// Ends the memory-pressure episode with one summary line once no connection has
    /// been closed for the budget for [`PRESSURE_QUIET`]; else checks again later.
    pub(super) fn check_pressure_over(&mut self) {
        let Some(pressure) = &self.pressure else {
            return;
        };
        let quiet_for = pressure.last.elapsed();
        if quiet_for < PRESSURE_QUIET {
            self.arm_server_timer(PRESSURE_QUIET - quiet_for, TimerKey::Pressure);
            return;
        }
        warn!(
            "buffer memory pressure over after {} ms: closed {} connections holding the most \
             ({} bytes freed); {} bytes held now{}",
            (pressure.last - pressure.since).as_millis(),
            pressure.closed,
            pressure.freed,
            self.charged(),
            self.of_reactor()
        );
        self.pressure = None;
    }
}
