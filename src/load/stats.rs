//! WorkerStats: one worker's counters, histograms and intervals, merged into the report;
//! Progress: what a worker publishes for the live line.
//!
//! # Invariants
//! - Once a worker has finished, `frames_sent` always equals
//!   `frames_answered + frames_corrupt + frames_lost`: every frame sent is settled once.
//! - `measured_replies` always equals the sum of the intervals' frames.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::load::fault::kind::{FaultCounts, FaultKind};
use crate::load::histogram::{self, MAX_MICROS, MAX_MILLIS};
use crate::load::intervals::Intervals;

/// What one worker counted.
#[derive(Debug, Clone)]
pub struct WorkerStats {
    /// Connections established.
    pub established: u64,
    /// Connections that could not be established (refused, timed out, no descriptor...).
    pub failed: u64,
    /// Frames sent (queued on an established connection).
    pub frames_sent: u64,
    /// Frames whose exact reply arrived.
    pub frames_answered: u64,
    /// Frames whose reply differed.
    pub frames_corrupt: u64,
    /// Frames never answered (skipped by the server, or in flight at the end of the drain).
    pub frames_lost: u64,
    /// Replies that arrived with no frame in flight.
    pub unsolicited: u64,
    /// Error lines from the server.
    pub error_replies: u64,
    /// Connections whose reply stream could not be checked any further (no TAB within
    /// the longest possible reply).
    pub desyncs: u64,
    /// Replies to frames scheduled in the measured window.
    pub measured_replies: u64,
    /// Bytes of those replies.
    pub measured_rx_bytes: u64,
    /// Bytes of frames scheduled in the measured window.
    pub measured_tx_bytes: u64,
    /// The measured window interval by interval: the measured replies with their latency
    /// in microseconds from each frame's scheduled send time, lost and corrupt frames, by
    /// the interval each frame was scheduled in.
    pub intervals: Intervals,
    /// The latency of every reply (measured or not) since the worker last published it for
    /// the live line; `None` without one. Published, not merged.
    pub live: Option<Histogram<u64>>,
    /// Time from `connect` to established, in microseconds.
    pub connect_us: Histogram<u64>,
    /// Connections the server closed (end of stream or reset) while we held them.
    pub server_closes: u64,
    /// For each server close: milliseconds from established to the close.
    pub close_after_ms: Histogram<u64>,
    /// Failures counted by kind: `"connect: connection refused"`, ...
    pub errors: BTreeMap<String, u64>,
    /// Set when this worker stopped opening connections because a limit ran out.
    pub limit: Option<LimitHit>,
    /// The faulty connections' cycles, by kind (indexed by `FaultKind::index`).
    pub faults: [FaultCounts; FaultKind::ALL.len()],
    /// The one-frame connections' outcomes (`--churn`).
    pub churn: ChurnCounts,
}

/// What the one-frame connections of `--churn` came to (connect, send one frame, read
/// its reply, close); in JSON, these field names are the keys.
///
/// # Invariants
/// - Once the run is over, `attempted` always equals the sum of the six outcomes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChurnCounts {
    /// Connections opened (or tried).
    pub attempted: u64,
    /// The exact reply arrived.
    pub ok: u64,
    /// The connect was refused (ECONNREFUSED; on a Unix socket, a full backlog too).
    pub refused: u64,
    /// Reset or broken by the server, or closed before the whole reply.
    pub reset: u64,
    /// A reply other than the one expected, an error line included.
    pub wrong: u64,
    /// No reply within `--connect-timeout` of the connect.
    pub timed_out: u64,
    /// Any other failure (no descriptor, no local port, ...), described in `errors`.
    pub other: u64,
}

impl ChurnCounts {
    /// Connections that did not get their reply: refused, reset, wrong, timed out, other.
    pub fn failed(&self) -> u64 {
        self.refused + self.reset + self.wrong + self.timed_out + self.other
    }

    /// Adds `other` into `self`. Exhaustive: a new field does not compile until it is
    /// merged here.
    pub fn merge(&mut self, other: &ChurnCounts) {
        let ChurnCounts {
            attempted,
            ok,
            refused,
            reset,
            wrong,
            timed_out,
            other,
        } = other;
        self.attempted += attempted;
        self.ok += ok;
        self.refused += refused;
        self.reset += reset;
        self.wrong += wrong;
        self.timed_out += timed_out;
        self.other += other;
    }
}

/// A resource that ran out while opening connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHit {
    /// EMFILE or ENFILE: the process's or the system's file descriptors.
    FileDescriptors,
    /// EADDRNOTAVAIL: no ephemeral port left for another connection to the address.
    EphemeralPorts,
}

impl WorkerStats {
    /// All zero, for a measured window of `window` cut in intervals of `interval`; `live`:
    /// keep the latencies for the live line.
    pub fn new(window: Duration, interval: Duration, live: bool) -> Self {
        WorkerStats {
            established: 0,
            failed: 0,
            frames_sent: 0,
            frames_answered: 0,
            frames_corrupt: 0,
            frames_lost: 0,
            unsolicited: 0,
            error_replies: 0,
            desyncs: 0,
            measured_replies: 0,
            measured_rx_bytes: 0,
            measured_tx_bytes: 0,
            intervals: Intervals::new(window, interval),
            live: live.then(|| histogram::empty(MAX_MICROS)),
            connect_us: histogram::empty(MAX_MICROS),
            server_closes: 0,
            close_after_ms: histogram::empty(MAX_MILLIS),
            errors: BTreeMap::new(),
            limit: None,
            faults: Default::default(),
            churn: ChurnCounts::default(),
        }
    }

    /// Counts one failure of `kind`.
    pub fn error(&mut self, kind: impl Into<String>) {
        *self.errors.entry(kind.into()).or_insert(0) += 1;
    }

    /// Records a connect time in microseconds.
    pub fn record_connect(&mut self, micros: u64) {
        self.connect_us
            .saturating_record(micros.clamp(1, MAX_MICROS));
    }

    /// Records a server close, `millis` after the connection was established.
    pub fn record_server_close(&mut self, millis: u64) {
        self.server_closes += 1;
        self.close_after_ms
            .saturating_record(millis.clamp(1, MAX_MILLIS));
    }

    /// Adds `other` into `self`. Exhaustive: a new field does not compile until it is
    /// merged here.
    pub fn merge(&mut self, other: &WorkerStats) {
        let WorkerStats {
            established,
            failed,
            frames_sent,
            frames_answered,
            frames_corrupt,
            frames_lost,
            unsolicited,
            error_replies,
            desyncs,
            measured_replies,
            measured_rx_bytes,
            measured_tx_bytes,
            intervals,
            live: _,
            connect_us,
            server_closes,
            close_after_ms,
            errors,
            limit,
            faults,
            churn,
        } = other;
        self.established += established;
        self.failed += failed;
        self.frames_sent += frames_sent;
        self.frames_answered += frames_answered;
        self.frames_corrupt += frames_corrupt;
        self.frames_lost += frames_lost;
        self.unsolicited += unsolicited;
        self.error_replies += error_replies;
        self.desyncs += desyncs;
        self.measured_replies += measured_replies;
        self.measured_rx_bytes += measured_rx_bytes;
        self.measured_tx_bytes += measured_tx_bytes;
        self.intervals.merge(intervals);
        // Same bounds on both sides: `add` cannot fail.
        let _ = self.connect_us.add(connect_us);
        let _ = self.close_after_ms.add(close_after_ms);
        self.server_closes += server_closes;
        for (kind, n) in errors {
            *self.errors.entry(kind.clone()).or_insert(0) += n;
        }
        self.limit = self.limit.or(*limit);
        for (mine, theirs) in self.faults.iter_mut().zip(faults) {
            mine.merge(theirs);
        }
        self.churn.merge(churn);
    }
}

/// What a worker publishes for the live line: counters stored after each loop turn
/// (relaxed: they are only displayed), and the latencies of the replies since the line
/// last took them.
#[derive(Debug, Default)]
pub struct Progress {
    /// Connections open now.
    pub open: AtomicU64,
    /// Frames answered so far.
    pub answered: AtomicU64,
    /// Frames lost so far.
    pub lost: AtomicU64,
    /// Frames with a corrupt reply so far.
    pub corrupt: AtomicU64,
    /// Failures counted in the report's errors so far.
    pub errors: AtomicU64,
    /// Reply latencies, in microseconds, added by the worker a few times a second and taken
    /// by the live line each second; `None` once taken, until the worker adds more.
    pub latency: Mutex<Option<Histogram<u64>>>,
}
