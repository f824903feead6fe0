//! The docs against the code: README.md's metric and close-reason reference and its CLI
//! reference, and the tests docs/PROTOCOL.md, README.md and docs/OPERATIONS.md cite. What
//! the docs must hold is asked of the running code (a scrape, `serve --help`) or read from
//! the test sources, never written down here, so drift fails `cargo test`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{http_get, TestServer};

/// The repository's root.
fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[track_caller]
fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `text` with every run of whitespace made one space, so wrapped lines compare whole.
fn squeeze(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The section of `doc` under the heading `heading` (a whole line), up to the next heading
/// of the same or a higher level.
#[track_caller]
fn section<'a>(doc: &'a str, heading: &str) -> &'a str {
    let level = heading.chars().take_while(|c| *c == '#').count();
    let start = doc
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("no heading {heading:?}"))
        + heading.len()
        + 2;
    let rest = &doc[start..];
    let end = rest
        .lines()
        .scan(0, |offset, line| {
            let at = *offset;
            *offset += line.len() + 1;
            Some((at, line))
        })
        .find(|(_, line)| {
            let hashes = line.chars().take_while(|c| *c == '#').count();
            hashes > 0 && hashes <= level && line[hashes..].starts_with(' ')
        })
        .map_or(rest.len(), |(at, _)| at);
    &rest[..end]
}

/// The metric names (histogram series folded into their family) and the values of each
/// `reason` label on a metrics page.
fn names_and_reasons(page: &str) -> (BTreeSet<String>, BTreeSet<(String, String)>) {
    let mut names = BTreeSet::new();
    let mut reasons = BTreeSet::new();
    for line in page
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let mut name = &line[..name_end];
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(family) = name.strip_suffix(suffix) {
                if page.contains(&format!("# TYPE {family} histogram")) {
                    name = family;
                }
            }
        }
        names.insert(name.to_string());
        if let Some(at) = line.find("reason=\"") {
            let value = &line[at + 8..];
            let value = &value[..value.find('"').expect("a closing quote")];
            reasons.insert((name.to_string(), value.to_string()));
        }
    }
    (names, reasons)
}

#[test]
fn every_metric_and_close_reason_the_server_exposes_is_in_the_readme() {
    let server = TestServer::start_with_metrics();
    let (status, page) = http_get(server.metrics_addr(), "/metrics");
    assert_eq!(status, 200, "{page}");
    let (names, reasons) = names_and_reasons(&page);
    assert!(names.len() >= 10, "too few metrics parsed: {names:?}");
    assert!(
        reasons.iter().any(|(_, r)| r == "memory_budget"),
        "the close reasons were not parsed: {reasons:?}"
    );
    let readme = read("README.md");
    let reference = section(&readme, "## Metrics and close reasons");
    let missing: Vec<_> = names
        .iter()
        .filter(|name| {
            !reference.contains(&format!("`{name}`")) && !reference.contains(&format!("`{name}{{"))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "README.md, \"Metrics and close reasons\", lacks the metrics {missing:?}"
    );
    // Each metric's reasons are on its table row; the close reasons also in their list.
    let missing: Vec<_> = reasons
        .iter()
        .filter(|(name, reason)| {
            let row = reference
                .lines()
                .find(|l| l.starts_with('|') && l.contains(&format!("`{name}")));
            let on_row = row.is_some_and(|row| row.contains(&format!("`{reason}`")));
            let listed =
                name == "tabecho_closed_total" && reference.contains(&format!("\n- `{reason}`"));
            !(on_row || listed)
        })
        .collect();
    assert!(
        missing.is_empty(),
        "README.md, \"Metrics and close reasons\", lacks the reasons (metric, reason) {missing:?}"
    );
}

/// Each long flag `tabecho SUB... --help` shows, with its `[default: ...]` if it has one.
fn flags_and_defaults(sub: &[&str]) -> Vec<(String, Option<String>)> {
    let out = Command::new(env!("CARGO_BIN_EXE_tabecho"))
        .args(sub)
        .arg("--help")
        .output()
        .expect("run tabecho SUB --help");
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8(out.stdout).expect("UTF-8 help");
    let mut flags = Vec::new();
    for line in help.lines().map(str::trim_start) {
        let Some(rest) = line.strip_prefix("--").or_else(|| {
            // `-h, --help`: a short flag first.
            line.strip_prefix('-')
                .and_then(|l| l.split_once(", --"))
                .map(|(_, long)| long)
        }) else {
            continue;
        };
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        if name == "help" {
            continue;
        }
        // `[default: memory] [possible values: memory, age, idle]`: the default alone.
        let line = line
            .rfind(" [possible values: ")
            .map_or(line, |at| &line[..at]);
        let default = line.rfind("[default: ").map(|at| {
            let value = &line[at + 10..];
            squeeze(&value[..value.rfind(']').expect("a closing bracket")])
        });
        flags.push((format!("--{name}"), default));
    }
    flags
}

/// Checks the README's CLI reference for `tabecho SUB...` against `tabecho SUB... --help`:
/// an entry for every long flag, with its default if it has one, and no entry for a flag
/// the binary lacks; `min_flags` guards the parse of the help. Returns what is wrong, one
/// line each.
fn readme_reference_against_help(sub: &[&str], min_flags: usize) -> Vec<String> {
    let flags = flags_and_defaults(sub);
    assert!(flags.len() >= min_flags, "too few flags parsed: {flags:?}");
    let readme = read("README.md");
    let reference = section(&readme, "## CLI reference");
    // One entry per flag of `tabecho SUB...` (its block runs to the next `tabecho ...`
    // line, and is the block whose command words, the lowercase words after `tabecho`,
    // are SUB...: `tabecho conns close FILTER...` is `conns close`'s, not `conns`'): its
    // line (`--name ...` or `-n, --name ...`) and the indented lines under it, whitespace
    // squeezed.
    let mut entries: Vec<(String, String)> = Vec::new();
    let mut in_sub = false;
    let sub_name = sub.join(" ");
    let sub = sub_name.as_str();
    for line in reference.lines() {
        if let Some(rest) = line.strip_prefix("tabecho ") {
            let words: Vec<&str> = rest
                .split_whitespace()
                .take_while(|w| w.chars().all(|c| c.is_ascii_lowercase()))
                .collect();
            in_sub = words == sub_name.split(' ').collect::<Vec<_>>();
            continue;
        }
        if !in_sub {
            continue;
        }
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        // `-c, --connections N`: a short flag first.
        let long = match trimmed.as_bytes() {
            [b'-', short, b',', b' ', ..] if *short != b'-' => &trimmed[4..],
            _ => trimmed,
        };
        if long.starts_with("--") && indent <= 2 {
            let name: String = long.chars().take_while(|c| !c.is_whitespace()).collect();
            entries.push((name, squeeze(trimmed)));
        } else if indent > 2 && !trimmed.is_empty() {
            if let Some((_, text)) = entries.last_mut() {
                text.push(' ');
                text.push_str(&squeeze(trimmed));
            }
        } else {
            entries.push((String::new(), String::new()));
        }
    }
    let mut wrong = Vec::new();
    for (flag, default) in &flags {
        match entries.iter().find(|(name, _)| name == flag) {
            None => wrong.push(format!("{flag}: no entry")),
            Some((_, text)) => {
                if let Some(default) = default {
                    if !text.contains(&format!("[default: {default}]")) {
                        wrong.push(format!("{flag}: not [default: {default}] in {text:?}"));
                    }
                }
            }
        }
    }
    let known: Vec<&String> = flags.iter().map(|(f, _)| f).collect();
    for (name, _) in &entries {
        if !name.is_empty() && !known.contains(&name) {
            wrong.push(format!("{name}: in the README, not in `{sub} --help`"));
        }
    }
    wrong
}

#[test]
fn every_serve_flag_and_its_default_is_in_the_readme_cli_reference() {
    let wrong = readme_reference_against_help(&["serve"], 15);
    assert!(
        wrong.is_empty(),
        "README.md, \"CLI reference\", against `tabecho serve --help`:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn every_load_flag_and_its_default_is_in_the_readme_cli_reference() {
    let wrong = readme_reference_against_help(&["load"], 15);
    assert!(
        wrong.is_empty(),
        "README.md, \"CLI reference\", against `tabecho load --help`:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn every_conns_and_conns_close_flag_and_its_default_is_in_the_readme_cli_reference() {
    for (sub, min_flags) in [(&["conns"][..], 7), (&["conns", "close"], 8)] {
        let wrong = readme_reference_against_help(sub, min_flags);
        assert!(
            wrong.is_empty(),
            "README.md, \"CLI reference\", against `tabecho {} --help`:\n{}",
            sub.join(" "),
            wrong.join("\n")
        );
    }
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The file a cited path `a::b::name` names: `tests/integration/a.rs` for an integration
/// test, else the longest `src/a/b.rs` (or `src/a/b/mod.rs`) that exists, `tests`
/// segments left out; `None` if none does.
fn file_of(segments: &[&str]) -> Option<PathBuf> {
    if segments.len() == 1 {
        let integration = root().join(format!("tests/integration/{}.rs", segments[0]));
        if integration.exists() {
            return Some(integration);
        }
    }
    let modules: Vec<&str> = segments.iter().copied().filter(|s| *s != "tests").collect();
    (1..=modules.len()).rev().find_map(|n| {
        let path = modules[..n].join("/");
        [format!("src/{path}.rs"), format!("src/{path}/mod.rs")]
            .into_iter()
            .map(|p| root().join(p))
            .find(|p| p.exists())
    })
}

/// The test names a doc cites: every backquoted `module::name` (a name may end in `*`:
/// a prefix), and every backquoted bare `snake_case_name` in a `*Tests:*` passage.
fn cited_tests(doc: &str) -> Vec<String> {
    let mut cited = Vec::new();
    let mut in_tests = false;
    for line in doc.lines() {
        let trimmed = line.trim_start();
        if trimmed.contains("*Tests:*") {
            in_tests = true;
        } else if trimmed.is_empty() || trimmed.starts_with("- ") || trimmed.starts_with('#') {
            in_tests = false;
        }
        for (i, token) in line.split('`').enumerate() {
            if i % 2 == 0 {
                continue;
            }
            let word = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
            let segments: Vec<&str> = token.split("::").collect();
            let (last, modules) = segments.split_last().expect("split gives one at least");
            // A typo in a name (any letter case after the first) still counts as a
            // citation; a constant or a type (`metrics::http::ANSWER_TIMEOUT`, `mio::Poll`,
            // `CloseReason::ALL`) does not.
            let constant = last.starts_with(|c: char| c.is_ascii_uppercase());
            let path_like = !modules.is_empty()
                && !constant
                && modules.iter().all(|m| !m.is_empty() && m.chars().all(word))
                && !last.is_empty()
                && last
                    .trim_end_matches('*')
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_');
            let bare = in_tests && token.contains('_') && token.chars().all(word);
            if path_like || bare {
                cited.push(token.to_string());
            }
        }
    }
    cited
}

#[test]
fn every_test_the_docs_cite_exists() {
    let mut sources = Vec::new();
    rust_files(&root().join("src"), &mut sources);
    rust_files(&root().join("tests"), &mut sources);
    let all: Vec<(PathBuf, String)> = sources
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("a source file");
            (p, text)
        })
        .collect();
    let defines = |text: &str, name: &str| match name.strip_suffix('*') {
        Some("") => true,
        Some(prefix) => text.contains(&format!("fn {prefix}")),
        None => text.contains(&format!("fn {name}(")),
    };
    let mut missing = Vec::new();
    let mut checked = 0;
    for doc in ["docs/PROTOCOL.md", "README.md", "docs/OPERATIONS.md"] {
        for cited in cited_tests(&read(doc)) {
            let segments: Vec<&str> = cited.split("::").collect();
            let (name, modules) = segments.split_last().expect("a name");
            let found = if modules.is_empty() {
                all.iter().any(|(_, text)| defines(text, name))
            } else {
                match file_of(modules) {
                    Some(file) => all
                        .iter()
                        .any(|(path, text)| *path == file && defines(text, name)),
                    None => false,
                }
            };
            checked += 1;
            if !found {
                missing.push(format!("{doc}: `{cited}`"));
            }
        }
    }
    assert!(checked >= 100, "only {checked} citations found");
    assert!(
        missing.is_empty(),
        "cited, but no such test:\n{}",
        missing.join("\n")
    );
}

#[test]
fn every_relative_link_in_the_docs_names_a_file_that_exists() {
    let mut broken = Vec::new();
    for doc in [
        "README.md",
        "docs/PROTOCOL.md",
        "docs/OPERATIONS.md",
        "CHANGELOG.md",
        "BENCHMARKS.md",
    ] {
        let text = read(doc);
        let dir = Path::new(doc).parent().unwrap_or(Path::new(""));
        for (_, rest) in text
            .match_indices("](")
            .map(|(at, _)| ((), &text[at + 2..]))
        {
            let target = &rest[..rest.find(')').unwrap_or(rest.len())];
            let file = target.split('#').next().unwrap_or("");
            if file.is_empty() || file.contains("://") || file.starts_with("mailto:") {
                continue;
            }
            if !root().join(dir).join(file).exists() {
                broken.push(format!("{doc}: {target}"));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn every_key_of_the_summary_json_is_in_the_protocol_doc() {
    let stats = serde_json::to_value(tabecho::server::Stats::default()).unwrap();
    let keys: Vec<&String> = stats.as_object().expect("an object").keys().collect();
    let doc = read("docs/PROTOCOL.md");
    let start = doc
        .find("- `--summary-json PATH`")
        .expect("PROTOCOL.md describes --summary-json");
    let entry = &doc[start..];
    let entry = &entry[..entry.find("\n- ").unwrap_or(entry.len())];
    let missing: Vec<_> = keys
        .iter()
        .filter(|key| !entry.contains(&format!("`{key}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "keys of `serve --summary-json` missing from PROTOCOL.md's --summary-json entry: {missing:?}"
    );
}

/// The buffer budget's share of a cgroup's memory limit is one number, the code's
/// (`sizing::BUDGET_SHARE_PERCENT`), wherever `serve --help`, the docs and the unit say it:
/// every "N% of the (cgroup's) memory limit", "N% of memory.max", "N% of the limit".
#[test]
fn the_budgets_share_of_a_cgroup_limit_is_the_codes_everywhere() {
    let out = Command::new(env!("CARGO_BIN_EXE_tabecho"))
        .args(["serve", "--help"])
        .output()
        .expect("run tabecho serve --help");
    let help = String::from_utf8(out.stdout).expect("UTF-8 help");
    let share = tabecho::sizing::BUDGET_SHARE_PERCENT.to_string();
    let texts = [
        ("serve --help", help),
        ("README.md", read("README.md")),
        ("docs/PROTOCOL.md", read("docs/PROTOCOL.md")),
        ("docs/OPERATIONS.md", read("docs/OPERATIONS.md")),
        ("deploy/tabecho.service", read("deploy/tabecho.service")),
    ];
    let of_a_limit = [
        "the cgroup's memory limit",
        "the memory limit",
        "memory.max",
        "the limit",
        "it when",
    ];
    for (name, text) in texts {
        let text = squeeze(&text.replace("\n#", " "));
        let mut said = Vec::new();
        for (at, _) in text.match_indices("% of ") {
            let after = &text[at + 5..];
            if !of_a_limit.iter().any(|p| after.starts_with(p)) {
                continue;
            }
            let number: String = text[..at]
                .chars()
                .rev()
                .take_while(char::is_ascii_digit)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            said.push(number);
        }
        assert!(!said.is_empty(), "{name} does not say the budget's share");
        assert!(
            said.iter().all(|n| *n == share),
            "{name} says {said:?}% of a limit; the code takes {share}%"
        );
    }
}
