//! Hugging Face checkpoints: `config.json` and `model.safetensors`, or shards listed in
//! `model.safetensors.index.json`.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use serde_json::Value;

use super::{ModelConfig, TransformerConfig};

/// The model config of a Hugging Face `config.json` (GPT-2 or Llama families, by
/// `model_type`).
pub fn config_from_hf(json: &[u8]) -> Result<ModelConfig, String> {
    let v: Value = serde_json::from_slice(json).map_err(|e| format!("config.json: {e}"))?;
    let int = |keys: &[&str]| -> Result<usize, String> {
        keys.iter()
            .find_map(|k| v.get(*k).and_then(Value::as_u64))
            .map(|x| x as usize)
            .ok_or_else(|| format!("config.json: missing {}", keys.join(" or ")))
    };
    let float = |k: &str, d: f64| v.get(k).and_then(Value::as_f64).unwrap_or(d);
    let model_type = v.get("model_type").and_then(Value::as_str).unwrap_or("");
    match model_type {
        "gpt2" => {
            let d = int(&["n_embd", "hidden_size"])?;
            let heads = int(&["n_head", "num_attention_heads"])?;
            let c = TransformerConfig {
                vocab: int(&["vocab_size"])?,
                context: int(&["n_positions", "n_ctx", "max_position_embeddings"])?,
                d_model: d,
                layers: int(&["n_layer", "num_hidden_layers"])?,
                heads,
                kv_heads: heads,
                d_ff: v
                    .get("n_inner")
                    .and_then(Value::as_u64)
                    .map_or(4 * d, |x| x as usize),
                norm_eps: float("layer_norm_epsilon", 1e-5),
                rope_theta: 10_000.0,
                tie_embeddings: true,
            };
            c.validate().map_err(|e| format!("config.json: {e}"))?;
            Ok(ModelConfig::Gpt2(c))
        }
        "llama" | "mistral" => {
            let heads = int(&["num_attention_heads"])?;
            let c = TransformerConfig {
                vocab: int(&["vocab_size"])?,
                context: int(&["max_position_embeddings"])?,
                d_model: int(&["hidden_size"])?,
                layers: int(&["num_hidden_layers"])?,
                heads,
                kv_heads: int(&["num_key_value_heads"]).unwrap_or(heads),
                d_ff: int(&["intermediate_size"])?,
                norm_eps: float("rms_norm_eps", 1e-6),
                rope_theta: float("rope_theta", 10_000.0),
                tie_embeddings: v
                    .get("tie_word_embeddings")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            };
            c.validate().map_err(|e| format!("config.json: {e}"))?;
            Ok(ModelConfig::Llama(c))
        }
        other => Err(format!(
            "config.json: model_type {other:?} is not supported; expected \"gpt2\" or \"llama\""
        )),
    }
}

/// The shard files of a sharded checkpoint, from `model.safetensors.index.json`, in
/// order of first appearance.
pub fn shard_names(index_json: &[u8]) -> Result<Vec<String>, String> {
    let v: Value = serde_json::from_slice(index_json)
        .map_err(|e| format!("model.safetensors.index.json: {e}"))?;
    let map = v
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or("model.safetensors.index.json: missing weight_map")?;
    let mut names: Vec<String> = Vec::new();
    for f in map.values() {
        let f = f
            .as_str()
            .ok_or("model.safetensors.index.json: weight_map values must be file names")?;
        if f.contains('/') || f.contains("..") {
            return Err(format!(
                "model.safetensors.index.json: {f:?} is not a file name in the same folder"
            ));
        }
        if !names.iter().any(|n| n == f) {
            names.push(f.to_owned());
        }
    }
    Ok(names)
}

/// Tensors of one or more safetensors buffers, with GPT-2's bare names (`h.0.…`,
/// `wte.weight`, as `GPT2Model` saves them) given the `transformer.` prefix that
/// `GPT2LMHeadModel` uses.
pub fn load_tensors(
    buffers: &[&[u8]],
    config: &ModelConfig,
    device: &Device,
) -> Result<HashMap<String, Tensor>, String> {
    let mut out = HashMap::new();
    for b in buffers {
        let t = candle_core::safetensors::load_buffer(b, device).map_err(|e| e.to_string())?;
        out.extend(t);
    }
    if matches!(config, ModelConfig::Gpt2(_)) {
        let bare: Vec<String> = out
            .keys()
            .filter(|k| !k.starts_with("transformer.") && !k.starts_with("lm_head."))
            .cloned()
            .collect();
        for k in bare {
            let t = out.remove(&k).expect("listed");
            out.entry(format!("transformer.{k}")).or_insert(t);
        }
    }
    Ok(out)
}
