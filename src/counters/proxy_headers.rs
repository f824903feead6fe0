//! ProxyHeaders: how the PROXY headers of trusted peers' connections ended, by result
//! (`tabecho_proxy_headers_total{result=...}`).

use serde::Serialize;

use crate::proxy_protocol::Invalid;

/// How one connection's PROXY header ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderResult {
    /// A header naming the real client: served as that client.
    Proxied,
    /// v2 `LOCAL` or v1 `UNKNOWN` (a balancer's health check): served as from the proxy.
    Local,
    /// No whole header within `--proxy-protocol-timeout`: closed.
    Timeout,
    /// The peer closed or reset before its whole header: closed.
    Closed,
    /// A shutdown began before its whole header: closed.
    Shutdown,
    /// The buffer budget had no room for its header's bytes: closed.
    MemoryBudget,
    /// An invalid header: closed at once, unanswered.
    Invalid(Invalid),
}

/// Results that are not an [`Invalid`] kind, in label order.
const OUTCOMES: [HeaderResult; 6] = [
    HeaderResult::Proxied,
    HeaderResult::Local,
    HeaderResult::Timeout,
    HeaderResult::Closed,
    HeaderResult::Shutdown,
    HeaderResult::MemoryBudget,
];

/// Every result: the outcomes, then each invalid kind.
pub const RESULTS: usize = OUTCOMES.len() + Invalid::ALL.len();

impl HeaderResult {
    /// The metrics label (`proxied`, `local`, `timeout`, `closed`, or the invalid kind's).
    pub fn as_str(self) -> &'static str {
        match self {
            HeaderResult::Proxied => "proxied",
            HeaderResult::Local => "local",
            HeaderResult::Timeout => "timeout",
            HeaderResult::Closed => "closed",
            HeaderResult::Shutdown => "shutdown",
            HeaderResult::MemoryBudget => "memory_budget",
            HeaderResult::Invalid(invalid) => invalid.as_str(),
        }
    }

    /// Every result, in the order of [`ProxyHeaders`]' counts.
    pub fn all() -> impl Iterator<Item = HeaderResult> {
        OUTCOMES
            .into_iter()
            .chain(Invalid::ALL.into_iter().map(HeaderResult::Invalid))
    }

    fn index(self) -> usize {
        match self {
            HeaderResult::Invalid(invalid) => {
                OUTCOMES.len() + Invalid::ALL.iter().position(|&i| i == invalid).unwrap_or(0)
            }
            outcome => OUTCOMES.iter().position(|&o| o == outcome).unwrap_or(0),
        }
    }
}

/// Headers ended, by result. Serialized as an object of label to count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyHeaders {
    counts: [u64; RESULTS],
}

impl ProxyHeaders {
    pub fn count(&mut self, result: HeaderResult) {
        self.counts[result.index()] += 1;
    }

    pub fn get(&self, result: HeaderResult) -> u64 {
        self.counts[result.index()]
    }

    /// Every header's count, all results together.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn add(&mut self, other: &ProxyHeaders) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts) {
            *mine += theirs;
        }
    }
}

impl Serialize for ProxyHeaders {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(RESULTS))?;
        for result in HeaderResult::all() {
            map.serialize_entry(result.as_str(), &self.get(result))?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_result_has_its_own_count_and_label() {
        let mut h = ProxyHeaders::default();
        let all: Vec<HeaderResult> = HeaderResult::all().collect();
        assert_eq!(all.len(), RESULTS);
        for (i, &r) in all.iter().enumerate() {
            for _ in 0..=i {
                h.count(r);
            }
        }
        for (i, &r) in all.iter().enumerate() {
            assert_eq!(h.get(r), i as u64 + 1, "{}", r.as_str());
        }
        let labels: std::collections::HashSet<_> = all.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), RESULTS, "labels are distinct");
    }
}
