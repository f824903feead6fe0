//! Acceptor: where a reactor's new connections come from (its listener, or the inbox of
//! connections another reactor accepted for it), how many it accepts per turn, and the
//! pause when descriptors run out. It admits nothing and serves nothing: the reactor
//! takes each connection from it, admits it and serves it (or deals it to a sibling
//! through the [`Dealer`]).
//!
//! # Invariants
//! - At most [`ACCEPTS_PER_EVENT`] accepts per turn; when a turn ends on that bound the
//!   acceptor stays ready, so the rest is accepted next turn (the listener is
//!   edge-triggered: no new event would come for it).
//! - While paused, nothing is accepted; `paused_since` is set exactly while paused, and
//!   only [`Acceptor::resume`] (the resume timer, or a close that freed a descriptor)
//!   clears it, making the acceptor ready again.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::{debug, warn};

use super::proxy_intake::ProxyIntake;
use super::{Reactor, TimerKey};
use crate::counters::CloseReason;
use crate::protocol;
use crate::server::deal::{Admitted, Dealer, Dealt, Inbox};
use crate::server::listener::{self, Listener};
use crate::server::shared::Refusal;
use crate::server::source::Source;
use crate::stream::Stream;

/// Accepts per turn before the connections get theirs; the rest are accepted on the next
/// turn (the listener is edge-triggered, so the acceptor remembers). Each new connection
/// may bring a turn's worth of work at once (a flooder is answered about 20,000 frames
/// before its socket stalls), so this bounds how much a connection storm adds to the turn
/// the established connections wait on: with 256, 5,000 flooders arriving in one second
/// kept turns at 20-50 ms for seconds and healthy clients' p99 at 170-520 ms; with 32,
/// p99 was 17-77 ms over runs; with 16, 16-36 ms, with 1 and 2 reactors (scripts/attack.sh
/// mix, BENCHMARKS.md section 13). The backlog waits in the kernel's accept queue
/// meanwhile; 16 per turn is still tens of thousands of accepts a second. HAProxy bounds
/// the same way (`tune.maxaccept`).
pub(super) const ACCEPTS_PER_EVENT: usize = 16;

/// What [`Acceptor::next`] found.
#[derive(Debug)]
pub(super) enum Accept {
    /// A new connection, and its peer's address (TCP).
    Connection(Stream, Option<SocketAddr>),
    /// Nothing more to accept this turn: the backlog is empty, or this turn's accepts are
    /// spent (then the acceptor stays ready for the next turn).
    Done,
    /// Accepting failed in a way that retrying at once would only repeat (out of
    /// descriptors or kernel memory, or an error not expected): the reactor pauses it.
    Failed(io::Error),
}

/// A reactor's sources of new connections and its accept state.
pub(super) struct Acceptor {
    /// `None` once a shutdown or a move began, or if other reactors accept for this one.
    listener: Option<Listener>,
    /// The listener while connections move to an upgrade's new process: out of the poll,
    /// kept in case the move rolls back.
    parked: Option<Listener>,
    /// Deals accepted connections over the reactors, when this one accepts for others.
    dealer: Option<Dealer>,
    /// Connections other reactors accepted for this one.
    inbox: Option<Inbox>,
    /// The listener may have connections left to accept (an event came, this turn's
    /// accepts were spent, or accepting resumed).
    ready: bool,
    /// When accepting paused for lack of descriptors, if it is paused.
    paused_since: Option<Instant>,
    /// Accepts left in this turn.
    left: usize,
    /// Connections from trusted proxies waiting for their PROXY header.
    pub(super) intake: ProxyIntake,
}

impl Acceptor {
    /// The acceptor of a reactor with these sources (the listener already registered). A
    /// dealer, which needs every reactor's waker, is set once all are built
    /// ([`Acceptor::set_dealer`]).
    pub(super) fn new(
        listener: Option<Listener>,
        inbox: Option<Inbox>,
        intake: ProxyIntake,
    ) -> Acceptor {
        Acceptor {
            listener,
            parked: None,
            dealer: None,
            inbox,
            ready: false,
            paused_since: None,
            left: 0,
            intake,
        }
    }

    /// It has a listener of its own.
    pub(super) fn accepts(&self) -> bool {
        self.listener.is_some()
    }

    /// Makes it deal what it accepts over the server's reactors.
    pub(super) fn set_dealer(&mut self, dealer: Dealer) {
        self.dealer = Some(dealer);
    }

    /// It deals what it accepts to other reactors.
    pub(super) fn deals(&self) -> bool {
        self.dealer.is_some()
    }

    /// Other reactors accept for it.
    pub(super) fn has_inbox(&self) -> bool {
        self.inbox.is_some()
    }

    /// The listener's event: there are connections to accept.
    pub(super) fn mark_ready(&mut self) {
        self.ready = true;
    }

    /// Connections may be waiting in the listener (accept them this turn).
    pub(super) fn is_ready(&self) -> bool {
        self.ready
    }

    /// Accepting is left over for a turn that should come without waiting.
    pub(super) fn has_work(&self) -> bool {
        self.ready && self.paused_since.is_none()
    }

    /// Accepting is paused for lack of descriptors.
    pub(super) fn is_paused(&self) -> bool {
        self.paused_since.is_some()
    }

    /// Starts this turn's accepts; false if there are none to make (paused: the resume
    /// timer or the next close retries; or no listener).
    pub(super) fn start_turn(&mut self) -> bool {
        self.ready = false;
        self.left = ACCEPTS_PER_EVENT;
        self.paused_since.is_none() && self.listener.is_some()
    }

    /// The next connection of this turn, at most [`ACCEPTS_PER_EVENT`] per turn (an
    /// interrupted or aborted accept counts as one).
    pub(super) fn next(&mut self) -> Accept {
        loop {
            if self.left == 0 {
                // Budget spent: accept the rest next turn, after the connections had theirs.
                self.ready = true;
                return Accept::Done;
            }
            self.left -= 1;
            let Some(listener) = &self.listener else {
                return Accept::Done;
            };
            match listener.accept() {
                Ok((stream, peer)) => return Accept::Connection(stream, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Accept::Done,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                // Out of descriptors (EMFILE/ENFILE) or kernel memory, or an error we do
                // not expect: retrying at once would spin, and the listener is
                // edge-triggered, so no event will come for the connections still in the
                // backlog. The reactor pauses, and retries from a timer and after any close.
                Err(e) => return Accept::Failed(e),
            }
        }
    }

    /// Pauses accepting from `now` (after [`Accept::Failed`]).
    pub(super) fn pause(&mut self, now: Instant) {
        self.paused_since = Some(now);
    }

    /// Ends a pause at `now`, making it ready to try the backlog; how long it lasted, if
    /// it was paused.
    pub(super) fn resume(&mut self, now: Instant) -> Option<Duration> {
        let since = self.paused_since.take()?;
        self.ready = true;
        Some(now.saturating_duration_since(since))
    }

    /// Deals a connection it accepted: back if this reactor serves it, `None` if it went
    /// to a sibling (or there was none to give it to, and it was dropped).
    pub(super) fn deal(&mut self, admitted: Admitted) -> Option<Admitted> {
        match self.dealer.as_mut() {
            None => Some(admitted),
            Some(dealer) => match dealer.deal(admitted) {
                Dealt::Keep(admitted) => Some(admitted),
                Dealt::Sent => None,
            },
        }
    }

    /// The connections other reactors accepted for this one since the last call.
    pub(super) fn dealt(&self) -> Vec<Admitted> {
        match &self.inbox {
            Some(inbox) => inbox.try_iter().collect(),
            None => Vec::new(),
        }
    }

    /// Stops accepting (a shutdown, a handover, a move to an upgrade's new process): the
    /// listener, for the reactor to deregister and close, leave to the new process, or
    /// park until the move is over.
    pub(super) fn take_listener(&mut self) -> Option<Listener> {
        self.ready = false;
        self.listener.take()
    }

    /// Accepts on `listener` again (registered again: a move rolled back), at once: the
    /// backlog may have filled meanwhile, and no edge announces it.
    pub(super) fn restore_listener(&mut self, listener: Listener) {
        self.listener = Some(listener);
        self.ready = true;
    }

    /// Keeps `listener` (out of the poll) while connections move, in case it rolls back.
    pub(super) fn park(&mut self, listener: Listener) {
        self.parked = Some(listener);
    }

    /// The listener parked for a move: to accept on again, or to leave to the new process.
    pub(super) fn take_parked(&mut self) -> Option<Listener> {
        self.parked.take()
    }
}

/// How long accepting pauses when descriptors run out, before it is retried.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

impl Reactor {
    /// Accepts this turn's share of new connections ([`ACCEPTS_PER_EVENT`]), admits each
    /// (the global and per-source limits) and serves it here or deals it to a sibling.
    pub(super) fn accept_connections(&mut self) {
        if !self.table.waiting_for_room.is_empty() {
            // The budget's closes for this turn did not make room for everyone: new
            // connections would only add to the shortage. They wait in the kernel's accept
            // queue until the next turn, and the acceptor stays ready.
            return;
        }
        if !self.acceptor.start_turn() {
            return; // paused: the resume timer or the next close retries
        }
        loop {
            let (stream, peer) = match self.acceptor.next() {
                Accept::Connection(stream, peer) => (stream, peer),
                Accept::Done => return,
                Accept::Failed(e) => {
                    // Retry from a timer, and after any close.
                    let what = if listener::is_resource_exhaustion(&e) {
                        "out of resources"
                    } else {
                        "unexpected error"
                    };
                    warn!(
                        "accept: {e} ({what}); pausing accepts for {} ms ({} connections open)",
                        ACCEPT_PAUSE.as_millis(),
                        self.table.len()
                    );
                    self.cx.stats.accept_pauses += 1;
                    self.acceptor.pause(Instant::now());
                    self.arm_server_timer(ACCEPT_PAUSE, TimerKey::AcceptResume);
                    return;
                }
            };
            if self.acceptor.intake.trusts(&stream, peer) {
                // Its source is the one its PROXY header names: counted then.
                if let Err(refusal) = self.shared.admit_unsourced() {
                    self.refuse(stream, None, refusal);
                    continue;
                }
                let admitted = Admitted::awaiting_header(stream, self.shared.clone());
                if let Some(admitted) = self.acceptor.deal(admitted) {
                    let (stream, _) = admitted.serve();
                    self.take_in_proxied(stream);
                }
                continue;
            }
            let source = match self.table.source_of(&stream, peer) {
                Ok(source) => source,
                Err(e) => {
                    // Gone before it could be counted (the peer already reset it).
                    debug!("dropped a new connection: its source is unknown: {e}");
                    continue;
                }
            };
            if let Err(refusal) = self.shared.admit(source, Instant::now()) {
                self.refuse(stream, source, refusal);
                continue;
            }
            let admitted = Admitted::new(stream, source, self.shared.clone());
            if let Some(admitted) = self.acceptor.deal(admitted) {
                let (stream, source) = admitted.serve();
                self.add_connection(stream, source);
            }
        }
    }

    /// Refuses a connection over a limit: counted, logged (a per-source refusal once per
    /// source per 10 s, at warn; a global one at debug), and closed after its error line.
    pub(super) fn refuse(&mut self, stream: Stream, source: Option<Source>, refusal: Refusal) {
        let line = match refusal {
            Refusal::Global => {
                self.cx.stats.rejected += 1;
                debug!(
                    "refused {}: limit {} reached",
                    stream.peer_name(),
                    self.shared.max_connections()
                );
                protocol::TOO_MANY_CONNECTIONS
            }
            Refusal::PerSource { log } => {
                self.cx.stats.rejected_per_source += 1;
                if let (Some(unlogged), Some(source)) = (log, source) {
                    warn!(
                        "refusing connections from {source}: it has {} open \
                         (--max-connections-per-source); {unlogged} more refused since \
                         the last such line, which comes at most every 10 s per source",
                        self.shared.max_connections_per_source().unwrap_or(0)
                    );
                }
                protocol::TOO_MANY_CONNECTIONS_FROM_SOURCE
            }
        };
        listener::refuse(stream, line);
    }

    /// Connections another reactor accepted for this one (already admitted); returns
    /// their keys.
    pub(super) fn take_dealt(&mut self) -> Vec<usize> {
        let handed = self.acceptor.dealt();
        let mut keys = Vec::with_capacity(handed.len());
        if handed.is_empty() {
            return keys;
        }
        self.refresh_now();
        for admitted in handed {
            if admitted.awaits_header() {
                let (stream, _) = admitted.serve();
                self.take_in_proxied(stream);
                continue;
            }
            let (stream, source) = admitted.serve();
            let key = self.add_connection(stream, source);
            keys.extend(key);
            if let (Some(key), true) = (key, self.life.state.closes_arrivals()) {
                // Accepted just before the shutdown began: the shutdown's lingering close.
                if let Some(next) = self
                    .drive_without_budget(key, |conn, _| conn.begin_closing(CloseReason::Shutdown))
                {
                    self.settle(key, next);
                }
            }
        }
        keys
    }

    /// Ends a pause for lack of descriptors (its timer fired, or a close freed one): the
    /// backlog is tried on this turn's accepts.
    pub(super) fn resume_accepting(&mut self) {
        if let Some(paused) = self.acceptor.resume(Instant::now()) {
            self.cx.stats.accept_paused_time += paused;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::ListenAddr;

    /// An acceptor on a TCP listener at 127.0.0.1, port 0, and its address.
    fn acceptor() -> (Acceptor, std::net::SocketAddr) {
        let listener = Listener::bind(&"127.0.0.1:0".parse::<ListenAddr>().unwrap(), false)
            .expect("bind 127.0.0.1:0");
        let addr = match listener.local_addr().unwrap() {
            ListenAddr::Tcp(addr) => addr,
            other => panic!("not TCP: {other:?}"),
        };
        (
            Acceptor::new(Some(listener), None, ProxyIntake::new(None)),
            addr,
        )
    }

    /// Accepts until `Done`, waiting up to 5 s for connections still in flight; how many.
    #[track_caller]
    fn accept_turn(acceptor: &mut Acceptor, expect: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut accepted = 0;
        loop {
            match acceptor.next() {
                Accept::Connection(..) => accepted += 1,
                Accept::Done if accepted < expect && !acceptor.is_ready() => {
                    // The backlog is not full yet: the connects are still in flight.
                    assert!(Instant::now() < deadline, "only {accepted} of {expect}");
                    std::thread::sleep(Duration::from_millis(5));
                    acceptor.left += 1;
                }
                Accept::Done => return accepted,
                Accept::Failed(e) => panic!("accept failed: {e}"),
            }
        }
    }

    #[test]
    fn a_turn_accepts_at_most_the_bound_and_stays_ready_for_the_rest() {
        let (mut acceptor, addr) = acceptor();
        let clients: Vec<_> = (0..ACCEPTS_PER_EVENT + 3)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        acceptor.mark_ready();
        assert!(acceptor.start_turn());
        assert!(!acceptor.is_ready());
        assert_eq!(
            accept_turn(&mut acceptor, ACCEPTS_PER_EVENT),
            ACCEPTS_PER_EVENT
        );
        assert!(acceptor.is_ready(), "the bound was reached: more next turn");
        assert!(acceptor.has_work());
        assert!(acceptor.start_turn());
        assert_eq!(accept_turn(&mut acceptor, 3), 3);
        assert!(!acceptor.is_ready(), "drained: wait for the next event");
        drop(clients);
    }

    #[test]
    fn an_empty_backlog_ends_the_turn_without_staying_ready() {
        let (mut acceptor, _) = acceptor();
        acceptor.mark_ready();
        assert!(acceptor.start_turn());
        assert!(matches!(acceptor.next(), Accept::Done));
        assert!(!acceptor.is_ready());
        assert!(!acceptor.has_work());
    }

    #[test]
    fn a_paused_acceptor_accepts_nothing_until_resumed() {
        let (mut acceptor, addr) = acceptor();
        let _client = std::net::TcpStream::connect(addr).unwrap();
        let paused_at = Instant::now();
        acceptor.pause(paused_at);
        assert!(acceptor.is_paused());
        acceptor.mark_ready();
        assert!(!acceptor.has_work(), "paused: no turn without waiting");
        assert!(!acceptor.start_turn(), "paused: no accepts");
        assert!(!acceptor.is_ready());
        let paused = acceptor.resume(paused_at + Duration::from_millis(100));
        assert_eq!(paused, Some(Duration::from_millis(100)));
        assert!(!acceptor.is_paused());
        assert!(acceptor.is_ready(), "resumed: the backlog is tried at once");
        assert_eq!(acceptor.resume(Instant::now()), None, "resumed once");
        assert!(acceptor.start_turn());
        assert_eq!(accept_turn(&mut acceptor, 1), 1);
    }

    #[test]
    fn without_a_listener_nothing_is_accepted() {
        let (mut acceptor, _) = acceptor();
        assert!(acceptor.accepts());
        acceptor.mark_ready();
        assert!(acceptor.take_listener().is_some());
        assert!(!acceptor.accepts());
        assert!(!acceptor.is_ready(), "a listener taken is never ready");
        assert!(!acceptor.start_turn());
        assert!(matches!(acceptor.next(), Accept::Done));
        let mut none = Acceptor::new(None, None, ProxyIntake::new(None));
        assert!(!none.start_turn());
        assert!(none.dealt().is_empty());
    }
}
