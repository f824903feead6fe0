//! Dealer: how a reactor that accepts for the others passes them their connections,
//! where the kernel does not spread them (a Unix socket, or the one socket systemd
//! passed): a channel of accepted streams per reactor plus its `mio::Waker`, the shape of
//! memcached's dispatch (a queue and a notify pipe per worker) and actix-server's
//! `Accept`.
//!
//! # Invariants
//! - Connections are dealt round-robin over every reactor, the accepting one included, so
//!   over any run of N accepts each of N reactors gets exactly one.
//! - A connection sent is already admitted (counted in `Shared::open`, and under its source
//!   with a per-source limit) and travels as an [`Admitted`], which gives the admission
//!   back if it is dropped unserved: its reactor was gone when it was sent, or ended with it
//!   still in its channel. So every admission is released exactly once, served or not.

use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;

use mio::Waker;

use super::shared::Shared;
use super::source::Source;
use crate::stream::Stream;

/// An admitted connection on its way to the reactor that serves it: its stream, and the
/// source it counts against. Dropped before [`Admitted::serve`], it releases its admission.
pub struct Admitted {
    /// `None` once taken to be served.
    connection: Option<(Stream, Option<Source>)>,
    /// Where the admission is released if the connection is never served.
    shared: Arc<Shared>,
    /// From a trusted proxy: admitted under the global limit only, its source counted
    /// once its PROXY header names it (by the reactor that serves it).
    awaits_header: bool,
}

impl Admitted {
    /// A connection `shared` admitted, from `source`.
    pub fn new(stream: Stream, source: Option<Source>, shared: Arc<Shared>) -> Admitted {
        Admitted {
            connection: Some((stream, source)),
            shared,
            awaits_header: false,
        }
    }

    /// A connection from a trusted proxy `shared` admitted under the global limit only
    /// ([`Shared::admit_unsourced`]): its PROXY header will name its source.
    pub fn awaiting_header(stream: Stream, shared: Arc<Shared>) -> Admitted {
        Admitted {
            connection: Some((stream, None)),
            shared,
            awaits_header: true,
        }
    }

    /// Its PROXY header is still to be read.
    pub fn awaits_header(&self) -> bool {
        self.awaits_header
    }

    /// Takes the connection to serve it: its admission is the server's to release now.
    pub fn serve(mut self) -> (Stream, Option<Source>) {
        self.connection
            .take()
            .expect("an Admitted is served at most once (serve consumes it)")
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some((stream, source)) = self.connection.take() {
            drop(stream);
            self.shared.release(source.as_ref());
        }
    }
}

/// The accepting reactor's side: where each reactor's connections go.
pub struct Dealer {
    /// Per reactor: its channel and its waker; `None` for the accepting reactor itself.
    targets: Vec<Option<(Sender<Admitted>, Arc<Waker>)>>,
    /// The reactor the next connection goes to.
    next: usize,
}

/// Where a connection just admitted goes.
pub enum Dealt {
    /// Serve it here.
    Keep(Admitted),
    /// Sent to another reactor, or dropped (and released) because that reactor is gone (a
    /// shutdown is under way).
    Sent,
}

impl Dealer {
    /// Deals over `targets` (`None` marks the accepting reactor).
    pub fn new(targets: Vec<Option<(Sender<Admitted>, Arc<Waker>)>>) -> Self {
        Dealer { targets, next: 0 }
    }

    /// Deals `connection` to the next reactor in turn.
    pub fn deal(&mut self, connection: Admitted) -> Dealt {
        let target = &self.targets[self.next];
        self.next = (self.next + 1) % self.targets.len();
        let Some((sender, waker)) = target else {
            return Dealt::Keep(connection);
        };
        // A send to a reactor that is gone hands the connection back, and it is dropped
        // here: not served, its admission released.
        if sender.send(connection).is_ok() {
            // The receiver reads its channel on the waker's event; if the wake fails it is
            // gone, and the connection is dropped (and released) with the channel.
            let _ = waker.wake();
        }
        Dealt::Sent
    }
}

/// A receiving reactor's side.
pub type Inbox = Receiver<Admitted>;
