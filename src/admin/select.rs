//! Which connections a request is about: the filters' test of one connection
//! ([`ConnFacts`], read without allocating), and a listing's bounded top-N selection
//! ([`TopN`]). Pure.
//!
//! A reactor answers a listing by offering each of its connections that the query admits
//! to a `TopN` of `limit`, then building rows for the few it kept; the reactor that
//! gathers offers the rows of every reactor to one more `TopN` of `limit`. So a listing
//! costs O(connections × log limit) and a row per kept connection, never a sort of every
//! connection nor a row for each.
//!
//! # Invariants
//! - A [`TopN`] always holds at most its limit, and the worst of what it holds is always
//!   at the top of its heap: an offer is O(log limit), one that would not be kept is
//!   O(1) and builds nothing ([`TopN::offer_with`]).
//! - What [`TopN::into_sorted`] yields is always what sorting every offer best first and
//!   keeping the first `limit` gives (property-tested against exactly that).
//! - The filters of a close always combine with AND; a filter not given passes all.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::net::IpAddr;
use std::time::Duration;

use super::request::{CloseFilter, ListQuery, SortKey};
use super::row::ConnectionRow;

/// What the filters and the order read of a connection: plain values a reactor has at
/// hand, no allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnFacts {
    /// Its id.
    pub id: u64,
    /// The real client's address (the PROXY header's where there is one); `None` for a
    /// Unix client, which no `source` matches.
    pub client: Option<IpAddr>,
    /// Bytes charged to the buffer budget.
    pub memory: u64,
    /// Time since the accept.
    pub age: Duration,
    /// Time since the last progress.
    pub idle: Duration,
}

impl CloseFilter {
    /// Whether the connection passes every filter given (AND): `id` equal, the client in
    /// `source`, `memory` at least `min_memory`, `idle` longer than `idle_over`, `age`
    /// longer than `age_over`. `dry_run` does not filter.
    pub fn matches(&self, c: &ConnFacts) -> bool {
        let CloseFilter {
            id,
            source,
            min_memory,
            idle_over,
            age_over,
            dry_run: _,
        } = self;
        id.is_none_or(|id| c.id == id)
            && source.is_none_or(|net| c.client.is_some_and(|ip| net.contains(ip)))
            && min_memory.is_none_or(|min| c.memory >= min)
            && idle_over.is_none_or(|d| c.idle > d)
            && age_over.is_none_or(|d| c.age > d)
    }
}

impl ListQuery {
    /// Whether the listing shows the connection: its client in `source`, if given. (The
    /// `reactor` filter picks which reactors are asked: [`ListQuery::asks`].)
    pub fn admits(&self, c: &ConnFacts) -> bool {
        self.source
            .is_none_or(|net| c.client.is_some_and(|ip| net.contains(ip)))
    }
}

/// Where a connection stands in a listing's order: greater is listed first. The sort
/// key's value, largest first; on a tie, the lower id first (ids are unique, so two
/// connections never rank equal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rank {
    /// Bytes for `memory`, microseconds for `age` and `idle`.
    value: u64,
    /// The connection's id.
    id: u64,
}

impl Rank {
    /// The rank of a connection under `sort`.
    pub fn of(sort: SortKey, c: &ConnFacts) -> Rank {
        Rank::new(sort, c.id, c.memory, c.age, c.idle)
    }

    /// The rank of a listed row under `sort` (to merge the reactors' rows).
    pub fn of_row(sort: SortKey, r: &ConnectionRow) -> Rank {
        Rank::new(sort, r.id, r.memory, r.age, r.idle)
    }

    fn new(sort: SortKey, id: u64, memory: u64, age: Duration, idle: Duration) -> Rank {
        let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let value = match sort {
            SortKey::Memory => memory,
            SortKey::Age => micros(age),
            SortKey::Idle => micros(idle),
        };
        Rank { value, id }
    }
}

impl Ord for Rank {
    fn cmp(&self, other: &Rank) -> Ordering {
        self.value
            .cmp(&other.value)
            .then_with(|| other.id.cmp(&self.id))
    }
}

impl PartialOrd for Rank {
    fn partial_cmp(&self, other: &Rank) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// One kept item, ordered by its rank only.
struct Kept<T> {
    rank: Rank,
    item: T,
}

impl<T> PartialEq for Kept<T> {
    fn eq(&self, other: &Self) -> bool {
        self.rank == other.rank
    }
}

impl<T> Eq for Kept<T> {}

impl<T> PartialOrd for Kept<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> Ord for Kept<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.rank.cmp(&other.rank)
    }
}

/// The `limit` best of the items offered one at a time, by [`Rank`]: a heap of at most
/// `limit` with the worst kept on top, so a better offer replaces it in O(log limit).
pub struct TopN<T> {
    /// The most kept: the listing's `limit`.
    limit: usize,
    /// What is kept, the worst at the top (a max-heap of reversed ranks); always at most
    /// `limit` entries.
    heap: BinaryHeap<Reverse<Kept<T>>>,
}

impl<T> TopN<T> {
    /// Keeps at most `limit` (0 keeps nothing). Allocates as items are kept, up to
    /// `limit` entries.
    pub fn new(limit: usize) -> TopN<T> {
        TopN {
            limit,
            heap: BinaryHeap::new(),
        }
    }

    /// How many are kept.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Whether an item of `rank` would be kept now.
    pub fn would_keep(&self, rank: Rank) -> bool {
        if self.heap.len() < self.limit {
            return true;
        }
        self.heap
            .peek()
            .is_some_and(|Reverse(worst)| rank > worst.rank)
    }

    /// Offers `item` of `rank`: kept if among the best `limit` so far, pushing out the
    /// worst kept if there is no room.
    pub fn offer(&mut self, rank: Rank, item: T) {
        self.offer_with(rank, || item);
    }

    /// Offers the item `make` builds, calling it only if the item is kept: a reactor
    /// builds the rows of the connections it keeps, no others.
    pub fn offer_with(&mut self, rank: Rank, make: impl FnOnce() -> T) {
        if !self.would_keep(rank) {
            return;
        }
        let kept = Reverse(Kept { rank, item: make() });
        if self.heap.len() < self.limit {
            self.heap.push(kept);
        } else if let Some(mut worst) = self.heap.peek_mut() {
            // Replacing the top sifts it down when the PeekMut drops: O(log limit).
            *worst = kept;
        }
        debug_assert!(
            self.heap.len() <= self.limit,
            "{} kept, limit {}",
            self.heap.len(),
            self.limit
        );
    }

    /// What is kept, best first.
    pub fn into_sorted(self) -> Vec<T> {
        // Ascending by Reverse(rank) is descending by rank: the best first.
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|Reverse(kept)| kept.item)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cidr::Cidr;
    use proptest::prelude::*;

    fn facts(id: u64, client: &str, memory: u64, age_s: u64, idle_s: u64) -> ConnFacts {
        ConnFacts {
            id,
            client: client.parse().ok(),
            memory,
            age: Duration::from_secs(age_s),
            idle: Duration::from_secs(idle_s),
        }
    }

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    /// Ranks of (value, id) under `memory`.
    fn rank(memory: u64, id: u64) -> Rank {
        Rank::of(SortKey::Memory, &facts(id, "", memory, 0, 0))
    }

    #[test]
    fn ranks_put_the_larger_value_first_then_the_lower_id() {
        assert!(rank(2, 9) > rank(1, 0));
        assert!(rank(1, 1) > rank(1, 2), "a tie goes to the lower id");
        let c = facts(1, "", 5, 30, 7);
        let older = facts(2, "", 1, 31, 0);
        assert!(Rank::of(SortKey::Memory, &c) > Rank::of(SortKey::Memory, &older));
        assert!(Rank::of(SortKey::Age, &older) > Rank::of(SortKey::Age, &c));
        assert!(Rank::of(SortKey::Idle, &c) > Rank::of(SortKey::Idle, &older));
    }

    #[test]
    fn a_row_ranks_as_its_facts() {
        let row = ConnectionRow {
            id: 4,
            reactor: 0,
            client: String::new(),
            peer: String::new(),
            local: String::new(),
            age: Duration::from_micros(77),
            idle: Duration::from_micros(66),
            state: crate::admin::ConnState::Reading,
            input_held: 0,
            output_pending: 0,
            kernel_charge: 0,
            memory: 55,
            bytes_in: None,
            bytes_out: None,
        };
        let f = ConnFacts {
            id: 4,
            client: None,
            memory: 55,
            age: row.age,
            idle: row.idle,
        };
        for sort in SortKey::ALL {
            assert_eq!(Rank::of_row(sort, &row), Rank::of(sort, &f), "{sort}");
        }
    }

    #[test]
    fn top_n_keeps_the_best_and_yields_them_best_first() {
        let mut top = TopN::new(3);
        for (memory, id) in [(5, 1), (1, 2), (9, 3), (5, 4), (7, 5), (0, 6)] {
            top.offer(rank(memory, id), id);
        }
        assert_eq!(top.len(), 3);
        assert_eq!(top.into_sorted(), [3, 5, 1]);
    }

    #[test]
    fn top_n_of_fewer_offers_than_its_limit_keeps_them_all() {
        let mut top = TopN::new(10);
        assert!(top.is_empty());
        top.offer(rank(1, 1), "a");
        top.offer(rank(2, 2), "b");
        assert_eq!(top.into_sorted(), ["b", "a"]);
        assert!(TopN::<u8>::new(5).into_sorted().is_empty());
    }

    #[test]
    fn top_n_of_limit_0_keeps_nothing_and_builds_nothing() {
        let mut top = TopN::new(0);
        top.offer_with(rank(u64::MAX, 0), || panic!("built"));
        assert!(top.is_empty());
    }

    #[test]
    fn an_offer_that_is_not_kept_builds_nothing() {
        let mut top = TopN::new(2);
        top.offer(rank(10, 1), 1);
        top.offer(rank(10, 2), 2);
        assert!(
            !top.would_keep(rank(10, 3)),
            "a tie with a higher id is worse"
        );
        top.offer_with(rank(10, 3), || panic!("built a row that is not kept"));
        top.offer_with(rank(3, 4), || panic!("built a row that is not kept"));
        assert!(top.would_keep(rank(11, 9)));
        top.offer_with(rank(11, 9), || 9);
        assert_eq!(top.into_sorted(), [9, 1]);
    }

    #[test]
    fn each_close_filter_alone() {
        let c = facts(7, "127.0.0.5", 4096, 60, 30);
        let pass = |f: CloseFilter| f.matches(&c);
        assert!(pass(CloseFilter::default()), "no filter passes all");
        assert!(pass(CloseFilter {
            id: Some(7),
            ..Default::default()
        }));
        assert!(!pass(CloseFilter {
            id: Some(8),
            ..Default::default()
        }));
        assert!(pass(CloseFilter {
            source: Some(cidr("127.0.0.0/8")),
            ..Default::default()
        }));
        assert!(!pass(CloseFilter {
            source: Some(cidr("127.0.0.6")),
            ..Default::default()
        }));
        assert!(!pass(CloseFilter {
            source: Some(cidr("::/0")),
            ..Default::default()
        }));
        // At least min_memory: the bound itself passes.
        assert!(pass(CloseFilter {
            min_memory: Some(4096),
            ..Default::default()
        }));
        assert!(!pass(CloseFilter {
            min_memory: Some(4097),
            ..Default::default()
        }));
        // Longer than: the bound itself does not pass.
        let secs = |s| Some(Duration::from_secs(s));
        assert!(pass(CloseFilter {
            idle_over: secs(29),
            ..Default::default()
        }));
        assert!(!pass(CloseFilter {
            idle_over: secs(30),
            ..Default::default()
        }));
        assert!(pass(CloseFilter {
            age_over: secs(59),
            ..Default::default()
        }));
        assert!(!pass(CloseFilter {
            age_over: secs(60),
            ..Default::default()
        }));
        assert!(pass(CloseFilter {
            age_over: secs(0),
            ..Default::default()
        }));
    }

    #[test]
    fn a_unix_client_matches_no_source() {
        let unix = facts(1, "", 0, 1, 1);
        assert_eq!(unix.client, None);
        let f = CloseFilter {
            source: Some(cidr("0.0.0.0/0")),
            ..Default::default()
        };
        assert!(!f.matches(&unix));
        let q = ListQuery {
            source: Some(cidr("::/0")),
            ..Default::default()
        };
        assert!(!q.admits(&unix));
        assert!(ListQuery::default().admits(&unix));
    }

    #[test]
    fn an_ipv4_mapped_client_matches_its_ipv4_source() {
        let mapped = facts(1, "::ffff:127.0.0.5", 0, 1, 1);
        let f = CloseFilter {
            source: Some(cidr("127.0.0.5")),
            ..Default::default()
        };
        assert!(f.matches(&mapped));
    }

    /// One optional filter of each kind, to combine.
    fn any_filter() -> impl Strategy<Value = CloseFilter> {
        (
            prop::option::of(0..8u64),
            prop::option::of(prop::sample::select(vec![
                "10.0.0.0/8",
                "10.1.0.0/16",
                "::/0",
            ])),
            prop::option::of(0..100u64),
            prop::option::of(0..100u64),
            prop::option::of(0..100u64),
            any::<bool>(),
        )
            .prop_map(|(id, source, min_memory, idle, age, dry_run)| CloseFilter {
                id,
                source: source.map(cidr),
                min_memory,
                idle_over: idle.map(Duration::from_secs),
                age_over: age.map(Duration::from_secs),
                dry_run,
            })
    }

    fn any_facts() -> impl Strategy<Value = ConnFacts> {
        (
            0..8u64,
            prop::sample::select(vec!["10.0.0.1", "10.1.2.3", "192.0.2.1", "2001:db8::1", ""]),
            0..100u64,
            0..100u64,
            0..100u64,
        )
            .prop_map(|(id, client, memory, age, idle)| facts(id, client, memory, age, idle))
    }

    proptest! {
        /// The filters combine with AND: a filter matches exactly when each of its parts
        /// alone does.
        #[test]
        fn filters_combine_with_and(f in any_filter(), c in any_facts()) {
            let none = CloseFilter::default();
            let parts = [
                CloseFilter { id: f.id, ..none },
                CloseFilter { source: f.source, ..none },
                CloseFilter { min_memory: f.min_memory, ..none },
                CloseFilter { idle_over: f.idle_over, ..none },
                CloseFilter { age_over: f.age_over, ..none },
            ];
            prop_assert_eq!(f.matches(&c), parts.iter().all(|p| p.matches(&c)));
        }

        /// TopN against the naive model: sort everything best first, keep `limit`.
        #[test]
        fn top_n_is_sort_and_truncate(
            values in prop::collection::vec(0..20u64, 0..300),
            limit in 0..40usize,
            sort in prop::sample::select(SortKey::ALL.to_vec()),
        ) {
            // Unique ids in no order (multiplying by an odd number is a bijection of
            // u64), small values so that ties are many.
            let all: Vec<ConnFacts> = values
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    let id = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                    ConnFacts {
                        id,
                        client: None,
                        memory: v,
                        age: Duration::from_micros(v * 3 % 7),
                        idle: Duration::from_micros(v * 5 % 11),
                    }
                })
                .collect();
            let mut top = TopN::new(limit);
            for c in &all {
                top.offer(Rank::of(sort, c), c.id);
            }
            let mut model: Vec<ConnFacts> = all.clone();
            model.sort_by_key(|c| Reverse(Rank::of(sort, c)));
            let model: Vec<u64> = model.iter().take(limit).map(|c| c.id).collect();
            prop_assert_eq!(top.into_sorted(), model);
        }
    }
}
