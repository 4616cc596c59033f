//! Loading what a scan's tiles share: the checkpoint (Ridgeline, Hugging Face or GGUF,
//! as the coordinator's `checkpoint.json` says), its directions (made here from the
//! seed for random directions, fetched otherwise) and the evaluation data, once per
//! sweep and process.

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use ridgeline_common::landscape::{DirectionKind, HostTensor, LossKind, Split, random_direction};
use ridgeline_common::spec::SweepSpec;

use super::eval::Layers;
use crate::UnitError;
use crate::data::{self, Data};
use crate::models::{Model, ModelConfig, gguf, hf};

/// Fetches one of the sweep's files from the coordinator.
pub type Fetch<'a> = &'a dyn Fn(&str) -> Result<Arc<Vec<u8>>, String>;

/// The evaluation data of a scan, resident on the device.
pub enum EvalData {
    /// Samples `[n, features]` and labels `[n]` (or MSE targets `[n, outputs]`).
    Table { x: Tensor, y: Tensor },
    /// Windows of tokens `[windows, context]` and their next tokens.
    Text { x: Tensor, y: Tensor },
}

impl EvalData {
    /// Inputs and targets.
    pub fn xy(&self) -> (&Tensor, &Tensor) {
        match self {
            EvalData::Table { x, y } | EvalData::Text { x, y } => (x, y),
        }
    }

    /// Number of items (samples or windows).
    pub fn len(&self) -> usize {
        self.xy().0.dim(0).unwrap_or(0)
    }

    /// Whether there are no items.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A loaded checkpoint, its directions and the data.
pub struct Loaded {
    /// The model, its tensors at θ*.
    pub model: Box<dyn Model>,
    /// θ*, one tensor per model tensor (its own storage: the model's are overwritten).
    pub base: Vec<Tensor>,
    /// x direction, per model tensor.
    pub d1: Vec<Tensor>,
    /// y direction (2-D scans).
    pub d2: Option<Vec<Tensor>>,
    /// The data the surface, the Hessian and curvature are evaluated on.
    pub data: EvalData,
    /// The second surface's data (`split = "both"`: the validation split).
    pub second: Option<EvalData>,
    /// FNV-1a of the directions' f32 bytes (48 bits), reported with every tile so that
    /// runs can check that every worker scanned along the same directions.
    pub digest: u64,
    /// An MLP's first-layer products, kept across tiles, by the data set's tensor.
    pub first_layers: Vec<(candle_core::TensorId, super::eval::FirstLayer)>,
}

fn e(e: candle_core::Error) -> String {
    e.to_string()
}

/// A checkpoint's config, its tensors by name, and the GGUF file when it is one (its
/// vocabulary may tokenise the data).
type Checkpoint = (ModelConfig, HashMap<String, Tensor>, Option<Arc<Vec<u8>>>);

/// The checkpoint's model config and tensors.
fn checkpoint(fetch: Fetch<'_>, device: &Device) -> Result<Checkpoint, String> {
    // Sweeps submitted before the manifest existed are Ridgeline checkpoints.
    let manifest: serde_json::Value = match fetch("checkpoint.json") {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| format!("checkpoint.json: {e}"))?,
        Err(_) => serde_json::json!({"format": "ridgeline"}),
    };
    let files: Vec<String> = serde_json::from_value(manifest["files"].clone()).unwrap_or_default();
    // A shared checkpoint is read from its path on this machine, not fetched.
    let paths: HashMap<String, String> =
        serde_json::from_value(manifest["paths"].clone()).unwrap_or_default();
    let local = |name: &str| -> Result<Arc<Vec<u8>>, String> {
        let p = paths
            .get(name)
            .ok_or_else(|| format!("checkpoint.json lists no path for {name}"))?;
        std::fs::read(p)
            .map(Arc::new)
            .map_err(|e| format!("shared checkpoint: {p}: {e} (landscape.shared_checkpoint needs the path on every worker)"))
    };
    let fetch: Fetch<'_> = if paths.is_empty() { fetch } else { &local };
    match manifest["format"].as_str() {
        Some("gguf") => {
            let bytes = fetch("model.gguf")?;
            let (config, tensors) = gguf::load(&bytes, DType::F32, device)?;
            Ok((config, tensors, Some(bytes)))
        }
        Some("hf") => {
            let config = hf::config_from_hf(&fetch("config.json")?)?;
            let names: Vec<&String> = if files.iter().any(|f| f == "model.safetensors.index.json") {
                files.iter().filter(|f| f.starts_with("model-")).collect()
            } else {
                files.iter().filter(|f| *f == "model.safetensors").collect()
            };
            let blobs: Vec<Arc<Vec<u8>>> =
                names.iter().map(|n| fetch(n)).collect::<Result<_, _>>()?;
            let refs: Vec<&[u8]> = blobs.iter().map(|b| b.as_slice()).collect();
            Ok((
                config.clone(),
                hf::load_tensors(&refs, &config, device)?,
                None,
            ))
        }
        _ => {
            let config: ModelConfig = serde_json::from_slice(&fetch("model.json")?)
                .map_err(|e| format!("model.json: {e}"))?;
            let tensors =
                candle_core::safetensors::load_buffer(&fetch("model.safetensors")?, device)
                    .map_err(|e| format!("model.safetensors: {e}"))?;
            Ok((config, tensors, None))
        }
    }
}

fn host(name: &str, t: &Tensor) -> Result<HostTensor, String> {
    Ok(HostTensor {
        name: name.to_owned(),
        shape: t.dims().to_vec(),
        data: t
            .to_dtype(DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(e)?,
    })
}

/// FNV-1a over the directions' bytes, cut to 48 bits (exact in an f64 metric).
fn digest(dirs: &[&[Tensor]]) -> Result<u64, String> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for d in dirs {
        for t in *d {
            for v in t
                .flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(e)?
            {
                for b in v.to_le_bytes() {
                    h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
                }
            }
        }
    }
    Ok(h & ((1 << 48) - 1))
}

/// The directions, one tensor per model tensor: made here from the seed (random), or
/// read from the coordinator's `directions.safetensors` (`x.<name>`, `y.<name>`; a
/// tensor it lacks, such as a batch-norm statistic, does not move).
fn directions(
    spec: &SweepSpec,
    model: &dyn Model,
    fetch: Fetch<'_>,
    device: &Device,
) -> Result<(Vec<Tensor>, Option<Vec<Tensor>>), String> {
    let l = spec.landscape.as_ref().ok_or("not a landscape sweep")?;
    let axes = if l.y.is_some() { 2 } else { 1 };
    let params = model.params();
    let mut out = Vec::new();
    if l.directions.kind == DirectionKind::Random {
        let weights: Vec<HostTensor> = params
            .iter()
            .map(|p| host(&p.name, p.var.as_tensor()))
            .collect::<Result<_, _>>()?;
        for axis in 0..axes {
            let d = random_direction(&l.directions, &weights, axis as u64);
            out.push(
                // Moved, not copied: a copy of a large model's direction faults in
                // every page of a fresh buffer (a tenth of a SmolLM2-135M one-point run).
                d.into_iter()
                    .map(|t| Tensor::from_vec(t.data, t.shape, device))
                    .collect::<candle_core::Result<Vec<_>>>()
                    .map_err(e)?,
            );
        }
    } else {
        let dirs = candle_core::safetensors::load_buffer(&fetch("directions.safetensors")?, device)
            .map_err(|e| format!("directions.safetensors: {e}"))?;
        for prefix in ["x", "y"].iter().take(axes) {
            out.push(
                params
                    .iter()
                    .map(|p| match dirs.get(&format!("{prefix}.{}", p.name)) {
                        Some(t) if t.dims() == p.var.dims() => t.to_dtype(DType::F32).map_err(e),
                        Some(t) => Err(format!(
                            "directions.safetensors: {prefix}.{}: expected shape {:?}, found {:?}",
                            p.name,
                            p.var.dims(),
                            t.dims()
                        )),
                        None => p.var.zeros_like().map_err(e),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            );
        }
    }
    let mut it = out.into_iter();
    let d1 = it.next().expect("one axis at least");
    Ok((d1, it.next()))
}

/// The scan's evaluation data for `model`, on `split`.
fn eval_data(
    spec: &SweepSpec,
    split: Split,
    model: &dyn Model,
    config: &ModelConfig,
    gguf_bytes: Option<&[u8]>,
    device: &Device,
) -> Result<EvalData, String> {
    let l = spec.landscape.as_ref().ok_or("not a landscape sweep")?;
    let d = spec.data();
    let vocab = match (gguf_bytes, d.tokenizer.as_deref()) {
        (Some(b), Some("model")) => Some(gguf::tokenizer(&gguf::content(b)?)?),
        _ => None,
    };
    let data = if vocab.is_some() {
        Arc::new(data::load_any(d, spec.data_format(), vocab).map_err(|e| e.to_string())?)
    } else {
        crate::data::cached(spec)?
    };
    match (data.as_ref(), config) {
        (Data::Text(t), ModelConfig::Gpt2(c) | ModelConfig::Llama(c)) => {
            if t.vocab > c.vocab {
                return Err(format!(
                    "the data's tokenizer ({}) has {} ids, the model's vocabulary {}",
                    t.tokenizer, t.vocab, c.vocab
                ));
            }
            if matches!(config, ModelConfig::Gpt2(_)) && d.context > c.context {
                return Err(format!(
                    "data.context = {} is longer than the model's {} positions",
                    d.context, c.context
                ));
            }
            let mut starts = t.windows(split == Split::Val, d.context);
            let mut keep = starts.len();
            if let Some(n) = l.samples {
                keep = keep.min(n);
            }
            if let Some(n) = l.tokens {
                keep = keep.min(n.div_ceil(d.context));
            }
            starts.truncate(keep);
            let (x, y) = t.batch(&starts, d.context, device).map_err(e)?;
            Ok(EvalData::Text { x, y })
        }
        (Data::Table(ds), _) if model.task() == crate::models::Task::Classification => {
            let rows = match split {
                Split::Val => &ds.val,
                Split::Train | Split::Both => &ds.train,
            };
            let s = match l.samples {
                Some(n) => rows.head(n),
                None => rows.clone(),
            };
            let x = Tensor::from_slice(&s.x, (s.len(), s.dim), device).map_err(e)?;
            let y = match l.loss {
                LossKind::CrossEntropy => {
                    if s.y.is_empty() {
                        return Err("loss = \"cross_entropy\" needs class labels (data.task = \"classification\")".into());
                    }
                    // A label the model has no output for would fail deep in the math.
                    let classes = match config {
                        ModelConfig::Mlp(c) => Some(c.classes),
                        ModelConfig::Cnn(c) | ModelConfig::Resnet(c) => Some(c.classes),
                        _ => None,
                    };
                    if let Some(k) = classes {
                        if let Some((i, y)) =
                            s.y.iter().enumerate().find(|(_, y)| **y as usize >= k)
                        {
                            return Err(format!(
                                "{}: sample {} of the {} split has label {y}, but the model has {k} classes (labels 0..{})",
                                d.path.display(),
                                i + 1,
                                if split == Split::Val {
                                    "validation"
                                } else {
                                    "training"
                                },
                                k - 1
                            ));
                        }
                    }
                    Tensor::from_slice(&s.y, s.len(), device).map_err(e)?
                }
                LossKind::Mse => {
                    Tensor::from_slice(&s.t, (s.len(), s.outputs), device).map_err(e)?
                }
            };
            // Shapes are checked by one forward pass on a single sample.
            model
                .forward(&x.narrow(0, 0, 1).map_err(e)?, None)
                .map_err(|err| format!("the data does not fit the model: {err}"))?;
            Ok(EvalData::Table { x, y })
        }
        _ => Err(format!(
            "the data ({}) does not fit a {} model",
            if matches!(data.as_ref(), Data::Text(_)) {
                "text"
            } else {
                "samples"
            },
            match config {
                ModelConfig::Gpt2(_) | ModelConfig::Llama(_) => "language",
                _ => "sample",
            }
        )),
    }
}

/// Loads everything a scan's tiles share. The parameters are counted before their
/// copies and directions are made: a model whose four f32 copies do not fit in
/// `memory_bytes` fails here, once and for good, saying so.
pub fn load(
    spec: &SweepSpec,
    fetch: Fetch<'_>,
    device: &Device,
    memory_bytes: u64,
) -> Result<Loaded, UnitError> {
    let (config, tensors, gguf_bytes) = checkpoint(fetch, device)?;
    let model = config.load(&tensors, DType::F32, device)?;
    drop(tensors);
    let need = 16 * model.parameter_count() as u64;
    if need > memory_bytes {
        return Err(UnitError::out_of_memory(format!(
            "a scan of this model ({} parameters) keeps θ*, two directions and the working copy, {need} bytes in f32; the unit may use {memory_bytes} (worker --memory-bytes)",
            model.parameter_count()
        )));
    }
    let base = model
        .params()
        .iter()
        .map(|p| p.var.as_tensor().copy())
        .collect::<candle_core::Result<Vec<_>>>()
        .map_err(e)?;
    let (d1, d2) = directions(spec, model.as_ref(), fetch, device)?;
    let mut dirs: Vec<&[Tensor]> = vec![&d1];
    if let Some(d2) = &d2 {
        dirs.push(d2);
    }
    let digest = digest(&dirs)?;
    let l = spec.landscape.as_ref().ok_or("not a landscape sweep")?;
    let data_on = |split| {
        eval_data(
            spec,
            split,
            model.as_ref(),
            &config,
            gguf_bytes.as_deref().map(|b| b.as_slice()),
            device,
        )
    };
    let data = data_on(l.split.primary())?;
    let second = l.split.second().map(data_on).transpose()?;
    Ok(Loaded {
        model,
        base,
        d1,
        d2,
        data,
        second,
        digest,
        first_layers: Vec::new(),
    })
}

/// An MLP's tensors as `(weight, bias)` layers, for the batched fast path.
pub fn layers(tensors: &[Tensor]) -> Layers {
    tensors
        .chunks(2)
        .map(|p| (p[0].clone(), p[1].clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::TransformerConfig;

    /// A model whose four copies do not fit the unit's memory fails before they are
    /// made, once and for good, with both numbers in the message.
    #[test]
    fn a_model_that_does_not_fit_is_refused_before_loading() {
        let config = ModelConfig::Gpt2(TransformerConfig {
            vocab: 256,
            context: 16,
            d_model: 16,
            layers: 1,
            heads: 2,
            kv_heads: 2,
            d_ff: 32,
            norm_eps: 1e-5,
            rope_theta: 10_000.0,
            tie_embeddings: true,
        });
        let model = config.init(0, DType::F32, &Device::Cpu).unwrap();
        let named = model.named_tensors();
        let weights =
            safetensors::serialize(named.iter().map(|(k, t)| (k.as_str(), t)), None).unwrap();
        let json = serde_json::to_vec(&config).unwrap();
        let fetch = |n: &str| -> Result<Arc<Vec<u8>>, String> {
            match n {
                "model.json" => Ok(Arc::new(json.clone())),
                "model.safetensors" => Ok(Arc::new(weights.clone())),
                _ => Err(format!("no {n}")),
            }
        };
        let spec = SweepSpec::from_toml(
            "name = \"t\"\nkind = \"landscape\"\n[data]\npath = \"unused.txt\"\n[landscape]\ncheckpoint = \"c\"\n",
        )
        .unwrap();
        let params = model.parameter_count() as u64;
        let e = load(&spec, &fetch, &Device::Cpu, 16 * params - 1)
            .err()
            .unwrap();
        assert!(e.permanent, "{e}");
        assert!(
            e.message.starts_with("out of memory: ")
                && e.message.contains(&format!("({params} parameters)"))
                && e.message.contains(&format!("{} bytes", 16 * params)),
            "{e}"
        );
    }
}
