//! The search part of a spec: algorithm, metric and mode, and the space's dimensions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::defaults;
use crate::params::{ParamValue, Params};

/// Search algorithms.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// Every combination of the `grid` axes, `num_samples` times; other parameters are
    /// sampled per trial.
    #[default]
    Grid,
    /// `num_samples` independent draws from the space (`grid` axes act as choices).
    Random,
    /// Scrambled Sobol points: `num_samples` quasi-random draws that cover the space
    /// more evenly than independent ones.
    Sobol,
    /// Tree-structured Parzen Estimator (Optuna's TPESampler): random startup trials,
    /// then draws that favour regions where good trials were found. With several
    /// objectives, the good trials are the best non-domination ranks (Optuna's MOTPE).
    Tpe,
    /// NSGA-II (Optuna's NSGAIISampler): generations of `population_size` trials, each
    /// child bred from two tournament-picked parents of the elite of the generations
    /// before (uniform crossover, random mutation); for one or several objectives.
    Nsga2,
    /// Population based training (Ray Tune's PopulationBasedTraining, synchronous): a
    /// population of `num_samples` members trains in rounds of `perturbation_interval`
    /// steps; after each round the bottom quantile continues from the checkpoint of a
    /// top-quantile member with perturbed hyperparameters (`[search.pbt]`).
    Pbt,
}

impl Algorithm {
    /// Whether suggestions depend on results (they must then be made when a trial
    /// starts, and rebuilt from stored results after a restart).
    pub fn is_adaptive(self) -> bool {
        matches!(self, Algorithm::Tpe | Algorithm::Nsga2 | Algorithm::Pbt)
    }
}

/// Whether the metric is to be minimised or maximised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Smaller is better (losses).
    Min,
    /// Larger is better (accuracies).
    Max,
}

impl Mode {
    /// Whether `a` is strictly better than `b` under this mode.
    pub fn better(self, a: f64, b: f64) -> bool {
        match self {
            Mode::Min => a < b,
            Mode::Max => a > b,
        }
    }

    /// The mode's name as written in specs.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Min => "min",
            Mode::Max => "max",
        }
    }
}

/// One dimension of a search space.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum ParamSpec {
    /// Uniform real number in [low, high).
    Uniform {
        /// Lower bound.
        low: f64,
        /// Upper bound.
        high: f64,
    },
    /// Real number whose logarithm is uniform in [ln low, ln high).
    Loguniform {
        /// Lower bound (> 0).
        low: f64,
        /// Upper bound.
        high: f64,
    },
    /// Integer uniform in [low, high], both included.
    Int {
        /// Lower bound.
        low: i64,
        /// Upper bound (included).
        high: i64,
    },
    /// One of the values, drawn uniformly.
    Choice {
        /// The candidates.
        values: Vec<ParamValue>,
    },
    /// Every value, exhaustively (a grid axis).
    Grid {
        /// The values, in order.
        values: Vec<ParamValue>,
    },
}

impl ParamSpec {
    /// Checks the dimension on its own (bounds in order, values present), whatever
    /// parameter it sets.
    pub fn check(&self) -> Result<(), String> {
        match self {
            ParamSpec::Uniform { low, high } | ParamSpec::Loguniform { low, high } => {
                if !(low.is_finite() && high.is_finite() && low < high) {
                    return Err(format!("expected low < high, got low={low}, high={high}"));
                }
                if matches!(self, ParamSpec::Loguniform { .. }) && *low <= 0.0 {
                    return Err(format!("loguniform needs low > 0, got {low}"));
                }
            }
            ParamSpec::Int { low, high } => {
                if low > high {
                    return Err(format!("expected low <= high, got low={low}, high={high}"));
                }
            }
            ParamSpec::Choice { values } | ParamSpec::Grid { values } => {
                if values.is_empty() {
                    return Err("expected at least one value".into());
                }
            }
        }
        Ok(())
    }
}

/// The search.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchSpec {
    /// Algorithm.
    #[serde(default)]
    pub algorithm: Algorithm,
    /// The metric that ranks trials (its last reported value), or several objectives
    /// at once (`["val_loss", "latency_ms"]`): trials are then ranked by Pareto
    /// dominance and the sweep's result is its Pareto front.
    #[serde(default = "defaults::metric")]
    pub metric: Metrics,
    /// Whether the metric is minimised or maximised (a list: one per objective);
    /// defaults from each metric's name.
    #[serde(default)]
    pub mode: Option<Modes>,
    /// Multi-objective: the point the hypervolume is measured from, one value per
    /// objective, in the objectives' own units (a worst acceptable value). Without it,
    /// the worst feasible value seen of each objective, widened by 10 % (Optuna's rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_point: Option<Vec<f64>>,
    /// Random: the number of trials. Grid: how many times the grid is repeated.
    #[serde(default = "defaults::num_samples")]
    pub num_samples: u32,
    /// Trials of this sweep running at once (0: as many as workers take).
    #[serde(default = "defaults::max_concurrent")]
    pub max_concurrent: u32,
    /// Seed of the sampler and the schedulers. When a spec gives none, the coordinator
    /// draws one at submit and stores it in the sweep's spec (`status` and `submit`
    /// print it): two sweeps of one spec explore differently, and each can be rerun
    /// exactly from its stored seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Parameters searched over, by name.
    #[serde(default)]
    pub space: BTreeMap<String, ParamSpec>,
    /// Settings of the `tpe` algorithm.
    #[serde(default)]
    pub tpe: TpeSpec,
    /// Settings of the `nsga2` algorithm.
    #[serde(default)]
    pub nsga2: Nsga2Spec,
    /// Settings of the `pbt` algorithm.
    #[serde(default)]
    pub pbt: PbtSpec,
    /// Early stopping of trials from their intermediate reports.
    #[serde(default)]
    pub scheduler: Option<SchedulerSpec>,
    /// Which trials keep their checkpoints: `"all"`, `"best"` or the N best (default
    /// 100). Population based training keeps every round's, which later rounds copy.
    #[serde(default)]
    pub keep: super::Keep,
    /// Conditional parameters: a parameter named here exists in a trial only when every
    /// choice it names took one of the given values (`momentum = { optimizer = "sgd" }`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub conditions: BTreeMap<String, BTreeMap<String, OneOrMany>>,
    /// Configurations the first trials run with, in order (Optuna's `enqueue_trial`):
    /// trial `i` gets `enqueue[i]`, a parameter it leaves out drawn by the algorithm.
    /// They count among `num_samples`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub enqueue: Vec<Params>,
    /// A finished or running sweep (`"sweep:ID"`) whose trials the sampler learns from
    /// before its first suggestion (TPE; the space's overlapping dimensions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_start: Option<String>,
    /// Bounds a feasible trial's final metrics lie within (`latency_ms = { max = 20 }`);
    /// a trial's own `constraint_*` metrics are constraints too (≤ 0 is feasible, as
    /// Optuna's `constraints_func`). The best trial is the best feasible one, and TPE
    /// ranks infeasible trials after every feasible one.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub constraints: BTreeMap<String, Bound>,
    /// Set by the coordinator, not by users: configurations enqueued while the sweep
    /// ran (`ridgeline enqueue`), by the trial number they run as.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub queued: BTreeMap<u32, Params>,
    /// Set by the coordinator at submit, from `warm_start`: the other sweep's ended
    /// trials with the value of this sweep's metric.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warm: Vec<WarmTrial>,
}

/// Names of the metrics a search optimises: one, or several objectives.
#[derive(Clone, Debug, PartialEq)]
pub struct Metrics(Vec<String>);

impl Metrics {
    /// The first (for a single-objective search, the only) metric.
    pub fn primary(&self) -> &str {
        &self.0[0]
    }

    /// Every objective, in order.
    pub fn names(&self) -> &[String] {
        &self.0
    }
}

impl From<&str> for Metrics {
    fn from(s: &str) -> Self {
        Metrics(vec![s.to_owned()])
    }
}

impl From<Vec<String>> for Metrics {
    fn from(v: Vec<String>) -> Self {
        Metrics(v)
    }
}

/// The modes of the objectives: one, or one per metric.
#[derive(Clone, Debug, PartialEq)]
pub struct Modes(pub Vec<Mode>);

/// One item or a list of them, as written in a spec; serialised back the same way.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum OneOrList<T> {
    One(T),
    List(Vec<T>),
}

macro_rules! one_or_list {
    ($t:ty, $item:ty, $what:expr) => {
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                match self.0.as_slice() {
                    [one] => OneOrList::One(one).serialize(s),
                    many => OneOrList::List(many.iter().collect()).serialize(s),
                }
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                match OneOrList::<$item>::deserialize(d) {
                    Ok(OneOrList::One(x)) => Ok(Self(vec![x])),
                    Ok(OneOrList::List(v)) if !v.is_empty() => Ok(Self(v)),
                    Ok(OneOrList::List(_)) => Err(serde::de::Error::custom(concat!(
                        "expected at least one ",
                        $what
                    ))),
                    Err(_) => Err(serde::de::Error::custom(concat!(
                        "expected a ",
                        $what,
                        " or a list of them"
                    ))),
                }
            }
        }
    };
}

one_or_list!(Metrics, String, "metric name");
one_or_list!(Modes, Mode, "mode (\"min\" or \"max\")");

/// Settings of NSGA-II (Optuna's `NSGAIISampler`, same defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nsga2Spec {
    /// Trials per generation; the first generation is drawn at random.
    #[serde(default = "defaults::population")]
    pub population_size: u32,
    /// Probability that a child is bred from two parents (otherwise it copies one).
    #[serde(default = "defaults::crossover_prob")]
    pub crossover_prob: f64,
    /// Uniform crossover: probability that a parameter comes from the second parent.
    #[serde(default = "defaults::swapping_prob")]
    pub swapping_prob: f64,
    /// Probability that a parameter is drawn afresh; default 1 / number of parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mutation_prob: Option<f64>,
}

impl Default for Nsga2Spec {
    fn default() -> Self {
        Nsga2Spec {
            population_size: defaults::population(),
            crossover_prob: defaults::crossover_prob(),
            swapping_prob: defaults::swapping_prob(),
            mutation_prob: None,
        }
    }
}

/// Settings of population based training (Ray Tune's `PopulationBasedTraining`, same
/// defaults where it has them).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PbtSpec {
    /// Rounds each member trains; the sweep has `num_samples × rounds` trials, one per
    /// member and round.
    #[serde(default = "defaults::pbt_rounds")]
    pub rounds: u32,
    /// Steps per round: round `r` trains steps `r·interval + 1 ..= (r+1)·interval`.
    #[serde(default = "defaults::pbt_interval")]
    pub perturbation_interval: u32,
    /// The share of the population that is replaced (bottom) and copied from (top).
    #[serde(default = "defaults::pbt_quantile")]
    pub quantile_fraction: f64,
    /// Probability that a copied hyperparameter is drawn afresh from the space rather
    /// than perturbed.
    #[serde(default = "defaults::pbt_resample")]
    pub resample_probability: f64,
    /// A perturbed number is multiplied by one of these (a choice moves to a neighbour).
    #[serde(default = "defaults::pbt_factors")]
    pub perturbation_factors: Vec<f64>,
    /// The hyperparameters that change when a member is exploited; default: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hyperparam_mutations: Vec<String>,
}

impl Default for PbtSpec {
    fn default() -> Self {
        PbtSpec {
            rounds: defaults::pbt_rounds(),
            perturbation_interval: defaults::pbt_interval(),
            quantile_fraction: defaults::pbt_quantile(),
            resample_probability: defaults::pbt_resample(),
            perturbation_factors: defaults::pbt_factors(),
            hyperparam_mutations: vec![],
        }
    }
}

impl PbtSpec {
    /// The steps round `round` trains: `round·interval + 1 ..= (round+1)·interval`.
    pub fn steps_of(&self, round: u32) -> std::ops::RangeInclusive<u32> {
        round * self.perturbation_interval + 1..=(round + 1) * self.perturbation_interval
    }
}

impl SearchSpec {
    /// PBT: the round trial `trial` trains (trials are numbered `round·P + member` for a
    /// population of `P = num_samples`).
    pub fn pbt_round(&self, trial: u32) -> u32 {
        trial / self.num_samples.max(1)
    }
}

/// What PBT may vary with the built-in trainer: settings that leave the shapes of the
/// model and of the optimizer's state alone (a member resumes another's weights and
/// moments; momentum matters to SGD, whose velocity is kept, not to AdamW).
pub const PBT_BUILTIN_PARAMS: &[&str] = &[
    "lr",
    "momentum",
    "weight_decay",
    "dropout",
    "batch_size",
    "grad_clip",
    "warmup",
];

/// The parameter of a PBT trial that names the trial whose checkpoint (folder) it
/// starts from: the same member's previous round, or the top member it copies.
pub const PBT_PARENT: &str = "pbt_parent";

/// Bounds on a metric (either may be left out).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bound {
    /// Smallest feasible value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Largest feasible value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

/// Metrics a trial reports as constraints of its own: feasible when ≤ 0.
pub const CONSTRAINT_PREFIX: &str = "constraint_";

/// A trial of another sweep a warm-started sampler learns from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarmTrial {
    /// Its parameters.
    pub params: Params,
    /// Its final value of the metric (the first objective's).
    pub value: f64,
    /// A multi-objective search: its value of every objective.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<f64>,
}

/// One value or a list of them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// A single value.
    One(ParamValue),
    /// Any of these values.
    Many(Vec<ParamValue>),
}

impl OneOrMany {
    /// The values.
    pub fn values(&self) -> &[ParamValue] {
        match self {
            OneOrMany::One(v) => std::slice::from_ref(v),
            OneOrMany::Many(v) => v,
        }
    }
}

impl SearchSpec {
    /// The seed in force (0 for a spec that was never submitted and gave none).
    pub fn seed(&self) -> u64 {
        self.seed.unwrap_or(0)
    }

    /// Whether parameter `name` exists in a trial whose other parameters are `params`.
    pub fn active(&self, name: &str, params: &crate::params::Params) -> bool {
        self.conditions.get(name).is_none_or(|c| {
            c.iter()
                .all(|(on, vals)| params.get(on).is_some_and(|v| vals.values().contains(v)))
        })
    }

    /// Drops the parameters whose condition does not hold.
    pub fn drop_inactive(&self, params: &mut crate::params::Params) {
        let inactive: Vec<String> = self
            .conditions
            .keys()
            .filter(|n| !self.active(n, params))
            .cloned()
            .collect();
        for n in inactive {
            params.remove(&n);
        }
    }

    /// How far a trial with these final metrics is from feasible: the sum of its
    /// `constraint_*` values above 0 and of its excess over `constraints`' bounds; 0 is
    /// feasible, and a bounded metric it did not report (or reported as NaN) is an
    /// infinite violation.
    pub fn violation(&self, metrics: &[(String, f64)]) -> f64 {
        let own: f64 = metrics
            .iter()
            .filter(|(n, _)| n.starts_with(CONSTRAINT_PREFIX))
            .map(|(_, v)| {
                if v.is_nan() {
                    f64::INFINITY
                } else {
                    v.max(0.0)
                }
            })
            .sum();
        let bounded: f64 = self
            .constraints
            .iter()
            .map(|(name, b)| match metrics.iter().find(|(n, _)| n == name) {
                Some((_, v)) if !v.is_nan() => {
                    b.min.map_or(0.0, |m| (m - v).max(0.0))
                        + b.max.map_or(0.0, |m| (v - m).max(0.0))
                }
                _ => f64::INFINITY,
            })
            .sum();
        own + bounded
    }

    /// Checks `constraints`; errors are `(field, reason)`.
    pub fn validate_constraints(&self) -> Result<(), (String, String)> {
        for (name, b) in &self.constraints {
            let field = format!("search.constraints.{name}");
            let finite = |v: Option<f64>| v.is_none_or(f64::is_finite);
            if b.min.is_none() && b.max.is_none() {
                return Err((field, "expected min, max or both".into()));
            }
            if !finite(b.min) || !finite(b.max) {
                return Err((field, "expected finite bounds".into()));
            }
            if let (Some(lo), Some(hi)) = (b.min, b.max)
                && lo > hi
            {
                return Err((field, format!("min {lo} is above max {hi}")));
            }
        }
        Ok(())
    }

    /// The configuration trial `i` was given (spec `enqueue`, or enqueued while running).
    pub fn given(&self, i: u32) -> Option<&Params> {
        self.enqueue.get(i as usize).or_else(|| self.queued.get(&i))
    }

    /// Checks a given configuration against the space: every parameter is in it and
    /// takes one of its values; errors are `(field, reason)` under `field`.
    pub fn validate_given(&self, field: &str, p: &Params) -> Result<(), (String, String)> {
        for (name, v) in p {
            let f = format!("{field}.{name}");
            let Some(spec) = self.space.get(name) else {
                return Err((f, "names no parameter of search.space".into()));
            };
            let fits = match spec {
                ParamSpec::Uniform { low, high } | ParamSpec::Loguniform { low, high } => {
                    matches!(v, ParamValue::Float(_) | ParamValue::Int(_))
                        && v.as_f64().is_some_and(|x| x >= *low && x <= *high)
                }
                ParamSpec::Int { low, high } => {
                    matches!(v, ParamValue::Int(x) if x >= low && x <= high)
                }
                ParamSpec::Choice { values } | ParamSpec::Grid { values } => values.contains(v),
            };
            if !fits {
                return Err((f, format!("{v:?} is not in the space ({spec:?})")));
            }
        }
        Ok(())
    }

    /// Checks the conditions against the space; errors are `(field, reason)`.
    pub fn validate_conditions(&self) -> Result<(), (String, String)> {
        for (name, cond) in &self.conditions {
            let field = format!("search.conditions.{name}");
            match self.space.get(name) {
                None => return Err((field, "names no parameter of search.space".into())),
                Some(ParamSpec::Grid { .. }) => {
                    return Err((field, "a grid axis cannot be conditional".into()));
                }
                Some(_) => {}
            }
            if cond.is_empty() {
                return Err((field, "expected at least one `parameter = value`".into()));
            }
            for (on, vals) in cond {
                let f = format!("{field}.{on}");
                let values = match self.space.get(on) {
                    _ if self.conditions.contains_key(on) => {
                        return Err((
                            f,
                            "a condition may only name unconditional parameters".into(),
                        ));
                    }
                    Some(ParamSpec::Choice { values } | ParamSpec::Grid { values }) => values,
                    Some(_) => return Err((f, "conditions name choice or grid parameters".into())),
                    None => return Err((f, "names no parameter of search.space".into())),
                };
                if let Some(v) = vals.values().iter().find(|v| !values.contains(v)) {
                    return Err((f, format!("{v} is not one of its values")));
                }
            }
        }
        Ok(())
    }
}

/// Settings of the TPE sampler; the defaults are Optuna 5's (multivariate, constant
/// liar).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TpeSpec {
    /// Trials drawn at random before the model is used (finished trials, as Optuna
    /// counts them).
    #[serde(default = "defaults::tpe_startup")]
    pub n_startup_trials: u32,
    /// Candidates drawn from the good-trial density; the best ratio wins.
    #[serde(default = "defaults::tpe_candidates")]
    pub n_ei_candidates: u32,
    /// Model the joint density of all parameters (Optuna's `multivariate=True`);
    /// `false` draws each parameter from its own density. Default: joint for one
    /// objective, independent for several (Optuna 5's defaults for each).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multivariate: Option<bool>,
    /// Treat running trials as bad results, so that parallel workers do not receive
    /// the same suggestion (Optuna's `constant_liar`).
    #[serde(default = "defaults::yes")]
    pub constant_liar: bool,
    /// Weight of the prior (a wide kernel at the centre of the range).
    #[serde(default = "defaults::one")]
    pub prior_weight: f64,
    /// Widen the kernels at the ends of a range (Optuna's `consider_endpoints`).
    #[serde(default)]
    pub consider_endpoints: bool,
    /// Multivariate only: choice parameters join the joint density too (Optuna's
    /// multivariate TPE). By default each choice is drawn from its own density and the
    /// numbers from their joint one: the joint form ties a category to the region where
    /// it was first found good and can stay on a wrong category for the whole search
    /// (docs/search.md, "Categorical traps").
    #[serde(default)]
    pub joint_categorical: bool,
    /// Several objectives: weigh the good trials by the hypervolume only each one
    /// covers (the MOTPE paper, Optuna before 5.0) instead of equally (Optuna 5).
    #[serde(default)]
    pub hypervolume_weights: bool,
}

impl TpeSpec {
    /// Whether the density is joint for a search of this many objectives.
    pub fn multivariate_for(&self, objectives: usize) -> bool {
        self.multivariate.unwrap_or(objectives == 1)
    }
}

impl Default for TpeSpec {
    fn default() -> Self {
        TpeSpec {
            n_startup_trials: defaults::tpe_startup(),
            n_ei_candidates: defaults::tpe_candidates(),
            multivariate: None,
            constant_liar: true,
            prior_weight: 1.0,
            consider_endpoints: false,
            joint_categorical: false,
            hypervolume_weights: false,
        }
    }
}

/// Early-stopping rules. The time attribute is the reported `step` (the epoch of
/// built-in trials).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum SchedulerSpec {
    /// Asynchronous successive halving (Ray Tune's ASHAScheduler): at each rung, a trial
    /// below the (1 − 1/reduction_factor) quantile of the values recorded there stops.
    Asha {
        /// Steps before the first rung.
        #[serde(default = "defaults::one_u32")]
        grace_period: u32,
        /// Rungs are `grace_period * reduction_factor^k`.
        #[serde(default = "defaults::asha_rf")]
        reduction_factor: f64,
        /// Trials stop (completed) when they report this step.
        #[serde(default = "defaults::asha_max_t")]
        max_t: u32,
        /// Brackets (1: plain ASHA; more: asynchronous Hyperband).
        #[serde(default = "defaults::one_u32")]
        brackets: u32,
    },
    /// Optuna's HyperbandPruner: brackets of successive halving, trials spread over
    /// them by a hash of their number.
    Hyperband {
        /// Steps before a bracket-0 trial's first rung.
        #[serde(default = "defaults::one_u32")]
        min_resource: u32,
        /// Steps of a full trial.
        max_resource: u32,
        /// Rungs grow by this factor.
        #[serde(default = "defaults::hyperband_rf")]
        reduction_factor: u32,
    },
    /// Optuna's MedianPruner: stop a trial whose best value so far is worse than the
    /// median of completed trials' values at the same step.
    Median {
        /// Completed trials needed before anything is stopped.
        #[serde(default = "defaults::median_startup")]
        n_startup_trials: u32,
        /// Steps of every trial that are never judged.
        #[serde(default)]
        n_warmup_steps: u32,
        /// Judge every this many steps after the warm-up.
        #[serde(default = "defaults::one_u32")]
        interval_steps: u32,
        /// Completed trials with a value at the step needed to judge it.
        #[serde(default = "defaults::one_u32")]
        n_min_trials: u32,
    },
}

impl SchedulerSpec {
    /// Checks ranges; errors are `(field, reason)`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let f = |k: &str| format!("search.scheduler.{k}");
        let bad = |k: &str, r: &str| Err((f(k), r.to_owned()));
        match self {
            SchedulerSpec::Asha {
                grace_period,
                reduction_factor,
                max_t,
                brackets,
            } => {
                if *grace_period == 0 {
                    return bad("grace_period", "expected at least 1");
                }
                if !(reduction_factor.is_finite() && *reduction_factor > 1.0) {
                    return bad("reduction_factor", "expected a number > 1");
                }
                if max_t < grace_period {
                    return bad("max_t", "expected at least grace_period");
                }
                if *brackets == 0 {
                    return bad("brackets", "expected at least 1");
                }
            }
            SchedulerSpec::Hyperband {
                min_resource,
                max_resource,
                reduction_factor,
            } => {
                if *min_resource == 0 {
                    return bad("min_resource", "expected at least 1");
                }
                if max_resource < min_resource {
                    return bad("max_resource", "expected at least min_resource");
                }
                if *reduction_factor < 2 {
                    return bad("reduction_factor", "expected an integer >= 2");
                }
            }
            SchedulerSpec::Median { interval_steps, .. } => {
                if *interval_steps == 0 {
                    return bad("interval_steps", "expected at least 1");
                }
            }
        }
        Ok(())
    }
}

impl Default for SearchSpec {
    fn default() -> Self {
        SearchSpec {
            algorithm: Algorithm::Grid,
            metric: defaults::metric(),
            reference_point: None,
            nsga2: Nsga2Spec::default(),
            pbt: PbtSpec::default(),
            mode: None,
            num_samples: defaults::num_samples(),
            max_concurrent: defaults::max_concurrent(),
            seed: None,
            space: BTreeMap::new(),
            tpe: TpeSpec::default(),
            scheduler: None,
            keep: super::Keep::default(),
            conditions: BTreeMap::new(),
            enqueue: Vec::new(),
            warm_start: None,
            constraints: BTreeMap::new(),
            queued: BTreeMap::new(),
            warm: Vec::new(),
        }
    }
}
