//! Scans evaluated by the user's own process (`[landscape.evaluator]`): a PyTorch model,
//! its loss and its data live in `python -m ridgeline.torch.evaluator FUNCTION`, which the
//! worker starts once per slot and keeps for the scan's units (the model is loaded once):
//! tiles, Hessian rounds and curvature points.
//!
//! The protocol is one JSON object per line on the evaluator's stdin and stdout (its own
//! prints go to stderr, whose tail is the reason when it fails):
//!
//! 1. it starts and answers `{"ready": true, "parameters": N, "trainable": T}` (`N`
//!    floating entries of its `state_dict`; `T` entries of the parameters that take
//!    gradients, the size of the Hessian's vectors);
//! 2. `{"op": "weights", "path": P}`: it writes θ* (every floating tensor of its
//!    `state_dict`, as f32) to the safetensors file `P`;
//! 3. the worker draws the directions from the sweep's seed with the same code and bits
//!    as built-in scans ([`random_direction`]) and writes them to a file;
//!    `{"op": "directions", "path": P, "axes": 1 | 2}`: the evaluator loads them
//!    (`x.NAME`, and `y.NAME` for 2-D scans);
//! 4. `{"op": "tile", "points": [[x, y], ...]}`: it answers `{"loss": [...],
//!    "accuracy": [...]}` (`null` for NaN), θ* restored exactly after each point;
//! 5. `{"op": "hvp", "vectors": P, "out": Q, "shard": s, "shards": S, "point": [x, y]}`:
//!    `P` holds k vectors of `T` f64 (little-endian, one after another, in the order of
//!    the model's `parameters()`); it writes `H v` for each to `Q` in the same layout,
//!    where `H` is the Hessian of the mean loss over all its data restricted to the
//!    batches of shard `s` of `S` (the shards' products sum to the whole Hessian's), at
//!    θ* + x·d₁ + y·d₂ (`point` empty: at θ*), and answers `{"ok": true, "parameters": T}`.
//!
//! Any other answer is `{"error": TEXT}`. An evaluator that dies, hangs past the spec's
//! `timeout` or answers out of protocol is stopped and the unit fails (it is retried,
//! and the next unit starts a fresh evaluator).

mod directions;
mod process;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use candle_core::{Device, DeviceLocation};
use ridgeline_common::landscape::{EvaluatorSpec, LandscapeSpec, TILE_FILE};
use ridgeline_common::spec::SweepSpec;

pub use process::EVALUATOR_MODULE;
use process::{Process, Scratch};

use super::load::Fetch;
use crate::UnitError;
use crate::train::{TrialEnd, TrialOutput};

/// One running evaluator with its scan's directions loaded.
struct Evaluator {
    process: Process,
    /// The device it runs on (a worker with several GPUs keeps one pool per device).
    device: DeviceLocation,
    /// When it last finished a unit: an evaluator idle for [`idle_limit`] is stopped.
    last_used: Instant,
    /// FNV-1a (48 bits) of the directions' f32 bytes, reported with every tile.
    digest: u64,
    /// The directions file, handed in with the scan's first tile (an output).
    directions: Vec<u8>,
    /// Entries of the Hessian's vectors: the model's parameters that take gradients.
    trainable: usize,
}

type Pool = Vec<Arc<Mutex<Evaluator>>>;

fn pool() -> &'static Mutex<HashMap<String, Pool>> {
    static POOL: OnceLock<Mutex<HashMap<String, Pool>>> = OnceLock::new();
    POOL.get_or_init(|| {
        std::thread::spawn(reap);
        Default::default()
    })
}

/// How long an evaluator may sit idle before it is stopped (its model may hold a GPU's
/// memory that other work needs): `RIDGELINE_EVALUATOR_IDLE_S`, default 5 minutes.
fn idle_limit() -> Duration {
    let s = std::env::var("RIDGELINE_EVALUATOR_IDLE_S")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(300.0);
    Duration::from_secs_f64(s)
}

/// Stops the evaluators idle for longer than [`idle_limit`], forever (one thread per
/// process): dropping an unused one kills its process.
fn reap() {
    let limit = idle_limit();
    loop {
        std::thread::sleep((limit / 2).min(Duration::from_secs(10)));
        let mut p = pool().lock().expect("pool lock");
        for evs in p.values_mut() {
            evs.retain(|e| match e.try_lock() {
                Ok(ev) => ev.last_used.elapsed() < limit,
                Err(_) => true,
            });
        }
        p.retain(|_, evs| !evs.is_empty());
    }
}

/// Evaluates tile `tile` with a free evaluator of this sweep (started if none is free).
pub fn run_tile(
    sweep: &str,
    spec: &SweepSpec,
    e: &EvaluatorSpec,
    tile: u32,
    fetch: Fetch<'_>,
    device: &Device,
) -> Result<TrialOutput, UnitError> {
    let l = spec.landscape.as_ref().ok_or("not a landscape sweep")?;
    let points: Vec<(f64, f64)> = l.tile_range(tile as usize).map(|k| l.point(k)).collect();
    if points.is_empty() {
        return Err(format!("tile {tile} is past the end of the grid").into());
    }
    let (loss, acc, digest, directions) = with_evaluator((sweep, spec, e), device, fetch, |ev| {
        let (loss, acc) = tile_values(ev, &points, l)?;
        Ok((
            loss,
            acc,
            ev.digest,
            (tile == 0).then(|| ev.directions.clone()),
        ))
    })?;
    let mut bytes = Vec::with_capacity(points.len() * 16);
    for v in loss.iter().chain(&acc) {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    let min = loss
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(f64::NAN, f64::min);
    let mut final_metrics = vec![("directions_fnv48".into(), digest as f64)];
    if min.is_finite() {
        final_metrics.insert(0, ("loss".into(), min));
    }
    let mut artifacts = vec![(TILE_FILE.into(), bytes)];
    if let Some(d) = directions {
        artifacts.push(("directions.safetensors".into(), d));
    }
    Ok(TrialOutput {
        end: TrialEnd::Completed,
        final_metrics,
        artifacts,
    })
}

/// Hessian-vector products for round `round`, shard `shard` of the scan's Hessian:
/// artifacts `hvp.f64` (the products, in the block's layout) and `hvp.json` (the method
/// and the Hessian's size). The first round's block is drawn here from the spec's seed
/// (the coordinator, which never sees the model, leaves it empty).
pub fn run_hvp(
    sweep: &str,
    spec: &SweepSpec,
    e: &EvaluatorSpec,
    (round, shard): (usize, usize),
    fetch: Fetch<'_>,
    device: &Device,
) -> Result<TrialOutput, UnitError> {
    let l = spec.landscape.as_ref().ok_or("not a landscape sweep")?;
    let h = l.hessian.as_ref().ok_or("no [landscape.hessian]")?;
    let block = fetch(&format!("hessian_block_{round}.f64"))?;
    let (products, n) = with_evaluator((sweep, spec, e), device, fetch, |ev| {
        let n = ev.trainable;
        let drawn;
        let vectors: &[u8] = if block.is_empty() && round == 0 {
            drawn = le_f64(&h.first_vectors(n));
            &drawn
        } else {
            &block
        };
        let products = hvps(ev, vectors, (shard, h.shards), &[])?;
        Ok((products, n))
    })?;
    let k = products.len() / (8 * n);
    Ok(TrialOutput {
        end: TrialEnd::Completed,
        final_metrics: vec![("hvps".into(), k as f64)],
        artifacts: vec![
            ("hvp.f64".into(), products),
            (
                "hvp.json".into(),
                serde_json::to_vec(&serde_json::json!({"method": "exact", "parameters": n}))
                    .expect("json"),
            ),
        ],
    })
}

/// Curvature at point `k` of the sub-grid (artifact `curvature.json`), by Lanczos and
/// Hutchinson here on the evaluator's products over all its data.
pub fn run_curvature(
    sweep: &str,
    spec: &SweepSpec,
    e: &EvaluatorSpec,
    k: usize,
    fetch: Fetch<'_>,
    device: &Device,
) -> Result<TrialOutput, UnitError> {
    let l = spec.landscape.as_ref().ok_or("not a landscape sweep")?;
    let c = l.curvature.as_ref().ok_or("no [landscape.curvature]")?;
    let (a, b) = l.curvature_point(k).ok_or("no [landscape.curvature]")?;
    let coords: Vec<f64> = if l.y.is_some() { vec![a, b] } else { vec![a] };
    let p = with_evaluator((sweep, spec, e), device, fetch, |ev| {
        let n = ev.trainable;
        super::curvature::lanczos_at(n, c, k as u64, (a, b), |v: &[Vec<f64>]| {
            let out = hvps(ev, &le_f64(v), (0, 1), &coords)?;
            Ok(out
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect::<Vec<f64>>()
                .chunks(n)
                .map(<[f64]>::to_vec)
                .collect())
        })
    })?;
    Ok(super::curvature::output(&p))
}

/// The evaluator's products of `vectors` (f64 little-endian, `ev.trainable` entries
/// each) over its data shard, at the point `coords` (empty: θ*), as the same bytes.
fn hvps(
    ev: &mut Evaluator,
    vectors: &[u8],
    (shard, shards): (usize, usize),
    coords: &[f64],
) -> Result<Vec<u8>, UnitError> {
    let n = ev.trainable;
    if n == 0 || vectors.is_empty() || vectors.len() % (8 * n) != 0 {
        return Err(format!(
            "the Hessian's vectors ({} bytes) are not {n}-vectors of the evaluator's trainable parameters",
            vectors.len()
        )
        .into());
    }
    let dir = Scratch::new()?;
    let (input, output) = (dir.0.join("vectors.f64"), dir.0.join("products.f64"));
    std::fs::write(&input, vectors).map_err(|err| format!("{}: {err}", input.display()))?;
    let r = ev.process.request(&serde_json::json!({
        "op": "hvp", "vectors": input, "out": output,
        "shard": shard, "shards": shards, "point": coords,
    }))?;
    if r["parameters"].as_u64() != Some(n as u64) {
        return Err(format!(
            "the evaluator answered hvp for {} parameters, not {n}",
            r["parameters"]
        )
        .into());
    }
    let products = std::fs::read(&output)
        .map_err(|err| format!("the evaluator's products {}: {err}", output.display()))?;
    if products.len() != vectors.len() {
        return Err(format!(
            "the evaluator wrote {} bytes of products for {} bytes of vectors",
            products.len(),
            vectors.len()
        )
        .into());
    }
    Ok(products)
}

fn le_f64(v: &[Vec<f64>]) -> Vec<u8> {
    v.iter().flatten().flat_map(|x| x.to_le_bytes()).collect()
}

/// Runs `f` on a free evaluator of `sweep` (started if none is free); one that failed
/// is not used again: the next unit starts a fresh one.
fn with_evaluator<T>(
    (sweep, spec, e): (&str, &SweepSpec, &EvaluatorSpec),
    device: &Device,
    fetch: Fetch<'_>,
    f: impl FnOnce(&mut Evaluator) -> Result<T, UnitError>,
) -> Result<T, UnitError> {
    let ev = take(sweep, spec, e, device, fetch)?;
    let mut guard = ev.lock().expect("evaluator lock");
    let result = f(&mut guard);
    guard.last_used = Instant::now();
    if result.is_err() {
        drop(guard);
        forget(sweep, &ev);
    }
    result
}

fn tile_values(
    ev: &mut Evaluator,
    points: &[(f64, f64)],
    l: &LandscapeSpec,
) -> Result<(Vec<f64>, Vec<f64>), UnitError> {
    let pts: Vec<serde_json::Value> = points
        .iter()
        .map(|&(x, y)| match l.y {
            Some(_) => serde_json::json!([x, y]),
            None => serde_json::json!([x]),
        })
        .collect();
    let r = ev
        .process
        .request(&serde_json::json!({"op": "tile", "points": pts}))?;
    let column = |key: &str| -> Result<Vec<f64>, UnitError> {
        let v = r[key]
            .as_array()
            .ok_or_else(|| format!("the evaluator's answer to a tile has no {key:?} list"))?;
        if v.len() != points.len() {
            return Err(format!(
                "the evaluator answered {} values of {key} for {} points",
                v.len(),
                points.len()
            )
            .into());
        }
        Ok(v.iter().map(|x| x.as_f64().unwrap_or(f64::NAN)).collect())
    };
    Ok((column("loss")?, column("accuracy")?))
}

/// A free evaluator of `sweep`, or a new one.
fn take(
    sweep: &str,
    spec: &SweepSpec,
    e: &EvaluatorSpec,
    device: &Device,
    fetch: Fetch<'_>,
) -> Result<Arc<Mutex<Evaluator>>, UnitError> {
    {
        let mut p = pool().lock().expect("pool lock");
        // One scan at a time is the common case: a finished scan's evaluators go.
        p.retain(|k, _| k == sweep);
        let location = device.location();
        if let Some(free) = p.get(sweep).and_then(|evs| {
            evs.iter()
                .find(|e| e.try_lock().is_ok_and(|e| e.device == location))
        }) {
            return Ok(free.clone());
        }
    }
    let ev = Arc::new(Mutex::new(start(spec, e, device, fetch)?));
    pool()
        .lock()
        .expect("pool lock")
        .entry(sweep.to_owned())
        .or_default()
        .push(ev.clone());
    Ok(ev)
}

fn forget(sweep: &str, ev: &Arc<Mutex<Evaluator>>) {
    if let Some(evs) = pool().lock().expect("pool lock").get_mut(sweep) {
        evs.retain(|e| !Arc::ptr_eq(e, ev));
    }
}

/// Starts an evaluator, hands it the directions, and returns it ready for tiles.
fn start(
    spec: &SweepSpec,
    e: &EvaluatorSpec,
    device: &Device,
    fetch: Fetch<'_>,
) -> Result<Evaluator, UnitError> {
    let l = spec.landscape.as_ref().ok_or("not a landscape sweep")?;
    let (mut process, hello) = Process::start(e, device)?;
    let trainable = hello["trainable"]
        .as_u64()
        .ok_or_else(|| format!("the evaluator's ready line has no \"trainable\" count: {hello}"))?
        as usize;
    let dir = Scratch::new()?;
    let weights_path = dir.0.join("weights.safetensors");
    process.request(&serde_json::json!({"op": "weights", "path": weights_path}))?;
    let bytes = std::fs::read(&weights_path)
        .map_err(|err| format!("the evaluator's weights {}: {err}", weights_path.display()))?;
    let weights = directions::host_tensors(&bytes, "the evaluator's weights")?;
    let dirs = directions::make(l, &weights, fetch)?;
    let file = directions::file(&dirs)?;
    let dirs_path = dir.0.join("directions.safetensors");
    std::fs::write(&dirs_path, &file).map_err(|err| format!("{}: {err}", dirs_path.display()))?;
    process
        .request(&serde_json::json!({"op": "directions", "path": dirs_path, "axes": dirs.len()}))?;
    Ok(Evaluator {
        process,
        device: device.location(),
        last_used: Instant::now(),
        digest: directions::fnv48(dirs.iter().flatten()),
        directions: file,
        trainable,
    })
}
