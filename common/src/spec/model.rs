//! The built-in trainer's part of a spec: data, model, training settings, and the
//! hyperparameters a search space may set for it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{ParamSpec, SpecError, SweepSpec, defaults};
use crate::params::{ParamValue, Params};

/// File formats of data sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataFormat {
    /// Comma-separated numbers, one sample per row, optionally gzip'd.
    Csv,
    /// MNIST's IDX format (images in `path`, labels in `labels`), optionally gzip'd.
    Idx,
    /// Text (UTF-8, optionally gzip'd) for language models, cut into token windows.
    Text,
    /// Pre-tokenised ids (nanoGPT's `.bin`): little-endian `token_dtype` integers.
    Tokens,
}

/// Integer width of a token file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenDtype {
    /// 2 bytes per token (nanoGPT's default; vocabularies up to 65,536).
    #[default]
    U16,
    /// 4 bytes per token.
    U32,
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
    /// CSV images for convolutional models: `[channels, height, width]` of each row's
    /// features (IDX files carry their own).
    #[serde(default)]
    pub image_shape: Option<[usize; 3]>,
    /// Text: `"bytes"` (one token per byte, vocabulary 256), a Hugging Face
    /// `tokenizer.json` path, or `"model"` (the vocabulary stored in the scanned GGUF).
    #[serde(default)]
    pub tokenizer: Option<String>,
    /// Tokens per window of a language model's data (windows do not overlap; the
    /// validation windows are the last `val_fraction` of the text).
    #[serde(default = "defaults::context")]
    pub context: usize,
    /// Token files: integer width.
    #[serde(default)]
    pub token_dtype: TokenDtype,
    /// Token files: vocabulary size (default: the largest id + 1).
    #[serde(default)]
    pub vocab: Option<usize>,
}

impl DataSpec {
    /// Whether this is language-model data (text or token ids).
    pub fn is_text(&self, format: DataFormat) -> bool {
        matches!(format, DataFormat::Text | DataFormat::Tokens)
    }
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
    /// Conv → batch norm → ReLU → max-pool blocks and a linear head (images).
    Cnn,
    /// A small ResNet of basic blocks (images).
    Resnet,
    /// A decoder-only transformer LM in GPT-2's layout (text).
    Gpt2,
    /// A decoder-only transformer LM in Llama's layout (text).
    Llama,
}

impl Arch {
    /// All names, for error messages.
    pub const NAMES: &'static [&'static str] = &["mlp", "cnn", "resnet", "gpt2", "llama"];

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "mlp" => Arch::Mlp,
            "cnn" => Arch::Cnn,
            "resnet" => Arch::Resnet,
            "gpt2" => Arch::Gpt2,
            "llama" => Arch::Llama,
            _ => return None,
        })
    }

    /// Whether it is a language model (needs text data).
    pub fn is_lm(self) -> bool {
        matches!(self, Arch::Gpt2 | Arch::Llama)
    }

    /// Whether it is convolutional (needs images).
    pub fn is_conv(self) -> bool {
        matches!(self, Arch::Cnn | Arch::Resnet)
    }
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
    /// CNN: output channels of each conv block; ResNet: of each stage.
    #[serde(default = "defaults::channels")]
    pub channels: Vec<usize>,
    /// ResNet: basic blocks per stage.
    #[serde(default = "defaults::blocks")]
    pub blocks: usize,
    /// CNN: batch norm after each convolution.
    #[serde(default = "defaults::yes")]
    pub batch_norm: bool,
    /// Transformer: blocks.
    #[serde(default = "defaults::layers")]
    pub layers: usize,
    /// Transformer: residual width.
    #[serde(default = "defaults::d_model")]
    pub d_model: usize,
    /// Transformer: attention heads.
    #[serde(default = "defaults::heads")]
    pub heads: usize,
    /// Llama: key/value heads (grouped-query attention; default = heads).
    #[serde(default)]
    pub kv_heads: Option<usize>,
    /// Transformer: MLP width (default 4·d_model for GPT-2, 8/3·d_model rounded up to
    /// a multiple of 8 for Llama's SwiGLU).
    #[serde(default)]
    pub d_ff: Option<usize>,
}

impl Default for ModelSpec {
    fn default() -> Self {
        ModelSpec {
            arch: Arch::Mlp,
            depth: defaults::depth(),
            width: defaults::width(),
            activation: Activation::Relu,
            dropout: 0.0,
            channels: defaults::channels(),
            blocks: defaults::blocks(),
            batch_norm: true,
            layers: defaults::layers(),
            d_model: defaults::d_model(),
            heads: defaults::heads(),
            kv_heads: None,
            d_ff: None,
        }
    }
}

impl ModelSpec {
    /// The transformer's MLP width.
    pub fn ff_width(&self) -> usize {
        self.d_ff.unwrap_or(match self.arch {
            Arch::Llama => (8 * self.d_model / 3).div_ceil(8) * 8,
            _ => 4 * self.d_model,
        })
    }
}

/// Learning-rate schedules.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// `lr` throughout (after the warmup).
    #[default]
    Constant,
    /// Cosine decay from `lr` to `lr / 10` over the run, after the warmup.
    Cosine,
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
    /// Learning-rate schedule.
    #[serde(default)]
    pub schedule: Schedule,
    /// Optimizer steps of linear warmup from 0 to `lr`.
    #[serde(default)]
    pub warmup: usize,
    /// Clip the gradients' global norm to this (0: no clipping).
    #[serde(default)]
    pub grad_clip: f64,
    /// Train in a random subspace of this dimension, θ = θ₀ + P ψ (Li et al. 2018,
    /// "Measuring the intrinsic dimension of objective landscapes"); 0 trains every
    /// parameter. Usually searched over: `search.space.subspace_dim`.
    #[serde(default)]
    pub subspace_dim: usize,
    /// The random projection P of subspace training.
    #[serde(default)]
    pub projection: Projection,
    /// The trained model's curvature as trial metrics (`[train.geometry]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub geometry: Option<GeometrySpec>,
}

/// At the end of a trial, the Hessian of the training loss at the trained weights, from
/// exact products (double backward, f64) on the first `samples` training samples: its
/// top eigenvalue by Lanczos and its trace by Hutchinson, reported as the metrics
/// `hessian_lambda_max` (with `hessian_lambda_max_residual`) and `hessian_trace` (with
/// `hessian_trace_std_error`), so that a search can rank or trade off flatness.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeometrySpec {
    /// Training samples the Hessian is taken over (the split's first ones; all if unset).
    #[serde(default)]
    pub samples: Option<usize>,
    /// Lanczos steps (Hessian-vector products) for the top eigenvalue.
    #[serde(default = "defaults::geometry_steps")]
    pub steps: usize,
    /// Rademacher probes for the trace.
    #[serde(default = "defaults::geometry_probes")]
    pub probes: usize,
    /// Seed of the start vector and the probes.
    #[serde(default)]
    pub seed: u64,
}

/// The metrics `[train.geometry]` adds to a trial's final ones.
pub const GEOMETRY_METRICS: &[&str] = &[
    "hessian_lambda_max",
    "hessian_lambda_max_residual",
    "hessian_trace",
    "hessian_trace_std_error",
];

/// The random projection of subspace training; its columns have unit length.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Projection {
    /// Dense Gaussian: `D × d` numbers, for models up to about 10⁵ parameters.
    #[default]
    Dense,
    /// Very sparse (Li, Hastie & Church 2006): each entry ±1 with probability 1/√D,
    /// so about `d √D` non-zeros, for larger models.
    Sparse,
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
            schedule: Schedule::Constant,
            warmup: 0,
            grad_clip: 0.0,
            subspace_dim: 0,
            projection: Projection::Dense,
            geometry: None,
        }
    }
}

/// The metrics a built-in trial reports each epoch.
/// (`val_accuracy` is token accuracy for language models, which also report
/// `val_perplexity`.)
pub const TRAIN_METRICS: &[&str] = &["train_loss", "val_loss", "val_accuracy", "val_perplexity"];

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
    ("arch", Kind::Name(Arch::NAMES)),
    ("channels", Kind::PositiveInt),
    ("blocks", Kind::PositiveInt),
    ("layers", Kind::PositiveInt),
    ("d_model", Kind::PositiveInt),
    ("heads", Kind::PositiveInt),
    ("kv_heads", Kind::PositiveInt),
    ("d_ff", Kind::PositiveInt),
    ("context", Kind::PositiveInt),
    ("warmup", Kind::NonNegInt),
    ("grad_clip", Kind::NonNegFloat),
    ("subspace_dim", Kind::NonNegInt),
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
    /// Tokens per window (language models).
    pub context: usize,
}

impl SweepSpec {
    /// The model and training settings of a trial with these parameters.
    pub fn trial_config(&self, params: &Params) -> Result<TrialConfig, SpecError> {
        let mut c = TrialConfig {
            model: self.model.clone(),
            train: self.train.clone(),
            context: self
                .data
                .as_ref()
                .map_or(defaults::context(), |d| d.context),
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
                "arch" => c.model.arch = Arch::parse(v.as_str().unwrap()).unwrap(),
                // One number for the first block; later blocks keep their ratios to it
                // (e.g. [16, 32] with channels = 8 becomes [8, 16]).
                "channels" => {
                    let first = c.model.channels.first().copied().unwrap_or(1).max(1);
                    c.model.channels = c
                        .model
                        .channels
                        .iter()
                        .map(|ch| (ch * u()).div_ceil(first))
                        .collect();
                }
                "blocks" => c.model.blocks = u(),
                "layers" => c.model.layers = u(),
                "d_model" => c.model.d_model = u(),
                "heads" => c.model.heads = u(),
                "kv_heads" => c.model.kv_heads = Some(u()),
                "d_ff" => c.model.d_ff = Some(u()),
                "context" => c.context = u(),
                "warmup" => c.train.warmup = u(),
                "grad_clip" => c.train.grad_clip = f(),
                "subspace_dim" => c.train.subspace_dim = u(),
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
        let m = &c.model;
        if m.arch.is_conv() && (m.channels.is_empty() || m.channels.contains(&0)) {
            return Err(SpecError::new(
                "model.channels",
                format!(
                    "expected one or more channel counts >= 1, got {:?}",
                    m.channels
                ),
            ));
        }
        if m.arch.is_lm() {
            let kv = m.kv_heads.unwrap_or(m.heads);
            if m.heads == 0 || m.d_model % m.heads != 0 || (m.d_model / m.heads) % 2 != 0 {
                return Err(SpecError::new(
                    "model.heads",
                    format!(
                        "d_model ({}) must split into heads ({}) of an even size",
                        m.d_model, m.heads
                    ),
                ));
            }
            if kv == 0 || m.heads % kv != 0 || (m.arch == Arch::Gpt2 && kv != m.heads) {
                return Err(SpecError::new(
                    "model.kv_heads",
                    format!(
                        "expected a divisor of heads ({}) (GPT-2: equal to it), got {kv}",
                        m.heads
                    ),
                ));
            }
            if m.layers == 0 || c.context == 0 {
                return Err(SpecError::new(
                    "model.layers",
                    "expected at least 1 layer and 1 token of context",
                ));
            }
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

pub(super) fn validate_param(name: &str, p: &ParamSpec) -> Result<(), SpecError> {
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
