//! Loss-landscape evaluation speed on a 784-256-256-10 MLP over 10,000 MNIST samples:
//! the batched tile evaluator, the per-point perturb/evaluate/restore baseline (the
//! reference tool's loop), and a plain candle matmul of the first layer's size, all in
//! the same run so the ratios are meaningful.
//!
//!     cargo bench --bench landscape
//!
//! The same run then times the usual per-point loop written in numpy
//! (`benches/landscape/numpy_baseline.py`, with `python3` from `RIDGELINE_PYTHON` or the
//! PATH) and numpy's GEMM of the first layer's shape, for the ratios in
//! docs/performance.md.

use std::hint::black_box;

use candle_core::{DType, Device, Tensor, Var};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ridgeline_common::rng::Rng;
use ridgeline_common::spec::{Activation, DataFormat, SweepSpec};
use ridgeline_worker::data;
use ridgeline_worker::landscape::eval::{Layers, Loss, Plane, evaluate_point_by_point};

const DIMS: [usize; 4] = [784, 256, 256, 10];
/// Grid points per tile: the smallest useful tile, and the default (`landscape.tile`).
const TILES: [usize; 2] = [16, 64];

fn mnist() -> (Tensor, Tensor) {
    let root = env!("CARGO_MANIFEST_DIR");
    let spec = SweepSpec::from_toml(&format!(
        "name = \"b\"\n[data]\npath = \"{root}/examples/data/mnist10k-images-idx3-ubyte.gz\"\nlabels = \"{root}/examples/data/mnist10k-labels-idx1-ubyte.gz\"\nnormalize = \"max\"\nval_fraction = 0.0001\n[search]\n"
    ))
    .unwrap();
    let ds = data::load(spec.data(), DataFormat::Idx).unwrap();
    let s = &ds.train;
    (
        Tensor::from_slice(&s.x, (s.len(), s.dim), &Device::Cpu).unwrap(),
        Tensor::from_slice(&s.y, s.len(), &Device::Cpu).unwrap(),
    )
}

fn layers(r: &mut Rng) -> Layers {
    DIMS.windows(2)
        .map(|w| {
            let bound = (6.0 / w[0] as f64).sqrt();
            let v: Vec<f32> = (0..w[0] * w[1])
                .map(|_| ((2.0 * r.next_f64() - 1.0) * bound) as f32)
                .collect();
            (
                Tensor::from_vec(v, (w[1], w[0]), &Device::Cpu).unwrap(),
                Tensor::zeros(w[1], DType::F32, &Device::Cpu).unwrap(),
            )
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    // As every worker does at start.
    ridgeline_worker::memory::keep_freed_buffers();
    let (x, y) = mnist();
    let n = x.dim(0).unwrap();
    let mut r = Rng::new(1);
    let (base, d1, d2) = (layers(&mut r), layers(&mut r), layers(&mut r));
    let plane = Plane {
        base: &base,
        d1: &d1,
        d2: Some(&d2),
        activation: Activation::Relu,
    };
    let points: Vec<(f64, f64)> = (0..64).map(|i| (i as f64 / 64.0 - 0.5, 0.25)).collect();
    let vars: Vec<(Var, Var)> = base
        .iter()
        .map(|(w, b)| (Var::from_tensor(w).unwrap(), Var::from_tensor(b).unwrap()))
        .collect();

    let mut g = c.benchmark_group("landscape");
    g.sample_size(10);
    for tile in TILES {
        g.throughput(Throughput::Elements(tile as u64));
        g.bench_function(format!("batched_tile_{tile}_points"), |b| {
            b.iter(|| {
                black_box(
                    plane
                        .evaluate(&points[..tile], (&x, &y), Loss::CrossEntropy, 1024, None)
                        .unwrap(),
                )
            })
        });
        eprintln!(
            "FLOPs per batched tile of {tile}: first layer {:.2} G (3 products), later layers {:.2} G",
            (3 * 2 * n * 784 * 256) as f64 / 1e9,
            (tile * 2 * n * (256 * 256 + 256 * 10)) as f64 / 1e9
        );
    }
    g.throughput(Throughput::Elements(4));
    g.bench_function("per_point_baseline_4_points", |b| {
        b.iter(|| {
            black_box(evaluate_point_by_point(&vars, &plane, &points[..4], &x, &y, 128).unwrap())
        })
    });
    // The GEMM that dominates one forward pass, alone: [n, 784] x [784, 256].
    let w0t = base[0].0.t().unwrap().contiguous().unwrap();
    g.throughput(Throughput::Elements((2 * n * 784 * 256) as u64));
    g.bench_function("matmul_10000x784x256_flops", |b| {
        b.iter(|| black_box(x.matmul(&w0t).unwrap()))
    });
    g.finish();
    numpy_baseline();
}

/// Runs the numpy loop in the same process tree, right after the Rust benchmarks.
fn numpy_baseline() {
    let root = env!("CARGO_MANIFEST_DIR");
    let python = std::env::var("RIDGELINE_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = std::process::Command::new(&python)
        .arg(format!("{root}/benches/landscape/numpy_baseline.py"))
        .arg(format!(
            "{root}/examples/data/mnist10k-images-idx3-ubyte.gz"
        ))
        .arg("8")
        .output();
    match out {
        Ok(o) if o.status.success() => {
            eprintln!(
                "numpy baseline: {}",
                String::from_utf8_lossy(&o.stdout).trim()
            )
        }
        Ok(o) => eprintln!(
            "numpy baseline failed (is numpy installed for {python}?): {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => eprintln!("numpy baseline not run: {python}: {e}"),
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
