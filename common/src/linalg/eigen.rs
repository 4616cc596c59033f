//! Eigen-decompositions of symmetric matrices.

/// Eigenvalues and eigenvectors (as columns) of a small symmetric matrix, by cyclic
/// Jacobi rotations.
pub fn jacobi_eigen(mut a: Vec<Vec<f64>>) -> (Vec<f64>, Vec<Vec<f64>>) {
    let n = a.len();
    let mut v: Vec<Vec<f64>> = (0..n)
        .map(|i| (0..n).map(|j| f64::from(u8::from(i == j))).collect())
        .collect();
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i][j] * a[i][j])
            .sum();
        let scale: f64 = (0..n)
            .map(|i| a[i][i] * a[i][i])
            .sum::<f64>()
            .max(f64::MIN_POSITIVE);
        if off <= 1e-30 * scale {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                if a[p][q].abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k][p], a[k][q]);
                    a[k][p] = c * akp - s * akq;
                    a[k][q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p][k], a[q][k]);
                    a[p][k] = c * apk - s * aqk;
                    a[q][k] = s * apk + c * aqk;
                }
                for row in v.iter_mut() {
                    let (vkp, vkq) = (row[p], row[q]);
                    row[p] = c * vkp - s * vkq;
                    row[q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..n).map(|i| a[i][i]).collect(), v)
}

/// Eigenvalues (ascending) and eigenvectors (as columns, `v[i][c]`) of a symmetric
/// matrix: Householder reduction to tridiagonal form, then the implicit QL method
/// (`tred2` and `tql2` of EISPACK, as in JAMA). O(n³), for matrices up to a few
/// thousand rows, where Jacobi's sweeps are too slow.
pub fn symmetric_eigen(a: Vec<Vec<f64>>) -> (Vec<f64>, Vec<Vec<f64>>) {
    let n = a.len();
    if n == 0 {
        return (Vec::new(), Vec::new());
    }
    let mut v = a;
    let mut d = vec![0.0; n];
    let mut e = vec![0.0; n];
    tred2(&mut v, &mut d, &mut e);
    tql2(&mut v, &mut d, &mut e);
    // Rows are eigenvectors; the callers read them as columns.
    let cols = (0..n)
        .map(|i| v.iter().map(|row| row[i]).collect())
        .collect();
    (d, cols)
}

/// Eigenvalues (ascending) of the symmetric tridiagonal matrix with diagonal `alpha`
/// and off-diagonal `beta` (one shorter), and the first component of each unit
/// eigenvector: the nodes and (squared) weights of Gauss quadrature for a Lanczos run.
pub fn tridiagonal_eigen(alpha: &[f64], beta: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let n = alpha.len();
    assert_eq!(
        beta.len() + 1,
        n.max(1),
        "beta must be one shorter than alpha"
    );
    let mut v: Vec<Vec<f64>> = (0..n)
        .map(|i| (0..n).map(|j| f64::from(u8::from(i == j))).collect())
        .collect();
    let mut d = alpha.to_vec();
    // tql2 takes the sub-diagonal in e[1..].
    let mut e: Vec<f64> = std::iter::once(0.0).chain(beta.iter().copied()).collect();
    e.truncate(n);
    tql2(&mut v, &mut d, &mut e);
    let first = v.iter().map(|row| row[0]).collect();
    (d, first)
}

/// Householder tridiagonalisation: on return `v` is the orthogonal transformation
/// (transposed: its rows are the columns of EISPACK's, so that the inner loops run
/// along rows), `d` the diagonal and `e[1..]` the sub-diagonal.
fn tred2(v: &mut [Vec<f64>], d: &mut [f64], e: &mut [f64]) {
    let n = d.len();
    for j in 0..n {
        d[j] = v[j][n - 1];
    }
    for i in (1..n).rev() {
        let scale: f64 = d[..i].iter().map(|x| x.abs()).sum();
        let mut h = 0.0;
        if scale == 0.0 {
            e[i] = d[i - 1];
            for j in 0..i {
                d[j] = v[j][i - 1];
                v[j][i] = 0.0;
                v[i][j] = 0.0;
            }
        } else {
            for k in 0..i {
                d[k] /= scale;
                h += d[k] * d[k];
            }
            let mut f = d[i - 1];
            let mut g = h.sqrt();
            if f > 0.0 {
                g = -g;
            }
            e[i] = scale * g;
            h -= f * g;
            d[i - 1] = f - g;
            for x in e[..i].iter_mut() {
                *x = 0.0;
            }
            for j in 0..i {
                f = d[j];
                v[i][j] = f;
                g = e[j] + v[j][j] * f;
                for k in j + 1..i {
                    g += v[j][k] * d[k];
                    e[k] += v[j][k] * f;
                }
                e[j] = g;
            }
            f = 0.0;
            for j in 0..i {
                e[j] /= h;
                f += e[j] * d[j];
            }
            let hh = f / (h + h);
            for j in 0..i {
                e[j] -= hh * d[j];
            }
            for j in 0..i {
                f = d[j];
                g = e[j];
                for k in j..i {
                    v[j][k] -= f * e[k] + g * d[k];
                }
                d[j] = v[j][i - 1];
                v[j][i] = 0.0;
            }
        }
        d[i] = h;
    }
    // Accumulate the transformations.
    for i in 0..n - 1 {
        v[i][n - 1] = v[i][i];
        v[i][i] = 1.0;
        let h = d[i + 1];
        if h != 0.0 {
            for k in 0..=i {
                d[k] = v[i + 1][k] / h;
            }
            for j in 0..=i {
                let mut g = 0.0;
                for k in 0..=i {
                    g += v[i + 1][k] * v[j][k];
                }
                for k in 0..=i {
                    v[j][k] -= g * d[k];
                }
            }
        }
        for k in 0..=i {
            v[i + 1][k] = 0.0;
        }
    }
    for j in 0..n {
        d[j] = v[j][n - 1];
        v[j][n - 1] = 0.0;
    }
    v[n - 1][n - 1] = 1.0;
    e[0] = 0.0;
}

/// Implicit QL on the tridiagonal `d`, `e[1..]`, applying the rotations to the rows of
/// `v` (each row an eigenvector on return); sorts the eigenvalues ascending with their
/// vectors.
fn tql2(v: &mut [Vec<f64>], d: &mut [f64], e: &mut [f64]) {
    let n = d.len();
    if n == 0 {
        return;
    }
    for i in 1..n {
        e[i - 1] = e[i];
    }
    e[n - 1] = 0.0;
    let mut f = 0.0;
    let mut tst1: f64 = 0.0;
    let eps = f64::EPSILON;
    for l in 0..n {
        tst1 = tst1.max(d[l].abs() + e[l].abs());
        let mut m = l;
        while m < n - 1 && e[m].abs() > eps * tst1 {
            m += 1;
        }
        if m > l {
            loop {
                let g = d[l];
                let mut p = (d[l + 1] - g) / (2.0 * e[l]);
                let mut r = p.hypot(1.0);
                if p < 0.0 {
                    r = -r;
                }
                d[l] = e[l] / (p + r);
                d[l + 1] = e[l] * (p + r);
                let dl1 = d[l + 1];
                let mut h = g - d[l];
                for x in d[l + 2..].iter_mut() {
                    *x -= h;
                }
                f += h;
                p = d[m];
                let (mut c, mut c2, mut c3) = (1.0, 1.0, 1.0);
                let el1 = e[l + 1];
                let (mut s, mut s2) = (0.0, 0.0);
                for i in (l..m).rev() {
                    c3 = c2;
                    c2 = c;
                    s2 = s;
                    let g = c * e[i];
                    h = c * p;
                    r = p.hypot(e[i]);
                    e[i + 1] = s * r;
                    s = e[i] / r;
                    c = p / r;
                    p = c * d[i] - s * g;
                    d[i + 1] = h + s * (c * g + s * d[i]);
                    let (lo, hi) = v.split_at_mut(i + 1);
                    for (a, b) in lo[i].iter_mut().zip(hi[0].iter_mut()) {
                        let h = *b;
                        *b = s * *a + c * h;
                        *a = c * *a - s * h;
                    }
                }
                p = -s * s2 * c3 * el1 * e[l] / dl1;
                e[l] = s * p;
                d[l] = c * p;
                if e[l].abs() <= eps * tst1 {
                    break;
                }
            }
        }
        d[l] += f;
        e[l] = 0.0;
    }
    // Sort ascending, vectors with their values.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|a, b| d[*a].total_cmp(&d[*b]));
    let sorted: Vec<f64> = order.iter().map(|&i| d[i]).collect();
    d.copy_from_slice(&sorted);
    let rows: Vec<Vec<f64>> = order.iter().map(|&i| std::mem::take(&mut v[i])).collect();
    for (dst, src) in v.iter_mut().zip(rows) {
        *dst = src;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn random_symmetric(n: usize, seed: u64) -> Vec<Vec<f64>> {
        let mut r = Rng::new(seed);
        let mut a = vec![vec![0.0; n]; n];
        for i in 0..n {
            for j in 0..=i {
                let x = r.normal();
                a[i][j] = x;
                a[j][i] = x;
            }
        }
        a
    }

    /// QL agrees with Jacobi (a different algorithm) and its vectors diagonalise the
    /// matrix: `A v = λ v` and `VᵀV = I`.
    #[test]
    fn householder_ql_matches_jacobi_and_diagonalises() {
        for (n, seed) in [(1, 1), (2, 2), (7, 3), (40, 4)] {
            let a = random_symmetric(n, seed);
            let (vals, vecs) = symmetric_eigen(a.clone());
            let (mut jv, _) = jacobi_eigen(a.clone());
            jv.sort_by(f64::total_cmp);
            for (x, y) in vals.iter().zip(&jv) {
                assert!((x - y).abs() < 1e-10, "n={n}: {vals:?} vs {jv:?}");
            }
            for c in 0..n {
                for i in 0..n {
                    let av: f64 = (0..n).map(|k| a[i][k] * vecs[k][c]).sum();
                    assert!((av - vals[c] * vecs[i][c]).abs() < 1e-10, "n={n}");
                }
                for c2 in 0..n {
                    let g: f64 = (0..n).map(|k| vecs[k][c] * vecs[k][c2]).sum();
                    assert!((g - f64::from(u8::from(c == c2))).abs() < 1e-10);
                }
            }
        }
    }

    /// The tridiagonal solver on T = tridiag(-1, 2, -1), whose eigenvalues are
    /// 2 − 2cos(kπ/(n+1)) with eigenvectors sin(jkπ/(n+1)).
    #[test]
    fn tridiagonal_eigen_matches_the_closed_form() {
        let n = 12;
        let (vals, first) = tridiagonal_eigen(&vec![2.0; n], &vec![-1.0; n - 1]);
        let pi = std::f64::consts::PI;
        for k in 1..=n {
            let want = 2.0 - 2.0 * (k as f64 * pi / (n + 1) as f64).cos();
            assert!((vals[k - 1] - want).abs() < 1e-12, "{vals:?}");
            // Unit eigenvector k has first component ±sqrt(2/(n+1)) sin(kπ/(n+1)).
            let w = (2.0 / (n + 1) as f64).sqrt() * (k as f64 * pi / (n + 1) as f64).sin();
            assert!((first[k - 1].abs() - w).abs() < 1e-12);
        }
        assert_eq!(tridiagonal_eigen(&[3.0], &[]), (vec![3.0], vec![1.0]));
    }
}
