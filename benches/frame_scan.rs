//! FrameDecoder throughput in bytes/s: small, mixed and large frames, whole or in segments.
//!
//! Two groups over the same inputs:
//! - `frame_scan/scan`: scanning alone. The callback only adds up frame lengths, so this is
//!   the decoder's own cost (memchr for TABs, the limit check, saving the unfinished head).
//! - `frame_scan/decode_and_reply`: what the server does per read (see
//!   `Connection::answer`): clear the reused reply buffer, then `protocol::encode_reply`
//!   each frame into it. The gap between the two groups is the cost of building replies.
//!
//! Each input is about 1 MiB and is fed either whole (one `decode` call) or in 1,460-byte
//! segments (one TCP segment's payload on a 1,500-byte MTU, the worst read pattern short of
//! byte-at-a-time). Inputs:
//! - `small16`: 16-byte frames, the latency-test size (17 bytes on the wire);
//! - `mixed`: lengths from 1 to 4,096 bytes, most under 128 (a fixed pseudo-random draw);
//! - `large64k`: 65,536-byte frames, exactly the default `max_frame`.
//!
//! Every input is checked once (frame count and bytes) before it is measured.
//!
//! Run: `cargo bench --bench frame_scan` (quick check:
//! `cargo bench --bench frame_scan -- --warm-up-time 1 --measurement-time 2`).
//! Record the machine, `rustc -V` and the command beside any number you quote.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tabecho::config::DEFAULT_MAX_FRAME;
use tabecho::frame::FrameDecoder;
use tabecho::protocol::{self, DELIMITER};

/// The payload of one TCP segment on a 1,500-byte Ethernet MTU (IPv4, TCP without options).
const SEGMENT: usize = 1_460;

/// Size of each generated input: big enough to leave the L2 cache, small enough to build fast.
const INPUT_BYTES: usize = 1 << 20;

/// A generated stream of TAB-terminated frames.
struct Input {
    /// Names the input in the benchmark id.
    name: &'static str,
    /// The stream: whole frames only, each followed by its TAB.
    bytes: Vec<u8>,
    /// Number of frames in `bytes`.
    frames: usize,
}

/// Frames of the given lengths (filled with a non-TAB byte) until about `INPUT_BYTES`.
fn input(name: &'static str, mut next_len: impl FnMut() -> usize) -> Input {
    let mut bytes = Vec::with_capacity(INPUT_BYTES + DEFAULT_MAX_FRAME + 1);
    let mut frames = 0;
    while bytes.len() < INPUT_BYTES {
        let len = next_len();
        bytes.resize(bytes.len() + len, b'x');
        bytes.push(DELIMITER);
        frames += 1;
    }
    Input {
        name,
        bytes,
        frames,
    }
}

fn inputs() -> Vec<Input> {
    // xorshift64: a fixed, dependency-free draw, the same on every run.
    let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
    let mut random = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mixed_len = move || -> usize {
        let r = random();
        match r % 8 {
            // 3 in 4 frames are short (1..=128), 1 in 4 up to 4 KiB.
            0..=5 => 1 + (r >> 8) as usize % 128,
            _ => 1 + (r >> 8) as usize % 4_096,
        }
    };
    vec![
        input("small16", || 16),
        input("mixed", mixed_len),
        input("large64k", || DEFAULT_MAX_FRAME),
    ]
}

/// How an input is handed to the decoder.
#[derive(Clone, Copy)]
enum Feed {
    /// One `decode` call for the whole input.
    Whole,
    /// One `decode` call per `SEGMENT` bytes.
    Segments,
}

impl Feed {
    fn name(self) -> &'static str {
        match self {
            Feed::Whole => "whole",
            Feed::Segments => "segments1460",
        }
    }

    fn chunk_len(self, input: &[u8]) -> usize {
        match self {
            Feed::Whole => input.len(),
            Feed::Segments => SEGMENT,
        }
    }
}

/// Scanning alone: returns (frames, frame bytes) so nothing is optimised away.
fn scan(input: &[u8], feed: Feed) -> (usize, usize) {
    let mut decoder = FrameDecoder::new();
    let mut frames = 0;
    let mut frame_bytes = 0;
    for chunk in input.chunks(feed.chunk_len(input)) {
        let result = decoder.decode(chunk, DEFAULT_MAX_FRAME, |head, tail| {
            frame_bytes += head.len() + tail.len();
        });
        frames += result.expect("generated frames are within the limit");
    }
    (frames, frame_bytes)
}

/// As the server answers a read: clear the reused reply buffer, encode each frame's reply.
/// Returns (frames, reply bytes of the last chunk).
fn decode_and_reply(input: &[u8], feed: Feed, replies: &mut Vec<u8>) -> (usize, usize) {
    let mut decoder = FrameDecoder::new();
    let mut frames = 0;
    for chunk in input.chunks(feed.chunk_len(input)) {
        replies.clear();
        let result = decoder.decode(chunk, DEFAULT_MAX_FRAME, |head, tail| {
            protocol::encode_reply(replies, head, tail);
        });
        frames += result.expect("generated frames are within the limit");
        black_box(&*replies);
    }
    (frames, replies.len())
}

fn frame_scan(c: &mut Criterion) {
    let inputs = inputs();
    let feeds = [Feed::Whole, Feed::Segments];

    let mut group = c.benchmark_group("frame_scan/scan");
    for input in &inputs {
        group.throughput(Throughput::Bytes(input.bytes.len() as u64));
        for feed in feeds {
            let frame_bytes = input.bytes.len() - input.frames;
            assert_eq!(scan(&input.bytes, feed), (input.frames, frame_bytes));
            group.bench_with_input(
                BenchmarkId::new(input.name, feed.name()),
                &input.bytes,
                |b, bytes| b.iter(|| scan(black_box(bytes), feed)),
            );
        }
    }
    group.finish();

    let mut group = c.benchmark_group("frame_scan/decode_and_reply");
    let mut replies = Vec::new();
    for input in &inputs {
        group.throughput(Throughput::Bytes(input.bytes.len() as u64));
        for feed in feeds {
            let (frames, _) = decode_and_reply(&input.bytes, feed, &mut replies);
            assert_eq!(frames, input.frames);
            group.bench_with_input(
                BenchmarkId::new(input.name, feed.name()),
                &input.bytes,
                |b, bytes| b.iter(|| decode_and_reply(black_box(bytes), feed, &mut replies)),
            );
        }
    }
    group.finish();
}

criterion_group!(benches, frame_scan);
criterion_main!(benches);
