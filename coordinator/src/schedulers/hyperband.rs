//! Hyperband as Optuna's `HyperbandPruner` does it: brackets of successive halving
//! (`SuccessiveHalvingPruner` with `min_early_stopping_rate` = the bracket's index and no
//! bootstrap), each trial in one bracket chosen by the CRC-32 of "{study}_{number}"
//! against budgets that favour the aggressive brackets. In its bracket, a trial that
//! reaches rung r (step ≥ min_resource · rf^(s + r)) records its current value there and
//! goes on only if it is among the best ⌊n/rf⌋ values recorded at that rung (the best
//! one when fewer than rf are recorded).

use std::collections::HashMap;

use super::{Decision, Pruning, Scheduler};

/// The Hyperband pruner.
pub struct Hyperband {
    min_resource: u32,
    max_resource: u32,
    rf: u32,
    /// Per bracket: the trial-allocation budget and, per rung, every recorded score.
    budgets: Vec<u32>,
    rungs: Vec<Vec<Vec<f64>>>,
    /// Per trial: its bracket and the number of rungs it passed.
    trials: HashMap<u32, (usize, usize)>,
    study: String,
}

impl Hyperband {
    /// The pruner for a sweep named `study`.
    pub fn new(min_resource: u32, max_resource: u32, rf: u32, study: &str) -> Self {
        // Optuna: n_brackets = floor(log_rf(max / min)) + 1.
        let ratio = f64::from(max_resource) / f64::from(min_resource);
        let n = (ratio.ln() / f64::from(rf).ln() + 1e-9).floor() as usize + 1;
        let budgets = (0..n)
            .map(|i| {
                let s = (n - 1 - i) as i32;
                ((n as f64) * f64::from(rf).powi(s) / f64::from(s + 1)).ceil() as u32
            })
            .collect();
        Hyperband {
            min_resource,
            max_resource,
            rf,
            budgets,
            rungs: vec![Vec::new(); n],
            trials: HashMap::new(),
            study: study.to_owned(),
        }
    }

    /// The bracket of trial `trial` (Optuna's `_get_bracket_id`).
    pub fn bracket_of(&self, trial: u32) -> usize {
        let total: u32 = self.budgets.iter().sum();
        let mut n =
            i64::from(crc32fast::hash(format!("{}_{trial}", self.study).as_bytes()) % total);
        for (b, budget) in self.budgets.iter().enumerate() {
            n -= i64::from(*budget);
            if n < 0 {
                return b;
            }
        }
        unreachable!("n is below the total budget")
    }
}

impl Scheduler for Hyperband {
    fn on_report(&mut self, trial: u32, step: u32, score: f64) -> Decision {
        // A trial at max_resource has done its work. (Optuna's trials report steps
        // 0..max_resource-1 and never get there; the built-in trainer counts epochs
        // from 1.)
        if step >= self.max_resource {
            return Decision::Continue;
        }
        let bracket = self.bracket_of(trial);
        let rung = &mut self.trials.entry(trial).or_insert((bracket, 0)).1;
        loop {
            let promotion =
                f64::from(self.min_resource) * f64::from(self.rf).powi((bracket + *rung) as i32);
            if f64::from(step) < promotion {
                return Decision::Continue;
            }
            let at = &mut self.rungs[bracket];
            if at.len() <= *rung {
                at.resize(*rung + 1, Vec::new());
            }
            at[*rung].push(score);
            let competing = &at[*rung];
            // Optuna promotes the best ⌊n/rf⌋, and the best one while n < rf.
            let k = (competing.len() / self.rf as usize).max(1);
            let mut sorted = competing.clone();
            sorted.sort_by(|a, b| b.total_cmp(a));
            if score < sorted[k - 1] {
                return Decision::Prune(Pruning {
                    rule: "hyperband",
                    at: promotion.ceil() as u32,
                    threshold: sorted[k - 1],
                    of: competing.len(),
                    what: if k == 1 {
                        "the best value"
                    } else {
                        "the best 1/reduction_factor"
                    },
                });
            }
            *rung += 1;
        }
    }
}
