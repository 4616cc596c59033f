//! A commit that fails (as on a full disk) acknowledges nothing and leaves the core where
//! the database is: the worker's report is refused as retryable, status does not count
//! the result, and the same report succeeds once the store works again. Real gRPC on
//! loopback, a real SQLite file; the failure is injected at the `store::commit`
//! failpoint.

use std::time::Duration;

use ridgeline_common::proto::worker_service_client::WorkerServiceClient;
use ridgeline_common::proto::{self, sweep_service_client::SweepServiceClient};
use ridgeline_common::spec::SweepSpec;
use ridgeline_coordinator::{CoordinatorConfig, serve};

type Workers = WorkerServiceClient<tonic::transport::Channel>;

/// Registers (asking for an old id back with its secret); returns the id and secret.
async fn register(c: &mut Workers, resume: &(String, String)) -> (String, String) {
    let r = c
        .register(proto::RegisterRequest {
            protocol_version: ridgeline_common::PROTOCOL_VERSION,
            name: "w".into(),
            slots: 1,
            resume_worker_id: resume.0.clone(),
            resume_secret: resume.1.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    (r.worker_id, r.worker_secret)
}

fn report(worker: &(String, String), unit: u64) -> proto::ReportRequest {
    proto::ReportRequest {
        worker_id: worker.0.clone(),
        worker_secret: worker.1.clone(),
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
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_acknowledges_nothing_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
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
    let mut sweeps = loop {
        match SweepServiceClient::connect(url.clone()).await {
            Ok(c) => break c,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let spec = SweepSpec::from_toml(
        r#"
name = "full"
data = { path = "/nonexistent.csv" }
[search]
algorithm = "random"
num_samples = 1
[search.space]
lr = { type = "uniform", low = 0.1, high = 0.2 }
"#,
    )
    .unwrap();
    let id = sweeps
        .submit_sweep(proto::SubmitSweepRequest {
            spec_json: spec.to_json(),
            attachments: vec![],
        })
        .await
        .unwrap()
        .into_inner()
        .sweep_id;
    let mut workers = WorkerServiceClient::connect(url.clone()).await.unwrap();
    let w = register(&mut workers, &Default::default()).await;
    let unit = workers
        .lease_units(proto::LeaseRequest {
            worker_id: w.0.clone(),
            worker_secret: w.1.clone(),
            max_units: 1,
        })
        .await
        .unwrap()
        .into_inner()
        .units[0]
        .unit_id;
    let status = |mut c: SweepServiceClient<tonic::transport::Channel>, id: String| async move {
        c.get_status(proto::GetStatusRequest { sweep_id: id })
            .await
            .unwrap()
            .into_inner()
    };

    fail::cfg("store::commit", "1*return").unwrap();
    let e = workers.report(report(&w, unit)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    assert!(
        e.message().contains("database or disk is full"),
        "{}",
        e.message()
    );
    let st = status(sweeps.clone(), id.clone()).await;
    assert_eq!(
        (st.completed, st.running + st.pending),
        (0, 1),
        "status shows only what the database holds"
    );

    // The store works again. The worker does what its runner does: the coordinator lost
    // it with the failed batch, so it registers again under its old id, its heartbeat
    // re-adopts the unit, and it sends the same report.
    let e = workers.report(report(&w, unit)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    assert_eq!(register(&mut workers, &w).await, w);
    workers
        .heartbeat(proto::HeartbeatRequest {
            worker_id: w.0.clone(),
            worker_secret: w.1.clone(),
            running_units: vec![unit],
        })
        .await
        .unwrap();
    workers.report(report(&w, unit)).await.unwrap();
    let st = status(sweeps.clone(), id.clone()).await;
    assert_eq!(
        (st.completed, st.state),
        (1, proto::SweepState::Completed as i32)
    );
    assert_eq!(st.best.map(|b| b.value), Some(0.75));
    let r = sweeps
        .get_results(proto::GetResultsRequest {
            sweep_id: id,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.trials[0].history.len(),
        1,
        "the attempt's history is stored"
    );
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
