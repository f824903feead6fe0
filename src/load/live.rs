//! The live line of `tabecho load` on a terminal, once a second: what happened in the last
//! second, not the average since the start, so a stall or a wave of errors shows the
//! second it happens.
//!
//! `4.0s/6s  152034 frames/s  p99 0.412 ms  open 20/20  lost 0 corrupt 0 errors 0`:
//! elapsed of the total (warmup and window; `drain` after it), frames answered in the last
//! second, the p99 latency of those replies, healthy connections open, and the lost,
//! corrupt and error counts so far. Replies count when they arrive here, where the
//! report's intervals count frames by their scheduled send time: the line tells what
//! arrives now, the intervals what became of each second's frames.
//!
//! The line's text has no control character: the caller rewrites it in place.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::load::histogram::{self, MAX_MICROS};
use crate::load::stats::Progress;

/// Where the run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Before the measured window.
    Warmup,
    /// In the measured window.
    Measuring,
    /// Sending stopped: waiting for the replies in flight.
    Draining,
}

/// One second of the run, as the live line shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Since the workers started.
    pub elapsed: Duration,
    /// Warmup and measured window.
    pub total: Duration,
    /// Where the run is.
    pub phase: Phase,
    /// Frames answered per second since the last sample.
    pub per_sec: f64,
    /// The 99th percentile latency of those replies, in microseconds; `None`: none came.
    pub p99_us: Option<u64>,
    /// Healthy connections open.
    pub open: u64,
    /// Connections asked for.
    pub connections: u64,
    /// Frames lost so far.
    pub lost: u64,
    /// Frames with a corrupt reply so far.
    pub corrupt: u64,
    /// Failures counted so far.
    pub errors: u64,
}

impl fmt::Display for Sample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let phase = match self.phase {
            Phase::Warmup => " warmup",
            Phase::Measuring => "",
            Phase::Draining => " drain",
        };
        write!(
            f,
            "{:.1}s/{}s{phase}  {:.0} frames/s  p99 ",
            self.elapsed.as_secs_f64(),
            trim(self.total.as_secs_f64()),
            self.per_sec,
        )?;
        match self.p99_us {
            Some(us) => write!(f, "{:.3} ms", us as f64 / 1000.0)?,
            None => f.write_str("-")?,
        }
        write!(
            f,
            "  open {}/{}  lost {} corrupt {} errors {}",
            self.open, self.connections, self.lost, self.corrupt, self.errors
        )
    }
}

/// `6` for 6.0, `2.5` for 2.5.
fn trim(secs: f64) -> String {
    let s = format!("{secs:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The live line's state between two samples.
pub struct LiveLine {
    /// When the workers started.
    start: Instant,
    /// When the measured window begins.
    measure_start: Instant,
    /// When sending stops.
    send_end: Instant,
    /// Connections asked for.
    connections: u64,
    /// When the last sample was taken.
    last: Instant,
    /// Frames answered at the last sample.
    last_answered: u64,
    /// The workers' latencies of the last second, summed.
    latency: Histogram<u64>,
}

impl LiveLine {
    /// A live line for a run started at `start`, measuring from `measure_start` until
    /// `send_end`, of `connections`.
    pub fn new(
        start: Instant,
        measure_start: Instant,
        send_end: Instant,
        connections: u64,
    ) -> Self {
        LiveLine {
            start,
            measure_start,
            send_end,
            connections,
            last: start,
            last_answered: 0,
            latency: histogram::empty(MAX_MICROS),
        }
    }

    /// Takes what the workers published since the last sample.
    pub fn sample(&mut self, workers: &[Arc<Progress>], now: Instant) -> Sample {
        let sum = |pick: fn(&Progress) -> &AtomicU64| -> u64 {
            workers
                .iter()
                .map(|p| pick(p).load(Ordering::Relaxed))
                .sum()
        };
        let answered = sum(|p| &p.answered);
        self.latency.reset();
        for worker in workers {
            let taken = worker
                .latency
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .take();
            if let Some(h) = taken {
                // Same bounds on both sides: `add` cannot fail.
                let _ = self.latency.add(&h);
            }
        }
        let secs = now.saturating_duration_since(self.last).as_secs_f64();
        let per_sec = answered.saturating_sub(self.last_answered) as f64 / secs.max(1e-3);
        self.last = now;
        self.last_answered = answered;
        Sample {
            elapsed: now.saturating_duration_since(self.start),
            total: self.send_end.saturating_duration_since(self.start),
            phase: if now < self.measure_start {
                Phase::Warmup
            } else if now < self.send_end {
                Phase::Measuring
            } else {
                Phase::Draining
            },
            per_sec,
            p99_us: (!self.latency.is_empty()).then(|| self.latency.value_at_quantile(0.99)),
            open: sum(|p| &p.open),
            connections: self.connections,
            lost: sum(|p| &p.lost),
            corrupt: sum(|p| &p.corrupt),
            errors: sum(|p| &p.errors),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Sample {
        Sample {
            elapsed: Duration::from_millis(4000),
            total: Duration::from_secs(6),
            phase: Phase::Measuring,
            per_sec: 152_034.4,
            p99_us: Some(412),
            open: 20,
            connections: 20,
            lost: 0,
            corrupt: 1,
            errors: 2,
        }
    }

    #[test]
    fn the_line_tells_the_last_second() {
        assert_eq!(
            sample().to_string(),
            "4.0s/6s  152034 frames/s  p99 0.412 ms  open 20/20  lost 0 corrupt 1 errors 2"
        );
        let quiet = Sample {
            phase: Phase::Draining,
            elapsed: Duration::from_millis(6500),
            total: Duration::from_millis(2500),
            per_sec: 0.0,
            p99_us: None,
            ..sample()
        };
        assert_eq!(
            quiet.to_string(),
            "6.5s/2.5s drain  0 frames/s  p99 -  open 20/20  lost 0 corrupt 1 errors 2"
        );
        let line = Sample {
            phase: Phase::Warmup,
            ..sample()
        }
        .to_string();
        assert!(line.starts_with("4.0s/6s warmup  "), "{line}");
        assert!(line.chars().all(|c| !c.is_control()), "{line:?}");
    }

    #[test]
    fn a_sample_takes_the_rate_and_the_latencies_since_the_last() {
        let start = Instant::now();
        let worker = Arc::new(Progress::default());
        let mut line = LiveLine::new(start, start, start + Duration::from_secs(6), 4);
        worker.answered.store(1000, Ordering::Relaxed);
        let mut h = histogram::empty(MAX_MICROS);
        for v in 1..=100 {
            h.record(v * 10).unwrap();
        }
        *worker.latency.lock().unwrap() = Some(h);
        let first = line.sample(
            std::slice::from_ref(&worker),
            start + Duration::from_secs(1),
        );
        assert_eq!(first.per_sec, 1000.0);
        assert_eq!(first.p99_us, Some(990));
        // The next second: 500 more replies, none of their latencies handed over yet.
        worker.answered.store(1500, Ordering::Relaxed);
        let second = line.sample(&[worker], start + Duration::from_secs(2));
        assert_eq!((second.per_sec, second.p99_us), (500.0, None));
    }
}
