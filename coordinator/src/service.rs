//! The coordinator process: one event loop that owns the [`Core`] and the [`Store`], and
//! thin tonic services that validate requests, convert them, and post them to the loop.
//!
//! The loop runs on a dedicated OS thread. It takes every event waiting in its channel,
//! applies them to the core, writes the resulting actions (and trial artifacts) in one
//! SQLite transaction, and only then replies: nothing is acknowledged before it is
//! durable, and a burst of reports costs one commit.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{Stream, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};
use tracing::{error, info, warn};

use ridgeline_common::ids::{SweepId, UnitId, WorkerId};
use ridgeline_common::params::{Params, params_to_proto};
use ridgeline_common::proto::{self, sweep_service_server, worker_service_server};
use ridgeline_common::spec::{SweepKind, SweepSpec};
use ridgeline_common::{MAX_MESSAGE_BYTES, PROTOCOL_VERSION};

use crate::convert::*;
use crate::core::{
    self, Action, Core, CoreConfig, CoreError, Lease, Outcome, StoredSweep, StoredUnit, WorkerInfo,
};
use crate::landscape;
use crate::store::{Store, StoreError};
use ridgeline_common::landscape::{DirectionKind, ScanUnit};
use ridgeline_common::net::{NetError, RequireToken, Security, server_tls};
use tonic::service::interceptor::InterceptedService;

/// How the coordinator runs.
#[derive(Clone, Debug)]
pub struct CoordinatorConfig {
    /// Folder of the database (`ridgeline.db`) and trial artifacts (`sweeps/`).
    pub data_dir: PathBuf,
    /// Scheduling policy.
    pub core: CoreConfig,
    /// Token and TLS.
    pub security: Security,
}

/// Errors that stop the coordinator.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The database could not be opened or read.
    #[error("{path}: {source}")]
    Store {
        /// The database file.
        path: PathBuf,
        /// Why.
        source: StoreError,
    },
    /// The data folder could not be created.
    #[error("{path}: {source}")]
    Io {
        /// The folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Listening beyond loopback without a token would let anyone in.
    #[error(
        "listening on {0} (not loopback) needs a token: set RIDGELINE_TOKEN or token_file, or listen on 127.0.0.1"
    )]
    Insecure(std::net::SocketAddr),
    /// The TLS settings are unusable.
    #[error("TLS: {0}")]
    Tls(#[from] NetError),
}

/// The database file inside a data folder.
pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join("ridgeline.db")
}

/// The folder of a sweep's files.
pub fn sweep_dir(data_dir: &Path, sweep: &SweepId) -> PathBuf {
    data_dir.join("sweeps").join(sweep.as_str())
}

/// The folder holding a unit's artifacts (a trial's `model.safetensors` and
/// `model.json`, a tile's `tile.f64`).
pub fn trial_dir(data_dir: &Path, sweep: &SweepId, trial: u32) -> PathBuf {
    sweep_dir(data_dir, sweep)
        .join("trials")
        .join(format!("{trial:05}"))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

type Reply<T> = oneshot::Sender<Result<T, Status>>;

/// A unit's intermediate metrics: `(unit, step, metrics)`.
type ProgressItem = (UnitId, u32, Vec<(String, f64)>);

/// Files written into a new sweep's folder: `(sweep, [(name, bytes)])`.
type SweepFiles = Vec<(SweepId, Vec<(String, Vec<u8>)>)>;

/// A reply held back until the batch is durable; given the store's error, if any.
type Deferred = Box<dyn FnOnce(Option<&Status>)>;

enum Event {
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
struct EventLoop {
    core: Core,
    store: Store,
    data_dir: PathBuf,
    watchers: HashMap<SweepId, watch::Sender<proto::SweepStatus>>,
    rng: ridgeline_common::rng::Rng,
}

impl EventLoop {
    fn open(cfg: &CoordinatorConfig) -> Result<Self, ServeError> {
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

    fn run(mut self, mut rx: mpsc::Receiver<Event>) {
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

#[derive(Clone)]
struct Handle {
    tx: mpsc::Sender<Event>,
}

impl Handle {
    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Event) -> Result<T, Status> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| Status::unavailable("coordinator is shutting down"))?;
        rx.await
            .map_err(|_| Status::unavailable("coordinator is shutting down"))?
    }
}

fn worker_id(s: &str) -> Result<WorkerId, Status> {
    if s.is_empty() {
        return Err(Status::invalid_argument("worker_id: required"));
    }
    Ok(WorkerId(s.to_owned()))
}

fn sweep_id(s: &str) -> Result<SweepId, Status> {
    if s.is_empty() {
        return Err(Status::invalid_argument("sweep_id: required"));
    }
    Ok(SweepId(s.to_owned()))
}

struct WorkerApi {
    h: Handle,
    cfg: CoreConfig,
    data_dir: PathBuf,
}

#[tonic::async_trait]
impl worker_service_server::WorkerService for WorkerApi {
    async fn register(
        &self,
        req: Request<proto::RegisterRequest>,
    ) -> Result<Response<proto::RegisterResponse>, Status> {
        let r = req.into_inner();
        if r.protocol_version != PROTOCOL_VERSION {
            return Err(Status::failed_precondition(format!(
                "worker speaks protocol version {}, this coordinator speaks {PROTOCOL_VERSION}; run the same ridgeline release on both",
                r.protocol_version
            )));
        }
        let info = WorkerInfo {
            name: if r.name.is_empty() {
                r.hostname.clone()
            } else {
                r.name
            },
            hostname: r.hostname,
            slots: r.slots.max(1),
            devices: r
                .devices
                .iter()
                .map(|d| {
                    format!("{}:{} {}", d.kind, d.ordinal, d.name)
                        .trim()
                        .to_owned()
                })
                .collect(),
        };
        let id = self.h.call(|tx| Event::Register(info.clone(), tx)).await?;
        info!(worker = %id, slots = info.slots, devices = ?info.devices, "worker registered");
        Ok(Response::new(proto::RegisterResponse {
            worker_id: id.to_string(),
            heartbeat_interval_ms: self.cfg.heartbeat_interval_ms,
            lease_ttl_ms: self.cfg.lease_ttl_ms,
        }))
    }

    async fn lease_units(
        &self,
        req: Request<proto::LeaseRequest>,
    ) -> Result<Response<proto::LeaseResponse>, Status> {
        let r = req.into_inner();
        let w = worker_id(&r.worker_id)?;
        let leases = self.h.call(|tx| Event::Lease(w, r.max_units, tx)).await?;
        Ok(Response::new(proto::LeaseResponse {
            units: leases.iter().map(lease_to_proto).collect(),
            lease_ttl_ms: self.cfg.lease_ttl_ms,
        }))
    }

    async fn report(
        &self,
        req: Request<proto::ReportRequest>,
    ) -> Result<Response<proto::ReportResponse>, Status> {
        let r = req.into_inner();
        let worker = worker_id(&r.worker_id)?;
        let progress = r
            .progress
            .iter()
            .map(|p| (UnitId(p.unit_id), p.step, metrics_from_proto(&p.metrics)))
            .collect();
        let mut outcomes = Vec::with_capacity(r.outcomes.len());
        for mut o in r.outcomes {
            for a in &o.artifacts {
                check_artifact_name(&a.name)?;
            }
            let arts = std::mem::take(&mut o.artifacts);
            outcomes.push((outcome_from_proto(&o)?, arts));
        }
        let cancel = self
            .h
            .call(|reply| Event::Report {
                worker,
                progress,
                outcomes,
                reply,
            })
            .await?;
        Ok(Response::new(proto::ReportResponse {
            cancel_units: cancel.iter().map(|u| u.0).collect(),
        }))
    }

    async fn heartbeat(
        &self,
        req: Request<proto::HeartbeatRequest>,
    ) -> Result<Response<proto::HeartbeatResponse>, Status> {
        let r = req.into_inner();
        let w = worker_id(&r.worker_id)?;
        let running = r.running_units.into_iter().map(UnitId).collect();
        match self.h.call(|tx| Event::Heartbeat(w, running, tx)).await {
            Ok(cancel) => Ok(Response::new(proto::HeartbeatResponse {
                cancel_units: cancel.iter().map(|u| u.0).collect(),
                unknown_worker: false,
            })),
            Err(s) if s.code() == tonic::Code::NotFound => {
                Ok(Response::new(proto::HeartbeatResponse {
                    cancel_units: vec![],
                    unknown_worker: true,
                }))
            }
            Err(s) => Err(s),
        }
    }

    async fn fetch_blob(
        &self,
        req: Request<proto::FetchBlobRequest>,
    ) -> Result<Response<proto::FetchBlobResponse>, Status> {
        let r = req.into_inner();
        let id = sweep_id(&r.sweep_id)?;
        check_artifact_name(&r.name)?;
        if id.as_str().contains(['/', '\\']) || id.as_str().starts_with('.') {
            return Err(Status::invalid_argument("sweep_id: not a sweep id"));
        }
        let path = sweep_dir(&self.data_dir, &id).join(&r.name);
        let data = tokio::fs::read(&path)
            .await
            .map_err(|e| Status::not_found(format!("{}/{}: {e}", id, r.name)))?;
        Ok(Response::new(proto::FetchBlobResponse { data }))
    }

    async fn deregister(
        &self,
        req: Request<proto::DeregisterRequest>,
    ) -> Result<Response<proto::DeregisterResponse>, Status> {
        let w = worker_id(&req.into_inner().worker_id)?;
        info!(worker = %w, "worker deregistered");
        self.h.call(|tx| Event::Deregister(w, tx)).await?;
        Ok(Response::new(proto::DeregisterResponse {}))
    }
}

struct SweepApi {
    h: Handle,
    data_dir: PathBuf,
}

impl SweepApi {
    /// The checkpoint folder a reference names: `sweep:ID/best` (the best trial of a
    /// sweep here) or `sweep:ID/trial/N`.
    async fn best_checkpoint(&self, field: &str, reference: &str) -> Result<PathBuf, Status> {
        let bad = || {
            Status::invalid_argument(format!(
                "{field}: {reference:?} was not attached; give a folder the client can read, sweep:ID/best or sweep:ID/trial/N"
            ))
        };
        let rest = reference.strip_prefix("sweep:").ok_or_else(bad)?;
        let (src, which) = rest.split_once('/').ok_or_else(bad)?;
        let id = SweepId(src.to_owned());
        if let Some(n) = which.strip_prefix("trial/") {
            let n: u32 = n.parse().map_err(|_| bad())?;
            let dir = trial_dir(&self.data_dir, &id, n);
            if !dir.join(landscape::MODEL_WEIGHTS).exists() {
                return Err(Status::failed_precondition(format!(
                    "{field}: sweep {id} has no checkpoint for trial {n}"
                )));
            }
            return Ok(dir);
        }
        if which != "best" {
            return Err(bad());
        }
        let mut st = self
            .h
            .call(|tx| Event::Status(Some(id.clone()), tx))
            .await?;
        st.pop()
            .and_then(|s| s.best)
            .map(|b| b.checkpoint_dir)
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .ok_or_else(|| {
                Status::failed_precondition(format!(
                    "{field}: sweep {id} has no completed trial with a checkpoint"
                ))
            })
    }

    /// The files a scan's workers need: the checkpoint (attached by the client, or the
    /// best trial of a sweep here), target checkpoints, and the directions.
    async fn landscape_files(
        &self,
        spec: &mut SweepSpec,
        attachments: Vec<proto::Artifact>,
    ) -> Result<Vec<(String, Vec<u8>)>, Status> {
        let mut files: HashMap<String, Vec<u8>> =
            attachments.into_iter().map(|a| (a.name, a.data)).collect();
        let l = spec
            .landscape
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("landscape: missing"))?;
        let read = |path: PathBuf| {
            std::fs::read(&path).map_err(|e| Status::internal(format!("{}: {e}", path.display())))
        };
        if !files.contains_key(landscape::MODEL_WEIGHTS) {
            let dir = self
                .best_checkpoint(
                    "landscape.checkpoint",
                    l.checkpoint.as_deref().unwrap_or_default(),
                )
                .await?;
            for name in [landscape::MODEL_JSON, landscape::MODEL_WEIGHTS] {
                files.insert(name.to_owned(), read(dir.join(name))?);
            }
        }
        for (field, reference, name) in [
            (
                "landscape.directions.to",
                &l.directions.to,
                "to.safetensors",
            ),
            (
                "landscape.directions.y_to",
                &l.directions.y_to,
                "y_to.safetensors",
            ),
        ] {
            if let Some(r) = reference {
                if !files.contains_key(name) {
                    let dir = self.best_checkpoint(field, r).await?;
                    files.insert(name.to_owned(), read(dir.join(landscape::MODEL_WEIGHTS))?);
                }
            }
        }
        if let Some(r) = l
            .directions
            .trajectory
            .as_ref()
            .filter(|_| l.directions.kind == DirectionKind::Pca)
        {
            let dir = self
                .best_checkpoint("landscape.directions.trajectory", r)
                .await?;
            let mut epochs: Vec<PathBuf> = std::fs::read_dir(&dir)
                .map_err(|e| Status::internal(format!("{}: {e}", dir.display())))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("model_epoch_"))
                })
                .collect();
            epochs.sort();
            if epochs.len() < 3 {
                return Err(Status::failed_precondition(format!(
                    "landscape.directions.trajectory: {r} kept {} epoch checkpoints, PCA needs at least 3 (train with keep_checkpoints = true)",
                    epochs.len()
                )));
            }
            for (i, p) in epochs.into_iter().enumerate() {
                files.insert(format!("trajectory_{i:04}.safetensors"), read(p)?);
            }
        }
        let submitted = spec.clone();
        let inputs = files.clone();
        let dirs = tokio::task::spawn_blocking(move || landscape::prepare(&submitted, &inputs))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(Status::invalid_argument)?;
        let mut out: Vec<(String, Vec<u8>)> = files
            .into_iter()
            .filter(|(n, _)| n == landscape::MODEL_JSON || n == landscape::MODEL_WEIGHTS)
            .collect();
        if let Some((_, t)) = dirs.iter().find(|(n, _)| n == "trajectory.json") {
            let t: serde_json::Value =
                serde_json::from_slice(t).map_err(|e| Status::internal(e.to_string()))?;
            if let Some(l) = spec.landscape.as_mut() {
                landscape::fit_axes_to_trajectory(l, &t);
            }
        }
        out.extend(dirs);
        Ok(out)
    }
}

type StatusStream = Pin<Box<dyn Stream<Item = Result<proto::SweepStatus, Status>> + Send>>;

#[tonic::async_trait]
impl sweep_service_server::SweepService for SweepApi {
    async fn submit_sweep(
        &self,
        req: Request<proto::SubmitSweepRequest>,
    ) -> Result<Response<proto::SubmitSweepResponse>, Status> {
        let req = req.into_inner();
        let mut spec = SweepSpec::from_json(&req.spec_json)
            .map_err(|e| Status::invalid_argument(format!("spec: {e}")))?;
        let files = if spec.kind == SweepKind::Landscape {
            self.landscape_files(&mut spec, req.attachments).await?
        } else {
            vec![]
        };
        let (id, total) = self
            .h
            .call(|tx| Event::Submit(Box::new(spec), files, tx))
            .await?;
        info!(sweep = %id, units = total, "sweep submitted");
        Ok(Response::new(proto::SubmitSweepResponse {
            sweep_id: id.to_string(),
            total_units: total,
        }))
    }

    async fn get_status(
        &self,
        req: Request<proto::GetStatusRequest>,
    ) -> Result<Response<proto::SweepStatus>, Status> {
        let id = sweep_id(&req.into_inner().sweep_id)?;
        let mut v = self.h.call(|tx| Event::Status(Some(id), tx)).await?;
        Ok(Response::new(v.pop().expect("one status per id")))
    }

    type WatchSweepStream = StatusStream;

    async fn watch_sweep(
        &self,
        req: Request<proto::WatchSweepRequest>,
    ) -> Result<Response<StatusStream>, Status> {
        let id = sweep_id(&req.into_inner().sweep_id)?;
        let rx = self.h.call(|tx| Event::Watch(id, tx)).await?;
        // Send the current status, then every change, and end after a final state.
        let stream =
            futures::stream::unfold((rx, true, false), |(mut rx, first, done)| async move {
                if done {
                    return None;
                }
                if !first && rx.changed().await.is_err() {
                    return None;
                }
                let st = rx.borrow_and_update().clone();
                let fin = st.state != proto::SweepState::Running as i32;
                Some((Ok(st), (rx, false, fin)))
            });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn cancel_sweep(
        &self,
        req: Request<proto::CancelSweepRequest>,
    ) -> Result<Response<proto::CancelSweepResponse>, Status> {
        let id = sweep_id(&req.into_inner().sweep_id)?;
        let st = self.h.call(|tx| Event::Cancel(id.clone(), tx)).await?;
        info!(sweep = %id, "sweep cancelled");
        Ok(Response::new(proto::CancelSweepResponse {
            state: sweep_state_to_proto(st) as i32,
        }))
    }

    async fn list_sweeps(
        &self,
        _req: Request<proto::ListSweepsRequest>,
    ) -> Result<Response<proto::ListSweepsResponse>, Status> {
        let sweeps = self.h.call(|tx| Event::Status(None, tx)).await?;
        Ok(Response::new(proto::ListSweepsResponse { sweeps }))
    }

    async fn get_results(
        &self,
        req: Request<proto::GetResultsRequest>,
    ) -> Result<Response<proto::GetResultsResponse>, Status> {
        let id = sweep_id(&req.into_inner().sweep_id)?;
        let mut st = self
            .h
            .call(|tx| Event::Status(Some(id.clone()), tx))
            .await?;
        let status = st.pop();
        let data_dir = self.data_dir.clone();
        // Reads go through their own read-only connection: WAL lets them run beside the
        // writer without blocking the event loop.
        let trials = tokio::task::spawn_blocking(move || -> Result<_, String> {
            let store = Store::open_read_only(&db_path(&data_dir)).map_err(|e| e.to_string())?;
            let rows = store.trials(&id).map_err(|e| e.to_string())?;
            Ok(rows
                .into_iter()
                .map(|t| {
                    let dir = trial_dir(&data_dir, &id, t.trial);
                    proto::TrialResult {
                        trial_index: t.trial,
                        state: unit_state_to_proto(t.state) as i32,
                        params: params_to_proto(&t.params),
                        final_metrics: metrics_to_proto(&t.final_metrics),
                        duration_s: t.duration_s.unwrap_or(0.0),
                        worker: t.worker.unwrap_or_default(),
                        error: t.error.unwrap_or_default(),
                        attempts: t.attempts,
                        history: t
                            .history
                            .iter()
                            .map(|(step, m)| proto::EpochMetrics {
                                step: *step,
                                metrics: metrics_to_proto(m),
                            })
                            .collect(),
                        checkpoint_dir: if dir.exists() {
                            dir.display().to_string()
                        } else {
                            String::new()
                        },
                    }
                })
                .collect())
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(Status::internal)?;
        Ok(Response::new(proto::GetResultsResponse { status, trials }))
    }
}

/// Runs the coordinator on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    cfg: CoordinatorConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    if let Ok(a) = listener.local_addr() {
        if !a.ip().is_loopback() && cfg.security.token.is_none() {
            return Err(ServeError::Insecure(a));
        }
    }
    let tls = server_tls(&cfg.security)?;
    let el = EventLoop::open(&cfg)?;
    let (tx, rx) = mpsc::channel(4096);
    let thread = std::thread::Builder::new()
        .name("ridgeline-core".into())
        .spawn(move || el.run(rx))
        .expect("spawning the core thread");
    let h = Handle { tx };
    let tick_every = Duration::from_millis((cfg.core.heartbeat_interval_ms / 2).max(50));
    let ticker = {
        let h = h.clone();
        tokio::spawn(async move {
            let mut iv = tokio::time::interval(tick_every);
            loop {
                iv.tick().await;
                if h.tx.send(Event::Tick).await.is_err() {
                    break;
                }
            }
        })
    };
    let addr = listener.local_addr().map_err(|source| ServeError::Io {
        path: cfg.data_dir.clone(),
        source,
    })?;
    // Workers and scripts on a shared file system can find the coordinator here, which
    // also makes `--listen host:0` (any free port) usable.
    let addr_file = cfg.data_dir.join("coordinator.addr");
    std::fs::write(&addr_file, format!("{addr}\n")).map_err(|source| ServeError::Io {
        path: addr_file.clone(),
        source,
    })?;
    info!(%addr, data_dir = %cfg.data_dir.display(), "coordinator listening");
    let workers = worker_service_server::WorkerServiceServer::new(WorkerApi {
        h: h.clone(),
        cfg: cfg.core.clone(),
        data_dir: cfg.data_dir.clone(),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let sweeps = sweep_service_server::SweepServiceServer::new(SweepApi {
        h,
        data_dir: cfg.data_dir.clone(),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    // Small request/response messages: without TCP_NODELAY, Nagle's algorithm and
    // delayed ACKs add ~40 ms to every exchange.
    let incoming = TcpListenerStream::new(listener).map(|s| {
        if let Ok(s) = &s {
            let _ = s.set_nodelay(true);
        }
        s
    });
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    // Every RPC of both services needs the token, when one is set.
    let check = RequireToken::new(cfg.security.token.as_deref());
    let result = builder
        .add_service(InterceptedService::new(workers, check.clone()))
        .add_service(InterceptedService::new(sweeps, check))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    ticker.abort();
    let _ = ticker.await;
    // The services (and their senders) are dropped with the server: the loop drains
    // what is queued, commits, and ends.
    if tokio::task::spawn_blocking(move || thread.join())
        .await
        .is_err()
    {
        warn!("core thread panicked");
    }
    result.map_err(ServeError::from)
}

/// Parameters of the best trial, for printing.
pub fn describe_params(p: &Params) -> String {
    p.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}
