//! The Ridgeline coordinator: a pure scheduling [`core`], [`search`] algorithms, the
//! SQLite [`store`], and the gRPC [`service`] that feeds the core from one event loop.

pub mod core;
pub mod search;
