//! Reactor 0's HTTP endpoints, one type for both: the metrics endpoint (`--metrics`, TCP)
//! and the admin endpoint (`--admin`, a Unix socket). Each listener is one more source on
//! the reactor's poll; its connections ([`HttpConn`]) live in a slab of their own next to
//! the echo connections, with one timer each on the same wheel and their buffers under
//! the same budget. What a request asks is answered by the endpoint's own file:
//! `reactor/metrics_page.rs` (`/metrics`, `/ready`), `reactor/admin.rs` (`/connections`);
//! an answer that needs the other reactors is gathered from them without ever waiting.
//!
//! ```text
//!   listener token   → accept up to ACCEPTS_PER_EVENT: a slot (at most 64), else 503;
//!                      the admin endpoint notes whether the peer's uid may use it
//!   connection token → HttpConn::drive, up to DRIVES_PER_EVENT (then the ready list)
//!     Answer(request) → the endpoint's answer now, or a gather: a request to each
//!                       sibling (with this reactor's waker), answered when the last part
//!                       arrives (WAKER event), or 503 at the answer deadline (2 s)
//!   TimerKey::Http(n)  → the connection's deadline passed: close, or 503 if late
//! ```
//!
//! Tokens: endpoint `e` (0 metrics, 1 admin) has `HTTP_TOKENS + e * TOKENS_PER_ENDPOINT`
//! for its listener and the next [`MAX_CONNECTIONS`] for its connections; timers,
//! `TimerKey::Http(e * MAX_CONNECTIONS + key)`.
//!
//! # Invariants
//! - Every slot always has exactly one armed timer, due no later than its connection's
//!   deadline (re-armed at once when the deadline moves earlier, lazily on expiry when it
//!   moves later); except while the batch its timer fired in is handled: then its
//!   `timer` is `TimerId::NONE` until it is re-armed or closed.
//! - A slot's `charged` always equals its connection's `held_bytes()` between calls, and
//!   is leased from the buffer budget ([`Reactor::lease_for_http`]). An endpoint never
//!   closes an echo connection to make room: without room, an answer is a fixed 503 and a
//!   read closes the connection.
//! - `gathering` is always the number of slots with a `gather`; a gather's outstanding
//!   requests are forgotten when it ends without them (`Gather::abandon`), so a sibling
//!   keeps nothing for a connection that left.
//! - Endpoint connections are not in the echo counters (`tabecho_*`): a scrape or a
//!   listing does not change what it reads.

use std::io::{self, Read};

use log::{debug, warn};
use mio::{Interest, Token};
use slab::Slab;

use super::admin::AdminGather;
use super::metrics_page::PageGather;
use super::{Reactor, TimerKey};
use crate::http::{
    Expired, HttpClose, HttpConn, Next, Request, Route, Site, Status, MAX_CONNECTIONS,
    MAX_RESPONSE_HEAD, TOO_MANY_CONNECTIONS,
};
use crate::server::admin_exchange::AdminHandle;
use crate::server::listener::Listener;
use crate::server::snapshot::SnapshotHandle;
use crate::stream::Stream;
use crate::timer_wheel::TimerId;

/// Tokens per endpoint: its listener's and its connections'.
const TOKENS_PER_ENDPOINT: usize = MAX_CONNECTIONS + 1;
/// The first endpoint token (the metrics listener's). The range ends just below the
/// signals' token, far above any echo connection's key (below `u32::MAX`).
pub(super) const HTTP_TOKENS: usize = super::SIGNALS.0 - Which::ALL.len() * TOKENS_PER_ENDPOINT;

/// Connections accepted per listener event; the rest next turn. Scrapers connect once and
/// keep their connection, an operator's command makes one: 8 is plenty, and bounds what
/// a connection storm on an endpoint adds to a turn.
const ACCEPTS_PER_EVENT: usize = 8;

/// `drive` calls per connection event (each answers one request at most); a client that
/// pipelines more continues next turn, from the ready list.
const DRIVES_PER_EVENT: usize = 8;

/// Which endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Which {
    /// `--metrics`: `/metrics`, `/ready`.
    Metrics,
    /// `--admin`: `/connections`, `/connections/close`.
    Admin,
}

impl Which {
    /// Both, in token order.
    pub(super) const ALL: [Which; 2] = [Which::Metrics, Which::Admin];

    fn index(self) -> usize {
        match self {
            Which::Metrics => 0,
            Which::Admin => 1,
        }
    }

    fn site(self) -> Site {
        match self {
            Which::Metrics => Site::Metrics,
            Which::Admin => Site::Admin,
        }
    }

    /// As the logs name it.
    pub(super) fn name(self) -> &'static str {
        match self {
            Which::Metrics => "metrics",
            Which::Admin => "admin",
        }
    }

    /// Its listener's token.
    fn listener_token(self) -> Token {
        Token(HTTP_TOKENS + self.index() * TOKENS_PER_ENDPOINT)
    }

    /// The token of its connection `key`.
    fn token(self, key: usize) -> Token {
        Token(HTTP_TOKENS + self.index() * TOKENS_PER_ENDPOINT + 1 + key)
    }

    /// The timer key of its connection `key`.
    fn timer_key(self, key: usize) -> TimerKey {
        TimerKey::Http(self.index() * MAX_CONNECTIONS + key)
    }

    /// The endpoint and connection a `TimerKey::Http` value names.
    fn of_timer(n: usize) -> (Which, usize) {
        (Which::ALL[n / MAX_CONNECTIONS], n % MAX_CONNECTIONS)
    }

    /// The endpoint an offset from [`HTTP_TOKENS`] names, and its connection (`None`: the
    /// listener); `None` past the endpoints' tokens (registered by no one).
    fn of_token(offset: usize) -> Option<(Which, Option<usize>)> {
        let which = *Which::ALL.get(offset / TOKENS_PER_ENDPOINT)?;
        Some((which, (offset % TOKENS_PER_ENDPOINT).checked_sub(1)))
    }
}

/// The endpoints a reactor serves.
#[derive(Default)]
pub(super) struct HttpEndpoints {
    /// `--metrics`.
    metrics: Option<HttpEndpoint>,
    /// `--admin`.
    admin: Option<HttpEndpoint>,
}

impl HttpEndpoints {
    /// Endpoint `which`, if served.
    fn get_mut(&mut self, which: Which) -> &mut Option<HttpEndpoint> {
        match which {
            Which::Metrics => &mut self.metrics,
            Which::Admin => &mut self.admin,
        }
    }

    /// The endpoints served.
    fn served_mut(&mut self) -> impl Iterator<Item = &mut HttpEndpoint> {
        [&mut self.metrics, &mut self.admin].into_iter().flatten()
    }

    /// Whether an endpoint has work for the next turn.
    fn work_left(&self) -> bool {
        [&self.metrics, &self.admin]
            .into_iter()
            .flatten()
            .any(|ep| ep.accept_ready || !ep.ready.is_empty())
    }
}

/// An endpoint: listener, connections, siblings.
pub(super) struct HttpEndpoint {
    which: Which,
    listener: Listener,
    /// At most [`MAX_CONNECTIONS`].
    pub(super) conns: Slab<HttpSlot>,
    /// Snapshot handles of the other reactors (reactor `i + 1` at `i`): the metrics
    /// endpoint's siblings (empty at the admin endpoint).
    pub(super) snapshots: Vec<SnapshotHandle>,
    /// Admin handles of the other reactors (reactor `i + 1` at `i`): the admin endpoint's
    /// siblings (empty at the metrics endpoint).
    pub(super) admins: Vec<AdminHandle>,
    /// Connections to drive again before the next poll (their budget of drives spent).
    ready: Vec<usize>,
    /// The listener may have connections left to accept.
    accept_ready: bool,
    /// Connections waiting for their siblings' parts.
    pub(super) gathering: usize,
}

/// One endpoint connection.
pub(super) struct HttpSlot {
    stream: Stream,
    pub(super) conn: HttpConn,
    /// Its one timer (`TimerId::NONE` while its expiry is handled).
    timer: TimerId,
    /// The deadline `timer` is armed for, in microseconds.
    armed_us: u64,
    /// Budget bytes leased for it: always `conn.held_bytes()` between calls.
    charged: usize,
    /// What is being gathered from the siblings for its answer, if anything.
    pub(super) gather: Option<Gather>,
    /// Its peer may use the endpoint: always at the metrics endpoint; at the admin
    /// endpoint, the peer's uid is ours or root's (checked at accept).
    pub(super) allowed: bool,
}

/// What a connection waits for from the siblings.
pub(super) enum Gather {
    /// The snapshots of a `/metrics` page.
    Page(PageGather),
    /// The parts of a listing or a close.
    Admin(AdminGather),
}

impl Gather {
    /// The gather ends without its missing parts (a late answer, a close): the siblings
    /// need not keep them.
    fn abandon(self, ep: &HttpEndpoint, why: &str) {
        if let Gather::Admin(gather) = self {
            gather.abandon(&ep.admins, why);
        }
    }
}

impl HttpEndpoint {
    /// The endpoint `which` on `listener`, with no connection yet.
    pub(super) fn new(which: Which, listener: Listener) -> HttpEndpoint {
        HttpEndpoint {
            which,
            listener,
            conns: Slab::with_capacity(MAX_CONNECTIONS),
            snapshots: Vec::new(),
            admins: Vec::new(),
            ready: Vec::new(),
            accept_ready: false,
            gathering: 0,
        }
    }

    /// Leaves the listener's Unix socket file in place when it is dropped: an upgrade's
    /// new process serves the same socket.
    pub(super) fn leave_file(&mut self) {
        self.listener.leave_file();
    }
}

impl Reactor {
    /// Serves `endpoint` from this reactor's own poll.
    pub(super) fn serve_endpoint(&mut self, mut endpoint: HttpEndpoint) -> io::Result<()> {
        let which = endpoint.which;
        self.poll.registry().register(
            &mut endpoint.listener,
            which.listener_token(),
            Interest::READABLE,
        )?;
        self.budget.reserve_for_http();
        *self
            .endpoints
            .http
            .get_or_insert_with(Box::default)
            .get_mut(which) = Some(endpoint);
        Ok(())
    }

    /// An endpoint token's event (`offset` from [`HTTP_TOKENS`]): accept on a listener, or
    /// drive a connection (readable or writable alike: `drive` does both).
    #[inline(never)] // off the frame path: keeps the loop small enough to inline it
    pub(super) fn on_http_event(&mut self, offset: usize) {
        let Some((which, key)) = Which::of_token(offset) else {
            return;
        };
        self.with_endpoint(which, |reactor, ep| match key {
            None => {
                ep.accept_ready = true;
                reactor.accept_http(ep);
            }
            Some(key) => reactor.drive_http(ep, key),
        });
    }

    /// Work left from earlier events: accepts, and connections whose drives ran out. One
    /// check per turn; the work itself out of line.
    pub(super) fn revisit_http(&mut self) {
        if self.http_work_left() {
            self.revisit_http_work();
        }
    }

    #[inline(never)]
    fn revisit_http_work(&mut self) {
        for which in Which::ALL {
            self.with_endpoint(which, |reactor, ep| {
                if ep.accept_ready {
                    reactor.accept_http(ep);
                }
                for key in std::mem::take(&mut ep.ready) {
                    reactor.drive_http(ep, key);
                }
            });
        }
    }

    /// Whether an endpoint has work for the next turn (the poll must not block). One
    /// test when none is served.
    #[inline]
    pub(super) fn http_work_left(&self) -> bool {
        self.endpoints.http.as_ref().is_some_and(|h| h.work_left())
    }

    /// Endpoint `which`, if served.
    fn endpoint_mut(&mut self, which: Which) -> Option<&mut HttpEndpoint> {
        self.endpoints
            .http
            .as_mut()
            .and_then(|h| h.get_mut(which).as_mut())
    }

    /// The waker's event: answers the requests whose sibling parts have all arrived.
    #[inline(never)]
    pub(super) fn collect_sibling_parts(&mut self) {
        for which in Which::ALL {
            self.with_endpoint(which, |reactor, ep| {
                if ep.gathering == 0 {
                    return;
                }
                let keys: Vec<usize> = ep
                    .conns
                    .iter()
                    .filter(|(_, slot)| slot.gather.is_some())
                    .map(|(key, _)| key)
                    .collect();
                for key in keys {
                    reactor.try_finish_gather(ep, key);
                    reactor.drive_http(ep, key);
                }
            });
        }
    }

    /// Endpoint connection `n`'s timer fired (its `timer` is `NONE`).
    #[inline(never)]
    pub(super) fn on_http_timer(&mut self, n: usize) {
        let (which, key) = Which::of_timer(n);
        self.with_endpoint(which, |reactor, ep| {
            let Some(slot) = ep.conns.get_mut(key) else {
                return; // closed earlier in this batch
            };
            if slot.timer != TimerId::NONE {
                return;
            }
            match slot.conn.expired(reactor.cx.now_us) {
                Some(Expired::Close(why)) => reactor.close_http(ep, key, why),
                Some(Expired::AnswerLate) => {
                    debug!("{} {key}: a sibling's part is late; 503", which.name());
                    if let Some(gather) = ep.conns.get_mut(key).and_then(|s| s.gather.take()) {
                        ep.gathering -= 1;
                        gather.abandon(ep, "a reactor's part was late");
                    }
                    if let Some(slot) = ep.conns.get_mut(key) {
                        slot.conn.respond_unavailable(reactor.cx.now_us);
                    }
                    reactor.drive_http(ep, key);
                }
                None => reactor.arm_http(ep, key),
            }
        });
    }

    /// Marks endpoint connection `n`'s timer as fired (see `expire_timers`).
    pub(super) fn http_timer_fired(&mut self, n: usize) {
        let (which, key) = Which::of_timer(n);
        if let Some(slot) = self
            .endpoint_mut(which)
            .and_then(|ep| ep.conns.get_mut(key))
        {
            slot.timer = TimerId::NONE;
        }
    }

    /// An upgrade's new process serves the endpoints' listeners now (the same sockets):
    /// stop accepting on them; the requests already accepted are answered.
    pub(super) fn stop_http_accepting(&mut self) {
        let Some(http) = self.endpoints.http.as_mut() else {
            return;
        };
        for ep in http.served_mut() {
            let _ = self.poll.registry().deregister(&mut ep.listener);
            ep.accept_ready = false;
        }
    }

    /// A move rolled back: accept on the endpoints again.
    pub(super) fn resume_http_accepting(&mut self) {
        let Some(http) = self.endpoints.http.as_mut() else {
            return;
        };
        for ep in http.served_mut() {
            let token = ep.which.listener_token();
            if let Err(e) =
                self.poll
                    .registry()
                    .register(&mut ep.listener, token, Interest::READABLE)
            {
                warn!(
                    "cannot serve {} again after the failed move: {e}",
                    ep.which.name()
                );
            }
            // Connections may have queued meanwhile: no edge announces them.
            ep.accept_ready = true;
        }
    }

    /// The move is over: the new process serves the endpoints' sockets, whose files stay.
    pub(super) fn hand_http_listeners_over(&mut self) {
        if let Some(http) = self.endpoints.http.as_mut() {
            http.served_mut().for_each(HttpEndpoint::leave_file);
        }
    }

    /// The loop has ended: closes every endpoint connection and the listeners.
    #[inline(never)]
    pub(super) fn close_http_endpoints(&mut self) {
        for which in Which::ALL {
            self.with_endpoint(which, |reactor, ep| {
                let keys: Vec<usize> = ep.conns.iter().map(|(key, _)| key).collect();
                for key in keys {
                    reactor.close_http(ep, key, HttpClose::Shutdown);
                }
            });
        }
        self.endpoints.http = None;
    }

    /// Runs `f` with endpoint `which` taken out of the reactor (so both can be borrowed).
    fn with_endpoint(&mut self, which: Which, f: impl FnOnce(&mut Reactor, &mut HttpEndpoint)) {
        let Some(mut ep) = self
            .endpoints
            .http
            .as_mut()
            .and_then(|h| h.get_mut(which).take())
        else {
            return;
        };
        f(self, &mut ep);
        if let Some(h) = self.endpoints.http.as_mut() {
            *h.get_mut(which) = Some(ep);
        }
    }

    fn accept_http(&mut self, ep: &mut HttpEndpoint) {
        let name = ep.which.name();
        ep.accept_ready = false;
        for _ in 0..ACCEPTS_PER_EVENT {
            let (mut stream, peer) = match ep.listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    // Out of descriptors, most likely. The echo listener's pause handles
                    // that for the server; a client that connects again raises a new
                    // edge, so nothing is left waiting unseen for long.
                    warn!("{name}: accept: {e}");
                    return;
                }
            };
            let peer = peer.map_or_else(|| "a local peer".to_string(), |p| p.to_string());
            if ep.conns.len() >= MAX_CONNECTIONS {
                debug!("{name}: refused {peer}: {MAX_CONNECTIONS} connections open");
                refuse(stream);
                continue;
            }
            let allowed = match ep.which {
                Which::Metrics => true,
                // Refused peers are answered 403 (admin.rs), so they learn why.
                Which::Admin => crate::admin::peer_allowed(&stream).unwrap_or(false),
            };
            let entry = ep.conns.vacant_entry();
            let key = entry.key();
            // (TCP_NODELAY is set by the accept: one write per answer, which must not
            // wait for the client's delayed ACK.)
            if let Err(e) = self.poll.registry().register(
                &mut stream,
                ep.which.token(key),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                warn!("{name}: register: {e}; dropping {peer}");
                continue;
            }
            debug!("{name}: open {peer} as {key}");
            entry.insert(HttpSlot {
                stream,
                conn: HttpConn::new(ep.which.site(), self.cx.now_us),
                timer: TimerId::NONE,
                armed_us: 0,
                charged: 0,
                gather: None,
                allowed,
            });
            self.arm_http(ep, key);
        }
        // Budget spent: the rest next turn.
        ep.accept_ready = true;
    }

    /// Drives connection `key` until it waits, answering what it asks.
    fn drive_http(&mut self, ep: &mut HttpEndpoint, key: usize) {
        let mut waiting = false;
        for _ in 0..DRIVES_PER_EVENT {
            let Some(slot) = ep.conns.get_mut(key) else {
                return; // closed earlier in this turn
            };
            let growth = slot.conn.growth_bound();
            if !self.lease_for_http(growth) {
                debug!(
                    "{} {key}: no room under the buffer budget to read a request",
                    ep.which.name()
                );
                self.close_http(ep, key, HttpClose::NoRoom);
                return;
            }
            slot.charged += growth;
            let next = slot.conn.drive(&mut slot.stream, self.cx.now_us);
            self.settle_charge(slot);
            match next {
                Next::Wait => {
                    waiting = true;
                    break;
                }
                Next::Again => break,
                Next::Close(why) => {
                    self.close_http(ep, key, why);
                    return;
                }
                Next::Answer(request) => {
                    self.answer(ep, key, request);
                    if request.route == Route::Admin {
                        // A scan of every connection each: one per connection per turn,
                        // however many are pipelined, so a turn holds at most one per
                        // connection (64) however the client writes.
                        break;
                    }
                }
            }
        }
        if !waiting {
            // Drives spent with work left (pipelined requests, a flood while lingering):
            // the socket is edge-triggered, so no event will say so. Next turn.
            ep.ready.push(key);
        }
        if ep.conns.contains(key) {
            self.arm_http(ep, key);
        }
    }

    /// Answers `request` on connection `key` now, or starts gathering its answer.
    fn answer(&mut self, ep: &mut HttpEndpoint, key: usize, request: Request) {
        match request.route {
            Route::Metrics | Route::Ready => self.answer_metrics(ep, key, request.route),
            Route::Admin => self.answer_admin(ep, key),
        }
    }

    /// Starts gathering for connection `key` (its answer waits for the siblings' parts).
    pub(super) fn begin_gather(&mut self, ep: &mut HttpEndpoint, key: usize, gather: Gather) {
        if let Some(slot) = ep.conns.get_mut(key) {
            debug_assert!(slot.gather.is_none(), "one gather per connection at a time");
            slot.gather = Some(gather);
            ep.gathering += 1;
        }
        // They may all be in already (a sibling on another core is quick).
        self.try_finish_gather(ep, key);
    }

    /// Collects the parts that have arrived for connection `key`; answers once all have
    /// (503 if a sibling has ended).
    fn try_finish_gather(&mut self, ep: &mut HttpEndpoint, key: usize) {
        let Some(gather) = ep.conns.get_mut(key).and_then(|slot| slot.gather.as_mut()) else {
            return;
        };
        let done = match gather {
            Gather::Page(page) => page.collect(&ep.snapshots),
            Gather::Admin(admin) => admin.collect(&ep.admins),
        };
        if !done {
            return;
        }
        let Some(gather) = ep.conns.get_mut(key).and_then(|slot| slot.gather.take()) else {
            return;
        };
        ep.gathering -= 1;
        match gather {
            Gather::Page(page) => self.finish_page(ep, key, page),
            Gather::Admin(admin) => self.finish_admin(ep, key, admin),
        }
    }

    /// Answers connection `key` with `body`, leased from the budget; a fixed 503 and a
    /// close if the budget has no room for it.
    pub(super) fn respond_http(
        &mut self,
        ep: &mut HttpEndpoint,
        key: usize,
        status: Status,
        content_type: &str,
        body: &[u8],
    ) {
        let Some(slot) = ep.conns.get_mut(key) else {
            return;
        };
        let need = MAX_RESPONSE_HEAD + body.len();
        if self.lease_for_http(need) {
            slot.charged += need;
            slot.conn
                .respond(status, content_type, body, self.cx.now_us);
        } else {
            debug!(
                "{} {key}: no room for a {}-byte answer; 503",
                ep.which.name(),
                body.len()
            );
            slot.conn.respond_unavailable(self.cx.now_us);
        }
        self.settle_charge(slot);
    }

    /// Gives back what a slot has leased beyond what its connection holds.
    fn settle_charge(&mut self, slot: &mut HttpSlot) {
        let held = slot.conn.held_bytes();
        debug_assert!(
            held <= slot.charged,
            "endpoint connection holds {held} bytes, {} leased",
            slot.charged
        );
        self.release_for_http(slot.charged - held);
        slot.charged = held;
    }

    /// Keeps connection `key`'s timer due no later than its deadline.
    fn arm_http(&mut self, ep: &mut HttpEndpoint, key: usize) {
        let Some(slot) = ep.conns.get_mut(key) else {
            return;
        };
        let deadline = slot.conn.deadline_us();
        if slot.timer != TimerId::NONE {
            if deadline >= slot.armed_us {
                return; // later: re-armed when the old one fires
            }
            self.timers.cancel(slot.timer);
        }
        slot.timer = self.timers.arm_at(deadline, ep.which.timer_key(key));
        slot.armed_us = deadline;
    }

    fn close_http(&mut self, ep: &mut HttpEndpoint, key: usize, why: HttpClose) {
        let Some(mut slot) = ep.conns.try_remove(key) else {
            return;
        };
        if slot.timer != TimerId::NONE {
            self.timers.cancel(slot.timer);
        }
        if let Some(gather) = slot.gather.take() {
            ep.gathering -= 1;
            gather.abandon(ep, "its client has gone");
        }
        let _ = self.poll.registry().deregister(&mut slot.stream);
        self.release_for_http(slot.charged);
        debug!("{}: close {key}: {why:?}", ep.which.name());
    }
}

/// Sends a connection past the limit its 503 and closes it; reads what it may have sent
/// first (a few reads at most), so the close sends FIN, not a reset that would erase the
/// answer (as `listener::refuse` does for echo connections).
fn refuse(mut stream: Stream) {
    let _ = io::Write::write(&mut stream, TOO_MANY_CONNECTIONS);
    let _ = stream.shutdown_write();
    let mut sink = [0u8; 4096];
    for _ in 0..16 {
        match stream.read(&mut sink) {
            Ok(n) if n > 0 => continue,
            _ => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_timer_keys_name_one_endpoint_and_connection_each() {
        for which in Which::ALL {
            let listener = which.listener_token().0 - HTTP_TOKENS;
            assert_eq!(Which::of_token(listener), Some((which, None)));
            for key in [0, 1, MAX_CONNECTIONS - 1] {
                assert_eq!(
                    Which::of_token(which.token(key).0 - HTTP_TOKENS),
                    Some((which, Some(key)))
                );
                let TimerKey::Http(n) = which.timer_key(key) else {
                    panic!("an endpoint's timer");
                };
                assert_eq!(Which::of_timer(n), (which, key));
            }
        }
        assert_eq!(
            Which::of_token(Which::ALL.len() * TOKENS_PER_ENDPOINT),
            None
        );
        // The last token is just below the signals'.
        assert_eq!(
            Which::Admin.token(MAX_CONNECTIONS - 1).0 + 1,
            super::super::SIGNALS.0
        );
    }
}
