//! Fused CPU kernels for the MLP's batched evaluator. Between its GEMMs the evaluator
//! mixes, adds biases and applies the activation to `[points, samples, width]` tensors;
//! as separate candle ops those are three single-threaded passes over memory with an
//! allocation each, which cost as much as the GEMMs (`benches/landscape.rs`). Here each
//! is one multi-threaded pass. Other devices and dtypes take the plain candle ops.

use candle_core::{
    CpuStorage, CustomOp2, DType, Device, InplaceOp2, Layout, Result, Shape, Tensor,
};
use rayon::prelude::*;
use ridgeline_common::spec::Activation;

/// The activation on one f32, as candle computes it.
fn act(a: Option<Activation>, v: f32) -> f32 {
    match a {
        None => v,
        Some(Activation::Relu) => v.max(0.0),
        Some(Activation::Tanh) => v.tanh(),
        Some(Activation::Gelu) => {
            const S: f32 = 0.797_884_6;
            0.5 * v * (1.0 + (S * v * (1.0 + 0.044715 * v * v)).tanh())
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
        let mut out = vec![0f32; p * m];
        // Rows of points, cut into column blocks: each block is K vectorised axpys.
        out.par_chunks_mut(m).enumerate().for_each(|(row, o)| {
            let cr = &c[row * k..(row + 1) * k];
            o.par_chunks_mut(GRAIN).enumerate().for_each(|(blk, ob)| {
                let start = blk * GRAIN;
                let len = ob.len();
                ob.copy_from_slice(&z[start..start + len]);
                ob.iter_mut().for_each(|v| *v *= cr[0]);
                for kk in 1..k {
                    let zk = &z[kk * m + start..kk * m + start + len];
                    ob.iter_mut().zip(zk).for_each(|(v, x)| *v += cr[kk] * x);
                }
                if self.0.is_some() {
                    ob.iter_mut().for_each(|v| *v = act(self.0, *v));
                }
            });
        });
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
    }
}
