//! What a worker's result for a scan tile must be before it is taken: exactly its
//! points, with values the objective can take. A tile that fails the check is refused
//! like an impossible accuracy (a failed attempt, retried elsewhere), so a forged or
//! corrupted report can never make a "completed" scan of holes or impossible values.

use ridgeline_common::landscape::ScanUnit;
use ridgeline_common::spec::SweepSpec;

use super::{SECOND_TILE_FILE, TILE_FILE, read_tile};
use crate::core::{Outcome, UnitState};

/// Checks a completed tile's outcome and files; turns it into a failure saying why when
/// it is not a tile's result. Other units pass as they are.
pub fn check_tile(spec: &SweepSpec, trial: u32, o: &mut Outcome, files: &[(&str, &[u8])]) {
    if o.state != UnitState::Completed {
        return;
    }
    let Some(l) = spec.landscape.as_ref() else {
        return;
    };
    let ScanUnit::Tile(t) = l.unit(trial as usize) else {
        return;
    };
    let second = l.split.second().is_some();
    if let Err(why) = tile_result(l.tile_range(t).len(), o, files, second) {
        o.state = UnitState::Failed;
        o.error = format!("refused: tile {t}: {why}");
    }
}

fn tile_result(
    points: usize,
    o: &Outcome,
    files: &[(&str, &[u8])],
    second: bool,
) -> Result<(), String> {
    let loss = tile_values(points, files, TILE_FILE)?;
    if second {
        // `split = "both"`: the validation split's values, checked the same way.
        tile_values(points, files, SECOND_TILE_FILE)?;
    }
    let least = loss
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(f64::NAN, f64::min);
    let said = o.metrics.iter().find(|(n, _)| n == "loss").map(|(_, v)| *v);
    match said {
        Some(v) if v.to_bits() != least.to_bits() => Err(format!(
            "its loss {v} is not the least loss of its points ({least})"
        )),
        None if least.is_finite() => Err(format!(
            "no loss reported, though its points' least loss is {least}"
        )),
        _ => Ok(()),
    }
}

/// The losses of the one file `name` among `files`, once its values are checked.
fn tile_values(points: usize, files: &[(&str, &[u8])], name: &str) -> Result<Vec<f64>, String> {
    let tiles: Vec<&[u8]> = files
        .iter()
        .filter(|(n, _)| *n == name)
        .map(|(_, d)| *d)
        .collect();
    let [data] = tiles.as_slice() else {
        return Err(format!("expected one {name}, got {}", tiles.len()));
    };
    let (loss, acc) = read_tile(data, points)?;
    // Losses of the scans' objectives (cross-entropy, squared error) are never below 0;
    // a point may diverge (NaN, infinity), which the surface shows as a hole.
    if let Some((i, v)) = loss.iter().enumerate().find(|(_, v)| **v < 0.0) {
        return Err(format!("{name}: point {i} has loss {v}, below 0"));
    }
    if let Some((i, v)) = acc
        .iter()
        .enumerate()
        .find(|(_, v)| v.is_finite() && !(0.0..=1.0).contains(*v))
    {
        return Err(format!(
            "{name}: point {i} has accuracy {v}, outside [0, 1]"
        ));
    }
    Ok(loss)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tile(loss: &[f64], acc: &[f64]) -> Vec<u8> {
        loss.iter()
            .chain(acc)
            .flat_map(|v| v.to_le_bytes())
            .collect()
    }

    fn outcome(loss: Option<f64>) -> Outcome {
        Outcome {
            unit: ridgeline_common::ids::UnitId(1),
            state: UnitState::Completed,
            metrics: loss.map(|v| ("loss".to_owned(), v)).into_iter().collect(),
            error: String::new(),
            duration_s: 1.0,
            history: None,
            permanent: false,
        }
    }

    #[test]
    fn only_exactly_its_points_with_possible_values_pass() {
        let good = tile(&[0.5, 0.25, f64::NAN], &[0.5, 1.0, f64::NAN]);
        assert_eq!(
            tile_result(3, &outcome(Some(0.25)), &[(TILE_FILE, &good)], false),
            Ok(())
        );
        // No data, too little, too much, twice.
        assert!(tile_result(3, &outcome(Some(0.25)), &[], false).is_err());
        assert!(tile_result(3, &outcome(Some(0.25)), &[(TILE_FILE, &good[..40])], false).is_err());
        assert!(tile_result(2, &outcome(Some(0.25)), &[(TILE_FILE, &good)], false).is_err());
        let twice = [(TILE_FILE, good.as_slice()), (TILE_FILE, good.as_slice())];
        assert!(tile_result(3, &outcome(Some(0.25)), &twice, false).is_err());
        // A negative loss, an accuracy above 1, a best that is not the points' least.
        let neg = tile(&[-5.0, 0.25, 1.0], &[0.5, 0.5, 0.5]);
        assert!(tile_result(3, &outcome(Some(-5.0)), &[(TILE_FILE, &neg)], false).is_err());
        let acc = tile(&[0.5, 0.25, 1.0], &[0.5, 1.5, 0.5]);
        assert!(tile_result(3, &outcome(Some(0.25)), &[(TILE_FILE, &acc)], false).is_err());
        assert!(tile_result(3, &outcome(Some(-5.0)), &[(TILE_FILE, &good)], false).is_err());
        assert!(tile_result(3, &outcome(None), &[(TILE_FILE, &good)], false).is_err());
        // All points diverged: no loss to report.
        let nan = tile(&[f64::NAN; 3], &[f64::NAN; 3]);
        assert_eq!(
            tile_result(3, &outcome(None), &[(TILE_FILE, &nan)], false),
            Ok(())
        );
        // `split = "both"`: the validation values must be there and possible too.
        let both = [
            (TILE_FILE, good.as_slice()),
            (SECOND_TILE_FILE, good.as_slice()),
        ];
        assert_eq!(tile_result(3, &outcome(Some(0.25)), &both, true), Ok(()));
        assert!(tile_result(3, &outcome(Some(0.25)), &[(TILE_FILE, &good)], true).is_err());
        let bad = [
            (TILE_FILE, good.as_slice()),
            (SECOND_TILE_FILE, acc.as_slice()),
        ];
        let e = tile_result(3, &outcome(Some(0.25)), &bad, true).unwrap_err();
        assert!(
            e.starts_with("tile_val.f64: point 1 has accuracy 1.5"),
            "{e}"
        );
    }
}
