//! What the store reads back: a sweep's trials page by page, what a restarted core
//! needs, what logs and scans ask about one unit or one sweep.

use rusqlite::{OptionalExtension, params};

use ridgeline_common::ids::{SweepId, UnitId, WorkerId};
use ridgeline_common::params::Params;
use ridgeline_common::spec::SweepSpec;

use super::{ScanSummary, Store, StoreError, SweepRow, TrialRow, parse_json, sweep_row};
use crate::core::{Best, Counts, StoredSweep, StoredTrial, StoredUnit, SweepState, UnitState};

/// A unit's sweep, trial, the worker of its last attempt, and its attempts so far.
pub type UnitOwner = (SweepId, u32, Option<String>, u32);

impl Store {
    /// The state of one trial of a sweep, if it was generated.
    pub fn trial_state(
        &self,
        sweep: &SweepId,
        trial: u32,
    ) -> Result<Option<UnitState>, StoreError> {
        let s: Option<String> = self
            .conn
            .query_row(
                "SELECT state FROM units WHERE sweep_id = ?1 AND trial = ?2",
                params![sweep.as_str(), trial],
                |r| r.get(0),
            )
            .optional()?;
        Ok(s.and_then(|s| UnitState::parse(&s)))
    }

    /// A trial's state and the number of its attempts, if it was generated.
    pub fn trial_attempts(
        &self,
        sweep: &SweepId,
        trial: u32,
    ) -> Result<Option<(UnitState, u32)>, StoreError> {
        let row: Option<(String, u32)> = self
            .conn
            .query_row(
                "SELECT state, attempts FROM units WHERE sweep_id = ?1 AND trial = ?2",
                params![sweep.as_str(), trial],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        Ok(row.and_then(|(s, a)| UnitState::parse(&s).map(|s| (s, a))))
    }

    /// A unit's sweep, trial and the worker of its last attempt.
    pub fn unit_owner(&self, unit: UnitId) -> Result<Option<UnitOwner>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT sweep_id, trial, worker, attempts FROM units WHERE id = ?1",
                [unit.0 as i64],
                |r| Ok((SweepId(r.get(0)?), r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?)
    }

    /// The completed feasible trials of a sweep with a bounded `search.keep` and their
    /// metric values, the best `keep` of them (ties: the lower trial), for rebuilding
    /// which trials keep their checkpoints.
    fn kept(&self, id: &SweepId, spec: &SweepSpec) -> Result<Vec<(u32, f64)>, StoreError> {
        let Some(mut kept) = crate::core::Kept::of(spec) else {
            return Ok(vec![]);
        };
        let mut st = self.conn.prepare_cached(
            "SELECT trial, final_json FROM units WHERE sweep_id = ?1 AND state = 'completed'",
        )?;
        let mut rows = st.query([id.as_str()])?;
        while let Some(r) = rows.next()? {
            let Some(j) = r.get::<_, Option<String>>(1)? else {
                continue;
            };
            let finals: Vec<(String, f64)> =
                parse_json::<Vec<(String, Option<f64>)>>("final metrics", &j)?
                    .into_iter()
                    .map(|(n, v)| (n, v.unwrap_or(f64::NAN)))
                    .collect();
            let value = finals
                .iter()
                .find(|(n, _)| n == spec.metric())
                .map(|(_, v)| *v)
                .filter(|v| v.is_finite());
            if let Some(v) = value.filter(|_| spec.search.violation(&finals) <= 0.0) {
                // Bounded memory: only the best so far stay.
                kept.offer(r.get(0)?, Some(v));
            }
        }
        Ok(kept.values())
    }

    /// What an adaptive searcher or a scheduler learned from: the sweep's completed,
    /// pruned and live trials, with their parameters, final value of `metric` and its
    /// history (one query each for units and metrics).
    fn learned(&self, id: &SweepId, spec: &SweepSpec) -> Result<Vec<StoredTrial>, StoreError> {
        let metric = spec.metric();
        let mut st = self.conn.prepare_cached(
            "SELECT id, trial, params_json, state, final_json FROM units WHERE sweep_id = ?1
             AND state IN ('completed', 'pruned', 'pending', 'running') ORDER BY trial",
        )?;
        let mut rows = st.query([id.as_str()])?;
        let mut out = Vec::new();
        let mut index = std::collections::HashMap::new();
        while let Some(r) = rows.next()? {
            let state: String = r.get(3)?;
            let final_json: Option<String> = r.get(4)?;
            let finals: Vec<(String, f64)> = match final_json {
                Some(j) => parse_json::<Vec<(String, Option<f64>)>>("final metrics", &j)?
                    .into_iter()
                    .map(|(n, v)| (n, v.unwrap_or(f64::NAN)))
                    .collect(),
                None => vec![],
            };
            let value = finals
                .iter()
                .find(|(n, _)| n == metric)
                .map(|(_, v)| *v)
                .filter(|v| !v.is_nan());
            let violation = spec.search.violation(&finals);
            let values = if spec.is_multi_objective() {
                spec.objective_values(&finals).unwrap_or_default()
            } else {
                vec![]
            };
            index.insert(r.get::<_, i64>(0)?, out.len());
            out.push(StoredTrial {
                trial: r.get(1)?,
                params: parse_json("parameters", &r.get::<_, String>(2)?)?,
                state: UnitState::parse(&state).unwrap_or(UnitState::Pending),
                value,
                history: vec![],
                violation,
                values,
            });
        }
        let mut st = self.conn.prepare_cached(
            "SELECT m.unit_id, m.step, m.value FROM metrics m JOIN units u ON u.id = m.unit_id
             WHERE u.sweep_id = ?1 AND m.name = ?2 ORDER BY m.unit_id, m.step",
        )?;
        let mut rows = st.query(params![id.as_str(), metric])?;
        while let Some(r) = rows.next()? {
            if let Some(&i) = index.get(&r.get::<_, i64>(0)?) {
                let v: Option<f64> = r.get(2)?;
                out[i].history.push((r.get(1)?, v.unwrap_or(f64::NAN)));
            }
        }
        Ok(out)
    }

    /// Totals of a scan's units (units `0..tiles` are tiles, the rest Hessian shards),
    /// computed by SQLite rather than by loading every row.
    pub fn scan_summary(&self, id: &SweepId, tiles: u32) -> Result<ScanSummary, StoreError> {
        let (tile_seconds, hessian_seconds): (Option<f64>, Option<f64>) = self.conn.query_row(
            "SELECT SUM(CASE WHEN trial < ?2 THEN duration_s END),
                    SUM(CASE WHEN trial >= ?2 THEN duration_s END)
             FROM units WHERE sweep_id = ?1",
            params![id.as_str(), tiles],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let samples: Option<String> = self
            .conn
            .query_row(
                "SELECT final_json FROM units WHERE sweep_id = ?1 AND state = 'completed'
                 AND trial < ?2 LIMIT 1",
                params![id.as_str(), tiles],
                |r| r.get(0),
            )
            .optional()?;
        let samples = match samples {
            Some(j) => parse_json::<Vec<(String, Option<f64>)>>("final metrics", &j)?
                .into_iter()
                .find(|(n, _)| n == "samples")
                .and_then(|(_, v)| v),
            None => None,
        };
        let mut st = self.conn.prepare(
            "SELECT DISTINCT worker FROM units WHERE sweep_id = ?1 AND worker IS NOT NULL
             ORDER BY worker",
        )?;
        let workers = st
            .query_map([id.as_str()], |r| r.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        Ok(ScanSummary {
            samples,
            tile_seconds: tile_seconds.unwrap_or(0.0),
            hessian_seconds: hessian_seconds.unwrap_or(0.0),
            workers,
        })
    }

    /// Trial indices of a sweep's completed units.
    pub fn completed_trials(&self, id: &SweepId) -> Result<Vec<u32>, StoreError> {
        let mut st = self
            .conn
            .prepare("SELECT trial FROM units WHERE sweep_id = ?1 AND state = 'completed'")?;
        let rows = st.query_map([id.as_str()], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Everything the core needs to continue: every sweep with its counts, its best
    /// trial and its units that were not final. Final units are counted, not loaded.
    pub fn restore(&self) -> Result<Vec<StoredSweep>, StoreError> {
        let mut out = Vec::new();
        for row in self.sweeps()? {
            let id = row.id.clone();
            let mut finals = Counts::default();
            let mut generated = 0;
            let mut st = self.conn.prepare_cached(
                "SELECT state, COUNT(*), MAX(trial) FROM units WHERE sweep_id = ?1 GROUP BY state",
            )?;
            let mut rows = st.query([id.as_str()])?;
            while let Some(r) = rows.next()? {
                let state: String = r.get(0)?;
                let n: u32 = r.get(1)?;
                let max: u32 = r.get(2)?;
                generated = generated.max(max + 1);
                match UnitState::parse(&state) {
                    Some(UnitState::Completed) => finals.completed += n,
                    Some(UnitState::Failed) => finals.failed += n,
                    Some(UnitState::Diverged) => finals.diverged += n,
                    Some(UnitState::Cancelled) => finals.cancelled += n,
                    Some(UnitState::Pruned) => finals.pruned += n,
                    _ => {}
                }
            }
            let mut st = self.conn.prepare_cached(
                "SELECT id, trial, params_json, state, attempts, worker, interrupted FROM units
                 WHERE sweep_id = ?1 AND state IN ('pending', 'running') ORDER BY trial",
            )?;
            let mut rows = st.query([id.as_str()])?;
            let mut live = Vec::new();
            while let Some(r) = rows.next()? {
                let state: String = r.get(3)?;
                live.push(StoredUnit {
                    unit: UnitId(r.get::<_, i64>(0)? as u64),
                    trial: r.get(1)?,
                    params: parse_json("parameters", &r.get::<_, String>(2)?)?,
                    state: UnitState::parse(&state).unwrap_or(UnitState::Pending),
                    attempts: r.get(4)?,
                    interrupted: r.get(6)?,
                    worker: r.get::<_, Option<String>>(5)?.map(WorkerId),
                });
            }
            let best = match row.best {
                Some((trial, value)) => {
                    let p: Option<String> = self
                        .conn
                        .query_row(
                            "SELECT params_json FROM units WHERE sweep_id = ?1 AND trial = ?2",
                            params![id.as_str(), trial],
                            |r| r.get(0),
                        )
                        .optional()?;
                    Some(Best {
                        trial,
                        value,
                        params: match p {
                            Some(p) => parse_json("parameters", &p)?,
                            None => Params::new(),
                        },
                    })
                }
                None => None,
            };
            let s = &row.spec.search;
            // A multi-objective sweep's front is rebuilt from its trials, finished or not.
            let trials = if (row.state == SweepState::Running
                && (s.algorithm.is_adaptive() || s.scheduler.is_some()))
                || row.spec.is_multi_objective()
            {
                self.learned(&id, &row.spec)?
            } else {
                vec![]
            };
            let kept = match crate::core::Kept::of(&row.spec) {
                Some(_) if row.state == SweepState::Running => self.kept(&id, &row.spec)?,
                _ => vec![],
            };
            out.push(StoredSweep {
                kept,
                trials,
                id,
                spec: row.spec,
                state: row.state,
                created: row.created_ms,
                finished: row.finished_ms,
                best,
                generated,
                finals,
                live,
                released: None,
            });
        }
        Ok(out)
    }

    /// All sweeps, oldest first.
    pub fn sweeps(&self) -> Result<Vec<SweepRow>, StoreError> {
        let mut st = self.conn.prepare(
            "SELECT id, spec_json, state, total, created_ms, finished_ms, best_trial, best_value
             FROM sweeps ORDER BY created_ms, id",
        )?;
        let rows = st.query_map([], sweep_row)?;
        rows.map(|r| r?).collect()
    }

    /// One sweep.
    pub fn sweep(&self, id: &SweepId) -> Result<Option<SweepRow>, StoreError> {
        let row = self
            .conn
            .query_row(
                "SELECT id, spec_json, state, total, created_ms, finished_ms, best_trial, best_value
                 FROM sweeps WHERE id = ?1",
                [id.as_str()],
                sweep_row,
            )
            .optional()?;
        row.transpose()
    }

    /// Up to `limit` units of a sweep after trial `after`, with their metric histories,
    /// by trial index.
    pub fn trials_page(
        &self,
        id: &SweepId,
        after: Option<u32>,
        limit: u32,
    ) -> Result<Vec<TrialRow>, StoreError> {
        let first = after.map_or(0, |a| i64::from(a) + 1);
        let mut st = self.conn.prepare(
            &format!(
                "SELECT {TRIAL_COLUMNS} FROM units WHERE sweep_id = ?1 AND trial >= ?2 ORDER BY trial LIMIT ?3"
            ),
        )?;
        let mut out = Vec::new();
        let mut rows = st.query(params![id.as_str(), first, i64::from(limit)])?;
        while let Some(r) = rows.next()? {
            out.push(trial_row(r)?);
        }
        let Some(last) = out.last().map(|t| t.trial) else {
            return Ok(out);
        };
        let mut st = self.conn.prepare(
            "SELECT m.unit_id, m.step, m.name, m.value FROM metrics m
             JOIN units u ON u.id = m.unit_id
             WHERE u.sweep_id = ?1 AND u.trial >= ?2 AND u.trial <= ?3
             ORDER BY m.unit_id, m.step, m.name",
        )?;
        fill_histories(&mut out, st.query(params![id.as_str(), first, last])?)?;
        Ok(out)
    }
}

impl Store {
    /// Loads the histories of `rows` (any trials, of any sweep).
    pub(super) fn add_histories(&self, rows: &mut [TrialRow]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = rows.iter().map(|t| t.unit.0 as i64).collect();
        let mut st = self.conn.prepare(&format!(
            "SELECT unit_id, step, name, value FROM metrics WHERE unit_id IN ({})
             ORDER BY unit_id, step, name",
            vec!["?"; ids.len()].join(", ")
        ))?;
        fill_histories(rows, st.query(rusqlite::params_from_iter(ids.iter()))?)
    }
}

/// Appends `(unit_id, step, name, value)` rows, ordered by unit and step, to the
/// histories of the trials they belong to.
fn fill_histories(out: &mut [TrialRow], mut rows: rusqlite::Rows<'_>) -> Result<(), StoreError> {
    let index: std::collections::HashMap<u64, usize> =
        out.iter().enumerate().map(|(i, t)| (t.unit.0, i)).collect();
    while let Some(r) = rows.next()? {
        let unit = r.get::<_, i64>(0)? as u64;
        let step: u32 = r.get(1)?;
        let name: String = r.get(2)?;
        // NaN is stored as NULL by SQLite; read it back as NaN.
        let value: Option<f64> = r.get(3)?;
        let Some(&i) = index.get(&unit) else { continue };
        let h = &mut out[i].history;
        if h.last().is_none_or(|(s, _)| *s != step) {
            h.push((step, vec![]));
        }
        h.last_mut()
            .expect("pushed above")
            .1
            .push((name, value.unwrap_or(f64::NAN)));
    }
    Ok(())
}

/// The columns of [`TRIAL_COLUMNS`] as a trial, without its history.
pub(super) fn trial_row(r: &rusqlite::Row<'_>) -> Result<TrialRow, StoreError> {
    let params_json: String = r.get(2)?;
    let state: String = r.get(3)?;
    let final_json: Option<String> = r.get(7)?;
    Ok(TrialRow {
        unit: UnitId(r.get::<_, i64>(0)? as u64),
        trial: r.get(1)?,
        params: parse_json("parameters", &params_json)?,
        state: UnitState::parse(&state).ok_or(StoreError::Corrupt {
            what: "unit state",
            err: state.clone(),
        })?,
        attempts: r.get(4)?,
        interrupted: r.get(9)?,
        worker: r.get(5)?,
        duration_s: r.get(6)?,
        final_metrics: match final_json {
            Some(j) => parse_json::<Vec<(String, Option<f64>)>>("final metrics", &j)?
                .into_iter()
                .map(|(n, v)| (n, v.unwrap_or(f64::NAN)))
                .collect(),
            None => vec![],
        },
        error: r.get(8)?,
        history: vec![],
    })
}

/// The columns [`trial_row`] reads, in its order.
pub(super) const TRIAL_COLUMNS: &str =
    "id, trial, params_json, state, attempts, worker, duration_s, final_json, error, interrupted";
