//! Ctx: what a worker lends every connection it drives (healthy, faulty, churn) on each
//! call: its counters, its read buffer, the plan and the poll's registry.
//!
//! # Invariants
//! - `in_flight` always equals the sum of the healthy sessions' frames in flight.
//! - `open` always counts the healthy sessions established and not yet closed.
//! - `busy_faults` always counts the faulty sessions with a connection (connecting or
//!   running a cycle).

use mio::Registry;

use crate::load::plan::Plan;
use crate::load::stats::WorkerStats;

/// Bytes read at once: several whole replies to 64 KiB frames.
const READ_BUF: usize = 256 * 1024;

/// A worker's state shared by its connections, lent to each call.
pub struct Ctx<'a> {
    /// This worker's statistics.
    pub stats: WorkerStats,
    /// Scratch buffer for reads, shared by the worker's connections.
    pub read_buf: Box<[u8]>,
    /// The run's timeline, shape and payloads.
    pub plan: &'a Plan,
    /// Where connections register and deregister (the worker's poll's).
    pub registry: Registry,
    /// Frames in flight over all the worker's healthy sessions.
    pub in_flight: u64,
    /// Healthy sessions open now.
    pub open: u64,
    /// Faulty sessions in the middle of a cycle (connecting or running).
    pub busy_faults: u64,
}

impl<'a> Ctx<'a> {
    /// A worker's fresh context, registering on `registry`.
    pub fn new(plan: &'a Plan, registry: Registry) -> Self {
        Ctx {
            stats: WorkerStats::new(plan.window(), plan.interval, plan.live),
            read_buf: vec![0u8; READ_BUF].into_boxed_slice(),
            plan,
            registry,
            in_flight: 0,
            open: 0,
            busy_faults: 0,
        }
    }
}
