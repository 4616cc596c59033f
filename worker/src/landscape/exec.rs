//! Runs one tile of a landscape scan: the scan's checkpoint, directions and data are
//! loaded once per sweep and kept resident on the device; each tile evaluates its grid
//! points in one batched pass.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use candle_core::Device;
use ridgeline_common::landscape::{
    HvpMethod, LandscapeSpec, LossKind, SECOND_TILE_FILE, ScanUnit, TILE_FILE, flat_order,
};
use ridgeline_common::spec::SweepSpec;

use super::eval::{Loss, Plane};
use super::hessian::{Method, model_hvps};
pub use super::load::Fetch;
use super::load::{self, Loaded, layers};
use super::perturb;
use crate::UnitError;
use crate::models::ModelConfig;
use crate::train::{TrialEnd, TrialOutput};

/// Scans loaded in this process, by sweep id: one copy per unit running at once,
/// since a tile overwrites its copy's tensors while it evaluates.
type Pool = Vec<Arc<Mutex<Loaded>>>;

/// A loaded scan for this unit alone: a free copy from the pool, or a new one.
fn scan(
    sweep: &str,
    spec: &SweepSpec,
    fetch: Fetch<'_>,
    device: &Device,
    memory_bytes: u64,
) -> Result<Arc<Mutex<Loaded>>, UnitError> {
    static CACHE: OnceLock<Mutex<HashMap<String, Pool>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    {
        let mut c = cache.lock().expect("cache lock");
        // One scan at a time is the common case; drop old sweeps before loading more.
        c.retain(|k, _| k == sweep);
        if let Some(free) = c
            .get(sweep)
            .and_then(|pool| pool.iter().find(|s| s.try_lock().is_ok()))
        {
            return Ok(free.clone());
        }
    }
    let s = Arc::new(Mutex::new(load::load(spec, fetch, device, memory_bytes)?));
    cache
        .lock()
        .expect("cache lock")
        .entry(sweep.to_owned())
        .or_default()
        .push(s.clone());
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
    match (l.unit(unit as usize), &l.evaluator) {
        // The user's own evaluator process computes the points (validation admits only
        // tiles for it).
        (ScanUnit::Tile(t), Some(e)) => {
            super::evaluator::run_tile(sweep, spec, e, t as u32, fetch, device)
        }
        (ScanUnit::Tile(t), None) => run_tile(sweep, spec, t as u32, fetch, device, memory_bytes),
        (ScanUnit::Hvp { round, shard }, Some(e)) => {
            super::evaluator::run_hvp(sweep, spec, e, (round, shard), fetch, device)
        }
        (ScanUnit::Hvp { round, shard }, None) => {
            run_hvp(sweep, spec, round, shard, fetch, device, memory_bytes)
        }
        (ScanUnit::Curvature(k), Some(e)) => {
            super::evaluator::run_curvature(sweep, spec, e, k, fetch, device)
        }
        (ScanUnit::Curvature(k), None) => {
            run_curvature(sweep, spec, k, fetch, device, memory_bytes)
        }
        (ScanUnit::Curve, _) => run_curve(sweep, spec, fetch, device, memory_bytes),
    }
}

/// Trains the connecting curve's control point and evaluates the curve and the line.
/// Artifacts: `curve.json` ([`super::curve::Curves`]) and `curve_control.safetensors`.
fn run_curve(
    sweep: &str,
    spec: &SweepSpec,
    fetch: Fetch<'_>,
    device: &Device,
    memory_bytes: u64,
) -> Result<TrialOutput, UnitError> {
    let l = spec.landscape.as_ref().ok_or("not a landscape sweep")?;
    let c = l.curve.as_ref().ok_or("no [landscape.curve]")?;
    let s = scan(sweep, spec, fetch, device, memory_bytes)?;
    let s = s.lock().expect("scan lock");
    let data = crate::data::cached(spec)?;
    let crate::data::Data::Table(ds) = data.as_ref() else {
        return Err(
            "landscape.curve: curves are trained on sample data (classification), not text".into(),
        );
    };
    if ds.train.y.is_empty() {
        return Err(
            "landscape.curve: the data has no class labels (data.task = \"classification\")".into(),
        );
    }
    let chunk = chunk_items(&s, l.batch_size, memory_bytes)?;
    let e = |e: candle_core::Error| e.to_string();
    let (curves, control) = super::curve::run(&s, c, &ds.train, chunk).map_err(e)?;
    let named: Vec<(String, candle_core::Tensor)> = s
        .model
        .params()
        .iter()
        .zip(control)
        .map(|(p, t)| (p.name.clone(), t))
        .collect();
    let control = crate::train::safetensors_bytes(named).map_err(|e| e.to_string())?;
    Ok(TrialOutput {
        end: TrialEnd::Completed,
        final_metrics: vec![("train_loss".into(), curves.final_train_loss)],
        artifacts: vec![
            (
                "curve.json".into(),
                serde_json::to_vec(&curves).expect("json"),
            ),
            ("curve_control.safetensors".into(), control),
        ],
    })
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
    memory_bytes: u64,
) -> Result<TrialOutput, UnitError> {
    let l = spec.landscape.as_ref().ok_or("not a landscape sweep")?;
    let h = l.hessian.as_ref().ok_or("no [landscape.hessian]")?;
    let s = scan(sweep, spec, fetch, device, memory_bytes)?;
    let s = s.lock().expect("scan lock");
    let (m64, order, loss) = f64_copy(&s, l, (0.0, 0.0), device)?;
    let n_params: usize = order
        .iter()
        .map(|&i| m64.params()[i].var.elem_count())
        .sum();
    let block = fetch(&format!("hessian_block_{round}.f64"))?;
    if block.len() % (8 * n_params) != 0 {
        return Err(format!("hessian_block_{round}.f64 does not hold {n_params}-vectors").into());
    }
    let flat: Vec<f64> = block
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    let vectors: Vec<Vec<f64>> = flat.chunks(n_params).map(<[f64]>::to_vec).collect();
    let (sx, sy) = s.data.xy();
    let rows = s.data.len();
    let (start, end) = (shard * rows / h.shards, (shard + 1) * rows / h.shards);
    if start == end {
        return Err(format!("shard {shard} of {} is empty: {rows} samples", h.shards).into());
    }
    let e = |e: candle_core::Error| e.to_string();
    let x = sx.narrow(0, start, end - start).map_err(e)?;
    let y = sy.narrow(0, start, end - start).map_err(e)?;
    let weight = (end - start) as f64 / rows as f64;
    let method = match h.method {
        HvpMethod::Exact => Method::Exact,
        HvpMethod::FiniteDifference => Method::FiniteDifference { epsilon: h.epsilon },
    };
    let (hv, info) = model_hvps(
        m64.as_ref(),
        &order,
        &x,
        &y,
        loss,
        &vectors,
        weight,
        method,
        hvp_chunk(&s, l, memory_bytes)?,
    )
    .map_err(e)?;
    let bytes: Vec<u8> = hv.iter().flatten().flat_map(|v| v.to_le_bytes()).collect();
    Ok(TrialOutput {
        end: TrialEnd::Completed,
        final_metrics: vec![("hvps".into(), vectors.len() as f64)],
        artifacts: vec![
            ("hvp.f64".into(), bytes),
            ("hvp.json".into(), serde_json::to_vec(&info).expect("json")),
        ],
    })
}

/// An f64 model, its Hessian's parameters (indices, flat order) and the loss.
type Copy64 = (Box<dyn crate::models::Model>, Vec<usize>, Loss);

/// An f64 copy of the scan's model at θ* + α d₁ + β d₂ (products are summed over shards
/// and fed to Lanczos, whose reorthogonalisation needs more than f32's seven digits),
/// the indices of its Hessian's parameters in the coordinator's flat order (batch-norm
/// statistics left out), and the loss.
fn f64_copy(
    s: &Loaded,
    l: &ridgeline_common::landscape::LandscapeSpec,
    (a, b): (f64, f64),
    device: &Device,
) -> Result<Copy64, UnitError> {
    if l.loss == LossKind::Mse && !matches!(s.model.config(), ModelConfig::Mlp(_)) {
        return Err("landscape.loss = \"mse\" is for MLP regression checkpoints".into());
    }
    let e = |e: candle_core::Error| e.to_string();
    let f = |t: &candle_core::Tensor| t.to_dtype(candle_core::DType::F64);
    let params = s.model.params();
    let mut tensors: HashMap<String, candle_core::Tensor> = HashMap::new();
    for (i, p) in params.iter().enumerate() {
        let mut t = f(&s.base[i]).map_err(e)?;
        if a != 0.0 {
            t = (t + (f(&s.d1[i]).map_err(e)? * a).map_err(e)?).map_err(e)?;
        }
        if let (Some(d2), true) = (&s.d2, b != 0.0) {
            t = (t + (f(&d2[i]).map_err(e)? * b).map_err(e)?).map_err(e)?;
        }
        tensors.insert(p.name.clone(), t);
    }
    let m64 = s
        .model
        .config()
        .load(&tensors, candle_core::DType::F64, device)?;
    let mut order: Vec<usize> = (0..params.len())
        .filter(|&i| params[i].trainable())
        .collect();
    order.sort_by_key(|&i| flat_order(&params[i].name));
    let loss = match l.loss {
        LossKind::CrossEntropy => Loss::CrossEntropy,
        LossKind::Mse => Loss::Mse,
    };
    Ok((m64, order, loss))
}

/// Samples per pass of a Hessian-vector product: a second-order graph in f64 keeps
/// several f64 copies of every activation, counted here as 16 times an f32 evaluation's.
fn hvp_chunk(
    s: &Loaded,
    l: &ridgeline_common::landscape::LandscapeSpec,
    memory_bytes: u64,
) -> Result<usize, UnitError> {
    Ok((chunk_items(s, l.batch_size, memory_bytes)? / 16).max(1))
}

/// Curvature at point `k` of the sub-grid: artifact `curvature.json`
/// ([`super::curvature::Point`]).
fn run_curvature(
    sweep: &str,
    spec: &SweepSpec,
    k: usize,
    fetch: Fetch<'_>,
    device: &Device,
    memory_bytes: u64,
) -> Result<TrialOutput, UnitError> {
    let l = spec.landscape.as_ref().ok_or("not a landscape sweep")?;
    let c = l.curvature.as_ref().ok_or("no [landscape.curvature]")?;
    let (a, b) = l.curvature_point(k).ok_or("no [landscape.curvature]")?;
    let s = scan(sweep, spec, fetch, device, memory_bytes)?;
    let s = s.lock().expect("scan lock");
    let (m64, order, loss) = f64_copy(&s, l, (a, b), device)?;
    let (x, y) = s.data.xy();
    let chunk = hvp_chunk(&s, l, memory_bytes)?;
    let p = super::curvature::at_point(
        m64.as_ref(),
        &order,
        (x, y, chunk),
        loss,
        c,
        k as u64,
        (a, b),
    )
    .map_err(|e| e.to_string())?;
    Ok(super::curvature::output(&p))
}

/// Evaluates tile `tile` of a scan. The artifact `tile.f64` holds the tile's losses and
/// then its accuracies, as little-endian f64, in point order; with `split = "both"`,
/// `tile_val.f64` the same on the validation split.
pub fn run_tile(
    sweep: &str,
    spec: &SweepSpec,
    tile: u32,
    fetch: Fetch<'_>,
    device: &Device,
    memory_bytes: u64,
) -> Result<TrialOutput, UnitError> {
    let l = spec.landscape.as_ref().ok_or("not a landscape sweep")?;
    let s = scan(sweep, spec, fetch, device, memory_bytes)?;
    let mut s = s.lock().expect("scan lock");
    let points: Vec<(f64, f64)> = l.tile_range(tile as usize).map(|k| l.point(k)).collect();
    if points.is_empty() {
        return Err(format!("tile {tile} is past the end of the grid").into());
    }
    let values = tile_values(&mut s, l, &points, memory_bytes)?;
    let mut artifacts = vec![(TILE_FILE.into(), tile_bytes(&values))];
    // `split = "both"`: the same points on the second split's data, as a second file.
    if let Some(other) = s.second.take() {
        let primary = std::mem::replace(&mut s.data, other);
        let second = tile_values(&mut s, l, &points, memory_bytes);
        s.second = Some(std::mem::replace(&mut s.data, primary));
        artifacts.push((SECOND_TILE_FILE.into(), tile_bytes(&second?)));
    }
    // NaN points stay NaN in the surface; the scan goes on.
    let min = values
        .iter()
        .map(|v| v.loss)
        .filter(|v| v.is_finite())
        .fold(f64::NAN, f64::min);
    let mut final_metrics = vec![
        ("samples".into(), s.data.len() as f64),
        ("directions_fnv48".into(), s.digest as f64),
    ];
    // A tile whose points all diverged has no best loss; its NaNs are in tile.f64.
    if min.is_finite() {
        final_metrics.insert(0, ("loss".into(), min));
    }
    Ok(TrialOutput {
        end: TrialEnd::Completed,
        final_metrics,
        artifacts,
    })
}

/// A tile's file: every point's loss, then every point's accuracy (f64, little endian).
fn tile_bytes(values: &[super::eval::PointValue]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(values.len() * 16);
    for v in values {
        bytes.extend_from_slice(&v.loss.to_le_bytes());
    }
    for v in values {
        bytes.extend_from_slice(&v.accuracy.to_le_bytes());
    }
    bytes
}

/// Loss and accuracy at each point, on the scan's current data.
fn tile_values(
    s: &mut Loaded,
    l: &LandscapeSpec,
    points: &[(f64, f64)],
    memory_bytes: u64,
) -> Result<Vec<super::eval::PointValue>, UnitError> {
    match s.model.config() {
        ModelConfig::Mlp(c) => mlp_tile(s, &c.dims(), l.loss, l.batch_size, points, memory_bytes),
        _ if l.loss == LossKind::Mse => Err(UnitError {
            message: "landscape.loss = \"mse\" is for MLP regression checkpoints".into(),
            permanent: true,
        }),
        _ => {
            let chunk = chunk_items(s, l.batch_size, memory_bytes)?;
            perturb::evaluate_points(s, points, chunk).map_err(|e| UnitError::from(e.to_string()))
        }
    }
}

/// The MLP's fast path: a tile's points in one batched pass (`eval.rs`), in chunks of
/// points that fit the unit's memory. The first layer's products are kept in `s` for
/// the scan's later tiles when they take at most half the unit's memory; what they
/// take is then left out of the budget for the points.
fn mlp_tile(
    s: &mut Loaded,
    dims: &[usize],
    loss: LossKind,
    batch: usize,
    points: &[(f64, f64)],
    memory_bytes: u64,
) -> Result<Vec<super::eval::PointValue>, UnitError> {
    let ModelConfig::Mlp(c) = s.model.config() else {
        unreachable!("caller matched an MLP")
    };
    let (base, d1) = (layers(&s.base), layers(&s.d1));
    let d2 = s.d2.as_deref().map(layers);
    let plane = Plane {
        base: &base,
        d1: &d1,
        d2: d2.as_ref(),
        activation: c.activation,
    };
    let loss = match loss {
        LossKind::CrossEntropy => Loss::CrossEntropy,
        LossKind::Mse => Loss::Mse,
    };
    let e = |e: candle_core::Error| UnitError::from(e.to_string());
    let (x, y) = s.data.xy();
    let (x, y) = (x.clone(), y.clone());
    let kept = plane.first_layer_bytes(s.data.len());
    let keep = kept <= memory_bytes / 2;
    let budget = if keep {
        memory_bytes - kept
    } else {
        memory_bytes
    };
    let (chunk, rows) = tile_plan(dims, s.data.len(), batch, budget)?;
    if keep
        && !s
            .first_layers
            .iter()
            .any(|(id, f)| *id == x.id() && f.fits(x.dims()[0], rows))
    {
        s.first_layers.retain(|(id, _)| *id != x.id());
        let first = plane.first_layer(&x, rows).map_err(e)?;
        s.first_layers.push((x.id(), first));
    }
    let first = s
        .first_layers
        .iter()
        .find(|(id, _)| *id == x.id())
        .map(|(_, f)| f);
    let mut values = Vec::with_capacity(points.len());
    for part in points.chunks(chunk) {
        values.extend(
            plane
                .evaluate(part, (&x, &y), loss, rows, first)
                .map_err(e)?,
        );
    }
    Ok(values)
}

/// Items (samples or windows) per evaluation chunk of a model that is not an MLP: as
/// many as fit next to the four copies of the parameters, at most `batch` samples or
/// 8,192 tokens.
fn chunk_items(s: &Loaded, batch: usize, memory_bytes: u64) -> Result<usize, UnitError> {
    let resident = 4 * 4 * s.model.parameter_count() as u64;
    let free = memory_bytes.saturating_sub(resident);
    let cap = match &s.data {
        load::EvalData::Text { x, .. } => (8192 / x.dim(1).unwrap_or(1)).max(1),
        load::EvalData::Table { .. } => batch.max(1),
    };
    let mut items = cap.min(s.data.len()).max(1);
    while items > 1 && perturb::activation_bytes(s, items) > free {
        items = items.div_ceil(2);
    }
    if perturb::activation_bytes(s, items) > free {
        return Err(UnitError::out_of_memory(format!(
            "one item of evaluation needs {} bytes beside the parameters' {resident}, the unit may use {memory_bytes} (worker --memory-bytes)",
            perturb::activation_bytes(s, 1)
        )));
    }
    Ok(items)
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
