//! What a check needs from the machine: the release binary, tools (installed with apt-get
//! when missing), the descriptor limit; and the verdict every check ends with.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

/// How a check ended.
#[derive(Debug)]
pub enum Outcome {
    /// Every condition held.
    Pass,
    /// A condition failed (each was printed as it was judged).
    Fail,
    /// The machine cannot run the check; why.
    CannotRun(String),
}

impl Outcome {
    /// Prints the verdict line and returns the exit status (0, 1, 2).
    pub fn exit(self) -> ExitCode {
        match self {
            Outcome::Pass => {
                println!("PASS");
                ExitCode::SUCCESS
            }
            Outcome::Fail => {
                println!("FAIL");
                ExitCode::from(1)
            }
            Outcome::CannotRun(why) => {
                println!("CANNOT RUN: {why}");
                ExitCode::from(2)
            }
        }
    }
}

impl<E: std::fmt::Display> From<E> for Outcome {
    /// A setup step that failed: the check could not run.
    fn from(e: E) -> Outcome {
        Outcome::CannotRun(e.to_string())
    }
}

/// The conditions of one check: each printed `ok` or `FAIL` as judged.
#[derive(Default)]
pub struct Verdict {
    failed: usize,
}

impl Verdict {
    /// Judges one condition and prints it.
    pub fn check(&mut self, ok: bool, what: impl std::fmt::Display) {
        if ok {
            println!("ok    {what}");
        } else {
            println!("FAIL  {what}");
            self.failed += 1;
        }
    }

    /// Pass when no condition failed.
    pub fn outcome(&self) -> Outcome {
        if self.failed == 0 {
            Outcome::Pass
        } else {
            Outcome::Fail
        }
    }
}

/// Builds the release tabecho (quietly) and returns its path, in the target directory
/// cargo uses (`CARGO_TARGET_DIR` honoured, as `cargo metadata` reports it).
pub fn release_binary() -> Result<PathBuf, String> {
    cargo_build_release(&["--bin", "tabecho"])?;
    Ok(target_dir()?.join("release/tabecho"))
}

/// Builds tabecho's example NAME in release (quietly) and returns its path.
pub fn release_example(name: &str) -> Result<PathBuf, String> {
    cargo_build_release(&["--example", name])?;
    Ok(target_dir()?.join("release/examples").join(name))
}

/// `cargo build --release --quiet --package tabecho TARGET...`.
fn cargo_build_release(target: &[&str]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args(["build", "--release", "--quiet", "--package", "tabecho"])
        .args(target)
        .status()
        .map_err(|e| format!("cargo build: {e}"))?;
    if !status.success() {
        return Err(format!(
            "cargo build --release {} failed ({status})",
            target.join(" ")
        ));
    }
    Ok(())
}

/// Builds benches/tokio-echo (a workspace of its own) in release and returns its binary.
pub fn tokio_echo_binary() -> Result<PathBuf, String> {
    bench_binary("tokio-echo", "tokio-echo")
}

/// Builds benches/ceiling (the byte-echo ceiling) in release and returns its binary.
pub fn ceiling_binary() -> Result<PathBuf, String> {
    bench_binary("ceiling", "ceiling-echo")
}

/// Builds the bench server crate benches/DIR (a workspace of its own) in release and
/// returns its binary NAME, in that workspace's target directory.
fn bench_binary(dir: &str, name: &str) -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = workspace_root()
        .join("benches")
        .join(dir)
        .join("Cargo.toml");
    let status = Command::new(&cargo)
        .args(["build", "--release", "--quiet", "--manifest-path"])
        .arg(&manifest)
        .status()
        .map_err(|e| format!("cargo build: {e}"))?;
    if !status.success() {
        return Err(format!("building benches/{dir} failed ({status})"));
    }
    Ok(target_dir_of(Some(&manifest))?.join("release").join(name))
}

/// The workspace's target directory, from `cargo metadata`.
pub fn target_dir() -> Result<PathBuf, String> {
    target_dir_of(None)
}

/// The target directory of the workspace of `manifest` (this one's if `None`).
fn target_dir_of(manifest: Option<&std::path::Path>) -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command.args(["metadata", "--format-version", "1", "--no-deps"]);
    if let Some(m) = manifest {
        command.arg("--manifest-path").arg(m);
    }
    let out = command
        .output()
        .map_err(|e| format!("cargo metadata: {e}"))?;
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("cargo metadata's output: {e}"))?;
    meta["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .ok_or_else(|| "cargo metadata names no target directory".into())
}

/// The workspace root (the checks read deploy/ and write under target/).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ is inside the workspace")
        .to_path_buf()
}

/// A directory for a check's logs and reports: TARGET/xtask/NAME, made afresh.
pub fn out_dir(name: &str) -> Result<PathBuf, String> {
    let dir = target_dir()?.join("xtask").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

/// Makes sure `program` is on PATH, installing Debian package `package` with apt-get if
/// not (and saying so on stderr); `Err` says why it could not.
pub fn need_tool(program: &str, package: &str) -> Result<(), String> {
    if on_path(program) {
        return Ok(());
    }
    eprintln!("{program} is missing; installing it: apt-get install -y {package}");
    let apt = |args: &[&str]| {
        let mut cmd = if is_root() {
            Command::new("apt-get")
        } else {
            let mut c = Command::new("sudo");
            c.args(["-n", "apt-get"]);
            c
        };
        cmd.args(args)
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let installed =
        apt(&["install", "-y", package]) || (apt(&["update"]) && apt(&["install", "-y", package]));
    if !installed {
        return Err(format!(
            "{program} is missing and apt-get could not install {package}"
        ));
    }
    if on_path(program) {
        Ok(())
    } else {
        Err(format!(
            "{package} installed, but {program} is still not on PATH"
        ))
    }
}

/// Whether `program` is on PATH (or in /usr/sbin, /sbin, where iproute2 and HAProxy are).
pub fn on_path(program: &str) -> bool {
    let path = std::env::var("PATH").unwrap_or_default() + ":/usr/sbin:/sbin";
    path.split(':')
        .any(|dir| std::path::Path::new(dir).join(program).is_file())
}

/// Whether this process runs as root (uid 0, from /proc/self/status).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// The descriptor limit this process may raise itself to (the hard RLIMIT_NOFILE, from
/// /proc/self/limits), capped at the 20,000 a process may hold on the project's machines.
pub fn fd_limit() -> u64 {
    let hard = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(4).map(str::to_string))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    hard.min(MAX_FDS)
}

/// Raises this process's soft descriptor limit to `need` (children inherit it); `Err`
/// says why the check cannot run when the hard limit, or the project's 20,000, is lower.
pub fn raise_fd_limit(need: u64) -> Result<(), String> {
    let limit = fd_limit();
    if limit < need {
        return Err(format!(
            "this check needs {need} descriptors per process; the limit here is {limit}"
        ));
    }
    let (_, hard) = rlimit::Resource::NOFILE
        .get()
        .map_err(|e| format!("getrlimit: {e}"))?;
    rlimit::Resource::NOFILE
        .set(limit, hard)
        .map_err(|e| format!("setrlimit {limit}: {e}"))
}

/// One frame through `tabecho send` to `addr`: `Ok` with the reply when it is the right
/// one, else `Err` saying what came.
pub fn answers(bin: &std::path::Path, addr: std::net::SocketAddr) -> Result<String, String> {
    let out = Command::new(bin)
        .args([
            "send",
            "--addr",
            &addr.to_string(),
            "--timeout",
            "5s",
            "still-answering",
        ])
        .output()
        .map_err(|e| format!("tabecho send: {e}"))?;
    let reply = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() && reply == "server got:still-answering" {
        Ok(reply)
    } else {
        Err(format!(
            "tabecho send: {} {reply:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The most descriptors one process may hold on the project's shared machines.
pub const MAX_FDS: u64 = 20_000;
