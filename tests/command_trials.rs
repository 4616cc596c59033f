//! Command trials over real processes: the shipped Python example under TPE and ASHA on
//! two worker processes, crashing and misbehaving commands, a worker killed with
//! SIGKILL in the middle of a trial, and a coordinator killed in the middle of a sweep.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

/// The example's spec with its script made slower (so that pruning meets running
/// processes) and its budget set.
fn python_spec(
    dir: &Path,
    name: &str,
    trials: u32,
    epoch_s: f64,
    epochs: u32,
) -> std::path::PathBuf {
    let example = root().join("examples/command");
    let text = std::fs::read_to_string(example.join("digits-tpe-asha.toml"))
        .unwrap()
        .replace("name = \"digits-tpe-asha\"", &format!("name = \"{name}\""))
        .replace(
            "\"--epochs\", \"9\"]",
            &format!("\"--epochs\", \"{epochs}\", \"--epoch-seconds\", \"{epoch_s}\"]"),
        )
        .replace("max_t = 9", &format!("max_t = {epochs}"))
        .replace("num_samples = 24", &format!("num_samples = {trials}"))
        .replace(
            "workdir = \".\"          # relative to this file (the default)",
            &format!("workdir = {:?}", example.display().to_string()),
        );
    assert!(
        text.contains("--epoch-seconds"),
        "the example changed: {text}"
    );
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

/// Two workers of two slots each, sharing one trial root.
fn two_workers(dir: &Path, url: &str, trial_root: &str) -> [Proc; 2] {
    ["w1", "w2"].map(|name| {
        worker(
            dir,
            url,
            name,
            &["--slots", "2", "--trial-root", trial_root],
        )
    })
}

/// A random search of `samples` trials of the shell command `command` (a TOML literal
/// string: no `'` in it), maximising `metric`.
fn shell_spec(dir: &Path, name: &str, command: &str, samples: u32, metric: &str) -> PathBuf {
    let spec = dir.join(format!("{name}.toml"));
    std::fs::write(
        &spec,
        format!(
            r#"name = "{name}"
[trial]
command = '{command}'
[search]
algorithm = "random"
num_samples = {samples}
metric = "{metric}"
mode = "max"
[search.space]
x = {{ type = "uniform", low = 0.0, high = 1.0 }}
"#
        ),
    )
    .unwrap();
    spec
}

fn trials(r: &serde_json::Value) -> &Vec<serde_json::Value> {
    r["trials"].as_array().unwrap()
}

fn log_of(sweep: &str, trial: u64, url: &str) -> String {
    run_ok(
        &["logs", sweep, &trial.to_string(), "--coordinator", url],
        Duration::from_secs(30),
    )
}

#[test]
fn python_example_with_tpe_and_asha_on_two_workers() {
    let dir = tempfile::tempdir().unwrap();
    let spec = python_spec(dir.path(), "py-asha", 16, 0.15, 9);
    let (_coord, url) = coordinator(dir.path(), &[]);
    let root = dir.path().join("trials");
    let tr = root.to_str().unwrap();
    let _workers = two_workers(dir.path(), &url, tr);
    let sweep = submit_wait(&spec, &url, Duration::from_secs(600));
    let r = results(&sweep, &url);
    let all = trials(&r);
    assert_eq!(all.len(), 16);
    let state = |t: &serde_json::Value| t["state"].as_str().unwrap().to_owned();
    let pruned: Vec<&serde_json::Value> = all.iter().filter(|t| state(t) == "pruned").collect();
    let completed: Vec<&serde_json::Value> =
        all.iter().filter(|t| state(t) == "completed").collect();
    assert!(!pruned.is_empty(), "nothing was pruned: {r}");
    assert!(!completed.is_empty(), "nothing completed: {r}");
    assert_eq!(pruned.len() + completed.len(), 16, "{r}");
    for t in &completed {
        assert_eq!(t["history"].as_array().unwrap().len(), 9, "{t}");
    }
    for t in &pruned {
        let steps = t["history"].as_array().unwrap().len();
        assert!(steps < 9, "a pruned trial ran to its end: {t}");
        assert!(
            t["error"].as_str().unwrap().starts_with("asha: val_loss"),
            "{t}"
        );
        // Its program was stopped where it was pruned: its log ends within an epoch or
        // two of its last report (the report travels while the next epoch runs).
        let log = log_of(&sweep, t["trial"].as_u64().unwrap(), &url);
        let last = log
            .lines()
            .filter_map(|l| {
                l.strip_prefix("epoch ")?
                    .split(':')
                    .next()?
                    .parse::<usize>()
                    .ok()
            })
            .max()
            .unwrap_or(0);
        assert!(
            last >= 1 && last <= steps + 2 && last < 9,
            "log of {t}: {log}"
        );
        assert!(
            !log.contains("ridgeline:"),
            "report lines stay out of the log"
        );
    }
    // Logs of completed trials have every epoch.
    let t0 = completed[0]["trial"].as_u64().unwrap();
    let log = log_of(&sweep, t0, &url);
    assert!(log.contains("epoch 9: train loss"), "{log}");
    wait_until(
        "every trial process to exit",
        Duration::from_secs(30),
        || processes_of(&sweep).is_empty(),
    );
    // The best is a completed trial, and the best value is theirs.
    let best = r["best_trial"].as_u64().unwrap();
    assert!(completed.iter().any(|t| t["trial"].as_u64() == Some(best)));
}

#[test]
fn misbehaving_commands_fail_diverge_or_time_out_with_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("bad.toml");
    std::fs::write(
        &spec,
        r#"
name = "bad"
[trial]
command = """
case {mode} in
  crash) echo "about to fail" >&2; echo "boom {mode}" >&2; exit 3 ;;
  silent) echo "no report" ;;
  nan) echo 'ridgeline: {"step": 1, "loss": NaN}'; sleep 30 ;;
  slow) sleep 30 ;;
  garbled) echo 'ridgeline: {"loss": 0.5'; sleep 30 ;;
  file) echo '{"step": 1, "loss": 0.25}' >> "$RIDGELINE_REPORT_FILE"; echo "$RIDGELINE_PARAM_MODE:$RIDGELINE_PARAMS" ;;
  missing) no-such-program-xyz --train ;;
esac
"""
timeout = 3
kill_grace = 1
[search]
algorithm = "grid"
metric = "loss"
[search.space]
mode = { type = "grid", values = ["crash", "silent", "nan", "slow", "garbled", "file", "missing"] }
"#,
    )
    .unwrap();
    let out = dir.path().join("out");
    let started = Instant::now();
    let o = run_embedded_with(&spec, 3, &out, Duration::from_secs(120), &[]);
    // Trials failed for good: the command says why, each reason with its count, and
    // exits non-zero.
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains(" of 7 trials failed:"), "{err}");
    assert!(
        err.contains("1 x exited 0 without reporting loss (0 report line(s))"),
        "{err}"
    );
    assert!(err.contains("--allow-failures"), "{err}");
    // The shell's own words for a missing program, not just its exit status.
    assert!(
        err.contains("1 x exit status 127 (command not found: a program in trial.command); stderr ends with: ")
            && err.contains("not found"),
        "{err}"
    );
    let r = results_of_run(&out);
    // Nothing waited for its 30 s sleep: NaN, garbled reports and the timeout stop it.
    assert!(started.elapsed() < Duration::from_secs(60));
    let by_mode = |m: &str| {
        trials(&r)
            .iter()
            .find(|t| t["params"]["mode"] == m)
            .unwrap_or_else(|| panic!("no trial {m}: {r}"))
            .clone()
    };
    let crash = by_mode("crash");
    assert_eq!(crash["state"], "failed");
    assert_eq!(crash["attempts"], 3, "a crash is retried: {crash}");
    let e = crash["error"].as_str().unwrap();
    assert!(
        e.contains("exit status 3") && e.contains("boom crash") && e.contains("about to fail"),
        "{e}"
    );
    let silent = by_mode("silent");
    assert_eq!(silent["state"], "failed");
    assert_eq!(
        silent["attempts"], 1,
        "exiting 0 without a metric is not retried"
    );
    assert!(
        silent["error"]
            .as_str()
            .unwrap()
            .contains("without reporting loss"),
        "{silent}"
    );
    let nan = by_mode("nan");
    assert_eq!(nan["state"], "diverged", "{nan}");
    let slow = by_mode("slow");
    assert_eq!(slow["state"], "failed");
    assert!(
        slow["error"].as_str().unwrap().contains("timed out"),
        "{slow}"
    );
    let garbled = by_mode("garbled");
    assert_eq!(garbled["state"], "failed");
    assert!(
        garbled["error"]
            .as_str()
            .unwrap()
            .contains("bad report line"),
        "{garbled}"
    );
    let missing = by_mode("missing");
    assert_eq!(missing["state"], "failed");
    assert_eq!(
        missing["attempts"], 1,
        "a missing program is missing everywhere"
    );
    let e = missing["error"].as_str().unwrap();
    assert!(
        e.contains("command not found") && e.contains("no-such-program-xyz"),
        "{e}"
    );
    let file = by_mode("file");
    assert_eq!(file["state"], "completed", "{file}");
    assert_eq!(file["metrics"]["loss"], 0.25, "{file}");
    // The parameters reached the program as variables; its output is its log.
    let sweep_dir = std::fs::read_dir(out.join("sweeps"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let trial = file["trial"].as_u64().unwrap();
    let log = std::fs::read_to_string(sweep_dir.join(format!("trials/{trial:05}/attempt-1.log")))
        .unwrap();
    assert_eq!(log.trim(), r#"file:{"mode":"file"}"#);
}

#[test]
fn a_trial_survives_kill_9_of_its_worker_and_resumes_from_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let spec = python_spec(dir.path(), "resume", 1, 0.4, 8);
    // No scheduler: one trial, run to its end.
    let text = std::fs::read_to_string(&spec).unwrap();
    let text = text[..text.find("[search.scheduler]").unwrap()].to_owned();
    std::fs::write(&spec, text).unwrap();
    let (_coord, url) = coordinator(
        dir.path(),
        &["--lease-ttl-ms", "1500", "--heartbeat-interval-ms", "200"],
    );
    let shared = dir.path().join("shared");
    let tr = shared.to_str().unwrap();
    let mut a = worker(dir.path(), &url, "a", &["--trial-root", tr]);
    let sweep = submit(&spec, &url);
    let ckpt = shared.join(&sweep).join("trial-00000/checkpoint.json");
    wait_until("two epochs of checkpoints", Duration::from_secs(60), || {
        std::fs::read_to_string(&ckpt)
            .ok()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .is_some_and(|v| v["epoch"].as_u64().unwrap_or(0) >= 2)
    });
    assert!(!processes_of(&sweep).is_empty(), "the trial runs");
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    // The kernel tells the trial's supervisor, which takes the whole group down.
    wait_until(
        "the orphaned trial to stop",
        Duration::from_secs(15),
        || processes_of(&sweep).is_empty(),
    );
    let _b = worker(dir.path(), &url, "b", &["--trial-root", tr]);
    wait_until(
        "the trial to finish elsewhere",
        Duration::from_secs(120),
        || trials(&results(&sweep, &url))[0]["state"] == "completed",
    );
    let t = trials(&results(&sweep, &url))[0].clone();
    assert_eq!(t["attempts"], 2, "{t}");
    assert!(t["worker"].as_str().unwrap().ends_with("-b"), "{t}");
    let second = run_ok(
        &["logs", &sweep, "0", "--attempt", "2", "--coordinator", &url],
        Duration::from_secs(30),
    );
    assert!(second.contains("resuming from epoch"), "{second}");
    // The resumed attempt trained only the epochs that were missing.
    let epochs: BTreeSet<u32> = second
        .lines()
        .filter_map(|l| l.strip_prefix("epoch ")?.split(':').next()?.parse().ok())
        .collect();
    assert!(!epochs.contains(&1) && epochs.contains(&8), "{second}");
}

#[test]
fn coordinator_kill_9_in_a_tpe_asha_sweep_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let spec = python_spec(dir.path(), "restart", 20, 0.1, 9);
    let timing = ["--lease-ttl-ms", "3000", "--heartbeat-interval-ms", "200"];
    let (mut coord, url) = coordinator(dir.path(), &timing);
    let addr = url.trim_start_matches("http://").to_owned();
    let tr = dir.path().join("trials");
    let tr = tr.to_str().unwrap();
    let _workers = two_workers(dir.path(), &url, tr);
    let sweep = submit(&spec, &url);
    // Kill the coordinator once TPE is past its random start and trials are running.
    wait_until("a dozen trials to end", Duration::from_secs(300), || {
        let r = results(&sweep, &url);
        trials(&r)
            .iter()
            .filter(|t| t["state"] == "completed" || t["state"] == "pruned")
            .count()
            >= 12
    });
    let before = results(&sweep, &url);
    coord.child.kill().unwrap();
    coord.child.wait().unwrap();
    let dd = dir.path().to_str().unwrap();
    let mut args = vec!["coordinator", "--listen", addr.as_str(), "--data-dir", dd];
    args.extend_from_slice(&timing);
    let _coord = spawn("coordinator-restarted", &args, dir.path());
    wait_until("the sweep to finish", Duration::from_secs(300), || {
        let st = run(
            &["status", &sweep, "--coordinator", &url],
            Duration::from_secs(30),
        );
        String::from_utf8_lossy(&st.stdout).contains(" completed: ")
    });
    let after = results(&sweep, &url);
    let all = trials(&after);
    // Every trial once, each in one final state.
    let ids: Vec<u64> = all.iter().map(|t| t["trial"].as_u64().unwrap()).collect();
    assert_eq!(ids, (0..20).collect::<Vec<_>>(), "{after}");
    for t in all {
        let s = t["state"].as_str().unwrap();
        assert!(s == "completed" || s == "pruned", "{t}");
    }
    // What was decided before the kill stands: finished trials keep their state, their
    // parameters and (pruned ones) their reason.
    for b in trials(&before) {
        if b["state"] == "completed" || b["state"] == "pruned" {
            let a = &all[b["trial"].as_u64().unwrap() as usize];
            for key in ["state", "params", "error", "metrics"] {
                assert_eq!(a[key], b[key], "trial {} changed its {key}", b["trial"]);
            }
        }
    }
    // Parameters never repeat (TPE's state came back, and suggestions went on from it).
    let points: BTreeSet<String> = all.iter().map(|t| t["params"].to_string()).collect();
    assert_eq!(points.len(), 20);
    wait_until(
        "every trial process to exit",
        Duration::from_secs(30),
        || processes_of(&sweep).is_empty(),
    );
}

#[test]
fn a_trial_gets_the_environment_the_worker_was_given() {
    // The worker sets RAYON_NUM_THREADS for itself (candle's thread count, decided
    // once); a trial's program sees it only when the person running the worker set it.
    let dir = tempfile::tempdir().unwrap();
    let spec = shell_spec(
        dir.path(),
        "env",
        r#"t=${RAYON_NUM_THREADS:--1}; echo "ridgeline: {\"threads\": $t}""#,
        1,
        "threads",
    );
    let inherited: f64 = std::env::var("RAYON_NUM_THREADS").map_or(-1.0, |v| v.parse().unwrap());
    for (env, want) in [(None, inherited), (Some("3"), 3.0)] {
        let out = dir.path().join(format!("out-{want}"));
        let mut args = vec![
            "run",
            spec.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend(["--workers", "1"]);
        let vars: Vec<(&str, &str)> = env.map(|v| ("RAYON_NUM_THREADS", v)).into_iter().collect();
        let o = run_with(&args, Duration::from_secs(120), &vars);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let r = results_of_run(&out);
        assert_eq!(trials(&r)[0]["metrics"]["threads"], want, "{r}");
    }
}

#[test]
fn shell_one_liner_objective_is_minimised() {
    let dir = tempfile::tempdir().unwrap();
    let spec = root().join("examples/command/shell-objective.toml");
    let r = run_embedded(&spec, 2, &dir.path().join("out"), Duration::from_secs(120));
    let all = trials(&r);
    assert_eq!(all.len(), 40);
    // Recompute each trial's objective from its parameters: the program's report is
    // what was stored.
    for t in all {
        assert_eq!(t["state"], "completed", "{t}");
        let (x, y) = (
            t["params"]["x"].as_f64().unwrap(),
            t["params"]["y"].as_f64().unwrap(),
        );
        let want = (x - 2.0).powi(2) + (y + 1.0).powi(2);
        assert!(
            (t["metrics"]["loss"].as_f64().unwrap() - want).abs() < 1e-5,
            "{t}"
        );
    }
    // TPE found the bowl's bottom at (2, -1): random draws on [-5, 5]^2 land within
    // 0.5 of it once in about 130 tries.
    let best = all
        .iter()
        .map(|t| t["metrics"]["loss"].as_f64().unwrap())
        .fold(f64::INFINITY, f64::min);
    assert!(best < 0.25, "best loss {best}");
}

#[test]
fn logs_follow_a_running_trial_and_cancel_stops_its_whole_group() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("ticks.toml");
    std::fs::write(
        &spec,
        r#"
name = "ticks"
[trial]
# A grandchild that would outlive a careless kill, then a slow count.
command = "sleep 1000 & for i in $(seq 1 300); do echo tick $i; sleep 0.1; done; echo 'ridgeline: {\"loss\": 1}'"
kill_grace = 2
[search]
algorithm = "random"
metric = "loss"
[search.space]
x = { type = "uniform", low = 0.0, high = 1.0 }
"#,
    )
    .unwrap();
    let (_coord, url) = coordinator(dir.path(), &[]);
    let tr = dir.path().join("trials");
    let _w = worker(
        dir.path(),
        &url,
        "w",
        &["--trial-root", tr.to_str().unwrap()],
    );
    let sweep = submit(&spec, &url);
    // Started before the trial exists: it waits for it.
    let out = dir.path().join("follow.out");
    let mut follow = std::process::Command::new(bin())
        .args(["logs", &sweep, "0", "--follow", "--coordinator", &url])
        .stdout(std::fs::File::create(&out).unwrap())
        .spawn()
        .unwrap();
    wait_until(
        "ten ticks through `logs --follow`",
        Duration::from_secs(60),
        || {
            std::fs::read_to_string(&out)
                .unwrap_or_default()
                .contains("tick 10\n")
        },
    );
    assert!(
        processes_of(&sweep).len() >= 2,
        "the command and its sleep run"
    );
    run_ok(
        &["cancel", &sweep, "--coordinator", &url],
        Duration::from_secs(30),
    );
    wait_until(
        "the trial's processes, grandchild included, to stop",
        Duration::from_secs(15),
        || processes_of(&sweep).is_empty(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while follow.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "`logs --follow` did not end with its trial"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Every line once, in order, and the count stopped early. (The shell may add a line
    // of its own on stderr when its `sleep` is terminated.)
    let text = std::fs::read_to_string(&out).unwrap();
    let ticks: Vec<u32> = text
        .lines()
        .filter(|l| *l != "Terminated")
        .map(|l| {
            l.strip_prefix("tick ")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("line {l:?} in {text}"))
        })
        .collect();
    assert_eq!(ticks, (1..=ticks.len() as u32).collect::<Vec<_>>());
    assert!(
        ticks.len() >= 10 && ticks.len() < 300,
        "{} ticks",
        ticks.len()
    );
    let r = results(&sweep, &url);
    assert_eq!(trials(&r)[0]["state"], "cancelled");
}

/// The worker's children named `ridgeline-spawn`: its launcher.
fn launchers_of(worker: u32) -> Vec<u32> {
    std::fs::read_dir(format!("/proc/{worker}/task"))
        .unwrap()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok())
                .collect::<Vec<_>>()
        })
        .filter(|p| {
            !gone(*p)
                && std::fs::read_to_string(format!("/proc/{p}/comm"))
                    .is_ok_and(|c| c.trim() == "ridgeline-spawn")
        })
        .collect()
}

#[test]
fn supervisors_come_from_the_launcher_and_trials_outlive_its_loss() {
    // Each trial reports whether its supervisor was cloned by the launcher (the name it
    // was cloned with) and the supervisor's parent.
    let dir = tempfile::tempdir().unwrap();
    let spec = shell_spec(
        dir.path(),
        "who",
        r#"read -r _ comm _ parent _ < /proc/$PPID/stat; l=0; [ "$comm" = "(ridgeline-spawn)" ] && l=1; echo "ridgeline: {\"launcher\": $l, \"parent\": $parent}""#,
        6,
        "launcher",
    );
    let (_coord, url) = coordinator(dir.path(), &[]);
    let mut w = worker(dir.path(), &url, "w", &["--slots", "2"]);
    let pid = w.child.id();
    let check = |launcher: f64| {
        let sweep = submit_wait(&spec, &url, Duration::from_secs(120));
        let r = results(&sweep, &url);
        assert_eq!(trials(&r).len(), 6, "{r}");
        for t in trials(&r) {
            assert_eq!(t["state"], "completed", "{t}");
            assert_eq!(t["metrics"]["launcher"], launcher, "{t}");
            // The worker's child either way: it reaps it, and its death ends it.
            assert_eq!(t["metrics"]["parent"], f64::from(pid), "{t}");
        }
    };
    wait_until("the launcher", Duration::from_secs(10), || {
        launchers_of(pid).len() == 1
    });
    check(1.0);
    // A launcher that dies: the worker clones the supervisors itself, and no trial is
    // lost.
    let launcher = launchers_of(pid)[0];
    let killed = std::process::Command::new("kill")
        .args(["-9", &launcher.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    check(0.0);
    assert!(gone(launcher));
    // The launcher ends with its worker, even killed with SIGKILL.
    let w2 = worker(dir.path(), &url, "w2", &[]);
    let pid2 = w2.child.id();
    wait_until("the second launcher", Duration::from_secs(10), || {
        launchers_of(pid2).len() == 1
    });
    let launcher2 = launchers_of(pid2)[0];
    drop(w2);
    wait_until("the launcher to end", Duration::from_secs(10), || {
        gone(launcher2)
    });
    w.child.kill().unwrap();
}

#[test]
fn trial_cgroups_are_reused_and_removed_with_their_worker() {
    let Some(cgroups) = own_cgroup_v2() else {
        // The subreaper alone contains trials here: `command_resume` tests it.
        eprintln!("no writable cgroup v2 on this host: nothing to check");
        return;
    };
    // A cgroup left by a worker that was killed: a pid that no longer runs.
    let mut gone_child = std::process::Command::new("true").spawn().unwrap();
    let dead = gone_child.id();
    gone_child.wait().unwrap();
    let left = cgroups.join(format!("ridgeline-{dead}-3"));
    std::fs::create_dir(&left).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let spec = shell_spec(
        dir.path(),
        "pooled",
        r#"cat /proc/self/cgroup > "$RIDGELINE_TRIAL_DIR/cgroup"; echo "ridgeline: {\"loss\": 1}""#,
        8,
        "loss",
    );
    let out = dir.path().join("out");
    let run = std::process::Command::new(bin())
        .args(["run", spec.to_str().unwrap(), "--workers", "2", "--out"])
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = run.id();
    let ended = run.wait_with_output().unwrap();
    assert!(ended.status.success(), "{ended:?}");

    // Every trial ran in a cgroup of its worker process; two slots need two at most.
    let mut used = BTreeSet::new();
    let sweep = std::fs::read_dir(out.join("trial-dirs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    for t in 0..8 {
        let file = sweep.join(format!("trial-{t:05}/cgroup"));
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| {
            let found = std::process::Command::new("find")
                .arg(&out)
                .output()
                .unwrap();
            panic!(
                "{}: {e}\n{}",
                file.display(),
                String::from_utf8_lossy(&found.stdout)
            )
        });
        let path = text.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
        let name = path.rsplit('/').next().unwrap().to_owned();
        assert!(name.starts_with(&format!("ridgeline-{pid}-")), "{text}");
        used.insert(name);
    }
    assert!(
        (1..=2).contains(&used.len()),
        "8 trials, 2 at a time, in {used:?}"
    );
    // The worker removed its own when it stopped, and the dead worker's at its first trial.
    for name in &used {
        assert!(!cgroups.join(name).exists(), "{name} outlived its worker");
    }
    assert!(!left.exists(), "a dead worker's cgroup was left");
}
