//! Reactor 0's metrics endpoint (`--metrics`): its listener is one more source on the
//! reactor's poll; its HTTP connections ([`HttpConn`]) live in a slab of their own next to
//! the echo connections, with one timer each on the same wheel and their buffers under
//! the same budget; a page for several reactors is gathered from their snapshots without
//! ever waiting for them.
//!
//! ```text
//!   METRICS_LISTENER → accept up to ACCEPTS_PER_EVENT: a slot (at most 64), else 503
//!   HTTP token       → HttpConn::drive, up to DRIVES_PER_EVENT (then the ready list)
//!     /ready   → 200 while the server accepts, 503 from a shutdown or a handover
//!     /metrics → one reactor: the page now. Several: a snapshot request to each sibling
//!                (with this reactor's waker); the page when the last arrives (WAKER
//!                event), or 503 at the connection's answer deadline (2 s)
//!   TimerKey::Http(key)  → the connection's deadline passed: close, or 503 if late
//! ```
//!
//! # Invariants
//! - Every slot always has exactly one armed timer, due no later than its connection's
//!   deadline (re-armed at once when the deadline moves earlier, lazily on expiry when it
//!   moves later); except while the batch its timer fired in is handled: then its
//!   `timer` is `TimerId::NONE` until it is re-armed or closed.
//! - A slot's `charged` always equals its connection's `held_bytes()` between calls, and
//!   is leased from the buffer budget ([`Reactor::lease_for_http`]). The endpoint never
//!   closes an echo connection to make room: without room, an answer is a fixed 503 and a
//!   read closes the connection.
//! - Metrics connections are not in the echo counters (`tabecho_*`): a scrape does not
//!   change the page it reads.

use std::io::{self, Read};
use std::net::SocketAddr;

use log::{debug, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Token};
use slab::Slab;

use super::{Reactor, TimerKey};
use crate::counters::Snapshot;
use crate::http::{
    Expired, HttpClose, HttpConn, Next, Request, Route, Status, MAX_RESPONSE_HEAD, TEXT,
    TOO_MANY_CONNECTIONS,
};
use crate::metrics::{exposition, MAX_CONNECTIONS};
use crate::server::snapshot::{SnapshotHandle, Taken};
use crate::timer_wheel::TimerId;

/// The metrics listener's token.
pub(super) const METRICS_LISTENER: Token = Token(usize::MAX - 4);
/// Metrics connection `key` has token `HTTP_TOKENS + key` (`key < MAX_CONNECTIONS`): far
/// above any echo connection's key, which stays below `u32::MAX`, and below the tokens of
/// the listeners, the waker and the signals.
pub(super) const HTTP_TOKENS: usize = usize::MAX - 4 - MAX_CONNECTIONS;

/// Metrics connections accepted per listener event; the rest next turn. Scrapers connect
/// once and keep their connection: 8 is plenty, and bounds what a connection storm on
/// the metrics port adds to a turn.
const ACCEPTS_PER_EVENT: usize = 8;

/// `drive` calls per connection event (each answers one request at most); a client that
/// pipelines more continues next turn, from the ready list.
const DRIVES_PER_EVENT: usize = 8;

/// The endpoint: listener, connections, siblings.
pub(super) struct MetricsEndpoint {
    listener: TcpListener,
    /// At most [`MAX_CONNECTIONS`].
    conns: Slab<HttpSlot>,
    /// Snapshot handles of the other reactors (reactor `i + 1` at `i`).
    siblings: Vec<SnapshotHandle>,
    /// Connections to drive again before the next poll (their budget of drives spent).
    ready: Vec<usize>,
    /// The listener may have connections left to accept.
    accept_ready: bool,
    /// Connections waiting for sibling snapshots.
    gathering: usize,
}

/// One metrics connection.
struct HttpSlot {
    stream: TcpStream,
    conn: HttpConn,
    /// Its one timer (`TimerId::NONE` while its expiry is handled).
    timer: TimerId,
    /// The deadline `timer` is armed for, in microseconds.
    armed_us: u64,
    /// Budget bytes leased for it: always `conn.held_bytes()` between calls.
    charged: usize,
    /// Snapshots being gathered for its `/metrics` answer, if any.
    gather: Option<Gather>,
}

/// The snapshots of one page: this reactor's, taken at the request, and a ticket for each
/// sibling's until it arrives.
struct Gather {
    snapshots: Vec<Option<Snapshot>>,
    tickets: Vec<u64>,
}

impl Reactor {
    /// Serves the metrics endpoint on `listener` (bound by the server, or handed over by
    /// the process this one upgrades) from this reactor's own poll, with `siblings` the
    /// snapshot handles of the server's other reactors. Returns the address bound. Starts
    /// timing this reactor's turns.
    pub fn serve_metrics_on(
        &mut self,
        mut listener: TcpListener,
        siblings: Vec<SnapshotHandle>,
    ) -> io::Result<SocketAddr> {
        let local = listener.local_addr()?;
        self.poll
            .registry()
            .register(&mut listener, METRICS_LISTENER, Interest::READABLE)?;
        let _ = self.snapshot_handle();
        self.endpoints.metrics = Some(Box::new(MetricsEndpoint {
            listener,
            conns: Slab::with_capacity(MAX_CONNECTIONS),
            siblings,
            ready: Vec::new(),
            accept_ready: false,
            gathering: 0,
        }));
        Ok(local)
    }

    /// The metrics listener's event: accept.
    #[inline(never)] // off the frame path: keeps the loop small enough to inline it
    pub(super) fn on_metrics_listener(&mut self) {
        self.with_endpoint(|reactor, ep| {
            ep.accept_ready = true;
            reactor.accept_metrics(ep);
        });
    }

    /// A metrics connection's event (readable or writable alike: `drive` does both).
    #[inline(never)]
    pub(super) fn on_http_event(&mut self, key: usize) {
        self.with_endpoint(|reactor, ep| reactor.drive_http(ep, key));
    }

    /// Work left from earlier events: accepts, and connections whose drives ran out. One
    /// check per turn; the work itself out of line.
    pub(super) fn revisit_metrics(&mut self) {
        if self.metrics_work_left() {
            self.revisit_metrics_work();
        }
    }

    #[inline(never)]
    fn revisit_metrics_work(&mut self) {
        self.with_endpoint(|reactor, ep| {
            if ep.accept_ready {
                reactor.accept_metrics(ep);
            }
            for key in std::mem::take(&mut ep.ready) {
                reactor.drive_http(ep, key);
            }
        });
    }

    /// Whether the endpoint has work for the next turn (the poll must not block).
    pub(super) fn metrics_work_left(&self) -> bool {
        self.endpoints
            .metrics
            .as_ref()
            .is_some_and(|ep| ep.accept_ready || !ep.ready.is_empty())
    }

    /// The waker's event: answers the pages whose sibling snapshots have all arrived.
    #[inline(never)]
    pub(super) fn collect_sibling_snapshots(&mut self) {
        self.with_endpoint(|reactor, ep| {
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

    /// Metrics connection `key`'s timer fired (its `timer` is `NONE`).
    #[inline(never)]
    pub(super) fn on_http_timer(&mut self, key: usize) {
        self.with_endpoint(|reactor, ep| {
            let Some(slot) = ep.conns.get_mut(key) else {
                return; // closed earlier in this batch
            };
            if slot.timer != TimerId::NONE {
                return;
            }
            match slot.conn.expired(reactor.cx.now_us) {
                Some(Expired::Close(why)) => reactor.close_http(ep, key, why),
                Some(Expired::AnswerLate) => {
                    debug!("metrics {key}: a sibling's snapshot is late; 503");
                    if slot.gather.take().is_some() {
                        ep.gathering -= 1;
                    }
                    slot.conn.respond_unavailable(reactor.cx.now_us);
                    reactor.drive_http(ep, key);
                }
                None => reactor.arm_http(ep, key),
            }
        });
    }

    /// Marks metrics connection `key`'s timer as fired (see `expire_timers`).
    pub(super) fn http_timer_fired(&mut self, key: usize) {
        if let Some(slot) = self
            .endpoints
            .metrics
            .as_mut()
            .and_then(|ep| ep.conns.get_mut(key))
        {
            slot.timer = TimerId::NONE;
        }
    }

    /// An upgrade's new process serves the metrics listener now (the same socket): stop
    /// accepting on it; the scrapes already accepted are answered.
    pub(super) fn stop_metrics_accepting(&mut self) {
        if let Some(ep) = self.endpoints.metrics.as_mut() {
            let _ = self.poll.registry().deregister(&mut ep.listener);
            ep.accept_ready = false;
        }
    }

    /// A move rolled back: accept scrapes again.
    pub(super) fn resume_metrics_accepting(&mut self) {
        if let Some(ep) = self.endpoints.metrics.as_mut() {
            if let Err(e) = self.poll.registry().register(
                &mut ep.listener,
                METRICS_LISTENER,
                Interest::READABLE,
            ) {
                log::warn!("cannot serve metrics again after the failed move: {e}");
            }
            // Scrapes may have queued meanwhile: no edge announces them.
            ep.accept_ready = true;
        }
    }

    /// The loop has ended: closes every metrics connection and the listener.
    #[inline(never)]
    pub(super) fn close_metrics(&mut self) {
        self.with_endpoint(|reactor, ep| {
            let keys: Vec<usize> = ep.conns.iter().map(|(key, _)| key).collect();
            for key in keys {
                reactor.close_http(ep, key, HttpClose::Shutdown);
            }
        });
        self.endpoints.metrics = None;
    }

    /// Runs `f` with the endpoint taken out of the reactor (so both can be borrowed).
    fn with_endpoint(&mut self, f: impl FnOnce(&mut Reactor, &mut MetricsEndpoint)) {
        if let Some(mut ep) = self.endpoints.metrics.take() {
            f(self, &mut ep);
            self.endpoints.metrics = Some(ep);
        }
    }

    fn accept_metrics(&mut self, ep: &mut MetricsEndpoint) {
        ep.accept_ready = false;
        for _ in 0..ACCEPTS_PER_EVENT {
            let (mut stream, peer) = match ep.listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    // Out of descriptors, most likely. The echo listener's pause handles
                    // that for the server; a scraper that connects again raises a new
                    // edge, so nothing is left waiting unseen for long.
                    warn!("metrics: accept: {e}");
                    return;
                }
            };
            if ep.conns.len() >= MAX_CONNECTIONS {
                debug!("metrics: refused {peer}: {MAX_CONNECTIONS} connections open");
                refuse(stream);
                continue;
            }
            let entry = ep.conns.vacant_entry();
            let key = entry.key();
            // One write per answer: without NODELAY the last segment of a page could wait
            // for the scraper's delayed ACK (40 ms on Linux).
            let _ = stream.set_nodelay(true);
            if let Err(e) = self.poll.registry().register(
                &mut stream,
                Token(HTTP_TOKENS + key),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                warn!("metrics: register: {e}; dropping {peer}");
                continue;
            }
            debug!("metrics: open {peer} as {key}");
            entry.insert(HttpSlot {
                stream,
                conn: HttpConn::new(crate::http::Site::Metrics, self.cx.now_us),
                timer: TimerId::NONE,
                armed_us: 0,
                charged: 0,
                gather: None,
            });
            self.arm_http(ep, key);
        }
        // Budget spent: the rest next turn.
        ep.accept_ready = true;
    }

    /// Drives connection `key` until it waits, answering what it asks.
    fn drive_http(&mut self, ep: &mut MetricsEndpoint, key: usize) {
        let mut waiting = false;
        for _ in 0..DRIVES_PER_EVENT {
            let Some(slot) = ep.conns.get_mut(key) else {
                return; // closed earlier in this turn
            };
            let growth = slot.conn.growth_bound();
            if !self.lease_for_http(growth) {
                debug!("metrics {key}: no room under the buffer budget to read a head");
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
                Next::Answer(request) => self.answer(ep, key, request),
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

    /// Answers `request` on connection `key`, or starts gathering the page.
    fn answer(&mut self, ep: &mut MetricsEndpoint, key: usize, request: Request) {
        match request.route {
            Route::Ready => {
                let (status, body): (_, &[u8]) = if self.accepting() {
                    (Status::Ok, b"ready\n")
                } else {
                    (Status::Unavailable, b"draining\n")
                };
                self.respond_http(ep, key, status, TEXT, body);
            }
            Route::Admin => {} // not of this site: parse routes metrics requests only
            Route::Metrics if ep.siblings.is_empty() => {
                let page = exposition::encode(&[self.own_snapshot()]);
                self.respond_page(ep, key, page);
            }
            Route::Metrics => {
                let mut snapshots = vec![Some(self.own_snapshot())];
                let mut tickets = Vec::with_capacity(ep.siblings.len());
                for sibling in &ep.siblings {
                    match sibling.request(&self.waker) {
                        Some(ticket) => tickets.push(ticket),
                        None => {
                            // A sibling has ended (a shutdown): no page.
                            self.respond_http(
                                ep,
                                key,
                                Status::Unavailable,
                                TEXT,
                                b"a reactor has stopped\n",
                            );
                            return;
                        }
                    }
                    snapshots.push(None);
                }
                if let Some(slot) = ep.conns.get_mut(key) {
                    slot.gather = Some(Gather { snapshots, tickets });
                    ep.gathering += 1;
                }
                // They may all be in already (a sibling on another core is quick).
                self.try_finish_gather(ep, key);
            }
        }
    }

    /// Collects the sibling snapshots that have arrived for connection `key`; answers
    /// with the page once all have (503 if a sibling has ended).
    fn try_finish_gather(&mut self, ep: &mut MetricsEndpoint, key: usize) {
        let Some(gather) = ep.conns.get_mut(key).and_then(|slot| slot.gather.as_mut()) else {
            return;
        };
        let mut gone = false;
        for (i, sibling) in ep.siblings.iter().enumerate() {
            if gather.snapshots[i + 1].is_some() {
                continue;
            }
            match sibling.try_take(gather.tickets[i]) {
                Taken::Ready(snapshot) => gather.snapshots[i + 1] = Some(*snapshot),
                Taken::Pending => {}
                Taken::Gone => gone = true,
            }
        }
        let done = gone || gather.snapshots.iter().all(Option::is_some);
        if !done {
            return;
        }
        let gather = ep.conns.get_mut(key).and_then(|slot| slot.gather.take());
        ep.gathering -= 1;
        let snapshots: Option<Vec<Snapshot>> =
            gather.and_then(|g| g.snapshots.into_iter().collect());
        match snapshots {
            Some(snapshots) if !gone => self.respond_page(ep, key, exposition::encode(&snapshots)),
            _ => self.respond_http(
                ep,
                key,
                Status::Unavailable,
                TEXT,
                b"a reactor has stopped\n",
            ),
        }
    }

    fn respond_page(
        &mut self,
        ep: &mut MetricsEndpoint,
        key: usize,
        page: Result<String, std::fmt::Error>,
    ) {
        match page {
            Ok(page) => self.respond_http(
                ep,
                key,
                Status::Ok,
                exposition::CONTENT_TYPE,
                page.as_bytes(),
            ),
            Err(_) => self.respond_http(ep, key, Status::InternalError, TEXT, b"encoding failed\n"),
        }
    }

    /// Answers connection `key` with `body`, leased from the budget; a fixed 503 and a
    /// close if the budget has no room for it.
    fn respond_http(
        &mut self,
        ep: &mut MetricsEndpoint,
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
                "metrics {key}: no room for a {}-byte answer; 503",
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
            "metrics connection holds {held} bytes, {} leased",
            slot.charged
        );
        self.release_for_http(slot.charged - held);
        slot.charged = held;
    }

    /// Keeps connection `key`'s timer due no later than its deadline.
    fn arm_http(&mut self, ep: &mut MetricsEndpoint, key: usize) {
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
        slot.timer = self.timers.arm_at(deadline, TimerKey::Http(key));
        slot.armed_us = deadline;
    }

    fn close_http(&mut self, ep: &mut MetricsEndpoint, key: usize, why: HttpClose) {
        let Some(mut slot) = ep.conns.try_remove(key) else {
            return;
        };
        if slot.timer != TimerId::NONE {
            self.timers.cancel(slot.timer);
        }
        if slot.gather.is_some() {
            ep.gathering -= 1;
        }
        let _ = self.poll.registry().deregister(&mut slot.stream);
        self.release_for_http(slot.charged);
        debug!("metrics: close {key}: {why:?}");
    }

    /// Whether `/ready` says 200: serving, no shutdown and no handover begun.
    fn accepting(&self) -> bool {
        self.life.state.accepts() && !self.shared.draining() && !self.shared.upgraded()
    }
}

/// Sends a connection past the limit its 503 and closes it; reads what it may have sent
/// first (a few reads at most), so the close sends FIN, not a reset that would erase the
/// answer (as `listener::refuse` does for echo connections).
fn refuse(mut stream: TcpStream) {
    let _ = io::Write::write(&mut stream, TOO_MANY_CONNECTIONS);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut sink = [0u8; 4096];
    for _ in 0..16 {
        match stream.read(&mut sink) {
            Ok(n) if n > 0 => continue,
            _ => break,
        }
    }
}
