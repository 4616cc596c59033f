//! A transformer's loss in f32 on the CPU without candle's per-op passes: what a scan
//! runs at every grid point.
//!
//! candle runs a block as some thirty tensor ops, each a pass over `[tokens, width]` with
//! an allocation, a zeroed output before every GEMM, and a thread barrier after every op,
//! the per-head `[t, hd] x [hd, t]` attention products included (perf of a GPT-2 scan:
//! about two thirds of a point outside the GEMM kernels). Here a block is three parallel
//! phases, each over independent tasks on rayon's pool with single-threaded GEMMs:
//!
//! 1. per block of [`rows`] tokens: norm, the q/k/v projection (+ bias, + RoPE);
//! 2. per sequence and head: causal attention, one band of query rows at a time, keys
//!    after the band never multiplied;
//! 3. per block of tokens: the output projection added to the residual, norm, the MLP
//!    (its hidden activations live only in the task's cache-sized buffer) added to the
//!    residual.
//!
//! The loss is taken per block of tokens too (norm, logits, log-softmax, argmax), so a
//! large vocabulary's logits never exist all at once. Every task's work and order of
//! operations is fixed by the shapes alone, not by the number of threads: a point gives
//! the same bits on any worker. Checked against the f64 reference in `models::tests`.

use std::borrow::Cow;

use candle_core::{CpuStorage, DType, Result, Storage, Tensor};
use rayon::prelude::*;

use crate::models::gemm::{View, gemm};
use crate::vmath;

use super::{Layout, Norm, Transformer};

/// Tokens per task of the row-wise phases, from the number of tokens `n` alone (not the
/// threads: the same bits on every worker): at least 16 tasks where there are enough
/// tokens, and blocks of 64 to 256 rows. gemm packs a weight matrix for every block, so
/// larger blocks pack less (2,048 tokens: 64-row blocks 7 % slower than 256 for
/// SmolLM2-135M, measured); a `[256, d_ff]` hidden block still stays in L2.
fn rows(n: usize) -> usize {
    (n / 16).clamp(64, 256)
}
/// Query rows per band of attention.
const BAND: usize = 64;

/// A weight matrix seen as `[k, n]` (input by output) with strides, and its bias.
#[derive(Clone)]
struct Mat<'a> {
    w: Cow<'a, [f32]>,
    k: usize,
    n: usize,
    rs: isize,
    cs: isize,
    bias: Option<&'a [f32]>,
}

impl Mat<'_> {
    /// The same matrix stored `[k, n]` row by row: gemm multiplies a matrix stored
    /// `[n, k]` (Llama's `[out, in]`, every output embedding) at 60–130 GFLOP/s here
    /// against 200–220 for row-major (measured for these shapes), so such a matrix is
    /// copied, one block's at a time.
    fn row_major(&self) -> Mat<'_> {
        if self.cs == 1 {
            return Mat {
                w: Cow::Borrowed(&self.w),
                ..*self
            };
        }
        let (k, n) = (self.k, self.n);
        let mut out = vec![0f32; k * n];
        // Tiles of 32 x 32 keep both sides' lines in cache.
        out.par_chunks_mut(32 * n)
            .enumerate()
            .for_each(|(tile, dst)| {
                let i0 = tile * 32;
                let rows = dst.len() / n;
                for j0 in (0..n).step_by(32) {
                    for j in j0..(j0 + 32).min(n) {
                        let src = &self.w[j * k + i0..j * k + i0 + rows];
                        for (i, v) in src.iter().enumerate() {
                            dst[i * n + j] = *v;
                        }
                    }
                }
            });
        Mat {
            w: Cow::Owned(out),
            rs: n as isize,
            cs: 1,
            ..*self
        }
    }

    /// `dst[r, j] = Σ_i x[r, i] · w[i, j]`, `rows` rows; `dst`'s rows `dst_rs` apart
    /// and `x`'s `x_rs` apart. No bias.
    fn apply(&self, rows: usize, x: &[f32], x_rs: usize, dst: &mut [f32], dst_rs: usize) {
        let x = View {
            data: x,
            rows,
            cols: self.k,
            rs: x_rs,
            cs: 1,
        };
        let w = View {
            data: &self.w,
            rows: self.k,
            cols: self.n,
            rs: self.rs as usize,
            cs: self.cs as usize,
        };
        gemm(dst, dst_rs, x, w, false);
    }
}

#[derive(Clone, Copy)]
struct NormW<'a> {
    w: &'a [f32],
    b: Option<&'a [f32]>,
}

struct BlockW<'a> {
    norm1: NormW<'a>,
    norm2: NormW<'a>,
    /// GPT-2: one `[d, 3d]`; Llama: q, k, v.
    qkv: Vec<Mat<'a>>,
    out: Mat<'a>,
    /// GPT-2: fc, proj; Llama: gate, up, down.
    mlp: Vec<Mat<'a>>,
}

impl BlockW<'_> {
    fn row_major(&self) -> BlockW<'_> {
        BlockW {
            norm1: self.norm1,
            norm2: self.norm2,
            qkv: self.qkv.iter().map(Mat::row_major).collect(),
            out: self.out.row_major(),
            mlp: self.mlp.iter().map(Mat::row_major).collect(),
        }
    }
}

/// The model's tensors as f32 slices, borrowed for one evaluation.
struct Net<'a> {
    model: &'a Transformer,
    embed: &'a [f32],
    positions: Option<&'a [f32]>,
    blocks: Vec<BlockW<'a>>,
    final_norm: NormW<'a>,
    head: Mat<'a>,
}

/// The f32 elements of a contiguous CPU tensor, or `None`.
fn slice(t: &Tensor) -> Option<(impl std::ops::Deref<Target = Storage> + '_, usize, usize)> {
    let (s, l) = t.storage_and_layout();
    if !l.is_contiguous() || !matches!(&*s, Storage::Cpu(CpuStorage::F32(_))) {
        return None;
    }
    let start = l.start_offset();
    let n = l.shape().elem_count();
    Some((s, start, n))
}

/// Sum of NLL, correct argmax predictions and predictions of token ids `x` `[b, t]`
/// against next tokens `y`, or `None` when the model is not f32 on the CPU.
pub(super) fn score(m: &Transformer, x: &Tensor, y: &Tensor) -> Result<Option<(f64, f64, usize)>> {
    if m.embed.dtype() != DType::F32 || !m.embed.device().is_cpu() {
        return Ok(None);
    }
    // Hold every tensor's storage for the whole evaluation (the read guards), then
    // borrow slices from them.
    let tensors = m.tensors();
    let mut guards = Vec::with_capacity(tensors.len());
    for t in &tensors {
        match slice(t) {
            Some(g) => guards.push(g),
            None => return Ok(None),
        }
    }
    let slices: Vec<&[f32]> = guards
        .iter()
        .map(|(s, start, n)| match &**s {
            Storage::Cpu(CpuStorage::F32(v)) => &v[*start..*start + *n],
            _ => unreachable!("checked by slice()"),
        })
        .collect();
    let net = Net::new(m, &slices);
    let (b, t) = x.dims2()?;
    let ids = x.flatten_all()?.to_dtype(DType::U32)?.to_vec1::<u32>()?;
    let targets = y.flatten_all()?.to_dtype(DType::U32)?.to_vec1::<u32>()?;
    if targets.len() != ids.len() {
        candle_core::bail!("{} targets for {} tokens", targets.len(), ids.len());
    }
    net.score(b, t, &ids, &targets).map(Some)
}

impl<'a> Net<'a> {
    /// Slices in the order of [`Transformer::tensors`].
    fn new(model: &'a Transformer, s: &[&'a [f32]]) -> Self {
        let c = &model.config;
        let (d, hd) = (c.d_model, c.d_model / c.heads);
        let kv = c.kv_heads * hd;
        let mut next = s.iter().copied();
        let mut take = || next.next().expect("as many slices as tensors");
        // GPT-2's Conv1D weights are stored [in, out], Llama's linear ones [out, in].
        let stored = |w: &'a [f32], k: usize, n: usize, bias: Option<&'a [f32]>| {
            let (rs, cs) = match model.layout {
                Layout::Gpt2 => (n as isize, 1),
                Layout::Llama => (1, k as isize),
            };
            Mat {
                w: Cow::Borrowed(w),
                k,
                n,
                rs,
                cs,
                bias,
            }
        };
        let norm = |n: &Norm, take: &mut dyn FnMut() -> &'a [f32]| NormW {
            w: take(),
            b: n.bias.as_ref().map(|_| take()),
        };
        let embed = take();
        let positions = model.positions.as_ref().map(|_| take());
        let mut blocks = Vec::new();
        for blk in &model.blocks {
            let norm1 = norm(&blk.norm1, &mut take);
            let norm2 = norm(&blk.norm2, &mut take);
            let mut mat = |(_, b): &(Tensor, Option<Tensor>), k: usize, n: usize| {
                let w = take();
                let bias = b.as_ref().map(|_| take());
                stored(w, k, n, bias)
            };
            let qkv = match model.layout {
                Layout::Gpt2 => vec![mat(&blk.qkv[0], d, 3 * d)],
                Layout::Llama => vec![
                    mat(&blk.qkv[0], d, d),
                    mat(&blk.qkv[1], d, kv),
                    mat(&blk.qkv[2], d, kv),
                ],
            };
            let out = mat(&blk.out, d, d);
            let mlp = match model.layout {
                Layout::Gpt2 => vec![mat(&blk.mlp[0], d, c.d_ff), mat(&blk.mlp[1], c.d_ff, d)],
                Layout::Llama => vec![
                    mat(&blk.mlp[0], d, c.d_ff),
                    mat(&blk.mlp[1], d, c.d_ff),
                    mat(&blk.mlp[2], c.d_ff, d),
                ],
            };
            blocks.push(BlockW {
                norm1,
                norm2,
                qkv,
                out,
                mlp,
            });
        }
        let final_norm = norm(&model.final_norm, &mut take);
        let head_w = match &model.lm_head {
            Some(_) => take(),
            None => embed,
        };
        // The output projection is stored [vocab, d] in both layouts.
        let head = Mat {
            w: Cow::Borrowed(head_w),
            k: d,
            n: c.vocab,
            rs: 1,
            cs: d as isize,
            bias: None,
        };
        Net {
            model,
            embed,
            positions,
            blocks,
            final_norm,
            head,
        }
    }

    fn score(&self, b: usize, t: usize, ids: &[u32], targets: &[u32]) -> Result<(f64, f64, usize)> {
        let c = &self.model.config;
        let d = c.d_model;
        if self.model.layout == Layout::Gpt2 && t > c.context {
            candle_core::bail!(
                "{t} tokens is more than the model's context of {}",
                c.context
            );
        }
        if let Some(bad) = ids.iter().chain(targets).find(|&&i| i as usize >= c.vocab) {
            candle_core::bail!("token id {bad} is outside the vocabulary of {}", c.vocab);
        }
        let n = b * t;
        let mut h = vec![0f32; n * d];
        for (r, row) in h.chunks_mut(d).enumerate() {
            let id = ids[r] as usize;
            row.copy_from_slice(&self.embed[id * d..(id + 1) * d]);
            if let Some(pos) = self.positions {
                let p = r % t;
                for (v, q) in row.iter_mut().zip(&pos[p * d..(p + 1) * d]) {
                    *v += q;
                }
            }
        }
        let rope = (self.model.layout == Layout::Llama).then(|| self.rope(t));
        let hd = d / c.heads;
        let width = d + 2 * c.kv_heads * hd;
        let mut qkv = vec![0f32; n * width];
        let mut att = vec![0f32; n * d];
        for blk in &self.blocks {
            let blk = blk.row_major();
            self.project(&blk, &h, &mut qkv, width, t, rope.as_ref());
            self.attention(&qkv, width, &mut att, b, t);
            self.feed_forward(&blk, &mut h, &att);
        }
        Ok(self.loss(&h, targets))
    }

    /// `(cos, sin)` `[t, hd / 2]`, computed in f64 as the candle path does.
    fn rope(&self, t: usize) -> (Vec<f32>, Vec<f32>) {
        let c = &self.model.config;
        let hd = c.d_model / c.heads;
        let half = hd / 2;
        let (mut cos, mut sin) = (Vec::with_capacity(t * half), Vec::with_capacity(t * half));
        for p in 0..t {
            for i in 0..half {
                let a = p as f64 * c.rope_theta.powf(-((2 * i) as f64) / hd as f64);
                cos.push(a.cos() as f32);
                sin.push(a.sin() as f32);
            }
        }
        (cos, sin)
    }

    /// LayerNorm (with a bias) or RMSNorm of each row of `x` into `out`.
    fn norm(&self, nw: &NormW<'_>, x: &[f32], out: &mut [f32]) {
        let d = nw.w.len();
        let eps = self.model.config.norm_eps as f32;
        for (xr, or) in x.chunks(d).zip(out.chunks_mut(d)) {
            match nw.b {
                Some(bias) => {
                    let mean = vmath::sum(xr) / d as f32;
                    let var = vmath::sum_sq_dev(xr, mean) / d as f32;
                    let inv = 1.0 / (var + eps).sqrt();
                    for (((o, v), w), bb) in or.iter_mut().zip(xr).zip(nw.w).zip(bias) {
                        *o = (v - mean) * inv * w + bb;
                    }
                }
                None => {
                    let ms = vmath::sum_sq_dev(xr, 0.0) / d as f32;
                    let inv = 1.0 / (ms + eps).sqrt();
                    for ((o, v), w) in or.iter_mut().zip(xr).zip(nw.w) {
                        *o = v * inv * w;
                    }
                }
            }
        }
    }

    /// Phase 1: `qkv[r] = norm1(h[r]) · W_qkv + b`, RoPE on q and k.
    fn project(
        &self,
        blk: &BlockW<'_>,
        h: &[f32],
        qkv: &mut [f32],
        width: usize,
        t: usize,
        rope: Option<&(Vec<f32>, Vec<f32>)>,
    ) {
        let c = &self.model.config;
        let d = c.d_model;
        let hd = d / c.heads;
        let rows_per = rows(h.len() / d);
        h.par_chunks(rows_per * d)
            .zip(qkv.par_chunks_mut(rows_per * width))
            .enumerate()
            .for_each(|(task, (hb, qb))| {
                let rows = hb.len() / d;
                let mut xn = vec![0f32; rows * d];
                self.norm(&blk.norm1, hb, &mut xn);
                let mut col = 0;
                for m in &blk.qkv {
                    m.apply(rows, &xn, d, &mut qb[col..], width);
                    col += m.n;
                }
                for row in qb.chunks_mut(width) {
                    let mut col = 0;
                    for m in &blk.qkv {
                        if let Some(bias) = m.bias {
                            for (v, bb) in row[col..col + m.n].iter_mut().zip(bias) {
                                *v += bb;
                            }
                        }
                        col += m.n;
                    }
                }
                if let Some((cos, sin)) = rope {
                    let half = hd / 2;
                    for (i, row) in qb.chunks_mut(width).enumerate() {
                        let p = (task * rows_per + i) % t;
                        let (cs, sn) = (
                            &cos[p * half..(p + 1) * half],
                            &sin[p * half..(p + 1) * half],
                        );
                        // q's heads then k's (v, after them, is not rotated).
                        for head in row[..d + c.kv_heads * hd].chunks_mut(hd) {
                            let (x1, x2) = head.split_at_mut(half);
                            for j in 0..half {
                                let (a, b) = (x1[j], x2[j]);
                                x1[j] = a * cs[j] - b * sn[j];
                                x2[j] = b * cs[j] + a * sn[j];
                            }
                        }
                    }
                }
            });
    }

    /// Phase 2: causal softmax attention per sequence and head into `att` `[n, d]`.
    fn attention(&self, qkv: &[f32], width: usize, att: &mut [f32], b: usize, t: usize) {
        let c = &self.model.config;
        let (d, heads) = (c.d_model, c.heads);
        let hd = d / heads;
        let rep = heads / c.kv_heads;
        let scale = 1.0 / (hd as f32).sqrt();
        // Each task writes its head's columns of its sequence's rows: disjoint, but
        // interleaved in memory, so the tasks share a raw pointer.
        struct Out(*mut f32);
        // SAFETY: tasks write disjoint elements (see above).
        unsafe impl Sync for Out {}
        impl Out {
            /// `span` elements from `first`; the caller keeps them in bounds and its own.
            #[allow(clippy::mut_from_ref)] // tasks hold disjoint elements, not `&mut self`
            unsafe fn slice(&self, first: usize, span: usize) -> &mut [f32] {
                // SAFETY: as the caller promises.
                unsafe { std::slice::from_raw_parts_mut(self.0.add(first), span) }
            }
        }
        let out = Out(att.as_mut_ptr());
        let len = att.len();
        (0..b * heads).into_par_iter().for_each(|task| {
            let (seq, head) = (task / heads, task % heads);
            let kvh = head / rep;
            let base = seq * t * width;
            let q = &qkv[base + head * hd..];
            let k = &qkv[base + d + kvh * hd..];
            let v = &qkv[base + d + c.kv_heads * hd + kvh * hd..];
            let mut s = vec![0f32; BAND * t];
            for r0 in (0..t).step_by(BAND) {
                let rows = BAND.min(t - r0);
                let keys = r0 + rows;
                // s[i, j] = q[r0 + i] · k[j] / √hd, for keys j < r0 + rows.
                let kt = Mat {
                    w: Cow::Borrowed(k),
                    k: hd,
                    n: keys,
                    rs: 1,
                    cs: width as isize,
                    bias: None,
                };
                kt.apply(rows, &q[r0 * width..], width, &mut s, keys);
                for (i, row) in s.chunks_mut(keys).take(rows).enumerate() {
                    vmath::softmax_scaled(&mut row[..=r0 + i], scale);
                    row[r0 + i + 1..].fill(0.0);
                }
                let vm = Mat {
                    w: Cow::Borrowed(v),
                    k: keys,
                    n: hd,
                    rs: width as isize,
                    cs: 1,
                    bias: None,
                };
                let first = (seq * t + r0) * d + head * hd;
                let span = (rows - 1) * d + hd;
                assert!(first + span <= len);
                // SAFETY: in bounds (asserted); this task's elements only (see Out).
                let dst = unsafe { out.slice(first, span) };
                vm.apply(rows, &s, keys, dst, d);
            }
        });
    }

    /// Phase 3: `h += att · W_o + b_o`, then `h += mlp(norm2(h))`.
    fn feed_forward(&self, blk: &BlockW<'_>, h: &mut [f32], att: &[f32]) {
        let c = &self.model.config;
        let (d, ff) = (c.d_model, c.d_ff);
        let rows_per = rows(h.len() / d);
        h.par_chunks_mut(rows_per * d)
            .zip(att.par_chunks(rows_per * d))
            .for_each(|(hb, ab)| {
                let rows = hb.len() / d;
                let mut tmp = vec![0f32; rows * d];
                blk.out.apply(rows, ab, d, &mut tmp, d);
                add_rows(hb, &tmp, blk.out.bias, d);
                let mut xn = vec![0f32; rows * d];
                self.norm(&blk.norm2, hb, &mut xn);
                let mut f = vec![0f32; rows * ff];
                let down = match self.model.layout {
                    Layout::Gpt2 => {
                        blk.mlp[0].apply(rows, &xn, d, &mut f, ff);
                        let bias = blk.mlp[0].bias.expect("GPT-2's c_fc has a bias");
                        for row in f.chunks_mut(ff) {
                            vmath::gelu_bias(row, bias);
                        }
                        &blk.mlp[1]
                    }
                    Layout::Llama => {
                        let mut u = vec![0f32; rows * ff];
                        blk.mlp[0].apply(rows, &xn, d, &mut f, ff);
                        blk.mlp[1].apply(rows, &xn, d, &mut u, ff);
                        vmath::silu_mul(&mut f, &u);
                        &blk.mlp[2]
                    }
                };
                down.apply(rows, &f, ff, &mut tmp, d);
                add_rows(hb, &tmp, down.bias, d);
            });
    }

    /// The final norm, logits, and per token the NLL of its target and whether the
    /// argmax hit it, summed per block of tokens and then over blocks in order.
    fn loss(&self, h: &[f32], targets: &[u32]) -> (f64, f64, usize) {
        let c = &self.model.config;
        let (d, vocab) = (c.d_model, c.vocab);
        // As many rows as the other phases, up to 16 MB of logits a task, but never
        // fewer than 64: fewer would pack the whole output embedding for a handful of
        // rows (the logits of 64 rows are 12 MB at SmolLM2's 49,152 tokens).
        let rows_per = rows(h.len() / d).min(((1 << 22) / vocab).max(64));
        let head = self.head.row_major();
        let parts: Vec<(f64, f64)> = h
            .par_chunks(rows_per * d)
            .zip(targets.par_chunks(rows_per))
            .map(|(hb, tb)| {
                let rows = tb.len();
                let mut xn = vec![0f32; rows * d];
                self.norm(&self.final_norm, hb, &mut xn);
                let mut logits = vec![0f32; rows * vocab];
                head.apply(rows, &xn, d, &mut logits, vocab);
                let (mut nll, mut hits) = (0f64, 0f64);
                for (row, &target) in logits.chunks(vocab).zip(tb) {
                    let best = vmath::max(row);
                    // The first largest, as candle's argmax (none when a logit is NaN).
                    let arg = row.iter().position(|&v| v == best);
                    let sum = vmath::sum_exp(row, best);
                    nll -= f64::from(row[target as usize] - best - sum.ln());
                    hits += f64::from(u8::from(arg == Some(target as usize)));
                }
                (nll, hits)
            })
            .collect();
        let (nll, hits) = parts
            .iter()
            .fold((0.0, 0.0), |(a, b), (n, h)| (a + n, b + h));
        (nll, hits, targets.len())
    }
}

/// `h[r] += x[r] + bias`, rows of `d`.
fn add_rows(h: &mut [f32], x: &[f32], bias: Option<&[f32]>, d: usize) {
    for (hr, xr) in h.chunks_mut(d).zip(x.chunks(d)) {
        match bias {
            Some(b) => {
                for ((v, a), bb) in hr.iter_mut().zip(xr).zip(b) {
                    *v += a + bb;
                }
            }
            None => {
                for (v, a) in hr.iter_mut().zip(xr) {
                    *v += a;
                }
            }
        }
    }
}

#[cfg(test)]
impl Transformer {
    /// The loss by the candle ops, for comparing with [`score`].
    pub(crate) fn score_by_candle(&self, x: &Tensor, y: &Tensor) -> Result<(f64, f64, usize)> {
        use crate::models::Model;
        crate::models::nll_and_hits(&self.forward(x, None)?, y)
    }
}
