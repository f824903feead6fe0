//! CloseReason: why the server closed a connection, for logs and counters.

use std::fmt;
use std::io;

/// Why a connection was closed. Every close has exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer closed its write side and every reply owed was written.
    Eof,
    /// No progress for the idle timeout.
    Idle,
    /// The peer reset the connection or the pipe broke.
    Reset,
    /// Some other I/O error on this connection.
    Error,
    /// A frame exceeded `--max-frame`: error line sent, lingering close.
    FrameTooLong,
    /// The server is shutting down.
    Shutdown,
    /// The buffer-memory budget was reached and this connection held the most.
    MemoryBudget,
    /// An operator closed it through the admin socket (`POST /connections/close`).
    Admin,
}

impl CloseReason {
    /// The reason for an I/O error on a connection.
    pub fn from_error(e: &io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::NotConnected => CloseReason::Reset,
            _ => CloseReason::Error,
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CloseReason::Eof => "eof",
            CloseReason::Idle => "idle",
            CloseReason::Reset => "reset",
            CloseReason::Error => "error",
            CloseReason::FrameTooLong => "frame-too-long",
            CloseReason::Shutdown => "shutdown",
            CloseReason::MemoryBudget => "memory-budget",
            CloseReason::Admin => "admin",
        })
    }
}

impl CloseReason {
    /// Every reason, in declaration order: one `tabecho_closed_total{reason}` series each,
    /// so a new reason is exported without touching the metrics code. Add a new variant
    /// here too: the exhaustive matches in [`CloseReason::label`] and `Stats::closed`
    /// fail to compile until it has a label and a counter, which is the reminder.
    pub const ALL: [CloseReason; 8] = [
        CloseReason::Eof,
        CloseReason::Idle,
        CloseReason::Reset,
        CloseReason::Error,
        CloseReason::FrameTooLong,
        CloseReason::Shutdown,
        CloseReason::MemoryBudget,
        CloseReason::Admin,
    ];

    /// The reason as a metric label value: `snake_case`, as Prometheus label values go.
    pub fn label(self) -> &'static str {
        match self {
            CloseReason::Eof => "eof",
            CloseReason::Idle => "idle",
            CloseReason::Reset => "reset",
            CloseReason::Error => "error",
            CloseReason::FrameTooLong => "frame_too_long",
            CloseReason::Shutdown => "shutdown",
            CloseReason::MemoryBudget => "memory_budget",
            CloseReason::Admin => "admin",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_a_distinct_label() {
        let mut labels: Vec<&str> = CloseReason::ALL.iter().map(|r| r.label()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), CloseReason::ALL.len());
    }
}
