//! ServerConfig: every tunable of the server, with its documented default.

use std::time::Duration;

use crate::addr::{ListenAddr, MAX_DURATION};
use crate::protocol;
use crate::proxy_protocol::TrustedProxies;
use crate::size::{self, Size};

/// `--source-prefix-v6`'s default: a /64 is what one subscriber or one LAN gets (RFC
/// 6177), and one host may pick any address inside it, so counting /128s would let one
/// host open as many sources as it likes.
pub const DEFAULT_SOURCE_PREFIX_V6: u8 = 64;

/// `--proxy-protocol-timeout`'s default: the PROXY protocol's specification suggests a
/// receiver wait 3 s for the header; a balancer sends it with the connection's first bytes.
pub const DEFAULT_PROXY_PROTOCOL_TIMEOUT: Duration = Duration::from_secs(3);

/// The original Go example's address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8085";
/// One reactor: the original design, a single thread; `--threads` adds more.
pub const DEFAULT_THREADS: usize = 1;
/// The original's `SetReadDeadline(2 * time.Second)`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(2);
/// 64 KiB, as Redis's inline-command limit: large enough for any sane message, small
/// enough that a connection's memory stays bounded.
pub const DEFAULT_MAX_FRAME: usize = 64 * 1024;
/// Pending output past which the server stops answering and reading a peer that does not
/// read; also the largest read. 32 KiB: reads this large cost no more CPU per byte than
/// 64 KiB reads with 64 KiB frames, and a flooding peer that never reads then holds at
/// most 2 x 32 KiB (replies plus unanswered input, see `server::connection`). Bulk output
/// waits in the kernel's socket buffer, not here. (HAProxy serves with 16 KiB buffers.)
pub const DEFAULT_HIGH_WATER: usize = 32 * 1024;
/// 256 MiB: the bytes all connection buffers may hold at once, about 4,000 connections at
/// their worst under the defaults, and 1% of this 24 GiB machine. `tabecho serve` takes
/// less in a cgroup whose memory limit is small (`sizing::buffer_budget`).
pub const DEFAULT_MAX_BUFFER_MEMORY: usize = 256 * 1024 * 1024;
/// SO_SNDBUF asked for every accepted TCP connection (`--sndbuf`). Linux autotunes an
/// uncapped send buffer up to `tcp_wmem[2]` (4 MiB here): 500 peers that never read then
/// pinned 1.5 GB of kernel memory, past `tcp_mem`'s pressure mark, and the kernel
/// throttled every TCP socket on the machine (healthy p99 2.2 s). 128 KiB kept bulk
/// pipelining of 64 KiB frames within 5% of autotuning (BENCHMARKS.md, section 13); 64 KiB
/// cost 20% of it. The kernel doubles the value for its bookkeeping (socket(7)).
pub const DEFAULT_SEND_BUFFER: usize = 128 * 1024;
/// SO_RCVBUF asked for every accepted TCP connection (`--rcvbuf`), for the same reason:
/// uncapped, a peer the server has stopped reading (backpressure) fills up to
/// `tcp_rmem[2]` (32 MiB here). 128 KiB for the same measurement: with 64 KiB, 64 KiB
/// frames lost 20% of their throughput.
pub const DEFAULT_RECV_BUFFER: usize = 128 * 1024;
/// How long a shutdown waits for replies to drain before it closes what is left.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// How long a closing connection (frame too long, shutdown) discards input after its
/// write side is shut, so the peer reads the last bytes instead of a reset (`--linger`).
pub const DEFAULT_LINGER: Duration = Duration::from_secs(1);
/// The largest value of any per-connection size in bytes (`--max-frame`, `--high-water`,
/// `--sndbuf`, `--rcvbuf`): 1 GiB. Far above any sane setting, and low enough that one
/// connection's pending output (at most `--high-water` + one reply + an error line, under
/// 2 GiB + 76 bytes) always fits the `u32` the connection counts it in, that the sum of
/// the worst cases cannot overflow, and that the kernel takes the socket buffer sizes
/// (an `int`, doubled) as given.
pub const MAX_CONNECTION_BYTES: usize = 1 << 30;
/// File descriptors kept back from `--max-connections`' default for the listener, the
/// poll instance, logs and the accepts in flight, so the polite limit fires before EMFILE.
pub const FD_RESERVE: u64 = 32;

/// How the server runs. Build with [`ServerConfig::new`] and adjust fields.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen.
    pub listen: ListenAddr,
    /// Reactors, each a thread with its own poll, connections and timers (`--threads`).
    pub threads: usize,
    /// Set SO_REUSEPORT on the TCP listener(s), so other processes that set it may share
    /// the port (`--reuseport`); implied between the reactors of one server.
    pub reuse_port: bool,
    /// A connection with no progress (frame received, reply bytes written) for this long is closed.
    pub idle_timeout: Duration,
    /// The longest frame answered; longer ones get an error and a close.
    pub max_frame: usize,
    /// Connections served at once; `None` means the descriptor limit less [`FD_RESERVE`].
    pub max_connections: Option<usize>,
    /// Connections one source (an IPv4 address, an IPv6 network, a Unix peer's uid) may
    /// have open at once; `None` (the default) means no such limit: clients behind one NAT
    /// share an address (docs/PROTOCOL.md "Connections per source").
    pub max_connections_per_source: Option<u32>,
    /// The leading bits of an IPv6 address that name its source (0 to 128).
    pub source_prefix_v6: u8,
    /// The peers (balancers) that begin each connection with a PROXY protocol header
    /// naming the real client (`--proxy-protocol-from`); `None`, the default: no peer's
    /// bytes are ever read as a header.
    pub proxy_protocol_from: Option<TrustedProxies>,
    /// How long a trusted peer has to send its whole header; then the connection closes.
    pub proxy_protocol_timeout: Duration,
    /// Pending output at which answering and reading a connection pause (resume below
    /// half); also the largest read.
    pub high_water: usize,
    /// The most bytes all connection buffers (partial frames, unanswered input, pending
    /// replies) may hold at once; at the budget the largest holders are closed.
    pub max_buffer_memory: usize,
    /// Log a line of counters this often, if set.
    pub stats_interval: Option<Duration>,
    /// Longest a shutdown waits for replies to drain.
    pub shutdown_grace: Duration,
    /// Longest a closing connection discards input after shutting its write side
    /// (`--linger`).
    pub linger: Duration,
    /// SO_SNDBUF of accepted TCP connections, set on the listener (they inherit it);
    /// 0 leaves the kernel's autotuning (or what systemd set on its socket).
    pub send_buffer: usize,
    /// SO_RCVBUF of accepted TCP connections, as `send_buffer`.
    pub recv_buffer: usize,
}

impl ServerConfig {
    /// The most buffer memory one connection can be charged, in bytes: pending output up to
    /// the high-water mark plus one reply that crosses it and an error line, either a
    /// partial frame (at most `max_frame`) or unanswered input (at most one read, at most
    /// the high-water mark), and what its kernel queues hold while it is stalled
    /// ([`ServerConfig::kernel_held_when_stalled`]). See `server::connection` and
    /// docs/PROTOCOL.md. `usize::MAX` if that does not fit a `usize`, which
    /// [`ServerConfig::validate`] refuses.
    pub fn max_held_per_connection(&self) -> usize {
        self.checked_max_held_per_connection().unwrap_or(usize::MAX)
    }

    /// [`ServerConfig::max_held_per_connection`], `None` on overflow.
    fn checked_max_held_per_connection(&self) -> Option<usize> {
        let output = self
            .high_water
            .checked_add(self.max_frame)?
            .checked_add(protocol::reply_len(0))?
            .checked_add(protocol::MAX_ERROR_LINE)?;
        let input = self.max_frame.max(self.high_water);
        output
            .checked_add(input)?
            .checked_add(self.checked_kernel_held_when_stalled()?)
    }

    /// What the kernel holds for one connection whose socket refuses replies, charged to
    /// the buffer budget while it does: its send queue is full, and its receive queue
    /// fills while the server does not read it. Linux doubles SO_SNDBUF and SO_RCVBUF for
    /// its bookkeeping (socket(7)), so this is 2 x (`send_buffer` + `recv_buffer`). A
    /// buffer left to autotuning (0) is not charged: its size is the kernel's to choose.
    /// `usize::MAX` if that does not fit a `usize`, which [`ServerConfig::validate`] refuses.
    pub fn kernel_held_when_stalled(&self) -> usize {
        self.checked_kernel_held_when_stalled()
            .unwrap_or(usize::MAX)
    }

    /// [`ServerConfig::kernel_held_when_stalled`], `None` on overflow.
    fn checked_kernel_held_when_stalled(&self) -> Option<usize> {
        self.send_buffer
            .checked_add(self.recv_buffer)?
            .checked_mul(2)
    }

    /// The smallest `max_buffer_memory` [`ServerConfig::validate`] accepts: one
    /// connection's worst case for every reactor and one more. `None` on overflow, which
    /// `validate` refuses.
    pub fn least_buffer_memory(&self) -> Option<usize> {
        self.threads
            .checked_add(1)?
            .checked_mul(self.checked_max_held_per_connection()?)
    }

    /// Checks every option's bounds and the options against each other, naming the flag
    /// at fault: sizes at most [`MAX_CONNECTION_BYTES`], durations at most
    /// [`MAX_DURATION`], and a buffer budget that holds one connection at its worst for
    /// every reactor (each keeps that much leased for good) and one more, so closing the
    /// largest holder always makes room. The arithmetic is checked: a sum that would
    /// overflow is an error, never a wrapped value that passes.
    pub fn validate(&self) -> Result<(), String> {
        if self.threads == 0 {
            return Err("--threads must be at least 1".to_string());
        }
        for (flag, bytes) in [
            ("--max-frame", self.max_frame),
            ("--high-water", self.high_water),
            ("--sndbuf", self.send_buffer),
            ("--rcvbuf", self.recv_buffer),
        ] {
            if bytes > MAX_CONNECTION_BYTES {
                return Err(too_many_bytes(flag, bytes));
            }
        }
        for (flag, duration) in [
            ("--idle-timeout", Some(self.idle_timeout)),
            ("--shutdown-grace", Some(self.shutdown_grace)),
            ("--linger", Some(self.linger)),
            ("--stats-interval", self.stats_interval),
        ] {
            if duration.is_some_and(|d| d > MAX_DURATION) {
                return Err(format!(
                    "{flag}: longer than 365 days (8760h), the longest accepted"
                ));
            }
        }
        if self.idle_timeout.is_zero() {
            return Err("--idle-timeout must be more than zero".to_string());
        }
        if self.high_water == 0 {
            return Err("--high-water must be at least 1 byte".to_string());
        }
        let worst = self.checked_max_held_per_connection().ok_or_else(|| {
            format!(
                "--high-water {}, --max-frame {}, --sndbuf {} and --rcvbuf {}: one \
                 connection's worst case overflows",
                Size(self.high_water),
                Size(self.max_frame),
                Size(self.send_buffer),
                Size(self.recv_buffer)
            )
        })?;
        let floor = self
            .threads
            .checked_add(1)
            .and_then(|n| n.checked_mul(worst))
            .ok_or_else(|| {
                format!(
                    "--threads {}: {} times one connection's worst case ({}, one for each \
                     reactor and one more) overflows",
                    self.threads,
                    self.threads.saturating_add(1),
                    Size(worst)
                )
            })?;
        if self.max_buffer_memory < floor {
            return Err(format!(
                "--max-buffer-memory {} is below {}: {} times what one connection can hold \
                 with --high-water {} and --max-frame {} (one for each of {} reactors, and \
                 one more)",
                Size(self.max_buffer_memory),
                Size(floor),
                self.threads + 1,
                Size(self.high_water),
                Size(self.max_frame),
                self.threads
            ));
        }
        if self.max_connections_per_source == Some(0) {
            return Err("--max-connections-per-source must be at least 1".to_string());
        }
        if self.source_prefix_v6 > 128 {
            return Err(format!(
                "--source-prefix-v6 {} is not a prefix length: 0 to 128 bits",
                self.source_prefix_v6
            ));
        }
        Ok(())
    }

    /// The defaults, listening on `listen`.
    pub fn new(listen: ListenAddr) -> Self {
        ServerConfig {
            listen,
            threads: DEFAULT_THREADS,
            reuse_port: false,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_frame: DEFAULT_MAX_FRAME,
            max_connections: None,
            max_connections_per_source: None,
            source_prefix_v6: DEFAULT_SOURCE_PREFIX_V6,
            proxy_protocol_from: None,
            proxy_protocol_timeout: DEFAULT_PROXY_PROTOCOL_TIMEOUT,
            high_water: DEFAULT_HIGH_WATER,
            max_buffer_memory: DEFAULT_MAX_BUFFER_MEMORY,
            stats_interval: None,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            linger: DEFAULT_LINGER,
            send_buffer: DEFAULT_SEND_BUFFER,
            recv_buffer: DEFAULT_RECV_BUFFER,
        }
    }
}

/// The error for a size over [`MAX_CONNECTION_BYTES`], naming its flag.
pub fn too_many_bytes(flag: &str, bytes: usize) -> String {
    format!("{flag} {}", size::above(bytes, MAX_CONNECTION_BYTES))
}

/// A size flag, at most [`MAX_CONNECTION_BYTES`] (a clap value parser; clap names the flag
/// in its error): `65536`, `64K`, `1GiB` ([`crate::size`]).
pub fn parse_connection_bytes(s: &str) -> Result<Size, String> {
    size::parse_size_at_most(s, MAX_CONNECTION_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_case_includes_the_kernel_queues_of_a_stalled_connection() {
        let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap());
        // 128 KiB each, doubled by the kernel: 512 KiB.
        assert_eq!(config.kernel_held_when_stalled(), 512 * 1024);
        let with_kernel = config.max_held_per_connection();
        config.send_buffer = 0;
        config.recv_buffer = 0;
        assert_eq!(config.kernel_held_when_stalled(), 0);
        assert_eq!(with_kernel - config.max_held_per_connection(), 512 * 1024);
        // The user-space worst case at the defaults: 160 KiB and 76 bytes.
        assert_eq!(config.max_held_per_connection(), 32768 + 65548 + 64 + 65536);
        assert_eq!(config.max_held_per_connection(), 163_916);
    }

    fn defaults() -> ServerConfig {
        ServerConfig::new("127.0.0.1:0".parse().unwrap())
    }

    #[track_caller]
    fn refused(adjust: impl FnOnce(&mut ServerConfig), flag: &str) {
        let mut config = defaults();
        adjust(&mut config);
        let err = config.validate().unwrap_err();
        assert!(err.contains(flag), "{flag} not named: {err}");
    }

    #[test]
    fn the_defaults_are_valid() {
        defaults().validate().unwrap();
    }

    #[test]
    fn the_least_buffer_memory_is_exactly_what_validate_accepts() {
        for threads in [1, 2, 7] {
            let mut config = defaults();
            config.threads = threads;
            let least = config.least_buffer_memory().unwrap();
            assert_eq!(least, (threads + 1) * config.max_held_per_connection());
            config.max_buffer_memory = least;
            config.validate().unwrap();
            config.max_buffer_memory = least - 1;
            assert!(config.validate().is_err());
        }
        let mut config = defaults();
        config.threads = usize::MAX;
        assert_eq!(config.least_buffer_memory(), None);
    }

    #[test]
    fn sizes_stop_at_one_gib_exactly() {
        let mut config = defaults();
        config.max_frame = MAX_CONNECTION_BYTES;
        config.max_buffer_memory = usize::MAX;
        config.validate().unwrap();
        refused(|c| c.max_frame = MAX_CONNECTION_BYTES + 1, "--max-frame");
        refused(|c| c.max_frame = usize::MAX, "--max-frame");
        refused(|c| c.high_water = usize::MAX, "--high-water");
        refused(|c| c.send_buffer = usize::MAX, "--sndbuf");
        refused(|c| c.recv_buffer = MAX_CONNECTION_BYTES + 1, "--rcvbuf");
    }

    #[test]
    fn durations_stop_at_365_days() {
        let mut config = defaults();
        config.idle_timeout = MAX_DURATION;
        config.validate().unwrap();
        let over = MAX_DURATION + std::time::Duration::from_nanos(1);
        refused(|c| c.idle_timeout = over, "--idle-timeout");
        refused(|c| c.shutdown_grace = Duration::MAX, "--shutdown-grace");
        refused(|c| c.linger = over, "--linger");
        refused(|c| c.stats_interval = Some(over), "--stats-interval");
        refused(|c| c.idle_timeout = Duration::ZERO, "--idle-timeout");
    }

    #[test]
    fn a_budget_floor_that_overflows_is_refused_not_wrapped() {
        refused(|c| c.threads = usize::MAX, "--threads");
        refused(
            |c| {
                c.threads = usize::MAX / 2;
                c.max_buffer_memory = usize::MAX;
            },
            "--threads",
        );
        // Past the bounds, the unchecked accessors saturate instead of wrapping.
        let mut config = defaults();
        config.high_water = usize::MAX;
        assert_eq!(config.max_held_per_connection(), usize::MAX);
        config.send_buffer = usize::MAX;
        assert_eq!(config.kernel_held_when_stalled(), usize::MAX);
    }

    #[test]
    fn size_parser_takes_one_gib_and_refuses_more() {
        assert_eq!(
            parse_connection_bytes("1073741824"),
            Ok(Size(MAX_CONNECTION_BYTES))
        );
        assert_eq!(
            parse_connection_bytes("1GiB"),
            Ok(Size(MAX_CONNECTION_BYTES))
        );
        let err = parse_connection_bytes("1073741825").unwrap_err();
        assert!(err.contains("above 1GiB"), "{err}");
        let err = parse_connection_bytes("2GiB").unwrap_err();
        assert!(err.contains("2GiB is above 1GiB"), "{err}");
        assert!(parse_connection_bytes("18446744073709551615").is_err());
        assert!(parse_connection_bytes("99999999999999999999999").is_err());
        assert!(parse_connection_bytes("-1").is_err());
    }
}
