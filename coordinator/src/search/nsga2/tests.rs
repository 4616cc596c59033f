//! NSGA-II against Optuna's own operators, and its behaviour on ZDT problems.

use super::*;

fn space(n: usize) -> BTreeMap<String, ParamSpec> {
    (0..n)
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

fn cfg(population: u32) -> Nsga2Spec {
    Nsga2Spec {
        population_size: population,
        ..Nsga2Spec::default()
    }
}

/// ZDT1 (Zitzler, Deb, Thiele 2000): a convex front f2 = 1 - sqrt(f1) at g = 1.
pub(crate) fn zdt1(p: &Params) -> Vec<f64> {
    let x: Vec<f64> = p.values().map(|v| v.as_f64().unwrap()).collect();
    let g = 1.0 + 9.0 * x[1..].iter().sum::<f64>() / (x.len() - 1) as f64;
    vec![x[0], g * (1.0 - (x[0] / g).sqrt())]
}

#[test]
fn children_depend_on_the_results_not_on_their_order() {
    let run = |reverse: bool| {
        let mut s = Nsga2::new(space(5), 11, vec![Mode::Min, Mode::Min], cfg(8));
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
                let values = zdt1(&ps[k]);
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
