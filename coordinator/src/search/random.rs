//! Random search: independent draws from the space.

use std::collections::BTreeMap;

use ridgeline_common::params::Params;
use ridgeline_common::spec::ParamSpec;

use super::{Searcher, random_params};

/// Independent draws; `grid` dimensions are drawn like choices.
pub(super) struct RandomSearch {
    pub(super) space: BTreeMap<String, ParamSpec>,
    pub(super) seed: u64,
}

impl Searcher for RandomSearch {
    fn suggest(&mut self, i: u32) -> Params {
        random_params(&self.space, self.seed, i)
    }
}
