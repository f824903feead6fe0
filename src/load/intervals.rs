//! Intervals: one worker's time series of the measured window, cut in intervals of
//! `--interval` (pure: offsets from the window's start in, no clock).
//!
//! Interval `k` holds what became of the frames *scheduled* in it, the time latency counts
//! from and the measured window is cut by: those answered (with their latency histogram),
//! lost, corrupt. So the intervals partition the measured window, and their frames add up
//! to the report's measured replies. Sampled when the interval ends (the worker's first
//! turn at or after its end): the errors counted while it ran, and the connections open.
//!
//! A frame scheduled in an interval may be answered long after it: an interval's histogram
//! stays open until the worker finds no frame in flight, nor one still to send, scheduled
//! before the interval's end ([`Intervals::close_before`]); it is then kept compressed, so a
//! long run holds a few open histograms, not one per interval.
//!
//! # Invariants
//! - A frame at offset `t` always belongs to interval `t / width` (integer nanoseconds):
//!   a frame at a boundary belongs to the interval it begins, and to no other.
//! - `closed <= ended <= slots.len()`: an interval is closed only once ended.
//! - `slots[k].frames` always equals the count of its histogram, open or closed.

use std::time::Duration;

use hdrhistogram::Histogram;

use crate::load::histogram::{self, MAX_MICROS};

/// The most intervals a run may be cut into: a day of 1 s intervals, many times more than a
/// plot can show, few enough that the report stays a few megabytes.
pub const MAX_INTERVALS: u64 = 100_000;

/// What one interval of one worker (or, merged, of a run) holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Interval {
    /// Frames scheduled in it and answered with exactly their reply.
    pub frames: u64,
    /// Frames scheduled in it that were lost.
    pub lost: u64,
    /// Frames scheduled in it whose reply differed.
    pub corrupt: u64,
    /// Failures counted in the report's `errors` while it ran.
    pub errors: u64,
    /// Connections open at its end.
    pub connections: u64,
    /// The answered frames' latency, in microseconds.
    latency: Latency,
}

/// An interval's latency histogram, in the form its stage needs.
#[derive(Debug, Clone, PartialEq)]
enum Latency {
    /// No frame answered yet: nothing allocated.
    Empty,
    /// Frames may still be answered: a histogram to record into.
    Open(Histogram<u64>),
    /// No frame can be answered any more: compressed (histogram::to_bytes).
    Closed(Vec<u8>),
}

impl Interval {
    fn new() -> Self {
        Interval {
            frames: 0,
            lost: 0,
            corrupt: 0,
            errors: 0,
            connections: 0,
            latency: Latency::Empty,
        }
    }

    /// The latency histogram in its lossless text form (histogram::encode's), from the
    /// compressed bytes of a closed interval as they are.
    pub fn latency_text(&self) -> String {
        match &self.latency {
            Latency::Closed(bytes) => histogram::text_of(bytes),
            _ => histogram::encode(&self.latency()),
        }
    }

    /// The latency histogram (a copy, decompressed if closed).
    pub fn latency(&self) -> Histogram<u64> {
        match &self.latency {
            Latency::Empty => histogram::empty(MAX_MICROS),
            Latency::Open(h) => h.clone(),
            // Our own bytes: they decode, unless memory was corrupted.
            Latency::Closed(bytes) => {
                histogram::from_bytes(bytes).expect("an interval's own histogram decodes")
            }
        }
    }
}

/// One worker's intervals of the measured window.
#[derive(Debug, Clone)]
pub struct Intervals {
    /// The width of every interval but perhaps the last, in nanoseconds (at least 1).
    width_ns: u64,
    /// The intervals of the window, `ceil(window / width)` of them.
    slots: Vec<Interval>,
    /// How many intervals have ended (their errors and connections sampled).
    ended: usize,
    /// How many intervals are closed (their histograms compressed).
    closed: usize,
    /// The errors counted when interval `ended` began; `None` before the window began.
    errors_at: Option<u64>,
    /// Histograms of closed intervals, reset, for the next ones to open.
    spare: Vec<Histogram<u64>>,
    /// The interval of the last frame recorded, and its bounds `[start, end)` in
    /// nanoseconds: most frames fall in the same one, which spares a division.
    recent: (u64, u64, usize),
}

impl Intervals {
    /// The intervals of a window of `window`, each `width` long (the last one shorter if
    /// `width` does not divide `window`). `width` must be at least a nanosecond and cut the
    /// window into at most [`MAX_INTERVALS`].
    pub fn new(window: Duration, width: Duration) -> Self {
        let width_ns = nanos(width).max(1);
        let count = nanos(window).div_ceil(width_ns);
        debug_assert!(
            count <= MAX_INTERVALS,
            "{count} intervals of {width:?} in {window:?}"
        );
        Intervals {
            width_ns,
            slots: vec![Interval::new(); count.min(MAX_INTERVALS) as usize],
            ended: 0,
            closed: 0,
            errors_at: None,
            spare: Vec::new(),
            recent: (0, 0, 0),
        }
    }

    /// The width of the intervals.
    pub fn width(&self) -> Duration {
        Duration::from_nanos(self.width_ns)
    }

    /// The intervals, in order.
    pub fn slots(&self) -> &[Interval] {
        &self.slots
    }

    /// The interval a frame scheduled at `offset` into the window belongs to (`None` past
    /// the window).
    pub fn index(&mut self, offset: Duration) -> Option<usize> {
        self.index_ns(nanos(offset))
    }

    /// [`Intervals::index`] of an offset in nanoseconds (what a reply's settling has).
    #[inline]
    fn index_ns(&mut self, t: u64) -> Option<usize> {
        let (start, end, k) = self.recent;
        if start <= t && t < end {
            return Some(k);
        }
        let k = t / self.width_ns;
        if k >= self.slots.len() as u64 {
            return None;
        }
        let start = k * self.width_ns;
        self.recent = (start, start + self.width_ns, k as usize);
        Some(k as usize)
    }

    /// A frame scheduled at `offset` was answered after `micros` (the tests' form).
    #[cfg(test)]
    pub fn answered(&mut self, offset: Duration, micros: u64) {
        self.answered_ns(nanos(offset), micros);
    }

    /// [`Intervals::answered`], the offset in nanoseconds: the path of every reply.
    #[inline]
    pub fn answered_ns(&mut self, offset_ns: u64, micros: u64) {
        let Some(k) = self.index_ns(offset_ns) else {
            return;
        };
        let slot = &mut self.slots[k];
        slot.frames += 1;
        if let Latency::Open(h) = &mut slot.latency {
            h.saturating_record(micros.clamp(1, MAX_MICROS));
        } else {
            self.open(k, micros);
        }
    }

    /// Opens interval `k`'s histogram, with its first latency.
    #[cold]
    fn open(&mut self, k: usize, micros: u64) {
        let slot = &mut self.slots[k];
        debug_assert!(
            !matches!(slot.latency, Latency::Closed(_)),
            "a frame answered in closed interval {k} (closed: {})",
            self.closed
        );
        // A spare histogram, or (never expected: the worker closes only what no frame can
        // reach) the closed one decompressed.
        let mut h = match std::mem::replace(&mut slot.latency, Latency::Empty) {
            Latency::Closed(bytes) => {
                histogram::from_bytes(&bytes).unwrap_or_else(|_| histogram::empty(MAX_MICROS))
            }
            _ => self
                .spare
                .pop()
                .unwrap_or_else(|| histogram::empty(MAX_MICROS)),
        };
        h.saturating_record(micros.clamp(1, MAX_MICROS));
        slot.latency = Latency::Open(h);
    }

    /// A frame scheduled at `offset` was lost.
    pub fn lost(&mut self, offset: Duration) {
        if let Some(k) = self.index(offset) {
            self.slots[k].lost += 1;
        }
    }

    /// A frame scheduled at `offset` got a reply that differs.
    pub fn corrupt(&mut self, offset: Duration) {
        if let Some(k) = self.index(offset) {
            self.slots[k].corrupt += 1;
        }
    }

    /// The window began, with `errors` counted so far (counted before it, not in it).
    pub fn begin(&mut self, errors: u64) {
        self.errors_at.get_or_insert(errors);
    }

    /// The end of the next interval to end, if one is left, as an offset into the window.
    pub fn next_end(&self) -> Option<Duration> {
        (self.ended < self.slots.len()).then(|| self.end_of(self.ended))
    }

    /// `elapsed` into the window, with `errors` counted so far and `connections` open:
    /// ends every interval whose end has come. The first of them gets the errors counted
    /// since the last one ended (in a late turn, the others get none); each gets
    /// `connections`.
    pub fn end_through(&mut self, elapsed: Duration, errors: u64, connections: u64) {
        while self.ended < self.slots.len() && self.end_of(self.ended) <= elapsed {
            self.end_one(errors, connections);
        }
    }

    /// Ends the next interval with these samples.
    fn end_one(&mut self, errors: u64, connections: u64) {
        let before = self.errors_at.unwrap_or(errors);
        let slot = &mut self.slots[self.ended];
        slot.errors = errors.saturating_sub(before);
        slot.connections = connections;
        self.errors_at = Some(errors);
        self.ended += 1;
    }

    /// Closes the ended intervals that end at or before `low`: no frame answered from now
    /// on was scheduled before `low` (the worker's oldest frame in flight or still to
    /// send). Their histograms are compressed and the memory kept for the next ones.
    pub fn close_before(&mut self, low: Duration) {
        while self.closed < self.ended && self.end_of(self.closed) <= low {
            self.close_one();
        }
    }

    fn close_one(&mut self) {
        let slot = &mut self.slots[self.closed];
        if let Latency::Open(mut h) = std::mem::replace(&mut slot.latency, Latency::Empty) {
            slot.latency = Latency::Closed(histogram::to_bytes(&h));
            h.reset();
            self.spare.push(h);
        }
        debug_assert_eq!(
            slot.frames,
            slot.latency().len(),
            "interval {}: frames and its histogram's count",
            self.closed
        );
        self.closed += 1;
    }

    /// The run is over `elapsed` into the window (every frame settled), with `errors`
    /// counted and `connections` open: the intervals begun but not yet ended end now, those
    /// not begun are dropped, and all are closed.
    pub fn finish(&mut self, elapsed: Duration, errors: u64, connections: u64) {
        let begun = nanos(elapsed)
            .div_ceil(self.width_ns)
            .min(self.slots.len() as u64);
        // An interval with a frame has begun, whatever the clock says.
        let with_frames = self
            .slots
            .iter()
            .rposition(|s| s.frames + s.lost + s.corrupt > 0)
            .map_or(0, |k| k + 1);
        let keep = (begun as usize).max(with_frames).max(self.ended);
        self.slots.truncate(keep);
        while self.ended < self.slots.len() {
            self.end_one(errors, connections);
        }
        while self.closed < self.slots.len() {
            self.close_one();
        }
        self.spare.clear();
    }

    /// Adds `other`'s intervals (another worker's, of the same width; both finished) into
    /// these: counts add, histograms add.
    pub fn merge(&mut self, other: &Intervals) {
        debug_assert_eq!(self.width_ns, other.width_ns, "intervals of one width");
        if other.slots.len() > self.slots.len() {
            self.slots.resize(other.slots.len(), Interval::new());
        }
        for (mine, theirs) in self.slots.iter_mut().zip(&other.slots) {
            mine.add(theirs);
        }
        self.ended = self.ended.max(other.ended).min(self.slots.len());
        self.closed = self.slots.len();
    }

    /// The end of interval `k`, as an offset into the window.
    fn end_of(&self, k: usize) -> Duration {
        Duration::from_nanos((k as u64 + 1) * self.width_ns)
    }
}

impl Interval {
    /// Adds `other` into this one: counts add, histograms add (kept closed).
    pub fn add(&mut self, other: &Interval) {
        let Interval {
            frames,
            lost,
            corrupt,
            errors,
            connections,
            latency,
        } = other;
        self.frames += frames;
        self.lost += lost;
        self.corrupt += corrupt;
        self.errors += errors;
        self.connections += connections;
        match (&self.latency, latency) {
            (_, Latency::Empty) => return,
            // Nothing to add to: the other's as it is.
            (Latency::Empty, Latency::Closed(bytes)) => {
                self.latency = Latency::Closed(bytes.clone());
                return;
            }
            _ => {}
        }
        let mut sum = self.latency();
        // Same bounds on both sides (the load's own histograms): `add` cannot fail.
        let _ = sum.add(other.latency());
        self.latency = Latency::Closed(histogram::to_bytes(&sum));
    }

    /// An interval from its parts (a report's, read back to merge it).
    pub fn from_parts(
        frames: u64,
        lost: u64,
        corrupt: u64,
        errors: u64,
        connections: u64,
        latency: &Histogram<u64>,
    ) -> Self {
        Interval {
            frames,
            lost,
            corrupt,
            errors,
            connections,
            latency: if latency.is_empty() {
                Latency::Empty
            } else {
                Latency::Closed(histogram::to_bytes(latency))
            },
        }
    }
}

/// `d` in whole nanoseconds, saturating (584 years).
#[inline]
pub fn nanos(d: Duration) -> u64 {
    d.as_secs()
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::from(d.subsec_nanos()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_frame_at_a_boundary_belongs_to_the_interval_it_begins_only() {
        let mut iv = Intervals::new(ms(3000), ms(1000));
        assert_eq!(iv.slots().len(), 3);
        let one_ns = Duration::from_nanos(1);
        for (offset, want) in [
            (Duration::ZERO, Some(0)),
            (ms(1000) - one_ns, Some(0)),
            (ms(1000), Some(1)),
            (ms(1000) + one_ns, Some(1)),
            (ms(2000) - one_ns, Some(1)),
            (ms(2000), Some(2)),
            (ms(3000) - one_ns, Some(2)),
            (ms(3000), None),
        ] {
            assert_eq!(iv.index(offset), want, "{offset:?}");
        }
        // The same answers whatever the order of the lookups (the cached interval).
        for offset in [ms(2000), ms(1000) - one_ns, ms(1000), ms(2999), ms(0)] {
            let want = Some((offset.as_nanos() / 1_000_000_000) as usize);
            assert_eq!(iv.index(offset), want, "{offset:?}");
        }
        // Frames at every boundary, and beside each, counted once each.
        for k in 0..3u64 {
            iv.answered(ms(1000 * k), 100);
            iv.answered(ms(1000 * k + 1000) - one_ns, 200);
        }
        iv.finish(ms(3000), 0, 0);
        let frames: Vec<u64> = iv.slots().iter().map(|s| s.frames).collect();
        assert_eq!(frames, [2, 2, 2]);
    }

    #[test]
    fn a_width_that_does_not_divide_the_window_leaves_a_short_last_interval() {
        let mut iv = Intervals::new(ms(2500), ms(1000));
        assert_eq!(iv.slots().len(), 3);
        assert_eq!(iv.index(ms(2499)), Some(2));
        assert_eq!(
            iv.index(ms(2500)),
            Some(2),
            "past the window, within the last cut"
        );
        assert_eq!(iv.index(ms(3000)), None);
        assert_eq!(Intervals::new(ms(500), ms(1000)).slots().len(), 1);
        assert_eq!(Intervals::new(ms(3000), ms(3000)).slots().len(), 1);
    }

    #[test]
    fn frames_add_up_and_each_interval_keeps_its_own_latencies() {
        let mut iv = Intervals::new(ms(4000), ms(1000));
        iv.begin(7);
        // Interval k: 100 * (k + 1) frames, latency 1000 * (k + 1) us; one lost, one
        // corrupt in interval 2.
        for k in 0..4u64 {
            for i in 0..100 * (k + 1) {
                iv.answered(ms(1000 * k + i % 1000), 1000 * (k + 1));
            }
        }
        iv.lost(ms(2500));
        iv.corrupt(ms(2600));
        iv.end_through(ms(1000), 9, 5);
        assert_eq!(iv.next_end(), Some(ms(2000)));
        // A late turn ends two at once: the first gets the errors, both the connections.
        iv.end_through(ms(3100), 12, 4);
        iv.finish(ms(4000), 12, 3);
        let s = iv.slots();
        let frames: Vec<u64> = s.iter().map(|s| s.frames).collect();
        assert_eq!(frames, [100, 200, 300, 400]);
        assert_eq!(frames.iter().sum::<u64>(), 1000);
        let errors: Vec<u64> = s.iter().map(|s| s.errors).collect();
        assert_eq!(
            errors,
            [2, 3, 0, 0],
            "errors before the window are not in it"
        );
        let connections: Vec<u64> = s.iter().map(|s| s.connections).collect();
        assert_eq!(connections, [5, 4, 4, 3]);
        assert_eq!((s[2].lost, s[2].corrupt), (1, 1));
        for (k, slot) in s.iter().enumerate() {
            let h = slot.latency();
            assert_eq!(h.len(), slot.frames);
            let us = 1000 * (k as u64 + 1);
            assert!(
                h.equivalent(h.min(), us) && h.equivalent(h.max(), us),
                "{k}"
            );
        }
    }

    #[test]
    fn only_ended_intervals_before_the_low_water_mark_close() {
        let mut iv = Intervals::new(ms(3000), ms(1000));
        iv.answered(ms(10), 5);
        iv.answered(ms(1010), 6);
        iv.end_through(ms(2000), 0, 1);
        // A frame of interval 1 is still in flight (low water at 1.5 s): only 0 closes.
        iv.close_before(ms(1500));
        assert!(matches!(iv.slots()[0].latency, Latency::Closed(_)));
        assert!(matches!(iv.slots()[1].latency, Latency::Open(_)));
        iv.answered(ms(1500), 7);
        // Not ended yet: interval 2 stays open even though nothing is in flight.
        iv.close_before(ms(10_000));
        assert!(matches!(iv.slots()[1].latency, Latency::Closed(_)));
        assert!(matches!(iv.slots()[2].latency, Latency::Empty));
        assert_eq!(iv.closed, 2);
        // Interval 0's histogram was kept for reuse, reset.
        assert_eq!(iv.spare.len(), 2);
        assert!(iv.spare.iter().all(Histogram::is_empty));
        assert_eq!(iv.slots()[1].latency().len(), 2);
    }

    #[test]
    fn a_run_that_ends_early_drops_the_intervals_not_begun() {
        let mut iv = Intervals::new(ms(10_000), ms(1000));
        iv.answered(ms(100), 5);
        iv.answered(ms(1100), 5);
        iv.finish(ms(1200), 3, 0);
        assert_eq!(iv.slots().len(), 2);
        assert_eq!(iv.slots()[1].frames, 1);
    }

    #[test]
    fn merging_workers_adds_counts_and_histograms() {
        let mut a = Intervals::new(ms(2000), ms(1000));
        let mut b = Intervals::new(ms(2000), ms(1000));
        a.answered(ms(0), 10);
        a.answered(ms(1000), 30);
        b.answered(ms(999), 20);
        b.lost(ms(500));
        a.finish(ms(2000), 1, 2);
        b.finish(ms(1000), 0, 3);
        assert_eq!(b.slots().len(), 1);
        a.merge(&b);
        let s = a.slots();
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[0].frames, s[0].lost, s[0].connections),
            (2, 1, 5),
            "{s:?}"
        );
        assert_eq!((s[1].frames, s[1].lost, s[1].connections), (1, 0, 2));
        let h = s[0].latency();
        assert_eq!(
            (h.len(), h.min(), h.max()),
            (2, 10, 20),
            "exact below 2048 us"
        );
    }
}
