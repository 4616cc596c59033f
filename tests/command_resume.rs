//! Command trials across worker and coordinator deaths: a program's reports belong to
//! its trial (a later attempt continues from them), histories are the union over
//! attempts, two attempts of a trial never run at once (however quickly coordinators
//! restart), and nothing a trial starts outlives it, daemons included.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

/// A one-trial sweep of `tests/command/epochs.py`.
fn epochs_spec(dir: &Path, name: &str, epochs: u32, per_attempt: u32, pause: f64) -> PathBuf {
    let prog = root().join("tests/command/epochs.py");
    let text = format!(
        r#"name = "{name}"
[trial]
command = ["python3", {prog:?}, "{epochs}", "{per_attempt}", "{pause}"]
[search]
algorithm = "random"
metric = "val_loss"
num_samples = 1
[search.space]
x = {{ type = "uniform", low = 0.0, high = 1.0 }}
"#,
        prog = prog.display().to_string()
    );
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

/// The one trial of a sweep, once it is final.
fn final_trial(sweep: &str, url: &str, timeout: Duration) -> serde_json::Value {
    let mut t = serde_json::Value::Null;
    wait_until("the trial to end", timeout, || {
        let r = run(
            &["results", sweep, "--coordinator", url, "--format", "json"],
            Duration::from_secs(30),
        );
        if !r.status.success() {
            return false;
        }
        let r: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
        t = r["trials"][0].clone();
        !matches!(t["state"].as_str(), None | Some("pending" | "running"))
    });
    t
}

/// The steps of a trial's stored history.
fn steps(t: &serde_json::Value) -> Vec<u64> {
    t["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["step"].as_u64().unwrap())
        .collect()
}

/// The program's own ledger of one trial.
fn own_ledger(trial_dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(trial_dir.join("own.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn restart_coordinator(dir: &Path, addr: &str, timing: &[&str], name: &str) -> Proc {
    let dd = dir.to_str().unwrap();
    let mut args = vec!["coordinator", "--listen", addr, "--data-dir", dd];
    args.extend_from_slice(timing);
    spawn(name, &args, dir)
}

fn kill9(p: &mut Proc) {
    p.child.kill().unwrap();
    p.child.wait().unwrap();
}

fn signal(p: &Proc, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &p.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig}");
}

const TIMING: [&str; 4] = ["--lease-ttl-ms", "2000", "--heartbeat-interval-ms", "200"];

#[test]
fn a_program_that_finished_while_its_result_was_lost_completes_from_its_reports() {
    let dir = KeptOnFailure::new();
    let spec = epochs_spec(dir.path(), "lost", 3, 0, 0.7);
    let (mut coord, url) = coordinator(dir.path(), &TIMING);
    let addr = url.trim_start_matches("http://").to_owned();
    let root = dir.path().join("trials");
    let tr = root.to_str().unwrap();
    let mut a = worker(dir.path(), &url, "a", &["--trial-root", tr]);
    let sweep = submit(&spec, &url);
    let tdir = root.join(&sweep).join("trial-00000");
    wait_until("the first epoch", Duration::from_secs(60), || {
        tdir.join("ckpt.json").exists()
    });
    // The coordinator dies; the program finishes meanwhile; then its worker dies before
    // it could hand the result in.
    kill9(&mut coord);
    wait_until("the program to exit", Duration::from_secs(60), || {
        tdir.join("exited-1").exists()
    });
    kill9(&mut a);
    let _coord = restart_coordinator(dir.path(), &addr, &TIMING, "coordinator-2");
    let _b = worker(dir.path(), &url, "b", &["--trial-root", tr]);
    let t = final_trial(&sweep, &url, Duration::from_secs(120));
    assert_eq!(t["state"], "completed", "{t}");
    assert_eq!(t["metrics"]["val_loss"].as_f64(), Some(1.0 / 3.0), "{t}");
    assert_eq!(steps(&t), vec![1, 2, 3], "{t}");
    // The second attempt trained nothing: it resumed at the end.
    let starts = own_ledger(&tdir)
        .iter()
        .filter(|e| e["event"] == "start")
        .count();
    assert_eq!(starts, 2);
    // The lost lease was the coordinator's, not the trial's.
    assert_eq!(t["interrupted"], 1, "{t}");
}

#[test]
fn preempted_attempts_keep_every_epoch_in_the_history() {
    let dir = KeptOnFailure::new();
    // Three attempts of three epochs each: 1-3, 4-6, 7-9.
    let spec = epochs_spec(dir.path(), "preempted", 9, 3, 0.02);
    let (_coord, url) = coordinator(dir.path(), &TIMING);
    let root = dir.path().join("trials");
    let _w = worker(
        dir.path(),
        &url,
        "w",
        &["--trial-root", root.to_str().unwrap()],
    );
    let sweep = submit(&spec, &url);
    let t = final_trial(&sweep, &url, Duration::from_secs(120));
    assert_eq!(t["state"], "completed", "{t}");
    assert_eq!(t["attempts"], 3, "{t}");
    assert_eq!(steps(&t), (1..=9).collect::<Vec<_>>(), "{t}");
    let h = t["history"].as_array().unwrap();
    for (i, e) in h.iter().enumerate() {
        assert_eq!(e["val_loss"].as_f64(), Some(1.0 / (i + 1) as f64), "{t}");
    }
}

#[test]
fn restarts_in_quick_succession_never_run_two_attempts_at_once() {
    let dir = KeptOnFailure::new();
    let spec = epochs_spec(dir.path(), "twice", 12, 0, 0.4);
    let (mut coord, url) = coordinator(dir.path(), &TIMING);
    let addr = url.trim_start_matches("http://").to_owned();
    let root = dir.path().join("trials");
    let tr = root.to_str().unwrap();
    let a = worker(dir.path(), &url, "a", &["--trial-root", tr]);
    let sweep = submit(&spec, &url);
    let tdir = root.join(&sweep).join("trial-00000");
    wait_until("the first epoch", Duration::from_secs(60), || {
        tdir.join("ckpt.json").exists()
    });
    // The holder goes quiet (as in reconnect backoff) while its program runs on; the
    // coordinator is killed, up for 0.35 s, killed again and restarted; another worker
    // is there at once.
    signal(&a, "-STOP");
    kill9(&mut coord);
    let mut c2 = restart_coordinator(dir.path(), &addr, &TIMING, "coordinator-2");
    std::thread::sleep(Duration::from_millis(350));
    kill9(&mut c2);
    let _c3 = restart_coordinator(dir.path(), &addr, &TIMING, "coordinator-3");
    let _b = worker(dir.path(), &url, "b", &["--trial-root", tr]);
    // Wake the first worker once the second has had every chance to start the trial.
    std::thread::sleep(Duration::from_secs(4));
    signal(&a, "-CONT");
    let t = final_trial(&sweep, &url, Duration::from_secs(120));
    let ledger = own_ledger(&tdir);
    let overlaps: Vec<_> = ledger.iter().filter(|e| e["event"] == "overlap").collect();
    assert!(overlaps.is_empty(), "two attempts ran at once: {ledger:?}");
    assert_eq!(t["state"], "completed", "{t}");
    assert_eq!(steps(&t), (1..=12).collect::<Vec<_>>(), "{t}");
    drop(a);
}

/// A sweep of two trials that each leave a daemon (double fork, own session), one with
/// the trial's stdout and one without; each writes its daemon's pid and then `then`.
fn daemon_spec(dir: &Path, name: &str, then: &str) -> PathBuf {
    let text = format!(
        r#"name = "{name}"
[trial]
command = """
if [ {{quiet}} = 1 ]; then
  (setsid sleep 300 >/dev/null 2>&1 </dev/null & echo $! > "$RIDGELINE_TRIAL_DIR/daemon.pid")
else
  (setsid sleep 300 & echo $! > "$RIDGELINE_TRIAL_DIR/daemon.pid")
fi
{then}
echo 'ridgeline: {{"loss": 1}}'
"""
[search]
algorithm = "grid"
metric = "loss"
[search.space]
quiet = {{ type = "grid", values = [0, 1] }}
"#
    );
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

fn daemon_pids(root: &Path, sweep: &str) -> Vec<u32> {
    (0..2)
        .filter_map(|t| {
            let p = root.join(sweep).join(format!("trial-{t:05}/daemon.pid"));
            std::fs::read_to_string(p).ok()?.trim().parse().ok()
        })
        .collect()
}

#[test]
fn daemons_end_with_their_trial_with_a_cgroup_and_without() {
    let dir = KeptOnFailure::new();
    let (_coord, url) = coordinator(dir.path(), &TIMING);
    for (mode, env) in [("cgroup", "auto"), ("subreaper", "off")] {
        let root = dir.path().join(format!("trials-{mode}"));
        let tr = root.to_str().unwrap();
        let args = [
            "worker",
            "--coordinator",
            &url,
            "--name",
            mode,
            "--trial-root",
            tr,
        ];
        let first = spawn_with(mode, &args, dir.path(), &[("RIDGELINE_TRIAL_CGROUP", env)]);
        let spec = daemon_spec(dir.path(), &format!("daemon-{mode}"), "");
        let sweep = submit_wait(&spec, &url, Duration::from_secs(120));
        let r = results(&sweep, &url);
        assert_eq!(r["trials"][0]["state"], "completed", "{r}");
        let pids = daemon_pids(&root, &sweep);
        assert_eq!(pids.len(), 2, "{mode}: both trials started a daemon");
        wait_until(
            &format!("{mode}: daemons to end"),
            Duration::from_secs(15),
            || pids.iter().all(|p| gone(*p)),
        );

        // The worker is killed with SIGKILL while its trials' daemons run (the first
        // worker gone, so that the trials are this one's).
        drop(first);
        let mut w = spawn_with(
            &format!("{mode}-killed"),
            &args,
            dir.path(),
            &[("RIDGELINE_TRIAL_CGROUP", env)],
        );
        let spec = daemon_spec(dir.path(), &format!("daemon-{mode}-killed"), "sleep 120");
        let sweep = submit(&spec, &url);
        let mut pids = vec![];
        wait_until("the daemons to start", Duration::from_secs(60), || {
            pids = daemon_pids(&root, &sweep);
            !pids.is_empty()
        });
        if mode == "cgroup" && own_cgroup_v2().is_some() {
            let cg = std::fs::read_to_string(format!("/proc/{}/cgroup", pids[0])).unwrap();
            assert!(
                cg.contains("/ridgeline-"),
                "not in the trial's cgroup: {cg}"
            );
        }
        kill9(&mut w);
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while !pids.iter().all(|p| gone(*p)) {
            if std::time::Instant::now() > deadline {
                let ps = std::process::Command::new("ps")
                    .args(["-eo", "pid,ppid,pgid,stat,etime,cmd"])
                    .output()
                    .unwrap();
                panic!(
                    "{mode}: daemons {pids:?} of a killed worker still run:\n{}",
                    String::from_utf8_lossy(&ps.stdout)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        run_ok(
            &["cancel", &sweep, "--coordinator", &url],
            Duration::from_secs(30),
        );
    }
}

#[test]
fn quoted_placeholders_pass_hostile_values_as_one_argument() {
    let dir = KeptOnFailure::new();
    let values = [
        "$(touch F)",
        "`touch F`",
        "; touch F",
        "a | b",
        "line1\nline2",
        "it's",
        "\"q\"",
        "back\\slash",
        "$HOME",
        "*",
        "a  b",
        "'; touch F; '",
    ];
    let list: Vec<String> = values
        .iter()
        .map(|v| serde_json::to_string(v).unwrap())
        .collect();
    let text = format!(
        r#"name = "quoted"
[trial]
command = """python3 -c 'import json, os, sys; open(os.environ["RIDGELINE_TRIAL_DIR"] + "/argv.json", "w").write(json.dumps(sys.argv[1:])); print("ridgeline: {{\\"loss\\": 1}}")' --a "{{v}}" --b '{{v}}' --c {{v}} "x{{v}}y" """
[search]
algorithm = "grid"
metric = "loss"
[search.space]
v = {{ type = "grid", values = [{}] }}
"#,
        list.join(", ")
    );
    let spec = dir.path().join("quoted.toml");
    std::fs::write(&spec, text).unwrap();
    let (_coord, url) = coordinator(dir.path(), &[]);
    let root = dir.path().join("trials");
    let _w = worker(
        dir.path(),
        &url,
        "w",
        &["--trial-root", root.to_str().unwrap(), "--slots", "2"],
    );
    let sweep = submit_wait(&spec, &url, Duration::from_secs(120));
    let r = results(&sweep, &url);
    let mut seen = BTreeSet::new();
    for t in r["trials"].as_array().unwrap() {
        assert_eq!(t["state"], "completed", "{t}");
        let v = t["params"]["v"].as_str().unwrap().to_owned();
        let i = t["trial"].as_u64().unwrap();
        let argv: Vec<String> = serde_json::from_str(
            &std::fs::read_to_string(root.join(&sweep).join(format!("trial-{i:05}/argv.json")))
                .unwrap(),
        )
        .unwrap();
        let want = ["--a", &v, "--b", &v, "--c", &v, &format!("x{v}y")].map(String::from);
        assert_eq!(argv, want, "{v:?}");
        seen.insert(v);
    }
    assert_eq!(seen.len(), values.len());
    for d in [dir.path().to_path_buf(), root.join(&sweep)] {
        assert!(
            !d.join("F").exists(),
            "a value ran a command in {}",
            d.display()
        );
    }
    let found: Vec<PathBuf> = files_under(dir.path())
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "F"))
        .collect();
    assert!(found.is_empty(), "{found:?}");
}

/// A TPE + ASHA sweep of the resumable program, each attempt leaving a daemon.
fn storm_spec(dir: &Path, name: &str) -> PathBuf {
    let prog = root().join("tests/command/epochs.py");
    let text = format!(
        r#"name = "{name}"
[trial]
command = ["python3", {prog:?}, "6", "0", "0.15", "{{x}}", "1"]
[search]
algorithm = "tpe"
metric = "val_loss"
num_samples = 16
max_concurrent = 4
seed = 3
[search.tpe]
n_startup_trials = 4
[search.space]
x = {{ type = "uniform", low = 0.0, high = 1.0 }}
[search.scheduler]
type = "asha"
grace_period = 2
reduction_factor = 2
max_t = 6
"#,
        prog = prog.display().to_string()
    );
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

/// Checks what a finished command-trial sweep must be after any storm: no trial failed,
/// every history whole (steps 1..last, none missing), no two attempts of a trial ever
/// overlapping (from the programs' own ledgers), and nothing of the sweep left running.
fn check_storm(sweep: &str, url: &str, root: &Path) {
    let r = results(sweep, url);
    let trials = r["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 16, "{r}");
    let count = |k: &str| {
        trials
            .iter()
            .map(|t| t[k].as_u64().unwrap_or(0))
            .sum::<u64>()
    };
    let pruned = trials.iter().filter(|t| t["state"] == "pruned").count();
    eprintln!(
        "{sweep}: {} attempts, {} interrupted, {pruned} pruned",
        count("attempts"),
        count("interrupted")
    );
    for t in trials {
        let state = t["state"].as_str().unwrap();
        assert!(state == "completed" || state == "pruned", "{t}");
        let s = steps(t);
        let last = *s.last().unwrap();
        assert_eq!(s, (1..=last).collect::<Vec<_>>(), "history with holes: {t}");
        if state == "completed" {
            assert_eq!(last, 6, "{t}");
        }
        let i = t["trial"].as_u64().unwrap();
        let ledger = own_ledger(&root.join(sweep).join(format!("trial-{i:05}")));
        assert!(
            !ledger.iter().any(|e| e["event"] == "overlap"),
            "trial {i}: two attempts at once: {ledger:?}"
        );
    }
    wait_until(
        "every program and daemon of the sweep to end",
        Duration::from_secs(20),
        || processes_of(sweep).is_empty(),
    );
}

#[test]
fn a_kill_storm_of_workers_and_coordinators_loses_no_command_trial() {
    let dir = KeptOnFailure::new();
    let timing = ["--lease-ttl-ms", "1500", "--heartbeat-interval-ms", "200"];
    // Undisturbed, for reference.
    let calm = dir.path().join("calm");
    std::fs::create_dir_all(&calm).unwrap();
    let (_c, url) = coordinator(&calm, &timing);
    let calm_root = calm.join("trials");
    let cr = calm_root.to_str().unwrap();
    let _w = [
        worker(&calm, &url, "a", &["--slots", "2", "--trial-root", cr]),
        worker(&calm, &url, "b", &["--slots", "2", "--trial-root", cr]),
    ];
    let s = submit_wait(
        &storm_spec(dir.path(), "calm"),
        &url,
        Duration::from_secs(300),
    );
    check_storm(&s, &url, &calm_root);
    drop(_w);

    // The storm: workers and the coordinator killed with SIGKILL, twice the coordinator
    // within a second, while trials run and report.
    let hot = dir.path().join("storm");
    std::fs::create_dir_all(&hot).unwrap();
    let (mut coord, url) = coordinator(&hot, &timing);
    let addr = url.trim_start_matches("http://").to_owned();
    let root = hot.join("trials");
    let tr = root.to_str().unwrap().to_owned();
    let start = |name: &str| worker(&hot, &url, name, &["--slots", "2", "--trial-root", &tr]);
    let mut a = start("a");
    let mut b = start("b");
    let sweep = submit(&storm_spec(dir.path(), "storm"), &url);
    let running = |min: usize| {
        let r = results(&sweep, &url);
        r["trials"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["state"] == "running")
            .count()
            >= min
    };
    let mut n = 0;
    for round in 0..4 {
        wait_until("trials to run", Duration::from_secs(60), || running(2));
        std::thread::sleep(Duration::from_millis(300 + 150 * round));
        match round {
            0 => {
                kill9(&mut a);
                a = start("a2");
            }
            1 => {
                // Two restarts within a second.
                kill9(&mut coord);
                n += 1;
                let mut c = restart_coordinator(&hot, &addr, &timing, &format!("coordinator-{n}"));
                std::thread::sleep(Duration::from_millis(400));
                kill9(&mut c);
                n += 1;
                coord = restart_coordinator(&hot, &addr, &timing, &format!("coordinator-{n}"));
            }
            2 => {
                kill9(&mut b);
                kill9(&mut coord);
                n += 1;
                coord = restart_coordinator(&hot, &addr, &timing, &format!("coordinator-{n}"));
                b = start("b2");
            }
            _ => {
                kill9(&mut a);
                a = start("a3");
            }
        }
    }
    wait_until("the storm's sweep to end", Duration::from_secs(300), || {
        let st = run(
            &["status", &sweep, "--coordinator", &url],
            Duration::from_secs(30),
        );
        String::from_utf8_lossy(&st.stdout).contains(" completed: ")
    });
    check_storm(&sweep, &url, &root);
    drop((a, b, coord));
}
