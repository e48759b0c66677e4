//! Hidden states after a frozen prefix of layers, shared between encoders whose prefix is
//! the same, bit for bit.
//!
//! A distilled student keeps its base model's embeddings and lowest layers frozen (the
//! default trains layers 10 and 11 of twelve), so when a study evaluates the base model and
//! then each of its students on the same texts, every evaluation recomputes the same states
//! after the frozen prefix. An encoder loaded with a [`SharedPrefix`] takes those states
//! from a process-wide [`PrefixStates`] when another encoder with the same prefix has
//! computed them, and runs only the layers above it.
//!
//! Whether two prefixes are the same is decided from the weights themselves, never from a
//! setting: the prefix's identity is a 128-bit XXH3 digest of every parameter of the
//! embeddings and of layers `0..k` (names, shapes and bytes), the architecture and the
//! device. A student whose frozen layers were changed after all (a different `freeze_layers`,
//! weights edited by hand) gets another identity and simply computes everything.
//!
//! The states are taken only for a batch that recurs whole: the same texts, in the same
//! order (every evaluation of a study, and every model of one `optical eval`, forms its
//! batches from the same sets in the same way). A text's rows depend in their last bits on
//! the other texts of its batch (the shapes of the matrix products, the padded length), so
//! states computed in one batch never stand in for another's, and the results are the same
//! bits as without sharing (`tests/encoder_parity.rs` checks it on MiniLM).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use rayon::prelude::*;
use xxhash_rust::xxh3::{xxh3_128, Xxh3};

use super::config::EncoderConfig;
use super::weights::{expected_parameters, Weights};

/// States after a frozen prefix, by prefix identity and batch, up to a memory limit
/// (past it new states are not kept; encoders then compute them as if nothing were
/// shared).
pub struct PrefixStates {
    limit_bytes: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The prefix identities of every encoder that joined ([`PrefixShare`]).
    members: Vec<Vec<u128>>,
    bytes: usize,
    /// Per prefix identity, per batch ([`batch_key`]): the batch's real rows, text by text.
    by_prefix: HashMap<u128, HashMap<Vec<u32>, Arc<[f32]>>>,
    reused: u64,
    computed: u64,
}

/// What a [`PrefixStates`] has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrefixStats {
    /// Texts whose prefix states were taken from the store.
    pub reused: u64,
    /// Texts whose prefix states were computed (and kept, memory allowing).
    pub computed: u64,
    /// Bytes of states held.
    pub bytes: usize,
}

impl PrefixStates {
    /// An empty store that keeps at most `limit_bytes` of states.
    pub fn new(limit_bytes: usize) -> Arc<Self> {
        Arc::new(PrefixStates {
            limit_bytes,
            inner: Mutex::new(Inner::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves whole entries only (each insert
        // is one map operation), so the data is still good.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Add an encoder with the prefix identities `chain`; its number.
    fn join(&self, chain: Vec<u128>) -> usize {
        let mut inner = self.lock();
        inner.members.push(chain);
        inner.members.len() - 1
    }

    /// The deepest prefix, at least the embeddings and one layer, that `member` (with
    /// `chain`) has in common with another member.
    fn deepest_common(&self, member: usize, chain: &[u128]) -> Option<usize> {
        let inner = self.lock();
        (1..chain.len()).rev().find(|&k| {
            inner
                .members
                .iter()
                .enumerate()
                .any(|(m, other)| m != member && other.get(k) == Some(&chain[k]))
        })
    }

    /// The states of the batch `seqs` under `identity`: the real rows of each text in
    /// turn, `(Σ len, h)`.
    pub(crate) fn take(&self, identity: u128, seqs: &[Vec<u32>]) -> Option<Arc<[f32]>> {
        let mut inner = self.lock();
        let rows = inner
            .by_prefix
            .get(&identity)?
            .get(&batch_key(seqs))?
            .clone();
        inner.reused += seqs.len() as u64;
        Some(rows)
    }

    /// Keep the states `rows` of the batch `seqs` under `identity` (as [`Self::take`] gives
    /// them back), memory allowing.
    pub(crate) fn keep(&self, identity: u128, seqs: &[Vec<u32>], rows: Vec<f32>) {
        let key = batch_key(seqs);
        let mut inner = self.lock();
        inner.computed += seqs.len() as u64;
        let size = std::mem::size_of_val(&rows[..]) + std::mem::size_of_val(&key[..]);
        if inner.bytes + size > self.limit_bytes {
            return;
        }
        let map = inner.by_prefix.entry(identity).or_default();
        if map.contains_key(&key) {
            return;
        }
        map.insert(key, Arc::from(rows));
        inner.bytes += size;
    }

    /// Counts so far.
    pub fn stats(&self) -> PrefixStats {
        let inner = self.lock();
        PrefixStats {
            reused: inner.reused,
            computed: inner.computed,
            bytes: inner.bytes,
        }
    }
}

/// How an encoder shares the states after its frozen prefix
/// ([`EncoderOptions::shared_prefix`](super::EncoderOptions::shared_prefix)).
#[derive(Clone)]
pub struct SharedPrefix {
    pub states: Arc<PrefixStates>,
    /// The depth of the prefix: the embeddings and layers `0..layers`. `None`: the deepest
    /// prefix the encoder has in common with another encoder loaded into the same store,
    /// decided when it first encodes (so load every model first, as `optical eval` does);
    /// nothing is shared when no other encoder has at least its embeddings and first layer.
    pub layers: Option<usize>,
}

impl fmt::Debug for SharedPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedPrefix")
            .field("layers", &self.layers)
            .field("stats", &self.states.stats())
            .finish()
    }
}

/// A loaded encoder's part in a [`PrefixStates`].
pub(crate) struct PrefixShare {
    states: Arc<PrefixStates>,
    /// Its number among the store's encoders.
    member: usize,
    /// `chain[k]`: the identity of its prefix of depth `k` (the embeddings and layers
    /// `0..k`), for `k` in `0..=L`.
    chain: Vec<u128>,
    layers: Option<usize>,
    depth: OnceLock<Option<usize>>,
}

impl PrefixShare {
    pub(crate) fn new(shared: &SharedPrefix, chain: Vec<u128>) -> Self {
        let member = shared.states.join(chain.clone());
        PrefixShare {
            states: shared.states.clone(),
            member,
            chain,
            layers: shared.layers,
            depth: OnceLock::new(),
        }
    }

    /// The store, the depth shared and that prefix's identity; `None` when nothing is.
    pub(crate) fn shared(&self) -> Option<(&PrefixStates, usize, u128)> {
        let depth = (*self.depth.get_or_init(|| match self.layers {
            Some(k) => (k < self.chain.len()).then_some(k),
            None => self.states.deepest_common(self.member, &self.chain),
        }))?;
        Some((&self.states, depth, self.chain[depth]))
    }
}

/// A batch as one key: the number of texts, then each text's length and ids.
pub(crate) fn batch_key(seqs: &[Vec<u32>]) -> Vec<u32> {
    let mut key = Vec::with_capacity(1 + seqs.iter().map(|s| s.len() + 1).sum::<usize>());
    key.push(seqs.len() as u32);
    for s in seqs {
        key.push(s.len() as u32);
        key.extend_from_slice(s);
    }
    key
}

/// The real rows of each text of a padded batch `values` `(b, t, h)`, in turn: `(Σ len, h)`.
pub(crate) fn real_rows(values: &[f32], seqs: &[Vec<u32>], t: usize, h: usize) -> Vec<f32> {
    let mut rows = Vec::with_capacity(seqs.iter().map(Vec::len).sum::<usize>() * h);
    for (r, seq) in seqs.iter().enumerate() {
        rows.extend_from_slice(&values[r * t * h..r * t * h + seq.len() * h]);
    }
    rows
}

/// [`real_rows`] back to the padded `(b, t, h)` batch, padding rows zero.
pub(crate) fn padded(rows: &[f32], seqs: &[Vec<u32>], t: usize, h: usize) -> Vec<f32> {
    let mut data = vec![0.0f32; seqs.len() * t * h];
    let mut from = 0;
    for (r, seq) in seqs.iter().enumerate() {
        let n = seq.len() * h;
        data[r * t * h..r * t * h + n].copy_from_slice(&rows[from..from + n]);
        from += n;
    }
    data
}

/// Whether a parameter belongs to block `b` of a model: the embeddings for 0, layer
/// `b − 1` after that.
fn in_block(name: &str, b: usize) -> bool {
    if b == 0 {
        return name.starts_with("embeddings.");
    }
    name.strip_prefix("encoder.layer.")
        .and_then(|rest| rest.split('.').next())
        .and_then(|l| l.parse::<usize>().ok())
        .is_some_and(|l| l + 1 == b)
}

/// The identities of the prefixes of a model with `config` and `weights` on the device
/// `device` (as [`TextEncoder::device_tag`](super::TextEncoder::device_tag) names it):
/// element `k` stands for the embeddings and layers `0..k`, so two models agree on element
/// `k` exactly when their prefixes of depth `k` hold the same weights. `None` when the
/// weights lack a parameter (the model's own validation reports that).
pub(crate) fn prefix_chain(
    config: &EncoderConfig,
    weights: &Weights,
    device: &str,
) -> Option<Vec<u128>> {
    let names: Vec<String> = expected_parameters(config)
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    let digests: Vec<u128> = names
        .par_iter()
        .map(|name| {
            weights
                .tensors
                .get(name)
                .map(|t| xxh3_128(bytemuck::cast_slice(&t.data)))
        })
        .collect::<Option<Vec<u128>>>()?;
    let mut link = xxh3_128(format!("{config:?}|on {device}").as_bytes());
    let mut chain = Vec::with_capacity(config.num_hidden_layers + 1);
    for b in 0..=config.num_hidden_layers {
        let mut h = Xxh3::new();
        h.update(&link.to_le_bytes());
        for (name, digest) in names.iter().zip(&digests).filter(|(n, _)| in_block(n, b)) {
            let shape = &weights.tensors[name].shape;
            h.update(format!("|{name} {shape:?} ").as_bytes());
            h.update(&digest.to_le_bytes());
        }
        link = h.digest128();
        chain.push(link);
    }
    Some(chain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_the_embeddings_then_one_layer_each() {
        assert!(in_block("embeddings.word_embeddings.weight", 0));
        assert!(!in_block("embeddings.word_embeddings.weight", 1));
        assert!(in_block("encoder.layer.9.output.dense.weight", 10));
        assert!(!in_block("encoder.layer.9.output.dense.weight", 9));
        assert!(!in_block("encoder.layer.1x.output.dense.weight", 2));
        assert!(!in_block("pooler.dense.weight", 1));
    }

    #[test]
    fn the_deepest_common_prefix_is_with_another_member() {
        let s = PrefixStates::new(0);
        let base = s.join(vec![1, 2, 3, 4]);
        let student = s.join(vec![1, 2, 3, 9]);
        // (Identities chain: equal at a depth means equal at every depth below it.)
        let stranger = s.join(vec![1, 7, 8, 10]);
        assert_eq!(s.deepest_common(base, &[1, 2, 3, 4]), Some(2));
        assert_eq!(s.deepest_common(student, &[1, 2, 3, 9]), Some(2));
        // It shares only the embeddings (depth 0) with the others: nothing.
        assert_eq!(s.deepest_common(stranger, &[1, 7, 8, 10]), None);
        let twin = s.join(vec![1, 2, 3, 4]);
        assert_eq!(s.deepest_common(twin, &[1, 2, 3, 4]), Some(3));
    }

    #[test]
    fn a_store_gives_back_whole_batches_only_and_keeps_its_limit() {
        let s = PrefixStates::new(64);
        let a = vec![1u32, 2];
        let b = vec![3u32];
        // Key: 6 words (count, then length and ids per text); rows: 3 floats.
        s.keep(7, &[a.clone(), b.clone()], vec![1.0, 2.0, 3.0]);
        assert_eq!(
            &s.take(7, &[a.clone(), b.clone()]).unwrap()[..],
            &[1.0, 2.0, 3.0]
        );
        // Another batch of the same texts, or of a part of them; another prefix.
        assert!(s.take(7, &[b.clone(), a.clone()]).is_none());
        assert!(s.take(7, std::slice::from_ref(&a)).is_none());
        assert!(s.take(8, &[a.clone(), b.clone()]).is_none());
        // 36 bytes held; 4 key words and 7 floats more would pass the limit of 64.
        s.keep(7, std::slice::from_ref(&a), vec![0.0; 7]);
        assert!(s.take(7, std::slice::from_ref(&a)).is_none());
        assert_eq!(
            s.stats(),
            PrefixStats {
                reused: 2,
                computed: 3,
                bytes: 36
            }
        );
    }
}
