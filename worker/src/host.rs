//! This machine as the worker names it.

/// The worker's default name: its host name.
pub fn default_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "localhost".into())
}

static SLOTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Counts a worker's slots among those of this process (`ridgeline run` runs several
/// workers in one process; each adds its own once, at start).
pub fn add_slots(slots: u32) {
    SLOTS.fetch_add(slots, std::sync::atomic::Ordering::Relaxed);
}

/// CPU threads a unit's own process should use so that the slots of this process's
/// workers together fill the machine's cores without oversubscribing them.
pub fn threads_per_slot() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let slots = SLOTS.load(std::sync::atomic::Ordering::Relaxed).max(1) as usize;
    (cores / slots).max(1)
}
