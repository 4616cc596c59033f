//! The trial's supervisor: the worker's child that starts the program and outlives
//! every process the program starts.
//!
//! It runs in a copy of the launcher (see [`super::launcher`]), or of the worker where no
//! launcher runs, without executing anything: a shell as supervisor cost as much as
//! the trial's own program (the dynamic loader's CPU detection alone is a third of a
//! small program's start on a VM), so a trivial trial paid for two program starts.
//! Possibly a fork of a multi-threaded process, it makes only async-signal-safe system
//! calls, on its stack and on buffers made before the fork: no allocation, no lock, no
//! panic.
//!
//! What it does, in order:
//! 1. starts the program (`clone` with `CLONE_VM | CLONE_VFORK`, as `posix_spawn`
//!    does: no second copy of the worker's page tables), in its own process group and
//!    cgroup, a child subreaper (set by the caller), so that every orphan of the trial
//!    comes to it;
//! 2. closes what an `exec` would have closed (every close-on-exec descriptor of the
//!    worker, among them the pipe the worker waits on to learn the program started)
//!    and its own standard streams, so that the trial's pipes end with the program;
//! 3. once the program has run for 100 ms, hands its copy of the worker's anonymous
//!    memory back (`MADV_DONTNEED`), so that the worker's writes to it copy nothing
//!    while the trial runs;
//! 4. waits for SIGCHLD and SIGTERM (blocked since the fork, taken by `sigwaitinfo`).
//!    When the program exits, it stops every descendant left (SIGTERM to the group and
//!    to each adopted child once, SIGKILL after the grace period, until none is left)
//!    and exits with the program's status (128 + n if signal n ended it, as a shell
//!    reports). On SIGTERM (the worker stops the trial, or the worker died:
//!    `PR_SET_PDEATHSIG`) it does the same and exits 143.

use std::time::Duration;

use super::spawn::Prepared;

/// Adopted children it remembers having sent SIGTERM (each gets one); beyond that many
/// a child may get a second, which is harmless.
const REMEMBERED: usize = 512;

/// How long the program runs before the supervisor hands back its copy of the
/// worker's memory.
const RELEASE_AFTER: Duration = Duration::from_millis(100);

/// Children looked at per round of stopping; the rest are seen in later rounds.
const PER_ROUND: usize = 512;

/// Runs the supervisor in the child of the worker's fork: returns the exit status, or
/// the errno of starting the program (written to `fail` by the caller).
///
/// # Safety
/// Only in the single-threaded child of a fork of the worker, with SIGTERM and SIGCHLD
/// blocked; never returns to code that may allocate.
pub(super) unsafe fn run(p: &Prepared, grace: Duration, fail: i32) -> Result<i32, i32> {
    // SAFETY: system calls on descriptors and memory of this process only.
    unsafe {
        default_handlers();
        let program = start(p, fail)?;
        libc::close(fail);
        for fd in 0..3 {
            libc::close(fd);
        }
        close_on_exec_descriptors();
        let mut waited: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut waited);
        libc::sigaddset(&mut waited, libc::SIGTERM);
        libc::sigaddset(&mut waited, libc::SIGCHLD);
        let mut status = None;
        // The worker's memory is handed back once the program has run a while: a
        // program that ends sooner never gives the worker time to write much of it,
        // and its supervisor's exit hands it back anyway.
        let mut released = false;
        loop {
            let sig = if released {
                libc::sigwaitinfo(&waited, std::ptr::null_mut())
            } else {
                let t = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: RELEASE_AFTER.as_nanos() as libc::c_long,
                };
                libc::sigtimedwait(&waited, std::ptr::null_mut(), &t)
            };
            if sig < 0 && !released {
                // The timeout (EINTR cannot happen: both signals are blocked).
                release_memory();
                released = true;
                continue;
            }
            if sig == libc::SIGTERM {
                stop(grace);
                return Ok(128 + libc::SIGTERM);
            }
            let left = reap(program, &mut status);
            if let Some(s) = status {
                if left {
                    stop(grace);
                }
                return Ok(if libc::WIFSIGNALED(s) {
                    128 + libc::WTERMSIG(s)
                } else {
                    libc::WEXITSTATUS(s)
                });
            }
        }
    }
}

/// Every signal the worker handles back to its default action: the worker's handlers
/// (tokio's, say) mean nothing in this process.
unsafe fn default_handlers() {
    for sig in 1..32 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // SAFETY: sigaction is async-signal-safe; SIG_DFL takes no handler.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
    }
}

/// What the program's side of the clone is given.
struct Start<'a> {
    p: &'a Prepared,
    /// The pipe the worker waits on, closed before exec: a descriptor that exec closes
    /// is released only when exec returns to user space, once the whole program is
    /// loaded, and the worker would wait that long for its end of file.
    fail: i32,
}

/// Starts the program as a child sharing this process's memory until it executes
/// (the parent waits meanwhile): its pid, or the errno of the clone.
unsafe fn start(p: &Prepared, fail: i32) -> Result<i32, i32> {
    // The child's stack: it only unblocks signals, calls execve and, if that fails,
    // writes a line.
    #[repr(align(16))]
    struct Stack([u8; 32 * 1024]);
    let mut stack = Stack([0; 32 * 1024]);
    let top = stack.0.as_mut_ptr_range().end;
    let start = Start { p, fail };
    // SAFETY: CLONE_VFORK suspends this process until the child executes or exits, so
    // the stack and `start` stay valid for as long as the child uses them.
    let pid = unsafe {
        libc::clone(
            program,
            top.cast(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&start as *const Start).cast_mut().cast(),
        )
    };
    if pid < 0 {
        return Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO));
    }
    Ok(pid)
}

/// The program's side of the clone: no signal blocked, then execve. If no candidate
/// could be executed, says so on stderr and exits as a shell would (127: not found,
/// 126: found but not executable).
extern "C" fn program(start: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `start` is what the supervisor passed, alive while it waits.
    unsafe {
        let Start { p, fail } = &*(start as *const Start);
        libc::close(*fail);
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        let e = p.exec();
        let why: &[u8] = match e {
            libc::ENOENT => b": not found\n",
            libc::EACCES => b": permission denied\n",
            libc::ENOEXEC => b": not an executable (a script needs a #! line)\n",
            _ => b": cannot be executed\n",
        };
        let name = p.name().to_bytes();
        for part in [b"ridgeline: ".as_slice(), name, why] {
            libc::write(2, part.as_ptr().cast(), part.len());
        }
        libc::_exit(if e == libc::ENOENT { 127 } else { 126 })
    }
}

/// Reaps every exited child, noting the program's status; whether any child is left.
unsafe fn reap(program: i32, status: &mut Option<i32>) -> bool {
    loop {
        let mut s = 0;
        // SAFETY: waitpid on this process's own children.
        let pid = unsafe { libc::waitpid(-1, &mut s, libc::WNOHANG) };
        if pid == 0 {
            return true;
        }
        if pid < 0 {
            // ECHILD: none left (EINTR cannot happen: every signal it waits for is
            // blocked).
            return false;
        }
        if pid == program {
            *status = Some(s);
        }
    }
}

/// Stops the program's group and every descendant: SIGTERM to the group and once to
/// each adopted child, for up to `grace`, then SIGKILL to each child until none is
/// left (a process that keeps forking is outrun: each round kills what the last one
/// adopted; what stays in the group is killed by the worker once this process exits).
unsafe fn stop(grace: Duration) {
    // No pid is 0: nothing is taken for the program's status.
    let mut ignored = None;
    let mut termed = [0i32; REMEMBERED];
    let mut n_termed = 0;
    let mut kids = [0i32; PER_ROUND];
    // SAFETY: kill(2) on this process's group and children; nanosleep.
    unsafe {
        libc::kill(0, libc::SIGTERM);
        let rounds = grace.as_millis() / 50 + 2;
        for _ in 0..rounds {
            if !reap(0, &mut ignored) {
                return;
            }
            let n = children(&mut kids);
            for &pid in &kids[..n] {
                if !termed[..n_termed].contains(&pid) {
                    libc::kill(pid, libc::SIGTERM);
                    if n_termed < REMEMBERED {
                        termed[n_termed] = pid;
                        n_termed += 1;
                    }
                }
            }
            sleep(Duration::from_millis(50));
        }
        for _ in 0..500 {
            if !reap(0, &mut ignored) {
                return;
            }
            let n = children(&mut kids);
            for &pid in &kids[..n] {
                libc::kill(pid, libc::SIGKILL);
            }
            sleep(Duration::from_millis(10));
        }
    }
}

unsafe fn sleep(d: Duration) {
    let t = libc::timespec {
        tv_sec: d.as_secs() as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    };
    // SAFETY: nanosleep with a valid timespec.
    unsafe { libc::nanosleep(&t, std::ptr::null_mut()) };
}

/// This process's children (adopted orphans among them), from
/// `/proc/thread-self/children`, into `kids`; how many.
unsafe fn children(kids: &mut [i32; PER_ROUND]) -> usize {
    let mut n = 0;
    let mut number = Number::default();
    // SAFETY: open, read and close on a buffer of this stack frame.
    unsafe {
        let fd = libc::open(
            c"/proc/thread-self/children".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return 0;
        }
        let mut buf = [0u8; 1024];
        loop {
            let got = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
            if got <= 0 {
                break;
            }
            for &b in &buf[..got as usize] {
                if let Some(pid) = number.feed(b)
                    && n < PER_ROUND
                {
                    kids[n] = pid as i32;
                    n += 1;
                }
            }
        }
        if let Some(pid) = number.feed(b' ')
            && n < PER_ROUND
        {
            kids[n] = pid as i32;
            n += 1;
        }
        libc::close(fd);
    }
    n
}

/// A decimal number read a byte at a time: `feed` gives it at the first other byte.
#[derive(Default)]
struct Number {
    value: u64,
    digits: bool,
}

impl Number {
    fn feed(&mut self, b: u8) -> Option<u64> {
        if b.is_ascii_digit() {
            self.value = self
                .value
                .saturating_mul(10)
                .saturating_add(u64::from(b - b'0'));
            self.digits = true;
            None
        } else {
            let v = self.digits.then_some(self.value);
            *self = Number::default();
            v
        }
    }
}

/// Closes what `execve` would: every descriptor marked close-on-exec (all the worker
/// opens are), listed from `/proc/self/fd`; the trial's lock, inherited on purpose, stays.
unsafe fn close_on_exec_descriptors() {
    // SAFETY: open, getdents64, fcntl and close on this process's own descriptors, with
    // a buffer of this stack frame.
    unsafe {
        let dir = libc::open(
            c"/proc/self/fd".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        );
        if dir < 0 {
            return;
        }
        #[repr(align(8))]
        struct Buf([u8; 2048]);
        let mut buf = Buf([0; 2048]);
        loop {
            let got = libc::syscall(libc::SYS_getdents64, dir, buf.0.as_mut_ptr(), buf.0.len());
            if got <= 0 {
                break;
            }
            let mut at = 0usize;
            while at + 19 < got as usize {
                // struct linux_dirent64: ino u64, off i64, reclen u16, type u8, name.
                let reclen = u16::from_ne_bytes([buf.0[at + 16], buf.0[at + 17]]) as usize;
                let mut number = Number::default();
                let mut fd = None;
                for &b in &buf.0[at + 19..(at + reclen).min(got as usize)] {
                    fd = number.feed(b);
                    if b == 0 {
                        break;
                    }
                }
                if let Some(fd) = fd.and_then(|f| i32::try_from(f).ok())
                    && fd != dir
                    && libc::fcntl(fd, libc::F_GETFD) & libc::FD_CLOEXEC != 0
                {
                    libc::close(fd);
                }
                if reclen == 0 {
                    break;
                }
                at += reclen;
            }
        }
        libc::close(dir);
    }
}

/// Hands back this copy of the worker's private anonymous memory (heap, thread stacks,
/// tensors): after a fork both processes share those pages until one writes, and each
/// write by the worker would copy a page for as long as the trial runs. Only the
/// mapping holding this stack and the one holding this thread's control block (its
/// TLS, errno) are kept; nothing else is read again.
unsafe fn release_memory() {
    let here = 0u8;
    let sp = &here as *const u8 as usize;
    // SAFETY: pthread_self reads this thread's control block; the rest are system calls
    // on this process's own mappings, listed by /proc/self/maps.
    unsafe {
        let tcb = libc::pthread_self() as usize;
        let fd = libc::open(
            c"/proc/self/maps".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return;
        }
        let mut line = MapsLine::default();
        let mut buf = [0u8; 4096];
        loop {
            let got = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
            if got <= 0 {
                break;
            }
            for &b in &buf[..got as usize] {
                if let Some((start, end)) = line.feed(b)
                    && !(start..end).contains(&sp)
                    && !(start..end).contains(&tcb)
                {
                    libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
                }
            }
        }
        libc::close(fd);
    }
}

/// A line of `/proc/self/maps` read a byte at a time: `start-end perms offset dev
/// inode path`. `feed` gives the range at the end of a line that maps private,
/// writable, anonymous memory (inode 0).
#[derive(Default)]
struct MapsLine {
    field: u8,
    start: usize,
    end: usize,
    perms: [u8; 4],
    n_perms: usize,
    inode: u64,
}

impl MapsLine {
    fn feed(&mut self, b: u8) -> Option<(usize, usize)> {
        let hex = |acc: usize, b: u8| -> usize {
            let d = match b {
                b'0'..=b'9' => b - b'0',
                b'a'..=b'f' => b - b'a' + 10,
                _ => 0,
            };
            acc.wrapping_shl(4) | usize::from(d)
        };
        match (self.field, b) {
            (_, b'\n') => {
                let anonymous = self.field >= 5 && self.inode == 0;
                let wanted = anonymous && self.perms == *b"rw-p" && self.start < self.end;
                let range = (self.start, self.end);
                *self = MapsLine::default();
                return wanted.then_some(range);
            }
            (0, b'-') => self.field = 1,
            (0, _) => self.start = hex(self.start, b),
            (1..=4, b' ') => self.field += 1,
            (1, _) => self.end = hex(self.end, b),
            (2, _) if self.n_perms < 4 => {
                self.perms[self.n_perms] = b;
                self.n_perms += 1;
            }
            (5, b' ') => self.field = 6,
            // Saturating: a panic would allocate, in a forked child.
            (5, b'0'..=b'9') => {
                self.inode = self
                    .inode
                    .saturating_mul(10)
                    .saturating_add(u64::from(b - b'0'))
            }
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines_give_private_writable_anonymous_ranges_only() {
        let maps = "\
55e32a4f1000-55e32a545000 r-xp 00000000 08:01 1234 /usr/bin/dash
55e33fea4000-55e33fec5000 rw-p 00000000 00:00 0                          [heap]
7f20f6525000-7f20f6528000 rw-p 00000000 00:00 0
7f20f66f7000-7f20f66fd000 rw-p 001cf000 08:01 5678 /usr/lib/x86_64-linux-gnu/libc.so.6
7f20f6700000-7f20f6710000 rw-s 00000000 00:01 0 /dev/zero (deleted)
7f20f6710000-7f20f6711000 ---p 00000000 00:00 0
7ffc7c3c0000-7ffc7c3e1000 rw-p 00000000 00:00 0                          [stack]
";
        let mut line = MapsLine::default();
        let got: Vec<(usize, usize)> = maps.bytes().filter_map(|b| line.feed(b)).collect();
        assert_eq!(
            got,
            vec![
                (0x55e3_3fea_4000, 0x55e3_3fec_5000),
                (0x7f20_f652_5000, 0x7f20_f652_8000),
                (0x7ffc_7c3c_0000, 0x7ffc_7c3e_1000),
            ]
        );
    }

    #[test]
    fn numbers_are_read_a_byte_at_a_time() {
        let mut n = Number::default();
        let got: Vec<u64> = b"12 7 4194304\n"
            .iter()
            .filter_map(|&b| n.feed(b))
            .collect();
        assert_eq!(got, vec![12, 7, 4_194_304]);
    }
}
