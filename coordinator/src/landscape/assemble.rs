//! A finished scan's tiles put together: the surface as NumPy arrays and CSV, the
//! linear-mode-connectivity barrier, `meta.json` and the pictures.

use std::io::Write;
use std::path::Path;

use ridgeline_common::landscape::{CurveKind, CurveSpec, DirectionKind, Split};
use ridgeline_common::spec::SweepSpec;

use super::DIRECTIONS;
use super::tiles::{NpyWriter, Tiles, write_npy};

/// `f` on the segment α ∈ [0, 1] of a scan along θ + α (θ₂ − θ): the endpoints
/// (interpolated linearly when they fall between grid points) and the grid points
/// strictly inside.
fn segment(alphas: &[f64], f: &[f64]) -> Vec<(f64, f64)> {
    let at = |a: f64| -> f64 {
        match alphas.iter().position(|&x| x >= a) {
            Some(0) => f[0],
            Some(i) => {
                let t = (a - alphas[i - 1]) / (alphas[i] - alphas[i - 1]);
                f[i - 1] + t * (f[i] - f[i - 1])
            }
            None => f64::NAN,
        }
    };
    let mut curve = vec![(0.0, at(0.0))];
    curve.extend(
        alphas
            .iter()
            .zip(f)
            .filter(|(a, _)| **a > 0.0 && **a < 1.0)
            .map(|(a, v)| (*a, *v)),
    );
    curve.push((1.0, at(1.0)));
    curve
}

/// The standard barrier of a curve on [0, 1] (Frankle et al. 2020; Entezari et al.
/// 2022): `max_α f(α) − [(1 − α) f(0) + α f(1)]`, the largest rise above the chord
/// between the endpoints (0 when the curve never rises above it), with where it is.
fn chord_barrier(curve: &[(f64, f64)]) -> serde_json::Value {
    let (f0, f1) = (curve[0].1, curve[curve.len() - 1].1);
    let (alpha, height) = curve
        .iter()
        .map(|&(a, v)| (a, v - ((1.0 - a) * f0 + a * f1)))
        .fold((0.0, 0.0), |m, p| if p.1 > m.1 { p } else { m });
    let (amax, vmax) =
        curve.iter().copied().fold(
            (f64::NAN, f64::NEG_INFINITY),
            |m, p| if p.1 > m.1 { p } else { m },
        );
    serde_json::json!({
        "barrier": height,
        "alpha": alpha,
        "start": f0,
        "end": f1,
        "max": vmax,
        "alpha_at_max": amax,
        "max_minus_endpoint_mean": vmax - (f0 + f1) / 2.0,
    })
}

/// Linear-mode-connectivity barriers along θ + α (θ₂ − θ), for the loss and, when the
/// scan has accuracies, for the error 1 − accuracy: the standard barrier (the largest
/// rise above the straight line between the endpoint values) with where it occurs, and
/// the curve on the segment. `max_minus_endpoint_mean` (the largest value minus the
/// endpoints' mean, what earlier versions called the barrier) is kept under that name.
pub fn barrier(alphas: &[f64], loss: &[f64], accuracy: &[f64]) -> serde_json::Value {
    let lc = segment(alphas, loss);
    let errors: Vec<f64> = accuracy.iter().map(|a| 1.0 - a).collect();
    let ec = (!accuracy.is_empty() && accuracy.iter().all(|a| a.is_finite()))
        .then(|| segment(alphas, &errors));
    let l = chord_barrier(&lc);
    serde_json::json!({
        "barrier": l["barrier"],
        "alpha": l["alpha"],
        "definition": "max over alpha in [0, 1] of f(alpha) - ((1 - alpha) f(0) + alpha f(1)) (Frankle et al. 2020; Entezari et al. 2022), f = loss or error = 1 - accuracy",
        "loss": l,
        "error": ec.as_deref().map(chord_barrier),
        "curve": lc.iter().enumerate().map(|(i, (a, v))| serde_json::json!({
            "alpha": a,
            "loss": v,
            "error": ec.as_ref().map(|e| e[i].1),
        })).collect::<Vec<_>>(),
    })
}

/// Complete grids up to this many points get dense `surface.npy`/`accuracy.npy`:
/// 128 MiB per array. Larger ones, and partial grids over [`PLOT_POINTS`], get just the
/// computed points.
pub const DENSE_POINTS: usize = 1 << 24;

/// Grids up to this many points are drawn.
const PLOT_POINTS: usize = 1 << 20;

/// Assembles the computed tiles `done` of a scan under `sweep_dir`:
///
/// - `surface.npy` (loss, `[ny, nx]`, row `i` is `y_i`) and `accuracy.npy`, for
///   complete grids of at most [`DENSE_POINTS`], and partial ones of at most
///   [`PLOT_POINTS`] (NaN where no tile was computed);
/// - `points.npy` (`[n, 4]`: x, y, loss, accuracy of the computed points only) when
///   tiles are missing (a cancelled or failed scan), so that an untouched grid is
///   never written out as NaN;
/// - `x.npy`, `y.npy`, `surface.csv` (computed points only), `meta.json`, `lmc.json`
///   and the pictures.
///
/// The work is O(points computed), whatever the size of the grid.
pub fn assemble(
    sweep_dir: &Path,
    sweep_id: &str,
    spec: &SweepSpec,
    run: serde_json::Value,
    done: &[u32],
    tile_dir: impl Fn(u32) -> std::path::PathBuf,
) -> Result<(), String> {
    let l = spec.landscape.as_ref().ok_or("not a landscape spec")?;
    let (nx, ny) = l.shape();
    let points = nx * ny;
    let tiles = Tiles::open(sweep_dir, l, done, &tile_dir)?;
    let missing = tiles.missing;
    if l.evaluator.is_some() {
        // An evaluator scan's directions were drawn by its workers; the first tile
        // brought them in.
        let (from, to) = (tile_dir(0).join(DIRECTIONS), sweep_dir.join(DIRECTIONS));
        if let Ok(b) = crate::fsafe::read(&from) {
            crate::fsafe::write_atomic(&to, b).map_err(|e| format!("{}: {e}", to.display()))?;
        }
    }
    let io = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
    let shape: Vec<usize> = if l.y.is_some() {
        vec![ny, nx]
    } else {
        vec![nx]
    };
    // A complete grid is written densely up to DENSE_POINTS; a partial one only while
    // its NaN holes stay small (PLOT_POINTS): beyond that, points.npy alone.
    let dense_limit = if missing == 0 {
        DENSE_POINTS
    } else {
        PLOT_POINTS
    };
    let nan_grid = || (vec![f64::NAN; points], vec![f64::NAN; points]);
    let mut dense = (points <= dense_limit).then(nan_grid);
    let mut dense2 = (points <= dense_limit && l.split.second().is_some()).then(nan_grid);
    // One pass over the tiles: the dense arrays filled, surface.csv and points.npy
    // (computed points only) written as they come, the lowest loss found.
    let csv_path = sweep_dir.join("surface.csv");
    let mut csv =
        std::io::BufWriter::new(crate::fsafe::create(&csv_path).map_err(|e| io(&csv_path, e))?);
    writeln!(csv, "x,y,loss,accuracy").map_err(|e| io(&csv_path, e))?;
    let points_path = sweep_dir.join("points.npy");
    let mut points_npy = match missing {
        0 => None,
        _ => Some(
            NpyWriter::create(&points_path, &[tiles.computed, 4])
                .map_err(|e| io(&points_path, e))?,
        ),
    };
    let (mut finite, mut loss_min, mut loss_max) = (0usize, f64::INFINITY, f64::NEG_INFINITY);
    let mut lowest: Option<usize> = None;
    tiles.visit(|v| {
        let (x, y) = l.point(v.k);
        writeln!(csv, "{x},{y},{},{}", v.loss, v.acc).map_err(|e| io(&csv_path, e))?;
        if let Some(w) = &mut points_npy {
            w.push(&[x, y, v.loss, v.acc])
                .map_err(|e| io(&points_path, e))?;
        }
        if let Some((loss, acc)) = &mut dense {
            (loss[v.k], acc[v.k]) = (v.loss, v.acc);
        }
        if let (Some((loss, acc)), Some(s)) = (&mut dense2, v.second) {
            (loss[v.k], acc[v.k]) = s;
        }
        if v.loss.is_finite() {
            finite += 1;
            loss_max = loss_max.max(v.loss);
            // Grid order: ties go to the first point.
            if v.loss < loss_min {
                (loss_min, lowest) = (v.loss, Some(v.k));
            }
        }
        Ok(())
    })?;
    csv.flush().map_err(|e| io(&csv_path, e))?;
    if let Some(w) = points_npy {
        w.finish().map_err(|e| io(&points_path, e))?;
    }
    for (prefix, arrays) in [("", &dense), ("val_", &dense2)] {
        if let Some((loss, acc)) = arrays {
            for (name, data) in [("surface.npy", loss), ("accuracy.npy", acc)] {
                let p = sweep_dir.join(format!("{prefix}{name}"));
                write_npy(&p, &shape, data).map_err(|e| io(&p, e))?;
            }
        }
    }
    let p = sweep_dir.join("x.npy");
    write_npy(&p, &[nx], &l.x_axis().values()).map_err(|e| io(&p, e))?;
    if let Some(y) = &l.y {
        let p = sweep_dir.join("y.npy");
        write_npy(&p, &[ny], &y.values()).map_err(|e| io(&p, e))?;
    }
    // Where the lowest loss is, by its coordinates (a tile number means nothing to a
    // reader).
    let lowest = lowest.map(|k| {
        let (x, y) = l.point(k);
        match l.y {
            Some(_) => serde_json::json!({"x": x, "y": y}),
            None => serde_json::json!({"x": x}),
        }
    });
    let directions: serde_json::Value = crate::fsafe::read(sweep_dir.join("directions.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let mut meta = serde_json::json!({
        "sweep": sweep_id,
        "spec": spec,
        "shape": shape,
        "points": points,
        "computed_points": tiles.computed,
        "dense": dense.is_some(),
        "tiles": l.tiles(),
        "missing_tiles": missing,
        "loss_min": loss_min,
        "loss_min_at": lowest,
        "evaluated_on": {
            "split": l.split,
            "samples": run.get("samples"),
            "tokens_per_sample": spec.data.as_ref().and_then(|d| d.tokenizer.as_ref().map(|_| d.context)),
            "note": "every point is evaluated on the same samples of this split (landscape.samples or landscape.tokens cut it): a loss here can differ from a trial's val_loss measured on the whole split",
        },
        "evaluator": l.evaluator.as_ref().map(|e| &e.python),
        "loss_max": loss_max,
        "nan_points": points - finite,
        "directions": directions,
        "run": run,
    });
    // Everything else is written before meta.json, which tells a reader that the
    // folder is complete.
    let write_meta = |meta: &serde_json::Value| {
        let p = sweep_dir.join("meta.json");
        crate::fsafe::write_atomic(&p, serde_json::to_vec_pretty(meta).expect("json"))
            .map_err(|e| io(&p, e))
    };
    let Some((loss, acc)) = dense else {
        return write_meta(&meta);
    };
    if l.directions.kind == DirectionKind::Target && l.y.is_none() {
        let b = barrier(&l.x_axis().values(), &loss, &acc);
        let p = sweep_dir.join("lmc.json");
        crate::fsafe::write_atomic(&p, serde_json::to_vec_pretty(&b).expect("json"))
            .map_err(|e| io(&p, e))?;
        meta["lmc_barrier"] = b["barrier"].clone();
        meta["lmc_error_barrier"] = b["error"]["barrier"].clone();
    }
    if l.curvature.is_some() {
        curvature_map(sweep_dir, spec, &directions, &tile_dir)?;
    }
    if let Some(c) = &l.curve
        && let Some(j) =
            connecting_curve(sweep_dir, spec, c, &tile_dir(l.hessian_base() as u32 - 1))?
    {
        meta["curve_barrier"] = j["curve"]["barrier"]["barrier"].clone();
        meta["line_barrier"] = j["line"]["barrier"]["barrier"].clone();
    }
    let (xs, ys) = (l.x_axis().values(), l.y.as_ref().map(|y| y.values()));
    // The reference's names: `train` for our train split, `test` for val.
    let mut splits = vec![super::export::SplitValues {
        name: match l.split.primary() {
            Split::Val => "test",
            _ => "train",
        },
        loss: &loss,
        acc: &acc,
    }];
    if let Some((vloss, vacc)) = &dense2 {
        splits.push(super::export::SplitValues {
            name: "test",
            loss: vloss,
            acc: vacc,
        });
    }
    super::export::write_h5(
        &sweep_dir.join("surface.h5"),
        &super::export::Surface {
            xs: &xs,
            ys: ys.as_deref(),
            splits: &splits,
        },
    )?;
    if points > PLOT_POINTS || tiles.computed == 0 {
        return write_meta(&meta);
    }
    if let Some(ys) = ys.as_ref().filter(|_| l.wants_vtp()) {
        let height = if l.vtp_log {
            super::export::Height::Log
        } else {
            super::export::Height::Linear
        };
        super::export::write_vtp(
            &sweep_dir.join("surface.vtp"),
            &xs,
            ys,
            &loss,
            height,
            l.vtp_zmax,
        )?;
    }
    let path: Option<(Vec<f64>, Vec<f64>)> = crate::fsafe::read(sweep_dir.join("trajectory.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|t| {
            Some((
                serde_json::from_value(t["x"].clone()).ok()?,
                serde_json::from_value(t["y"].clone()).ok()?,
            ))
        });
    let lmc = (l.directions.kind == DirectionKind::Target && l.y.is_none())
        .then(|| barrier(&xs, &loss, &acc))
        .and_then(|b| {
            Some(crate::plot::Barrier {
                alpha: b["loss"]["alpha"].as_f64()?,
                value: b["loss"]["barrier"].as_f64()?,
            })
        });
    crate::plot::plots(
        sweep_dir,
        &super::describe::labels(sweep_dir, spec, &directions, "loss"),
        &loss,
        &acc,
        dense2.as_ref().map(|(l, a)| (l.as_slice(), a.as_slice())),
        &xs,
        ys.as_deref(),
        path.as_ref(),
        lmc,
    )?;
    write_meta(&meta)
}

/// Packs an assembled scan's tile values into one file ([`super::tiles::PACK`]) and
/// removes the tiles' own files; later assemblies read the pack. Returns how many
/// tiles' files were removed.
pub fn compact_tiles(
    sweep_dir: &Path,
    spec: &SweepSpec,
    done: &[u32],
    tile_dir: impl Fn(u32) -> std::path::PathBuf,
) -> Result<usize, String> {
    let l = spec.landscape.as_ref().ok_or("not a landscape spec")?;
    Tiles::open(sweep_dir, l, done, tile_dir)?.compact()
}

/// `curvature.json` and, for 2-D scans, `curvature_lambda_max.png` and
/// `curvature_trace.png` from the curvature units' `curvature.json` (NaN where a unit
/// did not complete): λmax, λmin (with residuals) and the trace (with its standard
/// error) on the sub-grid.
fn curvature_map(
    sweep_dir: &Path,
    spec: &SweepSpec,
    directions: &serde_json::Value,
    unit_dir: &impl Fn(u32) -> std::path::PathBuf,
) -> Result<(), String> {
    let l = spec.landscape.as_ref().ok_or("not a landscape spec")?;
    let (Some(c), Some((xa, ya))) = (&l.curvature, l.curvature_axes()) else {
        return Ok(());
    };
    let n = l.curvature_points();
    let mut cols: [Vec<f64>; 6] = Default::default();
    for k in 0..n {
        let p: Option<serde_json::Value> =
            crate::fsafe::read(unit_dir((l.tiles() + k) as u32).join("curvature.json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
        let get = |key: &str, i: usize| {
            p.as_ref()
                .and_then(|p| p[key][i].as_f64())
                .unwrap_or(f64::NAN)
        };
        for (col, v) in cols.iter_mut().zip([
            get("lambda_max", 0),
            get("lambda_max", 1),
            get("lambda_min", 0),
            get("lambda_min", 1),
            get("trace", 0),
            get("trace", 1),
        ]) {
            col.push(v);
        }
    }
    let (xs, ys) = (xa.values(), ya.as_ref().map(|y| y.values()));
    let j = serde_json::json!({
        "x": xs,
        "y": ys,
        "shape": if ys.is_some() { vec![c.points, c.points] } else { vec![c.points] },
        "layout": "row-major [y, x], as surface.npy",
        "lambda_max": cols[0], "lambda_max_residual": cols[1],
        "lambda_min": cols[2], "lambda_min_residual": cols[3],
        "trace": cols[4], "trace_std_error": cols[5],
        "method": format!("exact Hessian-vector products on the scan's data; Lanczos with {} steps from one random vector (Ritz values within their residuals of eigenvalues), Hutchinson with {} Rademacher probes", c.steps, c.probes),
    });
    let p = sweep_dir.join("curvature.json");
    crate::fsafe::write_atomic(&p, serde_json::to_vec_pretty(&j).expect("json"))
        .map_err(|e| format!("{}: {e}", p.display()))?;
    if let Some(ys) = &ys {
        for (file, title, z) in [
            ("curvature_lambda_max.png", "λmax of the Hessian", &cols[0]),
            ("curvature_trace.png", "trace of the Hessian", &cols[4]),
        ] {
            let labels = super::describe::labels(sweep_dir, spec, directions, title);
            crate::plot::map(&sweep_dir.join(file), &labels, z, &xs, ys)?;
        }
    }
    Ok(())
}

/// `connectivity.json`, `connectivity.png` and `connectivity_control.safetensors` from
/// the curve unit's
/// artifacts in `unit_dir`: the loss and error along the trained curve and along the
/// straight line, each with its standard barrier. `None` when the unit did not complete.
fn connecting_curve(
    sweep_dir: &Path,
    spec: &SweepSpec,
    c: &CurveSpec,
    unit_dir: &Path,
) -> Result<Option<serde_json::Value>, String> {
    let Ok(bytes) = crate::fsafe::read(unit_dir.join("curve.json")) else {
        return Ok(None);
    };
    let r: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("curve.json: {e}"))?;
    let v = |k: &str| -> Result<Vec<f64>, String> {
        serde_json::from_value(r[k].clone()).map_err(|e| format!("curve.json: {k}: {e}"))
    };
    let t = v("t")?;
    let (cl, ca, ll, la) = (
        v("curve_loss")?,
        v("curve_accuracy")?,
        v("line_loss")?,
        v("line_accuracy")?,
    );
    let j = serde_json::json!({
        "type": c.kind,
        "definition": "barrier: max over t of f(t) − [(1−t) f(0) + t f(1)] (Frankle et al. 2020), for the loss and the error 1 − accuracy",
        "training": {"epochs": c.epochs, "lr": c.lr, "batch_size": c.batch_size, "steps": r["steps"], "final_train_loss": r["final_train_loss"]},
        "t": t,
        "curve": {"loss": cl, "accuracy": ca, "barrier": barrier(&t, &cl, &ca)},
        "line": {"loss": ll, "accuracy": la, "barrier": barrier(&t, &ll, &la)},
    });
    let p = sweep_dir.join("connectivity.json");
    crate::fsafe::write_atomic(&p, serde_json::to_vec_pretty(&j).expect("json"))
        .map_err(|e| format!("{}: {e}", p.display()))?;
    let control = unit_dir.join("curve_control.safetensors");
    if let Ok(bytes) = crate::fsafe::read(&control) {
        let p = sweep_dir.join("connectivity_control.safetensors");
        crate::fsafe::write_atomic(&p, bytes).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    let err = |a: &[f64]| a.iter().map(|x| 1.0 - x).collect::<Vec<f64>>();
    crate::plot::connectivity(
        &sweep_dir.join("connectivity.png"),
        &format!(
            "{}: {} vs straight line",
            spec.name,
            match c.kind {
                CurveKind::Bezier => "trained Bézier curve",
                CurveKind::Polychain => "trained polygonal chain",
            }
        ),
        &t,
        [&cl, &ll],
        [&err(&ca), &err(&la)],
    )?;
    Ok(Some(j))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::landscape::TILE_FILE;

    #[test]
    fn barrier_of_a_bump_between_two_minima() {
        // L(α) = 1 + 4 α (1 - α) + 0.5 α on a grid that contains 0 and 1: endpoints 1 and
        // 1.5, the chord 1 + 0.5 α, so the rise above it is 4 α (1 - α): barrier 1 at
        // α = 0.5. The largest value is at α = 0.5625 (L = 2.265625), 1.015625 above the
        // endpoints' mean.
        let alphas: Vec<f64> = (0..=400).map(|i| -0.5 + 2.0 * i as f64 / 400.0).collect();
        let loss: Vec<f64> = alphas
            .iter()
            .map(|a| 1.0 + 4.0 * a * (1.0 - a) + 0.5 * a)
            .collect();
        // Accuracy 0.9 at the ends, dipping to 0.5 in the middle: error barrier 0.4.
        let acc: Vec<f64> = alphas.iter().map(|a| 0.9 - 1.6 * a * (1.0 - a)).collect();
        let b = barrier(&alphas, &loss, &acc);
        let f = |k: &str, m: &str| b[k][m].as_f64().unwrap();
        assert!((f("loss", "start") - 1.0).abs() < 1e-12);
        assert!((f("loss", "end") - 1.5).abs() < 1e-12);
        assert!((b["barrier"].as_f64().unwrap() - 1.0).abs() < 1e-12, "{b}");
        assert!((b["alpha"].as_f64().unwrap() - 0.5).abs() < 1e-12);
        assert!((f("loss", "alpha_at_max") - 0.5625).abs() < 0.0026);
        // The grid's best point is within one step of the true maximum.
        assert!((f("loss", "max_minus_endpoint_mean") - 1.015625).abs() < 1e-4);
        assert!((f("error", "barrier") - 0.4).abs() < 1e-12);
        assert!((f("error", "alpha") - 0.5).abs() < 1e-12);
        assert_eq!(b["curve"].as_array().unwrap().len(), 201);
    }

    /// A curve that rises monotonically and stays under its chord has no barrier,
    /// whatever its endpoints' difference (the old figure reported half of it).
    #[test]
    fn a_monotone_rise_has_no_barrier() {
        let alphas: Vec<f64> = (0..=20).map(|i| i as f64 / 20.0).collect();
        let loss: Vec<f64> = alphas.iter().map(|a| 0.3 + a * a).collect();
        let b = barrier(&alphas, &loss, &[]);
        assert_eq!(b["barrier"].as_f64().unwrap(), 0.0, "{b}");
        assert!((b["loss"]["max_minus_endpoint_mean"].as_f64().unwrap() - 0.5).abs() < 1e-12);
        assert!(b["error"].is_null());
    }

    #[test]
    fn npy_header_is_aligned_and_parsable() {
        let dir = tempfile::tempdir().unwrap();
        crate::fsafe::add_root(dir.path()).unwrap();
        let p = dir.path().join("a.npy");
        write_npy(&p, &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        let b = std::fs::read(&p).unwrap();
        assert_eq!(&b[..8], b"\x93NUMPY\x01\x00");
        let hl = u16::from_le_bytes([b[8], b[9]]) as usize;
        assert_eq!((10 + hl) % 64, 0);
        let header = std::str::from_utf8(&b[10..10 + hl]).unwrap();
        assert!(
            header.starts_with("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }"),
            "{header}"
        );
        assert!(header.ends_with('\n'));
        assert_eq!(
            f64::from_le_bytes(b[10 + hl + 8..10 + hl + 16].try_into().unwrap()),
            2.0
        );
        assert_eq!(b.len(), 10 + hl + 48);
    }

    /// Tile files whose loss at point k is k and accuracy k / 100.
    fn write_tiles(
        tile_dir: &dyn Fn(u32) -> std::path::PathBuf,
        tiles: &[(u32, std::ops::Range<usize>)],
    ) {
        for (t, range) in tiles {
            std::fs::create_dir_all(tile_dir(*t)).unwrap();
            let loss: Vec<f64> = range.clone().map(|k| k as f64).collect();
            let acc: Vec<f64> = range.clone().map(|k| k as f64 / 100.0).collect();
            let bytes: Vec<u8> = loss
                .iter()
                .chain(&acc)
                .flat_map(|v| v.to_le_bytes())
                .collect();
            std::fs::write(tile_dir(*t).join(TILE_FILE), bytes).unwrap();
        }
    }

    /// A 4 x 3 grid in tiles of 5, with `extra` lines in its `[landscape]`.
    fn small_scan(extra: &str) -> SweepSpec {
        SweepSpec::from_toml(&format!(
            r#"
name = "part"
kind = "landscape"
data = {{ path = "x.csv" }}
[landscape]
checkpoint = "ckpt"
tile = 5
x = {{ min = 0.0, max = 3.0, points = 4 }}
y = {{ min = 0.0, max = 2.0, points = 3 }}
{extra}
"#
        ))
        .unwrap()
    }

    /// Tiles appended to the scan's log as they arrived assemble as their files do
    /// (the last record of a tile wins); packing takes them in and removes the log,
    /// unless it holds a tile not packed; a logged tile of the wrong size is an error.
    #[test]
    fn tiles_from_the_log_assemble_as_from_files() {
        let spec = small_scan("vtp = false");
        let dir = tempfile::tempdir().unwrap();
        crate::fsafe::add_root(dir.path()).unwrap();
        let files_dir = |t: u32| dir.path().join(format!("f{t}"));
        let tiles = [(0u32, 0..5), (1, 5..10), (2, 10..12)];
        write_tiles(&files_dir, &tiles);
        let sub = |name: &str| {
            let d = dir.path().join(name);
            std::fs::create_dir_all(&d).unwrap();
            d
        };
        let (from_files, from_log) = (sub("files"), sub("log"));
        let run = |sweep: &std::path::Path, tile_dir: &dyn Fn(u32) -> std::path::PathBuf| {
            assemble(
                sweep,
                "s",
                &spec,
                serde_json::json!({}),
                &[0, 1, 2],
                tile_dir,
            )
        };
        run(&from_files, &files_dir).unwrap();
        // Tile 0 stays a file; 1 and 2 go to the log, 2 first with wrong values.
        let log_dir = |t: u32| dir.path().join(format!("l{t}"));
        write_tiles(&log_dir, &tiles[..1]);
        let mut log = super::super::TileLog::open(&from_log.join(super::super::TILE_LOG)).unwrap();
        log.append(2, &[0; 32], &[]).unwrap();
        for t in [1u32, 2] {
            log.append(
                t,
                &std::fs::read(files_dir(t).join(TILE_FILE)).unwrap(),
                &[],
            )
            .unwrap();
        }
        drop(log);
        run(&from_log, &log_dir).unwrap();
        let same = |f: &str| {
            assert_eq!(
                std::fs::read(from_log.join(f)).unwrap(),
                std::fs::read(from_files.join(f)).unwrap(),
                "{f}"
            );
        };
        for f in ["surface.npy", "accuracy.npy", "surface.csv"] {
            same(f);
        }
        // Packing leaves a log that holds a tile it did not pack (a resumed scan's).
        compact_tiles(&from_log, &spec, &[0, 1], log_dir).unwrap();
        assert!(from_log.join(super::super::TILE_LOG).exists());
        assert_eq!(
            compact_tiles(&from_log, &spec, &[0, 1, 2], log_dir).unwrap(),
            0
        );
        assert!(!from_log.join(super::super::TILE_LOG).exists());
        std::fs::remove_file(from_log.join("surface.npy")).unwrap();
        run(&from_log, &log_dir).unwrap();
        same("surface.npy");
        // A logged tile of the wrong size (a spec changed under a log, say).
        let mut log = super::super::TileLog::open(&from_log.join(super::super::TILE_LOG)).unwrap();
        log.append(1, &[0; 48], &[]).unwrap();
        drop(log);
        let e = run(&from_log, &log_dir).unwrap_err();
        assert!(e.contains("tile 1 has 48 + 0 bytes"), "{e}");
    }

    /// surface.vtp is written by default for a small grid and not when `vtp = false`;
    /// meta.json comes with both. Compacted, the tiles' files go (a tile folder with
    /// other files in it stays) and assembling again from the pack, with the surface
    /// files lost, gives the same files byte for byte.
    #[test]
    fn exports_follow_the_spec_and_compacted_tiles_assemble_the_same() {
        for (extra, vtp) in [("", true), ("vtp = false", false)] {
            let spec = small_scan(extra);
            let dir = tempfile::tempdir().unwrap();
            crate::fsafe::add_root(dir.path()).unwrap();
            let tile_dir = |t: u32| dir.path().join(format!("t{t}"));
            write_tiles(&tile_dir, &[(0u32, 0..5), (1, 5..10), (2, 10..12)]);
            std::fs::write(tile_dir(1).join("log.txt"), b"kept").unwrap();
            let run = || {
                assemble(
                    dir.path(),
                    "s",
                    &spec,
                    serde_json::json!({}),
                    &[0, 1, 2],
                    tile_dir,
                )
            };
            run().unwrap();
            assert_eq!(dir.path().join("surface.vtp").exists(), vtp, "{extra}");
            assert!(dir.path().join("meta.json").exists());
            assert!(dir.path().join("surface.h5").exists());
            let files = ["surface.npy", "accuracy.npy", "surface.csv", "meta.json"];
            let before: Vec<Vec<u8>> = files
                .iter()
                .map(|f| std::fs::read(dir.path().join(f)).unwrap())
                .collect();
            assert_eq!(
                compact_tiles(dir.path(), &spec, &[0, 1, 2], tile_dir).unwrap(),
                3
            );
            assert!(!tile_dir(0).exists() && !tile_dir(2).exists());
            assert!(!tile_dir(1).join(TILE_FILE).exists());
            assert!(tile_dir(1).join("log.txt").exists());
            for f in files {
                std::fs::remove_file(dir.path().join(f)).unwrap();
            }
            run().unwrap();
            for (f, b) in files.iter().zip(&before) {
                assert_eq!(&std::fs::read(dir.path().join(f)).unwrap(), b, "{f}");
            }
            // A tile computed after (a resumed scan) joins the packed ones; compacting
            // again keeps them all.
            write_tiles(&tile_dir, &[(1, 5..10)]);
            assert_eq!(
                compact_tiles(dir.path(), &spec, &[0, 1, 2], tile_dir).unwrap(),
                1
            );
            run().unwrap();
            assert_eq!(
                std::fs::read(dir.path().join("surface.npy")).unwrap(),
                before[0]
            );
            // A damaged pack is an error, not a surface of NaNs.
            let pack = dir.path().join(super::super::tiles::PACK);
            let mut b = std::fs::read(&pack).unwrap();
            b.pop();
            std::fs::write(&pack, b).unwrap();
            let e = run().unwrap_err();
            assert!(e.contains("expected"), "{e}");
        }
    }

    #[test]
    fn a_partial_scan_writes_the_computed_points_only() {
        let spec = small_scan("");
        let dir = tempfile::tempdir().unwrap();
        crate::fsafe::add_root(dir.path()).unwrap();
        let tile_dir = |t: u32| dir.path().join(format!("t{t}"));
        // Tiles 0 (points 0..5) and 2 (points 10..12) computed; tile 1 never ran.
        write_tiles(&tile_dir, &[(0u32, 0..5), (2, 10..12)]);
        assemble(
            dir.path(),
            "part",
            &spec,
            serde_json::json!({}),
            &[2, 0],
            tile_dir,
        )
        .unwrap();
        let read = |name: &str| -> Vec<f64> {
            let b = std::fs::read(dir.path().join(name)).unwrap();
            let hl = u16::from_le_bytes([b[8], b[9]]) as usize;
            b[10 + hl..]
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                .collect()
        };
        let surface = read("surface.npy");
        assert_eq!(surface.len(), 12);
        for (k, v) in surface.iter().enumerate() {
            match k {
                5..=9 => assert!(v.is_nan(), "point {k} was never computed"),
                _ => assert_eq!(*v, k as f64),
            }
        }
        // points.npy: [7, 4] rows (x, y, loss, accuracy), grid order.
        let points = read("points.npy");
        assert_eq!(points.len(), 7 * 4);
        let row = |i: usize| &points[4 * i..4 * i + 4];
        // Point 11 is row 2 (y = 2), column 3 (x = 3).
        assert_eq!(row(6), &[3.0, 2.0, 11.0, 0.11]);
        let csv = std::fs::read_to_string(dir.path().join("surface.csv")).unwrap();
        assert_eq!(csv.lines().count(), 1 + 7);
        let meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("meta.json")).unwrap()).unwrap();
        assert_eq!(
            (
                meta["missing_tiles"].as_u64(),
                meta["computed_points"].as_u64()
            ),
            (Some(1), Some(7))
        );
    }
}
