//! Upgrade in place (SIGUSR2): the new process on the same sockets, the old one's drain,
//! a failed new process, a second SIGUSR2, and nobody refused or reset during the switch.
//!
//! The new process writes to the same stderr as the old one, so its lines ("listening on
//! ... (inherited from PID N)") arrive through the old [`ServerProcess`]; it is not a child
//! of the test, so [`NewProcess`] kills it when the test ends.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use crate::util::*;

/// Short idle timeout and grace, so a drain lasts well under a second or two.
const QUICK: [&str; 6] = [
    "--listen",
    "127.0.0.1:0",
    "--idle-timeout",
    "500ms",
    "--shutdown-grace",
    "2s",
];

/// The process an upgrade started, killed when dropped (it outlives the old one).
pub struct NewProcess(pub u32);

impl Drop for NewProcess {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .arg("-KILL")
            .arg(self.0.to_string())
            .status();
    }
}

/// Waits for `upgrade: PID N serves now; ...` (moving the connections, or draining them
/// for a binary that does not take them) and returns the new process.
#[track_caller]
pub fn wait_handover(server: &mut ServerProcess) -> NewProcess {
    let line = server.wait_for_line(|l| l.contains("serves now;"));
    let pid = line
        .split("PID ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {line:?}"));
    NewProcess(pid)
}

/// A fresh directory beside the built binary (same file system, so it can be linked).
pub fn scratch_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

/// The built binary at a path of its own in `dir`, to start servers from and then
/// replace. A hard link, not a copy: a file this test process has open for writing
/// leaks into any child another test thread forks meanwhile, and exec'ing it then fails
/// with ETXTBSY ("Text file busy"), one run in many.
pub fn linked_binary(dir: &Path) -> PathBuf {
    let path = dir.join("tabecho");
    std::fs::hard_link(env!("CARGO_BIN_EXE_tabecho"), &path).expect("link the binary");
    path
}

/// An executable shell script in `dir`, written before any server of the test starts
/// (see [`linked_binary`] for why), to be renamed over the binary's path later.
pub fn script(dir: &Path, name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A server started from its own path in `dir`, where an "older tabecho" then replaces
/// the binary: one that does not know the hand-over. It ignores the descriptors' names
/// (`LISTEN_FDNAMES`), as tabecho 0.2.0 does, so it takes the passed sockets for
/// listeners and closes the hand-over's socketpair: the old process drains its
/// connections, as before the hand-over existed. Returns the server.
#[track_caller]
pub fn spawn_for_an_older_upgrade(dir: &Path, prefix: &str, args: &[&str]) -> ServerProcess {
    let bin = linked_binary(dir);
    let older = script(
        dir,
        "older",
        &format!(
            "#!/bin/sh\nunset LISTEN_FDNAMES\nexec '{}' \"$@\"\n",
            env!("CARGO_BIN_EXE_tabecho")
        ),
    );
    let server = ServerProcess::spawn_program(&bin, "info", prefix, args);
    // Renamed over it: a running binary's file cannot be written.
    std::fs::rename(older, &bin).unwrap();
    server
}

#[test]
fn a_new_binary_without_the_hand_over_gets_the_drain_a_connection_is_served_on_then_idle() {
    // An idle timeout far longer than the new process takes to start, so `before` is
    // still open after the handover.
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--idle-timeout",
        "3s",
        "--shutdown-grace",
        "5s",
    ];
    let dir = scratch_dir();
    let mut server = spawn_for_an_older_upgrade(dir.path(), "", &args);
    let mut before = connect(server.tcp());
    round_trip(&mut before, b"before");
    server.signal("USR2");
    server.wait_for_line(|l| l.contains("upgrade: started PID"));
    round_trip(&mut before, b"during the upgrade");
    let new = wait_handover(&mut server);
    assert!(
        server
            .log
            .last()
            .is_some_and(|l| l.contains("does not take connections")),
        "{:?}",
        server.log
    );
    // Its READY=1 and its "listening on" line race: the line may be in already.
    let inherited = match server
        .log
        .iter()
        .find(|l| l.contains("(inherited from PID"))
    {
        Some(line) => line.clone(),
        None => server.wait_for_line(|l| l.contains("(inherited from PID")),
    };
    assert!(
        inherited.ends_with(&format!(
            "listening on {} (inherited from PID {})",
            server.addr,
            server.child.id()
        )),
        "{inherited}"
    );
    // The old process still serves the connection it has...
    round_trip(&mut before, b"after the handover");
    // ...until it is idle: then a plain close (EOF), not a reset.
    assert_eq!(read_to_end(&mut before), (Vec::new(), None));
    let addr = server.tcp();
    let (status, log) = server.wait_exit();
    assert_eq!(status.code(), Some(0), "{log:?}");
    // Only the new process listens now, on the same port.
    let mut after = connect(addr);
    round_trip(&mut after, b"served by the new process");
    drop(new);
}

#[test]
fn for_a_binary_without_the_hand_over_the_old_process_drains_then_exits_0_with_its_summary() {
    // The busy client's 50 ms pace is far inside the 1 s idle timeout.
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--idle-timeout",
        "1s",
        "--shutdown-grace",
        "2s",
    ];
    let dir = scratch_dir();
    let mut server = spawn_for_an_older_upgrade(dir.path(), "", &args);
    let mut idle = connect(server.tcp());
    round_trip(&mut idle, b"soon idle");
    // A client busier than the idle timeout: served until the grace ends, then the
    // shutdown's lingering close (its replies, then EOF).
    let mut busy = connect(server.tcp());
    let (first_done, first) = mpsc::channel();
    let busy_client = thread::spawn(move || {
        let mut answered = 0u64;
        loop {
            let frame = format!("busy {answered}");
            if busy.write_all(format!("{frame}\t").as_bytes()).is_err() {
                return (answered, None);
            }
            let want = reply(frame.as_bytes());
            let mut got = vec![0; want.len()];
            match busy.read_exact(&mut got) {
                Ok(()) => assert_eq!(got, want),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return (answered, None),
                Err(e) => return (answered, Some(e.kind())),
            }
            answered += 1;
            if answered == 1 {
                let _ = first_done.send(());
            }
            // Pacing, well inside the idle timeout: not a synchronisation.
            thread::sleep(Duration::from_millis(50));
        }
    });
    first
        .recv_timeout(WAIT)
        .expect("the busy client's first reply");
    server.signal("USR2");
    let _new = wait_handover(&mut server);
    assert_eq!(read_to_end(&mut idle), (Vec::new(), None), "idle: EOF");
    let (answered, error) = busy_client.join().unwrap();
    assert_eq!(error, None, "the busy client ends on EOF, not an error");
    // 2 s of grace at one round trip per ~50 ms; a very slow machine manages fewer.
    assert!(answered >= 5, "{answered} round trips");
    let (status, log) = server.wait_exit();
    assert_eq!(status.code(), Some(0), "{log:?}");
    let summary = log
        .iter()
        .find(|l| l.contains("shutdown: "))
        .unwrap_or_else(|| panic!("summary line in {log:?}"));
    assert!(summary.contains("accepted 2,"), "{summary}");
    assert!(summary.contains("reaped idle 1,"), "{summary}");
    assert!(summary.contains("shutdown 1,"), "{summary}");
}

#[test]
fn a_new_process_that_fails_leaves_the_old_one_serving() {
    let dir = scratch_dir();
    let bin = linked_binary(dir.path());
    let failing = script(dir.path(), "failing", "#!/bin/sh\nexit 1\n");
    let mut server = ServerProcess::spawn_program(&bin, "info", "", &QUICK);
    let mut before = connect(server.tcp());
    round_trip(&mut before, b"before");
    // Renamed over it: a running binary's file cannot be written.
    std::fs::rename(failing, &bin).unwrap();
    server.signal("USR2");
    let failed = server.wait_for_line(|l| l.contains("upgrade failed"));
    assert!(failed.contains("exited"), "{failed}");
    // Nothing changed: the old connection and new ones are served.
    round_trip(&mut before, b"still here");
    let mut after = connect(server.tcp());
    round_trip(&mut after, b"new connection");
    assert!(
        !server.log.iter().any(|l| l.contains("serves now")),
        "{:?}",
        server.log
    );
    drop((before, after));
    server.signal("TERM");
    assert_eq!(server.wait_exit().0.code(), Some(0));
}

#[test]
fn a_second_usr2_during_an_upgrade_or_its_drain_is_ignored() {
    // The new binary waits for the test (a line on a FIFO) before it starts: the upgrade
    // is surely in progress when the second SIGUSR2 arrives. It does not take the
    // connections (an older binary), so the old process drains the held one.
    let dir = scratch_dir();
    let bin = linked_binary(dir.path());
    let real = dir.path().join("tabecho.real");
    std::fs::hard_link(&bin, &real).unwrap();
    let fifo = dir.path().join("go");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    // The held connection must keep the old process draining until the third SIGUSR2:
    // with 5 s, a loaded machine starting the new process let it be reaped as idle (or the
    // drain's grace end) first, and the old process had exited before the signal. The
    // drain ends when the test drops the connection, not on a timer.
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--idle-timeout",
        "60s",
        "--shutdown-grace",
        "60s",
    ];
    let waiting = script(
        dir.path(),
        "waiting",
        &format!(
            "#!/bin/sh\nread go < '{}'\nunset LISTEN_FDNAMES\nexec '{}' \"$@\"\n",
            fifo.display(),
            real.display()
        ),
    );
    let mut server = ServerProcess::spawn_program(&bin, "info", "", &args);
    std::fs::rename(waiting, &bin).unwrap();
    // A connection held open (made before the new process exists, so surely the old
    // one's) keeps the old process draining.
    let mut held = connect(server.tcp());
    round_trip(&mut held, b"held");
    server.signal("USR2");
    server.wait_for_line(|l| l.contains("upgrade: started PID"));
    server.signal("USR2");
    server.wait_for_line(|l| l.contains("upgrade already in progress; SIGUSR2 ignored"));
    std::fs::write(&fifo, "go\n").unwrap();
    let _new = wait_handover(&mut server);
    server.signal("USR2");
    server.wait_for_line(|l| l.contains("upgrade already in progress (this process is draining)"));
    drop(held);
    let (status, log) = server.wait_exit();
    assert_eq!(status.code(), Some(0), "{log:?}");
    let started = log
        .iter()
        .filter(|l| l.contains("upgrade: started"))
        .count();
    assert_eq!(started, 1, "{log:?}");
}

#[test]
fn sigterm_during_the_drain_is_a_normal_shutdown() {
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--idle-timeout",
        "5s",
        "--shutdown-grace",
        "5s",
    ];
    let dir = scratch_dir();
    let mut server = spawn_for_an_older_upgrade(dir.path(), "", &args);
    let mut held = connect(server.tcp());
    round_trip(&mut held, b"held");
    server.signal("USR2");
    let _new = wait_handover(&mut server);
    server.signal("TERM");
    server.wait_for_line(|l| l.contains("shutting down"));
    // The shutdown's lingering close: an idle connection reads EOF at once (not after
    // its 5 s idle timeout).
    assert_eq!(read_to_end(&mut held), (Vec::new(), None));
    drop(held);
    let (status, log) = server.wait_exit();
    assert_eq!(status.code(), Some(0), "{log:?}");
    assert!(
        log.iter().any(|l| l.contains("shutdown: accepted 1,")),
        "{log:?}"
    );
}

#[test]
fn a_unix_socket_is_handed_over_and_its_file_left_for_the_new_process() {
    use std::os::unix::net::UnixStream;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("upgrade.sock");
    let listen = format!("unix:{}", path.display());
    let mut server = ServerProcess::spawn(&["--listen", &listen, "--idle-timeout", "500ms"]);
    let unix_round_trip = |frame: &[u8]| {
        let mut c = UnixStream::connect(&path).expect("connect");
        c.set_read_timeout(Some(WAIT)).unwrap();
        c.write_all(&[frame, b"\t"].concat()).unwrap();
        assert_eq!(read_n(&mut c, reply(frame).len()), reply(frame));
    };
    unix_round_trip(b"before");
    server.signal("USR2");
    let _new = wait_handover(&mut server);
    let (status, log) = server.wait_exit();
    assert_eq!(status.code(), Some(0), "{log:?}");
    // The old process did not unlink the file the new one serves.
    assert!(path.exists(), "the socket file was removed");
    unix_round_trip(b"after");
}

/// What a client connecting over and over saw.
#[derive(Debug, Default)]
struct Tally {
    served: u64,
    /// Connect or I/O failures, with what they were.
    failures: Vec<String>,
}

/// Where the short connections go.
#[derive(Clone)]
enum Target {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// One short connection as the original Go client makes it: connect, one frame, read
/// the reply, close.
fn one_short_connection(target: &Target, n: u64) -> Result<(), String> {
    match target {
        Target::Tcp(addr) => {
            let s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
            s.set_read_timeout(Some(WAIT)).map_err(|e| e.to_string())?;
            exchange(s, n)
        }
        Target::Unix(path) => {
            let s = std::os::unix::net::UnixStream::connect(path)
                .map_err(|e| format!("connect: {e}"))?;
            s.set_read_timeout(Some(WAIT)).map_err(|e| e.to_string())?;
            exchange(s, n)
        }
    }
}

/// One frame and its reply on a fresh connection.
fn exchange(mut s: impl Read + Write, n: u64) -> Result<(), String> {
    let frame = format!("short {n}");
    s.write_all(format!("{frame}\t").as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let want = reply(frame.as_bytes());
    let mut got = vec![0; want.len()];
    s.read_exact(&mut got).map_err(|e| format!("read: {e}"))?;
    if got != want {
        return Err(format!("wrong reply {:?}", String::from_utf8_lossy(&got)));
    }
    Ok(())
}

/// Upgrades `server` while a thread makes short connections to `target` one after
/// another, from before the signal until well after the old process has exited; fails
/// the test if any was not served.
#[track_caller]
fn upgrade_under_short_connections(mut server: ServerProcess, target: Target) {
    let stop = Arc::new(AtomicBool::new(false));
    let (progress, made) = mpsc::channel();
    let client = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut tally = Tally::default();
            let mut n = 0;
            while !stop.load(Ordering::Acquire) {
                match one_short_connection(&target, n) {
                    Ok(()) => tally.served += 1,
                    Err(e) => tally.failures.push(e),
                }
                n += 1;
                let _ = progress.send(n);
            }
            tally
        })
    };
    // Some before, throughout, and some after the old process has gone.
    let wait_for = |count: u64| {
        while made.recv_timeout(WAIT).expect("the client makes progress") < count {}
    };
    wait_for(50);
    server.signal("USR2");
    let _new = wait_handover(&mut server);
    let (status, log) = server.wait_exit();
    assert_eq!(status.code(), Some(0), "{log:?}");
    let at_exit = made.try_iter().last().unwrap_or(0);
    wait_for(at_exit + 50);
    stop.store(true, Ordering::Release);
    let tally = client.join().unwrap();
    assert!(tally.failures.is_empty(), "{tally:?}");
    assert!(tally.served >= 100, "{tally:?}");
}

#[test]
fn connections_made_throughout_the_switch_are_all_served() {
    let server = ServerProcess::spawn(&QUICK);
    let target = Target::Tcp(server.tcp());
    upgrade_under_short_connections(server, target);
}

#[test]
fn unix_connections_made_throughout_the_switch_are_all_served() {
    // With several reactors, reactor 0 accepts and deals: the handover must not drop a
    // connection dealt at that instant.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switch.sock");
    let listen = format!("unix:{}", path.display());
    let server = ServerProcess::spawn(&["--listen", &listen, "--idle-timeout", "500ms"]);
    upgrade_under_short_connections(server, Target::Unix(path));
}

#[test]
fn ready_turns_503_in_the_old_process_once_it_has_handed_over() {
    let dir = scratch_dir();
    let mut server = spawn_for_an_older_upgrade(
        dir.path(),
        "",
        &[
            "--listen",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
            "--idle-timeout",
            "20s",
            "--shutdown-grace",
            "20s",
        ],
    );
    let metrics = server.metrics_addr();
    assert_eq!(http_get(metrics, "/ready").0, 200);
    // A client that keeps its connection open holds the old process in its drain.
    let mut client = connect(server.tcp());
    round_trip(&mut client, b"hold");
    server.signal("USR2");
    let _new = wait_handover(&mut server);
    // The handover reaches reactor 0 on its next turn: ask until it has.
    let deadline = std::time::Instant::now() + WAIT;
    while http_get(metrics, "/ready").0 != 503 {
        assert!(
            std::time::Instant::now() < deadline,
            "/ready never turned 503"
        );
        thread::sleep(Duration::from_millis(10));
    }
    // Still draining, still serving the page.
    assert_eq!(http_get(metrics, "/metrics").0, 200);
    round_trip(&mut client, b"still served");
    drop(client);
    let (status, _) = server.wait_exit();
    assert_eq!(status.code(), Some(0));
}
