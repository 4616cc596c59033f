//! The built-in trainer: the spec's model trained with the trial's parameters; under
//! PBT, one round of it, resumed from the parent's training state.

use candle_core::Device;
use ridgeline_common::params::params_from_proto;
use ridgeline_common::proto;
use ridgeline_common::spec::{Algorithm, PBT_PARENT, SweepSpec, TrialConfig};

use super::{Executor, UnitCtx};
use crate::UnitError;
use crate::landscape::exec::Fetch;
use crate::train::{self, Stint, TrialEnd, TrialOutput, state};

pub(super) struct Builtin;

impl Executor for Builtin {
    fn kind(&self, _: &proto::Unit, _: &SweepSpec) -> &'static str {
        "train"
    }

    fn run(&self, ctx: &mut UnitCtx<'_>) -> Result<TrialOutput, UnitError> {
        let Some(proto::unit::Work::Train(t)) = &ctx.unit.work else {
            return Err("not a trial".into());
        };
        let mut params = params_from_proto(&t.params)?;
        // Which trial a PBT round starts from is the coordinator's, not the model's.
        let parent = params
            .remove(PBT_PARENT)
            .and_then(|p| p.as_i64())
            .and_then(|p| u32::try_from(p).ok());
        let cfg = ctx.spec.trial_config(&params).map_err(|e| e.to_string())?;
        let data = crate::data::cached(ctx.spec)?;
        let stint = stint(ctx.spec, &cfg, t.trial_index, parent, ctx.fetch, ctx.device)?;
        let mut out = train::run_stint(&cfg, &data, ctx.device, stint, ctx.cancel, ctx.progress)
            .map_err(|e| e.to_string())?;
        if let (Some(g), TrialEnd::Completed) = (cfg.train.geometry, out.end) {
            let m = crate::geometry::measure(&g, &out.artifacts, &data, ctx.device)?;
            out.final_metrics.extend(m);
        }
        Ok(out)
    }
}

/// The epochs a unit trains: all of them, or under PBT its round's
/// `perturbation_interval` epochs of a schedule `rounds × perturbation_interval` long,
/// from the state its parent saved ([`state::STATE_FILE`], fetched from the
/// coordinator, which keeps every trial's files: workers need no shared storage).
fn stint(
    spec: &SweepSpec,
    cfg: &TrialConfig,
    trial: u32,
    parent: Option<u32>,
    fetch: Fetch<'_>,
    device: &Device,
) -> Result<Stint, UnitError> {
    if spec.search.algorithm != Algorithm::Pbt {
        return Ok(Stint::whole(cfg.train.epochs));
    }
    let pbt = &spec.search.pbt;
    let round = spec.search.pbt_round(trial);
    let from = match parent {
        None => None,
        Some(parent) => {
            let bytes = fetch(&format!("trials/{parent:05}/{}", state::STATE_FILE))?;
            Some(state::decode(&bytes, device).map_err(|e| format!("trial {parent}'s {e}"))?)
        }
    };
    let epochs = pbt.steps_of(round);
    Ok(Stint {
        first: *epochs.start() as usize,
        last: *epochs.end() as usize,
        total: (pbt.rounds * pbt.perturbation_interval) as usize,
        from,
        save_state: round + 1 < pbt.rounds,
    })
}
