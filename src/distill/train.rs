//! The training loop: data order, the step, gradient accumulation and clipping, AdamW,
//! checkpoints (model + optimiser + data position), the per-step log record and the dev
//! evaluation.
//!
//! The step: teacher forward without gradient (token embeddings cached on the host per pair,
//! since the teacher is frozen); student forward on the autodiff device; the loss of
//! [`super::loss`] (for `ot`, the plan from the optical Sinkhorn kernels held constant);
//! backward; global-norm clipping; AdamW with warm-up and linear decay.
//!
//! The data order is a permutation of the training pairs drawn from `seed` and the epoch,
//! so `(seed, epoch, offset)` is the whole RNG state; dropout is off, so a checkpoint of
//! model, optimiser and that position continues bit for bit.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use burn::module::{ModuleVisitor, Param};
use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use burn::store::ModuleRecord;
use serde::{Deserialize, Serialize};

use super::config::DistillConfig;
use super::data::permutation;
use super::ddp::DdpGroup;
use super::loss::{distill_loss, LossKind, LossStats, TokenSide};
use crate::backend::Backend;
use crate::encoder::model::TransformerEncoder;
use crate::encoder::pooling;
use crate::encoder::prefix;
use crate::encoder::tokenizer::{pad, pad_to, TokenBatch};
use crate::encoder::{read_f32, read_scalar};
use crate::error::{Error, Result};

fn burn_error(operation: &'static str, what: impl std::fmt::Debug) -> Error {
    Error::Backend {
        backend: "burn",
        operation,
        what: format!("{what:?}"),
    }
}

/// Which sequences of a pair a cached host state belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Side {
    /// The teacher's output on the English side.
    Teacher,
    /// The student's frozen-prefix state on the other language.
    Student,
    /// The student's frozen-prefix state on the English side.
    StudentEnglish,
}

/// Per-pair token states `(len, h)` kept on the host, up to a byte budget; beyond it,
/// states are recomputed when needed. A sequence's real-token rows do not depend on its
/// batch mathematically (padding keys have exactly zero attention weight), but the matrix
/// products and reductions follow the padded batch's shape, so states computed in another
/// padded batch can differ in their last bits (measured on e5-small: 12 % of the values of
/// a batch of 5 against a batch of 32, by a few ulps). [`host_states`] therefore pads each
/// sequence to a length of its own: cached or recomputed, in a resumed run or an
/// uninterrupted one, a pair's states are the same bits (`tests/distill_train.rs`).
#[derive(Debug, Default)]
pub(super) struct HostCache {
    map: HashMap<(Side, usize), Vec<f32>>,
    /// The student's frozen-prefix states of the dev batches: per batch (its texts' ids,
    /// [`batch_key`](crate::encoder::prefix::batch_key)), each text's real rows in turn.
    dev: HashMap<Vec<u32>, Vec<f32>>,
    bytes: usize,
    budget: usize,
}

impl HostCache {
    pub(super) fn new(budget_mb: usize) -> Self {
        HostCache {
            budget: budget_mb.saturating_mul(1 << 20),
            ..HostCache::default()
        }
    }

    /// Keep `rows` under `key` if the budget allows; otherwise hand them back.
    fn insert(&mut self, key: (Side, usize), rows: Vec<f32>) -> Option<Vec<f32>> {
        let size = rows.len() * std::mem::size_of::<f32>();
        if self.bytes + size > self.budget {
            return Some(rows);
        }
        self.bytes += size;
        self.map.insert(key, rows);
        None
    }

    /// Keep a dev batch's prefix states `rows` if the budget allows.
    fn insert_dev(&mut self, key: Vec<u32>, rows: Vec<f32>) {
        let size = std::mem::size_of_val(&rows[..]) + std::mem::size_of_val(&key[..]);
        if self.bytes + size <= self.budget && !self.dev.contains_key(&key) {
            self.bytes += size;
            self.dev.insert(key, rows);
        }
    }
}

/// Tokenised training pairs. `student[i]` (other language, student tokenizer) translates
/// `teacher[i]` (English, teacher tokenizer); `student_english[i]` is the English side in
/// the student's tokenizer (only when the English side is also distilled).
#[derive(Clone, Debug, Default)]
pub struct TokenizedPairs {
    pub student: Vec<Vec<u32>>,
    pub teacher: Vec<Vec<u32>>,
    pub student_english: Vec<Vec<u32>>,
}

/// Everything besides model and optimiser that a checkpoint must restore.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimiser steps done.
    pub step: usize,
    pub epoch: u64,
    /// Next pair position in the epoch's order.
    pub offset: usize,
    pub seed: u64,
    /// Student tokens seen.
    pub tokens: u64,
    pub best_dev_p1: Option<f64>,
    /// Dev MRR of the best step, which breaks ties in P@1 (absent in checkpoints written
    /// before it was kept: then a tie keeps the earlier step, as it used to).
    #[serde(default)]
    pub best_dev_mrr: Option<f64>,
    pub best_step: Option<usize>,
    /// The run's step-defining settings ([`DistillConfig::step_settings`]) when the
    /// checkpoint was written (absent in older checkpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<serde_json::Map<String, serde_json::Value>>,
    /// [`TokenizedPairs::fingerprint`] of the training pairs (absent in older checkpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// [`file_fingerprint`] of `model.bpk` and `optimizer.bpk` as the checkpoint wrote them
    /// (absent in older checkpoints), so that a file copied from another checkpoint or run
    /// is refused instead of loaded (burn resets the optimiser state of parameters a record
    /// does not match, without a word).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<std::collections::BTreeMap<String, String>>,
}

/// Two settings as JSON values are the same: equal, numbers within a few units in the last
/// place (serde_json's default parser may read a 17-digit float back one unit off).
fn same_setting(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        // Integers (seeds, sizes) exactly; floats to a few units in the last place.
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => {
                    x == y || (x - y).abs() <= 4.0 * f64::EPSILON * x.abs().max(y.abs())
                }
                _ => x == y,
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_setting(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_setting(v, w)))
        }
        _ => a == b,
    }
}

/// The files of a checkpoint besides `state.json`.
const CHECKPOINT_FILES: [&str; 2] = ["model.bpk", "optimizer.bpk"];

/// A file's length and a hash of three 1 MiB samples (its start, middle and end): cheap on
/// a checkpoint of half a gigabyte, and different for any other checkpoint's file.
pub fn file_fingerprint(path: &Path) -> Result<String> {
    use std::io::{Read, Seek, SeekFrom};
    const SAMPLE: u64 = 1 << 20;
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, "read", e))?;
    let len = file
        .metadata()
        .map_err(|e| Error::io(path, "read", e))?
        .len();
    let mut bytes = Vec::new();
    for start in [
        0,
        (len / 2).saturating_sub(SAMPLE / 2),
        len.saturating_sub(SAMPLE),
    ] {
        file.seek(SeekFrom::Start(start))
            .map_err(|e| Error::io(path, "read", e))?;
        (&mut file)
            .take(SAMPLE)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io(path, "read", e))?;
    }
    Ok(format!(
        "{len} bytes, {:016x}",
        crate::rng::stable_hash(&bytes)
    ))
}

impl TokenizedPairs {
    /// A stable hash of the training pairs' token ids, both sides, in order: the same data
    /// read again, or not.
    pub fn fingerprint(&self) -> String {
        let mut bytes = Vec::new();
        for side in [&self.student, &self.teacher, &self.student_english] {
            bytes.extend((side.len() as u64).to_le_bytes());
            for seq in side {
                bytes.extend((seq.len() as u32).to_le_bytes());
                bytes.extend(seq.iter().flat_map(|t| t.to_le_bytes()));
            }
        }
        format!(
            "{} pairs, {:016x}",
            self.student.len(),
            crate::rng::stable_hash(&bytes)
        )
    }
}

impl TrainState {
    /// What a checkpoint's state must say to be resumed as the state of step `step`: its
    /// own step, a best step not after it, dev measures in [0, 1].
    fn check(&self, step: usize) -> std::result::Result<(), String> {
        if self.step != step {
            return Err(format!(
                "step {}, but it is the checkpoint of step {step} (its directory's name)",
                self.step
            ));
        }
        if let Some(best) = self.best_step.filter(|&b| b > step) {
            return Err(format!(
                "best step {best} is after the checkpoint's step {step}"
            ));
        }
        for (name, v) in [
            ("best_dev_p1", self.best_dev_p1),
            ("best_dev_mrr", self.best_dev_mrr),
        ] {
            if let Some(v) = v.filter(|v| !(0.0..=1.0).contains(v)) {
                return Err(format!("{name} {v}, expected a measure in [0, 1]"));
            }
        }
        Ok(())
    }
}

/// Wall time of each part of one optimiser step.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct StepTimes {
    pub teacher: f64,
    pub student: f64,
    pub ot: f64,
    pub transfer: f64,
    pub backward: f64,
    /// Moving gradients between replicas outside of backward (data-parallel runs whose
    /// devices have no collective all-reduce; absent from the log otherwise).
    #[serde(skip_serializing_if = "is_zero", default)]
    pub sync: f64,
    pub optimizer: f64,
    pub total: f64,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

impl StepTimes {
    /// Add the forward parts (teacher, student, OT, transfer) of `other`.
    pub(super) fn add_forward(&mut self, other: &StepTimes) {
        self.teacher += other.teacher;
        self.student += other.student;
        self.ot += other.ot;
        self.transfer += other.transfer;
    }
}

/// One line of `log.jsonl`.
#[derive(Clone, Debug, Serialize)]
pub struct StepRecord {
    pub step: usize,
    pub epoch: u64,
    pub loss: f64,
    pub ot_cost: f64,
    pub sinkhorn_iterations: f64,
    pub converged: f64,
    pub mse: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens_per_s: f64,
    pub seconds: StepTimes,
}

/// Dev retrieval quality (other language → English, student encodes both sides).
#[derive(Clone, Copy, Debug, Serialize, serde::Deserialize)]
pub struct DevMetrics {
    pub step: usize,
    pub p_at_1: f64,
    pub mrr: f64,
}

/// A distillation run in memory.
pub struct Trainer {
    pub config: DistillConfig,
    pub student: TransformerEncoder,
    pub teacher: TransformerEncoder,
    pub student_pad: u32,
    pub teacher_pad: u32,
    pub state: TrainState,
    pub(super) optim: ModuleOptimizer,
    pub(super) data: TokenizedPairs,
    pub(super) cache: HostCache,
    pub(super) backend: Backend,
    pub(super) loss: LossKind,
    /// The other replicas of a data-parallel run (`None` on one device).
    pub(super) ddp: Option<DdpGroup>,
    /// `Some(k)` when the student's frozen prefix (embeddings and layers `0..k`) holds the
    /// teacher's own values and the English side is distilled: the teacher's state after
    /// layer `k` of an English sentence is then the student's English prefix state too.
    pub(super) shared_prefix: Option<usize>,
    /// Wait for the device at the boundaries of a step's parts (see
    /// [`Self::time_parts_exactly`]).
    pub(super) timed_parts: bool,
}

/// Wait for the work queued on `device` when `exact` (bench mode), so that the time of a
/// part of the step lands in that part; a device that cannot finish it is an error.
pub(super) fn settle(device: &Device, exact: bool) -> Result<()> {
    if exact {
        device.sync().map_err(|e| Error::Backend {
            backend: "burn",
            operation: "wait for the device",
            what: format!("{e:?}"),
        })?;
    }
    Ok(())
}

/// Sum of squares of every gradient of `module`'s parameters.
struct GradNorm<'a> {
    grads: &'a GradientsParams,
    sum: f64,
}

impl ModuleVisitor for GradNorm<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            // NaN when the device cannot read it back: `check_grad_norm` stops the step.
            let s: f32 = g.powi_scalar(2).sum().try_into_scalar().unwrap_or(f32::NAN);
            self.sum += s as f64;
        }
    }
}

/// A non-finite gradient norm stops the step before the optimizer writes it into the
/// weights: the gradients overflowed, or the device could not read them back.
pub(super) fn check_grad_norm(norm: f64, step: usize) -> Result<()> {
    if norm.is_finite() {
        return Ok(());
    }
    Err(Error::value(
        "training gradients",
        format!(
            "expected a finite gradient norm, found {norm} at step {step}: training has \
             diverged (lower the learning rate, keep grad_clip on) or the device failed"
        ),
    ))
}

/// The global L2 norm of the gradients of `module`'s parameters.
pub(super) fn grad_norm(module: &TransformerEncoder, grads: &GradientsParams) -> f64 {
    let mut norm = GradNorm { grads, sum: 0.0 };
    module.visit(&mut norm);
    norm.sum.sqrt()
}

/// Multiply every gradient by `scale`.
struct GradScale<'a> {
    grads: &'a mut GradientsParams,
    scale: f64,
}

impl ModuleVisitor for GradScale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.remove::<D>(param.id) {
            self.grads.register(param.id, g.mul_scalar(self.scale));
        }
    }
}

/// Multiply every gradient of `module`'s parameters by `scale`.
pub(super) fn scale_grads(module: &TransformerEncoder, grads: &mut GradientsParams, scale: f64) {
    module.visit(&mut GradScale { grads, scale });
}

/// Wait for the parameters of the last layer, so that an update's cost lands in the
/// timing of the step that made it.
pub(super) fn materialise(model: &TransformerEncoder) {
    let _ = model.layers[model.layers.len().saturating_sub(1)]
        .output
        .bias
        .as_ref()
        .map(|b| b.val().try_into_data());
}

/// Count trainable parameters.
struct Trainable(usize);

impl ModuleVisitor for Trainable {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val();
        if value.is_require_grad() {
            self.0 += value.shape().num_elements();
        }
    }
}

fn check_ids(batch: &TokenBatch, vocab: usize, what: &str) -> Result<()> {
    if let Some(&bad) = batch.ids.iter().find(|&&id| id < 0 || id as usize >= vocab) {
        return Err(Error::value(
            what,
            format!("token id {bad} outside the vocabulary of {vocab}"),
        ));
    }
    Ok(())
}

fn vocab_of(model: &TransformerEncoder) -> usize {
    model.embeddings.word.weight.val().dims()[0]
}

fn hidden_of(model: &TransformerEncoder) -> usize {
    model.embeddings.word.weight.val().dims()[1]
}

/// The models, host cache and kernel backend of one replica, as a shard's forward pass
/// borrows them.
pub(super) struct ReplicaParts<'a> {
    pub student: &'a TransformerEncoder,
    pub teacher: &'a TransformerEncoder,
    pub cache: &'a mut HostCache,
    pub backend: &'a Backend,
}

/// What every replica reads and none changes during a step.
pub(super) struct Shared<'a> {
    pub config: &'a DistillConfig,
    pub data: &'a TokenizedPairs,
    /// Student and teacher padding ids.
    pub pads: (u32, u32),
    pub loss: LossKind,
    /// See [`Trainer::shared_prefix`].
    pub shared_prefix: Option<usize>,
    /// See [`Trainer::time_parts_exactly`].
    pub timed_parts: bool,
}

impl Shared<'_> {
    fn sequences(&self, side: Side) -> &Vec<Vec<u32>> {
        match side {
            Side::Teacher => &self.data.teacher,
            Side::Student => &self.data.student,
            Side::StudentEnglish => &self.data.student_english,
        }
    }
}

/// Host token states `(len, h)` of pairs `idx` on `side`: the teacher's output, or the
/// student's state after its frozen prefix. Missing ones are computed without gradient and
/// cached within the budget (beyond it, kept only for this call).
///
/// Each sequence is padded to a length that depends on its own length alone (the next
/// multiple of [`STATE_PAD`], within the position table), and computed in a batch of such
/// sequences: a state then depends on its sequence alone, not on the batch that first
/// needed it (the products and reductions of a padded batch follow its padded length, and
/// the last bits with them). So a resumed run, whose cache starts empty, computes the
/// states that an uninterrupted run took from its cache bit for bit, and `cache_mb` changes
/// no number. (First-epoch steps of the default run, e5-small on two cores: 1.33 s with
/// one batch padded to its longest sequence, 1.69 s with unpadded batches of one exact
/// length, 1.16 s with these: less padding than the one batch, fewer batches than exact
/// lengths.)
fn host_states(
    parts: &mut ReplicaParts<'_>,
    shared: &Shared<'_>,
    idx: &[usize],
    side: Side,
) -> Result<Vec<Vec<f32>>> {
    let positions = match side {
        Side::Teacher => positions_of(parts.teacher),
        Side::Student | Side::StudentEnglish => positions_of(parts.student),
    };
    let mut by_length: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for &i in idx {
        if !parts.cache.map.contains_key(&(side, i)) {
            let len = shared.sequences(side)[i].len();
            let t = len
                .div_ceil(STATE_PAD)
                .saturating_mul(STATE_PAD)
                .min(positions);
            let group = by_length.entry(t.max(len)).or_default();
            if !group.contains(&i) {
                group.push(i);
            }
        }
    }
    let mut fresh: HashMap<usize, Vec<f32>> = HashMap::new();
    for (&t, missing) in &by_length {
        compute_states(parts, shared, missing, side, t, &mut fresh)?;
    }
    Ok(idx
        .iter()
        .map(|i| match fresh.get(i) {
            Some(v) => v.clone(),
            None => parts.cache.map[&(side, *i)].clone(),
        })
        .collect())
}

/// The padded length of cached states is a multiple of this (see [`host_states`]).
const STATE_PAD: usize = 8;

/// Positions of `model`'s position table that tokens can take.
fn positions_of(model: &TransformerEncoder) -> usize {
    let e = &model.embeddings;
    e.position.val().dims()[0].saturating_sub(e.position_offset)
}

/// The states of pairs `missing` on `side`, computed in one batch padded to `t` positions:
/// cached within the budget, else put in `fresh`.
fn compute_states(
    parts: &mut ReplicaParts<'_>,
    shared: &Shared<'_>,
    missing: &[usize],
    side: Side,
    t: usize,
    fresh: &mut HashMap<usize, Vec<f32>>,
) -> Result<()> {
    let seqs: Vec<Vec<u32>> = missing
        .iter()
        .map(|&i| shared.sequences(side)[i].clone())
        .collect();
    let (batch, h, values) = match side {
        Side::Teacher => {
            let batch = pad_to(&seqs, shared.pads.1, t);
            check_ids(&batch, vocab_of(parts.teacher), "teacher token ids")?;
            let teacher = parts.teacher;
            let device = teacher.embeddings.word.weight.val().device();
            let (ids, mask) = batch.tensors(&device)?;
            let h = hidden_of(teacher);
            let x = match shared.shared_prefix {
                Some(k) => {
                    let (prefix, x) = teacher.forward_with_prefix(ids, mask, k);
                    share_prefix(parts, shared, missing, &batch, h, prefix)?;
                    x
                }
                None => teacher.forward(ids, mask),
            };
            (batch, h, x)
        }
        Side::Student | Side::StudentEnglish => {
            let batch = pad_to(&seqs, shared.pads.0, t);
            check_ids(&batch, vocab_of(parts.student), "student token ids")?;
            let model = parts.student.valid();
            let device = model.embeddings.word.weight.val().device();
            let (ids, mask) = batch.tensors(&device)?;
            let x = model.embeddings.forward(ids);
            let x = model.forward_layers(x, mask, 0..shared.config.frozen_prefix());
            (batch, hidden_of(&model), x)
        }
    };
    let values = read_f32(values, "read cached token states")?;
    for (r, &i) in missing.iter().enumerate() {
        let start = r * batch.t * h;
        let rows = values[start..start + batch.lengths[r] * h].to_vec();
        if let Some(rows) = parts.cache.insert((side, i), rows) {
            fresh.insert(i, rows);
        }
    }
    Ok(())
}

/// Keep the teacher's state after the shared prefix, `prefix` `(b, t, h)` of the pairs
/// `missing` (padded as `batch`), as the student's English prefix state of every pair
/// whose English token ids are the teacher's (see [`Trainer::shared_prefix`]). Pairs that
/// do not fit the cache budget are left to be computed by the student.
fn share_prefix(
    parts: &mut ReplicaParts<'_>,
    shared: &Shared<'_>,
    missing: &[usize],
    batch: &TokenBatch,
    h: usize,
    prefix: Tensor<3>,
) -> Result<()> {
    let wanted: Vec<(usize, usize)> = missing
        .iter()
        .enumerate()
        .filter(|&(_, &i)| {
            shared.data.student_english.get(i) == Some(&shared.data.teacher[i])
                && !parts.cache.map.contains_key(&(Side::StudentEnglish, i))
        })
        .map(|(r, &i)| (r, i))
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let values = read_f32(prefix, "read the shared prefix states")?;
    for (r, i) in wanted {
        let start = r * batch.t * h;
        let rows = values[start..start + batch.lengths[r] * h].to_vec();
        // Over the budget: the student computes this pair's prefix itself.
        let _ = parts.cache.insert((Side::StudentEnglish, i), rows);
    }
    Ok(())
}

/// The bits of every float parameter of a module, in visiting order (`None` for one that
/// could not be read back).
#[derive(Default)]
struct ParamBits(Vec<Option<(Vec<usize>, Vec<u32>)>>);

impl ModuleVisitor for ParamBits {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val();
        let dims = value.dims().to_vec();
        let bits = value
            .try_into_data()
            .ok()
            .and_then(|d| d.try_to_vec::<f32>().ok())
            .map(|v| v.iter().map(|x| x.to_bits()).collect());
        self.0.push(bits.map(|b| (dims, b)));
    }
}

/// Whether two modules' float parameters are all readable and equal bit for bit.
fn same_params<M: Module>(a: &M, b: &M) -> bool {
    let bits = |m: &M| {
        let mut v = ParamBits::default();
        m.visit(&mut v);
        v.0
    };
    let (a, b) = (bits(a), bits(b));
    a.len() == b.len() && a.iter().all(Option::is_some) && a == b
}

/// Whether `student`'s frozen prefix (embeddings and layers `0..k`) holds exactly the
/// values of `teacher`'s, as far as `english` (the student's English token ids) can see:
/// the word embedding rows of those ids, the position and type embeddings, the embedding
/// norm and every parameter of layers `0..k`. Then the teacher's state after layer `k` of
/// an English sentence is bit for bit the student's prefix state of it.
fn same_prefix(
    student: &TransformerEncoder,
    teacher: &TransformerEncoder,
    k: usize,
    english: &[Vec<u32>],
) -> bool {
    let (s, t) = (student.valid(), teacher);
    if k == 0
        || k > s.layers.len()
        || k > t.layers.len()
        || vocab_of(&s) != vocab_of(t)
        || hidden_of(&s) != hidden_of(t)
        || s.embeddings.position_offset != t.embeddings.position_offset
    {
        return false;
    }
    let mut ids: Vec<i64> = english.iter().flatten().map(|&id| id as i64).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() || ids.iter().any(|&id| id as usize >= vocab_of(t)) {
        return false;
    }
    let n = ids.len();
    // The word rows of the ids used (the whole table is ~100 M values for XLM-R's).
    let rows = |m: &TransformerEncoder| {
        let device = m.embeddings.word.weight.val().device();
        let index = Tensor::<1, Int>::from_data(TensorData::new(ids.clone(), [n]), &device);
        Param::from_tensor(m.embeddings.word.weight.val().select(0, index))
    };
    // What the parameters cannot show (the layer norms' epsilon, anything else of the
    // architecture): the prefix of a few English sentences, bit for bit.
    let probe = |m: &TransformerEncoder| {
        let batch = pad(&english[..english.len().min(4)], 0);
        let device = m.embeddings.word.weight.val().device();
        let (ids, mask) = batch.tensors(&device).ok()?;
        Some(Param::from_tensor(m.forward_layers(
            m.embeddings.forward(ids),
            mask,
            0..k,
        )))
    };
    let (se, te) = (&s.embeddings, &t.embeddings);
    same_params(&rows(&s), &rows(t))
        && same_params(&se.position, &te.position)
        && same_params(&se.token_type, &te.token_type)
        && same_params(&se.norm, &te.norm)
        && s.layers[..k]
            .iter()
            .zip(&t.layers[..k])
            .all(|(a, b)| a.heads == b.heads && same_params(a, b))
        && probe(&s)
            .zip(probe(t))
            .is_some_and(|(a, b)| same_params(&a, &b))
}

/// Teacher token embeddings of `idx` as a padded `(b, m, h)` side on `device`.
fn teacher_side(
    parts: &mut ReplicaParts<'_>,
    shared: &Shared<'_>,
    idx: &[usize],
    device: &Device,
) -> Result<TokenSide> {
    let h = hidden_of(parts.teacher);
    let rows = host_states(parts, shared, idx, Side::Teacher)?;
    Ok(padded_side(&rows, h, device))
}

/// Student forward on pairs `idx` of `side` (autodiff): the whole encoder, or only the
/// trainable layers on top of the cached frozen prefix.
fn student_side(
    parts: &mut ReplicaParts<'_>,
    shared: &Shared<'_>,
    idx: &[usize],
    side: Side,
) -> Result<TokenSide> {
    let k = shared.config.frozen_prefix();
    let device = parts.student.embeddings.word.weight.val().device();
    if k == 0 {
        let seqs: Vec<Vec<u32>> = idx
            .iter()
            .map(|&i| shared.sequences(side)[i].clone())
            .collect();
        let batch = pad(&seqs, shared.pads.0);
        check_ids(&batch, vocab_of(parts.student), "student token ids")?;
        let (ids, mask) = batch.tensors(&device)?;
        let x = parts.student.forward(ids, mask.clone());
        return Ok(TokenSide {
            x,
            mask,
            lengths: batch.lengths,
        });
    }
    let h = hidden_of(parts.student);
    let rows = host_states(parts, shared, idx, side)?;
    let prefix = padded_side(&rows, h, &device);
    let x =
        parts
            .student
            .forward_layers(prefix.x, prefix.mask.clone(), k..parts.student.layers.len());
    Ok(TokenSide { x, ..prefix })
}

/// The configured loss of one side against the teacher (centred first if configured).
fn loss_of(
    shared: &Shared<'_>,
    backend: &Backend,
    student: &TokenSide,
    teacher: &TokenSide,
) -> Result<(Tensor<1>, LossStats)> {
    let config = shared.config;
    let params = config.sinkhorn();
    if config.center_tokens {
        let (s, t) = (centered(student.clone()), centered(teacher.clone()));
        distill_loss(shared.loss, &s, &t, backend, &params, config.mse_weight)
    } else {
        distill_loss(
            shared.loss,
            student,
            teacher,
            backend,
            &params,
            config.mse_weight,
        )
    }
}

/// The forward half of a step on one micro-batch or shard.
pub(super) struct ShardLoss {
    /// The loss, already divided by the caller's divisor; carries the autodiff graph.
    pub loss: Tensor<1>,
    /// Statistics of the other-language side.
    pub stats: LossStats,
    /// Student tokens read.
    pub tokens: usize,
    /// Teacher, student, OT and transfer seconds.
    pub times: StepTimes,
}

/// Teacher forward, student forward(s) and the loss on pairs `idx`, divided by
/// `divisor` (`grad_accumulation` on one device; scaled by the shard's share of the
/// global micro-batch on several).
pub(super) fn shard_loss(
    mut parts: ReplicaParts<'_>,
    shared: &Shared<'_>,
    idx: &[usize],
    divisor: f64,
) -> Result<ShardLoss> {
    let device = parts.student.embeddings.word.weight.val().device();
    let mut times = StepTimes::default();
    let t0 = Instant::now();
    let teacher = teacher_side(&mut parts, shared, idx, &device)?;
    settle(&device, shared.timed_parts)?;
    times.teacher += t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let count =
        |side: Side| -> usize { idx.iter().map(|&i| shared.sequences(side)[i].len()).sum() };
    let mut tokens = count(Side::Student);
    let student = student_side(&mut parts, shared, idx, Side::Student)?;
    let mut english = None;
    if shared.config.distill_english {
        tokens += count(Side::StudentEnglish);
        english = Some(student_side(&mut parts, shared, idx, Side::StudentEnglish)?);
    }
    settle(&device, shared.timed_parts)?;
    times.student += t1.elapsed().as_secs_f64();
    let (mut loss, stats) = loss_of(shared, parts.backend, &student, &teacher)?;
    let mut ot = stats.ot_time;
    let mut transfer = stats.transfer_time;
    if let Some(en) = english {
        let (l2, s2) = loss_of(shared, parts.backend, &en, &teacher)?;
        loss = loss + l2;
        ot += s2.ot_time;
        transfer += s2.transfer_time;
    }
    times.ot += ot.as_secs_f64();
    times.transfer += transfer.as_secs_f64();
    Ok(ShardLoss {
        loss: loss.div_scalar(divisor),
        stats,
        tokens,
        times,
    })
}

impl Trainer {
    /// Set up a run. `student` must live on an autodiff device; `teacher` is used without
    /// gradient.
    pub fn new(
        config: DistillConfig,
        student: TransformerEncoder,
        teacher: TransformerEncoder,
        pads: (u32, u32),
        data: TokenizedPairs,
    ) -> Result<Self> {
        config.validate()?;
        let loss = config.loss_kind()?;
        if data.student.len() != data.teacher.len() || data.student.is_empty() {
            return Err(Error::shape(
                "tokenized pairs",
                "as many student as teacher sequences, at least one",
                format!("{} and {}", data.student.len(), data.teacher.len()),
            ));
        }
        if config.distill_english && data.student_english.len() != data.student.len() {
            return Err(Error::shape(
                "English side for the student",
                format!("{} sequences", data.student.len()),
                data.student_english.len().to_string(),
            ));
        }
        if config.batch_size > data.student.len() {
            return Err(Error::parameter(
                "batch_size",
                format!("at most the {} training pairs", data.student.len()),
                config.batch_size,
            ));
        }
        let (hs, ht) = (hidden_of(&student), hidden_of(&teacher));
        if hs != ht {
            return Err(Error::shape(
                "teacher hidden size",
                format!("{hs} (the student's; the cost compares their token vectors)"),
                ht.to_string(),
            ));
        }
        if !student.embeddings.word.weight.val().is_autodiff() {
            return Err(Error::value(
                "student",
                "expected a model on an autodiff device",
            ));
        }
        let backend = config.open_ot_backend(config.ot_backend_kind()?)?;
        let mut student = student;
        if config.freeze_embeddings {
            student.embeddings = student.embeddings.no_grad();
        }
        if config.freeze_layers > student.layers.len() {
            return Err(Error::parameter(
                "freeze_layers",
                format!("at most the student's {} layers", student.layers.len()),
                config.freeze_layers,
            ));
        }
        if config.freeze_embeddings && config.freeze_layers == student.layers.len() {
            return Err(Error::parameter(
                "freeze_layers",
                format!(
                    "fewer than the student's {} layers when the embeddings are frozen too \
                     (nothing would be trained)",
                    student.layers.len()
                ),
                config.freeze_layers,
            ));
        }
        for l in 0..config.freeze_layers {
            student.layers[l] = student.layers[l].clone().no_grad();
        }
        let teacher = teacher.valid().no_grad();
        let optim = AdamWConfig::new()
            .with_weight_decay(config.weight_decay as f32)
            .with_epsilon(1e-8)
            .init();
        let state = TrainState {
            seed: config.seed,
            settings: Some(config.step_settings()),
            data: Some(data.fingerprint()),
            ..TrainState::default()
        };
        let cache_mb = config.cache_mb;
        let k = config.frozen_prefix();
        let shared_prefix = (config.distill_english
            && same_prefix(&student, &teacher, k, &data.student_english))
        .then_some(k);
        Ok(Trainer {
            config,
            student,
            teacher,
            student_pad: pads.0,
            teacher_pad: pads.1,
            state,
            optim,
            data,
            cache: HostCache::new(cache_mb),
            backend,
            loss,
            ddp: None,
            shared_prefix,
            timed_parts: false,
        })
    }

    /// Make every step wait for the devices at the boundaries of its parts (teacher
    /// forward, student forward, OT, backward, optimizer), so that the step-time breakdown
    /// is exact on devices that run asynchronously (GPUs): without it a GPU's forward work
    /// is still running when its part's clock stops and is counted in the first part that
    /// waits for it (the OT part's read of the cost). `--bench-steps` turns it on; training
    /// leaves it off, since the waits keep the host from queueing ahead. The step's total
    /// is the same either way, up to the lost overlap.
    pub fn time_parts_exactly(&mut self, exact: bool) {
        self.timed_parts = exact;
    }

    pub fn trainable_parameters(&self) -> usize {
        let mut t = Trainable(0);
        self.student.visit(&mut t);
        t.0
    }

    pub fn pairs(&self) -> usize {
        self.data.student.len()
    }

    /// The next micro-batch of pair indices; moves to the next epoch when fewer than a
    /// batch remain.
    pub(super) fn next_batch(&mut self) -> Vec<usize> {
        let n = self.pairs();
        let bs = self.config.batch_size;
        if self.state.offset.checked_add(bs).is_none_or(|end| end > n) {
            self.state.epoch = self.state.epoch.saturating_add(1);
            self.state.offset = 0;
        }
        let order = permutation(
            n,
            self.state.seed ^ self.state.epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        let idx = order[self.state.offset..self.state.offset + bs].to_vec();
        self.state.offset += bs;
        idx
    }

    /// The main replica's parts, as the shard functions take them.
    fn parts(&mut self) -> (ReplicaParts<'_>, Shared<'_>) {
        (
            ReplicaParts {
                student: &self.student,
                teacher: &self.teacher,
                cache: &mut self.cache,
                backend: &self.backend,
            },
            Shared {
                config: &self.config,
                data: &self.data,
                pads: (self.student_pad, self.teacher_pad),
                loss: self.loss,
                shared_prefix: self.shared_prefix,
                timed_parts: self.timed_parts,
            },
        )
    }

    /// The loss of the current model on pairs `idx` (no update), for tests and logging.
    pub fn loss_on(&mut self, idx: &[usize]) -> Result<(Tensor<1>, LossStats)> {
        let (parts, shared) = self.parts();
        let shard = shard_loss(parts, &shared, idx, 1.0)?;
        Ok((shard.loss, shard.stats))
    }

    /// Layers of the student frozen together with the embeddings, whose output is cached
    /// per pair (0 when the embeddings train).
    pub fn frozen_prefix(&self) -> usize {
        self.config.frozen_prefix()
    }

    /// `Some(k)` when the student's English prefix states come from the teacher's forward
    /// pass: the English side is distilled and the student's frozen embeddings and layers
    /// `0..k` are the teacher's own (the default, where both are multilingual-e5-small),
    /// which saves `k` of the student's layers per new English sentence.
    pub fn shared_prefix(&self) -> Option<usize> {
        self.shared_prefix
    }

    /// One optimiser step (`grad_accumulation` micro-batches); with several devices (see
    /// [`Self::replicate`]), one data-parallel step of every replica.
    pub fn step(&mut self) -> Result<StepRecord> {
        if self.ddp.is_some() {
            return self.ddp_step();
        }
        let t_step = Instant::now();
        let lr = self.config.lr_at(self.state.step);
        let ga = self.config.grad_accumulation;
        let mut accumulator = GradientsAccumulator::<TransformerEncoder>::new();
        let mut times = StepTimes::default();
        let mut loss_sum = 0.0;
        let mut stats_sum = LossStats::default();
        let mut tokens = 0usize;
        for _ in 0..ga {
            let idx = self.next_batch();
            let (parts, shared) = self.parts();
            let shard = shard_loss(parts, &shared, &idx, ga as f64)?;
            times.add_forward(&shard.times);
            tokens += shard.tokens;
            let t2 = Instant::now();
            let value = read_scalar(shard.loss.clone().detach(), "read the training loss")?;
            if !value.is_finite() {
                return Err(Error::value(
                    "training loss",
                    format!("non-finite loss {value} at step {}", self.state.step),
                ));
            }
            loss_sum += value as f64;
            let stats = &shard.stats;
            stats_sum.ot_cost += stats.ot_cost / ga as f64;
            stats_sum.sinkhorn_iterations += stats.sinkhorn_iterations / ga as f64;
            stats_sum.converged += stats.converged / ga as f64;
            stats_sum.mse += stats.mse / ga as f64;
            let grads = shard.loss.backward();
            let grads = GradientsParams::from_grads(grads, &self.student);
            accumulator.accumulate(&self.student, grads);
            settle(
                &self.student.embeddings.word.weight.val().device(),
                self.timed_parts,
            )?;
            times.backward += t2.elapsed().as_secs_f64();
        }
        let t3 = Instant::now();
        let mut grads = accumulator.grads();
        let grad_norm = grad_norm(&self.student, &grads);
        check_grad_norm(grad_norm, self.state.step)?;
        if let Some(scale) = self.clip_scale(grad_norm) {
            scale_grads(&self.student, &mut grads, scale);
        }
        self.student = self.optim.step(lr, self.student.clone(), grads);
        // Materialise the update so that its cost lands in this step's timing.
        materialise(&self.student);
        times.optimizer = t3.elapsed().as_secs_f64();
        times.total = t_step.elapsed().as_secs_f64();
        Ok(self.finish_step(lr, loss_sum, stats_sum, grad_norm, tokens, times))
    }

    /// The factor that brings a gradient of norm `grad_norm` down to `grad_clip`, if needed.
    pub(super) fn clip_scale(&self, grad_norm: f64) -> Option<f64> {
        (self.config.grad_clip > 0.0 && grad_norm > self.config.grad_clip)
            .then(|| self.config.grad_clip / grad_norm)
    }

    /// The log record of the step just taken; advances the step and token counters.
    pub(super) fn finish_step(
        &mut self,
        lr: f64,
        loss: f64,
        stats: LossStats,
        grad_norm: f64,
        tokens: usize,
        times: StepTimes,
    ) -> StepRecord {
        let record = StepRecord {
            step: self.state.step + 1,
            epoch: self.state.epoch,
            loss,
            ot_cost: stats.ot_cost,
            sinkhorn_iterations: stats.sinkhorn_iterations,
            converged: stats.converged,
            mse: stats.mse,
            lr,
            grad_norm,
            tokens_per_s: tokens as f64 / times.total.max(1e-9),
            seconds: times,
        };
        self.state.step += 1;
        self.state.tokens = self.state.tokens.saturating_add(tokens as u64);
        record
    }

    /// Save model, optimiser and [`TrainState`] into `dir` (created).
    pub fn save_checkpoint(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, "create", e))?;
        self.student
            .clone()
            .into_record()
            .save(dir.join("model.bpk"))
            .map_err(|e| burn_error("save the model checkpoint", e))?;
        self.optim
            .save(dir.join("optimizer.bpk"))
            .map_err(|e| burn_error("save the optimizer checkpoint", e))?;
        // The state file is what makes the checkpoint one (a resume reads it, `latest` is
        // written after it): the weights it fingerprints reach the disk first.
        for name in CHECKPOINT_FILES {
            crate::io::sync_file(&dir.join(name))?;
        }
        let mut state = self.state.clone();
        state.files = Some(
            CHECKPOINT_FILES
                .iter()
                .map(|name| Ok((name.to_string(), file_fingerprint(&dir.join(name))?)))
                .collect::<Result<_>>()?,
        );
        let state = serde_json::to_string_pretty(&state)
            .map_err(|e| Error::value("train state", e.to_string()))?;
        let path = dir.join("state.json");
        crate::io::write_atomic(&path, state)
    }

    /// Restore a checkpoint written by [`Self::save_checkpoint`] for step `step` (the
    /// step its directory is named after).
    pub fn load_checkpoint(&mut self, dir: &Path, step: usize) -> Result<()> {
        let path = dir.join("state.json");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, "read", e))?;
        let state: TrainState = serde_json::from_str(&text).map_err(|e| Error::Format {
            path: path.clone(),
            what: format!("not a train state: {e}"),
        })?;
        state.check(step).map_err(|what| Error::Format {
            path: path.clone(),
            what,
        })?;
        // What a step computes must be what the checkpoint's steps computed: the run's own
        // config.toml is read back on --resume, edited or cut short it would change that.
        // (This trainer's own state holds its settings and data fingerprint, from `new`.)
        let now_settings = self.state.settings.clone().unwrap_or_default();
        let now_data = self.state.data.clone().unwrap_or_default();
        if let Some(saved) = &state.settings {
            let now = &now_settings;
            let differs =
                |k: &String, v: &serde_json::Value| now.get(k).is_none_or(|n| !same_setting(n, v));
            if let Some((key, was)) = saved.iter().find(|(k, v)| differs(k, v)) {
                let is = now.get(key).cloned().unwrap_or(serde_json::Value::Null);
                return Err(Error::Format {
                    path: path.clone(),
                    what: format!(
                        "the checkpoint was trained with {key} = {was}, the run's settings \
                         now say {is} (config.toml edited?); a resume may change only {}",
                        crate::distill::config::RESUMABLE_KEYS.join(", ")
                    ),
                });
            }
        }
        if let Some(saved) = &state.data {
            let now = &now_data;
            if saved != now {
                return Err(Error::Format {
                    path: path.clone(),
                    what: format!(
                        "the checkpoint was trained on other pairs ({saved}) than the run's \
                         data gives now ({now}): its sources changed; restore them or start \
                         a new run"
                    ),
                });
            }
        }
        if state.seed != self.config.seed {
            return Err(Error::parameter(
                "seed",
                format!("{} (the checkpoint's)", state.seed),
                self.config.seed,
            ));
        }
        if state.offset > self.pairs() {
            return Err(Error::Format {
                path,
                what: format!(
                    "offset {} is past the {} training pairs of this run's data",
                    state.offset,
                    self.pairs()
                ),
            });
        }
        if let Some(saved) = &state.files {
            for name in CHECKPOINT_FILES {
                let file = dir.join(name);
                let now = file_fingerprint(&file)?;
                if let Some(was) = saved.get(name).filter(|was| **was != now) {
                    let length = |f: &str| f.split(' ').next().and_then(|n| n.parse::<u64>().ok());
                    let why = match (length(&now), length(was)) {
                        (Some(n), Some(w)) if n < w => "truncated (a full disk, a copy cut short)",
                        _ => "copied from another checkpoint or run, or changed since",
                    };
                    return Err(Error::Format {
                        path: file,
                        what: format!(
                            "not the file this checkpoint wrote ({now}; its state.json says \
                             {was}): {why}"
                        ),
                    });
                }
            }
        }
        // Batches start at multiples of the batch size within an epoch.
        if !state.offset.is_multiple_of(self.config.batch_size.max(1)) {
            return Err(Error::Format {
                path,
                what: format!(
                    "offset {} is not a multiple of the batch size {}",
                    state.offset, self.config.batch_size
                ),
            });
        }
        self.student = self.model_at(dir)?;
        let optim = std::mem::replace(&mut self.optim, AdamWConfig::new().init());
        let optim_path = dir.join("optimizer.bpk");
        self.optim = optim
            .load(&optim_path)
            .map_err(|e| unreadable_checkpoint(&optim_path, e))?;
        // The fingerprints describe the files on disk, not the training; a checkpoint
        // written before settings and data were recorded records them from now on.
        self.state = TrainState {
            files: None,
            settings: Some(now_settings),
            data: Some(now_data),
            ..state
        };
        self.resync_replicas();
        // A checkpoint holds the frozen parameters too; they never change, but check again.
        if self.shared_prefix.is_some() {
            let k = self.config.frozen_prefix();
            self.shared_prefix =
                same_prefix(&self.student, &self.teacher, k, &self.data.student_english)
                    .then_some(k);
        }
        Ok(())
    }

    /// The student of the checkpoint in `dir` (the trainer's own model is unchanged).
    pub fn model_at(&self, dir: &Path) -> Result<TransformerEncoder> {
        let path = dir.join("model.bpk");
        let record = load_record(&path)?;
        self.student
            .clone()
            .try_load_record(record)
            .map_err(|e| Error::Format {
                path,
                what: format!(
                    "a checkpoint of another model: it does not fit this run's student \
                     ({e:?})"
                ),
            })
    }

    /// Mean-pooled, L2-normalised student vectors of `seqs` (no gradient), `(n, h)`.
    ///
    /// The states after the frozen prefix (embeddings and layers `0..k`) do not change
    /// while the student trains, so each dev batch's are computed once and kept on the host
    /// (within `cache_mb`, with the training pairs' states); a dev evaluation then runs only
    /// the trained layers. They are kept per batch, not per sentence: a sentence's rows
    /// differ in their last bits from batch to batch, and the dev set is cut into the same
    /// batches every time, so the vectors are the bits of the whole model's.
    pub fn student_vectors(&mut self, seqs: &[Vec<u32>]) -> Result<Vec<f32>> {
        let model = self.student.valid();
        let h = hidden_of(&model);
        let all = model.layers.len();
        let k = self.config.frozen_prefix().min(all);
        let device = model.embeddings.word.weight.val().device();
        let mut out = Vec::with_capacity(seqs.len() * h);
        for chunk in seqs.chunks(32) {
            let batch = pad(chunk, self.student_pad);
            check_ids(&batch, vocab_of(&model), "student token ids")?;
            let (ids, mask) = batch.tensors(&device)?;
            let (b, t) = (batch.b, batch.t);
            let key = prefix::batch_key(chunk);
            let x = if k == 0 {
                model.forward(ids, mask.clone())
            } else if let Some(held) = self.cache.dev.get(&key) {
                let data = prefix::padded(held, chunk, t, h);
                let x = Tensor::<3>::from_data(TensorData::new(data, [b, t, h]), &device);
                model.forward_layers(x, mask.clone(), k..all)
            } else {
                let (prefix, x) = model.forward_with_prefix(ids, mask.clone(), k);
                let values = read_f32(prefix, "read the student's dev prefix states")?;
                self.cache
                    .insert_dev(key, prefix::real_rows(&values, chunk, t, h));
                x
            };
            let v = pooling::l2_normalize(pooling::mean_pool(x, mask));
            out.extend(read_f32(v, "read student vectors")?);
        }
        Ok(out)
    }

    /// P@1 and MRR of retrieving `english[i]` for `other[i]` among all the English
    /// sentences, both encoded by the student.
    pub fn evaluate(&mut self, other: &[Vec<u32>], english: &[Vec<u32>]) -> Result<DevMetrics> {
        let h = hidden_of(&self.student);
        let q = self.student_vectors(other)?;
        let c = self.student_vectors(english)?;
        let (p1, mrr) = bitext_retrieval(&q, &c, h);
        Ok(DevMetrics {
            step: self.state.step,
            p_at_1: p1,
            mrr,
        })
    }
}

/// `side` minus its mean token state over the batch's real tokens (padding rows stay
/// as they are: they carry no weight in any loss).
fn centered(side: TokenSide) -> TokenSide {
    let [b, t, h] = side.x.dims();
    let mask = side.mask.clone().reshape([b, t, 1]);
    let count = side.mask.clone().sum().clamp_min(1.0).reshape([1, 1, 1]);
    let mean = (side.x.clone() * mask.clone())
        .sum_dim(0)
        .sum_dim(1)
        .reshape([1, 1, h])
        / count;
    TokenSide {
        x: side.x - mean * mask,
        ..side
    }
}

/// Host rows `(len_r, h)` as a zero-padded `(b, t, h)` side with its mask on `device`.
fn padded_side(rows: &[Vec<f32>], h: usize, device: &Device) -> TokenSide {
    let lengths: Vec<usize> = rows.iter().map(|r| r.len() / h.max(1)).collect();
    let t = lengths.iter().copied().max().unwrap_or(1).max(1);
    let b = rows.len();
    let mut data = vec![0.0f32; b * t * h];
    let mut mask = vec![0.0f32; b * t];
    for (r, v) in rows.iter().enumerate() {
        data[r * t * h..r * t * h + v.len()].copy_from_slice(v);
        mask[r * t..r * t + lengths[r]].fill(1.0);
    }
    TokenSide {
        x: Tensor::<3>::from_data(TensorData::new(data, [b, t, h]), device),
        mask: Tensor::<2>::from_data(TensorData::new(mask, [b, t]), device),
        lengths,
    }
}

/// P@1 and MRR when query `i` should retrieve candidate `i` by cosine (vectors already
/// normalised, `(n, h)` each); ties count against the query. Only the first
/// `min(queries, candidates)` pairs take part when the two differ; `h = 0` scores nothing.
pub fn bitext_retrieval(q: &[f32], c: &[f32], h: usize) -> (f64, f64) {
    if h == 0 {
        return (0.0, 0.0);
    }
    let n = q.len().min(c.len()) / h;
    if n == 0 {
        return (0.0, 0.0);
    }
    let (mut p1, mut mrr) = (0.0, 0.0);
    for i in 0..n {
        let qi = &q[i * h..(i + 1) * h];
        let score = |j: usize| -> f32 {
            qi.iter()
                .zip(&c[j * h..(j + 1) * h])
                .map(|(a, b)| a * b)
                .sum()
        };
        let own = score(i);
        let rank = 1 + (0..n).filter(|&j| j != i && score(j) >= own).count();
        if rank == 1 {
            p1 += 1.0;
        }
        mrr += 1.0 / rank as f64;
    }
    (p1 / n as f64, mrr / n as f64)
}

/// The run directory's checkpoint of step `step`.
pub fn checkpoint_dir(out: &Path, step: usize) -> PathBuf {
    out.join("checkpoints").join(format!("step-{step:06}"))
}

/// Time a closure (for the bench).
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let v = f();
    (v, t.elapsed())
}

/// A checkpoint's model record, or an error naming the file.
fn load_record(path: &Path) -> Result<ModuleRecord> {
    ModuleRecord::load(path).map_err(|e| unreadable_checkpoint(path, e))
}

/// A checkpoint file that burn could not read: truncated (a full disk, a copy cut short) or
/// written by another version. A user error naming the file, not a backend failure.
fn unreadable_checkpoint(path: &Path, e: impl std::fmt::Debug) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        what: format!(
            "expected a checkpoint file written by optical distill, which burn could not read \
             ({e:?}): truncated, or from another version; resume from another checkpoint \
             (edit checkpoints/latest) or start a new run"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::same_setting;
    use serde_json::json;

    #[test]
    fn settings_compare_floats_to_the_last_places_and_integers_exactly() {
        // serde_json's default parser reads this one back one unit in the last place off.
        assert!(same_setting(
            &json!(0.9122214092097937),
            &json!(0.9122214092097936)
        ));
        assert!(!same_setting(&json!(0.001), &json!(0.01)));
        assert!(!same_setting(&json!(1.0), &json!(1.000001)));
        assert!(!same_setting(
            &json!(9_223_372_036_854_775_808u64),
            &json!(9_223_372_036_854_775_809u64)
        ));
        assert!(same_setting(&json!([1, 2.5, "x"]), &json!([1, 2.5, "x"])));
        assert!(!same_setting(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
        assert!(!same_setting(&json!("ot"), &json!("mean-mse")));
    }
}
