//! Hessian-vector products on one data shard, for the coordinator's block Lanczos.
//!
//! `Hv ≈ (∇L(θ + h v) − ∇L(θ − h v)) / 2h` in f64: a central difference of first-order
//! gradients, which needs no second-order autograd (candle detaches gradients by default
//! and its fused ops have no backward) and is exact for quadratic losses up to rounding.

use candle_core::{DType, Result, Tensor, Var};
use ridgeline_common::spec::Activation;

use super::eval::{Layers, Loss};

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
            let gp = gradient(&shapes, &shifted(1.0), &x, &y, loss, activation)?;
            let gm = gradient(&shapes, &shifted(-1.0), &x, &y, loss, activation)?;
            Ok(gp
                .iter()
                .zip(&gm)
                .map(|(a, b)| weight * (a - b) / (2.0 * h))
                .collect())
        })
        .collect()
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
}
