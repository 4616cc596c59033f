//! Random directions (Li et al. 2018) and their norms, in plain Rust on f32 data with
//! f64 arithmetic.

use super::{Ignore, Normalization};
use crate::rng::Rng;

/// A named f32 tensor in host memory.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    /// Name, e.g. `layers.0.weight`.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f32>,
}

const EPS: f64 = 1e-10;

fn norm2(v: &[f32]) -> f64 {
    v.iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt()
}

/// A Gaussian random direction shaped like `weights`, normalised as asked (Li et al.
/// 2018): with `Filter`, each slice along dim 0 of a tensor with more than one dimension
/// is rescaled to the Frobenius norm of the same slice of the weights (epsilon 1e-10).
/// `stream` tells apart the directions of one sweep (0 for x, 1 for y).
pub fn random_direction(
    weights: &[HostTensor],
    seed: u64,
    stream: u64,
    norm: Normalization,
    ignore: Ignore,
) -> Vec<HostTensor> {
    let mut rng = Rng::stream(seed, 0x0064_6972 ^ (stream << 32));
    weights
        .iter()
        .map(|w| {
            // Every tensor consumes its draws, so a tensor's direction does not depend on
            // how the tensors before it are treated.
            let mut d: Vec<f64> = (0..w.data.len()).map(|_| rng.normal()).collect();
            if w.shape.len() <= 1 {
                match ignore {
                    Ignore::Biasbn => d.iter_mut().for_each(|v| *v = 0.0),
                    Ignore::None => d
                        .iter_mut()
                        .zip(&w.data)
                        .for_each(|(v, x)| *v = f64::from(*x)),
                }
            } else {
                let per = match norm {
                    Normalization::Filter => w.data.len() / w.shape[0].max(1),
                    _ => w.data.len(),
                };
                if norm != Normalization::None && per > 0 {
                    for (dc, wc) in d.chunks_mut(per).zip(w.data.chunks(per)) {
                        let nd = dc.iter().map(|x| x * x).sum::<f64>().sqrt();
                        let k = norm2(wc) / (nd + EPS);
                        dc.iter_mut().for_each(|v| *v *= k);
                    }
                }
            }
            HostTensor {
                name: w.name.clone(),
                shape: w.shape.clone(),
                data: d.iter().map(|&v| v as f32).collect(),
            }
        })
        .collect()
}

/// Norm of a direction and cosine between two, in f64 (stored in `meta.json`).
pub fn norms_and_cosine(a: &[HostTensor], b: &[HostTensor]) -> (f64, f64, f64) {
    let (mut aa, mut bb, mut ab) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        for (p, q) in x.data.iter().zip(&y.data) {
            let (p, q) = (f64::from(*p), f64::from(*q));
            aa += p * p;
            bb += q * q;
            ab += p * q;
        }
    }
    let denom = (aa.sqrt() * bb.sqrt()).max(f64::MIN_POSITIVE);
    (aa.sqrt(), bb.sqrt(), ab / denom)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights() -> Vec<HostTensor> {
        let mut r = Rng::new(5);
        let mut t = |name: &str, shape: &[usize]| {
            let n: usize = shape.iter().product();
            HostTensor {
                name: name.into(),
                shape: shape.to_vec(),
                data: (0..n).map(|_| (r.normal() * 0.3) as f32).collect(),
            }
        };
        vec![
            t("conv.weight", &[4, 3, 2, 2]),
            t("conv.bias", &[4]),
            t("fc.weight", &[5, 7]),
            t("fc.bias", &[5]),
        ]
    }

    /// Filter normalisation checked slice by slice against an f64 computation of the
    /// weights' slice norms.
    #[test]
    fn filter_normalisation_matches_each_slice_norm() {
        let w = weights();
        let d = random_direction(&w, 9, 0, Normalization::Filter, Ignore::Biasbn);
        for (wt, dt) in w.iter().zip(&d) {
            assert_eq!(wt.shape, dt.shape);
            if wt.shape.len() == 1 {
                assert!(
                    dt.data.iter().all(|v| *v == 0.0),
                    "{} should be zero",
                    wt.name
                );
                continue;
            }
            let per = wt.data.len() / wt.shape[0];
            for (i, (wc, dc)) in wt.data.chunks(per).zip(dt.data.chunks(per)).enumerate() {
                let nw: f64 = wc.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>().sqrt();
                let nd: f64 = dc.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>().sqrt();
                assert!(
                    (nw - nd).abs() <= 1e-6 * nw,
                    "{}[{i}]: |w| = {nw}, |d| = {nd}",
                    wt.name
                );
            }
        }
        assert_eq!(
            d,
            random_direction(&w, 9, 0, Normalization::Filter, Ignore::Biasbn)
        );
        assert_ne!(
            d,
            random_direction(&w, 9, 1, Normalization::Filter, Ignore::Biasbn)
        );
    }

    #[test]
    fn layer_normalisation_and_copied_biases() {
        let w = weights();
        let d = random_direction(&w, 1, 0, Normalization::Layer, Ignore::None);
        for (wt, dt) in w.iter().zip(&d) {
            if wt.shape.len() == 1 {
                assert_eq!(wt.data, dt.data);
            } else {
                assert!((norm2(&wt.data) - norm2(&dt.data)).abs() < 1e-6 * norm2(&wt.data));
            }
        }
    }
}
