//! Sweeps that stop and go on: `ridgeline run` interrupted by SIGINT and run again
//! continues the same sweep (built-in trials, and command trials under TPE), and a
//! cancelled search resumes on a coordinator (`ridgeline resume`).
//!
//! The rule tested for TPE: with `max_concurrent = 1`, trial i is suggested from the
//! results of trials 0..i-1 only, so an interrupted and continued run suggests exactly
//! what an uninterrupted run does (the trial running at the interruption is handed back
//! and runs again with the parameters it had).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// Eight command trials of `tests/command/epochs.py` under TPE, one at a time.
fn tpe_spec(dir: &Path) -> PathBuf {
    let prog = root().join("tests/command/epochs.py");
    let text = format!(
        r#"name = "tpe-resume"
[trial]
command = ["python3", {prog:?}, "3", "0", "0.15", "{{x}}"]
[search]
algorithm = "tpe"
metric = "val_loss"
num_samples = 8
max_concurrent = 1
seed = 5
[search.tpe]
n_startup_trials = 3
[search.space]
x = {{ type = "uniform", low = 0.0, high = 1.0 }}
"#,
        prog = prog.display().to_string()
    );
    let p = dir.join("tpe.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// `ridgeline run SPEC --out OUT`, in the background.
fn start_run(spec: &Path, out: &Path, log: &Path) -> std::process::Child {
    Command::new(bin())
        .args(["run", spec.to_str().unwrap(), "--workers", "2", "--out"])
        .arg(out)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// Trial folders of a `run`'s command trials whose program ran to its end.
fn programs_done(out: &Path) -> usize {
    files_in(&out.join("trial-dirs"))
        .iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("exited-"))
        })
        .count()
}

/// Each trial's parameters and state, by trial index.
fn by_trial(r: &serde_json::Value) -> BTreeMap<u64, (String, String)> {
    r["trials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["trial"].as_u64().unwrap(),
                (
                    t["params"].to_string(),
                    t["state"].as_str().unwrap().to_owned(),
                ),
            )
        })
        .collect()
}

/// SIGINT to a process, then its exit.
fn interrupt(child: &mut std::process::Child) -> std::process::ExitStatus {
    let ok = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    child.wait().unwrap()
}

#[test]
fn an_interrupted_tpe_run_of_command_trials_goes_on_where_it_stopped() {
    let dir = KeptOnFailure::new();
    let spec = tpe_spec(dir.path());
    let calm = dir.path().join("calm");
    let reference = run_embedded(&spec, 2, &calm, Duration::from_secs(300));

    let out = dir.path().join("out");
    let log = dir.path().join("run1.log");
    let mut child = start_run(&spec, &out, &log);
    wait_until("three trials to finish", Duration::from_secs(120), || {
        programs_done(&out) >= 3
    });
    let status = interrupt(&mut child);
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "{said}");
    assert!(
        said.contains("interrupted: sweep") && said.contains("is kept"),
        "{said}"
    );
    assert_eq!(said.matches("interrupted").count(), 1, "{said}");
    let done_before = programs_done(&out);

    let again = run_embedded_with(&spec, 2, &out, Duration::from_secs(300), &[]);
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{err}");
    assert!(err.contains("continuing it"), "{err}");
    let sweeps: Vec<_> = std::fs::read_dir(out.join("sweeps")).unwrap().collect();
    assert_eq!(sweeps.len(), 1, "the same sweep, not a new one");
    let r = results_of_run(&out);
    assert_eq!(r["trials"].as_array().unwrap().len(), 8, "{r}");
    // Same suggestions as the uninterrupted run, trial by trial, all completed.
    assert_eq!(by_trial(&r), by_trial(&reference), "{r}\n{reference}");
    // No epoch was trained twice, except the one in progress at the interruption: a
    // program that had finished (even one whose result was not handed in yet) starts
    // again only to find its checkpoint at the end, and trains nothing.
    let mut repeated = 0;
    for i in 0..8 {
        let ledger = std::fs::read_to_string(
            out.join("trial-dirs")
                .join(r["sweep"].as_str().unwrap())
                .join(format!("trial-{i:05}/own.jsonl")),
        )
        .unwrap();
        let epochs: Vec<u64> = ledger
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|e| e["event"] == "epoch")
            .map(|e| e["epoch"].as_u64().unwrap())
            .collect();
        for e in 1..=3 {
            let n = epochs.iter().filter(|x| **x == e).count();
            assert!(n >= 1, "trial {i} never trained epoch {e}: {ledger}");
            repeated += n - 1;
        }
    }
    assert!(repeated <= 1, "{repeated} epochs trained twice");
    assert!(done_before >= 3);
}

#[test]
fn an_interrupted_run_of_the_built_in_trainer_keeps_its_sweep() {
    let dir = KeptOnFailure::new();
    // Eight trials of a few seconds each on the UCI digits.
    let spec = dir.path().join("builtin.toml");
    let data = root().join("examples/data/digits.csv.gz");
    std::fs::write(
        &spec,
        format!(
            "name = \"builtin-resume\"\n[data]\npath = {:?}\n[model]\ndepth = 2\nwidth = 128\n\
             [train]\nepochs = 100\n[search]\nalgorithm = \"random\"\nnum_samples = 8\n\
             [search.space]\nlr = {{ type = \"loguniform\", low = 1e-3, high = 1e-2 }}\n",
            data.display().to_string()
        ),
    )
    .unwrap();
    let out = dir.path().join("out");
    let log = dir.path().join("run1.log");
    let mut child = start_run(&spec, &out, &log);
    wait_until("two trials to complete", Duration::from_secs(120), || {
        let said = std::fs::read_to_string(&log).unwrap_or_default();
        (2..8).any(|n| said.contains(&format!(" {n}/8 trials completed")))
    });
    let status = interrupt(&mut child);
    assert!(!status.success());
    // What was stored before the interruption (the coordinator has stopped).
    let before: BTreeMap<u64, String> = {
        let db = rusqlite::Connection::open(out.join("ridgeline.db")).unwrap();
        let mut st = db
            .prepare("SELECT trial, final_json FROM units WHERE state = 'completed'")
            .unwrap();
        st.query_map([], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    };
    let again = run_embedded_with(&spec, 2, &out, Duration::from_secs(300), &[]);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let r = results_of_run(&out);
    let trials = r["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 8);
    assert!(before.len() >= 2, "{before:?}");
    for t in trials {
        assert_eq!(t["state"], "completed", "{t}");
        let i = t["trial"].as_u64().unwrap();
        if before.contains_key(&i) {
            assert_eq!(
                t["attempts"], 1,
                "trial {i} was completed and ran again: {t}"
            );
        }
    }
    assert_eq!(std::fs::read_dir(out.join("sweeps")).unwrap().count(), 1);
    // --fresh starts over.
    let o = run_embedded_with(&spec, 2, &out, Duration::from_secs(300), &["--fresh"]);
    assert!(o.status.success());
    assert_eq!(std::fs::read_dir(out.join("sweeps")).unwrap().count(), 2);
}

#[test]
fn a_cancelled_search_resumes_on_a_coordinator() {
    let dir = KeptOnFailure::new();
    let spec = tpe_spec(dir.path());
    let (_coord, url) = coordinator(dir.path(), &[]);
    let root = dir.path().join("trials");
    let _w = worker(
        dir.path(),
        &url,
        "w",
        &["--trial-root", root.to_str().unwrap()],
    );
    let id = submit(&spec, &url);
    let completed = |r: &serde_json::Value| -> BTreeMap<u64, serde_json::Value> {
        r["trials"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["state"] == "completed")
            .map(|t| (t["trial"].as_u64().unwrap(), t["metrics"].clone()))
            .collect()
    };
    wait_until("three trials", Duration::from_secs(120), || {
        completed(&results(&id, &url)).len() >= 3
    });
    run_ok(
        &["cancel", &id, "--coordinator", &url],
        Duration::from_secs(30),
    );
    let before = completed(&results(&id, &url));
    let o = run(
        &["resume", &id, "--coordinator", &url, "--wait"],
        Duration::from_secs(300),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = results(&id, &url);
    let after = completed(&r);
    assert_eq!(after.len(), 8, "{r}");
    for (i, m) in &before {
        assert_eq!(&after[i], m, "trial {i} changed");
        let t = &r["trials"][*i as usize];
        assert_eq!(t["attempts"], 1, "trial {i} ran again: {t}");
    }
    // A completed sweep is not resumed.
    let o = run(
        &["resume", &id, "--coordinator", &url],
        Duration::from_secs(30),
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("it completed"));
}

#[test]
fn a_search_without_a_seed_gets_one_and_reruns_exactly_from_it() {
    let dir = KeptOnFailure::new();
    let (_coord, url) = coordinator(dir.path(), &[]);
    let spec = digits_spec(dir.path(), "seedless", 3, 1);
    let text = std::fs::read_to_string(&spec)
        .unwrap()
        .replace("seed = 0\n", "");
    std::fs::write(&spec, &text).unwrap();
    assert!(!text.contains("seed ="));
    let submitted = |spec: &Path| {
        let o = run(
            &["submit", spec.to_str().unwrap(), "--coordinator", &url],
            Duration::from_secs(30),
        );
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        let seed: u64 = err
            .split("(seed ")
            .nth(1)
            .and_then(|s| s.split(')').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no seed printed: {err}"));
        (String::from_utf8_lossy(&o.stdout).trim().to_owned(), seed)
    };
    let (a, seed_a) = submitted(&spec);
    let (b, seed_b) = submitted(&spec);
    assert_ne!(seed_a, seed_b, "two sweeps of one spec drew the same seed");
    let _w = worker(dir.path(), &url, "w", &[]);
    let params = |id: &str| -> Vec<String> {
        run_ok(
            &["watch", id, "--coordinator", &url],
            Duration::from_secs(120),
        );
        results(id, &url)["trials"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["params"].to_string())
            .collect()
    };
    let (pa, pb) = (params(&a), params(&b));
    assert_ne!(pa, pb);
    // The stored seed reruns the first sweep exactly.
    let text = std::fs::read_to_string(&spec).unwrap();
    let pinned = dir.path().join("pinned.toml");
    std::fs::write(
        &pinned,
        text.replace("[search]\n", &format!("[search]\nseed = {seed_a}\n")),
    )
    .unwrap();
    let (c, seed_c) = submitted(&pinned);
    assert_eq!(seed_c, seed_a);
    assert_eq!(params(&c), pa);
}

/// A scan cancelled halfway and resumed computes only its missing tiles, and its surface
/// is bit for bit the uninterrupted scan's.
#[test]
fn a_cancelled_scan_resumes_and_ends_with_the_uninterrupted_surface() {
    let dir = KeptOnFailure::new();
    let spec = scan_fixture(dir.path(), 4, 61, 41, 4);
    let (_coord, url) = coordinator(dir.path(), &[]);
    let w = worker(dir.path(), &url, "w", &[]);
    let id = submit(&spec, &url);
    let completed = || -> Vec<u64> {
        results(&id, &url)["trials"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["state"] == "completed")
            .map(|t| t["trial"].as_u64().unwrap())
            .collect()
    };
    wait_until("20 tiles", Duration::from_secs(120), || {
        completed().len() >= 20
    });
    run_ok(
        &["cancel", &id, "--coordinator", &url],
        Duration::from_secs(30),
    );
    let before = completed();
    assert!(before.len() < 626, "the scan ended before it was cancelled");
    // Computed again would mean leased again (the tiles' files are packed away once a
    // scan, cancelled too, is assembled).
    let attempts = || -> std::collections::HashMap<u64, u64> {
        results(&id, &url)["trials"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["trial"].as_u64().unwrap(),
                    t["attempts"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let stamps = attempts();
    let o = run(
        &["resume", &id, "--coordinator", &url, "--wait"],
        Duration::from_secs(600),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The scan's own summary of the resumed run: every tile, none counted twice.
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(
        said.contains("completed: 2501/2501 points in 626/626 tiles"),
        "{said}"
    );
    let now = attempts();
    for t in &before {
        assert_eq!(now[t], stamps[t], "tile {t} was computed again");
    }
    drop(w);
    // The same scan, never interrupted, on a coordinator of its own.
    let other = tempfile::tempdir().unwrap();
    let spec2 = scan_fixture(other.path(), 4, 61, 41, 4);
    let (_c2, url2) = coordinator(other.path(), &[]);
    let _w2 = worker(other.path(), &url2, "w2", &[]);
    let id2 = submit(&spec2, &url2);
    run_ok(
        &["watch", &id2, "--coordinator", &url2],
        Duration::from_secs(600),
    );
    let surface = |root: &Path, id: &str| {
        std::fs::read(root.join("sweeps").join(id).join("surface.npy")).unwrap()
    };
    assert_eq!(surface(dir.path(), &id), surface(other.path(), &id2));
}

/// A scan whose Hessian the cancellation interrupted ends when its tiles do: its
/// remaining Hessian rounds are not run (and never wait to be).
#[test]
fn a_resumed_scan_does_not_wait_for_its_interrupted_hessian() {
    let dir = KeptOnFailure::new();
    let spec = scan_fixture(dir.path(), 4, 61, 41, 4);
    let text = std::fs::read_to_string(&spec).unwrap()
        + "[landscape.hessian]\ntop_k = 1\nrounds = 40\nshards = 2\ntolerance = 1e-12\n";
    std::fs::write(&spec, text).unwrap();
    let (_coord, url) = coordinator(dir.path(), &[]);
    let id = submit(&spec, &url);
    // Cancelled before any worker came: nothing of the scan or its Hessian ran.
    run_ok(
        &["cancel", &id, "--coordinator", &url],
        Duration::from_secs(30),
    );
    let _w = worker(dir.path(), &url, "w", &[]);
    let o = run(
        &["resume", &id, "--coordinator", &url, "--wait"],
        Duration::from_secs(300),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(
        said.contains("completed: 2501/2501 points in 626/626 tiles"),
        "{said}"
    );
    assert!(said.contains("Hessian: 0 of at most 40 rounds"), "{said}");
}
