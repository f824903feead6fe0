//! What tabecho's integration tests and its system checks (`cargo xtask NAME`) share, in
//! one place: a `tabecho serve` process found by its readiness descriptor, /proc readings
//! of a process, and the machine-readable reports (the shutdown summary, the metrics
//! page).
//!
//! No log scraping: a server's addresses come from `--ready-fd`, its counters from
//! `--summary-json` or `/metrics`, a load's results from its typed report
//! (`tabecho::load::LoadReport`).

pub mod proc;
pub mod process;
pub mod report;

pub use process::{ServerProcess, WAIT};
