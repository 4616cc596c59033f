//! Client side of the sweep service: submitting, watching with a progress bar, and
//! turning results into CSV or JSON.

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use ridgeline_common::net::{self, AuthChannel, Security};

use ridgeline_common::MAX_MESSAGE_BYTES;
use ridgeline_common::params::{ParamValue, params_from_proto};
use ridgeline_common::proto::{self, sweep_service_client::SweepServiceClient};
use ridgeline_common::spec::SweepSpec;

/// A connected client.
pub type Client = SweepServiceClient<AuthChannel>;

/// Connects to a coordinator, retrying briefly (it may be starting).
pub async fn connect(url: &str, sec: &Security) -> Result<Client> {
    let mut last = String::new();
    for _ in 0..20 {
        match net::connect(url, sec, None).await {
            Ok(ch) => {
                return Ok(SweepServiceClient::new(ch)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES));
            }
            // A malformed URL or unreadable certificate will not get better.
            Err(
                e @ (net::NetError::Url(..) | net::NetError::File(..) | net::NetError::Config(..)),
            ) => return Err(e.into()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    bail!("cannot reach the coordinator: {last}")
}

fn status_error(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", s.message())
}

/// Reads a spec file and submits it.
pub async fn submit(
    client: &mut Client,
    spec_path: &std::path::Path,
) -> Result<proto::SubmitSweepResponse> {
    let spec = SweepSpec::from_file(spec_path)?;
    submit_spec(client, spec_path, &spec).await
}

/// Checks that a spec's files exist, attaches a scan's local checkpoint, and submits.
pub async fn submit_spec(
    client: &mut Client,
    spec_path: &std::path::Path,
    spec: &SweepSpec,
) -> Result<proto::SubmitSweepResponse> {
    let fields = [
        ("data.path", Some(&spec.data.path)),
        ("data.labels", spec.data.labels.as_ref()),
    ];
    for (field, p) in fields {
        if let Some(p) = p {
            anyhow::ensure!(
                p.exists(),
                "{}: {field}: file not found: {}",
                spec_path.display(),
                p.display()
            );
        }
    }
    let mut attachments = Vec::new();
    let mut attach = |field: &str, path: std::path::PathBuf, name: &str| -> Result<()> {
        let data = std::fs::read(&path).with_context(|| {
            format!(
                "{}: {field}: cannot read {}",
                spec_path.display(),
                path.display()
            )
        })?;
        attachments.push(proto::Artifact {
            name: name.into(),
            data,
        });
        Ok(())
    };
    if let Some(l) = &spec.landscape {
        // Local checkpoints travel with the submission; `sweep:ID/best` references are
        // resolved by the coordinator.
        let local = |c: &Option<String>| {
            c.clone()
                .filter(|c| !c.starts_with("sweep:") && !c.starts_with("trial:"))
        };
        if let Some(c) = local(&l.checkpoint) {
            let dir = std::path::Path::new(&c);
            attach("landscape.checkpoint", dir.join("model.json"), "model.json")?;
            attach(
                "landscape.checkpoint",
                dir.join("model.safetensors"),
                "model.safetensors",
            )?;
        }
        if let Some(c) = local(&l.directions.to) {
            attach(
                "landscape.directions.to",
                std::path::Path::new(&c).join("model.safetensors"),
                "to.safetensors",
            )?;
        }
        if let Some(c) = local(&l.directions.y_to) {
            attach(
                "landscape.directions.y_to",
                std::path::Path::new(&c).join("model.safetensors"),
                "y_to.safetensors",
            )?;
        }
        if let Some(f) = &l.directions.file {
            attach("landscape.directions.file", f.clone(), "file.safetensors")?;
        }
    }
    Ok(client
        .submit_sweep(proto::SubmitSweepRequest {
            spec_json: spec.to_json(),
            attachments,
        })
        .await
        .map_err(status_error)?
        .into_inner())
}

/// The state's name for people.
pub fn state_name(s: i32) -> &'static str {
    match proto::SweepState::try_from(s) {
        Ok(proto::SweepState::Running) => "running",
        Ok(proto::SweepState::Completed) => "completed",
        Ok(proto::SweepState::Cancelled) => "cancelled",
        Ok(proto::SweepState::Failed) => "failed",
        _ => "unknown",
    }
}

fn unit_state_name(s: i32) -> &'static str {
    match proto::UnitState::try_from(s) {
        Ok(proto::UnitState::Pending) => "pending",
        Ok(proto::UnitState::Running) => "running",
        Ok(proto::UnitState::Completed) => "completed",
        Ok(proto::UnitState::Failed) => "failed",
        Ok(proto::UnitState::Diverged) => "diverged",
        Ok(proto::UnitState::Cancelled) => "cancelled",
        _ => "unknown",
    }
}

/// One line summarising a sweep.
pub fn summary(s: &proto::SweepStatus) -> String {
    let done = s.completed + s.failed + s.diverged + s.cancelled;
    let mut line = format!(
        "{} {}: {done}/{} done, {} running, {} failed, {} diverged",
        s.sweep_id,
        state_name(s.state),
        s.total,
        s.running,
        s.failed,
        s.diverged
    );
    if let Some(b) = &s.best {
        let unit = if s.kind == "landscape" {
            "tile"
        } else {
            "trial"
        };
        line += &format!(
            ", best {}={:.4} ({unit} {})",
            s.metric, b.value, b.trial_index
        );
    }
    line
}

/// Follows a sweep until it reaches a final state; shows a progress bar on a terminal and
/// a line per finished unit otherwise. Returns the final status.
pub async fn watch(client: &mut Client, sweep_id: &str) -> Result<proto::SweepStatus> {
    let mut stream = client
        .watch_sweep(proto::WatchSweepRequest {
            sweep_id: sweep_id.to_owned(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let tty = std::io::stderr().is_terminal();
    let bar = ProgressBar::hidden();
    if tty {
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} trials  {msg}",
            )
            .expect("valid template"),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
    }
    let mut last_done = u32::MAX;
    let mut last = None;
    while let Some(st) = stream.message().await.map_err(status_error)? {
        let done = st.completed + st.failed + st.diverged + st.cancelled;
        bar.set_length(u64::from(st.total));
        bar.set_position(u64::from(done));
        let best = st
            .best
            .as_ref()
            .map(|b| format!("best {} {:.4}", st.metric, b.value))
            .unwrap_or_default();
        bar.set_message(format!("{} running  {best}", st.running));
        // Without a terminal, a line per finished unit; the final state is the caller's
        // to print.
        let finished = st.state != proto::SweepState::Running as i32;
        if !tty && done != last_done && !finished {
            eprintln!("{}", summary(&st));
            last_done = done;
        }
        last = Some(st);
    }
    bar.finish_and_clear();
    last.context("the coordinator closed the watch without a status")
}

/// Result rows as CSV: one row per trial, parameters and final metrics as columns.
pub fn results_csv(r: &proto::GetResultsResponse) -> Result<String> {
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
    header.extend(["epochs", "duration_s", "worker", "attempts", "error"].map(String::from));
    w.write_record(&header)?;
    for t in &r.trials {
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
        row.push(t.history.len().to_string());
        row.push(format!("{:.3}", t.duration_s));
        row.push(t.worker.clone());
        row.push(t.attempts.to_string());
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
    let trials: Vec<serde_json::Value> = r
        .trials
        .iter()
        .map(|t| {
            let p = params_from_proto(&t.params).unwrap_or_default();
            serde_json::json!({
                "trial": t.trial_index,
                "state": unit_state_name(t.state),
                "params": p,
                "metrics": metric_map(&t.final_metrics),
                "history": t.history.iter().map(|h| {
                    let mut m = metric_map(&h.metrics);
                    m.insert("epoch".into(), h.step.into());
                    serde_json::Value::Object(m)
                }).collect::<Vec<_>>(),
                "duration_s": t.duration_s,
                "worker": t.worker,
                "attempts": t.attempts,
                "error": (!t.error.is_empty()).then_some(&t.error),
                "checkpoint_dir": (!t.checkpoint_dir.is_empty()).then_some(&t.checkpoint_dir),
            })
        })
        .collect();
    let st = r.status.as_ref();
    Ok(serde_json::to_string_pretty(&serde_json::json!({
        "sweep": st.map(|s| s.sweep_id.clone()),
        "state": st.map(|s| state_name(s.state)),
        "metric": st.map(|s| s.metric.clone()),
        "mode": st.map(|s| s.mode.clone()),
        "best_trial": st.and_then(|s| s.best.as_ref()).map(|b| b.trial_index),
        "trials": trials,
    }))?)
}
