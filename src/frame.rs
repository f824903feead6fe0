//! FrameDecoder: TAB framing across reads, with a frame limit (pure: bytes in, frames out).
//!
//! The decoder keeps only the unfinished frame of a stream. Complete frames are handed to
//! the caller as slices of the input it passed in (plus, for the first frame of a call,
//! the saved head), so the reactor answers them without copying them anywhere first.
//!
//! The caller may stop after any frame ([`FrameDecoder::decode_until`]): the rest of that
//! input is then not looked at, and the caller either feeds it again or leaves it with the
//! decoder as *unanswered input* ([`FrameDecoder::hold`]), to be taken back
//! ([`FrameDecoder::take_unanswered`]) and fed again once it can be answered. That is how
//! the server bounds the replies it keeps for a peer that does not read: it stops answering
//! and keeps the input, which is at most 1/12 the size of its replies.
//!
//! # Invariants
//! - Unless input is held, `buf` always holds no TAB: it is the head of a frame whose end
//!   has not arrived. So bytes are scanned once, when they arrive; a frame trickled one
//!   byte at a time costs O(n), not O(n^2).
//! - Unless input is held, `buf.capacity()` (so `buf.len()`) is always at most the
//!   `max_frame` last passed to [`FrameDecoder::decode_until`]; held input owns exactly
//!   its length.
//! - Input is held only at a frame boundary: the held bytes start a new frame.
//! - An empty `buf` owns no heap memory: an idle connection's decoder costs 32 bytes.

use std::ops::ControlFlow;

use crate::protocol::DELIMITER;

/// The frame being assembled has more than `limit` bytes and no TAB yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameTooLong {
    /// The limit in force.
    pub limit: usize,
}

/// What one [`FrameDecoder::decode_until`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// Frames handed out.
    pub frames: usize,
    /// Bytes of the input consumed: all of it, unless the caller stopped; then the rest,
    /// `input[consumed..]`, starts a new frame and has not been looked at.
    pub consumed: usize,
}

/// Splits a byte stream into TAB-terminated frames, across any split of the stream.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    /// The head of the frame whose TAB has not arrived yet (no TAB in it, at most the
    /// limit); or, when `held`, input the caller could not answer yet (any bytes).
    buf: Vec<u8>,
    /// `buf` is unanswered input left by [`FrameDecoder::hold`].
    held: bool,
}

impl FrameDecoder {
    /// A decoder at the start of a stream.
    pub const fn new() -> Self {
        FrameDecoder {
            buf: Vec::new(),
            held: false,
        }
    }

    /// Bytes held: the unfinished frame, or the unanswered input.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Heap bytes owned (0 when no frame is unfinished and no input is held).
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// The decoder's bytes, and whether they are unanswered input rather than a frame's
    /// head: what an upgrade's hand-over carries to the new process.
    pub fn into_parts(self) -> (Vec<u8>, bool) {
        (self.buf, self.held)
    }

    /// A decoder holding `buf` (unanswered input if `held`), as [`FrameDecoder::into_parts`]
    /// gave it. An empty buffer is never held, and owns no memory.
    pub fn from_parts(buf: Vec<u8>, held: bool) -> Self {
        if buf.is_empty() {
            return FrameDecoder::new();
        }
        FrameDecoder { buf, held }
    }

    /// Unanswered input is waiting to be taken back.
    pub fn has_unanswered(&self) -> bool {
        self.held
    }

    /// Forgets the unfinished frame and any unanswered input, and frees the buffer.
    pub fn clear(&mut self) {
        self.buf = Vec::new();
        self.held = false;
    }

    /// Forgets the unfinished frame (the stream ended without its TAB), keeping unanswered
    /// input, whose frames are owed replies.
    pub fn discard_unfinished(&mut self) {
        if !self.held {
            self.clear();
        }
    }

    /// Leaves `rest` (the input after a stop) with the decoder, unanswered. Nothing may be
    /// pending: the stop came right after a frame.
    pub fn hold(&mut self, rest: &[u8]) {
        debug_assert!(
            self.buf.is_empty() && !self.held,
            "hold with {} bytes pending (held: {})",
            self.buf.len(),
            self.held
        );
        if !rest.is_empty() {
            self.buf = rest.to_vec();
            self.held = true;
        }
    }

    /// Takes back the unanswered input, to be fed again; the decoder is then empty.
    pub fn take_unanswered(&mut self) -> Vec<u8> {
        debug_assert!(self.held, "no unanswered input");
        self.held = false;
        std::mem::take(&mut self.buf)
    }

    /// Feeds `input`; calls `on_frame(head, tail)` for every complete frame, in order, where
    /// the frame is `head ++ tail` (without its TAB). Returns the number of frames.
    ///
    /// A frame longer than `max_frame` bytes is an error, raised as soon as `max_frame + 1`
    /// bytes without a TAB are seen, whether or not the TAB is in this input. The frames
    /// before it have been handed out by then; the decoder is left empty.
    pub fn decode<F>(
        &mut self,
        input: &[u8],
        max_frame: usize,
        mut on_frame: F,
    ) -> Result<usize, FrameTooLong>
    where
        F: FnMut(&[u8], &[u8]),
    {
        self.decode_until(input, max_frame, |head, tail| {
            on_frame(head, tail);
            ControlFlow::Continue(())
        })
        .map(|decoded| decoded.frames)
    }

    /// As [`FrameDecoder::decode`], but `on_frame` may stop the decoding after its frame
    /// by returning `Break`: the rest of the input is then left untouched (see
    /// [`Decoded::consumed`]) and nothing is pending. Input must not be held.
    // Inlined into its one caller on the frame path (`Connection::answer`): a call with
    // the closure's environment cost about 40 instructions per read (callgrind).
    #[inline(always)]
    pub fn decode_until<F>(
        &mut self,
        input: &[u8],
        max_frame: usize,
        mut on_frame: F,
    ) -> Result<Decoded, FrameTooLong>
    where
        F: FnMut(&[u8], &[u8]) -> ControlFlow<()>,
    {
        debug_assert!(!self.held, "decode with unanswered input held");
        let mut frames = 0;
        let mut start = 0;
        // One search per frame, none for an empty remainder: a read usually ends on a
        // TAB, and memchr's iterator would search the empty rest too, about 50
        // instructions per read at pipeline 1 (callgrind, BENCHMARKS.md section 3).
        while start < input.len() {
            let Some(offset) = memchr::memchr(DELIMITER, &input[start..]) else {
                break;
            };
            let end = start + offset;
            let tail = &input[start..end];
            if self.buf.len() + tail.len() > max_frame {
                self.clear();
                return Err(FrameTooLong { limit: max_frame });
            }
            let flow = on_frame(&self.buf, tail);
            if !self.buf.is_empty() {
                // Free the head's buffer: a connection between frames owns no heap memory.
                self.clear();
            }
            frames += 1;
            start = end + 1;
            if flow.is_break() {
                return Ok(Decoded {
                    frames,
                    consumed: start,
                });
            }
        }
        let rest = &input[start..];
        if rest.is_empty() {
            // Ended on a TAB: nothing to keep (the common case).
            return Ok(Decoded {
                frames,
                consumed: input.len(),
            });
        }
        if self.buf.len() + rest.len() > max_frame {
            self.clear();
            return Err(FrameTooLong { limit: max_frame });
        }
        let needed = self.buf.len() + rest.len();
        if needed > self.buf.capacity() {
            // Grow geometrically, so a frame trickled in small pieces costs O(n) copies,
            // but never past the limit: the server's memory bound counts capacities.
            let target = (2 * self.buf.capacity()).clamp(needed, max_frame);
            self.buf.reserve_exact(target - self.buf.len());
        }
        self.buf.extend_from_slice(rest);
        debug_assert!(
            self.buf.len() <= max_frame,
            "partial {} > max_frame {}",
            self.buf.len(),
            max_frame
        );
        Ok(Decoded {
            frames,
            consumed: input.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `input` through a decoder in the given chunks; returns the frames and the outcome.
    fn decode_chunks(chunks: &[&[u8]], max: usize) -> (Vec<Vec<u8>>, Result<(), FrameTooLong>) {
        let mut decoder = FrameDecoder::new();
        let mut frames = Vec::new();
        for chunk in chunks {
            let result = decoder.decode(chunk, max, |head, tail| {
                frames.push([head, tail].concat());
            });
            if let Err(e) = result {
                return (frames, Err(e));
            }
        }
        (frames, Ok(()))
    }

    /// The naive model: split the whole stream on TAB; the last piece is unfinished.
    fn model(input: &[u8], max: usize) -> (Vec<Vec<u8>>, Result<(), FrameTooLong>) {
        let mut pieces: Vec<&[u8]> = input.split(|&b| b == DELIMITER).collect();
        let unfinished = pieces.pop().unwrap_or_default();
        let mut frames = Vec::new();
        for piece in pieces {
            if piece.len() > max {
                return (frames, Err(FrameTooLong { limit: max }));
            }
            frames.push(piece.to_vec());
        }
        if unfinished.len() > max {
            return (frames, Err(FrameTooLong { limit: max }));
        }
        (frames, Ok(()))
    }

    const INPUTS: &[&[u8]] = &[
        b"",
        b"\t",
        b"\t\t\t",
        b"hello\t",
        b"hello\tworld\t",
        b"no tab at all",
        b"a\tbb\tccc\tunfinished",
        b"\x00\r\n\xff\xfe\t\x80\t",
        b"12345678\t",
        b"123456789\t",
        b"1234567890\t1\t",
        b"\t12345678\t123456789",
    ];

    #[test]
    fn every_split_point_matches_the_model() {
        for max in [0, 1, 8, 9, 64] {
            for input in INPUTS {
                let expected = model(input, max);
                assert_eq!(decode_chunks(&[input], max), expected, "whole {input:?}");
                for i in 0..=input.len() {
                    for j in i..=input.len() {
                        let chunks = [&input[..i], &input[i..j], &input[j..]];
                        assert_eq!(
                            decode_chunks(&chunks, max),
                            expected,
                            "input {input:?} split at {i},{j} max {max}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn one_byte_at_a_time() {
        let input = b"ab\t\tcde\tf";
        let chunks: Vec<&[u8]> = input.chunks(1).collect();
        let (frames, result) = decode_chunks(&chunks, 100);
        assert_eq!(frames, vec![b"ab".to_vec(), b"".to_vec(), b"cde".to_vec()]);
        assert_eq!(result, Ok(()));
    }

    #[test]
    fn frame_of_exactly_the_limit_is_answered() {
        let (frames, result) = decode_chunks(&[b"12345678\t"], 8);
        assert_eq!(frames, vec![b"12345678".to_vec()]);
        assert_eq!(result, Ok(()));
        // And when it arrives in pieces, unterminated at exactly the limit.
        let (frames, result) = decode_chunks(&[b"1234", b"5678", b"\t"], 8);
        assert_eq!(frames.len(), 1);
        assert_eq!(result, Ok(()));
    }

    #[test]
    fn limit_plus_one_fails_before_the_tab_arrives() {
        let (frames, result) = decode_chunks(&[b"ok\t1234", b"56789"], 8);
        assert_eq!(frames, vec![b"ok".to_vec()]);
        assert_eq!(result, Err(FrameTooLong { limit: 8 }));
    }

    #[test]
    fn limit_plus_one_terminated_in_one_read_fails() {
        let (frames, result) = decode_chunks(&[b"a\t123456789\tb\t"], 8);
        assert_eq!(frames, vec![b"a".to_vec()]);
        assert_eq!(result, Err(FrameTooLong { limit: 8 }));
    }

    #[test]
    fn head_and_tail_are_given_separately_without_copying_the_tail() {
        let mut decoder = FrameDecoder::new();
        decoder
            .decode(b"hel", 100, |_, _| panic!("no frame yet"))
            .unwrap();
        assert_eq!(decoder.pending(), 3);
        let input = b"lo\tnext\t";
        let mut seen = Vec::new();
        decoder
            .decode(input, 100, |head, tail| {
                seen.push((head.to_vec(), tail.to_vec()));
            })
            .unwrap();
        assert_eq!(
            seen,
            vec![
                (b"hel".to_vec(), b"lo".to_vec()),
                (b"".to_vec(), b"next".to_vec())
            ]
        );
    }

    #[test]
    fn buffer_is_freed_between_frames() {
        let mut decoder = FrameDecoder::new();
        decoder.decode(b"abc", 100, |_, _| {}).unwrap();
        assert!(decoder.capacity() > 0);
        decoder.decode(b"\t", 100, |_, _| {}).unwrap();
        assert_eq!(decoder.capacity(), 0);
    }

    #[test]
    fn pipelined_ten_thousand_frames_in_one_input() {
        let input = b"x\t".repeat(10_000);
        let mut decoder = FrameDecoder::new();
        let n = decoder
            .decode(&input, 8, |_, tail| assert_eq!(tail, b"x"))
            .unwrap();
        assert_eq!(n, 10_000);
    }

    #[test]
    fn stop_after_a_frame_leaves_the_rest_untouched_and_nothing_pending() {
        let mut decoder = FrameDecoder::new();
        decoder.decode(b"he", 100, |_, _| {}).unwrap();
        let input = b"llo\tnext\tmore";
        let mut seen = Vec::new();
        let decoded = decoder
            .decode_until(input, 100, |head, tail| {
                seen.push([head, tail].concat());
                ControlFlow::Break(())
            })
            .unwrap();
        assert_eq!(seen, vec![b"hello".to_vec()]);
        assert_eq!(
            decoded,
            Decoded {
                frames: 1,
                consumed: 4
            }
        );
        assert_eq!(decoder.pending(), 0);
        assert_eq!(decoder.capacity(), 0);
    }

    #[test]
    fn held_input_is_taken_back_whole_and_survives_discard_unfinished() {
        let mut decoder = FrameDecoder::new();
        decoder.hold(b"a\tb\tunfinished");
        assert!(decoder.has_unanswered());
        assert_eq!(decoder.pending(), 14);
        // End of stream: an unfinished frame is dropped, unanswered frames are not.
        decoder.discard_unfinished();
        assert!(decoder.has_unanswered());
        let held = decoder.take_unanswered();
        assert_eq!(held, b"a\tb\tunfinished");
        assert!(!decoder.has_unanswered());
        assert_eq!(decoder.capacity(), 0);
        let n = decoder.decode(&held, 100, |_, _| {}).unwrap();
        assert_eq!(n, 2);
        assert_eq!(decoder.pending(), 10);
        decoder.discard_unfinished();
        assert_eq!(decoder.capacity(), 0);
    }

    #[test]
    fn holding_nothing_holds_nothing() {
        let mut decoder = FrameDecoder::new();
        decoder.hold(b"");
        assert!(!decoder.has_unanswered());
        assert_eq!(decoder.capacity(), 0);
    }

    /// Property tests: random streams cut at random points against the split-on-TAB model.
    ///
    /// Streams are drawn mostly from a tiny alphabet that includes TAB, so frames are short
    /// and plentiful and the limit is met both by finished frames and by unfinished tails;
    /// one byte in sixteen is arbitrary. `max_frame` is often 0..=3 so the boundaries
    /// (exactly the limit, limit + 1) are hit in most cases.
    mod properties {
        use super::*;
        use proptest::prelude::*;
        use proptest::sample::Index;

        /// One stream byte: TAB often, a letter usually, anything now and then.
        fn stream_byte() -> impl Strategy<Value = u8> {
            prop_oneof![
                4 => Just(DELIMITER),
                11 => prop::sample::select(b"ab".to_vec()),
                1 => any::<u8>(),
            ]
        }

        /// A stream of up to 300 bytes.
        fn stream() -> impl Strategy<Value = Vec<u8>> {
            prop::collection::vec(stream_byte(), 0..300)
        }

        /// A frame limit: mostly tiny (0 included), sometimes larger than most frames.
        fn max_frame() -> impl Strategy<Value = usize> {
            prop_oneof![0..=3usize, 0..=16usize, 0..=400usize]
        }

        /// Up to 12 cut points into a stream (resolved against its length, sorted).
        fn cuts() -> impl Strategy<Value = Vec<Index>> {
            prop::collection::vec(any::<Index>(), 0..12)
        }

        /// The stream cut at `cuts`: consecutive chunks (some empty) covering all of it.
        fn chunks<'a>(stream: &'a [u8], cuts: &[Index]) -> Vec<&'a [u8]> {
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
            points.sort_unstable();
            let mut chunks = Vec::with_capacity(points.len() + 1);
            let mut start = 0;
            for point in points {
                chunks.push(&stream[start..point]);
                start = point;
            }
            chunks.push(&stream[start..]);
            chunks
        }

        /// The model's answer to "when must the limit fire": the stream offset of the
        /// `max + 1`-th byte of the first piece (finished frame or unfinished tail) longer
        /// than `max`, or `None` if no piece is.
        fn limit_offset(stream: &[u8], max: usize) -> Option<usize> {
            let mut start = 0;
            for piece in stream.split(|&b| b == DELIMITER) {
                if piece.len() > max {
                    return Some(start + max);
                }
                start += piece.len() + 1;
            }
            None
        }

        proptest! {
            /// Any split of a stream yields exactly the frames of splitting it whole on TAB,
            /// and the same outcome (Ok, or FrameTooLong after the frames before it).
            #[test]
            fn decoder_matches_split_on_tab_across_random_splits(
                stream in stream(),
                cuts in cuts(),
                max in max_frame(),
            ) {
                let chunks = chunks(&stream, &cuts);
                prop_assert_eq!(decode_chunks(&chunks, max), model(&stream, max));
            }

            /// Stopping after random frames, then either feeding the rest again at once or
            /// holding it and taking it back later, yields the frames and the outcome of
            /// splitting the whole stream on TAB: no frame lost, repeated or reordered.
            #[test]
            fn stopping_and_holding_at_random_frames_matches_the_model(
                stream in stream(),
                cuts in cuts(),
                max in max_frame(),
                stops in prop::collection::vec(any::<(bool, bool)>(), 0..64),
            ) {
                let mut decoder = FrameDecoder::new();
                let mut frames = Vec::new();
                let mut outcome = Ok(());
                let mut decisions = stops.iter().cycle();
                'chunks: for chunk in chunks(&stream, &cuts) {
                    let mut input: Vec<u8> = chunk.to_vec();
                    loop {
                        if decoder.has_unanswered() {
                            let mut held = decoder.take_unanswered();
                            held.extend_from_slice(&input);
                            input = held;
                        }
                        let result = decoder.decode_until(&input, max, |head, tail| {
                            frames.push([head, tail].concat());
                            match decisions.next() {
                                Some((true, _)) => ControlFlow::Break(()),
                                _ => ControlFlow::Continue(()),
                            }
                        });
                        match result {
                            Err(e) => {
                                outcome = Err(e);
                                break 'chunks;
                            }
                            Ok(d) if d.consumed == input.len() => break,
                            Ok(d) => {
                                prop_assert_eq!(decoder.pending(), 0);
                                let rest = input[d.consumed..].to_vec();
                                if matches!(decisions.next(), Some((_, true))) {
                                    decoder.hold(&rest);
                                    input = Vec::new();
                                } else {
                                    input = rest;
                                }
                            }
                        }
                    }
                }
                if outcome.is_ok() && decoder.has_unanswered() {
                    // Answer what is still held, as the server does once its peer reads.
                    let held = decoder.take_unanswered();
                    outcome = decoder
                        .decode(&held, max, |head, tail| frames.push([head, tail].concat()))
                        .map(|_| ());
                }
                prop_assert_eq!((frames, outcome), model(&stream, max));
            }

            /// The limit fires in exactly the call whose input holds the `max_frame + 1`-th
            /// byte of the first too-long frame, no earlier and no later; every frame handed
            /// out is at most `max_frame`; the returned count is the frames handed out; `head`
            /// is non-empty only for a call's first frame and `tail` lies in the call's
            /// input; the pending head stays within the limit; an error leaves the decoder
            /// empty, owning no buffer.
            #[test]
            fn limit_fires_exactly_at_the_first_byte_past_max_frame(
                stream in stream(),
                cuts in cuts(),
                max in max_frame(),
            ) {
                let must_fire_at = limit_offset(&stream, max);
                let mut decoder = FrameDecoder::new();
                let mut offset = 0;
                let mut fired_at = None;
                for chunk in chunks(&stream, &cuts) {
                    let input_range = chunk.as_ptr_range();
                    let mut handed_out = 0;
                    let mut head_seen_late = false;
                    let mut tail_outside_input = false;
                    let mut longest = 0;
                    let result = decoder.decode(chunk, max, |head, tail| {
                        head_seen_late |= handed_out > 0 && !head.is_empty();
                        let tail_range = tail.as_ptr_range();
                        tail_outside_input |= tail_range.start < input_range.start
                            || tail_range.end > input_range.end;
                        longest = longest.max(head.len() + tail.len());
                        handed_out += 1;
                    });
                    prop_assert!(!head_seen_late, "head given for a later frame of a call");
                    prop_assert!(!tail_outside_input, "tail is not a slice of the input");
                    prop_assert!(longest <= max, "frame of {} > max {}", longest, max);
                    match result {
                        Ok(frames) => {
                            prop_assert_eq!(frames, handed_out);
                            prop_assert!(decoder.pending() <= max);
                            prop_assert!(decoder.capacity() <= max, "capacity {} > max {}", decoder.capacity(), max);
                        }
                        Err(e) => {
                            prop_assert_eq!(e, FrameTooLong { limit: max });
                            prop_assert_eq!(decoder.pending(), 0);
                            prop_assert_eq!(decoder.capacity(), 0);
                            fired_at = Some(offset..offset + chunk.len());
                            break;
                        }
                    }
                    offset += chunk.len();
                }
                match (must_fire_at, fired_at) {
                    (None, None) => {}
                    (Some(at), Some(call)) => prop_assert!(
                        call.contains(&at),
                        "limit fired in the call for bytes {:?}, must fire at byte {}",
                        call,
                        at
                    ),
                    (want, got) => prop_assert!(
                        false,
                        "limit must fire at {:?}, fired in the call for {:?}",
                        want,
                        got
                    ),
                }
            }
        }
    }
}
