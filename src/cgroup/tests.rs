//! `Limits::read` on fixture trees: cgroup v1, v2 and hybrid mounts as proc(5) prints
//! them, `max` and v1's "unlimited", a tighter parent, a missing controller, files that
//! cannot be read or parsed, and hierarchies that are not visible.

use std::path::Path;

use super::*;

const MIB: u64 = 1 << 20;

/// cgroup v2 alone at /sys/fs/cgroup (systemd's unified mode).
const V2_MOUNT: &str = "\
22 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
30 22 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

/// cgroup v1, as this project's build machine mounts it (every controller on a
/// hierarchy of its own, a v2 mount beside them with none of them).
const V1_MOUNTS: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

/// systemd's hybrid mode: v1 controllers (cpu and cpuacct on one hierarchy), the v2
/// hierarchy at /sys/fs/cgroup/unified.
const HYBRID_MOUNTS: &str = "\
25 22 0:23 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:5 - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:6 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:25 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:7 - cgroup cgroup rw,xattr,name=systemd
31 25 0:29 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,memory
33 25 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,cpu,cpuacct
";

const HYBRID_CGROUP: &str = "\
12:memory:/system.slice/tabecho.service
4:cpu,cpuacct:/system.slice/tabecho.service
1:name=systemd:/system.slice/tabecho.service
0::/system.slice/tabecho.service
";

/// A fixture root in a temporary directory.
struct Root(tempfile::TempDir);

impl Root {
    fn new() -> Root {
        Root(tempfile::tempdir().unwrap())
    }

    /// Writes `text` at `path` (absolute, as the process sees it) under the root.
    fn file(&self, path: &str, text: &str) -> &Root {
        let on_disk = self.0.path().join(path.trim_start_matches('/'));
        std::fs::create_dir_all(on_disk.parent().unwrap()).unwrap();
        std::fs::write(on_disk, text).unwrap();
        self
    }

    /// Makes the directory `path`.
    fn dir(&self, path: &str) -> &Root {
        std::fs::create_dir_all(self.0.path().join(path.trim_start_matches('/'))).unwrap();
        self
    }

    fn read(&self, self_cgroup: &str, mountinfo: &str) -> Limits {
        Limits::read(self.0.path(), self_cgroup, mountinfo)
    }
}

#[track_caller]
fn memory(reading: &Reading<MemoryLimit>) -> (u64, std::path::PathBuf) {
    let limit = reading.as_ref().unwrap().as_ref().expect("a memory limit");
    (limit.bytes, limit.file.clone())
}

#[track_caller]
fn error(reading: &Result<Option<impl std::fmt::Debug>, String>) -> &str {
    match reading {
        Err(e) => e,
        Ok(found) => panic!("an error expected, got {found:?}"),
    }
}

const SERVICE: &str = "/sys/fs/cgroup/system.slice/tabecho.service";

#[test]
fn v2_memory_max_of_the_process_cgroup() {
    let root = Root::new();
    root.file(&format!("{SERVICE}/memory.max"), "209715200\n")
        .file(&format!("{SERVICE}/memory.high"), "max\n")
        .file("/sys/fs/cgroup/system.slice/memory.max", "max\n");
    let limits = root.read("0::/system.slice/tabecho.service\n", V2_MOUNT);
    let (bytes, file) = memory(&limits.memory);
    assert_eq!(bytes, 200 * MIB);
    assert_eq!(file, Path::new(&format!("{SERVICE}/memory.max")));
    let limit = limits.memory.unwrap().unwrap();
    assert_eq!(limit.name(), "memory.max");
    assert_eq!(limit.dir(), Path::new(SERVICE));
}

#[test]
fn v2_max_everywhere_is_no_limit() {
    let root = Root::new();
    root.file(&format!("{SERVICE}/memory.max"), "max\n")
        .file(&format!("{SERVICE}/memory.high"), "max\n")
        .file(&format!("{SERVICE}/cpu.max"), "max 100000\n")
        .file("/sys/fs/cgroup/system.slice/memory.max", "max\n");
    let limits = root.read("0::/system.slice/tabecho.service\n", V2_MOUNT);
    assert_eq!(limits.memory, Ok(None));
    assert_eq!(limits.cpu, Ok(None));
}

#[test]
fn v2_a_tighter_parent_binds_the_child() {
    let root = Root::new();
    root.file(&format!("{SERVICE}/memory.max"), "314572800\n")
        .file("/sys/fs/cgroup/system.slice/memory.max", "209715200\n")
        .file("/sys/fs/cgroup/system.slice/memory.high", "max\n");
    let limits = root.read("0::/system.slice/tabecho.service\n", V2_MOUNT);
    let (bytes, file) = memory(&limits.memory);
    assert_eq!(bytes, 200 * MIB);
    assert_eq!(file, Path::new("/sys/fs/cgroup/system.slice/memory.max"));
}

#[test]
fn v2_memory_high_below_memory_max_is_the_limit() {
    let root = Root::new();
    root.file(&format!("{SERVICE}/memory.max"), "209715200\n")
        .file(&format!("{SERVICE}/memory.high"), "157286400\n");
    let (bytes, file) = memory(
        &root
            .read("0::/system.slice/tabecho.service\n", V2_MOUNT)
            .memory,
    );
    assert_eq!(bytes, 150 * MIB);
    assert_eq!(file, Path::new(&format!("{SERVICE}/memory.high")));
}

#[test]
fn v2_equal_limits_name_the_process_cgroup_and_memory_max() {
    let root = Root::new();
    root.file(&format!("{SERVICE}/memory.max"), "209715200\n")
        .file(&format!("{SERVICE}/memory.high"), "209715200\n")
        .file("/sys/fs/cgroup/system.slice/memory.max", "209715200\n");
    let (_, file) = memory(
        &root
            .read("0::/system.slice/tabecho.service\n", V2_MOUNT)
            .memory,
    );
    assert_eq!(file, Path::new(&format!("{SERVICE}/memory.max")));
}

#[test]
fn v2_without_the_memory_controller_is_no_limit() {
    // The controller is not enabled for the subtree: its files are not there, only the
    // cgroup's own (and the root cgroup never has memory.max).
    let root = Root::new();
    root.file(&format!("{SERVICE}/cgroup.controllers"), "cpu pids\n")
        .file("/sys/fs/cgroup/cgroup.controllers", "cpu pids\n");
    let limits = root.read("0::/system.slice/tabecho.service\n", V2_MOUNT);
    assert_eq!(limits.memory, Ok(None));
    assert_eq!(limits.cpu, Ok(None));
}

#[test]
fn v2_in_the_root_cgroup_is_no_limit() {
    let root = Root::new();
    root.file("/sys/fs/cgroup/cgroup.controllers", "cpu memory\n");
    let limits = root.read("0::/\n", V2_MOUNT);
    assert_eq!(limits.memory, Ok(None));
    assert_eq!(limits.cpu, Ok(None));
}

#[test]
fn v2_cpu_max_smallest_share_over_the_ancestors() {
    let root = Root::new();
    root.file(&format!("{SERVICE}/cpu.max"), "150000 100000\n")
        .file("/sys/fs/cgroup/system.slice/cpu.max", "50000 20000\n");
    let limits = root.read("0::/system.slice/tabecho.service\n", V2_MOUNT);
    let quota = limits.cpu.unwrap().unwrap();
    assert_eq!((quota.quota_us, quota.period_us), (150_000, 100_000));
    assert_eq!(quota.cpus(), 1.5);
    assert_eq!(quota.whole_cpus(), 1);
    assert_eq!(quota.name(), "cpu.max");
    // The parent at 1.0 (another period) is tighter.
    root.file("/sys/fs/cgroup/system.slice/cpu.max", "20000 20000\n");
    let quota = root
        .read("0::/system.slice/tabecho.service\n", V2_MOUNT)
        .cpu
        .unwrap()
        .unwrap();
    assert_eq!((quota.quota_us, quota.period_us), (20_000, 20_000));
    assert_eq!(quota.dir(), Path::new("/sys/fs/cgroup/system.slice"));
}

#[test]
fn v1_memory_limit_in_bytes_and_its_unlimited_value() {
    let root = Root::new();
    let leaf = "/sys/fs/cgroup/memory/process_api/26fa";
    root.file(&format!("{leaf}/memory.limit_in_bytes"), "209715200\n")
        .file(
            "/sys/fs/cgroup/memory/process_api/memory.limit_in_bytes",
            "9223372036854771712\n",
        )
        .file(
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "9223372036854771712\n",
        );
    let self_cgroup = "4:memory:/process_api/26fa\n1:cpu:/\n0::/\n";
    let limits = root.read(self_cgroup, V1_MOUNTS);
    let (bytes, file) = memory(&limits.memory);
    assert_eq!(bytes, 200 * MIB);
    assert_eq!(file, Path::new(&format!("{leaf}/memory.limit_in_bytes")));
    // Unlimited everywhere (with 64 KiB pages the value differs; still no limit).
    root.file(
        &format!("{leaf}/memory.limit_in_bytes"),
        "9223372036854710272\n",
    );
    assert_eq!(root.read(self_cgroup, V1_MOUNTS).memory, Ok(None));
}

#[test]
fn v1_a_tighter_parent_binds_the_child() {
    let root = Root::new();
    root.file(
        "/sys/fs/cgroup/memory/a/b/memory.limit_in_bytes",
        "9223372036854771712\n",
    )
    .file(
        "/sys/fs/cgroup/memory/a/memory.limit_in_bytes",
        "104857600\n",
    )
    .file(
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
        "9223372036854771712\n",
    );
    let (bytes, file) = memory(&root.read("4:memory:/a/b\n", V1_MOUNTS).memory);
    assert_eq!(bytes, 100 * MIB);
    assert_eq!(
        file,
        Path::new("/sys/fs/cgroup/memory/a/memory.limit_in_bytes")
    );
}

#[test]
fn v1_cfs_quota_over_period_and_minus_one() {
    let root = Root::new();
    root.file("/sys/fs/cgroup/cpu/job/cpu.cfs_quota_us", "250000\n")
        .file("/sys/fs/cgroup/cpu/job/cpu.cfs_period_us", "100000\n")
        .file("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "-1\n")
        .file("/sys/fs/cgroup/cpu/cpu.cfs_period_us", "100000\n");
    let quota = root.read("1:cpu:/job\n", V1_MOUNTS).cpu.unwrap().unwrap();
    assert_eq!(quota.cpus(), 2.5);
    assert_eq!(
        quota.file,
        Path::new("/sys/fs/cgroup/cpu/job/cpu.cfs_quota_us")
    );
    root.file("/sys/fs/cgroup/cpu/job/cpu.cfs_quota_us", "-1\n");
    assert_eq!(root.read("1:cpu:/job\n", V1_MOUNTS).cpu, Ok(None));
}

#[test]
fn hybrid_reads_v1_controllers_on_their_hierarchies() {
    let root = Root::new();
    root.file(
        &format!(
            "/sys/fs/cgroup/memory{}",
            "/system.slice/tabecho.service/memory.limit_in_bytes"
        ),
        "209715200\n",
    )
    .file(
        "/sys/fs/cgroup/cpu,cpuacct/system.slice/tabecho.service/cpu.cfs_quota_us",
        "100000\n",
    )
    .file(
        "/sys/fs/cgroup/cpu,cpuacct/system.slice/tabecho.service/cpu.cfs_period_us",
        "100000\n",
    )
    // The v2 tree has no memory files: the controller is bound to v1.
    .dir("/sys/fs/cgroup/unified/system.slice/tabecho.service");
    let limits = root.read(HYBRID_CGROUP, HYBRID_MOUNTS);
    let (bytes, file) = memory(&limits.memory);
    assert_eq!(bytes, 200 * MIB);
    assert_eq!(
        file,
        Path::new("/sys/fs/cgroup/memory/system.slice/tabecho.service/memory.limit_in_bytes")
    );
    let quota = limits.cpu.unwrap().unwrap();
    assert_eq!(quota.cpus(), 1.0);
    assert_eq!(
        quota.dir(),
        Path::new("/sys/fs/cgroup/cpu,cpuacct/system.slice/tabecho.service")
    );
}

#[test]
fn hybrid_without_a_v1_memory_hierarchy_reads_v2() {
    let root = Root::new();
    root.file(
        "/sys/fs/cgroup/unified/system.slice/tabecho.service/memory.max",
        "104857600\n",
    );
    let self_cgroup =
        "4:cpu,cpuacct:/system.slice/tabecho.service\n0::/system.slice/tabecho.service\n";
    let mounts: String = HYBRID_MOUNTS
        .lines()
        .filter(|l| !l.contains("rw,memory"))
        .map(|l| format!("{l}\n"))
        .collect();
    let (bytes, _) = memory(&root.read(self_cgroup, &mounts).memory);
    assert_eq!(bytes, 100 * MIB);
}

#[test]
fn no_cgroup_at_all_is_no_limit() {
    let root = Root::new();
    let limits = root.read("", "22 1 253:1 / / rw - ext4 /dev/vda1 rw\n");
    assert_eq!(limits.memory, Ok(None));
    assert_eq!(limits.cpu, Ok(None));
    // v1 with other controllers only, and no v2 line: no memory controller.
    let limits = root.read("1:cpu:/\n", V1_MOUNTS);
    assert_eq!(limits.memory, Ok(None));
}

#[test]
fn a_limit_that_cannot_be_read_is_an_error_naming_the_file() {
    let root = Root::new();
    root.file(&format!("{SERVICE}/memory.max"), "209715200\n")
        // A directory where the file should be: read(2) fails (EISDIR), even for root.
        .dir("/sys/fs/cgroup/system.slice/memory.max");
    let limits = root.read("0::/system.slice/tabecho.service\n", V2_MOUNT);
    let e = error(&limits.memory);
    assert!(
        e.starts_with("/sys/fs/cgroup/system.slice/memory.max: "),
        "{e}"
    );
    assert_eq!(limits.cpu, Ok(None), "the other controller is still read");
}

#[test]
fn a_limit_that_is_not_a_number_is_an_error_naming_the_file() {
    let root = Root::new();
    root.file(&format!("{SERVICE}/memory.max"), "lots\n")
        .file(&format!("{SERVICE}/cpu.max"), "150000\n");
    let limits = root.read("0::/system.slice/tabecho.service\n", V2_MOUNT);
    assert_eq!(
        error(&limits.memory),
        format!("{SERVICE}/memory.max: \"lots\" is not a number of bytes nor max")
    );
    assert!(
        error(&limits.cpu).starts_with(&format!("{SERVICE}/cpu.max: \"150000\"")),
        "{:?}",
        limits.cpu
    );
    // v1: "max" is not v1's word for no limit.
    let root = Root::new();
    root.file("/sys/fs/cgroup/memory/memory.limit_in_bytes", "max\n");
    assert!(error(&root.read("4:memory:/\n", V1_MOUNTS).memory).contains("not a number"));
    // A zero period would divide by zero.
    root.file("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "50000\n")
        .file("/sys/fs/cgroup/cpu/cpu.cfs_period_us", "0\n");
    assert!(error(&root.read("1:cpu:/\n", V1_MOUNTS).cpu).contains("cpu.cfs_period_us"));
}

#[test]
fn a_hierarchy_that_is_not_mounted_is_an_error() {
    let root = Root::new();
    let limits = root.read("4:memory:/a\n", V2_MOUNT);
    assert_eq!(
        error(&limits.memory),
        "the cgroup v1 memory hierarchy holds this process (cgroup /a) but is not mounted here"
    );
    let limits = root.read("0::/a\n", "22 1 253:1 / / rw - ext4 /dev/vda1 rw\n");
    assert!(error(&limits.memory).contains("not mounted here"));
}

#[test]
fn a_cgroup_directory_that_is_not_there_is_an_error() {
    let root = Root::new();
    root.dir("/sys/fs/cgroup");
    let limits = root.read("0::/gone\n", V2_MOUNT);
    assert_eq!(
        error(&limits.memory),
        "/sys/fs/cgroup/gone: no such cgroup directory"
    );
}

#[test]
fn a_container_sees_its_own_cgroup_as_the_mount_root() {
    // Docker without a cgroup namespace: the mount's root is the container's cgroup, the
    // path in /proc/self/cgroup the full one; the host's levels above are not visible.
    let mounts = "\
700 690 0:30 /docker/abc /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup rw,memory
";
    let root = Root::new();
    root.file("/sys/fs/cgroup/memory/memory.limit_in_bytes", "209715200\n");
    let (bytes, file) = memory(&root.read("9:memory:/docker/abc\n", mounts).memory);
    assert_eq!(bytes, 200 * MIB);
    assert_eq!(
        file,
        Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes")
    );
    // A process outside the mounted part (or above its namespace's root) is not guessed at.
    let e = root.read("9:memory:/docker/other\n", mounts).memory;
    assert!(error(&e).contains("outside what is mounted"), "{e:?}");
    let e = root.read("9:memory:/docker/abc/../x\n", mounts).memory;
    assert!(error(&e).contains("outside what is mounted"), "{e:?}");
    let e = root.read("0::/../sibling\n", V2_MOUNT).memory;
    assert!(error(&e).contains("outside what is mounted"), "{e:?}");
}

#[test]
fn mount_points_with_escaped_spaces() {
    let mounts = "30 22 0:26 / /srv/my\\040cgroups rw - cgroup2 cgroup2 rw\n";
    let root = Root::new();
    root.file("/srv/my cgroups/job/memory.max", "104857600\n");
    let (bytes, file) = memory(&root.read("0::/job\n", mounts).memory);
    assert_eq!(bytes, 100 * MIB);
    assert_eq!(file, Path::new("/srv/my cgroups/job/memory.max"));
    assert_eq!(unescape("a\\134b\\011c\\0"), "a\\b\tc\\0");
}

#[test]
fn a_malformed_proc_self_cgroup_is_an_error() {
    let limits = Root::new().read("garbage\n", V2_MOUNT);
    assert!(error(&limits.memory).contains("unexpected line"));
    assert!(error(&limits.cpu).contains("unexpected line"));
}

#[test]
fn the_hierarchy_a_check_makes_its_cgroup_in() {
    let root = Root::new();
    assert_eq!(
        hierarchy_of(root.0.path(), V1_MOUNTS, "memory"),
        Some(("/sys/fs/cgroup/memory".into(), false))
    );
    root.file(
        "/sys/fs/cgroup/cgroup.controllers",
        "cpuset cpu io memory pids\n",
    );
    assert_eq!(
        hierarchy_of(root.0.path(), V2_MOUNT, "memory"),
        Some(("/sys/fs/cgroup".into(), true))
    );
    // The v2 mount beside v1 hierarchies, without the memory controller.
    root.file("/sys/fs/cgroup/unified/cgroup.controllers", "hugetlb\n");
    let v2_only: String = V1_MOUNTS
        .lines()
        .filter(|l| l.contains("cgroup2"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(hierarchy_of(root.0.path(), &v2_only, "memory"), None);
}
