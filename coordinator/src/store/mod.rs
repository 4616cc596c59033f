//! The SQLite store: one file in WAL mode holding sweeps, units (trials), per-step
//! metrics and workers. The event loop applies a batch of core actions in one
//! transaction, so durability costs one fsync per batch, not per unit.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

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
    -- Leases lost to the coordinator (a restart, a failed commit): not attempts.
    interrupted INTEGER NOT NULL DEFAULT 0,
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
    gone_reason   TEXT,
    -- SHA-256 of the secret issued with the id: only its holder may take the id back.
    secret_sha256 TEXT
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
    /// Leases so far that counted as attempts.
    pub attempts: u32,
    /// Leases lost to the coordinator itself (restarts, failed commits).
    pub interrupted: u32,
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

/// SQLite's `unix-excl` file layer: the first connection takes a process-wide exclusive
/// lock on the database, and the WAL index lives in this process's heap instead of a
/// `-shm` file mapped by every process. The coordinator is the database's only process,
/// so nothing is lost, and the database is safe on a shared file system (NFS, Lustre,
/// GPFS), where mapped shared memory is not coherent between nodes: a second
/// coordinator on the same data folder gets "database is locked" instead of corrupting
/// it. Connections of the same process (the readers beside the writer) still share it.
const VFS: &str = "unix-excl";

/// Columns added since the first release, for databases made before them.
fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let has = |table: &str, column: &str| -> Result<bool, StoreError> {
        let mut st = conn.prepare(&format!("PRAGMA table_info({table})"))?;
        let names = st.query_map([], |r| r.get::<_, String>(1))?;
        for n in names {
            if n? == column {
                return Ok(true);
            }
        }
        Ok(false)
    };
    if !has("units", "interrupted")? {
        conn.execute_batch("ALTER TABLE units ADD COLUMN interrupted INTEGER NOT NULL DEFAULT 0")?;
    }
    if !has("workers", "secret_sha256")? {
        conn.execute_batch("ALTER TABLE workers ADD COLUMN secret_sha256 TEXT")?;
    }
    Ok(())
}

/// The database.
pub struct Store {
    conn: Connection,
}

impl Store {
    /// Opens (creating if needed) the database at `path` for writing.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open_with_flags_and_vfs(path, OpenFlags::default(), VFS)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // WAL + NORMAL: a commit survives a process crash; only an OS crash can lose the
        // last transactions, which the workers will then report again.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // Room for every statement the event loop runs (rusqlite keeps 16 by default,
        // fewer than the writes and reads of a batch, which then evicted each other).
        conn.set_prepared_statement_cache_capacity(64);
        conn.execute_batch(SCHEMA)?;
        migrate(&conn)?;
        Ok(Store { conn })
    }

    /// Opens an existing database read-only (for queries beside the writer).
    pub fn open_read_only(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open_with_flags_and_vfs(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            VFS,
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
        #[cfg(feature = "failpoints")]
        fail::fail_point!("store::commit", |_| Err(StoreError::Sqlite(
            rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
                Some("database or disk is full (failpoint)".into()),
            )
        )));
        tx.commit()?;
        Ok(())
    }

    /// The SHA-256 (hex) of the secret issued with a worker id, if any.
    pub fn worker_secret(&self, id: &str) -> Result<Option<String>, StoreError> {
        use rusqlite::OptionalExtension;
        Ok(self
            .conn
            .query_row(
                "SELECT secret_sha256 FROM workers WHERE id = ?1",
                [id],
                |r| r.get::<_, Option<String>>(0),
            )
            .optional()?
            .flatten())
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

mod query;
pub use query::{Column, SortKey, TrialQuery};
mod read;
mod write;

use write::apply_one;
