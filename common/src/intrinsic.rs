//! The intrinsic dimension of a landscape from trials trained in random subspaces
//! (`train.subspace_dim`, Li et al. 2018): `d_int90` is the smallest subspace dimension
//! whose best trial reaches 90 % of the full model's (`subspace_dim = 0`) value.

use serde_json::json;

/// The best value per dimension (higher is better), dimensions ascending.
fn best_per_dimension(points: &[(usize, f64)]) -> Vec<(usize, f64)> {
    let mut best: std::collections::BTreeMap<usize, f64> = Default::default();
    for &(d, v) in points.iter().filter(|p| p.1.is_finite()) {
        let e = best.entry(d).or_insert(v);
        *e = e.max(v);
    }
    best.into_iter().collect()
}

/// The smallest `d > 0` whose best value is at least `threshold` times the best value at
/// `d = 0`; `None` without a full-model trial or when no dimension reaches it.
pub fn d_int(points: &[(usize, f64)], threshold: f64) -> Option<usize> {
    let best = best_per_dimension(points);
    let (_, full) = best.iter().find(|p| p.0 == 0)?;
    best.iter()
        .find(|(d, v)| *d > 0 && *v >= threshold * full)
        .map(|p| p.0)
}

/// `intrinsic.json`: the curve (best `metric` per dimension, and its fraction of the
/// full model's), the baseline and `d_int` at `threshold`.
pub fn summary(
    points: &[(usize, f64)],
    metric: &str,
    threshold: f64,
) -> Result<serde_json::Value, String> {
    let best = best_per_dimension(points);
    let full = best
        .iter()
        .find(|p| p.0 == 0)
        .map(|p| p.1)
        .ok_or("no completed trial with subspace_dim = 0 (the full model), which d_int is measured against")?;
    let d = d_int(points, threshold);
    Ok(json!({
        "metric": metric,
        "threshold": threshold,
        "full_model": full,
        "d_int": d,
        "definition": format!(
            "the smallest subspace_dim whose best trial reaches {threshold} × the full model's {metric} (Li et al. 2018: d_int90 at 0.9); null when none does"
        ),
        "curve": best
            .iter()
            .filter(|p| p.0 > 0)
            .map(|(d, v)| json!({"d": d, metric: v, "fraction_of_full": v / full}))
            .collect::<Vec<_>>(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn d_int_is_the_first_dimension_over_the_threshold() {
        let pts = [
            (0, 0.96),
            (10, 0.5),
            (50, 0.85),
            (50, 0.87),
            (100, 0.9),
            (200, 0.95),
            (400, 0.8),
        ];
        // 0.9 × 0.96 = 0.864: d = 50's best (0.87) is the first to reach it.
        assert_eq!(d_int(&pts, 0.9), Some(50));
        assert_eq!(d_int(&pts, 0.99), None);
        assert_eq!(d_int(&pts[1..], 0.9), None, "no full model");
        let s = summary(&pts, "val_accuracy", 0.9).unwrap();
        assert_eq!(s["d_int"], 50);
        assert_eq!(s["curve"].as_array().unwrap().len(), 5);
        assert!(summary(&pts[1..], "val_accuracy", 0.9).is_err());
    }
}
