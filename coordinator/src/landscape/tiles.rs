//! A scan's computed tiles, visited in grid order one tile at a time, and NumPy files
//! written as values stream: assembling a 10^6-point scan holds its dense arrays at
//! most, never a list of every point (which took the coordinator to 676 MiB).

use std::io::Write;
use std::path::{Path, PathBuf};

use ridgeline_common::landscape::LandscapeSpec;

use super::{SECOND_TILE_FILE, TILE_FILE};

/// A float64 `.npy` file (version 1.0) written as its values arrive.
pub struct NpyWriter {
    w: std::io::BufWriter<std::fs::File>,
    left: usize,
}

impl NpyWriter {
    /// Creates the file with its header; `shape`'s product of values must follow.
    pub fn create(path: &Path, shape: &[usize]) -> std::io::Result<NpyWriter> {
        let dims = match shape {
            [n] => format!("({n},)"),
            _ => format!(
                "({})",
                shape
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let mut header = format!("{{'descr': '<f8', 'fortran_order': False, 'shape': {dims}, }}");
        // Magic (6) + version (2) + length (2) + header + '\n' must be a multiple of 64.
        let pad = 64 - (10 + header.len() + 1) % 64;
        header.extend(std::iter::repeat_n(' ', pad % 64));
        header.push('\n');
        let mut w = std::io::BufWriter::new(crate::fsafe::create(path)?);
        w.write_all(b"\x93NUMPY\x01\x00")?;
        w.write_all(&(header.len() as u16).to_le_bytes())?;
        w.write_all(header.as_bytes())?;
        Ok(NpyWriter {
            w,
            left: shape.iter().product(),
        })
    }

    /// Appends values.
    pub fn push(&mut self, values: &[f64]) -> std::io::Result<()> {
        if values.len() > self.left {
            return Err(std::io::Error::other("more values than the shape holds"));
        }
        self.left -= values.len();
        for v in values {
            self.w.write_all(&v.to_le_bytes())?;
        }
        Ok(())
    }

    /// Flushes the file; every value of the shape must have been pushed.
    pub fn finish(mut self) -> std::io::Result<()> {
        if self.left != 0 {
            return Err(std::io::Error::other(format!(
                "{} values short of the shape",
                self.left
            )));
        }
        self.w.flush()
    }
}

/// Writes a 2-D (or 1-D) float64 array in NumPy's `.npy` format (version 1.0).
pub fn write_npy(path: &Path, shape: &[usize], data: &[f64]) -> std::io::Result<()> {
    let mut w = NpyWriter::create(path, shape)?;
    w.push(data)?;
    w.finish()
}

/// Reads a tile's values: losses then accuracies, f64 little-endian.
pub fn read_tile(bytes: &[u8], points: usize) -> Result<(Vec<f64>, Vec<f64>), String> {
    if bytes.len() != points * 16 {
        return Err(format!(
            "{TILE_FILE}: expected {} bytes for {points} points, found {}",
            points * 16,
            bytes.len()
        ));
    }
    let v: Vec<f64> = bytes
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
        .collect();
    Ok((v[..points].to_vec(), v[points..].to_vec()))
}

/// A computed point: its index in the grid, loss and accuracy, and the same on the
/// second split (`split = "both"`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Value {
    pub k: usize,
    pub loss: f64,
    pub acc: f64,
    pub second: Option<(f64, f64)>,
}

/// The file an assembled scan's tile values are packed into, so that the sweep folder
/// does not keep a folder and a file per tile (a 10^6-point scan's 100,000 tile folders
/// took ~800 MB of a 4 KiB-block file system for 3 MB of values), and a later assembly
/// (after a resume, or when the surface files were lost) still has every value.
///
/// Layout: `RLTILES1`, the number of tiles `n` (u32 LE), flags (u32 LE; bit 0: each
/// tile has a second split's values), the `n` tile numbers ascending (u32 LE), then
/// each tile's `tile.f64` bytes followed, with the flag, by its `tile_val.f64` bytes.
pub const PACK: &str = "tile_values.bin";
const MAGIC: &[u8; 8] = b"RLTILES1";

/// Where a tile's values are.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Source {
    /// Its own files in its folder.
    Files,
    /// The log of a running scan ([`super::tile_log`]), from this byte.
    Log(u64),
    /// The pack, from this byte.
    Pack(u64),
}

/// The log and the pack, opened when first read.
#[derive(Default)]
struct Files {
    log: Option<std::fs::File>,
    pack: Option<std::fs::File>,
}

/// The tiles of a scan whose values are on disk, in grid order.
pub struct Tiles<'a, F: Fn(u32) -> PathBuf> {
    l: &'a LandscapeSpec,
    tiles: Vec<(u32, Source)>,
    tile_dir: F,
    both: bool,
    pack: PathBuf,
    log: PathBuf,
    /// How much of the log was read, if every tile in it is one of `tiles` (a log
    /// with others, a resumed scan's, is not removed when packing).
    log_end: Option<u64>,
    /// Tiles of the grid without values: never computed, or their files are gone.
    pub missing: usize,
    /// Points with values.
    pub computed: usize,
}

/// A pack's tiles and where each one's values start.
fn read_pack(path: &Path, l: &LandscapeSpec, both: bool) -> Result<Vec<(u32, u64)>, String> {
    use std::io::Read;
    let bad = |why: String| format!("{}: {why}", path.display());
    let mut f = match crate::fsafe::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(bad(e.to_string())),
    };
    let len = f.metadata().map_err(|e| bad(e.to_string()))?.len();
    let mut head = [0u8; 16];
    f.read_exact(&mut head).map_err(|e| bad(e.to_string()))?;
    let word = |b: &[u8]| u32::from_le_bytes(b.try_into().expect("4 bytes"));
    let (n, flags) = (word(&head[8..12]) as usize, word(&head[12..16]));
    if &head[..8] != MAGIC || (flags & 1 == 1) != both || n > l.tiles() {
        return Err(bad("not this scan's tile values".into()));
    }
    let mut index = vec![0u8; 4 * n];
    f.read_exact(&mut index).map_err(|e| bad(e.to_string()))?;
    let mut at = (16 + 4 * n) as u64;
    let mut out = Vec::with_capacity(n);
    let per_point = if both { 32 } else { 16 };
    for b in index.chunks_exact(4) {
        let t = word(b);
        if (t as usize) >= l.tiles() || out.last().is_some_and(|(p, _)| *p >= t) {
            return Err(bad(format!("tile {t} out of order or off the grid")));
        }
        out.push((t, at));
        at += (l.tile_range(t as usize).len() * per_point) as u64;
    }
    if at != len {
        return Err(bad(format!("expected {at} bytes, found {len}")));
    }
    Ok(out)
}

impl<'a, F: Fn(u32) -> PathBuf> Tiles<'a, F> {
    /// The completed tiles `done` whose values are on disk: in their own files (both
    /// files with `split = "both"`), or else in the log of tiles appended as they
    /// arrived, or else in the pack under `sweep_dir`. A file or a logged tile of the
    /// wrong size, or a damaged pack, is an error.
    pub fn open(
        sweep_dir: &Path,
        l: &'a LandscapeSpec,
        done: &[u32],
        tile_dir: F,
    ) -> Result<Self, String> {
        let both = l.split.second().is_some();
        let pack = sweep_dir.join(PACK);
        let packed: std::collections::HashMap<u32, u64> =
            read_pack(&pack, l, both)?.into_iter().collect();
        let log = sweep_dir.join(super::tile_log::LOG);
        let (logged, log_end) = super::tile_log::read(&log)?;
        let mut tiles: Vec<u32> = done
            .iter()
            .copied()
            .filter(|t| (*t as usize) < l.tiles())
            .collect();
        tiles.sort_unstable();
        tiles.dedup();
        let mut kept = Vec::with_capacity(tiles.len());
        let mut computed = 0;
        for t in tiles {
            let n = l.tile_range(t as usize).len();
            let names: &[&str] = if both {
                &[TILE_FILE, SECOND_TILE_FILE]
            } else {
                &[TILE_FILE]
            };
            let mut present = true;
            for name in names {
                let p = tile_dir(t).join(name);
                match std::fs::symlink_metadata(&p) {
                    Ok(m) if m.is_file() && m.len() == (n * 16) as u64 => {}
                    Ok(m) if m.is_file() => {
                        return Err(format!(
                            "{}: expected {} bytes for {n} points, found {}",
                            p.display(),
                            n * 16,
                            m.len()
                        ));
                    }
                    _ => present = false,
                }
            }
            let source = match (present, logged.get(&t), packed.get(&t)) {
                (true, _, _) => Source::Files,
                (false, Some(e), _) => {
                    let want = (n * 16) as u32;
                    if e.first != want || e.second != if both { want } else { 0 } {
                        return Err(format!(
                            "{}: tile {t} has {} + {} bytes, not {want} for each of its {n} points' splits",
                            log.display(),
                            e.first,
                            e.second
                        ));
                    }
                    Source::Log(e.at)
                }
                (false, None, Some(at)) => Source::Pack(*at),
                (false, None, None) => continue,
            };
            kept.push((t, source));
            computed += n;
        }
        let log_end = logged
            .keys()
            .all(|t| kept.binary_search_by_key(t, |(k, _)| *k).is_ok())
            .then_some(log_end);
        Ok(Tiles {
            l,
            missing: l.tiles() - kept.len(),
            tiles: kept,
            tile_dir,
            both,
            pack,
            log,
            log_end,
            computed,
        })
    }

    /// Tile `t`'s bytes: its `tile.f64`, and its `tile_val.f64` with `split = "both"`.
    fn raw(
        &self,
        t: u32,
        source: Source,
        files: &mut Files,
    ) -> Result<(Vec<u8>, Option<Vec<u8>>), String> {
        let n = self.l.tile_range(t as usize).len() * 16;
        match source {
            Source::Files => {
                let read = |name: &str| {
                    let p = (self.tile_dir)(t).join(name);
                    crate::fsafe::read(&p).map_err(|e| format!("{}: {e}", p.display()))
                };
                let second = if self.both {
                    Some(read(SECOND_TILE_FILE)?)
                } else {
                    None
                };
                Ok((read(TILE_FILE)?, second))
            }
            Source::Log(at) | Source::Pack(at) => {
                use std::os::unix::fs::FileExt;
                let (path, f) = match source {
                    Source::Log(_) => (&self.log, &mut files.log),
                    _ => (&self.pack, &mut files.pack),
                };
                let io = |e: std::io::Error| format!("{}: {e}", path.display());
                if f.is_none() {
                    *f = Some(crate::fsafe::open(path).map_err(io)?);
                }
                let f = f.as_ref().expect("opened");
                let mut b = vec![0u8; if self.both { 2 * n } else { n }];
                f.read_exact_at(&mut b, at).map_err(io)?;
                let second = self.both.then(|| b.split_off(n));
                Ok((b, second))
            }
        }
    }

    /// Calls `f` with every computed point, in grid order, reading one tile at a time.
    pub fn visit(&self, mut f: impl FnMut(Value) -> Result<(), String>) -> Result<(), String> {
        let mut files = Files::default();
        for &(t, source) in &self.tiles {
            let range = self.l.tile_range(t as usize);
            let (first, second) = self.raw(t, source, &mut files)?;
            let (loss, acc) = read_tile(&first, range.len())?;
            let second = second.map(|b| read_tile(&b, range.len())).transpose()?;
            for (i, k) in range.clone().enumerate() {
                f(Value {
                    k,
                    loss: loss[i],
                    acc: acc[i],
                    second: second.as_ref().map(|(l2, a2)| (l2[i], a2[i])),
                })?;
            }
        }
        Ok(())
    }

    /// Packs every tile's values into [`PACK`] (written aside, synced, then renamed
    /// over the old one), then removes the log and the tiles' own files, and their
    /// folders when nothing else is in them. Returns how many tiles' files were removed.
    pub fn compact(&self) -> Result<usize, String> {
        let tmp = self.pack.with_file_name(format!(".{PACK}.tmp"));
        let io = |e: std::io::Error| format!("{}: {e}", tmp.display());
        let file = crate::fsafe::create(&tmp).map_err(io)?;
        let mut w = std::io::BufWriter::new(file);
        w.write_all(MAGIC).map_err(io)?;
        w.write_all(&(self.tiles.len() as u32).to_le_bytes())
            .map_err(io)?;
        w.write_all(&u32::from(self.both).to_le_bytes())
            .map_err(io)?;
        for (t, _) in &self.tiles {
            w.write_all(&t.to_le_bytes()).map_err(io)?;
        }
        let mut files = Files::default();
        for &(t, source) in &self.tiles {
            let (first, second) = self.raw(t, source, &mut files)?;
            w.write_all(&first).map_err(io)?;
            if let Some(b) = second {
                w.write_all(&b).map_err(io)?;
            }
        }
        let file = w.into_inner().map_err(|e| io(e.into_error()))?;
        // The tiles' files go only once their values are durably elsewhere.
        file.sync_all().map_err(io)?;
        drop(files);
        std::fs::rename(&tmp, &self.pack).map_err(io)?;
        // Everything the log held is in the pack now, unless it holds tiles of a
        // resumed scan, or they were appended since it was read.
        if let Some(end) = self.log_end
            && let Err(e) = super::tile_log::remove_if_unchanged(&self.log, end)
        {
            return Err(format!("{}: {e}", self.log.display()));
        }
        let mut removed = 0;
        for &(t, source) in &self.tiles {
            if source != Source::Files {
                continue;
            }
            let dir = (self.tile_dir)(t);
            for name in [TILE_FILE, SECOND_TILE_FILE] {
                let _ = std::fs::remove_file(dir.join(name));
            }
            removed += 1;
            // Fails, as it should, when the unit left other files (logs).
            let _ = std::fs::remove_dir(&dir);
        }
        Ok(removed)
    }
}
