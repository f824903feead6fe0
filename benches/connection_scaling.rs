//! connection_scaling: how tabecho's cost grows with the number of connections, beside the
//! byte-echo ceiling and a tokio task-per-connection server, in one run.
//!
//! `cargo bench --bench connection_scaling` runs the full sweep (1 to 19,000 connections,
//! pipeline 1 and 16); `-- --quick` a reduced one for a smoke check. tabecho runs twice:
//! with one reactor and with two (`tabecho-2r`, `--threads 2`, both on the server's CPU).
//!
//! Each server is a release binary in its own process, started afresh for each point and
//! pinned to CPU 1 when there are two CPUs; this process (the load generator, the library
//! core of `tabecho load`, one worker thread) is pinned to CPU 0. For each point:
//! 1. idle (once per server and count, on its own server instance): open C connections
//!    that send nothing; once the server holds them all (its /proc/PID/fd count), read
//!    its RSS: (RSS - RSS at start) / C is bytes per idle connection;
//! 2. load (a fresh server instance): C connections (from 1,000 up opened at 10,000/s, the
//!    ramp inside the warm-up), pipeline P, 32-byte frames, 1 s warm-up (250 ms with
//!    --quick) then the measured window; the server's CPU (utime + stime from
//!    /proc/PID/stat) over the whole load run, divided by the frames answered, is CPU per
//!    frame; VmHWM is its peak RSS.
//!    Every reply is checked byte for byte; errors must be zero.
//!
//! Servers get a 60 s idle timeout so the idle phase is not reaped (the timer machinery
//! runs all the same).
//!
//! Output: a table on stdout, target/tabecho-bench/connection_scaling.csv and two SVG
//! plots beside it.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use plotters::prelude::*;
use tabecho::addr::ListenAddr;
use tabecho::load::{self, LoadOptions, LoadReport};

/// The servers compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tabecho,
    /// tabecho with `--threads 2`: both reactors on the server's one pinned CPU, so the
    /// row measures what a second reactor costs, not what a second core gives.
    Tabecho2,
    Ceiling,
    Tokio,
}

impl Kind {
    /// Every server, in table and plot order.
    const ALL: [Kind; 4] = [Kind::Tabecho, Kind::Tabecho2, Kind::Ceiling, Kind::Tokio];

    fn name(self) -> &'static str {
        match self {
            Kind::Tabecho => "tabecho",
            Kind::Tabecho2 => "tabecho-2r",
            Kind::Ceiling => "ceiling",
            Kind::Tokio => "tokio",
        }
    }
}

/// One measured point.
#[derive(Debug, Clone)]
struct Point {
    kind: Kind,
    connections: usize,
    pipeline: usize,
    replies_per_sec: f64,
    mb_per_sec: f64,
    p50_us: u64,
    p99_us: u64,
    p999_us: u64,
    rss_start_kb: u64,
    rss_idle_kb: u64,
    idle_bytes_per_conn: f64,
    rss_peak_load_kb: u64,
    cpu_s_per_mframe: f64,
    errors: u64,
}

/// A server process under test.
struct ServerProcess {
    child: Child,
    addr: String,
}

impl ServerProcess {
    fn start(kind: Kind, bins: &Binaries, pin: Option<usize>) -> ServerProcess {
        let mut cmd = match pin {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpu.to_string());
                c.arg(bins.path(kind));
                c
            }
            None => Command::new(bins.path(kind)),
        };
        match kind {
            Kind::Tabecho | Kind::Tabecho2 => {
                let threads = if kind == Kind::Tabecho2 { "2" } else { "1" };
                cmd.args([
                    "serve",
                    "--threads",
                    threads,
                    "--listen",
                    "127.0.0.1:0",
                    "--idle-timeout",
                    "60s",
                    "--max-connections",
                    "19900",
                ]);
                cmd.env("RUST_LOG", "info");
            }
            Kind::Ceiling => {
                cmd.arg("127.0.0.1:0");
            }
            Kind::Tokio => {
                cmd.args(["127.0.0.1:0", "60"]);
            }
        }
        // tabecho logs "listening on" to stderr, the others print it on stdout: read both.
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start server");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        for stream in [
            Box::new(stdout) as Box<dyn std::io::Read + Send>,
            Box::new(stderr),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        let addr = loop {
            let line = rx
                .recv_timeout(Duration::from_secs(10))
                .expect("server printed no listening line");
            if let Some(a) = line.split("listening on ").nth(1) {
                break a.trim().to_string();
            }
        };
        ServerProcess { child, addr }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The three server binaries, built once in release mode.
struct Binaries {
    tabecho: PathBuf,
    ceiling: PathBuf,
    tokio: PathBuf,
}

impl Binaries {
    fn build(root: &Path) -> Binaries {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let build = |manifest: &str| {
            let status = Command::new(&cargo)
                .args(["build", "--release", "--quiet", "--manifest-path", manifest])
                .current_dir(root)
                .status()
                .expect("cargo build");
            assert!(status.success(), "building {manifest} failed");
        };
        build("Cargo.toml");
        build("benches/ceiling/Cargo.toml");
        build("benches/tokio-echo/Cargo.toml");
        Binaries {
            tabecho: root.join("target/release/tabecho"),
            ceiling: root.join("benches/ceiling/target/release/ceiling-echo"),
            tokio: root.join("benches/tokio-echo/target/release/tokio-echo"),
        }
    }

    fn path(&self, kind: Kind) -> &Path {
        match kind {
            Kind::Tabecho | Kind::Tabecho2 => &self.tabecho,
            Kind::Ceiling => &self.ceiling,
            Kind::Tokio => &self.tokio,
        }
    }
}

use harness::proc::{cpu_seconds, open_fds, status_kb};

/// Waits (at most 20 s) until the server's open descriptor count satisfies `done`.
fn wait_for_fds(pid: u32, done: impl Fn(usize) -> bool) {
    harness::proc::wait_for_fds(pid, Duration::from_secs(20), done);
}

fn errors(r: &LoadReport) -> u64 {
    r.connect_failed
        + r.lost
        + r.corrupt
        + r.unexpected
        + r.error_replies
        + r.errors.values().sum::<u64>()
}

/// Server memory with idle connections, measured on a server instance of its own (so the
/// load that follows does not compete with these connections' TIME_WAIT ports).
#[derive(Debug, Clone, Copy)]
struct Idle {
    rss_start_kb: u64,
    rss_idle_kb: u64,
    /// Connections the server held (should be all).
    held: usize,
}

/// A fresh server, warmed by one short load run (which also raises this process's
/// descriptor limit to the hard limit), its descriptors back to their start.
fn start_warm(
    kind: Kind,
    bins: &Binaries,
    pin: Option<usize>,
) -> (ServerProcess, ListenAddr, usize) {
    let server = ServerProcess::start(kind, bins, pin);
    let pid = server.pid();
    let addr: ListenAddr = server.addr.parse().expect("address");
    let fds_start = open_fds(pid);
    let mut warm = LoadOptions::new(addr.clone());
    warm.connections = 1;
    warm.threads = 1;
    warm.raw = kind == Kind::Ceiling;
    warm.duration = Duration::from_millis(100);
    warm.frames_per_connection = Some(10);
    let _ = load::run(&warm);
    wait_for_fds(pid, |n| n <= fds_start);
    (server, addr, fds_start)
}

/// Holds C idle connections (plain blocking sockets of this process) and reads the RSS.
fn measure_idle(kind: Kind, bins: &Binaries, pin: Option<usize>, c: usize) -> Idle {
    let (server, _, fds_start) = start_warm(kind, bins, pin);
    let pid = server.pid();
    let rss_start_kb = status_kb(pid, "VmRSS:");
    let tcp: std::net::SocketAddr = server.addr.parse().expect("a TCP address");
    let held_conns: Vec<std::net::TcpStream> = (0..c)
        .filter_map(|_| std::net::TcpStream::connect(tcp).ok())
        .collect();
    wait_for_fds(pid, |n| n >= fds_start + held_conns.len());
    let rss_idle_kb = status_kb(pid, "VmRSS:");
    let held = open_fds(pid).saturating_sub(fds_start);
    Idle {
        rss_start_kb,
        rss_idle_kb,
        held,
    }
}

/// New connections per second for large counts: all at once would overflow the listen
/// backlog and turn into SYN retransmits (1 s, 3 s...) that measure nothing but the ramp.
const CONNECT_RATE: f64 = 10_000.0;

/// Drives C connections at pipeline P on a fresh server; reads its CPU and peak RSS.
fn measure(
    kind: Kind,
    bins: &Binaries,
    pin: Option<usize>,
    (c, p): (usize, usize),
    idle: Idle,
    (warmup, window): (Duration, Duration),
) -> Point {
    let (server, addr, _) = start_warm(kind, bins, pin);
    let pid = server.pid();
    let mut opts = LoadOptions::new(addr);
    opts.connections = c;
    opts.threads = 1;
    opts.pipeline = p;
    opts.size = 32;
    opts.raw = kind == Kind::Ceiling;
    // The warm-up covers the connection ramp.
    opts.connect_rate = (c >= 1000).then_some(CONNECT_RATE);
    opts.warmup = warmup + Duration::from_secs_f64(c as f64 / CONNECT_RATE);
    opts.duration = window;
    let cpu_before = cpu_seconds(pid);
    let report = load::run(&opts).expect("load run");
    let cpu = cpu_seconds(pid) - cpu_before;
    let rss_peak_load_kb = status_kb(pid, "VmHWM:");
    let frames = report.frames_answered.max(1) as f64;
    let mut errors = errors(&report);
    if idle.held < c {
        eprintln!(
            "  {}: the server held {} of {c} idle connections",
            kind.name(),
            idle.held
        );
        errors += (c - idle.held) as u64;
    }
    Point {
        kind,
        connections: c,
        pipeline: p,
        replies_per_sec: report.replies_per_sec,
        mb_per_sec: report.rx_mb_per_sec,
        p50_us: report.p50_us,
        p99_us: report.p99_us,
        p999_us: report.p999_us,
        rss_start_kb: idle.rss_start_kb,
        rss_idle_kb: idle.rss_idle_kb,
        idle_bytes_per_conn: (idle.rss_idle_kb.saturating_sub(idle.rss_start_kb) * 1024) as f64
            / c as f64,
        rss_peak_load_kb,
        cpu_s_per_mframe: cpu / frames * 1e6,
        errors,
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bins = Binaries::build(&root);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pin = (cpus >= 2).then_some(1);
    if pin.is_some() {
        // This process (the load generator) on CPU 0, the server on CPU 1.
        let _ = Command::new("taskset")
            .args(["-a", "-p", "-c", "0", &std::process::id().to_string()])
            .stdout(Stdio::null())
            .status();
    }
    let (counts, timing): (&[usize], _) = if quick {
        (
            &[10, 1000],
            (Duration::from_millis(250), Duration::from_secs(1)),
        )
    } else {
        (
            &[1, 10, 100, 1000, 10_000, 19_000],
            (Duration::from_secs(1), Duration::from_secs(3)),
        )
    };
    let (warmup, window) = timing;
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "connection_scaling: {} CPUs, kernel {}, {}; window {:?} after {:?} warm-up, 32-byte frames",
        cpus,
        kernel.trim(),
        match pin {
            Some(_) => "server pinned to CPU 1, load generator (1 thread) to CPU 0",
            None => "nothing pinned (one CPU)",
        },
        window,
        warmup
    );
    let mut points = Vec::new();
    let mut idles = std::collections::HashMap::new();
    for &p in &[1usize, 16] {
        for &c in counts {
            for kind in Kind::ALL {
                // Idle memory does not depend on the pipeline: measured once per count.
                let idle = *idles
                    .entry((kind.name(), c))
                    .or_insert_with(|| measure_idle(kind, &bins, pin, c));
                let point = measure(kind, &bins, pin, (c, p), idle, timing);
                eprintln!(
                    "  {:8} c={:<6} p={:<2} {:>10.0} replies/s  p99 {:>6} us  {:>6.1} B/idle conn  {:>6.2} cpu s/Mframe  errors {}",
                    kind.name(), c, p, point.replies_per_sec, point.p99_us, point.idle_bytes_per_conn,
                    point.cpu_s_per_mframe, point.errors
                );
                points.push(point);
            }
        }
    }
    print_table(&points);
    let out = root.join("target/tabecho-bench");
    fs::create_dir_all(&out).expect("create target/tabecho-bench");
    write_csv(&out.join("connection_scaling.csv"), &points);
    plot_throughput(&out.join("connection_scaling.svg"), &points);
    plot_memory(&out.join("rss_per_connection.svg"), &points);
    println!(
        "wrote {}/connection_scaling.csv, connection_scaling.svg, rss_per_connection.svg",
        out.display()
    );
    let total_errors: u64 = points.iter().map(|p| p.errors).sum();
    if total_errors > 0 {
        println!("ERRORS: {total_errors}");
        std::process::exit(1);
    }
}

fn find(points: &[Point], kind: Kind, c: usize, p: usize) -> Option<&Point> {
    points
        .iter()
        .find(|x| x.kind == kind && x.connections == c && x.pipeline == p)
}

fn print_table(points: &[Point]) {
    println!();
    println!(
        "{:>6} {:>3} {:>8} {:>11} {:>8} {:>7} {:>7} {:>8} {:>9} {:>9} {:>9} {:>6} | {:>7} {:>7} {:>7} {:>7}",
        "conns", "pip", "server", "replies/s", "MB/s", "p50us", "p99us", "p99.9us", "B/idle", "peakMB", "cpuS/Mf", "errors",
        "rps/ceil", "cpu/ceil", "rps/tok", "cpu/tok"
    );
    for t in points.iter().filter(|x| x.kind == Kind::Tabecho) {
        for kind in Kind::ALL {
            let Some(x) = find(points, kind, t.connections, t.pipeline) else {
                continue;
            };
            let ratios = if kind == Kind::Tabecho {
                let ceil = find(points, Kind::Ceiling, t.connections, t.pipeline);
                let tok = find(points, Kind::Tokio, t.connections, t.pipeline);
                let r =
                    |a: f64, b: Option<f64>| b.map_or("-".to_string(), |b| format!("{:.3}", a / b));
                format!(
                    " | {:>7} {:>7} {:>7} {:>7}",
                    r(t.replies_per_sec, ceil.map(|c| c.replies_per_sec)),
                    r(t.cpu_s_per_mframe, ceil.map(|c| c.cpu_s_per_mframe)),
                    r(t.replies_per_sec, tok.map(|c| c.replies_per_sec)),
                    r(t.cpu_s_per_mframe, tok.map(|c| c.cpu_s_per_mframe)),
                )
            } else {
                String::new()
            };
            // RSS moves in 4 KiB pages: per-connection bytes mean something from 1,000 up.
            let idle = if x.connections >= 1000 {
                format!("{:.1}", x.idle_bytes_per_conn)
            } else {
                "-".to_string()
            };
            println!(
                "{:>6} {:>3} {:>8} {:>11.0} {:>8.2} {:>7} {:>7} {:>8} {:>9} {:>9.1} {:>9.3} {:>6}{}",
                x.connections, x.pipeline, kind.name(), x.replies_per_sec, x.mb_per_sec, x.p50_us, x.p99_us,
                x.p999_us, idle, x.rss_peak_load_kb as f64 / 1024.0, x.cpu_s_per_mframe, x.errors, ratios
            );
        }
    }
}

fn write_csv(path: &Path, points: &[Point]) {
    let mut f = fs::File::create(path).expect("create csv");
    writeln!(
        f,
        "server,connections,pipeline,replies_per_sec,mb_per_sec,p50_us,p99_us,p999_us,rss_start_kb,rss_idle_kb,idle_bytes_per_conn,rss_peak_load_kb,cpu_s_per_mframe,errors"
    )
    .unwrap();
    for x in points {
        writeln!(
            f,
            "{},{},{},{:.0},{:.3},{},{},{},{},{},{:.1},{},{:.4},{}",
            x.kind.name(),
            x.connections,
            x.pipeline,
            x.replies_per_sec,
            x.mb_per_sec,
            x.p50_us,
            x.p99_us,
            x.p999_us,
            x.rss_start_kb,
            x.rss_idle_kb,
            x.idle_bytes_per_conn,
            x.rss_peak_load_kb,
            x.cpu_s_per_mframe,
            x.errors
        )
        .unwrap();
    }
}

const COLORS: [RGBColor; 4] = [
    RGBColor(200, 30, 30),
    RGBColor(230, 140, 20),
    RGBColor(30, 30, 200),
    RGBColor(30, 150, 30),
];

fn series(points: &[Point], kind: Kind, p: usize, f: impl Fn(&Point) -> f64) -> Vec<(f64, f64)> {
    points
        .iter()
        .filter(|x| x.kind == kind && x.pipeline == p)
        .map(|x| (x.connections as f64, f(x).max(1e-3)))
        .collect()
}

fn max_connections(points: &[Point]) -> f64 {
    points.iter().map(|x| x.connections).max().unwrap_or(1) as f64 * 1.5
}

/// Replies/s and p99 latency against connections (log scales), pipeline 1 and 16.
fn plot_throughput(path: &Path, points: &[Point]) {
    let root = SVGBackend::new(path, (1200, 800)).into_drawing_area();
    root.fill(&WHITE).unwrap();
    let panels = root.split_evenly((2, 2));
    let xmax = max_connections(points);
    for (i, panel) in panels.iter().enumerate() {
        let p = if i % 2 == 0 { 1 } else { 16 };
        let latency = i >= 2;
        let metric = |x: &Point| {
            if latency {
                x.p99_us as f64
            } else {
                x.replies_per_sec
            }
        };
        let ymax = points.iter().map(metric).fold(1.0, f64::max) * 2.0;
        let ymin = points
            .iter()
            .map(metric)
            .filter(|v| *v > 0.0)
            .fold(ymax, f64::min)
            / 2.0;
        let title = if latency {
            format!("p99 latency (us), pipeline {p}")
        } else {
            format!("replies/s, pipeline {p}")
        };
        let mut chart = ChartBuilder::on(panel)
            .caption(title, ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(60)
            .build_cartesian_2d(
                (0.8f64..xmax).log_scale(),
                (ymin.max(1e-3)..ymax).log_scale(),
            )
            .unwrap();
        draw_mesh(&mut chart);
        for (k, kind) in Kind::ALL.into_iter().enumerate() {
            draw_line(
                &mut chart,
                kind.name(),
                COLORS[k],
                series(points, kind, p, metric),
            );
        }
        draw_legend(&mut chart);
    }
    root.present().unwrap();
}

/// A chart with log scales on both axes.
type LogChart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<LogCoord<f64>, LogCoord<f64>>>;

/// The grid, with integer labels and connections on the x axis.
fn draw_mesh(chart: &mut LogChart<'_, '_>) {
    chart
        .configure_mesh()
        .x_desc("connections")
        .x_labels(6)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .unwrap();
}

/// The legend, boxed.
fn draw_legend<'a>(chart: &mut LogChart<'a, 'a>) {
    chart
        .configure_series_labels()
        .background_style(WHITE)
        .border_style(BLACK)
        .draw()
        .unwrap();
}

/// One server's line, with its points marked and its name in the legend.
fn draw_line(chart: &mut LogChart<'_, '_>, name: &str, color: RGBColor, data: Vec<(f64, f64)>) {
    chart
        .draw_series(LineSeries::new(data.clone(), color.stroke_width(2)))
        .unwrap()
        .label(name)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    chart
        .draw_series(
            data.into_iter()
                .map(|xy| Circle::new(xy, 3, color.filled())),
        )
        .unwrap();
}

/// Server RSS per idle connection against connections.
fn plot_memory(path: &Path, points: &[Point]) {
    let root = SVGBackend::new(path, (900, 500)).into_drawing_area();
    root.fill(&WHITE).unwrap();
    let xmax = max_connections(points);
    let many: Vec<&Point> = points
        .iter()
        // RSS moves in 4 KiB pages: per-connection bytes mean something from 1,000 up.
        .filter(|x| x.connections >= 1000 && x.pipeline == 1)
        .collect();
    let ymax = many
        .iter()
        .map(|x| x.idle_bytes_per_conn)
        .fold(128.0, f64::max)
        * 2.0;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "server RSS per idle connection (bytes), >= 1,000 connections",
            ("sans-serif", 20),
        )
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d((800f64..xmax).log_scale(), (10f64..ymax).log_scale())
        .unwrap();
    draw_mesh(&mut chart);
    for (k, kind) in Kind::ALL.into_iter().enumerate() {
        let data: Vec<(f64, f64)> = many
            .iter()
            .filter(|x| x.kind == kind)
            .map(|x| (x.connections as f64, x.idle_bytes_per_conn.max(10.0)))
            .collect();
        draw_line(&mut chart, kind.name(), COLORS[k], data);
    }
    chart
        .draw_series(LineSeries::new(
            vec![(800.0, 128.0), (xmax, 128.0)],
            BLACK.stroke_width(1),
        ))
        .unwrap()
        .label("128 B target")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    draw_legend(&mut chart);
    root.present().unwrap();
}
