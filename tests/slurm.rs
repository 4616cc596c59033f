//! deploy/slurm/ on a real Slurm cluster: one node (slurmctld, slurmd and munged from
//! Debian's packages, which scripts/test installs) in a private folder. The sweep job runs the
//! digits grid with an elastic-worker array beside it, its files land in the submit
//! folder and its secrets do not; a job stopped by SIGTERM (what `--signal` sends near
//! the time limit) hands its units back and a second job finishes the same sweep. Fails,
//! never skips, when Slurm cannot start.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{KeptOnFailure, bin, files_under, free_port, root};

/// The private cluster, stopped when dropped.
struct Cluster {
    dir: PathBuf,
    conf: String,
}

impl Cluster {
    fn start(dir: &Path) -> Cluster {
        let script = root().join("tests/slurm/cluster.sh");
        let out = Command::new("bash")
            .arg(&script)
            .args(["start", dir.to_str().unwrap()])
            .arg(free_port().to_string())
            .arg(free_port().to_string())
            .output()
            .expect("run tests/slurm/cluster.sh");
        assert!(
            out.status.success(),
            "the Slurm cluster did not start:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let conf = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("SLURM_CONF=").map(str::to_owned))
            .expect("cluster.sh prints SLURM_CONF");
        Cluster {
            dir: dir.to_owned(),
            conf,
        }
    }

    /// A Slurm command run from `cwd` with the job environment `env`.
    fn cmd(&self, prog: &str, args: &[&str], cwd: &Path, env: &[(&str, String)]) -> String {
        let out = Command::new(prog)
            .args(args)
            .current_dir(cwd)
            .env("SLURM_CONF", &self.conf)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap_or_else(|e| panic!("{prog}: {e}"));
        assert!(
            out.status.success(),
            "{prog} {args:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Waits until none of `jobs` is queued or running.
    fn wait_gone(&self, jobs: &[&str], cwd: &Path, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let list = jobs.join(",");
        loop {
            let q = self.cmd("squeue", &["-h", "-j", &list, "-o", "%i %T"], cwd, &[]);
            if q.trim().is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "jobs still queued after {timeout:?}:\n{q}\n{}",
                self.logs(cwd)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Each job's (or array task's) final state and exit code, from slurmctld.
    fn states(&self, job: &str, cwd: &Path) -> Vec<(String, String)> {
        let out = self.cmd("scontrol", &["-o", "show", "job", job], cwd, &[]);
        out.lines()
            .map(|l| {
                let field = |k: &str| {
                    l.split_whitespace()
                        .find_map(|f| f.strip_prefix(k))
                        .unwrap_or("?")
                        .to_owned()
                };
                (field("JobState="), field("ExitCode="))
            })
            .collect()
    }

    /// Every job output in the submit folder, for failure messages.
    fn logs(&self, cwd: &Path) -> String {
        let mut s = String::new();
        for e in std::fs::read_dir(cwd).unwrap().flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "out") {
                s += &format!(
                    "--- {}\n{}\n",
                    p.display(),
                    std::fs::read_to_string(&p).unwrap_or_default()
                );
            }
        }
        s
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(root().join("tests/slurm/cluster.sh"))
            .args(["stop", self.dir.to_str().unwrap()])
            .status();
    }
}

/// results.csv as rows of column -> value.
fn rows(csv: &Path) -> Vec<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(csv).unwrap_or_else(|e| panic!("{}: {e}", csv.display()));
    let mut lines = text.lines();
    let head: Vec<&str> = lines.next().unwrap().split(',').collect();
    lines
        .map(|l| {
            head.iter()
                .zip(l.split(','))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// The sweep id a job printed.
fn sweep_of(output: &str) -> String {
    output
        .lines()
        .find_map(|l| l.strip_prefix("ridgeline: sweep "))
        .and_then(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("the job printed no sweep id:\n{output}"))
}

#[test]
fn sweep_job_with_elastic_workers_and_a_resumed_time_limit_on_a_real_slurm_cluster() {
    let tmp = KeptOnFailure::new();
    let cluster = Cluster::start(&tmp.path().join("slurm"));
    let submit = tmp.path().join("submit");
    std::fs::create_dir_all(&submit).unwrap();
    // The digits grid six times over (54 trials): long enough on one slot that the
    // elastic workers, which start within seconds, take part.
    let spec = std::fs::read_to_string(root().join("examples/digits-grid.toml"))
        .unwrap()
        .replace(
            "path = \"data/digits.csv.gz\"",
            &format!(
                "path = \"{}\"",
                root().join("examples/data/digits.csv.gz").display()
            ),
        )
        .replace("num_samples = 1 ", "num_samples = 6 ");
    assert!(spec.contains("num_samples = 6"), "the example changed");
    std::fs::write(submit.join("digits-grid.toml"), spec).unwrap();
    let port = free_port().to_string();
    let env = [
        ("RIDGELINE_BIN", bin().display().to_string()),
        ("RIDGELINE_PORT", port),
        // Ports of their own choosing: other tests may be listening on the defaults.
        ("RIDGELINE_METRICS_LISTEN", "127.0.0.1:0".to_owned()),
        ("RIDGELINE_WORKER_METRICS", "off".to_owned()),
        ("RIDGELINE_SLOTS", "1".to_owned()),
        ("RIDGELINE_IDLE_TIMEOUT", "5s".to_owned()),
    ];
    let sbatch = root().join("deploy/slurm/ridgeline.sbatch");
    let elastic = root().join("deploy/slurm/ridgeline-workers.sbatch");

    // 1. A sweep job and two elastic workers (submitted at once: the array waits for
    //    the sweep job's coordinator by itself).
    let sbatch_job = |args: &[&str]| {
        let mut all = vec!["--parsable"];
        all.extend_from_slice(args);
        cluster.cmd("sbatch", &all, &submit, &env).trim().to_owned()
    };
    let script = sbatch.to_str().unwrap();
    let job = sbatch_job(&[script, "digits-grid.toml"]);
    let array = sbatch_job(&["--array=0-1", elastic.to_str().unwrap(), &job]);
    cluster.wait_gone(&[&job, &array], &submit, Duration::from_secs(600));
    let logs = cluster.logs(&submit);
    let states = cluster.states(&job, &submit);
    assert_eq!(
        states,
        [("COMPLETED".to_owned(), "0:0".to_owned())],
        "{logs}"
    );
    let array_states = cluster.states(&array, &submit);
    assert_eq!(array_states.len(), 2, "{array_states:?}");
    // Elastic workers leave by themselves once idle: their tasks complete.
    for s in &array_states {
        assert_eq!(s.0, "COMPLETED", "{array_states:?}\n{logs}");
    }
    let out = std::fs::read_to_string(submit.join(format!("ridgeline-{job}.out"))).unwrap();
    let sweep = sweep_of(&out);
    let results = submit.join("ridgeline-results").join(&sweep);
    let trials = rows(&results.join("results.csv"));
    assert_eq!(trials.len(), 54, "{logs}");
    assert!(
        trials.iter().all(|t| t["state"] == "completed"),
        "{trials:?}"
    );
    // Some trials ran on the array's workers (named ARRAYJOB-TASK).
    let elastic_trials = trials
        .iter()
        .filter(|t| (0..2).any(|i| t["worker"].ends_with(&format!("-{array}-{i}"))))
        .count();
    assert!(
        elastic_trials > 0,
        "no trial ran on an elastic worker: {:?}\n{logs}",
        trials.iter().map(|t| &t["worker"]).collect::<Vec<_>>()
    );
    eprintln!("{elastic_trials} of 54 trials ran on the elastic workers");
    // Every file the coordinator holds came to the submit folder, byte for byte.
    let held = submit.join("ridgeline-data/sweeps").join(&sweep);
    let held_files = files_under(&held);
    assert!(held_files.len() >= 54 * 2, "{held_files:?}");
    for f in &held_files {
        assert_eq!(
            std::fs::read(held.join(f)).unwrap(),
            std::fs::read(results.join(f)).unwrap(),
            "{}",
            f.display()
        );
    }
    // No secret is left behind: the job's token and connection folder are gone.
    assert!(!submit.join(".ridgeline").exists(), "{logs}");
    let leftovers: Vec<_> = files_under(&submit)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("token"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // 2. SIGTERM to the batch shell, as `--signal=B:TERM@120` sends it near the time
    //    limit, once a few trials are done: the units go back and the job says how to
    //    go on; a second job with the sweep's id finishes it.
    let job2 = sbatch_job(&[script, "digits-grid.toml"]);
    let out2 = submit.join(format!("ridgeline-{job2}.out"));
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let text = std::fs::read_to_string(&out2).unwrap_or_default();
        let done = text
            .lines()
            .filter_map(|l| l.split_once(" running: "))
            .filter_map(|(_, r)| r.split('/').next()?.parse::<u32>().ok())
            .max()
            .unwrap_or(0);
        if done >= 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "job {job2} completed no trial:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    cluster.cmd(
        "scancel",
        &["--batch", "--signal=TERM", &job2],
        &submit,
        &[],
    );
    cluster.wait_gone(&[&job2], &submit, Duration::from_secs(120));
    let text = std::fs::read_to_string(&out2).unwrap();
    let sweep2 = sweep_of(&text);
    assert!(
        text.contains("handing units back")
            && text.contains(&format!("sbatch {}", sbatch.display())),
        "{text}"
    );
    assert!(
        text.contains(&format!("{sweep2} is not finished")),
        "{text}"
    );
    assert!(
        !submit.join("ridgeline-results").join(&sweep2).exists(),
        "an unfinished sweep was copied as if finished"
    );
    assert!(!submit.join(".ridgeline").exists(), "{text}");
    let job3 = sbatch_job(&[script, &sweep2]);
    cluster.wait_gone(&[&job3], &submit, Duration::from_secs(600));
    let logs = cluster.logs(&submit);
    assert_eq!(
        cluster.states(&job3, &submit),
        [("COMPLETED".to_owned(), "0:0".to_owned())],
        "{logs}"
    );
    let trials = rows(
        &submit
            .join("ridgeline-results")
            .join(&sweep2)
            .join("results.csv"),
    );
    assert_eq!(trials.len(), 54);
    assert!(
        trials
            .iter()
            .all(|t| t["state"] == "completed" && t["error"].is_empty()),
        "{trials:?}"
    );
    // The worker stopped by SIGTERM handed its unit back: no trial lost an attempt
    // (a lease handed back counts as interrupted, not as one of its attempts).
    let spent: Vec<i64> = trials
        .iter()
        .map(|t| t["attempts"].parse::<i64>().unwrap() - t["interrupted"].parse::<i64>().unwrap())
        .collect();
    eprintln!("attempts spent after the resumed job: {spent:?}");
    assert!(spent.iter().all(|a| *a == 1), "{spent:?}");
}
