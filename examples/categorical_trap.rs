//! The categorical trap of multivariate TPE, as `benches/search/categorical_trap.py`
//! compares it with Optuna: a mixed space (log-float, int, a 4-way choice, float) whose
//! best optimiser is one category, each category with its own best learning rate.
//!
//!     cargo run --release --example categorical_trap -- FORM TRIALS SEEDS
//!
//! FORM: `own` (the default TPE: choices on their own densities), `joint` (Optuna's
//! multivariate form) or `univariate`. Prints one JSON line per seed: each trial's
//! category and value, in order.

use ridgeline_common::params::{ParamValue, Params};
use ridgeline_common::spec::SweepSpec;
use ridgeline_coordinator::search::{Ended, searcher_for};

/// Each category's best log10(lr) and its floor; "adam" is the best.
fn trap(p: &Params) -> f64 {
    let (c, b) = match p["opt"].as_str() {
        Some("sgd") => (-1.5, 0.6),
        Some("adam") => (-3.5, 0.0),
        Some("rmsprop") => (-3.0, 0.4),
        _ => (-2.0, 0.8),
    };
    let lr = p["lr"].as_f64().expect("lr");
    let layers = p["layers"].as_f64().expect("layers");
    let d = p["dropout"].as_f64().expect("dropout");
    (lr.log10() - c).powi(2) + 0.05 * (layers - 5.0).powi(2) + 4.0 * (d - 0.2).powi(2) + b
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let form = args.get(1).map_or("own", String::as_str);
    let trials: u32 = args.get(2).map_or(200, |a| a.parse().expect("trials"));
    let seeds: u64 = args.get(3).map_or(20, |a| a.parse().expect("seeds"));
    let (multivariate, joint) = match form {
        "own" => (true, false),
        "joint" => (true, true),
        "univariate" => (false, false),
        other => panic!("unknown form {other}: own, joint or univariate"),
    };
    for seed in 0..seeds {
        let spec = SweepSpec::from_toml(&format!(
            r#"
name = "trap"
[trial]
command = "true"
[search]
algorithm = "tpe"
metric = "loss"
num_samples = {trials}
seed = {seed}
tpe = {{ multivariate = {multivariate}, joint_categorical = {joint} }}
[search.space]
lr = {{ type = "loguniform", low = 1e-5, high = 1e-1 }}
layers = {{ type = "int", low = 1, high = 8 }}
opt = {{ type = "choice", values = ["sgd", "adam", "rmsprop", "adagrad"] }}
dropout = {{ type = "uniform", low = 0.0, high = 0.5 }}
"#
        ))
        .expect("a valid spec");
        let mut s = searcher_for(&spec);
        let out: Vec<(String, f64)> = (0..trials)
            .map(|i| {
                let p = s.suggest(i);
                s.started(i, &p);
                let v = trap(&p);
                s.observe(i, Ended::Completed(v));
                let opt = match &p["opt"] {
                    ParamValue::Str(o) => o.clone(),
                    other => format!("{other:?}"),
                };
                (opt, v)
            })
            .collect();
        println!("{}", serde_json::json!(out));
    }
}
