//! Every file the coordinator reads or writes lives under its data folder, and every
//! path to one goes through here: it is opened component by component from the data
//! folder (`openat` with `O_NOFOLLOW` at each step), so no symbolic link planted
//! anywhere below the data folder (a trial's program can write in its folder; a
//! client names sweeps and files) is ever followed, for reading or for writing, and no
//! path leads outside it. The data folder itself is the operator's choice and may be
//! reached through links.
//!
//! Roots are registered once per coordinator ([`add_root`]); a path under no root is
//! refused.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, UNIX_EPOCH};

static ROOTS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Registers a data folder: paths below it may be opened (creating it if needed).
pub fn add_root(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let canon = std::fs::canonicalize(dir)?;
    let mut roots = ROOTS.lock().expect("not poisoned");
    for r in [dir.to_path_buf(), std::path::absolute(dir)?, canon] {
        if !roots.contains(&r) {
            roots.push(r);
        }
    }
    Ok(())
}

fn refused(path: &Path, why: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::PermissionDenied,
        format!("{}: {why}", path.display()),
    )
}

/// The root a path lies under and the plain names below it.
fn split(path: &Path) -> std::io::Result<(PathBuf, Vec<OsString>)> {
    let roots = ROOTS.lock().expect("not poisoned");
    let root = roots
        .iter()
        .filter(|r| path.starts_with(r))
        .max_by_key(|r| r.as_os_str().len())
        .ok_or_else(|| refused(path, "outside the data folder"))?
        .clone();
    let rest = path.strip_prefix(&root).expect("checked above");
    let mut names = Vec::new();
    for c in rest.components() {
        match c {
            Component::Normal(n) => names.push(n.to_owned()),
            Component::CurDir => {}
            _ => return Err(refused(path, "has a component that leaves its folder")),
        }
    }
    Ok((root, names))
}

fn cstr(name: &OsStr) -> std::io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| std::io::Error::other("a NUL byte in a file name"))
}

fn check(r: libc::c_int) -> std::io::Result<libc::c_int> {
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn open_root(root: &Path) -> std::io::Result<OwnedFd> {
    let c = cstr(root.as_os_str())?;
    // SAFETY: open(2) with a valid C string; the descriptor is owned at once.
    let fd = check(unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: a descriptor we just opened.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens the folder `dir` (a path under a root), never following a link; with
/// `create`, missing folders are made.
fn open_dir_at(
    names: &[OsString],
    root: &Path,
    create: bool,
    path: &Path,
) -> std::io::Result<OwnedFd> {
    let mut fd = open_root(root)?;
    for n in names {
        let c = cstr(n)?;
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: openat(2) relative to a descriptor we own.
        let mut r = unsafe { libc::openat(fd.as_raw_fd(), c.as_ptr(), flags) };
        if r < 0 && create && std::io::Error::last_os_error().kind() == std::io::ErrorKind::NotFound
        {
            // SAFETY: as above. A folder made by someone else meanwhile is fine.
            let m = unsafe { libc::mkdirat(fd.as_raw_fd(), c.as_ptr(), 0o755) };
            if m < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::AlreadyExists
            {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: as above.
            r = unsafe { libc::openat(fd.as_raw_fd(), c.as_ptr(), flags) };
        }
        if r < 0 {
            let e = std::io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::ELOOP) | Some(libc::ENOTDIR) => refused(
                    path,
                    &format!("{} is not a folder (a link?)", n.to_string_lossy()),
                ),
                _ => std::io::Error::new(e.kind(), format!("{}: {e}", path.display())),
            });
        }
        // SAFETY: a descriptor we just opened.
        fd = unsafe { OwnedFd::from_raw_fd(r) };
    }
    Ok(fd)
}

/// The folder holding `path`, opened safely, and the file's own name.
fn parent(path: &Path, create: bool) -> std::io::Result<(OwnedFd, CString)> {
    let (root, mut names) = split(path)?;
    let name = names
        .pop()
        .ok_or_else(|| refused(path, "names the data folder itself"))?;
    let dir = open_dir_at(&names, &root, create, path)?;
    Ok((dir, cstr(&name)?))
}

/// Opens `name` in `dir` with `flags` (plus `O_NOFOLLOW`), as a regular file only.
fn open_regular_at(
    dir: &OwnedFd,
    name: &CString,
    flags: libc::c_int,
    path: &Path,
) -> std::io::Result<File> {
    let flags = flags | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK;
    // SAFETY: openat(2) relative to a descriptor we own.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags, 0o644 as libc::c_uint) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::ELOOP) => refused(path, "is a link"),
            _ => std::io::Error::new(e.kind(), format!("{}: {e}", path.display())),
        });
    }
    // SAFETY: a descriptor we just opened.
    let f = unsafe { File::from_raw_fd(fd) };
    if !f.metadata()?.is_file() {
        return Err(refused(path, "is not a regular file"));
    }
    Ok(f)
}

/// Opens an existing regular file for reading (not a link, not a folder).
pub fn open(path: &Path) -> std::io::Result<File> {
    let (dir, name) = parent(path, false)?;
    open_regular_at(&dir, &name, libc::O_RDONLY, path)
}

/// Reads a whole regular file.
pub fn read(path: impl AsRef<Path>) -> std::io::Result<Vec<u8>> {
    let mut f = open(path.as_ref())?;
    let mut v = Vec::new();
    f.read_to_end(&mut v)?;
    Ok(v)
}

/// Reads a whole regular file as UTF-8 text.
pub fn read_to_string(path: impl AsRef<Path>) -> std::io::Result<String> {
    String::from_utf8(read(path)?)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Makes a folder and the folders above it, up to its root.
pub fn create_dir_all(path: &Path) -> std::io::Result<()> {
    let (root, names) = split(path)?;
    open_dir_at(&names, &root, true, path).map(drop)
}

/// A fresh file at `name` in `dir`, for writing: whatever was there (a planted link,
/// say) is removed first, and the new file is created exclusively, never through a link.
fn fresh_at(dir: &OwnedFd, name: &CString, path: &Path) -> std::io::Result<File> {
    // SAFETY: unlinkat/openat relative to a descriptor we own.
    unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) };
    let fd = check(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o644 as libc::c_uint,
        )
    })
    .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    // SAFETY: a descriptor we just opened.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Creates (or truncates) a regular file for writing, making its folders; whatever was
/// at its name (a planted link, say) is replaced, never written through.
pub fn create(path: &Path) -> std::io::Result<File> {
    let (dir, name) = parent(path, true)?;
    fresh_at(&dir, &name, path)
}

/// Opens a regular file for writing at offsets, creating it (and its folders) if
/// missing; a link at its name is refused.
pub fn open_for_update(path: &Path) -> std::io::Result<File> {
    let (dir, name) = parent(path, true)?;
    open_regular_at(&dir, &name, libc::O_WRONLY | libc::O_CREAT, path)
}

/// Writes a file so that readers see the old content or the new, never a torn one: a
/// temporary file in the same folder, renamed over the name (a link at the name is
/// replaced, not followed).
pub fn write_atomic(path: impl AsRef<Path>, data: impl AsRef<[u8]>) -> std::io::Result<()> {
    let (path, data) = (path.as_ref(), data.as_ref());
    let (dir, name) = parent(path, true)?;
    let mut tmp_name = b".".to_vec();
    tmp_name.extend_from_slice(name.as_bytes());
    tmp_name.extend_from_slice(b".tmp");
    let tmp = CString::new(tmp_name).expect("no NUL in a checked name");
    let io = |e: std::io::Error| std::io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let mut f = fresh_at(&dir, &tmp, path)?;
    let written = f.write_all(data).and_then(|()| {
        check(unsafe {
            libc::renameat(
                dir.as_raw_fd(),
                tmp.as_ptr(),
                dir.as_raw_fd(),
                name.as_ptr(),
            )
        })
        .map(drop)
    });
    if let Err(e) = written {
        unsafe { libc::unlinkat(dir.as_raw_fd(), tmp.as_ptr(), 0) };
        return Err(io(e));
    }
    Ok(())
}

/// What a folder entry is, read without following links.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A folder.
    Dir,
    /// A regular file, with its size and modification time (ns since the epoch).
    File { len: u64, mtime_ns: u64 },
    /// A link, a socket, a device...
    Other,
}

fn kind_at(dir: &OwnedFd, name: &CString) -> std::io::Result<Kind> {
    // SAFETY: fstatat(2) relative to a descriptor we own, into a zeroed struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    check(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => Kind::Dir,
        libc::S_IFREG => Kind::File {
            len: st.st_size as u64,
            mtime_ns: (st.st_mtime as u64)
                .saturating_mul(1_000_000_000)
                .saturating_add(st.st_mtime_nsec as u64),
        },
        _ => Kind::Other,
    })
}

/// What is at `path`, without following a link (there or above it).
pub fn kind(path: &Path) -> std::io::Result<Kind> {
    let (dir, name) = parent(path, false)?;
    kind_at(&dir, &name)
}

/// The entries of a folder with what each is; a folder that is a link is refused.
pub fn list(path: &Path) -> std::io::Result<Vec<(OsString, Kind)>> {
    let (root, names) = split(path)?;
    let dir = open_dir_at(&names, &root, false, path)?;
    // The opened folder itself, whatever happens to its path meanwhile.
    let entries = std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))?;
    let mut out = Vec::new();
    for e in entries {
        let name = e?.file_name();
        let k = kind_at(&dir, &cstr(&name)?).unwrap_or(Kind::Other);
        out.push((name, k));
    }
    Ok(out)
}

/// A modification time as a `SystemTime`.
pub fn mtime(ns: u64) -> std::time::SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn links_are_never_followed_and_nothing_leaves_the_root() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("data");
        add_root(&root).unwrap();
        let outside = d.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret"), b"s").unwrap();
        write_atomic(root.join("a/b/f.txt"), b"hello").unwrap();
        assert_eq!(read(root.join("a/b/f.txt")).unwrap(), b"hello");
        // A folder link, a file link, a link at a name to be written.
        symlink(&outside, root.join("a/ln")).unwrap();
        symlink(outside.join("secret"), root.join("a/b/s")).unwrap();
        assert!(read(root.join("a/ln/secret")).is_err());
        assert!(read(root.join("a/b/s")).is_err());
        assert!(open_for_update(&root.join("a/b/s")).is_err());
        assert!(write_atomic(root.join("a/ln/x"), b"x").is_err());
        assert!(create_dir_all(&root.join("a/ln/deeper")).is_err());
        assert!(list(&root.join("a/ln")).is_err());
        write_atomic(root.join("a/b/s"), b"replaced").unwrap();
        assert_eq!(std::fs::read(outside.join("secret")).unwrap(), b"s");
        assert_eq!(kind(&root.join("a/ln")).unwrap(), Kind::Other);
        let mut names: Vec<_> = list(&root.join("a")).unwrap();
        names.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(names[0].0, "b");
        assert_eq!(names[0].1, Kind::Dir);
        // Paths that leave the root, or lie outside every root.
        assert!(read(root.join("a/../../outside/secret")).is_err());
        assert!(read(outside.join("secret")).is_err());
        assert!(!outside.join("x").exists());
    }
}
