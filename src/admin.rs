//! The admin endpoint (`serve --admin unix:PATH`): an operator lists the open connections
//! and closes some of them by filter, over the same bounded HTTP/1.1 as the metrics
//! endpoint, on a Unix socket only the server's own uid and root may use.
//!
//! ```text
//!   GET  /connections?sort=memory|age|idle&limit=N&source=CIDR&reactor=R
//!        200, application/x-ndjson: one ConnectionRow per line (JSON lines), best first
//!   POST /connections/close   id=N source=CIDR min_memory=SIZE idle_over=DUR
//!                             age_over=DUR dry_run, in the query string and/or an
//!                             application/x-www-form-urlencoded body; ANDed
//!        200, application/json: {"matched":N,"dry_run":false}
//!   otherwise 400 (a bad parameter, a close without a filter), 403 (another uid),
//!   404 (another path), 405 + Allow (another method), 413 (a body over MAX_BODY),
//!   415 (a body of another type): text/plain, one line saying why
//! ```
//!
//! This module holds the pure parts; the reactor wires them into its loop
//! (`server::reactor::http_endpoint` for the HTTP, as for the metrics endpoint, and
//! `server::reactor::admin` for the listings and closes):
//! - [`request`]: method, target and body to an [`AdminRequest`], or a [`Refusal`];
//! - `form` (private): `application/x-www-form-urlencoded` pairs, percent-decoded;
//! - [`row`]: [`ConnectionRow`], one connection as listed, and its JSON lines both ways;
//! - [`select`]: [`TopN`], the bounded top-N selection a listing is, and the filters'
//!   matching of a connection's [`ConnFacts`];
//! - [`answer`]: the statuses and bodies the endpoint answers with;
//! - [`peer`]: [`peer_allowed`], the uid check of a connecting peer.
//!
//! # Invariants
//! - A close always names at least one filter besides `dry_run`: a request without one is
//!   refused (400), so that no typo or empty form closes every connection.
//! - Every parameter is always known, given once and well formed, or the request is
//!   refused with a line saying which: a misspelt filter (`min_mem=`) must never silently
//!   widen a close.
//! - A listing is always at most [`MAX_LIMIT`] rows, and a reactor's part of it is a
//!   selection of at most that many ([`TopN`]), never a sort of every connection.

pub mod answer;
mod form;
pub mod peer;
pub mod request;
pub mod row;
pub mod select;

pub use answer::{CloseAnswer, Refusal};
pub use peer::peer_allowed;
pub use request::{parse_request, AdminRequest, CloseFilter, ListQuery, SortKey};
pub use row::{ConnState, ConnectionRow};
pub use select::{ConnFacts, Rank, TopN};

/// The path of the listing.
pub const CONNECTIONS_PATH: &str = "/connections";

/// The path of the close.
pub const CLOSE_PATH: &str = "/connections/close";

/// Rows a listing returns when it names no `limit`: a few screens of a terminal, and the
/// default of the issue that asked for the endpoint.
pub const DEFAULT_LIMIT: usize = 100;

/// The largest `limit` accepted (a larger one is a 400). A listing is an operator's view,
/// not an export: 1000 rows are twenty screens. It bounds what one request costs: each
/// reactor keeps a heap of at most this many, and the answer, held whole under the
/// buffer budget while it is written, is at most this many rows of at most
/// [`row::MAX_TCP_ROW_BYTES`] (TCP rows; tested): 640,000 bytes. Whoever wants every
/// connection of a busy server narrows by `source` or `reactor`.
pub const MAX_LIMIT: usize = 1000;

/// The largest request body accepted (413 past it): the form of a close, whose longest
/// meaningful content (six parameters, an IPv6 CIDR) is under 200 bytes. The HTTP layer
/// checks `Content-Length` against it before reading a byte of the body.
pub const MAX_BODY: usize = 1024;

/// The content type of a listing: JSON lines, one object per line, each line ending in
/// `\n` (the type Elasticsearch and others use for newline-delimited JSON).
pub const LIST_CONTENT_TYPE: &str = "application/x-ndjson";

/// The content type of a close's answer, one JSON object ([`CloseAnswer`]).
pub const CLOSE_CONTENT_TYPE: &str = "application/json";

/// The content type of a refusal's one line of text.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

/// The content type a close's body must have (any parameters after it, as
/// `; charset=utf-8`, are ignored): what HTML forms and `curl -d` send.
pub const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded";

/// Where `tabecho conns` looks for the socket unless told (`--admin`): the directory
/// systemd creates for the service with `RuntimeDirectory=tabecho`, owned by its user.
pub const DEFAULT_SOCKET: &str = "/run/tabecho/admin.sock";
