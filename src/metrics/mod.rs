//! The metrics endpoint: `GET /metrics` in the Prometheus text format, served by a small
//! blocking HTTP server (`tiny_http`) on threads of its own, never on the reactor's.
//!
//! Each scrape asks the reactor for a [`Snapshot`] through a [`SnapshotHandle`] (a ticket,
//! a wake-up, a bounded wait: see `server::snapshot`) and encodes it with
//! [`exposition::encode`]. The reactor does nothing per frame for this, and nothing at
//! all between scrapes but time its turns.
//!
//! Answers: 200 with the page; 503 when the reactor did not answer within
//! [`SNAPSHOT_TIMEOUT`] (stalled, or shutting down); 404 for other paths; 405 for methods
//! other than GET and HEAD.
//!
//! # Invariants
//! - The endpoint's threads only read snapshots: they never touch the reactor's state.
//! - Dropping the [`MetricsServer`] closes the listening socket and joins its thread.

pub mod exposition;
pub mod http;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use log::{debug, warn};
use tiny_http::{Header, Method, Request, Response};

use crate::server::{Snapshot, SnapshotHandle};

/// The longest a scrape waits for the reactor's snapshot. A healthy reactor answers within
/// one turn (microseconds to milliseconds); Prometheus' default scrape timeout is 10 s, so
/// 2 s leaves room and still reports a stalled reactor as 503 rather than hanging.
pub const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(2);

/// The path of the page.
pub const PATH: &str = "/metrics";

/// The path of the readiness answer.
pub const READY_PATH: &str = "/ready";

/// At most this many metrics connections at once; the next is answered 503 and closed.
/// A Prometheus server keeps one connection per target; 64 leaves room for several
/// Prometheus replicas, `tabecho stats` and a person with curl, and bounds what the
/// endpoint may hold to 64 heads of 8 KiB and 64 responses.
pub const MAX_CONNECTIONS: usize = 64;

/// A running metrics endpoint; stopped on drop.
pub struct MetricsServer {
    /// The HTTP server, shared with the serving thread.
    http: Arc<tiny_http::Server>,
    /// Set before the serving thread is unblocked, so it knows to return.
    stopping: Arc<AtomicBool>,
    /// The address bound.
    local_addr: SocketAddr,
    /// The serving thread; `None` once joined.
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `addr` (port 0 picks a free port) and serves the reactors behind `reactors`
    /// (reactor `i` is `reactors[i]`) until dropped.
    pub fn start(addr: SocketAddr, reactors: Vec<SnapshotHandle>) -> io::Result<MetricsServer> {
        let http = tiny_http::Server::http(addr).map_err(io::Error::other)?;
        let local_addr = http.server_addr().to_ip().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "metrics: not an IP address")
        })?;
        let http = Arc::new(http);
        let stopping = Arc::new(AtomicBool::new(false));
        let (serving, stop) = (Arc::clone(&http), Arc::clone(&stopping));
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || serve(&serving, &stop, &reactors))?;
        Ok(MetricsServer {
            http,
            stopping,
            local_addr,
            thread: Some(thread),
        })
    }

    /// The address bound (port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.http.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Answers requests until the server is unblocked (dropped).
fn serve(http: &tiny_http::Server, stopping: &AtomicBool, reactors: &[SnapshotHandle]) {
    loop {
        let request = match http.recv() {
            Ok(request) => request,
            // `unblock` ends the wait with an error: we are being dropped.
            Err(_) if stopping.load(Ordering::SeqCst) => return,
            Err(e) => {
                warn!("metrics: {e}");
                continue;
            }
        };
        if let Err(e) = answer(request, reactors) {
            // The scraper went away mid-answer: its problem, not ours.
            debug!("metrics: answering: {e}");
        }
    }
}

fn answer(request: Request, reactors: &[SnapshotHandle]) -> io::Result<()> {
    if !matches!(request.method(), Method::Get | Method::Head) {
        return request.respond(text(405, "only GET and HEAD\n"));
    }
    // The query string, if any, is ignored (Prometheus sends none).
    let path = request.url().split('?').next().unwrap_or("");
    if path != PATH {
        return request.respond(text(404, "see /metrics\n"));
    }
    let snapshots: Option<Vec<Snapshot>> = reactors
        .iter()
        .map(|handle| handle.snapshot(SNAPSHOT_TIMEOUT))
        .collect();
    let Some(snapshots) = snapshots else {
        return request.respond(text(503, "the server did not answer in time\n"));
    };
    match exposition::encode(&snapshots) {
        Ok(page) => {
            let response = Response::from_string(page)
                .with_header(header("Content-Type", exposition::CONTENT_TYPE));
            request.respond(response)
        }
        Err(_) => request.respond(text(500, "encoding failed\n")),
    }
}

fn text(status: u16, body: &str) -> Response<io::Cursor<Vec<u8>>> {
    Response::from_string(body)
        .with_status_code(status)
        .with_header(header("Content-Type", "text/plain; charset=utf-8"))
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes())
        .expect("our header names and values are ASCII constants")
}
