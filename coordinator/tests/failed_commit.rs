//! A commit that fails (as on a full disk) acknowledges nothing and leaves the core where
//! the database is: the worker's report is refused as retryable, status does not count
//! the result, and the same report succeeds once the store works again. Real gRPC on
//! loopback, a real SQLite file; the failure is injected at the `store::commit`
//! failpoint.

mod common;

use common::*;
use ridgeline_common::proto;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_acknowledges_nothing_and_loses_nothing() {
    let coord = Coordinator::start().await;
    let mut sweeps = coord.sweeps().await;
    let id = submit(&mut sweeps, 1).await;
    let mut workers = coord.workers().await;
    let w = register(&mut workers, 1, &Default::default()).await;
    let unit = lease(&mut workers, &w, 1).await[0].unit_id;

    fail::cfg("store::commit", "1*return").unwrap();
    let e = workers.report(report(&w, unit, 0)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    assert!(
        e.message().contains("database or disk is full"),
        "{}",
        e.message()
    );
    let st = status(&mut sweeps, &id).await;
    assert_eq!(
        (st.completed, st.running + st.pending),
        (0, 1),
        "status shows only what the database holds"
    );

    // The store works again. The worker does what its runner does: the coordinator lost
    // it with the failed batch, so it registers again under its old id, its heartbeat
    // re-adopts the unit, and it sends the same report.
    let e = workers.report(report(&w, unit, 0)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    assert_eq!(register(&mut workers, 1, &w).await, w);
    workers
        .heartbeat(proto::HeartbeatRequest {
            worker_id: w.0.clone(),
            worker_secret: w.1.clone(),
            running_units: vec![unit],
        })
        .await
        .unwrap();
    workers.report(report(&w, unit, 0)).await.unwrap();
    let st = status(&mut sweeps, &id).await;
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
    coord.stop().await;
}
