//! NSGA-II, as Optuna's `NSGAIISampler` (Optuna 5.1, `samplers/nsgaii`): the first
//! generation is drawn at random; each later child is bred from the elite of the
//! generations before it: two parents picked by binary tournament (constraint
//! dominance), uniform crossover with probability `crossover_prob` (else a copy of one
//! parent), and each parameter drawn afresh with probability `mutation_prob`.
//!
//! The elite is Optuna's: the previous generation together with its parents, ranked by
//! constrained non-domination; whole ranks while they fit, the rank that overflows cut
//! by crowding distance.
//!
//! One difference, for restarts and parallel workers: trial `i` belongs to generation
//! `i / population_size` (Optuna counts a generation full after `population_size`
//! completed trials, which depends on the order results arrived in). The parents of a
//! generation are computed from the trials that have ended when a child is asked for,
//! so the state is the set of results, rebuilt exactly after a coordinator restart; a
//! generation whose every trial of the generations before has ended is cached.

use std::collections::BTreeMap;

use ridgeline_common::params::{ParamValue, Params};
use ridgeline_common::pareto;
use ridgeline_common::rng::Rng;
use ridgeline_common::spec::{Mode, Nsga2Spec, ParamSpec};

use super::{Ended, Searcher, random_params, sample};

/// A trial's result as the elite sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    /// Its objective values (raw: crowding distances are taken on these).
    pub values: Vec<f64>,
    /// The same as losses (maximised objectives negated): ranks are taken on these.
    pub losses: Vec<f64>,
    /// How far from feasible; 0 when feasible.
    pub violation: f64,
}

/// Optuna's `_constrained_dominates` (with no constraints, plain dominance): a feasible
/// trial beats an infeasible one, two infeasible ones compare by violation.
pub fn constrained_dominates(a: &Member, b: &Member) -> bool {
    match (a.violation <= 0.0, b.violation <= 0.0) {
        (true, true) => pareto::dominates(&a.losses, &b.losses),
        (true, false) => true,
        (false, true) => false,
        (false, false) => a.violation < b.violation,
    }
}

/// The elite of `population` (Optuna's `_select_elite_population`): positions into it,
/// whole constrained non-domination ranks in population order while they fit, then the
/// members of the overflowing rank with the largest crowding distances.
pub fn elite(population: &[Member], size: usize) -> Vec<usize> {
    let losses: Vec<Vec<f64>> = population.iter().map(|m| m.losses.clone()).collect();
    let violation: Vec<f64> = population.iter().map(|m| m.violation).collect();
    let rank = pareto::constrained_ranks(&losses, &violation);
    let ranks = rank.iter().max().map_or(0, |r| r + 1);
    let mut out = Vec::with_capacity(size);
    for r in 0..ranks {
        let group: Vec<usize> = (0..population.len()).filter(|&i| rank[i] == r).collect();
        if out.len() + group.len() < size {
            out.extend(group);
        } else {
            let values: Vec<Vec<f64>> = population.iter().map(|m| m.values.clone()).collect();
            let sorted = pareto::crowding_sort(&group, &values);
            out.extend(sorted.iter().take(size - out.len()).map(|(i, _)| *i));
            break;
        }
    }
    out
}

/// Optuna's `_select_parent`: of the two candidates at positions `c0` and `c1`, the
/// first if it dominates the second, else the second.
pub fn tournament(candidates: &[&Member], c0: usize, c1: usize) -> usize {
    if constrained_dominates(candidates[c0], candidates[c1]) {
        c0
    } else {
        c1
    }
}

/// Uniform crossover (Optuna's `UniformCrossover` and its inlined categorical form):
/// parameter `j` comes from the second parent where `u[j] >= swapping_prob`.
pub fn uniform_crossover<T: Clone>(p0: &[T], p1: &[T], u: &[f64], swapping_prob: f64) -> Vec<T> {
    (0..p0.len())
        .map(|j| {
            if u[j] >= swapping_prob {
                p1[j].clone()
            } else {
                p0[j].clone()
            }
        })
        .collect()
}

#[derive(Clone, Debug)]
struct Trial {
    params: Params,
    /// `None` while running; `Some(None)` when it ended without a result.
    result: Option<Option<Member>>,
}

/// The NSGA-II searcher.
pub struct Nsga2 {
    space: BTreeMap<String, ParamSpec>,
    seed: u64,
    modes: Vec<Mode>,
    cfg: Nsga2Spec,
    /// By trial number; a warm start's trials at negative numbers (generation -1).
    trials: BTreeMap<i64, Trial>,
    /// Parent populations (trial numbers) of generations that can no longer change.
    settled: BTreeMap<i64, Vec<i64>>,
}

impl Nsga2 {
    /// A searcher over `space` for objectives of these modes.
    pub fn new(
        space: BTreeMap<String, ParamSpec>,
        seed: u64,
        modes: Vec<Mode>,
        cfg: Nsga2Spec,
    ) -> Self {
        Nsga2 {
            space,
            seed,
            modes,
            cfg,
            trials: BTreeMap::new(),
            settled: BTreeMap::new(),
        }
    }

    fn generation(&self, n: i64) -> i64 {
        if n < 0 {
            -1
        } else {
            n / i64::from(self.cfg.population_size)
        }
    }

    /// The completed members of generation `g`, in trial order.
    fn population(&self, g: i64) -> Vec<i64> {
        self.trials
            .iter()
            .filter(|(n, t)| self.generation(**n) == g && matches!(t.result, Some(Some(_))))
            .map(|(n, _)| *n)
            .collect()
    }

    fn member(&self, n: i64) -> &Member {
        match &self.trials[&n].result {
            Some(Some(m)) => m,
            _ => unreachable!("only completed trials join populations"),
        }
    }

    /// The parents of generation `g`: the elite of generation `g - 1` and its own
    /// parents (generation 0's parents: the warm start's trials, if any).
    fn parents(&mut self, g: i64) -> Vec<i64> {
        if g < 0 {
            return vec![];
        }
        if let Some(p) = self.settled.get(&g) {
            return p.clone();
        }
        let mut pool = self.population(g - 1);
        pool.extend(self.parents(g - 1));
        let members: Vec<Member> = pool.iter().map(|&n| self.member(n).clone()).collect();
        let chosen: Vec<i64> = elite(&members, self.cfg.population_size as usize)
            .into_iter()
            .map(|k| pool[k])
            .collect();
        // Optuna keeps parents in trial order.
        let mut chosen = chosen;
        chosen.sort_unstable();
        let first = g * i64::from(self.cfg.population_size);
        let done = self.trials.range(..first).all(|(_, t)| t.result.is_some());
        if done {
            self.settled.insert(g, chosen.clone());
        }
        chosen
    }

    /// A child of `parents` (trial numbers), with `rng` for the breeding draws.
    fn breed(&self, parents: &[i64], rng: &mut Rng) -> Params {
        let names: Vec<&String> = self.space.keys().collect();
        let pick = |rng: &mut Rng, pool: &[i64]| -> i64 {
            let members: Vec<&Member> = pool.iter().map(|&n| self.member(n)).collect();
            let c0 = rng.below(pool.len() as u64) as usize;
            let c1 = rng.below(pool.len() as u64) as usize;
            pool[tournament(&members, c0, c1)]
        };
        let mut child: Params = if rng.next_f64() < self.cfg.crossover_prob && parents.len() > 1 {
            let a = pick(rng, parents);
            let rest: Vec<i64> = parents.iter().copied().filter(|&n| n != a).collect();
            let b = pick(rng, &rest);
            let (pa, pb) = (&self.trials[&a].params, &self.trials[&b].params);
            // Choices first, then numbers, each with its own mask (as Optuna).
            let (cat, num): (Vec<&String>, Vec<&String>) = names.iter().partition(|n| {
                matches!(
                    self.space[**n],
                    ParamSpec::Choice { .. } | ParamSpec::Grid { .. }
                )
            });
            let mut out = Params::new();
            for group in [cat, num] {
                let u: Vec<f64> = group.iter().map(|_| rng.next_f64()).collect();
                let from = |p: &Params| -> Vec<Option<ParamValue>> {
                    group.iter().map(|n| p.get(*n).cloned()).collect()
                };
                let mixed = uniform_crossover(&from(pa), &from(pb), &u, self.cfg.swapping_prob);
                for (n, v) in group.iter().zip(mixed) {
                    if let Some(v) = v {
                        out.insert((*n).clone(), v);
                    }
                }
            }
            out
        } else {
            let p = parents[rng.below(parents.len() as u64) as usize];
            self.trials[&p].params.clone()
        };
        let mutation = self
            .cfg
            .mutation_prob
            .unwrap_or(1.0 / names.len().max(1) as f64);
        for n in &names {
            if rng.next_f64() < mutation {
                child.remove(*n);
            }
        }
        // Mutated parameters, and any a parent lacked, are drawn afresh.
        for (n, spec) in &self.space {
            if !child.contains_key(n) {
                child.insert(n.clone(), sample(spec, rng));
            }
        }
        child
    }

    fn result(&self, ended: Ended) -> Option<Member> {
        let (values, violation) = match ended {
            Ended::Completed(v) => (vec![v], 0.0),
            Ended::Infeasible { value, violation } => (vec![value], violation),
            Ended::Scored { values, violation } => (values, violation),
            Ended::Pruned { .. } | Ended::Failed => return None,
        };
        if values.len() != self.modes.len() || values.iter().any(|v| !v.is_finite()) {
            return None;
        }
        Some(Member {
            losses: pareto::losses(&values, &self.modes),
            values,
            violation,
        })
    }
}

impl Searcher for Nsga2 {
    fn suggest(&mut self, i: u32) -> Params {
        let g = self.generation(i64::from(i));
        let parents = self.parents(g);
        if parents.is_empty() {
            // Generation 0 (or nothing completed yet): Optuna's random sampler, the
            // same draws as `random`.
            return random_params(&self.space, self.seed, i);
        }
        let mut rng = Rng::stream(self.seed ^ 0x6e73_6761_325f_6e73, u64::from(i));
        self.breed(&parents, &mut rng)
    }

    fn started(&mut self, i: u32, params: &Params) {
        self.trials.insert(
            i64::from(i),
            Trial {
                params: params.clone(),
                result: None,
            },
        );
    }

    fn observe(&mut self, i: u32, ended: Ended) {
        let r = self.result(ended);
        if let Some(t) = self.trials.get_mut(&i64::from(i)) {
            t.result = Some(r);
        }
    }

    fn warm(&mut self, params: &Params, ended: Ended) {
        let n = self.trials.keys().next().map_or(-1, |&k| k.min(0) - 1);
        let r = self.result(ended);
        let params: Params = params
            .iter()
            .filter(|(k, _)| self.space.contains_key(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if params.is_empty() {
            return;
        }
        self.trials.insert(
            n,
            Trial {
                params,
                result: Some(r),
            },
        );
    }
}

#[cfg(test)]
mod tests;
