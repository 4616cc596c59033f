//! Coordinator overhead, isolated from any real work (HyperQueue's zero-worker idea):
//! how many units per second the pure core can lease and complete, and what batching the
//! SQLite writes buys against one transaction per unit, measured in the same run.
//!
//!     cargo bench --bench core

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ridgeline_common::spec::SweepSpec;
use ridgeline_coordinator::core::{self, Action, Core, CoreConfig, Outcome, UnitState, WorkerInfo};
use ridgeline_coordinator::store::Store;
use ridgeline_coordinator::telemetry;

const UNITS: u32 = 10_000;

fn spec(n: u32) -> SweepSpec {
    SweepSpec::from_toml(&format!(
        "name = \"b\"\ndata = {{ path = \"x.csv\" }}\n[search]\nalgorithm = \"random\"\nnum_samples = {n}\n[search.space]\nlr = {{ type = \"loguniform\", low = 1e-4, high = 1e-1 }}\nwidth = {{ type = \"int\", low = 8, high = 512 }}\n"
    ))
    .unwrap()
}

/// Runs a whole sweep of no-op units through the core; returns the actions produced.
fn drain(n: u32, slots: u32) -> Vec<Action> {
    drain_core(n, slots).1
}

/// [`drain`], also returning the core at the end.
fn drain_core(n: u32, slots: u32) -> (Core, Vec<Action>) {
    let mut core = Core::new(CoreConfig::default(), 1, 1);
    let mut out = Vec::new();
    core::on_sweep_submitted(&mut core, &mut out, "b".into(), spec(n), 0).unwrap();
    let info = WorkerInfo {
        name: "w".into(),
        hostname: "h".into(),
        slots,
        devices: vec![],
    };
    let w = core::on_worker_registered(&mut core, &mut out, info, None, 0);
    let mut now = 0;
    loop {
        now += 1;
        let leases = core::on_lease_requested(&mut core, &mut out, &w, slots, now).unwrap();
        if leases.is_empty() {
            break;
        }
        for l in leases {
            let o = Outcome {
                unit: l.unit,
                state: UnitState::Completed,
                metrics: vec![("val_accuracy".into(), f64::from(l.trial % 97) / 97.0)],
                error: String::new(),
                duration_s: 0.0,
                history: None,
                permanent: false,
            };
            core::on_unit_finished(&mut core, &mut out, &w, o, now).unwrap();
        }
    }
    (core, out)
}

fn bench_core(c: &mut Criterion) {
    let mut g = c.benchmark_group("core");
    g.throughput(Throughput::Elements(u64::from(UNITS)));
    g.bench_function("lease_and_complete_10k_units_64_slots", |b| {
        b.iter(|| black_box(drain(UNITS, 64)))
    });
    g.finish();
}

/// What metrics add to the event loop, with the real Prometheus recorder: counting a
/// 10,000-unit sweep's actions (compare with `core/lease_and_complete_10k_units_64_slots`,
/// the core's own work for the same units), and one tick's gauges plus a scrape.
fn bench_telemetry(c: &mut Criterion) {
    let (core, actions) = drain_core(UNITS, 64);
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, telemetry::describe);
    let mut g = c.benchmark_group("telemetry");
    g.throughput(Throughput::Elements(u64::from(UNITS)));
    g.bench_function("record_10k_units_actions", |b| {
        b.iter(|| metrics::with_local_recorder(&recorder, || telemetry::record(&actions, &core)))
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("publish_gauges_and_render", |b| {
        b.iter(|| {
            metrics::with_local_recorder(&recorder, || {
                telemetry::publish(&core.gauges(1_000_000, 3_600_000))
            });
            black_box(handle.render())
        })
    });
    g.finish();
}

fn bench_store(c: &mut Criterion) {
    // The same 1,000 units' worth of actions, committed two ways.
    let actions = drain(1_000, 64);
    let per_unit: Vec<Vec<Action>> = {
        let mut groups: Vec<Vec<Action>> = Vec::new();
        for a in &actions {
            let starts_unit = matches!(
                a,
                Action::UnitCreated { .. }
                    | Action::SweepCreated { .. }
                    | Action::WorkerRegistered { .. }
            );
            if starts_unit || groups.is_empty() {
                groups.push(Vec::new());
            }
            groups.last_mut().unwrap().push(a.clone());
        }
        groups
    };
    let mut g = c.benchmark_group("store");
    g.throughput(Throughput::Elements(1_000));
    g.sample_size(10);
    let fresh = || {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("b.db")).unwrap();
        (dir, store)
    };
    g.bench_function("one_transaction_per_unit_1k", |b| {
        b.iter_batched(
            fresh,
            |(_dir, mut store)| {
                for group in &per_unit {
                    store.apply(group).unwrap();
                }
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("one_transaction_per_batch_1k", |b| {
        b.iter_batched(
            fresh,
            |(_dir, mut store)| store.apply(&actions).unwrap(),
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

/// What a TPE suggestion costs once 1,000 trials have results (the event loop makes it
/// when a worker asks for a trial), next to the core's own cost of a unit and a store
/// commit in the same run.
fn bench_search(c: &mut Criterion) {
    use ridgeline_coordinator::search::{Ended, searcher_for};
    let mut g = c.benchmark_group("search");
    for multivariate in [true, false] {
        let spec = SweepSpec::from_toml(&format!(
            r#"
name = "b"
[trial]
command = ["true"]
[search]
algorithm = "tpe"
metric = "loss"
num_samples = 2000
[search.tpe]
multivariate = {multivariate}
[search.space]
lr = {{ type = "loguniform", low = 1e-5, high = 1.0 }}
dropout = {{ type = "uniform", low = 0.0, high = 0.5 }}
layers = {{ type = "int", low = 1, high = 8 }}
act = {{ type = "choice", values = ["relu", "tanh", "gelu"] }}
"#
        ))
        .unwrap();
        let mut s = searcher_for(&spec);
        for i in 0..1000 {
            let p = s.suggest(i);
            s.started(i, &p);
            let lr = p["lr"].as_f64().unwrap();
            s.observe(i, Ended::Completed((lr.log10() + 3.0).powi(2)));
        }
        // Eight trials running, as with eight busy slots (the constant liar's part).
        for i in 1000..1008 {
            let p = s.suggest(i);
            s.started(i, &p);
        }
        let name = if multivariate {
            "tpe_suggest_after_1000_trials_multivariate"
        } else {
            "tpe_suggest_after_1000_trials_univariate"
        };
        g.bench_function(name, |b| b.iter(|| black_box(s.suggest(1008))));
    }
    g.finish();
}

criterion_group!(
    benches,
    bench_core,
    bench_store,
    bench_telemetry,
    bench_search
);
criterion_main!(benches);
