//! GGUF checkpoints (llama.cpp): the model config from the metadata, tensors
//! dequantised with candle's reader and renamed to Hugging Face's names, and the
//! tokenizer stored in the file.
//!
//! llama.cpp's converter permutes the rows of Llama's q and k projections within each
//! head (its RoPE rotates interleaved pairs, Hugging Face's rotates halves) and stores
//! GPT-2's `Conv1D` weights transposed; both are undone here, so a GGUF file and the
//! safetensors it came from give the same model, tensor for tensor.

use std::collections::HashMap;
use std::io::Cursor;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};

use super::{Layout, Model, ModelConfig, TransformerConfig};

fn err(e: impl std::fmt::Display) -> String {
    format!("GGUF: {e}")
}

/// Reads the header of a GGUF buffer.
pub fn content(bytes: &[u8]) -> Result<gguf_file::Content, String> {
    gguf_file::Content::read(&mut Cursor::new(bytes)).map_err(err)
}

fn layout_of(ct: &gguf_file::Content) -> Result<Layout, String> {
    let arch = ct
        .metadata
        .get("general.architecture")
        .and_then(|v| v.to_string().ok())
        .ok_or_else(|| err("missing general.architecture"))?;
    match arch.as_str() {
        "llama" => Ok(Layout::Llama),
        "gpt2" => Ok(Layout::Gpt2),
        other => Err(err(format!(
            "architecture {other:?} is not supported; expected \"llama\" or \"gpt2\""
        ))),
    }
}

/// The model config stored in a GGUF header.
pub fn config(ct: &gguf_file::Content) -> Result<ModelConfig, String> {
    let layout = layout_of(ct)?;
    let arch = if layout == Layout::Llama {
        "llama"
    } else {
        "gpt2"
    };
    let get = |k: &str| ct.metadata.get(&format!("{arch}.{k}"));
    let int = |k: &str| -> Result<usize, String> {
        get(k)
            .and_then(|v| {
                v.to_u32()
                    .ok()
                    .or_else(|| v.to_u64().ok().map(|x| x as u32))
            })
            .map(|x| x as usize)
            .ok_or_else(|| err(format!("missing {arch}.{k}")))
    };
    // GGUF stores these as f32: read back the shortest decimal (1e-5, not 9.99999974e-6).
    let float = |k: &str, d: f64| {
        get(k)
            .and_then(|v| v.to_f32().ok())
            .map_or(d, |x| x.to_string().parse().unwrap_or(f64::from(x)))
    };
    let vocab = ct
        .tensor_infos
        .get("token_embd.weight")
        .map(|t| t.shape.dims()[0])
        .ok_or_else(|| err("missing token_embd.weight"))?;
    let heads = int("attention.head_count")?;
    let c = TransformerConfig {
        vocab,
        context: int("context_length")?,
        d_model: int("embedding_length")?,
        layers: int("block_count")?,
        heads,
        kv_heads: int("attention.head_count_kv").unwrap_or(heads),
        d_ff: int("feed_forward_length")?,
        norm_eps: match layout {
            Layout::Llama => float("attention.layer_norm_rms_epsilon", 1e-6),
            Layout::Gpt2 => float("attention.layer_norm_epsilon", 1e-5),
        },
        rope_theta: float("rope.freq_base", 10_000.0),
        tie_embeddings: !ct.tensor_infos.contains_key("output.weight"),
    };
    c.validate().map_err(err)?;
    Ok(match layout {
        Layout::Llama => ModelConfig::Llama(c),
        Layout::Gpt2 => ModelConfig::Gpt2(c),
    })
}

/// Hugging Face name of a GGUF tensor and how its values are rearranged.
enum Fix {
    None,
    /// Undo llama.cpp's q/k row permutation for this many heads.
    Unpermute(usize),
    /// `[out, in]` back to `Conv1D`'s `[in, out]`.
    Transpose,
}

fn hf_name(name: &str, c: &TransformerConfig, layout: Layout) -> Option<(String, Fix)> {
    let fixed = |s: &str| Some((s.to_owned(), Fix::None));
    match (layout, name) {
        (Layout::Llama, "token_embd.weight") => fixed("model.embed_tokens.weight"),
        (Layout::Llama, "output_norm.weight") => fixed("model.norm.weight"),
        (Layout::Gpt2, "token_embd.weight") => fixed("transformer.wte.weight"),
        (Layout::Gpt2, "position_embd.weight") => fixed("transformer.wpe.weight"),
        (Layout::Gpt2, "output_norm.weight") => fixed("transformer.ln_f.weight"),
        (Layout::Gpt2, "output_norm.bias") => fixed("transformer.ln_f.bias"),
        (_, "output.weight") => fixed("lm_head.weight"),
        _ => {
            let rest = name.strip_prefix("blk.")?;
            let (i, part) = rest.split_once('.')?;
            let i: usize = i.parse().ok()?;
            let (hf, fix) = match (layout, part) {
                (Layout::Llama, "attn_norm.weight") => ("input_layernorm.weight", Fix::None),
                (Layout::Llama, "ffn_norm.weight") => {
                    ("post_attention_layernorm.weight", Fix::None)
                }
                (Layout::Llama, "attn_q.weight") => {
                    ("self_attn.q_proj.weight", Fix::Unpermute(c.heads))
                }
                (Layout::Llama, "attn_k.weight") => {
                    ("self_attn.k_proj.weight", Fix::Unpermute(c.kv_heads))
                }
                (Layout::Llama, "attn_v.weight") => ("self_attn.v_proj.weight", Fix::None),
                (Layout::Llama, "attn_output.weight") => ("self_attn.o_proj.weight", Fix::None),
                (Layout::Llama, "ffn_gate.weight") => ("mlp.gate_proj.weight", Fix::None),
                (Layout::Llama, "ffn_up.weight") => ("mlp.up_proj.weight", Fix::None),
                (Layout::Llama, "ffn_down.weight") => ("mlp.down_proj.weight", Fix::None),
                (Layout::Gpt2, "attn_norm.weight") => ("ln_1.weight", Fix::None),
                (Layout::Gpt2, "attn_norm.bias") => ("ln_1.bias", Fix::None),
                (Layout::Gpt2, "ffn_norm.weight") => ("ln_2.weight", Fix::None),
                (Layout::Gpt2, "ffn_norm.bias") => ("ln_2.bias", Fix::None),
                (Layout::Gpt2, "attn_qkv.weight") => ("attn.c_attn.weight", Fix::Transpose),
                (Layout::Gpt2, "attn_qkv.bias") => ("attn.c_attn.bias", Fix::None),
                (Layout::Gpt2, "attn_output.weight") => ("attn.c_proj.weight", Fix::Transpose),
                (Layout::Gpt2, "attn_output.bias") => ("attn.c_proj.bias", Fix::None),
                (Layout::Gpt2, "ffn_up.weight") => ("mlp.c_fc.weight", Fix::Transpose),
                (Layout::Gpt2, "ffn_up.bias") => ("mlp.c_fc.bias", Fix::None),
                (Layout::Gpt2, "ffn_down.weight") => ("mlp.c_proj.weight", Fix::Transpose),
                (Layout::Gpt2, "ffn_down.bias") => ("mlp.c_proj.bias", Fix::None),
                _ => return None,
            };
            let prefix = match layout {
                Layout::Llama => format!("model.layers.{i}."),
                Layout::Gpt2 => format!("transformer.h.{i}."),
            };
            Some((prefix + hf, fix))
        }
    }
}

/// llama.cpp's permutation of a `[heads·hd, in]` projection: within each head, row
/// `j·hd/2 + i` (Hugging Face) goes to row `2i + j` (GGUF). `inverse` undoes it.
fn permute(t: &Tensor, heads: usize, inverse: bool) -> candle_core::Result<Tensor> {
    let (out, inn) = t.dims2()?;
    let hd = out / heads;
    if inverse {
        t.reshape((heads, hd / 2, 2, inn))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((out, inn))
    } else {
        t.reshape((heads, 2, hd / 2, inn))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((out, inn))
    }
}

#[cfg(test)]
pub(crate) fn permute_for_test(t: &Tensor, heads: usize) -> Tensor {
    permute(t, heads, false).expect("permute")
}

/// The model config and every tensor of a GGUF buffer, dequantised to `dtype` and named
/// as in Hugging Face's layout.
pub fn load(
    bytes: &[u8],
    dtype: DType,
    device: &Device,
) -> Result<(ModelConfig, HashMap<String, Tensor>), String> {
    let ct = content(bytes)?;
    let config = config(&ct)?;
    let (c, layout) = match &config {
        ModelConfig::Llama(c) => (c, Layout::Llama),
        ModelConfig::Gpt2(c) => (c, Layout::Gpt2),
        _ => unreachable!("config() returns transformers"),
    };
    let mut out = HashMap::new();
    let mut reader = Cursor::new(bytes);
    for name in ct.tensor_infos.keys() {
        let Some((hf, fix)) = hf_name(name, c, layout) else {
            continue;
        };
        let q = ct.tensor(&mut reader, name, &Device::Cpu).map_err(err)?;
        let t = q.dequantize(&Device::Cpu).map_err(err)?;
        let t = match fix {
            Fix::None => t,
            Fix::Unpermute(h) => permute(&t, h, true).map_err(err)?,
            Fix::Transpose => t.t().and_then(|t| t.contiguous()).map_err(err)?,
        };
        let t = t
            .to_dtype(dtype)
            .and_then(|t| t.to_device(device))
            .map_err(err)?;
        out.insert(hf, t);
    }
    Ok((config, out))
}

/// The tokenizer stored in a GGUF header (byte-level BPE, as SmolLM2's).
pub fn tokenizer(ct: &gguf_file::Content) -> Result<tokenizers::Tokenizer, String> {
    use candle_core::quantized::tokenizer::TokenizerFromGguf;
    tokenizers::Tokenizer::from_gguf(ct).map_err(err)
}

/// Writes a transformer as GGUF the way llama.cpp's converter does (names, q/k
/// permutation, transposed `Conv1D`), each tensor in `dtype` (`F32`, `Q8_0`, ...).
/// Used to test the reader against models whose safetensors are known.
pub fn write(model: &dyn Model, dtype: GgmlDType) -> Result<Vec<u8>, String> {
    let (c, layout, arch) = match model.config() {
        ModelConfig::Llama(c) => (c, Layout::Llama, "llama"),
        ModelConfig::Gpt2(c) => (c, Layout::Gpt2, "gpt2"),
        _ => return Err(err("only transformers are written as GGUF")),
    };
    let hf: HashMap<String, Tensor> = model.named_tensors().into_iter().collect();
    // Every GGUF name this layout reads, found by asking the reader's own mapping.
    let mut names: Vec<String> = vec![
        "token_embd.weight".into(),
        "position_embd.weight".into(),
        "output_norm.weight".into(),
        "output_norm.bias".into(),
        "output.weight".into(),
    ];
    let parts = [
        "attn_norm.weight",
        "attn_norm.bias",
        "ffn_norm.weight",
        "ffn_norm.bias",
        "attn_q.weight",
        "attn_k.weight",
        "attn_v.weight",
        "attn_output.weight",
        "attn_output.bias",
        "attn_qkv.weight",
        "attn_qkv.bias",
        "ffn_gate.weight",
        "ffn_up.weight",
        "ffn_up.bias",
        "ffn_down.weight",
        "ffn_down.bias",
    ];
    for i in 0..c.layers {
        names.extend(parts.iter().map(|p| format!("blk.{i}.{p}")));
    }
    let mut tensors = Vec::new();
    for name in names {
        let Some((h, fix)) = hf_name(&name, &c, layout) else {
            continue;
        };
        let Some(t) = hf.get(&h) else { continue };
        let t = t
            .to_device(&Device::Cpu)
            .and_then(|t| t.to_dtype(DType::F32))
            .map_err(err)?;
        let t = match fix {
            Fix::None => t,
            Fix::Unpermute(h) => permute(&t, h, false).map_err(err)?,
            Fix::Transpose => t.t().and_then(|t| t.contiguous()).map_err(err)?,
        };
        // Quantised types need rows that are whole blocks; small vectors stay f32.
        let ty = if t.dims().last().is_some_and(|d| d % dtype.block_size() == 0) && t.rank() == 2 {
            dtype
        } else {
            GgmlDType::F32
        };
        tensors.push((name, QTensor::quantize(&t, ty).map_err(err)?));
    }
    let u = |x: usize| Value::U32(x as u32);
    let meta: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(arch.into())),
        (format!("{arch}.context_length"), u(c.context)),
        (format!("{arch}.embedding_length"), u(c.d_model)),
        (format!("{arch}.block_count"), u(c.layers)),
        (format!("{arch}.feed_forward_length"), u(c.d_ff)),
        (format!("{arch}.attention.head_count"), u(c.heads)),
        (format!("{arch}.attention.head_count_kv"), u(c.kv_heads)),
        (
            format!(
                "{arch}.attention.{}",
                if layout == Layout::Llama {
                    "layer_norm_rms_epsilon"
                } else {
                    "layer_norm_epsilon"
                }
            ),
            Value::F32(c.norm_eps as f32),
        ),
        (
            format!("{arch}.rope.freq_base"),
            Value::F32(c.rope_theta as f32),
        ),
    ];
    let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut out = Cursor::new(Vec::new());
    gguf_file::write(&mut out, &meta_refs, &tensor_refs).map_err(err)?;
    Ok(out.into_inner())
}
