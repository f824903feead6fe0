//! The defaults sized from where the server runs: `--max-buffer-memory`'s from the memory
//! limit of its cgroup, `--threads auto` from the CPUs it may run on and its CPU quota.
//! Pure but for [`cpus_allowed`]: the readings ([`crate::cgroup`]) come in; the choice,
//! and a few words saying where it came from for the start-up line, come out. Run once at
//! start (`tabecho serve`); outside any cgroup limit the choices are the plain defaults.

use crate::cgroup::{CpuQuota, MemoryLimit, Reading};
use crate::config::DEFAULT_MAX_BUFFER_MEMORY;

/// The share of a cgroup's memory limit the buffer budget takes by default, in percent.
///
/// The budget bounds what connections are charged, not the process: the rest of the
/// limit must hold what it leaves out, or the kernel kills the server (every connection
/// lost) before the budget closes the few that hold the most.
/// - The process's baseline: its binary and threads, each reactor's read and reply
///   buffers, about 128 bytes of user space per open connection, and the kernel's objects
///   for each socket (socket, file, epoll entry), which are charged to the cgroup too.
/// - The kernel's share: cgroup v2 charges socket buffers to the same limit (`memory.stat`:
///   `sock`). The budget charges the kernel queues of connections whose sockets refuse
///   replies (`ServerConfig::kernel_held_when_stalled`); not those of the connections it
///   has not read yet (new ones, and those waiting for room while it closes its largest
///   holders), which under an attack of thousands of connections are tens of MiB.
/// - Whatever else runs in the same cgroup (a container's shell, a sidecar).
///
/// One share for v1 and v2 alike, sized for v2, where the sockets count: 60% left too
/// little room under the attack mix in a 200 MiB cgroup, 40% leaves enough
/// (BENCHMARKS.md, section 15, measured by `cargo xtask container`). The JVM sizes its
/// heap at 25% of a container's limit by default, .NET at 75%.
pub const BUDGET_SHARE_PERCENT: u64 = 40;

/// A value sized at start, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The value.
    pub value: usize,
    /// Where it came from, for the start-up line: `40% of memory.max 200 MiB in
    /// /sys/fs/cgroup/...`.
    pub from: String,
    /// What is amiss, for a warning beside it: a limit that could not be read, a value
    /// given above the cgroup's limit.
    pub warning: Option<String>,
}

/// `--max-buffer-memory`: `given` if it was given, else the smaller of the default
/// (256 MiB) and [`BUDGET_SHARE_PERCENT`] of the cgroup's memory `limit`, but at least
/// `least` (what the server needs to start: one connection's worst case per reactor and
/// one more). A limit only lowers the default: outside a cgroup, and in one whose limit
/// is large, the budget is what it always was. A `limit` that cannot be read keeps the
/// default, with a warning saying why.
pub fn buffer_budget(given: Option<usize>, limit: &Reading<MemoryLimit>, least: usize) -> Choice {
    let default = DEFAULT_MAX_BUFFER_MEMORY;
    if let Some(given) = given {
        let warning = match limit {
            Ok(Some(l)) if given as u64 > l.bytes => Some(format!(
                "--max-buffer-memory {} is above {} {} in {}: the kernel may kill the \
                 server (every connection lost) before the budget closes a connection; \
                 the default there is {}",
                size(given as u64),
                l.name(),
                size(l.bytes),
                l.dir().display(),
                size(share_of(l.bytes).min(default as u64))
            )),
            _ => None,
        };
        return Choice {
            value: given,
            from: "--max-buffer-memory".to_string(),
            warning,
        };
    }
    let limit = match limit {
        Ok(Some(limit)) => limit,
        Ok(None) => {
            return Choice {
                value: default,
                from: "the default; no cgroup memory limit".to_string(),
                warning: None,
            }
        }
        Err(e) => {
            return Choice {
                value: default,
                from: "the default".to_string(),
                warning: Some(format!(
                    "cannot read the cgroup's memory limit ({e}): the buffer budget is the \
                     default {}; if a limit applies, give --max-buffer-memory well under it",
                    size(default as u64)
                )),
            }
        }
    };
    let share = share_of(limit.bytes);
    let of_limit = format!(
        "{BUDGET_SHARE_PERCENT}% of {} {} in {}",
        limit.name(),
        size(limit.bytes),
        limit.dir().display()
    );
    if share >= default as u64 {
        return Choice {
            value: default,
            from: format!("the default; {of_limit} is more"),
            warning: None,
        };
    }
    // share < default, so it fits a usize.
    let share = share as usize;
    if share < least {
        return Choice {
            value: least,
            from: format!(
                "the least the reactors need; {of_limit} is {}",
                size(share as u64)
            ),
            warning: Some(format!(
                "{of_limit} is {}, below the {} the reactors need (one connection's worst \
                 case each, and one more): the budget is that, and the kernel may kill the \
                 server before the budget closes a connection; lower --threads, --sndbuf, \
                 --rcvbuf, --max-frame or --high-water, or raise the limit",
                size(share as u64),
                size(least as u64)
            )),
        };
    }
    Choice {
        value: share,
        from: of_limit,
        warning: None,
    }
}

/// [`BUDGET_SHARE_PERCENT`] of `bytes`, rounded down.
fn share_of(bytes: u64) -> u64 {
    // Through u128: a limit near u64::MAX must not overflow.
    (u128::from(bytes) * u128::from(BUDGET_SHARE_PERCENT) / 100) as u64
}

/// `--threads auto`: the `cpus` this process may run on (`cpus_from` says how they were
/// counted), but no more than the cgroup's CPU `quota` in whole CPUs, rounded down, and at
/// least 1.
///
/// Rounded down (as Rust's `available_parallelism`; Go 1.25 rounds GOMAXPROCS up) because
/// a reactor is one thread, busy whenever its connections are, and SO_REUSEPORT gives each
/// reactor an even share of them: with more reactors than the quota holds, a busy server
/// spends its quota early in each period and the kernel stops every reactor until the next
/// (CFS throttling: up to the rest of a 100 ms period), a stall every client sees. One
/// reactor fewer never stalls, and the fraction left serves the process's other threads.
pub fn reactors(cpus: usize, cpus_from: &str, quota: &Reading<CpuQuota>) -> Choice {
    let cpus = cpus.max(1);
    let mask = format!("{} in {cpus_from}", count_of_cpus(&cpus.to_string()));
    match quota {
        Ok(Some(q)) => {
            let whole = usize::try_from(q.whole_cpus()).unwrap_or(usize::MAX).max(1);
            let at_least = if q.whole_cpus() == 0 {
                " to at least 1"
            } else {
                ""
            };
            Choice {
                value: cpus.min(whole),
                from: format!(
                    "--threads auto: {mask}; {} {} in {}, rounded down{at_least}",
                    q.name(),
                    count_of_cpus(&trim_cpus(q.cpus())),
                    q.dir().display(),
                ),
                warning: None,
            }
        }
        Ok(None) => Choice {
            value: cpus,
            from: format!("--threads auto: {mask}; no CPU quota"),
            warning: None,
        },
        Err(e) => Choice {
            value: cpus,
            from: format!("--threads auto: {mask}"),
            warning: Some(format!(
                "cannot read the cgroup's CPU quota ({e}): --threads auto counts the {mask} only"
            )),
        },
    }
}

/// `1 CPU`, `2 CPUs`, `0.5 CPUs`.
fn count_of_cpus(number: &str) -> String {
    format!("{number} CPU{}", if number == "1" { "" } else { "s" })
}

/// CPUs as few digits as say them: `2`, `2.5`, `0.25`.
fn trim_cpus(cpus: f64) -> String {
    let text = format!("{cpus:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The CPUs this process may run on, and how they were counted: its affinity mask
/// (`Cpus_allowed_list` of /proc/self/status), else what `available_parallelism` says
/// (which on Linux applies the CPU quota too, rounded down as [`reactors`] does).
pub fn cpus_allowed() -> (usize, &'static str) {
    let listed = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .and_then(count_cpu_list)
        });
    match listed {
        Some(n) => (n, "the affinity mask"),
        None => (
            std::thread::available_parallelism().map_or(1, |n| n.get()),
            "available_parallelism",
        ),
    }
}

/// The CPUs in a kernel CPU list (`0-3,8,10-11`: 7); `None` if it is not one or names none.
pub fn count_cpu_list(list: &str) -> Option<usize> {
    let mut count = 0usize;
    for range in list.trim().split(',') {
        let (first, last) = match range.split_once('-') {
            Some((a, b)) => (a.parse::<usize>().ok()?, b.parse::<usize>().ok()?),
            None => {
                let one = range.parse::<usize>().ok()?;
                (one, one)
            }
        };
        count = count.checked_add(last.checked_sub(first)? + 1)?;
    }
    (count > 0).then_some(count)
}

/// A size for people: `200 MiB`, `1.5 MiB`, `2 GiB`, `512 bytes`.
pub fn size(bytes: u64) -> String {
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    if bytes >= GIB && bytes.is_multiple_of(GIB) {
        format!("{} GiB", bytes / GIB)
    } else if bytes > 0 && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= MIB / 10 {
        format!("{:.1} MiB", bytes as f64 / MIB as f64)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    const MIB: u64 = 1 << 20;

    fn limit(bytes: u64) -> Reading<MemoryLimit> {
        Ok(Some(MemoryLimit {
            bytes,
            file: PathBuf::from("/sys/fs/cgroup/app/memory.max"),
        }))
    }

    fn quota(quota_us: u64, period_us: u64) -> Reading<CpuQuota> {
        Ok(Some(CpuQuota {
            quota_us,
            period_us,
            file: PathBuf::from("/sys/fs/cgroup/app/cpu.max"),
        }))
    }

    /// The least two reactors need at the defaults: 3 x 688,204 bytes.
    const LEAST: usize = 3 * 688_204;

    #[test]
    fn a_200_mib_cgroup_gives_its_share_and_says_where_from() {
        let c = buffer_budget(None, &limit(200 * MIB), LEAST);
        assert_eq!(c.value as u64, 200 * MIB * BUDGET_SHARE_PERCENT / 100);
        assert_eq!(c.value as u64, 80 * MIB);
        assert_eq!(c.from, "40% of memory.max 200 MiB in /sys/fs/cgroup/app");
        assert_eq!(c.warning, None);
    }

    #[test]
    fn no_limit_keeps_the_default() {
        let c = buffer_budget(None, &Ok(None), LEAST);
        assert_eq!(c.value, DEFAULT_MAX_BUFFER_MEMORY);
        assert_eq!(c.from, "the default; no cgroup memory limit");
        assert_eq!(c.warning, None);
    }

    #[test]
    fn a_large_limit_never_raises_the_default() {
        // 40% of 1 GiB is 409.6 MiB: more than the default, which stays.
        let c = buffer_budget(None, &limit(1 << 30), LEAST);
        assert_eq!(c.value, DEFAULT_MAX_BUFFER_MEMORY);
        assert_eq!(
            c.from,
            "the default; 40% of memory.max 1 GiB in /sys/fs/cgroup/app is more"
        );
        // Exactly at the boundary (640 MiB): 40% of the limit is the default.
        let at = 640 * MIB;
        assert_eq!(share_of(at), DEFAULT_MAX_BUFFER_MEMORY as u64);
        assert_eq!(
            buffer_budget(None, &limit(at), LEAST).value,
            DEFAULT_MAX_BUFFER_MEMORY
        );
        let below = buffer_budget(None, &limit(at - 3), LEAST);
        assert_eq!(below.value as u64, share_of(at - 3));
        assert!(below.value < DEFAULT_MAX_BUFFER_MEMORY, "{below:?}");
        assert_eq!(
            buffer_budget(None, &limit(u64::MAX), LEAST).value,
            DEFAULT_MAX_BUFFER_MEMORY
        );
    }

    #[test]
    fn an_unreadable_limit_keeps_the_default_and_says_why() {
        let c = buffer_budget(
            None,
            &Err("/sys/fs/cgroup/app/memory.max: EIO".into()),
            LEAST,
        );
        assert_eq!(c.value, DEFAULT_MAX_BUFFER_MEMORY);
        let w = c.warning.expect("a warning");
        assert!(w.contains("/sys/fs/cgroup/app/memory.max: EIO"), "{w}");
        assert!(w.contains("256 MiB"), "{w}");
    }

    #[test]
    fn a_given_budget_always_wins_and_above_the_limit_is_warned() {
        let c = buffer_budget(Some(128 << 20), &limit(200 * MIB), LEAST);
        assert_eq!(
            (c.value, c.from.as_str(), c.warning),
            (128 << 20, "--max-buffer-memory", None)
        );
        // Exactly the limit: not above it.
        assert_eq!(
            buffer_budget(Some(200 << 20), &limit(200 * MIB), LEAST).warning,
            None
        );
        let c = buffer_budget(Some((200 << 20) + 1), &limit(200 * MIB), LEAST);
        assert_eq!(c.value, (200 << 20) + 1);
        let w = c.warning.expect("a warning");
        assert!(
            w.starts_with(
                "--max-buffer-memory 200.0 MiB is above memory.max 200 MiB in /sys/fs/cgroup/app"
            ),
            "{w}"
        );
        assert!(w.contains("the default there is 80 MiB"), "{w}");
        let c = buffer_budget(Some(256 << 20), &Ok(None), LEAST);
        assert_eq!(c.warning, None);
        let c = buffer_budget(Some(256 << 20), &Err("why".into()), LEAST);
        assert_eq!(c.warning, None, "nothing to compare with");
    }

    #[test]
    fn a_limit_too_small_for_the_reactors_gives_their_least_with_a_warning() {
        // 40% of 4 MiB is 1.6 MiB, under the 1.97 MiB two reactors need.
        let c = buffer_budget(None, &limit(4 * MIB), LEAST);
        assert_eq!(c.value, LEAST);
        assert!(
            c.from.starts_with("the least the reactors need"),
            "{}",
            c.from
        );
        assert!(c.warning.expect("a warning").contains("raise the limit"));
        // Exactly the least: taken as it is.
        let limit_at_least = (LEAST as u64 * 100).div_ceil(BUDGET_SHARE_PERCENT);
        let c = buffer_budget(None, &limit(limit_at_least), LEAST);
        assert_eq!((c.value, c.warning), (LEAST, None));
    }

    #[test]
    fn reactors_are_the_quota_rounded_down_within_the_affinity_mask() {
        let from = "the affinity mask";
        let c = reactors(4, from, &quota(250_000, 100_000));
        assert_eq!(c.value, 2);
        assert_eq!(
            c.from,
            "--threads auto: 4 CPUs in the affinity mask; cpu.max 2.5 CPUs in /sys/fs/cgroup/app, rounded down"
        );
        // The mask is smaller than the quota.
        assert_eq!(reactors(2, from, &quota(400_000, 100_000)).value, 2);
        // Exactly whole, and just under.
        assert_eq!(reactors(8, from, &quota(300_000, 100_000)).value, 3);
        assert_eq!(reactors(8, from, &quota(299_999, 100_000)).value, 2);
        // Under one CPU: one reactor.
        let c = reactors(8, from, &quota(50_000, 100_000));
        assert_eq!(c.value, 1);
        assert!(
            c.from
                .ends_with("0.5 CPUs in /sys/fs/cgroup/app, rounded down to at least 1"),
            "{}",
            c.from
        );
    }

    #[test]
    fn reactors_without_a_quota_are_the_cpus_and_an_unreadable_quota_is_warned() {
        let c = reactors(6, "the affinity mask", &Ok(None));
        assert_eq!(c.value, 6);
        assert_eq!(
            c.from,
            "--threads auto: 6 CPUs in the affinity mask; no CPU quota"
        );
        let c = reactors(6, "the affinity mask", &Err("cpu.max: EIO".into()));
        assert_eq!(c.value, 6);
        assert!(c.warning.unwrap().contains("cpu.max: EIO"));
        assert_eq!(reactors(0, "x", &Ok(None)).value, 1);
        let c = reactors(1, "the affinity mask", &quota(100_000, 100_000));
        assert_eq!(
            c.from,
            "--threads auto: 1 CPU in the affinity mask; cpu.max 1 CPU in /sys/fs/cgroup/app, rounded down"
        );
    }

    #[test]
    fn cpu_lists_as_the_kernel_prints_them() {
        assert_eq!(count_cpu_list("0-1\n"), Some(2));
        assert_eq!(count_cpu_list("\t0-3,8,10-11"), Some(7));
        assert_eq!(count_cpu_list("5"), Some(1));
        assert_eq!(count_cpu_list(""), None);
        assert_eq!(count_cpu_list("3-1"), None);
        assert_eq!(count_cpu_list("a-b"), None);
    }

    #[test]
    fn sizes_for_people() {
        assert_eq!(size(200 * MIB), "200 MiB");
        assert_eq!(size(2 << 30), "2 GiB");
        assert_eq!(size(3 * MIB / 2), "1.5 MiB");
        assert_eq!(size(512), "512 bytes");
        assert_eq!(size(0), "0 bytes");
    }
}
