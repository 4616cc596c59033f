//! NSGA-II against Optuna's own operators, and its behaviour on ZDT problems.

use super::*;
use crate::search::moo_tests::{zdt, zdt_space};

fn cfg(population: u32) -> Nsga2Spec {
    Nsga2Spec {
        population_size: population,
        ..Nsga2Spec::default()
    }
}

#[test]
fn children_depend_on_the_results_not_on_their_order() {
    let run = |reverse: bool| {
        let mut s = Nsga2::new(zdt_space(), 11, vec![Mode::Min, Mode::Min], cfg(8));
        let mut out = Vec::new();
        for g in 0..4u32 {
            let ids: Vec<u32> = (g * 8..g * 8 + 8).collect();
            let ps: Vec<Params> = ids
                .iter()
                .map(|&i| {
                    let p = s.suggest(i);
                    s.started(i, &p);
                    p
                })
                .collect();
            let mut order: Vec<usize> = (0..8).collect();
            if reverse {
                order.reverse();
            }
            for k in order {
                let values = zdt(1, &ps[k]);
                s.observe(
                    ids[k],
                    Ended::Scored {
                        values,
                        violation: 0.0,
                    },
                );
            }
            out.extend(ps);
        }
        out
    };
    let (a, b) = (run(false), run(true));
    assert_eq!(a, b);
    // Generation 0 is random; later children reuse parents' values (crossover copies
    // them exactly), so most of their coordinates occurred before.
    let seen: std::collections::BTreeSet<u64> = a[..8]
        .iter()
        .flat_map(|p| p.values().map(|v| v.as_f64().unwrap().to_bits()))
        .collect();
    let reused = a[8..16]
        .iter()
        .flat_map(|p| p.values())
        .filter(|v| seen.contains(&v.as_f64().unwrap().to_bits()))
        .count();
    assert!(
        reused >= 8 * 5 / 2,
        "only {reused} of 40 coordinates come from parents"
    );
}
