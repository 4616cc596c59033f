//! The mean cross-entropy of logits against class labels, for training in f32 on the
//! CPU: forward and backward one op each.
//!
//! candle's `cross_entropy` is a log-softmax (a maximum, a subtraction, an exponential,
//! a sum, a logarithm, another subtraction) and a gather, a sum and a division: each a
//! pass over the logits and a node of the graph, and again in the backward pass. For a
//! language model the logits are the largest tensor of the step (tokens × vocabulary).
//! Here the forward pass is one pass per row (its log-sum-exp and its label's logit)
//! and the backward pass one more (softmax minus the label, scaled), rows spread over
//! the threads; the rows' losses are added in f64 in row order, so the loss has the
//! same bits on any number of threads. Evaluation, other dtypes and second derivatives
//! keep candle's composition (`super::cross_entropy`).

use super::par;
use crate::vmath;
use candle_core::{CpuStorage, CustomOp2, D, DType, Layout, Result, Shape, Tensor};

/// Rows per task.
const ROWS: usize = 16;

/// The mean over rows of `logsumexp(logits[r]) - logits[r, targets[r]]`, for logits
/// `[..., classes]` in f32 on the CPU and integer labels of the same leading shape.
pub(crate) fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let classes = logits.dim(D::Minus1)?;
    let logits = logits.reshape(((), classes))?.contiguous()?;
    let targets = targets.flatten_all()?.to_dtype(DType::U32)?.contiguous()?;
    if targets.dim(0)? != logits.dim(0)? {
        candle_core::bail!(
            "cross_entropy: {} labels for {} rows of logits",
            targets.dim(0)?,
            logits.dim(0)?
        );
    }
    logits.apply_op2(&targets, SoftmaxCe)
}

/// The logits and the labels as slices, the labels checked against the classes.
fn operands<'a>(
    logits: &'a CpuStorage,
    ll: &Layout,
    targets: &'a CpuStorage,
    tl: &Layout,
) -> Result<(&'a [f32], &'a [u32], usize)> {
    let (Some((ls, le)), Some((ts, te))) = (ll.contiguous_offsets(), tl.contiguous_offsets())
    else {
        candle_core::bail!("cross_entropy: expected contiguous tensors");
    };
    let (_, classes) = ll.shape().dims2()?;
    let targets = &targets.as_slice::<u32>()?[ts..te];
    if let Some(t) = targets.iter().find(|&&t| t as usize >= classes) {
        candle_core::bail!("cross_entropy: label {t} is not one of the {classes} classes");
    }
    Ok((&logits.as_slice::<f32>()?[ls..le], targets, classes))
}

/// A row's maximum and the sum of `exp(logit - maximum)`.
fn max_and_sum(row: &[f32]) -> (f32, f32) {
    let max = vmath::max(row);
    (max, vmath::sum_exp(row, max))
}

struct SoftmaxCe;

impl CustomOp2 for SoftmaxCe {
    fn name(&self) -> &'static str {
        "ridgeline-softmax-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        logits: &CpuStorage,
        ll: &Layout,
        targets: &CpuStorage,
        tl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (logits, targets, classes) = operands(logits, ll, targets, tl)?;
        let mut losses = vec![0f64; targets.len()];
        par::chunks(&mut losses, ROWS, logits.len(), |block, out| {
            for (j, loss) in out.iter_mut().enumerate() {
                let r = block * ROWS + j;
                let row = &logits[r * classes..][..classes];
                let (max, sum) = max_and_sum(row);
                *loss = f64::from(max + sum.ln() - row[targets[r] as usize]);
            }
        });
        let mean = losses.iter().sum::<f64>() / targets.len().max(1) as f64;
        Ok((CpuStorage::F32(vec![mean as f32]), Shape::from(())))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        _loss: &Tensor,
        dloss: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let scale = dloss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        let grad = logits.apply_op2_no_bwd(targets, &Grad { scale })?;
        Ok((Some(grad), None))
    }
}

/// The logits' gradient: `(softmax(row) - onehot(label)) · scale / rows`.
struct Grad {
    scale: f32,
}

impl CustomOp2 for Grad {
    fn name(&self) -> &'static str {
        "ridgeline-softmax-cross-entropy-grad"
    }

    fn cpu_fwd(
        &self,
        logits: &CpuStorage,
        ll: &Layout,
        targets: &CpuStorage,
        tl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (logits, targets, classes) = operands(logits, ll, targets, tl)?;
        let scale = self.scale / targets.len().max(1) as f32;
        let mut grad = vec![0f32; logits.len()];
        let work = grad.len();
        par::chunks(&mut grad, ROWS * classes, work, |block, out| {
            for (j, g) in out.chunks_mut(classes).enumerate() {
                let r = block * ROWS + j;
                let row = &logits[r * classes..][..classes];
                let max = vmath::max(row);
                let k = scale / vmath::exp_shifted(g, row, max);
                g.iter_mut().for_each(|g| *g *= k);
                g[targets[r] as usize] -= scale;
            }
        });
        Ok((CpuStorage::F32(grad), ll.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn the_loss_and_its_gradient_match_the_definition_in_f64() {
        let mut rng = ridgeline_common::rng::Rng::new(17);
        // Rows fewer than a block and several blocks; logits large enough that a naive
        // exponential would overflow f32.
        for (n, c, spread) in [(3, 4, 1.0), (37, 11, 5.0), (20, 257, 60.0)] {
            let logits: Vec<f32> = (0..n * c).map(|_| (rng.normal() * spread) as f32).collect();
            let labels: Vec<u32> = (0..n).map(|_| (rng.next_f64() * c as f64) as u32).collect();
            let lv =
                Var::from_tensor(&Tensor::from_vec(logits.clone(), (n, c), &Device::Cpu).unwrap())
                    .unwrap();
            let t = Tensor::from_vec(labels.clone(), n, &Device::Cpu).unwrap();
            let loss = cross_entropy(lv.as_tensor(), &t).unwrap();
            // Scaled, so that the incoming gradient is not 1.
            let g = (&loss * 3.0).unwrap().backward().unwrap();
            let got = g.get(lv.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
            let mut want_loss = 0f64;
            for r in 0..n {
                let row: Vec<f64> = logits[r * c..][..c].iter().map(|&v| f64::from(v)).collect();
                let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = row.iter().map(|v| (v - max).exp()).sum();
                want_loss += max + sum.ln() - row[labels[r] as usize];
                for k in 0..c {
                    let p = (row[k] - max).exp() / sum;
                    let want = 3.0 * (p - f64::from(u8::from(k == labels[r] as usize))) / n as f64;
                    let got = f64::from(got[r][k]);
                    assert!(
                        (got - want).abs() <= 1e-6,
                        "{n}x{c} [{r}, {k}]: {got} against {want}"
                    );
                }
            }
            want_loss /= n as f64;
            let got = f64::from(loss.to_scalar::<f32>().unwrap());
            assert!(
                (got - want_loss).abs() <= 1e-5 * want_loss.abs().max(1.0),
                "{got} against {want_loss}"
            );
        }
    }

    #[test]
    fn a_label_that_is_no_class_is_refused_by_name() {
        let logits = Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
        let t = Tensor::from_vec(vec![1u32, 3], 2, &Device::Cpu).unwrap();
        let e = cross_entropy(&logits, &t).unwrap_err().to_string();
        assert!(e.contains("label 3 is not one of the 3 classes"), "{e}");
    }
}
