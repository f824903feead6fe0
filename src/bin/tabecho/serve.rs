//! `tabecho serve`: parse the flags, run the server until SIGINT/SIGTERM.

use std::process::ExitCode;

use clap::Args;

/// Flags of `tabecho serve`.
#[derive(Args)]
pub struct ServeArgs {}

pub fn run(_args: ServeArgs) -> ExitCode {
    ExitCode::from(1)
}
