//! Loss at grid points of any model: for each point the model's tensors are overwritten
//! in place with θ* + α·d₁ + β·d₂ and the fixed evaluation data is run through it.
//!
//! Memory is θ*, d₁, d₂ and the model's own tensors (4× the parameters) plus one
//! tensor's temporaries. Each point's tensors are computed from θ* by the same
//! expression, `(θ* + α·d₁) + β·d₂` rounded in f32, whatever tile the point is in, so a
//! scan split over any number of workers gives the same bits.

use candle_core::Result;

use super::eval::PointValue;
use super::load::{EvalData, Loaded};

/// Sets the model's tensors to `θ* + α d₁ + β d₂`.
pub fn perturb(l: &Loaded, a: f64, b: f64) -> Result<()> {
    for (i, p) in l.model.params().iter().enumerate() {
        let d2 = l.d2.as_ref().map(|d| &d[i]);
        if crate::fused::perturb(p.var.as_tensor(), &l.base[i], &l.d1[i], d2, a, b)? {
            continue;
        }
        let mut t = (&l.base[i] + (&l.d1[i] * a)?)?;
        if let Some(d2) = &l.d2 {
            t = (t + (&d2[i] * b)?)?;
        }
        p.var.set(&t)?;
    }
    Ok(())
}

/// Mean loss and accuracy of the model as it stands, `chunk` items at a time.
pub fn evaluate(l: &Loaded, chunk: usize) -> Result<PointValue> {
    let (x, y) = l.data.xy();
    let n = l.data.len();
    let (mut nll, mut hits, mut count) = (0f64, 0f64, 0usize);
    let mut start = 0;
    while start < n {
        let len = chunk.min(n - start);
        let (s, h, c) = l
            .model
            .score(&x.narrow(0, start, len)?, &y.narrow(0, start, len)?)?;
        nll += s;
        hits += h;
        count += c;
        start += len;
    }
    Ok(PointValue {
        loss: nll / count.max(1) as f64,
        accuracy: hits / count.max(1) as f64,
    })
}

/// Loss and accuracy at every point; the model is left at θ*.
pub fn evaluate_points(l: &Loaded, points: &[(f64, f64)], chunk: usize) -> Result<Vec<PointValue>> {
    let mut out = Vec::with_capacity(points.len());
    for &(a, b) in points {
        perturb(l, a, b)?;
        out.push(evaluate(l, chunk)?);
    }
    for (p, t) in l.model.params().iter().zip(&l.base) {
        p.var.set(t)?;
    }
    Ok(out)
}

/// Bytes of the activations of one evaluation chunk of `items` (samples or windows),
/// a conservative estimate: the largest layer's input and output with a factor for
/// temporaries, and for transformers the attention scores and the logits.
pub fn activation_bytes(l: &Loaded, items: usize) -> u64 {
    use crate::models::ModelConfig;
    let per_item: u64 = match (l.model.config(), &l.data) {
        (ModelConfig::Gpt2(c) | ModelConfig::Llama(c), EvalData::Text { x, .. }) => {
            let t = x.dim(1).unwrap_or(1) as u64;
            let widths = (8 * c.d_model + 3 * c.d_ff + 3 * c.vocab) as u64;
            t * widths + 3 * (c.heads as u64) * t * t
        }
        (ModelConfig::Cnn(c) | ModelConfig::Resnet(c), _) => {
            let pixels = (c.height * c.width) as u64;
            let widest = *c.channels.iter().max().unwrap_or(&1) as u64;
            6 * widest * pixels
        }
        (ModelConfig::Mlp(c), _) => 3 * c.dims().iter().sum::<usize>() as u64,
        _ => 1,
    };
    4 * per_item * items as u64
}
