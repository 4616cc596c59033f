//! An MLP tile's layers after the first, on the CPU, one point at a time and a block of
//! rows at a time, so that a point's activations stay in the core's cache between the
//! mixing, each GEMM and its bias and activation.
//!
//! Done layer by layer over all points at once (`Plane::forward`), each step reads and
//! writes `[points, rows, width]` tensors of tens of MB: perf showed the mixing, the
//! bias/activation passes and candle zeroing every matmul's output taking a third of a
//! tile beside the GEMMs. Here a block of 128 rows of one point is mixed into a buffer of
//! 128 x width floats, multiplied (gemm, one thread: the points are spread over the
//! threads instead), biased and activated in place, and passed on; only the logits leave
//! the block.

use candle_core::{Device, Result, Storage, Tensor};
use rayon::prelude::*;
use ridgeline_common::spec::Activation;

/// Rows of a point per block: its widest activation (256 floats for the MNIST MLP) is
/// 128 KiB, within a core's L2 beside the layer's weights.
const ROWS: usize = 128;

/// Runs `f` on the f32 slices of `tensors` (contiguous CPU tensors), or says `None`.
fn with_slices<R>(tensors: &[&Tensor], f: impl FnOnce(&[&[f32]]) -> R) -> Option<R> {
    let guards: Vec<_> = tensors.iter().map(|t| t.storage_and_layout()).collect();
    let mut slices = Vec::with_capacity(tensors.len());
    for (t, (storage, layout)) in tensors.iter().zip(&guards) {
        if !t.is_contiguous() || !matches!(t.device(), Device::Cpu) {
            return None;
        }
        let Storage::Cpu(cpu) = &**storage else {
            return None;
        };
        let all = cpu.as_slice::<f32>().ok()?;
        slices.push(&all[layout.start_offset()..layout.start_offset() + t.elem_count()]);
    }
    Some(f(&slices))
}

/// The logits `[P, n, outputs]` of every point for one chunk of `n` rows, from the
/// first layer's products `z [K, n · out0]`, the mixing coefficients `coef [P, K]` and
/// every later layer's per-point weights `Wpᵀ [P, in, out]` and biases `[P, 1, out]`;
/// the activation after every layer but the last. `None` where the tensors are not f32
/// on the CPU (the caller then takes candle's ops).
pub fn forward(
    z: &Tensor,
    n: usize,
    coef: &Tensor,
    later: &[(Tensor, Tensor)],
    act: Activation,
) -> Result<Option<Tensor>> {
    let (p, k) = coef.dims2()?;
    let out0 = z.dim(1)? / n.max(1);
    let mut shapes = Vec::with_capacity(later.len());
    for (w, _) in later {
        let (_, inn, out) = w.dims3()?;
        shapes.push((inn, out));
    }
    let Some(&(_, classes)) = shapes.last() else {
        return Ok(None);
    };
    let mut tensors = vec![z, coef];
    for (w, b) in later {
        tensors.extend([w, b]);
    }
    let all_f32 = tensors.iter().all(|t| t.dtype() == candle_core::DType::F32);
    if !all_f32 {
        return Ok(None);
    }
    let logits = with_slices(&tensors, |s| {
        let (z, coef) = (s[0], s[1]);
        let layers: Vec<(&[f32], &[f32])> = s[2..].chunks(2).map(|c| (c[0], c[1])).collect();
        let mut out = vec![0f32; p * n * classes];
        out.par_chunks_mut(n * classes)
            .enumerate()
            .for_each(|(pi, logits)| {
                let cp = &coef[pi * k..(pi + 1) * k];
                // One buffer per layer's output but the last (which goes to `logits`).
                let mut bufs: Vec<Vec<f32>> = std::iter::once(out0)
                    .chain(shapes.iter().map(|s| s.1))
                    .take(shapes.len())
                    .map(|w| vec![0f32; ROWS * w])
                    .collect();
                for r0 in (0..n).step_by(ROWS) {
                    let rows = ROWS.min(n - r0);
                    mix(&mut bufs[0][..rows * out0], z, cp, n * out0, r0 * out0, act);
                    for (i, (&(inn, outs), (w, b))) in shapes.iter().zip(&layers).enumerate() {
                        let last = i + 1 == shapes.len();
                        let (done, rest) = bufs.split_at_mut(i + 1);
                        let h = &done[i][..rows * inn];
                        let dst: &mut [f32] = if last {
                            &mut logits[r0 * classes..(r0 + rows) * classes]
                        } else {
                            &mut rest[0][..rows * outs]
                        };
                        let wp = &w[pi * inn * outs..(pi + 1) * inn * outs];
                        // SAFETY: dst is rows x outs, h rows x inn, wp inn x outs, all
                        // row-major and in bounds (sliced above).
                        unsafe {
                            gemm::gemm(
                                rows,
                                outs,
                                inn,
                                dst.as_mut_ptr(),
                                1,
                                outs as isize,
                                false,
                                h.as_ptr(),
                                1,
                                inn as isize,
                                wp.as_ptr(),
                                1,
                                outs as isize,
                                0.0f32,
                                1.0f32,
                                false,
                                false,
                                false,
                                gemm::Parallelism::None,
                            );
                        }
                        let bp = &b[pi * outs..(pi + 1) * outs];
                        let a = (!last).then_some(act);
                        for row in dst.chunks_mut(outs) {
                            for (v, bb) in row.iter_mut().zip(bp) {
                                *v = crate::fused::act(a, *v + bb);
                            }
                        }
                    }
                }
            });
        out
    });
    match logits {
        Some(v) => Ok(Some(Tensor::from_vec(v, (p, n, classes), coef.device())?)),
        None => Ok(None),
    }
}

/// `h[j] = act(Σ_k c[k] · z[k · stride + from + j])`, summed in the order k = 0, 1, ...
/// as the all-points mixing does.
fn mix(h: &mut [f32], z: &[f32], c: &[f32], stride: usize, from: usize, act: Activation) {
    let len = h.len();
    let zk = |k: usize| &z[k * stride + from..k * stride + from + len];
    match c.len() {
        2 => {
            let (z0, z1) = (zk(0), zk(1));
            for (i, v) in h.iter_mut().enumerate() {
                *v = crate::fused::act(Some(act), c[0] * z0[i] + c[1] * z1[i]);
            }
        }
        3 => {
            let (z0, z1, z2) = (zk(0), zk(1), zk(2));
            for (i, v) in h.iter_mut().enumerate() {
                *v = crate::fused::act(Some(act), c[0] * z0[i] + c[1] * z1[i] + c[2] * z2[i]);
            }
        }
        _ => {
            for (i, v) in h.iter_mut().enumerate() {
                let mut s = c[0] * zk(0)[i];
                for (kk, ck) in c.iter().enumerate().skip(1) {
                    s += ck * zk(kk)[i];
                }
                *v = crate::fused::act(Some(act), s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ridgeline_common::rng::Rng;

    /// Against the same network computed in f64 from the definitions: h₀ = act(Σ c·z),
    /// hᵢ = act(hᵢ₋₁ Wᵢ + bᵢ), logits without the activation; rows not a multiple of the
    /// block, two and three mixing terms.
    #[test]
    fn per_point_blocks_match_an_f64_reference() {
        let mut r = Rng::new(9);
        let mut randv = |n: usize| -> Vec<f32> { (0..n).map(|_| r.normal() as f32).collect() };
        for k in [2usize, 3] {
            let (p, n, widths) = (3usize, 300usize, [7usize, 5, 4]);
            let z = randv(k * n * widths[0]);
            let coef = randv(p * k);
            let layers: Vec<(Vec<f32>, Vec<f32>)> = widths
                .windows(2)
                .map(|w| (randv(p * w[0] * w[1]), randv(p * w[1])))
                .collect();
            let t = |v: &[f32], s: &[usize]| Tensor::from_slice(v, s, &Device::Cpu).unwrap();
            let later: Vec<(Tensor, Tensor)> = layers
                .iter()
                .zip(widths.windows(2))
                .map(|((w, b), d)| (t(w, &[p, d[0], d[1]]), t(b, &[p, 1, d[1]])))
                .collect();
            let got = forward(
                &t(&z, &[k, n * widths[0]]),
                n,
                &t(&coef, &[p, k]),
                &later,
                Activation::Tanh,
            )
            .unwrap()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
            for pi in 0..p {
                for row in 0..n {
                    let mut h: Vec<f64> = (0..widths[0])
                        .map(|j| {
                            let s: f64 = (0..k)
                                .map(|kk| {
                                    coef[pi * k + kk] as f64
                                        * z[kk * n * widths[0] + row * widths[0] + j] as f64
                                })
                                .sum();
                            s.tanh()
                        })
                        .collect();
                    for (i, (w, b)) in layers.iter().enumerate() {
                        let (inn, out) = (widths[i], widths[i + 1]);
                        h = (0..out)
                            .map(|o| {
                                let s: f64 = (0..inn)
                                    .map(|j| h[j] * w[pi * inn * out + j * out + o] as f64)
                                    .sum::<f64>()
                                    + b[pi * out + o] as f64;
                                if i + 1 < layers.len() { s.tanh() } else { s }
                            })
                            .collect();
                    }
                    for (o, want) in h.iter().enumerate() {
                        let v = got[(pi * n + row) * widths[2] + o] as f64;
                        assert!(
                            (v - want).abs() < 1e-4 * (1.0 + want.abs()),
                            "k {k} point {pi} row {row}: {v} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
