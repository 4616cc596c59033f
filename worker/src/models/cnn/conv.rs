//! 2-D convolution for training in f32 on the CPU, forward and backward, as im2col and
//! GEMM per image.
//!
//! candle's backward pass of `conv2d` runs a `conv_transpose2d` by direct loops for the
//! input's gradient and, for the kernel's, a convolution of the input by the output's
//! gradient (a kernel the size of the image, over one or a few "images": the channels),
//! which parallelises over almost nothing: most of a CNN's training step (perf). Here
//! each image's patches are laid out once per pass, the three products are GEMMs, and
//! the images are spread over the threads; the kernel's gradient is summed over fixed
//! blocks of images in a fixed order, so a step gives the same bits on any number of
//! threads. Other dtypes and devices, and evaluation, keep candle's ops (f64 is what
//! second derivatives are taken in; this op has none).

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::models::operand::f32_slice;

use crate::models::gemm::{View, gemm};

/// Images per block of the kernel's gradient.
const BLOCK: usize = 8;

/// A convolution's sizes.
#[derive(Clone, Copy, Debug)]
pub(super) struct Geometry {
    n: usize,
    cin: usize,
    h: usize,
    w: usize,
    cout: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    padding: usize,
    oh: usize,
    ow: usize,
}

impl Geometry {
    fn new(x: &Tensor, k: &Tensor, stride: usize, padding: usize) -> Result<Self> {
        let (n, cin, h, w) = x.dims4()?;
        let (cout, kcin, kh, kw) = k.dims4()?;
        if kcin != cin || stride == 0 || h + 2 * padding < kh || w + 2 * padding < kw {
            candle_core::bail!(
                "conv2d: input {:?} and kernel {:?} with stride {stride} and padding {padding} do not fit",
                x.dims(),
                k.dims()
            );
        }
        let oh = (h + 2 * padding - kh) / stride + 1;
        let ow = (w + 2 * padding - kw) / stride + 1;
        Ok(Geometry {
            n,
            cin,
            h,
            w,
            cout,
            kh,
            kw,
            stride,
            padding,
            oh,
            ow,
        })
    }

    /// Rows of a patch matrix: input channels × kernel rows × kernel columns.
    fn k(&self) -> usize {
        self.cin * self.kh * self.kw
    }

    /// Output pixels of an image.
    fn l(&self) -> usize {
        self.oh * self.ow
    }

    /// Calls `f(row of the patch matrix, first output pixel, its input offset within the
    /// image, count)` for every run of patch entries that fall inside the image: along
    /// an output row, pixels `px..px + count` read the input at `at, at + stride, ..`
    /// (the rest is padding: zero). Runs, not entries: a per-entry bounds test and call
    /// took most of a CNN's training step (perf).
    fn each_run(&self, mut f: impl FnMut(usize, usize, usize, usize)) {
        let (p, s) = (self.padding, self.stride);
        for ci in 0..self.cin {
            for ky in 0..self.kh {
                for kx in 0..self.kw {
                    let row = (ci * self.kh + ky) * self.kw + kx;
                    // Output columns whose input column ox·s + kx − p is in 0..w.
                    let lo = p.saturating_sub(kx).div_ceil(s);
                    let hi = (self.w + p).saturating_sub(kx).div_ceil(s).min(self.ow);
                    if lo >= hi {
                        continue;
                    }
                    for oy in 0..self.oh {
                        let Some(iy) = (oy * s + ky).checked_sub(p).filter(|&iy| iy < self.h)
                        else {
                            continue;
                        };
                        let at = (ci * self.h + iy) * self.w + lo * s + kx - p;
                        f(row, oy * self.ow + lo, at, hi - lo);
                    }
                }
            }
        }
    }

    /// One image's patches as a `[k, l]` matrix, row-major.
    fn im2col(&self, image: &[f32]) -> Vec<f32> {
        let (l, s) = (self.l(), self.stride);
        let mut cols = vec![0f32; self.k() * l];
        self.each_run(|row, px, at, n| {
            let dst = &mut cols[row * l + px..][..n];
            if s == 1 {
                dst.copy_from_slice(&image[at..at + n]);
            } else {
                for (d, v) in dst.iter_mut().zip(image[at..].iter().step_by(s)) {
                    *d = *v;
                }
            }
        });
        cols
    }

    /// Adds one image's patch matrix `[k, l]` back into the image's gradient.
    fn col2im(&self, cols: &[f32], dx: &mut [f32]) {
        let (l, s) = (self.l(), self.stride);
        self.each_run(|row, px, at, n| {
            let src = &cols[row * l + px..][..n];
            if s == 1 {
                for (d, v) in dx[at..at + n].iter_mut().zip(src) {
                    *d += v;
                }
            } else {
                for (d, v) in dx[at..].iter_mut().step_by(s).zip(src) {
                    *d += v;
                }
            }
        });
    }
}

/// `x.conv2d(kernel, padding, stride, 1, 1)` for training in f32 on the CPU.
pub(super) fn conv2d(x: &Tensor, kernel: &Tensor, padding: usize, stride: usize) -> Result<Tensor> {
    let g = Geometry::new(x, kernel, stride, padding)?;
    x.contiguous()?.apply_op2(&kernel.contiguous()?, Conv(g))
}

struct Conv(Geometry);

impl CustomOp2 for Conv {
    fn name(&self) -> &'static str {
        "ridgeline-conv2d"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        k: &CpuStorage,
        kl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, k, g) = (
            f32_slice("conv2d", x, xl)?,
            f32_slice("conv2d", k, kl)?,
            self.0,
        );
        let (kk, l) = (g.k(), g.l());
        let image = g.cin * g.h * g.w;
        let mut y = vec![0f32; g.n * g.cout * l];
        y.par_chunks_mut(g.cout * l)
            .enumerate()
            .for_each(|(b, out)| {
                let cols = g.im2col(&x[b * image..][..image]);
                let kernel = View {
                    data: k,
                    rows: g.cout,
                    cols: kk,
                    rs: kk,
                    cs: 1,
                };
                let patches = View {
                    data: &cols,
                    rows: kk,
                    cols: l,
                    rs: l,
                    cs: 1,
                };
                gemm(out, l, kernel, patches, true);
            });
        Ok((CpuStorage::F32(y), Shape::from((g.n, g.cout, g.oh, g.ow))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        k: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        // The first layer's input is data: its gradient is never wanted.
        let dx = if x.track_op() {
            Some(dy.apply_op2_no_bwd(k, &GradInput(self.0))?)
        } else {
            None
        };
        let dk = dy.apply_op2_no_bwd(x, &GradKernel(self.0))?;
        Ok((dx, Some(dk)))
    }
}

/// The input's gradient: per image, kernelᵀ · dy, its patches added back in place.
struct GradInput(Geometry);

impl CustomOp2 for GradInput {
    fn name(&self) -> &'static str {
        "ridgeline-conv2d-grad-input"
    }

    fn cpu_fwd(
        &self,
        dy: &CpuStorage,
        dyl: &Layout,
        k: &CpuStorage,
        kl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (dy, k, g) = (
            f32_slice("conv2d", dy, dyl)?,
            f32_slice("conv2d", k, kl)?,
            self.0,
        );
        let (kk, l) = (g.k(), g.l());
        let image = g.cin * g.h * g.w;
        let mut dx = vec![0f32; g.n * image];
        dx.par_chunks_mut(image).enumerate().for_each(|(b, dx)| {
            let mut cols = vec![0f32; kk * l];
            let kernel_t = View {
                data: k,
                rows: kk,
                cols: g.cout,
                rs: 1,
                cs: kk,
            };
            let grad = View {
                data: &dy[b * g.cout * l..][..g.cout * l],
                rows: g.cout,
                cols: l,
                rs: l,
                cs: 1,
            };
            gemm(&mut cols, l, kernel_t, grad, true);
            g.col2im(&cols, dx);
        });
        Ok((CpuStorage::F32(dx), Shape::from((g.n, g.cin, g.h, g.w))))
    }
}

/// The kernel's gradient: Σ over images of dy · patchesᵀ, summed per fixed block of
/// images and then block after block.
struct GradKernel(Geometry);

impl CustomOp2 for GradKernel {
    fn name(&self) -> &'static str {
        "ridgeline-conv2d-grad-kernel"
    }

    fn cpu_fwd(
        &self,
        dy: &CpuStorage,
        dyl: &Layout,
        x: &CpuStorage,
        xl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (dy, x, g) = (
            f32_slice("conv2d", dy, dyl)?,
            f32_slice("conv2d", x, xl)?,
            self.0,
        );
        let (kk, l) = (g.k(), g.l());
        let image = g.cin * g.h * g.w;
        let blocks: Vec<Vec<f32>> = (0..g.n.div_ceil(BLOCK))
            .into_par_iter()
            .map(|blk| {
                let mut acc = vec![0f32; g.cout * kk];
                for b in blk * BLOCK..((blk + 1) * BLOCK).min(g.n) {
                    let cols = g.im2col(&x[b * image..][..image]);
                    let grad = View {
                        data: &dy[b * g.cout * l..][..g.cout * l],
                        rows: g.cout,
                        cols: l,
                        rs: l,
                        cs: 1,
                    };
                    let patches_t = View {
                        data: &cols,
                        rows: l,
                        cols: kk,
                        rs: 1,
                        cs: l,
                    };
                    gemm(&mut acc, kk, grad, patches_t, true);
                }
                acc
            })
            .collect();
        let mut dk = vec![0f32; g.cout * kk];
        for blk in blocks {
            for (d, v) in dk.iter_mut().zip(blk) {
                *d += v;
            }
        }
        Ok((
            CpuStorage::F32(dk),
            Shape::from((g.cout, g.cin, g.kh, g.kw)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::reference::flat;
    use candle_core::{DType, Device, Var};

    /// Output and gradients (input, kernel) of Σ y·r by the fused op in f32.
    fn fused(x: &[f64], k: &[f64], r: &[f64], g: Geometry) -> Vec<Vec<f64>> {
        let t = |v: &[f64], shape: (usize, usize, usize, usize)| {
            let v: Vec<f32> = v.iter().map(|&v| v as f32).collect();
            Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
        };
        let x = Var::from_tensor(&t(x, (g.n, g.cin, g.h, g.w))).unwrap();
        let k = Var::from_tensor(&t(k, (g.cout, g.cin, g.kh, g.kw))).unwrap();
        let y = conv2d(x.as_tensor(), k.as_tensor(), g.padding, g.stride).unwrap();
        let r = t(r, (g.n, g.cout, g.oh, g.ow));
        let grads = (&y * r).unwrap().sum_all().unwrap().backward().unwrap();
        vec![
            flat(&y),
            flat(grads.get(x.as_tensor()).unwrap()),
            flat(grads.get(k.as_tensor()).unwrap()),
        ]
    }

    /// The same by the definition, in f64: y[b,o,i,j] = Σ x[b,c,i·s+u−p,j·s+v−p] k[o,c,u,v];
    /// with dy = r, dx and dk gather the same products.
    fn reference(x: &[f64], k: &[f64], r: &[f64], g: Geometry) -> Vec<Vec<f64>> {
        let mut y = vec![0.0; g.n * g.cout * g.oh * g.ow];
        let mut dx = vec![0.0; x.len()];
        let mut dk = vec![0.0; k.len()];
        for b in 0..g.n {
            for o in 0..g.cout {
                for i in 0..g.oh {
                    for j in 0..g.ow {
                        let yi = ((b * g.cout + o) * g.oh + i) * g.ow + j;
                        for c in 0..g.cin {
                            for u in 0..g.kh {
                                for v in 0..g.kw {
                                    let iy = (i * g.stride + u) as isize - g.padding as isize;
                                    let ix = (j * g.stride + v) as isize - g.padding as isize;
                                    if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize
                                    {
                                        continue;
                                    }
                                    let xi =
                                        ((b * g.cin + c) * g.h + iy as usize) * g.w + ix as usize;
                                    let ki = ((o * g.cin + c) * g.kh + u) * g.kw + v;
                                    y[yi] += x[xi] * k[ki];
                                    dx[xi] += r[yi] * k[ki];
                                    dk[ki] += r[yi] * x[xi];
                                }
                            }
                        }
                    }
                }
            }
        }
        vec![y, dx, dk]
    }

    #[test]
    fn fused_conv_and_its_gradients_match_the_definition_in_f64() {
        // One image and more than a block of them, 1×1 and 3×3 kernels, strides 1 and
        // 2, with and without padding, odd sizes, non-square images.
        let mut rng = ridgeline_common::rng::Rng::new(11);
        let cases = [
            // (n, cin, h, w, cout, k, stride, padding)
            (1, 1, 5, 5, 2, 3, 1, 1),
            (3, 2, 7, 6, 4, 3, 2, 1),
            (11, 3, 6, 9, 5, 3, 1, 0),
            (2, 4, 5, 5, 3, 1, 2, 0),
            (9, 2, 4, 4, 3, 3, 1, 1),
        ];
        for (n, cin, h, w, cout, k, stride, padding) in cases {
            let xt = Tensor::zeros((n, cin, h, w), DType::F32, &Device::Cpu).unwrap();
            let kt = Tensor::zeros((cout, cin, k, k), DType::F32, &Device::Cpu).unwrap();
            let g = Geometry::new(&xt, &kt, stride, padding).unwrap();
            let mut draw = |len: usize| -> Vec<f64> { (0..len).map(|_| rng.normal()).collect() };
            let x = draw(xt.elem_count());
            let kernel = draw(kt.elem_count());
            let r = draw(n * cout * g.oh * g.ow);
            let want = reference(&x, &kernel, &r, g);
            let got = fused(&x, &kernel, &r, g);
            for ((name, got), want) in ["y", "dx", "dkernel"].iter().zip(&got).zip(&want) {
                assert_eq!(got.len(), want.len(), "{name}");
                let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
                for (a, b) in got.iter().zip(want) {
                    assert!(
                        (a - b).abs() <= 1e-5 * scale,
                        "{n}x{cin}x{h}x{w} * {cout}x{k}x{k} s{stride} p{padding} {name}: {a} against {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_kernel_gradient_has_the_same_bits_on_any_number_of_threads() {
        let mut rng = ridgeline_common::rng::Rng::new(3);
        let mut t = |shape: &[usize]| {
            let v: Vec<f32> = (0..shape.iter().product::<usize>())
                .map(|_| rng.normal() as f32)
                .collect();
            Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
        };
        let (x, k, r) = (t(&[37, 3, 8, 8]), t(&[4, 3, 3, 3]), t(&[37, 4, 8, 8]));
        let grads = |threads: usize| -> Vec<f32> {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let kv = Var::from_tensor(&k).unwrap();
                let y = conv2d(&x, kv.as_tensor(), 1, 1).unwrap();
                let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
                g.get(kv.as_tensor())
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap()
            })
        };
        let one = grads(1);
        assert_eq!(one, grads(2));
        assert_eq!(one, grads(5));
    }
}
