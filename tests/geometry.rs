//! `[train.geometry]`: every trial of examples/digits-flatness.toml (run end to end by
//! `ridgeline run`) reports its Hessian's top eigenvalue and trace; each is checked
//! against the full Hessian of that trial's checkpoint on the same 500 samples, built in
//! f64 in the test column by column and diagonalised densely, and against a landscape
//! sweep's Hessian (block Lanczos, Hutchinson) of the same checkpoint and samples.

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use ridgeline_common::linalg::eigen::symmetric_eigen;
use ridgeline_common::spec::SweepSpec;
use ridgeline_worker::data;
use ridgeline_worker::models::ModelConfig;

#[test]
fn each_trials_hessian_metrics_match_its_full_hessian() {
    let dir = KeptOnFailure::new();
    let out = dir.path().join("out");
    run_example("digits-flatness.toml", &out);
    let sweep = sweep_with(&out, "results.json");
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(sweep.join("results.json")).unwrap()).unwrap();
    let spec = SweepSpec::from_file(&root().join("examples/digits-flatness.toml")).unwrap();
    let ds = data::load(spec.data(), spec.data_format()).unwrap();
    let rows = ds.train.head(500);
    let x = Tensor::from_slice(&rows.x, (rows.len(), rows.dim), &Device::Cpu).unwrap();
    let y = Tensor::from_slice(&rows.y, rows.len(), &Device::Cpu).unwrap();
    let trials = results["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 4);
    let mut traces = Vec::new();
    for t in trials {
        let m = &t["metrics"];
        let get = |k: &str| {
            m[k].as_f64()
                .unwrap_or_else(|| panic!("trial {}: no {k} in {m}", t["trial"]))
        };
        let n = t["trial"].as_u64().unwrap() as u32;
        let folder = sweep.join("trials").join(format!("{n:05}"));
        let config: ModelConfig =
            serde_json::from_slice(&std::fs::read(folder.join("model.json")).unwrap()).unwrap();
        let tensors =
            candle_core::safetensors::load(folder.join("model.safetensors"), &Device::Cpu).unwrap();
        let model = config.load(&tensors, DType::F64, &Device::Cpu).unwrap();
        let hm = full_hessian(model.as_ref(), &x, &y);
        let size = hm.len();
        let trace: f64 = (0..size).map(|i| hm[i][i]).sum();
        let (eig, _) = symmetric_eigen(hm);
        let top = *eig.last().unwrap();
        let (lmax, res) = (
            get("hessian_lambda_max"),
            get("hessian_lambda_max_residual"),
        );
        assert!(
            (lmax - top).abs() <= res + 1e-9 * top.abs(),
            "trial {n}: λmax {lmax} ± {res} vs {top}"
        );
        let (tr, se) = (get("hessian_trace"), get("hessian_trace_std_error"));
        assert!(
            (tr - trace).abs() <= 3.0 * se,
            "trial {n}: trace {tr} ± {se} vs {trace}"
        );
        traces.push(trace);
    }
    // The trials differ in how flat they end: the metric tells them apart.
    let (lo, hi) = traces
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &t| (a.min(t), b.max(t)));
    assert!(hi > 1.2 * lo, "traces {traces:?}");
    // And as the issue asks: a landscape sweep's Hessian of each trial's checkpoint, on
    // the same 500 training samples (`ridgeline run` reuses the finished search), agrees
    // with what the trial reported, within their errors.
    for t in trials {
        let n = t["trial"].as_u64().unwrap();
        let spec = dir.path().join(format!("hessian-{n}.toml"));
        std::fs::write(
            &spec,
            format!(
                r#"name = "flat-hessian-{n}"
kind = "landscape"
[data]
path = "{data}"
[landscape]
train = "{train}"
checkpoint = "trial:{n}"
split = "train"
samples = 500
x = {{ min = -0.1, max = 0.1, points = 3 }}
[landscape.hessian]
top_k = 1
block = 2
probes = 64
shards = 1
"#,
                data = root().join("examples/data/digits.csv.gz").display(),
                train = root().join("examples/digits-flatness.toml").display(),
            ),
        )
        .unwrap();
        run_ok(
            &[
                "run",
                spec.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
            std::time::Duration::from_secs(600),
        );
        let scan = std::fs::read_dir(out.join("sweeps"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(&format!("flat-hessian-{n}-"))
            })
            .unwrap();
        let h: serde_json::Value =
            serde_json::from_slice(&std::fs::read(scan.join("hessian.json")).unwrap()).unwrap();
        let top = &h["top_eigenvalues"][0];
        let (lam, lam_res) = (
            top["value"].as_f64().unwrap(),
            top["residual"].as_f64().unwrap(),
        );
        let m = &t["metrics"];
        let f = |k: &str| m[k].as_f64().unwrap();
        assert!(
            (f("hessian_lambda_max") - lam).abs()
                <= f("hessian_lambda_max_residual") + lam_res + 1e-9 * lam.abs(),
            "trial {n}: λmax {} vs the scan's {lam} ± {lam_res}",
            f("hessian_lambda_max")
        );
        let (tr, tr_se) = (
            h["trace"]["estimate"].as_f64().unwrap(),
            h["trace"]["std_error"].as_f64().unwrap(),
        );
        let se = f("hessian_trace_std_error").hypot(tr_se);
        assert!(
            (f("hessian_trace") - tr).abs() <= 3.0 * se,
            "trial {n}: trace {} vs the scan's {tr} (3σ = {})",
            f("hessian_trace"),
            3.0 * se
        );
    }
}
