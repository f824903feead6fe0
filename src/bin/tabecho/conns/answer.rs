//! The admin endpoint's answer as `tabecho conns` reads it: the status, and the body framed
//! by `Content-Length` (the endpoint always sends one) or, without one, the rest up to EOF.

/// An HTTP answer, whole.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Answer {
    /// The status code.
    pub(super) status: u16,
    /// The body, whole.
    pub(super) body: Vec<u8>,
}

/// Headers read per answer, at most.
const MAX_ANSWER_HEADERS: usize = 32;

/// Parses an answer read to EOF: the status, and the body framed by `Content-Length` (or,
/// without one, everything after the head). A chunked answer, a body shorter or longer
/// than its `Content-Length`, or no head at all is an error.
pub(super) fn parse_answer(bytes: &[u8]) -> Result<Answer, String> {
    if bytes.is_empty() {
        return Err("the server closed the connection without answering".into());
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_ANSWER_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Err("the answer ended inside its head".into()),
        Err(e) => return Err(format!("not an HTTP answer ({e})")),
    };
    let status = response.code.ok_or("no status")?;
    let mut length = None;
    for header in response.headers.iter() {
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(format!(
                "Transfer-Encoding {:?}: the admin endpoint sends Content-Length",
                String::from_utf8_lossy(header.value)
            ));
        }
        if header.name.eq_ignore_ascii_case("content-length") {
            let value = std::str::from_utf8(header.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or("a Content-Length that is not a number")?;
            if length.is_some_and(|l| l != value) {
                return Err("two different Content-Length".into());
            }
            length = Some(value);
        }
    }
    let body = &bytes[head_len..];
    if let Some(length) = length {
        if body.len() < length {
            return Err(format!(
                "the answer ended after {} of its {length} bytes",
                body.len()
            ));
        }
        if body.len() > length {
            return Err(format!(
                "{} bytes after the {length} of the body",
                body.len() - length
            ));
        }
    }
    Ok(Answer {
        status,
        body: body.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_framed_by_its_content_length() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nContent-Length: 3\r\nConnection: close\r\n\r\n{}\n";
        assert_eq!(
            parse_answer(ok),
            Ok(Answer {
                status: 200,
                body: b"{}\n".to_vec()
            })
        );
        let empty = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(parse_answer(empty).map(|a| a.body), Ok(vec![]));
        let until_eof = b"HTTP/1.1 403 Forbidden\r\n\r\nno\n";
        assert_eq!(
            parse_answer(until_eof).map(|a| (a.status, a.body)),
            Ok((403, b"no\n".to_vec()))
        );
    }

    #[test]
    fn a_short_long_chunked_or_headless_answer_is_refused() {
        let cases: [(&[u8], &str); 6] = [
            (b"", "without answering"),
            (b"HTTP/1.1 200 OK\r\nContent-Len", "inside its head"),
            (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP answer"),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc",
                "after 3 of its 5 bytes",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nabc",
                "2 bytes after",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
                "sends Content-Length",
            ),
        ];
        for (bytes, says) in cases {
            let err = parse_answer(bytes).expect_err(says);
            assert!(err.contains(says), "{err}");
        }
    }
}
