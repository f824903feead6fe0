//! Fuzz target: the PROXY protocol parser (`tabecho::proxy_protocol::parse`) against the
//! invariants of its verdicts, on every prefix of the input.
//!
//! Input layout (every byte string is a valid input): byte 0, mod 4, picks how the rest
//! becomes the stream:
//! - 0 and 3: the rest is the stream, as it is (garbage, and whatever libFuzzer builds
//!   from the signatures it finds compared);
//! - 1: a v2 header encoded from the rest (addresses, ports, TLVs, a CRC32C or not, LOCAL
//!   or PROXY), then edited: each further 3 bytes (position, byte, how) overwrite, remove
//!   or insert a byte. So headers with a valid checksum come up, which random bytes
//!   almost never have, and the edits land in their TLVs;
//! - 2: the same with a v1 line.
//!
//! Checked, for the stream and each of its prefixes: `parse` does not panic; the verdicts
//! are a run of `Incomplete`, then one `Complete` or `Invalid` that every longer prefix
//! repeats; a `Complete`'s `len` is where it first appeared (so every shorter prefix is
//! `Incomplete`), at most `MAX_HEADER_LEN`; no prefix of `MAX_HEADER_LEN` bytes is still
//! `Incomplete`; and a `Complete` header re-encodes, as v1 and as v2, to one that parses
//! to the same header.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use libfuzzer_sys::fuzz_target;
use tabecho::proxy_protocol::{
    encode_v1, encode_v1_unknown, encode_v2, encode_v2_local, encode_v2_with, parse, Parsed,
    ProxyHeader, Tlv, MAX_HEADER_LEN,
};

/// Reads fields off the input; past its end, zeros.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0; N];
        let n = N.min(self.0.len());
        out[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        out
    }

    fn byte(&mut self) -> u8 {
        self.bytes::<1>()[0]
    }

    fn slice(&mut self, len: usize) -> &[u8] {
        let (head, rest) = self.0.split_at(len.min(self.0.len()));
        self.0 = rest;
        head
    }

    fn addr(&mut self, v6: bool) -> SocketAddr {
        let ip = if v6 {
            IpAddr::V6(Ipv6Addr::from(self.bytes::<16>()))
        } else {
            IpAddr::V4(Ipv4Addr::from(self.bytes::<4>()))
        };
        SocketAddr::new(ip, u16::from_be_bytes(self.bytes::<2>()))
    }
}

/// A valid header built from the input (v2 or v1), then edited by the input's rest.
fn encoded_then_edited(data: &[u8], v2: bool) -> Vec<u8> {
    let mut c = Cursor(data);
    let flags = c.byte();
    let source = c.addr(flags & 1 != 0);
    let destination = c.addr(flags & 2 != 0);
    let header = if flags & 4 != 0 {
        ProxyHeader::Local
    } else {
        ProxyHeader::Proxied {
            source,
            destination,
        }
    };
    let mut bytes = if v2 {
        let mut values = Vec::new();
        for _ in 0..(flags >> 4) % 4 {
            let kind = c.byte();
            let len = usize::from(c.byte());
            values.push((kind, c.slice(len).to_vec()));
        }
        let tlvs: Vec<Tlv<'_>> = values
            .iter()
            .map(|(kind, value)| Tlv { kind: *kind, value })
            .collect();
        encode_v2_with(&header, &tlvs, flags & 8 != 0)
    } else {
        match header {
            ProxyHeader::Local => encode_v1_unknown(),
            ProxyHeader::Proxied { .. } => encode_v1(source, destination),
        }
    };
    while !c.0.is_empty() {
        let [at, byte, how] = c.bytes::<3>();
        let i = usize::from(at) % (bytes.len() + 1);
        match how % 3 {
            0 if i < bytes.len() => bytes[i] = byte,
            1 if i < bytes.len() => {
                bytes.remove(i);
            }
            _ => bytes.insert(i, byte),
        }
    }
    bytes
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let owned;
    let stream = match mode % 4 {
        1 => {
            owned = encoded_then_edited(rest, true);
            &owned[..]
        }
        2 => {
            owned = encoded_then_edited(rest, false);
            &owned[..]
        }
        _ => rest,
    };

    let mut decided: Option<(usize, Parsed)> = None;
    for n in 0..=stream.len() {
        let verdict = parse(&stream[..n]);
        match decided {
            Some((at, first)) => assert_eq!(
                verdict, first,
                "prefix {n} changed the verdict of prefix {at}: {stream:?}"
            ),
            None if verdict == Parsed::Incomplete => {
                assert!(n < MAX_HEADER_LEN, "still Incomplete at {n} bytes");
            }
            None => decided = Some((n, verdict)),
        }
    }
    let Some((at, Parsed::Complete { header, len })) = decided else {
        return;
    };
    assert_eq!(len, at, "Complete first at {at} bytes says len {len}");
    assert!(len <= MAX_HEADER_LEN, "len {len}");

    let again = match header {
        ProxyHeader::Proxied {
            source,
            destination,
        } => [encode_v1(source, destination), encode_v2(source, destination)],
        ProxyHeader::Local => [encode_v1_unknown(), encode_v2_local()],
    };
    for bytes in again {
        assert_eq!(
            parse(&bytes),
            Parsed::Complete {
                header,
                len: bytes.len()
            },
            "{header:?} re-encoded as {bytes:?}"
        );
    }
});
