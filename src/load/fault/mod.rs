//! Fault: the misbehaving connections of `tabecho load --faults`. Each one cycles:
//! connect, misbehave, check that it receives what docs/PROTOCOL.md promises, pause,
//! reconnect; so a long soak keeps exercising every fault.
//!
//! | kind      | misbehaves                                         | must receive                                    |
//! |-----------|----------------------------------------------------|-------------------------------------------------|
//! | reset     | a burst of frames, RST (SO_LINGER 0) once replies flow | correct reply bytes until it resets          |
//! | halfclose | a burst and an unfinished fragment, shuts its write side | every reply, no reply to the fragment, EOF |
//! | slowread  | a burst, then reads nothing for half the idle timeout | every reply in order, then EOF                |
//! | noread    | sends frames and never reads                       | reaped (EOF or reset); what came, a correct prefix |
//! | flood     | sends empty frames (12 bytes of reply each) as fast as the socket takes them, never reads | the same as noread |
//! | trickle   | an unfinished frame, one byte at a time            | no byte; a close no sooner than the idle timeout |
//! | oversize  | frames, then more than `max_frame` bytes, still sending | their replies, the exact error line, EOF   |
//! | garbage   | random bytes (TAB, NUL, 0xFF...), shuts its write side | the replies to the frames they make, EOF    |
//! | partial   | all of a frame but its TAB (`max_frame - 1` bytes), held | no byte and a close no sooner than the idle timeout, or the memory budget's error line (evicted) |
//!
//! Every outcome must come within [`OUTCOME_SLACK`] + 2 idle timeouts of the connect.
//!
//! Files: this one, which connections misbehave and what they assume; `kind.rs`, the
//! kinds and their counters (a leaf the load's statistics use);
//! `session.rs`, one faulty connection's sockets and timers; `expect.rs`, what a cycle
//! must receive, judged from bytes alone (pure).

mod expect;
pub mod kind;
mod session;

use std::time::Duration;

pub use kind::{FaultCounts, FaultKind, SAMPLES};
pub use session::FaultSession;

/// Extra time every fault's outcome may take beyond two idle timeouts: a loaded machine
/// schedules late, but an outcome that never comes is the bug that matters.
pub const OUTCOME_SLACK: Duration = Duration::from_secs(5);
/// Payload bytes of `noread`'s frames (at most the frame limit): the backlog it builds
/// is megabytes, in few frames, so a soak can repeat it cheaply.
pub const NOREAD_FRAME: usize = 4096;
/// What the faults need to know of the server and the run.
#[derive(Debug, Clone)]
pub struct FaultPlan {
    /// The kinds given, spread evenly over the faulty connections.
    pub kinds: Vec<FaultKind>,
    /// Faulty connections among all `connections`.
    pub faulty: u64,
    /// All connections of the run.
    pub connections: u64,
    /// The server's `--max-frame`.
    pub max_frame: usize,
    /// The server's `--idle-timeout`.
    pub idle_timeout: Duration,
    /// Mean pause between two cycles of one connection.
    pub pause: Duration,
    /// Cycles per faulty connection, at most.
    pub cycles: Option<u64>,
}

impl FaultPlan {
    /// The kind of connection `id`, if it is faulty: the `faulty` ones are spread evenly
    /// over the ids (Bresenham), and the kinds given dealt to them in turn.
    pub fn kind_of(&self, id: u64) -> Option<FaultKind> {
        if self.kinds.is_empty() || self.connections == 0 {
            return None;
        }
        let (f, n) = (self.faulty as u128, self.connections as u128);
        let before = id as u128 * f / n;
        let through = (id as u128 + 1) * f / n;
        (through > before).then(|| self.kinds[(before % self.kinds.len() as u128) as usize])
    }

    /// The longest a cycle may take from its connect to its outcome.
    pub fn outcome_within(&self) -> Duration {
        self.idle_timeout * 2 + OUTCOME_SLACK
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faulty_connections_are_spread_evenly_over_the_kinds() {
        let plan = FaultPlan {
            kinds: vec![FaultKind::Reset, FaultKind::Trickle],
            faulty: 10,
            connections: 100,
            max_frame: 1024,
            idle_timeout: Duration::from_secs(1),
            pause: Duration::from_secs(1),
            cycles: None,
        };
        let kinds: Vec<(u64, FaultKind)> = (0..100)
            .filter_map(|id| plan.kind_of(id).map(|k| (id, k)))
            .collect();
        assert_eq!(kinds.len(), 10, "{kinds:?}");
        assert_eq!(
            kinds.iter().filter(|(_, k)| *k == FaultKind::Reset).count(),
            5
        );
        // One in every ten ids: no two faulty connections are neighbours.
        assert!(kinds.windows(2).all(|w| w[1].0 - w[0].0 == 10), "{kinds:?}");
        let all = FaultPlan {
            faulty: 100,
            ..plan.clone()
        };
        assert!((0..100).all(|id| all.kind_of(id).is_some()));
        let none = FaultPlan {
            kinds: vec![],
            ..plan
        };
        assert!((0..100).all(|id| none.kind_of(id).is_none()));
    }
}
