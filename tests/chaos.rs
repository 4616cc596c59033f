//! Kill anything at any time, lose nothing: a 200-trial random search across three
//! worker processes while workers are killed with SIGKILL (and replaced) at random
//! times and the coordinator is killed and restarted once. Every trial ends done exactly
//! once with its whole per-epoch history, nothing is left running, and the results (and
//! the best trial) equal an undisturbed run's.
//!
//! What it asserts does not depend on timing: each kill (and each lease that lapses on
//! a loaded machine) costs a unit at most one attempt, and `max_attempts` is far above
//! what the storm can spend, so no trial can fail by chance.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use ridgeline_common::rng::Rng;

const SPEC: &str = r#"
name = "chaos"
[data]
path = "DATA"
limit = 400
[model]
depth = 1
width = 16
[train]
epochs = 150
batch_size = 32
[search]
algorithm = "random"
num_samples = 200
seed = 11
[search.space]
lr = { type = "loguniform", low = 1e-3, high = 3e-2 }
width = { type = "choice", values = [8, 16, 24] }
"#;

// Long enough that the storm outlasts the coordinator's restart at 3 s (25 epochs no
// longer did, once the trainer's layers became ops of their own).
const EPOCHS: u64 = 150;

/// trial -> (params as text, state, val_accuracy, val_loss, attempts)
type Table = BTreeMap<u64, (String, String, f64, f64, u64)>;

fn best(json: &str) -> (u64, f64) {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    let b = v["best_trial"].as_u64().expect("a best trial");
    let t = &v["trials"].as_array().unwrap()[b as usize];
    (b, t["metrics"]["val_accuracy"].as_f64().unwrap())
}

fn table(json: &str) -> Table {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    v["trials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["trial"].as_u64().unwrap(),
                (
                    t["params"].to_string(),
                    t["state"].as_str().unwrap().to_owned(),
                    t["metrics"]["val_accuracy"].as_f64().unwrap_or(f64::NAN),
                    t["metrics"]["val_loss"].as_f64().unwrap_or(f64::NAN),
                    t["attempts"].as_u64().unwrap(),
                ),
            )
        })
        .collect()
}

#[test]
fn chaos_loses_nothing_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = root().join("examples/data/digits.csv.gz");
    let spec = dir.path().join("chaos.toml");
    std::fs::write(&spec, SPEC.replace("DATA", data.to_str().unwrap())).unwrap();

    // The undisturbed reference, in one process.
    let calm = run_embedded(&spec, 2, &dir.path().join("calm"), Duration::from_secs(900));
    let expected = table(&calm.to_string());
    assert_eq!(expected.len(), 200);
    assert_whole_histories(&calm, EPOCHS);

    // The storm.
    let storm = dir.path().join("storm");
    std::fs::create_dir_all(&storm).unwrap();
    let timing = [
        "--lease-ttl-ms",
        "1500",
        "--heartbeat-interval-ms",
        "200",
        "--max-attempts",
        "1000",
    ];
    let (mut coord, url) = coordinator(&storm, &timing);
    let addr = url.trim_start_matches("http://").to_owned();
    let mut spawned = 0;
    let worker = |spawned: &mut usize| {
        *spawned += 1;
        let name = format!("w{spawned}");
        spawn(
            &name,
            &[
                "worker",
                "--coordinator",
                &url,
                "--name",
                &name,
                "--slots",
                "2",
            ],
            &storm,
        )
    };
    let mut workers: Vec<Proc> = (0..3).map(|_| worker(&mut spawned)).collect();
    let id = submit(&spec, &url);
    let mut rng = Rng::new(2024);
    let started = Instant::now();
    let mut restarted = false;
    let mut kills = 0;
    loop {
        std::thread::sleep(Duration::from_millis(300 + rng.below(700)));
        let st = run(
            &["status", &id, "--coordinator", &url],
            Duration::from_secs(30),
        );
        let text = String::from_utf8_lossy(&st.stdout).into_owned();
        if text.contains(" completed: ") || text.contains(" failed: ") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the storm never ended: {text}"
        );
        if !restarted && started.elapsed() > Duration::from_secs(3) {
            coord.child.kill().unwrap();
            coord.child.wait().unwrap();
            std::thread::sleep(Duration::from_millis(rng.below(500)));
            let dd = storm.to_str().unwrap();
            let mut args = vec!["coordinator", "--listen", addr.as_str(), "--data-dir", dd];
            args.extend_from_slice(&timing);
            coord = spawn("coordinator-restarted", &args, &storm);
            restarted = true;
            continue;
        }
        // Kill a random worker without warning and start a fresh one.
        let victim = rng.below(workers.len() as u64) as usize;
        let mut w = workers.swap_remove(victim);
        w.child.kill().unwrap();
        w.child.wait().unwrap();
        kills += 1;
        workers.push(worker(&mut spawned));
    }
    assert!(
        restarted,
        "the sweep ended before the coordinator could be restarted"
    );
    assert!(kills >= 2, "only {kills} workers were killed");

    let json = run_ok(
        &["results", &id, "--coordinator", &url, "--format", "json"],
        Duration::from_secs(60),
    );
    assert_whole_histories(&serde_json::from_str(&json).unwrap(), EPOCHS);
    assert_eq!(
        best(&json),
        best(&calm.to_string()),
        "the best trial after restarts is the undisturbed run's"
    );
    let log = std::fs::read_to_string(storm.join("coordinator-restarted.log")).unwrap();
    assert!(
        log.contains("worker lost (missed heartbeats)"),
        "the coordinator logs the workers it declares lost"
    );
    assert!(!log.contains('\u{1b}'), "no colour codes in a log file");
    let got = table(&json);
    assert_eq!(got.len(), 200, "every trial is stored once");
    let mut retried = 0;
    for (trial, (params, state, acc, loss, attempts)) in &got {
        let (eparams, _, eacc, eloss, _) = &expected[trial];
        assert!(*attempts < 1000);
        assert_eq!(state, "completed", "trial {trial}");
        assert_eq!(params, eparams, "trial {trial} got other parameters");
        // Training is deterministic given the seed: the same numbers, whoever ran it.
        assert_eq!(acc, eacc, "trial {trial}: val_accuracy {acc} vs {eacc}");
        assert!(
            (loss - eloss).abs() <= 1e-6 * eloss.abs(),
            "trial {trial}: val_loss {loss} vs {eloss}"
        );
        retried += usize::from(*attempts > 1);
    }
    eprintln!(
        "{kills} workers killed, coordinator restarted once, {retried} trials ran more than once"
    );
    drop(workers);
}
