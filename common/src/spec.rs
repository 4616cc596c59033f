//! Sweep specifications: what a user writes in TOML or YAML, parsed strictly (unknown
//! keys and wrong types are errors that name the key) and validated with messages that
//! name the field and the reason.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::grid::Grid;
use crate::landscape::LandscapeSpec;
use crate::params::{ParamValue, Params};

/// A user's mistake in a spec: where it is and what was expected.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{}{field}: {reason}", file.as_ref().map(|f| format!("{}: ", f.display())).unwrap_or_default())]
pub struct SpecError {
    /// The spec file, when the spec came from one.
    pub file: Option<PathBuf>,
    /// Dotted path of the offending key, e.g. `search.space.lr.low`.
    pub field: String,
    /// What is wrong, and what was expected.
    pub reason: String,
}

impl SpecError {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        SpecError {
            file: None,
            field: field.into(),
            reason: reason.into(),
        }
    }

    fn in_file(mut self, file: &Path) -> Self {
        self.file = Some(file.to_owned());
        self
    }
}

/// A whole sweep.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepSpec {
    /// A human name; sweep ids start with it.
    pub name: String,
    /// What kind of sweep this is.
    #[serde(default)]
    pub kind: SweepKind,
    /// The data set every trial trains on.
    pub data: DataSpec,
    /// The model architecture (defaults, overridable per trial from `search.space`).
    #[serde(default)]
    pub model: ModelSpec,
    /// Training settings (defaults, overridable per trial from `search.space`).
    #[serde(default)]
    pub train: TrainSpec,
    /// The search: space, algorithm, metric, budget, concurrency (search sweeps).
    #[serde(default)]
    pub search: SearchSpec,
    /// The scan (landscape sweeps).
    #[serde(default)]
    pub landscape: Option<LandscapeSpec>,
}

/// The kinds of sweep Ridgeline runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SweepKind {
    /// Hyperparameter search: every unit is a trial that trains a model.
    #[default]
    Search,
    /// Loss-landscape scan of one trained model: every unit is a tile of grid points.
    Landscape,
}

/// File formats of data sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataFormat {
    /// Comma-separated numbers, one sample per row, optionally gzip'd.
    Csv,
    /// MNIST's IDX format (images in `path`, labels in `labels`), optionally gzip'd.
    Idx,
}

/// How input features are scaled before training.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Normalize {
    /// Zero mean, unit variance per feature, with statistics from the training split.
    #[default]
    Standard,
    /// Divide by the largest absolute value of the training split.
    Max,
    /// Leave features as they are.
    None,
}

/// What the data's targets are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// One integer class label per sample.
    #[default]
    Classification,
    /// Real-valued targets: the last `target_columns` CSV columns.
    Regression,
}

/// Where the data comes from and how it is split.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    /// Samples: a CSV file, or IDX images. Relative paths are relative to the spec file.
    pub path: PathBuf,
    /// Format; inferred from the file name when absent.
    #[serde(default)]
    pub format: Option<DataFormat>,
    /// IDX labels file (required for `idx`).
    #[serde(default)]
    pub labels: Option<PathBuf>,
    /// CSV: index of the label column; negative counts from the end (-1: last).
    #[serde(default = "defaults::label_column")]
    pub label_column: i64,
    /// Classification (a label column) or regression (real targets).
    #[serde(default)]
    pub task: Task,
    /// Regression: how many trailing CSV columns are targets.
    #[serde(default = "defaults::target_columns")]
    pub target_columns: usize,
    /// CSV: whether the first row is a header.
    #[serde(default)]
    pub header: bool,
    /// Feature scaling.
    #[serde(default)]
    pub normalize: Normalize,
    /// Fraction of samples held out for validation.
    #[serde(default = "defaults::val_fraction")]
    pub val_fraction: f64,
    /// Use at most this many samples (after shuffling).
    #[serde(default)]
    pub limit: Option<usize>,
    /// Seed of the shuffle that makes the train/validation split.
    #[serde(default)]
    pub split_seed: u64,
}

/// Activation functions of the built-in MLP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// max(0, x)
    #[default]
    Relu,
    /// tanh(x)
    Tanh,
    /// Gaussian error linear unit (tanh approximation).
    Gelu,
    /// x * sigmoid(x)
    Silu,
}

impl Activation {
    /// All names, for error messages.
    pub const NAMES: &'static [&'static str] = &["relu", "tanh", "gelu", "silu"];

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "relu" => Activation::Relu,
            "tanh" => Activation::Tanh,
            "gelu" => Activation::Gelu,
            "silu" => Activation::Silu,
            _ => return None,
        })
    }
}

/// Built-in model architectures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// A multi-layer perceptron.
    #[default]
    Mlp,
}

/// The model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Architecture.
    #[serde(default)]
    pub arch: Arch,
    /// Number of hidden layers (0 is multinomial logistic regression).
    #[serde(default = "defaults::depth")]
    pub depth: usize,
    /// Units per hidden layer.
    #[serde(default = "defaults::width")]
    pub width: usize,
    /// Activation after each hidden layer.
    #[serde(default)]
    pub activation: Activation,
    /// Dropout probability after each hidden activation, during training.
    #[serde(default)]
    pub dropout: f64,
}

impl Default for ModelSpec {
    fn default() -> Self {
        ModelSpec {
            arch: Arch::Mlp,
            depth: defaults::depth(),
            width: defaults::width(),
            activation: Activation::Relu,
            dropout: 0.0,
        }
    }
}

/// Optimizers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Optimizer {
    /// Decoupled weight decay Adam (Loshchilov & Hutter).
    #[default]
    Adamw,
    /// Stochastic gradient descent with (heavy-ball) momentum and L2 weight decay.
    Sgd,
}

impl Optimizer {
    /// All names, for error messages.
    pub const NAMES: &'static [&'static str] = &["adamw", "sgd"];

    fn parse(s: &str) -> Option<Self> {
        match s {
            "adamw" => Some(Optimizer::Adamw),
            "sgd" => Some(Optimizer::Sgd),
            _ => None,
        }
    }
}

/// Training settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSpec {
    /// Passes over the training split.
    #[serde(default = "defaults::epochs")]
    pub epochs: usize,
    /// Samples per mini-batch.
    #[serde(default = "defaults::batch_size")]
    pub batch_size: usize,
    /// Optimizer.
    #[serde(default)]
    pub optimizer: Optimizer,
    /// Learning rate.
    #[serde(default = "defaults::lr")]
    pub lr: f64,
    /// SGD momentum (ignored by AdamW).
    #[serde(default = "defaults::momentum")]
    pub momentum: f64,
    /// Weight decay: decoupled for AdamW, L2 for SGD.
    #[serde(default)]
    pub weight_decay: f64,
    /// Seed of weight initialisation, dropout and batch order.
    #[serde(default)]
    pub seed: u64,
    /// Keep every epoch's weights (`model_epoch_NNN.safetensors`), e.g. for PCA
    /// directions of a landscape scan.
    #[serde(default)]
    pub keep_checkpoints: bool,
}

impl Default for TrainSpec {
    fn default() -> Self {
        TrainSpec {
            epochs: defaults::epochs(),
            batch_size: defaults::batch_size(),
            optimizer: Optimizer::Adamw,
            lr: defaults::lr(),
            momentum: defaults::momentum(),
            weight_decay: 0.0,
            seed: 0,
            keep_checkpoints: false,
        }
    }
}

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

mod defaults {
    pub fn target_columns() -> usize {
        1
    }
    pub fn label_column() -> i64 {
        -1
    }
    pub fn val_fraction() -> f64 {
        0.2
    }
    pub fn depth() -> usize {
        1
    }
    pub fn width() -> usize {
        64
    }
    pub fn epochs() -> usize {
        10
    }
    pub fn batch_size() -> usize {
        64
    }
    pub fn lr() -> f64 {
        1e-3
    }
    pub fn momentum() -> f64 {
        0.9
    }
    pub fn metric() -> String {
        "val_accuracy".into()
    }
    pub fn num_samples() -> u32 {
        1
    }
    pub fn max_concurrent() -> u32 {
        0
    }
}

/// The metrics a built-in trial reports each epoch.
pub const TRAIN_METRICS: &[&str] = &["train_loss", "val_loss", "val_accuracy"];

/// The hyperparameters a search space may set, with their expected kind.
const HYPERPARAMETERS: &[(&str, Kind)] = &[
    ("lr", Kind::PositiveFloat),
    ("momentum", Kind::UnitFloat),
    ("weight_decay", Kind::NonNegFloat),
    ("dropout", Kind::UnitFloat),
    ("batch_size", Kind::PositiveInt),
    ("epochs", Kind::PositiveInt),
    ("depth", Kind::NonNegInt),
    ("width", Kind::PositiveInt),
    ("seed", Kind::NonNegInt),
    ("activation", Kind::Name(Activation::NAMES)),
    ("optimizer", Kind::Name(Optimizer::NAMES)),
];

#[derive(Clone, Copy)]
enum Kind {
    PositiveFloat,
    NonNegFloat,
    UnitFloat,
    PositiveInt,
    NonNegInt,
    Name(&'static [&'static str]),
}

impl Kind {
    fn describe(self) -> String {
        match self {
            Kind::PositiveFloat => "a number > 0".into(),
            Kind::NonNegFloat => "a number >= 0".into(),
            Kind::UnitFloat => "a number in [0, 1)".into(),
            Kind::PositiveInt => "an integer >= 1".into(),
            Kind::NonNegInt => "an integer >= 0".into(),
            Kind::Name(names) => format!("one of {}", names.join(", ")),
        }
    }

    fn accepts(self, v: &ParamValue) -> bool {
        match self {
            Kind::PositiveFloat => v.as_f64().is_some_and(|x| x > 0.0 && x.is_finite()),
            Kind::NonNegFloat => v.as_f64().is_some_and(|x| x >= 0.0 && x.is_finite()),
            Kind::UnitFloat => v.as_f64().is_some_and(|x| (0.0..1.0).contains(&x)),
            Kind::PositiveInt => matches!(v, ParamValue::Int(i) if *i >= 1),
            Kind::NonNegInt => matches!(v, ParamValue::Int(i) if *i >= 0),
            Kind::Name(names) => v.as_str().is_some_and(|s| names.contains(&s)),
        }
    }
}

/// The settings of one trial: the spec's model and training defaults with the trial's
/// parameters applied.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrialConfig {
    /// Model.
    pub model: ModelSpec,
    /// Training.
    pub train: TrainSpec,
}

impl SweepSpec {
    /// Reads and validates a spec file (TOML, or YAML for `.yaml`/`.yml`). Relative data
    /// paths are resolved against the spec's folder, so the result can be sent anywhere.
    pub fn from_file(path: &Path) -> Result<Self, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            SpecError::new("(file)", format!("cannot read spec: {e}")).in_file(path)
        })?;
        let yaml = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        );
        let mut spec = if yaml {
            Self::from_yaml(&text)
        } else {
            Self::from_toml(&text)
        }
        .map_err(|e| e.in_file(path))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let base = std::fs::canonicalize(base).unwrap_or_else(|_| base.to_owned());
        spec.data.path = base.join(&spec.data.path);
        if let Some(l) = &spec.data.labels {
            spec.data.labels = Some(base.join(l));
        }
        if let Some(l) = &mut spec.landscape {
            if let Some(c) = &l.checkpoint {
                if !c.starts_with("sweep:") {
                    l.checkpoint = Some(base.join(c).display().to_string());
                }
            }
            if let Some(t) = &l.train {
                l.train = Some(base.join(t));
            }
            let d = &mut l.directions;
            for c in [&mut d.to, &mut d.y_to].into_iter().flatten() {
                if !c.starts_with("sweep:") && !c.starts_with("trial:") {
                    *c = base.join(&*c).display().to_string();
                }
            }
            if let Some(f) = &d.file {
                d.file = Some(base.join(f));
            }
        }
        Ok(spec)
    }

    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<Self, SpecError> {
        let de = toml::Deserializer::parse(text)
            .map_err(|e| SpecError::new("(toml)", one_line(&e.to_string())))?;
        let spec: SweepSpec = serde_path_to_error::deserialize(de).map_err(path_error)?;
        spec.validate()?;
        Ok(spec)
    }

    /// Parses and validates YAML text.
    pub fn from_yaml(text: &str) -> Result<Self, SpecError> {
        let de = serde_norway::Deserializer::from_str(text);
        let spec: SweepSpec = serde_path_to_error::deserialize(de).map_err(path_error)?;
        spec.validate()?;
        Ok(spec)
    }

    /// Parses and validates the JSON form that travels on the wire.
    pub fn from_json(text: &str) -> Result<Self, SpecError> {
        let mut de = serde_json::Deserializer::from_str(text);
        let spec: SweepSpec = serde_path_to_error::deserialize(&mut de).map_err(path_error)?;
        spec.validate()?;
        Ok(spec)
    }

    /// The wire form.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("specs always serialise")
    }

    /// The metric that ranks units: the search metric, or `loss` for scans.
    pub fn metric(&self) -> &str {
        match self.kind {
            SweepKind::Search => &self.search.metric,
            SweepKind::Landscape => "loss",
        }
    }

    /// Units of this sweep running at once (0: no limit).
    pub fn max_concurrent(&self) -> u32 {
        match self.kind {
            SweepKind::Search => self.search.max_concurrent,
            SweepKind::Landscape => 0,
        }
    }

    /// Number of work units: trials, or tiles of a scan.
    pub fn total_units(&self) -> u64 {
        match (&self.kind, &self.landscape) {
            (SweepKind::Landscape, Some(l)) => l.units() as u64,
            _ => self.total_trials(),
        }
    }

    /// The mode, defaulting from the metric's name: losses are minimised, anything else
    /// (accuracies, scores) maximised.
    pub fn mode(&self) -> Mode {
        if self.kind == SweepKind::Landscape {
            return Mode::Min;
        }
        self.search
            .mode
            .unwrap_or(if self.search.metric.contains("loss") {
                Mode::Min
            } else {
                Mode::Max
            })
    }

    /// The format of the data, explicit or inferred from the file name.
    pub fn data_format(&self) -> DataFormat {
        self.data.format.unwrap_or_else(|| {
            let name = self.data.path.to_string_lossy();
            if name.contains("idx") || name.contains("ubyte") {
                DataFormat::Idx
            } else {
                DataFormat::Csv
            }
        })
    }

    /// The grid formed by the space's `grid` axes, in name order.
    pub fn grid(&self) -> Grid {
        let axes = self
            .search
            .space
            .iter()
            .filter_map(|(name, p)| match p {
                ParamSpec::Grid { values } => Some((name.clone(), values.clone())),
                _ => None,
            })
            .collect();
        Grid::new(axes).expect("validated: axes non-empty and product fits")
    }

    /// Total number of trials the search will run.
    pub fn total_trials(&self) -> u64 {
        match self.search.algorithm {
            Algorithm::Grid => self.grid().len() * u64::from(self.search.num_samples),
            Algorithm::Random => u64::from(self.search.num_samples),
        }
    }

    /// Checks everything serde cannot: ranges, names, the space's parameters.
    pub fn validate(&self) -> Result<(), SpecError> {
        let err = |f: &str, r: String| Err(SpecError::new(f, r));
        if self.name.trim().is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return err(
                "name",
                format!("expected letters, digits, '-' or '_', got {:?}", self.name),
            );
        }
        let d = &self.data;
        if !(d.val_fraction > 0.0 && d.val_fraction < 1.0) {
            return err(
                "data.val_fraction",
                format!("expected a number in (0, 1), got {}", d.val_fraction),
            );
        }
        if self.data_format() == DataFormat::Idx && d.labels.is_none() {
            return err("data.labels", "an IDX data set needs a labels file".into());
        }
        if d.limit == Some(0) {
            return err("data.limit", "expected at least 1 sample".into());
        }
        if d.task == Task::Regression && d.target_columns == 0 {
            return err("data.target_columns", "expected at least 1".into());
        }
        match (self.kind, &self.landscape) {
            (SweepKind::Landscape, None) => {
                return err(
                    "landscape",
                    "a landscape sweep needs a [landscape] section".into(),
                );
            }
            (SweepKind::Search, Some(_)) => {
                return err(
                    "landscape",
                    "only landscape sweeps take a [landscape] section; set kind = \"landscape\""
                        .into(),
                );
            }
            (SweepKind::Landscape, Some(l)) => {
                if !self.search.space.is_empty() {
                    return err(
                        "search.space",
                        "a landscape sweep has no search space".into(),
                    );
                }
                l.validate().map_err(|(f, r)| SpecError::new(f, r))?;
                if self.total_units() > u64::from(u32::MAX) {
                    return err("landscape.tile", "more than 2^32 tiles".into());
                }
                return Ok(());
            }
            (SweepKind::Search, None) => {}
        }
        if d.task == Task::Regression {
            return err(
                "data.task",
                "the built-in trainer classifies; regression data is for landscape scans".into(),
            );
        }
        // The defaults must be valid on their own: a trial with no overrides uses them.
        self.trial_config(&Params::new())?;
        let s = &self.search;
        if !TRAIN_METRICS.contains(&s.metric.as_str()) {
            return err(
                "search.metric",
                format!(
                    "unknown metric {:?}; expected one of {}",
                    s.metric,
                    TRAIN_METRICS.join(", ")
                ),
            );
        }
        if s.num_samples == 0 {
            return err("search.num_samples", "expected at least 1".into());
        }
        for (name, p) in &s.space {
            validate_param(name, p)?;
        }
        if let Err(e) = Grid::new(
            s.space
                .iter()
                .filter_map(|(n, p)| match p {
                    ParamSpec::Grid { values } => Some((n.clone(), values.clone())),
                    _ => None,
                })
                .collect(),
        ) {
            return err("search.space", e.to_string());
        }
        if self.total_trials() > u64::from(u32::MAX) {
            return err(
                "search",
                format!("{} trials is more than 2^32", self.total_trials()),
            );
        }
        Ok(())
    }

    /// The model and training settings of a trial with these parameters.
    pub fn trial_config(&self, params: &Params) -> Result<TrialConfig, SpecError> {
        let mut c = TrialConfig {
            model: self.model.clone(),
            train: self.train.clone(),
        };
        for (name, v) in params {
            let field = format!("search.space.{name}");
            let kind = lookup(name).map_err(|r| SpecError::new(&field, r))?;
            if !kind.accepts(v) {
                return Err(SpecError::new(
                    field,
                    format!("expected {}, got {v}", kind.describe()),
                ));
            }
            let f = || v.as_f64().expect("checked by accepts");
            let u = || v.as_i64().expect("checked by accepts") as usize;
            match name.as_str() {
                "lr" => c.train.lr = f(),
                "momentum" => c.train.momentum = f(),
                "weight_decay" => c.train.weight_decay = f(),
                "dropout" => c.model.dropout = f(),
                "batch_size" => c.train.batch_size = u(),
                "epochs" => c.train.epochs = u(),
                "depth" => c.model.depth = u(),
                "width" => c.model.width = u(),
                "seed" => c.train.seed = u() as u64,
                "activation" => {
                    c.model.activation = Activation::parse(v.as_str().unwrap()).unwrap()
                }
                "optimizer" => c.train.optimizer = Optimizer::parse(v.as_str().unwrap()).unwrap(),
                _ => unreachable!("lookup knows every name"),
            }
        }
        let t = &c.train;
        let checks: [(&str, bool, String); 6] = [
            (
                "train.lr",
                t.lr > 0.0 && t.lr.is_finite(),
                format!("expected a number > 0, got {}", t.lr),
            ),
            (
                "train.momentum",
                (0.0..1.0).contains(&t.momentum),
                format!("expected a number in [0, 1), got {}", t.momentum),
            ),
            (
                "train.weight_decay",
                t.weight_decay >= 0.0 && t.weight_decay.is_finite(),
                format!("expected a number >= 0, got {}", t.weight_decay),
            ),
            ("train.epochs", t.epochs >= 1, "expected at least 1".into()),
            (
                "train.batch_size",
                t.batch_size >= 1,
                "expected at least 1".into(),
            ),
            (
                "model.dropout",
                (0.0..1.0).contains(&c.model.dropout),
                format!("expected a number in [0, 1), got {}", c.model.dropout),
            ),
        ];
        for (field, ok, reason) in checks {
            if !ok {
                return Err(SpecError::new(field, reason));
            }
        }
        if c.model.width == 0 {
            return Err(SpecError::new("model.width", "expected at least 1"));
        }
        Ok(c)
    }
}

fn lookup(name: &str) -> Result<Kind, String> {
    HYPERPARAMETERS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, k)| *k)
        .ok_or_else(|| {
            let names: Vec<&str> = HYPERPARAMETERS.iter().map(|(n, _)| *n).collect();
            format!(
                "unknown hyperparameter; expected one of {}",
                names.join(", ")
            )
        })
}

fn validate_param(name: &str, p: &ParamSpec) -> Result<(), SpecError> {
    let field = format!("search.space.{name}");
    let kind = lookup(name).map_err(|r| SpecError::new(&field, r))?;
    let numeric = !matches!(kind, Kind::Name(_));
    let fail = |r: String| Err(SpecError::new(&field, r));
    match p {
        ParamSpec::Uniform { low, high } | ParamSpec::Loguniform { low, high } => {
            let log = matches!(p, ParamSpec::Loguniform { .. });
            if !numeric || matches!(kind, Kind::PositiveInt | Kind::NonNegInt) {
                return fail(format!(
                    "a real-valued distribution cannot set it; expected {}",
                    kind.describe()
                ));
            }
            if !(low.is_finite() && high.is_finite() && low < high) {
                return fail(format!("expected low < high, got low={low}, high={high}"));
            }
            if log && *low <= 0.0 {
                return fail(format!("loguniform needs low > 0, got {low}"));
            }
            for v in [*low, *high] {
                // The upper bound is excluded, so it may sit on an open end (dropout < 1).
                if v != *high && !kind.accepts(&ParamValue::Float(v)) {
                    return fail(format!("expected {}, got bound {v}", kind.describe()));
                }
            }
        }
        ParamSpec::Int { low, high } => {
            if !matches!(kind, Kind::PositiveInt | Kind::NonNegInt) {
                return fail(format!(
                    "an integer distribution cannot set it; expected {}",
                    kind.describe()
                ));
            }
            if low > high {
                return fail(format!("expected low <= high, got low={low}, high={high}"));
            }
            for v in [*low, *high] {
                if !kind.accepts(&ParamValue::Int(v)) {
                    return fail(format!("expected {}, got bound {v}", kind.describe()));
                }
            }
        }
        ParamSpec::Choice { values } | ParamSpec::Grid { values } => {
            if values.is_empty() {
                return fail("expected at least one value".into());
            }
            for v in values {
                if !kind.accepts(v) {
                    return fail(format!("expected {}, got {v}", kind.describe()));
                }
            }
        }
    }
    Ok(())
}

fn path_error<E: std::fmt::Display>(e: serde_path_to_error::Error<E>) -> SpecError {
    let path = e.path().to_string();
    let field = if path == "." || path.is_empty() {
        "(top level)".to_owned()
    } else {
        path
    };
    SpecError::new(field, one_line(&e.inner().to_string()))
}

/// Error messages of the parsers span several lines (a source excerpt); keep the first
/// line that carries the reason so that errors stay one line.
fn one_line(s: &str) -> String {
    let lines: Vec<&str> = s.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    // toml prints "TOML parse error at line L, column C", the excerpt, then the reason.
    match (lines.first(), lines.last()) {
        (Some(first), Some(last)) if first != last && first.starts_with("TOML parse error") => {
            format!(
                "{last} ({})",
                first
                    .trim_start_matches("TOML parse error ")
                    .trim_end_matches(':')
            )
        }
        (Some(first), _) => first.to_string(),
        _ => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
name = "t"
[data]
path = "d.csv"
[train]
epochs = 3
[search]
algorithm = "grid"
[search.space]
lr = { type = "loguniform", low = 1e-4, high = 1e-1 }
width = { type = "grid", values = [16, 32] }
activation = { type = "grid", values = ["relu", "tanh"] }
"#;

    fn err_of(text: &str) -> SpecError {
        SweepSpec::from_toml(text).expect_err("spec should be refused")
    }

    #[test]
    fn parses_defaults_and_space() {
        let s = SweepSpec::from_toml(BASE).unwrap();
        assert_eq!(s.train.epochs, 3);
        assert_eq!(s.train.batch_size, 64);
        assert_eq!(s.mode(), Mode::Max);
        assert_eq!(s.total_trials(), 4);
        assert_eq!(s.grid().axes()[0].0, "activation");
        let round = SweepSpec::from_json(&s.to_json()).unwrap();
        assert_eq!(round, s);
    }

    #[test]
    fn yaml_is_accepted_too() {
        let y = "name: y\ndata: {path: d.csv}\nsearch:\n  algorithm: random\n  num_samples: 7\n  space:\n    dropout: {type: uniform, low: 0.0, high: 0.5}\n";
        let s = SweepSpec::from_yaml(y).unwrap();
        assert_eq!(s.total_trials(), 7);
    }

    #[test]
    fn errors_name_the_key() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "[train]\nepochs = 3",
                "[train]\nepochz = 3",
                "train.epochz: unknown field `epochz`, expected one of `epochs`",
            ),
            (
                "[train]\nepochs = 3",
                "[train]\nepochs = \"three\"",
                "train.epochs: invalid type: string \"three\"",
            ),
            (
                "lr = { type = \"loguniform\", low = 1e-4, high = 1e-1 }",
                "lr = { type = \"loguniform\", low = 0.0, high = 1e-1 }",
                "search.space.lr: loguniform needs low > 0",
            ),
            (
                "lr = { type = \"loguniform\", low = 1e-4, high = 1e-1 }",
                "learning_rate = { type = \"uniform\", low = 0.1, high = 0.2 }",
                "search.space.learning_rate: unknown hyperparameter",
            ),
            (
                "width = { type = \"grid\", values = [16, 32] }",
                "width = { type = \"grid\", values = [16, 0.5] }",
                "search.space.width: expected an integer >= 1, got 0.5",
            ),
            (
                "width = { type = \"grid\", values = [16, 32] }",
                "width = { type = \"grid\", values = [] }",
                "search.space.width: expected at least one value",
            ),
            (
                "width = { type = \"grid\", values = [16, 32] }",
                "width = { type = \"gird\", values = [16] }",
                "search.space.width.type: unknown variant `gird`, expected one of `uniform`",
            ),
            (
                "algorithm = \"grid\"",
                "algorithm = \"bayes\"",
                "search.algorithm: unknown variant `bayes`",
            ),
            (
                "algorithm = \"grid\"",
                "algorithm = \"grid\"\nmetric = \"acc\"",
                "search.metric: unknown metric \"acc\"",
            ),
        ];
        for (from, to, want) in cases {
            assert!(BASE.contains(from), "case text {from:?} not in BASE");
            let e = err_of(&BASE.replacen(from, to, 1));
            let msg = e.to_string();
            assert!(msg.starts_with(want), "got {msg:?}, want prefix {want:?}");
            assert!(!msg.contains('\n'), "multi-line error {msg:?}");
        }
    }

    #[test]
    fn trial_config_applies_overrides() {
        let s = SweepSpec::from_toml(BASE).unwrap();
        let mut p = Params::new();
        p.insert("width".into(), ParamValue::Int(32));
        p.insert("activation".into(), ParamValue::Str("tanh".into()));
        p.insert("lr".into(), ParamValue::Float(0.01));
        let c = s.trial_config(&p).unwrap();
        assert_eq!(c.model.width, 32);
        assert_eq!(c.model.activation, Activation::Tanh);
        assert_eq!(c.train.lr, 0.01);
    }
}
