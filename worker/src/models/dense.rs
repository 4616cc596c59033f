//! A dense layer for training in f32 on the CPU, `y = act(x · wᵀ + b)`, forward and
//! backward each a few ops of its own.
//!
//! candle composes the layer of a transpose, a matrix product, a broadcast addition and
//! the activation: four nodes of the graph, each with an allocation, a pass over memory
//! and a backward step of its own (the backward of the addition a reduction, of the
//! activation a comparison, a cast and a product; each gradient a new tensor added
//! into the last). In the MLP's training step that bookkeeping took longer than the
//! GEMMs (perf). Here the forward pass is one GEMM over the whole batch into the bias
//! laid in first, then the ReLU; the backward pass masks the output's gradient once and
//! runs two GEMMs and a column sum. The GEMMs are spread over the threads by the `gemm`
//! crate, which splits outputs, never sums, and the column sums run down the rows in
//! order, so a step gives the same bits on any number of threads (tested). Other
//! dtypes, devices and evaluation keep candle's ops: second derivatives (Hessians, in
//! f64) need them, and this op has none.
//!
//! The ReLU's gradient is taken where the output is positive, as PyTorch takes it
//! (candle's composed ReLU also passes it where the input is exactly zero).

use super::gemm::{View, gemm_threads};
use super::par;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

use super::operand::f32_slice;

/// Rows per task of the elementwise passes.
const ROWS: usize = 32;

/// How a weight is stored: `[out, in]` (`linear`'s), or `[in, out]` (GPT-2's `Conv1D`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Stored {
    OutIn,
    InOut,
}

/// `relu(x · wᵀ + b)` (or without the ReLU, or the bias) over the last dimension of `x`
/// (any leading dimensions), for a weight stored as `stored` says, in f32 on the CPU.
pub(crate) fn dense(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stored: Stored,
    relu: bool,
) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let inputs = *dims.last().unwrap_or(&0);
    let (outputs, w_inputs) = match (stored, w.dims2()?) {
        (Stored::OutIn, (o, i)) | (Stored::InOut, (i, o)) => (o, i),
    };
    if w_inputs != inputs || b.is_some_and(|b| b.dims() != [outputs]) {
        candle_core::bail!(
            "dense: input {:?}, weight {:?} ({stored:?}) and bias {:?} do not fit",
            x.dims(),
            w.dims(),
            b.map(Tensor::dims)
        );
    }
    let op = Dense {
        relu,
        stored,
        inputs,
        outputs,
    };
    let x2 = x.reshape(((), inputs))?.contiguous()?;
    let w = w.contiguous()?;
    let y = match b {
        Some(b) => x2.apply_op3(&w, &b.contiguous()?, op)?,
        None => x2.apply_op2(&w, op)?,
    };
    let mut shape = dims;
    if let Some(last) = shape.last_mut() {
        *last = outputs;
    }
    y.reshape(shape)
}

/// The f32 values of a contiguous operand.
fn values<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    f32_slice("dense", s, l)
}

/// A row-major `[rows, cols]` matrix, or its transpose (`t`), as a GEMM operand.
fn view(data: &[f32], rows: usize, cols: usize, t: bool) -> View<'_> {
    if t {
        View {
            data,
            rows: cols,
            cols: rows,
            rs: 1,
            cs: cols,
        }
    } else {
        View {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }
}

#[derive(Clone, Copy)]
struct Dense {
    relu: bool,
    stored: Stored,
    inputs: usize,
    outputs: usize,
}

impl Dense {
    /// The weight as the right operand of `x · wᵀ` (`[in, out]`).
    fn w_t<'a>(&self, w: &'a [f32]) -> View<'a> {
        match self.stored {
            Stored::OutIn => view(w, self.outputs, self.inputs, true),
            Stored::InOut => view(w, self.inputs, self.outputs, false),
        }
    }

    /// The weight as `[out, in]`.
    fn w<'a>(&self, w: &'a [f32]) -> View<'a> {
        match self.stored {
            Stored::OutIn => view(w, self.outputs, self.inputs, false),
            Stored::InOut => view(w, self.inputs, self.outputs, true),
        }
    }

    fn forward(&self, x: &[f32], w: &[f32], b: Option<&[f32]>) -> (CpuStorage, Shape) {
        let (inputs, outputs) = (self.inputs, self.outputs);
        let n = x.len() / inputs.max(1);
        let mut y = vec![0f32; n * outputs];
        let work = y.len();
        if let Some(b) = b {
            par::chunks(&mut y, ROWS * outputs, work, |_, block| {
                for row in block.chunks_mut(outputs) {
                    row.copy_from_slice(b);
                }
            });
        }
        gemm_threads(
            &mut y,
            outputs,
            view(x, n, inputs, false),
            self.w_t(w),
            b.is_some(),
        );
        if self.relu {
            // As candle's ReLU: `max`, which also takes a NaN to zero.
            par::chunks(&mut y, ROWS * outputs, work, |_, block| {
                block.iter_mut().for_each(|v| *v = v.max(0.0))
            });
        }
        (CpuStorage::F32(y), Shape::from((n, outputs)))
    }

    /// The gradients of the input (when it is not data), the weight and the bias.
    fn backward(
        &self,
        x: &Tensor,
        w: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Tensor, Tensor)> {
        let dy = dy.contiguous()?;
        let dz = if self.relu {
            dy.apply_op2_no_bwd(y, &ReluGrad)?
        } else {
            dy
        };
        // The first layer's input is data: its gradient is never wanted.
        let dx = if x.track_op() {
            Some(dz.apply_op2_no_bwd(w, &GradInput(*self))?)
        } else {
            None
        };
        let dw = dz.apply_op2_no_bwd(x, &GradWeight(*self))?;
        let db = dz.apply_op1_no_bwd(&ColumnSums)?;
        Ok((dx, dw, db))
    }
}

impl CustomOp3 for Dense {
    fn name(&self) -> &'static str {
        "ridgeline-dense"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        w: &CpuStorage,
        wl: &Layout,
        b: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        Ok(self.forward(values(x, xl)?, values(w, wl)?, Some(values(b, bl)?)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, db) = self.backward(x, w, y, dy)?;
        Ok((dx, Some(dw), Some(db)))
    }
}

impl CustomOp2 for Dense {
    fn name(&self) -> &'static str {
        "ridgeline-dense"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        w: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        Ok(self.forward(values(x, xl)?, values(w, wl)?, None))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = self.backward(x, w, y, dy)?;
        Ok((dx, Some(dw)))
    }
}

/// The output's gradient where the ReLU passed its input, zero elsewhere.
struct ReluGrad;

impl CustomOp2 for ReluGrad {
    fn name(&self) -> &'static str {
        "ridgeline-dense-relu-grad"
    }

    fn cpu_fwd(
        &self,
        dy: &CpuStorage,
        dyl: &Layout,
        y: &CpuStorage,
        yl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (dy, y) = (values(dy, dyl)?, values(y, yl)?);
        let dz = dy
            .iter()
            .zip(y)
            .map(|(&g, &y)| if y > 0.0 { g } else { 0.0 })
            .collect();
        Ok((CpuStorage::F32(dz), yl.shape().clone()))
    }
}

/// The bias's gradient: the sums of `dz`'s columns, blocks of columns spread over the
/// threads, each column summed down the rows in order (candle's `sum(0)` walks the
/// columns one by one, strided, on one thread: 7 % of a GPT-2 step, perf).
struct ColumnSums;

/// Columns per task.
const COLUMNS: usize = 64;

impl CustomOp1 for ColumnSums {
    fn name(&self) -> &'static str {
        "ridgeline-dense-grad-bias"
    }

    fn cpu_fwd(&self, dz: &CpuStorage, dzl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (_, outputs) = dzl.shape().dims2()?;
        let dz = values(dz, dzl)?;
        let mut db = vec![0f32; outputs];
        par::chunks(&mut db, COLUMNS, dz.len(), |block, sums| {
            let first = block * COLUMNS;
            for row in dz.chunks_exact(outputs) {
                for (s, v) in sums.iter_mut().zip(&row[first..]) {
                    *s += v;
                }
            }
        });
        Ok((CpuStorage::F32(db), Shape::from(outputs)))
    }
}

/// The input's gradient: `dz · w`.
struct GradInput(Dense);

impl CustomOp2 for GradInput {
    fn name(&self) -> &'static str {
        "ridgeline-dense-grad-input"
    }

    fn cpu_fwd(
        &self,
        dz: &CpuStorage,
        dzl: &Layout,
        w: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (inputs, outputs) = (self.0.inputs, self.0.outputs);
        let (n, _) = dzl.shape().dims2()?;
        let (dz, w) = (values(dz, dzl)?, values(w, wl)?);
        let mut dx = vec![0f32; n * inputs];
        gemm_threads(
            &mut dx,
            inputs,
            view(dz, n, outputs, false),
            self.0.w(w),
            false,
        );
        Ok((CpuStorage::F32(dx), Shape::from((n, inputs))))
    }
}

/// The weight's gradient, as the weight is stored: `dzᵀ · x` (`[out, in]`) or `xᵀ · dz`
/// (`[in, out]`), by blocks of its rows, each a sum over the whole batch.
struct GradWeight(Dense);

impl CustomOp2 for GradWeight {
    fn name(&self) -> &'static str {
        "ridgeline-dense-grad-weight"
    }

    fn cpu_fwd(
        &self,
        dz: &CpuStorage,
        dzl: &Layout,
        x: &CpuStorage,
        xl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (inputs, outputs) = (self.0.inputs, self.0.outputs);
        let (n, _) = dzl.shape().dims2()?;
        let (dz, x) = (values(dz, dzl)?, values(x, xl)?);
        // `left`ᵀ · `right`, `left` `[n, rows of the result]`, `right` `[n, its columns]`.
        let (left, right, rows, cols, shape) = match self.0.stored {
            Stored::OutIn => (dz, x, outputs, inputs, (outputs, inputs)),
            Stored::InOut => (x, dz, inputs, outputs, (inputs, outputs)),
        };
        let mut dw = vec![0f32; rows * cols];
        // `left`ᵀ: the columns of `left` as rows, `rows` apart.
        let left_t = View {
            data: left,
            rows,
            cols: n,
            rs: 1,
            cs: rows,
        };
        gemm_threads(&mut dw, cols, left_t, view(right, n, cols, false), false);
        Ok((CpuStorage::F32(dw), Shape::from(shape)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::reference::flat;
    use candle_core::{DType, Device, Var};

    fn tensor(v: &[f64], shape: &[usize], dtype: DType) -> Tensor {
        Tensor::from_vec(v.to_vec(), shape, &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
    }

    /// What a case varies besides the sizes.
    #[derive(Clone, Copy, Debug)]
    struct Case {
        stored: Stored,
        bias: bool,
        relu: bool,
        /// The batch as `[2, n / 2, in]` rather than `[n, in]`.
        three_d: bool,
    }

    /// y and the gradients (x, w, b) of Σ y·r: by the fused op in f32 (`fused`), or by
    /// candle's composition (`models::linear`, then `relu`) in f64.
    fn layer(
        x: &[f64],
        w: &[f64],
        b: &[f64],
        r: &[f64],
        (n, i, o): (usize, usize, usize),
        c: Case,
        fused: bool,
    ) -> Vec<Vec<f64>> {
        let dtype = if fused { DType::F32 } else { DType::F64 };
        let lead: Vec<usize> = if c.three_d { vec![2, n / 2] } else { vec![n] };
        let shape = |last: usize| [lead.as_slice(), &[last]].concat();
        let xv = Var::from_tensor(&tensor(x, &shape(i), dtype)).unwrap();
        let w_shape = match c.stored {
            Stored::OutIn => [o, i],
            Stored::InOut => [i, o],
        };
        let wv = Var::from_tensor(&tensor(w, &w_shape, dtype)).unwrap();
        let bv = Var::from_tensor(&tensor(b, &[o], dtype)).unwrap();
        let b = c.bias.then(|| bv.as_tensor());
        let y = if fused {
            dense(xv.as_tensor(), wv.as_tensor(), b, c.stored, c.relu).unwrap()
        } else {
            let w = match c.stored {
                Stored::OutIn => wv.as_tensor().clone(),
                Stored::InOut => wv.as_tensor().t().unwrap(),
            };
            let z = crate::models::linear(xv.as_tensor(), &w, b).unwrap();
            if c.relu { z.relu().unwrap() } else { z }
        };
        let g = (&y * tensor(r, &shape(o), dtype))
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let mut out = vec![flat(&y)];
        for v in [&xv, &wv, &bv] {
            out.push(g.get(v.as_tensor()).map(flat).unwrap_or_default());
        }
        out
    }

    #[test]
    fn the_fused_layer_and_its_gradients_match_candle_in_f64() {
        let mut rng = ridgeline_common::rng::Rng::new(5);
        // Fewer rows than a block, several blocks with a ragged last one, widths that
        // are not multiples of a SIMD register.
        for (n, i, o) in [(4, 5, 3), (70, 33, 47), (64, 784, 10)] {
            let mut draw = |len: usize| -> Vec<f64> {
                // Values on f32's grid, so that both sides start from the same numbers.
                (0..len).map(|_| rng.normal() as f32 as f64).collect()
            };
            let (x, w, b, r) = (draw(n * i), draw(o * i), draw(o), draw(n * o));
            for stored in [Stored::OutIn, Stored::InOut] {
                for (bias, relu, three_d) in [
                    (true, false, false),
                    (true, true, true),
                    (false, true, false),
                    (false, false, true),
                ] {
                    let c = Case {
                        stored,
                        bias,
                        relu,
                        three_d,
                    };
                    let want = layer(&x, &w, &b, &r, (n, i, o), c, false);
                    let got = layer(&x, &w, &b, &r, (n, i, o), c, true);
                    for (k, name) in ["y", "dx", "dw", "db"].iter().enumerate() {
                        assert_eq!(got[k].len(), want[k].len(), "{c:?} {name}");
                        let scale = want[k].iter().fold(1.0f64, |m, v| m.max(v.abs()));
                        for (a, b) in got[k].iter().zip(&want[k]) {
                            assert!(
                                (a - b).abs() <= 1e-5 * scale,
                                "{n}x{i}->{o} {c:?} {name}: {a} against {b}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_step_has_the_same_bits_on_any_number_of_threads() {
        let mut rng = ridgeline_common::rng::Rng::new(9);
        // Large enough for the gemm crate to split a product over the threads.
        let (n, i, o) = (302, 160, 200);
        let mut draw = |len: usize| -> Vec<f64> { (0..len).map(|_| rng.normal()).collect() };
        let (x, w, b, r) = (draw(n * i), draw(o * i), draw(o), draw(n * o));
        let run = |threads: usize| -> Vec<Vec<f64>> {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| {
                    let c = Case {
                        stored: Stored::InOut,
                        bias: true,
                        relu: true,
                        three_d: false,
                    };
                    layer(&x, &w, &b, &r, (n, i, o), c, true)
                })
        };
        let one = run(1);
        assert_eq!(one, run(2));
        assert_eq!(one, run(5));
    }
}
