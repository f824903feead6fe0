//! A reactor's part in an upgrade's hand-over (`server/handover.rs`): in the old process,
//! taking every connection out of its poll and slab and sending it to the mover; in the
//! new one, adopting the connections dealt to it, and in the old one again those a failed
//! move hands back.
//!
//! # Invariants
//! - A connection leaves this reactor whole: its timer cancelled, its descriptor out of
//!   the poll, its charges taken back and its admission released, so the reactor's
//!   accounts hold as if it had closed, but the socket is neither shut nor reset.
//! - An adopted connection is charged, admitted (whatever the limits: its client was
//!   served already) and given one timer, by the same `insert_connection` as an accepted
//!   one; its idle deadline counts from its last progress in the old process.

use std::sync::mpsc::Sender;

use log::{debug, info, warn};
use mio::Interest;

use super::{Opened, Reactor, TimerKey, LISTENER};
use crate::counters::CloseReason;
use crate::server::connection::Connection;
use crate::server::handover::{MoveMsg, Moved};
use crate::server::lifecycle::Phase;
use crate::server::source::Source;
use crate::timer_wheel::TimerId;

impl Reactor {
    /// The new process speaks the hand-over: stop accepting (it accepts on the same
    /// sockets), stop serving the metrics and admin listeners (it serves those too), and
    /// send every connection to `mover`.
    /// (`None`: the move ended before this reactor could join it; what it holds stays.)
    pub(super) fn begin_move(&mut self, mover: Option<Sender<MoveMsg>>) {
        if let Some(mut listener) = self.acceptor.take_listener() {
            // Kept, out of the poll, until the move is over: if the new process dies
            // meanwhile, this process accepts on it again.
            let _ = self.poll.registry().deregister(&mut listener);
            self.acceptor.park(listener);
            self.shared.stop_accepting();
        }
        if self.acceptor.deals() {
            // No more connections will be dealt: the others move what their inbox holds.
            self.shared.end_dealing();
        }
        self.stop_http_accepting();
        self.life.mover = mover;
        let keys: Vec<usize> = self.table.keys();
        debug!(
            "moving {} connections to the new process{}",
            keys.len(),
            self.of_reactor()
        );
        self.move_out(keys);
    }

    /// Sends connections `keys` to the mover.
    pub(super) fn move_out(&mut self, keys: Vec<usize>) {
        if keys.is_empty() {
            return;
        }
        self.refresh_now();
        let moved: Vec<Moved> = keys.into_iter().filter_map(|k| self.take_out(k)).collect();
        self.cx.stats.moved_out += moved.len() as u64;
        // Only while the move is under way and the mover takes them: else they are back
        // at once, counted back as they are adopted, and served on here.
        if let Err(MoveMsg::Conns(moved)) = self.shared.send_to_mover(MoveMsg::Conns(moved)) {
            self.adopt_all(moved);
        }
    }

    /// While moving, once no connection can still be dealt to this reactor: moves what its
    /// inbox holds and tells the mover it is done.
    pub(super) fn end_sending(&mut self) {
        let keys = self.take_dealt();
        if self.life.phase() == Phase::Moving {
            self.move_out(keys);
        }
        if let Some(mover) = self.life.mover.take() {
            // A failed send means the mover is gone: nothing waits for this.
            let _ = mover.send(MoveMsg::Done);
        }
    }

    /// The move is over: what came back is served on until it closes, as after the old
    /// drain, for at most the grace period.
    pub(super) fn finish_move(&mut self) {
        // Every connection given back was delivered before the move ended.
        self.take_moved();
        self.life.upgrader = None;
        if let Some(mut listener) = self.acceptor.take_parked() {
            // The new process serves this socket now: its Unix socket file stays.
            listener.leave_file();
        }
        self.hand_http_listeners_over();
        if !self.table.is_empty() {
            info!(
                "serving {} connections the new process did not take{}",
                self.table.len(),
                self.of_reactor()
            );
            self.arm_server_timer(self.config.shutdown_grace, TimerKey::UpgradeDrain);
        }
    }

    /// The move rolled back (the new process died): accept again, on the same listener,
    /// serve the metrics and admin listeners again, and serve what came back, as before
    /// the upgrade.
    pub(super) fn resume_after_failed_move(&mut self) {
        // Every connection given back was delivered before the move ended.
        self.take_moved();
        if let Some(mut listener) = self.acceptor.take_parked() {
            match self
                .poll
                .registry()
                .register(&mut listener, LISTENER, Interest::READABLE)
            {
                Ok(()) => {
                    self.acceptor.restore_listener(listener);
                    self.shared.resume_accepting();
                }
                Err(e) => warn!("cannot accept again after the failed move: {e}"),
            }
        }
        self.resume_http_accepting();
        info!(
            "upgrade rolled back: accepting again, {} connections served here{}",
            self.table.len(),
            self.of_reactor()
        );
    }

    /// Takes connection `key` out of this reactor, whole, for the move.
    fn take_out(&mut self, key: usize) -> Option<Moved> {
        let opened = self.table.opened(key);
        let (mut conn, admission) = self.table.remove(key)?;
        if conn.timer() != TimerId::NONE {
            self.timers.cancel(conn.timer());
        }
        // EPOLL_CTL_DEL before our descriptor closes: the socket lives on in the new
        // process, and a registration left behind would still be reported here.
        self.detach(&mut conn, admission.source);
        let now_us = self.cx.now_us;
        let (stream, mut state) = conn.export(now_us, opened.id, opened.age_us(now_us));
        state.client = admission.client;
        let fd = Moved::socket_of(stream);
        Some(Moved {
            fd,
            state,
            reactor: self.id.index,
        })
    }

    /// Adopts the connections delivered to this reactor: moved in by an upgrade, or back
    /// from a move that failed.
    pub(super) fn take_moved(&mut self) {
        let moved: Vec<Moved> = self.life.adoptions.try_iter().collect();
        if !moved.is_empty() {
            self.adopt_all(moved);
        }
    }

    fn adopt_all(&mut self, moved: Vec<Moved>) {
        self.refresh_now();
        for m in moved {
            self.adopt(m);
        }
    }

    fn adopt(&mut self, moved: Moved) {
        let (stream, state) = match moved.into_stream() {
            Ok(adopted) => adopted,
            Err(e) => {
                warn!("cannot adopt a connection: {e}; closing it");
                return;
            }
        };
        // The real client its PROXY header named, if any, is its source here too.
        let client = state.client;
        let source = match (client, self.table.source_prefix_v6()) {
            (Some(addr), Some(prefix_len)) => Ok(Some(Source::of_addr(addr, prefix_len))),
            _ => self.table.source_of(&stream, None),
        };
        let source = match source {
            Ok(source) => source,
            Err(e) => {
                debug!("dropped an adopted connection: its source is unknown: {e}");
                return;
            }
        };
        // Counted whatever the limits (it was admitted once); released if not served.
        self.shared.adopt(source);
        let now_us = self.cx.now_us;
        // Its id and age go on: the listing shows the same connection.
        let opened = Opened::aged(state.id, state.age_us, now_us);
        let Some(key) = self.insert_connection(stream, source, opened, |s| {
            Connection::adopt(s, state, now_us)
        }) else {
            return;
        };
        self.table.set_client(key, client);
        if self.life.state.answered_a_move() {
            // Back from a move that failed: it never left.
            self.cx.stats.moved_out -= 1;
        } else {
            self.cx.stats.adopted += 1;
        }
        // Over the lease for now, if the budget is short: the next I/O's room check
        // grows the lease or closes the largest holders, as for any connection.
        if self.life.state.closes_arrivals()
            && self.table.get(key).is_some_and(|c| c.closing().is_none())
        {
            // Adopted while this process shuts down: the shutdown's lingering close
            // (`Linger`: its deadline re-armed as the linger's).
            if let Some(next) =
                self.drive_without_budget(key, |conn, _| conn.begin_closing(CloseReason::Shutdown))
            {
                self.settle(key, next);
            }
        }
        // Input may wait in the socket, and an edge raised in the old process is not
        // raised again here: read it on this turn's revisit.
        self.table.ready.push(key);
    }
}
