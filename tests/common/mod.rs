//! Helpers for tests that run the real `ridgeline` binary as separate processes.

// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use ridgeline_common::rng::Rng;

/// The binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ridgeline"))
}

/// The repository root (examples live there).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A temporary folder removed when dropped, unless the test is failing: then it stays
/// (with every process's log in it) and its path is printed.
pub struct KeptOnFailure(Option<tempfile::TempDir>);

impl KeptOnFailure {
    pub fn new() -> Self {
        KeptOnFailure(Some(tempfile::tempdir().unwrap()))
    }

    pub fn path(&self) -> &Path {
        self.0.as_ref().expect("present until dropped").path()
    }
}

impl Drop for KeptOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(d) = self.0.take() {
                eprintln!("test failed: its folder is kept at {}", d.keep().display());
            }
        }
    }
}

/// A child process killed when dropped, so a failing test leaves nothing behind.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `ridgeline ARGS`, logging to `log_dir/name.log`.
pub fn spawn(name: &str, args: &[&str], log_dir: &Path) -> Proc {
    spawn_with(name, args, log_dir, &[])
}

/// Like [`spawn`], with extra environment variables.
pub fn spawn_with(name: &str, args: &[&str], log_dir: &Path, env: &[(&str, &str)]) -> Proc {
    let log = std::fs::File::create(log_dir.join(format!("{name}.log"))).unwrap();
    let child = Command::new(bin())
        .args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("start {name}: {e}"));
    Proc {
        child,
        name: name.into(),
    }
}

/// Runs `ridgeline ARGS` to completion within `timeout`, returning its output.
pub fn run(args: &[&str], timeout: Duration) -> Output {
    run_with(args, timeout, &[])
}

/// Like [`run`], with extra environment variables.
pub fn run_with(args: &[&str], timeout: Duration, env: &[(&str, &str)]) -> Output {
    let child = Command::new(bin())
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Output is drained on another thread while the child runs: a large result would
    // otherwise fill the pipe and block the child forever.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(timeout) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("ridgeline {args:?} did not finish in {timeout:?}");
        }
    }
}

/// Runs a command that must succeed and returns its standard output.
pub fn run_ok(args: &[&str], timeout: Duration) -> String {
    let out = run(args, timeout);
    assert!(
        out.status.success(),
        "ridgeline {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A port free on loopback now (another process may take it before it is used).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Every file under `dir`, as paths relative to it, sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_owned());
            }
        }
    }
    out.sort();
    out
}

/// Waits for a file to appear and returns its trimmed contents.
pub fn wait_for_file(path: &Path, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            if s.ends_with('\n') {
                return s.trim().to_owned();
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} did not appear in {timeout:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts a coordinator on a free loopback port; returns it and its URL.
pub fn coordinator(data_dir: &Path, extra: &[&str]) -> (Proc, String) {
    let _ = std::fs::remove_file(data_dir.join("coordinator.addr"));
    let dd = data_dir.to_str().unwrap();
    let mut args = vec!["coordinator", "--listen", "127.0.0.1:0", "--data-dir", dd];
    args.extend_from_slice(extra);
    let p = spawn("coordinator", &args, data_dir);
    let addr = wait_for_file(&data_dir.join("coordinator.addr"), Duration::from_secs(30));
    (p, format!("http://{addr}"))
}

/// Runs `ridgeline run SPEC --workers N --out OUT` and returns the results.json of the
/// one sweep it ran.
pub fn run_embedded(spec: &Path, workers: u32, out: &Path, timeout: Duration) -> serde_json::Value {
    let o = run_embedded_with(spec, workers, out, timeout, &[]);
    assert!(
        o.status.success(),
        "ridgeline run {} failed: {}\n{}",
        spec.display(),
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    results_of_run(out)
}

/// `ridgeline run SPEC --workers N --out OUT EXTRA...`, however it ends.
pub fn run_embedded_with(
    spec: &Path,
    workers: u32,
    out: &Path,
    timeout: Duration,
    extra: &[&str],
) -> Output {
    let n = workers.to_string();
    let mut args = vec![
        "run",
        spec.to_str().unwrap(),
        "--workers",
        &n,
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run(&args, timeout)
}

/// The results.json of the one sweep a `ridgeline run --out OUT` ran.
pub fn results_of_run(out: &Path) -> serde_json::Value {
    let sweep = std::fs::read_dir(out.join("sweeps"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    serde_json::from_str(&std::fs::read_to_string(sweep.join("results.json")).unwrap()).unwrap()
}

/// `ridgeline submit SPEC` to a coordinator; returns the sweep id.
pub fn submit(spec: &Path, url: &str) -> String {
    run_ok(
        &["submit", spec.to_str().unwrap(), "--coordinator", url],
        Duration::from_secs(30),
    )
    .trim()
    .to_owned()
}

/// `ridgeline submit SPEC --wait`: returns the sweep id once the sweep has ended.
pub fn submit_wait(spec: &Path, url: &str, timeout: Duration) -> String {
    let out = run_ok(
        &[
            "submit",
            spec.to_str().unwrap(),
            "--coordinator",
            url,
            "--wait",
        ],
        timeout,
    );
    out.lines()
        .next()
        .expect("submit prints the sweep id")
        .trim()
        .to_owned()
}

/// Starts `ridgeline worker` named `name` (logging to `dir/name.log`), with extra flags.
pub fn worker(dir: &Path, url: &str, name: &str, extra: &[&str]) -> Proc {
    let mut args = vec!["worker", "--coordinator", url, "--name", name];
    args.extend_from_slice(extra);
    // Command trials' folders go under the test's folder, never the working directory.
    let root = dir.join("ridgeline-trials");
    let root = root.to_str().unwrap().to_owned();
    if !extra.contains(&"--trial-root") {
        args.extend_from_slice(&["--trial-root", &root]);
    }
    spawn(name, &args, dir)
}

/// Writes regression data (250 samples, 5 features), a model's checkpoint (linear when
/// `hidden` is 0, else one ReLU layer of `hidden` units) and an `nx` x `ny` scan spec
/// cut into tiles of `tile` points; returns the spec path.
pub fn scan_fixture(dir: &Path, hidden: usize, nx: usize, ny: usize, tile: usize) -> PathBuf {
    let (n, d) = (250, 5);
    let mut r = Rng::new(17);
    let true_w: Vec<f64> = (0..d).map(|_| r.normal()).collect();
    let mut csv = String::new();
    for _ in 0..n {
        let x: Vec<f64> = (0..d).map(|_| r.normal()).collect();
        let t: f64 =
            x.iter().zip(&true_w).map(|(a, b)| a * b).sum::<f64>() + 0.3 * r.normal() + 0.5;
        let row: Vec<String> = x
            .iter()
            .chain(std::iter::once(&t))
            .map(|v| format!("{v:.6}"))
            .collect();
        csv += &(row.join(",") + "\n");
    }
    std::fs::write(dir.join("reg.csv"), csv).unwrap();
    let ckpt = dir.join("linear");
    std::fs::create_dir_all(&ckpt).unwrap();
    let model = format!(
        r#"{{"arch": "mlp", "input_dim": 5, "classes": 1, "depth": {}, "width": {}, "activation": "relu", "dropout": 0.0}}"#,
        usize::from(hidden > 0),
        hidden.max(1)
    );
    std::fs::write(ckpt.join("model.json"), model).unwrap();
    // A fitted-ish model, not the optimum: the slice is a tilted bowl.
    let w: Vec<f32> = true_w.iter().map(|v| (*v * 0.8 + 0.1) as f32).collect();
    let t = |v: Vec<f32>, shape: &[usize]| Tensor::from_vec(v, shape, &Device::Cpu).unwrap();
    let mut tensors = HashMap::new();
    if hidden == 0 {
        tensors.insert("layers.0.weight".to_owned(), t(w, &[1, d]));
        tensors.insert("layers.0.bias".to_owned(), t(vec![0.2], &[1]));
    } else {
        let mut g = |n: usize| {
            (0..n)
                .map(|_| (0.5 * r.normal()) as f32)
                .collect::<Vec<_>>()
        };
        tensors.insert("layers.0.weight".to_owned(), t(g(hidden * d), &[hidden, d]));
        tensors.insert("layers.0.bias".to_owned(), t(g(hidden), &[hidden]));
        tensors.insert("layers.1.weight".to_owned(), t(g(hidden), &[1, hidden]));
        tensors.insert("layers.1.bias".to_owned(), t(vec![0.2], &[1]));
    }
    candle_core::safetensors::save(&tensors, ckpt.join("model.safetensors")).unwrap();
    let spec = dir.join("scan.toml");
    std::fs::write(
        &spec,
        r#"
name = "linreg-scan"
kind = "landscape"
[data]
path = "reg.csv"
task = "regression"
target_columns = 1
normalize = "none"
[landscape]
checkpoint = "linear"
loss = "mse"
split = "train"
tile = TILE
batch_size = 64
x = { min = -1.0, max = 1.0, points = NX }
y = { min = -0.5, max = 1.5, points = NY }
directions = { seed = 3, normalization = "filter", ignore = "none" }
"#
        .replace("TILE", &tile.to_string())
        .replace("NX", &nx.to_string())
        .replace("NY", &ny.to_string()),
    )
    .unwrap();
    spec
}

/// A small random search on UCI digits: `trials` trials of `epochs` epochs.
pub fn digits_spec(
    dir: &std::path::Path,
    name: &str,
    trials: u32,
    epochs: u32,
) -> std::path::PathBuf {
    let data = root().join("examples/data/digits.csv.gz");
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(
        &p,
        format!(
            r#"
name = "{name}"
[data]
path = "{}"
limit = 300
[model]
depth = 1
width = 8
[train]
epochs = {epochs}
[search]
algorithm = "random"
num_samples = {trials}
seed = 0
[search.space]
lr = {{ type = "loguniform", low = 1e-3, high = 1e-2 }}
"#,
            data.display()
        ),
    )
    .unwrap();
    p
}

/// Every trial of a results.json has epochs exactly 1..=epochs: no holes, no repeats.
pub fn assert_whole_histories(results: &serde_json::Value, epochs: u64) {
    for t in results["trials"].as_array().unwrap() {
        let got: Vec<u64> = t["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["step"].as_u64().unwrap())
            .collect();
        assert_eq!(
            got,
            (1..=epochs).collect::<Vec<_>>(),
            "trial {} has holes in its history",
            t["trial"]
        );
    }
}

/// A Python interpreter that can import `modules`: `$RIDGELINE_PYTHON`, `python3`, or
/// Debian's `/usr/bin/python3` (where `scripts/test` installs `python3-h5py`). Panics, naming
/// the package to install, when none can: tests that read files with independent
/// tools fail rather than skip.
pub fn python_with(modules: &[&str]) -> String {
    let import = format!("import {}", modules.join(", "));
    let candidates = std::env::var("RIDGELINE_PYTHON")
        .into_iter()
        .chain(["python3".to_string(), "/usr/bin/python3".to_string()]);
    for py in candidates {
        let ok = Command::new(&py)
            .args(["-c", &import])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return py;
        }
    }
    panic!(
        "no Python can `{import}`: install Debian's python3-h5py (scripts/test does) or set RIDGELINE_PYTHON"
    )
}

/// Reads a float64 `.npy` file written by Ridgeline: shape and values.
pub fn read_npy(path: &Path) -> (Vec<usize>, Vec<f64>) {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[..6], b"\x93NUMPY");
    let hl = u16::from_le_bytes([b[8], b[9]]) as usize;
    let header = std::str::from_utf8(&b[10..10 + hl]).unwrap();
    assert!(
        header.contains("'descr': '<f8'") && header.contains("'fortran_order': False"),
        "{header}"
    );
    let shape_txt = header
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    let shape: Vec<usize> = shape_txt
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let data: Vec<f64> = b[10 + hl..]
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(data.len(), shape.iter().product::<usize>());
    (shape, data)
}

/// `ridgeline run examples/NAME --out OUT`, which must succeed; returns its stdout.
pub fn run_example(name: &str, out: &Path) -> String {
    let spec = root().join("examples").join(name);
    run_ok(
        &[
            "run",
            spec.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        Duration::from_secs(900),
    )
}

/// The sweep folder under `out/sweeps` that holds `file`.
pub fn sweep_with(out: &Path, file: &str) -> PathBuf {
    std::fs::read_dir(out.join("sweeps"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join(file).exists())
        .unwrap_or_else(|| panic!("no sweep under {} has {file}", out.display()))
}

/// The files under `dir`, none when it was never made.
pub fn files_in(dir: &Path) -> Vec<PathBuf> {
    if dir.exists() {
        files_under(dir)
    } else {
        vec![]
    }
}

/// Polls `ok` until it holds, failing the test after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `ridgeline results SWEEP --format json`, parsed.
pub fn results(sweep: &str, url: &str) -> serde_json::Value {
    let out = run_ok(
        &["results", sweep, "--coordinator", url, "--format", "json"],
        Duration::from_secs(30),
    );
    serde_json::from_str(&out).unwrap()
}

/// Whether a process is gone (or a zombie nobody has reaped yet).
pub fn gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(true)
}

/// Processes (not zombies) whose environment names this sweep: a trial's program, or
/// anything it started.
pub fn processes_of(sweep: &str) -> Vec<u32> {
    let needle = format!("RIDGELINE_SWEEP_ID={sweep}");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| !gone(*pid))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .unwrap_or_default()
                .split(|b| *b == 0)
                .any(|v| v == needle.as_bytes())
        })
        .collect()
}

pub mod grpc;

/// The full Hessian of `model`'s mean cross-entropy on `x`, `y` with respect to all its
/// parameters (in Ridgeline's flat order), column by column from exact products `H e_i`
/// in batches of 128 columns and chunks of 500 samples (as a worker with little memory
/// would take them: the same Hessian).
pub fn full_hessian(
    model: &dyn ridgeline_worker::models::Model,
    x: &Tensor,
    y: &Tensor,
) -> Vec<Vec<f64>> {
    use ridgeline_worker::landscape::eval::Loss;
    use ridgeline_worker::landscape::hessian::{Method, model_hvps};
    let params = model.params();
    let mut order: Vec<usize> = (0..params.len()).collect();
    order.sort_by_key(|&i| ridgeline_common::landscape::flat_order(&params[i].name));
    let n: usize = params.iter().map(|p| p.var.elem_count()).sum();
    let mut hm: Vec<Vec<f64>> = Vec::with_capacity(n);
    for start in (0..n).step_by(128) {
        let units: Vec<Vec<f64>> = (start..(start + 128).min(n))
            .map(|i| {
                let mut e = vec![0.0; n];
                e[i] = 1.0;
                e
            })
            .collect();
        let (cols, _) = model_hvps(
            model,
            &order,
            x,
            y,
            Loss::CrossEntropy,
            &units,
            1.0,
            Method::Exact,
            500,
        )
        .unwrap();
        hm.extend(cols);
    }
    hm
}

/// The cgroup v2 folder this test process (and so every `ridgeline` it starts) is in,
/// where the host lets it make cgroups there (cgroup v2 mounted writable); trial
/// cgroups are made in it.
pub fn own_cgroup_v2() -> Option<PathBuf> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = own.lines().find_map(|l| l.strip_prefix("0::"))?.to_owned();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let dir = mounts.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        if !right.starts_with("cgroup2 ") {
            return None;
        }
        // Fields 4 and 5: the mount's root in the hierarchy, and where it is mounted.
        let f: Vec<&str> = left.split(' ').collect();
        let rel = Path::new(&path).strip_prefix(f.get(3)?).ok()?.to_owned();
        Some(Path::new(f.get(4)?).join(rel))
    })?;
    let probe = dir.join(format!("ridgeline-probe-{}", std::process::id()));
    let ok = std::fs::create_dir(&probe).is_ok();
    let _ = std::fs::remove_dir(&probe);
    ok.then_some(dir)
}
