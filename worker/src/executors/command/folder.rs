//! A command trial's folder, shared by its attempts: a lock that one attempt holds at a
//! time, and the ledger of the reports its program printed.
//!
//! The lock is an exclusive `flock` on `.ridgeline-lock`, taken before the program
//! starts. Its descriptor is inherited by the program's processes (it is not
//! close-on-exec), so the folder stays locked until the last of them has exited, even
//! when the worker that started them was killed. An attempt that finds the folder
//! locked (another attempt of the same trial still runs, say on a worker the
//! coordinator presumed dead) waits for it, and stops waiting when its unit is
//! cancelled. On a shared file system `flock` reaches every node where the file system
//! supports it (NFSv4, Lustre with `flock`, GPFS, BeeGFS).
//!
//! The ledger `.ridgeline-reports.jsonl` holds every report line of every attempt, in
//! order, written before the report is passed on: a report once printed belongs to the
//! trial. A later attempt starts from what the ledger holds (the program resumes from
//! its checkpoint in the same folder), so a trial whose program finished while its
//! result could not be handed in completes with those reports, and its history is the
//! union over attempts.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::report::Report;

const LOCK: &str = ".ridgeline-lock";
const LEDGER: &str = ".ridgeline-reports.jsonl";

/// A trial folder held by this attempt.
pub(super) struct Folder {
    dir: PathBuf,
    lock: File,
    /// Opened at the first report: creating a file costs a trivial trial a tenth of
    /// its span, and by then the program runs.
    ledger: Option<File>,
}

/// One report as the ledger keeps it.
#[derive(serde::Serialize, serde::Deserialize)]
struct Entry {
    attempt: u32,
    step: u32,
    metrics: Vec<(String, Option<f64>)>,
}

impl Folder {
    /// Takes the folder's lock, waiting while another attempt holds it. `None` when
    /// `cancel` was set while waiting. `waiting` is called once if it has to wait.
    pub(super) fn lock(
        dir: &Path,
        cancel: &AtomicBool,
        waiting: &mut dyn FnMut(),
    ) -> std::io::Result<Option<Folder>> {
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK))?;
        let mut told = false;
        let mut pause = Duration::from_millis(20);
        loop {
            // SAFETY: flock on a descriptor we own.
            if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                break;
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(e);
            }
            if cancel.load(Ordering::Relaxed) {
                return Ok(None);
            }
            if !told {
                waiting();
                told = true;
            }
            let until = Instant::now() + pause;
            while Instant::now() < until && !cancel.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(10));
            }
            pause = (pause * 2).min(Duration::from_millis(500));
        }
        Ok(Some(Folder {
            dir: dir.to_path_buf(),
            lock,
            ledger: None,
        }))
    }

    /// The descriptor the program's processes inherit, so that the lock lasts as long
    /// as any of them.
    pub(super) fn lock_fd(&self) -> i32 {
        self.lock.as_raw_fd()
    }

    /// Every report of earlier attempts, in the order they were printed.
    pub(super) fn earlier_reports(&self) -> Vec<(u32, Report)> {
        let Ok(text) = std::fs::read_to_string(self.dir.join(LEDGER)) else {
            return vec![];
        };
        // A line cut by a crash mid-write is the only kind that does not parse: skipped.
        text.lines()
            .filter_map(|l| serde_json::from_str::<Entry>(l).ok())
            .map(|e| {
                let r = Report {
                    step: Some(e.step),
                    metrics: e
                        .metrics
                        .into_iter()
                        .map(|(n, v)| (n, v.unwrap_or(f64::NAN)))
                        .collect(),
                };
                (e.attempt, r)
            })
            .collect()
    }

    /// Records a report of this attempt before it is passed on.
    pub(super) fn record(&mut self, attempt: u32, step: u32, metrics: &[(String, f64)]) {
        let e = Entry {
            attempt,
            step,
            // JSON has no NaN: null stands for a value that was not finite.
            metrics: metrics
                .iter()
                .map(|(n, v)| (n.clone(), v.is_finite().then_some(*v)))
                .collect(),
        };
        let mut line = serde_json::to_string(&e).expect("serialisable");
        line.push('\n');
        let ledger = match self.ledger.take() {
            Some(f) => Ok(f),
            None => OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join(LEDGER)),
        };
        // One write call per line: a crash leaves at most one cut line at the end.
        let written = ledger.and_then(|mut f| {
            f.write_all(line.as_bytes())?;
            self.ledger = Some(f);
            Ok(())
        });
        if let Err(e) = written {
            tracing::warn!(dir = %self.dir.display(), "cannot record a report in the trial's ledger: {e}");
        }
    }
}
