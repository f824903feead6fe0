//! `tabecho stats`: a live table of a server's metrics (`serve --metrics ADDR`), refreshed
//! every interval: rates over the interval, totals, closes by reason, turn-time quantiles.

use std::collections::BTreeMap;
use std::io::{self, IsTerminal, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use tabecho::addr::parse_duration;
use tabecho::size::Size;

/// The longest a scrape may take (connect, then the whole answer).
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// Flags of `tabecho stats`.
#[derive(Args)]
#[command(after_help = "\
Reads http://ADDR/metrics (the server runs with --metrics ADDR) every interval and prints
rates over that interval, totals, closes by reason, and the reactor's turn time p50/p99
estimated from the histogram's buckets (as Prometheus' histogram_quantile does), summed
over reactors. --once prints one table, after one interval, and exits.

Exit codes: 0 done (--once) or interrupted; 1 the endpoint could not be read.")]
pub struct StatsArgs {
    /// The metrics endpoint: host:port, as given to `serve --metrics`.
    #[arg(value_parser = tabecho::addr::parse_tcp_addr)]
    addr: SocketAddr,
    /// Time between two reads (the window of the rates).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    interval: Duration,
    /// Print one table and exit.
    #[arg(long)]
    once: bool,
}

pub fn run(args: StatsArgs) -> ExitCode {
    match watch(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tabecho stats: http://{}/metrics: {e}", args.addr);
            ExitCode::from(1)
        }
    }
}

fn watch(args: &StatsArgs) -> io::Result<()> {
    let live = !args.once && io::stdout().is_terminal();
    let mut before = (Instant::now(), scrape(args.addr)?);
    loop {
        std::thread::sleep(args.interval);
        let now = (Instant::now(), scrape(args.addr)?);
        let seconds = now.0.duration_since(before.0).as_secs_f64();
        let table = render(args.addr, &before.1, &now.1, seconds);
        let mut out = io::stdout().lock();
        if live {
            // Clear the screen and home the cursor, so the table stays in place.
            out.write_all(b"\x1b[2J\x1b[H")?;
        }
        out.write_all(table.as_bytes())?;
        out.flush()?;
        if args.once {
            return Ok(());
        }
        before = now;
    }
}

/// The samples of one page: series (name and labels) to value.
type Page = BTreeMap<String, f64>;

/// Reads the page with one HTTP/1.0 GET.
fn scrape(addr: SocketAddr) -> io::Result<Page> {
    let mut s = TcpStream::connect_timeout(&addr, SCRAPE_TIMEOUT)?;
    s.set_read_timeout(Some(SCRAPE_TIMEOUT))?;
    s.set_write_timeout(Some(SCRAPE_TIMEOUT))?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an HTTP answer"))?;
    let status = head.lines().next().unwrap_or("");
    if status.split(' ').nth(1) != Some("200") {
        return Err(io::Error::other(format!("answered {status:?}")));
    }
    Ok(parse(body))
}

/// Parses the text format's sample lines, `series value`, where the series is the name
/// and its labels as written; comments and malformed lines are skipped.
fn parse(body: &str) -> Page {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The sum over reactors of the series named `name` whose labels include every `want`
/// (`key="value"`).
fn sum(page: &Page, name: &str, want: &[&str]) -> f64 {
    page.iter()
        .filter(|(series, _)| {
            let (n, labels) = series.split_once('{').unwrap_or((series, ""));
            n == name && want.iter().all(|w| labels.contains(w))
        })
        .map(|(_, v)| v)
        .sum()
}

/// The close reasons on the page, alphabetically.
fn reasons(page: &Page) -> Vec<String> {
    let mut out: Vec<String> = page
        .keys()
        .filter(|s| s.starts_with("tabecho_closed_total{"))
        .filter_map(|s| s.split("reason=\"").nth(1)?.split('"').next())
        .map(str::to_string)
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The `q` quantile (0..1) of the turn time over the window, in seconds: the cumulative
/// bucket counts of `now` less `before`, interpolated within the bucket, as Prometheus'
/// histogram_quantile. `None` without turns in the window.
fn turn_quantile(before: &Page, now: &Page, q: f64) -> Option<f64> {
    let name = "tabecho_reactor_turn_seconds_bucket";
    let mut bounds: Vec<(f64, String)> = now
        .keys()
        .filter(|s| s.starts_with(name))
        .filter_map(|s| {
            let le = s.split("le=\"").nth(1)?.split('"').next()?;
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((bound, format!("le=\"{le}\"")))
        })
        .collect();
    bounds.sort_by(|a, b| a.0.total_cmp(&b.0));
    bounds.dedup_by(|a, b| a.0 == b.0);
    let cumulative: Vec<(f64, f64)> = bounds
        .iter()
        .map(|(b, le)| (*b, sum(now, name, &[le]) - sum(before, name, &[le])))
        .collect();
    let total = cumulative.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(bound, count) in &cumulative {
        if count >= rank {
            if bound.is_infinite() {
                return Some(lower.0); // beyond the last bound: report the last bound
            }
            let within = (rank - lower.1) / (count - lower.1).max(f64::MIN_POSITIVE);
            return Some(lower.0 + (bound - lower.0) * within);
        }
        lower = (bound, count);
    }
    None
}

fn render(addr: SocketAddr, before: &Page, now: &Page, seconds: f64) -> String {
    let total = |name: &str| sum(now, name, &[]);
    let rate = |name: &str| (sum(now, name, &[]) - sum(before, name, &[])) / seconds.max(1e-9);
    let mut t = format!("tabecho {addr}: over the last {seconds:.1} s\n");
    for (label, name) in [
        ("frames", "tabecho_frames_total"),
        ("bytes in", "tabecho_bytes_received_total"),
        ("bytes out", "tabecho_bytes_sent_total"),
        ("accepted", "tabecho_accepted_total"),
    ] {
        t += &format!(
            "  {label:<12} {:>14.0}/s {:>16.0} total\n",
            rate(name),
            total(name)
        );
    }
    t += &format!(
        "  {:<12} {:>14.0} open   rejected {:.0} (per source {:.0}), backpressure stalls {:.0}, \
         accept pauses {:.0}\n",
        "connections",
        total("tabecho_connections_open"),
        total("tabecho_rejected_total"),
        sum(now, "tabecho_rejected_total", &["reason=\"per_source\""]),
        total("tabecho_backpressure_stalls_total"),
        total("tabecho_accept_pauses_total"),
    );
    let closes: Vec<String> = reasons(now)
        .iter()
        .map(|r| {
            let v = sum(now, "tabecho_closed_total", &[&format!("reason=\"{r}\"")]);
            format!("{r} {v:.0}")
        })
        .collect();
    t += &format!("  {:<12} {}\n", "closed", closes.join(", "));
    // A gauge of whole bytes: the float holds it exactly below 2^53.
    let buffered = Size(total("tabecho_buffered_bytes") as usize);
    t += &format!("  {:<12} {buffered:>14} buffered\n", "memory");
    let micros = |q: f64| {
        turn_quantile(before, now, q).map_or("-".to_string(), |s| format!("{:.0} µs", s * 1e6))
    };
    t += &format!(
        "  {:<12} p50 {}, p99 {} (estimated from the buckets)\n",
        "turn time",
        micros(0.5),
        micros(0.99)
    );
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(turn_buckets: &[(&str, f64)]) -> Page {
        let mut text = String::from(
            "# TYPE x counter\ntabecho_closed_total{reactor=\"0\",reason=\"eof\"} 3\n\
             tabecho_closed_total{reactor=\"0\",reason=\"idle\"} 1\n",
        );
        for (le, n) in turn_buckets {
            text +=
                &format!("tabecho_reactor_turn_seconds_bucket{{reactor=\"0\",le=\"{le}\"}} {n}\n");
        }
        parse(&text)
    }

    #[test]
    fn quantiles_interpolate_within_the_bucket_of_the_window() {
        let before = page(&[("1e-05", 0.0), ("2.5e-05", 0.0), ("+Inf", 0.0)]);
        let now = page(&[("1e-05", 50.0), ("2.5e-05", 100.0), ("+Inf", 100.0)]);
        let p50 = turn_quantile(&before, &now, 0.5).unwrap();
        assert!((p50 - 1e-5).abs() < 1e-12, "{p50}");
        let p99 = turn_quantile(&before, &now, 0.99).unwrap();
        assert!((p99 - (1e-5 + 1.5e-5 * 0.98)).abs() < 1e-12, "{p99}");
        assert_eq!(
            turn_quantile(&now, &now, 0.5),
            None,
            "no turns in the window"
        );
    }

    #[test]
    fn reasons_and_sums_read_the_labels() {
        let p = page(&[]);
        assert_eq!(reasons(&p), ["eof", "idle"]);
        assert_eq!(sum(&p, "tabecho_closed_total", &[]), 4.0);
        assert_eq!(sum(&p, "tabecho_closed_total", &["reason=\"idle\""]), 1.0);
    }
}
