//! Starting and stopping a trial's processes so that none outlives its trial.
//!
//! The program runs under a supervisor (a forked child of the worker, see
//! [`super::supervise`]) that leads a process group of its own and is a child subreaper
//! (see [`super::contain`]): whatever the program starts, even a daemon that
//! double-forks into a session of its own, stays a descendant of the supervisor. When the program exits, the supervisor stops every descendant left
//! (SIGTERM, then SIGKILL after the grace period) and only then exits with the
//! program's status. Stopping a trial sends the supervisor SIGTERM, and it does the
//! same to the program and every descendant. If the worker dies, even by SIGKILL, the
//! kernel sends the supervisor SIGTERM (`PR_SET_PDEATHSIG`). Where the host offers a
//! cgroup v2 hierarchy, the supervisor also starts in a cgroup of the trial's own, and
//! the worker kills whatever is left in it at the end.

use std::io::Read;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::contain::Cgroup;
use super::spawn;

/// What a trial's streams and clock produced.
pub(super) enum Event {
    /// A line of stdout (without its newline).
    Stdout(Vec<u8>),
    /// A line of stderr (without its newline).
    Stderr(Vec<u8>),
}

/// How a process group ended.
pub(super) struct Exit {
    /// The program's exit code, if it exited.
    pub code: Option<i32>,
    /// The signal that ended the supervisor, if one did.
    pub signal: Option<i32>,
}

/// A trial's running process group.
pub(super) struct Group {
    /// The supervisor, leader of the group (its pid is the group id); `None` once
    /// reaped.
    pid: Option<i32>,
    pgid: i32,
    /// Set once SIGTERM was sent: when SIGKILL is due.
    kill_at: Option<Instant>,
    grace: Duration,
    /// The trial's cgroup, where the host offers one; emptied and removed on drop.
    cgroup: Option<Cgroup>,
    /// Readable once the supervisor has exited, where the kernel has pidfds.
    pidfd: Option<std::os::fd::OwnedFd>,
}

/// Starts `argv` under the supervisor, with piped stdout and stderr read on two threads
/// into `events` (lines longer than 64 KiB are passed on in pieces). `keep_fd` (the
/// trial folder's lock) is inherited by every process of the trial; `cgroup_name` names
/// the trial's cgroup, made where the host allows.
pub(super) fn spawn(
    argv: &[String],
    workdir: Option<&std::path::Path>,
    env: &[(String, String)],
    grace: Duration,
    keep_fd: i32,
    cgroup_name: &str,
    events: mpsc::Sender<Event>,
) -> std::io::Result<Group> {
    let cgroup = Cgroup::create(cgroup_name);
    let args: Vec<&std::ffi::OsStr> = argv.iter().map(std::ffi::OsStr::new).collect();
    let prepared = spawn::Prepared::new(&args, env, workdir)?;
    let parent = std::process::id() as i32;
    // Runs in the supervisor before it starts the program: only async-signal-safe
    // calls (prctl, getppid, fcntl; open, write, close to enter the cgroup where the
    // clone could not start the child in it).
    let pre_exec = |enter_cgroup: bool| -> std::io::Result<()> {
        // SAFETY: async-signal-safe calls with no memory shared with other threads.
        unsafe {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The worker may have died between the clone and prctl.
            if libc::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            // Orphans of the trial come to the supervisor.
            if libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The lock lasts as long as any process of the trial holds it.
            if libc::fcntl(keep_fd, libc::F_SETFD, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        match (&cgroup, enter_cgroup) {
            (Some(cg), true) => cg.enter_from_child(),
            _ => Ok(()),
        }
    };
    let grace = grace.max(Duration::from_millis(100));
    let started = spawn::spawn(
        &prepared,
        grace,
        cgroup.as_ref().map(Cgroup::dir),
        &pre_exec,
    )?;
    let pgid = started.pid;
    let (out, err) = (started.stdout, started.stderr);
    let tx = events.clone();
    std::thread::Builder::new()
        .name("trial-stdout".into())
        .spawn(move || read_lines(out, |l| tx.send(Event::Stdout(l)).is_ok()))?;
    std::thread::Builder::new()
        .name("trial-stderr".into())
        .spawn(move || read_lines(err, |l| events.send(Event::Stderr(l)).is_ok()))?;
    Ok(Group {
        pid: Some(pgid),
        pgid,
        kill_at: None,
        grace,
        cgroup,
        pidfd: started.pidfd,
    })
}

fn read_lines(mut r: impl Read, mut emit: impl FnMut(Vec<u8>) -> bool) {
    const MAX_LINE: usize = 64 * 1024;
    let mut line = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &b in &buf[..n] {
            if b == b'\n' {
                if !emit(std::mem::take(&mut line)) {
                    return;
                }
            } else {
                line.push(b);
                if line.len() >= MAX_LINE && !emit(std::mem::take(&mut line)) {
                    return;
                }
            }
        }
    }
    if !line.is_empty() {
        emit(line);
    }
}

impl Group {
    /// Asks the group to stop: SIGTERM now, SIGKILL after the grace period (see
    /// [`Group::poll`]). Repeated calls change nothing.
    pub(super) fn terminate(&mut self) {
        if self.kill_at.is_none() {
            // The supervisor passes it on to the group and to every descendant, and
            // SIGKILLs them after the grace period. SAFETY: kill(2) on our own child.
            unsafe { libc::kill(self.pgid, libc::SIGTERM) };
            // A supervisor that cannot act (stopped, say) gets a margin, then the
            // worker kills the group and the cgroup itself.
            self.kill_at = Some(Instant::now() + self.grace + Duration::from_secs(5));
        }
    }

    /// Waits up to `timeout` for the supervisor to exit (a poll on its pidfd; a short
    /// sleep where the kernel has none).
    pub(super) fn wait(&self, timeout: Duration) {
        use std::os::fd::AsRawFd;
        match &self.pidfd {
            Some(fd) => {
                let mut p = libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: poll on a descriptor we own.
                unsafe { libc::poll(&mut p, 1, timeout.as_millis() as i32) };
            }
            None => std::thread::sleep(timeout.min(Duration::from_millis(1))),
        }
    }

    /// Whether the supervisor has exited; sends the SIGKILL when it is due. Once it
    /// has exited, the rest of its group is killed and it is reaped.
    pub(super) fn poll(&mut self) -> Option<Exit> {
        if self.kill_at.is_some_and(|t| Instant::now() >= t) {
            // SAFETY: as above.
            unsafe { libc::kill(-self.pgid, libc::SIGKILL) };
            if let Some(cg) = &self.cgroup {
                cg.kill_and_remove();
            }
        }
        // SAFETY: waitid on our own child, WNOWAIT leaves it a zombie, so the group id
        // stays ours until the kill below.
        let exited = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::waitid(
                libc::P_PID,
                self.pgid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            ) == 0
                && info.si_pid() != 0
        };
        if !exited {
            return None;
        }
        // Whatever the program left behind in its group or cgroup goes with it.
        // SAFETY: as above; the zombie leader keeps the group id reserved.
        unsafe { libc::kill(-self.pgid, libc::SIGKILL) };
        if let Some(cg) = &self.cgroup {
            if cg.populated() {
                tracing::debug!("killing what the trial left in its cgroup");
            }
            cg.kill_and_remove();
        }
        let pid = self.pid.take()?;
        let mut status = 0;
        // SAFETY: reaps our own exited child.
        if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
            return None;
        }
        Some(Exit {
            code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
            signal: libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status)),
        })
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // A run that ends early (an error, a panic) takes its processes with it.
        if let Some(pid) = self.pid.take() {
            // SAFETY: kill(2) on our own group, waitpid on our own child.
            unsafe {
                libc::kill(-self.pgid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
    }
}
