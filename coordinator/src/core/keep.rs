//! Which trials of a search keep their checkpoints (`search.keep`), decided as results
//! arrive: the N best completed feasible trials by the sweep's metric (ties: the lower
//! trial number, as the best); with several objectives the Pareto front. A trial that
//! falls out, and one that ends pruned, infeasible or diverged, loses its files; the
//! event loop removes them once the result that decided it is committed.

use std::collections::BTreeSet;

use ridgeline_common::spec::{Mode, SweepSpec};

/// A value as a loss (lower is better), totally ordered.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Loss(f64);

impl Eq for Loss {}

impl PartialOrd for Loss {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Loss {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Whether `search.keep` removes any checkpoint of this sweep: a bound is set, it is a
/// search (a scan's units' files are its results) and not population based training
/// (each round copies the last one's).
pub fn applies(spec: &SweepSpec) -> bool {
    spec.search.keep.bound().is_some()
        && spec.landscape.is_none()
        && spec.search.algorithm != ridgeline_common::spec::Algorithm::Pbt
}

/// The trials of a single-objective sweep that keep their checkpoints.
#[derive(Clone, Debug, PartialEq)]
pub struct Kept {
    n: usize,
    mode: Mode,
    best: BTreeSet<(Loss, u32)>,
}

impl Kept {
    /// The policy of a search whose checkpoints are bounded and decided one result at a
    /// time ([`applies`]); `None` otherwise, and for several objectives (the front
    /// decides).
    pub fn of(spec: &SweepSpec) -> Option<Kept> {
        if !applies(spec) || spec.is_multi_objective() {
            return None;
        }
        Some(Kept {
            n: spec.search.keep.bound()?,
            mode: spec.mode(),
            best: BTreeSet::new(),
        })
    }

    /// A trial ended; `value` is its metric if it completed feasibly with a finite
    /// one. Returns the trial whose checkpoint goes: this one if it does not rank among
    /// the N best, the one it pushed out if it does, or none.
    pub fn offer(&mut self, trial: u32, value: Option<f64>) -> Option<u32> {
        let Some(v) = value.filter(|v| v.is_finite()) else {
            return Some(trial);
        };
        let loss = match self.mode {
            Mode::Min => v,
            Mode::Max => -v,
        };
        self.best.insert((Loss(loss), trial));
        if self.best.len() > self.n {
            return self.best.pop_last().map(|(_, t)| t);
        }
        None
    }

    /// The trials that keep theirs with their metric values, best first.
    pub fn values(&self) -> Vec<(u32, f64)> {
        let sign = match self.mode {
            Mode::Min => 1.0,
            Mode::Max => -1.0,
        };
        self.best.iter().map(|(l, t)| (*t, sign * l.0)).collect()
    }

    /// The trials that keep theirs, best first.
    pub fn trials(&self) -> impl Iterator<Item = u32> + '_ {
        self.best.iter().map(|(_, t)| *t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(keep: &str, mode: &str) -> SweepSpec {
        SweepSpec::from_toml(&format!(
            "name = \"s\"\n[data]\npath = \"d.csv\"\n[search]\nmode = \"{mode}\"\n{keep}\n[search.space]\nlr = {{ type = \"uniform\", low = 0.1, high = 0.2 }}\n"
        ))
        .unwrap()
    }

    /// Against a brute-force ranking of every result so far: after each offer, the kept
    /// trials are exactly the N best (ties to the lower trial), and every trial given
    /// back is one that is not among them, given back once.
    #[test]
    fn the_n_best_stay_and_each_other_trial_is_dropped_once() {
        let mut r = ridgeline_common::rng::Rng::new(5);
        for (mode, sign) in [("min", 1.0), ("max", -1.0)] {
            let mut k = Kept::of(&spec("keep = 3", mode)).unwrap();
            let mut seen: Vec<(f64, u32)> = vec![];
            let mut dropped = std::collections::HashSet::new();
            for t in 0..60u32 {
                // Repeated values exercise the ties; some trials have none (pruned).
                let v = (t % 7 != 3).then(|| (r.next_f64() * 5.0).floor());
                if let Some(d) = k.offer(t, v) {
                    assert!(dropped.insert(d), "trial {d} dropped twice");
                }
                if let Some(v) = v {
                    seen.push((sign * v, t));
                }
                seen.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                let want: Vec<u32> = seen.iter().take(3).map(|x| x.1).collect();
                assert_eq!(k.trials().collect::<Vec<_>>(), want, "{mode} after {t}");
                let values: Vec<f64> = seen.iter().take(3).map(|x| sign * x.0).collect();
                assert_eq!(
                    k.values().into_iter().map(|x| x.1).collect::<Vec<_>>(),
                    values
                );
                for t2 in 0..=t {
                    assert_eq!(
                        dropped.contains(&t2),
                        !want.contains(&t2),
                        "{mode} trial {t2}"
                    );
                }
            }
        }
        assert!(Kept::of(&spec("keep = \"all\"", "min")).is_none());
        let scan = SweepSpec::from_toml(
            "name = \"s\"\nkind = \"landscape\"\n[data]\npath = \"d.csv\"\n[landscape]\ncheckpoint = \"c\"\nx = { min = -1.0, max = 1.0, points = 5 }\n",
        )
        .unwrap();
        assert!(Kept::of(&scan).is_none(), "a scan's units keep their files");
        assert_eq!(Kept::of(&spec("", "min")).unwrap().n, 100);
    }
}
