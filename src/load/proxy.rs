//! ProxyHeaders: `tabecho load --proxy-header v1|v2 --proxy-source IP[/PREFIX]`, the PROXY
//! protocol header each load connection begins with, as a balancer writes it. One machine
//! then stands for many clients behind a balancer, with no balancer: a server that trusts
//! the load's address counts, limits and logs each connection by the source its header
//! names.
//!
//! Sources are the host addresses of the prefix, dealt round-robin by client number:
//! a session's id (0, 1, 2, ... over the run; a faulty session keeps its own across its
//! cycles, so it reconnects from the same address), or a churn connection's own number. The host addresses are
//! every address of the prefix but, as a network's real clients are, its network and
//! broadcast addresses for IPv4 prefixes up to /30, and its all-zero (subnet-router
//! anycast, RFC 4291 2.6.1) address for IPv6 prefixes up to /126. A bare address, or a
//! /32 or /128, is one source for every connection.
//!
//! The header's source port is made up, `1024 + round % 64512` where `round` is how many
//! times the client number went round the hosts, so the first 64,512 clients of each
//! host have distinct ports; the destination is the server's address (for a Unix socket,
//! which has none, the unspecified address of the source's family, port 0).
//!
//! # Invariants
//! - `hosts` is always at least 1, and `first + hosts - 1` is always within the prefix.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use crate::addr::ListenAddr;
use crate::cidr::Cidr;
use crate::proxy_protocol::{encode_v1, encode_v2};

/// The lowest made-up source port: above the privileged ones, as a client's would be.
const FIRST_PORT: u16 = 1024;

/// Which PROXY protocol version the load writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyVersion {
    /// The text line, `PROXY TCP4 ...\r\n` (HAProxy's `send-proxy`).
    V1,
    /// The binary header (HAProxy's `send-proxy-v2`), no TLVs.
    V2,
}

impl ProxyVersion {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ProxyVersion::V1 => "v1",
            ProxyVersion::V2 => "v2",
        }
    }
}

impl FromStr for ProxyVersion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "v1" => Ok(ProxyVersion::V1),
            "v2" => Ok(ProxyVersion::V2),
            _ => Err(format!("{s:?}: not a PROXY protocol version (v1 or v2)")),
        }
    }
}

impl fmt::Display for ProxyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The header every load connection begins with: its version and the sources it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyHeaders {
    /// v1 or v2.
    version: ProxyVersion,
    /// The prefix the sources are dealt from, as given (host bits zeroed).
    prefix: Cidr,
    /// The first host address, as a number.
    first: u128,
    /// How many host addresses there are: at least 1.
    hosts: u128,
}

impl ProxyHeaders {
    /// Headers of `version` naming the host addresses of `prefix` in turn.
    pub fn new(version: ProxyVersion, prefix: Cidr) -> Self {
        let network = match prefix.network() {
            IpAddr::V4(v4) => u128::from(u32::from(v4)),
            IpAddr::V6(v6) => u128::from(v6),
        };
        let bits = if prefix.network().is_ipv4() { 32 } else { 128 };
        let host_bits = bits - u32::from(prefix.prefix_len());
        // Every address of the prefix, less one: 2^host_bits - 1 (no overflow at /0 v6).
        let all_but_one = u128::MAX.checked_shr(128 - host_bits).unwrap_or(0);
        let (first, hosts) = match (bits, host_bits) {
            // /31, /32, /127, /128: every address is a host.
            (_, 0 | 1) => (network, all_but_one + 1),
            // IPv4: not the network address, not the broadcast address.
            (32, _) => (network + 1, all_but_one - 1),
            // IPv6: not the all-zero host.
            _ => (network + 1, all_but_one),
        };
        debug_assert!(hosts >= 1, "{prefix}: {hosts} hosts");
        ProxyHeaders {
            version,
            prefix,
            first,
            hosts,
        }
    }

    /// The version written.
    pub fn version(&self) -> ProxyVersion {
        self.version
    }

    /// The prefix the sources come from.
    pub fn prefix(&self) -> Cidr {
        self.prefix
    }

    /// How many distinct source addresses the headers name.
    pub fn hosts(&self) -> u128 {
        self.hosts
    }

    /// The source the header of client `client` names.
    pub fn source(&self, client: u64) -> SocketAddr {
        let client = u128::from(client);
        let host = self.first + client % self.hosts;
        let round = client / self.hosts;
        let port = FIRST_PORT + (round % u128::from(u16::MAX - FIRST_PORT + 1)) as u16;
        let ip = match self.prefix.network() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(host as u32)),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(host)),
        };
        SocketAddr::new(ip, port)
    }

    /// The header client `client`'s connection to `server` begins with.
    pub fn header(&self, client: u64, server: &ListenAddr) -> Vec<u8> {
        let source = self.source(client);
        let destination = match server {
            ListenAddr::Tcp(addr) => *addr,
            ListenAddr::Unix(_) => {
                let unspecified = match source.ip() {
                    IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                };
                SocketAddr::new(unspecified, 0)
            }
        };
        match self.version {
            ProxyVersion::V1 => encode_v1(source, destination),
            ProxyVersion::V2 => encode_v2(source, destination),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy_protocol::{parse, Parsed, ProxyHeader};
    use std::collections::BTreeSet;

    fn headers(prefix: &str) -> ProxyHeaders {
        ProxyHeaders::new(ProxyVersion::V2, prefix.parse().unwrap())
    }

    fn ips(h: &ProxyHeaders, clients: std::ops::Range<u64>) -> Vec<String> {
        clients.map(|c| h.source(c).ip().to_string()).collect()
    }

    #[test]
    fn one_address_is_every_clients_source_with_its_own_port() {
        let h = headers("127.0.0.2");
        assert_eq!(h.hosts(), 1);
        assert_eq!(h.source(0), "127.0.0.2:1024".parse().unwrap());
        assert_eq!(h.source(1), "127.0.0.2:1025".parse().unwrap());
        assert_eq!(h.source(64511), "127.0.0.2:65535".parse().unwrap());
        // Past 64,512 clients of one host, the ports go round.
        assert_eq!(h.source(64512), "127.0.0.2:1024".parse().unwrap());
        assert_eq!(headers("::1").source(3), "[::1]:1027".parse().unwrap());
    }

    #[test]
    fn ipv4_prefixes_deal_their_hosts_round_robin_without_network_or_broadcast() {
        let h = headers("10.0.0.0/30");
        assert_eq!(h.hosts(), 2);
        assert_eq!(
            ips(&h, 0..5),
            ["10.0.0.1", "10.0.0.2", "10.0.0.1", "10.0.0.2", "10.0.0.1"]
        );
        assert_eq!(h.source(2).port(), 1025, "second round, second port");
        let h = headers("192.168.7.99/24");
        assert_eq!(h.hosts(), 254);
        assert_eq!(h.source(0).ip().to_string(), "192.168.7.1");
        assert_eq!(h.source(253).ip().to_string(), "192.168.7.254");
        assert_eq!(h.source(254).ip().to_string(), "192.168.7.1");
        let all: BTreeSet<String> = ips(&h, 0..254).into_iter().collect();
        assert_eq!(all.len(), 254);
        // /31 (RFC 3021 point-to-point) and /32: every address.
        assert_eq!(
            ips(&headers("10.0.0.0/31"), 0..3),
            ["10.0.0.0", "10.0.0.1", "10.0.0.0"]
        );
        assert_eq!(headers("0.0.0.0/0").hosts(), (1u128 << 32) - 2);
        assert_eq!(headers("0.0.0.0/0").source(0).ip().to_string(), "0.0.0.1");
        let last = (1u64 << 32) - 3;
        assert_eq!(
            headers("0.0.0.0/0").source(last).ip().to_string(),
            "255.255.255.254"
        );
    }

    #[test]
    fn ipv6_prefixes_skip_only_the_all_zero_host() {
        let h = headers("2001:db8::/126");
        assert_eq!(h.hosts(), 3);
        assert_eq!(
            ips(&h, 0..4),
            ["2001:db8::1", "2001:db8::2", "2001:db8::3", "2001:db8::1"]
        );
        assert_eq!(headers("2001:db8::/127").hosts(), 2);
        assert_eq!(
            ips(&headers("2001:db8::/127"), 0..2),
            ["2001:db8::", "2001:db8::1"]
        );
        assert_eq!(headers("2001:db8::/64").hosts(), u128::from(u64::MAX));
        assert_eq!(headers("::/0").hosts(), u128::MAX);
        assert_eq!(
            headers("::/0").source(u64::MAX).ip().to_string(),
            "0:0:0:1::"
        );
    }

    #[test]
    fn headers_parse_to_their_source_and_the_server() {
        let server: ListenAddr = "127.0.0.1:8085".parse().unwrap();
        for version in [ProxyVersion::V1, ProxyVersion::V2] {
            let h = ProxyHeaders::new(version, "127.0.2.0/24".parse().unwrap());
            for client in [0, 1, 253, 254, 100_000] {
                let bytes = h.header(client, &server);
                assert_eq!(
                    parse(&bytes),
                    Parsed::Complete {
                        header: ProxyHeader::Proxied {
                            source: h.source(client),
                            destination: "127.0.0.1:8085".parse().unwrap(),
                        },
                        len: bytes.len()
                    }
                );
            }
        }
        assert!(headers("10.0.0.1")
            .header(0, &server)
            .starts_with(b"\r\n\r\n\0\r\nQUIT\n"));
        let v1 = ProxyHeaders::new(ProxyVersion::V1, "10.0.0.1".parse().unwrap());
        assert_eq!(
            v1.header(0, &server),
            b"PROXY TCP4 10.0.0.1 127.0.0.1 1024 8085\r\n"
        );
    }

    #[test]
    fn over_a_unix_socket_the_destination_is_unspecified() {
        let server: ListenAddr = "unix:/run/tabecho.sock".parse().unwrap();
        let v1 = ProxyHeaders::new(ProxyVersion::V1, "2001:db8::5".parse().unwrap());
        assert_eq!(
            v1.header(1, &server),
            b"PROXY TCP6 2001:db8::5 :: 1025 0\r\n"
        );
        let v2 = headers("10.0.0.9");
        let Parsed::Complete { header, .. } = parse(&v2.header(0, &server)) else {
            panic!("not complete");
        };
        assert_eq!(
            header,
            ProxyHeader::Proxied {
                source: "10.0.0.9:1024".parse().unwrap(),
                destination: "0.0.0.0:0".parse().unwrap(),
            }
        );
    }

    #[test]
    fn versions_by_name() {
        assert_eq!("v1".parse(), Ok(ProxyVersion::V1));
        assert_eq!("v2".parse(), Ok(ProxyVersion::V2));
        assert!("2"
            .parse::<ProxyVersion>()
            .unwrap_err()
            .contains("v1 or v2"));
        assert_eq!(ProxyVersion::V2.to_string(), "v2");
    }
}
