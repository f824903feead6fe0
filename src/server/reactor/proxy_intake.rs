//! The PROXY protocol intake (`--proxy-protocol-from`): a connection from a trusted peer
//! (a balancer) waits here, out of the connection table, until its header names the real
//! client; then it is admitted under that client's source and served like any other, the
//! bytes that came after the header first. Other peers never come here: their bytes are
//! frames. The parser is pure (`crate::proxy_protocol`); this is its reactor's side.
//!
//! ```text
//!   accept (trusted peer) → admit_unsourced (the global limit) → PROXY token, timer
//!   PROXY token  → read at most what the header may still need; parse what is held:
//!                  Incomplete → wait; Invalid → close, unanswered;
//!                  Complete   → admit_source(real source): refused → `error:` line and
//!                               lingering close; else into the table, the bytes after
//!                               the header answered, then read on (ready list)
//!   TimerKey::Proxy(key) → no whole header in --proxy-protocol-timeout: close
//! ```
//!
//! # Invariants
//! - A pending connection holds at most [`MAX_HEADER_LEN`] bytes (the parser says Invalid
//!   past any header's length), charged to the buffer budget like a partial frame; and
//!   exactly one armed timer, its header deadline.
//! - It is admitted under the global limit only; its source is counted when its header
//!   names it, so every release names what its admission counted.
//! - It is read only up to what its header may still need: the client's bytes after the
//!   header stay in the socket, or, read with the header's last bytes, are answered as
//!   the connection's first input.

use std::io::{self, Read};
use std::net::SocketAddr;
use std::time::Instant;

use log::debug;
use mio::{Interest, Token};
use slab::Slab;

use super::{Reactor, TimerKey};
use crate::counters::HeaderResult;
use crate::proxy_protocol::{self, Parsed, ProxyHeader, TrustedProxies, MAX_HEADER_LEN};
use crate::server::connection::Connection;
use crate::server::source::Source;
use crate::stream::Stream;
use crate::timer_wheel::TimerId;

/// Connections a reactor lets wait for their header at once; one more is closed. Far
/// above what a balancer has in flight (a header comes with the connection's first
/// bytes), and it bounds the timer values and tokens the intake takes.
pub(super) const MAX_PENDING: usize = 1 << 16;

/// Pending connection `key` has token `PROXY_TOKENS + key` (`key < MAX_PENDING`): above
/// every echo connection's key, below the metrics connections' tokens.
pub(super) const PROXY_TOKENS: usize = super::HTTP_TOKENS - MAX_PENDING;

/// A connection waiting for its header.
struct Pending {
    stream: Stream,
    /// The bytes received so far: less than a whole header.
    held: Vec<u8>,
    /// Its header deadline.
    timer: TimerId,
    /// When it was accepted (the reactor's clock): its age counts from then.
    accepted_us: u64,
}

/// The connections from trusted peers whose header is not complete yet.
pub(super) struct ProxyIntake {
    /// Who is trusted to send a header; `None`: nobody, the intake is never used.
    trusted: Option<TrustedProxies>,
    pending: Slab<Pending>,
}

impl ProxyIntake {
    pub(super) fn new(trusted: Option<TrustedProxies>) -> ProxyIntake {
        ProxyIntake {
            trusted,
            pending: Slab::new(),
        }
    }

    /// Whether connection `stream`, from `peer` (what accept returned for TCP), must
    /// begin with a header.
    #[inline]
    pub(super) fn trusts(&self, stream: &Stream, peer: Option<SocketAddr>) -> bool {
        let Some(trusted) = &self.trusted else {
            return false;
        };
        match stream {
            Stream::Tcp(s) => peer
                .or_else(|| s.peer_addr().ok())
                .is_some_and(|addr| trusted.trusts_ip(addr.ip())),
            Stream::Unix(_) => trusted.trusts_unix(),
        }
    }

    /// The pending connections' keys.
    pub(super) fn keys(&self) -> Vec<usize> {
        self.pending.iter().map(|(key, _)| key).collect()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The bytes the pending connections hold (charged to the budget).
    pub(super) fn held_bytes(&self) -> usize {
        self.pending.iter().map(|(_, p)| p.held.capacity()).sum()
    }
}

impl Reactor {
    /// Takes a connection from a trusted peer, admitted under the global limit: it waits
    /// for its header (read at once: it may have come with the connection).
    pub(super) fn take_in_proxied(&mut self, mut stream: Stream) {
        if self.life.state.closes_arrivals() {
            // Dealt just before the shutdown began: nothing is owed to it yet.
            self.cx.stats.proxy_headers.count(HeaderResult::Shutdown);
            self.shared.release(None);
            return;
        }
        let intake = &mut self.acceptor.intake;
        if intake.pending.len() >= MAX_PENDING {
            debug!(
                "closed {}: too many PROXY headers pending",
                stream.peer_name()
            );
            self.shared.release(None);
            return;
        }
        let key = intake.pending.vacant_key();
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(PROXY_TOKENS + key),
            Interest::READABLE,
        ) {
            debug!("register: {e}; dropping connection");
            self.shared.release(None);
            return;
        }
        let accepted_us = self.cx.now_us;
        let deadline =
            accepted_us.saturating_add(super::clock::micros(self.config.proxy_protocol_timeout));
        let timer = self.timers.arm_at(deadline, TimerKey::Proxy(key));
        self.acceptor.intake.pending.insert(Pending {
            stream,
            held: Vec::new(),
            timer,
            accepted_us,
        });
        self.on_proxy_event(key);
    }

    /// Reads pending connection `key`'s header as far as it has come.
    pub(super) fn on_proxy_event(&mut self, key: usize) {
        loop {
            if !self.acceptor.intake.pending.contains(key) {
                return; // closed earlier in this turn
            }
            // Room for a whole header under the lease, as for a connection's I/O (the
            // headroom kept free is one connection's worst case, far above a header).
            if !self.budget.make_room() {
                return self.end_pending(key, HeaderResult::MemoryBudget);
            }
            let Some(pending) = self.acceptor.intake.pending.get_mut(key) else {
                return;
            };
            // At most what a header may still need: what follows stays in the socket.
            let want = MAX_HEADER_LEN - pending.held.len();
            let read_buf = &mut self.cx.read_buf[..want];
            let n = match pending.stream.read(read_buf) {
                Ok(0) => return self.end_pending(key, HeaderResult::Closed),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return self.end_pending(key, HeaderResult::Closed),
            };
            let before = pending.held.capacity();
            pending.held.extend_from_slice(&read_buf[..n]);
            let after = pending.held.capacity();
            // Charged like a partial frame (at most MAX_HEADER_LEN, under the headroom
            // every turn keeps free in the lease).
            self.budget.account(before, after);
            self.cx.stats.bytes_in += n as u64;
            match proxy_protocol::parse(&pending.held) {
                Parsed::Incomplete => continue,
                Parsed::Invalid(invalid) => {
                    return self.end_pending(key, HeaderResult::Invalid(invalid))
                }
                Parsed::Complete { header, len } => return self.header_read(key, header, len),
            }
        }
    }

    /// Pending connection `key`'s header deadline has passed.
    pub(super) fn on_proxy_timer(&mut self, key: usize) {
        if let Some(pending) = self.acceptor.intake.pending.get_mut(key) {
            pending.timer = TimerId::NONE; // fired: nothing to cancel
            self.end_pending(key, HeaderResult::Timeout);
        }
    }

    /// Takes pending connection `key` out of the intake: out of the poll and the wheel, its
    /// bytes given back to the budget.
    fn take_pending(&mut self, key: usize) -> Option<Pending> {
        let mut pending = self.acceptor.intake.pending.try_remove(key)?;
        if pending.timer != TimerId::NONE {
            self.timers.cancel(pending.timer);
        }
        let _ = self.poll.registry().deregister(&mut pending.stream);
        self.budget.release(pending.held.capacity());
        self.budget.settle_lease_unchecked(self.charged());
        Some(pending)
    }

    /// Closes pending connection `key`, unanswered, for `result`.
    pub(super) fn end_pending(&mut self, key: usize, result: HeaderResult) {
        if let Some(Pending { stream, .. }) = self.take_pending(key) {
            debug!(
                "closed {}: PROXY header {}",
                stream.peer_name(),
                result.as_str()
            );
            self.cx.stats.proxy_headers.count(result);
            self.shared.release(None);
        }
    }

    /// Pending connection `key` sent a whole header of `len` bytes: admitted under the
    /// source it names, and served.
    fn header_read(&mut self, key: usize, header: ProxyHeader, len: usize) {
        let Some(Pending {
            stream,
            held,
            accepted_us,
            ..
        }) = self.take_pending(key)
        else {
            return;
        };
        let (client, result) = match header {
            ProxyHeader::Proxied { source, .. } => (Some(source), HeaderResult::Proxied),
            ProxyHeader::Local => (None, HeaderResult::Local),
        };
        self.cx.stats.proxy_headers.count(result);
        let source = match (self.table.source_prefix_v6(), client) {
            (None, _) => None,
            (Some(prefix_len), Some(addr)) => Some(Source::of_addr(addr, prefix_len)),
            // Served as from the proxy itself: counted as the proxy.
            (Some(_), None) => match self.table.source_of(&stream, None) {
                Ok(source) => source,
                Err(e) => {
                    debug!("dropped a connection: its source is unknown: {e}");
                    self.shared.release(None);
                    return;
                }
            },
        };
        if let Err(refusal) = self.shared.admit_source(source, Instant::now()) {
            self.shared.release(None);
            self.refuse(stream, source, refusal);
            return;
        }
        if log::log_enabled!(log::Level::Debug) {
            match client {
                Some(client) => debug!("PROXY header: {client} via {}", stream.peer_name()),
                None => debug!("PROXY header: local, from {}", stream.peer_name()),
            }
        }
        let mut first = held;
        first.drain(..len);
        let has_first = !first.is_empty();
        let now_us = self.cx.now_us;
        let opened = self.table.open_at(accepted_us);
        let Some(key) = self.insert_connection(stream, source, opened, |s| {
            Connection::with_first_input(s, now_us, first)
        }) else {
            return;
        };
        self.cx.stats.accepted += 1;
        self.table.set_client(key, client);
        if has_first {
            // Answered now (they are charged, held as unanswered input); then it reads on.
            self.on_connection_event(key, false, true);
        } else {
            // Bytes may wait in the socket, and no new edge announces them.
            self.table.ready.push(key);
        }
    }
}
