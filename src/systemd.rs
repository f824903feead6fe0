//! systemd: socket activation (`sd_listen_fds(3)`) and readiness notification
//! (`sd_notify(3)`). Outside systemd (no `LISTEN_PID`, no `NOTIFY_SOCKET`) both do nothing.
//!
//! # Invariants
//! - [`listen_fds`] hands each inherited descriptor out at most once per process: it
//!   unsets `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES` whatever it finds, so a second
//!   call (or a child process) sees none.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once notifications must stop (see [`stop_notifying`]).
static NOTIFY_STOPPED: AtomicBool = AtomicBool::new(false);

/// The listening sockets systemd passed to this process, in the order of the `.socket`
/// unit's `Listen*=` lines; empty when `LISTEN_PID` is unset or names another process.
/// Sets each descriptor close-on-exec, and unsets the `LISTEN_*` variables (as
/// `sd_listen_fds(1)` does) so children do not inherit them. Call it before spawning
/// threads: it changes the environment.
#[allow(unsafe_code)] // the crate's one exception: see the SAFETY comment below
pub fn listen_fds() -> io::Result<Vec<OwnedFd>> {
    let fds = sd_notify::listen_fds_with_names(true)?;
    Ok(fds
        // SAFETY: LISTEN_PID named this process, so systemd opened descriptors 3 to
        // 3 + LISTEN_FDS - 1 for it and nothing else in the process owns them; the
        // variables are now unset, so no later call wraps them a second time.
        .map(|(fd, _name)| unsafe { OwnedFd::from_raw_fd(fd) })
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

/// Sends nothing more to `NOTIFY_SOCKET`: a process started by an upgrade reports
/// `READY=1` to the old process's private socket, which is gone once the upgrade is over.
pub fn stop_notifying() {
    NOTIFY_STOPPED.store(true, Ordering::Release);
}

fn notify(state: sd_notify::NotifyState) {
    if NOTIFY_STOPPED.load(Ordering::Acquire) {
        return;
    }
    // NOTIFY_SOCKET stays set: STOPPING=1 follows READY=1.
    if let Err(e) = sd_notify::notify(false, &[state]) {
        log::warn!("systemd notification failed: {e}");
    }
}
