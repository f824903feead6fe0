//! Expect: what one fault cycle must receive, judged from the bytes and the end of the
//! stream alone (pure: no sockets, no clocks; the caller says how long the cycle took).
//!
//! Frames the cycle sends go through [`Expect::queue_frame`], so their replies are
//! checked by a [`ReplyChecker`] byte for byte, in order; garbage's replies are computed
//! up front by splitting on TAB ([`garbage`]).
//!
//! # Invariants
//! - `matched` is always at most `replies.len()`, and `replies[..matched]` always equals
//!   the bytes received (garbage; partial, whose `replies` is the memory budget's line).
//! - `error_line_seen` is set only when every frame sent was answered first (oversize).

use std::fmt;
use std::time::Duration;

use super::FaultKind;
use crate::load::payload::splitmix64;
use crate::load::verify::{ReplyChecker, Verdict};
use crate::protocol::{self, DELIMITER, REPLY_PREFIX};

/// A trickled (or partial) connection closed sooner than this fraction of the idle timeout
/// after its connect was issued, without another reason, was reaped too early (the 10% absorb the server's clock, read once
/// per loop turn, being older than the accept it stamps).
pub const TRICKLE_EARLIEST: f64 = 0.9;

/// How a connection ended, as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// A clean end of stream (FIN).
    Eof,
    /// Reset or broken by the server, described.
    Reset(String),
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::Eof => f.write_str("EOF"),
            End::Reset(how) => f.write_str(how),
        }
    }
}

/// The receive side of one fault cycle.
#[derive(Debug)]
pub struct Expect {
    /// Whose expectations these are.
    kind: FaultKind,
    /// The replies owed to the frames sent.
    checker: ReplyChecker<()>,
    /// Frames answered so far.
    answered: u64,
    /// Garbage: the reply bytes owed, in order. Partial: the one line it may get, the
    /// memory budget's.
    replies: Vec<u8>,
    /// Garbage, partial: how many of `replies` arrived.
    matched: usize,
    /// Oversize: the error line owed, without its TAB.
    error_line: Vec<u8>,
    /// Oversize: the error line arrived, after every reply.
    error_line_seen: bool,
}

impl Expect {
    /// Expectations of a `kind` cycle whose frames come from `checker`, against a server
    /// whose frame limit is `max_frame`.
    pub fn new(kind: FaultKind, checker: ReplyChecker<()>, max_frame: usize) -> Self {
        let mut error_line = protocol::frame_too_long(max_frame);
        error_line.pop();
        let replies = match kind {
            FaultKind::Partial => protocol::MEMORY_BUDGET_EXCEEDED.to_vec(),
            _ => Vec::new(),
        };
        Expect {
            kind,
            checker,
            answered: 0,
            replies,
            matched: 0,
            error_line,
            error_line_seen: false,
        }
    }

    /// Appends the next frame (payload + TAB) to `out`; its reply is now owed.
    pub fn queue_frame(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.checker.next_payload());
        out.push(DELIMITER);
        self.checker.sent(());
    }

    /// Appends `n` empty frames (flood: the payload source must be of empty payloads).
    pub fn queue_empty_frames(&mut self, n: usize, out: &mut Vec<u8>) {
        debug_assert!(
            self.checker.next_payload().is_empty(),
            "flood frames are empty"
        );
        out.resize(out.len() + n, DELIMITER);
        for _ in 0..n {
            self.checker.sent(());
        }
    }

    /// Garbage: the reply bytes owed for the garbage sent.
    pub fn owe_replies(&mut self, replies: Vec<u8>) {
        self.replies = replies;
    }

    /// Every frame sent is answered and no reply is half received.
    pub fn all_answered(&self) -> bool {
        self.checker.in_flight() == 0 && self.checker.pending_bytes() == 0
    }

    /// Checks received bytes; `Err` describes the first thing wrong.
    pub fn take(&mut self, data: &[u8]) -> Result<(), String> {
        match self.kind {
            FaultKind::Trickle => Err(format!(
                "received {} bytes; an unfinished frame gets no reply",
                data.len()
            )),
            FaultKind::Garbage => self.take_garbage_replies(data),
            FaultKind::Partial => self.take_budget_line(data),
            _ => self.take_replies(data),
        }
    }

    /// Partial: whether the memory budget's error line arrived whole (it was evicted).
    pub fn evicted(&self) -> bool {
        self.kind == FaultKind::Partial && self.matched == self.replies.len()
    }

    /// Partial: an unfinished frame gets no reply; the only bytes it may receive are the
    /// memory budget's error line (docs/PROTOCOL.md, the buffer-memory budget).
    fn take_budget_line(&mut self, data: &[u8]) -> Result<(), String> {
        let want = &self.replies[self.matched..];
        if !want.starts_with(data) {
            return Err(format!(
                "received {:?} after {} bytes; a held partial frame gets no byte but {:?}",
                String::from_utf8_lossy(&data[..data.len().min(64)]),
                self.matched,
                String::from_utf8_lossy(&self.replies)
            ));
        }
        self.matched += data.len();
        Ok(())
    }

    fn take_garbage_replies(&mut self, data: &[u8]) -> Result<(), String> {
        let want = &self.replies[self.matched..];
        let n = want.len().min(data.len());
        if let Some(at) = (0..n).find(|&i| want[i] != data[i]) {
            return Err(format!(
                "reply byte {} of {} differs: got {:#04x}, expected {:#04x}",
                self.matched + at,
                self.replies.len(),
                data[at],
                want[at]
            ));
        }
        self.matched += n;
        if data.len() > n {
            return Err(format!(
                "{} bytes more than the {} owed for the garbage's frames",
                data.len() - n,
                self.replies.len()
            ));
        }
        Ok(())
    }

    fn take_replies(&mut self, data: &[u8]) -> Result<(), String> {
        if self.error_line_seen {
            return Err(format!("{} bytes after the error line", data.len()));
        }
        let oversize = self.kind == FaultKind::Oversize;
        let mut answered = 0u64;
        let mut error_line = None;
        let mut wrong = None;
        let outcome = self.checker.feed(data, &mut |v| match v {
            Verdict::Answered(()) => answered += 1,
            Verdict::ErrorReply(line) if oversize && error_line.is_none() && wrong.is_none() => {
                error_line = Some(line);
            }
            other => {
                wrong.get_or_insert((other, answered));
            }
        });
        let before = self.answered;
        self.answered += answered;
        if let Some((v, at)) = wrong {
            return Err(describe(v, before + at));
        }
        if outcome.is_err() {
            return Err("no TAB within the longest reply".into());
        }
        if let Some(line) = error_line {
            if line != self.error_line {
                return Err(format!(
                    "error line {:?}, expected {:?}",
                    String::from_utf8_lossy(&line),
                    String::from_utf8_lossy(&self.error_line)
                ));
            }
            if self.checker.in_flight() > 0 {
                return Err(format!(
                    "the error line before the replies to {} of {} frames",
                    self.checker.in_flight(),
                    self.checker.next_seq()
                ));
            }
            self.error_line_seen = true;
        }
        Ok(())
    }

    /// Judges the cycle when its stream ended: `end` how, `write_shut` whether we had
    /// shut our side, `after` how long after the connect was issued, `idle` the
    /// server's timeout.
    pub fn at_end(
        &self,
        end: &End,
        write_shut: bool,
        after: Duration,
        idle: Duration,
    ) -> Result<(), String> {
        let replies = format!("{} of {} replies", self.answered, self.checker.next_seq());
        match self.kind {
            FaultKind::Reset => Err(format!("{end} before any reply")),
            FaultKind::HalfClose | FaultKind::SlowRead => {
                if *end == End::Eof && write_shut && self.all_answered() {
                    Ok(())
                } else if !write_shut {
                    Err(format!("{end} before we shut our side, after {replies}"))
                } else {
                    Err(format!("{end} after {replies}"))
                }
            }
            // Reaped: what arrived was checked as it came (a prefix may end mid-reply).
            FaultKind::NoRead | FaultKind::Flood => Ok(()),
            FaultKind::Partial if self.evicted() => Ok(()),
            FaultKind::Partial if self.matched > 0 => Err(format!(
                "{end} after {} of the {} bytes of the memory budget's error line",
                self.matched,
                self.replies.len()
            )),
            FaultKind::Trickle | FaultKind::Partial => {
                if after < idle.mul_f64(TRICKLE_EARLIEST) {
                    Err(format!(
                        "closed ({end}) {} ms after connect, before the idle timeout of {} ms",
                        after.as_millis(),
                        idle.as_millis()
                    ))
                } else {
                    Ok(())
                }
            }
            FaultKind::Oversize => {
                if !self.error_line_seen {
                    Err(format!("{end} after {replies}, without the error line"))
                } else if *end != End::Eof {
                    Err(format!("{end} instead of EOF after the error line"))
                } else {
                    Ok(())
                }
            }
            FaultKind::Garbage => {
                if *end == End::Eof && self.matched == self.replies.len() {
                    Ok(())
                } else {
                    Err(format!(
                        "{end} after {} of {} reply bytes",
                        self.matched,
                        self.replies.len()
                    ))
                }
            }
        }
    }

    /// Why a cycle that reached its deadline (`within` of the connect) has no outcome.
    pub fn no_outcome(&self, within: Duration) -> String {
        let ms = within.as_millis();
        match self.kind {
            FaultKind::NoRead | FaultKind::Flood => format!("not reaped within {ms} ms"),
            FaultKind::Trickle | FaultKind::Partial => format!("not closed within {ms} ms"),
            FaultKind::Garbage => format!(
                "no EOF within {ms} ms, {} of {} reply bytes",
                self.matched,
                self.replies.len()
            ),
            FaultKind::Oversize if self.error_line_seen => {
                format!("no EOF within {ms} ms of the connect, after the error line")
            }
            _ => format!(
                "no end within {ms} ms of the connect, {} of {} replies",
                self.answered,
                self.checker.next_seq()
            ),
        }
    }
}

/// A checker verdict other than a correct reply, after `after` correct ones, described.
fn describe(v: Verdict<()>, after: u64) -> String {
    match v {
        Verdict::Answered(()) => "answered".into(),
        Verdict::Corrupt(()) => format!("a corrupt reply after {after} correct ones"),
        Verdict::Lost(()) => format!("a reply skipped after {after} correct ones"),
        Verdict::ErrorReply(line) => format!(
            "an error line {:?} after {after} correct replies",
            String::from_utf8_lossy(&line)
        ),
        Verdict::Unsolicited(len) => {
            format!("a {len}-byte reply with no frame in flight, after {after} correct ones")
        }
    }
}

/// `len` random bytes from `seed` with TABs (about one in eight), NUL, 0xFF and the
/// rest, no frame longer than `max_frame`; and the replies the server owes for them
/// (the trailing unfinished frame gets none).
pub fn garbage(seed: u64, len: usize, max_frame: usize) -> (Vec<u8>, Vec<u8>) {
    let mut state = seed;
    let mut bytes = Vec::with_capacity(len);
    let mut run = 0;
    for _ in 0..len {
        state = splitmix64(state);
        let byte = if run >= max_frame || state.is_multiple_of(8) {
            DELIMITER
        } else {
            (state >> 32) as u8
        };
        run = if byte == DELIMITER { 0 } else { run + 1 };
        bytes.push(byte);
    }
    let mut replies = Vec::new();
    let mut frames = bytes.split(|&b| b == DELIMITER).peekable();
    while let Some(frame) = frames.next() {
        if frames.peek().is_some() {
            protocol::encode_reply(&mut replies, frame, b"");
        }
    }
    debug_assert!(replies.is_empty() || replies.starts_with(REPLY_PREFIX));
    (bytes, replies)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::payload::PayloadSource;

    const IDLE: Duration = Duration::from_millis(1000);

    /// An `Expect` of `kind` with `frames` frames queued; and the replies they are owed.
    fn setup(kind: FaultKind, frames: usize, max_frame: usize) -> (Expect, Vec<u8>) {
        let checker = ReplyChecker::new(9, PayloadSource::new(10), false);
        let mut expect = Expect::new(kind, checker, max_frame);
        let mut out = Vec::new();
        for _ in 0..frames {
            expect.queue_frame(&mut out);
        }
        let replies = out
            .split(|&b| b == b'\t')
            .filter(|f| !f.is_empty())
            .flat_map(|f| [b"server got:".as_slice(), f, b"\t"].concat())
            .collect();
        (expect, replies)
    }

    #[track_caller]
    fn judged(expect: &Expect, end: End) -> Result<(), String> {
        expect.at_end(&end, true, IDLE, IDLE)
    }

    #[test]
    fn halfclose_needs_every_reply_then_eof() {
        let (mut expect, replies) = setup(FaultKind::HalfClose, 4, 1024);
        let (head, tail) = replies.split_at(replies.len() - 3);
        expect.take(head).unwrap();
        let early = judged(&expect, End::Eof).unwrap_err();
        assert!(early.contains("EOF after 3 of 4 replies"), "{early}");
        expect.take(tail).unwrap();
        assert_eq!(judged(&expect, End::Eof), Ok(()));
        assert!(judged(&expect, End::Reset("connection reset".into())).is_err());
        assert!(expect
            .at_end(&End::Eof, false, IDLE, IDLE)
            .unwrap_err()
            .contains("before we shut our side"));
        // A reply to the unfinished fragment is one too many.
        let extra = expect.take(b"server got:no TAB follows\t").unwrap_err();
        assert!(extra.contains("no frame in flight"), "{extra}");
    }

    #[test]
    fn a_corrupt_reply_is_described() {
        let (mut expect, mut replies) = setup(FaultKind::SlowRead, 3, 1024);
        let last = replies.len() - 2;
        replies[last] ^= 1;
        let why = expect.take(&replies).unwrap_err();
        assert!(why.contains("corrupt reply after 2 correct ones"), "{why}");
    }

    #[test]
    fn oversize_needs_replies_then_the_exact_error_line_then_eof() {
        let (mut expect, replies) = setup(FaultKind::Oversize, 8, 1024);
        expect.take(&replies).unwrap();
        assert!(judged(&expect, End::Eof)
            .unwrap_err()
            .contains("without the error line"));
        expect.take(b"error: frame exceeds 1024 bytes\t").unwrap();
        assert_eq!(judged(&expect, End::Eof), Ok(()));
        let reset = judged(&expect, End::Reset("connection reset".into())).unwrap_err();
        assert!(reset.contains("instead of EOF"), "{reset}");
        assert!(expect
            .take(b"x")
            .unwrap_err()
            .contains("after the error line"));
    }

    #[test]
    fn oversize_rejects_another_limit_and_an_early_error() {
        let (mut expect, replies) = setup(FaultKind::Oversize, 2, 1024);
        let mut stream = replies.clone();
        stream.extend_from_slice(b"error: frame exceeds 2048 bytes\t");
        let why = expect.take(&stream).unwrap_err();
        assert!(why.contains("2048") && why.contains("1024"), "{why}");

        let (mut expect, _) = setup(FaultKind::Oversize, 2, 1024);
        let why = expect
            .take(b"error: frame exceeds 1024 bytes\t")
            .unwrap_err();
        assert!(why.contains("before the replies to 2 of 2 frames"), "{why}");
    }

    #[test]
    fn noread_accepts_any_correct_prefix_and_rejects_corruption() {
        let (mut expect, replies) = setup(FaultKind::NoRead, 5, 1024);
        expect.take(&replies[..replies.len() / 2]).unwrap();
        assert_eq!(
            judged(&expect, End::Reset("connection reset".into())),
            Ok(())
        );
        let (mut expect, mut replies) = setup(FaultKind::NoRead, 5, 1024);
        replies[12] = b'\0';
        assert!(expect.take(&replies).is_err());
    }

    #[test]
    fn trickle_gets_no_byte_and_no_early_close() {
        let (mut expect, _) = setup(FaultKind::Trickle, 0, 1024);
        assert!(expect.take(b"s").is_err());
        let (expect, _) = setup(FaultKind::Trickle, 0, 1024);
        assert_eq!(expect.at_end(&End::Eof, false, IDLE, IDLE), Ok(()));
        let early = expect.at_end(&End::Eof, false, IDLE / 2, IDLE).unwrap_err();
        assert!(early.contains("500 ms after connect"), "{early}");
        // A reset (our next byte crossing the server's FIN) is still the reap.
        let reset = End::Reset("connection reset".into());
        assert_eq!(expect.at_end(&reset, false, IDLE, IDLE), Ok(()));
    }

    #[test]
    fn partial_gets_no_byte_and_no_early_close_or_the_budget_line_whole() {
        // Reaped for idleness: as trickle.
        let (expect, _) = setup(FaultKind::Partial, 0, 1024);
        assert_eq!(expect.at_end(&End::Eof, false, IDLE, IDLE), Ok(()));
        assert!(!expect.evicted());
        let early = expect.at_end(&End::Eof, false, IDLE / 2, IDLE).unwrap_err();
        assert!(early.contains("before the idle timeout"), "{early}");
        // Evicted by the memory budget, at any time, the line split anywhere, then EOF
        // or a reset.
        let line = b"error: server buffer memory exhausted\t";
        for cut in 0..=line.len() {
            let (mut expect, _) = setup(FaultKind::Partial, 0, 1024);
            expect.take(&line[..cut]).unwrap();
            expect.take(&line[cut..]).unwrap();
            assert!(expect.evicted(), "cut {cut}");
            assert_eq!(expect.at_end(&End::Eof, false, IDLE / 10, IDLE), Ok(()));
            let reset = End::Reset("connection reset".into());
            assert_eq!(expect.at_end(&reset, false, IDLE / 10, IDLE), Ok(()));
        }
        // Half the line, then the end; any other byte; a byte after the line.
        let (mut expect, _) = setup(FaultKind::Partial, 0, 1024);
        expect.take(&line[..10]).unwrap();
        let half = expect.at_end(&End::Eof, false, IDLE, IDLE).unwrap_err();
        assert!(half.contains("after 10 of the 38 bytes"), "{half}");
        let (mut expect, _) = setup(FaultKind::Partial, 0, 1024);
        assert!(expect.take(b"server got:").is_err());
        let (mut expect, _) = setup(FaultKind::Partial, 0, 1024);
        expect.take(line).unwrap();
        assert!(expect.take(b"x").is_err());
    }

    #[test]
    fn reset_must_see_replies_flow_first() {
        let (expect, _) = setup(FaultKind::Reset, 3, 1024);
        assert!(judged(&expect, End::Eof)
            .unwrap_err()
            .contains("before any reply"));
    }

    #[test]
    fn garbage_replies_are_checked_byte_for_byte_in_any_split() {
        let (bytes, replies) = garbage(5, 300, 64);
        assert!(bytes.contains(&b'\t'));
        for cut in [0, 1, replies.len() / 2, replies.len()] {
            let (mut expect, _) = setup(FaultKind::Garbage, 0, 64);
            expect.owe_replies(replies.clone());
            expect.take(&replies[..cut]).unwrap();
            expect.take(&replies[cut..]).unwrap();
            assert_eq!(judged(&expect, End::Eof), Ok(()), "cut {cut}");
        }
        let (mut expect, _) = setup(FaultKind::Garbage, 0, 64);
        expect.owe_replies(replies.clone());
        let mut bad = replies.clone();
        bad[20] ^= 0x80;
        assert!(expect.take(&bad).unwrap_err().contains("reply byte 20 of"));
        let (mut expect, _) = setup(FaultKind::Garbage, 0, 64);
        expect.owe_replies(replies.clone());
        expect.take(&replies[..10]).unwrap();
        assert!(judged(&expect, End::Eof).is_err());
    }

    /// The replies agree with the naive model: split on TAB, answer all but the last.
    #[test]
    fn garbage_replies_follow_the_split_on_tab() {
        for seed in 0..50 {
            let (bytes, replies) = garbage(seed, 500, 16);
            assert_eq!(bytes.len(), 500);
            let parts: Vec<&[u8]> = bytes.split(|&b| b == b'\t').collect();
            assert!(parts.iter().all(|p| p.len() <= 16), "seed {seed}");
            let model: Vec<u8> = parts[..parts.len() - 1]
                .iter()
                .flat_map(|p| [b"server got:".as_slice(), p, b"\t"].concat())
                .collect();
            assert_eq!(replies, model, "seed {seed}");
        }
        let (bytes, _) = garbage(7, 100_000, 1 << 20);
        assert!(bytes.contains(&0) && bytes.contains(&0xff) && bytes.contains(&b'\t'));
    }
}
