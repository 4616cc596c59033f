//! Events of a sweep's life: submitted, restored after a restart, gated units released
//! or abandoned, units finished, cancelled, deleted.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use ridgeline_common::ids::{SweepId, UnitId, WorkerId};
use ridgeline_common::spec::SweepSpec;

use super::*;
use crate::schedulers::scheduler_for;
use crate::search::{Ended, searcher_for};

/// A unit that will never run, for the store.
fn cancelled(unit: UnitId, sweep: &SweepId, trial: u32, why: String, at: Millis) -> Action {
    Action::UnitFinished {
        unit,
        sweep: sweep.clone(),
        trial,
        state: UnitState::Cancelled,
        metrics: vec![],
        error: why,
        duration_s: 0.0,
        worker: None,
        history: None,
        resumes: false,
        at,
    }
}

fn total_of(spec: &SweepSpec) -> u32 {
    u32::try_from(spec.total_units()).expect("validated to fit in u32")
}

/// Rebuilds a sweep from the store after a coordinator restart (or after a failed
/// commit, which discards the in-memory state). Units that were leased go back to the
/// queue: a worker still running one re-adopts it, and the worker of the last lease may
/// still deliver its result. Completed work stays in the store and is only counted here.
pub fn on_sweep_restored(core: &mut Core, out: &mut impl Outbox, stored: StoredSweep, now: Millis) {
    let StoredSweep {
        id,
        spec,
        state,
        created,
        finished,
        best,
        generated,
        finals,
        live,
        released,
        trials,
        kept,
    } = stored;
    let total = total_of(&spec);
    let spec = Arc::new(spec);
    let gate = match population(&spec) {
        // PBT: the round of the last generated trial, or the next one if every trial
        // generated so far has ended (rounds are generated whole, one after another).
        Some(p) => {
            let round_end = generated.div_ceil(p).max(1) * p;
            if live.is_empty() && generated == round_end {
                (round_end + p).min(total)
            } else {
                round_end.min(total)
            }
        }
        None => released.unwrap_or_else(|| initial_gate(&spec)),
    };
    let mut sweep = Sweep {
        kept: Kept::of(&spec).map(|mut k| {
            // The best of them were kept; the rest went when they ended.
            for (t, v) in kept {
                k.offer(t, Some(v));
            }
            k
        }),
        front: Front::of(&spec),
        searcher: searcher_for(&spec),
        scheduler: scheduler_for(&spec),
        gate,
        spec,
        state,
        next_trial: generated,
        pending: VecDeque::new(),
        parked: Vec::new(),
        live: BTreeSet::new(),
        counts: Counts {
            total,
            pending: 0,
            running: 0,
            ..finals
        },
        best,
        created,
        finished,
        // Finishes before the restart are not known one by one: the rate starts over.
        rate: Rate::new(now),
    };
    replay(&mut sweep, trials);
    for u in live {
        core.next_unit = core.next_unit.max(u.unit.0 + 1);
        if state != SweepState::Running {
            // A sweep that ended with units still open: they can never run.
            sweep.counts.cancelled += 1;
            out.send(cancelled(
                u.unit,
                &id,
                u.trial,
                format!("sweep {}", state.as_str()),
                now,
            ));
            continue;
        }
        if u.state == UnitState::Running {
            // Its holder's lease may still run (by the clock of the coordinator that
            // granted it, at most a lease lifetime from now): the unit is held back
            // that long, and stays `running` in the store until then, so that a second
            // restart within the lifetime holds it back again rather than leasing it.
            sweep.parked.push((u.unit, now + core.cfg.lease_ttl_ms));
        } else {
            sweep.pending.push_back(u.unit);
        }
        sweep.live.insert(u.unit);
        core.units.insert(
            u.unit,
            Unit {
                sweep: id.clone(),
                trial: u.trial,
                params: u.params,
                state: UnitState::Pending,
                attempts: u.attempts,
                interrupted: u.interrupted,
                leases: u.worker.iter().map(|w| (w.clone(), u.attempts)).collect(),
                worker: None,
                holders: u.worker.into_iter().collect(),
                deadline: 0,
                started: now,
            },
        );
    }
    let c = &mut sweep.counts;
    if state != SweepState::Running {
        // Units never generated of a sweep that ended (cancelled, or Hessian rounds
        // abandoned) were cancelled without ever being stored.
        c.cancelled += c.total - generated.min(c.total);
    }
    c.pending = c.total - c.completed - c.diverged - c.cancelled - c.failed - c.pruned;
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

/// Feeds the stored trials to a rebuilt sweep's searcher and scheduler, in trial order:
/// both then hold what they held before the restart (their state is the set of trials
/// and reports, not the order these came in).
fn replay(sweep: &mut Sweep, mut trials: Vec<StoredTrial>) {
    trials.sort_by_key(|t| t.trial);
    let mode = sweep.spec.mode();
    for t in trials {
        sweep.searcher.started(t.trial, &t.params);
        if let Some(sch) = &mut sweep.scheduler {
            for (step, v) in t.history.iter().filter(|(_, v)| v.is_finite()) {
                sch.on_report(t.trial, *step, score(mode, *v));
            }
        }
        let last = t.history.last().copied();
        let multi = sweep.spec.is_multi_objective();
        match (t.state, t.value, last) {
            (UnitState::Completed, _, _) if multi && !t.values.is_empty() => {
                if let Some(f) = sweep.front.as_mut().filter(|_| t.violation <= 0.0) {
                    f.add(t.trial, t.values.clone(), t.params.clone());
                }
                let ended = Ended::Scored {
                    values: t.values,
                    violation: t.violation,
                };
                sweep.searcher.observe(t.trial, ended);
            }
            (UnitState::Completed, Some(v), _) if !multi => {
                let ended = if t.violation > 0.0 {
                    Ended::Infeasible {
                        value: v,
                        violation: t.violation,
                    }
                } else {
                    Ended::Completed(v)
                };
                sweep.searcher.observe(t.trial, ended);
                if let Some(sch) = &mut sweep.scheduler {
                    sch.on_completed(t.trial);
                }
            }
            (UnitState::Pruned, _, Some((step, value))) => {
                sweep
                    .searcher
                    .observe(t.trial, Ended::Pruned { step, value });
                if let Some(sch) = &mut sweep.scheduler {
                    sch.on_ended(t.trial);
                }
            }
            (UnitState::Pending | UnitState::Running, _, _) => {}
            _ => sweep.searcher.observe(t.trial, Ended::Failed),
        }
    }
}

/// A metric value as schedulers see it: larger is better.
pub(super) fn score(mode: ridgeline_common::spec::Mode, v: f64) -> f64 {
    match mode {
        ridgeline_common::spec::Mode::Min => -v,
        ridgeline_common::spec::Mode::Max => v,
    }
}

/// Units a sweep may generate before any result is in: everything, except that a scan
/// with a Hessian holds back all Lanczos rounds after the first.
pub fn initial_gate(spec: &SweepSpec) -> u32 {
    if let Some(p) = population(spec) {
        return p.min(total_of(spec));
    }
    match spec
        .landscape
        .as_ref()
        .and_then(|l| l.hessian.as_ref().map(|h| (l, h)))
    {
        Some((l, h)) => (l.hessian_base() + h.shards) as u32,
        None => total_of(spec),
    }
}

/// PBT's population: its trials are released a round (one trial per member) at a time.
fn population(spec: &SweepSpec) -> Option<u32> {
    (spec.search.algorithm == ridgeline_common::spec::Algorithm::Pbt
        && spec.kind == ridgeline_common::spec::SweepKind::Search)
        .then_some(spec.search.num_samples)
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
    on_units_abandoned_from(core, out, sid, 0, now);
}

/// Like [`on_units_abandoned`] for the units from `from` on only: those not yet generated
/// are counted cancelled, and the ones before `from` may still be generated (a resumed
/// scan's tiles run, its Hessian rounds, whose Lanczos state ended with the sweep, not).
pub fn on_units_abandoned_from(
    core: &mut Core,
    out: &mut impl Outbox,
    sid: &SweepId,
    from: u32,
    now: Millis,
) {
    let Some(s) = core.sweeps.get_mut(sid) else {
        return;
    };
    if s.state != SweepState::Running {
        return;
    }
    let from = from.max(s.next_trial).min(s.counts.total);
    let never = s.counts.total - from;
    s.counts.cancelled += never;
    s.counts.pending -= never;
    s.gate = from;
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
    let total = total_of(&spec);
    let spec = Arc::new(spec);
    out.send(Action::SweepCreated {
        sweep: id.clone(),
        spec: spec.clone(),
        total,
        at: now,
    });
    let sweep = Sweep {
        kept: Kept::of(&spec),
        front: Front::of(&spec),
        searcher: searcher_for(&spec),
        scheduler: scheduler_for(&spec),
        gate: initial_gate(&spec),
        spec,
        state: SweepState::Running,
        next_trial: 0,
        pending: VecDeque::new(),
        parked: Vec::new(),
        live: BTreeSet::new(),
        counts: Counts {
            total,
            pending: total,
            ..Counts::default()
        },
        best: None,
        created: now,
        finished: None,
        rate: Rate::new(now),
    };
    core.sweeps.insert(id.clone(), sweep);
    core.order.push(id.clone());
    // A sweep with nothing to do (impossible for valid specs, but cheap to get right).
    maybe_finish(core, out, &id, now);
    Ok(total)
}

/// Whether a trial's attempts continue one another: a command trial's program resumes
/// from the checkpoint in its trial folder, so its history is the union over attempts;
/// the built-in trainer starts afresh, so only the last attempt's history is kept.
pub(super) fn resumes(spec: &SweepSpec) -> bool {
    spec.trial.is_some()
}

/// How a unit ends, for [`finish_unit`].
pub(super) struct Ending {
    pub state: UnitState,
    /// Final metrics (empty unless completed, diverged or pruned).
    pub metrics: Vec<(String, f64)>,
    pub error: String,
    pub duration_s: f64,
    /// The worker that produced the final state, if any.
    pub worker: Option<WorkerId>,
    /// The winning attempt's complete history, replacing the stored progress.
    pub history: Option<History>,
    /// The step at which a pruned trial was stopped.
    pub pruned_at: Option<u32>,
}

impl Ending {
    /// An ending with no metrics, worker or history.
    pub fn bare(state: UnitState, error: String) -> Self {
        Ending {
            state,
            metrics: vec![],
            error,
            duration_s: 0.0,
            worker: None,
            history: None,
            pruned_at: None,
        }
    }
}

/// A unit reached a final state: it leaves the core (the store keeps it), the counts,
/// the searcher, the scheduler and the best trial follow, and the sweep may finish.
pub(super) fn finish_unit(
    core: &mut Core,
    out: &mut impl Outbox,
    uid: UnitId,
    end: Ending,
    now: Millis,
) {
    let Ending {
        state,
        metrics,
        error,
        duration_s,
        worker,
        history,
        pruned_at,
    } = end;
    let u = core.units.remove(&uid).expect("caller checked");
    if let Some(w) = u.worker.as_ref().and_then(|w| core.workers.get_mut(w)) {
        w.units.remove(&uid);
    }
    let (sid, trial) = (u.sweep, u.trial);
    let s = core.sweeps.get_mut(&sid).expect("unit's sweep exists");
    s.live.remove(&uid);
    if let Some(p) = population(&s.spec)
        && s.live.is_empty()
        && s.next_trial >= s.gate
    {
        // A PBT round has ended: the next one may be decided from its results.
        s.gate = (s.gate + p).min(s.counts.total);
    }
    if state != UnitState::Cancelled {
        s.rate.record(now, items_of(&s.spec, trial));
    }
    match state {
        UnitState::Completed => s.counts.completed += 1,
        UnitState::Diverged => s.counts.diverged += 1,
        UnitState::Cancelled => s.counts.cancelled += 1,
        UnitState::Pruned => s.counts.pruned += 1,
        _ => s.counts.failed += 1,
    }
    let metric = s.spec.metric();
    let value = metrics
        .iter()
        .find(|(n, _)| n == metric)
        .map(|(_, v)| *v)
        .filter(|v| v.is_finite());
    let violation = s.spec.search.violation(&metrics);
    let scored = s
        .spec
        .is_multi_objective()
        .then(|| s.spec.objective_values(&metrics));
    let on_front = |s: &Sweep| -> Vec<u32> {
        s.front
            .as_ref()
            .map_or(vec![], |f| f.trials.iter().map(|t| t.trial).collect())
    };
    let front_before = on_front(s);
    let ended = match (state, value, scored) {
        (UnitState::Completed, _, Some(Some(values))) => {
            if let Some(f) = s.front.as_mut().filter(|_| violation <= 0.0) {
                f.add(trial, values.clone(), u.params.clone());
            }
            Ended::Scored { values, violation }
        }
        (_, _, Some(_)) => Ended::Failed,
        (UnitState::Completed, Some(v), None) if violation > 0.0 => Ended::Infeasible {
            value: v,
            violation,
        },
        (UnitState::Completed, Some(v), None) => Ended::Completed(v),
        (UnitState::Pruned, Some(v), None) => Ended::Pruned {
            step: pruned_at.unwrap_or(0),
            value: v,
        },
        _ => Ended::Failed,
    };
    let completed = ended.completed();
    s.searcher.observe(trial, ended);
    if let Some(sch) = &mut s.scheduler {
        if completed {
            sch.on_completed(trial);
        } else {
            sch.on_ended(trial);
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
        history,
        resumes: resumes(&s.spec),
        at: now,
    });
    let dropped = dropped_checkpoints(s, trial, state, value, violation, front_before);
    if !dropped.is_empty() {
        out.send(Action::CheckpointsDropped {
            sweep: sid.clone(),
            trials: dropped,
        });
    }
    // The best is the best feasible trial (several objectives have a front instead).
    if state == UnitState::Completed && violation == 0.0 && !s.spec.is_multi_objective() {
        let mode = s.spec.mode();
        if let Some(v) = value {
            // Ties go to the lower trial number (as Optuna's best_trial), so the best
            // does not depend on the order in which results arrive.
            let better = |b: &Best| mode.better(v, b.value) || (v == b.value && trial < b.trial);
            if s.best.as_ref().is_none_or(better) {
                s.best = Some(Best {
                    trial,
                    value: v,
                    params: u.params,
                });
                out.send(Action::SweepBest {
                    sweep: sid.clone(),
                    trial,
                    value: v,
                });
            }
        }
    }
    maybe_finish(core, out, &sid, now);
}

/// The trials whose checkpoints go now that `trial` ended (see [`Kept`]): with one
/// objective, the one that is not among the `keep` best; with several (and a bounded
/// `keep`), those that left the front or never joined it. Trials that failed or were
/// cancelled have nothing to lose here, and PBT keeps all.
fn dropped_checkpoints(
    s: &mut Sweep,
    trial: u32,
    state: UnitState,
    value: Option<f64>,
    violation: f64,
    front_before: Vec<u32>,
) -> Vec<u32> {
    if !matches!(
        state,
        UnitState::Completed | UnitState::Pruned | UnitState::Diverged
    ) {
        return vec![];
    }
    if let Some(k) = &mut s.kept {
        let feasible = (state == UnitState::Completed && violation <= 0.0)
            .then_some(value)
            .flatten();
        return k.offer(trial, feasible).into_iter().collect();
    }
    match &s.front {
        Some(f) if super::keep::applies(&s.spec) => {
            let now: Vec<u32> = f.trials.iter().map(|t| t.trial).collect();
            front_before
                .into_iter()
                .chain([trial])
                .filter(|t| !now.contains(t))
                .collect()
        }
        _ => vec![],
    }
}

pub(super) fn maybe_finish(core: &mut Core, out: &mut impl Outbox, sid: &SweepId, now: Millis) {
    let s = core.sweeps.get_mut(sid).expect("caller checked");
    if s.state != SweepState::Running {
        return;
    }
    let c = s.counts;
    if c.pending > 0 || c.running > 0 {
        return;
    }
    // Pruned trials are results too, but a sweep whose every trial was stopped early
    // found nothing it can call best.
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
        best: s.best.as_ref().map(|b| (b.trial, b.value)),
        at: now,
    });
}

/// A user resumes a cancelled sweep. Nothing changes here: the store makes the
/// sweep running and its cancelled units pending ([`Action::SweepResumed`]), and the
/// event loop rebuilds the core from the store once that is committed, so that units,
/// searcher and scheduler come back exactly as after a restart. Returns the state the
/// sweep will have.
pub fn on_sweep_resumed(
    core: &Core,
    out: &mut impl Outbox,
    sid: &SweepId,
) -> Result<SweepState, CoreError> {
    let s = core
        .sweeps
        .get(sid)
        .ok_or_else(|| CoreError::UnknownSweep(sid.clone()))?;
    match s.state {
        SweepState::Running => Ok(SweepState::Running),
        SweepState::Completed => Err(CoreError::NotResumable(
            sid.clone(),
            "it completed; submit it again to run it again",
        )),
        SweepState::Failed => Err(CoreError::NotResumable(
            sid.clone(),
            "every trial failed; fix the cause and submit it again",
        )),
        SweepState::Cancelled => {
            // A scan's Hessian rounds build on the Lanczos state of the rounds before,
            // which ended with the sweep: its tiles, curvature points and curve run again,
            // an unfinished Hessian does not.
            let before = match s.spec.landscape.as_ref() {
                Some(l) => l.hessian_base() as u32,
                None => u32::MAX,
            };
            out.send(Action::SweepResumed {
                sweep: sid.clone(),
                before,
            });
            Ok(SweepState::Running)
        }
    }
}

/// A user adds `trials` trials to a search (`ridgeline extend`) and configurations to
/// run next (`ridgeline enqueue`, each one trial more), whether it runs or has ended: its
/// spec grows (`num_samples`; `queued`, numbered after every trial generated or given so
/// far), the store makes it running ([`Action::SweepExtended`]) and the core is rebuilt
/// from the store once that is committed, the searcher continuing from its trials.
/// Returns its units' total.
pub fn on_sweep_extended(
    core: &Core,
    out: &mut impl Outbox,
    sid: &SweepId,
    trials: u32,
    enqueue: Vec<Params>,
) -> Result<u32, CoreError> {
    let s = core
        .sweeps
        .get(sid)
        .ok_or_else(|| CoreError::UnknownSweep(sid.clone()))?;
    let no = |why: &str| Err(CoreError::NotExtendable(sid.clone(), why.to_owned()));
    if s.spec.kind != ridgeline_common::spec::SweepKind::Search {
        return no("a landscape scan's units are its grid; submit a larger scan");
    }
    if s.spec.search.algorithm == ridgeline_common::spec::Algorithm::Grid {
        return no("a grid's trials are its points; submit a larger grid");
    }
    if s.spec.search.algorithm == ridgeline_common::spec::Algorithm::Pbt {
        // Its trials are (member, round) pairs: more of them would change the population.
        return no("a PBT sweep's trials are its members' rounds; submit one with more rounds");
    }
    if trials == 0 && enqueue.is_empty() {
        return Err(CoreError::Invalid(
            "trials".into(),
            "expected at least one trial or configuration".into(),
        ));
    }
    let mut spec = (*s.spec).clone();
    let search = &mut spec.search;
    for (i, p) in enqueue.iter().enumerate() {
        search
            .validate_given(&format!("configuration {i}"), p)
            .map_err(|(f, r)| CoreError::Invalid(f, r))?;
    }
    let next = s
        .next_trial
        .max(search.enqueue.len() as u32)
        .max(search.queued.keys().next_back().map_or(0, |k| k + 1));
    for (k, p) in (next..).zip(enqueue) {
        search.queued.insert(k, p);
    }
    let added = u64::from(trials) + search.queued.len() as u64 - s.spec.search.queued.len() as u64;
    search.num_samples = u32::try_from(u64::from(search.num_samples) + added)
        .map_err(|_| CoreError::Invalid("trials".into(), "more than 2^32 trials".into()))?;
    let total = total_of(&spec);
    out.send(Action::SweepExtended {
        sweep: sid.clone(),
        spec: Arc::new(spec),
        total,
    });
    Ok(total)
}

/// A user cancels a sweep: queued units are cancelled, running ones are stopped on
/// their workers, and nothing more is leased. Costs O(units in flight): trials never
/// generated are only counted.
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
    let never = s.counts.total - s.next_trial;
    s.counts.cancelled += never;
    s.counts.pending -= never;
    s.pending.clear();
    s.parked.clear();
    let live = std::mem::take(&mut s.live);
    core.order.retain(|x| x != sid);
    for uid in live {
        let u = core.units.remove(&uid).expect("live units exist");
        let s = core.sweeps.get_mut(sid).expect("checked above");
        if u.state == UnitState::Running {
            s.counts.running -= 1;
        } else {
            s.counts.pending -= 1;
        }
        s.counts.cancelled += 1;
        if let Some(w) = u.worker.as_ref().and_then(|w| core.workers.get_mut(w)) {
            w.units.remove(&uid);
            w.to_cancel.insert(uid);
        }
        out.send(cancelled(uid, sid, u.trial, "sweep cancelled".into(), now));
    }
    let s = &core.sweeps[sid];
    out.send(Action::SweepFinished {
        sweep: sid.clone(),
        state: SweepState::Cancelled,
        best: s.best.as_ref().map(|b| (b.trial, b.value)),
        at: now,
    });
    Ok(SweepState::Cancelled)
}

/// A user deletes a sweep: a running one is cancelled first (its workers are told to
/// stop), then it leaves the core and the store.
pub fn on_sweep_deleted(
    core: &mut Core,
    out: &mut impl Outbox,
    sid: &SweepId,
    now: Millis,
) -> Result<(), CoreError> {
    on_cancel(core, out, sid, now)?;
    core.sweeps.remove(sid);
    out.send(Action::SweepDeleted { sweep: sid.clone() });
    Ok(())
}
