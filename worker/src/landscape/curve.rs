//! Mode connectivity along a trained curve (Garipov et al. 2018, "Loss surfaces, mode
//! connectivity, and fast ensembling of DNNs"): between θ₀ (the scanned checkpoint) and
//! θ₁ (`directions.to`), a quadratic Bézier curve or a polygonal chain through a control
//! point θ_c, which is trained to minimise E_{t ~ U(0,1)} L(φ(t)) with Adam: each step
//! draws t, sets the model to φ(t), and moves θ_c along w_c(t) ∇L(φ(t)) (∂φ/∂θ_c = w_c).
//! Then the loss and accuracy along the curve and along the straight line are
//! evaluated at the same t; the coordinator computes both barriers.

use candle_core::{Result, Tensor};
use ridgeline_common::landscape::CurveSpec;
use ridgeline_common::rng::Rng;

use super::load::Loaded;
use super::perturb::{evaluate, perturb};
use crate::data::Samples;
use crate::models::cross_entropy;

/// Loss and accuracy along the curve and the line at `t`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Curves {
    /// The evaluation points on [0, 1].
    pub t: Vec<f64>,
    /// Along the trained curve.
    pub curve_loss: Vec<f64>,
    /// Along the trained curve.
    pub curve_accuracy: Vec<f64>,
    /// Along θ₀ + t (θ₁ − θ₀).
    pub line_loss: Vec<f64>,
    /// Along θ₀ + t (θ₁ − θ₀).
    pub line_accuracy: Vec<f64>,
    /// Mean training loss over the curve's last epoch.
    pub final_train_loss: f64,
    /// Optimizer steps taken.
    pub steps: usize,
}

/// Sets the model to `w0 θ₀ + wc θ_c + w1 θ₁` (batch-norm statistics included).
fn place(
    l: &Loaded,
    control: &[Tensor],
    theta1: &[Tensor],
    (w0, wc, w1): (f64, f64, f64),
) -> Result<()> {
    for (i, p) in l.model.params().iter().enumerate() {
        let t = ((&l.base[i] * w0)? + (&control[i] * wc)?)?;
        p.var.set(&(t + (&theta1[i] * w1)?)?)?;
    }
    Ok(())
}

/// Trains the control point on `train` and evaluates both paths on the scan's data, in
/// chunks of `chunk` items. Returns the curves and θ_c (one tensor per model tensor);
/// the model is left at θ₀.
pub fn run(
    l: &Loaded,
    c: &CurveSpec,
    train: &Samples,
    chunk: usize,
) -> Result<(Curves, Vec<Tensor>)> {
    let dev = l.base[0].device();
    // θ_c starts halfway: the curve starts as the line.
    let mut control: Vec<Tensor> = l
        .base
        .iter()
        .zip(&l.d1)
        .map(|(b, d)| b + (d * 0.5)?)
        .collect::<Result<_>>()?;
    let theta1: Vec<Tensor> = l
        .base
        .iter()
        .zip(&l.d1)
        .map(|(b, d)| b + d)
        .collect::<Result<_>>()?;
    let params = l.model.params();
    let trainable: Vec<bool> = params.iter().map(|p| p.trainable()).collect();
    let mut m: Vec<Tensor> = control
        .iter()
        .map(|t| t.zeros_like())
        .collect::<Result<_>>()?;
    let mut v = m.clone();
    let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
    let n = train.len();
    let batch = c.batch_size.min(n).max(1);
    let mut rng = Rng::stream(c.seed, 0x0063_7572_7665);
    let mut order: Vec<usize> = (0..n).collect();
    let mut steps = 0usize;
    let mut last_epoch_loss = f64::NAN;
    for _ in 0..c.epochs {
        rng.shuffle(&mut order);
        let mut sum = 0.0;
        for idx in order.chunks(batch) {
            let xs: Vec<f32> = idx
                .iter()
                .flat_map(|&i| train.x[i * train.dim..(i + 1) * train.dim].iter().copied())
                .collect();
            let ys: Vec<u32> = idx.iter().map(|&i| train.y[i]).collect();
            let x = Tensor::from_vec(xs, (idx.len(), train.dim), dev)?;
            let y = Tensor::from_vec(ys, idx.len(), dev)?;
            let t = rng.next_f64();
            let w = c.kind.weights(t);
            place(l, &control, &theta1, w)?;
            let loss = cross_entropy(&l.model.forward(&x, None)?, &y)?;
            sum += f64::from(loss.to_scalar::<f32>()?) * idx.len() as f64;
            let grads = loss.backward()?;
            steps += 1;
            let (c1, c2) = (1.0 - b1.powi(steps as i32), 1.0 - b2.powi(steps as i32));
            for (i, p) in params.iter().enumerate() {
                let Some(g) = grads.get(&p.var).filter(|_| trainable[i]) else {
                    continue;
                };
                let g = (g * w.1)?;
                m[i] = ((&m[i] * b1)? + (&g * (1.0 - b1))?)?;
                v[i] = ((&v[i] * b2)? + (g.sqr()? * (1.0 - b2))?)?;
                let step = ((&m[i] / c1)? / ((&v[i] / c2)?.sqrt()? + eps)?)?;
                control[i] = (&control[i] - (step * c.lr)?)?;
            }
        }
        last_epoch_loss = sum / n as f64;
    }
    let ts: Vec<f64> = (0..c.points)
        .map(|k| k as f64 / (c.points - 1) as f64)
        .collect();
    let mut out = Curves {
        t: ts.clone(),
        curve_loss: Vec::new(),
        curve_accuracy: Vec::new(),
        line_loss: Vec::new(),
        line_accuracy: Vec::new(),
        final_train_loss: last_epoch_loss,
        steps,
    };
    for &t in &ts {
        place(l, &control, &theta1, c.kind.weights(t))?;
        let p = evaluate(l, chunk)?;
        out.curve_loss.push(p.loss);
        out.curve_accuracy.push(p.accuracy);
        perturb(l, t, 0.0)?;
        let p = evaluate(l, chunk)?;
        out.line_loss.push(p.loss);
        out.line_accuracy.push(p.accuracy);
    }
    for (p, t) in params.iter().zip(&l.base) {
        p.var.set(t)?;
    }
    Ok((out, control))
}
