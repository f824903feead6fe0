//! Helpers: a server in a thread, connected clients, bounded reads.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread::JoinHandle;
use std::time::Duration;

use tabecho::addr::ListenAddr;
use tabecho::config::ServerConfig;
use tabecho::server::{Server, ShutdownHandle, Snapshot, SnapshotHandle, Stats};

/// Reactors per test server: `TABECHO_TEST_THREADS` (default 1). `.ci/run` runs the
/// integration tests once with 1 and once with 2, so every rule of docs/PROTOCOL.md is
/// held by a single reactor and by several.
pub fn test_threads() -> usize {
    std::env::var("TABECHO_TEST_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// `--threads N` for a server process, from [`test_threads`], unless `args` name their own.
fn threads_flag(args: &[&str]) -> String {
    if args.contains(&"--threads") {
        String::new()
    } else {
        format!("--threads {}", test_threads())
    }
}

/// How long any single wait in a test may take before the test fails.
pub use harness::WAIT;

/// A server running in a thread of the test process, shut down on drop.
pub struct TestServer {
    pub addr: ListenAddr,
    handle: ShutdownHandle,
    thread: Option<JoinHandle<io::Result<Stats>>>,
    /// The metrics endpoint's address, if started with [`TestServer::start_with_metrics`].
    metrics: Option<SocketAddr>,
    /// A snapshot handle per reactor.
    reactors: Vec<SnapshotHandle>,
}

impl TestServer {
    /// A server on 127.0.0.1:0 with the defaults.
    #[track_caller]
    pub fn start() -> TestServer {
        Self::start_with(|_| {})
    }

    /// A server on 127.0.0.1:0 with `adjust` applied to the defaults.
    #[track_caller]
    pub fn start_with(adjust: impl FnOnce(&mut ServerConfig)) -> TestServer {
        Self::start_inner(adjust, false)
    }

    /// A server on 127.0.0.1:0 with the defaults and its metrics endpoint on 127.0.0.1:0.
    #[track_caller]
    pub fn start_with_metrics() -> TestServer {
        Self::start_inner(|_| {}, true)
    }

    #[track_caller]
    fn start_inner(adjust: impl FnOnce(&mut ServerConfig), metrics: bool) -> TestServer {
        Self::start_on("127.0.0.1:0".parse().unwrap(), adjust, metrics)
    }

    /// A server on `listen` with [`test_threads`] reactors and `adjust` applied to the
    /// defaults (an explicit `threads` in `adjust` wins).
    #[track_caller]
    pub fn start_on(
        listen: ListenAddr,
        adjust: impl FnOnce(&mut ServerConfig),
        metrics: bool,
    ) -> TestServer {
        let mut config = ServerConfig::new(listen);
        config.threads = test_threads();
        adjust(&mut config);
        let mut server = Server::bind(config).expect("bind");
        let addr = server.local_addr().clone();
        let handle = server.shutdown_handle();
        let reactors = server.snapshot_handles();
        let metrics = metrics.then(|| {
            let localhost = "127.0.0.1:0".parse().unwrap();
            server.serve_metrics(localhost).expect("metrics")
        });
        let thread = std::thread::spawn(move || server.run());
        TestServer {
            addr,
            handle,
            thread: Some(thread),
            metrics,
            reactors,
        }
    }

    /// A snapshot of each reactor (reactor `i` at index `i`).
    #[track_caller]
    pub fn per_reactor(&self) -> Vec<Snapshot> {
        self.reactors
            .iter()
            .map(|h| h.snapshot(WAIT).expect("a running reactor answers"))
            .collect()
    }

    /// The metrics endpoint's address.
    #[track_caller]
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics.expect("started with metrics")
    }

    /// The TCP address.
    pub fn tcp(&self) -> SocketAddr {
        match &self.addr {
            ListenAddr::Tcp(a) => *a,
            ListenAddr::Unix(_) => panic!("not a TCP server"),
        }
    }

    /// Shuts down gracefully and returns the counters.
    #[track_caller]
    pub fn stop(mut self) -> Stats {
        self.handle.shutdown();
        let thread = self.thread.take().unwrap();
        thread
            .join()
            .expect("server thread panicked")
            .expect("server failed")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.handle.shutdown();
            let _ = thread.join();
        }
    }
}

/// A TCP client with read and write timeouts of [`WAIT`].
#[track_caller]
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.set_write_timeout(Some(WAIT)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// A TCP client as [`connect`], from the local address `source` (a loopback address such
/// as 127.0.0.2: every 127.0.0.0/8 address is the machine's own), bound before connecting.
#[track_caller]
pub fn connect_from(source: std::net::IpAddr, addr: SocketAddr) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::new(source, 0).into())
        .unwrap_or_else(|e| panic!("bind {source}: {e}"));
    socket.connect(&addr.into()).expect("connect");
    let s = TcpStream::from(socket);
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.set_write_timeout(Some(WAIT)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Reads exactly `n` bytes or fails the test.
#[track_caller]
pub fn read_n(s: &mut impl Read, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    s.read_exact(&mut buf).expect("read");
    buf
}

/// Reads until EOF; returns the bytes and whether the stream ended with a reset instead.
#[track_caller]
pub fn read_to_end(s: &mut impl Read) -> (Vec<u8>, Option<io::ErrorKind>) {
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (out, None),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut =>
            {
                panic!("read timed out after {} bytes", out.len())
            }
            Err(e) => return (out, Some(e.kind())),
        }
    }
}

/// The reply to `frame`.
pub fn reply(frame: &[u8]) -> Vec<u8> {
    [b"server got:".as_slice(), frame, b"\t"].concat()
}

/// Sends `frame` + TAB and checks the reply.
#[track_caller]
pub fn round_trip(s: &mut TcpStream, frame: &[u8]) {
    s.write_all(&[frame, b"\t"].concat()).expect("write");
    let want = reply(frame);
    assert_eq!(read_n(s, want.len()), want);
}

/// Writes `pattern` over and over as one continuous stream, never reading, until the
/// server stops reading: then writes make no progress (four in a row, 1 s: one could be a
/// busy machine not scheduling the server). A short write is resumed where it stopped, so
/// the stream is exactly `pattern` repeated and cut after the returned number of bytes.
/// Fails the test past 256 MiB: a server that never stops reading.
#[track_caller]
pub fn write_until_server_stops_reading(c: &mut TcpStream, pattern: &[u8]) -> usize {
    c.set_write_timeout(Some(Duration::from_millis(250)))
        .unwrap();
    let mut written = 0usize;
    let mut stalled_writes = 0;
    while stalled_writes < 4 {
        match c.write(&pattern[written % pattern.len()..]) {
            Ok(n) => {
                written += n;
                stalled_writes = 0;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                stalled_writes += 1
            }
            Err(e) => panic!("write after {written} bytes: {e}"),
        }
        assert!(
            written < 256 * 1024 * 1024,
            "server kept reading {written} bytes from a peer that never reads"
        );
    }
    c.set_write_timeout(Some(WAIT)).unwrap();
    written
}

pub use harness::ServerProcess;

/// The ways the tests start the built `tabecho serve` (`harness::ServerProcess` does the
/// work; these bind this test binary's tabecho and [`test_threads`]).
pub trait SpawnTabecho: Sized {
    /// Runs `sh -c "<prefix> exec tabecho serve <args>"` at log level info and waits for
    /// its readiness (its addresses on `--ready-fd`).
    fn spawn_with_shell_prefix(prefix: &str, args: &[&str]) -> Self;
    /// As [`SpawnTabecho::spawn_with_shell_prefix`], with `RUST_LOG=<level>`.
    fn spawn_logging(level: &str, prefix: &str, args: &[&str]) -> Self;
    /// As [`SpawnTabecho::spawn_logging`], running the binary at `bin` (a copy of
    /// tabecho's, say, that a test then replaces).
    fn spawn_program(bin: &std::path::Path, level: &str, prefix: &str, args: &[&str]) -> Self;
    /// Runs `systemd-socket-activate -l LISTEN... tabecho serve <args>` (at log level
    /// info) and waits until it listens on its sockets; tabecho itself starts at the first
    /// connection. `None` if it exited first (an address in use).
    fn spawn_socket_activated(listen: &[String], args: &[&str]) -> Option<Self>;
    /// Runs `tabecho serve <args>` and waits for its readiness.
    fn spawn(args: &[&str]) -> Self;
}

impl SpawnTabecho for ServerProcess {
    #[track_caller]
    fn spawn_with_shell_prefix(prefix: &str, args: &[&str]) -> ServerProcess {
        Self::spawn_logging("info", prefix, args)
    }

    #[track_caller]
    fn spawn_logging(level: &str, prefix: &str, args: &[&str]) -> ServerProcess {
        Self::spawn_program(env!("CARGO_BIN_EXE_tabecho").as_ref(), level, prefix, args)
    }

    #[track_caller]
    fn spawn_program(
        bin: &std::path::Path,
        level: &str,
        prefix: &str,
        args: &[&str],
    ) -> ServerProcess {
        let threads = threads_flag(args);
        let args: Vec<&str> = threads
            .split_whitespace()
            .chain(args.iter().copied())
            .collect();
        ServerProcess::start_program(bin, level, prefix, &args).unwrap_or_else(|e| panic!("{e}"))
    }

    #[track_caller]
    fn spawn_socket_activated(listen: &[String], args: &[&str]) -> Option<ServerProcess> {
        let mut command = std::process::Command::new("systemd-socket-activate");
        for addr in listen {
            command.arg("-l").arg(addr);
        }
        command
            .arg(env!("CARGO_BIN_EXE_tabecho"))
            .arg("serve")
            .args(threads_flag(args).split_whitespace())
            .args(args);
        let mut p = ServerProcess::start(command, "info").expect("spawn systemd-socket-activate");
        let mut listening = 0;
        while listening < listen.len() {
            let line = p.next_line()?;
            if line.starts_with("Listening on ") {
                listening += 1;
            }
        }
        Some(p)
    }

    #[track_caller]
    fn spawn(args: &[&str]) -> ServerProcess {
        Self::spawn_with_shell_prefix("", args)
    }
}

/// How a [`FaultyServer`] answers: each a deliberate wrong (or different) server for the
/// load generator to catch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Correct replies, except one in a thousand (counted over the server) with a byte
    /// changed to 0x01, which no payload holds.
    CorruptOneInAThousand,
    /// Correct replies, except reply number 500 (counted over the server), never sent.
    DropOne,
    /// Echoes every byte verbatim (the ceiling byte-echo server), frames unparsed.
    Verbatim,
    /// Accepts, reads, never answers.
    Silent,
    /// Accepts and closes at once.
    CloseAtOnce,
}

/// The reply number (0-based, over the server) that [`Fault::DropOne`] never sends.
pub const DROPPED_REPLY: u64 = 500;

/// A tiny threaded tab-echo server on 127.0.0.1:0 with a [`Fault`]; stopped on drop.
pub struct FaultyServer {
    pub addr: ListenAddr,
    local: SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FaultyServer {
    #[track_caller]
    pub fn start(fault: Fault) -> FaultyServer {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use std::sync::Arc;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let local = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let replies = Arc::new(AtomicU64::new(0));
        let stop_flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop_flag.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let replies = Arc::clone(&replies);
                std::thread::spawn(move || {
                    let _ = serve_faulty(conn, fault, &replies);
                });
            }
        });
        FaultyServer {
            addr: ListenAddr::Tcp(local),
            local,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for FaultyServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.local);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One connection of a [`FaultyServer`]; returns at end of stream or on any error.
fn serve_faulty(
    mut conn: TcpStream,
    fault: Fault,
    replies: &std::sync::atomic::AtomicU64,
) -> io::Result<()> {
    use std::sync::atomic::Ordering;
    conn.set_read_timeout(Some(WAIT))?;
    conn.set_nodelay(true)?;
    if fault == Fault::CloseAtOnce {
        return Ok(());
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut partial = Vec::new();
    loop {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        match fault {
            Fault::Silent => continue,
            Fault::Verbatim => {
                conn.write_all(&buf[..n])?;
                continue;
            }
            _ => {}
        }
        partial.extend_from_slice(&buf[..n]);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(at) = partial[start..].iter().position(|&b| b == b'\t') {
            let frame = &partial[start..start + at];
            start += at + 1;
            let number = replies.fetch_add(1, Ordering::SeqCst);
            let mut one = reply(frame);
            match fault {
                Fault::CorruptOneInAThousand if number % 1000 == 999 => {
                    let at = (b"server got:".len()).min(one.len() - 2);
                    one[at] = 0x01;
                }
                Fault::DropOne if number == DROPPED_REPLY => continue,
                _ => {}
            }
            out.extend_from_slice(&one);
        }
        partial.drain(..start);
        conn.write_all(&out)?;
    }
}

/// An address on which nothing listens (a port just bound and released).
pub fn refused_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// Runs the built `tabecho` with `args`, `stdin` as standard input; returns the exit
/// code, stdout and stderr. Bounded: the child is killed after [`WAIT`].
#[track_caller]
pub fn tabecho(args: &[&str], stdin: &[u8]) -> (i32, String, String) {
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_tabecho"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tabecho");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).unwrap();
    drop(input);
    let id = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(WAIT * 3) {
        Ok(output) => output.expect("wait for tabecho"),
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .arg("-9")
                .arg(id.to_string())
                .status();
            panic!("tabecho {args:?} did not finish");
        }
    };
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs a load against a test server; fails the test if it cannot start.
#[track_caller]
pub fn run_load(options: &tabecho::load::LoadOptions) -> tabecho::load::LoadReport {
    tabecho::load::run(options).expect("load run")
}

/// `GET path` over HTTP/1.0 with a plain TcpStream; returns the status code and the body.
#[track_caller]
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = connect(addr);
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("write");
    let (answer, reset) = read_to_end(&mut s);
    assert_eq!(reset, None, "the metrics endpoint reset the connection");
    let answer = String::from_utf8(answer).expect("UTF-8 answer");
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok());
    (status.expect("a status code"), body.to_string())
}

/// The sum over every reactor of `series` (a metric name, with its other labels if any:
/// `tabecho_frames_total`, `tabecho_closed_total{reason="eof"}`); fails the test if no
/// reactor has it.
#[track_caller]
pub fn total(page: &str, series: &str) -> f64 {
    harness::report::metric_total(page, series)
        .unwrap_or_else(|| panic!("{series} missing in\n{page}"))
}

/// Reads `/metrics` until `done(page)` holds (the server counts a client's close one turn
/// after the client sees its last reply); fails the test after [`WAIT`].
#[track_caller]
pub fn metrics_until(addr: SocketAddr, done: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (status, page) = http_get(addr, "/metrics");
        assert_eq!(status, 200, "{page}");
        if done(&page) {
            return page;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "metrics never reached the expected state:\n{page}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One HTTP response read off a kept connection: the status, the head and the body
/// (`Content-Length` bytes).
pub struct HttpResponse {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

/// Reads one whole response from `r` (framed by its `Content-Length`); `None` at EOF
/// before a head. Fails the test on a malformed response.
#[track_caller]
pub fn read_response(r: &mut impl io::BufRead) -> Option<HttpResponse> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).expect("read a response head") == 0 {
            assert!(head.is_empty(), "EOF inside a head: {head:?}");
            return None;
        }
        let end = line == "\r\n";
        head.push_str(&line);
        if end {
            break;
        }
    }
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Content-Length in {head:?}"));
    let mut body = vec![0; length];
    r.read_exact(&mut body).expect("a whole body");
    Some(HttpResponse { status, head, body })
}

/// The threads of process `pid` (`/proc/PID/task`).
#[track_caller]
pub fn thread_count(pid: u32) -> usize {
    match harness::proc::thread_count(pid) {
        0 => panic!("no /proc/{pid}/task"),
        n => n,
    }
}

/// What a connection whose socket refuses replies is charged for its kernel queues at the
/// default socket buffers (`ServerConfig::kernel_held_when_stalled`).
pub fn default_kernel_charge() -> u64 {
    tabecho::config::ServerConfig::new("127.0.0.1:0".parse().unwrap()).kernel_held_when_stalled()
        as u64
}

/// The uid a test runs `tabecho` as to be another user: nobody's, on Debian and most others.
pub const NOBODY: u32 = 65534;

/// Whether this process runs as root.
pub fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// A fresh temporary directory, mode 0755, that every user may enter: in the usual
/// temporary directory when each of its ancestors lets others search it, else in `/tmp`
/// (`TMPDIR` may point somewhere private).
pub fn world_enterable_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let enterable = |dir: &std::path::Path| {
        dir.ancestors().all(|d| {
            std::fs::metadata(d).is_ok_and(|m| m.is_dir() && m.permissions().mode() & 0o001 != 0)
        })
    };
    let base = std::env::temp_dir();
    let base = if enterable(&base) {
        base
    } else {
        std::path::PathBuf::from("/tmp")
    };
    assert!(enterable(&base), "no directory others may enter: {base:?}");
    let dir = tempfile::tempdir_in(&base).expect("temporary directory");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// As root, runs `tabecho args` as [`NOBODY`] and returns what it did. `dir` is a
/// [`world_enterable_tempdir`]: nobody cannot reach the binary under `target/` when the
/// clone sits in a private directory (`/root` is 0700, and so is every `mktemp -d`), so
/// the binary is copied into `dir` first and run from there, in `dir`.
#[track_caller]
pub fn tabecho_as_nobody(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    assert!(is_root(), "only root may run a command as nobody");
    let bin = dir.join("tabecho");
    if !bin.exists() {
        std::fs::copy(env!("CARGO_BIN_EXE_tabecho"), &bin).expect("copy the binary");
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let run = || {
        std::process::Command::new(&bin)
            .args(args)
            .uid(NOBODY)
            .gid(NOBODY)
            // Nobody's own working directory: the test's may be private too.
            .current_dir(dir)
            .output()
    };
    // ETXTBSY: a child another test forked while the copy was open for writing holds
    // that descriptor until its own exec (Linux, any multithreaded process that forks);
    // it lets go within moments.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        match run() {
            Err(e) if e.kind() == io::ErrorKind::ExecutableFileBusy => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the copy stayed busy: {e}"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            result => return result.expect("run tabecho as nobody"),
        }
    }
}
