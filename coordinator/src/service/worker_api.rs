//! The worker-facing gRPC service: validates and converts, then posts to the loop.

use super::secrets::Caller;
use super::*;

/// The worker a request names, with the secret it carries.
fn caller(id: &str, secret: String) -> Result<Caller, Status> {
    Ok(Caller {
        id: worker_id(id)?,
        secret,
    })
}

pub(super) struct WorkerApi {
    pub(super) h: Handle,
    pub(super) cfg: CoreConfig,
    pub(super) data_dir: PathBuf,
}

#[tonic::async_trait]
impl worker_service_server::WorkerService for WorkerApi {
    async fn register(
        &self,
        req: Request<proto::RegisterRequest>,
    ) -> Result<Response<proto::RegisterResponse>, Status> {
        let r = req.into_inner();
        if r.protocol_version != PROTOCOL_VERSION {
            return Err(Status::failed_precondition(format!(
                "worker speaks protocol version {}, this coordinator speaks {PROTOCOL_VERSION}; run the same ridgeline release on both",
                r.protocol_version
            )));
        }
        let info = WorkerInfo {
            name: if r.name.is_empty() {
                r.hostname.clone()
            } else {
                r.name
            },
            hostname: r.hostname,
            slots: r.slots.max(1),
            devices: r
                .devices
                .iter()
                .map(|d| {
                    format!("{}:{} {}", d.kind, d.ordinal, d.name)
                        .trim()
                        .to_owned()
                })
                .collect(),
        };
        let resume = (!r.resume_worker_id.is_empty()).then(|| Caller {
            id: WorkerId(r.resume_worker_id.clone()),
            secret: r.resume_secret.clone(),
        });
        let (id, secret) = self
            .h
            .call(|tx| Event::Register(info.clone(), resume, tx))
            .await?;
        info!(worker = %id, slots = info.slots, devices = ?info.devices, "worker registered");
        Ok(Response::new(proto::RegisterResponse {
            worker_id: id.to_string(),
            heartbeat_interval_ms: self.cfg.heartbeat_interval_ms,
            lease_ttl_ms: self.cfg.lease_ttl_ms,
            worker_secret: secret,
        }))
    }

    async fn lease_units(
        &self,
        req: Request<proto::LeaseRequest>,
    ) -> Result<Response<proto::LeaseResponse>, Status> {
        let r = req.into_inner();
        let w = caller(&r.worker_id, r.worker_secret)?;
        let leases = self.h.call(|tx| Event::Lease(w, r.max_units, tx)).await?;
        Ok(Response::new(proto::LeaseResponse {
            units: leases.iter().map(lease_to_proto).collect(),
            lease_ttl_ms: self.cfg.lease_ttl_ms,
        }))
    }

    async fn report(
        &self,
        req: Request<proto::ReportRequest>,
    ) -> Result<Response<proto::ReportResponse>, Status> {
        let r = req.into_inner();
        let worker = caller(&r.worker_id, r.worker_secret)?;
        let progress = r
            .progress
            .iter()
            .map(|p| (UnitId(p.unit_id), p.step, metrics_from_proto(&p.metrics)))
            .collect();
        let mut outcomes = Vec::with_capacity(r.outcomes.len());
        for mut o in r.outcomes {
            for a in &o.artifacts {
                check_artifact_name(&a.name)?;
            }
            let arts = std::mem::take(&mut o.artifacts);
            outcomes.push((outcome_from_proto(&o)?, arts));
        }
        let (cancel, leases) = self
            .h
            .call(|reply| Event::Report {
                worker,
                progress,
                outcomes,
                logs: r.logs,
                max_units: r.max_units,
                reply,
            })
            .await?;
        Ok(Response::new(proto::ReportResponse {
            cancel_units: cancel.iter().map(|u| u.0).collect(),
            units: leases.iter().map(lease_to_proto).collect(),
        }))
    }

    async fn heartbeat(
        &self,
        req: Request<proto::HeartbeatRequest>,
    ) -> Result<Response<proto::HeartbeatResponse>, Status> {
        let r = req.into_inner();
        let w = caller(&r.worker_id, r.worker_secret)?;
        let running = r.running_units.into_iter().map(UnitId).collect();
        match self.h.call(|tx| Event::Heartbeat(w, running, tx)).await {
            Ok(cancel) => Ok(Response::new(proto::HeartbeatResponse {
                cancel_units: cancel.iter().map(|u| u.0).collect(),
                unknown_worker: false,
            })),
            Err(s) if s.code() == tonic::Code::NotFound => {
                Ok(Response::new(proto::HeartbeatResponse {
                    cancel_units: vec![],
                    unknown_worker: true,
                }))
            }
            Err(s) => Err(s),
        }
    }

    async fn fetch_blob(
        &self,
        req: Request<proto::FetchBlobRequest>,
    ) -> Result<Response<proto::FetchBlobResponse>, Status> {
        let r = req.into_inner();
        let id = sweep_id(&r.sweep_id)?;
        let (dir, name) = blob_path(&sweep_dir(&self.data_dir, &id), &r.name)?;
        let data = tokio::task::spawn_blocking(move || read_regular_file(&dir, &name))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::not_found(format!("{}/{}: {e}", id, r.name)))?;
        Ok(Response::new(proto::FetchBlobResponse { data }))
    }

    async fn deregister(
        &self,
        req: Request<proto::DeregisterRequest>,
    ) -> Result<Response<proto::DeregisterResponse>, Status> {
        let r = req.into_inner();
        let w = caller(&r.worker_id, r.worker_secret)?;
        info!(worker = %w.id, "worker deregistered");
        self.h.call(|tx| Event::Deregister(w, tx)).await?;
        Ok(Response::new(proto::DeregisterResponse {}))
    }
}

/// Where blob `name` of the sweep in `sweep` lies: a file of the sweep's folder
/// (`spec.json`, a scan's checkpoint) or of one of its trials' (`trials/00012/NAME`, as
/// a PBT round fetches its parent's training state). Nothing else: no other folder, no
/// `..`, nothing but plain names.
fn blob_path(sweep: &Path, name: &str) -> Result<(std::path::PathBuf, String), Status> {
    let Some(rest) = name.strip_prefix("trials/") else {
        check_artifact_name(name)?;
        return Ok((sweep.to_path_buf(), name.to_owned()));
    };
    let refuse = || {
        Status::invalid_argument(format!(
            "name: {name:?} is neither a plain file name nor trials/NUMBER/NAME"
        ))
    };
    let (trial, file) = rest.split_once('/').ok_or_else(refuse)?;
    let trial: u32 = match trial.len() {
        5..=10 if trial.bytes().all(|b| b.is_ascii_digit()) => {
            trial.parse().map_err(|_| refuse())?
        }
        _ => return Err(refuse()),
    };
    check_artifact_name(file)?;
    Ok((
        sweep.join("trials").join(format!("{trial:05}")),
        file.to_owned(),
    ))
}

/// Reads `dir/name` through [`crate::fsafe`]: a real folder and a regular file in it, no
/// symbolic link anywhere (a link planted in a sweep folder must not turn FetchBlob
/// into a way to read any file of the host).
fn read_regular_file(dir: &Path, name: &str) -> std::io::Result<Vec<u8>> {
    crate::fsafe::read(dir.join(name)).map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => {
            std::io::Error::new(std::io::ErrorKind::NotFound, format!("not served: {e}"))
        }
        _ => e,
    })
}
