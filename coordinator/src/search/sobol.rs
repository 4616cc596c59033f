//! Sobol search: an Owen-scrambled Sobol sequence (Burley 2020, via `sobol_burley`),
//! one coordinate per dimension of the space in name order. Trial `i` is point `i`, so
//! the first 2^k trials form a (t, k, s)-net: they cover the space more evenly than
//! independent draws, and stay a stateless function of `(seed, i)`.

use std::collections::BTreeMap;

use ridgeline_common::params::Params;
use ridgeline_common::spec::ParamSpec;

use super::{Searcher, from_unit};

pub(super) struct SobolSearch {
    space: BTreeMap<String, ParamSpec>,
    /// The scramble's seed: independent sequences for different seeds.
    seed: u32,
}

impl SobolSearch {
    pub(super) fn new(space: BTreeMap<String, ParamSpec>, seed: u64) -> Self {
        SobolSearch {
            space,
            seed: (seed ^ (seed >> 32)) as u32,
        }
    }
}

impl Searcher for SobolSearch {
    fn suggest(&mut self, i: u32) -> Params {
        self.space
            .iter()
            .enumerate()
            .map(|(d, (name, spec))| {
                // Validated: at most 2^16 points and 256 dimensions.
                let u = f64::from(sobol_burley::sample(i, d as u32, self.seed));
                (name.clone(), from_unit(spec, u))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ridgeline_common::params::ParamValue;

    #[test]
    fn points_stratify_every_dimension() {
        let space = BTreeMap::from([
            (
                "a".to_owned(),
                ParamSpec::Uniform {
                    low: 0.0,
                    high: 1.0,
                },
            ),
            (
                "b".to_owned(),
                ParamSpec::Uniform {
                    low: 0.0,
                    high: 1.0,
                },
            ),
        ]);
        let mut s = SobolSearch::new(space, 7);
        // 64 points of a 2-D Sobol net: every 1/8 x 1/8 cell holds exactly one point
        // (a (0, 6, 2)-net), which 64 independent draws almost never achieve.
        let mut cells = [0u32; 64];
        for i in 0..64 {
            let p = s.suggest(i);
            let (a, b) = (p["a"].as_f64().unwrap(), p["b"].as_f64().unwrap());
            cells[(a * 8.0) as usize * 8 + (b * 8.0) as usize] += 1;
        }
        assert!(cells.iter().all(|&c| c == 1), "{cells:?}");
        // Another seed scrambles differently.
        let mut t = SobolSearch::new(s.space.clone(), 8);
        assert_ne!(t.suggest(0), s.suggest(0));
        assert_eq!(
            SobolSearch::new(s.space.clone(), 7).suggest(5),
            s.suggest(5),
            "a stateless function of (seed, i)"
        );
        let _ = ParamValue::Int(0);
    }
}
