//! The built-in trainer: the spec's model trained with the trial's parameters.

use ridgeline_common::params::params_from_proto;
use ridgeline_common::proto;
use ridgeline_common::spec::SweepSpec;

use super::{Executor, UnitCtx};
use crate::UnitError;
use crate::train::{self, TrialEnd, TrialOutput};

pub(super) struct Builtin;

impl Executor for Builtin {
    fn kind(&self, _: &proto::Unit, _: &SweepSpec) -> &'static str {
        "train"
    }

    fn run(&self, ctx: &mut UnitCtx<'_>) -> Result<TrialOutput, UnitError> {
        let Some(proto::unit::Work::Train(t)) = &ctx.unit.work else {
            return Err("not a trial".into());
        };
        let params = params_from_proto(&t.params)?;
        let data = crate::data::cached(ctx.spec)?;
        let mut out = train::run_trial(
            ctx.spec,
            &params,
            &data,
            ctx.device,
            ctx.cancel,
            ctx.progress,
        )
        .map_err(|e| e.to_string())?;
        let geometry = ctx
            .spec
            .trial_config(&params)
            .map_err(|e| e.to_string())?
            .train
            .geometry;
        if let (Some(g), TrialEnd::Completed) = (geometry, out.end) {
            let m = crate::geometry::measure(&g, &out.artifacts, &data, ctx.device)?;
            out.final_metrics.extend(m);
        }
        Ok(out)
    }
}
