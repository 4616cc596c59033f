//! A surface in the files other tools read: HDF5 in the loss-landscape reference's
//! layout (`plot_surface.py`), and ParaView's VTK XML PolyData as its `h52vtp.py`
//! writes it.

use std::fmt::Write as _;
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
    let quads: Vec<[usize; 4]> = (0..ny - 1)
        .flat_map(|j| (0..nx - 1).map(move |i| j * nx + i))
        .map(|k| [k, k + 1, k + nx + 1, k + nx])
        .collect();
    let avg: Vec<f64> = quads
        .iter()
        .map(|q| q.iter().map(|&k| z[k]).sum::<f64>() / 4.0)
        .collect();
    let range = |v: &[f64]| {
        v.iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
                (a.min(*x), b.max(*x))
            })
    };
    let array = |out: &mut String,
                 ty: &str,
                 name: &str,
                 comps: usize,
                 v: &[String],
                 r: (f64, f64)| {
        let _ = writeln!(
            out,
            "        <DataArray type=\"{ty}\" Name=\"{name}\" NumberOfComponents=\"{comps}\" format=\"ascii\" RangeMin=\"{}\" RangeMax=\"{}\">",
            r.0, r.1
        );
        for chunk in v.chunks(6) {
            let _ = writeln!(out, "          {}", chunk.join(" "));
        }
        out.push_str("        </DataArray>\n");
    };
    let nums = |v: &[f64]| v.iter().map(|x| format!("{x}")).collect::<Vec<_>>();
    let mut out = String::new();
    out.push_str("<?xml version=\"1.0\"?>\n<VTKFile type=\"PolyData\" version=\"1.0\" byte_order=\"LittleEndian\" header_type=\"UInt64\">\n  <PolyData>\n");
    let _ = writeln!(
        out,
        "    <Piece NumberOfPoints=\"{}\" NumberOfVerts=\"0\" NumberOfLines=\"0\" NumberOfStrips=\"0\" NumberOfPolys=\"{}\">",
        nx * ny,
        quads.len()
    );
    out.push_str("      <PointData Scalars=\"zvalue\">\n");
    array(&mut out, "Float64", "zvalue", 1, &nums(&z), range(&z));
    let raw: Vec<f64> = loss.to_vec();
    array(&mut out, "Float64", "loss", 1, &nums(&raw), range(&raw));
    out.push_str("      </PointData>\n      <CellData Scalars=\"averaged zvalue\">\n");
    array(
        &mut out,
        "Float64",
        "averaged zvalue",
        1,
        &nums(&avg),
        range(&avg),
    );
    out.push_str("      </CellData>\n      <Points>\n");
    let pts: Vec<String> = (0..nx * ny)
        .map(|k| format!("{} {} {}", xs[k % nx], ys[k / nx], z[k]))
        .collect();
    let all: Vec<f64> = xs.iter().chain(ys).chain(&z).copied().collect();
    array(&mut out, "Float64", "Points", 3, &pts, range(&all));
    out.push_str("      </Points>\n      <Polys>\n");
    let conn: Vec<String> = quads.iter().flatten().map(|k| k.to_string()).collect();
    let off: Vec<String> = (1..=quads.len()).map(|q| (4 * q).to_string()).collect();
    let n = (nx * ny) as f64;
    array(&mut out, "Int64", "connectivity", 1, &conn, (0.0, n - 1.0));
    array(
        &mut out,
        "Int64",
        "offsets",
        1,
        &off,
        (4.0, 4.0 * quads.len() as f64),
    );
    out.push_str("      </Polys>\n    </Piece>\n  </PolyData>\n</VTKFile>\n");
    crate::fsafe::write_atomic(path, out).map_err(|e| format!("{}: {e}", path.display()))
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
