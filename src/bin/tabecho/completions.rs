//! `tabecho completions SHELL`: the shell's completion script on standard output, generated
//! from the same clap definitions as the parser, so it always knows every flag.

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Args;
use clap_complete::Shell;

/// Flags of `tabecho completions`.
#[derive(Args)]
#[command(after_help = "\
Install (as the Debian package does):
  tabecho completions bash > /usr/share/bash-completion/completions/tabecho
  tabecho completions zsh  > /usr/share/zsh/vendor-completions/_tabecho
  tabecho completions fish > /usr/share/fish/vendor_completions.d/tabecho.fish
Or for one bash session: source <(tabecho completions bash)

Exit codes: 0 printed; 1 standard output could not be written; 2 bad command line.")]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: Shell,
}

/// Prints the script for `args.shell`; `root` is the whole command (`Cli::command()`).
pub fn run(args: CompletionsArgs, mut root: clap::Command) -> ExitCode {
    // Rendered whole first: clap_complete panics on a failed write (a closed pipe), and a
    // half-written script is worse than none.
    let mut script = Vec::new();
    let name = root.get_name().to_owned();
    clap_complete::generate(args.shell, &mut root, name, &mut script);
    match io::stdout().lock().write_all(&script) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tabecho completions: cannot write to standard output: {e}");
            ExitCode::from(1)
        }
    }
}
