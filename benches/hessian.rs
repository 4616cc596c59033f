//! Cost of Hessian-vector products, f64, on the digits MLP (64-32-10, the 1,437 training
//! samples of examples/digits-grid.toml) and a small GPT-2 (2 × 64, 8 windows of 64
//! tokens): exact products (one forward and backward pass whose graph is kept, then one
//! backward pass per vector), the finite-difference fallback (seven steps per vector,
//! two gradients each), and one gradient, which is what the old fixed-step central
//! difference cost twice per vector. Same run, so the ratios are meaningful.
//!
//!     cargo bench --bench hessian

use std::hint::black_box;

use candle_core::{DType, Device, Tensor};
use criterion::{Criterion, criterion_group, criterion_main};
use ridgeline_common::rng::Rng;
use ridgeline_common::spec::SweepSpec;
use ridgeline_worker::data;
use ridgeline_worker::landscape::eval::Loss;
use ridgeline_worker::landscape::hessian::{Method, model_hvps};
use ridgeline_worker::models::{Model, ModelConfig, TransformerConfig, cross_entropy};

const VECTORS: usize = 4;

fn digits() -> (Tensor, Tensor) {
    let root = env!("CARGO_MANIFEST_DIR");
    let spec = SweepSpec::from_file(&std::path::Path::new(root).join("examples/digits-grid.toml"))
        .unwrap();
    let ds = data::load(spec.data(), spec.data_format()).unwrap();
    let s = &ds.train;
    (
        Tensor::from_slice(&s.x, (s.len(), s.dim), &Device::Cpu).unwrap(),
        Tensor::from_slice(&s.y, s.len(), &Device::Cpu).unwrap(),
    )
}

fn case(c: &mut Criterion, name: &str, model: &dyn Model, x: &Tensor, y: &Tensor) {
    let params = model.params();
    let order: Vec<usize> = (0..params.len())
        .filter(|&i| params[i].trainable())
        .collect();
    let n: usize = order.iter().map(|&i| params[i].var.elem_count()).sum();
    let mut r = Rng::new(3);
    let vs: Vec<Vec<f64>> = (0..VECTORS)
        .map(|_| (0..n).map(|_| r.normal()).collect())
        .collect();
    let xf = if x.dtype().is_float() {
        x.to_dtype(DType::F64).unwrap()
    } else {
        x.clone()
    };
    let mut g = c.benchmark_group(format!("hessian_{name}"));
    g.sample_size(10);
    g.bench_function("gradient", |b| {
        b.iter(|| {
            black_box(
                cross_entropy(&model.forward(&xf, None).unwrap(), y)
                    .unwrap()
                    .backward()
                    .unwrap(),
            )
        })
    });
    for (label, method) in [
        ("exact_4_vectors", Method::Exact),
        (
            "finite_difference_ladder_4_vectors",
            Method::FiniteDifference { epsilon: 1e-3 },
        ),
    ] {
        g.bench_function(label, |b| {
            b.iter(|| {
                black_box(
                    model_hvps(
                        model,
                        &order,
                        x,
                        y,
                        Loss::CrossEntropy,
                        &vs,
                        1.0,
                        method,
                        usize::MAX,
                    )
                    .unwrap(),
                )
            })
        });
    }
    g.finish();
}

fn bench(c: &mut Criterion) {
    ridgeline_worker::memory::keep_freed_buffers();
    let (x, y) = digits();
    let mlp: ModelConfig = serde_json::from_str(
        r#"{"arch": "mlp", "input_dim": 64, "classes": 10, "depth": 1, "width": 32, "activation": "relu", "dropout": 0.0}"#,
    )
    .unwrap();
    let m = mlp.init(0, DType::F64, &Device::Cpu).unwrap();
    case(c, "digits_mlp_2410", m.as_ref(), &x, &y);

    let gpt = ModelConfig::Gpt2(TransformerConfig {
        vocab: 256,
        context: 64,
        d_model: 64,
        layers: 2,
        heads: 4,
        kv_heads: 4,
        d_ff: 256,
        norm_eps: 1e-5,
        rope_theta: 10_000.0,
        tie_embeddings: true,
    });
    let m = gpt.init(0, DType::F64, &Device::Cpu).unwrap();
    let mut r = Rng::new(5);
    let ids: Vec<u32> = (0..8 * 65).map(|_| r.below(256) as u32).collect();
    let rows: Vec<&[u32]> = ids.chunks(65).collect();
    let xs: Vec<u32> = rows.iter().flat_map(|w| w[..64].to_vec()).collect();
    let ys: Vec<u32> = rows.iter().flat_map(|w| w[1..].to_vec()).collect();
    let x = Tensor::from_vec(xs, (8, 64), &Device::Cpu).unwrap();
    let y = Tensor::from_vec(ys, (8, 64), &Device::Cpu).unwrap();
    case(c, "gpt2_2x64", m.as_ref(), &x, &y);
}

criterion_group!(benches, bench);
criterion_main!(benches);
