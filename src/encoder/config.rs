//! The architecture hyper-parameters of a BERT / XLM-R encoder, read from a Hugging Face
//! `config.json` (or from the header of an E5S1 file) and validated before any weight is
//! loaded.

use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};

/// The most layers a config may name.
pub const MAX_LAYERS: usize = 1024;

/// The two architectures this module runs. They share every layer; they differ in how
/// position ids are counted and in their parameter-name prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Architecture {
    /// BERT: positions count from 0.
    Bert,
    /// XLM-RoBERTa: positions count from `pad_token_id + 1` (row `pad_token_id` of the
    /// position table is the padding row).
    XlmRoberta,
}

impl Architecture {
    pub fn name(self) -> &'static str {
        match self {
            Architecture::Bert => "bert",
            Architecture::XlmRoberta => "xlm-roberta",
        }
    }
}

/// Encoder hyper-parameters (the fields of a Hugging Face `BertConfig` /
/// `XLMRobertaConfig` that the forward pass depends on).
#[derive(Clone, Debug, PartialEq)]
pub struct EncoderConfig {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    pub pad_token_id: usize,
}

/// The `initializer_range` of a Hugging Face `config.json` (the standard deviation its
/// weights were initialised with), if it has one.
pub fn initializer_range(path: &Path) -> Result<Option<f64>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, "read", e))?;
    let json: Value = serde_json::from_str(&text).map_err(|e| Error::Format {
        path: path.into(),
        what: format!("not valid JSON: {e}"),
    })?;
    match json.get("initializer_range") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_f64() {
            Some(x) if x.is_finite() && (1e-6..=1.0).contains(&x) => Ok(Some(x)),
            _ => Err(Error::Format {
                path: path.into(),
                what: format!("initializer_range: expected a number in [1e-6, 1], found {v}"),
            }),
        },
    }
}

impl EncoderConfig {
    /// Read and validate a Hugging Face `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, "read", e))?;
        let json: Value = serde_json::from_str(&text).map_err(|e| Error::Format {
            path: path.into(),
            what: format!("not valid JSON: {e}"),
        })?;
        Self::from_json(&json).map_err(|e| match e {
            Error::Value { what, .. } => Error::Format {
                path: path.into(),
                what,
            },
            other => other,
        })
    }

    /// Parse the fields of a Hugging Face config object.
    pub fn from_json(json: &Value) -> Result<Self> {
        let ctx = "encoder config";
        let model_type = json
            .get("model_type")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::value(ctx, "missing string field \"model_type\""))?;
        let architecture = match model_type {
            "bert" => Architecture::Bert,
            "xlm-roberta" | "roberta" => Architecture::XlmRoberta,
            other => {
                return Err(Error::value(
                    ctx,
                    format!("model_type: expected \"bert\", \"roberta\" or \"xlm-roberta\", found {other:?}"),
                ))
            }
        };
        let int = |name: &str| -> Result<usize> {
            json.get(name)
                .and_then(Value::as_u64)
                .map(|v| v as usize)
                .ok_or_else(|| {
                    Error::value(
                        ctx,
                        format!(
                            "field \"{name}\": expected a non-negative integer, found {}",
                            json.get(name)
                                .map_or("nothing".to_string(), |v| v.to_string())
                        ),
                    )
                })
        };
        // Absent (or null) takes the default; anything else must be the one value the
        // forward pass implements, a string (`["relu"]` or `7` is not a default).
        for (key, want, what) in [
            ("hidden_act", "gelu", "\"gelu\" (erf form)"),
            ("position_embedding_type", "absolute", "\"absolute\""),
        ] {
            match json.get(key) {
                None | Some(Value::Null) => {}
                Some(Value::String(v)) if v == want => {}
                Some(v) => {
                    return Err(Error::value(
                        ctx,
                        format!("{key}: expected {what}, found {v}"),
                    ))
                }
            }
        }
        let config = EncoderConfig {
            architecture,
            vocab_size: int("vocab_size")?,
            hidden_size: int("hidden_size")?,
            num_hidden_layers: int("num_hidden_layers")?,
            num_attention_heads: int("num_attention_heads")?,
            intermediate_size: int("intermediate_size")?,
            max_position_embeddings: int("max_position_embeddings")?,
            type_vocab_size: int("type_vocab_size")?,
            layer_norm_eps: match json.get("layer_norm_eps") {
                None | Some(Value::Null) => 1e-12,
                Some(v) => v.as_f64().ok_or_else(|| {
                    Error::value(
                        ctx,
                        format!("field \"layer_norm_eps\": expected a number, found {v}"),
                    )
                })?,
            },
            // Hugging Face's defaults: BERT pads with 0, RoBERTa and XLM-R with 1 (and
            // their positions start after it, so a wrong default moves every position).
            pad_token_id: match json.get("pad_token_id") {
                None | Some(Value::Null) => match architecture {
                    Architecture::Bert => 0,
                    Architecture::XlmRoberta => 1,
                },
                Some(_) => int("pad_token_id")?,
            },
        };
        config.validate()?;
        Ok(config)
    }

    /// Check the relations between fields that the forward pass relies on.
    pub fn validate(&self) -> Result<()> {
        let ctx = "encoder config";
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("type_vocab_size", self.type_vocab_size),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(Error::value(ctx, format!("{name}: expected > 0, found 0")));
            }
        }
        // Generous bounds (the largest BERT-family encoders have 48 layers): the loaders list
        // every layer's parameters before they read any, so an absurd count must stop here.
        if self.num_hidden_layers > MAX_LAYERS {
            return Err(Error::value(
                ctx,
                format!(
                    "num_hidden_layers: expected at most {MAX_LAYERS}, found {}",
                    self.num_hidden_layers
                ),
            ));
        }
        if self.pad_token_id >= self.vocab_size {
            return Err(Error::value(
                ctx,
                format!(
                    "pad_token_id {} is not an id of the vocabulary of {}",
                    self.pad_token_id, self.vocab_size
                ),
            ));
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(Error::value(
                ctx,
                format!(
                    "hidden_size {} is not a multiple of num_attention_heads {}",
                    self.hidden_size, self.num_attention_heads
                ),
            ));
        }
        if self.max_position_embeddings <= self.position_offset() {
            return Err(Error::value(
                ctx,
                format!(
                    "max_position_embeddings {} leaves no position after the offset {}",
                    self.max_position_embeddings,
                    self.position_offset()
                ),
            ));
        }
        if !(self.layer_norm_eps > 0.0 && self.layer_norm_eps < 1.0) {
            return Err(Error::value(
                ctx,
                format!(
                    "layer_norm_eps: expected a number in (0, 1) (usually 1e-12 or 1e-5), found {}",
                    self.layer_norm_eps
                ),
            ));
        }
        Ok(())
    }

    /// Position id of the first token.
    pub fn position_offset(&self) -> usize {
        match self.architecture {
            Architecture::Bert => 0,
            // Saturating: an absurd pad_token_id then fails `validate` (no position left)
            // instead of wrapping to 0.
            Architecture::XlmRoberta => self.pad_token_id.saturating_add(1),
        }
    }

    /// The longest input (in tokens, specials included) the position table can hold.
    pub fn max_tokens(&self) -> usize {
        self.max_position_embeddings - self.position_offset()
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// The config as a Hugging Face `config.json` object (for exported checkpoints).
    pub fn to_json(&self) -> Value {
        let (model_type, arch) = match self.architecture {
            Architecture::Bert => ("bert", "BertModel"),
            Architecture::XlmRoberta => ("xlm-roberta", "XLMRobertaModel"),
        };
        serde_json::json!({
            "architectures": [arch],
            "model_type": model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "intermediate_size": self.intermediate_size,
            "max_position_embeddings": self.max_position_embeddings,
            "type_vocab_size": self.type_vocab_size,
            "layer_norm_eps": self.layer_norm_eps,
            "pad_token_id": self.pad_token_id,
            "hidden_act": "gelu",
            "position_embedding_type": "absolute",
        })
    }
}
