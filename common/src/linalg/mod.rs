//! Dense linear algebra for the Hessian's eigenvalues and spectra: pure functions on
//! `f64` slices, no I/O, shared by the coordinator and the tests that check it.

// Dense linear algebra on small matrices reads most clearly with explicit indices.
#![allow(clippy::needless_range_loop)]

pub mod eigen;
pub mod lanczos;
pub mod slq;

/// `a · b`.
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `y += a x`.
pub fn axpy(y: &mut [f64], a: f64, x: &[f64]) {
    y.iter_mut().zip(x).for_each(|(y, x)| *y += a * x);
}

/// The mean of `x` and its standard error (NaN for fewer than two values).
pub fn mean_and_se(x: &[f64]) -> (f64, f64) {
    let p = x.len() as f64;
    let mean = x.iter().sum::<f64>() / p;
    let var = if x.len() > 1 {
        x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (p - 1.0)
    } else {
        f64::NAN
    };
    (mean, (var / p).sqrt())
}

/// Orthonormalises `block` against `basis` and itself (two passes of Gram-Schmidt, the
/// "twice is enough" rule); drops vectors that become negligible.
pub fn orthonormalise(basis: &[Vec<f64>], block: Vec<Vec<f64>>) -> Vec<Vec<f64>> {
    let mut out: Vec<Vec<f64>> = Vec::new();
    for mut v in block {
        let norm0 = dot(&v, &v).sqrt();
        for _ in 0..2 {
            for b in basis.iter().chain(&out) {
                let c = dot(&v, b);
                axpy(&mut v, -c, b);
            }
        }
        let n = dot(&v, &v).sqrt();
        if n > 1e-10 * norm0.max(f64::MIN_POSITIVE) && n > 0.0 {
            v.iter_mut().for_each(|x| *x /= n);
            out.push(v);
        }
    }
    out
}
