//! Parameter importance in the manner of PED-ANOVA (Watanabe et al. 2023, Optuna's
//! `PedAnovaImportanceEvaluator`): how differently a parameter is distributed among
//! the best trials than among all of them. Each parameter's values are binned (on a
//! log scale for log-uniform ones, one bin per choice), and its importance is the
//! Pearson divergence `Σ p_top(b)² / p_all(b) − 1` of the top quantile's histogram from
//! the whole's: 0 when the best trials are spread like the rest, large when they sit in
//! a narrow part of the range. Computed on the server over every completed trial.

/// Bins for a numeric parameter.
const BINS: usize = 20;

/// One parameter's values over the completed trials.
pub struct Param<'a> {
    /// Its name.
    pub name: &'a str,
    /// One per trial (NaN where absent); a choice's values are label indices.
    pub values: &'a [f64],
    /// Whether the values are categories (label indices).
    pub categorical: bool,
    /// Whether the space draws it on a log scale.
    pub log: bool,
}

/// Each parameter's importance, in the order given (NaN-free trials only), from the
/// objective `objective` (smaller is better) and the top quantile `gamma` (0.1 in
/// PED-ANOVA's default).
pub fn ped_anova(params: &[Param<'_>], objective: &[f64], gamma: f64) -> Vec<f64> {
    let n = objective.len();
    let mut order: Vec<usize> = (0..n).filter(|&i| objective[i].is_finite()).collect();
    order.sort_by(|&a, &b| objective[a].total_cmp(&objective[b]));
    let top_n = ((order.len() as f64 * gamma).ceil() as usize)
        .max(1)
        .min(order.len());
    let top = &order[..top_n];
    params
        .iter()
        .map(|p| {
            let bin = binner(p, &order);
            let (mut all, mut best) = (vec![0f64; bin.count], vec![0f64; bin.count]);
            let mut counted = (0f64, 0f64);
            for &i in &order {
                if let Some(b) = bin.of(p.values[i]) {
                    all[b] += 1.0;
                    counted.0 += 1.0;
                }
            }
            for &i in top {
                if let Some(b) = bin.of(p.values[i]) {
                    best[b] += 1.0;
                    counted.1 += 1.0;
                }
            }
            if counted.0 == 0.0 || counted.1 == 0.0 {
                return 0.0;
            }
            all.iter()
                .zip(&best)
                .filter(|(a, _)| **a > 0.0)
                .map(|(a, b)| {
                    let (pa, pb) = (a / counted.0, b / counted.1);
                    pb * pb / pa
                })
                .sum::<f64>()
                - 1.0
        })
        .collect()
}

struct Binner {
    count: usize,
    lo: f64,
    width: f64,
    log: bool,
    categorical: bool,
}

impl Binner {
    fn of(&self, v: f64) -> Option<usize> {
        if !v.is_finite() || (self.log && v <= 0.0) {
            return None;
        }
        if self.categorical {
            return Some((v as usize).min(self.count - 1));
        }
        let x = if self.log { v.log10() } else { v };
        Some((((x - self.lo) / self.width) as usize).min(self.count - 1))
    }
}

fn binner(p: &Param<'_>, rows: &[usize]) -> Binner {
    let xs = rows
        .iter()
        .map(|&i| p.values[i])
        .filter(|v| v.is_finite() && (!p.log || *v > 0.0))
        .map(|v| {
            if p.log && !p.categorical {
                v.log10()
            } else {
                v
            }
        });
    let (lo, hi) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
        (l.min(v), h.max(v))
    });
    if p.categorical {
        return Binner {
            count: (hi.max(0.0) as usize) + 1,
            lo: 0.0,
            width: 1.0,
            log: false,
            categorical: true,
        };
    }
    let span = if hi > lo { hi - lo } else { 1.0 };
    Binner {
        count: BINS,
        lo,
        width: span / BINS as f64,
        log: p.log,
        categorical: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ridgeline_common::rng::Rng;

    #[test]
    fn the_parameter_the_objective_depends_on_is_the_important_one() {
        let mut r = Rng::new(4);
        let n = 3000;
        let lr: Vec<f64> = (0..n)
            .map(|_| 10f64.powf(-5.0 + 5.0 * r.next_f64()))
            .collect();
        let width: Vec<f64> = (0..n).map(|_| 16.0 + 496.0 * r.next_f64()).collect();
        let opt: Vec<f64> = (0..n).map(|_| r.below(3) as f64).collect();
        // The loss depends on lr strongly, on the optimizer a little, on width not at all.
        let loss: Vec<f64> = (0..n)
            .map(|i| {
                (lr[i].log10() + 2.5).powi(2)
                    + 0.3 * (opt[i] != 0.0) as u8 as f64
                    + 0.05 * r.normal()
            })
            .collect();
        let params = [
            Param {
                name: "lr",
                values: &lr,
                categorical: false,
                log: true,
            },
            Param {
                name: "width",
                values: &width,
                categorical: false,
                log: false,
            },
            Param {
                name: "optimizer",
                values: &opt,
                categorical: true,
                log: false,
            },
        ];
        let imp = ped_anova(&params, &loss, 0.1);
        assert!(imp[0] > 3.0 * imp[2] && imp[2] > 3.0 * imp[1], "{imp:?}");
        assert!(imp[1] < 0.1, "width is noise: {imp:?}");
        // Uniform top and whole: no importance, exactly.
        let same = ped_anova(
            &[Param {
                name: "c",
                values: &[0.0, 1.0, 0.0, 1.0],
                categorical: true,
                log: false,
            }],
            &[1.0, 1.0, 2.0, 2.0],
            0.5,
        );
        assert!(same[0].abs() < 1e-12, "{same:?}");
    }
}
