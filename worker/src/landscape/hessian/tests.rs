//! Exact Hessian-vector products against independent references: hyper-dual numbers
//! (MLP), closed forms (linear regression), small-step differences of first-order
//! gradients and of an independent f64 loss (CNNs, transformers).
use super::*;
use crate::models::{Cnn, CnnConfig, Layout, Mlp, MlpConfig, Transformer, TransformerConfig};
use crate::models::{fresh, reference};
use candle_core::Device;
use ridgeline_common::rng::Rng;
use ridgeline_common::spec::Activation;

/// Hyper-dual numbers `a + b ε₁ + c ε₂ + d ε₁ε₂` (ε₁² = ε₂² = 0): seeding θ_i with
/// ε₁ and θ_j with ε₂, the ε₁ε₂ part of the loss is ∂²L/∂θ_i∂θ_j exactly, with no
/// step and no autograd: the test's independent Hessian.
#[derive(Clone, Copy, Debug)]
struct Hd(f64, f64, f64, f64);

impl Hd {
    fn c(a: f64) -> Self {
        Hd(a, 0.0, 0.0, 0.0)
    }
    fn add(self, o: Self) -> Self {
        Hd(self.0 + o.0, self.1 + o.1, self.2 + o.2, self.3 + o.3)
    }
    fn mul(self, o: Self) -> Self {
        Hd(
            self.0 * o.0,
            self.0 * o.1 + self.1 * o.0,
            self.0 * o.2 + self.2 * o.0,
            self.0 * o.3 + self.1 * o.2 + self.2 * o.1 + self.3 * o.0,
        )
    }
    /// `f(x)` from `f(a)`, `f'(a)`, `f''(a)`.
    fn chain(self, f: f64, f1: f64, f2: f64) -> Self {
        Hd(
            f,
            f1 * self.1,
            f1 * self.2,
            f1 * self.3 + f2 * self.1 * self.2,
        )
    }
    fn exp(self) -> Self {
        let e = self.0.exp();
        self.chain(e, e, e)
    }
    fn ln(self) -> Self {
        self.chain(self.0.ln(), 1.0 / self.0, -1.0 / (self.0 * self.0))
    }
    fn tanh(self) -> Self {
        let t = self.0.tanh();
        self.chain(t, 1.0 - t * t, -2.0 * t * (1.0 - t * t))
    }
    fn relu(self) -> Self {
        if self.0 > 0.0 { self } else { Hd::c(0.0) }
    }
}

/// Mean cross-entropy of an MLP `dims` with weights `[out, in]` then biases per
/// layer (the model's flat order), written out by hand over hyper-duals.
fn mlp_loss(dims: &[usize], act: Activation, th: &[Hd], x: &[f64], y: &[u32]) -> Hd {
    let n = y.len();
    let mut total = Hd::c(0.0);
    for s in 0..n {
        let mut h: Vec<Hd> = x[s * dims[0]..(s + 1) * dims[0]]
            .iter()
            .map(|v| Hd::c(*v))
            .collect();
        let mut at = 0;
        for (l, w) in dims.windows(2).enumerate() {
            let (fi, fo) = (w[0], w[1]);
            let (wt, b) = (&th[at..at + fi * fo], &th[at + fi * fo..at + fi * fo + fo]);
            at += fi * fo + fo;
            h = (0..fo)
                .map(|o| {
                    let mut z = b[o];
                    for i in 0..fi {
                        z = z.add(wt[o * fi + i].mul(h[i]));
                    }
                    if l + 2 < dims.len() {
                        match act {
                            Activation::Tanh => z.tanh(),
                            Activation::Relu => z.relu(),
                            _ => unreachable!("the test uses tanh and relu"),
                        }
                    } else {
                        z
                    }
                })
                .collect();
        }
        // log Σ exp(z) − z_y, shifted by the largest logit's value.
        let m = h.iter().map(|z| z.0).fold(f64::MIN, f64::max);
        let mut se = Hd::c(0.0);
        for z in &h {
            se = se.add(z.add(Hd::c(-m)).exp());
        }
        let lse = se.ln().add(Hd::c(m));
        total = total.add(lse.add(h[y[s] as usize].mul(Hd::c(-1.0))));
    }
    total.mul(Hd::c(1.0 / n as f64))
}

/// Every parameter of `m` set to N(0, scale²), so that biases are not zero.
fn randomise(m: &dyn crate::models::Model, seed: u64, scale: f64) {
    let mut r = Rng::new(seed);
    for p in m.params() {
        let v: Vec<f64> = (0..p.var.elem_count())
            .map(|_| r.normal() * scale)
            .collect();
        p.var
            .set(&Tensor::from_vec(v, p.var.dims(), &Device::Cpu).unwrap())
            .unwrap();
    }
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// ‖a − b‖ / ‖b‖.
fn rel(a: &[f64], b: &[f64]) -> f64 {
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    norm(&d) / norm(b)
}

fn vectors(n: usize, k: usize, seed: u64) -> Vec<Vec<f64>> {
    let mut r = Rng::new(seed);
    (0..k)
        .map(|_| (0..n).map(|_| r.normal()).collect())
        .collect()
}

#[test]
fn second_order_graphs_are_kept_in_tests() {
    // .cargo/config.toml sets CANDLE_GRAD_DO_NOT_DETACH for the test harness.
    assert!(second_order_available().unwrap());
}

/// The exact products of a small MLP equal the full Hessian built from hyper-dual
/// numbers, for a smooth (tanh) and a piecewise-linear (ReLU) network, to 1e-10;
/// the finite-difference fallback agrees on both to 1e-6 and reports its steps.
// Dense matrices read most clearly with explicit indices.
#[allow(clippy::needless_range_loop)]
#[test]
fn exact_products_of_an_mlp_match_the_full_hyper_dual_hessian() {
    for act in [Activation::Tanh, Activation::Relu] {
        let c = MlpConfig {
            input_dim: 3,
            classes: 3,
            depth: 2,
            width: 4,
            activation: act,
            dropout: 0.0,
        };
        let dims = c.dims();
        let m = Mlp::build(c, &mut fresh(1, DType::F64, &Device::Cpu)).unwrap();
        randomise(&m, 2, 0.8);
        let n = 7;
        let mut r = Rng::new(3);
        let xs: Vec<f64> = (0..n * 3).map(|_| r.normal()).collect();
        let ys: Vec<u32> = (0..n).map(|_| r.below(3) as u32).collect();
        let x = Tensor::from_vec(xs.clone(), (n, 3), &Device::Cpu).unwrap();
        let y = Tensor::from_vec(ys.clone(), n, &Device::Cpu).unwrap();
        let order: Vec<usize> = (0..m.params().len()).collect();
        let theta = flatten(&m.params().iter().map(|p| &p.var).collect::<Vec<_>>()).unwrap();
        let p = theta.len();
        let mut hm = vec![vec![0.0; p]; p];
        for i in 0..p {
            for j in i..p {
                let th: Vec<Hd> = (0..p)
                    .map(|k| {
                        Hd(
                            theta[k],
                            f64::from(u8::from(k == i)),
                            f64::from(u8::from(k == j)),
                            0.0,
                        )
                    })
                    .collect();
                let h = mlp_loss(&dims, act, &th, &xs, &ys).3;
                hm[i][j] = h;
                hm[j][i] = h;
            }
        }
        let vs = vectors(p, 4, 5);
        // Seven samples in chunks of three: the same Hessian as one pass.
        let products = |method| {
            model_hvps(&m, &order, &x, &y, Loss::CrossEntropy, &vs, 0.5, method, 3).unwrap()
        };
        let (exact, info) = products(Method::Exact);
        assert_eq!(info.method, "exact");
        let (fd, fd_info) = products(Method::FiniteDifference { epsilon: 1e-3 });
        // One step per vector and chunk.
        assert_eq!(fd_info.steps.len(), 3 * vs.len());
        for (k, v) in vs.iter().enumerate() {
            let want: Vec<f64> = hm
                .iter()
                .map(|row| 0.5 * row.iter().zip(v).map(|(a, b)| a * b).sum::<f64>())
                .collect();
            let e = rel(&exact[k], &want);
            assert!(e < 1e-10, "{act:?} vector {k}: exact product off by {e:e}");
            let e = rel(&fd[k], &want);
            assert!(
                e < 1e-6,
                "{act:?} vector {k}: finite differences off by {e:e}"
            );
            assert!(
                fd_info.estimated_relative_errors.iter().all(|e| *e < 1e-5),
                "{fd_info:?}"
            );
        }
        // The finite-difference fallback leaves the model at θ.
        assert_eq!(
            flatten(&m.params().iter().map(|p| &p.var).collect::<Vec<_>>()).unwrap(),
            theta
        );
    }
}

/// Linear regression with MSE has the Hessian (2/n) [XᵀX, Xᵀ1; 1ᵀX, n]: the products
/// (of an MLP without hidden layers) match it column by column.
#[test]
fn products_of_linear_regression_match_the_closed_form() {
    let mut r = Rng::new(8);
    let (n, d) = (50, 4);
    let xs: Vec<f64> = (0..n * d).map(|_| r.normal()).collect();
    let ys: Vec<f64> = (0..n).map(|_| r.normal()).collect();
    let x = Tensor::from_vec(xs.clone(), (n, d), &Device::Cpu).unwrap();
    let y = Tensor::from_vec(ys, (n, 1), &Device::Cpu).unwrap();
    let c = MlpConfig {
        input_dim: d,
        classes: 1,
        depth: 0,
        width: 1,
        activation: Activation::Relu,
        dropout: 0.0,
    };
    let m = Mlp::build(c, &mut fresh(1, DType::F64, &Device::Cpu)).unwrap();
    let mut hm = vec![vec![0.0; d + 1]; d + 1];
    for s in 0..n {
        let row: Vec<f64> = xs[s * d..(s + 1) * d]
            .iter()
            .copied()
            .chain(std::iter::once(1.0))
            .collect();
        for i in 0..=d {
            for j in 0..=d {
                hm[i][j] += 2.0 / n as f64 * row[i] * row[j];
            }
        }
    }
    let vs = vectors(d + 1, 3, 9);
    for method in [Method::Exact, Method::FiniteDifference { epsilon: 1e-3 }] {
        let (got, _) =
            model_hvps(&m, &[0, 1], &x, &y, Loss::Mse, &vs, 0.5, method, usize::MAX).unwrap();
        for (v, hv) in vs.iter().zip(&got) {
            let want: Vec<f64> = (0..=d)
                .map(|i| 0.5 * (0..=d).map(|j| hm[i][j] * v[j]).sum::<f64>())
                .collect();
            assert!(rel(hv, &want) < 1e-9, "{method:?}: {hv:?} vs {want:?}");
        }
    }
}

/// Central differences of candle's first-order gradients at a small fixed step, in
/// f64: the reference for models too large for hyper-duals.
fn reference_products(
    m: &dyn crate::models::Model,
    x: &Tensor,
    y: &Tensor,
    vs: &[Vec<f64>],
    h: f64,
) -> Vec<Vec<f64>> {
    let vars: Vec<&Var> = m
        .params()
        .iter()
        .filter(|p| p.trainable())
        .map(|p| &p.var)
        .collect();
    let theta = flatten(&vars).unwrap();
    let grad = |t: &[f64]| {
        set(&vars, t).unwrap();
        let g = loss_of(m, x, y, Loss::CrossEntropy)
            .unwrap()
            .backward()
            .unwrap();
        gather(&vars, |v| g.get(v).cloned()).unwrap()
    };
    let out = vs
        .iter()
        .map(|v| {
            let at = |s: f64| {
                grad(
                    &theta
                        .iter()
                        .zip(v)
                        .map(|(t, d)| t + s * h * d)
                        .collect::<Vec<_>>(),
                )
            };
            let (p, q) = (at(1.0), at(-1.0));
            p.iter().zip(&q).map(|(a, b)| (a - b) / (2.0 * h)).collect()
        })
        .collect();
    set(&vars, &theta).unwrap();
    out
}

/// Exact products and the small-step reference for the same vectors.
fn exact_and_reference(
    m: &dyn crate::models::Model,
    order: &[usize],
    x: &Tensor,
    y: &Tensor,
    vs: &[Vec<f64>],
) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let (exact, _) = model_hvps(
        m,
        order,
        x,
        y,
        Loss::CrossEntropy,
        vs,
        1.0,
        Method::Exact,
        usize::MAX,
    )
    .unwrap();
    (exact, reference_products(m, x, y, vs, 1e-6))
}

/// A CNN with batch norm (evaluation mode) and a ResNet: exact products against
/// central differences at a step small enough that no ReLU or max-pool switches.
#[test]
fn exact_products_of_cnns_match_small_step_differences() {
    for (residual, bn) in [(false, false), (true, false), (false, true), (true, true)] {
        let c = CnnConfig {
            in_channels: 2,
            height: 6,
            width: 6,
            classes: 3,
            channels: vec![3, 4],
            blocks: 1,
            batch_norm: bn,
        };
        let m = Cnn::build(c, residual, &mut fresh(2, DType::F64, &Device::Cpu)).unwrap();
        randomise(&m, 4, 0.5);
        for p in m
            .params()
            .iter()
            .filter(|p| p.name.ends_with("running_var"))
        {
            p.var
                .set(&p.var.abs().unwrap().affine(1.0, 0.5).unwrap())
                .unwrap();
        }
        let n = 5;
        let mut r = Rng::new(6);
        let xs: Vec<f64> = (0..n * 72).map(|_| r.normal()).collect();
        let x = Tensor::from_vec(xs, (n, 72), &Device::Cpu).unwrap();
        let y = Tensor::from_vec(
            (0..n).map(|_| r.below(3) as u32).collect::<Vec<_>>(),
            n,
            &Device::Cpu,
        )
        .unwrap();
        let order: Vec<usize> = (0..m.params().len())
            .filter(|&i| m.params()[i].trainable())
            .collect();
        let size: usize = order.iter().map(|&i| m.params()[i].var.elem_count()).sum();
        let vs = vectors(size, 3, 7);
        let (exact, reference) = exact_and_reference(&m, &order, &x, &y, &vs);
        for (k, (a, b)) in exact.iter().zip(&reference).enumerate() {
            let e = rel(a, b);
            assert!(e < 1e-6, "residual={residual}, bn={bn}, vector {k}: {e:e}");
        }
    }
}

/// GPT-2 and Llama layouts: exact products against small-step differences of
/// gradients (everything is smooth), and `vᵀHv` against the second difference of
/// the loss of the independent f64 forward pass in `models::reference`.
#[test]
fn exact_products_of_transformers_match_references() {
    for (layout, kv_heads) in [(Layout::Gpt2, 2), (Layout::Llama, 1)] {
        let c = TransformerConfig {
            vocab: 11,
            context: 6,
            d_model: 8,
            layers: 1,
            heads: 2,
            kv_heads,
            d_ff: 12,
            norm_eps: 1e-5,
            rope_theta: 10_000.0,
            tie_embeddings: layout == Layout::Gpt2,
        };
        let m =
            Transformer::build(c.clone(), layout, &mut fresh(4, DType::F64, &Device::Cpu)).unwrap();
        randomise(&m, 5, 0.4);
        let mut r = Rng::new(6);
        let (b, t) = (3, 6);
        let ids: Vec<u32> = (0..b * (t + 1)).map(|_| r.below(11) as u32).collect();
        let rows: Vec<&[u32]> = ids.chunks(t + 1).collect();
        let xs: Vec<u32> = rows.iter().flat_map(|w| w[..t].to_vec()).collect();
        let ys: Vec<u32> = rows.iter().flat_map(|w| w[1..].to_vec()).collect();
        let x = Tensor::from_vec(xs.clone(), (b, t), &Device::Cpu).unwrap();
        let y = Tensor::from_vec(ys.clone(), (b, t), &Device::Cpu).unwrap();
        let params = m.params();
        let order: Vec<usize> = (0..params.len()).collect();
        let size: usize = params.iter().map(|p| p.var.elem_count()).sum();
        let theta = flatten(&params.iter().map(|p| &p.var).collect::<Vec<_>>()).unwrap();
        let vs = vectors(size, 3, 8);
        let (exact, reference) = exact_and_reference(&m, &order, &x, &y, &vs);
        let loss_at = |th: &[f64]| -> f64 {
            let mut w = reference::Weights::new();
            let mut at = 0;
            for p in params {
                let k = p.var.elem_count();
                w.insert(
                    p.name.clone(),
                    (p.var.dims().to_vec(), th[at..at + k].to_vec()),
                );
                at += k;
            }
            let mut total = 0.0;
            for s in 0..b {
                let z =
                    reference::transformer(&w, &c, layout == Layout::Gpt2, &xs[s * t..(s + 1) * t]);
                for (k, row) in z.iter().enumerate() {
                    let mx = row.iter().cloned().fold(f64::MIN, f64::max);
                    let lse = mx + row.iter().map(|v| (v - mx).exp()).sum::<f64>().ln();
                    total += lse - row[ys[s * t + k] as usize];
                }
            }
            total / (b * t) as f64
        };
        for (k, v) in vs.iter().enumerate() {
            let e = rel(&exact[k], &reference[k]);
            assert!(e < 1e-6, "{layout:?} vector {k}: {e:e}");
            let vhv: f64 = v.iter().zip(&exact[k]).map(|(a, b)| a * b).sum();
            let h = 1e-4;
            let at = |s: f64| {
                loss_at(
                    &theta
                        .iter()
                        .zip(v)
                        .map(|(t, d)| t + s * h * d)
                        .collect::<Vec<_>>(),
                )
            };
            let fd = (at(1.0) - 2.0 * at(0.0) + at(-1.0)) / (h * h);
            // A second difference of f64 losses at h = 1e-4 carries ~1e-8/h² of
            // rounding: 4 digits.
            assert!(
                (vhv - fd).abs() <= 1e-4 * fd.abs().max(1.0),
                "{layout:?}: vᵀHv {vhv} vs {fd}"
            );
        }
    }
}
