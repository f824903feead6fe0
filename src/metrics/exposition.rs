//! Exposition: a reactor's [`Snapshot`] in the Prometheus text format (0.0.4), written by
//! the official `prometheus-client` encoder (we never hand-write the format).
//!
//! Every series carries `reactor="N"`, so a server with several reactors can report one
//! series per reactor. `tabecho_closed_total` has one series per [`CloseReason::ALL`]
//! entry, so a new close reason appears here without a change; `tabecho_rejected_total`
//! one per limit ([`REJECTED`]).

use std::collections::HashMap;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::exemplar::Exemplar;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::counters::{CloseReason, HeaderResult, Snapshot};

/// The `Content-Type` of the page.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The name prefix of every metric.
const PREFIX: &str = "tabecho";

/// The page for the reactors' snapshots, reactor `i` being `snapshots[i]`.
pub fn encode(snapshots: &[Snapshot]) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix(PREFIX);
    registry.register_collector(Box::new(ReactorsCollector(snapshots.to_vec())));
    let mut page = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut page, &registry)?;
    Ok(page)
}

/// The reactors' snapshots, encoded on demand (once per scrape): each metric family once,
/// with one series per reactor (and per reason).
#[derive(Debug)]
struct ReactorsCollector(Vec<Snapshot>);

/// A counter or gauge: its name without prefix or `_total`, its help, its value.
type Scalar = (&'static str, &'static str, fn(&Snapshot) -> u64);

/// The counters (the encoder appends `_total`).
const COUNTERS: [Scalar; 8] = [
    ("frames", "Frames answered", |s| s.stats.frames),
    ("accepted", "Connections accepted and served", |s| {
        s.stats.accepted
    }),
    ("bytes_received", "Bytes read from clients", |s| {
        s.stats.bytes_in
    }),
    ("bytes_sent", "Bytes written to clients", |s| {
        s.stats.bytes_out
    }),
    (
        "backpressure_stalls",
        "Times reading from a connection paused at --high-water",
        |s| s.stats.backpressure_stalls,
    ),
    (
        "accept_pauses",
        "Times accepting paused because descriptors or memory ran out",
        |s| s.stats.accept_pauses,
    ),
    (
        "connections_moved_out",
        "Connections moved to a new process by an upgrade (SIGUSR2)",
        |s| s.stats.moved_out,
    ),
    (
        "connections_adopted",
        "Connections moved in from the process this one upgraded",
        |s| s.stats.adopted,
    ),
];

/// A labelled series of one family: its label value and its value.
type Labelled = (&'static str, fn(&Snapshot) -> u64);

/// `tabecho_rejected_total`'s series: the `reason` label and the counter, per limit.
const REJECTED: [Labelled; 2] = [
    ("global", |s| s.stats.rejected),
    ("per_source", |s| s.stats.rejected_per_source),
];

/// The gauges.
const GAUGES: [Scalar; 3] = [
    ("connections_open", "Connections open", |s| {
        s.connections_open
    }),
    (
        "buffered_bytes",
        "Bytes charged to connections: unfinished frames, unanswered input, unsent replies, and \
         the kernel queues of stalled connections",
        |s| s.buffered_bytes,
    ),
    (
        "max_buffer_memory_bytes",
        "The buffer-memory budget in force (--max-buffer-memory)",
        |s| s.max_buffer_memory,
    ),
];

impl Collector for ReactorsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let reactors: Vec<String> = (0..self.0.len()).map(|i| i.to_string()).collect();
        let per_reactor = || self.0.iter().zip(reactors.iter().map(String::as_str));
        for (name, help, value) in COUNTERS {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (s, reactor) in per_reactor() {
                let labels = [("reactor", reactor)];
                ConstCounter::new(value(s)).encode(family.encode_family(&labels)?)?;
            }
        }

        let mut rejected = encoder.encode_descriptor(
            "rejected",
            "Connections refused, by limit: global (--max-connections), per_source \
             (--max-connections-per-source)",
            None,
            MetricType::Counter,
        )?;
        for (s, reactor) in per_reactor() {
            for (reason, value) in REJECTED {
                let labels = [("reactor", reactor), ("reason", reason)];
                ConstCounter::new(value(s)).encode(rejected.encode_family(&labels)?)?;
            }
        }

        let mut closed = encoder.encode_descriptor(
            "closed",
            "Connections closed, by reason",
            None,
            MetricType::Counter,
        )?;
        for (s, reactor) in per_reactor() {
            for reason in CloseReason::ALL {
                let labels = [("reactor", reactor), ("reason", reason.label())];
                ConstCounter::new(s.stats.closed(reason)).encode(closed.encode_family(&labels)?)?;
            }
        }

        let mut headers = encoder.encode_descriptor(
            "proxy_headers",
            "PROXY protocol headers from trusted peers (--proxy-protocol-from), by result: \
             proxied, local (served as the proxy), timeout, closed, shutdown, memory_budget, \
             or the kind of invalid header (closed unanswered)",
            None,
            MetricType::Counter,
        )?;
        for (s, reactor) in per_reactor() {
            for result in HeaderResult::all() {
                let labels = [("reactor", reactor), ("result", result.as_str())];
                let value = s.stats.proxy_headers.get(result);
                ConstCounter::new(value).encode(headers.encode_family(&labels)?)?;
            }
        }

        for (name, help, value) in GAUGES {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (s, reactor) in per_reactor() {
                let labels = [("reactor", reactor)];
                // Byte and connection counts stay far below i64::MAX.
                let v = i64::try_from(value(s)).unwrap_or(i64::MAX);
                ConstGauge::new(v).encode(family.encode_family(&labels)?)?;
            }
        }

        let mut turns = encoder.encode_descriptor(
            "reactor_turn_seconds",
            "How long one reactor loop turn took, from the poll's return to the next poll",
            None,
            MetricType::Histogram,
        )?;
        for (s, reactor) in per_reactor() {
            let buckets: Vec<(f64, u64)> = s
                .turns
                .buckets()
                .map(|(bound, n)| (bound.map_or(f64::INFINITY, |us| us as f64 / 1e6), n))
                .collect();
            let labels = [("reactor", reactor)];
            turns.encode_family(&labels)?.encode_histogram(
                s.turns.sum_us() as f64 / 1e6,
                s.turns.count(),
                &buckets,
                None::<&HashMap<usize, Exemplar<[(&str, &str); 0], f64>>>,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Snapshot {
        let mut s = Snapshot::default();
        s.stats.frames = 1234;
        s.stats.accepted = 7;
        s.stats.rejected = 3;
        s.stats.rejected_per_source = 4;
        s.stats.count_close(CloseReason::Idle);
        s.stats.count_close(CloseReason::Idle);
        s.connections_open = 5;
        s.turns.observe(3);
        s.turns.observe(2_000_000);
        s
    }

    #[test]
    fn counters_gauges_and_histogram_carry_the_reactor_label() {
        let page = encode(&[sample()]).unwrap();
        for line in [
            "# TYPE tabecho_frames_total counter",
            "tabecho_frames_total{reactor=\"0\"} 1234",
            "tabecho_accepted_total{reactor=\"0\"} 7",
            "tabecho_closed_total{reactor=\"0\",reason=\"idle\"} 2",
            "tabecho_closed_total{reactor=\"0\",reason=\"frame_too_long\"} 0",
            "tabecho_rejected_total{reactor=\"0\",reason=\"global\"} 3",
            "tabecho_rejected_total{reactor=\"0\",reason=\"per_source\"} 4",
            "tabecho_connections_open{reactor=\"0\"} 5",
            "# TYPE tabecho_reactor_turn_seconds histogram",
            "tabecho_reactor_turn_seconds_bucket{reactor=\"0\",le=\"1e-05\"} 1",
            "tabecho_reactor_turn_seconds_bucket{reactor=\"0\",le=\"1\"} 1",
            "tabecho_reactor_turn_seconds_bucket{reactor=\"0\",le=\"+Inf\"} 2",
            "tabecho_reactor_turn_seconds_count{reactor=\"0\"} 2",
        ] {
            assert!(
                page.lines().any(|l| l == line),
                "{line:?} missing in\n{page}"
            );
        }
    }

    #[test]
    fn one_closed_series_per_reason_and_reactor() {
        let page = encode(&[sample(), sample()]).unwrap();
        let closed = page
            .lines()
            .filter(|l| l.starts_with("tabecho_closed_total{"))
            .count();
        assert_eq!(closed, 2 * CloseReason::ALL.len());
        assert!(page.contains("tabecho_frames_total{reactor=\"1\"} 1234"));
    }
}
