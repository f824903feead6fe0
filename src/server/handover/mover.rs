//! The old process's side of the hand-over, run by the upgrade thread once the new
//! process is ready and has said it speaks our version: it takes the connections the
//! reactors send ([`MoveMsg`]), moves them in batches, and hands back to its reactor every
//! connection the new process did not take.
//!
//! # Invariants
//! - A batch's descriptors are closed here only after the new process has acknowledged
//!   all of them and the commit is written; on any failure before that they go back to
//!   their reactors ([`Shared::deliver`]), which serve them on from the state they left in.
//! - Once a batch has failed, or a shutdown has begun, or the new process's room is
//!   used up, nothing more is sent: every connection still to come goes back.
//! - Every connection a reactor sends is moved or handed back: the mover closes the move
//!   to senders ([`Shared::close_move`]) and then reads what its channel still holds;
//!   a reactor sends only through [`Shared::send_to_mover`], under the same lock.
//! - [`Shared::end_move`] is called exactly once, after every reactor has said it has
//!   nothing more to move, or after the grace period if one never does. It rolls the
//!   upgrade back (the reactors accept again) exactly when the new process has exited:
//!   then no one else serves the listening sockets.

use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::Child;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{info, warn};

use super::{read_line, send_batch, wire, Moved};
use crate::server::shared::Shared;

/// How often a wait (for the reactors, for an acknowledgement) looks whether a shutdown
/// has begun meanwhile.
const CHECK_EVERY: Duration = Duration::from_millis(100);
/// After a failed batch, how long the new process may take to be seen exited (its end
/// closed the channel a moment before it can be reaped) for the move to roll back.
const EXIT_WAIT: Duration = Duration::from_secs(1);

/// What a reactor tells the mover.
#[derive(Debug)]
pub enum MoveMsg {
    /// Connections out of its poll, to move.
    Conns(Vec<Moved>),
    /// The reactor has nothing more to move.
    Done,
}

/// The old process's side of one hand-over.
pub struct Mover {
    /// The socketpair to the new process.
    channel: UnixStream,
    /// Connections the new process said it can take.
    room: usize,
    shared: Arc<Shared>,
    /// How long the whole move may take, and an acknowledgement at most.
    grace: Duration,
    /// The batch being filled: its connections and their records.
    batch: Vec<Moved>,
    payload: Vec<u8>,
    /// Connections moved (committed).
    moved: usize,
    /// Connections handed back to their reactors.
    kept: usize,
    /// Why moving stopped, if it did.
    stopped: Option<String>,
}

impl Mover {
    /// A mover over `channel`, to a new process with `room` for connections.
    pub fn new(channel: UnixStream, room: usize, shared: Arc<Shared>, grace: Duration) -> Self {
        Mover {
            channel,
            room,
            shared,
            grace,
            batch: Vec::new(),
            payload: Vec::new(),
            moved: 0,
            kept: 0,
            stopped: None,
        }
    }

    /// Moves what the reactors send on `from` until each of `reactors` is done; returns
    /// the connections moved and those kept. Ends the move ([`Shared::end_move`]).
    pub fn run(
        mut self,
        from: Receiver<MoveMsg>,
        reactors: usize,
        mut child: Child,
    ) -> (usize, usize) {
        let pid = child.id();
        let started = Instant::now();
        let deadline = started + self.grace;
        let mut done = 0;
        while done < reactors {
            if self.stopped.is_none() && self.shared.draining() {
                self.stop("a shutdown began");
            }
            match from.recv_timeout(CHECK_EVERY) {
                Ok(MoveMsg::Conns(conns)) => {
                    for moved in conns {
                        self.take(moved);
                    }
                    self.flush();
                }
                Ok(MoveMsg::Done) => done += 1,
                Err(RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
                Err(_) => {
                    warn!(
                        "upgrade: {} of {reactors} reactors did not finish moving within the \
                         grace period",
                        reactors - done
                    );
                    break;
                }
            }
        }
        // Nothing is sent from here on ([`Shared::send_to_mover`] hands it back); what was
        // sent before is in the channel: moved, or handed back, never dropped with it.
        self.shared.close_move();
        while let Ok(msg) = from.try_recv() {
            if let MoveMsg::Conns(conns) = msg {
                for moved in conns {
                    self.take(moved);
                }
            }
        }
        self.flush();
        if self.stopped.is_none() {
            // The end: the new process answers it, so its last batch is surely taken.
            let ended =
                send_batch(&mut self.channel, &[], &[]).and_then(|()| self.await_ack(0, deadline));
            if let Err(e) = ended {
                warn!("upgrade: the hand-over's end was not acknowledged: {e}");
            }
        }
        let took = started.elapsed().as_millis();
        let rolled_back = self.stopped.is_some() && exited(&mut child);
        if rolled_back {
            warn!(
                "upgrade failed: PID {pid} exited during the hand-over; {} connections \
                 moved to it are lost, {} kept; serving on, listeners included",
                self.moved, self.kept
            );
            self.shared.end_move(true);
            return (self.moved, self.kept);
        }
        match &self.stopped {
            None => info!(
                "upgrade: moved {} connections to PID {pid} in {took} ms",
                self.moved
            ),
            Some(why) => warn!(
                "upgrade: moved {} connections to PID {pid} in {took} ms; {why}: serving the \
                 other {} here until they close (or the grace period ends)",
                self.moved, self.kept
            ),
        }
        // Not the service's main process any more: the new one says MAINPID=, and this
        // one's end must not read as the service's (no STOPPING=1).
        crate::systemd::stop_notifying();
        self.shared.end_move(false);
        (self.moved, self.kept)
    }

    /// Adds `moved` to the batch, or hands it back if moving has stopped or the new
    /// process has no room left; sends the batch once it is full.
    fn take(&mut self, moved: Moved) {
        if self.stopped.is_none() && self.moved + self.batch.len() >= self.room {
            self.stop("the new process has no room for more connections");
        }
        if self.stopped.is_some() {
            self.give_back(moved);
            return;
        }
        wire::encode(&moved.state, &mut self.payload);
        self.batch.push(moved);
        if self.batch.len() == wire::MAX_FDS_PER_BATCH
            || self.payload.len() >= wire::PAYLOAD_SOFT_LIMIT
        {
            self.flush();
        }
    }

    /// Sends the batch and commits it once acknowledged; on any failure hands it back and
    /// stops moving.
    fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        let payload = std::mem::take(&mut self.payload);
        let (fds, states): (Vec<OwnedFd>, Vec<_>) = batch
            .into_iter()
            .map(|m| (m.fd, (m.state, m.reactor)))
            .unzip();
        let deadline = Instant::now() + self.grace;
        let sent = send_batch(&mut self.channel, &fds, &payload)
            .and_then(|()| self.await_ack(fds.len(), deadline))
            .and_then(|()| self.channel.write_all(&[wire::COMMIT]));
        match sent {
            Ok(()) => {
                // Theirs now: close our copies (out of every poll already; no shutdown).
                self.moved += fds.len();
                drop(fds);
            }
            Err(e) => {
                self.stop(&format!("a batch of {} failed: {e}", fds.len()));
                for (fd, (state, reactor)) in fds.into_iter().zip(states) {
                    self.give_back(Moved { fd, state, reactor });
                }
            }
        }
    }

    /// Waits for "ack N" (N = `count`); an error for anything else, a closed channel, a
    /// shutdown, or the deadline.
    fn await_ack(&mut self, count: usize, deadline: Instant) -> io::Result<()> {
        self.channel.set_read_timeout(Some(CHECK_EVERY))?;
        let mut partial = Vec::new();
        loop {
            match read_line(&mut self.channel, &mut partial) {
                Ok(line) => {
                    return match line.strip_prefix("ack ").map(str::parse::<usize>) {
                        Some(Ok(n)) if n == count => Ok(()),
                        _ => Err(io::Error::other(format!("the new process said {line:?}"))),
                    };
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if self.shared.draining() {
                        return Err(io::Error::other("a shutdown began"));
                    }
                    if Instant::now() >= deadline {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "no acknowledgement within the grace period",
                        ));
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Stops moving, for `why` (logged once: the first reason is the one kept).
    fn stop(&mut self, why: &str) {
        if self.stopped.is_none() {
            warn!("upgrade: moving stopped: {why}");
            self.stopped = Some(why.to_string());
        }
    }

    fn give_back(&mut self, moved: Moved) {
        self.kept += 1;
        let reactor = moved.reactor;
        if let Err(moved) = self.shared.deliver(reactor, moved) {
            // Its reactor has ended (a forced shutdown): the connection closes here.
            warn!("upgrade: reactor {reactor} is gone; closing a connection it held");
            drop(moved);
        }
    }
}

/// Whether `child` has exited (reaping it), waiting up to [`EXIT_WAIT`] for an exit in
/// progress.
fn exited(child: &mut Child) -> bool {
    let deadline = Instant::now() + EXIT_WAIT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return true,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) | Err(_) => return false,
        }
    }
}
