//! HTTP messages of the metrics endpoint: a request head parsed (by `httparse`) into what
//! is asked, and a response built. Pure; [`super::HttpConn`] holds the state around them.

use super::{MAX_HEAD, MAX_RESPONSE_HEAD};

/// Headers parsed per request, at most: `httparse` parses into a fixed array. Prometheus
/// sends 5; more than 32 get 431, as a head too large.
pub const MAX_HEADERS: usize = 32;

/// `400` and a close: the head is not HTTP/1.x, a GET or HEAD has a body, an HTTP/1.1
/// request has no Host (or any request has two), or the target is no path.
pub(super) const BAD_REQUEST: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 12\r\nConnection: close\r\n\r\nbad request\n";
/// `431` and a close: the head is over [`MAX_HEAD`] or has over [`MAX_HEADERS`] headers.
pub(super) const HEAD_TOO_LARGE: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 21\r\nConnection: close\r\n\r\nrequest head too big\n";

/// What a request asks the reactor for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `/metrics`: the page.
    Metrics,
    /// `/ready`: whether the server accepts connections.
    Ready,
}

/// A request the reactor answers with [`super::HttpConn::respond`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// What is asked.
    pub route: Route,
    /// `HEAD`: the answer's head only.
    pub head_only: bool,
    /// The connection stays open after the answer (HTTP/1.1 unless `Connection: close`;
    /// HTTP/1.0 with `Connection: keep-alive`).
    pub keep_alive: bool,
    /// HTTP/1.0: a kept connection is announced with `Connection: keep-alive`.
    pub http10: bool,
}

/// A status the endpoint answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// 200: the page, or ready.
    Ok,
    /// 404: neither `/metrics` nor `/ready`.
    NotFound,
    /// 405: neither GET nor HEAD.
    MethodNotAllowed,
    /// 500: the page could not be encoded.
    InternalError,
    /// 503: not ready (draining), a sibling's snapshot late, or no room to answer.
    Unavailable,
}

impl Status {
    /// The status line's code and reason.
    fn line(self) -> &'static str {
        match self {
            Status::Ok => "200 OK",
            Status::NotFound => "404 Not Found",
            Status::MethodNotAllowed => "405 Method Not Allowed",
            Status::InternalError => "500 Internal Server Error",
            Status::Unavailable => "503 Service Unavailable",
        }
    }
}

/// The result of parsing the input.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Parsed {
    /// More bytes needed.
    Partial,
    /// A request for the reactor, `len` bytes of head.
    Request(Request, usize),
    /// An answer built here (404, 405) and whether to keep the connection, `len` bytes
    /// of head.
    Answered(Vec<u8>, bool, usize),
    /// An error answer and a close.
    Rejected(&'static [u8]),
}

/// Parses a request head at the start of `input`.
pub(super) fn parse(input: &[u8]) -> Parsed {
    if input.is_empty() {
        return Parsed::Partial;
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(input) {
        Ok(httparse::Status::Partial) if input.len() > MAX_HEAD => {
            return Parsed::Rejected(HEAD_TOO_LARGE)
        }
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Ok(httparse::Status::Complete(len)) if len > MAX_HEAD => {
            return Parsed::Rejected(HEAD_TOO_LARGE)
        }
        Ok(httparse::Status::Complete(len)) => len,
        Err(httparse::Error::TooManyHeaders) => return Parsed::Rejected(HEAD_TOO_LARGE),
        Err(_) => return Parsed::Rejected(BAD_REQUEST),
    };
    // A complete parse always has a method, a path and a version.
    let (Some(method), Some(path), Some(version)) = (request.method, request.path, request.version)
    else {
        return Parsed::Rejected(BAD_REQUEST);
    };
    let http10 = version == 0;
    let mut keep_alive = !http10;
    let mut has_body = false;
    let mut hosts = 0;
    for header in request.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("connection") {
            for token in header.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || (name.eq_ignore_ascii_case("content-length") && header.value.trim_ascii() != b"0")
        {
            has_body = true;
        }
    }
    // RFC 9112 §3.2: an HTTP/1.1 request without Host, or any request with more than one,
    // is a 400.
    if hosts > 1 || (hosts == 0 && !http10) {
        return Parsed::Rejected(BAD_REQUEST);
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => {
            // RFC 9110 §15.5.6: 405 with Allow, whatever the path. A body we do not read
            // would be taken for the next head: then the answer closes the connection.
            let keep_alive = keep_alive && !has_body;
            let request = small(http10, keep_alive, false);
            let body: &[u8] = b"only GET and HEAD\n";
            let response = build_response(Status::MethodNotAllowed, TEXT, body, &request);
            return Parsed::Answered(response, keep_alive, len);
        }
    };
    if has_body {
        // A GET or HEAD with a body: we never read one, so the next head could not be
        // found.
        return Parsed::Rejected(BAD_REQUEST);
    }
    let Some(path) = origin_path(path) else {
        return Parsed::Rejected(BAD_REQUEST);
    };
    // The query string, if any, is ignored (Prometheus sends none).
    let route = match path.split('?').next() {
        Some(crate::metrics::PATH) => Route::Metrics,
        Some(crate::metrics::READY_PATH) => Route::Ready,
        _ => {
            let request = small(http10, keep_alive, head_only);
            let body: &[u8] = b"see /metrics or /ready\n";
            let response = build_response(Status::NotFound, TEXT, body, &request);
            return Parsed::Answered(response, keep_alive, len);
        }
    };
    Parsed::Request(
        Request {
            route,
            head_only,
            keep_alive,
            http10,
        },
        len,
    )
}

/// The path and query of a GET or HEAD's request-target (RFC 9112 §3.2): the origin form
/// (`/metrics`) as it is, the absolute form (`http://host:port/metrics`, which a server
/// must accept, §3.2.2) without its scheme and authority (an empty path is `/`). `None`
/// for any other form: the authority and asterisk forms belong to CONNECT and OPTIONS,
/// which are answered 405 before this.
fn origin_path(target: &str) -> Option<&str> {
    if target.starts_with('/') {
        return Some(target);
    }
    let (scheme, rest) = target.split_once("://")?;
    if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
        return None;
    }
    // The authority ends at the first '/', '?' or the end (RFC 3986 §3.2).
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    if end == 0 {
        return None; // no authority: `http:///metrics`
    }
    match &rest[end..] {
        "" => Some("/"),
        path if path.starts_with('?') => Some("/"),
        path => Some(path),
    }
}

/// The plain-text content type of the small answers.
pub const TEXT: &str = "text/plain; charset=utf-8";

/// A request answered here (404, 405): how to frame the answer.
fn small(http10: bool, keep_alive: bool, head_only: bool) -> Request {
    Request {
        route: Route::Ready, // not used for framing
        head_only,
        keep_alive,
        http10,
    }
}

/// A whole response: status line, `Content-Type`, `Content-Length`, `Connection` when it
/// says something the version does not imply, then the body unless `HEAD`. 405 adds
/// `Allow`.
pub(super) fn build_response(
    status: Status,
    content_type: &str,
    body: &[u8],
    request: &Request,
) -> Vec<u8> {
    let connection = match (request.keep_alive, request.http10) {
        (false, _) => "Connection: close\r\n",
        (true, true) => "Connection: keep-alive\r\n",
        (true, false) => "",
    };
    let allow = if status == Status::MethodNotAllowed {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    let head = format!(
        "HTTP/1.1 {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}{connection}\r\n",
        status.line(),
        body.len()
    );
    debug_assert!(
        head.len() <= MAX_RESPONSE_HEAD,
        "response head {} > {MAX_RESPONSE_HEAD}: {head:?}",
        head.len()
    );
    let body = if request.head_only { &[][..] } else { body };
    let mut response = Vec::with_capacity(head.len() + body.len());
    response.extend_from_slice(head.as_bytes());
    response.extend_from_slice(body);
    response
}
