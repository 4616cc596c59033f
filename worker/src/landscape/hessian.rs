//! Hessian-vector products on one data shard, for the coordinator's block Lanczos.
//!
//! `Hv ≈ (∇L(θ + h v) − ∇L(θ − h v)) / 2h` in f64: a central difference of first-order
//! gradients, which needs no second-order autograd (candle detaches gradients by default
//! and its fused ops have no backward) and is exact for quadratic losses up to rounding.

use candle_core::{DType, Result, Tensor, Var};
use ridgeline_common::spec::Activation;

use super::eval::{Layers, Loss};
use crate::models::Model;

fn forward(vars: &[(Var, Var)], x: &Tensor, activation: Activation) -> Result<Tensor> {
    let mut h = x.clone();
    for (i, (w, b)) in vars.iter().enumerate() {
        if i > 0 {
            h = match activation {
                Activation::Relu => h.relu()?,
                Activation::Tanh => h.tanh()?,
                Activation::Gelu => h.gelu()?,
                Activation::Silu => h.silu()?,
            };
        }
        h = h
            .matmul(&w.as_tensor().t()?)?
            .broadcast_add(b.as_tensor())?;
    }
    Ok(h)
}

/// The gradient of the mean loss at `theta` (flat, in layer order), in f64.
fn gradient(
    shapes: &[(Vec<usize>, Vec<usize>)],
    theta: &[f64],
    x: &Tensor,
    y: &Tensor,
    loss: Loss,
    activation: Activation,
) -> Result<Vec<f64>> {
    let dev = x.device();
    let mut at = 0;
    let mut take = |shape: &Vec<usize>| -> Result<Var> {
        let n: usize = shape.iter().product();
        let t = Tensor::from_slice(&theta[at..at + n], shape.as_slice(), dev)?;
        at += n;
        Var::from_tensor(&t)
    };
    let vars: Vec<(Var, Var)> = shapes
        .iter()
        .map(|(w, b)| Ok((take(w)?, take(b)?)))
        .collect::<Result<_>>()?;
    let out = forward(&vars, x, activation)?;
    let l = match loss {
        Loss::CrossEntropy => candle_nn::loss::cross_entropy(&out, y)?,
        Loss::Mse => out.sub(y)?.sqr()?.mean_all()?,
    };
    let grads = l.backward()?;
    let mut g = Vec::with_capacity(theta.len());
    for (w, b) in &vars {
        for v in [w, b] {
            let gv = match grads.get(v) {
                Some(t) => t.flatten_all()?.to_vec1::<f64>()?,
                None => vec![0.0; v.elem_count()],
            };
            g.extend(gv);
        }
    }
    Ok(g)
}

/// `weight · H_shard v` for each vector `v`, where `H_shard` is the Hessian of the mean
/// loss over the shard `x`, `y` at `base`, and `weight` is the shard's share of the
/// samples (so that the coordinator's sum over shards is the full-data Hessian).
#[allow(clippy::too_many_arguments)]
pub fn shard_hvps(
    base: &Layers,
    activation: Activation,
    x: &Tensor,
    y: &Tensor,
    loss: Loss,
    vectors: &[Vec<f64>],
    epsilon: f64,
    weight: f64,
) -> Result<Vec<Vec<f64>>> {
    let x = x.to_dtype(DType::F64)?;
    let y = if loss == Loss::Mse {
        y.to_dtype(DType::F64)?
    } else {
        y.clone()
    };
    let shapes: Vec<(Vec<usize>, Vec<usize>)> = base
        .iter()
        .map(|(w, b)| (w.dims().to_vec(), b.dims().to_vec()))
        .collect();
    let mut theta = Vec::new();
    for (w, b) in base {
        theta.extend(w.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?);
        theta.extend(b.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?);
    }
    central_hvps(&theta, vectors, epsilon, weight, |t| {
        gradient(&shapes, t, &x, &y, loss, activation)
    })
}

/// `weight · H v` for each `v` by central differences of the gradient `grad` around
/// `theta`, with the step `epsilon · max(‖θ‖, 1) / ‖v‖`.
fn central_hvps(
    theta: &[f64],
    vectors: &[Vec<f64>],
    epsilon: f64,
    weight: f64,
    grad: impl Fn(&[f64]) -> Result<Vec<f64>>,
) -> Result<Vec<Vec<f64>>> {
    let scale = theta.iter().map(|t| t * t).sum::<f64>().sqrt().max(1.0);
    vectors
        .iter()
        .map(|v| {
            let vn = v
                .iter()
                .map(|t| t * t)
                .sum::<f64>()
                .sqrt()
                .max(f64::MIN_POSITIVE);
            let h = epsilon * scale / vn;
            let shifted = |sign: f64| -> Vec<f64> {
                theta.iter().zip(v).map(|(t, d)| t + sign * h * d).collect()
            };
            let gp = grad(&shifted(1.0))?;
            let gm = grad(&shifted(-1.0))?;
            Ok(gp
                .iter()
                .zip(&gm)
                .map(|(a, b)| weight * (a - b) / (2.0 * h))
                .collect())
        })
        .collect()
}

/// Hessian-vector products of any model's mean cross-entropy on one shard, in f64:
/// `model` is an f64 copy (batch norm in evaluation mode: its statistics are fixed),
/// `order` the indices of its parameters in the coordinator's flat order
/// ([`ridgeline_common::landscape::flat_order`]).
pub fn model_hvps(
    model: &dyn Model,
    order: &[usize],
    x: &Tensor,
    y: &Tensor,
    vectors: &[Vec<f64>],
    epsilon: f64,
    weight: f64,
) -> Result<Vec<Vec<f64>>> {
    let params = model.params();
    let mut theta = Vec::new();
    for &i in order {
        theta.extend(params[i].var.flatten_all()?.to_vec1::<f64>()?);
    }
    let x = if x.dtype().is_float() {
        x.to_dtype(DType::F64)?
    } else {
        x.clone()
    };
    // Writes a flat vector into the parameters, in `order`.
    let set = |t: &[f64]| -> Result<()> {
        let mut at = 0;
        for &i in order {
            let v = &params[i].var;
            let n = v.elem_count();
            v.set(&Tensor::from_slice(&t[at..at + n], v.dims(), x.device())?)?;
            at += n;
        }
        Ok(())
    };
    let grad = |t: &[f64]| -> Result<Vec<f64>> {
        set(t)?;
        let loss = crate::models::cross_entropy(&model.forward(&x, None)?, y)?;
        let grads = loss.backward()?;
        let mut g = Vec::with_capacity(t.len());
        for &i in order {
            let v = &params[i].var;
            match grads.get(v) {
                Some(gv) => g.extend(gv.flatten_all()?.to_vec1::<f64>()?),
                None => g.extend(std::iter::repeat_n(0.0, v.elem_count())),
            }
        }
        Ok(g)
    };
    let out = central_hvps(&theta, vectors, epsilon, weight, grad);
    // Leave the copy at θ for the next unit.
    set(&theta)?;
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use ridgeline_common::rng::Rng;

    /// Linear regression with MSE has the Hessian (2/(n k)) [XᵀX, Xᵀ1; 1ᵀX, n] per
    /// output; the products must match it column by column.
    #[test]
    fn hvp_of_linear_regression_matches_the_exact_hessian() {
        let mut r = Rng::new(8);
        let (n, d) = (50, 4);
        let xs: Vec<f64> = (0..n * d).map(|_| r.normal()).collect();
        let ys: Vec<f64> = (0..n).map(|_| r.normal()).collect();
        let x = Tensor::from_vec(
            xs.iter().map(|v| *v as f32).collect::<Vec<_>>(),
            (n, d),
            &Device::Cpu,
        )
        .unwrap();
        let y = Tensor::from_vec(
            ys.iter().map(|v| *v as f32).collect::<Vec<_>>(),
            (n, 1),
            &Device::Cpu,
        )
        .unwrap();
        let w = Tensor::from_vec(vec![0.3f32, -0.2, 0.5, 0.1], (1, d), &Device::Cpu).unwrap();
        let b = Tensor::from_vec(vec![0.05f32], 1, &Device::Cpu).unwrap();
        let base = vec![(w, b)];
        // Exact Hessian in f64 from the (f32-rounded) data.
        let xf: Vec<f64> = x
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|v| f64::from(*v))
            .collect();
        let mut hm = vec![vec![0.0; d + 1]; d + 1];
        for s in 0..n {
            let row: Vec<f64> = xf[s * d..(s + 1) * d]
                .iter()
                .copied()
                .chain(std::iter::once(1.0))
                .collect();
            for i in 0..=d {
                for j in 0..=d {
                    hm[i][j] += 2.0 / n as f64 * row[i] * row[j];
                }
            }
        }
        let vectors: Vec<Vec<f64>> = (0..3)
            .map(|_| (0..=d).map(|_| r.normal()).collect())
            .collect();
        let got = shard_hvps(
            &base,
            Activation::Relu,
            &x,
            &y,
            Loss::Mse,
            &vectors,
            1e-4,
            0.5,
        )
        .unwrap();
        for (v, hv) in vectors.iter().zip(&got) {
            for i in 0..=d {
                let exact: f64 = 0.5 * (0..=d).map(|j| hm[i][j] * v[j]).sum::<f64>();
                assert!(
                    (hv[i] - exact).abs() < 1e-7 * (1.0 + exact.abs()),
                    "{} vs {exact}",
                    hv[i]
                );
            }
        }
    }

    /// A tiny Llama (smooth everywhere, unlike ReLU nets whose kinks spoil finite
    /// differences of the loss): `vᵀ H v` from `model_hvps` equals the second difference
    /// of the mean next-token loss computed by the independent f64 forward pass of
    /// `models::reference`, for random `v`.
    #[test]
    fn transformer_curvature_matches_second_differences_of_an_independent_loss() {
        use crate::models::reference;
        use crate::models::{Layout, Model, Transformer, TransformerConfig, fresh};
        let c = TransformerConfig {
            vocab: 11,
            context: 6,
            d_model: 8,
            layers: 1,
            heads: 2,
            kv_heads: 1,
            d_ff: 12,
            norm_eps: 1e-5,
            rope_theta: 10_000.0,
            tie_embeddings: false,
        };
        let m = Transformer::build(
            c.clone(),
            Layout::Llama,
            &mut fresh(4, DType::F64, &Device::Cpu),
        )
        .unwrap();
        let mut r = Rng::new(6);
        let (b, t) = (3, 6);
        let ids: Vec<u32> = (0..b * (t + 1)).map(|_| r.below(11) as u32).collect();
        let rows: Vec<&[u32]> = ids.chunks(t + 1).collect();
        let xs: Vec<u32> = rows.iter().flat_map(|w| w[..t].to_vec()).collect();
        let ys: Vec<u32> = rows.iter().flat_map(|w| w[1..].to_vec()).collect();
        let x = Tensor::from_vec(xs.clone(), (b, t), &Device::Cpu).unwrap();
        let y = Tensor::from_vec(ys.clone(), (b, t), &Device::Cpu).unwrap();
        let params = m.params();
        let order: Vec<usize> = (0..params.len()).collect();
        let size: usize = params.iter().map(|p| p.var.elem_count()).sum();
        let flat =
            |p: &crate::models::Param| p.var.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let theta: Vec<f64> = params.iter().flat_map(flat).collect();
        let loss_at = |th: &[f64]| -> f64 {
            let mut w = reference::Weights::new();
            let mut at = 0;
            for p in params {
                let k = p.var.elem_count();
                w.insert(
                    p.name.clone(),
                    (p.var.dims().to_vec(), th[at..at + k].to_vec()),
                );
                at += k;
            }
            let mut total = 0.0;
            for s in 0..b {
                let z = reference::transformer(&w, &c, false, &xs[s * t..(s + 1) * t]);
                for (k, row) in z.iter().enumerate() {
                    let mx = row.iter().cloned().fold(f64::MIN, f64::max);
                    let lse = mx + row.iter().map(|v| (v - mx).exp()).sum::<f64>().ln();
                    total += lse - row[ys[s * t + k] as usize];
                }
            }
            total / (b * t) as f64
        };
        let vs: Vec<Vec<f64>> = (0..3)
            .map(|_| (0..size).map(|_| r.normal()).collect())
            .collect();
        let hv = model_hvps(&m, &order, &x, &y, &vs, 1e-5, 1.0).unwrap();
        for (v, hv) in vs.iter().zip(&hv) {
            let vhv: f64 = v.iter().zip(hv).map(|(a, b)| a * b).sum();
            let h = 1e-4;
            let at = |s: f64| {
                loss_at(
                    &theta
                        .iter()
                        .zip(v)
                        .map(|(t, d)| t + s * h * d)
                        .collect::<Vec<_>>(),
                )
            };
            let fd = (at(1.0) - 2.0 * at(0.0) + at(-1.0)) / (h * h);
            // Both are finite differences (steps 1e-5·‖θ‖ and 1e-4): 4 digits agree.
            assert!(
                (vhv - fd).abs() <= 1e-3 * fd.abs().max(1.0),
                "vᵀHv {vhv} vs {fd}"
            );
        }
        // The model is left at θ.
        let after: Vec<f64> = params.iter().flat_map(flat).collect();
        assert_eq!(after, theta);
    }
}
