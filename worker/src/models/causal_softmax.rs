//! Attention's causal softmax for training in f32 on the CPU: the mask and the softmax
//! in one pass forward (`fused::causal_softmax_rows`, the inference kernel's), and one
//! pass back.
//!
//! candle's path adds the mask (a broadcast into a new tensor), then composes the
//! softmax of a maximum, a subtraction, an exponential, a sum and a division, and its
//! backward pass of as many ops again, each over every score: the scores are the
//! largest tensors of a transformer's step (`[batch, heads, t, t]`). The gradient here
//! is `y ⊙ (dy − Σ dy ⊙ y)` over each row's visible columns, zero over the masked ones
//! (as candle's: their probability is zero).

use super::par;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

use super::operand::f32_slice;

/// Softmax over the last dimension of `[.., t, t]` scores, query `i` seeing keys
/// `0..=i`, in f32 on the CPU, with its backward pass.
pub(crate) fn causal_softmax(scores: &Tensor) -> Result<Tensor> {
    let dims = scores.dims();
    if dims.len() < 2 || dims[dims.len() - 1] != dims[dims.len() - 2] {
        candle_core::bail!("causal softmax: scores {dims:?} are not [.., t, t]");
    }
    scores.contiguous()?.apply_op1(CausalSoftmax)
}

/// The f32 values of a contiguous operand.
fn values<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    f32_slice("causal softmax", s, l)
}

fn side(l: &Layout) -> usize {
    *l.shape().dims().last().unwrap_or(&1)
}

struct CausalSoftmax;

impl CustomOp1 for CausalSoftmax {
    fn name(&self) -> &'static str {
        "ridgeline-causal-softmax-train"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let y = crate::fused::causal_softmax_rows(values(s, l)?, side(l));
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(dy.contiguous()?.apply_op2_no_bwd(y, &Grad)?))
    }
}

/// `y ⊙ (dy − Σ dy ⊙ y)` per row, over its visible columns.
struct Grad;

impl CustomOp2 for Grad {
    fn name(&self) -> &'static str {
        "ridgeline-causal-softmax-grad"
    }

    fn cpu_fwd(
        &self,
        dy: &CpuStorage,
        dyl: &Layout,
        y: &CpuStorage,
        yl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (dy, y, t) = (values(dy, dyl)?, values(y, yl)?, side(yl));
        let mut dx = vec![0f32; y.len()];
        let work = y.len();
        par::chunks(&mut dx, t, work, |r, dx| {
            let (dy, y) = (&dy[r * t..][..t], &y[r * t..][..t]);
            let keep = r % t + 1;
            let dot: f32 = dy[..keep].iter().zip(&y[..keep]).map(|(a, b)| a * b).sum();
            for ((dx, dy), y) in dx[..keep].iter_mut().zip(&dy[..keep]).zip(&y[..keep]) {
                *dx = y * (dy - dot);
            }
        });
        Ok((CpuStorage::F32(dx), yl.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{D, DType, Device, Var};

    #[test]
    fn the_softmax_and_its_gradient_match_candles_masked_softmax_in_f64() {
        let mut rng = ridgeline_common::rng::Rng::new(23);
        let (b, h, t) = (2, 3, 9);
        let n = b * h * t * t;
        let scores: Vec<f32> = (0..n).map(|_| (rng.normal() * 4.0) as f32).collect();
        let r: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
        let dev = Device::Cpu;
        let run = |dtype: DType, fused: bool| -> (Vec<f64>, Vec<f64>) {
            let s = Tensor::from_vec(scores.clone(), (b, h, t, t), &dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let s = Var::from_tensor(&s).unwrap();
            let y = if fused {
                causal_softmax(s.as_tensor()).unwrap()
            } else {
                let mask: Vec<f64> = (0..t * t)
                    .map(|k| {
                        if k % t > k / t {
                            f64::NEG_INFINITY
                        } else {
                            0.0
                        }
                    })
                    .collect();
                let mask = Tensor::from_vec(mask, (t, t), &dev)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap();
                candle_nn::ops::softmax(&s.as_tensor().broadcast_add(&mask).unwrap(), D::Minus1)
                    .unwrap()
            };
            let rt = Tensor::from_vec(r.clone(), (b, h, t, t), &dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let g = (&y * rt).unwrap().sum_all().unwrap().backward().unwrap();
            let flat = crate::models::reference::flat;
            (flat(&y), flat(g.get(s.as_tensor()).unwrap()))
        };
        let (want_y, want_g) = run(DType::F64, false);
        let (got_y, got_g) = run(DType::F32, true);
        for (k, ((a, b), (c, d))) in got_y
            .iter()
            .zip(&want_y)
            .zip(got_g.iter().zip(&want_g))
            .enumerate()
        {
            assert!((a - b).abs() <= 1e-6, "y[{k}]: {a} against {b}");
            assert!((c - d).abs() <= 1e-5, "dscores[{k}]: {c} against {d}");
            if k % t > (k / t) % t {
                assert_eq!((*a, *c), (0.0, 0.0), "masked [{k}]");
            }
        }
    }
}
