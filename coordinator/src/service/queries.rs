//! The web page's reads (`QueryTrials`, `GetTrialColumns`) and the trial message they
//! share with `GetResults`: run on a blocking thread through a read-only connection.

use std::path::{Path, PathBuf};

use ridgeline_common::ids::SweepId;
use ridgeline_common::proto;
use tonic::Status;

use super::{db_path, trial_dir};
use crate::convert::{metrics_to_proto, unit_state_to_proto};
use crate::core::UnitState;
use crate::store::{SortKey, Store, TrialQuery, TrialRow};
use ridgeline_common::params::params_to_proto;

/// The most rows of a page, and of columns, one call returns.
const MAX_ROWS: u32 = 1000;
const MAX_COLUMNS: usize = 64;

/// A stored trial as the client API sends it.
pub(super) fn trial_to_proto(data_dir: &Path, id: &SweepId, t: TrialRow) -> proto::TrialResult {
    let dir = trial_dir(data_dir, id, t.trial);
    proto::TrialResult {
        trial_index: t.trial,
        state: unit_state_to_proto(t.state) as i32,
        params: params_to_proto(&t.params),
        final_metrics: metrics_to_proto(&t.final_metrics),
        duration_s: t.duration_s.unwrap_or(0.0),
        worker: t.worker.unwrap_or_default(),
        error: t.error.unwrap_or_default(),
        attempts: t.attempts,
        interrupted: t.interrupted,
        history: t
            .history
            .iter()
            .map(|(step, m)| proto::EpochMetrics {
                step: *step,
                metrics: metrics_to_proto(m),
            })
            .collect(),
        checkpoint_dir: if dir.exists() {
            dir.display().to_string()
        } else {
            String::new()
        },
    }
}

fn state_of(s: i32) -> Result<UnitState, Status> {
    use proto::UnitState as P;
    Ok(match P::try_from(s) {
        Ok(P::Pending) => UnitState::Pending,
        Ok(P::Running) => UnitState::Running,
        Ok(P::Completed) => UnitState::Completed,
        Ok(P::Failed) => UnitState::Failed,
        Ok(P::Diverged) => UnitState::Diverged,
        Ok(P::Cancelled) => UnitState::Cancelled,
        Ok(P::Pruned) => UnitState::Pruned,
        _ => {
            return Err(Status::invalid_argument(format!(
                "states: {s} is not a trial state"
            )));
        }
    })
}

/// Runs `f` on the store, read-only, on a blocking thread.
async fn with_store<T: Send + 'static>(
    data_dir: PathBuf,
    f: impl FnOnce(&Store, &Path) -> Result<T, String> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(move || {
        let store = Store::open_read_only(&db_path(&data_dir)).map_err(|e| e.to_string())?;
        f(&store, &data_dir)
    })
    .await
    .map_err(|e| Status::internal(e.to_string()))?
    .map_err(Status::internal)
}

pub(super) async fn query_trials(
    data_dir: PathBuf,
    id: SweepId,
    r: proto::QueryTrialsRequest,
) -> Result<proto::QueryTrialsResponse, Status> {
    let sort = SortKey::parse(&r.sort).ok_or_else(|| {
        Status::invalid_argument(format!(
            "sort: {:?} is none of trial, state, attempts, duration, worker, param:NAME, metric:NAME",
            r.sort
        ))
    })?;
    let q = TrialQuery {
        offset: r.offset,
        limit: match r.limit {
            0 => 50,
            n => n.min(MAX_ROWS),
        },
        sort,
        descending: r.descending,
        states: r
            .states
            .into_iter()
            .map(state_of)
            .collect::<Result<_, _>>()?,
        with_history: r.with_history,
    };
    with_store(data_dir, move |store, dir| {
        let (total, rows) = store.query_trials(&id, &q).map_err(|e| e.to_string())?;
        Ok(proto::QueryTrialsResponse {
            total,
            trials: rows
                .into_iter()
                .map(|t| trial_to_proto(dir, &id, t))
                .collect(),
        })
    })
    .await
}

pub(super) async fn trial_columns(
    data_dir: PathBuf,
    id: SweepId,
    names: Vec<String>,
) -> Result<proto::GetTrialColumnsResponse, Status> {
    if names.len() > MAX_COLUMNS {
        return Err(Status::invalid_argument(format!(
            "columns: {} asked, at most {MAX_COLUMNS} a call",
            names.len()
        )));
    }
    with_store(data_dir, move |store, _| {
        let (trials, states, cols) = store
            .trial_columns(&id, &names)
            .map_err(|e| e.to_string())?;
        Ok(proto::GetTrialColumnsResponse {
            trials,
            states: states
                .into_iter()
                .map(|s| unit_state_to_proto(s) as i32)
                .collect(),
            columns: names
                .into_iter()
                .zip(cols)
                .map(|(name, c)| proto::TrialColumn {
                    name,
                    values: c.values,
                    labels: c.labels,
                })
                .collect(),
        })
    })
    .await
}
