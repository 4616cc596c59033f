//! The standard normal distribution in double precision, with care in the tails: what
//! the truncated-normal kernels of TPE need (Optuna's `_truncnorm`).

use ridgeline_common::rng::Rng;

/// The standard normal CDF.
pub(super) fn ndtr(x: f64) -> f64 {
    0.5 * libm::erfc(-x / std::f64::consts::SQRT_2)
}

/// log Φ(x), accurate far into both tails.
fn log_ndtr(x: f64) -> f64 {
    if x > 6.0 {
        -ndtr(-x)
    } else if x > -20.0 {
        ndtr(x).ln()
    } else {
        // Asymptotic series of the Mills ratio.
        let x2 = x * x;
        -0.5 * x2 - (-x).ln() - 0.5 * (2.0 * std::f64::consts::PI).ln()
            + (1.0 - 1.0 / x2 + 3.0 / (x2 * x2) - 15.0 / (x2 * x2 * x2)).ln()
    }
}

/// log(Φ(b) − Φ(a)) for a ≤ b, without cancellation in either tail (Optuna's
/// `_log_gauss_mass`).
pub(super) fn log_gauss_mass(a: f64, b: f64) -> f64 {
    let log_diff = |p: f64, q: f64| p + (-(q - p).exp()).ln_1p();
    // Beyond 8.5 standard deviations a tail holds less than 1e-17, under half an ulp of
    // 1: most kernels are narrow and far from both ends, and need no erfc at all.
    const FAR: f64 = 8.5;
    if a < -FAR && b > FAR {
        return 0.0;
    }
    if b <= 0.0 {
        log_diff(log_ndtr(b), log_ndtr(a))
    } else if a > 0.0 {
        log_diff(log_ndtr(-a), log_ndtr(-b))
    } else {
        (-ndtr(a) - ndtr(-b)).ln_1p()
    }
}

/// The log mass of a cell [a, b] (in standard deviations). A cell more than 12
/// deviations out holds under e^-72 of a kernel; next to the prior's share of any cell
/// (above e^-15) such a kernel changes the mixture by less than 1e-25, so its mass is
/// bounded by the tail's leading term, φ(z)/z, without an erfc.
pub(super) fn cell_log_mass(a: f64, b: f64) -> f64 {
    const FAR: f64 = 12.0;
    let tail = |z: f64| -0.5 * z * z - z.ln() - 0.5 * (2.0 * std::f64::consts::PI).ln();
    if a > FAR {
        tail(a)
    } else if b < -FAR {
        tail(-b)
    } else {
        log_gauss_mass(a, b)
    }
}

/// Φ⁻¹(p): Acklam's rational approximation, polished by one Halley step.
pub(super) fn ndtri(p: f64) -> f64 {
    if p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if p >= 1.0 {
        return f64::INFINITY;
    }
    const A: [f64; 6] = [
        -3.969683028665376e+01,
        2.209460984245205e+02,
        -2.759285104469687e+02,
        1.383_577_518_672_69e2,
        -3.066479806614716e+01,
        2.506628277459239e+00,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e+01,
        1.615858368580409e+02,
        -1.556989798598866e+02,
        6.680131188771972e+01,
        -1.328068155288572e+01,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-03,
        -3.223964580411365e-01,
        -2.400758277161838e+00,
        -2.549732539343734e+00,
        4.374664141464968e+00,
        2.938163982698783e+00,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-03,
        3.224671290700398e-01,
        2.445134137142996e+00,
        3.754408661907416e+00,
    ];
    let tail = |q: f64| {
        let r = (-2.0 * q.ln()).sqrt();
        (((((C[0] * r + C[1]) * r + C[2]) * r + C[3]) * r + C[4]) * r + C[5])
            / ((((D[0] * r + D[1]) * r + D[2]) * r + D[3]) * r + 1.0)
    };
    let x = if p < 0.02425 {
        tail(p)
    } else if p > 1.0 - 0.02425 {
        -tail(1.0 - p)
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    };
    let e = ndtr(x) - p;
    let u = e * (2.0 * std::f64::consts::PI).sqrt() * (0.5 * x * x).exp();
    x - u / (1.0 + 0.5 * x * u)
}

/// A standard normal draw truncated to [a, b], by inversion. The lower-tail form is
/// used on whichever side keeps the probabilities away from 1.
pub(super) fn truncnorm_sample(rng: &mut Rng, a: f64, b: f64) -> f64 {
    let u = rng.next_f64();
    let z = if a > 0.0 {
        // Entirely in the upper tail: mirror it.
        let (pa, pb) = (ndtr(-b), ndtr(-a));
        -ndtri(pa + (1.0 - u) * (pb - pa))
    } else {
        let (pa, pb) = (ndtr(a), ndtr(b));
        let q = pa + u * (pb - pa);
        if q < 0.5 {
            ndtri(q)
        } else {
            -ndtri(ndtr(-b) + (1.0 - u) * (pb - pa))
        }
    };
    z.clamp(a, b)
}
