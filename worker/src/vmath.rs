//! Elementwise math over f32 slices, written so that the compiler vectorises it, and
//! compiled three times (AVX-512, AVX2, baseline) with the widest picked at run time.
//!
//! libm's `expf` is a call per element that nothing vectorises; a transformer point
//! takes it tens of millions of times (softmax over every causal score, GELU, SiLU, the
//! log-softmax over the vocabulary): 7 % of a GPT-2 scan in `__expf_fma` and another
//! fifth in the scalar loops around it (perf). [`exp`] is Cephes' `expf` (range
//! reduction by ln 2 in two parts, a degree-6 polynomial, the power of two put into the
//! exponent bits): within 2 ulp of libm's over the range that is not 0 or infinite.
//!
//! Every version runs the same operations in the same order (no fused multiply-adds,
//! which Rust never forms by itself; reductions in [`LANES`] fixed lanes), so the results
//! are the same bits whichever version a machine runs.

/// Lanes of the reductions: partial sums and maxima over `i % LANES`, then combined in
/// lane order.
const LANES: usize = 16;

/// `e^x` in f32; NaN stays NaN, below −87.3 gives 0, above 88.3 gives +∞.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 · 2^23: adding and subtracting it rounds to the nearest integer (|v| < 2^22).
    const ROUND: f32 = 12_582_912.0;
    // NaN stays NaN through clamp.
    let c = x.clamp(-87.3, 88.3);
    let n = (c * LOG2E + ROUND) - ROUND;
    let r = c - n * LN2_HI - n * LN2_LO;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let y = p * r * r + r + 1.0;
    // n is an integer in [-126, 127]: 2^n by its exponent bits.
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    let v = y * scale;
    if x < -87.3 {
        0.0
    } else if x > 88.3 {
        f32::INFINITY
    } else {
        v
    }
}

/// GELU (tanh form, as candle's and GPT-2's): `0.5 v (1 + tanh(√(2/π) (v + 0.044715 v³)))`,
/// the tanh by one [`exp`].
#[inline(always)]
fn gelu1(v: f32) -> f32 {
    const S: f32 = 0.797_884_6;
    let y = S * v * (1.0 + 0.044715 * v * v);
    let e = exp(2.0 * y.abs());
    let t = (1.0 - 2.0 / (e + 1.0)).copysign(y);
    0.5 * v * (1.0 + t)
}

/// GELU's derivative (tanh form): `0.5 (1 + t) + 0.5 v (1 − t²) √(2/π) (1 + 3 · 0.044715 v²)`
/// with `t` the tanh of [`gelu1`], by one [`exp`].
#[inline(always)]
fn gelu_grad1(v: f32) -> f32 {
    const S: f32 = 0.797_884_6;
    const A: f32 = 0.044715;
    let y = S * v * (1.0 + A * v * v);
    let e = exp(2.0 * y.abs());
    let t = (1.0 - 2.0 / (e + 1.0)).copysign(y);
    0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * S * (1.0 + 3.0 * A * v * v)
}

/// Defines `pub fn NAME(args) -> ret { body }` as three compilations of `body` and a
/// run-time choice between them.
macro_rules! widest {
    ($(#[$m:meta])* pub fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        pub fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn v4($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                #[target_feature(enable = "avx2")]
                unsafe fn v3($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F.
                    return unsafe { v4($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has AVX2.
                    return unsafe { v3($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

/// `step` folded over `xs` in [`LANES`] lanes from `init`, the lanes then folded in
/// order with `combine` and the remainder with `step`.
#[inline(always)]
fn reduce(
    xs: &[f32],
    init: f32,
    step: impl Fn(f32, f32) -> f32,
    combine: impl Fn(f32, f32) -> f32,
) -> f32 {
    let mut lanes = [init; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for c in &mut chunks {
        for (l, v) in lanes.iter_mut().zip(c) {
            *l = step(*l, *v);
        }
    }
    let mut acc = init;
    for l in lanes {
        acc = combine(acc, l);
    }
    for v in chunks.remainder() {
        acc = step(acc, *v);
    }
    acc
}

#[inline(always)]
fn larger(a: f32, b: f32) -> f32 {
    if b > a { b } else { a }
}

widest! {
    /// The largest element (−∞ for none; NaNs are passed over).
    pub fn max(xs: &[f32]) -> f32 {
        reduce(xs, f32::NEG_INFINITY, larger, larger)
    }
}

widest! {
    /// `Σ xs`, in [`LANES`] lanes.
    pub fn sum(xs: &[f32]) -> f32 {
        reduce(xs, 0.0, |a, v| a + v, |a, b| a + b)
    }
}

widest! {
    /// `Σ (xs − m)²`, in [`LANES`] lanes.
    pub fn sum_sq_dev(xs: &[f32], m: f32) -> f32 {
        reduce(xs, 0.0, |a, v| a + (v - m) * (v - m), |a, b| a + b)
    }
}

widest! {
    /// `Σ e^(x − m)` over `xs`.
    pub fn sum_exp(xs: &[f32], m: f32) -> f32 {
        reduce(xs, 0.0, |a, v| a + exp(v - m), |a, b| a + b)
    }
}

widest! {
    /// `out[i] = e^(xs[i] − m)`, and their sum in [`LANES`] lanes.
    pub fn exp_shifted(out: &mut [f32], xs: &[f32], m: f32) -> f32 {
        for (o, v) in out.iter_mut().zip(xs) {
            *o = exp(*v - m);
        }
        sum(out)
    }
}

widest! {
    /// Softmax of `xs · scale` in place.
    pub fn softmax_scaled(xs: &mut [f32], scale: f32) {
        for v in xs.iter_mut() {
            *v *= scale;
        }
        let m = max(xs);
        for v in xs.iter_mut() {
            *v = exp(*v - m);
        }
        let inv = 1.0 / sum(xs);
        for v in xs.iter_mut() {
            *v *= inv;
        }
    }
}

widest! {
    /// `xs[i] = gelu(xs[i] + bias[i])`.
    pub fn gelu_bias(xs: &mut [f32], bias: &[f32]) {
        for (v, b) in xs.iter_mut().zip(bias) {
            *v = gelu1(*v + b);
        }
    }
}

widest! {
    /// `out[i] = gelu(xs[i])`.
    pub fn gelu(out: &mut [f32], xs: &[f32]) {
        for (o, v) in out.iter_mut().zip(xs) {
            *o = gelu1(*v);
        }
    }
}

widest! {
    /// `g[i] *= gelu'(xs[i])`: the gradient through GELU.
    pub fn gelu_grad(g: &mut [f32], xs: &[f32]) {
        for (g, v) in g.iter_mut().zip(xs) {
            *g *= gelu_grad1(*v);
        }
    }
}

widest! {
    /// `g[i] = silu(g[i]) · u[i]`.
    pub fn silu_mul(g: &mut [f32], u: &[f32]) {
        for (g, u) in g.iter_mut().zip(u) {
            *g = *g / (1.0 + exp(-*g)) * u;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Units in the last place between two finite f32s of the same sign.
    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn exp_is_within_two_ulp_of_the_f64_value() {
        let mut worst = 0;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp() as f32;
            worst = worst.max(ulps(exp(x), want));
            x += 0.000_97;
        }
        assert!(worst <= 2, "{worst} ulp");
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(100.0), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
    }

    #[test]
    fn slice_functions_match_f64_and_the_scalar_forms() {
        let xs: Vec<f32> = (0..1000)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.13)
            .collect();
        let f64s: Vec<f64> = xs.iter().map(|&v| v as f64).collect();
        let m = f64s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        assert_eq!(max(&xs) as f64, m);
        let s: f64 = f64s.iter().sum();
        assert!((sum(&xs) as f64 - s).abs() < 1e-3);
        let se: f64 = f64s.iter().map(|v| (v - m).exp()).sum();
        assert!((sum_exp(&xs, m as f32) as f64 - se).abs() < 1e-5 * se);
        let mut e = vec![0f32; xs.len()];
        assert!((exp_shifted(&mut e, &xs, m as f32) as f64 - se).abs() < 1e-5 * se);
        for (got, v) in e.iter().zip(&f64s) {
            let want = (v - m).exp();
            assert!((*got as f64 - want).abs() <= 1e-6 * want, "{got} {want}");
        }
        let mean = s / 1000.0;
        let ss: f64 = f64s.iter().map(|v| (v - mean) * (v - mean)).sum();
        assert!((sum_sq_dev(&xs, mean as f32) as f64 - ss).abs() < 1e-5 * ss);
        let mut p = xs.clone();
        softmax_scaled(&mut p, 0.5);
        let z: f64 = f64s.iter().map(|v| (0.5 * v).exp()).sum();
        for (got, v) in p.iter().zip(&f64s) {
            let want = (0.5 * v).exp() / z;
            assert!(
                (*got as f64 - want).abs() <= 1e-5 * want + 1e-12,
                "{got} {want}"
            );
        }
        let bias: Vec<f32> = (0..1000).map(|i| (i % 7) as f32 * 0.01).collect();
        let mut g = xs.clone();
        gelu_bias(&mut g, &bias);
        for ((got, v), b) in g.iter().zip(&xs).zip(&bias) {
            let v = (*v + *b) as f64;
            let want = 0.5
                * v
                * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (v + 0.044715 * v.powi(3))).tanh());
            assert!(
                (*got as f64 - want).abs() <= 1e-6 * want.abs().max(1.0),
                "{got} {want}"
            );
        }
        let mut s = xs.clone();
        silu_mul(&mut s, &bias);
        for ((got, v), u) in s.iter().zip(&xs).zip(&bias) {
            let v = *v as f64;
            let want = v / (1.0 + (-v).exp()) * *u as f64;
            assert!(
                (*got as f64 - want).abs() <= 1e-6 * want.abs().max(1e-3),
                "{got} {want}"
            );
        }
    }
}
