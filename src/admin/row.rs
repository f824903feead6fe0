//! One connection as a listing shows it ([`ConnectionRow`]), and a listing's body: JSON
//! lines, one object per line, each line ending in `\n`, best first. The server encodes,
//! `tabecho conns` decodes; both with serde, as `tabecho load --json` does.
//!
//! A row's fields, in the order they are written:
//!
//! | field | JSON | what |
//! |---|---|---|
//! | `id` | number | unique for the process's life, kept across an upgrade |
//! | `reactor` | number | the reactor that serves it, from 0 |
//! | `client` | string | the real client: the PROXY header's source where there is one, else `peer` |
//! | `peer` | string | the socket's peer: `127.0.0.5:40123`, `[::1]:40123`, `unix:` (unnamed) |
//! | `local` | string | the socket's own address: `127.0.0.1:8085`, `unix:/run/tabecho.sock` |
//! | `age` | number | seconds since the accept (microseconds resolution) |
//! | `idle` | number | seconds since the last progress |
//! | `state` | string | `reading` (no reply pending), `writing` (replies pending), `paused` (at `--high-water`), `lingering`, `moving` (an upgrade) |
//! | `input_held` | number | bytes read and not answered yet |
//! | `output_pending` | number | bytes of replies not written yet |
//! | `kernel_charge` | number | the kernel queues charged to the budget (a stalled socket's) |
//! | `memory` | number | all of it charged to the buffer budget |
//! | `bytes_in` | number or null | bytes the kernel received on a TCP connection (read or not yet); null for a Unix one |
//! | `bytes_out` | number or null | bytes of replies the TCP peer acknowledged; null for a Unix one |
//!
//! No row counts frames: a count per connection would add to every frame's path (the
//! server counts frames only in total, `tabecho_frames_total`). The byte counts are the
//! kernel's (`TCP_INFO`), read when the row is built, for the same reason.
//!
//! # Invariants
//! - A line always holds exactly one row and no newline of its own (JSON escapes one in a
//!   string), so a listing splits on `\n`.
//! - Decoding ignores fields it does not know: a server that adds a field keeps older
//!   clients working. A missing field is an error naming it.
//! - `age` and `idle` always decode to the microseconds they were encoded from, below
//!   2^50 µs (35 years; past that a float's rounding may move them a microsecond).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The most a TCP row encodes to, newline included, whatever its numbers (tested with
/// every number at its largest and the longest IPv6 socket addresses): what the answer's
/// size bound ([`super::MAX_LIMIT`] rows) is computed from. A Unix socket's path (up to
/// 107 bytes) can make a row longer; see [`ConnectionRow::encode_line`].
pub const MAX_TCP_ROW_BYTES: usize = 640;

/// What a connection is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnState {
    /// No reply pending: waiting for frames.
    Reading,
    /// Reading paused: its pending replies reached `--high-water`; reading resumes when
    /// they drain.
    Paused,
    /// Replies pending below `--high-water`: written as the socket takes them, while
    /// reading goes on.
    Writing,
    /// Closing: its write side shut, input read and dropped until the peer closes.
    Lingering,
    /// Moving to a new process (an upgrade in place).
    Moving,
}

impl ConnState {
    /// Every state, in the order of the table above.
    pub const ALL: [ConnState; 5] = [
        ConnState::Reading,
        ConnState::Paused,
        ConnState::Writing,
        ConnState::Lingering,
        ConnState::Moving,
    ];

    /// Its name, as the JSON and the table write it.
    pub fn name(self) -> &'static str {
        match self {
            ConnState::Reading => "reading",
            ConnState::Paused => "paused",
            ConnState::Writing => "writing",
            ConnState::Lingering => "lingering",
            ConnState::Moving => "moving",
        }
    }
}

/// One connection as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionRow {
    /// Unique for the process's life, kept across an upgrade.
    pub id: u64,
    /// The reactor that serves it, from 0.
    pub reactor: usize,
    /// The real client: the PROXY header's source where there is one, else `peer`.
    pub client: String,
    /// The socket's peer address (`unix:` for an unnamed Unix peer).
    pub peer: String,
    /// The socket's own address.
    pub local: String,
    /// Time since the accept.
    #[serde(with = "seconds")]
    pub age: Duration,
    /// Time since the last progress (a frame read or a reply written).
    #[serde(with = "seconds")]
    pub idle: Duration,
    /// What it is doing.
    pub state: ConnState,
    /// Bytes read and not answered yet (a partial frame included).
    pub input_held: u64,
    /// Bytes of replies not written yet.
    pub output_pending: u64,
    /// Kernel queue bytes charged to the budget (a socket that refuses replies).
    pub kernel_charge: u64,
    /// All bytes charged to the buffer budget for it.
    pub memory: u64,
    /// Bytes the kernel received on the connection, read or not yet (TCP only).
    pub bytes_in: Option<u64>,
    /// Bytes of replies the peer acknowledged (TCP only).
    pub bytes_out: Option<u64>,
}

impl ConnectionRow {
    /// Appends the row as one JSON line, `\n` included. A row of TCP addresses is at most
    /// [`MAX_TCP_ROW_BYTES`].
    pub fn encode_line(&self, out: &mut Vec<u8>) {
        // Numbers, fixed names and strings into a Vec: serde_json cannot fail on them.
        let written = serde_json::to_writer(&mut *out, self);
        debug_assert!(written.is_ok(), "{written:?}");
        out.push(b'\n');
    }
}

/// A listing's body: each row a JSON line, in order.
pub fn encode_rows(rows: &[ConnectionRow]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rows.len() * 256);
    for row in rows {
        row.encode_line(&mut out);
    }
    out
}

/// The rows of a listing's body, in order; empty lines are skipped. The error names the
/// line (from 1) and what is wrong with it.
pub fn decode_rows(body: &[u8]) -> Result<Vec<ConnectionRow>, String> {
    body.split(|&b| b == b'\n')
        .enumerate()
        .filter(|(_, line)| !line.trim_ascii().is_empty())
        .map(|(i, line)| serde_json::from_slice(line).map_err(|e| format!("line {}: {e}", i + 1)))
        .collect()
}

/// A `Duration` as a JSON number of seconds, to the microsecond.
mod seconds {
    use std::time::Duration;

    use serde::{de, Deserialize, Deserializer, Serializer};

    /// The largest number of seconds read back: `u64::MAX` microseconds.
    const MAX_SECONDS: f64 = u64::MAX as f64 / 1e6;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        // One correctly rounded division: the shortest decimal serde_json writes for it is
        // the microseconds written out (1234567 µs is 1.234567) while the float holds
        // them, and decoding multiplies back within half a microsecond below 2^50 µs.
        s.serialize_f64(micros as f64 / 1e6)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        if !(0.0..=MAX_SECONDS).contains(&secs) {
            return Err(de::Error::custom(format!(
                "{secs} is not a number of seconds from 0 to {MAX_SECONDS}"
            )));
        }
        Ok(Duration::from_micros((secs * 1e6).round() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn row(id: u64) -> ConnectionRow {
        ConnectionRow {
            id,
            reactor: 1,
            client: "127.0.0.5:40123".into(),
            peer: "127.0.0.5:40123".into(),
            local: "127.0.0.1:8085".into(),
            age: Duration::from_micros(12_345_678),
            idle: Duration::from_millis(250),
            state: ConnState::Paused,
            input_held: 1,
            output_pending: 32768,
            kernel_charge: 2_000_000,
            memory: 2_032_769,
            bytes_in: Some(100),
            bytes_out: Some(210),
        }
    }

    #[test]
    fn a_row_is_one_line_with_the_documented_fields_in_order() {
        let mut out = Vec::new();
        row(7).encode_line(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"id\":7,\"reactor\":1,\"client\":\"127.0.0.5:40123\",\
             \"peer\":\"127.0.0.5:40123\",\"local\":\"127.0.0.1:8085\",\"age\":12.345678,\
             \"idle\":0.25,\"state\":\"paused\",\"input_held\":1,\"output_pending\":32768,\
             \"kernel_charge\":2000000,\"memory\":2032769,\"bytes_in\":100,\
             \"bytes_out\":210}\n"
        );
    }

    #[test]
    fn every_state_has_its_documented_name() {
        for state in ConnState::ALL {
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(json, format!("\"{}\"", state.name()));
            assert_eq!(serde_json::from_str::<ConnState>(&json).unwrap(), state);
        }
    }

    #[test]
    fn rows_decode_in_order_skipping_empty_lines() {
        let rows = vec![row(1), row(2), row(3)];
        let mut body = encode_rows(&rows);
        assert_eq!(body.iter().filter(|&&b| b == b'\n').count(), 3);
        assert_eq!(decode_rows(&body), Ok(rows.clone()));
        body.extend_from_slice(b"\n  \n");
        assert_eq!(decode_rows(&body), Ok(rows));
        assert_eq!(decode_rows(b""), Ok(vec![]));
    }

    #[test]
    fn unknown_fields_are_ignored_and_a_missing_one_is_named() {
        let mut line = String::from_utf8(encode_rows(&[row(9)])).unwrap();
        line.insert_str(1, "\"tls\":true,\"extra\":{\"a\":[1,2]},");
        assert_eq!(decode_rows(line.as_bytes()), Ok(vec![row(9)]));
        let without_memory = line.replace("\"memory\":2032769,", "");
        let err = decode_rows(format!("\n{without_memory}").as_bytes()).unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
        assert!(err.contains("missing field `memory`"), "{err}");
    }

    #[test]
    fn bad_durations_and_states_are_refused() {
        let line = String::from_utf8(encode_rows(&[row(1)])).unwrap();
        for (from, to) in [
            ("\"age\":12.345678", "\"age\":-1"),
            ("\"age\":12.345678", "\"age\":1e300"),
            ("\"idle\":0.25", "\"idle\":\"0.25\""),
            ("\"paused\"", "\"asleep\""),
        ] {
            let bad = line.replace(from, to);
            assert!(decode_rows(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_newline_in_an_address_stays_inside_its_line() {
        let mut odd = row(1);
        odd.local = "unix:/tmp/a\nb.sock".into();
        let body = encode_rows(&[odd.clone(), row(2)]);
        assert_eq!(body.iter().filter(|&&b| b == b'\n').count(), 2);
        assert_eq!(decode_rows(&body), Ok(vec![odd, row(2)]));
    }

    #[test]
    fn a_tcp_row_at_its_largest_is_within_the_documented_bound() {
        let widest = "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff%4294967295]:65535";
        assert_eq!(
            widest
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .to_string()
                .len(),
            widest.len(),
            "the longest form a SocketAddr prints"
        );
        let big = ConnectionRow {
            id: u64::MAX,
            reactor: usize::MAX,
            client: widest.into(),
            peer: widest.into(),
            local: widest.into(),
            age: Duration::MAX,
            idle: Duration::from_micros(u64::MAX),
            state: ConnState::Lingering,
            input_held: u64::MAX,
            output_pending: u64::MAX,
            kernel_charge: u64::MAX,
            memory: u64::MAX,
            bytes_in: Some(u64::MAX),
            bytes_out: Some(u64::MAX),
        };
        let mut out = Vec::new();
        big.encode_line(&mut out);
        assert!(
            out.len() <= MAX_TCP_ROW_BYTES,
            "{} bytes: {}",
            out.len(),
            String::from_utf8_lossy(&out)
        );
    }

    proptest! {
        #[test]
        fn durations_read_back_to_the_microsecond(age in 0..(1u64 << 50), idle in 0..(1u64 << 50)) {
            let mut r = row(1);
            r.age = Duration::from_micros(age);
            r.idle = Duration::from_micros(idle);
            let body = encode_rows(std::slice::from_ref(&r));
            prop_assert_eq!(decode_rows(&body), Ok(vec![r]));
        }
    }
}
