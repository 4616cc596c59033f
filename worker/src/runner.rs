//! The worker process: register, lease units into free slots, run each on its own
//! thread, stream progress and outcomes back in batches, heartbeat. One async task owns
//! all of this state; candle runs on plain threads so a long kernel never delays a
//! heartbeat.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use candle_core::Device;
use ridgeline_common::net::{self, AuthChannel, Security};
use tokio::sync::mpsc;
use tonic::{Code, Status};
use tracing::{debug, info, warn};

use ridgeline_common::proto::{self, worker_service_client::WorkerServiceClient};
use ridgeline_common::spec::SweepSpec;
use ridgeline_common::{MAX_MESSAGE_BYTES, PROTOCOL_VERSION};

use crate::devices;
pub use crate::error::WorkerError;
use crate::executors;
pub use crate::host::default_name;
use crate::telemetry::{RunningUnit, WorkerMetrics};
use crate::train::TrialEnd;
use ridgeline_common::telemetry::ReadyFlag;

type Client = WorkerServiceClient<AuthChannel>;

/// How a worker runs.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Coordinator URL, e.g. `http://head-node:50051`.
    pub coordinator: String,
    /// Name shown in results (defaults to the host name).
    pub name: String,
    /// Units run at once on each device.
    pub slots: u32,
    /// `cpu`, `cuda:N`, a comma-separated list (`cuda:0,cuda:1`), or `auto`: every GPU
    /// this process can open when the build has CUDA, else the CPU (see
    /// [`crate::devices::open_devices`]).
    pub device: String,
    /// Leave (deregister and return) after this long with nothing to run, whether the
    /// coordinator had no work or could not be reached: elastic workers (a Slurm job
    /// array) give their allocation back once a sweep is done. `None`: run until stopped.
    pub idle_timeout: Option<Duration>,
    /// Wait between lease requests when the coordinator had nothing to give.
    pub poll_interval: Duration,
    /// Token and TLS.
    pub security: Security,
    /// Bytes one unit may use for its working memory (scan tiles are evaluated in chunks
    /// that fit); `None`: a share of the memory available when the worker starts.
    pub memory_bytes: Option<u64>,
    /// Set while the worker is registered with its coordinator (`/readyz`).
    pub ready: Option<ReadyFlag>,
    /// Where command trials keep their files (`RIDGELINE_TRIAL_DIR` is a folder under
    /// it). On storage that all workers share, a trial re-run elsewhere finds what its
    /// earlier attempt saved.
    pub trial_root: std::path::PathBuf,
}

/// A sweep's spec, fetched from the coordinator once per sweep (blob `spec.json`) rather
/// than carried by every lease.
fn sweep_spec(
    sweep: &str,
    fetch: crate::landscape::exec::Fetch<'_>,
) -> Result<Arc<SweepSpec>, String> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<SweepSpec>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(s) = cache.lock().expect("cache lock").get(sweep) {
        return Ok(s.clone());
    }
    let bytes = fetch("spec.json")?;
    let text = std::str::from_utf8(&bytes).map_err(|e| format!("spec.json: {e}"))?;
    let spec = Arc::new(SweepSpec::from_json(text).map_err(|e| format!("spec.json: {e}"))?);
    let mut c = cache.lock().expect("cache lock");
    // Specs are small, but a long-lived worker sees many sweeps: keep the recent few.
    if c.len() >= 16 {
        c.clear();
    }
    c.insert(sweep.to_owned(), spec.clone());
    Ok(spec)
}

/// Fetches a sweep's files from the coordinator, from a unit's thread, once per process.
struct BlobFetcher {
    client: Client,
    runtime: tokio::runtime::Handle,
    worker_id: String,
    sweep_id: String,
    metrics: WorkerMetrics,
}

impl BlobFetcher {
    fn fetch(&self, name: &str) -> Result<Arc<Vec<u8>>, String> {
        type Blobs = Mutex<HashMap<(String, String), Arc<Vec<u8>>>>;
        static CACHE: OnceLock<Blobs> = OnceLock::new();
        let key = (self.sweep_id.clone(), name.to_owned());
        let cache = CACHE.get_or_init(Default::default);
        if let Some(b) = cache.lock().expect("cache lock").get(&key) {
            return Ok(b.clone());
        }
        let mut client = self.client.clone();
        let req = proto::FetchBlobRequest {
            worker_id: self.worker_id.clone(),
            sweep_id: self.sweep_id.clone(),
            name: name.to_owned(),
        };
        let data = self
            .runtime
            .block_on(client.fetch_blob(req))
            .map_err(|s| format!("fetching {name}: {}", s.message()))?
            .into_inner()
            .data;
        self.metrics.fetched(data.len() as u64);
        let data = Arc::new(data);
        // A trial's file (a PBT parent's state) is read once: kept, a population's
        // states would pile up in memory round after round.
        if name.starts_with("trials/") {
            return Ok(data);
        }
        let mut c = cache.lock().expect("cache lock");
        c.retain(|(s, _), _| *s == self.sweep_id);
        c.insert(key, data.clone());
        Ok(data)
    }
}

enum TrialEvent {
    Progress(proto::Progress),
    /// Bytes of a unit's log: unit, attempt, data.
    Log(u64, u32, Vec<u8>),
    /// `None` when the unit was cancelled: nothing to report.
    Done(u64, Option<proto::Outcome>),
}

fn metrics(m: &[(String, f64)]) -> Vec<proto::Metric> {
    m.iter()
        .map(|(name, value)| proto::Metric {
            name: name.clone(),
            value: *value,
        })
        .collect()
}

/// Runs a unit to its end on the calling thread.
#[allow(clippy::too_many_arguments)]
fn execute(
    unit: &proto::Unit,
    device: &Device,
    device_name: &str,
    cfg: &WorkerConfig,
    memory_bytes: u64,
    cancel: &AtomicBool,
    tx: &mpsc::UnboundedSender<TrialEvent>,
    fetch: crate::landscape::exec::Fetch<'_>,
    wm: &WorkerMetrics,
) -> Option<proto::Outcome> {
    let start = Instant::now();
    let unit_id = unit.unit_id;
    // Every progress report, kept to travel with the outcome: the attempt whose result
    // wins has its whole history stored, whatever reached the coordinator on the way.
    let mut history: Vec<proto::Progress> = Vec::new();
    // Set once the unit's kind is known (its spec is fetched first).
    let mut running: Option<RunningUnit> = None;
    let mut points = 0u64;
    let result = (|| -> Result<crate::train::TrialOutput, crate::UnitError> {
        let spec = sweep_spec(&unit.sweep_id, fetch)?;
        let exec = executors::for_unit(unit, &spec)?;
        let kind = exec.kind(unit, &spec);
        running = Some(wm.unit_started(kind));
        points = executors::points_of(unit, &spec);
        let mut progress = |step: u32, m: Vec<(String, f64)>| {
            let p = proto::Progress {
                unit_id,
                step,
                metrics: metrics(&m),
            };
            history.push(p.clone());
            if kind != "command" || !m.is_empty() {
                wm.epochs(1);
            }
            let _ = tx.send(TrialEvent::Progress(p));
        };
        let mut log = |bytes: &[u8]| {
            let _ = tx.send(TrialEvent::Log(unit_id, unit.attempt, bytes.to_vec()));
        };
        exec.run(&mut executors::UnitCtx {
            unit,
            spec: &spec,
            device,
            device_name,
            memory_bytes,
            cancel,
            fetch,
            trial_root: &cfg.trial_root,
            progress: &mut progress,
            log: &mut log,
        })
    })();
    let duration_s = start.elapsed().as_secs_f64();
    let mut permanent = false;
    let (state, final_metrics, error, artifacts) = match result {
        Ok(out) => {
            let state = match out.end {
                TrialEnd::Completed => proto::UnitState::Completed,
                TrialEnd::Diverged => proto::UnitState::Diverged,
                TrialEnd::Cancelled => {
                    if let Some(r) = running {
                        r.finish("cancelled");
                    }
                    return None;
                }
            };
            wm.points(points);
            if let Some((_, n)) = out.final_metrics.iter().find(|(k, _)| k == "hvps") {
                wm.hvps(*n as u64);
            }
            let arts = out
                .artifacts
                .into_iter()
                .map(|(name, data)| proto::Artifact { name, data })
                .collect();
            let err = if state == proto::UnitState::Diverged {
                "loss became NaN or infinite".to_owned()
            } else {
                String::new()
            };
            (state, metrics(&out.final_metrics), err, arts)
        }
        Err(e) => {
            permanent = e.permanent;
            (
                proto::UnitState::Failed,
                vec![],
                without_backtrace(&e.message),
                vec![],
            )
        }
    };
    if let Some(r) = running {
        r.finish(match state {
            proto::UnitState::Completed => "completed",
            proto::UnitState::Diverged => "diverged",
            _ => "failed",
        });
    }
    Some(proto::Outcome {
        unit_id,
        state: state as i32,
        final_metrics,
        error,
        duration_s,
        artifacts,
        history,
        permanent,
    })
}

struct Worker {
    /// `slots` here is the worker's total: per-device slots times devices.
    cfg: WorkerConfig,
    /// Names (`cuda:1`) and devices; each unit runs on the least busy.
    devices: Vec<(String, Device)>,
    /// The device index of each running unit.
    unit_device: HashMap<u64, usize>,
    /// When the worker last had nothing running (`idle_timeout` counts from it).
    idle_since: Option<tokio::time::Instant>,
    /// Working memory one unit may use.
    memory_bytes: u64,
    metrics: WorkerMetrics,
    /// The id of the last registration, asked for again after a reconnect.
    last_id: Option<String>,
    /// The secret issued with `last_id`: sent with every request, and needed to get
    /// the id back after the coordinator restarts.
    secret: String,
    running: HashMap<u64, Arc<AtomicBool>>,
    progress: Vec<proto::Progress>,
    outcomes: VecDeque<proto::Outcome>,
    /// Log bytes not yet acknowledged, one chunk per unit and attempt.
    logs: Vec<proto::LogChunk>,
    /// Bytes of each running unit's log so far (the next chunk's offset).
    log_offsets: HashMap<(u64, u32), u64>,
    tx: mpsc::UnboundedSender<TrialEvent>,
}

/// Why a session with the coordinator ended.
enum SessionEnd {
    Shutdown,
    /// Connection trouble or an unknown-worker answer: connect and register again.
    Reconnect(String),
}

fn is_transient(s: &Status) -> bool {
    matches!(
        s.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Unknown
            | Code::Cancelled
            | Code::NotFound
            | Code::Internal
    )
}

impl Worker {
    fn spawn(&mut self, unit: proto::Unit, client: &Client, worker_id: &str) {
        let cancel = Arc::new(AtomicBool::new(false));
        self.running.insert(unit.unit_id, cancel.clone());
        self.idle_since = None;
        let d = devices::least_busy(self.devices.len(), self.unit_device.values().copied());
        self.unit_device.insert(unit.unit_id, d);
        let (device_name, device) = self.devices[d].clone();
        let tx = self.tx.clone();
        let memory = self.memory_bytes;
        let cfg = self.cfg.clone();
        let fetcher = BlobFetcher {
            client: client.clone(),
            runtime: tokio::runtime::Handle::current(),
            worker_id: worker_id.to_owned(),
            sweep_id: unit.sweep_id.clone(),
            metrics: self.metrics.clone(),
        };
        let name = format!("unit-{}", unit.unit_id);
        let spawned = std::thread::Builder::new().name(name).spawn(move || {
            let id = unit.unit_id;
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                execute(
                    &unit,
                    &device,
                    &device_name,
                    &cfg,
                    memory,
                    &cancel,
                    &tx,
                    &|name: &str| fetcher.fetch(name),
                    &fetcher.metrics,
                )
            }))
            .unwrap_or_else(|p| {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".into());
                Some(proto::Outcome {
                    unit_id: id,
                    state: proto::UnitState::Failed as i32,
                    error: format!("worker panicked: {msg}"),
                    ..Default::default()
                })
            });
            let _ = tx.send(TrialEvent::Done(id, outcome));
        });
        if let Err(e) = spawned {
            warn!("cannot start a thread for a unit: {e}");
        }
    }

    async fn connect(&self) -> Result<Client, String> {
        let ch = net::connect(
            &self.cfg.coordinator,
            &self.cfg.security,
            Some(Duration::from_secs(60)),
        )
        .await
        .map_err(|e| e.to_string())?;
        Ok(WorkerServiceClient::new(ch)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// One registration's worth of work; returns when the session breaks or on shutdown.
    async fn session(
        &mut self,
        client: &mut Client,
        rx: &mut mpsc::UnboundedReceiver<TrialEvent>,
        shutdown: &mut (impl std::future::Future<Output = ()> + Unpin),
    ) -> Result<SessionEnd, WorkerError> {
        let host = crate::host::default_name();
        let reg = client
            .register(proto::RegisterRequest {
                protocol_version: PROTOCOL_VERSION,
                hostname: host,
                name: self.cfg.name.clone(),
                slots: self.cfg.slots,
                devices: self
                    .devices
                    .iter()
                    .map(|(n, _)| devices::describe(n))
                    .collect(),
                resume_worker_id: self.last_id.clone().unwrap_or_default(),
                resume_secret: self.secret.clone(),
            })
            .await;
        let reg = match reg {
            Ok(r) => r.into_inner(),
            Err(s)
                if matches!(
                    s.code(),
                    Code::FailedPrecondition
                        | Code::InvalidArgument
                        | Code::Unauthenticated
                        | Code::PermissionDenied
                ) =>
            {
                return Err(WorkerError::Refused(s.message().to_owned()));
            }
            Err(s) => return Ok(SessionEnd::Reconnect(s.message().to_owned())),
        };
        let id = reg.worker_id;
        info!(worker = %id, slots = self.cfg.slots, "registered with the coordinator");
        self.set_registered(true);
        self.last_id = Some(id.clone());
        self.secret = reg.worker_secret.clone();
        let mut heartbeat =
            tokio::time::interval(Duration::from_millis(reg.heartbeat_interval_ms.max(50)));
        let mut flush = tokio::time::interval(Duration::from_millis(200));
        let mut next_lease = tokio::time::Instant::now();
        loop {
            let free = self.free_slots();
            let lease_due = tokio::time::sleep_until(next_lease);
            let idle_end = self.idle_deadline();
            tokio::select! {
                _ = tokio::time::sleep_until(idle_end.unwrap_or_else(far_future)), if idle_end.is_some() => {
                    info!(worker = %id, "nothing to run for {:?}: leaving", self.cfg.idle_timeout.unwrap_or_default());
                    let _ = self.report(client, &id, false).await;
                    let _ = client.deregister(proto::DeregisterRequest { worker_id: id.clone(), worker_secret: self.secret.clone() }).await;
                    return Ok(SessionEnd::Shutdown);
                }
                _ = &mut *shutdown => {
                    self.stop_all();
                    let _ = self.report(client, &id, false).await;
                    let _ = client.deregister(proto::DeregisterRequest { worker_id: id.clone(), worker_secret: self.secret.clone() }).await;
                    info!(worker = %id, "deregistered");
                    return Ok(SessionEnd::Shutdown);
                }
                _ = heartbeat.tick() => {
                    let r = client.heartbeat(proto::HeartbeatRequest {
                        worker_id: id.clone(),
                        worker_secret: self.secret.clone(),
                        running_units: self.running.keys().copied().collect(),
                    }).await;
                    match r {
                        Ok(r) => {
                            let r = r.into_inner();
                            self.cancel(&r.cancel_units);
                            if r.unknown_worker {
                                return Ok(SessionEnd::Reconnect("coordinator does not know this worker".into()));
                            }
                        }
                        Err(s) => return Ok(SessionEnd::Reconnect(s.message().to_owned())),
                    }
                }
                _ = lease_due, if free > 0 => {
                    let r = client.lease_units(proto::LeaseRequest { worker_id: id.clone(), max_units: free as u32, worker_secret: self.secret.clone() }).await;
                    match r {
                        Ok(r) => {
                            let units = r.into_inner().units;
                            let got = units.len();
                            for u in units {
                                debug!(unit = u.unit_id, attempt = u.attempt, "leased");
                                self.spawn(u, client, &id);
                            }
                            // Ask again at once while work keeps coming; otherwise poll.
                            next_lease = tokio::time::Instant::now() + if got > 0 { Duration::ZERO } else { self.cfg.poll_interval };
                        }
                        Err(s) if is_transient(&s) => return Ok(SessionEnd::Reconnect(s.message().to_owned())),
                        Err(s) => return Err(WorkerError::Refused(s.message().to_owned())),
                    }
                }
                ev = rx.recv() => {
                    if self.take(ev.expect("the worker holds a sender")) {
                        // The report of a unit that ended asks for its successor; when
                        // nothing came, the queue is empty: poll, as after a lease.
                        let got = match self.report(client, &id, true).await {
                            Ok(got) => got,
                            Err(s) => return Ok(SessionEnd::Reconnect(s.message().to_owned())),
                        };
                        next_lease = tokio::time::Instant::now() + if got == Some(0) { self.cfg.poll_interval } else { Duration::ZERO };
                    }
                }
                _ = flush.tick() => {
                    if let Err(s) = self.report(client, &id, false).await {
                        return Ok(SessionEnd::Reconnect(s.message().to_owned()));
                    }
                }
            }
        }
    }

    /// Sends buffered progress and outcomes; they are dropped only once acknowledged.
    /// With `lease`, the free slots are asked for in the same call and what comes is
    /// started: the number of units that came, when any were asked for.
    async fn report(
        &mut self,
        client: &mut Client,
        id: &str,
        lease: bool,
    ) -> Result<Option<usize>, Status> {
        if self.progress.is_empty() && self.outcomes.is_empty() && self.logs.is_empty() {
            return Ok(None);
        }
        let max_units = if lease { self.free_slots() as u32 } else { 0 };
        let req = proto::ReportRequest {
            worker_id: id.to_owned(),
            worker_secret: self.secret.clone(),
            progress: self.progress.clone(),
            outcomes: self.outcomes.iter().cloned().collect(),
            logs: self.logs.clone(),
            max_units,
        };
        match client.report(req).await {
            Ok(r) => {
                self.progress.clear();
                self.outcomes.clear();
                self.logs.clear();
                let r = r.into_inner();
                self.cancel(&r.cancel_units);
                let got = r.units.len();
                for u in r.units {
                    debug!(
                        unit = u.unit_id,
                        attempt = u.attempt,
                        "leased with a report"
                    );
                    self.spawn(u, client, id);
                }
                Ok((max_units > 0).then_some(got))
            }
            // Nothing of an unacknowledged report was taken (the coordinator restarted,
            // or could not store it): register again (same id) and send it all again.
            Err(s) => Err(s),
        }
    }

    /// Buffers log bytes for the next report, merged with the unit's pending chunk.
    /// Past the coordinator's cap, bytes are dropped here rather than sent for nothing.
    fn log(&mut self, unit: u64, attempt: u32, data: Vec<u8>) {
        use ridgeline_common::MAX_LOG_BYTES;
        let offset = self.log_offsets.entry((unit, attempt)).or_insert(0);
        if *offset >= MAX_LOG_BYTES {
            return;
        }
        let at = *offset;
        *offset += data.len() as u64;
        match self.logs.last_mut() {
            Some(c)
                if c.unit_id == unit
                    && c.attempt == attempt
                    && c.offset + c.data.len() as u64 == at
                    && c.data.len() < 1 << 20 =>
            {
                c.data.extend_from_slice(&data)
            }
            _ => self.logs.push(proto::LogChunk {
                unit_id: unit,
                attempt,
                offset: at,
                data,
            }),
        }
    }

    fn cancel(&mut self, units: &[u64]) {
        for u in units {
            if let Some(flag) = self.running.get(u) {
                info!(unit = u, "stopping unit at the coordinator's request");
                flag.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Buffers a running unit's event for the next report; true when a unit ended.
    fn take(&mut self, ev: TrialEvent) -> bool {
        match ev {
            TrialEvent::Progress(p) => self.progress.push(p),
            TrialEvent::Log(unit, attempt, data) => self.log(unit, attempt, data),
            TrialEvent::Done(unit, outcome) => {
                self.running.remove(&unit);
                self.unit_device.remove(&unit);
                self.log_offsets.retain(|(u, _), _| *u != unit);
                if self.running.is_empty() {
                    self.idle_since = Some(tokio::time::Instant::now());
                }
                self.outcomes.extend(outcome);
                return true;
            }
        }
        false
    }

    fn free_slots(&self) -> usize {
        (self.cfg.slots as usize).saturating_sub(self.running.len())
    }

    /// When an idle worker leaves: `None` while units run or without `idle_timeout`.
    fn idle_deadline(&self) -> Option<tokio::time::Instant> {
        Some(self.idle_since? + self.cfg.idle_timeout?)
    }

    fn set_registered(&self, registered: bool) {
        self.metrics.set_registered(registered);
        if let Some(r) = &self.cfg.ready {
            r.set(registered);
        }
    }

    fn stop_all(&mut self) {
        for flag in self.running.values() {
            flag.store(true, Ordering::Relaxed);
        }
    }
}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400 * 365)
}

/// Runs a worker until `shutdown` resolves, reconnecting with backoff whenever the
/// coordinator is unreachable or has forgotten it.
pub async fn run(
    cfg: WorkerConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), WorkerError> {
    crate::memory::keep_freed_buffers();
    let mut cfg = cfg;
    let devices = devices::open_devices(&cfg.device)?;
    cfg.slots = cfg.slots.max(1) * devices.len() as u32;
    crate::host::add_slots(cfg.slots);
    info!(devices = %devices.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(","), slots = cfg.slots, "worker starting");
    // Malformed URLs and unreadable certificates are mistakes, not outages: fail now.
    net::endpoint(&cfg.coordinator, &cfg.security, None)
        .map_err(|e| WorkerError::Url(cfg.coordinator.clone(), e.to_string()))?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let memory_bytes = cfg
        .memory_bytes
        .unwrap_or_else(|| crate::memory::default_unit_budget(cfg.slots));
    let metrics = WorkerMetrics::new(&cfg.name);
    let sampler = {
        let (m, devices, slots) = (metrics.clone(), devices.clone(), cfg.slots);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(ridgeline_common::telemetry::SAMPLE_EVERY);
            loop {
                every.tick().await;
                for (label, device) in &devices {
                    m.sample(slots, device, label);
                }
            }
        })
    };
    // The sampler stops with the worker, however `run` returns.
    struct AbortOnDrop(tokio::task::JoinHandle<()>);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let _sampler = AbortOnDrop(sampler);
    // Command trials' cgroups are pooled in the process: removed when a worker stops.
    struct RemoveCgroups;
    impl Drop for RemoveCgroups {
        fn drop(&mut self) {
            crate::executors::remove_free_cgroups();
        }
    }
    let _cgroups = RemoveCgroups;
    let mut w = Worker {
        memory_bytes,
        metrics,
        last_id: None,
        secret: String::new(),
        cfg,
        devices,
        unit_device: HashMap::new(),
        idle_since: Some(tokio::time::Instant::now()),
        running: HashMap::new(),
        progress: Vec::new(),
        outcomes: VecDeque::new(),
        logs: Vec::new(),
        log_offsets: HashMap::new(),
        tx,
    };
    let mut shutdown = std::pin::pin!(shutdown);
    let mut backoff = Duration::from_millis(100);
    loop {
        let end = match w.connect().await {
            Ok(mut client) => {
                backoff = Duration::from_millis(100);
                let end = w.session(&mut client, &mut rx, &mut shutdown).await;
                w.set_registered(false);
                end?
            }
            Err(e) => SessionEnd::Reconnect(e),
        };
        match end {
            SessionEnd::Shutdown => return Ok(()),
            SessionEnd::Reconnect(why) => {
                warn!(coordinator = %w.cfg.coordinator, "{why}; retrying in {backoff:?}");
                // Units that end meanwhile are kept for the next session's report.
                while let Ok(ev) = rx.try_recv() {
                    w.take(ev);
                }
                // An unreachable coordinator counts as idle time: an elastic worker whose
                // coordinator has finished and gone leaves too.
                if w.idle_deadline()
                    .is_some_and(|t| t <= tokio::time::Instant::now())
                {
                    info!(
                        "no coordinator and nothing to run for {:?}: leaving",
                        w.cfg.idle_timeout.unwrap_or_default()
                    );
                    return Ok(());
                }
                tokio::select! {
                    _ = &mut shutdown => { w.stop_all(); return Ok(()); }
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// An error message without the stack backtrace a library may have captured into it
/// (candle does when RUST_BACKTRACE is set): frames mean nothing to the person reading
/// why a trial failed, and the message itself is in the first lines.
fn without_backtrace(msg: &str) -> String {
    // A backtrace starts at frame 0 (`   0: crate::path::fn`) or its header.
    let start = msg.lines().position(|l| {
        let t = l.trim_start();
        t == "stack backtrace:" || (t.starts_with("0: ") && t.contains("::"))
    });
    match start {
        Some(i) => msg
            .lines()
            .take(i)
            .collect::<Vec<_>>()
            .join("\n")
            .trim_end()
            .to_owned(),
        None => msg.to_owned(),
    }
}

#[cfg(test)]
mod backtrace_tests {
    #[test]
    fn frames_are_cut_and_the_message_kept() {
        let m = "index out of bounds: 7 >= 3\n   0: candle_core::error::Error::bt\n             at /src/error.rs:10:5\n   1: candle_core::tensor::Tensor::gather\n";
        assert_eq!(super::without_backtrace(m), "index out of bounds: 7 >= 3");
        let plain = "exit status 1; stderr ends with:\n1: epoch one\n2: epoch two";
        assert_eq!(super::without_backtrace(plain), plain);
    }
}
