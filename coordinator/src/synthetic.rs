//! A finished search of any size, written through the store as the event loop writes a
//! real one (the same actions, the same SQLite file): what the web page's and the
//! store's behaviour at scale is measured on (`ridgeline synthetic`, a hidden command).
//! Nothing here runs in a coordinator.

use std::path::Path;
use std::sync::Arc;

use ridgeline_common::ids::{SweepId, UnitId};
use ridgeline_common::params::{ParamValue, Params};
use ridgeline_common::rng::Rng;
use ridgeline_common::spec::SweepSpec;

use crate::core::{Action, SweepState, UnitState};
use crate::service::db_path;
use crate::store::Store;

/// Actions committed at a time.
const BATCH: usize = 2000;

/// Writes sweep `synthetic-N` with `trials` ended trials into the data folder: a
/// random search over `lr`, `width` and `optimizer` whose `loss` is a noisy function of
/// them, each trial with a history of up to 9 steps; a tenth are pruned early. Returns
/// its id.
pub fn fill(data_dir: &Path, trials: u32, seed: u64) -> Result<SweepId, String> {
    let spec = SweepSpec::from_json(
        &serde_json::json!({
            "name": "synthetic",
            "trial": { "command": ["true"] },
            "search": {
                "algorithm": "random",
                "metric": "loss",
                "num_samples": trials,
                "seed": seed,
                "space": {
                    "lr": { "type": "loguniform", "low": 1e-5, "high": 1.0 },
                    "width": { "type": "int", "low": 16, "high": 512 },
                    "optimizer": { "type": "choice", "values": ["adamw", "sgd", "lion"] },
                },
            },
        })
        .to_string(),
    )
    .map_err(|e| e.to_string())?;
    let sweep = SweepId(format!("synthetic-{trials}"));
    std::fs::create_dir_all(data_dir).map_err(|e| e.to_string())?;
    let mut store = Store::open(&db_path(data_dir)).map_err(|e| e.to_string())?;
    let t0: u64 = 1_790_000_000_000;
    store
        .apply(&[Action::SweepCreated {
            sweep: sweep.clone(),
            spec: Arc::new(spec.clone()),
            total: trials,
            at: t0,
        }])
        .map_err(|e| e.to_string())?;
    let dir = crate::service::sweep_dir(data_dir, &sweep);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("spec.json"), spec.to_json()).map_err(|e| e.to_string())?;
    let mut rng = Rng::new(seed);
    let mut best: Option<(u32, f64)> = None;
    let mut actions = Vec::with_capacity(2 * BATCH);
    for trial in 0..trials {
        let lr = 10f64.powf(-5.0 + 5.0 * rng.next_f64());
        let width = 16 + rng.below(497) as i64;
        let optimizer = ["adamw", "sgd", "lion"][rng.below(3) as usize];
        let params: Params = [
            ("lr".to_owned(), ParamValue::Float(lr)),
            ("width".to_owned(), ParamValue::Int(width)),
            ("optimizer".to_owned(), ParamValue::Str(optimizer.into())),
        ]
        .into_iter()
        .collect();
        let floor = (lr.log10() + 2.5).powi(2) * 0.1
            + (width as f64 - 300.0).abs() / 2000.0
            + if optimizer == "adamw" { 0.0 } else { 0.05 };
        let pruned = rng.below(10) == 0;
        let steps = if pruned { 1 + rng.below(3) as u32 } else { 9 };
        let history: Vec<(u32, Vec<(String, f64)>)> = (1..=steps)
            .map(|s| {
                let v = floor + 1.0 / f64::from(s) + 0.02 * rng.normal();
                (s, vec![("loss".to_owned(), v)])
            })
            .collect();
        let last = history.last().map_or(f64::NAN, |h| h.1[0].1);
        if !pruned && best.is_none_or(|(_, b)| last < b) {
            best = Some((trial, last));
        }
        let unit = UnitId(u64::from(trial) + 1);
        let at = t0 + u64::from(trial) * 50;
        actions.push(Action::UnitCreated {
            unit,
            sweep: sweep.clone(),
            trial,
            params,
            at,
        });
        actions.push(Action::UnitFinished {
            unit,
            sweep: sweep.clone(),
            trial,
            state: if pruned {
                UnitState::Pruned
            } else {
                UnitState::Completed
            },
            metrics: vec![("loss".to_owned(), last)],
            error: String::new(),
            duration_s: 0.5 * f64::from(steps),
            worker: None,
            history: Some(history),
            resumes: false,
            at: at + 40,
        });
        if actions.len() >= 2 * BATCH {
            store.apply(&actions).map_err(|e| e.to_string())?;
            actions.clear();
        }
    }
    if let Some((trial, value)) = best {
        actions.push(Action::SweepBest {
            sweep: sweep.clone(),
            trial,
            value,
        });
    }
    actions.push(Action::SweepFinished {
        sweep: sweep.clone(),
        state: SweepState::Completed,
        best,
        at: t0 + u64::from(trials) * 50,
    });
    store.apply(&actions).map_err(|e| e.to_string())?;
    Ok(sweep)
}
