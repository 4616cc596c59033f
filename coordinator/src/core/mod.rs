//! The scheduling core: all coordinator state, changed only by plain synchronous `on_*`
//! functions that take the time as an argument and describe their side effects as
//! [`Action`]s pushed into an [`Outbox`]. No sockets, clocks, threads or database here,
//! so every scheduling rule is unit-testable (HyperQueue's `Core` pattern).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use ridgeline_common::ids::{SweepId, UnitId, WorkerId};
use ridgeline_common::params::Params;
use ridgeline_common::spec::SweepSpec;

use crate::schedulers::Scheduler;
use crate::search::Searcher;

mod front;
mod gauges;
mod keep;
mod sweeps;
mod workers;

pub use front::{Front, FrontTrial};
pub use gauges::*;
pub use keep::Kept;
pub use sweeps::*;
pub use workers::*;

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
    /// Stopped early by the sweep's scheduler (ASHA, Hyperband, median).
    Pruned,
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
            UnitState::Pruned => "pruned",
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
            UnitState::Pruned,
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

/// Why a unit went back to the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequeueCause {
    /// Its attempt failed and it has attempts left.
    AttemptFailed,
    /// Its lease lapsed while the worker still talked.
    LeaseExpired,
    /// Its worker missed heartbeats for a lease lifetime.
    WorkerLost,
    /// Its worker left cleanly (SIGTERM) and handed it back; no attempt spent.
    WorkerLeft,
    /// The coordinator restarted while it was leased.
    CoordinatorRestarted,
}

impl RequeueCause {
    /// Every cause, for registering metric series up front.
    pub const ALL: [RequeueCause; 5] = [
        RequeueCause::AttemptFailed,
        RequeueCause::LeaseExpired,
        RequeueCause::WorkerLost,
        RequeueCause::WorkerLeft,
        RequeueCause::CoordinatorRestarted,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RequeueCause::AttemptFailed => "attempt_failed",
            RequeueCause::LeaseExpired => "lease_expired",
            RequeueCause::WorkerLost => "worker_lost",
            RequeueCause::WorkerLeft => "worker_left",
            RequeueCause::CoordinatorRestarted => "coordinator_restarted",
        }
    }

    /// Whether the lost lease counts against `max_attempts`.
    fn spends_attempt(self) -> bool {
        self != RequeueCause::WorkerLeft
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
        /// The attempt continues the earlier ones' history (a command trial resumes
        /// from its checkpoint) rather than starting it afresh (the built-in trainer).
        resumes: bool,
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
        /// Leases so far (each attempt's number is its own).
        attempts: u32,
        /// Leases of those that were not the unit's doing (its worker left cleanly, or
        /// the coordinator lost the lease): `attempts - interrupted` counts against
        /// `max_attempts`.
        interrupted: u32,
        /// Why, in words.
        reason: String,
        /// Why, as a category (a metric label).
        cause: RequeueCause,
    },
    /// A lease lapsed: its worker stopped heartbeating, or forgot the unit. (Followed by
    /// the unit's requeue, or its failure after `max_attempts`.)
    LeaseExpired {
        /// The unit.
        unit: UnitId,
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
        /// The winning attempt's complete history: it replaces the stored progress, or
        /// (`resumes`) is merged into it, a step reported again taking the later value.
        history: Option<History>,
        /// The trial's attempts continue one another (command trials): the stored
        /// history is the union over attempts.
        resumes: bool,
        /// When.
        at: Millis,
    },
    /// Trials of a search lost their place among those that keep their checkpoints
    /// (`search.keep`): their checkpoint files are removed once this is committed.
    CheckpointsDropped {
        /// The sweep.
        sweep: SweepId,
        /// The trials.
        trials: Vec<u32>,
    },
    /// A sweep has a new best trial (persisted at once, so a restart keeps it).
    SweepBest {
        /// The sweep.
        sweep: SweepId,
        /// The trial.
        trial: u32,
        /// Its metric value.
        value: f64,
    },
    /// A cancelled sweep runs again: its cancelled units with trial numbers below
    /// `before` are pending in the store, and the core is rebuilt from the store once
    /// this is committed.
    SweepResumed {
        /// The sweep.
        sweep: SweepId,
        /// A scan's tiles, curvature points and curve (its Hessian rounds are not resumed:
        /// their Lanczos state ended with the sweep); every trial of a search.
        before: u32,
    },
    /// A search grew (`extend`, `enqueue`): its spec is now `spec` (more trials, and
    /// configurations to run next), it runs again, and the core is rebuilt from the
    /// store once this is committed.
    SweepExtended {
        /// The sweep.
        sweep: SweepId,
        /// The spec it now has.
        spec: Arc<SweepSpec>,
        /// Its units now.
        total: u32,
    },
    /// A sweep and everything of it was deleted.
    SweepDeleted {
        /// The sweep.
        sweep: SweepId,
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
    /// A worker's secret was set (at its first registration): only a request that
    /// carries it acts as that worker, and only its holder may take the id back.
    WorkerSecret {
        /// The worker.
        worker: WorkerId,
        /// SHA-256 of the secret, in hex (the secret itself is never stored).
        sha256: String,
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

/// Per-step metrics of one attempt, ordered by step.
pub type History = Vec<(u32, Vec<(String, f64)>)>;

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
    /// The attempt's complete per-step history, when the worker sent it: it replaces
    /// whatever progress was stored, so the winning attempt's history is the one kept.
    pub history: Option<History>,
    /// The failure will happen again on any worker (e.g. out of memory for the unit's
    /// size): not retried.
    pub permanent: bool,
}

/// What became of a reported outcome.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Taken: the unit finished, or failed and was queued again.
    Accepted,
    /// The unit had already finished (a duplicate, or a result that lost a race):
    /// acknowledged, changes nothing.
    AlreadyFinal,
    /// The reporting worker never held the unit, or the unit never existed.
    Refused(String),
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
    /// The sweep cannot be resumed, and why.
    #[error("sweep {0} cannot be resumed: {1}")]
    NotResumable(SweepId, &'static str),
    /// The sweep cannot take more trials, and why.
    #[error("sweep {0} cannot be extended: {1}")]
    NotExtendable(SweepId, String),
    /// A request's field is wrong: `(field, reason)`.
    #[error("{0}: {1}")]
    Invalid(String, String),
}

/// A unit that is not final yet. Finished units leave the core (the store keeps them),
/// so memory follows the work in flight, not the work done.
#[derive(Debug)]
struct Unit {
    sweep: SweepId,
    trial: u32,
    params: Params,
    /// Pending or Running.
    state: UnitState,
    /// Leases so far: each attempt's number (its log, `RIDGELINE_ATTEMPT`) is unique.
    attempts: u32,
    /// Leases the coordinator itself lost (a restart, a failed commit): they do not
    /// count against `max_attempts`.
    interrupted: u32,
    /// Every (worker, attempt) leased or adopted: whose log chunks are the unit's.
    leases: Vec<(WorkerId, u32)>,
    /// The worker holding the current lease.
    worker: Option<WorkerId>,
    /// Every worker that ever held a lease on the unit: a late result from one of them
    /// is accepted while the unit is open; anyone else's is refused.
    holders: Vec<WorkerId>,
    deadline: Millis,
    /// When the current attempt was leased (a pruned trial's duration).
    started: Millis,
}

struct Worker {
    /// SHA-256 (hex) of the secret issued with the id, once set.
    secret: Option<String>,
    slots: u32,
    last_seen: Millis,
    units: BTreeSet<UnitId>,
    /// Units the worker must stop, sent with its next heartbeat or report reply (each
    /// once, however often it was refused).
    to_cancel: BTreeSet<UnitId>,
}

impl Unit {
    /// Its current lease ended through no fault of its own: it does not count against
    /// `max_attempts`. A lease is counted once, however often it is re-adopted and
    /// handed back.
    fn interrupt(&mut self) {
        if self.interrupted < self.attempts {
            self.interrupted += 1;
        }
    }
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
    /// Stopped early by the scheduler.
    pub pruned: u32,
}

/// The best completed trial of a sweep.
#[derive(Clone, Debug, PartialEq)]
pub struct Best {
    /// Its trial index.
    pub trial: u32,
    /// Its value of the sweep's metric.
    pub value: f64,
    /// Its parameters.
    pub params: Params,
}

struct Sweep {
    spec: Arc<SweepSpec>,
    state: SweepState,
    searcher: Box<dyn Searcher>,
    /// The early-stopping rule, if the spec names one.
    scheduler: Option<Box<dyn Scheduler>>,
    next_trial: u32,
    /// Units `0..gate` may be generated; later ones wait for results of earlier ones
    /// (a scan's Hessian round needs the previous round's products).
    gate: u32,
    /// Generated units waiting for a worker (retries, and units restored after a
    /// restart); fresh trials are generated when a worker asks.
    pending: VecDeque<UnitId>,
    /// Units that were leased when the coordinator restarted, held back until the given
    /// time so that the worker still running each can take it back (re-adopt it)
    /// before it is leased to someone else and computed twice.
    parked: Vec<(UnitId, Millis)>,
    /// Generated units that are not final: what cancellation has to visit.
    live: BTreeSet<UnitId>,
    counts: Counts,
    best: Option<Best>,
    /// Several objectives: the Pareto front so far (instead of a best trial).
    front: Option<Front>,
    /// Which trials keep their checkpoints, where one result at a time decides.
    kept: Option<Kept>,
    created: Millis,
    finished: Option<Millis>,
    /// Recent finishes, for throughput and ETA.
    rate: gauges::Rate,
}

impl Sweep {
    /// Takes a unit out of the queue (or out of the units held back after a restart).
    fn unqueue(&mut self, uid: UnitId) {
        self.pending.retain(|p| *p != uid);
        self.parked.retain(|(p, _)| *p != uid);
    }
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
    /// Best trial so far.
    pub best: Option<Best>,
    /// Several objectives: the Pareto front so far.
    pub front: Option<Front>,
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
    /// Live (pending or running) units only.
    units: HashMap<UnitId, Unit>,
    workers: HashMap<WorkerId, Worker>,
    next_unit: u64,
    next_worker: u64,
}

impl Core {
    /// An empty core. `first_unit_id` and `first_worker` continue the numbering of a
    /// stored database, so that no id is ever given out twice.
    pub fn new(cfg: CoreConfig, first_unit_id: u64, first_worker: u64) -> Self {
        Core {
            cfg,
            sweeps: HashMap::new(),
            order: Vec::new(),
            units: HashMap::new(),
            workers: HashMap::new(),
            next_unit: first_unit_id.max(1),
            next_worker: first_worker.max(1),
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
            best: s.best.clone(),
            front: s.front.clone(),
            created: s.created,
            finished: s.finished,
        })
    }

    /// Ids of all sweeps known to the core, oldest first.
    pub fn sweep_ids(&self) -> Vec<SweepId> {
        let mut v: Vec<_> = self.sweeps.keys().cloned().collect();
        v.sort_by(|a, b| (self.sweeps[a].created, a).cmp(&(self.sweeps[b].created, b)));
        v
    }

    /// The state of a live unit; `None` once it is final (the store has it then).
    pub fn unit_state(&self, id: UnitId) -> Option<UnitState> {
        self.units.get(&id).map(|u| u.state)
    }

    /// Number of live (pending or running) units held in memory.
    pub fn live_units(&self) -> usize {
        self.units.len()
    }

    /// Number of registered workers.
    pub fn worker_count(&self) -> usize {
        self.workers.len()
    }

    /// The SHA-256 (hex) of a registered worker's secret: `None` for a worker the core
    /// does not know, `Some(None)` before one is set.
    pub fn worker_secret(&self, id: &WorkerId) -> Option<Option<&str>> {
        self.workers.get(id).map(|w| w.secret.as_deref())
    }

    /// The worker holding a live unit's current lease.
    pub fn unit_holder(&self, id: UnitId) -> Option<&WorkerId> {
        self.units.get(&id).and_then(|u| u.worker.as_ref())
    }

    /// Units of a sweep held back after a restart (still `running` in the store) until
    /// their last holder's lease has surely lapsed.
    pub fn parked_units(&self, id: &SweepId) -> usize {
        self.sweeps.get(id).map_or(0, |s| s.parked.len())
    }

    /// The sweep and trial of a live unit.
    pub fn unit_trial(&self, id: UnitId) -> Option<(SweepId, u32)> {
        self.units.get(&id).map(|u| (u.sweep.clone(), u.trial))
    }
}

/// A unit that was not final when stored, for rebuilding the core after a restart.
#[derive(Clone, Debug)]
pub struct StoredUnit {
    /// Its id.
    pub unit: UnitId,
    /// Its trial index.
    pub trial: u32,
    /// Its parameters.
    pub params: Params,
    /// Its stored state (pending or running).
    pub state: UnitState,
    /// Leases so far.
    pub attempts: u32,
    /// Leases of those lost to the coordinator (not counted against `max_attempts`).
    pub interrupted: u32,
    /// The worker of its last lease.
    pub worker: Option<WorkerId>,
}

/// A sweep as stored, for rebuilding the core after a restart: its live units and the
/// counts of its final ones, never the final units themselves.
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
    /// Best trial so far.
    pub best: Option<Best>,
    /// Units generated so far (trials are generated in order: `0..generated`).
    pub generated: u32,
    /// Counts of final units (completed, failed, diverged, cancelled).
    pub finals: Counts,
    /// Its units that were not final.
    pub live: Vec<StoredUnit>,
    /// How many units had been released (see [`on_units_released`]); `None` for the
    /// sweep's initial release.
    pub released: Option<u32>,
    /// What adaptive searchers and schedulers learned from, for sweeps that have one:
    /// every completed, pruned or live trial with its parameters and metric history.
    pub trials: Vec<StoredTrial>,
    /// A running sweep with a bounded `search.keep`: its completed feasible trials
    /// with their metric values, the best `keep` of them at least.
    pub kept: Vec<(u32, f64)>,
}

/// A trial as an adaptive searcher or a scheduler saw it, for rebuilding them.
#[derive(Clone, Debug)]
pub struct StoredTrial {
    /// Its trial index.
    pub trial: u32,
    /// Its parameters.
    pub params: Params,
    /// Completed, Pruned, or Pending/Running.
    pub state: UnitState,
    /// Its final value of the sweep's metric (completed trials).
    pub value: Option<f64>,
    /// The sweep's metric by step, as reported (the current attempt's).
    pub history: Vec<(u32, f64)>,
    /// How far a completed trial is from the sweep's constraints (0: feasible).
    pub violation: f64,
    /// Multi-objective: its final value of every objective (empty unless all are
    /// reported and finite).
    pub values: Vec<f64>,
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_adaptive;
