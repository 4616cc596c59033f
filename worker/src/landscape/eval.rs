//! Loss and accuracy at many points of a 2-D slice `θ + α d₁ + β d₂` of an MLP's
//! parameter space at once.
//!
//! The reference implementation perturbs the weights, evaluates, and restores them for
//! every point. Here a tile of P points is one computation:
//!
//! - The first layer is linear in the weights, so `X (W + α D₁ + β D₂)ᵀ` is formed from
//!   the three products `X Wᵀ`, `X D₁ᵀ`, `X D₂ᵀ`, computed once per tile as a single GEMM
//!   against the stacked matrices, then mixed per point with a K=3 matmul. For MNIST-sized
//!   inputs this removes most of the work (784 of 1,050 input columns per sample).
//! - Later layers see different activations per point: their weights are mixed for all P
//!   points at once and applied with one batched matmul `[P, n, in] x [P, in, out]`.
//! - Data stays on the device; only P losses per chunk of samples come back.
//! - The three first-layer products do not depend on the point either: a scan computes
//!   them once per worker ([`FirstLayer`]) and every later tile starts at the mixing.
//! - On the CPU the layers after the first run per point and per block of rows
//!   (`later.rs`), so that a point's activations stay in cache; elsewhere the batched
//!   candle ops below.

use candle_core::{D, DType, Device, Result, Tensor, Var};
use ridgeline_common::spec::Activation;

use crate::fused;
use crate::models::mlp::activate;

/// Per-layer `(weight [out, in], bias [out])`.
pub type Layers = Vec<(Tensor, Tensor)>;

/// What a point is scored with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loss {
    /// Mean cross-entropy over samples; targets are class indices (u32).
    CrossEntropy,
    /// Mean squared error over all elements; targets are f32 `[n, outputs]`.
    Mse,
}

/// A plane through `base` spanned by one or two directions.
pub struct Plane<'a> {
    /// The centre θ.
    pub base: &'a Layers,
    /// First direction.
    pub d1: &'a Layers,
    /// Second direction (absent for 1-D scans).
    pub d2: Option<&'a Layers>,
    /// Hidden activation.
    pub activation: Activation,
}

/// A plane's sample-independent tensors for one set of points: every later layer's
/// per-point weights and biases.
struct Prepared {
    later: Vec<(Tensor, Tensor)>,
}

/// Layer 0's pre-activations at θ, along d₁ and along d₂, for every sample of a data
/// set, in the layout the mixing reads: one `[K, rows · out]` tensor per chunk of
/// `rows` samples. They are the same for every point of the plane, so a worker computes
/// them once per scan and data set, and every later tile skips the first layer's GEMM
/// (the bits are those of computing them per tile: same chunks, same products).
pub struct FirstLayer {
    rows: usize,
    samples: usize,
    chunks: Vec<Tensor>,
}

impl FirstLayer {
    /// Whether it was computed for `samples` samples in chunks of `rows`.
    pub fn fits(&self, samples: usize, rows: usize) -> bool {
        self.rows == rows && self.samples == samples
    }
}

/// Loss and accuracy (NaN for regression) at one point.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PointValue {
    /// Mean loss.
    pub loss: f64,
    /// Fraction of correct argmax predictions (classification only).
    pub accuracy: f64,
}

impl Plane<'_> {
    fn terms(&self, i: usize) -> Vec<(&Tensor, &Tensor)> {
        let mut v = vec![
            (&self.base[i].0, &self.base[i].1),
            (&self.d1[i].0, &self.d1[i].1),
        ];
        if let Some(d2) = self.d2 {
            v.push((&d2[i].0, &d2[i].1));
        }
        v
    }

    /// Mixing coefficients `[P, K]`: rows `(1, α)` or `(1, α, β)`.
    fn coefficients(&self, points: &[(f64, f64)], dtype: DType, device: &Device) -> Result<Tensor> {
        let k = if self.d2.is_some() { 3 } else { 2 };
        let mut c = Vec::with_capacity(points.len() * k);
        for &(a, b) in points {
            c.push(1.0);
            c.push(a);
            if k == 3 {
                c.push(b);
            }
        }
        Tensor::from_vec(c, (points.len(), k), device)?.to_dtype(dtype)
    }

    /// Layer 0's stacked `[W; D1; D2]ᵀ` `[in, K·out]` and biases `[K·out]`.
    fn stacked_first(&self) -> Result<(Tensor, Tensor)> {
        let t = self.terms(0);
        let w0 = Tensor::cat(&t.iter().map(|(w, _)| *w).collect::<Vec<_>>(), 0)?
            .t()?
            .contiguous()?;
        let b0 = Tensor::cat(&t.iter().map(|(_, b)| *b).collect::<Vec<_>>(), 0)?;
        Ok((w0, b0))
    }

    /// Layer 0's products for one chunk of rows `x [n, in]`: one GEMM against
    /// `[W; D1; D2]`, laid out `[K, n · out]` for the mixing.
    fn first_chunk(&self, x: &Tensor, (w0, b0): &(Tensor, Tensor)) -> Result<Tensor> {
        let n = x.dim(0)?;
        let out = self.base[0].0.dim(0)?;
        let k = self.terms(0).len();
        x.matmul(w0)?
            .broadcast_add(b0)?
            .reshape((n, k, out))?
            .transpose(0, 1)?
            .contiguous()?
            .reshape((k, n * out))
    }

    /// Bytes of [`Plane::first_layer`] for `samples` samples.
    pub fn first_layer_bytes(&self, samples: usize) -> u64 {
        let out = self.base[0].0.dims().first().copied().unwrap_or(0);
        (4 * samples * self.terms(0).len() * out) as u64
    }

    /// Layer 0's products for every sample of `x`, in chunks of `rows`.
    pub fn first_layer(&self, x: &Tensor, rows: usize) -> Result<FirstLayer> {
        let n = x.dim(0)?;
        let stacked = self.stacked_first()?;
        let mut chunks = Vec::with_capacity(n.div_ceil(rows.max(1)));
        let mut start = 0;
        while start < n {
            let len = rows.min(n - start);
            chunks.push(self.first_chunk(&x.narrow(0, start, len)?, &stacked)?);
            start += len;
        }
        Ok(FirstLayer {
            rows,
            samples: n,
            chunks,
        })
    }

    /// Every later layer's per-point weights `Wpᵀ` `[P, in, out]` (contiguous) and
    /// biases `[P, 1, out]`, computed once per call of `evaluate`.
    fn prepare(&self, coef: &Tensor) -> Result<Prepared> {
        let (p, k) = coef.dims2()?;
        let mut later = Vec::new();
        for i in 1..self.base.len() {
            let t = self.terms(i);
            let (o, inn) = t[0].0.dims2()?;
            let ws = Tensor::stack(&t.iter().map(|(w, _)| *w).collect::<Vec<_>>(), 0)?
                .reshape((k, o * inn))?;
            let bs = Tensor::stack(&t.iter().map(|(_, b)| *b).collect::<Vec<_>>(), 0)?;
            let wp = coef
                .matmul(&ws)?
                .reshape((p, o, inn))?
                .transpose(1, 2)?
                .contiguous()?;
            let bp = coef.matmul(&bs)?.reshape((p, 1, o))?;
            later.push((wp, bp));
        }
        Ok(Prepared { later })
    }

    /// Outputs of the model at every point for one chunk of `n` rows, from its
    /// first-layer products `z [K, n · out]`: `[P, n, outputs]`.
    fn forward(&self, z: &Tensor, n: usize, coef: &Tensor, prep: &Prepared) -> Result<Tensor> {
        if let Some(logits) = super::later::forward(z, n, coef, &prep.later, self.activation)? {
            return Ok(logits);
        }
        let p = coef.dim(0)?;
        let layers = self.base.len();
        let out = self.base[0].0.dim(0)?;
        // The activation follows every layer but the last, fused into the pass that
        // mixes (layer 0) or adds the biases (later layers).
        let act = |i: usize| (i + 1 < layers).then_some(self.activation);
        let mut h = fused::mix_activate(coef, z, act(0))?.reshape((p, n, out))?;
        for (i, (wp, bp)) in prep.later.iter().enumerate() {
            h = fused::bias_activate(h.matmul(wp)?, bp, act(i + 1))?;
        }
        Ok(h)
    }

    /// Loss and accuracy at each point over all rows of `x`, `rows` samples at a time;
    /// `first`: the first layer's products of `x` when the caller keeps them
    /// ([`Plane::first_layer`] with the same `rows`), computed here otherwise.
    pub fn evaluate(
        &self,
        points: &[(f64, f64)],
        (x, y): (&Tensor, &Tensor),
        loss: Loss,
        rows: usize,
        first: Option<&FirstLayer>,
    ) -> Result<Vec<PointValue>> {
        let n = x.dim(0)?;
        let first = first.filter(|f| f.fits(n, rows));
        let coef = self.coefficients(points, x.dtype(), x.device())?;
        let prep = self.prepare(&coef)?;
        let stacked = match first {
            Some(_) => None,
            None => Some(self.stacked_first()?),
        };
        let p = points.len();
        let mut loss_sum = vec![0f64; p];
        let mut correct = vec![0f64; p];
        let mut start = 0;
        let mut outputs = 1;
        while start < n {
            let len = rows.min(n - start);
            let yc = y.narrow(0, start, len)?;
            let z = match (first, &stacked) {
                (Some(f), _) => f.chunks[start / rows].clone(),
                (None, Some(st)) => self.first_chunk(&x.narrow(0, start, len)?, st)?,
                (None, None) => unreachable!("stacked when nothing is kept"),
            };
            let out = self.forward(&z, len, &coef, &prep)?; // [P, len, C]
            outputs = out.dim(2)?;
            let (l, c) = match loss {
                Loss::CrossEntropy => {
                    let logp = candle_nn::ops::log_softmax(&out, D::Minus1)?;
                    let idx = yc
                        .reshape((1, len, 1))?
                        .broadcast_as((p, len, 1))?
                        .contiguous()?;
                    let nll = logp.gather(&idx, 2)?.squeeze(2)?.sum(1)?.neg()?;
                    let pred = out.argmax(D::Minus1)?; // [P, len]
                    let hits = pred
                        .broadcast_eq(&yc.reshape((1, len))?)?
                        .to_dtype(DType::F32)?
                        .sum(1)?;
                    (nll, Some(hits))
                }
                Loss::Mse => {
                    let err = out
                        .broadcast_sub(&yc.unsqueeze(0)?)?
                        .sqr()?
                        .sum(2)?
                        .sum(1)?;
                    (err, None)
                }
            };
            for (s, v) in loss_sum
                .iter_mut()
                .zip(l.to_dtype(DType::F64)?.to_vec1::<f64>()?)
            {
                *s += v;
            }
            if let Some(c) = c {
                for (s, v) in correct
                    .iter_mut()
                    .zip(c.to_dtype(DType::F64)?.to_vec1::<f64>()?)
                {
                    *s += v;
                }
            }
            start += len;
        }
        let denom = match loss {
            Loss::CrossEntropy => n as f64,
            Loss::Mse => (n * outputs) as f64,
        };
        Ok(loss_sum
            .iter()
            .zip(&correct)
            .map(|(l, c)| PointValue {
                loss: l / denom,
                accuracy: if loss == Loss::CrossEntropy {
                    c / n as f64
                } else {
                    f64::NAN
                },
            })
            .collect())
    }
}

/// The reference tool's way, kept as the baseline of the benchmark: for each point,
/// overwrite the weights with `θ + α d₁ + β d₂`, evaluate mini-batch by mini-batch
/// (reading each batch's loss back), then restore θ.
pub fn evaluate_point_by_point(
    vars: &[(Var, Var)],
    plane: &Plane<'_>,
    points: &[(f64, f64)],
    x: &Tensor,
    y: &Tensor,
    batch: usize,
) -> Result<Vec<PointValue>> {
    let n = x.dim(0)?;
    let mut out = Vec::with_capacity(points.len());
    for &(a, b) in points {
        for (i, (wv, bv)) in vars.iter().enumerate() {
            let t = plane.terms(i);
            let mut w = (t[0].0 + (t[1].0 * a)?)?;
            let mut bb = (t[0].1 + (t[1].1 * a)?)?;
            if t.len() == 3 {
                w = (w + (t[2].0 * b)?)?;
                bb = (bb + (t[2].1 * b)?)?;
            }
            wv.set(&w)?;
            bv.set(&bb)?;
        }
        let (mut loss, mut correct) = (0f64, 0f64);
        let mut start = 0;
        while start < n {
            let len = batch.min(n - start);
            let xc = x.narrow(0, start, len)?;
            let yc = y.narrow(0, start, len)?;
            let mut h = xc;
            for (i, (w, bias)) in vars.iter().enumerate() {
                if i > 0 {
                    h = activate(h, plane.activation)?;
                }
                h = h
                    .matmul(&w.as_tensor().t()?)?
                    .broadcast_add(bias.as_tensor())?;
            }
            let l = candle_nn::loss::cross_entropy(&h, &yc)?;
            loss += f64::from(l.to_scalar::<f32>()?) * len as f64;
            correct += f64::from(
                h.argmax(D::Minus1)?
                    .eq(&yc)?
                    .to_dtype(DType::F32)?
                    .sum_all()?
                    .to_scalar::<f32>()?,
            );
            start += len;
        }
        out.push(PointValue {
            loss: loss / n as f64,
            accuracy: correct / n as f64,
        });
    }
    for (i, (wv, bv)) in vars.iter().enumerate() {
        wv.set(&plane.base[i].0)?;
        bv.set(&plane.base[i].1)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ridgeline_common::rng::Rng;

    fn randn(r: &mut Rng, dims: &[usize], scale: f64) -> Tensor {
        let n: usize = dims.iter().product();
        let v: Vec<f32> = (0..n).map(|_| (r.normal() * scale) as f32).collect();
        Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
    }

    fn layers(r: &mut Rng, dims: &[usize]) -> Layers {
        dims.windows(2)
            .map(|w| (randn(r, &[w[1], w[0]], 0.4), randn(r, &[w[1]], 0.1)))
            .collect()
    }

    /// Linear regression with MSE: L(α, β) is an exact quadratic in (α, β), computed here
    /// in f64 from its coefficients.
    #[test]
    fn linear_regression_slice_matches_the_closed_form() {
        let mut r = Rng::new(3);
        let (n, d, k) = (300, 6, 2);
        let x = randn(&mut r, &[n, d], 1.0);
        let y = randn(&mut r, &[n, k], 1.0);
        let base = layers(&mut r, &[d, k]);
        let d1 = layers(&mut r, &[d, k]);
        let d2 = layers(&mut r, &[d, k]);
        let plane = Plane {
            base: &base,
            d1: &d1,
            d2: Some(&d2),
            activation: Activation::Relu,
        };
        // Residual r(α, β) = e0 + α e1 + β e2, with e_i = X W_iᵀ + b_i - [y, 0, 0].
        let f64v = |t: &Tensor| {
            t.to_dtype(DType::F64)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap()
        };
        let (xv, yv) = (f64v(&x), f64v(&y));
        let resid = |l: &Layers, sub_y: bool| -> Vec<f64> {
            let (w, b) = (f64v(&l[0].0), f64v(&l[0].1));
            let mut e = vec![0f64; n * k];
            for s in 0..n {
                for o in 0..k {
                    let mut v = b[o];
                    for j in 0..d {
                        v += w[o * d + j] * xv[s * d + j];
                    }
                    e[s * k + o] = v - if sub_y { yv[s * k + o] } else { 0.0 };
                }
            }
            e
        };
        let (e0, e1, e2) = (resid(&base, true), resid(&d1, false), resid(&d2, false));
        let dot = |a: &[f64], b: &[f64]| {
            a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>() / (n * k) as f64
        };
        let exact = |a: f64, b: f64| {
            dot(&e0, &e0)
                + a * a * dot(&e1, &e1)
                + b * b * dot(&e2, &e2)
                + 2.0 * a * dot(&e0, &e1)
                + 2.0 * b * dot(&e0, &e2)
                + 2.0 * a * b * dot(&e1, &e2)
        };
        // A non-square grid: 7 values of α by 4 of β.
        let points: Vec<(f64, f64)> = (0..4)
            .flat_map(|j| (0..7).map(move |i| (-1.0 + i as f64 / 3.0, -0.5 + j as f64 / 2.0)))
            .collect();
        let got = plane
            .evaluate(&points, (&x, &y), Loss::Mse, 128, None)
            .unwrap();
        for (&(a, b), v) in points.iter().zip(&got) {
            let e = exact(a, b);
            assert!(
                (v.loss - e).abs() <= 1e-5 * e,
                "({a}, {b}): {} vs {e}",
                v.loss
            );
        }
    }

    /// The batched evaluator and the point-by-point baseline agree on an MLP.
    #[test]
    fn batched_matches_point_by_point() {
        let mut r = Rng::new(4);
        let dims = [10, 16, 12, 3];
        let base = layers(&mut r, &dims);
        let d1 = layers(&mut r, &dims);
        let d2 = layers(&mut r, &dims);
        let x = randn(&mut r, &[200, 10], 1.0);
        let y = Tensor::from_vec(
            (0..200u32).map(|i| i % 3).collect::<Vec<_>>(),
            200,
            &Device::Cpu,
        )
        .unwrap();
        let vars: Vec<(Var, Var)> = base
            .iter()
            .map(|(w, b)| (Var::from_tensor(w).unwrap(), Var::from_tensor(b).unwrap()))
            .collect();
        for activation in [Activation::Relu, Activation::Tanh] {
            let plane = Plane {
                base: &base,
                d1: &d1,
                d2: Some(&d2),
                activation,
            };
            let pts = [(0.0, 0.0), (0.5, -0.25), (-1.0, 1.0), (0.3, 0.9)];
            let a = plane
                .evaluate(&pts, (&x, &y), Loss::CrossEntropy, 64, None)
                .unwrap();
            // Kept first-layer products give the same bits; kept for other chunks
            // (rows) or another data set they are not used.
            let first = plane.first_layer(&x, 64).unwrap();
            let kept = plane
                .evaluate(&pts, (&x, &y), Loss::CrossEntropy, 64, Some(&first))
                .unwrap();
            assert_eq!(a, kept);
            let other = plane
                .evaluate(&pts, (&x, &y), Loss::CrossEntropy, 50, Some(&first))
                .unwrap();
            let fresh = plane
                .evaluate(&pts, (&x, &y), Loss::CrossEntropy, 50, None)
                .unwrap();
            assert_eq!(other, fresh);
            let b = evaluate_point_by_point(&vars, &plane, &pts, &x, &y, 50).unwrap();
            for (p, q) in a.iter().zip(&b) {
                assert!(
                    (p.loss - q.loss).abs() < 1e-4 * q.loss.max(1.0),
                    "{p:?} vs {q:?}"
                );
                assert!((p.accuracy - q.accuracy).abs() < 1e-9, "{p:?} vs {q:?}");
            }
            // The baseline restores the weights.
            assert_eq!(
                vars[0].0.as_tensor().to_vec2::<f32>().unwrap(),
                base[0].0.to_vec2::<f32>().unwrap()
            );
        }
    }
}
