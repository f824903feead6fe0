//! PROXY protocol v1: one US-ASCII line, `PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n` or
//! `PROXY UNKNOWN ...\r\n`, at most 107 bytes (`doc/proxy-protocol.txt` section 2.1).
//!
//! Strict, as the specification says ("any sequence which does not exactly match the
//! protocol must be discarded"): exactly one space between fields; `TCP4` takes two
//! dotted quads, `TCP6` two IPv6 addresses (std's parser; no zone, no brackets); ports are
//! decimal 0 to 65535; neither octets nor ports may have a leading zero; the line ends with
//! CRLF, and a lone CR is refused. After `UNKNOWN` everything up to the first CR is
//! ignored, as the specification says.
//!
//! Each call re-scans the line from its start (at most 107 bytes). The fields before the
//! last one seen are checked whole; the last, still arriving, is checked as a prefix of
//! what its place allows, so garbage is refused at its first wrong byte.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{matches_signature, Invalid, Parsed, ProxyHeader};

/// `PROXY` and its one space: what a v1 line begins with.
pub(super) const SIGNATURE: &[u8] = b"PROXY ";

/// The longest v1 line, CRLF included (the specification's worst case,
/// `PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n`). Without a CRLF in
/// this many bytes, the line is invalid.
pub const V1_MAX_LEN: usize = 107;

/// The protocol words the specification defines.
const PROTOCOLS: [&[u8]; 3] = [b"TCP4", b"TCP6", b"UNKNOWN"];

/// The longest IPv6 text std parses: eight 4-digit groups, or six and a dotted quad
/// (`ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255`).
const IPV6_TEXT_MAX: usize = 45;

/// Which family a `TCP4`/`TCP6` line's addresses are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

/// Parses `buf`, whose first byte is `P`.
pub(super) fn parse(buf: &[u8]) -> Parsed {
    match matches_signature(buf, SIGNATURE) {
        None => return Parsed::Invalid(Invalid::BadSignature),
        Some(false) => return Parsed::Incomplete,
        Some(true) => {}
    }
    // A valid line's CR is at index V1_MAX_LEN - 2 at the latest; bytes past it are not
    // looked at, so more bytes never change a verdict.
    let scan = &buf[..buf.len().min(V1_MAX_LEN - 1)];
    let cr = memchr::memchr(b'\r', &scan[SIGNATURE.len()..]).map(|i| SIGNATURE.len() + i);
    let body = &scan[SIGNATURE.len()..cr.unwrap_or(scan.len())];
    let header = match check_body(body, cr.is_some()) {
        Ok(header) => header,
        Err(invalid) => return Parsed::Invalid(invalid),
    };
    match (cr, header) {
        (Some(cr), Some(header)) => match buf.get(cr + 1) {
            None => Parsed::Incomplete,
            Some(b'\n') => Parsed::Complete {
                header,
                len: cr + 2,
            },
            Some(_) => Parsed::Invalid(Invalid::V1Malformed),
        },
        (None, _) if buf.len() >= V1_MAX_LEN - 1 => Parsed::Invalid(Invalid::V1TooLong),
        _ => Parsed::Incomplete,
    }
}

/// Checks the line between `PROXY ` and its CR (or the end of the bytes so far when
/// `!finished`). `Ok(Some(header))` for a whole valid line, `Ok(None)` for a valid
/// beginning of one.
fn check_body(body: &[u8], finished: bool) -> Result<Option<ProxyHeader>, Invalid> {
    let (protocol, rest) = match memchr::memchr(b' ', body) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    if rest.is_none() && !finished {
        return if PROTOCOLS.iter().any(|p| p.starts_with(protocol)) {
            Ok(None)
        } else {
            Err(Invalid::V1Malformed)
        };
    }
    let family = match protocol {
        b"UNKNOWN" => return Ok(finished.then_some(ProxyHeader::Local)),
        b"TCP4" => Family::V4,
        b"TCP6" => Family::V6,
        _ => return Err(Invalid::V1Malformed),
    };
    // `PROXY TCP4\r\n`: the addresses are missing.
    let rest = rest.ok_or(Invalid::V1Malformed)?;

    // SRC DST SPORT DPORT: fields 0 and 1 addresses, 2 and 3 ports.
    let mut addrs = [IpAddr::V4(Ipv4Addr::UNSPECIFIED); 2];
    let mut ports = [0u16; 2];
    let mut count = 0;
    let mut fields = rest.split(|&b| b == b' ').peekable();
    while let Some(field) = fields.next() {
        if count == 4 {
            return Err(Invalid::V1Malformed);
        }
        let whole = fields.peek().is_some() || finished;
        let ok = match (count, whole) {
            (0 | 1, true) => match address(field, family) {
                Some(addr) => {
                    addrs[count] = addr;
                    true
                }
                None => false,
            },
            (0 | 1, false) => match family {
                Family::V4 => ipv4_prefix(field),
                Family::V6 => ipv6_prefix(field),
            },
            (_, true) => match port(field) {
                Some(p) => {
                    ports[count - 2] = p;
                    true
                }
                None => false,
            },
            (_, false) => port_prefix(field),
        };
        if !ok {
            return Err(Invalid::V1Malformed);
        }
        count += 1;
    }
    match (finished, count) {
        (false, _) => Ok(None),
        (true, 4) => Ok(Some(ProxyHeader::Proxied {
            source: SocketAddr::new(addrs[0], ports[0]),
            destination: SocketAddr::new(addrs[1], ports[1]),
        })),
        (true, _) => Err(Invalid::V1Malformed),
    }
}

/// A whole address field of `family`. std's parsers refuse leading zeros in octets.
fn address(field: &[u8], family: Family) -> Option<IpAddr> {
    let text = std::str::from_utf8(field).ok()?;
    match family {
        Family::V4 => text.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
        Family::V6 => text.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
    }
}

/// A whole port field: 1 to 5 decimal digits, no leading zero, at most 65535.
fn port(field: &[u8]) -> Option<u16> {
    if field.is_empty() || !port_prefix(field) {
        return None;
    }
    std::str::from_utf8(field).ok()?.parse().ok()
}

/// Whether `field` can begin a port: digits, no leading zero before another digit, and
/// (with five) at most 65535.
fn port_prefix(field: &[u8]) -> bool {
    field.len() <= 5
        && field.iter().all(u8::is_ascii_digit)
        && !(field.len() > 1 && field[0] == b'0')
        && (field.len() < 5 || field <= b"65535".as_slice())
}

/// Whether `field` can begin a dotted quad: at most four groups of at most three digits,
/// none empty before its dot, none with a leading zero, none over 255.
fn ipv4_prefix(field: &[u8]) -> bool {
    let mut groups = 0;
    for group in field.split(|&b| b == b'.') {
        groups += 1;
        if groups > 4 || !group.iter().all(u8::is_ascii_digit) || group.len() > 3 {
            return false;
        }
        if group.len() > 1 && group[0] == b'0' {
            return false;
        }
        if group.len() == 3 && group > b"255".as_slice() {
            return false;
        }
    }
    // Every group but the last is finished: it needs a digit.
    field
        .split(|&b| b == b'.')
        .rev()
        .skip(1)
        .all(|g| !g.is_empty())
}

/// Whether `field` may begin an IPv6 address, checked by rules every valid address
/// obeys (so a valid address is never refused early; see the module's invariants for what
/// passes here and is refused only when the field ends): its bytes, its length, at most
/// one `::` and no `:::`, hex groups of at most four digits, at most eight groups, and a
/// dotted quad only at the end.
fn ipv6_prefix(field: &[u8]) -> bool {
    if field.len() > IPV6_TEXT_MAX
        || !field
            .iter()
            .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
    {
        return false;
    }
    let double_colons = field.windows(2).filter(|w| w == b"::").count();
    // A leading colon is half of a `::`.
    let lone_leading_colon = field.len() >= 2 && field[0] == b':' && field[1] != b':';
    if field.windows(3).any(|w| w == b":::") || double_colons > 1 || lone_leading_colon {
        return false;
    }
    let (hex, quad) = match memchr::memchr(b'.', field) {
        // The dotted quad's first group began after the last colon.
        Some(dot) => {
            let start = memchr::memrchr(b':', &field[..dot]).map_or(0, |c| c + 1);
            (&field[..start], Some(&field[start..]))
        }
        None => (field, None),
    };
    if let Some(quad) = quad {
        // A dotted quad takes the last two groups' room, after at least one colon.
        if hex.is_empty() || quad.contains(&b':') || !ipv4_prefix(quad) {
            return false;
        }
    }
    let groups = hex.split(|&b| b == b':').filter(|g| !g.is_empty());
    let mut count = 0;
    for group in groups {
        if group.len() > 4 {
            return false;
        }
        count += 1;
    }
    let room = if quad.is_some() { 6 } else { 8 };
    let room = if double_colons == 1 { room - 1 } else { room };
    // A single trailing colon needs another group after it, or a second colon (a `::`,
    // which takes a group's room).
    let needs_group = quad.is_none() && hex.ends_with(b":") && !hex.ends_with(b"::");
    count + usize::from(needs_group) <= room
}

/// The v1 line for a relayed connection: `TCP4` when both addresses are IPv4, else
/// `TCP6`, an IPv4 one written as its IPv4-mapped IPv6 address (the specification wants
/// one family per line). At most 104 bytes: std prints IPv6 in its shortest form.
pub fn encode_v1(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let line = match (source.ip(), destination.ip()) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => format!(
            "PROXY TCP4 {src} {dst} {} {}\r\n",
            source.port(),
            destination.port()
        ),
        (src, dst) => format!(
            "PROXY TCP6 {} {} {} {}\r\n",
            as_v6(src),
            as_v6(dst),
            source.port(),
            destination.port()
        ),
    };
    line.into_bytes()
}

/// `PROXY UNKNOWN\r\n`: the short form, for a connection the sender cannot describe.
pub fn encode_v1_unknown() -> Vec<u8> {
    b"PROXY UNKNOWN\r\n".to_vec()
}

/// `ip` as IPv6: an IPv4 address as its IPv4-mapped form.
pub(super) fn as_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy_protocol::parse;
    use crate::proxy_protocol::test_util::{proxied, sock};

    #[track_caller]
    fn complete(line: &[u8]) -> ProxyHeader {
        match parse(line) {
            Parsed::Complete { header, len } => {
                assert_eq!(len, line.len(), "{:?}", String::from_utf8_lossy(line));
                header
            }
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(line)),
        }
    }

    #[track_caller]
    fn invalid(line: &[u8]) -> Invalid {
        match parse(line) {
            Parsed::Invalid(invalid) => invalid,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(line)),
        }
    }

    #[test]
    fn the_specification_examples() {
        assert_eq!(
            complete(b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"),
            proxied("192.168.0.1:56324", "192.168.0.11:443")
        );
        assert_eq!(
            complete(b"PROXY TCP6 2001:db8::1 ::1 0 65535\r\n"),
            proxied("[2001:db8::1]:0", "[::1]:65535")
        );
        assert_eq!(complete(b"PROXY UNKNOWN\r\n"), ProxyHeader::Local);
        assert_eq!(
            complete(b"PROXY UNKNOWN ffff::1 whatever the rest\r\n"),
            ProxyHeader::Local
        );
    }

    #[test]
    fn the_longest_lines_of_the_specification_are_accepted() {
        let max = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let tcp6 = format!("PROXY TCP6 {max} {max} 65535 65535\r\n");
        assert_eq!(tcp6.len(), 104);
        complete(tcp6.as_bytes());
        let unknown = format!("PROXY UNKNOWN {max} {max} 65535 65535\r\n");
        assert_eq!(unknown.len(), V1_MAX_LEN);
        assert_eq!(complete(unknown.as_bytes()), ProxyHeader::Local);
        let tcp4 = b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n";
        assert_eq!(tcp4.len(), 56);
        complete(tcp4);
    }

    #[test]
    fn exactly_107_bytes_is_a_line_and_108_is_too_long() {
        let pad = |n: usize| format!("PROXY UNKNOWN {}", "x".repeat(n - 16));
        let at = format!("{}\r\n", pad(V1_MAX_LEN));
        assert_eq!(at.len(), 107);
        assert_eq!(complete(at.as_bytes()), ProxyHeader::Local);
        let over = format!("{}\r\n", pad(V1_MAX_LEN + 1));
        assert_eq!(over.len(), 108);
        assert_eq!(invalid(over.as_bytes()), Invalid::V1TooLong);
        // 108 bytes without any CRLF: too long, and decided already at 106 (a CRLF can
        // then end the line at byte 108 at the earliest).
        let none = "PROXY UNKNOWN ".to_string() + &"y".repeat(94);
        assert_eq!(none.len(), 108);
        assert_eq!(invalid(none.as_bytes()), Invalid::V1TooLong);
        assert_eq!(invalid(&none.as_bytes()[..106]), Invalid::V1TooLong);
        assert_eq!(parse(&none.as_bytes()[..105]), Parsed::Incomplete);
        // A CR as byte 107 would need its LF as byte 108.
        let cr_last = format!("{}\r", pad(108));
        assert_eq!(cr_last.len(), 107);
        assert_eq!(invalid(cr_last.as_bytes()), Invalid::V1TooLong);
    }

    #[test]
    fn the_bytes_after_the_line_are_not_part_of_it() {
        let input = b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nframe\tPROXY junk";
        assert_eq!(
            parse(input),
            Parsed::Complete {
                header: proxied("1.2.3.4:1", "5.6.7.8:2"),
                len: 32
            }
        );
    }

    #[test]
    fn line_ends_must_be_crlf() {
        assert_eq!(
            invalid(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"),
            Invalid::V1Malformed
        );
        assert_eq!(
            invalid(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rx"),
            Invalid::V1Malformed
        );
        assert_eq!(invalid(b"PROXY UNKNOWN\r\r\n"), Invalid::V1Malformed);
        assert_eq!(
            parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r"),
            Parsed::Incomplete
        );
    }

    #[test]
    fn fields_are_exactly_one_space_apart_and_four_after_tcp() {
        for line in [
            &b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n"[..],
            b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1  2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            b"PROXY TCP4 1.2.3.4\r\n",
            b"PROXY TCP4\r\n",
            b"PROXY TCP4 \r\n",
            b"PROXY\tTCP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4\t1.2.3.4 5.6.7.8 1 2\r\n",
        ] {
            assert_eq!(
                parse(line),
                Parsed::Invalid(if line[5] == b' ' {
                    Invalid::V1Malformed
                } else {
                    Invalid::BadSignature
                }),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn protocols_are_the_three_words_in_capitals() {
        assert_eq!(invalid(b"PROXY TCP5 "), Invalid::V1Malformed);
        assert_eq!(invalid(b"PROXY tcp4"), Invalid::V1Malformed);
        assert_eq!(invalid(b"PROXY UDP4"), Invalid::V1Malformed);
        assert_eq!(invalid(b"PROXY UNKNOWNX\r\n"), Invalid::V1Malformed);
        assert_eq!(invalid(b"PROXY TCP44 "), Invalid::V1Malformed);
        assert_eq!(invalid(b"PROXY \r\n"), Invalid::V1Malformed);
        assert_eq!(parse(b"PROXY UNKNO"), Parsed::Incomplete);
        assert_eq!(parse(b"PROXY UNKNOWN"), Parsed::Incomplete);
        assert_eq!(parse(b"PROXY UNKNOWN "), Parsed::Incomplete);
    }

    #[test]
    fn tcp4_takes_dotted_quads_without_leading_zeros() {
        for bad in [
            "PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
            "PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n",
            "PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n",
            "PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n",
            "PROXY TCP4 1..3.4 5.6.7.8 1 2\r\n",
            "PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
            "PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
            "PROXY TCP4 1.2.3.4 ::ffff:5.6.7.8 1 2\r\n",
            "PROXY TCP4 +1.2.3.4 5.6.7.8 1 2\r\n",
            "PROXY TCP6 [::1] ::1 1 2\r\n",
            "PROXY TCP6 fe80::1%1 ::1 1 2\r\n",
        ] {
            assert_eq!(invalid(bad.as_bytes()), Invalid::V1Malformed, "{bad:?}");
        }
        assert_eq!(
            complete(b"PROXY TCP4 0.0.0.0 10.0.0.255 0 0\r\n"),
            proxied("0.0.0.0:0", "10.0.0.255:0")
        );
        assert_eq!(
            complete(b"PROXY TCP6 ::ffff:1.2.3.4 ::1 7 8\r\n"),
            proxied("[::ffff:1.2.3.4]:7", "[::1]:8")
        );
    }

    #[test]
    fn ports_are_0_to_65535_in_plain_decimal() {
        for bad in [
            "65536", "99999", "00", "01", "+1", "-1", "1a", "0x10", "100000", "",
        ] {
            let line = format!("PROXY TCP4 1.2.3.4 5.6.7.8 {bad} 2\r\n");
            assert_eq!(invalid(line.as_bytes()), Invalid::V1Malformed, "{bad:?}");
            let line = format!("PROXY TCP4 1.2.3.4 5.6.7.8 2 {bad}\r\n");
            assert_eq!(invalid(line.as_bytes()), Invalid::V1Malformed, "{bad:?}");
        }
        complete(b"PROXY TCP4 1.2.3.4 5.6.7.8 0 65535\r\n");
    }

    #[test]
    fn garbage_is_refused_at_its_first_wrong_byte() {
        // Each: the longest prefix still Incomplete, then the byte that decides.
        for (ok, bad) in [
            ("PROX", "PROXX"),
            ("PROXY", "PROXY-"),
            ("PROXY TC", "PROXY TCX"),
            ("PROXY TCP4 ", "PROXY TCP4 a"),
            ("PROXY TCP4 1.2.25", "PROXY TCP4 1.2.256"),
            ("PROXY TCP4 1.2.0", "PROXY TCP4 1.2.00"),
            ("PROXY TCP4 1.2.3.4", "PROXY TCP4 1.2.3.4."),
            ("PROXY TCP4 1", "PROXY TCP4 1:"),
            ("PROXY TCP6 ", "PROXY TCP6 g"),
            ("PROXY TCP6 1::2:", "PROXY TCP6 1::2::"),
            ("PROXY TCP6 1::", "PROXY TCP6 1:::"),
            ("PROXY TCP6 1234", "PROXY TCP6 12345"),
            ("PROXY TCP6 :", "PROXY TCP6 :1"),
            ("PROXY TCP6 1:2:3:4:5:6:7:8", "PROXY TCP6 1:2:3:4:5:6:7:8:"),
            ("PROXY TCP6 ::ffff:1.2", "PROXY TCP6 ::ffff:1.2:"),
            (
                "PROXY TCP4 1.2.3.4 5.6.7.8 6553",
                "PROXY TCP4 1.2.3.4 5.6.7.8 65536",
            ),
            (
                "PROXY TCP4 1.2.3.4 5.6.7.8 0",
                "PROXY TCP4 1.2.3.4 5.6.7.8 00",
            ),
            (
                "PROXY TCP4 1.2.3.4 5.6.7.8 1 2",
                "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 ",
            ),
        ] {
            assert_eq!(parse(ok.as_bytes()), Parsed::Incomplete, "{ok:?}");
            let b = bad.as_bytes();
            assert!(b.starts_with(ok.as_bytes()) && b.len() == ok.len() + 1);
            assert!(matches!(parse(b), Parsed::Invalid(_)), "{bad:?}");
        }
    }

    #[test]
    fn every_prefix_of_a_valid_address_may_begin_one() {
        let v6 = [
            "::",
            "::1",
            "1::",
            "2001:db8::8a2e:370:7334",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255",
            "::ffff:10.0.0.1",
            "::1.2.3.4",
            "1:2:3:4:5::1.2.3.4",
            "1:2:3:4:5:6:7::",
            "::2:3:4:5:6:7:8",
            "0000:0000:0000:0000:0000:0000:0000:0000",
            "a:B:c:D:e:F:0:1",
        ];
        for addr in v6 {
            assert!(addr.parse::<Ipv6Addr>().is_ok(), "{addr}");
            for n in 0..=addr.len() {
                assert!(ipv6_prefix(&addr.as_bytes()[..n]), "{addr} [..{n}]");
            }
        }
        for addr in ["0.0.0.0", "255.255.255.255", "10.200.3.99", "1.0.10.100"] {
            for n in 0..=addr.len() {
                assert!(ipv4_prefix(&addr.as_bytes()[..n]), "{addr} [..{n}]");
            }
        }
    }

    #[test]
    fn the_encoder_writes_what_the_parser_reads() {
        let cases = [
            ("10.0.0.1:40000", "10.0.0.2:7000"),
            ("[2001:db8::1]:1", "[2001:db8::2]:2"),
        ];
        for (src, dst) in cases {
            let line = encode_v1(sock(src), sock(dst));
            assert_eq!(complete(&line), proxied(src, dst));
        }
        // Mixed families: TCP6, the IPv4 one mapped.
        let line = encode_v1(sock("10.0.0.1:1"), sock("[::1]:2"));
        assert!(line.starts_with(b"PROXY TCP6 ::ffff:10.0.0.1 ::1 1 2\r\n"));
        assert_eq!(complete(&encode_v1_unknown()), ProxyHeader::Local);
    }
}
