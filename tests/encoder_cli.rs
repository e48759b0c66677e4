//! `optical encode` end to end on the MiniLM asset: file formats, tokens mode, and errors
//! that name what is wrong (exit code 2, no panic).
#![cfg(feature = "encoder")]

use std::path::{Path, PathBuf};
use std::process::Command;

use optical::io::npy;

fn optical() -> Command {
    Command::new(env!("CARGO_BIN_EXE_optical"))
}

#[test]
fn encode_writes_pooled_and_token_embeddings() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("texts.txt");
    std::fs::write(
        &input,
        "A short one.\nA somewhat longer sentence about optimal transport.\nOne more.\n\n",
    )
    .unwrap();

    let out = dir.path().join("emb.npy");
    let run = optical()
        .args([
            "encode",
            "--model",
            "minilm",
            "--pooling",
            "mean",
            "--input",
        ])
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(run.stdout.trim_ascii_end()).unwrap();
    assert_eq!(summary["texts"], 3);
    let emb = npy::read(&out).unwrap();
    assert_eq!(emb.shape, vec![3, 384]);
    let v = emb.to_f32();
    for row in v.chunks(384) {
        let norm: f32 = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "row norm {norm}");
    }

    let tok = dir.path().join("tok.npy");
    let run = optical()
        .args([
            "encode",
            "--model",
            "minilm",
            "--pooling",
            "tokens",
            "--input",
        ])
        .arg(&input)
        .arg("--out")
        .arg(&tok)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let lengths_path = dir.path().join("tok.lengths.npy");
    let offsets_path = dir.path().join("tok.offsets.npy");
    let lengths = npy::read(&lengths_path)
        .unwrap()
        .to_i64(&lengths_path)
        .unwrap();
    let offsets = npy::read(&offsets_path)
        .unwrap()
        .to_i64(&offsets_path)
        .unwrap();
    // "[CLS] a short one . [SEP]" = 6 tokens, "[CLS] one more . [SEP]" 5; the blank line
    // at the end is no text.
    assert_eq!(lengths[0], 6);
    assert_eq!(lengths[2], 5);
    assert_eq!(offsets, vec![0, lengths[0], lengths[0] + lengths[1]]);
    let total: i64 = lengths.iter().sum();
    assert_eq!(npy::read(&tok).unwrap().shape, vec![total as usize, 384]);
}

fn fails_with(args: &[&str], needle: &str) {
    fails_with_all(args, &[needle]);
}

/// `optical ARGS` exits 2, its message holding every one of `needles`, without a panic.
fn fails_with_all(args: &[&str], needles: &[&str]) {
    let run = optical().args(args).output().unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{args:?}: {err}");
    for needle in needles {
        assert!(
            err.contains(needle),
            "{args:?}: expected {needle:?} in {err}"
        );
    }
    assert!(!err.contains("panicked"), "{err}");
}

/// `optical ARGS` succeeds.
fn succeeds(args: &[&str]) {
    let run = optical().args(args).output().unwrap();
    assert!(
        run.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&run.stderr)
    );
}

#[test]
fn encode_errors_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("texts.txt");
    std::fs::write(&input, "hello\n").unwrap();
    let input = input.to_str().unwrap();
    let out = dir.path().join("o.npy");
    let out = out.to_str().unwrap();
    let missing = Path::new(input).with_file_name("missing.txt");
    fails_with(
        &[
            "encode",
            "--model",
            "minilm",
            "--input",
            missing.to_str().unwrap(),
            "--out",
            out,
        ],
        "missing.txt",
    );
    let empty = Path::new(input).with_file_name("empty.txt");
    std::fs::write(&empty, "").unwrap();
    fails_with(
        &[
            "encode",
            "--model",
            "no-such-model",
            "--input",
            empty.to_str().unwrap(),
            "--out",
            out,
        ],
        "empty.txt: expected at least one line, found an empty file",
    );
    // Lines of spaces only (a no-break space too) are not an empty file.
    let spaces = Path::new(input).with_file_name("spaces.txt");
    std::fs::write(&spaces, "   \n\u{a0}\n").unwrap();
    fails_with(
        &[
            "encode",
            "--model",
            "no-such-model",
            "--input",
            spaces.to_str().unwrap(),
            "--out",
            out,
        ],
        "spaces.txt: expected at least one line of text, found only blank lines",
    );
    // A blank line inside the file would embed no text: refused with its number, before
    // the model loads.
    let blank = Path::new(input).with_file_name("blank.txt");
    std::fs::write(&blank, "one\n\nthree\n").unwrap();
    fails_with(
        &[
            "encode",
            "--model",
            "no-such-model",
            "--input",
            blank.to_str().unwrap(),
            "--out",
            out,
        ],
        "blank.txt: line 2: expected a sentence, found an empty line",
    );
    fails_with(
        &[
            "encode",
            "--model",
            "minilm",
            "--pooling",
            "max",
            "--input",
            input,
            "--out",
            out,
        ],
        "mean, cls, tokens",
    );
    // Token embeddings are never normalised: --no-normalize would change nothing.
    fails_with(
        &[
            "encode",
            "--model",
            "minilm",
            "--pooling",
            "tokens",
            "--no-normalize",
            "--input",
            input,
            "--out",
            out,
        ],
        "never normalised",
    );
    fails_with(
        &[
            "encode",
            "--model",
            "minilm",
            "--max-length",
            "100000",
            "--input",
            input,
            "--out",
            out,
        ],
        "max_length",
    );
    fails_with(
        &["encode", "--model", input, "--input", input, "--out", out],
        "E5S1",
    );
    fails_with(
        &[
            "encode",
            "--model",
            "minilm",
            "--backend",
            "cuda",
            "--input",
            input,
            "--out",
            out,
        ],
        "cuda",
    );
}

/// A copy of the MiniLM directory (weights linked) whose tokenizer's post-processor is
/// replaced by `post_processor`.
fn minilm_with_post_processor(root: &Path, post_processor: serde_json::Value) -> PathBuf {
    let src = optical::assets::assets_dir().join("minilm");
    let text = std::fs::read_to_string(src.join("tokenizer.json")).unwrap();
    let mut tok: serde_json::Value = serde_json::from_str(&text).unwrap();
    tok["post_processor"] = post_processor;
    minilm_variant(root, "minilm-variant", |_| {}, &tok.to_string())
}

#[test]
fn tokenizers_that_leave_no_room_are_errors_not_panics() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("texts.txt");
    let out = tmp.path().join("o.npy");
    let (input_s, out_s) = (input.to_str().unwrap(), out.to_str().unwrap());

    // No special tokens and a line of a control character, which the tokenizer's
    // normaliser removes: a text without a single token, refused whether it is alone, or
    // batched with texts that have tokens, or not.
    let bare = minilm_with_post_processor(tmp.path(), serde_json::Value::Null);
    for (texts, needle) in [
        ("\u{7}\n", "text 1 has no tokens"),
        ("hello\n\u{7}\nworld\n", "text 2 has no tokens"),
    ] {
        std::fs::write(&input, texts).unwrap();
        for batch in ["1", "32"] {
            fails_with(
                &[
                    "encode",
                    "--model",
                    bare.to_str().unwrap(),
                    "--batch-size",
                    batch,
                    "--input",
                    input_s,
                    "--out",
                    out_s,
                ],
                needle,
            );
        }
    }
    std::fs::remove_dir_all(&bare).unwrap();

    // Three special tokens per text and --max-length 3 (no room for text: every text
    // would be its special tokens, every embedding the same) or 2 (the tokenizer's own
    // truncation would underflow).
    let three = minilm_with_post_processor(
        tmp.path(),
        serde_json::json!({
            "type": "TemplateProcessing",
            "single": [
                {"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": "[SEP]", "type_id": 0}},
                {"SpecialToken": {"id": "[SEP]", "type_id": 0}}
            ],
            "pair": [
                {"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": "[SEP]", "type_id": 0}},
                {"Sequence": {"id": "B", "type_id": 1}},
                {"SpecialToken": {"id": "[SEP]", "type_id": 1}}
            ],
            "special_tokens": {
                "[CLS]": {"id": "[CLS]", "ids": [101], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [102], "tokens": ["[SEP]"]}
            }
        }),
    );
    std::fs::write(
        &input,
        "a sentence of several words about transport plans\n",
    )
    .unwrap();
    for max_length in ["3", "2"] {
        fails_with(
            &[
                "encode",
                "--model",
                three.to_str().unwrap(),
                "--max-length",
                max_length,
                "--input",
                input_s,
                "--out",
                out_s,
            ],
            "more than the 3 special tokens",
        );
    }
    // A prefix that, with the special tokens, fills the budget leaves every text the same
    // tokens: refused, naming the prefix.
    let model = ["encode", "--model", three.to_str().unwrap()];
    let input_out = ["--input", input_s, "--out", out_s];
    let prefixed = |kind| {
        let flags = [
            "--max-length",
            "4",
            "--query-prefix",
            "x y z ",
            "--kind",
            kind,
        ];
        [&model[..], &flags, &input_out].concat()
    };
    fails_with_all(
        &prefixed("query"),
        &["room for text after", "query prefix \"x y z \"", "found 4"],
    );
    // The model's own files are inputs: an output there would break the model.
    let tokenizer = three.join("tokenizer.json");
    let before = std::fs::read(&tokenizer).unwrap();
    fails_with(
        &[
            &model[..],
            &["--input", input_s, "--out", tokenizer.to_str().unwrap()],
        ]
        .concat(),
        "found the input file",
    );
    assert_eq!(std::fs::read(&tokenizer).unwrap(), before);
    // Passages do not take the query prefix: the same flags encode them.
    succeeds(&prefixed("passage"));
    // With room for them it runs, and truncates.
    let pool_tokens = ["--pooling", "tokens"];
    succeeds(&[&model[..], &["--max-length", "5"], &pool_tokens, &input_out].concat());
    assert_eq!(npy::read(&out).unwrap().shape, vec![5, 384]);
    // A limit in sentence_bert_config.json that cannot hold the special tokens: an error
    // naming the file when it is the default, no obstacle to an explicit --max-length.
    std::fs::write(
        three.join("sentence_bert_config.json"),
        r#"{"max_seq_length": 1}"#,
    )
    .unwrap();
    fails_with_all(
        &[&model[..], &input_out].concat(),
        &["sentence_bert_config.json", "expected an integer ≥ 2"],
    );
    succeeds(&[&model[..], &["--max-length", "5"], &input_out].concat());
}

/// The tokenizer is parsed on a second thread while the weights load: a broken tokenizer is
/// still one clear error, and with broken weights too the weights' error comes first (as
/// when the two loaded one after the other).
#[test]
fn broken_tokenizer_or_weights_are_errors_in_load_order() {
    let root = tempfile::tempdir().unwrap();
    let src = optical::assets::assets_dir().join("minilm");
    let dir = root.path().join("minilm-broken");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
    std::os::unix::fs::symlink(src.join("model.safetensors"), dir.join("model.safetensors"))
        .unwrap();
    std::fs::write(dir.join("tokenizer.json"), "{\"model\": 3}").unwrap();
    let input = root.path().join("texts.txt");
    std::fs::write(&input, "hello\n").unwrap();
    let out = root.path().join("o.npy");
    let args = [
        "encode",
        "--model",
        dir.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    fails_with(&args, "tokenizer.json: not a valid tokenizer.json");
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    std::fs::write(dir.join("model.safetensors"), b"not a safetensors file").unwrap();
    fails_with(&args, "model.safetensors");
    let run = optical().args(args).output().unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(!err.contains("tokenizer.json"), "{err}");
    assert!(!out.exists());
}

/// A copy of the MiniLM directory `root/name` (weights linked) with `edit` applied to its
/// config and `tokenizer` (the text of a tokenizer.json) as its tokenizer.
fn minilm_variant(
    root: &Path,
    name: &str,
    edit: impl FnOnce(&mut serde_json::Value),
    tokenizer: &str,
) -> PathBuf {
    let src = optical::assets::assets_dir().join("minilm");
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let text = std::fs::read_to_string(src.join("config.json")).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&text).unwrap();
    edit(&mut config);
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    std::os::unix::fs::symlink(src.join("model.safetensors"), dir.join("model.safetensors"))
        .unwrap();
    std::fs::write(dir.join("tokenizer.json"), tokenizer).unwrap();
    dir
}

/// Model files that disagree with each other, or that a library chokes on, are errors that
/// say which file and why; before, each of these encoded with exit 0 (or panicked).
#[test]
fn model_files_that_disagree_are_errors() {
    let root = tempfile::tempdir().unwrap();
    let assets = optical::assets::assets_dir();
    let minilm_tok = std::fs::read_to_string(assets.join("minilm").join("tokenizer.json")).unwrap();
    let input = root.path().join("texts.txt");
    std::fs::write(&input, "the\n").unwrap();
    let out = root.path().join("o.npy");
    let encode = |model: &Path, needle: &str| {
        fails_with(
            &[
                "encode",
                "--model",
                model.to_str().unwrap(),
                "--input",
                input.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
            needle,
        );
        assert!(!out.exists());
    };

    // The tokenizers crate panics on a corrupt precompiled charsmap: an error, quietly.
    let mut tok: serde_json::Value = serde_json::from_str(&minilm_tok).unwrap();
    tok["normalizer"] = serde_json::json!({
        "type": "Precompiled", "precompiled_charsmap": "////fwAAAAAAAAAAAAAAAAAAAAA="
    });
    let dir = minilm_variant(root.path(), "charsmap", |_| {}, &tok.to_string());
    encode(&dir, "not a valid tokenizer.json");

    // Another model's tokenizer (XLM-R's 250,002 pieces for BERT's 30,522 rows).
    let xlmr = std::fs::read_to_string(assets.join("xlmr").join("tokenizer.json")).unwrap();
    let dir = minilm_variant(root.path(), "xlmr-tokenizer", |_| {}, &xlmr);
    encode(&dir, "belongs to another model");

    // A config with fewer layers than the weights would run a cut model.
    let dir = minilm_variant(
        root.path(),
        "three-layers",
        |c| c["num_hidden_layers"] = 3.into(),
        &minilm_tok,
    );
    encode(
        &dir,
        "belongs to layer 3, but the config has num_hidden_layers 3",
    );

    // Absurd or mistyped config values stop before any weight is read.
    for (name, key, value, needle) in [
        (
            "layers",
            "num_hidden_layers",
            serde_json::json!(1e12 as u64),
            "at most 1024",
        ),
        (
            "pad",
            "pad_token_id",
            serde_json::json!(1_000_000),
            "pad_token_id 1000000",
        ),
        (
            "pad-type",
            "pad_token_id",
            serde_json::json!("0"),
            "pad_token_id",
        ),
        (
            "eps-type",
            "layer_norm_eps",
            serde_json::json!("1e-5"),
            "layer_norm_eps",
        ),
        (
            "eps-big",
            "layer_norm_eps",
            serde_json::json!(1e30),
            "(0, 1)",
        ),
    ] {
        let dir = minilm_variant(root.path(), name, |c| c[key] = value, &minilm_tok);
        encode(&dir, needle);
    }

    // A path that does not exist says so.
    encode(
        &root.path().join("no-such-model"),
        "no such file or directory",
    );
}

/// `assets export-e5` writes a directory that encodes exactly as the E5S1 file: the same
/// tokenizer and the e5 prefixes (prefixes.json), in f32 safetensors.
#[test]
fn an_exported_e5_directory_encodes_as_the_file() {
    let root = tempfile::tempdir().unwrap();
    let export = root.path().join("e5-dir");
    let run = optical()
        .args(["assets", "export-e5", "--out", export.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let prefixes: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(export.join("prefixes.json")).unwrap())
            .unwrap();
    assert_eq!(prefixes["passage"], "passage: ");
    assert_eq!(prefixes["query"], "query: ");
    // A second export into the same directory is refused and leaves the first whole.
    let weights = std::fs::read(export.join("model.safetensors")).unwrap();
    let again = optical()
        .args(["assets", "export-e5", "--out", export.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&again.stderr);
    assert_eq!(again.status.code(), Some(2), "{err}");
    assert!(
        err.contains("expected a directory without a model, found its"),
        "{err}"
    );
    assert!(std::fs::read(export.join("model.safetensors")).unwrap() == weights);

    let input = root.path().join("texts.txt");
    std::fs::write(&input, "Optimal transport aligns tokens.\nhello\n").unwrap();
    let encode = |model: &str, kind: &str, out: &Path| {
        let run = optical()
            .args(["encode", "--model", model, "--kind", kind, "--input"])
            .arg(&input)
            .arg("--out")
            .arg(out)
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        npy::read(out).unwrap().to_f32()
    };
    for kind in ["passage", "query"] {
        let file = encode(
            "e5-small",
            kind,
            &root.path().join(format!("{kind}-file.npy")),
        );
        let dir = encode(
            export.to_str().unwrap(),
            kind,
            &root.path().join(format!("{kind}-dir.npy")),
        );
        assert_eq!(file.len(), dir.len());
        let worst = file
            .iter()
            .zip(&dir)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            worst < 1e-5,
            "{kind}: the exported directory differs by {worst}"
        );
    }
}

/// MiniLM's config.json with `edit` applied, written to `root/name.json`.
fn minilm_config(root: &Path, name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let src = optical::assets::assets_dir().join("minilm/config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src).unwrap()).unwrap();
    edit(&mut config);
    let path = root.join(format!("{name}.json"));
    std::fs::write(&path, config.to_string()).unwrap();
    path
}

/// A small BERT shape (2 layers, hidden 32) with MiniLM's vocabulary.
fn small_shape(c: &mut serde_json::Value) {
    c["hidden_size"] = 32.into();
    c["num_attention_heads"] = 4.into();
    c["intermediate_size"] = 64.into();
    c["num_hidden_layers"] = 2.into();
}

/// `optical encode` of `input` with `model` into `out`, with the flags `extra`.
fn encode_with(model: &Path, input: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    optical()
        .arg("encode")
        .args(extra)
        .arg("--model")
        .arg(model)
        .arg("--input")
        .arg(input)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

fn random_model(config: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let tokenizer = optical::assets::assets_dir().join("minilm/tokenizer.json");
    optical()
        .args(["assets", "random-model", "--config"])
        .arg(config)
        .arg("--tokenizer")
        .arg(tokenizer)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn random_model_has_the_config_shape_and_encodes() {
    let dir = tempfile::tempdir().unwrap();
    let config = minilm_config(dir.path(), "small", small_shape);
    let weights = |d: &str| std::fs::read(dir.path().join(d).join("model.safetensors")).unwrap();
    for (d, seed) in [("a", "7"), ("b", "7"), ("c", "8")] {
        let run = random_model(&config, &dir.path().join(d), &["--seed", seed]);
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
    }
    assert!(
        weights("a") == weights("b"),
        "the same seed must give the same weights"
    );
    assert!(
        weights("a") != weights("c"),
        "another seed must give other weights"
    );
    // A directory that holds a model is not replaced unasked.
    let again = random_model(&config, &dir.path().join("c"), &["--seed", "7"]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert_eq!(again.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("expected a directory without a model, found its config.json"),
        "{stderr}"
    );
    assert!(weights("a") != weights("c"), "the refused write changed c");

    // Blank lines at the end of the file are not texts.
    let input = dir.path().join("texts.txt");
    std::fs::write(
        &input,
        "One sentence.\nAnother, longer sentence here.\n\n \n",
    )
    .unwrap();
    let out = dir.path().join("emb.npy");
    let run = encode_with(&dir.path().join("a"), &input, &out, &[]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let emb = npy::read(&out).unwrap();
    assert_eq!(emb.shape, vec![2, 32]);
    assert!(emb.to_f32().iter().all(|v| v.is_finite()));

    // A sentence_bert_config.json limit beyond the position table: cut to the table, said.
    std::fs::write(
        dir.path().join("a/sentence_bert_config.json"),
        r#"{"max_seq_length": 100000}"#,
    )
    .unwrap();
    let run = encode_with(&dir.path().join("a"), &input, &out, &[]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{err}");
    assert!(
        err.contains("max_seq_length 100000 is beyond the model's position table"),
        "{err}"
    );

    // The weights' spread is the config's initializer_range (MiniLM's: 0.02) unless given.
    let spread = |d: &str| {
        let bytes = weights(d);
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let t = st
            .tensor("encoder.layer.0.intermediate.dense.weight")
            .unwrap();
        let v: Vec<f32> = t
            .data()
            .chunks(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        (v.iter().map(|x| (x * x) as f64).sum::<f64>() / v.len() as f64).sqrt()
    };
    let run = random_model(&config, &dir.path().join("wide"), &["--std", "0.5"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let (narrow, wide) = (spread("a"), spread("wide"));
    assert!((narrow - 0.02).abs() < 0.002, "std {narrow}");
    assert!((wide - 0.5).abs() < 0.05, "std {wide}");

    // An output directory whose config.json is the input, and the asset cache itself:
    // refused before anything is read or written. Inputs of other names stay, and the
    // directory takes the model.
    let inputs = dir.path().join("inputs");
    std::fs::create_dir(&inputs).unwrap();
    let named = inputs.join("config.json");
    std::fs::copy(&config, &named).unwrap();
    let before = std::fs::read(&named).unwrap();
    let run = random_model(&named, &inputs, &[]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{err}");
    assert!(
        err.contains("config.json replaces none of the inputs, found the input"),
        "{err}"
    );
    assert_eq!(std::fs::read(&named).unwrap(), before);
    std::fs::rename(&named, inputs.join("bert-config.json")).unwrap();
    let run = random_model(&inputs.join("bert-config.json"), &inputs, &[]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let cache = optical::assets::assets_dir().join("minilm");
    let run = random_model(&config, &cache, &[]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{err}");
    assert!(err.contains("outside the asset cache"), "{err}");
}

/// A tokenizer whose ids have gaps fits the table by count but not by its largest id:
/// refused when the model loads, naming tokenizer.json, not when a text meets that token.
#[cfg(feature = "distill")]
#[test]
fn a_tokenizer_id_beyond_the_embedding_table_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let model = optical::distill::export::write_tiny_model(dir.path(), "tiny", 3).unwrap();
    let path = model.join("tokenizer.json");
    let mut tok: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let vocab = tok["model"]["vocab"].as_object_mut().unwrap();
    vocab.remove("e0");
    vocab.insert("e21".into(), 60.into());
    std::fs::write(&path, tok.to_string()).unwrap();
    let texts = dir.path().join("texts.txt");
    std::fs::write(&texts, "e1 e2\n").unwrap();
    let o = optical()
        .args(["encode", "--model"])
        .arg(&model)
        .arg("--input")
        .arg(&texts)
        .arg("--out")
        .arg(dir.path().join("out.npy"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("tokenizer.json")
            && err.contains("token id 60 beyond the model's embedding table of 50 rows"),
        "{err}"
    );
}

#[test]
fn random_model_errors_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let check = |config: &Path, extra: &[&str], needle: &str| {
        let run = random_model(config, &out, extra);
        let err = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "{extra:?}: {err}");
        assert!(err.contains(needle), "expected {needle:?} in {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(!out.join("model.safetensors").exists(), "{err}");
    };
    let small = minilm_config(dir.path(), "small", small_shape);
    check(&small, &["--std", "0"], "a standard deviation in [1e-6, 1]");
    check(
        &small,
        &["--std", "NaN"],
        "a standard deviation in [1e-6, 1]",
    );
    // MiniLM's 30,522 pieces do not fit a table of 1,000 rows.
    let narrow = minilm_config(dir.path(), "narrow", |c| {
        small_shape(c);
        c["vocab_size"] = 1000.into();
    });
    check(&narrow, &[], "the tokenizer belongs to another model");
    // A config alone must not be able to ask for any amount of memory.
    let huge = minilm_config(dir.path(), "huge", |c| {
        c["vocab_size"] = 10_000_000_000u64.into()
    });
    check(&huge, &[], "expected at most 1073741824 parameters");
    let long = minilm_config(dir.path(), "long", |c| {
        small_shape(c);
        c["max_position_embeddings"] = 1_000_000_000_000u64.into();
    });
    check(
        &long,
        &[],
        "the largest, embeddings.position_embeddings.weight, is 1000000000000 × 32",
    );
    let bad_range = minilm_config(dir.path(), "range", |c| {
        small_shape(c);
        c["initializer_range"] = "0.02".into();
    });
    check(
        &bad_range,
        &[],
        "initializer_range: expected a number in [1e-6, 1]",
    );
    let tiny_range = minilm_config(dir.path(), "tiny-range", |c| {
        small_shape(c);
        c["initializer_range"] = 1e-300.into();
    });
    check(
        &tiny_range,
        &[],
        "initializer_range: expected a number in [1e-6, 1]",
    );
    check(
        &small,
        &["--std", "1e-9"],
        "a standard deviation in [1e-6, 1]",
    );
    // BERT's position table starts at 0; one position leaves no room for a word.
    let short = minilm_config(dir.path(), "short", |c| {
        small_shape(c);
        c["max_position_embeddings"] = 1.into();
    });
    check(
        &short,
        &[],
        "max_position_embeddings 1 leaves 1 token positions",
    );
    check(&dir.path().join("missing.json"), &[], "missing.json");
}

/// burn's wgpu device binds a tensor whole; on an adapter whose largest storage binding is
/// smaller than a model's largest tensor (lavapipe's 128 MiB), loading the model is a clear
/// error naming the tensor, and where it fits the model encodes.
#[cfg(feature = "wgpu")]
#[test]
fn a_tensor_beyond_the_gpu_binding_limit_is_an_error_not_a_panic() {
    let info = optical().args(["info", "--json"]).output().unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    let wgpu = info["backends"]
        .as_array()
        .and_then(|b| b.iter().find(|b| b["backend"] == "wgpu"))
        .cloned()
        .unwrap_or_default();
    // burn picks its own adapter: the expectation is sure only when every adapter agrees.
    let limits: Vec<u64> = wgpu["devices"]
        .as_array()
        .map(|d| {
            d.iter()
                .filter_map(|d| d["limits"]["max_storage_buffer_binding_size"].as_u64())
                .collect()
        })
        .unwrap_or_default();
    let (Some(&low), Some(&high)) = (limits.iter().min(), limits.iter().max()) else {
        if std::env::var("OPTICAL_SKIP_WGPU").as_deref() == Ok("1") {
            eprintln!("skipping: OPTICAL_SKIP_WGPU=1 and no wgpu adapter");
            return;
        }
        panic!("no wgpu adapter (set OPTICAL_SKIP_WGPU=1 to skip): {wgpu}");
    };
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("texts.txt");
    std::fs::write(&input, "One sentence.\n").unwrap();
    // 1,100,000 × 32 f32 = 140.8 MB, beyond the 128 MiB that every adapter allows: as the
    // word-embedding table, and as a feed-forward weight.
    type Edit = fn(&mut serde_json::Value);
    let cases: [(&str, Edit, &str); 2] = [
        (
            "tall",
            |c| c["vocab_size"] = 1_100_000.into(),
            "its largest tensor, embeddings.word_embeddings.weight (1100000 × 32 f32, 140 MB)",
        ),
        (
            "wide",
            |c| {
                c["intermediate_size"] = 1_100_000.into();
                c["num_hidden_layers"] = 1.into();
            },
            "its largest tensor, encoder.layer.0.intermediate.dense.weight (1100000 × 32 f32, \
             140 MB)",
        ),
    ];
    for (name, edit, needle) in cases {
        let config = minilm_config(dir.path(), name, |c| {
            small_shape(c);
            edit(c);
        });
        let model = dir.path().join(name);
        let run = random_model(&config, &model, &[]);
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let out = dir.path().join("emb.npy");
        let run = encode_with(&model, &input, &out, &["--backend", "wgpu"]);
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(!err.contains("panicked"), "{name}: {err}");
        let bytes = 1_100_000 * 32 * 4;
        if high < bytes {
            assert_eq!(run.status.code(), Some(2), "{name}: {err}");
            assert!(
                err.contains(needle) && err.contains("beyond the largest storage binding"),
                "{name}: {err}"
            );
        } else if low >= bytes {
            assert!(run.status.success(), "{name}: {err}");
        } else {
            assert!(
                run.status.success() || err.contains("beyond the largest storage binding"),
                "{name}: {err}"
            );
        }
        std::fs::remove_dir_all(&model).unwrap();
    }
}

/// A batch whose activations would exceed the GPU's largest storage binding is split (40
/// texts of 512 tokens with 4 heads: 168 MB of attention scores in one batch of 64, beyond
/// lavapipe's 128 MiB; it used to panic on reading the result back), and the vectors are the
/// CPU's.
#[cfg(feature = "wgpu")]
#[test]
fn long_batches_are_split_to_fit_the_gpu() {
    if optical::backend::Backend::new(optical::backend::BackendKind::Wgpu).is_err()
        && std::env::var("OPTICAL_SKIP_WGPU").as_deref() == Ok("1")
    {
        eprintln!("skipping: OPTICAL_SKIP_WGPU=1 and no wgpu adapter");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = minilm_config(dir.path(), "small", small_shape);
    let model = dir.path().join("small");
    let run = random_model(&config, &model, &[]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let input = dir.path().join("long.txt");
    let text: String = (0..40)
        .map(|i| {
            (0..600)
                .map(|w| format!("word{} ", (i * 7 + w * 13) % 97))
                .collect::<String>()
                + "\n"
        })
        .collect();
    std::fs::write(&input, text).unwrap();
    let encode = |backend: &str| {
        let out = dir.path().join(format!("{backend}.npy"));
        let flags = [
            "--max-length",
            "512",
            "--batch-size",
            "64",
            "--backend",
            backend,
        ];
        let run = encode_with(&model, &input, &out, &flags);
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(run.status.success(), "{backend}: {err}");
        let emb = npy::read(&out).unwrap();
        assert_eq!(emb.shape, vec![40, 32]);
        emb.to_f32()
    };
    let (cpu, gpu) = (encode("cpu"), encode("wgpu"));
    let worst = cpu
        .iter()
        .zip(&gpu)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-4, "cpu and wgpu differ by {worst}");
}

/// Weights that are finite but huge overflow `f32` inside the layers: `encode` stops with an
/// error naming the text, not with NaN vectors in its output.
#[cfg(feature = "distill")]
#[test]
fn hidden_states_that_overflow_are_an_error_naming_the_text() {
    let dir = tempfile::tempdir().unwrap();
    let model = optical::distill::export::write_tiny_model(dir.path(), "tiny", 5).unwrap();
    // Scale the word embeddings to ±3e38 in place (the file's layout is unchanged).
    let path = model.join("model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let entry = &header["embeddings.word_embeddings.weight"];
    assert_eq!(entry["dtype"], "F32", "{header}");
    let range = &entry["data_offsets"];
    let (start, end) = (
        8 + header_len + range[0].as_u64().unwrap() as usize,
        8 + header_len + range[1].as_u64().unwrap() as usize,
    );
    for (k, word) in bytes[start..end].chunks_exact_mut(4).enumerate() {
        let v = if k % 2 == 0 { 3e38f32 } else { -3e38 };
        word.copy_from_slice(&v.to_le_bytes());
    }
    std::fs::write(&path, bytes).unwrap();
    let texts = dir.path().join("texts.txt");
    std::fs::write(&texts, "e1 e2\ne3 e4 e5\n").unwrap();
    let out = dir.path().join("out.npy");
    let o = encode_with(&model, &texts, &out, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("text 0 (counting from 0): expected finite hidden states"),
        "{err}"
    );
    assert!(!out.exists(), "a refused encoding wrote {}", out.display());
}
