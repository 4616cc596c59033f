//! A report may ask for the units that follow the ones it reports (`max_units`): they
//! are leased after its outcomes are taken, within the worker's free slots, stored in
//! the same commit, and are the worker's as any lease is. Real gRPC on loopback, a real
//! SQLite file.

mod common;

use common::*;
use ridgeline_common::proto;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_leases_the_next_units_within_the_free_slots() {
    let coord = Coordinator::start().await;
    let mut sweeps = coord.sweeps().await;
    let id = submit(&mut sweeps, 5).await;
    let mut workers = coord.workers().await;
    let w = register(&mut workers, 1, &Default::default()).await;
    let first = lease(&mut workers, &w, 1).await[0].unit_id;
    // Asking for nothing gets nothing.
    let r = workers
        .report(report(&w, first, 0))
        .await
        .unwrap()
        .into_inner();
    assert!(r.units.is_empty());
    let mut unit = lease(&mut workers, &w, 1).await[0].unit_id;
    let mut seen = vec![first, unit];
    // Each report brings the next unit, and only one: the worker has one slot.
    for max in [1, 5, 1] {
        let r = workers
            .report(report(&w, unit, max))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.units.len(), 1, "asked for {max}");
        let next = &r.units[0];
        assert_eq!(next.attempt, 1);
        assert!(!seen.contains(&next.unit_id), "{next:?} leased twice");
        unit = next.unit_id;
        seen.push(unit);
        let st = status(&mut sweeps, &id).await;
        assert_eq!((st.completed, st.running), (seen.len() as u32 - 1, 1));
        // Nothing more fits: a lease now grants nothing.
        assert!(lease(&mut workers, &w, 1).await.is_empty());
    }
    // The last unit's report finds the sweep exhausted.
    let r = workers
        .report(report(&w, unit, 1))
        .await
        .unwrap()
        .into_inner();
    assert!(r.units.is_empty());
    let st = status(&mut sweeps, &id).await;
    assert_eq!(
        (st.completed, st.state),
        (5, proto::SweepState::Completed as i32)
    );
    coord.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_leased_with_a_report_survives_a_restart_as_any_lease() {
    // The lease is in the report's commit: after a restart the worker re-adopts it with
    // its heartbeat and its result is taken.
    let coord = Coordinator::start().await;
    let mut sweeps = coord.sweeps().await;
    let id = submit(&mut sweeps, 2).await;
    let mut workers = coord.workers().await;
    let w = register(&mut workers, 1, &Default::default()).await;
    let first = lease(&mut workers, &w, 1).await[0].unit_id;
    let second = workers
        .report(report(&w, first, 1))
        .await
        .unwrap()
        .into_inner()
        .units[0]
        .unit_id;
    let coord = coord.restart().await;
    let mut workers = coord.workers().await;
    let mut sweeps = coord.sweeps().await;
    assert_eq!(register(&mut workers, 1, &w).await, w);
    let hb = workers
        .heartbeat(proto::HeartbeatRequest {
            worker_id: w.0.clone(),
            worker_secret: w.1.clone(),
            running_units: vec![second],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(hb.cancel_units.is_empty(), "{hb:?}");
    workers.report(report(&w, second, 1)).await.unwrap();
    let st = status(&mut sweeps, &id).await;
    assert_eq!(
        (st.completed, st.state),
        (2, proto::SweepState::Completed as i32)
    );
    coord.stop().await;
}
