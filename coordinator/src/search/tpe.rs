//! Tree-structured Parzen Estimator, as Optuna's `TPESampler` does it (Optuna 5.0,
//! `optuna/samplers/_tpe`): the same startup phase, gamma split, weights, bandwidth rule
//! (with its "magic clip"), prior kernel, truncated-normal and categorical kernels,
//! `n_ei_candidates` draws from the good density and the best ratio l(x)/g(x), in the
//! univariate (one density per parameter) and the multivariate (joint) form.
//!
//! Running trials are treated as Optuna's `constant_liar` does: they join the "bad"
//! group, so that workers asking at the same time are steered away from each other's
//! points. The state is the set of trials with their parameters and outcomes, kept by
//! trial number: a suggestion depends on which results were in when it was made, not on
//! the order they came in, and the core rebuilds it from the store after a restart.

use std::collections::BTreeMap;

use ridgeline_common::params::{ParamValue, Params};
use ridgeline_common::pareto;
use ridgeline_common::rng::Rng;
use ridgeline_common::spec::{Mode, ParamSpec, TpeSpec};

use super::{Ended, Searcher, sample};

mod normal;
mod parzen;

#[cfg(test)]
use normal::{ndtr, ndtri};
use parzen::Parzen;

/// A dimension in the estimator's own coordinates: log-uniform ones on the log scale,
/// integers with a step of 1, choices by index.
#[derive(Clone, Debug)]
enum Dim {
    Num {
        low: f64,
        high: f64,
        /// 1 for integers; `None` for real numbers.
        step: Option<f64>,
        log: bool,
    },
    Cat(Vec<ParamValue>),
}

impl Dim {
    fn of(spec: &ParamSpec) -> Dim {
        match spec {
            ParamSpec::Uniform { low, high } => Dim::Num {
                low: *low,
                high: *high,
                step: None,
                log: false,
            },
            ParamSpec::Loguniform { low, high } => Dim::Num {
                low: low.ln(),
                high: high.ln(),
                step: None,
                log: true,
            },
            ParamSpec::Int { low, high } => Dim::Num {
                low: *low as f64,
                high: *high as f64,
                step: Some(1.0),
                log: false,
            },
            ParamSpec::Choice { values } | ParamSpec::Grid { values } => Dim::Cat(values.clone()),
        }
    }

    /// A parameter value in the estimator's coordinates (`None` if it is not in the
    /// space, e.g. a choice that is not among the values).
    fn encode(&self, v: &ParamValue) -> Option<f64> {
        match self {
            Dim::Num { log: true, .. } => v.as_f64().filter(|x| *x > 0.0).map(f64::ln),
            Dim::Num { .. } => v.as_f64(),
            Dim::Cat(values) => values.iter().position(|c| c == v).map(|i| i as f64),
        }
    }

    /// Whether a coordinate lies in the dimension (a warm start's trial may not).
    fn contains(&self, x: f64) -> bool {
        match self {
            Dim::Num { low, high, .. } => x >= *low && x <= *high,
            Dim::Cat(_) => true,
        }
    }

    fn decode(&self, x: f64, spec: &ParamSpec) -> ParamValue {
        match (self, spec) {
            (Dim::Cat(values), _) => values[(x as usize).min(values.len() - 1)].clone(),
            (Dim::Num { step: Some(_), .. }, ParamSpec::Int { low, high }) => {
                ParamValue::Int((x.round() as i64).clamp(*low, *high))
            }
            (Dim::Num { log, .. }, ParamSpec::Uniform { low, high })
            | (Dim::Num { log, .. }, ParamSpec::Loguniform { low, high }) => {
                let v = if *log { x.exp() } else { x };
                // The space's upper bound is excluded.
                ParamValue::Float(v.clamp(*low, next_down(*high)))
            }
            _ => unreachable!("dimensions are made from their specs"),
        }
    }
}

/// The largest float below `x` (`f64::next_down`, newer than this crate's MSRV).
fn next_down(x: f64) -> f64 {
    if x > 0.0 {
        f64::from_bits(x.to_bits() - 1)
    } else if x == 0.0 {
        -f64::from_bits(1)
    } else {
        f64::from_bits(x.to_bits() + 1)
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum State {
    Running,
    Completed(f64),
    Pruned {
        step: u32,
        value: f64,
    },
    /// Completed outside the constraints, this far from feasible.
    Infeasible(f64),
}

#[derive(Clone, Debug)]
struct Trial {
    /// One coordinate per dimension (`None` where the parameter is missing).
    x: Vec<Option<f64>>,
    state: State,
    /// Several objectives: the completed trial's losses (maximised ones negated).
    losses: Vec<f64>,
}

/// The TPE searcher.
pub struct Tpe {
    names: Vec<String>,
    specs: Vec<ParamSpec>,
    dims: Vec<Dim>,
    seed: u64,
    mode: Mode,
    /// Every objective's mode (one for a single-objective search).
    modes: Vec<Mode>,
    cfg: TpeSpec,
    /// By trial number; a warm start's trials before them, at negative numbers (older).
    trials: BTreeMap<i64, Trial>,
    /// The search, when some parameters are conditional.
    conditions: Option<ridgeline_common::spec::SearchSpec>,
}

impl Tpe {
    /// A searcher over `space`, minimising or maximising as `mode` says.
    pub fn new(space: BTreeMap<String, ParamSpec>, seed: u64, mode: Mode, cfg: TpeSpec) -> Self {
        let (names, specs): (Vec<String>, Vec<ParamSpec>) = space.into_iter().unzip();
        Tpe {
            dims: specs.iter().map(Dim::of).collect(),
            names,
            specs,
            seed,
            mode,
            modes: vec![mode],
            cfg,
            trials: BTreeMap::new(),
            conditions: None,
        }
    }

    /// Makes the parameters named in `search.conditions` conditional: they are drawn
    /// (each from its own density, over the trials that had it) after the others, and
    /// only when their condition holds; Optuna samples such parameters independently too.
    pub fn with_conditions(mut self, search: ridgeline_common::spec::SearchSpec) -> Self {
        if !search.conditions.is_empty() {
            self.conditions = Some(search);
        }
        self
    }

    /// Several objectives with these modes (Optuna's multi-objective TPE): the good
    /// trials are the best non-domination ranks, the last rank cut by hypervolume.
    pub fn with_objectives(mut self, modes: Vec<Mode>) -> Self {
        self.mode = modes[0];
        self.modes = modes;
        self
    }

    fn objectives(&self) -> usize {
        self.modes.len()
    }

    fn conditional(&self, d: usize) -> bool {
        self.conditions
            .as_ref()
            .is_some_and(|s| s.conditions.contains_key(&self.names[d]))
    }

    /// Optuna's `default_gamma`: the best 10 %, at most 25 trials; with several
    /// objectives (`default_gamma_multiobjective`) without the cap.
    fn gamma(&self, n: usize) -> usize {
        if self.objectives() > 1 {
            n.div_ceil(10)
        } else {
            (n.div_ceil(10)).min(25)
        }
    }

    /// Splits the finished trials into the good ("below") and the rest ("above"),
    /// running trials joining the rest; both in trial-number order.
    fn split(&self) -> (Vec<i64>, Vec<i64>) {
        // Larger is better from here on.
        let score = |v: f64| match self.mode {
            Mode::Min => -v,
            Mode::Max => v,
        };
        let mut complete: Vec<(f64, i64)> = Vec::new();
        let mut pruned: Vec<((i64, f64), i64)> = Vec::new();
        let mut running = Vec::new();
        let mut infeasible: Vec<(f64, i64)> = Vec::new();
        for (&n, t) in &self.trials {
            match t.state {
                State::Infeasible(violation) => infeasible.push((violation, n)),
                State::Completed(v) => complete.push((-score(v), n)),
                State::Pruned { step, value } => {
                    let v = if value.is_nan() {
                        f64::INFINITY
                    } else {
                        -score(value)
                    };
                    // Trials that got further rank first, then by their last value.
                    pruned.push(((-i64::from(step), v), n));
                }
                State::Running => running.push(n),
            }
        }
        let mut n_below = self.gamma(complete.len() + pruned.len() + infeasible.len());
        if self.objectives() > 1 {
            // Trial-number order, then the best ranks first.
            let ids: Vec<i64> = complete.iter().map(|c| c.1).collect();
            complete = self
                .rank_objectives(&ids, n_below)
                .into_iter()
                .map(|(n, first)| (if first { 0.0 } else { 1.0 }, n))
                .collect();
        }
        // Stable sorts: ties keep trial-number order, as Python's sorted() does.
        complete.sort_by(|a, b| a.0.total_cmp(&b.0));
        pruned.sort_by(|a, b| a.0.0.cmp(&b.0.0).then(a.0.1.total_cmp(&b.0.1)));
        let mut below = Vec::new();
        let mut above = Vec::new();
        // As Optuna's constraint handling: infeasible trials by their violation.
        infeasible.sort_by(|a, b| a.0.total_cmp(&b.0));
        // Feasible completed trials fill the good group first, then pruned ones, then
        // infeasible ones.
        let ranked = complete
            .into_iter()
            .map(|c| c.1)
            .chain(pruned.into_iter().map(|p| p.1))
            .chain(infeasible.into_iter().map(|i| i.1));
        for n in ranked {
            if n_below > 0 {
                below.push(n);
                n_below -= 1;
            } else {
                above.push(n);
            }
        }
        if self.cfg.constant_liar {
            above.extend(running);
        }
        below.sort_unstable();
        above.sort_unstable();
        (below, above)
    }

    /// Several objectives: the completed trials `ids` (in trial-number order), each
    /// with whether it is among the `n_below` good ones (Optuna's
    /// `_split_complete_trials_multi_objective`): whole non-domination ranks while they
    /// fit, then the members of the next rank that add the most hypervolume.
    pub(in crate::search) fn rank_objectives(
        &self,
        ids: &[i64],
        n_below: usize,
    ) -> Vec<(i64, bool)> {
        if n_below == 0 || n_below >= ids.len() {
            return ids.iter().map(|&n| (n, n_below > 0)).collect();
        }
        let losses: Vec<Vec<f64>> = ids.iter().map(|n| self.trials[n].losses.clone()).collect();
        let rank = pareto::ranks(&losses);
        let mut count = vec![0usize; rank.iter().max().map_or(0, |r| r + 1)];
        rank.iter().for_each(|&r| count[r] += 1);
        // Whole ranks that fit.
        let (mut fit, mut taken) = (0, 0);
        while fit < count.len() && taken + count[fit] <= n_below {
            taken += count[fit];
            fit += 1;
        }
        let mut good: Vec<bool> = rank.iter().map(|&r| r < fit).collect();
        if taken < n_below {
            let tie: Vec<usize> = (0..ids.len()).filter(|&i| rank[i] == fit).collect();
            let pts: Vec<Vec<f64>> = tie.iter().map(|&i| losses[i].clone()).collect();
            let reference = pareto::reference_point(&pts);
            for k in pareto::hssp(&pts, n_below - taken, &reference) {
                good[tie[k]] = true;
            }
        }
        ids.iter().copied().zip(good).collect()
    }

    /// The estimator over dimensions `dims` from the trials `which` that have them;
    /// the good group of a multi-objective search weighs its trials equally (Optuna 5),
    /// or by their hypervolume contribution when the spec asks (the MOTPE paper).
    fn estimator(&self, which: &[i64], dims: &[usize], good: bool) -> Parzen {
        let have: Vec<i64> = which
            .iter()
            .copied()
            .filter(|n| dims.iter().all(|&d| self.trials[n].x[d].is_some()))
            .collect();
        let obs: Vec<Vec<f64>> = have
            .iter()
            .map(|n| dims.iter().map(|&d| self.trials[n].x[d].unwrap()).collect())
            .collect();
        let weights = (good && self.objectives() > 1).then(|| {
            if self.cfg.hypervolume_weights {
                self.hypervolume_weights(&have)
            } else {
                vec![1.0; have.len()]
            }
        });
        let dims: Vec<&Dim> = dims.iter().map(|&d| &self.dims[d]).collect();
        Parzen::new(&obs, weights, &dims, &self.cfg)
    }

    /// The MOTPE paper's weights of good trials: each one's share of the hypervolume
    /// that only it covers, relative to the largest share (at least 1e-12; trials off
    /// the good group's front and infeasible ones get the floor).
    fn hypervolume_weights(&self, ids: &[i64]) -> Vec<f64> {
        const FLOOR: f64 = 1e-12;
        let feasible: Vec<usize> = (0..ids.len())
            .filter(|&i| !self.trials[&ids[i]].losses.is_empty())
            .collect();
        let mut w = vec![FLOOR; ids.len()];
        if feasible.len() == 1 {
            w[feasible[0]] = 1.0;
        }
        if feasible.len() < 2 {
            return w;
        }
        let pts: Vec<Vec<f64>> = feasible
            .iter()
            .map(|&i| self.trials[&ids[i]].losses.clone())
            .collect();
        let reference = pareto::reference_point(&pts);
        let on: Vec<usize> = pareto::ranks(&pts)
            .iter()
            .enumerate()
            .filter(|(_, r)| **r == 0)
            .map(|(i, _)| i)
            .collect();
        let front: Vec<Vec<f64>> = on.iter().map(|&i| pts[i].clone()).collect();
        let hv = pareto::hypervolume(&front, &reference);
        if !hv.is_finite() {
            return w;
        }
        let contrib: Vec<f64> = (0..front.len())
            .map(|k| {
                let rest: Vec<Vec<f64>> = (0..front.len())
                    .filter(|&j| j != k)
                    .map(|j| front[j].clone())
                    .collect();
                hv - pareto::hypervolume(&rest, &reference)
            })
            .collect();
        let top = contrib.iter().copied().fold(FLOOR, f64::max);
        for (k, &i) in on.iter().enumerate() {
            w[feasible[i]] = (contrib[k] / top).max(FLOOR);
        }
        w
    }

    /// Draws candidates from the good density over `dims`; returns the one with the
    /// best ratio of good to bad density.
    fn propose(&self, rng: &mut Rng, below: &[i64], above: &[i64], dims: &[usize]) -> Vec<f64> {
        let l = self.estimator(below, dims, true);
        let g = self.estimator(above, dims, false);
        let candidates: Vec<Vec<f64>> = (0..self.cfg.n_ei_candidates)
            .map(|_| l.sample(rng))
            .collect();
        let (lx, gx) = (l.log_pdf_many(&candidates), g.log_pdf_many(&candidates));
        let mut best = 0;
        for i in 1..candidates.len() {
            // The first maximum wins (numpy's argmax).
            if lx[i] - gx[i] > lx[best] - gx[best] {
                best = i;
            }
        }
        candidates[best].clone()
    }
}

impl Tpe {
    fn suggest_params(&self, i: u32) -> Params {
        let finished = self
            .trials
            .values()
            .filter(|t| t.state != State::Running)
            .count();
        if finished < self.cfg.n_startup_trials as usize || self.dims.is_empty() {
            // Optuna's startup phase is its random sampler: the same draws as `random`.
            let mut rng = Rng::stream(self.seed, u64::from(i));
            return self
                .names
                .iter()
                .zip(&self.specs)
                .map(|(n, s)| (n.clone(), sample(s, &mut rng)))
                .collect();
        }
        let mut rng = Rng::stream(self.seed ^ 0x7470_655f_7470_655f, u64::from(i));
        let (below, above) = self.split();
        let (fixed, conditional): (Vec<usize>, Vec<usize>) =
            (0..self.dims.len()).partition(|d| !self.conditional(*d));
        let mut x: Vec<Option<f64>> = vec![None; self.dims.len()];
        if self.cfg.multivariate_for(self.objectives()) && !fixed.is_empty() {
            // Choices on their own densities unless asked to join (see TpeSpec); a
            // space without choices is modelled exactly as Optuna's multivariate TPE.
            let (joint, alone): (Vec<usize>, Vec<usize>) = fixed.iter().partition(|&&d| {
                self.cfg.joint_categorical || matches!(self.dims[d], Dim::Num { .. })
            });
            for &d in &alone {
                x[d] = Some(self.propose(&mut rng, &below, &above, &[d])[0]);
            }
            if !joint.is_empty() {
                let v = self.propose(&mut rng, &below, &above, &joint);
                for (d, v) in joint.iter().zip(v) {
                    x[*d] = Some(v);
                }
            }
        } else {
            for &d in &fixed {
                x[d] = Some(self.propose(&mut rng, &below, &above, &[d])[0]);
            }
        }
        let mut params = self.decode(&x);
        for d in conditional {
            let active = self
                .conditions
                .as_ref()
                .is_some_and(|s| s.active(&self.names[d], &params));
            if active {
                let v = self.propose(&mut rng, &below, &above, &[d])[0];
                params.insert(
                    self.names[d].clone(),
                    self.dims[d].decode(v, &self.specs[d]),
                );
            }
        }
        params
    }

    fn decode(&self, x: &[Option<f64>]) -> Params {
        self.names
            .iter()
            .zip(&self.dims)
            .zip(&self.specs)
            .zip(x)
            .filter_map(|(((n, d), s), v)| v.map(|v| (n.clone(), d.decode(v, s))))
            .collect()
    }
}

impl Searcher for Tpe {
    fn suggest(&mut self, i: u32) -> Params {
        self.suggest_params(i)
    }

    fn started(&mut self, i: u32, params: &Params) {
        let x = self.encode(params);
        self.trials.insert(
            i64::from(i),
            Trial {
                x,
                state: State::Running,
                losses: vec![],
            },
        );
    }

    fn warm(&mut self, params: &Params, ended: Ended) {
        // Before every trial of this sweep, in the order given (the oldest first).
        let n = self.trials.keys().next().map_or(-1, |&k| k.min(0) - 1);
        let x = self.encode(params);
        if x.iter().all(Option::is_none) {
            return; // nothing in common with this space
        }
        self.trials.insert(
            n,
            Trial {
                x,
                state: State::Running,
                losses: vec![],
            },
        );
        self.set_state(n, ended);
    }

    fn observe(&mut self, i: u32, ended: Ended) {
        self.set_state(i64::from(i), ended);
    }
}

impl Tpe {
    /// A trial's coordinates (`None` for a parameter missing or outside this space).
    fn encode(&self, params: &Params) -> Vec<Option<f64>> {
        self.names
            .iter()
            .zip(&self.dims)
            .map(|(n, d)| {
                params
                    .get(n)
                    .and_then(|v| d.encode(v))
                    .filter(|x| d.contains(*x))
            })
            .collect()
    }

    fn set_state(&mut self, i: i64, ended: Ended) {
        let mut losses = vec![];
        let state = match ended {
            Ended::Completed(v) if v.is_finite() => State::Completed(v),
            Ended::Pruned { step, value } => State::Pruned { step, value },
            Ended::Infeasible { violation, .. } => State::Infeasible(violation),
            Ended::Scored { violation, .. } if violation > 0.0 => State::Infeasible(violation),
            Ended::Scored { values, .. } if values.iter().all(|v| v.is_finite()) => {
                losses = pareto::losses(&values, &self.modes);
                State::Completed(values[0])
            }
            // Failed trials say nothing about the objective (Optuna ignores them).
            _ => {
                self.trials.remove(&i);
                return;
            }
        };
        if let Some(t) = self.trials.get_mut(&i) {
            t.state = state;
            t.losses = losses;
        }
    }
}

#[cfg(test)]
mod tests;
