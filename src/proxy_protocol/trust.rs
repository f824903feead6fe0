//! TrustedProxies: the peers whose connections must begin with a PROXY header, as
//! `--proxy-protocol-from CIDR[,CIDR...]` names them (`unix` for peers on a Unix socket).
//!
//! # Invariants
//! - Always at least one entry: an empty list is refused when parsed, so "trusts nobody"
//!   is written by having no `TrustedProxies` at all (the flag absent).
//! - `networks` always holds each network once, in the order first written.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::cidr::Cidr;

/// The word for peers on a Unix socket (a balancer on the same host,
/// `server ... unix@PATH send-proxy-v2` in HAProxy).
const UNIX: &str = "unix";

/// What the entries of a list may be, for its errors (clap prints the flag and its value
/// before them).
const ENTRIES: &str = "entries are addresses and ADDR/PREFIX networks (10.0.0.0/8, ::1) or \
                       `unix`, separated by commas";

/// Which peers are trusted to say, in a PROXY header, whom they relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedProxies {
    /// The IPv4 and IPv6 networks trusted, each once.
    networks: Vec<Cidr>,
    /// Every peer on a Unix socket is trusted.
    unix: bool,
}

impl TrustedProxies {
    /// Whether a TCP peer at `ip` is trusted. An IPv4-mapped IPv6 address is its IPv4 one
    /// (a dual-stack listener's IPv4 peer), as [`Cidr::contains`] matches it.
    pub fn trusts_ip(&self, ip: IpAddr) -> bool {
        self.networks.iter().any(|net| net.contains(ip))
    }

    /// Whether peers on a Unix socket are trusted.
    pub fn trusts_unix(&self) -> bool {
        self.unix
    }

    /// The networks trusted, in the order written.
    pub fn networks(&self) -> &[Cidr] {
        &self.networks
    }
}

impl FromStr for TrustedProxies {
    type Err = String;

    /// A comma-separated list of `ADDR/PREFIX` networks, bare addresses and the word
    /// `unix`, e.g. `10.0.0.0/8,::1,unix`. Spaces around an entry are allowed; an empty
    /// entry is not.
    fn from_str(s: &str) -> Result<TrustedProxies, String> {
        let mut networks: Vec<Cidr> = Vec::new();
        let mut unix = false;
        for entry in s.split(',').map(str::trim) {
            if entry.is_empty() {
                return Err(format!("an empty entry; {ENTRIES}"));
            }
            if entry == UNIX {
                unix = true;
                continue;
            }
            let net: Cidr = entry.parse().map_err(|e| format!("{e}; {ENTRIES}"))?;
            if !networks.contains(&net) {
                networks.push(net);
            }
        }
        Ok(TrustedProxies { networks, unix })
    }
}

impl fmt::Display for TrustedProxies {
    /// The list as it parses back: networks in order, then `unix` if trusted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        for net in &self.networks {
            write!(f, "{sep}{net}")?;
            sep = ",";
        }
        if self.unix {
            write!(f, "{sep}{UNIX}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(s: &str) -> TrustedProxies {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks_and_addresses_of_both_families() {
        let t = trusted("10.0.0.0/8,192.168.1.7,2001:db8::/32,[::1]");
        assert!(t.trusts_ip(ip("10.255.0.1")));
        assert!(t.trusts_ip(ip("192.168.1.7")));
        assert!(!t.trusts_ip(ip("192.168.1.8")));
        assert!(t.trusts_ip(ip("2001:db8:1::5")));
        assert!(t.trusts_ip(ip("::1")));
        assert!(!t.trusts_ip(ip("::2")));
        assert!(!t.trusts_ip(ip("127.0.0.1")));
        assert!(!t.trusts_unix());
    }

    #[test]
    fn an_ipv4_mapped_peer_is_its_ipv4_address() {
        let t = trusted("127.0.0.1");
        assert!(t.trusts_ip(ip("::ffff:127.0.0.1")));
        assert!(!t.trusts_ip(ip("::ffff:127.0.0.4")));
    }

    #[test]
    fn unix_alone_or_with_networks() {
        let t = trusted("unix");
        assert!(t.trusts_unix());
        assert!(!t.trusts_ip(ip("127.0.0.1")));
        assert!(t.networks().is_empty());
        let t = trusted("127.0.0.0/8, unix");
        assert!(t.trusts_unix());
        assert!(t.trusts_ip(ip("127.0.0.4")));
    }

    #[test]
    fn display_parses_back_and_repeats_are_kept_once() {
        let t = trusted(" unix , 10.1.2.3/8,10.0.0.0/8,::1,unix");
        assert_eq!(t.to_string(), "10.0.0.0/8,::1/128,unix");
        assert_eq!(trusted(&t.to_string()), t);
        assert_eq!(t.networks().len(), 2);
    }

    #[test]
    fn bad_lists_say_which_entry_and_why() {
        for (input, says) in [
            ("", "an empty entry"),
            ("10.0.0.0/8,", "an empty entry"),
            (",unix", "an empty entry"),
            ("10.0.0.0/8,,unix", "an empty entry"),
            ("10.0.0.0/33", "the prefix length must be 0 to 32"),
            ("::/129", "the prefix length must be 0 to 128"),
            ("localhost", "`localhost`: not an IP address"),
            ("UNIX", "`UNIX`: not an IP address"),
            ("10.0.0.0/8 unix", "`10.0.0.0/8 unix`: the prefix length"),
            ("unix:/run/haproxy.sock", "not an IP address"),
        ] {
            let err = input.parse::<TrustedProxies>().unwrap_err();
            assert!(err.contains(says), "{input:?}: {err}");
            assert!(err.ends_with(ENTRIES), "{input:?}: {err}");
        }
    }
}
