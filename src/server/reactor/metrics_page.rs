//! Reactor 0's metrics endpoint (`--metrics`): what its requests are answered with. The
//! listener and its connections are `reactor/http_endpoint.rs`'s, as the admin
//! endpoint's are.
//!
//! ```text
//!   /ready   → 200 while the server accepts, 503 from a shutdown or a handover
//!   /metrics → one reactor: the page now. Several: a snapshot request to each sibling
//!              (with this reactor's waker); the page when the last arrives (WAKER
//!              event), or 503 at the connection's answer deadline (2 s)
//! ```
//!
//! # Invariants
//! - A page holds every reactor's snapshot, each taken after the request arrived, or it
//!   is not sent (503): never a page with a reactor missing.

use std::io;
use std::net::SocketAddr;

use super::http_endpoint::{Gather, HttpEndpoint, Which};
use super::Reactor;
use crate::counters::Snapshot;
use crate::http::{Route, Status, TEXT};
use crate::metrics::exposition;
use crate::server::listener::Listener;
use crate::server::snapshot::{SnapshotHandle, Taken};

/// The snapshots of one page: this reactor's, taken at the request, and a ticket for each
/// sibling's until it arrives.
pub(super) struct PageGather {
    snapshots: Vec<Option<Snapshot>>,
    tickets: Vec<u64>,
    /// A sibling has ended without a last snapshot: no page.
    gone: bool,
}

impl PageGather {
    /// Takes the snapshots that have arrived; whether the page can be answered now (all
    /// in, or a sibling gone).
    pub(super) fn collect(&mut self, siblings: &[SnapshotHandle]) -> bool {
        for (i, sibling) in siblings.iter().enumerate() {
            if self.snapshots[i + 1].is_some() {
                continue;
            }
            match sibling.try_take(self.tickets[i]) {
                Taken::Ready(snapshot) => self.snapshots[i + 1] = Some(*snapshot),
                Taken::Pending => {}
                Taken::Gone => self.gone = true,
            }
        }
        self.gone || self.snapshots.iter().all(Option::is_some)
    }
}

impl Reactor {
    /// Serves the metrics endpoint on `listener` (bound by the server, or handed over by
    /// the process this one upgrades) from this reactor's own poll, with `siblings` the
    /// snapshot handles of the server's other reactors. Returns the address bound. Starts
    /// timing this reactor's turns.
    pub fn serve_metrics_on(
        &mut self,
        listener: mio::net::TcpListener,
        siblings: Vec<SnapshotHandle>,
    ) -> io::Result<SocketAddr> {
        let local = listener.local_addr()?;
        let _ = self.snapshot_handle();
        let mut endpoint = HttpEndpoint::new(Which::Metrics, Listener::Tcp(listener));
        endpoint.snapshots = siblings;
        self.serve_endpoint(endpoint)?;
        Ok(local)
    }

    /// Answers `route` on metrics connection `key`, or starts gathering the page.
    pub(super) fn answer_metrics(&mut self, ep: &mut HttpEndpoint, key: usize, route: Route) {
        if route == Route::Ready {
            let (status, body): (_, &[u8]) = if self.accepting() {
                (Status::Ok, b"ready\n")
            } else {
                (Status::Unavailable, b"draining\n")
            };
            self.respond_http(ep, key, status, TEXT, body);
            return;
        }
        if ep.snapshots.is_empty() {
            let page = exposition::encode(&[self.own_snapshot()]);
            self.respond_page(ep, key, page);
            return;
        }
        let mut snapshots = vec![Some(self.own_snapshot())];
        let mut tickets = Vec::with_capacity(ep.snapshots.len());
        for sibling in &ep.snapshots {
            match sibling.request(&self.waker) {
                Some(ticket) => tickets.push(ticket),
                None => {
                    // A sibling has ended (a shutdown): no page.
                    self.respond_stopped(ep, key);
                    return;
                }
            }
            snapshots.push(None);
        }
        let gather = PageGather {
            snapshots,
            tickets,
            gone: false,
        };
        self.begin_gather(ep, key, Gather::Page(gather));
    }

    /// Every snapshot of `page` is in (or a sibling is gone): the page, or 503.
    pub(super) fn finish_page(&mut self, ep: &mut HttpEndpoint, key: usize, page: PageGather) {
        let snapshots: Option<Vec<Snapshot>> = page.snapshots.into_iter().collect();
        match snapshots {
            Some(snapshots) if !page.gone => {
                self.respond_page(ep, key, exposition::encode(&snapshots))
            }
            _ => self.respond_stopped(ep, key),
        }
    }

    /// The 503 of an answer a stopped reactor cannot take part in.
    pub(super) fn respond_stopped(&mut self, ep: &mut HttpEndpoint, key: usize) {
        self.respond_http(
            ep,
            key,
            Status::Unavailable,
            TEXT,
            b"a reactor has stopped\n",
        );
    }

    fn respond_page(
        &mut self,
        ep: &mut HttpEndpoint,
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

    /// Whether `/ready` says 200: serving, no shutdown and no handover begun.
    fn accepting(&self) -> bool {
        self.life.state.accepts() && !self.shared.draining() && !self.shared.upgraded()
    }
}
