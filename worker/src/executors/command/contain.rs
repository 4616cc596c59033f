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
//!   worker kills whatever is left in it (`cgroup.kill`) and removes it.

use std::ffi::CStr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The trial's cgroup, if the host offers one.
pub(super) struct Cgroup {
    dir: PathBuf,
}

/// Where containment by cgroup is tried: `auto` (if the host offers it) or `off`.
const SETTING: &str = "RIDGELINE_TRIAL_CGROUP";

impl Cgroup {
    /// A fresh cgroup for one attempt, or `None` where the host does not let the worker
    /// make one (no cgroup v2, read-only, no permission) or `RIDGELINE_TRIAL_CGROUP=off`.
    pub(super) fn create(name: &str) -> Option<Cgroup> {
        if std::env::var(SETTING).is_ok_and(|v| v == "off") {
            return None;
        }
        // The worker's own cgroup does not change: found once, not per trial (two
        // /proc files read and parsed).
        static OWN: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
        let dir = OWN.get_or_init(crate::cgroup::v2_dir).as_ref()?.join(name);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                // Left by a worker that died: empty it first.
                kill_all(&dir);
            }
            Err(_) => return None,
        }
        Some(Cgroup { dir })
    }

    /// Its folder.
    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Kills everything left in the cgroup and removes it; whether anything was left.
    pub(super) fn kill_and_remove(&self) -> bool {
        // An empty cgroup is removed at once (rmdir fails on a populated one): the
        // usual end of a trial costs one system call.
        if std::fs::remove_dir(&self.dir).is_ok()
            || std::fs::metadata(&self.dir).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
        {
            return false;
        }
        kill_all(&self.dir);
        let _ = std::fs::remove_dir(&self.dir);
        true
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        self.kill_and_remove();
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

fn populated(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("cgroup.procs")).is_ok_and(|s| !s.trim().is_empty())
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
