//! A reactor's part in the server's lifecycle (`server/lifecycle.rs`, pure): what it acts
//! with (the signals, the upgrader, the move's channels) and the steps it performs when
//! the pure [`Lifecycle`] answers one: the graceful shutdown, a move's start, end and
//! rollback (`reactor/handover.rs`), and the drain after an upgrade.

use std::sync::mpsc::{Receiver, Sender};
use std::time::Duration;

use log::{debug, info};

use super::{Reactor, TimerKey};
use crate::counters::{CloseReason, HeaderResult};
use crate::server::handover::{MoveMsg, Moved};
use crate::server::lifecycle::{Lifecycle, Phase, Seen, Shutdown, Step, Upgrade};
use crate::server::shared::UpgradeBusy;
use crate::server::signal::ServerSignals;
use crate::server::upgrade::Upgrader;

/// What a reactor's lifecycle acts with, beside its pure state.
pub(super) struct Life {
    /// The phase, and the move this reactor answered last.
    pub(super) state: Lifecycle,
    /// SIGINT, SIGTERM and SIGUSR2 (reactor 0 only).
    pub(super) signals: Option<ServerSignals>,
    /// Starts an upgrade on SIGUSR2 (reactor 0, when upgrades are enabled); dropped, with
    /// its duplicates of the listeners, when a shutdown or a drain begins.
    pub(super) upgrader: Option<Upgrader>,
    /// Connections to adopt: moved in by an upgrade, or back from a move that failed.
    pub(super) adoptions: Receiver<Moved>,
    /// While this reactor moves its connections to an upgrade's new process: where they
    /// go. Taken when it has sent the last.
    pub(super) mover: Option<Sender<MoveMsg>>,
}

impl Life {
    pub(super) fn new(adoptions: Receiver<Moved>) -> Life {
        Life {
            state: Lifecycle::default(),
            signals: None,
            upgrader: None,
            adoptions,
            mover: None,
        }
    }

    pub(super) fn phase(&self) -> Phase {
        self.state.phase()
    }
}

impl Reactor {
    /// At a turn's end: performs the steps the lifecycle answers, until it has none.
    pub(super) fn advance_phase(&mut self) {
        let server = self.shared.state();
        if self.life.phase() == Phase::Serving
            && server.upgrade == Upgrade::None
            && server.shutdown == Shutdown::None
            && self.life.mover.is_none()
        {
            return; // the usual turn: nothing to do
        }
        if self.life.phase() == Phase::Moved
            && self.acceptor.has_inbox()
            && self.shared.dealing_over()
        {
            // What the dealer sent before it closed its listener: served out here.
            self.take_dealt();
        }
        loop {
            let seen = self.seen();
            let Some(step) = self.life.state.next(&seen) else {
                break;
            };
            self.perform(step);
            self.life.state.apply(step, seen.server);
        }
    }

    /// What the lifecycle decides by.
    fn seen(&self) -> Seen {
        let server = self.shared.state();
        Seen {
            server,
            move_offered: server.upgrade == Upgrade::Moving && self.shared.mover().is_some(),
            sending: self.life.mover.is_some(),
            dealt_all: !self.acceptor.has_inbox()
                || self.shared.dealing_over()
                || server.shutdown != Shutdown::None,
            empty: self.table.is_empty() && self.acceptor.intake.is_empty(),
            last_to_end: self.life.signals.is_none() || self.shared.running() <= 1,
        }
    }

    fn perform(&mut self, step: Step) {
        match step {
            Step::BeginShutdown => self.begin_shutdown(self.config.shutdown_grace),
            Step::JoinMove => self.begin_move(self.shared.mover()),
            Step::DeclineMove => {
                // Shutting down or drained already: what it holds is closed or served
                // here, nothing moves, and nothing more is dealt (its listener is gone).
                if self.acceptor.deals() {
                    self.shared.end_dealing();
                }
                if let Some(mover) = self.shared.mover() {
                    let _ = mover.send(MoveMsg::Done);
                }
            }
            Step::EndSending => self.end_sending(),
            // The move ended without this reactor's last word (the mover gave up
            // waiting): nothing waits for it any more.
            Step::AbandonMove => self.life.mover = None,
            Step::FinishMove => self.finish_move(),
            Step::RollBack => self.resume_after_failed_move(),
            Step::BeginDrain => self.begin_upgrade_drain(),
            Step::CloseAll => {
                info!("closing every connection now");
                self.close_all();
            }
            Step::Stop => {}
        }
    }

    pub(super) fn on_signal(&mut self) {
        let Some(signals) = &mut self.life.signals else {
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
            Ok(()) => match &self.life.upgrader {
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
    fn begin_upgrade_drain(&mut self) {
        self.life.upgrader = None;
        if let Some(mut listener) = self.acceptor.take_listener() {
            let _ = self.poll.registry().deregister(&mut listener);
            // The new process serves this socket now: its Unix socket file stays.
            listener.leave_file();
            self.shared.stop_accepting();
        }
        // The new process serves the admin socket too: its file stays when ours closes.
        self.hand_http_listeners_over();
        if self.acceptor.deals() {
            // No more connections will be dealt: the others may end once theirs are served.
            self.shared.end_dealing();
        }
        debug!(
            "upgrade drain: serving out {} connections{}",
            self.table.len(),
            self.of_reactor()
        );
        self.arm_server_timer(self.config.shutdown_grace, TimerKey::UpgradeDrain);
    }

    /// Stops accepting, closes quiet connections, and lets the others send what they owe
    /// with a lingering close, for at most `grace`.
    pub(super) fn begin_shutdown(&mut self, grace: Duration) {
        self.timers.set_shutdown_linger(grace);
        self.life.upgrader = None;
        let upgrade_drain = self.life.phase() == Phase::Moved;
        if let Some(mut listener) = self.acceptor.take_parked() {
            // A shutdown during a move: the new process serves this socket, and the
            // admin socket.
            listener.leave_file();
            self.hand_http_listeners_over();
        }
        self.life
            .state
            .apply(Step::BeginShutdown, self.shared.state());
        if self.id.index == 0 {
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
            None => self.id.index == 0 && upgrade_drain,
        };
        let open = self.table.len();
        let grace = grace.as_millis();
        if self.id.alone() {
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
        self.arm_server_timer(self.timers.shutdown_linger(), TimerKey::Shutdown);
        for key in self.acceptor.intake.keys() {
            // Waiting for a PROXY header: nothing is owed to it yet.
            self.end_pending(key, HeaderResult::Shutdown);
        }
        let keys: Vec<usize> = self.table.keys();
        for key in keys {
            if self.table.get(key).is_none_or(|c| c.closing().is_some()) {
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
