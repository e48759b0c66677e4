//! The boundary between text encoders and search: an [`Encoder`] turns texts into pooled
//! vectors (dense search) or token vectors (MaxSim). The transformer encoders of
//! `crate::encoder` plug in by implementing this trait; [`HashingEncoder`] is a
//! model-free lexical baseline (hashed character n-grams) that lets every pipeline run
//! end to end without weights.
//!
//! [`encode_pooled_cached`] stores pooled vectors under the cache directory keyed by the
//! encoder's fingerprint and the exact texts, so a second evaluation with the same model,
//! data and settings skips encoding, and any change rebuilds.

use std::path::{Path, PathBuf};

use crate::backend::BackendKind;
use crate::error::{Error, Result};
use crate::io::npy;

/// Token vectors of several texts packed back to back: text `i` owns `lengths[i]` rows.
#[derive(Clone, Debug)]
pub struct TokenVectors {
    pub d: usize,
    pub data: Vec<f32>,
    pub lengths: Vec<usize>,
}

/// Which side of a retrieval task a text is on. Encoders that tell the two apart (e5's
/// `query: ` and `passage: ` prefixes) encode them differently; the others ignore it.
/// Symmetric tasks (bitext: a sentence against its translations) encode both sides as
/// queries, asymmetric ones (LAReQA: questions against answer sentences) their candidates
/// as passages, as e5's model card says.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum TextRole {
    #[default]
    Query,
    Passage,
}

impl TextRole {
    pub fn name(self) -> &'static str {
        match self {
            TextRole::Query => "query",
            TextRole::Passage => "passage",
        }
    }
}

impl std::str::FromStr for TextRole {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "query" => Ok(TextRole::Query),
            "passage" => Ok(TextRole::Passage),
            other => Err(Error::parameter("text kind", "query or passage", other)),
        }
    }
}

/// A text encoder as search sees it.
pub trait Encoder: Send + Sync {
    /// Name used in reports and run tags (no whitespace).
    fn name(&self) -> &str;
    /// Output dimension.
    fn dim(&self) -> usize;
    /// Identifies the weights and every setting that changes the output (cache key).
    fn fingerprint(&self) -> String;
    /// One pooled vector per text, row-major `(texts.len(), dim)`; need not be normalised.
    fn encode_pooled(&self, texts: &[&str], role: TextRole) -> Result<Vec<f32>>;
    /// Token vectors per text (at least one row each).
    fn encode_tokens(&self, texts: &[&str], role: TextRole) -> Result<TokenVectors>;
    /// Whether pooled vectors are worth caching on disk (false for encoders cheaper than
    /// reading the cache back).
    fn cacheable(&self) -> bool {
        true
    }
    /// Whether a text's vector depends on its [`TextRole`] (e5: yes; MiniLM, which has no
    /// prefixes, and the hashing encoder: no), so that the cache can share the entries.
    fn distinguishes_roles(&self) -> bool {
        true
    }
}

/// Hashed character n-grams: each word (whitespace-separated, lower-cased, wrapped in
/// `^…$`) contributes its character `n`-grams for `n` in `2..=4`, hashed (FNV-1a) into
/// `dim` buckets with a hashed sign. The pooled vector is the sum over words; the token
/// vectors are the per-word sums (at most `max_tokens` words). Lexical overlap only: a
/// floor that any multilingual model must beat, and a stand-in while no model is loaded.
#[derive(Clone, Debug)]
pub struct HashingEncoder {
    pub dim: usize,
    pub max_tokens: usize,
}

impl Default for HashingEncoder {
    fn default() -> Self {
        HashingEncoder {
            dim: 384,
            max_tokens: 64,
        }
    }
}

impl HashingEncoder {
    fn add_word(&self, word: &str, out: &mut [f32]) {
        let chars: Vec<char> = std::iter::once('^')
            .chain(word.chars().flat_map(char::to_lowercase))
            .chain(std::iter::once('$'))
            .collect();
        for n in 2..=4 {
            for w in chars.windows(n) {
                let mut h: u64 = 0xcbf2_9ce4_8422_2325;
                for &c in w {
                    for b in (c as u32).to_le_bytes() {
                        h ^= b as u64;
                        h = h.wrapping_mul(0x0100_0000_01b3);
                    }
                }
                let bucket = (h % self.dim as u64) as usize;
                let sign = if (h >> 63) == 0 { 1.0 } else { -1.0 };
                out[bucket] += sign;
            }
        }
    }
}

impl Encoder for HashingEncoder {
    fn name(&self) -> &str {
        "hash"
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn fingerprint(&self) -> String {
        format!("hash-ngram2-4-fnv1a-d{}-t{}", self.dim, self.max_tokens)
    }

    fn cacheable(&self) -> bool {
        false
    }

    fn distinguishes_roles(&self) -> bool {
        false
    }

    fn encode_pooled(&self, texts: &[&str], _role: TextRole) -> Result<Vec<f32>> {
        if self.dim == 0 {
            return Err(Error::parameter("dim", "at least 1", 0));
        }
        let mut out = vec![0.0f32; texts.len() * self.dim];
        for (t, row) in texts.iter().zip(out.chunks_exact_mut(self.dim)) {
            for w in t.split_whitespace() {
                self.add_word(w, row);
            }
        }
        Ok(out)
    }

    fn encode_tokens(&self, texts: &[&str], _role: TextRole) -> Result<TokenVectors> {
        if self.dim == 0 {
            return Err(Error::parameter("dim", "at least 1", 0));
        }
        let mut data = Vec::new();
        let mut lengths = Vec::with_capacity(texts.len());
        for t in texts {
            let words: Vec<&str> = t.split_whitespace().take(self.max_tokens).collect();
            let words = if words.is_empty() { vec![""] } else { words };
            for w in &words {
                let mut row = vec![0.0f32; self.dim];
                self.add_word(w, &mut row);
                data.extend_from_slice(&row);
            }
            lengths.push(words.len());
        }
        Ok(TokenVectors {
            d: self.dim,
            data,
            lengths,
        })
    }
}

/// The built-in encoders by name (`--model`). Transformer encoders register here when
/// they land.
pub fn builtin(name: &str) -> Result<Box<dyn Encoder>> {
    builtin_with(name, None, FORWARD_BATCH, BackendKind::Cpu)
}

/// Texts per forward pass of a transformer encoder, unless the caller says otherwise.
pub const FORWARD_BATCH: usize = 32;

/// [`builtin`] with the transformers' truncation length set to `max_length` tokens
/// (specials included; `None`: the model's own limit), `forward_batch` texts per forward
/// pass, the transformers running on `backend`'s burn device (the CPU choices both use
/// burn's CPU device; `cuda` without the `burn-cuda` feature runs them on the CPU too, with
/// a note).
pub fn builtin_with(
    name: &str,
    max_length: Option<usize>,
    forward_batch: usize,
    backend: BackendKind,
) -> Result<Box<dyn Encoder>> {
    #[cfg(feature = "encoder")]
    return builtin_sharing(name, max_length, forward_batch, backend, None);
    #[cfg(not(feature = "encoder"))]
    {
        let _ = (max_length, forward_batch, backend);
        match name {
            "hash" => Ok(Box::new(HashingEncoder::default())),
            _ => Err(unknown_model(name)),
        }
    }
}

/// [`builtin_with`], a transformer sharing the states after its frozen prefix through
/// `shared` ([`crate::encoder::prefix`]).
#[cfg(feature = "encoder")]
pub fn builtin_sharing(
    name: &str,
    max_length: Option<usize>,
    forward_batch: usize,
    backend: BackendKind,
    shared: Option<crate::encoder::prefix::SharedPrefix>,
) -> Result<Box<dyn Encoder>> {
    let transformer = |spec: &str| transformer(spec, max_length, forward_batch, backend, shared);
    match name {
        "hash" => Ok(Box::new(HashingEncoder::default())),
        "minilm" | "e5-small" => transformer(name),
        path if Path::new(path).exists() => transformer(path),
        _ => Err(unknown_model(name)),
    }
}

/// `name` is a model [`builtin_with`] can load (a known name, or a path that is there):
/// checked before anything loads, so that a misspelt model fails in milliseconds.
pub fn check_model_name(name: &str) -> Result<()> {
    let transformer = cfg!(feature = "encoder")
        && (matches!(name, "minilm" | "e5-small") || Path::new(name).exists());
    if name == "hash" || transformer {
        Ok(())
    } else {
        Err(unknown_model(name))
    }
}

fn unknown_model(name: &str) -> Error {
    Error::parameter(
        "model",
        "a known encoder (hash, minilm, e5-small) or the path of a model directory",
        name,
    )
}

/// A transformer encoder (`crate::encoder`) on `backend`'s device, mean pooling,
/// normalised.
#[cfg(feature = "encoder")]
fn transformer(
    spec: &str,
    max_length: Option<usize>,
    forward_batch: usize,
    backend: BackendKind,
    shared_prefix: Option<crate::encoder::prefix::SharedPrefix>,
) -> Result<Box<dyn Encoder>> {
    use crate::encoder::{EncoderOptions, TextEncoder};
    let spec: crate::encoder::ModelSpec = spec.parse()?;
    let options = EncoderOptions {
        max_length,
        batch_size: forward_batch,
        shared_prefix,
        ..EncoderOptions::default()
    };
    // Without burn's CUDA device (feature `burn-cuda`), `--backend cuda` still runs MaxSim
    // on the project's PTX kernels; the transformers then run on the CPU.
    let device = if matches!(backend, BackendKind::Cuda) && !cfg!(feature = "burn-cuda") {
        errln!(
            "note: this build has no burn CUDA device (feature burn-cuda); {} runs on the CPU",
            spec
        );
        burn::prelude::Device::flex()
    } else {
        crate::encoder::device_for(backend)?
    };
    let encoder = TextEncoder::load(&spec, device, &options)?;
    Ok(Box::new(encoder))
}

#[cfg(feature = "encoder")]
impl Encoder for crate::encoder::TextEncoder {
    fn name(&self) -> &str {
        &self.name
    }

    fn dim(&self) -> usize {
        self.hidden_size()
    }

    /// The device is part of it: vectors computed on another backend differ in their last
    /// bits (and were timed there), so `--backend` always measures what it names.
    fn fingerprint(&self) -> String {
        format!(
            "{}-{}-{:?}-{:?}-on-{}",
            self.name,
            self.tokenizer.max_length(),
            self.query_prefix,
            self.passage_prefix,
            self.device_tag()
        )
    }

    /// Models loaded from a path may be retrained in place; never cache them.
    fn cacheable(&self) -> bool {
        matches!(self.name.as_str(), "minilm" | "e5-small")
    }

    fn distinguishes_roles(&self) -> bool {
        self.query_prefix != self.passage_prefix
    }

    fn encode_pooled(&self, texts: &[&str], role: TextRole) -> Result<Vec<f32>> {
        self.embed(texts, role, crate::encoder::pooling::Pooling::Mean, true)
    }

    fn encode_tokens(&self, texts: &[&str], role: TextRole) -> Result<TokenVectors> {
        let t = self.token_embeddings(texts, role)?;
        Ok(TokenVectors {
            d: t.h,
            data: t.data,
            lengths: t.lengths,
        })
    }
}

/// An encoder under an identity its caller vouches for: `name` in reports and a
/// `fingerprint` that changes whenever the weights do (e.g. the key of the training run
/// that produced them), so that vectors of a model loaded from a path can be cached.
pub struct Fingerprinted<'a> {
    pub inner: &'a dyn Encoder,
    pub name: String,
    pub fingerprint: String,
}

impl Encoder for Fingerprinted<'_> {
    fn name(&self) -> &str {
        &self.name
    }

    fn dim(&self) -> usize {
        self.inner.dim()
    }

    fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }

    fn distinguishes_roles(&self) -> bool {
        self.inner.distinguishes_roles()
    }

    fn encode_pooled(&self, texts: &[&str], role: TextRole) -> Result<Vec<f32>> {
        self.inner.encode_pooled(texts, role)
    }

    fn encode_tokens(&self, texts: &[&str], role: TextRole) -> Result<TokenVectors> {
        self.inner.encode_tokens(texts, role)
    }
}

/// An encoder that remembers the pooled vector of every text it has encoded, for the
/// lifetime of one command: a bitext is evaluated in both directions, so each side is
/// encoded once instead of twice (the disk cache does the same across commands, but only
/// for built-in models). Token vectors are passed through.
pub struct Memoized<'a> {
    pub inner: &'a dyn Encoder,
    /// Per role, text → pooled vector (looked up by `&str`, no key allocated per text).
    seen: std::sync::Mutex<
        std::collections::HashMap<TextRole, std::collections::HashMap<String, Vec<f32>>>,
    >,
}

impl<'a> Memoized<'a> {
    pub fn new(inner: &'a dyn Encoder) -> Self {
        Memoized {
            inner,
            seen: Default::default(),
        }
    }
}

impl Encoder for Memoized<'_> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn dim(&self) -> usize {
        self.inner.dim()
    }

    fn fingerprint(&self) -> String {
        self.inner.fingerprint()
    }

    fn cacheable(&self) -> bool {
        self.inner.cacheable()
    }

    fn distinguishes_roles(&self) -> bool {
        self.inner.distinguishes_roles()
    }

    fn encode_pooled(&self, texts: &[&str], role: TextRole) -> Result<Vec<f32>> {
        let d = self.dim();
        let mut all = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let seen = all.entry(role).or_default();
        let mut missing: Vec<&str> = texts
            .iter()
            .copied()
            .filter(|t| !seen.contains_key(*t))
            .collect();
        missing.sort_unstable();
        missing.dedup();
        if !missing.is_empty() {
            let v = self.inner.encode_pooled(&missing, role)?;
            if v.len() != missing.len() * d {
                return Err(Error::shape(
                    "pooled vectors",
                    format!("{} × {d}", missing.len()),
                    v.len().to_string(),
                ));
            }
            for (t, row) in missing.iter().zip(v.chunks_exact(d)) {
                seen.insert(t.to_string(), row.to_vec());
            }
        }
        Ok(texts
            .iter()
            .flat_map(|t| seen[*t].iter().copied())
            .collect())
    }

    fn encode_tokens(&self, texts: &[&str], role: TextRole) -> Result<TokenVectors> {
        self.inner.encode_tokens(texts, role)
    }
}

/// FNV-1a over a sequence of byte strings, with separators, as a hex cache key.
fn content_key<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut h2: u64 = 0x6c62_272e_07bb_0142;
    for p in parts {
        for &b in p.iter().chain(&[0xff]) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
            h2 = (h2 ^ b as u64)
                .wrapping_mul(0x0000_0100_0000_01b3)
                .rotate_left(5);
        }
    }
    format!("{h:016x}{h2:016x}")
}

/// Pooled vectors of `texts` on side `role`, encoded in batches of `batch` with progress
/// on stderr, and cached in `cache` (when given) as `<fingerprint-key>.npy` (the role is
/// part of the key for passages; queries keep the key they had before roles existed).
pub fn encode_pooled_cached(
    encoder: &dyn Encoder,
    texts: &[&str],
    role: TextRole,
    batch: usize,
    cache: Option<&Path>,
    label: &str,
) -> Result<Vec<f32>> {
    let d = encoder.dim();
    let fp = match role {
        TextRole::Passage if encoder.distinguishes_roles() => {
            format!("{}-as-passage", encoder.fingerprint())
        }
        _ => encoder.fingerprint(),
    };
    let key = content_key(std::iter::once(fp.as_bytes()).chain(texts.iter().map(|t| t.as_bytes())));
    let file: Option<PathBuf> = cache
        .filter(|_| encoder.cacheable())
        .map(|c| c.join(format!("{key}.npy")));
    if let Some(f) = &file {
        // A cache file that cannot be read whole (written by an older build that did not
        // write through a temporary file and was killed, or damaged since) is a miss: the
        // texts are encoded again and the file replaced.
        if let Ok(arr) = npy::read(f) {
            if arr.shape == [texts.len(), d] {
                return Ok(arr.to_f32());
            }
        }
    }
    let mut out = Vec::with_capacity(texts.len() * d);
    let batch = batch.max(1);
    let total = texts.len();
    for (i, chunk) in texts.chunks(batch).enumerate() {
        let v = encoder.encode_pooled(chunk, role)?;
        if v.len() != chunk.len() * d {
            return Err(Error::Backend {
                backend: "encoder",
                operation: "encode_pooled",
                what: format!(
                    "{} returned {} values for {} texts of dimension {d}",
                    encoder.name(),
                    v.len(),
                    chunk.len()
                ),
            });
        }
        out.extend_from_slice(&v);
        let done = ((i + 1) * batch).min(total);
        if total > batch && (i % 16 == 15 || done == total) {
            errln!("encode {label}: {done}/{total}");
        }
    }
    if let Some(f) = &file {
        // Through a temporary file, so that a killed process or a full disk never leaves a
        // truncated entry for the next run to read. The cache only saves time: a failure to
        // write it (a full disk) is said and the embeddings, computed, are used.
        let written = match f.parent() {
            Some(dir) => std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, "create", e)),
            None => Ok(()),
        }
        .and_then(|()| {
            crate::io::write_through_temp(f, |tmp| npy::write(tmp, &[texts.len(), d], &out))
        });
        // Said once per process: every later entry would fail the same way.
        static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if let Err(e) = written {
            if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                errln!("warning: the embedding cache was not written ({e}); going on without it");
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn a_damaged_cache_entry_is_a_miss_and_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        // Counts the texts it encodes.
        let e = Counting(HashingEncoder::default(), Default::default());
        let calls = || e.1.load(std::sync::atomic::Ordering::Relaxed);
        let texts = ["a b", "c d", "e f"];
        let first =
            encode_pooled_cached(&e, &texts, TextRole::Query, 2, Some(dir.path()), "t").unwrap();
        assert_eq!(calls(), 3);
        let entries: Vec<PathBuf> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|d| d.unwrap().path())
            .collect();
        assert_eq!(entries.len(), 1, "{entries:?} (no temporary file left)");
        // Served from the cache.
        assert_eq!(
            encode_pooled_cached(&e, &texts, TextRole::Query, 2, Some(dir.path()), "t").unwrap(),
            first
        );
        assert_eq!(calls(), 3);
        // Truncated (a killed writer): encoded again, and the entry is whole afterwards.
        let bytes = std::fs::read(&entries[0]).unwrap();
        std::fs::write(&entries[0], &bytes[..bytes.len() - 5]).unwrap();
        assert_eq!(
            encode_pooled_cached(&e, &texts, TextRole::Query, 2, Some(dir.path()), "t").unwrap(),
            first
        );
        assert_eq!(calls(), 6);
        assert_eq!(std::fs::read(&entries[0]).unwrap(), bytes);
        assert_eq!(
            encode_pooled_cached(&e, &texts, TextRole::Query, 2, Some(dir.path()), "t").unwrap(),
            first
        );
        assert_eq!(calls(), 6);
    }

    #[test]
    fn hashing_encoder_shapes_and_similarity() {
        let e = HashingEncoder::default();
        let v = e
            .encode_pooled(
                &["the red house", "The red house", "quantum flux"],
                TextRole::Query,
            )
            .unwrap();
        assert_eq!(v.len(), 3 * e.dim);
        let cos = |a: &[f32], b: &[f32]| {
            let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
            let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
            let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
            dot / (na * nb)
        };
        let (a, b, c) = (&v[..384], &v[384..768], &v[768..]);
        assert!((cos(a, b) - 1.0).abs() < 1e-6, "case-insensitive");
        assert!(cos(a, c) < 0.5);
        let t = e.encode_tokens(&["one two", ""], TextRole::Query).unwrap();
        assert_eq!(t.lengths, vec![2, 1]);
        let empty = HashingEncoder {
            dim: 0,
            ..HashingEncoder::default()
        };
        assert!(empty.encode_pooled(&["a"], TextRole::Query).is_err());
        assert!(empty.encode_tokens(&["a"], TextRole::Query).is_err());
        assert_eq!(t.data.len(), 3 * e.dim);
    }

    /// Counts the texts it encodes; otherwise the hashing encoder.
    struct Counting(HashingEncoder, std::sync::atomic::AtomicUsize);

    impl Encoder for Counting {
        fn name(&self) -> &str {
            "counting"
        }
        fn dim(&self) -> usize {
            self.0.dim
        }
        fn fingerprint(&self) -> String {
            self.0.fingerprint()
        }
        fn encode_pooled(&self, texts: &[&str], _role: TextRole) -> Result<Vec<f32>> {
            self.1
                .fetch_add(texts.len(), std::sync::atomic::Ordering::Relaxed);
            self.0.encode_pooled(texts, _role)
        }
        fn encode_tokens(&self, texts: &[&str], _role: TextRole) -> Result<TokenVectors> {
            self.0.encode_tokens(texts, _role)
        }
    }

    /// [`Counting`] for an encoder whose vectors do not depend on the role.
    struct SameForBoth(Counting);

    impl Encoder for SameForBoth {
        fn name(&self) -> &str {
            "same"
        }
        fn dim(&self) -> usize {
            self.0.dim()
        }
        fn fingerprint(&self) -> String {
            "same-for-both".into()
        }
        fn distinguishes_roles(&self) -> bool {
            false
        }
        fn encode_pooled(&self, texts: &[&str], role: TextRole) -> Result<Vec<f32>> {
            self.0.encode_pooled(texts, role)
        }
        fn encode_tokens(&self, texts: &[&str], role: TextRole) -> Result<TokenVectors> {
            self.0.encode_tokens(texts, role)
        }
    }

    /// The hashing encoder, recording the texts and the role of each call.
    #[derive(Default)]
    pub(crate) struct Recording(
        pub HashingEncoder,
        pub std::sync::Mutex<Vec<(Vec<String>, TextRole)>>,
    );

    impl Recording {
        fn record(&self, texts: &[&str], role: TextRole) {
            let texts = texts.iter().map(|t| t.to_string()).collect();
            self.1.lock().unwrap().push((texts, role));
        }

        /// The role of each call, in order.
        pub(crate) fn roles(&self) -> Vec<TextRole> {
            self.1.lock().unwrap().iter().map(|(_, r)| *r).collect()
        }

        /// The role `text` was first encoded in.
        pub(crate) fn role_of(&self, text: &str) -> Option<TextRole> {
            let calls = self.1.lock().unwrap();
            calls
                .iter()
                .find(|(texts, _)| texts.iter().any(|t| t == text))
                .map(|(_, r)| *r)
        }
    }

    impl Encoder for Recording {
        fn name(&self) -> &str {
            "recording"
        }
        fn dim(&self) -> usize {
            self.0.dim
        }
        fn fingerprint(&self) -> String {
            "recording".into()
        }
        fn encode_pooled(&self, texts: &[&str], role: TextRole) -> Result<Vec<f32>> {
            self.record(texts, role);
            self.0.encode_pooled(texts, role)
        }
        fn encode_tokens(&self, texts: &[&str], role: TextRole) -> Result<TokenVectors> {
            self.record(texts, role);
            self.0.encode_tokens(texts, role)
        }
    }

    #[test]
    fn memoized_vectors_are_kept_per_role() {
        let inner = Recording::default();
        let memo = Memoized::new(&inner);
        memo.encode_pooled(&["a b", "c"], TextRole::Query).unwrap();
        memo.encode_pooled(&["a b", "c"], TextRole::Query).unwrap();
        memo.encode_pooled(&["a b", "c"], TextRole::Passage)
            .unwrap();
        memo.encode_pooled(&["c"], TextRole::Passage).unwrap();
        memo.encode_tokens(&["c"], TextRole::Passage).unwrap();
        assert_eq!(
            inner.roles(),
            [TextRole::Query, TextRole::Passage, TextRole::Passage]
        );
    }

    #[test]
    fn pooled_vectors_are_cached_until_the_texts_change() {
        let dir = tempfile::tempdir().unwrap();
        let e = Counting(HashingEncoder::default(), Default::default());
        let count = || e.1.load(std::sync::atomic::Ordering::Relaxed);
        let texts = ["a b", "c d", "e"];
        let first =
            encode_pooled_cached(&e, &texts, TextRole::Query, 2, Some(dir.path()), "t").unwrap();
        assert_eq!(count(), 3);
        let again =
            encode_pooled_cached(&e, &texts, TextRole::Query, 2, Some(dir.path()), "t").unwrap();
        assert_eq!(count(), 3, "second call reads the cache");
        assert_eq!(first, again);
        encode_pooled_cached(
            &e,
            &["a b", "c d", "f"],
            TextRole::Query,
            2,
            Some(dir.path()),
            "t",
        )
        .unwrap();
        assert_eq!(count(), 6, "changed text re-encodes");
        // The same texts as passages are another entry; as queries, the key is the one made
        // before roles existed (the fingerprint and the texts alone).
        encode_pooled_cached(&e, &texts, TextRole::Passage, 2, Some(dir.path()), "t").unwrap();
        assert_eq!(count(), 9, "passages are not the queries' vectors");
        let old_key = content_key(
            std::iter::once(e.fingerprint().as_bytes()).chain(texts.iter().map(|t| t.as_bytes())),
        );
        assert!(dir.path().join(format!("{old_key}.npy")).is_file());
        // An encoder whose vectors do not depend on the role shares the queries' entries.
        let same = SameForBoth(Counting(HashingEncoder::default(), Default::default()));
        encode_pooled_cached(&same, &texts, TextRole::Query, 2, Some(dir.path()), "t").unwrap();
        encode_pooled_cached(&same, &texts, TextRole::Passage, 2, Some(dir.path()), "t").unwrap();
        assert_eq!(same.0 .1.load(std::sync::atomic::Ordering::Relaxed), 3);
        // The hashing encoder itself is not cached.
        let before = std::fs::read_dir(dir.path()).unwrap().count();
        encode_pooled_cached(&e.0, &["zz"], TextRole::Query, 2, Some(dir.path()), "t").unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), before);
    }

    /// The same model on another device is another cache entry: its vectors differ in the
    /// last bits, and `--backend` must measure the backend it names.
    #[cfg(all(feature = "distill", feature = "wgpu"))]
    #[test]
    fn a_model_on_another_device_has_another_fingerprint() {
        use crate::encoder::{EncoderOptions, ModelSpec, TextEncoder};
        let dir = tempfile::tempdir().unwrap();
        let path = crate::distill::export::write_tiny_model(dir.path(), "m", 3).unwrap();
        let spec: ModelSpec = path.display().to_string().parse().unwrap();
        let mut e = TextEncoder::load(
            &spec,
            burn::prelude::Device::flex(),
            &EncoderOptions::default(),
        )
        .unwrap();
        let on_cpu = e.fingerprint();
        assert!(
            on_cpu.ends_with(&format!("-on-{}", e.device_tag())),
            "{on_cpu}"
        );
        // Not used, so no adapter is needed: the fingerprint reads the device's identity.
        e.device = burn::prelude::Device::wgpu(burn::tensor::DeviceKind::DefaultDevice);
        assert_ne!(e.fingerprint(), on_cpu);
        e.device = burn::prelude::Device::flex();
        assert_eq!(e.fingerprint(), on_cpu, "the same device, the same entry");
    }

    #[test]
    fn cache_keys_change_with_content() {
        assert_ne!(
            content_key([&b"a"[..], b"bc"]),
            content_key([&b"ab"[..], b"c"])
        );
        assert_eq!(content_key([&b"a"[..]]), content_key([&b"a"[..]]));
    }
}
