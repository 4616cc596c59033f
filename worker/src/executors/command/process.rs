//! Starting and stopping a trial's processes so that none outlives its trial.
//!
//! The program runs under a small `sh` supervisor that leads a process group of its
//! own and is a child subreaper (see [`super::contain`]): whatever the program starts,
//! even a daemon that double-forks into a session of its own, stays a descendant of the
//! supervisor. When the program exits, the supervisor stops every descendant left
//! (SIGTERM, then SIGKILL after the grace period) and only then exits with the
//! program's status. Stopping a trial sends the supervisor SIGTERM, and it does the
//! same to the program and every descendant. If the worker dies, even by SIGKILL, the
//! kernel sends the supervisor SIGTERM (`PR_SET_PDEATHSIG`). Where the host offers a
//! cgroup v2 hierarchy, the supervisor also starts in a cgroup of the trial's own, and
//! the worker kills whatever is left in it at the end.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::contain::Cgroup;

/// The supervisor. `$1` is the grace in seconds; the program follows. `live` lists its
/// children that are not zombies: as a subreaper it adopts every orphan of the trial,
/// so when none is left, nothing of the trial runs. `stop` sends SIGTERM to the group
/// and to every descendant (once each, also to orphans adopted while it waits: a
/// daemon whose parent the first SIGTERM ended), waits up to the grace period, then
/// SIGKILLs until none is left (a process that keeps forking is outrun: each round
/// kills what the last adopted).
/// The supervisor never writes: its stderr redirections come before the files they
/// guard, and `stop` points its own output at /dev/null first, because once the worker
/// is dead a write to the trial's pipes would kill the supervisor with SIGPIPE and
/// leave the trial's processes to init.
const SUPERVISOR: &str = r#"grace=$1; shift
live() {
  kids=; read -r kids 2>/dev/null < /proc/$$/task/$$/children
  alive=
  for p in $kids; do
    s=; read -r s 2>/dev/null < /proc/$p/stat || continue
    case "${s##*) }" in Z*) ;; *) alive="$alive $p" ;; esac
  done
  [ -n "$alive" ]
}
stop() {
  trap "" TERM
  exec >/dev/null 2>&1
  kill -TERM 0 2>/dev/null
  termed=" "
  n=0; limit=$(( ${grace%.*} * 20 + 2 ))
  while live && [ $n -lt $limit ]; do
    for p in $alive; do
      case "$termed" in *" $p "*) ;; *) kill -TERM $p 2>/dev/null; termed="$termed$p " ;; esac
    done
    sleep 0.05; n=$((n+1))
  done
  n=0
  while live && [ $n -lt 500 ]; do kill -KILL $alive 2>/dev/null; sleep 0.01; n=$((n+1)); done
}
trap 'stop; exit 143' TERM
"$@" &
child=$!
wait "$child"
st=$?
if live; then stop; fi
exit $st
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
    /// The trial's cgroup, where the host offers one; emptied and removed on drop.
    cgroup: Option<Cgroup>,
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
    let cg = cgroup.as_ref().map(|c| c as *const Cgroup as usize);
    // SAFETY: the closure runs in the child between fork and exec and only calls
    // async-signal-safe functions (prctl, getppid, fcntl, open, write, close).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The worker may have died between fork and prctl.
            if libc::getppid() != parent {
                return Err(std::io::Error::other("the worker exited"));
            }
            // Kept across exec: orphans of the trial come to the supervisor.
            if libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The lock lasts as long as any process of the trial holds it.
            if libc::fcntl(keep_fd, libc::F_SETFD, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(cg) = cg {
                // The parent keeps the Cgroup alive until spawn returns.
                (*(cg as *const Cgroup)).enter_from_child()?;
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
        cgroup,
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
