//! Independent f64 implementations of the models' forward passes, in plain loops over
//! `Vec<f64>`, written from the papers / Hugging Face's modelling code, for the tests.
//! Index loops are kept as the formulas write them.
#![allow(clippy::needless_range_loop)]

use std::collections::HashMap;

use super::{CnnConfig, TransformerConfig};

/// A tensor's values in f64, flattened: what the kernels' tests compare.
pub(crate) fn flat(t: &candle_core::Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(candle_core::DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Named tensors as `(shape, row-major f64 values)`.
pub type Weights = HashMap<String, (Vec<usize>, Vec<f64>)>;

fn w<'a>(m: &'a Weights, name: &str) -> &'a [f64] {
    &m.get(name).unwrap_or_else(|| panic!("missing {name}")).1
}

/// `y[o] = Σ_i x[i] W[o][i] + b[o]` for `W` stored `[out, in]`.
fn matvec(x: &[f64], wt: &[f64], out: usize, b: Option<&[f64]>) -> Vec<f64> {
    let inn = x.len();
    (0..out)
        .map(|o| {
            let s: f64 = (0..inn).map(|i| x[i] * wt[o * inn + i]).sum();
            s + b.map_or(0.0, |b| b[o])
        })
        .collect()
}

/// `y[o] = Σ_i x[i] W[i][o] + b[o]` for `W` stored `[in, out]` (GPT-2's Conv1D).
fn vecmat(x: &[f64], wt: &[f64], out: usize, b: Option<&[f64]>) -> Vec<f64> {
    (0..out)
        .map(|o| {
            let s: f64 = x.iter().enumerate().map(|(i, v)| v * wt[i * out + o]).sum();
            s + b.map_or(0.0, |b| b[o])
        })
        .collect()
}

fn layer_norm(x: &[f64], g: &[f64], b: &[f64], eps: f64) -> Vec<f64> {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    x.iter()
        .enumerate()
        .map(|(i, v)| (v - mean) / (var + eps).sqrt() * g[i] + b[i])
        .collect()
}

fn rms_norm(x: &[f64], g: &[f64], eps: f64) -> Vec<f64> {
    let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
    x.iter()
        .enumerate()
        .map(|(i, v)| v / (ms + eps).sqrt() * g[i])
        .collect()
}

fn gelu_tanh(x: f64) -> f64 {
    0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh())
}

/// Causal attention of one sequence: `q[t][h·hd]`, `k`, `v` `[t][kvh·hd]`.
fn attention(
    q: &[Vec<f64>],
    k: &[Vec<f64>],
    v: &[Vec<f64>],
    heads: usize,
    kvh: usize,
) -> Vec<Vec<f64>> {
    let t = q.len();
    let hd = q[0].len() / heads;
    let mut out = vec![vec![0.0; heads * hd]; t];
    for h in 0..heads {
        let g = h / (heads / kvh);
        for i in 0..t {
            let scores: Vec<f64> = (0..=i)
                .map(|j| {
                    (0..hd)
                        .map(|d| q[i][h * hd + d] * k[j][g * hd + d])
                        .sum::<f64>()
                        / (hd as f64).sqrt()
                })
                .collect();
            let m = scores.iter().cloned().fold(f64::MIN, f64::max);
            let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
            let z: f64 = e.iter().sum();
            for d in 0..hd {
                out[i][h * hd + d] = (0..=i).map(|j| e[j] / z * v[j][g * hd + d]).sum();
            }
        }
    }
    out
}

/// Hugging Face's `apply_rotary_pos_emb` with `rotate_half`, position `p`, on one head's
/// slice of `x`.
fn rope(x: &mut [f64], p: usize, theta: f64) {
    let hd = x.len();
    let half = hd / 2;
    let orig = x.to_vec();
    for i in 0..hd {
        let f = i % half;
        let a = p as f64 * theta.powf(-((2 * f) as f64) / hd as f64);
        let rot = if i < half {
            -orig[i + half]
        } else {
            orig[i - half]
        };
        x[i] = orig[i] * a.cos() + rot * a.sin();
    }
}

/// Logits `[t][vocab]` of one token sequence.
pub fn transformer(
    m: &Weights,
    c: &TransformerConfig,
    gpt2: bool,
    tokens: &[u32],
) -> Vec<Vec<f64>> {
    let d = c.d_model;
    let hd = d / c.heads;
    let embed_name = if gpt2 {
        "transformer.wte.weight"
    } else {
        "model.embed_tokens.weight"
    };
    let embed = w(m, embed_name);
    let mut h: Vec<Vec<f64>> = tokens
        .iter()
        .enumerate()
        .map(|(p, &tok)| {
            let mut e = embed[tok as usize * d..(tok as usize + 1) * d].to_vec();
            if gpt2 {
                let pos = w(m, "transformer.wpe.weight");
                e.iter_mut()
                    .enumerate()
                    .for_each(|(i, v)| *v += pos[p * d + i]);
            }
            e
        })
        .collect();
    for l in 0..c.layers {
        let g = |s: &str| {
            if gpt2 {
                w(m, &format!("transformer.h.{l}.{s}"))
            } else {
                w(m, &format!("model.layers.{l}.{s}"))
            }
        };
        let normed: Vec<Vec<f64>> = h
            .iter()
            .map(|x| {
                if gpt2 {
                    layer_norm(x, g("ln_1.weight"), g("ln_1.bias"), c.norm_eps)
                } else {
                    rms_norm(x, g("input_layernorm.weight"), c.norm_eps)
                }
            })
            .collect();
        let kvd = c.kv_heads * hd;
        let (mut q, mut k, mut v) = (Vec::new(), Vec::new(), Vec::new());
        for x in &normed {
            if gpt2 {
                let qkv = vecmat(
                    x,
                    g("attn.c_attn.weight"),
                    3 * d,
                    Some(g("attn.c_attn.bias")),
                );
                q.push(qkv[..d].to_vec());
                k.push(qkv[d..2 * d].to_vec());
                v.push(qkv[2 * d..].to_vec());
            } else {
                q.push(matvec(x, g("self_attn.q_proj.weight"), d, None));
                k.push(matvec(x, g("self_attn.k_proj.weight"), kvd, None));
                v.push(matvec(x, g("self_attn.v_proj.weight"), kvd, None));
            }
        }
        if !gpt2 {
            for (p, (qp, kp)) in q.iter_mut().zip(k.iter_mut()).enumerate() {
                qp.chunks_mut(hd).for_each(|s| rope(s, p, c.rope_theta));
                kp.chunks_mut(hd).for_each(|s| rope(s, p, c.rope_theta));
            }
        }
        let a = attention(&q, &k, &v, c.heads, c.kv_heads);
        for (x, ai) in h.iter_mut().zip(&a) {
            let o = if gpt2 {
                vecmat(ai, g("attn.c_proj.weight"), d, Some(g("attn.c_proj.bias")))
            } else {
                matvec(ai, g("self_attn.o_proj.weight"), d, None)
            };
            x.iter_mut().zip(o).for_each(|(x, o)| *x += o);
            let n = if gpt2 {
                layer_norm(x, g("ln_2.weight"), g("ln_2.bias"), c.norm_eps)
            } else {
                rms_norm(x, g("post_attention_layernorm.weight"), c.norm_eps)
            };
            let y = if gpt2 {
                let f: Vec<f64> =
                    vecmat(&n, g("mlp.c_fc.weight"), c.d_ff, Some(g("mlp.c_fc.bias")))
                        .into_iter()
                        .map(gelu_tanh)
                        .collect();
                vecmat(&f, g("mlp.c_proj.weight"), d, Some(g("mlp.c_proj.bias")))
            } else {
                let gate = matvec(&n, g("mlp.gate_proj.weight"), c.d_ff, None);
                let up = matvec(&n, g("mlp.up_proj.weight"), c.d_ff, None);
                let f: Vec<f64> = gate
                    .iter()
                    .zip(&up)
                    .map(|(a, b)| a / (1.0 + (-a).exp()) * b)
                    .collect();
                matvec(&f, g("mlp.down_proj.weight"), d, None)
            };
            x.iter_mut().zip(y).for_each(|(x, y)| *x += y);
        }
    }
    let head = if c.tie_embeddings {
        embed
    } else {
        w(m, "lm_head.weight")
    };
    h.iter()
        .map(|x| {
            let n = if gpt2 {
                layer_norm(
                    x,
                    w(m, "transformer.ln_f.weight"),
                    w(m, "transformer.ln_f.bias"),
                    c.norm_eps,
                )
            } else {
                rms_norm(x, w(m, "model.norm.weight"), c.norm_eps)
            };
            matvec(&n, head, c.vocab, None)
        })
        .collect()
}

/// A direct convolution (no im2col): `x [c][h][w]`, kernel `[o][c][k][k]`, zero padding
/// `k/2`, stride `s`.
fn conv(
    x: &[Vec<Vec<f64>>],
    k: &[f64],
    shape: &[usize],
    stride: usize,
    bias: Option<&[f64]>,
) -> Vec<Vec<Vec<f64>>> {
    let (o, c, kh, kw) = (shape[0], shape[1], shape[2], shape[3]);
    let (h, wd) = (x[0].len(), x[0][0].len());
    let pad = kh / 2;
    let (oh, ow) = (
        (h + 2 * pad - kh) / stride + 1,
        (wd + 2 * pad - kw) / stride + 1,
    );
    let mut out = vec![vec![vec![0.0; ow]; oh]; o];
    for f in 0..o {
        for i in 0..oh {
            for j in 0..ow {
                let mut s = bias.map_or(0.0, |b| b[f]);
                for ch in 0..c {
                    for a in 0..kh {
                        for b in 0..kw {
                            let (y, xx) = (
                                (i * stride + a) as isize - pad as isize,
                                (j * stride + b) as isize - pad as isize,
                            );
                            if y >= 0 && xx >= 0 && (y as usize) < h && (xx as usize) < wd {
                                s += x[ch][y as usize][xx as usize]
                                    * k[((f * c + ch) * kh + a) * kw + b];
                            }
                        }
                    }
                }
                out[f][i][j] = s;
            }
        }
    }
    out
}

fn bn_eval(x: &mut [Vec<Vec<f64>>], m: &Weights, name: &str) {
    let (g, b, mu, var) = (
        w(m, &format!("{name}.weight")),
        w(m, &format!("{name}.bias")),
        w(m, &format!("{name}.running_mean")),
        w(m, &format!("{name}.running_var")),
    );
    for (c, plane) in x.iter_mut().enumerate() {
        for v in plane.iter_mut().flatten() {
            *v = (*v - mu[c]) / (var[c] + 1e-5).sqrt() * g[c] + b[c];
        }
    }
}

fn relu(x: &mut [Vec<Vec<f64>>]) {
    x.iter_mut()
        .flatten()
        .flatten()
        .for_each(|v| *v = v.max(0.0));
}

/// Logits of one image `[c·h·w]` through a plain CNN or a ResNet, in evaluation mode.
pub fn cnn(m: &Weights, c: &CnnConfig, residual: bool, image: &[f64]) -> Vec<f64> {
    let mut x: Vec<Vec<Vec<f64>>> = (0..c.in_channels)
        .map(|ch| {
            (0..c.height)
                .map(|i| {
                    image[(ch * c.height + i) * c.width..(ch * c.height + i + 1) * c.width].to_vec()
                })
                .collect()
        })
        .collect();
    let convbn = |x: &[Vec<Vec<f64>>], name: &str, stride: usize| {
        let (shape, k) = &m[&format!("{name}.weight")];
        let bn = residual || c.batch_norm;
        let bias = (!bn).then(|| w(m, &format!("{name}.bias")));
        let mut y = conv(x, k, shape, stride, bias);
        if bn {
            bn_eval(&mut y, m, &name.replace("conv", "bn"));
        }
        y
    };
    let features: Vec<f64> = if residual {
        x = convbn(&x, "stem.conv", 1);
        relu(&mut x);
        let mut cin = c.channels[0];
        for (s, &cout) in c.channels.iter().enumerate() {
            for b in 0..c.blocks {
                let stride = if s > 0 && b == 0 { 2 } else { 1 };
                let p = format!("stages.{s}.{b}");
                let mut y = convbn(&x, &format!("{p}.conv1"), stride);
                relu(&mut y);
                let mut y = convbn(&y, &format!("{p}.conv2"), 1);
                let short = if stride != 1 || cin != cout {
                    convbn(&x, &format!("{p}.down.conv"), stride)
                } else {
                    x.clone()
                };
                for (a, b) in y
                    .iter_mut()
                    .flatten()
                    .flatten()
                    .zip(short.iter().flatten().flatten())
                {
                    *a += b;
                }
                relu(&mut y);
                x = y;
                cin = cout;
            }
        }
        x.iter()
            .map(|p| p.iter().flatten().sum::<f64>() / (p.len() * p[0].len()) as f64)
            .collect()
    } else {
        for i in 0..c.channels.len() {
            x = convbn(&x, &format!("blocks.{i}.conv"), 1);
            relu(&mut x);
            x = x
                .iter()
                .map(|p| {
                    (0..p.len() / 2)
                        .map(|i| {
                            (0..p[0].len() / 2)
                                .map(|j| {
                                    p[2 * i][2 * j]
                                        .max(p[2 * i][2 * j + 1])
                                        .max(p[2 * i + 1][2 * j])
                                        .max(p[2 * i + 1][2 * j + 1])
                                })
                                .collect()
                        })
                        .collect()
                })
                .collect();
        }
        x.into_iter().flatten().flatten().collect()
    };
    matvec(
        &features,
        w(m, "head.weight"),
        c.classes,
        Some(w(m, "head.bias")),
    )
}
