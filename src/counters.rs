//! The counters a reactor keeps and reports, as plain values: [`Stats`] (its counters since
//! start), [`CloseReason`] (why a connection closed, one counter each), [`Snapshot`] (the
//! counters and gauges at an instant) and [`TurnHistogram`] (how long its loop turns take).
//! A leaf: it imports nothing from `server` nor `metrics`, so both use it without a
//! circle (the server writes these values, the metrics exposition reads them).

mod close;
mod proxy_headers;
mod snapshot;
mod stats;

pub use close::CloseReason;
pub use proxy_headers::{HeaderResult, ProxyHeaders};
pub use snapshot::{Snapshot, TurnHistogram, TURN_BUCKET_BOUNDS_US};
pub use stats::Stats;
