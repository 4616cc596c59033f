//! A trial's training state at the end of an epoch, as one safetensors file
//! ([`STATE_FILE`]): everything the trainer needs to go on as if it had never stopped,
//! so that a PBT round started from it trains exactly as the parent would have (same
//! bits, when the hyperparameters are unchanged).
//!
//! Tensors: the model's (`model.NAME`, batch-norm statistics included), the optimizer's
//! (see [`super::optim::Optim::state`]), and the data order (`data.order`, the
//! permutation the next epoch's shuffle starts from). Metadata: the epoch it ends, the
//! optimizer's step count and the random stream's state (u64s, exact as text).

use std::collections::HashMap;

use candle_core::{Device, Tensor};

/// The file's name in a trial's folder.
pub const STATE_FILE: &str = "train_state.safetensors";

const FORMAT: &str = "ridgeline-train-state-1";

/// A decoded state.
pub struct TrainState {
    /// Tensors by name, on the device.
    pub tensors: HashMap<String, Tensor>,
    /// The last epoch trained.
    pub epoch: usize,
    /// The optimizer's step count (AdamW's bias correction).
    pub steps: usize,
    /// The random stream (shuffles, dropout) as it stood.
    pub rng: u64,
}

impl TrainState {
    /// The model's tensors, by their checkpoint names.
    pub fn model(&self) -> HashMap<String, Tensor> {
        self.tensors
            .iter()
            .filter_map(|(k, t)| k.strip_prefix("model.").map(|n| (n.to_owned(), t.clone())))
            .collect()
    }

    /// The data order, checked against the training set's size.
    pub fn order(&self, n: usize) -> Result<Vec<u32>, String> {
        let t = self
            .tensors
            .get("data.order")
            .ok_or("missing tensor data.order")?;
        let order = t.to_vec1::<u32>().map_err(|e| format!("data.order: {e}"))?;
        let mut seen = vec![false; n];
        let permutation = order.len() == n
            && order
                .iter()
                .all(|&i| (i as usize) < n && !std::mem::replace(&mut seen[i as usize], true));
        if !permutation {
            return Err(format!(
                "data.order is not a permutation of the {n} training samples"
            ));
        }
        Ok(order)
    }
}

/// The file's bytes.
pub fn encode(
    model: Vec<(String, Tensor)>,
    optimizer: Vec<(String, Tensor)>,
    order: &[u32],
    epoch: usize,
    steps: usize,
    rng: u64,
) -> Result<Vec<u8>, super::TrainError> {
    let mut tensors: Vec<(String, Tensor)> = model
        .into_iter()
        .map(|(k, t)| (format!("model.{k}"), t))
        .chain(optimizer)
        .collect();
    tensors.push((
        "data.order".into(),
        Tensor::from_slice(order, order.len(), &Device::Cpu)?,
    ));
    let meta = HashMap::from([
        ("format".to_owned(), FORMAT.to_owned()),
        ("epoch".to_owned(), epoch.to_string()),
        ("steps".to_owned(), steps.to_string()),
        ("rng".to_owned(), rng.to_string()),
    ]);
    super::safetensors_with(tensors, Some(meta))
}

/// Reads a file [`encode`] wrote; anything else is an error saying what is wrong.
pub fn decode(bytes: &[u8], device: &Device) -> Result<TrainState, String> {
    let bad = |r: String| format!("{STATE_FILE}: {r}");
    let (_, header) =
        safetensors::SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
    let meta = header.metadata().clone().unwrap_or_default();
    if meta.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(bad(format!(
            "not a training state of this version (format {:?})",
            meta.get("format")
        )));
    }
    let number = |k: &str| -> Result<u64, String> {
        meta.get(k)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad(format!("metadata {k} missing or not a number")))
    };
    let tensors =
        candle_core::safetensors::load_buffer(bytes, device).map_err(|e| bad(e.to_string()))?;
    Ok(TrainState {
        tensors,
        epoch: number("epoch")? as usize,
        steps: number("steps")? as usize,
        rng: number("rng")?,
    })
}
