//! Graceful ends: SIGTERM on a worker hands its unit back without spending an attempt,
//! SIGTERM on the coordinator flushes and exits, and cancelling a sweep stops its running
//! units on every worker promptly.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

fn slow_spec(dir: &Path, name: &str, trials: usize) -> std::path::PathBuf {
    let data = root().join("examples/data/digits.csv.gz");
    let widths: Vec<String> = (0..trials).map(|i| (16 + i).to_string()).collect();
    let spec = dir.join(format!("{name}.toml"));
    std::fs::write(
        &spec,
        format!(
            "name = \"{name}\"\n[data]\npath = {:?}\n[train]\nepochs = 20000\n[search]\nalgorithm = \"grid\"\n[search.space]\nwidth = {{ type = \"grid\", values = [{}] }}\n",
            data.to_str().unwrap(),
            widths.join(", ")
        ),
    )
    .unwrap();
    spec
}

fn sigterm(p: &Proc) {
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &p.child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

fn wait_exit(p: &mut Proc, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = p.child.try_wait().unwrap() {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{} did not exit within {within:?}",
            p.name
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_status(url: &str, id: &str, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = run_ok(
            &["status", id, "--coordinator", url],
            Duration::from_secs(30),
        );
        if s.contains(want) {
            return s;
        }
        assert!(Instant::now() < deadline, "never saw {want:?}: {s}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigterm_on_a_worker_hands_its_unit_back() {
    let dir = tempfile::tempdir().unwrap();
    let (mut coord, url) = coordinator(dir.path(), &[]);
    let mut w = worker(dir.path(), &url, "leaver", &[]);
    let spec = slow_spec(dir.path(), "handback", 1);
    let id = submit(&spec, &url);
    // With the comma: a sweep id ending in "1" is followed by " running:" too.
    wait_status(&url, &id, ", 1 running");
    sigterm(&w);
    let st = wait_exit(&mut w, Duration::from_secs(10));
    assert!(st.success(), "worker exited with {st}");
    // The unit is pending again at once, not after a lease timeout.
    wait_status(&url, &id, "0/1 trials completed, 0 running");
    let json = run_ok(
        &["results", &id, "--coordinator", &url, "--format", "json"],
        Duration::from_secs(30),
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["trials"][0]["state"], "pending");
    // Handing back is not a failed attempt: the lease counts as interrupted.
    let t = &v["trials"][0];
    assert_eq!(
        (&t["attempts"], &t["interrupted"]),
        (&1.into(), &1.into()),
        "{json}"
    );

    // SIGTERM on the coordinator: it exits cleanly and promptly, and the sweep is intact
    // when it comes back.
    sigterm(&coord);
    let st = wait_exit(&mut coord, Duration::from_secs(10));
    assert!(st.success(), "coordinator exited with {st}");
    let (_coord2, url2) = coordinator(dir.path(), &[]);
    let s = run_ok(
        &["status", &id, "--coordinator", &url2],
        Duration::from_secs(30),
    );
    assert!(
        s.contains(&format!("{id} running: 0/1 trials completed")),
        "{s}"
    );
}

#[test]
fn cancelling_stops_running_units_everywhere_promptly() {
    let dir = tempfile::tempdir().unwrap();
    let (_coord, url) = coordinator(dir.path(), &["--heartbeat-interval-ms", "200"]);
    let _a = worker(dir.path(), &url, "a", &[]);
    let _b = worker(dir.path(), &url, "b", &[]);
    let spec = slow_spec(dir.path(), "doomed", 4);
    let id = submit(&spec, &url);
    // Wait until both workers are deep in training (each has reported an epoch).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let json = run_ok(
            &["results", &id, "--coordinator", &url, "--format", "json"],
            Duration::from_secs(30),
        );
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let training = v["trials"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["state"] == "running" && !t["history"].as_array().unwrap().is_empty())
            .count();
        if training == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the trials never started: {json}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let t0 = Instant::now();
    let out = run_ok(
        &["cancel", &id, "--coordinator", &url],
        Duration::from_secs(30),
    );
    assert_eq!(out.trim(), format!("{id} cancelled"));
    let s = run_ok(
        &["status", &id, "--coordinator", &url],
        Duration::from_secs(30),
    );
    assert!(
        s.contains("cancelled: 0/4 trials completed, 0 running, 0 failed, 0 diverged, 4 cancelled"),
        "{s}"
    );
    // Both workers drop their trials and are free again: a new quick sweep runs at once.
    let quick = dir.path().join("quick.toml");
    let data = root().join("examples/data/digits.csv.gz");
    std::fs::write(&quick, format!("name = \"quick\"\n[data]\npath = {:?}\nlimit = 200\n[train]\nepochs = 1\n[search]\nalgorithm = \"random\"\nnum_samples = 2\n", data.to_str().unwrap())).unwrap();
    let q = run_ok(
        &[
            "submit",
            quick.to_str().unwrap(),
            "--coordinator",
            &url,
            "--wait",
        ],
        Duration::from_secs(60),
    );
    let elapsed = t0.elapsed();
    assert!(!q.trim().is_empty());
    // 20,000 epochs take well over 10 s; stopping takes a heartbeat and one mini-batch.
    assert!(
        elapsed < Duration::from_secs(8),
        "workers took {elapsed:?} to stop"
    );
    // Each worker hears of the cancel at its next heartbeat or report: the quick sweep
    // (milliseconds of training) can end on one worker before the other's heartbeat.
    for name in ["a", "b"] {
        let log = || std::fs::read_to_string(dir.path().join(format!("{name}.log"))).unwrap();
        let told = || log().contains("stopping unit at the coordinator's request");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !told() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            told(),
            "worker {name} was not told to stop:\n{}\n{}",
            log(),
            std::fs::read_to_string(dir.path().join("coordinator.log")).unwrap()
        );
    }
}

/// kill -9 the coordinator while a trial trains: when it comes back, the worker
/// re-registers and re-adopts the trial, which finishes on its first attempt with its
/// whole history, instead of starting over.
#[test]
fn a_running_trial_survives_a_coordinator_crash() {
    let dir = tempfile::tempdir().unwrap();
    let timing = ["--lease-ttl-ms", "3000", "--heartbeat-interval-ms", "200"];
    let (mut coord, url) = coordinator(dir.path(), &timing);
    let addr = url.trim_start_matches("http://").to_owned();
    let _w = worker(dir.path(), &url, "steady", &[]);
    let data = root().join("examples/data/digits.csv.gz");
    let spec = dir.path().join("long.toml");
    std::fs::write(
        &spec,
        format!(
            "name = \"long\"\n[data]\npath = {:?}\n[train]\nepochs = 3000\n[search]\n",
            data.to_str().unwrap()
        ),
    )
    .unwrap();
    let id = submit(&spec, &url);
    // With the comma: a sweep id ending in "1" is followed by " running:" too.
    wait_status(&url, &id, ", 1 running");
    std::thread::sleep(Duration::from_millis(500));
    coord.child.kill().unwrap();
    coord.child.wait().unwrap();
    let dd = dir.path().to_str().unwrap();
    let mut args = vec!["coordinator", "--listen", addr.as_str(), "--data-dir", dd];
    args.extend_from_slice(&timing);
    let _coord2 = spawn("coordinator2", &args, dir.path());
    run_ok(
        &["watch", &id, "--coordinator", &url],
        Duration::from_secs(300),
    );
    let json = run_ok(
        &["results", &id, "--coordinator", &url, "--format", "json"],
        Duration::from_secs(30),
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let t = &v["trials"][0];
    assert_eq!(t["state"], "completed");
    assert_eq!(
        t["attempts"], 1,
        "the trial started over: {}",
        t["attempts"]
    );
    let epochs: Vec<u64> = t["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["step"].as_u64().unwrap())
        .collect();
    // Epochs reported while the coordinator was down are sent once it is back.
    assert_eq!(epochs, (1..=3000).collect::<Vec<_>>());
    let log = std::fs::read_to_string(dir.path().join("coordinator2.log")).unwrap();
    assert!(log.contains("resumed running sweeps"), "{log}");
}
