//! Client side of the sweep service: connecting, submitting, logs, and turning results
//! into CSV or JSON (following a sweep to its end is in `follow`).

use std::time::Duration;

use anyhow::{Context, Result};
use ridgeline_common::net::{self, AuthChannel, Security};

use ridgeline_common::MAX_MESSAGE_BYTES;
use ridgeline_common::proto::{self, sweep_service_client::SweepServiceClient};
use ridgeline_common::spec::SweepSpec;

/// A connected client.
pub type Client = SweepServiceClient<AuthChannel>;

/// Connects to a coordinator and checks that it answers, retrying until `timeout`
/// (it may be starting). A listener that accepts connections but never answers (a
/// hung process, a wrong port) gets the same clear error as no listener at all.
pub async fn connect(url: &str, sec: &Security, timeout: Duration) -> Result<Client> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = String::new();
    let silent = |last: &str| {
        let why = if last.is_empty() {
            String::new()
        } else {
            format!(" ({last})")
        };
        anyhow::anyhow!(
            "no coordinator answering at {url} after {} s{why}",
            timeout.as_secs()
        )
    };
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let attempt = tokio::time::timeout(left, async {
            let ch = net::connect(url, sec, None).await?;
            let mut c = SweepServiceClient::new(ch)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES);
            // The cheapest call there is proves the coordinator is serving.
            c.list_sweeps(proto::ListSweepsRequest {
                page_size: 1,
                ..Default::default()
            })
            .await
            .map_err(|s| anyhow::anyhow!("{}", s.message()).context(s.code()))?;
            anyhow::Ok(c)
        })
        .await;
        match attempt {
            Err(_) => return Err(silent(&last)),
            Ok(Ok(c)) => return Ok(c),
            Ok(Err(e)) => {
                let fatal = e.downcast_ref::<net::NetError>().is_some_and(|n| {
                    matches!(
                        n,
                        net::NetError::Url(..)
                            | net::NetError::File(..)
                            | net::NetError::Config(..)
                    )
                }) || e.downcast_ref::<tonic::Code>().is_some_and(|c| {
                    matches!(
                        c,
                        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
                    )
                });
                // A malformed URL, an unreadable certificate or a refused token will not
                // get better by waiting.
                if fatal {
                    return Err(e);
                }
                last = format!("{e:#}");
            }
        }
        if tokio::time::Instant::now() + Duration::from_millis(250) >= deadline {
            return Err(silent(&last));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A sweep's status and all its trials, fetched page by page.
pub async fn results(client: &mut Client, sweep_id: &str) -> Result<proto::GetResultsResponse> {
    let mut all = proto::GetResultsResponse::default();
    loop {
        let r = client
            .get_results(proto::GetResultsRequest {
                sweep_id: sweep_id.to_owned(),
                page_size: 0,
                page_token: std::mem::take(&mut all.next_page_token),
            })
            .await
            .map_err(status_error)?
            .into_inner();
        all.status = r.status;
        all.trials.extend(r.trials);
        if r.next_page_token.is_empty() {
            return Ok(all);
        }
        all.next_page_token = r.next_page_token;
    }
}

/// A small JSON file of a sweep's artifacts (meta.json, hessian.json), or `Null` when
/// it is not there (yet), is too large to be small, or does not parse.
pub async fn small_json(client: &mut Client, sweep_id: &str, path: &str) -> serde_json::Value {
    const LIMIT: usize = 16 << 20;
    let Ok(r) = client
        .read_artifact(proto::ReadArtifactRequest {
            sweep_id: sweep_id.to_owned(),
            path: path.to_owned(),
            ..Default::default()
        })
        .await
    else {
        return serde_json::Value::Null;
    };
    let mut stream = r.into_inner();
    let mut bytes = Vec::new();
    while let Ok(Some(chunk)) = stream.message().await {
        bytes.extend_from_slice(&chunk.data);
        if bytes.len() > LIMIT {
            return serde_json::Value::Null;
        }
    }
    serde_json::from_slice(&bytes).unwrap_or_default()
}

/// Every sweep the coordinator has, page by page.
pub async fn list_all(client: &mut Client, with_spec: bool) -> Result<Vec<proto::SweepStatus>> {
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let r = client
            .list_sweeps(proto::ListSweepsRequest {
                // Specs are capped (1 MiB by default): pages with specs stay far below
                // the message limit.
                page_size: if with_spec { 50 } else { 500 },
                page_token: token,
                with_spec,
            })
            .await
            .map_err(status_error)?
            .into_inner();
        all.extend(r.sweeps);
        if r.next_page_token.is_empty() {
            return Ok(all);
        }
        token = r.next_page_token;
    }
}

/// What a sweep's units are called: trials of a search, units (tiles and Hessian
/// rounds) of a scan.
pub fn unit_noun(kind: &str) -> &'static str {
    if kind == "landscape" {
        "units"
    } else {
        "trials"
    }
}

pub(crate) fn status_error(s: tonic::Status) -> anyhow::Error {
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
    let fields = match &spec.data {
        Some(d) => vec![
            ("data.path", Some(&d.path)),
            ("data.labels", d.labels.as_ref()),
        ],
        None => vec![],
    };
    if let Some(w) = spec.trial.as_ref().and_then(|t| t.workdir.as_ref()) {
        // Workers on this machine run the command there; elsewhere it must exist too.
        anyhow::ensure!(
            w.is_dir(),
            "{}: trial.workdir: not a folder: {}",
            spec_path.display(),
            w.display()
        );
    }
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
    let mut shared = None;
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
            let files = checkpoint_files(std::path::Path::new(&c))
                .with_context(|| format!("{}: landscape.checkpoint", spec_path.display()))?;
            if l.shared_checkpoint {
                // Only the manifest travels; every worker reads the files at their path.
                shared = Some(serde_json::to_vec_pretty(&shared_manifest(&files))?);
            } else {
                for (path, name) in files {
                    attach("landscape.checkpoint", path, &name)?;
                }
            }
        }
        // A target is a checkpoint folder, or (for an evaluator's model) a safetensors
        // file of its state_dict.
        let weights = |c: String| {
            let p = std::path::PathBuf::from(c);
            if p.is_file() {
                p
            } else {
                p.join("model.safetensors")
            }
        };
        if let Some(c) = local(&l.directions.to) {
            attach("landscape.directions.to", weights(c), "to.safetensors")?;
        }
        if let Some(c) = local(&l.directions.y_to) {
            attach("landscape.directions.y_to", weights(c), "y_to.safetensors")?;
        }
        if let Some(f) = &l.directions.file {
            attach("landscape.directions.file", f.clone(), "file.safetensors")?;
        }
    }
    if let Some(data) = shared {
        attachments.push(proto::Artifact {
            name: "checkpoint.json".into(),
            data,
        });
    }
    // A submission is one message; past the limit the server would only say "h2
    // protocol error".
    let total: usize = attachments.iter().map(|a| a.data.len()).sum();
    anyhow::ensure!(
        total + spec.to_json().len() < MAX_MESSAGE_BYTES - (1 << 20),
        "{}: landscape.checkpoint: its files take {} MiB, more than a submission carries ({} MiB); \
         keep the checkpoint where every worker can read it (as `ridgeline run`'s own workers can) \
         and set landscape.shared_checkpoint = true, or save it in a smaller format (GGUF, f16)",
        spec_path.display(),
        total >> 20,
        MAX_MESSAGE_BYTES >> 20
    );
    Ok(client
        .submit_sweep(proto::SubmitSweepRequest {
            spec_json: spec.to_json(),
            attachments,
        })
        .await
        .map_err(status_error)?
        .into_inner())
}

/// The files of a checkpoint to scan, with their names in the sweep: a `.gguf` file, a
/// Hugging Face folder (`config.json` and `model.safetensors`, or the shards that
/// `model.safetensors.index.json` lists), or a Ridgeline folder (`model.json` and
/// `model.safetensors`).
pub fn checkpoint_files(path: &std::path::Path) -> Result<Vec<(std::path::PathBuf, String)>> {
    if path.extension().is_some_and(|e| e == "gguf") {
        return Ok(vec![(path.to_owned(), "model.gguf".into())]);
    }
    let at = |n: &str| (path.join(n), n.to_owned());
    if path.join("model.json").exists() {
        return Ok(vec![at("model.json"), at("model.safetensors")]);
    }
    if path.join("config.json").exists() {
        let index = path.join("model.safetensors.index.json");
        if index.exists() {
            let bytes = std::fs::read(&index).with_context(|| index.display().to_string())?;
            let shards =
                ridgeline_worker::models::hf::shard_names(&bytes).map_err(anyhow::Error::msg)?;
            let mut files = vec![at("config.json"), at("model.safetensors.index.json")];
            files.extend(shards.iter().map(|s| at(s)));
            return Ok(files);
        }
        return Ok(vec![at("config.json"), at("model.safetensors")]);
    }
    anyhow::bail!(
        "{}: expected a .gguf file, or a folder with model.json (Ridgeline) or config.json (Hugging Face)",
        path.display()
    )
}

/// The manifest of a checkpoint the workers read from a shared file system:
/// `{"format", "files": [names], "paths": {name: absolute path}}`.
fn shared_manifest(files: &[(std::path::PathBuf, String)]) -> serde_json::Value {
    let names: Vec<&str> = files.iter().map(|(_, n)| n.as_str()).collect();
    let format = ridgeline_coordinator::landscape::checkpoint_format(names.iter().copied());
    let paths: serde_json::Map<String, serde_json::Value> = files
        .iter()
        .map(|(p, n)| {
            (
                n.clone(),
                serde_json::Value::String(p.display().to_string()),
            )
        })
        .collect();
    serde_json::json!({"format": format, "files": names, "paths": paths, "shared": true})
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

pub(crate) fn unit_state_name(s: i32) -> &'static str {
    match proto::UnitState::try_from(s) {
        Ok(proto::UnitState::Pending) => "pending",
        Ok(proto::UnitState::Running) => "running",
        Ok(proto::UnitState::Completed) => "completed",
        Ok(proto::UnitState::Failed) => "failed",
        Ok(proto::UnitState::Diverged) => "diverged",
        Ok(proto::UnitState::Cancelled) => "cancelled",
        Ok(proto::UnitState::Pruned) => "pruned",
        _ => "unknown",
    }
}

/// Runs a cancelled search again (`ResumeSweep`).
pub async fn resume(client: &mut Client, sweep_id: &str) -> Result<()> {
    client
        .resume_sweep(proto::ResumeSweepRequest {
            sweep_id: sweep_id.to_owned(),
        })
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
    Ok(())
}

/// Adds `trials` trials and the configurations `enqueue` (JSON objects) to a search;
/// returns its trials now.
pub async fn extend(
    client: &mut Client,
    sweep_id: &str,
    trials: u32,
    enqueue: Vec<String>,
) -> Result<u32> {
    Ok(client
        .extend_sweep(proto::ExtendSweepRequest {
            sweep_id: sweep_id.to_owned(),
            trials,
            enqueue_json: enqueue,
        })
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message()))?
        .into_inner()
        .total)
}

/// The configurations in a JSON file (`-`: standard input): one object, or a list of
/// objects, each returned as its own JSON text.
pub fn read_configurations(path: &std::path::Path) -> Result<Vec<String>> {
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?
    };
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    let list = match v {
        serde_json::Value::Array(items) => items,
        one => vec![one],
    };
    list.into_iter()
        .enumerate()
        .map(|(i, c)| {
            if c.is_object() {
                Ok(c.to_string())
            } else {
                anyhow::bail!(
                    "{}: configuration {i} is not a JSON object of parameters",
                    path.display()
                )
            }
        })
        .collect()
}

/// One line summarising a sweep. Units are counted by what became of them: a cancelled
/// sweep's never-run units are "cancelled", not "done".
pub fn summary(s: &proto::SweepStatus) -> String {
    let mut line = format!(
        "{} {}: {}/{} {} completed, {} running, {} failed, {} diverged",
        s.sweep_id,
        state_name(s.state),
        s.completed,
        s.total,
        unit_noun(&s.kind),
        s.running,
        s.failed,
        s.diverged
    );
    if s.pruned > 0 {
        line += &format!(", {} pruned", s.pruned);
    }
    if s.cancelled > 0 {
        line += &format!(", {} cancelled", s.cancelled);
    }
    if s.objectives.len() > 1 {
        // Several objectives: no best, a front.
        line += &format!(
            ", Pareto front of {} trials over {}, hypervolume {:.4}",
            s.pareto.len(),
            s.objectives.join(", "),
            s.hypervolume
        );
    } else if let Some(b) = &s.best.as_ref().filter(|_| s.kind == "landscape") {
        // A tile's number means nothing to the user; its coordinates are in the scan's
        // own summary (`status SWEEP`, meta.json).
        line += &format!(", lowest {} {:.4}", s.metric, b.value);
    } else if let Some(b) = &s.best {
        line += &format!(
            ", best {}={:.4} (trial {})",
            s.metric, b.value, b.trial_index
        );
        if s.pruned > 0 {
            // A pruned trial's last report may beat the best, but it was never finished.
            line += " of the completed";
        }
    }
    line
}

/// Prints a trial's log to stdout; with `follow`, keeps polling until the trial is
/// final and its log fully read.
pub async fn logs(
    client: &mut Client,
    sweep: &str,
    trial: u32,
    attempt: u32,
    follow: bool,
) -> Result<()> {
    use std::io::Write;
    let mut offset = 0;
    let mut attempt = attempt;
    loop {
        let r = client
            .get_trial_log(proto::GetTrialLogRequest {
                sweep_id: sweep.to_owned(),
                trial,
                attempt,
                offset,
                max_bytes: 0,
            })
            .await;
        let r = match r {
            // Following a trial that has not started yet: wait for it.
            Err(s)
                if follow
                    && s.code() == tonic::Code::NotFound
                    && s.message().contains("no trial") =>
            {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            r => r.map_err(status_error)?.into_inner(),
        };
        if attempt == 0 {
            // Follow the attempt that was latest when we started.
            attempt = r.attempt;
        }
        let got = !r.data.is_empty();
        std::io::stdout().write_all(&r.data)?;
        std::io::stdout().flush()?;
        offset = r.next_offset;
        let running = matches!(
            proto::UnitState::try_from(r.state),
            Ok(proto::UnitState::Pending | proto::UnitState::Running)
        );
        if got {
            continue;
        }
        // Nothing at all in the log: say so rather than print nothing.
        let said_nothing = offset == 0;
        if !follow {
            if said_nothing {
                eprintln!(
                    "trial {trial} attempt {attempt}: no output yet (nothing on stdout or stderr besides its reports{})",
                    if running {
                        "; --follow waits for it"
                    } else {
                        ""
                    }
                );
            }
            return Ok(());
        }
        if r.attempts > attempt {
            // The attempt ended and the trial runs again: follow the new one.
            attempt = r.attempts;
            offset = 0;
            eprintln!("--- attempt {attempt} ---");
            continue;
        }
        if !running {
            if said_nothing {
                eprintln!(
                    "trial {trial} attempt {attempt}: no output (nothing on stdout or stderr besides its reports)"
                );
            }
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Whether a failed call may succeed later (the coordinator restarting, a network
/// blip), as opposed to an answer that will not change.
/// A byte count as people read it: 1.5 MiB.
pub fn bytes(n: u64) -> String {
    let mut v = n as f64;
    for unit in ["B", "KiB", "MiB", "GiB"] {
        if v < 1024.0 || unit == "GiB" {
            return if unit == "B" {
                format!("{n} B")
            } else {
                format!("{v:.1} {unit}")
            };
        }
        v /= 1024.0;
    }
    unreachable!("the loop returns at GiB")
}

/// Errors a new connection may cure: the coordinator restarting, a dropped link.
pub fn transient(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        tonic::Code::Unavailable
            | tonic::Code::Unknown
            | tonic::Code::Cancelled
            | tonic::Code::Internal
    )
}
