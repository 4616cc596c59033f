//! The coordinator's side of landscape scans: preparing a sweep's files (checkpoint and
//! directions) at submission, and assembling the tiles into the surface at the end.

use std::collections::HashMap;
use std::path::Path;

use ridgeline_common::landscape::{
    Axis, DirType, DirectionKind, HostTensor, LandscapeSpec, ParamKind, flat_order,
    norms_and_cosine, param_kind, random_direction,
};
use ridgeline_common::spec::SweepSpec;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

mod assemble;

pub use assemble::{assemble, barrier, read_tile, write_npy};

/// Files a scan's workers fetch, by name.
pub const MODEL_JSON: &str = "model.json";
/// The scanned weights.
pub const MODEL_WEIGHTS: &str = "model.safetensors";
/// The directions, `x.<name>` and `y.<name>` for every parameter tensor.
pub const DIRECTIONS: &str = "directions.safetensors";
/// Name of a scan tile's values inside its unit folder.
pub const TILE_FILE: &str = "tile.f64";

/// The tensors of a Ridgeline checkpoint that directions cover, in file order: every
/// f32 tensor but the input normalisation (`input.*`) stored with MLPs.
pub fn parameters(weights: &[u8]) -> Result<Vec<HostTensor>, String> {
    let st = SafeTensors::deserialize(weights).map_err(|e| format!("{MODEL_WEIGHTS}: {e}"))?;
    let mut views: Vec<(String, TensorView<'_>)> = st
        .tensors()
        .into_iter()
        .filter(|(n, _)| !n.starts_with("input."))
        .collect();
    views.sort_by_key(|v| flat_order(&v.0));
    let mut out = Vec::new();
    for (name, view) in views {
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
    if out.is_empty() {
        return Err(format!("{MODEL_WEIGHTS}: no parameter tensors"));
    }
    Ok(out)
}

/// One f32 tensor of a safetensors file.
fn read_f32(st: &SafeTensors<'_>, name: &str) -> Result<HostTensor, String> {
    let view = st
        .tensor(name)
        .map_err(|_| format!("missing tensor {name}"))?;
    if view.dtype() != Dtype::F32 {
        return Err(format!("{name}: expected f32, found {:?}", view.dtype()));
    }
    let data = view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok(HostTensor {
        name: name.to_owned(),
        shape: view.shape().to_vec(),
        data,
    })
}

fn le_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Which files of a sweep hold the scanned checkpoint and in what layout, for the
/// workers: `{"format": "ridgeline" | "hf" | "gguf", "files": [...]}`.
pub const MANIFEST: &str = "checkpoint.json";
/// A GGUF checkpoint's name in the sweep folder.
pub const GGUF: &str = "model.gguf";
/// A Hugging Face checkpoint's config.
pub const HF_CONFIG: &str = "config.json";
/// A sharded Hugging Face checkpoint's index.
pub const HF_INDEX: &str = "model.safetensors.index.json";

/// Whether a submitted file is part of the scanned checkpoint (kept for the workers).
pub fn is_checkpoint_file(name: &str) -> bool {
    name == MODEL_JSON
        || name == MODEL_WEIGHTS
        || name == GGUF
        || name == HF_CONFIG
        || name == HF_INDEX
        || (name.starts_with("model-") && name.ends_with(".safetensors"))
}

/// A checkpoint's layout from its file names: `"gguf"`, `"hf"` or `"ridgeline"`.
pub fn checkpoint_format<'a>(names: impl IntoIterator<Item = &'a str>) -> &'static str {
    let names: Vec<&str> = names.into_iter().collect();
    if names.contains(&GGUF) {
        "gguf"
    } else if names.contains(&HF_CONFIG) {
        "hf"
    } else {
        "ridgeline"
    }
}

/// The checkpoint's layout and files, from what was submitted.
fn manifest(files: &HashMap<String, Vec<u8>>) -> (&'static str, Vec<String>) {
    let mut names: Vec<String> = files
        .keys()
        .filter(|n| is_checkpoint_file(n))
        .cloned()
        .collect();
    names.sort();
    (checkpoint_format(names.iter().map(String::as_str)), names)
}

/// Makes the scan's directions: `directions.safetensors` (tensors `x.<name>` and
/// `y.<name>`) and `directions.json` (their norms and cosine). `files` holds the
/// checkpoint (`model.safetensors`) and, by kind, `to.safetensors` / `y_to.safetensors`
/// (target checkpoints) or `file.safetensors` (given directions).
pub fn prepare(
    spec: &SweepSpec,
    files: &HashMap<String, Vec<u8>>,
) -> Result<Vec<(String, Vec<u8>)>, String> {
    let l: &LandscapeSpec = spec.landscape.as_ref().ok_or("not a landscape spec")?;
    let get = |field: &str, name: &str| {
        files
            .get(name)
            .ok_or_else(|| format!("{field}: {name} was not provided"))
    };
    let d = &l.directions;
    // A shared checkpoint comes as the client's manifest alone: the workers read the
    // files where they are, and the coordinator never sees them.
    let shared: Option<serde_json::Value> = if l.shared_checkpoint {
        let m = files.get(MANIFEST).ok_or(
            "landscape.shared_checkpoint: needs a local checkpoint path (not sweep:ID/...)",
        )?;
        Some(serde_json::from_slice(m).map_err(|e| format!("{MANIFEST}: {e}"))?)
    } else {
        None
    };
    let (format, names) = manifest(files);
    let manifest_file = (
        MANIFEST.to_owned(),
        match &shared {
            Some(m) => serde_json::to_vec_pretty(m).expect("json"),
            None => {
                serde_json::to_vec_pretty(&serde_json::json!({"format": format, "files": names}))
                    .expect("json")
            }
        },
    );
    if format != "ridgeline" || shared.is_some() {
        let format = shared
            .as_ref()
            .and_then(|m| m["format"].as_str())
            .unwrap_or(format);
        // The coordinator does not load Hugging Face or GGUF models: every worker makes
        // the random directions itself from the seed.
        if d.kind != DirectionKind::Random {
            return Err(format!(
                "landscape.directions.type: a {format} checkpoint is scanned along random directions (made on the workers); {:?} needs a Ridgeline checkpoint",
                d.kind
            ));
        }
        if l.hessian.is_some() {
            return Err(
                "landscape.hessian: the Hessian is computed for MLP checkpoints only".into(),
            );
        }
        let info = serde_json::json!({
            "type": d.kind, "seed": d.seed, "normalization": d.normalization,
            "ignore": d.ignore, "dir_type": d.dir_type, "generated_on": "workers",
        });
        return Ok(vec![
            manifest_file,
            (
                "directions.json".into(),
                serde_json::to_vec_pretty(&info).expect("json"),
            ),
        ]);
    }
    let params = parameters(get("landscape.checkpoint", MODEL_WEIGHTS)?)
        .map_err(|e| format!("landscape.checkpoint: {e}"))?;
    let two_d = l.y.is_some();
    let mut pca_info: Option<serde_json::Value> = None;
    let (x, y) = match d.kind {
        DirectionKind::Random => (
            random_direction(d, &params, 0),
            two_d.then(|| random_direction(d, &params, 1)),
        ),
        DirectionKind::Target => {
            let towards = |field: &str, name: &str| -> Result<Vec<HostTensor>, String> {
                let other = parameters(get(field, name)?).map_err(|e| format!("{field}: {e}"))?;
                difference(&params, &other).map_err(|e| format!("{field}: {e}"))
            };
            (
                towards("landscape.directions.to", "to.safetensors")?,
                if two_d {
                    Some(towards("landscape.directions.y_to", "y_to.safetensors")?)
                } else {
                    None
                },
            )
        }
        DirectionKind::File => {
            let bytes = get("landscape.directions.file", "file.safetensors")?;
            let field = "landscape.directions.file";
            let st = SafeTensors::deserialize(bytes).map_err(|e| format!("{field}: {e}"))?;
            let pick = |prefix: &str| -> Result<Vec<HostTensor>, String> {
                params
                    .iter()
                    .map(|p| {
                        let name = format!("{prefix}.{}", p.name);
                        let t = read_f32(&st, &name).map_err(|e| format!("{field}: {e}"))?;
                        if t.shape != p.shape {
                            return Err(format!(
                                "{field}: {name}: expected shape {:?}, found {:?}",
                                p.shape, t.shape
                            ));
                        }
                        Ok(HostTensor {
                            name: p.name.clone(),
                            ..t
                        })
                    })
                    .collect()
            };
            (pick("x")?, if two_d { Some(pick("y")?) } else { None })
        }
        DirectionKind::Pca => {
            let mut names: Vec<&String> = files
                .keys()
                .filter(|k| k.starts_with("trajectory_"))
                .collect();
            names.sort();
            let trajectory: Vec<Vec<HostTensor>> = names
                .iter()
                .map(|n| {
                    parameters(&files[*n])
                        .map_err(|e| format!("landscape.directions.trajectory: {n}: {e}"))
                })
                .collect::<Result<_, _>>()?;
            let (dirs, extra) = pca(&params, &trajectory, if two_d { 2 } else { 1 })?;
            pca_info = Some(extra);
            let mut it = dirs.into_iter();
            let x = it.next().expect("at least one component");
            (x, it.next())
        }
    };
    // Batch-norm statistics move only with dir_type = "states", whatever the kind.
    let (mut x, mut y) = (x, y);
    if d.dir_type == DirType::Weights {
        for t in x.iter_mut().chain(y.iter_mut().flatten()) {
            if param_kind(&t.name, &t.shape) == ParamKind::State {
                t.data.iter_mut().for_each(|v| *v = 0.0);
            }
        }
    }
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
        "type": d.kind,
        "weights_norm": nw,
        "x_norm": nx,
        "y_norm": y.as_ref().map(|_| ny),
        "cosine_xy": y.as_ref().map(|_| cos),
        "parameters": params.iter().map(|t| t.data.len()).sum::<usize>(),
        "seed": d.seed,
        "normalization": d.normalization,
        "ignore": d.ignore,
    });
    let mut out = vec![
        manifest_file,
        (DIRECTIONS.into(), bytes),
        (
            "directions.json".into(),
            serde_json::to_vec_pretty(&info).expect("json"),
        ),
    ];
    if let Some(t) = pca_info {
        out.push((
            "trajectory.json".into(),
            serde_json::to_vec_pretty(&t).expect("json"),
        ));
    }
    if let Some(v) = first_block(spec, hessian_size(&params)) {
        out.push((
            block_file(0),
            v.iter().flatten().flat_map(|x| x.to_le_bytes()).collect(),
        ));
    }
    Ok(out)
}

fn flat(t: &[HostTensor]) -> Vec<f64> {
    t.iter()
        .flat_map(|x| x.data.iter().map(|v| f64::from(*v)))
        .collect()
}

fn unflat(like: &[HostTensor], v: &[f64]) -> Vec<HostTensor> {
    let mut at = 0;
    like.iter()
        .map(|t| {
            let n = t.data.len();
            let data = v[at..at + n].iter().map(|x| *x as f32).collect();
            at += n;
            HostTensor {
                name: t.name.clone(),
                shape: t.shape.clone(),
                data,
            }
        })
        .collect()
}

/// PCA of a trajectory around `centre` (Li et al. §7): the rows `θ_i − θ_centre`, their
/// top principal directions (unit vectors), the explained variance ratios, and the
/// trajectory projected on the directions, to be drawn over the contour plot.
pub fn pca(
    centre: &[HostTensor],
    trajectory: &[Vec<HostTensor>],
    k: usize,
) -> Result<(Vec<Vec<HostTensor>>, serde_json::Value), String> {
    let c = flat(centre);
    let rows: Vec<Vec<f64>> = trajectory
        .iter()
        .map(|t| {
            let v = flat(t);
            if v.len() != c.len() {
                return Err(format!(
                    "a trajectory checkpoint has {} parameters, the model {}",
                    v.len(),
                    c.len()
                ));
            }
            Ok(v.iter().zip(&c).map(|(a, b)| a - b).collect())
        })
        .collect::<Result<_, String>>()?;
    let e = rows.len();
    // The Gram matrix M Mᵀ (epochs x epochs) has the same non-zero spectrum as MᵀM.
    let gram: Vec<Vec<f64>> = (0..e)
        .map(|i| {
            (0..e)
                .map(|j| rows[i].iter().zip(&rows[j]).map(|(a, b)| a * b).sum())
                .collect()
        })
        .collect();
    let (vals, vecs) = crate::hessian::jacobi_eigen(gram);
    let mut order: Vec<usize> = (0..e).collect();
    order.sort_by(|a, b| vals[*b].total_cmp(&vals[*a]));
    let total: f64 = vals.iter().map(|v| v.max(0.0)).sum();
    let mut dirs = Vec::new();
    let mut ratios = Vec::new();
    let mut coords: Vec<Vec<f64>> = Vec::new();
    for &idx in order.iter().take(k) {
        let lam = vals[idx];
        if lam <= 1e-12 * total.max(f64::MIN_POSITIVE) {
            return Err("the trajectory does not span enough directions for PCA".into());
        }
        let mut d = vec![0.0; c.len()];
        for (i, row) in rows.iter().enumerate() {
            let w = vecs[i][idx] / lam.sqrt();
            d.iter_mut().zip(row).for_each(|(x, r)| *x += w * r);
        }
        coords.push(
            rows.iter()
                .map(|r| r.iter().zip(&d).map(|(a, b)| a * b).sum())
                .collect(),
        );
        ratios.push(lam / total);
        dirs.push(unflat(centre, &d));
    }
    let info = serde_json::json!({
        "explained_variance_ratio": ratios,
        "x": coords[0],
        "y": coords.get(1),
        "checkpoints": e,
    });
    Ok((dirs, info))
}

/// A PCA scan without an explicit `x` covers the projected trajectory (and the centre),
/// with a margin of 15 % of its extent on each side: x gets 51 points, y keeps its count.
pub fn fit_axes_to_trajectory(l: &mut LandscapeSpec, t: &serde_json::Value) {
    if l.x.is_some() {
        return;
    }
    let fit = |key: &str, points: usize| -> Option<Axis> {
        let v: Vec<f64> = serde_json::from_value(t[key].clone()).ok()?;
        let (lo, hi) = v
            .iter()
            .fold((0f64, 0f64), |(a, b), x| (a.min(*x), b.max(*x)));
        let m = 0.15 * (hi - lo).max(1e-3);
        Some(Axis {
            min: lo - m,
            max: hi + m,
            points,
        })
    };
    l.x = fit("x", 51);
    if let Some(points) = l.y.as_ref().map(|y| y.points) {
        l.y = fit("y", points).or(l.y.take());
    }
}

/// `to - from`, tensor by tensor; the two must have the same names and shapes.
fn difference(from: &[HostTensor], to: &[HostTensor]) -> Result<Vec<HostTensor>, String> {
    if from.len() != to.len() {
        return Err(format!(
            "{} parameter tensors, the scanned checkpoint has {}",
            to.len(),
            from.len()
        ));
    }
    from.iter()
        .zip(to)
        .map(|(a, b)| {
            if a.name != b.name || a.shape != b.shape {
                return Err(format!(
                    "{} {:?} does not match {} {:?}",
                    b.name, b.shape, a.name, a.shape
                ));
            }
            let data = a.data.iter().zip(&b.data).map(|(p, q)| q - p).collect();
            Ok(HostTensor {
                name: a.name.clone(),
                shape: a.shape.clone(),
                data,
            })
        })
        .collect()
}

/// Entries of the Hessian's vectors: every parameter but batch-norm statistics.
fn hessian_size(params: &[HostTensor]) -> usize {
    params
        .iter()
        .filter(|t| param_kind(&t.name, &t.shape) != ParamKind::State)
        .map(|t| t.data.len())
        .sum()
}

/// The vectors of Hessian round `r`: `hessian_block_{r}.f64`, f64 little-endian,
/// one vector of `n` parameters after another.
pub fn block_file(r: usize) -> String {
    format!("hessian_block_{r}.f64")
}

/// Name of a Hessian unit's products inside its unit folder (same layout as a block).
pub const HVP_FILE: &str = "hvp.f64";

fn write_vectors(path: &Path, v: &[Vec<f64>]) -> Result<(), String> {
    let bytes: Vec<u8> = v.iter().flatten().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(path, &bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    crate::telemetry::wrote(bytes.len() as u64);
    Ok(())
}

fn read_vectors(path: &Path, n: usize) -> Result<Vec<Vec<f64>>, String> {
    let b = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if n == 0 || b.len() % (8 * n) != 0 {
        return Err(format!(
            "{}: {} bytes is not a whole number of {n}-vectors",
            path.display(),
            b.len()
        ));
    }
    let flat: Vec<f64> = b
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    Ok(flat.chunks(n).map(<[f64]>::to_vec).collect())
}

/// Units released so far by a scan's Hessian rounds, from the block files on disk
/// (for a restarted coordinator); `None` when the scan has no Hessian.
pub fn released_units(sweep_dir: &Path, spec: &SweepSpec) -> Option<u32> {
    let l = spec.landscape.as_ref()?;
    let h = l.hessian.as_ref()?;
    let blocks = (0..h.rounds)
        .take_while(|r| sweep_dir.join(block_file(*r)).exists())
        .count();
    Some((l.tiles() + blocks.max(1) * h.shards) as u32)
}

/// The first round's vectors: an orthonormal random block and the trace probes.
fn first_block(spec: &SweepSpec, n: usize) -> Option<Vec<Vec<f64>>> {
    let h = spec.landscape.as_ref()?.hessian.as_ref()?;
    let mut v = crate::hessian::start_block(n, h.block, h.seed);
    v.extend(crate::hessian::probes(n, h.probes, h.seed));
    Some(v)
}

/// After Hessian round `round` of a scan: sums the shards' products, extends the Krylov
/// basis, and writes the next block (returning the units it releases), or, after the
/// last round or on convergence, `hessian.json` (returning `None`). Everything is read
/// from disk, so a restarted coordinator continues where it stopped.
pub fn hessian_step(
    sweep_dir: &Path,
    spec: &SweepSpec,
    round: usize,
    unit_dir: impl Fn(u32) -> std::path::PathBuf,
) -> Result<Option<u32>, String> {
    let l = spec.landscape.as_ref().ok_or("not a landscape spec")?;
    let h = l.hessian.as_ref().ok_or("no [landscape.hessian]")?;
    let n = hessian_size(&parameters(
        &std::fs::read(sweep_dir.join(MODEL_WEIGHTS)).map_err(|e| e.to_string())?,
    )?);
    let mut k = crate::hessian::Krylov::default();
    let mut next = Vec::new();
    let mut probes = (Vec::new(), Vec::new());
    for r in 0..=round {
        let mut v = read_vectors(&sweep_dir.join(block_file(r)), n)?;
        let mut w = vec![vec![0.0; n]; v.len()];
        for s in 0..h.shards {
            let unit = (l.tiles() + r * h.shards + s) as u32;
            let part = read_vectors(&unit_dir(unit).join(HVP_FILE), n)?;
            if part.len() != v.len() {
                return Err(format!(
                    "shard {s} of round {r} returned {} products for {} vectors",
                    part.len(),
                    v.len()
                ));
            }
            for (acc, p) in w.iter_mut().zip(part) {
                acc.iter_mut().zip(p).for_each(|(a, b)| *a += b);
            }
        }
        if r == 0 {
            let m = v.len() - h.probes;
            probes = (v.split_off(m), w.split_off(m));
        }
        next = k.extend(v, w);
    }
    if round + 1 < h.rounds && !next.is_empty() {
        write_vectors(&sweep_dir.join(block_file(round + 1)), &next)?;
        return Ok(Some((l.tiles() + (round + 2) * h.shards) as u32));
    }
    let ritz = k.ritz();
    let (trace, se) = crate::hessian::hutchinson(&probes.0, &probes.1);
    let vectors = k.q.len() + h.probes;
    let json = serde_json::json!({
        "top_eigenvalues": ritz.iter().take(h.top_k).map(|(v, r)| serde_json::json!({"value": v, "residual": r})).collect::<Vec<_>>(),
        "lambda_min": ritz.last().map(|(v, r)| serde_json::json!({"value": v, "residual": r})),
        "trace": {"estimate": trace, "std_error": se, "probes": h.probes},
        "method": "block Lanczos with full reorthogonalisation over data shards; Hutchinson (Rademacher) trace",
        "tolerance": "each eigenvalue is within its residual ‖Hy − θy‖ of a true eigenvalue; the trace is within a few std_error",
        "rounds": round + 1,
        "krylov_dimension": k.q.len(),
        "hvps": vectors,
        "hvps_per_shard": vectors,
        "shard_hvps_total": vectors * h.shards,
        "shards": h.shards,
        "epsilon": h.epsilon,
        "parameters": n,
    });
    let p = sweep_dir.join("hessian.json");
    let bytes = serde_json::to_vec_pretty(&json).expect("json");
    std::fs::write(&p, &bytes).map_err(|e| format!("{}: {e}", p.display()))?;
    crate::telemetry::wrote(bytes.len() as u64);
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pca_recovers_a_planar_trajectory() {
        let t = |name: &str, data: Vec<f32>| HostTensor {
            name: name.into(),
            shape: vec![data.len()],
            data,
        };
        let centre = vec![t("a", vec![1.0, 2.0, 3.0]), t("b", vec![0.5])];
        // Points centre + s u + r w for orthogonal u, w: a plane, so two components
        // explain everything, and the projections reproduce the points.
        let (u, w) = ([1.0f32, 0.0, 1.0, 0.0], [0.0f32, 2.0, 0.0, 1.0]);
        let pts = [
            (3.0f32, 0.5f32),
            (2.0, -1.0),
            (1.0, 0.25),
            (0.5, 0.0),
            (0.0, 0.1),
        ];
        let traj: Vec<Vec<HostTensor>> = pts
            .iter()
            .map(|(s, r)| {
                let v: Vec<f32> = (0..4)
                    .map(|i| [1.0, 2.0, 3.0, 0.5][i] + s * u[i] + r * w[i])
                    .collect();
                vec![t("a", v[..3].to_vec()), t("b", v[3..].to_vec())]
            })
            .collect();
        let (dirs, info) = pca(&centre, &traj, 2).unwrap();
        let ratios: Vec<f64> =
            serde_json::from_value(info["explained_variance_ratio"].clone()).unwrap();
        assert!(
            (ratios[0] + ratios[1] - 1.0).abs() < 1e-9 && ratios[0] >= ratios[1],
            "{ratios:?}"
        );
        let xs: Vec<f64> = serde_json::from_value(info["x"].clone()).unwrap();
        let ys: Vec<f64> = serde_json::from_value(info["y"].clone()).unwrap();
        let (d1, d2) = (flat(&dirs[0]), flat(&dirs[1]));
        for (k, (s, r)) in pts.iter().enumerate() {
            for i in 0..4 {
                let want = f64::from(s * u[i] + r * w[i]);
                let got = xs[k] * d1[i] + ys[k] * d2[i];
                assert!(
                    (got - want).abs() < 1e-5,
                    "point {k}, coordinate {i}: {got} vs {want}"
                );
            }
        }
    }
}
