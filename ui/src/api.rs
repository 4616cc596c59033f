//! The page's JSON, each route one call (or a few) to the coordinator's client API:
//! the page never reads the database, and never receives all of a large sweep's trials.

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::{Response, StatusCode};
use ridgeline_common::proto;
use serde_json::{Value, json};
use tonic::Code;

use crate::Client;
use crate::convert;
use crate::history::{Goal, aggregate};
use crate::http::{self, Body};

/// Points of a history's scatter, at most (about).
const HISTORY_POINTS: usize = 4000;
/// Sweeps listed, at most (the newest).
const MAX_SWEEPS: usize = 2000;

/// A coordinator's answer as the page's error: its code as the HTTP status.
pub(crate) fn failed(s: tonic::Status) -> Response<Body> {
    let code = match s.code() {
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::InvalidArgument => StatusCode::BAD_REQUEST,
        Code::PermissionDenied | Code::Unauthenticated => StatusCode::BAD_GATEWAY,
        Code::FailedPrecondition => StatusCode::CONFLICT,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    http::error(code, format!("coordinator: {}", s.message()))
}

/// `GET /api/sweeps`: every sweep's status, newest first.
pub async fn sweeps(mut c: Client) -> Response<Body> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = match c
            .list_sweeps(proto::ListSweepsRequest {
                page_size: 500,
                page_token: token,
                // The list needs no specs (up to 64 kB each).
                with_spec: false,
            })
            .await
        {
            Ok(r) => r.into_inner(),
            Err(s) => return failed(s),
        };
        out.extend(page.sweeps.iter().map(convert::status));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    // Newest first, the newest MAX_SWEEPS of them (pages come oldest first).
    out.reverse();
    out.truncate(MAX_SWEEPS);
    http::json(&json!({ "sweeps": out }))
}

/// A sweep's status with its spec (GetStatus leaves the spec out; the sweep's folder
/// keeps it as spec.json).
pub(crate) async fn status_with_spec(
    c: &mut Client,
    id: &str,
) -> Result<proto::SweepStatus, Response<Body>> {
    let mut st = c
        .get_status(proto::GetStatusRequest {
            sweep_id: id.to_owned(),
        })
        .await
        .map_err(failed)?
        .into_inner();
    if st.spec_json.is_empty() {
        if let Ok(b) = crate::landscape::read(c, id, "spec.json").await {
            st.spec_json = String::from_utf8_lossy(&b).into_owned();
        }
    }
    Ok(st)
}

/// `GET /api/sweeps/ID`.
pub async fn status(mut c: Client, id: &str) -> Response<Body> {
    match status_with_spec(&mut c, id).await {
        Ok(s) => http::json(&convert::status(&s)),
        Err(r) => r,
    }
}

/// `GET /api/sweeps/ID/trials?offset=&limit=&sort=&desc=1&state=...`: one page of
/// the table, sorted and filtered by the coordinator.
pub async fn trials(mut c: Client, id: &str, query: &[(String, String)]) -> Response<Body> {
    let get = |k: &str| query.iter().find(|(q, _)| q == k).map(|(_, v)| v.as_str());
    let num = |k: &str| get(k).and_then(|v| v.parse::<u32>().ok()).unwrap_or(0);
    let mut states = Vec::new();
    for (_, v) in query.iter().filter(|(k, _)| k == "state") {
        match convert::unit_state_named(v) {
            Some(s) => states.push(s as i32),
            None => {
                return http::error(
                    StatusCode::BAD_REQUEST,
                    format!("state: {v:?} is not a trial state"),
                );
            }
        }
    }
    let r = c
        .query_trials(proto::QueryTrialsRequest {
            sweep_id: id.to_owned(),
            offset: num("offset"),
            limit: num("limit").clamp(1, 500),
            sort: get("sort").unwrap_or("trial").to_owned(),
            descending: matches!(get("desc"), Some("1" | "true")),
            states,
            // The page draws the shown trials' intermediate values.
            with_history: matches!(get("history"), Some("1" | "true")),
        })
        .await;
    match r {
        Ok(r) => {
            let r = r.into_inner();
            http::json(&json!({
                "total": r.total,
                "trials": r.trials.iter().map(convert::trial).collect::<Vec<_>>(),
            }))
        }
        Err(s) => failed(s),
    }
}

/// `GET /api/sweeps/ID/trials/N`: one trial with its history.
pub async fn trial(mut c: Client, id: &str, n: u32) -> Response<Body> {
    let r = c
        .get_results(proto::GetResultsRequest {
            sweep_id: id.to_owned(),
            page_size: 1,
            page_token: n.checked_sub(1).map(|p| p.to_string()).unwrap_or_default(),
        })
        .await;
    match r {
        Ok(r) => match r
            .into_inner()
            .trials
            .into_iter()
            .find(|t| t.trial_index == n)
        {
            Some(t) => http::json(&convert::trial(&t)),
            None => http::error(
                StatusCode::NOT_FOUND,
                format!("sweep {id} has no trial {n}"),
            ),
        },
        Err(s) => failed(s),
    }
}

/// `GET /api/sweeps/ID/trials/N/log?offset=`: a piece of a trial's log.
pub async fn log(mut c: Client, id: &str, n: u32, query: &[(String, String)]) -> Response<Body> {
    let offset = query
        .iter()
        .find(|(k, _)| k == "offset")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let r = c
        .get_trial_log(proto::GetTrialLogRequest {
            sweep_id: id.to_owned(),
            trial: n,
            attempt: 0,
            offset,
            max_bytes: 256 * 1024,
        })
        .await;
    match r {
        Ok(r) => {
            let r = r.into_inner();
            http::json(&json!({
                "text": String::from_utf8_lossy(&r.data),
                "next_offset": r.next_offset,
                "attempt": r.attempt,
                "attempts": r.attempts,
                "state": convert::unit_state(r.state),
            }))
        }
        Err(s) => failed(s),
    }
}

/// The sweep's objectives (one for a single-objective sweep), in the spec's order.
pub(crate) fn objectives(st: &proto::SweepStatus) -> Vec<String> {
    if st.objectives.is_empty() {
        vec![st.metric.clone()]
    } else {
        st.objectives.clone()
    }
}

/// The metric a request names (`metric=`; the first objective by default) and its mode:
/// its own among the objectives, else the sweep's.
pub(crate) fn metric_asked(
    st: &proto::SweepStatus,
    query: &[(String, String)],
) -> (String, String) {
    let objectives = objectives(st);
    let metric = query
        .iter()
        .find(|(k, _)| k == "metric")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| objectives[0].clone());
    let mode = objectives
        .iter()
        .position(|o| *o == metric)
        .and_then(|i| st.modes.get(i))
        .unwrap_or(&st.mode)
        .clone();
    (metric, mode)
}

/// `GET /api/sweeps/ID/history?metric=NAME`: the optimisation history, aggregated
/// (best so far, and a thinned scatter).
pub async fn history(mut c: Client, id: &str, query: &[(String, String)]) -> Response<Body> {
    let status = match c
        .get_status(proto::GetStatusRequest {
            sweep_id: id.to_owned(),
        })
        .await
    {
        Ok(s) => s.into_inner(),
        Err(s) => return failed(s),
    };
    let (metric, mode) = metric_asked(&status, query);
    let goal = if mode == "max" { Goal::Max } else { Goal::Min };
    let cols = match c
        .get_trial_columns(proto::GetTrialColumnsRequest {
            sweep_id: id.to_owned(),
            columns: vec![format!("metric:{metric}")],
        })
        .await
    {
        Ok(r) => r.into_inner(),
        Err(s) => return failed(s),
    };
    // Only completed trials count towards the best; the others are drawn too.
    let completed = proto::UnitState::Completed as i32;
    let values = &cols.columns[0].values;
    let finished: Vec<f64> = values
        .iter()
        .zip(&cols.states)
        .map(|(v, s)| if *s == completed { *v } else { f64::NAN })
        .collect();
    let h = aggregate(&cols.trials, &finished, goal, HISTORY_POINTS);
    let mut out = h.to_json();
    out["metric"] = json!(metric);
    out["mode"] = json!(mode);
    out["trials"] = json!(cols.trials.len());
    http::json(&out)
}

/// `GET /api/sweeps/ID/events`: the sweep's status as server-sent events, one per
/// change (the coordinator's WatchSweep stream, one per open page, whatever the number
/// of trials). When the coordinator goes away the stream ends; the browser's
/// EventSource connects again by itself.
pub async fn events(mut c: Client, id: &str) -> Response<Body> {
    let stream = match c
        .watch_sweep(proto::WatchSweepRequest {
            sweep_id: id.to_owned(),
        })
        .await
    {
        Ok(s) => s.into_inner(),
        Err(s) => return failed(s),
    };
    let frames = stream
        .take_while(|s| std::future::ready(s.is_ok()))
        .map(|s| {
            let v = convert::status(&s.expect("filtered above"));
            let mut line = v.clone();
            // The spec does not change: sent once with the page, not with every event.
            line["spec"] = Value::Null;
            Ok::<_, std::io::Error>(Frame::data(Bytes::from(format!("data: {line}\n\n"))))
        });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(frames)));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/event-stream"),
    );
    r.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    r
}

/// `POST /api/sweeps/ID/cancel`, `/resume` and `/enqueue` (a body of one JSON object of
/// parameters: Optuna's enqueue_trial), when the page was started with control.
pub async fn control(mut c: Client, id: &str, action: &str, body: &[u8]) -> Response<Body> {
    let r = match action {
        "enqueue" => {
            let text = String::from_utf8_lossy(body);
            if !serde_json::from_str::<Value>(&text).is_ok_and(|v| v.is_object()) {
                return http::error(
                    StatusCode::BAD_REQUEST,
                    "enqueue: expected one JSON object of parameters, e.g. {\"lr\": 0.01}",
                );
            }
            c.extend_sweep(proto::ExtendSweepRequest {
                sweep_id: id.to_owned(),
                trials: 0,
                enqueue_json: vec![text.into_owned()],
            })
            .await
            .map(|_| ())
        }
        "cancel" => c
            .cancel_sweep(proto::CancelSweepRequest {
                sweep_id: id.to_owned(),
            })
            .await
            .map(|_| ()),
        _ => c
            .resume_sweep(proto::ResumeSweepRequest {
                sweep_id: id.to_owned(),
            })
            .await
            .map(|_| ()),
    };
    match r {
        Ok(()) => http::json(&json!({ "ok": true })),
        Err(s) => failed(s),
    }
}
