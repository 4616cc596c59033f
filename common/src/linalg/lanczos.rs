//! Block Lanczos with full reorthogonalisation, and Hutchinson's trace, driven by
//! Hessian-vector products computed elsewhere (the workers, on data shards).
//!
//! Every round adds the orthonormalised products to a Krylov basis `Q`, and the Ritz
//! values of `T = Qᵀ H Q` approximate both ends of the spectrum at once.

use super::eigen::symmetric_eigen;
use super::{axpy, dot, orthonormalise};
use crate::rng::Rng;

/// The Krylov basis built so far, `H` applied to it, and `T = Qᵀ H Q`.
#[derive(Clone, Debug, Default)]
pub struct Krylov {
    /// Orthonormal basis vectors.
    pub q: Vec<Vec<f64>>,
    /// `H q_i` for each basis vector.
    pub hq: Vec<Vec<f64>>,
    /// `T[i][j] = (q_iᵀ H q_j + q_jᵀ H q_i) / 2`, grown a block at a time.
    t: Vec<Vec<f64>>,
}

/// An approximate eigenvalue and how far it can be from a true one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ritz {
    /// The Ritz value θ.
    pub value: f64,
    /// `‖H y − θ y‖` for its unit Ritz vector `y`: some eigenvalue of `H` lies within
    /// this distance of θ.
    pub residual: f64,
}

/// The first block: `m` random orthonormal vectors of length `n`.
pub fn start_block(n: usize, m: usize, seed: u64) -> Vec<Vec<f64>> {
    let mut r = Rng::stream(seed, 0x4865_7373);
    let block = (0..m)
        .map(|_| (0..n).map(|_| r.normal()).collect())
        .collect();
    orthonormalise(&[], block)
}

/// `p` Rademacher probe vectors for Hutchinson's trace estimator.
pub fn probes(n: usize, p: usize, seed: u64) -> Vec<Vec<f64>> {
    let mut r = Rng::stream(seed, 0x7072_6f62);
    (0..p)
        .map(|_| {
            (0..n)
                .map(|_| if r.next_u64() & 1 == 0 { -1.0 } else { 1.0 })
                .collect()
        })
        .collect()
}

impl Krylov {
    /// Adds a block `v` (orthonormal, orthogonal to the basis) with `H v`, and returns
    /// the next block: `H v` orthonormalised against everything so far.
    pub fn extend(&mut self, v: Vec<Vec<f64>>, hv: Vec<Vec<f64>>) -> Vec<Vec<f64>> {
        let k0 = self.q.len();
        self.q.extend(v);
        let next = orthonormalise(&self.q, hv.clone());
        self.hq.extend(hv);
        let k = self.q.len();
        for row in self.t.iter_mut() {
            row.resize(k, 0.0);
        }
        self.t.resize(k, vec![0.0; k]);
        for j in k0..k {
            for i in 0..=j {
                // H is symmetric; rounding is not.
                let x = 0.5 * (dot(&self.q[i], &self.hq[j]) + dot(&self.q[j], &self.hq[i]));
                self.t[i][j] = x;
                self.t[j][i] = x;
            }
        }
        next
    }

    /// The `top` largest Ritz values of `T` (largest first) and the smallest one, each
    /// with its residual; `None` before the first block.
    pub fn ends(&self, top: usize) -> Option<(Vec<Ritz>, Ritz)> {
        let k = self.q.len();
        if k == 0 {
            return None;
        }
        let (vals, vecs) = symmetric_eigen(self.t.clone());
        let n = self.q[0].len();
        let ritz = |c: usize| -> Ritz {
            let mut r = vec![0.0; n];
            for i in 0..k {
                axpy(&mut r, vecs[i][c], &self.hq[i]);
                axpy(&mut r, -vals[c] * vecs[i][c], &self.q[i]);
            }
            Ritz {
                value: vals[c],
                residual: dot(&r, &r).sqrt(),
            }
        };
        let tops = (0..k).rev().take(top).map(ritz).collect();
        Some((tops, ritz(0)))
    }
}

/// Hutchinson's estimate of the trace from probes `z` and `H z`: the mean of `zᵀ H z`
/// and its standard error.
pub fn hutchinson(z: &[Vec<f64>], hz: &[Vec<f64>]) -> (f64, f64) {
    let s: Vec<f64> = z.iter().zip(hz).map(|(a, b)| dot(a, b)).collect();
    super::mean_and_se(&s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linalg::eigen::jacobi_eigen;

    /// A symmetric matrix with a known spectrum: Q diag(λ) Qᵀ for a random orthogonal Q.
    fn known(n: usize, lambdas: &[f64]) -> Vec<Vec<f64>> {
        let q = orthonormalise(&[], start_block(n, n, 99));
        let mut h = vec![vec![0.0; n]; n];
        for (k, l) in lambdas.iter().enumerate() {
            for i in 0..n {
                for j in 0..n {
                    h[i][j] += l * q[k][i] * q[k][j];
                }
            }
        }
        h
    }

    fn matvec(h: &[Vec<f64>], v: &[f64]) -> Vec<f64> {
        h.iter().map(|row| dot(row, v)).collect()
    }

    #[test]
    fn jacobi_finds_a_known_spectrum() {
        let lambdas = [5.0, 3.0, 1.0, -0.5, 0.25, 0.0];
        let (mut vals, _) = jacobi_eigen(known(6, &lambdas));
        vals.sort_by(|a, b| b.total_cmp(a));
        let mut want = lambdas.to_vec();
        want.sort_by(|a, b| b.total_cmp(a));
        for (a, b) in vals.iter().zip(&want) {
            assert!((a - b).abs() < 1e-10, "{vals:?}");
        }
    }

    #[test]
    fn block_lanczos_finds_top_eigenvalues_and_lambda_min() {
        let n = 60;
        let mut lambdas: Vec<f64> = (0..n).map(|i| 0.05 * i as f64).collect();
        lambdas[0] = 12.0;
        lambdas[1] = 9.0;
        lambdas[2] = 7.5;
        lambdas[3] = -2.0;
        let h = known(n, &lambdas);
        let mut k = Krylov::default();
        let mut v = start_block(n, 4, 1);
        for _ in 0..6 {
            let hv: Vec<Vec<f64>> = v.iter().map(|x| matvec(&h, x)).collect();
            v = k.extend(v, hv);
        }
        let (top, min) = k.ends(3).unwrap();
        // The residual is the stated tolerance: some eigenvalue lies within ‖r‖ of θ
        // (and, with a gap, within ‖r‖²/gap).
        for (got, want) in top.iter().zip([12.0, 9.0, 7.5]) {
            assert!((got.value - want).abs() <= got.residual, "{top:?}");
            assert!(got.residual < 1e-3 * want, "residual {}", got.residual);
        }
        assert!(
            (min.value + 2.0).abs() <= min.residual && min.residual < 0.05,
            "λmin {min:?}"
        );
    }

    #[test]
    fn hutchinson_is_unbiased_within_its_standard_error() {
        let n = 40;
        let lambdas: Vec<f64> = (0..n).map(|i| 1.0 + (i % 7) as f64).collect();
        let h = known(n, &lambdas);
        let z = probes(n, 400, 5);
        let hz: Vec<Vec<f64>> = z.iter().map(|x| matvec(&h, x)).collect();
        let (est, se) = hutchinson(&z, &hz);
        let exact: f64 = lambdas.iter().sum();
        assert!(
            se > 0.0 && (est - exact).abs() < 4.0 * se,
            "{est} ± {se} vs {exact}"
        );
        assert!(se < 0.05 * exact, "standard error {se}");
    }
}
