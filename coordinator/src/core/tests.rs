//! Scheduling rules, exercised without sockets or clocks.

use super::*;
use ridgeline_common::spec::SweepSpec;

fn spec(trials: u32, max_concurrent: u32) -> SweepSpec {
    SweepSpec::from_toml(&format!(
        r#"
name = "t"
data = {{ path = "x.csv" }}
[search]
algorithm = "random"
num_samples = {trials}
max_concurrent = {max_concurrent}
[search.space]
lr = {{ type = "uniform", low = 0.1, high = 0.2 }}
"#
    ))
    .unwrap()
}

fn cfg() -> CoreConfig {
    CoreConfig {
        lease_ttl_ms: 1_000,
        heartbeat_interval_ms: 100,
        max_attempts: 2,
    }
}

fn worker(core: &mut Core, out: &mut Vec<Action>, slots: u32, now: Millis) -> WorkerId {
    on_worker_registered(
        core,
        out,
        WorkerInfo {
            name: "node".into(),
            hostname: "node".into(),
            slots,
            devices: vec!["cpu".into()],
        },
        None,
        now,
    )
}

/// A core with one running sweep `s` and one worker with `slots` slots.
fn started(spec: SweepSpec, slots: u32) -> (Core, Vec<Action>, SweepId, WorkerId) {
    let mut core = Core::new(cfg(), 1, 1);
    let mut out = Vec::new();
    let sid = SweepId::from("s");
    on_sweep_submitted(&mut core, &mut out, sid.clone(), spec, 0).unwrap();
    let w = worker(&mut core, &mut out, slots, 0);
    (core, out, sid, w)
}

fn done(unit: UnitId, acc: f64) -> Outcome {
    Outcome {
        unit,
        state: UnitState::Completed,
        metrics: vec![("val_accuracy".into(), acc)],
        error: String::new(),
        duration_s: 1.0,
        history: None,
        permanent: false,
    }
}

/// A core rebuilt from the store at `now`, as after a coordinator restart.
fn restore(store: &mut crate::store::Store, now: Millis) -> Core {
    let mut out = Vec::new();
    let mut core = Core::new(cfg(), store.max_unit_id().unwrap() + 1, 10);
    for s in store.restore().unwrap() {
        on_sweep_restored(&mut core, &mut out, s, now);
    }
    store.apply(&out).unwrap();
    core
}

fn finished_units(out: &[Action]) -> Vec<(UnitId, UnitState)> {
    out.iter()
        .filter_map(|a| match a {
            Action::UnitFinished { unit, state, .. } => Some((*unit, *state)),
            _ => None,
        })
        .collect()
}

#[test]
fn leases_respect_slots_and_generate_lazily() {
    let mut core = Core::new(cfg(), 1, 1);
    let mut out = Vec::new();
    let sid = SweepId::from("s1");
    assert_eq!(
        on_sweep_submitted(&mut core, &mut out, sid.clone(), spec(10, 0), 0),
        Ok(10)
    );
    // Nothing is generated before a worker asks.
    assert!(!out.iter().any(|a| matches!(a, Action::UnitCreated { .. })));
    let w = worker(&mut core, &mut out, 3, 0);
    let leases = on_lease_requested(&mut core, &mut out, &w, 8, 1).unwrap();
    assert_eq!(leases.len(), 3, "a worker gets no more than its slots");
    let trials: Vec<u32> = leases.iter().map(|l| l.trial).collect();
    assert_eq!(trials, vec![0, 1, 2]);
    assert!(leases.iter().all(|l| l.attempt == 1));
    let created = out
        .iter()
        .filter(|a| matches!(a, Action::UnitCreated { .. }))
        .count();
    assert_eq!(created, 3);
    // Full worker: nothing more.
    assert!(
        on_lease_requested(&mut core, &mut out, &w, 8, 2)
            .unwrap()
            .is_empty()
    );
    let c = core.sweep(&sid).unwrap().counts;
    assert_eq!((c.pending, c.running), (7, 3));
}

#[test]
fn max_concurrent_caps_a_sweep() {
    let (mut core, mut out, _, w) = started(spec(10, 2), 8);
    assert_eq!(
        on_lease_requested(&mut core, &mut out, &w, 8, 0)
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn completion_picks_best_and_finishes_sweep() {
    let (mut core, mut out, sid, w) = started(spec(3, 0), 4);
    let leases = on_lease_requested(&mut core, &mut out, &w, 4, 0).unwrap();
    assert_eq!(leases.len(), 3);
    for (l, acc) in leases.iter().zip([0.5, 0.9, 0.7]) {
        assert_eq!(
            on_unit_finished(&mut core, &mut out, &w, done(l.unit, acc), 5),
            Ok(Verdict::Accepted)
        );
    }
    let v = core.sweep(&sid).unwrap();
    assert_eq!(v.state, SweepState::Completed);
    assert_eq!(v.best.map(|b| (b.trial, b.value)), Some((1, 0.9)));
    assert_eq!(v.counts.completed, 3);
    assert!(matches!(
        out.last(),
        Some(Action::SweepFinished {
            state: SweepState::Completed,
            best: Some((1, _)),
            ..
        })
    ));
}

#[test]
fn duplicate_and_late_results_are_stored_once() {
    let mut core = Core::new(cfg(), 1, 1);
    let mut out = Vec::new();
    on_sweep_submitted(&mut core, &mut out, "s".into(), spec(2, 0), 0).unwrap();
    let a = worker(&mut core, &mut out, 1, 0);
    let b = worker(&mut core, &mut out, 1, 0);
    let la = on_lease_requested(&mut core, &mut out, &a, 1, 0).unwrap();
    let unit = la[0].unit;
    // Worker a goes silent; its unit is re-leased to b.
    on_heartbeat(&mut core, &b, &[], 900).unwrap();
    on_tick(&mut core, &mut out, 1_500);
    assert_eq!(core.worker_count(), 1);
    let lb = on_lease_requested(&mut core, &mut out, &b, 1, 1_500).unwrap();
    assert_eq!(lb[0].unit, unit);
    assert_eq!(lb[0].attempt, 2);
    // a's late result, sent before a registers again, is refused (nothing taken)...
    assert_eq!(
        on_unit_finished(&mut core, &mut out, &a, done(unit, 0.8), 1_550),
        Err(CoreError::UnknownWorker(a.clone()))
    );
    // ... and once a is back under its old id, accepted; b is told to stop.
    let info = WorkerInfo {
        name: "node".into(),
        hostname: "node".into(),
        slots: 1,
        devices: vec![],
    };
    assert_eq!(
        on_worker_registered(&mut core, &mut out, info, Some(a.clone()), 1_560),
        a
    );
    assert_eq!(
        on_unit_finished(&mut core, &mut out, &a, done(unit, 0.8), 1_600),
        Ok(Verdict::Accepted)
    );
    assert_eq!(
        on_heartbeat(&mut core, &b, &[unit], 1_700).unwrap(),
        vec![unit]
    );
    // b's result and a repeat of a's are ignored.
    assert_ne!(
        on_unit_finished(&mut core, &mut out, &b, done(unit, 0.1), 1_800),
        Ok(Verdict::Accepted)
    );
    assert_ne!(
        on_unit_finished(&mut core, &mut out, &a, done(unit, 0.8), 1_900),
        Ok(Verdict::Accepted)
    );
    let finished = finished_units(&out);
    assert_eq!(finished, vec![(unit, UnitState::Completed)]);
}

#[test]
fn vanished_worker_units_run_again_then_fail_after_max_attempts() {
    let mut core = Core::new(cfg(), 1, 1);
    let mut out = Vec::new();
    let sid = SweepId::from("s");
    on_sweep_submitted(&mut core, &mut out, sid.clone(), spec(1, 0), 0).unwrap();
    let w1 = worker(&mut core, &mut out, 1, 0);
    let unit = on_lease_requested(&mut core, &mut out, &w1, 1, 0).unwrap()[0].unit;
    // Heartbeats within the ttl keep the lease.
    on_heartbeat(&mut core, &w1, &[unit], 800).unwrap();
    on_tick(&mut core, &mut out, 1_500);
    assert_eq!(core.unit_state(unit), Some(UnitState::Running));
    // Silence past the ttl: the unit is pending again.
    on_tick(&mut core, &mut out, 1_801);
    assert_eq!(core.unit_state(unit), Some(UnitState::Pending));
    assert!(matches!(
        out.iter().rev().nth(1),
        Some(Action::UnitRequeued { .. })
    ));
    assert!(matches!(
        on_heartbeat(&mut core, &w1, &[unit], 1_900),
        Err(CoreError::UnknownWorker(_))
    ));
    // Second worker takes it and dies too: max_attempts = 2 reached, unit failed.
    let w2 = worker(&mut core, &mut out, 1, 2_000);
    assert_eq!(
        on_lease_requested(&mut core, &mut out, &w2, 1, 2_000).unwrap()[0].unit,
        unit
    );
    on_tick(&mut core, &mut out, 3_001);
    assert_eq!(core.unit_state(unit), None, "final units leave the core");
    assert_eq!(finished_units(&out), vec![(unit, UnitState::Failed)]);
    let v = core.sweep(&sid).unwrap();
    assert_eq!(v.state, SweepState::Failed);
    assert_eq!(v.counts.failed, 1);
    let err = out.iter().find_map(|a| match a {
        Action::UnitFinished { error, .. } => Some(error.clone()),
        _ => None,
    });
    assert!(err.unwrap().contains("missed heartbeats on attempt 2 of 2"));
}

#[test]
fn failed_attempts_are_retried_then_failed() {
    let (mut core, mut out, _, w) = started(spec(1, 0), 1);
    let fail = |unit| Outcome {
        unit,
        state: UnitState::Failed,
        metrics: vec![],
        error: "boom".into(),
        duration_s: 0.1,
        history: None,
        permanent: false,
    };
    let unit = on_lease_requested(&mut core, &mut out, &w, 1, 0).unwrap()[0].unit;
    assert_eq!(
        on_unit_finished(&mut core, &mut out, &w, fail(unit), 1),
        Ok(Verdict::Accepted)
    );
    assert_eq!(core.unit_state(unit), Some(UnitState::Pending));
    let again = on_lease_requested(&mut core, &mut out, &w, 1, 2).unwrap();
    assert_eq!((again[0].unit, again[0].attempt), (unit, 2));
    assert_eq!(
        on_unit_finished(&mut core, &mut out, &w, fail(unit), 3),
        Ok(Verdict::Accepted)
    );
    assert_eq!(finished_units(&out), vec![(unit, UnitState::Failed)]);
}

#[test]
fn diverged_is_final_and_the_search_goes_on() {
    let (mut core, mut out, sid, w) = started(spec(2, 0), 2);
    let l = on_lease_requested(&mut core, &mut out, &w, 2, 0).unwrap();
    let mut nan = done(l[0].unit, f64::NAN);
    nan.state = UnitState::Diverged;
    on_unit_finished(&mut core, &mut out, &w, nan, 1).unwrap();
    on_unit_finished(&mut core, &mut out, &w, done(l[1].unit, 0.3), 1).unwrap();
    let v = core.sweep(&sid).unwrap();
    assert_eq!(
        (
            v.state,
            v.counts.diverged,
            v.best.map(|b| (b.trial, b.value))
        ),
        (SweepState::Completed, 1, Some((1, 0.3)))
    );
}

#[test]
fn cancellation_stops_running_units_and_leases_nothing_more() {
    let (mut core, mut out, sid, w) = started(spec(10, 0), 2);
    let l = on_lease_requested(&mut core, &mut out, &w, 2, 0).unwrap();
    assert_eq!(
        on_cancel(&mut core, &mut out, &sid, 5),
        Ok(SweepState::Cancelled)
    );
    let mut stop = on_heartbeat(&mut core, &w, &[l[0].unit, l[1].unit], 6).unwrap();
    stop.sort();
    assert_eq!(stop, vec![l[0].unit, l[1].unit]);
    assert!(
        on_lease_requested(&mut core, &mut out, &w, 2, 7)
            .unwrap()
            .is_empty()
    );
    // A result that races the cancellation is ignored.
    assert_ne!(
        on_unit_finished(&mut core, &mut out, &w, done(l[0].unit, 0.9), 8),
        Ok(Verdict::Accepted)
    );
    let c = core.sweep(&sid).unwrap().counts;
    assert_eq!(
        (c.cancelled, c.pending, c.running, c.completed),
        (10, 0, 0, 0)
    );
    assert_eq!(
        on_cancel(&mut core, &mut out, &sid, 9),
        Ok(SweepState::Cancelled)
    );
    assert!(on_cancel(&mut core, &mut out, &"nope".into(), 9).is_err());
}

#[test]
fn clean_deregistration_does_not_count_an_attempt() {
    let (mut core, mut out, _, w) = started(spec(1, 0), 1);
    let unit = on_lease_requested(&mut core, &mut out, &w, 1, 0).unwrap()[0].unit;
    on_worker_deregistered(&mut core, &mut out, &w, 1);
    let w2 = worker(&mut core, &mut out, 1, 2);
    let l = on_lease_requested(&mut core, &mut out, &w2, 1, 2).unwrap();
    // A new attempt number (its log is its own), but the first lease was interrupted,
    // not spent: with max_attempts = 2, this attempt's failure is retried.
    assert_eq!((l[0].unit, l[0].attempt), (unit, 2));
    assert!(out.iter().any(|a| matches!(
        a,
        Action::UnitRequeued {
            interrupted: 1,
            attempts: 1,
            ..
        }
    )));
    let mut failed = done(unit, 0.0);
    failed.state = UnitState::Failed;
    on_unit_finished(&mut core, &mut out, &w2, failed, 3).unwrap();
    assert_eq!(core.unit_state(unit), Some(UnitState::Pending));
}

#[test]
fn older_sweeps_are_served_first() {
    let mut core = Core::new(cfg(), 1, 1);
    let mut out = Vec::new();
    on_sweep_submitted(&mut core, &mut out, "a".into(), spec(2, 0), 0).unwrap();
    on_sweep_submitted(&mut core, &mut out, "b".into(), spec(2, 0), 1).unwrap();
    let w = worker(&mut core, &mut out, 3, 0);
    let l = on_lease_requested(&mut core, &mut out, &w, 3, 2).unwrap();
    let sweeps: Vec<&str> = l.iter().map(|l| l.sweep.as_str()).collect();
    assert_eq!(sweeps, vec!["a", "a", "b"]);
}

#[test]
fn a_worker_readopts_its_running_units_after_a_restart() {
    let (mut core, mut out, sid, w) = started(spec(3, 0), 2);
    let l = on_lease_requested(&mut core, &mut out, &w, 2, 0).unwrap();
    let (a, b) = (l[0].unit, l[1].unit);
    // The coordinator restarts: rebuild from what a store would hold.
    let stored = |u: UnitId, trial: u32| StoredUnit {
        interrupted: 0,
        unit: u,
        trial,
        params: l[trial as usize].params.clone(),
        state: UnitState::Running,
        attempts: 1,
        worker: Some(w.clone()),
    };
    // The store's numbering continues: the old id was given out, so it can be resumed.
    let mut core = Core::new(cfg(), 1, 10);
    let mut out = Vec::new();
    on_sweep_restored(
        &mut core,
        &mut out,
        StoredSweep {
            id: sid.clone(),
            spec: spec(3, 0),
            state: SweepState::Running,
            created: 0,
            finished: None,
            best: None,
            generated: 2,
            finals: Counts::default(),
            live: vec![stored(a, 0), stored(b, 1)],
            released: None,
            trials: vec![],
            kept: vec![],
        },
        10,
    );
    assert_eq!(core.unit_state(a), Some(UnitState::Pending));
    // The worker registers again under its old id and heartbeats with its two units:
    // both adopted, and nothing else is leased into its two slots.
    let info = WorkerInfo {
        name: "node".into(),
        hostname: "node".into(),
        slots: 2,
        devices: vec![],
    };
    let w2 = on_worker_registered(&mut core, &mut out, info, Some(w.clone()), 20);
    assert_eq!(w2, w, "a resumed worker keeps its id");
    out.clear();
    on_units_reported_running(&mut core, &mut out, &w2, &[a, b], 21);
    assert_eq!(
        out.iter()
            .filter(|x| matches!(x, Action::UnitAdopted { .. }))
            .count(),
        2
    );
    assert_eq!(core.unit_state(a), Some(UnitState::Running));
    assert!(
        on_lease_requested(&mut core, &mut out, &w2, 2, 22)
            .unwrap()
            .is_empty()
    );
    let c = core.sweep(&sid).unwrap().counts;
    assert_eq!((c.pending, c.running), (1, 2));
    // Its result counts; a second worker that reports running a finished unit is told
    // to stop it.
    assert_eq!(
        on_unit_finished(&mut core, &mut out, &w2, done(a, 0.5), 30),
        Ok(Verdict::Accepted)
    );
    let w3 = worker(&mut core, &mut out, 1, 31);
    on_units_reported_running(&mut core, &mut out, &w3, &[a], 32);
    assert_eq!(on_heartbeat(&mut core, &w3, &[a], 33).unwrap(), vec![a]);
}

#[test]
fn memory_follows_the_work_in_flight_not_the_work_done() {
    // 5,000 units run and finish; the core keeps none of them, only counts and the best.
    let (mut core, mut out, sid, w) = started(spec(5_000, 0), 8);
    let mut now = 1;
    loop {
        let l = on_lease_requested(&mut core, &mut out, &w, 8, now).unwrap();
        if l.is_empty() {
            break;
        }
        assert!(core.live_units() <= 8, "only leased units are held");
        for (i, l) in l.iter().enumerate() {
            let acc = ((l.trial * 7919) % 1000) as f64 / 1000.0 + i as f64 * 1e-9;
            on_unit_finished(&mut core, &mut out, &w, done(l.unit, acc), now).unwrap();
        }
        now += 1;
        out.clear();
    }
    let v = core.sweep(&sid).unwrap();
    assert_eq!(
        (v.state, v.counts.completed),
        (SweepState::Completed, 5_000)
    );
    assert_eq!(core.live_units(), 0);
    // The best is kept with its parameters although its unit left the core.
    let best = v.best.unwrap();
    assert!(best.value >= 0.999 && !best.params.is_empty());
}

#[test]
fn a_permanent_failure_is_not_retried_and_finals_are_judged() {
    let (mut core, mut out, _, w) = started(spec(3, 0), 3);
    let l = on_lease_requested(&mut core, &mut out, &w, 3, 0).unwrap();
    let oom = Outcome {
        state: UnitState::Failed,
        error: "out of memory: too big".into(),
        permanent: true,
        ..done(l[0].unit, 0.0)
    };
    on_unit_finished(&mut core, &mut out, &w, oom, 1).unwrap();
    let mut inf = done(l[1].unit, f64::INFINITY);
    inf.state = UnitState::Completed;
    on_unit_finished(&mut core, &mut out, &w, inf, 1).unwrap();
    on_unit_finished(&mut core, &mut out, &w, done(l[2].unit, 1.5), 1).unwrap();
    assert_eq!(
        finished_units(&out),
        vec![
            (l[0].unit, UnitState::Failed),
            (l[1].unit, UnitState::Diverged)
        ],
        "out of memory fails at once; an infinite metric is a divergence"
    );
    // An accuracy of 1.5 is no result: the attempt failed and the unit waits again.
    assert_eq!(core.unit_state(l[2].unit), Some(UnitState::Pending));
    assert!(core.sweep(&"s".into()).unwrap().best.is_none());
}

#[test]
fn a_worker_that_reconnects_keeps_its_id_and_its_units() {
    let (mut core, mut out, _, w) = started(spec(2, 0), 1);
    let unit = on_lease_requested(&mut core, &mut out, &w, 1, 0).unwrap()[0].unit;
    // Its connection broke and it registers again before the coordinator noticed.
    let info = WorkerInfo {
        name: "node".into(),
        hostname: "node".into(),
        slots: 1,
        devices: vec![],
    };
    assert_eq!(
        on_worker_registered(&mut core, &mut out, info.clone(), Some(w.clone()), 5),
        w
    );
    on_units_reported_running(&mut core, &mut out, &w, &[unit], 6);
    assert!(
        on_heartbeat(&mut core, &w, &[unit], 6).unwrap().is_empty(),
        "nothing to stop"
    );
    assert_eq!(core.unit_state(unit), Some(UnitState::Running));
    assert_eq!(core.worker_count(), 1);
    // An id this coordinator never gave out is not taken over: a fresh one is issued.
    let other = on_worker_registered(&mut core, &mut out, info, Some("w99-x".into()), 7);
    assert_ne!(other.as_str(), "w99-x");
}

#[test]
fn ties_go_to_the_lower_trial_whatever_the_order_of_results() {
    let (mut core, mut out, sid, w) = started(spec(3, 0), 3);
    let l = on_lease_requested(&mut core, &mut out, &w, 3, 0).unwrap();
    // Trials 2, then 1, then 0 finish, all with the same accuracy.
    for l in l.iter().rev() {
        on_unit_finished(&mut core, &mut out, &w, done(l.unit, 0.9), 1).unwrap();
    }
    assert_eq!(core.sweep(&sid).unwrap().best.map(|b| b.trial), Some(0));
}

#[test]
fn after_a_restart_leased_units_wait_a_lease_for_their_worker() {
    let (mut core, mut out, sid, w) = started(spec(3, 0), 1);
    let l = on_lease_requested(&mut core, &mut out, &w, 1, 0).unwrap();
    let stored = StoredUnit {
        interrupted: 0,
        unit: l[0].unit,
        trial: 0,
        params: l[0].params.clone(),
        state: UnitState::Running,
        attempts: 1,
        worker: Some(w.clone()),
    };
    let mut core = Core::new(cfg(), 1, 10);
    let restored = StoredSweep {
        id: sid.clone(),
        spec: spec(3, 0),
        state: SweepState::Running,
        created: 0,
        finished: None,
        best: None,
        generated: 1,
        finals: Counts::default(),
        live: vec![stored],
        released: None,
        trials: vec![],
        kept: vec![],
    };
    on_sweep_restored(&mut core, &mut out, restored, 100);
    // Another worker comes back first: it gets fresh trials, not the held unit.
    let other = worker(&mut core, &mut out, 3, 100);
    let got: Vec<u32> = on_lease_requested(&mut core, &mut out, &other, 3, 101)
        .unwrap()
        .iter()
        .map(|l| l.trial)
        .collect();
    assert_eq!(got, vec![1, 2]);
    // Nobody took it back within a lease: it is queued for anyone.
    on_heartbeat(&mut core, &other, &[], 1_000).unwrap();
    on_tick(&mut core, &mut out, 1_101);
    let got = on_lease_requested(&mut core, &mut out, &other, 3, 1_102).unwrap();
    assert_eq!((got.len(), got[0].trial, got[0].attempt), (1, 0, 2));
    assert!(out.iter().any(|a| matches!(
        a,
        Action::UnitRequeued {
            cause: RequeueCause::CoordinatorRestarted,
            ..
        }
    )));
    // The lease the restart cost was the coordinator's loss, not the unit's: with
    // max_attempts = 2, a failure of attempt 2 is still retried.
    let mut failed = done(got[0].unit, 0.0);
    failed.state = UnitState::Failed;
    on_unit_finished(&mut core, &mut out, &other, failed, 1_103).unwrap();
    assert_eq!(core.unit_state(got[0].unit), Some(UnitState::Pending));
}

#[test]
fn restarts_in_quick_succession_never_lease_a_unit_before_its_lease_lapsed() {
    // Found by a kill storm: restart, restart again 0.35 s later; the second restart
    // saw the unit `pending` (the first had requeued it in the store) and leased it at
    // once, while its first holder, in reconnect backoff, still ran it.
    let dir = tempfile::tempdir().unwrap();
    let mut store = crate::store::Store::open(&dir.path().join("r.db")).unwrap();
    let (mut core, mut out, sid, w) = started(spec(1, 0), 1);
    let unit = on_lease_requested(&mut core, &mut out, &w, 1, 0).unwrap()[0].unit;
    on_heartbeat(&mut core, &w, &[unit], 500).unwrap();
    store.apply(&out).unwrap();
    // The holder's lease runs to 500 + ttl by the first coordinator's clock.
    let lapse = 500 + cfg().lease_ttl_ms;
    let mut now = 600;
    for _ in 0..3 {
        let mut core = restore(&mut store, now);
        let mut out = Vec::new();
        let other = worker(&mut core, &mut out, 1, now);
        on_tick(&mut core, &mut out, now + 100);
        let got = on_lease_requested(&mut core, &mut out, &other, 1, now + 100).unwrap();
        assert!(got.is_empty(), "leased at {} before {lapse}", now + 100);
        assert_eq!(core.parked_units(&sid), 1);
        store.apply(&out).unwrap();
        now += 350;
    }
    let mut core = restore(&mut store, now);
    let mut out = Vec::new();
    let other = worker(&mut core, &mut out, 1, now);
    on_heartbeat(&mut core, &other, &[], now + cfg().lease_ttl_ms).unwrap();
    on_tick(&mut core, &mut out, now + cfg().lease_ttl_ms + 1);
    let got =
        on_lease_requested(&mut core, &mut out, &other, 1, now + cfg().lease_ttl_ms + 1).unwrap();
    assert!(now + cfg().lease_ttl_ms + 1 > lapse);
    assert_eq!((got.len(), got[0].attempt), (1, 2));
}

#[test]
fn a_unit_adopted_after_its_worker_left_can_be_handed_back_again() {
    // Found by the core fuzz: leave (attempt refunded), come back and re-adopt the unit
    // from a heartbeat, leave again: the refund must not go below zero.
    let (mut core, mut out, sid, w) = started(spec(1, 0), 1);
    let l = on_lease_requested(&mut core, &mut out, &w, 1, 1).unwrap();
    let unit = l[0].unit;
    on_worker_deregistered(&mut core, &mut out, &w, 2);
    let info = WorkerInfo {
        name: "node".into(),
        hostname: "node".into(),
        slots: 1,
        devices: vec![],
    };
    let back = on_worker_registered(&mut core, &mut out, info, Some(w.clone()), 3);
    assert_eq!(back, w);
    on_units_reported_running(&mut core, &mut out, &w, &[unit], 4);
    assert_eq!(core.unit_state(unit), Some(UnitState::Running));
    on_worker_deregistered(&mut core, &mut out, &w, 5);
    assert_eq!(core.unit_state(unit), Some(UnitState::Pending));
    assert_eq!(core.sweep(&sid).unwrap().counts.pending, 1);
}

#[test]
fn a_lease_its_worker_no_longer_reports_lapses_though_the_worker_lives() {
    let (mut core, mut out, _, w) = started(spec(1, 0), 1);
    let unit = on_lease_requested(&mut core, &mut out, &w, 1, 0).unwrap()[0].unit;
    // Listed, the lease is renewed past its first deadline...
    on_heartbeat(&mut core, &w, &[unit], 900).unwrap();
    on_tick(&mut core, &mut out, 1_500);
    assert_eq!(core.unit_state(unit), Some(UnitState::Running));
    // ... left out (the worker stopped it), it is not, however often the worker beats.
    for t in [1_600, 1_800, 1_900] {
        on_heartbeat(&mut core, &w, &[], t).unwrap();
    }
    on_tick(&mut core, &mut out, 1_901);
    assert_eq!(core.worker_count(), 1, "the worker itself lives on");
    assert_eq!(core.unit_state(unit), Some(UnitState::Pending));
    let again = on_lease_requested(&mut core, &mut out, &w, 1, 1_902).unwrap();
    assert_eq!((again[0].unit, again[0].attempt), (unit, 2));
}

#[test]
fn a_report_after_a_restart_takes_its_ended_units_whatever_the_slots() {
    // Found by the read-only data folder test: after a failed commit a worker with two
    // slots reported the progress and outcomes of two units it had finished, and the
    // progress of the two it had started since. Adopting all four by the slots told it
    // to stop the running two, which its heartbeats then renewed forever. The report
    // comes before the worker's next heartbeat, or after it.
    for heartbeat_first in [false, true] {
        report_after_restart(heartbeat_first);
    }
}

fn report_after_restart(heartbeat_first: bool) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = crate::store::Store::open(&dir.path().join("r.db")).unwrap();
    let info = WorkerInfo {
        name: "node".into(),
        hostname: "node".into(),
        slots: 2,
        devices: vec![],
    };
    let units = |l: Vec<Lease>| -> Vec<UnitId> { l.iter().map(|l| l.unit).collect() };
    let (mut core, mut out, sid, w) = started(spec(4, 0), 2);
    let first = units(on_lease_requested(&mut core, &mut out, &w, 2, 0).unwrap());
    store.apply(&out).unwrap();
    // Restart; both units end on the worker, unacknowledged; it starts two more.
    let mut core = restore(&mut store, 10);
    let mut out = Vec::new();
    on_worker_registered(&mut core, &mut out, info.clone(), Some(w.clone()), 11);
    let second = units(on_lease_requested(&mut core, &mut out, &w, 2, 12).unwrap());
    assert_eq!(second.len(), 2);
    store.apply(&out).unwrap();
    // Restart again; the report holds all four.
    let mut core = restore(&mut store, 20);
    let mut out = Vec::new();
    on_worker_registered(&mut core, &mut out, info, Some(w.clone()), 21);
    if heartbeat_first {
        on_units_reported_running(&mut core, &mut out, &w, &second, 21);
        assert!(on_heartbeat(&mut core, &w, &second, 21).unwrap().is_empty());
    }
    // The order of the event loop's report: ended units with their last progress and
    // outcome, then the running ones.
    let step = |u: UnitId| (u, 3, vec![("val_accuracy".to_string(), 0.5)]);
    on_units_reported_ended(&mut core, &mut out, &w, &first, 22);
    for &u in &first {
        let (u, s, m) = step(u);
        on_progress(&mut core, &mut out, &w, u, s, m, 22);
        assert_eq!(
            on_unit_finished(&mut core, &mut out, &w, done(u, 0.5), 22),
            Ok(Verdict::Accepted)
        );
    }
    on_units_reported_running(&mut core, &mut out, &w, &second, 22);
    for &u in &second {
        let (u, s, m) = step(u);
        on_progress(&mut core, &mut out, &w, u, s, m, 22);
    }
    let progressed: Vec<UnitId> = out
        .iter()
        .filter_map(|a| match a {
            Action::Progress { unit, .. } => Some(*unit),
            _ => None,
        })
        .collect();
    assert_eq!(progressed, [first.clone(), second.clone()].concat());
    assert_eq!(
        finished_units(&out),
        first
            .iter()
            .map(|&u| (u, UnitState::Completed))
            .collect::<Vec<_>>()
    );
    for &u in &second {
        assert_eq!(core.unit_state(u), Some(UnitState::Running));
        assert_eq!(core.unit_holder(u), Some(&w));
    }
    assert!(take_cancellations(&mut core, &w).is_empty());
    assert_eq!(core.sweep(&sid).unwrap().counts.running, 2);
}
