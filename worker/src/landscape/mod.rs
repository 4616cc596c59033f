//! Loss-landscape geometry: directions, batched slice evaluation, Hessian spectra.

pub mod curvature;
pub mod curve;
pub mod eval;
pub mod evaluator;
pub mod exec;
pub mod hessian;
mod later;
pub mod load;
pub mod perturb;
