//! LoadReport: the outcome of a load run in plain fields, as summary text and as JSON.
//!
//! Times are in microseconds (latency, connect) or milliseconds (idle closes); rates per
//! second of the measured window; MB are 10^6 bytes.
//!
//! The JSON (`tabecho load --json`) is serde's, of these very fields (the field names are
//! the keys), plus the two verdicts `verified` and `faults_ok`; [`LoadReport::from_json`]
//! reads it back. Keys are never renamed: scripts and the xtask read them.
//!
//! The histograms (`histogram`, `connect_histogram`, `close_after_histogram`, and each
//! interval's `histogram`) are lossless: HdrHistogram's compressed V2 form in base64
//! (histogram.rs), so reports of several runs merge exactly (merge.rs).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::load::fault::{FaultCounts, FaultKind};
use crate::load::histogram::{self, MAX_MICROS};
use crate::load::intervals::Interval;
use crate::load::stats::{ChurnCounts, LimitHit, WorkerStats};
use crate::load::LoadOptions;

/// What a load run found.
///
/// Fields missing from a JSON report read back (an older release's) take their default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoadReport {
    /// The server address, as given.
    pub addr: String,
    /// Whether this was an idle run.
    pub idle: bool,
    /// Connections asked for.
    pub connections: u64,
    /// Connections established.
    pub established: u64,
    /// Connections that could not be established.
    pub connect_failed: u64,
    /// Frames sent.
    pub frames_sent: u64,
    /// Frames whose exact reply arrived.
    pub frames_answered: u64,
    /// Frames sent and never answered by the end of the drain (or skipped by the server).
    pub lost: u64,
    /// Frames whose reply differed from the one expected.
    pub corrupt: u64,
    /// Replies with no frame in flight, and reply streams that lost their framing.
    pub unexpected: u64,
    /// `error:` lines received.
    pub error_replies: u64,
    /// Replies to frames scheduled in the measured window.
    pub replies: u64,
    /// Length of the measured window, in seconds.
    pub window_secs: f64,
    /// `replies / window_secs`.
    pub replies_per_sec: f64,
    /// Reply bytes per second in the measured window, in MB/s.
    pub rx_mb_per_sec: f64,
    /// Frame bytes per second in the measured window, in MB/s.
    pub tx_mb_per_sec: f64,
    /// Reply latency percentiles, in microseconds (from the scheduled send time).
    pub p50_us: u64,
    /// 90th percentile latency.
    pub p90_us: u64,
    /// 99th percentile latency.
    pub p99_us: u64,
    /// 99.9th percentile latency.
    pub p999_us: u64,
    /// The largest latency.
    pub max_us: u64,
    /// Connect time, median, in microseconds.
    pub connect_p50_us: u64,
    /// Connect time, 99th percentile, in microseconds.
    pub connect_p99_us: u64,
    /// Connections the server closed while they were held.
    pub server_closes: u64,
    /// Time from established to the server's close: earliest, median, latest, in ms.
    pub close_after_min_ms: u64,
    /// Median close-after time.
    pub close_after_p50_ms: u64,
    /// Latest close-after time.
    pub close_after_max_ms: u64,
    /// Failures by kind.
    pub errors: BTreeMap<String, u64>,
    /// The soft RLIMIT_NOFILE the run had.
    pub fd_limit: u64,
    /// Set when a limit stopped the opening of connections: says which, and how many opened.
    pub limit_note: Option<String>,
    /// Whole run, connect to close, in seconds.
    pub elapsed_secs: f64,
    /// Healthy connections asked for (`connections` less the faulty ones); the frame,
    /// latency and connect fields above count these only.
    pub healthy_connections: u64,
    /// Faulty connections (`--faults`), cycling.
    pub faulty_connections: u64,
    /// The faulty connections' cycles, one entry per kind given, in `--faults` order (in
    /// JSON, an object keyed by the kinds' names, in the same order).
    #[serde(with = "kinds_in_order")]
    pub faults: Vec<(FaultKind, FaultCounts)>,
    /// The one-frame connections' outcomes (`--churn`); `None` (JSON `null`) without it.
    pub churn: Option<ChurnCounts>,
    /// When the measured window began, in milliseconds since the Unix epoch, by this
    /// machine's clock: `tabecho load merge` lines up runs' intervals by it.
    pub window_start_unix_ms: u64,
    /// The width of the intervals, in seconds (`--interval`).
    pub interval_secs: f64,
    /// The measured window interval by interval; their `frames` add up to `replies`.
    pub intervals: Vec<IntervalReport>,
    /// The latency of every measured reply, in microseconds, losslessly (`p50_us`...
    /// `max_us` are read from it): HdrHistogram's compressed V2 form in base64.
    pub histogram: String,
    /// The connect times, in microseconds, in the same form.
    pub connect_histogram: String,
    /// The server's close-after times, in milliseconds, in the same form.
    pub close_after_histogram: String,
}

/// One interval of the measured window: what became of the frames *scheduled* in it (the
/// time latency counts from), and, at its end, the errors and connections.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct IntervalReport {
    /// Its start, in seconds from the start of the measured window.
    pub t_s: f64,
    /// Frames scheduled in it and answered with exactly their reply.
    pub frames: u64,
    /// Their latency's median, in microseconds.
    pub p50_us: u64,
    /// Their latency's 99th percentile.
    pub p99_us: u64,
    /// Their largest latency.
    pub max_us: u64,
    /// Frames scheduled in it that were lost.
    pub lost: u64,
    /// Frames scheduled in it whose reply differed.
    pub corrupt: u64,
    /// Failures counted in the report's `errors` while it ran.
    pub errors: u64,
    /// Healthy connections open at its end.
    pub connections: u64,
    /// Their latencies, in microseconds, losslessly (as the report's `histogram`).
    pub histogram: String,
}

impl IntervalReport {
    /// The report of interval `k` of `width`, whose latencies are `latency` (decoded once by
    /// the caller, who adds them into the total).
    pub(crate) fn new(
        k: usize,
        width: Duration,
        interval: &Interval,
        latency: &Histogram<u64>,
    ) -> Self {
        IntervalReport {
            // From whole nanoseconds: 0.3, not 0.30000000000000004.
            t_s: width.saturating_mul(k as u32).as_secs_f64(),
            frames: interval.frames,
            p50_us: histogram::at(latency, 0.5),
            p99_us: histogram::at(latency, 0.99),
            max_us: histogram::max(latency),
            lost: interval.lost,
            corrupt: interval.corrupt,
            errors: interval.errors,
            connections: interval.connections,
            histogram: interval.latency_text(),
        }
    }

    /// The reports of `intervals` of `width`, and the sum of their latencies.
    pub(crate) fn all(width: Duration, intervals: &[Interval]) -> (Vec<Self>, Histogram<u64>) {
        let mut total = histogram::empty(MAX_MICROS);
        let reports = (intervals.iter().enumerate())
            .map(|(k, interval)| {
                let latency = interval.latency();
                // Same bounds on both sides: `add` cannot fail.
                let _ = total.add(&latency);
                IntervalReport::new(k, width, interval, &latency)
            })
            .collect();
        (reports, total)
    }

    /// The interval as it was counted, its histogram decoded (to merge it).
    pub(crate) fn to_interval(&self) -> Result<Interval, String> {
        let latency = if self.histogram.is_empty() {
            histogram::empty(MAX_MICROS)
        } else {
            histogram::decode(&self.histogram)?
        };
        Ok(Interval::from_parts(
            self.frames,
            self.lost,
            self.corrupt,
            self.errors,
            self.connections,
            &latency,
        ))
    }
}

/// What `--json` prints: the report's fields, and its verdicts, which are computed from
/// them (so they are not fields, and reading a report back ignores them).
#[derive(Serialize)]
struct Json<'a> {
    /// [`LoadReport::verified`].
    verified: bool,
    /// [`LoadReport::faults_ok`].
    faults_ok: bool,
    /// Every field, as keys of the same object.
    #[serde(flatten)]
    report: &'a LoadReport,
}

/// `Vec<(FaultKind, FaultCounts)>` as a JSON object keyed by the kinds' names, in the
/// vector's order both ways (serde's maps would sort or lose it).
mod kinds_in_order {
    use std::fmt;

    use serde::de::{MapAccess, Visitor};
    use serde::{Deserializer, Serializer};

    use crate::load::fault::{FaultCounts, FaultKind};

    pub fn serialize<S: Serializer>(
        faults: &[(FaultKind, FaultCounts)],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_map(faults.iter().map(|(kind, counts)| (kind, counts)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<(FaultKind, FaultCounts)>, D::Error> {
        struct InOrder;
        impl<'de> Visitor<'de> for InOrder {
            type Value = Vec<(FaultKind, FaultCounts)>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of fault kinds and their counts")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut faults = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    faults.push(entry);
                }
                Ok(faults)
            }
        }
        deserializer.deserialize_map(InOrder)
    }
}

impl LoadReport {
    /// The report of a run of `options` whose workers counted `stats`, its measured window
    /// begun at `window_start_unix_ms`.
    pub(crate) fn new(
        options: &LoadOptions,
        stats: &WorkerStats,
        fd_limit: u64,
        elapsed: Duration,
        window_start_unix_ms: u64,
    ) -> Self {
        let window = options.duration.as_secs_f64().max(1e-9);
        let width_secs = stats.intervals.width().as_secs_f64();
        // Every measured reply is in one interval: the total is their sum.
        let (intervals, latency) =
            IntervalReport::all(stats.intervals.width(), stats.intervals.slots());
        let limit_note = stats.limit.map(|hit| {
            let what = match hit {
                LimitHit::FileDescriptors => {
                    format!("the file descriptor limit (RLIMIT_NOFILE {fd_limit}) ran out")
                }
                LimitHit::EphemeralPorts => "the local ephemeral ports ran out \
                     (see /proc/sys/net/ipv4/ip_local_port_range)"
                    .to_string(),
            };
            format!(
                "could open only {} of {} connections: {what}",
                stats.established, options.connections
            )
        });
        let mut faults: Vec<(FaultKind, FaultCounts)> = Vec::new();
        for &kind in &options.faults {
            if !faults.iter().any(|(k, _)| *k == kind) {
                faults.push((kind, stats.faults[kind.index()].clone()));
            }
        }
        let faulty: u64 = faults.iter().map(|(_, c)| c.connections).sum();
        LoadReport {
            addr: options.addr.to_string(),
            connections: options.connections as u64,
            established: stats.established,
            connect_failed: stats.failed,
            frames_sent: stats.frames_sent,
            frames_answered: stats.frames_answered,
            lost: stats.frames_lost,
            corrupt: stats.frames_corrupt,
            unexpected: stats.unsolicited + stats.desyncs,
            error_replies: stats.error_replies,
            replies: stats.measured_replies,
            window_secs: window,
            replies_per_sec: stats.measured_replies as f64 / window,
            rx_mb_per_sec: stats.measured_rx_bytes as f64 / window / 1e6,
            tx_mb_per_sec: stats.measured_tx_bytes as f64 / window / 1e6,
            server_closes: stats.server_closes,
            errors: stats.errors.clone(),
            fd_limit,
            limit_note,
            elapsed_secs: elapsed.as_secs_f64(),
            idle: options.idle,
            healthy_connections: (options.connections as u64).saturating_sub(faulty),
            faulty_connections: faulty,
            faults,
            churn: options.churn.map(|_| stats.churn.clone()),
            window_start_unix_ms,
            interval_secs: width_secs,
            intervals,
            ..LoadReport::default()
        }
        .with_histograms(&latency, &stats.connect_us, &stats.close_after_ms)
    }

    /// This report with these histograms (latency and connect times in microseconds,
    /// close-after times in milliseconds), and the percentiles read from them.
    pub(crate) fn with_histograms(
        mut self,
        latency: &Histogram<u64>,
        connect: &Histogram<u64>,
        close_after: &Histogram<u64>,
    ) -> Self {
        self.p50_us = histogram::at(latency, 0.5);
        self.p90_us = histogram::at(latency, 0.9);
        self.p99_us = histogram::at(latency, 0.99);
        self.p999_us = histogram::at(latency, 0.999);
        self.max_us = histogram::max(latency);
        self.connect_p50_us = histogram::at(connect, 0.5);
        self.connect_p99_us = histogram::at(connect, 0.99);
        self.close_after_min_ms = if close_after.is_empty() {
            0
        } else {
            close_after.min()
        };
        self.close_after_p50_ms = histogram::at(close_after, 0.5);
        self.close_after_max_ms = histogram::max(close_after);
        self.histogram = histogram::encode(latency);
        self.connect_histogram = histogram::encode(connect);
        self.close_after_histogram = histogram::encode(close_after);
        self
    }

    /// The latency histogram (`histogram`), decoded; `Err` says why it cannot be (absent:
    /// a report of tabecho 0.2, or not HdrHistogram's form).
    pub fn latency_histogram(&self) -> Result<Histogram<u64>, String> {
        if self.histogram.is_empty() {
            return Err("no latency histogram (`histogram`): written by tabecho 0.2?".into());
        }
        histogram::decode(&self.histogram).map_err(|e| format!("`histogram`: {e}"))
    }

    /// The latency distribution as HdrHistogram's percentile table, in milliseconds (as
    /// wrk2 prints it, and HdrHistogram's plotter reads it).
    pub fn percentile_table(&self) -> Result<String, String> {
        Ok(histogram::percentile_table(
            &self.latency_histogram()?,
            1000.0,
        ))
    }

    /// True when every frame sent got exactly its reply, nothing unexpected came, every
    /// fault cycle got its documented outcome, and every churn connection its reply.
    pub fn verified(&self) -> bool {
        self.lost == 0
            && self.corrupt == 0
            && self.unexpected == 0
            && self.faults_ok()
            && self.churn_failed() == 0
    }

    /// Churn connections that did not get their reply (0 without `--churn`).
    pub fn churn_failed(&self) -> u64 {
        self.churn.as_ref().map_or(0, ChurnCounts::failed)
    }

    /// True when no fault cycle got an unexpected outcome.
    pub fn faults_ok(&self) -> bool {
        self.fault_unexpected() == 0
    }

    /// Fault cycles with an unexpected outcome, over all kinds.
    pub fn fault_unexpected(&self) -> u64 {
        self.faults.iter().map(|(_, c)| c.unexpected).sum()
    }

    /// True when something ran: a healthy connection was established, or a fault cycle
    /// reached an outcome.
    pub fn ran(&self) -> bool {
        self.established > 0
            || self.faults.iter().any(|(_, c)| c.runs > 0)
            || self.churn.as_ref().is_some_and(|c| c.ok > 0)
    }

    /// The human summary, several lines.
    pub fn to_text(&self) -> String {
        let ms = |us: u64| us as f64 / 1000.0;
        let mut out = String::new();
        let of = if self.faults.is_empty() {
            self.connections.to_string()
        } else {
            format!(
                "{} healthy; {} faulty below",
                self.healthy_connections, self.faulty_connections
            )
        };
        let _ = writeln!(
            out,
            "connections  {} established, {} failed (of {of}); connect p50 {:.3} ms, p99 {:.3} ms",
            self.established,
            self.connect_failed,
            ms(self.connect_p50_us),
            ms(self.connect_p99_us)
        );
        if let Some(note) = &self.limit_note {
            let _ = writeln!(out, "limit        {note}");
        }
        if !self.idle {
            let _ = writeln!(
                out,
                "frames       {} sent, {} answered, {} lost, {} corrupt",
                self.frames_sent, self.frames_answered, self.lost, self.corrupt
            );
            let _ = writeln!(
                out,
                "throughput   {:.0} replies/s, {:.2} MB/s in, {:.2} MB/s out ({} replies in {:.1} s)",
                self.replies_per_sec, self.rx_mb_per_sec, self.tx_mb_per_sec, self.replies, self.window_secs
            );
            let _ = writeln!(
                out,
                "latency      p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
                ms(self.p50_us),
                ms(self.p90_us),
                ms(self.p99_us),
                ms(self.p999_us),
                ms(self.max_us)
            );
        }
        if self.server_closes > 0 {
            let _ = writeln!(
                out,
                "server closes {} connections, {} ms to {} ms after connect (p50 {} ms)",
                self.server_closes,
                self.close_after_min_ms,
                self.close_after_max_ms,
                self.close_after_p50_ms
            );
        } else {
            let _ = writeln!(out, "server closes 0");
        }
        if !self.faults.is_empty() {
            let _ = writeln!(
                out,
                "faults       {:<10} {:>6} {:>8} {:>9} {:>11} {:>10} {:>15} {:>8}",
                "kind",
                "conns",
                "runs",
                "expected",
                "unexpected",
                "cut short",
                "connect failed",
                "evicted"
            );
            for (kind, c) in &self.faults {
                let _ = writeln!(
                    out,
                    "             {:<10} {:>6} {:>8} {:>9} {:>11} {:>10} {:>15} {:>8}",
                    kind.name(),
                    c.connections,
                    c.runs,
                    c.expected,
                    c.unexpected,
                    c.cut_short,
                    c.connect_failed,
                    c.evicted
                );
            }
            for (kind, c) in &self.faults {
                for sample in &c.samples {
                    let _ = writeln!(out, "unexpected   {kind}: {sample}");
                }
            }
        }
        if let Some(c) = &self.churn {
            let _ = writeln!(
                out,
                "churn        {} one-frame connections: {} ok, {} refused, {} reset, {} wrong, \
                 {} timed out, {} other",
                c.attempted, c.ok, c.refused, c.reset, c.wrong, c.timed_out, c.other
            );
        }
        if self.errors.is_empty() {
            let _ = writeln!(out, "errors       none");
        } else {
            for (kind, n) in &self.errors {
                let _ = writeln!(out, "error        {n} × {kind}");
            }
        }
        let faults = if self.faults.is_empty() {
            ""
        } else {
            "; every fault got its documented outcome"
        };
        if !self.ran() {
            let _ = writeln!(out, "verdict      FAILED: no connection established");
        } else if self.verified() && self.idle {
            let _ = writeln!(
                out,
                "verdict      OK: idle run, nothing unexpected received"
            );
        } else if self.verified() {
            let _ = writeln!(
                out,
                "verdict      OK: every reply arrived, in order, byte for byte{faults}"
            );
        } else {
            let _ = write!(
                out,
                "verdict      FAILED: {} frames lost, {} corrupt, {} unexpected replies",
                self.lost, self.corrupt, self.unexpected
            );
            if !self.faults.is_empty() {
                let _ = write!(
                    out,
                    "; {} unexpected fault outcomes",
                    self.fault_unexpected()
                );
            }
            if self.churn.is_some() {
                let _ = write!(
                    out,
                    "; {} churn connections without their reply",
                    self.churn_failed()
                );
            }
            out.push('\n');
        }
        out
    }

    /// One JSON object, on one line.
    pub fn to_json(&self) -> String {
        let json = Json {
            verified: self.verified(),
            faults_ok: self.faults_ok(),
            report: self,
        };
        // Plain data with string keys: serializing it cannot fail.
        serde_json::to_string(&json).expect("a LoadReport serializes")
    }

    /// A report read back from [`LoadReport::to_json`]'s output (`tabecho load --json`).
    pub fn from_json(json: &str) -> serde_json::Result<LoadReport> {
        serde_json::from_str(json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        let report = LoadReport {
            addr: "a\"b\\c\td\u{1}".into(),
            ..LoadReport::default()
        };
        let json = report.to_json();
        assert!(json.contains(r#""addr":"a\"b\\c\td\u0001""#), "{json}");
    }

    #[test]
    fn json_report_is_one_object_with_the_fields() {
        let mut report = LoadReport {
            addr: "127.0.0.1:1".into(),
            lost: 2,
            ..LoadReport::default()
        };
        report
            .errors
            .insert("connect: connection refused".into(), 3);
        let json = report.to_json();
        assert!(json.starts_with('{') && json.ends_with('}'), "{json}");
        assert!(json.contains(r#""lost":2"#), "{json}");
        assert!(json.contains(r#""verified":false"#), "{json}");
        assert!(
            json.contains(r#""errors":{"connect: connection refused":3}"#),
            "{json}"
        );
        assert!(json.contains(r#""limit_note":null"#), "{json}");
        assert!(!json.contains('\n'));
    }

    #[test]
    fn fault_counts_in_text_and_json_and_the_verdict() {
        let counts = FaultCounts {
            connections: 2,
            runs: 5,
            expected: 4,
            unexpected: 1,
            samples: vec!["connection 3 cycle 2: EOF after 1 of 8 replies".into()],
            ..FaultCounts::default()
        };
        let report = LoadReport {
            established: 8,
            healthy_connections: 8,
            faulty_connections: 2,
            faults: vec![(FaultKind::HalfClose, counts)],
            ..LoadReport::default()
        };
        assert!(!report.verified() && !report.faults_ok());
        let text = report.to_text();
        assert!(text.contains("(of 8 healthy; 2 faulty below)"), "{text}");
        assert!(
            text.contains("unexpected   halfclose: connection 3 cycle 2"),
            "{text}"
        );
        assert!(text.contains("; 1 unexpected fault outcomes"), "{text}");
        let json = report.to_json();
        assert!(json.contains(r#""faults_ok":false"#), "{json}");
        assert!(
            json.contains(r#""halfclose":{"connections":2,"runs":5,"expected":4,"unexpected":1,"cut_short":0,"connect_failed":0,"evicted":0,"samples":["connection 3 cycle 2: EOF after 1 of 8 replies"]}"#),
            "{json}"
        );
    }

    /// The keys of `tabecho load --json` in 0.2.0, captured from its output: scripts and
    /// the xtask read them by name, so none may be renamed or go.
    const JSON_KEYS_0_2: [&str; 36] = [
        "addr",
        "verified",
        "idle",
        "connections",
        "established",
        "connect_failed",
        "frames_sent",
        "frames_answered",
        "lost",
        "corrupt",
        "unexpected",
        "error_replies",
        "replies",
        "window_secs",
        "replies_per_sec",
        "rx_mb_per_sec",
        "tx_mb_per_sec",
        "p50_us",
        "p90_us",
        "p99_us",
        "p999_us",
        "max_us",
        "connect_p50_us",
        "connect_p99_us",
        "server_closes",
        "close_after_min_ms",
        "close_after_p50_ms",
        "close_after_max_ms",
        "errors",
        "fd_limit",
        "limit_note",
        "elapsed_secs",
        "healthy_connections",
        "faulty_connections",
        "faults_ok",
        "faults",
    ];
    /// The keys of each kind's object under `faults` in 0.2.0.
    const FAULT_JSON_KEYS_0_2: [&str; 7] = [
        "connections",
        "runs",
        "expected",
        "unexpected",
        "cut_short",
        "connect_failed",
        "samples",
    ];

    /// Keys added since 0.2.0, top level: new ones go here, never in place of an old one.
    const JSON_KEYS_ADDED: [&str; 7] = [
        "churn",
        "window_start_unix_ms",
        "interval_secs",
        "intervals",
        "histogram",
        "connect_histogram",
        "close_after_histogram",
    ];
    /// Keys added since 0.2.0 to each kind's object under `faults`.
    const FAULT_JSON_KEYS_ADDED: [&str; 1] = ["evicted"];

    /// The keys of a JSON object, sorted.
    fn keys(value: &serde_json::Value) -> Vec<String> {
        let mut keys: Vec<String> = value
            .as_object()
            .expect("a JSON object")
            .keys()
            .cloned()
            .collect();
        keys.sort();
        keys
    }

    fn sorted(names: &[&str]) -> Vec<String> {
        let mut names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        names.sort();
        names
    }

    #[test]
    fn json_keys_are_those_of_0_2_and_the_added_ones() {
        let report = LoadReport {
            faults: vec![(FaultKind::Trickle, FaultCounts::default())],
            ..LoadReport::default()
        };
        let json = report.to_json();
        let value: serde_json::Value = serde_json::from_str(&json).expect(&json);
        let top = [&JSON_KEYS_0_2[..], &JSON_KEYS_ADDED[..]].concat();
        assert_eq!(keys(&value), sorted(&top), "{json}");
        let fault = [&FAULT_JSON_KEYS_0_2[..], &FAULT_JSON_KEYS_ADDED[..]].concat();
        assert_eq!(keys(&value["faults"]["trickle"]), sorted(&fault), "{json}");
    }

    #[test]
    fn json_reads_back_into_the_same_report_with_faults_in_order() {
        let mut report = LoadReport {
            addr: "127.0.0.1:7".into(),
            connections: 10,
            established: 9,
            connect_failed: 1,
            frames_sent: 100,
            frames_answered: 99,
            lost: 1,
            window_secs: 2.5,
            replies_per_sec: 39.5,
            p99_us: 1234,
            limit_note: Some("could open only 9 of 10 connections".into()),
            elapsed_secs: 3.25,
            healthy_connections: 8,
            faulty_connections: 2,
            faults: vec![
                (
                    FaultKind::Trickle,
                    FaultCounts {
                        connections: 1,
                        runs: 2,
                        expected: 2,
                        ..FaultCounts::default()
                    },
                ),
                (
                    FaultKind::Reset,
                    FaultCounts {
                        connections: 1,
                        unexpected: 1,
                        samples: vec!["connection 4 cycle 1: EOF".into()],
                        ..FaultCounts::default()
                    },
                ),
            ],
            ..LoadReport::default()
        };
        report.errors.insert("server: connection reset".into(), 2);
        report.churn = Some(ChurnCounts {
            attempted: 3,
            ok: 2,
            reset: 1,
            ..ChurnCounts::default()
        });
        let json = report.to_json();
        assert!(json.contains(r#""verified":false"#), "{json}");
        assert!(json.contains(r#""faults":{"trickle":{"#), "{json}");
        assert_eq!(LoadReport::from_json(&json).expect(&json), report);
        // A report with fields missing (an older release's) reads with their defaults.
        let old = LoadReport::from_json(r#"{"addr":"x","lost":3}"#).unwrap();
        assert_eq!((old.addr.as_str(), old.lost, old.established), ("x", 3, 0));
    }

    #[test]
    fn a_churn_connection_without_its_reply_fails_the_run() {
        let mut report = LoadReport {
            churn: Some(ChurnCounts {
                attempted: 5,
                ok: 5,
                ..ChurnCounts::default()
            }),
            ..LoadReport::default()
        };
        assert!(report.verified() && report.ran(), "{}", report.to_text());
        report.churn = Some(ChurnCounts {
            attempted: 5,
            ok: 4,
            timed_out: 1,
            ..ChurnCounts::default()
        });
        let text = report.to_text();
        assert!(!report.verified() && report.churn_failed() == 1, "{text}");
        assert!(text.contains("1 timed out, 0 other"), "{text}");
        assert!(
            text.contains("1 churn connections without their reply"),
            "{text}"
        );
        assert!(report
            .to_json()
            .contains(r#""churn":{"attempted":5,"ok":4,"#));
        // Without --churn: null, and no churn line.
        let none = LoadReport::default();
        assert!(none.to_json().contains(r#""churn":null"#));
        assert!(!none.to_text().contains("churn"));
    }

    #[test]
    fn text_says_ok_or_failed() {
        let ok = LoadReport {
            established: 1,
            ..LoadReport::default()
        };
        assert!(ok.to_text().contains("verdict      OK"));
        assert!(LoadReport::default()
            .to_text()
            .contains("no connection established"));
        let bad = LoadReport {
            corrupt: 1,
            ..LoadReport::default()
        };
        assert!(bad.to_text().contains("FAILED"));
    }
}
