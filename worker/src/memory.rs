//! How much memory a unit may use: the least of every limit the worker runs under when
//! it starts (what the machine has available, a cgroup v2 or v1 memory limit, the
//! address-space and data-segment rlimits), shared between its slots, with room left
//! for everything else. Work that scales with a unit's size (the points of a scan
//! tile) is cut to fit, and work that cannot fit is reported as out of memory instead
//! of aborting the process.

use std::path::Path;

/// One limit on the worker's memory and what it still allows, in bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct Headroom {
    /// Where it comes from (`MemAvailable`, `cgroup v2 memory.max`, `RLIMIT_AS`, ...).
    pub source: String,
    /// Bytes the worker may still take under it.
    pub bytes: u64,
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `MemAvailable` from /proc/meminfo.
fn mem_available() -> Option<Headroom> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(Headroom {
        source: "MemAvailable".into(),
        bytes: kib * 1024,
    })
}

/// What a cgroup v2 still allows: the least over this cgroup and its ancestors of
/// `memory.max - memory.current` (a Slurm job's or a pod's limit sits on an ancestor).
fn cgroup_v2(dir: &Path) -> Option<Headroom> {
    let mut best: Option<Headroom> = None;
    let mut d = Some(dir);
    while let Some(here) = d {
        if let (Some(max), Some(cur)) = (
            read_u64(&here.join("memory.max")),
            read_u64(&here.join("memory.current")),
        ) {
            let h = max.saturating_sub(cur);
            if best.as_ref().is_none_or(|b| h < b.bytes) {
                best = Some(Headroom {
                    source: format!("cgroup v2 {}/memory.max", here.display()),
                    bytes: h,
                });
            }
        }
        d = here
            .parent()
            .filter(|p| p.join("memory.max").exists() || p.join("cgroup.procs").exists());
    }
    best
}

/// What a cgroup v1 memory controller still allows (`memory.limit_in_bytes -
/// memory.usage_in_bytes`, with the hierarchy's own view of inherited limits in
/// `memory.stat`'s `hierarchical_memory_limit`).
fn cgroup_v1(dir: &Path) -> Option<Headroom> {
    let usage = read_u64(&dir.join("memory.usage_in_bytes"))?;
    let own = read_u64(&dir.join("memory.limit_in_bytes"));
    let hier = std::fs::read_to_string(dir.join("memory.stat"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("hierarchical_memory_limit "))
                .and_then(|v| v.trim().parse::<u64>().ok())
        });
    let limit = own.into_iter().chain(hier).min()?;
    // "No limit" is a page-rounded i64::MAX.
    (limit < 1 << 60).then(|| Headroom {
        source: format!("cgroup v1 {}/memory.limit_in_bytes", dir.display()),
        bytes: limit.saturating_sub(usage),
    })
}

/// A field of /proc/self/status in bytes (`VmSize`, `VmData`).
fn status_bytes(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// What an rlimit still allows beyond what the process already uses under it.
fn rlimit(resource: libc::__rlimit_resource_t, name: &str, used: &str) -> Option<Headroom> {
    // SAFETY: getrlimit(2) into a zeroed struct.
    let mut r: libc::rlimit = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrlimit(resource, &mut r) } != 0 || r.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    Some(Headroom {
        source: name.into(),
        bytes: (r.rlim_cur as u64).saturating_sub(status_bytes(used).unwrap_or(0)),
    })
}

/// Every limit the worker runs under, as the host reports them now.
pub fn headrooms() -> Vec<Headroom> {
    let mut v: Vec<Headroom> = Vec::new();
    v.extend(mem_available());
    v.extend(crate::cgroup::v2_dir().and_then(|d| cgroup_v2(&d)));
    v.extend(crate::cgroup::v1_dir("memory").and_then(|d| cgroup_v1(&d)));
    v.extend(rlimit(libc::RLIMIT_AS, "RLIMIT_AS", "VmSize:"));
    v.extend(rlimit(libc::RLIMIT_DATA, "RLIMIT_DATA", "VmData:"));
    v
}

/// Working memory of one unit under `limits`: half of the least headroom, split between
/// the slots, at least 64 MiB (4 GiB assumed when nothing is known).
pub fn unit_budget(limits: &[Headroom], slots: u32) -> u64 {
    let avail = limits.iter().map(|h| h.bytes).min().unwrap_or(4 << 30);
    (avail / 2 / u64::from(slots.max(1))).max(64 << 20)
}

/// Default working memory of one unit, from the limits in force now.
pub fn default_unit_budget(slots: u32) -> u64 {
    let limits = headrooms();
    if let Some(least) = limits.iter().min_by_key(|h| h.bytes) {
        tracing::info!(
            limit = %least.source,
            headroom_bytes = least.bytes,
            "unit memory sized from the tightest limit"
        );
    }
    unit_budget(&limits, slots)
}

/// Keeps freed tensor buffers in the process instead of handing them back to the
/// kernel. candle allocates every intermediate tensor anew; with glibc's defaults, large
/// ones are mmap'd and unmapped (or the heap top trimmed) each time, and every reuse
/// page-faults and zeroes fresh pages: a third of a transformer scan's time went to
/// `clear_page` (perf, `benches/models.rs`). Buffers up to 32 MiB (the most glibc
/// allows: it refuses a larger threshold and keeps its sliding default) now come from
/// the heap, and the heap is never trimmed: a GPT-2 training step frees more than a
/// GiB at its end, so any threshold an `int` can hold had the next step grow the heap
/// again, page by page (13 % of its time in page faults, perf). A process that must
/// give memory back calls `malloc_trim` itself (the coordinator after assembling a
/// scan).
///
/// And from one heap: a thread other than the main one allocates from an arena of
/// 64 MiB heaps, which glibc unmaps whenever one empties, whatever the trim threshold.
/// A training step's tensors outgrow one such heap, so every step mapped fresh heaps
/// and unmapped them again: page faults, zeroing and TLB shootdowns were 47 % of a
/// CNN's training time (perf), and a single arena made the step 19 % faster. Called at
/// the start of the process, before its threads allocate, and by every worker.
pub fn keep_freed_buffers() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only adjusts the allocator's parameters, under its own lock.
    unsafe {
        // -1: no trimming at all (mallopt(3)).
        for (what, value) in [
            (libc::M_MMAP_THRESHOLD, 32 << 20),
            (libc::M_TRIM_THRESHOLD, -1),
            (libc::M_ARENA_MAX, 1),
        ] {
            if libc::mallopt(what, value) != 1 {
                tracing::debug!(what, value, "glibc refused a malloc parameter");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tightest_limit_sizes_the_units() {
        let h = |s: &str, gib: u64| Headroom {
            source: s.into(),
            bytes: gib << 30,
        };
        let limits = [h("MemAvailable", 20), h("RLIMIT_AS", 3), h("cgroup v1", 8)];
        assert_eq!(unit_budget(&limits, 3), (3u64 << 30) / 2 / 3);
        assert_eq!(unit_budget(&[], 1), 2 << 30);
        assert_eq!(unit_budget(&[h("cgroup v2", 0)], 1), 64 << 20);
    }

    #[test]
    fn cgroup_files_are_read_as_the_kernel_writes_them() {
        let d = tempfile::tempdir().unwrap();
        let v1 = d.path().join("v1");
        std::fs::create_dir_all(&v1).unwrap();
        std::fs::write(v1.join("memory.usage_in_bytes"), "1073741824\n").unwrap();
        std::fs::write(v1.join("memory.limit_in_bytes"), "9223372036854771712\n").unwrap();
        std::fs::write(
            v1.join("memory.stat"),
            "cache 0\nhierarchical_memory_limit 3221225472\n",
        )
        .unwrap();
        assert_eq!(cgroup_v1(&v1).unwrap().bytes, 2 << 30);
        std::fs::write(
            v1.join("memory.stat"),
            "hierarchical_memory_limit 9223372036854771712\n",
        )
        .unwrap();
        assert_eq!(cgroup_v1(&v1), None, "no limit");
        let v2 = d.path().join("a/b");
        std::fs::create_dir_all(&v2).unwrap();
        for (dir, max, cur) in [
            (d.path().join("a"), "2147483648", "1073741824"),
            (v2.clone(), "max", "5"),
        ] {
            std::fs::write(dir.join("memory.max"), format!("{max}\n")).unwrap();
            std::fs::write(dir.join("memory.current"), format!("{cur}\n")).unwrap();
        }
        // The child has no limit of its own ("max"); its parent's counts.
        assert_eq!(cgroup_v2(&v2).unwrap().bytes, 1 << 30);
    }
}

/// A unit's failure, and whether it would fail again anywhere.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitError {
    /// What went wrong.
    pub message: String,
    /// Retrying elsewhere would not help (e.g. the unit cannot fit in memory).
    pub permanent: bool,
}

impl UnitError {
    /// An out-of-memory failure: reported once, not retried.
    pub fn out_of_memory(message: String) -> Self {
        UnitError {
            message: format!("out of memory: {message}"),
            permanent: true,
        }
    }
}

impl From<String> for UnitError {
    fn from(message: String) -> Self {
        UnitError {
            message,
            permanent: false,
        }
    }
}

impl From<&str> for UnitError {
    fn from(message: &str) -> Self {
        message.to_owned().into()
    }
}

impl std::fmt::Display for UnitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}
