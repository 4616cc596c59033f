//! The Hessian at the centre of a scan, from Hessian-vector products only.
//!
//! Workers compute `H_s V` for their shard `s` of the data and a block `V` of vectors;
//! the coordinator sums the shards (`H = Σ_s H_s`, each shard weighted by its share of
//! the samples) and runs block Lanczos with full reorthogonalisation: every round adds
//! the orthonormalised products to a Krylov basis `Q`, and the Ritz values of
//! `T = Qᵀ H Q` approximate both ends of the spectrum (top-k and λmin) at once. The
//! trace comes from Hutchinson's estimator with Rademacher probes sent in the first round.

// Dense linear algebra on small matrices reads most clearly with explicit indices.
#![allow(clippy::needless_range_loop)]

use ridgeline_common::rng::Rng;

/// The Krylov basis built so far and `H` applied to it.
#[derive(Clone, Debug, Default)]
pub struct Krylov {
    /// Orthonormal basis vectors.
    pub q: Vec<Vec<f64>>,
    /// `H q_i` for each basis vector.
    pub hq: Vec<Vec<f64>>,
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn axpy(y: &mut [f64], a: f64, x: &[f64]) {
    y.iter_mut().zip(x).for_each(|(y, x)| *y += a * x);
}

/// Orthonormalises `block` against `basis` and itself (two passes of Gram-Schmidt, the
/// "twice is enough" rule); drops vectors that become negligible.
pub fn orthonormalise(basis: &[Vec<f64>], block: Vec<Vec<f64>>) -> Vec<Vec<f64>> {
    let mut out: Vec<Vec<f64>> = Vec::new();
    for mut v in block {
        let norm0 = dot(&v, &v).sqrt();
        for _ in 0..2 {
            for b in basis.iter().chain(&out) {
                let c = dot(&v, b);
                axpy(&mut v, -c, b);
            }
        }
        let n = dot(&v, &v).sqrt();
        if n > 1e-10 * norm0.max(f64::MIN_POSITIVE) && n > 0.0 {
            v.iter_mut().for_each(|x| *x /= n);
            out.push(v);
        }
    }
    out
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

/// Eigenvalues and eigenvectors (as columns) of a small symmetric matrix, by cyclic
/// Jacobi rotations.
pub fn jacobi_eigen(mut a: Vec<Vec<f64>>) -> (Vec<f64>, Vec<Vec<f64>>) {
    let n = a.len();
    let mut v: Vec<Vec<f64>> = (0..n)
        .map(|i| (0..n).map(|j| f64::from(u8::from(i == j))).collect())
        .collect();
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i][j] * a[i][j])
            .sum();
        let scale: f64 = (0..n)
            .map(|i| a[i][i] * a[i][i])
            .sum::<f64>()
            .max(f64::MIN_POSITIVE);
        if off <= 1e-30 * scale {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                if a[p][q].abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k][p], a[k][q]);
                    a[k][p] = c * akp - s * akq;
                    a[k][q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p][k], a[q][k]);
                    a[p][k] = c * apk - s * aqk;
                    a[q][k] = s * apk + c * aqk;
                }
                for row in v.iter_mut() {
                    let (vkp, vkq) = (row[p], row[q]);
                    row[p] = c * vkp - s * vkq;
                    row[q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..n).map(|i| a[i][i]).collect(), v)
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
