//! The hand-over's wire format: what an upgrading process and its successor say over their
//! socketpair, as bytes. Pure: no sockets, no descriptors (they travel beside these bytes,
//! as `SCM_RIGHTS`, see `handover.rs`).
//!
//! ```text
//!   new → old   hello   "tabecho-handover 3 room=N\n"   (before READY=1)
//!   old → new   batch   header: "THB1" count:u32 payload_len:u64 (little-endian), with
//!                       `count` descriptors attached; then the payload: `count` records
//!   new → old   "ack N\n" (received all N descriptors intact) or "nack WHY\n"
//!   old → new   "C"     commit: the batch is the new process's to serve
//!   old → new   a header with count 0: the end; the new process answers "ack 0\n"
//! ```
//!
//! A record is one connection's state ([`ConnState`]): kind u8 (0 TCP, 1 Unix), flags
//! u8, closing u8 (0 none, else 1 + its index in `CloseReason::ALL`), idle_for_us u64,
//! then, with the client flag, the real client a PROXY header named (family u8, 4 or 6;
//! the address's 4 or 16 bytes; its port u16), then the decoder's bytes and the pending
//! output, each as len:u32 + bytes; then the connection's id u64 and age_us u64, which
//! the admin endpoint lists.
//!
//! Versions: 1 had no client; 2 added it (a moved connection keeps its real source); 3
//! added the id and the age (an operator's ids hold across an upgrade). Both sides speak
//! exactly one version: a new process of another version gets the drain.
//!
//! # Invariants
//! - Decoding never panics and never reads past its input: any malformed or truncated
//!   payload is an error, and the hand-over falls back (the old process keeps the batch).

use std::io;
use std::net::{IpAddr, SocketAddr};

use crate::counters::CloseReason;

/// The hand-over version this binary speaks. A new process that speaks another (or none,
/// an older tabecho) gets the old drain instead.
pub const VERSION: u32 = 3;
/// What a batch header starts with.
const BATCH_MAGIC: &[u8; 4] = b"THB1";
/// Bytes in a batch header.
pub const HEADER_LEN: usize = 16;
/// The commit byte.
pub const COMMIT: u8 = b'C';
/// Descriptors per batch, at most: Linux's `SCM_MAX_FD` (253), the most one `sendmsg`
/// may carry.
pub const MAX_FDS_PER_BATCH: usize = 253;
/// The largest payload a receiver accepts for one batch. A batch is closed once its
/// payload passes [`PAYLOAD_SOFT_LIMIT`], so it holds that much plus one connection's
/// state at most, and one connection's state is at most its frame limit or held input
/// (each at most 1 GiB, as the flags are bounded) plus its pending output (the high-water
/// mark, at most 1 GiB, plus one reply): well under this.
pub const MAX_PAYLOAD: u64 = 4 << 30;
/// A batch is closed once its payload passes this many bytes, so a receiver never holds
/// more than one connection's state past it.
pub const PAYLOAD_SOFT_LIMIT: usize = 16 << 20;

const FLAG_PEER_EOF: u8 = 1;
const FLAG_READ_PAUSED: u8 = 1 << 1;
const FLAG_WRITE_SHUT: u8 = 1 << 2;
const FLAG_HANGUP_SEEN: u8 = 1 << 3;
const FLAG_DECODER_HELD: u8 = 1 << 4;
const FLAG_CLIENT: u8 = 1 << 5;

/// The kind of a connection's socket, which the descriptor alone does not say to Rust.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tcp,
    Unix,
}

/// One connection's state, apart from its socket: everything the new process needs to go
/// on exactly where the old one stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnState {
    pub kind: Kind,
    /// The unfinished frame, or (with `decoder_held`) the input not answered yet.
    pub decoder: Vec<u8>,
    /// `decoder` is unanswered input, not a frame's head.
    pub decoder_held: bool,
    /// Reply bytes the socket has not taken yet, in order.
    pub output: Vec<u8>,
    /// How long ago the connection last made progress: its idle deadline continues.
    pub idle_for_us: u64,
    /// Set when it was closing (lingering), and why.
    pub closing: Option<CloseReason>,
    pub peer_eof: bool,
    pub read_paused: bool,
    pub write_shut: bool,
    pub hangup_seen: bool,
    /// The real client its PROXY header named, if any: its source and its name in logs.
    pub client: Option<SocketAddr>,
    /// Its id, which it keeps in the new process (`server::conn_id`).
    pub id: u64,
    /// How long ago it was accepted: its age goes on.
    pub age_us: u64,
}

/// The hello line a new process sends first: the version and how many connections it can
/// take (descriptors free under its limit).
pub fn hello(room: usize) -> String {
    format!("tabecho-handover {VERSION} room={room}\n")
}

/// Parses a hello line: `Some(room)` if it speaks [`VERSION`].
pub fn parse_hello(line: &str) -> Option<usize> {
    let rest = line.trim_end().strip_prefix("tabecho-handover ")?;
    let (version, room) = rest.split_once(' ')?;
    if version.parse::<u32>().ok()? != VERSION {
        return None;
    }
    room.strip_prefix("room=")?.parse().ok()
}

/// A batch header: `count` connections (0 is the end), `payload_len` bytes of records.
pub fn header(count: usize, payload_len: usize) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(BATCH_MAGIC);
    h[4..8].copy_from_slice(&u32::try_from(count).unwrap_or(u32::MAX).to_le_bytes());
    h[8..].copy_from_slice(&(payload_len as u64).to_le_bytes());
    h
}

/// Parses a batch header into (count, payload length).
pub fn parse_header(h: &[u8; HEADER_LEN]) -> io::Result<(usize, u64)> {
    if &h[..4] != BATCH_MAGIC {
        return Err(invalid("not a batch header"));
    }
    let count = u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize;
    let mut len = [0u8; 8];
    len.copy_from_slice(&h[8..]);
    let len = u64::from_le_bytes(len);
    if count > MAX_FDS_PER_BATCH || len > MAX_PAYLOAD {
        return Err(invalid("batch header out of bounds"));
    }
    Ok((count, len))
}

/// Appends `state`'s record to `out`.
pub fn encode(state: &ConnState, out: &mut Vec<u8>) {
    out.push(match state.kind {
        Kind::Tcp => 0,
        Kind::Unix => 1,
    });
    let mut flags = 0;
    for (set, flag) in [
        (state.peer_eof, FLAG_PEER_EOF),
        (state.read_paused, FLAG_READ_PAUSED),
        (state.write_shut, FLAG_WRITE_SHUT),
        (state.hangup_seen, FLAG_HANGUP_SEEN),
        (state.decoder_held, FLAG_DECODER_HELD),
        (state.client.is_some(), FLAG_CLIENT),
    ] {
        if set {
            flags |= flag;
        }
    }
    out.push(flags);
    out.push(match state.closing {
        None => 0,
        Some(reason) => {
            let index = CloseReason::ALL.iter().position(|r| *r == reason);
            // ALL lists every reason (close.rs): the position is always found and small.
            index.and_then(|i| u8::try_from(i + 1).ok()).unwrap_or(0)
        }
    });
    out.extend_from_slice(&state.idle_for_us.to_le_bytes());
    match state.client {
        None => {}
        Some(SocketAddr::V4(a)) => {
            out.push(4);
            out.extend_from_slice(&a.ip().octets());
            out.extend_from_slice(&a.port().to_le_bytes());
        }
        Some(SocketAddr::V6(a)) => {
            out.push(6);
            out.extend_from_slice(&a.ip().octets());
            out.extend_from_slice(&a.port().to_le_bytes());
        }
    }
    for bytes in [&state.decoder, &state.output] {
        // Both stay far below 4 GiB: the frame limit is at most 1 GiB and pending
        // output at most the high-water mark (at most 1 GiB) plus one reply.
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&bytes[..len as usize]);
    }
    out.extend_from_slice(&state.id.to_le_bytes());
    out.extend_from_slice(&state.age_us.to_le_bytes());
}

/// Decodes `count` records from `payload`, which must hold exactly them.
pub fn decode_all(payload: &[u8], count: usize) -> io::Result<Vec<ConnState>> {
    let mut reader = Reader { rest: payload };
    let mut states = Vec::with_capacity(count.min(MAX_FDS_PER_BATCH));
    for _ in 0..count {
        states.push(reader.record()?);
    }
    if !reader.rest.is_empty() {
        return Err(invalid("bytes left after the last record"));
    }
    Ok(states)
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> io::Result<&'a [u8]> {
        if self.rest.len() < n {
            return Err(invalid("record cut short"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn u8(&mut self) -> io::Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> io::Result<u64> {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(bytes))
    }

    fn bytes(&mut self) -> io::Result<Vec<u8>> {
        let mut len = [0u8; 4];
        len.copy_from_slice(self.take(4)?);
        let len = u32::from_le_bytes(len) as usize;
        Ok(self.take(len)?.to_vec())
    }

    fn client(&mut self) -> io::Result<SocketAddr> {
        let ip = match self.u8()? {
            4 => {
                let mut octets = [0u8; 4];
                octets.copy_from_slice(self.take(4)?);
                IpAddr::from(octets)
            }
            6 => {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(self.take(16)?);
                IpAddr::from(octets)
            }
            _ => return Err(invalid("unknown client address family")),
        };
        let mut port = [0u8; 2];
        port.copy_from_slice(self.take(2)?);
        Ok(SocketAddr::new(ip, u16::from_le_bytes(port)))
    }

    fn record(&mut self) -> io::Result<ConnState> {
        let kind = match self.u8()? {
            0 => Kind::Tcp,
            1 => Kind::Unix,
            _ => return Err(invalid("unknown socket kind")),
        };
        let flags = self.u8()?;
        let closing = match self.u8()? {
            0 => None,
            n => Some(
                *CloseReason::ALL
                    .get(usize::from(n) - 1)
                    .ok_or_else(|| invalid("unknown close reason"))?,
            ),
        };
        let idle_for_us = self.u64()?;
        let client = if flags & FLAG_CLIENT != 0 {
            Some(self.client()?)
        } else {
            None
        };
        Ok(ConnState {
            kind,
            idle_for_us,
            closing,
            client,
            decoder: self.bytes()?,
            output: self.bytes()?,
            decoder_held: flags & FLAG_DECODER_HELD != 0,
            peer_eof: flags & FLAG_PEER_EOF != 0,
            read_paused: flags & FLAG_READ_PAUSED != 0,
            write_shut: flags & FLAG_WRITE_SHUT != 0,
            hangup_seen: flags & FLAG_HANGUP_SEEN != 0,
            id: self.u64()?,
            age_us: self.u64()?,
        })
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("hand-over: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(n: u8) -> ConnState {
        ConnState {
            kind: if n.is_multiple_of(2) {
                Kind::Tcp
            } else {
                Kind::Unix
            },
            decoder: vec![n; usize::from(n)],
            decoder_held: n.is_multiple_of(3),
            output: vec![b'x'; usize::from(n) * 2],
            idle_for_us: u64::from(n) * 1_000_003,
            closing: CloseReason::ALL.get(usize::from(n) % 8).copied(),
            peer_eof: n & 1 != 0,
            read_paused: n & 2 != 0,
            write_shut: n & 4 != 0,
            hangup_seen: n & 8 != 0,
            client: match n % 3 {
                0 => None,
                1 => Some(SocketAddr::from(([127, 0, 0, n], 40_000 + u16::from(n)))),
                _ => Some(SocketAddr::from((
                    [0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(n)],
                    9,
                ))),
            },
            id: u64::from(n) << 40 | 7,
            age_us: u64::from(n) * 3_000_017,
        }
    }

    #[test]
    fn records_round_trip_with_every_flag_and_reason() {
        let states: Vec<ConnState> = (0..40).map(state).collect();
        let mut payload = Vec::new();
        for s in &states {
            encode(s, &mut payload);
        }
        assert_eq!(decode_all(&payload, states.len()).unwrap(), states);
    }

    #[test]
    fn every_cut_of_a_payload_is_an_error_not_a_panic() {
        let mut payload = Vec::new();
        for n in [0, 5, 9] {
            encode(&state(n), &mut payload);
        }
        for cut in 0..payload.len() {
            assert!(decode_all(&payload[..cut], 3).is_err(), "cut at {cut}");
        }
        // One byte too many is an error as well.
        payload.push(0);
        assert!(decode_all(&payload, 3).is_err());
    }

    #[test]
    fn unknown_kinds_and_reasons_are_errors() {
        let mut payload = Vec::new();
        encode(&state(2), &mut payload);
        let mut bad_kind = payload.clone();
        bad_kind[0] = 7;
        assert!(decode_all(&bad_kind, 1).is_err());
        let mut bad_reason = payload;
        bad_reason[2] = 200;
        assert!(decode_all(&bad_reason, 1).is_err());
    }

    #[test]
    fn headers_round_trip_and_bounds_are_checked() {
        assert_eq!(parse_header(&header(253, 99)).unwrap(), (253, 99));
        assert_eq!(parse_header(&header(0, 0)).unwrap(), (0, 0));
        assert!(parse_header(&header(254, 0)).is_err());
        let mut bad = header(1, 1);
        bad[0] = b'X';
        assert!(parse_header(&bad).is_err());
    }

    #[test]
    fn a_hello_of_this_version_gives_the_room_and_others_nothing() {
        assert_eq!(parse_hello(&hello(12_345)), Some(12_345));
        assert_eq!(parse_hello("tabecho-handover 3 room=5\n"), Some(5));
        // Version 1 (no client) and 2 (no id or age) get the drain: their records are
        // shorter.
        assert_eq!(parse_hello("tabecho-handover 1 room=5\n"), None);
        assert_eq!(parse_hello("tabecho-handover 2 room=5\n"), None);
        assert_eq!(parse_hello("tabecho-handover 4 room=5\n"), None);
        assert_eq!(parse_hello("READY=1\n"), None);
        assert_eq!(parse_hello("tabecho-handover 3 room=x\n"), None);
    }
}
