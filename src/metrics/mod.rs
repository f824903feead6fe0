//! The metrics endpoint (`serve --metrics`): `GET /metrics` in the Prometheus text format
//! and `GET /ready`, served by reactor 0 on its own poll, next to the echo connections (as
//! HAProxy's Prometheus exporter and nginx's stub_status are): no thread of its own, so a
//! server of one reactor is one thread, with or without `--metrics`.
//!
//! This module holds its pure part, [`exposition`], the page written by
//! `prometheus-client`; the HTTP it speaks is [`crate::http`] (heads parsed by `httparse`,
//! limits, keep-alive, one response at a time), shared with the admin endpoint. The glue
//! (the listener's token, the connections' slab and timers, the buffer budget) is
//! `server::reactor::http_endpoint`, and the gathering of the other reactors' snapshots
//! `server::reactor::metrics_page`.
//!
//! Answers: `/metrics` 200 with the page, or 503 when another reactor did not send its
//! snapshot within [`crate::http::ANSWER_TIMEOUT`]; `/ready` 200 while the server accepts
//! connections, 503 once a shutdown or an upgrade's drain has begun; 404 for other paths,
//! 405 for methods other than GET and HEAD, 400 and 431 for bad heads (docs/PROTOCOL.md,
//! "Metrics").

pub mod exposition;

/// The path of the page.
pub const PATH: &str = "/metrics";

/// The path of the readiness answer.
pub const READY_PATH: &str = "/ready";

/// At most this many metrics connections at once; the next is answered 503 and closed
/// ([`crate::http::MAX_CONNECTIONS`], the bound of every HTTP endpoint).
pub const MAX_CONNECTIONS: usize = crate::http::MAX_CONNECTIONS;
