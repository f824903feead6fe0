//! The metrics endpoint (`serve --metrics`): `GET /metrics` in the Prometheus text format
//! and `GET /ready`, served by reactor 0 on its own poll, next to the echo connections (as
//! HAProxy's Prometheus exporter and nginx's stub_status are): no thread of its own, so a
//! server of one reactor is one thread, with or without `--metrics`.
//!
//! This module holds the two pure parts: [`http`], one HTTP/1.x connection's state machine
//! (heads parsed by `httparse`, limits, keep-alive, one response at a time), and
//! [`exposition`], the page written by `prometheus-client`. The glue (the listener's
//! token, the connections' slab and timers, the buffer budget, the gathering of the other
//! reactors' snapshots) is `server::reactor::metrics_listener`.
//!
//! Answers: `/metrics` 200 with the page, or 503 when another reactor did not send its
//! snapshot within [`http::ANSWER_TIMEOUT`]; `/ready` 200 while the server accepts
//! connections, 503 once a shutdown or an upgrade's drain has begun; 404 for other paths,
//! 405 for methods other than GET and HEAD, 400 and 431 for bad heads (docs/PROTOCOL.md,
//! "Metrics").

pub mod exposition;
pub mod http;

/// The path of the page.
pub const PATH: &str = "/metrics";

/// The path of the readiness answer.
pub const READY_PATH: &str = "/ready";

/// At most this many metrics connections at once; the next is answered 503 and closed.
/// A Prometheus server keeps one connection per target; 64 leaves room for several
/// Prometheus replicas, `tabecho stats` and a person with curl, and bounds what the
/// endpoint may hold to 64 heads of 8 KiB and 64 responses.
pub const MAX_CONNECTIONS: usize = 64;
