//! What the admin endpoint answers besides a listing: its refusals, each an HTTP status
//! ([`crate::http::Status`]) with one line of text saying why, and the count a close
//! answers with. Pure; the HTTP layer frames them (status line, `Content-Type`,
//! `Content-Length`, `Allow`).

use serde::{Deserialize, Serialize};

use crate::http::Status;

/// A request the endpoint refuses: the status, and one line saying why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What to answer.
    pub status: Status,
    /// Why, one line without its newline: `limit: "0" is not 1 to 1000`.
    pub reason: String,
}

impl Refusal {
    /// A refusal of `status` for `reason`.
    pub fn new(status: Status, reason: impl Into<String>) -> Refusal {
        let reason = reason.into();
        debug_assert!(!reason.contains('\n'), "one line: {reason:?}");
        Refusal { status, reason }
    }

    /// A 400 for `reason`.
    pub fn bad_request(reason: impl Into<String>) -> Refusal {
        Refusal::new(Status::BadRequest, reason)
    }

    /// The 403 of a peer whose uid is neither ours nor root's ([`super::peer_allowed`]).
    pub fn forbidden() -> Refusal {
        Refusal::new(
            Status::Forbidden,
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
}
