//! Keeping every process a trial starts inside the trial.
//!
//! Two layers, as the host allows:
//!
//! - **Subreaper** (always): the trial's supervisor is made a child subreaper
//!   (`PR_SET_CHILD_SUBREAPER`), so a process that double-forks
//!   and calls `setsid` is adopted by the supervisor instead of init, and stays one of
//!   its descendants. When the program ends, or the trial is stopped, the supervisor
//!   stops every descendant (SIGTERM, SIGKILL after the grace period) before it exits.
//!   Only a process that kills the supervisor itself can get away from this layer.
//! - **cgroup v2** (where a cgroup v2 hierarchy is mounted writable, as for root on most
//!   hosts and in privileged containers): the supervisor starts in a cgroup of its own,
//!   under the worker's, before it starts the program; every process of the trial is
//!   born into it and cannot leave it without privileges. When the trial ends the
//!   worker kills whatever is left in it (`cgroup.kill`); the empty cgroup serves a
//!   later trial of the same worker process, which removes its cgroups when it stops
//!   (a worker that was killed leaves them to the next worker on the host).

use std::ffi::CStr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A trial's cgroup, if the host offers one. Cgroups are pooled: one that its trial
/// left empty serves the next, because making and removing a cgroup (the kernel sets
/// up and tears down every controller's state for it) cost a trivial trial ~0.1 ms of
/// its 1.5 ms span, and checking that it is empty costs a third of that.
pub(super) struct Cgroup {
    dir: PathBuf,
    /// Found empty since its trial ended (by [`Cgroup::empty_out`]); until then it is
    /// checked before it goes back to the pool.
    empty: bool,
}

/// Where containment by cgroup is tried: `auto` (if the host offers it) or `off`.
const SETTING: &str = "RIDGELINE_TRIAL_CGROUP";

/// The names of this process's trial cgroups start with this, then its pid and `-`.
const PREFIX: &str = "ridgeline-";

/// Empty cgroups of trials that ended, for the next trials of this process.
static FREE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Numbers the cgroups this process makes.
static MADE: AtomicU32 = AtomicU32::new(0);

impl Cgroup {
    /// An empty cgroup for one attempt, or `None` where the host does not let the
    /// worker make one (no cgroup v2, read-only, no permission) or
    /// `RIDGELINE_TRIAL_CGROUP=off`.
    pub(super) fn take() -> Option<Cgroup> {
        if std::env::var(SETTING).is_ok_and(|v| v == "off") {
            return None;
        }
        let pooled = FREE.lock().unwrap_or_else(|e| e.into_inner()).pop();
        // One removed meanwhile (by hand, say) is let go: a new one is made.
        if let Some(dir) = pooled.filter(|d| d.exists()) {
            return Some(Cgroup { dir, empty: false });
        }
        // The worker's own cgroup does not change: found once, not per trial (two
        // /proc files read and parsed). Dead workers' leftovers go the first time.
        static OWN: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
        let own = OWN
            .get_or_init(|| {
                let own = crate::cgroup::v2_dir()?;
                remove_dead_workers_cgroups(&own);
                Some(own)
            })
            .as_ref()?;
        let n = MADE.fetch_add(1, Ordering::Relaxed);
        let dir = own.join(format!("{PREFIX}{}-{n}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                // Left by a dead process of the same pid: empty it first.
                kill_all(&dir);
            }
            Err(_) => return None,
        }
        Some(Cgroup { dir, empty: false })
    }

    /// Its folder.
    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Kills everything left in the cgroup (once its trial has ended); whether
    /// anything was left.
    pub(super) fn empty_out(&mut self) -> bool {
        // The usual end of a trial: nothing left, one read.
        if !populated(&self.dir) {
            self.empty = true;
            return false;
        }
        kill_all(&self.dir);
        self.empty = !populated(&self.dir);
        true
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        if !self.empty {
            self.empty_out();
        }
        if self.empty {
            let dir = std::mem::take(&mut self.dir);
            FREE.lock().unwrap_or_else(|e| e.into_inner()).push(dir);
        } else {
            // A process that would not die (in an uninterruptible sleep, say): the
            // cgroup is not reused; removed if it has emptied by now, else left to a
            // later worker on the host once this one is gone.
            let _ = std::fs::remove_dir(&self.dir);
        }
    }
}

/// Removes this process's pooled cgroups: called when a worker stops. A cgroup still
/// in use returns to the pool when its trial ends, and a later call removes it.
pub fn remove_free_cgroups() {
    let free = std::mem::take(&mut *FREE.lock().unwrap_or_else(|e| e.into_inner()));
    for dir in free {
        let _ = std::fs::remove_dir(dir);
    }
}

/// Removes the empty trial cgroups of workers that are gone (killed before they could
/// remove their own), from `own`, the folder this worker's are made in.
fn remove_dead_workers_cgroups(own: &Path) {
    let Ok(entries) = std::fs::read_dir(own) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|n| n.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: kill with signal 0 only asks whether the process exists.
        let gone = unsafe { libc::kill(pid, 0) } != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            // A populated cgroup is not removed (rmdir refuses it): its processes may
            // be a trial of a worker that is still ending.
            let _ = std::fs::remove_dir(e.path());
        }
    }
}

/// Moves the calling process into the cgroup whose `cgroup.procs` is `procs`. Runs in
/// the supervisor before it starts the program, where the clone could not start it in
/// the cgroup: only async-signal-safe calls, no allocation. Returns the errno.
///
/// # Safety
/// Async-signal-safe itself; fit for the child of a fork.
pub(super) unsafe fn enter(procs: &CStr) -> Result<(), i32> {
    let errno = || {
        std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    };
    // SAFETY: open/write/close on a path made before the clone; getpid.
    unsafe {
        let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(errno());
        }
        let mut buf = [0u8; 24];
        let n = itoa(libc::getpid() as u64, &mut buf);
        let w = libc::write(fd, buf.as_ptr().cast(), n);
        let e = errno();
        libc::close(fd);
        if w < 0 {
            return Err(e);
        }
    }
    Ok(())
}

/// Whether any process is in the cgroup (`cgroup.events`, the cheapest file that
/// says; exited processes not yet reaped do not count).
fn populated(dir: &Path) -> bool {
    match std::fs::read_to_string(dir.join("cgroup.events")) {
        Ok(s) => !s.lines().any(|l| l == "populated 0"),
        // Removed by someone else: nothing can be in it.
        Err(_) => false,
    }
}

/// Kills every process in a cgroup (`cgroup.kill` where the kernel has it, 5.14+; else
/// one by one until none is left) and waits up to a few seconds for them to go.
fn kill_all(dir: &Path) {
    let killed = std::fs::write(dir.join("cgroup.kill"), "1").is_ok();
    let until = Instant::now() + Duration::from_secs(5);
    while populated(dir) && Instant::now() < until {
        if !killed {
            let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                // SAFETY: kill(2) on a process of the trial's own cgroup.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Writes `n` in decimal into `buf`; returns the length. No allocation.
fn itoa(mut n: u64, buf: &mut [u8; 24]) -> usize {
    let mut tmp = [0u8; 24];
    let mut i = 0;
    loop {
        tmp[i] = b'0' + (n % 10) as u8;
        i += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for j in 0..i {
        buf[j] = tmp[i - 1 - j];
    }
    i
}

#[cfg(test)]
mod tests {
    #[test]
    fn itoa_writes_decimal() {
        let mut b = [0u8; 24];
        for n in [0u64, 7, 10, 4_194_304, u64::MAX] {
            let k = super::itoa(n, &mut b);
            assert_eq!(std::str::from_utf8(&b[..k]).unwrap(), n.to_string());
        }
    }
}
