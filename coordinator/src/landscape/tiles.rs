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

/// The tiles of a scan whose values are on disk, in grid order.
pub struct Tiles<'a, F: Fn(u32) -> PathBuf> {
    l: &'a LandscapeSpec,
    tiles: Vec<u32>,
    tile_dir: F,
    both: bool,
    /// Tiles of the grid without values: never computed, or their files are gone.
    pub missing: usize,
    /// Points with values.
    pub computed: usize,
}

impl<'a, F: Fn(u32) -> PathBuf> Tiles<'a, F> {
    /// The completed tiles `done` whose files are there (both files with
    /// `split = "both"`); a file of the wrong size is an error.
    pub fn open(l: &'a LandscapeSpec, done: &[u32], tile_dir: F) -> Result<Self, String> {
        let both = l.split.second().is_some();
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
            if present {
                kept.push(t);
                computed += n;
            }
        }
        Ok(Tiles {
            l,
            missing: l.tiles() - kept.len(),
            tiles: kept,
            tile_dir,
            both,
            computed,
        })
    }

    /// Calls `f` with every computed point, in grid order, reading one tile at a time.
    pub fn visit(&self, mut f: impl FnMut(Value) -> Result<(), String>) -> Result<(), String> {
        for &t in &self.tiles {
            let range = self.l.tile_range(t as usize);
            let read = |name: &str| -> Result<(Vec<f64>, Vec<f64>), String> {
                let p = (self.tile_dir)(t).join(name);
                let b = crate::fsafe::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
                read_tile(&b, range.len())
            };
            let (loss, acc) = read(TILE_FILE)?;
            let second = if self.both {
                Some(read(SECOND_TILE_FILE)?)
            } else {
                None
            };
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
}
