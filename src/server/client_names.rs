//! ClientNames: with trace logging on, the real client of each connection a PROXY header
//! named, on this reactor's thread, by its socket's descriptor; for the `client:` trace
//! lines, which the connection writes knowing only its socket (whose peer is the proxy).
//! Kept beside the connection, not in it, so a connection stays small and a server without
//! tracing or without `--proxy-protocol-from` holds nothing here.
//!
//! # Invariants
//! - An entry exists only while its connection is open on this thread: recorded when the
//!   header is read (or the connection moved in), forgotten when it leaves the table.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::RawFd;

thread_local! {
    static NAMES: RefCell<HashMap<RawFd, SocketAddr>> = RefCell::new(HashMap::new());
}

/// Records `client` as the name of the connection on descriptor `fd`, if tracing is on.
pub fn record(fd: RawFd, client: SocketAddr) {
    if log::log_enabled!(log::Level::Trace) {
        NAMES.with(|names| names.borrow_mut().insert(fd, client));
    }
}

/// Forgets the name of the connection on `fd` (it is closing or moving).
pub fn forget(fd: RawFd) {
    if log::log_enabled!(log::Level::Trace) {
        NAMES.with(|names| names.borrow_mut().remove(&fd));
    }
}

/// The real client of the connection on `fd`, if a PROXY header named one.
pub fn get(fd: RawFd) -> Option<SocketAddr> {
    NAMES.with(|names| names.borrow().get(&fd).copied())
}
