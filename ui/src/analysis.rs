//! What the search's analysis plots draw: columns of parameters and metrics over the
//! completed trials (a deterministic sample of at most a few thousand, the best always
//! in it), and parameter importance computed over all of them.

use hyper::{Response, StatusCode};
use ridgeline_common::proto;
use serde_json::{Map, Value, json};

use crate::Client;
use crate::api::{failed, metric_asked, objectives, status_with_spec};
use crate::http::{self, Body};
use crate::importance::{Param, ped_anova};

/// Trials a plot is sent at most.
const MAX_DRAWN: usize = 2000;

/// The space's parameters: name, whether categorical, whether log-scaled.
fn space(spec_json: &str) -> Vec<(String, bool, bool)> {
    let spec: Value = serde_json::from_str(spec_json).unwrap_or(Value::Null);
    spec["search"]["space"]
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| {
                    let kind = v["type"].as_str().unwrap_or("");
                    (
                        k.clone(),
                        matches!(kind, "choice" | "grid"),
                        kind == "loguniform",
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The completed trials' rows of `cols`, as indices into the response's arrays.
fn completed(cols: &proto::GetTrialColumnsResponse) -> Vec<usize> {
    let done = proto::UnitState::Completed as i32;
    (0..cols.trials.len())
        .filter(|&i| cols.states[i] == done)
        .collect()
}

/// `GET /api/sweeps/ID/columns`: the space's parameters and the sweep's objectives (and
/// `metric=` ones asked for) over the completed trials, thinned to at most MAX_DRAWN
/// evenly spaced trials plus the best of the first objective.
pub async fn columns(mut c: Client, id: &str, query: &[(String, String)]) -> Response<Body> {
    let st = match status_with_spec(&mut c, id).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let objectives = objectives(&st);
    let params = space(&st.spec_json);
    let mut names: Vec<String> = params.iter().map(|(p, ..)| format!("param:{p}")).collect();
    names.extend(objectives.iter().map(|m| format!("metric:{m}")));
    for (k, v) in query {
        if k == "metric" && !objectives.contains(v) {
            names.push(format!("metric:{v}"));
        }
    }
    names.truncate(64);
    let cols = match c
        .get_trial_columns(proto::GetTrialColumnsRequest {
            sweep_id: id.to_owned(),
            columns: names.clone(),
        })
        .await
    {
        Ok(r) => r.into_inner(),
        Err(s) => return failed(s),
    };
    let rows = completed(&cols);
    let first = &cols.columns[params.len()].values;
    let goal_max = st.modes.first().unwrap_or(&st.mode) == "max";
    let best = rows
        .iter()
        .copied()
        .filter(|&i| first[i].is_finite())
        .min_by(|&a, &b| {
            let (x, y) = (first[a], first[b]);
            if goal_max {
                y.total_cmp(&x)
            } else {
                x.total_cmp(&y)
            }
        });
    let mut keep: Vec<usize> = if rows.len() <= MAX_DRAWN {
        rows.clone()
    } else {
        let step = rows.len() as f64 / MAX_DRAWN as f64;
        (0..MAX_DRAWN)
            .map(|k| rows[(k as f64 * step) as usize])
            .collect()
    };
    if let Some(b) = best.filter(|b| !keep.contains(b)) {
        keep.push(b);
        keep.sort_unstable();
    }
    let mut out = Map::new();
    for (name, col) in names.iter().zip(&cols.columns) {
        let values: Vec<Option<f64>> = keep
            .iter()
            .map(|&i| Some(col.values[i]).filter(|v| v.is_finite()))
            .collect();
        out.insert(
            name.clone(),
            json!({ "values": values, "labels": col.labels }),
        );
    }
    http::json(&json!({
        "completed": rows.len(),
        "drawn": keep.len(),
        "trials": keep.iter().map(|&i| cols.trials[i]).collect::<Vec<_>>(),
        "params": params.iter().map(|(p, cat, log)| json!({ "name": p, "categorical": cat, "log": log })).collect::<Vec<_>>(),
        "objectives": objectives,
        "modes": if st.modes.is_empty() { vec![st.mode.clone()] } else { st.modes.clone() },
        "best": best.map(|i| cols.trials[i]),
        "columns": out,
    }))
}

/// `GET /api/sweeps/ID/importance?metric=`: PED-ANOVA importance of each parameter for
/// a metric (the first objective by default), over every completed trial.
pub async fn importance(mut c: Client, id: &str, query: &[(String, String)]) -> Response<Body> {
    let st = match status_with_spec(&mut c, id).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let (metric, mode) = metric_asked(&st, query);
    let max = mode == "max";
    let params = space(&st.spec_json);
    if params.is_empty() {
        return http::error(StatusCode::NOT_FOUND, "the sweep has no search space");
    }
    let mut names: Vec<String> = params.iter().map(|(p, ..)| format!("param:{p}")).collect();
    names.push(format!("metric:{metric}"));
    let cols = match c
        .get_trial_columns(proto::GetTrialColumnsRequest {
            sweep_id: id.to_owned(),
            columns: names,
        })
        .await
    {
        Ok(r) => r.into_inner(),
        Err(s) => return failed(s),
    };
    let rows = completed(&cols);
    let pick = |v: &[f64]| -> Vec<f64> { rows.iter().map(|&i| v[i]).collect() };
    let objective: Vec<f64> = pick(&cols.columns[params.len()].values)
        .into_iter()
        .map(|v| if max { -v } else { v })
        .collect();
    let values: Vec<Vec<f64>> = cols.columns[..params.len()]
        .iter()
        .map(|c| pick(&c.values))
        .collect();
    let ps: Vec<Param<'_>> = params
        .iter()
        .zip(&values)
        .zip(&cols.columns)
        .map(|(((name, cat, log), v), col)| Param {
            name,
            values: v,
            categorical: *cat || !col.labels.is_empty(),
            log: *log,
        })
        .collect();
    let imp = ped_anova(&ps, &objective, 0.1);
    let mut list: Vec<(String, f64)> = ps.iter().map(|p| p.name.to_owned()).zip(imp).collect();
    list.sort_by(|a, b| b.1.total_cmp(&a.1));
    http::json(&json!({
        "metric": metric,
        "trials": rows.len(),
        "method": "PED-ANOVA: Pearson divergence of the top 10 % of completed trials' parameter histogram from all completed trials' (20 bins, log-scaled for log-uniform parameters, one per choice)",
        "importance": list.iter().map(|(n, v)| json!({ "param": n, "importance": v })).collect::<Vec<_>>(),
    }))
}
