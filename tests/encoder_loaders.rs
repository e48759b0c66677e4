//! Loaders and the model on small synthetic checkpoints (no assets needed): safetensors
//! names and shape checks, E5S1 parsing and Q4_0 dequantisation, the E5S1 → safetensors
//! export, and the forward pass against a plain f64 reference.
#![cfg(feature = "encoder")]

use std::collections::HashMap;

use burn::prelude::*;
use optical::encoder::config::{Architecture, EncoderConfig};
use optical::encoder::e5s1::{dequantize_q4_0, E5s1};
use optical::encoder::model::TransformerEncoder;
use optical::encoder::pooling::{l2_normalize, mean_pool};
use optical::encoder::tokenizer::pad;
use optical::encoder::weights::{expected_parameters, HostTensor, Weights};
use optical::rng::SplitMix64;
use optical::Error;

fn tiny_config(architecture: Architecture) -> EncoderConfig {
    EncoderConfig {
        architecture,
        vocab_size: 50,
        hidden_size: 32,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        intermediate_size: 64,
        max_position_embeddings: 24,
        type_vocab_size: 2,
        layer_norm_eps: 1e-12,
        pad_token_id: if architecture == Architecture::Bert {
            0
        } else {
            1
        },
    }
}

fn random_weights(config: &EncoderConfig, seed: u64) -> Weights {
    let mut rng = SplitMix64::new(seed);
    let tensors = expected_parameters(config)
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let mut data: Vec<f32> = rng.normals_f32(n).iter().map(|x| x * 0.3).collect();
            if name.ends_with("LayerNorm.weight") {
                data.iter_mut().for_each(|x| *x += 1.0);
            }
            (name, HostTensor { shape, data })
        })
        .collect();
    Weights {
        source: "random".into(),
        tensors,
    }
}

// ---- a plain f64 reference of the forward pass ------------------------------------------

fn ln(x: &mut [f64], w: &[f32], b: &[f32], eps: f64) {
    let n = x.len() as f64;
    let mu = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mu).powi(2)).sum::<f64>() / n;
    for (i, v) in x.iter_mut().enumerate() {
        *v = (*v - mu) / (var + eps).sqrt() * w[i] as f64 + b[i] as f64;
    }
}

fn erf(x: f64) -> f64 {
    // erfc by the Chebyshev fit of Numerical Recipes (fractional error < 1.2e-7).
    let t = 1.0 / (1.0 + 0.5 * x.abs());
    let y = 1.0
        - t * (-x * x - 1.26551223
            + t * (1.00002368
                + t * (0.37409196
                    + t * (0.09678418
                        + t * (-0.18628806
                            + t * (0.27886807
                                + t * (-1.13520398
                                    + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))))
            .exp();
    if x >= 0.0 {
        y
    } else {
        -y
    }
}

fn reference_forward(config: &EncoderConfig, w: &Weights, ids: &[u32]) -> Vec<Vec<f64>> {
    let h = config.hidden_size;
    let t = ids.len();
    let g = |n: &str| &w.tensors[n].data;
    let off = config.position_offset();
    let mut x: Vec<Vec<f64>> = (0..t)
        .map(|i| {
            (0..h)
                .map(|j| {
                    g("embeddings.word_embeddings.weight")[ids[i] as usize * h + j] as f64
                        + g("embeddings.position_embeddings.weight")[(off + i) * h + j] as f64
                        + g("embeddings.token_type_embeddings.weight")[j] as f64
                })
                .collect()
        })
        .collect();
    for r in &mut x {
        ln(
            r,
            g("embeddings.LayerNorm.weight"),
            g("embeddings.LayerNorm.bias"),
            config.layer_norm_eps,
        );
    }
    let lin = |x: &[f64], name: &str| -> Vec<f64> {
        let wt = &w.tensors[&format!("{name}.weight")];
        let b = g(&format!("{name}.bias"));
        let (o, i) = (wt.shape[0], wt.shape[1]);
        (0..o)
            .map(|r| {
                b[r] as f64
                    + (0..i)
                        .map(|c| wt.data[r * i + c] as f64 * x[c])
                        .sum::<f64>()
            })
            .collect()
    };
    let nh = config.num_attention_heads;
    let hd = h / nh;
    for l in 0..config.num_hidden_layers {
        let p = format!("encoder.layer.{l}");
        let q: Vec<Vec<f64>> = x
            .iter()
            .map(|r| lin(r, &format!("{p}.attention.self.query")))
            .collect();
        let k: Vec<Vec<f64>> = x
            .iter()
            .map(|r| lin(r, &format!("{p}.attention.self.key")))
            .collect();
        let v: Vec<Vec<f64>> = x
            .iter()
            .map(|r| lin(r, &format!("{p}.attention.self.value")))
            .collect();
        let mut ctx = vec![vec![0.0; h]; t];
        for head in 0..nh {
            for i in 0..t {
                let s: Vec<f64> = (0..t)
                    .map(|j| {
                        (0..hd)
                            .map(|e| q[i][head * hd + e] * k[j][head * hd + e])
                            .sum::<f64>()
                            / (hd as f64).sqrt()
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = s.iter().map(|v| (v - m).exp()).sum();
                for j in 0..t {
                    let pr = (s[j] - m).exp() / z;
                    for e in 0..hd {
                        ctx[i][head * hd + e] += pr * v[j][head * hd + e];
                    }
                }
            }
        }
        for i in 0..t {
            let a = lin(&ctx[i], &format!("{p}.attention.output.dense"));
            for j in 0..h {
                x[i][j] += a[j];
            }
            ln(
                &mut x[i],
                g(&format!("{p}.attention.output.LayerNorm.weight")),
                g(&format!("{p}.attention.output.LayerNorm.bias")),
                config.layer_norm_eps,
            );
            let mid: Vec<f64> = lin(&x[i], &format!("{p}.intermediate.dense"))
                .iter()
                .map(|&u| 0.5 * u * (1.0 + erf(u / std::f64::consts::SQRT_2)))
                .collect();
            let o = lin(&mid, &format!("{p}.output.dense"));
            for j in 0..h {
                x[i][j] += o[j];
            }
            ln(
                &mut x[i],
                g(&format!("{p}.output.LayerNorm.weight")),
                g(&format!("{p}.output.LayerNorm.bias")),
                config.layer_norm_eps,
            );
        }
    }
    x
}

fn max_abs_diff(a: &[f32], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - y).abs())
        .fold(0.0, f64::max)
}

#[test]
fn forward_matches_f64_reference_with_padding() {
    for architecture in [Architecture::Bert, Architecture::XlmRoberta] {
        let config = tiny_config(architecture);
        let weights = random_weights(&config, 7);
        let device = Device::flex();
        let model = TransformerEncoder::from_weights(&config, weights.clone(), &device).unwrap();
        // Awkward lengths: 1, a middle one, and the longest the position table allows.
        let longest = config.max_tokens();
        let mut rng = SplitMix64::new(3);
        let seqs: Vec<Vec<u32>> = [1usize, 5, longest]
            .iter()
            .map(|&n| {
                (0..n)
                    .map(|_| rng.range(2, config.vocab_size - 1) as u32)
                    .collect()
            })
            .collect();
        let batch = pad(&seqs, config.pad_token_id as u32);
        let (ids, mask) = batch.tensors(&device).unwrap();
        let out = model.forward(ids, mask.clone());
        let values = out.clone().into_data().try_to_vec::<f32>().unwrap();
        let h = config.hidden_size;
        let mut worst = 0.0f64;
        let mut means = Vec::new();
        for (r, s) in seqs.iter().enumerate() {
            let reference = reference_forward(&config, &weights, s);
            for (i, row) in reference.iter().enumerate() {
                let start = (r * batch.t + i) * h;
                worst = worst.max(max_abs_diff(&values[start..start + h], row));
            }
            let mean: Vec<f64> = (0..h)
                .map(|j| reference.iter().map(|row| row[j]).sum::<f64>() / s.len() as f64)
                .collect();
            means.push(mean);
        }
        println!("{architecture:?}: max |burn - f64| over real tokens = {worst:.2e}");
        assert!(worst < 1e-3, "{architecture:?}: max abs diff {worst}");

        // Mean pooling over real tokens and normalisation, against the f64 means.
        let pooled = l2_normalize(mean_pool(out, mask))
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        for (r, mean) in means.iter().enumerate() {
            let norm = mean.iter().map(|v| v * v).sum::<f64>().sqrt();
            let expected: Vec<f64> = mean.iter().map(|v| v / norm).collect();
            let d = max_abs_diff(&pooled[r * h..(r + 1) * h], &expected);
            assert!(d < 1e-3, "pooled row {r}: max abs diff {d}");
        }
    }
}

fn write_safetensors(path: &std::path::Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) {
    use safetensors::tensor::{Dtype, TensorView};
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, d)| d.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((n, s, _), b)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

#[test]
fn safetensors_prefixes_and_shape_errors() {
    let config = tiny_config(Architecture::Bert);
    let weights = random_weights(&config, 11);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let mut list: Vec<(String, Vec<usize>, Vec<f32>)> = weights
        .tensors
        .iter()
        .map(|(n, t)| (format!("bert.{n}"), t.shape.clone(), t.data.clone()))
        .collect();
    list.push(("bert.pooler.dense.bias".into(), vec![32], vec![0.0; 32]));
    write_safetensors(&path, &list);
    let loaded = Weights::from_safetensors(&path, &config).unwrap();
    assert_eq!(
        loaded.tensors.len(),
        weights.tensors.len(),
        "pooler must be skipped"
    );
    let name = "encoder.layer.1.intermediate.dense.weight";
    assert_eq!(loaded.tensors[name].data, weights.tensors[name].data);

    // A wrong shape names the tensor.
    let bad = list
        .iter()
        .map(|(n, s, d)| {
            if n.ends_with("layer.1.attention.self.key.weight") {
                (n.clone(), vec![16, 64], d.clone())
            } else {
                (n.clone(), s.clone(), d.clone())
            }
        })
        .collect::<Vec<_>>();
    write_safetensors(&path, &bad);
    let err = Weights::from_safetensors(&path, &config).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Shape { .. }), "{msg}");
    assert!(
        msg.contains("encoder.layer.1.attention.self.key.weight"),
        "{msg}"
    );
    assert!(
        msg.contains("[32, 32]") && msg.contains("[16, 64]"),
        "{msg}"
    );

    // A missing tensor names it too; garbage is a format error.
    write_safetensors(&path, &list[1..]);
    let msg = Weights::from_safetensors(&path, &config)
        .unwrap_err()
        .to_string();
    assert!(msg.contains(list[0].0.trim_start_matches("bert.")), "{msg}");
    std::fs::write(&path, b"not a safetensors file").unwrap();
    assert!(matches!(
        Weights::from_safetensors(&path, &config),
        Err(Error::Format { .. })
    ));
}

#[test]
fn q4_0_dequantisation() {
    // Block: scale 0.5 (f16 0x3800); byte j = (j % 16) | ((15 - j % 16) << 4).
    let mut block = vec![0x00u8, 0x38];
    block.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
    let mut out = vec![0.0f32; 32];
    dequantize_q4_0(&block, &mut out);
    for j in 0..16 {
        assert_eq!(out[j], (j as f32 - 8.0) * 0.5, "low nibble {j}");
        assert_eq!(
            out[j + 16],
            ((15 - j) as f32 - 8.0) * 0.5,
            "high nibble {j}"
        );
    }
}

/// A small E5S1 image: f32 for the vectors, Q4_0 (scale 1/8) for the matrices.
fn tiny_e5s1(pieces: &[&str]) -> (Vec<u8>, HashMap<String, Vec<f32>>) {
    tiny_e5s1_with(pieces, Vec::new())
}

/// [`tiny_e5s1`] with `extra` entries (name, dtype, values) appended to the directory.
fn tiny_e5s1_with(
    pieces: &[&str],
    extra: Vec<(String, u8, Vec<f32>)>,
) -> (Vec<u8>, HashMap<String, Vec<f32>>) {
    let (h, nl, nh, ff, voc, maxp, tvs) = (
        32usize,
        1usize,
        4usize,
        64usize,
        pieces.len(),
        8usize,
        2usize,
    );
    let mut rng = SplitMix64::new(5);
    let mut tensors: Vec<(String, u8, Vec<f32>)> = Vec::new();
    let q4 = |rows: usize, cols: usize, rng: &mut SplitMix64| -> Vec<f32> {
        (0..rows * cols)
            .map(|_| (rng.range(0, 15) as f32 - 8.0) / 8.0)
            .collect()
    };
    tensors.push(("emb.word".into(), 1, q4(voc, h, &mut rng)));
    tensors.push(("emb.pos".into(), 0, rng.normals_f32(maxp * h)));
    tensors.push(("emb.type".into(), 0, rng.normals_f32(tvs * h)));
    tensors.push(("emb.ln.w".into(), 0, vec![1.0; h]));
    tensors.push(("emb.ln.b".into(), 0, vec![0.0; h]));
    for l in 0..nl {
        for (s, r, c) in [
            ("q", h, h),
            ("k", h, h),
            ("v", h, h),
            ("ao", h, h),
            ("fi", ff, h),
            ("fo", h, ff),
        ] {
            tensors.push((format!("l{l}.{s}.w"), 1, q4(r, c, &mut rng)));
            tensors.push((format!("l{l}.{s}.b"), 0, rng.normals_f32(r)));
        }
        for s in ["aln", "oln"] {
            tensors.push((format!("l{l}.{s}.w"), 0, vec![1.0; h]));
            tensors.push((format!("l{l}.{s}.b"), 0, vec![0.0; h]));
        }
    }
    tensors.extend(extra);
    let mut b = Vec::new();
    b.extend(b"E5S1");
    b.extend(1u32.to_le_bytes());
    for v in [h, nl, nh, ff, voc, maxp, tvs] {
        b.extend((v as i32).to_le_bytes());
    }
    b.extend(1e-12f32.to_le_bytes());
    b.extend(32i32.to_le_bytes());
    for v in [pieces.len(), 0, 2, 1, 3] {
        b.extend((v as i32).to_le_bytes());
    }
    let blob: Vec<u8> = pieces.iter().flat_map(|p| p.bytes()).collect();
    b.extend((blob.len() as u64).to_le_bytes());
    let mut off = 0u32;
    b.extend(off.to_le_bytes());
    for p in pieces {
        off += p.len() as u32;
        b.extend(off.to_le_bytes());
    }
    for _ in pieces {
        b.extend(0f32.to_le_bytes());
    }
    b.extend(&blob);
    b.extend(0i32.to_le_bytes());
    b.extend(0u32.to_le_bytes());
    b.extend((tensors.len() as i32).to_le_bytes());
    let encode = |dtype: u8, data: &[f32]| -> Vec<u8> {
        if dtype == 0 {
            return data.iter().flat_map(|v| v.to_le_bytes()).collect();
        }
        let mut out = Vec::new();
        for blk in data.chunks(32) {
            out.extend([0x00u8, 0x30]); // f16 0.125
            for j in 0..16 {
                let q = |v: f32| (v * 8.0 + 8.0) as u8;
                out.push(q(blk[j]) | (q(blk[j + 16]) << 4));
            }
        }
        out
    };
    let payloads: Vec<Vec<u8>> = tensors.iter().map(|(_, d, v)| encode(*d, v)).collect();
    let dir_len: usize = tensors
        .iter()
        .map(|(n, _, _)| 2 + n.len() + 1 + 4 + 8 + 8)
        .sum();
    let mut data_off = b.len() + dir_len;
    for ((name, dtype, values), payload) in tensors.iter().zip(&payloads) {
        b.extend((name.len() as u16).to_le_bytes());
        b.extend(name.as_bytes());
        b.push(*dtype);
        b.extend((values.len() as u32).to_le_bytes());
        b.extend((data_off as u64).to_le_bytes());
        b.extend((payload.len() as u64).to_le_bytes());
        data_off += payload.len();
    }
    for p in &payloads {
        b.extend(p);
    }
    (b, tensors.into_iter().map(|(n, _, v)| (n, v)).collect())
}

/// Exact equality, reporting the first difference only.
fn same(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    if let Some(i) = (0..a.len()).find(|&i| a[i] != b[i]) {
        panic!("{what}: first difference at {i}: {} vs {}", a[i], b[i]);
    }
}

#[test]
fn e5s1_parse_export_and_errors() {
    let pieces = ["<s>", "<pad>", "</s>", "<unk>", "▁a", "▁b", "c", "▁hello"];
    let (bytes, values) = tiny_e5s1(&pieces);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.bin");
    std::fs::write(&path, &bytes).unwrap();
    let file = E5s1::from_file(&path).unwrap();
    assert_eq!(file.pieces, pieces);
    assert_eq!(file.config.architecture, Architecture::XlmRoberta);
    assert_eq!(file.config.max_position_embeddings, 8 + 2);
    let w = &file.weights.tensors;
    same(
        &w["encoder.layer.0.intermediate.dense.weight"].data,
        &values["l0.fi.w"],
        "l0.fi.w",
    );
    assert_eq!(
        w["encoder.layer.0.intermediate.dense.weight"].shape,
        vec![64, 32]
    );
    same(
        &w["embeddings.word_embeddings.weight"].data,
        &values["emb.word"],
        "emb.word",
    );
    let pos = &w["embeddings.position_embeddings.weight"].data;
    assert!(
        pos[..64].iter().all(|&v| v == 0.0),
        "rows before pad + 1 are zero"
    );
    same(&pos[64..], &values["emb.pos"], "emb.pos");

    // Export to safetensors and read back through the Hugging Face loader.
    let st = dir.path().join("model.safetensors");
    file.weights.write_safetensors(&st).unwrap();
    let back = Weights::from_safetensors(&st, &file.config).unwrap();
    for (name, t) in w {
        same(&back.tensors[name].data, &t.data, name);
    }
    let json = file.config.to_json();
    assert_eq!(EncoderConfig::from_json(&json).unwrap(), file.config);

    // Every truncation is an error, never a panic.
    for cut in [3, 20, 60, 200, bytes.len() - 1] {
        let r = E5s1::parse(&path, &bytes[..cut]);
        assert!(matches!(r, Err(Error::Format { .. })), "cut at {cut}");
    }
    let mut bad = bytes.clone();
    bad[0] = b'X';
    let msg = E5s1::parse(&path, &bad).err().unwrap().to_string();
    assert!(msg.contains("E5S1"), "{msg}");
}

#[test]
fn config_validation() {
    let json = serde_json::json!({
        "model_type": "bert", "vocab_size": 10, "hidden_size": 30, "num_hidden_layers": 1,
        "num_attention_heads": 4, "intermediate_size": 8, "max_position_embeddings": 16,
        "type_vocab_size": 2
    });
    let msg = EncoderConfig::from_json(&json).unwrap_err().to_string();
    assert!(
        msg.contains("hidden_size 30") && msg.contains("num_attention_heads 4"),
        "{msg}"
    );
    let mut ok = json.clone();
    ok["hidden_size"] = 32.into();
    assert_eq!(EncoderConfig::from_json(&ok).unwrap().head_dim(), 8);
    let mut other = ok.clone();
    other["model_type"] = "gpt2".into();
    assert!(EncoderConfig::from_json(&other)
        .unwrap_err()
        .to_string()
        .contains("gpt2"));
    other = ok.clone();
    other["hidden_act"] = "relu".into();
    assert!(EncoderConfig::from_json(&other).is_err());
    for (key, value, needle) in [
        (
            "num_hidden_layers",
            serde_json::json!(1_000_000_000_000u64),
            "at most 1024",
        ),
        (
            "pad_token_id",
            serde_json::json!(10),
            "pad_token_id 10 is not an id",
        ),
        ("pad_token_id", serde_json::json!(-1), "pad_token_id"),
        (
            "layer_norm_eps",
            serde_json::json!("1e-5"),
            "expected a number",
        ),
        ("layer_norm_eps", serde_json::json!(2.0), "(0, 1)"),
    ] {
        let mut bad = ok.clone();
        bad[key] = value;
        let msg = EncoderConfig::from_json(&bad).unwrap_err().to_string();
        assert!(msg.contains(needle), "{key}: expected {needle:?} in {msg}");
    }
    let mut null_pad = ok.clone();
    null_pad["pad_token_id"] = serde_json::Value::Null;
    assert_eq!(EncoderConfig::from_json(&null_pad).unwrap().pad_token_id, 0);
    // Hugging Face's default for RoBERTa and XLM-R is 1 (their positions start after it).
    for model_type in ["xlm-roberta", "roberta"] {
        let mut xlmr = ok.clone();
        xlmr["model_type"] = model_type.into();
        xlmr.as_object_mut().unwrap().remove("pad_token_id");
        assert_eq!(EncoderConfig::from_json(&xlmr).unwrap().pad_token_id, 1);
    }
    // A setting that is not a string is not the default either.
    for (key, value) in [
        ("hidden_act", serde_json::json!(["relu"])),
        ("hidden_act", serde_json::json!(7)),
        ("position_embedding_type", serde_json::json!(true)),
    ] {
        let mut bad = ok.clone();
        bad[key] = value.clone();
        let msg = EncoderConfig::from_json(&bad).unwrap_err().to_string();
        assert!(
            msg.contains(key) && msg.contains(&value.to_string()),
            "{msg}"
        );
    }
    ok["hidden_act"] = "gelu".into();
    ok["position_embedding_type"] = serde_json::Value::Null;
    assert!(EncoderConfig::from_json(&ok).is_ok());
}

/// `forward_layers` runs the real tokens only (packed rows, attention unpacked to the
/// padded layout); each layer's `forward` computes every slot. On real tokens the two must
/// give the same values and the same gradients (input and weights), on awkward lengths
/// (1, 17, 29 = t, and a sequence with no real token); padding rows of the packed result
/// are exactly zero.
#[test]
fn packed_layers_match_all_slots_in_values_and_gradients() {
    use optical::encoder::model::attention_bias;
    let config = tiny_config(Architecture::Bert);
    let device = Device::flex().autodiff();
    let model =
        TransformerEncoder::from_weights(&config, random_weights(&config, 5), &device).unwrap();
    let (t, h) = (29usize, config.hidden_size);
    let lengths = [1usize, 17, 0, t];
    let b = lengths.len();
    let mut rng = SplitMix64::new(9);
    let x_host = rng.normals_f32(b * t * h);
    let weights_host = rng.normals_f32(b * t * h);
    let mask_host: Vec<f32> = lengths
        .iter()
        .flat_map(|&n| (0..t).map(move |j| if j < n { 1.0 } else { 0.0 }))
        .collect();
    let mask = Tensor::<2>::from_data(TensorData::new(mask_host.clone(), [b, t]), &device);
    // The loss reads real rows only: weights are zero on padding.
    let loss_weights: Vec<f32> = weights_host
        .iter()
        .enumerate()
        .map(|(i, w)| w * mask_host[i / h])
        .collect();
    let loss_weights = Tensor::<3>::from_data(TensorData::new(loss_weights, [b, t, h]), &device);

    let run = |packed: bool| {
        let x = Tensor::<3>::from_data(TensorData::new(x_host.clone(), [b, t, h]), &device)
            .require_grad();
        let out = if packed {
            model.forward_layers(x.clone(), mask.clone(), 0..model.layers.len())
        } else {
            let bias = attention_bias(mask.clone());
            model
                .layers
                .iter()
                .fold(x.clone(), |y, layer| layer.forward(y, bias.clone()))
        };
        let loss = (out.clone() * loss_weights.clone()).sum();
        let grads = loss.backward();
        let gx = x
            .grad(&grads)
            .unwrap()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let gw = model.layers[0]
            .query
            .weight
            .val()
            .grad(&grads)
            .unwrap()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let values = out.into_data().try_to_vec::<f32>().unwrap();
        (values, gx, gw)
    };
    let (packed, packed_gx, packed_gw) = run(true);
    let (slots, slots_gx, slots_gw) = run(false);

    let scale = |v: &[f32]| v.iter().fold(0.0f32, |m, x| m.max(x.abs())).max(1e-6);
    for (i, (&p, &s)) in packed.iter().zip(&slots).enumerate() {
        if mask_host[i / h] > 0.0 {
            assert!(
                (p - s).abs() <= 1e-5 * scale(&slots),
                "value {i}: {p} vs {s}"
            );
        } else {
            assert_eq!(p, 0.0, "padding row value {i} must be zero");
        }
    }
    for (i, (&p, &s)) in packed_gx.iter().zip(&slots_gx).enumerate() {
        if mask_host[i / h] > 0.0 {
            let tol = 1e-5 * scale(&slots_gx);
            assert!((p - s).abs() <= tol, "input gradient {i}: {p} vs {s}");
        }
    }
    let tol = 1e-5 * scale(&slots_gw);
    for (i, (&p, &s)) in packed_gw.iter().zip(&slots_gw).enumerate() {
        assert!(
            (p - s).abs() <= tol,
            "query weight gradient {i}: {p} vs {s}"
        );
    }
    assert!(
        packed_gw.iter().any(|&g| g != 0.0),
        "the weight gradient is not all zero"
    );
}

/// The position of `name`'s directory entry fields in an E5S1 image: (dtype, n, offset,
/// n_bytes) byte offsets.
fn entry_fields(bytes: &[u8], name: &str) -> (usize, usize, usize, usize) {
    let mut key = (name.len() as u16).to_le_bytes().to_vec();
    key.extend(name.as_bytes());
    let at = bytes
        .windows(key.len())
        .position(|w| w == key.as_slice())
        .expect("entry in the directory")
        + key.len();
    (at, at + 1, at + 5, at + 13)
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

/// Directories that lie are refused by name: entries sharing bytes (a small file standing
/// for huge tensors), a byte length that does not match the size, a name listed twice,
/// non-finite weights, and an unknown version.
#[test]
fn e5s1_directories_that_lie_are_errors() {
    let pieces = ["<s>", "<pad>", "</s>", "<unk>", "▁a", "▁b", "c", "▁hello"];
    let (bytes, _) = tiny_e5s1(&pieces);
    let path = std::path::Path::new("tiny.bin");
    assert!(E5s1::parse(path, &bytes).is_ok());
    let fails = |b: &[u8], needle: &str| {
        let msg = E5s1::parse(path, b).err().expect("an error").to_string();
        assert!(msg.contains(needle), "expected {needle:?} in {msg}");
    };

    // l0.k.w pointed at l0.q.w's bytes.
    let (_, _, q_off, _) = entry_fields(&bytes, "l0.q.w");
    let (_, _, k_off, _) = entry_fields(&bytes, "l0.k.w");
    let mut b = bytes.clone();
    let q_at = read_u64(&bytes, q_off);
    b[k_off..k_off + 8].copy_from_slice(&q_at.to_le_bytes());
    fails(&b, "overlap");

    // A byte length longer than the tensor's elements take.
    let (_, _, _, nb) = entry_fields(&bytes, "emb.ln.w");
    let mut b = bytes.clone();
    b[nb..nb + 8].copy_from_slice(&(read_u64(&bytes, nb) + 4).to_le_bytes());
    fails(&b, "the entry says 132 bytes, its 32 elements take 128");

    // An offset inside the directory.
    let (_, _, off, _) = entry_fields(&bytes, "emb.ln.b");
    let mut b = bytes.clone();
    b[off..off + 8].copy_from_slice(&8u64.to_le_bytes());
    fails(&b, "outside the data section");

    // Two entries of one name (l0.k.b renamed l0.q.b).
    let mut b = bytes.clone();
    let (dtype, _, _, _) = entry_fields(&bytes, "l0.k.b");
    b[dtype - 6..dtype].copy_from_slice(b"l0.q.b");
    fails(&b, "tensor l0.q.b: listed twice");

    // A NaN in an f32 tensor.
    let (_, _, off, _) = entry_fields(&bytes, "emb.ln.b");
    let data_at = read_u64(&bytes, off) as usize;
    let mut b = bytes.clone();
    b[data_at + 8..data_at + 12].copy_from_slice(&f32::NAN.to_le_bytes());
    fails(&b, "tensor emb.ln.b: element 2 is NaN");

    // A version this reader does not know.
    let mut b = bytes.clone();
    b[4..8].copy_from_slice(&2u32.to_le_bytes());
    fails(&b, "version: expected 1");
}

/// An entry no layer uses (a second layer's bias in a one-layer file) is an error: the
/// header and the directory disagree about the model.
#[test]
fn e5s1_entries_beyond_the_header_are_errors() {
    let pieces = ["<s>", "<pad>", "</s>", "<unk>", "▁a", "▁b", "c", "▁hello"];
    let (bytes, _) = tiny_e5s1_with(&pieces, vec![("l1.q.b".into(), 0, vec![0.0; 32])]);
    let msg = E5s1::parse(std::path::Path::new("tiny.bin"), &bytes)
        .err()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("tensor l1.q.b: in the directory but not part of a 1-layer model"),
        "{msg}"
    );
}

/// A checkpoint whose tensors disagree with its config, or with each other, is refused:
/// a layer beyond `num_hidden_layers`, one parameter under two names, a NaN.
#[test]
fn safetensors_that_disagree_with_the_config_are_errors() {
    let config = tiny_config(Architecture::Bert);
    let weights = random_weights(&config, 12);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let list: Vec<(String, Vec<usize>, Vec<f32>)> = weights
        .tensors
        .iter()
        .map(|(n, t)| (n.clone(), t.shape.clone(), t.data.clone()))
        .collect();
    let fails = |list: &[(String, Vec<usize>, Vec<f32>)], needle: &str| {
        write_safetensors(&path, list);
        let msg = Weights::from_safetensors(&path, &config)
            .unwrap_err()
            .to_string();
        assert!(msg.contains(needle), "expected {needle:?} in {msg}");
    };

    let mut extra = list.clone();
    extra.push((
        "encoder.layer.2.output.dense.bias".into(),
        vec![32],
        vec![0.0; 32],
    ));
    fails(
        &extra,
        "tensor encoder.layer.2.output.dense.bias belongs to layer 2, but the config has \
         num_hidden_layers 2",
    );

    // A tensor of an existing layer that a BERT layer does not have.
    let mut odd = list.clone();
    odd.push((
        "encoder.layer.0.attention.self.extra".into(),
        vec![2],
        vec![0.0; 2],
    ));
    fails(
        &odd,
        "tensor encoder.layer.0.attention.self.extra is not one of layer 0's",
    );

    let mut twice = list.clone();
    twice.push((
        "bert.embeddings.LayerNorm.bias".into(),
        vec![32],
        vec![0.0; 32],
    ));
    fails(
        &twice,
        "tensors bert.embeddings.LayerNorm.bias and embeddings.LayerNorm.bias are both \
         embeddings.LayerNorm.bias",
    );

    let mut nan = list.clone();
    let i = nan
        .iter()
        .position(|(n, _, _)| n == "encoder.layer.1.intermediate.dense.bias")
        .unwrap();
    nan[i].2[5] = f32::NAN;
    fails(
        &nan,
        "tensor encoder.layer.1.intermediate.dense.bias: element 5 is NaN",
    );

    // The heads and poolers of task checkpoints are still skipped.
    let mut heads = list.clone();
    heads.push(("pooler.dense.bias".into(), vec![32], vec![0.0; 32]));
    heads.push(("cls.predictions.bias".into(), vec![50], vec![0.0; 50]));
    write_safetensors(&path, &heads);
    assert!(Weights::from_safetensors(&path, &config).is_ok());
}
