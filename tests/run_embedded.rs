//! `ridgeline run`: the embedded coordinator and local workers in one process, and what
//! it leaves on disk.

mod common;

use std::time::Duration;

use candle_core::{D, DType, Device, Tensor};
use common::*;
use ridgeline_common::spec::SweepSpec;
use ridgeline_worker::data;
use ridgeline_worker::models::ModelConfig;

#[test]
fn run_writes_results_and_a_best_checkpoint_that_reproduces_its_score() {
    let dir = tempfile::tempdir().unwrap();
    let spec_path = root().join("examples/digits-grid.toml");
    let stdout = run_ok(
        &[
            "run",
            spec_path.to_str().unwrap(),
            "--workers",
            "2",
            "--out",
            dir.path().to_str().unwrap(),
        ],
        Duration::from_secs(600),
    );
    let best_line = stdout
        .lines()
        .find(|l| l.starts_with("best trial"))
        .unwrap_or_else(|| panic!("{stdout}"));
    // "best trial 7: val_accuracy=0.9889  lr=0.003 width=64"
    let reported: f64 = best_line
        .split("val_accuracy=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();

    assert!(dir.path().join("ridgeline.db").exists());
    let sweeps: Vec<_> = std::fs::read_dir(dir.path().join("sweeps"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(sweeps.len(), 1);
    let sweep_dir = &sweeps[0];
    let rows = csv::Reader::from_path(sweep_dir.join("results.csv"))
        .unwrap()
        .records()
        .count();
    assert_eq!(rows, 9);

    // Rebuild the best model from its checkpoint and score it on the validation split.
    let best = sweep_dir.join("best");
    let config: ModelConfig =
        serde_json::from_slice(&std::fs::read(best.join("model.json")).unwrap()).unwrap();
    let tensors =
        candle_core::safetensors::load(best.join("model.safetensors"), &Device::Cpu).unwrap();
    let model = config.load(&tensors, DType::F32, &Device::Cpu).unwrap();
    let spec = SweepSpec::from_file(&spec_path).unwrap();
    let ds = data::load(spec.data(), spec.data_format()).unwrap();
    // The normalisation stored with the weights is the one the split produces.
    let mean = tensors["input.mean"].to_vec1::<f32>().unwrap();
    assert_eq!(mean, ds.mean);
    let x = Tensor::from_slice(&ds.val.x, (ds.val.len(), ds.val.dim), &Device::Cpu).unwrap();
    let y = Tensor::from_slice(&ds.val.y, ds.val.len(), &Device::Cpu).unwrap();
    let pred = model.forward(&x, None).unwrap().argmax(D::Minus1).unwrap();
    let acc = pred
        .eq(&y)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .mean_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(
        (f64::from(acc) - reported).abs() < 1e-3,
        "checkpoint scores {acc}, run reported {reported}"
    );
    assert!(reported > 0.9);
}

/// Runs `ridgeline run` on a spec with this text; it must fail. Returns its stderr.
fn refused(text: &str) -> String {
    refused_in(tempfile::tempdir().unwrap().path(), "bad.toml", text)
}

/// [`refused`] with the spec written as `dir/name` (beside files it names).
fn refused_in(dir: &std::path::Path, name: &str, text: &str) -> String {
    let spec = dir.join(name);
    std::fs::write(&spec, text).unwrap();
    let out = run(
        &[
            "run",
            spec.to_str().unwrap(),
            "--out",
            dir.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    assert!(!out.status.success(), "a bad spec was accepted: {text}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_bad_spec_is_refused_with_the_field_named() {
    let err = refused(
        "name = \"bad\"\n[data]\npath = \"d.csv\"\n[search.space]\nlr = { type = \"loguniform\", low = -1.0, high = 0.1 }\n",
    );
    assert!(
        err.contains("bad.toml: search.space.lr: loguniform needs low > 0"),
        "{err}"
    );
    // A spec whose data file is missing names the field and the file.
    let err = refused("name = \"bad\"\n[data]\npath = \"nowhere.csv\"\n[search]\n");
    assert!(
        err.contains("bad.toml: data.path: file not found") && err.contains("nowhere.csv"),
        "{err}"
    );
    // A scan whose checkpoint folder is missing names it.
    let err = refused(
        "name = \"bad\"\nkind = \"landscape\"\n[data]\npath = \"bad.toml\"\n[landscape]\ncheckpoint = \"no-such-model\"\n",
    );
    assert!(
        err.contains("landscape.checkpoint: ")
            && err.contains("no-such-model: expected a .gguf file, or a folder with model.json"),
        "{err}"
    );
}

/// A checkpoint larger than one submission message is refused before it is sent, with
/// the way out, rather than with the transport's "h2 protocol error".
#[test]
fn a_checkpoint_too_large_to_submit_names_shared_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("big");
    std::fs::create_dir(&model).unwrap();
    std::fs::write(model.join("model.json"), "{}").unwrap();
    // Sparse: 300 MiB to read, nothing on disk.
    let f = std::fs::File::create(model.join("model.safetensors")).unwrap();
    f.set_len(300 << 20).unwrap();
    let err = refused_in(
        dir.path(),
        "big.toml",
        "name = \"big\"\nkind = \"landscape\"\n[data]\npath = \"big.toml\"\n[landscape]\ncheckpoint = \"big\"\n",
    );
    assert!(
        err.contains("big.toml: landscape.checkpoint: its files take 300 MiB, more than a submission carries (256 MiB)")
            && err.contains("landscape.shared_checkpoint = true"),
        "{err}"
    );
}

#[test]
fn built_in_trials_are_pruned_by_the_median_rule_and_keep_their_history() {
    let dir = tempfile::tempdir().unwrap();
    let spec = digits_spec(dir.path(), "median", 12, 6);
    // lr from 1e-5 (hopeless in 6 epochs) to 1e-1, and the median rule after 3
    // completed trials.
    let text = std::fs::read_to_string(&spec)
        .unwrap()
        .replace("low = 1e-3, high = 1e-2", "low = 1e-5, high = 1e-1")
        + "[search.scheduler]\ntype = \"median\"\nn_startup_trials = 3\n";
    std::fs::write(&spec, text).unwrap();
    let r = run_embedded(&spec, 2, &dir.path().join("out"), Duration::from_secs(300));
    let trials = r["trials"].as_array().unwrap();
    let pruned: Vec<_> = trials.iter().filter(|t| t["state"] == "pruned").collect();
    let completed: Vec<_> = trials
        .iter()
        .filter(|t| t["state"] == "completed")
        .collect();
    assert!(!pruned.is_empty() && completed.len() >= 3, "{r}");
    assert_eq!(pruned.len() + completed.len(), 12, "{r}");
    for t in &pruned {
        let h = t["history"].as_array().unwrap();
        assert!(!h.is_empty() && h.len() < 6, "{t}");
        // Its final metrics are its last report's.
        assert_eq!(
            t["metrics"]["val_accuracy"],
            h.last().unwrap()["val_accuracy"],
            "{t}"
        );
        assert!(
            t["error"]
                .as_str()
                .unwrap()
                .starts_with("median: val_accuracy"),
            "{t}"
        );
        // No checkpoint: a pruned trial did not finish.
        assert!(t["checkpoint_dir"].is_null(), "{t}");
    }
    for t in &completed {
        assert_eq!(t["history"].as_array().unwrap().len(), 6, "{t}");
    }
}

/// The interpolation example: `run` trains the digits grid, scans trial 7 towards trial
/// 4 (`checkpoint = "trial:7"`), and lmc.json holds the standard barrier, 0 where the
/// curve stays under its chord and never above the old "max minus endpoints' mean".
#[test]
fn the_interpolation_example_scans_the_trial_it_names_and_reports_the_standard_barrier() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    run_example("digits-interpolation.toml", &out);
    let scan = sweep_with(&out, "lmc.json");
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(scan.join("meta.json")).unwrap()).unwrap();
    let ckpt = meta["spec"]["landscape"]["checkpoint"].as_str().unwrap();
    assert!(ckpt.ends_with("/trial/7"), "{ckpt}");
    let lmc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(scan.join("lmc.json")).unwrap()).unwrap();
    let curve = lmc["curve"].as_array().unwrap();
    // The barrier recomputed here from the curve: the largest rise above the chord.
    let f = |k: &str| -> Vec<(f64, f64)> {
        curve
            .iter()
            .map(|p| (p["alpha"].as_f64().unwrap(), p[k].as_f64().unwrap()))
            .collect()
    };
    for key in ["loss", "error"] {
        let c = f(key);
        let (f0, f1) = (c[0].1, c[c.len() - 1].1);
        let want = c
            .iter()
            .map(|(a, v)| v - ((1.0 - a) * f0 + a * f1))
            .fold(0.0, f64::max);
        let got = lmc[key]["barrier"].as_f64().unwrap();
        assert!((got - want).abs() < 1e-12, "{key}: {got} vs {want}");
        assert!(
            got <= lmc[key]["max_minus_endpoint_mean"].as_f64().unwrap()
                + (f1 - f0).abs() / 2.0
                + 1e-12
        );
    }
    assert_eq!(lmc["barrier"], lmc["loss"]["barrier"]);
}

/// The intrinsic-dimension example: every subspace trial's weights differ from the
/// shared initialisation θ₀ only inside the span of its projection (regenerated here from
/// the seed), and intrinsic.json's d_int90 is the smallest d whose accuracy, read from
/// results.csv, reaches 90 % of the full model's.
#[test]
fn subspace_trials_stay_in_their_subspace_and_d_int90_follows_the_results() {
    use ridgeline_common::linalg::{dot, orthonormalise};
    use ridgeline_common::spec::Projection;
    use ridgeline_worker::subspace::Matrix;
    let dir = tempfile::tempdir().unwrap();
    let spec_path = root().join("examples/digits-intrinsic.toml");
    let stdout = run_ok(
        &[
            "run",
            spec_path.to_str().unwrap(),
            "--out",
            dir.path().to_str().unwrap(),
        ],
        Duration::from_secs(900),
    );
    let sweep = std::fs::read_dir(dir.path().join("sweeps"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut rows: Vec<(u32, usize, f64)> = Vec::new();
    for r in csv::Reader::from_path(sweep.join("results.csv"))
        .unwrap()
        .deserialize::<std::collections::HashMap<String, String>>()
    {
        let r = r.unwrap();
        assert_eq!(r["state"], "completed");
        rows.push((
            r["trial"].parse().unwrap(),
            r["subspace_dim"].parse().unwrap(),
            r["val_accuracy"].parse().unwrap(),
        ));
    }
    let full = rows.iter().find(|r| r.1 == 0).unwrap().2;
    let want = rows
        .iter()
        .filter(|r| r.1 > 0 && r.2 >= 0.9 * full)
        .map(|r| r.1)
        .min();
    let j: serde_json::Value =
        serde_json::from_slice(&std::fs::read(sweep.join("intrinsic.json")).unwrap()).unwrap();
    assert_eq!(j["d_int"].as_u64().map(|d| d as usize), want, "{j}");
    assert!(want.is_some(), "some subspace reaches 90 %: {j}");
    assert!(
        stdout.contains("intrinsic dimension: d_int90 ="),
        "{stdout}"
    );
    assert!(sweep.join("intrinsic.png").exists());

    // θ − θ₀ of the d = 10 trial lies in the span of P's 10 columns.
    let spec = SweepSpec::from_file(&spec_path).unwrap();
    let (trial, d, _) = *rows.iter().find(|r| r.1 == 10).unwrap();
    let ckpt = sweep.join(format!("trials/{trial:05}"));
    let config: ModelConfig =
        serde_json::from_slice(&std::fs::read(ckpt.join("model.json")).unwrap()).unwrap();
    let trained = config
        .load(
            &candle_core::safetensors::load(ckpt.join("model.safetensors"), &Device::Cpu).unwrap(),
            DType::F64,
            &Device::Cpu,
        )
        .unwrap();
    let init = config
        .init(spec.train.seed, DType::F64, &Device::Cpu)
        .unwrap();
    let flat = |m: &dyn ridgeline_worker::models::Model| -> Vec<f64> {
        m.trainable()
            .iter()
            .flat_map(|v| v.flatten_all().unwrap().to_vec1::<f64>().unwrap())
            .collect()
    };
    let delta: Vec<f64> = flat(trained.as_ref())
        .iter()
        .zip(flat(init.as_ref()))
        .map(|(a, b)| a - b)
        .collect();
    let p = Matrix::new(Projection::Dense, delta.len(), d, spec.train.seed).unwrap();
    let cols: Vec<Vec<f64>> = (0..d)
        .map(|c| {
            let mut e = vec![0f32; d];
            e[c] = 1.0;
            p.apply(&e).iter().map(|v| f64::from(*v)).collect()
        })
        .collect();
    let basis = orthonormalise(&[], cols);
    let mut rest = delta.clone();
    for b in &basis {
        let c = dot(&rest, b);
        rest.iter_mut().zip(b).for_each(|(r, b)| *r -= c * b);
    }
    let (moved, off) = (dot(&delta, &delta).sqrt(), dot(&rest, &rest).sqrt());
    assert!(moved > 0.1, "the trial trained: ‖θ − θ₀‖ = {moved}");
    // f32 weights: the part outside the subspace is rounding.
    assert!(
        off < 1e-5 * moved,
        "‖outside‖ = {off} of ‖θ − θ₀‖ = {moved}"
    );
}

/// Mode connectivity: the curve example joins two seeds' MLPs. Its endpoints are the
/// line's bit for bit, the line matches the 1-D scan at the same α, the loss at the
/// curve's midpoint recomputed here from the three checkpoints (f64) matches, both
/// barriers follow from the curves, and the trained curve's barrier is far below the
/// line's.
#[test]
fn a_trained_bezier_curve_connects_two_seeds_below_the_line() {
    let dir = tempfile::tempdir().unwrap();
    run_example("digits-curve.toml", dir.path());
    let scan = sweep_with(dir.path(), "connectivity.json");
    let train = sweep_with(dir.path(), "results.csv");
    let j: serde_json::Value =
        serde_json::from_slice(&std::fs::read(scan.join("connectivity.json")).unwrap()).unwrap();
    let v = |a: &serde_json::Value| -> Vec<f64> { serde_json::from_value(a.clone()).unwrap() };
    let t = v(&j["t"]);
    let (cl, ll) = (v(&j["curve"]["loss"]), v(&j["line"]["loss"]));
    let (ca, la) = (v(&j["curve"]["accuracy"]), v(&j["line"]["accuracy"]));
    assert_eq!((t.len(), t[0], t[20]), (21, 0.0, 1.0));
    assert_eq!((cl[0], cl[20], ca[0]), (ll[0], ll[20], la[0]));

    // The line against the tile scan: x runs from -0.25 by 0.05, so t = k/20 is x[k + 5].
    let (_, surface) = read_npy(&scan.join("surface.npy"));
    for k in 0..21 {
        assert!(
            (surface[k + 5] - ll[k]).abs() <= 1e-5 * ll[k],
            "t = {}: line {} vs scan {}",
            t[k],
            ll[k],
            surface[k + 5]
        );
    }
    for (name, loss, acc) in [("curve", &cl, &ca), ("line", &ll, &la)] {
        for (key, f) in [
            ("loss", loss.clone()),
            ("error", acc.iter().map(|a| 1.0 - a).collect::<Vec<_>>()),
        ] {
            let chord = |k: usize| (1.0 - t[k]) * f[0] + t[k] * f[20];
            let want = (0..21).map(|k| f[k] - chord(k)).fold(0.0, f64::max);
            let got = j[name]["barrier"][key]["barrier"].as_f64().unwrap();
            assert!((got - want).abs() < 1e-12, "{name} {key}: {got} vs {want}");
        }
    }
    let (cb, lb) = (
        j["curve"]["barrier"]["loss"]["barrier"].as_f64().unwrap(),
        j["line"]["barrier"]["loss"]["barrier"].as_f64().unwrap(),
    );
    assert!(
        lb > 0.05,
        "two seeds are separated by a barrier on the line: {lb}"
    );
    assert!(
        cb < 0.25 * lb,
        "the trained curve goes around it: {cb} vs {lb}"
    );

    // φ(0.5) = θ₀/4 + θ_c/2 + θ₁/4 evaluated here, on the validation split.
    let load = |p: std::path::PathBuf| candle_core::safetensors::load(p, &Device::Cpu).unwrap();
    let (a, b, c) = (
        load(train.join("trials/00000/model.safetensors")),
        load(train.join("trials/00001/model.safetensors")),
        load(scan.join("connectivity_control.safetensors")),
    );
    let mid: std::collections::HashMap<String, Tensor> = c
        .iter()
        .map(|(k, tc)| {
            let f = |t: &Tensor| t.to_dtype(DType::F64).unwrap();
            let m = ((f(&a[k]) * 0.25).unwrap() + (f(tc) * 0.5).unwrap()).unwrap();
            (k.clone(), (m + (f(&b[k]) * 0.25).unwrap()).unwrap())
        })
        .collect();
    let config: ModelConfig =
        serde_json::from_slice(&std::fs::read(train.join("trials/00000/model.json")).unwrap())
            .unwrap();
    let model = config.load(&mid, DType::F64, &Device::Cpu).unwrap();
    let spec = SweepSpec::from_file(&root().join("examples/digits-seeds.toml")).unwrap();
    let ds = data::load(spec.data(), spec.data_format()).unwrap();
    let x = Tensor::from_slice(&ds.val.x, (ds.val.len(), ds.val.dim), &Device::Cpu)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap();
    let y = Tensor::from_slice(&ds.val.y, ds.val.len(), &Device::Cpu).unwrap();
    let logits = model.forward(&x, None).unwrap();
    let loss = candle_nn::loss::cross_entropy(&logits, &y)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    assert!(
        (loss - cl[10]).abs() <= 1e-4 * loss,
        "midpoint loss {loss} vs connectivity.json {}",
        cl[10]
    );
}
