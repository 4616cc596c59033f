//! Starting and stopping a trial's processes so that none outlives its trial.
//!
//! The program runs under a small `sh` supervisor that leads a process group of its
//! own (the program and whatever it starts inherit the group). Stopping a trial sends
//! SIGTERM to the whole group and SIGKILL after a grace period. If the worker dies,
//! even by SIGKILL, the kernel sends the supervisor SIGTERM (`PR_SET_PDEATHSIG`), and
//! the supervisor does the same to the group: no orphan keeps running, or keeps a GPU.
//! When the program exits, the worker kills what is left of the group before it reaps
//! the supervisor, while the group's id cannot yet have been reused.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The supervisor. On SIGTERM (from the worker, or the kernel when the worker died) it
/// passes SIGTERM to the group, arms a SIGKILL for the group after the grace period,
/// and waits for the program. `$1` is the grace in seconds; the program follows.
const SUPERVISOR: &str = r#"grace=$1; shift
trap 'trap "" TERM; kill -TERM 0 2>/dev/null; (sleep "$grace"; kill -KILL 0) >/dev/null 2>&1 </dev/null & wait "$child"; exit 143' TERM
"$@" &
child=$!
wait "$child"
"#;

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
    child: Child,
    pgid: i32,
    /// Set once SIGTERM was sent: when SIGKILL is due.
    kill_at: Option<Instant>,
    grace: Duration,
}

/// Starts `argv` under the supervisor, with piped stdout and stderr read on two threads
/// into `events` (lines longer than 64 KiB are passed on in pieces).
pub(super) fn spawn(
    argv: &[String],
    workdir: Option<&std::path::Path>,
    env: &[(String, String)],
    grace: Duration,
    events: mpsc::Sender<Event>,
) -> std::io::Result<Group> {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(SUPERVISOR)
        .arg("ridgeline-trial")
        .arg(format!("{}", grace.as_secs_f64().max(0.1)))
        .args(argv)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some(w) = workdir {
        cmd.current_dir(w);
    }
    let parent = std::process::id() as i32;
    // SAFETY: the closure runs in the child between fork and exec and only calls
    // async-signal-safe functions (prctl, getppid, kill).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The worker may have died between fork and prctl.
            if libc::getppid() != parent {
                return Err(std::io::Error::other("the worker exited"));
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    let pgid = child.id() as i32;
    let out = child.stdout.take().expect("piped");
    let err = child.stderr.take().expect("piped");
    let tx = events.clone();
    std::thread::Builder::new()
        .name("trial-stdout".into())
        .spawn(move || read_lines(out, |l| tx.send(Event::Stdout(l)).is_ok()))?;
    std::thread::Builder::new()
        .name("trial-stderr".into())
        .spawn(move || read_lines(err, |l| events.send(Event::Stderr(l)).is_ok()))?;
    Ok(Group {
        child,
        pgid,
        kill_at: None,
        grace,
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
            // SAFETY: kill(2) on our own child's process group.
            unsafe { libc::kill(-self.pgid, libc::SIGTERM) };
            self.kill_at = Some(Instant::now() + self.grace);
        }
    }

    /// Whether the supervisor has exited; sends the SIGKILL when it is due. Once it
    /// has exited, the rest of its group is killed and it is reaped.
    pub(super) fn poll(&mut self) -> Option<Exit> {
        if self.kill_at.is_some_and(|t| Instant::now() >= t) {
            // SAFETY: as above.
            unsafe { libc::kill(-self.pgid, libc::SIGKILL) };
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
        // Whatever the program left behind in its group goes with it.
        // SAFETY: as above; the zombie leader keeps the group id reserved.
        unsafe { libc::kill(-self.pgid, libc::SIGKILL) };
        let status = self.child.wait().ok()?;
        use std::os::unix::process::ExitStatusExt;
        Some(Exit {
            code: status.code(),
            signal: status.signal(),
        })
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // A run that ends early (an error, a panic) takes its processes with it.
        if self.child.try_wait().ok().flatten().is_none() {
            // SAFETY: as above.
            unsafe { libc::kill(-self.pgid, libc::SIGKILL) };
            let _ = self.child.wait();
        }
    }
}
