//! Encoder parameters as named host arrays in the Hugging Face layout, the one format every
//! loader produces and the model is built from.
//!
//! Names are those of `transformers`' `BertModel` / `XLMRobertaModel` without the
//! `bert.` / `roberta.` prefix (`embeddings.word_embeddings.weight`,
//! `encoder.layer.3.attention.self.query.weight`, …); linear weights are `(out, in)`.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use super::config::EncoderConfig;
use crate::error::{Error, Result};

/// One parameter: shape and row-major `f32` values.
#[derive(Clone, Debug)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Every parameter of an encoder, by canonical name.
#[derive(Clone, Debug, Default)]
pub struct Weights {
    /// Where the weights came from, for error messages.
    pub source: String,
    pub tensors: HashMap<String, HostTensor>,
}

/// Parameters [`random_weights`] writes at most (4 GiB of `f32`, held once in memory while
/// the file is written): a config is the only input there, so its sizes alone must not be
/// able to ask for any amount of memory.
pub const MAX_RANDOM_PARAMETERS: usize = 1 << 30;

/// The largest parameter `config` needs (the first of equals, in [`expected_parameters`]'
/// order): its name and shape.
pub fn largest_parameter(config: &EncoderConfig) -> (String, Vec<usize>) {
    let size = |shape: &[usize]| {
        shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .unwrap_or(usize::MAX)
    };
    expected_parameters(config)
        .into_iter()
        .fold(None, |best: Option<(String, Vec<usize>)>, p| match best {
            Some(b) if size(&b.1) >= size(&p.1) => Some(b),
            _ => Some(p),
        })
        .unwrap_or_default()
}

/// Random weights of `config`'s shape: every parameter `N(0, std²)` except the LayerNorm
/// gains, `1 + N(0, (std/2)²)`. From SplitMix64 `seed`, in [`expected_parameters`]' order, so
/// the same seed gives the same weights. For benchmarks and tests, where what matters is the
/// shape and not what the model encodes.
pub fn random_weights(config: &EncoderConfig, seed: u64, std: f32) -> Result<Weights> {
    let expected = expected_parameters(config);
    let total = expected.iter().try_fold(0usize, |acc, (_, shape)| {
        shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .and_then(|n| acc.checked_add(n))
    });
    match total {
        Some(n) if n <= MAX_RANDOM_PARAMETERS => {}
        _ => {
            let (name, shape) = largest_parameter(config);
            return Err(Error::value(
                "random weights",
                format!(
                    "expected at most {MAX_RANDOM_PARAMETERS} parameters, found a config that \
                     needs {} (the largest, {name}, is {})",
                    total.map_or("more than 2^64".to_string(), |n| n.to_string()),
                    shape_text(&shape)
                ),
            ));
        }
    }
    let mut rng = crate::rng::SplitMix64::new(seed);
    let mut tensors = HashMap::new();
    for (name, shape) in expected {
        let len: usize = shape.iter().product();
        let mut data = rng.normals_f32(len);
        if name.ends_with("LayerNorm.weight") {
            data.iter_mut().for_each(|v| *v = 1.0 + *v * std * 0.5);
        } else {
            data.iter_mut().for_each(|v| *v *= std);
        }
        tensors.insert(name, HostTensor { shape, data });
    }
    Ok(Weights {
        source: format!("random (seed {seed}, std {std})"),
        tensors,
    })
}

/// A shape as `a × b × …`.
pub fn shape_text(shape: &[usize]) -> String {
    shape
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(" × ")
}

/// Prefixes that wrap the encoder's parameters in task checkpoints.
const PREFIXES: [&str; 3] = ["bert.", "roberta.", "model."];

/// The canonical names and shapes of every parameter `config` needs.
pub fn expected_parameters(config: &EncoderConfig) -> Vec<(String, Vec<usize>)> {
    let h = config.hidden_size;
    let f = config.intermediate_size;
    let mut out = vec![
        (
            "embeddings.word_embeddings.weight".to_string(),
            vec![config.vocab_size, h],
        ),
        (
            "embeddings.position_embeddings.weight".to_string(),
            vec![config.max_position_embeddings, h],
        ),
        (
            "embeddings.token_type_embeddings.weight".to_string(),
            vec![config.type_vocab_size, h],
        ),
        ("embeddings.LayerNorm.weight".to_string(), vec![h]),
        ("embeddings.LayerNorm.bias".to_string(), vec![h]),
    ];
    for l in 0..config.num_hidden_layers {
        let p = format!("encoder.layer.{l}");
        for (name, shape) in [
            ("attention.self.query.weight", vec![h, h]),
            ("attention.self.query.bias", vec![h]),
            ("attention.self.key.weight", vec![h, h]),
            ("attention.self.key.bias", vec![h]),
            ("attention.self.value.weight", vec![h, h]),
            ("attention.self.value.bias", vec![h]),
            ("attention.output.dense.weight", vec![h, h]),
            ("attention.output.dense.bias", vec![h]),
            ("attention.output.LayerNorm.weight", vec![h]),
            ("attention.output.LayerNorm.bias", vec![h]),
            ("intermediate.dense.weight", vec![f, h]),
            ("intermediate.dense.bias", vec![f]),
            ("output.dense.weight", vec![h, f]),
            ("output.dense.bias", vec![h]),
            ("output.LayerNorm.weight", vec![h]),
            ("output.LayerNorm.bias", vec![h]),
        ] {
            out.push((format!("{p}.{name}"), shape));
        }
    }
    out
}

/// The layer of an `encoder.layer.N.…` parameter name.
fn layer_index(canonical: &str) -> Option<usize> {
    canonical
        .strip_prefix("encoder.layer.")?
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// Old BERT checkpoints call the LayerNorm parameters `gamma` / `beta`.
fn canonical_name(name: &str) -> String {
    let mut n = name;
    for p in PREFIXES {
        if let Some(rest) = n.strip_prefix(p) {
            n = rest;
            break;
        }
    }
    if let Some(stem) = n.strip_suffix("LayerNorm.gamma") {
        return format!("{stem}LayerNorm.weight");
    }
    if let Some(stem) = n.strip_suffix("LayerNorm.beta") {
        return format!("{stem}LayerNorm.bias");
    }
    n.to_string()
}

fn to_f32(path: &Path, name: &str, view: &TensorView<'_>) -> Result<Vec<f32>> {
    let bytes = view.data();
    let out = match view.dtype() {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        other => {
            return Err(Error::Format {
                path: path.into(),
                what: format!("tensor {name}: expected dtype F32, F16 or BF16, found {other:?}"),
            })
        }
    };
    Ok(out)
}

impl Weights {
    /// Read a `model.safetensors` file. Names are canonicalised (prefix stripped); tensors
    /// the encoder does not use (pooler, heads) are skipped.
    pub fn from_safetensors(path: &Path, config: &EncoderConfig) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, "read", e))?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| Error::Format {
            path: path.into(),
            what: format!("not a valid safetensors file: {e}"),
        })?;
        let wanted: HashMap<String, Vec<usize>> = expected_parameters(config).into_iter().collect();
        let format = |what: String| Error::Format {
            path: path.into(),
            what,
        };
        // Which file name each canonical name came from, to name both of a duplicate.
        let mut origin: HashMap<String, String> = HashMap::new();
        let mut tensors = HashMap::new();
        let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
        names.sort_unstable();
        for name in names {
            let canonical = canonical_name(&name);
            if !wanted.contains_key(&canonical) {
                // Heads and poolers are skipped; a layer the config does not have means the
                // config and the weights disagree, and skipping it would run a cut model.
                if let Some(layer) = layer_index(&canonical) {
                    return Err(format(if layer < config.num_hidden_layers {
                        format!(
                            "tensor {name} is not one of layer {layer}'s (a BERT layer has \
                             attention, intermediate and output weights): the weights belong \
                             to another architecture"
                        )
                    } else {
                        format!(
                            "tensor {name} belongs to layer {layer}, but the config has \
                             num_hidden_layers {} (layers 0..{})",
                            config.num_hidden_layers, config.num_hidden_layers
                        )
                    }));
                }
                continue;
            }
            if let Some(first) = origin.insert(canonical.clone(), name.clone()) {
                return Err(format(format!(
                    "tensors {first} and {name} are both {canonical}; expected one"
                )));
            }
            let view = st
                .tensor(&name)
                .map_err(|e| format(format!("tensor {name}: {e}")))?;
            let data = to_f32(path, &name, &view)?;
            if let Some(i) = data.iter().position(|v| !v.is_finite()) {
                return Err(format(format!(
                    "tensor {name}: element {i} is {} (weights must be finite)",
                    data[i]
                )));
            }
            tensors.insert(
                canonical,
                HostTensor {
                    shape: view.shape().to_vec(),
                    data,
                },
            );
        }
        let weights = Weights {
            source: path.display().to_string(),
            tensors,
        };
        weights.validate(config)?;
        Ok(weights)
    }

    /// Every parameter `config` needs is present with the right shape.
    pub fn validate(&self, config: &EncoderConfig) -> Result<()> {
        for (name, shape) in expected_parameters(config) {
            match self.tensors.get(&name) {
                None => {
                    return Err(Error::shape(
                        format!("{}: tensor {name}", self.source),
                        format!("{shape:?}"),
                        "no such tensor",
                    ))
                }
                Some(t) if t.shape != shape => {
                    return Err(Error::shape(
                        format!("{}: tensor {name}", self.source),
                        format!("{shape:?}"),
                        format!("{:?}", t.shape),
                    ))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Remove and return one tensor (the model takes ownership as it is built).
    pub(crate) fn take(&mut self, name: &str) -> Result<HostTensor> {
        self.tensors.remove(name).ok_or_else(|| {
            Error::shape(
                format!("{}: tensor {name}", self.source),
                "a tensor",
                "no such tensor",
            )
        })
    }

    /// Write the weights as a Hugging Face `model.safetensors` (f32, canonical names).
    pub fn write_safetensors(&self, path: &Path) -> Result<()> {
        let mut names: Vec<&String> = self.tensors.keys().collect();
        names.sort();
        // The values' bytes as they are in memory (little-endian, as safetensors stores them),
        // without a copy: a model's weights are the process's largest allocation.
        let views = names
            .into_iter()
            .map(|n| {
                let t = &self.tensors[n];
                TensorView::new(
                    Dtype::F32,
                    t.shape.clone(),
                    bytemuck::cast_slice::<f32, u8>(&t.data),
                )
                .map(|v| (n.as_str(), v))
                .map_err(|e| Error::value(format!("tensor {n}"), e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        safetensors::serialize_to_file(views, None, path).map_err(|e| Error::Format {
            path: path.into(),
            what: format!("writing safetensors failed: {e}"),
        })
    }
}
