//! The SQLite store: one file in WAL mode holding sweeps, units (trials), per-step
//! metrics and workers. The event loop applies a batch of core actions in one
//! transaction, so durability costs one fsync per batch, not per unit.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use ridgeline_common::ids::{SweepId, UnitId};
use ridgeline_common::params::Params;
use ridgeline_common::spec::SweepSpec;

use crate::core::{
    Action, Best, Counts, Millis, StoredSweep, StoredTrial, StoredUnit, SweepState, UnitState,
};
use ridgeline_common::ids::WorkerId;

/// Store errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Stored JSON did not parse.
    #[error("stored {what} is corrupt: {err}")]
    Corrupt {
        /// What was being read.
        what: &'static str,
        /// The parse error.
        err: String,
    },
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS sweeps (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    spec_json   TEXT NOT NULL,
    state       TEXT NOT NULL,
    total       INTEGER NOT NULL,
    created_ms  INTEGER NOT NULL,
    finished_ms INTEGER,
    best_trial  INTEGER,
    best_value  REAL
);
CREATE TABLE IF NOT EXISTS units (
    id          INTEGER PRIMARY KEY,
    sweep_id    TEXT NOT NULL REFERENCES sweeps(id),
    trial       INTEGER NOT NULL,
    params_json TEXT NOT NULL,
    state       TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    worker      TEXT,
    created_ms  INTEGER NOT NULL,
    started_ms  INTEGER,
    finished_ms INTEGER,
    duration_s  REAL,
    final_json  TEXT,
    error       TEXT,
    UNIQUE (sweep_id, trial)
);
CREATE INDEX IF NOT EXISTS units_by_state ON units (sweep_id, state);
CREATE TABLE IF NOT EXISTS metrics (
    unit_id INTEGER NOT NULL REFERENCES units(id),
    step    INTEGER NOT NULL,
    name    TEXT NOT NULL,
    value   REAL,
    PRIMARY KEY (unit_id, step, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS workers (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    hostname      TEXT NOT NULL,
    slots         INTEGER NOT NULL,
    devices       TEXT NOT NULL,
    registered_ms INTEGER NOT NULL,
    gone_reason   TEXT
);
"#;

/// A stored sweep.
#[derive(Clone, Debug)]
pub struct SweepRow {
    /// Id.
    pub id: SweepId,
    /// Spec.
    pub spec: SweepSpec,
    /// State.
    pub state: SweepState,
    /// Number of units.
    pub total: u32,
    /// Creation time.
    pub created_ms: Millis,
    /// Completion time.
    pub finished_ms: Option<Millis>,
    /// Best trial and its value.
    pub best: Option<(u32, f64)>,
}

/// A stored unit with its history.
#[derive(Clone, Debug)]
pub struct TrialRow {
    /// Unit id.
    pub unit: UnitId,
    /// Trial index.
    pub trial: u32,
    /// Parameters.
    pub params: Params,
    /// State.
    pub state: UnitState,
    /// Leases so far.
    pub attempts: u32,
    /// Worker of the last attempt.
    pub worker: Option<String>,
    /// Seconds the final attempt ran.
    pub duration_s: Option<f64>,
    /// Final metrics.
    pub final_metrics: Vec<(String, f64)>,
    /// Error of failed units.
    pub error: Option<String>,
    /// Per-step metrics, ordered by step.
    pub history: Vec<(u32, Vec<(String, f64)>)>,
}

/// Totals of a scan's units, for its `meta.json`.
#[derive(Clone, Debug, Default)]
pub struct ScanSummary {
    /// Samples each point was evaluated on.
    pub samples: Option<f64>,
    /// Seconds spent on tiles, summed over units.
    pub tile_seconds: f64,
    /// Seconds spent on Hessian-vector products.
    pub hessian_seconds: f64,
    /// Workers that finished units.
    pub workers: Vec<String>,
}

/// The database.
pub struct Store {
    conn: Connection,
}

impl Store {
    /// Opens (creating if needed) the database at `path` for writing.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // WAL + NORMAL: a commit survives a process crash; only an OS crash can lose the
        // last transactions, which the workers will then report again.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        Ok(Store { conn })
    }

    /// Opens an existing database read-only (for queries beside the writer).
    pub fn open_read_only(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(Store { conn })
    }

    /// The largest unit id stored, so a restarted core continues the numbering.
    pub fn max_unit_id(&self) -> Result<u64, StoreError> {
        let v: Option<i64> = self
            .conn
            .query_row("SELECT MAX(id) FROM units", [], |r| r.get(0))?;
        Ok(v.unwrap_or(0) as u64)
    }

    /// Applies a batch of core actions in one transaction.
    pub fn apply(&mut self, actions: &[Action]) -> Result<(), StoreError> {
        if actions.is_empty() {
            return Ok(());
        }
        let tx = self.conn.transaction()?;
        for a in actions {
            apply_one(&tx, a)?;
        }
        // Deterministic fault injection for tests (`--features failpoints`): a commit that
        // fails as a full disk would.
        fail::fail_point!("store::commit", |_| Err(StoreError::Sqlite(
            rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
                Some("database or disk is full (failpoint)".into()),
            )
        )));
        tx.commit()?;
        Ok(())
    }

    /// The largest number in the stored worker ids (`w{n}-name`), so a restarted core
    /// never gives out a dead worker's id again.
    pub fn max_worker_number(&self) -> Result<u64, StoreError> {
        let mut st = self.conn.prepare("SELECT id FROM workers")?;
        let ids = st.query_map([], |r| r.get::<_, String>(0))?;
        let mut max = 0;
        for id in ids {
            let id = id?;
            let n = id
                .strip_prefix('w')
                .and_then(|r| r.split('-').next())
                .and_then(|n| n.parse::<u64>().ok());
            max = max.max(n.unwrap_or(0));
        }
        Ok(max)
    }

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
    pub fn unit_owner(
        &self,
        unit: UnitId,
    ) -> Result<Option<(SweepId, u32, Option<String>)>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT sweep_id, trial, worker FROM units WHERE id = ?1",
                [unit.0 as i64],
                |r| Ok((SweepId(r.get(0)?), r.get(1)?, r.get(2)?)),
            )
            .optional()?)
    }

    /// What an adaptive searcher or a scheduler learned from: the sweep's completed,
    /// pruned and live trials, with their parameters, final value of `metric` and its
    /// history (one query each for units and metrics).
    fn learned(&self, id: &SweepId, metric: &str) -> Result<Vec<StoredTrial>, StoreError> {
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
            let value = match final_json {
                Some(j) => parse_json::<Vec<(String, Option<f64>)>>("final metrics", &j)?
                    .into_iter()
                    .find(|(n, _)| n == metric)
                    .and_then(|(_, v)| v),
                None => None,
            };
            index.insert(r.get::<_, i64>(0)?, out.len());
            out.push(StoredTrial {
                trial: r.get(1)?,
                params: parse_json("parameters", &r.get::<_, String>(2)?)?,
                state: UnitState::parse(&state).unwrap_or(UnitState::Pending),
                value,
                history: vec![],
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
                "SELECT id, trial, params_json, state, attempts, worker FROM units
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
            let trials = if row.state == SweepState::Running
                && (s.algorithm.is_adaptive() || s.scheduler.is_some())
            {
                self.learned(&id, row.spec.metric())?
            } else {
                vec![]
            };
            out.push(StoredSweep {
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
            "SELECT id, trial, params_json, state, attempts, worker, duration_s, final_json, error
             FROM units WHERE sweep_id = ?1 AND trial >= ?2 ORDER BY trial LIMIT ?3",
        )?;
        let mut out = Vec::new();
        let mut rows = st.query(params![id.as_str(), first, i64::from(limit)])?;
        while let Some(r) = rows.next()? {
            let params_json: String = r.get(2)?;
            let state: String = r.get(3)?;
            let final_json: Option<String> = r.get(7)?;
            out.push(TrialRow {
                unit: UnitId(r.get::<_, i64>(0)? as u64),
                trial: r.get(1)?,
                params: parse_json("parameters", &params_json)?,
                state: UnitState::parse(&state).ok_or(StoreError::Corrupt {
                    what: "unit state",
                    err: state.clone(),
                })?,
                attempts: r.get(4)?,
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
            });
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
        let index: std::collections::HashMap<u64, usize> =
            out.iter().enumerate().map(|(i, t)| (t.unit.0, i)).collect();
        let mut rows = st.query(params![id.as_str(), first, last])?;
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
        Ok(out)
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(
    what: &'static str,
    s: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt {
        what,
        err: e.to_string(),
    })
}

fn sweep_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<SweepRow, StoreError>> {
    let spec_json: String = r.get(1)?;
    let state: String = r.get(2)?;
    let best_trial: Option<u32> = r.get(6)?;
    let best_value: Option<f64> = r.get(7)?;
    let id: String = r.get(0)?;
    let total: u32 = r.get(3)?;
    let created: i64 = r.get(4)?;
    let finished: Option<i64> = r.get(5)?;
    Ok((|| {
        Ok(SweepRow {
            id: SweepId(id),
            spec: parse_json("spec", &spec_json)?,
            state: SweepState::parse(&state).ok_or(StoreError::Corrupt {
                what: "sweep state",
                err: state.clone(),
            })?,
            total,
            created_ms: created as u64,
            finished_ms: finished.map(|f| f as u64),
            best: best_trial.zip(best_value),
        })
    })())
}

fn metrics_json(m: &[(String, f64)]) -> String {
    // JSON has no NaN: non-finite values are written as null and read back as NaN.
    let v: Vec<(&str, Option<f64>)> = m
        .iter()
        .map(|(n, v)| (n.as_str(), v.is_finite().then_some(*v)))
        .collect();
    serde_json::to_string(&v).expect("metrics serialise")
}

fn apply_one(tx: &rusqlite::Transaction<'_>, a: &Action) -> Result<(), StoreError> {
    match a {
        Action::SweepCreated {
            sweep,
            spec,
            total,
            at,
        } => {
            tx.execute(
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
            tx.execute(
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
            at,
        } => {
            tx.execute(
                "UPDATE units SET state = 'running', attempts = ?2, worker = ?3, started_ms = ?4
                 WHERE id = ?1",
                params![unit.0 as i64, attempt, worker.as_str(), *at as i64],
            )?;
            // A new attempt starts its history afresh.
            tx.execute("DELETE FROM metrics WHERE unit_id = ?1", [unit.0 as i64])?;
        }
        Action::UnitAdopted { unit, worker } => {
            tx.execute(
                "UPDATE units SET state = 'running', worker = ?2 WHERE id = ?1",
                params![unit.0 as i64, worker.as_str()],
            )?;
        }
        Action::UnitRequeued {
            unit,
            attempts,
            reason,
            ..
        } => {
            tx.execute(
                "UPDATE units SET state = 'pending', attempts = ?3, error = ?2 WHERE id = ?1",
                params![unit.0 as i64, reason, attempts],
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
            tx.execute(
                "UPDATE sweeps SET best_trial = ?2, best_value = ?3 WHERE id = ?1",
                params![sweep.as_str(), trial, value],
            )?;
        }
        Action::SweepDeleted { sweep } => {
            tx.execute(
                "DELETE FROM metrics WHERE unit_id IN (SELECT id FROM units WHERE sweep_id = ?1)",
                [sweep.as_str()],
            )?;
            tx.execute("DELETE FROM units WHERE sweep_id = ?1", [sweep.as_str()])?;
            tx.execute("DELETE FROM sweeps WHERE id = ?1", [sweep.as_str()])?;
        }
        Action::UnitFinished {
            unit,
            state,
            metrics,
            error,
            duration_s,
            worker,
            history,
            at,
            ..
        } => {
            // The winning attempt's own history replaces whatever progress was stored
            // (other attempts', or holes left by a restart).
            if let Some(h) = history {
                tx.execute("DELETE FROM metrics WHERE unit_id = ?1", [unit.0 as i64])?;
                insert_metrics(tx, *unit, h.iter().map(|(s, m)| (*s, m.as_slice())))?;
            }
            tx.execute(
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
            tx.execute(
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
            tx.execute(
                "INSERT OR REPLACE INTO workers (id, name, hostname, slots, devices, registered_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
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
        Action::WorkerGone { worker, reason } => {
            tx.execute(
                "UPDATE workers SET gone_reason = ?2 WHERE id = ?1",
                params![worker.as_str(), reason],
            )?;
        }
        // Only counted (a metric); the requeue or failure that follows is stored.
        Action::LeaseExpired { .. } => {}
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
