//! PayloadSource: the payload of frame `seq` on connection `conn`, regenerated on demand.
//!
//! The load generator never stores what it sent: the payload of any frame is a slice of
//! one fixed pseudo-random pool, at an offset hashed from `(conn, seq)`. The reply
//! checker regenerates the same slice to compare the reply against, byte for byte.
//!
//! # Invariants
//! - The pool always holds printable ASCII (0x20..=0x7e) only, so a payload never holds a
//!   TAB, and a corrupt reply prints legibly.
//! - `payload(conn, seq)` is always `size` bytes and a pure function of its arguments:
//!   every `PayloadSource` of the same `size` returns the same bytes.

use std::sync::Arc;

/// How many distinct start offsets payloads are cut at: enough that neighbouring frames
/// differ (so a dropped or repeated reply shows), small enough that the pool stays cache-hot.
const OFFSETS: usize = 4096;

/// The pool's fixed seed: payloads are reproducible from run to run.
const POOL_SEED: u64 = 0x7ab_ec40;

/// splitmix64 (Steele, Lea, Flood 2014): a fast, well-mixed 64-bit hash step.
#[inline]
pub(crate) fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Deterministic payloads of one size, cheap to clone (the pool is shared).
#[derive(Debug, Clone)]
pub struct PayloadSource {
    /// `size + OFFSETS` printable bytes.
    pool: Arc<[u8]>,
    /// Bytes in every payload.
    size: usize,
}

impl PayloadSource {
    /// Payloads of `size` bytes.
    pub fn new(size: usize) -> Self {
        let mut state = POOL_SEED;
        let pool: Vec<u8> = (0..size + OFFSETS)
            .map(|_| {
                state = splitmix64(state);
                // 95 printable characters, from space to tilde.
                b' ' + (state % 95) as u8
            })
            .collect();
        PayloadSource {
            pool: pool.into(),
            size,
        }
    }

    /// Bytes in every payload.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The payload of frame `seq` on connection `conn`.
    #[inline]
    pub fn payload(&self, conn: u64, seq: u64) -> &[u8] {
        let offset = (splitmix64(conn.rotate_left(32) ^ seq) % OFFSETS as u64) as usize;
        &self.pool[offset..offset + self.size]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_sized_printable_and_reproducible() {
        let a = PayloadSource::new(100);
        let b = PayloadSource::new(100);
        for conn in 0..10 {
            for seq in 0..100 {
                let p = a.payload(conn, seq);
                assert_eq!(p.len(), 100);
                assert!(p.iter().all(|&c| (0x20..=0x7e).contains(&c)), "{p:?}");
                assert_eq!(p, b.payload(conn, seq));
            }
        }
    }

    #[test]
    fn neighbouring_frames_differ() {
        let src = PayloadSource::new(32);
        let same = (0..1000)
            .filter(|&seq| src.payload(7, seq) == src.payload(7, seq + 1))
            .count();
        assert!(same <= 2, "{same} of 1000 neighbours equal");
        assert_ne!(src.payload(1, 0), src.payload(2, 0));
    }

    #[test]
    fn empty_payloads() {
        assert_eq!(PayloadSource::new(0).payload(3, 4), b"");
    }
}
