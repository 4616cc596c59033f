//! Convolutional networks on NCHW images: a plain CNN (conv → batch norm → ReLU →
//! max-pool blocks, then a linear head) and a small ResNet (a stem, stages of basic
//! blocks with identity or 1×1 projection shortcuts, global average pooling, a linear
//! head). Names follow PyTorch's module paths.

use candle_core::{D, DType, Device, Result, Tensor};
use ridgeline_common::rng::Rng;
use serde::{Deserialize, Serialize};

use super::{Init, Model, ModelConfig, Param, Source};

mod batch_norm;
mod conv;
mod pool;

use batch_norm::BatchNorm;

/// The shape of a CNN or ResNet (`model.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CnnConfig {
    /// Image channels.
    pub in_channels: usize,
    /// Image height.
    pub height: usize,
    /// Image width.
    pub width: usize,
    /// Output classes.
    pub classes: usize,
    /// Output channels of each conv block (CNN) or stage (ResNet; stages after the
    /// first halve the resolution).
    pub channels: Vec<usize>,
    /// ResNet: basic blocks per stage.
    #[serde(default = "one")]
    pub blocks: usize,
    /// Batch norm after each convolution (the ResNet always has it).
    #[serde(default = "yes")]
    pub batch_norm: bool,
}

fn one() -> usize {
    1
}
fn yes() -> bool {
    true
}

/// A convolution, with a bias when not followed by batch norm, and its batch norm.
struct Conv {
    weight: Tensor,
    bias: Option<Tensor>,
    stride: usize,
    padding: usize,
    bn: Option<BatchNorm>,
}

impl Conv {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut y = if train && x.dtype() == DType::F32 && matches!(x.device(), Device::Cpu) {
            conv::conv2d(x, &self.weight, self.padding, self.stride)?
        } else {
            x.conv2d(&self.weight, self.padding, self.stride, 1, 1)?
        };
        if let Some(b) = &self.bias {
            y = y.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?)?;
        }
        match &self.bn {
            Some(bn) => bn.forward(&y, train),
            None => Ok(y),
        }
    }
}

enum Body {
    /// Plain CNN: conv blocks, each followed by ReLU and a 2×2 max-pool.
    Plain(Vec<Conv>),
    /// ResNet: a stem, then basic blocks `(conv1, conv2, projection shortcut)`.
    Residual(Conv, Vec<(Conv, Conv, Option<Conv>)>),
}

/// A CNN or ResNet classifier.
pub struct Cnn {
    config: CnnConfig,
    residual: bool,
    params: Vec<Param>,
    body: Body,
    head: (Tensor, Tensor),
}

impl Cnn {
    /// Builds the network from `src`. Fresh convolutions are He-normal (fan-in), batch
    /// norms start at identity with zero mean / unit variance statistics.
    pub fn build(config: CnnConfig, residual: bool, src: &mut Source<'_>) -> Result<Self> {
        if config.channels.is_empty() {
            candle_core::bail!("channels: expected at least one block");
        }
        let bn = residual || config.batch_norm;
        let mut params = Vec::new();
        let mut conv =
            |name: &str, cin: usize, cout: usize, k: usize, stride: usize| -> Result<Conv> {
                let mut take = |n: String, shape: &[usize], init: Init| -> Result<Param> {
                    let p = Param::new(n.clone(), &src(&n, shape, init)?)?;
                    params.push(p.clone());
                    Ok(p)
                };
                let std = (2.0 / (cin * k * k) as f64).sqrt();
                let weight = take(
                    format!("{name}.weight"),
                    &[cout, cin, k, k],
                    Init::Normal(std),
                )?;
                let bias = if bn {
                    None
                } else {
                    Some(
                        take(format!("{name}.bias"), &[cout], Init::Zeros)?
                            .var
                            .as_tensor()
                            .clone(),
                    )
                };
                let norm = if bn {
                    let b = name.replace("conv", "bn");
                    Some(BatchNorm {
                        weight: take(format!("{b}.weight"), &[cout], Init::Ones)?
                            .var
                            .as_tensor()
                            .clone(),
                        bias: take(format!("{b}.bias"), &[cout], Init::Zeros)?
                            .var
                            .as_tensor()
                            .clone(),
                        mean: take(format!("{b}.running_mean"), &[cout], Init::Zeros)?,
                        var: take(format!("{b}.running_var"), &[cout], Init::Ones)?,
                    })
                } else {
                    None
                };
                Ok(Conv {
                    weight: weight.var.as_tensor().clone(),
                    bias,
                    stride,
                    padding: k / 2,
                    bn: norm,
                })
            };
        let c = &config;
        let (body, features) = if residual {
            let stem = conv("stem.conv", c.in_channels, c.channels[0], 3, 1)?;
            let mut blocks = Vec::new();
            let mut cin = c.channels[0];
            for (s, &cout) in c.channels.iter().enumerate() {
                for b in 0..c.blocks {
                    let stride = if s > 0 && b == 0 { 2 } else { 1 };
                    let p = format!("stages.{s}.{b}");
                    let c1 = conv(&format!("{p}.conv1"), cin, cout, 3, stride)?;
                    let c2 = conv(&format!("{p}.conv2"), cout, cout, 3, 1)?;
                    let short = if stride != 1 || cin != cout {
                        Some(conv(&format!("{p}.down.conv"), cin, cout, 1, stride)?)
                    } else {
                        None
                    };
                    blocks.push((c1, c2, short));
                    cin = cout;
                }
            }
            (Body::Residual(stem, blocks), cin)
        } else {
            let mut convs = Vec::new();
            let (mut cin, mut h, mut w) = (c.in_channels, c.height, c.width);
            for (i, &cout) in c.channels.iter().enumerate() {
                convs.push(conv(&format!("blocks.{i}.conv"), cin, cout, 3, 1)?);
                cin = cout;
                (h, w) = (h / 2, w / 2);
            }
            if h == 0 || w == 0 {
                candle_core::bail!(
                    "channels: {} pooling blocks shrink a {}x{} image to nothing",
                    c.channels.len(),
                    c.height,
                    c.width
                );
            }
            (Body::Plain(convs), cin * h * w)
        };
        let bound = (6.0 / (features + c.classes) as f64).sqrt();
        let hw = src("head.weight", &[c.classes, features], Init::Uniform(bound))?;
        let hb = src("head.bias", &[c.classes], Init::Zeros)?;
        params.push(Param::new("head.weight", &hw)?);
        params.push(Param::new("head.bias", &hb)?);
        let n = params.len();
        let head = (
            params[n - 2].var.as_tensor().clone(),
            params[n - 1].var.as_tensor().clone(),
        );
        Ok(Cnn {
            config,
            residual,
            params,
            body,
            head,
        })
    }

    /// A freshly initialised network.
    pub fn new(
        config: CnnConfig,
        residual: bool,
        seed: u64,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        Self::build(config, residual, &mut super::fresh(seed, dtype, device))
    }
}

/// 2×2 max pooling, stride 2 (odd edges dropped). Gradients need it written as a
/// reshape and two maxima: candle 0.11's `max_pool2d` backward multiplies by the
/// window's mean of the argmax mask where it should divide by the number of maxima, so
/// every gradient below a pool came out k² = 4 times too small (and its second
/// derivative wrong). Evaluation keeps the faster kernel, whose forward pass is right.
pub(crate) fn max_pool2(x: &Tensor, train: bool) -> Result<Tensor> {
    if !train && x.dtype() != DType::F64 {
        return x.max_pool2d(2);
    }
    let (n, c, h, w) = x.dims4()?;
    let (h2, w2) = (h / 2, w / 2);
    let x = if h % 2 == 1 || w % 2 == 1 {
        x.narrow(2, 0, 2 * h2)?.narrow(3, 0, 2 * w2)?.contiguous()?
    } else {
        x.clone()
    };
    x.reshape((n, c, h2, 2, w2, 2))?.max(5)?.max(3)
}

impl Model for Cnn {
    fn config(&self) -> ModelConfig {
        if self.residual {
            ModelConfig::Resnet(self.config.clone())
        } else {
            ModelConfig::Cnn(self.config.clone())
        }
    }

    fn params(&self) -> &[Param] {
        &self.params
    }

    /// Logits `[n, classes]` for images `[n, c·h·w]` (or already `[n, c, h, w]`).
    fn forward(&self, x: &Tensor, train: Option<&mut Rng>) -> Result<Tensor> {
        let train = train.is_some();
        let c = &self.config;
        let n = x.dim(0)?;
        let mut h = x.reshape((n, c.in_channels, c.height, c.width))?;
        let features = match &self.body {
            Body::Plain(convs) => {
                for conv in convs {
                    let y = conv.forward(&h, train)?;
                    h = if train && y.dtype() == DType::F32 && y.device().is_cpu() {
                        pool::relu_max_pool2(&y)?
                    } else {
                        max_pool2(&y.relu()?, train)?
                    };
                }
                h.flatten_from(1)?
            }
            Body::Residual(stem, blocks) => {
                h = stem.forward(&h, train)?.relu()?;
                for (c1, c2, short) in blocks {
                    let y = c2.forward(&c1.forward(&h, train)?.relu()?, train)?;
                    let s = match short {
                        Some(p) => p.forward(&h, train)?,
                        None => h.clone(),
                    };
                    h = (y + s)?.relu()?;
                }
                h.mean(D::Minus1)?.mean(D::Minus1)?
            }
        };
        let (w, b) = (&self.head.0, Some(&self.head.1));
        super::layer(&features, w, b, super::Stored::OutIn, false, train)
    }
}
