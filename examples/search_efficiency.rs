//! Sample efficiency of Ridgeline's searchers on standard test functions, trial after
//! trial, as `benches/search/compare.py` compares them with Optuna's TPESampler.
//!
//!     cargo run --release --example search_efficiency -- 200 20 > ridgeline.jsonl
//!
//! Prints one JSON line per (algorithm, function, seed) with every trial's value, in the
//! order the trials ran. Trials run one after another (as Optuna's `optimize` does
//! with one job), through the same `Searcher` the coordinator's core uses.

use ridgeline_common::params::Params;
use ridgeline_common::spec::SweepSpec;
use ridgeline_coordinator::search::{Ended, searcher_for};

fn branin(p: &Params) -> f64 {
    let (x1, x2) = (p["x0"].as_f64().unwrap(), p["x1"].as_f64().unwrap());
    let pi = std::f64::consts::PI;
    let (b, c, r, s, t) = (5.1 / (4.0 * pi * pi), 5.0 / pi, 6.0, 10.0, 1.0 / (8.0 * pi));
    (x2 - b * x1 * x1 + c * x1 - r).powi(2) + s * (1.0 - t) * x1.cos() + s
}

fn hartmann6(p: &Params) -> f64 {
    const A: [[f64; 6]; 4] = [
        [10.0, 3.0, 17.0, 3.5, 1.7, 8.0],
        [0.05, 10.0, 17.0, 0.1, 8.0, 14.0],
        [3.0, 3.5, 1.7, 10.0, 17.0, 8.0],
        [17.0, 8.0, 0.05, 10.0, 0.1, 14.0],
    ];
    const P: [[f64; 6]; 4] = [
        [0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886],
        [0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991],
        [0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650],
        [0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381],
    ];
    const ALPHA: [f64; 4] = [1.0, 1.2, 3.0, 3.2];
    let x: Vec<f64> = (0..6)
        .map(|i| p[&format!("x{i}")].as_f64().unwrap())
        .collect();
    -(0..4)
        .map(|i| {
            let e: f64 = (0..6).map(|j| A[i][j] * (x[j] - P[i][j]).powi(2)).sum();
            ALPHA[i] * (-e).exp()
        })
        .sum::<f64>()
}

fn rosenbrock10(p: &Params) -> f64 {
    let x: Vec<f64> = (0..10)
        .map(|i| p[&format!("x{i}")].as_f64().unwrap())
        .collect();
    (0..9)
        .map(|i| 100.0 * (x[i + 1] - x[i] * x[i]).powi(2) + (1.0 - x[i]).powi(2))
        .sum()
}

/// Name, dimensions, bounds, function.
type Problem = (&'static str, usize, (f64, f64), fn(&Params) -> f64);

const PROBLEMS: [Problem; 3] = [
    ("branin", 2, (0.0, 1.0), branin),
    ("hartmann6", 6, (0.0, 1.0), hartmann6),
    ("rosenbrock10", 10, (-2.048, 2.048), rosenbrock10),
];

fn spec(
    algorithm: &str,
    multivariate: bool,
    problem: &Problem,
    budget: u32,
    seed: u64,
) -> SweepSpec {
    let (name, dims, (lo, hi), _) = problem;
    let mut space = String::new();
    for i in 0..*dims {
        // Branin's two ranges differ: x0 in [-5, 10], x1 in [0, 15].
        let (l, h) = match (*name, i) {
            ("branin", 0) => (-5.0, 10.0),
            ("branin", 1) => (0.0, 15.0),
            _ => (*lo, *hi),
        };
        space += &format!("x{i} = {{ type = \"uniform\", low = {l:?}, high = {h:?} }}\n");
    }
    SweepSpec::from_toml(&format!(
        r#"
name = "{name}"
[trial]
command = ["true"]
[search]
algorithm = "{algorithm}"
metric = "loss"
num_samples = {budget}
seed = {seed}
[search.tpe]
multivariate = {multivariate}
[search.space]
{space}"#
    ))
    .expect("a valid spec")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let budget: u32 = args.get(1).map_or(200, |a| a.parse().expect("budget"));
    let seeds: u64 = args.get(2).map_or(20, |a| a.parse().expect("seeds"));
    let algos = [
        ("ridgeline-tpe", "tpe", true),
        ("ridgeline-tpe-univariate", "tpe", false),
        ("ridgeline-random", "random", true),
    ];
    for problem in &PROBLEMS {
        for (label, algorithm, multivariate) in algos {
            for seed in 0..seeds {
                let spec = spec(algorithm, multivariate, problem, budget, seed);
                let mut s = searcher_for(&spec);
                let started = std::time::Instant::now();
                let values: Vec<f64> = (0..budget)
                    .map(|i| {
                        let p = s.suggest(i);
                        s.started(i, &p);
                        let v = (problem.3)(&p);
                        s.observe(i, Ended::Completed(v));
                        v
                    })
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({
                        "sampler": label,
                        "function": problem.0,
                        "seed": seed,
                        "seconds": started.elapsed().as_secs_f64(),
                        "values": values,
                    })
                );
            }
        }
    }
}
