//! A sweep's results as files: results.csv and results.json (a row per trial, with
//! `feasible` and `pareto_rank` where they apply) and intrinsic.json.

use std::collections::BTreeSet;

use anyhow::Result;
use ridgeline_common::params::{ParamValue, params_from_proto};
use ridgeline_common::pareto;
use ridgeline_common::proto;
use ridgeline_common::spec::SweepSpec;

use crate::client::{state_name, unit_state_name};

/// The sweep's spec, as its status carries it.
fn spec_of(r: &proto::GetResultsResponse) -> Option<SweepSpec> {
    r.status
        .as_ref()
        .and_then(|s| SweepSpec::from_json(&s.spec_json).ok())
}

/// A trial's final metrics as name-value pairs.
fn finals(t: &proto::TrialResult) -> Vec<(String, f64)> {
    t.final_metrics
        .iter()
        .map(|m| (m.name.clone(), m.value))
        .collect()
}

/// Whether each completed trial is feasible, for a search with constraints (bounds in
/// its spec, or `constraint_*` metrics reported); `None` for a search without.
fn feasibility(r: &proto::GetResultsResponse) -> Option<Vec<Option<bool>>> {
    let spec = spec_of(r);
    let own = r.trials.iter().any(|t| {
        t.final_metrics.iter().any(|m| {
            m.name
                .starts_with(ridgeline_common::spec::CONSTRAINT_PREFIX)
        })
    });
    let search = spec.map(|s| s.search).unwrap_or_default();
    if search.constraints.is_empty() && !own {
        return None;
    }
    Some(
        r.trials
            .iter()
            .map(|t| {
                (t.state == proto::UnitState::Completed as i32)
                    .then(|| search.violation(&finals(t)) == 0.0)
            })
            .collect(),
    )
}

/// A multi-objective search's completed trials: each one's objective values (`None`
/// unless completed with all of them) and whether it is feasible; `None` for one
/// objective.
struct Objectives {
    names: Vec<String>,
    modes: Vec<ridgeline_common::spec::Mode>,
    values: Vec<Option<Vec<f64>>>,
    feasible: Vec<bool>,
}

fn objectives(r: &proto::GetResultsResponse) -> Option<Objectives> {
    let spec = spec_of(r).filter(SweepSpec::is_multi_objective)?;
    let feasibility = feasibility(r);
    let values = r
        .trials
        .iter()
        .map(|t| {
            (t.state == proto::UnitState::Completed as i32)
                .then(|| spec.objective_values(&finals(t)))
                .flatten()
        })
        .collect();
    Some(Objectives {
        names: spec.objectives().iter().map(|o| (*o).to_owned()).collect(),
        modes: spec.modes(),
        values,
        feasible: (0..r.trials.len())
            .map(|i| feasibility.as_ref().is_none_or(|f| f[i] == Some(true)))
            .collect(),
    })
}

/// Each trial's non-domination rank among the feasible completed trials of a
/// multi-objective search (0: on the Pareto front); `None` for one objective.
fn pareto_ranks(r: &proto::GetResultsResponse) -> Option<Vec<Option<usize>>> {
    let o = objectives(r)?;
    let losses: Vec<Option<Vec<f64>>> = o
        .values
        .iter()
        .zip(&o.feasible)
        .map(|(v, f)| {
            v.as_ref()
                .filter(|_| *f)
                .map(|v| pareto::losses(v, &o.modes))
        })
        .collect();
    let points: Vec<Vec<f64>> = losses.iter().flatten().cloned().collect();
    let mut ranks = pareto::ranks(&points).into_iter();
    Some(
        losses
            .iter()
            .map(|l| l.as_ref().and_then(|_| ranks.next()))
            .collect(),
    )
}

/// The hypervolume after each feasible completed trial, in trial order, measured from
/// the sweep's final reference point (so that the curve only rises).
fn hypervolume_history(r: &proto::GetResultsResponse) -> Option<Vec<(u32, f64)>> {
    let o = objectives(r)?;
    let reference = &r.status.as_ref()?.reference_point;
    if reference.len() != o.names.len() {
        return Some(vec![]);
    }
    let reference = pareto::losses(reference, &o.modes);
    let mut front: Vec<Vec<f64>> = Vec::new();
    let mut hv = 0.0;
    let mut out = Vec::new();
    let mut order: Vec<usize> = (0..r.trials.len()).collect();
    order.sort_by_key(|&i| r.trials[i].trial_index);
    for i in order {
        let Some(v) = o.values[i].as_ref().filter(|_| o.feasible[i]) else {
            continue;
        };
        let l = pareto::losses(v, &o.modes);
        if !front.iter().any(|f| pareto::dominates(f, &l) || *f == l) {
            front.retain(|f| !pareto::dominates(&l, f));
            front.push(l);
            hv = pareto::hypervolume(&front, &reference);
        }
        out.push((r.trials[i].trial_index, hv));
    }
    Some(out)
}

/// The picture of a multi-objective search's trials (`pareto.png`); `None` for one
/// objective.
pub fn pareto_plot(r: &proto::GetResultsResponse, path: &std::path::Path) -> Option<Result<()>> {
    let o = objectives(r)?;
    let ranks = pareto_ranks(r)?;
    let points: Vec<ridgeline_coordinator::plot::ParetoPoint> = o
        .values
        .iter()
        .zip(&o.feasible)
        .zip(&ranks)
        .filter_map(|((v, f), k)| {
            Some(ridgeline_coordinator::plot::ParetoPoint {
                values: v.clone()?,
                front: *k == Some(0),
                infeasible: !f,
            })
        })
        .collect();
    let st = r.status.as_ref()?;
    let title = format!(
        "{}: {} trials, Pareto front of {} (hypervolume {:.4})",
        st.sweep_id,
        points.len(),
        st.pareto.len(),
        st.hypervolume
    );
    Some(
        ridgeline_coordinator::plot::pareto(path, &title, &o.names, &points)
            .map_err(anyhow::Error::msg),
    )
}

/// A PBT trial's place in its population: its round and member, the trial it started
/// from, and whether that was another member's (an exploit).
#[derive(Clone, Copy)]
struct Lineage {
    round: u32,
    member: u32,
    parent: Option<u32>,
    exploited: bool,
}

/// Every trial's lineage in a PBT sweep (aligned with `r.trials`); `None` otherwise.
fn lineage(r: &proto::GetResultsResponse) -> Option<Vec<Lineage>> {
    let spec =
        spec_of(r).filter(|s| s.search.algorithm == ridgeline_common::spec::Algorithm::Pbt)?;
    let p = spec.search.num_samples.max(1);
    Some(
        r.trials
            .iter()
            .map(|t| {
                let parent = params_from_proto(&t.params)
                    .ok()
                    .and_then(|x| x.get(ridgeline_common::spec::PBT_PARENT)?.as_i64())
                    .and_then(|v| u32::try_from(v).ok());
                Lineage {
                    round: t.trial_index / p,
                    member: t.trial_index % p,
                    parent,
                    exploited: parent.is_some_and(|q| q % p != t.trial_index % p),
                }
            })
            .collect(),
    )
}

/// `pbt.png` of a PBT sweep: the metric over steps per member, exploits marked; `None`
/// for other sweeps.
pub fn pbt_plot(r: &proto::GetResultsResponse, path: &std::path::Path) -> Option<Result<()>> {
    let lin = lineage(r)?;
    let st = r.status.as_ref()?;
    let metric = st.metric.clone();
    let points = |t: &proto::TrialResult| -> Vec<(f64, f64)> {
        t.history
            .iter()
            .filter_map(|h| {
                let v = h.metrics.iter().find(|m| m.name == metric)?.value;
                v.is_finite().then_some((f64::from(h.step), v))
            })
            .collect()
    };
    let by_trial: std::collections::HashMap<u32, &proto::TrialResult> =
        r.trials.iter().map(|t| (t.trial_index, t)).collect();
    let trials: Vec<ridgeline_coordinator::plot::LineageTrial> = r
        .trials
        .iter()
        .zip(&lin)
        .map(|(t, l)| ridgeline_coordinator::plot::LineageTrial {
            member: l.member,
            points: points(t),
            parent: l
                .parent
                .and_then(|q| by_trial.get(&q))
                .and_then(|q| points(q).last().copied()),
            exploited: l.exploited,
        })
        .collect();
    let exploits = lin.iter().filter(|l| l.exploited).count();
    let title = format!(
        "{}: population based training, {} members, {} exploits",
        st.sweep_id,
        lin.iter().map(|l| l.member + 1).max().unwrap_or(0),
        exploits
    );
    Some(
        ridgeline_coordinator::plot::lineage(path, &title, &metric, &trials)
            .map_err(anyhow::Error::msg),
    )
}

/// Result rows as CSV: one row per trial, parameters and final metrics as columns (and
/// `feasible`, for a search with constraints; `pareto_rank`, for several objectives).
pub fn results_csv(r: &proto::GetResultsResponse) -> Result<String> {
    let feasible = feasibility(r);
    let ranks = pareto_ranks(r);
    let mut params: BTreeSet<String> = BTreeSet::new();
    let mut metrics: BTreeSet<String> = BTreeSet::new();
    for t in &r.trials {
        params.extend(t.params.keys().cloned());
        metrics.extend(t.final_metrics.iter().map(|m| m.name.clone()));
    }
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header = vec!["trial".to_owned(), "state".into()];
    header.extend(params.iter().cloned());
    header.extend(metrics.iter().cloned());
    if feasible.is_some() {
        header.push("feasible".into());
    }
    if ranks.is_some() {
        header.push("pareto_rank".into());
    }
    header.extend(
        [
            "epochs",
            "duration_s",
            "worker",
            "attempts",
            "interrupted",
            "error",
        ]
        .map(String::from),
    );
    w.write_record(&header)?;
    for (i, t) in r.trials.iter().enumerate() {
        let p = params_from_proto(&t.params).map_err(anyhow::Error::msg)?;
        let mut row = vec![t.trial_index.to_string(), unit_state_name(t.state).into()];
        row.extend(
            params
                .iter()
                .map(|k| p.get(k).map(ParamValue::to_string).unwrap_or_default()),
        );
        row.extend(metrics.iter().map(|k| {
            t.final_metrics
                .iter()
                .find(|m| &m.name == k)
                .map(|m| m.value.to_string())
                .unwrap_or_default()
        }));
        if let Some(f) = &feasible {
            row.push(f[i].map(|b| b.to_string()).unwrap_or_default());
        }
        if let Some(k) = &ranks {
            row.push(k[i].map(|k| k.to_string()).unwrap_or_default());
        }
        row.push(t.history.len().to_string());
        row.push(format!("{:.3}", t.duration_s));
        row.push(t.worker.clone());
        row.push(t.attempts.to_string());
        row.push(t.interrupted.to_string());
        row.push(t.error.clone());
        w.write_record(&row)?;
    }
    Ok(String::from_utf8(w.into_inner()?)?)
}

/// Result rows as JSON, with each trial's per-epoch history.
pub fn results_json(r: &proto::GetResultsResponse) -> Result<String> {
    let metric_map = |m: &[proto::Metric]| -> serde_json::Map<String, serde_json::Value> {
        m.iter()
            .map(|m| {
                (
                    m.name.clone(),
                    serde_json::json!(m.value.is_finite().then_some(m.value)),
                )
            })
            .collect()
    };
    let feasible = feasibility(r);
    let ranks = pareto_ranks(r);
    let lineage = lineage(r);
    let trials: Vec<serde_json::Value> = r
        .trials
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let p = params_from_proto(&t.params).unwrap_or_default();
            let mut row = serde_json::json!({
                "trial": t.trial_index,
                "state": unit_state_name(t.state),
                "params": p,
                "metrics": metric_map(&t.final_metrics),
                "history": t.history.iter().map(|h| {
                    let mut m = metric_map(&h.metrics);
                    m.insert("step".into(), h.step.into());
                    serde_json::Value::Object(m)
                }).collect::<Vec<_>>(),
                "duration_s": t.duration_s,
                "worker": t.worker,
                "attempts": t.attempts,
                "interrupted": t.interrupted,
                "error": (!t.error.is_empty()).then_some(&t.error),
                "checkpoint_dir": (!t.checkpoint_dir.is_empty()).then_some(&t.checkpoint_dir),
            });
            if let Some(f) = &feasible {
                row["feasible"] = serde_json::json!(f[i]);
            }
            if let Some(k) = &ranks {
                row["pareto_rank"] = serde_json::json!(k[i]);
            }
            if let Some(l) = &lineage {
                let l = l[i];
                row["lineage"] = serde_json::json!({
                    "round": l.round,
                    "member": l.member,
                    "parent": l.parent,
                    "exploited": l.exploited,
                });
            }
            row
        })
        .collect();
    let st = r.status.as_ref();
    Ok(serde_json::to_string_pretty(&serde_json::json!({
        "sweep": st.map(|s| s.sweep_id.clone()),
        "state": st.map(|s| state_name(s.state)),
        "metric": st.map(|s| s.metric.clone()),
        "mode": st.map(|s| s.mode.clone()),
        "best_trial": st.and_then(|s| s.best.as_ref()).map(|b| b.trial_index),
        "objectives": st.map(|s| s.objectives.clone()),
        "modes": st.map(|s| s.modes.clone()),
        "pareto_trials": st.map(|s| s.pareto.iter().map(|p| p.trial_index).collect::<Vec<_>>()),
        "hypervolume": st.filter(|s| !s.pareto.is_empty()).map(|s| s.hypervolume),
        "reference_point": st.filter(|s| s.objectives.len() > 1).map(|s| s.reference_point.clone()),
        "hypervolume_history": hypervolume_history(r)
            .map(|h| h.iter().map(|(t, v)| serde_json::json!({"trial": t, "hypervolume": v})).collect::<Vec<_>>()),
        "trials": trials,
    }))?)
}

/// `intrinsic.json` for a search over `subspace_dim` (Li et al.'s intrinsic dimension):
/// each completed trial's validation accuracy against its subspace dimension, and
/// `d_int90`. `None` when no trial has a `subspace_dim` parameter.
pub fn intrinsic(r: &proto::GetResultsResponse) -> Option<Result<serde_json::Value, String>> {
    let mut points = Vec::new();
    let mut any = false;
    for t in &r.trials {
        let p = params_from_proto(&t.params).unwrap_or_default();
        let Some(d) = p.get("subspace_dim").and_then(|v| v.as_f64()) else {
            continue;
        };
        any = true;
        if t.state != proto::UnitState::Completed as i32 {
            continue;
        }
        if let Some(m) = t.final_metrics.iter().find(|m| m.name == "val_accuracy") {
            points.push((d as usize, m.value));
        }
    }
    any.then(|| ridgeline_common::intrinsic::summary(&points, "val_accuracy", 0.9))
}
