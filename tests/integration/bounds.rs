//! Bounded inputs: every flag whose value could overflow the server's or the load's
//! arithmetic is refused with exit 2 and one message naming the flag (docs/PROTOCOL.md,
//! "Command line"). Each test starts the binary with the bad value; a value let through
//! would start a server, which `tabecho` kills after its bound and fails the test.

use crate::util::tabecho;

/// Runs `tabecho ARGS` and asserts exit 2 with `flag` named in stderr.
#[track_caller]
fn refused(args: &[&str], flag: &str) {
    let (code, _, stderr) = tabecho(args, b"");
    assert_eq!(code, 2, "{args:?} exited {code}: {stderr}");
    assert!(
        stderr.contains(flag),
        "{args:?}: {flag} not named in {stderr:?}"
    );
}

/// `serve` on port 0 with `flag value` added.
#[track_caller]
fn serve_refuses(flag: &str, value: &str) {
    refused(&["serve", "--listen", "127.0.0.1:0", flag, value], flag);
}

#[test]
fn max_frame_above_one_gib_is_refused() {
    serve_refuses("--max-frame", "1073741825");
    serve_refuses("--max-frame", "18446744073709551615");
}

#[test]
fn high_water_and_socket_buffers_above_one_gib_are_refused() {
    serve_refuses("--high-water", "1073741825");
    serve_refuses("--sndbuf", "18446744073709551615");
    serve_refuses("--rcvbuf", "4294967296");
}

#[test]
fn serve_durations_above_365_days_are_refused() {
    for flag in [
        "--idle-timeout",
        "--shutdown-grace",
        "--stats-interval",
        "--linger",
    ] {
        serve_refuses(flag, "1000000000s");
        serve_refuses(flag, "8761h");
    }
}

#[test]
fn a_zero_linger_is_refused() {
    serve_refuses("--linger", "0s");
}

#[test]
fn a_budget_floor_that_overflows_names_threads() {
    // (threads + 1) x one connection's worst case overflows a usize: checked, not wrapped.
    serve_refuses("--threads", "18446744073709551615");
    serve_refuses("--threads", "9223372036854775807");
}

#[test]
fn load_durations_above_365_days_are_refused() {
    for flag in [
        "--duration",
        "--warmup",
        "--drain",
        "--connect-timeout",
        "--fault-pause",
        "--idle-timeout",
    ] {
        refused(&["load", flag, "1000000000s"], flag);
    }
}

#[test]
fn load_max_frame_above_one_gib_is_refused() {
    refused(
        &["load", "--max-frame", "18446744073709551615"],
        "--max-frame",
    );
}

#[test]
fn send_and_stats_durations_above_365_days_are_refused() {
    refused(&["send", "--timeout", "8761h", "x"], "--timeout");
    refused(
        &["stats", "127.0.0.1:1", "--interval", "8761h"],
        "--interval",
    );
}

#[test]
fn load_rates_below_one_per_365_days_or_not_finite_are_refused() {
    for flag in ["--rate", "--connect-rate"] {
        for value in ["1e-300", "0", "-1", "inf", "NaN"] {
            // `--rate=-1`: as two words clap takes -1 for a flag.
            refused(&["load", &format!("{flag}={value}")], flag);
        }
    }
}

#[test]
fn load_connections_and_sizes_past_their_bounds_are_refused() {
    refused(&["load", "--connections", "100000000000"], "--connections");
    refused(&["load", "--connections", "0"], "--connections");
    refused(&["load", "--size", "1073741825"], "--size");
}
