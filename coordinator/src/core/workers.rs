//! Events from workers: registration, leases, heartbeats, progress and results, and the
//! passing of time that expires leases and workers.

use std::collections::BTreeSet;

use ridgeline_common::ids::{SweepId, UnitId, WorkerId};

use super::*;

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

pub(super) fn requeue(
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
