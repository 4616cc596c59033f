//! The digits example's Hessian (examples/digits-landscape.toml, run end to end by
//! `ridgeline run`: grid search, scan, distributed Lanczos, Hutchinson and SLQ) against
//! the full Hessian of the same checkpoint on the same data, built in f64 in the test
//! column by column and diagonalised densely.

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use ridgeline_common::linalg::eigen::symmetric_eigen;
use ridgeline_common::spec::SweepSpec;
use ridgeline_worker::data;
use ridgeline_worker::models::ModelConfig;

fn f(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn the_digits_example_hessian_matches_the_full_hessian() {
    let dir = KeptOnFailure::new();
    let out = dir.path().join("out");
    run_example("digits-landscape.toml", &out);
    let scan = sweep_with(&out, "hessian.json");
    let h: serde_json::Value =
        serde_json::from_slice(&std::fs::read(scan.join("hessian.json")).unwrap()).unwrap();

    // The scanned checkpoint, in f64, and the training split of the grid's data.
    let config: ModelConfig =
        serde_json::from_slice(&std::fs::read(scan.join("model.json")).unwrap()).unwrap();
    let tensors =
        candle_core::safetensors::load(scan.join("model.safetensors"), &Device::Cpu).unwrap();
    let model = config.load(&tensors, DType::F64, &Device::Cpu).unwrap();
    let spec = SweepSpec::from_file(&root().join("examples/digits-grid.toml")).unwrap();
    let ds = data::load(spec.data(), spec.data_format()).unwrap();
    let tr = &ds.train;
    let x = Tensor::from_slice(&tr.x, (tr.len(), tr.dim), &Device::Cpu).unwrap();
    let y = Tensor::from_slice(&tr.y, tr.len(), &Device::Cpu).unwrap();
    let n: usize = model.params().iter().map(|p| p.var.elem_count()).sum();
    assert_eq!(f(&h["parameters"]) as usize, n);

    // H e_i for every unit vector: the full Hessian, then all its eigenvalues.
    let hm = full_hessian(model.as_ref(), &x, &y);
    let asym = (0..n)
        .flat_map(|i| (0..i).map(move |j| (i, j)))
        .map(|(i, j)| (hm[i][j] - hm[j][i]).abs())
        .fold(0.0, f64::max);
    assert!(asym < 1e-12, "the Hessian is not symmetric: {asym}");
    let trace: f64 = (0..n).map(|i| hm[i][i]).sum();
    let (eig, _) = symmetric_eigen(hm);
    let (lmin, negatives) = (eig[0], eig.iter().filter(|l| **l < 0.0).count());
    let top: Vec<f64> = eig.iter().rev().take(3).copied().collect();
    eprintln!(
        "exact: trace {trace}, top {top:?}, λmin {lmin}, {negatives} negative of {n}; reported: {}",
        serde_json::to_string(&h)
            .unwrap()
            .chars()
            .take(600)
            .collect::<String>()
    );

    // Top-k and λmin: converged, and within their residuals of the true values.
    assert_eq!(h["converged"], true);
    let reported = h["top_eigenvalues"].as_array().unwrap();
    assert_eq!(reported.len(), 3);
    for (r, want) in reported.iter().zip(&top) {
        assert_eq!(r["converged"], true);
        let (v, res) = (f(&r["value"]), f(&r["residual"]));
        assert!((v - want).abs() <= res + 1e-12, "top {v} ± {res} vs {want}");
    }
    let (v, res) = (
        f(&h["lambda_min"]["value"]),
        f(&h["lambda_min"]["residual"]),
    );
    assert_eq!(h["lambda_min"]["converged"], true);
    assert!(
        (v - lmin).abs() <= res + 1e-12,
        "λmin {v} ± {res} vs {lmin}"
    );
    // Interlacing: a Ritz value is never below the smallest eigenvalue.
    assert!(v >= lmin - 1e-12);

    // Hutchinson's trace and the density's mean, each within 3 standard errors.
    let (est, se) = (f(&h["trace"]["estimate"]), f(&h["trace"]["std_error"]));
    assert!(
        (est - trace).abs() <= 3.0 * se,
        "trace {est} ± {se} vs {trace}"
    );
    let d = &h["density"];
    let (est, se) = (
        f(&d["trace_estimate"]["estimate"]),
        f(&d["trace_estimate"]["std_error"]),
    );
    assert!(
        (est - trace).abs() <= 3.0 * se,
        "SLQ trace {est} ± {se} vs {trace}"
    );
    // The smoothed density integrates to 1 and puts the mass where the spectrum is:
    // the fraction of it below zero matches the fraction of negative eigenvalues
    // within a few percent (the Gaussian smoothing spills across zero).
    let grid: Vec<f64> = serde_json::from_value(d["eigenvalue"].clone()).unwrap();
    let rho: Vec<f64> = serde_json::from_value(d["density"].clone()).unwrap();
    let dx = grid[1] - grid[0];
    let mass: f64 = rho.iter().sum::<f64>() * dx;
    assert!((mass - 1.0).abs() < 1e-3, "density mass {mass}");
    assert!(scan.join("esd.png").exists());

    // The curvature map's centre (point 12 of the 5 x 5 sub-grid over [-1, 1]²) is this
    // same Hessian: its λmax within the residual, its trace within 3 standard errors.
    let c: serde_json::Value =
        serde_json::from_slice(&std::fs::read(scan.join("curvature.json")).unwrap()).unwrap();
    assert_eq!((f(&c["x"][2]), f(&c["y"][2])), (0.0, 0.0));
    let (v, res) = (f(&c["lambda_max"][12]), f(&c["lambda_max_residual"][12]));
    assert!(
        (v - top[0]).abs() <= res + 1e-9,
        "centre λmax {v} ± {res} vs {}",
        top[0]
    );
    let (est, se) = (f(&c["trace"][12]), f(&c["trace_std_error"][12]));
    assert!(
        (est - trace).abs() <= 3.0 * se,
        "centre trace {est} ± {se} vs {trace}"
    );
    // A corner of the map was computed too.
    let corner = f(&c["lambda_max"][0]);
    assert!(
        corner.is_finite() && corner > 0.0,
        "λmax at (-1, -1): {corner}"
    );
    assert!(scan.join("curvature_lambda_max.png").exists());
    assert!(scan.join("curvature_trace.png").exists());
}
