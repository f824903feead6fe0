//! The machine-readable reports the checks read instead of log text: the shutdown summary
//! (`tabecho serve --summary-json PATH`) and the Prometheus metrics page. (The load
//! generator's report is typed: `tabecho::load::LoadReport::from_json`.)

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use serde::Deserialize;

/// The shutdown summary: every counter of the server's `Stats`, by its field name
/// (`accepted`, `frames`, `closed_eof`, ...; `accept_paused_time` in seconds).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Summary(pub BTreeMap<String, f64>);

impl Summary {
    /// Reads the file `--summary-json` wrote.
    pub fn read(path: &Path) -> io::Result<Summary> {
        let text = std::fs::read_to_string(path)?;
        serde_json::from_str(&text)
            .map_err(|e| io::Error::other(format!("{}: {e}", path.display())))
    }

    /// One counter; `Err` names it if the summary lacks it.
    pub fn get(&self, name: &str) -> io::Result<u64> {
        self.0
            .get(name)
            .map(|v| *v as u64)
            .ok_or_else(|| io::Error::other(format!("the summary has no {name}")))
    }
}

/// The sum over every reactor of `series` on a Prometheus page (a metric name with its
/// other labels if any: `tabecho_frames_total`, `tabecho_closed_total{reason="eof"}`);
/// `None` if no reactor has it.
pub fn metric_total(page: &str, series: &str) -> Option<f64> {
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => (name, rest.trim_end_matches('}')),
        None => (series, ""),
    };
    let mut found = false;
    let mut sum = 0.0;
    for line in page.lines() {
        let Some((key, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Some(inner) = key
            .strip_prefix(name)
            .and_then(|k| k.strip_prefix("{reactor=\""))
        else {
            continue;
        };
        let Some((_, others)) = inner.split_once('"') else {
            continue;
        };
        let others = others.trim_start_matches(',').trim_end_matches('}');
        if others == labels {
            found = true;
            sum += value.parse::<f64>().ok()?;
        }
    }
    found.then_some(sum)
}

/// Each reactor's value of `name` (a series without other labels, as
/// `tabecho_frames_total`), by the reactor's number.
pub fn metric_by_reactor(page: &str, name: &str) -> BTreeMap<String, f64> {
    page.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix("{reactor=\"")?;
            let (reactor, rest) = rest.split_once('"')?;
            let value = rest.strip_prefix("} ")?.parse().ok()?;
            Some((reactor.to_string(), value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_totals_sum_the_reactors() {
        let page = "tabecho_frames_total{reactor=\"0\"} 3\ntabecho_frames_total{reactor=\"1\"} 4\n\
                    tabecho_closed_total{reactor=\"0\",reason=\"eof\"} 2\n";
        assert_eq!(metric_total(page, "tabecho_frames_total"), Some(7.0));
        assert_eq!(
            metric_total(page, "tabecho_closed_total{reason=\"eof\"}"),
            Some(2.0)
        );
        assert_eq!(metric_total(page, "tabecho_nothing"), None);
        let by = metric_by_reactor(page, "tabecho_frames_total");
        assert_eq!((by["0"], by["1"], by.len()), (3.0, 4.0, 2));
    }

    #[test]
    fn summary_reads_counters() {
        let s: Summary =
            serde_json::from_str(r#"{"accepted":3,"accept_paused_time":0.5}"#).unwrap();
        assert_eq!(s.get("accepted").unwrap(), 3);
        assert!(s.get("frames").is_err());
    }
}
