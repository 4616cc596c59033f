//! What a worker runs, one executor per kind of unit behind [`Executor`]: the built-in
//! trainer, the user's own command, and a landscape scan's tiles and Hessian products.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use candle_core::Device;
use ridgeline_common::proto;
use ridgeline_common::spec::SweepSpec;

use crate::UnitError;
use crate::landscape::exec::Fetch;
use crate::train::TrialOutput;

mod builtin;
mod command;
mod scan;

pub use command::report::{Report, parse_report};
pub use command::{remove_free_cgroups, start_launcher};

/// Everything a unit's run may use.
pub struct UnitCtx<'a> {
    /// The unit as leased.
    pub unit: &'a proto::Unit,
    /// Its sweep's spec.
    pub spec: &'a SweepSpec,
    /// The device its math runs on.
    pub device: &'a Device,
    /// The device as named in the worker's settings (`cpu`, `cuda:1`).
    pub device_name: &'a str,
    /// Working memory the unit may use.
    pub memory_bytes: u64,
    /// Set when the coordinator asks the unit to stop (pruned, cancelled, re-leased).
    pub cancel: &'a AtomicBool,
    /// Reads a sweep's file from the coordinator.
    pub fetch: Fetch<'a>,
    /// Where command trials get their `RIDGELINE_TRIAL_DIR`.
    pub trial_root: &'a Path,
    /// Reports intermediate metrics at a step.
    pub progress: &'a mut dyn FnMut(u32, Vec<(String, f64)>),
    /// Appends to the unit's log.
    pub log: &'a mut dyn FnMut(&[u8]),
}

/// One kind of unit.
pub trait Executor: Sync {
    /// The kind, as a metric label (one of [`crate::telemetry::KINDS`]).
    fn kind(&self, unit: &proto::Unit, spec: &SweepSpec) -> &'static str;
    /// Runs the unit to its end on the calling thread.
    fn run(&self, ctx: &mut UnitCtx<'_>) -> Result<TrialOutput, UnitError>;
}

/// The executor of a unit.
pub fn for_unit(unit: &proto::Unit, spec: &SweepSpec) -> Result<&'static dyn Executor, UnitError> {
    match &unit.work {
        Some(proto::unit::Work::Train(_)) if spec.trial.is_some() => Ok(&command::Command),
        Some(proto::unit::Work::Train(_)) => Ok(&builtin::Builtin),
        Some(proto::unit::Work::Tile(_)) => Ok(&scan::Scan),
        None => Err("unit carries no work this worker understands".into()),
    }
}

/// Grid points a unit evaluates (tiles of a scan; 0 for anything else).
pub fn points_of(unit: &proto::Unit, spec: &SweepSpec) -> u64 {
    scan::points_of(unit, spec)
}
