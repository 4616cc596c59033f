//! Optuna's `MedianPruner` (its `PercentilePruner` at 50): after `n_startup_trials`
//! completed trials and `n_warmup_steps` steps, at the first report of each interval, a
//! trial whose best score so far is worse than the median of the completed trials'
//! scores at the same step is stopped (when at least `n_min_trials` of them have one).

use std::collections::{BTreeMap, HashMap};

use super::{Decision, Pruning, Scheduler, percentile};

/// The median pruner.
pub struct Median {
    n_startup: u32,
    warmup: u32,
    interval: u32,
    n_min: u32,
    /// Scores of running trials by step.
    running: HashMap<u32, BTreeMap<u32, f64>>,
    /// Scores of completed trials, by step.
    completed: BTreeMap<u32, Vec<f64>>,
    n_completed: u32,
}

impl Median {
    /// The pruner with Optuna's parameters.
    pub fn new(n_startup: u32, warmup: u32, interval: u32, n_min: u32) -> Self {
        Median {
            n_startup,
            warmup,
            interval,
            n_min,
            running: HashMap::new(),
            completed: BTreeMap::new(),
            n_completed: 0,
        }
    }
}

impl Scheduler for Median {
    fn on_report(&mut self, trial: u32, step: u32, score: f64) -> Decision {
        let h = self.running.entry(trial).or_default();
        // Optuna's `_is_first_in_interval_step`, judged before this step is recorded.
        let nearest =
            (step.saturating_sub(self.warmup)) / self.interval * self.interval + self.warmup;
        let second_last = h.keys().rev().find(|s| **s != step).map(|s| i64::from(*s));
        h.insert(step, score);
        if self.n_completed == 0 || self.n_completed < self.n_startup || step < self.warmup {
            return Decision::Continue;
        }
        if second_last.unwrap_or(-1) >= i64::from(nearest) {
            return Decision::Continue;
        }
        let best = h.values().copied().fold(f64::NEG_INFINITY, f64::max);
        let Some(at) = self
            .completed
            .get(&step)
            .filter(|v| v.len() >= self.n_min as usize)
        else {
            return Decision::Continue;
        };
        let median = percentile(at, 50.0).expect("non-empty");
        if best < median {
            Decision::Prune(Pruning {
                rule: "median",
                at: step,
                threshold: median,
                of: at.len(),
                what: "the median of completed trials (best value so far judged)",
            })
        } else {
            Decision::Continue
        }
    }

    fn on_completed(&mut self, trial: u32) {
        if let Some(h) = self.running.remove(&trial) {
            for (step, score) in h {
                self.completed.entry(step).or_default().push(score);
            }
        }
        self.n_completed += 1;
    }

    fn on_ended(&mut self, trial: u32) {
        self.running.remove(&trial);
    }
}
