//! `search.keep`: which trials' checkpoints a search keeps (Ray Tune's
//! `CheckpointConfig(num_to_keep)`).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Which completed trials keep their checkpoint files on the coordinator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// Every trial's.
    All,
    /// The `n` best trials' by the sweep's metric (ties: the lower trial number); with
    /// several objectives, the trials on the Pareto front. Pruned, infeasible and
    /// diverged trials lose theirs when they end.
    Best(u32),
}

impl Default for Keep {
    /// The 100 best: every checkpoint of a sweep of up to 100 trials, and a bounded
    /// folder for a sweep of 10^6 (whose checkpoints would otherwise take 12 GB).
    fn default() -> Self {
        Keep::Best(100)
    }
}

impl Keep {
    /// How many trials keep theirs, if bounded.
    pub fn bound(self) -> Option<usize> {
        match self {
            Keep::All => None,
            Keep::Best(n) => Some(n as usize),
        }
    }
}

impl Serialize for Keep {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Keep::All => s.serialize_str("all"),
            Keep::Best(n) => s.serialize_u32(*n),
        }
    }
}

impl<'de> Deserialize<'de> for Keep {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Given {
            Word(String),
            Count(i64),
        }
        let bad =
            || serde::de::Error::custom("expected \"all\", \"best\" or a number of trials >= 1");
        match Given::deserialize(d).map_err(|_| bad())? {
            Given::Word(w) if w == "all" => Ok(Keep::All),
            Given::Word(w) if w == "best" => Ok(Keep::Best(1)),
            Given::Count(n) if (1..=i64::from(u32::MAX)).contains(&n) => Ok(Keep::Best(n as u32)),
            _ => Err(bad()),
        }
    }
}
