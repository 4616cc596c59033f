//! A trained model's curvature as trial metrics (`[train.geometry]`): the Hessian of
//! the training loss at the trial's final weights, from exact products (double backward
//! in f64) on the training split's first samples; its top eigenvalue by Lanczos and its
//! trace by Hutchinson (the curvature maps' code), so that a search can rank by
//! flatness. Computed from the trial's checkpoint, as a scan of it would load it.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use ridgeline_common::landscape::{CurvatureSpec, flat_order};
use ridgeline_common::spec::GeometrySpec;

use crate::data::Data;
use crate::landscape::curvature::lanczos_at;
use crate::landscape::eval::Loss;
use crate::landscape::hessian::{Method, model_hvps};
use crate::models::ModelConfig;

/// Samples per pass of a Hessian-vector product.
const CHUNK: usize = 512;

/// The geometry metrics of the model in `artifacts` (`model.json`, `model.safetensors`)
/// on `data`'s training split.
pub fn measure(
    g: &GeometrySpec,
    artifacts: &[(String, Vec<u8>)],
    data: &Data,
    device: &Device,
) -> Result<Vec<(String, f64)>, String> {
    let file = |name: &str| {
        artifacts
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, b)| b.as_slice())
            .ok_or_else(|| format!("train.geometry: the trial left no {name}"))
    };
    let Data::Table(ds) = data else {
        return Err("train.geometry: the Hessian is taken for classifiers on sample data".into());
    };
    let e = |e: candle_core::Error| format!("train.geometry: {e}");
    let config: ModelConfig =
        serde_json::from_slice(file("model.json")?).map_err(|e| format!("model.json: {e}"))?;
    let tensors: HashMap<String, Tensor> =
        candle_core::safetensors::load_buffer(file("model.safetensors")?, device)
            .map_err(e)?
            .into_iter()
            .map(|(k, t)| Ok((k, t.to_dtype(DType::F64)?)))
            .collect::<candle_core::Result<_>>()
            .map_err(e)?;
    let model = config.load(&tensors, DType::F64, device)?;
    let params = model.params();
    let mut order: Vec<usize> = (0..params.len())
        .filter(|&i| params[i].trainable())
        .collect();
    order.sort_by_key(|&i| flat_order(&params[i].name));
    let n: usize = order.iter().map(|&i| params[i].var.elem_count()).sum();
    let rows = match g.samples {
        Some(k) => ds.train.head(k),
        None => ds.train.clone(),
    };
    if rows.y.is_empty() {
        return Err("train.geometry: the data has no class labels".into());
    }
    let x = Tensor::from_slice(&rows.x, (rows.len(), rows.dim), device).map_err(e)?;
    let y = Tensor::from_slice(&rows.y, rows.len(), device).map_err(e)?;
    let c = CurvatureSpec {
        points: 1,
        steps: g.steps,
        probes: g.probes,
        seed: g.seed,
    };
    let p = lanczos_at(n, &c, 0, (0.0, 0.0), |v: &[Vec<f64>]| {
        model_hvps(
            model.as_ref(),
            &order,
            &x,
            &y,
            Loss::CrossEntropy,
            v,
            1.0,
            Method::Exact,
            CHUNK,
        )
        .map(|r| r.0)
    })
    .map_err(e)?;
    Ok(vec![
        ("hessian_lambda_max".into(), p.lambda_max.0),
        ("hessian_lambda_max_residual".into(), p.lambda_max.1),
        ("hessian_trace".into(), p.trace.0),
        ("hessian_trace_std_error".into(), p.trace.1),
    ])
}
