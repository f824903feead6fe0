//! `tabecho serve`: parse the flags, take the sockets systemd (or an upgrading process)
//! passed if any, start the metrics endpoint if asked, run the server until SIGINT/SIGTERM;
//! SIGUSR2 upgrades in place.

use clap::Args;
use log::{error, info, warn};
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::process::ExitCode;

use tabecho::addr::{DurationArg, ListenAddr};
use tabecho::cgroup::Limits;
use tabecho::config::{self, parse_connection_bytes, ServerConfig};
use tabecho::proxy_protocol::TrustedProxies;
use tabecho::server::{
    Relaunch, Server, Stats, ADMIN_NAME, HANDOVER_NAME, METRICS_NAME, UPGRADED_FROM_ENV,
};
use tabecho::size::Size;
use tabecho::sizing::{self, Choice};
use tabecho::systemd;

use crate::conns::AdminSocket;

/// Flags of `tabecho serve`.
#[derive(Args)]
#[command(
    after_help = "Socket activation: without --listen, a listening socket passed by systemd \
(LISTEN_PID is this process, LISTEN_FDS >= 1) is served instead of the default address; with \
several, the first is served and the others closed, with a warning, unless they are all TCP \
listeners on the first one's address, one per reactor (as an upgrade passes them); with \
--listen, they are closed, with a warning. The LISTEN_* variables are unset either way. READY=1 and STOPPING=1 \
are sent when NOTIFY_SOCKET is set.

Upgrade in place: SIGUSR2 starts the binary now at the path this process was started from, \
with the same arguments but --listen, on the very listening sockets (LISTEN_FDS, and the \
metrics and admin listeners); once it reports READY=1 this process stops accepting, moves every open \
connection to it with what it had in flight (no client notices), and exits 0. A binary \
without the hand-over gets a drain instead (connections served until idle or \
--shutdown-grace ends). If the new process fails, or dies during the move, this one keeps \
serving. Under systemd the new process reports MAINPID= (systemctl reload is the upgrade).

Sizes (SIZE) are a number of bytes with an optional K, M or G, no space, in any case: 65536, \
64K, 256MiB, 1GiB. Units are binary however written: K = KB = KiB = 1024, M = 1024K, \
G = 1024M.

Exit codes: 0 after a clean shutdown (SIGINT/SIGTERM); 1 when the address cannot be bound \
(in use, permission), the socket systemd passed is unusable, the metrics address or the admin \
socket cannot be bound, the poll fails, or a reactor panicked (a bug); 2 on a bad command line, naming the \
flag: a value out of its bounds (sizes above 1 GiB, durations above 365 days), or a \
--max-buffer-memory too small for --threads, --high-water and --max-frame."
)]
pub struct ServeArgs {
    /// Where to listen: host:port, [v6]:port, or unix:/path [default: the socket systemd
    /// passed, else 127.0.0.1:8085].
    #[arg(long)]
    listen: Option<ListenAddr>,
    /// Reactors (threads), each with its own poll, connections and timers: a number, or
    /// `auto` for the CPUs this process may use (its affinity mask, and no more than its
    /// cgroup's CPU quota in whole CPUs, rounded down, at least 1).
    #[arg(long, value_name = "N|auto", default_value_t = Threads::Count(config::DEFAULT_THREADS),
          value_parser = parse_threads)]
    threads: Threads,
    /// Set SO_REUSEPORT on the TCP listener, so that several `tabecho serve --reuseport`
    /// processes share one port (the kernel spreads connections over them).
    #[arg(long)]
    reuseport: bool,
    /// Close a connection after this long without progress (a frame received or reply
    /// bytes written): 2s, 250ms, 1m; at most 365 days.
    #[arg(long, value_name = "DUR", default_value_t = DurationArg(config::DEFAULT_IDLE_TIMEOUT),
          value_parser = parse_positive_duration)]
    idle_timeout: DurationArg,
    /// Longest frame answered (at most 1GiB); a longer one gets an error and a close.
    #[arg(long, value_name = "SIZE", default_value_t = Size(config::DEFAULT_MAX_FRAME),
          value_parser = parse_connection_bytes)]
    max_frame: Size,
    /// Connections served at once [default: the descriptor limit less a reserve of 32].
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// Connections one source may have open at once: an IPv4 address, an IPv6 network
    /// (--source-prefix-v6), a Unix peer's uid. One more gets `error: too many connections
    /// from your address`. Off unless given, as in nginx and HAProxy: clients behind one
    /// NAT share an address [default: off]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_connections_per_source: Option<u32>,
    /// The leading bits of an IPv6 address that name its source for
    /// --max-connections-per-source (0 to 128): 64 counts a subscriber's /64 as one.
    #[arg(long, value_name = "BITS", default_value_t = config::DEFAULT_SOURCE_PREFIX_V6,
          value_parser = clap::value_parser!(u8).range(0..=128))]
    source_prefix_v6: u8,
    /// Peers trusted to begin each connection with a PROXY protocol header (v1 or v2)
    /// naming the real client, as HAProxy's `send-proxy-v2` does: addresses and networks
    /// (10.0.0.5, 10.0.0.0/8, ::1) and `unix` (every peer on a Unix socket), separated by
    /// commas. The real client then counts for --max-connections-per-source and in the
    /// logs. Other peers' bytes are frames, never a header [default: off]
    #[arg(long, value_name = "CIDR,...")]
    proxy_protocol_from: Option<TrustedProxies>,
    /// How long a trusted peer has to send its whole PROXY header; then it is closed.
    #[arg(long, value_name = "DUR",
          default_value_t = DurationArg(config::DEFAULT_PROXY_PROTOCOL_TIMEOUT),
          value_parser = parse_positive_duration)]
    proxy_protocol_timeout: DurationArg,
    /// Pending output (at most 1GiB) past which the server stops answering and reading a
    /// peer that does not read (resumes below half of it); also the largest read.
    #[arg(long, value_name = "SIZE", default_value_t = Size(config::DEFAULT_HIGH_WATER),
          value_parser = parse_connection_bytes)]
    high_water: Size,
    /// The most bytes all connection buffers may hold at once (partial frames, unanswered
    /// input, pending replies, and the kernel queues of connections whose sockets refuse
    /// replies); at the budget the connections holding the most are closed with `error:
    /// server buffer memory exhausted`. At least (--threads + 1) times one connection's
    /// worst case (see docs/PROTOCOL.md, "Buffer memory budget"; in a container,
    /// docs/OPERATIONS.md, "Containers and memory limits"). The start-up log says what
    /// was chosen and where from [default: 256MiB, or 40% of the cgroup's memory limit
    /// if less]
    #[arg(long, value_name = "SIZE")]
    max_buffer_memory: Option<Size>,
    /// SO_SNDBUF of every accepted TCP connection (at most 1GiB; the kernel doubles it):
    /// what one peer that does not read can pin in the kernel's send queue. 0: the
    /// kernel's autotuning, up to net.ipv4.tcp_wmem's maximum (see docs/PROTOCOL.md,
    /// "Kernel socket buffers").
    #[arg(long, value_name = "SIZE", default_value_t = Size(config::DEFAULT_SEND_BUFFER),
          value_parser = parse_connection_bytes)]
    sndbuf: Size,
    /// SO_RCVBUF of every accepted TCP connection (at most 1GiB; the kernel doubles it):
    /// what one peer the server has stopped reading can pin in the kernel's receive queue.
    /// 0: the kernel's autotuning, up to net.ipv4.tcp_rmem's maximum.
    #[arg(long, value_name = "SIZE", default_value_t = Size(config::DEFAULT_RECV_BUFFER),
          value_parser = parse_connection_bytes)]
    rcvbuf: Size,
    /// Log a line of counters this often (at most 365 days) [default: off].
    #[arg(long, value_name = "DUR")]
    stats_interval: Option<DurationArg>,
    /// Longest a shutdown waits for replies to drain (at most 365 days).
    #[arg(long, value_name = "DUR", default_value_t = DurationArg(config::DEFAULT_SHUTDOWN_GRACE))]
    shutdown_grace: DurationArg,
    /// Longest a closing connection (after an error line such as a frame too long, or at
    /// the end of an upgrade's drain) discards input after its write side is shut, so the
    /// peer reads the last bytes instead of a reset (more than zero, at most 365 days).
    #[arg(long, value_name = "DUR", default_value_t = DurationArg(config::DEFAULT_LINGER),
          value_parser = parse_positive_duration)]
    linger: DurationArg,
    /// Serve Prometheus metrics at http://ADDR/metrics (host:port; port 0 picks one) [default: off].
    #[arg(long, value_name = "ADDR", value_parser = tabecho::addr::parse_tcp_addr)]
    metrics: Option<SocketAddr>,
    /// Serve the admin endpoint on a Unix socket at PATH, created mode 0600: `tabecho conns`
    /// lists the connections (who holds the memory) and closes them by filter. Only this
    /// process's user and root may use it; anyone else who reaches it gets 403
    /// [default: off].
    #[arg(long, value_name = "unix:PATH")]
    admin: Option<AdminSocket>,
    /// Once listening, write the bound addresses to descriptor FD (left open by the
    /// parent, 3 or above), one per line, and close it: the listening address as --listen
    /// takes it, then with --metrics http://ADDR/metrics. Not passed on to an upgrade.
    #[arg(long, value_name = "FD")]
    ready_fd: Option<i32>,
    /// At a clean shutdown, write the summary's counters to PATH as one JSON object (the
    /// names of the "shutdown:" line's counters; accept_paused_time in seconds).
    #[arg(long, value_name = "PATH")]
    summary_json: Option<std::path::PathBuf>,
}

/// `--threads`: a number of reactors, or `auto`, sized at start ([`sizing::reactors`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Threads {
    /// This many.
    Count(usize),
    /// The CPUs this process may use, within its cgroup's CPU quota.
    Auto,
}

impl std::fmt::Display for Threads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Threads::Count(n) => write!(f, "{n}"),
            Threads::Auto => f.write_str("auto"),
        }
    }
}

/// The values sized at start from where the server runs, to log once it listens.
struct StartSizing {
    /// `--threads auto`'s count, when asked for.
    threads: Option<Choice>,
    /// The buffer budget, given or sized.
    budget: Choice,
}

impl StartSizing {
    /// The start-up lines: what was chosen and where from, and a warning for what is amiss.
    fn log(&self) {
        if let Some(threads) = &self.threads {
            let n = threads.value;
            info!(
                "{n} reactor{} ({})",
                if n == 1 { "" } else { "s" },
                threads.from
            );
            if let Some(w) = &threads.warning {
                warn!("{w}");
            }
        }
        let budget = &self.budget;
        info!(
            "buffer memory budget {} ({})",
            sizing::size(budget.value as u64),
            budget.from
        );
        if let Some(w) = &budget.warning {
            warn!("{w}");
        }
    }
}

impl ServeArgs {
    /// The server's configuration, with `--threads auto` and the buffer budget's default
    /// sized from `limits` (this process's cgroup's) and the CPUs it may use; and what
    /// was sized, to log. Both structs are written out field by field (no `..`), so a flag
    /// added to `ServeArgs`, or a field added to `ServerConfig`, fails to compile here
    /// until it is wired; `metrics` and `admin` are not the config's, `run` serves them.
    fn config(&self, limits: &Limits) -> (ServerConfig, StartSizing) {
        let ServeArgs {
            listen,
            threads,
            reuseport,
            idle_timeout,
            max_frame,
            max_connections,
            max_connections_per_source,
            source_prefix_v6,
            proxy_protocol_from,
            proxy_protocol_timeout,
            high_water,
            max_buffer_memory,
            sndbuf,
            rcvbuf,
            stats_interval,
            shutdown_grace,
            linger,
            metrics: _,
            admin: _,
            ready_fd: _,
            summary_json: _,
        } = self;
        let listen = listen.clone().unwrap_or_else(|| {
            config::DEFAULT_LISTEN
                .parse()
                .expect("the default address parses")
        });
        let (threads, auto) = match *threads {
            Threads::Count(n) => (n, None),
            Threads::Auto => {
                let (cpus, from) = sizing::cpus_allowed();
                let auto = sizing::reactors(cpus, from, &limits.cpu);
                (auto.value, Some(auto))
            }
        };
        let mut config = ServerConfig {
            listen,
            threads,
            reuse_port: *reuseport,
            idle_timeout: idle_timeout.0,
            max_frame: max_frame.0,
            max_connections: *max_connections,
            max_connections_per_source: *max_connections_per_source,
            source_prefix_v6: *source_prefix_v6,
            proxy_protocol_from: proxy_protocol_from.clone(),
            proxy_protocol_timeout: proxy_protocol_timeout.0,
            high_water: high_water.0,
            // Sized below, once the reactors are known.
            max_buffer_memory: config::DEFAULT_MAX_BUFFER_MEMORY,
            stats_interval: stats_interval.map(Into::into),
            shutdown_grace: shutdown_grace.0,
            linger: linger.0,
            send_buffer: sndbuf.0,
            recv_buffer: rcvbuf.0,
        };
        let least = config.least_buffer_memory().unwrap_or(0);
        let budget = sizing::buffer_budget(max_buffer_memory.map(|s| s.0), &limits.memory, least);
        config.max_buffer_memory = budget.value;
        (
            config,
            StartSizing {
                threads: auto,
                budget,
            },
        )
    }
}

pub fn run(args: ServeArgs) -> ExitCode {
    // Adopted first, before any descriptor is opened or systemd's are taken.
    let ready = match args.ready_fd.map(adopt_ready_fd).transpose() {
        Ok(ready) => ready,
        Err(e) => {
            error!("--ready-fd: {e}");
            return ExitCode::from(2);
        }
    };
    // Resolved now: on Linux a file later replaced at this path is what an upgrade starts.
    let relaunch = relaunch();
    let (config, sized) = args.config(&Limits::of_this_process());
    if let Err(e) = config.validate() {
        error!("{e}");
        return ExitCode::from(2);
    }
    let Some((mut server, upgraded_from, passed)) = bind(args.listen.is_none(), config) else {
        return ExitCode::from(1);
    };
    // After an upgrade, the ids the old process gave (and its connections keep) are not
    // given again.
    server.set_connection_id_base(tabecho::server::connection_id_base_from_env());
    // Once bound: a server that cannot start says only why.
    sized.log();
    // Served by reactor 0's own loop: it lives exactly as long as the server. An upgrade
    // hands the very listener over, so the new process never needs the port free.
    let mut metrics = None;
    if let Some(addr) = args.metrics {
        let served = match passed.metrics {
            Some(fd) => server.serve_metrics_on(std::net::TcpListener::from(fd)),
            None => server.serve_metrics(addr),
        };
        match served {
            Ok(local) => {
                info!("metrics on http://{local}/metrics");
                metrics = Some(local);
            }
            Err(e) => {
                error!("cannot serve metrics on {addr}: {e}");
                return ExitCode::from(1);
            }
        }
    }
    // As the metrics endpoint: on reactor 0's loop, and handed over by an upgrade.
    if let Some(admin) = &args.admin {
        let served = match passed.admin {
            Some(fd) => server.serve_admin_inherited(fd),
            None => server.serve_admin(&admin.0),
        };
        match served {
            Ok(()) => info!("admin socket on {admin}"),
            Err(e) => {
                error!("cannot serve the admin socket {admin}: {e}");
                return ExitCode::from(1);
            }
        }
    }
    if let Err(e) = server.handle_signals(Some(relaunch)) {
        error!("cannot install signal handlers: {e}");
        return ExitCode::from(1);
    }
    // Before READY=1: the old process reads our hand-over version after it.
    let adopter = passed.handover.and_then(|channel| {
        server
            .adopt_from(std::os::unix::net::UnixStream::from(channel))
            .map_err(|e| {
                warn!(
                    "upgrade: cannot take the connections over ({e}); the old process drains them"
                )
            })
            .ok()
    });
    if let Some(ready) = ready {
        let mut text = format!("{}\n", server.local_addr());
        if let Some(metrics) = metrics {
            text.push_str(&format!("http://{metrics}/metrics\n"));
        }
        write_ready(ready, &text);
    }
    systemd::notify_ready();
    if upgraded_from.is_some() {
        // That READY=1 went to the upgrading process, whose socket is gone after it.
        systemd::stop_notifying();
    }
    if let Some(adopter) = adopter {
        if let Err(e) = adopter.start(systemd::service_socket(true)) {
            warn!("upgrade: cannot take the connections over ({e}); the old process drains them");
        }
    }
    match server.run() {
        Ok(stats) => {
            if let Some(path) = &args.summary_json {
                write_summary(path, &stats);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!("{e}");
            ExitCode::from(1)
        }
    }
}

/// `--ready-fd FD`: the descriptor as a file, refused when it is not open or is one of
/// the sockets systemd passed (they start at 3 too).
fn adopt_ready_fd(fd: i32) -> std::io::Result<std::fs::File> {
    let listen_fds = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<i32>().ok())
        .filter(|_| std::env::var("LISTEN_PID").ok() == Some(std::process::id().to_string()));
    if let Some(n) = listen_fds {
        if (3..3 + n).contains(&fd) {
            return Err(std::io::Error::other(format!(
                "{fd} is one of the {n} socket(s) systemd passed (3 to {})",
                2 + n
            )));
        }
    }
    systemd::adopt_ready_fd(fd)
}

/// Writes the readiness text and closes the descriptor; a reader gone only costs a warning
/// (the server serves all the same).
fn write_ready(mut ready: std::fs::File, text: &str) {
    use std::io::Write;
    if let Err(e) = ready.write_all(text.as_bytes()) {
        warn!("--ready-fd: {e}");
    }
}

/// `--summary-json`: the shutdown's counters as one JSON object, written whole (a
/// temporary file renamed over PATH) so a reader never sees half of it.
fn write_summary(path: &std::path::Path, stats: &Stats) {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let result = serde_json::to_string(stats)
        .map_err(std::io::Error::other)
        .and_then(|json| std::fs::write(&tmp, json + "\n"))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = result {
        error!("--summary-json {}: {e}", path.display());
    }
}

/// `--threads`: a number from 1, or `auto` (sized at start: [`sizing::reactors`]).
fn parse_threads(s: &str) -> Result<Threads, String> {
    if s == "auto" {
        return Ok(Threads::Auto);
    }
    match s.parse::<usize>() {
        Ok(0) | Err(_) => Err(format!("{s}: a number of reactors from 1, or auto")),
        Ok(n) => Ok(Threads::Count(n)),
    }
}

/// A duration above zero: an idle timeout of zero would close every connection at once,
/// a linger of zero would reset the peers it exists to spare.
fn parse_positive_duration(s: &str) -> Result<DurationArg, String> {
    match s.parse::<DurationArg>()? {
        d if d.0.is_zero() => Err("must be more than zero".to_string()),
        d => Ok(d),
    }
}

/// How an upgrade (SIGUSR2) starts the new process: this binary, resolved now, and these
/// arguments without `--listen`. Under a service manager the new process takes the
/// service over with `MAINPID=` once the connections have moved (docs/OPERATIONS.md).
fn relaunch() -> Relaunch {
    let mut relaunch = Relaunch::from_current_process().unwrap_or_else(|e| Relaunch {
        program: Default::default(),
        args: Vec::new(),
        refused: Some(format!("cannot resolve this binary's path: {e}")),
        service_notify: None,
    });
    // The new process does not have this one's readiness descriptor: its number there is
    // one of the sockets handed over (3 and up).
    relaunch.args = without_ready_fd(std::mem::take(&mut relaunch.args));
    relaunch
}

/// What an upgrading process passed besides its echo listeners.
#[derive(Default)]
struct Passed {
    /// Its metrics listener.
    metrics: Option<OwnedFd>,
    /// Its admin socket.
    admin: Option<OwnedFd>,
    /// The hand-over's socketpair: its connections come over it.
    handover: Option<OwnedFd>,
}

/// Binds the server: on the sockets systemd (or an upgrading process) passed when
/// `--listen` was not given and there are some, else on `config.listen` (closing any
/// socket passed, with a warning). Returns it with the pid of the process it upgrades,
/// if it does, and what that process passed besides listeners. Logs one line and returns
/// `None` on failure.
fn bind(listen_not_given: bool, config: ServerConfig) -> Option<(Server, Option<u32>, Passed)> {
    // Taken even when --listen is given, so the LISTEN_* variables are unset and the
    // descriptors closed rather than inherited by children.
    let named = match systemd::listen_fds() {
        Ok(fds) => fds,
        Err(e) => {
            error!("socket activation: {e}");
            return None;
        }
    };
    let mut passed = Passed::default();
    let mut inherited = Vec::with_capacity(named.len());
    for (fd, name) in named {
        match name.as_str() {
            METRICS_NAME => passed.metrics = Some(fd),
            ADMIN_NAME => passed.admin = Some(fd),
            HANDOVER_NAME => passed.handover = Some(fd),
            _ => inherited.push(fd),
        }
    }
    if !listen_not_given && !inherited.is_empty() {
        warn!(
            "--listen given: closing the {} socket(s) systemd passed",
            inherited.len()
        );
        inherited.clear();
    }
    if inherited.is_empty() {
        let listen = config.listen.clone();
        return Server::bind(config)
            .map_err(|e| error!("cannot listen on {listen}: {e}"))
            .ok()
            .map(|server| (server, None, Passed::default()));
    }
    let upgraded_from = std::env::var(UPGRADED_FROM_ENV)
        .ok()
        .and_then(|pid| pid.parse().ok());
    Server::from_inherited(config, inherited, upgraded_from)
        .map_err(|e| error!("cannot serve the socket(s) passed: {e}"))
        .ok()
        .map(|server| (server, upgraded_from, passed))
}

/// `args` without `--ready-fd FD` and `--ready-fd=FD`.
fn without_ready_fd(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let mut out = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "--ready-fd" {
            args.next();
        } else if !arg.as_encoded_bytes().starts_with(b"--ready-fd=") {
            out.push(arg);
        }
    }
    out
}
