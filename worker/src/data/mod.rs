//! Data sets: CSV (optionally gzip'd, with a label column) and MNIST's IDX format
//! (optionally gzip'd), split into training and validation parts and normalised with
//! statistics of the training part only.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use ridgeline_common::rng::Rng;
use ridgeline_common::spec::{DataFormat, DataSpec, Normalize, SweepSpec, Task};

pub mod text;

pub use text::{TextData, Tokenizer};

/// A data set of either kind.
// One per sweep behind an Arc: the size difference of the variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Data {
    /// Samples with labels (MLP and convolutional models).
    Table(Dataset),
    /// A tokenised corpus (language models).
    Text(TextData),
}

/// A data set or parsing error, naming the file and what was expected.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {reason}")]
pub struct DataError {
    /// The file.
    pub file: String,
    /// What is wrong.
    pub reason: String,
}

pub(crate) fn derr(file: &Path, reason: impl Into<String>) -> DataError {
    DataError {
        file: file.display().to_string(),
        reason: reason.into(),
    }
}

/// The most classes a classification data set may have (labels `0..MAX_CLASSES`).
pub const MAX_CLASSES: usize = 65_536;

/// Samples as a dense row-major matrix with integer class labels (classification) or
/// real targets (regression).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Samples {
    /// `n * dim` features.
    pub x: Vec<f32>,
    /// `n` labels in `0..classes` (classification; empty for regression).
    pub y: Vec<u32>,
    /// `n * outputs` targets (regression; empty for classification).
    pub t: Vec<f32>,
    /// Targets per sample (regression).
    pub outputs: usize,
    /// Features per sample.
    pub dim: usize,
    /// `[channels, height, width]` when the features are an image.
    pub image: Option<[usize; 3]>,
}

impl Samples {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.x.len() / self.dim.max(1)
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }

    fn select(&self, idx: &[usize]) -> Samples {
        let mut x = Vec::with_capacity(idx.len() * self.dim);
        let mut t = Vec::with_capacity(idx.len() * self.outputs);
        for &i in idx {
            x.extend_from_slice(&self.x[i * self.dim..(i + 1) * self.dim]);
            t.extend_from_slice(&self.t[i * self.outputs..(i + 1) * self.outputs]);
        }
        Samples {
            x,
            y: if self.y.is_empty() {
                vec![]
            } else {
                idx.iter().map(|&i| self.y[i]).collect()
            },
            t,
            outputs: self.outputs,
            dim: self.dim,
            image: self.image,
        }
    }

    /// The first `n` samples.
    pub fn head(&self, n: usize) -> Samples {
        let idx: Vec<usize> = (0..n.min(self.len())).collect();
        self.select(&idx)
    }
}

/// A data set ready for training.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Training part, normalised.
    pub train: Samples,
    /// Validation part, normalised with the training part's statistics.
    pub val: Samples,
    /// Number of classes (largest label + 1).
    pub classes: usize,
    /// Per-feature offset subtracted before scaling.
    pub mean: Vec<f32>,
    /// Per-feature factor applied after the offset.
    pub scale: Vec<f32>,
}

pub(crate) fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = std::fs::read(path).map_err(|e| derr(path, format!("cannot read: {e}")))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| derr(path, format!("bad gzip data: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// One CSV field as a number; the error names the line and column (both from 1).
fn number(path: &Path, field: &str, lineno: usize, col: usize) -> Result<f64, DataError> {
    field.parse().map_err(|_| {
        derr(
            path,
            format!(
                "line {}, column {}: expected a number, found {field:?}",
                lineno + 1,
                col + 1
            ),
        )
    })
}

/// Parses CSV text: numbers separated by commas, one sample per line.
pub fn parse_csv(
    path: &Path,
    text: &str,
    label_column: i64,
    header: bool,
) -> Result<Samples, DataError> {
    parse_csv_as(path, text, label_column, header, None)
}

/// Parses CSV text; with `targets = Some(k)` the last `k` columns are real targets
/// (regression) instead of one label column.
pub fn parse_csv_as(
    path: &Path,
    text: &str,
    label_column: i64,
    header: bool,
    targets: Option<usize>,
) -> Result<Samples, DataError> {
    let mut x = Vec::new();
    let mut y = Vec::new();
    let mut t = Vec::new();
    let mut width = None;
    let mut fields: Vec<&str> = Vec::new();
    for (lineno, line) in text.lines().enumerate().skip(usize::from(header)) {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        fields.clear();
        fields.extend(line.split(',').map(str::trim));
        let w = *width.get_or_insert(fields.len());
        if fields.len() != w {
            return Err(derr(
                path,
                format!(
                    "line {}: expected {w} columns, found {}",
                    lineno + 1,
                    fields.len()
                ),
            ));
        }
        if w < 2 {
            return Err(derr(
                path,
                format!(
                    "line {}: expected a label and at least one feature",
                    lineno + 1
                ),
            ));
        }
        if let Some(k) = targets {
            if k >= w {
                return Err(derr(
                    path,
                    format!("data.target_columns {k} leaves no feature in {w} columns"),
                ));
            }
            for (j, f) in fields.iter().enumerate() {
                let v = number(path, f, lineno, j)? as f32;
                if !v.is_finite() {
                    return Err(derr(
                        path,
                        format!("line {}, column {}: value is not finite", lineno + 1, j + 1),
                    ));
                }
                if j < w - k { x.push(v) } else { t.push(v) }
            }
            continue;
        }
        let lc = if label_column < 0 {
            w as i64 + label_column
        } else {
            label_column
        };
        if lc < 0 || lc >= w as i64 {
            return Err(derr(
                path,
                format!("data.label_column {label_column} is outside the {w} columns"),
            ));
        }
        for (j, f) in fields.iter().enumerate() {
            let v = number(path, f, lineno, j)?;
            if j as i64 == lc {
                if v < 0.0 || v.fract() != 0.0 {
                    return Err(derr(
                        path,
                        format!(
                            "line {}: label must be a class index 0, 1, 2, ..., found {f}",
                            lineno + 1
                        ),
                    ));
                }
                // The model gets one output per class up to the largest label: a stray
                // label of 1000000 would build a million-wide layer and train for
                // minutes before anything failed.
                if v >= MAX_CLASSES as f64 {
                    return Err(derr(
                        path,
                        format!(
                            "line {}: label {f} is beyond the {MAX_CLASSES} classes a model can have here (labels are class indices 0, 1, 2, ...)",
                            lineno + 1
                        ),
                    ));
                }
                y.push(v as u32);
            } else {
                if !v.is_finite() {
                    return Err(derr(
                        path,
                        format!(
                            "line {}, column {}: feature is not finite",
                            lineno + 1,
                            j + 1
                        ),
                    ));
                }
                x.push(v as f32);
            }
        }
    }
    let Some(w) = width else {
        return Err(derr(path, "no samples"));
    };
    let outputs = targets.unwrap_or(0);
    let dim = if targets.is_some() {
        w - outputs
    } else {
        w - 1
    };
    Ok(Samples {
        x,
        y,
        t,
        outputs,
        dim,
        image: None,
    })
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Parses IDX images (magic 2051, unsigned bytes) and labels (magic 2049).
pub fn parse_idx(
    images_path: &Path,
    images: &[u8],
    labels_path: &Path,
    labels: &[u8],
) -> Result<Samples, DataError> {
    // Magic: two zero bytes, a type byte (0x08 = unsigned byte) and a rank byte.
    if images.len() < 16 || images[..4] != [0, 0, 8, 3] {
        return Err(derr(
            images_path,
            "expected IDX images (magic 0x00000803: unsigned bytes, rank 3)",
        ));
    }
    if labels.len() < 8 || labels[..4] != [0, 0, 8, 1] {
        return Err(derr(
            labels_path,
            "expected IDX labels (magic 0x00000801: unsigned bytes, rank 1)",
        ));
    }
    let n = be_u32(images, 4) as usize;
    let (rows, cols) = (be_u32(images, 8) as usize, be_u32(images, 12) as usize);
    let dim = rows * cols;
    let nl = be_u32(labels, 4) as usize;
    if nl != n {
        return Err(derr(labels_path, format!("{nl} labels for {n} images")));
    }
    if images.len() != 16 + n * dim {
        return Err(derr(
            images_path,
            format!(
                "expected {} bytes for {n} images of {dim} pixels, found {}",
                16 + n * dim,
                images.len()
            ),
        ));
    }
    if labels.len() != 8 + n {
        return Err(derr(
            labels_path,
            format!("expected {} bytes, found {}", 8 + n, labels.len()),
        ));
    }
    Ok(Samples {
        x: images[16..].iter().map(|&b| f32::from(b)).collect(),
        y: labels[8..].iter().map(|&b| u32::from(b)).collect(),
        dim,
        image: Some([1, rows, cols]),
        ..Samples::default()
    })
}

/// Reads the raw samples a spec names.
pub fn read_samples(spec: &DataSpec, format: DataFormat) -> Result<Samples, DataError> {
    match format {
        DataFormat::Csv => {
            let bytes = read_maybe_gz(&spec.path)?;
            let text =
                std::str::from_utf8(&bytes).map_err(|_| derr(&spec.path, "expected UTF-8 text"))?;
            let targets = (spec.task == Task::Regression).then_some(spec.target_columns);
            let mut s = parse_csv_as(&spec.path, text, spec.label_column, spec.header, targets)?;
            if let Some([c, h, w]) = spec.image_shape {
                if c * h * w != s.dim {
                    return Err(derr(
                        &spec.path,
                        format!(
                            "data.image_shape [{c}, {h}, {w}] is {} values, the rows have {} features",
                            c * h * w,
                            s.dim
                        ),
                    ));
                }
                s.image = Some([c, h, w]);
            }
            Ok(s)
        }
        DataFormat::Text | DataFormat::Tokens => Err(derr(
            &spec.path,
            "text and token files are language-model data, not samples",
        )),
        DataFormat::Idx => {
            let labels_path = spec.labels.as_deref().ok_or_else(|| {
                derr(
                    &spec.path,
                    "data.labels: an IDX data set needs a labels file",
                )
            })?;
            let images = read_maybe_gz(&spec.path)?;
            let labels = read_maybe_gz(labels_path)?;
            parse_idx(&spec.path, &images, labels_path, &labels)
        }
    }
}

/// Shuffles (with `split_seed`), truncates to `limit`, splits and normalises.
pub fn prepare(spec: &DataSpec, samples: Samples) -> Result<Dataset, DataError> {
    let n = samples.len();
    let mut idx: Vec<usize> = (0..n).collect();
    Rng::new(spec.split_seed).shuffle(&mut idx);
    if let Some(limit) = spec.limit {
        idx.truncate(limit);
    }
    let n_val = ((idx.len() as f64 * spec.val_fraction).round() as usize)
        .clamp(1, idx.len().saturating_sub(1).max(1));
    if idx.len() < 2 {
        return Err(derr(
            &spec.path,
            format!("need at least 2 samples to split, found {}", idx.len()),
        ));
    }
    let classes = samples.y.iter().max().map_or(0, |m| *m as usize + 1);
    let (val_idx, train_idx) = idx.split_at(n_val);
    let mut train = samples.select(train_idx);
    let mut val = samples.select(val_idx);
    let dim = samples.dim;
    let (mean, scale) = match spec.normalize {
        Normalize::None => (vec![0.0; dim], vec![1.0; dim]),
        Normalize::Max => {
            let m = train.x.iter().fold(0f32, |a, v| a.max(v.abs()));
            (
                vec![0.0; dim],
                vec![if m > 0.0 { 1.0 / m } else { 1.0 }; dim],
            )
        }
        Normalize::Standard => {
            // Accumulate in f64: MNIST has 8000 * 784 values.
            let rows = train.len() as f64;
            let mut mean = vec![0f64; dim];
            let mut sq = vec![0f64; dim];
            for row in train.x.chunks_exact(dim) {
                for (j, &v) in row.iter().enumerate() {
                    mean[j] += f64::from(v);
                    sq[j] += f64::from(v) * f64::from(v);
                }
            }
            let mut scale = vec![1f32; dim];
            for j in 0..dim {
                mean[j] /= rows;
                let var = (sq[j] / rows - mean[j] * mean[j]).max(0.0);
                // Constant features (MNIST's border pixels) are centred, not blown up.
                scale[j] = if var > 1e-12 {
                    (1.0 / var.sqrt()) as f32
                } else {
                    1.0
                };
            }
            (mean.iter().map(|&m| m as f32).collect(), scale)
        }
    };
    for s in [&mut train, &mut val] {
        for row in s.x.chunks_exact_mut(dim) {
            for ((v, m), k) in row.iter_mut().zip(&mean).zip(&scale) {
                *v = (*v - m) * k;
            }
        }
    }
    Ok(Dataset {
        train,
        val,
        classes,
        mean,
        scale,
    })
}

/// Loads, splits and normalises the data a spec names.
pub fn load(spec: &DataSpec, format: DataFormat) -> Result<Dataset, DataError> {
    prepare(spec, read_samples(spec, format)?)
}

/// Data sets already loaded in this process, by their spec: trials of a sweep that land
/// on the same worker parse and normalise the data once.
pub fn cached(spec: &SweepSpec) -> Result<Arc<Data>, String> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<Data>>>> = OnceLock::new();
    let key = serde_json::to_string(&spec.data).expect("data spec serialises");
    let cache = CACHE.get_or_init(Default::default);
    if let Some(d) = cache.lock().expect("cache lock").get(&key) {
        return Ok(d.clone());
    }
    let d = Arc::new(load_any(spec.data(), spec.data_format(), None).map_err(|e| e.to_string())?);
    cache.lock().expect("cache lock").insert(key, d.clone());
    Ok(d)
}

/// Loads data of either kind; `model_vocab` serves `data.tokenizer = "model"`.
pub fn load_any(
    spec: &DataSpec,
    format: DataFormat,
    model_vocab: Option<tokenizers::Tokenizer>,
) -> Result<Data, DataError> {
    if spec.is_text(format) {
        let tok = Tokenizer::from_spec(spec, model_vocab)?;
        Ok(Data::Text(text::load(spec, format, &tok)?))
    } else {
        Ok(Data::Table(load(spec, format)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn spec(path: &Path) -> DataSpec {
        ridgeline_common::spec::SweepSpec::from_toml(&format!(
            "name = \"t\"\n[data]\npath = {:?}\nval_fraction = 0.25\n[search]\n",
            path.display().to_string()
        ))
        .unwrap()
        .data()
        .clone()
    }

    #[test]
    fn csv_gzip_and_plain_parse_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let text = "1,2,0\n3,4,1\n5,6,2\n7,8,1\n";
        let plain = dir.path().join("d.csv");
        std::fs::write(&plain, text).unwrap();
        let gz = dir.path().join("d.csv.gz");
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(text.as_bytes()).unwrap();
        std::fs::write(&gz, e.finish().unwrap()).unwrap();
        let a = read_samples(&spec(&plain), DataFormat::Csv).unwrap();
        let b = read_samples(&spec(&gz), DataFormat::Csv).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.y, vec![0, 1, 2, 1]);
        assert_eq!(a.x, vec![1., 2., 3., 4., 5., 6., 7., 8.]);
        let d = prepare(&spec(&plain), a).unwrap();
        assert_eq!((d.train.len(), d.val.len(), d.classes), (3, 1, 3));
        // Standardised training features have zero mean and unit variance per column.
        for j in 0..2 {
            let col: Vec<f32> = d.train.x.iter().skip(j).step_by(2).copied().collect();
            let m: f32 = col.iter().sum::<f32>() / 3.0;
            let v: f32 = col.iter().map(|c| (c - m) * (c - m)).sum::<f32>() / 3.0;
            assert!(m.abs() < 1e-5 && (v - 1.0).abs() < 1e-4, "{m} {v}");
        }
    }

    #[test]
    fn csv_errors_name_line_and_column() {
        let p = Path::new("x.csv");
        let e = parse_csv(p, "1,2,0\n1,x,1\n", -1, false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "x.csv: line 2, column 2: expected a number, found \"x\""
        );
        let e = parse_csv(p, "1,2,0\n1,1\n", -1, false).unwrap_err();
        assert_eq!(e.to_string(), "x.csv: line 2: expected 3 columns, found 2");
        let e = parse_csv(p, "1,2,0.5\n", -1, false).unwrap_err();
        assert!(e.to_string().contains("label must be a class index"), "{e}");
    }

    #[test]
    fn idx_round_trip_and_bad_magic() {
        let mut img = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2];
        img.extend([1, 2, 3, 4, 5, 6, 7, 8]);
        let lab = vec![0, 0, 8, 1, 0, 0, 0, 2, 7, 3];
        let s = parse_idx(Path::new("i"), &img, Path::new("l"), &lab).unwrap();
        assert_eq!((s.dim, s.y.clone(), s.x[4]), (4, vec![7, 3], 5.0));
        let e = parse_idx(Path::new("i"), &lab, Path::new("l"), &lab).unwrap_err();
        assert!(e.to_string().starts_with("i: expected IDX images"), "{e}");
    }
}
