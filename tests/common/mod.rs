//! Helpers for tests that run the real `ridgeline` binary as separate processes.

// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ridgeline"))
}

/// The repository root (examples live there).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
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
    let n = workers.to_string();
    run_ok(
        &[
            "run",
            spec.to_str().unwrap(),
            "--workers",
            &n,
            "--out",
            out.to_str().unwrap(),
        ],
        timeout,
    );
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

/// Starts `ridgeline worker` named `name` (logging to `dir/name.log`), with extra flags.
pub fn worker(dir: &Path, url: &str, name: &str, extra: &[&str]) -> Proc {
    let mut args = vec!["worker", "--coordinator", url, "--name", name];
    args.extend_from_slice(extra);
    spawn(name, &args, dir)
}
