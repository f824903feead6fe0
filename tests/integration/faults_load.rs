//! `tabecho load --faults`: each fault kind alone, against the real server, gets its
//! documented outcome while the healthy connections lose nothing; all kinds together
//! through the binary; and servers whose frame limit differs from the one the load
//! assumes make `oversize` fail, so the check can fail.
//!
//! Small and bounded: a 1 s idle timeout, a 1 KiB frame limit, 4 faulty connections of 3
//! cycles each beside 4 healthy ones sending 50 frames at 50 frames/s (a few seconds).

use std::time::Duration;

use tabecho::addr::ListenAddr;
use tabecho::load::{FaultCounts, FaultKind, LoadOptions};
use tabecho::server::Stats;

use crate::util::*;

/// The servers' idle timeout: short, so trickle and noread cycles end quickly, but long
/// enough that a loaded 2-core machine never stalls a client that long (at 300 ms, a
/// halfclose client descheduled mid-read was reaped one run in a few dozen).
const IDLE: Duration = Duration::from_secs(1);
/// The servers' frame limit: small, so oversize cycles are cheap.
const MAX_FRAME: usize = 1024;
/// Cycles per faulty connection.
const CYCLES: u64 = 3;
/// Faulty connections (half of 8).
const FAULTY: u64 = 4;
/// Frames per healthy connection.
const FRAMES: u64 = 50;

/// A server with the short idle timeout and the frame limit `max_frame`.
fn start_server(max_frame: usize) -> TestServer {
    TestServer::start_with(|c| {
        c.idle_timeout = IDLE;
        c.max_frame = max_frame;
    })
}

/// 8 connections, half of them faulty with `kinds`, assuming [`IDLE`] and [`MAX_FRAME`].
fn faulty(addr: &ListenAddr, kinds: &[FaultKind]) -> LoadOptions {
    let mut options = LoadOptions::new(addr.clone());
    options.connections = 8;
    options.threads = 2;
    options.pipeline = 8;
    options.size = 24;
    options.faults = kinds.to_vec();
    options.fault_share = 0.5;
    options.fault_cycles = Some(CYCLES);
    options.fault_pause = Duration::from_millis(20);
    options.max_frame = MAX_FRAME;
    options.idle_timeout = IDLE;
    // Healthy connections send through the faults' cycles, one frame every 20 ms (well
    // inside the idle timeout), then the run ends once everything is settled.
    options.frames_per_connection = Some(FRAMES);
    options.rate = Some(4.0 * 50.0);
    options.duration = WAIT;
    options.drain = Duration::from_secs(2);
    options
}

/// Runs `kind` alone against a fresh server; checks that every cycle got its documented
/// outcome and the healthy connections lost nothing; returns the server's counters.
#[track_caller]
fn kind_alone(kind: FaultKind) -> (FaultCounts, Stats) {
    kind_alone_for(kind, CYCLES)
}

/// As [`kind_alone`], with `cycles` per faulty connection.
#[track_caller]
fn kind_alone_for(kind: FaultKind, cycles: u64) -> (FaultCounts, Stats) {
    let server = start_server(MAX_FRAME);
    let mut options = faulty(&server.addr, &[kind]);
    options.fault_cycles = Some(cycles);
    let report = run_load(&options);
    let text = report.to_text();
    assert!(report.verified(), "{text}");
    assert_eq!(report.faults.len(), 1, "{text}");
    let (got, counts) = report.faults[0].clone();
    assert_eq!(got, kind);
    assert_eq!(counts.connections, FAULTY, "{text}");
    assert_eq!(counts.runs, FAULTY * cycles, "{text}");
    assert_eq!(counts.expected, counts.runs, "{text}");
    assert_eq!(
        (counts.unexpected, counts.cut_short, counts.connect_failed),
        (0, 0, 0),
        "{text}"
    );
    assert_eq!(report.established, 4, "{text}");
    assert_eq!(report.frames_sent, 4 * FRAMES, "{text}");
    assert_eq!(report.frames_answered, 4 * FRAMES, "{text}");
    assert_eq!((report.lost, report.corrupt, report.unexpected), (0, 0, 0));
    (counts, server.stop())
}

#[test]
fn fault_reset_alone_gets_replies_then_resets_and_others_are_served() {
    let (_, stats) = kind_alone(FaultKind::Reset);
    // The server saw the resets as resets (or as a broken pipe while writing).
    assert!(
        stats.closed_reset + stats.closed_error >= 1,
        "the server saw no reset: {stats:?}"
    );
}

#[test]
fn fault_halfclose_alone_gets_every_reply_then_eof() {
    let (counts, stats) = kind_alone(FaultKind::HalfClose);
    assert!(stats.closed_eof >= counts.runs, "{stats:?}");
}

#[test]
fn fault_slowread_alone_gets_every_reply_in_order() {
    kind_alone(FaultKind::SlowRead);
}

#[test]
fn fault_noread_alone_is_throttled_and_reaped() {
    let (counts, stats) = kind_alone(FaultKind::NoRead);
    assert!(stats.backpressure_stalls >= counts.runs, "{stats:?}");
    assert!(stats.reaped_idle >= counts.runs, "{stats:?}");
}

#[test]
fn fault_flood_alone_is_throttled_held_small_and_reaped() {
    // One cycle each: a flooder makes a debug-build server answer what the kernel's send
    // buffer takes before it stops reading (about 22,000 empty frames at the default 128
    // KiB cap; 350,000, seconds of CPU on a loaded machine, when it was autotuned: the
    // healthy frames behind them then missed the drain one run in a few); three cycles of
    // four flooders outlast the run.
    let (counts, stats) = kind_alone_for(FaultKind::Flood, 1);
    assert!(stats.backpressure_stalls >= counts.runs, "{stats:?}");
    assert!(stats.reaped_idle >= counts.runs, "{stats:?}");
    // Each flooder holds at most two high-water marks (one reply over), and is charged
    // for its kernel queues while its socket refuses replies: see PROTOCOL.md.
    let per_flooder = 2 * tabecho::config::DEFAULT_HIGH_WATER as u64 + 12 + default_kernel_charge();
    assert!(
        stats.buffered_peak <= counts.runs * per_flooder,
        "{stats:?}"
    );
}

#[test]
fn fault_trickle_alone_gets_nothing_and_is_reaped_after_the_idle_timeout() {
    let (counts, stats) = kind_alone(FaultKind::Trickle);
    assert!(stats.reaped_idle >= counts.runs, "{stats:?}");
}

#[test]
fn fault_oversize_alone_gets_replies_then_the_error_line_then_eof() {
    let (counts, stats) = kind_alone(FaultKind::Oversize);
    assert_eq!(stats.closed_frame_too_long, counts.runs, "{stats:?}");
}

#[test]
fn fault_garbage_alone_gets_the_replies_of_the_frames_it_makes() {
    let (counts, stats) = kind_alone(FaultKind::Garbage);
    assert!(stats.closed_eof >= counts.runs, "{stats:?}");
}

#[test]
fn fault_partial_alone_gets_nothing_and_is_reaped_after_the_idle_timeout() {
    let (counts, stats) = kind_alone(FaultKind::Partial);
    assert_eq!(counts.evicted, 0, "{counts:?}");
    assert!(stats.reaped_idle >= counts.runs, "{stats:?}");
    assert_eq!(stats.closed_memory_budget, 0, "{stats:?}");
}

#[test]
fn fault_partial_over_the_memory_budget_is_evicted_with_the_error_line() {
    // The memory tests' budget: one reactor, 64 KiB, one connection's worst case 4096 +
    // (8192 + 12) + 64 + 8192 = 20,556 bytes kept free; eight partial frames of 8,191
    // bytes (65,528) cannot all be held, so the server evicts some, each with the line.
    // The others are reaped at the idle timeout: both are documented outcomes.
    let server = TestServer::start_with(|c| {
        c.threads = 1;
        c.high_water = 4096;
        c.max_frame = 8192;
        c.max_buffer_memory = 64 * 1024;
        c.idle_timeout = IDLE;
        c.send_buffer = 0;
        c.recv_buffer = 0;
    });
    let mut options = faulty(&server.addr, &[FaultKind::Partial]);
    options.fault_share = 1.0;
    options.max_frame = 8192;
    let report = run_load(&options);
    let text = report.to_text();
    assert!(report.verified(), "{text}");
    let counts = &report.faults[0].1;
    assert_eq!(counts.connections, 8, "{text}");
    assert_eq!(counts.runs, 8 * CYCLES, "{text}");
    assert_eq!(counts.expected, counts.runs, "{text}");
    let stats = server.stop();
    assert!(counts.evicted >= 1, "nobody evicted: {text}{stats:?}");
    // Every close for the budget reached its holder with the whole line.
    assert_eq!(
        counts.evicted, stats.closed_memory_budget,
        "{text}{stats:?}"
    );
    assert!(
        stats.reaped_idle + counts.evicted >= counts.runs,
        "{stats:?}"
    );
}

#[test]
fn fault_oversize_against_another_frame_limit_is_unexpected() {
    // A smaller limit: the error line names another number.
    let server = start_server(MAX_FRAME / 2);
    let report = run_load(&faulty(&server.addr, &[FaultKind::Oversize]));
    let text = report.to_text();
    assert!(!report.verified() && !report.faults_ok(), "{text}");
    let counts = &report.faults[0].1;
    assert_eq!(counts.unexpected, FAULTY * CYCLES, "{text}");
    assert!(
        counts.samples[0].contains(r#"expected "error: frame exceeds 1024 bytes""#),
        "{text}"
    );
    // The healthy connections are still fine: only the fault's check failed.
    assert_eq!((report.lost, report.corrupt), (0, 0), "{text}");

    // A larger limit: no error at all; the server waits for the TAB, then reaps.
    let server = start_server(64 * 1024);
    let report = run_load(&faulty(&server.addr, &[FaultKind::Oversize]));
    let text = report.to_text();
    assert_eq!(report.fault_unexpected(), FAULTY * CYCLES, "{text}");
    assert!(text.contains("without the error line"), "{text}");
    assert!(text.contains("FAILED"), "{text}");
}

#[test]
fn load_binary_with_every_fault_exits_0_with_json() {
    let server = start_server(MAX_FRAME);
    let addr = server.addr.to_string();
    let (code, out, err) = tabecho(
        &[
            "load",
            "--addr",
            &addr,
            "-c",
            "18",
            "-t",
            "2",
            "--frames",
            "50",
            "--rate",
            "400",
            "-d",
            "10s",
            "--faults",
            "reset,halfclose,slowread,noread,flood,trickle,oversize,garbage,partial",
            "--fault-share",
            "0.5",
            "--fault-cycles",
            "2",
            "--fault-pause",
            "20ms",
            "--max-frame",
            "1024",
            "--idle-timeout",
            "1s",
            "--json",
        ],
        b"",
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(r#""verified":true"#), "{out}");
    assert!(out.contains(r#""faults_ok":true"#), "{out}");
    assert!(out.contains(r#""faulty_connections":9"#), "{out}");
    for kind in FaultKind::ALL {
        assert!(out.contains(&format!("\"{kind}\":{{")), "{kind}: {out}");
    }
    assert!(out.contains(r#""unexpected":0,"cut_short":0"#), "{out}");
}

#[test]
fn load_binary_exits_1_on_an_unexpected_fault_outcome() {
    let server = start_server(MAX_FRAME / 2);
    let addr = server.addr.to_string();
    let (code, out, err) = tabecho(
        &[
            "load",
            "--addr",
            &addr,
            "-c",
            "4",
            "--frames",
            "10",
            "-d",
            "10s",
            "--faults",
            "oversize",
            "--fault-cycles",
            "1",
            "--max-frame",
            "1024",
            "--idle-timeout",
            "1s",
        ],
        b"",
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("unexpected   oversize: connection"), "{out}");
    assert!(out.contains("1 unexpected fault outcomes"), "{out}");
}

#[test]
fn load_binary_rejects_an_unknown_fault_with_exit_2() {
    let (code, _, err) = tabecho(&["load", "--faults", "reset,bogus"], b"");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a fault"), "{err}");
}
