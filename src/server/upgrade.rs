//! Upgrade in place (SIGUSR2): start the binary now on disk with the same arguments, hand
//! it this server's very listening sockets (`LISTEN_FDS`, descriptors 3..), wait for its
//! `READY=1`, then move every open connection to it (`super::handover`); a new process
//! that does not speak the move (an older binary) gets the drain instead: every reactor
//! stops accepting and serves out what it holds.
//!
//! ```text
//!   SIGUSR2 ─ reactor 0 ─ Shared::begin_upgrade ─ thread "upgrade":
//!     bind NOTIFY_SOCKET in a private temp dir
//!     spawn /bin/sh -c 'export LISTEN_PID=$$; exec "$0" "$@"' EXE ARGS (no --listen)
//!        with the listeners dup2'ed to 3.., LISTEN_FDS=N, TABECHO_UPGRADED_FROM=our pid
//!     wait for READY=1 (at most READY_WAIT; the child exiting first is a failure)
//!       ├─ ready, and its hello names our hand-over version → Shared::begin_move wakes
//!       │           every reactor, each parks its listener and sends its connections;
//!       │           "upgrade: PID N serves now; moving ..."; the Mover (handover.rs)
//!       ├─ ready, no hello (an older binary) → Shared::begin_upgrade_drain: every
//!       │           reactor drops its listener and drains; "upgrade: PID N serves now;
//!       │           ...: draining"
//!       └─ failed → "upgrade failed: ..."; kill and reap the child; keep serving
//! ```
//!
//! # Invariants
//! - An upgrade never leaves no one listening: this process closes its listeners only
//!   after the new process has said it serves them.
//! - The sockets handed over are the same sockets (not new binds): whatever is queued in
//!   them is accepted by one process or the other, never reset.
//! - At most one upgrade is in progress ([`Shared::begin_upgrade`]).

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use command_fds::{CommandFdExt, FdMapping};
use log::{info, warn};

use super::handover::{wire, Mover};
use super::shared::Shared;

/// The environment variable that tells a new process which process it upgrades (its
/// "listening on" line names it).
pub const UPGRADED_FROM_ENV: &str = "TABECHO_UPGRADED_FROM";

/// How long the new process has to report `READY=1`: generous for a busy machine (start-up
/// is milliseconds), short enough that a hung binary does not block upgrades for long.
const READY_WAIT: Duration = Duration::from_secs(10);
/// How often the wait for `READY=1` looks whether the new process has exited instead: its
/// exit sends nothing on the notify socket, so the wait wakes to ask.
const EXIT_CHECK_EVERY: Duration = Duration::from_millis(50);
/// How long the new process's hello may lag its `READY=1`: it is written before, so it is
/// there at once unless the new process is an older tabecho, which sends none.
const HELLO_WAIT: Duration = Duration::from_millis(200);
/// The first descriptor of socket activation (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: i32 = 3;
/// `LISTEN_FDNAMES` of an echo listener handed over.
pub const LISTENER_NAME: &str = "tabecho-listener";
/// `LISTEN_FDNAMES` of the metrics listener handed over.
pub const METRICS_NAME: &str = "tabecho-metrics";
/// `LISTEN_FDNAMES` of the admin listener handed over.
pub const ADMIN_NAME: &str = "tabecho-admin";
/// `LISTEN_FDNAMES` of the hand-over's socketpair (not a listener).
pub const HANDOVER_NAME: &str = "tabecho-handover";
/// Sets `LISTEN_PID` to the shell's own pid, which `exec` keeps for the binary: the
/// environment is set before the binary starts, with no unsafe code between fork and exec.
const EXEC_WITH_LISTEN_PID: &str = r#"export LISTEN_PID=$$; exec "$0" "$@""#;

/// How to start the new process: the binary's path, resolved once at start-up (on Linux a
/// file replaced at that path is the new binary), and the arguments without `--listen`.
#[derive(Debug, Clone)]
pub struct Relaunch {
    /// The binary, as this process was started from it.
    pub program: PathBuf,
    /// The arguments after the program name, `--listen` removed.
    pub args: Vec<OsString>,
    /// Why upgrades are refused in this process, if they are.
    pub refused: Option<String>,
    /// The service manager's notification socket, if running under one: the new process
    /// reports `MAINPID=` there once the connections have moved.
    pub service_notify: Option<OsString>,
}

impl Relaunch {
    /// This process's binary (`std::env::current_exe`, resolved now) and arguments.
    pub fn from_current_process() -> io::Result<Relaunch> {
        let upgraded = std::env::var_os(UPGRADED_FROM_ENV).is_some();
        Ok(Relaunch {
            program: std::env::current_exe()?,
            args: without_listen(std::env::args_os().skip(1)),
            refused: None,
            service_notify: crate::systemd::service_socket(upgraded),
        })
    }
}

/// `args` without `--listen ADDR` and `--listen=ADDR`: the new process serves the sockets
/// it inherits, not a new bind.
pub fn without_listen(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == OsStr::new("--listen") {
            args.next();
            continue;
        }
        if arg.as_encoded_bytes().starts_with(b"--listen=") {
            continue;
        }
        out.push(arg);
    }
    out
}

/// The endpoints' listeners an upgrade hands over beside the echo listeners.
#[derive(Debug, Default)]
pub struct Endpoints {
    /// The metrics listener (`--metrics`).
    pub metrics: Option<OwnedFd>,
    /// The admin socket (`--admin`).
    pub admin: Option<OwnedFd>,
}

impl Endpoints {
    fn try_clone(&self) -> io::Result<Endpoints> {
        Ok(Endpoints {
            metrics: self.metrics.as_ref().map(OwnedFd::try_clone).transpose()?,
            admin: self.admin.as_ref().map(OwnedFd::try_clone).transpose()?,
        })
    }
}

/// Starts upgrades for one server: owned by reactor 0, which receives SIGUSR2.
pub struct Upgrader {
    relaunch: Relaunch,
    /// A duplicate of every listener, reactor 0's first: the descriptors the new process
    /// gets. Dropped with the upgrader when a shutdown or the upgrade's drain begins, so the
    /// sockets close when the reactors' own listeners do.
    sockets: Vec<OwnedFd>,
    /// Duplicates of the endpoints' listeners that are served: handed over too.
    endpoints: Endpoints,
    /// How long a hand-over may take (`--shutdown-grace`).
    grace: Duration,
    /// The base of the new process's connection ids (`conn_id::ID_BASE_ENV`).
    next_id_base: u64,
    shared: Arc<Shared>,
}

impl Upgrader {
    /// An upgrader handing `sockets` (duplicates of the listeners) and `endpoints` (of the
    /// endpoints' listeners) over when asked, and the connections within `grace`; the new
    /// process numbers its connections from `next_id_base`.
    pub fn new(
        relaunch: Relaunch,
        sockets: Vec<OwnedFd>,
        endpoints: Endpoints,
        grace: Duration,
        next_id_base: u64,
        shared: Arc<Shared>,
    ) -> Upgrader {
        Upgrader {
            relaunch,
            sockets,
            endpoints,
            grace,
            next_id_base,
            shared,
        }
    }

    /// Starts an upgrade on its own thread (the caller has won
    /// [`Shared::begin_upgrade`]); returns at once. Its end is logged, and a success
    /// reaches the reactors through [`Shared::begin_upgrade_drain`].
    pub fn start(&self) {
        if let Some(why) = &self.relaunch.refused {
            warn!("upgrade refused: {why}");
            self.shared.upgrade_failed();
            return;
        }
        let sockets: io::Result<Vec<OwnedFd>> =
            self.sockets.iter().map(|s| s.try_clone()).collect();
        let endpoints = self.endpoints.try_clone();
        let relaunch = self.relaunch.clone();
        let shared = self.shared.clone();
        let grace = self.grace;
        let next_id_base = self.next_id_base;
        let started = sockets.and_then(|sockets| {
            let endpoints = endpoints?;
            thread::Builder::new()
                .name("upgrade".into())
                .spawn(
                    move || match upgrade(&relaunch, sockets, endpoints, next_id_base) {
                        Ok((child, Some((channel, room)))) => {
                            let pid = child.id();
                            // The state first, then the line: a SIGUSR2 after the line must
                            // meet the move (the tests and operators act on the line).
                            let (to_mover, from_reactors) = mpsc::channel();
                            shared.begin_move(to_mover);
                            info!("upgrade: PID {pid} serves now; moving the connections to it");
                            let reactors = shared.reactors();
                            Mover::new(channel, room, shared, grace).run(
                                from_reactors,
                                reactors,
                                child,
                            );
                        }
                        Ok((child, None)) => {
                            let pid = child.id();
                            shared.begin_upgrade_drain();
                            info!(
                                "upgrade: PID {pid} serves now; it does not take connections \
                             (an older version?): draining"
                            );
                        }
                        Err(e) => {
                            warn!("upgrade failed: {e}; still serving");
                            shared.upgrade_failed();
                        }
                    },
                )
        });
        if let Err(e) = started {
            warn!("upgrade failed: {e}; still serving");
            self.shared.upgrade_failed();
        }
    }
}

/// Starts the new process on `sockets` (and the endpoints' listeners), its connection ids
/// from `next_id_base`, and waits for its `READY=1`; returns it, and the hand-over's
/// channel with the new process's room if it speaks our hand-over version; or why not
/// (then it has been killed and reaped).
fn upgrade(
    relaunch: &Relaunch,
    sockets: Vec<OwnedFd>,
    endpoints: Endpoints,
    next_id_base: u64,
) -> io::Result<(Child, Option<(UnixStream, usize)>)> {
    let dir = tempfile::Builder::new()
        .prefix("tabecho-upgrade-")
        .tempdir()?;
    let notify_path = dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path)?;
    notify.set_read_timeout(Some(EXIT_CHECK_EVERY))?;
    let count = sockets.len();
    let (mut channel, theirs) = UnixStream::pair()?;
    let mut names = vec![LISTENER_NAME; count];
    let mut passed = sockets;
    if let Some(metrics) = endpoints.metrics {
        passed.push(metrics);
        names.push(METRICS_NAME);
    }
    if let Some(admin) = endpoints.admin {
        passed.push(admin);
        names.push(ADMIN_NAME);
    }
    passed.push(OwnedFd::from(theirs));
    names.push(HANDOVER_NAME);
    let passed_count = passed.len();
    let mappings = passed
        .into_iter()
        .zip(LISTEN_FDS_START..)
        .map(|(parent_fd, child_fd)| FdMapping {
            parent_fd,
            child_fd,
        })
        .collect();
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(EXEC_WITH_LISTEN_PID)
        .arg(&relaunch.program)
        .args(&relaunch.args)
        .env("LISTEN_FDS", passed_count.to_string())
        .env("LISTEN_FDNAMES", names.join(":"))
        .env("NOTIFY_SOCKET", &notify_path)
        .env(UPGRADED_FROM_ENV, std::process::id().to_string())
        .env(super::conn_id::ID_BASE_ENV, next_id_base.to_string())
        .env_remove(crate::systemd::SERVICE_NOTIFY_SOCKET_ENV)
        .fd_mappings(mappings)
        .map_err(io::Error::other)?;
    if let Some(service) = &relaunch.service_notify {
        command.env(crate::systemd::SERVICE_NOTIFY_SOCKET_ENV, service);
    }
    let child = command.spawn();
    // The command holds our duplicates of the sockets until dropped: close them now.
    drop(command);
    let mut child = child.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot start {}: {e}", relaunch.program.display()),
        )
    })?;
    let pid = child.id();
    info!(
        "upgrade: started PID {pid} ({}) on {count} listening socket(s)",
        relaunch.program.display()
    );
    match wait_ready(&notify, &mut child) {
        Ok(()) => {
            let hello = read_hello(&mut channel);
            Ok((child, hello))
        }
        Err(e) => {
            // Still running (not ready in time): it must not serve half-started.
            let _ = child.kill();
            let _ = child.wait();
            Err(io::Error::new(e.kind(), format!("PID {pid}: {e}")))
        }
    }
}

/// The new process's hello, if it sent one of our version: the channel and its room.
fn read_hello(channel: &mut UnixStream) -> Option<(UnixStream, usize)> {
    channel.set_read_timeout(Some(HELLO_WAIT)).ok()?;
    let line = super::handover::read_hello_line(channel).ok()?;
    let room = wire::parse_hello(&line)?;
    let channel = channel.try_clone().ok()?;
    Some((channel, room))
}

/// Waits for `READY=1` on `notify`; fails if `child` exits first or [`READY_WAIT`] passes.
fn wait_ready(notify: &UnixDatagram, child: &mut Child) -> io::Result<()> {
    let deadline = Instant::now() + READY_WAIT;
    let mut buf = [0u8; 4096];
    loop {
        match notify.recv(&mut buf) {
            Ok(n) => {
                let message = String::from_utf8_lossy(&buf[..n]);
                if message.lines().any(|l| l.trim() == "READY=1") {
                    return Ok(());
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        if let Some(status) = child.try_wait()? {
            return Err(io::Error::other(format!(
                "the new process exited ({status}) before it was ready"
            )));
        }
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("not ready within {} s", READY_WAIT.as_secs()),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn listen_and_its_value_are_removed_in_both_spellings() {
        assert_eq!(
            without_listen(args(&[
                "serve",
                "--listen",
                "127.0.0.1:1",
                "--threads",
                "2",
                "--listen=unix:/x",
                "--idle-timeout",
                "1s"
            ])),
            args(&["serve", "--threads", "2", "--idle-timeout", "1s"])
        );
    }

    #[test]
    fn arguments_without_listen_are_kept_as_they_are() {
        let kept = args(&["serve", "--threads", "2", "--metrics", "127.0.0.1:0"]);
        assert_eq!(without_listen(kept.clone()), kept);
        assert_eq!(
            without_listen(args(&["serve", "--listen"])),
            args(&["serve"])
        );
    }
}
