//! HTTP messages of the endpoints: a request head parsed (by `httparse`) into what is
//! asked, and a response built. Pure; [`super::HttpConn`] holds the state around them.

use super::{Site, MAX_HEAD, MAX_RESPONSE_HEAD};

/// Headers parsed per request, at most: `httparse` parses into a fixed array. Prometheus
/// sends 5; more than 32 get 431, as a head too large.
pub const MAX_HEADERS: usize = 32;

/// `400` and a close: the head is not HTTP/1.x, a request has a body where the endpoint
/// takes none (or a body not framed by one `Content-Length`), an HTTP/1.1 request has no
/// Host (or any request has two), or the target is no path.
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
    /// Anything asked of the admin endpoint: the reactor reads it whole
    /// ([`super::HttpConn::message`]) and judges it (`admin::parse_request`).
    Admin,
}

/// A request as the admin endpoint judges it: borrowed from the connection's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    /// `GET`, `POST`, ...
    pub method: &'a str,
    /// The path and query (`/connections?sort=age`); an absolute-form target reduced to
    /// them.
    pub target: &'a str,
    /// The `Content-Type` header's value, if there is one (and it is UTF-8).
    pub content_type: Option<&'a str>,
    /// The body (`Content-Length` bytes).
    pub body: &'a [u8],
}

impl<'a> Message<'a> {
    /// The message of a head `parse` accepted whole, and its body.
    pub(super) fn parse(head: &'a [u8], body: &'a [u8]) -> Option<Message<'a>> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        request.parse(head).ok()?;
        let content_type = request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-type"))
            .and_then(|h| std::str::from_utf8(h.value).ok());
        Some(Message {
            method: request.method?,
            target: origin_path(request.path?)?,
            content_type,
            body,
        })
    }
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

/// A status an endpoint answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// 200: the page, ready, a listing, a close's count.
    Ok,
    /// 400: a request the endpoint cannot take (an admin parameter unknown or malformed).
    BadRequest,
    /// 403: a peer the admin endpoint does not serve.
    Forbidden,
    /// 404: no such path.
    NotFound,
    /// 405: a method the path does not take; `allow` is the `Allow` header's value.
    MethodNotAllowed {
        /// The methods the path takes.
        allow: &'static str,
    },
    /// 413: a body over what the endpoint takes.
    PayloadTooLarge,
    /// 415: a body of a type the endpoint does not take.
    UnsupportedMediaType,
    /// 500: the page could not be encoded.
    InternalError,
    /// 503: not ready (draining), a sibling's answer late, or no room to answer.
    Unavailable,
}

impl Status {
    /// The status line's code and reason.
    pub fn line(self) -> &'static str {
        match self {
            Status::Ok => "200 OK",
            Status::BadRequest => "400 Bad Request",
            Status::Forbidden => "403 Forbidden",
            Status::NotFound => "404 Not Found",
            Status::MethodNotAllowed { .. } => "405 Method Not Allowed",
            Status::PayloadTooLarge => "413 Content Too Large",
            Status::UnsupportedMediaType => "415 Unsupported Media Type",
            Status::InternalError => "500 Internal Server Error",
            Status::Unavailable => "503 Service Unavailable",
        }
    }
}

/// The methods the metrics endpoint takes, as its 405's `Allow` says.
const METRICS_ALLOW: &str = "GET, HEAD";

/// The result of parsing the input.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Parsed {
    /// More bytes needed.
    Partial,
    /// A request for the reactor: its head's length, and its length with its body.
    Request(Request, usize, usize),
    /// An answer built here (404, 405) and whether to keep the connection, `len` bytes
    /// of head.
    Answered(Vec<u8>, bool, usize),
    /// An error answer and a close.
    Rejected(&'static [u8]),
}

/// Parses a request at the start of `input`, as `site` takes requests.
pub(super) fn parse(input: &[u8], site: Site) -> Parsed {
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
    let mut chunked = false;
    // `Some(n)`: one Content-Length (or several equal ones, RFC 9112 §6.3) of n bytes;
    // `None` with `bad_length`: unreadable, or several that differ.
    let mut content_length: Option<u64> = None;
    let mut bad_length = false;
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
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            has_body = true;
            chunked = true;
        } else if name.eq_ignore_ascii_case("content-length") {
            let value = header.value.trim_ascii();
            let n = std::str::from_utf8(value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok());
            match (n, content_length) {
                (Some(n), None) => content_length = Some(n),
                (Some(n), Some(m)) if n == m => {}
                _ => bad_length = true,
            }
            if value != b"0" {
                has_body = true;
            }
        }
    }
    // RFC 9112 §3.2: an HTTP/1.1 request without Host, or any request with more than one,
    // is a 400.
    if hosts > 1 || (hosts == 0 && !http10) {
        return Parsed::Rejected(BAD_REQUEST);
    }
    if site == Site::Admin {
        return admin_request(
            input,
            len,
            method,
            path,
            http10,
            keep_alive,
            (chunked, bad_length, content_length),
        );
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
            let status = Status::MethodNotAllowed {
                allow: METRICS_ALLOW,
            };
            let response = build_response(status, TEXT, body, &request);
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
        len,
    )
}

/// What the body of a request to the admin endpoint is, by its headers: (a
/// `Transfer-Encoding` was given, the `Content-Length`s were unreadable or differed, the
/// `Content-Length`).
type Framing = (bool, bool, Option<u64>);

/// An admin request whose head (`head_len` bytes of `input`) parsed: handed to the reactor
/// once its body is in, whatever its method and path (the reactor answers 404 and 405, by
/// path). A body not framed by one `Content-Length` is a 400 and a close, a body over
/// [`Site::max_body`] a 413 and a close before a byte of it is read (the rest of the
/// stream cannot be framed without reading it).
fn admin_request(
    input: &[u8],
    head_len: usize,
    method: &str,
    target: &str,
    http10: bool,
    keep_alive: bool,
    (chunked, bad_length, content_length): Framing,
) -> Parsed {
    if chunked || bad_length || origin_path(target).is_none() {
        return Parsed::Rejected(BAD_REQUEST);
    }
    let body = content_length.unwrap_or(0);
    let max_body = Site::Admin.max_body();
    if body > max_body as u64 {
        let request = small(http10, false, method == "HEAD");
        let response = build_response(Status::PayloadTooLarge, TEXT, TOO_LARGE_BODY, &request);
        return Parsed::Answered(response, false, head_len);
    }
    // Bound: at most max_body (1 KiB).
    #[allow(clippy::cast_possible_truncation)]
    let len = head_len + body as usize;
    if input.len() < len {
        return Parsed::Partial;
    }
    Parsed::Request(
        Request {
            route: Route::Admin,
            head_only: method == "HEAD",
            keep_alive,
            http10,
        },
        head_len,
        len,
    )
}

/// The body of the 413 of an admin request over [`crate::admin::MAX_BODY`] (tested to
/// name it).
const TOO_LARGE_BODY: &[u8] = b"the body is over 1024 bytes\n";

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
    let allow = match status {
        Status::MethodNotAllowed { allow } => format!("Allow: {allow}\r\n"),
        _ => String::new(),
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
