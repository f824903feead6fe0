//! `tabecho man`: the manual page, tabecho(1), in roff on standard output, generated from the
//! same clap definitions as the parser.
//!
//! One page for the whole command: NAME, SYNOPSIS, DESCRIPTION, OPTIONS and the list of
//! COMMANDS of the root, then one section per subcommand (`TABECHO SERVE`, ...) and per
//! subcommand of a subcommand (`TABECHO CONNS CLOSE`, right after `TABECHO CONNS`), each
//! holding its own synopsis, description, options and notes as subsections. clap_mangen
//! renders one command per page; its per-section renderers are used here and each
//! subcommand's `.SH` headings are demoted to `.SS`, so `man tabecho` documents every flag.

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Args;
use clap_mangen::roff::{bold, roman, Roff};
use clap_mangen::Man;

/// Flags of `tabecho man`.
#[derive(Args)]
#[command(after_help = "\
View it with: tabecho man | man -l -
Install (as the Debian package does): tabecho man | gzip -9n > /usr/share/man/man1/tabecho.1.gz

Exit codes: 0 printed; 1 standard output could not be written; 2 bad command line.")]
pub struct ManArgs {}

/// Prints the page; `root` is the whole command (`Cli::command()`).
pub fn run(_args: ManArgs, root: clap::Command) -> ExitCode {
    match render(root).and_then(|page| io::stdout().lock().write_all(&page)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tabecho man: cannot write to standard output: {e}");
            ExitCode::from(1)
        }
    }
}

/// The whole page, in roff.
fn render(root: clap::Command) -> io::Result<Vec<u8>> {
    // `help` is clap's own subcommand: it has no flags of its own worth a section.
    let mut root = root.disable_help_subcommand(true);
    root.build();
    let name = root.get_name().to_owned();
    // Each subcommand, followed by its own subcommands (clap's `help` left out), with its
    // full name: `tabecho conns close`.
    let mut subcommands: Vec<(String, clap::Command)> = Vec::new();
    for sub in root.get_subcommands().filter(|s| !s.is_hide_set()) {
        let full = format!("{name} {}", sub.get_name());
        let nested: Vec<(String, clap::Command)> = sub
            .get_subcommands()
            .filter(|n| !n.is_hide_set() && n.get_name() != "help")
            .map(|n| (format!("{full} {}", n.get_name()), n.clone()))
            .collect();
        subcommands.push((full, sub.clone()));
        subcommands.extend(nested);
    }

    let mut page = Vec::new();
    let top = Man::new(root.clone());
    top.render_title(&mut page)?;
    top.render_name_section(&mut page)?;
    top.render_synopsis_section(&mut page)?;
    top.render_description_section(&mut page)?;
    top.render_options_section(&mut page)?;
    commands_section(&subcommands).to_writer(&mut page)?;
    if root.get_after_help().is_some() || root.get_after_long_help().is_some() {
        let mut notes = Vec::new();
        top.render_extra_section(&mut notes)?;
        page.extend(rename_heading(&notes, "EXTRA", "EXIT STATUS"));
    }
    for (full, sub) in subcommands {
        // The subcommand's usage line names it in full (`tabecho serve [OPTIONS]`).
        let sub = sub.bin_name(&full).display_name(&full);
        writeln!(page, ".SH \"{}\"", section_title(&full))?;
        let mut section = Vec::new();
        let man = Man::new(sub.clone());
        man.render_synopsis_section(&mut section)?;
        man.render_description_section(&mut section)?;
        man.render_options_section(&mut section)?;
        if sub.get_after_help().is_some() || sub.get_after_long_help().is_some() {
            man.render_extra_section(&mut section)?;
        }
        page.extend(demote_headings(&rename_heading(&section, "EXTRA", "NOTES")));
    }
    see_also().to_writer(&mut page)?;
    // Last, where clap_mangen places it.
    top.render_version_section(&mut page)?;
    Ok(page)
}

/// COMMANDS: each subcommand (by its full name) and its one line, pointing at its section
/// below (clap_mangen's own list points at pages `tabecho-serve(1)` ... that do not exist).
fn commands_section(subcommands: &[(String, clap::Command)]) -> Roff {
    let mut roff = Roff::default();
    roff.control("SH", ["COMMANDS"]);
    for (full, sub) in subcommands {
        let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
        roff.control("TP", []);
        roff.text([bold(full.as_str())]);
        roff.text([roman(format!("{about}; see {}.", section_title(full)))]);
    }
    roff
}

/// SEE ALSO: where the wire protocol and the units are described.
fn see_also() -> Roff {
    let mut roff = Roff::default();
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman(
        "The protocol, every bad input and its outcome: docs/PROTOCOL.md in the source, \
         /usr/share/doc/tabecho/PROTOCOL.md in the Debian package, which also installs \
         tabecho.socket and tabecho.service (neither enabled nor started). \
         systemd.socket(5), systemd.service(5).",
    )]);
    roff
}

/// A subcommand's section heading, from its full name: `TABECHO CONNS CLOSE`.
fn section_title(full: &str) -> String {
    full.to_uppercase()
}

/// `roff` with the section heading `.SH from` renamed to `.SH to`.
fn rename_heading(roff: &[u8], from: &str, to: &str) -> Vec<u8> {
    let from_line = format!(".SH {from}\n");
    let to_line = format!(".SH \"{to}\"\n");
    let text = String::from_utf8_lossy(roff);
    text.replace(&from_line, &to_line).into_bytes()
}

/// `roff` with every section heading (`.SH`) made a subsection heading (`.SS`). Only
/// control lines start with `.`: roff escapes a text line's leading dot as `\&.`.
fn demote_headings(roff: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(roff);
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        match line.strip_prefix(".SH ") {
            Some(rest) => {
                out.push_str(".SS ");
                out.push_str(rest);
            }
            None => out.push_str(line),
        }
    }
    out.into_bytes()
}
