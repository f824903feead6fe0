//! PROXY protocol v2: a 16-byte binary head (12-byte signature, version and command,
//! family and transport, `len`), then `len` bytes of addresses and TLVs
//! (`doc/proxy-protocol.txt` section 2.2).
//!
//! What is read and what is skipped:
//! - `PROXY` over TCP on IPv4 (`\x11`) or IPv6 (`\x21`): the addresses are read; the TLVs
//!   after them are walked, each checked to lie within `len`, and skipped, except a
//!   `PP2_TYPE_CRC32C`, which must be the only one, 4 bytes, and match the header.
//! - Every other combination the specification lists (`AF_UNSPEC`, `AF_UNIX`, `DGRAM`)
//!   is the specification's "UNSPEC mode": [`ProxyHeader::Local`], its block skipped
//!   unread (the specification: "the receiver should ignore address information").
//! - `LOCAL`: [`ProxyHeader::Local`], its block skipped unread whatever its family byte,
//!   as the specification says ("discard the protocol block including the family").
//!   Its CRC is not checked either: nothing in the block is used.
//!
//! Each byte is judged as soon as it arrives: the version and command at byte 13, the
//! family at byte 14, `len` at byte 16, each TLV's length when its 3-byte head is in.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::crc32c::crc32c;
use super::v1::as_v6;
use super::{matches_signature, Invalid, Parsed, ProxyHeader};

/// The 12 bytes every v2 header begins with.
pub(super) const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The signature, the version and command byte, the family byte and the 2-byte `len`.
pub(super) const FIXED_LEN: usize = 16;

/// The largest `len` accepted (addresses and TLVs after the 16 fixed bytes); past it the
/// header is [`Invalid::V2TooLong`]. What HAProxy sends with every `proxy-v2-options`
/// option on, each field at its largest, fits: IPv6 addresses (36 bytes), ALPN (3 + up
/// to 255: RFC 7301's longest protocol name), authority (3 + up to 255: the SNI host
/// name), unique ID (3 + up to 128, the specification's limit), CRC32C (7), and the SSL
/// TLV with its version, client-certificate CN (64 by X.520's upper bound), cipher,
/// signature and key algorithm names (about 190): about 880 bytes. A usual header is
/// 12 to 36 bytes, and under 300 with TLS details. The bound is what one connection may
/// hold before its header is complete (charged to the memory budget like a partial
/// frame); the specification's own 65535 would let each trusted connection hold 64 KiB.
pub const V2_MAX_LEN: usize = 1024;

/// TLV types the specification registers (section 2.2). Only [`PP2_TYPE_CRC32C`] is
/// interpreted; the others are for the encoder's callers.
pub const PP2_TYPE_ALPN: u8 = 0x01;
/// The host name the client asked for (TLS SNI).
pub const PP2_TYPE_AUTHORITY: u8 = 0x02;
/// CRC32C of the whole header with this TLV's value zeroed, big-endian.
pub const PP2_TYPE_CRC32C: u8 = 0x03;
/// Padding, ignored.
pub const PP2_TYPE_NOOP: u8 = 0x04;
/// An opaque connection ID of up to 128 bytes.
pub const PP2_TYPE_UNIQUE_ID: u8 = 0x05;
/// TLS details, with sub-TLVs of their own (not walked: the TLV is skipped whole).
pub const PP2_TYPE_SSL: u8 = 0x20;

/// The version nibble this parser reads.
const VERSION: u8 = 2;

/// The command nibble of a balancer's own connection (health checks).
const CMD_LOCAL: u8 = 0;

/// The command nibble of a relayed connection.
const CMD_PROXY: u8 = 1;

/// The length of a TLV's type and length fields.
const TLV_HEAD: usize = 3;

/// What a `PROXY` command's family and transport byte says to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    /// TCP over IPv4 (`\x11`): 12 address bytes to read (two addresses, two ports).
    Inet,
    /// TCP over IPv6 (`\x21`): 36 address bytes to read.
    Inet6,
    /// A listed combination served in UNSPEC mode: the block is skipped.
    Unspec,
}

impl Block {
    /// The family and transport byte's meaning; `None` if the specification does not list
    /// it (then it "must be rejected as invalid").
    fn of(byte: u8) -> Option<Block> {
        match byte {
            0x11 => Some(Block::Inet),
            0x21 => Some(Block::Inet6),
            0x00 | 0x12 | 0x22 | 0x31 | 0x32 => Some(Block::Unspec),
            _ => None,
        }
    }
}

/// Parses `buf`, whose first byte is CR.
pub(super) fn parse(buf: &[u8]) -> Parsed {
    match matches_signature(buf, &SIGNATURE) {
        None => return Parsed::Invalid(Invalid::BadSignature),
        Some(false) => return Parsed::Incomplete,
        Some(true) => {}
    }
    let Some(&version_command) = buf.get(12) else {
        return Parsed::Incomplete;
    };
    if version_command >> 4 != VERSION {
        return Parsed::Invalid(Invalid::V2BadVersion);
    }
    let block = match version_command & 0x0f {
        CMD_LOCAL => None,
        CMD_PROXY => match buf.get(13).map(|&family| Block::of(family)) {
            None => return Parsed::Incomplete,
            Some(None) => return Parsed::Invalid(Invalid::V2BadFamily),
            Some(Some(block)) => Some(block),
        },
        _ => return Parsed::Invalid(Invalid::V2BadCommand),
    };
    let Some(len) = buf.get(14..FIXED_LEN) else {
        return Parsed::Incomplete;
    };
    let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    if len > V2_MAX_LEN {
        return Parsed::Invalid(Invalid::V2TooLong);
    }
    let total = FIXED_LEN + len;
    let ip_len = match block {
        None | Some(Block::Unspec) => return complete_or_not(buf, total, ProxyHeader::Local),
        Some(Block::Inet) => 4,
        Some(Block::Inet6) => 16,
    };
    // Two addresses, two ports.
    let tlvs_start = FIXED_LEN + 2 * ip_len + 4;
    if tlvs_start > total {
        return Parsed::Invalid(Invalid::V2ShortAddresses);
    }
    let crc_at = match walk_tlvs(&buf[..buf.len().min(total)], tlvs_start, total) {
        Ok(crc_at) => crc_at,
        Err(invalid) => return Parsed::Invalid(invalid),
    };
    let Some(header) = buf.get(..total) else {
        return Parsed::Incomplete;
    };
    if let Some(at) = crc_at {
        let sent = u32::from_be_bytes(array(&header[at..]));
        if crc32c(&[&header[..at], &[0; 4], &header[at + 4..]]) != sent {
            return Parsed::Invalid(Invalid::CrcMismatch);
        }
    }
    let ip = |at: usize| match ip_len {
        4 => IpAddr::V4(Ipv4Addr::from(array::<4>(&header[at..]))),
        _ => IpAddr::V6(Ipv6Addr::from(array::<16>(&header[at..]))),
    };
    let port = |at: usize| u16::from_be_bytes(array(&header[at..]));
    let ports_at = FIXED_LEN + 2 * ip_len;
    Parsed::Complete {
        header: ProxyHeader::Proxied {
            source: SocketAddr::new(ip(FIXED_LEN), port(ports_at)),
            destination: SocketAddr::new(ip(FIXED_LEN + ip_len), port(ports_at + 2)),
        },
        len: total,
    }
}

/// `header` if all `total` bytes are in, else `Incomplete`.
fn complete_or_not(buf: &[u8], total: usize, header: ProxyHeader) -> Parsed {
    if buf.len() >= total {
        Parsed::Complete { header, len: total }
    } else {
        Parsed::Incomplete
    }
}

/// Walks the TLVs from `start` to `end` over the bytes that have arrived (`seen`, at most
/// `end` long): each must fit before `end`, and a CRC32C TLV must be 4 bytes and alone.
/// Returns where the CRC's value is, if one has arrived.
fn walk_tlvs(seen: &[u8], start: usize, end: usize) -> Result<Option<usize>, Invalid> {
    let mut at = start;
    let mut crc_at = None;
    // Each step moves `at` forward by at least TLV_HEAD: at most `V2_MAX_LEN / 3` steps.
    while at < end {
        if end - at < TLV_HEAD {
            return Err(Invalid::V2BadTlv);
        }
        let Some(head) = seen.get(at..at + TLV_HEAD) else {
            break;
        };
        let value_len = usize::from(u16::from_be_bytes([head[1], head[2]]));
        let value_at = at + TLV_HEAD;
        if value_len > end - value_at {
            return Err(Invalid::V2BadTlv);
        }
        if head[0] == PP2_TYPE_CRC32C {
            if value_len != 4 || crc_at.is_some() {
                return Err(Invalid::V2BadTlv);
            }
            crc_at = Some(value_at);
        }
        at = value_at + value_len;
    }
    Ok(crc_at)
}

/// The first `N` bytes of `bytes` (which has at least `N`).
fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&bytes[..N]);
    out
}

/// One TLV for [`encode_v2_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tlv<'a> {
    /// Its type (`PP2_TYPE_*`, or any other byte).
    pub kind: u8,
    /// Its value, at most 65535 bytes.
    pub value: &'a [u8],
}

/// The v2 header of a relayed TCP connection, no TLVs: 28 bytes over IPv4 (both addresses
/// IPv4), else 52 over IPv6 (an IPv4 address as its IPv4-mapped form).
pub fn encode_v2(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    encode_v2_with(
        &ProxyHeader::Proxied {
            source,
            destination,
        },
        &[],
        false,
    )
}

/// A v2 `LOCAL` header (a balancer's own connection, e.g. a health check): 16 bytes,
/// `AF_UNSPEC`, no addresses, as HAProxy sends it.
pub fn encode_v2_local() -> Vec<u8> {
    encode_v2_with(&ProxyHeader::Local, &[], false)
}

/// A v2 header: `PROXY` with the addresses of `header` (as [`encode_v2`]) or `LOCAL`
/// (`AF_UNSPEC`), then `tlvs` in order, then, with `crc`, a CRC32C TLV filled in last.
/// It may be longer than [`V2_MAX_LEN`] allows, for tests of the bound.
///
/// # Panics
/// If a TLV's value is over 65535 bytes, or the block over 65535 (the `len` field's
/// limits).
pub fn encode_v2_with(header: &ProxyHeader, tlvs: &[Tlv<'_>], crc: bool) -> Vec<u8> {
    let mut out = SIGNATURE.to_vec();
    match header {
        ProxyHeader::Local => out.extend_from_slice(&[VERSION << 4 | CMD_LOCAL, 0x00, 0, 0]),
        ProxyHeader::Proxied {
            source,
            destination,
        } => {
            let (family, src, dst) = match (source.ip(), destination.ip()) {
                (IpAddr::V4(s), IpAddr::V4(d)) => (0x11, s.octets().to_vec(), d.octets().to_vec()),
                (s, d) => (0x21, as_v6(s).octets().to_vec(), as_v6(d).octets().to_vec()),
            };
            out.extend_from_slice(&[VERSION << 4 | CMD_PROXY, family, 0, 0]);
            out.extend_from_slice(&src);
            out.extend_from_slice(&dst);
            out.extend_from_slice(&source.port().to_be_bytes());
            out.extend_from_slice(&destination.port().to_be_bytes());
        }
    }
    let tlv = |out: &mut Vec<u8>, kind: u8, value: &[u8]| {
        let len = u16::try_from(value.len()).expect("a TLV value is at most 65535 bytes");
        out.push(kind);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(value);
    };
    for t in tlvs {
        tlv(&mut out, t.kind, t.value);
    }
    let crc_at = crc.then(|| {
        tlv(&mut out, PP2_TYPE_CRC32C, &[0; 4]);
        out.len() - 4
    });
    let len = u16::try_from(out.len() - FIXED_LEN).expect("a v2 block is at most 65535 bytes");
    out[14..FIXED_LEN].copy_from_slice(&len.to_be_bytes());
    if let Some(at) = crc_at {
        let sum = crc32c(&[&out]);
        out[at..at + 4].copy_from_slice(&sum.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy_protocol::parse;
    use crate::proxy_protocol::test_util::proxied;

    /// A v2 head with the given version/command and family bytes and `len`.
    fn head(version_command: u8, family: u8, len: u16) -> Vec<u8> {
        let mut out = SIGNATURE.to_vec();
        out.extend_from_slice(&[version_command, family]);
        out.extend_from_slice(&len.to_be_bytes());
        out
    }

    #[test]
    fn haproxy_send_proxy_v2_bytes() {
        // What HAProxy wrote for 172.19.0.1:42578 -> 172.19.0.3:80, then the request.
        let mut bytes = head(0x21, 0x11, 12);
        bytes.extend_from_slice(&[172, 19, 0, 1, 172, 19, 0, 3, 0xa6, 0x52, 0x00, 0x50]);
        bytes.extend_from_slice(b"GET /");
        assert_eq!(
            parse(&bytes),
            Parsed::Complete {
                header: proxied("172.19.0.1:42578", "172.19.0.3:80"),
                len: 28
            }
        );
    }

    #[test]
    fn ipv6_addresses_and_ports() {
        let header = proxied("[2001:db8::7]:65535", "[::1]:0");
        let bytes = encode_v2_with(&header, &[], false);
        assert_eq!(bytes.len(), 52);
        assert_eq!(bytes[13], 0x21);
        assert_eq!(parse(&bytes), Parsed::Complete { header, len: 52 });
    }

    #[test]
    fn local_is_served_as_the_proxy_whatever_its_block() {
        assert_eq!(
            parse(&encode_v2_local()),
            Parsed::Complete {
                header: ProxyHeader::Local,
                len: 16
            }
        );
        // LOCAL's family is ignored, even one no PROXY may carry, and its block skipped.
        let mut bytes = head(0x20, 0xff, 5);
        bytes.extend_from_slice(b"\x03\x00\x09x");
        assert_eq!(parse(&bytes), Parsed::Incomplete);
        bytes.push(b'y');
        assert_eq!(
            parse(&bytes),
            Parsed::Complete {
                header: ProxyHeader::Local,
                len: 21
            }
        );
    }

    #[test]
    fn unspec_unix_and_datagram_fall_back_to_the_proxy_itself() {
        for (family, len) in [
            (0x00, 0),
            (0x00, 7),
            (0x31, 216),
            (0x32, 216),
            (0x12, 12),
            (0x22, 0),
        ] {
            let mut bytes = head(0x21, family, len);
            bytes.resize(FIXED_LEN + usize::from(len), 0xee);
            assert_eq!(
                parse(&bytes),
                Parsed::Complete {
                    header: ProxyHeader::Local,
                    len: bytes.len()
                },
                "family {family:#04x}, len {len}"
            );
        }
    }

    #[test]
    fn each_bad_fixed_byte_is_refused_when_it_arrives() {
        assert_eq!(
            parse(&head(0x11, 0x11, 12)[..13]),
            Parsed::Invalid(Invalid::V2BadVersion)
        );
        assert_eq!(
            parse(&head(0x31, 0x11, 12)[..13]),
            Parsed::Invalid(Invalid::V2BadVersion)
        );
        assert_eq!(
            parse(&head(0x22, 0x11, 12)[..13]),
            Parsed::Invalid(Invalid::V2BadCommand)
        );
        assert_eq!(
            parse(&head(0x2f, 0x11, 12)[..13]),
            Parsed::Invalid(Invalid::V2BadCommand)
        );
        for family in [0x01, 0x10, 0x13, 0x20, 0x23, 0x30, 0x33, 0x40, 0x41, 0xff] {
            assert_eq!(
                parse(&head(0x21, family, 12)[..14]),
                Parsed::Invalid(Invalid::V2BadFamily),
                "{family:#04x}"
            );
        }
        assert_eq!(parse(&head(0x21, 0x11, 12)[..15]), Parsed::Incomplete);
        // A signature byte wrong: at that byte, the NUL and the final LF included.
        for i in 1..12 {
            let mut bytes = SIGNATURE[..=i].to_vec();
            bytes[i] ^= 0x40;
            assert_eq!(
                parse(&bytes),
                Parsed::Invalid(Invalid::BadSignature),
                "byte {i}"
            );
        }
    }

    #[test]
    fn len_exactly_at_the_bound_is_read_and_one_over_is_refused_at_once() {
        let header = proxied("10.0.0.1:1", "10.0.0.2:2");
        let noop = vec![0u8; V2_MAX_LEN - 12 - TLV_HEAD];
        let at = encode_v2_with(
            &header,
            &[Tlv {
                kind: PP2_TYPE_NOOP,
                value: &noop,
            }],
            false,
        );
        assert_eq!(at.len(), FIXED_LEN + V2_MAX_LEN);
        assert_eq!(at.len(), crate::proxy_protocol::MAX_HEADER_LEN);
        assert_eq!(
            parse(&at),
            Parsed::Complete {
                header,
                len: at.len()
            }
        );
        let noop = vec![0u8; V2_MAX_LEN - 12 - TLV_HEAD + 1];
        let over = encode_v2_with(
            &header,
            &[Tlv {
                kind: PP2_TYPE_NOOP,
                value: &noop,
            }],
            false,
        );
        assert_eq!(
            parse(&over[..FIXED_LEN]),
            Parsed::Invalid(Invalid::V2TooLong)
        );
        assert_eq!(parse(&over), Parsed::Invalid(Invalid::V2TooLong));
        // The same bound for LOCAL and UNSPEC mode, whose block is skipped.
        assert_eq!(
            parse(&head(0x20, 0, 1025)),
            Parsed::Invalid(Invalid::V2TooLong)
        );
        assert_eq!(
            parse(&head(0x21, 0x31, 0xffff)),
            Parsed::Invalid(Invalid::V2TooLong)
        );
    }

    #[test]
    fn len_shorter_than_the_addresses() {
        assert_eq!(
            parse(&head(0x21, 0x11, 11)),
            Parsed::Invalid(Invalid::V2ShortAddresses)
        );
        assert_eq!(
            parse(&head(0x21, 0x21, 35)),
            Parsed::Invalid(Invalid::V2ShortAddresses)
        );
        assert_eq!(
            parse(&head(0x21, 0x21, 12)),
            Parsed::Invalid(Invalid::V2ShortAddresses)
        );
        assert_eq!(parse(&head(0x21, 0x11, 12)), Parsed::Incomplete);
    }

    #[test]
    fn tlvs_are_skipped_and_must_fit() {
        let header = proxied("10.0.0.1:1", "10.0.0.2:2");
        let tlvs = [
            Tlv {
                kind: PP2_TYPE_ALPN,
                value: b"h2",
            },
            Tlv {
                kind: PP2_TYPE_AUTHORITY,
                value: b"example.com",
            },
            Tlv {
                kind: PP2_TYPE_NOOP,
                value: b"",
            },
            Tlv {
                kind: PP2_TYPE_UNIQUE_ID,
                value: &[7; 128],
            },
            Tlv {
                kind: PP2_TYPE_SSL,
                value: b"\x01\0\0\0\0\x21\x00\x07TLSv1.3",
            },
            Tlv {
                kind: 0xe0,
                value: b"custom",
            },
        ];
        let bytes = encode_v2_with(&header, &tlvs, false);
        assert_eq!(
            parse(&bytes),
            Parsed::Complete {
                header,
                len: bytes.len()
            }
        );

        // A TLV whose length runs past `len`: refused when its head arrives.
        let mut bad = encode_v2_with(
            &header,
            &[Tlv {
                kind: 0xe1,
                value: b"abcd",
            }],
            false,
        );
        bad[28 + 2] = 5;
        assert_eq!(parse(&bad[..28 + 3]), Parsed::Invalid(Invalid::V2BadTlv));
        // One or two bytes left after the last TLV: not a TLV.
        for tail in [1u16, 2] {
            let mut bytes = head(0x21, 0x11, 12 + tail);
            bytes.resize(FIXED_LEN + 12, 0);
            assert_eq!(
                parse(&bytes),
                Parsed::Invalid(Invalid::V2BadTlv),
                "tail {tail}"
            );
        }
        // A TLV head split by the read: wait.
        let bytes = encode_v2_with(&header, &tlvs[..1], false);
        assert_eq!(parse(&bytes[..29]), Parsed::Incomplete);
        assert_eq!(parse(&bytes[..30]), Parsed::Incomplete);
    }

    #[test]
    fn crc32c_is_verified_when_present() {
        let header = proxied("[2001:db8::1]:4000", "[2001:db8::2]:7000");
        let tlvs = [Tlv {
            kind: PP2_TYPE_AUTHORITY,
            value: b"tabecho.example",
        }];
        let good = encode_v2_with(&header, &tlvs, true);
        assert_eq!(
            parse(&good),
            Parsed::Complete {
                header,
                len: good.len()
            }
        );
        // Every bit of the header matters, the checksum's own included; not the fixed
        // bytes (they have verdicts of their own) nor the CRC TLV's type (0x03 ^ 1 is
        // AUTHORITY: then there is no checksum to fail).
        let crc_type_at = good.len() - 7;
        for i in FIXED_LEN..good.len() {
            if i == crc_type_at {
                continue;
            }
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            let got = parse(&bad);
            assert!(
                matches!(
                    got,
                    Parsed::Invalid(Invalid::CrcMismatch | Invalid::V2BadTlv)
                ),
                "bit flipped in byte {i}: {got:?}"
            );
        }
    }

    #[test]
    fn crc32c_tlv_must_be_four_bytes_and_alone() {
        let header = proxied("10.0.0.1:1", "10.0.0.2:2");
        let short = encode_v2_with(
            &header,
            &[Tlv {
                kind: PP2_TYPE_CRC32C,
                value: &[0; 3],
            }],
            false,
        );
        assert_eq!(parse(&short), Parsed::Invalid(Invalid::V2BadTlv));
        let crc = Tlv {
            kind: PP2_TYPE_CRC32C,
            value: &[0; 4],
        };
        let two = encode_v2_with(&header, &[crc], true);
        assert_eq!(parse(&two), Parsed::Invalid(Invalid::V2BadTlv));
    }

    #[test]
    fn the_checksum_is_big_endian_over_the_header_with_its_field_zeroed() {
        // Built by hand by the specification's recipe (HAProxy writes and reads the value
        // with write_n32/read_n32: network order) for 127.0.0.1:50000 -> 127.0.0.1:7000.
        let mut bytes = head(0x21, 0x11, 19);
        bytes.extend_from_slice(&[127, 0, 0, 1, 127, 0, 0, 1]);
        bytes.extend_from_slice(&50000u16.to_be_bytes());
        bytes.extend_from_slice(&7000u16.to_be_bytes());
        bytes.extend_from_slice(&[PP2_TYPE_CRC32C, 0, 4, 0, 0, 0, 0]);
        let sum = crc32c(&[&bytes]);
        bytes[31..35].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(
            bytes,
            encode_v2_with(&proxied("127.0.0.1:50000", "127.0.0.1:7000"), &[], true)
        );
        assert!(matches!(parse(&bytes), Parsed::Complete { len: 35, .. }));
        // Little-endian, as a sender that forgot htonl would write it: refused.
        bytes[31..35].copy_from_slice(&sum.to_le_bytes());
        assert_eq!(parse(&bytes), Parsed::Invalid(Invalid::CrcMismatch));
    }
}
