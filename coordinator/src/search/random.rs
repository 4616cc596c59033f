//! Random search: independent draws from the space.

use std::collections::BTreeMap;

use ridgeline_common::params::Params;
use ridgeline_common::rng::Rng;
use ridgeline_common::spec::ParamSpec;

use super::{Searcher, sample};

/// Independent draws; `grid` dimensions are drawn like choices.
pub(super) struct RandomSearch {
    pub(super) space: BTreeMap<String, ParamSpec>,
    pub(super) seed: u64,
}

impl Searcher for RandomSearch {
    fn suggest(&mut self, i: u32) -> Params {
        let mut rng = Rng::stream(self.seed, u64::from(i));
        self.space
            .iter()
            .map(|(name, spec)| (name.clone(), sample(spec, &mut rng)))
            .collect()
    }
}
