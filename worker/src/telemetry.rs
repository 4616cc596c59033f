//! The worker's Prometheus metrics. Every series carries a `worker` label (its name):
//! the workers of `ridgeline run` share one process and one metrics port. Gauges are
//! published every few seconds by [`WorkerMetrics::sample`] from counts the unit
//! threads keep, so they never go stale while the worker lives; counters are bumped as
//! work is done.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Instant;

use candle_core::Device;
use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge};
use ridgeline_common::telemetry::{Buckets, host_memory_bytes};

/// Units running, by kind.
pub const UNITS_RUNNING: &str = "ridgeline_worker_units_running";
/// Slots of the worker.
pub const SLOTS: &str = "ridgeline_worker_slots";
/// 1 while registered with a coordinator.
pub const REGISTERED: &str = "ridgeline_worker_registered";
/// Wall time of a unit, by kind and outcome.
pub const UNIT_DURATION: &str = "ridgeline_worker_unit_duration_seconds";
/// Training epochs (built-in trials) and report lines (command trials) finished.
pub const EPOCHS: &str = "ridgeline_worker_training_epochs_total";
/// Landscape grid points evaluated.
pub const POINTS: &str = "ridgeline_worker_landscape_points_total";
/// Hessian-vector products computed.
pub const HVPS: &str = "ridgeline_worker_hvps_total";
/// Bytes fetched from the coordinator.
pub const FETCHED: &str = "ridgeline_worker_fetched_bytes_total";
/// Memory in use on the worker's device.
pub const DEVICE_USED: &str = "ridgeline_worker_device_memory_used_bytes";
/// Memory of the worker's device.
pub const DEVICE_CAPACITY: &str = "ridgeline_worker_device_memory_capacity_bytes";

/// Kinds of unit, as labels.
pub const KINDS: [&str; 5] = ["train", "command", "tile", "hvp", "curve"];

/// Bucket boundaries of the worker's histograms: units last from a second to hours.
pub const HISTOGRAMS: &[Buckets] = &[(
    UNIT_DURATION,
    &[
        0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
        14400.0,
    ],
)];

/// Describes every worker metric.
pub fn describe() {
    describe_gauge!(UNITS_RUNNING, "Units running on the worker, by kind.");
    describe_gauge!(SLOTS, "Units the worker runs at once.");
    describe_gauge!(
        REGISTERED,
        "1 while the worker is registered with a coordinator, else 0."
    );
    describe_histogram!(
        UNIT_DURATION,
        Unit::Seconds,
        "Wall time of a unit on the worker, by kind (train, command, tile, hvp) and outcome."
    );
    describe_counter!(
        EPOCHS,
        "Training epochs (built-in trials) and report lines (command trials) finished."
    );
    describe_counter!(POINTS, "Loss-landscape grid points evaluated.");
    describe_counter!(
        HVPS,
        "Hessian-vector products computed (each on the unit's data shard)."
    );
    describe_counter!(
        FETCHED,
        Unit::Bytes,
        "Bytes of sweep files (specs, checkpoints, directions, Hessian blocks) fetched."
    );
    describe_gauge!(
        DEVICE_USED,
        Unit::Bytes,
        "Memory in use on the worker's device (host memory for cpu)."
    );
    describe_gauge!(
        DEVICE_CAPACITY,
        Unit::Bytes,
        "Memory of the worker's device (host memory for cpu)."
    );
}

/// One worker's metrics; cheap to clone into unit threads.
#[derive(Clone)]
pub struct WorkerMetrics {
    name: String,
    running: Arc<[AtomicU32; KINDS.len()]>,
    registered: Arc<AtomicBool>,
}

/// Counts a unit as running until dropped.
pub struct RunningUnit {
    metrics: WorkerMetrics,
    kind: usize,
    start: Instant,
}

impl WorkerMetrics {
    /// Metrics labelled with the worker's name; counters start at zero.
    pub fn new(name: &str) -> Self {
        for c in [EPOCHS, POINTS, HVPS, FETCHED] {
            counter!(c, "worker" => name.to_owned()).absolute(0);
        }
        // Histograms are created empty too: Prometheus cannot see the increase of a
        // series in its first sample, so a series born with its first unit would hide
        // that unit from rate().
        for kind in KINDS {
            for outcome in ["completed", "failed"] {
                let _registered = metrics::histogram!(
                    UNIT_DURATION,
                    "worker" => name.to_owned(),
                    "kind" => kind,
                    "outcome" => outcome
                );
            }
        }
        WorkerMetrics {
            name: name.to_owned(),
            running: Arc::new(Default::default()),
            registered: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Marks the worker (un)registered.
    pub fn set_registered(&self, r: bool) {
        self.registered.store(r, Ordering::Relaxed);
    }

    /// A unit of `kind` (one of [`KINDS`]) starts.
    pub fn unit_started(&self, kind: &str) -> RunningUnit {
        let kind = KINDS.iter().position(|k| *k == kind).unwrap_or(0);
        self.running[kind].fetch_add(1, Ordering::Relaxed);
        RunningUnit {
            metrics: self.clone(),
            kind,
            start: Instant::now(),
        }
    }

    /// `n` training epochs finished.
    pub fn epochs(&self, n: u64) {
        counter!(EPOCHS, "worker" => self.name.clone()).increment(n);
    }

    /// `n` grid points evaluated.
    pub fn points(&self, n: u64) {
        counter!(POINTS, "worker" => self.name.clone()).increment(n);
    }

    /// `n` Hessian-vector products computed.
    pub fn hvps(&self, n: u64) {
        counter!(HVPS, "worker" => self.name.clone()).increment(n);
    }

    /// `n` bytes fetched from the coordinator.
    pub fn fetched(&self, n: u64) {
        counter!(FETCHED, "worker" => self.name.clone()).increment(n);
    }

    /// Publishes the gauges: called every few seconds while the worker runs.
    pub fn sample(&self, slots: u32, device: &Device, device_label: &str) {
        let w = self.name.clone();
        for (k, n) in KINDS.iter().zip(self.running.iter()) {
            gauge!(UNITS_RUNNING, "worker" => w.clone(), "kind" => *k)
                .set(f64::from(n.load(Ordering::Relaxed)));
        }
        gauge!(SLOTS, "worker" => w.clone()).set(f64::from(slots));
        let registered = if self.registered.load(Ordering::Relaxed) {
            1.0
        } else {
            0.0
        };
        gauge!(REGISTERED, "worker" => w.clone()).set(registered);
        if let Some((used, total)) = device_memory(device) {
            gauge!(DEVICE_USED, "worker" => w.clone(), "device" => device_label.to_owned())
                .set(used as f64);
            gauge!(DEVICE_CAPACITY, "worker" => w, "device" => device_label.to_owned())
                .set(total as f64);
        }
    }
}

impl RunningUnit {
    /// The unit ended with `outcome` (completed, failed, diverged, cancelled).
    pub fn finish(self, outcome: &'static str) {
        metrics::histogram!(
            UNIT_DURATION,
            "worker" => self.metrics.name.clone(),
            "kind" => KINDS[self.kind],
            "outcome" => outcome
        )
        .record(self.start.elapsed().as_secs_f64());
    }
}

impl Drop for RunningUnit {
    fn drop(&mut self) {
        self.metrics.running[self.kind].fetch_sub(1, Ordering::Relaxed);
    }
}

/// `(used, total)` bytes of the device's memory: the CUDA device's own (through
/// cudarc), or the host's for the CPU.
fn device_memory(device: &Device) -> Option<(u64, u64)> {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(d) => {
            let (free, total) = d.cuda_stream().context().mem_get_info().ok()?;
            Some(((total - free) as u64, total as u64))
        }
        _ => host_memory_bytes(),
    }
}
