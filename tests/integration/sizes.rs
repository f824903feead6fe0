//! Sizes as people write them (`128K`, `256MiB`): every size flag of `serve` and `load`
//! takes them and applies them, refuses any other form with exit 2 and one error naming
//! the flag and the accepted forms, and the binary prints sizes back in the same form
//! (docs/PROTOCOL.md, "Command line", SIZE).

use std::io::Write;

use harness::report::metric_by_reactor;
use tabecho::size::parse_size;

use crate::util::*;

/// The size printed right after `label` in `text` (up to a space, a comma or the end),
/// parsed back as the flags parse it; fails the test if it does not parse.
#[track_caller]
fn size_after(text: &str, label: &str) -> usize {
    let at = text
        .find(label)
        .unwrap_or_else(|| panic!("no {label:?} in {text:?}"));
    let word = text[at + label.len()..]
        .split([' ', ',', ')', '\n'])
        .next()
        .unwrap_or("");
    parse_size(word).unwrap_or_else(|e| panic!("{label:?} followed by {word:?}: {e}"))
}

#[test]
fn serve_takes_sizes_with_units_and_applies_them() {
    let server = ServerProcess::spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
        "--max-buffer-memory",
        "256MiB",
        "--sndbuf",
        "128K",
        "--rcvbuf",
        "128kb",
        "--high-water",
        "32KiB",
        "--max-frame",
        "1k",
        // Long enough that no wait below, on a busy machine, sees the client reaped.
        "--idle-timeout",
        "60s",
    ]);
    // The budget is what every reactor reports.
    let (status, page) = http_get(server.metrics_addr(), "/metrics");
    assert_eq!(status, 200, "{page}");
    let budgets = metric_by_reactor(&page, "tabecho_max_buffer_memory_bytes");
    assert!(!budgets.is_empty(), "{page}");
    for (reactor, budget) in &budgets {
        assert_eq!(*budget, 268_435_456.0, "reactor {reactor}");
    }
    // `1k` is 1024 bytes: exactly that long a frame is answered, one byte more is not.
    let mut c = connect(server.tcp());
    round_trip(&mut c, &[b'x'; 1024]);
    let mut long = connect(server.tcp());
    long.write_all(&[b'y'; 1025]).unwrap();
    let (got, _) = read_to_end(&mut long);
    assert_eq!(got, b"error: frame exceeds 1024 bytes\t");
    // A whole frame's worth held unfinished: `tabecho stats` prints it as a size.
    c.write_all(&[b'z'; 1024]).unwrap();
    metrics_until(server.metrics_addr(), |p| {
        total(p, "tabecho_buffered_bytes") == 1024.0
    });
    let metrics = server.metrics_addr().to_string();
    let (code, out, err) = tabecho(&["stats", &metrics, "--once", "--interval", "50ms"], b"");
    assert_eq!(code, 0, "{err}");
    let memory = out
        .lines()
        .find(|l| l.trim_start().starts_with("memory"))
        .unwrap_or_else(|| panic!("no memory line in\n{out}"));
    assert!(memory.ends_with(" 1KiB buffered"), "{memory}");
    server.signal("TERM");
    drop(c);
    let (status, log) = server.wait_exit();
    assert_eq!(status.code(), Some(0), "{log:?}");
    let summary = log
        .iter()
        .find(|l| l.contains("shutdown: "))
        .expect("a summary line");
    assert!(
        size_after(summary, "buffered peak ") >= 1024,
        "an unfinished 1024 bytes were held: {summary}"
    );
}

#[test]
fn load_takes_sizes_with_units() {
    // 1KiB payloads against a server whose frame limit is exactly 1024 bytes: a payload
    // parsed any larger would be refused, and the run would fail.
    let server = TestServer::start_with(|c| c.max_frame = 1024);
    let addr = server.addr.to_string();
    let (code, out, err) = tabecho(
        &[
            "load",
            "--addr",
            &addr,
            "-s",
            "1KiB",
            "--max-frame",
            "1K",
            "--socket-buffer",
            "64kib",
            "-c",
            "2",
            "-t",
            "1",
            "--frames",
            "50",
            "-d",
            "10s",
        ],
        b"",
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("frames of 1KiB"), "{out}");
    assert!(
        out.contains("100 sent, 100 answered, 0 lost, 0 corrupt"),
        "{out}"
    );
}

/// Runs `tabecho SUB FLAG=VALUE` and asserts exit 2 and an error naming `flag`; returns
/// stderr. A value let through would start a server on port 0 (killed after its bound), or
/// a load against an address where nothing listens: either fails the test.
#[track_caller]
fn refused(sub: &str, flag: &str, value: &str) -> String {
    // `--flag=VALUE`: as two words clap takes `-1` for a flag.
    let arg = format!("{flag}={value}");
    let nowhere = refused_addr().to_string();
    let args = match sub {
        "serve" => ["serve", "--listen", "127.0.0.1:0", &arg],
        _ => [sub, "--addr", &nowhere, &arg],
    };
    let (code, _, stderr) = tabecho(&args, b"");
    assert_eq!(code, 2, "{args:?} exited {code}: {stderr}");
    assert!(
        stderr.contains(&format!("'{flag} <SIZE>'")),
        "{args:?}: {flag} not named in {stderr:?}"
    );
    stderr
}

#[test]
fn every_size_flag_refuses_an_unknown_unit_naming_itself_and_the_forms() {
    let serve = [
        "--max-frame",
        "--high-water",
        "--max-buffer-memory",
        "--sndbuf",
        "--rcvbuf",
    ];
    let load = ["--size", "--socket-buffer", "--max-frame"];
    let flags = serve
        .iter()
        .map(|flag| ("serve", *flag))
        .chain(load.iter().map(|flag| ("load", *flag)));
    for (sub, flag) in flags {
        for value in ["12XB", "64 KiB", "1.5M", "", "-1"] {
            let stderr = refused(sub, flag, value);
            assert!(
                stderr.contains("a size is a number of bytes with an optional K, M or G"),
                "{sub} {flag}={value}: {stderr}"
            );
        }
    }
}

#[test]
fn max_frame_of_2gib_is_refused_naming_its_bound() {
    for sub in ["serve", "load"] {
        let stderr = refused(sub, "--max-frame", "2GiB");
        assert!(
            stderr.contains("2GiB is above 1GiB, the largest accepted"),
            "{sub}: {stderr}"
        );
        let stderr = refused(sub, "--max-frame", "1073741825");
        assert!(stderr.contains("above 1GiB"), "{sub}: {stderr}");
    }
    // Exactly the bound starts (with a budget that holds such connections: the budget is
    // accounting, nothing is allocated up front).
    let server = ServerProcess::spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--max-frame",
        "1GiB",
        "--max-buffer-memory",
        "64GiB",
    ]);
    server.signal("TERM");
    let (status, log) = server.wait_exit();
    assert_eq!(status.code(), Some(0), "{log:?}");
}
