//! Population based training (Jaderberg et al. 2017; Ray Tune's
//! `PopulationBasedTraining`), in synchronous rounds: a population of `P` members trains
//! round after round, each (member, round) a trial of its own, `i = round·P + member`.
//! Round 0 draws every member at random. When round `r − 1` has ended, each member of
//! round `r` is decided from its results: a member in the bottom quantile *exploits* a
//! member of the top quantile (drawn at random) — it starts from that member's
//! checkpoint (its trial folder, which the worker copies) with its hyperparameters
//! *explored* (each resampled with `resample_probability`, else a number multiplied by
//! one of `perturbation_factors`, a choice moved to a neighbouring value); every other
//! member continues from its own checkpoint with its own hyperparameters. The trial it
//! starts from is its parameter `pbt_parent`.
//!
//! The decision for trial `i` is a function of the seed and the results of round
//! `r − 1`, which are final before any trial of round `r` exists (the core releases a
//! round only when the previous one has ended): a trial decided before a coordinator
//! restart is stored with its parameters, and one decided after it is decided the same.

use std::collections::BTreeMap;

use ridgeline_common::params::{ParamValue, Params};
use ridgeline_common::rng::Rng;
use ridgeline_common::spec::{Mode, PBT_PARENT, ParamSpec, PbtSpec};

use super::{Ended, Searcher, random_params, sample};

/// The PBT searcher.
pub struct Pbt {
    space: BTreeMap<String, ParamSpec>,
    seed: u64,
    mode: Mode,
    cfg: PbtSpec,
    population: u32,
    /// Every trial's parameters (as started) and final value (`None` until it completes,
    /// or when it ended without one).
    trials: BTreeMap<u32, (Params, Option<f64>)>,
}

impl Pbt {
    /// A population of `population` members over `space`.
    pub fn new(
        space: BTreeMap<String, ParamSpec>,
        seed: u64,
        mode: Mode,
        population: u32,
        cfg: PbtSpec,
    ) -> Self {
        Pbt {
            space,
            seed,
            mode,
            cfg,
            population,
            trials: BTreeMap::new(),
        }
    }

    /// Round `r − 1`'s trials from best to worst: completed ones by value (ties by trial
    /// number), then those without a result.
    fn ranked(&self, round: u32) -> Vec<u32> {
        let p = self.population;
        let mut ids: Vec<(Option<f64>, u32)> = ((round - 1) * p..round * p)
            .map(|t| (self.trials.get(&t).and_then(|(_, v)| *v), t))
            .collect();
        ids.sort_by(|a, b| match (a.0, b.0) {
            (Some(x), Some(y)) => {
                let better = |u: f64, v: f64| self.mode.better(u, v);
                if better(x, y) {
                    std::cmp::Ordering::Less
                } else if better(y, x) {
                    std::cmp::Ordering::Greater
                } else {
                    a.1.cmp(&b.1)
                }
            }
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => a.1.cmp(&b.1),
        });
        ids.into_iter().map(|(_, t)| t).collect()
    }

    /// Ray's quantile size: ⌈P·fraction⌉, at most ⌊P/2⌋ (top and bottom never overlap).
    fn quantile(&self) -> usize {
        let p = self.population as usize;
        ((p as f64 * self.cfg.quantile_fraction).ceil() as usize).min(p / 2)
    }

    /// Member `m`'s trial of round `r ≥ 1`: continue, or exploit and explore.
    fn decide(&self, i: u32) -> Params {
        let p = self.population;
        let (round, member) = (i / p, i % p);
        let ranked = self.ranked(round);
        let q = self.quantile();
        let own = (round - 1) * p + member;
        let params_of = |t: u32| -> Params {
            let mut x = self
                .trials
                .get(&t)
                .map(|(x, _)| x.clone())
                .unwrap_or_default();
            x.remove(PBT_PARENT);
            x
        };
        let mut rng = Rng::stream(self.seed ^ 0x7062_745f_7062_745f, u64::from(i));
        let (parent, mut params) = if ranked[ranked.len() - q..].contains(&own) {
            let donor = ranked[rng.below(q as u64) as usize];
            (donor, self.explore(params_of(donor), &mut rng))
        } else {
            (own, params_of(own))
        };
        params.insert(PBT_PARENT.to_owned(), ParamValue::Int(i64::from(parent)));
        params
    }

    /// Ray's `_explore`: each mutable hyperparameter resampled with
    /// `resample_probability`, else perturbed (numbers times a factor, kept in range;
    /// choices moved one place up or down their list).
    fn explore(&self, mut params: Params, rng: &mut Rng) -> Params {
        for (name, spec) in &self.space {
            let mutable = self.cfg.hyperparam_mutations.is_empty()
                || self.cfg.hyperparam_mutations.contains(name);
            if !mutable {
                continue;
            }
            let Some(v) = params.get(name).cloned() else {
                params.insert(name.clone(), sample(spec, rng));
                continue;
            };
            let new = if rng.next_f64() < self.cfg.resample_probability {
                sample(spec, rng)
            } else {
                perturb(spec, &v, &self.cfg.perturbation_factors, rng)
            };
            params.insert(name.clone(), new);
        }
        params
    }
}

/// A perturbed value: a number times one of `factors` (kept within its range), a choice
/// one place up or down its list (kept within it).
fn perturb(spec: &ParamSpec, v: &ParamValue, factors: &[f64], rng: &mut Rng) -> ParamValue {
    let factor = factors[rng.below(factors.len() as u64) as usize];
    match spec {
        ParamSpec::Uniform { low, high } | ParamSpec::Loguniform { low, high } => {
            let x = v.as_f64().unwrap_or(*low) * factor;
            // The range is half-open: the largest double below `high` stands for it.
            ParamValue::Float(x.clamp(*low, f64::from_bits(high.to_bits() - 1)))
        }
        ParamSpec::Int { low, high } => {
            let x = (v.as_f64().unwrap_or(*low as f64) * factor).round() as i64;
            ParamValue::Int(x.clamp(*low, *high))
        }
        ParamSpec::Choice { values } | ParamSpec::Grid { values } => {
            let at = values.iter().position(|c| c == v).unwrap_or(0);
            let up = rng.below(2) == 1;
            let to = if up {
                (at + 1).min(values.len() - 1)
            } else {
                at.saturating_sub(1)
            };
            values[to].clone()
        }
    }
}

impl Searcher for Pbt {
    fn suggest(&mut self, i: u32) -> Params {
        if i < self.population {
            return random_params(&self.space, self.seed, i);
        }
        self.decide(i)
    }

    fn started(&mut self, i: u32, params: &Params) {
        self.trials.insert(i, (params.clone(), None));
    }

    fn observe(&mut self, i: u32, ended: Ended) {
        let value = match ended {
            Ended::Completed(v) if v.is_finite() => Some(v),
            _ => None,
        };
        if let Some(t) = self.trials.get_mut(&i) {
            t.1 = value;
        }
    }
}

#[cfg(test)]
mod tests;
