//! The directions of an evaluator scan, made on the worker from θ* as the evaluator
//! hands it over: random (drawn from the sweep's seed with the same code and bits as
//! built-in scans), towards target checkpoints, or read from a file the submission
//! carried.

use ridgeline_common::landscape::{
    DirectionKind, HostTensor, LandscapeSpec, difference, flat_order, random_direction,
};

use super::super::load::Fetch;
use crate::UnitError;

/// The scan's directions (one per axis) at θ* = `weights`.
pub fn make(
    l: &LandscapeSpec,
    weights: &[HostTensor],
    fetch: Fetch<'_>,
) -> Result<Vec<Vec<HostTensor>>, UnitError> {
    let axes: &[&str] = if l.y.is_some() { &["x", "y"] } else { &["x"] };
    let d = &l.directions;
    match d.kind {
        DirectionKind::Random => Ok((0..axes.len() as u64)
            .map(|axis| random_direction(d, weights, axis))
            .collect()),
        DirectionKind::Target => [
            ("landscape.directions.to", "to.safetensors"),
            ("landscape.directions.y_to", "y_to.safetensors"),
        ][..axes.len()]
            .iter()
            .map(|(field, name)| {
                let to = host_tensors(&fetch(name)?, field)?;
                let to = pick(&to, weights, "", field)?;
                difference(weights, &to).map_err(|e| format!("{field}: {e}").into())
            })
            .collect(),
        DirectionKind::File => {
            let field = "landscape.directions.file";
            let all = host_tensors(&fetch("file.safetensors")?, field)?;
            axes.iter().map(|a| pick(&all, weights, a, field)).collect()
        }
        DirectionKind::Pca => Err(
            "landscape.directions.type: PCA directions need a Ridgeline training trajectory".into(),
        ),
    }
}

/// The tensors `PREFIX.NAME` of `from` for every tensor of `like`, named as in `like`
/// (every one must be there, with its shape).
fn pick(
    from: &[HostTensor],
    like: &[HostTensor],
    prefix: &str,
    field: &str,
) -> Result<Vec<HostTensor>, UnitError> {
    like.iter()
        .map(|w| {
            let key = if prefix.is_empty() {
                w.name.clone()
            } else {
                format!("{prefix}.{}", w.name)
            };
            let t = from
                .iter()
                .find(|t| t.name == key)
                .ok_or_else(|| format!("{field}: no tensor {key} (the model has {})", w.name))?;
            if t.shape != w.shape {
                return Err(format!(
                    "{field}: {key} has shape {:?}, the model's {} {:?}",
                    t.shape, w.name, w.shape
                )
                .into());
            }
            Ok(HostTensor {
                name: w.name.clone(),
                ..t.clone()
            })
        })
        .collect()
}

/// The tensors of a safetensors file (f32, or f64 rounded to f32), in Ridgeline's flat
/// order; `what` names the file in errors.
pub fn host_tensors(bytes: &[u8], what: &str) -> Result<Vec<HostTensor>, UnitError> {
    let st =
        safetensors::SafeTensors::deserialize(bytes).map_err(|err| format!("{what}: {err}"))?;
    let mut out: Vec<HostTensor> = st
        .tensors()
        .into_iter()
        .map(|(name, t)| {
            let data = match t.dtype() {
                safetensors::Dtype::F32 => t
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                    .collect(),
                safetensors::Dtype::F64 => t
                    .data()
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                    .collect(),
                other => return Err(format!("{what}: {name} is {other:?}, not f32 or f64")),
            };
            Ok(HostTensor {
                name,
                shape: t.shape().to_vec(),
                data,
            })
        })
        .collect::<Result<_, _>>()?;
    out.sort_by_key(|t| flat_order(&t.name));
    Ok(out)
}

/// The directions as built-in scans store them: `x.NAME` and `y.NAME`, f32.
pub fn file(dirs: &[Vec<HostTensor>]) -> Result<Vec<u8>, UnitError> {
    let named: Vec<(String, &HostTensor, Vec<u8>)> = dirs
        .iter()
        .zip(["x", "y"])
        .flat_map(|(d, prefix)| {
            d.iter()
                .map(move |t| (format!("{prefix}.{}", t.name), t, le_bytes(&t.data)))
        })
        .collect();
    let views = named
        .iter()
        .map(|(name, t, bytes)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, t.shape.clone(), bytes)
                .map(|v| (name.clone(), v))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| format!("directions: {err}"))?;
    safetensors::serialize(views, None).map_err(|err| format!("directions: {err}").into())
}

fn le_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// FNV-1a (48 bits) of the directions' f32 bytes in order: x's tensors, then y's.
pub fn fnv48<'a>(tensors: impl Iterator<Item = &'a HostTensor>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for t in tensors {
        for x in &t.data {
            for b in x.to_le_bytes() {
                h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
        }
    }
    h & ((1 << 48) - 1)
}
