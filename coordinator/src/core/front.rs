//! The Pareto front of a multi-objective sweep, kept as results arrive: what `status`
//! shows instead of a best trial, and the hypervolume exported as a gauge.
//!
//! Only feasible completed trials join. A trial leaves the front when a later one
//! dominates it; equal trials share it (as Optuna's `best_trials`). The reference point
//! of the hypervolume is the spec's, or else the worst feasible value of each objective
//! seen so far widened by 10 % (Optuna's `_get_reference_point`); both only grow the
//! hypervolume as trials arrive.

use ridgeline_common::params::Params;
use ridgeline_common::pareto;
use ridgeline_common::spec::{Mode, SweepSpec};

/// A trial on the front.
#[derive(Clone, Debug, PartialEq)]
pub struct FrontTrial {
    /// Its trial index.
    pub trial: u32,
    /// Its value of each objective, in the spec's order and units.
    pub values: Vec<f64>,
    /// Its parameters.
    pub params: Params,
}

/// The front of one sweep.
#[derive(Clone, Debug, PartialEq)]
pub struct Front {
    modes: Vec<Mode>,
    /// The spec's reference point, as losses.
    given: Option<Vec<f64>>,
    /// The worst loss of each objective among feasible completed trials.
    worst: Vec<f64>,
    /// Its members, by trial index.
    pub trials: Vec<FrontTrial>,
    /// Their hypervolume, recomputed when a trial arrives (gauges read it often).
    hypervolume: f64,
}

impl Front {
    /// An empty front for a multi-objective sweep; `None` for a single objective.
    pub fn of(spec: &SweepSpec) -> Option<Front> {
        if !spec.is_multi_objective() {
            return None;
        }
        let modes = spec.modes();
        Some(Front {
            given: spec
                .search
                .reference_point
                .as_ref()
                .map(|r| pareto::losses(r, &modes)),
            worst: vec![f64::NEG_INFINITY; modes.len()],
            modes,
            trials: vec![],
            hypervolume: 0.0,
        })
    }

    /// A feasible trial completed with these objective values.
    pub fn add(&mut self, trial: u32, values: Vec<f64>, params: Params) {
        let l = pareto::losses(&values, &self.modes);
        let mut moved = false;
        for (w, x) in self.worst.iter_mut().zip(&l) {
            moved |= *x > *w;
            *w = w.max(*x);
        }
        let losses = |t: &FrontTrial| pareto::losses(&t.values, &self.modes);
        if self
            .trials
            .iter()
            .any(|t| pareto::dominates(&losses(t), &l))
        {
            // Off the front, but it may have moved the reference point outwards.
            if moved && self.given.is_none() {
                self.hypervolume = self.compute_hypervolume();
            }
            return;
        }
        let modes = self.modes.clone();
        self.trials
            .retain(|t| !pareto::dominates(&l, &pareto::losses(&t.values, &modes)));
        let at = self.trials.partition_point(|t| t.trial < trial);
        self.trials.insert(
            at,
            FrontTrial {
                trial,
                values,
                params,
            },
        );
        self.hypervolume = self.compute_hypervolume();
    }

    /// The reference point, in the objectives' units; `None` before any trial.
    pub fn reference(&self) -> Option<Vec<f64>> {
        let l = match &self.given {
            Some(g) => g.clone(),
            None if self.trials.is_empty() => return None,
            None => pareto::reference_point(std::slice::from_ref(&self.worst)),
        };
        // Losses back to values: the same negation undoes itself.
        Some(pareto::losses(&l, &self.modes))
    }

    /// The hypervolume of the front from the reference point (0 before any trial).
    pub fn hypervolume(&self) -> f64 {
        self.hypervolume
    }

    fn compute_hypervolume(&self) -> f64 {
        let Some(r) = self.reference() else {
            return 0.0;
        };
        let pts: Vec<Vec<f64>> = self
            .trials
            .iter()
            .map(|t| pareto::losses(&t.values, &self.modes))
            .collect();
        pareto::hypervolume(&pts, &pareto::losses(&r, &self.modes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ridgeline_common::rng::Rng;

    fn spec(extra: &str) -> SweepSpec {
        SweepSpec::from_toml(&format!(
            "name = \"f\"\n[trial]\ncommand = [\"true\"]\n[search]\nmetric = [\"loss\", \"accuracy\"]\n{extra}\n[search.space]\nx = {{ type = \"uniform\", low = 0, high = 1 }}\n"
        ))
        .unwrap()
    }

    #[test]
    fn the_front_is_the_rank_zero_set_whatever_the_arrival_order() {
        let mut rng = Rng::new(5);
        // Loss minimised, accuracy maximised; integer values so that ties occur.
        let pts: Vec<Vec<f64>> = (0..200)
            .map(|_| vec![rng.below(20) as f64, rng.below(20) as f64])
            .collect();
        let modes = [Mode::Min, Mode::Max];
        let losses: Vec<Vec<f64>> = pts.iter().map(|p| pareto::losses(p, &modes)).collect();
        let want: Vec<u32> = pareto::ranks(&losses)
            .iter()
            .enumerate()
            .filter(|(_, r)| **r == 0)
            .map(|(i, _)| i as u32)
            .collect();
        for order in [false, true] {
            let mut f = Front::of(&spec("")).unwrap();
            let mut idx: Vec<usize> = (0..pts.len()).collect();
            if order {
                rng.shuffle(&mut idx);
            }
            for i in idx {
                f.add(i as u32, pts[i].clone(), Params::new());
            }
            let got: Vec<u32> = f.trials.iter().map(|t| t.trial).collect();
            assert_eq!(got, want);
            // Reference: worst loss 19 → 20.9, worst accuracy 0 → 0 (→ 1e-12 as a loss).
            let r = f.reference().unwrap();
            assert!((r[0] - 20.9).abs() < 1e-12 && r[1].abs() < 1e-11, "{r:?}");
        }
    }

    #[test]
    fn hypervolume_from_a_given_reference_point() {
        let mut f = Front::of(&spec("reference_point = [4, 0]")).unwrap();
        assert_eq!(f.hypervolume(), 0.0);
        // Boxes from (loss, accuracy) to (4, 0): 3×1 and, with (1, 3), a staircase.
        f.add(0, vec![1.0, 1.0], Params::new());
        assert_eq!(f.hypervolume(), 3.0);
        f.add(1, vec![1.0, 3.0], Params::new());
        assert_eq!(f.trials.len(), 1, "trial 1 dominates trial 0");
        assert_eq!(f.hypervolume(), 9.0);
        f.add(2, vec![0.0, 2.0], Params::new());
        assert_eq!(f.hypervolume(), 9.0 + 2.0);
        assert_eq!(f.reference().unwrap(), vec![4.0, 0.0]);
    }
}
