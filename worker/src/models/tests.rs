//! Every model's forward pass against an independent f64 computation
//! (`reference.rs`), and checkpoints in the Hugging Face and GGUF layouts loading by
//! name to the same model.

use std::collections::HashMap;

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Tensor};
use ridgeline_common::rng::Rng;

use super::reference::{self, Weights};
use super::*;

/// A source of random values for every tensor (biases and norm scales included, so
/// that each is exercised), positive for variances.
fn random(seed: u64, dtype: DType) -> impl FnMut(&str, &[usize], Init) -> Result<Tensor> {
    move |name, shape, init| {
        let mut r = Rng::stream(seed, ridgeline_common::landscape::name_key(name));
        let n: usize = shape.iter().product();
        let scale = match init {
            Init::Ones => 0.2,
            Init::Normal(s) => (s * 10.0).min(0.3),
            _ => 0.3,
        };
        let v: Vec<f64> = (0..n)
            .map(|_| {
                let x = r.normal() * scale;
                match init {
                    Init::Ones if name.ends_with("running_var") => 0.5 + x.abs(),
                    Init::Ones => 1.0 + x,
                    _ => x,
                }
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu)?.to_dtype(dtype)
    }
}

fn weights(m: &dyn Model) -> Weights {
    m.named_tensors()
        .into_iter()
        .map(|(k, t)| {
            let v = t
                .to_dtype(DType::F64)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            (k, (t.dims().to_vec(), v))
        })
        .collect()
}

fn tiny(kv_heads: usize, tie: bool) -> TransformerConfig {
    TransformerConfig {
        vocab: 23,
        context: 16,
        d_model: 16,
        layers: 2,
        heads: 4,
        kv_heads,
        d_ff: 24,
        norm_eps: 1e-5,
        rope_theta: 10_000.0,
        tie_embeddings: tie,
    }
}

fn tokens(b: usize, t: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut r = Rng::new(seed);
    (0..b * t).map(|_| r.below(vocab as u64) as u32).collect()
}

/// Largest |a − b| / max(|b|, 1e-3) over all logits.
fn worst(a: &Tensor, b: &[Vec<Vec<f64>>]) -> f64 {
    let a = a.to_dtype(DType::F64).unwrap().to_vec3::<f64>().unwrap();
    let mut w: f64 = 0.0;
    for (x, y) in a
        .iter()
        .flatten()
        .flatten()
        .zip(b.iter().flatten().flatten())
    {
        w = w.max((x - y).abs() / y.abs().max(1e-3));
    }
    w
}

#[test]
fn gpt2_and_llama_blocks_match_the_f64_reference() {
    for (layout, kv, tie) in [
        (Layout::Gpt2, 4, true),
        (Layout::Llama, 2, true),
        (Layout::Llama, 4, false),
    ] {
        let c = tiny(kv, tie);
        let (b, t) = (2, 11);
        let ids = tokens(b, t, c.vocab, 7);
        for dtype in [DType::F64, DType::F32] {
            let m = Transformer::build(c.clone(), layout, &mut random(3, dtype)).unwrap();
            let w = weights(&m);
            let want: Vec<Vec<Vec<f64>>> = ids
                .chunks(t)
                .map(|s| reference::transformer(&w, &c, layout == Layout::Gpt2, s))
                .collect();
            let x = Tensor::from_vec(ids.clone(), (b, t), &Device::Cpu).unwrap();
            let mut rng = Rng::new(0);
            for train in [false, true] {
                let out = m.forward(&x, train.then_some(&mut rng)).unwrap();
                let err = worst(&out, &want);
                // In f64 the model agrees with the reference to ~1e-9 of the logits' scale
                // (the bar is 1e-5); in f32, rounding through two random blocks leaves
                // ~3e-4.
                let tol = if dtype == DType::F64 { 1e-8 } else { 1e-3 };
                assert!(
                    err < tol,
                    "{layout:?} kv={kv} {dtype:?} train={train}: {err}"
                );
            }
        }
    }
}

fn cnn_config(channels: Vec<usize>, bn: bool) -> CnnConfig {
    CnnConfig {
        in_channels: 2,
        height: 8,
        width: 6,
        classes: 5,
        channels,
        blocks: 2,
        batch_norm: bn,
    }
}

#[test]
fn cnn_and_resnet_match_a_direct_convolution() {
    for (residual, bn, channels) in [
        (false, true, vec![3, 4]),
        (false, false, vec![4]),
        (true, true, vec![3, 5]),
    ] {
        let c = cnn_config(channels, bn);
        let m = Cnn::build(c.clone(), residual, &mut random(5, DType::F64)).unwrap();
        let w = weights(&m);
        let n = 3;
        let d = c.in_channels * c.height * c.width;
        let mut r = Rng::new(9);
        let x: Vec<f64> = (0..n * d).map(|_| r.normal()).collect();
        let out = m
            .forward(
                &Tensor::from_vec(x.clone(), (n, d), &Device::Cpu).unwrap(),
                None,
            )
            .unwrap()
            .to_vec2::<f64>()
            .unwrap();
        for (i, row) in out.iter().enumerate() {
            let want = reference::cnn(&w, &c, residual, &x[i * d..(i + 1) * d]);
            for (a, b) in row.iter().zip(&want) {
                assert!(
                    (a - b).abs() <= 1e-9 * b.abs().max(1.0),
                    "residual={residual} bn={bn}: {a} vs {b}"
                );
            }
        }
    }
}

/// Batch norm in training mode normalises with the batch's statistics and moves the
/// running ones by momentum 0.1, with the unbiased variance (PyTorch's convention).
#[test]
fn batch_norm_updates_running_statistics() {
    let c = cnn_config(vec![2], true);
    let m = Cnn::build(c.clone(), false, &mut fresh(1, DType::F64, &Device::Cpu)).unwrap();
    let n = 4;
    let d = c.in_channels * c.height * c.width;
    let mut r = Rng::new(2);
    let x: Vec<f64> = (0..n * d).map(|_| 2.0 + r.normal()).collect();
    let xt = Tensor::from_vec(x, (n, d), &Device::Cpu).unwrap();
    let pre = m
        .params()
        .iter()
        .find(|p| p.name == "blocks.0.conv.weight")
        .unwrap()
        .var
        .as_tensor()
        .clone();
    let y = xt
        .reshape((n, 2, 8, 6))
        .unwrap()
        .conv2d(&pre, 1, 1, 1, 1)
        .unwrap()
        .transpose(0, 1)
        .unwrap()
        .flatten_from(1)
        .unwrap()
        .to_vec2::<f64>()
        .unwrap();
    m.forward(&xt, Some(&mut Rng::new(0))).unwrap();
    let get = |name: &str| {
        m.params()
            .iter()
            .find(|p| p.name == name)
            .unwrap()
            .var
            .as_tensor()
            .to_vec1::<f64>()
            .unwrap()
    };
    let (mean, var) = (
        get("blocks.0.bn.running_mean"),
        get("blocks.0.bn.running_var"),
    );
    for (ch, v) in y.iter().enumerate() {
        let k = v.len() as f64;
        let mu = v.iter().sum::<f64>() / k;
        let s2 = v.iter().map(|x| (x - mu).powi(2)).sum::<f64>() / (k - 1.0);
        assert!(
            (mean[ch] - 0.1 * mu).abs() < 1e-12,
            "{} vs {}",
            mean[ch],
            0.1 * mu
        );
        assert!((var[ch] - (0.9 + 0.1 * s2)).abs() < 1e-12);
    }
}

fn loss_of(m: &dyn Model, ids: &[u32], b: usize) -> f64 {
    let t = ids.len() / b - 1;
    let rows: Vec<&[u32]> = ids.chunks(t + 1).collect();
    let x: Vec<u32> = rows.iter().flat_map(|r| r[..t].to_vec()).collect();
    let y: Vec<u32> = rows.iter().flat_map(|r| r[1..].to_vec()).collect();
    let x = Tensor::from_vec(x, (b, t), &Device::Cpu).unwrap();
    let y = Tensor::from_vec(y, (b, t), &Device::Cpu).unwrap();
    let (nll, _, n) = nll_and_hits(&m.forward(&x, None).unwrap(), &y).unwrap();
    nll / n as f64
}

/// A tiny GPT-2 and a tiny Llama written as Hugging Face checkpoints (single file and
/// sharded with an index) and as GGUF (f32, and Q8_0 within its quantisation error)
/// load by name to the same model.
#[test]
fn hf_and_gguf_checkpoints_load_by_name() {
    let dir = tempfile::tempdir().unwrap();
    for (layout, kv, tie) in [(Layout::Gpt2, 4, true), (Layout::Llama, 2, false)] {
        let c = tiny(kv, tie);
        let m = Transformer::build(c.clone(), layout, &mut random(4, DType::F32)).unwrap();
        let ids = tokens(3, 12, c.vocab, 1);
        let want = loss_of(&m, &ids, 3);
        // Hugging Face config.json in the family's own keys.
        let hf_config = match layout {
            Layout::Gpt2 => serde_json::json!({"model_type": "gpt2", "vocab_size": c.vocab,
                "n_positions": c.context, "n_embd": c.d_model, "n_layer": c.layers,
                "n_head": c.heads, "n_inner": c.d_ff, "layer_norm_epsilon": c.norm_eps}),
            Layout::Llama => serde_json::json!({"model_type": "llama", "vocab_size": c.vocab,
                "max_position_embeddings": c.context, "hidden_size": c.d_model,
                "num_hidden_layers": c.layers, "num_attention_heads": c.heads,
                "num_key_value_heads": c.kv_heads, "intermediate_size": c.d_ff,
                "rms_norm_eps": c.norm_eps, "rope_theta": c.rope_theta,
                "tie_word_embeddings": c.tie_embeddings}),
        };
        let config = hf::config_from_hf(hf_config.to_string().as_bytes()).unwrap();
        assert_eq!(config, m.config());
        let mut named = m.named_tensors();
        if layout == Layout::Gpt2 {
            // GPT2Model's bare names, as the `gpt2` repository stores them.
            for (k, _) in named.iter_mut() {
                *k = k.trim_start_matches("transformer.").to_owned();
            }
        }
        let (a, b) = named.split_at(named.len() / 2);
        let file = |part: &[(String, Tensor)], name: &str| {
            let p = dir.path().join(name);
            safetensors::serialize_to_file(part.iter().map(|(k, t)| (k.as_str(), t)), None, &p)
                .unwrap();
            std::fs::read(p).unwrap()
        };
        let single = file(&named, "model.safetensors");
        let shards = [
            file(a, "model-00001-of-00002.safetensors"),
            file(b, "model-00002-of-00002.safetensors"),
        ];
        let index = serde_json::json!({"weight_map": named.iter().enumerate().map(|(i, (k, _))| {
            (k.clone(), if i < a.len() { "model-00001-of-00002.safetensors" } else { "model-00002-of-00002.safetensors" })
        }).collect::<HashMap<_, _>>()});
        let names = hf::shard_names(index.to_string().as_bytes()).unwrap();
        assert_eq!(names.len(), 2);
        for buffers in [vec![&single[..]], vec![&shards[0][..], &shards[1][..]]] {
            let t = hf::load_tensors(&buffers, &config, &Device::Cpu).unwrap();
            let loaded = config.load(&t, DType::F32, &Device::Cpu).unwrap();
            assert_eq!(loss_of(loaded.as_ref(), &ids, 3), want, "{layout:?}");
        }
        for (ty, tol) in [(GgmlDType::F32, 0.0), (GgmlDType::Q8_0, 2e-2)] {
            let bytes = gguf::write(&m, ty).unwrap();
            let (gc, t) = gguf::load(&bytes, DType::F32, &Device::Cpu).unwrap();
            assert_eq!(gc, config);
            let loaded = gc.load(&t, DType::F32, &Device::Cpu).unwrap();
            let got = loss_of(loaded.as_ref(), &ids, 3);
            assert!(
                (got - want).abs() <= tol * want,
                "{layout:?} {ty:?}: {got} vs {want}"
            );
        }
    }
    // A missing tensor is named.
    let c = tiny(4, true);
    let m = Transformer::build(c.clone(), Layout::Llama, &mut random(4, DType::F32)).unwrap();
    let mut t: HashMap<String, Tensor> = m.named_tensors().into_iter().collect();
    t.remove("model.layers.1.mlp.up_proj.weight");
    let e = ModelConfig::Llama(c)
        .load(&t, DType::F32, &Device::Cpu)
        .err()
        .unwrap();
    assert!(e.contains("model.layers.1.mlp.up_proj.weight"), "{e}");
}

/// llama.cpp's GGUF keeps q and k rows permuted for its interleaved RoPE. Undoing the
/// permutation and rotating halves (Hugging Face) must give the same attention inputs as
/// rotating interleaved pairs (candle's `rope_i`, llama.cpp's convention) on the
/// permuted rows: checked on random projections, head by head.
#[test]
fn gguf_permutation_matches_interleaved_rope() {
    let (heads, hd, d, t) = (3, 8, 10, 5);
    let mut r = Rng::new(21);
    let v: Vec<f32> = (0..heads * hd * d).map(|_| r.normal() as f32).collect();
    let w_hf = Tensor::from_vec(v, (heads * hd, d), &Device::Cpu).unwrap();
    let x: Vec<f32> = (0..t * d).map(|_| r.normal() as f32).collect();
    let x = Tensor::from_vec(x, (t, d), &Device::Cpu).unwrap();
    let w_gguf = gguf::permute_for_test(&w_hf, heads);
    let (cos, sin) = {
        let mut c = Vec::new();
        let mut s = Vec::new();
        for p in 0..t {
            for i in 0..hd / 2 {
                let a = p as f64 * 10_000f64.powf(-((2 * i) as f64) / hd as f64);
                c.push(a.cos() as f32);
                s.push(a.sin() as f32);
            }
        }
        (
            Tensor::from_vec(c, (t, hd / 2), &Device::Cpu).unwrap(),
            Tensor::from_vec(s, (t, hd / 2), &Device::Cpu).unwrap(),
        )
    };
    let heads_of = |w: &Tensor| {
        x.matmul(&w.t().unwrap())
            .unwrap()
            .reshape((1, t, heads, hd))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap()
    };
    let ours = transformer::Transformer::rope_for_test(&heads_of(&w_hf), &cos, &sin);
    let theirs = candle_nn::rotary_emb::rope_i(&heads_of(&w_gguf), &cos, &sin).unwrap();
    // llama.cpp's rows within a head are (i, half) pairs: bring them back to halves.
    let theirs = theirs
        .reshape((1, heads, t, hd / 2, 2))
        .unwrap()
        .transpose(3, 4)
        .unwrap()
        .contiguous()
        .unwrap()
        .reshape((1, heads, t, hd))
        .unwrap();
    let diff = (ours - theirs)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(diff < 1e-5, "{diff}");
}

/// The CNN's gradient (max pooling included) against central differences of its loss
/// in f64, and its pooling against candle's kernel. Found by the Hessian tests: candle
/// 0.11's `max_pool2d` backward scales gradients by 1/4.
#[test]
fn cnn_gradients_match_differences_of_the_loss() {
    let c = cnn_config(vec![3, 2], false);
    let m = Cnn::build(c.clone(), false, &mut random(3, DType::F64)).unwrap();
    let n = 3;
    let d = c.in_channels * c.height * c.width;
    let mut r = Rng::new(4);
    let x = Tensor::from_vec(
        (0..n * d).map(|_| r.normal()).collect::<Vec<f64>>(),
        (n, d),
        &Device::Cpu,
    )
    .unwrap();
    let y = Tensor::from_vec(
        (0..n).map(|_| r.below(5) as u32).collect::<Vec<_>>(),
        n,
        &Device::Cpu,
    )
    .unwrap();
    let loss = || {
        cross_entropy(&m.forward(&x, None).unwrap(), &y)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    let grads = cross_entropy(&m.forward(&x, None).unwrap(), &y)
        .unwrap()
        .backward()
        .unwrap();
    let w = &m.params()[0];
    assert_eq!(w.name, "blocks.0.conv.weight");
    let g = grads
        .get(&w.var)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let theta = w.var.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    for i in (0..theta.len()).step_by(5) {
        let h = 1e-6;
        let at = |s: f64| {
            let mut t = theta.clone();
            t[i] += s * h;
            w.var
                .set(&Tensor::from_vec(t, w.var.dims(), &Device::Cpu).unwrap())
                .unwrap();
            loss()
        };
        let fd = (at(1.0) - at(-1.0)) / (2.0 * h);
        assert!(
            (g[i] - fd).abs() <= 1e-6 * fd.abs().max(1e-3),
            "weight {i}: gradient {} vs {fd}",
            g[i]
        );
    }
    let h = x.reshape((n, 2, 8, 6)).unwrap();
    let ours = cnn::max_pool2(&h, true)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let theirs = h
        .max_pool2d(2)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    assert_eq!(ours, theirs);
}

/// A scan's f32 evaluation (`Model::score`, fused kernels) against the f64 reference:
/// the summed NLL of the next tokens and the argmax hits, for sequences longer than an
/// attention band and a block of rows, with small and larger vocabularies.
#[test]
fn transformer_scores_match_the_f64_reference() {
    for (layout, kv, tie, vocab) in [
        (Layout::Gpt2, 4, true, 23),
        (Layout::Gpt2, 4, true, 2000),
        (Layout::Llama, 2, true, 23),
        (Layout::Llama, 1, false, 2000),
    ] {
        let c = TransformerConfig {
            vocab,
            context: 128,
            ..tiny(kv, tie)
        };
        let m = Transformer::build(c.clone(), layout, &mut random(3, DType::F32)).unwrap();
        let w = weights(&m);
        for (b, t) in [(2, 11), (3, 100)] {
            let ids = tokens(b, t + 1, vocab, 5);
            let rows: Vec<&[u32]> = ids.chunks(t + 1).collect();
            let (mut nll, mut hits, mut near_ties) = (0f64, 0f64, 0f64);
            for r in &rows {
                let logits = reference::transformer(&w, &c, layout == Layout::Gpt2, &r[..t]);
                for (row, &target) in logits.iter().zip(&r[1..]) {
                    let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let lse = max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
                    nll += lse - row[target as usize];
                    let mut sorted = row.clone();
                    sorted.sort_by(|a, b| b.total_cmp(a));
                    hits += f64::from(u8::from(row[target as usize] == max));
                    near_ties += f64::from(u8::from(sorted[0] - sorted[1] < 1e-3));
                }
            }
            let x: Vec<u32> = rows.iter().flat_map(|r| r[..t].to_vec()).collect();
            let y: Vec<u32> = rows.iter().flat_map(|r| r[1..].to_vec()).collect();
            let x = Tensor::from_vec(x, (b, t), &Device::Cpu).unwrap();
            let y = Tensor::from_vec(y, (b, t), &Device::Cpu).unwrap();
            let (got, got_hits, n) = m.score(&x, &y).unwrap();
            let (candle, _, _) = m.score_by_candle(&x, &y).unwrap();
            let what = format!("{layout:?} kv={kv} vocab={vocab} b={b} t={t}");
            assert_eq!(n, b * t, "{what}");
            // Per token, f32 rounding through two random blocks moves the NLL by ~1e-6;
            // a wrong mask, head or position moves it by ~1e-1.
            let per_token = (got - nll).abs() / n as f64;
            assert!(per_token < 1e-4, "{what}: {got} against {nll}");
            assert!(
                (candle - nll).abs() / (n as f64) < 1e-4,
                "{what}: candle {candle}"
            );
            assert!(
                (got_hits - hits).abs() <= near_ties,
                "{what}: {got_hits} hits, {hits}"
            );
        }
    }
}

/// The fused evaluation refuses what candle's forward refuses, with the reason.
#[test]
fn transformer_scores_refuse_bad_input() {
    let c = tiny(4, true);
    let m = Transformer::build(c.clone(), Layout::Gpt2, &mut random(3, DType::F32)).unwrap();
    let long = Tensor::zeros((1, c.context + 1), DType::U32, &Device::Cpu).unwrap();
    let err = m.score(&long, &long).unwrap_err().to_string();
    assert!(err.contains("more than the model's context"), "{err}");
    let bad = Tensor::from_vec(vec![0u32, c.vocab as u32], (1, 2), &Device::Cpu).unwrap();
    let ok = Tensor::zeros((1, 2), DType::U32, &Device::Cpu).unwrap();
    let err = m.score(&bad, &ok).unwrap_err().to_string();
    assert!(err.contains("outside the vocabulary"), "{err}");
    // A NaN anywhere in the weights gives a NaN loss (a diverged point), not a number.
    for name in ["transformer.h.1.mlp.c_fc.weight", "transformer.wte.weight"] {
        let p = m.params().iter().find(|p| p.name == name).unwrap();
        let saved = p.var.as_tensor().copy().unwrap();
        let mut v = saved.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        v[5] = f32::NAN;
        p.var
            .set(&Tensor::from_vec(v, saved.shape(), &Device::Cpu).unwrap())
            .unwrap();
        let ids = Tensor::from_vec(tokens(2, 9, c.vocab, 1), (2, 9), &Device::Cpu).unwrap();
        let (nll, _, _) = m.score(&ids, &ids).unwrap();
        assert!(nll.is_nan(), "{name}: {nll}");
        p.var.set(&saved).unwrap();
    }
}
