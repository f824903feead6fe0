//! SourceTable: the connections open per [`Source`] under `--max-connections-per-source`,
//! and when each refused source was last logged. Pure: sources and instants in,
//! verdicts out; [`Shared`](super::shared::Shared) keeps one behind a mutex, taken only
//! where a connection is admitted or released.
//!
//! # Invariants
//! - `open` always holds exactly the sources with at least one connection admitted and not
//!   yet released, each with that number (from 1 to `limit`): an entry goes when its count
//!   reaches zero, so the table is bounded by the connections open, never by the sources
//!   ever seen.
//! - A release always names a source admitted before and not yet released (checked by a
//!   `debug_assert!` that prints it): a release without its admission would let that source
//!   over its limit, an admission without its release would lock it out for good.
//! - `logged` holds when each source was last logged as refused: a source is logged at
//!   most once per [`LOG_EVERY`], however often it is refused. It is swept of entries
//!   older than that whenever it has doubled since the last sweep, so it holds at most
//!   twice the sources logged in the last [`LOG_EVERY`] (and at least [`SWEEP_FLOOR`]).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::source::Source;

/// A source refused over and over is logged at most this often: an attack cannot flood the
/// log, and an operator still sees that it goes on.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// `logged` is not swept below this many entries: sweeping a handful saves nothing.
const SWEEP_FLOOR: usize = 64;

/// Why a connection was not admitted, and whether to log it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// Log this refusal: the first of its source in [`LOG_EVERY`]. Holds the refusals of
    /// that source left unlogged since its last line.
    pub log: Option<u64>,
}

/// When a source's refusal was last logged, and how many went unlogged since.
#[derive(Debug, Clone, Copy)]
struct LastLogged {
    at: Instant,
    unlogged: u64,
}

/// Connections open per source, at most `limit` each.
#[derive(Debug)]
pub struct SourceTable {
    /// The most connections one source may have open at once (at least 1).
    limit: u32,
    /// Sources with connections open, and how many (never 0, never above `limit`).
    open: HashMap<Source, u32>,
    /// Refused sources, by when they were last logged.
    logged: HashMap<Source, LastLogged>,
    /// `logged` is swept when it reaches this many entries.
    sweep_at: usize,
}

impl SourceTable {
    /// A table allowing `limit` connections per source (a limit of 0 is taken as 1: the
    /// command line refuses 0).
    pub fn new(limit: u32) -> SourceTable {
        SourceTable {
            limit: limit.max(1),
            open: HashMap::new(),
            logged: HashMap::new(),
            sweep_at: SWEEP_FLOOR,
        }
    }

    /// The per-source limit in force.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Counts one more connection of `source` if it has fewer than the limit open; else
    /// refuses it, saying whether to log the refusal (once per source per [`LOG_EVERY`]).
    pub fn admit(&mut self, source: Source, now: Instant) -> Result<(), Refused> {
        let count = self.open.entry(source).or_insert(0);
        if *count < self.limit {
            *count += 1;
            return Ok(());
        }
        Err(Refused {
            log: self.note_refusal(source, now),
        })
    }

    /// Counts one more connection of `source` whatever the limit: one moved here by an
    /// upgrade, which was admitted by the old process and must not be dropped now.
    pub fn adopt(&mut self, source: Source) {
        *self.open.entry(source).or_insert(0) += 1;
    }

    /// A connection of `source` admitted earlier is closed.
    pub fn release(&mut self, source: &Source) {
        let Some(count) = self.open.get_mut(source) else {
            debug_assert!(false, "released {source}, which has no connection open");
            return;
        };
        debug_assert!(*count > 0, "{source} has an entry of 0 connections");
        *count -= 1;
        if *count == 0 {
            self.open.remove(source);
        }
    }

    /// Sources with at least one connection open.
    pub fn sources(&self) -> usize {
        self.open.len()
    }

    /// Connections of `source` open.
    pub fn open(&self, source: &Source) -> u32 {
        self.open.get(source).copied().unwrap_or(0)
    }

    /// Records a refusal of `source`: `Some(unlogged since the last line)` if it is to be
    /// logged now.
    fn note_refusal(&mut self, source: Source, now: Instant) -> Option<u64> {
        if let Some(last) = self.logged.get_mut(&source) {
            if now.saturating_duration_since(last.at) < LOG_EVERY {
                last.unlogged += 1;
                return None;
            }
            let unlogged = last.unlogged;
            *last = LastLogged {
                at: now,
                unlogged: 0,
            };
            return Some(unlogged);
        }
        if self.logged.len() >= self.sweep_at {
            self.logged
                .retain(|_, last| now.saturating_duration_since(last.at) < LOG_EVERY);
            self.sweep_at = (2 * self.logged.len()).max(SWEEP_FLOOR);
        }
        self.logged.insert(
            source,
            LastLogged {
                at: now,
                unlogged: 0,
            },
        );
        Some(0)
    }

    /// Sources remembered as logged (for the tests of the sweep).
    #[cfg(test)]
    fn logged_len(&self) -> usize {
        self.logged.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::net::Ipv4Addr;

    fn ip(n: u32) -> Source {
        Source::V4(Ipv4Addr::from(0x7f00_0000 + n))
    }

    #[test]
    fn exactly_the_limit_is_admitted_and_limit_plus_one_is_refused() {
        let now = Instant::now();
        let mut t = SourceTable::new(3);
        for _ in 0..3 {
            assert_eq!(t.admit(ip(2), now), Ok(()));
        }
        assert!(t.admit(ip(2), now).is_err());
        assert_eq!(t.open(&ip(2)), 3, "a refusal counts nothing");
        // Another source is not affected.
        assert_eq!(t.admit(ip(3), now), Ok(()));
        // One release makes room for exactly one.
        t.release(&ip(2));
        assert_eq!(t.admit(ip(2), now), Ok(()));
        assert!(t.admit(ip(2), now).is_err());
    }

    #[test]
    fn the_table_holds_only_sources_with_connections_open() {
        let now = Instant::now();
        let mut t = SourceTable::new(2);
        t.admit(ip(2), now).unwrap();
        t.admit(ip(2), now).unwrap();
        t.admit(ip(3), now).unwrap();
        assert_eq!(t.sources(), 2);
        t.release(&ip(2));
        assert_eq!(t.sources(), 2);
        t.release(&ip(2));
        t.release(&ip(3));
        assert_eq!(t.sources(), 0);
        // A refused source that never had a slot leaves no entry either: a limit of 1 with
        // one open, then a refusal, then the release.
        let mut t = SourceTable::new(1);
        t.admit(ip(4), now).unwrap();
        assert!(t.admit(ip(4), now).is_err());
        t.release(&ip(4));
        assert_eq!(t.sources(), 0);
    }

    #[test]
    fn a_refused_source_is_logged_once_per_ten_seconds_with_the_count_unlogged() {
        let start = Instant::now();
        let mut t = SourceTable::new(1);
        t.admit(ip(2), start).unwrap();
        t.admit(ip(3), start).unwrap();
        let refuse = |t: &mut SourceTable, s, at| t.admit(s, at).unwrap_err().log;
        assert_eq!(refuse(&mut t, ip(2), start), Some(0));
        assert_eq!(refuse(&mut t, ip(3), start), Some(0), "per source");
        let just_before = start + LOG_EVERY - Duration::from_millis(1);
        for _ in 0..5 {
            assert_eq!(refuse(&mut t, ip(2), just_before), None);
        }
        assert_eq!(refuse(&mut t, ip(2), start + LOG_EVERY), Some(5));
        assert_eq!(refuse(&mut t, ip(2), start + LOG_EVERY), None);
        // A source whose connections all closed and came back is still remembered.
        t.release(&ip(2));
        t.admit(ip(2), start + LOG_EVERY).unwrap();
        assert_eq!(refuse(&mut t, ip(2), start + LOG_EVERY), None);
    }

    #[test]
    fn the_log_memory_is_swept_of_sources_logged_long_ago() {
        let start = Instant::now();
        let mut t = SourceTable::new(1);
        for n in 0..1000 {
            t.admit(ip(n), start).unwrap();
            assert_eq!(t.admit(ip(n), start).unwrap_err().log, Some(0));
        }
        assert_eq!(t.logged_len(), 1000, "all within {LOG_EVERY:?}");
        // Ten seconds on, the next new one triggers a sweep once the threshold is reached.
        let later = start + LOG_EVERY;
        for n in 1000..1100 {
            t.admit(ip(n), later).unwrap();
            t.admit(ip(n), later).unwrap_err();
        }
        assert!(t.logged_len() <= 100 + SWEEP_FLOOR, "{}", t.logged_len());
    }

    /// Random admissions and releases against a naive model (a sorted map of counts).
    #[test]
    fn matches_a_naive_model() {
        let now = Instant::now();
        let mut t = SourceTable::new(3);
        let mut model: BTreeMap<Source, u32> = BTreeMap::new();
        let mut admitted: Vec<Source> = Vec::new();
        // A fixed xorshift sequence: repeatable, no dependency.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let source = ip(u32::try_from(x % 7).unwrap());
            if x.is_multiple_of(3) && !admitted.is_empty() {
                let at = usize::try_from(x / 3 % admitted.len() as u64).unwrap();
                let s = admitted.swap_remove(at);
                t.release(&s);
                let c = model.get_mut(&s).unwrap();
                *c -= 1;
                if *c == 0 {
                    model.remove(&s);
                }
            } else {
                let room = model.get(&source).copied().unwrap_or(0) < 3;
                assert_eq!(t.admit(source, now).is_ok(), room, "{source}");
                if room {
                    *model.entry(source).or_insert(0) += 1;
                    admitted.push(source);
                }
            }
            assert_eq!(t.sources(), model.len());
            for (s, c) in &model {
                assert_eq!(t.open(s), *c, "{s}");
            }
        }
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "which has no connection open")]
    fn a_release_without_its_admission_is_caught() {
        SourceTable::new(1).release(&ip(9));
    }
}
