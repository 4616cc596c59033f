//! Shared pieces of Ridgeline: the generated wire contract, newtype ids, sweep specs and
//! the grid math that both the coordinator and the workers rely on.
#![warn(missing_docs)]

pub mod grid;
pub mod ids;
pub mod intrinsic;
pub mod landscape;
pub mod linalg;
pub mod net;
pub mod params;
pub mod pareto;
pub mod rng;
pub mod spec;
pub mod telemetry;

/// Code generated from `proto/ridgeline/v1/*.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("ridgeline.v1");
}

/// Version of the worker protocol. A worker whose version differs is refused at
/// registration with a message that names both.
/// 2: specs are fetched once per sweep (blob `spec.json`), outcomes carry their history,
/// workers may ask for their old id back.
/// 3: command trials (log chunks in reports), the `pruned` unit state.
/// 4: a secret issued with each worker id, carried by the worker's requests.
pub const PROTOCOL_VERSION: u32 = 4;

/// The most log one attempt of a command trial keeps: the coordinator cuts there, and
/// workers stop sending past it.
pub const MAX_LOG_BYTES: u64 = 64 << 20;

/// The largest gRPC message either side accepts or sends (checkpoints travel in reports).
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;
