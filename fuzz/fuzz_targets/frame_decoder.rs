//! Fuzz target: FrameDecoder against the naive split-on-TAB model, across arbitrary splits.
//!
//! Input layout (every byte string is a valid input):
//! - byte 0 picks `max_frame`: the low 7 bits, times 16 when the high bit is set, so both
//!   tiny limits (0, 1, 2, ...) and limits longer than most frames come up;
//! - byte 1, mod 16, is the number of cut points `n`;
//! - the next `n` bytes are chunk lengths (each clamped to what is left);
//! - the rest is the stream; what the lengths do not cover is the last chunk.
//!
//! Checked: the frames handed out equal the model's (the stream split whole on TAB, the
//! last piece unfinished), in order; every frame is at most `max_frame`; each call's count
//! is the frames it handed out; the pending head stays within the limit; FrameTooLong fires
//! in exactly the call whose input holds byte `max_frame + 1` of the first too-long piece
//! (finished frame or unfinished tail) and never otherwise; after it the decoder is empty.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tabecho::frame::{FrameDecoder, FrameTooLong};
use tabecho::protocol::DELIMITER;

/// The model: the frames of `stream` before the first piece longer than `max`, and the
/// stream offset of that piece's `max + 1`-th byte (where the limit must fire), if any.
fn model(stream: &[u8], max: usize) -> (Vec<&[u8]>, Option<usize>) {
    let mut pieces: Vec<&[u8]> = stream.split(|&b| b == DELIMITER).collect();
    let unfinished = pieces.pop().unwrap_or_default();
    let mut frames = Vec::new();
    let mut start = 0;
    for piece in pieces {
        if piece.len() > max {
            return (frames, Some(start + max));
        }
        frames.push(piece);
        start += piece.len() + 1;
    }
    let fire_at = (unfinished.len() > max).then_some(start + max);
    (frames, fire_at)
}

fuzz_target!(|data: &[u8]| {
    let Some((&limit_byte, rest)) = data.split_first() else {
        return;
    };
    let max = usize::from(limit_byte & 0x7f) << if limit_byte & 0x80 != 0 { 4 } else { 0 };
    let (cut_count, rest) = match rest.split_first() {
        Some((&n, rest)) => (usize::from(n % 16), rest),
        None => (0, rest),
    };
    let (lengths, stream) = rest.split_at(cut_count.min(rest.len()));

    let mut chunks = Vec::with_capacity(lengths.len() + 1);
    let mut start = 0;
    for &length in lengths {
        let end = (start + usize::from(length)).min(stream.len());
        chunks.push(&stream[start..end]);
        start = end;
    }
    chunks.push(&stream[start..]);

    let (want_frames, must_fire_at) = model(stream, max);
    let mut decoder = FrameDecoder::new();
    let mut frames: Vec<Vec<u8>> = Vec::new();
    let mut offset = 0;
    let mut fired_in = None;
    for chunk in chunks {
        let before = frames.len();
        let result = decoder.decode(chunk, max, |head, tail| {
            assert!(
                head.len() + tail.len() <= max,
                "frame of {} bytes > max_frame {max}",
                head.len() + tail.len()
            );
            frames.push([head, tail].concat());
        });
        match result {
            Ok(count) => {
                assert_eq!(count, frames.len() - before, "returned count");
                assert!(
                    decoder.pending() <= max,
                    "pending {} > max {max}",
                    decoder.pending()
                );
            }
            Err(e) => {
                assert_eq!(e, FrameTooLong { limit: max });
                assert_eq!(decoder.pending(), 0, "decoder not left empty");
                assert_eq!(decoder.capacity(), 0, "decoder still owns a buffer");
                fired_in = Some(offset..offset + chunk.len());
                break;
            }
        }
        offset += chunk.len();
    }

    assert_eq!(
        frames, want_frames,
        "frames differ from split-on-TAB (max {max})"
    );
    match (must_fire_at, fired_in) {
        (None, None) => {}
        (Some(at), Some(call)) => assert!(
            call.contains(&at),
            "limit fired in the call for bytes {call:?}, must fire at byte {at}"
        ),
        (want, got) => panic!("limit must fire at {want:?}, fired in the call for {got:?}"),
    }
});
