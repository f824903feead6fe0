//! Lifecycle: how a server and each of its reactors go from serving to stopped, through a
//! shutdown, an upgrade's move of the connections to a new process (which may roll back),
//! or an upgrade's drain. Pure: it knows nothing of sockets, threads or clocks, like
//! `TimerWheel`; the reactor tells it what it sees and performs the step it answers.
//!
//! ```text
//!  server (ServerState, one atomic in Shared):
//!    upgrade:  None ──SIGUSR2──▶ Starting ──new process ready, no hand-over──▶ Upgraded
//!               ▲  ◀──failed───┘    │
//!               │                   └──new process speaks the hand-over──▶ Moving
//!               └────────────rolled back (the new process died)──────────────┘ │
//!                                                       committed ──▶ Upgraded ◀┘
//!    shutdown: None ──SIGTERM/SIGINT──▶ Graceful ──second signal──▶ Forced
//!
//!  reactor (Phase):
//!    Serving ──move offered──▶ Moving ──committed──▶ Moved ──┐
//!       ▲  │                     │                            │ grace over, or
//!       │  └──upgraded (drain)───┼──────────────▶ Moved       │ shutdown
//!       └──────rolled back───────┘                            ▼
//!    Serving, Moving, Moved ──shutdown──▶ Draining ──empty, last to end──▶ Stopped
//!    Moved ──empty, last to end──▶ Stopped
//! ```
//!
//! # Invariants
//! - The shutdown only moves forward: none, graceful, forced.
//! - At most one upgrade is under way; `Upgraded` is final. `Moving` leads to `Upgraded`
//!   (the move committed) or back to `None` (rolled back: a later SIGUSR2 may try again).
//! - A reactor accepts only while `Serving`. Once the server is `Upgraded`, no reactor is
//!   `Serving` again: nothing is accepted after a move committed or a drain began.
//! - A reactor stops only when it holds no connection, sends none to a move, none can
//!   still be dealt to it, and no move is under way (one the new process does not take
//!   comes back): every connection is served, moved or closed with a reason.
//! - `Stopped` is final, and `Draining` never leads back to accepting.

/// An upgrade's state, server-wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upgrade {
    /// No upgrade under way (none yet, or the last one failed or rolled back).
    None,
    /// A new process is starting and has not reported ready yet.
    Starting,
    /// The new process speaks the hand-over: the reactors move their connections to it.
    Moving,
    /// A new process serves the listening sockets (a committed move, or the drain): final.
    Upgraded,
}

/// The shutdown's state, server-wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Shutdown {
    /// Serving.
    None,
    /// Lingering closes for at most the grace period.
    Graceful,
    /// Every connection closed now (a second signal).
    Forced,
}

/// Why an upgrade cannot begin now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpgradeBusy {
    /// A new process is starting and has not reported ready yet.
    InProgress,
    /// A new process serves the sockets, or connections are moving to it.
    Upgraded,
}

/// The server's lifecycle: its upgrade and its shutdown. Stored in one byte
/// ([`ServerState::to_byte`]) so `Shared` changes it with one compare-and-swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerState {
    pub upgrade: Upgrade,
    pub shutdown: Shutdown,
    /// Moves begun, modulo 16: tells a reactor that a move it answered has ended and
    /// another begun between two of its turns.
    pub moves: u8,
}

impl ServerState {
    /// A server just started: no upgrade, no shutdown.
    pub const START: ServerState = ServerState {
        upgrade: Upgrade::None,
        shutdown: Shutdown::None,
        moves: 0,
    };

    /// SIGUSR2: an upgrade begins, unless one is under way or done.
    pub fn begin_upgrade(self) -> Result<ServerState, UpgradeBusy> {
        match self.upgrade {
            Upgrade::None => Ok(self.with(Upgrade::Starting)),
            Upgrade::Starting => Err(UpgradeBusy::InProgress),
            Upgrade::Moving | Upgrade::Upgraded => Err(UpgradeBusy::Upgraded),
        }
    }

    /// The upgrade under way failed before any connection moved: a later one may try.
    pub fn upgrade_failed(self) -> ServerState {
        match self.upgrade {
            Upgrade::Starting => self.with(Upgrade::None),
            _ => self,
        }
    }

    /// The new process is ready and takes no connections: this one drains.
    pub fn upgrade_drain(self) -> ServerState {
        match self.upgrade {
            Upgrade::Starting => self.with(Upgrade::Upgraded),
            _ => self,
        }
    }

    /// The new process speaks the hand-over: the connections move.
    pub fn begin_move(self) -> ServerState {
        match self.upgrade {
            Upgrade::Starting => ServerState {
                moves: (self.moves + 1) % 16,
                ..self.with(Upgrade::Moving)
            },
            _ => self,
        }
    }

    /// The move is over: committed (the new process serves), or rolled back (it died).
    pub fn end_move(self, rolled_back: bool) -> ServerState {
        match (self.upgrade, rolled_back) {
            (Upgrade::Moving, true) => self.with(Upgrade::None),
            (Upgrade::Moving, false) => self.with(Upgrade::Upgraded),
            _ => self,
        }
    }

    /// SIGTERM or SIGINT (`force`: a second one): the shutdown moves forward, never back.
    pub fn shut_down(self, force: bool) -> ServerState {
        let to = if force {
            Shutdown::Forced
        } else {
            Shutdown::Graceful
        };
        ServerState {
            shutdown: self.shutdown.max(to),
            ..self
        }
    }

    fn with(self, upgrade: Upgrade) -> ServerState {
        ServerState { upgrade, ..self }
    }

    /// One byte: the upgrade in the low two bits, the shutdown in the next two, the moves
    /// in the high four.
    pub fn to_byte(self) -> u8 {
        let upgrade = match self.upgrade {
            Upgrade::None => 0,
            Upgrade::Starting => 1,
            Upgrade::Moving => 2,
            Upgrade::Upgraded => 3,
        };
        let shutdown = match self.shutdown {
            Shutdown::None => 0,
            Shutdown::Graceful => 1,
            Shutdown::Forced => 2,
        };
        upgrade | shutdown << 2 | self.moves << 4
    }

    /// The state [`ServerState::to_byte`] stored.
    pub fn from_byte(byte: u8) -> ServerState {
        let upgrade = match byte & 3 {
            0 => Upgrade::None,
            1 => Upgrade::Starting,
            2 => Upgrade::Moving,
            _ => Upgrade::Upgraded,
        };
        let shutdown = match (byte >> 2) & 3 {
            0 => Shutdown::None,
            1 => Shutdown::Graceful,
            _ => Shutdown::Forced,
        };
        ServerState {
            upgrade,
            shutdown,
            moves: byte >> 4,
        }
    }
}

/// A reactor's phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Accepting and serving (again, after a move rolled back).
    Serving,
    /// An upgrade's new process takes the connections: no listener (kept aside in case the
    /// move rolls back); each connection is sent as soon as it is here.
    Moving,
    /// A new process serves the listening sockets (after the drain, or after a move for
    /// what it did not take): no listener; the open connections served as usual, idle
    /// ones reaped, for at most the grace period.
    Moved,
    /// Shutting down: lingering closes, for at most the grace period.
    Draining,
    /// The loop has ended.
    Stopped,
}

/// What a reactor sees at a turn's end, for [`Lifecycle::next`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// The server's state.
    pub server: ServerState,
    /// The upgrade thread has a mover this reactor may send its connections to.
    pub move_offered: bool,
    /// This reactor still sends connections to the move (it has not said its last).
    pub sending: bool,
    /// No connection can still be dealt to this reactor (it has no inbox, the dealer has
    /// closed its listener, or a shutdown has).
    pub dealt_all: bool,
    /// This reactor holds no connection.
    pub empty: bool,
    /// No reactor waits for this one to end: it is not the one that hears the signals, or
    /// it is the last running. The one that hears them ends last, so a second signal (or
    /// a SIGTERM during an upgrade's drain) is heard while any reactor still drains; the
    /// others wake it as they end.
    pub last_to_end: bool,
}

/// What the reactor does next, as [`Lifecycle::next`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Stop accepting and close every connection with a lingering close.
    BeginShutdown,
    /// Answer the move's call: stop accepting, send every connection.
    JoinMove,
    /// Answer the move's call with nothing (shutting down or drained already).
    DeclineMove,
    /// Nothing more can be dealt here: send what the inbox holds and say the last word.
    EndSending,
    /// The move ended without this reactor's last word: stop sending.
    AbandonMove,
    /// The move committed: serve out what came back.
    FinishMove,
    /// The move rolled back: accept again and serve what came back.
    RollBack,
    /// The new process serves the sockets without a move: stop accepting, serve out.
    BeginDrain,
    /// A forced shutdown: close every connection now.
    CloseAll,
    /// Nothing is left: end the loop.
    Stop,
}

/// A reactor's lifecycle: its phase and whether it has answered the current move's call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifecycle {
    phase: Phase,
    /// The move this reactor answered last (joined or declined), by its number.
    move_answered: Option<u8>,
}

impl Default for Lifecycle {
    fn default() -> Lifecycle {
        Lifecycle {
            phase: Phase::Serving,
            move_answered: None,
        }
    }
}

impl Lifecycle {
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Whether this reactor's listener is in its poll: only while serving.
    pub fn accepts(&self) -> bool {
        self.phase == Phase::Serving
    }

    /// The next step, given what the reactor sees; `None` when nothing is to be done this
    /// turn. The reactor performs it, then asks again (each step changes the phase or
    /// what is seen, so the questions end).
    pub fn next(&self, seen: &Seen) -> Option<Step> {
        use Phase::*;
        let server = seen.server;
        // The move under way, and this reactor's part in it: a move it answered may have
        // ended and another begun since its last turn.
        let moving = server.upgrade == Upgrade::Moving;
        let answered = moving && self.move_answered == Some(server.moves);
        let upgraded = server.upgrade == Upgrade::Upgraded;
        if matches!(self.phase, Serving | Moving | Moved) && server.shutdown != Shutdown::None {
            return Some(Step::BeginShutdown);
        }
        if moving && !answered && seen.move_offered && self.phase != Moving {
            return Some(if self.phase == Serving {
                Step::JoinMove
            } else {
                Step::DeclineMove
            });
        }
        if seen.sending {
            if !answered {
                return Some(Step::AbandonMove);
            }
            if seen.dealt_all {
                return Some(Step::EndSending);
            }
        }
        if self.phase == Moving && !seen.sending && !answered {
            return Some(if upgraded {
                Step::FinishMove
            } else {
                Step::RollBack
            });
        }
        if self.phase == Serving && upgraded {
            return Some(Step::BeginDrain);
        }
        if self.phase == Draining && server.shutdown == Shutdown::Forced && !seen.empty {
            return Some(Step::CloseAll);
        }
        if matches!(self.phase, Draining | Moved)
            && seen.empty
            && !seen.sending
            && !moving
            && seen.last_to_end
            && seen.dealt_all
        {
            return Some(Step::Stop);
        }
        None
    }

    /// Records that the reactor performed `step` (the phase it leads to); `server` is
    /// what it was asked with.
    pub fn apply(&mut self, step: Step, server: ServerState) {
        match step {
            Step::BeginShutdown => self.phase = Phase::Draining,
            Step::JoinMove => {
                self.move_answered = Some(server.moves);
                self.phase = Phase::Moving;
            }
            Step::DeclineMove => self.move_answered = Some(server.moves),
            Step::EndSending | Step::AbandonMove | Step::CloseAll => {}
            Step::FinishMove | Step::BeginDrain => self.phase = Phase::Moved,
            Step::RollBack => self.phase = Phase::Serving,
            Step::Stop => self.phase = Phase::Stopped,
        }
    }

    /// The drain's grace period is over: what is left gets the shutdown's lingering close.
    /// `false` (nothing to do) unless the reactor is serving out after an upgrade.
    pub fn drain_grace_over(&self) -> bool {
        self.phase == Phase::Moved
    }

    /// Whether this reactor has answered a move: a connection adopted now comes back from
    /// it (the move failed for it), rather than in from the process this one upgrades.
    pub fn answered_a_move(&self) -> bool {
        self.move_answered.is_some()
    }

    /// Whether a connection arriving now (dealt, or moved in) is to be closed with the
    /// shutdown's lingering close at once.
    pub fn closes_arrivals(&self) -> bool {
        self.phase == Phase::Draining
    }
}

#[cfg(test)]
mod tests;
