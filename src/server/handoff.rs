//! Handoff: how a reactor that accepts for the others passes them their connections,
//! where the kernel does not spread them (a Unix socket, or the one socket systemd
//! passed): a channel of accepted streams per reactor plus its `mio::Waker`, the shape of
//! memcached's dispatch (a queue and a notify pipe per worker) and actix-server's
//! `Accept`.
//!
//! # Invariants
//! - Connections are dealt round-robin over every reactor, the accepting one included, so
//!   over any run of N accepts each of N reactors gets exactly one.
//! - A stream sent is already admitted (counted in `Shared::open`): the receiver serves it,
//!   or releases it if it cannot.

use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;

use mio::Waker;

use crate::stream::Stream;

/// The accepting reactor's side: where each reactor's connections go.
pub struct Handoff {
    /// Per reactor: its channel and its waker; `None` for the accepting reactor itself.
    targets: Vec<Option<(Sender<Stream>, Arc<Waker>)>>,
    /// The reactor the next connection goes to.
    next: usize,
}

/// Where a connection just accepted goes.
pub enum Dealt {
    /// Serve it here.
    Keep(Stream),
    /// Sent to another reactor.
    Sent,
    /// That reactor is gone (shutting down): the stream is given back to be closed.
    Gone(Stream),
}

impl Handoff {
    /// Deals over `targets` (`None` marks the accepting reactor).
    pub fn new(targets: Vec<Option<(Sender<Stream>, Arc<Waker>)>>) -> Self {
        Handoff { targets, next: 0 }
    }

    /// Deals `stream` to the next reactor in turn.
    pub fn deal(&mut self, stream: Stream) -> Dealt {
        let target = &self.targets[self.next];
        self.next = (self.next + 1) % self.targets.len();
        let Some((sender, waker)) = target else {
            return Dealt::Keep(stream);
        };
        match sender.send(stream) {
            Ok(()) => {
                // The receiver reads its channel on the waker's event; if the wake fails
                // it is gone, and the stream is dropped with the channel.
                let _ = waker.wake();
                Dealt::Sent
            }
            Err(returned) => Dealt::Gone(returned.0),
        }
    }
}

/// A receiving reactor's side.
pub type Inbox = Receiver<Stream>;
