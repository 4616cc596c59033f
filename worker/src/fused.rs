//! Fused, multi-threaded CPU kernels for the hot elementwise passes that candle runs on
//! one thread with an allocation each (measured in `benches/landscape.rs` and
//! `benches/models.rs` to cost as much as the GEMMs around them):
//!
//! - the MLP evaluator's mixing, biases and activation on `[points, samples, width]`;
//! - a transformer's GELU, and its causal softmax (mask and softmax in one pass).
//!
//! Other devices and dtypes, and training (which needs candle's backward), take the
//! plain candle ops.

use crate::vmath;
use candle_core::{
    CpuStorage, CustomOp2, DType, Device, InplaceOp2, InplaceOp3, Layout, Result, Shape, Storage,
    Tensor,
};
use rayon::prelude::*;
use ridgeline_common::spec::Activation;

/// tanh by one `exp`: libm's `tanhf` took a fifth of a GPT-2 scan's time in GELU
/// (perf); this is within 2 ulp-ish of it (1e-7 absolute), enough for f32 activations.
fn tanh(y: f32) -> f32 {
    let e = (2.0 * y.abs()).exp();
    let t = 1.0 - 2.0 / (e + 1.0);
    t.copysign(y)
}

/// The activation on one f32, as candle computes it (GELU's tanh by [`tanh`]).
pub(crate) fn act(a: Option<Activation>, v: f32) -> f32 {
    match a {
        None => v,
        Some(Activation::Relu) => v.max(0.0),
        Some(Activation::Tanh) => v.tanh(),
        Some(Activation::Gelu) => {
            const S: f32 = 0.797_884_6;
            0.5 * v * (1.0 + tanh(S * v * (1.0 + 0.044715 * v * v)))
        }
        Some(Activation::Silu) => v / (1.0 + (-v).exp()),
    }
}

fn plain(h: Tensor, a: Option<Activation>) -> Result<Tensor> {
    match a {
        None => Ok(h),
        Some(a) => crate::models::mlp::activate(h, a),
    }
}

fn fast(t: &Tensor) -> bool {
    t.dtype() == DType::F32 && matches!(t.device(), Device::Cpu) && t.is_contiguous()
}

/// Rows per parallel task: large enough to amortise scheduling.
const GRAIN: usize = 16 * 1024;

struct Mix(Option<Activation>);

impl CustomOp2 for Mix {
    fn name(&self) -> &'static str {
        "ridgeline-mix-activate"
    }

    /// `out[p, m] = act(Σ_k coef[p, k] · z[k, m])`.
    fn cpu_fwd(
        &self,
        c: &CpuStorage,
        cl: &Layout,
        z: &CpuStorage,
        zl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(c), CpuStorage::F32(z)) = (c, z) else {
            candle_core::bail!("mix: f32 only")
        };
        let (p, k) = cl.shape().dims2()?;
        let (_, m) = zl.shape().dims2()?;
        let c = &c[cl.start_offset()..cl.start_offset() + p * k];
        let z = &z[zl.start_offset()..zl.start_offset() + k * m];
        // Every element is written once, in one pass (no zeroing first: a 16-point
        // tile's output is tens of MB, and its memset showed in perf).
        let mut out: Vec<f32> = Vec::with_capacity(p * m);
        let a = self.0;
        out.spare_capacity_mut()
            .par_chunks_mut(m)
            .enumerate()
            .for_each(|(row, o)| {
                let cr = &c[row * k..(row + 1) * k];
                o.par_chunks_mut(GRAIN).enumerate().for_each(|(blk, ob)| {
                    let (start, len) = (blk * GRAIN, ob.len());
                    let z = |kk: usize| &z[kk * m + start..kk * m + start + len];
                    // The sum in the order c0·z0 + c1·z1 + c2·z2, as before.
                    match k {
                        2 => {
                            let (z0, z1) = (z(0), z(1));
                            for (i, o) in ob.iter_mut().enumerate() {
                                o.write(act(a, cr[0] * z0[i] + cr[1] * z1[i]));
                            }
                        }
                        3 => {
                            let (z0, z1, z2) = (z(0), z(1), z(2));
                            for (i, o) in ob.iter_mut().enumerate() {
                                o.write(act(a, cr[0] * z0[i] + cr[1] * z1[i] + cr[2] * z2[i]));
                            }
                        }
                        _ => {
                            for (i, o) in ob.iter_mut().enumerate() {
                                let mut v = cr[0] * z(0)[i];
                                for (kk, ck) in cr.iter().enumerate().skip(1) {
                                    v += ck * z(kk)[i];
                                }
                                o.write(act(a, v));
                            }
                        }
                    }
                });
            });
        // SAFETY: every one of the p · m elements was written above.
        unsafe { out.set_len(p * m) };
        Ok((CpuStorage::F32(out), Shape::from((p, m))))
    }
}

/// `act(coef · z)` for `coef [P, K]`, `z [K, M]`.
pub fn mix_activate(coef: &Tensor, z: &Tensor, a: Option<Activation>) -> Result<Tensor> {
    if fast(coef) && fast(z) {
        coef.apply_op2_no_bwd(z, &Mix(a))
    } else {
        plain(coef.matmul(z)?, a)
    }
}

struct BiasAct(Option<Activation>);

impl InplaceOp2 for BiasAct {
    fn name(&self) -> &'static str {
        "ridgeline-bias-activate"
    }

    /// `h[p, i, o] = act(h[p, i, o] + b[p, o])`, in place.
    fn cpu_fwd(&self, h: &mut CpuStorage, hl: &Layout, b: &CpuStorage, bl: &Layout) -> Result<()> {
        let (CpuStorage::F32(h), CpuStorage::F32(b)) = (h, b) else {
            candle_core::bail!("bias: f32 only")
        };
        let (p, n, o) = hl.shape().dims3()?;
        let h = &mut h[hl.start_offset()..hl.start_offset() + p * n * o];
        let b = &b[bl.start_offset()..bl.start_offset() + p * o];
        h.par_chunks_mut(o).enumerate().for_each(|(row, r)| {
            let bias = &b[(row / n) * o..(row / n + 1) * o];
            for (v, bb) in r.iter_mut().zip(bias) {
                *v = act(self.0, *v + bb);
            }
        });
        Ok(())
    }
}

/// `act(h + b)` for `h [P, n, o]` and per-point biases `b [P, 1, o]`, reusing `h`.
pub fn bias_activate(h: Tensor, b: &Tensor, a: Option<Activation>) -> Result<Tensor> {
    if fast(&h) && fast(b) {
        h.inplace_op2(b, &BiasAct(a))?;
        Ok(h)
    } else {
        plain(h.broadcast_add(b)?, a)
    }
}

struct Gelu;

impl candle_core::CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "ridgeline-gelu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(v) = s else {
            candle_core::bail!("gelu: f32 only")
        };
        let n = l.shape().elem_count();
        let v = &v[l.start_offset()..l.start_offset() + n];
        let mut out = vec![0f32; n];
        out.par_chunks_mut(GRAIN)
            .zip(v.par_chunks(GRAIN))
            .for_each(|(o, x)| {
                o.iter_mut()
                    .zip(x)
                    .for_each(|(o, x)| *o = act(Some(Activation::Gelu), *x))
            });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
}

/// GELU (tanh form), as candle's `gelu`, on all cores.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    if fast(x) {
        x.apply_op1_no_bwd(&Gelu)
    } else {
        x.gelu()
    }
}

struct SiluMul;

impl CustomOp2 for SiluMul {
    fn name(&self) -> &'static str {
        "ridgeline-silu-mul"
    }

    fn cpu_fwd(
        &self,
        g: &CpuStorage,
        gl: &Layout,
        u: &CpuStorage,
        ul: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(g), CpuStorage::F32(u)) = (g, u) else {
            candle_core::bail!("silu_mul: f32 only")
        };
        let n = gl.shape().elem_count();
        let g = &g[gl.start_offset()..gl.start_offset() + n];
        let u = &u[ul.start_offset()..ul.start_offset() + n];
        let mut out = vec![0f32; n];
        out.par_chunks_mut(GRAIN)
            .zip(g.par_chunks(GRAIN).zip(u.par_chunks(GRAIN)))
            .for_each(|(o, (g, u))| {
                for ((o, g), u) in o.iter_mut().zip(g).zip(u) {
                    *o = act(Some(Activation::Silu), *g) * u;
                }
            });
        Ok((CpuStorage::F32(out), gl.shape().clone()))
    }
}

/// `silu(g) · u` (Llama's SwiGLU) in one pass on all cores.
pub fn silu_mul(g: &Tensor, u: &Tensor) -> Result<Tensor> {
    if fast(g) && fast(u) && g.shape() == u.shape() {
        g.apply_op2_no_bwd(u, &SiluMul)
    } else {
        g.silu()? * u
    }
}

struct CausalSoftmax;

impl candle_core::CustomOp1 for CausalSoftmax {
    fn name(&self) -> &'static str {
        "ridgeline-causal-softmax"
    }

    /// Rows of `[.., t, t]` scores: row `i` is a softmax over columns `0..=i`, zero after.
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(v) = s else {
            candle_core::bail!("causal softmax: f32 only")
        };
        let t = *l.shape().dims().last().unwrap_or(&1);
        let n = l.shape().elem_count();
        let v = &v[l.start_offset()..l.start_offset() + n];
        Ok((
            CpuStorage::F32(causal_softmax_rows(v, t)),
            l.shape().clone(),
        ))
    }
}

/// The causal softmax of contiguous `[.., t, t]` scores: row `i` (of each `t`) a
/// softmax over its columns `0..=i`, zero after.
pub(crate) fn causal_softmax_rows(v: &[f32], t: usize) -> Vec<f32> {
    let mut out = vec![0f32; v.len()];
    out.par_chunks_mut(t)
        .zip(v.par_chunks(t))
        .enumerate()
        .for_each(|(r, (o, x))| {
            let keep = r % t + 1;
            let max = vmath::max(&x[..keep]);
            let sum = vmath::exp_shifted(&mut o[..keep], &x[..keep], max);
            o[..keep].iter_mut().for_each(|o| *o /= sum);
        });
    out
}

/// Softmax over the last dimension of `[.., t, t]` scores with the causal mask (query
/// `i` sees keys `0..=i`) in one pass, or `None` where the fused kernel does not apply.
pub fn causal_softmax(scores: &Tensor) -> Result<Option<Tensor>> {
    if fast(scores) {
        Ok(Some(scores.apply_op1_no_bwd(&CausalSoftmax)?))
    } else {
        Ok(None)
    }
}

/// `t = (θ* + (d₁·α + 0)) + (d₂·β + 0)` (without d₂: `θ* + (d₁·α + 0)`), elementwise in
/// f32: the rounding of candle's `base + d1 * α + d2 * β` (`tensor * f64` is candle's
/// `affine(α, 0)`), so every point keeps its bits, in one parallel pass into the
/// model's own storage instead of five passes, three of them into new tensors (0.3 s of
/// SmolLM2-135M's 4 s points).
struct Perturb {
    base: Tensor,
    a: f32,
    b: Option<f32>,
}

impl InplaceOp3 for Perturb {
    fn name(&self) -> &'static str {
        "ridgeline-perturb"
    }

    fn cpu_fwd(
        &self,
        t: &mut CpuStorage,
        tl: &Layout,
        d1: &CpuStorage,
        l1: &Layout,
        d2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let (CpuStorage::F32(t), CpuStorage::F32(d1), CpuStorage::F32(d2)) = (t, d1, d2) else {
            candle_core::bail!("perturb: f32 only")
        };
        let (base, bl) = self.base.storage_and_layout();
        let Storage::Cpu(CpuStorage::F32(base)) = &*base else {
            candle_core::bail!("perturb: f32 only")
        };
        let n = tl.shape().elem_count();
        let at = |l: &Layout| l.start_offset()..l.start_offset() + n;
        let (t, base, d1, d2) = (&mut t[at(tl)], &base[at(bl)], &d1[at(l1)], &d2[at(l2)]);
        let a = self.a;
        t.par_chunks_mut(GRAIN)
            .zip(base.par_chunks(GRAIN))
            .zip(d1.par_chunks(GRAIN).zip(d2.par_chunks(GRAIN)))
            .for_each(|((t, base), (d1, d2))| match self.b {
                Some(b) => {
                    for (((t, w), x), y) in t.iter_mut().zip(base).zip(d1).zip(d2) {
                        *t = (w + (x * a + 0.0)) + (y * b + 0.0);
                    }
                }
                None => {
                    for ((t, w), x) in t.iter_mut().zip(base).zip(d1) {
                        *t = w + (x * a + 0.0);
                    }
                }
            });
        Ok(())
    }
}

/// Sets `t` to θ* + α d₁ (+ β d₂) in place ([`Perturb`]); `false` (nothing done) where
/// the tensors are not contiguous f32 on the CPU of one shape. `base` and the directions
/// must not share `t`'s storage (θ* is a copy), or the locks would deadlock.
pub fn perturb(
    t: &Tensor,
    base: &Tensor,
    d1: &Tensor,
    d2: Option<&Tensor>,
    a: f64,
    b: f64,
) -> Result<bool> {
    let all = [Some(t), Some(base), Some(d1), d2];
    if !all
        .iter()
        .flatten()
        .all(|x| fast(x) && x.shape() == t.shape())
    {
        return Ok(false);
    }
    let op = Perturb {
        base: base.clone(),
        a: a as f32,
        b: d2.map(|_| b as f32),
    };
    t.inplace_op3(d1, d2.unwrap_or(d1), &op)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ridgeline_common::rng::Rng;

    fn randn(r: &mut Rng, dims: &[usize]) -> Tensor {
        let n: usize = dims.iter().product();
        let v: Vec<f32> = (0..n).map(|_| r.normal() as f32).collect();
        Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
    }

    /// The fused kernels equal the candle ops they replace, for every activation.
    #[test]
    fn fused_kernels_match_candle_ops() {
        let mut r = Rng::new(2);
        let (coef, z) = (randn(&mut r, &[5, 3]), randn(&mut r, &[3, 40_000]));
        let (h, b) = (randn(&mut r, &[5, 300, 70]), randn(&mut r, &[5, 1, 70]));
        for a in [
            None,
            Some(Activation::Relu),
            Some(Activation::Tanh),
            Some(Activation::Gelu),
            Some(Activation::Silu),
        ] {
            let want = plain(coef.matmul(&z).unwrap(), a).unwrap();
            let got = mix_activate(&coef, &z, a).unwrap();
            let d = (want - got).unwrap().abs().unwrap().max_all().unwrap();
            assert!(d.to_scalar::<f32>().unwrap() < 1e-5, "mix {a:?}");
            let want = plain(h.broadcast_add(&b).unwrap(), a).unwrap();
            let got = bias_activate(h.copy().unwrap(), &b, a).unwrap();
            let d = (want - got).unwrap().abs().unwrap().max_all().unwrap();
            assert!(d.to_scalar::<f32>().unwrap() < 1e-5, "bias {a:?}");
        }
        let x = (randn(&mut r, &[3, 50_000]) * 4.0).unwrap();
        let d = (gelu(&x).unwrap() - x.gelu().unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert!(d.to_scalar::<f32>().unwrap() < 1e-6, "gelu");
        let u = randn(&mut r, &[3, 50_000]);
        let d = (silu_mul(&x, &u).unwrap() - (x.silu().unwrap() * &u).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert!(d.to_scalar::<f32>().unwrap() < 1e-5, "silu_mul");
    }

    /// The in-place perturbation gives candle's `base + d1 * a + d2 * b` bit for bit,
    /// signed zeros included.
    #[test]
    fn perturb_matches_the_candle_expression_bit_for_bit() {
        let mut r = Rng::new(4);
        let dims = [3, 70_001];
        let mut base = randn(&mut r, &dims)
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        base[..100].fill(-0.0);
        let base = Tensor::from_vec(base, &dims, &Device::Cpu).unwrap();
        let (d1, d2) = (randn(&mut r, &dims), randn(&mut r, &dims));
        for (a, b, two) in [(0.3, -0.2, true), (-1.0, 0.0, true), (0.7, 0.0, false)] {
            let want = (&base + (&d1 * a).unwrap()).unwrap();
            let want = if two {
                (want + (&d2 * b).unwrap()).unwrap()
            } else {
                want
            };
            let t = Tensor::zeros(&dims, DType::F32, &Device::Cpu).unwrap();
            assert!(perturb(&t, &base, &d1, two.then_some(&d2), a, b).unwrap());
            let bits = |x: &Tensor| -> Vec<u32> {
                let v = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                v.iter().map(|f| f.to_bits()).collect()
            };
            assert_eq!(bits(&t), bits(&want), "a={a} b={b} two={two}");
        }
        // Not f32: left to candle.
        let t64 = Tensor::zeros(&dims, DType::F64, &Device::Cpu).unwrap();
        let b64 = base.to_dtype(DType::F64).unwrap();
        assert!(!perturb(&t64, &b64, &b64, None, 1.0, 0.0).unwrap());
    }

    /// The causal softmax equals candle's masked softmax.
    #[test]
    fn causal_softmax_matches_mask_then_softmax() {
        let mut r = Rng::new(3);
        let t = 7;
        let s = randn(&mut r, &[2, 3, t, t]);
        let mask = crate::models::transformer::causal_mask(t, DType::F32, &Device::Cpu).unwrap();
        let want = candle_nn::ops::softmax_last_dim(&s.broadcast_add(&mask).unwrap()).unwrap();
        let got = causal_softmax(&s).unwrap().unwrap();
        let d = (want - got).unwrap().abs().unwrap().max_all().unwrap();
        assert!(d.to_scalar::<f32>().unwrap() < 1e-6);
    }
}
