//! The wire format: the delimiter, the reply prefix and the error lines, in one place.
//!
//! Everything a peer can observe on the wire is spelled here and nowhere else;
//! `docs/PROTOCOL.md` is the prose version of this file.

/// The frame delimiter: a frame is every byte before a TAB (0x09).
pub const DELIMITER: u8 = b'\t';

/// What every reply starts with, as in the original Go example (`"server got:" + msg`).
pub const REPLY_PREFIX: &[u8] = b"server got:";

/// What every error line the server sends starts with (`error: too many connections`, ...):
/// clients tell an error line from a reply by it.
pub const ERROR_REPLY_PREFIX: &[u8] = b"error:";

/// Sent, then the connection is closed, when the server is at `--max-connections`.
pub const TOO_MANY_CONNECTIONS: &[u8] = b"error: too many connections\t";

/// Sent, then the connection is closed as [`TOO_MANY_CONNECTIONS`] is, when the
/// connection's source (its IPv4 address, IPv6 network or Unix uid) already has
/// `--max-connections-per-source` connections open.
pub const TOO_MANY_CONNECTIONS_FROM_SOURCE: &[u8] =
    b"error: too many connections from your address\t";

/// Sent where it can still be read, then the connection is closed, when the server's
/// buffer-memory budget (`--max-buffer-memory`) is reached and this connection holds the
/// most: its buffered input and unsent replies are dropped.
pub const MEMORY_BUDGET_EXCEEDED: &[u8] = b"error: server buffer memory exhausted\t";

/// Sent where it can still be read, then the connection is closed, when an operator closes
/// it through the admin socket (`tabecho conns close`): as [`MEMORY_BUDGET_EXCEEDED`], its
/// buffered input and unsent replies are dropped.
pub const CLOSED_BY_ADMIN: &[u8] = b"error: closed by the server's administrator\t";

/// The longest error line the server sends (`frame_too_long` with a 20-digit limit).
pub const MAX_ERROR_LINE: usize = 64;

/// Appends the reply to the frame `head ++ tail` to `out`: `server got:` + frame + TAB.
///
/// The frame comes in two parts so that a frame split across reads (its head saved in the
/// connection, its tail in the read buffer) is answered without first being joined.
#[inline]
pub fn encode_reply(out: &mut Vec<u8>, head: &[u8], tail: &[u8]) {
    out.reserve(REPLY_PREFIX.len() + head.len() + tail.len() + 1);
    out.extend_from_slice(REPLY_PREFIX);
    if !head.is_empty() {
        // Only a frame split across reads has a head: no call to copy nothing.
        out.extend_from_slice(head);
    }
    out.extend_from_slice(tail);
    out.push(DELIMITER);
}

/// The error line sent before closing a connection whose frame exceeds `limit` bytes.
pub fn frame_too_long(limit: usize) -> Vec<u8> {
    format!("error: frame exceeds {limit} bytes\t").into_bytes()
}

/// The length of the reply to a frame of `frame_len` bytes.
#[inline]
pub const fn reply_len(frame_len: usize) -> usize {
    REPLY_PREFIX.len() + frame_len + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_is_prefix_frame_tab() {
        let mut out = Vec::new();
        encode_reply(&mut out, b"hel", b"lo");
        assert_eq!(out, b"server got:hello\t");
        assert_eq!(out.len(), reply_len(5));
    }

    #[test]
    fn empty_frame_reply() {
        let mut out = Vec::new();
        encode_reply(&mut out, b"", b"");
        assert_eq!(out, b"server got:\t");
    }

    #[test]
    fn frame_too_long_names_the_limit() {
        assert_eq!(frame_too_long(65536), b"error: frame exceeds 65536 bytes\t");
    }
}
