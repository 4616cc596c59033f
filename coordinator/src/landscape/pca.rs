//! Principal directions of a training trajectory (Li et al. 2018, §7).

use ridgeline_common::landscape::{Axis, HostTensor, Ignore, LandscapeSpec, ParamKind, param_kind};
use ridgeline_common::linalg::eigen::symmetric_eigen;
use ridgeline_common::linalg::{axpy, dot};

use super::{flat, unflat};

/// PCA of a trajectory around `centre`, the loss-landscape reference's recipe by
/// default (`projection.setup_PCA_directions`): the rows `θ_i − θ_centre` with biases
/// and norm scales zeroed (`ignore = "biasbn"`), mean-centred (sklearn's `PCA`), their
/// top principal directions (unit vectors, sign fixed as sklearn's `svd_flip`: the
/// largest entry positive), the explained variance ratios, and the uncentred rows
/// projected on the directions (`project_trajectory`), so that the centre is (0, 0).
/// `center = false` skips the centring (Ridgeline's recipe before 0.2).
pub fn pca(
    centre: &[HostTensor],
    trajectory: &[Vec<HostTensor>],
    k: usize,
    center: bool,
    ignore: Ignore,
) -> Result<(Vec<Vec<HostTensor>>, serde_json::Value), String> {
    let c = flat(centre);
    // Entries PCA leaves out: 1-D tensors (and batch-norm statistics) with biasbn.
    let keep: Vec<bool> = centre
        .iter()
        .flat_map(|t| {
            let k = param_kind(&t.name, &t.shape);
            let on = ignore == Ignore::None || !matches!(k, ParamKind::Vector | ParamKind::State);
            std::iter::repeat_n(on, t.data.len())
        })
        .collect();
    let rows: Vec<Vec<f64>> = trajectory
        .iter()
        .map(|t| {
            let v = flat(t);
            if v.len() != c.len() {
                return Err(format!(
                    "a trajectory checkpoint has {} parameters, the model {}",
                    v.len(),
                    c.len()
                ));
            }
            Ok(v.iter()
                .zip(&c)
                .zip(&keep)
                .map(|((a, b), on)| if *on { a - b } else { 0.0 })
                .collect())
        })
        .collect::<Result<_, String>>()?;
    let e = rows.len();
    let mean: Vec<f64> = if center {
        (0..c.len())
            .map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / e as f64)
            .collect()
    } else {
        vec![0.0; c.len()]
    };
    let x: Vec<Vec<f64>> = rows
        .iter()
        .map(|r| r.iter().zip(&mean).map(|(a, m)| a - m).collect())
        .collect();
    // The Gram matrix X Xᵀ (checkpoints x checkpoints) has the same non-zero spectrum as
    // XᵀX, and its eigenvectors give the components as combinations of the rows.
    let gram: Vec<Vec<f64>> = (0..e)
        .map(|i| (0..e).map(|j| dot(&x[i], &x[j])).collect())
        .collect();
    let (vals, vecs) = symmetric_eigen(gram);
    let total: f64 = vals.iter().map(|v| v.max(0.0)).sum();
    let mut dirs = Vec::new();
    let mut ratios = Vec::new();
    let mut coords: Vec<Vec<f64>> = Vec::new();
    for idx in (0..e).rev().take(k) {
        let lam = vals[idx];
        if lam <= 1e-12 * total.max(f64::MIN_POSITIVE) {
            return Err("the trajectory does not span enough directions for PCA".into());
        }
        let mut d = vec![0.0; c.len()];
        for (i, row) in x.iter().enumerate() {
            axpy(&mut d, vecs[i][idx] / lam.sqrt(), row);
        }
        let big = d
            .iter()
            .copied()
            .fold(0.0, |m: f64, v| if v.abs() > m.abs() { v } else { m });
        if big < 0.0 {
            d.iter_mut().for_each(|v| *v = -*v);
        }
        coords.push(rows.iter().map(|r| dot(r, &d)).collect());
        ratios.push(lam / total);
        dirs.push(unflat(centre, &d));
    }
    let info = serde_json::json!({
        "explained_variance_ratio": ratios,
        "x": coords[0],
        "y": coords.get(1),
        "checkpoints": e,
        "center": center,
        "ignore": ignore,
        "recipe": if center {
            "rows θ_epoch − θ_final, mean-centred (sklearn PCA), unit components; the trajectory is the uncentred rows projected on them"
        } else {
            "rows θ_epoch − θ_final, not centred (SVD), unit components; the trajectory is the rows projected on them"
        },
    });
    Ok((dirs, info))
}

/// A PCA scan without an explicit `x` covers the projected trajectory and the centre,
/// with a margin of 15 % of its extent on each side: x gets 51 points, y keeps its
/// count. The centre (0, 0) is a grid point, so the surface holds the scanned model's
/// own loss.
pub fn fit_axes_to_trajectory(l: &mut LandscapeSpec, t: &serde_json::Value) {
    if l.x.is_some() {
        return;
    }
    let fit = |key: &str, points: usize| -> Option<Axis> {
        let v: Vec<f64> = serde_json::from_value(t[key].clone()).ok()?;
        Some(axis_through_zero(&v, points))
    };
    l.x = fit("x", 51);
    if let Some(points) = l.y.as_ref().map(|y| y.points) {
        l.y = fit("y", points).or(l.y.take());
    }
}

/// An axis of `points` values covering `v` and 0 with 15 % margins, 0 among its values.
fn axis_through_zero(v: &[f64], points: usize) -> Axis {
    let (lo, hi) = v
        .iter()
        .fold((0f64, 0f64), |(a, b), x| (a.min(*x), b.max(*x)));
    let m = 0.15 * (hi - lo).max(1e-3);
    let (a, b) = (lo - m, hi + m);
    if points < 3 {
        return Axis {
            min: a,
            max: b,
            points,
        };
    }
    // Index of the zero value, then the smallest step that still covers [a, b].
    let last = (points - 1) as f64;
    let i = (-a / (b - a) * last).round().clamp(1.0, last - 1.0);
    let step = (-a / i).max(b / (last - i));
    Axis {
        min: -i * step,
        max: (last - i) * step,
        points,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::landscape::flat;

    #[test]
    fn pca_recovers_a_planar_trajectory() {
        let t = |name: &str, data: Vec<f32>| HostTensor {
            name: name.into(),
            shape: vec![data.len()],
            data,
        };
        let centre = vec![t("a", vec![1.0, 2.0, 3.0]), t("b", vec![0.5])];
        // Points centre + s u + r w for orthogonal u, w: a plane, so two components
        // explain everything, and the projections reproduce the points.
        let (u, w) = ([1.0f32, 0.0, 1.0, 0.0], [0.0f32, 2.0, 0.0, 1.0]);
        let pts = [
            (3.0f32, 0.5f32),
            (2.0, -1.0),
            (1.0, 0.25),
            (0.5, 0.0),
            (0.0, 0.1),
        ];
        let traj: Vec<Vec<HostTensor>> = pts
            .iter()
            .map(|(s, r)| {
                let v: Vec<f32> = (0..4)
                    .map(|i| [1.0, 2.0, 3.0, 0.5][i] + s * u[i] + r * w[i])
                    .collect();
                vec![t("a", v[..3].to_vec()), t("b", v[3..].to_vec())]
            })
            .collect();
        let (dirs, info) = pca(&centre, &traj, 2, false, Ignore::None).unwrap();
        let ratios: Vec<f64> =
            serde_json::from_value(info["explained_variance_ratio"].clone()).unwrap();
        assert!(
            (ratios[0] + ratios[1] - 1.0).abs() < 1e-9 && ratios[0] >= ratios[1],
            "{ratios:?}"
        );
        let xs: Vec<f64> = serde_json::from_value(info["x"].clone()).unwrap();
        let ys: Vec<f64> = serde_json::from_value(info["y"].clone()).unwrap();
        let (d1, d2) = (flat(&dirs[0]), flat(&dirs[1]));
        for (k, (s, r)) in pts.iter().enumerate() {
            for i in 0..4 {
                let want = f64::from(s * u[i] + r * w[i]);
                let got = xs[k] * d1[i] + ys[k] * d2[i];
                assert!(
                    (got - want).abs() < 1e-5,
                    "point {k}, coordinate {i}: {got} vs {want}"
                );
            }
        }
    }

    /// The reference recipe against an independent computation: the covariance matrix
    /// XᵀX of the centred rows (parameters x parameters, biases dropped), diagonalised by
    /// Jacobi, gives the same components (up to sign) and explained variance ratios as
    /// the Gram-matrix route; the trajectory's projections are of the uncentred rows.
    #[test]
    fn pca_matches_a_centred_svd_computed_independently() {
        let mut r = ridgeline_common::rng::Rng::new(5);
        let t = |name: &str, shape: Vec<usize>, data: Vec<f32>| HostTensor {
            name: name.into(),
            shape,
            data,
        };
        let model = |r: &mut ridgeline_common::rng::Rng, s: f32| {
            vec![
                t(
                    "layers.0.weight",
                    vec![2, 3],
                    (0..6).map(|_| s * r.normal() as f32).collect(),
                ),
                t(
                    "layers.0.bias",
                    vec![2],
                    (0..2).map(|_| s * r.normal() as f32).collect(),
                ),
                t(
                    "layers.1.weight",
                    vec![1, 2],
                    (0..2).map(|_| s * r.normal() as f32).collect(),
                ),
            ]
        };
        let centre = model(&mut r, 1.0);
        let traj: Vec<Vec<HostTensor>> = (0..7).map(|_| model(&mut r, 1.0)).collect();
        let (dirs, info) = pca(&centre, &traj, 2, true, Ignore::Biasbn).unwrap();
        // Independent: centred rows without the bias entries (indices 6, 7).
        let c = flat(&centre);
        let keep: Vec<usize> = (0..10).filter(|i| !(6..8).contains(i)).collect();
        let rows: Vec<Vec<f64>> = traj
            .iter()
            .map(|m| {
                let v = flat(m);
                keep.iter().map(|&i| v[i] - c[i]).collect()
            })
            .collect();
        let p = keep.len();
        let mean: Vec<f64> = (0..p)
            .map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / rows.len() as f64)
            .collect();
        let mut cov = vec![vec![0.0; p]; p];
        for row in &rows {
            for i in 0..p {
                for j in 0..p {
                    cov[i][j] += (row[i] - mean[i]) * (row[j] - mean[j]);
                }
            }
        }
        let (vals, vecs) = ridgeline_common::linalg::eigen::jacobi_eigen(cov);
        let mut order: Vec<usize> = (0..p).collect();
        order.sort_by(|a, b| vals[*b].total_cmp(&vals[*a]));
        let total: f64 = vals.iter().sum();
        let ratios: Vec<f64> =
            serde_json::from_value(info["explained_variance_ratio"].clone()).unwrap();
        let xs: Vec<f64> = serde_json::from_value(info["x"].clone()).unwrap();
        for k in 0..2 {
            assert!(
                (ratios[k] - vals[order[k]] / total).abs() < 1e-9,
                "{ratios:?}"
            );
            let d = flat(&dirs[k]);
            assert_eq!(
                (d[6], d[7]),
                (0.0, 0.0),
                "biases are not part of the directions"
            );
            let want: Vec<f64> = (0..p).map(|i| vecs[i][order[k]]).collect();
            let got: Vec<f64> = keep.iter().map(|&i| d[i]).collect();
            let cos: f64 = got.iter().zip(&want).map(|(a, b)| a * b).sum();
            // f32 storage of the directions: 7 digits.
            assert!(
                (cos.abs() - 1.0).abs() < 1e-6,
                "component {k}: cosine {cos}"
            );
        }
        // Projections of the uncentred rows on the first component.
        let d0 = flat(&dirs[0]);
        for (m, x) in traj.iter().zip(&xs) {
            let v = flat(m);
            let want: f64 = keep.iter().map(|&i| (v[i] - c[i]) * d0[i]).sum();
            assert!((want - x).abs() < 1e-5, "{want} vs {x}");
        }
        // The fitted axes contain the centre as a grid point and cover the trajectory.
        for pts in [51, 21, 4] {
            let a = axis_through_zero(&xs, pts);
            assert!(a.values().iter().any(|v| v.abs() < 1e-12), "{a:?}");
            assert!(xs.iter().all(|x| a.min < *x && *x < a.max), "{a:?}");
        }
    }
}
