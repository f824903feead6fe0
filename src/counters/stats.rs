//! Stats: the server's counters, logged every `--stats-interval` and at shutdown.

use std::fmt;
use std::time::Duration;

use serde::{Serialize, Serializer};

use super::close::CloseReason;
use super::proxy_headers::ProxyHeaders;
use crate::size::Size;

/// Counters since the server started. Plain integers: one thread owns them.
///
/// Serialized (`serve --summary-json`) as one JSON object of every field by its name,
/// `accept_paused_time` in seconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Connections accepted and served.
    pub accepted: u64,
    /// Connections refused with `error: too many connections` (`--max-connections`).
    pub rejected: u64,
    /// Connections refused with `error: too many connections from your address`
    /// (`--max-connections-per-source`).
    pub rejected_per_source: u64,
    /// Times accepting paused because descriptors ran out (EMFILE/ENFILE).
    pub accept_pauses: u64,
    /// Total time accepting was paused.
    #[serde(serialize_with = "seconds")]
    pub accept_paused_time: Duration,
    /// Closed: peer EOF after all replies.
    pub closed_eof: u64,
    /// Closed: idle past the timeout.
    pub reaped_idle: u64,
    /// Closed: frame over the limit.
    pub closed_frame_too_long: u64,
    /// Closed: reset or broken pipe.
    pub closed_reset: u64,
    /// Closed: other I/O errors.
    pub closed_error: u64,
    /// Closed by the shutdown.
    pub closed_shutdown: u64,
    /// Closed because the buffer-memory budget was reached and they held the most.
    pub closed_memory_budget: u64,
    /// Closed by an operator through the admin socket (`POST /connections/close`).
    pub closed_admin: u64,
    /// The most bytes charged to connections at once (buffers and stalled kernel queues).
    /// One reactor's stays within its lease; summed over reactors ([`Stats::add`]) it is
    /// an upper bound of the server's peak, which may exceed any one instant's total.
    pub buffered_peak: u64,
    /// Times a connection used its whole read budget and yielded to the others.
    pub read_yields: u64,
    /// Times reading from a connection paused because its pending output passed high water.
    pub backpressure_stalls: u64,
    /// Frames answered.
    pub frames: u64,
    /// Bytes read.
    pub bytes_in: u64,
    /// Bytes written.
    pub bytes_out: u64,
    /// Connections moved to a new process by an upgrade (not closed: they go on there).
    pub moved_out: u64,
    /// Connections moved in from the process this one upgraded (or back from a move that
    /// failed).
    pub adopted: u64,
    /// Trusted peers' PROXY headers, by how each ended (`--proxy-protocol-from`). Not in
    /// the summary (`--summary-json` keeps one number per key); in the metrics.
    #[serde(skip)]
    pub proxy_headers: ProxyHeaders,
}

/// A duration as seconds, a float (the unit Prometheus and the summary use).
fn seconds<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl Stats {
    /// Adds another reactor's counters to these (the server's totals). Exhaustive: a new
    /// field does not compile until it is summed here. `buffered_peak` sums each
    /// reactor's peak: an upper bound of the server's.
    pub fn add(&mut self, other: &Stats) {
        let Stats {
            accepted,
            rejected,
            rejected_per_source,
            accept_pauses,
            accept_paused_time,
            closed_eof,
            reaped_idle,
            closed_frame_too_long,
            closed_reset,
            closed_error,
            closed_shutdown,
            closed_memory_budget,
            closed_admin,
            buffered_peak,
            read_yields,
            backpressure_stalls,
            frames,
            bytes_in,
            bytes_out,
            moved_out,
            adopted,
            proxy_headers,
        } = other;
        self.accepted += accepted;
        self.rejected += rejected;
        self.rejected_per_source += rejected_per_source;
        self.accept_pauses += accept_pauses;
        self.accept_paused_time += *accept_paused_time;
        self.closed_eof += closed_eof;
        self.reaped_idle += reaped_idle;
        self.closed_frame_too_long += closed_frame_too_long;
        self.closed_reset += closed_reset;
        self.closed_error += closed_error;
        self.closed_shutdown += closed_shutdown;
        self.closed_memory_budget += closed_memory_budget;
        self.closed_admin += closed_admin;
        self.buffered_peak += buffered_peak;
        self.read_yields += read_yields;
        self.backpressure_stalls += backpressure_stalls;
        self.frames += frames;
        self.bytes_in += bytes_in;
        self.bytes_out += bytes_out;
        self.moved_out += moved_out;
        self.adopted += adopted;
        self.proxy_headers.add(proxy_headers);
    }

    /// Counts one close.
    pub fn count_close(&mut self, reason: CloseReason) {
        let counter = match reason {
            CloseReason::Eof => &mut self.closed_eof,
            CloseReason::Idle => &mut self.reaped_idle,
            CloseReason::FrameTooLong => &mut self.closed_frame_too_long,
            CloseReason::Reset => &mut self.closed_reset,
            CloseReason::Error => &mut self.closed_error,
            CloseReason::Shutdown => &mut self.closed_shutdown,
            CloseReason::MemoryBudget => &mut self.closed_memory_budget,
            CloseReason::Admin => &mut self.closed_admin,
        };
        *counter += 1;
    }

    /// Connections closed for `reason` (the counter [`Stats::count_close`] adds to).
    pub fn closed(&self, reason: CloseReason) -> u64 {
        match reason {
            CloseReason::Eof => self.closed_eof,
            CloseReason::Idle => self.reaped_idle,
            CloseReason::FrameTooLong => self.closed_frame_too_long,
            CloseReason::Reset => self.closed_reset,
            CloseReason::Error => self.closed_error,
            CloseReason::Shutdown => self.closed_shutdown,
            CloseReason::MemoryBudget => self.closed_memory_budget,
            CloseReason::Admin => self.closed_admin,
        }
    }

    /// Connections closed because something went wrong: resets, errors, frames too long,
    /// the memory budget.
    pub fn closed_by_error(&self) -> u64 {
        self.closed_reset
            + self.closed_error
            + self.closed_frame_too_long
            + self.closed_memory_budget
    }
}

/// The one-line summary: `accepted N, reaped idle N, closed by error N, frames N, ...`.
impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "accepted {}, reaped idle {}, closed by error {}, frames {}, bytes in {}, bytes out {} \
             (eof {}, reset {}, error {}, frame-too-long {}, shutdown {}, memory-budget {}, \
             admin {}, rejected {}, rejected per source {}, accept pauses {} for {} ms, read yields {}, backpressure stalls {}, \
             buffered peak {}, moved out {}, adopted {})",
            self.accepted,
            self.reaped_idle,
            self.closed_by_error(),
            self.frames,
            self.bytes_in,
            self.bytes_out,
            self.closed_eof,
            self.closed_reset,
            self.closed_error,
            self.closed_frame_too_long,
            self.closed_shutdown,
            self.closed_memory_budget,
            self.closed_admin,
            self.rejected,
            self.rejected_per_source,
            self.accept_pauses,
            self.accept_paused_time.as_millis(),
            self.read_yields,
            self.backpressure_stalls,
            Size(usize::try_from(self.buffered_peak).unwrap_or(usize::MAX)),
            self.moved_out,
            self.adopted,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_json_names_each_counter_and_gives_the_paused_time_in_seconds() {
        let stats = Stats {
            accept_paused_time: Duration::from_millis(1500),
            frames: 3,
            closed_memory_budget: 2,
            ..Stats::default()
        };
        let json: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&stats).unwrap()).unwrap();
        let object = json.as_object().unwrap();
        assert_eq!(object["accept_paused_time"], 1.5);
        assert_eq!(object["frames"], 3);
        assert_eq!(object["closed_memory_budget"], 2);
        assert_eq!(object["accepted"], 0);
    }

    #[test]
    fn closed_reads_the_counter_count_close_adds_to() {
        let mut stats = Stats::default();
        for (i, reason) in CloseReason::ALL.into_iter().enumerate() {
            for _ in 0..=i {
                stats.count_close(reason);
            }
        }
        for (i, reason) in CloseReason::ALL.into_iter().enumerate() {
            assert_eq!(stats.closed(reason), i as u64 + 1, "{reason}");
        }
    }
}
