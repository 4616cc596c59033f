//! Command trials' logs: one file per attempt in the trial's folder, written at the
//! offsets the worker gives (so a chunk sent twice lands on itself), read back by
//! `GetTrialLog` from any offset.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use ridgeline_common::MAX_LOG_BYTES;
use ridgeline_common::ids::SweepId;

use super::trial_dir;
use crate::fsafe;

/// The most attempts a log file is made for: a guard against a worker naming any.
const MAX_ATTEMPT: u32 = 1000;

/// The log file of one attempt of a trial.
pub fn log_path(data_dir: &Path, sweep: &SweepId, trial: u32, attempt: u32) -> PathBuf {
    trial_dir(data_dir, sweep, trial).join(format!("attempt-{attempt}.log"))
}

/// Writes a chunk at its offset; what would pass [`MAX_LOG_BYTES`] is cut, with a note.
/// The file and its folders are opened through [`crate::fsafe`]: a log replaced by a
/// link is refused, never written through.
pub fn write_chunk(path: &Path, attempt: u32, offset: u64, data: &[u8]) -> Result<(), String> {
    if attempt == 0 || attempt > MAX_ATTEMPT || offset >= MAX_LOG_BYTES {
        return Ok(());
    }
    let keep = data.len().min((MAX_LOG_BYTES - offset) as usize);
    let f = fsafe::open_for_update(path).map_err(|e| e.to_string())?;
    f.write_all_at(&data[..keep], offset)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if keep < data.len() {
        let note = format!("\n[ridgeline: log cut at {MAX_LOG_BYTES} bytes]\n");
        f.write_all_at(note.as_bytes(), MAX_LOG_BYTES)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// Up to `max` bytes of a log from `offset`; a missing file reads as empty. A log that
/// is a link (or lies under one) is refused.
pub fn read(path: &Path, offset: u64, max: usize) -> std::io::Result<Vec<u8>> {
    let mut f = match fsafe::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e),
    };
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::new();
    f.take(max as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_land_at_their_offsets_and_repeat_harmlessly() {
        let dir = tempfile::tempdir().unwrap();
        fsafe::add_root(dir.path()).unwrap();
        let p = dir.path().join("a/attempt-1.log");
        write_chunk(&p, 1, 0, b"hello ").unwrap();
        write_chunk(&p, 1, 6, b"world\n").unwrap();
        // The same chunk again (its first reply was lost).
        write_chunk(&p, 1, 6, b"world\n").unwrap();
        assert_eq!(read(&p, 0, 100).unwrap(), b"hello world\n");
        assert_eq!(read(&p, 6, 3).unwrap(), b"wor");
        assert_eq!(read(&dir.path().join("none"), 0, 10).unwrap(), b"");
        // Attempt numbers no unit can have make no file.
        let q = dir.path().join("b.log");
        write_chunk(&q, 0, 0, b"x").unwrap();
        write_chunk(&q, MAX_ATTEMPT + 1, 0, b"x").unwrap();
        assert!(!q.exists());
    }
}
