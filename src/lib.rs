//! tabecho: a small, very fast TAB-delimited echo server on single-threaded mio reactors
//! (one by default, one per core with `--threads`), with its client and a verifying load
//! generator.
//!
//! ```text
//!  systemd: LISTEN_FDS (fd 3) ─▶ Listener; READY=1, STOPPING=1, MAINPID= ◀─ serve,
//!           shutdown, the end of an upgrade
//!  server::Server: binds, starts N reactors, joins them, sums their counters
//!   │ TCP: one SO_REUSEPORT listener each │ Unix / systemd's socket: reactor 0 hands off
//!   │ server::shared: connection count (and per source: server::source_table),
//!   │                 buffer-budget leases, the lifecycle's state (accept/close only)
//!   │ server::lifecycle (pure): serving, moving, moved, draining, stopped; the steps
//!   │ server::upgrade: SIGUSR2 ─▶ new process on the same sockets (LISTEN_FDS), READY=1
//!   │ server::handover: every connection moved to it (SCM_RIGHTS + its state); the
//!   │                  new process adopts and deals them over its reactors
//!   ▼
//!            ┌──────── server::reactor::Reactor (one thread each) ──────┐
//!  clients ──┤ mio::Poll ─▶ Acceptor (accept, EMFILE pause) ─▶ admit    │
//!            │ (trusted peer) ProxyIntake: PROXY header (pure) ─▶ admit │
//!            │           ─▶ ConnectionTable ─▶ FrameDecoder (pure)      │
//!            │                             └──▶ protocol (replies)      │
//!            │ Timers: TimerWheel (pure) ◀─ TimerKey: idle, lingers, ...│
//!            │ Life: signals, upgrader, move: server::lifecycle steps   │
//!            │ Budget: buffer bytes held, lease from server::shared     │
//!            │ TurnBudget (pure): a turn's work; past it, short reads   │
//!            │ Stats, turn histogram ─▶ Snapshot (on request, Waker)    │
//!  Prometheus┤ reactor 0, --metrics: metrics listener ─▶ HttpConn (pure)│
//!   GET /metrics, /ready  ─▶ own snapshot + siblings' (Waker) ─▶ exposition
//!  tabecho   ┤ reactor 0, --admin unix:PATH: admin listener ─▶ HttpConn │
//!   conns    │   GET /connections, POST /connections/close ─▶ own part   │
//!            │   + siblings' (admin_exchange, Waker) ─▶ JSON lines, count│
//!            └──────────────────────────────────────────────────────────┘
//! ```
//!
//! Modules:
//! - [`protocol`]: the wire constants and reply encoding (docs/PROTOCOL.md in code).
//! - [`frame`]: `FrameDecoder`, TAB framing across reads with a frame limit (pure).
//! - [`timer_wheel`]: `TimerWheel`, a hashed wheel of tick deadlines (pure).
//! - [`addr`], [`config`]: `ListenAddr` (tcp | unix), durations; `ServerConfig` defaults.
//! - [`size`]: sizes as people write them (`64K`, `256MiB`), parsed and printed.
//! - [`cidr`]: `Cidr`, an IPv4 or IPv6 network (`10.0.0.0/8`) that flags name sources by.
//! - [`proxy_protocol`]: the PROXY protocol v1/v2 header a trusted balancer sends first,
//!   parsed from the bytes so far (pure) and encoded (the load generator); and
//!   `TrustedProxies`, the peers it is expected from.
//! - [`fd_limit`]: the descriptor limit raised at start (the server and the load).
//! - [`cgroup`], [`sizing`]: the process's cgroup limits (memory, CPU quota), read at
//!   start, and the defaults sized from them (the buffer budget, `--threads auto`).
//! - [`stream`]: one non-blocking TCP-or-Unix stream type for the server and the load.
//! - [`counters`]: what a reactor counts (`Stats`, `CloseReason`, `Snapshot`, the turn
//!   histogram), plain values; a leaf that `server` writes and `metrics` reads.
//! - [`server`]: `Server` starts the reactors (`server::reactor`, the loop), deals Unix
//!   connections out (`server::deal`), shares the global limits (`server::shared`)
//!   and the count per source (`server::source`, `server::source_table`);
//!   `server::snapshot` copies a reactor's counters for other threads;
//!   `server::turn_budget` bounds one loop turn's work; `server::lifecycle` is the
//!   server's and each reactor's lifecycle, pure and model-tested; `server::upgrade`
//!   hands the listening sockets to a new process on SIGUSR2, and `server::handover`
//!   moves every open connection to it.
//! - [`http`]: one HTTP/1.x connection's state machine (heads, bodies, limits,
//!   keep-alive), pure: what the metrics and the admin endpoints speak.
//! - [`metrics`]: the metrics endpoint's pure part, the exposition format; reactor 0
//!   serves it on its own poll.
//! - [`admin`]: the admin endpoint's pure parts (`serve --admin`, `tabecho conns`): the
//!   requests, the rows listed as JSON lines, the top-N selection and the close filters;
//!   reactor 0 serves it on its own poll, the other reactors answering through
//!   `server::admin_exchange`.
//! - [`unix_peer`]: the uid of a Unix socket's peer, and our own (the admin socket's check).
//! - [`tcp_info`]: the bytes the kernel counted on a TCP connection (the admin listing's).
//! - [`systemd`]: socket activation (`LISTEN_FDS`) and `READY=1` / `STOPPING=1`.
//! - [`client`]: a blocking client (`tabecho send`, tests, embedders).
//! - [`load`]: the verifying load generator (`tabecho load`, the benchmarks).
// No `unsafe` of our own: the exceptions, wrapping the descriptors systemd passed and the
// readiness descriptor a parent passed (`serve --ready-fd`), side by side in systemd.rs,
// getpeereid on the BSDs and macOS (unix_peer.rs; Linux needs none), and getsockopt's
// TCP_INFO (tcp_info.rs; no dependency wraps it), are allowed where they are, each with
// its SAFETY comment.
#![deny(unsafe_code)]

pub mod addr;
pub mod admin;
pub mod cgroup;
pub mod cidr;
pub mod client;
pub mod config;
pub mod counters;
pub mod fd_limit;
pub mod frame;
pub mod http;
pub mod load;
pub mod metrics;
pub mod protocol;
pub mod proxy_protocol;
pub mod server;
pub mod size;
pub mod sizing;
pub mod stream;
pub mod systemd;
pub mod tcp_info;
pub mod timer_wheel;
pub mod unix_peer;
