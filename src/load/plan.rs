//! Plan: the run's timeline, shape and payloads, computed once from the options and
//! shared by every worker and connection (read-only while the run goes).
//!
//! # Invariants
//! - `start <= measure_start <= send_end <= drain_end` always.

use std::time::{Duration, Instant};

use crate::addr::ListenAddr;
use crate::load::fault::{FaultKind, FaultPlan, NOREAD_FRAME};
use crate::load::payload::PayloadSource;
use crate::load::proxy::ProxyHeaders;
use crate::load::LoadOptions;
use crate::protocol::REPLY_PREFIX;

/// The run's timeline, shape and payloads, shared by all workers.
#[derive(Debug)]
pub struct Plan {
    /// The server.
    pub addr: ListenAddr,
    /// The local address to connect from, if given.
    pub source: Option<std::net::IpAddr>,
    /// Both socket buffers of every connection capped at this many bytes, if given.
    pub socket_buffer: Option<usize>,
    /// The PROXY header every connection begins with, if any.
    pub proxy: Option<ProxyHeaders>,
    /// Frames in flight per connection, at most.
    pub pipeline: usize,
    /// Bytes of a frame on the wire (payload + TAB).
    pub frame_len: usize,
    /// Bytes of a reply on the wire.
    pub reply_len: usize,
    /// Expect verbatim echo.
    pub raw: bool,
    /// Hold connections without sending.
    pub idle: bool,
    /// Frames per connection, at most.
    pub frames_per_connection: Option<u64>,
    /// When the measured window starts.
    pub measure_start: Instant,
    /// When sending stops (the measured window ends).
    pub send_end: Instant,
    /// When the drain gives up.
    pub drain_end: Instant,
    /// The width of the intervals the measured window is cut into.
    pub interval: Duration,
    /// Whether the workers publish reply latencies for the live line.
    pub live: bool,
    /// The longest a connect may take.
    pub connect_timeout: Duration,
    /// When the workers started.
    pub start: Instant,
    /// Which connections misbehave, how, and what they assume of the server.
    pub faults: FaultPlan,
    /// The payloads of the healthy frames, of the churn frames and of most faults'.
    pub payloads: PayloadSource,
    /// The payloads of `noread`'s larger frames.
    pub noread_payloads: PayloadSource,
    /// The payloads of `flood`'s frames: empty.
    pub flood_payloads: PayloadSource,
}

impl Plan {
    /// The timeline of `options` from `start`.
    pub fn new(options: &LoadOptions, start: Instant) -> Self {
        let measure_start = start + options.warmup;
        let send_end = measure_start + options.duration;
        let drain = if options.idle {
            Duration::ZERO
        } else {
            options.drain
        };
        Plan {
            addr: options.addr.clone(),
            source: options.source,
            socket_buffer: options.socket_buffer,
            proxy: options.proxy.clone(),
            pipeline: options.pipeline.max(1),
            frame_len: options.size + 1,
            reply_len: if options.raw { 0 } else { REPLY_PREFIX.len() } + options.size + 1,
            raw: options.raw,
            idle: options.idle,
            frames_per_connection: options.frames_per_connection,
            measure_start,
            send_end,
            drain_end: send_end + drain,
            interval: options.interval,
            live: options.progress,
            connect_timeout: options.connect_timeout,
            start,
            faults: fault_plan(options),
            payloads: PayloadSource::new(options.size),
            noread_payloads: PayloadSource::new(NOREAD_FRAME.min(options.max_frame)),
            flood_payloads: PayloadSource::new(0),
        }
    }

    /// Whether new frames may be sent at `now`.
    pub fn sending(&self, now: Instant) -> bool {
        !self.idle && now < self.send_end
    }

    /// Whether a frame scheduled at `stamp` counts in the measured window.
    pub fn measured(&self, stamp: Instant) -> bool {
        stamp >= self.measure_start && stamp < self.send_end
    }

    /// The measured window's length.
    pub fn window(&self) -> Duration {
        self.send_end - self.measure_start
    }

    /// How far into the measured window `at` is (zero before it).
    pub fn offset(&self, at: Instant) -> Duration {
        at.saturating_duration_since(self.measure_start)
    }
}

/// The faulty connections of `options`: `fault_share` of them, at least one per kind
/// given (each kind once, in the order given), at most all.
fn fault_plan(options: &LoadOptions) -> FaultPlan {
    let mut kinds: Vec<FaultKind> = Vec::new();
    for &kind in &options.faults {
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    let connections = options.connections as u64;
    let faulty = if kinds.is_empty() {
        0
    } else {
        ((connections as f64 * options.fault_share).ceil() as u64)
            .max(kinds.len() as u64)
            .min(connections)
    };
    FaultPlan {
        kinds,
        faulty,
        connections,
        max_frame: options.max_frame,
        idle_timeout: options.idle_timeout,
        pause: options.fault_pause,
        cycles: options.fault_cycles,
    }
}
