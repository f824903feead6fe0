//! ReplyChecker: compares one connection's reply stream with the replies its frames
//! should get, byte for byte, in order, as the bytes arrive in any split (pure).
//!
//! Nothing sent is stored: the expected reply to frame `seq` is regenerated from the
//! [`PayloadSource`] (`server got:` + payload + TAB, or payload + TAB in raw mode). Each
//! frame in flight keeps only a caller's stamp `T` (its send time, in the load generator).
//!
//! A reply that differs is buffered up to its TAB and then classified: an `error:` line;
//! the exact reply to a *later* frame in flight (the frames before it were skipped: lost);
//! or else corrupt. So a server that drops one reply costs one lost frame, not a cascade
//! of mismatches.
//!
//! # Invariants
//! - `matched` is always less than the front frame's reply length: a reply matched to its
//!   end is popped at once.
//! - `expected[..matched]` of the front reply always equals the bytes received for it.
//! - While `mismatch` is `Some`, it always holds no TAB and at most `max_reply` bytes.

use std::collections::VecDeque;

use crate::config::DEFAULT_MAX_FRAME;
use crate::load::payload::PayloadSource;
use crate::protocol::{DELIMITER, ERROR_REPLY_PREFIX, REPLY_PREFIX};

/// The delimiter as a one-byte slice, the last segment of every reply.
const TAB: &[u8] = &[DELIMITER];

/// How many frames past the front a differing reply is compared with, to tell a dropped
/// reply from a corrupt one: bounded so a garbage stream costs O(1) per reply.
const MAX_LOOKAHEAD: usize = 1024;

/// What became of one reply or frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict<T> {
    /// The frame stamped `T` got exactly its reply.
    Answered(T),
    /// The frame stamped `T` got a reply that differs from the one expected.
    Corrupt(T),
    /// The frame stamped `T` got no reply: the server answered a later frame first.
    Lost(T),
    /// The server sent an error line (here without its TAB); it answers no frame.
    ErrorReply(Vec<u8>),
    /// A reply arrived while no frame was in flight (its length, without TAB).
    Unsolicited(usize),
}

/// The stream cannot be checked any further.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Desync {
    /// More than `max_reply` bytes arrived without a TAB.
    Overlong,
}

/// The expected-reply checker of one connection.
#[derive(Debug)]
pub struct ReplyChecker<T> {
    /// The connection id that seeds the payloads.
    conn: u64,
    /// Regenerates payloads.
    source: PayloadSource,
    /// `server got:`, or empty in raw (verbatim echo) mode.
    prefix: &'static [u8],
    /// The sequence number of the front frame in flight; frames are numbered 0, 1, ...
    front_seq: u64,
    /// Stamps of the frames in flight, oldest first; `stamps[k]` is frame `front_seq + k`.
    stamps: VecDeque<T>,
    /// Bytes of the front frame's reply received and matched so far.
    matched: usize,
    /// The differing reply being buffered up to its TAB, if any.
    mismatch: Option<Vec<u8>>,
}

impl<T> ReplyChecker<T> {
    /// A checker for connection `conn`; `raw` expects each payload echoed verbatim.
    pub fn new(conn: u64, source: PayloadSource, raw: bool) -> Self {
        ReplyChecker {
            conn,
            source,
            prefix: if raw { b"" } else { REPLY_PREFIX },
            front_seq: 0,
            stamps: VecDeque::new(),
            matched: 0,
            mismatch: None,
        }
    }

    /// The sequence number the next frame sent gets.
    pub fn next_seq(&self) -> u64 {
        self.front_seq + self.stamps.len() as u64
    }

    /// The payload of the next frame; send it, then call [`ReplyChecker::sent`].
    pub fn next_payload(&self) -> &[u8] {
        self.source.payload(self.conn, self.next_seq())
    }

    /// Records that the next frame was sent, stamped `stamp`.
    pub fn sent(&mut self, stamp: T) {
        self.stamps.push_back(stamp);
    }

    /// Frames sent and not yet answered, lost or found corrupt.
    pub fn in_flight(&self) -> usize {
        self.stamps.len()
    }

    /// Bytes received that settled nothing yet: part of a reply, or a differing reply
    /// still waiting for its TAB. Zero at a reply boundary.
    pub fn pending_bytes(&self) -> usize {
        self.matched + self.mismatch.as_ref().map_or(0, Vec::len)
    }

    /// The stamp of the oldest frame in flight.
    pub fn oldest(&self) -> Option<&T> {
        self.stamps.front()
    }

    /// The longest reply this checker buffers without finding a TAB: the longest reply
    /// a server may send (to the largest frame, or an error line), with room to spare.
    fn max_reply(&self) -> usize {
        self.prefix.len() + self.source.size().max(DEFAULT_MAX_FRAME) + 64
    }

    /// Length of every expected reply, TAB included.
    fn reply_len(&self) -> usize {
        self.prefix.len() + self.source.size() + 1
    }

    /// The rest of the expected reply to frame `seq` from byte `pos`, up to the end of
    /// the segment (prefix, payload, TAB) that holds `pos`.
    fn expected_segment(&self, seq: u64, pos: usize) -> &[u8] {
        let p = self.prefix.len();
        let s = self.source.size();
        if pos < p {
            &self.prefix[pos..]
        } else if pos < p + s {
            &self.source.payload(self.conn, seq)[pos - p..]
        } else {
            TAB
        }
    }

    /// Whether `reply` (without its TAB) is exactly the reply to frame `seq`.
    fn is_reply_to(&self, seq: u64, reply: &[u8]) -> bool {
        reply.len() + 1 == self.reply_len()
            && reply.starts_with(self.prefix)
            && &reply[self.prefix.len()..] == self.source.payload(self.conn, seq)
    }

    /// Checks the next received bytes; reports each settled frame or reply to `on`.
    pub fn feed(&mut self, mut data: &[u8], on: &mut impl FnMut(Verdict<T>)) -> Result<(), Desync> {
        while !data.is_empty() {
            if let Some(buf) = self.mismatch.as_mut() {
                match memchr::memchr(DELIMITER, data) {
                    Some(at) => {
                        buf.extend_from_slice(&data[..at]);
                        data = &data[at + 1..];
                        let reply = self.mismatch.take().unwrap_or_default();
                        self.settle_mismatch(reply, on);
                    }
                    None => {
                        buf.extend_from_slice(data);
                        if buf.len() > self.max_reply() {
                            return Err(Desync::Overlong);
                        }
                        return Ok(());
                    }
                }
                continue;
            }
            if self.stamps.is_empty() {
                self.mismatch = Some(Vec::new());
                continue;
            }
            let expected = self.expected_segment(self.front_seq, self.matched);
            let n = expected.len().min(data.len());
            if expected[..n] == data[..n] {
                self.matched += n;
                data = &data[n..];
                if self.matched == self.reply_len() {
                    self.matched = 0;
                    self.pop_front(Verdict::Answered, on);
                }
            } else {
                // Everything matched so far equals the expected reply's head (invariant).
                let mut buf = Vec::with_capacity(self.reply_len());
                let mut pos = 0;
                while pos < self.matched {
                    let seg = self.expected_segment(self.front_seq, pos);
                    let take = seg.len().min(self.matched - pos);
                    buf.extend_from_slice(&seg[..take]);
                    pos += take;
                }
                self.matched = 0;
                self.mismatch = Some(buf);
            }
        }
        Ok(())
    }

    /// Classifies a complete differing reply (without its TAB).
    fn settle_mismatch(&mut self, reply: Vec<u8>, on: &mut impl FnMut(Verdict<T>)) {
        if reply.starts_with(ERROR_REPLY_PREFIX) {
            on(Verdict::ErrorReply(reply));
            return;
        }
        if self.stamps.is_empty() {
            on(Verdict::Unsolicited(reply.len()));
            return;
        }
        let lookahead = self.stamps.len().min(MAX_LOOKAHEAD);
        let later = (1..lookahead).find(|&k| self.is_reply_to(self.front_seq + k as u64, &reply));
        match later {
            Some(k) => {
                for _ in 0..k {
                    self.pop_front(Verdict::Lost, on);
                }
                self.pop_front(Verdict::Answered, on);
            }
            None => self.pop_front(Verdict::Corrupt, on),
        }
    }

    /// Settles the front frame as `verdict`.
    fn pop_front(&mut self, verdict: fn(T) -> Verdict<T>, on: &mut impl FnMut(Verdict<T>)) {
        if let Some(stamp) = self.stamps.pop_front() {
            self.front_seq += 1;
            on(verdict(stamp));
        }
    }

    /// Settles every frame still in flight as lost (the end of the drain phase).
    pub fn give_up(&mut self, on: &mut impl FnMut(Verdict<T>)) {
        self.matched = 0;
        self.mismatch = None;
        while !self.stamps.is_empty() {
            self.pop_front(Verdict::Lost, on);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONN: u64 = 42;

    /// A checker with `frames` frames sent, stamped 0, 1, ...; and the replies a correct
    /// server sends for them.
    fn setup(frames: u64, size: usize, raw: bool) -> (ReplyChecker<u64>, Vec<Vec<u8>>) {
        let source = PayloadSource::new(size);
        let mut checker = ReplyChecker::new(CONN, source.clone(), raw);
        let mut replies = Vec::new();
        for seq in 0..frames {
            assert_eq!(checker.next_seq(), seq);
            let mut reply = if raw {
                Vec::new()
            } else {
                REPLY_PREFIX.to_vec()
            };
            reply.extend_from_slice(checker.next_payload());
            reply.push(DELIMITER);
            replies.push(reply);
            checker.sent(seq);
        }
        (checker, replies)
    }

    fn feed_all(checker: &mut ReplyChecker<u64>, chunks: &[&[u8]]) -> Vec<Verdict<u64>> {
        let mut out = Vec::new();
        for chunk in chunks {
            checker
                .feed(chunk, &mut |v| out.push(v))
                .expect("no desync");
        }
        out
    }

    fn answered(range: std::ops::Range<u64>) -> Vec<Verdict<u64>> {
        range.map(Verdict::Answered).collect()
    }

    #[test]
    fn whole_replies_are_answered_in_order() {
        for raw in [false, true] {
            let (mut checker, replies) = setup(5, 16, raw);
            let stream = replies.concat();
            assert_eq!(feed_all(&mut checker, &[&stream]), answered(0..5));
            assert_eq!(checker.in_flight(), 0);
        }
    }

    #[test]
    fn every_split_point_gives_the_same_verdicts() {
        let (_, replies) = setup(3, 7, false);
        let stream = replies.concat();
        for a in 0..=stream.len() {
            for b in a..=stream.len() {
                let (mut checker, _) = setup(3, 7, false);
                let got = feed_all(&mut checker, &[&stream[..a], &stream[a..b], &stream[b..]]);
                assert_eq!(got, answered(0..3), "split at {a}, {b}");
            }
        }
    }

    #[test]
    fn one_byte_at_a_time() {
        let (mut checker, replies) = setup(4, 33, false);
        let stream = replies.concat();
        let chunks: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(feed_all(&mut checker, &chunks), answered(0..4));
    }

    #[test]
    fn empty_payloads() {
        let (mut checker, replies) = setup(3, 0, false);
        assert_eq!(replies[0], b"server got:\t");
        assert_eq!(feed_all(&mut checker, &[&replies.concat()]), answered(0..3));
    }

    #[test]
    fn a_changed_byte_is_corrupt_and_the_rest_still_checks() {
        let (_, replies) = setup(4, 10, false);
        for at in 0..replies[1].len() - 1 {
            let (mut checker, _) = setup(4, 10, false);
            let mut bad = replies.clone();
            bad[1][at] ^= 0x01;
            let got = feed_all(&mut checker, &[&bad.concat()]);
            assert_eq!(
                got,
                vec![
                    Verdict::Answered(0),
                    Verdict::Corrupt(1),
                    Verdict::Answered(2),
                    Verdict::Answered(3)
                ],
                "byte {at} changed"
            );
        }
    }

    #[test]
    fn shorter_and_longer_replies_are_corrupt() {
        let (mut checker, replies) = setup(3, 10, false);
        let mut short = replies[1].clone();
        short.remove(13);
        let mut long = replies[2].clone();
        long.insert(12, b'x');
        let got = feed_all(&mut checker, &[&replies[0], &short, &long]);
        assert_eq!(
            got,
            vec![
                Verdict::Answered(0),
                Verdict::Corrupt(1),
                Verdict::Corrupt(2)
            ]
        );
    }

    #[test]
    fn a_dropped_reply_is_one_lost_frame() {
        let (mut checker, replies) = setup(5, 32, false);
        let stream = [&replies[0][..], &replies[2], &replies[3], &replies[4]].concat();
        let got = feed_all(&mut checker, &[&stream]);
        assert_eq!(
            got,
            vec![
                Verdict::Answered(0),
                Verdict::Lost(1),
                Verdict::Answered(2),
                Verdict::Answered(3),
                Verdict::Answered(4)
            ]
        );
    }

    #[test]
    fn an_error_line_answers_no_frame() {
        let (mut checker, _) = setup(2, 8, false);
        let got = feed_all(&mut checker, &[b"error: too many connections\t"]);
        assert_eq!(
            got,
            vec![Verdict::ErrorReply(b"error: too many connections".to_vec())]
        );
        assert_eq!(checker.in_flight(), 2);
        let mut lost = Vec::new();
        checker.give_up(&mut |v| lost.push(v));
        assert_eq!(lost, vec![Verdict::Lost(0), Verdict::Lost(1)]);
    }

    #[test]
    fn a_reply_with_nothing_in_flight_is_unsolicited() {
        let (mut checker, replies) = setup(1, 4, false);
        let got = feed_all(&mut checker, &[&replies[0], b"surprise\t"]);
        assert_eq!(got, vec![Verdict::Answered(0), Verdict::Unsolicited(8)]);
    }

    #[test]
    fn endless_garbage_desyncs() {
        let (mut checker, _) = setup(1, 4, false);
        let garbage = vec![b'z'; 200 * 1024];
        assert_eq!(checker.feed(&garbage, &mut |_| {}), Err(Desync::Overlong));
    }

    /// The naive model: split the stream on TAB and compare reply by reply.
    #[test]
    fn agrees_with_the_naive_model_on_random_damage() {
        let mut rng = 1u64;
        for round in 0..200 {
            let (mut checker, replies) = setup(20, 12, round % 2 == 0);
            let mut stream = Vec::new();
            let mut model = Vec::new();
            for (i, reply) in replies.iter().enumerate() {
                rng = crate::load::payload::splitmix64(rng);
                if rng.is_multiple_of(10) {
                    let mut bad = reply.clone();
                    bad[(rng >> 8) as usize % (reply.len() - 1)] = b'\x01';
                    stream.extend_from_slice(&bad);
                    model.push(Verdict::Corrupt(i as u64));
                } else {
                    stream.extend_from_slice(reply);
                    model.push(Verdict::Answered(i as u64));
                }
            }
            let cut = (rng >> 20) as usize % stream.len();
            let got = feed_all(&mut checker, &[&stream[..cut], &stream[cut..]]);
            assert_eq!(got, model, "round {round}");
        }
    }
}
