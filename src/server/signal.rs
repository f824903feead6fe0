//! ShutdownSignals: SIGINT and SIGTERM as a poll event source.
//!
//! signal-hook's handler only writes to a pipe that the reactor polls, so nothing runs in
//! signal context but that write.

use std::io;

use mio::{Interest, Registry, Token};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

/// The signals that ask the server to stop.
pub struct ShutdownSignals {
    signals: Signals,
}

impl ShutdownSignals {
    /// Installs handlers for SIGINT and SIGTERM and registers them under `token`.
    pub fn register(registry: &Registry, token: Token) -> io::Result<Self> {
        let mut signals = Signals::new([SIGINT, SIGTERM])?;
        registry.register(&mut signals, token, Interest::READABLE)?;
        Ok(ShutdownSignals { signals })
    }

    /// Signals received since the last call (drains the pipe).
    pub fn pending(&mut self) -> usize {
        self.signals.pending().count()
    }
}
