//! Tokenisation with the `tokenizers` crate from a `tokenizer.json`.
//!
//! Whatever padding the file asks for is replaced by dynamic padding: each batch is padded
//! to its own longest sequence (the shipped MiniLM tokenizer pads every input to 128).
//! Truncation keeps the special tokens and cuts the text to `max_length` tokens in all.

use std::path::{Path, PathBuf};

use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::error::{Error, Result};

/// A tokenizer with the padding and truncation policy of this crate.
pub struct TextTokenizer {
    inner: Tokenizer,
    path: PathBuf,
    max_length: usize,
    pad_id: u32,
}

/// Token ids of a batch, right-padded to the longest sequence: `(b, t)` row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenBatch {
    pub ids: Vec<i64>,
    /// 1.0 for real tokens, 0.0 for padding, `(b, t)`.
    pub mask: Vec<f32>,
    /// Real tokens of each sequence, specials included.
    pub lengths: Vec<usize>,
    pub b: usize,
    pub t: usize,
}

/// A parsed `tokenizer.json` before this crate's padding and truncation policy is applied.
///
/// Parsing is the slow part of loading a tokenizer: XLM-R's 250,002 pieces go into a trie of
/// hash maps, ≈ 0.7 s on the 2-core machine, more than reading and dequantising
/// multilingual-e5-small's weights. So encoders parse it on a second thread while their
/// weights load ([`crate::encoder::TextEncoder::load`]), and apply the policy once the
/// model's configuration is known.
pub struct RawTokenizer {
    inner: Tokenizer,
    path: PathBuf,
}

impl RawTokenizer {
    /// Parse `tokenizer.json`.
    pub fn read(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::io(
                path,
                "open",
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            ));
        }
        let inner = Tokenizer::from_file(path).map_err(|e| Error::Format {
            path: path.into(),
            what: format!("not a valid tokenizer.json: {e}"),
        })?;
        Ok(RawTokenizer {
            inner,
            path: path.into(),
        })
    }
}

impl TextTokenizer {
    /// Load `tokenizer.json`; `pad_id` is the model's padding token id.
    pub fn from_file(path: &Path, max_length: usize, pad_id: u32) -> Result<Self> {
        if max_length < 2 {
            return Err(Error::parameter("max_length", "at least 2", max_length));
        }
        Self::from_raw(RawTokenizer::read(path)?, max_length, pad_id)
    }

    /// Apply the padding and truncation policy to a parsed tokenizer.
    pub fn from_raw(raw: RawTokenizer, max_length: usize, pad_id: u32) -> Result<Self> {
        if max_length < 2 {
            return Err(Error::parameter("max_length", "at least 2", max_length));
        }
        let RawTokenizer { mut inner, path } = raw;
        let path = path.as_path();
        inner.with_padding(None);
        // The tokenizer truncates the text to max_length minus its special tokens (and
        // underflows when they alone exceed it).
        let specials = inner
            .get_post_processor()
            .map_or(0, |p| tokenizers::PostProcessor::added_tokens(p, false));
        if max_length < specials {
            return Err(Error::parameter(
                "max_length",
                format!(
                    "at least the {specials} special tokens {} adds to every text",
                    path.display()
                ),
                max_length,
            ));
        }
        inner
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| Error::Format {
                path: path.into(),
                what: format!("truncation to {max_length} tokens rejected: {e}"),
            })?;
        Ok(TextTokenizer {
            inner,
            path: path.into(),
            max_length,
            pad_id,
        })
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Size of the vocabulary, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The piece with id `id`, if any.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Token ids of one text, special tokens included, truncated.
    pub fn encode_ids(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, true).map_err(|e| Error::Format {
            path: self.path.clone(),
            what: format!("tokenising {:?} failed: {e}", truncate_for_message(text)),
        })?;
        Ok(enc.get_ids().to_vec())
    }

    /// Tokenise texts into one right-padded batch.
    pub fn batch<S: AsRef<str>>(&self, texts: &[S]) -> Result<TokenBatch> {
        let seqs = texts
            .iter()
            .map(|s| self.encode_ids(s.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        Ok(pad(&seqs, self.pad_id))
    }
}

/// Right-pad token sequences to the longest one.
pub fn pad(seqs: &[Vec<u32>], pad_id: u32) -> TokenBatch {
    let b = seqs.len();
    let t = seqs.iter().map(Vec::len).max().unwrap_or(0);
    let mut ids = vec![pad_id as i64; b * t];
    let mut mask = vec![0.0f32; b * t];
    for (r, s) in seqs.iter().enumerate() {
        for (c, &id) in s.iter().enumerate() {
            ids[r * t + c] = id as i64;
            mask[r * t + c] = 1.0;
        }
    }
    TokenBatch {
        ids,
        mask,
        lengths: seqs.iter().map(Vec::len).collect(),
        b,
        t,
    }
}

fn truncate_for_message(text: &str) -> String {
    text.chars().take(40).collect()
}
