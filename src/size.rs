//! Sizes in bytes as people write them: `65536`, `64K`, `256MiB`, `1GiB`. The one parser
//! of every size flag of every subcommand, and the one way a size is printed (`--help`'s
//! defaults, the error lines, the summary, `tabecho stats`, `tabecho load`'s header).
//!
//! A size is a decimal number of bytes, then, with no space, an optional unit: `K`, `M` or
//! `G`, optionally followed by `i`, then an optional `B`; in any letter case. Units are
//! binary whatever their spelling, as nginx and systemd read them: `k` = `K` = `KB` =
//! `KiB` = 1024, `M` = 1024², `G` = 1024³. There is no decimal kilobyte, no fraction and no
//! sign.
//!
//! # Invariants
//! - A [`Size`] always prints in a form [`parse_size`] reads back to the same number: the
//!   largest unit that divides it exactly, else bytes with a `B` (`64KiB`, `1536MiB`,
//!   `163916B`, `0B`).
//! - Parsing never wraps: a size past `usize::MAX` bytes is an error, never a smaller one.

use std::fmt;
use std::str::FromStr;

/// 1024 bytes: `K`, `KB`, `KiB`.
pub const KIB: usize = 1 << 10;
/// 1024 KiB: `M`, `MB`, `MiB`.
pub const MIB: usize = 1 << 20;
/// 1024 MiB: `G`, `GB`, `GiB`.
pub const GIB: usize = 1 << 30;

/// The units a size is printed in, largest first, with their multipliers.
const UNITS: [(usize, &str); 3] = [(GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")];

/// What every parse error ends with: the forms a size flag takes.
const FORMS: &str = "a size is a number of bytes with an optional K, M or G (KiB, MiB, GiB; \
                     K = KB = KiB = 1024) and no space, as in 65536, 64K or 256MiB";

/// Parses a size: `65536`, `64K`, `64kb`, `64KiB`, `256M`, `1GiB` (see the module docs).
/// The error says what was wrong and the accepted forms; clap prefixes it with the flag.
pub fn parse_size(s: &str) -> Result<usize, String> {
    if s.is_empty() {
        return Err(format!("empty; {FORMS}"));
    }
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let not_a_size = || format!("{s:?} is not a size; {FORMS}");
    if digits.is_empty() {
        return Err(not_a_size());
    }
    let multiplier = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "ki" | "kib" => KIB,
        "m" | "mb" | "mi" | "mib" => MIB,
        "g" | "gb" | "gi" | "gib" => GIB,
        _ => return Err(not_a_size()),
    };
    // Only ASCII digits are left, so a failed parse is an overflow.
    digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| {
            format!(
                "{s:?} is more than {} bytes, the most a size holds",
                usize::MAX
            )
        })
}

/// [`parse_size`], then at most `max`: a bound's error names the bound as a size.
pub fn parse_size_at_most(s: &str, max: usize) -> Result<Size, String> {
    let bytes = parse_size(s)?;
    if bytes > max {
        return Err(above(bytes, max));
    }
    Ok(Size(bytes))
}

/// The error for `bytes` above the bound `max`: `2GiB is above 1GiB, the largest accepted`.
pub fn above(bytes: usize, max: usize) -> String {
    format!(
        "{} is above {}, the largest accepted",
        Size(bytes),
        Size(max)
    )
}

/// A size in bytes as the command line writes it: parsed by [`parse_size`], displayed so
/// that it parses back (`64KiB`, `256MiB`, `32B`), which lets clap show a default taken
/// from a constant (`default_value_t`) in the form people type. Width and alignment
/// (`{:>10}`) apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Size(pub usize);

impl FromStr for Size {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        parse_size(s).map(Size)
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        let text = match UNITS
            .iter()
            .find(|(unit, _)| n != 0 && n.is_multiple_of(*unit))
        {
            Some((unit, name)) => format!("{}{name}", n / unit),
            None => format!("{n}B"),
        };
        f.pad(&text)
    }
}

impl From<Size> for usize {
    fn from(size: Size) -> usize {
        size.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn parses(s: &str, bytes: usize) {
        assert_eq!(parse_size(s), Ok(bytes), "{s:?}");
    }

    #[track_caller]
    fn refused(s: &str) -> String {
        let err = parse_size(s).expect_err(s);
        assert!(
            err.contains("no space, as in 65536, 64K or 256MiB"),
            "{s:?}: {err}"
        );
        err
    }

    #[test]
    fn plain_bytes_as_before() {
        parses("0", 0);
        parses("1", 1);
        parses("65536", 65536);
        parses("000123", 123);
        parses("18446744073709551615", usize::MAX);
    }

    #[test]
    fn every_suffix_is_binary() {
        for (suffixes, unit) in [
            (["B", "B", "B", "B"], 1),
            (["K", "KB", "Ki", "KiB"], 1024),
            (["M", "MB", "Mi", "MiB"], 1024 * 1024),
            (["G", "GB", "Gi", "GiB"], 1024 * 1024 * 1024),
        ] {
            for suffix in suffixes {
                parses(&format!("3{suffix}"), 3 * unit);
                parses(&format!("0{suffix}"), 0);
            }
        }
        parses("256MiB", 256 * MIB);
        parses("128K", 128 * KIB);
        parses("32KiB", 32 * KIB);
        parses("1GiB", GIB);
    }

    #[test]
    fn any_letter_case() {
        for s in [
            "64k", "64K", "64kb", "64kB", "64Kb", "64KB", "64kib", "64KIB", "64kIb",
        ] {
            parses(s, 64 * KIB);
        }
        parses("1gib", GIB);
        parses("1Mb", MIB);
        parses("7b", 7);
    }

    #[test]
    fn one_past_the_largest_size_overflows_instead_of_wrapping() {
        // 2^64 bytes, in each unit, and one byte past usize::MAX.
        for s in [
            "17179869184GiB",
            "17592186044416MiB",
            "18014398509481984KiB",
            "18446744073709551616",
            "99999999999999999999999999",
        ] {
            let err = parse_size(s).expect_err(s);
            assert!(err.contains("the most a size holds"), "{s}: {err}");
        }
        // The largest multiples that fit.
        parses("17179869183GiB", 17179869183 * GIB);
        parses("18014398509481983KiB", 18014398509481983 * KIB);
    }

    #[test]
    fn empty_is_refused() {
        assert!(refused("").starts_with("empty"));
    }

    #[test]
    fn signs_are_refused() {
        refused("-1");
        refused("+1");
        refused("-1K");
    }

    #[test]
    fn spaces_are_refused() {
        for s in [" 1K", "1K ", "1 K", "1 KiB", " ", "1\t"] {
            refused(s);
        }
    }

    #[test]
    fn other_units_and_shapes_are_refused() {
        for s in [
            "12XB", "K", "KiB", "B", "1.5M", "1,024", "1_024", "1T", "1TiB", "1KK", "1KiBB", "1iB",
            "1bK", "0x10", "1e3", "١٢",
        ] {
            let err = refused(s);
            assert!(err.contains("is not a size"), "{s}: {err}");
        }
    }

    #[test]
    fn bounds_hold_exactly_at_the_bound_and_refuse_one_more() {
        assert_eq!(parse_size_at_most("1GiB", GIB), Ok(Size(GIB)));
        assert_eq!(parse_size_at_most("1073741824", GIB), Ok(Size(GIB)));
        assert_eq!(
            parse_size_at_most("1073741825", GIB).unwrap_err(),
            "1073741825B is above 1GiB, the largest accepted"
        );
        assert_eq!(
            parse_size_at_most("2GiB", GIB).unwrap_err(),
            "2GiB is above 1GiB, the largest accepted"
        );
        assert_eq!(parse_size_at_most("0", 0), Ok(Size(0)));
        assert!(parse_size_at_most("1", 0).is_err());
        // A parse error stays a parse error, bound or not.
        assert!(parse_size_at_most("12XB", GIB)
            .unwrap_err()
            .contains("is not a size"));
    }

    #[test]
    fn sizes_print_in_the_largest_exact_unit() {
        assert_eq!(Size(0).to_string(), "0B");
        assert_eq!(Size(32).to_string(), "32B");
        assert_eq!(Size(1023).to_string(), "1023B");
        assert_eq!(Size(1024).to_string(), "1KiB");
        assert_eq!(Size(1025).to_string(), "1025B");
        assert_eq!(Size(64 * KIB).to_string(), "64KiB");
        assert_eq!(Size(1536 * KIB).to_string(), "1536KiB");
        assert_eq!(Size(256 * MIB).to_string(), "256MiB");
        assert_eq!(Size(1536 * MIB).to_string(), "1536MiB");
        assert_eq!(Size(GIB).to_string(), "1GiB");
        assert_eq!(Size(163_916).to_string(), "163916B");
        assert_eq!(
            format!("{:>8}|{:<6}|", Size(KIB), Size(1)),
            "    1KiB|1B    |"
        );
    }

    #[test]
    fn sizes_print_as_they_parse() {
        let mut samples = vec![
            0,
            1,
            1023,
            1024,
            1025,
            MIB - 1,
            MIB,
            GIB,
            GIB + 1,
            usize::MAX,
        ];
        samples.extend((0..64).map(|shift| 1usize << shift));
        samples.extend((1..64).map(|shift| (1usize << shift) - 1));
        samples.extend((0..1000).map(|i: usize| i.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
        samples.extend((0..1000).map(|i| i * KIB));
        for n in samples {
            let text = Size(n).to_string();
            assert_eq!(text.parse::<Size>(), Ok(Size(n)), "{n} printed as {text}");
        }
    }
}
