//! `cargo xtask package [--check]`: the Debian package
//! TARGET/debian/tabecho_<version>-1_<arch>.deb, built with cargo-deb.
//!
//! - `cargo xtask package` builds the package;
//! - `cargo xtask package --check` builds it, then lintian, installs it (dpkg -i), tries it
//!   (tabecho --version, man tabecho, bash completion, systemd-analyze verify on the
//!   installed units), purges it (dpkg --purge) and checks that nothing it installed is
//!   left.
//!
//! What the package ships besides the binary is rendered from the binary just built, into
//! target/deb-assets/ (Cargo.toml's [package.metadata.deb] names these paths):
//! - tabecho.1.gz: `tabecho man`, gzip -9n (Debian policy: compressed, no name or time
//!   stamp in the gzip header, so builds are reproducible);
//! - completions/: `tabecho completions bash|zsh|fish`;
//! - systemd/: deploy/tabecho.{socket,service}, ExecStart at /usr/bin/tabecho;
//! - copyright: the Debian copyright file (DEP-5) from LICENSE-MIT;
//! - THIRD-PARTY-LICENSES.gz: the license and notice files of every crate in the binary;
//! - changelog.gz: CHANGELOG.md, gzip -9n, named as Debian names upstream changelogs;
//! - changelog.Debian: the package's own changelog, one entry, dated as CHANGELOG.md dates
//!   this version (cargo-deb gzips it);
//! - maintainer-scripts/: empty; cargo-deb writes the systemd steps into the scripts.
//!
//! and then `cargo deb --no-build --strip` packs it with the binary, stripped. (cargo-deb
//! still warns that "the debug symbols may be bloated": it reads [profile.release] debug =
//! true, kept for profilers; the binary in the package has none.)
//!
//! Installs what it needs, and says so: cargo-deb (cargo install --locked), and for --check
//! lintian, man-db and systemd (apt-get). --check needs root (dpkg -i), or sudo.
//!
//! lintian: the check fails on any error (E:) or warning (W:) but those in [`KEPT`], each
//! for its reason. Every tag, down to info (I:) and pedantic (P:), is printed. Info tags
//! today:
//! - hardening-no-fortify-functions: _FORTIFY_SOURCE is a C compiler step that swaps
//!   unchecked libc calls for checked ones (__memcpy_chk, ...); rustc has no such step, and
//!   Rust code is bounds-checked by the language.
//! - no-md5sums-control-file: cargo-deb writes no md5sums file, so `dpkg --verify tabecho`
//!   has no checksums to compare the installed files with; nothing else uses it.
//! - package-supports-alternative-init-but-no-init.d-script: tabecho's service needs
//!   systemd (socket activation, Type=notify); without systemd run `tabecho serve`
//!   directly.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use clap::Args;

use crate::machine::{self, Outcome};

/// cargo-deb, pinned like cargo-deny in .ci/run: its Cargo.toml keys are what we wrote for.
const CARGO_DEB_VERSION: &str = "3.8.0";

/// The lintian warnings kept, and why:
/// - initial-upload-closes-no-bugs: Debian's archive wants a first upload to close its ITP
///   bug; this package is not uploaded to Debian, so there is no such bug to close.
const KEPT: &[&str] = &["initial-upload-closes-no-bugs"];

#[derive(Args)]
pub struct PackageArgs {
    /// Then lintian, install the package, try it, purge it (root or sudo)
    #[arg(long)]
    check: bool,
}

pub fn run(a: PackageArgs) -> Outcome {
    match build().and_then(|(deb, version)| match a.check {
        true => check(&deb, &version),
        false => Ok(()),
    }) {
        Ok(()) => Outcome::Pass,
        Err(outcome) => outcome,
    }
}

/// A failed condition: printed, and the check fails (exit 1).
fn fail(what: impl std::fmt::Display) -> Outcome {
    println!("FAIL  {what}");
    Outcome::Fail
}

/// `cargo` as cargo ran us, in the workspace root.
fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(machine::workspace_root());
    c
}

/// Runs `command` with its output shown; `Err` (the check cannot run) when it fails.
fn run_shown(command: &mut Command, what: &str) -> Result<(), Outcome> {
    match command.status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(Outcome::CannotRun(format!("{what} failed ({s})"))),
        Err(e) => Err(Outcome::CannotRun(format!("{what}: {e}"))),
    }
}

/// Runs `command` and returns its stdout; `Err` when it fails.
fn stdout_of(command: &mut Command, what: &str) -> Result<String, Outcome> {
    let out = command
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("{what}: {e}"))?;
    if !out.status.success() {
        return Err(Outcome::CannotRun(format!(
            "{what} failed ({})",
            out.status
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `command` with stdout and stderr into one pipe (as `2>&1`): whether it succeeded,
/// and what it printed.
fn combined(mut command: Command, what: &str) -> Result<(bool, String), Outcome> {
    let (mut reader, writer) = std::io::pipe().map_err(|e| format!("pipe: {e}"))?;
    let other = writer.try_clone().map_err(|e| format!("pipe: {e}"))?;
    let mut child = command
        .stdout(other)
        .stderr(writer)
        .spawn()
        .map_err(|e| format!("{what}: {e}"))?;
    drop(command); // its ends of the pipe, so reading ends with the child's output
    let mut text = String::new();
    let _ = reader.read_to_string(&mut text);
    let status = child.wait().map_err(|e| format!("{what}: {e}"))?;
    Ok((status.success(), text.trim_end_matches('\n').to_string()))
}

/// `data` compressed with `gzip -9n` into `path`.
fn gzip(data: &[u8], path: &Path) -> Result<(), Outcome> {
    let file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut child = Command::new("gzip")
        .arg("-9n")
        .stdin(Stdio::piped())
        .stdout(file)
        .spawn()
        .map_err(|e| format!("gzip: {e}"))?;
    let mut stdin = child.stdin.take().expect("piped");
    let wrote = stdin.write_all(data);
    drop(stdin);
    let status = child.wait().map_err(|e| format!("gzip: {e}"))?;
    if wrote.is_err() || !status.success() {
        return Err(Outcome::CannotRun(format!("gzip -9n >{}", path.display())));
    }
    Ok(())
}

fn write(path: &Path, data: impl AsRef<[u8]>) -> Result<(), Outcome> {
    std::fs::write(path, data).map_err(|e| Outcome::from(format!("{}: {e}", path.display())))
}

fn read(path: &Path) -> Result<String, Outcome> {
    std::fs::read_to_string(path).map_err(|e| Outcome::from(format!("{}: {e}", path.display())))
}

/// Builds the package; its path and version.
fn build() -> Result<(PathBuf, String), Outcome> {
    let root = machine::workspace_root();
    let want = format!("cargo-deb {CARGO_DEB_VERSION}");
    let have = cargo()
        .args(["deb", "--version"])
        .stderr(Stdio::null())
        .output();
    if !have.is_ok_and(|o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .any(|l| l == want)
    }) {
        println!("== installing {want} (cargo install --locked; measured 2 min 18 s here)");
        run_shown(
            cargo().args([
                "install",
                "cargo-deb",
                "--locked",
                "--version",
                CARGO_DEB_VERSION,
            ]),
            "cargo install cargo-deb",
        )?;
    }

    println!("== cargo build --release --locked");
    run_shown(
        cargo().args(["build", "--release", "--locked", "--package", "tabecho"]),
        "cargo build --release",
    )?;
    let target = machine::target_dir()?;
    let bin = target.join("release/tabecho");
    let metadata = stdout_of(
        cargo().args(["metadata", "--format-version", "1", "--locked"]),
        "cargo metadata",
    )?;
    let metadata: serde_json::Value =
        serde_json::from_str(&metadata).map_err(|e| format!("cargo metadata's output: {e}"))?;
    let packages = metadata["packages"].as_array().cloned().unwrap_or_default();
    let root_manifest = root.join("Cargo.toml");
    let Some(tabecho) = packages
        .iter()
        .find(|p| p["manifest_path"].as_str() == root_manifest.to_str())
    else {
        return Err(fail("cargo metadata has no package at the root Cargo.toml"));
    };
    let version = tabecho["version"].as_str().unwrap_or_default().to_string();
    let maintainer = tabecho["metadata"]["deb"]["maintainer"]
        .as_str()
        .unwrap_or_default()
        .to_string();

    println!(
        "== rendering the man page, completions, units, copyright and changelog into target/deb-assets"
    );
    // Cargo.toml names these paths from the root, whatever CARGO_TARGET_DIR says.
    let assets = root.join("target/deb-assets");
    let _ = std::fs::remove_dir_all(&assets);
    for dir in ["completions", "systemd", "maintainer-scripts"] {
        std::fs::create_dir_all(assets.join(dir)).map_err(|e| format!("{dir}: {e}"))?;
    }
    let render = |args: &[&str]| stdout_of(Command::new(&bin).args(args), "tabecho");
    gzip(render(&["man"])?.as_bytes(), &assets.join("tabecho.1.gz"))?;
    for (shell, name) in [
        ("bash", "tabecho"),
        ("zsh", "_tabecho"),
        ("fish", "tabecho.fish"),
    ] {
        let script = render(&["completions", shell])?;
        write(&assets.join("completions").join(name), script)?;
    }
    let socket = read(&root.join("deploy/tabecho.socket"))?;
    write(&assets.join("systemd/tabecho.socket"), socket)?;
    let service = read(&root.join("deploy/tabecho.service"))?;
    let service: String = service
        .split_inclusive('\n')
        .map(
            |line| match line.strip_prefix("ExecStart=/usr/local/bin/tabecho ") {
                Some(rest) => format!("ExecStart=/usr/bin/tabecho {rest}"),
                None => line.to_string(),
            },
        )
        .collect();
    write(&assets.join("systemd/tabecho.service"), &service)?;
    if !service
        .lines()
        .any(|l| l.starts_with("ExecStart=/usr/bin/tabecho "))
    {
        return Err(fail(
            "deploy/tabecho.service has no ExecStart=/usr/local/bin/tabecho to point at /usr/bin",
        ));
    }
    let changelog = read(&root.join("CHANGELOG.md"))?;
    gzip(changelog.as_bytes(), &assets.join("changelog.gz"))?;
    let heading = format!("## [{version}] - ");
    let released = changelog.lines().find_map(|l| {
        l.strip_prefix(&heading)
            .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit() || b == b'-'))
    });
    let Some(released) = released else {
        return Err(fail(format!(
            "CHANGELOG.md has no '## [{version}] - YYYY-MM-DD'"
        )));
    };
    let date = stdout_of(
        Command::new("date")
            .env("LC_ALL", "C")
            .args(["-u", "-R", "-d", released]),
        "date",
    )?;
    let changelog_debian = format!(
        "tabecho ({version}-1) unstable; urgency=medium\n\n  \
         * tabecho {version}, packaged with cargo-deb (cargo xtask package). What changed\n    \
         is in /usr/share/doc/tabecho/changelog.gz.\n\n -- {maintainer}  {}\n",
        date.trim_end()
    );
    write(&assets.join("changelog.Debian"), changelog_debian)?;
    write(
        &assets.join("copyright"),
        copyright(&read(&root.join("LICENSE-MIT"))?),
    )?;
    let notices = third_party(&version, &packages)?;
    gzip(notices.as_bytes(), &assets.join("THIRD-PARTY-LICENSES.gz"))?;

    println!("== cargo deb --no-build --strip");
    run_shown(
        cargo().args(["deb", "--no-build", "--strip", "--locked"]),
        "cargo deb",
    )?;
    let arch = stdout_of(
        Command::new("dpkg").arg("--print-architecture"),
        "dpkg --print-architecture",
    )?;
    let deb = target
        .join("debian")
        .join(format!("tabecho_{version}-1_{}.deb", arch.trim()));
    if !deb.is_file() {
        return Err(fail(format!("{} was not built", deb.display())));
    }
    println!("built {}", deb.display());
    Ok((deb, version))
}

/// The Debian copyright file (DEP-5). Debian calls the MIT license Expat: its text from
/// LICENSE-MIT, as DEP-5 wants it, one space before each line, " ." for an empty one.
fn copyright(license_mit: &str) -> String {
    let mut s = String::from(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
         Upstream-Name: tabecho\n\
         Upstream-Contact: The tabecho developers\n\
         Comment: /usr/bin/tabecho also holds the crates it is built from; their licenses and\n \
         notices are in /usr/share/doc/tabecho/THIRD-PARTY-LICENSES.gz.\n\
         \n\
         Files: *\n\
         Copyright: 2026 The tabecho developers\n\
         License: Expat or Apache-2.0\n\
         \n\
         License: Expat\n",
    );
    let text = license_mit
        .lines()
        .skip_while(|l| !l.starts_with("Permission is hereby granted"));
    for line in text {
        s += if line.is_empty() { " ." } else { " " };
        s += line;
        s += "\n";
    }
    s + "\n\
         License: Apache-2.0\n \
         On Debian systems, the full text of the Apache License, Version 2.0, is in\n \
         /usr/share/common-licenses/Apache-2.0 (and in LICENSE-APACHE in the source).\n"
}

/// The notices of the crates in the binary: it links them (normal dependencies;
/// proc-macros run only at compile time), and their licenses (MIT, Apache-2.0 and the
/// like) ask that their notices go with it. Each crate's license as its Cargo.toml states
/// it, then the license and notice files it ships; a text seen before is named, not
/// repeated.
fn third_party(version: &str, packages: &[serde_json::Value]) -> Result<String, Outcome> {
    let manifests: HashMap<String, PathBuf> = packages
        .iter()
        .filter_map(|p| {
            let name = format!("{} v{}", p["name"].as_str()?, p["version"].as_str()?);
            Some((name, PathBuf::from(p["manifest_path"].as_str()?)))
        })
        .collect();
    let tree = stdout_of(
        cargo().args([
            "tree",
            "--package",
            "tabecho",
            "-e",
            "normal,no-proc-macro",
            "--prefix",
            "none",
            "-f",
            "{p}|{l}",
            "--locked",
        ]),
        "cargo tree",
    )?;
    let mut crates: Vec<&str> = tree
        .lines()
        .map(|l| l.strip_suffix(" (*)").unwrap_or(l))
        .filter(|l| !l.starts_with("tabecho "))
        .collect();
    crates.sort_unstable();
    crates.dedup();
    let mut out = format!(
        "tabecho {version} links the {} crates below, from crates.io.\n",
        crates.len()
    );
    let mut seen: HashMap<Vec<u8>, String> = HashMap::new();
    for line in crates {
        let (krate, license) = line.split_once('|').unwrap_or((line, ""));
        out += &format!("\n=== {krate}: {license}\n");
        let dir = manifests
            .get(krate)
            .and_then(|m| m.parent())
            .ok_or_else(|| format!("cargo metadata has no {krate}"))?;
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        names.sort_unstable();
        let mut found = false;
        // As the shell globs LICEN[CS]E* COPYING* NOTICE* UNLICENSE* listed them.
        for prefixes in [
            &["LICENCE", "LICENSE"][..],
            &["COPYING"],
            &["NOTICE"],
            &["UNLICENSE"],
        ] {
            let group = names
                .iter()
                .filter(|n| prefixes.iter().any(|p| n.starts_with(p)));
            for name in group {
                let Ok(text) = std::fs::read(dir.join(name)) else {
                    continue; // a directory, or unreadable
                };
                found = true;
                if let Some(first) = seen.get(&text) {
                    out += &format!("--- {name}: the same text as {first}\n");
                } else {
                    out += &format!("--- {name}\n");
                    out += &String::from_utf8_lossy(&text);
                    seen.insert(text, format!("{krate}, {name}"));
                }
            }
        }
        if !found {
            out += "--- (the crate ships no license file)\n";
        }
    }
    Ok(out)
}

/// A command run as root: itself when we are root, else through sudo.
fn as_root(program: &str) -> Command {
    if machine::is_root() {
        Command::new(program)
    } else {
        let mut c = Command::new("sudo");
        c.arg(program);
        c
    }
}

/// Purges the package when dropped, unless `done`: whatever happens once it is installed,
/// it does not stay installed.
struct Installed {
    done: bool,
}

impl Drop for Installed {
    fn drop(&mut self) {
        if !self.done {
            let _ = as_root("dpkg")
                .args(["--purge", "tabecho"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// lintian, then install, try and purge the package.
fn check(deb: &Path, version: &str) -> Result<(), Outcome> {
    println!("== lintian {}", deb.display());
    machine::need_tool("lintian", "lintian")?;
    // -I --pedantic: every tag down to info and pedantic is printed; E: and W: fail below.
    let mut lintian = Command::new("lintian");
    lintian.args(["-I", "--pedantic"]).arg(deb);
    let (_, out) = combined(lintian, "lintian")?;
    println!(
        "{}",
        if out.is_empty() {
            "(nothing to report)"
        } else {
            &out
        }
    );
    let kept = |l: &str| {
        KEPT.iter().any(|tag| {
            l.strip_prefix("W: tabecho: ")
                .and_then(|rest| rest.strip_prefix(tag))
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(' '))
        })
    };
    if out
        .lines()
        .any(|l| (l.starts_with("E: ") || l.starts_with("W: ")) && !kept(l))
    {
        return Err(fail("lintian reports errors or warnings"));
    }

    println!("== dpkg -i");
    run_shown(as_root("dpkg").arg("-i").arg(deb), "dpkg -i")?;
    let mut guard = Installed { done: false };
    let installed = stdout_of(Command::new("dpkg").args(["-L", "tabecho"]), "dpkg -L")?;
    let installed: Vec<&str> = installed.lines().collect();

    println!("== tabecho --version");
    // By its path: a tabecho in /usr/local/bin (docs/OPERATIONS.md, "Run as a service")
    // comes first in PATH.
    let got = stdout_of(Command::new("/usr/bin/tabecho").arg("--version"), "tabecho")?;
    let want = format!("tabecho {version}");
    if got.trim_end() != want {
        return Err(fail(format!("tabecho --version said '{}'", got.trim_end())));
    }
    println!("{want}");

    println!("== man tabecho");
    machine::need_tool("man", "man-db")?;
    let mut man = Command::new("man");
    man.env("MANWIDTH", "80").args(["-P", "cat", "tabecho"]);
    let (_, page) = combined(man, "man")?;
    for heading in ["TABECHO SERVE", "--max-buffer-memory", "EXIT STATUS"] {
        if !page.contains(heading) {
            return Err(fail(format!("man tabecho shows no '{heading}'")));
        }
    }
    println!(
        "ok: {} lines, a section per subcommand",
        page.lines().count()
    );

    println!("== bash completion");
    run_shown(
        Command::new("bash").args([
            "-c",
            "source /usr/share/bash-completion/completions/tabecho; complete -p tabecho",
        ]),
        "the bash completion",
    )
    .map_err(|_| fail("the installed bash completion does not load"))?;

    println!("== systemd-analyze verify on the installed units");
    machine::need_tool("systemd-analyze", "systemd")?;
    let units: Vec<&str> = installed
        .iter()
        .copied()
        .filter(|p| {
            p.ends_with("/systemd/system/tabecho.socket")
                || p.ends_with("/systemd/system/tabecho.service")
        })
        .collect();
    if units.len() != 2 {
        return Err(fail("the package holds no tabecho.socket and .service"));
    }
    let mut verify = Command::new("systemd-analyze");
    verify.arg("verify").args(&units);
    match combined(verify, "systemd-analyze")? {
        (true, out) if out.is_empty() => println!("ok: clean: {}", units.join(" ")),
        (_, out) => return Err(fail(format!("systemd-analyze verify: {out}"))),
    }

    println!("== dpkg --purge");
    run_shown(as_root("dpkg").args(["--purge", "tabecho"]), "dpkg --purge")?;
    guard.done = true;
    let mut left: Vec<String> = Vec::new();
    for path in &installed {
        let p = Path::new(path);
        if !p.exists() {
            continue;
        }
        // A directory another package owns too (/usr/bin, /usr/share/man/man1) rightly
        // stays; one only tabecho had (/usr/share/doc/tabecho) must be gone.
        let owned = || {
            Command::new("dpkg")
                .args(["-S", path])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if p.is_dir() && owned() {
            continue;
        }
        left.push(path.to_string());
    }
    // deb-systemd-helper's records (enabled and masked states) go with the purge too.
    let state = Command::new("find")
        .args(["/etc/systemd", "/var/lib/systemd", "-name", "tabecho.*"])
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    left.extend(state.lines().map(str::to_string));
    if !left.is_empty() {
        return Err(fail(format!("left behind after purge: {}", left.join(" "))));
    }
    let known = Command::new("dpkg")
        .args(["-s", "tabecho"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if known {
        return Err(fail("dpkg still knows tabecho after purge"));
    }
    println!(
        "ok: purged, none of the {} paths it installed is left",
        installed.len()
    );
    println!("package: {}", deb.display());
    Ok(())
}
