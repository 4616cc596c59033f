//! Starting the supervisor process: `clone3` straight into the trial's cgroup.
//!
//! Moving a running process into a cgroup (a write to `cgroup.procs`) takes the
//! kernel's cgroup-wide migration lock and waits out an RCU grace period: 3 to 15 ms
//! per trial here (strace), most of a trivial trial's span. `clone3` with
//! `CLONE_INTO_CGROUP` (Linux 5.7) creates the process in the cgroup instead, with no
//! migration. `std::process::Command` cannot do that, so the few steps between fork
//! and exec are done here: only async-signal-safe system calls in the child, on
//! buffers prepared before the clone. Where `clone3` or the flag is refused (older
//! kernels, seccomp filters), the child is forked without it and enters its cgroup by
//! the write, as before.

use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `struct clone_args` up to `cgroup` (`CLONE_ARGS_SIZE_VER2`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// What the child needs, made before the clone (the child may not allocate).
pub(super) struct Prepared {
    /// Where the program may be, in the order `execvp` would try them: `argv[0]` if it
    /// names a path, else `argv[0]` in each folder of the trial's `PATH`.
    candidates: Vec<CString>,
    argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    /// The strings `envp_ptrs` points to.
    envp: Vec<CString>,
    envp_ptrs: Vec<*const libc::c_char>,
    workdir: Option<CString>,
}

fn cstring(b: &[u8]) -> std::io::Result<CString> {
    CString::new(b).map_err(|_| std::io::Error::other("a NUL byte in an argument or variable"))
}

impl Prepared {
    /// The program `argv[0]`, looked up as `execvp` does in the `PATH` the program will
    /// see, with `argv`, the worker's environment with `env` added over it, in `workdir`.
    pub(super) fn new(
        argv: &[&OsStr],
        env: &[(String, String)],
        workdir: Option<&Path>,
    ) -> std::io::Result<Prepared> {
        let argv: Vec<CString> = argv
            .iter()
            .map(|a| cstring(a.as_bytes()))
            .collect::<Result<_, _>>()?;
        let mut vars: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = std::env::vars_os()
            .filter(|(k, _)| !crate::host::set_by_this_process(k.as_bytes()))
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect();
        for (k, v) in env {
            vars.insert(k.as_bytes().to_vec(), v.as_bytes().to_vec());
        }
        let name = argv.first().map(|a| a.as_bytes()).unwrap_or_default();
        let mut candidates = candidates(name, vars.get(b"PATH".as_slice()).map(Vec::as_slice));
        // Only the files that are there are tried: a failed execve costs tens of
        // microseconds (the kernel copies every argument and variable before it opens
        // the file), and PATHs of ten folders are common. With none, the first is
        // tried, for execvp's "not found".
        let there = |c: &Vec<u8>| {
            let c = Path::new(OsStr::from_bytes(c));
            let full = workdir.map_or_else(|| c.to_path_buf(), |w| w.join(c));
            std::fs::metadata(full).is_ok_and(|m| m.is_file())
        };
        if candidates.iter().any(there) {
            candidates.retain(there);
        } else {
            candidates.truncate(1);
        }
        let candidates = candidates
            .iter()
            .map(|c| cstring(c))
            .collect::<Result<_, _>>()?;
        let envp: Vec<CString> = vars
            .into_iter()
            .map(|(mut k, v)| {
                k.push(b'=');
                k.extend_from_slice(&v);
                cstring(&k)
            })
            .collect::<Result<_, _>>()?;
        let workdir = workdir
            .map(|w| cstring(w.as_os_str().as_bytes()))
            .transpose()?;
        Ok(Prepared::from_parts(candidates, argv, envp, workdir))
    }

    /// From what [`Prepared::parts`] gave (the launcher's side of its socket).
    pub(super) fn from_parts(
        candidates: Vec<CString>,
        argv: Vec<CString>,
        envp: Vec<CString>,
        workdir: Option<CString>,
    ) -> Prepared {
        let ptrs = |v: &[CString]| {
            v.iter()
                .map(|c| c.as_ptr())
                .chain([std::ptr::null()])
                .collect::<Vec<_>>()
        };
        Prepared {
            candidates,
            argv_ptrs: ptrs(&argv),
            envp_ptrs: ptrs(&envp),
            argv,
            envp,
            workdir,
        }
    }

    /// The candidates, the arguments, the environment and the folder.
    pub(super) fn parts(&self) -> [&[CString]; 4] {
        [
            &self.candidates,
            &self.argv,
            &self.envp,
            self.workdir.as_slice(),
        ]
    }
}

impl Prepared {
    /// `argv[0]`, for messages.
    pub(super) fn name(&self) -> &std::ffi::CStr {
        self.argv.first().map_or(c"", |a| a.as_c_str())
    }

    /// Executes the program: each candidate in turn, as `execvp` does. Returns only if
    /// none could be executed, with the error that says most (`EACCES` over `ENOENT`).
    ///
    /// # Safety
    /// Only in a child about to become the program: async-signal-safe, no allocation.
    pub(super) unsafe fn exec(&self) -> i32 {
        let mut denied = false;
        for c in &self.candidates {
            // SAFETY: NUL-terminated strings and pointer arrays made before the clone.
            unsafe { libc::execve(c.as_ptr(), self.argv_ptrs.as_ptr(), self.envp_ptrs.as_ptr()) };
            match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EACCES) => denied = true,
                // Not in this folder of PATH: the next, as execvp goes on.
                Some(libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV) => {}
                e => return e.unwrap_or(libc::EIO),
            }
        }
        if denied { libc::EACCES } else { libc::ENOENT }
    }
}

/// Where `execvp` would look for `name`: itself if it holds a `/`, else in each folder
/// of `path` (an empty entry is the working folder), or of the default path.
fn candidates(name: &[u8], path: Option<&[u8]>) -> Vec<Vec<u8>> {
    if name.contains(&b'/') || name.is_empty() {
        return vec![name.to_vec()];
    }
    path.unwrap_or(b"/usr/local/bin:/usr/bin:/bin")
        .split(|b| *b == b':')
        .map(|dir| {
            let mut c = if dir.is_empty() {
                b".".to_vec()
            } else {
                dir.to_vec()
            };
            c.push(b'/');
            c.extend_from_slice(name);
            c
        })
        .collect()
}

/// What the child does before it supervises, as data (the launcher receives it over
/// its socket): each step is an async-signal-safe system call.
pub(super) struct Steps {
    /// The worker: the child asks for SIGTERM when it dies (`PR_SET_PDEATHSIG`) and
    /// ends at once if its parent is already another process (it died in between).
    pub parent: i32,
    /// A descriptor every process of the trial inherits (the trial folder's lock).
    pub keep_fd: Option<i32>,
    /// The trial's cgroup folder, where the host gives one.
    pub cgroup: Option<CString>,
}

impl Steps {
    /// `cgroup.procs` of the cgroup, for a child the clone could not start in it.
    fn procs(&self) -> Option<CString> {
        let dir = self.cgroup.as_ref()?;
        let mut path = dir.as_bytes().to_vec();
        path.extend_from_slice(b"/cgroup.procs");
        CString::new(path).ok()
    }
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both were just opened.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A started supervisor: its pid, a descriptor that polls readable once it has exited
/// (where the kernel has pidfds, 5.3), the read ends of its stdout and stderr, and the
/// pipe that says whether it started the program (see [`start_error`]).
pub(super) struct Started {
    pub pid: i32,
    pub pidfd: Option<OwnedFd>,
    pub start: std::fs::File,
    pub stdout: std::fs::File,
    pub stderr: std::fs::File,
}

/// The child's ends of its pipes: stdout, stderr, and the pipe where it says why it
/// could not start the program (closed once the program runs).
pub(super) struct Ends {
    pub stdout: i32,
    pub stderr: i32,
    pub fail: i32,
}

/// Who clones a supervisor for the worker: its pid, or `None` to have the worker clone
/// it itself (see [`super::launcher::launch`]).
pub(super) type Launch =
    fn(&Prepared, std::time::Duration, &Ends, &Steps) -> Option<std::io::Result<i32>>;

/// Starts the supervisor of `p` (see [`super::supervise`]; `grace`: how long the
/// program has after SIGTERM before SIGKILL) in a process group of its own, with stdin
/// from /dev/null and stdout and stderr piped, after the `steps`. `launch` clones it
/// where it can, else this process does. Returns once the supervisor is cloned,
/// without waiting for it: its failure to start the program (a failed step among
/// them) comes through [`start_error`]. Waiting here would put the worker to sleep
/// while the program loads, and on a busy CPU a woken thread can wait a millisecond
/// for it.
pub(super) fn spawn(
    p: &Prepared,
    grace: std::time::Duration,
    steps: &Steps,
    launch: Launch,
) -> std::io::Result<Started> {
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    // The child writes its errno here if it cannot start the program, and closes it
    // once the program runs.
    let (fail_r, fail_w) = pipe()?;
    let ends = Ends {
        stdout: out_w.as_raw_fd(),
        stderr: err_w.as_raw_fd(),
        fail: fail_w.as_raw_fd(),
    };
    let pid = match launch(p, grace, &ends, steps) {
        Some(pid) => pid?,
        None => clone_supervisor(p, grace, &ends, steps, 0)?,
    };
    // SAFETY: pidfd_open on our own child, not reaped yet (so its pid is not reused);
    // the descriptor is ours.
    let pidfd = unsafe {
        let fd = libc::syscall(libc::SYS_pidfd_open, pid, 0) as i32;
        (fd >= 0).then(|| OwnedFd::from_raw_fd(fd))
    };
    drop((out_w, err_w, fail_w));
    Ok(Started {
        pid,
        pidfd,
        stdout: std::fs::File::from(out_r),
        stderr: std::fs::File::from(err_r),
        start: std::fs::File::from(fail_r),
    })
}

/// Clones the supervisor: straight into the trial's cgroup where the kernel allows,
/// else forked and told to enter it. `flags`: added to the clone's (the launcher's
/// `CLONE_PARENT`, which makes the supervisor the worker's child). Returns its pid.
pub(super) fn clone_supervisor(
    p: &Prepared,
    grace: std::time::Duration,
    ends: &Ends,
    steps: &Steps,
    flags: u64,
) -> std::io::Result<i32> {
    let devnull = std::fs::File::open("/dev/null")?;
    let cgroup_fd = match &steps.cgroup {
        Some(dir) => Some(std::fs::File::open(Path::new(OsStr::from_bytes(
            dir.as_bytes(),
        )))?),
        None => None,
    };
    let procs = steps.procs();
    let mut into = cgroup_fd.is_some();
    // What the child runs; `enter`: whether it must move itself into the cgroup.
    let in_child = |enter: bool| -> ! {
        // SAFETY: called only in the child of the clone below; see `child`.
        unsafe {
            child(
                p,
                [devnull.as_raw_fd(), ends.stdout, ends.stderr],
                ends.fail,
                grace,
                steps,
                procs.as_deref().filter(|_| enter),
            )
        }
    };
    loop {
        let mut args = CloneArgs {
            flags,
            // With CLONE_PARENT the child's exit signal is the caller's own (SIGCHLD,
            // the launcher was forked), and clone3 refuses another.
            exit_signal: if flags & libc::CLONE_PARENT as u64 == 0 {
                libc::SIGCHLD as u64
            } else {
                0
            },
            ..CloneArgs::default()
        };
        if let (true, Some(fd)) = (into, &cgroup_fd) {
            args.flags |= CLONE_INTO_CGROUP;
            args.cgroup = fd.as_raw_fd() as u64;
        }
        // SAFETY: without CLONE_VM this is fork(2): the child gets a copy of this
        // thread's memory and runs only async-signal-safe calls until exec or _exit.
        let pid = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &args as *const CloneArgs,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        if pid == 0 {
            in_child(cgroup_fd.is_some() && !into)
        }
        if pid > 0 {
            return Ok(pid as i32);
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            // No clone3, or no CLONE_INTO_CGROUP: fork, and enter by a write.
            Some(libc::ENOSYS | libc::EINVAL | libc::E2BIG | libc::EPERM) if into => into = false,
            Some(libc::ENOSYS) => {
                // No clone3 at all (before 5.3): clone(2) with no stack is fork(2),
                // and takes the same flags. Its arguments after the flags are all
                // null, so their order (which differs between architectures) does
                // not matter.
                // SAFETY: as above.
                let pid = unsafe {
                    libc::syscall(libc::SYS_clone, flags | libc::SIGCHLD as u64, 0, 0, 0, 0)
                };
                if pid == 0 {
                    in_child(cgroup_fd.is_some())
                }
                if pid < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                return Ok(pid as i32);
            }
            _ => return Err(e),
        }
    }
}

/// Why the supervisor could not start the program, if it could not, read from its
/// start pipe: waits until it has started it (or the supervisor has exited). The
/// supervisor exits 127 when it reports an error here; the caller reaps it.
pub(super) fn start_error(start: &mut std::fs::File) -> Option<std::io::Error> {
    use std::io::Read;
    let mut errno = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match start.read(&mut errno[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Some(e),
        }
    }
    (got == 4).then(|| std::io::Error::from_raw_os_error(i32::from_ne_bytes(errno)))
}

/// The child: standard streams, a process group of its own, SIGTERM and SIGCHLD
/// blocked, the `steps` (entering the cgroup by `enter`, its `cgroup.procs`, where the
/// clone could not start it there), then the supervisor. Never returns.
///
/// # Safety
/// Only in the child of a clone without `CLONE_VM`, before anything else runs there.
unsafe fn child(
    p: &Prepared,
    streams: [i32; 3],
    fail: i32,
    grace: std::time::Duration,
    steps: &Steps,
    enter: Option<&std::ffi::CStr>,
) -> ! {
    let fail_with = |e: i32| -> ! {
        let b = e.to_ne_bytes();
        // SAFETY: write and _exit are async-signal-safe.
        unsafe {
            libc::write(fail, b.as_ptr().cast(), 4);
            libc::_exit(127)
        }
    };
    let errno = || {
        std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    };
    // SAFETY: async-signal-safe calls on descriptors and buffers made before the clone.
    unsafe {
        for (to, &from) in streams.iter().enumerate() {
            if libc::dup2(from, to as i32) < 0 {
                fail_with(errno());
            }
        }
        if let Some(w) = &p.workdir
            && libc::chdir(w.as_ptr()) != 0
        {
            fail_with(errno());
        }
        if libc::setpgid(0, 0) != 0 {
            fail_with(errno());
        }
        // The two signals the supervisor waits for are blocked from the start, so that
        // neither ends it before it can act on them (the program gets an empty mask).
        let mut mask: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut mask);
        libc::sigaddset(&mut mask, libc::SIGTERM);
        libc::sigaddset(&mut mask, libc::SIGCHLD);
        libc::sigprocmask(libc::SIG_SETMASK, &mask, std::ptr::null_mut());
        if let Err(e) = take_steps(steps, enter) {
            fail_with(e);
        }
        match super::supervise::run(p, grace, fail) {
            Ok(code) => libc::_exit(code),
            Err(e) => fail_with(e),
        }
    }
}

/// The steps, in the child: only async-signal-safe calls (prctl, getppid, fcntl;
/// open, write, close to enter the cgroup). Returns the errno of the first that fails.
///
/// # Safety
/// As [`child`].
unsafe fn take_steps(steps: &Steps, enter: Option<&std::ffi::CStr>) -> Result<(), i32> {
    let errno = || {
        std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    };
    // SAFETY: async-signal-safe calls with no memory shared with other threads.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) != 0 {
            return Err(errno());
        }
        // The worker may have died between the clone and prctl.
        if libc::getppid() != steps.parent {
            return Err(libc::ESRCH);
        }
        // Orphans of the trial come to the supervisor.
        if libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong) != 0 {
            return Err(errno());
        }
        // The lock lasts as long as any process of the trial holds it.
        if let Some(fd) = steps.keep_fd
            && libc::fcntl(fd, libc::F_SETFD, 0) != 0
        {
            return Err(errno());
        }
        if let Some(procs) = enter {
            super::contain::enter(procs)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::time::Duration;

    /// The supervisor cloned by this process (a unit test runs threads: no launcher).
    fn here(_: &Prepared, _: Duration, _: &Ends, _: &Steps) -> Option<std::io::Result<i32>> {
        None
    }

    fn steps(keep_fd: Option<i32>) -> Steps {
        Steps {
            parent: std::process::id() as i32,
            keep_fd,
            cgroup: None,
        }
    }

    /// Runs `argv` under the supervisor: its stdout, stderr and exit status.
    fn run(argv: &[&str], env: &[(String, String)]) -> std::io::Result<(String, String, i32)> {
        let args: Vec<&OsStr> = argv.iter().map(OsStr::new).collect();
        let p = Prepared::new(&args, env, Some(Path::new("/")))?;
        let mut s = spawn(&p, Duration::from_millis(100), &steps(None), here)?;
        if let Some(e) = start_error(&mut s.start) {
            // SAFETY: our own child.
            unsafe { libc::waitpid(s.pid, std::ptr::null_mut(), 0) };
            return Err(e);
        }
        let (mut out, mut err) = (String::new(), String::new());
        let (mut o, mut e) = (s.stdout, s.stderr);
        o.read_to_string(&mut out)?;
        e.read_to_string(&mut err)?;
        let mut status = 0;
        // SAFETY: our own child.
        unsafe { libc::waitpid(s.pid, &mut status, 0) };
        Ok((out, err, libc::WEXITSTATUS(status)))
    }

    /// The program is found in PATH, gets its arguments, the added variables over the
    /// worker's and its folder, and runs in the group its supervisor leads; the
    /// supervisor exits with its status.
    #[test]
    fn the_program_runs_as_asked_under_its_supervisor() {
        let env = [("RIDGELINE_PROBE".to_owned(), "x y".to_owned())];
        let (out, _, code) = run(
            &[
                "sh",
                "-c",
                "echo \"$1|$RIDGELINE_PROBE|$(pwd)|$PATH\"; read -r _ _ _ ppid pg _ < /proc/$$/stat; [ $ppid = $pg ] && exit 3; exit 4",
                "zero",
                "one",
            ],
            &env,
        )
        .unwrap();
        let path = std::env::var("PATH").unwrap();
        assert_eq!(out.trim(), format!("one|x y|/|{path}"));
        assert_eq!(code, 3, "the supervisor leads the program's process group");
        // A signal that ends the program is reported as a shell would: 128 + n.
        let (_, _, code) = run(&["sh", "-c", "kill -USR1 $$"], &[]).unwrap();
        assert_eq!(code, 128 + libc::SIGUSR1);
    }

    /// A program that is not there, or cannot be executed, exits 127 or 126 with a
    /// line on stderr, as in a shell; a step before the supervisor starts the program
    /// that fails comes back on the start pipe.
    #[test]
    fn programs_that_cannot_run_and_failed_steps_are_told_apart() {
        let (_, err, code) = run(&["no-such-program-ridgeline"], &[]).unwrap();
        assert_eq!(code, 127);
        assert_eq!(err, "ridgeline: no-such-program-ridgeline: not found\n");
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("script");
        std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
        let (_, err, code) = run(&[script.to_str().unwrap()], &[]).unwrap();
        assert_eq!(code, 126, "{err}");
        assert!(err.ends_with("script: permission denied\n"), "{err}");
        // Found in the trial's own PATH, not the worker's.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = format!("/nonexistent:{}", dir.path().display());
        let (out, _, code) = run(&["script"], &[("PATH".into(), path)]).unwrap();
        assert_eq!((out.as_str(), code), ("hi\n", 0));

        let args: Vec<&OsStr> = vec![OsStr::new("sh")];
        let p = Prepared::new(&args, &[], None).unwrap();
        // A step that fails: the lock to keep is no descriptor.
        let mut s = spawn(&p, Duration::from_millis(100), &steps(Some(-1)), here).unwrap();
        let e = start_error(&mut s.start).unwrap();
        assert_eq!(e.raw_os_error(), Some(libc::EBADF));
        let mut status = 0;
        // SAFETY: our own child.
        unsafe { libc::waitpid(s.pid, &mut status, 0) };
        assert_eq!(libc::WEXITSTATUS(status), 127);
    }

    /// The supervisor, a fork of the worker, hands back its copy of the worker's memory
    /// (the worker's writes to it copy nothing while a trial runs) and closes the
    /// worker's descriptors (another trial's pipe ends with that trial).
    #[test]
    fn the_supervisor_keeps_none_of_the_workers_memory_or_descriptors() {
        fn anonymous_kib(pid: i32) -> u64 {
            let s = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
            let line = s.lines().find(|l| l.starts_with("Anonymous:")).unwrap();
            line.split_whitespace().nth(1).unwrap().parse().unwrap()
        }
        // 64 MiB of the "worker's" heap, touched, so that the fork shares it.
        let big = vec![1u8; 64 << 20];
        let (other_r, other_w) = pipe().unwrap();
        let args: Vec<&OsStr> = ["sleep", "60"].iter().map(OsStr::new).collect();
        let p = Prepared::new(&args, &[], None).unwrap();
        let s = spawn(&p, Duration::from_millis(100), &steps(None), here).unwrap();
        drop(other_w);
        let mut hup = libc::pollfd {
            fd: other_r.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll on one descriptor of ours.
        let ended = unsafe { libc::poll(&mut hup, 1, 5000) } == 1;
        let mine = anonymous_kib(std::process::id() as i32);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut theirs = anonymous_kib(s.pid);
        while theirs > 4096 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            theirs = anonymous_kib(s.pid);
        }
        // SAFETY: our own child and its group.
        unsafe {
            libc::kill(s.pid, libc::SIGTERM);
            libc::waitpid(s.pid, std::ptr::null_mut(), 0);
        }
        assert!(ended, "the supervisor holds the write end of another pipe");
        assert!(mine > 64 << 10, "{mine} KiB");
        assert!(
            theirs <= 4096,
            "the supervisor still maps {theirs} KiB of anonymous memory"
        );
        assert_eq!(big.iter().map(|&b| b as usize).sum::<usize>(), 64 << 20);
    }

    #[test]
    fn candidates_follow_execvp() {
        let c = |name: &str, path: Option<&str>| -> Vec<String> {
            candidates(name.as_bytes(), path.map(str::as_bytes))
                .into_iter()
                .map(|c| String::from_utf8(c).unwrap())
                .collect()
        };
        assert_eq!(c("./train.sh", Some("/bin")), ["./train.sh"]);
        assert_eq!(c("/usr/bin/python3", None), ["/usr/bin/python3"]);
        assert_eq!(
            c("python3", Some("/a::b")),
            ["/a/python3", "./python3", "b/python3"]
        );
        assert_eq!(
            c("sh", None),
            ["/usr/local/bin/sh", "/usr/bin/sh", "/bin/sh"]
        );
    }
}
