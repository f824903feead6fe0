//! The server: N share-nothing reactors (`--threads`, default 1), started, joined and
//! summed here; each reactor is the whole single-threaded loop of [`reactor`].
//!
//! ```text
//!   Server::bind ─┬─ TCP: one SO_REUSEPORT listener per reactor; the kernel spreads
//!                 │       new connections by a hash of their addresses
//!                 ├─ Unix, or the one socket systemd passed: reactor 0 accepts and
//!                 │       deals round-robin to the others (deal: channel + waker)
//!                 └─ Shared: connection count (and per source), buffer-budget leases,
//!                            shutdown and upgrade state
//!   Server::from_inherited ─ the sockets systemd or an upgrading process passed: N TCP
//!                    listeners on one address for N reactors are one each, as bound
//!   Server::run  ─── reactor 0 on this thread, the others on their own; joined;
//!                    their counters summed into one summary line
//!   SIGUSR2      ─── upgrade: a new process on the same sockets, then this one drains
//!                    (see [`upgrade`])
//! ```
//!
//! With one reactor nothing changes from the single-threaded design: one listener, no
//! dealer, the reactor on the calling thread. Nothing is shared on the path of a frame:
//! [`Shared`](shared::Shared) is touched on accept, on close, when a reactor's buffer
//! lease grows or shrinks by a mebibyte, and at shutdown.
//!
//! Why SO_REUSEPORT for TCP: the kernel balances with no lock and no hop between threads
//! (nginx `reuseport`); its hash ignores load, but over many connections the split is
//! even (measured in BENCHMARKS.md). Its trap, a closed listener resetting the
//! connections still queued on it, only bites at shutdown here, where every listener
//! closes anyway and what is queued is refused as with one listener. Unix sockets have
//! no such balancing (Linux refuses SO_REUSEPORT on them), so one reactor accepts and
//! hands off, as memcached and actix-server do.

// Every narrowing cast in the server is either checked (`try_from`, saturating) or
// allowed where it stands with its proven bound (issue 17): peer-driven sizes and
// operator-given durations must not wrap.
#![warn(clippy::cast_possible_truncation)]

mod admin_exchange;
mod client_names;
mod conn_id;
mod connection;
mod deal;
mod handover;
mod lifecycle;
mod listener;
mod reactor;
mod shared;
mod signal;
mod snapshot;
mod source;
mod source_table;
mod turn_budget;
mod upgrade;

use std::io;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use log::{info, warn};

pub use crate::counters::{CloseReason, Snapshot, Stats, TurnHistogram, TURN_BUCKET_BOUNDS_US};
pub use admin_exchange::AdminHandle;
pub use conn_id::{base_from_env as connection_id_base_from_env, ID_BASE_ENV};
pub use handover::Adopter;
#[cfg(feature = "fault-injection")]
pub use handover::FAULT_ENV as HANDOVER_FAULT_ENV;
pub use snapshot::SnapshotHandle;
pub use source::Source;
pub use source_table::SourceTable;
pub use upgrade::{
    without_listen, Relaunch, ADMIN_NAME, HANDOVER_NAME, METRICS_NAME, UPGRADED_FROM_ENV,
};

use crate::addr::ListenAddr;
use crate::config::{ServerConfig, FD_RESERVE};
use crate::size::Size;
use deal::Dealer;
use listener::Listener;
use reactor::{Reactor, Setup, MAX_CONNECTION_KEYS};
use shared::Shared;
use upgrade::Upgrader;

/// How long the stats line of a server with several reactors waits for their snapshots.
const STATS_SNAPSHOT_WAIT: Duration = Duration::from_secs(1);

/// Asks a running server to shut down (as SIGTERM does), from any thread.
#[derive(Clone)]
pub struct ShutdownHandle {
    shared: Arc<Shared>,
}

impl ShutdownHandle {
    /// Starts the graceful shutdown of every reactor. Returns at once; `Server::run`
    /// returns when done.
    pub fn shutdown(&self) {
        self.shared.shut_down(false);
    }
}

/// A bound, not yet running, tab-echo server of one or more reactors.
pub struct Server {
    /// The reactors; reactor 0 runs on the thread that calls [`Server::run`].
    reactors: Vec<Reactor>,
    local_addr: ListenAddr,
    /// Where the listeners came from, for the "listening on" line: empty when bound,
    /// ` (from systemd)`, ` (inherited from PID N)`.
    origin_note: String,
    /// A duplicate of every listener, in reactor order: what an upgrade hands over.
    listener_fds: Vec<std::os::fd::OwnedFd>,
    shared: Arc<Shared>,
    stats_interval: Option<Duration>,
    /// `--shutdown-grace`: also how long an upgrade's hand-over may take.
    shutdown_grace: Duration,
    /// A duplicate of the metrics listener, once served: what an upgrade hands over.
    metrics_fd: Option<std::os::fd::OwnedFd>,
    /// A duplicate of the admin listener, once served: what an upgrade hands over.
    admin_fd: Option<std::os::fd::OwnedFd>,
    /// The base of this process's connection ids (`conn_id`): 0, or what the process it
    /// upgrades gave it. An upgrade gives the next process the next base.
    connection_id_base: u64,
}

impl Server {
    /// Binds the listener(s) and raises the descriptor limit; does not serve yet.
    pub fn bind(config: ServerConfig) -> io::Result<Server> {
        validate(&config)?;
        let reuse_port = config.reuse_port || config.threads > 1;
        let first = Listener::bind(&config.listen, reuse_port)?;
        let local_addr = first.local_addr()?;
        let mut listeners = vec![first];
        if let ListenAddr::Tcp(_) = local_addr {
            // The others on the port the first one got (port 0 resolved).
            for _ in 1..config.threads {
                listeners.push(Listener::bind(&local_addr, true)?);
            }
        }
        Self::with_listeners(config, listeners, local_addr, String::new())
    }

    /// As [`Server::bind`], on the listening sockets systemd passed (socket activation,
    /// see `crate::systemd`) or the process this one upgrades (`upgraded_from`, its pid)
    /// instead of `config.listen`.
    ///
    /// When there are several and all are TCP listeners on one address (an upgrade's
    /// SO_REUSEPORT group), and as many as reactors, each reactor takes one, as if bound.
    /// Otherwise the first is served (with several reactors, reactor 0 accepts on it and
    /// hands off) and the others are closed with a warning.
    pub fn from_inherited(
        config: ServerConfig,
        sockets: Vec<std::os::fd::OwnedFd>,
        upgraded_from: Option<u32>,
    ) -> io::Result<Server> {
        validate(&config)?;
        let count = sockets.len();
        let mut sockets = sockets.into_iter();
        let first = sockets
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no socket was passed"))?;
        let first = Listener::from_systemd(first)?;
        let local_addr = first.local_addr()?;
        let mut listeners = vec![first];
        // The others, if they are all TCP listeners on the first one's address.
        let mut same_group = matches!(local_addr, ListenAddr::Tcp(_));
        for socket in sockets {
            if !same_group {
                break; // the rest are closed as they drop
            }
            match Listener::from_systemd(socket) {
                Ok(l @ Listener::Tcp(..)) if l.local_addr().ok().as_ref() == Some(&local_addr) => {
                    listeners.push(l)
                }
                _ => same_group = false,
            }
        }
        let from = match upgraded_from {
            Some(pid) => format!("PID {pid}"),
            None => "systemd".to_string(),
        };
        if count > 1 && !same_group {
            warn!("{from} passed {count} sockets; serving the first, closing the others");
            listeners.truncate(1);
        } else if count > 1 && count != config.threads {
            warn!(
                "{from} passed {count} listeners on {local_addr} for {} reactor(s); \
                 serving the first, closing the others",
                config.threads
            );
            listeners.truncate(1);
        }
        let origin_note = match upgraded_from {
            Some(pid) => format!(" (inherited from PID {pid})"),
            None => " (from systemd)".to_string(),
        };
        Self::with_listeners(config, listeners, local_addr, origin_note)
    }

    /// One reactor per listener when there is one for each; else reactor 0 gets the one
    /// listener and a dealer to the others. `origin_note` follows the address in the
    /// "listening on" line: where the sockets came from, if not bound here.
    fn with_listeners(
        config: ServerConfig,
        listeners: Vec<Listener>,
        local_addr: ListenAddr,
        origin_note: String,
    ) -> io::Result<Server> {
        let threads = config.threads;
        for listener in &listeners {
            listener.cap_socket_buffers(config.send_buffer, config.recv_buffer)?;
        }
        let listener_fds = listeners
            .iter()
            .map(Listener::try_clone_fd)
            .collect::<io::Result<_>>()?;
        let fd_limit = crate::fd_limit::raise().unwrap_or(1024);
        let max_connections = config
            .max_connections
            .unwrap_or_else(|| {
                let descriptors = fd_limit.saturating_sub(FD_RESERVE).max(1);
                usize::try_from(descriptors).unwrap_or(usize::MAX)
            })
            .min(MAX_CONNECTION_KEYS - 1);
        // Each reactor keeps a share leased for good: half the budget split evenly, and at
        // least one connection's worst case. The rest is leased as the reactors need it.
        // A reactor that cannot lease more closes its own largest holders, so the share
        // keeps a reactor with only small holders from closing them while another holds
        // the whole pool.
        let lease_floor = config
            .max_held_per_connection()
            .max(config.max_buffer_memory / (2 * threads));
        let shared = Shared::new(
            max_connections,
            config.max_connections_per_source,
            config.max_buffer_memory - threads * lease_floor,
        );
        let dealing = listeners.len() < threads;
        let mut inboxes = Vec::new();
        let mut senders = Vec::new();
        for _ in 1..threads {
            let (sender, inbox) = mpsc::channel();
            senders.push(sender);
            inboxes.push(inbox);
        }
        let (adoption_senders, adoptions): (Vec<_>, Vec<_>) =
            (0..threads).map(|_| mpsc::channel()).unzip();
        let mut adoptions = adoptions.into_iter();
        let mut listeners = listeners.into_iter();
        let mut inboxes = inboxes.into_iter();
        let mut reactors = Vec::with_capacity(threads);
        for id in 0..threads {
            let (listener, inbox) = if dealing && id > 0 {
                (None, inboxes.next())
            } else {
                (listeners.next(), None)
            };
            reactors.push(Reactor::new(
                config.clone(),
                Setup {
                    id,
                    of: threads,
                    listener,
                    inbox,
                    adoptions: adoptions.next().expect("one adoption channel per reactor"),
                    shared: shared.clone(),
                    lease_floor,
                },
            )?);
        }
        let wakers: Vec<_> = reactors.iter().map(Reactor::waker).collect();
        if dealing {
            let mut targets = vec![None];
            targets.extend(
                senders
                    .into_iter()
                    .zip(wakers[1..].iter().cloned())
                    .map(Some),
            );
            reactors[0].set_dealer(Dealer::new(targets));
        }
        shared.set_accepting(reactors.iter().filter(|r| r.accepts()).count());
        shared.set_wakers(wakers);
        shared.set_adoptions(adoption_senders);
        Ok(Server {
            reactors,
            local_addr,
            origin_note,
            listener_fds,
            shared,
            stats_interval: config.stats_interval,
            shutdown_grace: config.shutdown_grace,
            metrics_fd: None,
            admin_fd: None,
            connection_id_base: 0,
        })
    }

    /// The address bound (with port 0 resolved).
    pub fn local_addr(&self) -> &ListenAddr {
        &self.local_addr
    }

    /// The connection limit in force, over all reactors.
    pub fn max_connections(&self) -> usize {
        self.shared.max_connections()
    }

    /// The number of reactors.
    pub fn threads(&self) -> usize {
        self.reactors.len()
    }

    /// Numbers the connections from `base` on (`server::conn_id`): what the process this
    /// one upgrades gave it ([`connection_id_base_from_env`]), so that no id of its
    /// lineage is given twice. Before [`Server::run`].
    pub fn set_connection_id_base(&mut self, base: u64) {
        self.connection_id_base = base;
        for reactor in &mut self.reactors {
            reactor.set_connection_id_base(base);
        }
    }

    /// A handle that starts the graceful shutdown from another thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            shared: self.shared.clone(),
        }
    }

    /// Handles for reading snapshots of each reactor from other threads (tests, the stats
    /// logger), reactor `i` at index `i`. The first call also starts timing turns.
    pub fn snapshot_handles(&mut self) -> Vec<SnapshotHandle> {
        self.reactors
            .iter_mut()
            .map(Reactor::snapshot_handle)
            .collect()
    }

    /// Serves the metrics endpoint (`GET /metrics`, `GET /ready`) on `addr` (port 0 picks
    /// one) from reactor 0's own poll: no thread of its own. Its pages hold every
    /// reactor's series, the others' gathered through their snapshots. Returns the address
    /// bound.
    pub fn serve_metrics(
        &mut self,
        addr: std::net::SocketAddr,
    ) -> io::Result<std::net::SocketAddr> {
        self.serve_metrics_on(std::net::TcpListener::bind(addr)?)
    }

    /// As [`Server::serve_metrics`], on a listener bound already: the one the process this
    /// one upgrades handed over (so an upgrade never needs the port free).
    pub fn serve_metrics_on(
        &mut self,
        listener: std::net::TcpListener,
    ) -> io::Result<std::net::SocketAddr> {
        listener.set_nonblocking(true)?;
        self.metrics_fd = Some(std::os::fd::OwnedFd::from(listener.try_clone()?));
        let siblings = self.reactors[1..]
            .iter_mut()
            .map(Reactor::snapshot_handle)
            .collect();
        self.reactors[0].serve_metrics_on(mio::net::TcpListener::from_std(listener), siblings)
    }

    /// Serves the admin endpoint (`GET /connections`, `POST /connections/close`:
    /// docs/PROTOCOL.md, "Admin") on a new Unix socket at `path`, mode 0600 from the
    /// moment it exists ([`Listener::bind_private_unix`]), from reactor 0's own poll: the
    /// other reactors answer their parts through their admin handles. Only our uid and
    /// root are served (others get 403).
    pub fn serve_admin(&mut self, path: &std::path::Path) -> io::Result<()> {
        self.serve_admin_on(Listener::bind_private_unix(path)?)
    }

    /// As [`Server::serve_admin`], on the admin socket the process this one upgrades handed
    /// over (`fd`, named [`ADMIN_NAME`]): the same socket, its file left as it is.
    pub fn serve_admin_inherited(&mut self, fd: std::os::fd::OwnedFd) -> io::Result<()> {
        match Listener::from_systemd(fd)? {
            listener @ Listener::Unix(..) => self.serve_admin_on(listener),
            Listener::Tcp(_) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the admin socket handed over is not a Unix socket",
            )),
        }
    }

    fn serve_admin_on(&mut self, listener: Listener) -> io::Result<()> {
        self.admin_fd = Some(listener.try_clone_fd()?);
        let siblings = self.reactors[1..]
            .iter_mut()
            .map(Reactor::admin_handle)
            .collect();
        self.reactors[0].serve_admin_on(listener, siblings)
    }

    /// Prepares to adopt the connections of the process this one upgrades, sent over
    /// `channel` (the descriptor it passed as `tabecho-handover`): says which hand-over
    /// version this binary speaks, now, before `READY=1`. [`Adopter::start`] then receives
    /// them on a thread of its own while the reactors serve (docs/PROTOCOL.md "Upgrade in
    /// place").
    pub fn adopt_from(&self, channel: std::os::unix::net::UnixStream) -> io::Result<Adopter> {
        Adopter::hello(channel, self.shared.clone())
    }

    /// Makes SIGINT and SIGTERM start the graceful shutdown of every reactor (a second
    /// one ends it at once), and, with `upgrade`, SIGUSR2 an upgrade in place: `upgrade`
    /// says how to start the new process (docs/PROTOCOL.md "Upgrade in place"). Reactor 0
    /// receives them. Call it after [`Server::serve_metrics`] and [`Server::serve_admin`]:
    /// an upgrade hands those listeners over too.
    pub fn handle_signals(&mut self, upgrade: Option<Relaunch>) -> io::Result<()> {
        let fds = std::mem::take(&mut self.listener_fds);
        let metrics = self.metrics_fd.take();
        let admin = self.admin_fd.take();
        let grace = self.shutdown_grace;
        let next_id_base = conn_id::next_base(self.connection_id_base);
        let upgrader = upgrade.map(|relaunch| {
            Upgrader::new(
                relaunch,
                fds,
                upgrade::Endpoints { metrics, admin },
                grace,
                next_id_base,
                self.shared.clone(),
            )
        });
        self.reactors[0].handle_signals(upgrader)
    }

    /// Serves until shut down; returns the counters summed over the reactors and logs
    /// them as one summary line. Only a failure of a poll itself, or a reactor's panic, is
    /// an error (the first one met): a connection's errors close that connection.
    pub fn run(mut self) -> io::Result<Stats> {
        // Only an upgrade uses them, and reactor 0 has its own duplicates if enabled: the
        // sockets must close when the reactors' listeners do.
        self.listener_fds.clear();
        self.metrics_fd = None;
        self.admin_fd = None;
        let from = &self.origin_note;
        let threads = self.reactors.len();
        info!("listening on {}{from}", self.local_addr);
        if threads > 1 {
            let how = if self.reactors.iter().filter(|r| r.accepts()).count() == threads {
                "one SO_REUSEPORT listener each"
            } else {
                "reactor 0 accepts and hands off"
            };
            info!("serving with {threads} reactors ({how})");
        }
        let stats_logger = match (self.stats_interval, threads > 1) {
            (Some(every), true) => Some(self.start_stats_logger(every)?),
            _ => None,
        };
        let mut reactors = std::mem::take(&mut self.reactors).into_iter();
        let first = reactors.next().expect("a server has a reactor");
        let others: Vec<_> = reactors
            .enumerate()
            .map(|(i, reactor)| {
                let shared = self.shared.clone();
                thread::Builder::new()
                    .name(format!("reactor-{}", i + 1))
                    .spawn(move || run_guarded(&shared, || reactor.run()))
            })
            .collect::<io::Result<_>>()?;
        let mut result = run_guarded(&self.shared, || first.run());
        if result.is_err() {
            // This reactor's poll failed, or it panicked: stop the others too.
            self.shared.shut_down(true);
        }
        let mut total = result.as_ref().cloned().unwrap_or_default();
        for handle in others {
            let ended = handle
                .join()
                .unwrap_or_else(|panic| Err(panicked(panic.as_ref())));
            match ended {
                Ok(stats) => total.add(&stats),
                Err(e) => {
                    self.shared.shut_down(true);
                    if result.is_ok() {
                        result = Err(e);
                    }
                }
            }
        }
        drop(stats_logger);
        result?;
        // Every reactor has ended and dropped its inbox: every admission, served or still
        // in a channel, has been released, or a source would have been locked out.
        debug_assert_eq!(
            (self.shared.connections_open(), self.shared.sources_open()),
            (0, 0),
            "connections and sources still counted open after every reactor ended"
        );
        info!("shutdown: {total}");
        Ok(total)
    }

    /// With several reactors, a thread that logs the summed counters every `every`
    /// (each reactor logs its own at debug); it ends with the server.
    fn start_stats_logger(&mut self, every: Duration) -> io::Result<StatsLogger> {
        let handles = self.snapshot_handles();
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = thread::Builder::new().name("stats".into()).spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                let snapshots: Option<Vec<Snapshot>> = handles
                    .iter()
                    .map(|h| h.snapshot(STATS_SNAPSHOT_WAIT))
                    .collect();
                let Some(snapshots) = snapshots else {
                    warn!("stats: a reactor did not answer within 1 s");
                    continue;
                };
                let mut total = Stats::default();
                let (mut open, mut buffered) = (0, 0);
                for s in &snapshots {
                    total.add(&s.stats);
                    open += s.connections_open;
                    buffered += s.buffered_bytes;
                }
                let buffered = Size(usize::try_from(buffered).unwrap_or(usize::MAX));
                info!("stats: {open} connections open, {buffered} buffered; {total}");
            }
        })?;
        Ok(StatsLogger {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

/// Runs one reactor to its end. A panic in it (a bug) becomes an error and stops every
/// reactor at once, as a second SIGTERM does: the server exits 1 (and systemd's
/// `Restart=on-failure` starts it again) rather than serve on without part of itself,
/// its connections gone and its admissions never given back. The panic's message has
/// gone to stderr through the panic hook.
fn run_guarded(shared: &Shared, run: impl FnOnce() -> io::Result<Stats>) -> io::Result<Stats> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).unwrap_or_else(|panic| {
        shared.shut_down(true);
        Err(panicked(panic.as_ref()))
    })
}

/// The error a reactor's panic becomes, with its message when it has one.
fn panicked(payload: &(dyn std::any::Any + Send)) -> io::Error {
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str));
    match message {
        Some(message) => io::Error::other(format!("a reactor panicked: {message}")),
        None => io::Error::other("a reactor panicked"),
    }
}

/// The thread of [`Server::start_stats_logger`]; stopped and joined on drop.
struct StatsLogger {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Drop for StatsLogger {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The configuration's own checks, as an `InvalidInput` error.
fn validate(config: &ServerConfig) -> io::Result<()> {
    config
        .validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reactor_that_panics_is_an_error_and_stops_the_others_at_once() {
        let shared = Shared::new(1, None, 0);
        let result = run_guarded(&shared, || panic!("a bug in a reactor (this test's)"));
        let error = result.unwrap_err().to_string();
        assert_eq!(
            error,
            "a reactor panicked: a bug in a reactor (this test's)"
        );
        assert!(
            shared.forced(),
            "the other reactors are told to close at once"
        );

        let shared = Shared::new(1, None, 0);
        let stats = Stats {
            frames: 7,
            ..Stats::default()
        };
        assert_eq!(run_guarded(&shared, || Ok(stats.clone())).unwrap(), stats);
        assert!(!shared.forced());
    }
}
