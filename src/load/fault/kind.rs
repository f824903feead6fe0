//! FaultKind and FaultCounts: the ways to misbehave, and what one kind's cycles came to
//! (a leaf: the load's statistics and report use it, it uses nothing of theirs).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Unexpected outcomes described per kind in the report.
pub const SAMPLES: usize = 3;

/// One way to misbehave. In JSON, its [`FaultKind::name`] (a test holds the two equal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultKind {
    /// Closes with a reset while replies are in flight.
    Reset,
    /// Shuts its write side after a burst, reads to EOF.
    HalfClose,
    /// Stops reading for a while.
    SlowRead,
    /// Never reads.
    NoRead,
    /// Sends empty frames, the most reply per byte, as fast as it can; never reads.
    Flood,
    /// Sends an unfinished frame one byte at a time.
    Trickle,
    /// Sends a frame over the limit.
    Oversize,
    /// Sends random bytes with TABs.
    Garbage,
    /// Sends all of a frame but its TAB (`max_frame - 1` bytes) and holds it.
    Partial,
}

impl FaultKind {
    /// Every kind, in report order.
    pub const ALL: [FaultKind; 9] = [
        FaultKind::Reset,
        FaultKind::HalfClose,
        FaultKind::SlowRead,
        FaultKind::NoRead,
        FaultKind::Flood,
        FaultKind::Trickle,
        FaultKind::Oversize,
        FaultKind::Garbage,
        FaultKind::Partial,
    ];

    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Reset => "reset",
            FaultKind::HalfClose => "halfclose",
            FaultKind::SlowRead => "slowread",
            FaultKind::NoRead => "noread",
            FaultKind::Flood => "flood",
            FaultKind::Trickle => "trickle",
            FaultKind::Oversize => "oversize",
            FaultKind::Garbage => "garbage",
            FaultKind::Partial => "partial",
        }
    }

    /// Sends frames without ever reading (noread, flood): the server must throttle it.
    pub fn never_reads(self) -> bool {
        matches!(self, FaultKind::NoRead | FaultKind::Flood)
    }

    /// The position in [`FaultKind::ALL`], which indexes per-kind counters.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FaultKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        FaultKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = FaultKind::ALL.iter().map(|k| k.name()).collect();
                format!("{s:?}: not a fault (one of {})", names.join(", "))
            })
    }
}

/// What the cycles of one kind came to (in JSON, these field names are the keys).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FaultCounts {
    /// Connections of this kind.
    pub connections: u64,
    /// Cycles that reached an outcome.
    pub runs: u64,
    /// Outcomes as documented.
    pub expected: u64,
    /// Outcomes not as documented.
    pub unexpected: u64,
    /// Cycles still in progress when the run ended (no outcome, not a failure).
    pub cut_short: u64,
    /// Cycles whose connect failed (not a fault outcome; the connection tries again).
    pub connect_failed: u64,
    /// Outcomes that were a close by the server's buffer-memory budget, with its error
    /// line (`error: server buffer memory exhausted`): counted in `expected` too (partial).
    pub evicted: u64,
    /// The first few unexpected outcomes, described.
    pub samples: Vec<String>,
}

impl FaultCounts {
    /// Adds `other` into `self`, keeping at most [`SAMPLES`] descriptions. Exhaustive: a
    /// new field does not compile until it is merged here.
    pub fn merge(&mut self, other: &FaultCounts) {
        let FaultCounts {
            connections,
            runs,
            expected,
            unexpected,
            cut_short,
            connect_failed,
            evicted,
            samples,
        } = other;
        self.connections += connections;
        self.runs += runs;
        self.expected += expected;
        self.unexpected += unexpected;
        self.cut_short += cut_short;
        self.connect_failed += connect_failed;
        self.evicted += evicted;
        let room = SAMPLES.saturating_sub(self.samples.len());
        self.samples.extend(samples.iter().take(room).cloned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for kind in FaultKind::ALL {
            assert_eq!(kind.name().parse::<FaultKind>(), Ok(kind));
            assert_eq!(FaultKind::ALL[kind.index()], kind);
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.name()));
            assert_eq!(serde_json::from_str::<FaultKind>(&json).unwrap(), kind);
        }
        assert!("bogus"
            .parse::<FaultKind>()
            .unwrap_err()
            .contains("halfclose"));
    }
}
