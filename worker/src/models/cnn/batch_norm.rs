//! Batch normalisation of NCHW activations, per channel: batch statistics while
//! training (the running statistics updated as PyTorch does), running statistics in
//! evaluation.
//!
//! Training in f32 on the CPU runs one fused op, forward and backward. Written with
//! candle's broadcasting ops, each of the four per-channel broadcasts (subtract the
//! mean, scale, weight, bias) costs a reduction over (N, H, W) in the backward pass,
//! which candle runs on one thread with strided reads: a third of a CNN's training time
//! (perf). Here the statistics and the two sums of the backward pass are one parallel
//! pass over each channel's planes, accumulated in f64, and the output and the input's
//! gradient one pass each. Other dtypes and devices, and evaluation, keep the composed
//! ops (f64 is what second derivatives are taken in; the fused op has no second
//! derivative).

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::models::operand::f32_slice;

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
        if train && x.dtype() == DType::F32 && matches!(x.device(), Device::Cpu) {
            return self.fused(&x.contiguous()?);
        }
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
            self.update_running(&mean.detach().reshape(c)?, &unbiased)?;
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

    fn update_running(&self, mean: &Tensor, unbiased: &Tensor) -> Result<()> {
        let m = BN_MOMENTUM;
        let rm = ((self.mean.var.as_tensor() * (1.0 - m))? + (mean * m)?)?;
        let rv = ((self.var.var.as_tensor() * (1.0 - m))? + (unbiased * m)?)?;
        self.mean.var.set(&rm)?;
        self.var.var.set(&rv)
    }

    fn fused(&self, x: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let d = Dims { n, c, hw: h * w };
        let stats = {
            let (s, l) = x.storage_and_layout();
            let candle_core::Storage::Cpu(s) = &*s else {
                candle_core::bail!("batch norm: expected a CPU tensor");
            };
            stats(f32_slice("batch norm", s, l)?, d)
        };
        let count = (d.n * d.hw) as f64;
        let unbiased = count / (count - 1.0).max(1.0);
        let mean: Vec<f32> = stats.iter().map(|s| s.0 as f32).collect();
        let var: Vec<f32> = stats.iter().map(|s| (s.1 * unbiased) as f32).collect();
        self.update_running(
            &Tensor::from_vec(mean, c, x.device())?,
            &Tensor::from_vec(var, c, x.device())?,
        )?;
        let norm = stats
            .iter()
            .map(|&(mean, var)| Norm {
                mean,
                inv: 1.0 / (var + BN_EPS).sqrt(),
            })
            .collect();
        x.apply_op3(&self.weight, &self.bias, BnTrain(Arc::new(norm), d))
    }
}

#[derive(Clone, Copy, Debug)]
struct Dims {
    n: usize,
    c: usize,
    /// Pixels of a plane.
    hw: usize,
}

/// A channel's batch mean and 1 / sqrt(variance + eps).
#[derive(Clone, Copy, Debug)]
struct Norm {
    mean: f64,
    inv: f64,
}

/// Channel `c`'s planes, one per image.
fn planes(x: &[f32], d: Dims, c: usize) -> impl Iterator<Item = &[f32]> + Clone {
    (0..d.n).map(move |n| &x[(n * d.c + c) * d.hw..][..d.hw])
}

/// Each channel's mean and biased variance, two passes in f64.
fn stats(x: &[f32], d: Dims) -> Vec<(f64, f64)> {
    let count = (d.n * d.hw) as f64;
    (0..d.c)
        .into_par_iter()
        .map(|c| {
            let p = planes(x, d, c);
            let sum: f64 = p
                .clone()
                .map(|p| p.iter().map(|&v| f64::from(v)).sum::<f64>())
                .sum();
            let mean = sum / count;
            let sq: f64 = p
                .map(|p| {
                    p.iter()
                        .map(|&v| (f64::from(v) - mean).powi(2))
                        .sum::<f64>()
                })
                .sum();
            (mean, sq / count)
        })
        .collect()
}

/// Writes `f(c, input plane, output plane)` for every plane, in parallel.
fn per_plane(d: Dims, out: &mut [f32], f: impl Fn(usize, usize, &mut [f32]) + Sync) {
    out.par_chunks_mut(d.hw)
        .enumerate()
        .for_each(|(i, o)| f(i % d.c, i * d.hw, o));
}

/// Training batch norm `(x - mean) * inv * weight + bias` with the batch statistics
/// computed beforehand; its backward pass takes their dependence on x into account.
struct BnTrain(Arc<Vec<Norm>>, Dims);

impl CustomOp3 for BnTrain {
    fn name(&self) -> &'static str {
        "ridgeline-batch-norm-train"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        w: &CpuStorage,
        wl: &Layout,
        b: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w, b) = (
            f32_slice("batch norm", x, xl)?,
            f32_slice("batch norm", w, wl)?,
            f32_slice("batch norm", b, bl)?,
        );
        let d = self.1;
        // y = x * scale + shift, per channel.
        let affine: Vec<(f32, f32)> = (0..d.c)
            .map(|c| {
                let Norm { mean, inv } = self.0[c];
                let scale = inv * f64::from(w[c]);
                (scale as f32, (f64::from(b[c]) - mean * scale) as f32)
            })
            .collect();
        let mut y = vec![0f32; x.len()];
        per_plane(d, &mut y, |c, at, o| {
            let (s, t) = affine[c];
            for (o, &v) in o.iter_mut().zip(&x[at..at + d.hw]) {
                *o = v * s + t;
            }
        });
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let c = self.1.c;
        // Per channel: the sum of dy (the bias's gradient) and of dy * x̂ (the weight's).
        let sums = dy.apply_op2_no_bwd(x, &BnSums(self.0.clone(), self.1))?;
        let dbias = sums.narrow(0, 0, 1)?.reshape(c)?;
        let dweight = sums.narrow(0, 1, 1)?.reshape(c)?;
        let grad = BnGradX {
            norm: self.0.clone(),
            d: self.1,
            weight: w.to_vec1::<f32>()?,
            sums: sums.to_vec2::<f32>()?,
        };
        let dx = dy.apply_op2_no_bwd(x, &grad)?;
        Ok((Some(dx), Some(dweight), Some(dbias)))
    }
}

/// `[2, C]`: per channel, the sum of dy and of dy * x̂.
struct BnSums(Arc<Vec<Norm>>, Dims);

impl CustomOp2 for BnSums {
    fn name(&self) -> &'static str {
        "ridgeline-batch-norm-sums"
    }

    fn cpu_fwd(
        &self,
        dy: &CpuStorage,
        dyl: &Layout,
        x: &CpuStorage,
        xl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (dy, x, d) = (
            f32_slice("batch norm", dy, dyl)?,
            f32_slice("batch norm", x, xl)?,
            self.1,
        );
        let sums: Vec<(f64, f64)> = (0..d.c)
            .into_par_iter()
            .map(|c| {
                let Norm { mean, inv } = self.0[c];
                planes(dy, d, c)
                    .zip(planes(x, d, c))
                    .fold((0.0, 0.0), |(s, sx), (g, x)| {
                        let (a, b) = g.iter().zip(x).fold((0.0, 0.0), |(a, b), (&g, &x)| {
                            let g = f64::from(g);
                            (a + g, b + g * (f64::from(x) - mean) * inv)
                        });
                        (s + a, sx + b)
                    })
            })
            .collect();
        let out: Vec<f32> = (sums.iter().map(|s| s.0 as f32))
            .chain(sums.iter().map(|s| s.1 as f32))
            .collect();
        Ok((CpuStorage::F32(out), Shape::from((2, d.c))))
    }
}

/// The input's gradient: weight · inv · (dy − Σdy / m − x̂ · Σ(dy x̂) / m).
struct BnGradX {
    norm: Arc<Vec<Norm>>,
    d: Dims,
    weight: Vec<f32>,
    /// `[Σ dy, Σ dy x̂]`, each per channel.
    sums: Vec<Vec<f32>>,
}

impl CustomOp2 for BnGradX {
    fn name(&self) -> &'static str {
        "ridgeline-batch-norm-grad"
    }

    fn cpu_fwd(
        &self,
        dy: &CpuStorage,
        dyl: &Layout,
        x: &CpuStorage,
        xl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (dy, x, d) = (
            f32_slice("batch norm", dy, dyl)?,
            f32_slice("batch norm", x, xl)?,
            self.d,
        );
        let count = (d.n * d.hw) as f64;
        let coef: Vec<[f32; 4]> = (0..d.c)
            .map(|c| {
                let Norm { mean, inv } = self.norm[c];
                let k = f64::from(self.weight[c]) * inv;
                let (s, sx) = (f64::from(self.sums[0][c]), f64::from(self.sums[1][c]));
                // dx = k dy − k Σdy/m − k (x − mean) inv Σ(dy x̂)/m
                //    = k dy + a x + b
                let a = -k * inv * sx / count;
                let b = -k * s / count - a * mean;
                [k as f32, a as f32, b as f32, 0.0]
            })
            .collect();
        let mut dx = vec![0f32; dy.len()];
        per_plane(d, &mut dx, |c, at, o| {
            let [k, a, b, _] = coef[c];
            let (g, x) = (&dy[at..at + d.hw], &x[at..at + d.hw]);
            for ((o, &g), &x) in o.iter_mut().zip(g).zip(x) {
                *o = k * g + a * x + b;
            }
        });
        Ok((CpuStorage::F32(dx), dyl.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::reference::flat;
    use candle_core::Var;

    fn batch_norm(c: usize, dtype: DType) -> (BatchNorm, Var, Var) {
        let dev = Device::Cpu;
        let w: Vec<f64> = (0..c).map(|i| 0.5 + 0.3 * i as f64).collect();
        let b: Vec<f64> = (0..c).map(|i| 0.1 - 0.2 * i as f64).collect();
        let w = Var::from_tensor(&Tensor::new(w, &dev).unwrap().to_dtype(dtype).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::new(b, &dev).unwrap().to_dtype(dtype).unwrap()).unwrap();
        let stat = |name: &str, v: f64| {
            Param::new(
                name,
                &Tensor::full(v, c, &dev).unwrap().to_dtype(dtype).unwrap(),
            )
            .unwrap()
        };
        let bn = BatchNorm {
            weight: w.as_tensor().clone(),
            bias: b.as_tensor().clone(),
            mean: stat("bn.running_mean", 0.0),
            var: stat("bn.running_var", 1.0),
        };
        (bn, w, b)
    }

    /// Output, gradients (x, weight, bias) of Σ y·r, and running statistics.
    fn run(x: &Tensor, r: &Tensor, dtype: DType) -> Vec<Vec<f64>> {
        let (bn, w, b) = batch_norm(x.dim(1).unwrap(), dtype);
        let x = Var::from_tensor(&x.to_dtype(dtype).unwrap()).unwrap();
        let y = bn.forward(x.as_tensor(), true).unwrap();
        let loss = (&y * r.to_dtype(dtype).unwrap())
            .unwrap()
            .sum_all()
            .unwrap();
        let g = loss.backward().unwrap();
        vec![
            flat(&y),
            flat(g.get(x.as_tensor()).unwrap()),
            flat(g.get(w.as_tensor()).unwrap()),
            flat(g.get(b.as_tensor()).unwrap()),
            flat(bn.mean.var.as_tensor()),
            flat(bn.var.var.as_tensor()),
        ]
    }

    #[test]
    fn fused_training_matches_the_f64_composition() {
        // Candle's composed ops in f64, differentiated by its autograd, are the
        // reference; the fused f32 op must agree to f32 rounding, for one image and
        // several, odd planes and channels of very different scales.
        let mut rng = ridgeline_common::rng::Rng::new(7);
        for (n, c, h, w) in [(1, 1, 1, 5), (4, 3, 5, 6), (9, 5, 7, 3)] {
            let len = n * c * h * w;
            let x: Vec<f64> = (0..len)
                .map(|i| {
                    let ch = (i / (h * w)) % c;
                    3.0 * ch as f64 + (1.0 + ch as f64) * rng.normal()
                })
                .collect();
            let r: Vec<f64> = (0..len).map(|_| rng.normal()).collect();
            let x = Tensor::from_vec(x, (n, c, h, w), &Device::Cpu).unwrap();
            let r = Tensor::from_vec(r, (n, c, h, w), &Device::Cpu).unwrap();
            let want = run(&x, &r, DType::F64);
            let got = run(&x, &r, DType::F32);
            let names = ["y", "dx", "dweight", "dbias", "running mean", "running var"];
            for ((name, got), want) in names.iter().zip(&got).zip(&want) {
                let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
                for (a, b) in got.iter().zip(want) {
                    assert!(
                        (a - b).abs() <= 2e-6 * scale,
                        "{n}x{c}x{h}x{w} {name}: {a} against {b}"
                    );
                }
            }
        }
    }
}
