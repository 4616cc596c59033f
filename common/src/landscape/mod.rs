//! Landscape scans: the spec section, the grid and its tiles, and the directions.
//!
//! Directions are computed here in plain Rust on f32 data with f64 arithmetic, not with a
//! tensor library: the coordinator draws them once per sweep from the checkpoint and
//! every worker, CPU or GPU, receives the same bytes.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

mod directions;
mod validate;

pub use directions::{
    HostTensor, ParamKind, difference, flat_order, name_key, norms_and_cosine, param_kind,
    random_direction, tensor_direction,
};

/// One axis of a scan: `points` values evenly spaced from `min` to `max`, both included.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Axis {
    /// First value.
    pub min: f64,
    /// Last value.
    pub max: f64,
    /// Number of values (at least 1).
    pub points: usize,
}

impl Axis {
    /// The `i`-th value. Computed as `min + i * (max - min) / (points - 1)` so that the
    /// endpoints are exact.
    pub fn value(&self, i: usize) -> f64 {
        if self.points <= 1 {
            self.min
        } else {
            self.min + (self.max - self.min) * i as f64 / (self.points - 1) as f64
        }
    }

    /// All values.
    pub fn values(&self) -> Vec<f64> {
        (0..self.points).map(|i| self.value(i)).collect()
    }
}

/// How random directions are rescaled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Normalization {
    /// Per slice along dim 0 (filter / row), to the weights' slice norm (Li et al.).
    #[default]
    Filter,
    /// Per tensor, to the weight tensor's norm.
    Layer,
    /// As drawn.
    None,
}

/// What 1-D tensors (biases, norm parameters) get.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ignore {
    /// Zero direction: the reference's `ignore = "biasbn"`.
    #[default]
    Biasbn,
    /// Nothing ignored: a copy of the weights.
    None,
}

/// Loss used to score points.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    /// Mean cross-entropy over samples (classification data).
    #[default]
    CrossEntropy,
    /// Mean squared error over all outputs (regression data).
    Mse,
}

/// Name of a scan tile's values (every point's loss, then its accuracy; f64, little
/// endian) in the tile's result, and in its unit folder on the coordinator.
pub const TILE_FILE: &str = "tile.f64";
/// The same for the second split of a `split = "both"` scan (the validation split).
pub const SECOND_TILE_FILE: &str = "tile_val.f64";

/// Largest grid whose `surface.vtp` is written unless `vtp = false` (256 x 256, ~10 MB).
pub const VTP_DEFAULT_POINTS: usize = 1 << 16;

/// Largest grid assembled before its sweep's end is published (tens of milliseconds);
/// larger ones are assembled on a thread of their own.
pub const SYNC_ASSEMBLY_POINTS: usize = 1 << 16;

/// A scan evaluated by the user's code: the worker starts `interpreter -m
/// ridgeline.torch.evaluator FUNCTION` once per slot and keeps it for the scan's tiles.
/// The function returns the model, the loss function and the data; the worker computes
/// the directions (the same code and bits as built-in scans) from the weights the
/// evaluator hands it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluatorSpec {
    /// `"package.module:function"` or `"file.py:function"`.
    pub python: String,
    /// The Python on the workers that has `ridgeline` and `torch` (default `python3`).
    #[serde(default)]
    pub interpreter: Option<String>,
    /// Where the function is imported from (default: the spec's folder).
    #[serde(default)]
    pub workdir: Option<PathBuf>,
    /// Seconds one request (starting, or one tile) may take before the evaluator counts
    /// as hung: it is stopped and the unit fails (and is retried).
    #[serde(default = "hess::evaluator_timeout")]
    pub timeout: f64,
    /// The precision the points are evaluated in.
    #[serde(default)]
    pub dtype: EvalDtype,
    /// Grid points evaluated together in one forward pass (`torch.func.vmap` over
    /// stacked parameters): faster for small models, P times the activations' memory;
    /// the model and loss must be `vmap`-able (no data-dependent Python control flow).
    #[serde(default = "hess::one")]
    pub points_per_pass: usize,
}

/// The precision an evaluator computes in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EvalDtype {
    /// The model's own dtype (and its data's), as the function returns them.
    #[default]
    Model,
    /// The model and the floating data cast to float32.
    Float32,
    /// The model and the floating data cast to float64 (θ* + α·d₁ + β·d₂ is then not
    /// rounded at all).
    Float64,
}

impl EvalDtype {
    /// The name the evaluator takes (`RIDGELINE_DTYPE`).
    pub fn as_str(self) -> &'static str {
        match self {
            EvalDtype::Model => "model",
            EvalDtype::Float32 => "float32",
            EvalDtype::Float64 => "float64",
        }
    }
}

/// Which split of the data the loss is evaluated on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// The training split.
    #[default]
    Train,
    /// The validation split.
    Val,
    /// Both: the surface on the training split, and the same points on the validation
    /// split as a second surface (`val_surface.npy`; `train_*` and `test_*` in
    /// surface.h5, as the loss-landscape reference's 1-D plots expect). Tiles cost twice
    /// as much; the Hessian and curvature use the training split.
    Both,
}

impl Split {
    /// The split the surface (and the Hessian, curvature and curves) are evaluated on.
    pub fn primary(self) -> Split {
        match self {
            Split::Both => Split::Train,
            s => s,
        }
    }

    /// The second surface's split, when there is one.
    pub fn second(self) -> Option<Split> {
        (self == Split::Both).then_some(Split::Val)
    }
}

/// Where the directions come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DirectionKind {
    /// Gaussian, normalised (Li et al.).
    #[default]
    Random,
    /// Towards other checkpoints: x = θ₂ − θ (interpolation), y = θ₃ − θ (a plane
    /// through three checkpoints).
    Target,
    /// Read from a safetensors file with tensors `x.<name>` (and `y.<name>`).
    File,
    /// The top principal components of a training trajectory (per-epoch checkpoints,
    /// kept with `train.keep_checkpoints = true`) around the scanned model.
    Pca,
}

/// Which tensors the directions cover (the reference's `dir_type`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DirType {
    /// Parameters only: batch-norm running statistics stay as they are.
    #[default]
    Weights,
    /// Parameters and batch-norm running statistics (treated as 1-D tensors, so they
    /// move only with `ignore = "none"`).
    States,
}

/// Directions of the scan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectionsSpec {
    /// Where they come from.
    #[serde(default, rename = "type")]
    pub kind: DirectionKind,
    /// Target: the checkpoint folder (or `sweep:ID/best`) that x points to.
    #[serde(default)]
    pub to: Option<String>,
    /// Target: the checkpoint that y points to (2-D plane through three checkpoints).
    #[serde(default)]
    pub y_to: Option<String>,
    /// File: a safetensors file of directions.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// PCA: the trial whose per-epoch checkpoints form the trajectory
    /// (`sweep:ID/trial/N`, `sweep:ID/best`, or with `run`, `trial:N` / `trial:best`).
    #[serde(default)]
    pub trajectory: Option<String>,
    /// Seed of the Gaussian draws.
    #[serde(default)]
    pub seed: u64,
    /// Rescaling.
    #[serde(default)]
    pub normalization: Normalization,
    /// 1-D tensors.
    #[serde(default)]
    pub ignore: Ignore,
    /// Whether batch-norm statistics are part of the directions.
    #[serde(default)]
    pub dir_type: DirType,
    /// PCA: mean-centre the trajectory's rows (sklearn's PCA, the reference's recipe);
    /// `false` takes the SVD of the uncentred rows θ_epoch − θ_final.
    #[serde(default = "yes")]
    pub pca_center: bool,
}

fn yes() -> bool {
    true
}

impl Default for DirectionsSpec {
    fn default() -> Self {
        DirectionsSpec {
            kind: DirectionKind::Random,
            to: None,
            y_to: None,
            file: None,
            trajectory: None,
            seed: 0,
            normalization: Normalization::Filter,
            ignore: Ignore::Biasbn,
            dir_type: DirType::Weights,
            pca_center: true,
        }
    }
}

/// The Hessian at the centre, from Hessian-vector products over data shards: block
/// Lanczos for both ends of the spectrum, Hutchinson's trace, and optionally the
/// spectral density by stochastic Lanczos quadrature.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HessianSpec {
    /// Eigenvalues reported from the top.
    #[serde(default = "hess::top_k")]
    pub top_k: usize,
    /// Vectors per Lanczos block (at least `top_k`; more converges faster).
    #[serde(default = "hess::block")]
    pub block: usize,
    /// Most Lanczos rounds (each: one Hessian-vector product per block vector and
    /// shard); the run stops earlier once the reported eigenvalues converge.
    #[serde(default = "hess::rounds")]
    pub rounds: usize,
    /// Rademacher probes for the trace (sent with the first round).
    #[serde(default = "hess::probes")]
    pub probes: usize,
    /// Data shards, each a work unit per round, summed by the coordinator.
    #[serde(default = "hess::shards")]
    pub shards: usize,
    /// Seed of the start block and the probes.
    #[serde(default)]
    pub seed: u64,
    /// How workers compute Hessian-vector products.
    #[serde(default)]
    pub method: HvpMethod,
    /// `finite_difference` only: the largest step tried, relative to ‖θ‖ (smaller ones
    /// follow, and each product keeps the step with the smallest estimated error).
    #[serde(default = "hess::epsilon")]
    pub epsilon: f64,
    /// An eigenvalue has converged when its residual ‖Hy − θy‖ is at most `tolerance`
    /// times the largest eigenvalue's magnitude.
    #[serde(default = "hess::tolerance")]
    pub tolerance: f64,
    /// Whether the bottom of the spectrum (λmin) must converge too before the run stops.
    #[serde(default = "hess::yes")]
    pub bottom: bool,
    /// The eigenvalue density by stochastic Lanczos quadrature (PyHessian's ESD).
    #[serde(default)]
    pub density: Option<DensitySpec>,
}

impl HessianSpec {
    /// Rounds the Hessian may take at most: block Lanczos's, or the density's steps.
    pub fn max_rounds(&self) -> usize {
        self.rounds
            .max(self.density.as_ref().map_or(0, |d| d.steps))
    }

    /// The first round's vectors for a Hessian of `n` parameters, a function of the spec
    /// alone (so a worker can draw them as the coordinator does): Lanczos's orthonormal
    /// random start block, the trace's Rademacher probes, then the density's start
    /// vectors.
    pub fn first_vectors(&self, n: usize) -> Vec<Vec<f64>> {
        use crate::linalg::{lanczos, slq::Slq};
        let mut v = lanczos::start_block(n, self.block, self.seed);
        v.extend(lanczos::probes(n, self.probes, self.seed));
        if let Some(d) = &self.density {
            v.extend(Slq::start(n, d.probes, d.steps, self.seed).1);
        }
        v
    }
}

/// How a Hessian-vector product is computed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HvpMethod {
    /// Double backward through the model: exact up to rounding.
    #[default]
    Exact,
    /// Central differences of gradients, with the step chosen per vector from an
    /// error estimate (reported in hessian.json).
    FiniteDifference,
}

/// Stochastic Lanczos quadrature: `probes` independent Lanczos runs of `steps` steps
/// from Rademacher vectors; each gives a Gauss quadrature of the spectral measure.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DensitySpec {
    /// Independent Lanczos runs.
    #[serde(default = "hess::density_probes")]
    pub probes: usize,
    /// Lanczos steps (quadrature nodes) per run; one round each.
    #[serde(default = "hess::density_steps")]
    pub steps: usize,
    /// Width of the Gaussian that smooths the nodes into a density, relative to the
    /// spectrum's range.
    #[serde(default = "hess::density_sigma")]
    pub sigma: f64,
}

mod hess {
    pub fn one() -> usize {
        1
    }
    pub fn evaluator_timeout() -> f64 {
        600.0
    }

    pub fn top_k() -> usize {
        3
    }
    pub fn block() -> usize {
        4
    }
    pub fn rounds() -> usize {
        40
    }
    pub fn probes() -> usize {
        32
    }
    pub fn shards() -> usize {
        2
    }
    pub fn epsilon() -> f64 {
        1e-3
    }
    pub fn tolerance() -> f64 {
        1e-4
    }
    pub fn yes() -> bool {
        true
    }
    pub fn density_probes() -> usize {
        4
    }
    pub fn density_steps() -> usize {
        64
    }
    pub fn density_sigma() -> f64 {
        0.01
    }
}

/// Mode connectivity along a curve between the scanned checkpoint and `directions.to`
/// (Garipov et al. 2018): the curve's control point is trained to minimise the loss
/// averaged over the curve, then the loss and error along it are compared with the
/// straight line's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CurveSpec {
    /// The curve's shape.
    #[serde(default, rename = "type")]
    pub kind: CurveKind,
    /// Passes over the training split.
    #[serde(default = "curve::epochs")]
    pub epochs: usize,
    /// Adam's learning rate for the control point.
    #[serde(default = "curve::lr")]
    pub lr: f64,
    /// Samples per step (one t ~ U(0, 1) per step).
    #[serde(default = "curve::batch_size")]
    pub batch_size: usize,
    /// Values of t, evenly spaced on [0, 1], where the curve and the line are evaluated.
    #[serde(default = "curve::points")]
    pub points: usize,
    /// Seed of the shuffling and of the t draws.
    #[serde(default)]
    pub seed: u64,
}

/// The shape of a connecting curve with one control point θ_c.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CurveKind {
    /// Quadratic Bézier: (1−t)² θ₀ + 2t(1−t) θ_c + t² θ₁.
    #[default]
    Bezier,
    /// Polygonal chain θ₀ → θ_c → θ₁.
    Polychain,
}

impl CurveKind {
    /// The weights of θ₀, θ_c and θ₁ at `t`.
    pub fn weights(self, t: f64) -> (f64, f64, f64) {
        match self {
            CurveKind::Bezier => ((1.0 - t) * (1.0 - t), 2.0 * t * (1.0 - t), t * t),
            CurveKind::Polychain if t < 0.5 => (1.0 - 2.0 * t, 2.0 * t, 0.0),
            CurveKind::Polychain => (0.0, 2.0 - 2.0 * t, 2.0 * t - 1.0),
        }
    }
}

mod curve {
    pub fn epochs() -> usize {
        20
    }
    pub fn lr() -> f64 {
        0.01
    }
    pub fn batch_size() -> usize {
        128
    }
    pub fn points() -> usize {
        21
    }
}

/// Curvature over the surface: at every point of a coarse sub-grid spanning the scan's
/// axes, λmax (and λmin) of the Hessian by Lanczos and its trace by Hutchinson, from
/// exact Hessian-vector products on the scan's data; one work unit per point.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CurvatureSpec {
    /// Points per axis of the sub-grid (the scan's range, evenly spaced).
    #[serde(default = "curvature::points")]
    pub points: usize,
    /// Lanczos steps per point.
    #[serde(default = "curvature::steps")]
    pub steps: usize,
    /// Rademacher probes for the trace per point.
    #[serde(default = "curvature::probes")]
    pub probes: usize,
    /// Seed of the start vectors and probes.
    #[serde(default)]
    pub seed: u64,
}

mod curvature {
    pub fn points() -> usize {
        5
    }
    pub fn steps() -> usize {
        20
    }
    pub fn probes() -> usize {
        10
    }
}

/// What one unit of a scan computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanUnit {
    /// A tile of grid points.
    Tile(usize),
    /// Training and evaluating the connecting curve (`[landscape.curve]`).
    Curve,
    /// Curvature at point `k` of the sub-grid (`[landscape.curvature]`), row-major.
    Curvature(usize),
    /// Hessian-vector products of one Lanczos round on one data shard.
    Hvp {
        /// Lanczos round.
        round: usize,
        /// Data shard.
        shard: usize,
    },
}

/// The `[landscape]` section of a spec.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LandscapeSpec {
    /// Folder with `model.json` and `model.safetensors`, or `sweep:ID/best` for the best
    /// trial of a search sweep on the same coordinator.
    #[serde(default)]
    pub checkpoint: Option<String>,
    /// The user's own model, loss and data, evaluated by a process of theirs (a PyTorch
    /// evaluator) instead of a checkpoint Ridgeline loads.
    #[serde(default)]
    pub evaluator: Option<EvaluatorSpec>,
    /// The checkpoint path is readable by every worker (a shared file system): the
    /// workers read it there instead of receiving it through the coordinator, for
    /// checkpoints too large to upload.
    #[serde(default)]
    pub shared_checkpoint: bool,
    /// With `ridgeline run`: a search spec to run first (or reuse) whose best trial is
    /// scanned.
    #[serde(default)]
    pub train: Option<PathBuf>,
    /// Split the loss is evaluated on.
    #[serde(default)]
    pub split: Split,
    /// Whether to write `surface.vtp` (ParaView) for a 2-D scan. Unset: written for
    /// grids of at most [`VTP_DEFAULT_POINTS`] points (ASCII VTK costs ~150 bytes a
    /// point: 151 MB at 10^6 points).
    #[serde(default)]
    pub vtp: Option<bool>,
    /// `surface.vtp` (ParaView): heights `ln(loss + 0.1)` instead of the loss, as the
    /// reference's `h52vtp.py --log`.
    #[serde(default)]
    pub vtp_log: bool,
    /// `surface.vtp`: losses above this are clipped (h52vtp's `--zmax`).
    #[serde(default)]
    pub vtp_zmax: Option<f64>,
    /// Evaluate on at most this many samples of the split (language models: windows).
    #[serde(default)]
    pub samples: Option<usize>,
    /// Language models: evaluate on at most this many tokens (whole windows of
    /// `data.context`), the same tokens at every point.
    #[serde(default)]
    pub tokens: Option<usize>,
    /// Loss.
    #[serde(default)]
    pub loss: LossKind,
    /// Samples per chunk of the evaluation (memory: tile x chunk x width floats).
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Grid points per work unit (default 16).
    #[serde(default = "default_tile")]
    pub tile: usize,
    /// Directions.
    #[serde(default)]
    pub directions: DirectionsSpec,
    /// The first axis (α). Default: [-1, 1] at 51 points, or [-0.5, 1.5] at 401 points
    /// for interpolation towards a target.
    #[serde(default)]
    pub x: Option<Axis>,
    /// The second axis (β); absent for a 1-D scan.
    #[serde(default)]
    pub y: Option<Axis>,
    /// Curvature over a sub-grid (optional).
    #[serde(default)]
    pub curvature: Option<CurvatureSpec>,
    /// The connecting curve (optional; interpolation scans).
    #[serde(default)]
    pub curve: Option<CurveSpec>,
    /// The Hessian at the centre (optional).
    #[serde(default)]
    pub hessian: Option<HessianSpec>,
}

fn default_batch() -> usize {
    1024
}
/// 16 points per tile measured fastest per point in `benches/landscape.rs` (a tile of 64
/// keeps four times the activations live and runs ~30 % slower per point on CPU), and a
/// 16-point tile of 10k samples is still ~0.3 s of work against ~4 ms per lease/report.
fn default_tile() -> usize {
    16
}
impl LandscapeSpec {
    /// The first axis, explicit or the default for the kind of directions.
    pub fn x_axis(&self) -> Axis {
        self.x.clone().unwrap_or(match self.directions.kind {
            DirectionKind::Target if self.y.is_none() => Axis {
                min: -0.5,
                max: 1.5,
                points: 401,
            },
            _ => Axis {
                min: -1.0,
                max: 1.0,
                points: 51,
            },
        })
    }

    /// `(nx, ny)`; `ny` is 1 for a 1-D scan.
    pub fn shape(&self) -> (usize, usize) {
        (
            self.x_axis().points,
            self.y.as_ref().map_or(1, |y| y.points),
        )
    }

    /// Number of grid points.
    pub fn points(&self) -> usize {
        let (nx, ny) = self.shape();
        nx * ny
    }

    /// Whether the assembly writes `surface.vtp`: asked for, or by default on 2-D grids
    /// of at most [`VTP_DEFAULT_POINTS`].
    pub fn wants_vtp(&self) -> bool {
        self.y.is_some() && self.vtp.unwrap_or(self.points() <= VTP_DEFAULT_POINTS)
    }

    /// Whether the coordinator assembles this scan on a thread of its own after the
    /// sweep's end is published (clients then wait for `meta.json`, written last),
    /// rather than before: grids over [`SYNC_ASSEMBLY_POINTS`].
    pub fn assembled_in_background(&self) -> bool {
        self.points() > SYNC_ASSEMBLY_POINTS
    }

    /// Number of tiles.
    pub fn tiles(&self) -> usize {
        self.points().div_ceil(self.tile.max(1))
    }

    /// Number of work units: the tiles, the curve's unit, then `rounds x shards`
    /// Hessian units.
    pub fn units(&self) -> usize {
        self.hessian_base()
            + self
                .hessian
                .as_ref()
                .map_or(0, |h| h.max_rounds() * h.shards)
    }

    /// Index of the first Hessian unit: Hessian rounds are released one at a time, so
    /// they come after every unit that runs at once.
    pub fn hessian_base(&self) -> usize {
        self.tiles() + self.curvature_points() + usize::from(self.curve.is_some())
    }

    /// Points of the curvature sub-grid (0 without `[landscape.curvature]`).
    pub fn curvature_points(&self) -> usize {
        self.curvature_axes()
            .map_or(0, |(x, y)| x.points * y.map_or(1, |y| y.points))
    }

    /// The curvature sub-grid's axes: the scan's ranges with `points` values each.
    pub fn curvature_axes(&self) -> Option<(Axis, Option<Axis>)> {
        let c = self.curvature.as_ref()?;
        let sub = |a: &Axis| Axis {
            min: a.min,
            max: a.max,
            points: c.points,
        };
        Some((sub(&self.x_axis()), self.y.as_ref().map(sub)))
    }

    /// The coordinates `(α, β)` of point `k` (row-major) of the curvature sub-grid
    /// (β = 0 for 1-D scans).
    pub fn curvature_point(&self, k: usize) -> Option<(f64, f64)> {
        let (xa, ya) = self.curvature_axes()?;
        Some((
            xa.value(k % xa.points),
            ya.map_or(0.0, |y| y.value(k / xa.points)),
        ))
    }

    /// What unit `i` computes.
    pub fn unit(&self, i: usize) -> ScanUnit {
        let (t, h0) = (self.tiles(), self.hessian_base());
        let c = t + self.curvature_points();
        match &self.hessian {
            _ if i < t => ScanUnit::Tile(i),
            _ if i < c => ScanUnit::Curvature(i - t),
            _ if i < h0 => ScanUnit::Curve,
            Some(h) => ScanUnit::Hvp {
                round: (i - h0) / h.shards,
                shard: (i - h0) % h.shards,
            },
            None => ScanUnit::Tile(i),
        }
    }

    /// Row-major point indices `k = i * nx + j` (row `i` is `y_i`) of tile `t`.
    pub fn tile_range(&self, t: usize) -> std::ops::Range<usize> {
        let start = (t * self.tile).min(self.points());
        start..((t + 1) * self.tile).min(self.points())
    }

    /// Coordinates `(α, β)` of point `k`.
    pub fn point(&self, k: usize) -> (f64, f64) {
        let (nx, _) = self.shape();
        let (i, j) = (k / nx, k % nx);
        (
            self.x_axis().value(j),
            self.y.as_ref().map_or(0.0, |y| y.value(i)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_cover_a_non_square_grid_once() {
        let mut s: LandscapeSpec = serde_json::from_str(r#"{"checkpoint": "c", "x": {"min": -1, "max": 1, "points": 5}, "y": {"min": 0, "max": 2, "points": 3}, "tile": 4}"#).unwrap();
        assert_eq!((s.shape(), s.points(), s.tiles()), ((5, 3), 15, 4));
        let all: Vec<usize> = (0..s.tiles()).flat_map(|t| s.tile_range(t)).collect();
        assert_eq!(all, (0..15).collect::<Vec<_>>());
        // Row-major with rows along y: point 7 is row 1 (y = 1), column 2 (x = 0).
        assert_eq!(s.point(7), (0.0, 1.0));
        assert_eq!(s.point(14), (1.0, 2.0));
        s.y = None;
        assert_eq!((s.shape(), s.tiles()), ((5, 1), 2));
    }
}
