//! systemd: socket activation (`sd_listen_fds(3)`) and readiness notification
//! (`sd_notify(3)`). Outside systemd (no `LISTEN_PID`, no `NOTIFY_SOCKET`) both do nothing.
//!
//! # Invariants
//! - [`listen_fds`] hands each inherited descriptor out at most once per process: it
//!   unsets `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES` whatever it finds, so a second
//!   call (or a child process) sees none.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

/// Set once notifications must stop (see [`stop_notifying`]).
static NOTIFY_STOPPED: AtomicBool = AtomicBool::new(false);

/// The listening sockets systemd passed to this process, in the order of the `.socket`
/// unit's `Listen*=` lines, each with its name (`LISTEN_FDNAMES`: the unit's
/// `FileDescriptorName=`, or what an upgrading tabecho named it); empty when `LISTEN_PID`
/// is unset or names another process.
/// Sets each descriptor close-on-exec, and unsets the `LISTEN_*` variables (as
/// `sd_listen_fds(1)` does) so children do not inherit them. Call it before spawning
/// threads: it changes the environment.
#[allow(unsafe_code)] // the crate's one exception: see the SAFETY comment below
pub fn listen_fds() -> io::Result<Vec<(OwnedFd, String)>> {
    let fds = sd_notify::listen_fds_with_names(true)?;
    Ok(fds
        // SAFETY: LISTEN_PID named this process, so systemd opened descriptors 3 to
        // 3 + LISTEN_FDS - 1 for it and nothing else in the process owns them; the
        // variables are now unset, so no later call wraps them a second time.
        .map(|(fd, name)| (unsafe { OwnedFd::from_raw_fd(fd) }, name))
        .collect())
}

/// Tells systemd the service is ready (`READY=1`); a no-op without `NOTIFY_SOCKET`.
pub fn notify_ready() {
    notify(sd_notify::NotifyState::Ready);
}

/// Tells systemd the service is stopping (`STOPPING=1`); a no-op without `NOTIFY_SOCKET`.
pub fn notify_stopping() {
    notify(sd_notify::NotifyState::Stopping);
}

/// Sends nothing more: a process started by an upgrade reports `READY=1` to the old
/// process's private socket, which is gone once the upgrade is over (until it takes the
/// service over, [`take_over_service`]); and a process whose connections have moved to
/// a new one is no longer the service's main process.
pub fn stop_notifying() {
    NOTIFY_STOPPED.store(true, Ordering::Release);
}

/// The service's notification socket, once this process has taken the service over from
/// the process it upgraded ([`take_over_service`]): notifications go there from then on.
static SERVICE_SOCKET: OnceLock<OsString> = OnceLock::new();

/// The environment variable that tells a process started by an upgrade where the
/// service manager's notification socket is (its own `NOTIFY_SOCKET` is the upgrading
/// process's private one, for its `READY=1`).
pub const SERVICE_NOTIFY_SOCKET_ENV: &str = "TABECHO_SERVICE_NOTIFY_SOCKET";

/// The service manager's notification socket of this process: its `NOTIFY_SOCKET`, or,
/// in a process started by an upgrade, the one the upgrading process had.
pub fn service_socket(upgraded: bool) -> Option<OsString> {
    if upgraded {
        std::env::var_os(SERVICE_NOTIFY_SOCKET_ENV)
    } else {
        std::env::var_os("NOTIFY_SOCKET")
    }
}

/// Makes this process the service's main process, at the end of an upgrade's hand-over:
/// sends `MAINPID=` (its pid) and `READY=1` to `socket` (the unit has `NotifyAccess=all`,
/// so systemd takes them from a process other than the main one), and sends every later
/// notification (`STOPPING=1`) there too.
pub fn take_over_service(socket: OsString) -> io::Result<()> {
    let message = format!("MAINPID={}\nREADY=1\n", std::process::id());
    send_to(&socket, &message)?;
    let _ = SERVICE_SOCKET.set(socket);
    NOTIFY_STOPPED.store(false, Ordering::Release);
    Ok(())
}

/// One datagram to a notification socket: a path, or `@name` for an abstract socket.
fn send_to(socket: &OsStr, message: &str) -> io::Result<()> {
    let datagram = UnixDatagram::unbound()?;
    let bytes = socket.as_encoded_bytes();
    #[cfg(target_os = "linux")]
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        datagram.send_to_addr(message.as_bytes(), &addr)?;
        return Ok(());
    }
    let _ = bytes;
    datagram.send_to(message.as_bytes(), socket)?;
    Ok(())
}

fn notify(state: sd_notify::NotifyState) {
    if NOTIFY_STOPPED.load(Ordering::Acquire) {
        return;
    }
    if let Some(socket) = SERVICE_SOCKET.get() {
        if let Err(e) = send_to(socket, &format!("{state}\n")) {
            log::warn!("systemd notification failed: {e}");
        }
        return;
    }
    // NOTIFY_SOCKET stays set: STOPPING=1 follows READY=1.
    if let Err(e) = sd_notify::notify(false, &[state]) {
        log::warn!("systemd notification failed: {e}");
    }
}
