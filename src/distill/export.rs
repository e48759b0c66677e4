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
use crate::encoder::weights::{expected_parameters, HostTensor, Weights};
use crate::error::{Error, Result};
use crate::rng::SplitMix64;

fn host<const D: usize>(p: &Param<Tensor<D>>) -> Result<HostTensor> {
    let v = p.val();
    let shape = v.dims().to_vec();
    let data = v
        .into_data()
        .try_to_vec::<f32>()
        .map_err(|e| Error::Backend {
            backend: "burn",
            operation: "read a parameter",
            what: format!("{e:?}"),
        })?;
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

/// Write `model` as a Hugging Face directory with `tokenizer` copied beside it.
pub fn export(
    model: &TransformerEncoder,
    config: &EncoderConfig,
    tokenizer: &Path,
    prefixes: (&str, &str),
    dir: &Path,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, "create", e))?;
    let weights = to_weights(&model.valid())?;
    weights.validate(config)?;
    weights.write_safetensors(&dir.join("model.safetensors"))?;
    let write = |name: &str, text: String| -> Result<()> {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| Error::io(&path, "write", e))
    };
    let json = serde_json::to_string_pretty(&config.to_json())
        .map_err(|e| Error::value("encoder config", e.to_string()))?;
    write("config.json", json)?;
    write(
        "prefixes.json",
        serde_json::json!({"query": prefixes.0, "passage": prefixes.1}).to_string(),
    )?;
    let dst = dir.join("tokenizer.json");
    std::fs::copy(tokenizer, &dst).map_err(|e| Error::io(tokenizer, "copy", e))?;
    Ok(())
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
    let mut rng = SplitMix64::new(seed);
    let mut tensors = HashMap::new();
    for (name, shape) in expected_parameters(config) {
        let len: usize = shape.iter().product();
        let mut data: Vec<f32> = rng.normals_f32(len).iter().map(|v| v * 0.2).collect();
        if name.ends_with("LayerNorm.weight") {
            data.iter_mut().for_each(|v| *v = 1.0 + *v * 0.5);
        }
        tensors.insert(name, HostTensor { shape, data });
    }
    TransformerEncoder::from_weights(
        config,
        Weights {
            source: "random".into(),
            tensors,
        },
        device,
    )
}
