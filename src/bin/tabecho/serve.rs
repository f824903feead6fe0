//! `tabecho serve`: parse the flags, take the socket systemd passed if any, start the
//! metrics endpoint if asked, run the server until SIGINT/SIGTERM.

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use log::{error, info, warn};

use tabecho::addr::{parse_duration, ListenAddr};
use tabecho::config::{self, ServerConfig};
use tabecho::metrics::MetricsServer;
use tabecho::server::Server;
use tabecho::systemd;

/// Flags of `tabecho serve`.
#[derive(Args)]
#[command(
    after_help = "Socket activation: without --listen, a listening socket passed by systemd \
(LISTEN_PID is this process, LISTEN_FDS >= 1) is served instead of the default address; with \
several, the first is served and the others closed, with a warning; with --listen, they are \
closed, with a warning. The LISTEN_* variables are unset either way. READY=1 and STOPPING=1 \
are sent when NOTIFY_SOCKET is set.

Exit codes: 0 after a clean shutdown (SIGINT/SIGTERM); 1 when the address cannot be bound \
(in use, permission), the socket systemd passed is unusable, the metrics address cannot be \
bound, or the poll fails; 2 on a bad command line (including a --max-buffer-memory too \
small for --high-water and --max-frame)."
)]
pub struct ServeArgs {
    /// Where to listen: host:port, [v6]:port, or unix:/path [default: the socket systemd
    /// passed, else 127.0.0.1:8085].
    #[arg(long)]
    listen: Option<ListenAddr>,
    /// Reactors (threads), each with its own poll, connections and timers: a number, or
    /// `auto` for the cores this process may use.
    #[arg(long, default_value = "1", value_parser = parse_threads)]
    threads: usize,
    /// Set SO_REUSEPORT on the TCP listener, so that several `tabecho serve --reuseport`
    /// processes share one port (the kernel spreads connections over them).
    #[arg(long)]
    reuseport: bool,
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
    /// Serve Prometheus metrics at http://ADDR/metrics (host:port; port 0 picks one) [default: off].
    #[arg(long, value_name = "ADDR", value_parser = parse_socket_addr)]
    metrics: Option<SocketAddr>,
}

pub fn run(args: ServeArgs) -> ExitCode {
    let default_listen = || {
        config::DEFAULT_LISTEN
            .parse()
            .expect("the default address parses")
    };
    let mut config = ServerConfig::new(args.listen.clone().unwrap_or_else(default_listen));
    config.threads = args.threads;
    config.reuse_port = args.reuseport;
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
    let Some(mut server) = bind(args.listen.is_none(), config) else {
        return ExitCode::from(1);
    };
    if let Err(e) = server.handle_signals() {
        error!("cannot install signal handlers: {e}");
        return ExitCode::from(1);
    }
    // Dropped when `run` returns: the endpoint lives exactly as long as the server.
    let _metrics = match args.metrics {
        None => None,
        Some(addr) => match MetricsServer::start(addr, server.snapshot_handles()) {
            Ok(metrics) => {
                info!("metrics on http://{}/metrics", metrics.local_addr());
                Some(metrics)
            }
            Err(e) => {
                error!("cannot serve metrics on {addr}: {e}");
                return ExitCode::from(1);
            }
        },
    };
    systemd::notify_ready();
    match server.run() {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            error!("poll failed: {e}");
            ExitCode::from(1)
        }
    }
}

/// `--threads`: a number from 1, or `auto` (the cores available to this process).
fn parse_threads(s: &str) -> Result<usize, String> {
    if s == "auto" {
        return Ok(std::thread::available_parallelism().map_or(1, |n| n.get()));
    }
    match s.parse::<usize>() {
        Ok(0) | Err(_) => Err(format!("{s}: a number of reactors from 1, or auto")),
        Ok(n) => Ok(n),
    }
}

/// A duration above zero: an idle timeout of zero would close every connection at once.
fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err("must be more than zero".to_string()),
        d => Ok(d),
    }
}

/// Binds the server: on the socket systemd passed when `--listen` was not given and there
/// is one, else on `config.listen` (closing any socket systemd passed, with a warning).
/// Logs one line and returns `None` on failure.
fn bind(listen_not_given: bool, config: ServerConfig) -> Option<Server> {
    // Taken even when --listen is given, so the LISTEN_* variables are unset and the
    // descriptors closed rather than inherited by children.
    let mut inherited = match systemd::listen_fds() {
        Ok(fds) => fds,
        Err(e) => {
            error!("socket activation: {e}");
            return None;
        }
    };
    if !listen_not_given && !inherited.is_empty() {
        warn!(
            "--listen given: closing the {} socket(s) systemd passed",
            inherited.len()
        );
        inherited.clear();
    }
    if inherited.len() > 1 {
        warn!(
            "systemd passed {} sockets; serving the first, closing the others",
            inherited.len()
        );
    }
    let Some(socket) = inherited.into_iter().next() else {
        let listen = config.listen.clone();
        return Server::bind(config)
            .map_err(|e| error!("cannot listen on {listen}: {e}"))
            .ok();
    };
    Server::from_systemd(config, socket)
        .map_err(|e| error!("cannot serve the socket systemd passed: {e}"))
        .ok()
}

/// `host:port` (a name is resolved, first address wins), for `--metrics`.
fn parse_socket_addr(s: &str) -> Result<SocketAddr, String> {
    s.to_socket_addrs()
        .map_err(|e| format!("{s}: not host:port ({e})"))?
        .next()
        .ok_or_else(|| format!("{s}: the name has no address"))
}
