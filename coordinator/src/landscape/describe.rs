//! What a scan's pictures say about it: the model, the data, the directions and the axes,
//! from the files the scan keeps (`model.json`, `directions.json`) and its spec.

use std::path::Path;

use ridgeline_common::landscape::{DirectionKind, Split};
use ridgeline_common::spec::SweepSpec;

use crate::plot::Labels;

/// A short name of the scanned model from its `model.json`: `MLP 64-32-10 relu`,
/// `CNN [16, 32]`, `GPT-2 6×256`, or the checkpoint's format.
fn model(sweep_dir: &Path) -> String {
    let Some(m) = crate::fsafe::read(sweep_dir.join("model.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
    else {
        return "pretrained checkpoint".into();
    };
    let n = |k: &str| m[k].as_u64().unwrap_or(0);
    match m["arch"].as_str().unwrap_or("") {
        "mlp" => {
            let mut dims = vec![n("input_dim")];
            dims.extend(std::iter::repeat_n(n("width"), n("depth") as usize));
            dims.push(n("classes"));
            let dims: Vec<String> = dims.iter().map(u64::to_string).collect();
            format!(
                "MLP {} {}",
                dims.join("-"),
                m["activation"].as_str().unwrap_or("")
            )
        }
        "cnn" | "resnet" => format!(
            "{} {}",
            if m["arch"] == "cnn" { "CNN" } else { "ResNet" },
            m["channels"]
        ),
        "gpt2" | "llama" => format!(
            "{} {}×{}",
            if m["arch"] == "gpt2" {
                "GPT-2"
            } else {
                "Llama"
            },
            n("layers"),
            n("d_model")
        ),
        other => other.to_string(),
    }
}

/// Labels for a scan's pictures of `value`.
pub fn labels(
    sweep_dir: &Path,
    spec: &SweepSpec,
    directions: &serde_json::Value,
    value: &str,
) -> Labels {
    let l = spec.landscape.as_ref().expect("a landscape spec");
    // An evaluator's model and data are its function's.
    let data = match (&spec.data, &l.evaluator) {
        (_, Some(e)) => format!("{}'s data", e.python),
        (Some(d), None) => d
            .path
            .file_name()
            .map_or_else(|| "data".into(), |f| f.to_string_lossy().into_owned()),
        (None, None) => "data".into(),
    };
    // A "both" scan's pictures are of its training surface (the validation curve of a
    // 1-D scan is drawn beside it, dashed).
    let split = match l.split {
        Split::Train | Split::Both => "train",
        Split::Val => "validation",
    };
    let norm = directions["normalization"].as_str().unwrap_or("filter");
    let (dirs, x, y) = match l.directions.kind {
        DirectionKind::Random => (
            format!(
                "{norm}-normalised random directions (seed {})",
                l.directions.seed
            ),
            "α (first random direction)".to_string(),
            "β (second random direction)".to_string(),
        ),
        DirectionKind::Pca => {
            let r = |i: usize| {
                directions["explained_variance_ratio"][i]
                    .as_f64()
                    .unwrap_or(f64::NAN)
                    * 100.0
            };
            (
                "PCA directions of the training trajectory".into(),
                format!("PC1 ({:.1} %)", r(0)),
                format!("PC2 ({:.1} %)", r(1)),
            )
        }
        DirectionKind::Target => (
            "towards other checkpoints".into(),
            "α (0: checkpoint, 1: target)".into(),
            "β (0: checkpoint, 1: second target)".into(),
        ),
        DirectionKind::File => (
            "directions from a file".into(),
            "α (x direction)".into(),
            "β (y direction)".into(),
        ),
    };
    // The loss in its units: mean cross-entropy in nats (per token for a language
    // model), or the mean squared error in the targets' units squared.
    let value = if value == "loss" && l.evaluator.is_some() {
        "loss (the evaluator's)".to_owned()
    } else if value == "loss" {
        let unit = match l.loss {
            ridgeline_common::landscape::LossKind::CrossEntropy
                if spec.data().tokenizer.is_some()
                    || spec.data().path.to_string_lossy().contains(".txt") =>
            {
                "nats per token"
            }
            ridgeline_common::landscape::LossKind::CrossEntropy => "nats",
            ridgeline_common::landscape::LossKind::Mse => "squared error",
        };
        format!("loss ({unit})")
    } else {
        value.to_owned()
    };
    Labels {
        title: format!("{}: {value}", spec.name),
        subtitle: match &l.evaluator {
            Some(e) => format!("{} (PyTorch evaluator); {data}; {dirs}", e.python),
            None => format!("{}; {data}, {split} split; {dirs}", model(sweep_dir)),
        },
        x,
        y,
        value,
    }
}
