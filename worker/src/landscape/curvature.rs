//! Curvature at one point of the surface: λmax and λmin of the loss's Hessian by
//! Lanczos (a one-vector Krylov space, fully reorthogonalised) and its trace by
//! Hutchinson, from exact Hessian-vector products on the scan's data.

use candle_core::{Result, Tensor};
use ridgeline_common::landscape::CurvatureSpec;
use ridgeline_common::linalg::lanczos::{Krylov, hutchinson, probes, start_block};

use super::eval::Loss;
use super::hessian::{Method, model_hvps};
use crate::models::Model;
use crate::train::{TrialEnd, TrialOutput};

/// One point's curvature, as `curvature.json`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Point {
    /// Its coordinates along the directions.
    pub alpha: f64,
    /// (2-D scans.)
    pub beta: f64,
    /// The largest Ritz value and its residual ‖Hy − θy‖.
    pub lambda_max: (f64, f64),
    /// The smallest Ritz value and its residual.
    pub lambda_min: (f64, f64),
    /// Hutchinson's trace and its standard error.
    pub trace: (f64, f64),
    /// Lanczos steps taken (fewer than asked when the Krylov space is exhausted).
    pub steps: usize,
}

/// Curvature of `model`'s mean loss on `x`, `y` (`chunk` samples per pass) with respect
/// to the parameters `order`; `stream` seeds this point's start vector and probes.
#[allow(clippy::too_many_arguments)]
pub fn at_point(
    model: &dyn Model,
    order: &[usize],
    (x, y, chunk): (&Tensor, &Tensor, usize),
    loss: Loss,
    c: &CurvatureSpec,
    stream: u64,
    (alpha, beta): (f64, f64),
) -> Result<Point> {
    let n: usize = order
        .iter()
        .map(|&i| model.params()[i].var.elem_count())
        .sum();
    lanczos_at(n, c, stream, (alpha, beta), |v: &[Vec<f64>]| {
        Ok(model_hvps(model, order, x, y, loss, v, 1.0, Method::Exact, chunk)?.0)
    })
}

/// Curvature of a Hessian of `n` parameters given by its products `hvps` (of a block of
/// vectors): `c.steps` one-vector Lanczos steps for both ends, then `c.probes`
/// Hutchinson probes; `stream` seeds this point's start vector and probes.
pub fn lanczos_at<E>(
    n: usize,
    c: &CurvatureSpec,
    stream: u64,
    (alpha, beta): (f64, f64),
    mut hvps: impl FnMut(&[Vec<f64>]) -> std::result::Result<Vec<Vec<f64>>, E>,
) -> std::result::Result<Point, E> {
    let seed = c.seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut k = Krylov::default();
    let mut v = start_block(n, 1, seed);
    let mut steps = 0;
    while steps < c.steps && !v.is_empty() {
        let hv = hvps(&v)?;
        v = k.extend(v, hv);
        steps += 1;
    }
    let (top, bottom) = k.ends(1).expect("at least one step");
    let z = probes(n, c.probes, seed);
    let (tr, se) = hutchinson(&z, &hvps(&z)?);
    Ok(Point {
        alpha,
        beta,
        lambda_max: (top[0].value, top[0].residual),
        lambda_min: (bottom.value, bottom.residual),
        trace: (tr, se),
        steps,
    })
}

/// A curvature unit's result: λmax and the trace as metrics, the point as
/// `curvature.json`.
pub fn output(p: &Point) -> TrialOutput {
    TrialOutput {
        end: TrialEnd::Completed,
        final_metrics: vec![
            ("lambda_max".into(), p.lambda_max.0),
            ("trace".into(), p.trace.0),
        ],
        artifacts: vec![(
            "curvature.json".into(),
            serde_json::to_vec(p).expect("json"),
        )],
    }
}
