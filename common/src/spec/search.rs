//! The search part of a spec: algorithm, metric and mode, and the space's dimensions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::defaults;
use crate::params::ParamValue;

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

/// The search.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchSpec {
    /// Algorithm.
    #[serde(default)]
    pub algorithm: Algorithm,
    /// The metric that ranks trials (its last reported value).
    #[serde(default = "defaults::metric")]
    pub metric: String,
    /// Whether the metric is minimised or maximised; defaults from the metric's name.
    #[serde(default)]
    pub mode: Option<Mode>,
    /// Random: the number of trials. Grid: how many times the grid is repeated.
    #[serde(default = "defaults::num_samples")]
    pub num_samples: u32,
    /// Trials of this sweep running at once (0: as many as workers take).
    #[serde(default = "defaults::max_concurrent")]
    pub max_concurrent: u32,
    /// Seed of the sampler.
    #[serde(default)]
    pub seed: u64,
    /// Parameters searched over, by name.
    #[serde(default)]
    pub space: BTreeMap<String, ParamSpec>,
}

impl Default for SearchSpec {
    fn default() -> Self {
        SearchSpec {
            algorithm: Algorithm::Grid,
            metric: defaults::metric(),
            mode: None,
            num_samples: defaults::num_samples(),
            max_concurrent: defaults::max_concurrent(),
            seed: 0,
            space: BTreeMap::new(),
        }
    }
}
