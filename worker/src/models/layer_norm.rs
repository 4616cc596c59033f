//! Layer normalisation for training in f32 on the CPU: forward one pass per row, and
//! backward one pass per row for the input and one per block of columns for the weight
//! and the bias.
//!
//! candle's `layer_norm_slow` (the only one with a backward pass) composes a sum, a
//! division, a broadcast subtraction, a square, another sum and division, an addition,
//! a square root, a broadcast division, a broadcast product and a broadcast addition;
//! the backward pass of each broadcast is a strided reduction on one thread (perf: with
//! the dense layers' bias sums, 15 % of a GPT-2 step). Here, per row of `x`
//! (`μ`, `r = 1/√(σ² + ε)`, `x̂ = (x − μ) r`): `y = x̂ w + b`;
//! `dx = r (g − mean(g) − x̂ mean(g x̂))` with `g = dy w`; `dw = Σ dy x̂`, `db = Σ dy`
//! over the rows, in row order (the same bits on any number of threads).

use super::par;
use crate::vmath;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, D, Layout, Result, Shape, Tensor};

use super::operand::f32_slice;

/// Rows per task.
const ROWS: usize = 32;

/// Columns per task of the weight's and bias's gradients.
const COLUMNS: usize = 64;

/// `(x − mean) / √(var + eps) · w + b` over the last dimension of `x`, in f32 on the CPU,
/// with its backward pass.
pub(crate) fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f32) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    if w.dims() != [d] || b.dims() != [d] {
        candle_core::bail!(
            "layer_norm: input {:?}, weight {:?} and bias {:?} do not fit",
            x.dims(),
            w.dims(),
            b.dims()
        );
    }
    let shape = x.shape().clone();
    x.reshape(((), d))?
        .contiguous()?
        .apply_op3(&w.contiguous()?, &b.contiguous()?, LayerNorm { eps })?
        .reshape(shape)
}

/// The f32 values of a contiguous operand.
fn values<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    f32_slice("layer_norm", s, l)
}

/// A row's mean and `1 / √(variance + eps)`, as candle computes them.
fn stats(row: &[f32], eps: f32) -> (f32, f32) {
    let d = row.len() as f32;
    let mean = vmath::sum(row) / d;
    let var = vmath::sum_sq_dev(row, mean) / d;
    (mean, 1.0 / (var + eps).sqrt())
}

#[derive(Clone, Copy)]
struct LayerNorm {
    eps: f32,
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "ridgeline-layer-norm"
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
        let (_, d) = xl.shape().dims2()?;
        let (x, w, b) = (values(x, xl)?, values(w, wl)?, values(b, bl)?);
        let mut y = vec![0f32; x.len()];
        par::chunks(&mut y, ROWS * d, x.len(), |i, y| {
            let x = &x[i * ROWS * d..][..y.len()];
            for (y, x) in y.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
                let (mean, r) = stats(x, self.eps);
                for (((y, x), w), b) in y.iter_mut().zip(x).zip(w).zip(b) {
                    *y = (x - mean) * r * w + b;
                }
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
        let dx = dy.apply_op3_no_bwd(x, w, &GradInput(*self))?;
        let dwb = dy.apply_op2_no_bwd(x, &GradParams(*self))?;
        Ok((Some(dx), Some(dwb.get(0)?), Some(dwb.get(1)?)))
    }
}

/// The input's gradient, row by row.
struct GradInput(LayerNorm);

impl CustomOp3 for GradInput {
    fn name(&self) -> &'static str {
        "ridgeline-layer-norm-grad-input"
    }

    fn cpu_fwd(
        &self,
        dy: &CpuStorage,
        dyl: &Layout,
        x: &CpuStorage,
        xl: &Layout,
        w: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, d) = xl.shape().dims2()?;
        let (dy, x, w) = (values(dy, dyl)?, values(x, xl)?, values(w, wl)?);
        let mut dx = vec![0f32; x.len()];
        par::chunks(&mut dx, ROWS * d, x.len(), |i, dx| {
            let (x, dy) = (
                &x[i * ROWS * d..][..dx.len()],
                &dy[i * ROWS * d..][..dx.len()],
            );
            let rows = dx.chunks_exact_mut(d).zip(x.chunks_exact(d));
            for ((dx, x), dy) in rows.zip(dy.chunks_exact(d)) {
                let (mean, r) = stats(x, self.0.eps);
                // dx holds g = dy w first, then the gradient.
                let (mut sum_g, mut sum_gx) = (0f32, 0f32);
                for (((g, dy), w), x) in dx.iter_mut().zip(dy).zip(w).zip(x) {
                    *g = dy * w;
                    sum_g += *g;
                    sum_gx += *g * (x - mean) * r;
                }
                let (m1, m2) = (sum_g / d as f32, sum_gx / d as f32);
                for (g, x) in dx.iter_mut().zip(x) {
                    *g = r * (*g - m1 - (x - mean) * r * m2);
                }
            }
        });
        Ok((CpuStorage::F32(dx), xl.shape().clone()))
    }
}

/// The weight's and the bias's gradients, `[2, d]`: column sums over the rows.
struct GradParams(LayerNorm);

impl CustomOp2 for GradParams {
    fn name(&self) -> &'static str {
        "ridgeline-layer-norm-grad-params"
    }

    fn cpu_fwd(
        &self,
        dy: &CpuStorage,
        dyl: &Layout,
        x: &CpuStorage,
        xl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, d) = xl.shape().dims2()?;
        let (dy, x) = (values(dy, dyl)?, values(x, xl)?);
        let mut stats = vec![(0f32, 0f32); x.len() / d.max(1)];
        par::chunks(&mut stats, ROWS, x.len(), |i, s| {
            for (j, s) in s.iter_mut().enumerate() {
                *s = self::stats(&x[(i * ROWS + j) * d..][..d], self.0.eps);
            }
        });
        // Per block of columns, its part of the weight's and the bias's sums.
        let mut parts = vec![(Vec::new(), Vec::new()); d.div_ceil(COLUMNS)];
        par::chunks(&mut parts, 1, x.len(), |block, part| {
            let cols = block * COLUMNS..((block + 1) * COLUMNS).min(d);
            let (mut dw, mut db) = (vec![0f32; cols.len()], vec![0f32; cols.len()]);
            let rows = x.chunks_exact(d).zip(dy.chunks_exact(d)).zip(&stats);
            for ((x, dy), &(mean, r)) in rows {
                let (x, dy) = (&x[cols.clone()], &dy[cols.clone()]);
                for (((dw, db), x), dy) in dw.iter_mut().zip(db.iter_mut()).zip(x).zip(dy) {
                    *dw += dy * (x - mean) * r;
                    *db += dy;
                }
            }
            part[0] = (dw, db);
        });
        let mut dw: Vec<f32> = parts.iter().flat_map(|(w, _)| w.iter().copied()).collect();
        dw.extend(parts.iter().flat_map(|(_, b)| b.iter().copied()));
        Ok((CpuStorage::F32(dw), Shape::from((2, d))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    #[test]
    fn layer_norm_and_its_gradients_match_candles_in_f64() {
        let mut rng = ridgeline_common::rng::Rng::new(31);
        // Fewer rows than a block and several; widths around a block of columns.
        for (lead, d) in [(vec![3], 5), (vec![2, 37], 70), (vec![70], 128)] {
            let n: usize = lead.iter().product();
            let mut draw = |len: usize, scale: f64, shift: f64| -> Vec<f64> {
                (0..len)
                    .map(|_| (rng.normal() * scale + shift) as f32 as f64)
                    .collect()
            };
            let (x, w, b, r) = (
                draw(n * d, 3.0, 1.5),
                draw(d, 1.0, 1.0),
                draw(d, 1.0, 0.0),
                draw(n * d, 1.0, 0.0),
            );
            let shape: Vec<usize> = [lead.as_slice(), &[d]].concat();
            let run = |dtype: DType, fused: bool| -> Vec<Vec<f64>> {
                let t = |v: &[f64], s: &[usize]| {
                    Tensor::from_vec(v.to_vec(), s, &Device::Cpu)
                        .unwrap()
                        .to_dtype(dtype)
                        .unwrap()
                };
                let (xv, wv, bv) = (
                    Var::from_tensor(&t(&x, &shape)).unwrap(),
                    Var::from_tensor(&t(&w, &[d])).unwrap(),
                    Var::from_tensor(&t(&b, &[d])).unwrap(),
                );
                let y = if fused {
                    layer_norm(xv.as_tensor(), wv.as_tensor(), bv.as_tensor(), 1e-5).unwrap()
                } else {
                    candle_nn::ops::layer_norm_slow(
                        xv.as_tensor(),
                        wv.as_tensor(),
                        bv.as_tensor(),
                        1e-5,
                    )
                    .unwrap()
                };
                let g = (&y * t(&r, &shape))
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                let flat = crate::models::reference::flat;
                let mut out = vec![flat(&y)];
                for v in [&xv, &wv, &bv] {
                    out.push(flat(g.get(v.as_tensor()).unwrap()));
                }
                out
            };
            let want = run(DType::F64, false);
            let got = run(DType::F32, true);
            for (k, name) in ["y", "dx", "dw", "db"].iter().enumerate() {
                let scale = want[k].iter().fold(1.0f64, |m, v| m.max(v.abs()));
                for (a, b) in got[k].iter().zip(&want[k]) {
                    assert!(
                        (a - b).abs() <= 2e-5 * scale,
                        "{lead:?}x{d} {name}: {a} against {b}"
                    );
                }
            }
        }
    }
}
