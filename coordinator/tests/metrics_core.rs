//! Every coordinator metric family after a scripted sequence of events applied to the
//! core with a real SQLite store, read through a recording sink (metrics-util's
//! `DebuggingRecorder`): registrations, leases, a completed, a failed and a diverged
//! attempt, a worker lost to missed heartbeats, then a coordinator restart. Counters
//! restart from zero with the process; gauges are rebuilt from the store.

use std::collections::BTreeMap;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use ridgeline_common::ids::{SweepId, UnitId, WorkerId};
use ridgeline_common::spec::SweepSpec;
use ridgeline_coordinator::core::{
    self, Action, Core, CoreConfig, Outcome, SweepState, UnitState, WorkerInfo,
};
use ridgeline_coordinator::store::Store;
use ridgeline_coordinator::telemetry::{self as t, publish, record};

/// A series: its name and its sorted labels.
type Series = (String, Vec<(String, String)>);

/// Series → value.
type Readings = BTreeMap<Series, f64>;

/// A recording sink. Its snapshots hand out counter increments since the previous
/// snapshot (and reset gauges), so readings accumulate counters and keep the last gauge
/// value.
struct Sink {
    snap: Snapshotter,
    seen: Readings,
}

impl Sink {
    fn new(rec: &DebuggingRecorder) -> Self {
        Sink {
            snap: rec.snapshotter(),
            seen: Readings::new(),
        }
    }

    fn read(&mut self) -> Readings {
        for (key, (is_counter, v)) in take(&self.snap) {
            let e = self.seen.entry(key).or_insert(0.0);
            *e = if is_counter { *e + v } else { v };
        }
        self.seen.clone()
    }
}

/// `(series, (is a counter, value))` recorded since the last snapshot.
fn take(snap: &Snapshotter) -> Vec<(Series, (bool, f64))> {
    snap.snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(ck, _, _, v)| {
            let key = ck.key();
            let mut labels: Vec<(String, String)> = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            labels.sort();
            let v = match v {
                DebugValue::Counter(c) => (true, c as f64),
                DebugValue::Gauge(g) => (false, g.into_inner()),
                DebugValue::Histogram(_) => return None,
            };
            Some(((key.name().to_owned(), labels), v))
        })
        .collect()
}

fn get(r: &Readings, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut l: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    l.sort();
    *r.get(&(name.to_owned(), l))
        .unwrap_or_else(|| panic!("no series {name}{labels:?} in {r:#?}"))
}

/// The labels of the sweep's own series.
const SWEEP: [(&str, &str); 2] = [("sweep", "m-1"), ("kind", "search")];
const BEST: [(&str, &str); 3] = [
    ("sweep", "m-1"),
    ("kind", "search"),
    ("metric", "val_accuracy"),
];

/// The sweep's units in `state`.
fn units(r: &Readings, state: &str) -> f64 {
    get(
        r,
        t::SWEEP_UNITS,
        &[("sweep", "m-1"), ("kind", "search"), ("state", state)],
    )
}

fn cfg() -> CoreConfig {
    CoreConfig {
        lease_ttl_ms: 1_000,
        heartbeat_interval_ms: 100,
        max_attempts: 3,
    }
}

fn spec() -> SweepSpec {
    SweepSpec::from_toml(
        r#"
name = "m"
data = { path = "x.csv" }
[search]
algorithm = "random"
metric = "val_accuracy"
num_samples = 6
[search.space]
lr = { type = "uniform", low = 0.1, high = 0.2 }
"#,
    )
    .unwrap()
}

fn info(name: &str, slots: u32) -> WorkerInfo {
    WorkerInfo {
        name: name.into(),
        hostname: "h".into(),
        slots,
        devices: vec!["cpu".into()],
    }
}

fn outcome(unit: UnitId, state: UnitState, acc: f64) -> Outcome {
    Outcome {
        unit,
        state,
        metrics: vec![("val_accuracy".into(), acc)],
        error: if state == UnitState::Failed {
            "boom".into()
        } else {
            String::new()
        },
        duration_s: 1.0,
        history: None,
        permanent: false,
    }
}

/// The core, its store, and what every batch is fed through: store, then counters.
struct World {
    core: Core,
    store: Store,
}

impl World {
    fn apply(&mut self, f: impl FnOnce(&mut Core, &mut Vec<Action>)) {
        let mut out = Vec::new();
        f(&mut self.core, &mut out);
        self.store.apply(&out).unwrap();
        record(&out, &self.core);
    }

    fn lease(&mut self, w: &WorkerId, n: u32, now: u64) -> Vec<UnitId> {
        let mut got = Vec::new();
        self.apply(|c, out| {
            got = core::on_lease_requested(c, out, w, n, now)
                .unwrap()
                .into_iter()
                .map(|l| l.unit)
                .collect();
        });
        got
    }

    fn finish(&mut self, w: &WorkerId, o: Outcome, now: u64) {
        self.apply(|c, out| {
            core::on_unit_finished(c, out, w, o, now).unwrap();
        });
    }
}

#[test]
fn every_family_after_a_scripted_run_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ridgeline.db");
    let sid = SweepId("m-1".into());
    let rec = DebuggingRecorder::new();
    let mut first = Sink::new(&rec);
    let mut world = World {
        core: Core::new(cfg(), 1, 1),
        store: Store::open(&db).unwrap(),
    };
    metrics::with_local_recorder(&rec, || {
        t::describe();
        world.apply(|c, out| {
            core::on_sweep_submitted(c, out, sid.clone(), spec(), 0).unwrap();
        });
        let (mut a, mut b) = (None, None);
        world.apply(|c, out| {
            a = Some(core::on_worker_registered(c, out, info("a", 2), None, 0));
            b = Some(core::on_worker_registered(c, out, info("b", 1), None, 0));
        });
        let (a, b) = (a.unwrap(), b.unwrap());
        let on_a = world.lease(&a, 2, 10);
        let on_b = world.lease(&b, 1, 10);
        assert_eq!((on_a.len(), on_b.len()), (2, 1));

        // All three slots busy.
        publish(&world.core.gauges(20, 60_000));
        let r = first.read();
        assert_eq!(get(&r, t::LEASES_GRANTED, &[]), 3.0);
        assert_eq!(get(&r, t::SLOTS, &[]), 3.0);
        assert_eq!(get(&r, t::SLOTS_BUSY, &[]), 3.0);
        assert_eq!(get(&r, t::WORKERS, &[("state", "busy")]), 2.0);
        assert_eq!(get(&r, t::WORKERS, &[("state", "idle")]), 0.0);
        assert_eq!(units(&r, "running"), 3.0);
        assert_eq!(units(&r, "pending"), 3.0);
        assert_eq!(get(&r, t::SWEEPS_SUBMITTED, &[("kind", "search")]), 1.0);
        assert_eq!(get(&r, t::WORKERS_REGISTERED, &[]), 2.0);

        // a: one trial completes, one fails and is queued again.
        world.finish(&a, outcome(on_a[0], UnitState::Completed, 0.8), 100);
        world.finish(&a, outcome(on_a[1], UnitState::Failed, 0.0), 110);
        // b goes silent; a keeps heartbeating until b's lease has lapsed.
        world.apply(|c, out| {
            core::on_heartbeat(c, &a, &[], 1_050).unwrap();
            core::on_tick(c, out, 1_200);
        });
        // a takes the retried trial and b's, both second attempts, then a third trial.
        let retried = world.lease(&a, 2, 1_300);
        assert_eq!(retried.len(), 2);
        world.finish(
            &a,
            outcome(retried[0], UnitState::Diverged, f64::NAN),
            1_400,
        );
        let fresh = world.lease(&a, 1, 1_500);
        assert_eq!(fresh.len(), 1);
        world.finish(&a, outcome(fresh[0], UnitState::Completed, 0.9), 2_000);

        publish(&world.core.gauges(2_000, 60_000));
        let r = first.read();
        let finished = |r: &Readings, o: &str| {
            get(r, t::UNITS_FINISHED, &[("kind", "search"), ("outcome", o)])
        };
        assert_eq!(finished(&r, "completed"), 2.0);
        assert_eq!(finished(&r, "diverged"), 1.0);
        assert_eq!(finished(&r, "failed"), 0.0);
        assert_eq!(get(&r, t::LEASES_GRANTED, &[]), 6.0);
        assert_eq!(get(&r, t::LEASES_EXPIRED, &[]), 1.0);
        assert_eq!(get(&r, t::RETRIES, &[]), 2.0);
        assert_eq!(get(&r, t::ATTEMPTS_FAILED, &[]), 1.0);
        assert_eq!(get(&r, t::WORKERS_LOST, &[]), 1.0);
        for (reason, n) in [
            ("attempt_failed", 1.0),
            ("worker_lost", 1.0),
            ("lease_expired", 0.0),
            ("worker_left", 0.0),
            ("coordinator_restarted", 0.0),
        ] {
            assert_eq!(
                get(&r, t::UNITS_REQUEUED, &[("reason", reason)]),
                n,
                "{reason}"
            );
        }
        assert_eq!(get(&r, t::WORKERS, &[("state", "busy")]), 1.0);
        assert_eq!(get(&r, t::SLOTS, &[]), 2.0, "b's slot is gone with b");
        assert_eq!(get(&r, t::SLOTS_BUSY, &[]), 1.0);
        assert_eq!(units(&r, "completed"), 2.0);
        assert_eq!(units(&r, "diverged"), 1.0);
        assert_eq!(units(&r, "running"), 1.0);
        assert_eq!(units(&r, "pending"), 2.0);
        assert_eq!(get(&r, t::SWEEP_PROGRESS, &SWEEP), 0.5);
        assert_eq!(get(&r, t::SWEEP_BEST, &BEST), 0.9);
        // Three finishes in the 2 s since the sweep was created.
        assert_eq!(get(&r, t::SWEEP_THROUGHPUT, &SWEEP), 1.5);
        // Three units left at 1.5 per second.
        assert_eq!(get(&r, t::SWEEP_ETA, &SWEEP), 2.0);
        assert_eq!(get(&r, t::SWEEPS, &[("state", "running")]), 1.0);
    });

    // The coordinator restarts: a fresh process (and recorder), the core rebuilt from
    // the store.
    drop(world);
    let rec = DebuggingRecorder::new();
    let mut second = Sink::new(&rec);
    metrics::with_local_recorder(&rec, || {
        t::describe();
        let store = Store::open(&db).unwrap();
        let mut core = Core::new(
            cfg(),
            store.max_unit_id().unwrap() + 1,
            store.max_worker_number().unwrap() + 1,
        );
        let mut out = Vec::new();
        for s in store.restore().unwrap() {
            core::on_sweep_restored(&mut core, &mut out, s, 5_000);
        }
        let mut world = World { core, store };
        world.store.apply(&out).unwrap();
        record(&out, &world.core);
        publish(&world.core.gauges(5_000, 60_000));
        let r = second.read();
        assert_eq!(get(&r, t::LEASES_GRANTED, &[]), 0.0, "counters restart");
        assert_eq!(
            get(
                &r,
                t::UNITS_FINISHED,
                &[("kind", "search"), ("outcome", "completed")]
            ),
            0.0
        );
        assert_eq!(
            get(
                &r,
                t::UNITS_REQUEUED,
                &[("reason", "coordinator_restarted")]
            ),
            0.0,
            "the unit a held when the coordinator died is held back, not requeued yet"
        );
        assert_eq!(units(&r, "completed"), 2.0);
        assert_eq!(units(&r, "diverged"), 1.0);
        assert_eq!(units(&r, "running"), 0.0);
        assert_eq!(units(&r, "pending"), 3.0);
        assert_eq!(get(&r, t::SWEEP_PROGRESS, &SWEEP), 0.5);
        assert_eq!(get(&r, t::SWEEP_BEST, &BEST), 0.9);
        assert_eq!(get(&r, t::SWEEP_THROUGHPUT, &SWEEP), 0.0);
        assert!(
            !r.keys().any(|(name, _)| name == t::SWEEP_ETA),
            "no ETA without a recent rate"
        );
        assert_eq!(get(&r, t::WORKERS, &[("state", "busy")]), 0.0);
        assert_eq!(get(&r, t::WORKERS, &[("state", "idle")]), 0.0);
        assert_eq!(get(&r, t::SLOTS, &[]), 0.0);
        assert_eq!(get(&r, t::SWEEPS, &[("state", "running")]), 1.0);

        // The rest of the sweep runs on a new worker, and it ends.
        let mut w = None;
        world.apply(|c, out| {
            w = Some(core::on_worker_registered(
                c,
                out,
                info("c", 4),
                None,
                5_000,
            ))
        });
        let w = w.unwrap();
        // Held back for a lease lifetime for its old worker to re-adopt, then free.
        world.apply(|c, out| {
            core::on_heartbeat(c, &w, &[], 5_900).unwrap();
            core::on_tick(c, out, 6_100);
        });
        let rest = world.lease(&w, 4, 6_100);
        assert_eq!(rest.len(), 3);
        assert_eq!(
            get(
                &second.read(),
                t::UNITS_REQUEUED,
                &[("reason", "coordinator_restarted")]
            ),
            1.0,
            "requeued once its old worker's lease lapsed"
        );
        for u in rest {
            world.finish(&w, outcome(u, UnitState::Completed, 0.5), 7_000);
        }
        let g = world.core.gauges(7_000, 60_000);
        assert_eq!(g.sweeps[0].state, SweepState::Completed);
        publish(&g);
        let r = second.read();
        assert_eq!(get(&r, t::SWEEP_ETA, &SWEEP), 0.0);
        assert_eq!(get(&r, t::SWEEP_PROGRESS, &SWEEP), 1.0);
        assert_eq!(get(&r, t::SWEEPS, &[("state", "completed")]), 1.0);
        assert_eq!(get(&r, t::SWEEPS, &[("state", "running")]), 0.0);
        // Past the retention, the finished sweep leaves the gauges.
        assert!(world.core.gauges(7_000 + 60_001, 60_000).sweeps.is_empty());
        assert_eq!(world.core.gauges(7_000 + 60_000, 60_000).sweeps.len(), 1);
    });
}
