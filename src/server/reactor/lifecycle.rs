//! How a reactor stops: signals (received by reactor 0), the graceful shutdown, and the
//! drain after an upgrade has handed the listening sockets to a new process.

use std::time::Duration;

use log::{debug, info};

use super::{Phase, Reactor, TimerKey};
use crate::counters::CloseReason;
use crate::server::handover::MoveMsg;
use crate::server::shared::UpgradeBusy;

impl Reactor {
    /// Moves the phase on at the end of a turn: a shutdown or an upgrade's drain that
    /// began, a forced shutdown, and the end once every connection is closed.
    pub(super) fn advance_phase(&mut self) {
        if matches!(
            self.phase,
            Phase::Serving | Phase::Moving | Phase::UpgradeDrain
        ) && self.shared.draining()
        {
            self.begin_shutdown(self.config.shutdown_grace);
        }
        if !self.move_joined {
            if let Some(mover) = self.shared.mover() {
                self.move_joined = true;
                if self.phase == Phase::Serving {
                    self.begin_move(mover);
                } else {
                    // Shutting down already: what it holds is closed here, nothing moves,
                    // and nothing more is dealt (its listener is gone).
                    if self.acceptor.deals() {
                        self.shared.end_dealing();
                    }
                    let _ = mover.send(MoveMsg::Done);
                }
            }
        }
        if self.mover.is_some() {
            if self.shared.moving() {
                self.continue_move();
            } else {
                // The move ended without this reactor's last word (the mover gave up
                // waiting): nothing waits for it any more.
                self.mover = None;
            }
        }
        if self.phase == Phase::Moving && self.mover.is_none() && !self.shared.moving() {
            if self.shared.upgraded() {
                self.finish_move();
            } else {
                self.resume_after_failed_move();
            }
        }
        if self.phase == Phase::Serving && self.shared.upgraded() {
            self.begin_upgrade_drain();
        }
        if self.phase == Phase::Draining && self.shared.forced() && !self.connections.is_empty() {
            info!("closing every connection now");
            self.close_all();
        }
        // The reactor that receives the signals ends last, so a second signal (or a
        // SIGTERM during an upgrade's drain) is heard while any reactor still drains;
        // the others wake it as they end.
        // Not while connections are moving: one the new process does not take comes back.
        if matches!(self.phase, Phase::Draining | Phase::UpgradeDrain)
            && self.connections.is_empty()
            && self.mover.is_none()
            && !self.shared.moving()
            && (self.signals.is_none() || self.shared.running() <= 1)
            && self.inbox_settled()
        {
            self.phase = Phase::Done;
        }
    }

    pub(super) fn on_signal(&mut self) {
        let Some(signals) = &mut self.signals else {
            return;
        };
        let received = signals.pending();
        if received.shutdown > 0 {
            if !self.shared.draining() {
                // Every reactor begins its shutdown on its next turn, this one included.
                self.shared.shut_down(false);
            } else {
                info!("second signal: closing every connection now");
                self.shared.shut_down(true);
            }
        }
        if received.upgrade > 0 {
            self.on_upgrade_signal();
        }
    }

    /// SIGUSR2: starts an upgrade, unless one is under way, done, or a shutdown is.
    fn on_upgrade_signal(&mut self) {
        if self.shared.draining() {
            info!("upgrade ignored: shutting down");
            return;
        }
        if self.shared.adopting() {
            info!(
                "upgrade ignored: still taking connections over from the process this one upgrades"
            );
            return;
        }
        match self.shared.begin_upgrade() {
            Ok(()) => match &self.upgrader {
                Some(upgrader) => upgrader.start(),
                None => self.shared.upgrade_failed(),
            },
            Err(UpgradeBusy::InProgress) => {
                info!("upgrade already in progress; SIGUSR2 ignored")
            }
            Err(UpgradeBusy::Upgraded) => {
                info!("upgrade already in progress (this process is draining); SIGUSR2 ignored")
            }
        }
    }

    /// An upgrade's new process serves the listening sockets: stop accepting (it accepts
    /// what is queued in them, the same sockets), serve the open connections on until each
    /// is closed as usual, idle at the latest, and shut down what is left after the grace
    /// period.
    pub(super) fn begin_upgrade_drain(&mut self) {
        self.phase = Phase::UpgradeDrain;
        self.upgrader = None;
        if let Some(mut listener) = self.acceptor.take_listener() {
            let _ = self.poll.registry().deregister(&mut listener);
            // The new process serves this socket now: its Unix socket file stays.
            listener.leave_file();
            self.shared.stop_accepting();
        }
        if self.acceptor.deals() {
            // No more connections will be dealt: the others may end once theirs are served.
            self.shared.end_dealing();
        }
        debug!(
            "upgrade drain: serving out {} connections{}",
            self.connections.len(),
            self.of_reactor()
        );
        self.arm_server_timer(self.config.shutdown_grace, TimerKey::UpgradeDrain);
    }

    /// Whether no connection handed off to this reactor can still arrive: always, but in an
    /// upgrade's drain, where a reactor fed by another waits until the dealer has closed its
    /// listener and then takes what is left in its inbox (served like the others), so that
    /// no connection accepted just before the upgrade is dropped unserved.
    pub(super) fn inbox_settled(&mut self) -> bool {
        if self.phase != Phase::UpgradeDrain || !self.acceptor.has_inbox() {
            return true;
        }
        if !self.shared.dealing_over() {
            return false;
        }
        self.take_dealt();
        self.connections.is_empty()
    }

    /// Stops accepting, closes quiet connections, and lets the others send what they owe
    /// with a lingering close, for at most `grace`.
    pub(super) fn begin_shutdown(&mut self, grace: Duration) {
        self.shutdown_linger = grace;
        self.upgrader = None;
        let upgrade_drain = self.phase == Phase::UpgradeDrain;
        if let Some(mut listener) = self.parked_listener.take() {
            // A shutdown during a move: the new process serves this socket.
            listener.leave_file();
        }
        self.phase = Phase::Draining;
        if self.id == 0 {
            crate::systemd::notify_stopping();
        }
        // The shutdown is announced once no reactor accepts any more: by the last to close
        // its listener, or by reactor 0 when the listeners went to an upgrade's new process.
        let announce = match self.acceptor.take_listener() {
            Some(mut listener) => {
                let _ = self.poll.registry().deregister(&mut listener);
                // Dropping it closes the socket (refusing what is in the backlog) and
                // removes a Unix socket file.
                drop(listener);
                self.shared.stop_accepting()
            }
            None => self.id == 0 && upgrade_drain,
        };
        let open = self.connections.len();
        let grace = grace.as_millis();
        if self.alone {
            info!("shutting down: {open} connections open, grace {grace} ms");
        } else {
            if announce {
                info!("shutting down every reactor, grace {grace} ms");
            }
            debug!(
                "shutting down: {open} connections open{}",
                self.of_reactor()
            );
        }
        self.arm_server_timer(self.shutdown_linger, TimerKey::Shutdown);
        let keys: Vec<usize> = self.connections.iter().map(|(k, _)| k).collect();
        for key in keys {
            if self.connections[key].closing().is_some() {
                continue;
            }
            // Every connection, even one that owes nothing, gets the lingering close: a
            // plain close while the client is still sending would reset the connection
            // and erase replies it has not read yet. One that owes nothing has its write
            // side shut at once, so an idle client sees EOF now.
            // `Linger`: the deadline armed, and read again next turn (`Reactor::linger`).
            if let Some(next) =
                self.drive_without_budget(key, |conn, _| conn.begin_closing(CloseReason::Shutdown))
            {
                self.settle(key, next);
            }
        }
    }
}
