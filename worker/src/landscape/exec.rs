//! Runs one tile of a landscape scan: the scan's checkpoint, directions and data are
//! loaded once per sweep and kept resident on the device; each tile evaluates its grid
//! points in one batched pass.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use candle_core::{DType, Device, Tensor};
use ridgeline_common::landscape::{LossKind, ScanUnit, Split};
use ridgeline_common::spec::SweepSpec;

use super::eval::{Layers, Loss, Plane};
use crate::UnitError;
use crate::models::MlpConfig;
use crate::train::{TrialEnd, TrialOutput};

/// Fetches one of the sweep's files from the coordinator.
pub type Fetch<'a> = &'a dyn Fn(&str) -> Result<Arc<Vec<u8>>, String>;

/// Everything a sweep's tiles share, resident on the device.
struct Scan {
    config: MlpConfig,
    base: Layers,
    d1: Layers,
    d2: Option<Layers>,
    x: Tensor,
    y: Tensor,
}

fn layers(
    config: &MlpConfig,
    t: &HashMap<String, Tensor>,
    prefix: &str,
    what: &str,
) -> Result<Layers, String> {
    let dims = config.dims();
    (0..dims.len() - 1)
        .map(|i| {
            let get = |part: &str, shape: &[usize]| -> Result<Tensor, String> {
                let name = format!("{prefix}layers.{i}.{part}");
                let v = t
                    .get(&name)
                    .ok_or_else(|| format!("{what}: missing tensor {name}"))?;
                if v.dims() != shape {
                    return Err(format!(
                        "{what}: {name}: expected shape {shape:?}, found {:?}",
                        v.dims()
                    ));
                }
                v.to_dtype(DType::F32).map_err(|e| e.to_string())
            };
            Ok((
                get("weight", &[dims[i + 1], dims[i]])?,
                get("bias", &[dims[i + 1]])?,
            ))
        })
        .collect()
}

fn load_scan(spec: &SweepSpec, fetch: Fetch<'_>, device: &Device) -> Result<Scan, String> {
    let l = spec.landscape.as_ref().ok_or("not a landscape sweep")?;
    let config: MlpConfig =
        serde_json::from_slice(&fetch("model.json")?).map_err(|e| format!("model.json: {e}"))?;
    let weights = candle_core::safetensors::load_buffer(&fetch("model.safetensors")?, device)
        .map_err(|e| format!("model.safetensors: {e}"))?;
    let dirs = candle_core::safetensors::load_buffer(&fetch("directions.safetensors")?, device)
        .map_err(|e| format!("directions.safetensors: {e}"))?;
    let base = layers(&config, &weights, "", "model.safetensors")?;
    let d1 = layers(&config, &dirs, "x.", "directions.safetensors")?;
    let d2 = match l.y {
        Some(_) => Some(layers(&config, &dirs, "y.", "directions.safetensors")?),
        None => None,
    };
    let data = crate::runner::dataset(spec)?;
    let crate::data::Data::Table(ds) = data.as_ref() else {
        return Err("an MLP scan needs samples, not text".into());
    };
    let split = match l.split {
        Split::Train => &ds.train,
        Split::Val => &ds.val,
    };
    let s = match l.samples {
        Some(n) => split.head(n),
        None => split.clone(),
    };
    if s.dim != config.input_dim {
        return Err(format!(
            "data has {} features per sample, the model expects {}",
            s.dim, config.input_dim
        ));
    }
    let e = |e: candle_core::Error| e.to_string();
    let x = Tensor::from_slice(&s.x, (s.len(), s.dim), device).map_err(e)?;
    let y = match l.loss {
        LossKind::CrossEntropy => {
            if s.y.is_empty() {
                return Err(
                    "loss = \"cross_entropy\" needs class labels (data.task = \"classification\")"
                        .into(),
                );
            }
            Tensor::from_slice(&s.y, s.len(), device).map_err(e)?
        }
        LossKind::Mse => {
            if s.outputs != config.classes {
                return Err(format!(
                    "loss = \"mse\" needs {} target columns, the data has {}",
                    config.classes, s.outputs
                ));
            }
            Tensor::from_slice(&s.t, (s.len(), s.outputs), device).map_err(e)?
        }
    };
    Ok(Scan {
        config,
        base,
        d1,
        d2,
        x,
        y,
    })
}

/// Scans already loaded in this process, by sweep id.
fn scan(
    sweep: &str,
    spec: &SweepSpec,
    fetch: Fetch<'_>,
    device: &Device,
) -> Result<Arc<Scan>, String> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<Scan>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(s) = cache.lock().expect("cache lock").get(sweep) {
        return Ok(s.clone());
    }
    let s = Arc::new(load_scan(spec, fetch, device)?);
    let mut c = cache.lock().expect("cache lock");
    // One scan at a time is the common case; do not let old sweeps pile up in memory.
    c.retain(|k, _| k == sweep);
    c.insert(sweep.to_owned(), s.clone());
    Ok(s)
}

/// Runs unit `unit` of a scan: a tile of grid points, or one shard's Hessian-vector
/// products for a Lanczos round.
pub fn run_unit(
    sweep: &str,
    spec: &SweepSpec,
    unit: u32,
    fetch: Fetch<'_>,
    device: &Device,
    memory_bytes: u64,
) -> Result<TrialOutput, UnitError> {
    let l = spec.landscape.as_ref().ok_or("not a landscape sweep")?;
    match l.unit(unit as usize) {
        ScanUnit::Tile(t) => run_tile(sweep, spec, t as u32, fetch, device, memory_bytes),
        ScanUnit::Hvp { round, shard } => Ok(run_hvp(sweep, spec, round, shard, fetch, device)?),
    }
}

/// How to evaluate a tile within `budget` bytes: `(points per chunk, samples per
/// batch)`. The batched evaluator keeps, per point, the mixed weights of every layer
/// after the first and the activations of one batch of samples; the estimate counts
/// those (f32) with a factor 3 on activations for the temporaries of a layer.
pub fn tile_plan(
    dims: &[usize],
    samples: usize,
    batch: usize,
    budget: u64,
) -> Result<(usize, usize), UnitError> {
    let weights: usize = dims.windows(2).skip(1).map(|w| w[0] * w[1] + w[1]).sum();
    let widths: usize = dims[1..].iter().sum();
    let per_point = |rows: usize| 4 * (weights + 3 * rows * widths) as u64;
    let mut rows = batch.clamp(1, samples.max(1));
    while rows > 1 && per_point(rows) > budget {
        rows = rows.div_ceil(2);
    }
    if per_point(rows) > budget {
        return Err(UnitError::out_of_memory(format!(
            "one grid point of this model needs {} bytes, the unit may use {budget} (worker --memory-bytes)",
            per_point(rows)
        )));
    }
    Ok(((budget / per_point(rows)).max(1) as usize, rows))
}

fn run_hvp(
    sweep: &str,
    spec: &SweepSpec,
    round: usize,
    shard: usize,
    fetch: Fetch<'_>,
    device: &Device,
) -> Result<TrialOutput, String> {
    let l = spec.landscape.as_ref().ok_or("not a landscape sweep")?;
    let h = l.hessian.as_ref().ok_or("no [landscape.hessian]")?;
    let s = scan(sweep, spec, fetch, device)?;
    let n_params: usize = s
        .base
        .iter()
        .map(|(w, b)| w.elem_count() + b.elem_count())
        .sum();
    let block = fetch(&format!("hessian_block_{round}.f64"))?;
    if block.len() % (8 * n_params) != 0 {
        return Err(format!(
            "hessian_block_{round}.f64 does not hold {n_params}-vectors"
        ));
    }
    let flat: Vec<f64> = block
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    let vectors: Vec<Vec<f64>> = flat.chunks(n_params).map(<[f64]>::to_vec).collect();
    let rows = s.x.dim(0).map_err(|e| e.to_string())?;
    let (start, end) = (shard * rows / h.shards, (shard + 1) * rows / h.shards);
    if start == end {
        return Err(format!(
            "shard {shard} of {} is empty: {rows} samples",
            h.shards
        ));
    }
    let e = |e: candle_core::Error| e.to_string();
    let x = s.x.narrow(0, start, end - start).map_err(e)?;
    let y = s.y.narrow(0, start, end - start).map_err(e)?;
    let loss = match l.loss {
        LossKind::CrossEntropy => Loss::CrossEntropy,
        LossKind::Mse => Loss::Mse,
    };
    let weight = (end - start) as f64 / rows as f64;
    let hv = super::hessian::shard_hvps(
        &s.base,
        s.config.activation,
        &x,
        &y,
        loss,
        &vectors,
        h.epsilon,
        weight,
    )
    .map_err(e)?;
    let bytes: Vec<u8> = hv.iter().flatten().flat_map(|v| v.to_le_bytes()).collect();
    Ok(TrialOutput {
        end: TrialEnd::Completed,
        final_metrics: vec![("hvps".into(), vectors.len() as f64)],
        artifacts: vec![("hvp.f64".into(), bytes)],
    })
}

/// Evaluates tile `tile` of a scan. The artifact `tile.f64` holds the tile's losses and
/// then its accuracies, as little-endian f64, in point order.
pub fn run_tile(
    sweep: &str,
    spec: &SweepSpec,
    tile: u32,
    fetch: Fetch<'_>,
    device: &Device,
    memory_bytes: u64,
) -> Result<TrialOutput, UnitError> {
    let l = spec.landscape.as_ref().ok_or("not a landscape sweep")?;
    let s = scan(sweep, spec, fetch, device)?;
    let points: Vec<(f64, f64)> = l.tile_range(tile as usize).map(|k| l.point(k)).collect();
    if points.is_empty() {
        return Err(format!("tile {tile} is past the end of the grid").into());
    }
    let plane = Plane {
        base: &s.base,
        d1: &s.d1,
        d2: s.d2.as_ref(),
        activation: s.config.activation,
    };
    let loss = match l.loss {
        LossKind::CrossEntropy => Loss::CrossEntropy,
        LossKind::Mse => Loss::Mse,
    };
    let e = |e: candle_core::Error| UnitError::from(e.to_string());
    // A tile of any size runs in chunks of points that fit the unit's memory.
    let (chunk, rows) = tile_plan(
        &s.config.dims(),
        s.x.dim(0).map_err(e)?,
        l.batch_size,
        memory_bytes,
    )?;
    let mut values = Vec::with_capacity(points.len());
    for part in points.chunks(chunk) {
        values.extend(plane.evaluate(part, &s.x, &s.y, loss, rows).map_err(e)?);
    }
    let mut bytes = Vec::with_capacity(points.len() * 16);
    for v in &values {
        bytes.extend_from_slice(&v.loss.to_le_bytes());
    }
    for v in &values {
        bytes.extend_from_slice(&v.accuracy.to_le_bytes());
    }
    // NaN points stay NaN in the surface; the scan goes on.
    let min = values
        .iter()
        .map(|v| v.loss)
        .filter(|v| v.is_finite())
        .fold(f64::NAN, f64::min);
    let mut final_metrics = vec![("samples".into(), s.x.dim(0).map_err(e)? as f64)];
    // A tile whose points all diverged has no best loss; its NaNs are in tile.f64.
    if min.is_finite() {
        final_metrics.insert(0, ("loss".into(), min));
    }
    Ok(TrialOutput {
        end: TrialEnd::Completed,
        final_metrics,
        artifacts: vec![("tile.f64".into(), bytes)],
    })
}

#[cfg(test)]
mod tests {
    use super::tile_plan;

    #[test]
    fn tile_plans_fit_the_budget_or_say_out_of_memory() {
        // [5, 64, 1] MLP: per point 65 mixed weights and 3 x 64 rows x 65 activations.
        let per_point = 4 * (65 + 3 * 64 * 65) as u64;
        let (points, rows) = tile_plan(&[5, 64, 1], 250, 64, 16 << 20).unwrap();
        assert_eq!((points as u64, rows), ((16 << 20) / per_point, 64));
        assert!(points as u64 * per_point <= 16 << 20);
        // A budget below one point of 64 rows halves the rows until one point fits.
        let cost = |rows: u64| 4 * (65 + 3 * rows * 65);
        let (points, rows) = tile_plan(&[5, 64, 1], 250, 64, per_point / 2).unwrap();
        assert_eq!(points, 1);
        assert!(cost(rows as u64) <= per_point / 2 && cost(2 * rows as u64) > per_point / 2);
        let e = tile_plan(&[5, 64, 1], 250, 64, 100).unwrap_err();
        assert!(
            e.permanent && e.message.starts_with("out of memory: "),
            "{e}"
        );
    }
}
