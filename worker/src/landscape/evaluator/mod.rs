//! Scans evaluated by the user's own process (`[landscape.evaluator]`): a PyTorch model,
//! its loss and its data live in `python -m ridgeline.torch.evaluator FUNCTION`, which the
//! worker starts once per slot and keeps for the scan's tiles (the model is loaded once).
//!
//! The protocol is one JSON object per line on the evaluator's stdin and stdout (its own
//! prints go to stderr, whose tail is the reason when it fails):
//!
//! 1. it starts and answers `{"ready": true, "parameters": N}`;
//! 2. `{"op": "weights", "path": P}`: it writes θ* (every floating tensor of its
//!    `state_dict`, as f32) to the safetensors file `P`;
//! 3. the worker draws the directions from the sweep's seed with the same code and bits
//!    as built-in scans ([`random_direction`]) and writes them to a file;
//!    `{"op": "directions", "path": P, "axes": 1 | 2}`: the evaluator loads them
//!    (`x.NAME`, and `y.NAME` for 2-D scans);
//! 4. `{"op": "tile", "points": [[x, y], ...]}`: it answers `{"loss": [...],
//!    "accuracy": [...]}` (`null` for NaN), θ* restored exactly after each point.
//!
//! Any other answer is `{"error": TEXT}`. An evaluator that dies, hangs past the spec's
//! `timeout` or answers out of protocol is stopped and the unit fails (it is retried,
//! and the next unit starts a fresh evaluator).

mod process;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use candle_core::Device;
use ridgeline_common::landscape::{
    EvaluatorSpec, HostTensor, LandscapeSpec, TILE_FILE, flat_order, random_direction,
};
use ridgeline_common::spec::SweepSpec;

pub use process::EVALUATOR_MODULE;
use process::{Process, Scratch};

use crate::UnitError;
use crate::train::{TrialEnd, TrialOutput};

/// One running evaluator with its scan's directions loaded.
struct Evaluator {
    process: Process,
    /// FNV-1a (48 bits) of the directions' f32 bytes, reported with every tile.
    digest: u64,
    /// The directions file, handed in with the scan's first tile (an output).
    directions: Vec<u8>,
}

type Pool = Vec<Arc<Mutex<Evaluator>>>;

fn pool() -> &'static Mutex<HashMap<String, Pool>> {
    static POOL: OnceLock<Mutex<HashMap<String, Pool>>> = OnceLock::new();
    POOL.get_or_init(Default::default)
}

/// Evaluates tile `tile` with a free evaluator of this sweep (started if none is free).
pub fn run_tile(
    sweep: &str,
    spec: &SweepSpec,
    e: &EvaluatorSpec,
    tile: u32,
    device: &Device,
) -> Result<TrialOutput, UnitError> {
    let l = spec.landscape.as_ref().ok_or("not a landscape sweep")?;
    let points: Vec<(f64, f64)> = l.tile_range(tile as usize).map(|k| l.point(k)).collect();
    if points.is_empty() {
        return Err(format!("tile {tile} is past the end of the grid").into());
    }
    let ev = take(sweep, spec, e, device)?;
    let mut guard = ev.lock().expect("evaluator lock");
    let result = tile_values(&mut guard, &points, l);
    let (loss, acc) = match result {
        Ok(v) => v,
        Err(err) => {
            // A failed evaluator is not used again: the next unit starts a fresh one.
            drop(guard);
            forget(sweep, &ev);
            return Err(err);
        }
    };
    let mut bytes = Vec::with_capacity(points.len() * 16);
    for v in loss.iter().chain(&acc) {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    let min = loss
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(f64::NAN, f64::min);
    let mut final_metrics = vec![("directions_fnv48".into(), guard.digest as f64)];
    if min.is_finite() {
        final_metrics.insert(0, ("loss".into(), min));
    }
    let mut artifacts = vec![(TILE_FILE.into(), bytes)];
    if tile == 0 {
        artifacts.push(("directions.safetensors".into(), guard.directions.clone()));
    }
    Ok(TrialOutput {
        end: TrialEnd::Completed,
        final_metrics,
        artifacts,
    })
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
) -> Result<Arc<Mutex<Evaluator>>, UnitError> {
    {
        let mut p = pool().lock().expect("pool lock");
        // One scan at a time is the common case: a finished scan's evaluators go.
        p.retain(|k, _| k == sweep);
        if let Some(free) = p
            .get(sweep)
            .and_then(|evs| evs.iter().find(|e| e.try_lock().is_ok()))
        {
            return Ok(free.clone());
        }
    }
    let ev = Arc::new(Mutex::new(start(spec, e, device)?));
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
fn start(spec: &SweepSpec, e: &EvaluatorSpec, device: &Device) -> Result<Evaluator, UnitError> {
    let l = spec.landscape.as_ref().ok_or("not a landscape sweep")?;
    let (mut process, _) = Process::start(e, device)?;
    let dir = Scratch::new()?;
    let weights_path = dir.0.join("weights.safetensors");
    process.request(&serde_json::json!({"op": "weights", "path": weights_path}))?;
    let bytes = std::fs::read(&weights_path)
        .map_err(|err| format!("the evaluator's weights {}: {err}", weights_path.display()))?;
    let weights = host_tensors(&bytes)?;
    let axes = if l.y.is_some() { 2 } else { 1 };
    let dirs: Vec<Vec<HostTensor>> = (0..axes)
        .map(|axis| random_direction(&l.directions, &weights, axis))
        .collect();
    let directions = directions_file(&dirs)?;
    let dirs_path = dir.0.join("directions.safetensors");
    std::fs::write(&dirs_path, &directions)
        .map_err(|err| format!("{}: {err}", dirs_path.display()))?;
    process.request(&serde_json::json!({"op": "directions", "path": dirs_path, "axes": axes}))?;
    Ok(Evaluator {
        process,
        digest: fnv48(dirs.iter().flatten()),
        directions,
    })
}

/// θ* as the evaluator wrote it: f32 tensors, in Ridgeline's flat order.
fn host_tensors(bytes: &[u8]) -> Result<Vec<HostTensor>, UnitError> {
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|err| format!("the evaluator's weights: {err}"))?;
    let mut out: Vec<HostTensor> = st
        .tensors()
        .into_iter()
        .map(|(name, t)| {
            if t.dtype() != safetensors::Dtype::F32 {
                return Err(format!("the evaluator's weights: {name} is not f32"));
            }
            let data = t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect();
            Ok(HostTensor {
                name,
                shape: t.shape().to_vec(),
                data,
            })
        })
        .collect::<Result<_, _>>()?;
    out.sort_by_key(|t| flat_order(&t.name));
    Ok(out)
}

/// The directions as built-in scans store them: `x.NAME` and `y.NAME`, f32.
fn directions_file(dirs: &[Vec<HostTensor>]) -> Result<Vec<u8>, UnitError> {
    let named: Vec<(String, &HostTensor, Vec<u8>)> = dirs
        .iter()
        .zip(["x", "y"])
        .flat_map(|(d, prefix)| {
            d.iter()
                .map(move |t| (format!("{prefix}.{}", t.name), t, le_bytes(&t.data)))
        })
        .collect();
    let views = named
        .iter()
        .map(|(name, t, bytes)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, t.shape.clone(), bytes)
                .map(|v| (name.clone(), v))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| format!("directions: {err}"))?;
    safetensors::serialize(views, None).map_err(|err| format!("directions: {err}").into())
}

fn le_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// FNV-1a (48 bits) of the directions' f32 bytes in order: x's tensors, then y's.
fn fnv48<'a>(tensors: impl Iterator<Item = &'a HostTensor>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for t in tensors {
        for x in &t.data {
            for b in x.to_le_bytes() {
                h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
        }
    }
    h & ((1 << 48) - 1)
}
