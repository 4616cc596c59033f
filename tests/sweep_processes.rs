//! A coordinator process and two worker processes on 127.0.0.1 run the shipped 3x3
//! digits grid, submitted and read back through the CLI.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;

#[test]
fn grid_sweep_across_two_worker_processes() {
    let dir = tempfile::tempdir().unwrap();
    let (_coord, url) = coordinator(dir.path(), &[]);
    let _w1 = spawn(
        "worker1",
        &["worker", "--coordinator", &url, "--name", "alpha"],
        dir.path(),
    );
    let _w2 = spawn(
        "worker2",
        &["worker", "--coordinator", &url, "--name", "beta"],
        dir.path(),
    );

    let spec = root().join("examples/digits-grid.toml");
    let sweep = submit_wait(&spec, &url, Duration::from_secs(600));
    assert!(sweep.starts_with("digits-grid-"), "{sweep}");

    let status = run_ok(
        &["status", &sweep, "--coordinator", &url],
        Duration::from_secs(30),
    );
    assert!(
        status.contains("completed: 9/9 trials completed"),
        "{status}"
    );

    // results.csv: one row per trial, each (lr, width) exactly once.
    let csv_path = dir.path().join("results.csv");
    run_ok(
        &[
            "results",
            &sweep,
            "--coordinator",
            &url,
            "--format",
            "csv",
            "-o",
            csv_path.to_str().unwrap(),
        ],
        Duration::from_secs(30),
    );
    let mut rdr = csv::Reader::from_path(&csv_path).unwrap();
    let headers = rdr.headers().unwrap().clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no column {name}: {headers:?}"))
    };
    let (lr, width, state, acc, epochs, worker) = (
        col("lr"),
        col("width"),
        col("state"),
        col("val_accuracy"),
        col("epochs"),
        col("worker"),
    );
    let rows: Vec<csv::StringRecord> = rdr.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 9);
    let combos: HashSet<(String, String)> = rows
        .iter()
        .map(|r| (r[lr].to_owned(), r[width].to_owned()))
        .collect();
    let expected: HashSet<(String, String)> = ["0.0003", "0.001", "0.003"]
        .iter()
        .flat_map(|l| {
            ["32", "64", "128"]
                .iter()
                .map(move |w| (l.to_string(), w.to_string()))
        })
        .collect();
    assert_eq!(combos, expected);
    let mut best: f64 = 0.0;
    for r in &rows {
        assert_eq!(&r[state], "completed");
        assert_eq!(&r[epochs], "15");
        assert!(
            r[worker].contains("alpha") || r[worker].contains("beta"),
            "{:?}",
            &r[worker]
        );
        best = best.max(r[acc].parse().unwrap());
    }
    assert!(best > 0.9, "best val_accuracy {best}");

    // Every trial has per-epoch metrics, all three of them, epochs 1..=15 in order.
    let json = run_ok(
        &["results", &sweep, "--coordinator", &url, "--format", "json"],
        Duration::from_secs(30),
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let trials = v["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 9);
    for t in trials {
        let h = t["history"].as_array().unwrap();
        let steps: Vec<u64> = h.iter().map(|e| e["step"].as_u64().unwrap()).collect();
        assert_eq!(steps, (1..=15).collect::<Vec<_>>());
        for e in h {
            for m in ["train_loss", "val_loss", "val_accuracy"] {
                assert!(
                    e[m].as_f64().is_some_and(f64::is_finite),
                    "{m} missing in {e}"
                );
            }
        }
        // The final metrics are the last epoch's.
        assert_eq!(
            t["metrics"]["val_accuracy"],
            h.last().unwrap()["val_accuracy"]
        );
        let ckpt = t["checkpoint_dir"]
            .as_str()
            .expect("completed trials keep a checkpoint");
        assert!(
            std::path::Path::new(ckpt)
                .join("model.safetensors")
                .exists()
        );
    }
    // The best trial in the JSON is the argmax of val_accuracy.
    let best_trial = v["best_trial"].as_u64().unwrap() as usize;
    let accs: Vec<f64> = trials
        .iter()
        .map(|t| t["metrics"]["val_accuracy"].as_f64().unwrap())
        .collect();
    assert_eq!(accs[best_trial], accs.iter().cloned().fold(0.0, f64::max));
}

/// A worker killed with SIGKILL mid-trial loses its lease; the unit runs again on
/// another worker and the sweep completes with every trial done once.
#[test]
fn a_killed_workers_unit_runs_again_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let (_coord, url) = coordinator(
        dir.path(),
        &["--lease-ttl-ms", "1500", "--heartbeat-interval-ms", "200"],
    );
    let data = root().join("examples/data/digits.csv.gz");
    let spec = dir.path().join("slow.toml");
    std::fs::write(
        &spec,
        format!(
            "name = \"slow\"\n[data]\npath = {:?}\n[train]\nepochs = 2000\n[search]\nalgorithm = \"grid\"\n[search.space]\nwidth = {{ type = \"grid\", values = [16, 24] }}\n",
            data.to_str().unwrap()
        ),
    )
    .unwrap();
    let mut victim = spawn(
        "victim",
        &[
            "worker",
            "--coordinator",
            &url,
            "--name",
            "victim",
            "--slots",
            "2",
        ],
        dir.path(),
    );
    let sweep = submit(&spec, &url);
    // Wait until the victim holds both trials, then kill it without warning.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let s = run_ok(
            &["status", &sweep, "--coordinator", &url],
            Duration::from_secs(30),
        );
        // With the comma: a sweep id ending in "2" is followed by " running:" too.
        if s.contains(", 2 running") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "trials never started: {s}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    victim.child.kill().unwrap();
    victim.child.wait().unwrap();
    let _rescuer = spawn(
        "rescuer",
        &[
            "worker",
            "--coordinator",
            &url,
            "--name",
            "rescuer",
            "--slots",
            "2",
        ],
        dir.path(),
    );
    run_ok(
        &["watch", &sweep, "--coordinator", &url],
        Duration::from_secs(600),
    );
    let json = run_ok(
        &["results", &sweep, "--coordinator", &url, "--format", "json"],
        Duration::from_secs(30),
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["state"], "completed");
    for t in v["trials"].as_array().unwrap() {
        assert_eq!(t["state"], "completed", "{t}");
        assert_eq!(t["attempts"], 2, "the killed attempt counts: {t}");
        assert!(t["worker"].as_str().unwrap().contains("rescuer"), "{t}");
        // The history is the second attempt's alone: epochs 1..=2000, once each.
        assert_eq!(t["history"].as_array().unwrap().len(), 2000);
    }
}

/// A trial whose loss becomes NaN is marked diverged, and the search goes on.
#[test]
fn diverging_trials_are_marked_and_the_search_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let data = root().join("examples/data/digits.csv.gz");
    let spec = dir.path().join("wild.toml");
    std::fs::write(
        &spec,
        format!(
            "name = \"wild\"\n[data]\npath = {:?}\nlimit = 300\n[train]\nepochs = 5\noptimizer = \"sgd\"\nmomentum = 0.0\n[search]\nalgorithm = \"grid\"\n[search.space]\nlr = {{ type = \"grid\", values = [1e30, 0.05] }}\n",
            data.to_str().unwrap()
        ),
    )
    .unwrap();
    let v = run_embedded(&spec, 1, &dir.path().join("out"), Duration::from_secs(300));
    assert_eq!(v["state"], "completed");
    let t = v["trials"].as_array().unwrap();
    assert_eq!(t[0]["state"], "diverged", "{}", t[0]);
    assert_eq!(t[0]["error"], "loss became NaN or infinite");
    assert_eq!(t[0]["attempts"], 1, "diverging is not retried");
    assert_eq!(t[1]["state"], "completed");
    assert_eq!(v["best_trial"], 1);
}

/// A search over `subspace_dim` submitted to a coordinator with a worker on another
/// process: `results --format intrinsic` gives d_int90 from the trials' accuracies, the
/// same as recomputed here from `results --format json`; a sweep without the parameter
/// is refused with a message naming it.
#[test]
fn results_give_the_intrinsic_dimension_of_a_submitted_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let (_coord, url) = coordinator(dir.path(), &[]);
    let _w = spawn("w", &["worker", "--coordinator", &url], dir.path());
    let spec = dir.path().join("intrinsic.toml");
    let text = std::fs::read_to_string(root().join("examples/digits-intrinsic.toml"))
        .unwrap()
        .replace(
            "data/digits.csv.gz",
            root().join("examples/data/digits.csv.gz").to_str().unwrap(),
        )
        .replace("epochs = 20", "epochs = 3")
        .replace("[0, 10, 20, 40, 80, 160, 320, 640]", "[0, 5, 400]");
    std::fs::write(&spec, text).unwrap();
    let sweep = submit_wait(&spec, &url, Duration::from_secs(600));
    let results = |format: &str| {
        run_ok(
            &["results", &sweep, "--coordinator", &url, "--format", format],
            Duration::from_secs(30),
        )
    };
    let j: serde_json::Value = serde_json::from_str(&results("intrinsic")).unwrap();
    let all: serde_json::Value = serde_json::from_str(&results("json")).unwrap();
    let acc = |d: i64| -> f64 {
        all["trials"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["params"]["subspace_dim"] == d)
            .unwrap()["metrics"]["val_accuracy"]
            .as_f64()
            .unwrap()
    };
    let full = acc(0);
    assert_eq!(j["full_model"].as_f64(), Some(full));
    let want = [5, 400].into_iter().find(|d| acc(*d) >= 0.9 * full);
    assert_eq!(j["d_int"].as_i64(), want, "{j}");
    assert_eq!(j["curve"].as_array().unwrap().len(), 2);

    let grid = submit_wait(
        &root().join("examples/digits-grid.toml"),
        &url,
        Duration::from_secs(600),
    );
    let out = run(
        &[
            "results",
            &grid,
            "--coordinator",
            &url,
            "--format",
            "intrinsic",
        ],
        Duration::from_secs(30),
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("subspace_dim"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `search.keep = 2`: once the search ends only the two best trials (by val_loss, ties to
/// the lower trial) have checkpoint files, and results name no checkpoint for the rest;
/// the same across a coordinator killed and restarted mid-search, whose rebuilt policy
/// still knows which trials hold the places.
#[test]
fn keep_leaves_the_checkpoints_of_the_best_trials_only() {
    let dir = tempfile::tempdir().unwrap();
    let spec = digits_spec(dir.path(), "kept", 10, 3);
    let text = std::fs::read_to_string(&spec)
        .unwrap()
        .replace("seed = 0\n", "seed = 0\nkeep = 2\n");
    std::fs::write(&spec, text).unwrap();
    let check = |v: &serde_json::Value, trials_dir: &std::path::Path| {
        let trials = v["trials"].as_array().unwrap();
        assert_eq!(trials.len(), 10);
        let mut ranked: Vec<(f64, u64)> = trials
            .iter()
            .filter(|t| t["state"] == "completed")
            .map(|t| {
                (
                    t["metrics"]["val_loss"].as_f64().unwrap(),
                    t["trial"].as_u64().unwrap(),
                )
            })
            .collect();
        ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let best: Vec<u64> = ranked.iter().take(2).map(|r| r.1).collect();
        for t in trials {
            let n = t["trial"].as_u64().unwrap();
            let kept = best.contains(&n);
            let weights = trials_dir.join(format!("{n:05}")).join("model.safetensors");
            assert_eq!(weights.exists(), kept, "trial {n} (best: {best:?})");
            assert_eq!(t["checkpoint_dir"].is_string(), kept, "{t}");
        }
    };
    let out = dir.path().join("out");
    let v = run_embedded(&spec, 2, &out, Duration::from_secs(300));
    let sweep = out.join("sweeps").join(v["sweep"].as_str().unwrap());
    check(&v, &sweep.join("trials"));

    // On a coordinator that is killed once three trials are done.
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let (coord, url) = coordinator(&data, &[]);
    let _w = worker(dir.path(), &url, "w", &[]);
    let id = submit(&spec, &url);
    wait_until("3 completed trials", Duration::from_secs(120), || {
        results(&id, &url)["trials"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["state"] == "completed")
            .count()
            >= 3
    });
    drop(coord);
    let (_coord, url) = coordinator(&data, &[]);
    let _w2 = worker(dir.path(), &url, "w2", &[]);
    run_ok(
        &["watch", &id, "--coordinator", &url],
        Duration::from_secs(300),
    );
    check(
        &results(&id, &url),
        &data.join("sweeps").join(&id).join("trials"),
    );
}
