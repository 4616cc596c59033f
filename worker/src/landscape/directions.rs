//! Directions in parameter space (Li et al. 2018, "Visualizing the Loss Landscape of
//! Neural Nets"): Gaussian random directions rescaled per filter, per layer or not at all,
//! and the direction between two checkpoints.
//!
//! Directions are drawn on the CPU in f64 from SplitMix64 and stored as f32, so the same
//! seed gives bit-identical vectors on every machine, whatever device evaluates them.

use candle_core::{DType, Device, Result, Tensor};
use ridgeline_common::rng::Rng;

/// Named tensors in a fixed order (a model's parameters, or a direction).
pub type Named = Vec<(String, Tensor)>;

/// How a random direction is rescaled to the weights it perturbs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Normalization {
    /// Each slice along dim 0 (a conv filter, a row of a linear weight) gets the
    /// Frobenius norm of the same slice of the weights.
    Filter,
    /// Each tensor gets the Frobenius norm of the whole weight tensor.
    Layer,
    /// Left as drawn.
    None,
}

/// What happens to 1-D tensors (biases, norm scales).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OneD {
    /// Zero direction ("ignore biasbn" in the reference): biases stay put.
    Zero,
    /// A copy of the weights themselves.
    Copy,
}

const EPS: f64 = 1e-10;

/// A Gaussian random direction shaped like `weights`, normalised as asked.
pub fn random_direction(
    weights: &Named,
    seed: u64,
    norm: Normalization,
    one_d: OneD,
) -> Result<Named> {
    let mut rng = Rng::stream(seed, 0x0064_6972);
    let mut out = Vec::with_capacity(weights.len());
    for (name, w) in weights {
        let dims = w.dims().to_vec();
        let wv: Vec<f64> = w
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1()?;
        // Every tensor consumes draws, even 1-D ones, so a tensor's direction does not
        // depend on the `one_d` choice for the tensors before it.
        let mut d: Vec<f64> = (0..wv.len()).map(|_| rng.normal()).collect();
        if dims.len() <= 1 {
            match one_d {
                OneD::Zero => d.iter_mut().for_each(|v| *v = 0.0),
                OneD::Copy => d.copy_from_slice(&wv),
            }
        } else {
            match norm {
                Normalization::Filter => {
                    let per = wv.len() / dims[0];
                    for (dc, wc) in d.chunks_mut(per).zip(wv.chunks(per)) {
                        rescale(dc, norm2(wc));
                    }
                }
                Normalization::Layer => {
                    let n = norm2(&wv);
                    rescale(&mut d, n);
                }
                Normalization::None => {}
            }
        }
        let t = Tensor::from_vec(d, dims, &Device::Cpu)?.to_dtype(DType::F32)?;
        out.push((name.clone(), t.to_device(w.device())?.to_dtype(w.dtype())?));
    }
    Ok(out)
}

fn norm2(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

fn rescale(d: &mut [f64], target: f64) {
    let k = target / (norm2(d) + EPS);
    d.iter_mut().for_each(|v| *v *= k);
}

/// The direction `to - from` between two checkpoints of the same model.
pub fn target_direction(from: &Named, to: &Named) -> Result<Named> {
    from.iter()
        .zip(to)
        .map(|((n, a), (m, b))| {
            if n != m || a.dims() != b.dims() {
                candle_core::bail!(
                    "checkpoints differ: {n} {:?} vs {m} {:?}",
                    a.dims(),
                    b.dims()
                );
            }
            Ok((n.clone(), (b - a)?))
        })
        .collect()
}

/// Euclidean norm of a whole direction, and the cosine between two, in f64.
pub fn norm_and_cosine(a: &Named, b: &Named) -> Result<(f64, f64, f64)> {
    let (mut aa, mut bb, mut ab) = (0f64, 0f64, 0f64);
    for ((_, x), (_, y)) in a.iter().zip(b) {
        let x = x.to_dtype(DType::F64)?;
        let y = y.to_dtype(DType::F64)?;
        aa += x.sqr()?.sum_all()?.to_scalar::<f64>()?;
        bb += y.sqr()?.sum_all()?.to_scalar::<f64>()?;
        ab += (x * y)?.sum_all()?.to_scalar::<f64>()?;
    }
    Ok((
        aa.sqrt(),
        bb.sqrt(),
        ab / (aa.sqrt() * bb.sqrt()).max(f64::MIN_POSITIVE),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights() -> Named {
        let mut r = Rng::new(5);
        let mut t = |dims: &[usize]| {
            let n: usize = dims.iter().product();
            let v: Vec<f32> = (0..n).map(|_| (r.normal() * 0.3) as f32).collect();
            Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
        };
        vec![
            ("conv.weight".into(), t(&[4, 3, 2, 2])),
            ("conv.bias".into(), t(&[4])),
            ("fc.weight".into(), t(&[5, 7])),
            ("fc.bias".into(), t(&[5])),
        ]
    }

    /// Filter normalisation, checked slice by slice in f64 against the weights.
    #[test]
    fn filter_normalisation_matches_each_slice_norm() {
        let w = weights();
        let d = random_direction(&w, 9, Normalization::Filter, OneD::Zero).unwrap();
        for ((name, wt), (_, dt)) in w.iter().zip(&d) {
            let wv: Vec<f64> = wt
                .to_dtype(DType::F64)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let dv: Vec<f64> = dt
                .to_dtype(DType::F64)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            if wt.rank() == 1 {
                assert!(dv.iter().all(|v| *v == 0.0), "{name} should be zero");
                continue;
            }
            let per = wv.len() / wt.dims()[0];
            for (i, (wc, dc)) in wv.chunks(per).zip(dv.chunks(per)).enumerate() {
                let (nw, nd) = (norm2(wc), norm2(dc));
                assert!(
                    (nw - nd).abs() <= 1e-6 * nw,
                    "{name}[{i}]: |w| = {nw}, |d| = {nd}"
                );
            }
        }
        // Same seed, same bits; another seed, another direction.
        let again = random_direction(&w, 9, Normalization::Filter, OneD::Zero).unwrap();
        for ((_, a), (_, b)) in d.iter().zip(&again) {
            assert_eq!(
                a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                b.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            );
        }
        let other = random_direction(&w, 10, Normalization::Filter, OneD::Zero).unwrap();
        assert_ne!(
            other[0].1.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            d[0].1.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }

    #[test]
    fn layer_normalisation_and_copied_biases() {
        let w = weights();
        let d = random_direction(&w, 1, Normalization::Layer, OneD::Copy).unwrap();
        for ((_, wt), (_, dt)) in w.iter().zip(&d) {
            let wv: Vec<f64> = wt
                .to_dtype(DType::F64)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let dv: Vec<f64> = dt
                .to_dtype(DType::F64)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            if wt.rank() == 1 {
                assert_eq!(
                    wv.iter().map(|v| *v as f32).collect::<Vec<_>>(),
                    dv.iter().map(|v| *v as f32).collect::<Vec<_>>()
                );
            } else {
                assert!((norm2(&wv) - norm2(&dv)).abs() < 1e-6 * norm2(&wv));
            }
        }
    }
}
