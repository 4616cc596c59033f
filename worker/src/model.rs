//! The built-in MLP, with deterministic initialisation from the trial's seed so that a
//! trial computes the same weights on any worker.

use candle_core::{DType, Device, Result, Tensor, Var};
use ridgeline_common::rng::Rng;
use ridgeline_common::spec::{Activation, ModelSpec};
use serde::{Deserialize, Serialize};

/// What is needed to rebuild an MLP from its checkpoint (`model.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MlpConfig {
    /// Always "mlp".
    pub arch: String,
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
            arch: "mlp".into(),
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
    /// `(weight [out, in], bias [out])` per layer.
    pub layers: Vec<(Var, Var)>,
}

impl Mlp {
    /// A freshly initialised MLP: He-uniform weights for rectifier-like activations,
    /// Glorot-uniform for tanh and for the output layer, zero biases.
    pub fn new(config: MlpConfig, seed: u64, dtype: DType, device: &Device) -> Result<Self> {
        let dims = config.dims();
        let mut rng = Rng::stream(seed, 0x6d6c70);
        let mut layers = Vec::new();
        for (i, w) in dims.windows(2).enumerate() {
            let (fan_in, fan_out) = (w[0], w[1]);
            let last = i + 2 == dims.len();
            let bound = if last || config.activation == Activation::Tanh {
                (6.0 / (fan_in + fan_out) as f64).sqrt()
            } else {
                (6.0 / fan_in as f64).sqrt()
            };
            let values: Vec<f64> = (0..fan_in * fan_out)
                .map(|_| (2.0 * rng.next_f64() - 1.0) * bound)
                .collect();
            let weight = Tensor::from_vec(values, (fan_out, fan_in), device)?.to_dtype(dtype)?;
            let bias = Tensor::zeros(fan_out, dtype, device)?;
            layers.push((Var::from_tensor(&weight)?, Var::from_tensor(&bias)?));
        }
        Ok(Mlp { config, layers })
    }

    /// Rebuilds an MLP from named tensors (`layers.{i}.weight`, `layers.{i}.bias`).
    pub fn from_tensors(
        config: MlpConfig,
        tensors: &std::collections::HashMap<String, Tensor>,
    ) -> std::result::Result<Self, String> {
        let dims = config.dims();
        let mut layers = Vec::new();
        for (i, w) in dims.windows(2).enumerate() {
            let get = |name: String, shape: &[usize]| -> std::result::Result<Var, String> {
                let t = tensors
                    .get(&name)
                    .ok_or_else(|| format!("missing tensor {name}"))?;
                if t.dims() != shape {
                    return Err(format!(
                        "{name}: expected shape {shape:?}, found {:?}",
                        t.dims()
                    ));
                }
                Var::from_tensor(t).map_err(|e| e.to_string())
            };
            layers.push((
                get(format!("layers.{i}.weight"), &[w[1], w[0]])?,
                get(format!("layers.{i}.bias"), &[w[1]])?,
            ));
        }
        Ok(Mlp { config, layers })
    }

    /// The trainable variables, weights and biases interleaved.
    pub fn vars(&self) -> Vec<Var> {
        self.layers
            .iter()
            .flat_map(|(w, b)| [w.clone(), b.clone()])
            .collect()
    }

    /// Named tensors, as saved in checkpoints.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        self.layers
            .iter()
            .enumerate()
            .flat_map(|(i, (w, b))| {
                [
                    (format!("layers.{i}.weight"), w.as_tensor().clone()),
                    (format!("layers.{i}.bias"), b.as_tensor().clone()),
                ]
            })
            .collect()
    }

    /// Logits for a batch `x` of shape `[n, input_dim]`. With `dropout_rng`, hidden
    /// activations are dropped (inverted dropout) using masks drawn from it.
    pub fn forward(&self, x: &Tensor, mut dropout_rng: Option<&mut Rng>) -> Result<Tensor> {
        let mut h = x.clone();
        let n = self.layers.len();
        for (i, (w, b)) in self.layers.iter().enumerate() {
            h = h
                .matmul(&w.as_tensor().t()?)?
                .broadcast_add(b.as_tensor())?;
            if i + 1 < n {
                h = match self.config.activation {
                    Activation::Relu => h.relu()?,
                    Activation::Tanh => h.tanh()?,
                    Activation::Gelu => h.gelu()?,
                    Activation::Silu => h.silu()?,
                };
                let p = self.config.dropout;
                if let (Some(rng), true) = (dropout_rng.as_deref_mut(), p > 0.0) {
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
