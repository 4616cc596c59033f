//! Asynchronous successive halving, as Ray Tune's `AsyncHyperBandScheduler` (ASHA, Li et
//! al. 2020) does it. A bracket has rungs at `grace_period * rf^(k + s)` steps below
//! `max_t`. When a trial first reaches a rung it records its score there and stops if
//! the score is below the (1 − 1/rf) quantile of the scores recorded at that rung
//! before it (so the first trial at a rung always goes on). With several brackets, each
//! trial joins one, drawn with Ray's weights from the seed and its number.

use std::collections::HashMap;

use ridgeline_common::rng::Rng;

use super::{Decision, Pruning, Scheduler, percentile};

struct Bracket {
    /// Milestones, highest first, with the score each trial recorded there.
    rungs: Vec<(u32, HashMap<u32, f64>)>,
}

/// The ASHA scheduler.
pub struct Asha {
    rf: f64,
    brackets: Vec<Bracket>,
    /// Bracket of each trial that reported.
    of: HashMap<u32, usize>,
    seed: u64,
    max_t: u32,
}

impl Asha {
    /// ASHA with `brackets` brackets (1 is plain ASHA).
    pub fn new(grace_period: u32, rf: f64, max_t: u32, brackets: u32, seed: u64) -> Self {
        let brackets = (0..brackets)
            .map(|s| {
                // Ray: MAX_RUNGS = int(log(max_t / min_t) / log(rf) - s + 1).
                let n = ((f64::from(max_t) / f64::from(grace_period)).ln() / rf.ln() - f64::from(s)
                    + 1.0)
                    .floor()
                    .max(0.0) as u32;
                let rungs = (0..n)
                    .rev()
                    .map(|k| {
                        let m = f64::from(grace_period) * rf.powi((k + s) as i32);
                        // Steps are integers: reaching m means reaching ⌈m⌉.
                        ((m - 1e-9).ceil() as u32, HashMap::new())
                    })
                    .collect();
                Bracket { rungs }
            })
            .collect();
        Asha {
            rf,
            brackets,
            of: HashMap::new(),
            seed,
            max_t,
        }
    }

    /// Ray draws a trial's bracket with probability ∝ e^(rungs in it).
    pub(super) fn bracket_of(&mut self, trial: u32) -> usize {
        if let Some(&b) = self.of.get(&trial) {
            return b;
        }
        let sizes: Vec<f64> = self.brackets.iter().map(|b| b.rungs.len() as f64).collect();
        let top = sizes.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let w: Vec<f64> = sizes.iter().map(|s| (s - top).exp()).collect();
        let mut u = Rng::stream(self.seed ^ 0x6173_6861, u64::from(trial)).next_f64()
            * w.iter().sum::<f64>();
        let mut b = w.len() - 1;
        for (i, wi) in w.iter().enumerate() {
            if u < *wi {
                b = i;
                break;
            }
            u -= wi;
        }
        self.of.insert(trial, b);
        b
    }
}

impl Scheduler for Asha {
    fn on_report(&mut self, trial: u32, step: u32, score: f64) -> Decision {
        // Ray stops trials at max_t rather than judging them there: their work is done.
        if step >= self.max_t {
            return Decision::Continue;
        }
        let b = self.bracket_of(trial);
        let rf = self.rf;
        for (milestone, recorded) in &mut self.brackets[b].rungs {
            if step < *milestone || recorded.contains_key(&trial) {
                continue;
            }
            let values: Vec<f64> = recorded.values().copied().collect();
            let cutoff = percentile(&values, (1.0 - 1.0 / rf) * 100.0);
            recorded.insert(trial, score);
            if let Some(c) = cutoff.filter(|c| score < *c) {
                return Decision::Prune(Pruning {
                    rule: "asha",
                    at: *milestone,
                    threshold: c,
                    of: values.len(),
                    what: "the (1 - 1/reduction_factor) quantile",
                });
            }
            break;
        }
        Decision::Continue
    }
}
