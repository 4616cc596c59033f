//! Conversions between wire messages and core types, in one place. Malformed input maps
//! to `Status::invalid_argument` naming the field; nothing here unwraps an optional.

use ridgeline_common::ids::UnitId;
use ridgeline_common::params::params_to_proto;
use ridgeline_common::proto;
use ridgeline_common::spec::SweepKind;
use tonic::Status;

use crate::core::{Counts, Lease, Outcome, SweepState, SweepView, UnitState};

pub(crate) fn unit_state_to_proto(s: UnitState) -> proto::UnitState {
    match s {
        UnitState::Pending => proto::UnitState::Pending,
        UnitState::Running => proto::UnitState::Running,
        UnitState::Completed => proto::UnitState::Completed,
        UnitState::Failed => proto::UnitState::Failed,
        UnitState::Diverged => proto::UnitState::Diverged,
        UnitState::Cancelled => proto::UnitState::Cancelled,
        UnitState::Pruned => proto::UnitState::Pruned,
    }
}

pub(crate) fn sweep_state_to_proto(s: SweepState) -> proto::SweepState {
    match s {
        SweepState::Running => proto::SweepState::Running,
        SweepState::Completed => proto::SweepState::Completed,
        SweepState::Cancelled => proto::SweepState::Cancelled,
        SweepState::Failed => proto::SweepState::Failed,
    }
}

pub(crate) fn metrics_from_proto(m: &[proto::Metric]) -> Vec<(String, f64)> {
    m.iter().map(|m| (m.name.clone(), m.value)).collect()
}

pub(crate) fn metrics_to_proto(m: &[(String, f64)]) -> Vec<proto::Metric> {
    m.iter()
        .map(|(name, value)| proto::Metric {
            name: name.clone(),
            value: *value,
        })
        .collect()
}

pub(crate) fn outcome_from_proto(o: &proto::Outcome) -> Result<Outcome, Status> {
    let state = match proto::UnitState::try_from(o.state) {
        Ok(proto::UnitState::Completed) => UnitState::Completed,
        Ok(proto::UnitState::Failed) => UnitState::Failed,
        Ok(proto::UnitState::Diverged) => UnitState::Diverged,
        _ => {
            return Err(Status::invalid_argument(format!(
                "outcomes[unit {}].state: expected COMPLETED, FAILED or DIVERGED, got {}",
                o.unit_id, o.state
            )));
        }
    };
    Ok(Outcome {
        unit: UnitId(o.unit_id),
        state,
        metrics: metrics_from_proto(&o.final_metrics),
        error: o.error.clone(),
        duration_s: o.duration_s,
        history: Some(
            o.history
                .iter()
                .map(|p| (p.step, metrics_from_proto(&p.metrics)))
                .collect(),
        ),
        permanent: o.permanent,
    })
}

/// Artifact names become file names on the coordinator: plain names only.
pub(crate) fn check_artifact_name(name: &str) -> Result<(), Status> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "artifacts.name: {name:?} is not a plain file name"
        )))
    }
}

pub(crate) fn lease_to_proto(l: &Lease) -> proto::Unit {
    let work = match l.spec.kind {
        SweepKind::Search => proto::unit::Work::Train(proto::TrainTrial {
            trial_index: l.trial,
            params: params_to_proto(&l.params),
            spec_json: String::new(),
            seed: l.spec.train.seed,
        }),
        // Tile i is unit i of the sweep (see `search::Tiles`).
        SweepKind::Landscape => proto::unit::Work::Tile(proto::LandscapeTile {
            tile_index: l.trial,
            spec_json: String::new(),
        }),
    };
    proto::Unit {
        unit_id: l.unit.0,
        sweep_id: l.sweep.to_string(),
        attempt: l.attempt,
        work: Some(work),
    }
}

/// A sweep's status; `spec_json` only when asked for (specs can be large, and a
/// listing of many sweeps must stay small).
pub(crate) fn status_to_proto(
    v: &SweepView,
    checkpoint_dir: Option<String>,
    with_spec: bool,
    now_ms: u64,
) -> proto::SweepStatus {
    let Counts {
        total,
        pending,
        running,
        completed,
        failed,
        diverged,
        cancelled,
        pruned,
    } = v.counts;
    let end = v.finished.unwrap_or(now_ms);
    proto::SweepStatus {
        sweep_id: v.id.to_string(),
        name: v.spec.name.clone(),
        state: sweep_state_to_proto(v.state) as i32,
        total,
        pending,
        running,
        completed,
        failed,
        diverged,
        cancelled,
        pruned,
        metric: v.spec.metric().to_owned(),
        mode: v.spec.mode().as_str().into(),
        best: v.best.as_ref().map(|b| proto::BestTrial {
            trial_index: b.trial,
            value: b.value,
            params: params_to_proto(&b.params),
            checkpoint_dir: checkpoint_dir.unwrap_or_default(),
        }),
        kind: match v.spec.kind {
            SweepKind::Search => "search".into(),
            SweepKind::Landscape => "landscape".into(),
        },
        spec_json: if with_spec {
            v.spec.to_json()
        } else {
            String::new()
        },
        created_unix: v.created as f64 / 1000.0,
        elapsed_s: end.saturating_sub(v.created) as f64 / 1000.0,
        objectives: v
            .spec
            .objectives()
            .iter()
            .map(|o| (*o).to_owned())
            .collect(),
        modes: v.spec.modes().iter().map(|m| m.as_str().into()).collect(),
        pareto: v.front.as_ref().map_or_else(Vec::new, |f| {
            f.trials
                .iter()
                .map(|t| proto::ParetoTrial {
                    trial_index: t.trial,
                    values: t.values.clone(),
                    params: params_to_proto(&t.params),
                })
                .collect()
        }),
        hypervolume: v.front.as_ref().map_or(0.0, |f| f.hypervolume()),
        reference_point: v
            .front
            .as_ref()
            .and_then(|f| f.reference())
            .unwrap_or_default(),
    }
}
