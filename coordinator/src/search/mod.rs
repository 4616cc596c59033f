//! Search algorithms: what parameters trial `i` gets.
//!
//! Both algorithms here are stateless functions of `(spec, i)`: trial `i` always gets the
//! same parameters, whichever order trials are generated in and however often the
//! coordinator restarts. Adaptive algorithms (TPE, ASHA) will add state fed by
//! [`Searcher::observe`].

use ridgeline_common::params::{ParamValue, Params};
use ridgeline_common::rng::Rng;
use ridgeline_common::spec::{Algorithm, ParamSpec, SweepKind, SweepSpec};

mod grid;
mod random;

use grid::GridSearch;
use random::RandomSearch;

/// Proposes trial parameters.
pub trait Searcher: Send {
    /// Parameters of trial `i` (`i` below the sweep's total).
    fn suggest(&mut self, i: u32) -> Params;
    /// A finished trial's metric value; stateless searchers ignore it.
    fn observe(&mut self, _i: u32, _value: f64) {}
}

/// The searcher a spec asks for.
pub fn searcher_for(spec: &SweepSpec) -> Box<dyn Searcher> {
    if spec.kind == SweepKind::Landscape {
        return Box::new(Tiles);
    }
    match spec.search.algorithm {
        Algorithm::Grid => Box::new(GridSearch {
            grid: spec.grid(),
            space: spec.search.space.clone(),
            seed: spec.search.seed,
        }),
        Algorithm::Random => Box::new(RandomSearch {
            space: spec.search.space.clone(),
            seed: spec.search.seed,
        }),
    }
}

/// The units of a landscape scan: unit `i` is tile `i`.
struct Tiles;

/// The parameter that carries a scan unit's tile index.
pub const TILE_PARAM: &str = "tile";

impl Searcher for Tiles {
    fn suggest(&mut self, i: u32) -> Params {
        Params::from([(TILE_PARAM.to_owned(), ParamValue::Int(i64::from(i)))])
    }
}

/// One draw from a dimension of the space.
pub fn sample(spec: &ParamSpec, rng: &mut Rng) -> ParamValue {
    match spec {
        ParamSpec::Uniform { low, high } => ParamValue::Float(low + (high - low) * rng.next_f64()),
        ParamSpec::Loguniform { low, high } => {
            let (a, b) = (low.ln(), high.ln());
            // exp(ln high) can round above high; the interval is half-open.
            ParamValue::Float((a + (b - a) * rng.next_f64()).exp().min(*high).max(*low))
        }
        ParamSpec::Int { low, high } => {
            let span = (high - low) as u64 + 1;
            ParamValue::Int(low + rng.below(span) as i64)
        }
        ParamSpec::Choice { values } | ParamSpec::Grid { values } => {
            values[rng.below(values.len() as u64) as usize].clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(algo: &str, n: u32) -> SweepSpec {
        SweepSpec::from_toml(&format!(
            r#"
name = "s"
data = {{ path = "x.csv" }}
[search]
algorithm = "{algo}"
num_samples = {n}
seed = 3
[search.space]
lr = {{ type = "loguniform", low = 1e-4, high = 1e-1 }}
depth = {{ type = "int", low = 1, high = 3 }}
width = {{ type = "grid", values = [8, 16, 32] }}
"#
        ))
        .unwrap()
    }

    #[test]
    fn grid_covers_each_point_num_samples_times() {
        let s = spec("grid", 2);
        assert_eq!(s.total_trials(), 6);
        let mut g = searcher_for(&s);
        let widths: Vec<i64> = (0..6)
            .map(|i| g.suggest(i)["width"].as_i64().unwrap())
            .collect();
        assert_eq!(widths, vec![8, 16, 32, 8, 16, 32]);
    }

    #[test]
    fn draws_are_in_range_and_reproducible() {
        let s = spec("random", 500);
        let mut a = searcher_for(&s);
        let mut b = searcher_for(&s);
        let mut depths = [0; 4];
        let mut log_lrs = Vec::new();
        for i in 0..500 {
            let p = a.suggest(i);
            assert_eq!(p, b.suggest(i), "trial {i} not reproducible");
            let lr = p["lr"].as_f64().unwrap();
            assert!((1e-4..1e-1).contains(&lr), "{lr}");
            log_lrs.push(lr.log10());
            depths[p["depth"].as_i64().unwrap() as usize] += 1;
        }
        // log10(lr) is uniform on [-4, -1): mean -2.5, and every integer depth 1..=3 occurs.
        let m = log_lrs.iter().sum::<f64>() / 500.0;
        assert!((m + 2.5).abs() < 0.15, "mean log lr {m}");
        assert_eq!(depths[0], 0);
        assert!(depths[1..].iter().all(|&c| c > 120), "{depths:?}");
        // Order independence: trial 7 is the same when asked first.
        assert_eq!(searcher_for(&s).suggest(7), a.suggest(7));
    }
}
