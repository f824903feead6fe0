//! The PROXY protocol (HAProxy's `doc/proxy-protocol.txt`), v1 (text) and v2 (binary):
//! the header a trusted balancer writes before its client's bytes, naming the real source
//! and destination. Pure: bytes in, a verdict out; no socket, no clock.
//!
//! [`parse`] looks at the bytes received so far on a connection from a trusted proxy and
//! says whether they hold a whole header ([`Parsed::Complete`], with its length: the
//! caller keeps `buf[len..]` as the client's first data), can still become one
//! ([`Parsed::Incomplete`]: read more, up to [`MAX_HEADER_LEN`] bytes), or cannot
//! ([`Parsed::Invalid`], with the kind for a metrics label). It keeps no state between
//! calls: the caller holds the bytes and calls again on the longer buffer, and a header
//! is at most [`MAX_HEADER_LEN`] bytes, so a header fed one byte at a time costs at most
//! a few hundred small re-scans, once per connection.
//!
//! The encoders ([`encode_v1`], [`encode_v2`], [`encode_v2_local`], [`encode_v2_with`])
//! write what balancers send, for the load generator and the tests.
//!
//! # Invariants
//! - Always `Incomplete` only while some continuation of the bytes is a valid header, and
//!   `Invalid` at the first byte after which none is: a wrong signature byte, a v2 version,
//!   command or family byte, a v2 `len` over the bound, a v1 field that cannot become what
//!   its place needs. (One leniency: an IPv6 field in a v1 line is refused at its first
//!   impossible byte for the common faults, a byte outside `[0-9A-Fa-f:.]`, a fifth hex
//!   digit, a second `::`, too many groups, but a subtler fault only when the field ends.)
//! - The verdicts of the growing prefixes of one stream are always a run of `Incomplete`
//!   followed by one `Complete` or one `Invalid` that every longer prefix repeats: once
//!   decided, more bytes change nothing.
//! - `Complete { len, .. }` always has `len <= buf.len()` and `len <= MAX_HEADER_LEN`;
//!   nothing past `buf[len..]` was looked at.
//! - Never more than `MAX_HEADER_LEN` bytes of `buf` are read, however long it is, and a
//!   buffer of `MAX_HEADER_LEN` bytes always has a verdict other than `Incomplete`.

mod crc32c;
mod trust;
mod v1;
mod v2;

use std::net::SocketAddr;

pub use trust::TrustedProxies;
pub use v1::{encode_v1, encode_v1_unknown, V1_MAX_LEN};
pub use v2::{
    encode_v2, encode_v2_local, encode_v2_with, Tlv, PP2_TYPE_ALPN, PP2_TYPE_AUTHORITY,
    PP2_TYPE_CRC32C, PP2_TYPE_NOOP, PP2_TYPE_SSL, PP2_TYPE_UNIQUE_ID, V2_MAX_LEN,
};

/// The longest header [`parse`] accepts, v1 or v2: what a connection may hold before its
/// header is complete. A v2 header's 16 fixed bytes plus its bounded `len` (the longer of
/// the two; a v1 line is at most 107 bytes).
pub const MAX_HEADER_LEN: usize = v2::FIXED_LEN + V2_MAX_LEN;

const _: () = assert!(MAX_HEADER_LEN >= V1_MAX_LEN);

/// What a complete header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// Relayed for a client: the real source (the client) and the destination it asked
    /// for (the balancer's listening address), from a v1 `TCP4`/`TCP6` line or a v2
    /// `PROXY` over TCP on IPv4 or IPv6. Both always have the same family.
    Proxied {
        /// The client's address and port.
        source: SocketAddr,
        /// The address and port the client connected to.
        destination: SocketAddr,
    },
    /// Serve the connection as one from the proxy itself (its own address). This is what
    /// the specification asks for v2 `LOCAL` (a balancer's own health check) and v1
    /// `UNKNOWN`; and it is the specification's "UNSPEC mode", which a receiver falls back
    /// to for the families it does not implement: v2 `PROXY` with `AF_UNSPEC`, with
    /// `AF_UNIX` (a path names no host to count or log), or over `DGRAM` (tabecho serves
    /// streams). Refusing those instead would cut off a balancer's health checks and its
    /// clients on a Unix socket, which gain nothing from being refused.
    Local,
}

/// The outcome of [`parse`] on the bytes received so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A valid header may still follow: read more (the buffer never needs to grow past
    /// [`MAX_HEADER_LEN`] bytes for a verdict).
    Incomplete,
    /// `buf[..len]` is a whole, valid header; `buf[len..]` is the client's.
    Complete {
        /// What the header says.
        header: ProxyHeader,
        /// The header's length in bytes, at most [`MAX_HEADER_LEN`].
        len: usize,
    },
    /// No valid header can begin with these bytes: the connection must be closed.
    Invalid(Invalid),
}

/// Why bytes cannot begin a valid header. [`Invalid::as_str`] names each for a metrics
/// label; [`Invalid::ALL`] lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Invalid {
    /// Neither `PROXY ` (v1) nor the 12-byte v2 signature begins the bytes.
    BadSignature,
    /// A v1 line with no CRLF within 107 bytes.
    V1TooLong,
    /// A v1 line that is not `PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n` or `PROXY UNKNOWN
    /// ...\r\n`: an unknown protocol, a bad address or port, a field too many or too few,
    /// a CR not followed by LF.
    V1Malformed,
    /// A v2 header whose version nibble is not 2.
    V2BadVersion,
    /// A v2 command other than `LOCAL` (0) and `PROXY` (1).
    V2BadCommand,
    /// A v2 `PROXY` whose family and transport byte is not one the specification lists.
    V2BadFamily,
    /// A v2 `len` over [`V2_MAX_LEN`].
    V2TooLong,
    /// A v2 `PROXY` over TCP whose `len` is shorter than its family's addresses.
    V2ShortAddresses,
    /// A v2 TLV that runs past the header, a tail too short to be a TLV, or a CRC32C TLV
    /// that is not 4 bytes or not the only one.
    V2BadTlv,
    /// A v2 CRC32C TLV that does not match the header.
    CrcMismatch,
}

impl Invalid {
    /// Every kind, in declaration order: for registering every metrics label up front.
    pub const ALL: [Invalid; 10] = [
        Invalid::BadSignature,
        Invalid::V1TooLong,
        Invalid::V1Malformed,
        Invalid::V2BadVersion,
        Invalid::V2BadCommand,
        Invalid::V2BadFamily,
        Invalid::V2TooLong,
        Invalid::V2ShortAddresses,
        Invalid::V2BadTlv,
        Invalid::CrcMismatch,
    ];

    /// The kind's label, lower snake case (`result="bad_signature"`, ...).
    pub fn as_str(&self) -> &'static str {
        match self {
            Invalid::BadSignature => "bad_signature",
            Invalid::V1TooLong => "v1_too_long",
            Invalid::V1Malformed => "v1_malformed",
            Invalid::V2BadVersion => "v2_bad_version",
            Invalid::V2BadCommand => "v2_bad_command",
            Invalid::V2BadFamily => "v2_bad_family",
            Invalid::V2TooLong => "v2_too_long",
            Invalid::V2ShortAddresses => "v2_short_addresses",
            Invalid::V2BadTlv => "v2_bad_tlv",
            Invalid::CrcMismatch => "crc_mismatch",
        }
    }
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses the bytes received so far on a connection from a trusted proxy. v1 and v2 are
/// told apart by their first byte (`P` or CR), as their signatures differ there.
pub fn parse(buf: &[u8]) -> Parsed {
    match buf.first() {
        None => Parsed::Incomplete,
        Some(&b) if b == v1::SIGNATURE[0] => v1::parse(buf),
        Some(&b) if b == v2::SIGNATURE[0] => v2::parse(buf),
        Some(_) => Parsed::Invalid(Invalid::BadSignature),
    }
}

/// Whether `buf` begins like `signature`: `Some(true)` if it holds all of it, `Some(false)`
/// if it holds a proper prefix of it, `None` if a byte differs.
fn matches_signature(buf: &[u8], signature: &[u8]) -> Option<bool> {
    let n = buf.len().min(signature.len());
    (buf[..n] == signature[..n]).then_some(n == signature.len())
}

/// What the parser's test modules share.
#[cfg(test)]
pub(crate) mod test_util {
    use super::ProxyHeader;
    use std::net::SocketAddr;

    pub(crate) fn sock(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    pub(crate) fn proxied(src: &str, dst: &str) -> ProxyHeader {
        ProxyHeader::Proxied {
            source: sock(src),
            destination: sock(dst),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::sock;
    use super::*;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    /// The verdicts of every prefix of `bytes`, `[..0]` to `[..=len]`.
    fn verdicts(bytes: &[u8]) -> Vec<Parsed> {
        (0..=bytes.len()).map(|n| parse(&bytes[..n])).collect()
    }

    /// Checks the invariants that hold for any bytes: a run of Incomplete, then one
    /// verdict repeated by every longer prefix; a Complete's len within the prefix that
    /// first showed it, within MAX_HEADER_LEN, and no shorter prefix Complete.
    #[track_caller]
    fn check_any(bytes: &[u8]) {
        let all = verdicts(bytes);
        let decided = all.iter().position(|v| *v != Parsed::Incomplete);
        if let Some(at) = decided {
            for (n, v) in all.iter().enumerate().skip(at) {
                assert_eq!(*v, all[at], "prefix {n} of {bytes:?} changed its verdict");
            }
            if let Parsed::Complete { len, .. } = all[at] {
                assert_eq!(len, at, "Complete first at {at} but len {len}: {bytes:?}");
                assert!(len <= MAX_HEADER_LEN);
            }
            assert!(at <= MAX_HEADER_LEN, "decided only at {at}");
        } else {
            assert!(
                bytes.len() < MAX_HEADER_LEN,
                "undecided after {}",
                bytes.len()
            );
        }
    }

    /// Checks that `header` is a whole header saying `want`: every shorter prefix
    /// Incomplete, the whole Complete with its length, and the same with client bytes
    /// after it.
    #[track_caller]
    fn check_valid(header: &[u8], want: ProxyHeader) {
        for n in 0..header.len() {
            assert_eq!(
                parse(&header[..n]),
                Parsed::Incomplete,
                "prefix {n} of {header:?}"
            );
        }
        let complete = Parsed::Complete {
            header: want,
            len: header.len(),
        };
        assert_eq!(parse(header), complete, "{header:?}");
        for after in [&b"x"[..], b"frame\tPROXY TCP4 ", &[0u8; 2000], &header[..1]] {
            let mut stream = header.to_vec();
            stream.extend_from_slice(after);
            assert_eq!(parse(&stream), complete, "followed by {after:?}");
            assert_eq!(&stream[header.len()..], after);
        }
    }

    #[test]
    fn nothing_yet_is_incomplete_and_a_wrong_first_byte_is_refused_at_once() {
        assert_eq!(parse(b""), Parsed::Incomplete);
        for first in [b'G', b'p', b'\n', 0, b'\t', 0xff, b' '] {
            assert_eq!(parse(&[first]), Parsed::Invalid(Invalid::BadSignature));
        }
        assert_eq!(parse(b"P"), Parsed::Incomplete);
        assert_eq!(parse(b"\r"), Parsed::Incomplete);
        // A frame from a client that forgot the header: refused at its first byte.
        assert_eq!(parse(b"hello\t"), Parsed::Invalid(Invalid::BadSignature));
    }

    #[test]
    fn labels_are_distinct_snake_case_and_all_listed() {
        let labels: std::collections::BTreeSet<&str> =
            Invalid::ALL.iter().map(Invalid::as_str).collect();
        assert_eq!(labels.len(), Invalid::ALL.len());
        for label in labels {
            assert!(
                label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{label}"
            );
        }
    }

    #[test]
    fn every_split_point_of_valid_headers() {
        let v4 = (sock("192.0.2.1:51000"), sock("198.51.100.7:7000"));
        let v6 = (sock("[2001:db8::1]:1"), sock("[2001:db8:ffff::2]:65535"));
        let proxied = |(source, destination)| ProxyHeader::Proxied {
            source,
            destination,
        };
        check_valid(&encode_v1(v4.0, v4.1), proxied(v4));
        check_valid(&encode_v1(v6.0, v6.1), proxied(v6));
        check_valid(&encode_v1_unknown(), ProxyHeader::Local);
        let max = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let longest = format!("PROXY UNKNOWN {max} {max} 65535 65535\r\n");
        assert_eq!(longest.len(), V1_MAX_LEN);
        check_valid(longest.as_bytes(), ProxyHeader::Local);
        check_valid(&encode_v2(v4.0, v4.1), proxied(v4));
        check_valid(&encode_v2(v6.0, v6.1), proxied(v6));
        check_valid(&encode_v2_local(), ProxyHeader::Local);
        let tlvs = [
            Tlv {
                kind: PP2_TYPE_ALPN,
                value: b"http/1.1",
            },
            Tlv {
                kind: PP2_TYPE_NOOP,
                value: b"",
            },
            Tlv {
                kind: PP2_TYPE_UNIQUE_ID,
                value: &[0xab; 128],
            },
        ];
        check_valid(&encode_v2_with(&proxied(v6), &tlvs, true), proxied(v6));
        check_valid(
            &encode_v2_with(&ProxyHeader::Local, &tlvs, true),
            ProxyHeader::Local,
        );
        let pad = vec![0; V2_MAX_LEN - 12 - 3];
        let biggest = encode_v2_with(
            &proxied(v4),
            &[Tlv {
                kind: 0xee,
                value: &pad,
            }],
            false,
        );
        assert_eq!(biggest.len(), MAX_HEADER_LEN);
        check_valid(&biggest, proxied(v4));
    }

    #[test]
    fn garbage_fed_one_byte_at_a_time_fails_at_its_first_wrong_byte() {
        // A v2 signature with its 7th byte wrong; a v1 one with its 4th.
        let v2ish = b"\r\n\r\n\0\rXQUIT\n";
        assert_eq!(verdicts(v2ish)[6], Parsed::Incomplete);
        assert_eq!(verdicts(v2ish)[7], Parsed::Invalid(Invalid::BadSignature));
        let v1ish = b"PROZY TCP4";
        assert_eq!(verdicts(v1ish)[3], Parsed::Incomplete);
        assert_eq!(verdicts(v1ish)[4], Parsed::Invalid(Invalid::BadSignature));
        check_any(v2ish);
        check_any(v1ish);
    }

    /// Property tests: random headers through the encoders and back, and random or mutated
    /// bytes against the invariants every verdict sequence keeps.
    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// An address of either family, often IPv4-mapped or with runs of zeros (so `::`
        /// compression comes up at each position).
        fn ip() -> impl Strategy<Value = IpAddr> {
            prop_oneof![
                any::<[u8; 4]>().prop_map(IpAddr::from),
                any::<[u8; 16]>().prop_map(IpAddr::from),
                any::<[u8; 4]>().prop_map(|o| IpAddr::V6(Ipv4Addr::from(o).to_ipv6_mapped())),
                prop::collection::vec(prop_oneof![Just(0u16), any::<u16>()], 8).prop_map(|g| {
                    IpAddr::V6(Ipv6Addr::new(
                        g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7],
                    ))
                }),
            ]
        }

        fn sock_addr() -> impl Strategy<Value = SocketAddr> {
            (ip(), prop_oneof![Just(0u16), Just(65535), any::<u16>()])
                .prop_map(|(ip, port)| SocketAddr::new(ip, port))
        }

        /// TLVs of any type but CRC32C, of up to 80 bytes each.
        fn tlvs() -> impl Strategy<Value = Vec<(u8, Vec<u8>)>> {
            let kind = any::<u8>().prop_filter("not CRC32C", |&k| k != PP2_TYPE_CRC32C);
            prop::collection::vec((kind, prop::collection::vec(any::<u8>(), 0..80)), 0..6)
        }

        /// What the parser reports for a header encoded from these addresses: one family,
        /// an IPv4 address IPv4-mapped when the other is IPv6.
        fn as_parsed(source: SocketAddr, destination: SocketAddr) -> ProxyHeader {
            let both_v4 = source.is_ipv4() && destination.is_ipv4();
            let fix = |a: SocketAddr| match a.ip() {
                IpAddr::V4(v4) if !both_v4 => SocketAddr::new(v4.to_ipv6_mapped().into(), a.port()),
                _ => a,
            };
            ProxyHeader::Proxied {
                source: fix(source),
                destination: fix(destination),
            }
        }

        /// IPv6 text in one of the forms std accepts: its shortest (Display), eight groups
        /// without zero padding, eight zero-padded groups, or six and a dotted quad.
        fn v6_text(ip: Ipv6Addr, form: u8) -> String {
            let g = ip.segments();
            match form % 4 {
                0 => ip.to_string(),
                1 => g.map(|x| format!("{x:x}")).join(":"),
                2 => g.map(|x| format!("{x:04X}")).join(":"),
                _ => {
                    let [a, b, c, d] = ip.octets()[12..] else {
                        unreachable!()
                    };
                    let head: Vec<String> = g[..6].iter().map(|x| format!("{x:x}")).collect();
                    format!("{}:{a}.{b}.{c}.{d}", head.join(":"))
                }
            }
        }

        proptest! {
            /// v1 and v2 headers of random addresses, ports and TLVs (with or without a
            /// CRC32C) parse back to what was encoded, at every split point.
            #[test]
            fn encoded_headers_parse_back_at_every_split(
                source in sock_addr(),
                destination in sock_addr(),
                tlvs in tlvs(),
                crc in any::<bool>(),
                local in prop::bool::weighted(0.1),
            ) {
                let want = as_parsed(source, destination);
                check_valid(&encode_v1(source, destination), want);
                let tlvs: Vec<Tlv<'_>> =
                    tlvs.iter().map(|(kind, value)| Tlv { kind: *kind, value }).collect();
                if local {
                    let bytes = encode_v2_with(&ProxyHeader::Local, &tlvs, crc);
                    check_valid(&bytes, ProxyHeader::Local);
                } else {
                    check_valid(&encode_v2_with(&want, &tlvs, crc), want);
                }
            }

            /// TCP6 lines in every textual form of IPv6 parse to the same addresses, and
            /// no prefix of one is refused.
            #[test]
            fn v1_ipv6_in_any_form(
                src in any::<[u8; 16]>(),
                dst in any::<[u8; 16]>(),
                forms in any::<(u8, u8)>(),
                ports in any::<(u16, u16)>(),
            ) {
                let (src, dst) = (Ipv6Addr::from(src), Ipv6Addr::from(dst));
                let line = format!(
                    "PROXY TCP6 {} {} {} {}\r\n",
                    v6_text(src, forms.0), v6_text(dst, forms.1), ports.0, ports.1
                );
                let want = ProxyHeader::Proxied {
                    source: SocketAddr::new(src.into(), ports.0),
                    destination: SocketAddr::new(dst.into(), ports.1),
                };
                if line.len() <= V1_MAX_LEN {
                    check_valid(line.as_bytes(), want);
                } else {
                    // Two zero-padded groups of eight: over 107 bytes.
                    prop_assert_eq!(parse(line.as_bytes()), Parsed::Invalid(Invalid::V1TooLong));
                    check_any(line.as_bytes());
                }
            }

            /// Any bytes: no panic, and the invariants of a verdict sequence.
            #[test]
            fn random_bytes_keep_the_invariants(
                bytes in prop::collection::vec(any::<u8>(), 0..200),
                start in prop_oneof![Just(&b""[..]), Just(&b"PROXY "[..]), Just(&v2::SIGNATURE[..])],
            ) {
                let mut input = start.to_vec();
                input.extend_from_slice(&bytes);
                check_any(&input);
            }

            /// Valid headers with a few bytes changed, cut or repeated: the invariants
            /// hold, and a Complete verdict re-encodes to a header that parses the same.
            #[test]
            fn mutated_headers_keep_the_invariants(
                source in sock_addr(),
                destination in sock_addr(),
                tlvs in tlvs(),
                crc in any::<bool>(),
                v2 in any::<bool>(),
                edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..4),
            ) {
                let tlvs: Vec<Tlv<'_>> =
                    tlvs.iter().map(|(kind, value)| Tlv { kind: *kind, value }).collect();
                let mut bytes = if v2 {
                    encode_v2_with(&as_parsed(source, destination), &tlvs, crc)
                } else {
                    encode_v1(source, destination)
                };
                for (at, byte, how) in edits {
                    let i = at.index(bytes.len());
                    match how {
                        0 => bytes[i] = byte,
                        1 => { bytes.remove(i); }
                        _ => bytes.insert(i, byte),
                    }
                }
                check_any(&bytes);
                if let Parsed::Complete { header, .. } = parse(&bytes) {
                    let again = match header {
                        ProxyHeader::Proxied { source, destination } => {
                            encode_v2(source, destination)
                        }
                        ProxyHeader::Local => encode_v2_local(),
                    };
                    prop_assert_eq!(parse(&again), Parsed::Complete { header, len: again.len() });
                }
            }
        }
    }
}
