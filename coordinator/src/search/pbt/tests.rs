//! PBT on a toy whose best learning rate decays during training (Jaderberg et al.'s
//! point: a schedule, not a constant, is best), against random search with the same
//! budget.

use super::*;

const P: u32 = 8;
const ROUNDS: u32 = 20;
const INTERVAL: u32 = 5;
const STEPS: u32 = ROUNDS * INTERVAL;

fn space() -> BTreeMap<String, ParamSpec> {
    BTreeMap::from([
        (
            "lr".to_owned(),
            ParamSpec::Loguniform {
                low: 1e-4,
                high: 1.0,
            },
        ),
        (
            "width".to_owned(),
            ParamSpec::Choice {
                values: vec![
                    ParamValue::Int(16),
                    ParamValue::Int(32),
                    ParamValue::Int(64),
                ],
            },
        ),
    ])
}

/// Progress one training step makes at `step` with learning rate `lr`: best at a rate
/// that decays from 1e-1 at the start to 1e-3 at the end (log-linearly).
fn gain(step: u32, lr: f64) -> f64 {
    let target = -1.0 - 2.0 * f64::from(step) / f64::from(STEPS);
    (-(lr.log10() - target).powi(2) / 0.5).exp()
}

fn train(from: f64, steps: std::ops::RangeInclusive<u32>, lr: f64) -> f64 {
    steps.fold(from, |s, step| s + gain(step, lr))
}

fn cfg() -> PbtSpec {
    PbtSpec {
        rounds: ROUNDS,
        perturbation_interval: INTERVAL,
        ..PbtSpec::default()
    }
}

/// One PBT run, round by round; each trial's checkpoint is its score. Returns the best
/// final score and every trial's (parameters, score).
fn pbt(seed: u64, reverse: bool) -> (f64, Vec<(Params, f64)>) {
    let mut s = Pbt::new(space(), seed, Mode::Max, P, cfg());
    let mut trials: Vec<(Params, f64)> = Vec::new();
    for r in 0..ROUNDS {
        let ids: Vec<u32> = (r * P..(r + 1) * P).collect();
        for &i in &ids {
            let p = s.suggest(i);
            s.started(i, &p);
            let from = match p.get(PBT_PARENT) {
                Some(v) => trials[v.as_i64().unwrap() as usize].1,
                None => 0.0,
            };
            let lr = p["lr"].as_f64().unwrap();
            let score = train(from, r * INTERVAL + 1..=(r + 1) * INTERVAL, lr);
            trials.push((p, score));
        }
        // Results arrive in either order: decisions depend on the set, not the order.
        let mut order = ids.clone();
        if reverse {
            order.reverse();
        }
        for i in order {
            s.observe(i, Ended::Completed(trials[i as usize].1));
        }
    }
    let best = trials[((ROUNDS - 1) * P) as usize..]
        .iter()
        .map(|t| t.1)
        .fold(f64::NEG_INFINITY, f64::max);
    (best, trials)
}

/// Random search with the same budget: P trials of all the steps, each at a constant
/// learning rate (the same draws as round 0 of PBT).
fn random(seed: u64) -> f64 {
    (0..P)
        .map(|i| {
            let mut rng = Rng::stream(seed, u64::from(i));
            let lr = sample(&space()["lr"], &mut rng).as_f64().unwrap();
            train(0.0, 1..=STEPS, lr)
        })
        .fold(f64::NEG_INFINITY, f64::max)
}

#[test]
fn pbt_beats_random_search_when_the_best_learning_rate_changes() {
    let mut lines = Vec::new();
    let mut wins = 0;
    for seed in 0..10 {
        let (p, _) = pbt(seed, false);
        let r = random(seed);
        lines.push(format!("seed {seed}: PBT {p:.2}, random {r:.2}"));
        wins += usize::from(p > r);
    }
    eprintln!("{}", lines.join("\n"));
    assert_eq!(wins, 10, "{}", lines.join("\n"));
}

#[test]
fn lineage_is_consistent_and_decisions_do_not_depend_on_result_order() {
    let (_, a) = pbt(3, false);
    let (_, b) = pbt(3, true);
    assert_eq!(a, b);
    let q = ((P as f64 * 0.25).ceil()) as usize;
    let mut exploited = 0;
    for r in 1..ROUNDS {
        let prev: Vec<(u32, f64)> = ((r - 1) * P..r * P).map(|t| (t, a[t as usize].1)).collect();
        let mut ranked = prev.clone();
        ranked.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0)));
        let top: Vec<u32> = ranked[..q].iter().map(|t| t.0).collect();
        let bottom: Vec<u32> = ranked[ranked.len() - q..].iter().map(|t| t.0).collect();
        for m in 0..P {
            let i = r * P + m;
            let own = (r - 1) * P + m;
            let parent = a[i as usize].0[PBT_PARENT].as_i64().unwrap() as u32;
            if bottom.contains(&own) {
                // Exploited: it starts from a top member, with explored parameters.
                assert!(
                    top.contains(&parent),
                    "trial {i} copies {parent}, not a top one"
                );
                exploited += 1;
                let lr = a[i as usize].0["lr"].as_f64().unwrap();
                assert!((1e-4..1.0).contains(&lr), "{lr}");
            } else {
                // Continued: its own checkpoint and its own parameters.
                assert_eq!(parent, own);
                let mut mine = a[own as usize].0.clone();
                mine.remove(PBT_PARENT);
                let mut now = a[i as usize].0.clone();
                now.remove(PBT_PARENT);
                assert_eq!(now, mine);
            }
        }
    }
    assert_eq!(exploited, (ROUNDS as usize - 1) * q);
}

#[test]
fn perturbations_stay_in_range_and_move_choices_one_place() {
    let mut rng = Rng::new(9);
    let lr = ParamSpec::Loguniform {
        low: 1e-4,
        high: 1.0,
    };
    for _ in 0..200 {
        let v = perturb(&lr, &ParamValue::Float(0.9), &[1.2, 0.8], &mut rng)
            .as_f64()
            .unwrap();
        assert!(v == 0.9 * 0.8 || (v < 1.0 && v > 0.99), "{v}");
    }
    let width = ParamSpec::Choice {
        values: vec![
            ParamValue::Int(16),
            ParamValue::Int(32),
            ParamValue::Int(64),
        ],
    };
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..100 {
        seen.insert(
            perturb(&width, &ParamValue::Int(32), &[1.2], &mut rng)
                .as_i64()
                .unwrap(),
        );
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![16, 64]);
    let n = ParamSpec::Int { low: 1, high: 10 };
    assert_eq!(
        perturb(&n, &ParamValue::Int(10), &[1.2], &mut rng),
        ParamValue::Int(10)
    );
    assert_eq!(
        perturb(&n, &ParamValue::Int(5), &[0.8], &mut rng),
        ParamValue::Int(4)
    );
}
