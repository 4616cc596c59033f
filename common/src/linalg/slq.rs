//! Stochastic Lanczos quadrature (Golub & Meurant; Ubaru, Chen & Saad 2017): the
//! spectral density of `H`, as PyHessian's ESD, from Hessian-vector products only.
//!
//! Each run starts from a Rademacher vector `z / ‖z‖` and takes `m` Lanczos steps; the
//! eigenvalues `θ_k` of its tridiagonal matrix and the squared first components `τ_k`
//! of their eigenvectors are an m-point Gauss quadrature of the measure
//! `Σ_i (qᵀu_i)² δ(λ − λ_i)`, whose expectation over `q` is the density
//! `(1/n) Σ_i δ(λ − λ_i)`: `Σ_k τ_k θ_k^j = qᵀ H^j q` exactly for `j < 2m`. The runs
//! are independent and advance together, one product each per round.

use super::eigen::tridiagonal_eigen;
use super::{axpy, dot};
use crate::rng::Rng;

#[derive(Clone, Debug, Default)]
struct Run {
    q: Vec<Vec<f64>>,
    alpha: Vec<f64>,
    beta: Vec<f64>,
    done: bool,
}

/// The runs of one density estimate.
#[derive(Clone, Debug)]
pub struct Slq {
    runs: Vec<Run>,
    steps: usize,
}

/// One run's Gauss quadrature: nodes (ascending) and weights (summing to 1).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Quadrature {
    /// Ritz values of the run.
    pub nodes: Vec<f64>,
    /// Squared first components of their eigenvectors.
    pub weights: Vec<f64>,
}

impl Slq {
    /// `probes` runs of `steps` steps over vectors of length `n`; returns the first
    /// vectors, one per run.
    pub fn start(n: usize, probes: usize, steps: usize, seed: u64) -> (Self, Vec<Vec<f64>>) {
        let mut r = Rng::stream(seed, 0x0073_6c71);
        let scale = 1.0 / (n as f64).sqrt();
        let runs: Vec<Run> = (0..probes)
            .map(|_| Run {
                q: vec![
                    (0..n)
                        .map(|_| if r.next_u64() & 1 == 0 { -scale } else { scale })
                        .collect(),
                ],
                ..Run::default()
            })
            .collect();
        let first = runs.iter().map(|run| run.q[0].clone()).collect();
        (Slq { runs, steps }, first)
    }

    /// Runs still waiting for a product, which is how many vectors the last call
    /// returned.
    pub fn active(&self) -> usize {
        self.runs.iter().filter(|r| !r.done).count()
    }

    /// Takes `H` applied to the vectors returned last (in order) and returns the next
    /// ones, one per run still going: a run ends after `steps` products, or earlier
    /// when its Krylov space is exhausted (its quadrature is then exact).
    pub fn extend(&mut self, hq: Vec<Vec<f64>>) -> Vec<Vec<f64>> {
        assert_eq!(hq.len(), self.active(), "one product per active run");
        let mut next = Vec::new();
        let steps = self.steps;
        for (run, mut w) in self.runs.iter_mut().filter(|r| !r.done).zip(hq) {
            let j = run.alpha.len();
            let a = dot(&run.q[j], &w);
            run.alpha.push(a);
            if run.alpha.len() == steps {
                run.done = true;
                continue;
            }
            let scale = dot(&w, &w).sqrt();
            // Full reorthogonalisation, twice (the three-term recurrence alone loses
            // orthogonality and duplicates converged Ritz values).
            for _ in 0..2 {
                for q in &run.q {
                    let c = dot(&w, q);
                    axpy(&mut w, -c, q);
                }
            }
            let b = dot(&w, &w).sqrt();
            if b <= 1e-12 * scale.max(a.abs()) || b == 0.0 {
                run.done = true;
                continue;
            }
            w.iter_mut().for_each(|x| *x /= b);
            run.beta.push(b);
            run.q.push(w.clone());
            next.push(w);
        }
        next
    }

    /// Whether every run has ended.
    pub fn finished(&self) -> bool {
        self.runs.iter().all(|r| r.done)
    }

    /// Each run's quadrature (from the steps taken so far).
    pub fn quadrature(&self) -> Vec<Quadrature> {
        self.runs
            .iter()
            .filter(|r| !r.alpha.is_empty())
            .map(|r| {
                let (nodes, first) = tridiagonal_eigen(&r.alpha, &r.beta[..r.alpha.len() - 1]);
                Quadrature {
                    nodes,
                    weights: first.iter().map(|u| u * u).collect(),
                }
            })
            .collect()
    }
}

/// The density `(1/runs) Σ_runs Σ_k τ_k N(λ; θ_k, σ²)` on `points` evenly spaced values
/// covering the nodes with 5σ on each side, where σ is `sigma` times the nodes' range:
/// returns the grid, the density (integrating to 1) and σ.
pub fn density(quad: &[Quadrature], sigma: f64, points: usize) -> (Vec<f64>, Vec<f64>, f64) {
    let all = quad.iter().flat_map(|q| q.nodes.iter().copied());
    let (lo, hi) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
        (a.min(x), b.max(x))
    });
    if !lo.is_finite() || points < 2 {
        return (Vec::new(), Vec::new(), 0.0);
    }
    let s = (sigma * (hi - lo)).max(sigma * hi.abs().max(lo.abs()).max(1e-12));
    let (a, b) = (lo - 5.0 * s, hi + 5.0 * s);
    let grid: Vec<f64> = (0..points)
        .map(|i| a + (b - a) * i as f64 / (points - 1) as f64)
        .collect();
    let norm = 1.0 / (quad.len() as f64 * s * (2.0 * std::f64::consts::PI).sqrt());
    let rho = grid
        .iter()
        .map(|x| {
            let mut acc = 0.0;
            for q in quad {
                for (t, w) in q.nodes.iter().zip(&q.weights) {
                    let z = (x - t) / s;
                    acc += w * (-0.5 * z * z).exp();
                }
            }
            acc * norm
        })
        .collect();
    (grid, rho, s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linalg::orthonormalise;

    /// `Q diag(λ) Qᵀ` for a random orthogonal `Q`, as a matrix-vector product.
    fn known(lambdas: &[f64]) -> impl Fn(&[f64]) -> Vec<f64> {
        let n = lambdas.len();
        let mut r = Rng::new(11);
        let q = orthonormalise(
            &[],
            (0..n)
                .map(|_| (0..n).map(|_| r.normal()).collect())
                .collect(),
        );
        let lambdas = lambdas.to_vec();
        move |v: &[f64]| {
            let mut out = vec![0.0; n];
            for (k, l) in lambdas.iter().enumerate() {
                axpy(&mut out, l * dot(&q[k], v), &q[k]);
            }
            out
        }
    }

    fn run(h: &impl Fn(&[f64]) -> Vec<f64>, n: usize, probes: usize, steps: usize) -> Slq {
        let (mut s, mut v) = Slq::start(n, probes, steps, 3);
        while !s.finished() {
            v = s.extend(v.iter().map(|x| h(x)).collect());
        }
        s
    }

    /// Gauss quadrature is exact for polynomials of degree < 2m: each run's moments
    /// equal `qᵀ H^j q` computed directly.
    #[test]
    fn each_run_is_a_gauss_quadrature() {
        let n = 120;
        let lambdas: Vec<f64> = (0..n)
            .map(|i| ((i * 37) % 101) as f64 / 10.0 - 2.0)
            .collect();
        let h = known(&lambdas);
        let steps = 6;
        let (_, first) = Slq::start(n, 3, steps, 3);
        let s = run(&h, n, 3, steps);
        for (q0, quad) in first.iter().zip(s.quadrature()) {
            assert_eq!(quad.nodes.len(), steps);
            let mut hv = q0.clone();
            for j in 0..2 * steps {
                let direct = dot(q0, &hv);
                let gauss: f64 = quad
                    .nodes
                    .iter()
                    .zip(&quad.weights)
                    .map(|(t, w)| w * t.powi(j as i32))
                    .sum();
                assert!(
                    (direct - gauss).abs() <= 1e-9 * direct.abs().max(1.0),
                    "moment {j}: {gauss} vs {direct}"
                );
                hv = h(&hv);
            }
        }
    }

    /// Averaged over runs, the moments estimate `(1/n) tr H^j` of a known spectrum
    /// within four standard errors, and the smoothed density integrates to 1 with the
    /// spectrum's mean; a spectrum with few distinct values is recovered exactly.
    #[test]
    fn moments_match_a_known_spectrum() {
        let n = 200;
        let lambdas: Vec<f64> = (0..n)
            .map(|i| {
                if i < 3 {
                    20.0 - 4.0 * i as f64
                } else {
                    (i % 9) as f64 * 0.1 - 0.3
                }
            })
            .collect();
        let h = known(&lambdas);
        let s = run(&h, n, 60, 12);
        let quad = s.quadrature();
        for j in 1..=4 {
            let exact = lambdas.iter().map(|l| l.powi(j)).sum::<f64>() / n as f64;
            let per: Vec<f64> = quad
                .iter()
                .map(|q| {
                    q.nodes
                        .iter()
                        .zip(&q.weights)
                        .map(|(t, w)| w * t.powi(j))
                        .sum()
                })
                .collect();
            let mean = per.iter().sum::<f64>() / per.len() as f64;
            let var = per.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (per.len() - 1) as f64;
            let se = (var / per.len() as f64).sqrt();
            assert!(
                (mean - exact).abs() <= 4.0 * se + 1e-12,
                "moment {j}: {mean} ± {se} vs {exact}"
            );
        }
        let (grid, rho, sigma) = density(&quad, 0.01, 2000);
        let dx = grid[1] - grid[0];
        let mass: f64 = rho.iter().sum::<f64>() * dx;
        assert!((mass - 1.0).abs() < 1e-3, "mass {mass}");
        assert!(sigma > 0.0);
        // 12 distinct eigenvalues and 12 steps: every run's space is the whole
        // spectrum's, so its nodes are exactly the eigenvalues it sees.
        let distinct = [
            20.0, 16.0, 12.0, -0.3, -0.2, -0.1, 0.0, 0.1, 0.2, 0.3, 0.4, 0.5,
        ];
        for q in &quad {
            for t in &q.nodes {
                assert!(distinct.iter().any(|d| (d - t).abs() < 1e-6), "node {t}");
            }
        }
    }
}
