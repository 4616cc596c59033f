//! Early stopping and adaptive search inside the core: a pruned unit's life, and
//! schedulers and searchers rebuilt from stored trials after a restart.

use super::*;
use ridgeline_common::params::ParamValue;
use ridgeline_common::spec::SweepSpec;

fn asha_spec() -> SweepSpec {
    SweepSpec::from_toml(
        r#"
name = "t"
[trial]
command = ["true"]
[search]
algorithm = "tpe"
metric = "loss"
num_samples = 6
[search.space]
x = { type = "uniform", low = 0.0, high = 1.0 }
[search.scheduler]
type = "asha"
grace_period = 1
reduction_factor = 2
max_t = 8
"#,
    )
    .unwrap()
}

fn register(core: &mut Core, out: &mut Vec<Action>, name: &str, slots: u32) -> WorkerId {
    let info = WorkerInfo {
        name: name.into(),
        hostname: name.into(),
        slots,
        devices: vec![],
    };
    on_worker_registered(core, out, info, None, 0)
}

fn loss(v: f64) -> Vec<(String, f64)> {
    vec![("loss".into(), v)]
}

#[test]
fn a_pruned_unit_ends_frees_its_slot_and_is_stopped_on_its_worker() {
    let mut core = Core::new(CoreConfig::default(), 1, 1);
    let mut out = Vec::new();
    let sid = SweepId::from("s");
    on_sweep_submitted(&mut core, &mut out, sid.clone(), asha_spec(), 0).unwrap();
    let (a, b) = (
        register(&mut core, &mut out, "a", 1),
        register(&mut core, &mut out, "b", 1),
    );
    let la = on_lease_requested(&mut core, &mut out, &a, 1, 10).unwrap();
    let lb = on_lease_requested(&mut core, &mut out, &b, 1, 10).unwrap();
    let (ua, ub) = (la[0].unit, lb[0].unit);
    // Trial 0 is first at rung 1 (step 1): it goes on. Trial 1 is worse: pruned.
    on_progress(&mut core, &mut out, &a, ua, 1, loss(0.5), 20);
    out.clear();
    on_progress(&mut core, &mut out, &b, ub, 1, loss(0.9), 1_520);
    let finished: Vec<_> = out
        .iter()
        .filter_map(|x| match x {
            Action::UnitFinished {
                unit,
                state,
                metrics,
                error,
                duration_s,
                ..
            } => Some((*unit, *state, metrics.clone(), error.clone(), *duration_s)),
            _ => None,
        })
        .collect();
    assert_eq!(finished.len(), 1, "{out:?}");
    let (unit, state, metrics, error, duration) = &finished[0];
    assert_eq!((*unit, *state), (ub, UnitState::Pruned));
    assert_eq!(metrics, &loss(0.9), "the last report's metrics");
    assert!(error.starts_with("asha: loss = 0.9 at step 1"), "{error}");
    assert!(
        (duration - 1.51).abs() < 1e-9,
        "leased at 10, pruned at 1520: {duration}"
    );
    let c = core.sweep(&sid).unwrap().counts;
    assert_eq!((c.pruned, c.running, c.pending), (1, 1, 4));
    // Its worker is told to stop it, and its slot takes the next trial at once.
    assert_eq!(take_cancellations(&mut core, &b), vec![ub]);
    let next = on_lease_requested(&mut core, &mut out, &b, 1, 1_530).unwrap();
    assert_eq!(next.len(), 1);
    // Late reports and a late result of the pruned unit change nothing.
    out.clear();
    on_progress(&mut core, &mut out, &b, ub, 2, loss(0.1), 1_540);
    assert!(out.is_empty(), "{out:?}");
    let late = Outcome {
        unit: ub,
        state: UnitState::Completed,
        metrics: loss(0.1),
        error: String::new(),
        duration_s: 3.0,
        history: None,
        permanent: false,
    };
    let v = on_unit_finished(&mut core, &mut out, &b, late, 1_550).unwrap();
    assert_eq!(v, Verdict::AlreadyFinal);
    assert_eq!(core.sweep(&sid).unwrap().counts.pruned, 1);
}

#[test]
fn schedulers_and_searchers_come_back_from_stored_trials() {
    let spec = asha_spec();
    let params = |x: f64| Params::from([("x".to_owned(), ParamValue::Float(x))]);
    // Before the restart: 10 trials completed (past TPE's startup), each recorded at
    // rungs 1, 2 and 4; trial 10 was running and had reported step 1.
    let mut trials: Vec<StoredTrial> = (0..10)
        .map(|i| StoredTrial {
            violation: 0.0,
            values: vec![],
            trial: i,
            params: params(f64::from(i) / 10.0),
            state: UnitState::Completed,
            value: Some(f64::from(i)),
            history: vec![(1, f64::from(i)), (2, f64::from(i)), (4, f64::from(i))],
        })
        .collect();
    trials.push(StoredTrial {
        violation: 0.0,
        values: vec![],
        trial: 10,
        params: params(0.55),
        state: UnitState::Running,
        value: None,
        history: vec![(1, 0.5)],
    });
    let stored = StoredSweep {
        id: SweepId::from("s"),
        spec: SweepSpec {
            search: ridgeline_common::spec::SearchSpec {
                num_samples: 20,
                ..spec.search.clone()
            },
            ..spec
        },
        state: SweepState::Running,
        created: 0,
        finished: None,
        best: None,
        kept: vec![],
        generated: 11,
        finals: Counts {
            completed: 10,
            ..Counts::default()
        },
        live: vec![StoredUnit {
            interrupted: 0,
            unit: UnitId(11),
            trial: 10,
            params: params(0.55),
            state: UnitState::Running,
            attempts: 1,
            worker: None,
        }],
        released: None,
        trials,
    };
    let rebuild = |stored: StoredSweep| {
        let mut core = Core::new(CoreConfig::default(), 1, 1);
        let mut out = Vec::new();
        on_sweep_restored(&mut core, &mut out, stored, 0);
        (core, out)
    };
    let (mut core, mut out) = rebuild(stored.clone());
    let w = register(&mut core, &mut out, "w", 4);
    // The stored unit was parked for its old worker; the next lease is a new trial.
    let l = on_lease_requested(&mut core, &mut out, &w, 1, 1).unwrap();
    assert_eq!(l[0].trial, 11);
    // Rung 1 holds the ten completed trials' 0..9 and the running one's 0.5: their
    // median, the cutoff at rf = 2, is 4.0, so a loss of 5.0 is pruned.
    out.clear();
    on_progress(&mut core, &mut out, &w, l[0].unit, 1, loss(5.0), 2);
    assert_eq!(core.sweep(&SweepId::from("s")).unwrap().counts.pruned, 1);
    // The searcher came back too: the same stored trials give the same suggestion,
    // whatever order they are stored in.
    let mut reversed = stored.clone();
    reversed.trials.reverse();
    let (mut c2, mut o2) = rebuild(reversed);
    let w2 = register(&mut c2, &mut o2, "w", 4);
    let l2 = on_lease_requested(&mut c2, &mut o2, &w2, 1, 1).unwrap();
    assert_eq!(l2[0].params, l[0].params);
    // And it is TPE's, not a random draw: trial 11 of a fresh searcher differs.
    let fresh = crate::search::searcher_for(&stored.spec).suggest(11);
    assert_ne!(fresh, l[0].params);
}
