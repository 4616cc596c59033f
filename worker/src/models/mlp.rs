//! The built-in MLP. Its landscape scans have a fast path of their own
//! (`landscape::eval`): the first layer is linear in the weights, so a tile of points
//! shares one GEMM.

use candle_core::{DType, Device, Result, Tensor, Var};
use ridgeline_common::rng::Rng;
use ridgeline_common::spec::{Activation, ModelSpec};
use serde::{Deserialize, Serialize};

use super::{Init, Model, ModelConfig, Param, Source};

/// What is needed to rebuild an MLP from its checkpoint (`model.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MlpConfig {
    /// Input features.
    pub input_dim: usize,
    /// Output classes.
    pub classes: usize,
    /// Hidden layers.
    pub depth: usize,
    /// Units per hidden layer.
    pub width: usize,
    /// Hidden activation.
    pub activation: Activation,
    /// Dropout used in training.
    pub dropout: f64,
}

impl MlpConfig {
    /// The config of an MLP for this data shape and model spec.
    pub fn new(input_dim: usize, classes: usize, m: &ModelSpec) -> Self {
        MlpConfig {
            input_dim,
            classes,
            depth: m.depth,
            width: m.width,
            activation: m.activation,
            dropout: m.dropout,
        }
    }

    /// Widths of every layer boundary, input to output.
    pub fn dims(&self) -> Vec<usize> {
        let mut d = vec![self.input_dim];
        d.extend(std::iter::repeat_n(self.width, self.depth));
        d.push(self.classes);
        d
    }
}

/// A multi-layer perceptron: `depth` hidden layers of `width` units.
pub struct Mlp {
    /// Its shape.
    pub config: MlpConfig,
    /// `(weight [out, in], bias [out])` per layer (the same storage as `params`).
    pub layers: Vec<(Var, Var)>,
    params: Vec<Param>,
}

/// The hidden activation.
pub fn activate(h: Tensor, a: Activation) -> Result<Tensor> {
    match a {
        Activation::Relu => h.relu(),
        Activation::Tanh => h.tanh(),
        Activation::Gelu => h.gelu(),
        Activation::Silu => h.silu(),
    }
}

impl Mlp {
    /// Builds the layers `layers.{i}.weight` / `layers.{i}.bias` from `src`: He-uniform
    /// weights for rectifier-like activations, Glorot-uniform for tanh and for the
    /// output layer, zero biases, when fresh.
    pub fn build(config: MlpConfig, src: &mut Source<'_>) -> Result<Self> {
        let dims = config.dims();
        let mut layers = Vec::new();
        let mut params = Vec::new();
        for (i, w) in dims.windows(2).enumerate() {
            let (fan_in, fan_out) = (w[0], w[1]);
            let last = i + 2 == dims.len();
            let bound = if last || config.activation == Activation::Tanh {
                (6.0 / (fan_in + fan_out) as f64).sqrt()
            } else {
                (6.0 / fan_in as f64).sqrt()
            };
            let wn = format!("layers.{i}.weight");
            let bn = format!("layers.{i}.bias");
            let weight = Param::new(&wn, &src(&wn, &[fan_out, fan_in], Init::Uniform(bound))?)?;
            let bias = Param::new(&bn, &src(&bn, &[fan_out], Init::Zeros)?)?;
            layers.push((weight.var.clone(), bias.var.clone()));
            params.push(weight);
            params.push(bias);
        }
        Ok(Mlp {
            config,
            layers,
            params,
        })
    }

    /// A freshly initialised MLP.
    pub fn new(config: MlpConfig, seed: u64, dtype: DType, device: &Device) -> Result<Self> {
        Self::build(config, &mut super::fresh(seed, dtype, device))
    }
}

impl Model for Mlp {
    fn config(&self) -> ModelConfig {
        ModelConfig::Mlp(self.config.clone())
    }

    fn params(&self) -> &[Param] {
        &self.params
    }

    /// Logits for a batch `x` of shape `[n, input_dim]`. In training, hidden activations
    /// are dropped (inverted dropout) using masks drawn from the RNG.
    fn forward(&self, x: &Tensor, mut train: Option<&mut Rng>) -> Result<Tensor> {
        let mut h = x.clone();
        let n = self.layers.len();
        let relu = self.config.activation == Activation::Relu;
        for (i, (w, b)) in self.layers.iter().enumerate() {
            let hidden = i + 1 < n;
            let (w, b) = (w.as_tensor(), Some(b.as_tensor()));
            h = super::layer(
                &h,
                w,
                b,
                super::Stored::OutIn,
                hidden && relu,
                train.is_some(),
            )?;
            if hidden {
                if !relu {
                    h = activate(h, self.config.activation)?;
                }
                let p = self.config.dropout;
                if let (Some(rng), true) = (train.as_deref_mut(), p > 0.0) {
                    let keep = 1.0 / (1.0 - p);
                    let mask: Vec<f32> = (0..h.elem_count())
                        .map(|_| if rng.next_f64() < p { 0.0 } else { keep as f32 })
                        .collect();
                    let mask =
                        Tensor::from_vec(mask, h.shape(), h.device())?.to_dtype(h.dtype())?;
                    h = (h * mask)?;
                }
            }
        }
        Ok(h)
    }
}
