//! One evaluator process and the line protocol with it: started with the slot's device,
//! answers read with a timeout, its stderr's tail kept for the reasons of failures.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use candle_core::{Device, DeviceLocation};
use ridgeline_common::landscape::EvaluatorSpec;

use crate::UnitError;

/// The Python module that serves the protocol (in the `ridgeline` package).
pub const EVALUATOR_MODULE: &str = "ridgeline.torch.evaluator";

/// Lines of the evaluator's stderr kept for error messages.
const STDERR_TAIL: usize = 30;

/// A running evaluator process; killed when dropped.
pub struct Process {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    stderr: Arc<Mutex<VecDeque<String>>>,
    timeout: Duration,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    /// Starts `python -m ridgeline.torch.evaluator FUNCTION` on `device` and waits for
    /// its `ready` line, which it returns.
    pub fn start(
        e: &EvaluatorSpec,
        device: &Device,
    ) -> Result<(Self, serde_json::Value), UnitError> {
        let python = e.interpreter.as_deref().unwrap_or("python3");
        let mut cmd = Command::new(python);
        cmd.args(["-m", EVALUATOR_MODULE, &e.python])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("PYTHONUNBUFFERED", "1")
            .env("RIDGELINE_DTYPE", e.dtype.as_str())
            .env("RIDGELINE_POINTS_PER_PASS", e.points_per_pass.to_string());
        // Each slot's evaluator gets its share of the cores (PyTorch would take them all,
        // once per slot), unless the worker's environment says otherwise.
        if std::env::var_os("OMP_NUM_THREADS").is_none() {
            cmd.env(
                "OMP_NUM_THREADS",
                crate::host::threads_per_slot().to_string(),
            );
        }
        if crate::host::set_by_this_process(b"RAYON_NUM_THREADS") {
            cmd.env_remove("RAYON_NUM_THREADS");
        }
        if let Some(w) = &e.workdir {
            if !w.is_dir() {
                return Err(format!(
                    "landscape.evaluator.workdir {} is not a folder on worker host {}",
                    w.display(),
                    crate::host::default_name()
                )
                .into());
            }
            cmd.current_dir(w);
        }
        // The evaluator runs on this slot's device: a GPU as its only visible one.
        match device.location() {
            DeviceLocation::Cuda { gpu_id } => {
                cmd.env("CUDA_VISIBLE_DEVICES", gpu_id.to_string())
                    .env("RIDGELINE_DEVICE", "cuda:0");
            }
            _ => {
                cmd.env("RIDGELINE_DEVICE", "cpu");
            }
        }
        let mut child = cmd.spawn().map_err(|err| {
            format!("cannot start the evaluator {python} -m {EVALUATOR_MODULE}: {err}")
        })?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let tail: Arc<Mutex<VecDeque<String>>> = Arc::default();
        let keep = tail.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut t = keep.lock().expect("stderr lock");
                if t.len() == STDERR_TAIL {
                    t.pop_front();
                }
                t.push_back(line);
            }
        });
        let mut p = Process {
            child,
            stdin,
            lines,
            stderr: tail,
            timeout: Duration::from_secs_f64(e.timeout),
        };
        let hello = p.receive("starting")?;
        if hello["ready"] != serde_json::json!(true) {
            return Err(format!("the evaluator did not say it was ready: {hello}").into());
        }
        Ok((p, hello))
    }

    /// Sends one request and returns the answer; an `error` answer, a dead or hung
    /// evaluator, or an answer out of protocol is an error naming what happened.
    pub fn request(&mut self, req: &serde_json::Value) -> Result<serde_json::Value, UnitError> {
        let what = req["op"].as_str().unwrap_or("request").to_owned();
        let line = serde_json::to_string(req).expect("json") + "\n";
        if let Err(err) = self
            .stdin
            .write_all(line.as_bytes())
            .and_then(|()| self.stdin.flush())
        {
            return Err(self.died(&format!("cannot send {what}: {err}")));
        }
        let answer = self.receive(&what)?;
        if let Some(err) = answer.get("error") {
            let text = err.as_str().unwrap_or_default();
            // A Python traceback's last line says what went wrong.
            let last = text
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or(text);
            return Err(format!("the evaluator failed on {what}: {last}\n{text}").into());
        }
        Ok(answer)
    }

    fn receive(&mut self, what: &str) -> Result<serde_json::Value, UnitError> {
        match self.lines.recv_timeout(self.timeout) {
            Ok(line) => serde_json::from_str(&line).map_err(|err| {
                format!("the evaluator answered {what} out of protocol ({err}): {line:.200}").into()
            }),
            Err(RecvTimeoutError::Timeout) => {
                let _ = self.child.kill();
                Err(self.died(&format!(
                    "the evaluator did not answer {what} within {} s (landscape.evaluator.timeout); stopped",
                    self.timeout.as_secs_f64()
                )))
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.wait().map(|s| s.to_string()).unwrap_or_default();
                Err(self.died(&format!("the evaluator exited ({status}) during {what}")))
            }
        }
    }

    /// An error with the tail of the evaluator's stderr.
    fn died(&self, why: &str) -> UnitError {
        // The stderr thread may still be reading the last lines.
        std::thread::sleep(Duration::from_millis(50));
        let tail: Vec<String> = self
            .stderr
            .lock()
            .expect("stderr lock")
            .iter()
            .cloned()
            .collect();
        match tail.last() {
            Some(last) => format!("{why}: {last}\nstderr ends with:\n{}", tail.join("\n")).into(),
            None => why.to_owned().into(),
        }
    }
}

/// A fresh folder for the files handed to and from an evaluator; removed when dropped.
pub struct Scratch(pub std::path::PathBuf);

impl Scratch {
    pub fn new() -> Result<Self, UnitError> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("ridgeline-evaluator-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|err| format!("{}: {err}", dir.display()))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
