//! Block Lanczos with full reorthogonalisation, and Hutchinson's trace, driven by
//! Hessian-vector products computed elsewhere (the workers, on data shards).
//!
//! Every round adds the orthonormalised products to a Krylov basis `Q`, and the Ritz
//! values of `T = Qᵀ H Q` approximate both ends of the spectrum at once.

use super::eigen::jacobi_eigen;
use super::{axpy, dot, orthonormalise};
use crate::rng::Rng;

/// The Krylov basis built so far and `H` applied to it.
#[derive(Clone, Debug, Default)]
pub struct Krylov {
    /// Orthonormal basis vectors.
    pub q: Vec<Vec<f64>>,
    /// `H q_i` for each basis vector.
    pub hq: Vec<Vec<f64>>,
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
        self.q.extend(v);
        let next = orthonormalise(&self.q, hv.clone());
        self.hq.extend(hv);
        next
    }

    /// Ritz values of `Qᵀ H Q`, largest first, with the residual norm `‖H y − θ y‖` of
    /// each Ritz vector `y`.
    pub fn ritz(&self) -> Vec<(f64, f64)> {
        let k = self.q.len();
        let mut t = vec![vec![0.0; k]; k];
        for i in 0..k {
            for j in 0..k {
                t[i][j] = dot(&self.q[i], &self.hq[j]);
            }
        }
        // H is symmetric; rounding is not.
        for i in 0..k {
            for j in 0..i {
                let s = 0.5 * (t[i][j] + t[j][i]);
                t[i][j] = s;
                t[j][i] = s;
            }
        }
        let (vals, vecs) = jacobi_eigen(t);
        let n = self.q.first().map_or(0, Vec::len);
        let mut out: Vec<(f64, f64)> = (0..k)
            .map(|c| {
                let mut r = vec![0.0; n];
                for i in 0..k {
                    axpy(&mut r, vecs[i][c], &self.hq[i]);
                    axpy(&mut r, -vals[c] * vecs[i][c], &self.q[i]);
                }
                (vals[c], dot(&r, &r).sqrt())
            })
            .collect();
        out.sort_by(|a, b| b.0.total_cmp(&a.0));
        out
    }
}

/// Hutchinson's estimate of the trace from probes `z` and `H z`: the mean of `zᵀ H z`
/// and its standard error.
pub fn hutchinson(z: &[Vec<f64>], hz: &[Vec<f64>]) -> (f64, f64) {
    let s: Vec<f64> = z.iter().zip(hz).map(|(a, b)| dot(a, b)).collect();
    let p = s.len() as f64;
    let mean = s.iter().sum::<f64>() / p;
    let var = if s.len() > 1 {
        s.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (p - 1.0)
    } else {
        f64::NAN
    };
    (mean, (var / p).sqrt())
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
        let ritz = k.ritz();
        // The residual is the stated tolerance: some eigenvalue lies within ‖r‖ of θ
        // (and, with a gap, within ‖r‖²/gap).
        for (got, want) in ritz.iter().zip([12.0, 9.0, 7.5]) {
            assert!((got.0 - want).abs() <= got.1, "{ritz:?}");
            assert!(got.1 < 1e-3 * want, "residual {}", got.1);
        }
        let min = ritz.last().unwrap();
        assert!((min.0 + 2.0).abs() <= min.1 && min.1 < 0.05, "λmin {min:?}");
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
