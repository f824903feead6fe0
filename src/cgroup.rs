//! The limits this process's control groups set on it: the memory limit the buffer
//! budget's default is sized from, and the CPU quota `--threads auto` counts (both chosen
//! in [`crate::sizing`]). Read once at start; nothing here runs per frame.
//!
//! Where the files are comes from `/proc/self/cgroup` (the process's cgroup in each
//! hierarchy) and `/proc/self/mountinfo` (where each hierarchy is mounted, and which part
//! of it this mount namespace sees). [`Limits::read`] is handed both texts and reads every
//! file under a filesystem root, so the tests read fixture trees in a temporary directory;
//! [`Limits::of_this_process`] is it on `/`.
//!
//! What is read, smallest first where there are two:
//! - cgroup v2: `memory.max` and `memory.high` (above `high` the kernel throttles and
//!   reclaims hard: a budget sized past it would run the server there); `cpu.max`.
//! - cgroup v1: `memory.limit_in_bytes`; `cpu.cfs_quota_us` over `cpu.cfs_period_us`.
//! - Hybrid (v1 hierarchies beside a v2 mount, as systemd's "hybrid" mode): a controller
//!   with a v1 hierarchy of its own is read there, because a controller is bound to one
//!   hierarchy at a time and the v2 tree then has none of its files; the others on v2.
//!
//! # Invariants
//! - A limit is always the smallest over the process's cgroup and every ancestor up to
//!   the top of the mount: a tighter parent binds the child as much as its own limit
//!   (Go's runtime reads the leaf's `cpu.max` only and misses it: golang/go#81180).
//!   Ancestors above the mount's root are not visible here and are not read.
//! - A limit file that does not exist is no limit at that level: the controller is not
//!   enabled there, or the level is the hierarchy's root, which has none.
//! - A limit file that exists but cannot be read or parsed, a hierarchy the process is in
//!   but that is not mounted here, or a cgroup outside its mount, makes the reading an
//!   error naming the file or the hierarchy and why; never a guess. The caller keeps its
//!   plain default and logs the error.

use std::io;
use std::path::{Path, PathBuf};

/// What one controller's limit reads: `Ok(None)` where no limit applies, `Err` (why) where
/// it cannot be known.
pub type Reading<T> = Result<Option<T>, String>;

/// The memory limit in force: the smallest found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryLimit {
    /// The limit, in bytes.
    pub bytes: u64,
    /// The file it was read from, as this process sees it
    /// (`/sys/fs/cgroup/system.slice/tabecho.service/memory.max`).
    pub file: PathBuf,
}

impl MemoryLimit {
    /// The file's name (`memory.max`, `memory.high`, `memory.limit_in_bytes`).
    pub fn name(&self) -> String {
        file_name(&self.file)
    }

    /// The cgroup directory the file is in.
    pub fn dir(&self) -> &Path {
        self.file.parent().unwrap_or(Path::new("/"))
    }
}

/// The CPU quota in force: the smallest share found, over all the cgroup's threads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuQuota {
    /// CPU time the cgroup may use per period, in microseconds; always more than 0.
    pub quota_us: u64,
    /// The period, in microseconds; always more than 0.
    pub period_us: u64,
    /// The file the quota was read from (`cpu.max`, `cpu.cfs_quota_us`).
    pub file: PathBuf,
}

impl CpuQuota {
    /// The quota in CPUs (1.5: one and a half CPUs' worth of time per period).
    pub fn cpus(&self) -> f64 {
        self.quota_us as f64 / self.period_us as f64
    }

    /// Whole CPUs in the quota, rounded down (0 for a quota under one CPU).
    pub fn whole_cpus(&self) -> u64 {
        self.quota_us / self.period_us
    }

    /// The file's name.
    pub fn name(&self) -> String {
        file_name(&self.file)
    }

    /// The cgroup directory the file is in.
    pub fn dir(&self) -> &Path {
        self.file.parent().unwrap_or(Path::new("/"))
    }

    /// This quota is a smaller share than `other`'s (quota over period, compared exactly).
    fn less_than(&self, other: &CpuQuota) -> bool {
        u128::from(self.quota_us) * u128::from(other.period_us)
            < u128::from(other.quota_us) * u128::from(self.period_us)
    }
}

/// What the process's cgroups limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// The memory limit.
    pub memory: Reading<MemoryLimit>,
    /// The CPU quota.
    pub cpu: Reading<CpuQuota>,
}

/// `memory.limit_in_bytes` (v1) reads PAGE_COUNTER_MAX pages when no limit is set: LONG_MAX
/// rounded down to the page size, 9223372036854771712 with 4 KiB pages, another number
/// with other page sizes. Any value from 2^62 bytes (4 EiB) up is taken as that: no
/// machine has that much memory.
const V1_UNLIMITED: u64 = 1 << 62;

impl Limits {
    /// The limits of the process whose `/proc/self/cgroup` is `self_cgroup` and whose
    /// `/proc/self/mountinfo` is `mountinfo`, every file read under `root` (`/` for this
    /// machine's). The paths in the result are as the process sees them, without `root`.
    pub fn read(root: &Path, self_cgroup: &str, mountinfo: &str) -> Limits {
        let memberships = match parse_self_cgroup(self_cgroup) {
            Ok(m) => m,
            Err(e) => {
                return Limits {
                    memory: Err(e.clone()),
                    cpu: Err(e),
                }
            }
        };
        let mounts: Vec<Mount> = mountinfo.lines().filter_map(Mount::parse).collect();
        let tree = Tree {
            root,
            memberships: &memberships,
            mounts: &mounts,
        };
        Limits {
            memory: tree.memory(),
            cpu: tree.cpu(),
        }
    }

    /// The limits of this process, from `/proc/self/cgroup` and `/proc/self/mountinfo`.
    /// Off Linux there are no cgroups: no limits.
    pub fn of_this_process() -> Limits {
        if !cfg!(target_os = "linux") {
            return Limits {
                memory: Ok(None),
                cpu: Ok(None),
            };
        }
        let read = |path: &str| std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"));
        match (read("/proc/self/cgroup"), read("/proc/self/mountinfo")) {
            (Ok(cgroup), Ok(mountinfo)) => Limits::read(Path::new("/"), &cgroup, &mountinfo),
            (Err(e), _) | (_, Err(e)) => Limits {
                memory: Err(e.clone()),
                cpu: Err(e),
            },
        }
    }
}

/// One line of `/proc/self/cgroup`: `ID:CONTROLLERS:PATH`.
#[derive(Debug)]
struct Membership {
    /// The v1 controllers of the hierarchy (`cpu,cpuacct`); empty for v2 (ID 0) and for
    /// named hierarchies (`name=systemd`, kept as a name here, matching no controller).
    controllers: Vec<String>,
    /// The hierarchy is cgroup v2 (`0::PATH`).
    v2: bool,
    /// The process's cgroup in it, from the hierarchy's root (or its cgroup namespace's).
    path: String,
}

/// The lines of `/proc/self/cgroup`; `Err` on a line of another shape.
fn parse_self_cgroup(text: &str) -> Result<Vec<Membership>, String> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            return Err(format!("/proc/self/cgroup: unexpected line {line:?}"));
        };
        out.push(Membership {
            controllers: controllers
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect(),
            v2: id == "0" && controllers.is_empty(),
            path: path.to_string(),
        });
    }
    Ok(out)
}

/// One cgroup mount of `/proc/self/mountinfo`.
#[derive(Debug)]
struct Mount {
    /// The part of the hierarchy mounted (its 4th field): `/` for all of it.
    root: String,
    /// Where it is mounted.
    point: PathBuf,
    /// cgroup2 (else cgroup v1).
    v2: bool,
    /// The super options, which name a v1 hierarchy's controllers (`rw,cpu,cpuacct`).
    options: Vec<String>,
}

impl Mount {
    /// A mountinfo line (proc(5): `ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL...] -
    /// FSTYPE SOURCE SUPER_OPTIONS`), if it is a cgroup mount.
    fn parse(line: &str) -> Option<Mount> {
        let (before, after) = line.split_once(" - ")?;
        let mut after = after.split(' ');
        let fstype = after.next()?;
        let v2 = match fstype {
            "cgroup2" => true,
            "cgroup" => false,
            _ => return None,
        };
        let options = after.nth(1).unwrap_or("");
        let mut before = before.split(' ');
        let root = unescape(before.nth(3)?);
        let point = PathBuf::from(unescape(before.next()?));
        Some(Mount {
            root,
            point,
            v2,
            options: options.split(',').map(str::to_string).collect(),
        })
    }
}

/// A mountinfo path with its octal escapes (`\040` for a space, `\011`, `\012`, `\134`)
/// decoded.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                let value = d.iter().fold(0u32, |v, b| v * 8 + u32::from(b - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Where one controller's files are: the process's cgroup and the top of the mount, both
/// as the process sees them.
struct Place {
    /// The process's cgroup directory.
    dir: PathBuf,
    /// The mount point: the highest ancestor visible.
    top: PathBuf,
    /// The hierarchy is cgroup v2.
    v2: bool,
}

/// The process's memberships and the cgroup mounts, read under `root`.
struct Tree<'a> {
    /// The filesystem root every file is read under (`/`, or a fixture's directory).
    root: &'a Path,
    /// The lines of `/proc/self/cgroup`.
    memberships: &'a [Membership],
    /// The cgroup mounts of `/proc/self/mountinfo`.
    mounts: &'a [Mount],
}

impl Tree<'_> {
    /// The memory limit: the smallest `memory.max` or `memory.high` (v2), or
    /// `memory.limit_in_bytes` (v1), from the process's cgroup to the top.
    fn memory(&self) -> Reading<MemoryLimit> {
        let Some(place) = self.place("memory")? else {
            return Ok(None);
        };
        let files: &[&str] = if place.v2 {
            &["memory.max", "memory.high"]
        } else {
            &["memory.limit_in_bytes"]
        };
        let mut smallest: Option<MemoryLimit> = None;
        for dir in self.levels(&place)? {
            for name in files {
                let file = dir.join(name);
                let Some(text) = self.read(&file)? else {
                    continue;
                };
                let bytes = match (text.as_str(), text.parse::<u64>()) {
                    ("max", _) if place.v2 => continue,
                    (_, Ok(bytes)) if !place.v2 && bytes >= V1_UNLIMITED => continue,
                    (_, Ok(bytes)) => bytes,
                    (_, Err(_)) => {
                        return Err(format!(
                            "{}: {text:?} is not a number of bytes{}",
                            file.display(),
                            if place.v2 { " nor max" } else { "" }
                        ))
                    }
                };
                if smallest.as_ref().is_none_or(|s| bytes < s.bytes) {
                    smallest = Some(MemoryLimit { bytes, file });
                }
            }
        }
        Ok(smallest)
    }

    /// The CPU quota: the smallest `cpu.max` (v2), or `cpu.cfs_quota_us` over
    /// `cpu.cfs_period_us` (v1), from the process's cgroup to the top.
    fn cpu(&self) -> Reading<CpuQuota> {
        let Some(place) = self.place("cpu")? else {
            return Ok(None);
        };
        let mut smallest: Option<CpuQuota> = None;
        for dir in self.levels(&place)? {
            let quota = if place.v2 {
                self.cpu_max(&dir)?
            } else {
                self.cfs_quota(&dir)?
            };
            if let Some(q) = quota {
                if smallest.as_ref().is_none_or(|s| q.less_than(s)) {
                    smallest = Some(q);
                }
            }
        }
        Ok(smallest)
    }

    /// `DIR/cpu.max`: `max PERIOD` (no quota) or `QUOTA PERIOD`, in microseconds.
    fn cpu_max(&self, dir: &Path) -> Reading<CpuQuota> {
        let file = dir.join("cpu.max");
        let Some(text) = self.read(&file)? else {
            return Ok(None);
        };
        let bad = || {
            format!(
                "{}: {text:?} is not \"QUOTA PERIOD\" nor \"max PERIOD\"",
                file.display()
            )
        };
        let mut words = text.split_whitespace();
        let (Some(quota), Some(period), None) = (words.next(), words.next(), words.next()) else {
            return Err(bad());
        };
        let period_us = positive(period).ok_or_else(bad)?;
        if quota == "max" {
            return Ok(None);
        }
        let quota_us = positive(quota).ok_or_else(bad)?;
        Ok(Some(CpuQuota {
            quota_us,
            period_us,
            file,
        }))
    }

    /// `DIR/cpu.cfs_quota_us` (-1: no quota) over `DIR/cpu.cfs_period_us`.
    fn cfs_quota(&self, dir: &Path) -> Reading<CpuQuota> {
        let file = dir.join("cpu.cfs_quota_us");
        let Some(text) = self.read(&file)? else {
            return Ok(None);
        };
        if text == "-1" {
            return Ok(None);
        }
        let quota_us = positive(&text).ok_or_else(|| {
            format!(
                "{}: {text:?} is not a number of microseconds nor -1",
                file.display()
            )
        })?;
        let period_file = dir.join("cpu.cfs_period_us");
        let period = self.read(&period_file)?.ok_or_else(|| {
            format!(
                "{}: missing beside {}",
                period_file.display(),
                file.display()
            )
        })?;
        let period_us = positive(&period).ok_or_else(|| {
            format!(
                "{}: {period:?} is not a number of microseconds",
                period_file.display()
            )
        })?;
        Ok(Some(CpuQuota {
            quota_us,
            period_us,
            file,
        }))
    }

    /// Where `controller`'s files are: on its v1 hierarchy if it has one, else on v2;
    /// `None` when the process is in neither (a kernel without that controller).
    fn place(&self, controller: &str) -> Result<Option<Place>, String> {
        let v1 = self
            .memberships
            .iter()
            .find(|m| m.controllers.iter().any(|c| c == controller));
        if let Some(m) = v1 {
            let mounts = self
                .mounts
                .iter()
                .filter(|mount| !mount.v2 && mount.options.iter().any(|o| o == controller));
            return self
                .locate(m, mounts, &format!("the cgroup v1 {controller} hierarchy"))
                .map(Some);
        }
        match self.memberships.iter().find(|m| m.v2) {
            Some(m) => {
                let mounts = self.mounts.iter().filter(|mount| mount.v2);
                self.locate(m, mounts, "the cgroup v2 hierarchy").map(Some)
            }
            None => Ok(None),
        }
    }

    /// The process's cgroup `m` under the first of `mounts` whose root holds it.
    fn locate<'m>(
        &self,
        m: &Membership,
        mounts: impl Iterator<Item = &'m Mount>,
        what: &str,
    ) -> Result<Place, String> {
        let mut seen = Vec::new();
        for mount in mounts {
            let relative = if mount.root == "/" {
                Some(m.path.as_str())
            } else {
                m.path
                    .strip_prefix(mount.root.as_str())
                    .filter(|rest| rest.is_empty() || rest.starts_with('/'))
            };
            // `/..` appears when the process sits outside its cgroup namespace's root.
            match relative {
                Some(rel) if !rel.split('/').any(|c| c == "..") => {
                    let dir = mount.point.join(rel.trim_start_matches('/'));
                    return Ok(Place {
                        dir,
                        top: mount.point.clone(),
                        v2: mount.v2,
                    });
                }
                _ => seen.push(format!("{} (root {})", mount.point.display(), mount.root)),
            }
        }
        if seen.is_empty() {
            Err(format!(
                "{what} holds this process (cgroup {}) but is not mounted here",
                m.path
            ))
        } else {
            Err(format!(
                "this process's cgroup {} in {what} is outside what is mounted: {}",
                m.path,
                seen.join(", ")
            ))
        }
    }

    /// The process's cgroup and each ancestor up to the top, the cgroup first; `Err` when
    /// the cgroup's directory is not there.
    fn levels(&self, place: &Place) -> Result<Vec<PathBuf>, String> {
        if !self.on_disk(&place.dir).is_dir() {
            return Err(format!("{}: no such cgroup directory", place.dir.display()));
        }
        let mut levels = vec![place.dir.clone()];
        let mut dir = place.dir.as_path();
        while dir != place.top {
            match dir.parent() {
                Some(parent) if parent.starts_with(&place.top) => {
                    levels.push(parent.to_path_buf());
                    dir = parent;
                }
                _ => break,
            }
        }
        Ok(levels)
    }

    /// `file` (as the process sees it) under the root.
    fn on_disk(&self, file: &Path) -> PathBuf {
        self.root.join(file.strip_prefix("/").unwrap_or(file))
    }

    /// The trimmed text of `file`; `None` if it does not exist, `Err` naming it if it
    /// cannot be read.
    fn read(&self, file: &Path) -> Result<Option<String>, String> {
        match std::fs::read_to_string(self.on_disk(file)) {
            Ok(text) => Ok(Some(text.trim().to_string())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", file.display())),
        }
    }
}

/// A number above 0.
fn positive(text: &str) -> Option<u64> {
    text.parse().ok().filter(|&n| n > 0)
}

/// The last component of `path`, as text.
fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The mount point of the hierarchy holding `controller` (its v1 hierarchy if it has one,
/// else the v2 mount if `controller` is in its root's `cgroup.controllers`), as
/// `(point, v2)`, from the text of `/proc/self/mountinfo`: for the system checks that make
/// cgroups of their own. Reads `cgroup.controllers` under `root`.
pub fn hierarchy_of(root: &Path, mountinfo: &str, controller: &str) -> Option<(PathBuf, bool)> {
    let mounts: Vec<Mount> = mountinfo.lines().filter_map(Mount::parse).collect();
    if let Some(m) = mounts
        .iter()
        .find(|m| !m.v2 && m.root == "/" && m.options.iter().any(|o| o == controller))
    {
        return Some((m.point.clone(), false));
    }
    mounts
        .iter()
        .filter(|m| m.v2 && m.root == "/")
        .find_map(|m| {
            let on_disk = root.join(m.point.strip_prefix("/").unwrap_or(&m.point));
            let controllers = std::fs::read_to_string(on_disk.join("cgroup.controllers")).ok()?;
            controllers
                .split_whitespace()
                .any(|c| c == controller)
                .then(|| (m.point.clone(), true))
        })
}

#[cfg(test)]
mod tests;
