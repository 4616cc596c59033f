//! Search algorithms: what parameters trial `i` gets.
//!
//! Grid, random and Sobol search are stateless functions of `(spec, i)`: trial `i`
//! always gets the same parameters, whichever order trials are generated in and however
//! often the coordinator restarts. TPE learns from results ([`Searcher::observe`]); its
//! state is rebuilt from the stored trials after a restart, and it is deterministic for
//! a seed given the order in which results arrived.

use std::collections::BTreeMap;

use ridgeline_common::params::{ParamValue, Params};
use ridgeline_common::rng::Rng;
use ridgeline_common::spec::{Algorithm, ParamSpec, SweepKind, SweepSpec};

mod grid;
#[cfg(test)]
mod moo_tests;
mod nsga2;
mod pbt;
mod random;
mod sobol;
pub mod tpe;

use grid::GridSearch;
use nsga2::Nsga2;
use pbt::Pbt;
use random::RandomSearch;
use sobol::SobolSearch;
use tpe::Tpe;

/// How a trial ended, as a searcher learns it.
#[derive(Clone, Debug, PartialEq)]
pub enum Ended {
    /// Completed with this value of the sweep's metric.
    Completed(f64),
    /// Completed, but outside the sweep's constraints by `violation` (> 0).
    Infeasible {
        /// Its value of the sweep's metric.
        value: f64,
        /// How far from feasible ([`ridgeline_common::spec::SearchSpec::violation`]).
        violation: f64,
    },
    /// Stopped early by the scheduler, last reporting `value` at `step`.
    Pruned {
        /// Its last reported step.
        step: u32,
        /// The metric's value there.
        value: f64,
    },
    /// Completed, in a multi-objective search: its value of each objective (in the
    /// spec's order and units), and how far it is from feasible (0: feasible).
    Scored {
        /// One value per objective.
        values: Vec<f64>,
        /// As in [`Ended::Infeasible`]; 0 when feasible.
        violation: f64,
    },
    /// Failed, diverged or cancelled: it says nothing about the objective.
    Failed,
}

impl Ended {
    /// Whether the trial ran to its end with a result (feasible or not).
    pub fn completed(&self) -> bool {
        matches!(
            self,
            Ended::Completed(_) | Ended::Infeasible { .. } | Ended::Scored { .. }
        )
    }
}

/// Proposes trial parameters. Lives in the pure core: no I/O, no clock.
pub trait Searcher: Send {
    /// Parameters of trial `i` (`i` below the sweep's total), given what was observed.
    fn suggest(&mut self, i: u32) -> Params;
    /// Trial `i` runs with these parameters: called after `suggest`'s result was taken,
    /// and for every stored trial when the core is rebuilt after a restart.
    fn started(&mut self, _i: u32, _params: &Params) {}
    /// Trial `i` ended; adaptive searchers learn from it.
    fn observe(&mut self, _i: u32, _ended: Ended) {}
    /// A trial of another sweep (a warm start), given before this sweep's first
    /// suggestion; adaptive searchers learn from it as from an older trial of their own.
    fn warm(&mut self, _params: &Params, _ended: Ended) {}
}

/// The searcher a spec asks for.
pub fn searcher_for(spec: &SweepSpec) -> Box<dyn Searcher> {
    if spec.kind == SweepKind::Landscape {
        return Box::new(Tiles);
    }
    let s = &spec.search;
    let inner: Box<dyn Searcher> = match s.algorithm {
        Algorithm::Grid => Box::new(GridSearch {
            grid: spec.grid(),
            space: s.space.clone(),
            seed: s.seed(),
        }),
        Algorithm::Random => Box::new(RandomSearch {
            space: s.space.clone(),
            seed: s.seed(),
        }),
        Algorithm::Sobol => Box::new(SobolSearch::new(s.space.clone(), s.seed())),
        Algorithm::Tpe => Box::new(
            Tpe::new(s.space.clone(), s.seed(), spec.mode(), s.tpe.clone())
                .with_objectives(spec.modes())
                .with_conditions(s.clone()),
        ),
        Algorithm::Pbt => Box::new(Pbt::new(
            s.space.clone(),
            s.seed(),
            spec.mode(),
            s.num_samples,
            s.pbt.clone(),
        )),
        Algorithm::Nsga2 => Box::new(Nsga2::new(
            s.space.clone(),
            s.seed(),
            spec.modes(),
            s.nsga2.clone(),
        )),
    };
    let mut inner = inner;
    for w in &s.warm {
        let ended = if w.values.is_empty() {
            Ended::Completed(w.value)
        } else {
            Ended::Scored {
                values: w.values.clone(),
                violation: 0.0,
            }
        };
        inner.warm(&w.params, ended);
    }
    if !s.enqueue.is_empty() || !s.queued.is_empty() {
        inner = Box::new(Given {
            inner,
            search: s.clone(),
        });
    }
    if s.conditions.is_empty() {
        inner
    } else {
        Box::new(Conditional {
            inner,
            search: s.clone(),
        })
    }
}

/// A searcher some of whose trials have given configurations (`enqueue`): those run as
/// given, a parameter they leave out drawn by the inner searcher.
struct Given {
    inner: Box<dyn Searcher>,
    search: ridgeline_common::spec::SearchSpec,
}

impl Searcher for Given {
    fn suggest(&mut self, i: u32) -> Params {
        let Some(given) = self.search.given(i) else {
            return self.inner.suggest(i);
        };
        let mut p = given.clone();
        if self.search.space.keys().any(|k| !p.contains_key(k)) {
            for (k, v) in self.inner.suggest(i) {
                p.entry(k).or_insert(v);
            }
        }
        p
    }

    fn started(&mut self, i: u32, params: &Params) {
        self.inner.started(i, params);
    }

    fn observe(&mut self, i: u32, ended: Ended) {
        self.inner.observe(i, ended);
    }
}

/// A searcher over a space with conditional parameters: what the inner searcher draws
/// for a parameter whose condition does not hold is dropped.
struct Conditional {
    inner: Box<dyn Searcher>,
    search: ridgeline_common::spec::SearchSpec,
}

impl Searcher for Conditional {
    fn suggest(&mut self, i: u32) -> Params {
        let mut p = self.inner.suggest(i);
        self.search.drop_inactive(&mut p);
        p
    }

    fn started(&mut self, i: u32, params: &Params) {
        self.inner.started(i, params);
    }

    fn observe(&mut self, i: u32, ended: Ended) {
        self.inner.observe(i, ended);
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

/// The value at position `u` in [0, 1) of a dimension: the inverse of its uniform
/// (or log-uniform) distribution, for quasi-random points.
pub fn from_unit(spec: &ParamSpec, u: f64) -> ParamValue {
    let u = u.clamp(0.0, 1.0 - f64::EPSILON);
    match spec {
        ParamSpec::Uniform { low, high } => ParamValue::Float(low + (high - low) * u),
        ParamSpec::Loguniform { low, high } => {
            let (a, b) = (low.ln(), high.ln());
            ParamValue::Float((a + (b - a) * u).exp().min(*high).max(*low))
        }
        ParamSpec::Int { low, high } => {
            let span = (high - low) as f64 + 1.0;
            ParamValue::Int((low + (u * span) as i64).min(*high))
        }
        ParamSpec::Choice { values } | ParamSpec::Grid { values } => {
            values[((u * values.len() as f64) as usize).min(values.len() - 1)].clone()
        }
    }
}

/// Trial `i`'s parameters drawn at random from `space` (random search, and the random
/// phases of the adaptive searchers: the same draws for the same seed and trial).
pub fn random_params(space: &BTreeMap<String, ParamSpec>, seed: u64, i: u32) -> Params {
    let mut rng = Rng::stream(seed, u64::from(i));
    space
        .iter()
        .map(|(name, spec)| (name.clone(), sample(spec, &mut rng)))
        .collect()
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

    fn conditional(algo: &str) -> SweepSpec {
        SweepSpec::from_toml(&format!(
            r#"
name = "c"
[trial]
command = ["true"]
[search]
algorithm = "{algo}"
metric = "loss"
num_samples = 120
[search.space]
optimizer = {{ type = "choice", values = ["sgd", "adamw", "rmsprop"] }}
momentum = {{ type = "uniform", low = 0.0, high = 0.99 }}
lr = {{ type = "loguniform", low = 1e-4, high = 1.0 }}
[search.conditions]
momentum = {{ optimizer = ["sgd", "rmsprop"] }}
"#
        ))
        .unwrap()
    }

    #[test]
    fn conditional_parameters_exist_only_when_their_condition_holds() {
        for algo in ["random", "sobol", "grid", "tpe"] {
            let spec = conditional(algo);
            let mut s = searcher_for(&spec);
            let mut with = 0;
            for i in 0..120 {
                let p = s.suggest(i);
                s.started(i, &p);
                let opt = p["optimizer"].as_str().unwrap().to_owned();
                assert_eq!(p.contains_key("momentum"), opt != "adamw", "{algo} {p:?}");
                with += usize::from(p.contains_key("momentum"));
                // The objective: adamw is best, and sgd is good only with momentum 0.9.
                let v = match (opt.as_str(), p.get("momentum")) {
                    ("adamw", _) => 1.0,
                    (_, Some(m)) => 1.0 + (m.as_f64().unwrap() - 0.9).abs() * 5.0,
                    _ => unreachable!(),
                } + (p["lr"].as_f64().unwrap().log10() + 2.0).abs();
                s.observe(i, Ended::Completed(v));
            }
            assert!(with > 0, "{algo}: momentum never drawn");
        }
    }

    #[test]
    fn tpe_learns_a_conditional_parameter_from_the_trials_that_had_it() {
        let spec = conditional("tpe");
        let mut s = searcher_for(&spec);
        let mut late = Vec::new();
        for i in 0..150 {
            let p = s.suggest(i);
            s.started(i, &p);
            // Only sgd and rmsprop count here, and momentum 0.9 is best.
            let v = match p.get("momentum") {
                Some(m) => (m.as_f64().unwrap() - 0.9).abs(),
                None => 1.0,
            };
            if i >= 100 {
                if let Some(m) = p.get("momentum") {
                    late.push(m.as_f64().unwrap());
                }
            }
            s.observe(i, Ended::Completed(v));
        }
        late.sort_by(f64::total_cmp);
        let median = late[late.len() / 2];
        // Uniform momentum on [0, 0.99] would sit a median 0.35 from 0.9.
        assert!(late.len() >= 25 && (median - 0.9).abs() < 0.15, "{late:?}");
    }
}
