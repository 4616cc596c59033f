//! A surface in the files other tools read: HDF5 in the loss-landscape reference's
//! layout (`plot_surface.py`), and ParaView's VTK XML PolyData as its `h52vtp.py`
//! writes it.

use std::io::Write;
use std::path::Path;

use hdf5_pure::{AttrValue, FileBuilder};

/// One split's values on the grid.
pub struct SplitValues<'a> {
    /// `train` or `test` (the reference's names for our `train` and `val` splits).
    pub name: &'a str,
    /// Loss in our grid order: row-major `[ny, nx]` (row `i` is `y[i]`).
    pub loss: &'a [f64],
    /// Accuracy in [0, 1], same order (NaN for regression).
    pub acc: &'a [f64],
}

/// What a surface file holds.
pub struct Surface<'a> {
    /// x values.
    pub xs: &'a [f64],
    /// y values (2-D scans).
    pub ys: Option<&'a [f64]>,
    /// The splits evaluated: one, or train and test (`split = "both"`).
    pub splits: &'a [SplitValues<'a>],
}

/// `surface.h5`: `xcoordinates`, `ycoordinates` (2-D), `{split}_loss` and `{split}_acc`
/// for each split, as the reference writes them. Its arrays have shape
/// `(len(x), len(y))` but are filled in `meshgrid(x, y)` order (its `get_job_indices`),
/// which for a non-square grid means reshaping to `(len(y), len(x))` to index `[y, x]`;
/// our flat order is the same, so the data are stored as they are with the reference's
/// shape. Accuracy is in percent, as the reference's `eval_loss` returns it.
pub fn write_h5(path: &Path, s: &Surface<'_>) -> Result<(), String> {
    let shape: Vec<u64> = match s.ys {
        Some(ys) => vec![s.xs.len() as u64, ys.len() as u64],
        None => vec![s.xs.len() as u64],
    };
    let note = "reference layout (loss-landscape plot_surface.py): shape (len(x), len(y)), \
                values in meshgrid(x, y) order; reshape to (len(y), len(x)) to index [y, x]";
    let mut b = FileBuilder::new();
    b.create_dataset("xcoordinates")
        .with_f64_data(s.xs)
        .with_shape(&[s.xs.len() as u64]);
    if let Some(ys) = s.ys {
        b.create_dataset("ycoordinates")
            .with_f64_data(ys)
            .with_shape(&[ys.len() as u64]);
    }
    for split in s.splits {
        let percent: Vec<f64> = split.acc.iter().map(|a| a * 100.0).collect();
        b.create_dataset(&format!("{}_loss", split.name))
            .with_f64_data(split.loss)
            .with_shape(&shape)
            .set_attr("layout", AttrValue::String(note.into()));
        b.create_dataset(&format!("{}_acc", split.name))
            .with_f64_data(&percent)
            .with_shape(&shape)
            .set_attr("unit", AttrValue::String("percent".into()));
    }
    let bytes = b.finish().map_err(|e| format!("{}: {e}", path.display()))?;
    crate::fsafe::write_atomic(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// How the height of the ParaView surface is drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Height {
    /// The loss.
    Linear,
    /// `ln(loss + 0.1)`, as `h52vtp.py --log`.
    Log,
}

/// `surface.vtp`: the grid as quads with the height as `zvalue` (and as the points' z),
/// the quads' mean height as `averaged zvalue`, and the raw loss as `loss` (h52vtp.py's
/// arrays, plus the last). Values above `zmax` (when given) are clipped first, as
/// h52vtp's `--zmax`. Non-finite losses are written as the largest finite one.
///
/// Streamed: the text is ~150 bytes a point, so nothing but the heights is held in
/// memory (a 10^6-point surface once took 600 MB as strings).
pub fn write_vtp(
    path: &Path,
    xs: &[f64],
    ys: &[f64],
    loss: &[f64],
    height: Height,
    zmax: Option<f64>,
) -> Result<(), String> {
    let (nx, ny) = (xs.len(), ys.len());
    if nx < 2 || ny < 2 || loss.len() != nx * ny {
        return Err(format!("a {nx} x {ny} grid with {} values", loss.len()));
    }
    let top = loss
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(f64::MIN, f64::max);
    let z: Vec<f64> = loss
        .iter()
        .map(|&v| {
            let v = if v.is_finite() { v } else { top };
            let v = zmax.map_or(v, |m| v.min(m));
            match height {
                Height::Linear => v,
                Height::Log => (v + 0.1).ln(),
            }
        })
        .collect();
    let quads = (nx - 1) * (ny - 1);
    // The first corner of quad q; its corners are k, k + 1, k + nx + 1, k + nx.
    let corner = |q: usize| (q / (nx - 1)) * nx + q % (nx - 1);
    let avg = |q: usize| {
        let k = corner(q);
        (z[k] + z[k + 1] + z[k + nx + 1] + z[k + nx]) / 4.0
    };
    let range = |v: &mut dyn Iterator<Item = f64>| {
        v.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
            (a.min(x), b.max(x))
        })
    };
    let io = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut out = std::io::BufWriter::new(crate::fsafe::create(path).map_err(io)?);
    write_vtp_text(&mut out, nx, ny, quads, |out| {
        let n = (nx * ny) as f64;
        array(
            out,
            "Float64",
            "zvalue",
            1,
            range(&mut z.iter().copied()),
            &mut z.iter().map(|v| format!("{v}")),
        )?;
        array(
            out,
            "Float64",
            "loss",
            1,
            range(&mut loss.iter().copied()),
            &mut loss.iter().map(|v| format!("{v}")),
        )?;
        out.write_all(b"      </PointData>\n      <CellData Scalars=\"averaged zvalue\">\n")?;
        array(
            out,
            "Float64",
            "averaged zvalue",
            1,
            range(&mut (0..quads).map(avg)),
            &mut (0..quads).map(|q| format!("{}", avg(q))),
        )?;
        out.write_all(b"      </CellData>\n      <Points>\n")?;
        let all = range(&mut xs.iter().chain(ys).chain(&z).copied());
        array(
            out,
            "Float64",
            "Points",
            3,
            all,
            &mut (0..nx * ny).map(|k| format!("{} {} {}", xs[k % nx], ys[k / nx], z[k])),
        )?;
        out.write_all(b"      </Points>\n      <Polys>\n")?;
        array(
            out,
            "Int64",
            "connectivity",
            1,
            (0.0, n - 1.0),
            &mut (0..quads)
                .flat_map(|q| {
                    let k = corner(q);
                    [k, k + 1, k + nx + 1, k + nx]
                })
                .map(|k| k.to_string()),
        )?;
        array(
            out,
            "Int64",
            "offsets",
            1,
            (4.0, 4.0 * quads as f64),
            &mut (1..=quads).map(|q| (4 * q).to_string()),
        )
    })
    .and_then(|()| out.flush())
    .map_err(io)
}

/// The VTK XML frame around the arrays that `body` writes.
fn write_vtp_text<W: Write>(
    out: &mut W,
    nx: usize,
    ny: usize,
    quads: usize,
    body: impl FnOnce(&mut W) -> std::io::Result<()>,
) -> std::io::Result<()> {
    out.write_all(b"<?xml version=\"1.0\"?>\n<VTKFile type=\"PolyData\" version=\"1.0\" byte_order=\"LittleEndian\" header_type=\"UInt64\">\n  <PolyData>\n")?;
    writeln!(
        out,
        "    <Piece NumberOfPoints=\"{}\" NumberOfVerts=\"0\" NumberOfLines=\"0\" NumberOfStrips=\"0\" NumberOfPolys=\"{quads}\">",
        nx * ny,
    )?;
    out.write_all(b"      <PointData Scalars=\"zvalue\">\n")?;
    body(out)?;
    out.write_all(b"      </Polys>\n    </Piece>\n  </PolyData>\n</VTKFile>\n")
}

/// One `DataArray`, six values to a line, as h52vtp writes it.
fn array(
    out: &mut impl Write,
    ty: &str,
    name: &str,
    comps: usize,
    (lo, hi): (f64, f64),
    values: &mut dyn Iterator<Item = String>,
) -> std::io::Result<()> {
    writeln!(
        out,
        "        <DataArray type=\"{ty}\" Name=\"{name}\" NumberOfComponents=\"{comps}\" format=\"ascii\" RangeMin=\"{lo}\" RangeMax=\"{hi}\">"
    )?;
    let mut in_line = 0;
    for v in values {
        out.write_all(if in_line == 0 { b"          " } else { b" " })?;
        out.write_all(v.as_bytes())?;
        in_line += 1;
        if in_line == 6 {
            out.write_all(b"\n")?;
            in_line = 0;
        }
    }
    if in_line > 0 {
        out.write_all(b"\n")?;
    }
    out.write_all(b"        </DataArray>\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--log` and `--zmax` as h52vtp: clip, then ln(z + 0.1); a NaN point takes the
    /// largest finite loss so that ParaView gets a closed surface.
    #[test]
    fn vtp_heights_follow_h52vtp() {
        let dir = tempfile::tempdir().unwrap();
        crate::fsafe::add_root(dir.path()).unwrap();
        let p = dir.path().join("s.vtp");
        let loss = [0.5, 2.0, f64::NAN, 9.0];
        write_vtp(&p, &[0.0, 1.0], &[0.0, 1.0], &loss, Height::Log, Some(5.0)).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        let z: Vec<f64> = text
            .split("Name=\"zvalue\"")
            .nth(1)
            .unwrap()
            .split('>')
            .nth(1)
            .unwrap()
            .split('<')
            .next()
            .unwrap()
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect();
        let want: Vec<f64> = [0.5f64, 2.0, 5.0, 5.0]
            .iter()
            .map(|v| (v + 0.1).ln())
            .collect();
        assert_eq!(z, want);
        assert!(write_vtp(&p, &[0.0], &[0.0, 1.0], &loss[..2], Height::Linear, None).is_err());
    }
}
