//! `application/x-www-form-urlencoded` (the WHATWG URL standard's name for the query
//! string's form, which HTML forms and `curl -d` also send as a body): `name=value` pairs
//! joined by `&`, `+` for a space, `%XX` for any byte. Pure.
//!
//! # Invariants
//! - A pair is always decoded whole or refused: a `%` not followed by two hex digits, or
//!   bytes that do not decode to UTF-8, refuse the whole form with a line saying where.
//! - Empty segments (`a=1&&b=2`, a trailing `&`) are skipped, as the standard says; a bare
//!   `name` is the pair (`name`, ``).

/// The pairs of `input` in order, names and values percent-decoded; the error is one line.
pub(super) fn parse(input: &[u8]) -> Result<Vec<(String, String)>, String> {
    input
        .split(|&b| b == b'&')
        .filter(|segment| !segment.is_empty())
        .map(|segment| {
            let (name, value) = match segment.iter().position(|&b| b == b'=') {
                Some(at) => (&segment[..at], &segment[at + 1..]),
                None => (segment, &[][..]),
            };
            Ok((decode(name)?, decode(value)?))
        })
        .collect()
}

/// `raw` with `+` made a space and every `%XX` the byte XX, as UTF-8.
fn decode(raw: &[u8]) -> Result<String, String> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let byte = raw
                    .get(i + 1..i + 3)
                    .and_then(|hex| Some(hex_digit(hex[0])? << 4 | hex_digit(hex[1])?))
                    .ok_or_else(|| {
                        let shown = String::from_utf8_lossy(&raw[i..raw.len().min(i + 3)]);
                        format!("`{shown}` is not a percent-encoded byte (%XX, two hex digits)")
                    })?;
                out.push(byte);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| {
        format!(
            "`{}` does not decode to UTF-8",
            String::from_utf8_lossy(raw)
        )
    })
}

/// The value of an ASCII hex digit.
fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `text` percent-encoded for a form: unreserved bytes (RFC 3986 §2.3) as they are, every
/// other byte `%XX`. For the client, which builds the query strings [`parse`] reads.
pub(super) fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pairs(input: &str) -> Vec<(String, String)> {
        parse(input.as_bytes()).unwrap_or_else(|e| panic!("{input}: {e}"))
    }

    fn pair(name: &str, value: &str) -> (String, String) {
        (name.to_string(), value.to_string())
    }

    #[test]
    fn pairs_in_order_with_bare_names_and_empty_values() {
        assert_eq!(
            pairs("sort=memory&limit=10&dry_run&x="),
            [
                pair("sort", "memory"),
                pair("limit", "10"),
                pair("dry_run", ""),
                pair("x", "")
            ]
        );
        assert_eq!(pairs("a=b=c"), [pair("a", "b=c")], "the first = splits");
    }

    #[test]
    fn empty_segments_are_skipped() {
        assert_eq!(pairs(""), []);
        assert_eq!(pairs("&&"), []);
        assert_eq!(pairs("a=1&&b=2&"), [pair("a", "1"), pair("b", "2")]);
    }

    #[test]
    fn percent_and_plus_decode_in_names_and_values() {
        assert_eq!(pairs("source=10.0.0.0%2F8"), [pair("source", "10.0.0.0/8")]);
        assert_eq!(pairs("source=%5B%3A%3A1%5D"), [pair("source", "[::1]")]);
        assert_eq!(pairs("a+b=c+d%2B"), [pair("a b", "c d+")]);
        assert_eq!(pairs("min%5Fmemory=1%4b"), [pair("min_memory", "1K")]);
        assert_eq!(pairs("x=%C3%A9"), [pair("x", "é")]);
    }

    #[test]
    fn a_bad_percent_escape_is_refused_naming_it() {
        for (input, shown) in [
            ("a=%", "`%`"),
            ("a=%4", "`%4`"),
            ("a=%zz", "`%zz`"),
            ("a=%4g1", "`%4g`"),
            ("%=1", "`%`"),
        ] {
            let err = parse(input.as_bytes()).expect_err(input);
            assert!(err.contains(shown), "{input}: {err}");
            assert!(err.contains("two hex digits"), "{input}: {err}");
        }
    }

    #[test]
    fn bytes_that_are_not_utf8_are_refused() {
        let err = parse(b"a=%FF").expect_err("not UTF-8");
        assert!(err.contains("UTF-8"), "{err}");
        assert!(parse(b"a=\xff").is_err());
    }

    proptest! {
        /// What `encode` writes, `parse` reads back, whatever the text.
        #[test]
        fn encode_then_parse_gives_back_the_text(name in "\\PC{0,12}", value in "\\PC{0,24}") {
            let form = format!("{}={}&other=1", encode(&name), encode(&value));
            let got = parse(form.as_bytes()).expect("an encoded form parses");
            // `=` alone (both empty) is a segment too: kept as ("", "").
            let want = vec![(name, value), pair("other", "1")];
            prop_assert_eq!(got, want);
        }
    }
}
