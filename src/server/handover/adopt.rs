//! The new process's side of the hand-over: says which version it speaks (before it
//! reports ready), then, on a thread of its own that lives only as long as the hand-over,
//! receives the old process's connections batch by batch and deals them over its
//! reactors, which adopt them.
//!
//! # Invariants
//! - A batch is served only after the old process's commit: until then the old process
//!   may still take it back (it does if our acknowledgement is late or lost), and two
//!   processes must never serve one connection. Without a commit the descriptors are
//!   closed here, which leaves the old process's copies open.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::thread;

use log::{info, warn};

#[cfg(feature = "fault-injection")]
use super::FAULT_ENV;
use super::{recv_batch, wire, Moved};
use crate::server::shared::Shared;

/// Adopts the connections of the process this one upgrades.
pub struct Adopter {
    channel: UnixStream,
    shared: Arc<Shared>,
}

impl Adopter {
    /// Sends the hello on `channel` now, so that it is there before `READY=1`.
    pub fn hello(mut channel: UnixStream, shared: Arc<Shared>) -> io::Result<Adopter> {
        let room = shared
            .max_connections()
            .saturating_sub(shared.connections_open());
        channel.write_all(wire::hello(room).as_bytes())?;
        shared.set_adopting(true);
        Ok(Adopter { channel, shared })
    }

    /// Adopts on a thread of its own ("adopt") until the old process ends the hand-over;
    /// then, under a service manager (`service`: its notification socket), becomes the
    /// service's main process.
    pub fn start(self, service: Option<OsString>) -> io::Result<()> {
        let Adopter {
            mut channel,
            shared,
        } = self;
        let flag = shared.clone();
        let started = thread::Builder::new().name("adopt".into()).spawn(move || {
            let adopted = adopt(&mut channel, &shared);
            shared.set_adopting(false);
            match adopted {
                Ok(n) => info!("upgrade: adopted {n} connections"),
                Err(e) => {
                    warn!("upgrade: the hand-over ended early: {e}");
                    return;
                }
            }
            if let Some(socket) = service {
                match crate::systemd::take_over_service(socket) {
                    Ok(()) => info!("upgrade: this process is the service's main process now"),
                    Err(e) => warn!("upgrade: cannot tell the service manager MAINPID: {e}"),
                }
            }
        });
        if started.is_err() {
            flag.set_adopting(false);
        }
        started.map(drop)
    }
}

/// Receives batches until the end; returns how many connections were adopted.
fn adopt(channel: &mut UnixStream, shared: &Shared) -> io::Result<usize> {
    let reactors = shared.reactors().max(1);
    let mut adopted = 0;
    while let Some((fds, states)) = recv_batch(channel)? {
        #[cfg(feature = "fault-injection")]
        inject_fault();
        channel.write_all(format!("ack {}\n", fds.len()).as_bytes())?;
        let mut commit = [0u8];
        channel.read_exact(&mut commit)?;
        if commit[0] != wire::COMMIT {
            return Err(io::Error::other("hand-over: expected the commit"));
        }
        for (fd, state) in fds.into_iter().zip(states) {
            let reactor = adopted % reactors;
            adopted += 1;
            if let Err(moved) = shared.deliver(reactor, Moved { fd, state, reactor }) {
                // The reactor has ended (this process is shutting down already).
                drop(moved);
            }
        }
    }
    // Done before the old process hears it (and exits): an upgrade of this process may
    // begin from then on.
    shared.set_adopting(false);
    channel.write_all(b"ack 0\n")?;
    Ok(adopted)
}

/// The fault `FAULT_ENV` names, if any, injected with a batch received and not yet
/// acknowledged. Test builds only (the `fault-injection` feature).
#[cfg(feature = "fault-injection")]
fn inject_fault() {
    match std::env::var(FAULT_ENV).unwrap_or_default().as_str() {
        "exit-before-ack" => {
            warn!("{FAULT_ENV}=exit-before-ack: exiting with a batch not acknowledged");
            std::process::exit(3);
        }
        "stall-before-ack" => {
            warn!("{FAULT_ENV}=stall-before-ack: never acknowledging");
            loop {
                thread::park();
            }
        }
        _ => {}
    }
}
