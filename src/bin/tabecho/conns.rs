//! `tabecho conns`: the server's connections as a table (`GET /connections` on the admin
//! socket, `serve --admin unix:PATH`), and `tabecho conns close`, which closes those a
//! filter matches (`POST /connections/close`) and says how many.
//!
//! The client is plain: a blocking Unix stream, one HTTP/1.1 request with `Connection:
//! close`, the answer read to EOF. The server must frame its answer with `Content-Length`
//! (a chunked answer is refused as a bad answer); the request's parameters are written by
//! the library's own `ListQuery::to_query` and `CloseFilter::to_form`, which the server
//! reads back.
//!
//! Files: this one, the flags and the exchange; `conns/answer.rs`, the answer parsed;
//! `conns/table.rs`, the table printed.

mod answer;
mod table;

use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::{Duration, Instant};

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{ArgGroup, Args, Subcommand};
use tabecho::addr::{parse_duration, DurationArg, UNIX_PREFIX};
use tabecho::admin::row::decode_rows;
use tabecho::admin::{
    CloseAnswer, CloseFilter, ListQuery, SortKey, CLOSE_PATH, CONNECTIONS_PATH, DEFAULT_LIMIT,
    DEFAULT_SOCKET, FORM_CONTENT_TYPE, MAX_LIMIT,
};
use tabecho::cidr::Cidr;
use tabecho::size::Size;

use answer::parse_answer;
use table::table;

/// Done: the table printed, or the connections closed (or counted).
const EXIT_OK: u8 = 0;
/// The answer could not be read, or was an error other than 403.
const EXIT_FAILED: u8 = 1;
/// No such socket: nothing at the path, or nothing listening on it.
const EXIT_NO_SOCKET: u8 = 3;
/// Not allowed: the socket's permissions refused this user, or the server did (403).
const EXIT_NOT_ALLOWED: u8 = 4;

/// The longest answer read: [`MAX_LIMIT`] rows of a Unix socket's longest addresses with
/// room to spare; a longer one is a bad answer, not a reason to fill the memory.
const MAX_ANSWER: usize = 16 * 1024 * 1024;

/// What the after_help of both commands ends with.
const EXIT_CODES: &str = "\
Exit codes:
  0  done
  1  the answer could not be read (timeout, closed early, not HTTP, not JSON), or the
     server refused the request (any status but 200 and 403: the line it sent is shown)
  2  bad command line
  3  no such socket: nothing at PATH, or nothing listening on it (is the server running
     with --admin unix:PATH?)
  4  not allowed: the socket's permissions refused this user, or the server answered
     403 (only the server's own user and root may use it)";

/// Flags of `tabecho conns`.
#[derive(Args)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = format!("\
Lists the connections of a server started with --admin unix:PATH, largest first by
--sort (ties: the lower id first), as a table: id, reactor, state (reading, writing,
paused at --high-water, lingering, moving), client, peer (when a PROXY header named
another client), local address, age, idle time, memory charged to the buffer budget and
its parts (input held, output pending, kernel queues), and the bytes the kernel counted
in and out (TCP; `-` for a Unix connection).
--json prints the server's JSON lines instead, one object per connection.

Close (tabecho conns close [--source CIDR] [--id N] [--min-memory SIZE] [--idle-over DUR]
[--age-over DUR] [--dry-run]): closes the connections every filter given matches (AND)
and prints how many; at least one filter is required (--age-over 0s matches every
connection). --dry-run counts them and closes none.

The default socket, {DEFAULT_SOCKET}, is in the directory systemd makes for a service
with RuntimeDirectory=tabecho. Only the server's own user and root may use it.

{EXIT_CODES}")
)]
pub struct ConnsArgs {
    /// `close`, or none: a listing.
    #[command(subcommand)]
    command: Option<ConnsCommand>,
    #[command(flatten)]
    socket: SocketArgs,
    /// Sort by memory, age or idle time, largest first.
    #[arg(long, default_value_t = SortKey::Memory, value_parser = sort_parser())]
    sort: SortKey,
    /// Show at most N connections (1 to 1000).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_LIMIT, value_parser = parse_limit)]
    limit: usize,
    /// Only connections whose client is in this network: 10.0.0.0/8, 127.0.0.5, ::1.
    #[arg(long, value_name = "CIDR")]
    source: Option<Cidr>,
    /// Only the connections of reactor R (from 0).
    #[arg(long, value_name = "R")]
    reactor: Option<usize>,
    /// Print the server's JSON lines, one object per connection, instead of the table.
    #[arg(long)]
    json: bool,
}

/// `tabecho conns`'s subcommands.
#[derive(Subcommand)]
enum ConnsCommand {
    /// Close the connections a filter matches, and say how many.
    Close(CloseArgs),
}

/// Flags of `tabecho conns close`: at least one filter (a close of every connection takes
/// saying so: `--age-over 0s`).
#[derive(Args)]
#[command(group(
    ArgGroup::new("filter")
        .required(true)
        .multiple(true)
        .args(["source", "id", "min_memory", "idle_over", "age_over"])
))]
#[command(after_help = format!("\
Closes the connections that match every filter given (AND), with the close reason
`admin`, and prints `closed N connections` (with --dry-run: `would close N
connections`, and none is closed). At least one filter is required, so that no
mistake closes every connection; --age-over 0s matches every one.

{EXIT_CODES}"))]
struct CloseArgs {
    #[command(flatten)]
    socket: SocketArgs,
    /// Only connections whose client is in this network: 10.0.0.0/8, 127.0.0.5, ::1.
    #[arg(long, value_name = "CIDR")]
    source: Option<Cidr>,
    /// Only the connection with this id (as `tabecho conns` lists it).
    #[arg(long, value_name = "N")]
    id: Option<u64>,
    /// Only connections charged at least this much memory: 64K, 1MiB.
    #[arg(long, value_name = "SIZE")]
    min_memory: Option<Size>,
    /// Only connections idle for longer than this: 30s, 5m.
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    idle_over: Option<Duration>,
    /// Only connections open for longer than this: 1h.
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    age_over: Option<Duration>,
    /// Count the connections that match, close none.
    #[arg(long)]
    dry_run: bool,
}

/// The flags both commands take: where the socket is, how long to wait.
#[derive(Args)]
struct SocketArgs {
    /// The server's admin socket, as given to `serve --admin`.
    #[arg(long, value_name = "unix:PATH", default_value_t = AdminSocket(DEFAULT_SOCKET.into()))]
    admin: AdminSocket,
    /// The longest wait for the whole answer.
    #[arg(long, value_name = "DUR", default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,
}

/// The admin socket's path, written `unix:PATH`: what `serve --admin` and `conns --admin`
/// take.
#[derive(Clone)]
pub struct AdminSocket(pub PathBuf);

impl FromStr for AdminSocket {
    type Err = String;

    fn from_str(s: &str) -> Result<AdminSocket, String> {
        match s.strip_prefix(UNIX_PREFIX) {
            Some(path) if !path.is_empty() => Ok(AdminSocket(path.into())),
            _ => Err(format!(
                "{s:?}: the admin socket is a Unix socket, unix:PATH, as in unix:{DEFAULT_SOCKET}"
            )),
        }
    }
}

impl fmt::Display for AdminSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{UNIX_PREFIX}{}", self.0.display())
    }
}

/// `--sort`: one of [`SortKey::NAMES`], which completions offer.
fn sort_parser() -> impl TypedValueParser<Value = SortKey> {
    PossibleValuesParser::new(SortKey::NAMES).try_map(|name| name.parse::<SortKey>())
}

/// `--limit`: 1 to [`MAX_LIMIT`], as the server takes it.
fn parse_limit(s: &str) -> Result<usize, String> {
    s.parse::<usize>()
        .ok()
        .filter(|n| (1..=MAX_LIMIT).contains(n))
        .ok_or_else(|| format!("{s:?} is not 1 to {MAX_LIMIT}"))
}

/// A failure: the exit code and the line for stderr.
struct Failure(u8, String);

impl Failure {
    fn failed(line: impl Into<String>) -> Failure {
        Failure(EXIT_FAILED, line.into())
    }
}

pub fn run(args: ConnsArgs) -> ExitCode {
    let (socket, result) = match args.command {
        Some(ConnsCommand::Close(close)) => {
            let socket = close.socket.admin.clone();
            (socket, run_close(&close))
        }
        None => (args.socket.admin.clone(), run_list(&args)),
    };
    match result {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(Failure(code, line)) => {
            eprintln!("tabecho conns: {socket}: {line}");
            ExitCode::from(code)
        }
    }
}

fn run_list(args: &ConnsArgs) -> Result<(), Failure> {
    let query = ListQuery {
        sort: args.sort,
        limit: args.limit,
        source: args.source,
        reactor: args.reactor,
    };
    let request = format!(
        "GET {CONNECTIONS_PATH}?{} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        query.to_query()
    );
    let body = exchange(&args.socket, request.as_bytes())?;
    let mut out = io::stdout().lock();
    let written = if args.json {
        out.write_all(&body)
    } else {
        let rows = decode_rows(&body).map_err(|e| Failure::failed(format!("bad answer: {e}")))?;
        out.write_all(table(&rows).as_bytes())
    };
    written
        .and_then(|()| out.flush())
        .map_err(|e| Failure::failed(format!("cannot write to standard output: {e}")))
}

fn run_close(args: &CloseArgs) -> Result<(), Failure> {
    let filter = CloseFilter {
        id: args.id,
        source: args.source,
        min_memory: args.min_memory.map(|s| s.0 as u64),
        idle_over: args.idle_over,
        age_over: args.age_over,
        dry_run: args.dry_run,
    };
    // The flags' group requires a filter (exit 2); the server would refuse none (400).
    debug_assert!(filter.has_filter());
    let form = filter.to_form();
    let request = format!(
        "POST {CLOSE_PATH} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: {FORM_CONTENT_TYPE}\r\nContent-Length: {}\r\n\r\n{form}",
        form.len()
    );
    let body = exchange(&args.socket, request.as_bytes())?;
    let answer =
        CloseAnswer::parse(&body).map_err(|e| Failure::failed(format!("bad answer: {e}")))?;
    let n = answer.matched;
    let noun = if n == 1 { "connection" } else { "connections" };
    let line = if answer.dry_run {
        format!("would close {n} {noun}\n")
    } else {
        format!("closed {n} {noun}\n")
    };
    let mut out = io::stdout().lock();
    out.write_all(line.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Failure::failed(format!("cannot write to standard output: {e}")))
}

/// Sends `request` on the admin socket and returns the body of a 200 answer.
fn exchange(socket: &SocketArgs, request: &[u8]) -> Result<Vec<u8>, Failure> {
    let mut s = UnixStream::connect(&socket.admin.0).map_err(connect_failure)?;
    let deadline = Instant::now() + socket.timeout;
    let io_failure = |e: io::Error| Failure::failed(read_error(&e, socket.timeout));
    s.set_write_timeout(Some(socket.timeout))
        .map_err(io_failure)?;
    s.write_all(request).map_err(io_failure)?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Failure::failed(format!(
                "no whole answer within {}",
                DurationArg(socket.timeout)
            )));
        }
        s.set_read_timeout(Some(left)).map_err(io_failure)?;
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) if answer.len() + n > MAX_ANSWER => {
                return Err(Failure::failed(format!(
                    "bad answer: longer than {}",
                    Size(MAX_ANSWER)
                )))
            }
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_failure(e)),
        }
    }
    let answer = parse_answer(&answer).map_err(|e| Failure::failed(format!("bad answer: {e}")))?;
    match answer.status {
        200 => Ok(answer.body),
        403 => Err(Failure(
            EXIT_NOT_ALLOWED,
            format!("not allowed (403): {}", first_line(&answer.body)),
        )),
        status => Err(Failure::failed(format!(
            "the server answered {status}: {}",
            first_line(&answer.body)
        ))),
    }
}

/// The failure of a connect: no such socket (3), not allowed (4), or another (1).
fn connect_failure(e: io::Error) -> Failure {
    match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => {
            Failure(EXIT_NO_SOCKET, format!("no such socket: {e}"))
        }
        io::ErrorKind::ConnectionRefused => Failure(
            EXIT_NO_SOCKET,
            format!("no server listens on this socket: {e}"),
        ),
        io::ErrorKind::PermissionDenied => Failure(
            EXIT_NOT_ALLOWED,
            format!("not allowed: {e} (only the server's own user and root may use it)"),
        ),
        _ => Failure::failed(format!("cannot connect: {e}")),
    }
}

/// A failed read or write of the exchange, in words.
fn read_error(e: &io::Error, timeout: Duration) -> String {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            format!("no whole answer within {}", DurationArg(timeout))
        }
        _ => format!("the exchange failed: {e}"),
    }
}

/// The first line of a refusal's body, for the error line.
fn first_line(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    text.lines().next().unwrap_or("").trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn the_admin_socket_is_unix_only() {
        assert_eq!(
            "unix:/run/x.sock".parse::<AdminSocket>().map(|s| s.0),
            Ok(PathBuf::from("/run/x.sock"))
        );
        assert!("/run/x.sock".parse::<AdminSocket>().is_err());
        assert!("unix:".parse::<AdminSocket>().is_err());
        assert!("127.0.0.1:9000".parse::<AdminSocket>().is_err());
        assert_eq!(
            AdminSocket(DEFAULT_SOCKET.into()).to_string(),
            "unix:/run/tabecho/admin.sock"
        );
    }
}
