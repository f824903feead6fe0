//! Plot: a report's intervals as one SVG page (`tabecho load --plot FILE.svg`): frames/s
//! above, the p50, p99 and largest latency below (log scale), on one time axis, with the
//! run's parameters in the title. Intervals with a lost or corrupt frame, or an error,
//! are shaded red on both, so an upgrade's or an attack's effect shows where it happened.
//!
//! Each interval is a point at its middle; an interval with no reply breaks the latency
//! lines (nothing to draw there) and is a zero in the rate.

use std::io;
use std::path::Path;

use plotters::prelude::*;

use crate::load::report::{IntervalReport, LoadReport};

/// The page, in pixels.
const SIZE: (u32, u32) = (1100, 760);
/// The shading of intervals with failures.
const FAILURE: RGBAColor = RGBAColor(220, 40, 40, 0.18);
/// The axes' numbers, and their descriptions.
const LABELS: (&str, u32) = ("sans-serif", 14);
const DESCRIPTIONS: (&str, u32) = ("sans-serif", 15);
/// The colours of frames/s, p50, p99 and max.
const RATE: RGBColor = RGBColor(31, 119, 180);
const P50: RGBColor = RGBColor(44, 160, 44);
const P99: RGBColor = RGBColor(255, 127, 14);
const MAX: RGBColor = RGBColor(214, 39, 40);

/// Draws `report`'s intervals to `path` as SVG, titled `title` (the run's parameters).
pub fn write_svg(report: &LoadReport, title: &str, path: &Path) -> io::Result<()> {
    if report.intervals.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no intervals to plot (no measured window: an idle run, or a report of tabecho 0.2)",
        ));
    }
    draw(report, title, path).map_err(|e| io::Error::other(format!("plot: {e}")))
}

/// One interval's place on the time axis: (start, middle, end), in seconds.
fn span(report: &LoadReport, interval: &IntervalReport) -> (f64, f64, f64) {
    // The last interval ends with the window, if the interval does not divide it.
    let mut end = interval.t_s + report.interval_secs;
    if report.window_secs > interval.t_s {
        end = end.min(report.window_secs);
    }
    (interval.t_s, (interval.t_s + end) / 2.0, end)
}

/// The runs of consecutive intervals that have replies, as (x, y) lines.
fn lines(report: &LoadReport, y: impl Fn(&IntervalReport) -> f64) -> Vec<Vec<(f64, f64)>> {
    let mut out: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut current = Vec::new();
    for interval in &report.intervals {
        if interval.frames == 0 {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            continue;
        }
        current.push((span(report, interval).1, y(interval)));
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// The 1-2-5 ticks of a log axis from `low` to `high`: 0.1, 0.2, 0.5, 1, 2, 5, 10...
fn one_two_five(low: f64, high: f64) -> Vec<f64> {
    let mut ticks = Vec::new();
    let mut decade = 10f64.powf(low.log10().floor());
    while decade <= high {
        for m in [1.0, 2.0, 5.0] {
            let v = decade * m;
            if (low..=high).contains(&v) {
                ticks.push(v);
            }
        }
        decade *= 10.0;
    }
    ticks
}

/// A value on a latency axis, as it would be written: 0.05, 2, 150.
fn axis_number(v: f64) -> String {
    if v >= 10.0 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn draw(report: &LoadReport, title: &str, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 17))?;
    let (top, bottom) = root.split_vertically(SIZE.1 * 42 / 100);
    let last = report
        .intervals
        .last()
        .map_or((0.0, 0.0, 1.0), |i| span(report, i));
    let x_range = 0.0..last.2.max(report.interval_secs);
    let failed: Vec<(f64, f64)> = report
        .intervals
        .iter()
        .filter(|i| i.lost + i.corrupt + i.errors > 0)
        .map(|i| {
            let (start, _, end) = span(report, i);
            (start, end)
        })
        .collect();
    let x_desc = format!(
        "time since the measured window began, s ({} s intervals, frames by their scheduled send time)",
        axis_number(report.interval_secs)
    );

    // Frames/s.
    let rates: Vec<(f64, f64)> = report
        .intervals
        .iter()
        .map(|i| {
            let (start, middle, end) = span(report, i);
            (middle, i.frames as f64 / (end - start).max(1e-9))
        })
        .collect();
    let top_rate = rates.iter().map(|&(_, r)| r).fold(1.0, f64::max) * 1.15;
    let mut chart = ChartBuilder::on(&top)
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(80)
        .build_cartesian_2d(x_range.clone(), 0.0..top_rate)?;
    chart
        .configure_mesh()
        .y_desc("frames answered / s")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .label_style(LABELS)
        .axis_desc_style(DESCRIPTIONS)
        .light_line_style(WHITE)
        .draw()?;
    if !failed.is_empty() {
        chart
            .draw_series(
                failed
                    .iter()
                    .map(|&(a, b)| Rectangle::new([(a, 0.0), (b, top_rate)], FAILURE.filled())),
            )?
            .label("interval with lost or corrupt frames, or errors")
            .legend(|(x, y)| Rectangle::new([(x, y - 6), (x + 20, y + 6)], FAILURE.filled()));
    }
    chart
        .draw_series(LineSeries::new(rates, RATE.stroke_width(2)))?
        .label("frames/s")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RATE.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font(LABELS)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;

    // Latency, log scale: p50, p99, max.
    let ms = |us: u64| (us as f64 / 1000.0).max(0.001);
    let with_replies = report.intervals.iter().filter(|i| i.frames > 0);
    let high = with_replies
        .clone()
        .map(|i| ms(i.max_us))
        .fold(0.01, f64::max)
        * 2.0;
    let low = (with_replies.map(|i| ms(i.p50_us)).fold(high, f64::min) / 2.0).max(0.0005);
    let mut chart = ChartBuilder::on(&bottom)
        .margin(12)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(
            x_range,
            (low..high)
                .log_scale()
                .with_key_points(one_two_five(low, high)),
        )?;
    chart
        .configure_mesh()
        .x_desc(x_desc.as_str())
        .y_desc("latency, ms (log scale)")
        .y_label_formatter(&|y| axis_number(*y))
        .label_style(LABELS)
        .axis_desc_style(DESCRIPTIONS)
        .light_line_style(WHITE)
        .draw()?;
    if !failed.is_empty() {
        chart.draw_series(
            failed
                .iter()
                .map(|&(a, b)| Rectangle::new([(a, low), (b, high)], FAILURE.filled())),
        )?;
    }
    for (name, color, pick) in [
        (
            "max",
            MAX,
            (|i: &IntervalReport| i.max_us) as fn(&IntervalReport) -> u64,
        ),
        ("p99", P99, |i| i.p99_us),
        ("p50", P50, |i| i.p50_us),
    ] {
        let mut first = true;
        for line in lines(report, |i| ms(pick(i))) {
            let drawn = chart.draw_series(LineSeries::new(line, color.stroke_width(2)))?;
            if first {
                first = false;
                drawn.label(name).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            }
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(LABELS)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_svg_has_the_title_the_axes_and_the_legend() {
        let intervals = (0..5)
            .map(|k| IntervalReport {
                t_s: k as f64,
                frames: if k == 2 { 0 } else { 1000 * (k + 1) },
                p50_us: 100,
                p99_us: 900 + 100 * k,
                max_us: 5000,
                errors: u64::from(k == 3),
                ..IntervalReport::default()
            })
            .collect();
        let report = LoadReport {
            window_secs: 4.5,
            interval_secs: 1.0,
            intervals,
            ..LoadReport::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.svg");
        write_svg(
            &report,
            "tabecho load: 20 connections, 2000 frames/s",
            &path,
        )
        .unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        for text in [
            "tabecho load: 20 connections, 2000 frames/s",
            "frames answered / s",
            "latency, ms (log scale)",
            "time since the measured window began, s",
            "frames/s",
            "p50",
            "p99",
            "max",
            "interval with lost or corrupt frames, or errors",
        ] {
            assert!(svg.contains(text), "{text} missing");
        }
        // The last interval is half a second: its rate is its frames per half second.
        assert_eq!(span(&report, &report.intervals[4]), (4.0, 4.25, 4.5));
        assert_eq!(
            one_two_five(0.03, 12.0),
            [0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0]
        );
        // The empty interval breaks the latency lines in two.
        assert_eq!(lines(&report, |i| i.p99_us as f64).len(), 2);
        let empty = LoadReport::default();
        assert!(write_svg(&empty, "x", &path).is_err());
    }
}
