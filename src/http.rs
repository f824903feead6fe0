//! One HTTP/1.x connection of an endpoint served on a reactor's loop (the metrics
//! endpoint, `serve --metrics`, and the admin endpoint, `serve --admin`): request heads in
//! (parsed by `httparse`), a body where the endpoint takes one, one response out at a time,
//! keep-alive. Pure: it is handed a non-blocking stream ([`Transport`]) and the time in
//! microseconds; the reactor owns the socket, the clock, the timer, the buffer budget and
//! the answers (`server::reactor::http_endpoint`).
//!
//! ```text
//!   Head ── a whole head ──▶ Answering ── respond() ──▶ Writing ── all written ──┬─▶ Head
//!    │    (and its body;     (the reactor     (30 s without a      keep-alive ──┘
//!    │     5 s from its       gathers, 2 s)    byte written)       close ──▶ Lingering ─▶ end
//!    │     first byte)
//!    ├─ over 8 KiB: 431 ──▶ Writing ──▶ Lingering (write side shut, input read and dropped,
//!    ├─ garbage, no Host: 400 ┘                     until EOF or 2 s)
//!    ├─ metrics: other paths 404, other methods 405: answered here, keep-alive as asked
//!    └─ admin: a body over admin::MAX_BODY: 413 and a close, before a byte of it is read
//! ```
//!
//! What a head asks depends on the endpoint's [`Site`]: the metrics endpoint routes GET
//! and HEAD of `/metrics` and `/ready` and refuses any body; the admin endpoint hands
//! every request to the reactor whole ([`HttpConn::message`]), its body framed by
//! `Content-Length`, for `admin::parse_request` to judge.
//!
//! Files: this one, the state machine; `http/message.rs`, a head parsed into what is
//! asked and a response built.
//!
//! # Invariants
//! - Always at most one response held: input is read only in `Head`, so a client that
//!   does not read its responses stops being read; its further requests wait in the
//!   kernel's buffers, which are bounded.
//! - `input` always holds at most [`Site::input_capacity`] bytes ([`MAX_HEAD`] + 1, and
//!   the largest body the site takes), and its capacity is always 0 (between requests) or
//!   exactly that (while a request arrives): [`HttpConn::drive`] grows what the connection
//!   holds by at most [`Site::drive_growth`].
//! - While `Answering`, `input` starts with the request being answered, head and body,
//!   whole: [`HttpConn::message`] reads it there, and the answer drops it.
//! - Always one deadline ([`HttpConn::deadline_us`]), set by the state: the reactor's one
//!   timer for the connection follows it.

mod message;

use std::borrow::Cow;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::time::Duration;

use message::{build_response, parse, Parsed};
pub use message::{Message, Request, Route, Status, MAX_HEADERS, TEXT};

/// At most this many connections at once per endpoint; the next is answered 503 and
/// closed. A Prometheus server keeps one connection per target; 64 leaves room for several
/// Prometheus replicas, `tabecho stats` and a person with curl (or `tabecho conns`), and
/// bounds what an endpoint may hold to 64 requests and 64 responses.
pub const MAX_CONNECTIONS: usize = 64;

/// What an endpoint serves, which decides what a request head asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    /// `serve --metrics`: GET and HEAD of `/metrics` and `/ready`, no request body; other
    /// paths (404) and methods (405) answered here.
    Metrics,
    /// `serve --admin`: every request goes to the reactor ([`Route::Admin`]), with a body
    /// of at most [`crate::admin::MAX_BODY`] framed by `Content-Length`.
    Admin,
}

impl Site {
    /// The largest request body taken: 0 for the metrics endpoint.
    pub const fn max_body(self) -> usize {
        match self {
            Site::Metrics => 0,
            Site::Admin => crate::admin::MAX_BODY,
        }
    }

    /// The input buffer's capacity while a request arrives: a head one byte past
    /// [`MAX_HEAD`] (which tells a head too large) and the largest body.
    pub const fn input_capacity(self) -> usize {
        MAX_HEAD + 1 + self.max_body()
    }

    /// The most [`HttpConn::drive`] adds to [`HttpConn::held_bytes`]: the input buffer and
    /// an answer built here (404, 405, 413).
    pub const fn drive_growth(self) -> usize {
        self.input_capacity() + MAX_RESPONSE_HEAD + SMALL_BODY_MAX
    }
}

/// The largest request head accepted, request line and headers: Prometheus sends about
/// 300 bytes, and 8 KiB is the limit nginx (`large_client_header_buffers`) and Apache
/// (`LimitRequestLine`) start from. A longer head gets 431.
pub const MAX_HEAD: usize = 8 * 1024;

/// How long a request head may take to arrive whole, from its first byte (or from the
/// accept, for the first request): a client that trickles a head is closed after this.
/// 5 s is long for a scraper on a LAN (a head is one packet) and short enough that slow
/// heads cannot keep the 64 slots taken for long.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a keep-alive connection may sit between requests, and a response go without
/// a byte written, before the connection is closed. Prometheus scrapes every 15 s by
/// default (60 s at most in common setups is rare): 30 s keeps its connection across one
/// interval of the default, and frees a slot held by a scraper that went away.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the reactor may take to answer a request (a server of several reactors
/// gathers their snapshots): past it the answer is 503. Prometheus' default scrape
/// timeout is 10 s; 2 s leaves room and reports a stalled reactor rather than hanging.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a connection closing after an error (400, 431) or a `Connection: close`
/// answer reads and drops its input before the close: enough for a client on loopback or
/// a LAN to read the answer and close first (so our close sends no reset that would erase
/// the answer), bounded so a client that keeps sending cannot keep the slot.
pub const LINGER: Duration = Duration::from_secs(2);

/// The most a response head built here takes (status line and three headers); bodies
/// come on top.
pub const MAX_RESPONSE_HEAD: usize = 160;

/// The most [`HttpConn::drive`] adds to [`HttpConn::held_bytes`] at any site
/// ([`Site::drive_growth`] of the admin endpoint's, the larger).
pub const MAX_DRIVE_GROWTH: usize = Site::Admin.drive_growth();

/// Bytes read and dropped per [`HttpConn::drive`] while lingering; the rest on the next
/// call (`Next::Again`): a client that floods its closing connection gets no more turn
/// time than that.
const LINGER_READ_PER_DRIVE: usize = 64 * 1024;

/// The longest body of an answer built here (404, 405, 413).
const SMALL_BODY_MAX: usize = 32;

/// `503` and a close, for a request the server cannot take: no room under the buffer
/// budget, or no slot left ([`TOO_MANY_CONNECTIONS`] is this answer).
pub const UNAVAILABLE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 12\r\nConnection: close\r\n\r\nunavailable\n";
/// What a connection past the limit is sent before its close.
pub const TOO_MANY_CONNECTIONS: &[u8] = UNAVAILABLE;

/// A socket the connection reads from and writes to, non-blocking.
pub trait Transport: Read + Write {
    /// Shuts the write side: the peer reads EOF after what was written.
    fn shutdown_write(&mut self) -> io::Result<()>;
}

impl Transport for mio::net::TcpStream {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

impl Transport for crate::stream::Stream {
    fn shutdown_write(&mut self) -> io::Result<()> {
        crate::stream::Stream::shutdown_write(self)
    }
}

/// Why a connection ends (logged at debug; the echo counters do not count these).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpClose {
    /// The client closed between requests, or after its answer.
    Eof,
    /// The client closed in the middle of a head, or the socket failed.
    Error,
    /// A head did not arrive whole within [`HEAD_TIMEOUT`].
    HeadTimeout,
    /// [`IDLE_TIMEOUT`] between requests, or without a byte of a response written.
    Idle,
    /// The answer was sent and the connection lingered out ([`LINGER`]) or saw EOF.
    Done,
    /// No room under the buffer budget to read a head (the reactor's decision).
    NoRoom,
    /// The server's loop ended (the reactor's decision).
    Shutdown,
}

/// What the reactor does next with the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Blocked on the socket, or waiting for [`HttpConn::respond`]: wait for an event or
    /// the deadline.
    Wait,
    /// A request to answer with [`HttpConn::respond`] (now or later), then `drive` again.
    Answer(Request),
    /// The work bound of one call was reached with input left: call again next turn (the
    /// socket is edge-triggered: no event will come for what is already there).
    Again,
    /// Close it.
    Close(HttpClose),
}

/// What a passed deadline means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// Close the connection.
    Close(HttpClose),
    /// The answer is late: respond 503 ([`HttpConn::respond`]).
    AnswerLate,
}

/// Where the connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for a request head. `started_us`: when the head's first byte arrived (or
    /// the connection opened, for the first); `None` between requests since `since_us`.
    Head {
        started_us: Option<u64>,
        since_us: u64,
    },
    /// A request handed to the reactor at `since_us`, not answered yet: `input[..len]`
    /// is the request, its head `input[..head_len]` and its body the rest.
    Answering {
        request: Request,
        since_us: u64,
        head_len: usize,
        len: usize,
    },
    /// Writing the one response; `since_us`: the last byte written (or the start).
    Writing { close_after: bool, since_us: u64 },
    /// Answered and the write side shut: reading and dropping input until EOF, from
    /// `since_us` for at most [`LINGER`].
    Lingering { since_us: u64 },
}

/// An endpoint connection's state machine, buffers included.
#[derive(Debug)]
pub struct HttpConn {
    /// What the endpoint serves.
    site: Site,
    /// Request bytes read and not yet answered: always at most
    /// [`Site::input_capacity`].
    input: Vec<u8>,
    /// The one response, whole; `output[written..]` is left to send.
    output: Cow<'static, [u8]>,
    /// Bytes of `output` sent.
    written: usize,
    state: State,
}

impl HttpConn {
    /// A connection of `site` accepted at `now_us`: its first head is due within
    /// [`HEAD_TIMEOUT`].
    pub fn new(site: Site, now_us: u64) -> HttpConn {
        HttpConn {
            site,
            input: Vec::new(),
            output: Cow::Borrowed(&[]),
            written: 0,
            state: State::Head {
                started_us: Some(now_us),
                since_us: now_us,
            },
        }
    }

    /// Buffer bytes held: the head buffer and the response.
    pub fn held_bytes(&self) -> usize {
        let output = match &self.output {
            Cow::Owned(v) => v.capacity(),
            Cow::Borrowed(_) => 0,
        };
        self.input.capacity() + output
    }

    /// The most the next [`HttpConn::drive`] can add to [`HttpConn::held_bytes`]: an
    /// input buffer and a small answer if it may read a request
    /// ([`Site::drive_growth`]), else 0 (waiting for the reactor's answer, closing after
    /// one, or answering and closing).
    pub fn growth_bound(&self) -> usize {
        match self.state {
            State::Head { .. }
            | State::Writing {
                close_after: false, ..
            } => self.site.drive_growth(),
            _ => 0,
        }
    }

    /// When the state's time is up, in microseconds.
    pub fn deadline_us(&self) -> u64 {
        let after = |since: u64, d: Duration| since + d.as_micros() as u64;
        match self.state {
            State::Head {
                started_us: Some(t),
                ..
            } => after(t, HEAD_TIMEOUT),
            State::Head { since_us, .. } => after(since_us, IDLE_TIMEOUT),
            State::Answering { since_us, .. } => after(since_us, ANSWER_TIMEOUT),
            State::Writing { since_us, .. } => after(since_us, IDLE_TIMEOUT),
            State::Lingering { since_us } => after(since_us, LINGER),
        }
    }

    /// What it means that the time is `now_us`: `None` before the deadline.
    pub fn expired(&self, now_us: u64) -> Option<Expired> {
        if now_us < self.deadline_us() {
            return None;
        }
        Some(match self.state {
            State::Head {
                started_us: Some(_),
                ..
            } => Expired::Close(HttpClose::HeadTimeout),
            State::Head { .. } | State::Writing { .. } => Expired::Close(HttpClose::Idle),
            State::Answering { .. } => Expired::AnswerLate,
            State::Lingering { .. } => Expired::Close(HttpClose::Done),
        })
    }

    /// The request being answered, if the reactor owes one.
    pub fn answering(&self) -> Option<Request> {
        match self.state {
            State::Answering { request, .. } => Some(request),
            _ => None,
        }
    }

    /// The request being answered, whole (method, target, `Content-Type`, body), if the
    /// reactor owes one: what an admin request is judged by.
    pub fn message(&self) -> Option<Message<'_>> {
        match self.state {
            State::Answering { head_len, len, .. } => {
                Message::parse(&self.input[..head_len], &self.input[head_len..len])
            }
            _ => None,
        }
    }

    /// Answers the request handed out by [`Next::Answer`] with `status` and `body` (of
    /// `content_type`); then `drive` sends it. Does nothing if no request is owed.
    /// A 403 closes the connection: a peer refused must not hold a slot that an allowed
    /// one needs.
    pub fn respond(&mut self, status: Status, content_type: &str, body: &[u8], now_us: u64) {
        let Some(mut request) = self.answered() else {
            return;
        };
        request.keep_alive &= status != Status::Forbidden;
        let response = build_response(status, content_type, body, &request);
        self.start_writing(Cow::Owned(response), !request.keep_alive, now_us);
    }

    /// Answers the owed request with a 503 and a close that need no buffer memory (the
    /// budget had no room for the answer).
    pub fn respond_unavailable(&mut self, now_us: u64) {
        if self.answered().is_some() {
            self.start_writing(Cow::Borrowed(UNAVAILABLE), true, now_us);
        }
    }

    /// The request owed, its bytes dropped from the input now that it is answered.
    fn answered(&mut self) -> Option<Request> {
        let State::Answering { request, len, .. } = self.state else {
            return None;
        };
        self.input.drain(..len);
        Some(request)
    }

    fn start_writing(&mut self, response: Cow<'static, [u8]>, close_after: bool, now_us: u64) {
        self.output = response;
        self.written = 0;
        self.state = State::Writing {
            close_after,
            since_us: now_us,
        };
    }

    /// Moves the connection as far as the socket allows at `now_us`: sends the response,
    /// reads and parses a head, lingers. One request per call at most.
    pub fn drive(&mut self, s: &mut impl Transport, now_us: u64) -> Next {
        loop {
            match self.state {
                State::Writing { close_after, .. } => {
                    if let Some(next) = self.write(s, now_us) {
                        return next;
                    }
                    // All written: free it, and go on.
                    self.output = Cow::Borrowed(&[]);
                    self.written = 0;
                    if close_after {
                        if s.shutdown_write().is_err() {
                            return Next::Close(HttpClose::Error);
                        }
                        self.input = Vec::new();
                        self.state = State::Lingering { since_us: now_us };
                    } else {
                        self.state = State::Head {
                            started_us: (!self.input.is_empty()).then_some(now_us),
                            since_us: now_us,
                        };
                    }
                }
                State::Answering { .. } => return Next::Wait,
                State::Lingering { .. } => return linger(s),
                State::Head { started_us, .. } => {
                    match parse(&self.input, self.site) {
                        Parsed::Partial => {}
                        Parsed::Request(request, head_len, len) => {
                            // Kept until answered: `message` reads it there.
                            self.state = State::Answering {
                                request,
                                since_us: now_us,
                                head_len,
                                len,
                            };
                            return Next::Answer(request);
                        }
                        Parsed::Answered(response, keep_alive, len) => {
                            self.input.drain(..len);
                            self.start_writing(Cow::Owned(response), !keep_alive, now_us);
                            continue;
                        }
                        Parsed::Rejected(response) => {
                            self.start_writing(Cow::Borrowed(response), true, now_us);
                            continue;
                        }
                    }
                    if let Some(next) = self.read(s, started_us, now_us) {
                        return next;
                    }
                }
            }
        }
    }

    /// Sends what is left of the response; `None` once all of it is sent.
    fn write(&mut self, s: &mut impl Transport, now_us: u64) -> Option<Next> {
        while self.written < self.output.len() {
            match s.write(&self.output[self.written..]) {
                Ok(0) => return Some(Next::Close(HttpClose::Error)),
                Ok(n) => {
                    self.written += n;
                    if let State::Writing { since_us, .. } = &mut self.state {
                        *since_us = now_us;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(Next::Wait),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Some(Next::Close(HttpClose::Error)),
            }
        }
        None
    }

    /// One read into the input buffer; `None` if bytes came (parse them).
    fn read(
        &mut self,
        s: &mut impl Transport,
        started_us: Option<u64>,
        now_us: u64,
    ) -> Option<Next> {
        let len = self.input.len();
        let capacity = self.site.input_capacity();
        // Parse refuses a head past MAX_HEAD, and a whole head's body fits after it.
        debug_assert!(
            len < capacity,
            "parse leaves {len} of {capacity} bytes unjudged"
        );
        // Exactly MAX_HEAD + 1 and the largest body: one byte past the head's limit tells
        // a head too large.
        self.input.reserve_exact(capacity - len);
        self.input.resize(capacity, 0);
        let result = s.read(&mut self.input[len..]);
        let got = match &result {
            Ok(n) => *n,
            Err(_) => 0,
        };
        self.input.truncate(len + got);
        match result {
            // Closed with no head begun (between requests, or before the first): an end.
            Ok(0) if len == 0 => Some(Next::Close(HttpClose::Eof)),
            Ok(0) => Some(Next::Close(HttpClose::Error)),
            Ok(_) => {
                if started_us.is_none() {
                    self.state = State::Head {
                        started_us: Some(now_us),
                        since_us: now_us,
                    };
                }
                None
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if self.input.is_empty() {
                    self.input = Vec::new(); // nothing held between requests
                }
                Some(Next::Wait)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => None,
            Err(_) => Some(Next::Close(HttpClose::Error)),
        }
    }
}

/// Reads and drops what a closing connection's client still sends, until EOF.
fn linger(s: &mut impl Transport) -> Next {
    let mut sink = [0u8; 4096];
    let mut dropped = 0;
    while dropped < LINGER_READ_PER_DRIVE {
        match s.read(&mut sink) {
            Ok(0) => return Next::Close(HttpClose::Done),
            Ok(n) => dropped += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Wait,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // A reset after our answer: it was sent; nothing more to do.
            Err(_) => return Next::Close(HttpClose::Done),
        }
    }
    Next::Again
}

#[cfg(test)]
mod tests;
