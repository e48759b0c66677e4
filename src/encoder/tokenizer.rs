//! Tokenisation with the `tokenizers` crate from a `tokenizer.json`.
//!
//! Whatever padding the file asks for is replaced by dynamic padding: each batch is padded
//! to its own longest sequence (the shipped MiniLM tokenizer pads every input to 128).
//! Truncation keeps the special tokens and cuts the text to `max_length` tokens in all.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::error::{Error, Result};

/// A tokenizer with the padding and truncation policy of this crate.
///
/// The parsed tokenizer is shared: every `TextTokenizer` of the process made from the same
/// `tokenizer.json` content with the same `max_length` holds the same one (see
/// [`RawTokenizer`]).
pub struct TextTokenizer {
    inner: Arc<Tokenizer>,
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

impl TokenBatch {
    /// The ids `(b, t)` and the mask `(b, t)` as tensors on `device`; an error when `ids`,
    /// `mask` or `lengths` do not have the batch's shape.
    pub fn tensors(
        &self,
        device: &burn::prelude::Device,
    ) -> crate::error::Result<(
        burn::prelude::Tensor<2, burn::prelude::Int>,
        burn::prelude::Tensor<2>,
    )> {
        use burn::prelude::{Int, Tensor, TensorData};
        let want = self.b as u128 * self.t as u128;
        for (what, len) in [("ids", self.ids.len()), ("mask", self.mask.len())] {
            if len as u128 != want {
                return Err(crate::error::Error::shape(
                    format!("token batch {what}"),
                    format!("(b, t) = ({}, {}): {want} values", self.b, self.t),
                    format!("{len} values"),
                ));
            }
        }
        if self.lengths.len() != self.b {
            return Err(crate::error::Error::shape(
                "token batch lengths",
                format!("({},), one length per sequence", self.b),
                format!("({},)", self.lengths.len()),
            ));
        }
        let ids = Tensor::<2, Int>::from_data(
            TensorData::new(self.ids.clone(), [self.b, self.t]),
            device,
        );
        let mask =
            Tensor::<2>::from_data(TensorData::new(self.mask.clone(), [self.b, self.t]), device);
        Ok((ids, mask))
    }
}

/// A `tokenizer.json`, parsed unless this process has parsed the same content before,
/// before this crate's padding and truncation policy is applied.
///
/// Parsing is the slow part of loading a tokenizer: XLM-R's 250,002 pieces go into a trie of
/// hash maps, 0.9–1.2 s on the 2-core machine, more than reading and dequantising
/// multilingual-e5-small's weights. So encoders parse it on a second thread while their
/// weights load ([`crate::encoder::TextEncoder::load`]), and apply the policy once the
/// model's configuration is known. And the process keeps what it parsed, by the file's
/// content (its length and a hash of its bytes) and `max_length`: the teacher and student of
/// a distillation run share one XLM-R tokenizer, and the runs of a study (whose exported
/// students carry copies of `tokenizer.json`) parse it once per `max_length`. A kept
/// tokenizer is never freed; a process uses a few at most.
pub struct RawTokenizer {
    /// `None` when the content was parsed before (the policy is applied to a kept copy).
    inner: Option<Tokenizer>,
    key: ContentKey,
    path: PathBuf,
}

/// A `tokenizer.json`'s identity: its length and a hash of its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ContentKey {
    len: usize,
    hash: u64,
}

/// The tokenizers this process parsed, each with the policy of one `max_length` applied.
static KEPT: Mutex<Vec<(ContentKey, usize, Arc<Tokenizer>)>> = Mutex::new(Vec::new());

fn kept() -> std::sync::MutexGuard<'static, Vec<(ContentKey, usize, Arc<Tokenizer>)>> {
    // The list is only ever pushed to whole entries, so a panic elsewhere leaves it usable.
    KEPT.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl RawTokenizer {
    /// Read `tokenizer.json` and parse it, unless the process parsed the same content before.
    pub fn read(path: &Path) -> Result<Self> {
        if !path.is_file() {
            let what = if path.exists() {
                "expected a tokenizer.json file, found a directory or special file"
            } else {
                "no such file"
            };
            return Err(Error::io(
                path,
                "open",
                std::io::Error::new(std::io::ErrorKind::NotFound, what),
            ));
        }
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, "read", e))?;
        let key = ContentKey {
            len: bytes.len(),
            hash: crate::rng::fnv1a64(&bytes),
        };
        let inner = if kept().iter().any(|(k, _, _)| *k == key) {
            None
        } else {
            // The tokenizers crate panics on some malformed files (a corrupt
            // `precompiled_charsmap`) instead of returning its error.
            let parsed = crate::error::catch_panic_quietly(|| Tokenizer::from_bytes(&bytes))
                .map_err(|panic| Error::Format {
                    path: path.into(),
                    what: format!("not a valid tokenizer.json: {panic}"),
                })?;
            Some(parsed.map_err(|e| Error::Format {
                path: path.into(),
                what: not_a_tokenizer(&bytes, &e.to_string()),
            })?)
        };
        Ok(RawTokenizer {
            inner,
            key,
            path: path.into(),
        })
    }
}

/// Why `bytes` is not a tokenizer: JSON that is not one (another model file, a config)
/// says what it lacks, rather than the parser's complaint about a field it did not expect.
fn not_a_tokenizer(bytes: &[u8], parser: &str) -> String {
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(serde_json::Value::Object(map)) if !map.contains_key("model") => {
            let mut keys: Vec<&str> = map.keys().map(String::as_str).take(5).collect();
            if map.len() > 5 {
                keys.push("…");
            }
            format!(
                "not a valid tokenizer.json: expected a Hugging Face tokenizer (an object with \
                 \"model\"), found an object with keys {}",
                keys.join(", ")
            )
        }
        Ok(serde_json::Value::Object(_)) => format!("not a valid tokenizer.json: {parser}"),
        Ok(other) => format!(
            "not a valid tokenizer.json: expected a JSON object, found {}",
            crate::io::json_kind(&other)
        ),
        Err(e) => format!("not a valid tokenizer.json: not JSON ({e})"),
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

    /// Apply the padding and truncation policy to a parsed tokenizer, or take the one this
    /// process already made from the same content and `max_length`.
    pub fn from_raw(raw: RawTokenizer, max_length: usize, pad_id: u32) -> Result<Self> {
        if max_length < 2 {
            return Err(Error::parameter("max_length", "at least 2", max_length));
        }
        let RawTokenizer { inner, key, path } = raw;
        // The kept tokenizer of this content with `max_length` (any `max_length` if `None`).
        let find = |kept: &[(ContentKey, usize, Arc<Tokenizer>)], m: Option<usize>| {
            kept.iter()
                .find(|(k, km, _)| *k == key && m.is_none_or(|m| m == *km))
                .map(|(_, _, t)| Arc::clone(t))
        };
        // Bound first: a guard in the match's scrutinee would be held through its arms.
        let shared = find(&kept(), Some(max_length));
        let inner = match shared {
            Some(shared) => shared,
            None => {
                // Parsed now, or kept with another max_length (a copy costs about half a
                // parse). Kept entries are never removed, so `read` saw one if it skipped.
                let parsed = match inner {
                    Some(parsed) => parsed,
                    None => find(&kept(), None)
                        .map(|t| Tokenizer::clone(&t))
                        .ok_or_else(|| Error::Format {
                            path: path.clone(),
                            what: "the tokenizer parsed earlier from this content is gone".into(),
                        })?,
                };
                let made = Arc::new(Self::with_policy(parsed, &path, max_length)?);
                let mut kept = kept();
                // Another thread may have made the same one meanwhile: then share theirs.
                find(&kept, Some(max_length)).unwrap_or_else(|| {
                    kept.push((key, max_length, Arc::clone(&made)));
                    made
                })
            }
        };
        Ok(TextTokenizer {
            inner,
            path,
            max_length,
            pad_id,
        })
    }

    /// No padding (batches pad themselves) and truncation to `max_length` tokens in all.
    fn with_policy(mut inner: Tokenizer, path: &Path, max_length: usize) -> Result<Tokenizer> {
        inner.with_padding(None);
        // The tokenizer truncates the text to max_length minus its special tokens (and
        // underflows when they alone exceed it).
        let specials = inner
            .get_post_processor()
            .map_or(0, |p| tokenizers::PostProcessor::added_tokens(p, false));
        // Equal would leave no room for text: every text would be its special tokens alone,
        // and every embedding the same.
        if max_length <= specials {
            return Err(Error::parameter(
                "max_length",
                format!(
                    "more than the {specials} special tokens {} adds to every text (room for \
                     at least one token of text)",
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
        Ok(inner)
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Size of the vocabulary, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// One more than the largest token id the tokenizer can produce (its vocabulary and
    /// added tokens): the embedding rows it needs, which is more than [`Self::vocab_size`]
    /// when its ids have gaps.
    pub fn id_bound(&self) -> usize {
        self.inner
            .get_vocab(true)
            .values()
            .map(|&id| id as usize + 1)
            .max()
            .unwrap_or(0)
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
    pad_to(seqs, pad_id, 0)
}

/// [`pad`] to at least `t` positions.
pub fn pad_to(seqs: &[Vec<u32>], pad_id: u32, t: usize) -> TokenBatch {
    let b = seqs.len();
    let t = seqs.iter().map(Vec::len).max().unwrap_or(0).max(t);
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

#[cfg(all(test, feature = "distill"))]
mod tests {
    use super::*;
    use crate::distill::export::tiny_tokenizer_json;

    #[test]
    fn the_same_content_is_parsed_once_per_max_length() {
        let dir = tempfile::tempdir().unwrap();
        // Content no other test uses (the kept list is the process's): a trailing newline.
        let json = format!("{}\n", tiny_tokenizer_json());
        let (a, b) = (dir.path().join("a.json"), dir.path().join("b.json"));
        std::fs::write(&a, &json).unwrap();
        std::fs::write(&b, &json).unwrap();
        let first = TextTokenizer::from_file(&a, 4, 0).unwrap();
        // A copy elsewhere shares the parsed tokenizer, and names its own path.
        let raw = RawTokenizer::read(&b).unwrap();
        assert!(raw.inner.is_none(), "the same content was parsed again");
        let copy = TextTokenizer::from_raw(raw, 4, 0).unwrap();
        assert!(Arc::ptr_eq(&first.inner, &copy.inner));
        assert_eq!(copy.path, b);
        // Another max_length gets its own truncation, from a copy of the kept one.
        let longer = TextTokenizer::from_file(&b, 6, 0).unwrap();
        assert!(!Arc::ptr_eq(&first.inner, &longer.inner));
        let text = "e0 e1 e2 e3 e4 e5 e6";
        assert_eq!(first.encode_ids(text).unwrap().len(), 4);
        assert_eq!(longer.encode_ids(text).unwrap().len(), 6);
        assert_eq!(
            first.encode_ids(text).unwrap(),
            longer.encode_ids(text).unwrap()[..3]
                .iter()
                .chain(&longer.encode_ids(text).unwrap()[5..])
                .copied()
                .collect::<Vec<_>>(),
            "truncation keeps the specials"
        );
        // Both agree with a tokenizer parsed afresh, with the tokenizers crate's own policy.
        let mut fresh = Tokenizer::from_file(&a).unwrap();
        fresh.with_padding(None);
        fresh
            .with_truncation(Some(TruncationParams {
                max_length: 6,
                ..TruncationParams::default()
            }))
            .unwrap();
        assert_eq!(
            fresh.encode(text, true).unwrap().get_ids(),
            longer.encode_ids(text).unwrap()
        );
        // Changed content is parsed (and checked) again.
        std::fs::write(&b, "{\"model\": 3}").unwrap();
        let err = RawTokenizer::read(&b).err().unwrap().to_string();
        assert!(err.contains("not a valid tokenizer.json"), "{err}");
    }

    /// A batch edited out of its shape is an error naming the part, not a panic in burn.
    #[test]
    fn a_token_batch_of_the_wrong_shape_is_an_error() {
        let device = burn::prelude::Device::flex();
        let good = TokenBatch {
            ids: vec![1, 2, 3, 4, 0, 0],
            mask: vec![1.0, 1.0, 1.0, 1.0, 0.0, 0.0],
            lengths: vec![3, 1],
            b: 2,
            t: 3,
        };
        let (ids, mask) = good.tensors(&device).unwrap();
        assert_eq!(ids.dims(), [2, 3]);
        assert_eq!(mask.dims(), [2, 3]);
        let mut short_ids = good.clone();
        short_ids.ids.pop();
        let mut long_mask = good.clone();
        long_mask.mask.push(1.0);
        let mut lengths = good.clone();
        lengths.lengths.push(2);
        let mut wide = good.clone();
        wide.t = usize::MAX;
        for (batch, want) in [
            (short_ids, "token batch ids"),
            (long_mask, "token batch mask"),
            (
                lengths,
                "expected shape (2,), one length per sequence, found (3,)",
            ),
            (wide, "token batch ids"),
        ] {
            let err = batch.tensors(&device).err().unwrap().to_string();
            assert!(err.contains(want), "expected {want:?} in {err}");
        }
    }
}
