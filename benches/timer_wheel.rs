//! TimerWheel cost per arm, per cancel and per expiry, at 10, 10,000 and 1,000,000 entries.
//!
//! One group per operation, the number of entries already armed as the parameter: the
//! wheel's promise is that none of these costs grows with that number, and reading a
//! group's three lines side by side shows whether it holds.
//!
//! Sizing as the server does it: 20 ticks per idle timeout, a wheel asked for
//! `20 + 2` slots (rounded up to 64), every deadline `now + 20` or less, so within one
//! revolution. Pre-armed entries are spread evenly over the 20 ticks ahead.
//!
//! Each measured iteration does the same work and leaves the wheel as it found it:
//! - `timer_wheel/arm`: arm 16 entries (timed), then cancel them (not timed). ns per arm.
//!   The wheel holds between N and N + 16 entries; the arms reuse just-freed nodes.
//! - `timer_wheel/cancel`: cancel 16 pre-armed entries picked at random (timed), then arm
//!   16 replacements (not timed). ns per cancel. At 1,000,000 entries (24 MB of nodes) the
//!   picked nodes are usually not in cache: that cost is memory, not the algorithm.
//! - `timer_wheel/arm_cancel`: one arm and the cancel of that same entry, the wheel exactly
//!   N entries throughout: the cross-check for the two above (about their sum).
//! - `timer_wheel/expire`: poll each of the next 20 ticks, so that every entry expires
//!   once, and re-arm each expired entry 20 ticks ahead (the server's lazy re-arm).
//!   Throughput is in expiries, so criterion's elem/s is 1 / (ns per expiry including its
//!   re-arm). At 10 entries the 20 polls of nearly empty slots dominate.
//!
//! Batches of 16 in `arm` and `cancel` spread the cost of reading the clock (two
//! `Instant::now()` per batch) so it is small beside the operations themselves.
//!
//! Run: `cargo bench --bench timer_wheel` (quick check:
//! `cargo bench --bench timer_wheel -- --warm-up-time 1 --measurement-time 2`).
//! Record the machine, `rustc -V` and the command beside any number you quote.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tabecho::timer_wheel::{Tick, TimerId, TimerWheel};

/// Ticks per idle timeout, as the server's `TICKS_PER_TIMEOUT`.
const TIMEOUT_TICKS: Tick = 20;

/// Slots the server asks for with that timeout (`timeout / tick + 2`).
const SLOTS: usize = TIMEOUT_TICKS as usize + 2;

/// The entry counts measured.
const ENTRIES: [usize; 3] = [10, 10_000, 1_000_000];

/// Operations per clock read in the `arm` and `cancel` benchmarks.
const BATCH: u64 = 16;

/// A fixed pseudo-random sequence (xorshift64), the same on every run.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A wheel at tick 0 holding `n` entries, spread evenly over ticks 1..=TIMEOUT_TICKS, with
/// their ids (value = index into the ids).
fn armed_wheel(n: usize) -> (TimerWheel, Vec<TimerId>) {
    let mut wheel = TimerWheel::new(SLOTS);
    let ids = (0..n)
        .map(|i| wheel.arm(1 + i as Tick % TIMEOUT_TICKS, i as u32))
        .collect();
    assert_eq!(wheel.len(), n);
    (wheel, ids)
}

fn arm(c: &mut Criterion) {
    let mut group = c.benchmark_group("timer_wheel/arm");
    for n in ENTRIES {
        let (mut wheel, _) = armed_wheel(n);
        let mut batch = Vec::with_capacity(BATCH as usize);
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                let mut done = 0;
                while done < iters {
                    let count = BATCH.min(iters - done);
                    let start = Instant::now();
                    for i in 0..count {
                        batch.push(wheel.arm(black_box(1 + i % TIMEOUT_TICKS), i as u32));
                    }
                    timed += start.elapsed();
                    for id in batch.drain(..) {
                        wheel.cancel(id);
                    }
                    done += count;
                }
                timed
            });
        });
        assert_eq!(wheel.len(), n, "the wheel kept its size");
    }
    group.finish();
}

fn cancel(c: &mut Criterion) {
    let mut group = c.benchmark_group("timer_wheel/cancel");
    for n in ENTRIES {
        let (mut wheel, mut ids) = armed_wheel(n);
        let mut random = XorShift(0x9E37_79B9_7F4A_7C15);
        let mut picked = Vec::with_capacity(BATCH as usize);
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                let mut done = 0;
                while done < iters {
                    let count = BATCH.min(iters - done);
                    // Distinct picks: a batch never cancels the same entry twice.
                    picked.clear();
                    while (picked.len() as u64) < count.min(n as u64) {
                        let index = (random.next() % n as u64) as usize;
                        if !picked.contains(&index) {
                            picked.push(index);
                        }
                    }
                    let start = Instant::now();
                    for &index in &picked {
                        black_box(wheel.cancel(ids[index]));
                    }
                    timed += start.elapsed();
                    for &index in &picked {
                        ids[index] = wheel.arm(1 + index as Tick % TIMEOUT_TICKS, index as u32);
                    }
                    done += picked.len() as u64;
                }
                timed
            });
        });
        assert_eq!(wheel.len(), n, "the wheel kept its size");
    }
    group.finish();
}

fn arm_cancel(c: &mut Criterion) {
    let mut group = c.benchmark_group("timer_wheel/arm_cancel");
    for n in ENTRIES {
        let (mut wheel, _) = armed_wheel(n);
        let mut deadline: Tick = 0;
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| {
                deadline = deadline % TIMEOUT_TICKS + 1;
                let id = wheel.arm(black_box(deadline), 7);
                wheel.cancel(id)
            });
        });
        assert_eq!(wheel.len(), n, "the wheel kept its size");
    }
    group.finish();
}

fn expire(c: &mut Criterion) {
    let mut group = c.benchmark_group("timer_wheel/expire");
    for n in ENTRIES {
        let (mut wheel, _) = armed_wheel(n);
        let mut expired = Vec::with_capacity(n);
        let mut now: Tick = 0;
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| {
                let mut count = 0;
                for _ in 0..TIMEOUT_TICKS {
                    now += 1;
                    expired.clear();
                    wheel.poll(now, &mut expired);
                    count += expired.len();
                    for &value in &expired {
                        wheel.arm(now + TIMEOUT_TICKS, value);
                    }
                }
                assert_eq!(count, n, "every entry expires once per timeout");
                count
            });
        });
        assert_eq!(wheel.len(), n, "the wheel kept its size");
    }
    group.finish();
}

criterion_group!(benches, arm, cancel, arm_cancel, expire);
criterion_main!(benches);
