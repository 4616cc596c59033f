//! A sweep's files as the client-facing service serves them: listed with sizes and
//! versions, read from an offset in chunks. Only regular files inside the sweep's folder
//! are ever opened: paths are checked component by component, symbolic links and hidden
//! (temporary) files are neither listed nor read.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path};

use crate::fsafe;
use std::time::UNIX_EPOCH;

use tonic::Status;

use ridgeline_common::proto;

/// Bytes per streamed chunk: large enough that per-message overhead is negligible,
/// small enough that a dropped connection loses little.
pub const CHUNK_BYTES: usize = 1 << 20;

/// A file's version: its modification time in ns (never 0, which means "any").
fn version(meta: &std::fs::Metadata) -> u64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(1, |d| (d.as_nanos() as u64).max(1))
}

/// Every regular file under `root/under`, recursively, sorted by path relative to
/// `root`. Hidden names (`.x.tmp` while being written) and links are left out, and no
/// link is followed (see [`crate::fsafe`]): a folder link planted in a trial's folder
/// lists nothing.
pub fn list(root: &Path, under: &str) -> Result<Vec<proto::ArtifactInfo>, Status> {
    let mut out = Vec::new();
    let start = if under.is_empty() {
        root.to_path_buf()
    } else {
        root.join(under)
    };
    if !under.is_empty() && fsafe::kind(&start).is_ok_and(|k| k != fsafe::Kind::Dir) {
        return Ok(out);
    }
    let mut stack = vec![start];
    while let Some(dir) = stack.pop() {
        let entries = match fsafe::list(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Status::internal(e.to_string())),
        };
        for (name, kind) in entries {
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            let path = dir.join(&name);
            match kind {
                fsafe::Kind::Dir => stack.push(path),
                fsafe::Kind::File { len, mtime_ns } => {
                    let rel = path.strip_prefix(root).expect("walked from root");
                    let parts: Vec<String> = rel
                        .components()
                        .map(|c| c.as_os_str().to_string_lossy().into_owned())
                        .collect();
                    out.push(proto::ArtifactInfo {
                        path: parts.join("/"),
                        size: len,
                        version: mtime_ns.max(1),
                    });
                }
                fsafe::Kind::Other => {}
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// The file a client's relative path names inside `root`, opened: refused unless every
/// component is a plain name (no `..`, no root, no hidden names), none of them a link,
/// and it is a regular file.
pub fn resolve(root: &Path, rel: &str) -> Result<std::fs::File, Status> {
    let bad = |why: &str| Status::invalid_argument(format!("path: {rel:?} {why}"));
    if rel.is_empty() {
        return Err(bad("is empty"));
    }
    let mut path = root.to_path_buf();
    for c in Path::new(rel).components() {
        match c {
            Component::Normal(n) if !n.to_string_lossy().starts_with('.') => path.push(n),
            _ => return Err(bad("is not a path inside the sweep's folder")),
        }
    }
    match fsafe::open(&path) {
        Ok(f) => Ok(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Status::not_found(format!(
            "path: no file {rel:?} in this sweep"
        ))),
        Err(_) => Err(bad("is not a regular file")),
    }
}

/// Reads an opened file from `offset` to its end as it was when opened, handing each
/// chunk to `send` (which returns false once the client has gone). Runs on the
/// blocking pool.
pub fn stream(
    mut f: std::fs::File,
    rel: &str,
    offset: u64,
    want_version: u64,
    mut send: impl FnMut(Result<proto::ArtifactChunk, Status>) -> bool,
) {
    let meta = match f.metadata() {
        Ok(m) => m,
        Err(e) => {
            send(Err(Status::internal(format!("{rel}: {e}"))));
            return;
        }
    };
    if want_version != 0 && version(&meta) != want_version {
        send(Err(Status::failed_precondition(format!(
            "{rel}: the file has changed since it was listed; list it again"
        ))));
        return;
    }
    if offset > meta.len() {
        send(Err(Status::out_of_range(format!(
            "offset: {offset} is past the end of {rel} ({} bytes)",
            meta.len()
        ))));
        return;
    }
    if let Err(e) = f.seek(SeekFrom::Start(offset)) {
        send(Err(Status::internal(format!("{rel}: {e}"))));
        return;
    }
    // The length listed is what is sent, even if the file grows meanwhile: a version
    // check above already refused files rewritten since they were listed.
    let mut left = meta.len() - offset;
    while left > 0 {
        let mut buf = vec![0u8; CHUNK_BYTES.min(left as usize)];
        if let Err(e) = f.read_exact(&mut buf) {
            send(Err(Status::internal(format!("{rel}: {e}"))));
            return;
        }
        left -= buf.len() as u64;
        if !send(Ok(proto::ArtifactChunk { data: buf })) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_regular_files_and_refuses_paths_outside() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("sweep");
        fsafe::add_root(&root).unwrap();
        std::fs::create_dir_all(root.join("trials/00001")).unwrap();
        std::fs::write(root.join("surface.npy"), b"abc").unwrap();
        std::fs::write(root.join("trials/00001/model.json"), b"{}").unwrap();
        std::fs::write(root.join(".results.csv.tmp"), b"x").unwrap();
        std::fs::write(d.path().join("secret"), b"s").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(d.path().join("secret"), root.join("link")).unwrap();
        let l = list(&root, "").unwrap();
        let paths: Vec<&str> = l.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["surface.npy", "trials/00001/model.json"]);
        assert_eq!(l[0].size, 3);
        assert!(l[0].version > 0);
        let only = list(&root, "trials/00001").unwrap();
        assert_eq!(only.len(), 1);
        assert_eq!(list(&root, "trials/00002").unwrap().len(), 0);
        for p in [
            "../secret",
            "/etc/passwd",
            "link",
            "trials",
            ".results.csv.tmp",
            "",
        ] {
            let e = resolve(&root, p).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{p}: {e:?}");
        }
        assert_eq!(
            resolve(&root, "nope").unwrap_err().code(),
            tonic::Code::NotFound
        );
        assert!(resolve(&root, "trials/00001/model.json").is_ok());
    }

    #[test]
    fn streams_from_an_offset_and_refuses_changed_files() {
        let d = tempfile::tempdir().unwrap();
        fsafe::add_root(d.path()).unwrap();
        let bytes: Vec<u8> = (0..(CHUNK_BYTES * 2 + 17)).map(|i| (i * 7) as u8).collect();
        std::fs::write(d.path().join("f"), &bytes).unwrap();
        let open = || resolve(d.path(), "f").unwrap();
        let v = list(d.path(), "").unwrap()[0].version;
        for offset in [0, 5, CHUNK_BYTES as u64 + 3, bytes.len() as u64] {
            let mut got = Vec::new();
            stream(open(), "f", offset, v, |c| {
                got.extend(c.unwrap().data);
                true
            });
            assert_eq!(got, bytes[offset as usize..]);
        }
        let mut codes = Vec::new();
        stream(open(), "f", 0, v + 1, |c| {
            codes.push(c.unwrap_err().code());
            false
        });
        stream(open(), "f", bytes.len() as u64 + 1, 0, |c| {
            codes.push(c.unwrap_err().code());
            false
        });
        assert_eq!(
            codes,
            [tonic::Code::FailedPrecondition, tonic::Code::OutOfRange]
        );
        // A client that goes away stops the reading after its chunk.
        let mut n = 0;
        stream(open(), "f", 0, 0, |_| {
            n += 1;
            false
        });
        assert_eq!(n, 1);
    }
}
