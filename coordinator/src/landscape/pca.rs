//! Principal directions of a training trajectory (Li et al. 2018, §7).

use ridgeline_common::landscape::{Axis, HostTensor, LandscapeSpec};

use super::{flat, unflat};

/// PCA of a trajectory around `centre` (Li et al. §7): the rows `θ_i − θ_centre`, their
/// top principal directions (unit vectors), the explained variance ratios, and the
/// trajectory projected on the directions, to be drawn over the contour plot.
pub fn pca(
    centre: &[HostTensor],
    trajectory: &[Vec<HostTensor>],
    k: usize,
) -> Result<(Vec<Vec<HostTensor>>, serde_json::Value), String> {
    let c = flat(centre);
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
            Ok(v.iter().zip(&c).map(|(a, b)| a - b).collect())
        })
        .collect::<Result<_, String>>()?;
    let e = rows.len();
    // The Gram matrix M Mᵀ (epochs x epochs) has the same non-zero spectrum as MᵀM.
    let gram: Vec<Vec<f64>> = (0..e)
        .map(|i| {
            (0..e)
                .map(|j| rows[i].iter().zip(&rows[j]).map(|(a, b)| a * b).sum())
                .collect()
        })
        .collect();
    let (vals, vecs) = ridgeline_common::linalg::eigen::jacobi_eigen(gram);
    let mut order: Vec<usize> = (0..e).collect();
    order.sort_by(|a, b| vals[*b].total_cmp(&vals[*a]));
    let total: f64 = vals.iter().map(|v| v.max(0.0)).sum();
    let mut dirs = Vec::new();
    let mut ratios = Vec::new();
    let mut coords: Vec<Vec<f64>> = Vec::new();
    for &idx in order.iter().take(k) {
        let lam = vals[idx];
        if lam <= 1e-12 * total.max(f64::MIN_POSITIVE) {
            return Err("the trajectory does not span enough directions for PCA".into());
        }
        let mut d = vec![0.0; c.len()];
        for (i, row) in rows.iter().enumerate() {
            let w = vecs[i][idx] / lam.sqrt();
            d.iter_mut().zip(row).for_each(|(x, r)| *x += w * r);
        }
        coords.push(
            rows.iter()
                .map(|r| r.iter().zip(&d).map(|(a, b)| a * b).sum())
                .collect(),
        );
        ratios.push(lam / total);
        dirs.push(unflat(centre, &d));
    }
    let info = serde_json::json!({
        "explained_variance_ratio": ratios,
        "x": coords[0],
        "y": coords.get(1),
        "checkpoints": e,
    });
    Ok((dirs, info))
}

/// A PCA scan without an explicit `x` covers the projected trajectory (and the centre),
/// with a margin of 15 % of its extent on each side: x gets 51 points, y keeps its count.
pub fn fit_axes_to_trajectory(l: &mut LandscapeSpec, t: &serde_json::Value) {
    if l.x.is_some() {
        return;
    }
    let fit = |key: &str, points: usize| -> Option<Axis> {
        let v: Vec<f64> = serde_json::from_value(t[key].clone()).ok()?;
        let (lo, hi) = v
            .iter()
            .fold((0f64, 0f64), |(a, b), x| (a.min(*x), b.max(*x)));
        let m = 0.15 * (hi - lo).max(1e-3);
        Some(Axis {
            min: lo - m,
            max: hi + m,
            points,
        })
    };
    l.x = fit("x", 51);
    if let Some(points) = l.y.as_ref().map(|y| y.points) {
        l.y = fit("y", points).or(l.y.take());
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
        let (dirs, info) = pca(&centre, &traj, 2).unwrap();
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
}
