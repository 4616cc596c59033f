//! Landscape scans of transformers, all in one run so the ratios are meaningful:
//!
//! - a GPT-2-layout model (6 layers, d_model 256, byte vocabulary) on 2,048 tokens of
//!   Moby-Dick: one grid point of the scan (in-place θ* + α·d₁ + β·d₂, then the loss),
//!   against the usual per-point loop over the same candle model (build the perturbed
//!   tensors, load them into a model, evaluate, restore θ*), and a plain candle matmul of
//!   the MLP's shape `[2048, 256] x [256, 1024]` for the achieved fraction of the rate;
//! - SmolLM2-135M (when `examples/smollm2/fetch.sh` has fetched it): seconds per point
//!   for 2,048 tokens.
//!
//!     cargo bench --bench models

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ridgeline_common::spec::SweepSpec;
use ridgeline_worker::landscape::{load, perturb};
use ridgeline_worker::models::{ModelConfig, TransformerConfig};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// A scan spec over 2,048 validation tokens of Moby-Dick in windows of `context`.
fn spec(checkpoint: &str, tokenizer: &str, context: usize) -> SweepSpec {
    SweepSpec::from_toml(&format!(
        "name = \"b\"\nkind = \"landscape\"\n[data]\npath = \"{ROOT}/examples/data/moby-dick.txt.gz\"\ntokenizer = \"{tokenizer}\"\ncontext = {context}\nval_fraction = 0.5\n[landscape]\ncheckpoint = \"{checkpoint}\"\nsplit = \"val\"\ntokens = 2048\ny = {{ min = -1.0, max = 1.0, points = 3 }}\n"
    ))
    .unwrap()
}

/// Serves a sweep's files from memory, as the coordinator would.
fn files(f: HashMap<String, Vec<u8>>) -> impl Fn(&str) -> Result<Arc<Vec<u8>>, String> {
    move |n| {
        f.get(n)
            .map(|b| Arc::new(b.clone()))
            .ok_or_else(|| format!("no {n}"))
    }
}

fn gpt2(c: &mut Criterion) {
    // As every worker does at start.
    ridgeline_worker::memory::keep_freed_buffers();
    let config = ModelConfig::Gpt2(TransformerConfig {
        vocab: 256,
        context: 256,
        d_model: 256,
        layers: 6,
        heads: 8,
        kv_heads: 8,
        d_ff: 1024,
        norm_eps: 1e-5,
        rope_theta: 10_000.0,
        tie_embeddings: true,
    });
    let model = config.init(1, DType::F32, &Device::Cpu).unwrap();
    let named = model.named_tensors();
    let weights = safetensors::serialize(named.iter().map(|(k, t)| (k.as_str(), t)), None).unwrap();
    let fetch = files(HashMap::from([
        ("model.json".into(), serde_json::to_vec(&config).unwrap()),
        ("model.safetensors".into(), weights),
    ]));
    let s = spec("unused", "bytes", 256);
    let l = load::load(&s, &fetch, &Device::Cpu, 8 << 30).unwrap();
    let params = model.parameter_count() as f64;
    // FLOPs of one point: every weight matrix once per token (the tied output projection
    // included), plus causal attention's two [t, t] products per head.
    let (tokens, t, d, layers) = (2048.0, 256.0, 256.0, 6.0);
    let matrices = params - 256.0 * 256.0 - 256.0 * 256.0; // without wte and wpe
    let flops = 2.0 * tokens * (matrices + 256.0 * 256.0) + layers * 2.0 * 2.0 * tokens * t * d;
    eprintln!(
        "GPT-2 bench model: {params} parameters, {:.2} GFLOP per point",
        flops / 1e9
    );

    let mut g = c.benchmark_group("transformer");
    g.sample_size(10);
    g.throughput(Throughput::Elements(1));
    g.bench_function("gpt2_6x256_scan_point_2048_tokens", |b| {
        b.iter(|| black_box(perturb::evaluate_points(&l, &[(0.3, -0.2)], 8).unwrap()))
    });
    // The usual loop: new tensors θ* + α d1 + β d2, a model built from them, the loss.
    g.bench_function("gpt2_6x256_per_point_loop_2048_tokens", |b| {
        b.iter(|| {
            let mut t = HashMap::new();
            for (i, p) in l.model.params().iter().enumerate() {
                let v = ((&l.base[i] + (&l.d1[i] * 0.3).unwrap()).unwrap()
                    + (&l.d2.as_ref().unwrap()[i] * -0.2).unwrap())
                .unwrap();
                t.insert(p.name.clone(), v);
            }
            let m = config.load(&t, DType::F32, &Device::Cpu).unwrap();
            let (x, y) = l.data.xy();
            black_box(
                ridgeline_worker::models::nll_and_hits(&m.forward(x, None).unwrap(), y).unwrap(),
            )
        })
    });
    let a = Tensor::randn(0f32, 1.0, (2048, 256), &Device::Cpu).unwrap();
    let w = Tensor::randn(0f32, 1.0, (256, 1024), &Device::Cpu).unwrap();
    g.throughput(Throughput::Elements((2 * 2048 * 256 * 1024) as u64));
    g.bench_function("matmul_2048x256x1024_flops", |b| {
        b.iter(|| black_box(a.matmul(&w).unwrap()))
    });
    g.finish();
}

fn smollm2(c: &mut Criterion) {
    let path = format!("{ROOT}/examples/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    let Ok(bytes) = std::fs::read(&path) else {
        eprintln!("{path} not found: run examples/smollm2/fetch.sh to time SmolLM2-135M");
        return;
    };
    let s = spec("unused", "model", 256);
    let fetch = files(HashMap::from([
        (
            "checkpoint.json".into(),
            br#"{"format": "gguf", "files": ["model.gguf"]}"#.to_vec(),
        ),
        ("model.gguf".into(), bytes),
    ]));
    let t = std::time::Instant::now();
    let l = load::load(&s, &fetch, &Device::Cpu, 16 << 30).unwrap();
    eprintln!(
        "SmolLM2-135M: loaded, dequantised, 2 directions made in {:.1} s ({} parameters)",
        t.elapsed().as_secs_f64(),
        l.model.parameter_count()
    );
    let mut g = c.benchmark_group("smollm2");
    g.sample_size(10);
    g.throughput(Throughput::Elements(1));
    g.bench_function("smollm2_135m_scan_point_2048_tokens", |b| {
        b.iter(|| black_box(perturb::evaluate_points(&l, &[(0.1, 0.1)], 8).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, gpt2, smollm2);
criterion_main!(benches);
