//! Pareto fronts of several objectives: non-domination ranks, crowding distances,
//! hypervolumes and greedy hypervolume subset selection, as Optuna computes them
//! (`optuna/study/_multi_objective.py`, `samplers/nsgaii`, `_hypervolume`).
//!
//! Every function takes *loss* vectors: each objective already turned so that smaller
//! is better ([`losses`]). Pure functions, no I/O: the searchers, the coordinator's
//! status and the client's results all rank with the same code.

use std::cmp::Ordering;

use crate::spec::Mode;

/// Optuna's `EPS`: a reference point's coordinate that would be 0.
const EPS: f64 = 1e-12;

/// A trial's objective values as losses: maximised objectives negated.
pub fn losses(values: &[f64], modes: &[Mode]) -> Vec<f64> {
    values
        .iter()
        .zip(modes)
        .map(|(v, m)| match m {
            Mode::Min => *v,
            Mode::Max => -v,
        })
        .collect()
}

/// Whether loss vector `a` dominates `b`: no worse in every objective and not equal.
pub fn dominates(a: &[f64], b: &[f64]) -> bool {
    a != b && a.iter().zip(b).all(|(x, y)| x <= y)
}

fn lex(a: &[f64], b: &[f64]) -> Ordering {
    a.iter()
        .zip(b)
        .map(|(x, y)| x.total_cmp(y))
        .find(|o| o.is_ne())
        .unwrap_or(Ordering::Equal)
}

/// The non-domination rank of every point (0: on the Pareto front, 1: on the front once
/// rank 0 is removed, ...); equal points share a rank. Fronts are peeled from the points
/// in lexicographic order, as Optuna's `_calculate_nondomination_rank`: O(n) per front
/// for two objectives.
pub fn ranks(points: &[Vec<f64>]) -> Vec<usize> {
    let n = points.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| lex(&points[a], &points[b]));
    // Distinct points in lexicographic order, each with the points equal to it.
    let mut unique: Vec<Vec<usize>> = Vec::new();
    for i in order {
        match unique.last_mut() {
            Some(g) if lex(&points[g[0]], &points[i]).is_eq() => g.push(i),
            _ => unique.push(vec![i]),
        }
    }
    let mut rank = vec![0; n];
    let mut remaining: Vec<usize> = (0..unique.len()).collect();
    let mut r = 0;
    while !remaining.is_empty() {
        let front = front_of_sorted(&remaining, |k| &points[unique[k][0]]);
        let mut next = Vec::with_capacity(remaining.len());
        for (k, on) in remaining.into_iter().zip(front) {
            if on {
                unique[k].iter().for_each(|&i| rank[i] = r);
            } else {
                next.push(k);
            }
        }
        remaining = next;
        r += 1;
    }
    rank
}

/// Which of the distinct points `ids` (in lexicographic order) are on their front:
/// no later point can dominate an earlier one.
fn front_of_sorted<'a>(ids: &[usize], at: impl Fn(usize) -> &'a [f64]) -> Vec<bool> {
    let m = ids.first().map_or(0, |&k| at(k).len());
    let mut on = vec![false; ids.len()];
    if ids.is_empty() {
        return on;
    }
    match m {
        1 => on[0] = true,
        2 => {
            // On the front when its second loss is a new minimum.
            let mut best = f64::INFINITY;
            for (j, &k) in ids.iter().enumerate() {
                let y = at(k)[1];
                if j == 0 || y < best {
                    on[j] = true;
                    best = y;
                }
            }
        }
        _ => {
            // The first remaining point is on the front; drop what it dominates.
            let mut rest: Vec<usize> = (0..ids.len()).collect();
            while let Some(&top) = rest.first() {
                on[top] = true;
                let t = at(ids[top]);
                rest.retain(|&j| at(ids[j])[1..].iter().zip(&t[1..]).any(|(a, b)| a < b));
            }
        }
    }
    on
}

/// Ranks with constraints (Optuna's constrained `_fast_non_domination_rank`): feasible
/// points (`violation` ≤ 0) are ranked among themselves by domination; infeasible ones
/// come after all of them, ranked by their violation alone (equal violations share a rank).
pub fn constrained_ranks(points: &[Vec<f64>], violation: &[f64]) -> Vec<usize> {
    let feasible: Vec<usize> = (0..points.len()).filter(|&i| violation[i] <= 0.0).collect();
    let infeasible: Vec<usize> = (0..points.len()).filter(|&i| violation[i] > 0.0).collect();
    let mut rank = vec![0; points.len()];
    let fr = ranks(
        &feasible
            .iter()
            .map(|&i| points[i].clone())
            .collect::<Vec<_>>(),
    );
    for (&i, r) in feasible.iter().zip(&fr) {
        rank[i] = *r;
    }
    let top = fr.iter().max().map_or(0, |r| r + 1);
    let ir = ranks(
        &infeasible
            .iter()
            .map(|&i| vec![violation[i]])
            .collect::<Vec<_>>(),
    );
    for (&i, r) in infeasible.iter().zip(&ir) {
        rank[i] = top + r;
    }
    rank
}

/// The indices of `ids` in the order Optuna's `_crowding_distance_sort` leaves them
/// (the most isolated first), with each one's crowding distance: per objective, the
/// gap between its neighbours over the objective's range, the extremes infinite.
///
/// Optuna sorts the list in place by each objective in turn (stable sorts), then by
/// distance, and reverses it; ties between equal distances therefore come out in the
/// reverse of the last objective's order, and this function keeps that order exactly.
pub fn crowding_sort(ids: &[usize], points: &[Vec<f64>]) -> Vec<(usize, f64)> {
    let mut pop: Vec<usize> = ids.to_vec();
    let mut dist = std::collections::HashMap::<usize, f64>::new();
    let m = pop.first().map_or(0, |&i| points[i].len());
    // `d` picks a column of every point: no iterator over `points` says that better.
    #[allow(clippy::needless_range_loop)]
    for d in 0..m {
        pop.sort_by(|&a, &b| points[a][d].total_cmp(&points[b][d]));
        let (first, last) = (points[pop[0]][d], points[*pop.last().unwrap()][d]);
        if first == last {
            continue;
        }
        let mut vs = Vec::with_capacity(pop.len() + 2);
        vs.push(f64::NEG_INFINITY);
        vs.extend(pop.iter().map(|&i| points[i][d]));
        vs.push(f64::INFINITY);
        let v_min = vs
            .iter()
            .copied()
            .find(|x| *x != f64::NEG_INFINITY)
            .unwrap();
        let v_max = vs
            .iter()
            .rev()
            .copied()
            .find(|x| *x != f64::INFINITY)
            .unwrap();
        let width = if v_max - v_min <= 0.0 {
            1.0
        } else {
            v_max - v_min
        };
        for (j, &i) in pop.iter().enumerate() {
            let gap = if vs[j] == vs[j + 2] {
                0.0
            } else {
                vs[j + 2] - vs[j]
            };
            *dist.entry(i).or_insert(0.0) += gap / width;
        }
    }
    let d = |i: &usize| dist.get(i).copied().unwrap_or(0.0);
    pop.sort_by(|a, b| d(a).total_cmp(&d(b)));
    pop.reverse();
    pop.into_iter().map(|i| (i, d(&i))).collect()
}

/// The hypervolume dominated by `points` and bounded by `reference`: the measure of the
/// set of vectors each of which some point is no worse than, and that are no worse than
/// the reference. Points not strictly better than the reference in every objective add
/// nothing. Exact: a sweep for two objectives, slices along the last objective above.
pub fn hypervolume(points: &[Vec<f64>], reference: &[f64]) -> f64 {
    let inside: Vec<&[f64]> = points
        .iter()
        .map(Vec::as_slice)
        .filter(|p| p.iter().zip(reference).all(|(x, r)| x < r))
        .collect();
    hv(inside, reference)
}

fn hv(mut pts: Vec<&[f64]>, reference: &[f64]) -> f64 {
    let m = reference.len();
    if pts.is_empty() {
        return 0.0;
    }
    match m {
        1 => reference[0] - pts.iter().map(|p| p[0]).fold(f64::INFINITY, f64::min),
        2 => {
            pts.sort_by(|a, b| lex(a, b));
            let mut total = 0.0;
            let mut y = reference[1];
            for p in pts {
                if p[1] < y {
                    total += (reference[0] - p[0]) * (y - p[1]);
                    y = p[1];
                }
            }
            total
        }
        _ => {
            // Slabs between consecutive values of the last objective: each holds the
            // (m-1)-dimensional hypervolume of the points below it.
            pts.sort_by(|a, b| a[m - 1].total_cmp(&b[m - 1]));
            let sub = &reference[..m - 1];
            let mut total = 0.0;
            for k in 0..pts.len() {
                let top = pts.get(k + 1).map_or(reference[m - 1], |p| p[m - 1]);
                let depth = top - pts[k][m - 1];
                if depth > 0.0 {
                    let slab: Vec<&[f64]> = pts[..=k].iter().map(|p| &p[..m - 1]).collect();
                    total += depth * hv(slab, sub);
                }
            }
            total
        }
    }
}

/// Optuna's `_get_reference_point`: 1.1 times the worst loss of each objective (0.9
/// times where it is negative), with 0 replaced by a tiny positive number.
pub fn reference_point(points: &[Vec<f64>]) -> Vec<f64> {
    let m = points.first().map_or(0, Vec::len);
    (0..m)
        .map(|d| {
            let worst = points
                .iter()
                .map(|p| p[d])
                .fold(f64::NEG_INFINITY, f64::max);
            let r = (1.1 * worst).max(0.9 * worst);
            if r == 0.0 { EPS } else { r }
        })
        .collect()
}

/// Greedy hypervolume subset selection (Optuna's `_solve_hssp`): `k` of the points,
/// each time the one that adds the most hypervolume to those already chosen (the first
/// in lexicographic order on ties); equal points count once until every distinct one is
/// chosen. Returns positions into `points`.
pub fn hssp(points: &[Vec<f64>], k: usize, reference: &[f64]) -> Vec<usize> {
    if k >= points.len() {
        return (0..points.len()).collect();
    }
    // Distinct points, lexicographically sorted, each at its first position.
    let mut order: Vec<usize> = (0..points.len()).collect();
    order.sort_by(|&a, &b| lex(&points[a], &points[b]).then(a.cmp(&b)));
    order.dedup_by(|b, a| lex(&points[*a], &points[*b]).is_eq());
    if order.len() < k {
        // Every distinct point, then the earliest duplicates.
        let mut chosen = vec![false; points.len()];
        order.iter().for_each(|&i| chosen[i] = true);
        let extra: Vec<usize> = (0..points.len()).filter(|&i| !chosen[i]).collect();
        extra[..k - order.len()]
            .iter()
            .for_each(|&i| chosen[i] = true);
        return (0..points.len()).filter(|&i| chosen[i]).collect();
    }
    if !reference.iter().all(|r| r.is_finite()) {
        return order[..k].to_vec();
    }
    let mut selected: Vec<usize> = Vec::with_capacity(k);
    let mut candidates = order;
    let mut base = 0.0;
    while selected.len() < k {
        let mut best: Option<(usize, f64)> = None;
        for (j, &c) in candidates.iter().enumerate() {
            let mut with: Vec<Vec<f64>> = selected.iter().map(|&s| points[s].clone()).collect();
            with.push(points[c].clone());
            let gain = hypervolume(&with, reference) - base;
            if best.is_none_or(|(_, g)| gain > g) {
                best = Some((j, gain));
            }
        }
        let (j, gain) = best.expect("k < number of distinct points");
        base += gain;
        selected.push(candidates.remove(j));
    }
    selected
}

/// The Pareto front's members among `points` (loss vectors) with their violations:
/// the rank-0 feasible points. Returns positions into `points`.
pub fn front(points: &[Vec<f64>], violation: &[f64]) -> Vec<usize> {
    let feasible: Vec<usize> = (0..points.len()).filter(|&i| violation[i] <= 0.0).collect();
    let r = ranks(
        &feasible
            .iter()
            .map(|&i| points[i].clone())
            .collect::<Vec<_>>(),
    );
    feasible
        .into_iter()
        .zip(r)
        .filter(|(_, r)| *r == 0)
        .map(|(i, _)| i)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// Ranks by definition: a point's rank is one more than the largest rank of the
    /// points that dominate it (O(n²) per pass, obviously right).
    fn ranks_by_definition(p: &[Vec<f64>]) -> Vec<usize> {
        let n = p.len();
        let mut rank = vec![usize::MAX; n];
        let mut r = 0;
        while rank.contains(&usize::MAX) {
            let now: Vec<usize> = (0..n)
                .filter(|&i| rank[i] == usize::MAX)
                .filter(|&i| (0..n).all(|j| rank[j] != usize::MAX || !dominates(&p[j], &p[i])))
                .collect();
            now.into_iter().for_each(|i| rank[i] = r);
            r += 1;
        }
        rank
    }

    fn random_points(rng: &mut Rng, n: usize, m: usize, levels: u64) -> Vec<Vec<f64>> {
        (0..n)
            .map(|_| (0..m).map(|_| rng.below(levels) as f64).collect())
            .collect()
    }

    #[test]
    fn ranks_match_the_definition_with_ties_and_duplicates() {
        let mut rng = Rng::new(7);
        for m in 1..=4 {
            for _ in 0..30 {
                let p = random_points(&mut rng, 40, m, 6);
                assert_eq!(ranks(&p), ranks_by_definition(&p), "{p:?}");
            }
        }
    }

    #[test]
    fn infeasible_points_rank_after_feasible_ones_by_violation() {
        let p = vec![
            vec![0.0, 0.0],
            vec![1.0, 1.0],
            vec![5.0, 5.0],
            vec![-1.0, -1.0],
        ];
        let r = constrained_ranks(&p, &[0.0, 0.0, 0.0, 2.0]);
        assert_eq!(r, vec![0, 1, 2, 3]);
        let r = constrained_ranks(&p, &[3.0, 0.0, 0.0, 2.0]);
        assert_eq!(r, vec![3, 0, 1, 2]);
        assert_eq!(front(&p, &[3.0, 0.0, 0.0, 2.0]), vec![1]);
    }

    #[test]
    fn hypervolumes_match_closed_forms() {
        // Two objectives: a staircase of three boxes.
        let p = vec![
            vec![1.0, 3.0],
            vec![2.0, 2.0],
            vec![3.0, 1.0],
            vec![2.5, 2.5],
        ];
        assert_eq!(hypervolume(&p, &[4.0, 4.0]), 3.0 + 2.0 + 1.0);
        // A point outside the reference adds nothing.
        assert_eq!(hypervolume(&[vec![5.0, 0.0]], &[4.0, 4.0]), 0.0);
        // Three objectives: the union of boxes [p, r] by inclusion-exclusion.
        let p = vec![
            vec![0.0, 1.0, 1.0],
            vec![1.0, 0.0, 1.0],
            vec![1.0, 1.0, 0.0],
        ];
        // With r = (2,2,2) each box is 2·1·1, each pair and the triple overlap in the
        // unit cube [1,2]³: 3·2 − 3·1 + 1 = 4.
        assert_eq!(hypervolume(&p, &[2.0, 2.0, 2.0]), 4.0);
    }

    #[test]
    fn hypervolume_matches_monte_carlo_in_four_dimensions() {
        let mut rng = Rng::new(3);
        let p: Vec<Vec<f64>> = (0..12)
            .map(|_| (0..4).map(|_| rng.next_f64()).collect())
            .collect();
        let r = [1.0; 4];
        let exact = hypervolume(&p, &r);
        let n = 200_000;
        let mut hits = 0;
        for _ in 0..n {
            let x: Vec<f64> = (0..4).map(|_| rng.next_f64()).collect();
            hits += usize::from(p.iter().any(|q| q.iter().zip(&x).all(|(a, b)| a <= b)));
        }
        let mc = hits as f64 / n as f64;
        // Binomial standard error at n = 200k is at most 0.0012.
        assert!(
            (exact - mc).abs() < 0.005,
            "exact {exact}, Monte Carlo {mc}"
        );
    }

    #[test]
    fn greedy_subset_selection_takes_the_largest_contributions() {
        // On a front, the middle point adds the most; then the ends.
        let p = vec![
            vec![0.0, 3.0],
            vec![1.5, 1.5],
            vec![3.0, 0.0],
            vec![1.5, 1.5],
        ];
        let r = [4.0, 4.0];
        assert_eq!(hssp(&p, 1, &r), vec![1]);
        let two = hssp(&p, 2, &r);
        assert_eq!(two, vec![1, 0], "ties go to the lexicographically first");
        // More than the distinct points: the duplicate joins last.
        assert_eq!(hssp(&p, 4, &r), vec![0, 1, 2, 3]);
        let dup = [
            vec![1.0, 1.0],
            vec![1.0, 1.0],
            vec![0.0, 2.0],
            vec![1.0, 1.0],
        ];
        assert_eq!(hssp(&dup, 3, &r), vec![0, 1, 2]);
    }

    #[test]
    fn crowding_puts_extremes_first_and_gaps_in_order() {
        let p = vec![
            vec![0.0, 4.0],
            vec![1.0, 3.0],
            vec![3.0, 1.0],
            vec![4.0, 0.0],
            vec![2.0, 2.0],
        ];
        let sorted = crowding_sort(&[0, 1, 2, 3, 4], &p);
        assert!(sorted[0].1.is_infinite() && sorted[1].1.is_infinite());
        // Interior: each gap (2/4 per objective) sums to 1.0 for every interior point.
        for (_, d) in &sorted[2..] {
            assert!((d - 1.0).abs() < 1e-12, "{sorted:?}");
        }
    }

    #[test]
    fn losses_turn_maximised_objectives() {
        assert_eq!(
            losses(&[1.0, 2.0], &[Mode::Min, Mode::Max]),
            vec![1.0, -2.0]
        );
        assert_eq!(
            reference_point(&[vec![1.0, -2.0], vec![0.0, -4.0]]),
            vec![1.1, -1.8]
        );
        assert_eq!(reference_point(&[vec![0.0]]), vec![EPS]);
    }
}
