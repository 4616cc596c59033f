//! Lazy Cartesian grids.
//!
//! A grid is a list of axes; point `i` is found by reading `i` in mixed radix, the last
//! axis varying fastest (the order of `itertools::iproduct!` and scikit-learn's
//! `ParameterGrid`). Nothing proportional to the number of points is ever allocated, so a
//! 10^7-point grid costs the size of its axes.

use crate::params::{ParamValue, Params};

/// A Cartesian product of named axes, enumerated lazily in a stable order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Grid {
    axes: Vec<(String, Vec<ParamValue>)>,
    len: u64,
}

/// Why a grid could not be built.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GridError {
    /// An axis has no values, so the product would be empty.
    #[error("grid axis `{0}` has no values")]
    EmptyAxis(String),
    /// The product of the axis lengths does not fit in 64 bits.
    #[error("grid has more than 2^64 points")]
    TooLarge,
}

impl Grid {
    /// Builds a grid from axes in the order given; the last axis varies fastest.
    pub fn new(axes: Vec<(String, Vec<ParamValue>)>) -> Result<Self, GridError> {
        let mut len: u64 = 1;
        for (name, values) in &axes {
            if values.is_empty() {
                return Err(GridError::EmptyAxis(name.clone()));
            }
            len = len
                .checked_mul(values.len() as u64)
                .ok_or(GridError::TooLarge)?;
        }
        Ok(Grid { axes, len })
    }

    /// Number of points (1 for a grid with no axes: the single empty assignment).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// A grid always has at least one point; this exists for clippy's sake.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The axes, in enumeration order.
    pub fn axes(&self) -> &[(String, Vec<ParamValue>)] {
        &self.axes
    }

    /// The per-axis indices of point `i`, last axis fastest. `None` past the end.
    pub fn indices(&self, i: u64) -> Option<Vec<usize>> {
        if i >= self.len {
            return None;
        }
        let mut rest = i;
        let mut idx = vec![0; self.axes.len()];
        for (slot, (_, values)) in idx.iter_mut().zip(&self.axes).rev() {
            let n = values.len() as u64;
            *slot = (rest % n) as usize;
            rest /= n;
        }
        Some(idx)
    }

    /// Point `i` as a parameter assignment. `None` past the end.
    pub fn point(&self, i: u64) -> Option<Params> {
        let idx = self.indices(i)?;
        Some(
            self.axes
                .iter()
                .zip(idx)
                .map(|((name, values), j)| (name.clone(), values[j].clone()))
                .collect(),
        )
    }

    /// Iterates over all points in order, computing each on demand.
    pub fn iter(&self) -> impl Iterator<Item = Params> + '_ {
        (0..self.len).map(move |i| self.point(i).expect("index below len"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn ints(name: &str, n: i64) -> (String, Vec<ParamValue>) {
        (name.into(), (0..n).map(ParamValue::Int).collect())
    }

    #[test]
    fn every_point_exactly_once_in_stable_order() {
        let g = Grid::new(vec![ints("a", 3), ints("b", 4), ints("c", 2)]).unwrap();
        assert_eq!(g.len(), 24);
        let pts: Vec<Params> = g.iter().collect();
        // Independent enumeration by nested loops, last axis fastest.
        let mut expected = Vec::new();
        for a in 0..3 {
            for b in 0..4 {
                for c in 0..2 {
                    expected.push((a, b, c));
                }
            }
        }
        let got: Vec<(i64, i64, i64)> = pts
            .iter()
            .map(|p| {
                (
                    p["a"].as_i64().unwrap(),
                    p["b"].as_i64().unwrap(),
                    p["c"].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(got, expected);
        let unique: HashSet<_> = got.iter().collect();
        assert_eq!(unique.len(), 24);
        // Same order on a second pass.
        assert_eq!(g.iter().collect::<Vec<_>>(), pts);
        assert_eq!(g.point(24), None);
    }

    #[test]
    fn empty_axis_and_overflow_are_errors() {
        assert_eq!(
            Grid::new(vec![ints("a", 2), ("b".into(), vec![])]),
            Err(GridError::EmptyAxis("b".into()))
        );
        let huge: Vec<_> = (0..20).map(|i| ints(&format!("x{i}"), 1000)).collect();
        assert_eq!(Grid::new(huge), Err(GridError::TooLarge));
    }

    #[test]
    fn no_axes_is_one_point() {
        let g = Grid::new(vec![]).unwrap();
        assert_eq!(g.len(), 1);
        assert_eq!(g.point(0), Some(Params::new()));
    }
}
