//! The event loop: the one owner of the core and the store. It applies a batch of
//! events, persists what they changed, and only then replies.

use super::*;

pub(super) type Reply<T> = oneshot::Sender<Result<T, Status>>;

/// A unit's intermediate metrics: `(unit, step, metrics)`.
type ProgressItem = (UnitId, u32, Vec<(String, f64)>);

/// Files written into a new sweep's folder: `(sweep, [(name, bytes)])`.
type SweepFiles = Vec<(SweepId, Vec<(String, Vec<u8>)>)>;

/// A reply held back until the batch is durable; given the store's error, if any.
type Deferred = Box<dyn FnOnce(Option<&Status>)>;

pub(super) enum Event {
    Register(WorkerInfo, Reply<WorkerId>),
    Lease(WorkerId, u32, Reply<Vec<Lease>>),
    Report {
        worker: WorkerId,
        progress: Vec<ProgressItem>,
        outcomes: Vec<(Outcome, Vec<proto::Artifact>)>,
        reply: Reply<Vec<UnitId>>,
    },
    /// A heartbeat with the units the worker is running.
    Heartbeat(WorkerId, Vec<UnitId>, Reply<Vec<UnitId>>),
    Deregister(WorkerId, Reply<()>),
    /// A spec and the files its units need (a scan's checkpoint and directions).
    Submit(
        Box<SweepSpec>,
        Vec<(String, Vec<u8>)>,
        Reply<(SweepId, u32)>,
    ),
    Cancel(SweepId, Reply<core::SweepState>),
    Status(Option<SweepId>, Reply<Vec<proto::SweepStatus>>),
    Watch(SweepId, Reply<watch::Receiver<proto::SweepStatus>>),
    Tick,
}

fn core_status(e: CoreError) -> Status {
    match e {
        CoreError::UnknownWorker(_) => Status::not_found(e.to_string()),
        CoreError::UnknownSweep(_) => Status::not_found(e.to_string()),
        CoreError::DuplicateSweep(_) => Status::already_exists(e.to_string()),
    }
}

/// Owns the core, the store and the status watchers.
pub(super) struct EventLoop {
    core: Core,
    store: Store,
    data_dir: PathBuf,
    watchers: HashMap<SweepId, watch::Sender<proto::SweepStatus>>,
    rng: ridgeline_common::rng::Rng,
}

impl EventLoop {
    pub(super) fn open(cfg: &CoordinatorConfig) -> Result<Self, ServeError> {
        std::fs::create_dir_all(&cfg.data_dir).map_err(|source| ServeError::Io {
            path: cfg.data_dir.clone(),
            source,
        })?;
        let path = db_path(&cfg.data_dir);
        let store_err = |source| ServeError::Store {
            path: path.clone(),
            source,
        };
        let mut store = Store::open(&path).map_err(store_err)?;
        let mut core = Core::new(
            cfg.core.clone(),
            store.max_unit_id().map_err(store_err)? + 1,
        );
        let mut out = Vec::new();
        let now = now_ms();
        let mut resumed = 0;
        for row in store.sweeps().map_err(store_err)? {
            let units = store
                .trials(&row.id)
                .map_err(store_err)?
                .into_iter()
                .map(|t| StoredUnit {
                    unit: t.unit,
                    trial: t.trial,
                    params: t.params,
                    state: t.state,
                    attempts: t.attempts,
                })
                .collect();
            resumed += usize::from(row.state == core::SweepState::Running);
            core::on_sweep_restored(
                &mut core,
                &mut out,
                StoredSweep {
                    released: landscape::released_units(
                        &sweep_dir(&cfg.data_dir, &row.id),
                        &row.spec,
                    ),
                    id: row.id,
                    spec: row.spec,
                    state: row.state,
                    created: row.created_ms,
                    finished: row.finished_ms,
                    best: row.best,
                    units,
                },
                now,
            );
        }
        store.apply(&out).map_err(store_err)?;
        if resumed > 0 {
            info!(sweeps = resumed, "resumed running sweeps from the database");
        }
        let seed = now ^ u64::from(std::process::id()).rotate_left(32);
        let mut el = EventLoop {
            core,
            store,
            data_dir: cfg.data_dir.clone(),
            watchers: HashMap::new(),
            rng: ridgeline_common::rng::Rng::new(seed),
        };
        for id in el.core.sweep_ids() {
            let st = el.status(&id, now).expect("listed sweep exists");
            el.watchers.insert(id, watch::channel(st).0);
        }
        Ok(el)
    }

    fn status(&self, id: &SweepId, now: u64) -> Option<proto::SweepStatus> {
        let v = self.core.sweep(id)?;
        let best = v.best.map(|(t, _)| t);
        let params = best.and_then(|t| self.core.trial_params(id, t));
        let dir = best
            .map(|t| trial_dir(&self.data_dir, id, t))
            .filter(|d| d.exists())
            .map(|d| d.display().to_string());
        Some(status_to_proto(&v, params, dir, now))
    }

    fn new_sweep_id(&mut self, name: &str) -> SweepId {
        loop {
            let id = SweepId(format!("{name}-{:06x}", self.rng.next_u64() & 0xff_ffff));
            if self.core.sweep(&id).is_none() {
                return id;
            }
        }
    }

    pub(super) fn run(mut self, mut rx: mpsc::Receiver<Event>) {
        let mut batch = Vec::new();
        while let Some(ev) = rx.blocking_recv() {
            batch.push(ev);
            while batch.len() < 1024 {
                match rx.try_recv() {
                    Ok(ev) => batch.push(ev),
                    Err(_) => break,
                }
            }
            self.process(std::mem::take(&mut batch));
        }
        info!("event loop stopped");
    }

    /// Applies a batch of events, persists, then replies.
    fn process(&mut self, batch: Vec<Event>) {
        let now = now_ms();
        let mut out: Vec<Action> = Vec::new();
        let mut replies: Vec<Deferred> = Vec::new();
        let mut artifacts: HashMap<UnitId, Vec<proto::Artifact>> = HashMap::new();
        let mut sweep_files: SweepFiles = Vec::new();
        fn defer<T: 'static>(replies: &mut Vec<Deferred>, tx: Reply<T>, r: Result<T, Status>) {
            replies.push(Box::new(move |failed| {
                let _ = tx.send(match failed {
                    Some(s) => Err(s.clone()),
                    None => r,
                });
            }));
        }
        for ev in batch {
            let c = &mut self.core;
            match ev {
                Event::Register(info, tx) => {
                    let id = core::on_worker_registered(c, &mut out, info, now);
                    defer(&mut replies, tx, Ok(id));
                }
                Event::Lease(w, max, tx) => {
                    let r =
                        core::on_lease_requested(c, &mut out, &w, max, now).map_err(core_status);
                    defer(&mut replies, tx, r);
                }
                Event::Report {
                    worker,
                    progress,
                    outcomes,
                    reply,
                } => {
                    // A report proves the worker alive, like a heartbeat; an unknown
                    // worker's results are still taken (they are as good as anyone's).
                    // (The heartbeat hands over pending cancellations: keep them.)
                    let alive = core::on_heartbeat(c, &worker, now);
                    // Progress proves the worker runs those units: after a restart the
                    // report may come before the heartbeat that re-adopts them.
                    let mut reported: Vec<UnitId> = progress.iter().map(|p| p.0).collect();
                    reported.dedup();
                    core::on_units_reported_running(c, &mut out, &worker, &reported, now);
                    for (unit, step, metrics) in progress {
                        core::on_progress(c, &mut out, &worker, unit, step, metrics);
                    }
                    for (o, arts) in outcomes {
                        let unit = o.unit;
                        if core::on_unit_finished(c, &mut out, &worker, o, now) {
                            artifacts.insert(unit, arts);
                        }
                    }
                    let r = if let Ok(mut cancel) = alive {
                        cancel.extend(core::take_cancellations(c, &worker));
                        Ok(cancel)
                    } else {
                        Err(Status::not_found(format!(
                            "unknown worker {worker}; register again"
                        )))
                    };
                    defer(&mut replies, reply, r);
                }
                Event::Heartbeat(w, running, tx) => {
                    core::on_units_reported_running(c, &mut out, &w, &running, now);
                    let r = core::on_heartbeat(c, &w, now).map_err(core_status);
                    defer(&mut replies, tx, r);
                }
                Event::Deregister(w, tx) => {
                    core::on_worker_deregistered(c, &mut out, &w, now);
                    defer(&mut replies, tx, Ok(()));
                }
                Event::Submit(spec, files, tx) => {
                    let id = self.new_sweep_id(&spec.name);
                    let c = &mut self.core;
                    let r = core::on_sweep_submitted(c, &mut out, id.clone(), *spec, now)
                        .map(|n| (id.clone(), n))
                        .map_err(core_status);
                    if r.is_ok() && !files.is_empty() {
                        sweep_files.push((id, files));
                    }
                    defer(&mut replies, tx, r);
                }
                Event::Cancel(id, tx) => {
                    let r = core::on_cancel(c, &mut out, &id, now).map_err(core_status);
                    defer(&mut replies, tx, r);
                }
                Event::Tick => core::on_tick(c, &mut out, now),
                Event::Status(id, tx) => {
                    let ids = match id {
                        Some(id) => vec![id],
                        None => self.core.sweep_ids(),
                    };
                    let r: Result<Vec<_>, Status> = ids
                        .iter()
                        .map(|id| {
                            self.status(id, now)
                                .ok_or_else(|| Status::not_found(format!("unknown sweep {id}")))
                        })
                        .collect();
                    defer(&mut replies, tx, r);
                }
                Event::Watch(id, tx) => {
                    let r = self
                        .watchers
                        .get(&id)
                        .map(|w| w.subscribe())
                        .ok_or_else(|| Status::not_found(format!("unknown sweep {id}")));
                    defer(&mut replies, tx, r);
                }
            }
        }
        let failure = self
            .persist(&mut out, &mut artifacts, sweep_files, now)
            .err();
        if let Some(e) = &failure {
            error!("could not persist a batch: {e}");
        }
        let failed = failure.map(|e| Status::unavailable(format!("coordinator store: {e}")));
        self.notify(&out, now);
        for r in replies {
            r(failed.as_ref());
        }
    }

    /// Writes artifacts of accepted results, then the actions, before anything is
    /// acknowledged.
    fn persist(
        &mut self,
        out: &mut Vec<Action>,
        artifacts: &mut HashMap<UnitId, Vec<proto::Artifact>>,
        sweep_files: SweepFiles,
        now: u64,
    ) -> Result<(), String> {
        for (id, files) in sweep_files {
            let dir = sweep_dir(&self.data_dir, &id);
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            for (name, data) in files {
                let path = dir.join(name);
                std::fs::write(&path, data).map_err(|e| format!("{}: {e}", path.display()))?;
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
                let dir = trial_dir(&self.data_dir, sweep, *trial);
                std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                for art in arts {
                    let path = dir.join(&art.name);
                    std::fs::write(&path, &art.data)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                }
            }
        }
        self.hessian_rounds(out, now);
        self.store.apply(out).map_err(|e| e.to_string())?;
        for a in out.iter() {
            if let Action::SweepFinished { sweep, .. } = a {
                self.assemble(sweep);
            }
        }
        Ok(())
    }

    /// When the last shard of a Hessian round is in, runs the Lanczos step that makes
    /// the next round's vectors (or the final `hessian.json`) and releases the next
    /// round's units. A shard that failed for good ends the Hessian: the remaining
    /// rounds are abandoned.
    fn hessian_rounds(&mut self, out: &mut Vec<Action>, now: u64) {
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
            let first = (l.tiles() + round * h.shards) as u32;
            let states: Vec<Option<core::UnitState>> = (first..first + h.shards as u32)
                .map(|t| self.core.trial_state(&id, t))
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
        let rows = self.store.trials(&v.id).unwrap_or_default();
        let l = v.spec.landscape.as_ref();
        let tiles = l.map_or(0, |l| l.tiles() as u32);
        let secs = |hessian: bool| -> f64 {
            rows.iter()
                .filter(|r| (r.trial >= tiles) == hessian)
                .filter_map(|r| r.duration_s)
                .sum()
        };
        let samples = rows.iter().find_map(|r| {
            r.final_metrics
                .iter()
                .find(|(n, _)| n == "samples")
                .map(|(_, v)| *v)
        });
        let workers: std::collections::BTreeSet<&str> =
            rows.iter().filter_map(|r| r.worker.as_deref()).collect();
        serde_json::json!({
            "samples": samples,
            "wall_seconds": v.finished.unwrap_or(v.created).saturating_sub(v.created) as f64 / 1000.0,
            "tile_seconds": secs(false),
            "hessian_seconds": secs(true),
            "workers": workers,
            "units": v.counts.total,
        })
    }

    /// Puts a finished scan's tiles together into the surface files. A failure here is
    /// logged, not fatal: the tiles stay on disk and can be assembled again.
    fn assemble(&self, id: &SweepId) {
        let Some(v) = self.core.sweep(id) else { return };
        if v.spec.kind != SweepKind::Landscape {
            return;
        }
        let dir = sweep_dir(&self.data_dir, id);
        let started = std::time::Instant::now();
        let run = self.run_summary(&v);
        match landscape::assemble(&dir, id.as_str(), &v.spec, run, |t| {
            trial_dir(&self.data_dir, id, t)
        }) {
            Ok(()) => {
                info!(sweep = %id, dir = %dir.display(), seconds = started.elapsed().as_secs_f64(), "surface assembled")
            }
            Err(e) => error!(sweep = %id, "cannot assemble the surface: {e}"),
        }
    }

    fn notify(&mut self, out: &[Action], now: u64) {
        let mut touched: HashSet<SweepId> = HashSet::new();
        for a in out {
            let id = match a {
                Action::SweepCreated { sweep, .. }
                | Action::UnitCreated { sweep, .. }
                | Action::UnitFinished { sweep, .. }
                | Action::SweepFinished { sweep, .. } => Some(sweep.clone()),
                Action::UnitLeased { unit, .. }
                | Action::UnitRequeued { unit, .. }
                | Action::UnitAdopted { unit, .. } => self.core.unit_trial(*unit).map(|(s, _)| s),
                Action::Progress { .. }
                | Action::WorkerRegistered { .. }
                | Action::WorkerGone { .. } => None,
            };
            touched.extend(id);
        }
        for id in touched {
            let Some(st) = self.status(&id, now) else {
                continue;
            };
            match self.watchers.get(&id) {
                Some(w) => {
                    w.send_replace(st);
                }
                None => {
                    self.watchers.insert(id, watch::channel(st).0);
                }
            }
        }
    }
}
