//! The coordinator's side of landscape scans: preparing a sweep's files (checkpoint and
//! directions) at submission, and assembling the tiles into the surface at the end.

use std::collections::HashMap;

use ridgeline_common::landscape::{
    DirType, DirectionKind, HostTensor, Ignore, LandscapeSpec, Normalization, ParamKind,
    difference, flat_order, norms_and_cosine, param_kind, random_direction,
};
use ridgeline_common::spec::SweepSpec;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

mod assemble;
mod check;
mod describe;
mod export;
mod hessian;
mod pca;
mod tile_log;
mod tiles;

pub use assemble::{assemble, barrier, compact_tiles};
pub use check::check_tile;
pub use hessian::{HVP_FILE, block_file, hessian_step, released_units};
use hessian::{first_block, hessian_size};
pub use pca::{fit_axes_to_trajectory, pca};
pub use tile_log::{LOG as TILE_LOG, Writer as TileLog, tile_values};
pub use tiles::{read_tile, write_npy};

/// Files a scan's workers fetch, by name.
pub const MODEL_JSON: &str = "model.json";
/// The scanned weights.
pub const MODEL_WEIGHTS: &str = "model.safetensors";
/// The directions, `x.<name>` and `y.<name>` for every parameter tensor.
pub const DIRECTIONS: &str = "directions.safetensors";
pub use ridgeline_common::landscape::{SECOND_TILE_FILE, TILE_FILE};

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
            let k = if two_d { 2 } else { 1 };
            let (dirs, extra) = pca(&params, &trajectory, k, d.pca_center, d.ignore)?;
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
    // What was done to the directions, kind by kind: only random ones are drawn and
    // rescaled; targets are plain differences; PCA components are unit vectors.
    let (normalization, ignore) = match d.kind {
        DirectionKind::Random => (d.normalization, d.ignore),
        DirectionKind::Pca => (Normalization::None, d.ignore),
        DirectionKind::Target | DirectionKind::File => (Normalization::None, Ignore::None),
    };
    let mut info = serde_json::json!({
        "type": d.kind,
        "weights_norm": nw,
        "x_norm": nx,
        "y_norm": y.as_ref().map(|_| ny),
        "cosine_xy": y.as_ref().map(|_| cos),
        "parameters": params.iter().map(|t| t.data.len()).sum::<usize>(),
        "normalization": normalization,
        "ignore": ignore,
        "dir_type": d.dir_type,
    });
    match (d.kind, &pca_info) {
        (DirectionKind::Random, _) => info["seed"] = d.seed.into(),
        (DirectionKind::Pca, Some(t)) => {
            info["pca_center"] = d.pca_center.into();
            info["explained_variance_ratio"] = t["explained_variance_ratio"].clone();
            info["recipe"] = t["recipe"].clone();
        }
        _ => {}
    }
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

/// The files an evaluator scan starts with: its first Hessian block, left empty (the
/// coordinator never sees the model, so its workers draw the vectors from the seed; the
/// first round's results fill the file in).
pub fn evaluator_files(spec: &SweepSpec) -> Vec<(String, Vec<u8>)> {
    let hessian = spec.landscape.as_ref().is_some_and(|l| l.hessian.is_some());
    if hessian {
        vec![(block_file(0), Vec::new())]
    } else {
        Vec::new()
    }
}

pub(crate) fn flat(t: &[HostTensor]) -> Vec<f64> {
    t.iter()
        .flat_map(|x| x.data.iter().map(|v| f64::from(*v)))
        .collect()
}

pub(crate) fn unflat(like: &[HostTensor], v: &[f64]) -> Vec<HostTensor> {
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
