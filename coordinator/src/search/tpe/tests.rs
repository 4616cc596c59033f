//! TPE against Optuna's own numbers, and its behaviour on small problems.

use super::*;
use crate::search::Searcher;
use normal::{log_gauss_mass, truncnorm_sample};
use parzen::default_weights;

// Observations and reference log densities from `scripts/tpe_reference.py` (Optuna
// 5.0.0's `_ParzenEstimator`, multivariate, default weights and prior).
include!("reference.rs");

const REF_LOG_PDF: [(usize, [f64; 4]); 3] = [
    (
        0,
        [
            -12.493858891609321,
            -12.211115179216538,
            -12.257139780506677,
            -12.54612653879889,
        ],
    ),
    (
        3,
        [
            -13.879788950399497,
            -13.244728781885351,
            -12.485748300525874,
            -13.420713833440178,
        ],
    ),
    (
        30,
        [
            -15.846682688987261,
            -12.982137857847949,
            -15.104558842835972,
            -15.898950071970777,
        ],
    ),
];

#[test]
fn parzen_estimator_matches_optuna() {
    let dims = [
        Dim::of(&ParamSpec::Uniform {
            low: -3.0,
            high: 5.0,
        }),
        Dim::of(&ParamSpec::Loguniform {
            low: 1e-4,
            high: 1.0,
        }),
        Dim::of(&ParamSpec::Int { low: 1, high: 1000 }),
        Dim::of(&ParamSpec::Choice {
            values: vec![
                ParamValue::Str("x".into()),
                ParamValue::Str("y".into()),
                ParamValue::Str("z".into()),
            ],
        }),
    ];
    let dims: Vec<&Dim> = dims.iter().collect();
    let points = [
        [-2.5, 2e-4, 1.0, 0.0],
        [0.0, 0.01, 300.0, 2.0],
        [1.3, 0.3, 601.0, 1.0],
        [4.9, 0.9, 1000.0, 1.0],
    ];
    for (n, want) in REF_LOG_PDF {
        let obs: Vec<Vec<f64>> = (0..n)
            .map(|i| vec![OBS_A[i], OBS_B[i].ln(), OBS_C[i], OBS_D[i]])
            .collect();
        let p = Parzen::new(&obs, None, &dims, &TpeSpec::default());
        for (x, w) in points.iter().zip(want) {
            // Optuna too evaluates log-uniform parameters' kernels on the log scale.
            let got = p.log_pdf(&[x[0], x[1].ln(), x[2], x[3]]);
            assert!(
                (got - w).abs() < 1e-9,
                "n = {n}, x = {x:?}: {got} vs Optuna {w}"
            );
        }
    }
}

#[test]
fn special_functions_match_tables() {
    // Values from scipy.special (ndtr, ndtri) and mpmath.
    assert!((ndtr(1.0) - 0.841_344_746_068_542_9).abs() < 1e-15);
    assert!((ndtri(0.975) - 1.959_963_984_540_054).abs() < 1e-12);
    assert!((ndtri(1e-10) - -6.361_340_902_404_056).abs() < 1e-9);
    // log(Phi(-5) - Phi(-6)), far in a tail: no cancellation.
    let want = (2.866_515_718_791_939e-7_f64 - 9.865_876_450_376_946e-10).ln();
    assert!((log_gauss_mass(5.0, 6.0) - want).abs() < 1e-9);
    assert!((log_gauss_mass(-6.0, -5.0) - want).abs() < 1e-9);
    assert!((log_gauss_mass(-1.0, 1.0) - 0.682_689_492_137_085_9_f64.ln()).abs() < 1e-14);
}

#[test]
fn truncated_normal_draws_stay_inside_with_the_right_mean() {
    let mut rng = Rng::new(5);
    // Standard normal on [-0.5, 2]: mean (phi(-0.5) - phi(2)) / (Phi(2) - Phi(-0.5)).
    let pdf = |x: f64| (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
    let want = (pdf(-0.5) - pdf(2.0)) / (ndtr(2.0) - ndtr(-0.5));
    let n = 200_000;
    let mut sum = 0.0;
    for _ in 0..n {
        let z = truncnorm_sample(&mut rng, -0.5, 2.0);
        assert!((-0.5..=2.0).contains(&z));
        sum += z;
    }
    assert!(
        (sum / f64::from(n) - want).abs() < 0.005,
        "{}",
        sum / f64::from(n)
    );
}

fn space(entries: &[(&str, ParamSpec)]) -> BTreeMap<String, ParamSpec> {
    entries
        .iter()
        .map(|(n, s)| ((*n).to_owned(), s.clone()))
        .collect()
}

/// x and y uniform on [-5, 5].
fn square() -> BTreeMap<String, ParamSpec> {
    let side = ParamSpec::Uniform {
        low: -5.0,
        high: 5.0,
    };
    space(&[("x", side.clone()), ("y", side)])
}

/// Runs `n` trials one after another; returns each trial's parameters and value.
fn run(tpe: &mut Tpe, n: u32, f: impl Fn(&Params) -> f64) -> Vec<(Params, f64)> {
    (0..n)
        .map(|i| {
            let p = tpe.suggest(i);
            tpe.started(i, &p);
            let v = f(&p);
            tpe.observe(i, Ended::Completed(v));
            (p, v)
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[test]
fn later_suggestions_concentrate_near_the_optimum_1d() {
    let s = space(&[(
        "x",
        ParamSpec::Uniform {
            low: -10.0,
            high: 10.0,
        },
    )]);
    let mut tpe = Tpe::new(s, 1, Mode::Min, TpeSpec::default());
    let trials = run(&mut tpe, 60, |p| (p["x"].as_f64().unwrap() - 3.0).powi(2));
    let dist = |r: &[(Params, f64)]| {
        median(
            r.iter()
                .map(|(p, _)| (p["x"].as_f64().unwrap() - 3.0).abs())
                .collect(),
        )
    };
    // Uniform draws on [-10, 10] sit a median 5.5 away from 3. Optuna 5.0's TPESampler
    // on this problem, seeds 0-9: 1.1 to 1.5 for trials 40-59.
    let (startup, late) = (dist(&trials[..10]), dist(&trials[40..]));
    assert!(
        late < 2.5,
        "median distance of the last 20: {late} (startup: {startup})"
    );
    assert!(late < startup / 3.0);
}

#[test]
fn later_suggestions_concentrate_near_the_optimum_2d_both_modes() {
    for multivariate in [true, false] {
        let s = square();
        let cfg = TpeSpec {
            multivariate: Some(multivariate),
            ..TpeSpec::default()
        };
        let mut tpe = Tpe::new(s, 2, Mode::Max, cfg);
        // Maximise the negated bowl centred at (1, -2).
        let f = |p: &Params| {
            -((p["x"].as_f64().unwrap() - 1.0).powi(2) + (p["y"].as_f64().unwrap() + 2.0).powi(2))
        };
        let trials = run(&mut tpe, 80, f);
        // Random draws: a median squared distance of about 17. Optuna 5.0, seeds 0-9:
        // 1.2 to 2.3 for trials 60-79.
        let late = median(trials[60..].iter().map(|(_, v)| -v).collect());
        let early = median(trials[..10].iter().map(|(_, v)| -v).collect());
        assert!(
            late < 3.0 && late < early / 4.0,
            "multivariate={multivariate}: squared distance of the last 20 {late}, startup {early}"
        );
    }
}

#[test]
fn int_log_and_choice_dimensions() {
    let s = space(&[
        (
            "lr",
            ParamSpec::Loguniform {
                low: 1e-5,
                high: 1.0,
            },
        ),
        ("layers", ParamSpec::Int { low: 1, high: 8 }),
        (
            "act",
            ParamSpec::Choice {
                values: ["relu", "tanh", "gelu"]
                    .map(|s| ParamValue::Str(s.into()))
                    .to_vec(),
            },
        ),
    ]);
    let mut tpe = Tpe::new(s, 3, Mode::Min, TpeSpec::default());
    let f = |p: &Params| {
        let lr = p["lr"].as_f64().unwrap();
        let layers = p["layers"].as_i64().unwrap();
        (lr.log10() + 2.0).powi(2)
            + 0.3 * (layers - 5).pow(2) as f64
            + if p["act"].as_str() == Some("tanh") {
                0.0
            } else {
                2.0
            }
    };
    let trials = run(&mut tpe, 100, f);
    for (p, _) in &trials {
        let lr = p["lr"].as_f64().unwrap();
        assert!((1e-5..1.0).contains(&lr), "{lr}");
        assert!((1..=8).contains(&p["layers"].as_i64().unwrap()));
    }
    let late = &trials[70..];
    let tanh = late
        .iter()
        .filter(|(p, _)| p["act"].as_str() == Some("tanh"))
        .count();
    let near = late
        .iter()
        .filter(|(p, _)| (4..=6).contains(&p["layers"].as_i64().unwrap()))
        .count();
    let lr_near = late
        .iter()
        .filter(|(p, _)| (p["lr"].as_f64().unwrap().log10() + 2.0).abs() < 1.0)
        .count();
    // Random search gives about 10, 11 and 10 of 30; Optuna 5.0, seeds 0-7: 17-23,
    // 26-28 and 28-30.
    assert!(
        tanh >= 16 && near >= 22 && lr_near >= 22,
        "{tanh} {near} {lr_near}"
    );
}

#[test]
fn eight_concurrent_slots_never_get_the_same_point() {
    let s = square();
    let mut tpe = Tpe::new(s, 4, Mode::Min, TpeSpec::default());
    let f = |p: &Params| p["x"].as_f64().unwrap().powi(2) + p["y"].as_f64().unwrap().powi(2);
    let mut running: std::collections::VecDeque<(u32, Params)> = Default::default();
    let mut seen: Vec<(f64, f64)> = Vec::new();
    let mut next = 0;
    while next < 120 {
        // Eight slots busy: a result comes in, the freed slot asks for a new trial.
        while running.len() < 8 {
            let p = tpe.suggest(next);
            tpe.started(next, &p);
            let xy = (p["x"].as_f64().unwrap(), p["y"].as_f64().unwrap());
            assert!(!seen.contains(&xy), "trial {next} repeats {xy:?}");
            seen.push(xy);
            running.push_back((next, p));
            next += 1;
        }
        let (i, p) = running.pop_front().unwrap();
        tpe.observe(i, Ended::Completed(f(&p)));
    }
    // The liar spreads simultaneous suggestions: the 8 made at once after the startup
    // phase are far apart, not 8 copies of the best point.
    let (below, above) = tpe.split();
    assert!(!below.is_empty() && above.len() >= 8);
}

#[test]
fn state_is_the_set_of_trials_not_their_order() {
    let s = space(&[
        (
            "x",
            ParamSpec::Uniform {
                low: 0.0,
                high: 1.0,
            },
        ),
        ("k", ParamSpec::Int { low: 0, high: 4 }),
    ]);
    let mut a = Tpe::new(s.clone(), 9, Mode::Min, TpeSpec::default());
    let mut b = Tpe::new(s, 9, Mode::Min, TpeSpec::default());
    let trials: Vec<(u32, Params)> = (0..30).map(|i| (i, a.suggest(i))).collect();
    let value = |p: &Params| p["x"].as_f64().unwrap() + p["k"].as_i64().unwrap() as f64;
    for (i, p) in &trials {
        a.started(*i, p);
        a.observe(*i, Ended::Completed(value(p)));
    }
    // Rebuilt in another order, with a failed trial and a pruned one in between.
    for (i, p) in trials.iter().rev() {
        b.started(*i, p);
        b.observe(*i, Ended::Completed(value(p)));
    }
    b.started(30, &trials[0].1);
    b.observe(30, Ended::Failed);
    assert_eq!(a.suggest(31), b.suggest(31));
    a.started(31, &trials[1].1);
    a.observe(
        31,
        Ended::Pruned {
            step: 2,
            value: 9.0,
        },
    );
    b.started(31, &trials[1].1);
    b.observe(
        31,
        Ended::Pruned {
            step: 2,
            value: 9.0,
        },
    );
    assert_eq!(a.suggest(32), b.suggest(32));
    // A running trial changes the suggestion (it joins the bad group).
    let before = a.suggest(33);
    a.started(32, &before);
    assert_ne!(a.suggest(33), before);
}

#[test]
fn gamma_and_weights_are_optunas() {
    let one = Tpe::new(BTreeMap::new(), 0, Mode::Min, TpeSpec::default());
    assert_eq!(one.gamma(0), 0);
    assert_eq!(one.gamma(1), 1);
    assert_eq!(one.gamma(10), 1);
    assert_eq!(one.gamma(11), 2);
    assert_eq!(one.gamma(1000), 25);
    // Several objectives: no cap (Optuna's default_gamma_multiobjective).
    let two = one.with_objectives(vec![Mode::Min, Mode::Max]);
    assert_eq!(two.gamma(1000), 100);
    // numpy.linspace(1/30, 1, 5) then 25 ones.
    let w = default_weights(30);
    assert_eq!(w.len(), 30);
    let want = [
        1.0 / 30.0,
        0.275,
        0.516_666_666_666_666_6,
        0.758_333_333_333_333_3,
        1.0,
    ];
    for (g, e) in w.iter().zip(want) {
        assert!((g - e).abs() < 1e-12, "{w:?}");
    }
    assert!(w[5..].iter().all(|x| *x == 1.0));
}

#[test]
fn a_warm_start_makes_the_first_suggestions_model_based() {
    // Forty trials of another sweep on the same 1-D problem, spread evenly: a cold TPE's
    // first ten suggestions are its start-up draws (uniform on [-10, 10], a median 5.5
    // from the optimum 3); a warm one's come from the model of those forty.
    let s = space(&[(
        "x",
        ParamSpec::Uniform {
            low: -10.0,
            high: 10.0,
        },
    )]);
    let f = |x: f64| (x - 3.0).powi(2);
    let first_ten = |warm: bool, seed: u64| {
        let mut tpe = Tpe::new(s.clone(), seed, Mode::Min, TpeSpec::default());
        if warm {
            for k in 0..40 {
                let x = -10.0 + 20.0 * (k as f64 + 0.5) / 40.0;
                let p = Params::from([("x".to_owned(), ParamValue::Float(x))]);
                tpe.warm(&p, Ended::Completed(f(x)));
            }
        }
        let runs = run(&mut tpe, 10, |p| f(p["x"].as_f64().unwrap()));
        median(
            runs.iter()
                .map(|(p, _)| (p["x"].as_f64().unwrap() - 3.0).abs())
                .collect(),
        )
    };
    for seed in 0..5 {
        let (cold, warm) = (first_ten(false, seed), first_ten(true, seed));
        assert!(
            warm < 1.0 && warm < cold / 3.0,
            "seed {seed}: median distance of the first ten, warm {warm}, cold {cold}"
        );
    }
    // Trials outside this space (here, another sweep's wider range) are left out.
    let mut tpe = Tpe::new(s.clone(), 0, Mode::Min, TpeSpec::default());
    let far = Params::from([("x".to_owned(), ParamValue::Float(50.0))]);
    tpe.warm(&far, Ended::Completed(0.0));
    assert!(tpe.trials.is_empty());
}

/// A mixed space whose best optimiser is one category ("adam"), each category with its
/// own best learning rate: the categorical trap.
fn trap(p: &Params) -> f64 {
    let (c, b) = match p["opt"].as_str() {
        Some("sgd") => (-1.5, 0.6),
        Some("adam") => (-3.5, 0.0),
        Some("rmsprop") => (-3.0, 0.4),
        _ => (-2.0, 0.8),
    };
    let lr = p["lr"].as_f64().unwrap();
    let layers = p["layers"].as_f64().unwrap();
    let d = p["dropout"].as_f64().unwrap();
    (lr.log10() - c).powi(2) + 0.05 * (layers - 5.0).powi(2) + 4.0 * (d - 0.2).powi(2) + b
}

#[test]
fn choices_on_their_own_density_fall_into_the_categorical_trap_less_often() {
    let s = space(&[
        (
            "lr",
            ParamSpec::Loguniform {
                low: 1e-5,
                high: 1e-1,
            },
        ),
        ("layers", ParamSpec::Int { low: 1, high: 8 }),
        (
            "opt",
            ParamSpec::Choice {
                values: ["sgd", "adam", "rmsprop", "adagrad"]
                    .iter()
                    .map(|o| ParamValue::Str((*o).into()))
                    .collect(),
            },
        ),
        (
            "dropout",
            ParamSpec::Uniform {
                low: 0.0,
                high: 0.5,
            },
        ),
    ]);
    // Seeds whose best trial after 80 has the wrong category.
    let wrong = |joint_categorical: bool| {
        (0..40)
            .filter(|&seed| {
                let cfg = TpeSpec {
                    joint_categorical,
                    ..TpeSpec::default()
                };
                let mut tpe = Tpe::new(s.clone(), seed, Mode::Min, cfg);
                let trials = run(&mut tpe, 80, trap);
                let best = trials.iter().min_by(|a, b| a.1.total_cmp(&b.1)).unwrap();
                best.0["opt"].as_str() != Some("adam")
            })
            .count()
    };
    let (own, joint) = (wrong(false), wrong(true));
    eprintln!("wrong category: {own} of 40 on their own density, {joint} joint");
    // Measured over 200 seeds and 200 trials (docs/search.md): 15 wrong with the
    // choices on their own density, 31 with Optuna's joint form (Optuna: 20).
    assert!(
        own < joint,
        "wrong category: {own} of 40 on their own density, {joint} joint"
    );
}

#[test]
fn a_space_without_choices_is_modelled_as_before() {
    // The joint form and the default draw the same suggestions bit for bit when no
    // parameter is a choice.
    let suggestions = |joint_categorical: bool| {
        let cfg = TpeSpec {
            joint_categorical,
            ..TpeSpec::default()
        };
        let mut tpe = Tpe::new(square(), 4, Mode::Min, cfg);
        run(&mut tpe, 30, |p| {
            (p["x"].as_f64().unwrap() - 1.0).powi(2) + p["y"].as_f64().unwrap().powi(2)
        })
    };
    assert_eq!(suggestions(false), suggestions(true));
}

fn branin(x1: f64, x2: f64) -> f64 {
    let pi = std::f64::consts::PI;
    let (b, c, t) = (5.1 / (4.0 * pi * pi), 5.0 / pi, 1.0 / (8.0 * pi));
    (x2 - b * x1 * x1 + c * x1 - 6.0).powi(2) + 10.0 * (1.0 - t) * x1.cos() + 10.0
}

#[test]
fn constrained_branin_finds_a_good_feasible_point() {
    // Branin with x2 ≤ 2: its three minima (x2 = 12.3, 2.3, 2.5) are all infeasible,
    // and 13 % of the box is feasible. The trials report the violation max(0, x2 − 2)
    // as the coordinator computes it from `constraint_*` metrics.
    let s = space(&[
        (
            "x1",
            ParamSpec::Uniform {
                low: -5.0,
                high: 10.0,
            },
        ),
        (
            "x2",
            ParamSpec::Uniform {
                low: 0.0,
                high: 15.0,
            },
        ),
    ]);
    let constrained_min = (0..=3000)
        .flat_map(|i| {
            (0..=400).map(move |j| (-5.0 + 15.0 * i as f64 / 3000.0, 2.0 * j as f64 / 400.0))
        })
        .map(|(a, b)| branin(a, b))
        .fold(f64::INFINITY, f64::min);
    let best_feasible = |aware: bool, seed: u64| {
        let mut tpe = Tpe::new(s.clone(), seed, Mode::Min, TpeSpec::default());
        let mut best = f64::INFINITY;
        for i in 0..100 {
            let p = tpe.suggest(i);
            tpe.started(i, &p);
            let (x1, x2) = (p["x1"].as_f64().unwrap(), p["x2"].as_f64().unwrap());
            let (v, violation) = (branin(x1, x2), (x2 - 2.0).max(0.0));
            let ended = if aware && violation > 0.0 {
                Ended::Infeasible {
                    value: v,
                    violation,
                }
            } else {
                Ended::Completed(v)
            };
            tpe.observe(i, ended);
            if violation == 0.0 {
                best = best.min(v);
            }
        }
        best - constrained_min
    };
    let gaps: Vec<f64> = (0..20).map(|seed| best_feasible(true, seed)).collect();
    let blind: Vec<f64> = (0..20).map(|seed| best_feasible(false, seed)).collect();
    eprintln!(
        "constrained Branin, best feasible minus the constrained minimum {constrained_min}: aware {gaps:?}, blind {blind:?}"
    );
    // A feasible trial in every seed, and within 0.5 of the constrained minimum in 19
    // of 20 (measured: 20, the largest gap 0.42); the constraint-blind search less often
    // (17, one at 3.99).
    let close = |g: &[f64]| g.iter().filter(|g| **g < 0.5).count();
    assert!(gaps.iter().all(|g| g.is_finite()));
    assert!(close(&gaps) >= 19, "{gaps:?}");
    assert!(
        close(&gaps) > close(&blind),
        "aware {gaps:?}, blind {blind:?}"
    );
}
