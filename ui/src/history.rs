//! The optimisation history of a sweep, aggregated so that the page draws the same
//! picture from a few thousand points whatever the number of trials: the best value so
//! far (its change points only) and the trials' values thinned per bucket of trials to
//! the lowest and the highest (what a scatter plot shows of a bucket at screen size).

use serde_json::{Value, json};

/// Whether smaller or larger is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Goal {
    /// Smaller is better.
    Min,
    /// Larger is better.
    Max,
}

/// An aggregated history.
#[derive(Clone, Debug, PartialEq)]
pub struct History {
    /// (trial, value) where the best so far changed.
    pub best: Vec<(u32, f64)>,
    /// (trial, value) of the trials kept for the scatter.
    pub points: Vec<(u32, f64)>,
    /// Trials with a finite value, all of them.
    pub count: usize,
}

/// The history of `values` (aligned with `trials`, in trial order; non-finite values are
/// trials without one), with at most about `max_points` scatter points.
pub fn aggregate(trials: &[u32], values: &[f64], goal: Goal, max_points: usize) -> History {
    let valued: Vec<(u32, f64)> = trials
        .iter()
        .zip(values)
        .filter(|(_, v)| v.is_finite())
        .map(|(t, v)| (*t, *v))
        .collect();
    let mut best: Vec<(u32, f64)> = Vec::new();
    for &(t, v) in &valued {
        let better = match best.last() {
            None => true,
            Some(&(_, b)) => match goal {
                Goal::Min => v < b,
                Goal::Max => v > b,
            },
        };
        if better {
            best.push((t, v));
        }
    }
    let buckets = (max_points / 2).max(1);
    let points = if valued.len() <= max_points {
        valued.clone()
    } else {
        let size = valued.len().div_ceil(buckets);
        valued
            .chunks(size)
            .flat_map(|c| {
                let lo = c.iter().min_by(|a, b| a.1.total_cmp(&b.1)).copied();
                let hi = c.iter().max_by(|a, b| a.1.total_cmp(&b.1)).copied();
                let mut two: Vec<(u32, f64)> = lo.into_iter().chain(hi).collect();
                two.sort_by_key(|p| p.0);
                two.dedup();
                two
            })
            .collect()
    };
    History {
        best,
        points,
        count: valued.len(),
    }
}

impl History {
    /// As the page reads it: `{"best": [[trial, value], ...], "points": [...], "count"}`.
    pub fn to_json(&self) -> Value {
        let pairs = |v: &[(u32, f64)]| -> Value {
            Value::Array(v.iter().map(|(t, x)| json!([t, x])).collect())
        };
        json!({ "best": pairs(&self.best), "points": pairs(&self.points), "count": self.count })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_so_far_keeps_change_points_only() {
        let h = aggregate(
            &[0, 1, 2, 3, 4, 5],
            &[3.0, f64::NAN, 4.0, 2.0, 2.0, 1.0],
            Goal::Min,
            100,
        );
        assert_eq!(h.best, vec![(0, 3.0), (3, 2.0), (5, 1.0)]);
        assert_eq!(h.count, 5);
        assert_eq!(h.points.len(), 5);
        let h = aggregate(&[0, 1, 2], &[3.0, 4.0, 1.0], Goal::Max, 100);
        assert_eq!(h.best, vec![(0, 3.0), (1, 4.0)]);
    }

    #[test]
    fn a_hundred_thousand_trials_become_a_few_thousand_points_with_every_extreme() {
        let n = 100_000u32;
        let trials: Vec<u32> = (0..n).collect();
        // A noisy decreasing curve, plus one outlier each way.
        let mut values: Vec<f64> = trials
            .iter()
            .map(|&t| 1.0 / (1.0 + t as f64) + ((t * 7919) % 101) as f64 * 1e-3)
            .collect();
        values[50_123] = -5.0;
        values[77_777] = 9.0;
        let h = aggregate(&trials, &values, Goal::Min, 2000);
        assert!(h.points.len() <= 2000, "{}", h.points.len());
        assert!(h.points.contains(&(50_123, -5.0)) && h.points.contains(&(77_777, 9.0)));
        // Every bucket's extremes survive: the envelope is the full data's.
        let lo = h.points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
        let hi = h
            .points
            .iter()
            .map(|p| p.1)
            .fold(f64::NEG_INFINITY, f64::max);
        assert_eq!((lo, hi), (-5.0, 9.0));
        assert_eq!(h.best.last(), Some(&(50_123, -5.0)));
        assert!(h.points.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
