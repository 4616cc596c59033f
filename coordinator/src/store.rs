//! The SQLite store: one file in WAL mode holding sweeps, units (trials), per-step
//! metrics and workers. The event loop applies a batch of core actions in one
//! transaction, so durability costs one fsync per batch, not per unit.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use ridgeline_common::ids::{SweepId, UnitId};
use ridgeline_common::params::Params;
use ridgeline_common::spec::SweepSpec;

use crate::core::{Action, Millis, SweepState, UnitState};

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
        tx.commit()?;
        Ok(())
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

    /// Every unit of a sweep with its metric history, by trial index.
    pub fn trials(&self, id: &SweepId) -> Result<Vec<TrialRow>, StoreError> {
        let mut st = self.conn.prepare(
            "SELECT id, trial, params_json, state, attempts, worker, duration_s, final_json, error
             FROM units WHERE sweep_id = ?1 ORDER BY trial",
        )?;
        let mut out = Vec::new();
        let mut rows = st.query([id.as_str()])?;
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
        let mut st = self.conn.prepare(
            "SELECT m.unit_id, m.step, m.name, m.value FROM metrics m
             JOIN units u ON u.id = m.unit_id WHERE u.sweep_id = ?1
             ORDER BY m.unit_id, m.step, m.name",
        )?;
        let index: std::collections::HashMap<u64, usize> =
            out.iter().enumerate().map(|(i, t)| (t.unit.0, i)).collect();
        let mut rows = st.query([id.as_str()])?;
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
            let mut st = tx.prepare_cached(
                "INSERT OR REPLACE INTO metrics (unit_id, step, name, value) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (name, value) in metrics {
                st.execute(params![
                    unit.0 as i64,
                    step,
                    name,
                    value.is_finite().then_some(*value)
                ])?;
            }
        }
        Action::UnitFinished {
            unit,
            state,
            metrics,
            error,
            duration_s,
            worker,
            at,
            ..
        } => {
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
    }
    Ok(())
}
