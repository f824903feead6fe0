//! `tabecho serve`: parse the flags, run the server until SIGINT/SIGTERM.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use log::error;

use tabecho::addr::{parse_duration, ListenAddr};
use tabecho::config::{self, ServerConfig};
use tabecho::server::Server;

/// Flags of `tabecho serve`.
#[derive(Args)]
#[command(
    after_help = "Exit codes: 0 after a clean shutdown (SIGINT/SIGTERM); 1 when the \
address cannot be bound (in use, permission) or the poll fails; 2 on a bad command line \
(including a --max-buffer-memory too small for --high-water and --max-frame)."
)]
pub struct ServeArgs {
    /// Where to listen: host:port, [v6]:port, or unix:/path.
    #[arg(long, default_value = config::DEFAULT_LISTEN)]
    listen: ListenAddr,
    /// Close a connection after this long without progress (a frame received or reply
    /// bytes written): 2s, 250ms, 1m.
    #[arg(long, default_value = "2s", value_parser = parse_positive_duration)]
    idle_timeout: Duration,
    /// Longest frame answered, in bytes; a longer one gets an error and a close.
    #[arg(long, default_value_t = config::DEFAULT_MAX_FRAME)]
    max_frame: usize,
    /// Connections served at once [default: the descriptor limit less a reserve of 32].
    #[arg(long)]
    max_connections: Option<usize>,
    /// Pending output (bytes) past which the server stops answering and reading a peer
    /// that does not read (resumes below half of it); also the largest read.
    #[arg(long, default_value_t = config::DEFAULT_HIGH_WATER)]
    high_water: usize,
    /// The most bytes all connection buffers may hold at once (partial frames, unanswered
    /// input, pending replies); at the budget the connections holding the most are closed
    /// with `error: server buffer memory exhausted`. At least twice one connection's worst
    /// case (see docs/PROTOCOL.md).
    #[arg(long, default_value_t = config::DEFAULT_MAX_BUFFER_MEMORY)]
    max_buffer_memory: usize,
    /// Log a line of counters this often (off by default).
    #[arg(long, value_parser = parse_duration)]
    stats_interval: Option<Duration>,
    /// Longest a shutdown waits for replies to drain.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    shutdown_grace: Duration,
}

pub fn run(args: ServeArgs) -> ExitCode {
    let mut config = ServerConfig::new(args.listen.clone());
    config.idle_timeout = args.idle_timeout;
    config.max_frame = args.max_frame;
    config.max_connections = args.max_connections;
    config.high_water = args.high_water;
    config.max_buffer_memory = args.max_buffer_memory;
    config.stats_interval = args.stats_interval;
    config.shutdown_grace = args.shutdown_grace;
    if let Err(e) = config.validate() {
        error!("{e}");
        return ExitCode::from(2);
    }
    let mut server = match Server::bind(config) {
        Ok(server) => server,
        Err(e) => {
            error!("cannot listen on {}: {e}", args.listen);
            return ExitCode::from(1);
        }
    };
    if let Err(e) = server.handle_signals() {
        error!("cannot install signal handlers: {e}");
        return ExitCode::from(1);
    }
    match server.run() {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            error!("poll failed: {e}");
            ExitCode::from(1)
        }
    }
}

/// A duration above zero: an idle timeout of zero would close every connection at once.
fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err("must be more than zero".to_string()),
        d => Ok(d),
    }
}
