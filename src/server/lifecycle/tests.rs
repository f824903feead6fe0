//! The lifecycle's transitions, and a model of a two-reactor server driven by random
//! event sequences (signals, an upgrade's outcomes, a move's batches, grace periods,
//! accepts and closes, a reactor's panic), checking the module's invariants after each.

use proptest::prelude::*;

use super::*;

#[test]
fn shutdown_only_moves_forward() {
    let s = ServerState::START.shut_down(true).shut_down(false);
    assert_eq!(s.shutdown, Shutdown::Forced);
    assert_eq!(
        ServerState::START.shut_down(false).shutdown,
        Shutdown::Graceful
    );
}

#[test]
fn one_upgrade_at_a_time_a_failed_or_rolled_back_one_may_be_retried_upgraded_is_final() {
    let s = ServerState::START.begin_upgrade().unwrap();
    assert_eq!(s.begin_upgrade(), Err(UpgradeBusy::InProgress));
    let s = s.upgrade_failed().begin_upgrade().unwrap().begin_move();
    assert_eq!(s.begin_upgrade(), Err(UpgradeBusy::Upgraded));
    let s = s.end_move(true);
    assert_eq!(s.upgrade, Upgrade::None);
    let s = s.begin_upgrade().unwrap().upgrade_drain();
    assert_eq!(s.upgrade, Upgrade::Upgraded);
    assert_eq!(
        s.upgrade_failed().end_move(true).begin_move().upgrade,
        Upgrade::Upgraded
    );
    assert_eq!(s.begin_upgrade(), Err(UpgradeBusy::Upgraded));
}

#[test]
fn every_state_survives_its_byte() {
    for upgrade in [
        Upgrade::None,
        Upgrade::Starting,
        Upgrade::Moving,
        Upgrade::Upgraded,
    ] {
        for shutdown in [Shutdown::None, Shutdown::Graceful, Shutdown::Forced] {
            for moves in [0, 1, 15] {
                let s = ServerState {
                    upgrade,
                    shutdown,
                    moves,
                };
                assert_eq!(ServerState::from_byte(s.to_byte()), s);
            }
        }
    }
}

fn seen(server: ServerState) -> Seen {
    Seen {
        server,
        move_offered: false,
        sending: false,
        dealt_all: true,
        empty: true,
        last_to_end: true,
    }
}

#[test]
fn a_committed_move_never_accepts_again_and_a_rolled_back_one_does() {
    let moving = ServerState::START.begin_upgrade().unwrap().begin_move();
    let mut lc = Lifecycle::default();
    let offered = Seen {
        move_offered: true,
        ..seen(moving)
    };
    assert_eq!(lc.next(&offered), Some(Step::JoinMove));
    lc.apply(Step::JoinMove, moving);
    assert!(!lc.accepts());
    let mut rolled = lc;
    assert_eq!(
        lc.next(&seen(moving.end_move(false))),
        Some(Step::FinishMove)
    );
    lc.apply(Step::FinishMove, moving);
    assert!(!lc.accepts());
    assert_eq!(lc.next(&seen(moving.end_move(false))), Some(Step::Stop));
    assert_eq!(
        rolled.next(&seen(moving.end_move(true))),
        Some(Step::RollBack)
    );
    rolled.apply(Step::RollBack, moving);
    assert!(rolled.accepts());
    assert_eq!(rolled.next(&seen(moving.end_move(true))), None);
}

#[test]
fn a_reactor_still_sending_or_holding_connections_does_not_stop() {
    let mut lc = Lifecycle::default();
    lc.apply(Step::BeginShutdown, ServerState::START);
    let draining = ServerState::START.shut_down(false);
    let holding = Seen {
        empty: false,
        ..seen(draining)
    };
    assert_eq!(lc.next(&holding), None);
    let waited_for = Seen {
        last_to_end: false,
        ..seen(draining)
    };
    assert_eq!(lc.next(&waited_for), None);
    assert_eq!(lc.next(&seen(draining)), Some(Step::Stop));
}

/// One event of the model.
#[derive(Debug, Clone, Copy)]
enum Event {
    /// SIGTERM or SIGINT, heard by reactor 0: graceful, or forced if one came before.
    Signal,
    /// SIGUSR2.
    Usr2,
    /// The new process failed to start.
    NewFails,
    /// The new process is ready and takes no connections: drain.
    NewDrains,
    /// The new process speaks the hand-over.
    NewSpeaksHandover,
    /// A batch of reactor `r`'s connections in flight comes back (the new process refused it).
    BatchRefused(usize),
    /// The mover ends the move: committed, or rolled back (the new process died).
    MoveEnds { rolled_back: bool },
    /// A client connects; reactor 0 deals every other one to reactor 1.
    Connect,
    /// One of reactor `r`'s connections closes (idle, by its client, lingering done).
    Close(usize),
    /// Reactor `r`'s grace timer fires: the drain's grace (then the shutdown's linger),
    /// or the shutdown's (then every connection closes).
    GraceOver(usize),
    /// Reactor `r` takes a turn: its inbox, then its lifecycle steps.
    Turn(usize),
    /// Reactor 1 panics: its loop ends, its connections are closed.
    Panic,
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        1 => Just(Event::Signal),
        2 => Just(Event::Usr2),
        1 => Just(Event::NewFails),
        1 => Just(Event::NewDrains),
        2 => Just(Event::NewSpeaksHandover),
        1 => (0..2usize).prop_map(Event::BatchRefused),
        2 => any::<bool>().prop_map(|rolled_back| Event::MoveEnds { rolled_back }),
        4 => Just(Event::Connect),
        3 => (0..2usize).prop_map(Event::Close),
        1 => (0..2usize).prop_map(Event::GraceOver),
        8 => (0..2usize).prop_map(Event::Turn),
        1 => Just(Event::Panic),
    ]
}

/// A reactor of the model: its lifecycle and where its connections are.
#[derive(Debug, Default)]
struct ModelReactor {
    lc: Lifecycle,
    alive: bool,
    /// Its listener is in its poll (reactor 0 only).
    listening: bool,
    /// Its listener is kept aside during a move.
    parked: bool,
    /// Connections it serves.
    held: u32,
    /// Connections dealt to it not yet taken (reactor 1 only).
    inbox: u32,
    /// It still sends connections to the move.
    sending: bool,
    /// Of its connections sent to the move: not yet taken by the new process.
    in_flight: u32,
}

#[derive(Debug)]
struct Model {
    server: ServerState,
    mover_offered: bool,
    dealing_over: bool,
    r: [ModelReactor; 2],
    accepted: u32,
    closed: u32,
    moved: u32,
    /// Reactor `r` was moving when the move rolled back, and has not had a turn since.
    owes_rollback: [bool; 2],
}

impl Model {
    fn new() -> Model {
        let mut r: [ModelReactor; 2] = Default::default();
        for reactor in &mut r {
            reactor.alive = true;
        }
        r[0].listening = true;
        Model {
            server: ServerState::START,
            mover_offered: false,
            dealing_over: false,
            r,
            accepted: 0,
            closed: 0,
            moved: 0,
            owes_rollback: [false; 2],
        }
    }

    fn running(&self) -> usize {
        self.r.iter().filter(|r| r.alive).count()
    }

    fn on(&mut self, event: Event) {
        match event {
            Event::Signal => {
                self.server = self
                    .server
                    .shut_down(self.server.shutdown != Shutdown::None)
            }
            Event::Usr2 => {
                if self.server.shutdown == Shutdown::None {
                    if let Ok(s) = self.server.begin_upgrade() {
                        self.server = s;
                    }
                }
            }
            Event::NewFails => self.server = self.server.upgrade_failed(),
            Event::NewDrains => self.server = self.server.upgrade_drain(),
            Event::NewSpeaksHandover => {
                if self.server.upgrade == Upgrade::Starting {
                    self.server = self.server.begin_move();
                    self.mover_offered = true;
                }
            }
            Event::BatchRefused(i) => {
                let r = &mut self.r[i];
                if r.alive {
                    // Adopted back at once.
                    r.held += r.in_flight;
                    r.in_flight = 0;
                }
            }
            Event::MoveEnds { rolled_back } => {
                if self.server.upgrade == Upgrade::Moving {
                    self.server = self.server.end_move(rolled_back);
                    self.mover_offered = false;
                    for (i, r) in self.r.iter_mut().enumerate() {
                        if rolled_back {
                            if r.alive {
                                r.held += r.in_flight;
                            } else {
                                self.closed += r.in_flight;
                            }
                            self.owes_rollback[i] = r.lc.phase() == Phase::Moving;
                            self.dealing_over = false;
                        } else {
                            self.moved += r.in_flight;
                        }
                        r.in_flight = 0;
                    }
                }
            }
            Event::Connect => {
                if self.r[0].alive && self.r[0].listening {
                    self.accepted += 1;
                    if self.accepted.is_multiple_of(2) && self.r[1].alive {
                        self.r[1].inbox += 1;
                    } else if self.accepted.is_multiple_of(2) {
                        self.closed += 1; // dealt to a reactor that is gone
                    } else {
                        self.r[0].held += 1;
                    }
                }
            }
            Event::Close(i) => {
                let r = &mut self.r[i];
                if r.alive && r.held > 0 {
                    r.held -= 1;
                    self.closed += 1;
                }
            }
            Event::GraceOver(i) => {
                let r = &mut self.r[i];
                if !r.alive {
                } else if r.lc.drain_grace_over() {
                    self.perform(i, Step::BeginShutdown);
                } else if r.lc.phase() == Phase::Draining {
                    self.perform(i, Step::CloseAll);
                }
            }
            Event::Turn(i) => self.turn(i),
            Event::Panic => {
                let r = &mut self.r[1];
                if r.alive {
                    r.alive = false;
                    self.closed += r.held + r.inbox;
                    r.held = 0;
                    r.inbox = 0;
                    r.sending = false;
                }
            }
        }
    }

    fn turn(&mut self, i: usize) {
        if !self.r[i].alive {
            return;
        }
        // The inbox is taken on every wake: served here, or sent on while moving.
        let inbox = std::mem::take(&mut self.r[i].inbox);
        self.take(i, inbox);
        for _ in 0..20 {
            let seen = self.seen(i);
            let Some(step) = self.r[i].lc.next(&seen) else {
                break;
            };
            self.perform(i, step);
        }
        assert!(
            self.r[i].lc.next(&self.seen(i)).is_none(),
            "steps never end"
        );
        let r = &self.r[i];
        if self.server.upgrade == Upgrade::Upgraded {
            assert!(
                !r.lc.accepts(),
                "reactor {i} accepts after the upgrade: {self:?}"
            );
        }
        let upgrade = self.server.upgrade;
        if std::mem::take(&mut self.owes_rollback[i])
            && self.server.shutdown == Shutdown::None
            && matches!(upgrade, Upgrade::None | Upgrade::Starting)
        {
            assert!(
                r.lc.accepts(),
                "reactor {i} does not accept after a rollback: {self:?}"
            );
        }
        if upgrade == Upgrade::Moving
            && self.mover_offered
            && self.server.shutdown == Shutdown::None
        {
            assert_eq!(
                r.lc.move_answered,
                Some(self.server.moves),
                "reactor {i} has not answered the move under way: {self:?}"
            );
        }
        if r.lc.phase() == Phase::Stopped {
            self.r[i].alive = false;
        }
    }

    fn seen(&self, i: usize) -> Seen {
        let r = &self.r[i];
        Seen {
            server: self.server,
            move_offered: self.mover_offered,
            sending: r.sending,
            dealt_all: i == 0 || self.dealing_over || self.server.shutdown != Shutdown::None,
            empty: r.held == 0,
            last_to_end: i != 0 || self.running() <= 1,
        }
    }

    /// Connections arrive at reactor `i` (from its inbox).
    fn take(&mut self, i: usize, n: u32) {
        let r = &mut self.r[i];
        // Sent on only while the move is under way (`Reactor::move_out` checks).
        if r.lc.phase() == Phase::Moving && r.sending && self.server.upgrade == Upgrade::Moving {
            r.in_flight += n;
        } else {
            r.held += n;
        }
    }

    fn perform(&mut self, i: usize, step: Step) {
        let r = &mut self.r[i];
        assert_ne!(r.lc.phase(), Phase::Stopped, "a step after the stop");
        match step {
            Step::BeginShutdown => {
                r.listening = false;
                r.parked = false;
                if i == 0 {
                    self.dealing_over = true;
                }
            }
            Step::JoinMove => {
                if r.listening {
                    r.listening = false;
                    r.parked = true;
                }
                if i == 0 {
                    self.dealing_over = true;
                }
                r.sending = true;
                r.in_flight += std::mem::take(&mut r.held);
            }
            Step::DeclineMove => {
                if i == 0 {
                    self.dealing_over = true;
                }
            }
            Step::EndSending => {
                r.in_flight += std::mem::take(&mut r.inbox);
                r.sending = false;
            }
            Step::AbandonMove => r.sending = false,
            Step::FinishMove => r.parked = false,
            Step::RollBack => {
                if r.parked {
                    r.parked = false;
                    r.listening = true;
                }
            }
            Step::BeginDrain => {
                r.listening = false;
                if i == 0 {
                    self.dealing_over = true;
                }
            }
            Step::CloseAll => {
                self.closed += std::mem::take(&mut r.held);
            }
            Step::Stop => {
                assert_eq!(
                    (r.held, r.inbox, r.in_flight),
                    (0, 0, 0),
                    "stopped holding: {r:?}"
                );
            }
        }
        let r = &mut self.r[i];
        let before = r.lc.phase();
        r.lc.apply(step, self.server);
        let after = r.lc.phase();
        use Phase::*;
        let allowed = before == after
            || matches!(
                (before, after),
                (Serving, Moving)
                    | (Serving, Moved)
                    | (Moving, Serving)
                    | (Moving, Moved)
                    | (Serving | Moving | Moved, Draining)
                    | (Draining | Moved, Stopped)
            );
        assert!(allowed, "reactor {i}: {before:?} -> {after:?} by {step:?}");
        if after == Draining {
            assert!(!r.listening && !r.parked, "accepting while draining");
        }
    }

    /// Every connection accepted is served, in flight, moved or closed.
    fn check_conserved(&self) {
        let held: u32 = self.r.iter().map(|r| r.held + r.inbox + r.in_flight).sum();
        assert_eq!(
            self.accepted,
            held + self.moved + self.closed,
            "a connection was lost: {self:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn random_lifecycles_keep_every_invariant(events in proptest::collection::vec(event(), 1..80)) {
        let mut model = Model::new();
        for event in events {
            model.on(event);
            model.check_conserved();
        }
        // The end: a shutdown, forced, and turns until nothing is left.
        model.on(Event::Signal);
        model.on(Event::Signal);
        model.on(Event::MoveEnds { rolled_back: false });
        for _ in 0..4 {
            model.on(Event::Turn(1));
            model.on(Event::Turn(0));
            model.check_conserved();
        }
        prop_assert!(model.r.iter().all(|r| !r.alive), "a reactor never stopped: {:?}", model);
        prop_assert_eq!(model.accepted, model.moved + model.closed);
    }
}
