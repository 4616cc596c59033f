//! The scheduling core: all coordinator state, changed only by plain synchronous `on_*`
//! functions that take the time as an argument and describe their side effects as
//! [`Action`]s pushed into an [`Outbox`]. No sockets, clocks, threads or database here,
//! so every scheduling rule is unit-testable (HyperQueue's `Core` pattern).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use ridgeline_common::ids::{SweepId, UnitId, WorkerId};
use ridgeline_common::params::Params;
use ridgeline_common::spec::{Mode, SweepSpec};

use crate::search::{Searcher, searcher_for};

/// Milliseconds on the coordinator's clock (Unix time in production, anything in tests).
pub type Millis = u64;

/// Timing and retry policy.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    /// How long a lease lasts without a heartbeat from its worker.
    pub lease_ttl_ms: u64,
    /// How often workers are asked to heartbeat.
    pub heartbeat_interval_ms: u64,
    /// How many times a unit may be leased before it is failed for good.
    pub max_attempts: u32,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            lease_ttl_ms: 10_000,
            heartbeat_interval_ms: 1_000,
            max_attempts: 3,
        }
    }
}

/// Life cycle of a unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnitState {
    /// Waiting for a worker.
    Pending,
    /// Leased to a worker.
    Running,
    /// Finished with a result.
    Completed,
    /// Failed `max_attempts` times, or cannot run at all.
    Failed,
    /// Produced a NaN or infinite loss.
    Diverged,
    /// Its sweep was cancelled before it finished.
    Cancelled,
}

impl UnitState {
    /// Whether nothing will happen to the unit any more.
    pub fn is_final(self) -> bool {
        !matches!(self, UnitState::Pending | UnitState::Running)
    }

    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            UnitState::Pending => "pending",
            UnitState::Running => "running",
            UnitState::Completed => "completed",
            UnitState::Failed => "failed",
            UnitState::Diverged => "diverged",
            UnitState::Cancelled => "cancelled",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            UnitState::Pending,
            UnitState::Running,
            UnitState::Completed,
            UnitState::Failed,
            UnitState::Diverged,
            UnitState::Cancelled,
        ]
        .into_iter()
        .find(|u| u.as_str() == s)
    }
}

/// Life cycle of a sweep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SweepState {
    /// Units are still being generated or run.
    Running,
    /// Every unit reached a final state and at least one succeeded.
    Completed,
    /// Cancelled by a user.
    Cancelled,
    /// Every unit failed or diverged.
    Failed,
}

impl SweepState {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            SweepState::Running => "running",
            SweepState::Completed => "completed",
            SweepState::Cancelled => "cancelled",
            SweepState::Failed => "failed",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            SweepState::Running,
            SweepState::Completed,
            SweepState::Cancelled,
            SweepState::Failed,
        ]
        .into_iter()
        .find(|u| u.as_str() == s)
    }
}

/// Side effects the core asks for, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// A sweep was accepted.
    SweepCreated {
        /// Its id.
        sweep: SweepId,
        /// Its spec.
        spec: Arc<SweepSpec>,
        /// Number of units it will have.
        total: u32,
        /// When.
        at: Millis,
    },
    /// A unit was generated (lazily, when a worker first needed it).
    UnitCreated {
        /// Its id.
        unit: UnitId,
        /// Its sweep.
        sweep: SweepId,
        /// Its trial index within the sweep.
        trial: u32,
        /// Its parameters.
        params: Params,
        /// When.
        at: Millis,
    },
    /// A unit was leased to a worker.
    UnitLeased {
        /// The unit.
        unit: UnitId,
        /// The worker.
        worker: WorkerId,
        /// 1 for the first lease, 2 for the first retry, ...
        attempt: u32,
        /// When.
        at: Millis,
    },
    /// A worker that was already running a queued unit (from before a coordinator
    /// restart) took it back; its attempt and history continue.
    UnitAdopted {
        /// The unit.
        unit: UnitId,
        /// The worker.
        worker: WorkerId,
    },
    /// A unit went back to the queue.
    UnitRequeued {
        /// The unit.
        unit: UnitId,
        /// Leases that count against `max_attempts` so far.
        attempts: u32,
        /// Why.
        reason: String,
    },
    /// A running unit reported intermediate metrics.
    Progress {
        /// The unit.
        unit: UnitId,
        /// Step (epoch).
        step: u32,
        /// Metric values.
        metrics: Vec<(String, f64)>,
    },
    /// A unit reached a final state.
    UnitFinished {
        /// The unit.
        unit: UnitId,
        /// Its sweep.
        sweep: SweepId,
        /// Its trial index.
        trial: u32,
        /// The final state.
        state: UnitState,
        /// Final metrics (empty unless completed or diverged).
        metrics: Vec<(String, f64)>,
        /// Error text for failed units.
        error: String,
        /// Seconds the last attempt ran, as measured by the worker.
        duration_s: f64,
        /// The worker that produced the final state, if any.
        worker: Option<WorkerId>,
        /// When.
        at: Millis,
    },
    /// A sweep reached a final state.
    SweepFinished {
        /// The sweep.
        sweep: SweepId,
        /// Its final state.
        state: SweepState,
        /// The best trial and its metric value.
        best: Option<(u32, f64)>,
        /// When.
        at: Millis,
    },
    /// A worker joined.
    WorkerRegistered {
        /// Its id.
        worker: WorkerId,
        /// What it announced.
        info: WorkerInfo,
        /// When.
        at: Millis,
    },
    /// A worker left or was declared lost.
    WorkerGone {
        /// Its id.
        worker: WorkerId,
        /// Why.
        reason: String,
    },
}

/// Where the core's side effects go. The event loop applies them to the store and the
/// status watchers; tests collect them in a `Vec`.
pub trait Outbox {
    /// Records one action.
    fn send(&mut self, action: Action);
}

impl Outbox for Vec<Action> {
    fn send(&mut self, action: Action) {
        self.push(action);
    }
}

/// What a worker announces about itself.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerInfo {
    /// Chosen name (often the host name plus an index).
    pub name: String,
    /// Host it runs on.
    pub hostname: String,
    /// Units it can run at once.
    pub slots: u32,
    /// Its devices, as text ("cpu", "cuda:0 H100 80GB").
    pub devices: Vec<String>,
}

/// A unit granted to a worker.
#[derive(Clone, Debug)]
pub struct Lease {
    /// The unit.
    pub unit: UnitId,
    /// Its sweep.
    pub sweep: SweepId,
    /// Its trial index.
    pub trial: u32,
    /// Its parameters.
    pub params: Params,
    /// Which attempt this is, from 1.
    pub attempt: u32,
    /// The sweep's spec.
    pub spec: Arc<SweepSpec>,
}

/// A worker's report that a unit ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// The unit.
    pub unit: UnitId,
    /// Completed, Failed or Diverged.
    pub state: UnitState,
    /// Final metric values.
    pub metrics: Vec<(String, f64)>,
    /// Error text for failures.
    pub error: String,
    /// Seconds the attempt ran.
    pub duration_s: f64,
}

/// Errors of the core, each one a caller's mistake rather than a broken invariant.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CoreError {
    /// The worker is not registered (expired, or the coordinator restarted).
    #[error("unknown worker {0}; register again")]
    UnknownWorker(WorkerId),
    /// No such sweep.
    #[error("unknown sweep {0}")]
    UnknownSweep(SweepId),
    /// A sweep with this id exists.
    #[error("sweep {0} already exists")]
    DuplicateSweep(SweepId),
}

#[derive(Debug)]
struct Unit {
    sweep: SweepId,
    trial: u32,
    params: Params,
    state: UnitState,
    attempts: u32,
    worker: Option<WorkerId>,
    deadline: Millis,
}

struct Worker {
    slots: u32,
    last_seen: Millis,
    units: BTreeSet<UnitId>,
    /// Units the worker must stop, sent with its next heartbeat or report reply.
    to_cancel: Vec<UnitId>,
}

/// Counts of a sweep's units by state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Total units the sweep will have.
    pub total: u32,
    /// Waiting (including not yet generated).
    pub pending: u32,
    /// Leased.
    pub running: u32,
    /// Finished with a result.
    pub completed: u32,
    /// Failed for good.
    pub failed: u32,
    /// Diverged.
    pub diverged: u32,
    /// Cancelled.
    pub cancelled: u32,
}

struct Sweep {
    spec: Arc<SweepSpec>,
    state: SweepState,
    searcher: Box<dyn Searcher>,
    next_trial: u32,
    /// Units `0..gate` may be generated; later ones wait for results of earlier ones
    /// (a scan's Hessian round needs the previous round's products).
    gate: u32,
    pending: VecDeque<UnitId>,
    units: Vec<UnitId>,
    counts: Counts,
    best: Option<(u32, f64)>,
    created: Millis,
    finished: Option<Millis>,
}

/// A read-only view of a sweep.
#[derive(Clone, Debug, PartialEq)]
pub struct SweepView {
    /// Its id.
    pub id: SweepId,
    /// Its spec.
    pub spec: Arc<SweepSpec>,
    /// State.
    pub state: SweepState,
    /// Unit counts.
    pub counts: Counts,
    /// Best trial and value so far.
    pub best: Option<(u32, f64)>,
    /// Creation time.
    pub created: Millis,
    /// Time it reached a final state.
    pub finished: Option<Millis>,
}

/// All scheduling state of the coordinator.
pub struct Core {
    cfg: CoreConfig,
    sweeps: HashMap<SweepId, Sweep>,
    /// Running sweeps in submission order: leasing serves older sweeps first.
    order: Vec<SweepId>,
    units: HashMap<UnitId, Unit>,
    workers: HashMap<WorkerId, Worker>,
    next_unit: u64,
    next_worker: u64,
}

impl Core {
    /// An empty core. `first_unit_id` continues the numbering of a stored database.
    pub fn new(cfg: CoreConfig, first_unit_id: u64) -> Self {
        Core {
            cfg,
            sweeps: HashMap::new(),
            order: Vec::new(),
            units: HashMap::new(),
            workers: HashMap::new(),
            next_unit: first_unit_id.max(1),
            next_worker: 1,
        }
    }

    /// The policy in force.
    pub fn config(&self) -> &CoreConfig {
        &self.cfg
    }

    /// A view of one sweep.
    pub fn sweep(&self, id: &SweepId) -> Option<SweepView> {
        self.sweeps.get(id).map(|s| SweepView {
            id: id.clone(),
            spec: s.spec.clone(),
            state: s.state,
            counts: s.counts,
            best: s.best,
            created: s.created,
            finished: s.finished,
        })
    }

    /// Ids of all sweeps known to the core.
    pub fn sweep_ids(&self) -> Vec<SweepId> {
        let mut v: Vec<_> = self.sweeps.keys().cloned().collect();
        v.sort_by_key(|id| self.sweeps[id].created);
        v
    }

    /// The state of a unit, if the core holds it.
    pub fn unit_state(&self, id: UnitId) -> Option<UnitState> {
        self.units.get(&id).map(|u| u.state)
    }

    /// Number of registered workers.
    pub fn worker_count(&self) -> usize {
        self.workers.len()
    }

    /// The parameters of a sweep's trial, if it has been generated.
    pub fn trial_params(&self, sweep: &SweepId, trial: u32) -> Option<&Params> {
        let uid = self.sweeps.get(sweep)?.units.get(trial as usize)?;
        self.units.get(uid).map(|u| &u.params)
    }

    /// The state of a sweep's trial, if it has been generated.
    pub fn trial_state(&self, sweep: &SweepId, trial: u32) -> Option<UnitState> {
        let uid = self.sweeps.get(sweep)?.units.get(trial as usize)?;
        self.units.get(uid).map(|u| u.state)
    }

    /// The sweep and trial of a unit.
    pub fn unit_trial(&self, id: UnitId) -> Option<(SweepId, u32)> {
        self.units.get(&id).map(|u| (u.sweep.clone(), u.trial))
    }
}

/// A unit as stored, for rebuilding the core after a restart.
#[derive(Clone, Debug)]
pub struct StoredUnit {
    /// Its id.
    pub unit: UnitId,
    /// Its trial index.
    pub trial: u32,
    /// Its parameters.
    pub params: Params,
    /// Its stored state.
    pub state: UnitState,
    /// Leases so far.
    pub attempts: u32,
}

/// A sweep as stored, for rebuilding the core after a restart.
#[derive(Clone, Debug)]
pub struct StoredSweep {
    /// Its id.
    pub id: SweepId,
    /// Its spec.
    pub spec: SweepSpec,
    /// Its stored state.
    pub state: SweepState,
    /// Creation time.
    pub created: Millis,
    /// Completion time.
    pub finished: Option<Millis>,
    /// Best trial and value.
    pub best: Option<(u32, f64)>,
    /// Its units, in trial order (trials are generated in order, so 0..n).
    pub units: Vec<StoredUnit>,
    /// How many units had been released (see [`on_units_released`]); `None` for the
    /// sweep's initial release.
    pub released: Option<u32>,
}

/// Rebuilds a sweep from the store after a coordinator restart. Units that were leased
/// go back to the queue (their workers, if alive, will report or be told to stop);
/// completed work is kept; the searcher continues after the last generated trial.
pub fn on_sweep_restored(core: &mut Core, out: &mut impl Outbox, stored: StoredSweep, now: Millis) {
    let StoredSweep {
        id,
        spec,
        state,
        created,
        finished,
        best,
        units,
        released,
    } = stored;
    let total = u32::try_from(spec.total_units()).expect("validated to fit in u32");
    let spec = Arc::new(spec);
    let mut sweep = Sweep {
        searcher: searcher_for(&spec),
        gate: released.unwrap_or_else(|| initial_gate(&spec)),
        spec,
        state,
        next_trial: units.iter().map(|u| u.trial + 1).max().unwrap_or(0),
        pending: VecDeque::new(),
        units: Vec::with_capacity(units.len()),
        counts: Counts {
            total,
            ..Counts::default()
        },
        best,
        created,
        finished,
    };
    for u in units {
        core.next_unit = core.next_unit.max(u.unit.0 + 1);
        let mut unit_state = u.state;
        if !u.state.is_final() {
            if state == SweepState::Running {
                unit_state = UnitState::Pending;
                sweep.pending.push_back(u.unit);
                if u.state == UnitState::Running {
                    out.send(Action::UnitRequeued {
                        unit: u.unit,
                        attempts: u.attempts,
                        reason: "coordinator restarted".into(),
                    });
                }
            } else {
                unit_state = UnitState::Cancelled;
            }
        }
        match unit_state {
            UnitState::Pending => {}
            UnitState::Completed => sweep.counts.completed += 1,
            UnitState::Diverged => sweep.counts.diverged += 1,
            UnitState::Cancelled => sweep.counts.cancelled += 1,
            _ => sweep.counts.failed += 1,
        }
        sweep.units.push(u.unit);
        core.units.insert(
            u.unit,
            Unit {
                sweep: id.clone(),
                trial: u.trial,
                params: u.params,
                state: unit_state,
                attempts: u.attempts,
                worker: None,
                deadline: 0,
            },
        );
    }
    let c = &mut sweep.counts;
    c.pending = c.total - c.completed - c.diverged - c.cancelled - c.failed;
    if state == SweepState::Running {
        core.order.push(id.clone());
        core.order
            .sort_by_key(|s| core.sweeps.get(s).map_or(created, |x| x.created));
    }
    core.sweeps.insert(id.clone(), sweep);
    if state == SweepState::Running {
        maybe_finish(core, out, &id, now);
    }
}

/// Units a sweep may generate before any result is in: everything, except that a scan
/// with a Hessian holds back all Lanczos rounds after the first.
pub fn initial_gate(spec: &SweepSpec) -> u32 {
    let total = u32::try_from(spec.total_units()).expect("validated to fit in u32");
    match spec
        .landscape
        .as_ref()
        .and_then(|l| l.hessian.as_ref().map(|h| (l, h)))
    {
        Some((l, h)) => (l.tiles() + h.shards) as u32,
        None => total,
    }
}

/// Results of earlier units made units `..upto` possible (the next Hessian round).
pub fn on_units_released(core: &mut Core, sid: &SweepId, upto: u32) {
    if let Some(s) = core.sweeps.get_mut(sid) {
        s.gate = s.gate.max(upto).min(s.counts.total);
    }
}

/// Units not yet generated can never run (a Hessian round lost a shard for good): they
/// are cancelled so that the sweep can finish.
pub fn on_units_abandoned(core: &mut Core, out: &mut impl Outbox, sid: &SweepId, now: Millis) {
    let Some(s) = core.sweeps.get_mut(sid) else {
        return;
    };
    if s.state != SweepState::Running {
        return;
    }
    let never = s.counts.total - s.next_trial;
    s.counts.cancelled += never;
    s.counts.pending -= never;
    s.gate = s.next_trial;
    maybe_finish(core, out, sid, now);
}

/// A sweep was submitted. Returns the number of units it will have.
pub fn on_sweep_submitted(
    core: &mut Core,
    out: &mut impl Outbox,
    id: SweepId,
    spec: SweepSpec,
    now: Millis,
) -> Result<u32, CoreError> {
    if core.sweeps.contains_key(&id) {
        return Err(CoreError::DuplicateSweep(id));
    }
    let total = u32::try_from(spec.total_units()).expect("validated to fit in u32");
    let spec = Arc::new(spec);
    out.send(Action::SweepCreated {
        sweep: id.clone(),
        spec: spec.clone(),
        total,
        at: now,
    });
    let sweep = Sweep {
        searcher: searcher_for(&spec),
        gate: initial_gate(&spec),
        spec,
        state: SweepState::Running,
        next_trial: 0,
        pending: VecDeque::new(),
        units: Vec::new(),
        counts: Counts {
            total,
            pending: total,
            ..Counts::default()
        },
        best: None,
        created: now,
        finished: None,
    };
    core.sweeps.insert(id.clone(), sweep);
    core.order.push(id.clone());
    // A sweep with nothing to do (impossible for valid specs, but cheap to get right).
    maybe_finish(core, out, &id, now);
    Ok(total)
}

/// A worker registered. Returns its id.
pub fn on_worker_registered(
    core: &mut Core,
    out: &mut impl Outbox,
    info: WorkerInfo,
    now: Millis,
) -> WorkerId {
    let host: String = info
        .name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(32)
        .collect();
    let id = WorkerId(format!("w{}-{}", core.next_worker, host));
    core.next_worker += 1;
    core.workers.insert(
        id.clone(),
        Worker {
            slots: info.slots.max(1),
            last_seen: now,
            units: BTreeSet::new(),
            to_cancel: Vec::new(),
        },
    );
    out.send(Action::WorkerRegistered {
        worker: id.clone(),
        info,
        at: now,
    });
    id
}

/// A worker asks for up to `max` units.
pub fn on_lease_requested(
    core: &mut Core,
    out: &mut impl Outbox,
    worker: &WorkerId,
    max: u32,
    now: Millis,
) -> Result<Vec<Lease>, CoreError> {
    let w = core
        .workers
        .get_mut(worker)
        .ok_or_else(|| CoreError::UnknownWorker(worker.clone()))?;
    w.last_seen = now;
    let free = w.slots.saturating_sub(w.units.len() as u32);
    let want = max.min(free) as usize;
    let mut grants = Vec::new();
    let order = core.order.clone();
    for sid in &order {
        while grants.len() < want {
            let Some(uid) = next_unit_of(core, out, sid, now) else {
                break;
            };
            grants.push(lease(core, out, uid, worker, now));
        }
        if grants.len() == want {
            break;
        }
    }
    Ok(grants)
}

/// Takes the next unit of a sweep that may start now, generating it if needed.
fn next_unit_of(
    core: &mut Core,
    out: &mut impl Outbox,
    sid: &SweepId,
    now: Millis,
) -> Option<UnitId> {
    let s = core.sweeps.get_mut(sid)?;
    if s.state != SweepState::Running {
        return None;
    }
    let limit = s.spec.max_concurrent();
    if limit > 0 && s.counts.running >= limit {
        return None;
    }
    if let Some(uid) = s.pending.pop_front() {
        return Some(uid);
    }
    if s.next_trial >= s.counts.total.min(s.gate) {
        return None;
    }
    let trial = s.next_trial;
    s.next_trial += 1;
    let params = s.searcher.suggest(trial);
    let uid = UnitId(core.next_unit);
    core.next_unit += 1;
    s.units.push(uid);
    out.send(Action::UnitCreated {
        unit: uid,
        sweep: sid.clone(),
        trial,
        params: params.clone(),
        at: now,
    });
    core.units.insert(
        uid,
        Unit {
            sweep: sid.clone(),
            trial,
            params,
            state: UnitState::Pending,
            attempts: 0,
            worker: None,
            deadline: 0,
        },
    );
    Some(uid)
}

fn lease(
    core: &mut Core,
    out: &mut impl Outbox,
    uid: UnitId,
    worker: &WorkerId,
    now: Millis,
) -> Lease {
    let u = core.units.get_mut(&uid).expect("queued units exist");
    u.state = UnitState::Running;
    u.attempts += 1;
    u.worker = Some(worker.clone());
    u.deadline = now + core.cfg.lease_ttl_ms;
    let s = core.sweeps.get_mut(&u.sweep).expect("unit's sweep exists");
    s.counts.pending -= 1;
    s.counts.running += 1;
    core.workers
        .get_mut(worker)
        .expect("caller checked the worker")
        .units
        .insert(uid);
    out.send(Action::UnitLeased {
        unit: uid,
        worker: worker.clone(),
        attempt: u.attempts,
        at: now,
    });
    Lease {
        unit: uid,
        sweep: u.sweep.clone(),
        trial: u.trial,
        params: u.params.clone(),
        attempt: u.attempts,
        spec: s.spec.clone(),
    }
}

/// A worker is alive. Renews the leases of its units and returns the units it must stop.
pub fn on_heartbeat(
    core: &mut Core,
    worker: &WorkerId,
    now: Millis,
) -> Result<Vec<UnitId>, CoreError> {
    let w = core
        .workers
        .get_mut(worker)
        .ok_or_else(|| CoreError::UnknownWorker(worker.clone()))?;
    w.last_seen = now;
    for uid in &w.units {
        if let Some(u) = core.units.get_mut(uid) {
            u.deadline = now + core.cfg.lease_ttl_ms;
        }
    }
    Ok(std::mem::take(&mut w.to_cancel))
}

/// A worker says which units it is running (in its heartbeat). After a coordinator
/// restart those units were queued again: the worker re-adopts the ones still pending
/// (no work is repeated, no attempt spent), and is told to stop the ones that finished
/// meanwhile or that another worker now holds.
pub fn on_units_reported_running(
    core: &mut Core,
    out: &mut impl Outbox,
    worker: &WorkerId,
    running: &[UnitId],
    now: Millis,
) {
    let Some(w) = core.workers.get(worker) else {
        return;
    };
    let mut free = w.slots.saturating_sub(w.units.len() as u32);
    for &uid in running {
        let Some(u) = core.units.get_mut(&uid) else {
            continue;
        };
        if u.worker.as_ref() == Some(worker) {
            continue;
        }
        let sweep_running = core
            .sweeps
            .get(&u.sweep)
            .is_some_and(|s| s.state == SweepState::Running);
        if u.state == UnitState::Pending && sweep_running && free > 0 {
            free -= 1;
            u.state = UnitState::Running;
            u.worker = Some(worker.clone());
            u.deadline = now + core.cfg.lease_ttl_ms;
            let s = core.sweeps.get_mut(&u.sweep).expect("unit's sweep exists");
            s.pending.retain(|p| *p != uid);
            s.counts.pending -= 1;
            s.counts.running += 1;
            core.workers
                .get_mut(worker)
                .expect("checked above")
                .units
                .insert(uid);
            out.send(Action::UnitAdopted {
                unit: uid,
                worker: worker.clone(),
            });
        } else {
            core.workers
                .get_mut(worker)
                .expect("checked above")
                .to_cancel
                .push(uid);
        }
    }
}

/// Units a worker must stop, without renewing anything (for report replies).
pub fn take_cancellations(core: &mut Core, worker: &WorkerId) -> Vec<UnitId> {
    core.workers
        .get_mut(worker)
        .map(|w| std::mem::take(&mut w.to_cancel))
        .unwrap_or_default()
}

/// A running unit reported intermediate metrics. Reports for units that are no longer
/// running on that worker are dropped: they belong to an attempt that lost its lease.
pub fn on_progress(
    core: &mut Core,
    out: &mut impl Outbox,
    worker: &WorkerId,
    unit: UnitId,
    step: u32,
    metrics: Vec<(String, f64)>,
) {
    let Some(u) = core.units.get(&unit) else {
        return;
    };
    if u.state == UnitState::Running && u.worker.as_ref() == Some(worker) {
        out.send(Action::Progress {
            unit,
            step,
            metrics,
        });
    }
}

/// A worker reports that a unit ended. Returns whether the outcome was accepted.
///
/// Results are idempotent: the first final outcome wins. A late outcome from a worker
/// that lost its lease is still accepted while the unit is not final (its work is as good
/// as anyone's), and the worker now running it is told to stop.
pub fn on_unit_finished(
    core: &mut Core,
    out: &mut impl Outbox,
    worker: &WorkerId,
    outcome: Outcome,
    now: Millis,
) -> bool {
    let uid = outcome.unit;
    let Some(u) = core.units.get(&uid) else {
        return false;
    };
    if u.state.is_final() {
        return false;
    }
    let holder = u.worker.clone();
    let was_running = u.state == UnitState::Running;
    let attempts = u.attempts;
    let sid = u.sweep.clone();
    // Detach the unit from whoever holds it.
    if let Some(h) = &holder {
        if let Some(w) = core.workers.get_mut(h) {
            w.units.remove(&uid);
            if h != worker && was_running {
                w.to_cancel.push(uid);
            }
        }
    }
    let s = core.sweeps.get_mut(&sid).expect("unit's sweep exists");
    if was_running {
        s.counts.running -= 1;
    } else {
        s.counts.pending -= 1;
        s.pending.retain(|p| *p != uid);
    }
    let retry = outcome.state == UnitState::Failed
        && attempts < core.cfg.max_attempts
        && s.state == SweepState::Running;
    if retry {
        let u = core.units.get_mut(&uid).expect("checked above");
        u.state = UnitState::Pending;
        u.worker = None;
        s.counts.pending += 1;
        // Retries go first: they are the oldest work of the sweep.
        s.pending.push_front(uid);
        out.send(Action::UnitRequeued {
            unit: uid,
            attempts,
            reason: format!("attempt {attempts} failed: {}", outcome.error),
        });
        return true;
    }
    let state = match outcome.state {
        UnitState::Completed | UnitState::Diverged | UnitState::Failed => outcome.state,
        // Workers only report the three above; anything else is treated as a failure.
        _ => UnitState::Failed,
    };
    finish_unit(
        core,
        out,
        uid,
        state,
        outcome.metrics,
        outcome.error,
        outcome.duration_s,
        Some(worker.clone()),
        now,
    );
    true
}

#[allow(clippy::too_many_arguments)]
fn finish_unit(
    core: &mut Core,
    out: &mut impl Outbox,
    uid: UnitId,
    state: UnitState,
    metrics: Vec<(String, f64)>,
    error: String,
    duration_s: f64,
    worker: Option<WorkerId>,
    now: Millis,
) {
    let u = core.units.get_mut(&uid).expect("caller checked");
    u.state = state;
    u.worker = None;
    let (sid, trial) = (u.sweep.clone(), u.trial);
    let s = core.sweeps.get_mut(&sid).expect("unit's sweep exists");
    match state {
        UnitState::Completed => s.counts.completed += 1,
        UnitState::Diverged => s.counts.diverged += 1,
        UnitState::Cancelled => s.counts.cancelled += 1,
        _ => s.counts.failed += 1,
    }
    if state == UnitState::Completed {
        let metric = s.spec.metric();
        let mode: Mode = s.spec.mode();
        if let Some((_, v)) = metrics.iter().find(|(n, _)| n == metric) {
            if v.is_finite() {
                s.searcher.observe(trial, *v);
                if s.best.is_none_or(|(_, b)| mode.better(*v, b)) {
                    s.best = Some((trial, *v));
                }
            }
        }
    }
    out.send(Action::UnitFinished {
        unit: uid,
        sweep: sid.clone(),
        trial,
        state,
        metrics,
        error,
        duration_s,
        worker,
        at: now,
    });
    maybe_finish(core, out, &sid, now);
}

fn maybe_finish(core: &mut Core, out: &mut impl Outbox, sid: &SweepId, now: Millis) {
    let s = core.sweeps.get_mut(sid).expect("caller checked");
    if s.state != SweepState::Running {
        return;
    }
    let c = s.counts;
    if c.pending > 0 || c.running > 0 {
        return;
    }
    s.state = if c.completed > 0 || c.total == 0 {
        SweepState::Completed
    } else {
        SweepState::Failed
    };
    s.finished = Some(now);
    core.order.retain(|x| x != sid);
    out.send(Action::SweepFinished {
        sweep: sid.clone(),
        state: s.state,
        best: s.best,
        at: now,
    });
}

/// Time passed: leases past their deadline go back to the queue (or fail after
/// `max_attempts`), and workers silent for longer than a lease are dropped.
pub fn on_tick(core: &mut Core, out: &mut impl Outbox, now: Millis) {
    let lost: Vec<WorkerId> = core
        .workers
        .iter()
        .filter(|(_, w)| now > w.last_seen + core.cfg.lease_ttl_ms)
        .map(|(id, _)| id.clone())
        .collect();
    for id in lost {
        drop_worker(core, out, &id, "missed heartbeats", true, now);
    }
    // Leases can also lapse while their worker still talks (a unit the worker forgot).
    // Only leased units can lapse: scan the workers' units, not every unit ever made.
    let expired: Vec<UnitId> = core
        .workers
        .values()
        .flat_map(|w| &w.units)
        .filter(|id| core.units.get(id).is_some_and(|u| now > u.deadline))
        .copied()
        .collect();
    for uid in expired {
        requeue(core, out, uid, "lease expired", true, now);
    }
}

/// A worker leaves cleanly; its running units go back to the queue without counting as
/// failed attempts.
pub fn on_worker_deregistered(
    core: &mut Core,
    out: &mut impl Outbox,
    worker: &WorkerId,
    now: Millis,
) {
    drop_worker(core, out, worker, "deregistered", false, now);
}

fn drop_worker(
    core: &mut Core,
    out: &mut impl Outbox,
    id: &WorkerId,
    reason: &str,
    count_attempt: bool,
    now: Millis,
) {
    let Some(w) = core.workers.remove(id) else {
        return;
    };
    for uid in w.units {
        requeue(
            core,
            out,
            uid,
            &format!("worker {id} {reason}"),
            count_attempt,
            now,
        );
    }
    out.send(Action::WorkerGone {
        worker: id.clone(),
        reason: reason.to_owned(),
    });
}

fn requeue(
    core: &mut Core,
    out: &mut impl Outbox,
    uid: UnitId,
    reason: &str,
    count_attempt: bool,
    now: Millis,
) {
    let max_attempts = core.cfg.max_attempts;
    let u = core.units.get_mut(&uid).expect("worker units exist");
    if u.state != UnitState::Running {
        return;
    }
    if let Some(w) = u.worker.take().and_then(|w| core.workers.get_mut(&w)) {
        w.units.remove(&uid);
        w.to_cancel.push(uid);
    }
    if !count_attempt {
        u.attempts -= 1;
    }
    if u.attempts >= max_attempts {
        let msg = format!("{reason} on attempt {} of {max_attempts}", u.attempts);
        let s = core.sweeps.get_mut(&u.sweep).expect("unit's sweep exists");
        s.counts.running -= 1;
        finish_unit(
            core,
            out,
            uid,
            UnitState::Failed,
            vec![],
            msg,
            0.0,
            None,
            now,
        );
        return;
    }
    u.state = UnitState::Pending;
    let s = core.sweeps.get_mut(&u.sweep).expect("unit's sweep exists");
    s.counts.running -= 1;
    s.counts.pending += 1;
    s.pending.push_front(uid);
    out.send(Action::UnitRequeued {
        unit: uid,
        attempts: u.attempts,
        reason: reason.to_owned(),
    });
}

/// A user cancels a sweep: queued units are cancelled, running ones are stopped on
/// their workers, and nothing more is leased.
pub fn on_cancel(
    core: &mut Core,
    out: &mut impl Outbox,
    sid: &SweepId,
    now: Millis,
) -> Result<SweepState, CoreError> {
    let s = core
        .sweeps
        .get_mut(sid)
        .ok_or_else(|| CoreError::UnknownSweep(sid.clone()))?;
    if s.state != SweepState::Running {
        return Ok(s.state);
    }
    s.state = SweepState::Cancelled;
    s.finished = Some(now);
    // Trials never generated are cancelled without being created.
    let never = s.counts.total - s.next_trial;
    s.counts.cancelled += never;
    s.counts.pending -= never;
    s.pending.clear();
    let units = s.units.clone();
    core.order.retain(|x| x != sid);
    for uid in units {
        let u = core.units.get_mut(&uid).expect("sweep units exist");
        if u.state.is_final() {
            continue;
        }
        let s = core.sweeps.get_mut(sid).expect("checked above");
        if u.state == UnitState::Running {
            s.counts.running -= 1;
        } else {
            s.counts.pending -= 1;
        }
        if let Some(w) = u.worker.take().and_then(|w| core.workers.get_mut(&w)) {
            w.units.remove(&uid);
            w.to_cancel.push(uid);
        }
        u.state = UnitState::Cancelled;
        s.counts.cancelled += 1;
        out.send(Action::UnitFinished {
            unit: uid,
            sweep: sid.clone(),
            trial: u.trial,
            state: UnitState::Cancelled,
            metrics: vec![],
            error: "sweep cancelled".into(),
            duration_s: 0.0,
            worker: None,
            at: now,
        });
    }
    let s = &core.sweeps[sid];
    out.send(Action::SweepFinished {
        sweep: sid.clone(),
        state: SweepState::Cancelled,
        best: s.best,
        at: now,
    });
    Ok(SweepState::Cancelled)
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
