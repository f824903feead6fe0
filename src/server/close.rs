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
        })
    }
}
