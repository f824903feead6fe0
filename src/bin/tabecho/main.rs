//! The `tabecho` command: `serve` (the server), `send` (a client), `load` (a load generator),
//! `stats` (a live view of a server's metrics), `conns` (its connections, listed or closed
//! through the admin socket), and `completions` and `man` (shell completions and the
//! manual page, generated from these very definitions).
//!
//! Exit codes: 0 success; 1 a runtime failure (address in use, permission, I/O);
//! 2 a bad command line (clap). Subcommands document any further codes in `--help`.

#![deny(unsafe_code)]

mod completions;
mod conns;
mod load;
mod man;
mod send;
mod serve;
mod stats;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// A TAB-delimited echo server on mio reactors, its client and its load generator.
#[derive(Parser)]
#[command(
    version,
    long_about = None,
    after_help = "Exit codes: 0 success; 1 a runtime failure (address in use, permission, I/O); \
2 a bad command line. Each subcommand's --help lists its own."
)]
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
    /// List the server's connections (`serve --admin`), largest first, or close some.
    Conns(conns::ConnsArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    Completions(completions::CompletionsArgs),
    /// Print the manual page, tabecho(1), in roff to stdout.
    Man(man::ManArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Send(args) => send::run(args),
        Command::Load(args) => load::run(args),
        Command::Stats(args) => stats::run(args),
        Command::Conns(args) => conns::run(args),
        Command::Completions(args) => completions::run(args, Cli::command()),
        Command::Man(args) => man::run(args, Cli::command()),
    }
}
