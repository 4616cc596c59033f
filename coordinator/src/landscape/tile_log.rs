//! The log a running scan's tile values are appended to as results arrive.
//!
//! A folder and a file per tile cost ext4 an inode allocation each (a scan of 5,000
//! one-point tiles ran 1,458 → 878 tiles/s from round to round on the same disk as
//! deleted inodes piled up), so a tile whose result is its values alone goes into one
//! append-only file per scan instead. Assembly reads it with the pack and any tile
//! files (`super::tiles`); packing an assembled scan removes it.
//!
//! Layout: `RLTLOG01`, then records: tile number, length of its `tile.f64` bytes and
//! of its `tile_val.f64` bytes (0 without a second split), each u32 LE; the bytes; an
//! FNV-1a 64 checksum of all of the record before it (u64 LE). A record cut by a crash
//! ends the readable log; the writer cuts it off before it appends. A tile may appear
//! more than once (an attempt persisted whose commit then failed, and the unit ran
//! again): the last record wins, as the last write of a file did.
//!
//! The event loop appends; packing an assembled scan (on a thread of its own) removes
//! the log, but only if nothing was appended since it was read (a resumed scan may run
//! again meanwhile). Both hold an exclusive `flock` on the log while they act, and the
//! writer that finds its log removed starts a new one.

use std::collections::HashMap;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::{SECOND_TILE_FILE, TILE_FILE};

/// The log's name in the sweep's folder.
pub const LOG: &str = "tile_values.log";
const MAGIC: &[u8; 8] = b"RLTLOG01";
/// Tile number and two lengths.
const HEAD: u64 = 12;

/// Where one tile's values are in the log.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Entry {
    /// Offset of its `tile.f64` bytes.
    pub at: u64,
    pub first: u32,
    pub second: u32,
}

fn fnv1a(bytes: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes.iter().flat_map(|s| s.iter()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The values of a unit's artifacts when they are a tile's values and nothing else:
/// `tile.f64`, and `tile_val.f64` if there is one.
pub fn tile_values<'a>(names_and_data: &[(&str, &'a [u8])]) -> Option<(&'a [u8], &'a [u8])> {
    let find = |want: &str| {
        names_and_data
            .iter()
            .find(|(n, _)| *n == want)
            .map(|(_, d)| *d)
    };
    let others = names_and_data
        .iter()
        .any(|(n, _)| *n != TILE_FILE && *n != SECOND_TILE_FILE);
    if others || names_and_data.len() > 2 {
        return None;
    }
    Some((find(TILE_FILE)?, find(SECOND_TILE_FILE).unwrap_or_default()))
}

/// Every readable record of the log at `path`, the last one of each tile; and the
/// length of the readable part. A missing log has none. Read a record at a time: the
/// log of a 10^6-point scan is 18 MB.
pub fn read(path: &Path) -> Result<(HashMap<u32, Entry>, u64), String> {
    let bad = |e: std::io::Error| format!("{}: {e}", path.display());
    let f = match crate::fsafe::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((HashMap::new(), 0)),
        Err(e) => return Err(bad(e)),
    };
    let len = f.metadata().map_err(bad)?.len();
    let mut r = std::io::BufReader::with_capacity(1 << 16, f);
    // Fills `buf` whole, or says the file ended first (a cut record).
    let mut fill = |buf: &mut [u8]| -> Result<bool, String> {
        match r.read_exact(buf) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(bad(e)),
        }
    };
    let mut magic = [0u8; 8];
    if !fill(&mut magic)? {
        // Cut before its header was whole: nothing in it.
        return Ok((HashMap::new(), 0));
    }
    if &magic != MAGIC {
        return Err(format!("{}: not a tile log", path.display()));
    }
    let mut entries = HashMap::new();
    let mut at = MAGIC.len() as u64;
    let mut record = Vec::new();
    loop {
        let mut head = [0u8; HEAD as usize];
        if !fill(&mut head)? {
            break;
        }
        let word = |i: usize| u32::from_le_bytes(head[i..i + 4].try_into().expect("4 bytes"));
        let (t, first, second) = (word(0), word(4), word(8));
        let size = HEAD + u64::from(first) + u64::from(second) + 8;
        if at + size > len {
            // Cut, or a length damaged beyond the file: the readable log ends here.
            break;
        }
        record.clear();
        record.extend_from_slice(&head);
        record.resize(size as usize, 0);
        if !fill(&mut record[HEAD as usize..])? {
            break;
        }
        let (body, sum) = record.split_at(record.len() - 8);
        if u64::from_le_bytes(sum.try_into().expect("8 bytes")) != fnv1a(&[body]) {
            break;
        }
        entries.insert(
            t,
            Entry {
                at: at + HEAD,
                first,
                second,
            },
        );
        at += record.len() as u64;
    }
    Ok((entries, at))
}

/// An exclusive `flock` on a file's descriptor, released when dropped (before the file
/// is closed: it is taken on files that outlive it).
struct Locked(i32);

impl Locked {
    fn new(f: &std::fs::File) -> std::io::Result<Locked> {
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Locked(f.as_raw_fd()))
    }
}

impl Drop for Locked {
    fn drop(&mut self) {
        // SAFETY: as above; the descriptor is still open.
        unsafe { libc::flock(self.0, libc::LOCK_UN) };
    }
}

/// Removes the log at `path` if it is still `end` bytes long (what was packed), under
/// its lock; whether it did.
pub fn remove_if_unchanged(path: &Path, end: u64) -> std::io::Result<bool> {
    let f = match crate::fsafe::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let _lock = Locked::new(&f)?;
    if f.metadata()?.len() != end {
        return Ok(false);
    }
    std::fs::remove_file(path)?;
    Ok(true)
}

/// Appends tiles' values to one scan's log.
pub struct Writer {
    path: PathBuf,
    file: std::fs::File,
    end: u64,
}

impl Writer {
    /// Opens (or starts) the log, cutting off a record a crash left unfinished.
    pub fn open(path: &Path) -> Result<Writer, String> {
        let io = |e: std::io::Error| format!("{}: {e}", path.display());
        loop {
            let file = crate::fsafe::open_for_update(path).map_err(io)?;
            let lock = Locked::new(&file).map_err(io)?;
            // Packing may have removed it between the open and the lock.
            if !is_at(&file, path).map_err(io)? {
                continue;
            }
            let (_, end) = read(path)?;
            let end = if end == 0 {
                file.write_all_at(MAGIC, 0).map_err(io)?;
                MAGIC.len() as u64
            } else {
                end
            };
            file.set_len(end).map_err(io)?;
            drop(lock);
            return Ok(Writer {
                path: path.to_path_buf(),
                file,
                end,
            });
        }
    }

    /// Appends tile `t`'s values (`second` empty without a second split), in one write;
    /// to a new log if packing removed this one.
    pub fn append(&mut self, t: u32, first: &[u8], second: &[u8]) -> Result<(), String> {
        let mut record = Vec::with_capacity(HEAD as usize + first.len() + second.len() + 8);
        record.extend_from_slice(&t.to_le_bytes());
        record.extend_from_slice(&(first.len() as u32).to_le_bytes());
        record.extend_from_slice(&(second.len() as u32).to_le_bytes());
        record.extend_from_slice(first);
        record.extend_from_slice(second);
        let sum = fnv1a(&[&record]);
        record.extend_from_slice(&sum.to_le_bytes());
        let path = self.path.clone();
        let io = |e: std::io::Error| format!("{}: {e}", path.display());
        loop {
            let lock = Locked::new(&self.file).map_err(io)?;
            if is_at(&self.file, &self.path).map_err(io)? {
                self.file.write_all_at(&record, self.end).map_err(io)?;
                self.end += record.len() as u64;
                return Ok(());
            }
            drop(lock);
            *self = Writer::open(&path)?;
        }
    }
}

/// Whether `file` is still the file at `path` (packing did not remove it).
fn is_at(file: &std::fs::File, path: &Path) -> std::io::Result<bool> {
    let mine = file.metadata()?;
    Ok(std::fs::symlink_metadata(path)
        .is_ok_and(|m| m.ino() == mine.ino() && m.dev() == mine.dev()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_the_last_per_tile_and_a_cut_one_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        crate::fsafe::add_root(dir.path()).unwrap();
        let path = dir.path().join(LOG);
        assert_eq!(read(&path).unwrap().0.len(), 0);
        let mut w = Writer::open(&path).unwrap();
        w.append(3, &[1; 16], &[]).unwrap();
        w.append(0, &[2; 32], &[5; 32]).unwrap();
        w.append(3, &[4; 16], &[]).unwrap();
        drop(w);
        let (entries, end) = read(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(end, bytes.len() as u64);
        let e3 = entries[&3];
        assert_eq!((e3.first, e3.second), (16, 0));
        assert_eq!(
            bytes[e3.at as usize..][..16],
            [4; 16],
            "the last record wins"
        );
        let e0 = entries[&0];
        assert_eq!(bytes[e0.at as usize + 32..][..32], [5; 32]);
        // A crash cut a record short: it is not read, and the next writer cuts it
        // off before it appends, so what follows it is read.
        let whole = bytes.len() as u64;
        let mut cut = bytes.clone();
        cut.extend_from_slice(&[7, 0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 9, 9]);
        std::fs::write(&path, &cut).unwrap();
        let (entries, end) = read(&path).unwrap();
        assert_eq!((entries.len(), end), (2, whole));
        let mut w = Writer::open(&path).unwrap();
        w.append(7, &[9; 16], &[]).unwrap();
        drop(w);
        let (entries, end) = read(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!((entries.len(), end), (3, bytes.len() as u64));
        assert_eq!(bytes[entries[&7].at as usize..][..16], [9; 16]);
        // A length damaged beyond the file ends the readable log there.
        let mut long = bytes.clone();
        long[MAGIC.len() + 4] = 0xff;
        long[MAGIC.len() + 7] = 0x7f;
        std::fs::write(&path, &long).unwrap();
        assert_eq!(read(&path).unwrap(), (HashMap::new(), MAGIC.len() as u64));
        // A flipped byte ends the readable log at its record: only tile 3's first
        // record is before it.
        let mut bytes = bytes;
        bytes[e0.at as usize + 1] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let (entries, _) = read(&path).unwrap();
        assert_eq!(entries.keys().copied().collect::<Vec<_>>(), vec![3]);
        assert_eq!(bytes[entries[&3].at as usize..][..16], [1; 16]);
    }

    /// Packing removes the log only if nothing was appended since it was read, and the
    /// writer whose log was removed starts a new one: no appended tile is lost.
    #[test]
    fn packing_removes_only_what_it_read_and_the_writer_starts_anew() {
        let dir = tempfile::tempdir().unwrap();
        crate::fsafe::add_root(dir.path()).unwrap();
        let path = dir.path().join(LOG);
        let mut w = Writer::open(&path).unwrap();
        w.append(1, &[1; 16], &[]).unwrap();
        let (_, end) = read(&path).unwrap();
        w.append(2, &[2; 16], &[]).unwrap();
        assert!(!remove_if_unchanged(&path, end).unwrap());
        let (entries, end) = read(&path).unwrap();
        assert_eq!(entries.len(), 2);
        assert!(remove_if_unchanged(&path, end).unwrap());
        assert!(!path.exists());
        w.append(3, &[3; 16], &[]).unwrap();
        let (entries, _) = read(&path).unwrap();
        assert_eq!(entries.keys().copied().collect::<Vec<_>>(), vec![3]);
        assert!(!remove_if_unchanged(&dir.path().join("none"), 8).unwrap());
    }

    #[test]
    fn only_a_tiles_values_alone_go_to_the_log() {
        let v = [0u8; 16];
        assert_eq!(
            tile_values(&[(TILE_FILE, &v)]),
            Some((v.as_slice(), [].as_slice()))
        );
        assert!(tile_values(&[(TILE_FILE, &v), (SECOND_TILE_FILE, &v)]).is_some());
        assert!(tile_values(&[(TILE_FILE, &v), ("curve.json", &v)]).is_none());
        assert!(tile_values(&[(SECOND_TILE_FILE, &v)]).is_none());
        assert!(tile_values(&[("curvature.json", &v)]).is_none());
    }
}
