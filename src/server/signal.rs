//! ServerSignals: SIGINT and SIGTERM (shut down) and, when upgrades are enabled, SIGUSR2
//! (upgrade in place) as a poll event source.
//!
//! signal-hook's handler only writes to a pipe that the reactor polls, so nothing runs in
//! signal context but that write.

use std::io;

use mio::{Interest, Registry, Token};
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR2};
use signal_hook_mio::v1_0::Signals;

/// The signals the server acts on.
pub struct ServerSignals {
    signals: Signals,
}

/// Signals received since the last look, by what they ask.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// SIGINT or SIGTERM: shut down.
    pub shutdown: usize,
    /// SIGUSR2: upgrade in place.
    pub upgrade: usize,
}

impl ServerSignals {
    /// Installs handlers for SIGINT and SIGTERM, and SIGUSR2 if `upgrade` (else its default
    /// action, ending the process, stays), and registers them under `token`.
    pub fn register(registry: &Registry, token: Token, upgrade: bool) -> io::Result<Self> {
        let mut signals = if upgrade {
            Signals::new([SIGINT, SIGTERM, SIGUSR2])?
        } else {
            Signals::new([SIGINT, SIGTERM])?
        };
        registry.register(&mut signals, token, Interest::READABLE)?;
        Ok(ServerSignals { signals })
    }

    /// Signals received since the last call (drains the pipe).
    pub fn pending(&mut self) -> Received {
        let mut received = Received::default();
        for signal in self.signals.pending() {
            if signal == SIGUSR2 {
                received.upgrade += 1;
            } else {
                received.shutdown += 1;
            }
        }
        received
    }
}
