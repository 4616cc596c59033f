//! The Ridgeline coordinator: a pure scheduling [`core`], [`search`] algorithms, the
//! SQLite [`store`], and the gRPC [`service`] that feeds the core from one event loop.

mod convert;
pub mod core;
pub mod fsafe;
pub mod landscape;
pub mod plot;
pub mod schedulers;
pub mod search;
pub mod service;
pub mod store;
pub mod synthetic;
pub mod telemetry;

pub use service::{CoordinatorConfig, DEFAULT_METRICS_RETENTION_MS, Limits, ServeError, serve};
