//! Language-model data: text tokenised (bytes, a Hugging Face `tokenizer.json`, or a
//! GGUF's vocabulary) or pre-tokenised ids (nanoGPT's little-endian `.bin`), split into
//! a training head and a validation tail of the token stream, and cut into
//! non-overlapping windows of `context + 1` tokens (inputs and next-token targets).

use std::path::Path;

use candle_core::{Device, Tensor};
use ridgeline_common::spec::{DataFormat, DataSpec, TokenDtype};

use super::{DataError, derr, read_maybe_gz};

/// A tokenised corpus.
#[derive(Clone, Debug)]
pub struct TextData {
    /// Every token id, in order.
    pub ids: Vec<u32>,
    /// Index of the first validation token.
    pub split: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// How the text was tokenised, for people.
    pub tokenizer: String,
}

/// The tokenizer a spec names.
pub enum Tokenizer {
    /// One token per byte.
    Bytes,
    /// A Hugging Face tokenizer (from `tokenizer.json` or a GGUF's vocabulary).
    Hf(Box<tokenizers::Tokenizer>, String),
}

impl Tokenizer {
    /// Token ids of `text`.
    pub fn encode(&self, path: &Path, text: &str) -> Result<Vec<u32>, DataError> {
        match self {
            Tokenizer::Bytes => Ok(text.bytes().map(u32::from).collect()),
            // Paragraph by paragraph, so that the pre-tokenizer's regex never sees the
            // whole book at once, and on all cores.
            Tokenizer::Hf(t, _) => {
                let parts: Vec<&str> = text.split_inclusive("\n\n").collect();
                let enc = t
                    .encode_batch(parts, false)
                    .map_err(|e| derr(path, format!("tokenizer: {e}")))?;
                Ok(enc.iter().flat_map(|e| e.get_ids().to_vec()).collect())
            }
        }
    }

    fn vocab(&self) -> usize {
        match self {
            Tokenizer::Bytes => 256,
            Tokenizer::Hf(t, _) => t.get_vocab_size(true),
        }
    }

    fn describe(&self) -> String {
        match self {
            Tokenizer::Bytes => "bytes".into(),
            Tokenizer::Hf(_, name) => name.clone(),
        }
    }

    /// The tokenizer of `data.tokenizer`; `"model"` uses `model_vocab` (a GGUF's).
    pub fn from_spec(
        spec: &DataSpec,
        model_vocab: Option<tokenizers::Tokenizer>,
    ) -> Result<Self, DataError> {
        match spec.tokenizer.as_deref() {
            None | Some("bytes") => Ok(Tokenizer::Bytes),
            Some("model") => model_vocab
                .map(|t| Tokenizer::Hf(Box::new(t), "the model's GGUF vocabulary".into()))
                .ok_or_else(|| {
                    derr(
                        &spec.path,
                        "data.tokenizer = \"model\" needs a GGUF checkpoint (it carries the vocabulary)",
                    )
                }),
            Some(file) => {
                let t = tokenizers::Tokenizer::from_file(file)
                    .map_err(|e| derr(Path::new(file), format!("data.tokenizer: {e}")))?;
                Ok(Tokenizer::Hf(Box::new(t), file.to_owned()))
            }
        }
    }
}

/// Reads and tokenises the text or token file of `spec`, truncated to `limit` tokens.
pub fn load(
    spec: &DataSpec,
    format: DataFormat,
    tokenizer: &Tokenizer,
) -> Result<TextData, DataError> {
    let path = &spec.path;
    let bytes = read_maybe_gz(path)?;
    let (mut ids, vocab, name) = match format {
        DataFormat::Text => {
            let text = std::str::from_utf8(&bytes).map_err(|e| {
                derr(
                    path,
                    format!(
                        "expected UTF-8 text: invalid byte at offset {}",
                        e.valid_up_to()
                    ),
                )
            })?;
            (
                tokenizer.encode(path, text)?,
                tokenizer.vocab(),
                tokenizer.describe(),
            )
        }
        DataFormat::Tokens => {
            let width = match spec.token_dtype {
                TokenDtype::U16 => 2,
                TokenDtype::U32 => 4,
            };
            if bytes.len() % width != 0 {
                return Err(derr(
                    path,
                    format!(
                        "{} bytes is not a whole number of {width}-byte tokens",
                        bytes.len()
                    ),
                ));
            }
            let ids: Vec<u32> = bytes
                .chunks_exact(width)
                .map(|c| match width {
                    2 => u32::from(u16::from_le_bytes([c[0], c[1]])),
                    _ => u32::from_le_bytes([c[0], c[1], c[2], c[3]]),
                })
                .collect();
            let seen = ids.iter().max().map_or(0, |m| *m as usize + 1);
            let vocab = spec.vocab.unwrap_or(seen);
            if seen > vocab {
                return Err(derr(
                    path,
                    format!("token id {} is outside data.vocab = {vocab}", seen - 1),
                ));
            }
            (
                ids,
                vocab,
                format!("{:?} token file", spec.token_dtype).to_lowercase(),
            )
        }
        _ => unreachable!("caller checks the format"),
    };
    if let Some(limit) = spec.limit {
        ids.truncate(limit);
    }
    let split = ((ids.len() as f64) * (1.0 - spec.val_fraction)).round() as usize;
    let data = TextData {
        split,
        vocab,
        tokenizer: name,
        ids,
    };
    for (part, n) in [
        ("training", data.windows(false, spec.context).len()),
        ("validation", data.windows(true, spec.context).len()),
    ] {
        if n == 0 {
            return Err(derr(
                path,
                format!(
                    "the {part} part has no window of {} tokens (data.context) in {} tokens",
                    spec.context + 1,
                    data.ids.len()
                ),
            ));
        }
    }
    Ok(data)
}

impl TextData {
    /// Start offsets of the windows of one part (`val`: the tail), `context + 1` tokens
    /// each, not overlapping.
    pub fn windows(&self, val: bool, context: usize) -> Vec<usize> {
        let (start, end) = if val {
            (self.split, self.ids.len())
        } else {
            (0, self.split)
        };
        (start..end.saturating_sub(context))
            .step_by(context.max(1))
            .collect()
    }

    /// Inputs and targets `[windows, context]` of the windows starting at `starts`.
    pub fn batch(
        &self,
        starts: &[usize],
        context: usize,
        device: &Device,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let mut x = Vec::with_capacity(starts.len() * context);
        let mut y = Vec::with_capacity(starts.len() * context);
        for &s in starts {
            x.extend_from_slice(&self.ids[s..s + context]);
            y.extend_from_slice(&self.ids[s + 1..s + context + 1]);
        }
        Ok((
            Tensor::from_vec(x, (starts.len(), context), device)?,
            Tensor::from_vec(y, (starts.len(), context), device)?,
        ))
    }

    /// Entropy (nats) of the unigram distribution of the training tokens: the loss of
    /// the best model that ignores context, a bar a language model must beat.
    pub fn unigram_entropy(&self) -> f64 {
        let mut counts = vec![0u64; self.vocab.max(1)];
        for &t in &self.ids[..self.split] {
            counts[t as usize] += 1;
        }
        let n = self.split as f64;
        counts
            .iter()
            .filter(|c| **c > 0)
            .map(|&c| {
                let p = c as f64 / n;
                -p * p.ln()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(path: &Path, context: usize) -> DataSpec {
        serde_json::from_value(serde_json::json!({
            "path": path, "context": context, "val_fraction": 0.25
        }))
        .unwrap()
    }

    #[test]
    fn byte_windows_split_and_targets_shift_by_one() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.txt");
        std::fs::write(&p, "abcdefghijklmnopqrstuvwxyz0123456789abcd").unwrap();
        let d = load(&spec(&p, 4), DataFormat::Text, &Tokenizer::Bytes).unwrap();
        assert_eq!((d.ids.len(), d.split, d.vocab), (40, 30, 256));
        assert_eq!(d.windows(false, 4), vec![0, 4, 8, 12, 16, 20, 24]);
        assert_eq!(d.windows(true, 4), vec![30, 34]);
        let (x, y) = d.batch(&[4], 4, &Device::Cpu).unwrap();
        assert_eq!(
            x.to_vec2::<u32>().unwrap(),
            vec![b"efgh".map(u32::from).to_vec()]
        );
        assert_eq!(
            y.to_vec2::<u32>().unwrap(),
            vec![b"fghi".map(u32::from).to_vec()]
        );
        // A context longer than the validation tail is a clear error.
        let e = load(&spec(&p, 12), DataFormat::Text, &Tokenizer::Bytes).unwrap_err();
        assert!(
            e.to_string()
                .contains("validation part has no window of 13 tokens"),
            "{e}"
        );
    }

    #[test]
    fn token_files_read_little_endian_and_check_the_vocabulary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.bin");
        let ids: Vec<u16> = (0..64).map(|i| (i * 977 % 50_000) as u16).collect();
        std::fs::write(
            &p,
            ids.iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>(),
        )
        .unwrap();
        let d = load(&spec(&p, 8), DataFormat::Tokens, &Tokenizer::Bytes).unwrap();
        assert_eq!(d.ids, ids.iter().map(|&v| u32::from(v)).collect::<Vec<_>>());
        assert_eq!(d.vocab, *d.ids.iter().max().unwrap() as usize + 1);
        let mut s = spec(&p, 8);
        s.vocab = Some(100);
        let e = load(&s, DataFormat::Tokens, &Tokenizer::Bytes).unwrap_err();
        assert!(e.to_string().contains("outside data.vocab = 100"), "{e}");
        std::fs::write(&p, [1u8, 2, 3]).unwrap();
        let e = load(&spec(&p, 8), DataFormat::Tokens, &Tokenizer::Bytes).unwrap_err();
        assert!(
            e.to_string()
                .contains("not a whole number of 2-byte tokens"),
            "{e}"
        );
    }

    /// A Hugging Face `tokenizer.json` named by `data.tokenizer` tokenises the text with
    /// the `tokenizers` crate: a byte-level BPE with two merges, written to a file here.
    #[test]
    fn a_tokenizer_json_file_tokenises_the_text() {
        use tokenizers::models::bpe::BPE;
        use tokenizers::pre_tokenizers::byte_level::ByteLevel;
        let dir = tempfile::tempdir().unwrap();
        let alphabet = ByteLevel::alphabet();
        let mut vocab: tokenizers::models::bpe::Vocab = alphabet
            .iter()
            .enumerate()
            .map(|(i, c)| (c.to_string(), i as u32))
            .collect();
        let n = vocab.len() as u32;
        vocab.insert("th".into(), n);
        vocab.insert("the".into(), n + 1);
        let merges = vec![
            ("t".to_owned(), "h".to_owned()),
            ("th".to_owned(), "e".to_owned()),
        ];
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .unwrap();
        let mut t = tokenizers::Tokenizer::new(bpe);
        t.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
        let path = dir.path().join("tokenizer.json");
        t.save(&path, false).unwrap();
        let text = dir.path().join("t.txt");
        std::fs::write(&text, "the theme the\n\nthen other the end of the tale").unwrap();
        let mut s = spec(&text, 2);
        s.tokenizer = Some(path.display().to_string());
        let tok = Tokenizer::from_spec(&s, None).unwrap();
        let d = load(&s, DataFormat::Text, &tok).unwrap();
        assert_eq!(d.vocab, n as usize + 2);
        // "the" is one token wherever it starts a word; the ids are the file's.
        let the = d.ids.iter().filter(|&&i| i == n + 1).count();
        assert_eq!(the, 7, "{:?}", d.ids); // the, theme, the, then, other, the, the
        let direct = t
            .encode("the theme the\n\nthen other the end of the tale", false)
            .unwrap();
        assert_eq!(d.ids, direct.get_ids());
        // A missing file is named.
        s.tokenizer = Some("/no/such/tokenizer.json".into());
        let e = Tokenizer::from_spec(&s, None).err().unwrap();
        assert!(e.to_string().contains("/no/such/tokenizer.json"), "{e}");
    }
}
