//! The client API's messages as the page's JSON.

use ridgeline_common::params::params_from_proto;
use ridgeline_common::proto;
use serde_json::{Map, Value, json};

/// A trial state's name (`completed`, ...), as the CLI prints it.
pub fn unit_state(s: i32) -> &'static str {
    use proto::UnitState as U;
    match U::try_from(s) {
        Ok(U::Pending) => "pending",
        Ok(U::Running) => "running",
        Ok(U::Completed) => "completed",
        Ok(U::Failed) => "failed",
        Ok(U::Diverged) => "diverged",
        Ok(U::Cancelled) => "cancelled",
        Ok(U::Pruned) => "pruned",
        _ => "unknown",
    }
}

/// A trial state from its name.
pub fn unit_state_named(name: &str) -> Option<proto::UnitState> {
    use proto::UnitState as U;
    Some(match name {
        "pending" => U::Pending,
        "running" => U::Running,
        "completed" => U::Completed,
        "failed" => U::Failed,
        "diverged" => U::Diverged,
        "cancelled" => U::Cancelled,
        "pruned" => U::Pruned,
        _ => return None,
    })
}

fn sweep_state(s: i32) -> &'static str {
    use proto::SweepState as S;
    match S::try_from(s) {
        Ok(S::Running) => "running",
        Ok(S::Completed) => "completed",
        Ok(S::Cancelled) => "cancelled",
        Ok(S::Failed) => "failed",
        _ => "unknown",
    }
}

fn params(p: &std::collections::HashMap<String, proto::ParamValue>) -> Value {
    params_from_proto(p)
        .ok()
        .and_then(|p| serde_json::to_value(p).ok())
        .unwrap_or(Value::Null)
}

fn metrics(m: &[proto::Metric]) -> Value {
    Value::Object(
        m.iter()
            .map(|m| (m.name.clone(), json!(m.value)))
            .collect::<Map<String, Value>>(),
    )
}

/// A sweep's status, with what the page needs from its spec (the space's names, the
/// objectives, a scan's grid) and an estimate of the time left.
pub fn status(s: &proto::SweepStatus) -> Value {
    let spec: Value = serde_json::from_str(&s.spec_json).unwrap_or(Value::Null);
    let space: Vec<&String> = spec["search"]["space"]
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or_default();
    let done = s.completed + s.failed + s.diverged + s.cancelled + s.pruned;
    let eta = (done > 0 && s.running + s.pending > 0 && sweep_state(s.state) == "running")
        .then(|| s.elapsed_s / f64::from(done) * f64::from(s.total.saturating_sub(done)));
    json!({
        "id": s.sweep_id,
        "name": s.name,
        "kind": s.kind,
        "state": sweep_state(s.state),
        "total": s.total,
        "counts": {
            "pending": s.pending, "running": s.running, "completed": s.completed,
            "failed": s.failed, "diverged": s.diverged, "cancelled": s.cancelled,
            "pruned": s.pruned,
        },
        "metric": s.metric,
        "mode": s.mode,
        "objectives": s.objectives,
        "modes": s.modes,
        "best": s.best.as_ref().map(|b| json!({
            "trial": b.trial_index, "value": b.value, "params": params(&b.params),
        })),
        "pareto": s.pareto.iter().map(|p| json!({
            "trial": p.trial_index, "values": p.values, "params": params(&p.params),
        })).collect::<Vec<_>>(),
        "hypervolume": (!s.pareto.is_empty()).then_some(s.hypervolume),
        "created_unix": s.created_unix,
        "elapsed_s": s.elapsed_s,
        "eta_s": eta,
        "space": space,
        "spec": spec,
    })
}

/// A trial, with its history when it was sent.
pub fn trial(t: &proto::TrialResult) -> Value {
    json!({
        "trial": t.trial_index,
        "state": unit_state(t.state),
        "params": params(&t.params),
        "metrics": metrics(&t.final_metrics),
        "attempts": t.attempts,
        "worker": t.worker,
        "duration_s": t.duration_s,
        "error": t.error,
        "history": t.history.iter().map(|h| {
            let mut m = metrics(&h.metrics);
            m["step"] = json!(h.step);
            m
        }).collect::<Vec<_>>(),
    })
}
