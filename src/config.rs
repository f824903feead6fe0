//! ServerConfig: every tunable of the server, with its documented default.

use std::time::Duration;

use crate::addr::ListenAddr;

/// The original Go example's address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8085";
/// The original's `SetReadDeadline(2 * time.Second)`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(2);
/// 64 KiB, as Redis's inline-command limit: large enough for any sane message, small
/// enough that a connection's memory stays bounded.
pub const DEFAULT_MAX_FRAME: usize = 64 * 1024;
/// Pending output past which the server stops reading from a peer that does not read.
pub const DEFAULT_HIGH_WATER: usize = 1024 * 1024;
/// How long a shutdown waits for replies to drain before it closes what is left.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// How long a closing connection (frame too long, shutdown) discards input after its
/// write side is shut, so the peer reads the last bytes instead of a reset.
pub const DEFAULT_LINGER: Duration = Duration::from_secs(1);
/// File descriptors kept back from `--max-connections`' default for the listener, the
/// poll instance, logs and the accepts in flight, so the polite limit fires before EMFILE.
pub const FD_RESERVE: u64 = 32;

/// How the server runs. Build with [`ServerConfig::new`] and adjust fields.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen.
    pub listen: ListenAddr,
    /// A connection with no progress (frame received, reply bytes written) for this long is closed.
    pub idle_timeout: Duration,
    /// The longest frame answered; longer ones get an error and a close.
    pub max_frame: usize,
    /// Connections served at once; `None` means the descriptor limit less [`FD_RESERVE`].
    pub max_connections: Option<usize>,
    /// Pending output at which reading from a connection pauses (resumes below half).
    pub high_water: usize,
    /// Log a line of counters this often, if set.
    pub stats_interval: Option<Duration>,
    /// Longest a shutdown waits for replies to drain.
    pub shutdown_grace: Duration,
    /// Longest a closing connection discards input after shutting its write side.
    pub linger: Duration,
}

impl ServerConfig {
    /// The defaults, listening on `listen`.
    pub fn new(listen: ListenAddr) -> Self {
        ServerConfig {
            listen,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_frame: DEFAULT_MAX_FRAME,
            max_connections: None,
            high_water: DEFAULT_HIGH_WATER,
            stats_interval: None,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            linger: DEFAULT_LINGER,
        }
    }
}
