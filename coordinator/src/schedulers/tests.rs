//! The rules against hand-computed examples.

use super::*;

fn pruned(d: Decision) -> bool {
    matches!(d, Decision::Prune(_))
}

#[test]
fn percentile_matches_numpy() {
    // numpy.percentile([3, 1, 2, 10], q) for q = 0, 50, 75, 100.
    let v = [3.0, 1.0, 2.0, 10.0];
    assert_eq!(percentile(&v, 0.0), Some(1.0));
    assert_eq!(percentile(&v, 50.0), Some(2.5));
    assert_eq!(percentile(&v, 75.0), Some(4.75));
    assert_eq!(percentile(&v, 100.0), Some(10.0));
    assert_eq!(percentile(&[], 50.0), None);
}

#[test]
fn asha_first_at_a_rung_continues_and_the_bottom_stops() {
    // grace 1, rf 2, max_t 8: rungs at 1, 2, 4, 8; cutoff = median of earlier records.
    let mut a = Asha::new(1, 2.0, 8, 1, 0);
    assert!(!pruned(a.on_report(0, 1, 0.5)), "first at rung 1 continues");
    assert!(pruned(a.on_report(1, 1, 0.3)), "0.3 < median[0.5]");
    assert!(
        !pruned(a.on_report(2, 1, 0.7)),
        "0.7 >= median[0.5, 0.3] = 0.4"
    );
    assert!(
        pruned(a.on_report(3, 1, 0.45)),
        "0.45 < median[0.5, 0.3, 0.7] = 0.5"
    );
    // A trial decides once per rung: its second report at step 1 changes nothing.
    assert!(!pruned(a.on_report(0, 1, -100.0)));
    assert!(!pruned(a.on_report(0, 2, 0.6)), "first at rung 2");
    // A trial that jumps to step 3 records at the highest rung it reached (2) only.
    assert!(pruned(a.on_report(5, 3, 0.1)), "0.1 < median[0.6]");
    assert!(
        !pruned(a.on_report(2, 3, 0.65)),
        "0.65 >= median[0.6, 0.1] = 0.35"
    );
    // rf = 4 cuts at the 75th percentile.
    let mut b = Asha::new(1, 4.0, 16, 1, 0);
    for (t, v) in [(0, 1.0), (1, 2.0), (2, 3.0), (3, 4.0)] {
        b.on_report(t, 1, v);
    }
    // 75th percentile of [1, 2, 3, 4] is 3.25.
    assert!(pruned(b.on_report(4, 1, 3.2)));
    assert!(!pruned(b.on_report(5, 1, 3.3)));
}

#[test]
fn asha_brackets_follow_ray_weights_and_shift_rungs() {
    // Bracket s has rungs grace * rf^(k + s); with max_t = 16, rf = 2: bracket 0 has
    // 5 rungs (1..16), bracket 1 has 4 (2..16). Ray weights them e^5 : e^4.
    let mut a = Asha::new(1, 2.0, 16, 2, 7);
    let n = 4000;
    let in0 = (0..n).filter(|t| a.bracket_of(*t) == 0).count() as f64 / f64::from(n);
    let want = 1.0 / (1.0 + (-1f64).exp());
    assert!((in0 - want).abs() < 0.03, "{in0} vs {want}");
    let t1 = (0..n).find(|t| a.bracket_of(*t) == 1).unwrap();
    let t2 = (0..n).filter(|t| a.bracket_of(*t) == 1).nth(1).unwrap();
    // In bracket 1 nothing is judged at step 1; the first rung is step 2.
    assert!(!pruned(a.on_report(t1, 1, 5.0)));
    assert!(
        !pruned(a.on_report(t2, 1, 1.0)),
        "no rung at step 1 in bracket 1"
    );
    assert!(!pruned(a.on_report(t1, 2, 5.0)));
    assert!(pruned(a.on_report(t2, 2, 1.0)));
}

#[test]
fn hyperband_buckets_by_crc32_like_optuna() {
    // min 1, max 9, rf 3: 3 brackets with budgets 9, 5, 3 (Optuna's
    // _calculate_trial_allocation_budget). Brackets from Python:
    // binascii.crc32(f"s_{t}".encode()) % 17 = 3, 13, 6, 7, 7, 2, 4, 16, 16, 14, 6, 9.
    let h = Hyperband::new(1, 9, 3, "s");
    let want = [0, 1, 0, 0, 0, 0, 0, 2, 2, 2, 0, 1];
    let got: Vec<usize> = (0..12).map(|t| h.bracket_of(t)).collect();
    assert_eq!(got, want);
}

#[test]
fn hyperband_promotes_the_best_third() {
    let mut h = Hyperband::new(1, 9, 3, "s");
    // Trials 0, 2, 3, 4, 5, 6, 10 are in bracket 0: rungs at steps 1, 3, 9.
    assert!(
        !pruned(h.on_report(0, 1, 0.5)),
        "alone at its rung: the best"
    );
    assert!(
        pruned(h.on_report(2, 1, 0.4)),
        "best 1 of [0.5, 0.4] is 0.5"
    );
    assert!(!pruned(h.on_report(3, 1, 0.6)), "the best of three");
    assert!(pruned(h.on_report(4, 1, 0.55)), "best 1 of 4 is 0.6");
    assert!(pruned(h.on_report(5, 1, 0.52)), "best 1 of 5 is 0.6");
    // With six values the best two go on: 0.6 and this one.
    assert!(!pruned(h.on_report(6, 1, 0.58)));
    // Rung 1 (step 3) of bracket 0 starts empty.
    assert!(!pruned(h.on_report(3, 3, 0.1)));
    // A trial that jumps from step 1 to step 9 is judged at rungs 1 and 2 in turn.
    assert!(
        !pruned(h.on_report(6, 9, 0.7)),
        "best at rung 1 and alone at rung 2"
    );
    // Bracket 1 (trial 1) starts judging at step 3.
    assert!(!pruned(h.on_report(1, 1, -9.0)));
    assert!(!pruned(h.on_report(1, 3, -9.0)), "alone at its first rung");
}

#[test]
fn median_prunes_below_the_median_of_completed_trials() {
    // n_startup 2, warm-up 1 step, every step, n_min 1.
    let mut m = Median::new(2, 1, 1, 1);
    for (t, scores) in [(0, [0.1, 0.2, 0.3]), (1, [0.3, 0.4, 0.5])] {
        for (i, s) in scores.into_iter().enumerate() {
            assert!(
                !pruned(m.on_report(t, i as u32 + 1, s)),
                "before 2 completed"
            );
        }
        if t == 0 {
            m.on_completed(0);
            // One completed trial is below n_startup_trials.
            assert!(!pruned(m.on_report(9, 1, -5.0)));
            m.on_ended(9);
        }
    }
    m.on_completed(1);
    // At step 1 the completed scores are [0.1, 0.3]: median 0.2.
    assert!(pruned(m.on_report(2, 1, 0.15)));
    assert!(!pruned(m.on_report(3, 1, 0.25)));
    // The best score so far counts: 0.25 at step 1 against the median 0.3 at step 2.
    assert!(pruned(m.on_report(3, 2, 0.1)));
    // Steps no completed trial reached are not judged.
    assert!(!pruned(m.on_report(4, 7, -1.0)));
    // Warm-up: step 0 is never judged.
    assert!(!pruned(m.on_report(5, 0, -1.0)));
}

#[test]
fn median_judges_once_per_interval() {
    let mut m = Median::new(1, 0, 2, 1);
    for s in 0..6 {
        m.on_report(0, s, 1.0);
    }
    m.on_completed(0);
    // Interval 2: steps 0-1, 2-3, 4-5, judged at the first report in each.
    assert!(
        pruned(m.on_report(1, 3, 0.5)),
        "first report of its interval: judged"
    );
    // The best score so far is what is judged, so a trial that was once good is never
    // stopped later: 2.0 at step 2, then 0.0.
    assert!(!pruned(m.on_report(2, 2, 2.0)));
    assert!(!pruned(m.on_report(2, 4, 0.0)));
}
