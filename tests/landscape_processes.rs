//! Landscape scans across real worker processes: the surface of a linear regression
//! (exactly quadratic in the two step sizes) matches the closed form, and a scan split
//! over three workers is bit-for-bit the scan on one.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use candle_core::{Device, Tensor};
use common::*;
use ridgeline_common::spec::SweepSpec;

fn to_f64(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(candle_core::DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Regression data, a linear model's checkpoint and a 7x4 scan of it.
fn setup(dir: &Path) -> std::path::PathBuf {
    scan_fixture(dir, 0, 7, 4, 5)
}

fn scan(url: &str, spec: &Path, data_dir: &Path) -> std::path::PathBuf {
    let id = run_ok(
        &[
            "submit",
            spec.to_str().unwrap(),
            "--coordinator",
            url,
            "--wait",
        ],
        Duration::from_secs(300),
    );
    let id = id.trim();
    let st = run_ok(
        &["status", id, "--coordinator", url],
        Duration::from_secs(30),
    );
    // A scan's status in its own words: points and tiles, the lowest loss by where it
    // lies and what it was evaluated on.
    assert!(st.contains("completed: 28/28 points in 6/6 tiles"), "{st}");
    assert!(
        st.contains("lowest loss ") && st.contains(" at (x, y) = ("),
        "{st}"
    );
    assert!(!st.contains("units completed"), "{st}");
    data_dir.join("sweeps").join(id)
}

#[test]
fn distributed_scan_matches_closed_form_and_is_bit_identical_to_one_worker() {
    let dir = tempfile::tempdir().unwrap();
    let spec_path = setup(dir.path());
    let (_coord, url) = coordinator(dir.path(), &[]);
    let mut workers: Vec<Proc> = (0..3)
        .map(|i| {
            spawn(
                &format!("w{i}"),
                &["worker", "--coordinator", &url, "--name", &format!("w{i}")],
                dir.path(),
            )
        })
        .collect();
    let three = scan(&url, &spec_path, dir.path());

    let (shape, loss) = read_npy(&three.join("surface.npy"));
    assert_eq!(shape, vec![4, 7], "rows are y, columns are x");
    let (_, xs) = read_npy(&three.join("x.npy"));
    let (_, ys) = read_npy(&three.join("y.npy"));
    assert_eq!(
        (xs.len(), ys.len(), xs[0], xs[6], ys[0], ys[3]),
        (7, 4, -1.0, 1.0, -0.5, 1.5)
    );

    // Closed form in f64: r(α, β) = e0 + α e1 + β e2 over the training split, where
    // e0 = X wᵀ + b - t and e_i = X d_iᵀ + db_i; L = mean(r²).
    let spec = SweepSpec::from_file(&spec_path).unwrap();
    let ds = ridgeline_worker::data::load(spec.data(), spec.data_format()).unwrap();
    let tr = &ds.train;
    let st =
        candle_core::safetensors::load(dir.path().join("linear/model.safetensors"), &Device::Cpu)
            .unwrap();
    let dirs =
        candle_core::safetensors::load(three.join("directions.safetensors"), &Device::Cpu).unwrap();
    let lin = |w: &str, b: &str, t: &HashMap<String, Tensor>| -> Vec<f64> {
        let (w, b) = (to_f64(&t[w]), to_f64(&t[b])[0]);
        (0..tr.len())
            .map(|s| {
                b + (0..tr.dim)
                    .map(|j| w[j] * f64::from(tr.x[s * tr.dim + j]))
                    .sum::<f64>()
            })
            .collect()
    };
    let e0: Vec<f64> = lin("layers.0.weight", "layers.0.bias", &st)
        .iter()
        .zip(&tr.t)
        .map(|(p, t)| p - f64::from(*t))
        .collect();
    let e1 = lin("x.layers.0.weight", "x.layers.0.bias", &dirs);
    let e2 = lin("y.layers.0.weight", "y.layers.0.bias", &dirs);
    let m =
        |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(p, q)| p * q).sum::<f64>() / tr.len() as f64;
    let (c00, c11, c22, c01, c02, c12) = (
        m(&e0, &e0),
        m(&e1, &e1),
        m(&e2, &e2),
        m(&e0, &e1),
        m(&e0, &e2),
        m(&e1, &e2),
    );
    for (i, &b) in ys.iter().enumerate() {
        for (j, &a) in xs.iter().enumerate() {
            let exact = c00 + a * a * c11 + b * b * c22 + 2.0 * (a * c01 + b * c02 + a * b * c12);
            let got = loss[i * 7 + j];
            assert!(
                (got - exact).abs() <= 1e-5 * exact,
                "({a}, {b}): scan {got}, closed form {exact}"
            );
        }
    }
    // surface.h5 and surface.vtp, read back by h5py and Python's XML parser.
    let e = python_json(&[
        root().join("tests/read_exports.py").as_os_str(),
        three.as_os_str(),
    ]);
    let values = |v: &serde_json::Value| -> Vec<f64> {
        v["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap_or(f64::NAN))
            .collect()
    };
    assert_eq!(
        e["keys"],
        serde_json::json!(["train_acc", "train_loss", "xcoordinates", "ycoordinates"])
    );
    assert_eq!(values(&e["xcoordinates"]), xs);
    assert_eq!(values(&e["ycoordinates"]), ys);
    // The reference's layout: shape (len(x), len(y)), values in meshgrid(x, y) order.
    assert_eq!(e["train_loss"]["shape"], serde_json::json!([7, 4]));
    assert_eq!(e["train_loss"]["dtype"], "float64");
    assert_eq!(values(&e["train_loss"]), loss);
    let v = &e["vtp"];
    assert_eq!(
        (v["points"].as_u64(), v["polys"].as_u64()),
        (Some(28), Some(18))
    );
    let f = |k: &str| -> Vec<f64> { serde_json::from_value(v[k].clone()).unwrap() };
    let (xyz, z) = (f("xyz"), f("zvalue"));
    assert_eq!(z, loss, "heights are the losses");
    for k in 0..28 {
        assert_eq!(
            (xyz[3 * k], xyz[3 * k + 1], xyz[3 * k + 2]),
            (xs[k % 7], ys[k / 7], loss[k])
        );
    }
    let conn: Vec<usize> = serde_json::from_value(v["connectivity"].clone()).unwrap();
    assert_eq!(&conn[..4], &[0, 1, 8, 7], "quads run along x, then y");
    assert_eq!(conn.len(), 72);
    assert_eq!(f("offsets").last(), Some(&72.0));
    let avg = f("averaged");
    assert!((avg[0] - (loss[0] + loss[1] + loss[8] + loss[7]) / 4.0).abs() < 1e-12);

    // The ignore = "none" choice copies the bias into its direction.
    assert_eq!(
        to_f64(&dirs["x.layers.0.bias"]),
        to_f64(&st["layers.0.bias"])
    );

    // The same scan on one worker: the same bits.
    for w in workers.drain(1..) {
        drop(w);
    }
    let one = scan(&url, &spec_path, dir.path());
    for f in ["surface.npy", "accuracy.npy", "directions.safetensors"] {
        assert_eq!(
            std::fs::read(three.join(f)).unwrap(),
            std::fs::read(one.join(f)).unwrap(),
            "{f} differs"
        );
    }
    let csv = std::fs::read_to_string(one.join("surface.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 28);
    assert!(
        csv.starts_with("x,y,loss,accuracy\n-1,-0.5,"),
        "{}",
        &csv[..40]
    );
}

/// The Hessian of a linear regression with MSE is (2/n)[XᵀX, Xᵀ1; 1ᵀX, n]: the
/// distributed block Lanczos (three shards on two workers) finds its top eigenvalues and
/// λmin within their stated residuals, and Hutchinson's trace is within its stated
/// standard error of the exact trace.
#[test]
fn distributed_hessian_of_a_linear_regression() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let spec_path = dir.path().join("hess.toml");
    let base = std::fs::read_to_string(dir.path().join("scan.toml")).unwrap();
    let text = base.replace("name = \"linreg-scan\"", "name = \"linreg-hessian\"")
        + "[landscape.hessian]\ntop_k = 3\nblock = 3\nrounds = 4\nprobes = 64\nshards = 3\n";
    std::fs::write(&spec_path, text).unwrap();
    let (_coord, url) = coordinator(dir.path(), &[]);
    let _w: Vec<Proc> = (0..2)
        .map(|i| {
            spawn(
                &format!("hw{i}"),
                &["worker", "--coordinator", &url, "--name", &format!("hw{i}")],
                dir.path(),
            )
        })
        .collect();
    let id = run_ok(
        &[
            "submit",
            spec_path.to_str().unwrap(),
            "--coordinator",
            &url,
            "--wait",
        ],
        Duration::from_secs(300),
    );
    let sweep_dir = dir.path().join("sweeps").join(id.trim());
    let h: serde_json::Value =
        serde_json::from_slice(&std::fs::read(sweep_dir.join("hessian.json")).unwrap()).unwrap();

    // The exact Hessian from the training split the workers used.
    let spec = SweepSpec::from_file(&spec_path).unwrap();
    let ds = ridgeline_worker::data::load(spec.data(), spec.data_format()).unwrap();
    let tr = &ds.train;
    let (n, d) = (tr.len(), tr.dim);
    let mut hm = vec![vec![0.0; d + 1]; d + 1];
    for s in 0..n {
        let row: Vec<f64> = tr.x[s * d..(s + 1) * d]
            .iter()
            .map(|v| f64::from(*v))
            .chain(std::iter::once(1.0))
            .collect();
        for i in 0..=d {
            for j in 0..=d {
                hm[i][j] += 2.0 / n as f64 * row[i] * row[j];
            }
        }
    }
    let exact_trace: f64 = (0..=d).map(|i| hm[i][i]).sum();
    let (mut exact, _) = ridgeline_common::linalg::eigen::jacobi_eigen(hm);
    exact.sort_by(|a, b| b.total_cmp(a));

    let top = h["top_eigenvalues"].as_array().unwrap();
    assert_eq!(top.len(), 3);
    for (t, want) in top.iter().zip(&exact) {
        let (v, r) = (
            t["value"].as_f64().unwrap(),
            t["residual"].as_f64().unwrap(),
        );
        assert!(
            (v - want).abs() <= r.max(1e-6 * want),
            "{v} ± {r} vs {want}"
        );
    }
    let lmin = &h["lambda_min"];
    let (v, r) = (
        lmin["value"].as_f64().unwrap(),
        lmin["residual"].as_f64().unwrap(),
    );
    let want = *exact.last().unwrap();
    assert!(
        (v - want).abs() <= r.max(1e-6 * want.abs().max(1e-3)),
        "λmin {v} ± {r} vs {want}"
    );
    let (est, se) = (
        h["trace"]["estimate"].as_f64().unwrap(),
        h["trace"]["std_error"].as_f64().unwrap(),
    );
    assert!(
        se > 0.0 && (est - exact_trace).abs() <= 4.0 * se,
        "trace {est} ± {se} vs {exact_trace}"
    );
    // Six parameters: two rounds of three vectors span the whole space, and the
    // remaining rounds are not needed.
    assert_eq!(h["krylov_dimension"], 6);
    assert_eq!(h["rounds"], 2);
}

/// kill -9 the coordinator in the middle of a scan and start it again on the same
/// database: the worker reconnects by itself, tiles finished before the crash are not
/// computed again, and the surface is complete.
#[test]
fn a_restarted_scan_only_computes_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let spec_path = dir.path().join("big.toml");
    let base = std::fs::read_to_string(dir.path().join("scan.toml")).unwrap();
    let text = base
        .replace("name = \"linreg-scan\"", "name = \"linreg-big\"")
        .replace(
            "x = { min = -1.0, max = 1.0, points = 7 }",
            "x = { min = -1.0, max = 1.0, points = 150 }",
        )
        .replace(
            "y = { min = -0.5, max = 1.5, points = 4 }",
            "y = { min = -0.5, max = 1.5, points = 100 }",
        )
        .replace("tile = 5", "tile = 10");
    std::fs::write(&spec_path, text).unwrap();
    let (mut coord, url) = coordinator(
        dir.path(),
        &["--lease-ttl-ms", "2000", "--heartbeat-interval-ms", "200"],
    );
    let addr = url.trim_start_matches("http://").to_owned();
    let _w = spawn(
        "worker",
        &["worker", "--coordinator", &url, "--name", "survivor"],
        dir.path(),
    );
    let id = submit(&spec_path, &url);
    // Tiles are written before the transaction that records them: a tile whose commit
    // the kill interrupted is not done (its worker resends it). Done is what the
    // database holds, with how many leases each took.
    let attempts = || -> std::collections::HashMap<i64, i64> {
        let db = rusqlite::Connection::open(dir.path().join("ridgeline.db")).unwrap();
        let mut st = db
            .prepare(
                "SELECT trial, attempts FROM units WHERE sweep_id = ?1 AND state = 'completed'",
            )
            .unwrap();
        st.query_map([&id], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    };
    // Let a part of the 1,500 tiles finish, then kill the coordinator without warning
    // (the database is the coordinator's while it runs; the tile log's length says how
    // many tiles came in: a header of 8 bytes, then 12 + 10 * 16 + 8 bytes a tile).
    let log = dir.path().join("sweeps").join(&id).join("tile_values.log");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        if std::fs::metadata(&log).map_or(0, |m| m.len()) >= 8 + 100 * 180 {
            coord.child.kill().unwrap();
            coord.child.wait().unwrap();
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the scan made no progress"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let committed = attempts();
    assert!(
        (50..1500).contains(&committed.len()),
        "{} tiles committed; the scan must be cut in its middle",
        committed.len()
    );
    // Same address, same database.
    let dd = dir.path().to_str().unwrap();
    let _coord2 = spawn(
        "coordinator2",
        &[
            "coordinator",
            "--listen",
            &addr,
            "--data-dir",
            dd,
            "--lease-ttl-ms",
            "2000",
            "--heartbeat-interval-ms",
            "200",
        ],
        dir.path(),
    );
    let st = run_ok(
        &["watch", &id, "--coordinator", &url],
        Duration::from_secs(300),
    );
    assert!(
        st.contains("completed: ") && st.contains(" points in 1500/1500 tiles"),
        "{st}"
    );
    let sweep_dir = dir.path().join("sweeps").join(&id);
    let (shape, loss) = read_npy(&sweep_dir.join("surface.npy"));
    assert_eq!(shape, vec![100, 150]);
    assert!(loss.iter().all(|v| v.is_finite()), "the surface has holes");

    // The surface files are lost: the next coordinator start writes them again from
    // the packed tile values.
    drop(_coord2);
    // Computed again would mean leased again (the coordinator holds the database while
    // it runs; the tiles' files are gone by now, packed into tile_values.bin).
    let after = attempts();
    for (t, n) in &committed {
        assert_eq!(after.get(t), Some(n), "tile {t} was computed again");
    }
    for f in ["surface.npy", "meta.json"] {
        std::fs::remove_file(sweep_dir.join(f)).unwrap();
    }
    let _coord3 = spawn(
        "coordinator3",
        &["coordinator", "--listen", &addr, "--data-dir", dd],
        dir.path(),
    );
    wait_for_file_to_exist(&sweep_dir.join("meta.json"), Duration::from_secs(60));
    assert_eq!(read_npy(&sweep_dir.join("surface.npy")).1, loss);
}

fn wait_for_file_to_exist(path: &Path, timeout: Duration) {
    let deadline = std::time::Instant::now() + timeout;
    while !path.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `split = "both"` evaluates every point on the training and the validation split: its
/// surface is, bit for bit, the scan on the training split, its val_surface.npy the scan
/// on the validation split, and its surface.h5 holds what the loss-landscape reference's
/// plot_1D.py reads (`train_loss`, `train_acc`, and `test_loss` beside them).
#[test]
fn a_scan_of_both_splits_is_the_two_scans_and_feeds_plot_1d() {
    let dir = tempfile::tempdir().unwrap();
    let spec = scan_fixture(dir.path(), 0, 9, 1, 4);
    let text = std::fs::read_to_string(&spec).unwrap();
    let one_d: String = text
        .lines()
        .filter(|l| !l.starts_with("y = "))
        .collect::<Vec<_>>()
        .join("\n");
    let sweep_dir = |split: &str| {
        let path = dir.path().join(format!("{split}.toml"));
        std::fs::write(
            &path,
            one_d.replace("split = \"train\"", &format!("split = \"{split}\"")),
        )
        .unwrap();
        let out = dir.path().join(format!("out-{split}"));
        let o = run_embedded_with(&path, 1, &out, Duration::from_secs(300), &[]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
        let only = std::fs::read_dir(out.join("sweeps"))
            .unwrap()
            .next()
            .unwrap();
        (only.unwrap().path(), stdout)
    };
    let (train, _) = sweep_dir("train");
    let (val, _) = sweep_dir("val");
    let (both, said) = sweep_dir("both");
    let bytes = |d: &Path, f: &str| std::fs::read(d.join(f)).unwrap();
    assert_eq!(bytes(&both, "surface.npy"), bytes(&train, "surface.npy"));
    assert_eq!(bytes(&both, "val_surface.npy"), bytes(&val, "surface.npy"));
    assert_eq!(
        bytes(&both, "val_accuracy.npy"),
        bytes(&val, "accuracy.npy")
    );
    assert_ne!(bytes(&train, "surface.npy"), bytes(&val, "surface.npy"));
    assert!(
        said.contains("of the train split (and the val split: val_surface.npy)"),
        "{said}"
    );
    assert!(said.contains("val_surface.npy"), "{said}");
    // What plot_1D.py does with the file: asserts train_loss, reads train_acc, and
    // draws test_loss when present.
    let script = r#"
import h5py, json, sys
f = h5py.File(sys.argv[1], "r")
assert "train_loss" in f.keys(), "'train_loss' does not exist"
x, train_loss, train_acc = f["xcoordinates"][:], f["train_loss"][:], f["train_acc"][:]
test_loss = f["test_loss"][:] if "test_loss" in f.keys() else None
print(json.dumps({"keys": sorted(f.keys()), "x": len(x), "acc": len(train_acc),
                  "train": train_loss.tolist(), "test": test_loss.tolist()}))
"#;
    let h5 = both.join("surface.h5");
    let e = python_json(&["-c".as_ref(), script.as_ref(), h5.as_os_str()]);
    assert_eq!(
        e["keys"],
        serde_json::json!([
            "test_acc",
            "test_loss",
            "train_acc",
            "train_loss",
            "xcoordinates"
        ])
    );
    assert_eq!((e["x"].as_u64(), e["acc"].as_u64()), (Some(9), Some(9)));
    let npy = |d: &Path, f: &str| -> Vec<f64> {
        let b = bytes(d, f);
        b[b.len() - 9 * 8..]
            .chunks(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    let as_vec = |v: &serde_json::Value| -> Vec<f64> { serde_json::from_value(v.clone()).unwrap() };
    assert_eq!(as_vec(&e["train"]), npy(&train, "surface.npy"));
    assert_eq!(as_vec(&e["test"]), npy(&val, "surface.npy"));
    assert!(both.join("curve.png").exists());
}

/// What a Python with h5py prints as JSON when run with `args`.
fn python_json(args: &[&std::ffi::OsStr]) -> serde_json::Value {
    let out = std::process::Command::new(python_with(&["h5py"]))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A scan over 2^16 points is assembled off the event loop: `ridgeline run` waits for
/// its meta.json and reports from it; its tile values are then packed into
/// tile_values.bin and the tile files removed; with the surface files lost, the next
/// run in the same folder assembles them again from the pack, the same bytes.
#[test]
fn a_large_scan_is_assembled_aside_and_packed_and_reassembles_from_the_pack() {
    let dir = tempfile::tempdir().unwrap();
    let spec = scan_fixture(dir.path(), 0, 300, 300, 1000);
    let out = dir.path().join("out");
    let run = || {
        let o = run_embedded_with(&spec, 2, &out, Duration::from_secs(300), &[]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let said = run();
    let sweep = sweep_with(&out, "meta.json");
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(sweep.join("meta.json")).unwrap()).unwrap();
    assert_eq!(meta["computed_points"], 90_000, "{meta}");
    assert_eq!(meta["missing_tiles"], 0);
    assert!(said.contains("lowest loss"), "{said}");
    let (shape, surface) = read_npy(&sweep.join("surface.npy"));
    assert_eq!(shape, vec![300, 300]);
    assert!(surface.iter().all(|v| v.is_finite()));
    // The default exports: no surface.vtp past 256 x 256.
    assert!(!sweep.join("surface.vtp").exists());
    wait_until(
        "the tile values to be packed",
        Duration::from_secs(60),
        || {
            sweep.join("tile_values.bin").exists()
                && !sweep.join("tile_values.log").exists()
                && !files_in(&sweep.join("trials"))
                    .iter()
                    .any(|f| f.ends_with("tile.f64"))
        },
    );
    assert_eq!(
        std::fs::metadata(sweep.join("tile_values.bin"))
            .unwrap()
            .len(),
        16 + 4 * 90 + 90_000 * 16
    );
    let csv = std::fs::read(sweep.join("surface.csv")).unwrap();
    for f in ["surface.npy", "surface.csv", "meta.json"] {
        std::fs::remove_file(sweep.join(f)).unwrap();
    }
    run();
    wait_for_file_to_exist(&sweep.join("meta.json"), Duration::from_secs(60));
    assert_eq!(read_npy(&sweep.join("surface.npy")).1, surface);
    assert_eq!(std::fs::read(sweep.join("surface.csv")).unwrap(), csv);
}
