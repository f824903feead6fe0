//! Reactor: one thread, one `mio::Poll`, a `Slab` of connections, a timer wheel. It knows
//! nothing of its siblings but [`Shared`] (the connection count, the buffer budget's
//! leases, the shutdown state) and, for the one that accepts for the others, a
//! [`Dealer`].
//!
//! ```text
//!   poll(timeout = next timer or 0 if work is left)
//!     ├─ LISTENER  → accept up to ACCEPTS_PER_EVENT (more? the Acceptor stays ready);
//!     │              admit (Shared: the global and per-source limits), serve here or
//!     │              deal
//!     ├─ WAKER     → shutdown begun, a snapshot asked, or connections handed to us
//!     ├─ SIGNALS   → SIGINT/SIGTERM, SIGUSR2 (reactor 0 registers them)
//!     ├─ HTTP tokens → the metrics and admin endpoints' listeners and connections
//!     │              (reactor 0, `--metrics`, `--admin`)
//!     └─ Token(key)→ connection: writable first (free buffer space), then readable
//!   revisit the ready list (connections that used their read budget), and the
//!             endpoints' (accepts and connections left over)
//!   expire timers: idle checks (lazy re-arm), linger deadlines, accept resume, stats,
//!                  end of a memory-pressure episode
//!   shutdown: started? all closed or grace over? → return the counters
//!   lifecycle: the steps `server/lifecycle.rs` answers for what the reactor sees (a
//!             shutdown, a move, its rollback, the drain after an upgrade, the stop)
//! ```
//!
//! Files: this one, the loop, a connection's way through it, and the wiring of the
//! reactor's parts, each of which owns its state: `reactor/table.rs`, the connections,
//! their sources and the ready lists (`ConnectionTable`); `reactor/budget.rs`, the
//! buffer-memory budget (`Budget`, its account and leases, and the reactor's `drive` and
//! eviction); `reactor/acceptor.rs`, new connections (`Acceptor`: the listener or the
//! inbox, accepts per turn, the pause; and the reactor's admission and refusals);
//! `reactor/timers.rs`, the clock, the wheel and the deadlines (`Timers`, over
//! `reactor/clock.rs`); `reactor/timer_key.rs`, what each timer is for (`TimerKey`);
//! `reactor/lifecycle.rs`, the steps the pure `server/lifecycle.rs` answers (`Life`):
//! signals, the shutdown, the drain after an upgrade; `reactor/handover.rs`, connections
//! moved out to an upgrade's new process and adopted;
//! `reactor/publish.rs`, snapshots for readers and the turn histogram;
//! `reactor/http_endpoint.rs`, the HTTP endpoints' listeners and connections, what the
//! metrics endpoint answers in `reactor/metrics_page.rs`, and the admin endpoint's
//! listings and closes (each reactor's part of them) in `reactor/admin.rs`.
//!
//! # The buffer-memory budget
//! Every connection's I/O goes through [`Reactor::drive`], which first makes sure the
//! most one connection can hold (`ServerConfig::max_held_per_connection`) still fits in
//! this reactor's lease of the budget, growing the lease from [`Shared`] a mebibyte at a
//! time or, when the budget is all leased, closing this reactor's connections that hold
//! the most until it fits ([`Reactor::evict_largest`], at most `EVICTIONS_PER_TURN` per
//! turn: past them the I/O waits for the next turn, in `waiting_for_room`, and nothing
//! is accepted meanwhile); afterwards it adds the change in that connection's charge to
//! the account ([`Budget`]). A connection is charged its buffers, and its kernel queues
//! while its socket refuses replies ([`Connection::charged_bytes`]). So what is charged
//! is always the exact sum of every connection's charge, and it never exceeds the lease,
//! whose sum over the reactors never exceeds `--max-buffer-memory`. Healthy connections
//! hold next to nothing (their replies go straight to the kernel), so the ones that pay
//! are the ones holding the most.
//!
//! # Invariants
//! - Every connection always has exactly one armed timer (`Connection::timer`), cancelled
//!   when it closes; except while the batch of expiries its timer fired in is handled:
//!   then `timer` is `TimerId::NONE` until the connection is re-armed or closed. So a
//!   close never cancels a dead id, and an expiry never meets a reused slab key (no
//!   connection is added while a batch is handled); one for a connection closed earlier in
//!   the batch (an eviction) finds it vacant, or re-armed, and is skipped.
//! - Every timer on the wheel names what it is for with a [`TimerKey`] (a connection's
//!   slab key, a metrics connection's, or one of the server's own), encoded in the
//!   wheel's `u32` value by `reactor/timer_key.rs` alone.
//! - Each connection's admission (its source) is kept by the connection table
//!   (`reactor/table.rs`) and released exactly once, when the connection leaves it.
//! - Stale events are harmless: an event or ready-list entry for a key closed earlier in
//!   the same turn finds the slot vacant (skipped) or reused by a new connection (one
//!   spurious read that returns WouldBlock).

mod acceptor;
mod admin;
mod budget;
mod clock;
mod handover;
mod http_endpoint;
mod lifecycle;
mod metrics_page;
mod proxy_intake;
mod publish;
mod table;
mod timer_key;
mod timers;

use acceptor::Acceptor;
use budget::{Budget, Driven};
use lifecycle::Life;
use std::io;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Duration;

use log::{debug, warn};
use mio::{Events, Interest, Poll, Token, Waker};

use super::admin_exchange::AdminDesk;
use super::conn_id::ConnIds;
use super::connection::{Connection, Context, Limits, Next};
use super::deal::{Dealer, Inbox};
use super::handover::Moved;
use super::lifecycle::Phase;
use super::listener::Listener;
use super::shared::Shared;
use super::signal::ServerSignals;
use super::snapshot::Publisher;
use super::source::Source;
use super::turn_budget::{TurnBudget, PRESSED_READ_LEN};
use super::upgrade::Upgrader;
use crate::config::ServerConfig;
use crate::counters::CloseReason;
use crate::counters::Stats;
use crate::size::Size;
use crate::stream::Stream;
use crate::timer_wheel::TimerId;
use http_endpoint::{HttpEndpoints, Which, HTTP_TOKENS};
use proxy_intake::{ProxyIntake, PROXY_TOKENS};
use table::{ConnectionTable, Opened};
use timer_key::TimerKey;
pub use timer_key::MAX_CONNECTION_KEYS;
use timers::Timers;

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
const SIGNALS: Token = Token(usize::MAX - 3);

/// Size of the one read buffer: the largest read (a read takes at most the room under the
/// high-water mark, but a closing connection's discarded input is read at this size).
const READ_BUF_SIZE: usize = 64 * 1024;
/// Connection slots (and timer entries) reserved at start, at most. Reserving is address
/// space only: a page is touched when a connection first lands in it, so an idle
/// server's RSS does not grow, each connection costs exactly its slot and timer entry
/// (no doubling slack), and a growing slab never copies itself. 2^20 slots of 112 bytes
/// is 112 MiB of address space at most.
const MAX_RESERVED_CONNECTIONS: usize = 1 << 20;
/// Events taken per poll.
const EVENTS_CAPACITY: usize = 1024;
/// Calls [`Shared::reactor_done`] when a reactor's loop ends, by return or by panic.
struct DoneGuard(Arc<Shared>);

impl Drop for DoneGuard {
    fn drop(&mut self) {
        self.0.reactor_done();
    }
}

/// One reactor of a server, bound, not yet running.
pub struct Reactor {
    /// This reactor's index in its server (0 registers the signals).
    id: ReactorId,
    poll: Poll,
    /// The listener or the inbox new connections come from, the accepts per turn, the
    /// pause when descriptors run out.
    acceptor: Acceptor,
    /// The connections, the source each was admitted under, and those to serve again.
    table: ConnectionTable,
    /// The clock, the wheel of deadlines, and the durations they are set by.
    timers: Timers,
    config: ServerConfig,
    /// The connection count, the budget's leases and the shutdown state of the server.
    shared: Arc<Shared>,
    /// The phase, the signals, the upgrader and the move's channels.
    life: Life,
    /// Buffers, limits and counters shared by every connection.
    cx: Context,
    /// The buffer-memory budget's account: what the connections hold, this reactor's
    /// lease, the closes left this turn, the pressure episode.
    budget: Budget,
    waker: Arc<Waker>,
    /// Snapshots for readers and the metrics endpoint.
    endpoints: Endpoints,
}

/// How a reactor is set up: what [`Reactor::new`] takes.
pub struct Setup {
    /// Its index in the server.
    pub id: usize,
    /// Reactors in the server.
    pub of: usize,
    /// Its own listener, if it accepts.
    pub listener: Option<Listener>,
    /// Where its connections come from, if others accept for it.
    pub inbox: Option<Inbox>,
    /// Where connections to adopt come from (an upgrade's hand-over).
    pub adoptions: Receiver<Moved>,
    /// What the reactors share.
    pub shared: Arc<Shared>,
    /// The part of the budget leased to it for good.
    pub lease_floor: usize,
}

impl Reactor {
    /// A reactor with its own poll, slab, wheel and buffers; does not serve yet.
    pub fn new(config: ServerConfig, setup: Setup) -> io::Result<Reactor> {
        let Setup {
            id,
            of,
            mut listener,
            inbox,
            adoptions,
            shared,
            lease_floor,
        } = setup;
        let poll = Poll::new()?;
        if let Some(listener) = listener.as_mut() {
            poll.registry()
                .register(listener, LISTENER, Interest::READABLE)?;
        }
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let max_connections = shared.max_connections();

        let reserved = max_connections.min(MAX_RESERVED_CONNECTIONS);
        // `ServerConfig::validate` (run by both of `Server`'s constructors) bounds these by
        // `MAX_CONNECTION_BYTES`, so pending output (at most high water plus one reply)
        // always fits `Connection::sent`'s `u32`, and refuses a high water of 0.
        debug_assert!(config.max_frame <= crate::config::MAX_CONNECTION_BYTES);
        debug_assert!((1..=crate::config::MAX_CONNECTION_BYTES).contains(&config.high_water));
        let limits = Limits {
            max_frame: config.max_frame,
            high_water: config.high_water,
            low_water: config.high_water / 2,
            kernel_held: config.kernel_held_when_stalled(),
        };
        let headroom = config.max_held_per_connection();
        let budget = Budget::new(
            shared.clone(),
            lease_floor,
            config.max_buffer_memory,
            headroom,
        );
        Ok(Reactor {
            id: ReactorId { index: id, of },
            poll,
            acceptor: Acceptor::new(
                listener,
                inbox,
                ProxyIntake::new(config.proxy_protocol_from.clone()),
            ),
            table: ConnectionTable::new(
                reserved,
                config
                    .max_connections_per_source
                    .map(|_| config.source_prefix_v6),
                ConnIds::new(0, id, of),
            ),
            timers: Timers::new(
                config.idle_timeout,
                config.linger,
                config.shutdown_grace,
                // One timer per connection, the endpoints' connections' and the server's own
                // few.
                reserved + Which::ALL.len() * crate::http::MAX_CONNECTIONS + 5,
            ),
            shared,
            life: Life::new(adoptions),
            budget,
            config,
            cx: Context {
                read_buf: vec![0; READ_BUF_SIZE].into_boxed_slice(),
                spare_buf: vec![0; PRESSED_READ_LEN].into_boxed_slice(),
                turn: TurnBudget::default(),
                replies: Vec::new(),
                limits,
                stats: Stats::default(),
                now_us: 0,
            },
            waker,
            endpoints: Endpoints {
                publisher: None,
                desk: None,
                http: None,
            },
        })
    }

    /// This reactor has a listener of its own.
    pub fn accepts(&self) -> bool {
        self.acceptor.accepts()
    }

    /// Makes this reactor deal the connections it accepts over the server's reactors.
    pub fn set_dealer(&mut self, dealer: Dealer) {
        self.acceptor.set_dealer(dealer);
    }

    /// Numbers this reactor's connections from `base` (an upgrade's new process gets a base
    /// of its own: `server::conn_id`). Before it runs.
    pub fn set_connection_id_base(&mut self, base: u64) {
        self.table
            .set_ids(ConnIds::new(base, self.id.index, self.id.of));
    }

    /// This reactor's waker: what a shutdown, a snapshot request or a dealt connection wakes.
    pub fn waker(&self) -> Arc<Waker> {
        self.waker.clone()
    }

    /// Makes SIGINT and SIGTERM start the graceful shutdown (a second one ends it at once),
    /// and SIGUSR2 an upgrade if `upgrader` is given.
    pub fn handle_signals(&mut self, upgrader: Option<Upgrader>) -> io::Result<()> {
        self.life.signals = Some(ServerSignals::register(
            self.poll.registry(),
            SIGNALS,
            upgrader.is_some(),
        )?);
        self.life.upgrader = upgrader;
        Ok(())
    }

    /// Serves until shut down; returns the counters. Only a failure of the poll itself
    /// is an error: a connection's errors close that connection.
    pub fn run(mut self) -> io::Result<Stats> {
        // Tells reactor 0 this loop has ended, however it ends (a panic included).
        let _done = DoneGuard(self.shared.clone());
        if let Some(every) = self.config.stats_interval {
            self.arm_server_timer(every, TimerKey::Stats);
        }
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        let mut expired = Vec::new();
        while self.life.phase() != Phase::Stopped {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            self.refresh_now();
            let turn_start_us = self.cx.now_us;
            self.cx.start_turn();
            self.new_budget_turn();
            for event in events.iter() {
                // Every token but a connection's is at PROXY_TOKENS or above: one comparison
                // tells a connection's event, the common one, from the rest.
                match event.token() {
                    Token(key) if key < PROXY_TOKENS => {
                        // Errors and hang-ups show up as a failed read or write.
                        let failed = event.is_error();
                        let hangup = event.is_read_closed() || failed;
                        if hangup {
                            if let Some(conn) = self.table.get_mut(key) {
                                conn.note_hangup();
                            }
                        }
                        let writable = event.is_writable() || failed;
                        let readable = event.is_readable() || hangup;
                        self.on_connection_event(key, readable, writable);
                    }
                    LISTENER => self.acceptor.mark_ready(),
                    WAKER => {
                        let keys = self.take_dealt();
                        if self.life.phase() == Phase::Moving {
                            self.move_out(keys);
                        }
                        self.take_moved();
                        // After taking what was dealt and moved to it: a snapshot or an
                        // admin part counts them.
                        self.on_wake();
                        self.collect_sibling_parts();
                    }
                    SIGNALS => self.on_signal(),
                    Token(token) if token >= HTTP_TOKENS => self.on_http_event(token - HTTP_TOKENS),
                    Token(token) => self.on_proxy_event(token - PROXY_TOKENS),
                }
            }
            self.revisit_ready();
            self.revisit_http();
            if self.acceptor.is_ready() {
                // A long turn must not age the new connections: their idle deadline
                // counts from now.
                self.refresh_now();
                self.accept_connections();
            }
            self.expire_timers(&mut expired);
            self.advance_phase();
            self.end_turn(turn_start_us);
        }
        self.close_http_endpoints();
        debug_assert_eq!(
            self.charged(),
            0,
            "buffer bytes or kernel queues left accounted after every close"
        );
        debug_assert!(
            self.table.all_released(),
            "a connection or its source was never released"
        );
        self.budget.give_back_surplus();
        self.publish_last();
        debug!("reactor {} done: {}", self.id.index, self.cx.stats);
        Ok(self.cx.stats)
    }

    /// Runs the timers due by now: idle checks, lingers, accept resume, stats, the ends
    /// of the grace period and of a memory-pressure episode.
    fn expire_timers(&mut self, expired: &mut Vec<u32>) {
        // Timers judge by a fresh clock, the same one the wheel is polled with, so an
        // idle check never re-arms a deadline the wheel considers passed.
        self.refresh_now();
        self.timers.expire(self.cx.now_us, expired);
        // Every connection whose timer fired holds no armed timer from here on, so a
        // close while this batch is handled (an eviction closing another connection
        // of the batch) never cancels an id the wheel may have reused.
        for &value in expired.iter() {
            match TimerKey::from_value(value) {
                TimerKey::Conn(key) => {
                    if let Some(conn) = self.table.get_mut(key) {
                        conn.set_timer(TimerId::NONE);
                    }
                }
                TimerKey::Http(key) => self.http_timer_fired(key),
                _ => {}
            }
        }
        for value in expired.drain(..) {
            self.on_timer(TimerKey::from_value(value));
        }
    }

    /// Zero when work is left over (ready list, listener), else until the next timer,
    /// counted from the clock the turn's timers were judged by (read microseconds ago): a
    /// clock read per turn saved (about 20 instructions per frame at pipeline 1 and 10
    /// connections), for a wake-up at most those microseconds late, far under a tick.
    fn poll_timeout(&self) -> Option<Duration> {
        if self.table.has_work() || self.acceptor.has_work() || self.http_work_left() {
            return Some(Duration::ZERO);
        }
        self.timers.until_next(self.cx.now_us)
    }

    // Inlined into the loop and the revisits: the event path of every frame. Left to the
    // compiler (once `drive` could answer `NoRoom`, and once the loop grew the metrics
    // arms), it became a call: 8 to 19 more instructions per frame at pipeline 1
    // (callgrind, BENCHMARKS.md sections 8 and 13).
    #[inline(always)]
    fn on_connection_event(&mut self, key: usize, readable: bool, writable: bool) {
        let driven = self.drive(key, |conn, cx| {
            // Writable first: sending frees buffer space (and may lift backpressure) before
            // reading adds more output.
            let mut next = Next::Wait;
            if writable {
                next = conn.on_writable(cx);
            }
            if readable && next == Next::Wait {
                cx.check_turn();
                next = conn.on_readable(cx);
            }
            next
        });
        match driven {
            Driven::Ran(next) => self.settle(key, next),
            Driven::Gone => {} // closed earlier in this batch, or now for the budget
            Driven::NoRoom => self.table.waiting_for_room.push(key),
        }
    }

    /// Reads again the connections whose read budget ran out, in this turn's events or
    /// earlier revisits, in order: one more budget each, while the turn's work budget
    /// lasts (`TurnBudget`; the first is always served, so each is in turn). What is still
    /// unread then waits for the next turn, after a poll that does not block (the ready
    /// list makes its timeout zero): first those this revisit did not reach, then those
    /// it served that had more. Then serves the connections that waited for room under
    /// the budget last turn.
    fn revisit_ready(&mut self) {
        // Walk this list while new entries go to the spare one; both keep their buffers.
        let mut ready = std::mem::replace(
            &mut self.table.ready,
            std::mem::take(&mut self.table.ready_spare),
        );
        let mut served = 0;
        for &key in &ready {
            if served > 0 && self.cx.turn.pressed() {
                break;
            }
            served += 1;
            self.on_connection_event(key, true, false);
        }
        if served == ready.len() {
            ready.clear();
            self.table.ready_spare = ready;
        } else {
            ready.drain(..served);
            ready.append(&mut self.table.ready);
            self.table.ready_spare = std::mem::replace(&mut self.table.ready, ready);
        }
        if !self.table.waiting_for_room.is_empty() {
            // Rare (the budget's closes spent): those still without room wait again.
            for key in std::mem::take(&mut self.table.waiting_for_room) {
                self.on_connection_event(key, true, true);
            }
        }
    }

    /// Applies a connection's `Next`: read it again next turn, arm its linger deadline if
    /// it just began closing, or close it.
    #[inline(always)]
    fn settle(&mut self, key: usize, next: Next) {
        match next {
            Next::Wait => {}
            Next::ReadAgain => self.table.ready.push(key),
            Next::Linger(reason) => self.linger(key, reason),
            Next::Close(reason) => self.close(key, reason),
        }
    }

    /// Connection `key` has begun a lingering close: its idle timer becomes the linger
    /// deadline, and it is read again next turn (input left unread while reading was
    /// paused raises no new edge; it is discarded now, so the linger sees the peer's EOF).
    fn linger(&mut self, key: usize, reason: CloseReason) {
        let Some(conn) = self.table.get_mut(key) else {
            return;
        };
        if conn.timer() != TimerId::NONE {
            self.timers.cancel(conn.timer());
        }
        let deadline_us = self.timers.linger_deadline(self.cx.now_us, reason);
        conn.set_timer(self.timers.arm_at(deadline_us, TimerKey::Conn(key)));
        self.table.ready.push(key);
    }

    /// Serves a connection admitted from `source`; returns its key, or `None` if it could
    /// not be registered (then it is closed and released).
    fn add_connection(&mut self, stream: Stream, source: Option<Source>) -> Option<usize> {
        let now_us = self.cx.now_us;
        let opened = self.table.open_at(now_us);
        let key = self.insert_connection(stream, source, opened, |s| Connection::new(s, now_us))?;
        self.cx.stats.accepted += 1;
        Some(key)
    }

    /// Registers `stream`, admitted from `source` and opened as `opened` says, as the
    /// connection `make` builds (a new one, or one moved in with its state), records its
    /// source, charges its buffers, and arms its one timer: its linger deadline if it is
    /// closing, else its idle deadline from its last progress. Returns its key, or `None`
    /// if it could not be registered (then it is closed and its admission released).
    fn insert_connection(
        &mut self,
        mut stream: Stream,
        source: Option<Source>,
        opened: Opened,
        make: impl FnOnce(Stream) -> Connection,
    ) -> Option<usize> {
        let key = self.table.vacant_key();
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            warn!("register: {e}; dropping connection");
            self.shared.release(source.as_ref());
            return None;
        }
        if log::log_enabled!(log::Level::Debug) {
            debug!("open {} as {key}", stream.peer_name());
        }
        let (key, conn) = self.table.insert(make(stream), source, opened);
        let deadline_us = match conn.closing() {
            Some(reason) => self.timers.linger_deadline(self.cx.now_us, reason),
            None => self.timers.idle_deadline(conn.last_progress_us()),
        };
        conn.set_timer(self.timers.arm_at(deadline_us, TimerKey::Conn(key)));
        // Only a connection moved in holds anything yet.
        let charge = conn.charged_bytes(self.cx.limits.kernel_held);
        if charge > 0 {
            self.budget.account(0, charge);
        }
        Some(key)
    }

    fn close(&mut self, key: usize, reason: CloseReason) {
        let Some((conn, admission)) = self.table.remove(key) else {
            return;
        };
        if conn.timer() != TimerId::NONE {
            self.timers.cancel(conn.timer());
        }
        self.release(key, conn, admission.source, reason);
    }

    /// Closes every connection now, for the shutdown: its grace period is over, or a
    /// second signal forced it. Replies still owed are lost (such connections are reset).
    fn close_all(&mut self) {
        let keys: Vec<usize> = self.table.keys();
        for key in keys {
            self.close(key, CloseReason::Shutdown);
        }
    }

    /// Takes connection `key` (out of the slab and the wheel already) out of this reactor's
    /// accounts, whether it closes or moves to an upgrade's new process: out of the poll,
    /// its charges taken back (a surplus lease given back now), its admission released.
    fn detach(&mut self, conn: &mut Connection, source: Option<Source>) {
        // Closing the descriptor would remove it from epoll too, but a moved socket lives
        // on elsewhere, and deregistering keeps mio's contract on every platform.
        let _ = self.poll.registry().deregister(conn.stream_mut());
        self.budget
            .release(conn.charged_bytes(self.cx.limits.kernel_held));
        self.budget.settle_lease_unchecked(self.charged());
        self.shared.release(source.as_ref());
    }

    /// Closes a connection already out of the slab and the wheel.
    fn release(
        &mut self,
        key: usize,
        mut conn: Connection,
        source: Option<Source>,
        reason: CloseReason,
    ) {
        self.detach(&mut conn, source);
        if conn.owes_replies() {
            // Replies owed will never be sent (idle, grace over, budget): reset, so the
            // peer cannot take a cut reply for a clean end, and the kernel frees the
            // socket's buffers at once instead of keeping an orphan that still tries to
            // deliver (nginx's reset_timedout_connection).
            conn.stream().reset_on_close();
        }
        self.cx.stats.count_close(reason);
        debug!("close {key}: {reason}");
        drop(conn);
        if self.acceptor.is_paused() {
            // A descriptor was freed: try the backlog now.
            self.resume_accepting();
        }
    }

    fn on_timer(&mut self, key: TimerKey) {
        match key {
            TimerKey::AcceptResume => self.resume_accepting(),
            TimerKey::Stats => {
                debug_assert_eq!(
                    self.table
                        .iter()
                        .map(|(_, c)| c.charged_bytes(self.cx.limits.kernel_held))
                        .sum::<usize>(),
                    self.charged(),
                    "buffered bytes and kernel queues accounted"
                );
                // With several reactors the server logs the totals; each its own at debug.
                let level = if self.id.alone() {
                    log::Level::Info
                } else {
                    log::Level::Debug
                };
                log::log!(
                    level,
                    "stats{}: {} connections open, {} buffered; {}",
                    self.of_reactor(),
                    self.table.len(),
                    Size(self.charged()),
                    self.cx.stats
                );
                if let Some(every) = self.config.stats_interval {
                    self.arm_server_timer(every, TimerKey::Stats);
                }
            }
            TimerKey::Pressure => self.check_pressure_over(),
            TimerKey::UpgradeDrain => {
                if self.life.state.drain_grace_over() {
                    // The drain's grace is over: the shutdown's lingering close, bounded
                    // by the ordinary linger (the grace has been given already).
                    self.begin_shutdown(self.config.linger);
                }
            }
            TimerKey::Shutdown => self.close_all(),
            TimerKey::Http(key) => self.on_http_timer(key),
            TimerKey::Proxy(key) => self.on_proxy_timer(key),
            TimerKey::Conn(key) => self.on_connection_timer(key),
        }
    }

    /// The lazy idle check: re-arm if progress happened since the timer was armed.
    /// The connection's timer has fired (its `timer` is `NONE`): it is re-armed or the
    /// connection is released without a cancel.
    fn on_connection_timer(&mut self, key: usize) {
        let Some(conn) = self.table.get(key) else {
            return; // closed earlier in this batch, for the budget or the grace period
        };
        if conn.timer() != TimerId::NONE {
            return; // given a new timer earlier in this batch (closed for the budget)
        }
        if conn.closing().is_none() && conn.owes_replies() {
            // Probe before judging: a client reading a long run of replies frees send-buffer
            // space continuously, but the edge-triggered writable event comes only when the
            // free space crosses the kernel's wake-up threshold (half the buffer on Linux),
            // which a multi-megabyte autotuned buffer may not do within the timeout.
            match self.drive(key, |conn, cx| conn.on_writable(cx)) {
                Driven::Gone => return, // closed for the budget
                Driven::Ran(Next::Close(reason)) => {
                    if let Some((conn, admission)) = self.table.remove(key) {
                        self.release(key, conn, admission.source, reason);
                    }
                    return;
                }
                Driven::Ran(next @ Next::Linger(_)) => {
                    // A frame too long in the input it held: lingering, with its own timer.
                    self.settle(key, next);
                    return;
                }
                Driven::Ran(Next::ReadAgain) => self.table.ready.push(key),
                Driven::Ran(Next::Wait) => {}
                Driven::NoRoom => {
                    // No probe without room: judge it one tick from now, after the next
                    // turn's closes for the budget.
                    let deadline_us = self.cx.now_us.saturating_add(self.timers.tick_us());
                    if let Some(conn) = self.table.get_mut(key) {
                        conn.set_timer(self.timers.arm_at(deadline_us, TimerKey::Conn(key)));
                    }
                    return;
                }
            }
        }
        let Some(conn) = self.table.get_mut(key) else {
            return;
        };
        if conn.timer() != TimerId::NONE {
            return; // closed for the budget while probed: lingering, with its own timer
        }
        let mut deadline_us = self.timers.idle_deadline(conn.last_progress_us());
        let reason = match conn.closing() {
            Some(reason) => Some(reason),
            None if self.cx.now_us >= deadline_us => {
                if conn.reads_input() && conn.stream().has_input() {
                    // Input arrived that this busy turn has not read yet (its event is
                    // in the next poll): judge after reading it, one tick from now.
                    deadline_us = self.cx.now_us.saturating_add(self.timers.tick_us());
                    None
                } else {
                    Some(CloseReason::Idle)
                }
            }
            None => None,
        };
        if let Some(reason) = reason {
            if let Some((conn, admission)) = self.table.remove(key) {
                self.release(key, conn, admission.source, reason);
            }
        } else {
            conn.set_timer(self.timers.arm_at(deadline_us, TimerKey::Conn(key)));
        }
    }

    fn arm_server_timer(&mut self, after: Duration, key: TimerKey) {
        self.timers.arm_after(after, key);
    }

    /// Reads the clock into the turn's time, which connections judge progress by: at a
    /// turn's start, before the timers and an accept after a long turn, and where
    /// connections arrive from elsewhere (dealt, moved in).
    fn refresh_now(&mut self) {
        self.cx.now_us = self.timers.now_us();
    }

    /// ` of reactor N` in the logs of a server with several reactors, else nothing.
    fn of_reactor(&self) -> String {
        if self.id.alone() {
            String::new()
        } else {
            format!(" of reactor {}", self.id.index)
        }
    }
}

/// Which reactor of its server this is.
#[derive(Debug, Clone, Copy)]
struct ReactorId {
    /// Its index (0 registers the signals and ends last).
    index: usize,
    /// Reactors in the server.
    of: usize,
}

impl ReactorId {
    /// The only reactor of its server: its stats lines are the server's, at info.
    fn alone(self) -> bool {
        self.of == 1
    }
}

/// What a reactor serves beside its connections.
struct Endpoints {
    /// Serves snapshot requests and times turns; `None` until a `snapshot_handle` is taken.
    publisher: Option<Box<Publisher>>,
    /// Answers this reactor's part of admin requests asked by the reactor that serves the
    /// admin endpoint; `None` until an `admin_handle` is taken.
    desk: Option<Box<AdminDesk>>,
    /// The HTTP endpoints served on this reactor's poll (reactor 0 with `--metrics` or
    /// `--admin`); `None` when neither is, so that the loop's look for their work each
    /// turn is one test.
    http: Option<Box<HttpEndpoints>>,
}
