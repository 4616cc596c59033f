//! The client-facing gRPC service: submit, status, watch, cancel, list, results.

use super::artifacts;
use super::logs;
use super::*;

pub(super) struct SweepApi {
    pub(super) h: Handle,
    pub(super) data_dir: PathBuf,
    pub(super) limits: Limits,
}

/// A sweep's size in the unit people think in: grid points of a scan, trials of a
/// search.
fn points(spec: &SweepSpec) -> (u64, &'static str) {
    match &spec.landscape {
        Some(l) => (l.points() as u64, "grid points"),
        None => (spec.total_trials(), "trials"),
    }
}

/// Refuses what no coordinator should try: specs too large to list, grids too large to
/// ever finish.
fn check_limits(spec_json: &str, limits: &Limits) -> Result<SweepSpec, Status> {
    if spec_json.len() > limits.max_spec_bytes {
        return Err(Status::invalid_argument(format!(
            "spec: {} bytes; this coordinator accepts specs of at most {} bytes (setting max_spec_bytes)",
            spec_json.len(),
            limits.max_spec_bytes
        )));
    }
    let spec = SweepSpec::from_json(spec_json)
        .map_err(|e| Status::invalid_argument(format!("spec: {e}")))?;
    let (n, what) = points(&spec);
    if n > limits.max_points_per_sweep {
        let field = if spec.landscape.is_some() {
            "landscape.x.points x landscape.y.points"
        } else {
            "search"
        };
        return Err(Status::invalid_argument(format!(
            "{field}: {n} {what}; this coordinator accepts at most {} per sweep (setting max_points_per_sweep)",
            limits.max_points_per_sweep
        )));
    }
    Ok(spec)
}

impl SweepApi {
    /// The checkpoint folder a reference names: `sweep:ID/best` (the best trial of a
    /// sweep here) or `sweep:ID/trial/N`.
    async fn best_checkpoint(&self, field: &str, reference: &str) -> Result<PathBuf, Status> {
        let bad = || {
            Status::invalid_argument(format!(
                "{field}: {reference:?} was not attached; give a folder the client can read, sweep:ID/best or sweep:ID/trial/N"
            ))
        };
        let rest = reference.strip_prefix("sweep:").ok_or_else(bad)?;
        let (src, which) = rest.split_once('/').ok_or_else(bad)?;
        // The id becomes part of a path: only what sweep ids are made of.
        let id = sweep_id(src).map_err(|_| bad())?;
        if let Some(n) = which.strip_prefix("trial/") {
            let n: u32 = n.parse().map_err(|_| bad())?;
            let dir = trial_dir(&self.data_dir, &id, n);
            if !dir.join(landscape::MODEL_WEIGHTS).exists() {
                return Err(Status::failed_precondition(format!(
                    "{field}: sweep {id} has no checkpoint for trial {n} (it did not complete, or its search's `keep` removed it)"
                )));
            }
            return Ok(dir);
        }
        if which != "best" {
            return Err(bad());
        }
        let st = self.h.call(|tx| Event::Status(id.clone(), tx)).await?;
        st.best
            .map(|b| b.checkpoint_dir)
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .ok_or_else(|| {
                Status::failed_precondition(format!(
                    "{field}: sweep {id} has no completed trial with a checkpoint"
                ))
            })
    }

    /// The completed trials of the sweep `reference` (`sweep:ID`) with their values of
    /// `metrics` (those that reported them all), oldest first, for a warm start.
    async fn warm_trials(
        &self,
        reference: &str,
        metrics: &[String],
    ) -> Result<Vec<ridgeline_common::spec::WarmTrial>, Status> {
        let field = "search.warm_start";
        let src = reference
            .strip_prefix("sweep:")
            .ok_or_else(|| Status::invalid_argument(format!("{field}: expected \"sweep:ID\"")))?;
        let id = sweep_id(src).map_err(|e| Status::invalid_argument(format!("{field}: {e}")))?;
        // Unknown sweeps are refused by name.
        self.h
            .call(|tx| Event::Status(id.clone(), tx))
            .await
            .map_err(|e| Status::new(e.code(), format!("{field}: {}", e.message())))?;
        let data_dir = self.data_dir.clone();
        let metrics = metrics.to_vec();
        tokio::task::spawn_blocking(move || -> Result<_, String> {
            let store = Store::open_read_only(&db_path(&data_dir)).map_err(|e| e.to_string())?;
            let mut out = Vec::new();
            let mut after = None;
            loop {
                let page = store
                    .trials_page(&id, after, 5000)
                    .map_err(|e| e.to_string())?;
                let Some(last) = page.last() else { break };
                after = Some(last.trial);
                out.extend(page.into_iter().filter_map(|t| {
                    let values = metrics
                        .iter()
                        .map(|m| {
                            t.final_metrics
                                .iter()
                                .find(|(n, _)| n == m)
                                .map(|(_, v)| *v)
                                .filter(|v| v.is_finite())
                        })
                        .collect::<Option<Vec<f64>>>()?;
                    (t.state == crate::core::UnitState::Completed).then(|| {
                        ridgeline_common::spec::WarmTrial {
                            params: t.params,
                            value: values[0],
                            values: if values.len() > 1 { values } else { vec![] },
                        }
                    })
                }));
            }
            Ok(out)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(Status::internal)
    }

    /// The files a scan's workers need: the checkpoint (attached by the client, or the
    /// best trial of a sweep here), target checkpoints, and the directions.
    async fn landscape_files(
        &self,
        spec: &mut SweepSpec,
        attachments: Vec<proto::Artifact>,
    ) -> Result<Vec<(String, Vec<u8>)>, Status> {
        let mut files: HashMap<String, Vec<u8>> =
            attachments.into_iter().map(|a| (a.name, a.data)).collect();
        let l = spec
            .landscape
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("landscape: missing"))?;
        if l.evaluator.is_some() {
            // The evaluator's process holds the model; its workers make the directions,
            // from the target checkpoints or the directions file when given.
            const KEPT: [&str; 3] = ["to.safetensors", "y_to.safetensors", "file.safetensors"];
            if let Some(n) = files.keys().find(|n| !KEPT.contains(&n.as_str())) {
                return Err(Status::invalid_argument(format!(
                    "landscape.evaluator: an evaluator brings its own model; {n} is not a file of its scan (targets and a directions file are)"
                )));
            }
            for (field, reference, name) in [
                ("landscape.directions.to", &l.directions.to, KEPT[0]),
                ("landscape.directions.y_to", &l.directions.y_to, KEPT[1]),
            ] {
                if let Some(r) = reference.as_ref().filter(|_| !files.contains_key(name)) {
                    let dir = self.best_checkpoint(field, r).await?;
                    let path = dir.join(landscape::MODEL_WEIGHTS);
                    let bytes =
                        crate::fsafe::read(&path).map_err(|e| Status::internal(e.to_string()))?;
                    files.insert(name.to_owned(), bytes);
                }
            }
            let mut out: Vec<(String, Vec<u8>)> = files.into_iter().collect();
            out.extend(landscape::evaluator_files(spec));
            return Ok(out);
        }
        let read =
            |path: PathBuf| crate::fsafe::read(&path).map_err(|e| Status::internal(e.to_string()));
        if !files.contains_key(landscape::MODEL_WEIGHTS)
            && !files.contains_key(landscape::GGUF)
            && !files.contains_key(landscape::HF_CONFIG)
            && !files.contains_key(landscape::MANIFEST)
        {
            let dir = self
                .best_checkpoint(
                    "landscape.checkpoint",
                    l.checkpoint.as_deref().unwrap_or_default(),
                )
                .await?;
            for name in [landscape::MODEL_JSON, landscape::MODEL_WEIGHTS] {
                files.insert(name.to_owned(), read(dir.join(name))?);
            }
        }
        for (field, reference, name) in [
            (
                "landscape.directions.to",
                &l.directions.to,
                "to.safetensors",
            ),
            (
                "landscape.directions.y_to",
                &l.directions.y_to,
                "y_to.safetensors",
            ),
        ] {
            if let Some(r) = reference {
                if !files.contains_key(name) {
                    let dir = self.best_checkpoint(field, r).await?;
                    files.insert(name.to_owned(), read(dir.join(landscape::MODEL_WEIGHTS))?);
                }
            }
        }
        if let Some(r) = l
            .directions
            .trajectory
            .as_ref()
            .filter(|_| l.directions.kind == DirectionKind::Pca)
        {
            let dir = self
                .best_checkpoint("landscape.directions.trajectory", r)
                .await?;
            let mut epochs: Vec<PathBuf> = crate::fsafe::list(&dir)
                .map_err(|e| Status::internal(e.to_string()))?
                .into_iter()
                .filter(|(n, k)| {
                    matches!(k, crate::fsafe::Kind::File { .. })
                        && n.to_str().is_some_and(|n| n.starts_with("model_epoch_"))
                })
                .map(|(n, _)| dir.join(n))
                .collect();
            epochs.sort();
            if epochs.len() < 3 {
                return Err(Status::failed_precondition(format!(
                    "landscape.directions.trajectory: {r} kept {} epoch checkpoints, PCA needs at least 3 (train with keep_checkpoints = true)",
                    epochs.len()
                )));
            }
            for (i, p) in epochs.into_iter().enumerate() {
                files.insert(format!("trajectory_{i:04}.safetensors"), read(p)?);
            }
        }
        let submitted = spec.clone();
        let inputs = files.clone();
        let dirs = tokio::task::spawn_blocking(move || landscape::prepare(&submitted, &inputs))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(Status::invalid_argument)?;
        let mut out: Vec<(String, Vec<u8>)> = files
            .into_iter()
            .filter(|(n, _)| landscape::is_checkpoint_file(n) && n != landscape::MANIFEST)
            .collect();
        if let Some((_, t)) = dirs.iter().find(|(n, _)| n == "trajectory.json") {
            let t: serde_json::Value =
                serde_json::from_slice(t).map_err(|e| Status::internal(e.to_string()))?;
            if let Some(l) = spec.landscape.as_mut() {
                landscape::fit_axes_to_trajectory(l, &t);
            }
        }
        out.extend(dirs);
        Ok(out)
    }
}

type StatusStream = Pin<Box<dyn Stream<Item = Result<proto::SweepStatus, Status>> + Send>>;
type ChunkStream = Pin<Box<dyn Stream<Item = Result<proto::ArtifactChunk, Status>> + Send>>;

#[tonic::async_trait]
impl sweep_service_server::SweepService for SweepApi {
    async fn submit_sweep(
        &self,
        req: Request<proto::SubmitSweepRequest>,
    ) -> Result<Response<proto::SubmitSweepResponse>, Status> {
        let req = req.into_inner();
        let mut spec = check_limits(&req.spec_json, &self.limits)?;
        // What a user gives is the reference; what the sampler learns from is read here.
        spec.search.warm.clear();
        spec.search.queued.clear();
        if let Some(w) = spec.search.warm_start.clone() {
            spec.search.warm = self.warm_trials(&w, spec.search.metric.names()).await?;
        }
        let files = if spec.kind == SweepKind::Landscape {
            self.landscape_files(&mut spec, req.attachments).await?
        } else {
            vec![]
        };
        // A search without a seed gets one drawn now and stored with its spec: sweeps of
        // one spec explore differently, and each can be rerun exactly from its seed.
        if spec.kind == SweepKind::Search && spec.search.seed.is_none() {
            spec.search.seed = Some(u64::from(super::secrets::random_u32()));
        }
        let seed = spec.search.seed();
        let (id, total) = self
            .h
            .call(|tx| Event::Submit(Box::new(spec), files, tx))
            .await?;
        info!(sweep = %id, units = total, seed, "sweep submitted");
        Ok(Response::new(proto::SubmitSweepResponse {
            sweep_id: id.to_string(),
            total_units: total,
            seed,
        }))
    }

    async fn get_status(
        &self,
        req: Request<proto::GetStatusRequest>,
    ) -> Result<Response<proto::SweepStatus>, Status> {
        let id = sweep_id(&req.into_inner().sweep_id)?;
        Ok(Response::new(
            self.h.call(|tx| Event::Status(id, tx)).await?,
        ))
    }

    type WatchSweepStream = StatusStream;

    async fn watch_sweep(
        &self,
        req: Request<proto::WatchSweepRequest>,
    ) -> Result<Response<StatusStream>, Status> {
        let id = sweep_id(&req.into_inner().sweep_id)?;
        let rx = self.h.call(|tx| Event::Watch(id, tx)).await?;
        // Send the current status, then every change, and end after a final state.
        let stream =
            futures::stream::unfold((rx, true, false), |(mut rx, first, done)| async move {
                if done {
                    return None;
                }
                if !first && rx.changed().await.is_err() {
                    return None;
                }
                let st = rx.borrow_and_update().clone();
                let fin = st.state != proto::SweepState::Running as i32;
                Some((Ok(st), (rx, false, fin)))
            });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn cancel_sweep(
        &self,
        req: Request<proto::CancelSweepRequest>,
    ) -> Result<Response<proto::CancelSweepResponse>, Status> {
        let id = sweep_id(&req.into_inner().sweep_id)?;
        let st = self.h.call(|tx| Event::Cancel(id.clone(), tx)).await?;
        info!(sweep = %id, "sweep cancelled");
        Ok(Response::new(proto::CancelSweepResponse {
            state: sweep_state_to_proto(st) as i32,
        }))
    }

    async fn resume_sweep(
        &self,
        req: Request<proto::ResumeSweepRequest>,
    ) -> Result<Response<proto::ResumeSweepResponse>, Status> {
        let id = sweep_id(&req.into_inner().sweep_id)?;
        let st = self.h.call(|tx| Event::Resume(id.clone(), tx)).await?;
        info!(sweep = %id, "sweep resumed");
        Ok(Response::new(proto::ResumeSweepResponse {
            state: sweep_state_to_proto(st) as i32,
        }))
    }

    async fn extend_sweep(
        &self,
        req: Request<proto::ExtendSweepRequest>,
    ) -> Result<Response<proto::ExtendSweepResponse>, Status> {
        let r = req.into_inner();
        let id = sweep_id(&r.sweep_id)?;
        let enqueue = r
            .enqueue_json
            .iter()
            .enumerate()
            .map(|(i, j)| {
                serde_json::from_str::<ridgeline_common::params::Params>(j).map_err(|e| {
                    Status::invalid_argument(format!(
                        "configuration {i}: expected a JSON object of parameters: {e}"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (trials, given) = (r.trials, enqueue.len());
        let total = self
            .h
            .call(|tx| Event::Extend(id.clone(), trials, enqueue, tx))
            .await?;
        info!(sweep = %id, trials, given, total, "sweep extended");
        Ok(Response::new(proto::ExtendSweepResponse { total }))
    }

    async fn list_sweeps(
        &self,
        req: Request<proto::ListSweepsRequest>,
    ) -> Result<Response<proto::ListSweepsResponse>, Status> {
        let r = req.into_inner();
        let after = if r.page_token.is_empty() {
            None
        } else {
            let bad = || Status::invalid_argument("page_token: not a token this coordinator gave");
            let (t, id) = r.page_token.split_once(':').ok_or_else(bad)?;
            Some((t.parse().map_err(|_| bad())?, SweepId(id.to_owned())))
        };
        let q = event_loop::ListQuery {
            after,
            limit: match r.page_size {
                0 => 100,
                n => n.min(1000) as usize,
            },
            with_spec: r.with_spec,
        };
        let (sweeps, next) = self.h.call(|tx| Event::List(q, tx)).await?;
        Ok(Response::new(proto::ListSweepsResponse {
            sweeps,
            next_page_token: next.unwrap_or_default(),
        }))
    }

    async fn delete_sweep(
        &self,
        req: Request<proto::DeleteSweepRequest>,
    ) -> Result<Response<proto::DeleteSweepResponse>, Status> {
        let id = sweep_id(&req.into_inner().sweep_id)?;
        // Counted on the blocking pool before the deletion, never on the event loop.
        let dir = sweep_dir(&self.data_dir, &id);
        let bytes_freed = tokio::task::spawn_blocking(move || dir_bytes(&dir))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        self.h.call(|tx| Event::Delete(id.clone(), tx)).await?;
        info!(sweep = %id, bytes_freed, "sweep deleted");
        Ok(Response::new(proto::DeleteSweepResponse { bytes_freed }))
    }

    async fn get_trial_log(
        &self,
        req: Request<proto::GetTrialLogRequest>,
    ) -> Result<Response<proto::GetTrialLogResponse>, Status> {
        let r = req.into_inner();
        let id = sweep_id(&r.sweep_id)?;
        // Unknown sweeps are NOT_FOUND, whether or not their trial exists.
        self.h.call(|tx| Event::Status(id.clone(), tx)).await?;
        let max = match r.max_bytes {
            0 => 1 << 20,
            n => n.min(8 << 20) as usize,
        };
        // No log is longer than its cap (and its note): an offset past it is a mistake.
        if r.offset > ridgeline_common::MAX_LOG_BYTES + 4096 {
            return Err(Status::invalid_argument(format!(
                "offset: {} is past the longest log ({} bytes)",
                r.offset,
                ridgeline_common::MAX_LOG_BYTES
            )));
        }
        let data_dir = self.data_dir.clone();
        let resp = tokio::task::spawn_blocking(move || -> Result<_, Status> {
            let store = Store::open_read_only(&db_path(&data_dir))
                .map_err(|e| Status::internal(e.to_string()))?;
            let (state, attempts) = store
                .trial_attempts(&id, r.trial)
                .map_err(|e| Status::internal(e.to_string()))?
                .ok_or_else(|| {
                    Status::not_found(format!("sweep {id} has no trial {} (yet)", r.trial))
                })?;
            let attempt = match r.attempt {
                0 => attempts.max(1),
                a if a <= attempts => a,
                a => {
                    return Err(Status::out_of_range(format!(
                        "attempt: trial {} has had {attempts} attempt(s), not {a}",
                        r.trial
                    )));
                }
            };
            let path = logs::log_path(&data_dir, &id, r.trial, attempt);
            let data = logs::read(&path, r.offset, max).map_err(|e| match e.kind() {
                std::io::ErrorKind::PermissionDenied => Status::failed_precondition(format!(
                    "trial {} attempt {attempt}: its log is not a regular file in the sweep's folder",
                    r.trial
                )),
                _ => Status::internal(e.to_string()),
            })?;
            Ok(proto::GetTrialLogResponse {
                next_offset: r.offset + data.len() as u64,
                data,
                attempt,
                attempts,
                state: unit_state_to_proto(state) as i32,
            })
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))??;
        Ok(Response::new(resp))
    }

    async fn list_artifacts(
        &self,
        req: Request<proto::ListArtifactsRequest>,
    ) -> Result<Response<proto::ListArtifactsResponse>, Status> {
        let r = req.into_inner();
        let id = sweep_id(&r.sweep_id)?;
        // Unknown sweeps are NOT_FOUND rather than an empty list.
        let st = self.h.call(|tx| Event::Status(id.clone(), tx)).await?;
        let root = sweep_dir(&self.data_dir, &id);
        let (under, best_trial) = match (r.trial, r.best) {
            (Some(_), true) => {
                return Err(Status::invalid_argument("trial and best: ask for one"));
            }
            (Some(n), false) => (format!("trials/{n:05}"), None),
            (None, true) => {
                let b = st.best.ok_or_else(|| {
                    Status::failed_precondition(format!("sweep {id} has no best trial (yet)"))
                })?;
                (format!("trials/{:05}", b.trial_index), Some(b.trial_index))
            }
            (None, false) => (String::new(), None),
        };
        let location = std::path::absolute(&root)
            .unwrap_or(root.clone())
            .display()
            .to_string();
        let files = tokio::task::spawn_blocking(move || artifacts::list(&root, &under))
            .await
            .map_err(|e| Status::internal(e.to_string()))??;
        Ok(Response::new(proto::ListArtifactsResponse {
            files,
            location,
            best_trial,
        }))
    }

    type ReadArtifactStream = ChunkStream;

    async fn read_artifact(
        &self,
        req: Request<proto::ReadArtifactRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let r = req.into_inner();
        let id = sweep_id(&r.sweep_id)?;
        self.h.call(|tx| Event::Status(id.clone(), tx)).await?;
        let file = artifacts::resolve(&sweep_dir(&self.data_dir, &id), &r.path)?;
        // A few chunks in flight: reading stays ahead of the network without holding a
        // whole checkpoint in memory.
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            artifacts::stream(file, &r.path, r.offset, r.version, |c| {
                tx.blocking_send(c).is_ok()
            })
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn query_trials(
        &self,
        req: Request<proto::QueryTrialsRequest>,
    ) -> Result<Response<proto::QueryTrialsResponse>, Status> {
        let r = req.into_inner();
        let id = sweep_id(&r.sweep_id)?;
        // Through the core first: an unknown sweep is NOT_FOUND, as for every call.
        self.h.call(|tx| Event::Status(id.clone(), tx)).await?;
        super::queries::query_trials(self.data_dir.clone(), id, r)
            .await
            .map(Response::new)
    }

    async fn get_trial_columns(
        &self,
        req: Request<proto::GetTrialColumnsRequest>,
    ) -> Result<Response<proto::GetTrialColumnsResponse>, Status> {
        let r = req.into_inner();
        let id = sweep_id(&r.sweep_id)?;
        self.h.call(|tx| Event::Status(id.clone(), tx)).await?;
        super::queries::trial_columns(self.data_dir.clone(), id, r.columns)
            .await
            .map(Response::new)
    }

    async fn get_results(
        &self,
        req: Request<proto::GetResultsRequest>,
    ) -> Result<Response<proto::GetResultsResponse>, Status> {
        let r = req.into_inner();
        let id = sweep_id(&r.sweep_id)?;
        let after: Option<u32> = if r.page_token.is_empty() {
            None
        } else {
            Some(r.page_token.parse().map_err(|_| {
                Status::invalid_argument("page_token: not a token this coordinator gave")
            })?)
        };
        let limit = match r.page_size {
            0 => 500,
            n => n.min(5000),
        };
        let status = Some(self.h.call(|tx| Event::Status(id.clone(), tx)).await?);
        let data_dir = self.data_dir.clone();
        // Reads go through their own read-only connection: WAL lets them run beside the
        // writer without blocking the event loop. A page at a time keeps both the
        // coordinator's memory and the message bounded, whatever the sweep's size.
        let trials =
            tokio::task::spawn_blocking(move || -> Result<Vec<proto::TrialResult>, String> {
                let store =
                    Store::open_read_only(&db_path(&data_dir)).map_err(|e| e.to_string())?;
                let rows = store
                    .trials_page(&id, after, limit)
                    .map_err(|e| e.to_string())?;
                Ok(rows
                    .into_iter()
                    .map(|t| super::queries::trial_to_proto(&data_dir, &id, t))
                    .collect())
            })
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(Status::internal)?;
        let next_page_token = if trials.len() as u32 == limit {
            trials
                .last()
                .map(|t: &proto::TrialResult| t.trial_index.to_string())
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(proto::GetResultsResponse {
            status,
            trials,
            next_page_token,
        }))
    }
}

/// Bytes of the regular files under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = crate::fsafe::list(dir) else {
        return 0;
    };
    entries
        .into_iter()
        .map(|(n, k)| match k {
            crate::fsafe::Kind::Dir => dir_bytes(&dir.join(n)),
            crate::fsafe::Kind::File { len, .. } => len,
            crate::fsafe::Kind::Other => 0,
        })
        .sum()
}
