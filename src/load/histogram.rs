//! The load generator's histograms: their bounds, their lossless text form, and the
//! percentile table.
//!
//! The text form is HdrHistogram's compressed V2 serialization in standard base64 (it
//! begins `HISTFAAA`): the form of `encode()` in HdrHistogram's Java, Python and Go
//! libraries, so other tools can read and add `tabecho load --json` histograms. Theirs
//! read back here when their header is the standard one of an integer histogram
//! (normalizing offset 0, conversion ratio 1.0, as Java's and JavaScript's); the
//! hdrhistogram crate refuses others, with a message that says so.
//!
//! The table is HdrHistogram's `outputPercentileDistribution` (Java), as wrk2 prints it
//! and HdrHistogram's plotter reads it: `Value Percentile TotalCount 1/(1-Percentile)`,
//! five ticks per half distance to 100%, then the `#[Mean ...]` footer.

use std::fmt::Write as _;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2DeflateSerializer};
use hdrhistogram::Histogram;

/// The largest latency or connect time recorded, in microseconds (one minute); larger
/// values are clamped to it.
pub const MAX_MICROS: u64 = 60_000_000;
/// The largest close-after time recorded in idle mode, in milliseconds (one day).
pub const MAX_MILLIS: u64 = 86_400_000;
/// Significant decimal digits kept: values within 0.1% of each other may share a count.
const SIGFIG: u8 = 3;
/// Steps of the percentile table per halving of the distance to 100% (wrk2's and
/// HdrHistogram's default).
const TICKS_PER_HALF_DISTANCE: u32 = 5;

/// An empty histogram of values from 1 to `max`, at 3 significant digits.
pub fn empty(max: u64) -> Histogram<u64> {
    // Constant, valid bounds (1 <= 2 <= max, 3 significant digits): this cannot fail.
    Histogram::new_with_bounds(1, max.max(2), SIGFIG).expect("valid histogram bounds")
}

/// `h` in its lossless text form: compressed V2, base64.
pub fn encode(h: &Histogram<u64>) -> String {
    text_of(&to_bytes(h))
}

/// The text form of a histogram already compressed by [`to_bytes`].
pub fn text_of(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// A histogram read back from [`encode`]'s form (or any HdrHistogram library's V2 or
/// compressed V2 base64); `Err` says what is wrong with it.
pub fn decode(text: &str) -> Result<Histogram<u64>, String> {
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|e| format!("not base64: {e}"))?;
    from_bytes(&bytes)
}

/// `h` compressed (V2 with deflate), as the text form holds it before base64.
pub fn to_bytes(h: &Histogram<u64>) -> Vec<u8> {
    let mut bytes = Vec::new();
    // Writing into a Vec cannot fail, and a histogram's counts always fit the format.
    V2DeflateSerializer::new()
        .serialize(h, &mut bytes)
        .expect("a histogram serializes into memory");
    bytes
}

/// A histogram read back from [`to_bytes`]'s form.
pub fn from_bytes(bytes: &[u8]) -> Result<Histogram<u64>, String> {
    Deserializer::new()
        .deserialize(&mut &bytes[..])
        .map_err(|e| format!("not an HdrHistogram we can read: {e}"))
}

/// The value at quantile `q` (0 when empty).
pub fn at(h: &Histogram<u64>, q: f64) -> u64 {
    if h.is_empty() {
        0
    } else {
        h.value_at_quantile(q)
    }
}

/// The largest value recorded (0 when empty).
pub fn max(h: &Histogram<u64>) -> u64 {
    if h.is_empty() {
        0
    } else {
        h.max()
    }
}

/// The percentile table of `h` (values divided by `scale`: 1000 turns microseconds into
/// the milliseconds wrk2 prints), as HdrHistogram's `outputPercentileDistribution`.
pub fn percentile_table(h: &Histogram<u64>, scale: f64) -> String {
    let digits = usize::from(h.sigfig());
    let mut out = String::new();
    let _ = write!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    if !h.is_empty() {
        for v in h.iter_quantiles(TICKS_PER_HALF_DISTANCE) {
            total += v.count_since_last_iteration();
            let value = v.value_iterated_to() as f64 / scale;
            let quantile = v.quantile_iterated_to();
            if quantile < 1.0 {
                let _ = writeln!(
                    out,
                    "{value:>12.digits$} {quantile:>2.12} {total:>10} {:>14.2}",
                    1.0 / (1.0 - quantile)
                );
            } else {
                let _ = writeln!(out, "{value:>12.digits$} {quantile:>2.12} {total:>10}");
            }
        }
    }
    let (mean, stdev) = if h.is_empty() {
        (0.0, 0.0)
    } else {
        (h.mean() / scale, h.stdev() / scale)
    };
    let _ = writeln!(
        out,
        "#[Mean    = {mean:>12.digits$}, StdDeviation   = {stdev:>12.digits$}]"
    );
    let _ = writeln!(
        out,
        "#[Max     = {:>12.digits$}, Total count    = {:>12}]",
        max(h) as f64 / scale,
        h.len()
    );
    // HdrHistogram's sub-bucket count: 2 * 10^sigfig, rounded up to a power of two.
    let sub_buckets = (2 * 10u64.pow(u32::from(h.sigfig()))).next_power_of_two();
    let _ = writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {sub_buckets:>12}]",
        h.buckets()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A spread of latencies: most small, a tail, one stall, one clamped at the top.
    fn sample() -> Histogram<u64> {
        let mut h = empty(MAX_MICROS);
        for v in 1..=10_000u64 {
            h.record(50 + v % 400).unwrap();
        }
        for v in [2_000, 15_000, 250_000, 1_234_567, MAX_MICROS] {
            h.record(v).unwrap();
        }
        h
    }

    #[test]
    fn the_text_form_round_trips_every_count() {
        for h in [sample(), empty(MAX_MICROS), empty(MAX_MILLIS)] {
            let text = encode(&h);
            // Compressed V2's cookie (0x1c849304), as every HdrHistogram library writes it.
            assert!(text.starts_with("HISTFAAA"), "{text}");
            let back = decode(&text).expect(&text);
            assert_eq!(back, h);
            assert_eq!((back.low(), back.high(), back.sigfig()), (1, h.high(), 3));
            for q in [0.0, 0.5, 0.9, 0.99, 0.999, 1.0] {
                assert_eq!(at(&back, q), at(&h, q), "q {q}");
            }
        }
    }

    #[test]
    fn the_text_form_of_another_library_reads() {
        // One value, 42, encoded by HdrHistogramJS (the string of its own decoding test).
        let js = "HISTFAAAAB542pNpmSzMwMDAxAABzFCaEUoz2X+AMIKZAEARAtM=";
        let h = decode(js).expect(js);
        assert_eq!((h.len(), at(&h, 0.5), max(&h)), (1, 42, 42));
        // And it adds into ours: the merge of a report written by another tool.
        let mut ours = empty(MAX_MICROS);
        ours.add(&h).expect("fits our bounds");
        assert_eq!(ours.len(), 1);
        // HdrHistogram-go's test string of the same histogram has a normalizing offset of 1
        // in its header, which the hdrhistogram crate does not read: refused, saying so.
        let go = "HISTFAAAAB94nJNpmSzMwMDABMSMQMzMAAGMUJoJxg9mAgA1TQGm";
        let why = decode(go).unwrap_err();
        assert!(why.contains("doesn't support"), "{why}");
        assert!(decode("not base64!").unwrap_err().contains("not base64"));
        assert!(decode("aGVsbG8=")
            .unwrap_err()
            .contains("not an HdrHistogram"));
    }

    #[test]
    fn the_percentile_table_is_hdrhistograms() {
        let h = sample();
        let table = percentile_table(&h, 1000.0);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "       Value     Percentile TotalCount 1/(1-Percentile)"
        );
        assert_eq!(lines[1], "");
        // The first row: the smallest value, at percentile 0, one sample counted.
        assert_eq!(
            lines[2],
            "       0.050 0.000000000000         25           1.00"
        );
        // The last row: the largest value at 100%, every sample, no 1/(1-P) column.
        let last = lines[lines.len() - 4];
        assert_eq!(last, format!("   60030.975 1.000000000000      10005"));
        assert!(lines[lines.len() - 3].starts_with("#[Mean    =        "));
        assert_eq!(
            lines[lines.len() - 2],
            "#[Max     =    60030.975, Total count    =        10005]"
        );
        assert_eq!(
            lines[lines.len() - 1],
            format!(
                "#[Buckets = {:>12}, SubBuckets     =         2048]",
                h.buckets()
            )
        );
        // Rows go up in value, percentile and count, and the counts end at the total.
        let rows: Vec<(f64, f64, u64)> = lines[2..lines.len() - 3]
            .iter()
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (
                    f[0].parse().unwrap(),
                    f[1].parse().unwrap(),
                    f[2].parse().unwrap(),
                )
            })
            .collect();
        assert!(rows.len() > 20, "{table}");
        assert!(rows
            .windows(2)
            .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1 && w[0].2 <= w[1].2));
        // An empty histogram: the header and the footer.
        let empty_table = percentile_table(&empty(MAX_MICROS), 1000.0);
        assert_eq!(empty_table.lines().count(), 5, "{empty_table}");
    }
}
