//! ReLU then 2×2 max pooling (stride 2, odd edges dropped) for training in f32 on the
//! CPU, forward and backward one pass each.
//!
//! The composed form (`max_pool2`: a reshape and two maxima, after candle's ReLU) has a
//! backward pass of comparisons against the broadcast maxima, casts, products and sums
//! for each of its three ops: with the ReLU's, a quarter of a CNN's training step
//! (perf). ReLU and maximum commute, so one pass takes each window's maximum and
//! clamps it at zero; the gradient goes to the window's first maximum where that is
//! positive (as PyTorch's; the composed form splits it between tied maxima), and
//! nowhere else.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

use crate::models::operand::f32_slice;

/// `max_pool2(relu(x))` for `x` `[n, c, h, w]`, with its backward pass.
pub(super) fn relu_max_pool2(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(ReluPool)
}

/// Sizes: planes (`n · c`), input rows and columns, output rows and columns.
fn sizes(l: &Layout) -> Result<(usize, usize, usize, usize, usize)> {
    let (n, c, h, w) = l.shape().dims4()?;
    Ok((n * c, h, w, h / 2, w / 2))
}

/// The offset within its plane of the window `(i, j)`'s first maximum, and the maximum.
fn window_max(plane: &[f32], w: usize, i: usize, j: usize) -> (usize, f32) {
    let mut best = (2 * i * w + 2 * j, f32::NEG_INFINITY);
    for at in [
        2 * i * w + 2 * j,
        2 * i * w + 2 * j + 1,
        (2 * i + 1) * w + 2 * j,
        (2 * i + 1) * w + 2 * j + 1,
    ] {
        if plane[at] > best.1 {
            best = (at, plane[at]);
        }
    }
    best
}

struct ReluPool;

impl CustomOp1 for ReluPool {
    fn name(&self) -> &'static str {
        "ridgeline-relu-max-pool2"
    }

    fn cpu_fwd(&self, x: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, _, _) = xl.shape().dims4()?;
        let (planes, h, w, oh, ow) = sizes(xl)?;
        let x = f32_slice("relu_max_pool2", x, xl)?;
        let mut y = vec![0f32; planes * oh * ow];
        if oh * ow > 0 {
            let work = x.len();
            crate::models::par::chunks(&mut y, oh * ow, work, |p, out| {
                let plane = &x[p * h * w..][..h * w];
                for i in 0..oh {
                    for j in 0..ow {
                        out[i * ow + j] = window_max(plane, w, i, j).1.max(0.0);
                    }
                }
            });
        }
        Ok((CpuStorage::F32(y), Shape::from((n, c, oh, ow))))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(dy.contiguous()?.apply_op2_no_bwd(x, &PoolGrad)?))
    }
}

/// The input's gradient: each window's output gradient at its first maximum, where
/// that is positive.
struct PoolGrad;

impl CustomOp2 for PoolGrad {
    fn name(&self) -> &'static str {
        "ridgeline-relu-max-pool2-grad"
    }

    fn cpu_fwd(
        &self,
        dy: &CpuStorage,
        dyl: &Layout,
        x: &CpuStorage,
        xl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (planes, h, w, oh, ow) = sizes(xl)?;
        let (dy, x) = (
            f32_slice("relu_max_pool2", dy, dyl)?,
            f32_slice("relu_max_pool2", x, xl)?,
        );
        let mut dx = vec![0f32; planes * h * w];
        if h * w > 0 {
            let work = x.len();
            crate::models::par::chunks(&mut dx, h * w, work, |p, dx| {
                let plane = &x[p * h * w..][..h * w];
                let grad = &dy[p * oh * ow..][..oh * ow];
                for i in 0..oh {
                    for j in 0..ow {
                        let (at, max) = window_max(plane, w, i, j);
                        if max > 0.0 {
                            dx[at] = grad[i * ow + j];
                        }
                    }
                }
            });
        }
        Ok((CpuStorage::F32(dx), xl.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    #[test]
    fn pooling_and_its_gradient_match_the_definition() {
        // Odd sizes (the last row and column dropped), negative windows (ReLU'd to
        // zero, no gradient) and distinct values (no ties).
        let (n, c, h, w) = (3, 2, 7, 6);
        let mut rng = ridgeline_common::rng::Rng::new(41);
        let xs: Vec<f32> = (0..n * c * h * w).map(|_| rng.normal() as f32).collect();
        let (oh, ow) = (h / 2, w / 2);
        let r: Vec<f32> = (0..n * c * oh * ow).map(|_| rng.normal() as f32).collect();
        let x =
            Var::from_tensor(&Tensor::from_vec(xs.clone(), (n, c, h, w), &Device::Cpu).unwrap())
                .unwrap();
        let y = relu_max_pool2(x.as_tensor()).unwrap();
        let rt = Tensor::from_vec(r.clone(), (n, c, oh, ow), &Device::Cpu).unwrap();
        let g = (&y * rt).unwrap().sum_all().unwrap().backward().unwrap();
        let got_y = crate::models::reference::flat(&y);
        let got_g = crate::models::reference::flat(g.get(x.as_tensor()).unwrap());
        let mut want_g = vec![0f64; xs.len()];
        for p in 0..n * c {
            for i in 0..oh {
                for j in 0..ow {
                    let cells = [
                        (2 * i, 2 * j),
                        (2 * i, 2 * j + 1),
                        (2 * i + 1, 2 * j),
                        (2 * i + 1, 2 * j + 1),
                    ];
                    let at = |(a, b): (usize, usize)| p * h * w + a * w + b;
                    let best = cells
                        .iter()
                        .copied()
                        .max_by(|u, v| xs[at(*u)].total_cmp(&xs[at(*v)]))
                        .unwrap();
                    let m = f64::from(xs[at(best)]);
                    let k = p * oh * ow + i * ow + j;
                    assert_eq!(got_y[k], m.max(0.0), "y[{k}]");
                    if m > 0.0 {
                        want_g[at(best)] = f64::from(r[k]);
                    }
                }
            }
        }
        assert_eq!(got_g, want_g);
        // And the composed form's gradient, which differs only at ties.
        let x64 = Var::from_tensor(&x.as_tensor().to_dtype(DType::F64).unwrap()).unwrap();
        let y64 = super::super::max_pool2(&x64.as_tensor().relu().unwrap(), true).unwrap();
        let r64 = Tensor::from_vec(r, (n, c, oh, ow), &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap();
        let g64 = (&y64 * r64).unwrap().sum_all().unwrap().backward().unwrap();
        assert_eq!(
            crate::models::reference::flat(g64.get(x64.as_tensor()).unwrap()),
            want_g
        );
    }
}
