//! `run`, `submit --wait` and `watch` fail when trials failed for good, and say why:
//! each distinct reason with how many trials it took; `--allow-failures` exits 0 and
//! still says it. A metric name the program never reported names the ones it did.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

/// Two shell trials running `command`, the sweep's metric `metric`.
fn spec(dir: &Path, name: &str, command: &str, metric: &str) -> PathBuf {
    let text = format!(
        r#"name = "{name}"
[trial]
command = {command:?}
[search]
algorithm = "grid"
metric = "{metric}"
[search.space]
i = {{ type = "grid", values = [1, 2] }}
"#
    );
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

/// `ridgeline submit SPEC --wait`, however it ends.
fn submit_waiting(spec: &Path, url: &str) -> std::process::Output {
    let spec = spec.to_str().unwrap();
    run(
        &["submit", spec, "--coordinator", url, "--wait"],
        Duration::from_secs(120),
    )
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn failed_sweeps_fail_the_command_with_their_reasons() {
    let dir = KeptOnFailure::new();
    let (_coord, url) = coordinator(dir.path(), &[]);
    let _w = worker(dir.path(), &url, "w", &["--slots", "2"]);
    // Every trial fails: a typo in the program's name.
    let typo = spec(dir.path(), "typo", "pyhton3 train.py --i {i}", "val_loss");
    let o = submit_waiting(&typo, &url);
    let err = stderr(&o);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("2 of 2 trials failed:"), "{err}");
    assert!(
        err.contains("2 x exit status 127") && err.contains("pyhton3"),
        "{err}"
    );
    let id = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    // watch says the same of a sweep that has ended; --allow-failures exits 0.
    let o = run(
        &["watch", &id, "--coordinator", &url],
        Duration::from_secs(60),
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("2 x exit status 127"), "{}", stderr(&o));
    let o = run(
        &["watch", &id, "--coordinator", &url, "--allow-failures"],
        Duration::from_secs(60),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("2 of 2 trials failed:"));

    // The metric's name misspelt: the reason names what the program did report.
    let cmd = "echo 'ridgeline: {\"val_loss\": 0.{i}, \"acc\": 0.5}'";
    let misspelt = spec(dir.path(), "misspelt", cmd, "val_los");
    let o = submit_waiting(&misspelt, &url);
    let err = stderr(&o);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains(
            "2 x exited 0 without reporting val_los (1 report line(s), with acc, val_loss)"
        ),
        "{err}"
    );

    // Some trials fail, in an embedded run: non-zero, and the results are written.
    let half = spec(
        dir.path(),
        "half",
        "[ {i} = 1 ] && exit 4; echo 'ridgeline: {\"loss\": {i}}'",
        "loss",
    );
    let out = dir.path().join("out");
    let o = run_embedded_with(&half, 2, &out, Duration::from_secs(120), &[]);
    let err = stderr(&o);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("1 of 2 trials failed:") && err.contains("1 x exit status 4"),
        "{err}"
    );
    let r = results_of_run(&out);
    assert_eq!(r["trials"].as_array().unwrap().len(), 2);
    let o = run_embedded_with(
        &half,
        2,
        &dir.path().join("out2"),
        Duration::from_secs(120),
        &["--allow-failures"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn a_trial_without_output_says_so() {
    let dir = KeptOnFailure::new();
    let (_coord, url) = coordinator(dir.path(), &[]);
    let _w = worker(dir.path(), &url, "w", &[]);
    let quiet = spec(
        dir.path(),
        "quiet",
        "echo 'ridgeline: {\"loss\": {i}}'",
        "loss",
    );
    let id = submit_wait(&quiet, &url, Duration::from_secs(120));
    let o = run(
        &["logs", &id, "0", "--coordinator", &url],
        Duration::from_secs(30),
    );
    assert!(o.status.success());
    assert!(o.stdout.is_empty());
    assert!(
        stderr(&o).contains("trial 0 attempt 1: no output"),
        "{}",
        stderr(&o)
    );
}
