//! Random sequences of worker messages (registrations, leases, heartbeats, progress,
//! results, cancellations, clean exits, time passing, coordinator restarts), with forged
//! worker ids and units among them, applied to the core with every action written to a
//! real SQLite store. After every step:
//!
//! - no unit is finished twice, and only a worker that held a lease on it finishes it
//!   (one sweep uses TPE and ASHA, so reports prune units on the way);
//! - every sweep's counts add up to its total;
//! - the core agrees with the store (final counts, state, best), which is what a
//!   restart would rebuild from;
//! - at most one attempt of a unit runs at a time: a unit is leased to another worker
//!   only once its holder's lease has lapsed by the coordinator's clock (a model of
//!   the lease kept here, across restarts, however quickly they follow one another);
//! - a command-trial sweep (its attempts resume) keeps the union of every attempt's
//!   accepted reports, the later report of a step winning; the built-in trainer's
//!   sweep keeps the last attempt's.

use std::collections::{BTreeMap, HashMap, HashSet};

use proptest::prelude::*;
use ridgeline_common::ids::{SweepId, UnitId, WorkerId};
use ridgeline_common::spec::SweepSpec;
use ridgeline_coordinator::core::{self, Action, Core, CoreConfig, Outcome, UnitState, WorkerInfo};
use ridgeline_coordinator::store::Store;

#[derive(Clone, Debug)]
enum Op {
    Register {
        resume: Option<usize>,
    },
    Lease {
        worker: usize,
        max: u32,
    },
    Heartbeat {
        worker: usize,
        units: Vec<usize>,
    },
    Progress {
        worker: usize,
        unit: usize,
        step: u32,
        value: f64,
    },
    Report {
        worker: usize,
        unit: usize,
        outcome: u8,
        value: f64,
    },
    Deregister {
        worker: usize,
    },
    Tick {
        ms: u64,
    },
    Cancel {
        sweep: usize,
    },
    Restart,
}

/// Operations; `max_tick` bounds how much time passes in one step (short steps keep
/// workers alive long enough for reports to reach the scheduler).
fn op(max_tick: u64) -> impl Strategy<Value = Op> {
    // Indices past the known workers/units stand for forged ones.
    prop_oneof![
        2 => proptest::option::of(0usize..6).prop_map(|resume| Op::Register { resume }),
        4 => (0usize..6, 1u32..4).prop_map(|(worker, max)| Op::Lease { worker, max }),
        2 => (0usize..6, proptest::collection::vec(0usize..40, 0..4))
            .prop_map(|(worker, units)| Op::Heartbeat { worker, units }),
        3 => (0usize..6, 0usize..40, 0u32..6, prop_oneof![Just(0.2), Just(0.5), Just(0.8), Just(f64::NAN)])
            .prop_map(|(worker, unit, step, value)| Op::Progress { worker, unit, step, value }),
        6 => (0usize..6, 0usize..40, 0u8..6, prop_oneof![Just(0.5), Just(f64::NAN), Just(1e308), Just(0.9), Just(-1.0)])
            .prop_map(|(worker, unit, outcome, value)| Op::Report { worker, unit, outcome, value }),
        1 => (0usize..6).prop_map(|worker| Op::Deregister { worker }),
        2 => (0u64..max_tick).prop_map(|ms| Op::Tick { ms }),
        1 => (0usize..2).prop_map(|sweep| Op::Cancel { sweep }),
        2 => Just(Op::Restart),
    ]
}

/// A random search of the built-in trainer, or (`adaptive`) a command trial's TPE with
/// ASHA stopping trials from their reports.
fn spec(name: &str, trials: u32, max_concurrent: u32, adaptive: bool) -> SweepSpec {
    let (algorithm, scheduler, trial) = if adaptive {
        (
            "tpe",
            "[search.tpe]\nn_startup_trials = 2\n[search.scheduler]\ntype = \"asha\"\nreduction_factor = 2\nmax_t = 8",
            "[trial]\ncommand = [\"train\", \"{lr}\"]",
        )
    } else {
        ("random", "", "data = { path = \"x.csv\" }")
    };
    SweepSpec::from_toml(&format!(
        r#"
name = "{name}"
{trial}
[search]
algorithm = "{algorithm}"
metric = "val_accuracy"
num_samples = {trials}
max_concurrent = {max_concurrent}
[search.space]
lr = {{ type = "uniform", low = 0.1, high = 0.2 }}
{scheduler}
"#
    ))
    .unwrap()
}

fn cfg() -> CoreConfig {
    CoreConfig {
        lease_ttl_ms: 1_000,
        heartbeat_interval_ms: 100,
        max_attempts: 3,
    }
}

fn rebuild(store: &Store, out: &mut Vec<Action>, now: u64) -> Core {
    let mut core = Core::new(
        cfg(),
        store.max_unit_id().unwrap() + 1,
        store.max_worker_number().unwrap() + 1,
    );
    for s in store.restore().unwrap() {
        core::on_sweep_restored(&mut core, out, s, now);
    }
    core
}

type Steps = BTreeMap<u32, BTreeMap<String, String>>;

/// Adds reports to a history: a metric reported again at a step replaces the earlier.
fn merge(into: &mut Steps, step: u32, metrics: &[(String, f64)]) {
    let at = into.entry(step).or_default();
    for (n, v) in metrics {
        at.insert(n.clone(), format!("{v}"));
    }
}

struct World {
    core: Core,
    store: Store,
    now: u64,
    sweeps: Vec<SweepId>,
    workers: Vec<WorkerId>,
    units: Vec<UnitId>,
    /// Units finished so far (over restarts too).
    finished: HashSet<UnitId>,
    /// Workers that held a lease on each unit.
    holders: HashMap<UnitId, HashSet<WorkerId>>,
    /// The worker of each unit's latest lease: most progress comes from it, so that
    /// reports reach the scheduler rather than being dropped as forged.
    latest: HashMap<UnitId, WorkerId>,
    /// Each unit's holder and when its lease lapses, by the clock of the coordinator
    /// that granted or renewed it; kept across restarts (the worker keeps running).
    leases: HashMap<UnitId, (WorkerId, u64)>,
    /// What each unit's stored history must be: `step -> name -> value`, as accepted.
    history: HashMap<UnitId, Steps>,
    /// The sweep of each unit.
    sweep_of: HashMap<UnitId, SweepId>,
    /// Leases of each unit that were not its attempts (restarts, clean exits).
    interrupted: HashMap<UnitId, u32>,
}

impl World {
    fn new(dir: &std::path::Path) -> Self {
        let mut store = Store::open(&dir.join("fuzz.db")).unwrap();
        let mut core = Core::new(cfg(), 1, 1);
        let mut out = Vec::new();
        let sweeps: Vec<SweepId> = vec!["a".into(), "b".into()];
        core::on_sweep_submitted(
            &mut core,
            &mut out,
            sweeps[0].clone(),
            spec("a", 12, 0, true),
            0,
        )
        .unwrap();
        core::on_sweep_submitted(
            &mut core,
            &mut out,
            sweeps[1].clone(),
            spec("b", 8, 2, false),
            1,
        )
        .unwrap();
        store.apply(&out).unwrap();
        let mut w = World {
            core,
            store,
            now: 2,
            sweeps,
            workers: vec![],
            units: vec![],
            finished: HashSet::new(),
            holders: HashMap::new(),
            latest: HashMap::new(),
            leases: HashMap::new(),
            history: HashMap::new(),
            sweep_of: HashMap::new(),
            interrupted: HashMap::new(),
        };
        w.check(&out);
        w
    }

    fn step(&mut self, op: Op) {
        self.now += 10;
        let now = self.now;
        let mut out = Vec::new();
        // Indices past the known workers and units name forged ones.
        let (ws, us) = (self.workers.clone(), self.units.clone());
        let wid = |i: usize| {
            ws.get(i)
                .cloned()
                .unwrap_or_else(|| WorkerId(format!("w{}-forged", 100 + i)))
        };
        // Mostly recent units: old ones are final, and reports for them change nothing.
        let uid = |i: usize| {
            let recent = us.len().saturating_sub(8) + i % 8;
            let i = if i < 32 { recent } else { i };
            us.get(i).copied().unwrap_or(UnitId(1_000_000 + i as u64))
        };
        let c = &mut self.core;
        match op {
            Op::Register { resume } => {
                let info = WorkerInfo {
                    name: "n".into(),
                    hostname: "n".into(),
                    slots: 2,
                    devices: vec![],
                };
                let resume = resume.map(&wid);
                let id = core::on_worker_registered(c, &mut out, info, resume, now);
                if !self.workers.contains(&id) {
                    self.workers.push(id);
                }
            }
            Op::Lease { worker, max } => {
                let _ = core::on_lease_requested(c, &mut out, &wid(worker), max, now);
            }
            Op::Heartbeat { worker, units } => {
                let w = wid(worker);
                let units: Vec<UnitId> = units.iter().map(|u| uid(*u)).collect();
                core::on_units_reported_running(c, &mut out, &w, &units, now);
                if core::on_heartbeat(c, &w, &units, now).is_ok() {
                    // The core renewed the leases this worker holds and says it runs.
                    for (u, (holder, until)) in self.leases.iter_mut() {
                        if *holder == w && c.unit_holder(*u) == Some(&w) && units.contains(u) {
                            *until = now + cfg().lease_ttl_ms;
                        }
                    }
                }
            }
            Op::Progress {
                worker,
                unit,
                step,
                value,
            } => {
                // Mostly units that run now: those are the reports a scheduler judges.
                let running: Vec<UnitId> = us
                    .iter()
                    .copied()
                    .filter(|u| c.unit_state(*u) == Some(UnitState::Running))
                    .collect();
                let u = match running.len() {
                    n if n > 0 && unit < 32 => running[unit % n],
                    _ => uid(unit),
                };
                let w = match self.latest.get(&u) {
                    Some(w) if worker < 4 => w.clone(),
                    _ => wid(worker),
                };
                let m = vec![("val_accuracy".into(), value)];
                core::on_progress(c, &mut out, &w, u, step, m, now);
            }
            Op::Report {
                worker,
                unit,
                outcome,
                value,
            } => {
                let state = match outcome {
                    0..=2 => UnitState::Completed,
                    3 => UnitState::Diverged,
                    4 => UnitState::Failed,
                    _ => UnitState::Cancelled,
                };
                let o = Outcome {
                    unit: uid(unit),
                    state,
                    metrics: vec![("val_accuracy".into(), value)],
                    error: String::new(),
                    duration_s: 1.0,
                    history: Some(vec![(1, vec![("val_loss".into(), 0.2)])]),
                    permanent: outcome == 4 && value > 0.8,
                };
                let w = match self.latest.get(&uid(unit)) {
                    Some(w) if worker < 3 => w.clone(),
                    _ => wid(worker),
                };
                // Half the time as the event loop takes a report's ended unit after a
                // restart: adopted back first (whatever the slots), then finished.
                if outcome % 2 == 0 {
                    core::on_units_reported_ended(c, &mut out, &w, &[uid(unit)], now);
                }
                let _ = core::on_unit_finished(c, &mut out, &w, o, now);
            }
            Op::Deregister { worker } => {
                core::on_worker_deregistered(c, &mut out, &wid(worker), now);
            }
            Op::Tick { ms } => {
                self.now += ms;
                core::on_tick(c, &mut out, self.now);
            }
            Op::Cancel { sweep } => {
                let _ = core::on_cancel(c, &mut out, &self.sweeps[sweep], now);
            }
            Op::Restart => {
                self.core = rebuild(&self.store, &mut out, now);
            }
        }
        self.store.apply(&out).unwrap();
        self.check(&out);
    }

    fn check(&mut self, out: &[Action]) {
        let now = self.now;
        for a in out {
            match a {
                Action::UnitCreated { unit, sweep, .. } => {
                    self.units.push(*unit);
                    self.sweep_of.insert(*unit, sweep.clone());
                }
                Action::UnitLeased { unit, attempt, .. } => {
                    // However many restarts, a unit's own attempts stay within the limit.
                    let lost = self.interrupted.get(unit).copied().unwrap_or(0);
                    assert!(
                        attempt - lost <= cfg().max_attempts,
                        "unit {unit}: attempt {attempt} with {lost} lost to restarts"
                    );
                }
                Action::UnitRequeued {
                    unit,
                    interrupted,
                    attempts,
                    ..
                } => {
                    assert!(
                        interrupted <= attempts,
                        "unit {unit}: {interrupted} of {attempts} leases interrupted"
                    );
                    self.interrupted.insert(*unit, *interrupted);
                }
                _ => {}
            }
            match a {
                Action::UnitLeased { unit, worker, .. } | Action::UnitAdopted { unit, worker } => {
                    if let Some((holder, until)) = self.leases.get(unit) {
                        assert!(
                            holder == worker || now > *until,
                            "unit {unit} given to {worker} at {now} while {holder} held it until {until}"
                        );
                    }
                    self.leases
                        .insert(*unit, (worker.clone(), now + cfg().lease_ttl_ms));
                    if matches!(a, Action::UnitLeased { resumes: false, .. }) {
                        self.history.remove(unit);
                    }
                    self.latest.insert(*unit, worker.clone());
                    self.holders
                        .entry(*unit)
                        .or_default()
                        .insert(worker.clone());
                }
                Action::LeaseExpired { unit } => {
                    if let Some((holder, until)) = self.leases.get(unit) {
                        assert!(now > *until, "{holder}'s lease of {unit} expired early");
                    }
                    self.leases.remove(unit);
                }
                // The holder gave the unit up (its attempt failed, it left, it was
                // stopped): nothing of it runs any more.
                Action::UnitRequeued { unit, cause, .. }
                    if !matches!(cause, core::RequeueCause::CoordinatorRestarted) =>
                {
                    self.leases.remove(unit);
                }
                Action::Progress {
                    unit,
                    step,
                    metrics,
                } => {
                    merge(self.history.entry(*unit).or_default(), *step, metrics);
                }
                Action::UnitFinished {
                    unit,
                    worker,
                    state,
                    metrics,
                    history,
                    resumes,
                    ..
                } => {
                    self.leases.remove(unit);
                    if let Some(h) = history {
                        let mine = self.history.entry(*unit).or_default();
                        if !resumes {
                            mine.clear();
                        }
                        for (step, m) in h {
                            merge(mine, *step, m);
                        }
                    }
                    let want = self.history.remove(unit).unwrap_or_default();
                    self.check_history(*unit, &want);
                    assert!(self.finished.insert(*unit), "unit {unit} finished twice");
                    if let Some(w) = worker {
                        assert!(
                            self.holders.get(unit).is_some_and(|h| h.contains(w)),
                            "unit {unit} finished by {w}, which never held it"
                        );
                    }
                    if *state == UnitState::Completed {
                        for (n, v) in metrics {
                            assert!(v.is_finite(), "completed with {n} = {v}");
                            assert!(!n.ends_with("accuracy") || (0.0..=1.0).contains(v));
                        }
                    }
                }
                _ => {}
            }
        }
        // What a restart would rebuild from the store must be what the core holds.
        let rebuilt = rebuild(&self.store, &mut Vec::new(), self.now);
        let stored: HashMap<SweepId, _> = self
            .store
            .restore()
            .unwrap()
            .into_iter()
            .map(|s| (s.id.clone(), s))
            .collect();
        for id in &self.sweeps {
            let v = self.core.sweep(id).expect("sweeps are never deleted here");
            let c = v.counts;
            assert_eq!(
                c.pending
                    + c.running
                    + c.completed
                    + c.failed
                    + c.diverged
                    + c.cancelled
                    + c.pruned,
                c.total,
                "{id}: {c:?}"
            );
            let r = rebuilt.sweep(id).unwrap();
            let rc = r.counts;
            assert_eq!(
                (
                    rc.completed,
                    rc.failed,
                    rc.diverged,
                    rc.cancelled,
                    rc.pruned,
                    rc.pending + rc.running
                ),
                (
                    c.completed,
                    c.failed,
                    c.diverged,
                    c.cancelled,
                    c.pruned,
                    c.pending + c.running
                ),
                "{id}: the core and the store disagree"
            );
            assert_eq!(r.state, v.state, "{id}: state");
            assert_eq!(r.best, v.best, "{id}: best");
            let running = stored[id]
                .live
                .iter()
                .filter(|u| u.state == UnitState::Running)
                .count();
            // Units held back after a restart stay `running` in the store until their
            // holder's lease has lapsed.
            assert_eq!(
                running as u32,
                c.running + self.core.parked_units(id) as u32,
                "{id}: running units"
            );
        }
    }

    /// The store's history of a finished unit is what the accepted reports add up to.
    fn check_history(&self, unit: UnitId, want: &Steps) {
        let sweep = &self.sweep_of[&unit];
        let rows = self.store.trials_page(sweep, None, 1000).unwrap();
        let Some(row) = rows.iter().find(|r| r.unit == unit) else {
            panic!("unit {unit} is not stored");
        };
        let mut got = Steps::new();
        for (step, m) in &row.history {
            merge(&mut got, *step, m);
        }
        assert_eq!(&got, want, "history of unit {unit}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn worker_messages_keep_the_core_and_store_consistent(ops in proptest::collection::vec(op(1500), 1..120)) {
        let dir = tempfile::tempdir().unwrap();
        let mut w = World::new(dir.path());
        for op in ops {
            w.step(op);
        }
    }

    #[test]
    fn reports_that_prune_keep_the_core_and_store_consistent(ops in proptest::collection::vec(op(200), 20..150)) {
        let dir = tempfile::tempdir().unwrap();
        let mut w = World::new(dir.path());
        for op in ops {
            w.step(op);
        }
    }
}
