//! Decoder-only transformer language models in the two layouts people scan:
//!
//! - GPT-2: learned positions, pre-LayerNorm blocks with biases, GELU (tanh form), fused
//!   `c_attn` and `Conv1D` weights stored `[in, out]`, tied input/output embeddings.
//! - Llama: RoPE (Hugging Face's rotate-half form), RMSNorm, SwiGLU, grouped-query
//!   attention, no biases, output embedding tied or not.
//!
//! Tensor names are Hugging Face's, so `model.safetensors` files load by name. Training
//! uses ops that all have a backward pass; evaluation uses candle's fused softmax and
//! norms.

use candle_core::{D, DType, Device, Result, Tensor};
use ridgeline_common::rng::Rng;
use serde::{Deserialize, Serialize};

use super::{Init, Model, ModelConfig, Param, Source, Stored, Task, layer};

mod infer;

/// The additive causal mask `[t, t]`: 0 where query `i` may see key `j <= i`, -inf after.
pub fn causal_mask(t: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..t * t)
        .map(|k| {
            if k % t > k / t {
                f32::NEG_INFINITY
            } else {
                0.0
            }
        })
        .collect();
    Tensor::from_vec(mask, (t, t), device)?.to_dtype(dtype)
}

/// Which block layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// GPT-2.
    Gpt2,
    /// Llama (also SmolLM2, Mistral-style GQA).
    Llama,
}

/// The shape of a transformer LM (`model.json`; also read from Hugging Face's
/// `config.json` by `hf::config_from_hf`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformerConfig {
    /// Vocabulary size.
    pub vocab: usize,
    /// Longest sequence (GPT-2's learned positions; Llama's RoPE has no table).
    pub context: usize,
    /// Residual width.
    pub d_model: usize,
    /// Blocks.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Key/value heads (Llama's grouped-query attention; GPT-2: = heads).
    pub kv_heads: usize,
    /// Hidden width of the MLP.
    pub d_ff: usize,
    /// Epsilon of LayerNorm / RMSNorm.
    pub norm_eps: f64,
    /// RoPE base (Llama).
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    /// Whether the output projection is the input embedding (GPT-2 always).
    #[serde(default = "yes")]
    pub tie_embeddings: bool,
}

fn default_theta() -> f64 {
    10_000.0
}
fn yes() -> bool {
    true
}

impl TransformerConfig {
    fn head_dim(&self) -> usize {
        self.d_model / self.heads
    }

    /// Checks that the shapes fit together; the error names the field.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.heads == 0 || self.d_model % self.heads != 0 {
            return Err(format!(
                "d_model ({}) must be a multiple of heads ({})",
                self.d_model, self.heads
            ));
        }
        if self.kv_heads == 0 || self.heads % self.kv_heads != 0 {
            return Err(format!(
                "heads ({}) must be a multiple of kv_heads ({})",
                self.heads, self.kv_heads
            ));
        }
        if self.head_dim() % 2 != 0 {
            return Err(format!("head dimension {} must be even", self.head_dim()));
        }
        if self.vocab == 0 || self.context == 0 || self.layers == 0 || self.d_ff == 0 {
            return Err("vocab, context, layers and d_ff must be at least 1".into());
        }
        Ok(())
    }
}

struct Norm {
    weight: Tensor,
    bias: Option<Tensor>,
}

struct Block {
    norm1: Norm,
    norm2: Norm,
    /// GPT-2: `c_attn` `[d, 3d]` and its bias; Llama: q, k, v `[out, d]`.
    qkv: Vec<(Tensor, Option<Tensor>)>,
    /// Attention output projection.
    out: (Tensor, Option<Tensor>),
    /// GPT-2: `c_fc`, `c_proj`; Llama: gate, up, down.
    mlp: Vec<(Tensor, Option<Tensor>)>,
}

/// A decoder-only transformer LM.
pub struct Transformer {
    config: TransformerConfig,
    layout: Layout,
    params: Vec<Param>,
    embed: Tensor,
    positions: Option<Tensor>,
    blocks: Vec<Block>,
    final_norm: Norm,
    lm_head: Option<Tensor>,
}

impl Transformer {
    /// Builds the model's tensors from `src`, by their Hugging Face names. Fresh values
    /// follow GPT-2: N(0, 0.02²), residual projections scaled by 1/√(2·layers), zero
    /// biases, unit norm scales.
    pub fn build(config: TransformerConfig, layout: Layout, src: &mut Source<'_>) -> Result<Self> {
        config.validate().map_err(candle_core::Error::Msg)?;
        let c = &config;
        let (d, hd) = (c.d_model, c.head_dim());
        let resid = 0.02 / (2.0 * c.layers as f64).sqrt();
        let mut params = Vec::new();
        let mut take = |name: String, shape: &[usize], init: Init| -> Result<Tensor> {
            let p = Param::new(name.clone(), &src(&name, shape, init)?)?;
            let t = p.var.as_tensor().clone();
            params.push(p);
            Ok(t)
        };
        let w = Init::Normal(0.02);
        let mut blocks = Vec::new();
        let (embed, positions, final_norm, lm_head);
        match layout {
            Layout::Gpt2 => {
                embed = take("transformer.wte.weight".into(), &[c.vocab, d], w)?;
                positions = Some(take(
                    "transformer.wpe.weight".into(),
                    &[c.context, d],
                    Init::Normal(0.01),
                )?);
                for i in 0..c.layers {
                    let p = |s: &str| format!("transformer.h.{i}.{s}");
                    let mut norm = |s: &str| -> Result<Norm> {
                        Ok(Norm {
                            weight: take(p(&format!("{s}.weight")), &[d], Init::Ones)?,
                            bias: Some(take(p(&format!("{s}.bias")), &[d], Init::Zeros)?),
                        })
                    };
                    let (norm1, norm2) = (norm("ln_1")?, norm("ln_2")?);
                    let mut conv1d = |s: &str,
                                      i_: usize,
                                      o: usize,
                                      init: Init|
                     -> Result<(Tensor, Option<Tensor>)> {
                        Ok((
                            take(p(&format!("{s}.weight")), &[i_, o], init)?,
                            Some(take(p(&format!("{s}.bias")), &[o], Init::Zeros)?),
                        ))
                    };
                    let qkv = vec![conv1d("attn.c_attn", d, 3 * d, w)?];
                    let out = conv1d("attn.c_proj", d, d, Init::Normal(resid))?;
                    let mlp = vec![
                        conv1d("mlp.c_fc", d, c.d_ff, w)?,
                        conv1d("mlp.c_proj", c.d_ff, d, Init::Normal(resid))?,
                    ];
                    blocks.push(Block {
                        norm1,
                        norm2,
                        qkv,
                        out,
                        mlp,
                    });
                }
                final_norm = Norm {
                    weight: take("transformer.ln_f.weight".into(), &[d], Init::Ones)?,
                    bias: Some(take("transformer.ln_f.bias".into(), &[d], Init::Zeros)?),
                };
                lm_head = None;
            }
            Layout::Llama => {
                embed = take("model.embed_tokens.weight".into(), &[c.vocab, d], w)?;
                positions = None;
                let kv = c.kv_heads * hd;
                for i in 0..c.layers {
                    let p = |s: &str| format!("model.layers.{i}.{s}");
                    let norm1 = Norm {
                        weight: take(p("input_layernorm.weight"), &[d], Init::Ones)?,
                        bias: None,
                    };
                    let norm2 = Norm {
                        weight: take(p("post_attention_layernorm.weight"), &[d], Init::Ones)?,
                        bias: None,
                    };
                    let mut lin = |s: &str,
                                   o: usize,
                                   i_: usize,
                                   init: Init|
                     -> Result<(Tensor, Option<Tensor>)> {
                        Ok((take(p(&format!("{s}.weight")), &[o, i_], init)?, None))
                    };
                    let qkv = vec![
                        lin("self_attn.q_proj", d, d, w)?,
                        lin("self_attn.k_proj", kv, d, w)?,
                        lin("self_attn.v_proj", kv, d, w)?,
                    ];
                    let out = lin("self_attn.o_proj", d, d, Init::Normal(resid))?;
                    let mlp = vec![
                        lin("mlp.gate_proj", c.d_ff, d, w)?,
                        lin("mlp.up_proj", c.d_ff, d, w)?,
                        lin("mlp.down_proj", d, c.d_ff, Init::Normal(resid))?,
                    ];
                    blocks.push(Block {
                        norm1,
                        norm2,
                        qkv,
                        out,
                        mlp,
                    });
                }
                final_norm = Norm {
                    weight: take("model.norm.weight".into(), &[d], Init::Ones)?,
                    bias: None,
                };
                lm_head = if c.tie_embeddings {
                    None
                } else {
                    Some(take("lm_head.weight".into(), &[c.vocab, d], w)?)
                };
            }
        }
        Ok(Transformer {
            config,
            layout,
            params,
            embed,
            positions,
            blocks,
            final_norm,
            lm_head,
        })
    }

    /// A freshly initialised model.
    pub fn new(
        config: TransformerConfig,
        layout: Layout,
        seed: u64,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        Self::build(config, layout, &mut super::fresh(seed, dtype, device))
    }

    /// The tensors in the order `infer` takes them: embeddings, then per block its
    /// norms, projections (weight, bias) and MLP, then the final norm and `lm_head`.
    fn tensors(&self) -> Vec<&Tensor> {
        let mut out = vec![&self.embed];
        out.extend(&self.positions);
        for blk in &self.blocks {
            for n in [&blk.norm1, &blk.norm2] {
                out.push(&n.weight);
                out.extend(&n.bias);
            }
            for (w, b) in blk.qkv.iter().chain([&blk.out]).chain(&blk.mlp) {
                out.push(w);
                out.extend(b);
            }
        }
        out.push(&self.final_norm.weight);
        out.extend(&self.final_norm.bias);
        out.extend(&self.lm_head);
        out
    }

    fn norm(&self, x: &Tensor, n: &Norm, train: bool) -> Result<Tensor> {
        let eps = self.config.norm_eps as f32;
        // candle's fused norms have no backward pass and no f64 kernels.
        let train = train || x.dtype() == DType::F64;
        match (&n.bias, train) {
            (Some(b), true) if x.dtype() == DType::F32 && x.device().is_cpu() => {
                // With its backward pass (`models::layer_norm`).
                super::layer_norm::layer_norm(x, &n.weight, b, eps)
            }
            (Some(b), true) => candle_nn::ops::layer_norm_slow(x, &n.weight, b, eps),
            (Some(b), false) => candle_nn::ops::layer_norm(x, &n.weight, b, eps),
            (None, true) => candle_nn::ops::rms_norm_slow(x, &n.weight, eps),
            (None, false) => candle_nn::ops::rms_norm(x, &n.weight, eps),
        }
    }

    fn conv1d(x: &Tensor, (w, b): &(Tensor, Option<Tensor>), train: bool) -> Result<Tensor> {
        layer(x, w, b.as_ref(), Stored::InOut, false, train)
    }

    fn lin(x: &Tensor, (w, b): &(Tensor, Option<Tensor>), train: bool) -> Result<Tensor> {
        layer(x, w, b.as_ref(), Stored::OutIn, false, train)
    }

    /// RoPE tables `[t, head_dim / 2]` in f64 then the model's dtype.
    fn rope_tables(&self, t: usize, dtype: DType, device: &Device) -> Result<(Tensor, Tensor)> {
        let hd = self.config.head_dim();
        let half = hd / 2;
        let mut cos = Vec::with_capacity(t * half);
        let mut sin = Vec::with_capacity(t * half);
        for p in 0..t {
            for i in 0..half {
                let inv = self.config.rope_theta.powf(-((2 * i) as f64) / hd as f64);
                let a = p as f64 * inv;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        let c = Tensor::from_vec(cos, (t, half), device)?.to_dtype(dtype)?;
        let s = Tensor::from_vec(sin, (t, half), device)?.to_dtype(dtype)?;
        Ok((c, s))
    }

    #[cfg(test)]
    pub(crate) fn rope_for_test(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
        Self::rope(x, cos, sin).expect("rope")
    }

    /// Rotate-half RoPE on `[b, heads, t, hd]`: `(x1, x2) → (x1 c − x2 s, x2 c + x1 s)`.
    fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let half = x.dim(D::Minus1)? / 2;
        let x1 = x.narrow(D::Minus1, 0, half)?;
        let x2 = x.narrow(D::Minus1, half, half)?;
        let a = (x1.broadcast_mul(cos)? - x2.broadcast_mul(sin)?)?;
        let b = (x2.broadcast_mul(cos)? + x1.broadcast_mul(sin)?)?;
        Tensor::cat(&[a, b], D::Minus1)
    }

    fn attention(
        &self,
        h: &Tensor,
        blk: &Block,
        rope: Option<&(Tensor, Tensor)>,
        mask: &Tensor,
        train: bool,
    ) -> Result<Tensor> {
        let c = &self.config;
        let (b, t, d) = h.dims3()?;
        let hd = c.head_dim();
        let heads = |x: Tensor, n: usize| -> Result<Tensor> {
            x.reshape((b, t, n, hd))?.transpose(1, 2)?.contiguous()
        };
        let (q, k, v) = match self.layout {
            Layout::Gpt2 => {
                let qkv = Self::conv1d(h, &blk.qkv[0], train)?;
                (
                    heads(qkv.narrow(2, 0, d)?, c.heads)?,
                    heads(qkv.narrow(2, d, d)?, c.heads)?,
                    heads(qkv.narrow(2, 2 * d, d)?, c.heads)?,
                )
            }
            Layout::Llama => (
                heads(Self::lin(h, &blk.qkv[0], train)?, c.heads)?,
                heads(Self::lin(h, &blk.qkv[1], train)?, c.kv_heads)?,
                heads(Self::lin(h, &blk.qkv[2], train)?, c.kv_heads)?,
            ),
        };
        let (q, k) = match rope {
            Some((cos, sin)) => (Self::rope(&q, cos, sin)?, Self::rope(&k, cos, sin)?),
            None => (q, k),
        };
        // Grouped-query attention: each key/value head serves heads / kv_heads queries.
        let rep = c.heads / c.kv_heads;
        let expand = |x: Tensor| -> Result<Tensor> {
            if rep == 1 {
                return Ok(x);
            }
            x.unsqueeze(2)?
                .broadcast_as((b, c.kv_heads, rep, t, hd))?
                .reshape((b, c.heads, t, hd))
        };
        let (k, v) = (expand(k)?, expand(v)?);
        // Scaling q costs a pass over [t, hd] instead of one over [t, t].
        let q = (q * (1.0 / (hd as f64).sqrt()))?;
        let scores = q.matmul(&k.t()?)?;
        let fused = if train && scores.dtype() == DType::F32 && scores.device().is_cpu() {
            // With its backward pass (`models::causal_softmax`).
            Some(super::causal_softmax::causal_softmax(&scores)?)
        } else if train {
            None
        } else {
            crate::fused::causal_softmax(&scores)?
        };
        let p = match fused {
            Some(p) => p,
            None if train || scores.dtype() == DType::F64 => {
                candle_nn::ops::softmax(&scores.broadcast_add(mask)?, D::Minus1)?
            }
            None => candle_nn::ops::softmax_last_dim(&scores.broadcast_add(mask)?)?,
        };
        let a = p
            .matmul(&v.contiguous()?)?
            .transpose(1, 2)?
            .reshape((b, t, d))?;
        match self.layout {
            Layout::Gpt2 => Self::conv1d(&a, &blk.out, train),
            Layout::Llama => Self::lin(&a, &blk.out, train),
        }
    }

    fn mlp(&self, h: &Tensor, blk: &Block, train: bool) -> Result<Tensor> {
        match self.layout {
            Layout::Gpt2 => {
                let f = Self::conv1d(h, &blk.mlp[0], train)?;
                // The inference kernel has no backward pass.
                let f = if train {
                    super::train_gelu(&f, train)?
                } else {
                    crate::fused::gelu(&f)?
                };
                Self::conv1d(&f, &blk.mlp[1], train)
            }
            Layout::Llama => {
                let g = Self::lin(h, &blk.mlp[0], train)?;
                let u = Self::lin(h, &blk.mlp[1], train)?;
                let f = if train {
                    (g.silu()? * u)?
                } else {
                    crate::fused::silu_mul(&g, &u)?
                };
                Self::lin(&f, &blk.mlp[2], train)
            }
        }
    }
}

impl Model for Transformer {
    fn config(&self) -> ModelConfig {
        match self.layout {
            Layout::Gpt2 => ModelConfig::Gpt2(self.config.clone()),
            Layout::Llama => ModelConfig::Llama(self.config.clone()),
        }
    }

    fn params(&self) -> &[Param] {
        &self.params
    }

    fn task(&self) -> Task {
        Task::LanguageModel
    }

    fn score(&self, x: &Tensor, y: &Tensor) -> Result<(f64, f64, usize)> {
        match infer::score(self, x, y)? {
            Some(s) => Ok(s),
            None => super::nll_and_hits(&self.forward(x, None)?, y),
        }
    }

    /// Logits `[batch, tokens, vocab]` for token ids `[batch, tokens]`.
    fn forward(&self, x: &Tensor, train: Option<&mut Rng>) -> Result<Tensor> {
        let train = train.is_some();
        let (b, t) = x.dims2()?;
        if t > self.config.context && self.layout == Layout::Gpt2 {
            candle_core::bail!(
                "{t} tokens is more than the model's context of {}",
                self.config.context
            );
        }
        let dtype = self.embed.dtype();
        let dev = self.embed.device();
        let mut h =
            self.embed
                .index_select(&x.flatten_all()?, 0)?
                .reshape((b, t, self.config.d_model))?;
        if let Some(pos) = &self.positions {
            h = h.broadcast_add(&pos.narrow(0, 0, t)?)?;
        }
        let mask = causal_mask(t, dtype, dev)?;
        let rope = match self.layout {
            Layout::Llama => Some(self.rope_tables(t, dtype, dev)?),
            Layout::Gpt2 => None,
        };
        for blk in &self.blocks {
            let a = self.attention(
                &self.norm(&h, &blk.norm1, train)?,
                blk,
                rope.as_ref(),
                &mask,
                train,
            )?;
            h = (h + a)?;
            let m = self.mlp(&self.norm(&h, &blk.norm2, train)?, blk, train)?;
            h = (h + m)?;
        }
        let h = self.norm(&h, &self.final_norm, train)?;
        let head = self.lm_head.as_ref().unwrap_or(&self.embed);
        layer(&h, head, None, Stored::OutIn, false, train)
    }
}
