//! What a finished scan says about itself, in the words of a scan: points of the grid,
//! Hessian rounds and curvature points counted apart (a Hessian round not needed is not
//! a failure), the lowest loss by its coordinates, and what it was evaluated on.

use ridgeline_common::landscape::{LandscapeSpec, ScanUnit};
use ridgeline_common::proto;

/// Counts of one kind of unit: completed and all.
#[derive(Default)]
struct Tally {
    done: usize,
    failed: usize,
    all: usize,
}

/// The lines summarising a scan, finished or running. `states` are the units' states by unit index
/// (from the results), `meta` and `hessian` the sweep's meta.json and hessian.json
/// (`Null` when absent).
pub fn lines(
    id: &str,
    state: &str,
    l: &LandscapeSpec,
    states: &[(u32, i32)],
    meta: &serde_json::Value,
    hessian: &serde_json::Value,
) -> Vec<String> {
    let (mut tiles, mut curvature, mut rounds) =
        (Tally::default(), Tally::default(), Tally::default());
    let mut curve_done = None;
    let completed = proto::UnitState::Completed as i32;
    let failed = proto::UnitState::Failed as i32;
    let mut hvp_rounds_done = std::collections::BTreeSet::new();
    let mut points_done = 0;
    for &(i, s) in states {
        let t = match l.unit(i as usize) {
            ScanUnit::Tile(t) => {
                if s == completed {
                    points_done += l.tile_range(t).len();
                }
                &mut tiles
            }
            ScanUnit::Curvature(_) => &mut curvature,
            ScanUnit::Curve => {
                curve_done = Some(s == completed);
                continue;
            }
            ScanUnit::Hvp { round, .. } => {
                if s == completed {
                    hvp_rounds_done.insert(round);
                }
                if s == failed {
                    rounds.failed += 1;
                }
                continue;
            }
        };
        t.done += usize::from(s == completed);
        t.failed += usize::from(s == failed);
    }
    tiles.all = l.tiles();
    curvature.all = l.curvature_points();
    let points = l.points();
    // meta.json counts the points once the scan is assembled; before, its tiles do.
    let computed = meta["computed_points"]
        .as_u64()
        .map_or(points_done, |n| n as usize);
    let mut head = format!(
        "{id} {state}: {computed}/{points} points in {}/{} tiles",
        tiles.done, tiles.all
    );
    if tiles.failed > 0 {
        head += &format!(" ({} failed)", tiles.failed);
    }
    let mut out = vec![head];
    if let Some(h) = l.hessian.as_ref() {
        rounds.all = h.max_rounds();
        rounds.done = hvp_rounds_done.len();
        let verdict = match hessian["converged"].as_bool() {
            Some(true) => format!(
                "converged after {} of at most {} rounds (the other {} were not needed)",
                rounds.done,
                rounds.all,
                rounds.all - rounds.done.min(rounds.all)
            ),
            Some(false) => format!(
                "not converged after {} of at most {} rounds (see the residuals in hessian.json)",
                rounds.done, rounds.all
            ),
            None if state == "running" => {
                format!("{} of at most {} rounds so far", rounds.done, rounds.all)
            }
            None => format!(
                "{} of at most {} rounds, no hessian.json",
                rounds.done, rounds.all
            ),
        };
        out.push(format!("Hessian: {verdict}"));
    }
    if curvature.all > 0 {
        out.push(format!(
            "curvature: {}/{} points of the sub-grid",
            curvature.done, curvature.all
        ));
    }
    if let Some(ok) = curve_done {
        out.push(format!(
            "connecting curve: {}",
            if ok { "trained" } else { "not trained" }
        ));
    }
    if let Some(v) = meta["loss_min"].as_f64().filter(|v| v.is_finite()) {
        let at = &meta["loss_min_at"];
        let place = match (at["x"].as_f64(), at["y"].as_f64()) {
            (Some(x), Some(y)) => format!(" at (x, y) = ({x:.4}, {y:.4})"),
            (Some(x), None) => format!(" at x = {x:.4}"),
            _ => String::new(),
        };
        let ev = &meta["evaluated_on"];
        let on = match (ev["samples"].as_f64(), ev["split"].as_str()) {
            (Some(n), Some(split)) => {
                // `both`: the surface is the train split's; val_surface.npy is beside it.
                let (split, also) = match split {
                    "both" => ("train", " (and the val split: val_surface.npy)"),
                    s => (s, ""),
                };
                match ev["tokens_per_sample"].as_u64() {
                    Some(t) => {
                        format!(", on {n:.0} windows of {t} tokens of the {split} split{also}")
                    }
                    None => format!(", on {n:.0} samples of the {split} split{also}"),
                }
            }
            _ => String::new(),
        };
        out.push(format!("lowest loss {v:.4}{place}{on}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ridgeline_common::spec::SweepSpec;

    #[test]
    fn a_converged_hessian_is_not_counted_as_cancelled_work() {
        let spec = SweepSpec::from_toml(
            "name = \"s\"\nkind = \"landscape\"\n[data]\npath = \"d.csv\"\n[landscape]\ncheckpoint = \"c\"\ntile = 10\nx = { min = -1.0, max = 1.0, points = 5 }\ny = { min = -1.0, max = 1.0, points = 5 }\n[landscape.hessian]\ntop_k = 1\nshards = 2\n",
        )
        .unwrap();
        let l = spec.landscape.as_ref().unwrap();
        let (c, x) = (
            proto::UnitState::Completed as i32,
            proto::UnitState::Cancelled as i32,
        );
        // Three tiles, two rounds of two shards done, the rest of the rounds cancelled.
        let base = l.hessian_base() as u32;
        let mut states: Vec<(u32, i32)> = (0..3).map(|t| (t, c)).collect();
        states.extend((base..base + 4).map(|u| (u, c)));
        states.extend((base + 4..l.units() as u32).map(|u| (u, x)));
        let meta = serde_json::json!({
            "computed_points": 25, "loss_min": 0.25, "loss_min_at": {"x": 0.5, "y": -0.5},
            "evaluated_on": {"split": "val", "samples": 200.0}
        });
        let hessian = serde_json::json!({"converged": true});
        let lines = lines("s-1", "completed", l, &states, &meta, &hessian);
        assert_eq!(lines[0], "s-1 completed: 25/25 points in 3/3 tiles");
        let rounds = l.hessian.as_ref().unwrap().max_rounds();
        assert_eq!(
            lines[1],
            format!(
                "Hessian: converged after 2 of at most {rounds} rounds (the other {} were not needed)",
                rounds - 2
            )
        );
        assert_eq!(
            lines[2],
            "lowest loss 0.2500 at (x, y) = (0.5000, -0.5000), on 200 samples of the val split"
        );
    }
}
