//! A PBT trial's folder, seeded from the trial it starts from (`pbt_parent`): the
//! parent's files (its checkpoint) are copied in before the program's first attempt, so
//! that `RIDGELINE_TRIAL_DIR` then holds them, built-in trials and command trials alike.
//!
//! The copy is complete or absent: files are written and synced, then the marker
//! `.ridgeline-seeded` is written (atomically, by rename). An attempt that finds the
//! marker does not copy again (the program may have moved on from the copy); one that
//! does not (an earlier attempt died mid-copy) copies everything again. Ridgeline's own
//! files of the parent (its lock, report ledger and report files) are not copied, nor
//! is anything but plain files and folders (a link is copied as the link).

use std::io;
use std::path::Path;

/// The marker of a complete copy, holding the parent's trial number.
const MARKER: &str = ".ridgeline-seeded";

/// Seeds `dir` from `parent` unless an earlier attempt did. Returns whether it copied.
pub(super) fn seed(parent: &Path, dir: &Path, parent_trial: u32) -> io::Result<bool> {
    if dir.join(MARKER).exists() {
        return Ok(false);
    }
    if !parent.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "the folder of trial {parent_trial} ({}) is not on this worker host: PBT copies a member's checkpoint between trials, which needs every worker's --trial-root on one file system",
                parent.display()
            ),
        ));
    }
    copy(parent, dir)?;
    let tmp = dir.join(format!("{MARKER}.tmp"));
    std::fs::write(&tmp, parent_trial.to_string())?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, dir.join(MARKER))?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(true)
}

fn copy(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with(".ridgeline-") {
            continue;
        }
        let (src, dst) = (entry.path(), to.join(&name));
        let kind = entry.file_type()?;
        // Whatever stands at the destination as a link (left by a copy cut short) is
        // removed, never written through: a copy stays inside the trial's folder.
        if std::fs::symlink_metadata(&dst).is_ok_and(|m| m.file_type().is_symlink()) {
            std::fs::remove_file(&dst)?;
        }
        if kind.is_dir() {
            copy(&src, &dst)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dst)?;
        } else if kind.is_file() {
            std::fs::copy(&src, &dst)?;
            std::fs::File::open(&dst)?.sync_all()?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_is_complete_once_and_leaves_ridgeline_files_behind() {
        let root = tempfile::tempdir().unwrap();
        let (p, d) = (root.path().join("p"), root.path().join("d"));
        std::fs::create_dir_all(p.join("sub")).unwrap();
        std::fs::write(p.join("ckpt.bin"), b"weights").unwrap();
        std::fs::write(p.join("sub/opt.bin"), b"moments").unwrap();
        std::fs::create_dir_all(p.join("more")).unwrap();
        std::fs::write(p.join("more/x"), b"x").unwrap();
        std::fs::write(p.join(".ridgeline-reports.jsonl"), b"{}").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", p.join("link")).unwrap();
        std::fs::create_dir_all(&d).unwrap();
        // A half-done copy of an earlier attempt (no marker) is overwritten, and links
        // standing where files and folders go are replaced, not written through.
        std::fs::write(d.join("ckpt.bin"), b"wei").unwrap();
        let outside = root.path().join("outside");
        std::fs::create_dir_all(outside.join("dir")).unwrap();
        std::fs::write(outside.join("victim"), b"keep").unwrap();
        std::fs::create_dir_all(d.join("sub")).unwrap();
        std::os::unix::fs::symlink(outside.join("victim"), d.join("sub/opt.bin")).unwrap();
        std::os::unix::fs::symlink(outside.join("victim"), d.join("link")).unwrap();
        std::os::unix::fs::symlink(outside.join("dir"), d.join("more")).unwrap();
        assert!(seed(&p, &d, 7).unwrap());
        assert_eq!(std::fs::read(d.join("ckpt.bin")).unwrap(), b"weights");
        assert_eq!(std::fs::read(d.join("sub/opt.bin")).unwrap(), b"moments");
        assert!(!d.join(".ridgeline-reports.jsonl").exists());
        assert_eq!(
            std::fs::read_link(d.join("link")).unwrap(),
            Path::new("/etc/passwd")
        );
        assert_eq!(std::fs::read_to_string(d.join(MARKER)).unwrap(), "7");
        assert_eq!(std::fs::read(outside.join("victim")).unwrap(), b"keep");
        assert!(
            !outside.join("dir/x").exists(),
            "a folder link is not written through"
        );
        assert_eq!(std::fs::read(d.join("more/x")).unwrap(), b"x");
        assert!(
            !std::fs::symlink_metadata(d.join("sub/opt.bin"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        // The program moves on; a later attempt does not copy over its work.
        std::fs::write(d.join("ckpt.bin"), b"trained further").unwrap();
        assert!(!seed(&p, &d, 7).unwrap());
        assert_eq!(
            std::fs::read(d.join("ckpt.bin")).unwrap(),
            b"trained further"
        );
        // A parent that is not here is named.
        let e = seed(&root.path().join("gone"), &root.path().join("e"), 3).unwrap_err();
        assert!(e.to_string().contains("trial 3") && e.to_string().contains("one file system"));
    }
}
