//! `tabecho send`: send each message as one frame, print each reply on its own line.
//!
//! The original Go client, grown up: `aaaa` when no message is given, `-` for lines from
//! standard input (an interactive session), one clear line and a distinct exit code for
//! each way it can fail.

use std::ffi::OsString;
use std::io::{self, BufRead, Write};
use std::os::unix::ffi::OsStrExt;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use tabecho::addr::{parse_duration, ListenAddr};
use tabecho::client::{Client, ClientError};
use tabecho::config::DEFAULT_LISTEN;
use tabecho::protocol::DELIMITER;

/// Every reply arrived.
const EXIT_OK: u8 = 0;
/// Another I/O failure (reading standard input, writing standard output, a reset...).
const EXIT_IO: u8 = 1;
/// A bad command line, or a message holding a TAB.
const EXIT_USAGE: u8 = 2;
/// Could not connect: refused, no such socket, or the connect timed out.
const EXIT_CONNECT: u8 = 3;
/// No complete reply within --timeout.
const EXIT_TIMEOUT: u8 = 4;
/// The server closed the connection before replying.
const EXIT_CLOSED: u8 = 5;
/// The server answered with an `error: ...` line.
const EXIT_ERROR_REPLY: u8 = 6;

/// What the original client sends when given nothing.
const DEFAULT_MESSAGE: &[u8] = b"aaaa";

/// Flags of `tabecho send`.
#[derive(Args)]
#[command(after_help = "\
Each MESSAGE is sent as one frame (the message, then a TAB); each reply is printed
without its TAB, one per line. With no MESSAGE, sends `aaaa`. `-` reads standard input
and sends each line as a frame, printing replies as they come (if the server closed an
idle connection while waiting for a line, send reconnects).

Exit codes:
  0  every reply arrived
  1  another I/O failure
  2  bad command line, or a MESSAGE holding a TAB (it would be two frames)
  3  could not connect (refused, no such socket, connect timed out)
  4  no complete reply within --timeout
  5  the server closed the connection before replying
  6  the server answered with an `error: ...` line")]
pub struct SendArgs {
    /// Server address: host:port or unix:/path.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    addr: ListenAddr,
    /// The longest wait to connect and for each reply (as in 2s, 250ms).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,
    /// Messages to send, one frame each; `-` reads lines from standard input.
    messages: Vec<OsString>,
}

/// A failure: the exit code and the line for stderr.
struct Failure(u8, String);

pub fn run(args: SendArgs) -> ExitCode {
    match send_all(&args) {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(Failure(code, line)) => {
            eprintln!("tabecho send: {line}");
            ExitCode::from(code)
        }
    }
}

fn send_all(args: &SendArgs) -> Result<(), Failure> {
    let messages: Vec<&[u8]> = if args.messages.is_empty() {
        vec![DEFAULT_MESSAGE]
    } else {
        args.messages.iter().map(|m| m.as_bytes()).collect()
    };
    // Refuse before connecting, so nothing at all is sent.
    for message in &messages {
        check_no_tab(message)?;
    }
    let mut client = connect(args)?;
    let stdout = io::stdout();
    let mut out = stdout.lock();
    for message in messages {
        if message == b"-" {
            send_stdin(args, &mut client, &mut out)?;
        } else {
            exchange(&mut client, message, &mut out)?;
        }
    }
    Ok(())
}

/// Sends each line of standard input, reconnecting if the server reaped the idle connection.
fn send_stdin(args: &SendArgs, client: &mut Client, out: &mut impl Write) -> Result<(), Failure> {
    let stdin = io::stdin();
    let mut line = Vec::new();
    let mut input = stdin.lock();
    loop {
        line.clear();
        match input.read_until(b'\n', &mut line) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(Failure(EXIT_IO, format!("reading standard input: {e}"))),
        }
        if line.ends_with(b"\n") {
            line.pop();
            if line.ends_with(b"\r") {
                line.pop();
            }
        }
        check_no_tab(&line)?;
        // A person may pause longer than the server's idle timeout (2 s by default).
        if client.server_closed().unwrap_or(true) {
            eprintln!("tabecho send: the server closed the idle connection; reconnecting");
            *client = connect(args)?;
        }
        exchange(client, &line, out)?;
    }
}

fn check_no_tab(message: &[u8]) -> Result<(), Failure> {
    match memchr::memchr(DELIMITER, message) {
        Some(at) => Err(Failure(
            EXIT_USAGE,
            format!(
                "message {:?}: {}",
                String::from_utf8_lossy(message),
                ClientError::TabInFrame(at)
            ),
        )),
        None => Ok(()),
    }
}

fn connect(args: &SendArgs) -> Result<Client, Failure> {
    Client::connect(&args.addr, Some(args.timeout)).map_err(|e| {
        let why = if e.kind() == io::ErrorKind::TimedOut || e.kind() == io::ErrorKind::WouldBlock {
            format!("timed out after {:?}", args.timeout)
        } else {
            e.to_string()
        };
        Failure(
            EXIT_CONNECT,
            format!("could not connect to {}: {why}", args.addr),
        )
    })
}

/// Sends one frame, prints its reply.
fn exchange(client: &mut Client, message: &[u8], out: &mut impl Write) -> Result<(), Failure> {
    let reply = client.request(message).map_err(classify)?;
    let printed = out
        .write_all(&reply)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    printed.map_err(|e| Failure(EXIT_IO, format!("writing standard output: {e}")))
}

fn classify(e: io::Error) -> Failure {
    match ClientError::of(&e) {
        Some(ClientError::TabInFrame(_)) => Failure(EXIT_USAGE, e.to_string()),
        Some(ClientError::ServerClosed) => Failure(EXIT_CLOSED, e.to_string()),
        Some(ClientError::ErrorReply(line)) => {
            Failure(EXIT_ERROR_REPLY, format!("the server answered: {line}"))
        }
        None if e.kind() == io::ErrorKind::TimedOut => {
            Failure(EXIT_TIMEOUT, "no reply within --timeout".to_string())
        }
        None if matches!(
            e.kind(),
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
        ) =>
        {
            Failure(
                EXIT_CLOSED,
                format!("the server closed the connection: {e}"),
            )
        }
        None => Failure(EXIT_IO, e.to_string()),
    }
}
