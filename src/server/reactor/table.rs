//! The connection table: a reactor's connections by slab key, the source each was admitted
//! under, the real client a PROXY header named, each one's id and opening time (what the
//! admin endpoint lists), and the lists of those to serve again without a new event (the
//! ready list, and those that waited for room under the buffer budget).
//!
//! # Invariants
//! - With a per-source limit, `sources[key]` is always the source the connection in slot
//!   `key` was admitted under, and `None` for a vacant slot: set by [`ConnectionTable::
//!   insert`], taken by [`ConnectionTable::remove`], so each release names what its
//!   admission counted ([`ConnectionTable::all_released`] checks it when the loop ends).
//!   Kept beside the slab, not in `Connection`, so a connection stays small and a server
//!   without the limit pays nothing (`sources` stays empty).
//! - `clients[key]` is always the real client a PROXY header named for the connection in
//!   slot `key`, or `None` (no header, `LOCAL`, or a vacant slot): set after the insert,
//!   taken by the remove, like the source. With trace logging on, the same client is
//!   recorded by descriptor for the connection's trace lines (`server::client_names`).
//! - `opened[key]` is always the id and opening time of the connection in slot `key`
//!   (stale for a vacant slot): set by [`ConnectionTable::insert`] and never read on a
//!   frame's path. Kept beside the slab for the same reason as `sources`: `Connection`
//!   stays small and the frame path never touches it.
//! - Ready-list and waiting entries are keys, and may be stale: one for a key closed
//!   earlier in the turn finds the slot vacant (skipped) or reused (one spurious read
//!   that returns WouldBlock).

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};

use slab::Slab;

use crate::server::client_names;
use crate::server::conn_id::ConnIds;
use crate::server::connection::Connection;
use crate::server::source::Source;
use crate::stream::Stream;

/// What a connection's admission recorded, handed back when it leaves the table.
pub(super) struct Admission {
    /// The source it counts against (with a per-source limit): to release.
    pub(super) source: Option<Source>,
    /// The real client its PROXY header named, if any.
    pub(super) client: Option<SocketAddr>,
}

/// A connection's id and when it opened: what the admin endpoint lists besides its state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Opened {
    /// Its id ([`ConnIds`]): unique for the process's life, kept across an upgrade.
    pub(super) id: u64,
    /// When it was accepted, in microseconds of the reactor's clock: negative for a
    /// connection an upgrade moved in that opened before this reactor's clock began.
    pub(super) at_us: i64,
}

impl Opened {
    /// Its age at `now_us` (the reactor's clock), in microseconds.
    pub(super) fn age_us(&self, now_us: u64) -> u64 {
        let now = i64::try_from(now_us).unwrap_or(i64::MAX);
        u64::try_from(now.saturating_sub(self.at_us)).unwrap_or(0)
    }

    /// A connection that opened `age_us` before `now_us`.
    pub(super) fn aged(id: u64, age_us: u64, now_us: u64) -> Opened {
        let now = i64::try_from(now_us).unwrap_or(i64::MAX);
        let age = i64::try_from(age_us).unwrap_or(i64::MAX);
        Opened {
            id,
            at_us: now.saturating_sub(age),
        }
    }
}

/// A reactor's connections and the keys to serve again.
pub(super) struct ConnectionTable {
    /// The connections, by the key their token carries.
    slab: Slab<Connection>,
    /// With `--max-connections-per-source`, the source each connection counts against, by
    /// slab key; grown to the highest key used. Empty without the limit.
    sources: Vec<Option<Source>>,
    /// The real client of each connection a PROXY header named, by slab key; `None` for
    /// the others (their peer is their client). Grown to the highest key used; empty
    /// without `--proxy-protocol-from`.
    clients: Vec<Option<SocketAddr>>,
    /// Each connection's id and opening time, by slab key; grown to the highest key used.
    opened: Vec<Opened>,
    /// The ids this reactor gives its new connections.
    ids: ConnIds,
    /// With `--max-connections-per-source`: the IPv6 prefix length a source is counted by
    /// (`--source-prefix-v6`). `None` without the limit: no source is computed at all.
    source_prefix_v6: Option<u8>,
    /// Connections to read again before the next poll (read budget spent, or resumed).
    pub(super) ready: Vec<usize>,
    /// Spare vector swapped with `ready` while it is walked: both keep their buffers.
    pub(super) ready_spare: Vec<usize>,
    /// Connections whose I/O found no room under the budget once this turn's closes were
    /// spent: served again next turn, for reading and writing (their edge is used up).
    pub(super) waiting_for_room: Vec<usize>,
}

impl ConnectionTable {
    /// An empty table with `reserved` slots (address space only until used), numbering
    /// its connections by `ids`; sources are computed only with a `source_prefix_v6` (the
    /// per-source limit is on).
    pub(super) fn new(
        reserved: usize,
        source_prefix_v6: Option<u8>,
        ids: ConnIds,
    ) -> ConnectionTable {
        ConnectionTable {
            slab: Slab::with_capacity(reserved),
            sources: Vec::new(),
            clients: Vec::new(),
            // Address space only, as the slab's: a page is touched when a key reaches it.
            opened: Vec::with_capacity(reserved),
            ids,
            source_prefix_v6,
            ready: Vec::new(),
            ready_spare: Vec::new(),
            waiting_for_room: Vec::new(),
        }
    }

    #[inline(always)]
    pub(super) fn get(&self, key: usize) -> Option<&Connection> {
        self.slab.get(key)
    }

    #[inline(always)]
    pub(super) fn get_mut(&mut self, key: usize) -> Option<&mut Connection> {
        self.slab.get_mut(key)
    }

    pub(super) fn len(&self) -> usize {
        self.slab.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (usize, &Connection)> {
        self.slab.iter()
    }

    /// Every key in use, to act on each while the table changes.
    pub(super) fn keys(&self) -> Vec<usize> {
        self.slab.iter().map(|(key, _)| key).collect()
    }

    /// The key the next [`ConnectionTable::insert`] takes.
    pub(super) fn vacant_key(&self) -> usize {
        self.slab.vacant_key()
    }

    /// Numbers the connections from now on by `ids` (an upgrade's new process: from its
    /// own base). Before any is inserted.
    pub(super) fn set_ids(&mut self, ids: ConnIds) {
        debug_assert!(self.slab.is_empty(), "ids changed with connections open");
        self.ids = ids;
    }

    /// A new connection's id, and its opening time `at_us` (the reactor's clock: now, or
    /// its accept for one that waited for its PROXY header).
    pub(super) fn open_at(&mut self, at_us: u64) -> Opened {
        Opened {
            id: self.ids.take(),
            at_us: i64::try_from(at_us).unwrap_or(i64::MAX),
        }
    }

    /// Connection `key`'s id and opening time (stale if the slot is vacant).
    pub(super) fn opened(&self, key: usize) -> Opened {
        self.opened.get(key).copied().unwrap_or_default()
    }

    /// Adds `conn`, admitted under `source`, opened as `opened` says, in the slot
    /// `vacant_key` named; returns its key and the connection.
    pub(super) fn insert(
        &mut self,
        conn: Connection,
        source: Option<Source>,
        opened: Opened,
    ) -> (usize, &mut Connection) {
        let key = self.slab.vacant_key();
        if self.opened.len() <= key {
            self.opened.resize(key + 1, Opened::default());
        }
        self.opened[key] = opened;
        if source.is_some() {
            if self.sources.len() <= key {
                self.sources.resize(key + 1, None);
            }
            debug_assert!(
                self.sources[key].is_none(),
                "slot {key} still holds the source of a closed connection"
            );
            self.sources[key] = source;
        }
        let entry = self.slab.vacant_entry();
        (key, entry.insert(conn))
    }

    /// Takes connection `key` out, with what its admission recorded; `None` if the slot
    /// is vacant (closed earlier in this turn).
    pub(super) fn remove(&mut self, key: usize) -> Option<(Connection, Admission)> {
        let conn = self.slab.try_remove(key)?;
        let source = self.sources.get_mut(key).and_then(Option::take);
        let client = self.clients.get_mut(key).and_then(Option::take);
        if client.is_some() {
            client_names::forget(conn.stream().as_fd().as_raw_fd());
        }
        Some((conn, Admission { source, client }))
    }

    /// Records connection `key`'s real client, as its PROXY header named it (`None`: the
    /// header said to serve it as from the proxy).
    pub(super) fn set_client(&mut self, key: usize, client: Option<SocketAddr>) {
        if client.is_none() && self.clients.len() <= key {
            return;
        }
        if self.clients.len() <= key {
            self.clients.resize(key + 1, None);
        }
        self.clients[key] = client;
        if let (Some(client), Some(conn)) = (client, self.slab.get(key)) {
            client_names::record(conn.stream().as_fd().as_raw_fd(), client);
        }
    }

    /// The IPv6 prefix length sources are counted by; `None` without a per-source limit.
    pub(super) fn source_prefix_v6(&self) -> Option<u8> {
        self.source_prefix_v6
    }

    /// The source a connection counts against under `--max-connections-per-source`
    /// (`None` without the limit: nothing is computed); `peer` is what accept returned,
    /// if it was accepted here. An error if it is gone before it could be counted.
    pub(super) fn source_of(
        &self,
        stream: &Stream,
        peer: Option<SocketAddr>,
    ) -> io::Result<Option<Source>> {
        match self.source_prefix_v6 {
            None => Ok(None),
            Some(prefix_len) => Source::of_stream(stream, peer, prefix_len).map(Some),
        }
    }

    /// The real client of connection `key`, as the admin endpoint lists and filters it: the
    /// one place it is computed. The client its PROXY header named, if any; else its
    /// socket's TCP peer (`None` for a Unix peer, or a peer gone). One `getpeername` per
    /// call for a direct client: a listing calls it for the rows it returns, and for every
    /// connection only when it filters by `source`.
    pub(super) fn client_of(&self, key: usize) -> Option<SocketAddr> {
        if let Some(Some(client)) = self.clients.get(key) {
            return Some(*client);
        }
        self.slab.get(key)?.stream().tcp_peer_addr()
    }

    /// Connections are left to serve without a new event.
    pub(super) fn has_work(&self) -> bool {
        !self.ready.is_empty() || !self.waiting_for_room.is_empty()
    }

    /// Every admission has been released: no connection is left and no source counted.
    pub(super) fn all_released(&self) -> bool {
        self.slab.is_empty() && self.sources.iter().all(Option::is_none)
    }
}
