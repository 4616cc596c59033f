//! The coordinator's share of landscape scans inside the event loop: Hessian rounds
//! released as their shards finish, and the surface assembled when a scan ends.

use super::*;

impl EventLoop {
    /// When the last shard of a Hessian round is in, runs the Lanczos step that makes
    /// the next round's vectors (or the final `hessian.json`) and releases the next
    /// round's units. A shard that failed for good ends the Hessian: the remaining
    /// rounds are abandoned.
    pub(super) fn hessian_rounds(&mut self, out: &mut Vec<Action>, now: u64) {
        let mut done: Vec<(SweepId, u32, core::UnitState)> = Vec::new();
        for a in out.iter() {
            if let Action::UnitFinished {
                sweep,
                trial,
                state,
                ..
            } = a
            {
                done.push((sweep.clone(), *trial, *state));
            }
        }
        let finished_now = done.clone();
        for (id, trial, state) in done {
            let Some(v) = self.core.sweep(&id) else {
                continue;
            };
            let Some(l) = v.spec.landscape.as_ref() else {
                continue;
            };
            let Some(h) = l.hessian.as_ref() else {
                continue;
            };
            let ScanUnit::Hvp { round, .. } = l.unit(trial as usize) else {
                continue;
            };
            let first = (l.hessian_base() + round * h.shards) as u32;
            // Finished shards left the core: their states are in this batch, or stored.
            let states: Vec<Option<core::UnitState>> = (first..first + h.shards as u32)
                .map(|t| {
                    finished_now
                        .iter()
                        .find(|(s, tr, _)| *s == id && *tr == t)
                        .map(|x| x.2)
                        .or_else(|| self.store.trial_state(&id, t).ok().flatten())
                })
                .collect();
            let abandon = |el: &mut Self, out: &mut Vec<Action>, why: &str| {
                warn!(sweep = %id, "Hessian stops after round {round}: {why}");
                core::on_units_abandoned(&mut el.core, out, &id, now);
            };
            if state != core::UnitState::Completed {
                abandon(self, out, "a shard did not complete");
                continue;
            }
            if !states
                .iter()
                .all(|s| *s == Some(core::UnitState::Completed))
            {
                continue;
            }
            let dir = sweep_dir(&self.data_dir, &id);
            let started = std::time::Instant::now();
            match landscape::hessian_step(&dir, &v.spec, round, |t| {
                trial_dir(&self.data_dir, &id, t)
            }) {
                Ok(Some(upto)) => core::on_units_released(&mut self.core, &id, upto),
                Ok(None) => {
                    info!(sweep = %id, seconds = started.elapsed().as_secs_f64(), "Hessian done");
                    // Converged early or finished: nothing more to release.
                    core::on_units_abandoned(&mut self.core, out, &id, now);
                }
                Err(e) => abandon(self, out, &e),
            }
        }
    }

    /// Data size and timings of a finished scan, for `meta.json`.
    fn run_summary(&self, v: &core::SweepView) -> serde_json::Value {
        let tiles = v.spec.landscape.as_ref().map_or(0, |l| l.tiles() as u32);
        let sum = self.store.scan_summary(&v.id, tiles).unwrap_or_default();
        serde_json::json!({
            "samples": sum.samples,
            "wall_seconds": v.finished.unwrap_or(v.created).saturating_sub(v.created) as f64 / 1000.0,
            "tile_seconds": sum.tile_seconds,
            "hessian_seconds": sum.hessian_seconds,
            "workers": sum.workers,
            "units": v.counts.total,
        })
    }

    /// Puts a finished scan's tiles together into the surface files. A failure here is
    /// logged, not fatal: the tiles stay on disk and can be assembled again.
    ///
    /// Small scans are assembled before the sweep's final state is published (a client
    /// that saw it finish finds the files); larger ones
    /// ([`ridgeline_common::landscape::LandscapeSpec::assembled_in_background`]) and
    /// every cancelled scan (a cancel never waits for an export) on a thread of their
    /// own, so that no sweep can hold up the event loop: their clients wait for
    /// meta.json, written last. Once assembled, a scan's tile values are packed into one
    /// file and the tiles' own files removed, on a thread of their own.
    pub(super) fn assemble(&self, id: &SweepId) {
        let Some(v) = self.core.sweep(id) else { return };
        let Some(l) = v.spec.landscape.as_ref() else {
            return;
        };
        let background = l.assembled_in_background() || v.state == core::SweepState::Cancelled;
        let dir = sweep_dir(&self.data_dir, id);
        let run = self.run_summary(&v);
        let done = match self.store.completed_trials(id) {
            Ok(d) => d,
            Err(e) => return error!(sweep = %id, "cannot assemble the surface: {e}"),
        };
        let data_dir = self.data_dir.clone();
        let id = id.clone();
        let work = move || {
            let started = std::time::Instant::now();
            let t0 = std::time::SystemTime::now();
            let tile_dir = |t| trial_dir(&data_dir, &id, t);
            match landscape::assemble(&dir, id.as_str(), &v.spec, run, &done, tile_dir) {
                Ok(()) => {
                    crate::telemetry::wrote(bytes_written_since(&dir, t0));
                    info!(sweep = %id, dir = %dir.display(), seconds = started.elapsed().as_secs_f64(), "surface assembled");
                    // Up to a file per point: never on the event loop.
                    let (id, data_dir) = (id.clone(), data_dir.clone());
                    let _ = std::thread::Builder::new()
                        .name("ridgeline-compact".into())
                        .spawn(move || {
                            let tile_dir = |t| trial_dir(&data_dir, &id, t);
                            let dir = sweep_dir(&data_dir, &id);
                            match landscape::compact_tiles(&dir, &v.spec, &done, tile_dir) {
                                Ok(n) => info!(sweep = %id, tiles = n, "tile values packed, tiles' files removed"),
                                Err(e) => warn!(sweep = %id, "tile files kept: {e}"),
                            }
                        });
                }
                Err(e) => error!(sweep = %id, "cannot assemble the surface: {e}"),
            }
            // The surface's arrays were freed; hand their pages back to the system
            // rather than keep the peak for the coordinator's lifetime.
            // SAFETY: malloc_trim has no preconditions.
            unsafe { libc::malloc_trim(0) };
        };
        if !background {
            work();
        } else if let Err(e) = std::thread::Builder::new()
            .name("ridgeline-assemble".into())
            .spawn(work)
        {
            error!("cannot start assembling a surface: {e}");
        }
    }
}

/// Bytes of the files directly in `dir` written at or after `t0` (what an assembly
/// produced: the surface, its CSV and plots, meta.json).
fn bytes_written_since(dir: &Path, t0: std::time::SystemTime) -> u64 {
    let Ok(entries) = crate::fsafe::list(dir) else {
        return 0;
    };
    entries
        .into_iter()
        .filter_map(|(_, k)| match k {
            crate::fsafe::Kind::File { len, mtime_ns } if crate::fsafe::mtime(mtime_ns) >= t0 => {
                Some(len)
            }
            _ => None,
        })
        .sum()
}
