//! The models the worker trains and scans, one file per family behind [`Model`].
//!
//! A model is a list of named tensors (the names its checkpoints use, Hugging Face's for
//! transformers) held in `Var`s, and a forward pass that reads them. Everything else is
//! written once against that: training, landscape scans (which overwrite the tensors in
//! place with θ* + α·d₁ + β·d₂), and checkpoints. What counts as a filter for the
//! normalisation of directions follows from a tensor's name and shape
//! ([`ridgeline_common::landscape::param_kind`]), the same rule on every machine.

use std::collections::HashMap;

use candle_core::{D, DType, Device, Result, Tensor, Var};
use ridgeline_common::landscape::{ParamKind, param_kind};
use ridgeline_common::rng::Rng;
use serde::{Deserialize, Serialize};

mod causal_softmax;
pub mod cnn;
mod dense;
mod gelu;
mod gemm;
mod layer_norm;
mod operand;
mod par;
pub(crate) use dense::Stored;
pub mod gguf;
pub mod hf;
pub mod mlp;
mod softmax_ce;
pub mod transformer;

pub use cnn::{Cnn, CnnConfig};
pub use mlp::{Mlp, MlpConfig};
pub use transformer::{Layout, Transformer, TransformerConfig};

/// One named tensor of a model.
#[derive(Clone, Debug)]
pub struct Param {
    /// Its checkpoint name, e.g. `model.layers.0.self_attn.q_proj.weight`.
    pub name: String,
    /// The value the forward pass reads.
    pub var: Var,
}

impl Param {
    /// A parameter from a tensor.
    pub fn new(name: impl Into<String>, t: &Tensor) -> Result<Self> {
        Ok(Param {
            name: name.into(),
            var: Var::from_tensor(t)?,
        })
    }

    /// What it is, for normalisation and training.
    pub fn kind(&self) -> ParamKind {
        param_kind(&self.name, self.var.dims())
    }

    /// Whether training updates it (batch-norm statistics are updated by the forward
    /// pass instead).
    pub fn trainable(&self) -> bool {
        self.kind() != ParamKind::State
    }
}

/// What a model's outputs are scored against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    /// `[n, classes]` logits against `n` class labels.
    Classification,
    /// `[batch, tokens, vocab]` logits against the next tokens `[batch, tokens]`.
    LanguageModel,
}

/// A model: named tensors and a forward pass.
pub trait Model: Send + Sync {
    /// What is needed to rebuild it (`model.json`).
    fn config(&self) -> ModelConfig;

    /// Every tensor, parameters and batch-norm statistics, in a fixed order.
    fn params(&self) -> &[Param];

    /// Logits for a batch of inputs: features `[n, d]` or images `[n, c·h·w]` (f32), or
    /// token ids `[batch, tokens]` (u32). With `train`, the model is in training mode
    /// (dropout masks drawn from it, batch statistics in batch norm, and the running
    /// statistics updated); without, it is evaluated as in a scan.
    fn forward(&self, x: &Tensor, train: Option<&mut Rng>) -> Result<Tensor>;

    /// Summed NLL, correct predictions and predictions of the model in evaluation mode
    /// on inputs `x` against targets `y`, as [`nll_and_hits`] of [`Model::forward`]
    /// gives them; models may compute it without building the graph candle's backward
    /// needs (a scan's points, validation).
    fn score(&self, x: &Tensor, y: &Tensor) -> Result<(f64, f64, usize)> {
        nll_and_hits(&self.forward(x, None)?, y)
    }

    /// What its outputs are scored against.
    fn task(&self) -> Task {
        Task::Classification
    }

    /// Parameters that training updates.
    fn trainable(&self) -> Vec<Var> {
        self.params()
            .iter()
            .filter(|p| p.trainable())
            .map(|p| p.var.clone())
            .collect()
    }

    /// Named tensors, as saved in checkpoints.
    fn named_tensors(&self) -> Vec<(String, Tensor)> {
        self.params()
            .iter()
            .map(|p| (p.name.clone(), p.var.as_tensor().clone()))
            .collect()
    }

    /// Number of scalar parameters (statistics included).
    fn parameter_count(&self) -> usize {
        self.params().iter().map(|p| p.var.elem_count()).sum()
    }
}

/// Every built-in architecture's config, tagged by `arch` in `model.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "arch", rename_all = "lowercase")]
pub enum ModelConfig {
    /// Multi-layer perceptron.
    Mlp(MlpConfig),
    /// Convolutional network: conv → (batch norm) → ReLU → max-pool blocks.
    Cnn(CnnConfig),
    /// Small ResNet of basic blocks.
    Resnet(CnnConfig),
    /// Decoder-only transformer in GPT-2's layout.
    Gpt2(TransformerConfig),
    /// Decoder-only transformer in Llama's layout.
    Llama(TransformerConfig),
}

/// How a tensor is initialised when a model is created fresh.
#[derive(Clone, Copy, Debug)]
pub enum Init {
    /// `N(0, std²)`.
    Normal(f64),
    /// Uniform in `[-bound, bound]`.
    Uniform(f64),
    /// All zeros.
    Zeros,
    /// All ones.
    Ones,
}

/// Where a model's constructor gets each tensor, by name and shape: fresh values
/// ([`ModelConfig::init`]) or a checkpoint's ([`ModelConfig::load`]). Every family
/// builds itself through one, so names and shapes are written once.
pub type Source<'a> = dyn FnMut(&str, &[usize], Init) -> Result<Tensor> + 'a;

/// A [`Source`] of fresh values: every tensor drawn from its own stream of `seed`,
/// keyed by its name, so that initialisation does not depend on build order.
pub fn fresh(
    seed: u64,
    dtype: DType,
    device: &Device,
) -> impl FnMut(&str, &[usize], Init) -> Result<Tensor> + '_ {
    move |name, shape, init| {
        let n: usize = shape.iter().product();
        let mut rng = Rng::stream(seed, ridgeline_common::landscape::name_key(name));
        let v: Vec<f32> = match init {
            Init::Normal(std) => (0..n).map(|_| (rng.normal() * std) as f32).collect(),
            Init::Uniform(b) => (0..n)
                .map(|_| ((2.0 * rng.next_f64() - 1.0) * b) as f32)
                .collect(),
            Init::Zeros => vec![0.0; n],
            Init::Ones => vec![1.0; n],
        };
        Tensor::from_vec(v, shape, device)?.to_dtype(dtype)
    }
}

impl ModelConfig {
    fn build(&self, src: &mut Source<'_>) -> Result<Box<dyn Model>> {
        Ok(match self {
            ModelConfig::Mlp(c) => Box::new(Mlp::build(c.clone(), src)?),
            ModelConfig::Cnn(c) => Box::new(Cnn::build(c.clone(), false, src)?),
            ModelConfig::Resnet(c) => Box::new(Cnn::build(c.clone(), true, src)?),
            ModelConfig::Gpt2(c) => Box::new(Transformer::build(c.clone(), Layout::Gpt2, src)?),
            ModelConfig::Llama(c) => Box::new(Transformer::build(c.clone(), Layout::Llama, src)?),
        })
    }

    /// A freshly initialised model, deterministic in `seed`: every tensor is drawn from
    /// its own stream, keyed by its name.
    pub fn init(&self, seed: u64, dtype: DType, device: &Device) -> Result<Box<dyn Model>> {
        self.build(&mut fresh(seed, dtype, device))
    }

    /// The model with its tensors taken, by name, from `tensors` (converted to
    /// `dtype`); names it does not use are ignored, a missing or misshapen one is an
    /// error naming it.
    pub fn load(
        &self,
        tensors: &HashMap<String, Tensor>,
        dtype: DType,
        device: &Device,
    ) -> std::result::Result<Box<dyn Model>, String> {
        self.build(&mut |name, shape, _| {
            let t = tensors
                .get(name)
                .ok_or_else(|| candle_core::Error::Msg(format!("missing tensor {name}")))?;
            if t.dims() != shape {
                return Err(candle_core::Error::Msg(format!(
                    "{name}: expected shape {shape:?}, found {:?}",
                    t.dims()
                )));
            }
            t.to_dtype(dtype)?.to_device(device)
        })
        .map_err(|e| e.to_string())
    }

    /// The task of the model.
    pub fn task(&self) -> Task {
        match self {
            ModelConfig::Gpt2(_) | ModelConfig::Llama(_) => Task::LanguageModel,
            _ => Task::Classification,
        }
    }
}

/// Summed negative log-likelihood, number of correct argmax predictions, and number of
/// predictions of a batch: logits `[.., classes]` against integer targets `[..]`.
pub fn nll_and_hits(logits: &Tensor, targets: &Tensor) -> Result<(f64, f64, usize)> {
    let classes = logits.dim(D::Minus1)?;
    let logits = logits.reshape(((), classes))?;
    let targets = targets.flatten_all()?;
    let n = targets.dim(0)?;
    let logp = candle_nn::ops::log_softmax(&logits.to_dtype(DType::F32)?, D::Minus1)?;
    let nll = logp
        .gather(&targets.unsqueeze(1)?, 1)?
        .sum_all()?
        .neg()?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()?;
    let hits = logits
        .argmax(D::Minus1)?
        .eq(&targets)?
        .to_dtype(DType::F64)?
        .sum_all()?
        .to_scalar::<f64>()?;
    Ok((nll, hits, n))
}

/// Mean cross-entropy of a batch (for gradients): logits `[.., classes]`, targets `[..]`.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let classes = logits.dim(D::Minus1)?;
    candle_nn::loss::cross_entropy(&logits.reshape(((), classes))?, &targets.flatten_all()?)
}

/// The training loss: [`cross_entropy`], as one op each way in f32 on the CPU
/// (`softmax_ce`), where no second derivative is taken.
pub fn train_cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    if logits.dtype() == DType::F32 && logits.device().is_cpu() {
        softmax_ce::cross_entropy(logits, targets)
    } else {
        cross_entropy(logits, targets)
    }
}

/// `x · wᵀ + b` over the last dimension of `x` (any leading dimensions), for a weight
/// stored `[out, in]`.
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let inner = *dims.last().expect("at least 1-D");
    let out = w.dim(0)?;
    let y = x.reshape(((), inner))?.matmul(&w.t()?)?;
    let y = match b {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    };
    let mut shape = dims;
    *shape.last_mut().expect("at least 1-D") = out;
    y.reshape(shape)
}

/// GELU (tanh form): in training in f32 on the CPU one vectorised pass each way
/// (`gelu`), else candle's op, which has second derivatives.
pub(crate) fn train_gelu(x: &Tensor, train: bool) -> Result<Tensor> {
    if train && x.dtype() == DType::F32 && x.device().is_cpu() {
        gelu::gelu(x)
    } else {
        x.gelu()
    }
}

/// A dense layer, `x · wᵀ + b` then the ReLU when `relu`, for a weight stored as
/// `stored` says: in training in f32 on the CPU one op each way (`dense`), else by
/// candle's ops ([`linear`]), which have second derivatives.
pub(crate) fn layer(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stored: Stored,
    relu: bool,
    train: bool,
) -> Result<Tensor> {
    if train && x.dtype() == DType::F32 && x.device().is_cpu() {
        return dense::dense(x, w, b, stored, relu);
    }
    let y = match stored {
        Stored::OutIn => linear(x, w, b)?,
        Stored::InOut => linear(x, &w.t()?, b)?,
    };
    if relu { y.relu() } else { Ok(y) }
}

#[cfg(test)]
pub(crate) mod reference;
#[cfg(test)]
mod tests;
