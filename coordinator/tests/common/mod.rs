//! An in-process coordinator on a loopback port with a real SQLite file, and the
//! protocol calls the tests make as a worker would.

use std::time::Duration;

use ridgeline_common::proto::worker_service_client::WorkerServiceClient;
use ridgeline_common::proto::{self, sweep_service_client::SweepServiceClient};
use ridgeline_common::spec::SweepSpec;
use ridgeline_coordinator::{CoordinatorConfig, serve};

pub type Workers = WorkerServiceClient<tonic::transport::Channel>;
pub type Sweeps = SweepServiceClient<tonic::transport::Channel>;

/// A running coordinator: its URL; `stop` ends it.
pub struct Coordinator {
    pub url: String,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<Result<(), ridgeline_coordinator::ServeError>>,
    dir: tempfile::TempDir,
}

impl Coordinator {
    pub async fn start() -> Self {
        Self::start_in(tempfile::tempdir().unwrap()).await
    }

    /// Stops it and starts a new one on the same data folder (on another port).
    #[allow(dead_code)]
    pub async fn restart(self) -> Self {
        let _ = self.stop.send(());
        self.server.await.unwrap().unwrap();
        Self::start_in(self.dir).await
    }

    async fn start_in(dir: tempfile::TempDir) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let cfg = CoordinatorConfig {
            data_dir: dir.path().to_owned(),
            core: Default::default(),
            security: Default::default(),
            limits: Default::default(),
            metrics_retention_ms: ridgeline_coordinator::DEFAULT_METRICS_RETENTION_MS,
            ready: None,
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, cfg, async {
            let _ = stopped.await;
        }));
        Coordinator {
            url,
            stop,
            server,
            dir,
        }
    }

    pub async fn sweeps(&self) -> Sweeps {
        loop {
            match SweepServiceClient::connect(self.url.clone()).await {
                Ok(c) => return c,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    pub async fn workers(&self) -> Workers {
        WorkerServiceClient::connect(self.url.clone())
            .await
            .unwrap()
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.server.await.unwrap().unwrap();
    }
}

/// Submits a random search of `trials` trials; returns its id.
pub async fn submit(c: &mut Sweeps, trials: u32) -> String {
    let spec = SweepSpec::from_toml(&format!(
        r#"
name = "t"
data = {{ path = "/nonexistent.csv" }}
[search]
algorithm = "random"
num_samples = {trials}
[search.space]
lr = {{ type = "uniform", low = 0.1, high = 0.2 }}
"#
    ))
    .unwrap();
    c.submit_sweep(proto::SubmitSweepRequest {
        spec_json: spec.to_json(),
        attachments: vec![],
    })
    .await
    .unwrap()
    .into_inner()
    .sweep_id
}

pub async fn status(c: &mut Sweeps, id: &str) -> proto::SweepStatus {
    c.get_status(proto::GetStatusRequest {
        sweep_id: id.to_owned(),
    })
    .await
    .unwrap()
    .into_inner()
}

/// Registers with `slots` (asking for an old id back with its secret); returns the id
/// and secret.
pub async fn register(c: &mut Workers, slots: u32, resume: &(String, String)) -> (String, String) {
    let r = c
        .register(proto::RegisterRequest {
            protocol_version: ridgeline_common::PROTOCOL_VERSION,
            name: "w".into(),
            slots,
            resume_worker_id: resume.0.clone(),
            resume_secret: resume.1.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    (r.worker_id, r.worker_secret)
}

pub async fn lease(c: &mut Workers, w: &(String, String), max_units: u32) -> Vec<proto::Unit> {
    c.lease_units(proto::LeaseRequest {
        worker_id: w.0.clone(),
        worker_secret: w.1.clone(),
        max_units,
    })
    .await
    .unwrap()
    .into_inner()
    .units
}

/// A report of `unit`'s completion (val_accuracy 0.75, one step of history), asking
/// for `max_units` more.
pub fn report(w: &(String, String), unit: u64, max_units: u32) -> proto::ReportRequest {
    proto::ReportRequest {
        worker_id: w.0.clone(),
        worker_secret: w.1.clone(),
        outcomes: vec![proto::Outcome {
            unit_id: unit,
            state: proto::UnitState::Completed as i32,
            final_metrics: vec![proto::Metric {
                name: "val_accuracy".into(),
                value: 0.75,
            }],
            history: vec![proto::Progress {
                unit_id: unit,
                step: 1,
                metrics: vec![proto::Metric {
                    name: "val_loss".into(),
                    value: 0.5,
                }],
            }],
            duration_s: 1.0,
            ..Default::default()
        }],
        max_units,
        ..Default::default()
    }
}
