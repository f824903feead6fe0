//! `tabecho load` and `tabecho::load::run`: verified runs against the real server, and the
//! deliberately wrong servers whose corruption and loss it must catch; `--churn`'s one-frame
//! connections and each of their outcomes; the report's intervals, its histograms (the
//! percentile table, the plot) and `tabecho load merge`. Small and bounded: a few
//! connections and a fixed frame count per connection, or a few seconds at a fixed rate.

use std::time::Duration;

use tabecho::addr::ListenAddr;
use tabecho::load::LoadOptions;

use crate::util::*;

/// Options for a small closed-loop run: `connections` × `frames` frames, 2 threads.
fn small(addr: &ListenAddr, connections: usize, frames: u64) -> LoadOptions {
    let mut options = LoadOptions::new(addr.clone());
    options.connections = connections;
    options.threads = 2;
    options.pipeline = 8;
    options.size = 24;
    options.frames_per_connection = Some(frames);
    // An upper bound only: the run ends as soon as every frame is settled.
    options.duration = WAIT;
    options.drain = Duration::from_secs(2);
    options
}

#[test]
fn load_verifies_every_reply_from_the_server() {
    let server = TestServer::start();
    let report = run_load(&small(&server.addr, 4, 2000));
    assert!(report.verified(), "{}", report.to_text());
    assert_eq!(report.established, 4);
    assert_eq!(report.frames_sent, 8000);
    assert_eq!(report.frames_answered, 8000);
    assert_eq!((report.lost, report.corrupt), (0, 0));
    assert!(report.p50_us > 0 && report.p50_us <= report.max_us);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
}

#[test]
fn load_verifies_large_and_empty_frames() {
    let server = TestServer::start();
    for size in [0, 65536] {
        let mut options = small(&server.addr, 2, 20);
        options.size = size;
        let report = run_load(&options);
        assert!(report.verified(), "size {size}: {}", report.to_text());
        assert_eq!(report.frames_answered, 40, "size {size}");
    }
}

#[test]
fn load_over_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("load.sock");
    let server = TestServer::start_with(|c| c.listen = ListenAddr::Unix(path.clone()));
    let report = run_load(&small(&server.addr, 3, 500));
    assert!(report.verified(), "{}", report.to_text());
    assert_eq!(report.frames_answered, 1500);
}

#[test]
fn load_catches_one_corrupt_reply_in_a_thousand() {
    let server = FaultyServer::start(Fault::CorruptOneInAThousand);
    // 3000 replies over the server: numbers 999, 1999 and 2999 are corrupt.
    let report = run_load(&small(&server.addr, 3, 1000));
    assert!(!report.verified());
    assert_eq!(report.corrupt, 3, "{}", report.to_text());
    assert_eq!(report.lost, 0, "{}", report.to_text());
    assert_eq!(report.frames_answered, 2997);
    assert_eq!(report.errors.get("corrupt reply"), Some(&3));
}

#[test]
fn load_catches_one_dropped_reply_as_lost() {
    let server = FaultyServer::start(Fault::DropOne);
    let report = run_load(&small(&server.addr, 2, 1000));
    assert!(!report.verified());
    assert_eq!(report.lost, 1, "{}", report.to_text());
    assert_eq!(report.corrupt, 0, "{}", report.to_text());
    assert_eq!(report.frames_answered, 1999);
}

#[test]
fn load_raw_mode_checks_a_verbatim_echo() {
    let server = FaultyServer::start(Fault::Verbatim);
    let mut options = small(&server.addr, 2, 500);
    options.raw = true;
    let report = run_load(&options);
    assert!(report.verified(), "{}", report.to_text());
    assert_eq!(report.frames_answered, 1000);
    // The same server is wrong for the tab-echo protocol: every reply lacks the prefix.
    options.raw = false;
    options.frames_per_connection = Some(10);
    let report = run_load(&options);
    assert_eq!(report.corrupt, 20, "{}", report.to_text());
}

#[test]
fn load_silent_server_loses_every_frame_after_the_drain() {
    let server = FaultyServer::start(Fault::Silent);
    let mut options = small(&server.addr, 2, 5);
    options.duration = Duration::from_millis(200);
    options.drain = Duration::from_millis(200);
    let report = run_load(&options);
    assert_eq!(report.frames_sent, 10);
    assert_eq!(report.lost, 10, "{}", report.to_text());
    assert!(!report.verified());
}

#[test]
fn load_open_loop_at_a_fixed_rate() {
    let server = TestServer::start();
    let mut options = small(&server.addr, 4, 100);
    options.frames_per_connection = None;
    options.rate = Some(400.0);
    options.duration = Duration::from_millis(500);
    let report = run_load(&options);
    assert!(report.verified(), "{}", report.to_text());
    // At most rate × duration frames are scheduled; some are always sent.
    assert!(
        report.frames_sent > 0 && report.frames_sent <= 204,
        "{}",
        report.to_text()
    );
    assert_eq!(report.frames_answered, report.frames_sent);
}

#[test]
fn load_idle_reports_the_servers_reaping() {
    let server = TestServer::start_with(|c| c.idle_timeout = Duration::from_millis(200));
    let mut options = small(&server.addr, 5, 0);
    options.frames_per_connection = None;
    options.idle = true;
    // Held long enough that the reaping (200 ms, plus the server's tick) is seen.
    options.duration = Duration::from_secs(2);
    let report = run_load(&options);
    assert_eq!(report.established, 5);
    assert_eq!(report.frames_sent, 0);
    assert_eq!(report.server_closes, 5, "{}", report.to_text());
    assert!(report.close_after_min_ms >= 150, "{}", report.to_text());
    assert!(report.verified());
}

#[test]
fn load_counts_refused_connections() {
    let addr = ListenAddr::Tcp(refused_addr());
    let mut options = small(&addr, 3, 10);
    options.duration = Duration::from_millis(300);
    let report = run_load(&options);
    assert_eq!(report.established, 0);
    assert_eq!(report.connect_failed, 3);
    assert_eq!(report.errors.get("connect: connection refused"), Some(&3));
}

#[test]
fn load_binary_exits_0_and_prints_the_summary() {
    let server = TestServer::start();
    let addr = server.addr.to_string();
    let (code, out, err) = tabecho(
        &[
            "load", "--addr", &addr, "-c", "2", "-t", "1", "--frames", "100", "-d", "10s",
        ],
        b"",
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("200 sent, 200 answered, 0 lost, 0 corrupt"),
        "{out}"
    );
    assert!(out.contains("verdict      OK"), "{out}");
}

#[test]
fn load_binary_exits_1_on_corruption_with_json() {
    let server = FaultyServer::start(Fault::CorruptOneInAThousand);
    let addr = server.addr.to_string();
    let (code, out, err) = tabecho(
        &[
            "load", "--addr", &addr, "-c", "2", "--frames", "1000", "-d", "10s", "--json",
        ],
        b"",
    );
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains(r#""corrupt":2"#), "{out}");
    assert!(out.contains(r#""verified":false"#), "{out}");
}

#[test]
fn load_binary_exits_1_on_loss() {
    let server = FaultyServer::start(Fault::DropOne);
    let addr = server.addr.to_string();
    let (code, out, err) = tabecho(
        &[
            "load", "--addr", &addr, "-c", "2", "--frames", "1000", "-d", "10s",
        ],
        b"",
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("1 lost"), "{out}");
    assert!(out.contains("FAILED"), "{out}");
}

#[test]
fn load_binary_exits_3_when_no_connection_opens() {
    let addr = refused_addr().to_string();
    let (code, _, err) = tabecho(&["load", "--addr", &addr, "-c", "2", "-d", "300ms"], b"");
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("no connection"), "{err}");
}

/// Only churn: no long-lived connection, `rate` one-frame connections a second for
/// `duration`, each with 2 s for its whole exchange.
fn churn_only(addr: &ListenAddr, rate: f64, duration: Duration) -> LoadOptions {
    let mut options = LoadOptions::new(addr.clone());
    options.connections = 0;
    options.threads = 2;
    options.size = 24;
    options.churn = Some(rate);
    options.duration = duration;
    options.connect_timeout = Duration::from_secs(2);
    options
}

/// The report's churn counts; checks that every connection opened has one outcome.
#[track_caller]
fn churn_counts(report: &tabecho::load::LoadReport) -> tabecho::load::ChurnCounts {
    let text = report.to_text();
    let churn = report.churn.clone().unwrap_or_else(|| panic!("{text}"));
    assert_eq!(churn.attempted, churn.ok + churn.failed(), "{text}");
    assert!(churn.attempted > 0, "{text}");
    churn
}

#[test]
fn load_churn_connects_sends_one_frame_reads_its_reply_and_closes() {
    let server = TestServer::start();
    // Long-lived connections beside the churn, verified as without it.
    let mut options = churn_only(&server.addr, 200.0, Duration::from_millis(500));
    options.connections = 2;
    options.frames_per_connection = Some(100);
    let report = run_load(&options);
    let text = report.to_text();
    assert!(report.verified(), "{text}");
    assert_eq!(report.frames_answered, 200, "{text}");
    let churn = churn_counts(&report);
    // 100 a second per worker for 0.5 s; a worker scheduled late may miss the last few.
    assert!((50..=100).contains(&churn.attempted), "{text}");
    assert_eq!(churn.ok, churn.attempted, "{text}");
    assert!(text.contains(&format!("churn        {} one-frame", churn.attempted)));
    let stats = server.stop();
    // Each one a connection of its own, with one frame.
    assert_eq!(stats.accepted, churn.attempted + 2, "{stats:?}");
    assert_eq!(stats.frames, churn.attempted + 200, "{stats:?}");
}

#[test]
fn load_churn_over_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("churn.sock");
    let server = TestServer::start_with(|c| c.listen = ListenAddr::Unix(path.clone()));
    let report = run_load(&churn_only(&server.addr, 200.0, Duration::from_millis(300)));
    let churn = churn_counts(&report);
    assert_eq!(churn.ok, churn.attempted, "{}", report.to_text());
    assert!(report.verified());
}

#[test]
fn load_churn_counts_refused_connections() {
    let addr = ListenAddr::Tcp(refused_addr());
    let report = run_load(&churn_only(&addr, 100.0, Duration::from_millis(200)));
    let churn = churn_counts(&report);
    assert_eq!(churn.refused, churn.attempted, "{}", report.to_text());
    assert!(!report.verified() && !report.ran());
    assert_eq!(
        report.errors.get("churn: connection refused"),
        Some(&churn.attempted)
    );
}

#[test]
fn load_churn_counts_a_close_before_the_reply_as_reset() {
    let server = FaultyServer::start(Fault::CloseAtOnce);
    let report = run_load(&churn_only(&server.addr, 100.0, Duration::from_millis(200)));
    let churn = churn_counts(&report);
    assert_eq!(churn.reset, churn.attempted, "{}", report.to_text());
    assert!(!report.verified());
}

#[test]
fn load_churn_counts_another_reply_as_wrong() {
    // A byte echo answers the payload without `server got:`.
    let server = FaultyServer::start(Fault::Verbatim);
    let report = run_load(&churn_only(&server.addr, 100.0, Duration::from_millis(200)));
    let churn = churn_counts(&report);
    assert_eq!(churn.wrong, churn.attempted, "{}", report.to_text());
    assert!(!report.verified());
}

#[test]
fn load_churn_counts_no_reply_within_the_timeout_as_timed_out() {
    let server = FaultyServer::start(Fault::Silent);
    let mut options = churn_only(&server.addr, 100.0, Duration::from_millis(200));
    options.connect_timeout = Duration::from_millis(300);
    let report = run_load(&options);
    let churn = churn_counts(&report);
    assert_eq!(churn.timed_out, churn.attempted, "{}", report.to_text());
    // Each one kept its whole timeout, past the end of sending.
    assert!(report.elapsed_secs >= 0.3, "{}", report.to_text());
}

#[test]
fn load_binary_churn_alone_exits_0_and_its_json_reads_back() {
    let server = TestServer::start();
    let addr = server.addr.to_string();
    let (code, out, err) = tabecho(
        &[
            "load", "--addr", &addr, "-c", "0", "--churn", "100", "-d", "300ms", "--json",
        ],
        b"",
    );
    assert_eq!(code, 0, "{out}{err}");
    let report = tabecho::load::LoadReport::from_json(out.trim()).expect(&out);
    let churn = churn_counts(&report);
    assert_eq!(churn.ok, churn.attempted, "{out}");
    assert!(out.contains(r#""churn":{"attempted":"#), "{out}");
}

#[test]
fn load_binary_churn_refused_exits_3() {
    let addr = refused_addr().to_string();
    let (code, out, err) = tabecho(
        &[
            "load", "--addr", &addr, "-c", "0", "--churn", "50", "-d", "200ms",
        ],
        b"",
    );
    assert_eq!(code, 3, "{out}{err}");
    assert!(out.contains("0 ok, "), "{out}");
}

/// Pairs of (`t_s`, `frames`) of a report's intervals.
fn interval_frames(report: &tabecho::load::LoadReport) -> Vec<(f64, u64)> {
    report.intervals.iter().map(|i| (i.t_s, i.frames)).collect()
}

#[test]
fn load_binary_json_of_a_6s_run_has_its_intervals_and_their_frames_add_up() {
    let server = TestServer::start();
    let addr = server.addr.to_string();
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("latency.hgrm");
    let plot = dir.path().join("run.svg");
    let (code, out, err) = tabecho(
        &[
            "load",
            "--addr",
            &addr,
            "-c",
            "4",
            "-t",
            "2",
            "--rate",
            "2000",
            "-d",
            "6s",
            "--json",
            "--histogram",
            table.to_str().unwrap(),
            "--plot",
            plot.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(code, 0, "{out}{err}");
    let report = tabecho::load::LoadReport::from_json(out.trim()).expect(&out);
    let intervals = interval_frames(&report);
    assert!(report.intervals.len() >= 5, "{intervals:?}");
    assert_eq!(report.interval_secs, 1.0);
    // The intervals partition the measured window: no warmup, so every frame sent was
    // scheduled in it, and each is in exactly one interval.
    let sum: u64 = intervals.iter().map(|&(_, f)| f).sum();
    assert_eq!(sum, report.frames_answered, "{intervals:?}");
    assert_eq!(sum, report.replies);
    for (k, interval) in report.intervals.iter().enumerate() {
        assert_eq!(interval.t_s, k as f64, "{intervals:?}");
        // 2,000 frames a second over 4 connections: every second has some.
        assert!(interval.frames > 0, "{intervals:?}");
        assert!(interval.p50_us <= interval.p99_us && interval.p99_us <= interval.max_us);
        assert!(interval.max_us <= report.max_us);
        assert_eq!(interval.connections, 4, "{intervals:?}");
        assert!(interval.histogram.starts_with("HISTFAAA"));
    }
    assert!(report.histogram.starts_with("HISTFAAA"), "{out}");
    // The percentile table: HdrHistogram's, its total count every measured reply.
    let table = std::fs::read_to_string(&table).unwrap();
    assert!(
        table.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)\n\n"),
        "{table}"
    );
    let total = format!("Total count    = {:>12}]", report.replies);
    assert!(table.contains(&total), "{total}\n{table}");
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("2000 frames/s"),
        "{svg:.300}"
    );
    // Piped stderr: no live line, so no carriage return and no escape sequence.
    assert!(!err.contains('\r') && !err.contains('\x1b'), "{err:?}");
}

#[test]
fn load_binary_merges_two_runs_into_one_report() {
    let server = TestServer::start();
    let mut options = LoadOptions::new(server.addr.clone());
    options.connections = 3;
    options.threads = 1;
    options.rate = Some(1500.0);
    options.duration = Duration::from_secs(2);
    options.interval = Duration::from_millis(500);
    // Two loads at once against one server, as two machines would run them.
    let other = options.clone();
    let b = std::thread::spawn(move || run_load(&other));
    let a = run_load(&options);
    let b = b.join().unwrap();
    assert!(
        a.verified() && b.verified(),
        "{}{}",
        a.to_text(),
        b.to_text()
    );
    let dir = tempfile::tempdir().unwrap();
    let (a_path, b_path) = (dir.path().join("a.json"), dir.path().join("b.json"));
    std::fs::write(&a_path, a.to_json()).unwrap();
    std::fs::write(&b_path, b.to_json()).unwrap();
    let (a_arg, b_arg) = (a_path.to_str().unwrap(), b_path.to_str().unwrap());

    let (code, out, err) = tabecho(&["load", "merge", a_arg, b_arg, "--json"], b"");
    assert_eq!(code, 0, "{out}{err}");
    let merged = tabecho::load::LoadReport::from_json(out.trim()).expect(&out);
    assert_eq!(
        merged.frames_answered,
        a.frames_answered + b.frames_answered
    );
    assert_eq!(merged.replies, a.replies + b.replies);
    assert_eq!(merged.connections, 6);
    assert_eq!(merged.max_us, a.max_us.max(b.max_us));
    let (low, high) = (a.p50_us.min(b.p50_us), a.p50_us.max(b.p50_us));
    assert!(
        (low..=high).contains(&merged.p50_us),
        "{} {low} {high}",
        merged.p50_us
    );
    // Started together: the intervals line up (the later run's shifted by the whole
    // intervals between the two starts), and their frames add up.
    let frames: u64 = merged.intervals.iter().map(|i| i.frames).sum();
    assert_eq!(frames, merged.replies, "{:?}", interval_frames(&merged));
    let apart_ms = a.window_start_unix_ms.abs_diff(b.window_start_unix_ms);
    let shift = (apart_ms as f64 / 500.0).round() as usize;
    let longest = a.intervals.len().max(b.intervals.len());
    assert!(
        merged.intervals.len() <= longest + shift,
        "{apart_ms} ms apart: {:?}",
        interval_frames(&merged)
    );

    // One report alone gives back its own percentiles and intervals.
    let (code, out, err) = tabecho(&["load", "merge", a_arg, "--json"], b"");
    assert_eq!(code, 0, "{out}{err}");
    let alone = tabecho::load::LoadReport::from_json(out.trim()).expect(&out);
    assert_eq!(
        (
            alone.p50_us,
            alone.p90_us,
            alone.p99_us,
            alone.p999_us,
            alone.max_us
        ),
        (a.p50_us, a.p90_us, a.p99_us, a.p999_us, a.max_us)
    );
    assert_eq!(alone.intervals, a.intervals);

    // The summary says where each run's intervals landed.
    let (code, out, _) = tabecho(&["load", "merge", a_arg, b_arg], b"");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("tabecho load merge: 2 runs"), "{out}");
    assert!(out.contains("verdict      OK"), "{out}");

    // A file that is not a report: exit 3, naming it.
    std::fs::write(&b_path, "{\"lost\":").unwrap();
    let (code, _, err) = tabecho(&["load", "merge", a_arg, b_arg], b"");
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("b.json"), "{err}");
}

#[test]
fn load_binary_refuses_an_interval_of_zero_or_too_many() {
    for (interval, duration, says) in [("0s", "1s", "above zero"), ("1ms", "200s", "at most")] {
        let (code, out, err) = tabecho(
            &[
                "load",
                "--interval",
                interval,
                "-d",
                duration,
                "--addr",
                "127.0.0.1:1",
            ],
            b"",
        );
        assert_eq!(code, 2, "{out}{err}");
        assert!(err.contains("--interval") && err.contains(says), "{err}");
    }
}
