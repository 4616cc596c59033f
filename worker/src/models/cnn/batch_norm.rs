//! Batch normalisation of NCHW activations, per channel: batch statistics while
//! training (the running statistics updated as PyTorch does), running statistics in
//! evaluation.

use candle_core::{Result, Tensor};

use crate::models::Param;

const BN_EPS: f64 = 1e-5;
const BN_MOMENTUM: f64 = 0.1;

pub(super) struct BatchNorm {
    pub(super) weight: Tensor,
    pub(super) bias: Tensor,
    pub(super) mean: Param,
    pub(super) var: Param,
}

impl BatchNorm {
    /// Training: batch statistics over (N, H, W), and the running statistics updated as
    /// PyTorch does (unbiased variance, momentum 0.1). Evaluation: running statistics.
    pub(super) fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let c = x.dim(1)?;
        let shape = (1, c, 1, 1);
        let (mean, var) = if train {
            let mean = x.mean_keepdim(3)?.mean_keepdim(2)?.mean_keepdim(0)?;
            let centred = x.broadcast_sub(&mean)?;
            let var = centred
                .sqr()?
                .mean_keepdim(3)?
                .mean_keepdim(2)?
                .mean_keepdim(0)?;
            let n = (x.elem_count() / c) as f64;
            let unbiased = (var.detach() * (n / (n - 1.0).max(1.0)))?.reshape(c)?;
            let m = BN_MOMENTUM;
            let rm = ((self.mean.var.as_tensor() * (1.0 - m))? + (mean.detach().reshape(c)? * m)?)?;
            let rv = ((self.var.var.as_tensor() * (1.0 - m))? + (unbiased * m)?)?;
            self.mean.var.set(&rm)?;
            self.var.var.set(&rv)?;
            (mean, var)
        } else {
            (
                self.mean.var.as_tensor().reshape(shape)?,
                self.var.var.as_tensor().reshape(shape)?,
            )
        };
        let inv = (var + BN_EPS)?.sqrt()?.recip()?;
        x.broadcast_sub(&mean)?
            .broadcast_mul(&inv)?
            .broadcast_mul(&self.weight.reshape(shape)?)?
            .broadcast_add(&self.bias.reshape(shape)?)
    }
}
