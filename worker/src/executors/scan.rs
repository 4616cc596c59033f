//! A landscape scan's units: tiles of grid points and Hessian-vector-product shards.

use ridgeline_common::landscape::ScanUnit;
use ridgeline_common::proto;
use ridgeline_common::spec::SweepSpec;

use super::{Executor, UnitCtx};
use crate::UnitError;
use crate::train::TrialOutput;

pub(super) struct Scan;

fn tile_of(unit: &proto::Unit) -> Option<u32> {
    match &unit.work {
        Some(proto::unit::Work::Tile(t)) => Some(t.tile_index),
        _ => None,
    }
}

pub(super) fn points_of(unit: &proto::Unit, spec: &SweepSpec) -> u64 {
    match (tile_of(unit), &spec.landscape) {
        (Some(i), Some(l)) => match l.unit(i as usize) {
            ScanUnit::Tile(t) => l.tile_range(t).len() as u64,
            ScanUnit::Hvp { .. } | ScanUnit::Curve | ScanUnit::Curvature(_) => 0,
        },
        _ => 0,
    }
}

impl Executor for Scan {
    fn kind(&self, unit: &proto::Unit, spec: &SweepSpec) -> &'static str {
        match (tile_of(unit), &spec.landscape) {
            (Some(i), Some(l)) if matches!(l.unit(i as usize), ScanUnit::Hvp { .. }) => "hvp",
            (Some(i), Some(l)) if l.unit(i as usize) == ScanUnit::Curve => "curve",
            (Some(i), Some(l)) if matches!(l.unit(i as usize), ScanUnit::Curvature(_)) => "hvp",
            _ => "tile",
        }
    }

    fn run(&self, ctx: &mut UnitCtx<'_>) -> Result<TrialOutput, UnitError> {
        let tile = tile_of(ctx.unit).ok_or("not a tile")?;
        if ctx.spec.landscape.is_none() {
            return Err("not a landscape sweep".into());
        }
        crate::landscape::exec::run_unit(
            &ctx.unit.sweep_id,
            ctx.spec,
            tile,
            ctx.fetch,
            ctx.device,
            ctx.memory_bytes,
        )
    }
}
