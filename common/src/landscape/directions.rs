//! Random directions (Li et al. 2018) and their norms, in plain Rust on f32 data with
//! f64 arithmetic.

use super::{DirType, DirectionsSpec, Ignore, Normalization};
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

#[cfg(test)]
fn norm2(v: &[f32]) -> f64 {
    v.iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt()
}

/// What a parameter tensor is, for filter normalisation (Li et al. 2018, per layer
/// type). Inferred from the tensor's name and shape by [`param_kind`], the same way on
/// the coordinator and on every worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    /// A tensor whose filters are its slices along dim 0: a conv kernel
    /// `[out, in, kh, kw]` (one output filter), a linear weight `[out, in]` (one output
    /// row), an embedding `[vocab, d]` (one token's row).
    Rows,
    /// A linear weight stored `[in, out]` (GPT-2's `Conv1D`): a filter is a column.
    Columns,
    /// A 1-D tensor: bias, LayerNorm/RMSNorm/batch-norm scale. Ignored by default.
    Vector,
    /// Not a parameter: batch-norm running statistics. Perturbed only with
    /// `dir_type = "states"`, and then treated as a 1-D tensor.
    State,
}

/// Names of GPT-2's `Conv1D` weights (`[in, out]`) in the Hugging Face layout.
const GPT2_CONV1D: &[&str] = &[
    ".attn.c_attn.weight",
    ".attn.c_proj.weight",
    ".mlp.c_fc.weight",
    ".mlp.c_proj.weight",
];

/// The kind of tensor `name` with `shape`.
pub fn param_kind(name: &str, shape: &[usize]) -> ParamKind {
    if name.ends_with(".running_mean")
        || name.ends_with(".running_var")
        || name.ends_with(".num_batches_tracked")
    {
        ParamKind::State
    } else if shape.len() <= 1 {
        ParamKind::Vector
    } else if shape.len() == 2 && GPT2_CONV1D.iter().any(|s| name.ends_with(s)) {
        ParamKind::Columns
    } else {
        ParamKind::Rows
    }
}

/// The order of tensors in flat vectors (Hessian blocks, PCA): module paths in natural
/// order (`layers.2` before `layers.10`), then weight, bias, others within a module, so
/// that an MLP's tensors come layer by layer, weight then bias. The coordinator and the
/// workers flatten by this one rule.
pub fn flat_order(name: &str) -> (Vec<(String, u64)>, u8, String) {
    let (module, leaf) = name.rsplit_once('.').unwrap_or(("", name));
    let parts = module
        .split('.')
        .map(|p| match p.parse::<u64>() {
            Ok(n) => (String::new(), n),
            Err(_) => (p.to_owned(), 0),
        })
        .collect();
    let rank = match leaf {
        "weight" => 0,
        "bias" => 1,
        _ => 2,
    };
    (parts, rank, leaf.to_owned())
}

/// FNV-1a of a tensor's name: the documented key of its random stream.
pub fn name_key(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A standard normal draw by Box-Muller with `libm`'s `log` and `cos`, so that every
/// machine computes the same bits (the platform's libm may differ in the last place).
fn normal(rng: &mut Rng) -> f64 {
    let u1 = 1.0 - rng.next_f64();
    let u2 = rng.next_f64();
    libm::sqrt(-2.0 * libm::log(u1)) * libm::cos(std::f64::consts::TAU * u2)
}

/// The random direction of one tensor, normalised as asked (Li et al. 2018).
///
/// The stream is fixed and documented so that a worker can generate a large model's
/// directions itself, bit-identical to any other worker and to the coordinator:
/// `Rng::stream(seed, name_key(name) ^ (axis << 56))` (SplitMix64), one Box-Muller
/// normal per element in row-major order, in f64; then, by [`param_kind`]:
/// - `Rows`/`Columns` with `Filter`: each filter (slice along dim 0, or column) is
///   rescaled to the Frobenius norm of the same filter of the weights, `‖w‖/(‖d‖+1e-10)`;
///   with `Layer`, the whole tensor to the weights' norm; `None`: as drawn;
/// - `Vector` (and `State` under `dir_type = "states"`): zero with `ignore = "biasbn"`,
///   a copy of the weights with `ignore = "none"`;
/// - `State` under `dir_type = "weights"`: zero;
///
/// and finally rounded to f32. `axis` is 0 for x and 1 for y.
pub fn tensor_direction(
    spec: &DirectionsSpec,
    name: &str,
    shape: &[usize],
    weights: &[f32],
    axis: u64,
) -> Vec<f32> {
    let (seed, norm, ignore) = (spec.seed, spec.normalization, spec.ignore);
    let kind = param_kind(name, shape);
    if kind == ParamKind::State && spec.dir_type == DirType::Weights {
        return vec![0.0; weights.len()];
    }
    if matches!(kind, ParamKind::Vector | ParamKind::State) {
        return match ignore {
            Ignore::Biasbn => vec![0.0; weights.len()],
            Ignore::None => weights.to_vec(),
        };
    }
    let mut rng = Rng::stream(seed, name_key(name) ^ (axis << 56));
    let mut d: Vec<f64> = (0..weights.len()).map(|_| normal(&mut rng)).collect();
    let n = weights.len();
    // Filters as lists of element indices: contiguous rows, or strided columns.
    let (filters, len, stride, step) = match (norm, kind) {
        (Normalization::Filter, ParamKind::Rows) => {
            let per = n / shape[0].max(1);
            (shape[0], per, per, 1)
        }
        (Normalization::Filter, ParamKind::Columns) => (shape[1], shape[0], 1, shape[1]),
        (Normalization::Layer, _) => (1, n, n, 1),
        _ => (0, 0, 0, 0),
    };
    for f in 0..filters {
        let idx = (0..len).map(|i| f * stride + i * step);
        let nw = idx
            .clone()
            .map(|i| f64::from(weights[i]).powi(2))
            .sum::<f64>()
            .sqrt();
        let nd = idx.clone().map(|i| d[i] * d[i]).sum::<f64>().sqrt();
        let k = nw / (nd + EPS);
        idx.for_each(|i| d[i] *= k);
    }
    d.iter().map(|&v| v as f32).collect()
}

/// Random directions for every tensor of `weights` ([`tensor_direction`]), generated on
/// all cores (tensors are independent streams, so the result does not depend on the
/// thread count).
pub fn random_direction(
    spec: &DirectionsSpec,
    weights: &[HostTensor],
    axis: u64,
) -> Vec<HostTensor> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut done: Vec<(usize, Vec<f32>)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads.min(weights.len()))
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(w) = weights.get(i) else { break mine };
                        let d = tensor_direction(spec, &w.name, &w.shape, &w.data, axis);
                        mine.push((i, d));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|h| h.join().expect("direction thread"))
            .collect()
    });
    done.sort_by_key(|(i, _)| *i);
    weights
        .iter()
        .zip(done)
        .map(|(w, (_, data))| HostTensor {
            name: w.name.clone(),
            shape: w.shape.clone(),
            data,
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

/// `to − from`, tensor by tensor (the same names and shapes, in the same order): the
/// direction towards a target checkpoint.
pub fn difference(from: &[HostTensor], to: &[HostTensor]) -> Result<Vec<HostTensor>, String> {
    if from.len() != to.len() {
        return Err(format!(
            "{} parameter tensors, the scanned checkpoint has {}",
            to.len(),
            from.len()
        ));
    }
    from.iter()
        .zip(to)
        .map(|(a, b)| {
            if a.name != b.name || a.shape != b.shape {
                return Err(format!(
                    "{} {:?} does not match {} {:?}",
                    b.name, b.shape, a.name, a.shape
                ));
            }
            let data = a.data.iter().zip(&b.data).map(|(p, q)| q - p).collect();
            Ok(HostTensor {
                name: a.name.clone(),
                shape: a.shape.clone(),
                data,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ds(seed: u64, normalization: Normalization, ignore: Ignore) -> DirectionsSpec {
        DirectionsSpec {
            seed,
            normalization,
            ignore,
            ..DirectionsSpec::default()
        }
    }

    /// A random tensor named `name`.
    fn random(r: &mut Rng, name: &str, shape: &[usize]) -> HostTensor {
        let n: usize = shape.iter().product();
        HostTensor {
            name: name.into(),
            shape: shape.to_vec(),
            data: (0..n).map(|_| (r.normal() * 0.3) as f32).collect(),
        }
    }

    fn weights() -> Vec<HostTensor> {
        let mut r = Rng::new(5);
        let mut t = |name: &str, shape: &[usize]| random(&mut r, name, shape);
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
        let d = random_direction(&ds(9, Normalization::Filter, Ignore::Biasbn), &w, 0);
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
            random_direction(&ds(9, Normalization::Filter, Ignore::Biasbn), &w, 0)
        );
        assert_ne!(
            d,
            random_direction(&ds(9, Normalization::Filter, Ignore::Biasbn), &w, 1)
        );
    }

    /// GPT-2's `Conv1D` weights are `[in, out]`: their filters are columns. Batch-norm
    /// statistics and 1-D tensors are zero under `biasbn`. Checked in f64.
    #[test]
    fn filter_normalisation_per_layer_type() {
        let mut r = Rng::new(11);
        let mut t = |name: &str, shape: &[usize]| random(&mut r, name, shape);
        let w = vec![
            t("transformer.h.0.attn.c_attn.weight", &[6, 9]),
            t("transformer.wte.weight", &[11, 6]),
            t("blocks.0.bn.running_mean", &[4]),
            t("model.norm.weight", &[6]),
        ];
        let kinds: Vec<ParamKind> = w.iter().map(|x| param_kind(&x.name, &x.shape)).collect();
        assert_eq!(
            kinds,
            [
                ParamKind::Columns,
                ParamKind::Rows,
                ParamKind::State,
                ParamKind::Vector
            ]
        );
        let d = random_direction(&ds(3, Normalization::Filter, Ignore::Biasbn), &w, 1);
        let col = |v: &[f32], c: usize| -> f64 {
            (0..6)
                .map(|i| f64::from(v[i * 9 + c]).powi(2))
                .sum::<f64>()
                .sqrt()
        };
        for c in 0..9 {
            let (nw, nd) = (col(&w[0].data, c), col(&d[0].data, c));
            assert!((nw - nd).abs() <= 1e-6 * nw, "column {c}: {nw} vs {nd}");
        }
        for (row_w, row_d) in w[1].data.chunks(6).zip(d[1].data.chunks(6)) {
            let (nw, nd) = (norm2(row_w), norm2(row_d));
            assert!((nw - nd).abs() <= 1e-6 * nw);
        }
        assert!(d[2].data.iter().chain(&d[3].data).all(|v| *v == 0.0));
        // dir_type = "states" with ignore = "none" moves the statistics with the weights;
        // "weights" never moves them.
        let mut s = ds(3, Normalization::Filter, Ignore::None);
        assert_eq!(random_direction(&s, &w, 1)[2].data, vec![0.0; 4]);
        s.dir_type = DirType::States;
        assert_eq!(random_direction(&s, &w, 1)[2].data, w[2].data);
        // A tensor's direction depends only on its name, shape, weights, seed and axis.
        let alone = tensor_direction(
            &ds(3, Normalization::Filter, Ignore::Biasbn),
            &w[1].name,
            &w[1].shape,
            &w[1].data,
            1,
        );
        assert_eq!(alone, d[1].data);
    }

    #[test]
    fn layer_normalisation_and_copied_biases() {
        let w = weights();
        let d = random_direction(&ds(1, Normalization::Layer, Ignore::None), &w, 0);
        for (wt, dt) in w.iter().zip(&d) {
            if wt.shape.len() == 1 {
                assert_eq!(wt.data, dt.data);
            } else {
                assert!((norm2(&wt.data) - norm2(&dt.data)).abs() < 1e-6 * norm2(&wt.data));
            }
        }
    }
}
