//! A worker's side of the gRPC protocol, spoken directly by tests that forge or probe
//! what real workers would send.

use ridgeline_common::proto::{self, worker_service_client::WorkerServiceClient};

pub type Workers = WorkerServiceClient<tonic::transport::Channel>;

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A registered worker: its id and the secret issued with it.
#[derive(Clone, Debug, Default)]
pub struct W {
    pub id: String,
    pub secret: String,
}

pub async fn register(c: &mut Workers, name: &str, resume: &W) -> W {
    let r = c
        .register(proto::RegisterRequest {
            protocol_version: ridgeline_common::PROTOCOL_VERSION,
            hostname: "forger".into(),
            name: name.into(),
            slots: 4,
            resume_worker_id: resume.id.clone(),
            resume_secret: resume.secret.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    W {
        id: r.worker_id,
        secret: r.worker_secret,
    }
}

pub async fn lease(c: &mut Workers, w: &W, n: u32) -> Vec<proto::Unit> {
    c.lease_units(proto::LeaseRequest {
        worker_id: w.id.clone(),
        worker_secret: w.secret.clone(),
        max_units: n,
    })
    .await
    .unwrap()
    .into_inner()
    .units
}

pub fn report(
    w: &W,
    outcomes: Vec<proto::Outcome>,
    logs: Vec<proto::LogChunk>,
) -> proto::ReportRequest {
    proto::ReportRequest {
        worker_id: w.id.clone(),
        worker_secret: w.secret.clone(),
        outcomes,
        logs,
        ..Default::default()
    }
}

pub fn completed(
    unit: u64,
    metrics: &[(&str, f64)],
    artifacts: Vec<proto::Artifact>,
) -> proto::Outcome {
    proto::Outcome {
        unit_id: unit,
        state: proto::UnitState::Completed as i32,
        final_metrics: metrics
            .iter()
            .map(|(n, v)| proto::Metric {
                name: (*n).into(),
                value: *v,
            })
            .collect(),
        duration_s: 1.0,
        artifacts,
        ..Default::default()
    }
}
