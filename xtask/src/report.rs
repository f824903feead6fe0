//! The load generator's typed report (`tabecho load --json`, read back with
//! `LoadReport::from_json`) and the line a check prints of it.

use std::path::Path;
use std::process::{Command, Stdio};

pub use tabecho::load::LoadReport;

/// Runs `tabecho load --addr ADDR --json ARGS` to its end and reads its report.
pub fn run(bin: &Path, addr: &str, args: &[&str]) -> Result<LoadReport, String> {
    let out = Command::new(bin)
        .args(["load", "--addr", addr, "--json"])
        .args(args)
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("tabecho load: {e}"))?;
    parse(&String::from_utf8_lossy(&out.stdout))
}

/// The median of `v` (the lower middle of an even count); NaN when empty.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or(f64::NAN)
}

/// Parses what `tabecho load --json` printed.
pub fn parse(json: &str) -> Result<LoadReport, String> {
    LoadReport::from_json(json.trim()).map_err(|e| format!("a load report: {e}: {json}"))
}

/// One line: what a check prints of a load.
pub fn line(r: &LoadReport) -> String {
    format!(
        "{} established, {} failed; frames {} sent, {} answered, {} lost, {} corrupt, \
         {} unexpected; {} closed by the server; {:.0} replies/s, p50 {:.3} ms, p99 {:.3} ms",
        r.established,
        r.connect_failed,
        r.frames_sent,
        r.frames_answered,
        r.lost,
        r.corrupt,
        r.unexpected,
        r.server_closes,
        r.replies_per_sec,
        r.p50_us as f64 / 1000.0,
        r.p99_us as f64 / 1000.0,
    )
}
