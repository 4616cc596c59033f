//! How each core action is written: one statement or two per action, inside the
//! batch's transaction.

use rusqlite::params;

use ridgeline_common::ids::UnitId;

use super::StoreError;
use crate::core::Action;

fn metrics_json(m: &[(String, f64)]) -> String {
    // JSON has no NaN: non-finite values are written as null and read back as NaN.
    let v: Vec<(&str, Option<f64>)> = m
        .iter()
        .map(|(n, v)| (n.as_str(), v.is_finite().then_some(*v)))
        .collect();
    serde_json::to_string(&v).expect("metrics serialise")
}

/// One statement, prepared once per connection: every action of every batch runs one
/// of a few statements, and parsing them anew showed in the coordinator's profile.
fn exec(
    tx: &rusqlite::Transaction<'_>,
    sql: &str,
    p: impl rusqlite::Params,
) -> rusqlite::Result<usize> {
    tx.prepare_cached(sql)?.execute(p)
}

pub(super) fn apply_one(tx: &rusqlite::Transaction<'_>, a: &Action) -> Result<(), StoreError> {
    match a {
        Action::SweepCreated {
            sweep,
            spec,
            total,
            at,
        } => {
            exec(
                tx,
                "INSERT INTO sweeps (id, name, spec_json, state, total, created_ms)
                 VALUES (?1, ?2, ?3, 'running', ?4, ?5)",
                params![sweep.as_str(), spec.name, spec.to_json(), total, *at as i64],
            )?;
        }
        Action::UnitCreated {
            unit,
            sweep,
            trial,
            params: p,
            at,
        } => {
            exec(
                tx,
                "INSERT INTO units (id, sweep_id, trial, params_json, state, created_ms)
                 VALUES (?1, ?2, ?3, ?4, 'pending', ?5)",
                params![
                    unit.0 as i64,
                    sweep.as_str(),
                    trial,
                    serde_json::to_string(p).expect("params serialise"),
                    *at as i64
                ],
            )?;
        }
        Action::UnitLeased {
            unit,
            worker,
            attempt,
            resumes,
            at,
        } => {
            exec(
                tx,
                "UPDATE units SET state = 'running', attempts = ?2, worker = ?3, started_ms = ?4
                 WHERE id = ?1",
                params![unit.0 as i64, attempt, worker.as_str(), *at as i64],
            )?;
            // A trainer that starts afresh starts its history afresh; a resuming
            // program adds to what its earlier attempts reported.
            if !resumes {
                exec(
                    tx,
                    "DELETE FROM metrics WHERE unit_id = ?1",
                    [unit.0 as i64],
                )?;
            }
        }
        Action::UnitAdopted { unit, worker } => {
            exec(
                tx,
                "UPDATE units SET state = 'running', worker = ?2 WHERE id = ?1",
                params![unit.0 as i64, worker.as_str()],
            )?;
        }
        Action::UnitRequeued {
            unit,
            attempts,
            interrupted,
            reason,
            ..
        } => {
            exec(
                tx,
                "UPDATE units SET state = 'pending', attempts = ?3, error = ?2, interrupted = ?4
                 WHERE id = ?1",
                params![unit.0 as i64, reason, attempts, interrupted],
            )?;
        }
        Action::Progress {
            unit,
            step,
            metrics,
        } => {
            insert_metrics(tx, *unit, [(*step, metrics.as_slice())])?;
        }
        Action::SweepBest {
            sweep,
            trial,
            value,
        } => {
            exec(
                tx,
                "UPDATE sweeps SET best_trial = ?2, best_value = ?3 WHERE id = ?1",
                params![sweep.as_str(), trial, value],
            )?;
        }
        Action::SweepResumed { sweep, before } => {
            exec(
                tx,
                "UPDATE sweeps SET state = 'running', finished_ms = NULL WHERE id = ?1",
                [sweep.as_str()],
            )?;
            exec(
                tx,
                "UPDATE units SET state = 'pending', error = NULL, finished_ms = NULL,
                     final_json = NULL
                 WHERE sweep_id = ?1 AND state = 'cancelled' AND trial < ?2",
                rusqlite::params![sweep.as_str(), before],
            )?;
        }
        Action::SweepExtended { sweep, spec, total } => {
            exec(
                tx,
                "UPDATE sweeps SET spec_json = ?2, total = ?3, state = 'running',
                     finished_ms = NULL
                 WHERE id = ?1",
                params![sweep.as_str(), spec.to_json(), total],
            )?;
        }
        Action::SweepDeleted { sweep } => {
            exec(
                tx,
                "DELETE FROM metrics WHERE unit_id IN (SELECT id FROM units WHERE sweep_id = ?1)",
                [sweep.as_str()],
            )?;
            exec(
                tx,
                "DELETE FROM units WHERE sweep_id = ?1",
                [sweep.as_str()],
            )?;
            exec(tx, "DELETE FROM sweeps WHERE id = ?1", [sweep.as_str()])?;
        }
        Action::UnitFinished {
            unit,
            state,
            metrics,
            error,
            duration_s,
            worker,
            history,
            resumes,
            at,
            ..
        } => {
            // The winning attempt's own history replaces whatever progress was stored
            // (other attempts', or holes left by a restart); a resuming program's is
            // merged in, its reports of a step replacing earlier ones.
            if let Some(h) = history {
                if !resumes {
                    exec(
                        tx,
                        "DELETE FROM metrics WHERE unit_id = ?1",
                        [unit.0 as i64],
                    )?;
                }
                insert_metrics(tx, *unit, h.iter().map(|(s, m)| (*s, m.as_slice())))?;
            }
            exec(
                tx,
                "UPDATE units SET state = ?2, final_json = ?3, error = ?4, duration_s = ?5,
                     worker = COALESCE(?6, worker), finished_ms = ?7
                 WHERE id = ?1",
                params![
                    unit.0 as i64,
                    state.as_str(),
                    metrics_json(metrics),
                    (!error.is_empty()).then_some(error.as_str()),
                    duration_s,
                    worker.as_ref().map(|w| w.as_str()),
                    *at as i64
                ],
            )?;
        }
        Action::SweepFinished {
            sweep,
            state,
            best,
            at,
        } => {
            exec(
                tx,
                "UPDATE sweeps SET state = ?2, finished_ms = ?3, best_trial = ?4, best_value = ?5
                 WHERE id = ?1",
                params![
                    sweep.as_str(),
                    state.as_str(),
                    *at as i64,
                    best.map(|b| b.0),
                    best.map(|b| b.1)
                ],
            )?;
        }
        Action::WorkerRegistered { worker, info, at } => {
            exec(
                tx,
                "INSERT INTO workers (id, name, hostname, slots, devices, registered_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (id) DO UPDATE SET name = ?2, hostname = ?3, slots = ?4,
                     devices = ?5, registered_ms = ?6, gone_reason = NULL",
                params![
                    worker.as_str(),
                    info.name,
                    info.hostname,
                    info.slots,
                    info.devices.join("; "),
                    *at as i64
                ],
            )?;
        }
        Action::WorkerSecret { worker, sha256 } => {
            exec(
                tx,
                "UPDATE workers SET secret_sha256 = ?2 WHERE id = ?1",
                params![worker.as_str(), sha256],
            )?;
        }
        Action::WorkerGone { worker, reason } => {
            exec(
                tx,
                "UPDATE workers SET gone_reason = ?2 WHERE id = ?1",
                params![worker.as_str(), reason],
            )?;
        }
        // Only counted (a metric); the requeue or failure that follows is stored.
        Action::LeaseExpired { .. } | Action::CheckpointsDropped { .. } => {}
    }
    Ok(())
}

fn insert_metrics<'a>(
    tx: &rusqlite::Transaction<'_>,
    unit: UnitId,
    steps: impl IntoIterator<Item = (u32, &'a [(String, f64)])>,
) -> Result<(), StoreError> {
    let mut st = tx.prepare_cached(
        "INSERT OR REPLACE INTO metrics (unit_id, step, name, value) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for (step, metrics) in steps {
        for (name, value) in metrics {
            st.execute(params![
                unit.0 as i64,
                step,
                name,
                value.is_finite().then_some(*value)
            ])?;
        }
    }
    Ok(())
}
