//! The launcher: a small process the worker forks when it starts, before any thread,
//! that clones the trials' supervisors for it.
//!
//! A supervisor cloned by the worker itself is a copy of a multi-threaded process with
//! hundreds of MiB mapped: the clone copies its page tables and write-protects its
//! memory (the worker's threads then take copy-on-write faults, and their CPUs
//! TLB-shootdown interrupts), and the supervisor's exit tears that copy down before
//! the worker hears of it. The launcher is the worker as it was before it started: a
//! few MiB and one thread, so each clone is cheap and touches nothing of the worker.
//! It clones with `CLONE_PARENT`: the supervisor is still the worker's child, which
//! reaps it and polls its pidfd, and whose death still sends it SIGTERM
//! (`PR_SET_PDEATHSIG`, checked against the parent it sees).
//!
//! The worker asks over a Unix socket, one request at a time: the program (see
//! [`Prepared`]), the [`Steps`] and the grace, with the trial's pipe ends and lock as
//! descriptors (`SCM_RIGHTS`); the launcher answers the supervisor's pid or an errno.
//! Where no launcher runs (the worker used as a library, as in unit tests), or once it
//! failed, the worker clones supervisors itself: the same process tree, at the old
//! cost. The launcher ends with the worker (`PR_SET_PDEATHSIG`, or its socket's end).

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;
use std::time::Duration;

use super::spawn::{self, Ends, Prepared, Steps};

/// The worker's end of the launcher's socket, and the launcher's pid.
static LAUNCHER: Mutex<Option<(UnixStream, i32)>> = Mutex::new(None);

/// The launcher's name in `ps`, and so its supervisors' until they start the program.
const NAME: &std::ffi::CStr = c"ridgeline-spawn";

/// Descriptors a request carries: stdout, stderr, the start pipe, the lock.
const MAX_FDS: usize = 4;

/// A request longer than this is refused (a command line and an environment that
/// large could not be executed anyway: the kernel's limit is far below).
const MAX_REQUEST: usize = 64 << 20;

/// Forks the launcher, if this process has one thread (else nothing happens, and the
/// worker clones supervisors itself). Called first thing by the worker's `main`: a fork
/// of a process with other threads could not allocate, and the launcher does.
/// Returns whether it started.
pub fn start() -> bool {
    // One thread now means no other can appear before the fork: only a thread makes
    // threads.
    let threads = std::fs::read_dir("/proc/self/task").map(|d| d.count());
    if threads.ok() != Some(1) {
        return false;
    }
    let Ok((worker_end, launcher_end)) = UnixStream::pair() else {
        return false;
    };
    let worker = std::process::id() as i32;
    // SAFETY: this process has one thread, so the child may run any code.
    match unsafe { libc::fork() } {
        0 => {
            drop(worker_end);
            serve(launcher_end, worker)
        }
        pid if pid > 0 => {
            drop(launcher_end);
            *LAUNCHER.lock().unwrap_or_else(|e| e.into_inner()) = Some((worker_end, pid));
            true
        }
        _ => false,
    }
}

/// Has the launcher clone the supervisor: its pid, or `None` where no launcher runs
/// (the caller clones it itself). A launcher that fails is let go, with a warning: the
/// worker clones every later supervisor itself, and this one too.
pub(super) fn launch(
    p: &Prepared,
    grace: Duration,
    ends: &Ends,
    steps: &Steps,
) -> Option<std::io::Result<i32>> {
    let mut held = LAUNCHER.lock().unwrap_or_else(|e| e.into_inner());
    let (sock, launcher) = held.as_mut()?;
    let mut fds = vec![ends.stdout, ends.stderr, ends.fail];
    fds.extend(steps.keep_fd);
    let request = Request::encode(p, grace, steps);
    let reply = send(sock, &request, &fds).and_then(|()| {
        let mut b = [0u8; 4];
        sock.read_exact(&mut b)?;
        Ok(i32::from_ne_bytes(b))
    });
    match reply {
        Ok(pid) if pid > 0 => Some(Ok(pid)),
        failed => {
            let why = match failed {
                Ok(errno) => std::io::Error::from_raw_os_error(-errno),
                Err(e) => e,
            };
            tracing::warn!(
                "the launcher could not start a trial ({why}): the worker starts trials itself from now on"
            );
            let launcher = *launcher;
            *held = None;
            // SAFETY: kill and reap our own child; its socket is closed, so it exits.
            unsafe {
                libc::kill(launcher, libc::SIGKILL);
                libc::waitpid(launcher, std::ptr::null_mut(), 0);
            }
            None
        }
    }
}

/// What a request holds besides its descriptors.
struct Request {
    prepared: Prepared,
    grace: Duration,
    steps: Steps,
}

impl Request {
    /// As bytes: the grace in ms, the parent, then the cgroup, the candidates, the
    /// arguments, the environment and the folder, each a list of strings (a count,
    /// then each string's length and bytes). Whether the lock is passed rides on the
    /// descriptors' count.
    fn encode(p: &Prepared, grace: Duration, steps: &Steps) -> Vec<u8> {
        let mut out = Vec::with_capacity(4096);
        out.extend_from_slice(&(grace.as_millis().min(u32::MAX as u128) as u32).to_ne_bytes());
        out.extend_from_slice(&steps.parent.to_ne_bytes());
        let lists = std::iter::once(steps.cgroup.as_slice()).chain(p.parts());
        for list in lists {
            out.extend_from_slice(&(list.len() as u32).to_ne_bytes());
            for s in list {
                out.extend_from_slice(&(s.as_bytes().len() as u32).to_ne_bytes());
                out.extend_from_slice(s.as_bytes());
            }
        }
        out
    }

    /// From [`Request::encode`]'s bytes and the descriptors that came with them
    /// (`MAX_FDS` means the lock is among them); `None` if they do not parse.
    fn decode(mut b: &[u8], fds: &[OwnedFd]) -> Option<Request> {
        fn u32_of(b: &mut &[u8]) -> Option<u32> {
            let (head, rest) = b.split_first_chunk::<4>()?;
            *b = rest;
            Some(u32::from_ne_bytes(*head))
        }
        fn list(b: &mut &[u8]) -> Option<Vec<CString>> {
            (0..u32_of(b)?)
                .map(|_| {
                    let n = u32_of(b)? as usize;
                    let s = b.get(..n)?;
                    *b = &b[n..];
                    CString::new(s).ok()
                })
                .collect()
        }
        let grace = Duration::from_millis(u32_of(&mut b)?.into());
        let parent = u32_of(&mut b)? as i32;
        let cgroup = list(&mut b)?.pop();
        let candidates = list(&mut b)?;
        let argv = list(&mut b)?;
        let envp = list(&mut b)?;
        let workdir = list(&mut b)?.pop();
        Some(Request {
            prepared: Prepared::from_parts(candidates, argv, envp, workdir),
            grace,
            steps: Steps {
                parent,
                keep_fd: fds.get(3).map(AsRawFd::as_raw_fd),
                cgroup,
            },
        })
    }
}

/// Sends `bytes`, preceded by their length, with `fds` attached to the first byte.
fn send(sock: &mut UnixStream, bytes: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
    let len = (bytes.len() as u32).to_ne_bytes();
    let mut iov = [
        libc::iovec {
            iov_base: len.as_ptr() as *mut libc::c_void,
            iov_len: 4,
        },
        libc::iovec {
            iov_base: bytes.as_ptr() as *mut libc::c_void,
            iov_len: bytes.len(),
        },
    ];
    let mut control = Control::new();
    // SAFETY: a msghdr over live buffers; CMSG_* on a buffer sized by CMSG_SPACE.
    let sent = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = 2;
        let data = std::mem::size_of_val(fds) as u32;
        msg.msg_control = control.0.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(data) as usize;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(data) as usize;
        std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(c).cast(), fds.len());
        libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL)
    };
    if sent < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // A stream socket may take a long request in parts: the rest without descriptors.
    let sent = sent as usize;
    if sent < 4 {
        sock.write_all(&len[sent..])?;
        sock.write_all(bytes)
    } else {
        sock.write_all(&bytes[sent - 4..])
    }
}

/// Room for the control message of `MAX_FDS` descriptors, aligned for `cmsghdr`.
#[repr(C, align(8))]
struct Control([u8; 64]);

impl Control {
    /// 64 bytes: a `cmsghdr` (16) and `MAX_FDS` descriptors (16), with room to spare.
    fn new() -> Control {
        Control([0; 64])
    }
}

/// Receives a request: its bytes and its descriptors (close-on-exec here); `None` at
/// the end of the socket or on any error.
fn receive(sock: &mut UnixStream) -> Option<(Vec<u8>, Vec<OwnedFd>)> {
    let mut len = [0u8; 4];
    let mut iov = libc::iovec {
        iov_base: len.as_mut_ptr().cast(),
        iov_len: 4,
    };
    let mut control = Control::new();
    let mut fds = Vec::new();
    // SAFETY: a msghdr over live buffers; the descriptors in an SCM_RIGHTS message are
    // new in this process and ours to own.
    let got = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.0.as_mut_ptr().cast();
        msg.msg_controllen = control.0.len();
        let got = libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC);
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let n = ((*c).cmsg_len - libc::CMSG_LEN(0) as usize) / 4;
                let data = libc::CMSG_DATA(c).cast::<RawFd>();
                fds.extend((0..n).map(|i| OwnedFd::from_raw_fd(data.add(i).read_unaligned())));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
        got
    };
    if got <= 0 {
        return None;
    }
    sock.read_exact(&mut len[got as usize..]).ok()?;
    let len = u32::from_ne_bytes(len) as usize;
    if len > MAX_REQUEST {
        return None;
    }
    let mut bytes = vec![0u8; len];
    sock.read_exact(&mut bytes).ok()?;
    Some((bytes, fds))
}

/// The launcher's life: one request at a time, each answered with the supervisor's pid
/// or the negated errno of cloning it, until the worker's end closes.
fn serve(mut sock: UnixStream, worker: i32) -> ! {
    // SAFETY: prctl and signal on this single-threaded process.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
        if libc::getppid() != worker {
            libc::_exit(0);
        }
        libc::prctl(libc::PR_SET_NAME, NAME.as_ptr());
        // A terminal's ^C or a scheduler's signal to the whole group is for the
        // worker, which stops its trials first: the launcher ends with it. Supervisors
        // put every signal back to its default before they start the program.
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
            libc::signal(sig, libc::SIG_IGN);
        }
        // It writes nothing, and holding the worker's standard streams would keep a
        // pipe the worker's caller reads open while the launcher lives.
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            for fd in 0..3 {
                libc::dup2(null, fd);
            }
            if null > 2 {
                libc::close(null);
            }
        }
    }
    while let Some((bytes, fds)) = receive(&mut sock) {
        let answer = match (fds.len(), Request::decode(&bytes, &fds)) {
            (3..=MAX_FDS, Some(r)) => {
                let ends = Ends {
                    stdout: fds[0].as_raw_fd(),
                    stderr: fds[1].as_raw_fd(),
                    fail: fds[2].as_raw_fd(),
                };
                let flags = libc::CLONE_PARENT as u64;
                match spawn::clone_supervisor(&r.prepared, r.grace, &ends, &r.steps, flags) {
                    Ok(pid) => pid,
                    Err(e) => -e.raw_os_error().unwrap_or(libc::EIO),
                }
            }
            _ => -libc::EINVAL,
        };
        // Its copies of the trial's pipe ends close here: the trial's output ends with
        // its processes.
        drop(fds);
        if sock.write_all(&answer.to_ne_bytes()).is_err() {
            break;
        }
    }
    // SAFETY: _exit ends this process without running the worker's exit handlers.
    unsafe { libc::_exit(0) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;
    use std::path::Path;

    /// A request comes out of its bytes as it went in.
    #[test]
    fn a_request_decodes_to_what_was_encoded() {
        let args: Vec<&OsStr> = ["sh", "-c", "echo é"].iter().map(OsStr::new).collect();
        let env = [("RIDGELINE_X".to_owned(), "a=b".to_owned())];
        let p = Prepared::new(&args, &env, Some(Path::new("/tmp"))).unwrap();
        for (keep, cgroup) in [
            (None, None),
            (Some(5), Some(c"/sys/fs/cgroup/x".to_owned())),
        ] {
            let steps = Steps {
                parent: 4242,
                keep_fd: keep,
                cgroup: cgroup.clone(),
            };
            let bytes = Request::encode(&p, Duration::from_millis(1500), &steps);
            let n = if keep.is_some() { 4 } else { 3 };
            let fds: Vec<OwnedFd> = (0..n)
                .map(|_| std::fs::File::open("/dev/null").unwrap().into())
                .collect();
            let r = Request::decode(&bytes, &fds).unwrap();
            assert_eq!(r.grace, Duration::from_millis(1500));
            assert_eq!(r.steps.parent, 4242);
            assert_eq!(r.steps.cgroup, cgroup);
            assert_eq!(r.steps.keep_fd.is_some(), keep.is_some());
            assert_eq!(r.prepared.parts(), p.parts());
            // Cut anywhere, it does not parse (nor panic).
            for cut in 0..bytes.len() {
                assert!(
                    Request::decode(&bytes[..cut], &fds).is_none(),
                    "cut at {cut}"
                );
            }
        }
    }
}
