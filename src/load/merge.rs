//! Merge: one report from several runs' (`tabecho load merge A.json B.json ...`), say from
//! several machines driving one cluster at the same time.
//!
//! - Counts add; so do the rates (the runs are taken to have run at the same time); the
//!   largest latency is the largest of the runs'.
//! - Percentiles are read from the runs' histograms added together (each report carries
//!   them losslessly), never averaged: merging one report alone gives back exactly its
//!   own.
//! - Intervals merge by the wall clock: each run's window start
//!   (`window_start_unix_ms`, its machine's clock) places its intervals on a common grid
//!   that begins with the earliest run, rounded to the nearest whole interval. That holds
//!   when the machines' clocks agree (NTP keeps them within milliseconds) and the runs
//!   start within a fraction of an interval of each other, by a common trigger or
//!   `--warmup`; [`Merged::shifts`] says where each run landed and by how much its start
//!   was off the grid. Every run must have the same `--interval`.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::load::histogram::{self, MAX_MICROS, MAX_MILLIS};
use crate::load::intervals::Interval;
use crate::load::report::{IntervalReport, LoadReport};
use crate::load::ChurnCounts;

/// Several runs' reports in one.
#[derive(Debug, Clone, PartialEq)]
pub struct Merged {
    /// The merged report.
    pub report: LoadReport,
    /// For each run, in order: the interval of the merged series its first one became,
    /// and how far its window's start was from that interval's start, in milliseconds
    /// (positive: later).
    pub shifts: Vec<(usize, i64)>,
}

/// The reports merged; `Err((i, why))` says which one (its index) cannot be, and why.
pub fn merge(reports: &[LoadReport]) -> Result<Merged, (usize, String)> {
    let Some(first) = reports.first() else {
        return Err((0, "nothing to merge".to_string()));
    };
    let mut latency = histogram::empty(MAX_MICROS);
    let mut connect = histogram::empty(MAX_MICROS);
    let mut close_after = histogram::empty(MAX_MILLIS);
    for (i, r) in reports.iter().enumerate() {
        for (name, text, sum) in [
            ("histogram", &r.histogram, &mut latency),
            ("connect_histogram", &r.connect_histogram, &mut connect),
            (
                "close_after_histogram",
                &r.close_after_histogram,
                &mut close_after,
            ),
        ] {
            if text.is_empty() {
                return Err((
                    i,
                    format!(
                        "no `{name}` (a report of tabecho 0.2?): its percentiles cannot be merged"
                    ),
                ));
            }
            let h = histogram::decode(text).map_err(|e| (i, format!("`{name}`: {e}")))?;
            sum.add(&h)
                .map_err(|e| (i, format!("`{name}`: out of range ({e:?})")))?;
        }
        if (r.interval_secs - first.interval_secs).abs() > 1e-9 {
            return Err((
                i,
                format!(
                    "its intervals are {} s, the first report's {} s: run both with the same \
                     --interval",
                    r.interval_secs, first.interval_secs
                ),
            ));
        }
    }
    let (intervals, shifts) = merge_intervals(reports)?;
    let report = LoadReport {
        addr: distinct(reports.iter().map(|r| r.addr.as_str())),
        idle: reports.iter().all(|r| r.idle),
        connections: sum(reports, |r| r.connections),
        established: sum(reports, |r| r.established),
        connect_failed: sum(reports, |r| r.connect_failed),
        frames_sent: sum(reports, |r| r.frames_sent),
        frames_answered: sum(reports, |r| r.frames_answered),
        lost: sum(reports, |r| r.lost),
        corrupt: sum(reports, |r| r.corrupt),
        unexpected: sum(reports, |r| r.unexpected),
        error_replies: sum(reports, |r| r.error_replies),
        replies: sum(reports, |r| r.replies),
        window_secs: reports.iter().map(|r| r.window_secs).fold(0.0, f64::max),
        replies_per_sec: reports.iter().map(|r| r.replies_per_sec).sum(),
        rx_mb_per_sec: reports.iter().map(|r| r.rx_mb_per_sec).sum(),
        tx_mb_per_sec: reports.iter().map(|r| r.tx_mb_per_sec).sum(),
        server_closes: sum(reports, |r| r.server_closes),
        errors: {
            let mut errors = first.errors.clone();
            for r in &reports[1..] {
                for (kind, n) in &r.errors {
                    *errors.entry(kind.clone()).or_insert(0) += n;
                }
            }
            errors
        },
        fd_limit: reports.iter().map(|r| r.fd_limit).min().unwrap_or(0),
        limit_note: {
            let notes: Vec<&str> = reports
                .iter()
                .filter_map(|r| r.limit_note.as_deref())
                .collect();
            (!notes.is_empty()).then(|| notes.join("; "))
        },
        elapsed_secs: reports.iter().map(|r| r.elapsed_secs).fold(0.0, f64::max),
        healthy_connections: sum(reports, |r| r.healthy_connections),
        faulty_connections: sum(reports, |r| r.faulty_connections),
        faults: {
            let mut faults = first.faults.clone();
            for r in &reports[1..] {
                for (kind, counts) in &r.faults {
                    match faults.iter_mut().find(|(k, _)| k == kind) {
                        Some((_, mine)) => mine.merge(counts),
                        None => faults.push((*kind, counts.clone())),
                    }
                }
            }
            faults
        },
        churn: reports
            .iter()
            .fold(None, |acc: Option<ChurnCounts>, r| match (acc, &r.churn) {
                (None, None) => None,
                (acc, theirs) => {
                    let mut sum = acc.unwrap_or_default();
                    if let Some(theirs) = theirs {
                        sum.merge(theirs);
                    }
                    Some(sum)
                }
            }),
        window_start_unix_ms: reports
            .iter()
            .map(|r| r.window_start_unix_ms)
            .min()
            .unwrap_or(0),
        interval_secs: first.interval_secs,
        intervals,
        ..LoadReport::default()
    }
    .with_histograms(&latency, &connect, &close_after);
    Ok(Merged { report, shifts })
}

/// The reports' intervals on one grid (see the module's docs), and each run's shift.
#[allow(clippy::type_complexity)]
fn merge_intervals(
    reports: &[LoadReport],
) -> Result<(Vec<IntervalReport>, Vec<(usize, i64)>), (usize, String)> {
    let width_ms = reports[0].interval_secs * 1000.0;
    let origin = reports
        .iter()
        .map(|r| r.window_start_unix_ms)
        .min()
        .unwrap_or(0);
    let mut merged: Vec<Interval> = Vec::new();
    let mut shifts = Vec::with_capacity(reports.len());
    for (i, r) in reports.iter().enumerate() {
        let late_ms = (r.window_start_unix_ms - origin) as f64;
        let shift = if width_ms > 0.0 {
            (late_ms / width_ms).round() as usize
        } else {
            0
        };
        shifts.push((shift, (late_ms - shift as f64 * width_ms).round() as i64));
        for (k, interval) in r.intervals.iter().enumerate() {
            let interval = interval
                .to_interval()
                .map_err(|e| (i, format!("interval {k}: {e}")))?;
            let at = shift + k;
            if merged.len() <= at {
                merged.resize(
                    at + 1,
                    Interval::from_parts(0, 0, 0, 0, 0, &histogram::empty(MAX_MICROS)),
                );
            }
            merged[at].add(&interval);
        }
    }
    let width = Duration::try_from_secs_f64(reports[0].interval_secs).unwrap_or(Duration::ZERO);
    Ok((IntervalReport::all(width, &merged).0, shifts))
}

/// The sum of `pick` over the reports.
fn sum(reports: &[LoadReport], pick: impl Fn(&LoadReport) -> u64) -> u64 {
    reports.iter().map(pick).sum()
}

/// The distinct values, in their first order, joined by ", ".
fn distinct<'a>(values: impl Iterator<Item = &'a str>) -> String {
    let mut seen = BTreeSet::new();
    let mut out: Vec<&str> = Vec::new();
    for v in values {
        if seen.insert(v) {
            out.push(v);
        }
    }
    out.join(", ")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use hdrhistogram::Histogram;

    use super::*;
    use crate::load::fault::{FaultCounts, FaultKind};

    /// A report of `frames` replies a second for `secs` seconds, latency `base..` us, its
    /// window beginning at `start_ms`.
    fn report(frames: u64, secs: usize, base: u64, start_ms: u64) -> LoadReport {
        let mut total = histogram::empty(MAX_MICROS);
        let mut intervals = Vec::new();
        for k in 0..secs {
            let mut h = histogram::empty(MAX_MICROS);
            for i in 0..frames {
                h.record(base + (i * 7 + k as u64 * 13) % 500).unwrap();
            }
            total.add(&h).unwrap();
            let interval = Interval::from_parts(frames, 0, 0, 0, 4, &h);
            intervals.push(IntervalReport::new(
                k,
                Duration::from_secs(1),
                &interval,
                &h,
            ));
        }
        let mut connect = histogram::empty(MAX_MICROS);
        connect.record(base / 10 + 1).unwrap();
        let replies = frames * secs as u64;
        LoadReport {
            addr: "127.0.0.1:8085".into(),
            connections: 4,
            established: 4,
            healthy_connections: 4,
            frames_sent: replies,
            frames_answered: replies,
            replies,
            window_secs: secs as f64,
            replies_per_sec: frames as f64,
            elapsed_secs: secs as f64 + 0.1,
            fd_limit: 1024,
            errors: BTreeMap::from([("server: connection reset".to_string(), 1)]),
            faults: vec![(
                FaultKind::Trickle,
                FaultCounts {
                    connections: 1,
                    runs: 2,
                    expected: 2,
                    ..FaultCounts::default()
                },
            )],
            window_start_unix_ms: start_ms,
            interval_secs: 1.0,
            intervals,
            ..LoadReport::default()
        }
        .with_histograms(&total, &connect, &histogram::empty(MAX_MILLIS))
    }

    #[test]
    fn merging_one_report_alone_gives_it_back_exactly() {
        let r = report(1000, 3, 100, 1_700_000_000_000);
        let merged = merge(std::slice::from_ref(&r)).unwrap();
        assert_eq!(merged.report, r);
        assert_eq!(merged.shifts, [(0, 0)]);
        // Through JSON too: what `tabecho load merge` reads.
        let back = LoadReport::from_json(&r.to_json()).unwrap();
        assert_eq!(merge(&[back]).unwrap().report, r);
    }

    #[test]
    fn counts_add_the_max_is_the_largest_and_percentiles_come_from_the_sum() {
        let a = report(1000, 3, 100, 1_700_000_000_000);
        // Slower, and started 1.02 s later: its intervals land one later on the grid.
        let b = report(3000, 3, 2000, 1_700_000_001_020);
        let m = merge(&[a.clone(), b.clone()]).unwrap();
        let r = &m.report;
        assert_eq!(m.shifts, [(0, 0), (1, 20)]);
        assert_eq!(r.replies, a.replies + b.replies);
        assert_eq!(r.frames_answered, 12_000);
        assert_eq!(r.connections, 8);
        assert_eq!(r.replies_per_sec, 4000.0);
        assert_eq!(r.max_us, a.max_us.max(b.max_us));
        assert_eq!(r.errors.get("server: connection reset"), Some(&2));
        assert_eq!(r.faults[0].1.runs, 4);
        assert_eq!(r.addr, "127.0.0.1:8085");
        // The percentiles of the sum, not an average: 3/4 of the replies are b's.
        let mut sum: Histogram<u64> = a.latency_histogram().unwrap();
        sum.add(b.latency_histogram().unwrap()).unwrap();
        assert_eq!(r.p50_us, sum.value_at_quantile(0.5));
        assert!(r.p50_us >= 2000, "{}", r.p50_us);
        assert_eq!(r.p99_us, sum.value_at_quantile(0.99));
        // Intervals on one grid: a's 0..3, b's 1..4; frames add where they overlap.
        let frames: Vec<u64> = r.intervals.iter().map(|i| i.frames).collect();
        assert_eq!(frames, [1000, 4000, 4000, 3000]);
        assert_eq!(frames.iter().sum::<u64>(), r.replies);
        let connections: Vec<u64> = r.intervals.iter().map(|i| i.connections).collect();
        assert_eq!(connections, [4, 8, 8, 4]);
        assert_eq!(r.intervals[3].t_s, 3.0);
        assert_eq!(r.intervals[3].max_us, b.intervals[2].max_us);
        assert!(r.verified());
        // Merging is associative: (a + b) + a is a + (b + a).
        let left = merge(&[r.clone(), a.clone()]).unwrap().report;
        let ba = merge(&[b, a.clone()]).unwrap().report;
        let right = merge(&[a, ba]).unwrap().report;
        assert_eq!((left.p99_us, left.replies), (right.p99_us, right.replies));
    }

    #[test]
    fn reports_without_histograms_or_with_other_intervals_are_refused() {
        let a = report(10, 2, 100, 0);
        let old = LoadReport {
            histogram: String::new(),
            ..a.clone()
        };
        let (i, why) = merge(&[a.clone(), old]).unwrap_err();
        assert_eq!(i, 1);
        assert!(why.contains("tabecho 0.2"), "{why}");
        let other = LoadReport {
            interval_secs: 0.5,
            ..a.clone()
        };
        let (i, why) = merge(&[a.clone(), other]).unwrap_err();
        assert!(i == 1 && why.contains("--interval"), "{why}");
        let garbled = LoadReport {
            histogram: "HISTFAAAgarbage".into(),
            ..a
        };
        assert_eq!(merge(&[garbled]).unwrap_err().0, 0);
        assert!(merge(&[]).is_err());
    }
}
