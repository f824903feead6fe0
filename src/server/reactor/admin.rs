//! The admin endpoint (`--admin unix:PATH`) on the reactors: reactor 0 serves it (its
//! listener and connections are `reactor/http_endpoint.rs`'s, as the metrics endpoint's
//! are) and answers each request with its own part and its siblings' (asked through
//! `server::admin_exchange`, never waited for); every reactor answers its part of a
//! listing or a close from its own connection table.
//!
//! ```text
//!   request, from a peer whose uid is not ours or root's → 403 (checked at accept)
//!   admin::parse_request refuses it                       → 400, 404, 405, 413, 415
//!   GET /connections?sort&limit&source&reactor → each reactor asked: one scan of its
//!       table, its best `limit` kept (TopN of keys; rows built for those only); reactor
//!       0 merges the parts (TopN again) → 200, JSON lines
//!   POST /connections/close → the siblings asked first, then reactor 0's own part;
//!       each: one scan, then closes the matches not closing already (reason `admin`:
//!       the error line and a lingering close, or a reset if replies are owed), or
//!       counts them (dry_run) → the sum, logged once → 200, {"matched":N,...}
//!   a sibling that has ended → 503; one whose part is 2 s late → 503 (a close: logged
//!       with what was counted)
//! ```
//!
//! # Invariants
//! - A reactor's part costs one pass over its connections (no sort of all of them), a
//!   `getpeername` per connection only when the request filters by `source`, and four
//!   system calls per row returned (its client's, peer's and own addresses, and the
//!   kernel's byte counts).
//! - Nothing here runs on a frame's path: the facts a row shows are read from the
//!   connection and the table when it is listed.
//! - A close is logged once per request, by reactor 0, with the total, also when it is
//!   answered 503 (with what was counted); each reactor's own part at debug.
//! - A connection's admin requests are answered one per turn (`drive_http`), so a turn
//!   makes at most one pass per admin connection.

use std::io;
use std::time::Duration;

use log::{debug, info};

use super::http_endpoint::{Gather, HttpEndpoint, Which};
use super::Reactor;
use crate::admin::{
    parse_request, AdminRequest, CloseAnswer, CloseFilter, ConnFacts, ConnState, ConnectionRow,
    ListQuery, Rank, Refusal, TopN, CLOSE_CONTENT_TYPE, LIST_CONTENT_TYPE, TEXT_CONTENT_TYPE,
};
use crate::counters::CloseReason;
use crate::http::Status;
use crate::protocol;
use crate::server::admin_exchange::{AdminDesk, AdminHandle, Ask, Part, Taken};
use crate::server::connection::{Connection, Next};
use crate::server::lifecycle::Phase;
use crate::server::listener::Listener;

/// One admin answer being gathered: this reactor's part, taken at the request, and each
/// sibling's once it arrives.
pub(super) struct AdminGather {
    ask: Ask,
    /// Reactor `i`'s part at `i` (`None` until it arrives; a reactor not asked answers
    /// nothing, an empty part).
    parts: Vec<Option<Part>>,
    /// The ticket of sibling `i` (reactor `i + 1`), if it was asked.
    tickets: Vec<Option<u64>>,
    /// A sibling has ended: no answer.
    gone: bool,
}

impl AdminGather {
    /// Takes the parts that have arrived; whether the answer can be given now (all in, or
    /// a sibling gone).
    pub(super) fn collect(&mut self, siblings: &[AdminHandle]) -> bool {
        for (i, sibling) in siblings.iter().enumerate() {
            let (Some(ticket), None) = (self.tickets[i], &self.parts[i + 1]) else {
                continue;
            };
            match sibling.try_take(ticket) {
                Taken::Ready(part) => self.parts[i + 1] = Some(part),
                Taken::Pending => {}
                Taken::Gone => self.gone = true,
            }
        }
        self.gone || self.parts.iter().all(Option::is_some)
    }

    /// The answer is given without the parts still missing (`why`): their siblings need
    /// not keep them. A close is logged even so, since some connections may have closed:
    /// the count of those whose reactor answered, and that the others may have too.
    pub(super) fn abandon(self, siblings: &[AdminHandle], why: &str) {
        for (i, sibling) in siblings.iter().enumerate() {
            if let (Some(ticket), None) = (self.tickets[i], &self.parts[i + 1]) {
                sibling.forget(ticket);
            }
        }
        if let Ask::Close(filter) = &self.ask {
            if !filter.dry_run {
                let counted: u64 = self.parts.iter().flatten().map(Part::matched).sum();
                info!(
                    "admin: a close ({}) was not answered ({why}): {counted} connections \
                     closed on the reactors that answered; the others may have closed theirs",
                    describe(filter)
                );
            }
        }
    }
}

impl Reactor {
    /// Serves the admin endpoint on `listener` (a Unix socket only our uid may connect to,
    /// or the one the process this one upgrades handed over) from this reactor's own
    /// poll, with `siblings` the admin handles of the server's other reactors.
    pub fn serve_admin_on(
        &mut self,
        listener: Listener,
        siblings: Vec<AdminHandle>,
    ) -> io::Result<()> {
        let mut endpoint = HttpEndpoint::new(Which::Admin, listener);
        endpoint.admins = siblings;
        self.serve_endpoint(endpoint)
    }

    /// A handle for asking this reactor its part of an admin request, from the reactor
    /// that serves the endpoint.
    pub fn admin_handle(&mut self) -> AdminHandle {
        let waker = self.waker.clone();
        self.endpoints
            .desk
            .get_or_insert_with(|| Box::new(AdminDesk::new()))
            .handle(waker)
    }

    /// The waker's event: answers the parts asked of this reactor since the last time
    /// (one atomic load when none was).
    pub(super) fn serve_admin_asks(&mut self) {
        let Some(mut desk) = self.endpoints.desk.take() else {
            return;
        };
        desk.serve(|ask| self.admin_part(ask));
        self.endpoints.desk = Some(desk);
    }

    /// Answers the admin request on connection `key` (its uid checked at accept), or
    /// starts gathering the siblings' parts.
    pub(super) fn answer_admin(&mut self, ep: &mut HttpEndpoint, key: usize) {
        let Some(slot) = ep.conns.get(key) else {
            return;
        };
        let parsed = match (slot.allowed, slot.conn.message()) {
            (false, _) => Err(Refusal::forbidden()),
            (true, Some(m)) => parse_request(m.method, m.target, m.content_type, m.body),
            (true, None) => return, // asked only while a request is owed
        };
        let ask = match parsed {
            Ok(AdminRequest::List(query)) => match query.check_reactors(self.id.of) {
                Ok(()) => Ask::List(query),
                Err(refusal) => return self.refuse_admin(ep, key, &refusal),
            },
            Ok(AdminRequest::Close(filter)) => Ask::Close(filter),
            Err(refusal) => return self.refuse_admin(ep, key, &refusal),
        };
        // The siblings first: if one has ended, nothing is asked of this reactor (a
        // close here would be unanswered).
        let mut parts = Vec::with_capacity(self.id.of);
        parts.push(None);
        let mut tickets = Vec::with_capacity(ep.admins.len());
        for (i, sibling) in ep.admins.iter().enumerate() {
            if !asks(&ask, i + 1) {
                tickets.push(None);
                parts.push(Some(Part::Rows(Vec::new())));
                continue;
            }
            match sibling.ask(ask, &self.waker) {
                Some(ticket) => tickets.push(Some(ticket)),
                None => {
                    // A sibling has ended (a shutdown): no answer. What was asked of the
                    // others is forgotten, or done already if they were quick.
                    let gather = AdminGather {
                        ask,
                        parts,
                        tickets,
                        gone: true,
                    };
                    gather.abandon(&ep.admins, "a reactor has ended");
                    self.respond_stopped(ep, key);
                    return;
                }
            }
            parts.push(None);
        }
        parts[0] = Some(if asks(&ask, 0) {
            self.admin_part(ask)
        } else {
            Part::Rows(Vec::new())
        });
        let gather = AdminGather {
            ask,
            parts,
            tickets,
            gone: false,
        };
        self.begin_gather(ep, key, Gather::Admin(gather));
    }

    /// Every part of `gather` is in (or a sibling is gone): the listing merged, or the
    /// count of the close (logged), or 503.
    pub(super) fn finish_admin(&mut self, ep: &mut HttpEndpoint, key: usize, gather: AdminGather) {
        if gather.gone {
            gather.abandon(&ep.admins, "a reactor has ended");
            return self.respond_stopped(ep, key);
        }
        let parts = gather.parts.into_iter().flatten();
        match gather.ask {
            Ask::List(query) => {
                let mut top = TopN::new(query.limit);
                for part in parts {
                    if let Part::Rows(rows) = part {
                        for row in rows {
                            top.offer(Rank::of_row(query.sort, &row), row);
                        }
                    }
                }
                let body = crate::admin::row::encode_rows(&top.into_sorted());
                self.respond_http(ep, key, Status::Ok, LIST_CONTENT_TYPE, &body);
            }
            Ask::Close(filter) => {
                let matched = parts.map(|part| part.matched()).sum();
                if filter.dry_run {
                    info!(
                        "admin: a dry run of a close matched {matched} connections ({})",
                        describe(&filter)
                    );
                } else {
                    info!(
                        "admin: closed {matched} connections ({})",
                        describe(&filter)
                    );
                }
                let answer = CloseAnswer {
                    matched,
                    dry_run: filter.dry_run,
                };
                self.respond_http(
                    ep,
                    key,
                    Status::Ok,
                    CLOSE_CONTENT_TYPE,
                    answer.body().as_bytes(),
                );
            }
        }
    }

    /// Answers connection `key` with `refusal`'s status and line.
    fn refuse_admin(&mut self, ep: &mut HttpEndpoint, key: usize, refusal: &Refusal) {
        debug!("admin {key}: {} {}", refusal.status.line(), refusal.reason);
        self.respond_http(
            ep,
            key,
            refusal.status,
            TEXT_CONTENT_TYPE,
            refusal.body().as_bytes(),
        );
    }

    /// This reactor's part of `ask`: its best rows, or the connections it closed.
    fn admin_part(&mut self, ask: Ask) -> Part {
        match ask {
            Ask::List(query) => Part::Rows(self.list_part(&query)),
            Ask::Close(filter) => Part::Matched(self.close_part(&filter)),
        }
    }

    /// This reactor's best `query.limit` connections, as rows, best first: one pass over
    /// the table keeping the best keys, then a row for each kept.
    fn list_part(&self, query: &ListQuery) -> Vec<ConnectionRow> {
        let mut top = TopN::new(query.limit);
        let with_client = query.source.is_some();
        for (key, conn) in self.table.iter() {
            let facts = self.facts(key, conn, with_client);
            if query.admits(&facts) {
                top.offer(Rank::of(query.sort, &facts), key);
            }
        }
        top.into_sorted()
            .into_iter()
            .filter_map(|key| self.row(key))
            .collect()
    }

    /// Closes this reactor's connections that `filter` matches (counts them on a dry
    /// run); returns how many matched. One closing already (lingering, with its reason
    /// and its bounded linger) is not matched: it is not closed twice or counted again.
    fn close_part(&mut self, filter: &CloseFilter) -> u64 {
        let with_client = filter.source.is_some();
        let matched: Vec<usize> = self
            .table
            .iter()
            .filter(|&(_, conn)| conn.closing().is_none())
            .filter(|&(key, conn)| filter.matches(&self.facts(key, conn, with_client)))
            .map(|(key, _)| key)
            .collect();
        if !filter.dry_run {
            for &key in &matched {
                self.close_for_admin(key);
            }
        }
        debug!(
            "admin: {} {} connections{}",
            if filter.dry_run { "matched" } else { "closed" },
            matched.len(),
            self.of_reactor()
        );
        matched.len() as u64
    }

    /// Closes connection `key` for an operator, as a close for the buffer budget does:
    /// its buffers dropped, the error line and a lingering close where the peer can still
    /// read it, else a reset ([`Connection::abandon`]).
    fn close_for_admin(&mut self, key: usize) {
        let Some(next) = self.drive_without_budget(key, |conn, cx| {
            conn.abandon(protocol::CLOSED_BY_ADMIN, CloseReason::Admin, cx)
        }) else {
            return;
        };
        if next == Next::Wait {
            // Lingering already: input may be waiting with no new edge to announce it.
            self.table.ready.push(key);
        }
        self.settle(key, next);
    }

    /// What the filters and the order judge connection `key` by, now; its client's
    /// address only `with_client` (a `getpeername`).
    fn facts(&self, key: usize, conn: &Connection, with_client: bool) -> ConnFacts {
        let now_us = self.cx.now_us;
        let opened = self.table.opened(key);
        ConnFacts {
            id: opened.id,
            client: if with_client {
                self.table.client_of(key).map(|a| a.ip())
            } else {
                None
            },
            memory: conn.charged_bytes(self.cx.limits.kernel_held) as u64,
            age: Duration::from_micros(opened.age_us(now_us)),
            idle: Duration::from_micros(now_us.saturating_sub(conn.last_progress_us())),
        }
    }

    /// Connection `key` as the listing shows it.
    fn row(&self, key: usize) -> Option<ConnectionRow> {
        let conn = self.table.get(key)?;
        let facts = self.facts(key, conn, false);
        let stream = conn.stream();
        let peer = stream.peer_addr_name();
        let client = self
            .table
            .client_of(key)
            .map_or_else(|| peer.clone(), |a| a.to_string());
        let kernel_charge = if conn.is_stalled() {
            self.cx.limits.kernel_held
        } else {
            0
        };
        let counts = stream.tcp_byte_counts();
        Some(ConnectionRow {
            id: facts.id,
            reactor: self.id.index,
            client,
            peer,
            local: stream.local_addr_name(),
            age: facts.age,
            idle: facts.idle,
            state: state_of(conn, self.life.phase() == Phase::Moving),
            input_held: conn.input_held() as u64,
            output_pending: conn.pending_output() as u64,
            kernel_charge: kernel_charge as u64,
            memory: facts.memory,
            bytes_in: counts.map(|c| c.received),
            bytes_out: counts.map(|c| c.acked),
        })
    }
}

/// A close's filters as the log line names them: `source 127.0.0.5/32, idle over 30s`.
fn describe(filter: &CloseFilter) -> String {
    let CloseFilter {
        id,
        source,
        min_memory,
        idle_over,
        age_over,
        dry_run: _,
    } = filter;
    let mut parts = Vec::new();
    if let Some(id) = id {
        parts.push(format!("id {id}"));
    }
    if let Some(source) = source {
        parts.push(format!("source {source}"));
    }
    if let Some(bytes) = min_memory {
        let bytes = usize::try_from(*bytes).unwrap_or(usize::MAX);
        parts.push(format!("memory at least {}", crate::size::Size(bytes)));
    }
    if let Some(d) = idle_over {
        parts.push(format!("idle over {}", crate::addr::DurationArg(*d)));
    }
    if let Some(d) = age_over {
        parts.push(format!("age over {}", crate::addr::DurationArg(*d)));
    }
    parts.join(", ")
}

/// Whether `ask` asks reactor `index` (a listing may name one reactor).
fn asks(ask: &Ask, index: usize) -> bool {
    match ask {
        Ask::List(query) => query.asks(index),
        Ask::Close(_) => true,
    }
}

/// What connection `conn` is doing, as the listing names it; `moving`: its reactor is
/// moving its connections to an upgrade's new process, and this one goes with them.
fn state_of(conn: &Connection, moving: bool) -> ConnState {
    if conn.closing().is_some() {
        ConnState::Lingering
    } else if moving {
        ConnState::Moving
    } else if conn.read_paused() {
        ConnState::Paused
    } else if conn.pending_output() > 0 {
        ConnState::Writing
    } else {
        ConnState::Reading
    }
}
