//! The `tabecho` command: `serve` (the server), `send` (a client), `load` (a load generator)
//! and `stats` (a live view of a server's metrics).
//!
//! Exit codes: 0 success; 1 a runtime failure (address in use, permission, I/O);
//! 2 a bad command line (clap). Subcommands document any further codes in `--help`.

mod load;
mod send;
mod serve;
mod stats;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// tabecho: a TAB-delimited echo server, its client and its load generator.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the tab-echo protocol (docs/PROTOCOL.md).
    Serve(serve::ServeArgs),
    /// Send messages as frames and print the replies (the original Go client).
    Send(send::SendArgs),
    /// Drive a server with many connections and verify every reply.
    Load(load::LoadArgs),
    /// Show a server's metrics (`serve --metrics ADDR`) as a live table.
    Stats(stats::StatsArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Send(args) => send::run(args),
        Command::Load(args) => load::run(args),
        Command::Stats(args) => stats::run(args),
    }
}
