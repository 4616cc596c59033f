//! Models beyond the MLP across real processes: a transformer's 2-D scan split over two
//! worker processes is bit-for-bit the one-worker scan, its centre is the model's loss,
//! and every worker made the same directions as the coordinator; a CNN and a small
//! transformer train to the accuracy and loss their tasks allow.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use candle_core::{DType, Device, Tensor};
use common::*;
use ridgeline_worker::models::{ModelConfig, TransformerConfig, nll_and_hits};

fn moby() -> String {
    root()
        .join("examples/data/moby-dick.txt.gz")
        .display()
        .to_string()
}

/// Every number under `key`, anywhere in a JSON value.
fn numbers(v: &serde_json::Value, key: &str, out: &mut Vec<f64>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                if k == key {
                    if let Some(f) = x.as_f64() {
                        out.push(f);
                    }
                }
                numbers(x, key, out);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| numbers(x, key, out)),
        _ => {}
    }
}

fn fnv48(tensors: &[&Tensor]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for t in tensors {
        for v in t.flatten_all().unwrap().to_vec1::<f32>().unwrap() {
            for b in v.to_le_bytes() {
                h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
        }
    }
    h & ((1 << 48) - 1)
}

#[test]
fn a_transformer_scan_is_the_same_on_two_workers_as_on_one() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("llama");
    std::fs::create_dir_all(&ckpt).unwrap();
    let config = ModelConfig::Llama(TransformerConfig {
        vocab: 256,
        context: 32,
        d_model: 32,
        layers: 2,
        heads: 4,
        kv_heads: 2,
        d_ff: 64,
        norm_eps: 1e-5,
        rope_theta: 10_000.0,
        tie_embeddings: false,
    });
    let model = config.init(5, DType::F32, &Device::Cpu).unwrap();
    std::fs::write(
        ckpt.join("model.json"),
        serde_json::to_vec(&config).unwrap(),
    )
    .unwrap();
    let named = model.named_tensors();
    safetensors::serialize_to_file(
        named.iter().map(|(k, t)| (k.as_str(), t)),
        None,
        &ckpt.join("model.safetensors"),
    )
    .unwrap();
    let spec = dir.path().join("scan.toml");
    std::fs::write(
        &spec,
        format!(
            r#"name = "llama-scan"
kind = "landscape"
[data]
path = "{}"
context = 32
limit = 20000
val_fraction = 0.1
[landscape]
checkpoint = "{}"
split = "val"
tokens = 320
tile = 4
x = {{ min = -1.0, max = 1.0, points = 5 }}
y = {{ min = -0.5, max = 0.5, points = 3 }}
directions = {{ seed = 3 }}
"#,
            moby(),
            ckpt.display()
        ),
    )
    .unwrap();
    let (_coord, url) = coordinator(dir.path(), &[]);
    let mut workers: Vec<Proc> = (0..2)
        .map(|i| worker(dir.path(), &url, &format!("w{i}"), &[]))
        .collect();
    let two = submit_wait(&spec, &url, Duration::from_secs(300));
    let two_dir = dir.path().join("sweeps").join(&two);
    let surface = std::fs::read(two_dir.join("surface.npy")).unwrap();

    // Every tile reports the digest of the directions its worker made; all equal the
    // coordinator's directions.safetensors, tensor by tensor in the model's order.
    let dirs = candle_core::safetensors::load(two_dir.join("directions.safetensors"), &Device::Cpu)
        .unwrap();
    let mut ordered: Vec<&Tensor> = Vec::new();
    for axis in ["x", "y"] {
        for (name, _) in &named {
            ordered.push(&dirs[&format!("{axis}.{name}")]);
        }
    }
    let want = fnv48(&ordered) as f64;
    let results: serde_json::Value = serde_json::from_str(&run_ok(
        &["results", &two, "--coordinator", &url, "--format", "json"],
        Duration::from_secs(30),
    ))
    .unwrap();
    let mut digests = Vec::new();
    numbers(&results, "directions_fnv48", &mut digests);
    assert_eq!(digests.len(), 4, "one digest per tile: {results}");
    assert!(digests.iter().all(|d| *d == want), "{digests:?} vs {want}");

    // The centre (x index 2, y index 1) is the model's loss on the same 10 windows of
    // the validation tail, computed here.
    let (shape, loss) = read_npy_f64(&two_dir.join("surface.npy"));
    assert_eq!(shape, vec![3, 5]);
    let spec_v = ridgeline_common::spec::SweepSpec::from_file(&spec).unwrap();
    let data = ridgeline_worker::data::load_any(spec_v.data(), spec_v.data_format(), None).unwrap();
    let ridgeline_worker::data::Data::Text(text) = data else {
        panic!("text data")
    };
    let starts: Vec<usize> = text.windows(true, 32).into_iter().take(10).collect();
    let (x, y) = text.batch(&starts, 32, &Device::Cpu).unwrap();
    let (nll, _, n) = nll_and_hits(&model.forward(&x, None).unwrap(), &y).unwrap();
    let centre = nll / n as f64;
    assert!(
        (loss[5 + 2] - centre).abs() <= 1e-6 * centre,
        "{} vs {centre}",
        loss[7]
    );
    // Away from the centre the loss differs (the directions are not zero).
    assert!((loss[0] - centre).abs() > 1e-3 * centre);

    for w in workers.drain(1..) {
        drop(w);
    }
    let one = submit_wait(&spec, &url, Duration::from_secs(300));
    let one_dir = dir.path().join("sweeps").join(&one);
    assert_eq!(
        surface,
        std::fs::read(one_dir.join("surface.npy")).unwrap(),
        "the two-worker surface differs from the one-worker one"
    );

    // The same checkpoint read by the worker from its path (a shared file system)
    // instead of uploaded: nothing of it reaches the coordinator, the same bits come out.
    let shared = dir.path().join("shared.toml");
    let text = std::fs::read_to_string(&spec).unwrap().replace(
        "split = \"val\"",
        "split = \"val\"\nshared_checkpoint = true",
    );
    std::fs::write(&shared, text).unwrap();
    let id = submit_wait(&shared, &url, Duration::from_secs(300));
    let shared_dir = dir.path().join("sweeps").join(&id);
    assert!(!shared_dir.join("model.safetensors").exists());
    assert_eq!(
        surface,
        std::fs::read(shared_dir.join("surface.npy")).unwrap(),
        "the shared-checkpoint surface differs"
    );
}

/// A float64 `.npy` file: shape and values.
fn read_npy_f64(path: &Path) -> (Vec<usize>, Vec<f64>) {
    let b = std::fs::read(path).unwrap();
    let hl = u16::from_le_bytes([b[8], b[9]]) as usize;
    let header = std::str::from_utf8(&b[10..10 + hl]).unwrap();
    let shape: Vec<usize> = header
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap()
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let data = b[10 + hl..]
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (shape, data)
}

/// The CNN example's model (conv-BN-ReLU-pool blocks) trained on MNIST in a short
/// search, and a small GPT-2 on Moby-Dick, beat the bars their data set: 95 % validation
/// accuracy, and the unigram entropy of the corpus (the best loss without context).
#[test]
fn a_cnn_and_a_transformer_train_past_their_bars() {
    let dir = tempfile::tempdir().unwrap();
    let cnn = dir.path().join("cnn.toml");
    let data = root().join("examples/data");
    std::fs::write(
        &cnn,
        format!(
            r#"name = "cnn"
[data]
path = "{0}/mnist10k-images-idx3-ubyte.gz"
labels = "{0}/mnist10k-labels-idx1-ubyte.gz"
normalize = "max"
[model]
arch = "cnn"
channels = [8, 16]
[train]
epochs = 2
batch_size = 64
lr = 3e-3
[search]
algorithm = "random"
num_samples = 2
metric = "val_accuracy"
[search.space]
lr = {{ type = "loguniform", low = 2e-3, high = 4e-3 }}
"#,
            data.display()
        ),
    )
    .unwrap();
    let r = run_embedded(
        &cnn,
        2,
        &dir.path().join("out-cnn"),
        Duration::from_secs(600),
    );
    let mut acc = Vec::new();
    numbers(&r["trials"], "val_accuracy", &mut acc);
    assert!(acc.iter().any(|a| *a > 0.95), "CNN accuracies {acc:?}");

    let lm = dir.path().join("lm.toml");
    std::fs::write(
        &lm,
        format!(
            r#"name = "lm"
[data]
path = "{}"
context = 64
limit = 120000
val_fraction = 0.1
[model]
arch = "gpt2"
layers = 2
d_model = 64
heads = 4
[train]
epochs = 1
batch_size = 32
lr = 3e-3
warmup = 20
schedule = "cosine"
grad_clip = 1.0
[search]
algorithm = "grid"
metric = "val_loss"
"#,
            moby()
        ),
    )
    .unwrap();
    let r = run_embedded(&lm, 1, &dir.path().join("out-lm"), Duration::from_secs(600));
    let mut loss = Vec::new();
    numbers(&r["trials"], "val_loss", &mut loss);
    let spec = ridgeline_common::spec::SweepSpec::from_file(&lm).unwrap();
    let ridgeline_worker::data::Data::Text(text) =
        ridgeline_worker::data::load_any(spec.data(), spec.data_format(), None).unwrap()
    else {
        panic!("text")
    };
    // The entropy of the byte frequencies, computed here from the text itself.
    let mut counts: HashMap<u32, f64> = HashMap::new();
    for t in &text.ids[..text.split] {
        *counts.entry(*t).or_default() += 1.0;
    }
    let n = text.split as f64;
    let unigram: f64 = counts.values().map(|c| -(c / n) * (c / n).ln()).sum();
    assert!(
        (unigram - text.unigram_entropy()).abs() < 1e-9 && unigram > 2.5,
        "{unigram}"
    );
    assert!(
        loss.iter().any(|l| *l < unigram),
        "val_loss {loss:?}, unigram entropy {unigram}"
    );
}
