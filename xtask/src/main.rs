//! `cargo xtask NAME`: tabecho's system checks, each a real server (release build) under a
//! real load, judged by what it measured. Each prints its measurements and PASS or FAIL,
//! and exits 0 (PASS), 1 (FAIL) or 2 (the machine cannot run it; the line says why).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod admin_listing;
mod attack;
mod c100k;
mod callgrind;
mod cluster;
mod container;
mod echo_server;
mod handover_time;
mod haproxy;
mod haproxy_bench;
mod hostile;
mod http;
mod idle_memory;
mod machine;
mod netns;
mod package;
mod per_source;
mod prometheus;
mod report;
mod soak;
mod syscalls;
mod threads_bench;
mod upgrade;

/// tabecho's system checks. Each prints what it measured and PASS or FAIL; exit status 0
/// pass, 1 fail, 2 the machine cannot run it (a missing tool, the descriptor limit, no
/// permission for network namespaces...).
#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    check: Check,
}

#[derive(Subcommand)]
enum Check {
    /// HAProxy before three instances on hosts of their own (network namespaces): one killed, one cut off (partition); who notices what
    Cluster,
    /// Ten upgrades in a row under busy, short, idle and flooding clients and scrapes: none notices
    Upgrade(upgrade::UpgradeArgs),
    /// How long an upgrade takes to move 1,000 and 10,000 open connections
    HandoverTime(handover_time::HandoverTimeArgs),
    /// A real Prometheus scrapes tabecho: the counter it stores equals a verified load's frames
    Prometheus(prometheus::PrometheusArgs),
    /// Minutes of healthy and faulty clients: nothing lost, no descriptor or memory leak, clean exit
    Soak(soak::SoakArgs),
    /// Flooders and partial-frame holders against tabecho and tokio-echo: what each server holds
    Hostile(hostile::HostileArgs),
    /// Server memory per idle connection (RSS with N idle connections less RSS before)
    IdleMemory(idle_memory::IdleMemoryArgs),
    /// One reactor against two: CPU per frame, balance over TCP and Unix, throughput
    ThreadsBench(threads_bench::ThreadsBenchArgs),
    /// Listing 10,000 idle connections (tabecho conns --limit 100) beside an open-loop healthy load: answered within 2 s, the load's max latency under 50 ms
    AdminListing(admin_listing::AdminListingArgs),
    /// Instructions per frame (callgrind) at 10 and 1,000 connections, beside the ceiling
    Callgrind(callgrind::CallgrindArgs),
    /// Syscalls per frame (perf tracepoints), tabecho beside the ceiling
    Syscalls(syscalls::SyscallsArgs),
    /// What HAProxy in front costs per frame: the same loads direct and through it
    HaproxyBench(haproxy_bench::HaproxyBenchArgs),
    /// 100,000 connections at once over reuseport servers and several loads: held, verified, reaped on time
    C100k(c100k::C100kArgs),
    /// Healthy clients' latency and the kernel's memory under flooders and partial frames
    Attack(attack::AttackArgs),
    /// tabecho at its defaults in a 200 MiB memory cgroup under the attack mix, 1 and 2 reactors: no OOM kill, nothing lost
    Container(container::ContainerArgs),
    /// One source tries to take every slot; --max-connections-per-source holds, another source loses nothing
    PerSource(per_source::PerSourceArgs),
    /// The Debian package (cargo-deb); --check: lintian, install it, try it, purge it, nothing left
    Package(package::PackageArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.check {
        Check::Cluster => cluster::run(),
        Check::Upgrade(args) => upgrade::run(args),
        Check::HandoverTime(args) => handover_time::run(args),
        Check::Prometheus(args) => prometheus::run(args),
        Check::Soak(args) => soak::run(args),
        Check::Hostile(args) => hostile::run(args),
        Check::IdleMemory(args) => idle_memory::run(args),
        Check::ThreadsBench(args) => threads_bench::run(args),
        Check::AdminListing(args) => admin_listing::run(args),
        Check::Callgrind(args) => callgrind::run(args),
        Check::Syscalls(args) => syscalls::run(args),
        Check::HaproxyBench(args) => haproxy_bench::run(args),
        Check::C100k(args) => c100k::run(args),
        Check::Attack(args) => attack::run(args),
        Check::Container(args) => container::run(args),
        Check::PerSource(args) => per_source::run(args),
        Check::Package(args) => package::run(args),
    };
    outcome.exit()
}
