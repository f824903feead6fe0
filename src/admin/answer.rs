//! What the admin endpoint answers besides a listing: the statuses of its refusals, each
//! with one line of text saying why, and the count a close answers with. Pure; the HTTP
//! layer frames them (status line, `Content-Type`, `Content-Length`, `Allow`).

use serde::{Deserialize, Serialize};

/// A status the endpoint refuses a request with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminStatus {
    /// 400: a parameter unknown, repeated or malformed, or a close without a filter.
    BadRequest,
    /// 403: the peer's uid is neither the server's nor root's.
    Forbidden,
    /// 404: neither `/connections` nor `/connections/close`.
    NotFound,
    /// 405: a method the path does not take; `allow` is the `Allow` header's value.
    MethodNotAllowed {
        /// The methods the path takes, as the `Allow` header lists them.
        allow: &'static str,
    },
    /// 413: a body over [`super::MAX_BODY`].
    PayloadTooLarge,
    /// 415: a body that is not `application/x-www-form-urlencoded`.
    UnsupportedMediaType,
}

impl AdminStatus {
    /// The status code.
    pub fn code(self) -> u16 {
        match self {
            AdminStatus::BadRequest => 400,
            AdminStatus::Forbidden => 403,
            AdminStatus::NotFound => 404,
            AdminStatus::MethodNotAllowed { .. } => 405,
            AdminStatus::PayloadTooLarge => 413,
            AdminStatus::UnsupportedMediaType => 415,
        }
    }

    /// The status line's code and reason phrase (RFC 9110 §15).
    pub fn line(self) -> &'static str {
        match self {
            AdminStatus::BadRequest => "400 Bad Request",
            AdminStatus::Forbidden => "403 Forbidden",
            AdminStatus::NotFound => "404 Not Found",
            AdminStatus::MethodNotAllowed { .. } => "405 Method Not Allowed",
            AdminStatus::PayloadTooLarge => "413 Content Too Large",
            AdminStatus::UnsupportedMediaType => "415 Unsupported Media Type",
        }
    }

    /// The `Allow` header's value, for a 405 only (RFC 9110 §15.5.6 requires it there).
    pub fn allow(self) -> Option<&'static str> {
        match self {
            AdminStatus::MethodNotAllowed { allow } => Some(allow),
            _ => None,
        }
    }
}

impl From<AdminStatus> for crate::http::Status {
    fn from(status: AdminStatus) -> crate::http::Status {
        use crate::http::Status;
        match status {
            AdminStatus::BadRequest => Status::BadRequest,
            AdminStatus::Forbidden => Status::Forbidden,
            AdminStatus::NotFound => Status::NotFound,
            AdminStatus::MethodNotAllowed { allow } => Status::MethodNotAllowed { allow },
            AdminStatus::PayloadTooLarge => Status::PayloadTooLarge,
            AdminStatus::UnsupportedMediaType => Status::UnsupportedMediaType,
        }
    }
}

/// A request the endpoint refuses: the status, and one line saying why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What to answer.
    pub status: AdminStatus,
    /// Why, one line without its newline: `limit: "0" is not 1 to 1000`.
    pub reason: String,
}

impl Refusal {
    /// A refusal of `status` for `reason`.
    pub fn new(status: AdminStatus, reason: impl Into<String>) -> Refusal {
        let reason = reason.into();
        debug_assert!(!reason.contains('\n'), "one line: {reason:?}");
        Refusal { status, reason }
    }

    /// A 400 for `reason`.
    pub fn bad_request(reason: impl Into<String>) -> Refusal {
        Refusal::new(AdminStatus::BadRequest, reason)
    }

    /// The 403 of a peer whose uid is neither ours nor root's ([`super::peer_allowed`]).
    pub fn forbidden() -> Refusal {
        Refusal::new(
            AdminStatus::Forbidden,
            "only the server's own user and root may use the admin socket",
        )
    }

    /// The body: the reason and a newline (`text/plain; charset=utf-8`).
    pub fn body(&self) -> String {
        format!("{}\n", self.reason)
    }
}

/// A close's answer, one JSON object: `{"matched":30,"dry_run":false}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloseAnswer {
    /// The connections the filter matched: all of them closed (reason `admin`), or with
    /// `dry_run`, none of them, only counted.
    pub matched: u64,
    /// Whether this was a dry run, as the request said.
    pub dry_run: bool,
}

impl CloseAnswer {
    /// The body: the object and a newline (`application/json`).
    pub fn body(&self) -> String {
        // Two plain fields: serde_json cannot fail on them.
        let mut text = serde_json::to_string(self).unwrap_or_default();
        text.push('\n');
        text
    }

    /// A body as [`CloseAnswer::body`] writes it; the error is one line.
    pub fn parse(body: &[u8]) -> Result<CloseAnswer, String> {
        serde_json::from_slice(body).map_err(|e| format!("not a close answer: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_close_answer_is_one_json_line_that_parses_back() {
        let answer = CloseAnswer {
            matched: 30,
            dry_run: false,
        };
        assert_eq!(answer.body(), "{\"matched\":30,\"dry_run\":false}\n");
        assert_eq!(CloseAnswer::parse(answer.body().as_bytes()), Ok(answer));
        let err = CloseAnswer::parse(b"{\"closed\":3}").expect_err("another shape");
        assert!(err.starts_with("not a close answer"), "{err}");
    }

    #[test]
    fn only_a_405_has_an_allow_header() {
        let statuses = [
            AdminStatus::BadRequest,
            AdminStatus::Forbidden,
            AdminStatus::NotFound,
            AdminStatus::MethodNotAllowed { allow: "POST" },
            AdminStatus::PayloadTooLarge,
            AdminStatus::UnsupportedMediaType,
        ];
        for status in statuses {
            assert!(status.line().starts_with(&status.code().to_string()));
            assert_eq!(status.allow().is_some(), status.code() == 405, "{status:?}");
        }
    }
}
