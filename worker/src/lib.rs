//! The Ridgeline worker: leases units from the coordinator and runs them with candle.

pub mod data;
pub mod landscape;
pub mod model;
pub mod runner;
pub mod train;
