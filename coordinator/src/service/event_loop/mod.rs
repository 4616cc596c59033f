//! The event loop: the one owner of the core and the store. It applies a batch of
//! events to the core, persists what they changed (files, then one SQLite transaction),
//! and only then replies.
//!
//! The core is a cache of the database. When a commit fails (a full disk, a data folder
//! that became unwritable) the batch's changes exist only in memory: every reply of the
//! batch becomes a retryable UNAVAILABLE, and the core is rebuilt from the database,
//! exactly as after a restart. Workers keep what was not acknowledged and send it again;
//! nothing acknowledged is ever missing from the database.

use super::secrets::{self, Caller};
use super::*;
use crate::core::Millis;
use crate::telemetry;

mod files;

use files::SweepFiles;

pub(super) type Reply<T> = oneshot::Sender<Result<T, Status>>;

/// A unit's intermediate metrics: `(unit, step, metrics)`.
type ProgressItem = (UnitId, u32, Vec<(String, f64)>);

/// A reply held back until the batch is durable; given the store's error, if any.
type Deferred = Box<dyn FnOnce(Option<&Status>)>;

/// One page of `ListSweeps`: sweeps after `after` (a page token), at most `limit`.
pub(super) struct ListQuery {
    pub(super) after: Option<(Millis, SweepId)>,
    pub(super) limit: usize,
    pub(super) with_spec: bool,
}

pub(super) enum Event {
    /// A worker's description and the id (and secret) it had before, if any; answered
    /// with its id and secret.
    Register(WorkerInfo, Option<Caller>, Reply<(WorkerId, String)>),
    Lease(Caller, u32, Reply<Vec<Lease>>),
    Report {
        worker: Caller,
        progress: Vec<ProgressItem>,
        outcomes: Vec<(Outcome, Vec<proto::Artifact>)>,
        logs: Vec<proto::LogChunk>,
        /// Units to lease once the report is taken (the slots its outcomes freed).
        max_units: u32,
        /// The units to stop, and the leases granted.
        reply: Reply<(Vec<UnitId>, Vec<Lease>)>,
    },
    /// A heartbeat with the units the worker is running.
    Heartbeat(Caller, Vec<UnitId>, Reply<Vec<UnitId>>),
    Deregister(Caller, Reply<()>),
    /// A spec and the files its units need (a scan's checkpoint and directions).
    Submit(
        Box<SweepSpec>,
        Vec<(String, Vec<u8>)>,
        Reply<(SweepId, u32)>,
    ),
    Cancel(SweepId, Reply<core::SweepState>),
    Resume(SweepId, Reply<core::SweepState>),
    /// More trials (and configurations to run next) for a search: its new total.
    Extend(
        SweepId,
        u32,
        Vec<ridgeline_common::params::Params>,
        Reply<u32>,
    ),
    Delete(SweepId, Reply<()>),
    Status(SweepId, Reply<proto::SweepStatus>),
    List(ListQuery, Reply<(Vec<proto::SweepStatus>, Option<String>)>),
    Watch(SweepId, Reply<watch::Receiver<proto::SweepStatus>>),
    Tick,
}

fn core_status(e: CoreError) -> Status {
    match e {
        CoreError::UnknownWorker(_) => Status::not_found(e.to_string()),
        CoreError::UnknownSweep(_) => Status::not_found(e.to_string()),
        CoreError::DuplicateSweep(_) => Status::already_exists(e.to_string()),
        CoreError::NotResumable(..) | CoreError::NotExtendable(..) => {
            Status::failed_precondition(e.to_string())
        }
        CoreError::Invalid(..) => Status::invalid_argument(e.to_string()),
    }
}

/// Owns the core, the store and the status watchers.
pub(super) struct EventLoop {
    pub(super) core: Core,
    pub(super) store: Store,
    pub(super) data_dir: PathBuf,
    core_cfg: CoreConfig,
    watchers: HashMap<SweepId, watch::Sender<proto::SweepStatus>>,
    rng: ridgeline_common::rng::Rng,
    /// The core is ahead of the database (a commit failed and so did the rebuild):
    /// nothing is served until a rebuild succeeds.
    stale: bool,
    /// How long a finished sweep stays in the gauges.
    metrics_retention_ms: u64,
    /// `/readyz`: down while the database is unusable.
    ready: Option<ReadyFlag>,
    /// The tile logs of running scans, open while they run.
    tile_logs: HashMap<SweepId, crate::landscape::TileLog>,
}

/// A core rebuilt from the database, and the actions that rebuilding took (leased units
/// queued again).
fn load_core(
    store: &Store,
    cfg: &CoreConfig,
    data_dir: &Path,
    now: Millis,
) -> Result<(Core, Vec<Action>), StoreError> {
    let mut core = Core::new(
        cfg.clone(),
        store.max_unit_id()? + 1,
        store.max_worker_number()? + 1,
    );
    let mut out = Vec::new();
    for mut s in store.restore()? {
        s.released = landscape::released_units(&sweep_dir(data_dir, &s.id), &s.spec);
        // A scan whose Hessian released no round has lost its Lanczos state (it ended
        // with the sweep, which is now resumed): its Hessian rounds can never run.
        let no_hessian = s
            .spec
            .landscape
            .as_ref()
            .filter(|l| s.released == Some(l.hessian_base() as u32))
            .map(|l| (s.id.clone(), l.hessian_base() as u32));
        core::on_sweep_restored(&mut core, &mut out, s, now);
        if let Some((id, base)) = no_hessian {
            core::on_units_abandoned_from(&mut core, &mut out, &id, base, now);
        }
    }
    Ok((core, out))
}

/// Writes a file so that readers see the old content or the new, never a torn one, and
/// never through a link (see [`crate::fsafe`]).
pub(super) fn write_atomic(path: &Path, data: &[u8]) -> Result<(), String> {
    crate::fsafe::write_atomic(path, data)
        .inspect(|()| crate::telemetry::wrote(data.len() as u64))
        .map_err(|e| e.to_string())
}

impl EventLoop {
    pub(super) fn open(cfg: &CoordinatorConfig) -> Result<Self, ServeError> {
        // Every file under the data folder is opened through fsafe, from here.
        crate::fsafe::add_root(&cfg.data_dir).map_err(|source| ServeError::Io {
            path: cfg.data_dir.clone(),
            source,
        })?;
        let path = db_path(&cfg.data_dir);
        let store_err = |source| ServeError::Store {
            path: path.clone(),
            source,
        };
        let mut store = Store::open(&path).map_err(store_err)?;
        let now = now_ms();
        let (core, out) = load_core(&store, &cfg.core, &cfg.data_dir, now).map_err(store_err)?;
        store.apply(&out).map_err(store_err)?;
        let resumed = core
            .sweep_ids()
            .iter()
            .filter(|id| {
                core.sweep(id)
                    .is_some_and(|v| v.state == core::SweepState::Running)
            })
            .count();
        if resumed > 0 {
            info!(sweeps = resumed, "resumed running sweeps from the database");
        }
        let seed = now ^ u64::from(std::process::id()).rotate_left(32);
        let mut el = EventLoop {
            core,
            store,
            data_dir: cfg.data_dir.clone(),
            core_cfg: cfg.core.clone(),
            watchers: HashMap::new(),
            rng: ridgeline_common::rng::Rng::new(seed),
            stale: false,
            metrics_retention_ms: cfg.metrics_retention_ms,
            ready: cfg.ready.clone(),
            tile_logs: HashMap::new(),
        };
        telemetry::record(&out, &el.core);
        telemetry::publish(&el.core.gauges(now, el.metrics_retention_ms));
        el.refresh_watchers(now);
        // Folders of deleted sweeps whose removal a crash interrupted.
        if let Ok(entries) = std::fs::read_dir(cfg.data_dir.join("sweeps")) {
            let trash: Vec<PathBuf> = entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with(".deleted-"))
                .map(|e| e.path())
                .collect();
            if !trash.is_empty() {
                std::thread::spawn(move || {
                    for t in trash {
                        let _ = std::fs::remove_dir_all(t);
                    }
                });
            }
        }
        // A scan that ended while its surface could not be written (a full disk, say)
        // gets it now: its tiles are all stored.
        for id in el.core.sweep_ids() {
            let Some(v) = el.core.sweep(&id) else {
                continue;
            };
            let unassembled = v.spec.landscape.is_some()
                && v.state != core::SweepState::Running
                && !sweep_dir(&el.data_dir, &id).join("meta.json").exists();
            if unassembled {
                info!(sweep = %id, "assembling a finished scan's surface that was never written");
                el.assemble(&id);
            }
        }
        Ok(el)
    }

    fn set_ready(&self, ready: bool) {
        if let Some(r) = &self.ready {
            r.set(ready);
        }
    }

    /// Throws the in-memory state away and loads it from the database again.
    fn rebuild(&mut self, now: Millis) -> Result<(), StoreError> {
        let (core, out) = load_core(&self.store, &self.core_cfg, &self.data_dir, now)?;
        self.store.apply(&out)?;
        self.core = core;
        self.stale = false;
        self.set_ready(true);
        telemetry::record(&out, &self.core);
        self.refresh_watchers(now);
        warn!(
            live_units = self.core.live_units(),
            "state rebuilt from the database after a failed commit; workers re-register"
        );
        Ok(())
    }

    /// Every watcher shows what the core (now equal to the database) says.
    fn refresh_watchers(&mut self, now: Millis) {
        self.watchers.retain(|id, _| self.core.sweep(id).is_some());
        for id in self.core.sweep_ids() {
            let st = self.status(&id, false, now).expect("listed sweep exists");
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

    fn status(&self, id: &SweepId, with_spec: bool, now: u64) -> Option<proto::SweepStatus> {
        let v = self.core.sweep(id)?;
        let dir = v
            .best
            .as_ref()
            .map(|b| trial_dir(&self.data_dir, id, b.trial))
            .filter(|d| d.exists())
            .map(|d| d.display().to_string());
        Some(status_to_proto(&v, dir, with_spec, now))
    }

    fn list(&self, q: ListQuery, now: u64) -> (Vec<proto::SweepStatus>, Option<String>) {
        let key = |id: &SweepId| (self.core.sweep(id).map_or(0, |v| v.created), id.clone());
        let ids: Vec<SweepId> = self
            .core
            .sweep_ids()
            .into_iter()
            .filter(|id| q.after.as_ref().is_none_or(|a| key(id) > *a))
            .collect();
        let page: Vec<proto::SweepStatus> = ids
            .iter()
            .take(q.limit)
            .filter_map(|id| self.status(id, q.with_spec, now))
            .collect();
        let next = (ids.len() > q.limit).then(|| {
            let (created, id) = key(&ids[q.limit - 1]);
            format!("{created}:{id}")
        });
        (page, next)
    }

    fn new_sweep_id(&mut self, name: &str) -> SweepId {
        loop {
            let id = SweepId(format!("{name}-{:06x}", self.rng.next_u64() & 0xff_ffff));
            if self.core.sweep(&id).is_none() && !sweep_dir(&self.data_dir, &id).exists() {
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
            metrics::gauge!(telemetry::QUEUE_DEPTH).set(rx.len() as f64);
            metrics::histogram!(telemetry::BATCH_EVENTS).record(batch.len() as f64);
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
        let mut ticked = false;
        fn defer<T: 'static>(replies: &mut Vec<Deferred>, tx: Reply<T>, r: Result<T, Status>) {
            replies.push(Box::new(move |failed| {
                let _ = tx.send(match failed {
                    Some(s) => Err(s.clone()),
                    None => r,
                });
            }));
        }
        if self.stale {
            if let Err(e) = self.rebuild(now) {
                error!("the database is still unusable: {e}");
                let refused = Status::unavailable(format!("coordinator store: {e}"));
                for ev in batch {
                    refuse(ev, &refused);
                }
                return;
            }
        }
        for ev in batch {
            let c = &mut self.core;
            match ev {
                Event::Register(info, resume, tx) => {
                    // An id goes back only to the process that holds its secret.
                    let resume = resume
                        .filter(|r| secrets::may_resume(&self.core, &self.store, &r.id, &r.secret));
                    let c = &mut self.core;
                    let asked = resume.as_ref().map(|r| r.id.clone());
                    let id = core::on_worker_registered(c, &mut out, info, asked.clone(), now);
                    let secret = match resume {
                        Some(r) if Some(&id) == asked.as_ref() => r.secret,
                        _ => secrets::new_secret(),
                    };
                    core::on_worker_secret(c, &mut out, &id, secrets::sha256_hex(&secret));
                    defer(&mut replies, tx, Ok((id, secret)));
                }
                Event::Lease(w, max, tx) => {
                    let r = secrets::check(c, &w).and_then(|()| {
                        core::on_lease_requested(c, &mut out, &w.id, max, now).map_err(core_status)
                    });
                    defer(&mut replies, tx, r);
                }
                Event::Report {
                    worker,
                    progress,
                    outcomes,
                    logs,
                    max_units,
                    reply,
                } => {
                    if let Err(e) = secrets::check(c, &worker) {
                        defer(&mut replies, reply, Err(e));
                        continue;
                    }
                    let worker = worker.id;
                    // Units that ended in this report are taken first, each with its last
                    // progress, so that their slots are free before the units still
                    // running are adopted back: after a restart one report holds both.
                    let ended: HashSet<UnitId> = outcomes.iter().map(|(o, _)| o.unit).collect();
                    let (last, progress): (Vec<_>, Vec<_>) =
                        progress.into_iter().partition(|p| ended.contains(&p.0));
                    let running = distinct_units(&progress);
                    // A report proves the worker alive, like a heartbeat, and renews the
                    // units it reports progress of. A worker the core does not know gets
                    // NOT_FOUND and nothing of its report is taken: it registers again
                    // (asking for its old id) and resends. (The heartbeat hands over
                    // pending cancellations: keep them.)
                    let Ok(mut cancel) = core::on_heartbeat(c, &worker, &running, now) else {
                        let e = CoreError::UnknownWorker(worker);
                        defer(&mut replies, reply, Err(core_status(e)));
                        continue;
                    };
                    self.write_logs(&worker, logs);
                    let c = &mut self.core;
                    core::on_units_reported_ended(
                        c,
                        &mut out,
                        &worker,
                        &distinct_units(&last),
                        now,
                    );
                    for (unit, step, metrics) in last {
                        core::on_progress(c, &mut out, &worker, unit, step, metrics, now);
                    }
                    for (mut o, arts) in outcomes {
                        let unit = o.unit;
                        // A scan tile's result must carry exactly its points.
                        if let Some((sid, trial)) = c.unit_trial(unit) {
                            if let Some(v) = c.sweep(&sid) {
                                let files: Vec<(&str, &[u8])> = arts
                                    .iter()
                                    .map(|a| (a.name.as_str(), a.data.as_slice()))
                                    .collect();
                                landscape::check_tile(&v.spec, trial, &mut o, &files);
                            }
                        }
                        match core::on_unit_finished(c, &mut out, &worker, o, now) {
                            Ok(core::Verdict::Accepted) => {
                                artifacts.insert(unit, arts);
                            }
                            Ok(core::Verdict::AlreadyFinal) => {}
                            Ok(core::Verdict::Refused(why)) => {
                                warn!(worker = %worker, unit = %unit, "result refused: {why}");
                            }
                            Err(e) => warn!("{e}"),
                        }
                    }
                    // Progress proves the worker runs those units: after a restart the
                    // report may come before the heartbeat that re-adopts them.
                    core::on_units_reported_running(c, &mut out, &worker, &running, now);
                    for (unit, step, metrics) in progress {
                        core::on_progress(c, &mut out, &worker, unit, step, metrics, now);
                    }
                    cancel.extend(core::take_cancellations(c, &worker));
                    cancel.sort_unstable();
                    cancel.dedup();
                    // Leased after the outcomes, in the same commit: a unit's end and
                    // its successor's start cost the worker one round trip.
                    let leases = if max_units > 0 {
                        core::on_lease_requested(c, &mut out, &worker, max_units, now)
                            .unwrap_or_default()
                    } else {
                        Vec::new()
                    };
                    defer(&mut replies, reply, Ok((cancel, leases)));
                }
                Event::Heartbeat(w, running, tx) => {
                    if let Err(e) = secrets::check(c, &w) {
                        defer(&mut replies, tx, Err(e));
                        continue;
                    }
                    core::on_units_reported_running(c, &mut out, &w.id, &running, now);
                    let r = core::on_heartbeat(c, &w.id, &running, now).map_err(core_status);
                    defer(&mut replies, tx, r);
                }
                Event::Deregister(w, tx) => {
                    let r = secrets::check(c, &w);
                    if r.is_ok() {
                        core::on_worker_deregistered(c, &mut out, &w.id, now);
                    }
                    defer(&mut replies, tx, r);
                }
                Event::Submit(spec, mut files, tx) => {
                    let id = self.new_sweep_id(&spec.name);
                    // Workers fetch the spec once per sweep, as a file, rather than with
                    // every lease.
                    files.push(("spec.json".into(), spec.to_json().into_bytes()));
                    let c = &mut self.core;
                    let r = core::on_sweep_submitted(c, &mut out, id.clone(), *spec, now)
                        .map(|n| (id.clone(), n))
                        .map_err(core_status);
                    if r.is_ok() {
                        sweep_files.push((id, files));
                    }
                    defer(&mut replies, tx, r);
                }
                Event::Cancel(id, tx) => {
                    let r = core::on_cancel(c, &mut out, &id, now).map_err(core_status);
                    defer(&mut replies, tx, r);
                }
                Event::Resume(id, tx) => {
                    let r = core::on_sweep_resumed(c, &mut out, &id).map_err(core_status);
                    defer(&mut replies, tx, r);
                }
                Event::Extend(id, trials, enqueue, tx) => {
                    let r = core::on_sweep_extended(c, &mut out, &id, trials, enqueue)
                        .map_err(core_status);
                    defer(&mut replies, tx, r);
                }
                Event::Delete(id, tx) => {
                    let r = core::on_sweep_deleted(c, &mut out, &id, now).map_err(core_status);
                    defer(&mut replies, tx, r);
                }
                Event::Tick => {
                    core::on_tick(c, &mut out, now);
                    ticked = true;
                }
                Event::Status(id, tx) => {
                    let r = self
                        .status(&id, true, now)
                        .ok_or_else(|| Status::not_found(format!("unknown sweep {id}")));
                    defer(&mut replies, tx, r);
                }
                Event::List(q, tx) => {
                    let r = self.list(q, now);
                    defer(&mut replies, tx, Ok(r));
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
        let started = std::time::Instant::now();
        let persisted = self.persist(&mut out, &mut artifacts, sweep_files, now);
        metrics::histogram!(telemetry::COMMIT_DURATION).record(started.elapsed().as_secs_f64());
        metrics::histogram!(telemetry::COMMIT_ACTIONS).record(out.len() as f64);
        match persisted {
            Ok(()) => {
                telemetry::record(&out, &self.core);
                if ticked {
                    telemetry::publish(&self.core.gauges(now, self.metrics_retention_ms));
                }
                self.after_commit(&out);
                if out.iter().any(|a| {
                    matches!(
                        a,
                        Action::SweepResumed { .. } | Action::SweepExtended { .. }
                    )
                }) {
                    // The resumed (or extended) sweep's units, searcher and scheduler are
                    // rebuilt from the store, as after a restart.
                    if let Err(e) = self.rebuild(now) {
                        error!("cannot rebuild the state from the database: {e}");
                        self.stale = true;
                    }
                }
                self.notify(&out, now);
                for r in replies {
                    r(None);
                }
            }
            Err(e) => {
                error!("could not persist a batch, nothing of it is acknowledged: {e}");
                metrics::counter!(telemetry::COMMIT_FAILURES).increment(1);
                self.set_ready(false);
                let failed = Status::unavailable(format!("coordinator store: {e}"));
                for r in replies {
                    r(Some(&failed));
                }
                self.stale = true;
                if let Err(e) = self.rebuild(now) {
                    error!("cannot rebuild the state from the database: {e}");
                }
            }
        }
    }

    fn notify(&mut self, out: &[Action], now: u64) {
        let mut touched: HashSet<SweepId> = HashSet::new();
        for a in out {
            let id = match a {
                Action::SweepCreated { sweep, .. }
                | Action::UnitCreated { sweep, .. }
                | Action::UnitFinished { sweep, .. }
                | Action::SweepBest { sweep, .. }
                | Action::SweepFinished { sweep, .. } => Some(sweep.clone()),
                Action::SweepResumed { sweep, .. } | Action::SweepExtended { sweep, .. } => {
                    Some(sweep.clone())
                }
                Action::SweepDeleted { sweep } => {
                    // Dropping the sender ends every watch of the sweep.
                    self.watchers.remove(sweep);
                    None
                }
                Action::UnitLeased { unit, .. }
                | Action::UnitRequeued { unit, .. }
                | Action::LeaseExpired { unit }
                | Action::UnitAdopted { unit, .. } => self.core.unit_trial(*unit).map(|(s, _)| s),
                Action::Progress { .. }
                | Action::CheckpointsDropped { .. }
                | Action::WorkerRegistered { .. }
                | Action::WorkerSecret { .. }
                | Action::WorkerGone { .. } => None,
            };
            touched.extend(id);
        }
        for id in touched {
            let Some(st) = self.status(&id, false, now) else {
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

/// The units of a report's progress, each once.
fn distinct_units(progress: &[ProgressItem]) -> Vec<UnitId> {
    let mut units: Vec<UnitId> = progress.iter().map(|p| p.0).collect();
    units.sort_unstable();
    units.dedup();
    units
}

/// Answers an event that cannot be served at all.
fn refuse(ev: Event, why: &Status) {
    fn no<T>(tx: Reply<T>, why: &Status) {
        let _ = tx.send(Err(why.clone()));
    }
    match ev {
        Event::Register(_, _, tx) => no(tx, why),
        Event::Lease(_, _, tx) => no(tx, why),
        Event::Report { reply, .. } => no(reply, why),
        Event::Heartbeat(_, _, tx) => no(tx, why),
        Event::Deregister(_, tx) => no(tx, why),
        Event::Submit(_, _, tx) => no(tx, why),
        Event::Cancel(_, tx) => no(tx, why),
        Event::Resume(_, tx) => no(tx, why),
        Event::Extend(_, _, _, tx) => no(tx, why),
        Event::Delete(_, tx) => no(tx, why),
        Event::Status(_, tx) => no(tx, why),
        Event::List(_, tx) => no(tx, why),
        Event::Watch(_, tx) => no(tx, why),
        Event::Tick => {}
    }
}
