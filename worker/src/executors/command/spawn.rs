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
    program: CString,
    argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    envp: Vec<CString>,
    envp_ptrs: Vec<*const libc::c_char>,
    workdir: Option<CString>,
}

fn cstring(b: &[u8]) -> std::io::Result<CString> {
    CString::new(b).map_err(|_| std::io::Error::other("a NUL byte in an argument or variable"))
}

impl Prepared {
    /// `program` with `argv` (its `argv[0]` first), the worker's environment with
    /// `env` added over it, in `workdir`.
    pub(super) fn new(
        program: &str,
        argv: &[&OsStr],
        env: &[(String, String)],
        workdir: Option<&Path>,
    ) -> std::io::Result<Prepared> {
        let argv: Vec<CString> = argv
            .iter()
            .map(|a| cstring(a.as_bytes()))
            .collect::<Result<_, _>>()?;
        let mut vars: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = std::env::vars_os()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect();
        for (k, v) in env {
            vars.insert(k.as_bytes().to_vec(), v.as_bytes().to_vec());
        }
        let envp: Vec<CString> = vars
            .into_iter()
            .map(|(mut k, v)| {
                k.push(b'=');
                k.extend_from_slice(&v);
                cstring(&k)
            })
            .collect::<Result<_, _>>()?;
        let ptrs = |v: &[CString]| {
            v.iter()
                .map(|c| c.as_ptr())
                .chain([std::ptr::null()])
                .collect::<Vec<_>>()
        };
        Ok(Prepared {
            program: cstring(program.as_bytes())?,
            argv_ptrs: ptrs(&argv),
            envp_ptrs: ptrs(&envp),
            argv,
            envp,
            workdir: workdir
                .map(|w| cstring(w.as_os_str().as_bytes()))
                .transpose()?,
        })
    }
}

/// What the child does between the clone and `execve`, given by the caller: it runs in
/// the child and may only make async-signal-safe calls.
pub(super) type PreExec<'a> = &'a dyn Fn(bool) -> std::io::Result<()>;

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both were just opened.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A started child: its pid and the read ends of its stdout and stderr.
pub(super) struct Started {
    pub pid: i32,
    pub stdout: std::fs::File,
    pub stderr: std::fs::File,
}

/// Starts `p` in a process group of its own, with stdin from /dev/null and stdout and
/// stderr piped, in the cgroup folder `cgroup` when given (`CLONE_INTO_CGROUP`, or else
/// `pre_exec(true)` is told to enter it itself). `pre_exec` runs in the child last
/// before `execve`; its error, or exec's, is the result.
pub(super) fn spawn(
    p: &Prepared,
    cgroup: Option<&Path>,
    pre_exec: PreExec<'_>,
) -> std::io::Result<Started> {
    let devnull = std::fs::File::open("/dev/null")?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    // The child writes its errno here if it cannot exec; exec closes it (CLOEXEC).
    let (fail_r, fail_w) = pipe()?;
    let cgroup_fd = match cgroup {
        Some(dir) => Some(std::fs::File::open(dir)?),
        None => None,
    };
    let mut into = cgroup_fd.is_some();
    // What the child runs; `enter`: whether it must move itself into the cgroup.
    let in_child = |enter: bool| -> ! {
        // SAFETY: called only in the child of the clone or fork below; see `child`.
        unsafe {
            child(
                p,
                [devnull.as_raw_fd(), out_w.as_raw_fd(), err_w.as_raw_fd()],
                fail_w.as_raw_fd(),
                pre_exec,
                enter,
            )
        }
    };
    let pid = loop {
        let mut args = CloneArgs {
            exit_signal: libc::SIGCHLD as u64,
            ..CloneArgs::default()
        };
        if let (true, Some(fd)) = (into, &cgroup_fd) {
            args.flags = CLONE_INTO_CGROUP;
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
            break pid as i32;
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            // No clone3, or no CLONE_INTO_CGROUP: fork, and enter by a write.
            Some(libc::ENOSYS | libc::EINVAL | libc::E2BIG | libc::EPERM) if into => into = false,
            Some(libc::ENOSYS) => {
                // No clone3 at all: plain fork.
                // SAFETY: as above.
                let pid = unsafe { libc::fork() };
                if pid == 0 {
                    in_child(cgroup_fd.is_some())
                }
                if pid < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                break pid;
            }
            _ => return Err(e),
        }
    };
    drop((devnull, out_w, err_w, fail_w, cgroup_fd));
    let mut errno = [0u8; 4];
    let mut got = 0;
    let mut fail = std::fs::File::from(fail_r);
    loop {
        use std::io::Read;
        match fail.read(&mut errno[got..]) {
            Ok(0) => break,
            Ok(n) => {
                got += n;
                if got == 4 {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if got > 0 {
        // The child failed before exec and exited: reap it.
        // SAFETY: waitpid on our own child.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
        return Err(std::io::Error::from_raw_os_error(i32::from_ne_bytes(errno)));
    }
    Ok(Started {
        pid,
        stdout: std::fs::File::from(out_r),
        stderr: std::fs::File::from(err_r),
    })
}

/// The child: standard streams, a process group of its own, default signal handling,
/// the caller's steps, then exec. Never returns.
///
/// # Safety
/// Only in the child of a clone without `CLONE_VM`, before anything else runs there.
unsafe fn child(
    p: &Prepared,
    streams: [i32; 3],
    fail: i32,
    pre_exec: PreExec<'_>,
    enter_cgroup: bool,
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
        // As std does: SIGPIPE back to its default (Rust ignores it), no signal blocked.
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        if let Err(e) = pre_exec(enter_cgroup) {
            fail_with(e.raw_os_error().unwrap_or(libc::EIO));
        }
        let _ = &p.argv;
        let _ = &p.envp;
        libc::execve(
            p.program.as_ptr(),
            p.argv_ptrs.as_ptr(),
            p.envp_ptrs.as_ptr(),
        );
        fail_with(errno())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn run(
        program: &str,
        argv: &[&str],
        env: &[(String, String)],
    ) -> std::io::Result<(String, i32)> {
        let args: Vec<&OsStr> = argv.iter().map(OsStr::new).collect();
        let p = Prepared::new(program, &args, env, Some(Path::new("/")))?;
        let s = spawn(&p, None, &|_| Ok(()))?;
        let mut out = String::new();
        std::fs::File::from(s.stdout).read_to_string(&mut out)?;
        let mut status = 0;
        // SAFETY: our own child.
        unsafe { libc::waitpid(s.pid, &mut status, 0) };
        Ok((out, libc::WEXITSTATUS(status)))
    }

    /// The child gets its arguments, the added variables over the worker's, its folder
    /// and a group of its own; a program that cannot be executed, or a step before exec
    /// that fails, is an error of `spawn`, not a child that exits 127.
    #[test]
    fn the_child_runs_as_asked_and_failures_before_exec_are_errors() {
        let env = [("RIDGELINE_PROBE".to_owned(), "x y".to_owned())];
        let (out, code) = run(
            "/bin/sh",
            &[
                "sh",
                "-c",
                "echo \"$1|$RIDGELINE_PROBE|$(pwd)|$PATH\"; read -r _ _ _ _ pg _ < /proc/$$/stat; [ $$ = $pg ] && exit 3; exit 4",
                "zero",
                "one",
            ],
            &env,
        )
        .unwrap();
        let path = std::env::var("PATH").unwrap();
        assert_eq!(out.trim(), format!("one|x y|/|{path}"));
        assert_eq!(code, 3, "the shell leads its own process group");
        let e = run("/nonexistent/program", &["p"], &[]).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
        let args: Vec<&OsStr> = vec![OsStr::new("sh")];
        let p = Prepared::new("/bin/sh", &args, &[], None).unwrap();
        let e = spawn(&p, None, &|_| {
            Err(std::io::Error::from_raw_os_error(libc::EACCES))
        })
        .err()
        .unwrap();
        assert_eq!(e.raw_os_error(), Some(libc::EACCES));
    }
}
