//! TimerWheel: a hashed timing wheel of deadlines in integer ticks (pure: no clock, no sockets).
//!
//! Varghese and Lauck's scheme 6, as in Netty's `HashedWheelTimer`: a ring of slots, a
//! deadline `d` lives in slot `d % slots`, each slot is an intrusive doubly-linked list.
//! Arming and cancelling are O(1); [`TimerWheel::poll`] visits only the slots of the ticks
//! that passed and, when every deadline is less than one revolution away (the reactor
//! sizes the wheel so), touches only entries that expire. An occupied-slot bitmap lets
//! [`TimerWheel::next_expiration`] skip empty slots 64 at a time, and its answer is kept
//! until an arm, cancel or poll changes it, so a reactor asking every turn of its loop
//! does not scan every turn.
//!
//! The caller owns time: it converts its clock to ticks and calls `poll(now)`.
//!
//! # Invariants
//! - Every armed entry's deadline is always greater than `elapsed`, the last tick polled:
//!   deadlines in the past are armed at `elapsed + 1` and fire on the next poll.
//! - A slot's bit in `occupied` is set exactly when its list is non-empty.
//! - `nodes[i]` is either linked into exactly one slot's list, or on the free list.
//! - `next`, when known, always equals what a scan of the bitmap would return.

/// A point in time, counted in ticks of the caller's choosing.
pub type Tick = u64;

/// Names an armed entry, for [`TimerWheel::cancel`]. Valid until the entry expires or is
/// cancelled; after that the id may be reused for another entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId(u32);

impl TimerId {
    /// Names no entry: what a holder keeps once its entry has expired, so that it never
    /// cancels an id the wheel may have given to another entry since.
    pub const NONE: TimerId = TimerId(NIL);
}

/// The end of a list.
const NIL: u32 = u32::MAX;

/// One armed (or free) entry. 24 bytes: this is the wheel's whole cost per connection.
#[derive(Debug, Clone)]
struct Node {
    /// The tick at or after which the entry expires.
    deadline: Tick,
    /// The caller's value (the reactor stores a connection key).
    value: u32,
    /// Previous node in the slot's list, or NIL. Unused while free.
    prev: u32,
    /// Next node in the slot's list, or in the free list; NIL at the end.
    next: u32,
}

/// A hashed timing wheel mapping deadlines (ticks) to `u32` values.
#[derive(Debug)]
pub struct TimerWheel {
    /// First node of each slot's list, or NIL. Its length is a power of two.
    heads: Vec<u32>,
    /// One bit per slot: set when the slot's list is non-empty.
    occupied: Vec<u64>,
    /// Entries, linked into slot lists or the free list.
    nodes: Vec<Node>,
    /// Head of the free list of nodes, or NIL.
    free: u32,
    /// Number of armed entries.
    len: usize,
    /// The last tick passed to `poll` (0 at the start).
    elapsed: Tick,
    /// The answer of `next_expiration`, or `None` when it must be scanned for again.
    next: std::cell::Cell<Option<Tick>>,
}

impl TimerWheel {
    /// A wheel of at least `slots` slots (rounded up to a power of two, at least 64). Size it
    /// to the longest usual deadline in ticks, so that polls never meet later rounds.
    pub fn new(slots: usize) -> Self {
        Self::with_capacity(slots, 0)
    }

    /// As [`TimerWheel::new`], with room reserved for `entries` entries (24 bytes each), so
    /// arming up to that many never copies the entries to a larger buffer.
    pub fn with_capacity(slots: usize, entries: usize) -> Self {
        let slots = slots.max(64).next_power_of_two();
        TimerWheel {
            heads: vec![NIL; slots],
            occupied: vec![0; slots / 64],
            nodes: Vec::with_capacity(entries),
            free: NIL,
            len: 0,
            elapsed: 0,
            next: std::cell::Cell::new(None),
        }
    }

    /// Number of armed entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is armed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The last tick polled.
    pub fn elapsed(&self) -> Tick {
        self.elapsed
    }

    fn mask(&self) -> u64 {
        self.heads.len() as u64 - 1
    }

    fn slot_of(&self, deadline: Tick) -> usize {
        (deadline & self.mask()) as usize
    }

    /// Arms an entry that expires at `deadline` (or on the next poll, if that has passed).
    pub fn arm(&mut self, deadline: Tick, value: u32) -> TimerId {
        let deadline = deadline.max(self.elapsed + 1);
        let node = Node {
            deadline,
            value,
            prev: NIL,
            next: NIL,
        };
        let index = if self.free == NIL {
            let index = self.nodes.len();
            assert!(index < NIL as usize, "timer wheel full: {index} entries");
            self.nodes.push(node);
            index as u32
        } else {
            let index = self.free;
            self.free = self.nodes[index as usize].next;
            self.nodes[index as usize] = node;
            index
        };
        self.link(index);
        self.len += 1;
        if let Some(next) = self.next.get() {
            self.next.set(Some(next.min(self.first_visit(deadline))));
        }
        TimerId(index)
    }

    /// Cancels an armed entry; returns its value.
    ///
    /// `id` must name an armed entry (one neither expired nor cancelled since `arm`).
    pub fn cancel(&mut self, id: TimerId) -> u32 {
        debug_assert!(
            self.is_linked(id.0),
            "cancel of an entry that is not armed: {id:?}"
        );
        let visit = self.first_visit(self.nodes[id.0 as usize].deadline);
        if self.next.get() == Some(visit) {
            self.next.set(None);
        }
        self.unlink(id.0);
        self.release(id.0)
    }

    /// The deadline of an armed entry.
    pub fn deadline(&self, id: TimerId) -> Tick {
        self.nodes[id.0 as usize].deadline
    }

    /// Advances to tick `now` and appends the values of all entries whose deadline is at
    /// or before `now` to `expired`. Each expired entry is removed (its id is dead).
    ///
    /// Cost: the slots of the ticks since the last poll (at most one revolution), plus the
    /// entries in them. A `now` at or before the last poll does nothing.
    pub fn poll(&mut self, now: Tick, expired: &mut Vec<u32>) {
        if now <= self.elapsed {
            return;
        }
        let ticks = (now - self.elapsed).min(self.heads.len() as u64);
        for t in self.elapsed + 1..=self.elapsed + ticks {
            let slot = self.slot_of(t);
            let mut index = self.heads[slot];
            while index != NIL {
                let node = &self.nodes[index as usize];
                let next = node.next;
                if node.deadline <= now {
                    self.unlink(index);
                    expired.push(self.release(index));
                }
                index = next;
            }
        }
        self.elapsed = now;
        if self.next.get().is_some_and(|next| next <= now) {
            self.next.set(None);
        }
    }

    /// A tick at or before the earliest deadline armed (exact when every deadline is less
    /// than one revolution away), or `None` when nothing is armed. Never later than the
    /// earliest deadline, so a caller that sleeps until then never fires late.
    pub fn next_expiration(&self) -> Option<Tick> {
        if self.len == 0 {
            return None;
        }
        if let Some(next) = self.next.get() {
            debug_assert_eq!(
                Some(next),
                self.scan_next(),
                "cached next expiration is stale"
            );
            return Some(next);
        }
        let next = self.scan_next();
        self.next.set(next);
        next
    }

    /// The first tick after `elapsed` whose slot is occupied: a scan of the bitmap from the
    /// slot after `elapsed`, around the ring once, 64 slots a word.
    fn scan_next(&self) -> Option<Tick> {
        if self.len == 0 {
            return None;
        }
        let slots = self.heads.len();
        let start = self.slot_of(self.elapsed + 1);
        let mut distance = 0usize;
        let mut slot = start;
        while distance < slots {
            let word = self.occupied[slot / 64] >> (slot % 64);
            if word != 0 {
                let skip = word.trailing_zeros() as usize;
                let d = distance + skip;
                if d < slots {
                    return Some(self.elapsed + 1 + d as u64);
                }
                break;
            }
            let step = 64 - slot % 64;
            distance += step;
            slot = (slot + step) % slots;
        }
        // Unreachable while `len > 0` and the bitmap is right; be safe rather than sleep forever.
        debug_assert!(false, "len {} but no occupied slot", self.len);
        Some(self.elapsed + 1)
    }

    /// The first tick after `elapsed` at which a poll visits the slot of `deadline` (the
    /// deadline itself when it is less than one revolution away).
    fn first_visit(&self, deadline: Tick) -> Tick {
        self.elapsed + 1 + ((deadline - self.elapsed - 1) & self.mask())
    }

    fn is_linked(&self, index: u32) -> bool {
        let Some(node) = self.nodes.get(index as usize) else {
            return false;
        };
        if node.prev != NIL {
            return true;
        }
        self.heads[self.slot_of(node.deadline)] == index
    }

    fn link(&mut self, index: u32) {
        let slot = self.slot_of(self.nodes[index as usize].deadline);
        let head = self.heads[slot];
        {
            let node = &mut self.nodes[index as usize];
            node.prev = NIL;
            node.next = head;
        }
        if head != NIL {
            self.nodes[head as usize].prev = index;
        }
        self.heads[slot] = index;
        self.occupied[slot / 64] |= 1 << (slot % 64);
    }

    fn unlink(&mut self, index: u32) {
        let (prev, next, deadline) = {
            let node = &self.nodes[index as usize];
            (node.prev, node.next, node.deadline)
        };
        if prev == NIL {
            let slot = self.slot_of(deadline);
            debug_assert_eq!(
                self.heads[slot], index,
                "unlink of a node not at its slot's head"
            );
            self.heads[slot] = next;
            if next == NIL {
                self.occupied[slot / 64] &= !(1 << (slot % 64));
            }
        } else {
            self.nodes[prev as usize].next = next;
        }
        if next != NIL {
            self.nodes[next as usize].prev = prev;
        }
    }

    /// Puts an unlinked node on the free list; returns its value.
    fn release(&mut self, index: u32) -> u32 {
        let node = &mut self.nodes[index as usize];
        node.prev = NIL;
        node.next = self.free;
        // A free node's deadline points at no slot whose head it could be mistaken for.
        node.deadline = Tick::MAX;
        self.free = index;
        self.len -= 1;
        node.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn poll(wheel: &mut TimerWheel, now: Tick) -> Vec<u32> {
        let mut out = Vec::new();
        wheel.poll(now, &mut out);
        out.sort_unstable();
        out
    }

    #[test]
    fn expires_in_deadline_order_and_never_early() {
        let mut wheel = TimerWheel::new(64);
        wheel.arm(5, 50);
        wheel.arm(3, 30);
        wheel.arm(4, 40);
        assert_eq!(wheel.next_expiration(), Some(3));
        assert_eq!(poll(&mut wheel, 2), Vec::<u32>::new());
        assert_eq!(poll(&mut wheel, 3), vec![30]);
        assert_eq!(wheel.next_expiration(), Some(4));
        assert_eq!(poll(&mut wheel, 4), vec![40]);
        assert_eq!(poll(&mut wheel, 5), vec![50]);
        assert!(wheel.is_empty());
        assert_eq!(wheel.next_expiration(), None);
    }

    #[test]
    fn a_jump_expires_everything_due() {
        let mut wheel = TimerWheel::new(64);
        for d in 1..=40 {
            wheel.arm(d, d as u32);
        }
        assert_eq!(poll(&mut wheel, 40), (1..=40).collect::<Vec<_>>());
    }

    #[test]
    fn cancel_removes_only_that_entry() {
        let mut wheel = TimerWheel::new(64);
        let a = wheel.arm(7, 1);
        let b = wheel.arm(7, 2);
        let c = wheel.arm(7, 3);
        assert_eq!(wheel.cancel(b), 2);
        assert_eq!(wheel.len(), 2);
        assert_eq!(poll(&mut wheel, 7), vec![1, 3]);
        let _ = (a, c);
    }

    #[test]
    fn cancel_head_middle_and_tail_of_a_slot() {
        let mut wheel = TimerWheel::new(64);
        let ids: Vec<TimerId> = (0..5).map(|v| wheel.arm(9, v)).collect();
        wheel.cancel(ids[4]); // head (pushed last)
        wheel.cancel(ids[2]); // middle
        wheel.cancel(ids[0]); // tail
        assert_eq!(poll(&mut wheel, 9), vec![1, 3]);
        assert_eq!(wheel.next_expiration(), None);
    }

    #[test]
    fn many_entries_in_one_slot() {
        let mut wheel = TimerWheel::new(64);
        for v in 0..10_000 {
            wheel.arm(10, v);
        }
        // Same slot, a later round: must survive the first visit.
        wheel.arm(10 + 64, 99_999);
        let expired = poll(&mut wheel, 10);
        assert_eq!(expired.len(), 10_000);
        assert_eq!(wheel.len(), 1);
        assert_eq!(poll(&mut wheel, 73), Vec::<u32>::new());
        assert_eq!(poll(&mut wheel, 74), vec![99_999]);
    }

    #[test]
    fn wrap_around_many_revolutions() {
        let mut wheel = TimerWheel::new(64);
        let mut now = 0;
        for round in 0..1_000u64 {
            let deadline = now + 1 + (round * 37) % 63;
            wheel.arm(deadline, round as u32);
            while !wheel.is_empty() {
                now += 1;
                let expired = poll(&mut wheel, now);
                if !expired.is_empty() {
                    assert_eq!(now, deadline, "round {round}");
                    assert_eq!(expired, vec![round as u32]);
                }
            }
        }
    }

    #[test]
    fn deadline_beyond_one_revolution() {
        let mut wheel = TimerWheel::new(64);
        wheel.arm(1_000, 7);
        // next_expiration may be early (a lower bound), never late.
        assert!(wheel.next_expiration().unwrap() <= 1_000);
        for now in 1..1_000 {
            assert_eq!(poll(&mut wheel, now), Vec::<u32>::new(), "at {now}");
        }
        assert_eq!(poll(&mut wheel, 1_000), vec![7]);
    }

    #[test]
    fn past_deadline_fires_on_next_poll() {
        let mut wheel = TimerWheel::new(64);
        poll(&mut wheel, 100);
        wheel.arm(50, 1);
        assert_eq!(wheel.next_expiration(), Some(101));
        assert_eq!(poll(&mut wheel, 101), vec![1]);
    }

    #[test]
    fn lazy_rearm_pattern() {
        // The reactor's pattern: an entry fires, the owner sees later progress, re-arms.
        let mut wheel = TimerWheel::new(64);
        let timeout = 20;
        let mut last_progress = 0;
        wheel.arm(last_progress + timeout, 1);
        last_progress = 15; // progress happened, the entry was not touched
        assert_eq!(poll(&mut wheel, 20), vec![1]);
        wheel.arm(last_progress + timeout, 1);
        assert_eq!(poll(&mut wheel, 34), Vec::<u32>::new());
        assert_eq!(poll(&mut wheel, 35), vec![1]);
    }

    #[test]
    fn ids_are_reused_after_expiry() {
        let mut wheel = TimerWheel::new(64);
        let a = wheel.arm(1, 1);
        poll(&mut wheel, 1);
        let b = wheel.arm(5, 2);
        assert_eq!(a, b, "freed node is reused");
        assert_eq!(wheel.deadline(b), 5);
        assert_eq!(wheel.cancel(b), 2);
    }

    #[test]
    fn next_expiration_skips_empty_words_and_wraps() {
        let mut wheel = TimerWheel::new(256);
        poll(&mut wheel, 200);
        wheel.arm(200 + 250, 1); // wraps past the end of the ring
        assert_eq!(wheel.next_expiration(), Some(450));
        wheel.arm(330, 2);
        assert_eq!(wheel.next_expiration(), Some(330));
    }

    #[test]
    fn matches_a_sorted_model_on_a_fixed_pseudo_random_run() {
        // A deterministic xorshift drives arm/cancel/poll; a BTreeMap is the model.
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut wheel = TimerWheel::new(64);
        let mut model: BTreeMap<u32, (Tick, TimerId)> = BTreeMap::new();
        let mut now = 0;
        for value in 0..20_000u32 {
            match next() % 4 {
                0 | 1 => {
                    let deadline = now + next() % 200;
                    let id = wheel.arm(deadline, value);
                    model.insert(value, (deadline.max(now + 1), id));
                }
                2 => {
                    if let Some((&v, &(_, id))) = model.iter().nth((next() % 8) as usize) {
                        assert_eq!(wheel.cancel(id), v);
                        model.remove(&v);
                    }
                }
                _ => {
                    now += next() % 70;
                    let got = poll(&mut wheel, now);
                    let want: Vec<u32> = model
                        .iter()
                        .filter(|(_, &(d, _))| d <= now)
                        .map(|(&v, _)| v)
                        .collect();
                    for v in &want {
                        model.remove(v);
                    }
                    assert_eq!(got, want, "at tick {now}");
                    if let Some(next_exp) = wheel.next_expiration() {
                        let min = model.values().map(|&(d, _)| d).min().unwrap();
                        assert!(next_exp <= min, "next {next_exp} after min {min}");
                    }
                }
            }
            assert_eq!(wheel.len(), model.len());
        }
    }

    /// Property tests: random arm/cancel/advance runs against a sorted model of deadlines.
    ///
    /// The wheel is small (64..256 slots) and deadlines reach far past one revolution, and
    /// `now` jumps by more than the whole wheel, so later rounds in a slot, wrap-around and
    /// the capped slot walk in `poll` are all met. Values are unique per run (the op's
    /// index), so "the set expired" is well defined.
    mod properties {
        use super::*;
        use proptest::prelude::*;
        use proptest::sample::Index;

        /// One step of a run.
        #[derive(Debug, Clone)]
        enum Op {
            /// Arm at `now + delay`: within a revolution, past it, or many revolutions out.
            ArmIn(Tick),
            /// Arm at `now - back` (saturating): a deadline already due.
            ArmPast(Tick),
            /// Cancel the live entry at this index in the model's order (if any).
            Cancel(Index),
            /// `now += by`, then poll: a repeat of `now`, a few ticks, or a jump past the wheel.
            Advance(Tick),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                5 => prop_oneof![6 => 0..64u64, 3 => 64..300u64, 1 => 300..5_000u64].prop_map(Op::ArmIn),
                1 => (0..100u64).prop_map(Op::ArmPast),
                2 => any::<Index>().prop_map(Op::Cancel),
                4 => prop_oneof![1 => Just(0u64), 6 => 1..70u64, 2 => 60..140u64, 1 => 250..2_000u64]
                    .prop_map(Op::Advance),
            ]
        }

        /// Slots asked for: 1 and 64 give the minimum wheel (64), 100 rounds up to 128.
        fn slots() -> impl Strategy<Value = usize> {
            prop::sample::select(vec![1usize, 64, 100, 256])
        }

        proptest! {
            /// After every step: each poll expires exactly the entries the model says are
            /// due at that tick (deadline in (previous now, now]); `len()` and each entry's
            /// `deadline()` match; `next_expiration()` is `None` exactly when empty, is
            /// never before the next tick nor after the earliest deadline, and is exact
            /// when every deadline is within one revolution.
            #[test]
            fn wheel_matches_a_sorted_model(
                slots in slots(),
                ops in prop::collection::vec(op(), 1..200),
            ) {
                let mut wheel = TimerWheel::new(slots);
                let revolution = slots.max(64).next_power_of_two() as Tick;
                // value -> (deadline as the wheel must hold it, id)
                let mut model: BTreeMap<u32, (Tick, TimerId)> = BTreeMap::new();
                let mut now: Tick = 0;
                let mut expired = Vec::new();
                for (step, op) in ops.into_iter().enumerate() {
                    let value = step as u32;
                    match op {
                        Op::ArmIn(delay) => {
                            let id = wheel.arm(now + delay, value);
                            model.insert(value, ((now + delay).max(now + 1), id));
                        }
                        Op::ArmPast(back) => {
                            let id = wheel.arm(now.saturating_sub(back), value);
                            model.insert(value, (now + 1, id));
                        }
                        Op::Cancel(index) => {
                            if !model.is_empty() {
                                let v = *model.keys().nth(index.index(model.len())).unwrap();
                                let (_, id) = model.remove(&v).unwrap();
                                prop_assert_eq!(wheel.cancel(id), v);
                            }
                        }
                        Op::Advance(by) => {
                            let before = now;
                            now += by;
                            expired.clear();
                            wheel.poll(now, &mut expired);
                            expired.sort_unstable();
                            let due: Vec<u32> = model
                                .iter()
                                .filter(|(_, &(deadline, _))| deadline <= now)
                                .map(|(&v, _)| v)
                                .collect();
                            for v in &due {
                                model.remove(v);
                            }
                            prop_assert_eq!(&expired, &due, "poll {} -> {}", before, now);
                            prop_assert_eq!(wheel.elapsed(), now);
                        }
                    }
                    prop_assert_eq!(wheel.len(), model.len(), "after step {}", step);
                    for &(deadline, id) in model.values() {
                        prop_assert_eq!(wheel.deadline(id), deadline);
                    }
                    let earliest = model.values().map(|&(d, _)| d).min();
                    let latest = model.values().map(|&(d, _)| d).max();
                    match (wheel.next_expiration(), earliest) {
                        (None, None) => {}
                        (Some(next), Some(earliest)) => {
                            prop_assert!(next > now, "next {} not after now {}", next, now);
                            prop_assert!(next <= earliest, "next {} after earliest {}", next, earliest);
                            if latest.unwrap() <= now + revolution {
                                prop_assert_eq!(next, earliest, "all within a revolution");
                            }
                        }
                        (got, want) => prop_assert!(false, "next {:?}, earliest {:?}", got, want),
                    }
                }
            }
        }
    }
}
