//! Source: who a connection counts against under `--max-connections-per-source`: its
//! IPv4 address, its IPv6 network (the first `--source-prefix-v6` bits), or, on a Unix
//! socket, the uid of the peer process (SO_PEERCRED).
//!
//! # Invariants
//! - A [`Source`] is always computed once, when the connection is accepted, and travels
//!   with it: the peer's address cannot be asked again at close (`getpeername` fails once
//!   the peer has reset the connection), and the release must name exactly what the
//!   admission counted.
//! - An IPv6 source always has every bit past its prefix length zeroed, so two peers of one
//!   network are equal keys.
//! - An IPv4 peer of a dual-stack listener (an IPv4-mapped address, `::ffff:a.b.c.d`) is
//!   the IPv4 source `a.b.c.d`, as if it had come to an IPv4 listener.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::stream::Stream;

/// Who a connection counts against. 20 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// An IPv4 address.
    V4(Ipv4Addr),
    /// An IPv6 network: `network` has every bit past `prefix_len` zeroed.
    V6 {
        /// The address with the host bits zeroed.
        network: Ipv6Addr,
        /// The bits that name the network (`--source-prefix-v6`).
        prefix_len: u8,
    },
    /// The uid of a Unix socket's peer process.
    Uid(u32),
}

impl Source {
    /// The source of a TCP peer at `addr`, its IPv6 network being its first
    /// `prefix_len_v6` bits (at most 128).
    pub fn of_addr(addr: SocketAddr, prefix_len_v6: u8) -> Source {
        match addr.ip() {
            IpAddr::V4(v4) => Source::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source::V4(v4),
                None => {
                    let prefix_len = prefix_len_v6.min(128);
                    let mask = u128::MAX
                        .checked_shl(128 - u32::from(prefix_len))
                        .unwrap_or(0);
                    Source::V6 {
                        network: Ipv6Addr::from(u128::from(v6) & mask),
                        prefix_len,
                    }
                }
            },
        }
    }

    /// The source of an accepted connection: the TCP peer's address `peer` (what accept
    /// returned), or a Unix peer's uid, asked of the kernel.
    pub fn of_stream(
        stream: &Stream,
        peer: Option<SocketAddr>,
        prefix_len_v6: u8,
    ) -> io::Result<Source> {
        match (stream, peer) {
            (Stream::Tcp(_), Some(addr)) => Ok(Source::of_addr(addr, prefix_len_v6)),
            (Stream::Tcp(s), None) => s.peer_addr().map(|a| Source::of_addr(a, prefix_len_v6)),
            (Stream::Unix(s), _) => crate::unix_peer::peer_uid(s).map(Source::Uid),
        }
    }
}

/// For the logs: `192.0.2.7`, `2001:db8:1:2::/64`, `uid 1000`.
impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::V4(a) => write!(f, "{a}"),
            Source::V6 {
                network,
                prefix_len,
            } => write!(f, "{network}/{prefix_len}"),
            Source::Uid(uid) => write!(f, "uid {uid}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v6(s: &str, prefix_len: u8) -> Source {
        Source::of_addr(SocketAddr::new(s.parse().unwrap(), 1), prefix_len)
    }

    #[test]
    fn an_ipv4_peer_is_its_address_whatever_its_port() {
        let a = Source::of_addr("127.0.0.2:1000".parse().unwrap(), 64);
        let b = Source::of_addr("127.0.0.2:2000".parse().unwrap(), 64);
        assert_eq!(a, b);
        assert_eq!(a, Source::V4(Ipv4Addr::new(127, 0, 0, 2)));
        assert_ne!(a, Source::of_addr("127.0.0.3:1000".parse().unwrap(), 64));
    }

    #[test]
    fn an_ipv4_mapped_peer_is_the_ipv4_source() {
        assert_eq!(
            v6("::ffff:192.0.2.7", 64),
            Source::V4(Ipv4Addr::new(192, 0, 2, 7))
        );
    }

    #[test]
    fn ipv6_peers_of_one_prefix_are_one_source() {
        assert_eq!(v6("2001:db8:1:2::1", 64), v6("2001:db8:1:2:ffff::9", 64));
        assert_ne!(v6("2001:db8:1:2::1", 64), v6("2001:db8:1:3::1", 64));
        assert_eq!(v6("2001:db8:1:2::1", 64).to_string(), "2001:db8:1:2::/64");
    }

    #[test]
    fn prefix_boundaries_0_1_127_128_and_above() {
        // /0: every IPv6 peer is one source.
        assert_eq!(v6("2001:db8::1", 0), v6("fe80::1", 0));
        assert_eq!(v6("2001:db8::1", 0).to_string(), "::/0");
        // /1: the top bit decides.
        assert_eq!(v6("::1", 1), v6("7fff::1", 1));
        assert_ne!(v6("::1", 1), v6("8000::1", 1));
        // /127: the last bit is the host's.
        assert_eq!(v6("2001:db8::2", 127), v6("2001:db8::3", 127));
        assert_ne!(v6("2001:db8::2", 127), v6("2001:db8::4", 127));
        // /128: every address its own source; past 128 taken as 128.
        assert_ne!(v6("2001:db8::2", 128), v6("2001:db8::3", 128));
        assert_eq!(v6("2001:db8::2", 200), v6("2001:db8::2", 128));
    }

    #[test]
    fn a_source_is_20_bytes() {
        assert_eq!(std::mem::size_of::<Source>(), 20);
        assert_eq!(std::mem::size_of::<Option<Source>>(), 20);
    }
}
