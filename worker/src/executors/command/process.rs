//! Starting and stopping a trial's processes so that none outlives its trial.
//!
//! The program runs under a supervisor (a forked child of the worker, see
//! [`super::supervise`]) that leads a process group of its own and is a child subreaper
//! (see [`super::contain`]): whatever the program starts, even a daemon that
//! double-forks into a session of its own, stays a descendant of the supervisor. When
//! the program exits, the supervisor stops every descendant left (SIGTERM, then SIGKILL
//! after the grace period) and only then exits with the program's status. Stopping a trial sends the supervisor SIGTERM, and it does the
//! same to the program and every descendant. If the worker dies, even by SIGKILL, the
//! kernel sends the supervisor SIGTERM (`PR_SET_PDEATHSIG`). Where the host offers a
//! cgroup v2 hierarchy, the supervisor also starts in a cgroup of the trial's own, and
//! the worker kills whatever is left in it at the end.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::contain::Cgroup;
use super::spawn;

/// A line of a trial's output.
pub(super) enum Event {
    /// A line of stdout (without its newline).
    Stdout(Vec<u8>),
    /// A line of stderr (without its newline).
    Stderr(Vec<u8>),
}

/// How a process group ended.
pub(super) struct Exit {
    /// Why the supervisor could not start the program, if it could not.
    pub start_error: Option<std::io::Error>,
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
    pidfd: Option<OwnedFd>,
    /// The program's stdout and stderr, read without blocking on the worker's thread.
    streams: [Stream; 2],
    /// Where the supervisor says why it could not start the program.
    start: File,
}

/// One of the program's output streams, until its end of file.
struct Stream {
    file: Option<File>,
    /// The part of a line read so far.
    line: Vec<u8>,
    event: fn(Vec<u8>) -> Event,
}

/// Lines longer than this are passed on in pieces.
const MAX_LINE: usize = 64 * 1024;

impl Stream {
    fn new(file: File, event: fn(Vec<u8>) -> Event) -> std::io::Result<Stream> {
        // SAFETY: fcntl on a descriptor we own.
        unsafe {
            let fd = file.as_raw_fd();
            let flags = libc::fcntl(fd, libc::F_GETFL);
            if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(Stream {
            file: Some(file),
            line: Vec::new(),
            event,
        })
    }

    /// Reads what is there and passes on every complete line; at the end of file, the
    /// last unterminated one too, and the stream is closed.
    fn read(&mut self, emit: &mut dyn FnMut(Event)) {
        let Some(f) = &mut self.file else { return };
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = match f.read(&mut buf) {
                Ok(0) => {
                    self.file = None;
                    if !self.line.is_empty() {
                        emit((self.event)(std::mem::take(&mut self.line)));
                    }
                    return;
                }
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // All there was for now.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                // Anything else ends the stream, as its end of file would.
                Err(_) => {
                    self.file = None;
                    return;
                }
            };
            for &b in &buf[..n] {
                if b == b'\n' {
                    emit((self.event)(std::mem::take(&mut self.line)));
                } else {
                    self.line.push(b);
                    if self.line.len() >= MAX_LINE {
                        emit((self.event)(std::mem::take(&mut self.line)));
                    }
                }
            }
        }
    }
}

/// Starts `argv` under the supervisor, with piped stdout and stderr (read by
/// [`Group::pump`]). `keep_fd` (the trial folder's lock) is inherited by every process of
/// the trial; the trial gets a cgroup of its own where the host allows.
pub(super) fn spawn(
    argv: &[String],
    workdir: Option<&std::path::Path>,
    env: &[(String, String)],
    grace: Duration,
    keep_fd: i32,
) -> std::io::Result<Group> {
    let cgroup = Cgroup::take();
    let args: Vec<&std::ffi::OsStr> = argv.iter().map(std::ffi::OsStr::new).collect();
    let prepared = spawn::Prepared::new(&args, env, workdir)?;
    let steps = spawn::Steps {
        parent: std::process::id() as i32,
        keep_fd: Some(keep_fd),
        cgroup: cgroup
            .as_ref()
            .and_then(|cg| std::ffi::CString::new(cg.dir().as_os_str().as_encoded_bytes()).ok()),
    };
    let grace = grace.max(Duration::from_millis(100));
    let started = spawn::spawn(&prepared, grace, &steps, super::launcher::launch)?;
    let pgid = started.pid;
    Ok(Group {
        pid: Some(pgid),
        pgid,
        kill_at: None,
        grace,
        cgroup,
        pidfd: started.pidfd,
        streams: [
            Stream::new(started.stdout, Event::Stdout)?,
            Stream::new(started.stderr, Event::Stderr)?,
        ],
        start: started.start,
    })
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

    /// Whether stdout or stderr is still open.
    pub(super) fn streams_open(&self) -> bool {
        self.streams.iter().any(|s| s.file.is_some())
    }

    /// Waits up to `timeout` for output or for the supervisor's exit, and passes on
    /// every complete line there is. Without pidfds (kernels before 5.3), once both
    /// streams are closed it waits a millisecond at most.
    pub(super) fn pump(&mut self, timeout: Duration, emit: &mut dyn FnMut(Event)) {
        let exit = self.pidfd.as_ref().filter(|_| self.pid.is_some());
        let mut fds: Vec<libc::pollfd> = self
            .streams
            .iter()
            .filter_map(|s| s.file.as_ref().map(AsRawFd::as_raw_fd))
            .chain(exit.map(AsRawFd::as_raw_fd))
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let mut ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        if exit.is_none() && !self.streams_open() {
            ms = ms.min(1);
        }
        // SAFETY: poll on descriptors we own, for at most `ms`.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        for s in &mut self.streams {
            s.read(emit);
        }
    }

    /// Whether the supervisor has exited; sends the SIGKILL when it is due. Once it
    /// has exited, the rest of its group is killed and it is reaped.
    pub(super) fn poll(&mut self) -> Option<Exit> {
        if self.kill_at.is_some_and(|t| Instant::now() >= t) {
            // SAFETY: as above.
            unsafe { libc::kill(-self.pgid, libc::SIGKILL) };
            if let Some(cg) = &mut self.cgroup {
                cg.empty_out();
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
        if let Some(cg) = &mut self.cgroup
            && cg.empty_out()
        {
            tracing::debug!("killed what the trial left in its cgroup");
        }
        let pid = self.pid.take()?;
        let mut status = 0;
        // SAFETY: reaps our own exited child.
        if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
            return None;
        }
        Some(Exit {
            start_error: spawn::start_error(&mut self.start),
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
