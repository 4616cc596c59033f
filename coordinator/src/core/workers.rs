//! Events from workers: registration, leases, heartbeats, progress and results, and the
//! passing of time that expires leases and workers.

use std::collections::BTreeSet;

use ridgeline_common::ids::{SweepId, UnitId, WorkerId};

use super::sweeps::{Ending, score};
use super::*;
use crate::schedulers::Decision;

/// The number in a worker id `w{n}-{name}`.
fn worker_number(id: &WorkerId) -> Option<u64> {
    id.as_str()
        .strip_prefix('w')?
        .split('-')
        .next()?
        .parse()
        .ok()
}

/// A worker registered. Returns its id.
///
/// A worker that registers again (its connection broke, its coordinator restarted, or
/// it was declared lost) asks for its old id back with `resume`, and gets it when this
/// database gave that id out: its leases and late results stay its own. If the id is
/// still registered (a connection blip), it is the same worker coming back and keeps
/// the units it holds. Otherwise a fresh id is made from a counter that continues the
/// stored numbering: ids are never given out twice.
pub fn on_worker_registered(
    core: &mut Core,
    out: &mut impl Outbox,
    info: WorkerInfo,
    resume: Option<WorkerId>,
    now: Millis,
) -> WorkerId {
    let resumable = resume.filter(|r| worker_number(r).is_some_and(|n| n < core.next_worker));
    if let Some(w) = resumable.as_ref().and_then(|r| core.workers.get_mut(r)) {
        w.slots = info.slots.max(1);
        w.last_seen = now;
        let id = resumable.expect("checked above");
        out.send(Action::WorkerRegistered {
            worker: id.clone(),
            info,
            at: now,
        });
        return id;
    }
    let id = resumable.unwrap_or_else(|| {
        let host: String = info
            .name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .take(32)
            .collect();
        let id = WorkerId(format!("w{}-{}", core.next_worker, host));
        core.next_worker += 1;
        id
    });
    core.workers.insert(
        id.clone(),
        Worker {
            secret: None,
            slots: info.slots.max(1),
            last_seen: now,
            units: BTreeSet::new(),
            to_cancel: BTreeSet::new(),
        },
    );
    out.send(Action::WorkerRegistered {
        worker: id.clone(),
        info,
        at: now,
    });
    id
}

/// Sets the secret of a registered worker (see [`Action::WorkerSecret`]).
pub fn on_worker_secret(core: &mut Core, out: &mut impl Outbox, worker: &WorkerId, sha256: String) {
    if let Some(w) = core.workers.get_mut(worker) {
        if w.secret.as_ref() != Some(&sha256) {
            w.secret = Some(sha256.clone());
            out.send(Action::WorkerSecret {
                worker: worker.clone(),
                sha256,
            });
        }
    }
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
    s.searcher.started(trial, &params);
    let uid = UnitId(core.next_unit);
    core.next_unit += 1;
    s.live.insert(uid);
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
            interrupted: 0,
            leases: Vec::new(),
            worker: None,
            holders: Vec::new(),
            deadline: 0,
            started: now,
        },
    );
    Some(uid)
}

/// Gives a unit (running or not) to `worker`, which becomes its holder.
fn hold<'a>(core: &'a mut Core, uid: UnitId, worker: &WorkerId, now: Millis) -> &'a mut Unit {
    let u = core.units.get_mut(&uid).expect("caller checked");
    if u.state == UnitState::Pending {
        let s = core.sweeps.get_mut(&u.sweep).expect("unit's sweep exists");
        s.counts.pending -= 1;
        s.counts.running += 1;
    }
    u.state = UnitState::Running;
    u.worker = Some(worker.clone());
    if !u.holders.contains(worker) {
        u.holders.push(worker.clone());
    }
    u.deadline = now + core.cfg.lease_ttl_ms;
    u.started = now;
    core.workers
        .get_mut(worker)
        .expect("caller checked the worker")
        .units
        .insert(uid);
    u
}

fn lease(
    core: &mut Core,
    out: &mut impl Outbox,
    uid: UnitId,
    worker: &WorkerId,
    now: Millis,
) -> Lease {
    let u = hold(core, uid, worker, now);
    u.attempts += 1;
    u.leases.push((worker.clone(), u.attempts));
    let (sweep, trial, params, attempt) = (u.sweep.clone(), u.trial, u.params.clone(), u.attempts);
    out.send(Action::UnitLeased {
        unit: uid,
        worker: worker.clone(),
        attempt,
        resumes: super::sweeps::resumes(&core.sweeps[&sweep].spec),
        at: now,
    });
    Lease {
        unit: uid,
        spec: core.sweeps[&sweep].spec.clone(),
        sweep,
        trial,
        params,
        attempt,
    }
}

/// A worker is alive and runs `running`. Renews the leases it holds on those units, and
/// only those, and returns the units it must stop.
///
/// A lease the worker does not speak of is left to lapse: it may still be on its way to
/// the worker (its deadline, set when it was granted, covers that), or the worker has
/// stopped or forgotten the unit, which must then run elsewhere rather than be renewed
/// forever by a worker that is alive but idle.
pub fn on_heartbeat(
    core: &mut Core,
    worker: &WorkerId,
    running: &[UnitId],
    now: Millis,
) -> Result<Vec<UnitId>, CoreError> {
    let w = core
        .workers
        .get_mut(worker)
        .ok_or_else(|| CoreError::UnknownWorker(worker.clone()))?;
    w.last_seen = now;
    for uid in running.iter().filter(|u| w.units.contains(u)) {
        if let Some(u) = core.units.get_mut(uid) {
            u.deadline = now + core.cfg.lease_ttl_ms;
        }
    }
    Ok(std::mem::take(&mut w.to_cancel).into_iter().collect())
}

/// A worker says which units it is running (in its heartbeat). After a coordinator
/// restart those units were queued again: the worker re-adopts the ones still pending
/// that it held before (no work is repeated, no attempt spent), and is told to stop the
/// rest: units that finished meanwhile, that another worker now holds, or that it never
/// held, and any beyond its slots.
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
        let adopted = match adoptable(core, worker, uid) {
            Adoption::Held => continue,
            Adoption::Yes if free > 0 => {
                free -= 1;
                adopt(core, out, worker, uid, now);
                true
            }
            Adoption::Yes | Adoption::No => false,
        };
        if !adopted {
            core.workers
                .get_mut(worker)
                .expect("checked above")
                .to_cancel
                .insert(uid);
        }
    }
}

/// A worker reports units that ended, whose outcomes come in the same report (after
/// their last progress). Those it held before a restart are adopted back, whatever its
/// free slots (the outcome releases them at once), so that their last progress is
/// taken: a worker whose report also carries the units it started since holds more
/// units, for a moment, than it has slots.
pub fn on_units_reported_ended(
    core: &mut Core,
    out: &mut impl Outbox,
    worker: &WorkerId,
    ended: &[UnitId],
    now: Millis,
) {
    if !core.workers.contains_key(worker) {
        return;
    }
    for &uid in ended {
        if adoptable(core, worker, uid) == Adoption::Yes {
            adopt(core, out, worker, uid, now);
        }
    }
}

#[derive(PartialEq)]
enum Adoption {
    /// The worker holds it already.
    Held,
    /// Pending in a running sweep, and the worker held it before.
    Yes,
    No,
}

fn adoptable(core: &Core, worker: &WorkerId, uid: UnitId) -> Adoption {
    match core.units.get(&uid) {
        Some(u) if u.worker.as_ref() == Some(worker) => Adoption::Held,
        Some(u)
            if u.state == UnitState::Pending
                && u.holders.contains(worker)
                && core.sweeps[&u.sweep].state == SweepState::Running =>
        {
            Adoption::Yes
        }
        _ => Adoption::No,
    }
}

/// Gives a pending unit back to the worker that held it: adoption continues the
/// worker's attempt.
fn adopt(core: &mut Core, out: &mut impl Outbox, worker: &WorkerId, uid: UnitId, now: Millis) {
    let u = hold(core, uid, worker, now);
    let attempt = u.attempts;
    if !u.leases.contains(&(worker.clone(), attempt)) {
        u.leases.push((worker.clone(), attempt));
    }
    let sweep = u.sweep.clone();
    core.sweeps
        .get_mut(&sweep)
        .expect("unit's sweep exists")
        .unqueue(uid);
    out.send(Action::UnitAdopted {
        unit: uid,
        worker: worker.clone(),
    });
}

/// The sweep and trial of a live unit, if `worker` holds or held a lease on it.
pub fn unit_held_by(core: &Core, unit: UnitId, worker: &WorkerId) -> Option<(SweepId, u32)> {
    core.units
        .get(&unit)
        .filter(|u| u.holders.contains(worker))
        .map(|u| (u.sweep.clone(), u.trial))
}

/// The sweep and trial of a live unit, if `worker` holds or held its `attempt` (a log
/// chunk of that attempt is the unit's).
pub fn attempt_held_by(
    core: &Core,
    unit: UnitId,
    worker: &WorkerId,
    attempt: u32,
) -> Option<(SweepId, u32)> {
    core.units
        .get(&unit)
        .filter(|u| u.leases.iter().any(|(w, a)| w == worker && *a == attempt))
        .map(|u| (u.sweep.clone(), u.trial))
}

/// Units a worker must stop, without renewing anything (for report replies).
pub fn take_cancellations(core: &mut Core, worker: &WorkerId) -> Vec<UnitId> {
    core.workers
        .get_mut(worker)
        .map(|w| std::mem::take(&mut w.to_cancel).into_iter().collect())
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
    now: Millis,
) {
    let Some(u) = core.units.get(&unit) else {
        return;
    };
    if u.state != UnitState::Running || u.worker.as_ref() != Some(worker) {
        return;
    }
    let (sid, trial, started) = (u.sweep.clone(), u.trial, u.started);
    out.send(Action::Progress {
        unit,
        step,
        metrics: metrics.clone(),
    });
    let s = core.sweeps.get_mut(&sid).expect("unit's sweep exists");
    let (metric, mode) = (s.spec.metric(), s.spec.mode());
    // A non-finite value is the worker's to judge (the trial diverges).
    let Some(v) = metrics
        .iter()
        .find(|(n, _)| n == metric)
        .map(|(_, v)| *v)
        .filter(|v| v.is_finite())
    else {
        return;
    };
    let Some(sch) = &mut s.scheduler else {
        return;
    };
    if let Decision::Prune(p) = sch.on_report(trial, step, score(mode, v)) {
        // Scores are "larger is better"; the text speaks in the metric's own values.
        let why = format!(
            "{}: {metric} = {v} at step {step} is worse than {} = {} at step {} ({} trial(s))",
            p.rule,
            p.what,
            score(mode, p.threshold),
            p.at,
            p.of
        );
        prune(core, out, unit, why, metrics, step, started, now);
    }
}

/// The scheduler stopped a running unit: it ends `pruned` with the metrics of its last
/// report (its history is the progress stored so far), its worker is told to stop it,
/// and its slot is free for the next unit at once.
#[allow(clippy::too_many_arguments)]
fn prune(
    core: &mut Core,
    out: &mut impl Outbox,
    uid: UnitId,
    why: String,
    metrics: Vec<(String, f64)>,
    step: u32,
    started: Millis,
    now: Millis,
) {
    let worker = core.units[&uid].worker.clone();
    if let Some(w) = worker.as_ref().and_then(|w| core.workers.get_mut(w)) {
        w.to_cancel.insert(uid);
    }
    release(core, uid);
    let sid = core.units[&uid].sweep.clone();
    let s = core.sweeps.get_mut(&sid).expect("unit's sweep exists");
    s.unqueue(uid);
    s.counts.pending -= 1;
    let end = Ending {
        state: UnitState::Pruned,
        metrics,
        error: why,
        duration_s: now.saturating_sub(started) as f64 / 1000.0,
        worker,
        history: None,
        pruned_at: Some(step),
    };
    finish_unit(core, out, uid, end, now);
}

/// What a worker's final metrics say, whatever state it claimed: a non-finite value
/// means the unit diverged; an accuracy outside [0, 1] is not a result at all.
fn judge(o: &mut Outcome) {
    if o.state != UnitState::Completed {
        return;
    }
    if let Some((n, v)) = o.metrics.iter().find(|(_, v)| !v.is_finite()) {
        o.state = UnitState::Diverged;
        o.error = format!("final metric {n} is {v}");
        return;
    }
    if let Some((n, v)) = o
        .metrics
        .iter()
        .find(|(n, v)| n.ends_with("accuracy") && !(0.0..=1.0).contains(v))
    {
        o.state = UnitState::Failed;
        o.error = format!("refused: final metric {n} = {v} is outside [0, 1]");
    }
    if !o.duration_s.is_finite() || o.duration_s < 0.0 {
        o.duration_s = 0.0;
    }
}

/// A worker reports that a unit ended.
///
/// Only a registered worker that holds the unit's lease, or held an earlier lease of it
/// (a late result from a worker presumed dead), may finish it; results are idempotent
/// (the first final outcome wins) and a late winner makes the current holder stop.
pub fn on_unit_finished(
    core: &mut Core,
    out: &mut impl Outbox,
    worker: &WorkerId,
    mut outcome: Outcome,
    now: Millis,
) -> Result<Verdict, CoreError> {
    if !core.workers.contains_key(worker) {
        return Err(CoreError::UnknownWorker(worker.clone()));
    }
    let uid = outcome.unit;
    let Some(u) = core.units.get(&uid) else {
        return Ok(if uid.0 < core.next_unit {
            Verdict::AlreadyFinal
        } else {
            Verdict::Refused(format!("unit {uid} does not exist"))
        });
    };
    if !u.holders.contains(worker) {
        return Ok(Verdict::Refused(format!(
            "unit {uid} was never leased to worker {worker}"
        )));
    }
    judge(&mut outcome);
    let holder = u.worker.clone();
    let attempts = u.attempts;
    let counted = u.attempts.saturating_sub(u.interrupted);
    let sid = u.sweep.clone();
    if let Some(h) = holder.as_ref().filter(|h| *h != worker) {
        if let Some(w) = core.workers.get_mut(h) {
            w.to_cancel.insert(uid);
        }
    }
    let s = &core.sweeps[&sid];
    let retry = outcome.state == UnitState::Failed
        && !outcome.permanent
        && counted < core.cfg.max_attempts
        && s.state == SweepState::Running;
    if retry {
        let reason = format!("attempt {attempts} failed: {}", outcome.error);
        release(core, uid);
        let s = core.sweeps.get_mut(&sid).expect("checked above");
        // A unit held back after a restart is queued now, once.
        s.unqueue(uid);
        // Retries go first: they are the oldest work of the sweep.
        s.pending.push_front(uid);
        let interrupted = core.units[&uid].interrupted;
        out.send(Action::UnitRequeued {
            unit: uid,
            attempts,
            interrupted,
            reason,
            cause: RequeueCause::AttemptFailed,
        });
        return Ok(Verdict::Accepted);
    }
    let state = match outcome.state {
        UnitState::Completed | UnitState::Diverged | UnitState::Failed => outcome.state,
        // Workers only report the three above; anything else is treated as a failure.
        _ => UnitState::Failed,
    };
    release(core, uid);
    let s = core.sweeps.get_mut(&sid).expect("checked above");
    s.unqueue(uid);
    s.counts.pending -= 1;
    let end = Ending {
        state,
        metrics: outcome.metrics,
        error: outcome.error,
        duration_s: outcome.duration_s,
        worker: Some(worker.clone()),
        history: outcome.history,
        pruned_at: None,
    };
    finish_unit(core, out, uid, end, now);
    Ok(Verdict::Accepted)
}

/// Takes a unit from its holder (if any) and makes it pending again.
fn release(core: &mut Core, uid: UnitId) {
    let u = core.units.get_mut(&uid).expect("caller checked");
    if let Some(w) = u.worker.take().and_then(|w| core.workers.get_mut(&w)) {
        w.units.remove(&uid);
    }
    if u.state == UnitState::Running {
        u.state = UnitState::Pending;
        let s = core.sweeps.get_mut(&u.sweep).expect("unit's sweep exists");
        s.counts.running -= 1;
        s.counts.pending += 1;
    }
}

/// Time passed: leases past their deadline go back to the queue (or fail after
/// `max_attempts`), workers silent for longer than a lease are dropped, and units held
/// back after a restart that nobody re-adopted are queued.
pub fn on_tick(core: &mut Core, out: &mut impl Outbox, now: Millis) {
    // Only running sweeps hold units back.
    for sid in &core.order {
        let Some(s) = core.sweeps.get_mut(sid) else {
            continue;
        };
        if s.parked.iter().any(|(_, until)| *until <= now) {
            let (due, wait): (Vec<_>, Vec<_>) = s.parked.iter().partition(|(_, t)| *t <= now);
            s.parked = wait;
            // They are the oldest work of the sweep: first in the queue.
            for (uid, _) in due.into_iter().rev() {
                s.pending.push_front(uid);
                // The lease was lost to the coordinator (a restart, or a commit that
                // failed), not to the unit: it does not count against max_attempts,
                // and is counted apart so that results can say so.
                let u = core.units.get_mut(&uid).expect("parked units are live");
                u.interrupt();
                out.send(Action::UnitRequeued {
                    unit: uid,
                    attempts: u.attempts,
                    interrupted: u.interrupted,
                    reason: "coordinator restarted while it was leased".into(),
                    cause: RequeueCause::CoordinatorRestarted,
                });
            }
        }
    }
    let lost: Vec<WorkerId> = core
        .workers
        .iter()
        .filter(|(_, w)| now > w.last_seen + core.cfg.lease_ttl_ms)
        .map(|(id, _)| id.clone())
        .collect();
    for id in lost {
        drop_worker(core, out, &id, RequeueCause::WorkerLost, now);
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
        requeue(
            core,
            out,
            uid,
            "lease expired",
            RequeueCause::LeaseExpired,
            now,
        );
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
    drop_worker(core, out, worker, RequeueCause::WorkerLeft, now);
}

fn drop_worker(
    core: &mut Core,
    out: &mut impl Outbox,
    id: &WorkerId,
    cause: RequeueCause,
    now: Millis,
) {
    let Some(w) = core.workers.get(id) else {
        return;
    };
    let reason = if cause == RequeueCause::WorkerLeft {
        "deregistered"
    } else {
        "missed heartbeats"
    };
    for uid in w.units.clone() {
        requeue(core, out, uid, &format!("worker {id} {reason}"), cause, now);
    }
    core.workers.remove(id);
    out.send(Action::WorkerGone {
        worker: id.clone(),
        reason: reason.to_owned(),
    });
}

/// A running unit lost its lease: back to the queue, or failed after `max_attempts`.
fn requeue(
    core: &mut Core,
    out: &mut impl Outbox,
    uid: UnitId,
    reason: &str,
    cause: RequeueCause,
    now: Millis,
) {
    let max_attempts = core.cfg.max_attempts;
    let Some(u) = core.units.get_mut(&uid) else {
        return;
    };
    if u.state != UnitState::Running {
        return;
    }
    if let Some(w) = u.worker.as_ref().and_then(|w| core.workers.get_mut(w)) {
        w.to_cancel.insert(uid);
    }
    if !cause.spends_attempt() {
        // The worker handed the unit back: that lease was not the unit's attempt. Its
        // number stays taken (logs, RIDGELINE_ATTEMPT), so it counts as interrupted.
        u.interrupt();
    }
    if matches!(cause, RequeueCause::LeaseExpired | RequeueCause::WorkerLost) {
        out.send(Action::LeaseExpired { unit: uid });
    }
    let attempts = u.attempts;
    let counted = u.attempts.saturating_sub(u.interrupted);
    let sid = u.sweep.clone();
    release(core, uid);
    if counted >= max_attempts {
        let msg = format!("{reason} on attempt {attempts} of {max_attempts}");
        core.sweeps
            .get_mut(&sid)
            .expect("unit's sweep exists")
            .counts
            .pending -= 1;
        finish_unit(core, out, uid, Ending::bare(UnitState::Failed, msg), now);
        return;
    }
    core.sweeps
        .get_mut(&sid)
        .expect("unit's sweep exists")
        .pending
        .push_front(uid);
    let interrupted = core.units[&uid].interrupted;
    out.send(Action::UnitRequeued {
        unit: uid,
        attempts,
        interrupted,
        reason: reason.to_owned(),
        cause,
    });
}
