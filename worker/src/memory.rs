//! How much memory a unit may use: what the machine (or its cgroup) has available when
//! the worker starts, shared between its slots, with room left for everything else.
//! Work that scales with a unit's size (the points of a scan tile) is cut to fit, and
//! work that cannot fit is reported as out of memory instead of aborting the process.

/// `MemAvailable` from /proc/meminfo, in bytes.
fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// What the cgroup (v2) still allows, when the worker runs under a memory limit (a
/// container, a Slurm job).
fn cgroup_headroom() -> Option<u64> {
    let read = |f: &str| std::fs::read_to_string(format!("/sys/fs/cgroup/{f}")).ok();
    let max: u64 = read("memory.max")?.trim().parse().ok()?;
    let current: u64 = read("memory.current")?.trim().parse().ok()?;
    Some(max.saturating_sub(current))
}

/// Default working memory of one unit: half of what is available, split between the
/// slots, at least 64 MiB.
pub fn default_unit_budget(slots: u32) -> u64 {
    let avail = match (mem_available(), cgroup_headroom()) {
        (Some(a), Some(c)) => a.min(c),
        (a, c) => a.or(c).unwrap_or(4 << 30),
    };
    (avail / 2 / u64::from(slots.max(1))).max(64 << 20)
}

/// Keeps freed tensor buffers in the process instead of handing them back to the
/// kernel. candle allocates every intermediate tensor anew; with glibc's defaults, large
/// ones are mmap'd and unmapped (or the heap top trimmed) each time, and every reuse
/// page-faults and zeroes fresh pages: a third of a transformer scan's time went to
/// `clear_page` (perf, `benches/models.rs`). Buffers up to 256 MiB now come from the
/// heap, which is trimmed only past 1 GiB free. Called once by every worker.
pub fn keep_freed_buffers() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only adjusts the allocator's parameters, under its own lock.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
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
