//! The coordinator's Prometheus metrics: names, help texts, and the three ways they are
//! fed. Counters are derived from the core's committed [`Action`]s (so a batch whose
//! commit failed counts nothing), gauges are published from [`Core::gauges`] on every
//! tick (so after a restart they are whatever the store says), and RPC latencies come
//! from a tower layer around both gRPC services. docs/observability.md lists them all.

use std::task::{Context, Poll};
use std::time::Instant;

use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge};
use tonic::codegen::{BoxFuture, Service, http};

use crate::core::{Action, Core, Gauges, RequeueCause, UnitState, kind_label};
use ridgeline_common::telemetry::Buckets;

/// Sweeps by state.
pub const SWEEPS: &str = "ridgeline_sweeps";
/// Units of a sweep by state.
pub const SWEEP_UNITS: &str = "ridgeline_sweep_units";
/// Final units over all units of a sweep.
pub const SWEEP_PROGRESS: &str = "ridgeline_sweep_progress_ratio";
/// Seconds until a sweep ends at its recent rate.
pub const SWEEP_ETA: &str = "ridgeline_sweep_eta_seconds";
/// A sweep's best metric value so far.
pub const SWEEP_BEST: &str = "ridgeline_sweep_best_value";
/// The hypervolume of a multi-objective sweep's Pareto front.
pub const SWEEP_HYPERVOLUME: &str = "ridgeline_sweep_hypervolume";
/// Trials or grid points a sweep finishes per second.
pub const SWEEP_THROUGHPUT: &str = "ridgeline_sweep_throughput_per_second";
/// Registered workers by state.
pub const WORKERS: &str = "ridgeline_workers";
/// Slots of registered workers.
pub const SLOTS: &str = "ridgeline_slots";
/// Slots running a unit.
pub const SLOTS_BUSY: &str = "ridgeline_slots_busy";
/// Units that reached a final state.
pub const UNITS_FINISHED: &str = "ridgeline_units_finished_total";
/// Leases granted.
pub const LEASES_GRANTED: &str = "ridgeline_leases_granted_total";
/// Leases that lapsed.
pub const LEASES_EXPIRED: &str = "ridgeline_leases_expired_total";
/// Units put back in the queue.
pub const UNITS_REQUEUED: &str = "ridgeline_units_requeued_total";
/// Leases of a unit beyond its first attempt.
pub const RETRIES: &str = "ridgeline_retries_total";
/// Attempts that ended in a failure reported by the worker.
pub const ATTEMPTS_FAILED: &str = "ridgeline_attempts_failed_total";
/// Workers that registered.
pub const WORKERS_REGISTERED: &str = "ridgeline_workers_registered_total";
/// Workers dropped for missing heartbeats.
pub const WORKERS_LOST: &str = "ridgeline_workers_lost_total";
/// Sweeps submitted.
pub const SWEEPS_SUBMITTED: &str = "ridgeline_sweeps_submitted_total";
/// Bytes of files the coordinator wrote.
pub const ARTIFACT_BYTES: &str = "ridgeline_artifact_bytes_written_total";
/// Batches whose commit failed.
pub const COMMIT_FAILURES: &str = "ridgeline_store_commit_failures_total";
/// Latency of gRPC calls.
pub const RPC_DURATION: &str = "ridgeline_rpc_duration_seconds";
/// Latency of one SQLite transaction.
pub const COMMIT_DURATION: &str = "ridgeline_store_commit_duration_seconds";
/// Actions written by one transaction.
pub const COMMIT_ACTIONS: &str = "ridgeline_store_commit_actions";
/// Events waiting for the event loop.
pub const QUEUE_DEPTH: &str = "ridgeline_event_loop_queue_depth";
/// Events handled in one batch.
pub const BATCH_EVENTS: &str = "ridgeline_event_loop_batch_events";

const LATENCY: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const SIZES: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// Bucket boundaries of the coordinator's histograms.
pub const HISTOGRAMS: &[Buckets] = &[
    (RPC_DURATION, LATENCY),
    (COMMIT_DURATION, LATENCY),
    (COMMIT_ACTIONS, SIZES),
    (BATCH_EVENTS, SIZES),
];

/// The final states a unit can reach, as `outcome` labels.
const OUTCOMES: [UnitState; 5] = [
    UnitState::Completed,
    UnitState::Failed,
    UnitState::Diverged,
    UnitState::Cancelled,
    UnitState::Pruned,
];

const KINDS: [&str; 2] = ["search", "landscape"];

/// Describes every metric and creates the counters at zero, so that a dashboard shows
/// "0 expiries" rather than "no data" on a healthy cluster.
pub fn describe() {
    describe_gauge!(SWEEPS, "Sweeps known to the coordinator, by state.");
    describe_gauge!(
        SWEEP_UNITS,
        "Units of a sweep by state (pending includes units not generated yet)."
    );
    describe_gauge!(
        SWEEP_PROGRESS,
        "Fraction of a sweep's units in a final state, 0 to 1."
    );
    describe_gauge!(
        SWEEP_ETA,
        Unit::Seconds,
        "Seconds until every unit of a sweep is final, at the rate of the last minute; 0 once it ended."
    );
    describe_gauge!(
        SWEEP_BEST,
        "Best value so far of a sweep's metric (label metric), among completed trials."
    );
    describe_gauge!(
        SWEEP_HYPERVOLUME,
        "Hypervolume of a multi-objective search's Pareto front, from its reference point."
    );
    describe_gauge!(
        SWEEP_THROUGHPUT,
        "Trials (search) or grid points (landscape) finished per second over the last minute."
    );
    describe_gauge!(WORKERS, "Registered workers: idle or busy.");
    describe_gauge!(SLOTS, "Slots (units at once) of all registered workers.");
    describe_gauge!(SLOTS_BUSY, "Slots running a unit.");
    describe_counter!(
        UNITS_FINISHED,
        "Units that reached a final state, by sweep kind and outcome."
    );
    describe_counter!(LEASES_GRANTED, "Units leased to workers.");
    describe_counter!(
        LEASES_EXPIRED,
        "Leases that lapsed: the worker missed heartbeats or forgot the unit."
    );
    describe_counter!(UNITS_REQUEUED, "Units put back in the queue, by reason.");
    describe_counter!(RETRIES, "Leases of a unit after its first attempt.");
    describe_counter!(
        ATTEMPTS_FAILED,
        "Attempts that a worker reported failed (retried or not)."
    );
    describe_counter!(WORKERS_REGISTERED, "Worker registrations.");
    describe_counter!(WORKERS_LOST, "Workers dropped after missing heartbeats.");
    describe_counter!(SWEEPS_SUBMITTED, "Sweeps submitted, by kind.");
    describe_counter!(
        ARTIFACT_BYTES,
        Unit::Bytes,
        "Bytes of files written by the coordinator: checkpoints, tiles, surfaces, plots."
    );
    describe_counter!(
        COMMIT_FAILURES,
        "Batches whose files or SQLite transaction failed (nothing of them acknowledged)."
    );
    describe_histogram!(
        RPC_DURATION,
        Unit::Seconds,
        "gRPC call latency until the response starts, by method and status code."
    );
    describe_histogram!(
        COMMIT_DURATION,
        Unit::Seconds,
        "Time to write one batch: its files and its SQLite transaction."
    );
    describe_histogram!(COMMIT_ACTIONS, "Actions written by one SQLite transaction.");
    describe_gauge!(QUEUE_DEPTH, "Events waiting for the event loop.");
    describe_histogram!(
        BATCH_EVENTS,
        "Events handled by the event loop in one batch."
    );
    for kind in KINDS {
        for o in OUTCOMES {
            counter!(UNITS_FINISHED, "kind" => kind, "outcome" => o.as_str()).absolute(0);
        }
        counter!(SWEEPS_SUBMITTED, "kind" => kind).absolute(0);
    }
    for c in RequeueCause::ALL {
        counter!(UNITS_REQUEUED, "reason" => c.as_str()).absolute(0);
    }
    for name in [
        LEASES_GRANTED,
        LEASES_EXPIRED,
        RETRIES,
        ATTEMPTS_FAILED,
        WORKERS_REGISTERED,
        WORKERS_LOST,
        ARTIFACT_BYTES,
        COMMIT_FAILURES,
    ] {
        counter!(name).absolute(0);
    }
}

/// Counts what a committed batch did. `core` is the state after the batch (for the
/// kind of a finished unit's sweep).
pub fn record(actions: &[Action], core: &Core) {
    for a in actions {
        match a {
            Action::SweepCreated { spec, .. } => {
                counter!(SWEEPS_SUBMITTED, "kind" => kind_label(spec)).increment(1);
            }
            Action::UnitLeased { attempt, .. } => {
                counter!(LEASES_GRANTED).increment(1);
                if *attempt > 1 {
                    counter!(RETRIES).increment(1);
                }
            }
            Action::LeaseExpired { .. } => counter!(LEASES_EXPIRED).increment(1),
            Action::UnitRequeued { cause, .. } => {
                counter!(UNITS_REQUEUED, "reason" => cause.as_str()).increment(1);
                if *cause == RequeueCause::AttemptFailed {
                    counter!(ATTEMPTS_FAILED).increment(1);
                }
            }
            Action::UnitFinished {
                sweep,
                state,
                worker,
                ..
            } => {
                // A sweep deleted in the same batch is gone from the core already.
                let kind = core.sweep(sweep).map_or("unknown", |v| kind_label(&v.spec));
                counter!(UNITS_FINISHED, "kind" => kind, "outcome" => state.as_str()).increment(1);
                if *state == UnitState::Failed && worker.is_some() {
                    counter!(ATTEMPTS_FAILED).increment(1);
                }
            }
            Action::WorkerRegistered { .. } => counter!(WORKERS_REGISTERED).increment(1),
            Action::WorkerGone { reason, .. } if reason != "deregistered" => {
                counter!(WORKERS_LOST).increment(1);
            }
            _ => {}
        }
    }
}

/// The coordinator wrote `bytes` bytes of files.
pub fn wrote(bytes: u64) {
    counter!(ARTIFACT_BYTES).increment(bytes);
}

/// Sets every gauge from the core's state.
pub fn publish(g: &Gauges) {
    for (state, n) in &g.sweeps_by_state {
        gauge!(SWEEPS, "state" => state.as_str()).set(f64::from(*n));
    }
    for s in &g.sweeps {
        let (id, kind) = (s.id.to_string(), s.kind);
        let c = s.counts;
        for (state, n) in [
            ("pending", c.pending),
            ("running", c.running),
            ("completed", c.completed),
            ("failed", c.failed),
            ("diverged", c.diverged),
            ("cancelled", c.cancelled),
            ("pruned", c.pruned),
        ] {
            gauge!(SWEEP_UNITS, "sweep" => id.clone(), "kind" => kind, "state" => state)
                .set(f64::from(n));
        }
        gauge!(SWEEP_PROGRESS, "sweep" => id.clone(), "kind" => kind).set(s.progress);
        gauge!(SWEEP_THROUGHPUT, "sweep" => id.clone(), "kind" => kind).set(s.throughput);
        if let Some(eta) = s.eta_s {
            gauge!(SWEEP_ETA, "sweep" => id.clone(), "kind" => kind).set(eta);
        }
        if let Some((metric, v)) = &s.best {
            gauge!(SWEEP_BEST, "sweep" => id.clone(), "kind" => kind, "metric" => metric.clone())
                .set(*v);
        }
        if let Some(hv) = s.hypervolume {
            gauge!(SWEEP_HYPERVOLUME, "sweep" => id.clone(), "kind" => kind).set(hv);
        }
    }
    gauge!(WORKERS, "state" => "idle").set(f64::from(g.workers_idle));
    gauge!(WORKERS, "state" => "busy").set(f64::from(g.workers_busy));
    gauge!(SLOTS).set(f64::from(g.slots));
    gauge!(SLOTS_BUSY).set(f64::from(g.slots_busy));
}

/// The gRPC methods of both services: any other path is labelled `unknown`, so that a
/// client cannot create series at will.
const METHODS: [&str; 13] = [
    "Register",
    "LeaseUnits",
    "Report",
    "Heartbeat",
    "FetchBlob",
    "Deregister",
    "SubmitSweep",
    "GetStatus",
    "WatchSweep",
    "CancelSweep",
    "ListSweeps",
    "DeleteSweep",
    "GetResults",
];

fn method_label(path: &str) -> &'static str {
    let name = path.rsplit('/').next().unwrap_or_default();
    METHODS
        .iter()
        .find(|m| **m == name)
        .copied()
        .unwrap_or("unknown")
}

/// The name of a gRPC status code (`grpc-status` header; absent means OK so far: a
/// successful unary call puts its status in the trailers).
fn code_label(headers: &http::HeaderMap) -> &'static str {
    let code = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .unwrap_or(0);
    match tonic::Code::from_i32(code) {
        tonic::Code::Ok => "OK",
        tonic::Code::Cancelled => "CANCELLED",
        tonic::Code::Unknown => "UNKNOWN",
        tonic::Code::InvalidArgument => "INVALID_ARGUMENT",
        tonic::Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        tonic::Code::NotFound => "NOT_FOUND",
        tonic::Code::AlreadyExists => "ALREADY_EXISTS",
        tonic::Code::PermissionDenied => "PERMISSION_DENIED",
        tonic::Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        tonic::Code::FailedPrecondition => "FAILED_PRECONDITION",
        tonic::Code::Aborted => "ABORTED",
        tonic::Code::OutOfRange => "OUT_OF_RANGE",
        tonic::Code::Unimplemented => "UNIMPLEMENTED",
        tonic::Code::Internal => "INTERNAL",
        tonic::Code::Unavailable => "UNAVAILABLE",
        tonic::Code::DataLoss => "DATA_LOSS",
        tonic::Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// A tower layer that times every gRPC call (including those the token check refuses).
#[derive(Clone, Copy, Default)]
pub struct RpcMetricsLayer;

impl<S> tower_layer::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> RpcMetrics<S> {
        RpcMetrics { inner }
    }
}

/// The service [`RpcMetricsLayer`] wraps around the router.
#[derive(Clone)]
pub struct RpcMetrics<S> {
    inner: S,
}

impl<S, B, R> Service<http::Request<B>> for RpcMetrics<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = method_label(req.uri().path());
        let start = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let r = fut.await;
            let code = match &r {
                Ok(resp) => code_label(resp.headers()),
                Err(_) => "UNAVAILABLE",
            };
            metrics::histogram!(RPC_DURATION, "method" => method, "code" => code)
                .record(start.elapsed().as_secs_f64());
            r
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_methods_become_labels() {
        assert_eq!(
            method_label("/ridgeline.v1.WorkerService/LeaseUnits"),
            "LeaseUnits"
        );
        assert_eq!(method_label("/x.Y/DropTables"), "unknown");
        assert_eq!(method_label(""), "unknown");
    }

    #[test]
    fn status_codes_are_read_from_the_header() {
        let mut h = http::HeaderMap::new();
        assert_eq!(code_label(&h), "OK");
        h.insert("grpc-status", "16".parse().unwrap());
        assert_eq!(code_label(&h), "UNAUTHENTICATED");
    }
}
