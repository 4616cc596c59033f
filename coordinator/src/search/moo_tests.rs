//! Multi-objective search against Optuna 5.1's own code: the operators and rankings on
//! fixed inputs (exactly), and the samplers' hypervolume on ZDT1/ZDT2 (against the
//! quartiles of Optuna's over the same seeds). The numbers come from
//! `scripts/moo_reference.py`.

use std::collections::BTreeMap;

use ridgeline_common::params::Params;
use ridgeline_common::pareto;
use ridgeline_common::spec::{Mode, Nsga2Spec, ParamSpec, TpeSpec};

use super::nsga2::{Member, Nsga2, elite, tournament, uniform_crossover};
use super::tpe::Tpe;
use super::{Ended, Searcher};

mod reference {
    include!("moo_tests/reference.rs");
}
use reference::*;

fn rows<const M: usize>(a: &[[f64; M]]) -> Vec<Vec<f64>> {
    a.iter().map(|r| r.to_vec()).collect()
}

fn members(values: &[Vec<f64>], penalty: Option<&[f64]>) -> Vec<Member> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| Member {
            values: v.clone(),
            losses: v.clone(),
            violation: penalty.map_or(0.0, |p| p[i]),
        })
        .collect()
}

#[test]
fn non_domination_ranks_are_optunas() {
    assert_eq!(pareto::ranks(&rows(&POINTS_2D)), RANKS_2D);
    assert_eq!(pareto::ranks(&rows(&POINTS_3D)), RANKS_3D);
    assert_eq!(
        pareto::constrained_ranks(&rows(&POINTS_2D), &PENALTY),
        RANKS_2D_PENALTY
    );
}

#[test]
fn crowding_order_and_distances_are_optunas_bit_for_bit() {
    let ids: Vec<usize> = (0..20).collect();
    let sorted = pareto::crowding_sort(&ids, &rows(&POINTS_2D));
    let order: Vec<usize> = sorted.iter().map(|(i, _)| *i).collect();
    assert_eq!(order, CROWDING_ORDER);
    for ((_, d), want) in sorted.iter().zip(CROWDING_DISTANCE) {
        assert_eq!(d.to_bits(), want.to_bits(), "{d} vs {want}");
    }
}

#[test]
fn elite_selection_is_optunas() {
    let p2 = members(&rows(&POINTS_2D), Some(&PENALTY));
    assert_eq!(elite(&p2, 15), ELITE_15);
    assert_eq!(elite(&members(&rows(&POINTS_3D), None), 15), ELITE_15_3D);
}

#[test]
fn tournaments_and_uniform_crossover_are_optunas() {
    let p2 = members(&rows(&POINTS_2D), Some(&PENALTY));
    let refs: Vec<&Member> = p2.iter().collect();
    for (d, want) in TOURNAMENT_DRAWS.iter().zip(TOURNAMENT_WINNERS) {
        assert_eq!(tournament(&refs, d[0], d[1]), want, "draws {d:?}");
    }
    let child = uniform_crossover(
        &CROSSOVER_PARENTS[0],
        &CROSSOVER_PARENTS[1],
        &CROSSOVER_U,
        0.5,
    );
    assert_eq!(child, CROSSOVER_CHILD);
}

#[test]
fn hypervolumes_and_subset_selection_are_optunas() {
    for (pts, want, m) in [
        (rows(&HV_POINTS_2D), HV_2D, 2),
        (rows(&HV_POINTS_3D), HV_3D, 3),
        (rows(&HV_POINTS_4D), HV_4D, 4),
    ] {
        let hv = pareto::hypervolume(&pts, &vec![1.0; m]);
        assert!((hv - want).abs() <= 1e-12 * want, "{m}-D: {hv} vs {want}");
    }
    for (front, want) in [
        (rows(&HSSP_POINTS_2D), HSSP_5_OF_12_2D),
        (rows(&HSSP_POINTS_3D), HSSP_5_OF_12_3D),
    ] {
        let mut got = pareto::hssp(&front, 5, &pareto::reference_point(&front));
        let mut want = want.to_vec();
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want);
    }
}

#[test]
fn the_multi_objective_tpe_split_is_optunas() {
    let space = BTreeMap::from([(
        "x".to_owned(),
        ParamSpec::Uniform {
            low: 0.0,
            high: 1.0,
        },
    )]);
    let mut tpe = Tpe::new(space, 0, Mode::Min, TpeSpec::default())
        .with_objectives(vec![Mode::Min, Mode::Min]);
    for (i, v) in SPLIT_VALUES.iter().enumerate() {
        let p = tpe.suggest(i as u32);
        tpe.started(i as u32, &p);
        tpe.observe(
            i as u32,
            Ended::Scored {
                values: v.to_vec(),
                violation: 0.0,
            },
        );
    }
    let ids: Vec<i64> = (0..40).collect();
    let good: Vec<usize> = tpe
        .rank_objectives(&ids, 9)
        .into_iter()
        .filter(|(_, g)| *g)
        .map(|(n, _)| n as usize)
        .collect();
    assert_eq!(good, SPLIT_BELOW_9);
}

pub(super) const N_VARS: usize = 10;
const N_TRIALS: u32 = 200;
const REFERENCE: [f64; 2] = [1.1, 11.0];

/// ZDT1 (`which` = 1, a convex front) or ZDT2 (a concave one) over x00..x09.
pub(super) fn zdt(which: u8, p: &Params) -> Vec<f64> {
    let x: Vec<f64> = p.values().map(|v| v.as_f64().unwrap()).collect();
    let g = 1.0 + 9.0 * x[1..].iter().sum::<f64>() / (N_VARS - 1) as f64;
    let h = if which == 1 {
        1.0 - (x[0] / g).sqrt()
    } else {
        1.0 - (x[0] / g).powi(2)
    };
    vec![x[0], g * h]
}

/// The ZDT problems' space: x00..x09 uniform in [0, 1].
pub(super) fn zdt_space() -> BTreeMap<String, ParamSpec> {
    (0..N_VARS)
        .map(|k| {
            (
                format!("x{k:02}"),
                ParamSpec::Uniform {
                    low: 0.0,
                    high: 1.0,
                },
            )
        })
        .collect()
}

/// Trials one after another (as Optuna's `optimize` with one worker); the final
/// hypervolume of all of them.
fn run(which: u8, mut s: Box<dyn Searcher>) -> f64 {
    let mut seen = Vec::new();
    for i in 0..N_TRIALS {
        let p = s.suggest(i);
        s.started(i, &p);
        let values = zdt(which, &p);
        seen.push(values.clone());
        s.observe(
            i,
            Ended::Scored {
                values,
                violation: 0.0,
            },
        );
    }
    pareto::hypervolume(&seen, &REFERENCE)
}

/// numpy's default (linear) percentile.
fn percentile(v: &[f64], q: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let pos = q * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

#[test]
fn zdt_hypervolumes_reach_optunas_quartiles() {
    let modes = vec![Mode::Min, Mode::Min];
    let mut report = String::new();
    let mut short = Vec::new();
    for (which, sampler, optuna) in [
        (1, "nsga2", ZDT1_NSGA2_HV),
        (1, "tpe", ZDT1_TPE_HV),
        (2, "nsga2", ZDT2_NSGA2_HV),
        (2, "tpe", ZDT2_TPE_HV),
    ] {
        let hv: Vec<f64> = (0..10u64)
            .map(|seed| {
                let s: Box<dyn Searcher> = if sampler == "nsga2" {
                    Box::new(Nsga2::new(
                        zdt_space(),
                        seed,
                        modes.clone(),
                        Nsga2Spec::default(),
                    ))
                } else {
                    Box::new(
                        Tpe::new(zdt_space(), seed, Mode::Min, TpeSpec::default())
                            .with_objectives(modes.clone()),
                    )
                };
                run(which, s)
            })
            .collect();
        let (q1, med, q3) = (
            percentile(&optuna, 0.25),
            percentile(&optuna, 0.5),
            percentile(&optuna, 0.75),
        );
        let (r1, rm, r3) = (
            percentile(&hv, 0.25),
            percentile(&hv, 0.5),
            percentile(&hv, 0.75),
        );
        report += &format!(
            "ZDT{which} {sampler:5}: Ridgeline median {rm:.4} [{r1:.4}, {r3:.4}]; Optuna median {med:.4} [{q1:.4}, {q3:.4}]\n"
        );
        // Within Optuna's interquartile range, or above it (a larger hypervolume is better).
        if rm < q1 {
            short.push(format!("ZDT{which} {sampler}"));
        }
    }
    eprint!("{report}");
    assert!(
        short.is_empty(),
        "below Optuna's lower quartile: {short:?}\n{report}"
    );
}
