//! The Parzen estimator of TPE (Optuna's `_ParzenEstimator`): a mixture of product
//! kernels over the observations plus a prior, sampled from and scored.

use ridgeline_common::rng::Rng;
use ridgeline_common::spec::TpeSpec;

use super::Dim;
use super::normal::{cell_log_mass, log_gauss_mass, truncnorm_sample};

/// Kernels of one dimension, one per observation plus the prior (last).
enum Kernels {
    Num {
        mus: Vec<f64>,
        sigmas: Vec<f64>,
        low: f64,
        high: f64,
        step: Option<f64>,
        /// The part of each kernel's log density that does not depend on x (its
        /// truncation mass, and for real numbers its Gaussian constant), computed once:
        /// candidates are scored against every kernel.
        log_norm: Vec<f64>,
    },
    /// Probabilities of each choice per kernel, and their logarithms.
    Cat(Vec<Vec<f64>>, Vec<Vec<f64>>),
}

/// A mixture of product kernels (Optuna's `_ParzenEstimator`).
pub(super) struct Parzen {
    weights: Vec<f64>,
    /// Their logarithms.
    ln_weights: Vec<f64>,
    dims: Vec<Kernels>,
}

/// Optuna's `default_weights`: equal weights, except that beyond 25 observations the
/// older ones fade in linearly (observations are in trial-number order).
pub(super) fn default_weights(n: usize) -> Vec<f64> {
    if n < 25 {
        return vec![1.0; n];
    }
    let ramp = n - 25;
    let start = 1.0 / n as f64;
    let mut w: Vec<f64> = (0..ramp)
        .map(|k| {
            if ramp == 1 {
                start
            } else {
                start + (1.0 - start) * k as f64 / (ramp - 1) as f64
            }
        })
        .collect();
    w.extend(std::iter::repeat_n(1.0, 25));
    w
}

impl Parzen {
    /// The mixture over `obs`, weighted by `weights` (default: Optuna's
    /// `default_weights`), plus the prior.
    pub(super) fn new(
        obs: &[Vec<f64>],
        weights: Option<Vec<f64>>,
        dims: &[&Dim],
        cfg: &TpeSpec,
    ) -> Parzen {
        let n = obs.len();
        let mut weights = if n == 0 {
            vec![1.0]
        } else {
            let mut w = weights.unwrap_or_else(|| default_weights(n));
            w.push(cfg.prior_weight);
            w
        };
        let total: f64 = weights.iter().sum();
        weights.iter_mut().for_each(|w| *w /= total);
        let kernels = dims
            .iter()
            .enumerate()
            .map(|(d, dim)| {
                let col: Vec<f64> = obs.iter().map(|o| o[d]).collect();
                match dim {
                    Dim::Cat(values) => Self::categorical(&col, values.len(), cfg),
                    Dim::Num {
                        low, high, step, ..
                    } => Self::numerical(&col, *low, *high, *step, cfg),
                }
            })
            .collect();
        Parzen {
            ln_weights: weights.iter().map(|w| w.ln()).collect(),
            weights,
            dims: kernels,
        }
    }

    fn categorical(col: &[f64], choices: usize, cfg: &TpeSpec) -> Kernels {
        if col.is_empty() {
            return Self::cat(vec![vec![1.0 / choices as f64; choices]]);
        }
        // Each observation's kernel: the prior's share on every choice plus one on the
        // observed one, normalised; the prior's own kernel is uniform. Only three
        // numbers occur, so their logarithms are taken once.
        let base = cfg.prior_weight / (col.len() + 1) as f64;
        let sum = base * choices as f64 + 1.0;
        let (hit, miss) = ((base + 1.0) / sum, base / sum);
        let (ln_hit, ln_miss) = (hit.ln(), miss.ln());
        let mut p = Vec::with_capacity(col.len() + 1);
        let mut ln = Vec::with_capacity(col.len() + 1);
        for &c in col {
            let (mut row, mut ln_row) = (vec![miss; choices], vec![ln_miss; choices]);
            row[c as usize] = hit;
            ln_row[c as usize] = ln_hit;
            p.push(row);
            ln.push(ln_row);
        }
        p.push(vec![1.0 / choices as f64; choices]);
        ln.push(vec![-(choices as f64).ln(); choices]);
        Kernels::Cat(p, ln)
    }

    fn cat(p: Vec<Vec<f64>>) -> Kernels {
        let ln = p
            .iter()
            .map(|row| row.iter().map(|q| q.ln()).collect())
            .collect();
        Kernels::Cat(p, ln)
    }

    /// Optuna 5's bandwidth rule: each kernel as wide as the larger gap to its
    /// neighbours among the observations and the range's ends (the same for the
    /// univariate and the multivariate estimator), clipped to [range / min(100,
    /// kernels + 1), range]; the prior is centred with the range's width.
    fn numerical(mus: &[f64], low: f64, high: f64, step: Option<f64>, cfg: &TpeSpec) -> Kernels {
        let s0 = step.unwrap_or(0.0);
        let (lo, hi) = (low - s0 / 2.0, high + s0 / 2.0);
        let width = hi - lo;
        let n = mus.len();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| mus[a].total_cmp(&mus[b]));
        let mut ends = Vec::with_capacity(n + 2);
        ends.push(lo);
        ends.extend(order.iter().map(|&i| mus[i]));
        ends.push(hi);
        let m = ends.len();
        let mut sorted: Vec<f64> = (1..m - 1)
            .map(|i| (ends[i] - ends[i - 1]).max(ends[i + 1] - ends[i]))
            .collect();
        if !cfg.consider_endpoints && m >= 4 {
            sorted[0] = ends[2] - ends[1];
            sorted[n - 1] = ends[m - 2] - ends[m - 3];
        }
        let mut sigmas = vec![0.0; n];
        for (rank, &i) in order.iter().enumerate() {
            sigmas[i] = sorted[rank];
        }
        // Optuna's "magic clip": no kernel narrower than the range over (kernels + 1).
        let min_sigma = width / 100f64.min(1.0 + (n + 1) as f64);
        sigmas
            .iter_mut()
            .for_each(|s| *s = s.clamp(min_sigma, width));
        let mut mus = mus.to_vec();
        mus.push(0.5 * (lo + hi));
        sigmas.push(width);
        // Integer kernels repeat (many observations share a value and a width):
        // their constants are computed once per distinct kernel.
        let mut seen = Memo::default();
        let log_norm = mus
            .iter()
            .zip(&sigmas)
            .map(|(&mu, &s)| match step {
                None => {
                    -0.5 * (2.0 * std::f64::consts::PI).ln()
                        - s.ln()
                        - log_gauss_mass((low - mu) / s, (high - mu) / s)
                }
                Some(_) => seen.get(mu, s, || -log_gauss_mass((lo - mu) / s, (hi - mu) / s)),
            })
            .collect();
        Kernels::Num {
            mus,
            sigmas,
            low,
            high,
            step,
            log_norm,
        }
    }

    pub(super) fn sample(&self, rng: &mut Rng) -> Vec<f64> {
        let mut u = rng.next_f64();
        let mut k = self.weights.len() - 1;
        for (i, w) in self.weights.iter().enumerate() {
            if u < *w {
                k = i;
                break;
            }
            u -= w;
        }
        self.dims
            .iter()
            .map(|d| match d {
                Kernels::Num {
                    mus,
                    sigmas,
                    low,
                    high,
                    step,
                    ..
                } => {
                    let s0 = step.unwrap_or(0.0);
                    let (lo, hi) = (low - s0 / 2.0, high + s0 / 2.0);
                    let (mu, sigma) = (mus[k], sigmas[k]);
                    let z = truncnorm_sample(rng, (lo - mu) / sigma, (hi - mu) / sigma);
                    let x = mu + sigma * z;
                    match step {
                        Some(s) => (low + ((x - low) / s).round() * s).clamp(*low, *high),
                        None => x.clamp(*low, *high),
                    }
                }
                Kernels::Cat(p, _) => {
                    let mut u = rng.next_f64();
                    let row = &p[k];
                    for (c, q) in row.iter().enumerate() {
                        if u < *q {
                            return c as f64;
                        }
                        u -= q;
                    }
                    (row.len() - 1) as f64
                }
            })
            .collect()
    }

    /// The log density at one point.
    #[cfg(test)]
    pub(super) fn log_pdf(&self, x: &[f64]) -> f64 {
        self.log_pdf_many(std::slice::from_ref(&x.to_vec()))[0]
    }

    /// Log densities at many points. The mass of an integer's cell under a kernel is
    /// computed once per distinct value, not once per point.
    pub(super) fn log_pdf_many(&self, xs: &[Vec<f64>]) -> Vec<f64> {
        let mut terms: Vec<Vec<f64>> = vec![self.ln_weights.clone(); xs.len()];
        for (d, kernels) in self.dims.iter().enumerate() {
            match kernels {
                Kernels::Num {
                    mus,
                    sigmas,
                    step: None,
                    log_norm,
                    ..
                } => {
                    let inv: Vec<f64> = sigmas.iter().map(|s| 1.0 / s).collect();
                    for (x, t) in xs.iter().zip(&mut terms) {
                        let xd = x[d];
                        for (((tk, mu), is), n) in t.iter_mut().zip(mus).zip(&inv).zip(log_norm) {
                            let z = (xd - mu) * is;
                            *tk += n - 0.5 * z * z;
                        }
                    }
                }
                Kernels::Num {
                    mus,
                    sigmas,
                    low,
                    high,
                    step: Some(st),
                    log_norm,
                } => {
                    let mut cache: Vec<(f64, Vec<f64>)> = Vec::new();
                    for (x, t) in xs.iter().zip(&mut terms) {
                        let xd = x[d];
                        let i = match cache.iter().position(|(v, _)| *v == xd) {
                            Some(i) => i,
                            None => {
                                // The mass of the step's cell around x.
                                let xl = (xd - st / 2.0).max(low - st / 2.0);
                                let xu = (xd + st / 2.0).min(high + st / 2.0);
                                let mut seen = Memo::default();
                                let m = mus
                                    .iter()
                                    .zip(sigmas)
                                    .zip(log_norm)
                                    .map(|((&mu, &s), n)| {
                                        seen.get(mu, s, || {
                                            cell_log_mass((xl - mu) / s, (xu - mu) / s)
                                        }) + n
                                    })
                                    .collect();
                                cache.push((xd, m));
                                cache.len() - 1
                            }
                        };
                        for (tk, m) in t.iter_mut().zip(&cache[i].1) {
                            *tk += m;
                        }
                    }
                }
                Kernels::Cat(_, ln) => {
                    for (x, t) in xs.iter().zip(&mut terms) {
                        let c = x[d] as usize;
                        for (tk, row) in t.iter_mut().zip(ln) {
                            *tk += row[c];
                        }
                    }
                }
            }
        }
        terms.iter().map(|t| log_sum_exp(t)).collect()
    }
}

/// Values computed once per distinct (mu, sigma) kernel.
#[derive(Default)]
struct Memo(std::collections::HashMap<(u64, u64), f64, std::hash::BuildHasherDefault<BitsHasher>>);

impl Memo {
    fn get(&mut self, mu: f64, sigma: f64, f: impl FnOnce() -> f64) -> f64 {
        *self
            .0
            .entry((mu.to_bits(), sigma.to_bits()))
            .or_insert_with(f)
    }
}

/// A multiply-rotate hash for pairs of float bit patterns (the memo's keys are not
/// attacker-chosen, and SipHash cost more than the values it saved).
#[derive(Default)]
struct BitsHasher(u64);

impl std::hash::Hasher for BitsHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

fn log_sum_exp(v: &[f64]) -> f64 {
    let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return m;
    }
    // Terms 40 below the largest add under 4e-18 each: skipping their exp changes the
    // sum by less than a rounding error per thousand kernels, and most kernels of a
    // large mixture are that far from any one point.
    m + v
        .iter()
        .filter(|x| **x - m > -40.0)
        .map(|x| (x - m).exp())
        .sum::<f64>()
        .ln()
}
