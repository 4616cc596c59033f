//! What the core's state looks like as gauges: computed on demand from the core (which
//! after a restart is rebuilt from the store), never accumulated, so they cannot drift.

use std::collections::VecDeque;

use ridgeline_common::landscape::ScanUnit;
use ridgeline_common::spec::{SweepKind, SweepSpec};

use super::*;

/// Throughput is measured over this much recent time.
pub const RATE_WINDOW_MS: Millis = 60_000;

/// Finishes of a sweep's units in the last [`RATE_WINDOW_MS`], in one-second buckets:
/// memory is bounded by the window, not by the throughput.
#[derive(Clone, Debug)]
pub(super) struct Rate {
    /// When counting started (the sweep's creation, or the coordinator's restart).
    since: Millis,
    /// `(second, units, items)`, oldest first.
    buckets: VecDeque<(u64, u32, u64)>,
}

impl Rate {
    pub(super) fn new(now: Millis) -> Self {
        Rate {
            since: now,
            buckets: VecDeque::new(),
        }
    }

    /// One unit finished, worth `items` trials or grid points.
    pub(super) fn record(&mut self, now: Millis, items: u64) {
        let sec = now / 1000;
        match self.buckets.back_mut() {
            Some((s, units, n)) if *s == sec => {
                *units += 1;
                *n += items;
            }
            _ => self.buckets.push_back((sec, 1, items)),
        }
        while self
            .buckets
            .front()
            .is_some_and(|(s, ..)| (s + 1) * 1000 + RATE_WINDOW_MS <= now)
        {
            self.buckets.pop_front();
        }
    }

    /// `(units, items)` per second over the window (or over the time since counting
    /// started, when that is shorter).
    fn per_second(&self, now: Millis) -> (f64, f64) {
        let from = now.saturating_sub(RATE_WINDOW_MS);
        let (units, items) = self
            .buckets
            .iter()
            .filter(|(s, ..)| (s + 1) * 1000 > from)
            .fold((0u64, 0u64), |(u, i), (_, du, di)| {
                (u + u64::from(*du), i + di)
            });
        // At least a second, so that the first finish does not read as a huge rate.
        let span = now.saturating_sub(self.since).clamp(1000, RATE_WINDOW_MS) as f64 / 1000.0;
        (units as f64 / span, items as f64 / span)
    }
}

/// What one finished unit is worth: a trial, or a scan tile's grid points (a Hessian
/// unit evaluates no grid point).
pub(super) fn items_of(spec: &SweepSpec, trial: u32) -> u64 {
    match (&spec.kind, &spec.landscape) {
        (SweepKind::Landscape, Some(l)) => match l.unit(trial as usize) {
            ScanUnit::Tile(t) => l.tile_range(t).len() as u64,
            ScanUnit::Hvp { .. } | ScanUnit::Curve | ScanUnit::Curvature(_) => 0,
        },
        _ => 1,
    }
}

/// The gauges of one sweep.
#[derive(Clone, Debug, PartialEq)]
pub struct SweepGauges {
    /// Its id.
    pub id: SweepId,
    /// `search` or `landscape`.
    pub kind: &'static str,
    /// Its state.
    pub state: SweepState,
    /// Units by state.
    pub counts: Counts,
    /// Final units over all units, 0 to 1.
    pub progress: f64,
    /// Seconds until every unit is final at the recent rate; `None` while nothing has
    /// finished recently (no rate to extrapolate), 0 once the sweep ended.
    pub eta_s: Option<f64>,
    /// Trials (a search) or grid points (a scan) finished per second, recently.
    pub throughput: f64,
    /// The sweep's metric and its best value so far.
    pub best: Option<(String, f64)>,
    /// Several objectives: the hypervolume of the Pareto front so far.
    pub hypervolume: Option<f64>,
}

/// Everything the coordinator exports as gauges.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Gauges {
    /// Sweeps by state, every state present.
    pub sweeps_by_state: Vec<(SweepState, u32)>,
    /// Running sweeps, and sweeps that ended less than the retention ago.
    pub sweeps: Vec<SweepGauges>,
    /// Registered workers running nothing.
    pub workers_idle: u32,
    /// Registered workers running at least one unit.
    pub workers_busy: u32,
    /// Slots of all registered workers.
    pub slots: u32,
    /// Slots running a unit.
    pub slots_busy: u32,
}

/// The name of a sweep kind as a label.
pub fn kind_label(spec: &SweepSpec) -> &'static str {
    match spec.kind {
        SweepKind::Search => "search",
        SweepKind::Landscape => "landscape",
    }
}

impl Core {
    /// The gauges at `now`. Sweeps that ended more than `retention_ms` ago are left out,
    /// so their series disappear and a long-lived coordinator's exposition stays small.
    pub fn gauges(&self, now: Millis, retention_ms: u64) -> Gauges {
        let states = [
            SweepState::Running,
            SweepState::Completed,
            SweepState::Failed,
            SweepState::Cancelled,
        ];
        let mut g = Gauges {
            sweeps_by_state: states.iter().map(|s| (*s, 0)).collect(),
            ..Gauges::default()
        };
        let mut ids: Vec<&SweepId> = self.sweeps.keys().collect();
        ids.sort();
        for id in ids {
            let s = &self.sweeps[id];
            if let Some(e) = g.sweeps_by_state.iter_mut().find(|(st, _)| *st == s.state) {
                e.1 += 1;
            }
            if s.finished
                .is_some_and(|f| now.saturating_sub(f) > retention_ms)
            {
                continue;
            }
            let c = s.counts;
            let done = c.completed + c.failed + c.diverged + c.cancelled + c.pruned;
            let (units_per_s, items_per_s) = s.rate.per_second(now);
            let eta_s = if s.state != SweepState::Running {
                Some(0.0)
            } else if units_per_s > 0.0 {
                Some(f64::from(c.total.saturating_sub(done)) / units_per_s)
            } else {
                None
            };
            g.sweeps.push(SweepGauges {
                id: id.clone(),
                kind: kind_label(&s.spec),
                state: s.state,
                counts: c,
                progress: if c.total == 0 {
                    1.0
                } else {
                    f64::from(done) / f64::from(c.total)
                },
                eta_s,
                throughput: items_per_s,
                best: s
                    .best
                    .as_ref()
                    .map(|b| (s.spec.metric().to_owned(), b.value)),
                hypervolume: s.front.as_ref().map(Front::hypervolume),
            });
        }
        for w in self.workers.values() {
            let busy = w.units.len() as u32;
            if busy > 0 {
                g.workers_busy += 1;
            } else {
                g.workers_idle += 1;
            }
            g.slots += w.slots;
            g.slots_busy += busy.min(w.slots);
        }
        g
    }
}
