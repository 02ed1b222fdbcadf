//! The memory limit the process is killed at, and how close to it it is: the cgroup's limit
//! (v2 `memory.max`, v1 `memory.limit_in_bytes`) or else physical memory; the cgroup's
//! working set next to the process's RSS.
//!
//! Rules:
//! * the effective limit is the smallest of the process's cgroup and its ancestors (v2: each
//!   level's `memory.max`; v1: `memory.limit_in_bytes` and `hierarchical_memory_limit`) and of
//!   physical memory; `max` and v1's "unlimited" (2⁶³ rounded to a page) are no limit;
//! * the cgroup's **working set** is what the kernel would have to reclaim or kill for:
//!   usage (v2 `memory.current`, v1 `memory.usage_in_bytes`) less the inactive file pages
//!   (`inactive_file`, v1 `total_inactive_file` in `memory.stat`), as the kubelet computes it
//!   for evictions — page cache that can be dropped is not close to a kill;
//! * reading the usage allocates nothing (raw `open`/`read` into stack buffers): the memory
//!   watcher calls it at every check. Reading the limit allocates (paths) and is done when a
//!   line is set.
//! * every path is read under a root (`/` in production, a fixture folder in tests), and a
//!   missing or odd file means "no limit there", never a panic.

use std::path::{Path, PathBuf};

use crate::report::read_raw;

/// Where a memory limit comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LimitSource {
    /// cgroup v2 `memory.max` (of the process's cgroup or an ancestor).
    CgroupV2,
    /// cgroup v1 `memory.limit_in_bytes` (or the hierarchical limit of `memory.stat`).
    CgroupV1,
    /// Physical memory (no cgroup limit, or one above it).
    Physical,
}

impl LimitSource {
    /// `cgroup v2 memory.max`, `cgroup v1 memory.limit_in_bytes` or `physical memory`.
    pub fn as_str(&self) -> &'static str {
        match self {
            LimitSource::CgroupV2 => "cgroup v2 memory.max",
            LimitSource::CgroupV1 => "cgroup v1 memory.limit_in_bytes",
            LimitSource::Physical => "physical memory",
        }
    }
}

/// The memory limit of the process: where the kernel's OOM killer (or a container runtime's
/// eviction) acts.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemoryLimit {
    /// The limit in bytes.
    pub bytes: u64,
    /// Where it comes from.
    pub source: LimitSource,
    /// The cgroup folder whose usage is compared with it (`None` for physical memory).
    pub cgroup_dir: Option<PathBuf>,
}

/// The process's memory limit now (see the module rules); `None` only where neither a cgroup
/// limit nor physical memory can be read.
pub fn memory_limit() -> Option<MemoryLimit> {
    crate::thread::untracked(|| {
        let cgroup = cgroup_limit(Path::new("/"));
        let physical = physical_memory();
        match (cgroup, physical) {
            (Some(c), Some(p)) if c.bytes > p => Some(MemoryLimit {
                bytes: p,
                source: LimitSource::Physical,
                cgroup_dir: None,
            }),
            (Some(c), _) => Some(c),
            (None, Some(p)) => Some(MemoryLimit {
                bytes: p,
                source: LimitSource::Physical,
                cgroup_dir: None,
            }),
            (None, None) => None,
        }
    })
}

/// Physical memory in bytes (`sysconf`), `None` when unknown.
fn physical_memory() -> Option<u64> {
    // SAFETY: sysconf has no preconditions.
    let (pages, page) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    (pages > 0 && page > 0).then(|| (pages as u64).saturating_mul(page as u64))
}

/// Values at or above this are "no limit" (v1 writes 2⁶³ − 1 rounded down to a page).
const UNLIMITED: u64 = 1 << 62;

/// The cgroup limit of the current process read under `root` (`/`, or a fixture folder with
/// `proc/self/cgroup` and `sys/fs/cgroup/...`). v2 is tried first (a unified hierarchy),
/// then v1's memory controller. `None` when no level has a limit.
pub(crate) fn cgroup_limit(root: &Path) -> Option<MemoryLimit> {
    let text = std::fs::read_to_string(root.join("proc/self/cgroup")).ok()?;
    let mut v2_path = None;
    let mut v1_path = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            v2_path = Some(path.trim_start_matches('/').to_string());
        } else if controllers.split(',').any(|c| c == "memory") {
            v1_path = Some(path.trim_start_matches('/').to_string());
        }
    }
    if let Some(path) = v1_path {
        // A v1 memory controller wins over a v2 line (hybrid hierarchies mount v2 without
        // the memory controller).
        let base = root.join("sys/fs/cgroup/memory");
        if let Some(l) = v1_limit(&base, &path) {
            return Some(l);
        }
    }
    let path = v2_path?;
    for base in [
        root.join("sys/fs/cgroup"),
        root.join("sys/fs/cgroup/unified"),
    ] {
        if let Some(l) = v2_limit(&base, &path) {
            return Some(l);
        }
    }
    None
}

/// The folder of cgroup `path` under `base`, or `base` itself when the path is not visible
/// there (inside a cgroup namespace, the process's own cgroup is mounted as the root).
fn cgroup_dir(base: &Path, path: &str) -> Option<PathBuf> {
    let dir = base.join(path);
    if dir.is_dir() {
        Some(dir)
    } else if base.is_dir() {
        Some(base.to_path_buf())
    } else {
        None
    }
}

/// A number in a cgroup file (`max` and unreadable: `None`).
fn read_number(file: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    text.trim().parse().ok()
}

fn v2_limit(base: &Path, path: &str) -> Option<MemoryLimit> {
    let own = cgroup_dir(base, path)?;
    if !own.join("memory.current").exists() && !own.join("memory.max").exists() {
        return None;
    }
    // The smallest `memory.max` from the cgroup up to the mount point.
    let mut best: Option<u64> = None;
    let mut dir = own.clone();
    loop {
        if let Some(v) = read_number(&dir.join("memory.max")).filter(|&v| v < UNLIMITED) {
            best = Some(best.map_or(v, |b| b.min(v)));
        }
        if dir == base || !dir.pop() || !dir.starts_with(base) {
            break;
        }
    }
    best.map(|bytes| MemoryLimit {
        bytes,
        source: LimitSource::CgroupV2,
        cgroup_dir: Some(own),
    })
}

fn v1_limit(base: &Path, path: &str) -> Option<MemoryLimit> {
    let own = cgroup_dir(base, path)?;
    let own_limit = read_number(&own.join("memory.limit_in_bytes"));
    let hierarchical = std::fs::read_to_string(own.join("memory.stat"))
        .ok()
        .and_then(|s| stat_field(&s, "hierarchical_memory_limit"));
    let bytes = [own_limit, hierarchical]
        .into_iter()
        .flatten()
        .filter(|&v| v < UNLIMITED)
        .min()?;
    Some(MemoryLimit {
        bytes,
        source: LimitSource::CgroupV1,
        cgroup_dir: Some(own),
    })
}

/// The value of `name` in a `memory.stat` text (`name value` lines).
fn stat_field(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == name).then(|| v.trim().parse().ok())?
    })
}

/// The cgroup's working set (usage less inactive file pages), read without allocating:
/// `usage_file` and `stat_file` are NUL-terminated paths prepared when the line was set.
/// When the usage is below `exact_from`, it is returned as is (an upper bound of the working
/// set) without reading `memory.stat`.
pub(crate) fn working_set(
    usage_file: &[u8],
    stat_file: &[u8],
    v1: bool,
    exact_from: u64,
) -> Option<u64> {
    let mut buf = [0u8; 64];
    let usage: u64 = read_raw(usage_file, &mut buf)?.trim().parse().ok()?;
    if usage < exact_from {
        return Some(usage);
    }
    let mut stat = [0u8; 8192];
    let inactive = read_raw(stat_file, &mut stat)
        .and_then(|s| {
            stat_field(
                s,
                if v1 {
                    "total_inactive_file"
                } else {
                    "inactive_file"
                },
            )
        })
        .unwrap_or(0);
    Some(usage.saturating_sub(inactive))
}

/// The NUL-terminated paths of the usage and stat files of `limit`'s cgroup (`None` for
/// physical memory), and whether it is v1.
pub(crate) fn usage_files(limit: &MemoryLimit) -> Option<(Vec<u8>, Vec<u8>, bool)> {
    let dir = limit.cgroup_dir.as_ref()?;
    let v1 = limit.source == LimitSource::CgroupV1;
    let nul = |name: &str| {
        let mut p = dir.join(name).into_os_string().into_encoded_bytes();
        p.push(0);
        p
    };
    let usage = nul(if v1 {
        "memory.usage_in_bytes"
    } else {
        "memory.current"
    });
    Some((usage, nul("memory.stat"), v1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/cgroup")
            .join(name)
    }

    #[test]
    fn v2_limit_is_the_smallest_up_the_tree() {
        // The process's cgroup says `max`; its parent limits to 512 MiB, the grandparent to 1 GiB.
        let l = cgroup_limit(&fixture("v2")).expect("a v2 limit");
        assert_eq!(l.bytes, 512 << 20);
        assert_eq!(l.source, LimitSource::CgroupV2);
        let dir = l.cgroup_dir.unwrap();
        assert!(
            dir.ends_with("sys/fs/cgroup/kubepods/pod1/worker"),
            "{dir:?}"
        );
        let (usage, stat, v1) = usage_files(&MemoryLimit {
            bytes: l.bytes,
            source: l.source,
            cgroup_dir: Some(dir),
        })
        .unwrap();
        assert!(!v1);
        // memory.current 300 MiB, inactive_file 100 MiB.
        assert_eq!(working_set(&usage, &stat, v1, 0), Some(200 << 20));
        // Below `exact_from`, the usage itself.
        assert_eq!(working_set(&usage, &stat, v1, 1 << 30), Some(300 << 20));
    }

    #[test]
    fn v1_limit_and_hierarchical_limit() {
        let l = cgroup_limit(&fixture("v1")).expect("a v1 limit");
        // limit_in_bytes 2 GiB, hierarchical_memory_limit 1 GiB.
        assert_eq!(l.bytes, 1 << 30);
        assert_eq!(l.source, LimitSource::CgroupV1);
        let (usage, stat, v1) = usage_files(&l).unwrap();
        assert!(v1);
        // usage 700 MiB, total_inactive_file 200 MiB (inactive_file, 1 MiB, is not the total).
        assert_eq!(working_set(&usage, &stat, v1, 0), Some(500 << 20));
    }

    #[test]
    fn unlimited_cgroups_have_no_limit() {
        // v1 "unlimited" (2^63 rounded to a page) and v2 `max` at every level.
        assert_eq!(cgroup_limit(&fixture("v1-unlimited")), None);
        assert_eq!(cgroup_limit(&fixture("v2-max")), None);
        assert_eq!(cgroup_limit(&fixture("missing")), None);
    }

    #[test]
    fn the_real_limit_is_at_most_physical_memory() {
        let l = memory_limit().expect("Linux has physical memory");
        assert!(l.bytes <= physical_memory().unwrap());
    }
}
