//! What a timer on a reactor's wheel is for ([`TimerKey`]), and its encoding in the
//! wheel's `u32` value: the wheel stays pure (it stores a number per entry, small), and
//! the one place that knows the encoding is [`TimerKey::to_value`] /
//! [`TimerKey::from_value`].
//!
//! # Invariants
//! - Values below [`PROXY_BASE`] are echo connections' slab keys (`Conn`); from it, the
//!   [`MAX_PENDING`] connections waiting for their PROXY header (`Proxy`); from
//!   [`HTTP_BASE`], the HTTP endpoints' connections, [`MAX_CONNECTIONS`] per endpoint
//!   (`Http`); the top five values are the server's own timers. So every value decodes to
//!   exactly one key, and back.
//! - An echo connection's slab key is always below [`MAX_CONNECTION_KEYS`]: the server
//!   caps `max_connections` below it (server/mod.rs), so its timer value never reaches the
//!   pending PROXY connections' range.

use super::proxy_intake::MAX_PENDING;
use crate::http::MAX_CONNECTIONS;

/// What a timer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TimerKey {
    /// Echo connection `key`: its idle check, or its linger deadline once closing.
    Conn(usize),
    /// HTTP endpoint connection `n` (below [`HTTP_TIMERS`]: the endpoint's index times
    /// [`MAX_CONNECTIONS`] plus its key): its deadline.
    Http(usize),
    /// Connection `key` waiting for its PROXY header (below [`MAX_PENDING`]): its
    /// header deadline.
    Proxy(usize),
    /// Retry accepting after a descriptor-exhaustion pause.
    AcceptResume,
    /// Log the counters.
    Stats,
    /// The shutdown grace period is over: close every connection.
    Shutdown,
    /// An upgrade's drain has lasted the grace period: shut down what is left.
    UpgradeDrain,
    /// See whether a memory-pressure episode is over.
    Pressure,
}

/// Value of [`TimerKey::AcceptResume`].
const ACCEPT_RESUME: u32 = u32::MAX;
/// Value of [`TimerKey::Stats`].
const STATS: u32 = u32::MAX - 1;
/// Value of [`TimerKey::Shutdown`].
const SHUTDOWN: u32 = u32::MAX - 2;
/// Value of [`TimerKey::UpgradeDrain`].
const UPGRADE_DRAIN: u32 = u32::MAX - 3;
/// Value of [`TimerKey::Pressure`]: the lowest server timer.
const PRESSURE: u32 = u32::MAX - 4;
/// HTTP endpoint connections' timers: [`MAX_CONNECTIONS`] for each of the two endpoints
/// (metrics, admin).
pub(super) const HTTP_TIMERS: usize = 2 * MAX_CONNECTIONS;
/// Value of `TimerKey::Http(0)`; `Http(n)` is `HTTP_BASE + n`, below [`PRESSURE`].
/// (`HTTP_TIMERS` is 128: the cast is exact.)
#[allow(clippy::cast_possible_truncation)]
const HTTP_BASE: u32 = PRESSURE - HTTP_TIMERS as u32;
/// Value of `TimerKey::Proxy(0)`; `Proxy(key)` is `PROXY_BASE + key`, below [`HTTP_BASE`].
/// (`MAX_PENDING` is 2^16: the cast is exact.)
#[allow(clippy::cast_possible_truncation)]
const PROXY_BASE: u32 = HTTP_BASE - MAX_PENDING as u32;
/// Echo connections a reactor may hold: their slab keys are their timer values, below
/// the pending PROXY connections'. (`u32` into `usize`: the server's targets are 32 or
/// 64 bits.)
pub const MAX_CONNECTION_KEYS: usize = PROXY_BASE as usize;

impl TimerKey {
    /// The wheel's value for this key.
    #[inline]
    pub(super) fn to_value(self) -> u32 {
        match self {
            TimerKey::Conn(key) => {
                debug_assert!(
                    key < MAX_CONNECTION_KEYS,
                    "connection key {key} past MAX_CONNECTION_KEYS {MAX_CONNECTION_KEYS}"
                );
                // Bound: key < MAX_CONNECTION_KEYS < u32::MAX (the module's invariant).
                #[allow(clippy::cast_possible_truncation)]
                let value = key as u32;
                value
            }
            TimerKey::Http(key) => {
                debug_assert!(key < HTTP_TIMERS, "endpoint connection {key}");
                // Bound: key < HTTP_TIMERS (128), the endpoints' slabs' capacity.
                #[allow(clippy::cast_possible_truncation)]
                let key = key as u32;
                HTTP_BASE + key
            }
            TimerKey::Proxy(key) => {
                debug_assert!(key < MAX_PENDING, "pending PROXY connection key {key}");
                // Bound: key < MAX_PENDING (2^16), the intake's cap.
                #[allow(clippy::cast_possible_truncation)]
                let key = key as u32;
                PROXY_BASE + key
            }
            TimerKey::AcceptResume => ACCEPT_RESUME,
            TimerKey::Stats => STATS,
            TimerKey::Shutdown => SHUTDOWN,
            TimerKey::UpgradeDrain => UPGRADE_DRAIN,
            TimerKey::Pressure => PRESSURE,
        }
    }

    /// The key a wheel value was armed for.
    #[inline]
    pub(super) fn from_value(value: u32) -> TimerKey {
        match value {
            ACCEPT_RESUME => TimerKey::AcceptResume,
            STATS => TimerKey::Stats,
            SHUTDOWN => TimerKey::Shutdown,
            UPGRADE_DRAIN => TimerKey::UpgradeDrain,
            PRESSURE => TimerKey::Pressure,
            value if value >= HTTP_BASE => TimerKey::Http((value - HTTP_BASE) as usize),
            value if value >= PROXY_BASE => TimerKey::Proxy((value - PROXY_BASE) as usize),
            value => TimerKey::Conn(value as usize),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn round_trip(key: TimerKey) {
        assert_eq!(TimerKey::from_value(key.to_value()), key, "{key:?}");
    }

    #[test]
    fn every_kind_round_trips() {
        for key in [
            TimerKey::Conn(0),
            TimerKey::Conn(1),
            TimerKey::Http(0),
            TimerKey::Http(MAX_CONNECTIONS - 1),
            TimerKey::Proxy(0),
            TimerKey::Proxy(MAX_PENDING - 1),
            TimerKey::Conn(MAX_CONNECTION_KEYS - 1),
            TimerKey::AcceptResume,
            TimerKey::Stats,
            TimerKey::Shutdown,
            TimerKey::UpgradeDrain,
            TimerKey::Pressure,
        ] {
            round_trip(key);
        }
    }

    #[test]
    fn the_boundaries_round_trip() {
        // The last connection key and the first pending PROXY one are neighbours, and the
        // last of those and the first HTTP endpoint one.
        round_trip(TimerKey::Conn(MAX_CONNECTION_KEYS - 1));
        assert_eq!(
            TimerKey::Conn(MAX_CONNECTION_KEYS - 1).to_value() + 1,
            TimerKey::Proxy(0).to_value()
        );
        assert_eq!(
            TimerKey::Proxy(MAX_PENDING - 1).to_value() + 1,
            TimerKey::Http(0).to_value()
        );
        // The last endpoint key and the lowest server timer are neighbours.
        round_trip(TimerKey::Http(HTTP_TIMERS - 1));
        assert_eq!(
            TimerKey::Http(HTTP_TIMERS - 1).to_value() + 1,
            TimerKey::Pressure.to_value()
        );
        assert_eq!(TimerKey::AcceptResume.to_value(), u32::MAX);
    }

    #[test]
    fn every_value_near_the_boundaries_decodes_and_encodes_back() {
        let edges = [0, PROXY_BASE, HTTP_BASE, PRESSURE];
        for edge in edges {
            for value in edge.saturating_sub(3)..=edge.saturating_add(3) {
                let key = TimerKey::from_value(value);
                assert_eq!(key.to_value(), value, "{value} decoded to {key:?}");
            }
        }
        for value in u32::MAX - 6..=u32::MAX {
            assert_eq!(TimerKey::from_value(value).to_value(), value);
        }
    }

    #[test]
    #[should_panic(expected = "past MAX_CONNECTION_KEYS")]
    #[cfg(debug_assertions)]
    fn a_connection_key_past_the_cap_is_refused() {
        let _ = TimerKey::Conn(MAX_CONNECTION_KEYS).to_value();
    }
}
