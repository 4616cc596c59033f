//! What the event loop writes besides the database: the files of new sweeps and of
//! accepted results (before the commit that acknowledges them), trial logs, and the
//! files that go once a batch is durable (finished scans' working files, deleted
//! sweeps, dropped checkpoints).

use super::*;

/// Files written into a new sweep's folder: `(sweep, [(name, bytes)])`.
pub(super) type SweepFiles = Vec<(SweepId, Vec<(String, Vec<u8>)>)>;

impl EventLoop {
    /// Writes the files of new sweeps and accepted results, then the actions, before
    /// anything is acknowledged.
    pub(super) fn persist(
        &mut self,
        out: &mut Vec<Action>,
        artifacts: &mut HashMap<UnitId, Vec<proto::Artifact>>,
        sweep_files: SweepFiles,
        now: u64,
    ) -> Result<(), String> {
        for (id, files) in sweep_files {
            let dir = sweep_dir(&self.data_dir, &id);
            crate::fsafe::create_dir_all(&dir).map_err(|e| e.to_string())?;
            for (name, data) in files {
                write_atomic(&dir.join(name), &data)?;
            }
        }
        for a in out.iter() {
            if let Action::UnitFinished {
                unit, sweep, trial, ..
            } = a
            {
                let Some(arts) = artifacts.remove(unit).filter(|a| !a.is_empty()) else {
                    continue;
                };
                // A tile's values alone go to its scan's log: no folder and file per
                // tile.
                let named: Vec<(&str, &[u8])> = arts
                    .iter()
                    .map(|a| (a.name.as_str(), a.data.as_slice()))
                    .collect();
                if let Some((first, second)) = crate::landscape::tile_values(&named) {
                    let log = match self.tile_logs.entry(sweep.clone()) {
                        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                        std::collections::hash_map::Entry::Vacant(e) => {
                            let path =
                                sweep_dir(&self.data_dir, sweep).join(crate::landscape::TILE_LOG);
                            e.insert(crate::landscape::TileLog::open(&path)?)
                        }
                    };
                    log.append(*trial, first, second)?;
                    crate::telemetry::wrote((first.len() + second.len()) as u64);
                    continue;
                }
                let dir = trial_dir(&self.data_dir, sweep, *trial);
                crate::fsafe::create_dir_all(&dir).map_err(|e| e.to_string())?;
                for art in arts {
                    write_atomic(&dir.join(&art.name), &art.data)?;
                }
            }
        }
        self.hessian_rounds(out, now);
        self.store.apply(out).map_err(|e| e.to_string())
    }

    /// Stores log chunks of units this worker holds or held last. Logs are best effort:
    /// a chunk that cannot be written is reported, never fails the batch.
    pub(super) fn write_logs(&self, worker: &WorkerId, logs: Vec<proto::LogChunk>) {
        for chunk in logs {
            let unit = UnitId(chunk.unit_id);
            // Only the log of an attempt this worker holds or held.
            let target = match core::attempt_held_by(&self.core, unit, worker, chunk.attempt) {
                Some(t) => Some(t),
                // A stopped trial's last lines arrive after it ended.
                None => match self.store.unit_owner(unit) {
                    Ok(Some((sid, trial, Some(w), last)))
                        if w == worker.as_str()
                            && last == chunk.attempt
                            && self.core.unit_state(unit).is_none() =>
                    {
                        Some((sid, trial))
                    }
                    _ => None,
                },
            };
            let Some((sid, trial)) = target else {
                warn!(worker = %worker, unit = %unit, attempt = chunk.attempt, "log chunk for an attempt this worker never held; dropped");
                continue;
            };
            let path = logs::log_path(&self.data_dir, &sid, trial, chunk.attempt);
            if let Err(e) = logs::write_chunk(&path, chunk.attempt, chunk.offset, &chunk.data) {
                warn!(sweep = %sid, trial, "trial log: {e}");
            }
        }
    }

    /// What happens once a batch is durable: scans that ended are assembled, deleted
    /// sweeps lose their files, lost workers are logged.
    pub(super) fn after_commit(&mut self, out: &[Action]) {
        for a in out {
            match a {
                Action::SweepFinished { sweep, .. } => {
                    self.tile_logs.remove(sweep);
                    self.assemble(sweep);
                    self.remove_working_files(sweep);
                }
                Action::SweepDeleted { sweep } => {
                    self.tile_logs.remove(sweep);
                    self.remove_files(sweep)
                }
                Action::CheckpointsDropped { sweep, trials } => {
                    for &t in trials {
                        remove_checkpoint(&trial_dir(&self.data_dir, sweep, t));
                    }
                }
                Action::WorkerGone { worker, reason } if reason != "deregistered" => {
                    warn!(worker = %worker, "worker lost ({reason}); its units go back to the queue");
                }
                _ => {}
            }
        }
    }

    /// Files a scan needs only while it runs: the Hessian rounds' Lanczos blocks (what
    /// the next round's workers fetch, and what a restarted coordinator resumes from).
    /// Once the sweep has ended, hessian.json holds what they were for.
    fn remove_working_files(&self, sweep: &SweepId) {
        let dir = sweep_dir(&self.data_dir, sweep);
        let Ok(entries) = crate::fsafe::list(&dir) else {
            return;
        };
        for (name, kind) in entries {
            let n = name.to_string_lossy();
            if matches!(kind, crate::fsafe::Kind::File { .. })
                && n.starts_with("hessian_block_")
                && n.ends_with(".f64")
            {
                let _ = std::fs::remove_file(dir.join(&name));
            }
        }
    }

    /// A deleted sweep's folder is renamed aside at once (so a new sweep can never see
    /// it) and removed on a thread of its own: a scan can have a million tile folders,
    /// and the event loop must not wait for them.
    fn remove_files(&self, sweep: &SweepId) {
        let dir = sweep_dir(&self.data_dir, sweep);
        let trash = dir.with_file_name(format!(".deleted-{sweep}-{}", now_ms()));
        if let Err(e) = std::fs::rename(&dir, &trash) {
            if e.kind() != std::io::ErrorKind::NotFound {
                error!(sweep = %sweep, "deleted, but its files stay: {}: {e}", dir.display());
            }
            return;
        }
        let sweep = sweep.clone();
        let removed = std::thread::Builder::new()
            .name("ridgeline-delete".into())
            .spawn(move || match std::fs::remove_dir_all(&trash) {
                Ok(()) => info!(sweep = %sweep, "sweep deleted with its files"),
                Err(e) => error!(sweep = %sweep, "cannot remove {}: {e}", trash.display()),
            });
        if let Err(e) = removed {
            error!("cannot start removing a sweep's files: {e}");
        }
    }
}

/// Removes a trial's checkpoint files (`model.json` and every `.safetensors`: the
/// weights, the epochs of its trajectory, PBT's training state), and its folder when
/// nothing else (logs) is left in it: results then name no checkpoint for it.
fn remove_checkpoint(dir: &Path) {
    // Most trials that end here uploaded nothing (command trials keep their files on
    // the worker): one stat instead of walking the path.
    if std::fs::symlink_metadata(dir).is_err() {
        return;
    }
    let Ok(entries) = crate::fsafe::list(dir) else {
        return;
    };
    for (name, kind) in entries {
        let n = name.to_string_lossy();
        if matches!(kind, crate::fsafe::Kind::File { .. })
            && (n == "model.json" || n.ends_with(".safetensors"))
        {
            let _ = std::fs::remove_file(dir.join(&name));
        }
    }
    let _ = std::fs::remove_dir(dir);
}
