//! A scan's arrays and reports for the landscape viewer, and every file of a sweep for
//! download: read through the coordinator's artifact API (ListArtifacts,
//! ReadArtifact), the same files `ridgeline download` fetches.

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::header::{CONTENT_DISPOSITION, CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use ridgeline_common::proto;
use serde_json::{Value, json};

use crate::Client;
use crate::http::{self, Body};
use crate::npy;

/// The largest file the viewer reads whole (a 2,000 × 2,000 surface of f64 is 32 MB).
const MAX_READ: usize = 64 << 20;
/// Points per axis the viewer is sent at most; larger grids are strided.
const MAX_AXIS: usize = 301;

async fn list(c: &mut Client, id: &str) -> Result<Vec<proto::ArtifactInfo>, tonic::Status> {
    Ok(c.list_artifacts(proto::ListArtifactsRequest {
        sweep_id: id.to_owned(),
        trial: None,
        best: false,
    })
    .await?
    .into_inner()
    .files)
}

/// A file's bytes as the coordinator streams them, from the start.
async fn open(
    c: &mut Client,
    id: &str,
    path: &str,
) -> Result<tonic::Streaming<proto::ArtifactChunk>, tonic::Status> {
    Ok(c.read_artifact(proto::ReadArtifactRequest {
        sweep_id: id.to_owned(),
        path: path.to_owned(),
        offset: 0,
        version: 0,
    })
    .await?
    .into_inner())
}

pub(crate) async fn read(c: &mut Client, id: &str, path: &str) -> Result<Vec<u8>, String> {
    let mut s = open(c, id, path)
        .await
        .map_err(|e| format!("{path}: {}", e.message()))?;
    let mut out = Vec::new();
    while let Some(chunk) = s.next().await {
        out.extend(chunk.map_err(|e| format!("{path}: {}", e.message()))?.data);
        if out.len() > MAX_READ {
            return Err(format!("{path}: larger than {MAX_READ} bytes"));
        }
    }
    Ok(out)
}

/// A 2-D array thinned to at most MAX_AXIS points per axis (every k-th), as rows; a
/// 1-D array as one row.
fn rows(a: &npy::Array, stride: (usize, usize)) -> Value {
    let (ny, nx) = match a.shape[..] {
        [n] => (1, n),
        [ny, nx] => (ny, nx),
        _ => return Value::Null,
    };
    let rows: Vec<Vec<Option<f64>>> = (0..ny)
        .step_by(stride.0)
        .map(|i| {
            (0..nx)
                .step_by(stride.1)
                .map(|j| Some(a.data[i * nx + j]).filter(|v| v.is_finite()))
                .collect()
        })
        .collect();
    json!(rows)
}

fn thin(v: &[f64], stride: usize) -> Vec<f64> {
    v.iter().step_by(stride).copied().collect()
}

/// `GET /api/sweeps/ID/landscape`: the surface (and accuracy, validation surfaces when
/// the scan has them) on its axes, with meta.json, hessian.json, curvature.json and
/// connectivity.json when present.
pub async fn landscape(mut c: Client, id: &str) -> Response<Body> {
    let files = match list(&mut c, id).await {
        Ok(f) => f,
        Err(s) => {
            return http::error(
                StatusCode::BAD_GATEWAY,
                format!("coordinator: {}", s.message()),
            );
        }
    };
    let has = |p: &str| files.iter().any(|f| f.path == p);
    let mut out = json!({});
    let mut arrays = Vec::new();
    for name in [
        "x",
        "y",
        "surface",
        "accuracy",
        "val_surface",
        "val_accuracy",
    ] {
        let path = format!("{name}.npy");
        if !has(&path) {
            continue;
        }
        match read(&mut c, id, &path)
            .await
            .and_then(|b| npy::parse(&b).map_err(|e| format!("{path}: {e}")))
        {
            Ok(a) => arrays.push((name, a)),
            Err(e) => return http::error(StatusCode::BAD_GATEWAY, e),
        }
    }
    let Some((_, surface)) = arrays.iter().find(|(n, _)| *n == "surface") else {
        return http::error(
            StatusCode::NOT_FOUND,
            format!("sweep {id} has no surface.npy (yet)"),
        );
    };
    let shape = surface.shape.clone();
    let (ny, nx) = match shape[..] {
        [n] => (1, n),
        [ny, nx] => (ny, nx),
        _ => {
            return http::error(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("surface.npy of shape {shape:?}"),
            );
        }
    };
    let stride = (ny.div_ceil(MAX_AXIS).max(1), nx.div_ceil(MAX_AXIS).max(1));
    out["shape"] = json!(shape);
    out["stride"] = json!([stride.0, stride.1]);
    for (name, a) in &arrays {
        out[*name] = match *name {
            "x" => json!(thin(&a.data, stride.1)),
            "y" => json!(thin(&a.data, stride.0)),
            _ if a.shape == shape => rows(a, stride),
            _ => Value::Null,
        };
    }
    for name in [
        "meta",
        "hessian",
        "curvature",
        "connectivity",
        "trajectory",
        "lmc",
    ] {
        let path = format!("{name}.json");
        if has(&path) {
            match read(&mut c, id, &path).await {
                Ok(b) => out[name] = serde_json::from_slice(&b).unwrap_or(Value::Null),
                Err(e) => return http::error(StatusCode::BAD_GATEWAY, e),
            }
        }
    }
    http::json(&out)
}

/// `GET /api/sweeps/ID/files`: the sweep's files (without the per-trial folders unless
/// `?trials=1`), for download.
pub async fn files(mut c: Client, id: &str, all: bool) -> Response<Body> {
    match list(&mut c, id).await {
        Ok(f) => http::json(&json!({
            "files": f.iter().filter(|f| all || !f.path.starts_with("trials/"))
                .map(|f| json!({ "path": f.path, "size": f.size })).collect::<Vec<_>>(),
        })),
        Err(s) => http::error(
            StatusCode::BAD_GATEWAY,
            format!("coordinator: {}", s.message()),
        ),
    }
}

/// `GET /api/sweeps/ID/files/PATH`: one file, streamed as the coordinator sends it.
pub async fn download(mut c: Client, id: &str, path: &str) -> Response<Body> {
    let stream = match open(&mut c, id, path).await {
        Ok(s) => s,
        Err(s) if s.code() == tonic::Code::NotFound || s.code() == tonic::Code::InvalidArgument => {
            return http::error(StatusCode::NOT_FOUND, s.message().to_owned());
        }
        Err(s) => {
            return http::error(
                StatusCode::BAD_GATEWAY,
                format!("coordinator: {}", s.message()),
            );
        }
    };
    let frames = stream.map(|c| {
        c.map(|c| Frame::data(Bytes::from(c.data)))
            .map_err(|e| std::io::Error::other(e.message().to_owned()))
    });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(frames)));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    let name = path.rsplit('/').next().unwrap_or("file");
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"{}\"",
        name.replace('"', "")
    )) {
        r.headers_mut().insert(CONTENT_DISPOSITION, v);
    }
    r
}
