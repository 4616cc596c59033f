//! The built-in training executor: trains any built-in model (MLP, CNN, ResNet, GPT-2,
//! Llama) with AdamW or SGD, warmup and a cosine schedule, gradient clipping, reporting
//! `train_loss`, `val_loss`, `val_accuracy` (and `val_perplexity` for LMs) after every
//! epoch.

use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{DType, Device, Tensor};
use ridgeline_common::params::Params;
use ridgeline_common::rng::Rng;
use ridgeline_common::spec::{Arch, Schedule, SweepSpec, TrainSpec, TrialConfig};

use crate::data::{Data, Samples, TextData};
use crate::models::{
    CnnConfig, MlpConfig, Model, ModelConfig, Task, TransformerConfig, train_cross_entropy,
};
use crate::subspace::Subspace;

mod optim;
pub mod state;

use optim::Optim;
pub use optim::Sgd;

/// How a trial ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrialEnd {
    /// All epochs ran.
    Completed,
    /// A loss became NaN or infinite.
    Diverged,
    /// The coordinator asked to stop.
    Cancelled,
}

/// The result of a trial.
pub struct TrialOutput {
    /// How it ended.
    pub end: TrialEnd,
    /// The last epoch's metrics.
    pub final_metrics: Vec<(String, f64)>,
    /// Files to keep: `model.safetensors` and `model.json` for completed trials.
    pub artifacts: Vec<(String, Vec<u8>)>,
}

/// Learning rate at optimizer step `step` of `total`: linear warmup over `warmup` steps,
/// then constant or cosine decay to `lr / 10`.
pub fn lr_at(t: &TrainSpec, step: usize, total: usize) -> f64 {
    if step < t.warmup {
        return t.lr * (step + 1) as f64 / t.warmup as f64;
    }
    match t.schedule {
        Schedule::Constant => t.lr,
        Schedule::Cosine => {
            let span = total.saturating_sub(t.warmup).max(1) as f64;
            let progress = ((step - t.warmup) as f64 / span).min(1.0);
            let min = t.lr / 10.0;
            min + 0.5 * (t.lr - min) * (1.0 + (std::f64::consts::PI * progress).cos())
        }
    }
}

/// One part of the data, ready to be cut into batches.
enum Split<'a> {
    /// Samples resident on the device.
    Table { x: Tensor, y: Tensor },
    /// Windows of a corpus, assembled per batch.
    Text {
        data: &'a TextData,
        starts: Vec<usize>,
        context: usize,
    },
}

impl<'a> Split<'a> {
    fn table(s: &Samples, device: &Device) -> candle_core::Result<Self> {
        Ok(Split::Table {
            x: Tensor::from_slice(&s.x, (s.len(), s.dim), device)?,
            y: Tensor::from_slice(&s.y, s.len(), device)?,
        })
    }

    fn text(data: &'a TextData, val: bool, context: usize) -> Self {
        Split::Text {
            data,
            starts: data.windows(val, context),
            context,
        }
    }

    fn len(&self) -> usize {
        match self {
            Split::Table { y, .. } => y.dim(0).unwrap_or(0),
            Split::Text { starts, .. } => starts.len(),
        }
    }

    /// Inputs and targets of the items `idx`.
    fn batch(&self, idx: &[u32], device: &Device) -> candle_core::Result<(Tensor, Tensor)> {
        match self {
            Split::Table { x, y } => {
                let i = Tensor::from_slice(idx, idx.len(), device)?;
                Ok((x.index_select(&i, 0)?, y.index_select(&i, 0)?))
            }
            Split::Text {
                data,
                starts,
                context,
            } => {
                let s: Vec<usize> = idx.iter().map(|&i| starts[i as usize]).collect();
                data.batch(&s, *context, device)
            }
        }
    }

    /// Items per evaluation chunk: ~2k samples (256 images for a convolutional model),
    /// or ~4k tokens. A digit's activations in a CNN take ~50 KB (16 channels of
    /// 28 × 28): 2,048 of them made 100 MB tensors, each mapped, zeroed page by page by
    /// the kernel and unmapped again (a fifth of a CNN's epoch in page faults, perf).
    fn chunk(&self, model: &dyn Model) -> usize {
        match self {
            Split::Table { .. } => match model.config() {
                ModelConfig::Cnn(_) | ModelConfig::Resnet(_) => 256,
                _ => 2048,
            },
            Split::Text { context, .. } => (4096 / context).max(1),
        }
    }
}

/// Mean cross-entropy and accuracy (token accuracy for LMs) of `model` on a split.
fn evaluate(
    model: &dyn Model,
    split: &Split<'_>,
    device: &Device,
) -> candle_core::Result<(f64, f64)> {
    let n = split.len() as u32;
    let (mut nll, mut hits, mut count) = (0f64, 0f64, 0usize);
    let all: Vec<u32> = (0..n).collect();
    for idx in all.chunks(split.chunk(model)) {
        let (x, y) = split.batch(idx, device)?;
        let (l, h, c) = model.score(&x, &y)?;
        nll += l;
        hits += h;
        count += c;
    }
    Ok((nll / count.max(1) as f64, hits / count.max(1) as f64))
}

/// The model a trial trains, from its config and the data's shape.
pub fn model_config(cfg: &TrialConfig, data: &Data) -> Result<ModelConfig, TrainError> {
    let m = &cfg.model;
    let bad = |r: String| TrainError::Spec(ridgeline_common::spec::SpecError::new("model.arch", r));
    Ok(match (m.arch, data) {
        (Arch::Mlp, Data::Table(d)) => ModelConfig::Mlp(MlpConfig::new(d.train.dim, d.classes, m)),
        (Arch::Cnn | Arch::Resnet, Data::Table(d)) => {
            let [c, h, w] = d.train.image.ok_or_else(|| {
                bad(
                    "a convolutional model needs images (IDX files, or data.image_shape for CSV)"
                        .into(),
                )
            })?;
            let c = CnnConfig {
                in_channels: c,
                height: h,
                width: w,
                classes: d.classes,
                channels: m.channels.clone(),
                blocks: m.blocks,
                batch_norm: m.batch_norm,
            };
            if m.arch == Arch::Cnn {
                ModelConfig::Cnn(c)
            } else {
                ModelConfig::Resnet(c)
            }
        }
        (Arch::Gpt2 | Arch::Llama, Data::Text(t)) => {
            let c = TransformerConfig {
                vocab: t.vocab,
                context: cfg.context,
                d_model: m.d_model,
                layers: m.layers,
                heads: m.heads,
                kv_heads: m.kv_heads.unwrap_or(m.heads),
                d_ff: m.ff_width(),
                norm_eps: 1e-5,
                rope_theta: 10_000.0,
                tie_embeddings: true,
            };
            c.validate().map_err(bad)?;
            if m.arch == Arch::Gpt2 {
                ModelConfig::Gpt2(c)
            } else {
                ModelConfig::Llama(c)
            }
        }
        (a, _) => return Err(bad(format!("{a:?} does not fit this kind of data"))),
    })
}

/// Errors that fail a trial.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The trial's parameters do not apply to the spec.
    #[error("{0}")]
    Spec(#[from] ridgeline_common::spec::SpecError),
    /// candle failed (out of memory, shape mismatch, ...).
    #[error("tensor computation: {0}")]
    Candle(#[from] candle_core::Error),
    /// The state a PBT round starts from does not fit it.
    #[error("resuming from the parent's training state: {0}")]
    Resume(String),
}

/// The part of a trial's training that one unit runs: all of it for a plain trial; for
/// a PBT round, epochs `first..=last` of a schedule `total` epochs long (the learning
/// rate follows the whole schedule), from the parent's state.
pub struct Stint {
    /// The first epoch trained (1 for a fresh start).
    pub first: usize,
    /// The last epoch trained.
    pub last: usize,
    /// Epochs the learning-rate schedule spans.
    pub total: usize,
    /// Where training resumes from (`first - 1` epochs trained).
    pub from: Option<state::TrainState>,
    /// Whether to add [`state::STATE_FILE`] to the artifacts, for a round to come.
    pub save_state: bool,
}

impl Stint {
    /// Every epoch, from a fresh model.
    pub fn whole(epochs: usize) -> Self {
        Stint {
            first: 1,
            last: epochs,
            total: epochs,
            from: None,
            save_state: false,
        }
    }
}

/// Trains one trial. `progress(epoch, metrics)` is called after every epoch; `cancel` is
/// checked between batches.
pub fn run_trial(
    spec: &SweepSpec,
    params: &Params,
    data: &Data,
    device: &Device,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(u32, Vec<(String, f64)>),
) -> Result<TrialOutput, TrainError> {
    let cfg = spec.trial_config(params)?;
    let whole = Stint::whole(cfg.train.epochs);
    run_stint(&cfg, data, device, whole, cancel, progress)
}

/// Trains the epochs of `stint`.
pub fn run_stint(
    cfg: &TrialConfig,
    data: &Data,
    device: &Device,
    stint: Stint,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(u32, Vec<(String, f64)>),
) -> Result<TrialOutput, TrainError> {
    let t = &cfg.train;
    let mconf = model_config(cfg, data)?;
    let model = match &stint.from {
        None if stint.first == 1 => mconf.init(t.seed, DType::F32, device)?,
        None => {
            return Err(TrainError::Resume(format!(
                "epoch {} needs the state after epoch {}, and none was given",
                stint.first,
                stint.first - 1
            )));
        }
        Some(from) if from.epoch + 1 == stint.first && t.subspace_dim == 0 => mconf
            .load(&from.model(), DType::F32, device)
            .map_err(TrainError::Resume)?,
        Some(from) => {
            return Err(TrainError::Resume(format!(
                "a state after epoch {} cannot start epoch {}{}",
                from.epoch,
                stint.first,
                if t.subspace_dim > 0 {
                    " in a subspace"
                } else {
                    ""
                }
            )));
        }
    };
    let params = model.trainable();
    // The optimizer's state is named after the variables it updates.
    let names: Vec<String> = model
        .params()
        .iter()
        .filter(|p| p.trainable())
        .map(|p| p.name.clone())
        .collect();
    // Subspace training: only ψ is optimised; the model's parameters follow θ₀ + P ψ.
    let sub = match t.subspace_dim {
        0 => None,
        d => Some(
            Subspace::new(&params, d, t.projection, t.seed)
                .map_err(|e| ridgeline_common::spec::SpecError::new("train.projection", e))?,
        ),
    };
    let mut opt = Optim::new(
        match &sub {
            Some(s) => vec![s.psi.clone()],
            None => params.clone(),
        },
        cfg,
    )?;
    let (train, val) = match data {
        Data::Table(d) => (
            Split::table(&d.train, device)?,
            Split::table(&d.val, device)?,
        ),
        Data::Text(d) => (
            Split::text(d, false, cfg.context),
            Split::text(d, true, cfg.context),
        ),
    };
    let n = train.len();
    let batch = t.batch_size.min(n);
    let per_epoch = n.div_ceil(batch);
    let total_steps = per_epoch * stint.total;
    let (mut rng, mut order) = match &stint.from {
        Some(from) => {
            opt.restore(&names, &from.tensors, from.steps)
                .map_err(TrainError::Resume)?;
            (
                Rng::new(from.rng),
                from.order(n).map_err(TrainError::Resume)?,
            )
        }
        None => (
            Rng::stream(t.seed, 0x0074_7261_696e),
            (0..n as u32).collect(),
        ),
    };
    let mut last = Vec::new();
    let mut epochs = Vec::new();
    if t.keep_checkpoints && stint.first == 1 {
        epochs.push((
            "model_epoch_000.safetensors".to_owned(),
            safetensors_bytes(model.named_tensors())?,
        ));
    }
    for epoch in stint.first..=stint.last {
        rng.shuffle(&mut order);
        let mut loss_sum = 0f64;
        for (i, idx) in order.chunks(batch).enumerate() {
            if cancel.load(Ordering::Relaxed) {
                return Ok(TrialOutput {
                    end: TrialEnd::Cancelled,
                    final_metrics: last,
                    artifacts: vec![],
                });
            }
            let (xb, yb) = train.batch(idx, device)?;
            if let Some(s) = &sub {
                s.apply(&params)?;
            }
            let loss = train_cross_entropy(&model.forward(&xb, Some(&mut rng))?, &yb)?;
            let l = f64::from(loss.to_dtype(DType::F32)?.to_scalar::<f32>()?);
            if !l.is_finite() {
                let mut m = last.clone();
                m.retain(|(k, _): &(String, f64)| k != "train_loss");
                m.push(("train_loss".into(), l));
                progress(epoch as u32, m.clone());
                return Ok(TrialOutput {
                    end: TrialEnd::Diverged,
                    final_metrics: m,
                    artifacts: vec![],
                });
            }
            loss_sum += l * idx.len() as f64;
            // The schedule's position is the epoch's share of the whole, so that a
            // round whose batch size changed goes on where its parent stopped.
            opt.set_lr(lr_at(t, (epoch - 1) * per_epoch + i, total_steps));
            opt.backward_step(&loss, t.grad_clip, sub.as_ref().map(|s| (s, &params[..])))?;
        }
        if let Some(s) = &sub {
            s.apply(&params)?;
        }
        let (val_loss, val_acc) = evaluate(model.as_ref(), &val, device)?;
        last = vec![
            ("train_loss".into(), loss_sum / n as f64),
            ("val_loss".into(), val_loss),
            ("val_accuracy".into(), val_acc),
        ];
        if model.task() == Task::LanguageModel {
            last.push(("val_perplexity".into(), val_loss.exp()));
        }
        progress(epoch as u32, last.clone());
        if t.keep_checkpoints {
            epochs.push((
                format!("model_epoch_{epoch:03}.safetensors"),
                safetensors_bytes(model.named_tensors())?,
            ));
        }
        if !val_loss.is_finite() {
            return Ok(TrialOutput {
                end: TrialEnd::Diverged,
                final_metrics: last,
                artifacts: vec![],
            });
        }
    }
    let mut artifacts = checkpoint(model.as_ref(), data, device)?;
    artifacts.extend(epochs);
    if stint.save_state {
        let (optimizer, steps) = opt.state(&names);
        let bytes = state::encode(
            model.named_tensors(),
            optimizer,
            &order,
            stint.last,
            steps,
            rng.state(),
        )?;
        artifacts.push((state::STATE_FILE.to_owned(), bytes));
    }
    Ok(TrialOutput {
        end: TrialEnd::Completed,
        final_metrics: last,
        artifacts,
    })
}

/// Named tensors as safetensors bytes (moved to the CPU first).
pub(crate) fn safetensors_bytes(tensors: Vec<(String, Tensor)>) -> Result<Vec<u8>, TrainError> {
    safetensors_with(tensors, None)
}

/// Named tensors and metadata as safetensors bytes (moved to the CPU first).
fn safetensors_with(
    tensors: Vec<(String, Tensor)>,
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<Vec<u8>, TrainError> {
    let tensors: Vec<(String, Tensor)> = tensors
        .into_iter()
        .map(|(k, t)| t.to_device(&Device::Cpu).map(|t| (k, t)))
        .collect::<candle_core::Result<_>>()?;
    Ok(
        safetensors::serialize(tensors.iter().map(|(k, t)| (k.as_str(), t)), metadata)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?,
    )
}

/// `model.safetensors` (weights, plus for samples the input normalisation as
/// `input.mean` and `input.scale`) and `model.json` (what is needed to rebuild the
/// model).
fn checkpoint(
    model: &dyn Model,
    data: &Data,
    device: &Device,
) -> Result<Vec<(String, Vec<u8>)>, TrainError> {
    let mut tensors = model.named_tensors();
    if let Data::Table(data) = data {
        tensors.push((
            "input.mean".into(),
            Tensor::from_slice(&data.mean, data.mean.len(), device)?,
        ));
        tensors.push((
            "input.scale".into(),
            Tensor::from_slice(&data.scale, data.scale.len(), device)?,
        ));
    }
    let json = serde_json::to_vec_pretty(&model.config()).expect("config serialises");
    Ok(vec![
        ("model.safetensors".into(), safetensors_bytes(tensors)?),
        ("model.json".into(), json),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::Mlp;
    use ridgeline_common::spec::{Activation, ModelSpec, Optimizer};

    fn batch(n: usize, dim: usize, classes: u32, seed: u64) -> (Vec<f64>, Vec<u32>) {
        let mut r = Rng::new(seed);
        let x = (0..n * dim).map(|_| r.normal()).collect();
        let y = (0..n).map(|_| r.below(u64::from(classes)) as u32).collect();
        (x, y)
    }

    fn mlp(dtype: DType, activation: Activation) -> Mlp {
        let m = ModelSpec {
            depth: 2,
            width: 6,
            activation,
            ..ModelSpec::default()
        };
        Mlp::new(MlpConfig::new(5, 3, &m), 11, dtype, &Device::Cpu).unwrap()
    }

    /// Cross-entropy in plain f64, independent of candle, for the finite differences.
    fn loss_f64(model: &Mlp, x: &[f64], y: &[u32]) -> f64 {
        let layers: Vec<(Vec<f64>, Vec<f64>, usize, usize)> = model
            .layers
            .iter()
            .map(|(w, b)| {
                let (o, i) = w.as_tensor().dims2().unwrap();
                (
                    w.as_tensor()
                        .flatten_all()
                        .unwrap()
                        .to_vec1::<f64>()
                        .unwrap(),
                    b.as_tensor().to_vec1::<f64>().unwrap(),
                    o,
                    i,
                )
            })
            .collect();
        let n = y.len();
        let mut total = 0.0;
        for s in 0..n {
            let mut h: Vec<f64> = x[s * 5..(s + 1) * 5].to_vec();
            for (li, (w, b, o, i)) in layers.iter().enumerate() {
                let mut z: Vec<f64> = (0..*o)
                    .map(|r| b[r] + (0..*i).map(|c| w[r * i + c] * h[c]).sum::<f64>())
                    .collect();
                if li + 1 < layers.len() {
                    z.iter_mut().for_each(|v| *v = v.tanh());
                }
                h = z;
            }
            let m = h.iter().cloned().fold(f64::MIN, f64::max);
            let lse = m + h.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
            total += lse - h[y[s] as usize];
        }
        total / n as f64
    }

    #[test]
    fn gradient_matches_finite_differences_in_f64() {
        let model = mlp(DType::F64, Activation::Tanh);
        let (x, y) = batch(8, 5, 3, 1);
        let xt = Tensor::from_vec(x.clone(), (8, 5), &Device::Cpu).unwrap();
        let yt = Tensor::from_vec(y.clone(), 8, &Device::Cpu).unwrap();
        let loss = candle_nn::loss::cross_entropy(&model.forward(&xt, None).unwrap(), &yt).unwrap();
        // candle's loss agrees with the independent f64 one.
        let l = loss.to_scalar::<f64>().unwrap();
        assert!((l - loss_f64(&model, &x, &y)).abs() < 1e-12);
        let grads = loss.backward().unwrap();
        // Check the middle layer's weight, every element.
        let (w, _) = &model.layers[1];
        let g = grads
            .get(w)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let w0 = w
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let shape = w.as_tensor().shape().clone();
        let eps = 1e-6;
        let mut worst: f64 = 0.0;
        for k in 0..w0.len() {
            let eval = |delta: f64| {
                let mut v = w0.clone();
                v[k] += delta;
                w.set(&Tensor::from_vec(v, shape.clone(), &Device::Cpu).unwrap())
                    .unwrap();
                loss_f64(&model, &x, &y)
            };
            let fd = (eval(eps) - eval(-eps)) / (2.0 * eps);
            let err = (fd - g[k]).abs() / (fd.abs() + g[k].abs()).max(1e-8);
            worst = worst.max(err);
        }
        assert!(worst < 1e-6, "worst relative error {worst}");
    }

    #[test]
    fn loss_on_a_fixed_batch_decreases() {
        for opt in [Optimizer::Adamw, Optimizer::Sgd] {
            let model = mlp(DType::F32, Activation::Relu);
            let (x, y) = batch(32, 5, 3, 2);
            let x: Vec<f32> = x.iter().map(|&v| v as f32).collect();
            let xt = Tensor::from_vec(x, (32, 5), &Device::Cpu).unwrap();
            let yt = Tensor::from_vec(y, 32, &Device::Cpu).unwrap();
            let mut cfg = TrialConfig {
                model: ModelSpec::default(),
                train: Default::default(),
                context: 1,
            };
            cfg.train.optimizer = opt;
            cfg.train.lr = if opt == Optimizer::Sgd { 0.1 } else { 0.01 };
            let mut o = Optim::new(model.trainable(), &cfg).unwrap();
            let loss_of = || {
                let l = candle_nn::loss::cross_entropy(&model.forward(&xt, None).unwrap(), &yt)
                    .unwrap();
                (l.to_scalar::<f32>().unwrap(), l)
            };
            let (first, _) = loss_of();
            for _ in 0..200 {
                let (_, l) = loss_of();
                o.backward_step(&l, 0.0, None).unwrap();
            }
            let (end, _) = loss_of();
            // Random labels on 32 points: a 5-6-6-3 net can memorise most of them.
            assert!(end < 0.6 * first, "{opt:?}: {first} -> {end}");
        }
    }

    /// 120 samples of 5 features in 3 classes (labels from a linear rule, so it learns).
    fn toy_data() -> Data {
        let samples = |n: usize, seed: u64| {
            let (x, _) = batch(n, 5, 3, seed);
            let y = x
                .chunks(5)
                .map(|r| ((r[0] + 0.5 * r[1] > 0.0) as u32) + (r[2] > 0.8) as u32)
                .collect();
            Samples {
                x: x.iter().map(|&v| v as f32).collect(),
                y,
                t: vec![],
                outputs: 0,
                dim: 5,
                image: None,
            }
        };
        Data::Table(crate::data::Dataset {
            train: samples(120, 3),
            val: samples(40, 4),
            classes: 3,
            mean: vec![0.0; 5],
            scale: vec![1.0; 5],
        })
    }

    fn file<'a>(out: &'a TrialOutput, name: &str) -> &'a [u8] {
        &out.artifacts.iter().find(|(n, _)| n == name).unwrap().1
    }

    /// Four epochs straight, or two, the state saved and decoded, and two more: the
    /// same model to the bit and the same metrics, with dropout (the random stream),
    /// momentum or AdamW's moments, warmup and a cosine schedule all in play.
    #[test]
    fn a_stint_from_a_saved_state_trains_as_if_it_never_stopped() {
        for optimizer in [Optimizer::Adamw, Optimizer::Sgd] {
            let mut cfg = TrialConfig {
                model: ModelSpec {
                    depth: 2,
                    width: 8,
                    dropout: 0.2,
                    ..ModelSpec::default()
                },
                train: Default::default(),
                context: 1,
            };
            cfg.train.optimizer = optimizer;
            cfg.train.epochs = 4;
            cfg.train.batch_size = 16;
            cfg.train.warmup = 5;
            cfg.train.momentum = 0.9;
            cfg.train.schedule = Schedule::Cosine;
            let data = toy_data();
            let stop = AtomicBool::new(false);
            let mut seen = Vec::new();
            let mut straight = run_stint(
                &cfg,
                &data,
                &Device::Cpu,
                Stint::whole(4),
                &stop,
                &mut |e, m| seen.push((e, m)),
            )
            .unwrap();
            let part = |first, last, from, save_state| Stint {
                first,
                last,
                total: 4,
                from,
                save_state,
            };
            let mut resumed_seen = Vec::new();
            let mut progress = |e, m| resumed_seen.push((e, m));
            let first = run_stint(
                &cfg,
                &data,
                &Device::Cpu,
                part(1, 2, None, true),
                &stop,
                &mut progress,
            )
            .unwrap();
            let saved = file(&first, state::STATE_FILE);
            assert!(
                straight
                    .artifacts
                    .iter()
                    .all(|(n, _)| n != state::STATE_FILE)
            );
            let from = state::decode(saved, &Device::Cpu).unwrap();
            assert_eq!(from.epoch, 2);
            // A state cannot start any epoch but the next.
            let wrong = run_stint(
                &cfg,
                &data,
                &Device::Cpu,
                part(
                    4,
                    4,
                    Some(state::decode(saved, &Device::Cpu).unwrap()),
                    false,
                ),
                &stop,
                &mut |_, _| {},
            );
            assert!(
                matches!(wrong, Err(TrainError::Resume(ref e)) if e.contains("after epoch 2 cannot start epoch 4"))
            );
            let second = run_stint(
                &cfg,
                &data,
                &Device::Cpu,
                part(3, 4, Some(from), false),
                &stop,
                &mut progress,
            )
            .unwrap();
            assert_eq!(
                file(&straight, "model.safetensors"),
                file(&second, "model.safetensors"),
                "{optimizer:?}"
            );
            assert_eq!(seen, resumed_seen);
            assert_eq!(
                second.final_metrics,
                std::mem::take(&mut straight.final_metrics)
            );
            // Two epochs from a fresh model instead end elsewhere (the test can fail).
            let fresh = run_stint(
                &cfg,
                &data,
                &Device::Cpu,
                part(1, 2, None, false),
                &stop,
                &mut |_, _| {},
            )
            .unwrap();
            assert_ne!(
                file(&fresh, "model.safetensors"),
                file(&second, "model.safetensors")
            );
        }
    }

    #[test]
    fn a_state_that_is_not_one_is_refused_saying_why() {
        let err = state::decode(b"not a safetensors file", &Device::Cpu)
            .err()
            .unwrap();
        assert!(err.starts_with(state::STATE_FILE), "{err}");
        let plain = safetensors_bytes(vec![(
            "w".into(),
            Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap(),
        )])
        .unwrap();
        let err = state::decode(&plain, &Device::Cpu).err().unwrap();
        assert!(err.contains("not a training state"), "{err}");
    }
}
