//! Early stopping: rules that stop a running trial from its intermediate reports.
//!
//! Each rule sees the sweep's metric as a *score*, larger is better (a loss is negated),
//! at the reported `step`. Rules are pure state machines in the core: their state is
//! what trials reported, so the core rebuilds it after a restart by replaying the stored
//! histories ([`Scheduler::on_report`] in step order, then [`Scheduler::on_completed`]).

use ridgeline_common::spec::{SchedulerSpec, SweepSpec};

mod asha;
mod hyperband;
mod median;

pub use asha::Asha;
pub use hyperband::Hyperband;
pub use median::Median;

/// What becomes of a trial after a report.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Go on.
    Continue,
    /// Stop it: it ends `pruned`.
    Prune(Pruning),
}

/// Why a trial was stopped, for its error text.
#[derive(Clone, Debug, PartialEq)]
pub struct Pruning {
    /// The rule, e.g. "asha".
    pub rule: &'static str,
    /// The step (rung) where it was judged.
    pub at: u32,
    /// The score it had to reach (same scale as the reported score).
    pub threshold: f64,
    /// How many trials' scores made the threshold.
    pub of: usize,
    /// What the threshold is, in words.
    pub what: &'static str,
}

/// An early-stopping rule.
pub trait Scheduler: Send {
    /// A running trial reported `score` (larger is better; finite) at `step`.
    fn on_report(&mut self, trial: u32, step: u32, score: f64) -> Decision;
    /// The trial completed (its reports are final).
    fn on_completed(&mut self, _trial: u32) {}
    /// The trial ended any other way (failed, diverged, cancelled, pruned).
    fn on_ended(&mut self, _trial: u32) {}
}

/// The scheduler a spec asks for, if any.
pub fn scheduler_for(spec: &SweepSpec) -> Option<Box<dyn Scheduler>> {
    Some(match spec.search.scheduler.as_ref()? {
        SchedulerSpec::Asha {
            grace_period,
            reduction_factor,
            max_t,
            brackets,
        } => Box::new(Asha::new(
            *grace_period,
            *reduction_factor,
            *max_t,
            *brackets,
            spec.search.seed(),
        )),
        SchedulerSpec::Hyperband {
            min_resource,
            max_resource,
            reduction_factor,
        } => Box::new(Hyperband::new(
            *min_resource,
            *max_resource,
            *reduction_factor,
            &spec.name,
        )),
        SchedulerSpec::Median {
            n_startup_trials,
            n_warmup_steps,
            interval_steps,
            n_min_trials,
        } => Box::new(Median::new(
            *n_startup_trials,
            *n_warmup_steps,
            *interval_steps,
            *n_min_trials,
        )),
    })
}

/// numpy's `percentile` with linear interpolation, of finite values (`None` if empty).
pub fn percentile(values: &[f64], q: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let pos = (q / 100.0) * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    Some(v[lo] + (v[hi] - v[lo]) * (pos - lo as f64))
}

#[cfg(test)]
mod tests;
