//! The client-facing gRPC service: submit, status, watch, cancel, list, results.

use super::*;

pub(super) struct SweepApi {
    pub(super) h: Handle,
    pub(super) data_dir: PathBuf,
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
        let id = SweepId(src.to_owned());
        if let Some(n) = which.strip_prefix("trial/") {
            let n: u32 = n.parse().map_err(|_| bad())?;
            let dir = trial_dir(&self.data_dir, &id, n);
            if !dir.join(landscape::MODEL_WEIGHTS).exists() {
                return Err(Status::failed_precondition(format!(
                    "{field}: sweep {id} has no checkpoint for trial {n}"
                )));
            }
            return Ok(dir);
        }
        if which != "best" {
            return Err(bad());
        }
        let mut st = self
            .h
            .call(|tx| Event::Status(Some(id.clone()), tx))
            .await?;
        st.pop()
            .and_then(|s| s.best)
            .map(|b| b.checkpoint_dir)
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .ok_or_else(|| {
                Status::failed_precondition(format!(
                    "{field}: sweep {id} has no completed trial with a checkpoint"
                ))
            })
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
        let read = |path: PathBuf| {
            std::fs::read(&path).map_err(|e| Status::internal(format!("{}: {e}", path.display())))
        };
        if !files.contains_key(landscape::MODEL_WEIGHTS) {
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
            let mut epochs: Vec<PathBuf> = std::fs::read_dir(&dir)
                .map_err(|e| Status::internal(format!("{}: {e}", dir.display())))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("model_epoch_"))
                })
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
            .filter(|(n, _)| n == landscape::MODEL_JSON || n == landscape::MODEL_WEIGHTS)
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

#[tonic::async_trait]
impl sweep_service_server::SweepService for SweepApi {
    async fn submit_sweep(
        &self,
        req: Request<proto::SubmitSweepRequest>,
    ) -> Result<Response<proto::SubmitSweepResponse>, Status> {
        let req = req.into_inner();
        let mut spec = SweepSpec::from_json(&req.spec_json)
            .map_err(|e| Status::invalid_argument(format!("spec: {e}")))?;
        let files = if spec.kind == SweepKind::Landscape {
            self.landscape_files(&mut spec, req.attachments).await?
        } else {
            vec![]
        };
        let (id, total) = self
            .h
            .call(|tx| Event::Submit(Box::new(spec), files, tx))
            .await?;
        info!(sweep = %id, units = total, "sweep submitted");
        Ok(Response::new(proto::SubmitSweepResponse {
            sweep_id: id.to_string(),
            total_units: total,
        }))
    }

    async fn get_status(
        &self,
        req: Request<proto::GetStatusRequest>,
    ) -> Result<Response<proto::SweepStatus>, Status> {
        let id = sweep_id(&req.into_inner().sweep_id)?;
        let mut v = self.h.call(|tx| Event::Status(Some(id), tx)).await?;
        Ok(Response::new(v.pop().expect("one status per id")))
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

    async fn list_sweeps(
        &self,
        _req: Request<proto::ListSweepsRequest>,
    ) -> Result<Response<proto::ListSweepsResponse>, Status> {
        let sweeps = self.h.call(|tx| Event::Status(None, tx)).await?;
        Ok(Response::new(proto::ListSweepsResponse { sweeps }))
    }

    async fn get_results(
        &self,
        req: Request<proto::GetResultsRequest>,
    ) -> Result<Response<proto::GetResultsResponse>, Status> {
        let id = sweep_id(&req.into_inner().sweep_id)?;
        let mut st = self
            .h
            .call(|tx| Event::Status(Some(id.clone()), tx))
            .await?;
        let status = st.pop();
        let data_dir = self.data_dir.clone();
        // Reads go through their own read-only connection: WAL lets them run beside the
        // writer without blocking the event loop.
        let trials = tokio::task::spawn_blocking(move || -> Result<_, String> {
            let store = Store::open_read_only(&db_path(&data_dir)).map_err(|e| e.to_string())?;
            let rows = store.trials(&id).map_err(|e| e.to_string())?;
            Ok(rows
                .into_iter()
                .map(|t| {
                    let dir = trial_dir(&data_dir, &id, t.trial);
                    proto::TrialResult {
                        trial_index: t.trial,
                        state: unit_state_to_proto(t.state) as i32,
                        params: params_to_proto(&t.params),
                        final_metrics: metrics_to_proto(&t.final_metrics),
                        duration_s: t.duration_s.unwrap_or(0.0),
                        worker: t.worker.unwrap_or_default(),
                        error: t.error.unwrap_or_default(),
                        attempts: t.attempts,
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
                })
                .collect())
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(Status::internal)?;
        Ok(Response::new(proto::GetResultsResponse { status, trials }))
    }
}
