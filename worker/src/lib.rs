//! The Ridgeline worker: leases units from the coordinator and runs them with candle.

mod cgroup;
pub mod data;
pub mod devices;
mod error;
pub mod executors;
pub mod fused;
pub mod geometry;
pub mod host;
pub mod landscape;
pub mod memory;
pub mod models;
pub mod runner;
pub mod subspace;
pub mod telemetry;
pub mod train;
pub mod vmath;

pub use error::WorkerError;
pub use memory::UnitError;
