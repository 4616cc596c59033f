//! Command trials: the user's program as a trial.
//!
//! Parameters reach the program as `{name}` substitutions in its command line, as
//! `RIDGELINE_PARAMS` (one JSON object) and as `RIDGELINE_PARAM_<NAME>`; it also gets
//! `RIDGELINE_METRIC`, `RIDGELINE_OBJECTIVES`, `RIDGELINE_SWEEP_ID`,
//! `RIDGELINE_TRIAL_ID`, `RIDGELINE_ATTEMPT`, `RIDGELINE_TRIAL_DIR` (the same folder on
//! every attempt, for its checkpoints; under PBT seeded with its parent's files),
//! `RIDGELINE_REPORT_FILE`, under PBT `RIDGELINE_PBT_ROUND` and `RIDGELINE_STOP_STEP`
//! (the step to train to), and on a GPU worker `CUDA_VISIBLE_DEVICES`. Report lines become progress; every other
//! line of stdout and stderr goes to the trial's log. Exit 0 with the sweep's metric
//! reported: completed; a NaN or infinite metric: diverged (stopped at once); a
//! non-zero exit: failed with the tail of stderr; past `timeout`: failed.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ridgeline_common::params::{ParamValue, Params, params_from_proto};
use ridgeline_common::proto;
use ridgeline_common::spec::trial::{
    self as t, Command as CommandLine, param_env_name, param_text, params_json,
};
use ridgeline_common::spec::{SweepSpec, TrialSpec};

use super::{Executor, UnitCtx};
use crate::UnitError;
use crate::train::{TrialEnd, TrialOutput};

mod contain;
mod folder;
mod launcher;
mod process;
pub mod report;
mod seed;
mod spawn;
mod supervise;

pub use contain::remove_free_cgroups;
pub use launcher::start as start_launcher;

use folder::Folder;
use process::Event;
use report::{parse_report, report_payload};

pub(super) struct Command;

/// Lines of stderr kept for a failed trial's error message.
const STDERR_TAIL: usize = 20;

/// The folder a trial's program may keep its files in, the same for every attempt.
pub fn trial_dir(root: &Path, sweep: &str, trial: u32) -> PathBuf {
    root.join(sweep).join(format!("trial-{trial:05}"))
}

/// The command line, with placeholders filled: each value is exactly one argument (or
/// part of one), never shell syntax.
fn argv(t: &TrialSpec, value: &dyn Fn(&str) -> Option<String>) -> Result<Vec<String>, String> {
    Ok(match &t.command {
        CommandLine::Argv(v) => v.iter().map(|a| t::substitute(a, value)).collect(),
        // As Python's `shell=True`: no PATH search for the shell itself.
        CommandLine::Shell(s) => vec![
            "/bin/sh".into(),
            "-c".into(),
            ridgeline_common::spec::shell::substitute(s, value)?,
        ],
    })
}

/// The trial's environment (added to the worker's own).
fn environment(
    ctx: &UnitCtx<'_>,
    t: &TrialSpec,
    objectives: &[&str],
    params: &Params,
    trial: u32,
    dir: &Path,
    report_file: &Path,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        // Python buffers stdout when it is a pipe: reports would arrive at exit.
        ("PYTHONUNBUFFERED".into(), "1".into()),
        ("RIDGELINE_PARAMS".into(), params_json(params)),
        // The name a function trial's returned number is reported under, and (several
        // objectives) the names of the values of a returned tuple, as a JSON list.
        ("RIDGELINE_METRIC".into(), objectives[0].to_owned()),
        (
            "RIDGELINE_OBJECTIVES".into(),
            serde_json::to_string(objectives).expect("strings serialise"),
        ),
        ("RIDGELINE_SWEEP_ID".into(), ctx.unit.sweep_id.clone()),
        ("RIDGELINE_TRIAL_ID".into(), trial.to_string()),
        ("RIDGELINE_ATTEMPT".into(), ctx.unit.attempt.to_string()),
        ("RIDGELINE_TRIAL_DIR".into(), dir.display().to_string()),
        (
            "RIDGELINE_REPORT_FILE".into(),
            report_file.display().to_string(),
        ),
    ];
    for (name, v) in params {
        env.push((param_env_name(name), param_text(v)));
    }
    if let Some(n) = ctx.device_name.strip_prefix("cuda:") {
        env.push(("CUDA_VISIBLE_DEVICES".into(), n.to_owned()));
    }
    // The spec's own variables win.
    env.extend(t.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env
}

/// What the trial's reports add up to, over all its attempts.
struct Reports {
    /// The trial folder, whose ledger records every report before it is passed on.
    folder: Folder,
    attempt: u32,
    count: u32,
    last_step: u32,
    /// The latest value of every metric reported.
    latest: BTreeMap<String, f64>,
    /// A report that said the metric is not finite.
    diverged: Option<String>,
    /// A malformed report line: the trial fails, as it would anywhere.
    malformed: Option<String>,
}

impl Reports {
    fn new(folder: Folder, attempt: u32) -> Self {
        Reports {
            folder,
            attempt,
            count: 0,
            last_step: 0,
            latest: BTreeMap::new(),
            diverged: None,
            malformed: None,
        }
    }

    /// Takes in the reports of earlier attempts (from the folder's ledger) and passes
    /// them on again: the coordinator may never have seen them (they were printed
    /// while it was down, or their worker died before sending them), and the trial's
    /// history is their union with this attempt's.
    fn resume(&mut self, metric: &[&str], progress: &mut dyn FnMut(u32, Vec<(String, f64)>)) {
        for (_, r) in self.folder.earlier_reports() {
            self.count += 1;
            let step = r.step.unwrap_or(self.count);
            self.note(step, &r.metrics, metric);
            progress(step, r.metrics);
        }
    }

    /// Takes in one report; a non-finite value of an objective (`metric`: the sweep's
    /// metric, or each of its objectives) makes the trial diverge.
    fn note(&mut self, step: u32, metrics: &[(String, f64)], metric: &[&str]) {
        self.last_step = step;
        for (k, v) in metrics {
            self.latest.insert(k.clone(), *v);
            if metric.contains(&k.as_str()) && !v.is_finite() && self.diverged.is_none() {
                self.diverged = Some(format!("metric {k} is {v} at step {step}"));
            }
        }
    }

    fn take(
        &mut self,
        payload: &str,
        source: &str,
        metric: &[&str],
        progress: &mut dyn FnMut(u32, Vec<(String, f64)>),
    ) {
        if self.malformed.is_some() {
            return;
        }
        let r = match parse_report(payload) {
            Ok(r) => r,
            Err(e) => {
                self.malformed = Some(format!("bad report line on {source}: {e}"));
                return;
            }
        };
        self.count += 1;
        let step = r.step.unwrap_or(self.count);
        self.note(step, &r.metrics, metric);
        // Recorded before it is passed on: once printed, it belongs to the trial.
        self.folder.record(self.attempt, step, &r.metrics);
        progress(step, r.metrics);
    }
}

/// A line of the program's output: a report, or a line of its log.
fn on_line(
    ev: Event,
    reports: &mut Reports,
    stderr_tail: &mut VecDeque<String>,
    metric: &[&str],
    ctx: &mut UnitCtx<'_>,
) {
    let line = match ev {
        Event::Stdout(line) => {
            if let Some(p) = report_payload(&String::from_utf8_lossy(&line)) {
                reports.take(p, "stdout", metric, ctx.progress);
                return;
            }
            line
        }
        Event::Stderr(line) => {
            if stderr_tail.len() == STDERR_TAIL {
                stderr_tail.pop_front();
            }
            stderr_tail.push_back(String::from_utf8_lossy(&line).chars().take(500).collect());
            line
        }
    };
    (ctx.log)(&line);
    (ctx.log)(b"\n");
}

/// New complete lines of the report file since `offset`.
fn read_report_file(path: &Path, offset: &mut u64) -> Vec<String> {
    let Ok(bytes) = std::fs::read(path) else {
        return vec![];
    };
    let start = (*offset as usize).min(bytes.len());
    let Some(end) = bytes[start..].iter().rposition(|b| *b == b'\n') else {
        return vec![];
    };
    *offset = (start + end + 1) as u64;
    String::from_utf8_lossy(&bytes[start..start + end])
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| report_payload(l).unwrap_or(l).to_owned())
        .collect()
}

impl Executor for Command {
    fn kind(&self, _: &proto::Unit, _: &SweepSpec) -> &'static str {
        "command"
    }

    fn run(&self, ctx: &mut UnitCtx<'_>) -> Result<TrialOutput, UnitError> {
        let Some(proto::unit::Work::Train(unit)) = &ctx.unit.work else {
            return Err("not a trial".into());
        };
        let spec = ctx.spec;
        let t = spec.trial.as_ref().ok_or("not a command trial")?;
        let trial = unit.trial_index;
        let params = params_from_proto(&unit.params)?;
        let dir = trial_dir(ctx.trial_root, &ctx.unit.sweep_id, trial);
        std::fs::create_dir_all(&dir)
            .map_err(|e| UnitError::from(format!("{}: {e}", dir.display())))?;
        // The program runs in its own working folder: give it a path that works there.
        let dir = std::path::absolute(&dir)
            .map_err(|e| UnitError::from(format!("{}: {e}", dir.display())))?;
        // One attempt at a time in the folder: another attempt of this trial may still
        // run (its worker presumed dead by a restarted coordinator, say).
        let folder = {
            let log = &mut *ctx.log;
            let mut waiting = || {
                log(b"[ridgeline] another attempt of this trial still holds its folder; waiting for it to end\n");
            };
            Folder::lock(&dir, ctx.cancel, &mut waiting)
                .map_err(|e| UnitError::from(format!("{}: cannot lock: {e}", dir.display())))?
        };
        let Some(folder) = folder else {
            return Ok(TrialOutput {
                end: TrialEnd::Cancelled,
                final_metrics: vec![],
                artifacts: vec![],
            });
        };
        // PBT: the trial starts from its parent's checkpoint (the same member's previous
        // round, or the top member it copies).
        if let Some(parent) = params
            .get(ridgeline_common::spec::PBT_PARENT)
            .and_then(ParamValue::as_i64)
            .and_then(|p| u32::try_from(p).ok())
            .filter(|_| spec.search.algorithm == ridgeline_common::spec::Algorithm::Pbt)
        {
            let from = std::path::absolute(trial_dir(ctx.trial_root, &ctx.unit.sweep_id, parent))
                .map_err(|e| UnitError::from(e.to_string()))?;
            if seed::seed(&from, &dir, parent).map_err(|e| UnitError::from(e.to_string()))? {
                (ctx.log)(
                    format!("[ridgeline] PBT: started from trial {parent}'s folder\n").as_bytes(),
                );
            }
        }
        // A fresh report file per attempt: an earlier attempt's reports are not this one's.
        let report_file = dir.join(format!(".ridgeline-report-{}.jsonl", ctx.unit.attempt));
        let _ = std::fs::remove_file(&report_file);
        let builtin = |name: &str| -> Option<String> {
            match name {
                "trial_id" => Some(trial.to_string()),
                "attempt" => Some(ctx.unit.attempt.to_string()),
                "trial_dir" => Some(dir.display().to_string()),
                "sweep_id" => Some(ctx.unit.sweep_id.clone()),
                _ => params.get(name).map(param_text),
            }
        };
        let argv = argv(t, &builtin).map_err(|e| UnitError {
            message: format!("trial.command: {e}"),
            permanent: true,
        })?;
        let mut env = environment(
            ctx,
            t,
            &spec.objectives(),
            &params,
            trial,
            &dir,
            &report_file,
        );
        if spec.search.algorithm == ridgeline_common::spec::Algorithm::Pbt {
            // The round this trial trains, and the step it trains to: it resumes from
            // the checkpoint in its folder, trains to RIDGELINE_STOP_STEP, saves, exits.
            let round = spec.search.pbt_round(trial);
            let stop = *spec.search.pbt.steps_of(round).end();
            env.push(("RIDGELINE_PBT_ROUND".into(), round.to_string()));
            env.push(("RIDGELINE_STOP_STEP".into(), stop.to_string()));
        }
        let grace = Duration::from_secs_f64(t.kill_grace.0);
        if let Some(w) = t.workdir.as_deref().filter(|w| !w.is_dir()) {
            // Shared storage missing on this node: another worker may have it.
            return Err(UnitError {
                message: format!(
                    "trial.workdir {} is not a folder on worker host {}",
                    w.display(),
                    crate::host::default_name()
                ),
                permanent: false,
            });
        }
        let objectives = spec.objectives();
        let metric = objectives.as_slice();
        let mut reports = Reports::new(folder, ctx.unit.attempt);
        reports.resume(metric, ctx.progress);
        if reports.diverged.is_some() {
            // An earlier attempt's report said so: the trial diverged then.
            let final_metrics = reports.latest.clone().into_iter().collect();
            return Ok(TrialOutput {
                end: TrialEnd::Diverged,
                final_metrics,
                artifacts: vec![],
            });
        }
        let mut group = process::spawn(
            &argv,
            t.workdir.as_deref(),
            &env,
            grace,
            reports.folder.lock_fd(),
        )
        .map_err(|e| UnitError::from(format!("cannot start the trial's supervisor: {e}")))?;
        let started = Instant::now();
        let deadline = t.timeout.map(|s| started + Duration::from_secs_f64(s.0));
        let mut stderr_tail: VecDeque<String> = VecDeque::new();
        let mut file_offset = 0u64;
        let mut stop: Option<&'static str> = None;
        let exit = loop {
            // Lines wake the loop, and so does the supervisor's exit.
            group.pump(Duration::from_millis(50), &mut |ev| {
                on_line(ev, &mut reports, &mut stderr_tail, metric, ctx)
            });
            for line in read_report_file(&report_file, &mut file_offset) {
                reports.take(&line, "RIDGELINE_REPORT_FILE", metric, ctx.progress);
            }
            if stop.is_none() {
                stop = if ctx.cancel.load(Ordering::Relaxed) {
                    Some("cancelled")
                } else if reports.diverged.is_some() {
                    Some("diverged")
                } else if reports.malformed.is_some() {
                    Some("malformed")
                } else if deadline.is_some_and(|d| Instant::now() >= d) {
                    Some("timeout")
                } else {
                    None
                };
                if stop.is_some() {
                    group.terminate();
                }
            }
            // Read the streams to their end before judging: the last report may be in
            // the pipe still when the program exits.
            if let Some(exit) = group.poll() {
                let until = Instant::now() + Duration::from_millis(500);
                while group.streams_open() && Instant::now() < until {
                    group.pump(Duration::from_millis(10), &mut |ev| {
                        on_line(ev, &mut reports, &mut stderr_tail, metric, ctx)
                    });
                }
                for line in read_report_file(&report_file, &mut file_offset) {
                    reports.take(&line, "RIDGELINE_REPORT_FILE", metric, ctx.progress);
                }
                break exit;
            }
        };
        if let Some(e) = exit.start_error {
            return Err(UnitError::from(format!(
                "cannot start the trial's supervisor: {e}"
            )));
        }
        let _ = std::fs::remove_file(&report_file);
        let final_metrics: Vec<(String, f64)> = reports.latest.clone().into_iter().collect();
        let out = |end| TrialOutput {
            end,
            final_metrics: final_metrics.clone(),
            artifacts: vec![],
        };
        match stop {
            Some("cancelled") => return Ok(out(TrialEnd::Cancelled)),
            Some("diverged") => return Ok(out(TrialEnd::Diverged)),
            Some("malformed") => {
                return Err(UnitError {
                    message: reports.malformed.unwrap_or_default(),
                    permanent: true,
                });
            }
            Some(_) => {
                return Err(UnitError {
                    message: format!(
                        "timed out after {:.0} s (trial.timeout); stopped",
                        started.elapsed().as_secs_f64()
                    ),
                    permanent: false,
                });
            }
            None => {}
        }
        if reports.diverged.is_some() {
            return Ok(out(TrialEnd::Diverged));
        }
        let tail = || {
            if stderr_tail.is_empty() {
                "(no stderr)".to_owned()
            } else {
                stderr_tail.iter().cloned().collect::<Vec<_>>().join("\n")
            }
        };
        // Every objective must have been reported; the message names the first missing.
        let missing = metric
            .iter()
            .find(|m| !reports.latest.contains_key(**m))
            .copied();
        let m = missing.unwrap_or_default();
        match (exit.code, exit.signal) {
            (Some(0), _) if missing.is_none() => Ok(out(TrialEnd::Completed)),
            (Some(0), _) => Err(UnitError {
                message: format!(
                    "exited 0 without reporting {m} ({} report line(s){}); print a line `ridgeline: {{\"{m}\": ...}}`",
                    reports.count,
                    if reports.latest.is_empty() {
                        String::new()
                    } else {
                        let names: Vec<&str> = reports.latest.keys().map(String::as_str).collect();
                        format!(", with {}", names.join(", "))
                    }
                ),
                permanent: true,
            }),
            // The shell's "command not found": a typo fails the same way everywhere.
            (Some(127), _) => Err(UnitError {
                message: format!(
                    "exit status 127 (command not found: {}); stderr ends with:\n{}",
                    match &t.command {
                        CommandLine::Argv(_) => format!("{:?}", argv[0]),
                        CommandLine::Shell(_) => "a program in trial.command".into(),
                    },
                    tail()
                ),
                permanent: true,
            }),
            (Some(code), _) => Err(UnitError {
                message: format!("exit status {code}; stderr ends with:\n{}", tail()),
                permanent: false,
            }),
            (None, sig) => Err(UnitError {
                message: format!(
                    "killed by signal {}; stderr ends with:\n{}",
                    sig.unwrap_or(0),
                    tail()
                ),
                permanent: false,
            }),
        }
    }
}
