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

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use candle_core::{Device, DeviceLocation};
use ridgeline_common::landscape::{
    EvaluatorSpec, HostTensor, LandscapeSpec, TILE_FILE, flat_order, random_direction,
};
use ridgeline_common::spec::SweepSpec;

use crate::UnitError;
use crate::train::{TrialEnd, TrialOutput};

/// The Python module that serves the protocol (in the `ridgeline` package).
pub const EVALUATOR_MODULE: &str = "ridgeline.torch.evaluator";

/// Lines of the evaluator's stderr kept for error messages.
const STDERR_TAIL: usize = 30;

/// One running evaluator with its scan's directions loaded.
struct Evaluator {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    stderr: Arc<Mutex<VecDeque<String>>>,
    timeout: Duration,
    /// FNV-1a (48 bits) of the directions' f32 bytes, reported with every tile.
    digest: u64,
    /// The directions file, handed in with the scan's first tile (an output).
    directions: Vec<u8>,
}

impl Drop for Evaluator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
    let r = request(ev, &serde_json::json!({"op": "tile", "points": pts}))?;
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
    let python = e.interpreter.as_deref().unwrap_or("python3");
    let mut cmd = Command::new(python);
    cmd.args(["-m", EVALUATOR_MODULE, &e.python])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("PYTHONUNBUFFERED", "1")
        .env("RIDGELINE_DTYPE", e.dtype.as_str());
    if let Some(w) = &e.workdir {
        if !w.is_dir() {
            return Err(format!(
                "landscape.evaluator.workdir {} is not a folder on worker host {}",
                w.display(),
                crate::host::default_name()
            )
            .into());
        }
        cmd.current_dir(w);
    }
    // The evaluator runs on this slot's device: a GPU as its only visible one.
    match device.location() {
        DeviceLocation::Cuda { gpu_id } => {
            cmd.env("CUDA_VISIBLE_DEVICES", gpu_id.to_string())
                .env("RIDGELINE_DEVICE", "cuda:0");
        }
        _ => {
            cmd.env("RIDGELINE_DEVICE", "cpu");
        }
    }
    let mut child = cmd.spawn().map_err(|err| {
        format!("cannot start the evaluator {python} -m {EVALUATOR_MODULE}: {err}")
    })?;
    let stdin = child.stdin.take().expect("piped");
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let tail: Arc<Mutex<VecDeque<String>>> = Arc::default();
    let keep = tail.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let mut t = keep.lock().expect("stderr lock");
            if t.len() == STDERR_TAIL {
                t.pop_front();
            }
            t.push_back(line);
        }
    });
    let mut ev = Evaluator {
        child,
        stdin,
        lines,
        stderr: tail,
        timeout: Duration::from_secs_f64(e.timeout),
        digest: 0,
        directions: Vec::new(),
    };
    let hello = receive(&mut ev, "starting")?;
    if hello["ready"] != serde_json::json!(true) {
        return Err(format!("the evaluator did not say it was ready: {hello}").into());
    }
    let dir = scratch_dir()?;
    let weights_path = dir.join("weights.safetensors");
    request(
        &mut ev,
        &serde_json::json!({"op": "weights", "path": weights_path}),
    )?;
    let bytes = std::fs::read(&weights_path)
        .map_err(|err| format!("the evaluator's weights {}: {err}", weights_path.display()))?;
    let weights = host_tensors(&bytes)?;
    let axes = if l.y.is_some() { 2 } else { 1 };
    let dirs: Vec<Vec<HostTensor>> = (0..axes)
        .map(|axis| random_direction(&l.directions, &weights, axis))
        .collect();
    ev.digest = fnv48(dirs.iter().flatten());
    ev.directions = directions_file(&dirs)?;
    let dirs_path = dir.join("directions.safetensors");
    std::fs::write(&dirs_path, &ev.directions)
        .map_err(|err| format!("{}: {err}", dirs_path.display()))?;
    request(
        &mut ev,
        &serde_json::json!({"op": "directions", "path": dirs_path, "axes": axes}),
    )?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(ev)
}

/// A fresh folder for the files handed to and from an evaluator.
fn scratch_dir() -> Result<std::path::PathBuf, UnitError> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("ridgeline-evaluator-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|err| format!("{}: {err}", dir.display()))?;
    Ok(dir)
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

/// Sends one request and returns the answer; an `error` answer, a dead or hung
/// evaluator, or an answer out of protocol is an error naming what happened.
fn request(ev: &mut Evaluator, req: &serde_json::Value) -> Result<serde_json::Value, UnitError> {
    let what = req["op"].as_str().unwrap_or("request").to_owned();
    let line = serde_json::to_string(req).expect("json") + "\n";
    if let Err(err) = ev
        .stdin
        .write_all(line.as_bytes())
        .and_then(|()| ev.stdin.flush())
    {
        return Err(died(ev, &format!("cannot send {what}: {err}")));
    }
    let answer = receive(ev, &what)?;
    if let Some(err) = answer.get("error") {
        let text = err.as_str().unwrap_or_default();
        // A Python traceback's last line says what went wrong.
        let last = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or(text);
        return Err(format!("the evaluator failed on {what}: {last}\n{text}").into());
    }
    Ok(answer)
}

fn receive(ev: &mut Evaluator, what: &str) -> Result<serde_json::Value, UnitError> {
    match ev.lines.recv_timeout(ev.timeout) {
        Ok(line) => serde_json::from_str(&line).map_err(|err| {
            format!("the evaluator answered {what} out of protocol ({err}): {line:.200}").into()
        }),
        Err(RecvTimeoutError::Timeout) => {
            let _ = ev.child.kill();
            Err(died(
                ev,
                &format!(
                    "the evaluator did not answer {what} within {} s (landscape.evaluator.timeout); stopped",
                    ev.timeout.as_secs_f64()
                ),
            ))
        }
        Err(RecvTimeoutError::Disconnected) => {
            let status = ev.child.wait().map(|s| s.to_string()).unwrap_or_default();
            Err(died(
                ev,
                &format!("the evaluator exited ({status}) during {what}"),
            ))
        }
    }
}

/// An error with the tail of the evaluator's stderr.
fn died(ev: &Evaluator, why: &str) -> UnitError {
    // The stderr thread may still be reading the last lines.
    std::thread::sleep(Duration::from_millis(50));
    let tail: Vec<String> = ev
        .stderr
        .lock()
        .expect("stderr lock")
        .iter()
        .cloned()
        .collect();
    match tail.last() {
        Some(last) => format!("{why}: {last}\nstderr ends with:\n{}", tail.join("\n")).into(),
        None => why.to_owned().into(),
    }
}
