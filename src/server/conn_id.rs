//! Connection ids: the `id` the admin endpoint lists a connection by and closes it by
//! (`tabecho conns close --id N`). Unique for the life of the process and of the processes
//! that upgrade it, and kept by a connection an upgrade moves (its id travels in the
//! hand-over's record). Pure.
//!
//! Each reactor numbers its own connections, with nothing shared: reactor `i` of `n` gives
//! `base + 1 + i`, then every `n`th number after it. Each process of an upgrade's lineage
//! has a base of its own, [`GENERATION`] apart: the new process numbers its connections
//! from its base while the old one still numbers its own (both accept on the same sockets
//! until the move), and the ones it adopts keep theirs.
//!
//! # Invariants
//! - Two connections of one process never get the same id: reactors' ids differ modulo
//!   `n`, and each reactor's only grow.
//! - A process's ids stay below its base plus [`GENERATION`] for its first 2^40
//!   connections (1.1 trillion: 127 days of 100,000 accepts a second), so a lineage's
//!   processes never share an id.
//! - Ids fit a JSON number exactly (below 2^53, what JavaScript and jq keep) for the
//!   first 8,192 processes of a lineage: 22 years of a daily upgrade.

/// The distance between the id bases of a process and the one that upgrades it: 2^40, so
/// ids fit a JSON number exactly (below 2^53) for 8,192 generations, each with room for
/// 2^40 connections.
pub const GENERATION: u64 = 1 << 40;

/// The environment variable an upgrading process gives its successor its id base in.
pub const ID_BASE_ENV: &str = "TABECHO_CONNECTION_ID_BASE";

/// The id base of the process an upgrade starts from one of base `base`.
pub fn next_base(base: u64) -> u64 {
    base.wrapping_add(GENERATION)
}

/// The id base this process was given ([`ID_BASE_ENV`]), or 0: not started by an upgrade
/// (or by one that did not say).
pub fn base_from_env() -> u64 {
    std::env::var(ID_BASE_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// One reactor's numbering of its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnIds {
    /// The id the next connection gets.
    next: u64,
    /// The reactors of the server: the distance between two ids of this one.
    step: u64,
}

impl ConnIds {
    /// The ids of reactor `index` of `reactors`, in a process of base `base`.
    pub fn new(base: u64, index: usize, reactors: usize) -> ConnIds {
        debug_assert!(index < reactors, "reactor {index} of {reactors}");
        ConnIds {
            next: base.wrapping_add(1).wrapping_add(index as u64),
            step: reactors.max(1) as u64,
        }
    }

    /// The next connection's id.
    pub fn take(&mut self) -> u64 {
        let id = self.next;
        self.next = self.next.wrapping_add(self.step);
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn one_reactor_numbers_from_1() {
        let mut ids = ConnIds::new(0, 0, 1);
        assert_eq!([ids.take(), ids.take(), ids.take()], [1, 2, 3]);
    }

    #[test]
    fn reactors_and_generations_never_share_an_id() {
        let mut seen = HashSet::new();
        let mut base = 0;
        // Three processes of a lineage, of 1, 2 and 3 reactors.
        for generation in 0..3 {
            let reactors = 1 + generation;
            for index in 0..reactors {
                let mut ids = ConnIds::new(base, index, reactors);
                for _ in 0..1000 {
                    let id = ids.take();
                    assert!(id > base && id < next_base(base), "{id} of base {base}");
                    assert!(seen.insert(id), "{id} given twice");
                }
            }
            base = next_base(base);
        }
        assert_eq!(seen.len(), 1000 * (1 + 2 + 3));
    }

    #[test]
    fn the_first_8192_generations_ids_are_exact_json_numbers() {
        let base = (0..8191).fold(0, |b, _| next_base(b));
        // The last id of the 8,192nd process's range.
        assert!(base + GENERATION - 1 < 1 << 53);
        assert!(next_base(base) + 1 >= 1 << 53, "the next one's are not");
        let mut ids = ConnIds::new(base, 0, 1);
        assert!(ids.take() < 1 << 53);
    }
}
