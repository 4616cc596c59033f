//! GELU (tanh form, GPT-2's) for training in f32 on the CPU: forward and backward one
//! vectorised pass each (`vmath`, its tanh by one `exp`).
//!
//! candle's `gelu` runs libm's `tanhf` per element, and its backward pass composes the
//! derivative of ten ops (`powf`, `tanh`, `sqr`, products, sums), each a pass and an
//! allocation: a fifth of a GPT-2 training step (perf, libm's `powf`, `expm1f` and
//! `tanhf` the most of it). Evaluation, other dtypes and second derivatives keep
//! candle's op.

use super::par;
use crate::vmath;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

use super::operand::f32_slice;

/// Elements per task.
const GRAIN: usize = 16 * 1024;

/// `gelu(x)` in f32 on the CPU, with its backward pass.
pub(crate) fn gelu(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(Gelu)
}

/// The f32 values of a contiguous operand.
fn values<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    f32_slice("gelu", s, l)
}

struct Gelu;

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "ridgeline-gelu-train"
    }

    fn cpu_fwd(&self, x: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = values(x, xl)?;
        let mut y = vec![0f32; x.len()];
        par::chunks(&mut y, GRAIN, x.len(), |i, y| {
            vmath::gelu(y, &x[i * GRAIN..][..y.len()])
        });
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(dy.contiguous()?.apply_op2_no_bwd(x, &GeluGrad)?))
    }
}

/// `dy · gelu'(x)`.
struct GeluGrad;

impl CustomOp2 for GeluGrad {
    fn name(&self) -> &'static str {
        "ridgeline-gelu-grad"
    }

    fn cpu_fwd(
        &self,
        dy: &CpuStorage,
        dyl: &Layout,
        x: &CpuStorage,
        xl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let mut dx = values(dy, dyl)?.to_vec();
        let x = values(x, xl)?;
        par::chunks(&mut dx, GRAIN, x.len(), |i, g| {
            vmath::gelu_grad(g, &x[i * GRAIN..][..g.len()])
        });
        Ok((CpuStorage::F32(dx), xl.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    #[test]
    fn gelu_and_its_gradient_match_the_closed_form_in_f64() {
        // Both tails (where the tanh saturates), around zero, and a NaN.
        let mut xs: Vec<f32> = (0..40_001)
            .map(|i| (i as f32 - 20_000.0) * 0.0006)
            .collect();
        xs.extend([-30.0, 30.0, 1e-30, f32::NAN]);
        let n = xs.len();
        let dys: Vec<f32> = (0..n).map(|i| 1.0 + (i % 7) as f32 * 0.25).collect();
        let x = Var::from_tensor(&Tensor::from_vec(xs.clone(), n, &Device::Cpu).unwrap()).unwrap();
        let dy = Tensor::from_vec(dys.clone(), n, &Device::Cpu).unwrap();
        let y = gelu(x.as_tensor()).unwrap();
        let g = (&y * &dy).unwrap().sum_all().unwrap().backward().unwrap();
        let got_y = y.to_vec1::<f32>().unwrap();
        let got_g = g.get(x.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        let s = (2.0 / std::f64::consts::PI).sqrt();
        for i in 0..n {
            let v = f64::from(xs[i]);
            let u = s * (v + 0.044715 * v * v * v);
            let t = u.tanh();
            let want_y = 0.5 * v * (1.0 + t);
            let want_g = f64::from(dys[i])
                * (0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * s * (1.0 + 3.0 * 0.044715 * v * v));
            if v.is_nan() {
                assert!(got_y[i].is_nan() && got_g[i].is_nan());
                continue;
            }
            let (y, d) = (f64::from(got_y[i]), f64::from(got_g[i]));
            assert!(
                (y - want_y).abs() <= 1e-6 * want_y.abs().max(1.0),
                "gelu({v}) = {y}, not {want_y}"
            );
            assert!(
                (d - want_g).abs() <= 2e-6 * want_g.abs().max(1.0),
                "gelu'({v}) = {d}, not {want_g}"
            );
        }
        // And candle's own op agrees in f64 on a few points, derivative included.
        let some: Vec<f64> = [-3.0, -0.5, 0.0, 0.7, 2.5].to_vec();
        let xv =
            Var::from_tensor(&Tensor::from_vec(some.clone(), 5, &Device::Cpu).unwrap()).unwrap();
        let gc = xv
            .as_tensor()
            .gelu()
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let want = gc.get(xv.as_tensor()).unwrap().to_vec1::<f64>().unwrap();
        let x32 = Var::from_tensor(
            &Tensor::from_vec(some, 5, &Device::Cpu)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap(),
        )
        .unwrap();
        let g32 = gelu(x32.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let got = g32.get(x32.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        for (a, b) in got.iter().zip(&want) {
            assert!((f64::from(*a) - b).abs() < 1e-6, "{a} against candle's {b}");
        }
    }
}
