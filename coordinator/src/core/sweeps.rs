//! Events of a sweep's life: submitted, restored after a restart, gated units released
//! or abandoned, units finished, cancelled.

use std::collections::VecDeque;
use std::sync::Arc;

use ridgeline_common::ids::{SweepId, UnitId, WorkerId};
use ridgeline_common::spec::{Mode, SweepSpec};

use super::*;
use crate::search::searcher_for;

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

#[allow(clippy::too_many_arguments)]
pub(super) fn finish_unit(
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

pub(super) fn maybe_finish(core: &mut Core, out: &mut impl Outbox, sid: &SweepId, now: Millis) {
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
