//! Training in a random subspace, θ = θ₀ + P ψ with only ψ ∈ ℝᵈ trained (Li, Farkhoor,
//! Liu & Yosinski 2018, "Measuring the intrinsic dimension of objective landscapes").
//! The smallest d whose trained model reaches 90 % of the full model's accuracy is the
//! landscape's intrinsic dimension `d_int90`; a search over `subspace_dim` measures it.
//!
//! P's columns have unit length (as in the paper). Its entries come from the trial's seed,
//! column by column, so a trial is the same on every worker. The gradient with respect
//! to ψ is Pᵀ ∇θ L: the model is trained as usual, then its gradient is pulled back.

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};
use ridgeline_common::rng::Rng;
use ridgeline_common::spec::Projection;

/// Largest dense projection, in entries (1 GiB of f32).
const DENSE_LIMIT: usize = 1 << 28;

/// A `rows × d` random matrix with unit-length columns.
pub enum Matrix {
    /// Row-major entries.
    Dense {
        /// Columns.
        d: usize,
        /// `rows × d` values.
        m: Vec<f32>,
    },
    /// Compressed rows.
    Sparse {
        /// Columns.
        d: usize,
        /// Row `r`'s entries are `row_ptr[r]..row_ptr[r + 1]`.
        row_ptr: Vec<usize>,
        /// Their columns.
        cols: Vec<u32>,
        /// Their values.
        vals: Vec<f32>,
    },
}

impl Matrix {
    /// A fresh projection from `rows` to `d` dimensions.
    pub fn new(
        kind: Projection,
        rows: usize,
        d: usize,
        seed: u64,
    ) -> std::result::Result<Self, String> {
        let col_rng = |c: usize| Rng::stream(seed, 0x5355_4253_0000_0000 ^ c as u64);
        match kind {
            Projection::Dense => {
                if rows.saturating_mul(d) > DENSE_LIMIT {
                    return Err(format!(
                        "a dense projection of {rows} parameters to {d} dimensions is {} entries (at most {DENSE_LIMIT}); use train.projection = \"sparse\"",
                        rows.saturating_mul(d)
                    ));
                }
                let mut m = vec![0f32; rows * d];
                for c in 0..d {
                    let mut r = col_rng(c);
                    let col: Vec<f64> = (0..rows).map(|_| r.normal()).collect();
                    let norm = col
                        .iter()
                        .map(|v| v * v)
                        .sum::<f64>()
                        .sqrt()
                        .max(f64::MIN_POSITIVE);
                    for (i, v) in col.iter().enumerate() {
                        m[i * d + c] = (v / norm) as f32;
                    }
                }
                Ok(Matrix::Dense { d, m })
            }
            Projection::Sparse => {
                // Entries are non-zero with probability 1/√rows; the gaps between them are
                // geometric, so a column costs its non-zeros, not its length.
                let p = 1.0 / (rows as f64).sqrt().max(1.0);
                let mut triplets: Vec<(usize, u32, f32)> = Vec::new();
                for c in 0..d {
                    let mut r = col_rng(c);
                    let mut rows_c = Vec::new();
                    let mut at = 0usize;
                    loop {
                        let u = r.next_f64().max(f64::MIN_POSITIVE);
                        let gap = if p >= 1.0 {
                            0
                        } else {
                            (u.ln() / (1.0 - p).ln()) as usize
                        };
                        at = at.saturating_add(gap);
                        if at >= rows {
                            break;
                        }
                        rows_c.push(at);
                        at += 1;
                    }
                    if rows_c.is_empty() {
                        rows_c.push(r.below(rows as u64) as usize);
                    }
                    let v = 1.0 / (rows_c.len() as f64).sqrt();
                    for row in rows_c {
                        let sign = if r.next_u64() & 1 == 0 { -1.0 } else { 1.0 };
                        triplets.push((row, c as u32, (sign * v) as f32));
                    }
                }
                triplets.sort_unstable_by_key(|t| (t.0, t.1));
                let mut row_ptr = vec![0usize; rows + 1];
                for t in &triplets {
                    row_ptr[t.0 + 1] += 1;
                }
                for r in 0..rows {
                    row_ptr[r + 1] += row_ptr[r];
                }
                Ok(Matrix::Sparse {
                    d,
                    row_ptr,
                    cols: triplets.iter().map(|t| t.1).collect(),
                    vals: triplets.iter().map(|t| t.2).collect(),
                })
            }
        }
    }

    /// `P ψ`.
    pub fn apply(&self, psi: &[f32]) -> Vec<f32> {
        match self {
            Matrix::Dense { d, m } => m
                .chunks(*d)
                .map(|row| row.iter().zip(psi).map(|(a, b)| a * b).sum())
                .collect(),
            Matrix::Sparse {
                row_ptr,
                cols,
                vals,
                ..
            } => row_ptr
                .windows(2)
                .map(|w| (w[0]..w[1]).map(|k| vals[k] * psi[cols[k] as usize]).sum())
                .collect(),
        }
    }

    /// `Pᵀ g`.
    pub fn pullback(&self, g: &[f32]) -> Vec<f32> {
        match self {
            Matrix::Dense { d, m } => {
                let mut out = vec![0f32; *d];
                for (row, gi) in m.chunks(*d).zip(g) {
                    out.iter_mut().zip(row).for_each(|(o, p)| *o += p * gi);
                }
                out
            }
            Matrix::Sparse {
                d,
                row_ptr,
                cols,
                vals,
            } => {
                let mut out = vec![0f32; *d];
                for (r, w) in row_ptr.windows(2).enumerate() {
                    for k in w[0]..w[1] {
                        out[cols[k] as usize] += vals[k] * g[r];
                    }
                }
                out
            }
        }
    }
}

/// A model's trainable parameters tied to ψ.
pub struct Subspace {
    theta0: Vec<f32>,
    p: Matrix,
    /// The trained coordinates, zero at the start (θ = θ₀).
    pub psi: Var,
}

impl Subspace {
    /// The subspace of dimension `d` around the current values of `vars`.
    pub fn new(
        vars: &[Var],
        d: usize,
        kind: Projection,
        seed: u64,
    ) -> std::result::Result<Self, String> {
        let e = |e: candle_core::Error| e.to_string();
        let mut theta0 = Vec::new();
        for v in vars {
            theta0.extend(
                v.flatten_all()
                    .map_err(e)?
                    .to_dtype(candle_core::DType::F32)
                    .map_err(e)?
                    .to_vec1::<f32>()
                    .map_err(e)?,
            );
        }
        let p = Matrix::new(kind, theta0.len(), d, seed)?;
        let device = vars
            .first()
            .map_or(candle_core::Device::Cpu, |v| v.device().clone());
        let psi = Var::zeros(d, candle_core::DType::F32, &device).map_err(e)?;
        Ok(Subspace { theta0, p, psi })
    }

    /// Sets `vars` to θ₀ + P ψ.
    pub fn apply(&self, vars: &[Var]) -> Result<()> {
        let offset = self.p.apply(&self.psi.to_vec1::<f32>()?);
        let mut at = 0;
        for v in vars {
            let n = v.elem_count();
            let vals: Vec<f32> = self.theta0[at..at + n]
                .iter()
                .zip(&offset[at..at + n])
                .map(|(a, b)| a + b)
                .collect();
            let t = Tensor::from_vec(vals, v.dims(), v.device())?.to_dtype(v.dtype())?;
            v.set(&t)?;
            at += n;
        }
        Ok(())
    }

    /// The gradients of `vars` in `grads` pulled back to ψ: a store with ψ's alone.
    pub fn pullback(&self, grads: &GradStore, vars: &[Var]) -> Result<GradStore> {
        let mut g = Vec::with_capacity(self.theta0.len());
        for v in vars {
            match grads.get(v) {
                Some(t) => g.extend(
                    t.flatten_all()?
                        .to_dtype(candle_core::DType::F32)?
                        .to_vec1::<f32>()?,
                ),
                None => g.extend(std::iter::repeat_n(0f32, v.elem_count())),
            }
        }
        let gpsi = Tensor::from_vec(self.p.pullback(&g), self.psi.dims(), self.psi.device())?;
        // candle has no public constructor for a GradStore: take ψ's (zero) gradient of
        // a constant and replace it.
        let mut store = (self.psi.as_tensor().sum_all()? * 0.0)?.backward()?;
        store.insert(self.psi.as_tensor(), gpsi);
        Ok(store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns(m: &Matrix, rows: usize, d: usize) -> Vec<Vec<f64>> {
        (0..d)
            .map(|c| {
                let mut e = vec![0f32; d];
                e[c] = 1.0;
                m.apply(&e)
                    .iter()
                    .map(|v| f64::from(*v))
                    .collect::<Vec<f64>>()
            })
            .inspect(|col| assert_eq!(col.len(), rows))
            .collect()
    }

    /// Columns have unit length, `pullback` is the transpose of `apply`, and the same
    /// seed gives the same matrix.
    #[test]
    fn projections_have_unit_columns_and_an_exact_transpose() {
        for kind in [Projection::Dense, Projection::Sparse] {
            let (rows, d) = (400, 30);
            let m = Matrix::new(kind, rows, d, 7).unwrap();
            for col in columns(&m, rows, d) {
                let n: f64 = col.iter().map(|v| v * v).sum::<f64>().sqrt();
                assert!((n - 1.0).abs() < 1e-5, "{kind:?}: column norm {n}");
            }
            let mut r = Rng::new(3);
            let psi: Vec<f32> = (0..d).map(|_| r.normal() as f32).collect();
            let g: Vec<f32> = (0..rows).map(|_| r.normal() as f32).collect();
            let lhs: f64 = m
                .apply(&psi)
                .iter()
                .zip(&g)
                .map(|(a, b)| f64::from(a * b))
                .sum();
            let rhs: f64 = m
                .pullback(&g)
                .iter()
                .zip(&psi)
                .map(|(a, b)| f64::from(a * b))
                .sum();
            assert!(
                (lhs - rhs).abs() < 1e-4 * lhs.abs().max(1.0),
                "{kind:?}: {lhs} vs {rhs}"
            );
            let again = Matrix::new(kind, rows, d, 7).unwrap();
            assert_eq!(again.apply(&psi), m.apply(&psi));
        }
        if let Matrix::Sparse { vals, .. } = Matrix::new(Projection::Sparse, 10_000, 20, 1).unwrap()
        {
            // About √rows non-zeros per column.
            let per = vals.len() as f64 / 20.0;
            assert!((60.0..140.0).contains(&per), "{per} non-zeros per column");
        }
        assert!(Matrix::new(Projection::Dense, 1 << 20, 1 << 9, 0).is_err());
    }

    /// A loss that depends on k = 5 coordinates of 20, L(θ) = Σ_{i<k} (θ_i − c_i)²,
    /// minimised by gradient descent on ψ through `Subspace`: from d = k on, the loss
    /// goes to zero; below k, a residual stays, so d_int (99.9 % of the improvement) is k.
    #[test]
    fn the_intrinsic_dimension_of_a_k_coordinate_quadratic_is_k() {
        let (rows, k) = (20, 5);
        let c: Vec<f32> = (0..k).map(|i| 1.0 + i as f32 * 0.5).collect();
        let vars =
            vec![Var::zeros(rows, candle_core::DType::F32, &candle_core::Device::Cpu).unwrap()];
        let loss = |v: &Var| -> Tensor {
            let t = v.as_tensor().narrow(0, 0, k).unwrap();
            let ct = Tensor::from_vec(c.clone(), k, &candle_core::Device::Cpu).unwrap();
            (t - ct).unwrap().sqr().unwrap().sum_all().unwrap()
        };
        let l0 = f64::from(loss(&vars[0]).to_scalar::<f32>().unwrap());
        let mut points = vec![(0usize, 1.0f64)];
        for d in 1..=8 {
            vars[0]
                .set(
                    &Tensor::zeros(rows, candle_core::DType::F32, &candle_core::Device::Cpu)
                        .unwrap(),
                )
                .unwrap();
            let s = Subspace::new(&vars, d, Projection::Dense, 11).unwrap();
            for _ in 0..4000 {
                s.apply(&vars).unwrap();
                let g = s
                    .pullback(&loss(&vars[0]).backward().unwrap(), &vars)
                    .unwrap();
                let step = (g.get(s.psi.as_tensor()).unwrap() * 0.5).unwrap();
                s.psi.set(&(s.psi.as_tensor() - step).unwrap()).unwrap();
            }
            s.apply(&vars).unwrap();
            let l = f64::from(loss(&vars[0]).to_scalar::<f32>().unwrap());
            points.push((d, 1.0 - l / l0));
        }
        let summary = ridgeline_common::intrinsic::d_int(&points, 0.999);
        assert_eq!(summary, Some(k), "{points:?}");
        // Below k the fraction of the improvement stays visibly short of 1.
        assert!(points[k - 1].1 < 0.99, "{points:?}");
    }
}
