//! The worker-facing gRPC service: validates and converts, then posts to the loop.

use super::*;

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
        let id = self.h.call(|tx| Event::Register(info.clone(), tx)).await?;
        info!(worker = %id, slots = info.slots, devices = ?info.devices, "worker registered");
        Ok(Response::new(proto::RegisterResponse {
            worker_id: id.to_string(),
            heartbeat_interval_ms: self.cfg.heartbeat_interval_ms,
            lease_ttl_ms: self.cfg.lease_ttl_ms,
        }))
    }

    async fn lease_units(
        &self,
        req: Request<proto::LeaseRequest>,
    ) -> Result<Response<proto::LeaseResponse>, Status> {
        let r = req.into_inner();
        let w = worker_id(&r.worker_id)?;
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
        let worker = worker_id(&r.worker_id)?;
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
        let cancel = self
            .h
            .call(|reply| Event::Report {
                worker,
                progress,
                outcomes,
                reply,
            })
            .await?;
        Ok(Response::new(proto::ReportResponse {
            cancel_units: cancel.iter().map(|u| u.0).collect(),
        }))
    }

    async fn heartbeat(
        &self,
        req: Request<proto::HeartbeatRequest>,
    ) -> Result<Response<proto::HeartbeatResponse>, Status> {
        let r = req.into_inner();
        let w = worker_id(&r.worker_id)?;
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
        check_artifact_name(&r.name)?;
        if id.as_str().contains(['/', '\\']) || id.as_str().starts_with('.') {
            return Err(Status::invalid_argument("sweep_id: not a sweep id"));
        }
        let path = sweep_dir(&self.data_dir, &id).join(&r.name);
        let data = tokio::fs::read(&path)
            .await
            .map_err(|e| Status::not_found(format!("{}/{}: {e}", id, r.name)))?;
        Ok(Response::new(proto::FetchBlobResponse { data }))
    }

    async fn deregister(
        &self,
        req: Request<proto::DeregisterRequest>,
    ) -> Result<Response<proto::DeregisterResponse>, Status> {
        let w = worker_id(&req.into_inner().worker_id)?;
        info!(worker = %w, "worker deregistered");
        self.h.call(|tx| Event::Deregister(w, tx)).await?;
        Ok(Response::new(proto::DeregisterResponse {}))
    }
}
