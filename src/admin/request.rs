//! An admin request, from what the HTTP layer parsed (method, target, body) to what it
//! asks ([`AdminRequest`]) or a [`Refusal`]. Pure.
//!
//! Parameters come as `application/x-www-form-urlencoded` pairs: in the query string, and
//! for a close also in a body of that type; the two are read as one form.
//!
//! | parameter | of | value | default |
//! |---|---|---|---|
//! | `sort` | list | `memory`, `age` or `idle`: that one, largest first (then id) | `memory` |
//! | `limit` | list | 1 to [`MAX_LIMIT`] rows | [`DEFAULT_LIMIT`] |
//! | `source` | both | a CIDR (`10.0.0.0/8`, `::1`): the client's address is in it | any |
//! | `reactor` | list | the reactor's index, from 0 | every one |
//! | `id` | close | a connection's id | any |
//! | `min_memory` | close | a size (`64K`): memory charged at least that | any |
//! | `idle_over` | close | a duration (`30s`): idle longer than that | any |
//! | `age_over` | close | a duration: open longer than that | any |
//! | `dry_run` | close | empty, `1`, `true` (or `0`, `false`): count, close nothing | off |
//!
//! # Invariants
//! - A close always holds at least one filter ([`CloseFilter::has_filter`]): one without
//!   is refused (400), so that an empty form closes nothing instead of everything. Closing
//!   every connection takes saying so: `age_over=0s`.
//! - A parameter is always known, given once (query and body together) and well formed,
//!   or the request is refused naming it: a misspelt filter never widens a close.
//! - What [`ListQuery::to_query`] and [`CloseFilter::to_form`] write, [`parse_request`]
//!   reads back to the same value, durations to the microsecond (the duration parser
//!   computes in floating point); property-tested: the client and the server share one
//!   spelling.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::answer::Refusal;
use super::{
    form, CLOSE_PATH, CONNECTIONS_PATH, DEFAULT_LIMIT, FORM_CONTENT_TYPE, MAX_BODY, MAX_LIMIT,
};
use crate::addr::{parse_duration, DurationArg};
use crate::cidr::Cidr;
use crate::http::Status;
use crate::size::parse_size;

/// What a request asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminRequest {
    /// `GET /connections` (or `HEAD`): list connections.
    List(ListQuery),
    /// `POST /connections/close`: close the connections the filter matches.
    Close(CloseFilter),
}

/// What a listing is sorted by, largest first; ties go to the lower id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SortKey {
    /// Memory charged to the buffer budget (`memory`): who holds the memory.
    #[default]
    Memory,
    /// Time since the accept (`age`): the oldest first.
    Age,
    /// Time since the last progress (`idle`): the longest idle first.
    Idle,
}

impl SortKey {
    /// Every key, in the order of [`SortKey::NAMES`].
    pub const ALL: [SortKey; 3] = [SortKey::Memory, SortKey::Age, SortKey::Idle];
    /// Every key's name, as `sort=` and `--sort` take it.
    pub const NAMES: [&'static str; 3] = ["memory", "age", "idle"];

    /// Its name: `memory`, `age`, `idle`.
    pub fn name(self) -> &'static str {
        match self {
            SortKey::Memory => "memory",
            SortKey::Age => "age",
            SortKey::Idle => "idle",
        }
    }
}

impl FromStr for SortKey {
    type Err = String;

    fn from_str(s: &str) -> Result<SortKey, String> {
        SortKey::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("`{s}` is not memory, age or idle"))
    }
}

impl fmt::Display for SortKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// A listing's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListQuery {
    /// The order, largest first.
    pub sort: SortKey,
    /// At most this many rows: always 1 to [`MAX_LIMIT`].
    pub limit: usize,
    /// Only connections whose client address is in this network (Unix clients never are).
    pub source: Option<Cidr>,
    /// Only the connections of this reactor.
    pub reactor: Option<usize>,
}

impl Default for ListQuery {
    /// Every connection, by memory, [`DEFAULT_LIMIT`] rows.
    fn default() -> ListQuery {
        ListQuery {
            sort: SortKey::default(),
            limit: DEFAULT_LIMIT,
            source: None,
            reactor: None,
        }
    }
}

impl ListQuery {
    /// The query string (without `?`) that [`parse_request`] reads back as `self`.
    pub fn to_query(&self) -> String {
        let mut pairs = vec![
            format!("sort={}", self.sort.name()),
            format!("limit={}", self.limit),
        ];
        if let Some(source) = self.source {
            pairs.push(format!("source={}", form::encode(&source.to_string())));
        }
        if let Some(reactor) = self.reactor {
            pairs.push(format!("reactor={reactor}"));
        }
        pairs.join("&")
    }

    /// Whether the listing asks reactor `index` for its connections: a reactor the
    /// `reactor` parameter leaves out is not asked at all.
    pub fn asks(&self, index: usize) -> bool {
        self.reactor.is_none_or(|r| r == index)
    }

    /// A 400 if `reactor` names no reactor of a server of `reactors`.
    pub fn check_reactors(&self, reactors: usize) -> Result<(), Refusal> {
        match self.reactor {
            Some(r) if r >= reactors => Err(Refusal::bad_request(format!(
                "reactor: {r} is not a reactor of this server (0 to {})",
                reactors.saturating_sub(1)
            ))),
            _ => Ok(()),
        }
    }
}

/// A close's filters, combined with AND; a field left `None` does not filter.
///
/// # Invariants
/// - As parsed by [`parse_request`], always [`CloseFilter::has_filter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CloseFilter {
    /// The connection with this id.
    pub id: Option<u64>,
    /// Connections whose client address is in this network (Unix clients never are).
    pub source: Option<Cidr>,
    /// Connections charged at least this many bytes (`memory`).
    pub min_memory: Option<u64>,
    /// Connections idle for longer than this.
    pub idle_over: Option<Duration>,
    /// Connections open for longer than this.
    pub age_over: Option<Duration>,
    /// Count the matches and close none.
    pub dry_run: bool,
}

impl CloseFilter {
    /// Whether any filter is set (`dry_run` is none).
    pub fn has_filter(&self) -> bool {
        let CloseFilter {
            id,
            source,
            min_memory,
            idle_over,
            age_over,
            dry_run: _,
        } = self;
        id.is_some()
            || source.is_some()
            || min_memory.is_some()
            || idle_over.is_some()
            || age_over.is_some()
    }

    /// The form (a query string without `?`, or a body) that [`parse_request`] reads back
    /// as `self`.
    pub fn to_form(&self) -> String {
        let CloseFilter {
            id,
            source,
            min_memory,
            idle_over,
            age_over,
            dry_run,
        } = self;
        let mut pairs = Vec::new();
        if let Some(id) = id {
            pairs.push(format!("id={id}"));
        }
        if let Some(source) = source {
            pairs.push(format!("source={}", form::encode(&source.to_string())));
        }
        if let Some(bytes) = min_memory {
            pairs.push(format!("min_memory={bytes}"));
        }
        if let Some(d) = idle_over {
            pairs.push(format!("idle_over={}", DurationArg(*d)));
        }
        if let Some(d) = age_over {
            pairs.push(format!("age_over={}", DurationArg(*d)));
        }
        if *dry_run {
            pairs.push("dry_run=1".to_string());
        }
        pairs.join("&")
    }
}

/// The methods `/connections` takes.
const LIST_ALLOW: &str = "GET, HEAD";
/// The methods `/connections/close` takes.
const CLOSE_ALLOW: &str = "POST";

/// The parameters of a listing.
const LIST_PARAMS: [&str; 4] = ["sort", "limit", "source", "reactor"];
/// The parameters of a close.
const CLOSE_PARAMS: [&str; 6] = [
    "id",
    "source",
    "min_memory",
    "idle_over",
    "age_over",
    "dry_run",
];

/// What an admin request asks: `method` and `target` (the origin form, `/connections?...`)
/// as the request line has them, the `Content-Type` header's value if any, and the body
/// (the HTTP layer has checked `Content-Length` against [`MAX_BODY`]).
///
/// Refusals: 404 for another path, 405 (with `Allow`) for a method the path does not take,
/// 413 for a body over [`MAX_BODY`], 415 for a close's body of another type than
/// [`FORM_CONTENT_TYPE`], 400 for a listing with a body and for any parameter unknown,
/// repeated or malformed, and for a close without a filter.
pub fn parse_request(
    method: &str,
    target: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<AdminRequest, Refusal> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let list = match path {
        CONNECTIONS_PATH => true,
        CLOSE_PATH => false,
        _ => {
            return Err(Refusal::new(
                Status::NotFound,
                format!("no such path {path:?}: see {CONNECTIONS_PATH} or {CLOSE_PATH}"),
            ))
        }
    };
    let (allowed, allow) = if list {
        (matches!(method, "GET" | "HEAD"), LIST_ALLOW)
    } else {
        (method == "POST", CLOSE_ALLOW)
    };
    if !allowed {
        return Err(Refusal::new(
            Status::MethodNotAllowed { allow },
            format!("{path} takes {allow}, not {method}"),
        ));
    }
    let mut pairs = form::parse(query.as_bytes())
        .map_err(|e| Refusal::bad_request(format!("the query string: {e}")))?;
    if list {
        if !body.is_empty() {
            return Err(Refusal::bad_request(format!("{path} takes no body")));
        }
        let params = Params::check(pairs, &LIST_PARAMS)?;
        return list_query(&params).map(AdminRequest::List);
    }
    if body.len() > MAX_BODY {
        return Err(Refusal::new(
            Status::PayloadTooLarge,
            format!("the body is over {MAX_BODY} bytes"),
        ));
    }
    if !body.is_empty() {
        let media_type = content_type
            .map(|t| t.split(';').next().unwrap_or("").trim())
            .unwrap_or("");
        if !media_type.eq_ignore_ascii_case(FORM_CONTENT_TYPE) {
            return Err(Refusal::new(
                Status::UnsupportedMediaType,
                format!("the body must be {FORM_CONTENT_TYPE}, not {media_type:?}"),
            ));
        }
        pairs
            .extend(form::parse(body).map_err(|e| Refusal::bad_request(format!("the body: {e}")))?);
    }
    let params = Params::check(pairs, &CLOSE_PARAMS)?;
    close_filter(&params).map(AdminRequest::Close)
}

/// A request's parameters, each known and given once.
struct Params(Vec<(String, String)>);

impl Params {
    /// `pairs`, or a 400 naming the first one unknown (not in `known`) or repeated.
    fn check(pairs: Vec<(String, String)>, known: &[&str]) -> Result<Params, Refusal> {
        for (i, (name, _)) in pairs.iter().enumerate() {
            if !known.contains(&name.as_str()) {
                return Err(Refusal::bad_request(format!(
                    "unknown parameter {name:?}; this path takes {}",
                    known.join(", ")
                )));
            }
            if pairs[..i].iter().any(|(earlier, _)| earlier == name) {
                return Err(Refusal::bad_request(format!("{name} is given twice")));
            }
        }
        Ok(Params(pairs))
    }

    /// The value of `name`, parsed by `parse`; a 400 naming it if `parse` refuses it.
    fn get<T>(
        &self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, Refusal> {
        let Some((_, value)) = self.0.iter().find(|(n, _)| n == name) else {
            return Ok(None);
        };
        parse(value)
            .map(Some)
            .map_err(|e| Refusal::bad_request(format!("{name}: {e}")))
    }
}

fn list_query(params: &Params) -> Result<ListQuery, Refusal> {
    let defaults = ListQuery::default();
    Ok(ListQuery {
        sort: params.get("sort", str::parse)?.unwrap_or(defaults.sort),
        limit: params.get("limit", parse_limit)?.unwrap_or(defaults.limit),
        source: params.get("source", str::parse)?,
        reactor: params.get("reactor", |s| number::<usize>(s, "a reactor's index"))?,
    })
}

fn close_filter(params: &Params) -> Result<CloseFilter, Refusal> {
    let filter = CloseFilter {
        id: params.get("id", |s| number::<u64>(s, "a connection's id"))?,
        source: params.get("source", str::parse)?,
        min_memory: params.get("min_memory", |s| parse_size(s).map(|n| n as u64))?,
        idle_over: params.get("idle_over", parse_duration)?,
        age_over: params.get("age_over", parse_duration)?,
        dry_run: params.get("dry_run", parse_flag)?.unwrap_or(false),
    };
    if !filter.has_filter() {
        return Err(Refusal::bad_request(
            "a close needs a filter (id, source, min_memory, idle_over, age_over), so that \
             nothing closes every connection by mistake; for every one, say age_over=0s",
        ));
    }
    Ok(filter)
}

/// `limit`: 1 to [`MAX_LIMIT`].
fn parse_limit(s: &str) -> Result<usize, String> {
    s.parse::<usize>()
        .ok()
        .filter(|n| (1..=MAX_LIMIT).contains(n))
        .ok_or_else(|| format!("{s:?} is not 1 to {MAX_LIMIT}"))
}

/// A decimal number (digits only: no sign, no space); `what` names it in the error.
fn number<T: FromStr>(s: &str, what: &str) -> Result<T, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{s:?} is not {what}, a number"));
    }
    s.parse()
        .map_err(|_| format!("{s:?} is larger than any {what}"))
}

/// `dry_run`: present with no value, `1` or `true` is on; `0` or `false` is off.
fn parse_flag(s: &str) -> Result<bool, String> {
    match s {
        "" | "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        _ => Err(format!("{s:?} is not 1, true, 0 or false")),
    }
}

#[cfg(test)]
mod tests;
