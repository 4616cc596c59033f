//! Grid search: the `grid` axes enumerated in order, the other dimensions drawn.

use std::collections::BTreeMap;

use ridgeline_common::grid::Grid;
use ridgeline_common::params::Params;
use ridgeline_common::rng::Rng;
use ridgeline_common::spec::ParamSpec;

use super::{Searcher, sample};

/// Grid axes enumerated in order (repeated `num_samples` times); other dimensions drawn.
pub(super) struct GridSearch {
    pub(super) grid: Grid,
    pub(super) space: BTreeMap<String, ParamSpec>,
    pub(super) seed: u64,
}

impl Searcher for GridSearch {
    fn suggest(&mut self, i: u32) -> Params {
        let mut p = self
            .grid
            .point(u64::from(i) % self.grid.len())
            .expect("index reduced modulo len");
        let mut rng = Rng::stream(self.seed, u64::from(i));
        for (name, spec) in &self.space {
            if !matches!(spec, ParamSpec::Grid { .. }) {
                p.insert(name.clone(), sample(spec, &mut rng));
            }
        }
        p
    }
}
