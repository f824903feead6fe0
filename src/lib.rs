//! tabecho: a small, very fast TAB-delimited echo server on a single-threaded mio reactor,
//! with its client and a verifying load generator.
//!
//! ```text
//!            ┌──────────── server::Server (one thread) ─────────────┐
//!  clients ──┤ mio::Poll ─▶ Listener (accept, limit, EMFILE pause)  │
//!            │           ─▶ Slab<Connection> ─▶ FrameDecoder (pure) │
//!            │                             └──▶ protocol (replies)  │
//!            │ TimerWheel (pure): idle checks, lingers, pauses      │
//!            └──────────────────────────────────────────────────────┘
//! ```
//!
//! Modules:
//! - [`protocol`]: the wire constants and reply encoding (docs/PROTOCOL.md in code).
//! - [`frame`]: `FrameDecoder`, TAB framing across reads with a frame limit (pure).
//! - [`timer_wheel`]: `TimerWheel`, a hashed wheel of tick deadlines (pure).
//! - [`addr`], [`config`]: `ListenAddr` (tcp | unix), durations; `ServerConfig` defaults.
//! - [`stream`]: one non-blocking TCP-or-Unix stream type for the server and the load.
//! - [`server`]: the reactor.
//! - [`client`]: a blocking client (`tabecho send`, tests, embedders).
//! - [`load`]: the verifying load generator (`tabecho load`, the benchmarks).
pub mod addr;
pub mod client;
pub mod config;
pub mod frame;
pub mod load;
pub mod metrics;
pub mod protocol;
pub mod server;
pub mod stream;
pub mod systemd;
pub mod timer_wheel;
