//! The coordinator's side of landscape scans: preparing a sweep's files (checkpoint and
//! directions) at submission, and assembling the tiles into the surface at the end.

use std::path::Path;

use ridgeline_common::landscape::{HostTensor, LandscapeSpec, norms_and_cosine, random_direction};
use ridgeline_common::spec::SweepSpec;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

/// Files a scan's workers fetch, by name.
pub const MODEL_JSON: &str = "model.json";
/// The scanned weights.
pub const MODEL_WEIGHTS: &str = "model.safetensors";
/// The directions, `x.<name>` and `y.<name>` for every parameter tensor.
pub const DIRECTIONS: &str = "directions.safetensors";
/// Name of a scan tile's values inside its unit folder.
pub const TILE_FILE: &str = "tile.f64";

/// The parameter tensors of an MLP checkpoint, in layer order (`layers.{i}.weight`,
/// `layers.{i}.bias`); other tensors (input normalisation) are not parameters.
pub fn parameters(weights: &[u8]) -> Result<Vec<HostTensor>, String> {
    let st = SafeTensors::deserialize(weights).map_err(|e| format!("{MODEL_WEIGHTS}: {e}"))?;
    let mut out = Vec::new();
    for i in 0.. {
        let mut found = false;
        for part in ["weight", "bias"] {
            let name = format!("layers.{i}.{part}");
            let Ok(view) = st.tensor(&name) else { continue };
            found = true;
            if view.dtype() != Dtype::F32 {
                return Err(format!(
                    "{MODEL_WEIGHTS}: {name}: expected f32, found {:?}",
                    view.dtype()
                ));
            }
            let data = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            out.push(HostTensor {
                name,
                shape: view.shape().to_vec(),
                data,
            });
        }
        if !found {
            break;
        }
    }
    if out.is_empty() {
        return Err(format!(
            "{MODEL_WEIGHTS}: no tensors named layers.0.weight, layers.0.bias, ..."
        ));
    }
    Ok(out)
}

fn le_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Draws the scan's directions from the checkpoint: `directions.safetensors` and a
/// `directions.json` with their norms and cosine.
pub fn prepare(spec: &SweepSpec, weights: &[u8]) -> Result<Vec<(String, Vec<u8>)>, String> {
    let l: &LandscapeSpec = spec.landscape.as_ref().ok_or("not a landscape spec")?;
    let params = parameters(weights)?;
    let d = &l.directions;
    let x = random_direction(&params, d.seed, 0, d.normalization, d.ignore);
    let y =
        l.y.as_ref()
            .map(|_| random_direction(&params, d.seed, 1, d.normalization, d.ignore));
    let mut named: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (prefix, dir) in std::iter::once(("x", &x)).chain(y.as_ref().map(|y| ("y", y))) {
        for t in dir {
            named.push((
                format!("{prefix}.{}", t.name),
                t.shape.clone(),
                le_bytes(&t.data),
            ));
        }
    }
    let views: Vec<(String, TensorView<'_>)> = named
        .iter()
        .map(|(n, s, b)| TensorView::new(Dtype::F32, s.clone(), b).map(|v| (n.clone(), v)))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let bytes = safetensors::serialize(views, None).map_err(|e| e.to_string())?;
    let (nx, ny, cos) = match &y {
        Some(y) => norms_and_cosine(&x, y),
        None => (norms_and_cosine(&x, &x).0, 0.0, 0.0),
    };
    let (nw, _, _) = norms_and_cosine(&params, &params);
    let info = serde_json::json!({
        "weights_norm": nw,
        "x_norm": nx,
        "y_norm": if y.is_some() { Some(ny) } else { None },
        "cosine_xy": if y.is_some() { Some(cos) } else { None },
        "parameters": params.iter().map(|t| t.data.len()).sum::<usize>(),
        "seed": d.seed,
        "normalization": d.normalization,
        "ignore": d.ignore,
    });
    Ok(vec![
        (DIRECTIONS.into(), bytes),
        (
            "directions.json".into(),
            serde_json::to_vec_pretty(&info).expect("json"),
        ),
    ])
}

/// Writes a 2-D (or 1-D) float64 array in NumPy's `.npy` format (version 1.0).
pub fn write_npy(path: &Path, shape: &[usize], data: &[f64]) -> std::io::Result<()> {
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
    let mut out = Vec::with_capacity(10 + header.len() + data.len() * 8);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, out)
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

/// Assembles the tiles of a finished scan under `sweep_dir`: `surface.npy` (loss,
/// `[ny, nx]`, row `i` is `y_i`), `accuracy.npy`, `x.npy`, `y.npy`, `surface.csv`
/// and `meta.json`. Missing tiles (failed units) are NaN.
pub fn assemble(
    sweep_dir: &Path,
    sweep_id: &str,
    spec: &SweepSpec,
    tile_dir: impl Fn(u32) -> std::path::PathBuf,
) -> Result<(), String> {
    let l = spec.landscape.as_ref().ok_or("not a landscape spec")?;
    let (nx, ny) = l.shape();
    let mut loss = vec![f64::NAN; nx * ny];
    let mut acc = vec![f64::NAN; nx * ny];
    let mut missing = 0;
    for t in 0..l.tiles() {
        let range = l.tile_range(t);
        match std::fs::read(tile_dir(t as u32).join(TILE_FILE)) {
            Ok(b) => {
                let (lv, av) = read_tile(&b, range.len())?;
                loss[range.clone()].copy_from_slice(&lv);
                acc[range].copy_from_slice(&av);
            }
            Err(_) => missing += 1,
        }
    }
    let io = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
    let shape: Vec<usize> = if l.y.is_some() {
        vec![ny, nx]
    } else {
        vec![nx]
    };
    for (name, data, shape) in [
        ("surface.npy", &loss, shape.clone()),
        ("accuracy.npy", &acc, shape.clone()),
        ("x.npy", &l.x.values(), vec![nx]),
    ] {
        let p = sweep_dir.join(name);
        write_npy(&p, &shape, data).map_err(|e| io(&p, e))?;
    }
    if let Some(y) = &l.y {
        let p = sweep_dir.join("y.npy");
        write_npy(&p, &[ny], &y.values()).map_err(|e| io(&p, e))?;
    }
    let mut csv = String::from("x,y,loss,accuracy\n");
    for k in 0..nx * ny {
        let (a, b) = l.point(k);
        csv += &format!("{a},{b},{},{}\n", loss[k], acc[k]);
    }
    let p = sweep_dir.join("surface.csv");
    std::fs::write(&p, csv).map_err(|e| io(&p, e))?;
    let finite: Vec<f64> = loss.iter().copied().filter(|v| v.is_finite()).collect();
    let directions: serde_json::Value = std::fs::read(sweep_dir.join("directions.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let meta = serde_json::json!({
        "sweep": sweep_id,
        "spec": spec,
        "shape": shape,
        "points": nx * ny,
        "tiles": l.tiles(),
        "missing_tiles": missing,
        "loss_min": finite.iter().copied().fold(f64::INFINITY, f64::min),
        "loss_max": finite.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        "nan_points": nx * ny - finite.len(),
        "directions": directions,
    });
    let p = sweep_dir.join("meta.json");
    std::fs::write(&p, serde_json::to_vec_pretty(&meta).expect("json")).map_err(|e| io(&p, e))?;
    let ys = l.y.as_ref().map(|y| y.values());
    crate::plot::plots(
        sweep_dir,
        &spec.name,
        &loss,
        &acc,
        &l.x.values(),
        ys.as_deref(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_header_is_aligned_and_parsable() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.npy");
        write_npy(&p, &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        let b = std::fs::read(&p).unwrap();
        assert_eq!(&b[..8], b"\x93NUMPY\x01\x00");
        let hl = u16::from_le_bytes([b[8], b[9]]) as usize;
        assert_eq!((10 + hl) % 64, 0);
        let header = std::str::from_utf8(&b[10..10 + hl]).unwrap();
        assert!(
            header.starts_with("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }"),
            "{header}"
        );
        assert!(header.ends_with('\n'));
        assert_eq!(
            f64::from_le_bytes(b[10 + hl + 8..10 + hl + 16].try_into().unwrap()),
            2.0
        );
        assert_eq!(b.len(), 10 + hl + 48);
    }
}
