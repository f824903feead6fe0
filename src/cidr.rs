//! Cidr: an IPv4 or IPv6 network written `ADDR/PREFIX` (or a bare address, a network of
//! one), as the operator's flags name sources: the proxies trusted to send a PROXY header,
//! and the connections an admin request lists or closes.
//!
//! # Invariants
//! - A [`Cidr`] always has every bit past its prefix length zeroed (`10.1.2.3/8` is read
//!   as `10.0.0.0/8`), so two ways of writing one network are equal.
//! - An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, a dual-stack listener's IPv4 peer) is
//!   matched as the IPv4 address `a.b.c.d`, as [`crate::server::Source`] counts it.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IPv4 or IPv6 network: an address and how many of its leading bits name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    /// The network's address, every bit past `prefix_len` zero.
    network: IpAddr,
    /// Leading bits that name the network: at most 32 for IPv4, 128 for IPv6.
    prefix_len: u8,
}

impl Cidr {
    /// The network of the first `prefix_len` bits of `addr`; `None` if `prefix_len` is
    /// longer than the address.
    pub fn new(addr: IpAddr, prefix_len: u8) -> Option<Cidr> {
        let network = match addr {
            IpAddr::V4(v4) if prefix_len <= 32 => {
                IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask32(prefix_len)))
            }
            IpAddr::V6(v6) if prefix_len <= 128 => {
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask128(prefix_len)))
            }
            _ => return None,
        };
        Some(Cidr {
            network,
            prefix_len,
        })
    }

    /// The network's address (host bits zero).
    pub fn network(&self) -> IpAddr {
        self.network
    }

    /// How many leading bits name the network.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Whether `addr` is in this network. An IPv4-mapped IPv6 address is its IPv4 one.
    pub fn contains(&self, addr: IpAddr) -> bool {
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, addr) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                u32::from(a) & mask32(self.prefix_len) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                u128::from(a) & mask128(self.prefix_len) == u128::from(net)
            }
            _ => false,
        }
    }
}

/// The mask of the first `len` bits of 32 (`len` at most 32).
fn mask32(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

/// The mask of the first `len` bits of 128 (`len` at most 128).
fn mask128(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

impl FromStr for Cidr {
    type Err = String;

    /// `ADDR/PREFIX`, or a bare `ADDR` (all its bits). IPv6 may be bracketed: `[::1]/128`.
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let addr = addr
            .strip_prefix('[')
            .and_then(|a| a.strip_suffix(']'))
            .unwrap_or(addr);
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{s}`: not an IP address or ADDR/PREFIX network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix_len = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= max)
                .ok_or_else(|| format!("`{s}`: the prefix length must be 0 to {max}"))?,
        };
        Cidr::new(addr, prefix_len).ok_or_else(|| format!("`{s}`: bad prefix length"))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_bare_address_is_a_network_of_one() {
        assert_eq!(cidr("127.0.0.2").prefix_len(), 32);
        assert!(cidr("127.0.0.2").contains(ip("127.0.0.2")));
        assert!(!cidr("127.0.0.2").contains(ip("127.0.0.3")));
        assert_eq!(cidr("::1").prefix_len(), 128);
        assert!(cidr("[::1]").contains(ip("::1")));
    }

    #[test]
    fn host_bits_are_zeroed_so_two_spellings_are_equal() {
        assert_eq!(cidr("10.1.2.3/8"), cidr("10.0.0.0/8"));
        assert_eq!(cidr("10.1.2.3/8").to_string(), "10.0.0.0/8");
        assert_eq!(cidr("2001:db8::1/32"), cidr("2001:db8::/32"));
    }

    #[test]
    fn prefix_boundaries() {
        assert!(cidr("0.0.0.0/0").contains(ip("255.1.2.3")));
        assert!(cidr("::/0").contains(ip("2001:db8::7")));
        assert!(cidr("10.0.0.0/31").contains(ip("10.0.0.1")));
        assert!(!cidr("10.0.0.0/31").contains(ip("10.0.0.2")));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("::/129".parse::<Cidr>().is_err());
        assert!("10.0.0.0/".parse::<Cidr>().is_err());
        assert!("10.0.0.0/-1".parse::<Cidr>().is_err());
        assert!("host/8".parse::<Cidr>().is_err());
    }

    #[test]
    fn families_do_not_mix_but_mapped_v4_is_v4() {
        assert!(!cidr("127.0.0.0/8").contains(ip("::1")));
        assert!(!cidr("::/0").contains(ip("127.0.0.1")));
        assert!(cidr("127.0.0.0/8").contains(ip("::ffff:127.0.0.5")));
    }

    #[test]
    fn contains_matches_a_naive_bit_comparison() {
        // Every prefix length of one address against neighbours one bit apart.
        let base = u32::from(Ipv4Addr::new(192, 168, 10, 77));
        for len in 0..=32u8 {
            let net = Cidr::new(IpAddr::V4(Ipv4Addr::from(base)), len).unwrap();
            for bit in 0..32 {
                let other = base ^ (1 << bit);
                let same_prefix = (0..u32::from(len)).all(|i| {
                    let b = 31 - i;
                    (base >> b) & 1 == (other >> b) & 1
                });
                assert_eq!(
                    net.contains(IpAddr::V4(Ipv4Addr::from(other))),
                    same_prefix,
                    "{net} vs {}",
                    Ipv4Addr::from(other)
                );
            }
        }
    }
}
