//! The student back in the Hugging Face layout (`config.json`, `model.safetensors`,
//! `tokenizer.json`, plus `prefixes.json` with the query/passage prefixes), loadable by
//! `optical encode --model DIR` and `optical eval --model DIR`; and a tiny random encoder
//! for tests.

use std::collections::HashMap;
use std::path::Path;

use burn::module::Param;
use burn::nn::{LayerNorm, Linear};
use burn::prelude::*;

use crate::encoder::config::{Architecture, EncoderConfig};
use crate::encoder::model::TransformerEncoder;
use crate::encoder::weights::{random_weights, HostTensor, Weights};
use crate::error::{Error, Result};
use crate::rng::SplitMix64;

fn host<const D: usize>(p: &Param<Tensor<D>>) -> Result<HostTensor> {
    let v = p.val();
    let shape = v.dims().to_vec();
    let data = crate::encoder::read_f32(v, "read a parameter")?;
    Ok(HostTensor { shape, data })
}

fn put_linear(t: &mut HashMap<String, HostTensor>, prefix: &str, l: &Linear) -> Result<()> {
    let w = host(&l.weight)?;
    let (inp, out) = (w.shape[0], w.shape[1]);
    let mut data = vec![0.0f32; w.data.len()];
    for i in 0..inp {
        for o in 0..out {
            data[o * inp + i] = w.data[i * out + o];
        }
    }
    t.insert(
        format!("{prefix}.weight"),
        HostTensor {
            shape: vec![out, inp],
            data,
        },
    );
    let b = l
        .bias
        .as_ref()
        .ok_or_else(|| Error::value(prefix.to_string(), "linear layer without bias"))?;
    t.insert(format!("{prefix}.bias"), host(b)?);
    Ok(())
}

fn put_norm(t: &mut HashMap<String, HostTensor>, prefix: &str, n: &LayerNorm) -> Result<()> {
    t.insert(format!("{prefix}.weight"), host(&n.gamma)?);
    let b = n
        .beta
        .as_ref()
        .ok_or_else(|| Error::value(prefix.to_string(), "layer norm without bias"))?;
    t.insert(format!("{prefix}.bias"), host(b)?);
    Ok(())
}

/// Every parameter of `model` under its Hugging Face name.
pub fn to_weights(model: &TransformerEncoder) -> Result<Weights> {
    let mut t = HashMap::new();
    let e = &model.embeddings;
    t.insert(
        "embeddings.word_embeddings.weight".into(),
        host(&e.word.weight)?,
    );
    t.insert(
        "embeddings.position_embeddings.weight".into(),
        host(&e.position)?,
    );
    t.insert(
        "embeddings.token_type_embeddings.weight".into(),
        host(&e.token_type)?,
    );
    put_norm(&mut t, "embeddings.LayerNorm", &e.norm)?;
    for (l, layer) in model.layers.iter().enumerate() {
        let p = format!("encoder.layer.{l}");
        put_linear(&mut t, &format!("{p}.attention.self.query"), &layer.query)?;
        put_linear(&mut t, &format!("{p}.attention.self.key"), &layer.key)?;
        put_linear(&mut t, &format!("{p}.attention.self.value"), &layer.value)?;
        put_linear(
            &mut t,
            &format!("{p}.attention.output.dense"),
            &layer.attention_output,
        )?;
        put_norm(
            &mut t,
            &format!("{p}.attention.output.LayerNorm"),
            &layer.attention_norm,
        )?;
        put_linear(
            &mut t,
            &format!("{p}.intermediate.dense"),
            &layer.intermediate,
        )?;
        put_linear(&mut t, &format!("{p}.output.dense"), &layer.output)?;
        put_norm(&mut t, &format!("{p}.output.LayerNorm"), &layer.output_norm)?;
    }
    Ok(Weights {
        source: "distilled student".into(),
        tensors: t,
    })
}

/// Write `model` as a Hugging Face directory with `tokenizer` copied beside it, and the
/// token limit of the model it was trained from (`max_seq_length`, see
/// [`crate::encoder::ModelSpec::default_max_length`]), so that it encodes texts as that
/// model did.
pub fn export(
    model: &TransformerEncoder,
    config: &EncoderConfig,
    tokenizer: &Path,
    prefixes: (&str, &str),
    max_seq_length: Option<usize>,
    dir: &Path,
) -> Result<()> {
    let weights = to_weights(&model.valid())?;
    crate::encoder::write_model_dir(dir, config, &weights, tokenizer, prefixes, max_seq_length)
}

/// A tiny BERT configuration for tests: 2 layers, hidden 32, 4 heads, vocabulary 50.
pub fn tiny_config() -> EncoderConfig {
    EncoderConfig {
        architecture: Architecture::Bert,
        vocab_size: 50,
        hidden_size: 32,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        intermediate_size: 64,
        max_position_embeddings: 64,
        type_vocab_size: 1,
        layer_norm_eps: 1e-12,
        pad_token_id: 0,
    }
}

/// A random encoder of `config` on `device` (weights N(0, 0.2²), LayerNorm gains near 1).
pub fn random_encoder(
    config: &EncoderConfig,
    seed: u64,
    device: &Device,
) -> Result<TransformerEncoder> {
    TransformerEncoder::from_weights(config, random_weights(config, seed, 0.2)?, device)
}

/// Special tokens of [`tiny_tokenizer_json`] (ids 0–3).
pub const TINY_SPECIALS: [&str; 4] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"];
/// Words per language in [`tiny_tokenizer_json`].
pub const TINY_WORDS: usize = 22;

/// A word-level `tokenizer.json` for [`tiny_config`] models: the specials, `e0..e21`
/// ("English", ids 4–25) and `f0..f21` (the "other language", ids 26–47), within the
/// vocabulary of 50.
pub fn tiny_tokenizer_json() -> String {
    let mut vocab = serde_json::Map::new();
    for (i, s) in TINY_SPECIALS.iter().enumerate() {
        vocab.insert(s.to_string(), i.into());
    }
    for i in 0..TINY_WORDS {
        vocab.insert(format!("e{i}"), (4 + i).into());
        vocab.insert(format!("f{i}"), (4 + TINY_WORDS + i).into());
    }
    let special = |t: &str| serde_json::json!({"SpecialToken": {"id": t, "type_id": 0}});
    let seq = |s: &str| serde_json::json!({"Sequence": {"id": s, "type_id": 0}});
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [],
        "normalizer": null,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [special("[CLS]"), seq("A"), special("[SEP]")],
            "pair": [special("[CLS]"), seq("A"), special("[SEP]"), seq("B"), special("[SEP]")],
            "special_tokens": {
                "[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]},
            },
        },
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"},
    })
    .to_string()
}

/// A tiny random BERT ([`tiny_config`], [`random_encoder`]) with the tiny tokenizer,
/// written as a Hugging Face directory `root/name` (the tokenizer also as
/// `root/tokenizer.json`), for tests and smoke runs.
pub fn write_tiny_model(root: &Path, name: &str, seed: u64) -> Result<std::path::PathBuf> {
    std::fs::create_dir_all(root).map_err(|e| Error::io(root, "create", e))?;
    let tok = root.join("tokenizer.json");
    if !tok.exists() {
        std::fs::write(&tok, tiny_tokenizer_json()).map_err(|e| Error::io(&tok, "write", e))?;
    }
    let config = tiny_config();
    let model = random_encoder(&config, seed, &Device::flex())?;
    let dir = root.join(name);
    export(&model, &config, &tok, ("", ""), None, &dir)?;
    Ok(dir)
}

/// Word-by-word "translations" for the tiny tokenizer: `n` pairs `(f…, e…)` of 3–5 words.
pub fn tiny_pairs(n: usize, seed: u64) -> Vec<(String, String)> {
    let mut rng = SplitMix64::new(seed);
    (0..n)
        .map(|_| {
            let len = rng.range(3, 6);
            let idx: Vec<usize> = (0..len).map(|_| rng.range(0, TINY_WORDS - 1)).collect();
            let f: Vec<String> = idx.iter().map(|i| format!("f{i}")).collect();
            let e: Vec<String> = idx.iter().map(|i| format!("e{i}")).collect();
            (f.join(" "), e.join(" "))
        })
        .collect()
}
