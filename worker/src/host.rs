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

static SET_RAYON_THREADS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Decides candle's thread count once, as candle does, and writes it where candle reads
/// it: `RAYON_NUM_THREADS`. Without that variable candle works the count out again at
/// every matrix product, reading and parsing `/proc/cpuinfo` (7 % of a CNN's training
/// time, perf; a `cpuid` per processor in a VM). A count the user set is left alone.
///
/// # Safety
/// Sets an environment variable: call it before the process starts any other thread.
pub unsafe fn fix_thread_count() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = candle_core::utils::get_num_threads();
        // SAFETY: the caller guarantees no other thread runs.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", n.to_string()) };
        SET_RAYON_THREADS.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Whether the variable is one this process set for itself (see [`fix_thread_count`]):
/// the programs of command trials get the environment the worker was given, not it.
pub fn set_by_this_process(name: &[u8]) -> bool {
    name == b"RAYON_NUM_THREADS" && SET_RAYON_THREADS.load(std::sync::atomic::Ordering::Relaxed)
}
