//! `tabecho man` and `tabecho completions`: generated from the clap definitions, so every
//! subcommand and flag that `--help` shows must be in them. The lists of subcommands and
//! flags are read from the binary's own `--help`, never written down here, so a new flag
//! is checked the day it is added.

use std::process::{Command, Output};

/// Runs the built binary with `args`; panics unless it exits 0.
#[track_caller]
fn tabecho(args: &[&str]) -> String {
    let out = run(args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "tabecho {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

#[track_caller]
fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tabecho"))
        .args(args)
        .output()
        .expect("run tabecho")
}

/// The subcommands `tabecho PARENT... --help` lists (clap's own `help` left out).
fn subcommands(parent: &[&str]) -> Vec<String> {
    let help = tabecho(&[parent, &["--help"]].concat());
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

/// The long flags `tabecho SUB... --help` documents: every `--name` on an option line.
fn long_flags(sub: &[&str]) -> Vec<String> {
    let help = tabecho(&[sub, &["--help"]].concat());
    let mut flags = Vec::new();
    for line in help.lines().map(str::trim_start) {
        if !line.starts_with('-') {
            continue;
        }
        for word in line.split([' ', ',']) {
            if let Some(name) = word.strip_prefix("--") {
                let name: String = name
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .collect();
                if !name.is_empty() && !flags.contains(&format!("--{name}")) {
                    flags.push(format!("--{name}"));
                }
            }
        }
    }
    flags
}

/// The roff of one `.SH` section of `page`, from its heading line to the next `.SH`.
fn man_section<'a>(page: &'a str, heading: &str) -> Option<&'a str> {
    let start = page.find(&format!(".SH {heading}\n"))?;
    let body = &page[start + 1..];
    let end = body.find("\n.SH ").map_or(body.len(), |i| i + 1);
    Some(&body[..end])
}

/// The option entries of a man section: each `.TP` paragraph's heading line (the flags,
/// `\fB\-\-listen\fR \fI<LISTEN>\fR`) and the text under it. The synopsis names the flags
/// too, but only an entry documents one.
fn option_entries(section: &str) -> Vec<(&str, &str)> {
    let lines: Vec<&str> = section.lines().collect();
    lines
        .windows(3)
        .filter(|w| w[0] == ".TP")
        .map(|w| (w[1], w[2]))
        .collect()
}

/// Whether `section` holds an entry for `flag` (as in `--listen`) with text under it.
fn documents(section: &str, flag: &str) -> bool {
    // Bold, with roff's escaped hyphens.
    let roff = format!("\\fB{}\\fR", flag.replace('-', "\\-"));
    option_entries(section).iter().any(|(heading, text)| {
        heading.contains(&roff) && !text.trim().is_empty() && !text.starts_with('.')
    })
}

#[test]
fn man_documents_every_subcommand_and_every_flag_in_its_section() {
    let page = tabecho(&["man"]);
    assert!(
        page.starts_with(".ie") || page.starts_with(".TH"),
        "{page:.200}"
    );
    let top = subcommands(&[]);
    for expected in [
        "serve",
        "send",
        "load",
        "stats",
        "conns",
        "completions",
        "man",
    ] {
        assert!(top.iter().any(|s| s == expected), "{top:?}");
    }
    // Each subcommand, and each of its own (`conns close`, `load merge`).
    let mut commands: Vec<Vec<&str>> = Vec::new();
    let nested: Vec<(&str, Vec<String>)> = top
        .iter()
        .map(|sub| (sub.as_str(), subcommands(&[sub])))
        .collect();
    for (sub, children) in &nested {
        commands.push(vec![sub]);
        commands.extend(children.iter().map(|child| vec![*sub, child.as_str()]));
    }
    assert!(
        commands.contains(&vec!["conns", "close"]) && commands.contains(&vec!["load", "merge"]),
        "{commands:?}"
    );
    for command in &commands {
        let name = command.join(" ");
        let heading = format!("\"TABECHO {}\"", name.to_uppercase());
        let section = man_section(&page, &heading)
            .unwrap_or_else(|| panic!("no section {heading} in the man page"));
        assert!(
            page.contains(&format!("\\fBtabecho {name}\\fR")),
            "COMMANDS lists {name}"
        );
        for flag in long_flags(command) {
            assert!(
                documents(section, &flag),
                "{flag} of `tabecho {name}` is not documented in its man section:\n{section}"
            );
        }
    }
}

#[test]
fn man_documents_every_serve_flag() {
    let flags = long_flags(&["serve"]);
    // The parse itself is checked: these are the server's flags of this release.
    for expected in [
        "--listen",
        "--threads",
        "--reuseport",
        "--idle-timeout",
        "--max-frame",
        "--max-connections",
        "--high-water",
        "--max-buffer-memory",
        "--stats-interval",
        "--shutdown-grace",
        "--metrics",
    ] {
        assert!(flags.iter().any(|f| f == expected), "{expected}: {flags:?}");
    }
    let page = tabecho(&["man"]);
    let section = man_section(&page, "\"TABECHO SERVE\"").expect("a TABECHO SERVE section");
    for flag in &flags {
        assert!(
            documents(section, flag),
            "{flag} not documented by tabecho man"
        );
    }
}

#[test]
fn completions_bash_loads_and_completes_a_serve_flag() {
    let script = tabecho(&["completions", "bash"]);
    assert!(!script.trim().is_empty());
    assert!(script.contains("--idle-timeout"), "{script:.300}");
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("tabecho.bash");
    std::fs::write(&path, &script).expect("write the script");
    // What bash does on `tabecho serve --idle<TAB>`: call the registered function.
    let out = Command::new("bash")
        .arg("-c")
        .arg(
            r#"source "$1" && complete -p tabecho &&
            COMP_WORDS=(tabecho serve --idle) && COMP_CWORD=2 &&
            _tabecho tabecho --idle serve && printf '%s\n' "${COMPREPLY[@]}""#,
        )
        .arg("bash")
        .arg(&path)
        .output()
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = stdout.lines();
    assert_eq!(
        lines.next(),
        Some("complete -o bashdefault -o default -o nosort -F _tabecho tabecho")
    );
    assert_eq!(lines.collect::<Vec<_>>(), ["--idle-timeout"]);
}

#[test]
fn completions_zsh_and_fish_name_every_serve_and_conns_flag() {
    for command in [&["serve"][..], &["conns"], &["conns", "close"]] {
        let flags = long_flags(command);
        for shell in ["zsh", "fish"] {
            let script = tabecho(&["completions", shell]);
            for flag in &flags {
                // fish names long flags without their dashes (`-l idle-timeout`).
                let name = flag.trim_start_matches('-');
                assert!(script.contains(name), "{shell}: {command:?} {flag} missing");
            }
        }
    }
}

#[test]
fn completions_for_an_unknown_shell_is_a_usage_error_exit_2() {
    let out = run(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("tcsh"));
}
