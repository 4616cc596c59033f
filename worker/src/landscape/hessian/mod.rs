//! Hessian-vector products on one data shard, for the coordinator's Lanczos runs.
//!
//! The default is exact: `Hv = ∇(∇L · v)`, a second backward pass through the graph of
//! the first. candle keeps that graph only when `CANDLE_GRAD_DO_NOT_DETACH=1` was set
//! before the thread's first backward pass (the `ridgeline` binary sets it first thing
//! in `main`; `.cargo/config.toml` sets it for tests and benches), and only through ops
//! that have a backward pass: the models take candle's plain ops in f64, which is what
//! the Hessian copy is. Without the variable the second pass would silently be wrong, so
//! [`second_order_available`] checks it on a case with a known answer first.
//!
//! Central differences of gradients stay as an explicit fallback
//! (`landscape.hessian.method = "finite_difference"`). A fixed step is biased on ReLU
//! networks (pre-activations change sign between θ − hv and θ + hv), so the step is
//! chosen per vector from a ladder by the smallest estimated error, and both are
//! reported.

use candle_core::{DType, Result, Tensor, Var};

use super::eval::Loss;
use crate::models::Model;

/// How the products are computed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Method {
    /// Double backward.
    Exact,
    /// Central differences of f64 gradients, starting at a step of `epsilon · ‖θ‖`.
    FiniteDifference {
        /// Largest step tried, relative to `max(‖θ‖, 1)`.
        epsilon: f64,
    },
}

/// What was done, for `hessian.json`.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Info {
    /// `exact` or `finite_difference`.
    pub method: String,
    /// Finite differences only: the step used for each vector (absolute, along v/‖v‖).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<f64>,
    /// Finite differences only: each product's estimated relative error, from the
    /// difference with the next step of the ladder.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub estimated_relative_errors: Vec<f64>,
}

/// Whether this thread's candle keeps second-order graphs: `d/dx (d/dx x³) = 6x`.
pub fn second_order_available() -> Result<bool> {
    let x = Var::new(&[2f64], &candle_core::Device::Cpu)?;
    let g = x.as_tensor().powf(3.0)?.sum_all()?.backward()?;
    let Some(dx) = g.get(&x) else {
        return Ok(false);
    };
    let gg = dx.sum_all()?.backward()?;
    Ok(match gg.get(&x) {
        Some(t) => (t.to_vec1::<f64>()?[0] - 12.0).abs() < 1e-12,
        None => false,
    })
}

/// The mean loss of `model` on `x`, `y`.
fn loss_of(model: &dyn Model, x: &Tensor, y: &Tensor, loss: Loss) -> Result<Tensor> {
    let out = model.forward(x, None)?;
    match loss {
        Loss::CrossEntropy => crate::models::cross_entropy(&out, y),
        Loss::Mse => out.sub(&y.to_dtype(out.dtype())?)?.sqr()?.mean_all(),
    }
}

/// `weight · H v` for each `v`, where `H` is the Hessian of the mean loss of `model`
/// (an f64 copy, batch norm in evaluation mode) on `x`, `y`, with respect to the
/// parameters `order` (indices into `model.params()`, in the coordinator's flat order:
/// [`ridgeline_common::landscape::flat_order`]); `weight` is the shard's share of the
/// samples, so that the coordinator's sum over shards is the whole split's Hessian.
///
/// The samples go through in chunks of at most `chunk` (the mean loss's Hessian is the
/// chunks' Hessians weighted by their share): a second-order graph holds several f64
/// copies of every activation, and a CNN on 2,000 MNIST images in one pass took 24 GB.
#[allow(clippy::too_many_arguments)]
pub fn model_hvps(
    model: &dyn Model,
    order: &[usize],
    x: &Tensor,
    y: &Tensor,
    loss: Loss,
    vectors: &[Vec<f64>],
    weight: f64,
    method: Method,
    chunk: usize,
) -> Result<(Vec<Vec<f64>>, Info)> {
    let n = x.dim(0)?;
    let chunk = chunk.max(1);
    if n <= chunk {
        return chunk_hvps(model, order, x, y, loss, vectors, weight, method);
    }
    let mut total: Option<(Vec<Vec<f64>>, Info)> = None;
    let mut start = 0;
    while start < n {
        let len = chunk.min(n - start);
        let share = weight * len as f64 / n as f64;
        let (hv, info) = chunk_hvps(
            model,
            order,
            &x.narrow(0, start, len)?,
            &y.narrow(0, start, len)?,
            loss,
            vectors,
            share,
            method,
        )?;
        total = Some(match total {
            None => (hv, info),
            Some((mut acc, mut all)) => {
                for (a, h) in acc.iter_mut().zip(hv) {
                    a.iter_mut().zip(h).for_each(|(a, h)| *a += h);
                }
                all.steps.extend(info.steps);
                all.estimated_relative_errors
                    .extend(info.estimated_relative_errors);
                (acc, all)
            }
        });
        start += len;
    }
    Ok(total.expect("at least one chunk"))
}

/// [`model_hvps`] on one chunk.
#[allow(clippy::too_many_arguments)]
fn chunk_hvps(
    model: &dyn Model,
    order: &[usize],
    x: &Tensor,
    y: &Tensor,
    loss: Loss,
    vectors: &[Vec<f64>],
    weight: f64,
    method: Method,
) -> Result<(Vec<Vec<f64>>, Info)> {
    let x = if x.dtype().is_float() {
        x.to_dtype(DType::F64)?
    } else {
        x.clone()
    };
    let params = model.params();
    let vars: Vec<&Var> = order.iter().map(|&i| &params[i].var).collect();
    match method {
        Method::Exact => {
            if !second_order_available()? {
                candle_core::bail!(
                    "exact Hessian-vector products need CANDLE_GRAD_DO_NOT_DETACH=1 in the \
                     worker's environment before it starts (the ridgeline binary sets it); \
                     or set landscape.hessian.method = \"finite_difference\""
                )
            }
            let hv = exact(model, &vars, &x, y, loss, vectors, weight)?;
            let info = Info {
                method: "exact".into(),
                ..Info::default()
            };
            Ok((hv, info))
        }
        Method::FiniteDifference { epsilon } => {
            let theta = flatten(&vars)?;
            let grad = |t: &[f64]| -> Result<Vec<f64>> {
                set(&vars, t)?;
                let grads = loss_of(model, &x, y, loss)?.backward()?;
                gather(&vars, |v| grads.get(v).cloned())
            };
            let out = central_hvps(&theta, vectors, epsilon, weight, grad);
            // Leave the copy at θ for the next unit.
            set(&vars, &theta)?;
            out
        }
    }
}

/// The values of `vars`, one flat vector.
fn flatten(vars: &[&Var]) -> Result<Vec<f64>> {
    gather(vars, |v| Some(v.as_tensor().clone()))
}

/// One tensor per var (zeros where `get` has none), flattened into one vector.
fn gather(vars: &[&Var], get: impl Fn(&Var) -> Option<Tensor>) -> Result<Vec<f64>> {
    let mut out = Vec::with_capacity(vars.iter().map(|v| v.elem_count()).sum());
    for v in vars {
        match get(v) {
            Some(t) => out.extend(t.flatten_all()?.to_vec1::<f64>()?),
            None => out.extend(std::iter::repeat_n(0.0, v.elem_count())),
        }
    }
    Ok(out)
}

/// Writes a flat vector into `vars`.
fn set(vars: &[&Var], t: &[f64]) -> Result<()> {
    let mut at = 0;
    for v in vars {
        let n = v.elem_count();
        v.set(&Tensor::from_slice(&t[at..at + n], v.dims(), v.device())?)?;
        at += n;
    }
    Ok(())
}

/// One forward and backward pass whose graph is kept, then per vector a backward pass
/// of `Σ_i ⟨∇_i L, v_i⟩`, whose gradient is `H v`.
fn exact(
    model: &dyn Model,
    vars: &[&Var],
    x: &Tensor,
    y: &Tensor,
    loss: Loss,
    vectors: &[Vec<f64>],
    weight: f64,
) -> Result<Vec<Vec<f64>>> {
    let grads = loss_of(model, x, y, loss)?.backward()?;
    let g: Vec<Option<Tensor>> = vars.iter().map(|v| grads.get(v).cloned()).collect();
    vectors
        .iter()
        .map(|v| {
            let mut at = 0;
            let mut dot: Option<Tensor> = None;
            for (var, gi) in vars.iter().zip(&g) {
                let n = var.elem_count();
                if let Some(gi) = gi {
                    let vi = Tensor::from_slice(&v[at..at + n], var.dims(), var.device())?;
                    let term = (gi * vi)?.sum_all()?;
                    dot = Some(match dot {
                        Some(d) => (d + term)?,
                        None => term,
                    });
                }
                at += n;
            }
            let Some(dot) = dot else {
                return Ok(vec![0.0; v.len()]);
            };
            let hv = dot.backward()?;
            let mut out = gather(vars, |var| hv.get(var).cloned())?;
            out.iter_mut().for_each(|h| *h *= weight);
            Ok(out)
        })
        .collect()
}

/// Steps tried per vector by the finite-difference fallback: `h₀ / 4^k`.
const LADDER: i32 = 7;

/// `weight · H v` for each `v` by central differences of the gradient `grad` around
/// `theta`. Each vector tries the steps `h_k = epsilon · max(‖θ‖, 1) / ‖v‖ / 4^k`; the
/// difference between the products at `h_{k-1}` and `h_k` bounds the error at `h_k`
/// (truncation error shrinks 16× per rung, so the coarser one dominates the difference),
/// and the rung with the smallest bound wins: large steps cross ReLU kinks, small ones
/// drown in rounding.
pub fn central_hvps(
    theta: &[f64],
    vectors: &[Vec<f64>],
    epsilon: f64,
    weight: f64,
    grad: impl Fn(&[f64]) -> Result<Vec<f64>>,
) -> Result<(Vec<Vec<f64>>, Info)> {
    let norm = |v: &[f64]| v.iter().map(|t| t * t).sum::<f64>().sqrt();
    let scale = norm(theta).max(1.0);
    let mut info = Info {
        method: "finite_difference".into(),
        ..Info::default()
    };
    let mut out = Vec::with_capacity(vectors.len());
    for v in vectors {
        let vn = norm(v).max(f64::MIN_POSITIVE);
        let at = |h: f64| -> Result<Vec<f64>> {
            let shifted = |sign: f64| -> Vec<f64> {
                theta.iter().zip(v).map(|(t, d)| t + sign * h * d).collect()
            };
            let (gp, gm) = (grad(&shifted(1.0))?, grad(&shifted(-1.0))?);
            Ok(gp
                .iter()
                .zip(&gm)
                .map(|(a, b)| (a - b) / (2.0 * h))
                .collect())
        };
        let h0 = epsilon * scale / vn;
        let mut prev = at(h0)?;
        let mut best: Option<(f64, f64, Vec<f64>)> = None;
        for k in 1..LADDER {
            let h = h0 / 4f64.powi(k);
            let cur = at(h)?;
            let diff: Vec<f64> = cur.iter().zip(&prev).map(|(a, b)| a - b).collect();
            let err = norm(&diff) / norm(&cur).max(f64::MIN_POSITIVE);
            if best.as_ref().is_none_or(|(e, _, _)| err < *e) {
                best = Some((err, h, cur.clone()));
            }
            prev = cur;
        }
        let (err, h, hv) = best.expect("at least two rungs");
        info.steps.push(h * vn);
        info.estimated_relative_errors.push(err);
        out.push(hv.into_iter().map(|x| x * weight).collect());
    }
    Ok((out, info))
}

#[cfg(test)]
mod tests;
